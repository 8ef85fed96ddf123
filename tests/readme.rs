//! README's "Using it" block, run as written, so the docs cannot drift from the program.
//!
//! The test takes the fenced block between `<!-- using-it:begin -->` and `<!-- using-it:end -->`
//! and runs it with `bash -euo pipefail` in an empty directory laid out like a checkout: its
//! `target/release` is the directory of the `oasis` binary under test. The block starts the server
//! on README's default address (127.0.0.1:8080), makes a video with ffmpeg, uploads it and an HLS
//! package with the CLI, tries a 20 MB upload with a wrong token, lists, stats, fetches a range
//! with curl, plays the package with ffmpeg, deletes both and stops the server with SIGTERM. The
//! test then checks what a reader would see: every command succeeded, the refused upload printed
//! the 401 and its reason, the ranged bytes are the file's first KiB, the listing shows the
//! playlist as a playlist, `stat` shows the duration, and the package was deleted by prefix.
//!
//! The whole run is bounded (its process group is killed after `RUN_SECS_MAX`). Nothing here
//! asserts on timing.

mod support;

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const RUN_SECS_MAX: u64 = 180;

/// The shell block of README's "Using it" section.
fn using_it_block() -> String {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let begin = readme
        .find("<!-- using-it:begin -->")
        .expect("README marks the block with <!-- using-it:begin -->");
    let end = readme[begin..]
        .find("<!-- using-it:end -->")
        .map(|i| begin + i)
        .expect("README closes the block with <!-- using-it:end -->");
    let inner = &readme[begin..end];
    let code = inner
        .split_once("```bash\n")
        .and_then(|(_, rest)| rest.split_once("```"))
        .map(|(code, _)| code)
        .expect("a ```bash fence between the markers");
    code.to_string()
}

#[test]
fn readme_using_it_runs_as_written() {
    let script = using_it_block();
    if let Err(e) = std::net::TcpListener::bind("127.0.0.1:8080") {
        panic!("README's block serves on 127.0.0.1:8080, which is taken here ({e}); stop whatever listens there");
    }
    let dir = tempfile::tempdir().unwrap();
    let bin_dir = Path::new(support::oasis_bin()).parent().unwrap();
    std::fs::create_dir(dir.path().join("target")).unwrap();
    std::os::unix::fs::symlink(bin_dir, dir.path().join("target/release")).unwrap();

    let stdout_path = dir.path().join("stdout");
    let stderr_path = dir.path().join("stderr");
    let mut child = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(dir.path())
        .env_remove("OASIS_API_TOKEN")
        .env_remove("OASIS_SERVER")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout_path).unwrap())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .process_group(0)
        .spawn()
        .expect("bash");
    let until = Instant::now() + Duration::from_secs(RUN_SECS_MAX);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() > until {
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // Whatever the block left running (a server after a failed step) goes with its group.
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{}", child.id())])
        .stderr(Stdio::null())
        .status();
    let _ = child.wait();
    let out = std::fs::read_to_string(&stdout_path).unwrap();
    let err = std::fs::read_to_string(&stderr_path).unwrap();
    let status = status.unwrap_or_else(|| {
        panic!("README block still running after {RUN_SECS_MAX} s\nstdout:\n{out}\nstderr:\n{err}")
    });
    assert!(
        status.success(),
        "README block failed ({status})\nstdout:\n{out}\nstderr:\n{err}"
    );

    // The range is the file's first KiB.
    let movie = std::fs::read(dir.path().join("movie.mp4")).unwrap();
    let first = std::fs::read(dir.path().join("first.kib")).unwrap();
    assert_eq!(first, movie[..1024]);
    // The uploads, as `oasis put` reports them.
    assert!(
        out.contains(&format!("movie.mp4\t{} bytes\n", movie.len())),
        "{out}"
    );
    assert!(out.contains("show/index.m3u8\t"), "{out}");
    // `oasis ls show/`: the playlist is a playlist, segments have a bitrate.
    let listing: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("show/") && l.matches('\t').count() == 3)
        .collect();
    assert!(
        listing
            .iter()
            .any(|l| l.starts_with("show/index.m3u8\t") && l.ends_with("\tplaylist")),
        "{out}"
    );
    assert!(
        listing
            .iter()
            .any(|l| l.contains(".ts\t") && l.ends_with(" bit/s")),
        "{out}"
    );
    // `oasis stat movie.mp4` shows the duration of the 12 s clip.
    let duration_ms: u64 = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"duration_ms\": "))
        .and_then(|v| v.trim_end_matches(',').parse().ok())
        .unwrap_or_else(|| panic!("stat shows duration_ms\n{out}"));
    assert!((11_500..=12_500).contains(&duration_ms), "{duration_ms}");
    // The wrong-token upload of 20 MB: the server's status and reason, not a broken pipe.
    assert!(
        err.contains("upload of big.bin refused: HTTP 401 Unauthorized: the bearer token is not known to this server (mistyped, revoked or rotated out)"),
        "{err}"
    );
    assert!(out.contains("refused, as it should be"), "{out}");
    assert!(!err.contains("Broken pipe"), "{err}");
    // Both deletes.
    assert!(out.contains("deleted movie.mp4\n"), "{out}");
    let package_deleted = out
        .lines()
        .any(|l| l.starts_with("deleted ") && l.ends_with(" objects under show/"));
    assert!(package_deleted, "{out}");
    // The server stopped on SIGTERM (the block's `wait` returned 0) and logged it.
    assert!(
        err.contains("received SIGTERM") && err.contains("stopped"),
        "{err}"
    );
}
