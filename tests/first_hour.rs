//! The first hour of a new user, over real sockets with the real `oasis` binary and curl.
//!
//! What this proves:
//! - A refused upload is reported with the server's status and reason, not a broken pipe: the
//!   CLI sends `Expect: 100-continue` (so a 20 MB upload with a wrong token sends no body), and a
//!   client that sends the whole body anyway (curl with `Expect:` cleared, a raw socket) reads the
//!   401 because the server reads and drops the rest of the body before it closes (lingering
//!   close).
//! - A server without a token says so in its refusal, and the CLI prints that reason.
//! - A package is deleted with `oasis rm --prefix show/`; `oasis rm show` and `oasis rm show/`
//!   name that command instead of a bare "not found" or "invalid name".
//! - A playlist carries no media bitrate (`bitrate_source: "playlist"`), while its segments get
//!   theirs from `#EXTINF`.
//! - On a host whose open-files limit is below the defaults' needs, the default `connections_max`
//!   fits the limit with one info line and no warning; a value the operator asked for that does
//!   not fit is warned about.
//! - Every argument and option of every subcommand has a line of help, and each subcommand an
//!   example.
//!
//! Nothing here asserts on timing.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use support::{header, oasis_bin, pattern, split_response, Server, TOKEN};

const WRONG_TOKEN: &str = "not-the-token-0123456789";

fn oasis(args: &[&str]) -> Output {
    Command::new(oasis_bin())
        .args(args)
        .env_remove("OASIS_API_TOKEN")
        .env_remove("OASIS_SERVER")
        .output()
        .expect("run oasis")
}

/// `oasis ARGS --server <s> --token TOKEN`.
fn client(s: &Server, args: &[&str]) -> Output {
    let url = s.url("");
    let mut all = args.to_vec();
    all.extend(["--server", &url, "--token", TOKEN]);
    oasis(&all)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn big_file(dir: &std::path::Path, len: usize) -> std::path::PathBuf {
    let path = dir.join("big.bin");
    std::fs::write(&path, pattern(len, 7)).unwrap();
    path
}

#[test]
fn a_wrong_token_upload_of_20_mb_reports_401_with_the_reason() {
    let s = Server::start("");
    let file = big_file(s.dir.path(), 20_000_000);
    let url = s.url("");
    for _ in 0..3 {
        let out = oasis(&[
            "put",
            file.to_str().unwrap(),
            "--server",
            &url,
            "--token",
            WRONG_TOKEN,
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("HTTP 401 Unauthorized"), "{err}");
        assert!(err.contains("is not known to this server"), "{err}");
        assert!(
            !err.contains("Broken pipe") && !err.contains("reset"),
            "{err}"
        );
    }
    // No token at all: the reason says what to send.
    let out = oasis(&["put", file.to_str().unwrap(), "--server", &url]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("HTTP 401") && err.contains("--token"), "{err}");
    // Nothing was stored, and the server logged each refusal.
    let (status, _, _) = s.request(
        "GET /media/big.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 404);
    // The access log is written by its own thread: wait for the lines, then count them.
    support::wait_until(&s, "four 401 lines in the access log", || {
        s.access_log().matches("\" 401 ").count() >= 4
    });
    assert_eq!(
        s.access_log().matches("\" 401 ").count(),
        4,
        "{}",
        s.access_log()
    );
    // The right token uploads the same file.
    let out = client(&s, &["put", file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn a_refusal_by_the_head_answers_before_any_body_byte() {
    let s = Server::start("");
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let head = format!(
        "PUT /media/x.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {WRONG_TOKEN}\r\nContent-Length: 20000000\r\nExpect: 100-continue\r\n\r\n"
    );
    c.write_all(head.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = c.read(&mut buf).expect("an answer without any body sent");
        assert!(n > 0, "closed without an answer");
        got.extend_from_slice(&buf[..n]);
    }
    let (status, head, _) = split_response(&got);
    assert_eq!(status, 401, "{head}");
    assert_eq!(
        header(&head, "WWW-Authenticate"),
        Some("Bearer realm=\"oasis\"")
    );
}

#[test]
fn a_client_that_sends_the_whole_body_still_reads_the_401() {
    let s = Server::start("");
    // A raw client that writes all 20 MB before it reads: every write must succeed.
    let mut c = TcpStream::connect(s.addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let body = pattern(20_000_000, 3);
    let head = format!(
        "PUT /media/x.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {WRONG_TOKEN}\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    c.write_all(head.as_bytes()).unwrap();
    c.write_all(&body)
        .expect("the server reads the body it refused");
    let mut out = Vec::new();
    c.read_to_end(&mut out)
        .expect("the answer, then a clean close");
    let (status, head, reply) = split_response(&out);
    assert_eq!(status, 401, "{head}");
    assert_eq!(header(&head, "Connection"), Some("close"));
    assert!(
        text(&reply).contains("is not known to this server"),
        "{}",
        text(&reply)
    );

    // curl with the expectation cleared sends the whole file too, and reports the status.
    let file = big_file(s.dir.path(), 20_000_000);
    let out = Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-H",
            "Expect:",
        ])
        .args(["-H", &format!("Authorization: Bearer {WRONG_TOKEN}")])
        .args(["-T", file.to_str().unwrap(), &s.url("/media/big.bin")])
        .output()
        .expect("curl (apt-get install curl)");
    assert!(out.status.success(), "curl: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "401");
}

#[test]
fn a_server_without_a_token_says_why_it_refuses() {
    let s = Server::start_without_token();
    let file = big_file(s.dir.path(), 1_000_000);
    let out = oasis(&[
        "put",
        file.to_str().unwrap(),
        "--server",
        &s.url(""),
        "--token",
        TOKEN,
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("HTTP 403 Forbidden"), "{err}");
    assert!(
        err.contains("this server has no accounts and no API token"),
        "{err}"
    );
    assert!(err.contains("oasis user add"), "{err}");
    assert!(
        err.contains("[http] api_token") && err.contains("OASIS_API_TOKEN"),
        "{err}"
    );
    assert!(
        !err.contains("pass --token"),
        "the client did pass one: {err}"
    );
}

fn write_package(dir: &std::path::Path) -> std::path::PathBuf {
    let show = dir.join("show");
    std::fs::create_dir_all(&show).unwrap();
    std::fs::write(
        show.join("index.m3u8"),
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg0.ts\n#EXTINF:4.0,\nseg1.ts\n#EXT-X-ENDLIST\n",
    )
    .unwrap();
    std::fs::write(show.join("seg0.ts"), pattern(500_000, 1)).unwrap();
    std::fs::write(show.join("seg1.ts"), pattern(500_000, 2)).unwrap();
    show
}

#[test]
fn a_package_is_deleted_by_prefix_and_messages_name_the_command() {
    let s = Server::start("");
    let show = write_package(s.dir.path());
    let out = client(&s, &["put", show.to_str().unwrap(), "--name", "show"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    let out = client(&s, &["rm", "show"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("3 objects start with \"show/\""), "{err}");
    assert!(
        err.contains("`oasis ls show/`") && err.contains("`oasis rm --prefix show/`"),
        "{err}"
    );

    let out = client(&s, &["rm", "show/"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is a prefix, not an object name") && err.contains("--prefix show/"),
        "{err}"
    );

    let out = client(&s, &["stat", "nothing-here"]);
    assert!(
        text(&out.stderr).contains("`oasis ls`"),
        "{}",
        text(&out.stderr)
    );

    // The API refuses without the token, and an empty prefix.
    let (status, _, _) = s.request(
        "DELETE /api/objects?prefix=show/ HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 401);
    let (status, _, body) = s.request(
        &format!("DELETE /api/objects HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 400);
    assert!(text(&body).contains("prefix"), "{}", text(&body));

    let out = client(&s, &["rm", "--prefix", "show/"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    for name in ["show/index.m3u8", "show/seg0.ts", "show/seg1.ts"] {
        assert!(stdout.contains(&format!("deleted {name}\n")), "{stdout}");
    }
    assert!(stdout.contains("deleted 3 objects under show/"), "{stdout}");
    let out = client(&s, &["ls", "show/"]);
    assert!(
        out.status.success() && out.stdout.is_empty(),
        "{}",
        text(&out.stdout)
    );
    let out = client(&s, &["rm", "--prefix", "show/"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("no object name starts with \"show/\""));
}

#[test]
fn a_playlist_has_no_media_bitrate() {
    let s = Server::start("");
    let show = write_package(s.dir.path());
    // Even with a bitrate given for the whole package, the playlist keeps none.
    let out = client(
        &s,
        &[
            "put",
            show.to_str().unwrap(),
            "--name",
            "show",
            "--bitrate",
            "800000",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let (status, _, body) = s.request(
        &format!("GET /api/objects?prefix=show/ HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let by_name = |n: &str| {
        v["objects"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["name"] == n)
            .cloned()
            .unwrap_or_else(|| panic!("{n} listed"))
    };
    let playlist = by_name("show/index.m3u8");
    assert_eq!(playlist["bitrate_source"], "playlist", "{playlist}");
    assert_eq!(playlist["bitrate_bps"], 0, "{playlist}");
    assert_eq!(by_name("show/seg0.ts")["bitrate_source"], "uploader");

    let out = client(&s, &["ls", "show/"]);
    let listing = text(&out.stdout);
    let line = listing
        .lines()
        .find(|l| l.starts_with("show/index.m3u8\t"))
        .unwrap();
    assert!(line.ends_with("\tplaylist"), "{listing}");
    // And a playlist is served like any object.
    let (status, _, body) = s.request(
        "GET /media/show/index.m3u8 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 200);
    assert!(text(&body).starts_with("#EXTM3U"));
}

/// Runs `oasis serve` under an open-files limit of `nofile` until it listens, then stops it;
/// returns its log.
fn serve_with_nofile(nofile: u64, extra_toml: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("oasis.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndata_dir = {:?}\naccess_log = \"off\"\n[http]\napi_token = \"{TOKEN}\"\n[[listen]]\naddr = \"127.0.0.1:0\"\n{extra_toml}",
            dir.path().join("data")
        ),
    )
    .unwrap();
    let log = dir.path().join("server.log");
    let mut child = Command::new("prlimit")
        .arg(format!("--nofile={nofile}:{nofile}"))
        .args([
            "--",
            oasis_bin(),
            "serve",
            "--config",
            config.to_str().unwrap(),
        ])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("prlimit (util-linux)");
    let until = std::time::Instant::now() + Duration::from_secs(20);
    while support::listening_addr(&std::fs::read_to_string(&log).unwrap_or_default())
        .is_none_or(|addr| TcpStream::connect(addr).is_err())
    {
        assert!(
            child.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(std::time::Instant::now() < until, "did not start");
        std::thread::sleep(Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
    std::fs::read_to_string(&log).unwrap()
}

#[test]
fn default_connections_fit_the_hosts_descriptor_limit() {
    let log = serve_with_nofile(8000, "");
    assert!(!log.contains("WARN"), "{log}");
    let info = log
        .lines()
        .find(|l| l.contains("open files limited to 8000"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(info.contains("INFO"), "{info}");
    // Connections come first: 8000 less a twentieth for cached files (400, not the default
    // 4096) and a fortieth kept free (200, not 1024).
    assert!(
        info.contains("connections_max is 7400 on this host")
            && info.contains("open_files_max 400"),
        "{info}"
    );

    // An open_files_max the operator set is kept; only the slack and connections shrink.
    let log = serve_with_nofile(8000, "[storage]\nopen_files_max = 3000\n");
    assert!(!log.contains("WARN"), "{log}");
    assert!(
        log.contains("connections_max is 4800 on this host") && log.contains("open_files_max 3000"),
        "{log}"
    );

    let log = serve_with_nofile(8000, "[resources]\nconnections_max = 50000\n");
    let warn = log
        .lines()
        .find(|l| l.contains("open files limited to 8000"))
        .unwrap_or_else(|| panic!("{log}"));
    assert!(
        warn.contains("WARN") && warn.contains("connections_max (50000)"),
        "{warn}"
    );
}

#[test]
fn every_argument_has_help_and_every_command_an_example() {
    let commands: &[&[&str]] = &[
        &["serve"],
        &["import"],
        &["put"],
        &["ls"],
        &["rm"],
        &["stat"],
        &["config", "check"],
        &["config", "show"],
    ];
    for cmd in commands {
        let mut args = cmd.to_vec();
        args.push("-h");
        let out = oasis(&args);
        let help = text(&out.stdout);
        assert!(out.status.success(), "{cmd:?}: {}", text(&out.stderr));
        assert!(help.contains("Example"), "{cmd:?} has no example:\n{help}");
        let mut in_list = false;
        for line in help.lines() {
            if line == "Arguments:" || line == "Options:" {
                in_list = true;
                continue;
            }
            if line.is_empty() || !line.starts_with(' ') {
                in_list = false;
                continue;
            }
            if in_list {
                // "  <PATH>  what it is" or "      --name <NAME>  what it is"
                let described = line
                    .trim()
                    .split("  ")
                    .filter(|p| !p.trim().is_empty())
                    .count()
                    >= 2;
                assert!(described, "{cmd:?}: no help for `{}`\n{help}", line.trim());
            }
        }
    }
}
