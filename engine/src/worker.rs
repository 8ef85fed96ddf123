//! A worker: one pinned thread, one io_uring, the connections it currently drives.
//!
//! The loop: drain the mailbox (new connections, adopted sessions, file-read requests and replies,
//! job results), fire due timers, submit and wait once (one `io_uring_enter` per iteration), then
//! handle every completion. Each completion is routed by its `user_data` (operation kind, slab
//! key, generation) to a connection, whose session is then *driven*: asked what to transmit, with
//! at most one send/read in flight per connection, so bytes leave in order.
//!
//! Buffer ownership: a connection's input `Vec` and its outgoing `Vec` or pool [`Chunk`] stay in
//! the connection (or the remote-read slab) from submission until the completion arrives; a
//! connection is freed only when its in-flight count is zero. Nothing here blocks except the one
//! wait in `io_uring_enter`.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{cqueue, opcode, squeue, types, IoUring};
use slab::Slab;
use socket2::SockRef;

use crate::bufring::RecvBuffers;
use crate::config::{SendPath, SPLICE_MIN_BYTES};
use crate::direct::{self, DirectRead};
use crate::layout::Roles;
use crate::pool::Chunk;
use crate::residency::{resident, Verified};
use crate::resource::{Reservation, Resource};
use crate::session::{ConnInfo, Phase, Session, Transmit};
use crate::shared::{JobMsg, JobRejected, Msg, Shared};
use crate::timer::Wheel;

const OP_WAKE: u64 = 1;
const OP_POLL: u64 = 2;
const OP_RECV: u64 = 3;
const OP_SEND: u64 = 4;
const OP_READ: u64 = 5;
const OP_REMOTE_READ: u64 = 6;
const OP_CANCEL: u64 = 7;
const OP_SPLICE_IN: u64 = 8;
const OP_POLL_OUT: u64 = 10;
const OP_RECV_MULTI: u64 = 11;
const OP_OPEN: u64 = 12;
const OP_WRITABLE: u64 = 13;
const OP_FETCH: u64 = 14;

const GEN_MASK: u32 = (1 << 24) - 1;
/// Pipes one worker keeps for splicing at most (two descriptors each).
const PIPES_PER_WORKER_MAX: usize = 4096;
/// What one pipe is reserved as: its kernel bookkeeping. The bytes in a pipe are page-cache pages
/// it references, not copies.
const PIPE_MEMORY_BYTES: u64 = 4096;
/// Longest lingering close (see `Conn::lingering`).
const LINGER: Duration = Duration::from_secs(2);

fn user_data(op: u64, key: usize, gen: u32) -> u64 {
    debug_assert!(key <= u32::MAX as usize);
    (op << 56) | (((gen & GEN_MASK) as u64) << 32) | key as u64
}

fn split_user_data(ud: u64) -> (u64, usize, u32) {
    (
        ud >> 56,
        (ud & 0xffff_ffff) as usize,
        ((ud >> 32) as u32) & GEN_MASK,
    )
}

fn token(key: usize, gen: u32) -> u64 {
    ((gen as u64) << 32) | key as u64
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum RecvState {
    None,
    /// Waiting for readability before giving the connection a buffer (no provided buffers).
    Polling,
    /// A single receive into the spare capacity of `Conn::input`.
    Receiving,
    /// A multishot receive into the worker's provided buffers; `input` is free to touch.
    Multishot,
}

enum Out {
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
    Job,
    /// An OPENAT is in flight; the path it reads is held here until it completes.
    Opening(std::ffi::CString),
    /// A hot file transmit to issue again as it is: it waits in the ready queue for the next
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
    /// A cold stretch's 2 MiB block is being read into the page cache (`Worker::start_fetch`);
    /// the stretch then leaves by `sendfile` like a hot one.
    Fetching {
        file: Arc<File>,
        offset: u64,
        len: u64,
        /// The mapping the MADVISE populates; unmapped when the fetch is over.
        _mapping: Mapping,
    },
    /// A cold stretch waiting, in one of two lists, with no ring operation held for it: joined
    /// to the fetch of its block by another connection of this worker (`Worker::fetch_waits`),
    /// after which it goes out like a fetched stretch; or queued for one of the worker's
    /// `cold_fetches_max` fetch slots (`Worker::fetch_queue`), and fetched then. A connection
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

/// A read-only shared mapping of part of an object file, unmapped on drop.
pub(crate) struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is owned by one connection and never dereferenced by this process (only
// the kernel touches it, through MADVISE); moving its owner to another thread is harmless.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` at `offset` (page-aligned) and asks for huge-page readahead.
    fn new(file: &File, offset: u64, len: usize) -> Option<Mapping> {
        // SAFETY: a new read-only mapping chosen by the kernel; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if addr == libc::MAP_FAILED {
            return None;
        }
        // Without it (THP off, an old kernel) the block is read in 4 KiB pages: still correct.
        // SAFETY: advice on the mapping just made; no memory is accessed.
        unsafe { libc::madvise(addr, len, libc::MADV_HUGEPAGE) };
        Some(Mapping { addr, len })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `Mapping::new` and is unmapped once, here.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// A file transmit that sent nothing and waits for the socket (`Out::Blocked`).
struct Pending {
    file: Arc<File>,
    offset: u64,
    len: u64,
    /// See `Out::Deferred::fetched`.
    fetched: bool,
}

/// A pipe for splicing, sized to one pool chunk, reserved with the Resource Manager, reused.
pub(crate) struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    _memory: Reservation,
}

/// One connection. Moves between workers whole (`Msg::Adopt`) when nothing is in flight.
pub(crate) struct Conn {
    fd: OwnedFd,
    gen: u32,
    session: Box<dyn Session>,
    input: Vec<u8>,
    input_reservation: Option<Reservation>,
    recv: RecvState,
    /// A cancel of the multishot receive is on its way (input backpressure).
    recv_cancelling: bool,
    /// The provided buffers ran out under this connection: receive once into `input` instead.
    no_bufs: bool,
    out: Out,
    /// Ring operations, remote reads and jobs in flight.
    ops: u32,
    closing: bool,
    peer_closed: bool,
    timer: Option<(u32, Instant)>,
    wait_until: Option<Instant>,
    shutdown_told: bool,
    /// Lingering close until this instant: our side is shut for writing and input is read and
    /// discarded, so unread pipelined requests do not turn the close into a reset that destroys
    /// responses the client has not read yet (what nginx calls lingering_close).
    lingering: Option<Instant>,
    /// TCP_CORK is set (`tcp_nopush`): from a large body's head or first `sendfile` until the
    /// connection has no transmit left (the response is done, or a paced stream waits), so the
    /// body leaves in whole segments. Without it, a client's ACK processed between two of
    /// `sendfile`'s 64 KiB pieces sent the piece's short tail as a segment of its own (TCP_NODELAY):
    /// at 1000 connections 0.7 client ACKs per data segment against nginx's 0.4, and about 0.8x
    /// its throughput where the server's core was the limit.
    corked: bool,
    /// The generation this connection had when it was last put on [`Worker::deferred`], while
    /// that entry waits there. A connection that gets a new generation (adopted from another
    /// worker, or put back after a failed hand-off) no longer matches it, so its stale entry is
    /// skipped and a new one can be queued.
    deferred_gen: Option<u32>,
    _connection: Reservation,
}

pub(crate) struct Worker {
    index: usize,
    roles: Roles,
    ring: IoUring,
    shared: Arc<Shared>,
    conns: Slab<Conn>,
    next_gen: u32,
    wheel: Wheel,
    chunk_waiters: VecDeque<(usize, u32)>,
    remote_reads: Slab<(Arc<File>, Chunk, u32, u64)>,
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// The mailbox eventfd is registered file 0 of the ring (read at every wake-up).
    wake_fixed: bool,
    fixed_buffers: bool,
    /// Provided receive buffers; present when this worker keeps its connections (it has both
    /// the command and data roles, so they never migrate) and the kernel has buffer rings.
    recv_bufs: Option<RecvBuffers>,
    _recv_reservation: Option<Reservation>,
    next_file_worker: usize,
    /// Empty pipes ready for reuse, and how many this worker may hold in all.
    pipes: Vec<Pipe>,
    pipes_out: usize,
    pipes_max: usize,
    due: Vec<u32>,
    shutdown_seen: bool,
    /// Bytes this loop iteration may still send synchronously from files (`sendfile` of hot
    /// stretches; refilled each iteration), so a few fast readers of hot objects cannot keep
    /// the worker from its other connections.
    sync_send_budget: u64,
    /// The allowance (refilled each iteration) for transmits that fit in one chunk once
    /// `sync_send_budget` is spent; together the two bound an iteration's synchronous sends.
    small_send_budget: u64,
    /// File ranges recently found resident, so hot objects are not asked about every time.
    verified: Verified,
    /// Cold stretches being fetched into the page cache (`Out::Fetching`), at most
    /// `EngineConfig::cold_fetches_max`.
    fetches: usize,
    /// The fetches in flight (at most `cold_fetches_max`) and the connections joined to each.
    fetch_waits: Vec<FetchWait>,
    /// Connections whose cold stretch waits for a fetch slot (`Out::Waiting`), oldest first;
    /// an entry whose generation changed has gone.
    fetch_queue: VecDeque<(usize, u32)>,
    /// The Resource Manager's event epoch this worker last reacted to.
    seen_epoch: u64,
    /// A failed pipe resize was reported (once per worker).
    pipe_size_warned: bool,
    /// Connections to drive again at the next iteration, in the order they yielded: a send
    /// that failed, a split layout's stream waiting to move to a data worker.
    ready: VecDeque<(usize, u32)>,
    /// Hot transmits (`Out::Deferred`) that found an iteration's send budget spent, oldest
    /// first. Each iteration drives them from the front until its budget is spent; the rest
    /// are not touched. (Re-driving all of them every iteration, as the ready queue does, kept
    /// 10.7% of the worker's core in user space at 1000 connections against 2.8% with this
    /// queue: a thousand cache-cold sessions looked at per iteration for the four that could
    /// send.) One entry per connection generation at
    /// most ([`Conn::deferred_gen`]); entries of gone generations are skipped.
    deferred: VecDeque<(usize, u32)>,
}

/// How [`Worker::send_hot`] and [`Worker::start_splice`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SendStart {
    /// The bytes are out (or failed) and were reported to the session.
    Done,
    /// A ring operation carries on (a splice into a pipe, or a POLLOUT wait); its completion
    /// continues the transmit, or (after a partial `sendfile`) lets the session ask for the rest.
    InFlight,
    /// No pipe is free: use the read-send path.
    NoPipe,
    /// This iteration's synchronous budget is spent: try again next iteration (nothing was
    /// started).
    Later,
    /// Not every page is in the page cache (or the piece is larger than a whole budget): the
    /// file half goes to the ring.
    Cold,
    /// The send failed and the session was told; it is asked again next iteration, not now (a
    /// session that kept asking for the same bytes would hold the worker otherwise).
    Failed,
}

/// The block a cold fetch brings into the page cache (`Worker::start_fetch`): one huge page,
/// so readahead fills it with a single folio; fetches are aligned to it in the file.
const FETCH_BYTES: u64 = 2 << 20;

/// Whether the connection of a fetch list entry (key, generation) still waits (`Out::Waiting`).
fn waiting(conns: &Slab<Conn>, (key, gen): (usize, u32)) -> bool {
    conns
        .get(key)
        .is_some_and(|c| c.gen == gen && matches!(c.out, Out::Waiting { .. }))
}

/// Puts a cold stretch's connection in `Out::Waiting` and returns its list entry.
fn park(
    conns: &mut Slab<Conn>,
    key: usize,
    file: &Arc<File>,
    offset: u64,
    len: u64,
) -> (usize, u32) {
    let c = &mut conns[key];
    c.out = Out::Waiting {
        file: Arc::clone(file),
        offset,
        len,
    };
    (key, c.gen)
}

/// A fetch in flight and the connections waiting for it (`Out::Waiting`).
struct FetchWait {
    /// The object file, by the address of its shared handle (`Arc::as_ptr`): the fetching
    /// connection holds the `Arc` until the fetch completes, so the address names one file for
    /// as long as this entry lives.
    file: usize,
    /// The block's offset in the file (a multiple of `FETCH_BYTES`).
    start: u64,
    /// Joined connections (key, generation); a key whose generation changed has gone.
    waiters: Vec<(usize, u32)>,
}
/// Per-iteration allowance of synchronous sending from files (see `Worker::sync_send_budget`).
const SYNC_SEND_BUDGET_BYTES: u64 = 8 << 20;
/// Per-iteration allowance for one-chunk transmits beyond the budget (see
/// `Worker::small_send_budget`): 64 hot 64 KiB objects.
const SMALL_SEND_BUDGET_BYTES: u64 = 4 << 20;

impl Worker {
    pub(crate) fn new(index: usize, shared: Arc<Shared>) -> io::Result<Worker> {
        let roles = shared.workers[index].roles;
        let ring = crate::probe::build_ring(shared.config.ring_entries, &shared.features)?;
        let mut fixed_buffers = false;
        if roles.contains(Roles::FILE) && shared.features.read_fixed && shared.config.fixed_buffers
        {
            let iovecs = shared.pool.iovecs();
            // SAFETY: the iovecs point into the leaked, process-lifetime pool; they stay valid for
            // as long as the ring exists.
            match unsafe { ring.submitter().register_buffers(&iovecs) } {
                Ok(()) => fixed_buffers = true,
                Err(e) if e.raw_os_error() == Some(libc::ENOMEM) => {
                    return Err(io::Error::new(
                        io::ErrorKind::OutOfMemory,
                        format!(
                            "io_uring could not register the {} MiB buffer pool: RLIMIT_MEMLOCK is {} KiB; raise it (`ulimit -l unlimited`, LimitMEMLOCK=infinity) or lower [engine] buffer_pool_bytes",
                            (shared.pool.count() * shared.pool.chunk_bytes()) >> 20,
                            crate::probe::memlock_kib()
                        ),
                    ))
                }
                Err(e) => tracing::warn!("worker {index}: fixed buffers unavailable ({e}); using plain reads"),
            }
        }
        // Splices run in io_uring's worker threads; bound the ones that wait on sockets.
        let mut iowq_max = [0u32, 64u32];
        if let Err(e) = ring.submitter().register_iowq_max_workers(&mut iowq_max) {
            tracing::debug!("worker {index}: cannot bound io-wq workers: {e}");
        }
        let (recv_bufs, recv_reservation) = Self::recv_buffers(index, roles, &ring, &shared);
        let wake_fixed = ring
            .submitter()
            .register_files(&[shared.workers[index].mailbox.eventfd()])
            .is_ok();
        Ok(Worker {
            index,
            roles,
            ring,
            recv_bufs,
            _recv_reservation: recv_reservation,
            conns: Slab::new(),
            next_gen: 1,
            wheel: Wheel::new(Instant::now()),
            chunk_waiters: VecDeque::new(),
            remote_reads: Slab::new(),
            wake_buf: Box::new(0),
            wake_armed: false,
            wake_fixed,
            fixed_buffers,
            next_file_worker: index,
            pipes: Vec::new(),
            pipes_out: 0,
            pipes_max: PIPES_PER_WORKER_MAX.min(shared.config.connections_per_worker_max),
            due: Vec::new(),
            shutdown_seen: false,
            sync_send_budget: SYNC_SEND_BUDGET_BYTES,
            small_send_budget: SMALL_SEND_BUDGET_BYTES,
            verified: Verified::new(),
            fetches: 0,
            fetch_waits: Vec::new(),
            fetch_queue: VecDeque::new(),
            seen_epoch: 0,
            pipe_size_warned: false,
            ready: VecDeque::new(),
            deferred: VecDeque::new(),
            shared,
        })
    }

    /// Sets up provided receive buffers when this worker can use multishot receives; on any
    /// failure (no memory budget, old kernel) it says why once and connections poll instead.
    fn recv_buffers(
        index: usize,
        roles: Roles,
        ring: &IoUring,
        shared: &Shared,
    ) -> (Option<RecvBuffers>, Option<Reservation>) {
        let cfg = &shared.config;
        if cfg.recv_buffers == 0 || !(roles.contains(Roles::COMMAND) && roles.contains(Roles::DATA))
        {
            return (None, None);
        }
        let bytes = (cfg.recv_buffers * cfg.recv_buffer_bytes) as u64;
        let reservation = match shared.rm.reserve(Resource::MemoryBytes, bytes) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(
                    "worker {index}: no memory for receive buffers ({e}); polling instead"
                );
                return (None, None);
            }
        };
        match RecvBuffers::register(ring, cfg.recv_buffers, cfg.recv_buffer_bytes) {
            Ok(b) => (Some(b), Some(reservation)),
            Err(e) => {
                tracing::warn!(
                    "worker {index}: provided receive buffers unavailable ({e}); polling instead"
                );
                (None, None)
            }
        }
    }

    fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: each entry's buffers and fds are owned by a connection, the remote-read slab or
        // the worker and stay alive until its completion is handled; every caller says which in its
        // own SAFETY comment. Here we only move the entry into the queue.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            if let Err(e) = self.ring.submit() {
                tracing::error!("worker {}: submit failed: {e}", self.index);
            }
        }
    }

    fn arm_waker(&mut self) {
        if self.wake_armed {
            return;
        }
        let fd = self.shared.workers[self.index].mailbox.eventfd();
        let buf = (&mut *self.wake_buf as *mut u64).cast();
        let e = if self.wake_fixed {
            opcode::Read::new(types::Fixed(0), buf, 8).build()
        } else {
            opcode::Read::new(types::Fd(fd), buf, 8).build()
        }
        .user_data(user_data(OP_WAKE, 0, 0));
        // SAFETY: `wake_buf` is a Box owned by the worker, which outlives the ring's operations.
        self.push(e);
        self.wake_armed = true;
    }

    pub(crate) fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let me = &shared.workers[self.index];
        let started = Instant::now();
        let mut loops: u64 = 0;
        let mut woke = started;
        loop {
            loops += 1;
            self.sync_send_budget = SYNC_SEND_BUDGET_BYTES;
            self.small_send_budget = SMALL_SEND_BUDGET_BYTES;
            self.arm_waker();
            self.check_events();
            let now = Instant::now();
            // Whatever a full budget allows: with chunks above the budget (`chunk_bytes` up
            // to 16 MiB) the first transmit of an iteration still goes (by the ring path).
            let hot_piece = (self.shared.pool.chunk_bytes() as u64).min(SYNC_SEND_BUDGET_BYTES);
            while self.sync_send_budget >= hot_piece {
                let Some((key, gen)) = self.deferred.pop_front() else {
                    break;
                };
                let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
                    continue;
                };
                c.deferred_gen = None;
                if matches!(c.out, Out::Deferred { .. }) {
                    self.drive(key, now);
                }
            }
            for _ in 0..self.ready.len() {
                let Some((key, gen)) = self.ready.pop_front() else {
                    break;
                };
                if self.conns.get(key).is_some_and(|c| c.gen == gen) {
                    self.drive(key, now);
                }
            }
            while let Some(msg) = self.shared.workers[self.index].mailbox.try_recv() {
                self.handle_msg(msg, now);
            }
            self.check_shutdown(now);
            self.wheel.expire(now, &mut self.due);
            let mut due = std::mem::take(&mut self.due);
            for key in due.drain(..) {
                self.on_timer(key as usize, now);
            }
            self.due = due;
            if !self.chunk_waiters.is_empty() && self.shared.pool.available() > 0 {
                self.retry_chunk_waiters(now);
            }
            if self.should_exit() {
                break;
            }

            let mut timeout = self.wheel.timeout(now).unwrap_or(Duration::from_secs(1));
            if !self.chunk_waiters.is_empty() {
                timeout = timeout.min(crate::timer::TICK);
            }
            if self.shared.is_shutting_down() {
                timeout = timeout.min(Duration::from_millis(50));
            }
            let mailbox = &self.shared.workers[self.index].mailbox;
            let sleep = mailbox.prepare_sleep();
            if !sleep || !self.ready.is_empty() || !self.deferred.is_empty() {
                timeout = Duration::ZERO;
            }
            let ts = types::Timespec::new()
                .sec(timeout.as_secs())
                .nsec(timeout.subsec_nanos());
            let args = types::SubmitArgs::new().timespec(&ts);
            me.busy.record(woke.elapsed().as_micros() as u64);
            match self.ring.submitter().submit_with_args(1, &args) {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                    ) => {}
                Err(e) => tracing::error!("worker {}: io_uring_enter failed: {e}", self.index),
            }
            mailbox.woke();
            woke = Instant::now();
            self.drain_completions();
        }
        me.conns.store(0, Ordering::Relaxed);
        if let Some(bufs) = self.recv_bufs.take() {
            bufs.teardown(&self.ring);
        }
        tracing::debug!(
            "worker {} exits after {loops} loops, {:?}",
            self.index,
            started.elapsed()
        );
    }

    fn drain_completions(&mut self) {
        loop {
            let batch: Vec<(u64, i32, u32)> = self
                .ring
                .completion()
                .map(|c| (c.user_data(), c.result(), c.flags()))
                .take(256)
                .collect();
            if batch.is_empty() {
                return;
            }
            let now = Instant::now();
            for (ud, res, flags) in batch {
                self.on_completion(ud, res, flags, now);
            }
        }
    }

    fn should_exit(&self) -> bool {
        if !self.shared.is_shutting_down()
            || !self.conns.is_empty()
            || !self.remote_reads.is_empty()
        {
            return false;
        }
        // A pure file worker serves other workers' reads until they are all gone.
        if !self.roles.contains(Roles::COMMAND) && !self.roles.contains(Roles::DATA) {
            return self.shared.net_workers_alive.load(Ordering::Acquire) == 0;
        }
        true
    }

    /// Reacts to a change of resource level: under a critical event the worker lets go of what
    /// it only keeps for speed (idle pipes and the memory reserved for them). Admission of new
    /// streams is refused by the services, which see the same level.
    fn check_events(&mut self) {
        let epoch = self.shared.rm.epoch();
        if epoch == self.seen_epoch {
            return;
        }
        self.seen_epoch = epoch;
        if self.shared.rm.is_critical() && !self.pipes.is_empty() {
            tracing::info!(
                "worker {}: critical resource event: closing {} idle pipes",
                self.index,
                self.pipes.len()
            );
            self.pipes.clear();
        }
    }

    fn check_shutdown(&mut self, now: Instant) {
        if !self.shared.is_shutting_down() {
            return;
        }
        if !self.shutdown_seen {
            self.shutdown_seen = true;
            tracing::debug!(
                "worker {}: draining {} connections",
                self.index,
                self.conns.len()
            );
        }
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| !c.shutdown_told)
            .map(|(k, _)| k)
            .collect();
        for key in keys {
            let c = &mut self.conns[key];
            c.shutdown_told = true;
            c.session.on_shutdown(now);
            self.drive(key, now);
        }
        if self.shared.drain_deadline_passed(now) {
            let keys: Vec<usize> = self
                .conns
                .iter()
                .filter(|(_, c)| !c.closing)
                .map(|(k, _)| k)
                .collect();
            for key in keys {
                self.begin_close(key, now);
            }
        }
    }

    // ----- mailbox -----

    fn handle_msg(&mut self, msg: Msg, now: Instant) {
        match msg {
            Msg::NewConn {
                fd,
                listener,
                reservation,
            } => self.open_conn(fd, listener, reservation, now),
            Msg::Adopt(conn) => {
                let mut conn = *conn;
                conn.gen = self.take_gen();
                conn.timer = None;
                let key = self.conns.insert(conn);
                self.drive(key, now);
            }
            Msg::Read {
                file,
                offset,
                len,
                chunk,
                at,
                reply_to,
                token,
            } => {
                // SAFETY: `at + len <= chunk_bytes` (checked by the sender), inside the chunk.
                let ptr = unsafe { self.shared.pool.ptr(&chunk).add(at as usize) };
                let fd = file.as_raw_fd();
                let idx = chunk.index();
                let key = self.remote_reads.insert((file, chunk, reply_to, token));
                let e = self
                    .read_entry(fd, ptr, len, offset, idx)
                    .user_data(user_data(OP_REMOTE_READ, key, 0));
                // SAFETY: the chunk and the file stay in `remote_reads[key]` until the completion.
                self.push(e);
            }
            Msg::ReadDone {
                token,
                chunk,
                result,
            } => {
                let key = (token & 0xffff_ffff) as usize;
                let gen = (token >> 32) as u32;
                match self.conns.get_mut(key) {
                    Some(c) if c.gen == gen => {
                        c.ops -= 1;
                        let (head, direct) = match std::mem::replace(&mut c.out, Out::Idle) {
                            Out::Reading {
                                local: None,
                                head,
                                direct,
                            } => (head, direct),
                            _ => unreachable!("a read reply without a remote read"),
                        };
                        self.after_read(key, chunk, head, direct, result, now);
                    }
                    _ => {
                        // A connection with a read in flight is never freed; this is a bug.
                        debug_assert!(false, "read reply for a missing connection");
                        self.release_chunk(chunk);
                    }
                }
            }
            Msg::JobDone { token, result } => {
                let key = (token & 0xffff_ffff) as usize;
                let gen = (token >> 32) as u32;
                if let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == gen) {
                    c.ops -= 1;
                    c.out = Out::Idle;
                    c.session.on_job_done(result, now);
                    self.drive(key, now);
                }
            }
        }
    }

    fn take_gen(&mut self) -> u32 {
        let g = self.next_gen;
        self.next_gen = (self.next_gen + 1) & GEN_MASK;
        if self.next_gen == 0 {
            self.next_gen = 1;
        }
        g
    }

    fn open_conn(&mut self, fd: OwnedFd, listener: u16, reservation: Reservation, now: Instant) {
        // A failed TCP option changes only how bytes are packed into segments, never which
        // bytes leave, so it is not reported (here and for TCP_CORK).
        let _ = SockRef::from(&fd).set_tcp_nodelay(true);
        let info = ConnInfo {
            peer: peer_addr(&fd),
            listener,
        };
        let session = self.shared.services[listener as usize].open(info, now);
        let gen = self.take_gen();
        let key = self.conns.insert(Conn {
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
        });
        if self.shared.is_shutting_down() {
            let c = &mut self.conns[key];
            c.shutdown_told = true;
            c.session.on_shutdown(now);
        }
        self.drive(key, now);
    }

    // ----- driving a session -----

    fn drive(&mut self, key: usize, now: Instant) {
        // Each extra round consumed buffered input, so this ends.
        while self.drive_step(key, now) {}
    }

    /// One round of driving; true when buffered input was consumed and another round is due.
    fn drive_step(&mut self, key: usize, now: Instant) -> bool {
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        if c.closing {
            if c.ops == 0 {
                self.finish_close(key, now);
            }
            return false;
        }
        if c.lingering.is_some() {
            if c.peer_closed {
                self.begin_close(key, now);
                return false;
            }
            if c.recv == RecvState::None {
                self.arm_input(key);
            }
            self.update_timer(key);
            return false;
        }
        if c.ops == 0 && matches!(c.out, Out::Idle) && self.try_migrate(key) {
            return false;
        }
        // Output: one transmit in flight at a time.
        loop {
            let c = &mut self.conns[key];
            let deferred = matches!(c.out, Out::Deferred { .. });
            let mut fetched = false;
            if !matches!(c.out, Out::Idle) && !deferred {
                break;
            }
            let t = if deferred {
                let Out::Deferred {
                    file,
                    offset,
                    len,
                    fetched: was_fetched,
                } = std::mem::replace(&mut c.out, Out::Idle)
                else {
                    unreachable!()
                };
                fetched = was_fetched;
                Transmit::File { file, offset, len }
            } else {
                c.session.poll_transmit(now)
            };
            tracing::trace!(
                worker = self.index,
                key,
                transmit = transmit_name(&t),
                "poll_transmit"
            );
            match t {
                Transmit::Bytes(buf) => {
                    if buf.is_empty() {
                        c.session.on_sent(Ok(0), Some(buf), now);
                        continue;
                    }
                    c.wait_until = None;
                    c.out = Out::Bytes { buf, sent: 0 };
                    self.submit_send(key);
                    break;
                }
                Transmit::File { file, offset, len } => {
                    if len == 0 {
                        c.session.on_sent(Ok(0), None, now);
                        continue;
                    }
                    c.wait_until = None;
                    if splices(&self.shared, len) {
                        let mut started = self.send_hot(key, &file, offset, len, fetched, now);
                        if started == SendStart::Cold {
                            started = if fetched {
                                self.start_splice(key, &file, offset, len)
                            } else {
                                self.start_fetch(key, &file, offset, len)
                            };
                        }
                        match started {
                            // The socket took all it was given: keep feeding it (bounded by the
                            // iteration's budget), as a sendfile server does until EAGAIN.
                            // Yielding after every piece measured 0.86x the throughput at 100
                            // connections on 2 MiB objects: the client then gets 256 KiB at a
                            // time on every connection instead of whole responses on a few.
                            SendStart::Done => {
                                if self.missing_role(key).is_some() {
                                    // A split layout's command worker sent the first bytes:
                                    // the next turn hands the stream to a data worker.
                                    let c = &self.conns[key];
                                    self.ready.push_back((key, c.gen));
                                    break;
                                }
                                continue;
                            }
                            SendStart::Failed => {
                                let c = &self.conns[key];
                                self.ready.push_back((key, c.gen));
                                break;
                            }
                            SendStart::InFlight => break,
                            SendStart::Later => {
                                let c = &mut self.conns[key];
                                c.out = Out::Deferred {
                                    file,
                                    offset,
                                    len,
                                    fetched,
                                };
                                let gen = c.gen;
                                self.defer(key, gen);
                                break;
                            }
                            SendStart::NoPipe | SendStart::Cold => {}
                        }
                    }
                    self.start_file(key, None, file, offset, len, now);
                    break;
                }
                Transmit::FileWithHead {
                    head,
                    file,
                    offset,
                    len,
                } => {
                    assert!(
                        head.len() < self.shared.pool.chunk_bytes() / 2,
                        "head too long to share a chunk"
                    );
                    c.wait_until = None;
                    if len > 0 && splices(&self.shared, len) {
                        // A body sent from the page cache does not share a buffer with its
                        // head: the head leaves alone and the session then asks for the body as
                        // a plain file transmit. The body usually leaves right after (a hot
                        // stretch by sendfile), so the head is sent here too, corked (MSG_MORE)
                        // to share its segment.
                        if self.shared.config.tcp_nopush && len > PIPE_ROUND_BYTES {
                            cork(c);
                        }
                        let sent = send_now(&c.fd, &head, libc::MSG_MORE);
                        match sent {
                            Ok(n) if n == head.len() => {
                                c.session.on_sent(Ok(n as u64), Some(head), now);
                                continue;
                            }
                            Ok(n) => {
                                c.out = Out::Bytes { buf: head, sent: n };
                                self.submit_send(key);
                            }
                            Err(e) => {
                                c.session.on_sent(Err(e), Some(head), now);
                                // The session now wants to close: drive it again, as after a
                                // failed sendfile (nothing else would: no transmit or receive
                                // is in flight).
                                let gen = c.gen;
                                self.ready.push_back((key, gen));
                            }
                        }
                        break;
                    }
                    if len == 0 {
                        c.out = Out::Bytes { buf: head, sent: 0 };
                        self.submit_send(key);
                        break;
                    }
                    self.start_file(key, Some(head), file, offset, len, now);
                    break;
                }
                Transmit::WaitUntil(t) => {
                    c.wait_until = Some(t.max(now + Duration::from_micros(1)));
                    break;
                }
                Transmit::Idle => {
                    c.wait_until = None;
                    break;
                }
                Transmit::Open(path) => {
                    let e = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
                        .flags(libc::O_RDONLY | libc::O_CLOEXEC)
                        .build()
                        .user_data(user_data(OP_OPEN, key, c.gen));
                    c.ops += 1;
                    c.out = Out::Opening(path);
                    // SAFETY: the path's bytes live in `c.out` (a CString's heap buffer does not
                    // move with it) until the completion takes them.
                    self.push(e);
                    break;
                }
                Transmit::Job(job) => {
                    let msg = JobMsg {
                        job,
                        reply_to: self.index as u32,
                        token: token(key, c.gen),
                    };
                    match self.shared.jobs.try_send(msg) {
                        Ok(()) => {
                            c.ops += 1;
                            c.out = Out::Job;
                        }
                        Err(_) => c.session.on_job_done(Box::new(JobRejected), now),
                    }
                    break;
                }
                Transmit::Close => {
                    if c.peer_closed || c.ops > 0 || self.shared.is_shutting_down() {
                        self.begin_close(key, now);
                    } else {
                        // SAFETY: the fd is open (owned by the connection); shutdown has no memory effects.
                        unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_WR) };
                        c.lingering = Some(now + LINGER);
                        c.wait_until = None;
                        return true;
                    }
                    return false;
                }
            }
        }
        // Input: first what is already buffered (pipelined requests), then the socket.
        let c = &mut self.conns[key];
        if matches!(c.out, Out::Idle) {
            // The response is done, or waits (pacing): what the cork holds leaves now.
            uncork(c);
        }
        if c.recv != RecvState::Receiving
            && !c.closing
            && !c.input.is_empty()
            && c.session.wants_input()
        {
            let used = c.session.on_input(&c.input, now).min(c.input.len());
            c.input.drain(..used);
            if c.input.is_empty() && c.recv == RecvState::Multishot {
                // Between requests a connection with provided buffers holds no input memory.
                c.input = Vec::new();
                c.input_reservation = None;
            }
            if used > 0 {
                return true;
            }
        }
        if c.recv == RecvState::None && !c.peer_closed && !c.closing && c.session.wants_input() {
            self.arm_input(key);
        }
        self.update_timer(key);
        false
    }

    /// The role the session's phase wants, when this worker does not have it.
    fn missing_role(&self, key: usize) -> Option<Roles> {
        let need = match self.conns[key].session.phase() {
            Phase::Command => Roles::COMMAND,
            Phase::Data => Roles::DATA,
        };
        (!self.roles.contains(need)).then_some(need)
    }

    /// Moves the session to a worker whose roles match its phase, if this one's do not.
    fn try_migrate(&mut self, key: usize) -> bool {
        let Some(need) = self.missing_role(key) else {
            return false;
        };
        let c = &self.conns[key];
        if c.recv != RecvState::None {
            return false;
        }
        let Some(target) = self.shared.least_loaded(need) else {
            return false;
        };
        if let Some((slot, _)) = c.timer {
            self.wheel.remove(key as u32, slot);
        }
        let mut conn = self.conns.remove(key);
        conn.timer = None;
        self.shared.workers[self.index]
            .conns
            .fetch_sub(1, Ordering::Relaxed);
        self.shared.workers[target]
            .conns
            .fetch_add(1, Ordering::Relaxed);
        match self.shared.workers[target]
            .mailbox
            .send(Msg::Adopt(Box::new(conn)))
        {
            Ok(()) => true,
            Err(Msg::Adopt(conn)) => {
                // The target is saturated: keep serving here rather than wait.
                self.shared.workers[target]
                    .conns
                    .fetch_sub(1, Ordering::Relaxed);
                self.shared.workers[self.index]
                    .conns
                    .fetch_add(1, Ordering::Relaxed);
                let mut conn = *conn;
                conn.gen = self.take_gen();
                let new_key = self.conns.insert(conn);
                debug_assert_eq!(new_key, key);
                false
            }
            Err(_) => unreachable!("mailbox returns the message it was given"),
        }
    }

    fn arm_input(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let fd = c.fd.as_raw_fd();
        if self.recv_bufs.is_some() && !c.no_bufs {
            if c.input.len() >= self.shared.config.input_bytes_max {
                return; // Backpressure: the session must consume buffered input first.
            }
            c.recv = RecvState::Multishot;
            c.recv_cancelling = false;
            c.ops += 1;
            let e = opcode::RecvMulti::new(types::Fd(fd), crate::bufring::GROUP)
                .build()
                .user_data(user_data(OP_RECV_MULTI, key, c.gen));
            // SAFETY: the kernel picks buffers from the worker's registered ring, which outlives
            // every operation; the fd is owned by the connection, which outlives the receive.
            self.push(e);
            return;
        }
        if c.no_bufs && c.input.capacity() == 0 {
            // Bytes are waiting (the buffers ran out while they arrived): no poll first.
            if !self.give_input_buffer(key) {
                return;
            }
        }
        let c = &mut self.conns[key];
        if c.input.capacity() == 0 {
            // Idle connections hold no buffer: poll first, allocate when bytes arrive.
            c.recv = RecvState::Polling;
            c.ops += 1;
            let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                .build()
                .user_data(user_data(OP_POLL, key, c.gen));
            // SAFETY: no buffer; the fd is owned by the connection, which outlives the op.
            self.push(e);
            return;
        }
        let spare = c.input.capacity() - c.input.len();
        if spare == 0 {
            return; // Backpressure: the session must consume before we read more.
        }
        c.recv = RecvState::Receiving;
        c.ops += 1;
        // SAFETY: the spare capacity of `input` is valid for `spare` bytes; the Vec is not touched
        // (no push, no reallocation) while the receive is in flight (`recv == Receiving`).
        let ptr = unsafe { c.input.as_mut_ptr().add(c.input.len()) };
        let e = opcode::Recv::new(types::Fd(fd), ptr, spare as u32)
            .build()
            .user_data(user_data(OP_RECV, key, c.gen));
        // SAFETY: see above; the buffer is owned by the connection until the completion.
        self.push(e);
    }

    /// Gives the connection its own input buffer, reserved as memory; closes it when the
    /// reservation is refused (and returns false).
    fn give_input_buffer(&mut self, key: usize) -> bool {
        let bytes = self.shared.config.input_bytes_max;
        match self.shared.rm.reserve(Resource::MemoryBytes, bytes as u64) {
            Ok(r) => {
                let c = &mut self.conns[key];
                c.input.reserve_exact(bytes.saturating_sub(c.input.len()));
                c.input_reservation = Some(r);
                true
            }
            Err(e) => {
                tracing::warn!("connection input buffer refused: {e}");
                self.begin_close(key, Instant::now());
                false
            }
        }
    }

    /// A multishot receive completed: bytes in a provided buffer, or its end (`more` false).
    fn on_recv_multi(&mut self, key: usize, res: i32, flags: u32, now: Instant) {
        let bufs = self
            .recv_bufs
            .as_mut()
            .expect("multishot receives only with provided buffers");
        let c = &mut self.conns[key];
        if !cqueue::more(flags) {
            c.ops -= 1;
            c.recv = RecvState::None;
            c.recv_cancelling = false;
        }
        let mut stash_failed = false;
        if res > 0 {
            let bid = cqueue::buffer_select(flags).expect("received bytes name their buffer");
            let data = bufs.bytes(bid, res as usize);
            if c.lingering.is_some() || c.closing {
                // Discarded: the connection is closing.
            } else if c.input.is_empty() && c.session.wants_input() {
                let used = c.session.on_input(data, now).min(data.len());
                stash_failed = !stash(c, &self.shared, &data[used..]);
            } else {
                stash_failed = !stash(c, &self.shared, data);
            }
            bufs.give_back(bid);
        } else if res == -libc::ENOBUFS {
            c.no_bufs = true;
        } else if res == 0 || res != -libc::ECANCELED {
            c.peer_closed = true;
            if !c.closing {
                c.session.on_peer_closed(now);
            }
        }
        if stash_failed {
            self.begin_close(key, now);
            return;
        }
        let c = &mut self.conns[key];
        if c.recv == RecvState::Multishot
            && !c.recv_cancelling
            && c.input.len() >= self.shared.config.input_bytes_max
        {
            // Backpressure: stop receiving until the session consumes what it has.
            c.recv_cancelling = true;
            let e = opcode::AsyncCancel::new(user_data(OP_RECV_MULTI, key, c.gen))
                .build()
                .user_data(user_data(OP_CANCEL, key, c.gen));
            // SAFETY: no buffers or fds; the cancel names the receive by its user_data.
            self.push(e);
        }
        self.drive(key, now);
    }

    fn submit_send(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let fd = c.fd.as_raw_fd();
        let (ptr, len) = match &c.out {
            Out::Bytes { buf, sent } => (buf[*sent..].as_ptr(), buf.len() - sent),
            Out::Sending {
                chunk,
                start,
                len,
                sent,
                ..
            } => {
                // SAFETY: `sent < len` and `start + len <= chunk_bytes`: inside the chunk this
                // connection holds.
                (
                    unsafe { self.shared.pool.ptr(chunk).add(start + sent) } as *const u8,
                    len - sent,
                )
            }
            _ => unreachable!("submit_send without bytes to send"),
        };
        c.ops += 1;
        let e = opcode::Send::new(types::Fd(fd), ptr, len as u32)
            .flags(libc::MSG_NOSIGNAL)
            .build()
            .user_data(user_data(OP_SEND, key, c.gen));
        // SAFETY: the bytes live in `c.out` (a Vec or a leased chunk) until the completion.
        self.push(e);
    }

    fn read_entry(
        &self,
        fd: RawFd,
        ptr: *mut u8,
        len: u32,
        offset: u64,
        chunk_index: u32,
    ) -> squeue::Entry {
        if self.fixed_buffers {
            opcode::ReadFixed::new(types::Fd(fd), ptr, len, chunk_index as u16)
                .offset(offset)
                .build()
        } else {
            opcode::Read::new(types::Fd(fd), ptr, len)
                .offset(offset)
                .build()
        }
    }

    fn start_file(
        &mut self,
        key: usize,
        head: Option<Vec<u8>>,
        file: Arc<File>,
        offset: u64,
        len: u64,
        _now: Instant,
    ) {
        let Some(chunk) = self.shared.pool.lease() else {
            let c = &mut self.conns[key];
            c.out = Out::WaitChunk {
                head,
                file,
                offset,
                len,
            };
            self.chunk_waiters.push_back((key, c.gen));
            return;
        };
        let head_len = head.as_ref().map_or(0, |h| h.len());
        let chunk_bytes = self.shared.pool.chunk_bytes();
        // A file storage opened with O_DIRECT is read block-aligned; its head goes in afterwards.
        let direct = (self.shared.config.direct_reads && direct::is_direct(file.as_raw_fd()))
            .then(|| DirectRead::plan(offset, len, head_len, chunk_bytes));
        let (read_offset, want, at) = match &direct {
            Some(d) => (d.file_offset, d.read_len, d.at),
            None => {
                if let Some(h) = &head {
                    // SAFETY: the chunk is leased to this connection (no operation uses it) and
                    // `h.len() < chunk_bytes / 2` (asserted in `drive`): the copy stays inside it.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            h.as_ptr(),
                            self.shared.pool.ptr(&chunk),
                            h.len(),
                        )
                    };
                }
                let want = len.min((chunk_bytes - head_len) as u64) as u32;
                (offset, want, head_len)
            }
        };
        let gen = self.conns[key].gen;
        if self.roles.contains(Roles::FILE) {
            // SAFETY: `at + want <= chunk_bytes` (`DirectRead::plan` keeps aligned reads inside
            // too): the read lands inside the chunk.
            let ptr = unsafe { self.shared.pool.ptr(&chunk).add(at) };
            let e = self
                .read_entry(file.as_raw_fd(), ptr, want, read_offset, chunk.index())
                .user_data(user_data(OP_READ, key, gen));
            let c = &mut self.conns[key];
            c.ops += 1;
            c.out = Out::Reading {
                local: Some((chunk, file)),
                head,
                direct,
            };
            // SAFETY: the chunk and the file are held in `c.out` until the completion.
            self.push(e);
        } else {
            let tok = token(key, gen);
            let c = &mut self.conns[key];
            c.ops += 1;
            c.out = Out::Reading {
                local: None,
                head,
                direct,
            };
            let target = self.pick_file_worker();
            let msg = Msg::Read {
                file,
                offset: read_offset,
                len: want,
                chunk,
                at: at as u32,
                reply_to: self.index as u32,
                token: tok,
            };
            self.shared.send_must(target, msg);
        }
    }

    fn take_pipe(&mut self) -> Option<Pipe> {
        if let Some(p) = self.pipes.pop() {
            self.pipes_out += 1;
            return Some(p);
        }
        if self.pipes_out >= self.pipes_max {
            return None;
        }
        let bytes = self.shared.pool.chunk_bytes();
        let memory = self
            .shared
            .rm
            .reserve(Resource::MemoryBytes, PIPE_MEMORY_BYTES)
            .ok()?;
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            tracing::warn!(
                "worker {}: pipe2 failed: {}; reading instead of splicing",
                self.index,
                io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: pipe2 succeeded: both descriptors are new and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on our pipe; failure leaves the default size, which still works.
        let rc =
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int) };
        if rc < 0 && !self.pipe_size_warned {
            self.pipe_size_warned = true;
            tracing::warn!(
                "worker {}: cannot size a splice pipe to {bytes} bytes ({}); splices move less per call. For an unprivileged user raise fs.pipe-user-pages-soft (or fs.pipe-max-size)",
                self.index,
                io::Error::last_os_error()
            );
        }
        self.pipes_out += 1;
        Some(Pipe {
            read,
            write,
            _memory: memory,
        })
    }

    /// Returns a pipe; one that may still hold bytes (an error mid-splice) is closed instead.
    fn put_pipe(&mut self, pipe: Pipe, empty: bool) {
        self.pipes_out -= 1;
        if empty && !self.shared.rm.is_critical() {
            self.pipes.push(pipe);
        }
    }

    /// Sends a stretch of `file` whose pages are all in the page cache with one `sendfile`,
    /// right here: up to the rest of the transmit, bounded by this iteration's budget.
    ///
    /// The residency test (cachestat, then a one-byte `RWF_NOWAIT` read of the last page, see
    /// [`resident`]) covers the whole stretch, so nothing here can wait on the disk; a stretch
    /// that is not all resident is tried as one chunk, and a chunk that is not resident either
    /// is `Cold` (the ring path). A socket that takes less than offered arms a POLLOUT.
    /// Before this, hot pieces went file -> pipe -> socket one chunk at a time: 32 syscalls
    /// per 2 MiB response where nginx's `sendfile` needs about 5, and 1.3x its CPU per byte at
    /// 1000 connections.
    fn send_hot(
        &mut self,
        key: usize,
        file: &Arc<File>,
        offset: u64,
        len: u64,
        fetched: bool,
        now: Instant,
    ) -> SendStart {
        let piece = len.min(self.shared.pool.chunk_bytes() as u64);
        // A transmit that fits in one chunk (a small object, a stream's last piece) draws on
        // an allowance of its own once the budget is spent, so it does not wait a loop
        // iteration behind large streams: during a cold sweep 2-3% of hot 64 KiB requests
        // waited 10-90 ms that way inside the server (access-log request times).
        let small = self.sync_send_budget < piece && len <= piece && self.small_send_budget >= len;
        if self.sync_send_budget < piece && !small {
            if self.sync_send_budget < SYNC_SEND_BUDGET_BYTES {
                // Part of this iteration's budget is spent: the transmit waits for the next
                // iteration (and is looked at then) rather than taking the ring path, whose
                // file half runs in io_uring's threads (seen: at 1000 connections a third of
                // the hot pieces went there once the budget ran out, each a thread hand-off).
                return SendStart::Later;
            }
            // A piece larger than a whole budget (`chunk_bytes` above it) never waits.
            return SendStart::Cold;
        }
        let fd = file.as_raw_fd();
        let stretch = if small {
            len
        } else if fetched {
            // What was fetched (`start_fetch`: the 2 MiB block holding `offset`), not more: the
            // pages after it are likely cold.
            len.min(self.sync_send_budget)
                .min(FETCH_BYTES - offset % FETCH_BYTES)
        } else {
            len.min(self.sync_send_budget)
        };
        // Both fit in a u32: the budget is far below 4 GiB. One probe vouches for the whole
        // stretch (see `resident`); probing the end of every chunk too (8 one-byte reads per
        // 2 MiB response) cost 0.196-0.205 s of server CPU per GB at 1000 connections against
        // 0.170-0.184 with one (alternating 6 s runs).
        // Asking costs a cachestat walk of every page (5% of the server's CPU at 1000
        // connections on 2 MiB objects); a hot object is sent many times within `TRUST`. Only
        // an answer from the kernel is remembered, so a trusted range is asked about again
        // once `TRUST` has passed however often it is sent.
        // The fallback when the whole stretch is not resident: one chunk, within the 2 MiB block
        // holding `offset`, so that when it is cold too `start_fetch` fetches the block holding
        // the missing pages (a chunk crossing into a cold block fetched the resident one).
        let first = piece.min(FETCH_BYTES - offset % FETCH_BYTES);
        let stretch = if self.verified.trusted(file, offset, stretch, now) {
            stretch
        } else if resident(fd, offset, stretch as u32, stretch as u32) {
            self.verified.remember(file, offset, stretch, now);
            stretch
        } else if stretch > first && resident(fd, offset, first as u32, first as u32) {
            first
        } else {
            return SendStart::Cold;
        };
        if self.shared.config.tcp_nopush && stretch > PIPE_ROUND_BYTES {
            cork(&mut self.conns[key]);
        }
        loop {
            let c = &mut self.conns[key];
            let mut off = offset as libc::off_t;
            // SAFETY: both fds are open (the socket is owned by `c`, the file held by `file`);
            // `off` is a live off_t the kernel advances. The socket is nonblocking.
            let n = unsafe { libc::sendfile(c.fd.as_raw_fd(), fd, &mut off, stretch as usize) };
            if n > 0 {
                let n = n as u64;
                if small {
                    self.small_send_budget -= n;
                } else {
                    self.sync_send_budget -= n;
                }
                c.session.on_sent(Ok(n), None, now);
                if n < stretch {
                    // The socket is full: wait for room; the session asks for the rest.
                    self.wait_writable(key, None);
                    return SendStart::InFlight;
                }
                return SendStart::Done;
            }
            let err = if n == 0 {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "object file shorter than its catalog size",
                )
            } else {
                io::Error::last_os_error()
            };
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    let pending = Pending {
                        file: Arc::clone(file),
                        offset,
                        len,
                        fetched,
                    };
                    self.wait_writable(key, Some(pending));
                    return SendStart::InFlight;
                }
                _ => {
                    c.session.on_sent(Err(err), None, now);
                    return SendStart::Failed;
                }
            }
        }
    }

    /// Arms a POLLOUT for a socket a `sendfile` found full (see [`Out::Blocked`]).
    fn wait_writable(&mut self, key: usize, pending: Option<Pending>) {
        self.conns[key].out = Out::Blocked(pending);
        self.push_pollout(key, OP_WRITABLE);
    }

    /// Submits a POLLOUT on the connection's socket; its completion comes back as `op`.
    fn push_pollout(&mut self, key: usize, op: u64) {
        let c = &mut self.conns[key];
        let e = opcode::PollAdd::new(types::Fd(c.fd.as_raw_fd()), libc::POLLOUT as u32)
            .build()
            .user_data(user_data(op, key, c.gen));
        c.ops += 1;
        // SAFETY: no buffers; the socket is owned by the connection.
        self.push(e);
    }

    /// Brings a cold stretch into the page cache in 2 MiB folios, then sends it like a hot one
    /// (`Out::Fetching`, then `Deferred`). The 2 MiB-aligned block of the file holding `offset`
    /// is mapped read-only with MADV_HUGEPAGE, and a ring MADVISE(MADV_POPULATE_READ) faults it
    /// in from an io-wq thread: readahead for a huge-page mapping allocates one 2 MiB folio
    /// where a read, `sendfile` or WILLNEED fills 4 KiB pages, and `sendfile` from large folios
    /// costs less CPU per byte for as long as the object stays cached (BENCHMARKS.md, session 5:
    /// nginx's own sendfile 0.15-0.16 s/GB from 2 MiB folios, 0.19 from 4 KiB pages). One thread
    /// hand-off per 2 MiB, where the ring splice this replaces took one per 256 KiB piece.
    fn start_fetch(&mut self, key: usize, file: &Arc<File>, offset: u64, len: u64) -> SendStart {
        let start = offset - offset % FETCH_BYTES;
        let id = Arc::as_ptr(file) as usize;
        if let Some(w) = self
            .fetch_waits
            .iter_mut()
            .find(|w| w.file == id && w.start == start)
        {
            // Many connections asking for an object that has just become popular wait for the
            // one read of each block; splicing beside it read the same pages again into 4 KiB
            // folios (3 of 16 newly hot 2 MiB objects were left so at 1000 connections).
            if w.waiters.len() >= 2 * self.shared.config.connections_per_worker_max {
                // Connections that joined and closed leave their entries until the fetch ends:
                // should it hang while clients come and go, drop those rather than grow.
                let conns = &self.conns;
                w.waiters.retain(|&e| waiting(conns, e));
            }
            w.waiters
                .push(park(&mut self.conns, key, file, offset, len));
            self.shared.workers[self.index]
                .cold_joins
                .fetch_add(1, Ordering::Relaxed);
            return SendStart::InFlight;
        }
        if self.shared.config.cold_fetches_max == 0 {
            return self.start_splice(key, file, offset, len);
        }
        if self.fetches >= self.shared.config.cold_fetches_max {
            // Each fetch holds an io-wq thread on the disk. Past this many in flight a cold
            // stretch waits for one to end: splicing it instead read its pages into 4 KiB folios
            // and cost more server CPU, and fetched blocks waited longer to be sent while many
            // were in flight (BENCHMARKS.md, session 6).
            self.shared.workers[self.index]
                .cold_queued
                .fetch_add(1, Ordering::Relaxed);
            if self.fetch_queue.len() >= 2 * self.shared.config.connections_per_worker_max {
                // As for joins: entries of connections that closed while queued are dropped
                // rather than let the queue grow while fetches hang.
                let conns = &self.conns;
                self.fetch_queue.retain(|&e| waiting(conns, e));
            }
            let entry = park(&mut self.conns, key, file, offset, len);
            self.fetch_queue.push_back(entry);
            return SendStart::InFlight;
        }
        let Ok(size) = file.metadata().map(|m| m.len()) else {
            return self.start_splice(key, file, offset, len);
        };
        if start >= size {
            // The file is shorter than its catalog size: the splice reports it.
            return self.start_splice(key, file, offset, len);
        }
        let map_len = (size - start).min(FETCH_BYTES) as usize;
        let Some(mapping) = Mapping::new(file, start, map_len) else {
            return self.start_splice(key, file, offset, len);
        };
        self.shared.workers[self.index]
            .cold_fetches
            .fetch_add(1, Ordering::Relaxed);
        let c = &mut self.conns[key];
        let e = opcode::Madvise::new(
            mapping.addr.cast_const(),
            map_len as libc::off_t,
            libc::MADV_POPULATE_READ,
        )
        .build()
        .user_data(user_data(OP_FETCH, key, c.gen));
        c.ops += 1;
        self.fetches += 1;
        self.fetch_waits.push(FetchWait {
            file: id,
            start,
            waiters: Vec::new(),
        });
        c.out = Out::Fetching {
            file: Arc::clone(file),
            offset,
            len,
            _mapping: mapping,
        };
        // SAFETY: the mapping is held in `c.out` until the completion (a connection is freed
        // only when it has no operations in flight), so the range stays mapped while io-wq
        // faults it in.
        self.push(e);
        SendStart::InFlight
    }

    /// Starts the fetches of queued stretches (`fetch_queue`) while fewer than
    /// `cold_fetches_max` are in flight, oldest first. A stretch whose block is in the page
    /// cache by then, or cannot be fetched, goes the deferred way (`sendfile`, or the splice
    /// should its pages be gone); one whose block is being fetched joins that fetch.
    fn start_queued_fetches(&mut self) {
        while self.fetches < self.shared.config.cold_fetches_max {
            let Some((key, gen)) = self.fetch_queue.pop_front() else {
                return;
            };
            let Some((file, offset, len)) = self.take_waiting(key, gen) else {
                continue;
            };
            if self.conns[key].closing {
                // Closed while it waited: nothing to send (the close finishes when driven).
                self.ready.push_back((key, gen));
                continue;
            }
            // Its block may be in by now (fetched for a stretch queued before it): then it
            // goes out as a fetched stretch without taking a slot.
            let end = (offset - offset % FETCH_BYTES + FETCH_BYTES).min(offset + len);
            let span = (end - offset) as u32;
            if resident(file.as_raw_fd(), offset, span, span)
                || self.start_fetch(key, &file, offset, len) != SendStart::InFlight
            {
                self.defer_fetched(key, gen, file, offset, len);
            }
        }
    }

    /// The stretch of a fetch list entry whose connection still waits (`Out::Waiting`), taken
    /// out of it (the connection is left `Idle`); None for an entry of a connection that has gone.
    fn take_waiting(&mut self, key: usize, gen: u32) -> Option<(Arc<File>, u64, u64)> {
        let c = self.conns.get_mut(key).filter(|c| c.gen == gen)?;
        match std::mem::replace(&mut c.out, Out::Idle) {
            Out::Waiting { file, offset, len } => Some((file, offset, len)),
            other => {
                c.out = other;
                None
            }
        }
    }

    /// Makes a stretch whose block was fetched (or is in) go out at the next iteration, by
    /// `sendfile` (`Out::Deferred`, fetched: should its pages be gone, by the splice).
    fn defer_fetched(&mut self, key: usize, gen: u32, file: Arc<File>, offset: u64, len: u64) {
        self.conns[key].out = Out::Deferred {
            file,
            offset,
            len,
            fetched: true,
        };
        self.defer(key, gen);
    }

    /// Queues a connection whose transmit is `Out::Deferred` on [`Worker::deferred`].
    fn defer(&mut self, key: usize, gen: u32) {
        let c = &mut self.conns[key];
        debug_assert!(matches!(c.out, Out::Deferred { .. }));
        if c.deferred_gen != Some(gen) {
            c.deferred_gen = Some(gen);
            self.deferred.push_back((key, gen));
        }
    }

    /// Splices up to one chunk of `file` to the socket through a pipe, the file half as a ring
    /// SPLICE: it runs in io_uring's worker threads, so a cold read never stalls this worker.
    /// Once the pipe is filled the worker moves it to the socket itself (`flush_pipe`); a
    /// socket that is full makes the rest wait for POLLOUT.
    fn start_splice(&mut self, key: usize, file: &Arc<File>, offset: u64, len: u64) -> SendStart {
        let want = len.min(self.shared.pool.chunk_bytes() as u64) as u32;
        let Some(pipe) = self.take_pipe() else {
            return SendStart::NoPipe;
        };
        self.shared.workers[self.index]
            .cold_splices
            .fetch_add(1, Ordering::Relaxed);
        let more = u64::from(want) < len;
        let c = &mut self.conns[key];
        let e = opcode::Splice::new(
            types::Fd(file.as_raw_fd()),
            offset as i64,
            types::Fd(pipe.write.as_raw_fd()),
            -1,
            want,
        )
        .build()
        .user_data(user_data(OP_SPLICE_IN, key, c.gen));
        c.ops += 1;
        c.out = Out::Splicing {
            _file: Arc::clone(file),
            pipe,
            in_pipe: 0,
            total: 0,
            more,
        };
        // SAFETY: no buffers; the file and the pipe are held in `c.out` until the completion.
        self.push(e);
        SendStart::InFlight
    }

    /// Moves what the pipe holds to the socket now (nonblocking socket). When the pipe empties
    /// the piece is reported to the session (`Done`); a full socket arms a POLLOUT
    /// (`InFlight`); an error ends the piece and is reported (`Done`).
    fn flush_pipe(&mut self, key: usize, now: Instant) -> SendStart {
        let c = &mut self.conns[key];
        let Out::Splicing {
            pipe,
            in_pipe,
            total,
            more,
            ..
        } = &mut c.out
        else {
            unreachable!("flush without a splice")
        };
        let mut failed = None;
        while *in_pipe > 0 {
            let flags = libc::SPLICE_F_NONBLOCK | if *more { libc::SPLICE_F_MORE } else { 0 };
            // SAFETY: the pipe and the socket are open, owned by `c`; no memory is passed.
            let n = unsafe {
                libc::splice(
                    pipe.read.as_raw_fd(),
                    std::ptr::null_mut(),
                    c.fd.as_raw_fd(),
                    std::ptr::null_mut(),
                    *in_pipe,
                    flags,
                )
            };
            if n > 0 {
                *in_pipe -= n as usize;
                *total += n as usize;
                continue;
            }
            let err = if n == 0 {
                send_error(0)
            } else {
                io::Error::last_os_error()
            };
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    self.push_pollout(key, OP_POLL_OUT);
                    return SendStart::InFlight;
                }
                _ => {
                    failed = Some(err);
                    break;
                }
            }
        }
        let Out::Splicing {
            pipe,
            in_pipe,
            total,
            ..
        } = std::mem::replace(&mut c.out, Out::Idle)
        else {
            unreachable!()
        };
        self.put_pipe(pipe, in_pipe == 0);
        let c = &mut self.conns[key];
        match failed {
            None => c.session.on_sent(Ok(total as u64), None, now),
            Some(e) => c.session.on_sent(Err(e), None, now),
        }
        SendStart::Done
    }

    /// A ring splice (file -> pipe) or a POLLOUT wait completed; `op` says which.
    fn on_splice(&mut self, key: usize, op: u64, res: i32, now: Instant) {
        let c = &mut self.conns[key];
        let Out::Splicing { in_pipe, .. } = &mut c.out else {
            unreachable!("splice completion without a splice")
        };
        let failed = match op {
            OP_SPLICE_IN if res > 0 => {
                *in_pipe = res as usize;
                None
            }
            OP_SPLICE_IN if res == 0 => Some(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "object file shorter than its catalog size",
            )),
            OP_POLL_OUT if res > 0 => None,
            _ => Some(io::Error::from_raw_os_error(-res)),
        };
        if c.closing || failed.is_some() {
            let Out::Splicing { pipe, in_pipe, .. } = std::mem::replace(&mut c.out, Out::Idle)
            else {
                unreachable!()
            };
            let closing = c.closing;
            self.put_pipe(pipe, in_pipe == 0);
            if !closing {
                let c = &mut self.conns[key];
                c.session
                    .on_sent(Err(failed.expect("set above")), None, now);
            }
            self.drive(key, now);
            return;
        }
        if self.flush_pipe(key, now) == SendStart::Done {
            self.drive(key, now);
        }
    }

    fn pick_file_worker(&mut self) -> usize {
        let n = self.shared.workers.len();
        for _ in 0..n {
            self.next_file_worker = (self.next_file_worker + 1) % n;
            if self.shared.workers[self.next_file_worker]
                .roles
                .contains(Roles::FILE)
            {
                return self.next_file_worker;
            }
        }
        unreachable!("a layout always has a file worker")
    }

    fn retry_chunk_waiters(&mut self, now: Instant) {
        while self.shared.pool.available() > 0 {
            let Some((key, gen)) = self.chunk_waiters.pop_front() else {
                return;
            };
            let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
                continue;
            };
            if let Out::WaitChunk { .. } = c.out {
                let Out::WaitChunk {
                    head,
                    file,
                    offset,
                    len,
                } = std::mem::replace(&mut c.out, Out::Idle)
                else {
                    unreachable!()
                };
                self.start_file(key, head, file, offset, len, now);
                if let Some(c) = self.conns.get(key) {
                    if matches!(c.out, Out::WaitChunk { .. }) {
                        return; // Lost the race for the chunk; still queued.
                    }
                }
            }
        }
    }

    fn release_chunk(&mut self, chunk: Chunk) {
        self.shared.pool.give_back(chunk);
    }

    fn after_read(
        &mut self,
        key: usize,
        chunk: Chunk,
        head: Option<Vec<u8>>,
        direct: Option<DirectRead>,
        result: i32,
        now: Instant,
    ) {
        // File bytes the read delivered that the session asked for.
        let result = match &direct {
            Some(d) if result > 0 => d.delivered(result as usize) as i32,
            _ => result,
        };
        let c = &mut self.conns[key];
        if c.closing || result <= 0 {
            self.release_chunk(chunk);
            let c = &mut self.conns[key];
            c.out = Out::Idle;
            if !c.closing {
                let err = if result == 0 {
                    io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "object file shorter than its catalog size",
                    )
                } else {
                    io::Error::from_raw_os_error(-result)
                };
                c.session.on_sent(Err(err), head, now);
            }
            self.drive(key, now);
            return;
        }
        let head_len = head.as_ref().map_or(0, |h| h.len());
        let start = match &direct {
            Some(d) => {
                if let Some(h) = &head {
                    // SAFETY: the read completed, so the chunk is ours again; the head ends where
                    // the wanted bytes begin (`d.start() + head_len == d.at + d.skew`), inside it.
                    unsafe {
                        std::ptr::copy_nonoverlapping(
                            h.as_ptr(),
                            self.shared.pool.ptr(&chunk).add(d.start()),
                            h.len(),
                        )
                    };
                }
                d.start()
            }
            None => 0,
        };
        let c = &mut self.conns[key];
        c.out = Out::Sending {
            chunk,
            start,
            len: head_len + result as usize,
            sent: 0,
            head,
        };
        self.submit_send(key);
    }

    fn update_timer(&mut self, key: usize) {
        let c = &mut self.conns[key];
        let want = match (c.wait_until, c.session.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let want = if c.lingering.is_some() {
            c.lingering
        } else {
            want
        };
        match (c.timer, want) {
            (Some((_, at)), Some(w)) if at <= w => {
                // A deadline that moved later (a stream's progress pushes its send timeout on
                // with every piece) keeps the earlier entry: `on_timer` re-checks and re-arms.
                // Moving it each time cost a slot scan per piece, and a stream's deadlines
                // cluster in a few slots.
                return;
            }
            _ => {}
        }
        if let Some((slot, _)) = c.timer.take() {
            self.wheel.remove(key as u32, slot);
        }
        if let Some(at) = want {
            let slot = self.wheel.insert(key as u32, at);
            self.conns[key].timer = Some((slot, at));
        }
    }

    fn on_timer(&mut self, key: usize, now: Instant) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        c.timer = None;
        if c.lingering.is_some_and(|t| t <= now) {
            self.begin_close(key, now);
            return;
        }
        if c.wait_until.is_some_and(|t| t <= now) {
            c.wait_until = None;
        }
        if c.session.deadline().is_some_and(|t| t <= now) {
            c.session.on_deadline(now);
            if c.session.wants_close() && !matches!(c.out, Out::Idle) {
                // A transmit waits on a socket the peer stopped draining (a POLLOUT that may
                // never come): the session would be asked again only once the socket had room.
                self.begin_close(key, now);
                return;
            }
        }
        self.drive(key, now);
    }

    // ----- completions -----

    fn on_completion(&mut self, ud: u64, res: i32, flags: u32, now: Instant) {
        let (op, key, gen) = split_user_data(ud);
        tracing::trace!(worker = self.index, op, key, gen, res, "completion");
        match op {
            OP_WAKE => {
                self.wake_armed = false;
                return;
            }
            OP_CANCEL => return,
            OP_REMOTE_READ => {
                let (_file, chunk, reply_to, tok) = self.remote_reads.remove(key);
                self.shared.send_must(
                    reply_to as usize,
                    Msg::ReadDone {
                        token: tok,
                        chunk,
                        result: res,
                    },
                );
                return;
            }
            _ => {}
        }
        let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
            debug_assert!(false, "completion for a freed connection: op {op}");
            return;
        };
        if op == OP_RECV_MULTI {
            self.on_recv_multi(key, res, flags, now);
            return;
        }
        c.ops -= 1;
        match op {
            OP_POLL => {
                c.recv = RecvState::None;
                if res < 0 && res != -libc::ECANCELED {
                    c.peer_closed = true;
                    c.session.on_peer_closed(now);
                } else if res > 0 && !c.closing && !self.give_input_buffer(key) {
                    return;
                }
            }
            OP_RECV => {
                c.recv = RecvState::None;
                c.no_bufs = false;
                if res > 0 {
                    // SAFETY: the kernel wrote `res` bytes into the spare capacity we gave it.
                    unsafe { c.input.set_len(c.input.len() + res as usize) };
                    if c.lingering.is_some() {
                        c.input.clear(); // discarded: the connection is closing
                    } else if !c.closing {
                        let used = c.session.on_input(&c.input, now);
                        debug_assert!(used <= c.input.len());
                        // The buffer stays with the connection: a keep-alive client's next request
                        // is received straight away, without a poll first.
                        c.input.drain(..used.min(c.input.len()));
                    }
                } else if res == 0 || res != -libc::ECANCELED {
                    c.peer_closed = true;
                    if !c.closing {
                        c.session.on_peer_closed(now);
                    }
                }
            }
            OP_SEND => {
                let out = std::mem::replace(&mut c.out, Out::Idle);
                match out {
                    Out::Bytes { buf, sent } => {
                        if res > 0 && sent + (res as usize) < buf.len() {
                            c.out = Out::Bytes {
                                buf,
                                sent: sent + res as usize,
                            };
                            if !c.closing {
                                self.submit_send(key);
                                return;
                            }
                        } else if res > 0 {
                            let n = buf.len() as u64;
                            c.session.on_sent(Ok(n), Some(buf), now);
                        } else if !c.closing {
                            c.session.on_sent(Err(send_error(res)), Some(buf), now);
                        }
                    }
                    Out::Sending {
                        chunk,
                        start,
                        len,
                        sent,
                        head,
                    } => {
                        if res > 0 && sent + (res as usize) < len && !c.closing {
                            c.out = Out::Sending {
                                chunk,
                                start,
                                len,
                                sent: sent + res as usize,
                                head,
                            };
                            self.submit_send(key);
                            return;
                        }
                        self.release_chunk(chunk);
                        let c = &mut self.conns[key];
                        if res > 0 && !c.closing {
                            let head_len = head.as_ref().map_or(0, |h| h.len());
                            if head.is_some() {
                                c.session.on_sent(Ok(head_len as u64), head, now);
                            }
                            c.session.on_sent(Ok((len - head_len) as u64), None, now);
                        } else if !c.closing {
                            c.session.on_sent(Err(send_error(res)), head, now);
                        }
                    }
                    other => {
                        debug_assert!(false, "send completion without a send");
                        c.out = other;
                    }
                }
            }
            OP_SPLICE_IN | OP_POLL_OUT => {
                self.on_splice(key, op, res, now);
                return;
            }
            OP_WRITABLE => {
                let Out::Blocked(pending) = std::mem::replace(&mut c.out, Out::Idle) else {
                    unreachable!("writable completion without a blocked send")
                };
                // Issued again through the deferred path (an error shows there, from the send).
                if let (Some(p), false) = (pending, c.closing) {
                    c.out = Out::Deferred {
                        file: p.file,
                        offset: p.offset,
                        len: p.len,
                        fetched: p.fetched,
                    };
                }
            }
            OP_FETCH => {
                let Out::Fetching {
                    file, offset, len, ..
                } = std::mem::replace(&mut c.out, Out::Idle)
                else {
                    unreachable!("fetch completion without a fetch")
                };
                self.fetches -= 1;
                let id = Arc::as_ptr(&file) as usize;
                let start = offset - offset % FETCH_BYTES;
                let at = self
                    .fetch_waits
                    .iter()
                    .position(|w| w.file == id && w.start == start)
                    .expect("a fetch in flight has its entry");
                let wait = self.fetch_waits.swap_remove(at);
                for (k, g) in wait.waiters {
                    // A joined connection that closed meanwhile was freed (it held no
                    // operation); its slot may hold another connection now.
                    if let Some((file, offset, len)) = self.take_waiting(k, g) {
                        self.defer_fetched(k, g, file, offset, len);
                    }
                }
                self.start_queued_fetches();
                let c = &mut self.conns[key];
                if !c.closing {
                    if res != 0 {
                        // Not a verdict on the object (no memory for the mapping's pages, a
                        // kernel without ring MADVISE): the stretch finds its pages cold and
                        // takes the ring splice, which reports a real read error or EOF itself.
                        tracing::debug!(
                            worker = self.index,
                            "cold fetch failed: {}",
                            io::Error::from_raw_os_error(-res)
                        );
                    }
                    // The block is in: the stretch goes out by `sendfile` from here.
                    c.out = Out::Deferred {
                        file,
                        offset,
                        len,
                        fetched: true,
                    };
                }
            }
            OP_OPEN => {
                let Out::Opening(_path) = std::mem::replace(&mut c.out, Out::Idle) else {
                    unreachable!("open completion without an open")
                };
                let result = if res >= 0 {
                    // SAFETY: a successful OPENAT returns a new descriptor nothing else owns.
                    Ok(unsafe { File::from_raw_fd(res) })
                } else {
                    Err(io::Error::from_raw_os_error(-res))
                };
                // A closing connection drops the file (closing it).
                if !c.closing {
                    c.session.on_opened(result, now);
                }
            }
            OP_READ => {
                let Out::Reading {
                    local: Some((chunk, _file)),
                    head,
                    direct,
                } = std::mem::replace(&mut c.out, Out::Idle)
                else {
                    unreachable!("read completion without a read")
                };
                self.after_read(key, chunk, head, direct, res, now);
                return;
            }
            _ => debug_assert!(false, "unknown op {op}"),
        }
        self.drive(key, now);
    }

    // ----- closing -----

    fn begin_close(&mut self, key: usize, now: Instant) {
        let c = &mut self.conns[key];
        if !c.closing {
            c.closing = true;
            if c.ops > 0 {
                // Completes pending receives, polls and sends at once; file reads finish on their own.
                // SAFETY: the fd is open (owned by the connection); shutdown has no memory effects.
                unsafe { libc::shutdown(c.fd.as_raw_fd(), libc::SHUT_RDWR) };
            }
        }
        if self.conns[key].ops == 0 {
            self.finish_close(key, now);
        }
    }

    fn finish_close(&mut self, key: usize, now: Instant) {
        let mut c = self.conns.remove(key);
        debug_assert_eq!(c.ops, 0);
        if let Some((slot, _)) = c.timer.take() {
            self.wheel.remove(key as u32, slot);
        }
        match std::mem::replace(&mut c.out, Out::Idle) {
            Out::Sending { chunk, .. } => self.release_chunk(chunk),
            Out::Splicing { pipe, in_pipe, .. } => self.put_pipe(pipe, in_pipe == 0),
            _ => {}
        }
        c.session.on_close(now);
        self.shared.workers[self.index]
            .conns
            .fetch_sub(1, Ordering::Relaxed);
        // Dropping `c` closes the socket and releases its reservations.
    }
}

/// Keeps received bytes the session has not consumed in the connection's own input buffer,
/// reserving it first. The buffer may pass `input_bytes_max` by what was already received when
/// the backpressure cancel lands (at most a few provided buffers). False if memory was refused.
fn stash(c: &mut Conn, shared: &Shared, bytes: &[u8]) -> bool {
    if bytes.is_empty() {
        return true;
    }
    if c.input_reservation.is_none() {
        let cap = shared.config.input_bytes_max;
        match shared.rm.reserve(Resource::MemoryBytes, cap as u64) {
            Ok(r) => {
                c.input_reservation = Some(r);
                c.input.reserve_exact(cap.saturating_sub(c.input.len()));
            }
            Err(e) => {
                tracing::warn!("connection input buffer refused: {e}");
                return false;
            }
        }
    }
    c.input.extend_from_slice(bytes);
    true
}

fn send_error(res: i32) -> io::Error {
    if res == 0 {
        io::Error::new(io::ErrorKind::WriteZero, "peer accepted no bytes")
    } else {
        io::Error::from_raw_os_error(-res)
    }
}

fn peer_addr(fd: &OwnedFd) -> Option<std::net::SocketAddr> {
    SockRef::from(fd).peer_addr().ok()?.as_socket()
}

fn transmit_name(t: &Transmit) -> &'static str {
    match t {
        Transmit::Bytes(_) => "bytes",
        Transmit::File { .. } => "file",
        Transmit::FileWithHead { .. } => "head+file",
        Transmit::WaitUntil(_) => "wait",
        Transmit::Idle => "idle",
        Transmit::Open(_) => "open",
        Transmit::Job(_) => "job",
        Transmit::Close => "close",
    }
}

/// Sends what a nonblocking socket takes now; `Ok(0)` when it takes nothing (EAGAIN).
fn send_now(fd: &OwnedFd, bytes: &[u8], flags: libc::c_int) -> io::Result<usize> {
    loop {
        // SAFETY: the socket is open (owned by the caller's connection) and `bytes` is a live
        // slice for the duration of the call.
        let n = unsafe {
            libc::send(
                fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                flags | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n >= 0 {
            return Ok(n as usize);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => return Ok(0),
            _ => return Err(e),
        }
    }
}

/// What one round of the kernel's `sendfile` moves through its internal pipe (16 pages).
const PIPE_ROUND_BYTES: u64 = 64 << 10;

/// Corks the connection's socket (TCP_CORK) unless it already is.
fn cork(c: &mut Conn) {
    if !c.corked {
        c.corked = true;
        let _ = SockRef::from(&c.fd).set_tcp_cork(true);
    }
}

/// Uncorks the connection's socket, which sends what the cork held.
fn uncork(c: &mut Conn) {
    if c.corked {
        c.corked = false;
        let _ = SockRef::from(&c.fd).set_tcp_cork(false);
    }
}

/// Whether a body piece of `len` bytes goes file -> pipe -> socket rather than through a pool
/// chunk (a read-send copies every byte twice in the server, a splice not at all). Never with
/// direct reads: a splice would read through the page cache they are meant to bypass.
fn splices(shared: &Shared, len: u64) -> bool {
    shared.config.send_path == SendPath::Splice
        && !shared.config.direct_reads
        && len >= SPLICE_MIN_BYTES
}
