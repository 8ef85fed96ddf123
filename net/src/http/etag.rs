//! Entity tags: how Oasis builds them and how request validators are compared with them.
//!
//! An Oasis ETag is strong and derived from the stored object's content checksum, size and
//! modification time, so it changes whenever the bytes may have changed. This module only
//! formats and compares strings; it must never hash object data or read metadata itself.

/// The strong ETag for an object: `"<crc32c, 8 hex digits>-<size hex>-<mtime secs hex>"`,
/// quotes included, for example `"1a2b3c4d-1f400-6553f100"`.
///
/// The modification time is included because a 32-bit checksum alone lets two versions of an
/// object with the same size collide once in 2^32 replacements; with the mtime they must also
/// be written within the same second.
pub fn strong_etag(checksum_crc32c: u32, size: u64, mtime_secs: u64) -> String {
    StrongEtag::new(checksum_crc32c, size, mtime_secs)
        .as_str()
        .to_owned()
}

/// [`strong_etag`] formatted on the stack: every media response carries one, and most
/// conditionals compare with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StrongEtag {
    bytes: [u8; STRONG_ETAG_BYTES_MAX],
    len: u8,
}

/// Quotes, 8 checksum digits, two dashes and up to 16 hex digits for each of size and mtime.
const STRONG_ETAG_BYTES_MAX: usize = 2 + 8 + 2 + 16 + 16;

impl StrongEtag {
    pub fn new(checksum_crc32c: u32, size: u64, mtime_secs: u64) -> Self {
        let mut tag = StrongEtag {
            bytes: [0; STRONG_ETAG_BYTES_MAX],
            len: 0,
        };
        tag.push(b'"');
        for shift in (0..8).rev() {
            tag.push(HEX[(checksum_crc32c >> (4 * shift)) as usize & 0xf]);
        }
        tag.push(b'-');
        tag.push_hex(size);
        tag.push(b'-');
        tag.push_hex(mtime_secs);
        tag.push(b'"');
        tag
    }

    fn push(&mut self, byte: u8) {
        self.bytes[usize::from(self.len)] = byte;
        self.len += 1;
    }

    /// Lowercase hex without leading zeros (`{:x}`).
    fn push_hex(&mut self, value: u64) {
        let digits = (64 - value.leading_zeros()).div_ceil(4).max(1);
        for shift in (0..digits).rev() {
            self.push(HEX[(value >> (4 * shift)) as usize & 0xf]);
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).expect("an ETag is ASCII")
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// One entity-tag taken from a header: `W/"opaque"` or `"opaque"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntityTag<'a> {
    pub weak: bool,
    /// The opaque tag with its double quotes.
    pub opaque: &'a str,
}

impl<'a> EntityTag<'a> {
    /// Parses exactly one entity-tag (surrounding whitespace allowed); `None` if malformed.
    pub fn parse(text: &'a str) -> Option<Self> {
        let mut list = EntityTagList {
            rest: text.trim_matches([' ', '\t']),
        };
        let tag = list.next_tag()?.ok()?;
        list.rest.is_empty().then_some(tag)
    }
}

/// RFC 9110 §8.8.3.2 strong comparison: both strong and the opaque tags identical.
pub fn strong_match(a: &EntityTag<'_>, b: &EntityTag<'_>) -> bool {
    !a.weak && !b.weak && a.opaque == b.opaque
}

/// RFC 9110 §8.8.3.2 weak comparison: opaque tags identical, weakness ignored.
pub fn weak_match(a: &EntityTag<'_>, b: &EntityTag<'_>) -> bool {
    a.opaque == b.opaque
}

/// Whether an `If-Match` / `If-None-Match` value (`*` or a list of entity-tags) matches
/// `current`, using strong or weak comparison. A malformed list matches nothing from the first
/// malformed element on.
pub fn list_matches(header_value: &str, current: &str, strong: bool) -> bool {
    let header_value = header_value.trim_matches([' ', '\t']);
    if header_value == "*" {
        return true;
    }
    let Some(current) = EntityTag::parse(current) else {
        return false;
    };
    let mut list = EntityTagList { rest: header_value };
    while let Some(Ok(tag)) = list.next_tag() {
        let matched = if strong {
            strong_match(&tag, &current)
        } else {
            weak_match(&tag, &current)
        };
        if matched {
            return true;
        }
    }
    false
}

/// Walks `#entity-tag`; entity-tags may contain commas, so this cannot be a plain split.
struct EntityTagList<'a> {
    rest: &'a str,
}

impl<'a> EntityTagList<'a> {
    /// `None` at the end of the list, `Some(Err(()))` on a malformed element.
    fn next_tag(&mut self) -> Option<Result<EntityTag<'a>, ()>> {
        self.rest = self.rest.trim_start_matches([' ', '\t', ',']);
        if self.rest.is_empty() {
            return None;
        }
        let (weak, after_prefix) = match self.rest.strip_prefix("W/") {
            Some(after) => (true, after),
            None => (false, self.rest),
        };
        let Some(body) = after_prefix.strip_prefix('"') else {
            self.rest = "";
            return Some(Err(()));
        };
        // etagc = %x21 / %x23-7E / obs-text: anything visible but DQUOTE.
        let Some(close) = body.find('"') else {
            self.rest = "";
            return Some(Err(()));
        };
        if body[..close].bytes().any(|b| b <= b' ' || b == 0x7f) {
            self.rest = "";
            return Some(Err(()));
        }
        let opaque = &after_prefix[..close + 2];
        self.rest = &body[close + 1..];
        let next = self.rest.trim_start_matches([' ', '\t']);
        if !next.is_empty() && !next.starts_with(',') {
            self.rest = "";
            return Some(Err(()));
        }
        Some(Ok(EntityTag { weak, opaque }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn stack_etag_matches_format(crc in any::<u32>(), size in any::<u64>(), mtime in any::<u64>()) {
            let tag = StrongEtag::new(crc, size, mtime);
            prop_assert_eq!(tag.as_str(), format!("\"{crc:08x}-{size:x}-{mtime:x}\""));
        }
    }

    #[test]
    fn strong_etag_format() {
        assert_eq!(
            strong_etag(0x1a2b3c4d, 0x1f400, 0x6553f100),
            "\"1a2b3c4d-1f400-6553f100\""
        );
        assert_eq!(strong_etag(0, 0, 0), "\"00000000-0-0\"");
        let tag = strong_etag(u32::MAX, u64::MAX, u64::MAX);
        assert_eq!(
            EntityTag::parse(&tag),
            Some(EntityTag {
                weak: false,
                opaque: &tag
            })
        );
    }

    #[test]
    fn rfc_9110_comparison_table() {
        // RFC 9110 §8.8.3.2, the example table.
        let w1 = EntityTag::parse("W/\"1\"").unwrap();
        let w2 = EntityTag::parse("W/\"2\"").unwrap();
        let s1 = EntityTag::parse("\"1\"").unwrap();
        assert!(!strong_match(&w1, &w1) && weak_match(&w1, &w1));
        assert!(!strong_match(&w1, &w2) && !weak_match(&w1, &w2));
        assert!(!strong_match(&w1, &s1) && weak_match(&w1, &s1));
        assert!(strong_match(&s1, &s1) && weak_match(&s1, &s1));
    }

    #[test]
    fn parse_rejects_malformed_tags() {
        for bad in [
            "",
            "abc",
            "\"abc",
            "W/abc",
            "w/\"a\"",
            "\"a\" x",
            "\"a b\"",
            "\"a\",\"b\"",
        ] {
            assert_eq!(EntityTag::parse(bad), None, "{bad:?}");
        }
        assert_eq!(
            EntityTag::parse(" \"\" "),
            Some(EntityTag {
                weak: false,
                opaque: "\"\""
            })
        );
    }

    #[test]
    fn lists_match_with_the_requested_strength() {
        let current = "\"abc\"";
        assert!(list_matches("*", current, true));
        assert!(list_matches("\"x\", \"abc\"", current, true));
        assert!(list_matches("\"x\",W/\"abc\"", current, false));
        assert!(!list_matches("\"x\",W/\"abc\"", current, true));
        assert!(
            list_matches("\"a,b\", \"abc\"", current, true),
            "commas inside tags"
        );
        assert!(
            !list_matches("\"x\" junk, \"abc\"", current, true),
            "stops at malformed"
        );
        assert!(!list_matches("", current, false));
        assert!(!list_matches("abc", current, false));
        assert!(!list_matches("\"abc\"", "not-a-tag", false));
    }
}
