//! Driving a session: ask it what to transmit and start that, one function per [`Transmit`]
//! kind, then feed it buffered input and re-arm its receive and timer; and closing.
//!
//! Part of the loop layer (it works on [`Worker`]), below the loop itself: the loop and the
//! completion dispatch in `mod.rs` call in here, nothing here calls back up into them. The
//! mechanisms it picks between (hot sends, cold fetch, splice, reads, ring sends) never call it.

use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use super::conn::{Conn, Out, RecvState};
use super::fetch::FetchStart;
use super::hot;
use super::migrate::{self, Here};
use super::op::{token, user_data, OP_OPEN};
use super::send::{self, SendStart};
use super::splice;
use super::Worker;
use crate::config::{EngineConfig, SendPath, SPLICE_MIN_BYTES};
use crate::session::{Completer, Deferred, Job, Transmit};
use crate::shared::{JobMsg, JobRejected};

/// What the driver does after a transmit was started or answered.
enum Next {
    /// Ask the session for its next transmit now.
    Poll,
    /// A transmit is in flight or the session waits: go on to input.
    Input,
}

impl Worker {
    pub(super) fn drive(&mut self, key: usize, now: Instant) {
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
            if !matches!(c.out, Out::Idle) && !deferred {
                break;
            }
            let (t, fetched) = if deferred {
                let Out::Deferred {
                    file,
                    offset,
                    len,
                    fetched,
                } = std::mem::replace(&mut c.out, Out::Idle)
                else {
                    unreachable!()
                };
                (Transmit::File { file, offset, len }, fetched)
            } else {
                (c.session.poll_transmit(now), false)
            };
            tracing::trace!(
                worker = self.index,
                key,
                transmit = transmit_name(&t),
                "poll_transmit"
            );
            let next = match t {
                Transmit::Bytes(buf) => self.transmit_bytes(key, buf, now),
                Transmit::File { file, offset, len } => {
                    self.transmit_file(key, file, offset, len, fetched, now)
                }
                Transmit::FileWithHead {
                    head,
                    file,
                    offset,
                    len,
                } => self.transmit_file_with_head(key, head, file, offset, len, now),
                Transmit::WaitUntil(t) => {
                    self.transmit_wait(key, Some(t.max(now + Duration::from_micros(1))))
                }
                Transmit::Idle => self.transmit_wait(key, None),
                Transmit::Open(path) => {
                    self.transmit_open(key, path, libc::O_RDONLY | libc::O_CLOEXEC)
                }
                Transmit::Create(path) => self.transmit_open(
                    key,
                    path,
                    libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
                ),
                Transmit::Write { file, offset, data } => {
                    self.transmit_write(key, file, offset, data, now)
                }
                Transmit::Job(job) => self.transmit_job(key, job, now),
                Transmit::Defer(work) => self.transmit_defer(key, work),
                Transmit::Close => return self.transmit_close(key, now),
            };
            match next {
                Next::Poll => continue,
                Next::Input => break,
            }
        }
        self.drive_input(key, now)
    }

    fn transmit_bytes(&mut self, key: usize, buf: Vec<u8>, now: Instant) -> Next {
        let c = &mut self.conns[key];
        if buf.is_empty() {
            c.session.on_sent(Ok(0), Some(buf), now);
            return Next::Poll;
        }
        c.wait_until = None;
        c.out = Out::Bytes { buf, sent: 0 };
        send::submit(&mut self.ring, self.shared.pool, c, key);
        Next::Input
    }

    fn transmit_file(
        &mut self,
        key: usize,
        file: Arc<File>,
        offset: u64,
        len: u64,
        fetched: bool,
        now: Instant,
    ) -> Next {
        let c = &mut self.conns[key];
        if len == 0 {
            c.session.on_sent(Ok(0), None, now);
            return Next::Poll;
        }
        c.wait_until = None;
        if zero_copy(&self.shared.config, len) {
            let mut started =
                self.hot
                    .send(&mut self.ring, c, key, &file, offset, len, fetched, now);
            if started == SendStart::Cold {
                started = if fetched {
                    self.start_splice(key, &file, offset, len)
                } else {
                    self.start_cold(key, &file, offset, len)
                };
            }
            match started {
                // The socket took all it was given: keep feeding it (bounded by the
                // iteration's budget), as a sendfile server does until EAGAIN.
                // Yielding after every piece measured 0.86x the throughput at 100
                // connections on 2 MiB objects: the client then gets 256 KiB at a
                // time on every connection instead of whole responses on a few.
                SendStart::Done => {
                    let c = &self.conns[key];
                    if migrate::missing_role(self.roles, c).is_some() {
                        // A split layout's command worker sent the first bytes:
                        // the next turn hands the stream to a data worker.
                        self.ready.push_back((key, c.gen));
                        return Next::Input;
                    }
                    return Next::Poll;
                }
                SendStart::Failed => {
                    let c = &self.conns[key];
                    self.ready.push_back((key, c.gen));
                    return Next::Input;
                }
                SendStart::InFlight => return Next::Input,
                SendStart::Later => {
                    self.conns[key].out = Out::Deferred {
                        file,
                        offset,
                        len,
                        fetched,
                    };
                    self.defer(key);
                    return Next::Input;
                }
                SendStart::NoPipe | SendStart::Cold => {}
            }
        }
        self.start_read(key, None, file, offset, len);
        Next::Input
    }

    fn transmit_file_with_head(
        &mut self,
        key: usize,
        head: Vec<u8>,
        file: Arc<File>,
        offset: u64,
        len: u64,
        now: Instant,
    ) -> Next {
        let pool = self.shared.pool;
        assert!(
            head.len() < pool.chunk_bytes() / 2,
            "head too long to share a chunk"
        );
        let c = &mut self.conns[key];
        c.wait_until = None;
        if len > 0 && zero_copy(&self.shared.config, len) {
            // A body sent from the page cache does not share a buffer with its head: the head
            // leaves alone and the session then asks for the body as a plain file transmit. The
            // body usually leaves right after (a hot stretch by sendfile), so the head is sent
            // here too, corked (MSG_MORE) to share its segment.
            hot::cork_body(c, self.shared.config.tcp_nopush, len);
            match send::send_now(&c.fd, &head, libc::MSG_MORE) {
                Ok(n) if n == head.len() => {
                    c.session.on_sent(Ok(n as u64), Some(head), now);
                    return Next::Poll;
                }
                Ok(n) => {
                    c.out = Out::Bytes { buf: head, sent: n };
                    send::submit(&mut self.ring, pool, c, key);
                }
                Err(e) => {
                    c.session.on_sent(Err(e), Some(head), now);
                    // The session now wants to close: drive it again, as after a failed
                    // sendfile (nothing else would: no transmit or receive is in flight).
                    self.ready.push_back((key, c.gen));
                }
            }
            return Next::Input;
        }
        if len == 0 {
            c.out = Out::Bytes { buf: head, sent: 0 };
            send::submit(&mut self.ring, pool, c, key);
            return Next::Input;
        }
        self.start_read(key, Some(head), file, offset, len);
        Next::Input
    }

    /// Nothing to send before `until` (pacing), or until input or a deadline (`None`).
    fn transmit_wait(&mut self, key: usize, until: Option<Instant>) -> Next {
        self.conns[key].wait_until = until;
        Next::Input
    }

    fn transmit_open(&mut self, key: usize, path: std::ffi::CString, flags: i32) -> Next {
        let c = &mut self.conns[key];
        // The mode counts only with O_CREAT: 0666 less the umask, as `File::create` does.
        let e = opcode::OpenAt::new(types::Fd(libc::AT_FDCWD), path.as_ptr())
            .flags(flags)
            .mode(0o666)
            .build()
            .user_data(user_data(OP_OPEN, key, c.gen));
        c.ops += 1;
        c.out = Out::Opening(path);
        // SAFETY: the path's bytes live in `c.out` (a CString's heap buffer does not move with
        // it) until the completion takes them.
        unsafe { self.ring.push(e) };
        Next::Input
    }

    fn transmit_write(
        &mut self,
        key: usize,
        file: Arc<File>,
        offset: u64,
        data: Vec<u8>,
        now: Instant,
    ) -> Next {
        let c = &mut self.conns[key];
        if data.is_empty() {
            c.session.on_written(Ok(()), data, now);
            return Next::Poll;
        }
        c.out = Out::Writing {
            file,
            offset,
            data,
            written: 0,
        };
        c.push_write(&mut self.ring, key);
        Next::Input
    }

    fn transmit_job(&mut self, key: usize, job: Job, now: Instant) -> Next {
        let c = &mut self.conns[key];
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
        Next::Input
    }

    /// Hands the session's deferred work its completer; the result comes back as a job's does
    /// (`Msg::JobDone`). A closure that panics drops the completer, which delivers a rejection.
    fn transmit_defer(&mut self, key: usize, work: Deferred) -> Next {
        let c = &mut self.conns[key];
        c.ops += 1;
        c.out = Out::Job;
        let completer = Completer::new(Arc::clone(&self.shared), self.index, token(key, c.gen));
        let run = std::panic::AssertUnwindSafe(move || work(completer));
        if std::panic::catch_unwind(run).is_err() {
            tracing::error!("a deferred transmit panicked; the session gets a rejection");
        }
        Next::Input
    }

    /// The session is done with the connection: a lingering close when nothing else is going on
    /// (true: drive again, to arm the receive that discards input), otherwise a close at once.
    /// Known gap: a multishot receive in flight counts in `ops`, so such a connection skips the
    /// lingering close.
    fn transmit_close(&mut self, key: usize, now: Instant) -> bool {
        let c = &mut self.conns[key];
        if c.peer_closed || c.ops > 0 || self.shared.is_shutting_down() {
            self.begin_close(key, now);
            return false;
        }
        c.linger(now);
        true
    }

    /// Input: first what is already buffered (pipelined requests), then the socket. True when
    /// buffered input was consumed (drive again).
    fn drive_input(&mut self, key: usize, now: Instant) -> bool {
        let c = &mut self.conns[key];
        if matches!(c.out, Out::Idle) {
            // The response is done, or waits (pacing, a log follower's poll): what the cork
            // holds leaves now. Keeping it through a pace wait saved the `setsockopt` pair per
            // piece but no CPU measurable at 6,000 viewers (2026-12-06), and a follower's last
            // bytes would wait for the kernel's 200 ms cork timer.
            c.uncork();
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

    pub(super) fn arm_input(&mut self, key: usize) {
        if !self.recv.arm(&mut self.ring, &mut self.conns[key], key) {
            self.begin_close(key, Instant::now());
        }
    }

    /// Re-arms the connection's timer; nothing for a connection `arm_input` just closed (its
    /// input buffer could not be reserved and it had nothing in flight).
    pub(super) fn update_timer(&mut self, key: usize) {
        if let Some(c) = self.conns.get_mut(key) {
            c.update_timer(key, &mut self.wheel);
        }
    }

    fn try_migrate(&mut self, key: usize) -> bool {
        let here = Here {
            index: self.index,
            roles: self.roles,
            shared: &self.shared,
        };
        migrate::try_migrate(here, &mut self.conns, &mut self.wheel, &mut self.gens, key)
    }

    /// A cold stretch: fetched into the page cache first (or waiting for a fetch), else spliced.
    pub(super) fn start_cold(
        &mut self,
        key: usize,
        file: &Arc<File>,
        offset: u64,
        len: u64,
    ) -> SendStart {
        let me = &self.shared.workers[self.index];
        let counter =
            match self
                .fetches
                .start(&mut self.ring, &mut self.conns, key, file, offset, len)
            {
                FetchStart::Joined => &me.cold_joins,
                FetchStart::Queued => &me.cold_queued,
                FetchStart::Fetching => &me.cold_fetches,
                FetchStart::Splice => return self.start_splice(key, file, offset, len),
            };
        counter.fetch_add(1, Ordering::Relaxed);
        SendStart::InFlight
    }

    fn start_splice(&mut self, key: usize, file: &Arc<File>, offset: u64, len: u64) -> SendStart {
        let started = splice::start(
            &mut self.pipes,
            &mut self.ring,
            &mut self.conns[key],
            key,
            file,
            offset,
            len,
            self.shared.pool.chunk_bytes(),
        );
        if started == SendStart::InFlight {
            self.shared.workers[self.index]
                .cold_splices
                .fetch_add(1, Ordering::Relaxed);
        }
        started
    }

    fn start_read(
        &mut self,
        key: usize,
        head: Option<Vec<u8>>,
        file: Arc<File>,
        offset: u64,
        len: u64,
    ) {
        let c = &mut self.conns[key];
        self.reads.start(
            &mut self.ring,
            &self.shared,
            c,
            key,
            head,
            file,
            offset,
            len,
        );
    }

    /// Queues a connection whose transmit is `Out::Deferred` on the deferred FIFO.
    fn defer(&mut self, key: usize) {
        let c = &mut self.conns[key];
        debug_assert!(matches!(c.out, Out::Deferred { .. }));
        self.deferred.push(key, c);
    }

    /// Makes a stretch whose block was fetched (or is in) go out at the next iteration, by
    /// `sendfile` (`Out::Deferred`, fetched: should its pages be gone, by the splice).
    pub(super) fn defer_fetched(&mut self, key: usize, file: Arc<File>, offset: u64, len: u64) {
        self.conns[key].out = Out::Deferred {
            file,
            offset,
            len,
            fetched: true,
        };
        self.defer(key);
    }

    pub(super) fn begin_close(&mut self, key: usize, now: Instant) {
        if self.conns[key].start_closing() {
            self.finish_close(key, now);
        }
    }

    fn finish_close(&mut self, key: usize, now: Instant) {
        let mut c: Conn = self.conns.remove(key);
        debug_assert_eq!(c.ops, 0);
        if let Some((slot, _)) = c.timer.take() {
            self.wheel.remove(key as u32, slot);
        }
        match std::mem::replace(&mut c.out, Out::Idle) {
            Out::Sending { chunk, .. } => self.shared.pool.give_back(chunk),
            Out::Splicing { pipe, in_pipe, .. } => self.pipes.put(pipe, in_pipe == 0),
            _ => {}
        }
        c.session.on_close(now);
        self.shared.workers[self.index]
            .conns
            .fetch_sub(1, Ordering::Relaxed);
        // Dropping `c` closes the socket and releases its reservations.
    }
}

/// Whether a body piece of `len` bytes takes the no-copy path (sendfile, cold fetch, or splice)
/// rather than a pool chunk (a read-send copies every byte twice in the server). Never with
/// direct reads: those paths read through the page cache direct reads are meant to bypass.
fn zero_copy(config: &EngineConfig, len: u64) -> bool {
    config.send_path == SendPath::ZeroCopy && !config.direct_reads && len >= SPLICE_MIN_BYTES
}

fn transmit_name(t: &Transmit) -> &'static str {
    match t {
        Transmit::Bytes(_) => "bytes",
        Transmit::File { .. } => "file",
        Transmit::FileWithHead { .. } => "head+file",
        Transmit::WaitUntil(_) => "wait",
        Transmit::Idle => "idle",
        Transmit::Open(_) => "open",
        Transmit::Create(_) => "create",
        Transmit::Write { .. } => "write",
        Transmit::Job(_) => "job",
        Transmit::Defer(_) => "defer",
        Transmit::Close => "close",
    }
}
