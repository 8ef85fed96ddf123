//! An in-memory driver for [`HttpSession`](crate::server::HttpSession): request bytes in, every
//! `Transmit` carried out against a byte sink, and a fake clock, the way quinn-proto's tests drive
//! connections. It plays the engine's part exactly as the session contract describes it (input
//! only while the session wants it, one transmit in flight, `on_sent` with what was sent, jobs,
//! opens, creates and writes completed inline, deadlines fired when the fake clock reaches them;
//! a `Defer` waits for its result, which proxy mode's real threads deliver).
//!
//! The service under test is real: an `HttpService` over a `Store` in a temporary directory and
//! a `ResourceManager`. The driver never reads the real clock after start-up and never sleeps
//! (it only waits for a deferred result).

use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use oasis_engine::resource::{AccountLimits, ResourceLimits, ResourceManager};
use oasis_engine::{Completer, ConnInfo, JobRejected, Service, Session, Transmit};
use oasis_storage::{Store, StoreConfig};

use crate::access_log::{AccessLog, LogTarget};
use crate::metrics::Metrics;
use crate::server::{HttpConfig, HttpService, WallClock};

pub const TOKEN: &str = "driver-token-0123456789";

/// Effectively no limit, for accounts a test does not exercise.
const PLENTY: u64 = 1 << 50;

/// What a test may change before the service is built.
pub struct Setup {
    pub http: HttpConfig,
    pub limits: ResourceLimits,
}

/// A running service: its modules, and the fake clock every connection shares.
pub struct Env {
    pub service: HttpService,
    pub store: Arc<Store>,
    pub rm: Arc<ResourceManager>,
    pub metrics: Arc<Metrics>,
    pub now: Instant,
    _dir: tempfile::TempDir,
}

impl Env {
    /// A service with an API token, generous resource limits and short pacing burst.
    pub fn new() -> Env {
        Env::with(|_| {})
    }

    pub fn with(change: impl FnOnce(&mut Setup)) -> Env {
        let mut setup = Setup {
            http: HttpConfig {
                api_token: Some(TOKEN.to_string()),
                ..HttpConfig::default()
            },
            limits: ResourceLimits {
                memory_bytes: AccountLimits::new(PLENTY),
                net_bps: vec![AccountLimits::new(PLENTY)],
                disk_read_bps: AccountLimits::new(PLENTY),
                disk_space_bytes: AccountLimits::new(PLENTY),
                connections: AccountLimits::new(PLENTY),
                open_files: AccountLimits::new(PLENTY),
            },
        };
        change(&mut setup);
        // On tmpfs where there is one: the store's fsyncs then cost nothing.
        let dir = tempfile::tempdir_in("/dev/shm")
            .or_else(|_| tempfile::tempdir())
            .expect("temporary directory");
        let rm = ResourceManager::new(&setup.limits);
        let (store, _) =
            Store::open(StoreConfig::new(dir.path()), Arc::clone(&rm)).expect("store opens");
        let metrics = Metrics::new(Arc::clone(&rm));
        let (log, _) =
            AccessLog::start(LogTarget::Off, 16, Arc::clone(&metrics)).expect("log is off");
        // One real reading of the clock, as the binary does at start; from here on it is fake.
        let now = Instant::now();
        let clock = WallClock::new(now, SystemTime::UNIX_EPOCH + Duration::from_secs(1 << 31));
        let service = HttpService::new(
            setup.http,
            Arc::clone(&store),
            Arc::clone(&rm),
            metrics.clone(),
            log,
            clock,
        );
        Env {
            service,
            store,
            rm,
            metrics,
            now,
            _dir: dir,
        }
    }

    /// A new connection on listen address 0, at the environment's current time.
    pub fn connect(&self) -> Conn {
        let info = ConnInfo {
            peer: Some("192.0.2.7:40000".parse().expect("address")),
            listener: 0,
        };
        Conn {
            session: self.service.open(info, self.now),
            now: self.now,
            input: Vec::new(),
            out: Vec::new(),
            file_bytes_sent: 0,
            stalled: None,
            window_bytes: u64::MAX,
            waiting_until: None,
            closed: false,
            send_bytes_max: u64::MAX,
            reject_jobs: false,
            writes: 0,
        }
    }

    /// Uploads `body` as `name` over a connection of its own (the session's PUT path).
    pub fn put(&self, name: &str, query: &str, body: &[u8]) -> Response {
        let mut c = self.connect();
        c.send_bytes(&put_head(name, query, body.len(), &[]));
        c.send_bytes(body);
        let r = c.response();
        assert!(
            r.status == 201 || r.status == 200,
            "upload of {name}: {r:?}"
        );
        r
    }
}

/// The head of an authorized PUT with a Content-Length.
pub fn put_head(name: &str, query: &str, len: usize, extra: &[&str]) -> Vec<u8> {
    let mut head = format!(
        "PUT /media/{name}{query} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {len}\r\n"
    );
    for line in extra {
        head.push_str(line);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    head.into_bytes()
}

/// One connection: the session, what the client sent that the session has not consumed, and
/// what the session sent.
pub struct Conn {
    pub session: Box<dyn Session>,
    pub now: Instant,
    input: Vec<u8>,
    /// Everything sent and not yet taken by [`Conn::response`].
    pub out: Vec<u8>,
    /// File body bytes sent so far (pacing measures these).
    pub file_bytes_sent: u64,
    /// A transmit the peer does not drain (its socket is full): it completes on [`Conn::drain`].
    stalled: Option<Transmit>,
    /// Bytes the peer accepts before its socket is full (`u64::MAX`: it reads everything).
    window_bytes: u64,
    waiting_until: Option<Instant>,
    pub closed: bool,
    /// Most file bytes one send carries (the engine may send fewer than asked).
    pub send_bytes_max: u64,
    /// Answer every job with `JobRejected`, as the engine does when its job queue is full.
    pub reject_jobs: bool,
    /// `Transmit::Write`s carried out.
    pub writes: u64,
}

impl Conn {
    pub fn send(&mut self, text: &str) {
        self.send_bytes(text.as_bytes());
    }

    /// The client sends `bytes`; the session runs until it waits.
    pub fn send_bytes(&mut self, bytes: &[u8]) {
        assert!(!self.closed, "sending on a closed connection");
        self.input.extend_from_slice(bytes);
        self.pump();
    }

    /// The peer stops reading: the next send that does not fit stays in flight.
    pub fn stall(&mut self) {
        self.window_bytes = 0;
    }

    /// The peer reads `bytes` more (`u64::MAX`: everything from now on); a stalled send resumes.
    pub fn drain(&mut self, bytes: u64) {
        self.window_bytes = self.window_bytes.saturating_add(bytes);
        if let Some(t) = self.stalled.take() {
            self.carry_out(t);
        }
        self.pump();
    }

    fn take_window(&mut self, n: u64) {
        if self.window_bytes != u64::MAX {
            self.window_bytes -= n;
        }
    }

    pub fn peer_close(&mut self) {
        self.session.on_peer_closed(self.now);
        self.pump();
    }

    /// Moves the fake clock forward by `d`, firing deadlines and pacing wake-ups on the way, each
    /// at its own instant.
    pub fn advance(&mut self, d: Duration) {
        let target = self.now + d;
        while !self.closed {
            let deadline = self.session.deadline();
            let wake = self.waiting_until;
            let next = [deadline, wake].into_iter().flatten().min();
            let Some(next) = next.filter(|t| *t <= target) else {
                break;
            };
            self.now = self.now.max(next);
            if wake.is_some_and(|w| w <= self.now) {
                self.waiting_until = None;
            }
            if deadline.is_some_and(|t| t <= self.now) {
                self.session.on_deadline(self.now);
                if self.session.wants_close() {
                    self.close();
                    break;
                }
            }
            self.pump();
        }
        self.now = self.now.max(target);
    }

    /// Runs the session until it waits for input, for a later instant, or for a stalled send.
    fn pump(&mut self) {
        let mut fresh = true;
        loop {
            if self.closed || self.stalled.is_some() {
                return;
            }
            // New bytes, or a send that may have changed what the session wants: offer the input.
            if fresh {
                self.feed();
                fresh = false;
            }
            if self.waiting_until.is_some_and(|t| t > self.now) {
                return;
            }
            self.waiting_until = None;
            match self.session.poll_transmit(self.now) {
                // A response that just ended lets a pipelined request in.
                Transmit::Idle => {
                    if self.feed() == 0 {
                        return;
                    }
                }
                Transmit::WaitUntil(at) => {
                    self.waiting_until = Some(at);
                    return;
                }
                Transmit::Close => {
                    self.close();
                    return;
                }
                other => {
                    self.carry_out(other);
                    fresh = true;
                }
            }
        }
    }

    /// Offers the unconsumed input while the session wants it; returns how much it consumed.
    fn feed(&mut self) -> usize {
        let mut consumed = 0;
        while self.session.wants_input() && !self.input.is_empty() {
            let n = self.session.on_input(&self.input, self.now);
            assert!(n <= self.input.len(), "consumed more than offered");
            self.input.drain(..n);
            consumed += n;
            if n == 0 {
                break;
            }
        }
        consumed
    }

    fn carry_out(&mut self, t: Transmit) {
        match t {
            Transmit::Bytes(bytes) => {
                let n = bytes.len() as u64;
                if self.window_bytes < n {
                    self.stalled = Some(Transmit::Bytes(bytes));
                    return;
                }
                self.take_window(n);
                self.out.extend_from_slice(&bytes);
                self.session.on_sent(Ok(n), Some(bytes), self.now);
            }
            Transmit::FileWithHead {
                head,
                file,
                offset,
                len,
            } => {
                let n = head.len() as u64;
                if self.window_bytes <= n {
                    self.stalled = Some(Transmit::FileWithHead {
                        head,
                        file,
                        offset,
                        len,
                    });
                    return;
                }
                self.take_window(n);
                self.out.extend_from_slice(&head);
                self.session.on_sent(Ok(n), Some(head), self.now);
                self.send_file(&file, offset, len);
            }
            Transmit::File { file, offset, len } => {
                if self.window_bytes == 0 {
                    self.stalled = Some(Transmit::File { file, offset, len });
                    return;
                }
                self.send_file(&file, offset, len);
            }
            Transmit::Job(job) => {
                let result = if self.reject_jobs {
                    Box::new(JobRejected)
                } else {
                    job()
                };
                self.session.on_job_done(result, self.now);
            }
            Transmit::Open(path) => {
                let path = std::ffi::OsStr::from_bytes(path.as_bytes());
                self.session.on_opened(File::open(path), self.now);
            }
            Transmit::Create(path) => {
                let path = std::ffi::OsStr::from_bytes(path.as_bytes());
                let created = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path);
                self.session.on_opened(created, self.now);
            }
            Transmit::Write { file, offset, data } => {
                self.writes += 1;
                let result = file.write_all_at(&data, offset);
                self.session.on_written(result, data, self.now);
            }
            Transmit::Defer(work) => {
                // Proxy mode's steps run on real threads: wait for the one result.
                let (tx, rx) = std::sync::mpsc::channel();
                work(Completer::from_fn(move |r| {
                    let _ = tx.send(r);
                }));
                let result = rx
                    .recv_timeout(Duration::from_secs(60))
                    .expect("a deferred transmit's result within a minute");
                self.session.on_job_done(result, self.now);
            }
            Transmit::WaitUntil(_) | Transmit::Idle | Transmit::Close => {
                unreachable!("not a send")
            }
        }
    }

    /// Sends as much of the range as the peer's window and `send_bytes_max` allow (at least one
    /// byte: the caller checked the window).
    fn send_file(&mut self, file: &File, offset: u64, len: u64) {
        assert!(len > 0, "a file transmit of no bytes");
        let n = len.min(self.send_bytes_max).min(self.window_bytes);
        self.take_window(n);
        let mut buf = vec![0u8; n as usize];
        file.read_exact_at(&mut buf, offset)
            .expect("the file holds the range asked for");
        self.out.extend_from_slice(&buf);
        self.file_bytes_sent += n;
        self.session.on_sent(Ok(n), None, self.now);
    }

    fn close(&mut self) {
        self.closed = true;
        self.session.on_close(self.now);
    }

    /// Takes one whole response (head and `Content-Length` body) from what was sent.
    pub fn response(&mut self) -> Response {
        self.take_response(true)
    }

    /// Takes the head of a response that has no body on the wire (HEAD).
    pub fn head_response(&mut self) -> Response {
        self.take_response(false)
    }

    fn take_response(&mut self, with_body: bool) -> Response {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Response::new(&mut headers);
        let head_len = match parsed.parse(&self.out) {
            Ok(httparse::Status::Complete(n)) => n,
            other => panic!(
                "no complete response head ({other:?}) in {:?}",
                String::from_utf8_lossy(&self.out)
            ),
        };
        let status = parsed.code.expect("status");
        let headers: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| {
                let value = String::from_utf8_lossy(h.value).into_owned();
                (h.name.to_ascii_lowercase(), value)
            })
            .collect();
        let mut r = Response {
            status,
            headers,
            body: Vec::new(),
        };
        let body_len = match r.header("content-length") {
            Some(n) if with_body && status != 304 => n.parse::<usize>().expect("length"),
            _ => 0,
        };
        assert!(
            self.out.len() >= head_len + body_len,
            "body incomplete: {} of {body_len} bytes",
            self.out.len() - head_len
        );
        r.body = self.out[head_len..head_len + body_len].to_vec();
        self.out.drain(..head_len + body_len);
        r
    }
}

#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}
