//! [`LogSession`]: one connection of the log server, as the engine drives it.
//!
//! The dispatcher: decodes frames as input arrives (a corrupt one closes the connection at once,
//! nothing of it kept), gives each to its role (`write`, `read`), queues the frames they answer
//! and hands the engine one transmit at a time: queued frames first, then the role's own (a
//! writer's batch for the store, a reader's plan or record). Before a frame's body is allocated,
//! a batch grows, a read starts, a list is answered or the queue of answers grows, it covers the
//! memory with its reservation (`memory`); without the budget it waits for its batch with the
//! store, or, holding none, refuses (`REFUSE` 4; a queue of answers that cannot grow closes).
//! It keeps the timeouts (a silent writer, a send the peer does not take) and decides when to
//! close: after a refusal that ends the connection is sent, when the peer has gone, or, on
//! shutdown, once a writer's last batch is answered.
//!
//! Never blocks, never reads the clock or a file; `now` comes from the engine.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use oasis_engine::{JobResult, Session, Transmit};

use super::memory::{ConnMemory, IN_BASE_BYTES};
use super::read::{self, Reader};
use super::write::{self, Refusal, Writer};
use super::{Shared, IDLE_TIMEOUT, READER_BYTES, SEND_TIMEOUT};
use crate::proto::{encode, kind, refuse, validate_stream, Decoder, Message};

/// Frames queued for the peer past which input is not read.
const OUT_BYTES_MAX: usize = 64 * 1024;
/// The queue of frames for the peer starts with room for this many bytes.
const CONTROL_BYTES_MIN: usize = 256;

/// What the connection is, once its first frame said so.
enum Role {
    New,
    Writer(Writer),
    Reader(Reader),
    /// Answered a `LIST`; closes once the answer is sent.
    Lister,
}

/// When the connection closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Closing {
    No,
    /// Once the frames queued are sent (a refusal, a list).
    AfterOut,
    /// Now (a corrupt frame, a failed send, a timeout).
    Now,
}

/// One connection of the log server.
pub struct LogSession {
    shared: Arc<Shared>,
    peer: Option<SocketAddr>,
    decoder: Decoder,
    /// Frames to send before anything else.
    out: Vec<u8>,
    /// The transmit in flight is `out`'s bytes (not the reader's), this many bytes of memory.
    sending_out: bool,
    sending_out_bytes: usize,
    role: Role,
    closing: Closing,
    peer_closed: bool,
    draining: bool,
    last_input: Instant,
    /// When the send in flight began.
    send_started: Option<Instant>,
    /// What it has reserved of the server's memory budget.
    memory: ConnMemory,
    /// Input waits for memory the batch with the store gives back.
    memory_wait: bool,
    /// Reserved for the `DATA` frame whose body is arriving, beyond the body: what taking its
    /// payload into the batch adds (see `Writer::bytes_to_take`).
    promised: usize,
}

impl LogSession {
    pub(super) fn new(shared: Arc<Shared>, peer: Option<SocketAddr>, now: Instant) -> LogSession {
        let memory = ConnMemory::open(shared.rm.as_ref());
        let mut s = LogSession {
            shared,
            peer,
            decoder: Decoder::new(),
            out: Vec::new(),
            sending_out: false,
            sending_out_bytes: 0,
            role: Role::New,
            closing: Closing::No,
            peer_closed: false,
            draining: false,
            last_input: now,
            send_started: None,
            memory: ConnMemory::open(None).expect("nothing to reserve"),
            memory_wait: false,
            promised: 0,
        };
        match memory {
            Err(e) => s.refuse(Refusal {
                code: refuse::AT_LIMIT,
                expect: 0,
                reason: format!("the log server is at its memory limit ({e}); try another server"),
            }),
            Ok(m) => s.memory = m,
        }
        s
    }

    /// Memory the connection holds: a frame's body being decoded, what its role holds, and
    /// queued frames.
    fn held(&self) -> usize {
        let role = match &self.role {
            Role::Writer(w) => w.held_bytes(),
            Role::Reader(_) => READER_BYTES,
            Role::New | Role::Lister => 0,
        };
        let out = self.out.capacity() + self.sending_out_bytes;
        self.decoder.held_bytes() + role + out + self.promised
    }

    /// Covers `extra` more bytes than the connection holds now with its reservation.
    fn cover(&mut self, extra: usize) -> bool {
        let held = self.held();
        self.memory.cover(held + extra)
    }

    /// Gives back what the connection no longer holds.
    fn settle(&mut self) {
        let held = self.held();
        self.memory.settle(held);
        debug_assert!(
            self.memory.covers(held),
            "holding {held} bytes, {} reserved: decoder {} (+{} promised), role {}, out {} + {} in flight",
            self.memory.reserved(),
            self.decoder.held_bytes(),
            self.promised,
            held - self.decoder.held_bytes() - self.out.capacity() - self.sending_out_bytes - self.promised,
            self.out.capacity(),
            self.sending_out_bytes
        );
    }

    /// The memory for the next frame was refused: wait for the batch with the store to give
    /// some back, or, holding none, refuse the connection.
    fn memory_short(&mut self) {
        if self.is_writer_busy() {
            self.memory_wait = true;
            return;
        }
        self.refuse(Refusal {
            code: refuse::AT_LIMIT,
            expect: 0,
            reason: "the log server is at its memory limit; try another server".into(),
        });
    }

    /// Queues a refusal; codes 2-5 close the connection once it is sent.
    fn refuse(&mut self, r: Refusal) {
        if r.code != refuse::UNEXPECTED_OFFSET {
            tracing::debug!(peer = ?self.peer, code = r.code, "refused: {}", r.reason);
        }
        if r.closes() {
            self.closing = Closing::AfterOut;
        }
        self.queue(&r.message());
    }

    /// Queues a control frame (`WELCOME`, `ACK`, `REFUSE`) for the peer, covering what the queue
    /// grows by first: a peer that does not read its answers makes it grow (up to
    /// [`OUT_BYTES_MAX`], where input stops). Without the memory the connection closes at once.
    fn queue(&mut self, msg: &Message) {
        let mut frame = Vec::new();
        encode(msg, &mut frame);
        let need = self.out.len() + frame.len();
        let cap = self.out.capacity();
        if need > cap {
            let grown = need.max(2 * cap).max(CONTROL_BYTES_MIN);
            if !self.cover(grown - cap) {
                tracing::debug!(peer = ?self.peer, "no memory for the frames queued; closing");
                self.closing = Closing::Now;
                return;
            }
            self.out.reserve_exact(grown - self.out.len());
        }
        self.out.extend_from_slice(&frame);
    }

    fn unexpected(&mut self, what: &str) {
        self.refuse(Refusal {
            code: refuse::BAD_HELLO,
            expect: 0,
            reason: format!("unexpected {what}: a connection starts with HELLO, READ or LIST, and only a writer sends DATA"),
        });
    }

    /// One decoded frame.
    fn handle(&mut self, msg: Message) {
        let kind = msg.kind();
        match (&mut self.role, msg) {
            (
                Role::New,
                Message::Hello {
                    version,
                    stream,
                    oldest_unacked,
                },
            ) => match write::hello(&self.shared, version, &stream, oldest_unacked) {
                Ok((w, welcome)) => {
                    tracing::debug!(peer = ?self.peer, "writing stream {stream}: {welcome:?}");
                    self.queue(&welcome);
                    self.role = Role::Writer(w);
                }
                Err(r) => self.refuse(r),
            },
            (
                Role::New,
                Message::Read {
                    stream,
                    from,
                    follow,
                },
            ) => match validate_stream(&stream) {
                Ok(()) if self.cover(READER_BYTES) => {
                    self.role = Role::Reader(Reader::new(&self.shared, stream, from, follow))
                }
                Ok(()) => self.memory_short(),
                Err(e) => self.refuse(Refusal {
                    code: refuse::BAD_HELLO,
                    expect: 0,
                    reason: e.to_string(),
                }),
            },
            (Role::New, Message::List { prefix }) => {
                let streams = self.shared.store.list(&prefix);
                let bytes = read::list_bytes(&streams);
                if self.cover(bytes) {
                    self.out.reserve_exact(bytes);
                    read::list(&streams, &mut self.out);
                    self.role = Role::Lister;
                    self.closing = Closing::AfterOut;
                } else {
                    self.memory_short();
                }
            }
            (Role::Writer(w), Message::Data { offset, bytes }) => {
                self.promised = 0;
                if let Err(r) = w.data(offset, bytes, self.decoder.payload_crc()) {
                    self.refuse(r);
                }
            }
            (Role::Reader(_) | Role::Lister, _) => {
                // A reader's answer may be part way through a frame: no REFUSE in between.
                tracing::debug!(peer = ?self.peer, "a reader sent message kind {kind}; closing");
                self.closing = Closing::Now;
            }
            _ => self.unexpected(&format!("message kind {kind}")),
        }
    }

    /// When the connection times out: a send the peer does not take, or silence from a
    /// connection that has not said what it is or from a writer with no batch at the store.
    fn timeout(&self) -> Option<Instant> {
        let send = self.send_started.map(|t| t + SEND_TIMEOUT);
        let silent = match &self.role {
            Role::New => true,
            Role::Writer(w) => !w.in_flight(),
            Role::Reader(_) | Role::Lister => false,
        };
        let idle = silent.then(|| self.last_input + IDLE_TIMEOUT);
        [send, idle].into_iter().flatten().min()
    }

    fn is_writer_busy(&self) -> bool {
        matches!(&self.role, Role::Writer(w) if w.in_flight() || w.has_pending())
    }
}

impl Session for LogSession {
    fn on_input(&mut self, input: &[u8], now: Instant) -> usize {
        self.last_input = now;
        let mut used = 0;
        while used < input.len() && self.wants_input() {
            if let Some((k, body)) = self.decoder.head_ahead(&input[used..]) {
                let extra = match &self.role {
                    Role::Writer(w) if k == kind::DATA => w.bytes_to_take(body),
                    _ => body,
                };
                if !self.cover(extra) {
                    self.memory_short();
                    break;
                }
                // What taking the payload adds beyond its body stays reserved until it is
                // taken: the body may arrive over several inputs, with settles in between.
                self.promised = extra - body;
            }
            match self.decoder.decode(&input[used..]) {
                Ok((n, msg)) => {
                    used += n;
                    if let Some(m) = msg {
                        self.handle(m);
                    }
                }
                Err(e) => {
                    tracing::debug!(peer = ?self.peer, "{e}; closing the connection");
                    self.closing = Closing::Now;
                    self.promised = 0;
                    self.settle();
                    return input.len();
                }
            }
        }
        self.settle();
        used
    }

    fn on_peer_closed(&mut self, _now: Instant) {
        self.peer_closed = true;
    }

    fn poll_transmit(&mut self, now: Instant) -> Transmit {
        if self.closing == Closing::Now {
            return Transmit::Close;
        }
        if !self.out.is_empty() {
            self.sending_out = true;
            self.sending_out_bytes = self.out.capacity();
            self.send_started = Some(now);
            return Transmit::Bytes(std::mem::take(&mut self.out));
        }
        let open = self.closing == Closing::No && !self.peer_closed;
        match &mut self.role {
            Role::Writer(w) if open => {
                if let Some(t) = w.next_batch(&self.shared) {
                    return t;
                }
            }
            Role::Reader(r) if open && !self.draining => {
                if let Some(t) = r.poll(&self.shared, now) {
                    if matches!(
                        t,
                        Transmit::Bytes(_) | Transmit::File { .. } | Transmit::FileWithHead { .. }
                    ) {
                        self.send_started = Some(now);
                    }
                    return t;
                }
                if r.done {
                    return Transmit::Close;
                }
            }
            _ => {}
        }
        if self.closing == Closing::AfterOut || self.peer_closed {
            return Transmit::Close;
        }
        if self.draining && !self.is_writer_busy() {
            return Transmit::Close;
        }
        Transmit::Idle
    }

    fn on_sent(&mut self, result: std::io::Result<u64>, returned: Option<Vec<u8>>, _now: Instant) {
        self.send_started = None;
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(peer = ?self.peer, "send failed: {e}");
                self.closing = Closing::Now;
                return;
            }
        };
        if std::mem::take(&mut self.sending_out) {
            self.sending_out_bytes = 0;
            // Reuse a small buffer for the next frames.
            if let Some(mut b) = returned.filter(|b| b.capacity() <= IN_BASE_BYTES) {
                if self.out.is_empty() {
                    b.clear();
                    self.out = b;
                }
            }
        } else if let Role::Reader(r) = &mut self.role {
            r.sent(n, returned.is_some());
        }
        self.settle();
    }

    fn on_job_done(&mut self, result: JobResult, now: Instant) {
        // A commit that took long is not the shipper's silence.
        self.last_input = now;
        self.memory_wait = false;
        match &mut self.role {
            Role::Writer(w) => match w.batch_done(result) {
                Ok(Some(ack)) => self.queue(&ack),
                Ok(None) => {}
                Err(r) => {
                    if r.code == refuse::DISK_FULL {
                        tracing::warn!(peer = ?self.peer, "append refused: {}", r.reason);
                    }
                    self.refuse(r);
                }
            },
            Role::Reader(r) => {
                if let Err(why) = r.planned(result, now) {
                    tracing::warn!(peer = ?self.peer, "read stopped: {why}");
                    self.closing = Closing::Now;
                }
            }
            Role::New | Role::Lister => {}
        }
        self.settle();
    }

    fn deadline(&self) -> Option<Instant> {
        // A reader's wake-up (a plan to try again) comes through here too: only the timeouts
        // close the connection.
        let wake = match &self.role {
            Role::Reader(r) => r.wait_until,
            _ => None,
        };
        [self.timeout(), wake].into_iter().flatten().min()
    }

    fn on_deadline(&mut self, now: Instant) {
        if self.timeout().is_some_and(|d| d <= now) {
            tracing::debug!(peer = ?self.peer, "timed out (silent peer or a send not taken)");
            self.closing = Closing::Now;
        }
    }

    fn wants_close(&self) -> bool {
        self.closing == Closing::Now
    }

    fn on_shutdown(&mut self, _now: Instant) {
        self.draining = true;
    }

    fn wants_input(&self) -> bool {
        // Answers the peer does not read stop its input too (each wrong DATA adds a REFUSE).
        if self.closing != Closing::No
            || self.draining
            || self.memory_wait
            || self.out.len() >= OUT_BYTES_MAX
        {
            return false;
        }
        match &self.role {
            Role::Writer(w) => w.wants_input(),
            _ => true,
        }
    }

    fn on_close(&mut self, _now: Instant) {
        tracing::debug!(peer = ?self.peer, "connection closed");
    }
}
