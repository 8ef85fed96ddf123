//! A datagram receive loop on io_uring: one thread, one ring, one UDP socket.
//!
//! [`DatagramLoop::start`] takes a bound UDP socket and a [`DatagramHandler`], and runs a small
//! loop of its own (not a worker: datagrams have no connection to drive). The loop keeps one
//! multishot RECVMSG armed on the socket, taking a buffer from a ring of provided buffers
//! (`bufring`, `buffers` of `buffer_bytes` each, allocated once) for every datagram. Each
//! completion is parsed (the kernel's `io_uring_recvmsg_out` header, the source address, the
//! control message, the payload), handed to the handler, and the buffer goes back on the ring at
//! once; the handler sees the datagrams of one wake-up in a row and then
//! [`DatagramHandler::batch_done`]. With a `batch_wait`, a loop that is receiving lets
//! datagrams gather in the socket for that long before it wakes (an idle loop sleeps until the
//! first one), so one wake-up takes several; the socket's receive buffer (`socket_recv_bytes`)
//! must hold what arrives meanwhile.
//!
//! What the loop counts ([`DatagramCounts`]): datagrams handed over; datagrams longer than a
//! buffer holds (`MSG_TRUNC`: counted, shown to [`DatagramHandler::truncated`], never handed
//! over); receive errors (counted, logged, shown to [`DatagramHandler::error`]); the times the
//! buffers ran out (the multishot receive ends with `ENOBUFS`: the datagrams wait in the socket,
//! and the receive is armed again once the batch has given its buffers back); and the datagrams
//! the kernel itself dropped for a full socket buffer (`SO_RXQ_OVFL`, as of the last datagram
//! received). So what was sent equals what was handed over, truncated and dropped.
//!
//! When the kernel refuses multishot receives (no buffer rings, or `EINVAL` before any datagram
//! came), or `multishot` is off, the loop falls back to single RECVMSGs into one buffer of its
//! own, armed again after each completion. Stopping writes an eventfd the ring polls; the loop
//! cancels its receive, waits for that receive's last completion, unregisters the buffers and
//! only then frees them. Memory the kernel may still write (a loop that failed or panicked with a
//! receive armed) is leaked, never freed.
//!
//! This module never sends: replies go out on a clone of the socket from the handler's side.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use crate::bufring::{RecvBuffers, GROUP};

const UD_RECV: u64 = 1;
const UD_STOP: u64 = 2;
const UD_CANCEL: u64 = 3;

/// The kernel's `struct io_uring_recvmsg_out` at the start of every multishot buffer.
const HEADER_BYTES: usize = 16;
/// Room for the largest source address we take (IPv6).
const NAME_BYTES: usize = std::mem::size_of::<libc::sockaddr_in6>();
/// Where a control message's data starts (`CMSG_DATA`).
const CMSG_DATA_OFFSET: usize =
    std::mem::size_of::<libc::cmsghdr>().next_multiple_of(std::mem::size_of::<usize>());
/// Room for one control message with a `u32` (`CMSG_SPACE(4)`): the `SO_RXQ_OVFL` count.
const CONTROL_BYTES: usize = (CMSG_DATA_OFFSET + 4).next_multiple_of(std::mem::size_of::<usize>());
/// `SO_RXQ_OVFL` (Linux, all but SPARC; the libc crate does not export it for glibc).
const SO_RXQ_OVFL: libc::c_int = 40;
/// Bytes of every buffer that are not payload.
pub const DATAGRAM_OVERHEAD_BYTES: usize = HEADER_BYTES + NAME_BYTES + CONTROL_BYTES;
/// Most buffers a loop may have.
pub const BUFFERS_MAX: usize = 4096;
/// Largest buffer (a UDP datagram is at most 65,507 bytes of payload).
pub const BUFFER_BYTES_MAX: usize = 65536 + DATAGRAM_OVERHEAD_BYTES;
/// Consecutive receive errors after which the loop pauses before arming again.
const ERRORS_BEFORE_PAUSE: u32 = 8;
const ERROR_PAUSE: Duration = Duration::from_millis(10);
/// The longest [`DatagramConfig::batch_wait`].
pub const BATCH_WAIT_MAX: Duration = Duration::from_millis(100);

/// How a [`DatagramLoop`] is set up.
#[derive(Clone, Debug)]
pub struct DatagramConfig {
    /// Provided buffers (a power of two, 1 to [`BUFFERS_MAX`]): the most datagrams the kernel
    /// can hand over before the loop gives buffers back.
    pub buffers: usize,
    /// Bytes per buffer; [`DatagramConfig::payload_bytes_max`] of them carry payload.
    pub buffer_bytes: usize,
    /// Use multishot receives when the kernel has them (off: single receives, re-armed).
    pub multishot: bool,
    /// The loop thread's name.
    pub thread_name: String,
    /// How long datagrams may gather before the loop wakes for them, once traffic flows (zero:
    /// wake for every completion). An idle loop still sleeps until the first datagram; a busy
    /// one then wakes at most once per `batch_wait` (or when half the buffers are full), which
    /// saves a wake-up per datagram at the price of that much latency.
    pub batch_wait: Duration,
    /// The socket's receive buffer to ask for (`SO_RCVBUF`; the kernel caps it at
    /// `net.core.rmem_max`): what holds datagrams while the loop waits or is not scheduled.
    /// Zero leaves the socket as it is.
    pub socket_recv_bytes: usize,
}

impl Default for DatagramConfig {
    /// 256 buffers of 2 KiB (512 KiB), multishot, thread `oasis-dgram`, no batch wait, the
    /// socket's receive buffer as it is.
    fn default() -> DatagramConfig {
        DatagramConfig {
            buffers: 256,
            buffer_bytes: 2048,
            multishot: true,
            thread_name: "oasis-dgram".into(),
            batch_wait: Duration::ZERO,
            socket_recv_bytes: 0,
        }
    }
}

impl DatagramConfig {
    /// The longest datagram handed over; longer ones are counted as truncated and dropped.
    pub fn payload_bytes_max(&self) -> usize {
        self.buffer_bytes.saturating_sub(DATAGRAM_OVERHEAD_BYTES)
    }

    fn check(&self) -> io::Result<()> {
        let bad = |what: String| Err(io::Error::new(io::ErrorKind::InvalidInput, what));
        if !self.buffers.is_power_of_two() || self.buffers > BUFFERS_MAX {
            return bad(format!(
                "datagram buffers = {}: use a power of two from 1 to {BUFFERS_MAX}",
                self.buffers
            ));
        }
        if self.batch_wait > BATCH_WAIT_MAX {
            return bad(format!(
                "datagram batch_wait = {:?}: use at most {BATCH_WAIT_MAX:?}",
                self.batch_wait
            ));
        }
        if self.buffer_bytes <= DATAGRAM_OVERHEAD_BYTES || self.buffer_bytes > BUFFER_BYTES_MAX {
            return bad(format!(
                "datagram buffer_bytes = {}: use {} to {BUFFER_BYTES_MAX}",
                self.buffer_bytes,
                DATAGRAM_OVERHEAD_BYTES + 1
            ));
        }
        Ok(())
    }
}

/// What a [`DatagramLoop`] does with what arrives; runs on the loop's thread.
pub trait DatagramHandler: Send + 'static {
    /// A whole datagram, and where it came from. The bytes are valid for this call only.
    fn datagram(&mut self, bytes: &[u8], from: SocketAddr);
    /// A datagram of `len` bytes that did not fit a buffer: already counted and dropped.
    fn truncated(&mut self, _from: Option<SocketAddr>, _len: usize) {}
    /// A receive failed (already counted and logged); the loop arms the next one.
    fn error(&mut self, _err: &io::Error) {}
    /// The datagrams of one wake-up have all been handed over; `counts` are the loop's counts
    /// as they now stand (e.g. to publish the kernel's drops).
    fn batch_done(&mut self, _counts: &DatagramCounts) {}
}

impl<F> DatagramHandler for F
where
    F: FnMut(&[u8], SocketAddr) + Send + 'static,
{
    fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        self(bytes, from)
    }
}

/// What a loop has counted since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatagramCounts {
    /// Datagrams handed to the handler.
    pub received: u64,
    /// Datagrams longer than a buffer's payload: counted and dropped.
    pub truncated: u64,
    /// Receive errors (and completions that could not be parsed).
    pub errors: u64,
    /// Times the provided buffers ran out (a multishot receive ended with `ENOBUFS` and was
    /// armed again); the datagrams waited in the socket meanwhile.
    pub no_buffers: u64,
    /// Datagrams the kernel dropped for a full socket receive buffer, as of the last datagram
    /// received (`SO_RXQ_OVFL`).
    pub kernel_drops: u64,
    /// Receives armed after the first one.
    pub rearms: u64,
    /// Whether multishot receives are in use (false after a fallback).
    pub multishot: bool,
}

/// The counts kept in [`Counters`], in [`DatagramCounts`]' field order.
#[derive(Clone, Copy)]
enum Count {
    Received,
    Truncated,
    Errors,
    NoBuffers,
    KernelDrops,
    Rearms,
}

#[derive(Default)]
struct Counters {
    counts: [AtomicU64; 6],
    multishot: AtomicBool,
}

impl Counters {
    fn snapshot(&self) -> DatagramCounts {
        let [received, truncated, errors, no_buffers, kernel_drops, rearms] =
            self.counts.each_ref().map(|c| c.load(Ordering::Relaxed));
        DatagramCounts {
            received,
            truncated,
            errors,
            no_buffers,
            kernel_drops,
            rearms,
            multishot: self.multishot.load(Ordering::Relaxed),
        }
    }

    /// Counts one; returns the new total.
    fn add(&self, which: Count) -> u64 {
        self.counts[which as usize].fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Raises a count to `v` (a total the kernel keeps).
    fn raise(&self, which: Count, v: u64) {
        self.counts[which as usize].fetch_max(v, Ordering::Relaxed);
    }
}

/// A running datagram loop. Dropping it stops it, as [`DatagramLoop::stop`] does.
pub struct DatagramLoop {
    local_addr: SocketAddr,
    stop_fd: Arc<OwnedFd>,
    counters: Arc<Counters>,
    thread: Option<JoinHandle<()>>,
}

impl DatagramLoop {
    /// Starts the loop's thread on `socket` (bound; blocking or not) and returns once its ring
    /// and buffers are set up, or with the reason they could not be.
    pub fn start<H: DatagramHandler>(
        socket: UdpSocket,
        cfg: DatagramConfig,
        handler: H,
    ) -> io::Result<DatagramLoop> {
        cfg.check()?;
        let local_addr = socket.local_addr()?;
        enable_drop_counts(&socket)?;
        if cfg.socket_recv_bytes > 0 {
            socket2::SockRef::from(&socket).set_recv_buffer_size(cfg.socket_recv_bytes)?;
        }
        let stop_fd = Arc::new(rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?);
        let counters = Arc::new(Counters::default());
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let thread = {
            let (stop_fd, counters) = (Arc::clone(&stop_fd), Arc::clone(&counters));
            std::thread::Builder::new()
                .name(cfg.thread_name.clone())
                .spawn(move || {
                    let mut handler = handler;
                    match Loop::new(socket, &cfg, counters, stop_fd) {
                        Ok(mut lp) => {
                            let _ = ready_tx.send(Ok(()));
                            lp.run(&mut handler);
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                        }
                    }
                })?
        };
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(DatagramLoop {
                local_addr,
                stop_fd,
                counters,
                thread: Some(thread),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(io::Error::other(
                    "the datagram loop's thread died while starting",
                ))
            }
        }
    }

    /// The socket's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// What the loop has counted so far.
    pub fn counts(&self) -> DatagramCounts {
        self.counters.snapshot()
    }

    /// Stops the loop, waits for its thread, and returns the final counts.
    pub fn stop(mut self) -> DatagramCounts {
        self.shut();
        self.counters.snapshot()
    }

    fn shut(&mut self) {
        let Some(thread) = self.thread.take() else {
            return;
        };
        if let Err(e) = rustix::io::write(self.stop_fd.as_fd(), &1u64.to_ne_bytes()) {
            tracing::warn!("datagram loop: cannot signal the stop ({e})");
        }
        if thread.join().is_err() {
            tracing::warn!("datagram loop: its thread panicked (a handler bug)");
        }
    }
}

impl Drop for DatagramLoop {
    fn drop(&mut self) {
        self.shut();
    }
}

/// Asks the kernel to report its drop count with every datagram.
fn enable_drop_counts(socket: &UdpSocket) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: passes a live c_int and its size; the descriptor is the socket's, open for the call.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_RXQ_OVFL,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The message headers and the single-receive buffer; boxed, so the kernel's pointers into it
/// stay valid however `Loop` moves.
struct Slots {
    /// For multishot: only the name and control lengths count.
    multi: libc::msghdr,
    /// For single receives: points at `iov`, `name` and `control` below.
    single: libc::msghdr,
    iov: libc::iovec,
    name: [u8; NAME_BYTES],
    control: [u8; CONTROL_BYTES],
    payload: Box<[u8]>,
}

impl Slots {
    fn new(payload_bytes: usize) -> Box<Slots> {
        // SAFETY: `msghdr` is plain data (pointers and lengths): all zeroes is a valid value.
        let zero: libc::msghdr = unsafe { std::mem::zeroed() };
        let mut s = Box::new(Slots {
            multi: zero,
            single: zero,
            iov: libc::iovec {
                iov_base: std::ptr::null_mut(),
                iov_len: 0,
            },
            name: [0; NAME_BYTES],
            control: [0; CONTROL_BYTES],
            payload: vec![0; payload_bytes].into_boxed_slice(),
        });
        s.multi.msg_namelen = NAME_BYTES as libc::socklen_t;
        s.multi.msg_controllen = CONTROL_BYTES as _;
        s.iov.iov_base = s.payload.as_mut_ptr().cast();
        s.iov.iov_len = s.payload.len();
        s.single.msg_iov = &mut s.iov;
        s.single.msg_iovlen = 1;
        s.single.msg_name = s.name.as_mut_ptr().cast();
        s.single.msg_control = s.control.as_mut_ptr().cast();
        s
    }

    /// Resets what a single receive's completion writes back.
    fn reset_single(&mut self) {
        self.name = [0; NAME_BYTES];
        self.control = [0; CONTROL_BYTES];
        self.single.msg_namelen = NAME_BYTES as libc::socklen_t;
        self.single.msg_controllen = CONTROL_BYTES as _;
        self.single.msg_flags = 0;
    }
}

/// The loop's state, on its own thread.
struct Loop {
    ring: IoUring,
    socket: UdpSocket,
    stop_fd: Arc<OwnedFd>,
    /// Present while multishot receives are in use.
    bufs: Option<RecvBuffers>,
    /// `None` only once leaked (a receive may still write into it).
    slots: Option<Box<Slots>>,
    counters: Arc<Counters>,
    cqes: Vec<(u64, i32, u32)>,
    recv_armed: bool,
    stopping: bool,
    /// Whether any datagram came yet (an `EINVAL` before that means: no multishot here).
    got_any: bool,
    errors_in_row: u32,
    /// `batch_wait` as the kernel takes it, and how many completions end a gathering early.
    gather_wait: Option<types::Timespec>,
    gather_max: usize,
    /// Whether the last wake-up brought datagrams (then the next wait gathers).
    busy: bool,
}

impl Loop {
    fn new(
        socket: UdpSocket,
        cfg: &DatagramConfig,
        counters: Arc<Counters>,
        stop_fd: Arc<OwnedFd>,
    ) -> io::Result<Loop> {
        let cq = (cfg.buffers as u32 * 2).max(64);
        let ring = {
            let mut b = IoUring::builder();
            b.setup_single_issuer()
                .setup_defer_taskrun()
                .setup_coop_taskrun()
                .setup_cqsize(cq);
            match b.build(8) {
                Ok(r) => r,
                Err(_) => IoUring::builder().setup_cqsize(cq).build(8)?,
            }
        };
        let bufs = if cfg.multishot {
            match RecvBuffers::register(&ring, cfg.buffers, cfg.buffer_bytes) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!(
                        "datagram loop: no provided buffer ring ({e}); single receives instead"
                    );
                    None
                }
            }
        } else {
            None
        };
        counters.multishot.store(bufs.is_some(), Ordering::Relaxed);
        Ok(Loop {
            ring,
            socket,
            stop_fd,
            bufs,
            slots: Some(Slots::new(cfg.payload_bytes_max())),
            counters,
            cqes: Vec::with_capacity(cq as usize),
            recv_armed: false,
            stopping: false,
            got_any: false,
            errors_in_row: 0,
            gather_wait: (!cfg.batch_wait.is_zero()).then(|| {
                types::Timespec::new()
                    .sec(cfg.batch_wait.as_secs())
                    .nsec(cfg.batch_wait.subsec_nanos())
            }),
            gather_max: (cfg.buffers / 2).max(1),
            busy: false,
        })
    }

    /// Queues `e`, submitting to make room when the queue is full.
    fn push(&mut self, e: squeue::Entry) {
        loop {
            // SAFETY: every entry this module builds names only the socket and the stop eventfd
            // (both owned by `self`), the headers and buffer in `self.slots` (boxed, never moved
            // or touched while a receive is armed) and the provided buffers in `self.bufs`. None
            // of them is freed until the receive's last completion has been seen (`Drop` leaks
            // them otherwise), and the ring goes before the descriptors.
            if unsafe { self.ring.submission().push(&e) }.is_ok() {
                return;
            }
            let _ = self.ring.submit();
        }
    }

    fn arm_recv(&mut self) {
        let fd = types::Fd(self.socket.as_raw_fd());
        let Some(slots) = self.slots.as_mut() else {
            return;
        };
        let e = if self.bufs.is_some() {
            // MSG_TRUNC: the header then gives a truncated datagram's real length.
            opcode::RecvMsgMulti::new(fd, &slots.multi, GROUP)
                .flags(libc::MSG_TRUNC as u32)
                .build()
        } else {
            slots.reset_single();
            opcode::RecvMsg::new(fd, &mut slots.single)
                .flags(libc::MSG_TRUNC as u32)
                .build()
        };
        self.recv_armed = true;
        self.push(e.user_data(UD_RECV));
    }

    fn run(&mut self, h: &mut dyn DatagramHandler) {
        let stop = opcode::PollAdd::new(types::Fd(self.stop_fd.as_raw_fd()), libc::POLLIN as u32)
            .build()
            .user_data(UD_STOP);
        self.push(stop);
        self.arm_recv();
        while self.recv_armed || !self.stopping {
            match self.wait() {
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EBUSY | libc::ETIME)
                    ) => {}
                Err(e) => {
                    self.counters.add(Count::Errors);
                    tracing::error!("datagram loop: io_uring_enter failed ({e}); stopping");
                    h.error(&e);
                    return;
                }
            }
            let mut cqes = std::mem::take(&mut self.cqes);
            cqes.extend(
                self.ring
                    .completion()
                    .map(|c| (c.user_data(), c.result(), c.flags())),
            );
            self.busy = cqes.iter().any(|c| c.0 == UD_RECV);
            for &(ud, res, flags) in &cqes {
                match ud {
                    UD_RECV => self.on_recv(res, flags, h),
                    UD_STOP => self.begin_stop(),
                    _ => {} // UD_CANCEL: the receive's own completion says it ended.
                }
            }
            cqes.clear();
            self.cqes = cqes;
            h.batch_done(&self.counters.snapshot());
            if !self.recv_armed && !self.stopping {
                if self.errors_in_row >= ERRORS_BEFORE_PAUSE {
                    std::thread::sleep(ERROR_PAUSE);
                }
                self.counters.add(Count::Rearms);
                self.arm_recv();
            }
        }
    }

    /// Submits and waits: for one completion, or, while datagrams flow and a batch wait is set,
    /// for `gather_max` completions or the batch wait, whichever comes first.
    fn wait(&mut self) -> io::Result<usize> {
        match (&self.gather_wait, self.busy && !self.stopping) {
            (Some(ts), true) => {
                let args = types::SubmitArgs::new().timespec(ts);
                self.ring
                    .submitter()
                    .submit_with_args(self.gather_max, &args)
            }
            _ => self.ring.submit_and_wait(1),
        }
    }

    fn begin_stop(&mut self) {
        if self.stopping {
            return;
        }
        self.stopping = true;
        if self.recv_armed {
            let e = opcode::AsyncCancel::new(UD_RECV)
                .build()
                .user_data(UD_CANCEL);
            self.push(e);
        }
    }

    fn on_recv(&mut self, res: i32, flags: u32, h: &mut dyn DatagramHandler) {
        if self.bufs.is_none() || !cqueue::more(flags) {
            self.recv_armed = false;
        }
        if res < 0 {
            self.on_error(res, h);
            return;
        }
        let Some(slots) = self.slots.as_ref() else {
            return;
        };
        let taken = match (self.bufs.as_mut(), cqueue::buffer_select(flags)) {
            (Some(bufs), Some(bid)) => {
                let got = take_multishot(bufs.bytes(bid, res as usize), &slots.multi);
                let taken = deliver(got, &self.counters, h);
                bufs.give_back(bid);
                taken
            }
            (None, None) => {
                let got = take_single(slots, res as usize);
                deliver(got, &self.counters, h)
            }
            _ => deliver(Err(()), &self.counters, h),
        };
        if taken {
            self.got_any = true;
            self.errors_in_row = 0;
        }
    }

    fn on_error(&mut self, res: i32, h: &mut dyn DatagramHandler) {
        match -res {
            libc::ECANCELED => {}
            libc::ENOBUFS if self.bufs.is_some() => {
                self.counters.add(Count::NoBuffers);
            }
            libc::EINVAL if self.bufs.is_some() && !self.got_any => {
                tracing::warn!(
                    "datagram loop: multishot receives refused (EINVAL); single receives instead"
                );
                if let Some(bufs) = self.bufs.take() {
                    bufs.teardown(&self.ring);
                }
                self.counters.multishot.store(false, Ordering::Relaxed);
            }
            errno => {
                let err = io::Error::from_raw_os_error(errno);
                let n = self.counters.add(Count::Errors);
                self.errors_in_row = self.errors_in_row.saturating_add(1);
                if n <= 10 || n.is_power_of_two() {
                    tracing::warn!("datagram loop: receive failed ({err}; {n} so far)");
                }
                h.error(&err);
            }
        }
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        if self.recv_armed {
            // The kernel may still write into the headers and buffers: leak them (`bufs`, never
            // torn down, leaks by itself: `RecvBuffers` has no `Drop`).
            std::mem::forget(self.slots.take());
        } else if let Some(bufs) = self.bufs.take() {
            bufs.teardown(&self.ring);
        }
    }
}

/// A received datagram: payload, source, the kernel's drop count; or truncated (its real
/// length, its source when known); `Err` when the completion made no sense.
enum Got<'a> {
    Whole(&'a [u8], Option<SocketAddr>, Option<u32>),
    Truncated(usize, Option<SocketAddr>),
}

fn take_multishot<'a>(buf: &'a [u8], hdr: &libc::msghdr) -> Result<Got<'a>, ()> {
    let out = types::RecvMsgOut::parse(buf, hdr)?;
    let from = sockaddr_from_bytes(out.name_data());
    if out.is_payload_truncated() {
        return Ok(Got::Truncated(out.incoming_payload_len() as usize, from));
    }
    // The payload follows the header, the name and the control fields (as `parse` found it);
    // sliced from `buf` itself so it outlives `out`.
    let start = HEADER_BYTES + NAME_BYTES + CONTROL_BYTES;
    let payload = buf.get(start..start + out.payload_data().len()).ok_or(())?;
    Ok(Got::Whole(payload, from, drop_count(out.control_data())))
}

fn take_single(slots: &Slots, len: usize) -> Result<Got<'_>, ()> {
    let from = sockaddr_from_bytes(&slots.name);
    if len > slots.payload.len() || slots.single.msg_flags & libc::MSG_TRUNC != 0 {
        return Ok(Got::Truncated(len, from));
    }
    // `control` was zeroed before the receive: no message there reads as none.
    Ok(Got::Whole(
        &slots.payload[..len],
        from,
        drop_count(&slots.control),
    ))
}

/// Counts and hands over what a completion held; true when a datagram was handed over.
fn deliver(got: Result<Got<'_>, ()>, c: &Counters, h: &mut dyn DatagramHandler) -> bool {
    match got {
        Ok(Got::Whole(bytes, Some(from), drops)) => {
            if let Some(d) = drops {
                c.raise(Count::KernelDrops, u64::from(d));
            }
            c.add(Count::Received);
            h.datagram(bytes, from);
            true
        }
        Ok(Got::Truncated(len, from)) => {
            c.add(Count::Truncated);
            h.truncated(from, len);
            false
        }
        Ok(Got::Whole(_, None, _)) | Err(()) => {
            let n = c.add(Count::Errors);
            if n <= 10 || n.is_power_of_two() {
                tracing::warn!(
                    "datagram loop: a completion without a readable source or header ({n} so far)"
                );
            }
            h.error(&io::Error::new(
                io::ErrorKind::InvalidData,
                "a received datagram without a readable source address or header",
            ));
            false
        }
    }
}

/// Reads a `sockaddr_in` or `sockaddr_in6` the kernel wrote.
pub(crate) fn sockaddr_from_bytes(b: &[u8]) -> Option<SocketAddr> {
    let family = i32::from(u16::from_ne_bytes([*b.first()?, *b.get(1)?]));
    let port = u16::from_be_bytes([*b.get(2)?, *b.get(3)?]);
    match family {
        libc::AF_INET => {
            let ip: [u8; 4] = b.get(4..8)?.try_into().ok()?;
            Some(SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::from(ip), port)))
        }
        libc::AF_INET6 => {
            let flow = u32::from_be_bytes(b.get(4..8)?.try_into().ok()?);
            let ip: [u8; 16] = b.get(8..24)?.try_into().ok()?;
            let scope = u32::from_ne_bytes(b.get(24..28)?.try_into().ok()?);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flow,
                scope,
            )))
        }
        _ => None,
    }
}

/// The `SO_RXQ_OVFL` count in a control buffer holding at most that one message.
pub(crate) fn drop_count(control: &[u8]) -> Option<u32> {
    let int = |at: usize| -> Option<libc::c_int> {
        Some(libc::c_int::from_ne_bytes(
            control.get(at..at + 4)?.try_into().ok()?,
        ))
    };
    let level = int(std::mem::offset_of!(libc::cmsghdr, cmsg_level))?;
    let kind = int(std::mem::offset_of!(libc::cmsghdr, cmsg_type))?;
    if level != libc::SOL_SOCKET || kind != SO_RXQ_OVFL {
        return None;
    }
    let data = control.get(CMSG_DATA_OFFSET..CMSG_DATA_OFFSET + 4)?;
    Some(u32::from_ne_bytes(data.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn source_addresses_read_from_kernel_bytes() {
        let mut v4 = [0u8; NAME_BYTES];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&7470u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[10, 1, 2, 3]);
        assert_eq!(
            sockaddr_from_bytes(&v4),
            Some("10.1.2.3:7470".parse().unwrap())
        );
        let mut v6 = [0u8; NAME_BYTES];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        v6[8..24].copy_from_slice(&"fe80::1".parse::<Ipv6Addr>().unwrap().octets());
        v6[24..28].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(
            sockaddr_from_bytes(&v6),
            Some("[fe80::1%3]:443".parse().unwrap())
        );
        assert_eq!(sockaddr_from_bytes(&[0u8; NAME_BYTES]), None, "no family");
        assert_eq!(sockaddr_from_bytes(&v6[..20]), None, "cut short");
    }

    #[test]
    fn drop_counts_read_from_a_control_message() {
        let mut c = [0u8; CONTROL_BYTES];
        assert_eq!(drop_count(&c), None, "no message");
        let at = |f: usize| f..f + 4;
        c[at(std::mem::offset_of!(libc::cmsghdr, cmsg_level))]
            .copy_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
        c[at(std::mem::offset_of!(libc::cmsghdr, cmsg_type))]
            .copy_from_slice(&SO_RXQ_OVFL.to_ne_bytes());
        c[at(CMSG_DATA_OFFSET)].copy_from_slice(&1234u32.to_ne_bytes());
        assert_eq!(drop_count(&c), Some(1234));
        assert_eq!(drop_count(&c[..CMSG_DATA_OFFSET]), None, "cut short");
    }

    #[test]
    fn configs_are_checked() {
        assert!(DatagramConfig::default().check().is_ok());
        assert_eq!(DatagramConfig::default().payload_bytes_max(), 2048 - 68);
        let with = |buffers, buffer_bytes| DatagramConfig {
            buffers,
            buffer_bytes,
            ..DatagramConfig::default()
        };
        assert!(with(3, 2048).check().is_err(), "not a power of two");
        assert!(with(0, 2048).check().is_err());
        assert!(with(8192, 2048).check().is_err());
        assert!(
            with(4, DATAGRAM_OVERHEAD_BYTES).check().is_err(),
            "no payload room"
        );
        assert!(with(4, BUFFER_BYTES_MAX + 1).check().is_err());
        let slow = DatagramConfig {
            batch_wait: BATCH_WAIT_MAX + Duration::from_millis(1),
            ..DatagramConfig::default()
        };
        assert!(slow.check().is_err(), "batch wait over the bound");
    }
}
