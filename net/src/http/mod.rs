//! Sans-IO HTTP/1.1 protocol pieces: pure functions and small state machines.
//!
//! Every function here takes bytes (and, where time matters, a `SystemTime` argument) and
//! returns values or bytes. This module must never touch a socket, a file, or the clock, and
//! must never allocate without a bound taken from [`HttpLimits`] or from its arguments. That is
//! what makes it testable without a network and fuzzable with property tests.
//!
//! Code map, one concern per file:
//! - [`limits`]: the bounds every parser obeys.
//! - [`request`]: request head parsing, path decoding and normalization.
//! - [`range`]: `Range` header parsing and satisfiability (200 / 206 / 416).
//! - [`conditional`]: RFC 9110 §13.2.2 precondition evaluation (304 / 412) and `If-Range`.
//! - [`etag`]: entity-tag construction and weak/strong comparison.
//! - [`response`]: response head and error page serialization into caller-owned buffers.
//! - [`multipart`]: `multipart/byteranges` framing for multi-range 206 responses.
//! - [`chunked`]: incremental decoder for chunked upload bodies.
//! - [`media_type`]: syntax of an uploader's `Content-Type`.

pub mod chunked;
pub mod conditional;
pub mod etag;
pub mod limits;
pub mod media_type;
pub mod multipart;
pub mod range;
pub mod request;
pub mod response;

pub use chunked::{ChunkedDecoder, ChunkedProgress};
pub use conditional::{evaluate, if_range_allows, Precondition};
pub use limits::HttpLimits;
pub use media_type::is_valid_media_type;
pub use multipart::{plan_byteranges, MultipartPart, MultipartPlan};
pub use range::{parse_range, ByteRange, RangeSpec};
pub use request::{parse_request, percent_decode, Method, Parse, RequestHead};
pub use response::{
    continue_response, error_body_bytes, error_response, http_date, preflight_response,
    push_error_body, reason_phrase, ImfDate, ResponseHead,
};

/// A request the server refuses, with the status code to answer and a short reason for logs.
///
/// `status` is the HTTP status to send (see [`response::error_response`]); `reason` names the
/// exact rule that was broken, so an operator reading a log line knows what the client did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("HTTP {status}: {reason}")]
pub struct HttpError {
    /// Status code to answer with (400, 413, 414, 431, 501, 505, ...).
    pub status: u16,
    /// What was wrong with the request, for logs; not sent to the client.
    pub reason: &'static str,
}

impl HttpError {
    /// Builds an error; `status` must be a 4xx or 5xx code.
    pub const fn new(status: u16, reason: &'static str) -> Self {
        assert!(status >= 400 && status <= 599);
        Self { status, reason }
    }

    /// 400 Bad Request.
    pub const fn bad_request(reason: &'static str) -> Self {
        Self::new(400, reason)
    }
}
