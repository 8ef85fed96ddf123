//! Routes and the operator's API: which handler a request's path and method reach, and the JSON of `/api/objects` and `/api/status`
//! (plus the prefix delete's job and answer). The bodies are built from what the caller passes
//! in; nothing here answers a request on its own, and the only storage work, the prefix delete,
//! is returned as a job for the catalog thread.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Instant;

use oasis_engine::resource::Level;
use oasis_engine::{Job, JobResult};
use oasis_storage::{ObjectMeta, Store, StoreError};

use super::media::etag_of;
use super::reply::json_escape;
use super::service::Inner;
use crate::http::{self, Method};

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Route<'a> {
    /// `GET|HEAD /media/<name>`.
    MediaRead(&'a str),
    /// `GET|HEAD /s/<sig>/<expires>/<scope>/<name>`: a signed link, checked on the path as sent
    /// (the session keeps it; the decoded path is not the link).
    SignedRead,
    MediaPut(&'a str),
    MediaDelete(&'a str),
    /// A CORS preflight.
    MediaOptions,
    Healthz,
    Metrics,
    ListObjects,
    Status,
    /// `GET|HEAD /api/pool`: the pool's nodes and replication state.
    Pool,
    /// `DELETE /api/objects?prefix=P`.
    DeletePrefix,
    /// `POST /api/scrub`: a scrub pass now.
    Scrub,
    /// `GET /api/users`.
    ListUsers,
    /// `POST /api/users?name=N&role=R[&prefix=P]...`.
    AddUser,
    /// `DELETE /api/users/<name>`.
    RemoveUser(&'a str),
    /// `POST /api/users/<name>/rotate`.
    RotateUser(&'a str),
    /// `POST /api/users/<name>/revoke-old`.
    RevokeOld(&'a str),
    /// `GET /api/audit?since=&user=&action=&after=&limit=`.
    Audit,
    /// `GET|HEAD /api/config`: the configuration in force.
    ConfigGet,
    /// `PATCH /api/config`: a change to the configuration, in the request body.
    ConfigPatch,
    /// 405 with this `Allow`.
    NotAllowed(&'static str),
    NotFound,
}

impl Route<'_> {
    /// Whether the route reads a request body (so the connection may stay open after one).
    pub(super) fn reads_body(self) -> bool {
        matches!(self, Route::MediaPut(_) | Route::ConfigPatch)
    }
}

pub(super) fn route<'a>(path: &'a str, method: &Method) -> Route<'a> {
    if path.starts_with("/s/") {
        return match method {
            Method::Get | Method::Head => Route::SignedRead,
            Method::Options => Route::MediaOptions,
            _ => Route::NotAllowed("GET, HEAD, OPTIONS"),
        };
    }
    if let Some(rest) = path.strip_prefix("/api/users/") {
        return match (rest.split_once('/'), method) {
            (None, Method::Delete) => Route::RemoveUser(rest),
            (None, _) => Route::NotAllowed("DELETE"),
            (Some((name, "rotate")), Method::Post) => Route::RotateUser(name),
            (Some((name, "revoke-old")), Method::Post) => Route::RevokeOld(name),
            (Some((_, "rotate" | "revoke-old")), _) => Route::NotAllowed("POST"),
            (Some(_), _) => Route::NotFound,
        };
    }
    if let Some(name) = path.strip_prefix("/media/") {
        return match method {
            Method::Get | Method::Head => Route::MediaRead(name),
            Method::Put => Route::MediaPut(name),
            Method::Delete => Route::MediaDelete(name),
            Method::Options => Route::MediaOptions,
            _ => Route::NotAllowed("GET, HEAD, PUT, DELETE, OPTIONS"),
        };
    }
    match (path, method) {
        ("/healthz", Method::Get | Method::Head) => Route::Healthz,
        ("/metrics", Method::Get | Method::Head) => Route::Metrics,
        ("/api/objects", Method::Get | Method::Head) => Route::ListObjects,
        ("/api/status", Method::Get | Method::Head) => Route::Status,
        ("/api/pool", Method::Get | Method::Head) => Route::Pool,
        ("/api/scrub", Method::Post) => Route::Scrub,
        ("/api/scrub", _) => Route::NotAllowed("POST"),
        ("/api/config", Method::Get | Method::Head) => Route::ConfigGet,
        ("/api/config", Method::Patch) => Route::ConfigPatch,
        ("/api/config", _) => Route::NotAllowed("GET, HEAD, PATCH"),
        ("/api/objects", Method::Delete) => Route::DeletePrefix,
        ("/api/users", Method::Get | Method::Head) => Route::ListUsers,
        ("/api/users", Method::Post) => Route::AddUser,
        ("/api/users", _) => Route::NotAllowed("GET, HEAD, POST"),
        ("/api/audit", Method::Get | Method::Head) => Route::Audit,
        ("/api/audit", _) => Route::NotAllowed("GET, HEAD"),
        ("/api/objects", _) => Route::NotAllowed("GET, HEAD, DELETE"),
        ("/healthz" | "/metrics" | "/api/status" | "/api/pool", _) => {
            Route::NotAllowed("GET, HEAD")
        }
        _ => Route::NotFound,
    }
}

pub(super) fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (k == key).then_some(v)
    })
}

/// The decoded `?prefix=` of `/api/objects` (empty when absent or not UTF-8).
pub(super) fn prefix_param(query: Option<&str>) -> String {
    query_param(query, "prefix")
        .and_then(|p| http::percent_decode(p.as_bytes()))
        .and_then(|p| String::from_utf8(p).ok())
        .unwrap_or_default()
}

/// An object as the API shows it; `corrupt`: a scrub found its bytes changed on disk.
pub(super) fn meta_json(meta: &ObjectMeta, corrupt: bool) -> String {
    format!(
        "{{\"name\":{},\"size_bytes\":{},\"content_type\":{},\"crc32c\":\"{:08x}\",\"etag\":{},\"created_unix_ms\":{},\"bitrate_bps\":{},\"bitrate_source\":\"{}\",\"duration_ms\":{},\"corrupt\":{corrupt}}}",
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

/// `GET /api/objects`: at most `max` of `all`, and whether there were more.
pub(super) fn objects_json(all: &[Arc<ObjectMeta>], max: usize, store: &Store) -> String {
    let mut body = String::from("{\"objects\":[");
    for (i, m) in all.iter().take(max).enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&meta_json(m, store.is_corrupt(m)));
    }
    let _ = writeln!(
        body,
        "],\"count\":{},\"truncated\":{}}}",
        all.len().min(max),
        all.len() > max
    );
    body
}

/// What a prefix delete did: the names it deleted, and whether objects under the prefix remain
/// (it deletes at most `list_objects_max` per request).
pub(super) type PrefixDeleted = Result<(Vec<String>, bool), StoreError>;

/// `DELETE /api/objects?prefix=P` as a job: deletes at most `max` objects whose names start
/// with `prefix` (a whole package: `show/`).
pub(super) fn delete_prefix_job(
    store: Arc<Store>,
    prefix: String,
    max: usize,
    pool: Option<Arc<dyn super::pool::PoolHook>>,
) -> Job {
    Box::new(move || {
        let all = store.list_prefix(&prefix);
        let mut deleted = Vec::new();
        let mut result: PrefixDeleted = Ok((Vec::new(), all.len() > max));
        for meta in all.iter().take(max) {
            match store.delete(&meta.name) {
                // Deleted meanwhile by another request: nothing left to do for it.
                Ok(()) => {
                    // The other nodes' copies go too.
                    if let Some(pool) = &pool {
                        pool.deleted(&meta.name, false);
                    }
                    deleted.push(meta.name.clone())
                }
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
    })
}

/// The answer of a prefix delete that succeeded.
pub(super) fn deleted_json(names: &[String], more: bool) -> String {
    let mut body = String::from("{\"deleted\":[");
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&json_escape(n));
    }
    let _ = writeln!(body, "],\"count\":{},\"truncated\":{more}}}", names.len());
    body
}

/// `GET /api/status`: the server, its resources and (while it runs) its engine.
pub(super) fn status_json(svc: &Inner, now: Instant) -> String {
    let mut v = serde_json::json!({
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_secs": now.saturating_duration_since(svc.started).as_secs(),
        "level": svc.rm.level().to_string(),
        "critical_sources": svc.rm.sources_at(Level::Critical),
        "warning_sources": svc.rm.sources_at(Level::Warning),
        "active_streams": svc.metrics.active_streams.get(),
        "objects": svc.store.len(),
        "ttfb_us_p99": svc.metrics.ttfb_us_p99(),
        "config_generation": svc.generation,
        "accounts": svc.users.len(),
        "auth_addresses_tracked": svc.limiter.tracked(),
        "resources": svc.rm.snapshot().iter().map(|a| serde_json::json!({
            "resource": a.resource.to_string(), "used": a.used, "limit": a.limit, "level": a.level.to_string(),
        })).collect::<Vec<_>>(),
    });
    if let Some(e) = svc.engine.read().ok().and_then(|e| e.clone()) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_by_path_then_method() {
        assert_eq!(
            route("/media/a/b.ts", &Method::Head),
            Route::MediaRead("a/b.ts")
        );
        assert_eq!(route("/media/a", &Method::Put), Route::MediaPut("a"));
        assert_eq!(route("/media/a", &Method::Options), Route::MediaOptions);
        let post = Method::from_token("POST");
        assert!(matches!(route("/media/a", &post), Route::NotAllowed(_)));
        assert_eq!(route("/api/objects", &Method::Delete), Route::DeletePrefix);
        assert_eq!(
            route("/api/status", &Method::Delete),
            Route::NotAllowed("GET, HEAD")
        );
        assert_eq!(route("/media", &Method::Get), Route::NotFound);
        assert_eq!(route("/s/sig/1/0/a.mp4", &Method::Get), Route::SignedRead);
        assert_eq!(route("/api/users", &post), Route::AddUser);
        assert_eq!(
            route("/api/users/ann/rotate", &post),
            Route::RotateUser("ann")
        );
        assert_eq!(
            route("/api/users/ann", &Method::Delete),
            Route::RemoveUser("ann")
        );
        assert_eq!(route("/api/users/ann/x", &post), Route::NotFound);
        assert_eq!(route("/api/audit", &Method::Get), Route::Audit);
        assert_eq!(route("/api/config", &Method::Patch), Route::ConfigPatch);
        assert_eq!(route("/api/config", &Method::Head), Route::ConfigGet);
        assert_eq!(
            route("/api/config", &post),
            Route::NotAllowed("GET, HEAD, PATCH")
        );
        assert!(Route::ConfigPatch.reads_body() && Route::MediaPut("a").reads_body());
        assert!(!Route::Scrub.reads_body());
    }

    #[test]
    fn query_parameters_and_prefixes() {
        assert_eq!(query_param(Some("a=1&bitrate=5"), "bitrate"), Some("5"));
        assert_eq!(query_param(Some("flag"), "flag"), Some(""));
        assert_eq!(query_param(None, "a"), None);
        assert_eq!(prefix_param(Some("prefix=show%2F")), "show/");
        assert_eq!(prefix_param(Some("prefix=%FF")), "");
    }
}
