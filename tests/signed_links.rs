//! Private HLS through one signed link, played by real players, and every way of altering a
//! link refused, over real sockets.
//!
//! What this proves:
//! - An HLS package under a `read = "signed"` prefix (`show/master.m3u8` -> `v0/index.m3u8` ->
//!   `v0/segN.ts`, made by ffmpeg) is refused without credentials (401), and plays through the
//!   one link `oasis sign show/master.m3u8 --package` prints: ffprobe reads its duration, ffmpeg
//!   decodes every frame, and the access log shows both playlists and every segment fetched
//!   whole under that link's `/s/<sig>/<expires>/1/` (200, or 206 for ffmpeg's
//!   `Range: bytes=0-`): relative URIs resolve inside the link, and nothing is asked for under
//!   `/media/`. Signed responses carry the prefix's `Cache-Control`.
//! - Headless Chromium plays the same link with hls.js (served by Oasis from a public prefix,
//!   the link passed in the page's fragment): the page beacons that `currentTime` passed 2 s
//!   with 320x240 frames, and every segment came through `/s/`.
//! - A link with one signature character altered fails in ffmpeg (non-zero exit) and in hls.js
//!   (a fatal error beacon with status 403); a correctly signed expired link fails in ffmpeg;
//!   the access log shows the 403 and the 410.
//! - Over raw sockets, each field altered, truncated or reordered paths, expiries past 12
//!   digits, another object or prefix, `..`, `%2F` and `%2e%2e` in the name, and a link signed
//!   with an unknown key are each answered 403 (410 for a correctly signed expired link), never
//!   200 or 500; `oasis_auth_refused_total{reason=...}` counts each by its reason. Names with
//!   escaped bytes (a space, `é`) open through their links.
//! - `--ip`: a link bound to 127.0.0.2 opens from 127.0.0.2 and is refused from 127.0.0.1.
//!
//! How: each test starts its own `oasis serve` (see `support`) with a test signing key; the
//! players run as bounded child processes (`support::players`), killed after a bound. hls.js
//! comes from the npm registry through `tests/run.sh` into `tests/web/node_modules`, never
//! fetched here; without it the browser test fails with the command to run (or, outside CI with
//! `OASIS_ALLOW_SKIP=1`, says it skipped). Nothing asserts on timing.

mod support;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use oasis_net::auth::link::{self, LinkKeys, Scope};
use serde_json::Value;
use support::players::{
    assert_near, beacon_number, browse_until_beacon, encode_synthetic, ffmpeg_attempt,
    ffmpeg_decoded_frames, ffprobe_json, need, param, probed_duration_secs, run_ok, segments_of,
    upload, wait_for_log, Logged, BROWSER_WAIT_SECS_MAX,
};
use support::{header, metric, Server};

/// The server's signing key (40 characters; the minimum is 32).
const LINK_KEY: &str = "signed-links-test-key-0123456789abcdefgh";
/// `show/` and `club/` are private (signed); `player/` is public. No failure limit: the
/// tampering matrix fails on purpose, many times, from one address.
const CONFIG: &str = "metrics_public = false\n\n\
[storage]\nscrub_bytes_per_sec = 0\n\n\
[auth]\nfailures_max = 0\n\n\
[links]\nkeys = [\"signed-links-test-key-0123456789abcdefgh\"]\n\n\
[[access]]\nprefix = \"show/\"\nread = \"signed\"\n\n\
[[access]]\nprefix = \"club/\"\nread = \"signed\"\ncache_control = \"private, max-age=60\"\n\n\
[[access]]\nprefix = \"player/\"\nread = \"public\"\n";

/// The clip: 5 s of 320x240 at 25 fps with a tone, a keyframe every second, cut into 1 s
/// segments.
const CLIP_SECS: f64 = 5.0;
const CLIP_FPS: f64 = 25.0;
/// The package's entry point, and the folder a `--package` link opens.
const MASTER: &str = "show/master.m3u8";
const VARIANT: &str = "show/v0/index.m3u8";
/// Where `tests/run.sh` installs hls.js, and how (keep the version in step with run.sh).
const HLS_JS: &str = "tests/web/node_modules/hls.js/dist/hls.min.js";
const HLS_JS_INSTALL: &str =
    "npm install --no-audit --no-fund --save-exact --prefix tests/web hls.js@1.7.4";

/// An HLS package ffmpeg made: the master playlist, one variant in `v0/`, its segments.
struct Package {
    dir: tempfile::TempDir,
    /// Object names of the segments, in playlist order (`show/v0/seg0.ts`, ...).
    segments: Vec<String>,
}

impl Package {
    fn make() -> Package {
        need("ffmpeg", "ffmpeg");
        let dir = tempfile::tempdir().unwrap();
        let show = dir.path().join("show");
        std::fs::create_dir(&show).unwrap();
        let video = format!("testsrc=duration={CLIP_SECS}:size=320x240:rate={CLIP_FPS}");
        let audio = format!("sine=duration={CLIP_SECS}");
        let segment_files = show.join("%v").join("seg%d.ts");
        let variant_playlists = show.join("%v").join("index.m3u8");
        encode_synthetic(
            &video,
            &audio,
            25,
            &[
                "-f",
                "hls",
                "-hls_time",
                "1",
                "-hls_playlist_type",
                "vod",
                "-master_pl_name",
                "master.m3u8",
                "-var_stream_map",
                "v:0,a:0,name:v0",
                "-hls_segment_filename",
                s(&segment_files),
                s(&variant_playlists),
            ],
        );
        let master = std::fs::read_to_string(dir.path().join(MASTER)).unwrap();
        assert!(
            master.lines().any(|l| l.trim() == "v0/index.m3u8"),
            "the master playlist should name its variant one folder down:\n{master}"
        );
        let variant = std::fs::read_to_string(dir.path().join(VARIANT)).unwrap();
        let segments: Vec<String> = segments_of(&variant)
            .into_iter()
            .map(|seg| format!("show/v0/{}", seg.uri))
            .collect();
        assert!(segments.len() >= 4, "expected 1 s segments:\n{variant}");
        Package { dir, segments }
    }

    /// Uploads every file with the admin token: segments, then the playlists.
    fn upload(&self, server: &Server) {
        for name in self
            .segments
            .iter()
            .map(String::as_str)
            .chain([VARIANT, MASTER])
        {
            upload(server, name, &self.dir.path().join(name));
        }
    }
}

fn s(p: &Path) -> &str {
    support::path_str(p)
}

/// Runs `oasis sign NAME ARGS... --base <server> --config <the server's config>` and returns the
/// link it printed.
fn sign_cli(server: &Server, name: &str, args: &[&str]) -> String {
    let base = server.url("");
    let config = server.config_path();
    let mut all = vec!["sign", name];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--base", &base, "--config", s(&config)]);
    let out = run_ok(support::oasis_bin(), &all);
    let link = out.stdout.trim().to_string();
    assert!(
        link.starts_with(&server.url("/s/")) && !link.contains(char::is_whitespace),
        "`oasis sign` printed {link:?}"
    );
    link
}

/// The path of a link the server printed (from `/s/`).
fn path_of<'a>(server: &Server, link: &'a str) -> &'a str {
    link.strip_prefix(&server.url(""))
        .unwrap_or_else(|| panic!("{link} is not on {}", server.url("")))
}

/// The server's keys, for links the test signs itself.
fn keys() -> LinkKeys {
    LinkKeys::new(&[LINK_KEY]).unwrap()
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// The same path with the signature's first character replaced by another base64url one.
fn altered_signature(path: &str) -> String {
    let at = link::LINK_PREFIX.len();
    let replacement = if path[at..].starts_with('A') {
        "B"
    } else {
        "A"
    };
    format!("{}{replacement}{}", &path[..at], &path[at + 1..])
}

/// A GET or HEAD on a new connection from 127.0.0.1; (status, head, body).
fn fetch(server: &Server, method: &str, target: &str) -> (u16, String, Vec<u8>) {
    server.request(
        &format!("{method} {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
        b"",
    )
}

/// The status of the first GET of `target` in a parsed access log.
fn fetched_status(lines: &[Logged], target: &str) -> Option<u16> {
    lines
        .iter()
        .find(|l| l.method == "GET" && l.target == target)
        .map(|l| l.status)
}

/// The status the server answered a GET of `target` with, once the access log has it.
fn logged_status(server: &Server, target: &str) -> Option<u16> {
    let lines = wait_for_log(server, 10, |lines| fetched_status(lines, target).is_some());
    fetched_status(&lines, target)
}

/// ffmpeg fails to open `target` (a link path) and says the server answered `status`, which
/// the access log shows too.
fn assert_ffmpeg_refused(server: &Server, target: &str, status: u16) {
    let refused = ffmpeg_attempt(&server.url(target));
    assert!(
        !refused.status.success() && refused.stderr.contains(&format!("HTTP error {status}")),
        "{}",
        refused.describe()
    );
    assert_eq!(logged_status(server, target), Some(status));
}

/// Every object of the package under the root of a `--package` link: (link path, size).
fn package_targets(link_path: &str, package: &Package) -> Vec<(String, u64)> {
    let root = link_path
        .strip_suffix(MASTER)
        .unwrap_or_else(|| panic!("{link_path} does not open {MASTER}"));
    [MASTER, VARIANT]
        .into_iter()
        .chain(package.segments.iter().map(String::as_str))
        .map(|name| {
            let size = std::fs::metadata(package.dir.path().join(name))
                .unwrap()
                .len();
            (format!("{root}{name}"), size)
        })
        .collect()
}

/// The targets `lines` has no whole GET of: 200, or 206 with every byte (ffmpeg asks for
/// `Range: bytes=0-`), with the size of the object.
fn not_fetched_whole(lines: &[Logged], targets: &[(String, u64)]) -> Vec<String> {
    let whole = |target: &str, size: u64| {
        lines.iter().any(|l| {
            l.method == "GET"
                && l.target == target
                && matches!(l.status, 200 | 206)
                && l.body_bytes == size
        })
    };
    targets
        .iter()
        .filter(|(target, size)| !whole(target, *size))
        .map(|(target, _)| target.clone())
        .collect()
}

#[test]
fn ffmpeg_plays_a_private_hls_package_through_one_signed_link_and_refuses_bad_ones() {
    need("ffprobe", "ffmpeg");
    let package = Package::make();
    let server = Server::start(CONFIG);
    package.upload(&server);

    // Private: no credentials, no media.
    for name in [MASTER, VARIANT, &package.segments[0]] {
        let (status, _, body) = fetch(&server, "GET", &format!("/media/{name}"));
        assert_eq!(status, 401, "{name}: {}", String::from_utf8_lossy(&body));
    }

    let link = sign_cli(&server, MASTER, &["--package", "--ttl", "1h"]);
    let link_path = path_of(&server, &link).to_string();
    assert!(link_path.ends_with("/1/show/master.m3u8"), "{link}");

    // ffprobe: the package's duration, through the link.
    let duration_secs = probed_duration_secs(&ffprobe_json(&link, "format=duration"));
    assert_near("ffprobe duration (s)", duration_secs, CLIP_SECS, 0.05);

    // ffmpeg decodes the whole package through the one link.
    let frames = ffmpeg_decoded_frames(&link);
    assert_near("frames decoded", frames as f64, CLIP_SECS * CLIP_FPS, 0.04);
    let targets = package_targets(&link_path, &package);
    let lines = wait_for_log(&server, 10, |lines| {
        not_fetched_whole(lines, &targets).is_empty()
    });
    let missing = not_fetched_whole(&lines, &targets);
    assert!(
        missing.is_empty(),
        "not fetched whole through the link: {missing:#?}\n{}",
        server.access_log()
    );
    // ffprobe and ffmpeg (user agent Lavf) asked for nothing outside the link.
    let log = server.access_log();
    let leaked: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("\"Lavf/") && !l.contains("\"GET /s/"))
        .collect();
    assert!(leaked.is_empty(), "ffmpeg left the link: {leaked:#?}");
    assert!(log.contains(" - link ["), "{log}");

    // The signed prefix's Cache-Control (the default for a signed prefix is `private`).
    let (status, head, _) = fetch(&server, "GET", &link_path);
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "Cache-Control"), Some("private"), "{head}");

    // One signature character altered: ffmpeg fails, the server answered 403.
    assert_ffmpeg_refused(&server, &altered_signature(&link_path), 403);

    // A correctly signed link that expired a minute ago: ffmpeg fails, the server answered 410.
    let expired = link::sign(
        &keys(),
        Scope::Prefix("show/"),
        MASTER,
        now_unix() - 60,
        None,
    )
    .unwrap();
    assert_ffmpeg_refused(&server, &expired, 410);
}

/// The player page (`tests/web/hls_player.html`): hls.js loads the link given in the fragment
/// into a muted `<video>`, and the page reports through one beacon:
/// `/media/player/__played?...` once `currentTime` passes 2 s with the whole package
/// buffered, or `/media/player/__error?...`
/// on a fatal hls.js error (with the HTTP status) or a refused `play()`. `run` (from the query)
/// tells the beacons of two page loads apart.
const PLAYER_HTML: &str = include_str!("web/hls_player.html");

/// hls.min.js as `tests/run.sh` installs it; `None` only when a developer opted out of tests
/// that cannot run here (`OASIS_ALLOW_SKIP=1`, ignored when `CI` is set).
fn hls_js() -> Option<PathBuf> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(HLS_JS);
    if path.is_file() {
        return Some(path);
    }
    let why = format!(
        "{} is missing: install hls.js from the npm registry with `{HLS_JS_INSTALL}` \
         in the repository (tests/run.sh does it before the tests)",
        path.display()
    );
    if std::env::var_os("OASIS_ALLOW_SKIP").is_some() && std::env::var_os("CI").is_none() {
        eprintln!("skipped (OASIS_ALLOW_SKIP is set): {why}");
        return None;
    }
    panic!("this test cannot run here: {why} (set OASIS_ALLOW_SKIP=1 to skip it outside CI)");
}

#[test]
fn hls_js_in_headless_chromium_plays_the_package_through_a_signed_link() {
    let Some(hls_js) = hls_js() else {
        return;
    };
    need("chromium", "chromium");
    let package = Package::make();
    let server = Server::start(CONFIG);
    package.upload(&server);
    upload(&server, "player/hls.min.js", &hls_js);
    let page = package.dir.path().join("play.html");
    std::fs::write(&page, PLAYER_HTML).unwrap();
    upload(&server, "player/play.html", &page);
    let link = sign_cli(&server, MASTER, &["--package", "--ttl", "1h"]);
    let link_path = path_of(&server, &link).to_string();

    let beacon_of = |run: &'static str| {
        move |l: &Logged| {
            (l.target.starts_with("/media/player/__played?")
                || l.target.starts_with("/media/player/__error?"))
                && param(&l.target, "run") == Some(run)
        }
    };
    let page_url =
        |run: &str, link: &str| server.url(&format!("/media/player/play.html?run={run}#{link}"));

    // The good link plays.
    let browsed = browse_until_beacon(&server, &page_url("good", &link), beacon_of("good"));
    let context = || browsed.context(&server);
    let beacon = browsed
        .beacon(beacon_of("good"))
        .unwrap_or_else(|| panic!("no beacon within {BROWSER_WAIT_SECS_MAX} s\n{}", context()));
    assert!(
        beacon.target.starts_with("/media/player/__played?"),
        "hls.js reported an error: {}\n{}",
        beacon.target,
        context()
    );
    let number = |key: &str| beacon_number(beacon, key);
    assert!(number("t") > 2.0, "{}", beacon.target);
    assert_near("duration seen by hls.js (s)", number("d"), CLIP_SECS, 0.05);
    assert_eq!(
        (number("w"), number("h")),
        (320.0, 240.0),
        "{}",
        beacon.target
    );
    // hls.js fetched itself from the public prefix, then every playlist and segment through
    // the link, never under /media/show/.
    let fetched = |target: &str| fetched_status(&browsed.lines, target);
    assert_eq!(
        fetched("/media/player/hls.min.js"),
        Some(200),
        "{}",
        context()
    );
    let missing = not_fetched_whole(&browsed.lines, &package_targets(&link_path, &package));
    assert!(
        missing.is_empty(),
        "not fetched whole: {missing:#?}\n{}",
        context()
    );
    assert!(
        !browsed
            .lines
            .iter()
            .any(|l| l.method == "GET" && l.target.starts_with("/media/show/")),
        "{}",
        context()
    );

    // One signature character altered: hls.js fails with the server's 403.
    let altered = server.url(&altered_signature(&link_path));
    let browsed = browse_until_beacon(
        &server,
        &page_url("altered", &altered),
        beacon_of("altered"),
    );
    let context = || browsed.context(&server);
    let beacon = browsed
        .beacon(beacon_of("altered"))
        .unwrap_or_else(|| panic!("no beacon within {BROWSER_WAIT_SECS_MAX} s\n{}", context()));
    assert!(
        beacon.target.starts_with("/media/player/__error?")
            && param(&beacon.target, "code") == Some("403"),
        "hls.js should fail with 403: {}\n{}",
        beacon.target,
        context()
    );
    assert_eq!(
        fetched_status(&browsed.lines, &altered_signature(&link_path)),
        Some(403),
        "{}",
        context()
    );
}

/// The reasons `oasis_auth_refused_total` counts refused links under.
const MALFORMED: &str = "link_malformed";
const BAD_SIGNATURE: &str = "link_bad_signature";
const EXPIRED: &str = "link_expired";
const WRONG_ADDRESS: &str = "link_wrong_address";
const LINK_REASONS: [&str; 4] = [MALFORMED, BAD_SIGNATURE, EXPIRED, WRONG_ADDRESS];

/// How many refusals `/metrics` has counted under each of [`LINK_REASONS`].
fn refused_counts(server: &Server) -> [u64; 4] {
    LINK_REASONS.map(|reason| {
        metric(
            server,
            &format!("oasis_auth_refused_total{{reason=\"{reason}\"}}"),
        )
        .unwrap_or(0)
    })
}

/// The fields of a link path: (signature, expires, scope, name).
fn fields(path: &str) -> (&str, &str, &str, &str) {
    let rest = path.strip_prefix(link::LINK_PREFIX).unwrap();
    let mut parts = rest.splitn(4, '/');
    let mut next = || parts.next().unwrap();
    (next(), next(), next(), next())
}

/// The base64url character after `c`: changing a signature's last character this way sets
/// one of its two spare bits, which must be zero.
fn next_b64url(c: char) -> char {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let at = ALPHABET.iter().position(|&b| char::from(b) == c).unwrap();
    char::from(ALPHABET[(at + 1) % 64])
}

#[test]
fn every_altered_link_is_refused_and_counted_over_raw_sockets() {
    let mut server = Server::start(CONFIG);
    // Each object holds its own name (the escaped one is sent escaped).
    for (target, name) in [
        (MASTER, MASTER),
        (VARIANT, VARIANT),
        ("club/secret.txt", "club/secret.txt"),
        ("show/caf%C3%A9%20au%20lait.txt", "show/café au lait.txt"),
    ] {
        assert_eq!(server.put(target, name.as_bytes()), 201, "{name}");
    }
    let keys = keys();
    let far = now_unix() + 3600;
    let good = link::sign(&keys, Scope::Prefix("show/"), MASTER, far, None).unwrap();
    let (sig, exp, scope, name) = fields(&good);
    assert_eq!((scope, name), ("1", MASTER));
    let root = format!("/s/{sig}/{exp}/1/");
    let object = link::sign(&keys, Scope::Object(MASTER), MASTER, far, None).unwrap();
    let (object_sig, ..) = fields(&object);
    let stranger_keys = LinkKeys::new(&["a-key-this-server-never-had-0123456789abc"]).unwrap();
    let stranger = link::sign(&stranger_keys, Scope::Prefix("show/"), MASTER, far, None).unwrap();
    let expired = link::sign(
        &keys,
        Scope::Prefix("show/"),
        MASTER,
        now_unix() - 3600,
        None,
    )
    .unwrap();

    // Links that open: the package's objects, the query ignored, an object link, escaped names.
    let escaped = sign_cli(&server, "show/café au lait.txt", &["--ttl", "1h"]);
    let escaped = path_of(&server, &escaped).to_string();
    assert!(
        escaped.ends_with("/0/show/caf%C3%A9%20au%20lait.txt"),
        "{escaped}"
    );
    let opens = [
        (good.clone(), MASTER),
        (format!("{root}{VARIANT}"), VARIANT),
        (format!("{good}?sig=ignored"), MASTER),
        (object.clone(), MASTER),
        (escaped, "show/café au lait.txt"),
        (
            format!("{root}show/caf%C3%A9%20au%20lait.txt"),
            "show/café au lait.txt",
        ),
        (
            format!("{root}show/caf%c3%a9 au lait.txt").replace(' ', "%20"),
            "show/café au lait.txt",
        ),
    ];
    for (target, name) in &opens {
        let (status, head, body) = fetch(&server, "GET", target);
        assert_eq!(status, 200, "{target}: {head}");
        assert_eq!(body, name.as_bytes(), "{target}");
        assert_eq!(
            header(&head, "Cache-Control"),
            Some("private"),
            "{target}: {head}"
        );
    }
    // A signed prefix with its own Cache-Control keeps it on signed responses.
    let club = link::sign(
        &keys,
        Scope::Object("club/secret.txt"),
        "club/secret.txt",
        far,
        None,
    )
    .unwrap();
    let (status, head, _) = fetch(&server, "GET", &club);
    assert_eq!(status, 200, "{head}");
    assert_eq!(
        header(&head, "Cache-Control"),
        Some("private, max-age=60"),
        "{head}"
    );

    let last = sig.chars().last().unwrap();
    let sig_spare_bits = format!("{}{}", &sig[..sig.len() - 1], next_b64url(last));
    let exp_last_digit = {
        let d = exp.as_bytes()[exp.len() - 1] - b'0';
        format!("{}{}", &exp[..exp.len() - 1], (d + 1) % 10)
    };
    let (expired_sig, expired_exp, ..) = fields(&expired);
    // (what was done to the link, the target, the reason it is refused for; 410 for EXPIRED,
    // 403 for every other).
    #[rustfmt::skip]
    let refused: Vec<(&str, String, &str)> = vec![
        ("signature char", altered_signature(&good), BAD_SIGNATURE),
        ("signature spare bits", format!("/s/{sig_spare_bits}/{exp}/1/{MASTER}"), MALFORMED),
        ("signature short", format!("/s/{}/{exp}/1/{MASTER}", &sig[1..]), MALFORMED),
        ("signature long", format!("/s/{sig}A/{exp}/1/{MASTER}"), MALFORMED),
        ("signature escaped", format!("/s/%{:02X}{}/{exp}/1/{MASTER}", sig.as_bytes()[0], &sig[1..]), MALFORMED),
        ("expires digit", format!("/s/{sig}/{exp_last_digit}/1/{MASTER}"), BAD_SIGNATURE),
        ("expires leading zero", format!("/s/{sig}/0{exp}/1/{MASTER}"), MALFORMED),
        ("expires 13 digits", format!("/s/{sig}/{exp:0<13}/1/{MASTER}"), MALFORMED),
        ("expires 2^64", format!("/s/{sig}/18446744073709551616/1/{MASTER}"), MALFORMED),
        ("expires u64 max", format!("/s/{sig}/18446744073709551615/1/{MASTER}"), MALFORMED),
        ("expires signed", format!("/s/{sig}/+{exp}/1/{MASTER}"), MALFORMED),
        ("scope 1 -> 0", format!("/s/{sig}/{exp}/0/{MASTER}"), BAD_SIGNATURE),
        ("scope 1 -> 2", format!("/s/{sig}/{exp}/2/{MASTER}"), MALFORMED),
        ("scope 1 -> 2, deeper name", format!("/s/{sig}/{exp}/2/{VARIANT}"), BAD_SIGNATURE),
        ("scope bound to an address", format!("/s/{sig}/{exp}/1i/{MASTER}"), WRONG_ADDRESS),
        ("scope leading zero", format!("/s/{sig}/{exp}/01/{MASTER}"), MALFORMED),
        ("scope 17", format!("/s/{sig}/{exp}/17/{MASTER}"), MALFORMED),
        ("name char in the prefix", format!("{root}shoW/master.m3u8"), BAD_SIGNATURE),
        ("another prefix", format!("{root}club/secret.txt"), BAD_SIGNATURE),
        ("another object", format!("/s/{object_sig}/{exp}/0/{VARIANT}"), BAD_SIGNATURE),
        ("object link as a package", format!("/s/{object_sig}/{exp}/1/{MASTER}"), BAD_SIGNATURE),
        ("truncated /s/", "/s/".to_string(), MALFORMED),
        ("truncated after sig", format!("/s/{sig}"), MALFORMED),
        ("truncated after sig/", format!("/s/{sig}/"), MALFORMED),
        ("truncated after expires", format!("/s/{sig}/{exp}"), MALFORMED),
        ("truncated after scope", format!("/s/{sig}/{exp}/1"), MALFORMED),
        ("truncated: empty name", root.clone(), MALFORMED),
        ("truncated: prefix only", format!("{root}show"), MALFORMED),
        ("truncated: prefix/", format!("{root}show/"), MALFORMED),
        ("reordered expires, sig", format!("/s/{exp}/{sig}/1/{MASTER}"), MALFORMED),
        ("reordered scope, expires", format!("/s/{sig}/1/{exp}/{MASTER}"), MALFORMED),
        ("reordered scope first", format!("/s/1/{sig}/{exp}/{MASTER}"), MALFORMED),
        ("reordered name, scope", format!("/s/{sig}/{exp}/show/1/master.m3u8"), MALFORMED),
        ("dot-dot inside the package", format!("{root}show/v0/../master.m3u8"), MALFORMED),
        ("dot-dot out of the prefix", format!("{root}show/../club/secret.txt"), MALFORMED),
        ("dot-dot before the name", format!("{root}../show/master.m3u8"), MALFORMED),
        ("dot segment", format!("{root}show/./master.m3u8"), MALFORMED),
        ("doubled slash", format!("{root}show//master.m3u8"), MALFORMED),
        ("%2F for /", format!("{root}show%2Fmaster.m3u8"), MALFORMED),
        ("%2f for / deeper", format!("{root}show/v0%2findex.m3u8"), MALFORMED),
        ("%2F out of the prefix", format!("{root}show%2F..%2Fclub/secret.txt"), MALFORMED),
        ("%2e%2e out of the prefix", format!("{root}show/%2e%2e/club/secret.txt"), MALFORMED),
        ("%2E%2E inside the package", format!("{root}show/v0/%2E%2E/master.m3u8"), MALFORMED),
        ("unknown key", stranger.clone(), BAD_SIGNATURE),
        ("expired", expired.clone(), EXPIRED),
        ("expired, signature altered", altered_signature(&expired), BAD_SIGNATURE),
        ("expired, expiry moved on", format!("/s/{expired_sig}/{far}/1/{MASTER}"), BAD_SIGNATURE),
        ("expired, expiry digit", format!("/s/{expired_sig}/{expired_exp}1/1/{MASTER}"), BAD_SIGNATURE),
    ];
    // Each case is answered its status, a GET and a HEAD, and counted twice under its reason.
    let mut wrong = Vec::new();
    for (what, target, reason) in &refused {
        let want = if *reason == EXPIRED { 410 } else { 403 };
        let before = refused_counts(&server);
        for method in ["GET", "HEAD"] {
            let (status, head, body) = fetch(&server, method, target);
            if status != want {
                wrong.push(format!(
                    "{what}: {method} {target}: {status}, expected {want}\n{head}"
                ));
            }
            if method == "GET" && status >= 400 {
                let v: Value = serde_json::from_slice(&body).unwrap_or_else(|_| {
                    panic!("{what}: not JSON: {}", String::from_utf8_lossy(&body))
                });
                assert!(v["error"].is_string(), "{what}: {v}");
            }
        }
        let after = refused_counts(&server);
        let counted = LINK_REASONS.map(|r| if r == *reason { 2 } else { 0 });
        let deltas: Vec<u64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
        if deltas != counted {
            wrong.push(format!(
                "{what}: {target}: counted {deltas:?} under {LINK_REASONS:?}, expected {reason}"
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases differ:\n{}",
        wrong.len(),
        refused.len(),
        wrong.join("\n")
    );

    // Paths that leave the signed route or name nothing stored: refused, never opened.
    let others = [
        // Normalized to /media/show/master.m3u8 by the HTTP layer: the prefix's own rule asks
        // for credentials.
        ("/s/x/../../media/show/master.m3u8".to_string(), 401),
        // Decoded once by the link: a literal `%2e%2e` segment inside the package, not stored.
        (format!("{root}show/%252e%252e/club/secret.txt"), 404),
        // Not percent-encoding at all: the HTTP layer refuses it before any route.
        (format!("{root}show/%zz"), 400),
    ];
    for (target, want) in &others {
        let (status, head, _) = fetch(&server, "GET", target);
        assert_eq!(status, *want, "{target}: {head}");
    }
    assert!(server.alive(), "{}", server.server_log());
}

/// A GET from a chosen loopback source address; (status, head).
fn get_from(source: IpAddr, server: &Server, target: &str) -> (u16, String) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap();
    let mut stream = runtime.block_on(async {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::new(source, 0)).unwrap();
        let stream = socket.connect(server.addr).await.unwrap();
        stream.into_std().unwrap()
    });
    stream.set_nonblocking(false).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let head = format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = stream.read_to_end(&mut out);
    let (status, head, _) = support::split_response(&out);
    (status, head)
}

#[test]
fn a_link_bound_to_an_address_opens_only_from_that_address() {
    let server = Server::start(CONFIG);
    assert_eq!(server.put("show/clip.txt", b"bound"), 201);
    let from_1: IpAddr = [127, 0, 0, 1].into();
    let from_2: IpAddr = [127, 0, 0, 2].into();
    let for_2 = sign_cli(
        &server,
        "show/clip.txt",
        &["--ip", "127.0.0.2", "--ttl", "1h"],
    );
    let for_1 = sign_cli(
        &server,
        "show/clip.txt",
        &["--ip", "127.0.0.1", "--ttl", "1h"],
    );
    let (for_2, for_1) = (path_of(&server, &for_2), path_of(&server, &for_1));
    assert!(for_2.contains("/0i/show/clip.txt"), "{for_2}");
    let before = refused_counts(&server);
    for (link, from, want) in [
        (for_2, from_1, 403),
        (for_2, from_2, 200),
        (for_1, from_1, 200),
        (for_1, from_2, 403),
    ] {
        let (status, head) = get_from(from, &server, link);
        assert_eq!(status, want, "{link} from {from}: {head}");
    }
    let after = refused_counts(&server);
    assert_eq!(after[3] - before[3], 2, "{WRONG_ADDRESS}");
    // The access log names the client each link was used from.
    support::wait_until(&server, "the access log line of 127.0.0.2", || {
        let log = server.access_log();
        log.lines()
            .any(|l| l.starts_with("127.0.0.2 - link [") && l.contains(for_2))
    });
}
