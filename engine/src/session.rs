//! The contract between the engine and a protocol: a sans-IO [`Session`] per connection.
//!
//! A protocol (HTTP in `oasis-net`, the log server in `oasis-log`) never touches a socket, a ring or the
//! clock. The engine feeds it bytes and the time, and asks it what to do next ([`Transmit`]); the
//! engine moves the bytes. Because a session is plain state (`Send`), the engine can move it
//! between workers: from a command worker (parsing, decisions) to a data worker (streaming) and
//! back, as the layout asks ([`Phase`]). Several protocols share one engine: each listen address
//! names its [`Service`].

use std::any::Any;
use std::fs::File;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use crate::shared::{Msg, Shared};

/// What a connection is known by when it opens.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub peer: Option<SocketAddr>,
    /// Index of the listen address it came in on.
    pub listener: u16,
}

/// Blocking work a session hands off the data path (catalog writes, fsync + rename on upload).
/// It runs on the engine's catalog thread (the Database Manager core); the result comes back to
/// [`Session::on_job_done`] on whatever worker then holds the session.
pub type Job = Box<dyn FnOnce() -> JobResult + Send>;
/// What a [`Job`] or a [`Completer`] hands back to [`Session::on_job_done`].
pub type JobResult = Box<dyn Any + Send>;

/// Work whose result another thread delivers ([`Transmit::Defer`]): called on the worker, at
/// once, with the [`Completer`] that result goes through. It must not block: it hands the
/// completer to whoever finishes the work (a protocol's own thread, a queue that thread drains)
/// and returns.
pub type Deferred = Box<dyn FnOnce(Completer) + Send>;

/// Delivers the result of a [`Transmit::Defer`] to [`Session::on_job_done`], from any thread,
/// by the path job results take (the mailbox of the worker that holds the session).
///
/// Exactly one result per defer: [`Completer::complete`] consumes it, and a completer dropped
/// without completing (its work abandoned, the thread that held it gone) delivers
/// [`JobRejected`](crate::JobRejected) instead, so the session always hears back and its
/// connection can close. Bounded by construction: a session has one transmit in flight, so a
/// worker's mailbox holds at most one completion per connection.
pub struct Completer {
    to: Option<Deliver>,
}

/// Where a completer's result goes.
enum Deliver {
    /// The mailbox of the worker holding the session, with the connection's token.
    Worker {
        shared: Arc<Shared>,
        worker: usize,
        token: u64,
    },
    /// A driver's own function ([`Completer::from_fn`]).
    Fn(Box<dyn FnOnce(JobResult) + Send>),
}

impl Completer {
    pub(crate) fn new(shared: Arc<Shared>, worker: usize, token: u64) -> Completer {
        Completer {
            to: Some(Deliver::Worker {
                shared,
                worker,
                token,
            }),
        }
    }

    /// A completer that hands its result to `f` instead of a worker: for drivers that run
    /// sessions without an engine (a protocol's in-memory tests).
    pub fn from_fn(f: impl FnOnce(JobResult) + Send + 'static) -> Completer {
        Completer {
            to: Some(Deliver::Fn(Box::new(f))),
        }
    }

    /// Hands `result` to the session's [`Session::on_job_done`]. Never blocks for long: the
    /// worker's mailbox is sized for it.
    pub fn complete(mut self, result: JobResult) {
        self.deliver(result);
    }

    fn deliver(&mut self, result: JobResult) {
        match self.to.take() {
            Some(Deliver::Worker {
                shared,
                worker,
                token,
            }) => shared.send_must(worker, Msg::JobDone { token, result }),
            Some(Deliver::Fn(f)) => f(result),
            None => {}
        }
    }
}

impl Drop for Completer {
    fn drop(&mut self) {
        self.deliver(Box::new(crate::JobRejected));
    }
}

impl std::fmt::Debug for Completer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Completer")
            .field("pending", &self.to.is_some())
            .finish()
    }
}

/// What the session wants next.
pub enum Transmit {
    /// Send these bytes. The engine returns the Vec in [`Session::on_sent`] for reuse.
    Bytes(Vec<u8>),
    /// Send up to `len` bytes of `file` from `offset`. The engine may send fewer (as much as the
    /// socket takes, within its per-iteration budget; one pool chunk from a cold file) and
    /// reports how much in [`Session::on_sent`]; the session asks again for the rest, so a paced
    /// session bounds each send by what its pace allows.
    File {
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// `head` followed by up to `len` bytes of `file` from `offset`, in one send: the engine copies
    /// the head into the pool chunk ahead of the file bytes (a response head and a small body leave
    /// in one segment). `head` must be shorter than half a pool chunk. [`Session::on_sent`] is
    /// called twice: for the head (with its buffer back), then for the file bytes.
    FileWithHead {
        head: Vec<u8>,
        file: Arc<File>,
        offset: u64,
        len: u64,
    },
    /// Nothing to send before this instant (pacing). Input is still read.
    WaitUntil(Instant),
    /// Nothing to send; waiting for input (or a deadline).
    Idle,
    /// Open this file read-only (O_CLOEXEC) without waiting on the disk in the worker: an
    /// io_uring OPENAT (path lookups the dentry cache answers complete inline; a cold directory
    /// or inode is read in io_uring's worker threads). The result comes to
    /// [`Session::on_opened`].
    Open(std::ffi::CString),
    /// Create this file (write-only, `O_CREAT | O_EXCL | O_CLOEXEC`, mode 0666 less the umask)
    /// without waiting on the disk in the worker: an io_uring OPENAT, as for `Open`. The result
    /// comes to [`Session::on_opened`].
    Create(std::ffi::CString),
    /// Write all of `data` to `file` at `offset` without waiting on the disk in the worker: ring
    /// WRITEs (io_uring's threads wait for the page cache or the disk, the worker does not; a
    /// short write is continued). The buffer and the result come back to
    /// [`Session::on_written`]; input is still read meanwhile only if the session wants it.
    Write {
        file: Arc<File>,
        offset: u64,
        data: Vec<u8>,
    },
    /// Run this job off the data path, then call `on_job_done`.
    Job(Job),
    /// Call this closure now, on the worker, with a [`Completer`] that any thread later completes
    /// with the result for `on_job_done` (a [`JobRejected`](crate::JobRejected) if the completer
    /// is dropped uncompleted). Like a job it is the connection's transmit in flight: nothing is
    /// sent until the result is in, but input is still read if the session wants it, and the
    /// connection closes only after the result. For work a protocol finishes on its own thread
    /// (the log server's group commit acknowledges appends this way); blocking work that has no
    /// thread of its own is a [`Transmit::Job`].
    Defer(Deferred),
    /// Close the connection now (everything asked for was sent).
    Close,
}

/// Which kind of worker should drive the session now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Reading and parsing requests, making decisions.
    Command,
    /// Streaming a response body.
    Data,
}

pub trait Session: Send {
    /// Bytes arrived. Returns how many were consumed; the rest is offered again with more input.
    fn on_input(&mut self, input: &[u8], now: Instant) -> usize;
    /// The peer closed its side or the connection failed for reading.
    fn on_peer_closed(&mut self, now: Instant);
    /// What to do next. Called until it returns `Idle`, `WaitUntil` or `Close`, or a transmit is in
    /// flight.
    fn poll_transmit(&mut self, now: Instant) -> Transmit;
    /// A `Bytes` or `File` transmit finished: `Ok(bytes sent)` or the error that ended it. For
    /// `Bytes`, the buffer comes back.
    fn on_sent(&mut self, result: std::io::Result<u64>, returned: Option<Vec<u8>>, now: Instant);
    /// A `Job` finished, or a `Defer`'s completer delivered its result.
    fn on_job_done(&mut self, result: JobResult, now: Instant);
    /// An `Open` finished. Only sessions that ask for opens get this.
    fn on_opened(&mut self, result: std::io::Result<File>, now: Instant) {
        let _ = (result, now);
        unreachable!("on_opened without an Open transmit");
    }
    /// A `Write` finished: `Ok` when every byte is written, or the error that stopped it; `data`
    /// is the buffer, back for reuse. Only sessions that ask for writes get this.
    fn on_written(&mut self, result: std::io::Result<()>, data: Vec<u8>, now: Instant) {
        let _ = (result, data, now);
        unreachable!("on_written without a Write transmit");
    }
    /// When the session next needs [`Session::on_deadline`] (timeouts).
    fn deadline(&self) -> Option<Instant>;
    fn on_deadline(&mut self, now: Instant);
    /// The session has given up on the connection (a send timeout, a failed send). The engine
    /// then closes it even while a transmit waits for a socket the peer stopped draining, where
    /// it would otherwise not ask [`Session::poll_transmit`] again until the socket had room.
    fn wants_close(&self) -> bool {
        false
    }
    /// Graceful shutdown began: finish what is in flight, take no new requests.
    fn on_shutdown(&mut self, now: Instant);
    /// Whether the engine should keep reading input now.
    fn wants_input(&self) -> bool;
    fn phase(&self) -> Phase {
        Phase::Command
    }
    /// The connection is gone (after the last operation completed).
    fn on_close(&mut self, now: Instant);
}

/// A protocol: makes sessions for new connections on the listen addresses that name it.
pub trait Service: Send + Sync + 'static {
    fn open(&self, info: ConnInfo, now: Instant) -> Box<dyn Session>;
    /// The bytes to write to a connection refused before it got a session (connection limit,
    /// critical event), e.g. an HTTP 503. Written best-effort, then the socket is closed.
    fn refusal(&self) -> &[u8];
}
