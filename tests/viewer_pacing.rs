//! What the viewer-capacity benchmark (`benches/compare.sh` scenarios 5 and 9) relies on, shown
//! on a real `oasis serve` over real sockets:
//!
//! - An HLS segment whose bitrate comes from its playlist's `#EXTINF` is a paced stream admitted
//!   at bitrate x 1 (its connection's hold as a viewer), with the pace above that up to
//!   `factor_segment` reserved only out of spare budget (below the warning level), as
//!   `oasis_reservation_used` shows while the streams are open; the playlist reserves nothing;
//!   viewers are admitted at 1x until the budget is spent, and the next one gets `503` with
//!   `Retry-After` while the admitted ones complete byte for byte.
//! - An MP4 made by ffmpeg, whose bitrate comes from its movie header, reserves bitrate x
//!   `factor_progressive`; past the budget the same refusal, and the admitted stream completes.
//! - Every reservation is returned when its stream ends: the gauge goes back to 0 and a new
//!   stream is admitted.
//!
//! No timing assertion: the tests read the server's own gauge and statuses. A stream is kept
//! open by reading only its first bytes; pacing keeps the rest on the server's side for
//! seconds, and only the second request must come in within that time (it is sent at once).
//! ffmpeg is needed (Debian package `ffmpeg`; tests/run.sh installs it).

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use support::players::{encode_synthetic, upload};
use support::{header, pattern, split_response, wait_until, Server, TOKEN};

/// `oasis_reservation_used` of the listener's bandwidth account (its resource name starts with
/// "net").
fn net_reserved(server: &Server) -> u64 {
    let (status, _, body) = server.request(
        &format!("GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 200);
    let text = String::from_utf8_lossy(&body).into_owned();
    text.lines()
        .find_map(|l| {
            l.strip_prefix("oasis_reservation_used{resource=\"net")
                .and_then(|rest| rest.rsplit_once(' '))
                .and_then(|(_, v)| v.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("no net reservation gauge in /metrics:\n{text}"))
}

/// One request on its own connection; the whole response.
fn get(server: &Server, path: &str) -> (u16, String, Vec<u8>) {
    server.request(
        &format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        b"",
    )
}

/// Opens a stream of `path` and reads only its first KiB; the rest waits in the server.
fn open_stream(server: &Server, path: &str) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut first = vec![0u8; 1024];
    s.read_exact(&mut first).unwrap();
    assert!(
        first.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&first)
    );
    (s, first)
}

/// Reads the rest of an opened stream and returns its body.
fn finish_stream(mut s: TcpStream, mut first: Vec<u8>) -> Vec<u8> {
    s.read_to_end(&mut first).unwrap();
    let (status, _, body) = split_response(&first);
    assert_eq!(status, 200);
    body
}

/// A second stream past the budget is refused with 503 and Retry-After.
fn assert_refused(server: &Server, path: &str) {
    let (status, head, _) = get(server, path);
    assert_eq!(status, 503, "a stream past bandwidth_bps: {head}");
    let retry = header(&head, "Retry-After").expect("a 503 names Retry-After");
    assert!(retry.trim().parse::<u64>().is_ok(), "Retry-After: {retry}");
}

/// After the stream ended, its reservation is back and a new stream is admitted.
fn assert_released(server: &Server, path: &str, body: &[u8]) {
    wait_until(server, "the reservation to be returned", || {
        net_reserved(server) == 0
    });
    let (status, _, again) = get(server, path);
    assert_eq!(status, 200);
    assert!(again == body, "a new stream gets every byte");
}

#[test]
fn hls_segments_hold_extinf_bitrate_pace_from_spare_budget_and_are_refused_past_it() {
    // A 2,000,000-byte segment of 16 s: 1 Mbit/s. 6 Mbit/s on the listener (warning at 80 %:
    // 4.8 Mbit/s): the first viewer gets 1x plus 3x spare, the next two 1x, the fourth none.
    let server = Server::start_full(
        "[pacing]\ninitial_burst_secs = 0.5\nlead_secs = 0.0\nfactor_segment = 4.0\n",
        "combined",
        Some(6_000_000),
    );
    let segment = pattern(2_000_000, 7);
    let playlist =
        "#EXTM3U\n#EXT-X-TARGETDURATION:16\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXTINF:16.0,\nseg0.ts\n#EXT-X-ENDLIST\n";
    assert_eq!(server.put("show/seg0.ts", &segment), 201);
    assert_eq!(server.put("show/index.m3u8", playlist.as_bytes()), 201);

    let a = open_stream(&server, "/media/show/seg0.ts");
    assert_eq!(
        net_reserved(&server),
        4_000_000,
        "1 Mbit/s held, and x factor_segment 4 out of spare budget"
    );
    let b = open_stream(&server, "/media/show/seg0.ts");
    assert_eq!(net_reserved(&server), 5_000_000, "no spare left: 1x");
    let c = open_stream(&server, "/media/show/seg0.ts");
    assert_eq!(net_reserved(&server), 6_000_000);
    assert_refused(&server, "/media/show/seg0.ts");
    // The playlist reserves no bandwidth: it is served while the budget is spent.
    let (status, _, body) = get(&server, "/media/show/index.m3u8");
    assert_eq!(status, 200);
    assert_eq!(body, playlist.as_bytes());

    for (s, first) in [a, b, c] {
        let body = finish_stream(s, first);
        assert!(
            body == segment,
            "an admitted segment got {} bytes",
            body.len()
        );
    }
    assert_released(&server, "/media/show/seg0.ts", &segment);
}

#[test]
fn an_mp4_reserves_its_header_bitrate_times_factor_and_is_refused_past_the_budget() {
    let dir = tempfile::tempdir().unwrap();
    let mp4 = dir.path().join("movie.mp4");
    // 10 s of noisy video: large enough that pacing keeps the stream open for seconds.
    encode_synthetic(
        "testsrc=duration=10:size=320x240:rate=25,noise=alls=30:allf=t",
        "sine=duration=10",
        25,
        &[
            "-b:v",
            "1M",
            "-movflags",
            "+faststart",
            support::path_str(&mp4),
        ],
    );
    // The budget is only known after the upload (the header gives the bitrate), so a first
    // server learns the bitrate and a second, on a copy of its data, gets the fitted budget.
    let probe = Server::start("");
    let bytes = upload(&probe, "movie.mp4", &mp4);
    let (status, _, listing) = probe.request(
        &format!("GET /api/objects HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 200);
    let listing: Value = serde_json::from_slice(&listing).unwrap();
    let meta = &listing["objects"][0];
    assert_eq!(meta["bitrate_source"], "mp4", "{meta:#}");
    let bitrate = meta["bitrate_bps"].as_u64().expect("bitrate_bps");
    let reserved = (bitrate as f64 * 1.5) as u64;
    drop(probe);

    // One stream at 1.5x fits in 1.6x the bitrate, a second does not.
    let server = Server::start_full(
        "[pacing]\ninitial_burst_secs = 1.0\nlead_secs = 0.0\nfactor_progressive = 1.5\n",
        "combined",
        Some(bitrate * 16 / 10),
    );
    assert_eq!(upload(&server, "movie.mp4", &mp4), bytes);
    let movie = std::fs::read(&mp4).unwrap();
    let (a, first) = open_stream(&server, "/media/movie.mp4");
    assert_eq!(net_reserved(&server), reserved, "bitrate {bitrate} x 1.5");
    assert_refused(&server, "/media/movie.mp4");
    let body = finish_stream(a, first);
    assert!(
        body == movie,
        "the admitted stream got {} bytes",
        body.len()
    );
    assert_released(&server, "/media/movie.mp4", &movie);
}
