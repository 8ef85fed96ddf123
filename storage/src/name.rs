//! Object names: the rules and the validator.
//!
//! An object name is what clients ask for (`show/index.m3u8`). It is a key in the catalog and the
//! in-memory index, and nothing more: this module must never turn a name into a file path. Content
//! lives in files named by object id, so even a name that slipped past these rules could not reach
//! outside the data directory. The rules exist so names stay printable, unambiguous in URLs and
//! playlists, and bounded in size.

/// Longest accepted name, in bytes of UTF-8.
pub const NAME_BYTES_MAX: usize = 1024;
/// Longest accepted segment (the text between two slashes), in bytes of UTF-8.
pub const SEGMENT_BYTES_MAX: usize = 255;

const _: () = assert!(SEGMENT_BYTES_MAX <= NAME_BYTES_MAX);

/// Why a name was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("the name is empty")]
    Empty,
    #[error("the name is {len_bytes} bytes long, the limit is {NAME_BYTES_MAX}")]
    TooLong { len_bytes: usize },
    #[error("segment {segment_index} is {len_bytes} bytes long, the limit is {SEGMENT_BYTES_MAX}")]
    SegmentTooLong {
        segment_index: usize,
        len_bytes: usize,
    },
    #[error("segment {segment_index} is empty (leading, trailing or doubled '/')")]
    EmptySegment { segment_index: usize },
    #[error("segment {segment_index} is '.' or '..'")]
    DotSegment { segment_index: usize },
    #[error("control character U+{code:04X} at byte {byte_offset}")]
    ControlChar { code: u32, byte_offset: usize },
    #[error("backslash at byte {byte_offset}")]
    Backslash { byte_offset: usize },
}

/// Checks `name` against the naming rules. Never panics, whatever the input.
pub fn validate_name(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > NAME_BYTES_MAX {
        return Err(NameError::TooLong {
            len_bytes: name.len(),
        });
    }
    for (byte_offset, c) in name.char_indices() {
        if c.is_control() {
            return Err(NameError::ControlChar {
                code: c as u32,
                byte_offset,
            });
        }
        if c == '\\' {
            return Err(NameError::Backslash { byte_offset });
        }
    }
    for (segment_index, segment) in name.split('/').enumerate() {
        if segment.is_empty() {
            return Err(NameError::EmptySegment { segment_index });
        }
        if segment == "." || segment == ".." {
            return Err(NameError::DotSegment { segment_index });
        }
        if segment.len() > SEGMENT_BYTES_MAX {
            return Err(NameError::SegmentTooLong {
                segment_index,
                len_bytes: segment.len(),
            });
        }
    }
    Ok(())
}

/// The directory part of a name: `show/hls/index.m3u8` gives `show/hls`, `a.ts` gives ``.
pub(crate) fn parent(name: &str) -> &str {
    match name.rfind('/') {
        Some(i) => &name[..i],
        None => "",
    }
}

/// Resolves a relative reference (a playlist's segment URI) against the directory `base`.
/// Returns `None` for absolute URLs, absolute paths, references that climb above the root, and
/// results that are not valid names. Query strings and fragments are dropped.
pub(crate) fn resolve_relative(base: &str, reference: &str) -> Option<String> {
    let reference = reference.split(['?', '#']).next().unwrap_or("");
    if reference.is_empty() || reference.starts_with('/') || reference.contains("://") {
        return None;
    }
    let mut parts: Vec<&str> = if base.is_empty() {
        Vec::new()
    } else {
        base.split('/').collect()
    };
    for segment in reference.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    let joined = parts.join("/");
    validate_name(&joined).ok()?;
    Some(joined)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for name in [
            "a",
            "show/index.m3u8",
            "show/seg00001.ts",
            "a b/ç.mp4",
            "...",
            "a/.hidden",
        ] {
            assert_eq!(validate_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn refuses_hostile_names() {
        let long = "a".repeat(NAME_BYTES_MAX + 1);
        let long_segment = format!("x/{}", "b".repeat(SEGMENT_BYTES_MAX + 1));
        for name in [
            "",
            "/a",
            "a/",
            "a//b",
            ".",
            "..",
            "a/../b",
            "./a",
            "a\0b",
            "a\nb",
            "a\\b",
            "a\u{7f}",
            &long,
            &long_segment,
        ] {
            assert!(validate_name(name).is_err(), "{name:?} accepted");
        }
    }

    #[test]
    fn resolves_playlist_references() {
        assert_eq!(
            resolve_relative("show", "seg1.ts").as_deref(),
            Some("show/seg1.ts")
        );
        assert_eq!(resolve_relative("", "seg1.ts").as_deref(), Some("seg1.ts"));
        assert_eq!(
            resolve_relative("show/hi", "../lo/s.ts?x=1").as_deref(),
            Some("show/lo/s.ts")
        );
        assert_eq!(resolve_relative("show", "../../s.ts"), None);
        assert_eq!(resolve_relative("show", "http://cdn/s.ts"), None);
        assert_eq!(resolve_relative("show", "/abs.ts"), None);
    }
}
