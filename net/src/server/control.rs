//! The hook from HTTP to the Configuration Manager: `GET /api/config` and `PATCH /api/config`.
//!
//! The HTTP side does not know the binary's configuration: it hands the request to a
//! [`ConfigControl`] the binary attaches ([`super::HttpService::attach_config_control`]) and
//! sends back the [`ControlReply`] it gets. This module holds that contract, the checks made on
//! the request head before any body is read (which format the fragment is in, the
//! `restart_pending` flag), and the jobs that call the control on the catalog thread: a patch
//! writes and fsyncs a file, so neither call ever runs on a worker. It answers no request itself.

use std::sync::Arc;

use oasis_engine::{Job, JobResult};

use super::reply::json_escape;

/// The binary's Configuration Manager, as the HTTP service sees it. Called on the catalog
/// thread (a job), never on a worker; calls may come from several connections at once, and the
/// implementation serializes them.
pub trait ConfigControl: Send + Sync {
    /// The effective configuration, secrets redacted (`"<redacted>"`), as JSON.
    fn get(&self) -> ControlReply;
    /// Applies a TOML (`json == false`) or JSON fragment of the configuration. Keys that need a
    /// restart are refused unless `restart_pending`, which writes them to the file for the next
    /// start.
    fn patch(&self, fragment: &[u8], json: bool, restart_pending: bool) -> ControlReply;
}

/// A complete answer of the Configuration Manager.
#[derive(Clone, Debug, PartialEq)]
pub struct ControlReply {
    /// The HTTP status to answer with.
    pub status: u16,
    /// The JSON body (one object, ending in a newline).
    pub body: String,
    /// The keys a patch changed (`section.key`), for the audit trail; empty for a read or a
    /// refusal.
    pub changed: Vec<String>,
}

impl ControlReply {
    /// A refusal or failure: `{"error": message}` with `status`.
    pub fn error(status: u16, message: &str) -> ControlReply {
        ControlReply {
            status,
            body: format!("{{\"error\":{}}}\n", json_escape(message)),
            changed: Vec::new(),
        }
    }
}

/// The slot every configuration generation shares: the control, once the binary attached it.
pub(super) type ControlSlot = Arc<std::sync::RwLock<Option<Arc<dyn ConfigControl>>>>;

/// The answer when no Configuration Manager is attached (a service built without one).
pub(super) fn unavailable() -> ControlReply {
    ControlReply::error(
        501,
        "this server has no configuration manager attached: change its configuration file and reload it (SIGHUP)",
    )
}

/// How a patch's fragment is written, from its `Content-Type`: `Ok(true)` for JSON, `Ok(false)`
/// for TOML (`application/toml`, `text/plain`, or no type); otherwise the 415 message.
pub(super) fn fragment_is_json(content_type: Option<&str>) -> Result<bool, String> {
    let Some(ct) = content_type else {
        return Ok(false);
    };
    let essence = ct.split(';').next().unwrap_or("").trim();
    if essence.eq_ignore_ascii_case("application/json") {
        Ok(true)
    } else if essence.eq_ignore_ascii_case("application/toml")
        || essence.eq_ignore_ascii_case("text/plain")
    {
        Ok(false)
    } else {
        Err(format!(
            "Content-Type {ct:?} is not a configuration fragment: send application/toml (or \
             text/plain) for TOML, application/json for JSON (curl: -H 'Content-Type: \
             application/toml')"
        ))
    }
}

/// `?restart_pending=true|false` (absent: false); otherwise the 400 message.
pub(super) fn restart_pending(query: Option<&str>) -> Result<bool, String> {
    match super::api::query_param(query, "restart_pending") {
        None | Some("false") | Some("0") => Ok(false),
        Some("true") | Some("1") | Some("") => Ok(true),
        Some(other) => Err(format!(
            "restart_pending={other:?}: use restart_pending=true to write keys that need a \
             restart, or leave it out"
        )),
    }
}

/// The job of `GET /api/config`.
pub(super) fn get_job(control: Arc<dyn ConfigControl>) -> Job {
    Box::new(move || Box::new(control.get()) as JobResult)
}

/// The job of `PATCH /api/config`. `keep` is held until the job ends (the body's memory
/// reservation).
pub(super) fn patch_job<K: Send + 'static>(
    control: Arc<dyn ConfigControl>,
    fragment: Vec<u8>,
    json: bool,
    restart_pending: bool,
    keep: K,
) -> Job {
    Box::new(move || {
        let reply = control.patch(&fragment, json, restart_pending);
        drop(keep);
        Box::new(reply) as JobResult
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_format_comes_from_the_content_type() {
        assert_eq!(fragment_is_json(None), Ok(false));
        assert_eq!(fragment_is_json(Some("application/toml")), Ok(false));
        assert_eq!(
            fragment_is_json(Some("text/plain; charset=utf-8")),
            Ok(false)
        );
        assert_eq!(
            fragment_is_json(Some("Application/JSON; charset=utf-8")),
            Ok(true)
        );
        let e = fragment_is_json(Some("application/x-www-form-urlencoded")).unwrap_err();
        assert!(
            e.contains("application/toml") && e.contains("application/json"),
            "{e}"
        );
    }

    #[test]
    fn restart_pending_is_a_flag() {
        assert_eq!(restart_pending(None), Ok(false));
        assert_eq!(restart_pending(Some("restart_pending=true")), Ok(true));
        assert_eq!(
            restart_pending(Some("a=1&restart_pending=false")),
            Ok(false)
        );
        assert!(restart_pending(Some("restart_pending=yes")).is_err());
    }

    #[test]
    fn errors_are_json_objects() {
        let r = ControlReply::error(409, "a \"quoted\" word");
        let v: serde_json::Value = serde_json::from_str(&r.body).unwrap();
        assert_eq!(v["error"], "a \"quoted\" word");
        assert!(r.body.ends_with('\n') && r.changed.is_empty());
    }
}
