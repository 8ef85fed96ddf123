//! `GET|HEAD /media/<name>` decisions: which status a request for an object gets (preconditions
//! 304/412, `If-Range`, ranges 200/206/416), and the response head and body plan for it. Pure:
//! the object's metadata, the request head and the date come in, bytes and a plan go out. The
//! session looks the object up, opens its file and reserves its bandwidth; nothing here does I/O.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oasis_storage::ObjectMeta;

use super::respond::BodyOut;
use crate::http::etag::StrongEtag;
use crate::http::{
    evaluate, if_range_allows, parse_range, plan_byteranges, Precondition, RangeSpec, RequestHead,
    ResponseHead,
};

pub(super) fn etag_of(meta: &ObjectMeta) -> StrongEtag {
    StrongEtag::new(meta.crc32c, meta.size_bytes, meta.created_unix_ms / 1000)
}

pub(super) fn last_modified_of(meta: &ObjectMeta) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(meta.created_unix_ms / 1000)
}

/// What a request for an object gets.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum MediaPlan {
    /// 304: the client's copy is current.
    NotModified,
    /// 412: a precondition of the client's failed.
    PreconditionFailed,
    /// 416: no range overlaps the object.
    Unsatisfiable,
    /// 200 (`spec` is `Full`) or 206 (`Single` or `Multi`).
    Send { status: u16, spec: RangeSpec },
}

/// Decides the status of a request for `meta`: preconditions first (RFC 9110 §13.2.2), then
/// `Range`, which `If-Range` may turn off.
pub(super) fn plan_media(
    meta: &ObjectMeta,
    head: &RequestHead,
    ranges_count_max: usize,
) -> MediaPlan {
    let etag = etag_of(meta);
    let last_modified = last_modified_of(meta);
    match evaluate(head, etag.as_str(), last_modified, &head.method) {
        Precondition::Proceed => {}
        Precondition::NotModified => return MediaPlan::NotModified,
        Precondition::PreconditionFailed => return MediaPlan::PreconditionFailed,
    }
    let use_range = head.range.is_some()
        && (head.if_range.is_none() || if_range_allows(head, etag.as_str(), last_modified));
    let spec = match (&head.range, use_range) {
        (Some(r), true) => parse_range(r, meta.size_bytes, ranges_count_max),
        _ => RangeSpec::Full,
    };
    match spec {
        RangeSpec::Unsatisfiable => MediaPlan::Unsatisfiable,
        RangeSpec::Full => MediaPlan::Send { status: 200, spec },
        spec => MediaPlan::Send { status: 206, spec },
    }
}

/// The head of a 304.
pub(super) fn not_modified(meta: &ObjectMeta, framing: Framing<'_>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut rh = ResponseHead::new(&mut out, 304, framing.date);
    rh.etag(etag_of(meta).as_str())
        .last_modified(last_modified_of(meta));
    if let Some(cc) = framing.cache_control {
        rh.header("Cache-Control", cc);
    }
    rh.cors().connection(framing.keep_alive);
    rh.finish();
    out
}

/// What every media response head carries besides the object: the date, the connection's fate
/// and the prefix's `Cache-Control` (`[[access]]`; a 304 repeats it, as RFC 9111 asks).
#[derive(Clone, Copy)]
pub(super) struct Framing<'a> {
    pub(super) date: &'a str,
    pub(super) keep_alive: bool,
    pub(super) cache_control: Option<&'a str>,
}

/// A 200 or 206 ready to go: its head, the body still to send, and the body bytes to log.
pub(super) struct MediaResponse {
    pub(super) head: Vec<u8>,
    pub(super) body: BodyOut,
    pub(super) body_bytes: u64,
}

/// Builds the response [`MediaPlan::Send`] planned. `file` is `None` for HEAD and empty objects
/// (no body is sent); `boundary_seed` makes a multipart boundary.
pub(super) fn media_response(
    meta: &ObjectMeta,
    status: u16,
    spec: RangeSpec,
    file: Option<Arc<File>>,
    boundary_seed: u64,
    framing: Framing<'_>,
) -> MediaResponse {
    let size = meta.size_bytes;
    let mut out = Vec::with_capacity(512);
    let mut rh = ResponseHead::new(&mut out, status, framing.date);
    let (body, body_len) = match spec {
        RangeSpec::Multi(ranges) => {
            let boundary = crate::http::multipart::make_boundary(boundary_seed);
            let plan = plan_byteranges(&ranges, &meta.content_type, size, &boundary);
            rh.content_type(&plan.content_type)
                .content_length(plan.body_bytes);
            let body = match file {
                Some(file) => BodyOut::Multi {
                    file,
                    parts: plan.parts.into_iter().collect::<VecDeque<_>>(),
                    current: None,
                    closing: Some(plan.closing),
                },
                None => BodyOut::None,
            };
            // A multipart body is logged at its framed length.
            let logged = if matches!(body, BodyOut::Multi { .. }) {
                plan.body_bytes
            } else {
                0
            };
            (body, logged)
        }
        RangeSpec::Single(r) => {
            rh.content_type(&meta.content_type)
                .content_length(r.len())
                .content_range(r, size);
            (file_body(file, r.start, r.len()), r.len())
        }
        RangeSpec::Full => {
            rh.content_type(&meta.content_type).content_length(size);
            (file_body(file, 0, size), size)
        }
        RangeSpec::Unsatisfiable => unreachable!("planned as a 416"),
    };
    rh.accept_ranges()
        .etag(etag_of(meta).as_str())
        .last_modified(last_modified_of(meta));
    if let Some(cc) = framing.cache_control {
        rh.header("Cache-Control", cc);
    }
    rh.cors().connection(framing.keep_alive);
    rh.finish();
    MediaResponse {
        head: out,
        body,
        body_bytes: body_len,
    }
}

fn file_body(file: Option<Arc<File>>, offset: u64, len: u64) -> BodyOut {
    match file {
        Some(file) => BodyOut::File {
            file,
            offset,
            remaining: len,
        },
        None => BodyOut::None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{http_date, parse_request, ByteRange, HttpLimits, Parse};
    use oasis_storage::BitrateSource;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            id: 7,
            name: "a.mp4".into(),
            size_bytes: 1000,
            content_type: "video/mp4".into(),
            crc32c: 0xdead_beef,
            created_unix_ms: 1_700_000_000_000,
            bitrate_bps: 1_000_000,
            bitrate_source: BitrateSource::Uploader,
            duration_ms: None,
        }
    }

    fn plan(headers: &str) -> MediaPlan {
        let text = format!("GET /media/a.mp4 HTTP/1.1\r\nHost: t\r\n{headers}\r\n");
        let Ok(Parse::Complete(head, _)) = parse_request(text.as_bytes(), &HttpLimits::default())
        else {
            panic!("request does not parse: {text:?}");
        };
        plan_media(&meta(), &head, 4)
    }

    fn range(start: u64, end_inclusive: u64) -> ByteRange {
        ByteRange {
            start,
            end_inclusive,
        }
    }

    #[test]
    fn ranges_decide_200_206_and_416() {
        let send = |status, spec| MediaPlan::Send { status, spec };
        assert_eq!(plan(""), send(200, RangeSpec::Full));
        assert_eq!(
            plan("Range: bytes=-10\r\n"),
            send(206, RangeSpec::Single(range(990, 999)))
        );
        assert_eq!(
            plan("Range: bytes=0-0,5-\r\n"),
            send(206, RangeSpec::Multi(vec![range(0, 0), range(5, 999)]))
        );
        assert_eq!(plan("Range: bytes=1000-\r\n"), MediaPlan::Unsatisfiable);
        // More ranges than allowed: the whole object.
        assert_eq!(
            plan("Range: bytes=0-0,2-2,4-4,6-6,8-8\r\n"),
            send(200, RangeSpec::Full)
        );
    }

    #[test]
    fn preconditions_come_before_ranges_and_if_range_can_turn_ranges_off() {
        let etag = etag_of(&meta());
        let etag = etag.as_str();
        let modified = http_date(last_modified_of(&meta()));
        assert_eq!(
            plan(&format!("If-None-Match: {etag}\r\nRange: bytes=0-1\r\n")),
            MediaPlan::NotModified
        );
        assert_eq!(
            plan(&format!("If-Modified-Since: {modified}\r\n")),
            MediaPlan::NotModified
        );
        assert_eq!(
            plan("If-Match: \"x\"\r\nRange: bytes=1000-\r\n"),
            MediaPlan::PreconditionFailed
        );
        let ranged = MediaPlan::Send {
            status: 206,
            spec: RangeSpec::Single(range(0, 1)),
        };
        assert_eq!(
            plan(&format!("If-Range: {etag}\r\nRange: bytes=0-1\r\n")),
            ranged
        );
        assert_eq!(
            plan(&format!("If-Range: {modified}\r\nRange: bytes=0-1\r\n")),
            ranged
        );
        assert_eq!(
            plan("If-Range: \"old\"\r\nRange: bytes=0-1\r\n"),
            MediaPlan::Send {
                status: 200,
                spec: RangeSpec::Full
            }
        );
    }

    const FRAMING: Framing<'static> = Framing {
        date: "d",
        keep_alive: true,
        cache_control: None,
    };

    #[test]
    fn a_prefix_cache_control_is_on_200_and_304() {
        let m = meta();
        let framing = Framing {
            cache_control: Some("private, max-age=60"),
            ..FRAMING
        };
        let ok = media_response(&m, 200, RangeSpec::Full, None, 1, framing);
        let ok = String::from_utf8(ok.head).expect("ascii");
        assert!(
            ok.contains("Cache-Control: private, max-age=60\r\n"),
            "{ok}"
        );
        let nm = String::from_utf8(not_modified(&m, framing)).expect("ascii");
        assert!(
            nm.contains("Cache-Control: private, max-age=60\r\n"),
            "{nm}"
        );
        let plain = media_response(&m, 200, RangeSpec::Full, None, 1, FRAMING);
        assert!(!String::from_utf8(plain.head)
            .unwrap()
            .contains("Cache-Control"));
    }

    #[test]
    fn head_requests_and_multipart_bodies_log_what_is_sent() {
        let m = meta();
        let head_only = media_response(&m, 200, RangeSpec::Full, None, 1, FRAMING);
        assert!(matches!(head_only.body, BodyOut::None));
        assert_eq!(head_only.body_bytes, 1000, "the caller logs 0 for HEAD");
        let multi = RangeSpec::Multi(vec![range(0, 0), range(9, 9)]);
        let r = media_response(&m, 206, multi, None, 1, FRAMING);
        assert_eq!(r.body_bytes, 0);
        let text = String::from_utf8(r.head).expect("ascii");
        assert!(text.contains("multipart/byteranges; boundary="), "{text}");
    }
}
