//! The session's side of the pool: a GET for an object not held here (or refused here for
//! load) asks the pool where it is held, on the catalog thread, and answers `307` to that node
//! (a signed link when the object is not public) or, in proxy mode, streams it from there
//! (`proxy.rs`), `503` with `Retry-After` when its holders are
//! all down, `404` when none holds it; a committed upload and a delete are handed to the pool;
//! `GET /api/pool` reads the pool's state; a write (`PUT`, `DELETE`) the pool refuses (its
//! catalog unreachable) is answered `503` with `Retry-After` and the cause in JSON. Without a pool attached nothing here acts.
//!
//! Part of [`super::HttpSession`]; the contract and the `Location` are in `server/pool.rs`.

use super::*;
use crate::auth::policy::ReadPolicy;
use crate::server::control::ControlReply;
use crate::server::pool::{redirect_location, Located, PoolHook};

/// A GET waiting for the pool's answer of where its object is.
pub(super) struct Locating {
    name: String,
    /// The name as the client sent it (percent-encoded), for a plain redirect.
    raw_name: String,
    query: Option<String>,
    head_only: bool,
    /// The object is not public (or was asked for by a signed link): redirect to a signed link.
    sign: bool,
    /// This node refused the stream for this reason: with no holder with headroom, 503.
    refused: Option<String>,
    /// In proxy mode: the path to ask the holder for and the fields passed through.
    proxy_path: String,
    pass: Vec<(&'static str, String)>,
}

impl HttpSession {
    pub(super) fn pool(&self) -> Option<Arc<dyn PoolHook>> {
        self.svc.pool.read().ok().and_then(|p| p.clone())
    }

    /// Asks the pool where `name` is held (a job), for a GET this node cannot serve:
    /// `refused` names why this node refused it, `None` when it does not hold it. Returns
    /// `false` (nothing started, the caller answers) without a pool, or for a request that
    /// came from another node of the pool (never handed on twice).
    pub(super) fn locate_in_pool(
        &mut self,
        head: &RequestHead,
        name: &str,
        refused: Option<&str>,
    ) -> bool {
        if head.pool_peer {
            return false;
        }
        let Some(pool) = self.pool() else {
            return false;
        };
        let raw_path = http::request::raw_path(&head.target);
        let plain = raw_path.strip_prefix("/media/");
        let rule = self.svc.cfg.access.rule_for(name).read;
        let sign =
            (rule != ReadPolicy::Public || plain.is_none()) && self.svc.cfg.link_keys.is_some();
        let locating = Locating {
            name: name.to_string(),
            raw_name: plain.unwrap_or(name).to_string(),
            query: head.query.clone(),
            head_only: head.method == Method::Head,
            sign,
            refused: refused.map(str::to_string),
            proxy_path: proxy::upstream_path(plain, name, head.query.as_deref()),
            pass: proxy::passed_fields(head),
        };
        let overloaded = refused.is_some();
        let wanted = locating.name.clone();
        let job: Job = Box::new(move || Box::new(pool.locate(&wanted, overloaded)) as JobResult);
        self.state = State::Job(Some(job), JobKind::Locate(Box::new(locating)));
        true
    }

    /// The pool's answer to [`Self::locate_in_pool`].
    pub(super) fn located(&mut self, l: Locating, result: JobResult, now: Instant) {
        let Ok(located) = result.downcast::<Located>() else {
            return self.error(500, &[], l.head_only, now);
        };
        match *located {
            Located::At(base) => {
                // Proxied unless this node refused the stream: then the holder takes the
                // client (as it does when this node cannot reserve a proxied stream).
                let proxy = self.pool().and_then(|p| p.proxy());
                if let (Some(proxy), None) = (proxy, &l.refused) {
                    let (path, pass) = (l.proxy_path.clone(), l.pass.clone());
                    if self.start_proxy(proxy, &base, path, pass, l.head_only) {
                        return;
                    }
                }
                let unix_now = self.unix_secs(now);
                let keys = if l.sign {
                    self.svc.cfg.link_keys.as_deref()
                } else {
                    None
                };
                match redirect_location(
                    &base,
                    &l.raw_name,
                    &l.name,
                    l.query.as_deref(),
                    keys,
                    unix_now,
                ) {
                    Some(location) => {
                        self.svc.metrics.pool_redirects.inc();
                        self.error(307, &[("Location", location)], l.head_only, now)
                    }
                    None => self.error(404, &[], l.head_only, now),
                }
            }
            Located::AllDown => {
                let retry = [("Retry-After", self.svc.cfg.retry_after_secs.to_string())];
                self.error(503, &retry, l.head_only, now)
            }
            Located::Nowhere => match l.refused {
                Some(reason) => self.refuse(&reason, now),
                None => self.error(404, &[], l.head_only, now),
            },
        }
    }

    /// Answers `503` with `Retry-After` and the pool's reason in a JSON body when the pool
    /// takes no write now (its catalog unreachable); returns whether it did. The request's body
    /// is not read, so the connection closes after the answer.
    pub(super) fn pool_refuses_write(&mut self, now: Instant) -> bool {
        let Some(why) = self.pool().and_then(|p| p.write_refusal()) else {
            return false;
        };
        self.keep_alive = false;
        self.svc.metrics.refused("pool_catalog");
        let msg = format!(
            "{{\"error\":{},\"cause\":\"catalog_unreachable\"}}\n",
            reply::json_escape(&why)
        );
        let date = self.date(now);
        let retry = self.svc.cfg.retry_after_secs;
        let (out, n) = reply::json_error(503, &msg, retry, date.as_str(), false);
        self.respond_bytes(503, out, n, now);
        true
    }

    /// The job of `DELETE /media/<name>`: the delete, then (with a pool) the other nodes'
    /// copies, unless the request came from one of them.
    pub(super) fn delete_job(&self, name: String, from_peer: bool) -> Job {
        let store = Arc::clone(&self.svc.store);
        let pool = self.pool();
        Box::new(move || {
            let result = store.delete(&name);
            if let (Some(pool), true) = (pool, result.is_ok()) {
                pool.deleted(&name, from_peer);
            }
            Box::new(result) as JobResult
        })
    }

    /// An upload committed: the pool hands it on.
    pub(super) fn pool_committed(&self, meta: &ObjectMeta) {
        if let Some(pool) = self.pool() {
            pool.committed(meta, self.from_pool_peer);
        }
    }

    /// `GET|HEAD /api/pool`: the pool's state, from a job; 404 on a server not in a pool.
    pub(super) fn pool_status(&mut self, head_only: bool, now: Instant) {
        let Some(pool) = self.pool() else {
            let msg = "{\"error\":\"this server is not in a pool: set [pool] catalog, node_id \
                       and advertise in its configuration\"}\n";
            return self.respond_small(404, "application/json", msg.as_bytes(), head_only, now);
        };
        let job: Job = Box::new(move || {
            Box::new(ControlReply {
                status: 200,
                body: pool.status_json(),
                changed: Vec::new(),
            }) as JobResult
        });
        self.state = State::Job(
            Some(job),
            JobKind::Control {
                head_only,
                patch: false,
            },
        );
    }
}
