//! `Range` header parsing and satisfiability: decides between 200, 206 and 416.
//!
//! Implements RFC 9110 §14.1-14.2 for the `bytes` unit with nginx's abuse defences: a header
//! whose ranges add up to more than the object (overlap amplification) or that lists more than
//! `max_ranges` ranges gets the whole object instead. This module must never panic or
//! overflow on any header value, and must never do work beyond `max_ranges` range specs.

/// An inclusive byte range `start..=end_inclusive` within an object; never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    pub start: u64,
    pub end_inclusive: u64,
}

impl ByteRange {
    /// A range of at least one byte; `start <= end_inclusive` is the caller's promise.
    pub fn new(start: u64, end_inclusive: u64) -> Self {
        assert!(
            start <= end_inclusive,
            "ByteRange {start}-{end_inclusive} is empty"
        );
        Self {
            start,
            end_inclusive,
        }
    }

    /// Number of bytes in the range; at least 1.
    #[allow(clippy::len_without_is_empty)] // A ByteRange is never empty by construction.
    pub fn len(&self) -> u64 {
        debug_assert!(self.start <= self.end_inclusive);
        self.end_inclusive - self.start + 1
    }
}

/// What to send for a `Range` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RangeSpec {
    /// Serve the whole object with 200: no header, an invalid one, another unit, or one we
    /// decline to honour (too many ranges, overlapping ranges adding up past the length).
    Full,
    /// Serve one range with 206 and `Content-Range`.
    Single(ByteRange),
    /// Serve these ranges, in request order, as `multipart/byteranges` with 206.
    Multi(Vec<ByteRange>),
    /// 416 with `Content-Range: bytes */len`: valid syntax but no range overlaps the object.
    Unsatisfiable,
}

/// One syntactically valid range-spec before it is resolved against the length.
#[derive(Debug, Clone, Copy)]
enum Spec {
    /// `first-` or `first-last`; `last` saturates at `u64::MAX`.
    FromTo { first: u64, last: Option<u64> },
    /// `-suffix`: the last `suffix` bytes; saturates at `u64::MAX`.
    Suffix(u64),
}

/// Decides how to answer a request carrying `Range: header` for an object of `len` bytes.
///
/// `max_ranges` of 0 disables ranges altogether (always `Full`).
pub fn parse_range(header: &str, len: u64, max_ranges: usize) -> RangeSpec {
    let header = header.trim_matches([' ', '\t']);
    let Some((unit, set)) = header.split_once('=') else {
        return RangeSpec::Full;
    };
    if !unit.eq_ignore_ascii_case("bytes") {
        return RangeSpec::Full;
    }

    let mut ranges: Vec<ByteRange> = Vec::new();
    let mut specs_count = 0usize;
    let mut bytes_total: u64 = 0;
    // RFC 9110 §5.6.1: list elements may be empty and surrounded by optional whitespace.
    for element in set.split(',') {
        let element = element.trim_matches([' ', '\t']);
        if element.is_empty() {
            continue;
        }
        specs_count += 1;
        if specs_count > max_ranges {
            return RangeSpec::Full;
        }
        let Some(spec) = parse_spec(element) else {
            return RangeSpec::Full;
        };
        let Some(range) = resolve(spec, len) else {
            continue;
        };
        bytes_total = match bytes_total.checked_add(range.len()) {
            Some(total) if total <= len => total,
            _ => return RangeSpec::Full,
        };
        ranges.push(range);
    }
    if specs_count == 0 {
        return RangeSpec::Full;
    }
    match ranges.len() {
        0 => RangeSpec::Unsatisfiable,
        1 => RangeSpec::Single(ranges[0]),
        _ => RangeSpec::Multi(ranges),
    }
}

fn parse_spec(element: &str) -> Option<Spec> {
    let (first, last) = element.split_once('-')?;
    if first.is_empty() {
        return Some(Spec::Suffix(parse_digits(last)?));
    }
    let first = parse_digits(first)?;
    if last.is_empty() {
        return Some(Spec::FromTo { first, last: None });
    }
    let last = parse_digits(last)?;
    // RFC 9110 §14.1.1: last-pos below first-pos makes the whole header invalid.
    if last < first {
        return None;
    }
    Some(Spec::FromTo {
        first,
        last: Some(last),
    })
}

/// `1*DIGIT`, saturating at `u64::MAX`: a position past any object is still a valid position.
fn parse_digits(digits: &str) -> Option<u64> {
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(digits.bytes().fold(0u64, |acc, b| {
        acc.saturating_mul(10).saturating_add(u64::from(b - b'0'))
    }))
}

/// The part of the object a spec selects, or `None` when it selects nothing.
fn resolve(spec: Spec, len: u64) -> Option<ByteRange> {
    if len == 0 {
        return None;
    }
    match spec {
        Spec::FromTo { first, last } => {
            if first >= len {
                return None;
            }
            let end_inclusive = last.unwrap_or(u64::MAX).min(len - 1);
            Some(ByteRange::new(first, end_inclusive))
        }
        Spec::Suffix(0) => None,
        Spec::Suffix(suffix) => Some(ByteRange::new(len - suffix.min(len), len - 1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(start: u64, end_inclusive: u64) -> ByteRange {
        ByteRange::new(start, end_inclusive)
    }

    #[test]
    fn single_range_forms() {
        assert_eq!(
            parse_range("bytes=0-499", 1000, 8),
            RangeSpec::Single(r(0, 499))
        );
        assert_eq!(
            parse_range("bytes=500-", 1000, 8),
            RangeSpec::Single(r(500, 999))
        );
        assert_eq!(
            parse_range("bytes=-200", 1000, 8),
            RangeSpec::Single(r(800, 999))
        );
        assert_eq!(
            parse_range("bytes=-5000", 1000, 8),
            RangeSpec::Single(r(0, 999))
        );
        assert_eq!(
            parse_range("bytes=900-5000", 1000, 8),
            RangeSpec::Single(r(900, 999))
        );
        assert_eq!(
            parse_range("bytes=999-999", 1000, 8),
            RangeSpec::Single(r(999, 999))
        );
        assert_eq!(parse_range("bytes=0-", 1, 8), RangeSpec::Single(r(0, 0)));
        assert_eq!(parse_range("Bytes=0-0", 10, 8), RangeSpec::Single(r(0, 0)));
        assert_eq!(r(0, 499).len(), 500);
        assert_eq!(r(7, 7).len(), 1);
    }

    #[test]
    fn lists_and_whitespace() {
        assert_eq!(
            parse_range("bytes=0-99, 200-299 ,\t-100", 1000, 8),
            RangeSpec::Multi(vec![r(0, 99), r(200, 299), r(900, 999)])
        );
        assert_eq!(
            parse_range(" bytes=0-1,,, ", 10, 8),
            RangeSpec::Single(r(0, 1))
        );
        // Unsatisfiable members are dropped when another member is satisfiable.
        assert_eq!(
            parse_range("bytes=0-1,5000-6000", 10, 8),
            RangeSpec::Single(r(0, 1))
        );
        assert_eq!(
            parse_range("bytes=8-,0-1", 10, 8),
            RangeSpec::Multi(vec![r(8, 9), r(0, 1)]),
            "request order is kept"
        );
    }

    #[test]
    fn invalid_or_foreign_headers_mean_full() {
        for header in [
            "",
            "bytes",
            "bytes=",
            "bytes=,",
            "bytes=-",
            "bytes=a-b",
            "bytes=5-1",
            "bytes=1-2-3",
            "bytes=0x10-",
            "bytes=+1-2",
            "bytes = 0-1",
            "bytes=0 - 1",
            "items=0-1",
            "none",
            "bytes=0-1,x",
            "bytes=-1-",
            "bytes=\u{0660}-1",
        ] {
            assert_eq!(parse_range(header, 1000, 8), RangeSpec::Full, "{header:?}");
        }
    }

    #[test]
    fn unsatisfiable_ranges() {
        assert_eq!(
            parse_range("bytes=1000-", 1000, 8),
            RangeSpec::Unsatisfiable
        );
        assert_eq!(
            parse_range("bytes=1000-2000,3000-", 1000, 8),
            RangeSpec::Unsatisfiable
        );
        assert_eq!(parse_range("bytes=-0", 1000, 8), RangeSpec::Unsatisfiable);
        assert_eq!(
            parse_range("bytes=99999999999999999999999999-", 1000, 8),
            RangeSpec::Unsatisfiable
        );
    }

    #[test]
    fn zero_length_objects_satisfy_no_range() {
        for header in ["bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-0"] {
            assert_eq!(
                parse_range(header, 0, 8),
                RangeSpec::Unsatisfiable,
                "{header}"
            );
        }
        assert_eq!(parse_range("bytes=x", 0, 8), RangeSpec::Full);
    }

    #[test]
    fn overlap_abuse_and_too_many_ranges_mean_full() {
        assert_eq!(parse_range("bytes=0-,0-", 1000, 8), RangeSpec::Full);
        assert_eq!(parse_range("bytes=0-600,400-999", 1000, 8), RangeSpec::Full);
        // Overlapping but not adding up past the length is honoured, as nginx does.
        assert_eq!(
            parse_range("bytes=0-499,400-799", 1000, 8),
            RangeSpec::Multi(vec![r(0, 499), r(400, 799)])
        );
        let nine = "bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8";
        assert_eq!(parse_range(nine, 1000, 8), RangeSpec::Full);
        assert!(matches!(parse_range(nine, 1000, 9), RangeSpec::Multi(v) if v.len() == 9));
        assert_eq!(parse_range("bytes=0-1", 1000, 0), RangeSpec::Full);
    }

    #[test]
    fn saturating_positions_do_not_overflow() {
        let huge = "bytes=0-99999999999999999999999999";
        assert_eq!(
            parse_range(huge, u64::MAX, 8),
            RangeSpec::Single(r(0, u64::MAX - 1))
        );
        assert_eq!(
            parse_range("bytes=-99999999999999999999999", u64::MAX, 8),
            RangeSpec::Single(r(0, u64::MAX - 1))
        );
        assert_eq!(parse_range("bytes=0-,1-", u64::MAX, 8), RangeSpec::Full);
    }

    /// The reference model: what each spec selects, computed the slow obvious way.
    fn model_resolve(spec: (Option<u64>, Option<u64>), len: u64) -> Option<(u64, u64)> {
        match spec {
            (Some(first), last) => {
                let end = last.unwrap_or(u64::MAX).min(len.checked_sub(1)?);
                (first <= end).then_some((first, end))
            }
            (None, Some(suffix)) => {
                if suffix == 0 || len == 0 {
                    None
                } else {
                    Some((len.saturating_sub(suffix), len - 1))
                }
            }
            (None, None) => unreachable!(),
        }
    }

    fn render_spec(spec: (Option<u64>, Option<u64>)) -> String {
        match spec {
            (Some(first), Some(last)) => format!("{first}-{last}"),
            (Some(first), None) => format!("{first}-"),
            (None, Some(suffix)) => format!("-{suffix}"),
            (None, None) => unreachable!(),
        }
    }

    fn spec_strategy() -> impl Strategy<Value = (Option<u64>, Option<u64>)> {
        prop_oneof![
            (0u64..2000, 0u64..2000).prop_map(|(a, b)| (Some(a.min(b)), Some(a.max(b)))),
            (0u64..2000).prop_map(|a| (Some(a), None)),
            (0u64..2000).prop_map(|s| (None, Some(s))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1024))]

        /// Fuzz target: any string, any length, any limit; never panics, results are sane.
        #[test]
        fn arbitrary_headers_never_panic(header in ".{0,64}", len in any::<u64>(), max in 0usize..16) {
            check_sane(&parse_range(&header, len, max), len, max)?;
        }

        /// Fuzz target: range-shaped garbage reaches the deeper code paths.
        #[test]
        fn range_shaped_headers_never_panic(
            header in "(bytes|BYTES|x)=[0-9, \t-]{0,40}", len in prop_oneof![0u64..3000, any::<u64>()]
        ) {
            check_sane(&parse_range(&header, len, 8), len, 8)?;
        }

        /// Round trip: a rendered list of specs resolves exactly as the model says.
        #[test]
        fn rendered_specs_match_the_model(
            specs in prop::collection::vec(spec_strategy(), 1..6), len in 0u64..2500, spaces in any::<bool>()
        ) {
            let separator = if spaces { " , " } else { "," };
            let header = format!(
                "bytes={}",
                specs.iter().map(|s| render_spec(*s)).collect::<Vec<_>>().join(separator)
            );
            let resolved: Vec<ByteRange> = specs
                .iter()
                .filter_map(|s| model_resolve(*s, len))
                .map(|(a, b)| ByteRange::new(a, b))
                .collect();
            let total: u64 = resolved.iter().map(ByteRange::len).sum();
            let expected = if total > len {
                RangeSpec::Full
            } else {
                match resolved.len() {
                    0 => RangeSpec::Unsatisfiable,
                    1 => RangeSpec::Single(resolved[0]),
                    _ => RangeSpec::Multi(resolved),
                }
            };
            prop_assert_eq!(parse_range(&header, len, 8), expected, "{}", header);
        }
    }

    fn check_sane(spec: &RangeSpec, len: u64, max: usize) -> Result<(), TestCaseError> {
        let ranges = match spec {
            RangeSpec::Full => return Ok(()),
            RangeSpec::Unsatisfiable => return Ok(()),
            RangeSpec::Single(range) => std::slice::from_ref(range),
            RangeSpec::Multi(ranges) => {
                prop_assert!(ranges.len() >= 2);
                ranges.as_slice()
            }
        };
        prop_assert!(ranges.len() <= max);
        let mut total: u64 = 0;
        for range in ranges {
            prop_assert!(range.start <= range.end_inclusive && range.end_inclusive < len);
            total += range.len();
        }
        prop_assert!(total <= len);
        Ok(())
    }
}
