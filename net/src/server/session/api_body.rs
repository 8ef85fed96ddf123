//! API requests that carry a body: the body is read whole into memory (capped at
//! [`API_BODY_BYTES_MAX`], its memory reserved first), then handed with the request's head to
//! the route it was read for ([`BodyFor`]). A route that takes a body checks what it can from
//! the head, then calls [`HttpSession::read_api_body`]; when the body is complete,
//! [`HttpSession::api_body_done`] dispatches it. A body over the cap is 413 (JSON), one that
//! stalls is 408 (the body timeout), bad chunked framing is 400; each closes the connection.
//!
//! Part of [`super::HttpSession`]; the reader itself is pure, in `server/small_body.rs`.

use oasis_engine::Reservation;

use super::*;
use crate::server::small_body::{self, BodyFed, SmallBody, API_BODY_BYTES_MAX};

/// Where a complete API body goes, with what the route learnt from the head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum BodyFor {
    /// `PATCH /api/config`: a fragment, JSON or TOML.
    ConfigPatch { json: bool, restart_pending: bool },
}

/// A request whose body is being read.
pub(super) struct ApiBody {
    then: BodyFor,
    head: RequestHead,
    body: SmallBody,
    memory: Reservation,
}

impl ApiBody {
    /// When the last body bytes arrived (the body timeout runs from here).
    pub(super) fn last_progress(&self) -> Instant {
        self.body.last_progress
    }

    /// What is left of a chunked body that stops being read (for the lingering close).
    pub(super) fn take_unread(&mut self) -> Option<BodyLeft> {
        self.body.take_unread()
    }
}

/// A complete body, and the memory reserved for it (held for as long as the bytes are).
pub(super) struct ReadBody {
    pub(super) bytes: Vec<u8>,
    pub(super) memory: Reservation,
}

impl HttpSession {
    /// Reads the body `head` announces into memory, then hands it to `then`. Refuses a
    /// declared length over the cap (413) and a body whose memory cannot be reserved (503).
    pub(super) fn read_api_body(&mut self, head: RequestHead, then: BodyFor, now: Instant) {
        let Some(want) = small_body::reserve_bytes(&head, API_BODY_BYTES_MAX) else {
            return self.api_body_too_large(now);
        };
        let memory = match self.svc.rm.reserve(Resource::MemoryBytes, want) {
            Ok(r) => r,
            Err(_) => {
                self.keep_alive = false;
                return self.refuse("memory", now);
            }
        };
        if head.expect_continue && head.has_body() {
            let mut out = Vec::with_capacity(32);
            http::continue_response(&mut out);
            self.pending = Some(out);
        }
        let body = SmallBody::new(&head, API_BODY_BYTES_MAX, &self.svc.cfg.limits, now);
        let reading = ApiBody {
            then,
            head,
            body,
            memory,
        };
        if reading.body.is_complete() {
            self.unread_body = None;
            return self.api_body_done(reading, now);
        }
        self.state = State::ApiBody(Box::new(reading));
    }

    /// Feeds API body bytes; returns how many were consumed.
    pub(super) fn feed_api_body(&mut self, input: &[u8], now: Instant) -> usize {
        let State::ApiBody(b) = &mut self.state else {
            return 0;
        };
        let fed = b.body.feed(input, now, &mut self.unread_body);
        let taken = match fed {
            BodyFed::More(n) | BodyFed::Done(n) | BodyFed::TooLarge(n) => n,
            BodyFed::Framing(_) => 0,
        };
        self.svc.metrics.received_bytes.inc_by(taken as u64);
        match fed {
            BodyFed::More(n) => n,
            BodyFed::Done(n) => {
                if let State::ApiBody(b) = std::mem::replace(&mut self.state, State::Close) {
                    self.api_body_done(*b, now);
                }
                n
            }
            BodyFed::TooLarge(n) => {
                self.api_body_too_large(now);
                n
            }
            BodyFed::Framing(e) => {
                // Where the body ends is unknown, so no lingering.
                self.keep_alive = false;
                self.svc.metrics.limit(limit_reason(e.status));
                self.error(e.status, &[], false, now);
                input.len()
            }
        }
    }

    /// 413 with a JSON error; the connection closes (after a lingering close of what is left).
    fn api_body_too_large(&mut self, now: Instant) {
        self.keep_alive = false;
        self.svc.metrics.limit(limit_reason(413));
        let msg = small_body::too_large_json(API_BODY_BYTES_MAX);
        self.respond_small(413, "application/json", msg.as_bytes(), false, now);
    }

    /// The body is complete: the route it was read for takes it.
    fn api_body_done(&mut self, reading: ApiBody, now: Instant) {
        let ApiBody {
            then,
            head,
            body,
            memory,
        } = reading;
        let body = ReadBody {
            bytes: body.into_bytes(),
            memory,
        };
        match then {
            BodyFor::ConfigPatch {
                json,
                restart_pending,
            } => self.config_patch_body(&head, body, json, restart_pending, now),
        }
    }
}
