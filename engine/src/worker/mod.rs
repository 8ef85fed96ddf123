//! A worker: one pinned thread, one io_uring, the connections it currently drives.
//!
//! The loop: drain the mailbox (new connections, adopted sessions, file-read requests and replies,
//! job results), fire due timers, submit and wait once (one `io_uring_enter` per iteration), then
//! handle every completion. Each completion is routed by its `user_data` (operation kind, slab
//! key, generation) to a connection, whose session is then *driven* (`drive`): asked what to
//! transmit, with at most one send/read in flight per connection, so bytes leave in order.
//!
//! Layers, each calling only the ones below it: this module (the loop and completion dispatch;
//! owns [`Worker`]) and `drive` (one function per `Transmit` kind, closing) orchestrate; the
//! mechanisms `recv`, `send`, `hot`, `fetch`, `splice`, `read` and `migrate` each work on one
//! connection and the narrow state they own, and never call back up; `conn`, `pipes`, `mapping`
//! and `op` are the bottom (connection state, kernel objects, `user_data` and submission).
//!
//! Buffer ownership: a connection's input `Vec` and its outgoing `Vec`, pool chunk or write
//! buffer stay in the connection (or the remote-read slab) from submission until the completion
//! arrives; a connection is freed only when its in-flight count is zero. Nothing here blocks
//! except the one wait in `io_uring_enter`.

pub(crate) mod conn;
mod drive;
mod fetch;
mod hot;
mod mapping;
mod migrate;
mod op;
mod pipes;
mod read;
mod recv;
mod send;
mod splice;

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};
use slab::Slab;
use socket2::SockRef;

use self::conn::{Conn, Out};
use self::fetch::{block_start, Fetches, FETCH_BYTES};
use self::hot::{DeferredFifo, HotSender};
use self::op::OP_WRITE;
use self::op::{split_token, split_user_data, user_data, Gens, Ring};
use self::op::{OP_CANCEL, OP_FETCH, OP_OPEN, OP_POLL, OP_POLL_OUT, OP_READ, OP_RECV};
use self::op::{OP_RECV_MULTI, OP_REMOTE_READ, OP_SEND, OP_SPLICE_IN, OP_WAKE, OP_WRITABLE};
use self::pipes::{PipePool, PIPES_PER_WORKER_MAX};
use self::read::Reads;
use self::recv::Receive;
use self::send::SendStart;
use crate::direct::DirectRead;
use crate::layout::Roles;
use crate::pool::Chunk;
use crate::residency::resident;
use crate::resource::Reservation;
use crate::session::ConnInfo;
use crate::shared::{Msg, Shared};
use crate::timer::Wheel;

/// The read of the worker's mailbox eventfd that wakes the loop when a message arrives.
struct Waker {
    buf: Box<u64>,
    armed: bool,
    /// The eventfd is registered file 0 of the ring (read at every wake-up).
    fixed: bool,
}

impl Waker {
    fn arm(&mut self, ring: &mut Ring, eventfd: RawFd) {
        if self.armed {
            return;
        }
        let buf = (&mut *self.buf as *mut u64).cast();
        let e = if self.fixed {
            opcode::Read::new(types::Fixed(0), buf, 8).build()
        } else {
            opcode::Read::new(types::Fd(eventfd), buf, 8).build()
        }
        .user_data(user_data(OP_WAKE, 0, 0));
        // SAFETY: `buf` is a Box owned by the worker, dropped after the ring (the ring is the
        // worker's first field); the eventfd belongs to the worker's mailbox in `Shared`.
        unsafe { ring.push(e) };
        self.armed = true;
    }
}

pub(crate) struct Worker {
    /// First, so it is dropped first: the kernel is done with every buffer below before it goes.
    ring: Ring,
    index: usize,
    roles: Roles,
    shared: Arc<Shared>,
    conns: Slab<Conn>,
    gens: Gens,
    wheel: Wheel,
    /// Keys the wheel found due (reused every iteration).
    due: Vec<u32>,
    waker: Waker,
    recv: Receive,
    reads: Reads,
    pipes: PipePool,
    hot: HotSender,
    deferred: DeferredFifo,
    fetches: Fetches,
    /// Connections to drive again at the next iteration, in the order they yielded: a send
    /// that failed, a split layout's stream waiting to move to a data worker.
    ready: VecDeque<(usize, u32)>,
    /// The Resource Manager's event epoch this worker last reacted to.
    seen_epoch: u64,
    shutdown_seen: bool,
    /// When the drain deadline was first seen passed, then when connections still waiting for
    /// operations were last logged.
    overdue_logged: Option<Instant>,
}

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
        let recv = Receive::new(index, roles, &ring, &shared);
        let wake_fixed = ring
            .submitter()
            .register_files(&[shared.workers[index].mailbox.eventfd()])
            .is_ok();
        let cfg = &shared.config;
        Ok(Worker {
            ring: Ring::new(ring, index),
            index,
            roles,
            conns: Slab::new(),
            gens: Gens::new(),
            wheel: Wheel::new(Instant::now()),
            due: Vec::new(),
            waker: Waker {
                buf: Box::new(0),
                armed: false,
                fixed: wake_fixed,
            },
            recv,
            reads: Reads::new(index, roles, fixed_buffers),
            pipes: PipePool::new(
                index,
                PIPES_PER_WORKER_MAX.min(cfg.connections_per_worker_max),
                shared.pool.chunk_bytes(),
                Arc::clone(&shared.rm),
            ),
            hot: HotSender::new(shared.pool.chunk_bytes(), cfg.tcp_nopush),
            deferred: DeferredFifo::default(),
            fetches: Fetches::new(cfg.cold_fetches_max, cfg.connections_per_worker_max),
            ready: VecDeque::new(),
            seen_epoch: 0,
            shutdown_seen: false,
            overdue_logged: None,
            shared,
        })
    }

    pub(crate) fn run(mut self) {
        let shared = Arc::clone(&self.shared);
        let me = &shared.workers[self.index];
        let chunk_bytes = shared.pool.chunk_bytes() as u64;
        let started = Instant::now();
        let mut loops: u64 = 0;
        let mut woke = started;
        loop {
            loops += 1;
            self.hot.budget.refill();
            self.waker.arm(&mut self.ring, me.mailbox.eventfd());
            self.check_events();
            let now = Instant::now();
            while self.hot.budget.piece_left(chunk_bytes) {
                let Some(key) = self.deferred.pop_live(&mut self.conns) else {
                    break;
                };
                if matches!(self.conns[key].out, Out::Deferred { .. }) {
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
            while let Some(msg) = me.mailbox.try_recv() {
                self.handle_msg(msg, now);
            }
            self.check_shutdown(now);
            self.wheel.expire(now, &mut self.due);
            let mut due = std::mem::take(&mut self.due);
            for key in due.drain(..) {
                self.on_timer(key as usize, now);
            }
            self.due = due;
            if self.reads.waiting_for_chunks() && shared.pool.available() > 0 {
                self.reads
                    .retry_waiters(&mut self.ring, &shared, &mut self.conns);
            }
            if self.should_exit() {
                break;
            }

            let mut timeout = self.wheel.timeout(now).unwrap_or(Duration::from_secs(1));
            if self.reads.waiting_for_chunks() {
                timeout = timeout.min(crate::timer::TICK);
            }
            if shared.is_shutting_down() {
                timeout = timeout.min(Duration::from_millis(50));
            }
            let sleep = me.mailbox.prepare_sleep();
            if !sleep || !self.ready.is_empty() || !self.deferred.is_empty() {
                timeout = Duration::ZERO;
            }
            me.busy.record(woke.elapsed().as_micros() as u64);
            self.ring.submit_and_wait(timeout);
            me.mailbox.woke();
            woke = Instant::now();
            self.drain_completions();
        }
        me.conns.store(0, Ordering::Relaxed);
        self.recv.teardown(self.ring.io_uring());
        tracing::debug!(
            "worker {} exits after {loops} loops, {:?}",
            self.index,
            started.elapsed()
        );
    }

    fn drain_completions(&mut self) {
        loop {
            let batch = self.ring.completions(256);
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
        if !self.shared.is_shutting_down() || !self.conns.is_empty() || self.reads.serving_others()
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
        if self.shared.rm.is_critical() {
            let closed = self.pipes.close_idle();
            if closed > 0 {
                tracing::info!(
                    "worker {}: critical resource event: closed {closed} idle pipes",
                    self.index
                );
            }
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
            self.log_overdue(now);
        }
    }

    /// Past the drain deadline, connections left are closed and wait only for their operations
    /// in flight to come back, which takes milliseconds; any still waiting a few seconds later
    /// are named (every few seconds) with what they wait in, so a stop that hangs names its
    /// cause.
    fn log_overdue(&mut self, now: Instant) {
        const EVERY: Duration = Duration::from_secs(5);
        let Some(last) = self.overdue_logged else {
            self.overdue_logged = Some(now);
            return;
        };
        if self.conns.is_empty() || now.duration_since(last) < EVERY {
            return;
        }
        self.overdue_logged = Some(now);
        let mut waits: Vec<String> = self
            .conns
            .iter()
            .take(8)
            .map(|(_, c)| format!("{} ops in {}", c.ops, c.out.name()))
            .collect();
        if self.conns.len() > waits.len() {
            waits.push("...".to_string());
        }
        tracing::warn!(
            "worker {}: past the drain deadline, {} connections wait for operations in flight ({})",
            self.index,
            self.conns.len(),
            waits.join(", ")
        );
    }

    fn handle_msg(&mut self, msg: Msg, now: Instant) {
        match msg {
            Msg::NewConn {
                fd,
                listener,
                reservation,
            } => self.open_conn(fd, listener, reservation, now),
            Msg::Adopt(conn) => {
                let key = migrate::adopt(&mut self.conns, &mut self.gens, *conn);
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
            } => self.reads.serve(
                &mut self.ring,
                self.shared.pool,
                file,
                offset,
                len,
                chunk,
                at,
                reply_to,
                token,
            ),
            Msg::ReadDone {
                token,
                chunk,
                result,
            } => {
                let (key, gen) = split_token(token);
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
                        self.shared.pool.give_back(chunk);
                    }
                }
            }
            Msg::JobDone { token, result } => {
                let (key, gen) = split_token(token);
                if let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == gen) {
                    c.ops -= 1;
                    c.out = Out::Idle;
                    c.session.on_job_done(result, now);
                    self.drive(key, now);
                }
            }
        }
    }

    fn open_conn(&mut self, fd: OwnedFd, listener: u16, reservation: Reservation, now: Instant) {
        let socket = SockRef::from(&fd);
        // A failed TCP option changes only how bytes are packed into segments, never which
        // bytes leave, so it is not reported.
        let _ = socket.set_tcp_nodelay(true);
        let info = ConnInfo {
            peer: socket.peer_addr().ok().and_then(|a| a.as_socket()),
            listener,
        };
        let session = self.shared.services[listener as usize].open(info, now);
        let gen = self.gens.take();
        let key = self.conns.insert(Conn::new(fd, gen, session, reservation));
        if self.shared.is_shutting_down() {
            let c = &mut self.conns[key];
            c.shutdown_told = true;
            c.session.on_shutdown(now);
        }
        self.drive(key, now);
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

    fn on_completion(&mut self, ud: u64, res: i32, flags: u32, now: Instant) {
        let (op, key, gen) = split_user_data(ud);
        tracing::trace!(worker = self.index, op, key, gen, res, "completion");
        match op {
            OP_WAKE => {
                self.waker.armed = false;
                return;
            }
            OP_CANCEL => return,
            OP_REMOTE_READ => {
                self.reads.served(&self.shared, key, res);
                return;
            }
            _ => {}
        }
        let Some(c) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
            debug_assert!(false, "completion for a freed connection: op {op}");
            return;
        };
        if op == OP_RECV_MULTI {
            if self.recv.on_multi(&mut self.ring, c, key, res, flags, now) {
                self.drive(key, now);
            } else {
                self.begin_close(key, now);
            }
            return;
        }
        c.ops -= 1;
        let pool = self.shared.pool;
        match op {
            OP_POLL => {
                if !self.recv.on_poll(c, res, now) {
                    self.begin_close(key, Instant::now());
                    return;
                }
            }
            OP_RECV => Receive::on_recv(c, res, now),
            OP_SEND => {
                if !send::on_complete(&mut self.ring, pool, c, key, res, now) {
                    return;
                }
            }
            OP_SPLICE_IN | OP_POLL_OUT => {
                if !splice::on_complete(&mut self.pipes, &mut self.ring, c, key, op, res, now) {
                    return;
                }
            }
            OP_WRITABLE => hot::on_writable(c),
            OP_FETCH => self.on_fetched(key, res),
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
            OP_WRITE => {
                let Out::Writing {
                    file,
                    offset,
                    data,
                    written,
                } = std::mem::replace(&mut c.out, Out::Idle)
                else {
                    unreachable!("write completion without a write")
                };
                let written = written + res.max(0) as usize;
                let result = match res {
                    _ if res < 0 => Err(io::Error::from_raw_os_error(-res)),
                    0 => Err(io::ErrorKind::WriteZero.into()),
                    _ if written < data.len() && !c.closing => {
                        // A short write: the rest goes on from where it stopped.
                        c.out = Out::Writing {
                            file,
                            offset,
                            data,
                            written,
                        };
                        c.push_write(&mut self.ring, key);
                        return;
                    }
                    _ => Ok(()),
                };
                // A closing connection drops the buffer (its session is closing too).
                if !c.closing {
                    c.session.on_written(result, data, now);
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

    /// A cold fetch completed (`ops` already counted down): the connections that joined it go
    /// out as fetched stretches, queued stretches take the freed slot, and so does this one.
    fn on_fetched(&mut self, key: usize, res: i32) {
        let c = &mut self.conns[key];
        let Out::Fetching {
            file, offset, len, ..
        } = std::mem::replace(&mut c.out, Out::Idle)
        else {
            unreachable!("fetch completion without a fetch")
        };
        for (k, g) in self.fetches.end(&file, offset) {
            // A joined connection that closed meanwhile was freed (it held no operation); its
            // slot may hold another connection now.
            if let Some((file, offset, len)) = self.take_waiting(k, g) {
                self.defer_fetched(k, file, offset, len);
            }
        }
        self.start_queued_fetches();
        let c = &mut self.conns[key];
        if !c.closing {
            if res != 0 {
                // Not a verdict on the object (no memory for the mapping's pages, a kernel
                // without ring MADVISE): the stretch finds its pages cold and takes the ring
                // splice, which reports a real read error or EOF itself.
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

    /// Starts the fetches of queued stretches while fetch slots are free, oldest first. A
    /// stretch whose block is in the page cache by then, or cannot be fetched, goes the deferred
    /// way (`sendfile`, or the splice should its pages be gone); one whose block is being
    /// fetched joins that fetch.
    fn start_queued_fetches(&mut self) {
        while let Some((key, gen)) = self.fetches.next_queued() {
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
            let end = (block_start(offset) + FETCH_BYTES).min(offset + len);
            let span = (end - offset) as u32;
            if resident(file.as_raw_fd(), offset, span, span)
                || self.start_cold(key, &file, offset, len) != SendStart::InFlight
            {
                self.defer_fetched(key, file, offset, len);
            }
        }
    }

    /// The stretch of a fetch list entry whose connection still waits, taken out of it (the
    /// connection is left `Idle`); None for an entry of a connection that has gone.
    fn take_waiting(&mut self, key: usize, gen: u32) -> Option<(Arc<File>, u64, u64)> {
        self.conns
            .get_mut(key)
            .filter(|c| c.gen == gen)?
            .take_waiting()
    }

    /// A read into a chunk completed (here or on a file worker): send the chunk, or drive the
    /// session the failure was reported to.
    fn after_read(
        &mut self,
        key: usize,
        chunk: Chunk,
        head: Option<Vec<u8>>,
        direct: Option<DirectRead>,
        result: i32,
        now: Instant,
    ) {
        let pool = self.shared.pool;
        let c = &mut self.conns[key];
        if read::finish(pool, c, chunk, head, direct, result, now) {
            send::submit(&mut self.ring, pool, c, key);
        } else {
            self.drive(key, now);
        }
    }
}
