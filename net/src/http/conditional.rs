//! Conditional requests: RFC 9110 §13.2.2 precondition evaluation and `If-Range`.
//!
//! Given the parsed request head and the selected object's validators (strong ETag and
//! Last-Modified), decide between proceeding, 304 Not Modified and 412 Precondition Failed.
//! Pure decision logic: it must never read the clock or the object, and never decide about
//! ranges beyond `If-Range` (range arithmetic lives in `range`).

use std::time::{SystemTime, UNIX_EPOCH};

use super::etag::{list_matches, EntityTag};
use super::request::{Method, RequestHead};

/// The outcome of evaluating a request's preconditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Precondition {
    /// No precondition stops the request; go on (ranges, then the method).
    Proceed,
    /// 304 Not Modified (only for GET and HEAD).
    NotModified,
    /// 412 Precondition Failed.
    PreconditionFailed,
}

impl Precondition {
    /// The status to answer instead of proceeding, if any.
    pub fn status(self) -> Option<u16> {
        match self {
            Self::Proceed => None,
            Self::NotModified => Some(304),
            Self::PreconditionFailed => Some(412),
        }
    }
}

/// Evaluates `If-Match`, `If-Unmodified-Since`, `If-None-Match` and `If-Modified-Since` in the
/// order RFC 9110 §13.2.2 prescribes, for an object whose strong ETag is `etag` (quoted) and
/// whose modification time is `last_modified`. `method` is the method being served (a HEAD
/// answered as GET passes `Method::Get`).
pub fn evaluate(
    head: &RequestHead,
    etag: &str,
    last_modified: SystemTime,
    method: &Method,
) -> Precondition {
    let last_modified_secs = whole_secs(last_modified);
    // Step 1 and 2: If-Match (strong), else If-Unmodified-Since.
    if let Some(if_match) = &head.if_match {
        if !list_matches(if_match, etag, true) {
            return Precondition::PreconditionFailed;
        }
    } else if let Some(since) = head.if_unmodified_since {
        if last_modified_secs > whole_secs(since) {
            return Precondition::PreconditionFailed;
        }
    }
    let safe = matches!(method, Method::Get | Method::Head);
    // Step 3 and 4: If-None-Match (weak), else If-Modified-Since for GET/HEAD only.
    if let Some(if_none_match) = &head.if_none_match {
        if list_matches(if_none_match, etag, false) {
            return if safe {
                Precondition::NotModified
            } else {
                Precondition::PreconditionFailed
            };
        }
    } else if let (true, Some(since)) = (safe, head.if_modified_since) {
        if last_modified_secs <= whole_secs(since) {
            return Precondition::NotModified;
        }
    }
    Precondition::Proceed
}

/// Whether a `Range` may be honoured given `If-Range` (RFC 9110 §13.1.5): true without
/// `If-Range`; otherwise only for a strong match with `etag`, or an HTTP-date exactly equal
/// to `last_modified` (to the second). A weak entity-tag or an unparsable value never matches,
/// which means "send the whole object".
pub fn if_range_allows(head: &RequestHead, etag: &str, last_modified: SystemTime) -> bool {
    let Some(if_range) = head.if_range.as_deref() else {
        return true;
    };
    let if_range = if_range.trim_matches([' ', '\t']);
    if if_range.starts_with('"') || if_range.starts_with("W/") {
        return match (EntityTag::parse(if_range), EntityTag::parse(etag)) {
            (Some(sent), Some(current)) => super::etag::strong_match(&sent, &current),
            _ => false,
        };
    }
    match httpdate::parse_http_date(if_range) {
        Ok(date) => whole_secs(date) == whole_secs(last_modified),
        Err(_) => false,
    }
}

/// HTTP-dates have one-second resolution; compare times at that resolution so a file with
/// sub-second mtime still matches the date we sent for it. Times before 1970 count as 0.
fn whole_secs(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    const ETAG: &str = "\"abc-1\"";

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn modified() -> SystemTime {
        at(1_000_000) + Duration::from_millis(700)
    }

    fn eval(head: &RequestHead, method: Method) -> Precondition {
        evaluate(head, ETAG, modified(), &method)
    }

    #[test]
    fn no_preconditions_proceed() {
        assert_eq!(
            eval(&RequestHead::default(), Method::Get),
            Precondition::Proceed
        );
    }

    #[test]
    fn if_match_uses_strong_comparison() {
        let mut head = RequestHead {
            if_match: Some(ETAG.into()),
            ..Default::default()
        };
        assert_eq!(eval(&head, Method::Put), Precondition::Proceed);
        head.if_match = Some("*".into());
        assert_eq!(eval(&head, Method::Delete), Precondition::Proceed);
        head.if_match = Some(format!("W/{ETAG}"));
        assert_eq!(eval(&head, Method::Get), Precondition::PreconditionFailed);
        head.if_match = Some("\"other\"".into());
        assert_eq!(eval(&head, Method::Put), Precondition::PreconditionFailed);
    }

    #[test]
    fn if_unmodified_since_only_without_if_match() {
        let mut head = RequestHead {
            if_unmodified_since: Some(at(999_999)),
            ..Default::default()
        };
        assert_eq!(eval(&head, Method::Put), Precondition::PreconditionFailed);
        head.if_unmodified_since = Some(at(1_000_000));
        assert_eq!(
            eval(&head, Method::Put),
            Precondition::Proceed,
            "sub-second mtime ignored"
        );
        head.if_unmodified_since = Some(at(999_999));
        head.if_match = Some(ETAG.into());
        assert_eq!(
            eval(&head, Method::Put),
            Precondition::Proceed,
            "If-Match takes precedence"
        );
    }

    #[test]
    fn if_none_match_uses_weak_comparison() {
        let mut head = RequestHead {
            if_none_match: Some(format!("W/{ETAG}")),
            ..Default::default()
        };
        assert_eq!(eval(&head, Method::Get), Precondition::NotModified);
        assert_eq!(eval(&head, Method::Head), Precondition::NotModified);
        assert_eq!(eval(&head, Method::Put), Precondition::PreconditionFailed);
        head.if_none_match = Some("*".into());
        assert_eq!(eval(&head, Method::Put), Precondition::PreconditionFailed);
        head.if_none_match = Some("\"other\"".into());
        assert_eq!(eval(&head, Method::Get), Precondition::Proceed);
    }

    #[test]
    fn if_modified_since_only_without_if_none_match_and_for_get_head() {
        let mut head = RequestHead {
            if_modified_since: Some(at(1_000_000)),
            ..Default::default()
        };
        assert_eq!(eval(&head, Method::Get), Precondition::NotModified);
        assert_eq!(eval(&head, Method::Put), Precondition::Proceed);
        head.if_modified_since = Some(at(999_999));
        assert_eq!(eval(&head, Method::Get), Precondition::Proceed);
        head.if_modified_since = Some(at(2_000_000));
        head.if_none_match = Some("\"other\"".into());
        assert_eq!(
            eval(&head, Method::Get),
            Precondition::Proceed,
            "If-None-Match wins"
        );
    }

    #[test]
    fn failed_if_match_beats_not_modified() {
        let head = RequestHead {
            if_match: Some("\"other\"".into()),
            if_none_match: Some(ETAG.into()),
            ..Default::default()
        };
        assert_eq!(eval(&head, Method::Get), Precondition::PreconditionFailed);
    }

    #[test]
    fn if_range_rules() {
        let mut head = RequestHead::default();
        assert!(if_range_allows(&head, ETAG, modified()));
        head.if_range = Some(ETAG.into());
        assert!(if_range_allows(&head, ETAG, modified()));
        head.if_range = Some(format!("W/{ETAG}"));
        assert!(
            !if_range_allows(&head, ETAG, modified()),
            "weak tags never match"
        );
        head.if_range = Some("\"stale\"".into());
        assert!(!if_range_allows(&head, ETAG, modified()));
        head.if_range = Some(httpdate::fmt_http_date(at(1_000_000)));
        assert!(if_range_allows(&head, ETAG, modified()));
        head.if_range = Some(httpdate::fmt_http_date(at(1_000_001)));
        assert!(
            !if_range_allows(&head, ETAG, modified()),
            "dates must be equal, not later"
        );
        head.if_range = Some("not a date".into());
        assert!(!if_range_allows(&head, ETAG, modified()));
    }

    fn validator() -> impl Strategy<Value = Option<String>> {
        prop::option::of(prop::sample::select(vec![
            "*".to_owned(),
            ETAG.to_owned(),
            format!("W/{ETAG}"),
            "\"other\"".to_owned(),
            format!("\"x\", {ETAG}"),
            "garbage".to_owned(),
        ]))
    }

    fn date() -> impl Strategy<Value = Option<SystemTime>> {
        prop::option::of((999_998u64..1_000_003).prop_map(at))
    }

    proptest! {
        /// Invariants of the RFC 9110 §13.2.2 order, over every combination of validators.
        #[test]
        fn evaluation_order_invariants(
            if_match in validator(),
            if_none_match in validator(),
            if_modified_since in date(),
            if_unmodified_since in date(),
            method in prop::sample::select(vec![Method::Get, Method::Head, Method::Put, Method::Delete]),
        ) {
            let head = RequestHead {
                if_match: if_match.clone(),
                if_none_match: if_none_match.clone(),
                if_modified_since,
                if_unmodified_since,
                ..Default::default()
            };
            let outcome = eval(&head, method.clone());
            let safe = matches!(method, Method::Get | Method::Head);
            if !safe {
                prop_assert_ne!(outcome, Precondition::NotModified);
            }
            if if_match.is_none() && if_none_match.is_none()
                && if_modified_since.is_none() && if_unmodified_since.is_none() {
                prop_assert_eq!(outcome, Precondition::Proceed);
            }
            if let Some(value) = &if_match {
                if !list_matches(value, ETAG, true) {
                    prop_assert_eq!(outcome, Precondition::PreconditionFailed);
                }
            }
            if outcome == Precondition::NotModified {
                prop_assert!(if_none_match.is_some() || if_modified_since.is_some());
            }
        }
    }
}
