//! The Configuration Manager taking changes from authorized clients: the binary's side of
//! `GET|PATCH /api/config` ([`oasis_net::ConfigControl`]).
//!
//! It shares the [`Reloader`] with SIGHUP through one mutex, so patches and reloads happen one at
//! a time and, after each, the file and the settings in force agree. A patch is parsed
//! (`fragment`), merged into the file's text keeping the operator's comments, and the result is
//! read and checked exactly as `oasis config check` and a reload do; a text that fails is 400 with
//! the same diagnostics (key, message, hint) and changes nothing. A key the patch changes that
//! needs a restart is 409 unless the client asked for `restart_pending`, in which case it is
//! written for the next start. The file is then replaced atomically (`write`), and only once it
//! is written are the live keys put in force, by the reload's own code; a file that cannot be
//! written is 500 with the cause and nothing changes. A server started without `--config` has no
//! file to keep a change in: 409.
//!
//! Runs on the engine's catalog thread (a job), never on a worker. Never answers with a secret:
//! every key named like a token, secret, password or key is shown as `"<redacted>"`.

mod fragment;
mod write;

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use oasis_net::{ConfigControl, ControlReply};
use serde_json::{json, Value};
use toml_edit::DocumentMut;

use crate::config::{Config, Diagnostic, Diagnostics};
use crate::reload::{split_changes, Reloader};

/// What a redacted secret reads as.
pub const REDACTED: &str = "<redacted>";

/// The Configuration Manager's HTTP side, attached to the HTTP service.
pub struct ConfigApi {
    reloader: Arc<Mutex<Reloader>>,
}

impl ConfigApi {
    /// Serves `/api/config` from the reloader SIGHUP uses too.
    pub fn new(reloader: Arc<Mutex<Reloader>>) -> ConfigApi {
        ConfigApi { reloader }
    }

    fn lock(&self) -> MutexGuard<'_, Reloader> {
        self.reloader.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl ConfigControl for ConfigApi {
    fn get(&self) -> ControlReply {
        let r = self.lock();
        let mut body = json!({
            "config": redacted(&r.in_force),
            "generation": r.http.generation(),
            "file": r.path.as_ref().map(|p| p.display().to_string()),
            "restart_pending": [],
            "reload_pending": [],
        });
        if let Some(path) = &r.path {
            let origin = path.display().to_string();
            let on_disk = std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("cannot read {origin}: {e}"))
                .and_then(|text| r.check_text(&text, &origin))
                .and_then(|file| split_changes(&r.in_force, &file));
            match on_disk {
                Ok((live, restart)) => {
                    body["restart_pending"] = json!(restart);
                    body["reload_pending"] = json!(live);
                }
                Err(e) => body["file_problems"] = problems(&e),
            }
        }
        reply(200, &body, Vec::new())
    }

    fn patch(&self, fragment: &[u8], json: bool, restart_pending: bool) -> ControlReply {
        let mut r = self.lock();
        let (outcome, reply) = patch(&mut r, fragment, json, restart_pending);
        r.metrics.config_patch(outcome);
        reply
    }
}

/// The configuration as JSON, with every secret replaced by [`REDACTED`].
pub fn redacted(cfg: &Config) -> Value {
    let mut v = serde_json::to_value(cfg).unwrap_or(Value::Null);
    redact(&mut v);
    v
}

fn redact(v: &mut Value) {
    match v {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if is_secret(k) && !v.is_null() {
                    *v = Value::String(REDACTED.into());
                } else if let (true, Value::String(url)) = (k == "catalog", &*v) {
                    // `[pool] catalog`: the URL is shown, its password never.
                    *v = Value::String(oasis_storage::redact_url(url));
                } else {
                    redact(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

fn is_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["token", "secret", "password"]
        .iter()
        .any(|w| n.contains(w))
        || n == "key"
        || n.ends_with("_key")
}

fn reply(status: u16, body: &Value, changed: Vec<String>) -> ControlReply {
    ControlReply {
        status,
        body: format!("{body}\n"),
        changed,
    }
}

fn error(status: u16, message: &str) -> ControlReply {
    ControlReply::error(status, message)
}

/// One diagnostic as the API shows it.
fn problem(d: &Diagnostic) -> Value {
    json!({"key": d.key, "message": d.message, "hint": d.hint})
}

/// The problems of a configuration that does not pass: its diagnostics, or the one error.
fn problems(e: &anyhow::Error) -> Value {
    match e.downcast_ref::<Diagnostics>() {
        Some(d) => d.items.iter().map(problem).collect(),
        None => json!([{"key": "", "message": format!("{e:#}"), "hint": null}]),
    }
}

/// The outcome counted in `oasis_config_patches_total`, and the answer.
type Answer = (&'static str, ControlReply);

fn invalid(message: &str, problems: Value) -> Answer {
    let body = json!({"error": message, "problems": problems});
    ("invalid", reply(400, &body, Vec::new()))
}

/// One patch, under the reloader's lock.
fn patch(r: &mut Reloader, bytes: &[u8], json: bool, restart_pending: bool) -> Answer {
    match try_patch(r, bytes, json, restart_pending) {
        Ok(answer) | Err(answer) => answer,
    }
}

/// The file as it is and as the patch makes it.
struct Merged {
    /// The file as the server was started with it (`--config`), for the messages.
    origin: String,
    /// The file replaced: the one a symbolic link points at (the link stays).
    target: PathBuf,
    current: String,
    text: String,
    /// `text`, read and checked.
    next: Config,
}

fn try_patch(
    r: &mut Reloader,
    bytes: &[u8],
    json: bool,
    restart_pending: bool,
) -> Result<Answer, Answer> {
    let m = merged(r, bytes, json)?;
    let prepared = r.prepare(&m.next).map_err(|e| {
        let msg = "this change cannot be put in force; nothing was changed";
        invalid(msg, problems(&e))
    })?;
    // The keys this patch changes in the file: what differs from the file as it stands (or,
    // when that does not pass, from what is in force), so a key left pending earlier is not
    // taken for this patch's.
    let changed = match r.check_text(&m.current, &m.origin) {
        Ok(before) => split_changes(&before, &m.next)
            .map(|(live, restart)| sorted([live, restart].concat()))
            .map_err(|e| ("failed", error(500, &format!("{e:#}"))))?,
        Err(_) => sorted([prepared.live.clone(), prepared.restart.clone()].concat()),
    };
    let needs_restart: Vec<&String> = prepared
        .restart
        .iter()
        .filter(|k| changed.contains(k))
        .collect();
    if !needs_restart.is_empty() && !restart_pending {
        let body = json!({
            "error": format!(
                "{} cannot change while the server runs; nothing was changed: add ?restart_pending=true to write {} to the file for the next start",
                names(&needs_restart),
                if needs_restart.len() == 1 { "it" } else { "them" }
            ),
            "restart_keys": needs_restart,
        });
        return Err(("conflict", reply(409, &body, Vec::new())));
    }
    if m.text != m.current {
        write::replace_file(&m.target, &m.text).map_err(|e| {
            let msg =
                format!("the configuration file was not changed: {e}; nothing was put in force");
            tracing::error!("PATCH /api/config: {msg}");
            ("failed", error(500, &msg))
        })?;
    }
    let pending_now = !needs_restart.is_empty();
    let (live, pending) = (prepared.live.clone(), prepared.restart.clone());
    let generation = if live.is_empty() {
        r.http.generation()
    } else {
        r.apply(prepared, "PATCH /api/config")
    };
    if !changed.is_empty() {
        tracing::info!(
            "PATCH /api/config: {} written to {}",
            changed.join(", "),
            m.origin
        );
    }
    let body = json!({
        "changed": changed,
        "in_force": live,
        "restart_pending": pending,
        "generation": generation,
        "file": m.origin,
    });
    Ok(if pending_now {
        ("pending", reply(202, &body, changed))
    } else {
        ("applied", reply(200, &body, changed))
    })
}

/// Reads the fragment and the file, merges them and checks the result; changes nothing.
fn merged(r: &Reloader, bytes: &[u8], json: bool) -> Result<Merged, Answer> {
    let Some(path) = &r.path else {
        let msg = "started without --config; nothing to write to: start the server with \
                   --config FILE to change its configuration over HTTP";
        return Err(("conflict", error(409, msg)));
    };
    let origin = path.display().to_string();
    let fragment = fragment::parse(bytes, json).map_err(|d| {
        let msg = "the fragment cannot be read; nothing was changed";
        invalid(msg, json!([problem(&d)]))
    })?;
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.clone());
    let current = std::fs::read_to_string(&target)
        .map_err(|e| ("failed", error(500, &format!("cannot read {origin}: {e}"))))?;
    let Ok(mut doc) = current.parse::<DocumentMut>() else {
        let why = r.check_text(&current, &origin).err().map(|e| problems(&e));
        let body = json!({
            "error": format!("{origin} is not valid TOML as it stands; fix it by hand (`oasis config check {origin}`) before changing it over HTTP"),
            "problems": why.unwrap_or_else(|| json!([])),
        });
        return Err(("conflict", reply(409, &body, Vec::new())));
    };
    fragment::merge(&mut doc, &fragment);
    let text = doc.to_string();
    let next = r.check_text(&text, &origin).map_err(|e| {
        let msg = "the configuration with this change does not pass `oasis config check`; nothing was changed";
        invalid(msg, problems(&e))
    })?;
    Ok(Merged {
        origin,
        target,
        current,
        text,
        next,
    })
}

fn sorted(mut keys: Vec<String>) -> Vec<String> {
    keys.sort();
    keys.dedup();
    keys
}

fn names(keys: &[&String]) -> String {
    keys.iter()
        .map(|k| k.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_wherever_they_are() {
        let mut cfg = Config::default();
        cfg.http.api_token = Some("0123456789abcdef-secret".into());
        let v = redacted(&cfg);
        assert_eq!(v["http"]["api_token"], REDACTED);
        let mut cfg = Config::default();
        cfg.pool.catalog = "postgres://oasis:pw-secret@db:5432/oasis".into();
        assert_eq!(
            redacted(&cfg)["pool"]["catalog"],
            "postgres://oasis:<redacted>@db:5432/oasis"
        );
        assert_eq!(v["pacing"]["factor_progressive"], 1.5);
        assert!(!v.to_string().contains("0123456789abcdef"));
        // No token: nothing to hide, and it says so.
        assert_eq!(
            redacted(&Config::default())["http"]["api_token"],
            Value::Null
        );
        let mut v = json!({"a": [{"signing_key": "k", "password": "p", "keepalive": 1}]});
        redact(&mut v);
        assert_eq!(
            v,
            json!({"a": [{"signing_key": REDACTED, "password": REDACTED, "keepalive": 1}]})
        );
    }
}
