//! Content types from file extensions: the one fixed table of the media and side files Oasis
//! serves (an uploader's own `Content-Type` wins over it).
//!
//! This module must never look at the bytes of an object or consult the host's MIME database: the
//! answer depends on the name alone, so it is the same on every machine.

/// What an object with no known extension is served as.
pub const FALLBACK_CONTENT_TYPE: &str = "application/octet-stream";

/// Lower-case extension to content type. Kept short on purpose; uploaders can always say.
const TABLE: &[(&str, &str)] = &[
    ("m3u8", "application/vnd.apple.mpegurl"),
    ("m3u", "audio/mpegurl"),
    ("ts", "video/mp2t"),
    ("m4s", "video/iso.segment"),
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("m4a", "audio/mp4"),
    ("mov", "video/quicktime"),
    ("cmfv", "video/mp4"),
    ("cmfa", "audio/mp4"),
    ("ogv", "video/ogg"),
    ("3gp", "video/3gpp"),
    ("avi", "video/x-msvideo"),
    ("mpd", "application/dash+xml"),
    ("webm", "video/webm"),
    ("mkv", "video/x-matroska"),
    ("mp3", "audio/mpeg"),
    ("aac", "audio/aac"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("weba", "audio/webm"),
    ("opus", "audio/opus"),
    ("wav", "audio/wav"),
    ("flac", "audio/flac"),
    ("vtt", "text/vtt"),
    ("ttml", "application/ttml+xml"),
    ("srt", "application/x-subrip"),
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("svg", "image/svg+xml"),
    ("avif", "image/avif"),
    ("ico", "image/x-icon"),
    ("html", "text/html; charset=utf-8"),
    ("htm", "text/html; charset=utf-8"),
    ("css", "text/css"),
    ("js", "text/javascript"),
    ("mjs", "text/javascript"),
    ("wasm", "application/wasm"),
    ("json", "application/json"),
    ("txt", "text/plain; charset=utf-8"),
    ("xml", "application/xml"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
];

/// The extension of the last segment of `name`, if any (`show/a.TS` gives `TS`).
pub(crate) fn extension(name: &str) -> Option<&str> {
    let last = name.rsplit('/').next().unwrap_or(name);
    let dot = last.rfind('.')?;
    let ext = &last[dot + 1..];
    (!ext.is_empty()).then_some(ext)
}

/// The content type for `name`, from its extension (case-insensitive), or the fallback.
pub fn content_type_for(name: &str) -> &'static str {
    let Some(ext) = extension(name) else {
        return FALLBACK_CONTENT_TYPE;
    };
    TABLE
        .iter()
        .find(|(e, _)| e.eq_ignore_ascii_case(ext))
        .map(|(_, t)| *t)
        .unwrap_or(FALLBACK_CONTENT_TYPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_and_unknown_extensions() {
        assert_eq!(
            content_type_for("show/index.m3u8"),
            "application/vnd.apple.mpegurl"
        );
        assert_eq!(content_type_for("show/SEG1.TS"), "video/mp2t");
        assert_eq!(content_type_for("movie.mp4"), "video/mp4");
        assert_eq!(content_type_for("noext"), FALLBACK_CONTENT_TYPE);
        assert_eq!(content_type_for("dir.d/file"), FALLBACK_CONTENT_TYPE);
        assert_eq!(content_type_for("trailing."), FALLBACK_CONTENT_TYPE);
        assert_eq!(content_type_for("x.unknown"), FALLBACK_CONTENT_TYPE);
    }

    #[test]
    fn table_is_lower_case_and_unique() {
        for (i, (ext, _)) in TABLE.iter().enumerate() {
            assert_eq!(*ext, ext.to_ascii_lowercase());
            assert!(
                TABLE[i + 1..].iter().all(|(e, _)| e != ext),
                "duplicate {ext}"
            );
        }
    }
}
