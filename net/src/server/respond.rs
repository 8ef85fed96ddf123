//! A response on its way out: its head, its body (one file range, or the parts of a
//! `multipart/byteranges` body), the admission it holds, and its pace. It turns into the next
//! [`Transmit`] and counts what the engine reports sent. It decides nothing about the request
//! and never sends: the engine carries out what it returns.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use oasis_engine::resource::Reservation;
use oasis_engine::Transmit;

use super::pacing::{pace_allows, Pace};
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
}

/// A stream's admission: what it reserved, held until the response ends.
pub(super) struct Admission {
    pub(super) _net: Reservation,
    pub(super) _disk: Reservation,
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
