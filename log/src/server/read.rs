//! The reader role: a connection after its `READ` (or `LIST`).
//!
//! A `READ` is answered in stretches: a job on the engine's job thread plans the next one
//! (`store::plan_read`: `CHUNK`s of short records copied into frames, `GAP`s, and whole long
//! records to send from their files), the session sends it, then plans the next, until the
//! stream's durable end, where it sends `END`. Without `follow` the connection then closes; with
//! it, the session looks every [`FOLLOW_POLL`] for a durable end that has moved and sends what
//! is new (and `END` again once caught up). A record sent from its file goes out as the frame's
//! 13-byte head with the file bytes (`FileWithHead`, then `File` for what is left), then its
//! 4-byte CRC. `LIST` is answered from memory at once.
//!
//! Pure state: the caller (`session`) carries out the transmits it returns.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use oasis_engine::{JobResult, Transmit};

use super::{Shared, FOLLOW_POLL};
use crate::proto::{encode, Message, FRAME_OVERHEAD_BYTES};
use crate::store::{plan_read, Cursor, Piece, Plan, Stream};

/// A long record on its way out of its file.
struct FileSend {
    head: [u8; 13],
    head_sent: bool,
    file: Arc<File>,
    pos: u64,
    left: u64,
    crc: [u8; 4],
    crc_sent: bool,
}

/// What a planning job hands back.
type Planned = (Cursor, std::io::Result<Plan>);

/// A reading connection.
pub(super) struct Reader {
    name: String,
    /// Where the answer is (the cursor's offset when the last plan came back).
    from: u64,
    follow: bool,
    /// `None` while planning (the job holds it) or while the stream is unknown.
    cursor: Option<Cursor>,
    planning: bool,
    /// More to plan before the durable end as last seen.
    need_plan: bool,
    pieces: VecDeque<Piece>,
    current: Option<FileSend>,
    /// The offset of the last `END` sent (none sent yet: `None`).
    ended_at: Option<u64>,
    /// The answer is complete (no `follow`): close once it is sent.
    pub done: bool,
    /// Not before this instant (following and nothing new yet, or a plan to try again).
    pub wait_until: Option<Instant>,
}

/// Why a reader stops: logged, then the connection closes.
pub(super) type ReadFailure = String;

impl Reader {
    /// A `READ` of `stream` from `from`.
    pub fn new(shared: &Shared, name: String, from: u64, follow: bool) -> Reader {
        let cursor = shared
            .store
            .find(&name)
            .map(|s: Arc<Stream>| Cursor::new(s, from));
        Reader {
            name,
            from,
            follow,
            cursor,
            planning: false,
            need_plan: true,
            pieces: VecDeque::new(),
            current: None,
            ended_at: None,
            done: false,
            wait_until: None,
        }
    }

    /// The next transmit: a piece being sent, the next piece, a plan to make, or a wait.
    pub fn poll(&mut self, shared: &Shared, now: Instant) -> Option<Transmit> {
        loop {
            if let Some(t) = self.send_current() {
                return Some(t);
            }
            match self.pieces.pop_front() {
                Some(Piece::Frames(f)) => return Some(Transmit::Bytes(f)),
                Some(Piece::File {
                    head,
                    file,
                    pos,
                    len,
                    crc,
                }) => {
                    self.current = Some(FileSend {
                        head,
                        head_sent: false,
                        file,
                        pos,
                        left: len,
                        crc,
                        crc_sent: false,
                    });
                    continue;
                }
                None => {}
            }
            if self.planning || self.done {
                return None;
            }
            if let Some(until) = self.wait_until {
                if now < until {
                    return Some(Transmit::WaitUntil(until));
                }
                self.wait_until = None;
            }
            return self.plan_or_wait(shared, now);
        }
    }

    /// The transmit of the record being sent, if it is not all sent.
    fn send_current(&mut self) -> Option<Transmit> {
        let cur = self.current.as_mut()?;
        if !cur.head_sent {
            return Some(Transmit::FileWithHead {
                head: cur.head.to_vec(),
                file: Arc::clone(&cur.file),
                offset: cur.pos,
                len: cur.left,
            });
        }
        if cur.left > 0 {
            return Some(Transmit::File {
                file: Arc::clone(&cur.file),
                offset: cur.pos,
                len: cur.left,
            });
        }
        if !cur.crc_sent {
            return Some(Transmit::Bytes(cur.crc.to_vec()));
        }
        self.current = None;
        None
    }

    /// Everything planned is sent: plan more, answer `END`, or wait for the stream to grow.
    fn plan_or_wait(&mut self, shared: &Shared, now: Instant) -> Option<Transmit> {
        if self.cursor.is_none() {
            // A stream the server does not know (yet).
            match shared.store.find(&self.name) {
                Some(s) => self.cursor = Some(Cursor::new(s, self.from)),
                None => return self.caught_up(self.from, now),
            }
        }
        let cursor = self.cursor.as_ref()?;
        if !self.need_plan {
            // Caught up: plan again once more is durable.
            let durable = shared.store.find(&self.name).map_or(0, |s| s.durable_end());
            if durable <= cursor.at() {
                return self.caught_up(cursor.at(), now);
            }
            self.need_plan = true;
        }
        let mut cursor = self.cursor.take()?;
        self.planning = true;
        Some(Transmit::Job(Box::new(move || {
            let plan = plan_read(&mut cursor);
            Box::new((cursor, plan)) as JobResult
        })))
    }

    /// At the durable end: `END` (once per offset reached), then close or wait.
    fn caught_up(&mut self, at: u64, now: Instant) -> Option<Transmit> {
        let end = if self.ended_at != Some(at) {
            self.ended_at = Some(at);
            let mut f = Vec::new();
            encode(&Message::End { offset: at }, &mut f);
            Some(Transmit::Bytes(f))
        } else {
            None
        };
        if !self.follow {
            self.done = true;
            return end;
        }
        if end.is_none() {
            let until = now + FOLLOW_POLL;
            self.wait_until = Some(until);
            return Some(Transmit::WaitUntil(until));
        }
        end
    }

    /// A plan came back from its job (at `now`).
    pub fn planned(&mut self, result: JobResult, now: Instant) -> Result<(), ReadFailure> {
        self.planning = false;
        let (cursor, plan) = match result.downcast::<Planned>() {
            Ok(p) => *p,
            Err(_) => {
                // The job queue was full and the cursor went with the job: a new one starts
                // where it was, a little later (the session's deadline wakes it).
                self.cursor = None;
                self.need_plan = true;
                self.wait_until = Some(now + FOLLOW_POLL);
                return Ok(());
            }
        };
        self.from = cursor.at();
        self.cursor = Some(cursor);
        let plan = plan.map_err(|e| format!("stream {}: {e}", self.name))?;
        self.need_plan = !plan.at_end;
        self.pieces.extend(plan.pieces);
        Ok(())
    }

    /// A send finished: `returned` is `Some` for bytes (frames, a head, a CRC), `None` for file
    /// bytes, `n` of them.
    pub fn sent(&mut self, n: u64, returned: bool) {
        let Some(cur) = self.current.as_mut() else {
            return;
        };
        if !returned {
            cur.pos += n;
            cur.left -= n.min(cur.left);
        } else if !cur.head_sent {
            cur.head_sent = true;
        } else if cur.left == 0 {
            cur.crc_sent = true;
        }
    }
}

/// Bytes of the answer to a `LIST` of `streams`: a `STREAM` frame each, then `END`.
pub(super) fn list_bytes(streams: &[Arc<Stream>]) -> usize {
    let stream_frame = |name: &str| FRAME_OVERHEAD_BYTES + 2 + name.len() + 24;
    let end_frame = FRAME_OVERHEAD_BYTES + 8;
    streams
        .iter()
        .map(|s| stream_frame(s.name()))
        .sum::<usize>()
        + end_frame
}

/// The answer to a `LIST` (`streams`: those held whose names start with its prefix, from
/// `Store::list`): a `STREAM` frame each, then `END` with their number.
pub(super) fn list(streams: &[Arc<Stream>], out: &mut Vec<u8>) {
    for s in streams {
        let ranges = s.ranges();
        let first = ranges.first().map_or(0, |r| r.0);
        let held = ranges.iter().map(|r| r.1 - r.0).sum();
        encode(
            &Message::Stream {
                stream: s.name().to_string(),
                first,
                durable_end: s.durable_end(),
                held,
            },
            out,
        );
    }
    encode(
        &Message::End {
            offset: streams.len() as u64,
        },
        out,
    );
}
