//! `oasis log-ship` and `oasis serve`'s `[log] ship_to`, as real processes against real log
//! servers (`oasis logd`, each with its own port and data directory) over real sockets. What the
//! servers hold is read from their data directories in place and put together with
//! `oasis_log::assemble` (each byte once, overlaps compared: two servers holding different bytes
//! at one offset fail the test), so a lost byte, a repeated one (the stream would be longer) or a
//! misplaced one shows.
//!
//! - A followed file, rotated by rename mid-way (with a late write to the old file), reaches two
//!   servers exactly once; SIGTERM exits 0 and the state file is next to the file.
//! - `kill -9` of the shipper, several times, with a rotation while it is down: each restart
//!   resumes from its state file; the servers end up with every byte once.
//! - Standard input with the server in use killed (`kill -9`) mid-stream: the shipper goes to
//!   the other one, exits 0 at the end of input, and the two together hold everything.
//! - `oasis serve` ships its access log and its events; `[log] level` is live: an info line is
//!   shipped only after a reload lowers the level from warn.
//!
//! Waits are for conditions, bounded so a broken shipper fails instead of hanging; nothing
//! asserts on timing. (The shipper against servers that hang or refuse is tested in
//! `log/tests/ship_sockets.rs`, with in-test servers that can be told to.)

mod support;

/// The shared test helpers (`wait_for`, `lines`, `append`); its server is not used here.
#[path = "../log/tests/mini_server/mod.rs"]
mod mini_server;

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mini_server::{append, lines, wait_for, WAIT};
use oasis_log::assemble::{assemble, AssembleError, PieceSource};
use oasis_log::client::DirSource;

/// A running `oasis logd` on a port of its own; killed when dropped.
struct Logd {
    child: Child,
    addr: SocketAddr,
    data: PathBuf,
}

/// Starts `oasis logd` with its data directory and log under `dir`, named `name`.
fn logd(dir: &Path, name: &str) -> Logd {
    let (data, log) = (dir.join(name), dir.join(format!("{name}.log")));
    let child = Command::new(support::oasis_bin())
        .args(["logd", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut addr = None;
    wait_for("logd to listen", || {
        addr = support::listening_addr(&std::fs::read_to_string(&log).unwrap_or_default());
        addr.is_some()
    });
    Logd {
        child,
        addr: addr.unwrap(),
        data,
    }
}

impl Logd {
    fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Logd {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn servers(list: &[&Logd]) -> String {
    list.iter()
        .map(|s| s.addr.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// What the servers hold of `stream` together, from offset 0 up to the first offset none holds
/// (read from their data directories in place, durable bytes only). Two servers holding
/// different bytes at one offset fail the test.
fn held(list: &[&Logd], stream: &str) -> Vec<u8> {
    let mut sources: Vec<Box<dyn PieceSource>> = list
        .iter()
        .filter_map(|s| DirSource::open(&s.data, stream, 0).unwrap())
        .map(|d| Box::new(d) as Box<dyn PieceSource>)
        .collect();
    let mut out = Vec::new();
    match assemble(&mut sources, 0, &mut out) {
        Ok(_) | Err(AssembleError::Gap { .. }) => out,
        Err(e) => panic!("{e}"),
    }
}

/// `oasis log-ship` with its stderr in `log` (appended, kept for failure messages).
fn ship(list: &[&Logd], stream: &str, input: &str, log: &Path) -> Child {
    let err = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .unwrap();
    Command::new(support::oasis_bin())
        .args(["log-ship", "--servers", &servers(list), "--stream", stream])
        .args(["--ack-timeout-secs", "1", input])
        .stdin(if input == "-" {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::null())
        .stderr(err)
        .spawn()
        .unwrap()
}

/// Waits until the shipper has said it runs (its signal handlers are in place by then).
fn wait_started(log: &Path) {
    wait_for("log-ship to start", || {
        std::fs::read_to_string(log)
            .is_ok_and(|t| t.contains("following") || t.contains("shipping"))
    });
}

/// Two log servers, and a directory with their data, the followed file and the shipper's log.
fn rig() -> (Logd, Logd, tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (logd(dir.path(), "logd-a"), logd(dir.path(), "logd-b"));
    let (file, log) = (dir.path().join("app.log"), dir.path().join("ship.log"));
    (a, b, dir, file, log)
}

fn signal(pid: u32, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &pid.to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok, "kill {sig}");
}

fn exit_status(child: &mut Child, log: &Path) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > WAIT {
            let _ = child.kill();
            panic!(
                "log-ship did not exit; its log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// SIGTERM once the shipper runs; it must exit 0.
fn stop_cleanly(shipper: &mut Child, log: &Path) {
    wait_started(log);
    signal(shipper.id(), "-TERM");
    let st = exit_status(shipper, log);
    let text = std::fs::read_to_string(log).unwrap();
    assert!(st.success(), "{st}: {text}");
}

#[test]
fn a_followed_file_with_a_rotation_reaches_two_servers_exactly_once() {
    let (a, b, dir, file, log) = rig();
    let stream = "web-1/app";
    let first = lines("first", 300_000);
    append(&file, &first);
    let mut shipper = ship(&[&a, &b], stream, support::path_str(&file), &log);
    wait_for("the first file", || {
        held(&[&a, &b], stream).len() == first.len()
    });
    // Rotation by rename; the writer adds a last line to the old file before it reopens.
    std::fs::rename(&file, dir.path().join("app.log.1")).unwrap();
    append(
        &dir.path().join("app.log.1"),
        b"late line to the old file\n",
    );
    let second = lines("second", 300_000);
    append(&file, &second);
    let mut want = first.clone();
    want.extend_from_slice(b"late line to the old file\n");
    want.extend_from_slice(&second);
    wait_for("the second file", || {
        held(&[&a, &b], stream).len() == want.len()
    });
    stop_cleanly(&mut shipper, &log);
    assert!(held(&[&a, &b], stream) == want, "exactly the file's bytes");
    let state = std::fs::read_to_string(dir.path().join("app.log.oasis-ship")).unwrap();
    assert!(
        state.contains(&format!("acked {}\n", want.len())),
        "{state}"
    );
}

#[test]
fn kill_9_and_restart_neither_loses_nor_repeats() {
    let (a, b, dir, file, log) = rig();
    let stream = "web-1/app";
    let mut want = Vec::new();
    for round in 0..4 {
        let before = want.len();
        let chunk = lines(&format!("round{round}"), 2 << 20);
        append(&file, &chunk);
        want.extend_from_slice(&chunk);
        if round == 2 {
            // Rotated while the shipper is down.
            std::fs::rename(&file, dir.path().join(format!("app.log.{round}"))).unwrap();
            let fresh = lines("after-rotation", 100_000);
            append(&file, &fresh);
            want.extend_from_slice(&fresh);
        }
        let mut shipper = ship(&[&a, &b], stream, support::path_str(&file), &log);
        // Killed once it made some progress, most likely with bytes in flight.
        wait_for("progress", || held(&[&a, &b], stream).len() > before);
        signal(shipper.id(), "-KILL");
        let _ = exit_status(&mut shipper, &log);
    }
    let log = dir.path().join("ship-final.log");
    let mut shipper = ship(&[&a, &b], stream, support::path_str(&file), &log);
    wait_for("everything", || held(&[&a, &b], stream).len() >= want.len());
    stop_cleanly(&mut shipper, &log);
    let got = held(&[&a, &b], stream);
    assert_eq!(got.len(), want.len(), "no byte lost, none repeated");
    assert!(got == want, "the bytes are the file's, in order");
}

#[test]
fn standard_input_moves_to_the_other_server_when_one_dies() {
    let (mut a, mut b, _dir, _, log) = rig();
    let stream = "batch/import";
    let data = lines("stdin", 4 << 20);
    let half = data.len() / 2;
    let mut shipper = ship(&[&a, &b], stream, "-", &log);
    let mut stdin = shipper.stdin.take().unwrap();
    stdin.write_all(&data[..half]).unwrap();
    wait_for("half shipped", || held(&[&a, &b], stream).len() >= half);
    // Only the server in use holds the stream so far.
    let a_holds = DirSource::open(&a.data, stream, 0).unwrap().is_some();
    if a_holds {
        a.kill9()
    } else {
        b.kill9()
    }
    stdin.write_all(&data[half..]).unwrap();
    drop(stdin);
    let status = exit_status(&mut shipper, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(status.success(), "{status}: {text}");
    assert!(
        text.contains(&format!("acknowledged up to offset {}", data.len())),
        "{text}"
    );
    assert!(held(&[&a, &b], stream) == data, "everything, once");
}

#[test]
fn serve_ships_its_access_log_and_events_with_a_live_level() {
    let dir = tempfile::tempdir().unwrap();
    let m = logd(dir.path(), "logd");
    let mut s = support::Server::start(&format!(
        "\n[log]\nship_to = [\"{}\"]\nnode = \"n1\"\nlevel = \"warn\"\n",
        m.addr
    ));
    let (status, _, _) = s.request(
        "GET /media/no-such-object HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 404);
    let text = |stream: &str| String::from_utf8_lossy(&held(&[&m], stream)).into_owned();
    support::wait_until(&s, "the access line at the log server", || {
        text("n1/access").contains("GET /media/no-such-object")
    });
    // Lower the shipped level to info, live.
    let config = std::fs::read_to_string(s.config_path()).unwrap();
    std::fs::write(
        s.config_path(),
        config.replace("level = \"warn\"", "level = \"info\""),
    )
    .unwrap();
    signal(s.pid() as u32, "-HUP");
    support::wait_until(&s, "the reload's info line at the log server", || {
        text("n1/events").contains("reloaded (generation 1)")
    });
    let events = text("n1/events");
    // Lines arrive in order: the start-up's info lines, logged at warn, were filtered out.
    assert!(!events.contains("listening on"), "{events}");
    assert!(events.contains("[log] level is in force"), "{events}");
    // The server's own log (stderr) has its own filter, unchanged.
    assert!(s.server_log().contains("listening on"));
    assert!(s.stop().success());
}
