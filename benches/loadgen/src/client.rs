//! The client engine: one epoll loop per thread driving its share of keep-alive connections.
//!
//! Each connection loops: connect, send a GET, read the response through the sans-IO parser,
//! record time to first byte and full-response time, then send the next GET. In paced mode a
//! connection is a viewer driven by the player model of `player.rs` (playlist, then segments in
//! order, a bounded buffer drained in real time, stalls when it runs dry); viewers are added
//! step by step, and the first stall stops the run unless the run counts stalls instead.
//! A thread never blocks except in `epoll_wait`, and never runs past the run's deadline.

use crate::http::ResponseParser;
use crate::player::{MediaPlan, Player, PlayerCfg};
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
    /// Paced mode: what the requests are (an HLS playlist and its segments, or one file).
    pub media: MediaPlan,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    RoundRobin,
    Random,
}

#[derive(Debug, Clone, Copy)]
pub struct PacedCfg {
    pub player: PlayerCfg,
    /// A viewer that has not started playing this long after it joined counts a stall: in a
    /// capacity ramp (`stop_on_stall`) whether or not it was refused, since a viewer the server
    /// turned away is not one it sustains; in an overload run only if it was never refused (the
    /// run counts stalls among admitted viewers).
    pub start_timeout: Duration,
    /// The first stall ends the run (a capacity ramp); otherwise stalls are only counted.
    pub stop_on_stall: bool,
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

/// A paced connection's viewer: the player model plus what the harness tracks around it.
#[derive(Debug)]
struct Viewer {
    player: Player,
    joined: Instant,
    /// Body bytes of the current response already credited to the player (progressive).
    credited: u64,
    /// Counted as a stall for not starting in time (once).
    late_start: bool,
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
    stream: Option<Viewer>,
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
        self.finish();
        Ok(())
    }

    fn finish(&mut self) {
        for c in &mut self.conns {
            if matches!(
                c.phase,
                Phase::Sending { .. } | Phase::Awaiting | Phase::Receiving
            ) {
                self.stats.abandoned_at_end += 1;
            }
            if let Some(v) = &c.stream {
                self.stats.viewers.add(&v.player, v.joined);
            }
            c.fd = None;
        }
    }

    fn add_conn(&mut self, now: Instant) {
        let stream = self.cfg.paced.map(|_| Viewer {
            player: Player::new(now),
            joined: now,
            credited: 0,
            late_start: false,
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
            if let Some(v) = &c.stream {
                if !v.player.wants_request(&p.player, now) {
                    c.phase = Phase::Waiting;
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
        let viewer_idx = self.conns[slot]
            .stream
            .as_ref()
            .map(|v| v.player.next_request() % n);
        let idx = match (viewer_idx, self.cfg.order) {
            (Some(i), _) => i,
            (None, Order::RoundRobin) => {
                let i = self.rr_next % n;
                self.rr_next = self.rr_next.wrapping_add(1);
                i
            }
            (None, Order::Random) => (self.next_rand() % n as u64) as usize,
        };
        let now = Instant::now();
        let c = &mut self.conns[slot];
        c.req_idx = idx;
        if let Some(v) = &mut c.stream {
            v.credited = 0;
        }
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
        if let (Some(head), Some(v)) = (fed.head, c.stream.as_mut()) {
            v.player.on_head(&self.target.media, c.req_idx, head.status);
        }
        let stall = self.credit_progressive(slot, now);
        self.on_stall(stall, now);
        let c = &mut self.conns[slot];
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
        let req_idx = c.req_idx;
        let stall = match (&mut c.stream, self.cfg.paced) {
            (Some(v), Some(p)) => v.player.on_response(
                &self.target.media,
                &p.player,
                req_idx,
                head.status,
                head.retry_after_s,
                now,
            ),
            _ => None,
        };
        self.on_stall(stall, now);
        let c = &mut self.conns[slot];
        if head.close {
            // A refused viewer reconnects when it means to retry, not at once: a server at its
            // connection limit answers a new connection before any request is sent.
            let reconnect_at = c
                .stream
                .as_ref()
                .and_then(|v| v.player.retry_at())
                .map_or(now, |t| t.max(now));
            c.fd = None;
            c.phase = Phase::Closed { reconnect_at };
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
                self.check_viewer(slot, &p, now);
            }
        }
    }

    /// Credits the body bytes of a progressive response that arrived since the last call.
    fn credit_progressive(&mut self, slot: usize, now: Instant) -> Option<Instant> {
        let p = self.cfg.paced?;
        if self.target.media != MediaPlan::Progressive {
            return None;
        }
        let c = &mut self.conns[slot];
        let head = c.parser.head().filter(|h| (200..300).contains(&h.status))?;
        let v = c.stream.as_mut()?;
        let body = head.content_length - c.parser.remaining();
        let new = body.saturating_sub(v.credited);
        v.credited = body;
        (new > 0)
            .then(|| v.player.credit_bytes(&p.player, new, now))
            .flatten()
    }

    /// Plays each viewer up to `now`; a dry buffer, or a viewer that never started, is a stall.
    fn check_viewer(&mut self, slot: usize, p: &PacedCfg, now: Instant) {
        let Some(v) = self.conns[slot].stream.as_mut() else {
            return;
        };
        let mut stall = v.player.advance(now);
        if v.player.started_at.is_none()
            && (v.player.refusals == 0 || p.stop_on_stall)
            && !v.late_start
            && now.duration_since(v.joined) > p.start_timeout
        {
            v.late_start = true;
            v.player.stalls += 1;
            stall = stall.or(Some(v.joined + p.start_timeout));
        }
        self.on_stall(stall, now);
    }

    /// Records a stall that began at `dry_at`: counted, and the run's first one noted (and the
    /// run stopped, in a capacity ramp).
    fn on_stall(&mut self, dry_at: Option<Instant>, now: Instant) {
        let (Some(dry_at), Some(p)) = (dry_at, self.cfg.paced) else {
            return;
        };
        self.stats.stall_events += 1;
        let mut first = self.shared.stall.lock().expect("stall lock poisoned");
        if first.is_none() {
            let elapsed = now.duration_since(self.shared.start);
            let from = dry_at.saturating_duration_since(self.shared.start);
            *first = Some(StallEvent {
                at: from,
                // The media that ran dry was due up to a full buffer earlier.
                evidence_from: from.saturating_sub(Duration::from_secs_f64(p.player.buffer_s)),
                streams_running: p.streams_at(elapsed),
            });
            if p.stop_on_stall {
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
