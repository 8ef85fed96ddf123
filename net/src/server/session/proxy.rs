//! The session's side of proxy mode (`[pool] mode = "proxy"`): a GET for an object another
//! node holds is answered here, streamed from that node. The stream reserves bandwidth on this
//! listener and one chunk of memory first (refused, the client is redirected to the holder
//! instead); a proxy thread opens the exchange with the holder (`X-Oasis-Pool`, the pool
//! credential, `Range` and the preconditions passed through) and brings its response head
//! back; the session writes its own head from it, then the body goes a chunk at a time
//! (`respond.rs`). A holder that fails before its head: 502 with the reason in JSON; after
//! it: the connection is cut, so a client never takes a short body for a complete one.
//!
//! Part of [`super::HttpSession`]; the threads and the exchange are in `server/proxy/`.

use super::*;
use crate::http::ResponseHead;
use crate::server::proxy::upstream::{
    value_ok, Upstream, UpstreamError, UpstreamHead, UpstreamRequest,
};
use crate::server::proxy::{Proxy, Step, CHUNK_BYTES};
use crate::server::respond::{BodyOut, ProxyBody};
use oasis_engine::Deferred;

/// A proxied GET waiting for the holder's response head.
pub(super) struct Proxying {
    /// The step opening the exchange, taken when handed to the engine.
    step: Option<Deferred>,
    proxy: Arc<Proxy>,
    admission: Option<Admission>,
    head_only: bool,
}

impl Proxying {
    /// The step to hand the engine, once.
    pub(super) fn take_step(&mut self) -> Transmit {
        match self.step.take() {
            Some(step) => Transmit::Defer(step),
            None => Transmit::Idle,
        }
    }
}

/// What the opening step hands back.
type Opened = Result<(Upstream, UpstreamHead), UpstreamError>;

/// The request fields a proxied GET passes through to the holder.
pub(super) fn passed_fields(head: &RequestHead) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let plain = [
        ("Range", &head.range),
        ("If-Range", &head.if_range),
        ("If-None-Match", &head.if_none_match),
        ("If-Match", &head.if_match),
    ];
    for (name, value) in plain {
        if let Some(v) = value.as_ref().filter(|v| value_ok(v)) {
            out.push((name, v.clone()));
        }
    }
    let dates = [
        ("If-Modified-Since", head.if_modified_since),
        ("If-Unmodified-Since", head.if_unmodified_since),
    ];
    for (name, t) in dates {
        if let Some(t) = t.filter(|t| *t >= std::time::UNIX_EPOCH) {
            out.push((name, ImfDate::new(t).as_str().to_string()));
        }
    }
    out
}

/// The path to ask the holder for: the name as the client sent it when it came by
/// `/media/`, else encoded here, and the query.
pub(super) fn upstream_path(plain: Option<&str>, name: &str, query: Option<&str>) -> String {
    let mut path = String::from("/media/");
    match plain {
        Some(raw) => path.push_str(raw),
        None => crate::auth::link::encode_name(name, &mut path),
    }
    if let Some(q) = query {
        path.push('?');
        path.push_str(q);
    }
    path
}

impl HttpSession {
    /// Starts proxying a GET for an object held at `base`: `false` (nothing started) when
    /// this node cannot reserve the stream, so the caller redirects instead.
    pub(super) fn start_proxy(
        &mut self,
        proxy: Arc<Proxy>,
        base: &str,
        path: String,
        pass: Vec<(&'static str, String)>,
        head_only: bool,
    ) -> bool {
        let settings = proxy.settings();
        let admission = if head_only {
            None
        } else {
            let reserved = self
                .svc
                .rm
                .reserve(Resource::NetBps(self.info.listener), settings.reserve_bps)
                .and_then(|net| {
                    let memory = self
                        .svc
                        .rm
                        .reserve(Resource::MemoryBytes, CHUNK_BYTES as u64)?;
                    Ok(Admission {
                        _net: Some(net),
                        _disk: None,
                        _memory: memory,
                    })
                });
            match reserved {
                Ok(a) => Some(a),
                Err(e) => {
                    tracing::debug!("proxying refused here ({e}): redirecting to {base}");
                    return false;
                }
            }
        };
        let req = UpstreamRequest {
            base: base.to_string(),
            path,
            head_only,
            headers: pass,
            token: settings.token.clone(),
            timeout: settings.timeout,
        };
        let to = Arc::clone(&proxy);
        let step: Deferred = Box::new(move |completer| {
            let open: Step = Box::new(move || {
                completer.complete(Box::new(Upstream::open(&req)) as JobResult);
            });
            // Refused, the step is dropped with its completer: the session hears a rejection.
            to.submit(open, true);
        });
        self.state = State::Proxy(Box::new(Proxying {
            step: Some(step),
            proxy,
            admission,
            head_only,
        }));
        true
    }

    /// The holder's response head (or why there is none): this node's response starts.
    pub(super) fn proxy_opened(&mut self, p: Proxying, result: JobResult, now: Instant) {
        if result.is::<JobRejected>() {
            self.keep_alive = false;
            return self.refuse("proxy_queue", now);
        }
        let opened = match result.downcast::<Opened>() {
            Ok(o) => *o,
            Err(_) => return self.error(500, &[], p.head_only, now),
        };
        let (upstream, up) = match opened {
            Ok(o) => o,
            Err(e) => {
                tracing::warn!("proxying from the holder failed: {e}");
                let body = format!(
                    "{{\"error\":{}}}\n",
                    reply::json_escape(&format!("the node holding this object failed: {e}"))
                );
                let ct = "application/json";
                return self.respond_small(502, ct, body.as_bytes(), p.head_only, now);
            }
        };
        let date = self.date(now);
        let mut out = Vec::with_capacity(512);
        let mut head = ResponseHead::new(&mut out, up.status, date.as_str());
        for (name, value) in &up.headers {
            head.header(name, value);
        }
        if let Some(n) = up.content_length {
            head.content_length(n);
        }
        head.cors().connection(self.keep_alive);
        head.finish();
        let body_bytes = upstream.left();
        self.svc.metrics.pool_proxied.inc();
        if let Some(r) = &mut self.req {
            r.status = up.status;
            r.body_bytes = body_bytes;
        }
        if body_bytes == 0 {
            let respond = Respond::bytes(out, !self.keep_alive, now);
            self.state = State::Respond(Box::new(respond));
            return;
        }
        self.svc.metrics.active_streams.inc();
        let respond = Respond {
            head: Some(out),
            body: BodyOut::Proxy(Box::new(ProxyBody {
                proxy: p.proxy,
                upstream: Some(upstream),
                chunk: None,
            })),
            close_after: !self.keep_alive,
            _admission: p.admission,
            pace: None,
            body_sent: 0,
            last_progress: now,
        };
        self.state = State::Respond(Box::new(respond));
    }

    /// A proxied body's next chunk arrived (or the stream failed: the connection is cut).
    pub(super) fn proxy_chunk(&mut self, result: JobResult, now: Instant) {
        let State::Respond(r) = &mut self.state else {
            return;
        };
        if let Err(why) = r.proxied(result, now) {
            tracing::warn!(peer = ?self.info.peer, "proxied stream cut: {why}");
            self.svc.metrics.pool_proxy_cut.inc();
            self.keep_alive = false;
            self.finish_response(now);
            self.state = State::Close;
        }
    }
}
