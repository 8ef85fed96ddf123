//! The writer role: a shipper's connection after its `HELLO`.
//!
//! `HELLO` is checked (version, name, the server's stream limit, the stream's one writer) and
//! answered `WELCOME`. `DATA` at the expected offset joins the pending batch; at another offset
//! it is answered `REFUSE` 1. One batch at a time goes to the store's writer thread (a
//! `Transmit::Defer` whose completer a writer thread completes); meanwhile the next batch
//! gathers, up to [`BATCH_BYTES_MAX`], and past that input is not read (backpressure on the
//! shipper). A full batch (a shipper streaming) is answered as soon as it is written, so the next
//! one follows while the commit runs; a smaller one once it is durable. With nothing more to
//! hand, a connection whose bytes are written but not all acknowledged waits for the commit (an
//! empty append). Each answer that moves the stream's durable end is sent as an `ACK`; a full
//! disk is `REFUSE` 2, then the connection closes.
//!
//! Pure state: the caller (`session`) sends what it produces and closes when told.

use std::sync::Arc;

use oasis_engine::{Completer, JobResult, Transmit};

use super::batch::{Batch, LIST_BYTES};
use super::{Shared, BATCH_BYTES_MAX};
use crate::proto::{refuse, validate_stream, Message, VERSION};
use crate::store::{Append, AppendError, AppendResult, StoreError, WriterClaim};

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
    pending: Batch,
    pending_at: u64,
    /// A batch is with the store...
    in_flight: bool,
    /// ... holding this many bytes of memory.
    in_flight_bytes: usize,
    /// The end of what was handed to the store, and of what was acknowledged (from `WELCOME`'s
    /// `expect`: what lies before it is this server's, durable, or another's).
    handed: u64,
    acked: u64,
    /// No batch handed yet: the first may start a segment past the stream's end.
    first: bool,
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
        pending: Batch::default(),
        pending_at: expect,
        in_flight: false,
        in_flight_bytes: 0,
        handed: expect,
        acked: expect,
        first: true,
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
    /// (`crc`: the payload's CRC-32C, from the frame's decoder.)
    pub fn data(&mut self, offset: u64, bytes: Vec<u8>, crc: u32) -> Result<(), Refusal> {
        if offset != self.expect {
            return Err(Refusal::new(
                refuse::UNEXPECTED_OFFSET,
                self.expect,
                format!("DATA at {offset}; expected {}", self.expect),
            ));
        }
        self.expect += bytes.len() as u64;
        self.pending.take(bytes, crc);
        Ok(())
    }

    /// Memory a `DATA` of `len` bytes adds while it is taken, asked when its head arrives: what
    /// the pending batch grows by (see [`Batch::bytes_to_take`]), or, if the batch goes to the
    /// store before the body is all in, what a new batch's first payload costs.
    pub fn bytes_to_take(&self, len: usize) -> usize {
        self.pending.bytes_to_take(len).max(len + LIST_BYTES)
    }

    /// Memory the writer holds: the pending batch and the one with the store.
    pub fn held_bytes(&self) -> usize {
        self.pending.held_bytes() + self.in_flight_bytes
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

    /// The next batch for the store if one is ready and none is with it, or else a wait for
    /// the bytes handed to be durable if some are not acknowledged yet.
    pub fn next_batch(&mut self, shared: &Arc<Shared>) -> Option<Transmit> {
        if self.in_flight || (self.pending.is_empty() && self.acked >= self.handed) {
            return None;
        }
        self.in_flight = true;
        self.in_flight_bytes = self.pending.held_bytes();
        // A full batch means the shipper streams: answer on write, take the next meanwhile.
        let durable = self.pending.len() < BATCH_BYTES_MAX;
        let payloads = self.pending.take_all();
        // An empty batch waits for what was handed, up to its end, to be durable.
        let offset = if payloads.is_empty() {
            self.handed
        } else {
            self.pending_at
        };
        self.pending_at = self.expect;
        self.handed = self.expect;
        let opens = std::mem::take(&mut self.first) && !payloads.is_empty();
        let stream = Arc::clone(self.claim.stream());
        let store = Arc::clone(&shared.store);
        Some(Transmit::Defer(Box::new(move |completer: Completer| {
            store.append(Append {
                stream,
                offset,
                payloads,
                durable,
                opens,
                done: Box::new(move |r: AppendResult| completer.complete(Box::new(r))),
            });
        })))
    }

    /// The store's answer for the batch: an `ACK` if the durable end moved, or a refusal.
    pub fn batch_done(&mut self, result: JobResult) -> Result<Option<Message>, Refusal> {
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
            Ok(durable_end) if durable_end > self.acked => {
                self.acked = durable_end;
                Ok(Some(Message::Ack { durable_end }))
            }
            Ok(_) => Ok(None),
            Err(AppendError::Unexpected { expect, .. }) => {
                // Bytes gathered since follow the refused batch: resend from `expect`.
                self.pending = Batch::default();
                self.expect = expect;
                self.pending_at = expect;
                self.handed = expect;
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
