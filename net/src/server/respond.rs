//! A response on its way out: its head, its body (one file range, the parts of a
//! `multipart/byteranges` body, or a holder's body proxied a chunk at a time), the admission
//! it holds, and its pace. It turns into the next
//! [`Transmit`] and counts what the engine reports sent. It decides nothing about the request
//! and never sends: the engine carries out what it returns.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use oasis_engine::resource::Reservation;
use oasis_engine::{JobRejected, JobResult, Transmit};

use super::pacing::{pace_allows, Pace};
use super::proxy::upstream::{Upstream, UpstreamError};
use super::proxy::{Proxy, Step, CHUNK_BYTES};
use crate::http::MultipartPart;

/// Response heads up to this size share a send with the first body bytes (below half the
/// smallest pool chunk the configuration allows, 4096 bytes).
const HEAD_WITH_BODY_BYTES_MAX: usize = 2000;

/// The body of a response that is not in its head's buffer.
pub(super) enum BodyOut {
    None,
    File {
        file: Arc<File>,
        offset: u64,
        remaining: u64,
    },
    Multi {
        file: Arc<File>,
        parts: VecDeque<MultipartPart>,
        current: Option<(u64, u64)>,
        closing: Option<Vec<u8>>,
    },
    /// A holder's body (proxy mode): read a chunk at a time on the proxy threads, each sent
    /// before the next is asked for.
    Proxy(Box<ProxyBody>),
}

/// A proxied body under way: at most one chunk read and not sent.
pub(super) struct ProxyBody {
    pub(super) proxy: Arc<Proxy>,
    /// The holder's connection; `None` while a proxy thread reads from it.
    pub(super) upstream: Option<Upstream>,
    /// A chunk read, to send next.
    pub(super) chunk: Option<Vec<u8>>,
}

/// What a proxy thread hands back for one chunk: the connection, and the bytes or the error.
struct ChunkRead {
    upstream: Upstream,
    result: Result<Vec<u8>, UpstreamError>,
}

impl ProxyBody {
    /// The next transmit: the chunk read, a step reading the next one, or `None` when the
    /// body is complete.
    fn poll(&mut self) -> Option<Transmit> {
        if let Some(chunk) = self.chunk.take() {
            return Some(Transmit::Bytes(chunk));
        }
        let Some(mut upstream) = self.upstream.take() else {
            // A read is in flight (the engine does not poll then).
            return Some(Transmit::Idle);
        };
        if upstream.left() == 0 {
            return None;
        }
        let proxy = Arc::clone(&self.proxy);
        Some(Transmit::Defer(Box::new(move |completer| {
            let step: Step = Box::new(move || {
                let mut buf = Vec::with_capacity(CHUNK_BYTES);
                let result = upstream.read_chunk(&mut buf, CHUNK_BYTES).map(|()| buf);
                completer.complete(Box::new(ChunkRead { upstream, result }));
            });
            // Refused, the step is dropped with its completer: the session hears a rejection.
            proxy.submit(step, false);
        })))
    }
}

/// A stream's admission: what it reserved, held until the response ends.
pub(super) struct Admission {
    /// `None` for a segment paced at 1x: its bandwidth is the connection's hold as a viewer.
    pub(super) _net: Option<Reservation>,
    /// `None` for a proxied stream, which reads no disk here.
    pub(super) _disk: Option<Reservation>,
    pub(super) _memory: Reservation,
}

pub(super) struct Respond {
    pub(super) head: Option<Vec<u8>>,
    pub(super) body: BodyOut,
    pub(super) close_after: bool,
    pub(super) _admission: Option<Admission>,
    pub(super) pace: Option<Pace>,
    pub(super) body_sent: u64,
    pub(super) last_progress: Instant,
}

impl Respond {
    /// A response that is all in `out` (head and body).
    pub(super) fn bytes(out: Vec<u8>, close_after: bool, now: Instant) -> Respond {
        Respond {
            head: Some(out),
            body: BodyOut::None,
            close_after,
            _admission: None,
            pace: None,
            body_sent: 0,
            last_progress: now,
        }
    }

    /// Whether the body streams from a file (an active stream, for metrics and phases).
    pub(super) fn streams(&self) -> bool {
        !matches!(self.body, BodyOut::None)
    }

    fn allowed(&self, file: &Arc<File>, offset: u64, want: u64, now: Instant) -> Transmit {
        match pace_allows(self.pace.as_ref(), self.body_sent, want, now) {
            Ok(len) => Transmit::File {
                file: Arc::clone(file),
                offset,
                len,
            },
            Err(at) => Transmit::WaitUntil(at),
        }
    }

    /// The next transmit, or `None` once everything was sent.
    pub(super) fn poll(&mut self, now: Instant) -> Option<Transmit> {
        if let Some(h) = self.head.take() {
            // A head and the start of a plain body leave in one send when pacing allows.
            if let BodyOut::File {
                file,
                offset,
                remaining,
            } = &self.body
            {
                let want = *remaining;
                if want > 0 && h.len() <= HEAD_WITH_BODY_BYTES_MAX {
                    if let Ok(len) = pace_allows(self.pace.as_ref(), self.body_sent, want, now) {
                        return Some(Transmit::FileWithHead {
                            head: h,
                            file: Arc::clone(file),
                            offset: *offset,
                            len,
                        });
                    }
                }
            }
            return Some(Transmit::Bytes(h));
        }
        if let BodyOut::Proxy(p) = &mut self.body {
            return p.poll();
        }
        match &self.body {
            BodyOut::File {
                file,
                offset,
                remaining,
            } if *remaining > 0 => Some(self.allowed(file, *offset, *remaining, now)),
            BodyOut::Multi {
                file,
                current: Some((offset, remaining)),
                ..
            } if *remaining > 0 => Some(self.allowed(file, *offset, *remaining, now)),
            BodyOut::Multi { .. } => {
                let BodyOut::Multi {
                    parts,
                    current,
                    closing,
                    ..
                } = &mut self.body
                else {
                    unreachable!()
                };
                if let Some(part) = parts.pop_front() {
                    *current = Some((part.range.start, part.range.len()));
                    return Some(Transmit::Bytes(part.header));
                }
                closing.take().map(Transmit::Bytes)
            }
            _ => None,
        }
    }

    /// A proxy thread's answer for the body's next chunk: `Err` with the reason when the
    /// body cannot go on (the holder failed, the proxy refused the step), and the connection
    /// must be cut rather than the body end short.
    pub(super) fn proxied(&mut self, result: JobResult, now: Instant) -> Result<(), String> {
        let BodyOut::Proxy(p) = &mut self.body else {
            return Err("a proxy chunk arrived for a response that is not proxied".into());
        };
        if result.is::<JobRejected>() {
            return Err("the proxy threads refused the next chunk (queue full or stopping)".into());
        }
        let read = result
            .downcast::<ChunkRead>()
            .map_err(|_| "a proxy step answered something else".to_string())?;
        let ChunkRead { upstream, result } = *read;
        let chunk = result.map_err(|e| e.to_string())?;
        self.last_progress = now;
        p.upstream = Some(upstream);
        p.chunk = Some(chunk);
        Ok(())
    }

    /// The engine sent `n` bytes: of a buffer (`file_bytes` false) or of the body's file.
    pub(super) fn on_sent(&mut self, n: u64, file_bytes: bool, now: Instant) {
        self.last_progress = now;
        if !file_bytes {
            return;
        }
        self.body_sent += n;
        match &mut self.body {
            BodyOut::File {
                offset, remaining, ..
            }
            | BodyOut::Multi {
                current: Some((offset, remaining)),
                ..
            } => {
                *offset += n;
                *remaining -= n.min(*remaining);
            }
            _ => debug_assert!(false, "file bytes sent without a file body"),
        }
    }
}
