//! One connection's state: its socket, its session, its input buffer, the transmit in flight
//! ([`Out`]) and whatever that transmit holds until its completion arrives (a `Vec`, a pool
//! chunk, a pipe, a mapping, an open's path), and the connection-level steps of closing.
//!
//! The bottom layer of the worker: every mechanism above works on a `&mut Conn`. This module must
//! never reach another connection or the loop, and submits only on its own socket's behalf.

use std::fs::File;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use socket2::SockRef;

use super::mapping::Mapping;
use super::op::{user_data, Ring, OP_WRITE};
use super::pipes::Pipe;
use crate::direct::DirectRead;
use crate::pool::Chunk;
use crate::resource::{Reservation, Resource, ResourceManager};
use crate::session::Session;
use crate::timer::Wheel;

/// Longest lingering close (see `Conn::lingering`).
pub(super) const LINGER: Duration = Duration::from_secs(2);

/// How the connection is receiving now.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum RecvState {
    None,
    /// Waiting for readability before giving the connection a buffer (no provided buffers).
    Polling,
    /// A single receive into the spare capacity of `Conn::input`.
    Receiving,
    /// A multishot receive into the worker's provided buffers; `input` is free to touch.
    Multishot,
}

/// The connection's transmit in flight, holding what the kernel uses until the completion.
pub(super) enum Out {
    Idle,
    Bytes {
        buf: Vec<u8>,
        sent: usize,
    },
    /// Waiting for a free pool chunk.
    WaitChunk {
        head: Option<Vec<u8>>,
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// A chunk is being filled (locally: the chunk and file are held here; remotely: by the file
    /// worker, which sends them back).
    Reading {
        local: Option<(Chunk, Arc<File>)>,
        head: Option<Vec<u8>>,
        /// An O_DIRECT read: where it lands; the head is copied in when it completes.
        direct: Option<DirectRead>,
    },
    /// `len` bytes of the chunk from `start` go out; the first `head`'s length of them are a
    /// response head.
    Sending {
        chunk: Chunk,
        start: usize,
        len: usize,
        sent: usize,
        head: Option<Vec<u8>>,
    },
    /// Splicing: the file fills the pipe (`in_pipe == 0`, waiting for SPLICE_IN), then the pipe
    /// drains to the socket (SPLICE_OUT, or a POLLOUT wait when the socket is full).
    Splicing {
        _file: Arc<File>,
        pipe: Pipe,
        in_pipe: usize,
        total: usize,
        /// More pieces of this transmit follow (SPLICE_F_MORE on the socket half).
        more: bool,
    },
    /// Waiting for a result for `Session::on_job_done` (`Msg::JobDone`): a job on the catalog
    /// thread, or a deferred transmit's completer held by another thread.
    Job,
    /// An OPENAT (`Transmit::Open` or `Create`) is in flight; the path it reads is held here
    /// until it completes.
    Opening(std::ffi::CString),
    /// A WRITE of `data[written..]` to `file` at `offset + written` is in flight; the buffer and
    /// the file are held here until it completes (`Transmit::Write`).
    Writing {
        file: Arc<File>,
        offset: u64,
        data: Vec<u8>,
        written: usize,
    },
    /// A hot file transmit to issue again as it is: it waits on the deferred FIFO for the next
    /// loop iteration (this one's synchronous send budget being spent), or a POLLOUT for a
    /// socket that took nothing has completed (`Out::Blocked`) and it is driven right away.
    Deferred {
        file: Arc<File>,
        offset: u64,
        len: u64,
        /// Its pages were fetched for it (`Out::Fetching`): should they be gone again, it takes
        /// the ring splice rather than fetching once more, so it always makes progress.
        fetched: bool,
    },
    /// A cold stretch's 2 MiB block is being read into the page cache (`fetch::Fetches::start`);
    /// the stretch then leaves by `sendfile` like a hot one.
    Fetching {
        file: Arc<File>,
        offset: u64,
        len: u64,
        /// The mapping the MADVISE populates; unmapped when the fetch is over.
        _mapping: Mapping,
    },
    /// A cold stretch waiting, in one of two lists, with no ring operation held for it: joined
    /// to the fetch of its block by another connection of this worker (`fetch::Fetches`),
    /// after which it goes out like a fetched stretch; or queued for one of the worker's
    /// `cold_fetches_max` fetch slots (`fetch::Fetches`), and fetched then. A connection
    /// is in at most one list at a time (an entry is removed before its connection moves on).
    Waiting {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// A `sendfile` found the socket full and a POLLOUT is in flight. `Some` holds the transmit
    /// that sent nothing, issued again once the socket has room; after a partial send the
    /// session was told what left and asks for the rest itself.
    Blocked(Option<Pending>),
}

impl Out {
    /// What the connection is doing, in a word (for logs).
    pub(super) fn name(&self) -> &'static str {
        match self {
            Out::Idle => "idle",
            Out::Bytes { .. } => "bytes",
            Out::WaitChunk { .. } => "chunk wait",
            Out::Reading { .. } => "read",
            Out::Sending { .. } => "send",
            Out::Splicing { .. } => "splice",
            Out::Job => "job",
            Out::Opening(_) => "open",
            Out::Writing { .. } => "write",
            Out::Deferred { .. } => "deferred",
            Out::Fetching { .. } => "fetch",
            Out::Waiting { .. } => "fetch wait",
            Out::Blocked(_) => "poll",
        }
    }
}

/// A file transmit that sent nothing and waits for the socket (`Out::Blocked`).
pub(super) struct Pending {
    pub(super) file: Arc<File>,
    pub(super) offset: u64,
    pub(super) len: u64,
    /// See `Out::Deferred::fetched`.
    pub(super) fetched: bool,
}

/// One connection. Moves between workers whole (`Msg::Adopt`) when nothing is in flight.
pub(crate) struct Conn {
    pub(super) fd: OwnedFd,
    pub(super) gen: u32,
    pub(super) session: Box<dyn Session>,
    pub(super) input: Vec<u8>,
    pub(super) input_reservation: Option<Reservation>,
    pub(super) recv: RecvState,
    /// A cancel of the multishot receive is on its way (input backpressure).
    pub(super) recv_cancelling: bool,
    /// The provided buffers ran out under this connection: receive once into `input` instead.
    pub(super) no_bufs: bool,
    pub(super) out: Out,
    /// Ring operations, remote reads and jobs in flight.
    pub(super) ops: u32,
    pub(super) closing: bool,
    pub(super) peer_closed: bool,
    pub(super) timer: Option<(u32, Instant)>,
    pub(super) wait_until: Option<Instant>,
    pub(super) shutdown_told: bool,
    /// Lingering close until this instant: our side is shut for writing and input is read and
    /// discarded, so unread pipelined requests do not turn the close into a reset that destroys
    /// responses the client has not read yet (what nginx calls lingering_close).
    pub(super) lingering: Option<Instant>,
    /// TCP_CORK is set (`tcp_nopush`): from a large body's head or first `sendfile` until the
    /// connection has no transmit left (the response is done, or a paced stream waits), so the
    /// body leaves in whole segments. Without it, a client's ACK processed between two of
    /// `sendfile`'s 64 KiB pieces sent the piece's short tail as a segment of its own
    /// (TCP_NODELAY): at 1000 connections 0.7 client ACKs per data segment against nginx's 0.4,
    /// and about 0.8x its throughput where the server's core was the limit.
    pub(super) corked: bool,
    /// The generation this connection had when it was last put on the deferred FIFO
    /// (`hot::DeferredFifo`), while that entry waits there. A connection that gets a new
    /// generation (adopted from another worker, or put back after a failed hand-off) no longer
    /// matches it, so its stale entry is skipped and a new one can be queued.
    pub(super) deferred_gen: Option<u32>,
    _connection: Reservation,
}

impl Conn {
    pub(super) fn new(
        fd: OwnedFd,
        gen: u32,
        session: Box<dyn Session>,
        reservation: Reservation,
    ) -> Conn {
        Conn {
            fd,
            gen,
            session,
            input: Vec::new(),
            input_reservation: None,
            recv: RecvState::None,
            recv_cancelling: false,
            no_bufs: false,
            out: Out::Idle,
            ops: 0,
            closing: false,
            peer_closed: false,
            timer: None,
            wait_until: None,
            shutdown_told: false,
            lingering: None,
            corked: false,
            deferred_gen: None,
            _connection: reservation,
        }
    }

    /// Corks the socket (TCP_CORK) unless it already is.
    pub(super) fn cork(&mut self) {
        if !self.corked {
            self.corked = true;
            // A failed TCP option changes only how bytes are packed into segments, never which
            // bytes leave, so it is not reported.
            let _ = SockRef::from(&self.fd).set_tcp_cork(true);
        }
    }

    /// Uncorks the socket, which sends what the cork held.
    pub(super) fn uncork(&mut self) {
        if self.corked {
            self.corked = false;
            let _ = SockRef::from(&self.fd).set_tcp_cork(false);
        }
    }

    /// Submits a POLLOUT on the socket; its completion comes back as `op`.
    pub(super) fn push_pollout(&mut self, ring: &mut Ring, key: usize, op: u64) {
        let e = opcode::PollAdd::new(types::Fd(self.fd.as_raw_fd()), libc::POLLOUT as u32)
            .build()
            .user_data(user_data(op, key, self.gen));
        self.ops += 1;
        // SAFETY: no buffers; the socket is owned by this connection, which is freed only when
        // its operations have completed.
        unsafe { ring.push(e) };
    }

    /// Submits the WRITE of what `Out::Writing` has not written yet.
    pub(super) fn push_write(&mut self, ring: &mut Ring, key: usize) {
        let Out::Writing {
            file,
            offset,
            data,
            written,
        } = &self.out
        else {
            unreachable!("a write without Out::Writing")
        };
        let rest = &data[*written..];
        debug_assert!(!rest.is_empty());
        // A WRITE takes at most u32::MAX bytes; a shorter write is continued like any other.
        let len = rest.len().min(u32::MAX as usize) as u32;
        let e = opcode::Write::new(types::Fd(file.as_raw_fd()), rest.as_ptr(), len)
            .offset(offset + *written as u64)
            .build()
            .user_data(user_data(OP_WRITE, key, self.gen));
        self.ops += 1;
        // SAFETY: the bytes live in `data`'s heap buffer and the descriptor in `file`, both held
        // by `self.out` (which is not replaced before the completion takes them) on a
        // connection that is freed only with no operation in flight.
        unsafe { ring.push(e) };
    }

    /// Gives the connection its own input buffer of `bytes`, reserved as memory first; false
    /// (and nothing changed) when the reservation is refused.
    pub(super) fn give_input_buffer(&mut self, bytes: usize, rm: &Arc<ResourceManager>) -> bool {
        match rm.reserve(Resource::MemoryBytes, bytes as u64) {
            Ok(r) => {
                self.input
                    .reserve_exact(bytes.saturating_sub(self.input.len()));
                self.input_reservation = Some(r);
                true
            }
            Err(e) => {
                tracing::warn!("connection input buffer refused: {e}");
                false
            }
        }
    }

    /// Keeps received bytes the session has not consumed in the connection's own input buffer,
    /// reserving it first. The buffer may pass `input_bytes_max` by what was already received
    /// when the backpressure cancel lands (at most a few provided buffers). False if memory was
    /// refused.
    pub(super) fn stash(
        &mut self,
        bytes: &[u8],
        input_bytes_max: usize,
        rm: &Arc<ResourceManager>,
    ) -> bool {
        if bytes.is_empty() {
            return true;
        }
        if self.input_reservation.is_none() && !self.give_input_buffer(input_bytes_max, rm) {
            return false;
        }
        self.input.extend_from_slice(bytes);
        true
    }

    /// Marks the connection closing; with operations in flight, shuts the socket down so that
    /// receives, polls and sends complete at once (file reads finish on their own). True when
    /// nothing is in flight and the connection can be freed now.
    pub(super) fn start_closing(&mut self) -> bool {
        if !self.closing {
            self.closing = true;
            if self.ops > 0 {
                let _ = SockRef::from(&self.fd).shutdown(Shutdown::Both);
            }
        }
        self.ops == 0
    }

    /// Begins a lingering close: our side is shut for writing, input is read and discarded until
    /// the peer closes or [`LINGER`] has passed.
    pub(super) fn linger(&mut self, now: Instant) {
        let _ = SockRef::from(&self.fd).shutdown(Shutdown::Write);
        self.lingering = Some(now + LINGER);
        self.wait_until = None;
    }

    /// Puts a cold stretch in `Out::Waiting` (in a fetch list); returns the generation its list
    /// entry carries.
    pub(super) fn park(&mut self, file: &Arc<File>, offset: u64, len: u64) -> u32 {
        self.out = Out::Waiting {
            file: Arc::clone(file),
            offset,
            len,
        };
        self.gen
    }

    /// The waiting stretch (`Out::Waiting`), taken out (the connection is left `Idle`); None
    /// when the connection does not wait.
    pub(super) fn take_waiting(&mut self) -> Option<(Arc<File>, u64, u64)> {
        match std::mem::replace(&mut self.out, Out::Idle) {
            Out::Waiting { file, offset, len } => Some((file, offset, len)),
            other => {
                self.out = other;
                None
            }
        }
    }

    /// Puts the connection in the timer wheel at its earliest deadline (pacing, the session's
    /// own, a lingering close), or takes it out.
    pub(super) fn update_timer(&mut self, key: usize, wheel: &mut Wheel) {
        let want = match (self.wait_until, self.session.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let want = if self.lingering.is_some() {
            self.lingering
        } else {
            want
        };
        if let (Some((_, at)), Some(w)) = (self.timer, want) {
            if at <= w {
                // A deadline that moved later (a stream's progress pushes its send timeout on
                // with every piece) keeps the earlier entry: the timer re-checks and re-arms.
                // Moving it each time cost a slot scan per piece, and a stream's deadlines
                // cluster in a few slots.
                return;
            }
        }
        if let Some((slot, _)) = self.timer.take() {
            wheel.remove(key as u32, slot);
        }
        if let Some(at) = want {
            let slot = wheel.insert(key as u32, at);
            self.timer = Some((slot, at));
        }
    }
}
