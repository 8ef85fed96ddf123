//! Small complete responses, head and body in one buffer: error pages, short bodies, JSON
//! errors from storage. Pure: the date and the connection's keep-alive come in, bytes and the
//! body length to log go out. Nothing here decides a status from a request.

use oasis_engine::resource::Resource;
use oasis_storage::{CatalogError, StoreError};

use crate::http::{error_body_bytes, push_error_body, ResponseHead};

pub(super) fn json_escape(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The `oasis_limits_hit_total` reason of a refusal with `status`.
pub(super) fn limit_reason(status: u16) -> &'static str {
    match status {
        400 => "bad_request",
        408 => "timeout",
        411 => "length_required",
        413 => "body_too_large",
        414 => "uri_too_long",
        431 => "header_too_large",
        501 => "not_implemented",
        505 => "version",
        503 => "unavailable",
        _ => "other",
    }
}

/// An error page with optional extra headers (no body for HEAD), and its body length.
pub(super) fn error_page(
    status: u16,
    extra: &[(&str, String)],
    head_only: bool,
    date: &str,
    keep_alive: bool,
) -> (Vec<u8>, u64) {
    let body_bytes = error_body_bytes(status);
    let mut out = Vec::with_capacity(256 + body_bytes);
    let mut head = ResponseHead::new(&mut out, status, date);
    if body_bytes > 0 {
        head.content_type("text/html")
            .content_length(body_bytes as u64);
    }
    for (k, v) in extra {
        head.header(k, v);
    }
    head.cors().connection(keep_alive);
    head.finish();
    if head_only {
        return (out, 0);
    }
    push_error_body(status, &mut out);
    (out, body_bytes as u64)
}

/// A response with a short body (no body for HEAD), and the body length sent.
pub(super) fn small(
    status: u16,
    content_type: &str,
    body: &[u8],
    head_only: bool,
    date: &str,
    keep_alive: bool,
) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(256 + body.len());
    let mut head = ResponseHead::new(&mut out, status, date);
    head.content_type(content_type)
        .content_length(body.len() as u64)
        .cors()
        .connection(keep_alive);
    head.finish();
    if head_only {
        return (out, 0);
    }
    out.extend_from_slice(body);
    (out, body.len() as u64)
}

/// A body-less 204 (a delete done).
pub(super) fn no_content(date: &str, keep_alive: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(128);
    let mut rh = ResponseHead::new(&mut out, 204, date);
    rh.cors().connection(keep_alive);
    rh.finish();
    out
}

/// The status that answers a storage error.
pub(super) fn store_error_status(e: &StoreError) -> u16 {
    match e {
        StoreError::InvalidName { .. } => 400,
        StoreError::NotFound { .. } => 404,
        StoreError::NoSpace { .. } => 507,
        StoreError::Reserve(r) if r.resource == Resource::DiskSpaceBytes => 507,
        StoreError::Reserve(_) => 503,
        StoreError::LengthMismatch { .. } => 400,
        StoreError::ChecksumMismatch { .. } => 422,
        StoreError::TooLarge { .. } => 413,
        // A pool node cut off from its catalog: nothing was changed, try again later.
        StoreError::Catalog(CatalogError::Unreachable { .. }) => 503,
        // A pool copy older than the version the pool holds: refused, nothing kept.
        StoreError::Catalog(CatalogError::Superseded { .. }) => 409,
        _ => 500,
    }
}

/// The answer to a storage error: its status and a JSON body with its message (which names no
/// path outside the data directory), with `Retry-After` on a 503. Returns the status too.
pub(super) fn store_error(
    e: &StoreError,
    retry_after_secs: u64,
    date: &str,
    keep_alive: bool,
) -> (u16, Vec<u8>, u64) {
    let status = store_error_status(e);
    let msg = format!("{{\"error\":{}}}\n", json_escape(&e.to_string()));
    let (out, n) = json_error(status, &msg, retry_after_secs, date, keep_alive);
    (status, out, n)
}

/// A JSON error body `msg` (one object, ending in a newline) with `status`, and `Retry-After`
/// when the status is 503. Returns the response and its body's length.
pub(super) fn json_error(
    status: u16,
    msg: &str,
    retry_after_secs: u64,
    date: &str,
    keep_alive: bool,
) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(256 + msg.len());
    let mut head = ResponseHead::new(&mut out, status, date);
    head.content_type("application/json")
        .content_length(msg.len() as u64)
        .cors()
        .connection(keep_alive);
    if status == 503 {
        head.retry_after(retry_after_secs);
    }
    head.finish();
    out.extend_from_slice(msg.as_bytes());
    (out, msg.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn head_requests_get_no_body_and_log_none() {
        let (get, get_bytes) = error_page(404, &[], false, "d", true);
        let (head, head_bytes) = error_page(404, &[], true, "d", true);
        assert_eq!(get_bytes as usize, get.len() - head.len());
        assert_eq!(head_bytes, 0);
        let (out, n) = small(200, "text/plain", b"ok\n", false, "d", false);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.ends_with("\r\n\r\nok\n") && text.contains("Connection: close"));
        assert_eq!(n, 3);
    }

    #[test]
    fn storage_errors_say_what_happened_and_when_to_retry() {
        let e = StoreError::TooLarge {
            name: "a".into(),
            limit_bytes: 10,
        };
        let (status, out, _) = store_error(&e, 2, "d", true);
        assert_eq!(status, 413);
        let text = String::from_utf8(out).expect("ascii");
        assert!(text.contains("application/json") && !text.contains("Retry-After"));
    }
}
