//! Bandwidth requirements of media objects: where `bitrate_bps` comes from.
//!
//! In order of preference: what the uploader said; for MP4 files, size over the movie duration in
//! the `moov`/`mvhd` box (parsed with the `mp4` crate); for HLS segments, size over the `#EXTINF`
//! duration a stored playlist gives them; otherwise the configured default.
//!
//! This module must never read the clock or the network, and never trusts a container: every
//! duration is checked (non-zero, finite, bounded) and a parse failure only means "unknown".

use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Where an object's `bitrate_bps` came from. Stored in the catalog as the text of [`Self::as_str`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BitrateSource {
    /// The uploader gave it; never overwritten.
    Uploader,
    /// Size * 8 / duration of the MP4 movie header.
    Mp4,
    /// Size * 8 / `#EXTINF` duration from a stored HLS playlist that references the segment.
    HlsExtinf,
    /// The configured default: nothing better was known.
    Default,
    /// A playlist (HLS `.m3u8`, DASH `.mpd`): a small document a player fetches whole, with no
    /// media bitrate of its own (`bitrate_bps` is 0); it is neither paced nor given bandwidth.
    Playlist,
}

impl BitrateSource {
    pub fn as_str(self) -> &'static str {
        match self {
            BitrateSource::Uploader => "uploader",
            BitrateSource::Mp4 => "mp4",
            BitrateSource::HlsExtinf => "hls_extinf",
            BitrateSource::Default => "default",
            BitrateSource::Playlist => "playlist",
        }
    }

    pub fn parse(s: &str) -> Option<BitrateSource> {
        Some(match s {
            "uploader" => BitrateSource::Uploader,
            "mp4" => BitrateSource::Mp4,
            "hls_extinf" => BitrateSource::HlsExtinf,
            "default" => BitrateSource::Default,
            "playlist" => BitrateSource::Playlist,
            _ => return None,
        })
    }

    /// True when a better-informed value may replace this one (an HLS playlist arriving later).
    pub fn is_derived_or_default(self) -> bool {
        matches!(self, BitrateSource::HlsExtinf | BitrateSource::Default)
    }
}

/// Longest media duration accepted from a container or playlist: 30 days, in milliseconds.
/// Anything longer is treated as garbage.
pub const DURATION_MS_MAX: u64 = 30 * 24 * 3600 * 1000;
/// Largest playlist that is parsed for segment durations, in bytes. Bigger ones are stored but not
/// read (their segments fall back to the default bitrate).
pub const PLAYLIST_BYTES_MAX: u64 = 1 << 20;
/// Most segments taken from one playlist.
pub const PLAYLIST_SEGMENTS_MAX: usize = 100_000;

/// `size_bytes * 8 / duration`, rounded up so a tiny object never gets 0 bps; `None` for a zero
/// duration.
pub fn bitrate_bps(size_bytes: u64, duration_ms: u64) -> Option<u64> {
    if duration_ms == 0 {
        return None;
    }
    let bits_times_1000 = size_bytes as u128 * 8 * 1000;
    let bps = bits_times_1000.div_ceil(duration_ms as u128);
    Some(u64::try_from(bps).unwrap_or(u64::MAX))
}

/// True when the name looks like an MP4-family file whose movie header gives a duration.
pub(crate) fn is_mp4_name(name: &str) -> bool {
    matches!(
        crate::content_type::extension(name)
            .map(|e| e.to_ascii_lowercase())
            .as_deref(),
        Some("mp4" | "m4v" | "m4a" | "mov")
    )
}

/// True when the name is an HLS playlist.
pub(crate) fn is_playlist_name(name: &str) -> bool {
    crate::content_type::extension(name).is_some_and(|e| e.eq_ignore_ascii_case("m3u8"))
}

/// True for a streaming manifest (HLS or DASH), which carries no media bitrate of its own.
pub fn is_manifest_name(name: &str) -> bool {
    crate::content_type::extension(name)
        .is_some_and(|e| e.eq_ignore_ascii_case("m3u8") || e.eq_ignore_ascii_case("mpd"))
}

/// The movie duration of the MP4 file at `path`, in milliseconds, from `moov`/`mvhd`. `None` when
/// the file is not a readable MP4, has no movie header, or the duration is zero or absurd.
///
/// The `mp4` crate seeks over `mdat`, so only the boxes around it are read; its table allocations
/// are bounded by the box sizes, which it checks against the file size. A panic inside the parser
/// on hostile input is caught and treated as "unknown" rather than taking a worker down.
pub fn mp4_duration_ms(path: &Path) -> Option<u64> {
    let file = File::open(path).ok()?;
    let size_bytes = file.metadata().ok()?.len();
    let reader = std::io::BufReader::new(file);
    let parsed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        mp4::Mp4Reader::read_header(reader, size_bytes)
            .ok()
            .map(|r| (r.moov.mvhd.duration, r.moov.mvhd.timescale))
    }))
    .ok()??;
    let (duration_units, timescale) = parsed;
    if timescale == 0 || duration_units == 0 {
        return None;
    }
    let duration_ms = (duration_units as u128 * 1000).div_ceil(timescale as u128);
    let duration_ms = u64::try_from(duration_ms).ok()?;
    (duration_ms <= DURATION_MS_MAX).then_some(duration_ms)
}

/// One media segment named by a playlist: the reference as written, and its `#EXTINF` duration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlaylistEntry {
    pub uri: String,
    pub duration_ms: u64,
}

/// Reads the playlist file at `path` (if it is at most [`PLAYLIST_BYTES_MAX`]) and returns its
/// segments. I/O errors and oversize files give an empty list: durations are a hint, not data.
pub(crate) fn read_playlist(path: &Path) -> Vec<PlaylistEntry> {
    let Ok(file) = File::open(path) else {
        return Vec::new();
    };
    let mut text = String::new();
    match file.take(PLAYLIST_BYTES_MAX + 1).read_to_string(&mut text) {
        Ok(n) if n as u64 <= PLAYLIST_BYTES_MAX => parse_playlist(&text),
        _ => Vec::new(),
    }
}

/// Parses the `#EXTINF:<seconds>,<title>` / URI pairs of an HLS media playlist. Lines it does not
/// understand are skipped; a URI without a preceding valid `#EXTINF` is ignored.
pub fn parse_playlist(text: &str) -> Vec<PlaylistEntry> {
    let mut out = Vec::new();
    let mut pending_ms: Option<u64> = None;
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            let seconds = rest.split(',').next().unwrap_or("").trim();
            pending_ms = parse_seconds_ms(seconds);
        } else if line.starts_with('#') {
            continue;
        } else if let Some(duration_ms) = pending_ms.take() {
            if out.len() >= PLAYLIST_SEGMENTS_MAX {
                break;
            }
            out.push(PlaylistEntry {
                uri: line.to_string(),
                duration_ms,
            });
        }
    }
    out
}

/// Decimal seconds ("10", "9.009") to milliseconds, rounded; `None` for zero, negative, non-numeric
/// or absurd values.
fn parse_seconds_ms(s: &str) -> Option<u64> {
    let seconds: f64 = s.parse().ok()?;
    if !seconds.is_finite() || seconds <= 0.0 {
        return None;
    }
    let ms = (seconds * 1000.0).round();
    if ms < 1.0 || ms > DURATION_MS_MAX as f64 {
        return None;
    }
    Some(ms as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bitrate_arithmetic() {
        assert_eq!(bitrate_bps(1_000_000, 8_000), Some(1_000_000));
        assert_eq!(bitrate_bps(1, 10_000), Some(1));
        assert_eq!(bitrate_bps(10, 0), None);
        assert_eq!(bitrate_bps(u64::MAX, 1), Some(u64::MAX));
    }

    #[test]
    fn playlist_parsing() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:9.009,\nseg1.ts\n#EXTINF:4,title\r\nseg2.ts\n\
                    #EXTINF:bogus,\nseg3.ts\nstray.ts\n#EXTINF:0,\nzero.ts\n#EXT-X-ENDLIST\n";
        assert_eq!(
            parse_playlist(text),
            vec![
                PlaylistEntry {
                    uri: "seg1.ts".into(),
                    duration_ms: 9009
                },
                PlaylistEntry {
                    uri: "seg2.ts".into(),
                    duration_ms: 4000
                },
            ]
        );
    }

    #[test]
    fn source_round_trips() {
        for s in [
            BitrateSource::Uploader,
            BitrateSource::Mp4,
            BitrateSource::HlsExtinf,
            BitrateSource::Default,
        ] {
            assert_eq!(BitrateSource::parse(s.as_str()), Some(s));
        }
    }
}
