//! The HTTP/1.1 session, one per connection: the state machine the engine drives through
//! [`Session`]. It parses request heads, routes them ([`super::api::route`]), asks the pure
//! modules below it for decisions and bytes (media plans, replies, pacing, upload checks),
//! reserves with the Resource Manager, looks objects up in the store's in-memory index, and
//! turns each state into the next [`Transmit`]. It never touches a socket or reads the clock
//! (`now` comes in), and it never waits on the disk or the database: opens, an upload's temp
//! file and its writes, and commits go to the engine (`Transmit::Open`, `Create`, `Write`,
//! `Job`).

use std::fs::File;
use std::sync::Arc;
use std::time::Instant;

use oasis_engine::resource::{External, Reservation, Resource, ResourceManager};
use oasis_engine::{
    ConnInfo, Job, JobRejected, JobResult, Phase, ReserveError, Service, Session, Transmit,
};
use oasis_storage::{ObjectMeta, StoreError, Upload, UploadTicket};

use super::access_line::{access_line, ReqLog};
use super::api::{self, route, PrefixDeleted, Route};
use super::media::{media_response, not_modified, plan_media, Framing, MediaPlan};
use super::pacing::{is_segment, stream_rate, Pace, StreamRate};
use super::reply::{self, limit_reason};
use super::respond::{Admission, Respond};
use super::service::{HttpService, Inner, Live};
use super::upload::{self, BodyKind, BodyLeft, Discard, Fed, Receiving};
use crate::auth::link::LINK_PREFIX;
use crate::auth::policy::Action;
use crate::http::{self, parse_request, ImfDate, Method, Parse, RangeSpec, RequestHead};

mod admin;
mod api_body;
mod control;
mod get;
mod guard;
mod pool;
mod proxy;
mod put;

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
            from_pool_peer: false,
            viewer: None,
        })
    }

    fn refusal(&self) -> &[u8] {
        self.live.refusal()
    }
}

enum JobKind {
    /// An upload that found no version id at hand: reserving ids (a catalog transaction) and
    /// creating its temp file run as a job.
    Create(Box<BodyStart>),
    Finish {
        replaced: bool,
    },
    Delete(String),
    /// `DELETE /api/objects?prefix=P`: the names deleted, and whether more are left.
    DeletePrefix(String),
    /// An API job answering JSON (`admin.rs`); account changes are audited as `action` on
    /// `object`.
    Json {
        action: &'static str,
        object: String,
    },
    /// Where the pool holds an object this node does not serve (`pool.rs`).
    Locate(Box<pool::Locating>),
    /// A Configuration Manager call (`/api/config`) or `/api/pool`: its `ControlReply` is the
    /// answer.
    Control {
        head_only: bool,
        /// A `PATCH` (audited), not a `GET`.
        patch: bool,
    },
}

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

/// What an upload's body needs once its temp file exists.
struct BodyStart {
    kind: BodyKind,
    replaced: bool,
    expect_continue: bool,
}

/// An upload whose temp file the engine is creating (`Transmit::Create`).
struct Creating {
    ticket: UploadTicket,
    body: BodyStart,
    /// Taken when the create is handed to the engine.
    path: Option<std::ffi::CString>,
}

enum State {
    /// Waiting for a request head; `since` is when its first byte arrived.
    Head {
        since: Option<Instant>,
    },
    Creating(Box<Creating>),
    Body(Box<Receiving>),
    /// An API request's body being read into memory (`api_body`).
    ApiBody(Box<api_body::ApiBody>),
    Opening(Box<Opening>),
    /// A job is queued (`Some`) or running (`None`).
    Job(Option<Job>, JobKind),
    Respond(Box<Respond>),
    /// A proxied GET waiting for the holder's response head (`proxy.rs`).
    Proxy(Box<proxy::Proxying>),
    /// Lingering close: the answer went out before the request's body was read; what the client
    /// still sends is read and dropped (bounded), so it reads the answer instead of a reset.
    Discard(Discard),
    Close,
}

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
    /// The current request came from another node of the pool (`X-Oasis-Pool`).
    from_pool_peer: bool,
    /// This connection's hold as a viewer of an HLS/DASH package (`get.rs`).
    viewer: Option<get::Viewer>,
}

impl HttpSession {
    fn date(&self, now: Instant) -> ImfDate {
        ImfDate::new(self.svc.clock.at(now))
    }

    /// Starts the response to the current request with an error page (and optional extra header).
    fn error(&mut self, status: u16, extra: &[(&str, String)], head_only: bool, now: Instant) {
        let date = self.date(now);
        let (out, body) =
            reply::error_page(status, extra, head_only, date.as_str(), self.keep_alive);
        self.respond_bytes(status, out, body, now);
    }

    /// Starts a response that is all in `out` (head and body).
    fn respond_bytes(&mut self, status: u16, out: Vec<u8>, body_bytes: u64, now: Instant) {
        if let Some(r) = &mut self.req {
            r.status = status;
            r.body_bytes = body_bytes;
        }
        let respond = Respond::bytes(out, !self.keep_alive, now);
        self.state = State::Respond(Box::new(respond));
    }

    /// Refuses with 503 and `Retry-After`, counted by `reason` in `oasis_admissions_refused_total`.
    fn refuse(&mut self, reason: &str, now: Instant) {
        self.svc.metrics.refused(reason);
        let retry = [("Retry-After", self.svc.cfg.retry_after_secs.to_string())];
        self.error(503, &retry, false, now);
    }

    fn respond_small(&mut self, status: u16, ct: &str, body: &[u8], head_only: bool, now: Instant) {
        let date = self.date(now);
        let (out, n) = reply::small(status, ct, body, head_only, date.as_str(), self.keep_alive);
        self.respond_bytes(status, out, n, now);
    }

    fn store_error(&mut self, e: StoreError, now: Instant) {
        let date = self.date(now);
        let retry_after_secs = self.svc.cfg.retry_after_secs;
        let (status, out, n) =
            reply::store_error(&e, retry_after_secs, date.as_str(), self.keep_alive);
        if status >= 500 {
            tracing::warn!("storage error: {e}");
        } else {
            tracing::debug!("storage refused a request: {e}");
        }
        self.respond_bytes(status, out, n, now);
    }

    fn handle(&mut self, mut head: RequestHead, now: Instant) {
        // Each request starts on the settings in force; a reload never changes them mid-request.
        if let Some(svc) = self.live.newer_than(self.svc.generation) {
            self.svc = svc;
        }
        self.requests += 1;
        self.keep_alive = head.keep_alive
            && !self.shutting_down
            && self.requests < self.svc.cfg.keepalive_requests_max
            && (!head.has_body() || route(&head.path, &head.method).reads_body());
        // A signed link is checked on its path as sent: the link format decodes the name itself,
        // so decoding it here first would let `%2F` through and refuse escaped names.
        let signed_path = head
            .path
            .starts_with(LINK_PREFIX)
            .then(|| http::request::raw_path(&head.target).to_owned());
        self.req = Some(ReqLog::of(&mut head, self.svc.log.is_on(), now));
        self.unread_body = BodyLeft::of(&head, &self.svc.cfg.limits);
        self.from_pool_peer = head.pool_peer;
        let head_only = head.method == Method::Head;
        match route(&head.path, &head.method) {
            Route::MediaRead(name) => {
                let read = self.svc.cfg.access.rule_for(name).read;
                if self.guard(&head, Action::Read(name, read), now).is_some() {
                    self.serve_media(&head, name, Opened::NotYet, now)
                }
            }
            Route::SignedRead => {
                self.serve_signed(&head, signed_path.as_deref().unwrap_or_default(), now)
            }
            Route::MediaPut(name) => self.start_upload(&head, name, now),
            Route::MediaDelete(name) => {
                if self.guard(&head, Action::Write(name), now).is_some()
                    && !self.pool_refuses_write(now)
                {
                    let job = self.delete_job(name.to_owned(), head.pool_peer);
                    self.state = State::Job(Some(job), JobKind::Delete(name.to_owned()));
                }
            }
            Route::MediaOptions => {
                let date = self.date(now);
                let mut out = Vec::with_capacity(512);
                http::preflight_response(self.keep_alive, 86_400, date.as_str(), &mut out);
                self.respond_bytes(204, out, 0, now);
            }
            Route::Healthz => self.respond_small(200, "text/plain", b"ok\n", head_only, now),
            Route::Metrics => {
                if self.guard(&head, Action::Metrics, now).is_none() {
                    return;
                }
                let workers = self
                    .svc
                    .engine
                    .read()
                    .ok()
                    .and_then(|e| e.clone())
                    .map(|e| e.workers())
                    .unwrap_or_default();
                let body = self.svc.metrics.render(&workers);
                let ct = "application/openmetrics-text; version=1.0.0; charset=utf-8";
                self.respond_small(200, ct, body.as_bytes(), head_only, now)
            }
            Route::ListObjects => {
                let prefix = api::prefix_param(head.query.as_deref());
                if self.guard(&head, Action::List(&prefix), now).is_some() {
                    let all = if prefix.is_empty() {
                        self.svc.store.list()
                    } else {
                        self.svc.store.list_prefix(&prefix)
                    };
                    let body =
                        api::objects_json(&all, self.svc.cfg.list_objects_max, &self.svc.store);
                    self.respond_small(200, "application/json", body.as_bytes(), head_only, now);
                }
            }
            Route::Status => {
                if self.guard(&head, Action::Status, now).is_some() {
                    let body = api::status_json(&self.svc, now);
                    self.respond_small(200, "application/json", body.as_bytes(), head_only, now);
                }
            }
            Route::Pool => {
                if self.guard(&head, Action::Status, now).is_some() {
                    self.pool_status(head_only, now)
                }
            }
            Route::DeletePrefix => {
                let prefix = api::prefix_param(head.query.as_deref());
                if self
                    .guard(&head, Action::DeletePrefix(&prefix), now)
                    .is_some()
                    && !self.pool_refuses_write(now)
                {
                    self.delete_prefix(prefix, now)
                }
            }
            Route::Scrub => {
                if self.guard(&head, Action::Scrub, now).is_some() {
                    self.start_scrub(now)
                }
            }
            route @ (Route::ListUsers
            | Route::AddUser
            | Route::RemoveUser(_)
            | Route::RotateUser(_)
            | Route::RevokeOld(_)) => {
                if self.guard(&head, Action::Users, now).is_some() {
                    self.users_api(&head, route, now)
                }
            }
            Route::Audit => {
                if self.guard(&head, Action::Audit, now).is_some() {
                    self.audit_api(&head, now)
                }
            }
            Route::ConfigGet => {
                if self.guard(&head, Action::Config, now).is_some() {
                    self.config_get(head_only, now)
                }
            }
            Route::ConfigPatch => {
                // A refusal does not read the body: the connection closes after it.
                let keep_alive = std::mem::replace(&mut self.keep_alive, false);
                if self.guard(&head, Action::Config, now).is_some() {
                    self.keep_alive = keep_alive;
                    self.config_patch(&head, now)
                }
            }
            Route::NotAllowed(allow) => {
                self.error(405, &[("Allow", allow.to_string())], head_only, now)
            }
            Route::NotFound => self.error(404, &[], head_only, now),
        }
    }

    /// `POST /api/scrub`: 202 when a pass starts, 409 when one runs or the scrub is off.
    fn start_scrub(&mut self, now: Instant) {
        let scrubber = self.svc.scrubber.read().ok().and_then(|s| s.clone());
        let (status, msg) = match scrubber {
            None => (
                409,
                "{\"error\":\"the background scrub is off ([storage] scrub_bytes_per_sec = 0); `oasis scrub` checks offline\"}\n",
            ),
            Some(s) if s.request_pass() => (202, "{\"scrub\":\"started\"}\n"),
            Some(_) => (409, "{\"error\":\"a scrub pass is running\"}\n"),
        };
        self.respond_small(status, "application/json", msg.as_bytes(), false, now);
    }

    /// `DELETE /api/objects?prefix=P` on the catalog thread; an empty prefix is refused.
    fn delete_prefix(&mut self, prefix: String, now: Instant) {
        if prefix.is_empty() {
            let msg = "{\"error\":\"DELETE /api/objects needs ?prefix=P (e.g. prefix=show/); \
                       deleting every object at once is not offered\"}\n";
            return self.respond_small(400, "application/json", msg.as_bytes(), false, now);
        }
        let store = Arc::clone(&self.svc.store);
        let max = self.svc.cfg.list_objects_max;
        let pool = self.pool().filter(|_| !self.from_pool_peer);
        let job = api::delete_prefix_job(store, prefix.clone(), max, pool);
        self.state = State::Job(Some(job), JobKind::DeletePrefix(prefix));
    }

    fn finish_response(&mut self, now: Instant) {
        let State::Respond(r) = std::mem::replace(&mut self.state, State::Head { since: None })
        else {
            return;
        };
        if r.streams() {
            self.svc.metrics.active_streams.dec();
        }
        if let Some(req) = self.req.take() {
            self.log(&req, now);
        }
        self.last_activity = now;
        if r.close_after || self.shutting_down {
            self.state = match self.unread_body.take() {
                Some(left) if !self.shutting_down => State::Discard(Discard::new(left, now)),
                _ => State::Close,
            };
        }
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
        let ip = self.info.peer.map(|p| p.ip());
        let line = access_line(ip, self.svc.clock.at(now), req, elapsed);
        self.svc.log.write(line);
    }

    /// Answers a finished job of `kind`.
    fn job_done(&mut self, kind: JobKind, result: JobResult, now: Instant) {
        match kind {
            JobKind::Create(body) => match result.downcast::<Result<Upload, StoreError>>() {
                Ok(r) => match *r {
                    Ok(upload) => self.start_body(upload, *body, now),
                    Err(e) => {
                        self.keep_alive = false;
                        self.store_error(e, now)
                    }
                },
                Err(_) => self.error(500, &[], false, now),
            },
            JobKind::Finish { replaced } => {
                match result.downcast::<Result<Arc<ObjectMeta>, StoreError>>() {
                    Ok(r) => match *r {
                        Ok(meta) => {
                            self.pool_committed(&meta);
                            let body = format!("{}\n", api::meta_json(&meta, false));
                            let status = if replaced { 200 } else { 201 };
                            let action = if replaced { "replace" } else { "upload" };
                            let detail = format!("{} bytes", meta.size_bytes);
                            self.audit(action, &meta.name, "ok", detail, now);
                            let ct = "application/json";
                            self.respond_small(status, ct, body.as_bytes(), false, now);
                        }
                        Err(e) => {
                            self.keep_alive = false;
                            self.store_error(e, now)
                        }
                    },
                    Err(_) => self.error(500, &[], false, now),
                }
            }
            JobKind::DeletePrefix(prefix) => match result.downcast::<PrefixDeleted>() {
                Ok(r) => match *r {
                    Ok((names, more)) => {
                        let detail = format!("{} objects", names.len());
                        self.audit("delete_prefix", &prefix, "ok", detail, now);
                        let body = api::deleted_json(&names, more);
                        self.respond_small(200, "application/json", body.as_bytes(), false, now);
                    }
                    Err(e) => self.store_error(e, now),
                },
                Err(_) => self.error(500, &[], false, now),
            },
            JobKind::Delete(name) => match result.downcast::<Result<(), StoreError>>() {
                Ok(r) => match *r {
                    Ok(()) => {
                        self.audit("delete", &name, "ok", String::new(), now);
                        let date = self.date(now);
                        let out = reply::no_content(date.as_str(), self.keep_alive);
                        self.respond_bytes(204, out, 0, now);
                    }
                    Err(e) => self.store_error(e, now),
                },
                Err(_) => self.error(500, &[], false, now),
            },
            JobKind::Json { action, object } => self.json_done(action, object, result, now),
            JobKind::Locate(l) => self.located(*l, result, now),
            JobKind::Control { head_only, patch } => {
                self.control_done(result, head_only, patch, now)
            }
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
                        match self.state {
                            State::Body(_) => n + self.feed_body(&input[n..], now),
                            State::ApiBody(_) => n + self.feed_api_body(&input[n..], now),
                            _ => n,
                        }
                    }
                    Err(e) => {
                        self.keep_alive = false;
                        self.svc.metrics.limit(limit_reason(e.status));
                        tracing::debug!(peer = ?self.info.peer, "bad request: {e}");
                        self.req = Some(ReqLog::unparsed(e.status, now));
                        self.error(e.status, &[], false, now);
                        input.len()
                    }
                }
            }
            State::Body(_) => self.feed_body(input, now),
            State::ApiBody(_) => self.feed_api_body(input, now),
            State::Discard(d) => {
                if d.feed(input, now) {
                    self.state = State::Close;
                }
                input.len()
            }
            _ => 0,
        }
    }

    fn on_peer_closed(&mut self, _now: Instant) {
        match self.state {
            State::Head { .. } | State::Body(_) | State::ApiBody(_) | State::Discard(_) => {
                self.state = State::Close
            }
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
            State::Head { .. } | State::ApiBody(_) | State::Discard(_) => Transmit::Idle,
            State::Body(r) => r.next_write().unwrap_or(Transmit::Idle),
            State::Creating(c) => match c.path.take() {
                Some(path) => Transmit::Create(path),
                None => Transmit::Idle,
            },
            State::Job(job, _) => match job.take() {
                Some(j) => Transmit::Job(j),
                None => Transmit::Idle,
            },
            State::Opening(o) => match o.path.take() {
                Some(path) => Transmit::Open(path),
                None => Transmit::Idle,
            },
            State::Proxy(p) => p.take_step(),
            State::Respond(r) => match r.poll(now) {
                Some(t) => t,
                None => {
                    self.finish_response(now);
                    self.poll_transmit(now)
                }
            },
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
            r.on_sent(n, returned.is_none(), now);
        }
    }

    fn on_job_done(&mut self, result: JobResult, now: Instant) {
        let kind = match std::mem::replace(&mut self.state, State::Close) {
            State::Job(_, kind) => kind,
            State::Proxy(p) => return self.proxy_opened(*p, result, now),
            State::Respond(r) => {
                self.state = State::Respond(r);
                return self.proxy_chunk(result, now);
            }
            _ => return,
        };
        if result.is::<JobRejected>() {
            self.keep_alive = false;
            return self.refuse("job_queue", now);
        }
        self.job_done(kind, result, now);
    }

    fn on_opened(&mut self, result: std::io::Result<File>, now: Instant) {
        let o = match std::mem::replace(&mut self.state, State::Close) {
            State::Opening(o) => o,
            State::Creating(c) => return self.created(*c, result, now),
            _ => return,
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

    fn on_written(&mut self, result: std::io::Result<()>, data: Vec<u8>, now: Instant) {
        // Anything else: the upload was given up meanwhile (the peer left); the buffer goes.
        let State::Body(r) = &mut self.state else {
            return;
        };
        if let Err(e) = r.written(result, data, now) {
            // Dropping the upload removes its temp file and releases its reservation.
            r.keep_chunked_unread(&mut self.unread_body);
            self.keep_alive = false;
            self.store_error(e, now);
        }
    }

    fn deadline(&self) -> Option<Instant> {
        let cfg = &self.svc.cfg;
        match &self.state {
            State::Head { since: Some(t) } => Some(*t + cfg.header_timeout),
            State::Head { since: None } => {
                let idle = self.last_activity + cfg.keepalive_timeout;
                // A viewer's hold ends before the connection does when no segment follows.
                Some(match &self.viewer {
                    Some(v) => idle.min(v.last_segment + v.grace),
                    None => idle,
                })
            }
            // A piece being written is the server's wait, not the client's.
            State::Body(r) if r.writing => None,
            State::Body(r) => Some(r.last_progress + cfg.body_timeout),
            State::ApiBody(b) => Some(b.last_progress() + cfg.body_timeout),
            State::Respond(r) => Some(r.last_progress + cfg.send_timeout),
            State::Discard(d) => Some(d.deadline()),
            State::Job(..)
            | State::Proxy(_)
            | State::Opening(_)
            | State::Creating(_)
            | State::Close => None,
        }
    }

    fn wants_close(&self) -> bool {
        matches!(self.state, State::Close)
    }

    fn on_deadline(&mut self, now: Instant) {
        match &mut self.state {
            State::Head { since: Some(_) } | State::Body(_) | State::ApiBody(_) => {
                self.keep_alive = false;
                if let State::Body(r) = &mut self.state {
                    // The rest of a chunked body is found by the decoder that read its start.
                    if let Some(dec) = r.take_chunked() {
                        self.unread_body = Some(BodyLeft::Chunked(Box::new(dec)));
                    }
                }
                if let State::ApiBody(b) = &mut self.state {
                    if let Some(left) = b.take_unread() {
                        self.unread_body = Some(left);
                    }
                }
                self.svc.metrics.limit("timeout");
                if self.req.is_none() {
                    self.req = Some(ReqLog::unparsed(408, now));
                }
                self.error(408, &[], false, now);
            }
            State::Head { since: None }
                if self.viewer.is_some()
                    && now < self.last_activity + self.svc.cfg.keepalive_timeout =>
            {
                // No segment within the grace: the viewer's bandwidth goes back, the connection
                // stays open (its next segment is admitted afresh).
                self.viewer = None;
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
            State::Job(..)
            | State::Proxy(_)
            | State::Opening(_)
            | State::Creating(_)
            | State::Close => {}
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
        match &self.state {
            State::Head { .. } | State::ApiBody(_) | State::Discard(_) => true,
            State::Body(r) => r.takes_input(),
            _ => false,
        }
    }

    fn phase(&self) -> Phase {
        match &self.state {
            State::Respond(r) if r.streams() && r.head.is_none() => Phase::Data,
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
