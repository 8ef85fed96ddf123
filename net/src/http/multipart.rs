//! `multipart/byteranges` framing for 206 answers to multi-range requests (RFC 9110 §14.6).
//!
//! The plan lists, for each range, the part header bytes to send before that slice of the
//! object, then the closing delimiter, and the exact body length so `Content-Length` can be sent
//! up front and the engine can stream each slice straight from storage. This module only
//! computes framing; it must never copy object data.
//!
//! The body, byte for byte (`B` is the boundary, `T` the object's content type, `L` its length):
//!
//! ```text
//! --B CRLF                                  first part header (no leading CRLF)
//! Content-Type: T CRLF
//! Content-Range: bytes s1-e1/L CRLF
//! CRLF
//! <object bytes s1..=e1>
//! CRLF --B CRLF                             every later part header starts with CRLF
//! Content-Type: T CRLF
//! Content-Range: bytes s2-e2/L CRLF
//! CRLF
//! <object bytes s2..=e2>
//! CRLF --B-- CRLF                           closing delimiter
//! ```

use super::range::ByteRange;
use super::response::push_content_range_value;

/// Longest boundary RFC 2046 §5.1.1 allows.
pub const BOUNDARY_BYTES_MAX: usize = 70;

/// One part: send `header`, then the object's bytes in `range`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartPart {
    pub header: Vec<u8>,
    pub range: ByteRange,
}

/// The complete framing of a `multipart/byteranges` body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipartPlan {
    /// Value for the response's `Content-Type`: `multipart/byteranges; boundary=...`.
    pub content_type: String,
    pub parts: Vec<MultipartPart>,
    /// Sent after the last part's data: `CRLF --boundary-- CRLF`.
    pub closing: Vec<u8>,
    /// Exact body length: all part headers, all range bytes, and the closing delimiter.
    pub body_bytes: u64,
}

/// A boundary made from a per-response number, 20 digits like nginx's.
pub fn make_boundary(seed: u64) -> String {
    format!("{seed:020}")
}

/// Plans the body for `ranges` of an object of `total_bytes` whose type is `content_type`.
///
/// `boundary` must be 1-70 characters of RFC 2046 `bcharsnospace` (the caller picks it, e.g.
/// with [`make_boundary`]); `ranges` must lie within the object. Both are caller bugs if not.
pub fn plan_byteranges(
    ranges: &[ByteRange],
    content_type: &str,
    total_bytes: u64,
    boundary: &str,
) -> MultipartPlan {
    assert!(
        !boundary.is_empty()
            && boundary.len() <= BOUNDARY_BYTES_MAX
            && boundary
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"'()+_,-./:=?".contains(&b)),
        "invalid multipart boundary {boundary:?}"
    );
    assert!(!content_type.bytes().any(|b| b == b'\r' || b == b'\n'));
    let mut body_bytes: u64 = 0;
    let parts: Vec<MultipartPart> = ranges
        .iter()
        .enumerate()
        .map(|(index, &range)| {
            assert!(range.end_inclusive < total_bytes, "range beyond the object");
            let mut header = Vec::with_capacity(64 + boundary.len() + content_type.len());
            // The first delimiter opens the body; later ones end the previous part's data.
            if index > 0 {
                header.extend_from_slice(b"\r\n");
            }
            header.extend_from_slice(b"--");
            header.extend_from_slice(boundary.as_bytes());
            header.extend_from_slice(b"\r\nContent-Type: ");
            header.extend_from_slice(content_type.as_bytes());
            header.extend_from_slice(b"\r\nContent-Range: ");
            push_content_range_value(&mut header, range, total_bytes);
            header.extend_from_slice(b"\r\n\r\n");
            body_bytes += header.len() as u64 + range.len();
            MultipartPart { header, range }
        })
        .collect();
    let mut closing = Vec::with_capacity(boundary.len() + 8);
    closing.extend_from_slice(b"\r\n--");
    closing.extend_from_slice(boundary.as_bytes());
    closing.extend_from_slice(b"--\r\n");
    body_bytes += closing.len() as u64;
    let mut content_type_value = String::with_capacity(32 + boundary.len());
    content_type_value.push_str("multipart/byteranges; boundary=");
    content_type_value.push_str(boundary);
    MultipartPlan {
        content_type: content_type_value,
        parts,
        closing,
        body_bytes,
    }
}

impl MultipartPlan {
    /// Assembles the whole body from the object's bytes; for tests and tiny objects only,
    /// the engine streams the parts instead.
    pub fn assemble(&self, object: &[u8]) -> Vec<u8> {
        let mut body = Vec::with_capacity(self.body_bytes as usize);
        for part in &self.parts {
            body.extend_from_slice(&part.header);
            body.extend_from_slice(
                &object[part.range.start as usize..=part.range.end_inclusive as usize],
            );
        }
        body.extend_from_slice(&self.closing);
        body
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An independent reader: splits a multipart body on its delimiters and returns each part's
    /// headers and data.
    type Fields = Vec<(String, String)>;

    fn parse_multipart(body: &[u8], boundary: &str) -> Vec<(Fields, Vec<u8>)> {
        let delimiter = format!("--{boundary}");
        let closing = format!("\r\n--{boundary}--\r\n");
        assert!(body.ends_with(closing.as_bytes()), "closing delimiter");
        let body = &body[..body.len() - closing.len()];
        assert!(body.starts_with(delimiter.as_bytes()), "opening delimiter");
        let separator = format!("\r\n--{boundary}\r\n");
        let mut parts = Vec::new();
        let mut rest = &body[delimiter.len() + 2..];
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 8];
            let (head_bytes, fields) = match httparse::parse_headers(rest, &mut headers).unwrap() {
                httparse::Status::Complete((n, fields)) => (n, fields),
                httparse::Status::Partial => panic!("part head incomplete"),
            };
            let fields: Fields = fields
                .iter()
                .map(|h| {
                    (
                        h.name.to_owned(),
                        String::from_utf8(h.value.to_vec()).unwrap(),
                    )
                })
                .collect();
            let range = fields
                .iter()
                .find(|(n, _)| n == "Content-Range")
                .unwrap()
                .1
                .clone();
            let (span, _total) = range
                .strip_prefix("bytes ")
                .unwrap()
                .split_once('/')
                .unwrap();
            let (start, end) = span.split_once('-').unwrap();
            let data_len = end.parse::<usize>().unwrap() - start.parse::<usize>().unwrap() + 1;
            let data = rest[head_bytes..head_bytes + data_len].to_vec();
            parts.push((fields, data));
            rest = &rest[head_bytes + data_len..];
            if rest.is_empty() {
                break;
            }
            assert!(rest.starts_with(separator.as_bytes()), "part separator");
            rest = &rest[separator.len()..];
        }
        parts
    }

    #[test]
    fn two_parts_are_framed_exactly() {
        let object: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let ranges = [ByteRange::new(0, 9), ByteRange::new(990, 999)];
        let plan = plan_byteranges(&ranges, "video/mp4", 1000, "00000000000000000007");
        assert_eq!(
            plan.content_type,
            "multipart/byteranges; boundary=00000000000000000007"
        );
        let body = plan.assemble(&object);
        assert_eq!(body.len() as u64, plan.body_bytes);
        let expected_start = b"--00000000000000000007\r\nContent-Type: video/mp4\r\n\
            Content-Range: bytes 0-9/1000\r\n\r\n";
        assert!(body.starts_with(expected_start));
        let parts = parse_multipart(&body, "00000000000000000007");
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].1, &object[0..10]);
        assert_eq!(parts[1].1, &object[990..1000]);
        assert_eq!(
            parts[1].0[0],
            ("Content-Type".to_owned(), "video/mp4".to_owned())
        );
        assert_eq!(parts[1].0[1].1, "bytes 990-999/1000");
    }

    #[test]
    #[should_panic(expected = "invalid multipart boundary")]
    fn boundary_with_spaces_is_a_bug() {
        plan_byteranges(&[ByteRange::new(0, 0)], "video/mp4", 1, "a b");
    }

    proptest! {
        /// Round trip: any ranges of any object parse back to the same slices, and the
        /// announced length is exact.
        #[test]
        fn assembled_bodies_parse_back(
            object in prop::collection::vec(any::<u8>(), 1..600),
            raw_ranges in prop::collection::vec((any::<prop::sample::Index>(), any::<prop::sample::Index>()), 1..6),
            seed in any::<u64>(),
        ) {
            let len = object.len();
            let ranges: Vec<ByteRange> = raw_ranges
                .iter()
                .map(|(a, b)| {
                    let (a, b) = (a.index(len) as u64, b.index(len) as u64);
                    ByteRange::new(a.min(b), a.max(b))
                })
                .collect();
            let boundary = make_boundary(seed);
            let plan = plan_byteranges(&ranges, "audio/mp4", len as u64, &boundary);
            let body = plan.assemble(&object);
            prop_assert_eq!(body.len() as u64, plan.body_bytes);
            let parts = parse_multipart(&body, &boundary);
            prop_assert_eq!(parts.len(), ranges.len());
            for (range, (_, data)) in ranges.iter().zip(&parts) {
                prop_assert_eq!(&data[..], &object[range.start as usize..=range.end_inclusive as usize]);
            }
        }
    }
}
