//! The Client Manager's HTTP/1.1 session: one per connection, driven by the engine.
//!
//! A session is a state machine over the sans-IO pieces in [`crate::http`]: it parses request
//! heads from the bytes the engine hands it, decides (routes, preconditions, ranges, admission
//! control with the Resource Manager), and tells the engine what to transmit: a response head,
//! then file ranges, paced by the object's bitrate. It never touches a socket, and reads no clock:
//! the engine passes `now`; wall time for `Date` and logs is derived from it ([`WallClock`]).
//!
//! Routes: `GET|HEAD /media/<name>` (public unless configured), `PUT|DELETE /media/<name>`,
//! `GET|DELETE /api/objects?prefix=` and `GET /api/status` (bearer token), `GET /metrics`,
//! `GET /healthz`.
//! Blocking storage work (commit of an upload, delete) runs as an engine job on the catalog thread.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::fs::File;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use oasis_engine::resource::{Reservation, Resource, ResourceManager};
use oasis_engine::{
    ConnInfo, EngineHandle, JobRejected, JobResult, Phase, Service, Session, Transmit,
};
use oasis_storage::{BitrateSource, ObjectMeta, Store, StoreError, Upload, UploadOptions};

use crate::access_log::{push_log_time, AccessLog};
use crate::http::{
    self, error_body_bytes, evaluate, if_range_allows, parse_range, parse_request, plan_byteranges,
    push_error_body, ChunkedDecoder, HttpLimits, ImfDate, Method, Parse, Precondition, RangeSpec,
    RequestHead, ResponseHead,
};
use crate::metrics::Metrics;

/// Pacing of streams: after `initial_burst_secs` of media at full speed, a stream is sent at its
/// object's bitrate times a factor.
#[derive(Clone, Debug)]
pub struct PacingConfig {
    pub enabled: bool,
    pub initial_burst_secs: f64,
    /// Factor for progressive media (MP4, WebM, audio): players buffer ahead of the playhead.
    pub factor_progressive: f64,
    /// Factor for HLS/DASH segments: segment players estimate bandwidth from download speed, so a
    /// segment paced near its bitrate would make them switch down; generous keeps estimates high.
    pub factor_segment: f64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            enabled: true,
            initial_burst_secs: 10.0,
            factor_progressive: 1.5,
            factor_segment: 4.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub limits: HttpLimits,
    /// Bearer token for writes and `/api`. `None`: writes and `/api` are refused (403).
    pub api_token: Option<String>,
    /// Whether `GET /media` needs the token too.
    pub public_reads: bool,
    /// A request head must arrive within this time from its first byte (408 after).
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub keepalive_timeout: Duration,
    /// A client that accepts no bytes for this long is dropped.
    pub send_timeout: Duration,
    /// An upload that delivers no bytes for this long gets 408.
    pub body_timeout: Duration,
    pub keepalive_requests_max: u32,
    pub upload_bytes_max: u64,
    pub pacing: PacingConfig,
    /// Bytes one stream reserves as buffer memory (the engine's chunk size).
    pub stream_buffer_bytes: u64,
    pub retry_after_secs: u64,
    /// Objects listed by `GET /api/objects` at most.
    pub list_objects_max: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            limits: HttpLimits::default(),
            api_token: None,
            public_reads: true,
            header_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(65),
            send_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            keepalive_requests_max: 1000,
            upload_bytes_max: 64 << 30,
            pacing: PacingConfig::default(),
            stream_buffer_bytes: 256 * 1024,
            retry_after_secs: 2,
            list_objects_max: 10_000,
        }
    }
}

/// Maps the engine's monotonic `now` to wall time, fixed at start-up, so sessions never read the
/// clock themselves.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    base_instant: Instant,
    base_system: SystemTime,
}

impl WallClock {
    pub fn new(base_instant: Instant, base_system: SystemTime) -> Self {
        WallClock {
            base_instant,
            base_system,
        }
    }

    pub fn at(&self, now: Instant) -> SystemTime {
        self.base_system + now.saturating_duration_since(self.base_instant)
    }
}

/// Everything a session needs, for one configuration generation. A reload builds a new `Inner`
/// with the new settings and the same modules; sessions switch at their next request.
struct Inner {
    cfg: HttpConfig,
    /// Counts applied reloads: 0 is the configuration the server started with.
    generation: u64,
    store: Arc<Store>,
    rm: Arc<ResourceManager>,
    metrics: Arc<Metrics>,
    log: AccessLog,
    clock: WallClock,
    /// Set while the engine runs; cleared at shutdown (the engine holds this service: no cycle).
    /// Shared by every generation.
    engine: Arc<RwLock<Option<EngineHandle>>>,
    started: Instant,
}

/// The generation in force. Sessions compare `generation` (one load of a line written only on
/// reload) with their snapshot's before each request and take the lock only when it moved.
struct Live {
    generation: AtomicU64,
    current: RwLock<Arc<Inner>>,
    /// The engine's 503 for connections over the limit, carrying `retry_after_secs`. Leaked so the
    /// engine can borrow it for as long as it likes: one small buffer per reload that changes it.
    refusal: RwLock<&'static [u8]>,
}

fn refusal_bytes(retry_after_secs: u64) -> &'static [u8] {
    let bytes = format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: oasis\r\nRetry-After: {retry_after_secs}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    Box::leak(bytes.into_bytes().into_boxed_slice())
}

/// The HTTP protocol as an engine [`Service`].
#[derive(Clone)]
pub struct HttpService {
    live: Arc<Live>,
}

impl HttpService {
    pub fn new(
        cfg: HttpConfig,
        store: Arc<Store>,
        rm: Arc<ResourceManager>,
        metrics: Arc<Metrics>,
        log: AccessLog,
        clock: WallClock,
    ) -> Self {
        let refusal = refusal_bytes(cfg.retry_after_secs);
        let started = clock.base_instant;
        let inner = Inner {
            cfg,
            generation: 0,
            store,
            rm,
            metrics,
            log,
            clock,
            engine: Arc::new(RwLock::new(None)),
            started,
        };
        HttpService {
            live: Arc::new(Live {
                generation: AtomicU64::new(0),
                current: RwLock::new(Arc::new(inner)),
                refusal: RwLock::new(refusal),
            }),
        }
    }

    fn current(&self) -> Arc<Inner> {
        let guard = self.live.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard)
    }

    /// Puts new settings in force (configuration reload) and returns their generation. Requests
    /// already being answered finish with the settings they started with; every session uses the
    /// new ones from its next request on. Limits that size buffers (`limits`,
    /// `stream_buffer_bytes`) are the caller's to keep unchanged: the engine was sized for them.
    pub fn reload(&self, cfg: HttpConfig) -> u64 {
        let mut current = self.live.current.write().unwrap_or_else(|e| e.into_inner());
        if cfg.retry_after_secs != current.cfg.retry_after_secs {
            *self.live.refusal.write().unwrap_or_else(|e| e.into_inner()) =
                refusal_bytes(cfg.retry_after_secs);
        }
        let generation = current.generation + 1;
        *current = Arc::new(Inner {
            cfg,
            generation,
            store: Arc::clone(&current.store),
            rm: Arc::clone(&current.rm),
            metrics: Arc::clone(&current.metrics),
            log: current.log.clone(),
            clock: current.clock,
            engine: Arc::clone(&current.engine),
            started: current.started,
        });
        self.live.generation.store(generation, Ordering::Release);
        generation
    }

    /// The configuration generation in force (0 until the first reload).
    pub fn generation(&self) -> u64 {
        self.live.generation.load(Ordering::Acquire)
    }

    /// Gives `/api/status` a view of the running engine.
    pub fn attach_engine(&self, engine: EngineHandle) {
        if let Ok(mut e) = self.current().engine.write() {
            *e = Some(engine);
        }
    }

    /// Drops the engine view (after the engine stopped), so nothing keeps the engine alive.
    pub fn detach_engine(&self) {
        if let Ok(mut e) = self.current().engine.write() {
            *e = None;
        }
    }
}

impl Service for HttpService {
    fn open(&self, info: ConnInfo, now: Instant) -> Box<dyn Session> {
        let svc = self.current();
        svc.metrics.connections_opened.inc();
        Box::new(HttpSession {
            svc,
            live: Arc::clone(&self.live),
            info,
            state: State::Head { since: None },
            pending: None,
            keep_alive: true,
            requests: 0,
            shutting_down: false,
            last_activity: now,
            req: None,
            unread_body: None,
        })
    }

    fn refusal(&self) -> &[u8] {
        *self.live.refusal.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// What is logged about the request being answered. The request's own fields are kept only
/// while the access log is on (`method: None` and an empty `target` otherwise, or for a
/// request that never parsed: logged as "-").
struct ReqLog {
    method: Option<Method>,
    target: String,
    version_minor: u8,
    referer: Option<String>,
    user_agent: Option<String>,
    started: Instant,
    status: u16,
    body_bytes: u64,
    head_sent: bool,
}

impl ReqLog {
    /// Moves what the log line needs out of `head` (nothing when the access log is off).
    fn of(head: &mut RequestHead, logging: bool, now: Instant) -> ReqLog {
        let mut req = ReqLog::unparsed(0, now);
        req.version_minor = head.version_minor;
        if logging {
            req.method = Some(head.method.clone());
            req.target = std::mem::take(&mut head.target);
            req.referer = head.referer.take();
            req.user_agent = head.user_agent.take();
        }
        req
    }

    /// A request answered before a head was parsed (400s, 408).
    fn unparsed(status: u16, now: Instant) -> ReqLog {
        ReqLog {
            method: None,
            target: String::new(),
            version_minor: 1,
            referer: None,
            user_agent: None,
            started: now,
            status,
            body_bytes: 0,
            head_sent: false,
        }
    }
}

enum BodyOut {
    None,
    File {
        file: Arc<File>,
        offset: u64,
        remaining: u64,
    },
    Multi {
        file: Arc<File>,
        parts: VecDeque<http::MultipartPart>,
        current: Option<(u64, u64)>,
        closing: Option<Vec<u8>>,
    },
}

/// A stream's admission: what it reserved, held until the response ends.
struct Admission {
    _net: Reservation,
    _disk: Reservation,
    _memory: Reservation,
}

struct Pace {
    start: Instant,
    burst_bytes: u64,
    rate_bytes_per_sec: f64,
}

struct Respond {
    head: Option<Vec<u8>>,
    body: BodyOut,
    close_after: bool,
    _admission: Option<Admission>,
    pace: Option<Pace>,
    body_sent: u64,
    last_progress: Instant,
}

enum BodyKind {
    Length(u64),
    Chunked(ChunkedDecoder),
}

struct Receiving {
    upload: Upload,
    kind: BodyKind,
    last_progress: Instant,
    replaced: bool,
}

enum JobKind {
    Finish {
        replaced: bool,
    },
    Delete,
    /// `DELETE /api/objects?prefix=P`: the names deleted, and whether more are left.
    DeletePrefix,
}

/// What a prefix delete did: the names it deleted, and whether objects under the prefix remain
/// (it deletes at most `list_objects_max` per request).
type PrefixDeleted = Result<(Vec<String>, bool), StoreError>;

/// A GET whose object file is not in the fd cache: the engine opens it (`Transmit::Open`) and
/// the request is served again from the top with the file (`Opened::File`).
struct Opening {
    head: RequestHead,
    name: String,
    meta: Arc<ObjectMeta>,
    /// Taken when the open is handed to the engine.
    path: Option<std::ffi::CString>,
}

/// What [`HttpSession::serve_media`] knows of the object's file.
enum Opened {
    /// Nothing yet: a cache miss is opened asynchronously.
    NotYet,
    /// The engine opened it (version id, cached handle).
    File(u64, Arc<File>),
    /// The asynchronous open failed: open synchronously, which reports the error.
    Failed,
}

enum State {
    /// Waiting for a request head; `since` is when its first byte arrived.
    Head {
        since: Option<Instant>,
    },
    Body(Box<Receiving>),
    Opening(Box<Opening>),
    /// A job is queued (`Some`) or running (`None`).
    Job(Option<oasis_engine::Job>, JobKind),
    Respond(Box<Respond>),
    /// Lingering close: the answer went out before the request's body was read; what the client
    /// still sends is read and dropped (bounded), so it reads the answer instead of a reset.
    Discard(Discard),
    Close,
}

/// What is left of a request body that was not read.
#[derive(Debug)]
enum BodyLeft {
    Bytes(u64),
    /// Chunked: the decoder finds where the body ends.
    Chunked(Box<ChunkedDecoder>),
}

/// The bounds of a lingering close (nginx's `lingering_time` and `lingering_timeout`, plus a
/// byte cap): whichever comes first ends it.
#[derive(Debug)]
struct Discard {
    left: BodyLeft,
    read_bytes: u64,
    until: Instant,
    idle_until: Instant,
}

/// Why a request that needs the API token was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Denied {
    /// The server has no token: every write and `/api` request is refused (403).
    NoTokenConfigured,
    NoCredentials,
    NotBearer,
    WrongToken,
}

impl Denied {
    fn status(self) -> u16 {
        match self {
            Denied::NoTokenConfigured => 403,
            _ => 401,
        }
    }

    /// What the refused client is told (the `error` of the JSON body).
    fn reason(self) -> &'static str {
        match self {
            Denied::NoTokenConfigured => {
                "this server has no API token, so it refuses uploads, deletes and /api; \
                 set [http] api_token (16 characters or more) in its configuration file and \
                 reload it (SIGHUP), or restart it with OASIS_API_TOKEN set"
            }
            Denied::NoCredentials => {
                "this request needs the server's API token: send `Authorization: Bearer <token>` \
                 (oasis CLI: --token or OASIS_API_TOKEN)"
            }
            Denied::NotBearer => "only `Authorization: Bearer <token>` is accepted",
            Denied::WrongToken => "the bearer token is not this server's API token",
        }
    }
}

/// Longest lingering close.
pub(crate) const LINGER_TIME: Duration = Duration::from_secs(30);
/// Longest wait for the next byte during a lingering close.
pub(crate) const LINGER_IDLE: Duration = Duration::from_secs(5);
/// Most bytes a lingering close reads and drops.
pub(crate) const LINGER_BYTES_MAX: u64 = 256 << 20;

pub struct HttpSession {
    /// The settings of the request being answered (see [`Live`]).
    svc: Arc<Inner>,
    live: Arc<Live>,
    info: ConnInfo,
    state: State,
    /// Bytes to send before anything else (`100 Continue`).
    pending: Option<Vec<u8>>,
    keep_alive: bool,
    requests: u32,
    shutting_down: bool,
    last_activity: Instant,
    req: Option<ReqLog>,
    /// The current request's body bytes not read yet (`None`: no body, or all of it read).
    unread_body: Option<BodyLeft>,
}

const ALLOW_MEDIA: &str = "GET, HEAD, PUT, DELETE, OPTIONS";
const PACE_CHUNK_MIN_BYTES: u64 = 64 * 1024;
/// Response heads up to this size share a send with the first body bytes (below half the
/// smallest pool chunk the configuration allows, 4096 bytes).
const HEAD_WITH_BODY_BYTES_MAX: usize = 2000;

fn is_segment(name: &str) -> bool {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return false;
    };
    ["ts", "m4s", "aac", "m3u8", "mpd", "cmfv", "cmfa"]
        .iter()
        .any(|segment| ext.eq_ignore_ascii_case(segment))
}

fn etag_of(meta: &ObjectMeta) -> http::etag::StrongEtag {
    http::etag::StrongEtag::new(meta.crc32c, meta.size_bytes, meta.created_unix_ms / 1000)
}

fn last_modified_of(meta: &ObjectMeta) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(meta.created_unix_ms / 1000)
}

/// The access log line of one response: the combined format plus the request time.
fn access_line(ip: Option<IpAddr>, time: SystemTime, req: &ReqLog, elapsed: Duration) -> String {
    // One allocation per line: every piece is written straight into it.
    let field = |s: &Option<String>| s.as_deref().map_or(1, str::len);
    let mut line = String::with_capacity(
        112 + req.target.len() + field(&req.referer) + field(&req.user_agent),
    );
    match ip {
        Some(ip) => {
            let _ = write!(line, "{ip}");
        }
        None => line.push('-'),
    }
    line.push_str(" - - [");
    push_log_time(&mut line, time);
    line.push_str("] \"");
    match &req.method {
        Some(method) => {
            line.push_str(method.as_str());
            line.push(' ');
            push_replacing(&mut line, &req.target, '"', "%22");
        }
        None => line.push_str("- -"),
    }
    let _ = write!(
        line,
        " HTTP/1.{}\" {} {} \"",
        req.version_minor, req.status, req.body_bytes
    );
    push_replacing(
        &mut line,
        req.referer.as_deref().unwrap_or("-"),
        '"',
        "\\\"",
    );
    line.push_str("\" \"");
    push_replacing(
        &mut line,
        req.user_agent.as_deref().unwrap_or("-"),
        '"',
        "\\\"",
    );
    let _ = writeln!(line, "\" {:.3}", elapsed.as_secs_f64());
    line
}

/// Appends `text` with every `from` replaced by `to` (`str::replace` without its own `String`).
fn push_replacing(out: &mut String, text: &str, from: char, to: &str) {
    let mut pieces = text.split(from);
    if let Some(first) = pieces.next() {
        out.push_str(first);
    }
    for piece in pieces {
        out.push_str(to);
        out.push_str(piece);
    }
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

fn json_escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

fn meta_json(meta: &ObjectMeta) -> String {
    format!(
        "{{\"name\":{},\"size_bytes\":{},\"content_type\":{},\"crc32c\":\"{:08x}\",\"etag\":{},\"created_unix_ms\":{},\"bitrate_bps\":{},\"bitrate_source\":\"{}\",\"duration_ms\":{}}}",
        json_escape(&meta.name),
        meta.size_bytes,
        json_escape(&meta.content_type),
        meta.crc32c,
        json_escape(etag_of(meta).as_str()),
        meta.created_unix_ms,
        meta.bitrate_bps,
        meta.bitrate_source.as_str(),
        meta.duration_ms
            .map_or_else(|| "null".to_string(), |d| d.to_string())
    )
}

impl HttpSession {
    fn date(&self, now: Instant) -> ImfDate {
        ImfDate::new(self.svc.clock.at(now))
    }

    fn limit_reason(status: u16) -> &'static str {
        match status {
            400 => "bad_request",
            408 => "timeout",
            411 => "length_required",
            413 => "body_too_large",
            414 => "uri_too_long",
            431 => "header_too_large",
            501 => "not_implemented",
            505 => "version",
            503 => "unavailable",
            _ => "other",
        }
    }

    /// Starts the response to the current request with an error page (and optional extra header).
    fn error(&mut self, status: u16, extra: &[(&str, String)], head_only: bool, now: Instant) {
        let date = self.date(now);
        let body_bytes = error_body_bytes(status);
        let mut out = Vec::with_capacity(256 + body_bytes);
        let mut head = ResponseHead::new(&mut out, status, date.as_str());
        if body_bytes > 0 {
            head.content_type("text/html")
                .content_length(body_bytes as u64);
        }
        for (k, v) in extra {
            head.header(k, v);
        }
        head.cors().connection(self.keep_alive);
        head.finish();
        if !head_only {
            push_error_body(status, &mut out);
        }
        let body = if head_only { 0 } else { body_bytes as u64 };
        self.respond_bytes(status, out, body, now);
    }

    /// Starts a response that is all in `out` (head and body).
    fn respond_bytes(&mut self, status: u16, out: Vec<u8>, body_bytes: u64, now: Instant) {
        if let Some(r) = &mut self.req {
            r.status = status;
            r.body_bytes = body_bytes;
        }
        self.state = State::Respond(Box::new(Respond {
            head: Some(out),
            body: BodyOut::None,
            close_after: !self.keep_alive,
            _admission: None,
            pace: None,
            body_sent: 0,
            last_progress: now,
        }));
    }

    /// Refuses with 503 and `Retry-After`, counted by `reason` in `oasis_admissions_refused_total`.
    fn refuse(&mut self, reason: &str, now: Instant) {
        self.svc.metrics.refused(reason);
        let retry = [("Retry-After", self.svc.cfg.retry_after_secs.to_string())];
        self.error(503, &retry, false, now);
    }

    fn respond_small(
        &mut self,
        status: u16,
        content_type: &str,
        body: &[u8],
        head_only: bool,
        now: Instant,
    ) {
        let date = self.date(now);
        let mut out = Vec::with_capacity(256 + body.len());
        let mut head = ResponseHead::new(&mut out, status, date.as_str());
        head.content_type(content_type)
            .content_length(body.len() as u64)
            .cors()
            .connection(self.keep_alive);
        head.finish();
        if !head_only {
            out.extend_from_slice(body);
        }
        self.respond_bytes(
            status,
            out,
            if head_only { 0 } else { body.len() as u64 },
            now,
        );
    }

    fn authorized(&self, head: &RequestHead) -> Result<(), Denied> {
        let Some(token) = &self.svc.cfg.api_token else {
            return Err(Denied::NoTokenConfigured);
        };
        let Some(given) = head.authorization.as_deref() else {
            return Err(Denied::NoCredentials);
        };
        let Some(given) = given.strip_prefix("Bearer ") else {
            return Err(Denied::NotBearer);
        };
        // Compare in constant time with respect to the content.
        let equal = given.len() == token.len()
            && given
                .bytes()
                .zip(token.bytes())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
        if equal {
            Ok(())
        } else {
            Err(Denied::WrongToken)
        }
    }

    /// Refuses a request that needs the token, with a JSON body that says why and what to do.
    fn deny(&mut self, why: Denied, head_only: bool, now: Instant) {
        let status = why.status();
        let date = self.date(now);
        let msg = format!("{{\"error\":{}}}\n", json_escape(why.reason()));
        let mut out = Vec::with_capacity(384 + msg.len());
        let mut head = ResponseHead::new(&mut out, status, date.as_str());
        head.content_type("application/json")
            .content_length(msg.len() as u64);
        if status == 401 {
            head.header("WWW-Authenticate", "Bearer realm=\"oasis\"");
        }
        head.cors().connection(self.keep_alive);
        head.finish();
        let body = if head_only { 0 } else { msg.len() as u64 };
        if !head_only {
            out.extend_from_slice(msg.as_bytes());
        }
        self.respond_bytes(status, out, body, now);
    }

    fn handle(&mut self, mut head: RequestHead, now: Instant) {
        // Each request starts on the settings in force; a reload never changes them mid-request.
        if self.live.generation.load(Ordering::Acquire) != self.svc.generation {
            self.svc = Arc::clone(&self.live.current.read().unwrap_or_else(|e| e.into_inner()));
        }
        self.requests += 1;
        self.keep_alive = head.keep_alive
            && !self.shutting_down
            && self.requests < self.svc.cfg.keepalive_requests_max
            && !(head.has_body() && head.method != Method::Put);
        self.req = Some(ReqLog::of(&mut head, self.svc.log.is_on(), now));
        self.unread_body = match (head.content_length, head.chunked) {
            (_, true) => Some(BodyLeft::Chunked(Box::new(ChunkedDecoder::new(
                &self.svc.cfg.limits,
            )))),
            (Some(n), false) if n > 0 => Some(BodyLeft::Bytes(n)),
            _ => None,
        };
        let head_only = head.method == Method::Head;
        if let Some(name) = head.path.strip_prefix("/media/") {
            match head.method {
                Method::Get | Method::Head => self.serve_media(&head, name, Opened::NotYet, now),
                Method::Put => self.start_upload(&head, name, now),
                Method::Delete => match self.authorized(&head) {
                    Err(why) => self.deny(why, false, now),
                    Ok(()) => {
                        let store = Arc::clone(&self.svc.store);
                        let name = name.to_owned();
                        let job: oasis_engine::Job =
                            Box::new(move || Box::new(store.delete(&name)) as JobResult);
                        self.state = State::Job(Some(job), JobKind::Delete);
                    }
                },
                Method::Options => {
                    let date = self.date(now);
                    let mut out = Vec::with_capacity(512);
                    http::preflight_response(self.keep_alive, 86_400, date.as_str(), &mut out);
                    self.respond_bytes(204, out, 0, now);
                }
                _ => self.error(405, &[("Allow", ALLOW_MEDIA.to_string())], false, now),
            }
            return;
        }
        match (head.path.as_str(), &head.method) {
            ("/healthz", Method::Get | Method::Head) => {
                self.respond_small(200, "text/plain", b"ok\n", head_only, now)
            }
            ("/metrics", Method::Get | Method::Head) => {
                let workers = self
                    .svc
                    .engine
                    .read()
                    .ok()
                    .and_then(|e| e.clone())
                    .map(|e| e.workers())
                    .unwrap_or_default();
                let body = self.svc.metrics.render(&workers);
                self.respond_small(
                    200,
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                    body.as_bytes(),
                    head_only,
                    now,
                )
            }
            ("/api/objects", Method::Get | Method::Head) => match self.authorized(&head) {
                Err(why) => self.deny(why, head_only, now),
                Ok(()) => {
                    let prefix = query_param(head.query.as_deref(), "prefix")
                        .and_then(|p| http::percent_decode(p.as_bytes()))
                        .and_then(|p| String::from_utf8(p).ok())
                        .unwrap_or_default();
                    let all = if prefix.is_empty() {
                        self.svc.store.list()
                    } else {
                        self.svc.store.list_prefix(&prefix)
                    };
                    let max = self.svc.cfg.list_objects_max;
                    let mut body = String::from("{\"objects\":[");
                    for (i, m) in all.iter().take(max).enumerate() {
                        if i > 0 {
                            body.push(',');
                        }
                        body.push_str(&meta_json(m));
                    }
                    let _ = writeln!(
                        body,
                        "],\"count\":{},\"truncated\":{}}}",
                        all.len().min(max),
                        all.len() > max
                    );
                    self.respond_small(200, "application/json", body.as_bytes(), head_only, now);
                }
            },
            ("/api/status", Method::Get | Method::Head) => match self.authorized(&head) {
                Err(why) => self.deny(why, head_only, now),
                Ok(()) => {
                    let body = self.status_json(now);
                    self.respond_small(200, "application/json", body.as_bytes(), head_only, now);
                }
            },
            ("/api/objects", Method::Delete) => match self.authorized(&head) {
                Err(why) => self.deny(why, false, now),
                Ok(()) => self.delete_prefix(&head, now),
            },
            ("/api/objects", _) => self.error(
                405,
                &[("Allow", "GET, HEAD, DELETE".to_string())],
                head_only,
                now,
            ),
            ("/healthz" | "/metrics" | "/api/status", _) => {
                self.error(405, &[("Allow", "GET, HEAD".to_string())], head_only, now)
            }
            _ => self.error(404, &[], head_only, now),
        }
    }

    /// `DELETE /api/objects?prefix=P`: deletes the objects whose names start with `P` (a whole
    /// package: `show/`), at most `list_objects_max` per request, on the catalog thread.
    fn delete_prefix(&mut self, head: &RequestHead, now: Instant) {
        let prefix = query_param(head.query.as_deref(), "prefix")
            .and_then(|p| http::percent_decode(p.as_bytes()))
            .and_then(|p| String::from_utf8(p).ok())
            .unwrap_or_default();
        if prefix.is_empty() {
            let msg = "{\"error\":\"DELETE /api/objects needs ?prefix=P (e.g. prefix=show/); \
                       deleting every object at once is not offered\"}\n";
            return self.respond_small(400, "application/json", msg.as_bytes(), false, now);
        }
        let store = Arc::clone(&self.svc.store);
        let max = self.svc.cfg.list_objects_max;
        let job: oasis_engine::Job = Box::new(move || {
            let all = store.list_prefix(&prefix);
            let mut deleted = Vec::new();
            let mut result: PrefixDeleted = Ok((Vec::new(), all.len() > max));
            for meta in all.iter().take(max) {
                match store.delete(&meta.name) {
                    // Deleted meanwhile by another request: nothing left to do for it.
                    Ok(()) => deleted.push(meta.name.clone()),
                    Err(StoreError::NotFound { .. }) => {}
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if let Ok((names, _)) = &mut result {
                *names = deleted;
            }
            Box::new(result) as JobResult
        });
        self.state = State::Job(Some(job), JobKind::DeletePrefix);
    }

    fn status_json(&self, now: Instant) -> String {
        let mut v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "uptime_secs": now.saturating_duration_since(self.svc.started).as_secs(),
            "level": self.svc.rm.level().to_string(),
            "critical_sources": self.svc.rm.sources_at(oasis_engine::resource::Level::Critical),
            "warning_sources": self.svc.rm.sources_at(oasis_engine::resource::Level::Warning),
            "active_streams": self.svc.metrics.active_streams.get(),
            "objects": self.svc.store.len(),
            "ttfb_us_p99": self.svc.metrics.ttfb_us_p99(),
            "config_generation": self.svc.generation,
            "resources": self.svc.rm.snapshot().iter().map(|a| serde_json::json!({
                "resource": a.resource.to_string(), "used": a.used, "limit": a.limit, "level": a.level.to_string(),
            })).collect::<Vec<_>>(),
        });
        if let Some(e) = self.svc.engine.read().ok().and_then(|e| e.clone()) {
            v["layout"] = serde_json::Value::String(e.layout().to_string());
            v["workers"] = serde_json::Value::Array(
                e.workers()
                    .iter()
                    .map(|w| serde_json::json!({"roles": w.roles.to_string(), "cores": w.cores, "connections": w.connections}))
                    .collect(),
            );
            v["buffer_pool"] =
                serde_json::json!({"chunks": e.pool_chunks(), "free": e.pool_chunks_free()});
            let f = e.features();
            v["io_uring"] = serde_json::json!({
                "kernel": f.kernel_release, "defer_taskrun": f.defer_taskrun, "multishot_accept": f.multishot_accept,
                "send_zc": f.send_zc, "splice": f.splice, "read_fixed": f.read_fixed,
            });
        }
        let mut s = v.to_string();
        s.push('\n');
        s
    }

    /// A GET whose object's content file is gone when it is opened: deleted or replaced
    /// between the lookup and the open, or removed behind the server's back. For this request
    /// the object does not exist.
    fn file_gone(&mut self, name: &str, now: Instant) {
        tracing::warn!("{name}: its content file is gone; answering 404");
        self.error(404, &[], false, now)
    }

    fn serve_media(&mut self, head: &RequestHead, name: &str, opened: Opened, now: Instant) {
        let head_only = head.method == Method::Head;
        if !self.svc.cfg.public_reads {
            if let Err(s) = self.authorized(head) {
                return self.deny(s, head_only, now);
            }
        }
        let Some(meta) = self.svc.store.lookup(name) else {
            return self.error(404, &[], head_only, now);
        };
        let etag = etag_of(&meta);
        let last_modified = last_modified_of(&meta);
        let etag = etag.as_str();
        match evaluate(head, etag, last_modified, &head.method) {
            Precondition::Proceed => {}
            Precondition::NotModified => {
                let date = self.date(now);
                let mut out = Vec::with_capacity(256);
                let mut rh = ResponseHead::new(&mut out, 304, date.as_str());
                rh.etag(etag)
                    .last_modified(last_modified)
                    .cors()
                    .connection(self.keep_alive);
                rh.finish();
                return self.respond_bytes(304, out, 0, now);
            }
            Precondition::PreconditionFailed => return self.error(412, &[], head_only, now),
        }
        let size = meta.size_bytes;
        let use_range = head.range.is_some()
            && (head.if_range.is_none() || if_range_allows(head, etag, last_modified));
        let spec = match (&head.range, use_range) {
            (Some(r), true) => parse_range(r, size, self.svc.cfg.limits.ranges_count_max),
            _ => RangeSpec::Full,
        };
        if let RangeSpec::Unsatisfiable = spec {
            return self.error(
                416,
                &[("Content-Range", format!("bytes */{size}"))],
                head_only,
                now,
            );
        }
        // The file, before anything is reserved: a descriptor the cache does not hold is opened
        // by the engine (a cold directory lookup must not stall the worker), then the request is
        // served again from the top.
        let mut file = None;
        if !head_only && size > 0 {
            let first_try = matches!(opened, Opened::NotYet);
            file = match opened {
                Opened::File(id, f) if id == meta.id => Some(f),
                _ => self.svc.store.cached_file(&meta),
            };
            if file.is_none() && first_try {
                let path = self.svc.store.content_path(&meta).and_then(|p| {
                    std::ffi::CString::new(std::os::unix::ffi::OsStringExt::into_vec(
                        p.into_os_string(),
                    ))
                    .ok()
                });
                if let Some(path) = path {
                    self.state = State::Opening(Box::new(Opening {
                        head: head.clone(),
                        name: name.to_owned(),
                        meta,
                        path: Some(path),
                    }));
                    return;
                }
            }
        }
        let (status, body_len) = match &spec {
            RangeSpec::Full => (200, size),
            RangeSpec::Single(r) => (206, r.len()),
            RangeSpec::Multi(_) => (206, 0), // set from the plan below
            RangeSpec::Unsatisfiable => unreachable!(),
        };

        // Admission control: a stream with a body reserves before its first byte.
        let mut admission = None;
        let mut pace = None;
        if !head_only && size > 0 {
            if self.svc.rm.is_critical() {
                return self.refuse("critical_event", now);
            }
            // A playlist (bitrate 0) reserves its buffer but no bandwidth, and is not paced.
            let known = !matches!(
                meta.bitrate_source,
                BitrateSource::Default | BitrateSource::Playlist
            );
            let factor = if is_segment(name) {
                self.svc.cfg.pacing.factor_segment
            } else {
                self.svc.cfg.pacing.factor_progressive
            };
            let paced = self.svc.cfg.pacing.enabled && known;
            let rate_bps = if paced {
                (meta.bitrate_bps as f64 * factor) as u64
            } else {
                meta.bitrate_bps
            };
            let reserve = |r: Resource, n: u64| self.svc.rm.reserve(r, n);
            let taken = reserve(Resource::NetBps(self.info.listener), rate_bps).and_then(|net| {
                let disk = reserve(Resource::DiskReadBps, rate_bps)?;
                let memory = reserve(Resource::MemoryBytes, self.svc.cfg.stream_buffer_bytes)?;
                Ok(Admission {
                    _net: net,
                    _disk: disk,
                    _memory: memory,
                })
            });
            match taken {
                Ok(a) => admission = Some(a),
                Err(e) => {
                    tracing::debug!("stream of {name} refused: {e}");
                    return self.refuse(&e.resource.to_string(), now);
                }
            }
            if paced && rate_bps > 0 {
                pace = Some(Pace {
                    start: now,
                    burst_bytes: (meta.bitrate_bps as f64 / 8.0
                        * self.svc.cfg.pacing.initial_burst_secs)
                        as u64,
                    rate_bytes_per_sec: rate_bps as f64 / 8.0,
                });
            }
        }
        let file = if head_only || size == 0 {
            None
        } else if file.is_some() {
            file
        } else {
            self.svc.metrics.file_opened(false);
            match self.svc.store.open_file(&meta) {
                Ok(f) => Some(f),
                Err(StoreError::NotFound { .. }) => return self.file_gone(name, now),
                Err(e) => {
                    tracing::error!("cannot open {name}: {e}");
                    let status = if matches!(e, StoreError::Reserve(_)) {
                        503
                    } else {
                        500
                    };
                    return self.error(status, &[], false, now);
                }
            }
        };
        let date = self.date(now);
        let mut out = Vec::with_capacity(512);
        let mut rh = ResponseHead::new(&mut out, status, date.as_str());
        let body = match spec {
            RangeSpec::Multi(ranges) => {
                let boundary = http::multipart::make_boundary(
                    meta.id ^ (now.saturating_duration_since(self.svc.started).as_nanos() as u64),
                );
                let plan = plan_byteranges(&ranges, &meta.content_type, size, &boundary);
                rh.content_type(&plan.content_type)
                    .content_length(plan.body_bytes);
                if let Some(r) = &mut self.req {
                    r.body_bytes = plan.body_bytes;
                }
                match file {
                    Some(file) => BodyOut::Multi {
                        file,
                        parts: plan.parts.into_iter().collect(),
                        current: None,
                        closing: Some(plan.closing),
                    },
                    None => BodyOut::None,
                }
            }
            RangeSpec::Single(r) => {
                rh.content_type(&meta.content_type)
                    .content_length(body_len)
                    .content_range(r, size);
                match file {
                    Some(file) => BodyOut::File {
                        file,
                        offset: r.start,
                        remaining: r.len(),
                    },
                    None => BodyOut::None,
                }
            }
            _ => {
                rh.content_type(&meta.content_type).content_length(size);
                match file {
                    Some(file) => BodyOut::File {
                        file,
                        offset: 0,
                        remaining: size,
                    },
                    None => BodyOut::None,
                }
            }
        };
        rh.accept_ranges()
            .etag(etag)
            .last_modified(last_modified)
            .cors()
            .connection(self.keep_alive);
        rh.finish();
        if let Some(r) = &mut self.req {
            r.status = status;
            if status != 206 || !matches!(body, BodyOut::Multi { .. }) {
                r.body_bytes = if head_only { 0 } else { body_len };
            }
        }
        if !matches!(body, BodyOut::None) {
            self.svc.metrics.active_streams.inc();
        }
        self.state = State::Respond(Box::new(Respond {
            head: Some(out),
            body,
            close_after: !self.keep_alive,
            _admission: admission,
            pace,
            body_sent: 0,
            last_progress: now,
        }));
    }

    fn start_upload(&mut self, head: &RequestHead, name: &str, now: Instant) {
        if let Err(why) = self.authorized(head) {
            self.keep_alive = false;
            return self.deny(why, false, now);
        }
        let kind = match (head.content_length, head.chunked) {
            (_, true) => BodyKind::Chunked(ChunkedDecoder::new(&self.svc.cfg.limits)),
            (Some(n), false) => {
                if n > self.svc.cfg.upload_bytes_max {
                    self.keep_alive = false;
                    self.svc.metrics.limit("body_too_large");
                    return self.error(413, &[], false, now);
                }
                BodyKind::Length(n)
            }
            (None, false) => {
                self.keep_alive = false;
                self.svc.metrics.limit("length_required");
                return self.error(411, &[], false, now);
            }
        };
        if self.svc.rm.is_critical() {
            self.keep_alive = false;
            return self.refuse("critical_event", now);
        }
        // The uploader's own type is kept; one that is not a media type is refused.
        if let Some(ct) = head.content_type.as_deref() {
            if !http::is_valid_media_type(ct) {
                self.keep_alive = false;
                let msg = format!(
                    "{{\"error\":{}}}\n",
                    json_escape(&format!(
                        "Content-Type {ct:?} is not a media type (type/subtype, e.g. video/mp4); \
                         leave it out to have the type taken from the name's extension"
                    ))
                );
                return self.respond_small(400, "application/json", msg.as_bytes(), false, now);
            }
        }
        let bitrate_bps = query_param(head.query.as_deref(), "bitrate")
            .and_then(|b| b.parse::<u64>().ok())
            .filter(|b| *b > 0);
        let options = UploadOptions {
            expected_len: head.content_length.filter(|_| !head.chunked),
            bitrate_bps,
            // `application/octet-stream` is what generic tools send for "unknown": the name's
            // extension knows better.
            content_type: head
                .content_type
                .clone()
                .filter(|ct| !ct.eq_ignore_ascii_case("application/octet-stream")),
        };
        let replaced = self.svc.store.lookup(name).is_some();
        match self.svc.store.create_upload(name, options) {
            Ok(upload) => {
                if head.expect_continue {
                    let mut out = Vec::with_capacity(32);
                    http::continue_response(&mut out);
                    self.pending = Some(out);
                }
                self.state = State::Body(Box::new(Receiving {
                    upload,
                    kind,
                    last_progress: now,
                    replaced,
                }));
                if let BodyKind::Length(0) = self.body_kind() {
                    self.finish_body();
                }
            }
            Err(e) => {
                self.keep_alive = false;
                self.store_error(e, now);
            }
        }
    }

    fn body_kind(&self) -> &BodyKind {
        match &self.state {
            State::Body(r) => &r.kind,
            _ => unreachable!(),
        }
    }

    fn store_error(&mut self, e: StoreError, now: Instant) {
        let status = match &e {
            StoreError::InvalidName { .. } => 400,
            StoreError::NotFound { .. } => 404,
            StoreError::NoSpace { .. } => 507,
            StoreError::Reserve(r) if r.resource == Resource::DiskSpaceBytes => 507,
            StoreError::Reserve(_) => 503,
            StoreError::LengthMismatch { .. } => 400,
            StoreError::TooLarge { .. } => 413,
            _ => 500,
        };
        if status >= 500 {
            tracing::warn!("storage error: {e}");
        } else {
            tracing::debug!("storage refused a request: {e}");
        }
        // The message tells the uploader what happened; it names no path outside the data dir.
        let date = self.date(now);
        let msg = format!("{{\"error\":{}}}\n", json_escape(&e.to_string()));
        let mut out = Vec::with_capacity(256 + msg.len());
        let mut head = ResponseHead::new(&mut out, status, date.as_str());
        head.content_type("application/json")
            .content_length(msg.len() as u64)
            .cors()
            .connection(self.keep_alive);
        if status == 503 {
            head.retry_after(self.svc.cfg.retry_after_secs);
        }
        head.finish();
        out.extend_from_slice(msg.as_bytes());
        let n = msg.len() as u64;
        self.respond_bytes(status, out, n, now);
    }

    /// Feeds upload body bytes; returns how many were consumed.
    fn feed_body(&mut self, input: &[u8], now: Instant) -> usize {
        let State::Body(r) = &mut self.state else {
            return 0;
        };
        r.last_progress = now;
        let mut write_err = None;
        let (consumed, done) = match &mut r.kind {
            BodyKind::Length(remaining) => {
                let n = (*remaining).min(input.len() as u64) as usize;
                if let Err(e) = r.upload.write_all(&input[..n]) {
                    write_err = Some(e);
                }
                *remaining -= n as u64;
                self.unread_body = Some(BodyLeft::Bytes(*remaining));
                (n, *remaining == 0)
            }
            BodyKind::Chunked(dec) => {
                let upload = &mut r.upload;
                let limit = self.svc.cfg.upload_bytes_max;
                let res = dec.decode_with(input, |data| {
                    if write_err.is_none() {
                        if upload.written_bytes() + data.len() as u64 > limit {
                            write_err = Some(StoreError::TooLarge {
                                name: upload.name().to_string(),
                                limit_bytes: limit,
                            });
                        } else if let Err(e) = upload.write_all(data) {
                            write_err = Some(e);
                        }
                    }
                });
                match res {
                    Ok(p) => (p.consumed_bytes, p.done),
                    Err(e) => {
                        self.keep_alive = false;
                        // Malformed framing: where the body ends is unknown, so no lingering.
                        self.unread_body = None;
                        self.svc.metrics.limit(Self::limit_reason(e.status));
                        self.error(e.status, &[], false, now);
                        return input.len();
                    }
                }
            }
        };
        self.svc.metrics.received_bytes.inc_by(consumed as u64);
        if let Some(e) = write_err {
            // The rest of a chunked body is read and dropped after the answer by this decoder.
            if let State::Body(r) = &mut self.state {
                if let BodyKind::Chunked(dec) = std::mem::replace(&mut r.kind, BodyKind::Length(0))
                {
                    self.unread_body = Some(BodyLeft::Chunked(Box::new(dec)));
                }
            }
            // Dropping the upload removes its temp file and releases its reservation.
            self.keep_alive = false;
            self.store_error(e, now);
            return input.len();
        }
        if done {
            self.finish_body();
        }
        consumed
    }

    fn finish_body(&mut self) {
        let State::Body(r) = std::mem::replace(&mut self.state, State::Close) else {
            unreachable!()
        };
        self.unread_body = None;
        let Receiving {
            upload, replaced, ..
        } = *r;
        let job: oasis_engine::Job = Box::new(move || Box::new(upload.finish()) as JobResult);
        self.state = State::Job(Some(job), JobKind::Finish { replaced });
    }

    fn finish_response(&mut self, now: Instant) {
        let State::Respond(r) = std::mem::replace(&mut self.state, State::Head { since: None })
        else {
            return;
        };
        if !matches!(r.body, BodyOut::None) {
            self.svc.metrics.active_streams.dec();
        }
        if let Some(req) = self.req.take() {
            self.log(&req, now);
        }
        self.last_activity = now;
        if r.close_after || self.shutting_down {
            self.state = match self.unread_body.take() {
                Some(left) if !self.shutting_down => State::Discard(Discard {
                    left,
                    read_bytes: 0,
                    until: now + LINGER_TIME,
                    idle_until: now + LINGER_IDLE,
                }),
                _ => State::Close,
            };
        }
    }

    /// Reads and drops what a client sends after an early answer; closes once the body is all
    /// read or a bound of the lingering close is hit.
    fn discard(&mut self, input: &[u8], now: Instant) -> usize {
        let State::Discard(d) = &mut self.state else {
            return 0;
        };
        let n = input.len() as u64;
        d.read_bytes += n;
        d.idle_until = now + LINGER_IDLE;
        let body_ended = match &mut d.left {
            BodyLeft::Bytes(left) => {
                *left = left.saturating_sub(n);
                *left == 0
            }
            // A framing error ends the discard too: the body's end cannot be found.
            BodyLeft::Chunked(dec) => dec.decode_with(input, |_| {}).map_or(true, |p| p.done),
        };
        if body_ended || d.read_bytes >= LINGER_BYTES_MAX {
            self.state = State::Close;
        }
        input.len()
    }

    fn log(&self, req: &ReqLog, now: Instant) {
        let elapsed = now.saturating_duration_since(req.started);
        self.svc.metrics.status(req.status);
        self.svc
            .metrics
            .record_response_us(elapsed.as_micros() as u64);
        if !self.svc.log.is_on() {
            return;
        }
        let line = access_line(
            self.info.peer.map(|p| p.ip()),
            self.svc.clock.at(now),
            req,
            elapsed,
        );
        self.svc.log.write(line);
    }
}

impl HttpSession {
    /// How many of `want` body bytes pacing lets the stream send now, or when to ask again.
    fn pace_allows(r: &Respond, want: u64, now: Instant) -> Result<u64, Instant> {
        let Some(p) = &r.pace else { return Ok(want) };
        let elapsed = now.saturating_duration_since(p.start).as_secs_f64();
        let budget = p.burst_bytes as f64 + p.rate_bytes_per_sec * elapsed;
        let slack = budget - r.body_sent as f64;
        let need = want.min(PACE_CHUNK_MIN_BYTES) as f64;
        if slack >= need {
            Ok(want.min(slack as u64))
        } else {
            let secs = (need - slack) / p.rate_bytes_per_sec;
            Err(now + Duration::from_secs_f64(secs.clamp(0.001, 60.0)))
        }
    }
}

impl Session for HttpSession {
    fn on_input(&mut self, input: &[u8], now: Instant) -> usize {
        self.last_activity = now;
        match &mut self.state {
            State::Head { since } => {
                if since.is_none() && !input.is_empty() {
                    *since = Some(now);
                }
                let parsed = match parse_request(input, &self.svc.cfg.limits) {
                    // The engine's input buffer may be exactly the head limit: a full buffer with no
                    // complete head is a head over the limit.
                    Ok(Parse::Partial) if input.len() >= self.svc.cfg.limits.header_bytes_max => {
                        Err(http::HttpError::new(
                            431,
                            "request head larger than header_bytes_max",
                        ))
                    }
                    other => other,
                };
                match parsed {
                    Ok(Parse::Partial) => 0,
                    Ok(Parse::Complete(head, n)) => {
                        self.handle(head, now);
                        if matches!(self.state, State::Body(_)) {
                            n + self.feed_body(&input[n..], now)
                        } else {
                            n
                        }
                    }
                    Err(e) => {
                        self.keep_alive = false;
                        self.svc.metrics.limit(Self::limit_reason(e.status));
                        tracing::debug!(peer = ?self.info.peer, "bad request: {e}");
                        self.req = Some(ReqLog::unparsed(e.status, now));
                        self.error(e.status, &[], false, now);
                        input.len()
                    }
                }
            }
            State::Body(_) => self.feed_body(input, now),
            State::Discard(_) => self.discard(input, now),
            _ => 0,
        }
    }

    fn on_peer_closed(&mut self, _now: Instant) {
        match self.state {
            State::Head { .. } | State::Body(_) | State::Discard(_) => self.state = State::Close,
            // Half-closed clients still get their answer.
            _ => self.keep_alive = false,
        }
        if let State::Respond(r) = &mut self.state {
            r.close_after = true;
        }
    }

    fn poll_transmit(&mut self, now: Instant) -> Transmit {
        if let Some(p) = self.pending.take() {
            return Transmit::Bytes(p);
        }
        match &mut self.state {
            State::Close => Transmit::Close,
            State::Head { .. } | State::Body(_) | State::Discard(_) => Transmit::Idle,
            State::Job(job, _) => match job.take() {
                Some(j) => Transmit::Job(j),
                None => Transmit::Idle,
            },
            State::Opening(o) => match o.path.take() {
                Some(path) => Transmit::Open(path),
                None => Transmit::Idle,
            },
            State::Respond(r) => {
                if let Some(h) = r.head.take() {
                    // A head and the start of a plain body leave in one send when pacing allows.
                    if let BodyOut::File {
                        file,
                        offset,
                        remaining,
                    } = &r.body
                    {
                        let (file, offset, want) = (Arc::clone(file), *offset, *remaining);
                        if want > 0 && h.len() <= HEAD_WITH_BODY_BYTES_MAX {
                            if let Ok(len) = Self::pace_allows(r, want, now) {
                                return Transmit::FileWithHead {
                                    head: h,
                                    file,
                                    offset,
                                    len,
                                };
                            }
                        }
                    }
                    return Transmit::Bytes(h);
                }
                let allowed = |r: &Respond, want: u64| Self::pace_allows(r, want, now);
                match &mut r.body {
                    BodyOut::File {
                        file,
                        offset,
                        remaining,
                    } if *remaining > 0 => {
                        let (file, offset, want) = (Arc::clone(file), *offset, *remaining);
                        match allowed(r, want) {
                            Ok(len) => Transmit::File { file, offset, len },
                            Err(at) => Transmit::WaitUntil(at),
                        }
                    }
                    BodyOut::Multi {
                        file,
                        parts,
                        current,
                        closing,
                    } => {
                        if let Some((offset, remaining)) = current {
                            if *remaining > 0 {
                                let (file, offset, want) = (Arc::clone(file), *offset, *remaining);
                                return match allowed(r, want) {
                                    Ok(len) => Transmit::File { file, offset, len },
                                    Err(at) => Transmit::WaitUntil(at),
                                };
                            }
                        }
                        if let Some(part) = parts.pop_front() {
                            *current = Some((part.range.start, part.range.len()));
                            return Transmit::Bytes(part.header);
                        }
                        if let Some(c) = closing.take() {
                            return Transmit::Bytes(c);
                        }
                        self.finish_response(now);
                        self.poll_transmit(now)
                    }
                    _ => {
                        self.finish_response(now);
                        self.poll_transmit(now)
                    }
                }
            }
        }
    }

    fn on_sent(&mut self, result: std::io::Result<u64>, returned: Option<Vec<u8>>, now: Instant) {
        let n = match result {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(peer = ?self.info.peer, "send failed: {e}");
                if let State::Respond(_) = self.state {
                    if let Some(r) = &mut self.req {
                        r.status = if r.head_sent { r.status } else { 499 };
                    }
                    self.finish_response(now);
                }
                self.state = State::Close;
                return;
            }
        };
        self.svc.metrics.sent_bytes.inc_by(n);
        if let Some(req) = &mut self.req {
            if !req.head_sent {
                req.head_sent = true;
                self.svc
                    .metrics
                    .record_ttfb_us(now.saturating_duration_since(req.started).as_micros() as u64);
            }
        }
        if let State::Respond(r) = &mut self.state {
            r.last_progress = now;
            if returned.is_none() {
                r.body_sent += n;
                match &mut r.body {
                    BodyOut::File {
                        offset, remaining, ..
                    } => {
                        *offset += n;
                        *remaining -= n.min(*remaining);
                    }
                    BodyOut::Multi {
                        current: Some((offset, remaining)),
                        ..
                    } => {
                        *offset += n;
                        *remaining -= n.min(*remaining);
                    }
                    _ => debug_assert!(false, "file bytes sent without a file body"),
                }
            }
        }
    }

    fn on_job_done(&mut self, result: JobResult, now: Instant) {
        let State::Job(_, kind) = std::mem::replace(&mut self.state, State::Close) else {
            return;
        };
        if result.is::<JobRejected>() {
            self.keep_alive = false;
            return self.refuse("job_queue", now);
        }
        match kind {
            JobKind::Finish { replaced } => match result
                .downcast::<Result<Arc<ObjectMeta>, StoreError>>()
            {
                Ok(r) => match *r {
                    Ok(meta) => {
                        let body = format!("{}\n", meta_json(&meta));
                        let status = if replaced { 200 } else { 201 };
                        self.respond_small(status, "application/json", body.as_bytes(), false, now);
                    }
                    Err(e) => {
                        self.keep_alive = false;
                        self.store_error(e, now)
                    }
                },
                Err(_) => self.error(500, &[], false, now),
            },
            JobKind::DeletePrefix => match result.downcast::<PrefixDeleted>() {
                Ok(r) => match *r {
                    Ok((names, more)) => {
                        let mut body = String::from("{\"deleted\":[");
                        for (i, n) in names.iter().enumerate() {
                            if i > 0 {
                                body.push(',');
                            }
                            body.push_str(&json_escape(n));
                        }
                        let _ =
                            writeln!(body, "],\"count\":{},\"truncated\":{more}}}", names.len());
                        self.respond_small(200, "application/json", body.as_bytes(), false, now);
                    }
                    Err(e) => self.store_error(e, now),
                },
                Err(_) => self.error(500, &[], false, now),
            },
            JobKind::Delete => match result.downcast::<Result<(), StoreError>>() {
                Ok(r) => match *r {
                    Ok(()) => {
                        let date = self.date(now);
                        let mut out = Vec::with_capacity(128);
                        let mut rh = ResponseHead::new(&mut out, 204, date.as_str());
                        rh.cors().connection(self.keep_alive);
                        rh.finish();
                        self.respond_bytes(204, out, 0, now);
                    }
                    Err(e) => self.store_error(e, now),
                },
                Err(_) => self.error(500, &[], false, now),
            },
        }
    }

    fn on_opened(&mut self, result: std::io::Result<File>, now: Instant) {
        let State::Opening(o) = std::mem::replace(&mut self.state, State::Close) else {
            return;
        };
        let adopted = match result {
            Ok(f) => self
                .svc
                .store
                .adopt_file(&o.meta, f)
                .map_err(|e| e.to_string()),
            // Answered here, without a second lookup of the path on the worker.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return self.file_gone(&o.name, now)
            }
            Err(e) => Err(e.to_string()),
        };
        let opened = match adopted {
            Ok(f) => {
                self.svc.metrics.file_opened(true);
                Opened::File(o.meta.id, f)
            }
            Err(e) => {
                // The synchronous open that follows reports it (503 when no descriptor may be
                // reserved, 500 otherwise).
                tracing::debug!("asynchronous open of {} failed: {e}", o.name);
                Opened::Failed
            }
        };
        self.serve_media(&o.head, &o.name, opened, now);
    }

    fn deadline(&self) -> Option<Instant> {
        let cfg = &self.svc.cfg;
        match &self.state {
            State::Head { since: Some(t) } => Some(*t + cfg.header_timeout),
            State::Head { since: None } => Some(self.last_activity + cfg.keepalive_timeout),
            State::Body(r) => Some(r.last_progress + cfg.body_timeout),
            State::Respond(r) => Some(r.last_progress + cfg.send_timeout),
            State::Discard(d) => Some(d.until.min(d.idle_until)),
            State::Job(..) | State::Opening(_) | State::Close => None,
        }
    }

    fn wants_close(&self) -> bool {
        matches!(self.state, State::Close)
    }

    fn on_deadline(&mut self, now: Instant) {
        match &self.state {
            State::Head { since: Some(_) } | State::Body(_) => {
                self.keep_alive = false;
                self.svc.metrics.limit("timeout");
                if self.req.is_none() {
                    self.req = Some(ReqLog::unparsed(408, now));
                }
                self.error(408, &[], false, now);
            }
            State::Head { since: None } | State::Discard(_) => self.state = State::Close,
            State::Respond(_) => {
                self.svc.metrics.limit("send_timeout");
                if let Some(r) = &mut self.req {
                    r.status = if r.head_sent { r.status } else { 408 };
                }
                self.finish_response(now);
                self.state = State::Close;
            }
            State::Job(..) | State::Opening(_) | State::Close => {}
        }
    }

    fn on_shutdown(&mut self, _now: Instant) {
        self.shutting_down = true;
        self.keep_alive = false;
        match &mut self.state {
            State::Head { .. } | State::Discard(_) => self.state = State::Close,
            State::Respond(r) => r.close_after = true,
            _ => {}
        }
    }

    fn wants_input(&self) -> bool {
        matches!(
            self.state,
            State::Head { .. } | State::Body(_) | State::Discard(_)
        )
    }

    fn phase(&self) -> Phase {
        match &self.state {
            State::Respond(r) if !matches!(r.body, BodyOut::None) && r.head.is_none() => {
                Phase::Data
            }
            _ => Phase::Command,
        }
    }

    fn on_close(&mut self, now: Instant) {
        if let State::Respond(_) = self.state {
            if let Some(r) = &mut self.req {
                if !r.head_sent {
                    r.status = 499;
                }
            }
            self.finish_response(now);
        }
    }
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;
    use proptest::prelude::*;

    /// The line as it was built before it was written piece by piece (one `String` per piece).
    fn reference_line(
        ip: Option<IpAddr>,
        time: SystemTime,
        req: &ReqLog,
        elapsed: Duration,
    ) -> String {
        let ip = ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into());
        let esc = |s: &Option<String>| s.as_deref().unwrap_or("-").replace('"', "\\\"");
        let (method, target) = match &req.method {
            Some(m) => (m.as_str().to_owned(), req.target.replace('"', "%22")),
            None => ("-".to_owned(), "-".to_owned()),
        };
        format!(
            "{ip} - - [{}] \"{} {} HTTP/1.{}\" {} {} \"{}\" \"{}\" {:.3}\n",
            crate::access_log::log_time(time),
            method,
            target,
            req.version_minor,
            req.status,
            req.body_bytes,
            esc(&req.referer),
            esc(&req.user_agent),
            elapsed.as_secs_f64()
        )
    }

    proptest! {
        #[test]
        fn access_line_matches_the_reference(
            v6 in any::<bool>(),
            ip in any::<u128>(),
            secs in 0u64..100_000_000_000,
            method in proptest::option::of(prop_oneof![
                Just(Method::Get),
                Just(Method::Head),
                "[A-Z]{1,7}".prop_map(|m| Method::from_token(&m)),
            ]),
            target in "[/a-z\"?=%]{0,20}",
            referer in proptest::option::of("[ -~]{0,20}"),
            user_agent in proptest::option::of("[ -~\"]{0,20}"),
            status in 100u16..600,
            body_bytes in any::<u64>(),
            elapsed_us in 0u64..10_000_000_000,
        ) {
            let ip = if v6 {
                IpAddr::from(ip.to_be_bytes())
            } else {
                IpAddr::from((ip as u32).to_be_bytes())
            };
            let now = Instant::now();
            let mut req = ReqLog::unparsed(status, now);
            req.method = method;
            req.target = target;
            req.referer = referer;
            req.user_agent = user_agent;
            req.body_bytes = body_bytes;
            let time = UNIX_EPOCH + Duration::from_secs(secs);
            let elapsed = Duration::from_micros(elapsed_us);
            for ip in [Some(ip), None] {
                prop_assert_eq!(
                    access_line(ip, time, &req, elapsed),
                    reference_line(ip, time, &req, elapsed)
                );
            }
        }
    }

    #[test]
    fn refusals_say_which_side_to_fix() {
        assert_eq!(Denied::NoTokenConfigured.status(), 403);
        let server_side = Denied::NoTokenConfigured.reason();
        assert!(
            server_side.contains("[http] api_token") && server_side.contains("OASIS_API_TOKEN")
        );
        assert!(
            !server_side.contains("--token"),
            "the client is not at fault: {server_side}"
        );
        for client_side in [Denied::NoCredentials, Denied::NotBearer, Denied::WrongToken] {
            assert_eq!(client_side.status(), 401);
        }
        assert!(Denied::NoCredentials
            .reason()
            .contains("Authorization: Bearer"));
        assert!(Denied::WrongToken
            .reason()
            .contains("not this server's API token"));
    }

    #[test]
    fn segments_by_extension_ignore_case() {
        for (name, segment) in [
            ("a/seg-1.ts", true),
            ("a/seg-1.M4S", true),
            ("index.m3u8", true),
            ("movie.mp4", false),
            ("ts", false),
            ("a.ts.mp4", false),
        ] {
            assert_eq!(is_segment(name), segment, "{name}");
        }
    }
}
