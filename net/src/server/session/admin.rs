//! The session's `/api/users` and `/api/audit` routes, and its records in the audit trail.
//! Account changes and audit queries touch the catalog, so they run as jobs on the catalog
//! thread; the answer is a JSON body and a status ([`JsonReply`]). Records go to the audit
//! writer's bounded queue and never block (a full queue drops and counts).

use std::time::UNIX_EPOCH;

use oasis_storage::{AuditQuery, AuditRecord};

use super::*;
use crate::auth::manage::{self, UserError};
use crate::auth::policy::Role;

/// What an API job answers: a status and a JSON body.
pub(super) struct JsonReply {
    pub(super) status: u16,
    pub(super) body: String,
}

impl JsonReply {
    fn ok(status: u16, v: serde_json::Value) -> JsonReply {
        let mut body = v.to_string();
        body.push('\n');
        JsonReply { status, body }
    }

    fn error(status: u16, msg: &str) -> JsonReply {
        JsonReply::ok(status, serde_json::json!({ "error": msg }))
    }

    fn of_user_error(e: &UserError) -> JsonReply {
        if let UserError::Store(e) = e {
            tracing::warn!("account change failed: {e}");
        }
        JsonReply::error(e.status(), &e.to_string())
    }
}

/// Most audit records one `GET /api/audit` returns.
const AUDIT_PAGE_MAX: usize = 1000;

/// Query parameters named `key`, percent-decoded (repeatable: `prefix=a&prefix=b`).
fn params(query: Option<&str>, key: &str) -> Vec<String> {
    query
        .unwrap_or("")
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then_some(v)
        })
        .filter_map(|v| http::percent_decode(v.as_bytes()))
        .filter_map(|v| String::from_utf8(v).ok())
        .collect()
}

fn param(query: Option<&str>, key: &str) -> Option<String> {
    params(query, key).into_iter().next()
}

impl HttpSession {
    /// Records an action in the audit trail, as the current request's principal.
    pub(super) fn audit(
        &self,
        action: &str,
        object: &str,
        outcome: &str,
        detail: String,
        now: Instant,
    ) {
        let Some(audit) = self.svc.audit.get() else {
            return;
        };
        let at = self.svc.clock.at(now);
        let user = self.req.as_ref().and_then(|r| r.user.clone());
        audit.record(AuditRecord {
            seq: 0,
            at_unix_ms: at
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            user: user.unwrap_or_else(|| "-".to_string()),
            client: self
                .info
                .peer
                .map_or_else(|| "-".to_string(), |p| p.ip().to_string()),
            action: action.to_string(),
            object: object.to_string(),
            outcome: outcome.to_string(),
            detail,
        });
    }

    fn unix_ms(&self, now: Instant) -> u64 {
        let at = self.svc.clock.at(now);
        at.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }

    /// `/api/users` and `/api/users/<name>/...` (admins only: checked by the caller).
    pub(super) fn users_api(&mut self, head: &RequestHead, route: Route<'_>, now: Instant) {
        let store = Arc::clone(&self.svc.store);
        let users = Arc::clone(&self.svc.users);
        let now_ms = self.unix_ms(now);
        let query = head.query.clone();
        let (action, object): (&'static str, String) = match route {
            Route::AddUser => (
                "user_add",
                param(query.as_deref(), "name").unwrap_or_default(),
            ),
            Route::RemoveUser(n) => ("user_rm", n.to_string()),
            Route::RotateUser(n) => ("user_rotate", n.to_string()),
            Route::RevokeOld(n) => ("user_revoke_old", n.to_string()),
            _ => ("user_ls", String::new()),
        };
        let name = object.clone();
        let job: Job = Box::new(move || {
            let reply = match action {
                "user_ls" => match manage::list(&store) {
                    Ok(all) => JsonReply::ok(
                        200,
                        serde_json::json!({ "users": all.iter().map(manage::user_json).collect::<Vec<_>>() }),
                    ),
                    Err(e) => JsonReply::of_user_error(&e),
                },
                "user_add" => {
                    let role = param(query.as_deref(), "role").unwrap_or_default();
                    let prefixes = params(query.as_deref(), "prefix");
                    match role.parse::<Role>() {
                        Err(e) => JsonReply::error(400, &e),
                        Ok(role) => match manage::add(&store, &name, role, prefixes, now_ms) {
                            Ok((rec, token)) => {
                                let mut v = manage::user_json(&rec);
                                v["token"] = serde_json::Value::String(token);
                                JsonReply::ok(201, v)
                            }
                            Err(e) => JsonReply::of_user_error(&e),
                        },
                    }
                }
                "user_rm" => match manage::remove(&store, &name) {
                    Ok(rec) => JsonReply::ok(200, serde_json::json!({ "removed": rec.name })),
                    Err(e) => JsonReply::of_user_error(&e),
                },
                "user_rotate" => match manage::rotate(&store, &name, now_ms) {
                    Ok(token) => JsonReply::ok(
                        200,
                        serde_json::json!({ "name": name, "token": token, "rotating": true }),
                    ),
                    Err(e) => JsonReply::of_user_error(&e),
                },
                _ => match manage::revoke_old(&store, &name, now_ms) {
                    Ok(()) => {
                        JsonReply::ok(200, serde_json::json!({ "name": name, "rotating": false }))
                    }
                    Err(e) => JsonReply::of_user_error(&e),
                },
            };
            if action != "user_ls" && reply.status < 300 {
                if let Err(e) = manage::load_index(&store, &users) {
                    tracing::error!("the account index could not be reloaded: {e}");
                }
            }
            Box::new(reply) as JobResult
        });
        self.state = State::Job(Some(job), JobKind::Json { action, object });
    }

    /// `GET /api/audit?since=<unix ms>&user=&action=&after=<seq>&limit=` (auditors and admins).
    pub(super) fn audit_api(&mut self, head: &RequestHead, now: Instant) {
        let q = head.query.as_deref();
        let number = |key: &str| -> Result<Option<u64>, String> {
            param(q, key)
                .map(|v| {
                    v.parse::<u64>()
                        .map_err(|_| format!("?{key}= takes a whole number, not {v:?}"))
                })
                .transpose()
        };
        let parsed = (|| {
            Ok::<_, String>(AuditQuery {
                since_unix_ms: number("since")?,
                user: param(q, "user"),
                action: param(q, "action"),
                after_seq: number("after")?,
                limit: number("limit")?
                    .map_or(100, |l| l as usize)
                    .clamp(1, AUDIT_PAGE_MAX),
            })
        })();
        let query = match parsed {
            Ok(query) => query,
            Err(msg) => {
                let body = JsonReply::error(400, &msg).body;
                return self.respond_small(400, "application/json", body.as_bytes(), false, now);
            }
        };
        let store = Arc::clone(&self.svc.store);
        let job: Job = Box::new(move || {
            let limit = query.limit;
            let reply = match store.query_audit(&query) {
                Ok(records) => {
                    let next = (records.len() == limit).then(|| records.last().map(|r| r.seq));
                    JsonReply::ok(
                        200,
                        serde_json::json!({
                            "records": records.iter().map(manage::audit_json).collect::<Vec<_>>(),
                            "next_after": next.flatten(),
                        }),
                    )
                }
                Err(e) => JsonReply::error(500, &e.to_string()),
            };
            Box::new(reply) as JobResult
        });
        self.state = State::Job(
            Some(job),
            JobKind::Json {
                action: "audit_query",
                object: String::new(),
            },
        );
    }

    /// The answer of an API job; account changes are recorded in the audit trail.
    pub(super) fn json_done(
        &mut self,
        action: &'static str,
        object: String,
        result: JobResult,
        now: Instant,
    ) {
        let Ok(reply) = result.downcast::<JsonReply>() else {
            return self.error(500, &[], false, now);
        };
        if action.starts_with("user_") && action != "user_ls" {
            let outcome = if reply.status < 300 { "ok" } else { "error" };
            self.audit(action, &object, outcome, reply.status.to_string(), now);
        }
        self.respond_small(
            reply.status,
            "application/json",
            reply.body.as_bytes(),
            false,
            now,
        );
    }
}
