//! What a paced run's viewers play: one HLS playlist URL is fetched once before the run and
//! turned into the request list (the playlist, then its segments with their `#EXTINF`
//! durations); any other URL list is one progressive file per viewer.
//!
//! Only media playlists are read (no variant streams, no byte ranges, no encryption); the
//! playlist must be small and come back whole with a Content-Length.

use crate::player::MediaPlan;
use crate::{load_urls, Common};
use anyhow::{bail, ensure, Context, Result};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// Largest playlist accepted.
const PLAYLIST_BYTES_MAX: u64 = 1 << 20;
/// Most segments taken from a playlist.
const SEGMENTS_MAX: usize = 10_000;

/// Resolves the URL list of `c`. An HLS playlist (a single URL ending in `.m3u8`) becomes the
/// playlist and its segments, written back into `c.urls`.
pub fn resolve(c: &mut Common) -> Result<MediaPlan> {
    let urls = load_urls(c)?;
    let [only] = urls.as_slice() else {
        return Ok(MediaPlan::Progressive);
    };
    if !only.path.ends_with(".m3u8") {
        return Ok(MediaPlan::Progressive);
    }
    let text = fetch(only.addr, &only.host, &only.path)
        .with_context(|| format!("fetching the playlist {}", only.path))?;
    let entries = parse(&text)?;
    let dir = &only.path[..only.path.rfind('/').map_or(0, |i| i + 1)];
    let base = format!("http://{}", only.host);
    let mut list = vec![format!("{base}{}", only.path)];
    let mut segment_s = Vec::with_capacity(entries.len());
    for (secs, uri) in entries {
        ensure!(
            !uri.contains("://"),
            "segment {uri}: only relative or absolute-path URIs are supported"
        );
        let path = if uri.starts_with('/') {
            uri
        } else {
            format!("{dir}{uri}")
        };
        list.push(format!("{base}{path}"));
        segment_s.push(secs);
    }
    c.urls = list;
    c.url_file = None;
    Ok(MediaPlan::Hls { segment_s })
}

/// `(duration, uri)` of each segment of a media playlist.
fn parse(text: &str) -> Result<Vec<(f64, String)>> {
    ensure!(
        text.starts_with("#EXTM3U"),
        "not an HLS playlist (no #EXTM3U)"
    );
    let mut out = Vec::new();
    let mut pending: Option<f64> = None;
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            let secs: f64 = rest
                .split(',')
                .next()
                .unwrap_or("")
                .trim()
                .parse()
                .with_context(|| format!("bad #EXTINF line: {line}"))?;
            ensure!(
                secs.is_finite() && secs > 0.0 && secs <= 600.0,
                "#EXTINF duration out of range: {line}"
            );
            pending = Some(secs);
        } else if line.starts_with("#EXT-X-STREAM-INF") {
            bail!("a master playlist: pass one of its media playlists");
        } else if !line.starts_with('#') {
            let secs = pending
                .take()
                .with_context(|| format!("segment {line} has no #EXTINF"))?;
            out.push((secs, line.to_string()));
            ensure!(
                out.len() <= SEGMENTS_MAX,
                "more than {SEGMENTS_MAX} segments"
            );
        }
    }
    ensure!(!out.is_empty(), "the playlist lists no segments");
    Ok(out)
}

/// One GET over its own connection, the whole body returned as text.
fn fetch(addr: std::net::SocketAddrV4, host: &str, path: &str) -> Result<String> {
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: oasis-loadgen\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.take(PLAYLIST_BYTES_MAX + 16 * 1024)
        .read_to_end(&mut raw)?;
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("no complete response head")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let status = head.split_whitespace().nth(1).unwrap_or("");
    ensure!(status == "200", "HTTP status {status}, want 200");
    String::from_utf8(raw[end + 4..].to_vec()).context("the playlist is not UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_playlist_segments_with_durations() {
        let text = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.000000,\nseg00.ts\n#EXTINF:3.5,\n/abs/seg01.ts\n#EXT-X-ENDLIST\n";
        let got = parse(text).unwrap();
        assert_eq!(
            got,
            vec![(4.0, "seg00.ts".into()), (3.5, "/abs/seg01.ts".into())]
        );
        assert!(parse("#EXTM3U\nseg.ts\n").is_err(), "no #EXTINF");
        assert!(parse("seg.ts\n").is_err(), "no #EXTM3U");
        assert!(parse("#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\na.m3u8\n").is_err());
        assert!(parse("#EXTM3U\n#EXTINF:-1,\na.ts\n").is_err());
    }
}
