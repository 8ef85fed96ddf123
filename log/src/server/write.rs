//! The writer role: a shipper's connection after its `HELLO`.
//!
//! `HELLO` is checked (version, name, the server's stream limit, the stream's one writer) and
//! answered `WELCOME`. `DATA` at the expected offset joins the pending batch; at another offset
//! it is answered `REFUSE` 1. One batch at a time goes to the store's writer thread (a
//! `Transmit::Defer` whose completer the writer thread completes once the batch is durable, or
//! failed); meanwhile the next batch gathers, up to [`BATCH_BYTES_MAX`], and past that input is
//! not read (backpressure on the shipper). Each durable batch is answered `ACK`; a full disk
//! `REFUSE` 2, then the connection closes.
//!
//! Pure state: the caller (`session`) sends what it produces and closes when told.

use std::sync::Arc;

use oasis_engine::{Completer, JobResult, Transmit};

use super::{Shared, BATCH_BYTES_MAX};
use crate::proto::{refuse, validate_stream, Message, DATA_BYTES_MAX, VERSION};
use crate::store::{Append, AppendError, AppendResult, StoreError, WriterClaim};

/// The most a pending batch holds: just under a full batch, and one more `DATA`.
const PENDING_BYTES_MAX: usize = BATCH_BYTES_MAX + DATA_BYTES_MAX;

/// The capacity a pending batch of capacity `cap` grows to so it holds `needed` bytes: doubling
/// (so many small frames are copied a bounded number of times), never past what it can hold.
fn grown(cap: usize, needed: usize) -> usize {
    if needed <= cap {
        return cap;
    }
    cap.saturating_mul(2).min(PENDING_BYTES_MAX).max(needed)
}

/// A refusal to send, and whether the connection closes after it.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    /// A `refuse::*` code.
    pub code: u8,
    /// Where to resume (code 1).
    pub expect: u64,
    /// What to tell the peer.
    pub reason: String,
}

impl Refusal {
    fn new(code: u8, expect: u64, reason: impl Into<String>) -> Refusal {
        Refusal {
            code,
            expect,
            reason: reason.into(),
        }
    }

    /// As the `REFUSE` frame's message.
    pub fn message(self) -> Message {
        Message::Refuse {
            code: self.code,
            expect: self.expect,
            reason: self.reason,
        }
    }

    /// Codes 2-5 end the connection.
    pub fn closes(&self) -> bool {
        self.code != refuse::UNEXPECTED_OFFSET
    }
}

/// A stream's writing connection.
pub(super) struct Writer {
    claim: WriterClaim,
    /// The offset the next `DATA` must have.
    expect: u64,
    /// Accepted bytes not yet handed to the store, from `pending_at`.
    pending: Vec<u8>,
    pending_at: u64,
    /// A batch is with the store...
    in_flight: bool,
    /// ... holding this many bytes of memory.
    in_flight_bytes: usize,
}

/// What a `HELLO` leads to.
pub(super) fn hello(
    shared: &Shared,
    version: u8,
    stream: &str,
    oldest_unacked: u64,
) -> Result<(Writer, Message), Refusal> {
    if version != VERSION {
        return Err(Refusal::new(
            refuse::BAD_HELLO,
            0,
            format!("protocol version {version}; this server speaks {VERSION}"),
        ));
    }
    validate_stream(stream).map_err(|e| Refusal::new(refuse::BAD_HELLO, 0, e.to_string()))?;
    let s = shared.store.stream(stream).map_err(|e| match e {
        StoreError::TooManyStreams(_) => Refusal::new(refuse::AT_LIMIT, 0, e.to_string()),
        other => Refusal::new(refuse::AT_LIMIT, 0, other.to_string()),
    })?;
    let Some(claim) = s.claim_writer() else {
        return Err(Refusal::new(
            refuse::STREAM_BUSY,
            0,
            format!("stream {stream} is being written by another connection of this server"),
        ));
    };
    let durable_end = s.durable_end();
    // Holding the stream up to oldest_unacked or beyond: the shipper skips what is here.
    // Holding less: the bytes before oldest_unacked are another server's; start there.
    let expect = durable_end.max(oldest_unacked);
    let writer = Writer {
        claim,
        expect,
        pending: Vec::new(),
        pending_at: expect,
        in_flight: false,
        in_flight_bytes: 0,
    };
    Ok((
        writer,
        Message::Welcome {
            expect,
            durable_end,
        },
    ))
}

impl Writer {
    /// A `DATA` frame: kept for the next batch, or refused (code 1) at a wrong offset.
    pub fn data(&mut self, offset: u64, bytes: Vec<u8>) -> Result<(), Refusal> {
        if offset != self.expect {
            return Err(Refusal::new(
                refuse::UNEXPECTED_OFFSET,
                self.expect,
                format!("DATA at {offset}; expected {}", self.expect),
            ));
        }
        self.expect += bytes.len() as u64;
        if self.pending.is_empty() {
            self.pending = bytes;
        } else {
            let cap = grown(self.pending.capacity(), self.pending.len() + bytes.len());
            self.pending.reserve_exact(cap - self.pending.len());
            self.pending.extend_from_slice(&bytes);
        }
        Ok(())
    }

    /// Memory a `DATA` of `len` bytes adds while it is taken: its payload, and what the
    /// pending batch grows by to hold it.
    pub fn bytes_to_take(&self, len: usize) -> usize {
        if self.pending.is_empty() {
            return len;
        }
        let cap = self.pending.capacity();
        len + grown(cap, self.pending.len() + len) - cap
    }

    /// Memory the writer holds: the pending batch and the one with the store.
    pub fn held_bytes(&self) -> usize {
        self.pending.capacity() + self.in_flight_bytes
    }

    /// Whether it takes more input: not while a full batch waits.
    pub fn wants_input(&self) -> bool {
        self.pending.len() < BATCH_BYTES_MAX
    }

    /// Whether a batch is with the store.
    pub fn in_flight(&self) -> bool {
        self.in_flight
    }

    /// Whether accepted bytes wait for the store.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The next batch for the store, if one is ready and none is with it.
    pub fn next_batch(&mut self, shared: &Arc<Shared>) -> Option<Transmit> {
        if self.in_flight || self.pending.is_empty() {
            return None;
        }
        self.in_flight = true;
        let bytes = std::mem::take(&mut self.pending);
        self.in_flight_bytes = bytes.capacity();
        let offset = self.pending_at;
        self.pending_at = self.expect;
        let stream = Arc::clone(self.claim.stream());
        let store = Arc::clone(&shared.store);
        Some(Transmit::Defer(Box::new(move |completer: Completer| {
            store.append(Append {
                stream,
                offset,
                bytes,
                done: Box::new(move |r: AppendResult| completer.complete(Box::new(r))),
            });
        })))
    }

    /// The store's answer for the batch: an `ACK`, or a refusal.
    pub fn batch_done(&mut self, result: JobResult) -> Result<Message, Refusal> {
        self.in_flight = false;
        self.in_flight_bytes = 0;
        let Ok(result) = result.downcast::<AppendResult>() else {
            return Err(Refusal::new(
                refuse::AT_LIMIT,
                self.expect,
                "the log server dropped the append; try another server",
            ));
        };
        match *result {
            Ok(durable_end) => Ok(Message::Ack { durable_end }),
            Err(AppendError::Unexpected { expect, .. }) => {
                // Bytes gathered since follow the refused batch: resend from `expect`.
                self.pending = Vec::new();
                self.expect = expect;
                self.pending_at = expect;
                Err(Refusal::new(
                    refuse::UNEXPECTED_OFFSET,
                    expect,
                    format!("the stream continues at {expect}"),
                ))
            }
            Err(e @ (AppendError::DiskFull(_) | AppendError::Io(_))) => Err(Refusal::new(
                refuse::DISK_FULL,
                self.expect,
                format!("{e}; nothing of the frame was kept, try another server"),
            )),
            Err(e @ (AppendError::Busy(_) | AppendError::Stopped)) => {
                Err(Refusal::new(refuse::AT_LIMIT, self.expect, e.to_string()))
            }
        }
    }
}
