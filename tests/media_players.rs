//! Real players play media that Oasis serves, end to end, over real loopback sockets.
//!
//! What this proves:
//! - An MP4 made by ffmpeg and uploaded with `PUT /media/<name>` comes back intact enough for
//!   `ffprobe` to report its duration and streams over HTTP, and for `ffmpeg -ss` to seek into
//!   it: ffmpeg's own debug log shows a Range request starting past byte 0, every request is
//!   answered `206` in the access log, and the keyframe decoded at 4 s is the same picture
//!   (`showinfo` checksum) as when the local file is seeked. The catalog (`GET /api/objects`)
//!   derives the bitrate from the MP4 movie header (`bitrate_source: "mp4"`, about
//!   size * 8 / duration) and keeps the duration (`duration_ms`).
//! - An HLS package made by ffmpeg (playlist plus `.ts` segments), uploaded under a prefix in
//!   either order (segments first, or playlist first), plays through `ffmpeg -i <playlist URL>`
//!   with every frame decoded, and the catalog gives every segment its bitrate from the
//!   playlist's `#EXTINF` durations (`bitrate_source: "hls_extinf"`).
//! - Headless Chromium plays an Oasis-served MP4 in a `<video>` element: the page (itself served
//!   by Oasis) reports back, by fetching `/media/__played?...`, that `currentTime` advanced past
//!   1.5 s and that frames of the right size were decoded; the test reads that beacon from the
//!   server's access log. A media error is beaconed as `/media/__error?...` and fails the test.
//!
//! How: each test starts its own `oasis serve` (see `support`), makes its media with ffmpeg's
//! synthetic sources (`testsrc`, `sine`) in a temporary directory, and runs the real tools as
//! child processes (`support::players`). Every child runs in its own process group and is killed
//! after a bound (`CHILD_SECS_MAX`), so a hung player fails the test instead of hanging it.
//! Nothing here asserts on timing. The tools are not installed by the tests: a missing `ffmpeg`,
//! `ffprobe` or `chromium` fails the test with the Debian package to install (CI installs them
//! with apt-get).

mod support;

use std::path::Path;

use serde_json::Value;
use support::players::{
    assert_near, beacon_number, browse_until_beacon, encode_hls_package, encode_synthetic,
    ffmpeg_decoded_frames, ffprobe_json, need, parse_access_log, probed_duration_secs, run_ok,
    segments_of, upload, wait_for_log, Finished, Logged, BROWSER_WAIT_SECS_MAX,
};
use support::Server;

/// The synthetic clip every test encodes: 6 s of 320x240 at 25 fps with a sine tone. The noise
/// makes it big (about 0.7 MB) so that seeking to 4 s cannot be served from what a player has
/// already buffered: it must ask for a new byte range.
const CLIP_SECS: f64 = 6.0;
const CLIP_FPS: f64 = 25.0;
const CLIP_VIDEO_SOURCE: &str = "testsrc=duration=6:size=320x240:rate=25,noise=alls=30:allf=t";
const CLIP_AUDIO_SOURCE: &str = "sine=duration=6";

fn s(p: &Path) -> &str {
    support::path_str(p)
}

/// Encodes the synthetic clip as a faststart H.264/AAC MP4 with a keyframe every second (so a
/// seek to 4 s starts decoding at 4 s, far into the file).
fn make_mp4(out: &Path) {
    encode_synthetic(
        CLIP_VIDEO_SOURCE,
        CLIP_AUDIO_SOURCE,
        25,
        &["-movflags", "+faststart", s(out)],
    );
}

/// `GET /api/objects[?prefix=...]` with the token, parsed.
fn api_objects(server: &Server, prefix: Option<&str>) -> Value {
    let target = match prefix {
        Some(p) => format!("/api/objects?prefix={p}"),
        None => "/api/objects".to_string(),
    };
    let (status, head, body) = server.request(
        &format!(
            "GET {target} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\nConnection: close\r\n\r\n",
            support::TOKEN
        ),
        b"",
    );
    assert_eq!(status, 200, "GET {target}:\n{head}");
    serde_json::from_slice(&body).unwrap_or_else(|e| {
        panic!(
            "GET {target} is not JSON ({e}):\n{}",
            String::from_utf8_lossy(&body)
        )
    })
}

fn object<'a>(listing: &'a Value, name: &str) -> &'a Value {
    listing["objects"]
        .as_array()
        .expect("`objects` array")
        .iter()
        .find(|o| o["name"] == name)
        .unwrap_or_else(|| panic!("{name} missing from the listing: {listing:#}"))
}

#[test]
fn ffprobe_and_ffmpeg_seek_play_an_uploaded_mp4() {
    need("ffmpeg", "ffmpeg");
    need("ffprobe", "ffmpeg");
    let work = tempfile::tempdir().unwrap();
    let mp4 = work.path().join("clip.mp4");
    make_mp4(&mp4);
    let server = Server::start("");
    let size_bytes = upload(&server, "clip.mp4", &mp4);
    let url = server.url("/media/clip.mp4");

    // ffprobe over HTTP: duration and streams as encoded.
    let probed = ffprobe_json(
        &url,
        "format=duration,size:stream=codec_type,codec_name,width,height",
    );
    let duration_secs = probed_duration_secs(&probed);
    assert_near("ffprobe duration (s)", duration_secs, CLIP_SECS, 0.05);
    assert_eq!(
        probed["format"]["size"],
        size_bytes.to_string(),
        "{probed:#}"
    );
    let streams = probed["streams"].as_array().expect("streams");
    let video = streams.iter().find(|s| s["codec_type"] == "video");
    let audio = streams.iter().find(|s| s["codec_type"] == "audio");
    let video = video.unwrap_or_else(|| panic!("no video stream: {probed:#}"));
    let audio = audio.unwrap_or_else(|| panic!("no audio stream: {probed:#}"));
    assert_eq!(video["codec_name"], "h264", "{probed:#}");
    assert_eq!(
        (video["width"].as_u64(), video["height"].as_u64()),
        (Some(320), Some(240))
    );
    assert_eq!(audio["codec_name"], "aac", "{probed:#}");

    // Seek to 4 s and decode one video frame there, over HTTP and from the local file.
    // `-copyts` keeps source timestamps so `showinfo` says where in the clip the frame is, and
    // its checksum says the bytes Oasis served for the range decode to the same picture.
    let log_lines_before = parse_access_log(&server.access_log()).len();
    let (remote, seek) = seek_and_show_frame(&url);
    let (local, _) = seek_and_show_frame(s(&mp4));
    assert!(
        (3.99..=4.01).contains(&remote.pts_secs) && remote.keyframe,
        "after -ss 4 ffmpeg decoded {remote:?}, not the keyframe at 4 s\n{}",
        seek.describe()
    );
    assert_eq!(
        remote, local,
        "the frame at 4 s differs over HTTP from the local file"
    );
    // ffmpeg's own debug log shows the seek went over HTTP as a Range request from past byte 0.
    let range_starts_bytes: Vec<u64> = seek
        .stderr
        .split("Range: bytes=")
        .skip(1)
        .filter_map(|rest| rest.split('-').next()?.parse().ok())
        .collect();
    let range_start_bytes = range_starts_bytes.iter().copied().max().unwrap_or(0);
    assert!(
        range_start_bytes > 0 && range_start_bytes <= remote.pos_bytes,
        "ffmpeg's Range requests started at {range_starts_bytes:?}; the frame is at byte {}\n{}",
        remote.pos_bytes,
        seek.describe()
    );
    // And Oasis answered each of those requests with 206, one of them with at most the bytes
    // from that start to the end of the object.
    let seek_gets = |lines: &[Logged]| -> Vec<(u16, u64)> {
        lines[log_lines_before.min(lines.len())..]
            .iter()
            .filter(|l| l.method == "GET" && l.target == "/media/clip.mp4")
            .map(|l| (l.status, l.body_bytes))
            .collect()
    };
    let lines = wait_for_log(&server, 10, |lines| {
        seek_gets(lines).len() >= range_starts_bytes.len()
    });
    let answered = seek_gets(&lines);
    assert_eq!(
        answered.len(),
        range_starts_bytes.len(),
        "ffmpeg sent Range requests from {range_starts_bytes:?}; the access log has (status, bytes) {answered:?}"
    );
    assert!(
        answered.iter().all(|&(status, _)| status == 206),
        "every Range request is answered 206: {answered:?}"
    );
    assert!(
        answered
            .iter()
            .any(|&(_, bytes)| (1..=size_bytes - range_start_bytes).contains(&bytes)),
        "no response fits the Range from {range_start_bytes} of {size_bytes} bytes: {answered:?}"
    );

    // The catalog's bitrate comes from the MP4 movie header.
    let listing = api_objects(&server, None);
    let clip = object(&listing, "clip.mp4");
    assert_eq!(clip["size_bytes"], size_bytes, "{clip:#}");
    assert_eq!(clip["content_type"], "video/mp4", "{clip:#}");
    assert_eq!(clip["bitrate_source"], "mp4", "{clip:#}");
    let bitrate_bps = clip["bitrate_bps"].as_u64().expect("bitrate_bps");
    assert_near(
        "bitrate_bps vs size*8/6",
        bitrate_bps as f64,
        size_bytes as f64 * 8.0 / CLIP_SECS,
        0.05,
    );
    // The duration the bitrate came from is kept and shown.
    let duration_ms = clip["duration_ms"].as_u64().expect("duration_ms");
    assert_near(
        "duration_ms vs the clip's length",
        duration_ms as f64,
        CLIP_SECS * 1000.0,
        0.05,
    );
}

/// The first video frame ffmpeg decodes after `-ss 4`, as `showinfo` describes it.
#[derive(Debug, PartialEq)]
struct ShownFrame {
    pts_secs: f64,
    pos_bytes: u64,
    keyframe: bool,
    checksum: String,
}

/// Seeks `input` (a URL or a path) to 4 s and decodes one video frame; debug logging shows the
/// HTTP requests ffmpeg makes.
fn seek_and_show_frame(input: &str) -> (ShownFrame, Finished) {
    let done = run_ok(
        "ffmpeg",
        &[
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "debug",
            "-ss",
            "4",
            "-copyts",
            "-i",
            input,
            "-map",
            "0:v",
            "-vf",
            "showinfo",
            "-frames:v",
            "1",
            "-f",
            "null",
            "-",
        ],
    );
    let line = done
        .stderr
        .lines()
        .find(|l| l.contains("Parsed_showinfo") && l.contains(" pts_time:"))
        .unwrap_or_else(|| panic!("showinfo printed no frame for {input}\n{}", done.describe()));
    let field = |key: &str| -> &str {
        let at = line
            .find(key)
            .unwrap_or_else(|| panic!("no {key} in {line}"))
            + key.len();
        line[at..].split_whitespace().next().unwrap_or("")
    };
    let frame = ShownFrame {
        pts_secs: field(" pts_time:").parse().unwrap(),
        pos_bytes: field(" pos:").parse().unwrap(),
        keyframe: field(" iskey:") == "1",
        checksum: field(" checksum:").to_string(),
    };
    (frame, done)
}

/// Which files of an HLS package go up first.
#[derive(Clone, Copy, Debug)]
enum UploadOrder {
    SegmentsFirst,
    PlaylistFirst,
}

fn hls_package_plays_and_segments_get_extinf_bitrates(order: UploadOrder) {
    need("ffmpeg", "ffmpeg");
    let work = tempfile::tempdir().unwrap();
    let pkg = work.path().join("show");
    std::fs::create_dir(&pkg).unwrap();
    // Keyframes every 2 s (50 frames) so the muxer can cut 2 s segments.
    encode_hls_package(CLIP_VIDEO_SOURCE, CLIP_AUDIO_SOURCE, &pkg);
    let playlist_text = std::fs::read_to_string(pkg.join("index.m3u8")).unwrap();
    let entries = segments_of(&playlist_text);
    assert!(
        entries.len() >= 3,
        "expected at least 3 segments:\n{playlist_text}"
    );

    let server = Server::start("");
    let mut sizes = std::collections::HashMap::new();
    let upload_segments = |sizes: &mut std::collections::HashMap<String, u64>| {
        for e in &entries {
            let size = upload(&server, &format!("show/{}", e.uri), &pkg.join(&e.uri));
            sizes.insert(e.uri.clone(), size);
        }
    };
    match order {
        UploadOrder::SegmentsFirst => {
            upload_segments(&mut sizes);
            upload(&server, "show/index.m3u8", &pkg.join("index.m3u8"));
        }
        UploadOrder::PlaylistFirst => {
            upload(&server, "show/index.m3u8", &pkg.join("index.m3u8"));
            upload_segments(&mut sizes);
        }
    }

    // Play it through over HTTP; every frame must be decoded.
    let frames = ffmpeg_decoded_frames(&server.url("/media/show/index.m3u8"));
    let expected_frames = CLIP_SECS * CLIP_FPS;
    assert_near("frames decoded", frames as f64, expected_frames, 0.04);
    let lines = wait_for_log(&server, 10, |lines| {
        entries.iter().all(|e| {
            let target = format!("/media/show/{}", e.uri);
            lines
                .iter()
                .any(|l| l.method == "GET" && l.target == target)
        })
    });
    for e in &entries {
        let target = format!("/media/show/{}", e.uri);
        let served = lines
            .iter()
            .find(|l| l.method == "GET" && l.target == target)
            .unwrap_or_else(|| panic!("{target} was never fetched:\n{}", server.access_log()));
        assert!(matches!(served.status, 200 | 206), "{served:?}");
    }

    // Every segment's bitrate comes from its #EXTINF duration.
    let listing = api_objects(&server, Some("show"));
    assert_eq!(
        listing["count"].as_u64(),
        Some(entries.len() as u64 + 1),
        "{listing:#}"
    );
    for e in &entries {
        let seg = object(&listing, &format!("show/{}", e.uri));
        assert_eq!(seg["bitrate_source"], "hls_extinf", "{order:?}: {seg:#}");
        let expected_bps = sizes[&e.uri] as f64 * 8000.0 / e.duration_ms as f64;
        let bitrate_bps = seg["bitrate_bps"].as_u64().expect("bitrate_bps");
        assert_near(
            &format!("{} bitrate_bps", e.uri),
            bitrate_bps as f64,
            expected_bps,
            0.01,
        );
    }
}

#[test]
fn ffmpeg_plays_hls_uploaded_segments_first() {
    hls_package_plays_and_segments_get_extinf_bitrates(UploadOrder::SegmentsFirst);
}

#[test]
fn ffmpeg_plays_hls_uploaded_playlist_first() {
    hls_package_plays_and_segments_get_extinf_bitrates(UploadOrder::PlaylistFirst);
}

/// The page under test: plays `/media/clip.mp4` muted and reports back through beacons.
const PLAYER_HTML: &str = r#"<!doctype html>
<html><head><meta charset="utf-8"><title>oasis player test</title></head>
<body>
<video id="v" playsinline></video>
<script>
const v = document.getElementById('v');
let reported = false;
function beacon(path) { fetch(path, { cache: 'no-store' }).catch(() => {}); }
v.muted = true;
v.addEventListener('timeupdate', () => {
  if (!reported && v.currentTime > 1.5) {
    reported = true;
    beacon('/media/__played?t=' + v.currentTime.toFixed(3) + '&w=' + v.videoWidth +
           '&h=' + v.videoHeight + '&d=' + v.duration.toFixed(3));
  }
});
v.addEventListener('error', () => {
  const e = v.error;
  beacon('/media/__error?code=' + (e ? e.code : 0) + '&msg=' +
         encodeURIComponent(e && e.message ? e.message : ''));
});
v.src = '/media/clip.mp4';
v.play().catch((e) => beacon('/media/__error?code=play&msg=' + encodeURIComponent(String(e))));
</script>
</body></html>
"#;

#[test]
fn headless_chromium_plays_an_uploaded_mp4() {
    need("ffmpeg", "ffmpeg");
    need("chromium", "chromium");
    let work = tempfile::tempdir().unwrap();
    let mp4 = work.path().join("clip.mp4");
    make_mp4(&mp4);
    let page = work.path().join("player.html");
    std::fs::write(&page, PLAYER_HTML).unwrap();
    let server = Server::start("");
    upload(&server, "clip.mp4", &mp4);
    upload(&server, "player.html", &page);

    let is_beacon = |l: &Logged| {
        l.target.starts_with("/media/__played?") || l.target.starts_with("/media/__error?")
    };
    let browsed = browse_until_beacon(&server, &server.url("/media/player.html"), is_beacon);
    let lines = &browsed.lines;
    let context = || browsed.context(&server);
    let beacon = browsed
        .beacon(is_beacon)
        .unwrap_or_else(|| panic!("no beacon within {BROWSER_WAIT_SECS_MAX} s\n{}", context()));
    assert!(
        beacon.target.starts_with("/media/__played?"),
        "the page reported a media error: {}\n{}",
        beacon.target,
        context()
    );
    let number = |key: &str| beacon_number(beacon, key);
    assert!(number("t") > 1.5, "{}", beacon.target);
    assert_eq!(
        (number("w"), number("h")),
        (320.0, 240.0),
        "{}",
        beacon.target
    );
    assert_near(
        "duration seen by the page (s)",
        number("d"),
        CLIP_SECS,
        0.05,
    );
    // The page and the media were fetched from Oasis by the browser.
    let fetched = |target: &str| {
        lines
            .iter()
            .any(|l| l.method == "GET" && l.target == target)
    };
    assert!(fetched("/media/player.html"), "{}", context());
    assert!(fetched("/media/clip.mp4"), "{}", context());
}
