//! The contract between the engine and a protocol: a sans-IO [`Session`] per connection.
//!
//! A protocol (HTTP in `oasis-net`, the log server later) never touches a socket, a ring or the
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
pub type JobResult = Box<dyn Any + Send>;

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
    /// A `Job` finished.
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
