//! Real players as bounded child processes, for the tests that play media Oasis serves
//! (`media_players.rs`, `signed_links.rs`): ffmpeg, ffprobe and headless Chromium, each in its
//! own process group and killed after [`CHILD_SECS_MAX`]; the access log parsed back into
//! requests (`Logged`), so a test can see what a player fetched and how it was answered; and a
//! media playlist's segments parsed independently of the server's parser.
//!
//! Nothing here installs tools: a missing one fails the test through [`need`].

use std::fs::File;
use std::io::{Read, Seek};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::Server;

/// Longest any child process (ffmpeg, ffprobe, chromium) may run before it is killed.
pub const CHILD_SECS_MAX: u64 = 60;
/// How long a browser test waits for its page's beacon.
pub const BROWSER_WAIT_SECS_MAX: u64 = 45;

/// Fails (never skips) when a tool is missing, naming the Debian package that provides it.
pub fn need(cmd: &str, package: &str) {
    assert!(
        super::have(cmd),
        "`{cmd}` is not on PATH: install the Debian package `{package}` \
         (apt-get install -y {package}); these tests need real players and must not skip"
    );
}

/// What a bounded child process did.
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Finished {
    /// Exit status and the tails of both outputs, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit: {}\n--- stdout (tail) ---\n{}\n--- stderr (tail) ---\n{}",
            self.status,
            tail(&self.stdout, 3000),
            tail(&self.stderr, 3000)
        )
    }
}

/// The last `max_chars` bytes of `s` (or a few fewer, to start on a character).
pub fn tail(s: &str, max_chars: usize) -> &str {
    let skip = s.len().saturating_sub(max_chars);
    let start = (skip..=s.len())
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(s.len());
    &s[start..]
}

/// A child in its own process group, with stdout and stderr going to unnamed temporary files
/// (no pipe can fill up and stall it). Dropping it kills the whole group.
pub struct Bounded {
    what: String,
    child: std::process::Child,
    stdout: File,
    stderr: File,
}

impl Bounded {
    pub fn spawn(cmd: &str, args: &[&str]) -> Bounded {
        let stdout = tempfile::tempfile().unwrap();
        let stderr = tempfile::tempfile().unwrap();
        let child = Command::new(cmd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(stdout.try_clone().unwrap())
            .stderr(stderr.try_clone().unwrap())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {cmd}: {e}"));
        Bounded {
            what: format!("{cmd} {}", args.join(" ")),
            child,
            stdout,
            stderr,
        }
    }

    fn read_all(f: &mut File) -> String {
        let mut bytes = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut bytes).unwrap();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    pub fn stderr_so_far(&mut self) -> String {
        Self::read_all(&mut self.stderr)
    }

    /// Kills the process group (the child and anything it started) and reaps the child.
    pub fn kill_group(&mut self) {
        let pgid = self.child.id();
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{pgid}")])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits up to `CHILD_SECS_MAX` for the child to exit; kills it and panics if it does not.
    pub fn finish(mut self) -> Finished {
        let until = Instant::now() + Duration::from_secs(CHILD_SECS_MAX);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > until {
                self.kill_group();
                let stderr = self.stderr_so_far();
                panic!(
                    "`{}` still running after {CHILD_SECS_MAX} s; killed it\n--- stderr (tail) ---\n{}",
                    self.what,
                    tail(&stderr, 3000)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        // Grandchildren may still hold the group; they are not wanted past this point.
        self.kill_group();
        Finished {
            status,
            stdout: Self::read_all(&mut self.stdout),
            stderr: Self::read_all(&mut self.stderr),
        }
    }
}

impl Drop for Bounded {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            self.kill_group();
        }
    }
}

/// Runs a command to completion (bounded), whatever its exit status.
pub fn run_bounded(cmd: &str, args: &[&str]) -> Finished {
    Bounded::spawn(cmd, args).finish()
}

/// Runs a command to completion (bounded) and asserts it exited 0.
pub fn run_ok(cmd: &str, args: &[&str]) -> Finished {
    let what = format!("{cmd} {}", args.join(" "));
    let done = run_bounded(cmd, args);
    assert!(
        done.status.success(),
        "`{what}` failed\n{}",
        done.describe()
    );
    done
}

/// Encodes ffmpeg's synthetic sources (`video` and `audio`, lavfi graphs such as
/// `testsrc=...` and `sine=...`) as H.264 (yuv420p) and AAC with a keyframe exactly every
/// `keyframe_frames` frames, then applies `output` (the muxer's options and the output path);
/// asserts ffmpeg exited 0.
pub fn encode_synthetic(video: &str, audio: &str, keyframe_frames: u32, output: &[&str]) {
    need("ffmpeg", "ffmpeg");
    let gop = keyframe_frames.to_string();
    let mut args = vec![
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        video,
        "-f",
        "lavfi",
        "-i",
        audio,
        "-map",
        "0:v",
        "-map",
        "1:a",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-g",
        &gop,
        "-keyint_min",
        &gop,
        "-sc_threshold",
        "0",
        "-c:a",
        "aac",
    ];
    args.extend_from_slice(output);
    run_ok("ffmpeg", &args);
}

/// Encodes `video` and `audio` (as [`encode_synthetic`], keyframes every 50 frames) into an HLS
/// package in the existing directory `pkg`: `index.m3u8` (VOD) and 2 s segments `seg000.ts`...
pub fn encode_hls_package(video: &str, audio: &str, pkg: &Path) {
    let segments = pkg.join("seg%03d.ts");
    let playlist = pkg.join("index.m3u8");
    let path = |p: &'_ Path| p.to_str().expect("a UTF-8 path").to_string();
    let (segments, playlist) = (path(&segments), path(&playlist));
    encode_synthetic(
        video,
        audio,
        50,
        &[
            "-f",
            "hls",
            "-hls_time",
            "2",
            "-hls_playlist_type",
            "vod",
            "-hls_segment_filename",
            &segments,
            &playlist,
        ],
    );
}

/// `ffprobe -show_entries ENTRIES -of json INPUT` (a URL or a path), parsed.
pub fn ffprobe_json(input: &str, entries: &str) -> serde_json::Value {
    need("ffprobe", "ffmpeg");
    let probe = run_ok(
        "ffprobe",
        &[
            "-v",
            "error",
            "-show_entries",
            entries,
            "-of",
            "json",
            input,
        ],
    );
    serde_json::from_str(&probe.stdout)
        .unwrap_or_else(|e| panic!("ffprobe output is not JSON ({e}):\n{}", probe.describe()))
}

/// The `format.duration` of [`ffprobe_json`]'s answer, in seconds.
pub fn probed_duration_secs(probed: &serde_json::Value) -> f64 {
    probed["format"]["duration"]
        .as_str()
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("no duration in {probed:#}"))
}

/// ffmpeg decodes all of `input` (a URL or a path) to nothing; asserts it exited 0 and returns
/// how many video frames it decoded.
pub fn ffmpeg_decoded_frames(input: &str) -> u64 {
    ffmpeg_decoded_frames_via(&[], input)
}

/// [`ffmpeg_decoded_frames`] with ffmpeg run through the command `prefix` (say `ip netns exec
/// NS`; empty: ffmpeg itself).
pub fn ffmpeg_decoded_frames_via(prefix: &[&str], input: &str) -> u64 {
    need("ffmpeg", "ffmpeg");
    let argv = [
        prefix,
        &[
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-loglevel",
            "info",
            "-stats",
            "-i",
            input,
            "-f",
            "null",
            "-",
        ],
    ]
    .concat();
    let played = run_ok(argv[0], &argv[1..]);
    last_frame_count(&played.stderr)
        .unwrap_or_else(|| panic!("no frame= count\n{}", played.describe()))
}

/// ffmpeg asked to decode `input`, whatever comes of it (for inputs that must fail).
pub fn ffmpeg_attempt(input: &str) -> Finished {
    need("ffmpeg", "ffmpeg");
    run_bounded(
        "ffmpeg",
        &["-nostdin", "-hide_banner", "-i", input, "-f", "null", "-"],
    )
}

/// Uploads a file and asserts the server accepted it; returns its size.
pub fn upload(server: &Server, name: &str, path: &Path) -> u64 {
    let bytes = std::fs::read(path).unwrap();
    let status = server.put(name, &bytes);
    assert!(
        (200..300).contains(&status),
        "PUT /media/{name} ({} bytes) answered {status}\n{}",
        bytes.len(),
        server.server_log()
    );
    bytes.len() as u64
}

/// One access log line's request and outcome.
#[derive(Debug)]
pub struct Logged {
    pub method: String,
    pub target: String,
    pub status: u16,
    pub body_bytes: u64,
}

/// Parses the combined-format access log: `ip - user [time] "METHOD target HTTP/1.x" status bytes ...`.
pub fn parse_access_log(text: &str) -> Vec<Logged> {
    text.lines()
        .filter_map(|line| {
            let mut quoted = line.split('"');
            let request = quoted.nth(1)?;
            let mut outcome = quoted.next()?.split_whitespace();
            let mut request = request.split(' ');
            Some(Logged {
                method: request.next()?.to_string(),
                target: request.next()?.to_string(),
                status: outcome.next()?.parse().ok()?,
                body_bytes: outcome.next()?.parse().ok()?,
            })
        })
        .collect()
}

/// Polls the access log (it is written by a background thread) until `done` holds, for at most
/// `secs`; returns the last parse either way so the caller's assertion shows what was there.
pub fn wait_for_log(server: &Server, secs: u64, done: impl Fn(&[Logged]) -> bool) -> Vec<Logged> {
    let until = Instant::now() + Duration::from_secs(secs);
    loop {
        let lines = parse_access_log(&server.access_log());
        if done(&lines) || Instant::now() > until {
            return lines;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The number after the last `frame=` in ffmpeg's progress output.
pub fn last_frame_count(stderr: &str) -> Option<u64> {
    let at = stderr.rfind("frame=")?;
    stderr[at + "frame=".len()..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

pub fn assert_near(what: &str, actual: f64, expected: f64, tolerance_fraction: f64) {
    assert!(
        (actual - expected).abs() <= expected * tolerance_fraction,
        "{what}: {actual} is not within {:.1}% of {expected}",
        tolerance_fraction * 100.0
    );
}

/// One `#EXTINF` entry of a media playlist.
pub struct Segment {
    pub uri: String,
    pub duration_ms: u64,
}

/// The segments of a media playlist ffmpeg wrote (parsed here, independently of the server's
/// parser).
pub fn segments_of(playlist: &str) -> Vec<Segment> {
    let mut out = Vec::new();
    let mut duration_ms = None;
    for line in playlist.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("#EXTINF:") {
            let secs: f64 = rest.split(',').next().unwrap().parse().unwrap();
            duration_ms = Some((secs * 1000.0).round() as u64);
        } else if !line.is_empty() && !line.starts_with('#') {
            let duration_ms = duration_ms
                .take()
                .expect("a URI line follows an #EXTINF line");
            out.push(Segment {
                uri: line.to_string(),
                duration_ms,
            });
        }
    }
    out
}

/// A number a beacon carries in its query (`t=2.5`); panics naming the beacon when it lacks one.
pub fn beacon_number(beacon: &Logged, key: &str) -> f64 {
    param(&beacon.target, key)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("beacon {} lacks {key}", beacon.target))
}

/// A query parameter of a logged target.
pub fn param<'a>(target: &'a str, key: &str) -> Option<&'a str> {
    target.split_once('?')?.1.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then_some(v)
    })
}

/// What a page told the test: the access log when its beacon arrived (or when the wait ended),
/// and what the browser printed.
pub struct Browsed {
    pub lines: Vec<Logged>,
    pub browser_stderr: String,
}

impl Browsed {
    /// The first logged request `is_beacon` picks.
    pub fn beacon(&self, is_beacon: impl Fn(&Logged) -> bool) -> Option<&Logged> {
        self.lines.iter().find(|l| is_beacon(l))
    }

    /// The access log and the browser's stderr, for assertion messages.
    pub fn context(&self, server: &Server) -> String {
        format!(
            "--- access log ---\n{}\n--- chromium stderr (tail) ---\n{}",
            server.access_log(),
            tail(&self.browser_stderr, 4000)
        )
    }
}

/// Opens `page_url` in headless Chromium (a fresh profile, autoplay allowed) and waits, at most
/// [`BROWSER_WAIT_SECS_MAX`], until the server's access log has a request `is_beacon` picks;
/// then kills the browser.
pub fn browse_until_beacon(
    server: &Server,
    page_url: &str,
    is_beacon: impl Fn(&Logged) -> bool,
) -> Browsed {
    need("chromium", "chromium");
    let profile = tempfile::tempdir().unwrap();
    let mut browser = Bounded::spawn(
        "chromium",
        &[
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--autoplay-policy=no-user-gesture-required",
            &format!("--user-data-dir={}", super::path_str(profile.path())),
            page_url,
        ],
    );
    let lines = wait_for_log(server, BROWSER_WAIT_SECS_MAX, |lines| {
        lines.iter().any(&is_beacon)
    });
    // Chromium's complaints about the missing D-Bus in a container are noise here.
    let browser_stderr: String = browser
        .stderr_so_far()
        .lines()
        .filter(|l| !l.contains("dbus/"))
        .map(|l| format!("{l}\n"))
        .collect();
    browser.kill_group();
    Browsed {
        lines,
        browser_stderr,
    }
}
