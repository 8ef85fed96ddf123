//! The client engine: one epoll loop per thread driving its share of keep-alive connections.
//!
//! Each connection loops: connect, send a GET, read the response through the sans-IO parser,
//! record time to first byte and full-response time, then send the next GET. In paced mode a
//! connection is a stream that behaves like a player with a bounded buffer (it waits before the
//! next request when it is far enough ahead of its bitrate) and is checked for stalls.
//! A thread never blocks except in `epoll_wait`, and never runs past the run's deadline.

use crate::http::ResponseParser;
use crate::stats::{record, Stats};
use crate::sys;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Read buffer per thread; responses are counted, never stored.
const READ_BUF_BYTES: usize = 256 * 1024;
/// Reads per connection per turn, so one fast connection cannot starve the others.
const READS_PER_EVENT_MAX: u32 = 4;
/// How often timeouts, reconnects, pacing and stream windows are checked.
const TICK: Duration = Duration::from_millis(20);
/// Pause before reconnecting after a failed connect, so a dead server is not spun on.
const RECONNECT_BACKOFF: Duration = Duration::from_millis(100);

/// Where to send requests: one loopback server, prebuilt request bytes per URL.
#[derive(Debug)]
pub struct Target {
    pub dest: SocketAddrV4,
    pub sources: Vec<Ipv4Addr>,
    pub requests: Vec<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    RoundRobin,
    Random,
}

#[derive(Debug, Clone, Copy)]
pub struct PacedCfg {
    pub rate_bps: u64,
    /// A window below this share of the target rate is a stall.
    pub stall_ratio: f64,
    pub window: Duration,
    /// No byte for this long while a request is outstanding is a stall.
    pub gap: Duration,
    /// Player buffer: the stream stops requesting when this far ahead of its bitrate.
    pub buffer: Duration,
    pub start_streams: usize,
    pub step_streams: usize,
    pub step: Duration,
    pub max_streams: usize,
}

impl PacedCfg {
    /// Streams that should be running `elapsed` after the start.
    pub fn streams_at(&self, elapsed: Duration) -> usize {
        let step_idx = (elapsed.as_secs_f64() / self.step.as_secs_f64()).floor() as usize;
        self.streams_at_step(step_idx)
    }

    pub fn streams_at_step(&self, step_idx: usize) -> usize {
        (self.start_streams + self.step_streams * step_idx).min(self.max_streams)
    }
}

/// The first stall seen by any thread.
#[derive(Debug, Clone, Copy)]
pub struct StallEvent {
    pub kind: &'static str,
    pub at: Duration,
    /// Start of the evidence (the window or the gap) that showed the stall.
    pub evidence_from: Duration,
    pub streams_running: usize,
}

/// State shared by all threads of one run.
#[derive(Debug)]
pub struct Shared {
    pub start: Instant,
    pub deadline: Instant,
    /// Requests left to issue when the run is bounded by a count.
    pub budget: Option<AtomicU64>,
    pub stop: AtomicBool,
    pub stall: Mutex<Option<StallEvent>>,
    pub conn_seq: AtomicU64,
}

impl Shared {
    pub fn new(start: Instant, duration: Duration, requests: Option<u64>) -> Self {
        Self {
            start,
            deadline: start + duration,
            budget: requests.map(AtomicU64::new),
            stop: AtomicBool::new(false),
            stall: Mutex::new(None),
            conn_seq: AtomicU64::new(0),
        }
    }

    fn claim_request(&self) -> bool {
        match &self.budget {
            None => true,
            Some(b) => b
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |r| r.checked_sub(1))
                .is_ok(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct WorkerCfg {
    pub thread_idx: usize,
    pub threads: usize,
    /// Get mode: connections this thread keeps busy.
    pub connections: usize,
    pub order: Order,
    pub seed: u64,
    pub timeout: Duration,
    pub paced: Option<PacedCfg>,
    /// Body bytes are dropped in the kernel, never copied out (`--discard-body`).
    pub discard_body: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Connecting,
    Sending {
        off: usize,
    },
    Awaiting,
    Receiving,
    /// Paced: ahead of the bitrate by a full buffer; no request outstanding.
    Waiting,
    Closed {
        reconnect_at: Instant,
    },
    Finished,
}

#[derive(Debug)]
struct Stream {
    first_byte: Option<Instant>,
    bytes: u64,
    last_byte: Instant,
    win_start: Instant,
    win_bytes_start: u64,
    win_waited: bool,
}

#[derive(Debug)]
struct Conn {
    fd: Option<OwnedFd>,
    gen: u32,
    phase: Phase,
    req_idx: usize,
    sent_at: Instant,
    first_byte_seen: bool,
    last_progress: Instant,
    parser: ResponseParser,
    stream: Option<Stream>,
}

struct Worker<'a> {
    cfg: WorkerCfg,
    target: &'a Target,
    shared: &'a Shared,
    epoll: sys::Epoll,
    conns: Vec<Conn>,
    stats: Stats,
    buf: Vec<u8>,
    rng: u64,
    rr_next: usize,
    /// Connections that hit the per-turn read cap and still have data (slot, generation).
    backlog: Vec<(usize, u32)>,
}

/// Bytes one read brought: copied out, or dropped in the kernel (`--discard-body`).
#[derive(Debug, Clone, Copy)]
enum Chunk<'a> {
    Bytes(&'a [u8]),
    Dropped(usize),
}

impl Chunk<'_> {
    fn len(&self) -> usize {
        match self {
            Chunk::Bytes(b) => b.len(),
            Chunk::Dropped(n) => *n,
        }
    }
}

fn io_kind(e: &io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(libc::ECONNREFUSED) => "refused",
        Some(libc::ECONNRESET) => "reset",
        Some(libc::EPIPE) => "broken_pipe",
        Some(libc::EADDRNOTAVAIL) => "addr_not_available",
        Some(libc::EMFILE) | Some(libc::ENFILE) => "too_many_open_files",
        Some(libc::ETIMEDOUT) => "timed_out",
        _ => "io_other",
    }
}

/// Runs one client thread until the deadline, the stop flag, or (count-bounded) until its
/// connections have no more requests to issue.
pub fn run_worker(cfg: WorkerCfg, target: &Target, shared: &Shared) -> io::Result<Stats> {
    let mut w = Worker {
        rng: cfg.seed ^ (0x9E37_79B9_7F4A_7C15u64.wrapping_mul(cfg.thread_idx as u64 + 1)) | 1,
        rr_next: cfg.thread_idx,
        cfg,
        target,
        shared,
        epoll: sys::Epoll::new()?,
        conns: Vec::new(),
        stats: Stats::default(),
        buf: vec![0u8; READ_BUF_BYTES],
        backlog: Vec::new(),
    };
    w.run()?;
    Ok(w.stats)
}

impl Worker<'_> {
    fn run(&mut self) -> io::Result<()> {
        let now = Instant::now();
        if self.cfg.paced.is_none() {
            for _ in 0..self.cfg.connections {
                self.add_conn(now);
            }
        }
        let mut events: Vec<libc::epoll_event> = Vec::with_capacity(1024);
        let mut next_tick = now;
        loop {
            let now = Instant::now();
            if self.shared.stop.load(Ordering::Relaxed) || now >= self.shared.deadline {
                break;
            }
            if now >= next_tick {
                self.tick(now);
                next_tick = now + TICK;
                if self.shared.budget.is_some()
                    && !self.conns.is_empty()
                    && self.conns.iter().all(|c| c.phase == Phase::Finished)
                {
                    break;
                }
            }
            let timeout_ms = if self.backlog.is_empty() { 10 } else { 0 };
            self.epoll.wait(&mut events, timeout_ms)?;
            for ev in events.iter().copied() {
                let token = ev.u64;
                let slot = (token & 0xFFFF_FFFF) as usize;
                let gen = (token >> 32) as u32;
                if self.conns.get(slot).map(|c| c.gen) != Some(gen) || self.conns[slot].fd.is_none()
                {
                    continue;
                }
                self.on_event(slot, ev.events, Instant::now());
            }
            let backlog = std::mem::take(&mut self.backlog);
            for (slot, gen) in backlog {
                if self.conns[slot].gen == gen && self.conns[slot].fd.is_some() {
                    let now = Instant::now();
                    if self.read_ready(slot, now) {
                        self.backlog.push((slot, gen));
                    }
                }
            }
        }
        self.finish(Instant::now());
        Ok(())
    }

    fn finish(&mut self, now: Instant) {
        for c in &mut self.conns {
            if matches!(
                c.phase,
                Phase::Sending { .. } | Phase::Awaiting | Phase::Receiving
            ) {
                self.stats.abandoned_at_end += 1;
            }
            if let Some(s) = &c.stream {
                if let Some(first) = s.first_byte {
                    let secs = now.duration_since(first).as_secs_f64();
                    if secs >= 1.0 {
                        let kbps = (s.bytes as f64 * 8.0 / secs / 1000.0) as u64;
                        record(&mut self.stats.stream_rate_kbps, kbps.max(1));
                    }
                }
            }
            c.fd = None;
        }
    }

    fn add_conn(&mut self, now: Instant) {
        let stream = self.cfg.paced.map(|_| Stream {
            first_byte: None,
            bytes: 0,
            last_byte: now,
            win_start: now,
            win_bytes_start: 0,
            win_waited: false,
        });
        self.conns.push(Conn {
            fd: None,
            gen: 0,
            phase: Phase::Closed { reconnect_at: now },
            req_idx: 0,
            sent_at: now,
            first_byte_seen: false,
            last_progress: now,
            parser: ResponseParser::new(),
            stream,
        });
        let slot = self.conns.len() - 1;
        self.open(slot, now);
    }

    fn open(&mut self, slot: usize, now: Instant) {
        let seq = self.shared.conn_seq.fetch_add(1, Ordering::Relaxed) as usize;
        let src = if self.target.sources.is_empty() {
            None
        } else {
            Some(self.target.sources[seq % self.target.sources.len()])
        };
        let c = &mut self.conns[slot];
        c.gen = c.gen.wrapping_add(1);
        c.last_progress = now;
        match sys::connect_nonblocking(src, self.target.dest) {
            Ok(fd) => {
                let token = (u64::from(c.gen) << 32) | slot as u64;
                if let Err(e) = self.epoll.add(fd.as_raw_fd(), token) {
                    self.stats.error(io_kind(&e));
                    c.phase = Phase::Closed {
                        reconnect_at: now + RECONNECT_BACKOFF,
                    };
                    return;
                }
                c.fd = Some(fd);
                c.phase = Phase::Connecting;
            }
            Err(e) => {
                self.stats.error(match io_kind(&e) {
                    "io_other" => "connect_other",
                    k => k,
                });
                c.phase = Phase::Closed {
                    reconnect_at: now + RECONNECT_BACKOFF,
                };
            }
        }
    }

    fn fail(&mut self, slot: usize, kind: &'static str, now: Instant) {
        self.stats.error(kind);
        let c = &mut self.conns[slot];
        c.fd = None;
        let backoff = if c.phase == Phase::Connecting {
            RECONNECT_BACKOFF
        } else {
            Duration::ZERO
        };
        c.phase = Phase::Closed {
            reconnect_at: now + backoff,
        };
    }

    fn on_event(&mut self, slot: usize, events: u32, now: Instant) {
        if self.conns[slot].phase == Phase::Connecting {
            if events & (sys::EV_OUT | sys::EV_ERR | sys::EV_HUP) == 0 {
                return;
            }
            let fd = self.conns[slot].fd.as_ref().map(|f| f.as_raw_fd());
            match fd.map(sys::take_socket_error) {
                Some(Ok(())) => {
                    self.stats.connects += 1;
                    self.next_request(slot, now);
                }
                Some(Err(e)) => {
                    let kind = match io_kind(&e) {
                        "io_other" => "connect_other",
                        k => k,
                    };
                    self.fail(slot, kind, now);
                    return;
                }
                None => return,
            }
        }
        if events & sys::EV_OUT != 0 {
            if let Phase::Sending { .. } = self.conns[slot].phase {
                self.continue_send(slot, now);
            }
        }
        if events & (sys::EV_IN | sys::EV_RDHUP | sys::EV_HUP | sys::EV_ERR) != 0
            && self.read_ready(slot, now)
        {
            self.backlog.push((slot, self.conns[slot].gen));
        }
    }

    /// Issues the next request on a connected socket, or parks/finishes the connection.
    fn next_request(&mut self, slot: usize, now: Instant) {
        if let Some(p) = self.cfg.paced {
            let c = &mut self.conns[slot];
            if let Some(s) = &mut c.stream {
                if is_ahead(s, &p, now) {
                    c.phase = Phase::Waiting;
                    s.win_waited = true;
                    return;
                }
            }
        }
        if now >= self.shared.deadline || !self.shared.claim_request() {
            let c = &mut self.conns[slot];
            c.phase = Phase::Finished;
            c.fd = None;
            return;
        }
        let n = self.target.requests.len();
        let idx = match self.cfg.order {
            Order::RoundRobin => {
                let i = self.rr_next % n;
                self.rr_next = self.rr_next.wrapping_add(1);
                i
            }
            Order::Random => (self.next_rand() % n as u64) as usize,
        };
        let now = Instant::now();
        let c = &mut self.conns[slot];
        c.req_idx = idx;
        c.parser.reset();
        c.first_byte_seen = false;
        c.sent_at = now;
        c.last_progress = now;
        c.phase = Phase::Sending { off: 0 };
        self.continue_send(slot, now);
    }

    fn continue_send(&mut self, slot: usize, now: Instant) {
        loop {
            let c = &mut self.conns[slot];
            let Phase::Sending { off } = c.phase else {
                return;
            };
            let Some(fd) = c.fd.as_ref().map(|f| f.as_raw_fd()) else {
                return;
            };
            let req = &self.target.requests[c.req_idx];
            match sys::send(fd, &req[off..]) {
                Ok(n) => {
                    let off = off + n;
                    c.last_progress = now;
                    c.phase = if off == req.len() {
                        Phase::Awaiting
                    } else {
                        Phase::Sending { off }
                    };
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = io_kind(&e);
                    self.fail(slot, kind, now);
                    return;
                }
            }
        }
    }

    /// Reads until the socket is drained or the per-turn cap is hit; returns true when the
    /// socket may still hold data (edge-triggered: the caller must come back to it).
    fn read_ready(&mut self, slot: usize, now: Instant) -> bool {
        let mut buf = std::mem::take(&mut self.buf);
        let mut reads = 0;
        let mut still_readable = false;
        while let Some(fd) = self.conns[slot].fd.as_ref().map(|f| f.as_raw_fd()) {
            // Mid-body, `--discard-body` drops the bytes in the kernel; heads are always read.
            let skip = match self.conns[slot].parser.remaining() {
                r if self.cfg.discard_body && r > 0 => Some(r),
                _ => None,
            };
            let got = match skip {
                Some(r) => {
                    sys::recv_discard(fd, &mut buf, usize::try_from(r).unwrap_or(usize::MAX))
                }
                None => sys::read(fd, &mut buf),
            };
            match got {
                Ok(0) => {
                    self.on_eof(slot, now);
                    break;
                }
                Ok(n) => {
                    reads += 1;
                    let chunk = match skip {
                        Some(_) => Chunk::Dropped(n),
                        None => Chunk::Bytes(&buf[..n]),
                    };
                    if !self.on_data(slot, chunk, Instant::now()) {
                        break;
                    }
                    if reads >= READS_PER_EVENT_MAX {
                        // Come back after the other connections had their turn.
                        still_readable = true;
                        break;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let kind = io_kind(&e);
                    self.fail(slot, kind, now);
                    break;
                }
            }
        }
        self.buf = buf;
        still_readable
    }

    fn on_eof(&mut self, slot: usize, now: Instant) {
        let c = &self.conns[slot];
        match c.phase {
            Phase::Receiving => self.fail(slot, "short_response", now),
            Phase::Sending { .. } | Phase::Awaiting => {
                let kind = if c.parser.started() {
                    "short_response"
                } else {
                    "closed_before_response"
                };
                self.fail(slot, kind, now);
            }
            Phase::Waiting => self.fail(slot, "closed_while_idle", now),
            _ => {
                let c = &mut self.conns[slot];
                c.fd = None;
                c.phase = Phase::Closed { reconnect_at: now };
            }
        }
    }

    /// Handles received bytes; returns false when the connection was closed or moved on.
    fn on_data(&mut self, slot: usize, data: Chunk, now: Instant) -> bool {
        let len = data.len();
        self.stats.bytes_received += len as u64;
        let c = &mut self.conns[slot];
        c.last_progress = now;
        if let Some(s) = &mut c.stream {
            if s.first_byte.is_none() {
                s.first_byte = Some(now);
                s.win_start = now;
                s.win_bytes_start = 0;
            }
            s.bytes += len as u64;
            s.last_byte = now;
        }
        match c.phase {
            Phase::Sending { .. } | Phase::Awaiting | Phase::Receiving => {}
            _ => {
                self.fail(slot, "unexpected_data", now);
                return false;
            }
        }
        if !c.first_byte_seen {
            c.first_byte_seen = true;
            c.phase = Phase::Receiving;
            let us = now.duration_since(c.sent_at).as_micros() as u64;
            record(&mut self.stats.ttfb_us, us);
        }
        let fed = match data {
            Chunk::Bytes(bytes) => c.parser.feed(bytes),
            Chunk::Dropped(n) => Ok(c.parser.skip_body(n as u64)),
        };
        let fed = match fed {
            Ok(f) => f,
            Err(e) => {
                self.fail(slot, e.kind(), now);
                return false;
            }
        };
        if !fed.done {
            return true;
        }
        if fed.consumed < len {
            self.fail(slot, "unexpected_data", now);
            return false;
        }
        let head = c.parser.head().expect("a complete response has a head");
        let us = now.duration_since(c.sent_at).as_micros() as u64;
        record(&mut self.stats.total_us, us);
        if (200..300).contains(&head.status) {
            self.stats.requests_ok += 1;
            self.stats.body_bytes += head.content_length;
        } else {
            self.stats.responses_non2xx += 1;
            *self.stats.statuses_non2xx.entry(head.status).or_default() += 1;
        }
        if head.close {
            c.fd = None;
            c.phase = Phase::Closed { reconnect_at: now };
            return false;
        }
        self.next_request(slot, now);
        true
    }

    fn tick(&mut self, now: Instant) {
        if let Some(p) = self.cfg.paced {
            let total = p.streams_at(now.duration_since(self.shared.start));
            let mine = (total + self.cfg.threads - 1 - self.cfg.thread_idx) / self.cfg.threads;
            while self.conns.len() < mine {
                self.add_conn(now);
            }
        }
        for slot in 0..self.conns.len() {
            let phase = self.conns[slot].phase;
            match phase {
                Phase::Closed { reconnect_at } if now >= reconnect_at => self.open(slot, now),
                Phase::Waiting => self.next_request(slot, now),
                Phase::Connecting | Phase::Sending { .. } | Phase::Awaiting | Phase::Receiving
                    if now.duration_since(self.conns[slot].last_progress) > self.cfg.timeout =>
                {
                    let kind = if phase == Phase::Connecting {
                        "connect_timeout"
                    } else {
                        "timeout"
                    };
                    self.fail(slot, kind, now);
                }
                _ => {}
            }
            if let Some(p) = self.cfg.paced {
                self.check_stream(slot, &p, now);
            }
        }
    }

    fn check_stream(&mut self, slot: usize, p: &PacedCfg, now: Instant) {
        let c = &mut self.conns[slot];
        let phase = c.phase;
        let sent_at = c.sent_at;
        let Some(s) = &mut c.stream else { return };
        if s.first_byte.is_none() {
            return;
        }
        let mut stall: Option<(&'static str, Instant)> = None;
        let outstanding = matches!(
            phase,
            Phase::Sending { .. } | Phase::Awaiting | Phase::Receiving
        );
        let gap_from = s.last_byte.max(sent_at);
        // A gap only counts once the stream has fallen behind the same share of its bitrate as
        // the window test (nginx's limit_rate, for one, sends a second's worth up front and
        // then pauses for up to about a second, exactly on schedule).
        let behind = s.first_byte.is_some_and(|first| {
            let due_bits = p.rate_bps as f64 * now.duration_since(first).as_secs_f64();
            (s.bytes as f64 * 8.0) < p.stall_ratio * due_bits
        });
        if outstanding && behind && now.duration_since(gap_from) > p.gap {
            stall = Some(("gap", gap_from));
            s.last_byte = now;
        }
        let win = now.duration_since(s.win_start);
        if win >= p.window {
            let bits = (s.bytes - s.win_bytes_start) as f64 * 8.0;
            let rate_bps = bits / win.as_secs_f64();
            record(
                &mut self.stats.window_rate_kbps,
                ((rate_bps / 1000.0) as u64).max(1),
            );
            if !s.win_waited && rate_bps < p.stall_ratio * p.rate_bps as f64 && stall.is_none() {
                stall = Some(("below_rate", s.win_start));
            }
            s.win_start = now;
            s.win_bytes_start = s.bytes;
            s.win_waited = phase == Phase::Waiting;
        }
        if let Some((kind, from)) = stall {
            *self.stats.stalls.entry(kind).or_default() += 1;
            let mut first = self.shared.stall.lock().expect("stall lock poisoned");
            if first.is_none() {
                let elapsed = now.duration_since(self.shared.start);
                *first = Some(StallEvent {
                    kind,
                    at: elapsed,
                    evidence_from: from.saturating_duration_since(self.shared.start),
                    streams_running: p.streams_at(elapsed),
                });
                self.shared.stop.store(true, Ordering::Relaxed);
            }
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// A stream is ahead when it holds more than `buffer` of media beyond its bitrate schedule.
fn is_ahead(s: &Stream, p: &PacedCfg, now: Instant) -> bool {
    let Some(first) = s.first_byte else {
        return false;
    };
    let secs = now.duration_since(first).as_secs_f64() + p.buffer.as_secs_f64();
    (s.bytes as f64 * 8.0) > p.rate_bps as f64 * secs
}
