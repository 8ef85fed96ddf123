//! Content types by file extension, for the media and side files Oasis serves.
//!
//! A fixed table, matched case-insensitively on the last extension of the last path segment.
//! It must never sniff content or allocate; unknown types are `application/octet-stream` so
//! browsers download rather than guess.

/// Fallback for names without a known extension.
pub const DEFAULT_CONTENT_TYPE: &str = "application/octet-stream";

const TABLE: &[(&str, &str)] = &[
    // Video and streaming.
    ("mp4", "video/mp4"),
    ("m4v", "video/mp4"),
    ("m4s", "video/iso.segment"),
    ("cmfv", "video/mp4"),
    ("m3u8", "application/vnd.apple.mpegurl"),
    ("m3u", "audio/x-mpegurl"),
    ("mpd", "application/dash+xml"),
    ("ts", "video/mp2t"),
    ("webm", "video/webm"),
    ("mkv", "video/x-matroska"),
    ("mov", "video/quicktime"),
    ("avi", "video/x-msvideo"),
    ("ogv", "video/ogg"),
    ("3gp", "video/3gpp"),
    // Audio.
    ("m4a", "audio/mp4"),
    ("cmfa", "audio/mp4"),
    ("mp3", "audio/mpeg"),
    ("aac", "audio/aac"),
    ("ogg", "audio/ogg"),
    ("oga", "audio/ogg"),
    ("opus", "audio/ogg"),
    ("wav", "audio/wav"),
    ("flac", "audio/flac"),
    ("weba", "audio/webm"),
    // Subtitles and manifests.
    ("vtt", "text/vtt"),
    ("srt", "application/x-subrip"),
    ("ttml", "application/ttml+xml"),
    ("json", "application/json"),
    ("xml", "application/xml"),
    // Web and text.
    ("html", "text/html"),
    ("htm", "text/html"),
    ("css", "text/css"),
    ("js", "text/javascript"),
    ("mjs", "text/javascript"),
    ("txt", "text/plain"),
    ("wasm", "application/wasm"),
    ("pdf", "application/pdf"),
    ("zip", "application/zip"),
    // Images.
    ("jpg", "image/jpeg"),
    ("jpeg", "image/jpeg"),
    ("png", "image/png"),
    ("gif", "image/gif"),
    ("webp", "image/webp"),
    ("avif", "image/avif"),
    ("svg", "image/svg+xml"),
    ("ico", "image/x-icon"),
];

/// The content type for a file or path `name`, by its extension.
pub fn content_type_for(name: &str) -> &'static str {
    let file = name.rsplit('/').next().unwrap_or(name);
    let Some((stem, extension)) = file.rsplit_once('.') else {
        return DEFAULT_CONTENT_TYPE;
    };
    // ".mp4" alone is a hidden file named "mp4", not an MP4 with an empty name.
    if stem.is_empty() {
        return DEFAULT_CONTENT_TYPE;
    }
    TABLE
        .iter()
        .find(|(known, _)| known.eq_ignore_ascii_case(extension))
        .map_or(DEFAULT_CONTENT_TYPE, |(_, content_type)| content_type)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_types() {
        for (name, content_type) in [
            ("movie.mp4", "video/mp4"),
            ("MOVIE.MP4", "video/mp4"),
            ("clip.m4v", "video/mp4"),
            ("seg-1.m4s", "video/iso.segment"),
            ("song.m4a", "audio/mp4"),
            ("/hls/master.m3u8", "application/vnd.apple.mpegurl"),
            ("dash/manifest.mpd", "application/dash+xml"),
            ("seg0001.ts", "video/mp2t"),
            ("a.webm", "video/webm"),
            ("a.mkv", "video/x-matroska"),
            ("a.mp3", "audio/mpeg"),
            ("a.aac", "audio/aac"),
            ("a.ogg", "audio/ogg"),
            ("a.opus", "audio/ogg"),
            ("a.wav", "audio/wav"),
            ("a.flac", "audio/flac"),
            ("subs.en.vtt", "text/vtt"),
            ("subs.srt", "application/x-subrip"),
            ("meta.json", "application/json"),
            ("index.html", "text/html"),
            ("notes.txt", "text/plain"),
            ("poster.jpg", "image/jpeg"),
            ("poster.png", "image/png"),
        ] {
            assert_eq!(content_type_for(name), content_type, "{name}");
        }
    }

    #[test]
    fn unknown_or_missing_extensions_fall_back() {
        for name in [
            "",
            "README",
            "archive.tar.xz",
            "dir.mp4/file",
            ".mp4",
            "a.",
            "x/.hidden",
        ] {
            assert_eq!(content_type_for(name), DEFAULT_CONTENT_TYPE, "{name:?}");
        }
    }

    #[test]
    fn table_has_no_duplicate_extensions() {
        for (index, (extension, _)) in TABLE.iter().enumerate() {
            assert!(extension
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()));
            assert!(
                !TABLE[index + 1..]
                    .iter()
                    .any(|(other, _)| other == extension),
                "{extension}"
            );
        }
    }
}
