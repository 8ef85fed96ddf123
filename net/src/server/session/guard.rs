//! The session's side of the User Manager: every route asks [`HttpSession::guard`] before it acts,
//! which resolves the credentials, asks the one policy table ([`decide`]), counts and slows down
//! failed authentications, and starts the refusal when the answer is no.

use std::net::IpAddr;
use std::time::Instant;

use super::{HttpSession, Opened};
use crate::auth::limiter::Counted;
use crate::auth::link;
use crate::auth::policy::{decide, Action, Decision, PolicySettings, Principal};
use crate::http::{Method, RequestHead};
use crate::server::guard::{self, Denied};

/// The request path kept in an audit record of a refusal, characters at most.
const AUDIT_PATH_CHARS_MAX: usize = 256;

impl HttpSession {
    /// Who may do `action`: `Some(principal)` lets the request go on; `None` means its refusal
    /// (401, 403 or 429) is under way. Public reads are decided without looking at credentials.
    pub(super) fn guard(
        &mut self,
        head: &RequestHead,
        action: Action<'_>,
        now: Instant,
    ) -> Option<Principal> {
        let cfg = &self.svc.cfg;
        let settings = PolicySettings {
            metrics_public: cfg.metrics_public,
        };
        // What anyone may do (public reads, public metrics) ignores credentials, right or wrong.
        if decide(&Principal::Anonymous, &action, settings) == Decision::Allow {
            return Some(Principal::Anonymous);
        }
        let ip = self.info.peer.map(|p| p.ip());
        if let (Some(ip), Some(_)) = (ip, &head.authorization) {
            if let Some(wait) = self.svc.limiter.check(ip, now, cfg.auth_limits) {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                self.refused(Denied::Throttled(secs.max(1)), Some(ip), head, now);
                return None;
            }
        }
        let who = match guard::principal(
            cfg.api_token.as_deref(),
            &self.svc.users,
            head.authorization.as_deref(),
        ) {
            Ok(who) => who,
            Err(why) => {
                self.refused(why, ip, head, now);
                return None;
            }
        };
        let why = match decide(&who, &action, settings) {
            Decision::Allow => {
                if let Some(r) = &mut self.req {
                    r.user = Some(who.name().to_string());
                }
                return Some(who);
            }
            Decision::Unauthenticated if cfg.api_token.is_none() && self.svc.users.is_empty() => {
                Denied::NoAccounts
            }
            Decision::Unauthenticated => Denied::NoCredentials,
            Decision::Forbidden(why) => Denied::Forbidden(why),
        };
        if let Some(r) = &mut self.req {
            r.user = Some(who.name().to_string());
        }
        self.refused(why, ip, head, now);
        None
    }

    /// Counts the refusal (and, for a failed authentication, against the client's address), then
    /// answers it.
    fn refused(&mut self, why: Denied, ip: Option<IpAddr>, head: &RequestHead, now: Instant) {
        self.svc.metrics.auth_refused(why.label());
        if !matches!(why, Denied::NoCredentials | Denied::NoAccounts) {
            // Credentials were given and refused: the audit trail's "refused authentication".
            let object: String = head.path.chars().take(AUDIT_PATH_CHARS_MAX).collect();
            let status = why.status().to_string();
            self.audit("auth_refused", &object, why.label(), status, now);
        }
        if let (true, Some(ip)) = (why.is_failure(), ip) {
            let settings = self.svc.cfg.auth_limits;
            if self.svc.limiter.failed(ip, now, settings) == Counted::NowThrottled {
                tracing::warn!(
                    "{ip}: {} failed authentications within {} s; its requests with credentials get 429 until the window ends",
                    settings.failures_max,
                    settings.window.as_secs()
                );
            }
        }
        self.deny(why, head.method == Method::Head, now);
    }

    /// `GET|HEAD /s/<sig>/<expires>/<scope>/<name>`: a signed link opens the object it covers,
    /// whatever its prefix's read policy; a wrong one is 403, an expired one 410. `path` is the
    /// request's path as sent, still percent-encoded ([`link::verify`] decodes the name once).
    /// A link this worker verified before opens from its [`link::LinkMemo`] without an HMAC.
    pub(super) fn serve_signed(&mut self, head: &RequestHead, path: &str, now: Instant) {
        let ip = self.info.peer.map(|p| p.ip());
        if let Some(ip) = ip {
            if let Some(wait) = self.svc.limiter.check(ip, now, self.svc.cfg.auth_limits) {
                let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
                return self.refused(Denied::Throttled(secs.max(1)), Some(ip), head, now);
            }
        }
        let unix_now = self.unix_secs(now);
        let client = ip.unwrap_or(IpAddr::from([0, 0, 0, 0]));
        // The name borrows from `path` (the caller's copy of the request path), not from the
        // session: no copy of it, and no clone of the shared keys, on the data path.
        let Some(keys) = &self.svc.cfg.link_keys else {
            self.svc.metrics.auth_refused("links_off");
            return self.deny(Denied::LinksOff, head.method == Method::Head, now);
        };
        // The worker's memo: one HMAC per link it has not verified yet under these keys.
        match link::LinkMemo::verify_on_this_thread(keys, path, unix_now, client) {
            Ok(name) => {
                if self.svc.log.is_on() {
                    if let Some(r) = &mut self.req {
                        r.user = Some("link".to_string());
                    }
                }
                self.serve_media(head, &name, Opened::NotYet, now)
            }
            Err(e) => self.refused(Denied::Link(e), ip, head, now),
        }
    }

    /// The wall clock at `now`, seconds since the Unix epoch.
    pub(super) fn unix_secs(&self, now: Instant) -> u64 {
        self.svc
            .clock
            .at(now)
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// Answers a refusal with a JSON body that says why and what to do.
    pub(super) fn deny(&mut self, why: Denied, head_only: bool, now: Instant) {
        let date = self.date(now);
        let (out, n) = guard::denied(why, head_only, date.as_str(), self.keep_alive);
        self.respond_bytes(why.status(), out, n, now);
    }
}
