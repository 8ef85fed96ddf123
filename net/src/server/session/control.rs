//! `GET|HEAD /api/config` and `PATCH /api/config`: the session's side of the Configuration
//! Manager's hook. A read is a job; a patch is checked by its head (fragment format, the
//! `restart_pending` flag: 415 and 400 before any body is read), its body read into memory
//! (`api_body`), then handed to the Configuration Manager as a job. Both run on the catalog
//! thread, never on the worker: a patch writes and fsyncs a file. The caller checks the token.
//!
//! Part of [`super::HttpSession`]; the contract and the jobs are in `server/control.rs`.

use super::api_body::{BodyFor, ReadBody};
use super::*;
use crate::server::control::{self, ConfigControl, ControlReply};

impl HttpSession {
    fn config_control(&self) -> Option<Arc<dyn ConfigControl>> {
        self.svc.control.read().ok().and_then(|c| c.clone())
    }

    /// `GET|HEAD /api/config`: the configuration in force, from a job.
    pub(super) fn config_get(&mut self, head_only: bool, now: Instant) {
        match self.config_control() {
            Some(c) => {
                let job = control::get_job(c);
                self.state = State::Job(
                    Some(job),
                    JobKind::Control {
                        head_only,
                        patch: false,
                    },
                );
            }
            None => self.control_reply(control::unavailable(), head_only, now),
        }
    }

    /// `PATCH /api/config[?restart_pending=true]`: refusals by the head, then the body.
    pub(super) fn config_patch(&mut self, head: &RequestHead, now: Instant) {
        let refused = match (
            control::fragment_is_json(head.content_type.as_deref()),
            control::restart_pending(head.query.as_deref()),
        ) {
            (Err(msg), _) => ControlReply::error(415, &msg),
            (_, Err(msg)) => ControlReply::error(400, &msg),
            (Ok(_), Ok(_)) if self.config_control().is_none() => control::unavailable(),
            (Ok(json), Ok(restart_pending)) => {
                let then = BodyFor::ConfigPatch {
                    json,
                    restart_pending,
                };
                return self.read_api_body(head.clone(), then, now);
            }
        };
        // Answered before its body was read: the connection closes after a lingering close.
        self.keep_alive = false;
        self.control_reply(refused, false, now);
    }

    /// A patch's body is complete: the Configuration Manager takes it in a job.
    pub(super) fn config_patch_body(
        &mut self,
        head: &RequestHead,
        body: ReadBody,
        json: bool,
        restart_pending: bool,
        now: Instant,
    ) {
        let Some(c) = self.config_control() else {
            return self.control_reply(control::unavailable(), false, now);
        };
        tracing::debug!(
            peer = ?self.info.peer,
            "{} with a {}-byte {} fragment",
            head.path,
            body.bytes.len(),
            if json { "JSON" } else { "TOML" }
        );
        let ReadBody { bytes, memory } = body;
        let job = control::patch_job(c, bytes, json, restart_pending, memory);
        self.state = State::Job(
            Some(job),
            JobKind::Control {
                head_only: false,
                patch: true,
            },
        );
    }

    /// A Configuration Manager job finished: its reply is the answer.
    pub(super) fn control_done(
        &mut self,
        result: JobResult,
        head_only: bool,
        patch: bool,
        now: Instant,
    ) {
        match result.downcast::<ControlReply>() {
            Ok(reply) => {
                if patch {
                    // Accepted or refused, a change asked for is in the audit trail.
                    let outcome = match reply.status {
                        200 => "applied",
                        202 => "pending",
                        400..=499 => "refused",
                        _ => "error",
                    };
                    let keys = reply.changed.join(",");
                    self.audit(
                        "config_patch",
                        &keys,
                        outcome,
                        reply.status.to_string(),
                        now,
                    );
                }
                if !reply.changed.is_empty() {
                    tracing::info!(
                        peer = ?self.info.peer,
                        "configuration changed over HTTP: {}",
                        reply.changed.join(", ")
                    );
                }
                self.control_reply(*reply, head_only, now)
            }
            Err(_) => self.error(500, &[], head_only, now),
        }
    }

    fn control_reply(&mut self, reply: ControlReply, head_only: bool, now: Instant) {
        let body = reply.body.as_bytes();
        self.respond_small(reply.status, "application/json", body, head_only, now);
    }
}
