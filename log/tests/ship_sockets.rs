//! The shipper over real sockets against small in-test servers (`mini_server`, which speaks the
//! protocol with the shared codec): every byte arrives exactly once at its offset, whatever the
//! servers do. A server killed mid-stream, a server that stops acknowledging, a server that
//! refuses: the shipper moves to another, and the union of what the servers hold is the input,
//! with equal bytes wherever two hold the same offsets (`mini_server::union` checks that). A
//! source without offsets of its own continues after the end the servers hold. A followed file
//! is shipped across a rotation and a shipper restart without loss or repeat.
//!
//! Waits are for conditions (bytes acknowledged, a server used), never for a time; nothing
//! asserts on timing.

mod mini_server;

use std::io::Read;
use std::sync::mpsc::{channel, Receiver, Sender};
use std::time::Duration;

use mini_server::{append, lines as input, union, wait_for, MiniServer, WAIT};
use oasis_log::ship::{ShipConfig, Shipper};

const STREAM: &str = "test/stream";

fn config(servers: &[&MiniServer]) -> ShipConfig {
    let mut c = ShipConfig::new(servers.iter().map(|s| s.name()).collect(), STREAM);
    c.ack_timeout = Duration::from_millis(300);
    c.backoff_max = Duration::from_millis(200);
    c.window_bytes = 256 * 1024;
    c.frame_bytes_max = 16 * 1024;
    c.poll_interval = Duration::from_millis(5);
    c
}

/// A `Read` the test feeds piece by piece; it ends when the sender is dropped.
struct Feed {
    rx: Receiver<Vec<u8>>,
    pending: Vec<u8>,
}

impl Read for Feed {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pending.is_empty() {
            match self.rx.recv() {
                Ok(b) => self.pending = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending[..n]);
        self.pending.drain(..n);
        Ok(n)
    }
}

fn feed() -> (Sender<Vec<u8>>, Feed) {
    let (tx, rx) = channel();
    (
        tx,
        Feed {
            rx,
            pending: Vec::new(),
        },
    )
}

/// Waits until everything the shipper read is acknowledged, then stops it; its stats.
fn finish(shipper: Shipper) -> oasis_log::ship::ShipStats {
    assert!(
        shipper.wait(WAIT),
        "not acknowledged: {:?}",
        shipper.stats()
    );
    shipper.shutdown(Duration::ZERO)
}

#[test]
fn standard_input_arrives_once_and_a_second_run_continues_after_it() {
    let a = MiniServer::start();
    let first = input("first", 1 << 20);
    let shipper = Shipper::read(config(&[&a]), std::io::Cursor::new(first.clone())).unwrap();
    let stats = finish(shipper);
    assert_eq!(stats.acked, first.len() as u64);
    assert_eq!(stats.sent_bytes, first.len() as u64, "nothing sent twice");
    assert_eq!(union(&[&a], STREAM), first);
    // A second run: its bytes go after the first run's, not over them.
    let second = input("second", 1000);
    let shipper = Shipper::read(config(&[&a]), std::io::Cursor::new(second.clone())).unwrap();
    assert!(shipper.wait(WAIT));
    let mut both = first.clone();
    both.extend_from_slice(&second);
    assert_eq!(union(&[&a], STREAM), both);
}

#[test]
fn a_new_source_starts_after_the_largest_end_any_server_holds() {
    let (a, b) = (MiniServer::start(), MiniServer::start());
    let one = input("one", 5000);
    let shipper = Shipper::read(config(&[&a]), std::io::Cursor::new(one.clone())).unwrap();
    assert!(shipper.wait(WAIT));
    drop(shipper);
    // Now to both: b holds nothing, yet the stream goes on after a's end wherever it lands.
    let two = input("two", 5000);
    let shipper = Shipper::read(config(&[&a, &b]), std::io::Cursor::new(two.clone())).unwrap();
    assert!(shipper.wait(WAIT));
    let mut want = one.clone();
    want.extend_from_slice(&two);
    assert_eq!(union(&[&a, &b], STREAM), want);
}

#[test]
fn a_killed_server_sends_the_shipper_to_the_other_and_nothing_is_lost() {
    let (a, b) = (MiniServer::start(), MiniServer::start());
    let data = input("kill", 2 << 20);
    let (tx, rx) = feed();
    let shipper = Shipper::read(config(&[&a, &b]), rx).unwrap();
    let half = data.len() / 2;
    tx.send(data[..half].to_vec()).unwrap();
    wait_for("half acknowledged", || shipper.stats().acked >= half as u64);
    // Kill whichever server the shipper uses, with bytes still to come.
    let used = shipper.stats().server.expect("connected");
    let (dead, alive) = if used == a.name() { (&a, &b) } else { (&b, &a) };
    dead.kill();
    tx.send(data[half..].to_vec()).unwrap();
    drop(tx);
    let stats = finish(shipper);
    // Killed with nothing outstanding, the close is not even a failure; either way it moved.
    assert!(stats.reconnects >= 1, "{stats:?}");
    assert_eq!(union(&[&a, &b], STREAM), data);
    assert!(!alive.held(STREAM).segments.is_empty());
}

#[test]
fn a_server_closing_an_idle_connection_is_no_failure() {
    let a = MiniServer::start();
    let data = input("idle", 100_000);
    let (tx, rx) = feed();
    let shipper = Shipper::read(config(&[&a]), rx).unwrap();
    tx.send(data[..50_000].to_vec()).unwrap();
    wait_for("the first part acknowledged", || {
        shipper.stats().acked >= 50_000
    });
    // The server closes the silent writer; the shipper lets it go and waits for bytes.
    a.drop_connections();
    wait_for("both sides to see the close", || {
        shipper.stats().server.is_none() && !a.writing(STREAM)
    });
    tx.send(data[50_000..].to_vec()).unwrap();
    drop(tx);
    let stats = finish(shipper);
    assert_eq!((stats.failures, stats.reconnects), (0, 1), "{stats:?}");
    assert_eq!(union(&[&a], STREAM), data);
}

#[test]
fn a_hung_server_is_left_after_the_ack_timeout() {
    let (hung, good) = (MiniServer::start(), MiniServer::start());
    hung.hang(true);
    // The good server refuses (at its limit) until the hung one has taken bytes, so the
    // shipper surely meets the hung one first.
    good.refuse_with(4);
    let data = input("hang", 200_000);
    let shipper =
        Shipper::read(config(&[&hung, &good]), std::io::Cursor::new(data.clone())).unwrap();
    wait_for("bytes at the hung server", || {
        hung.data_frames.load(std::sync::atomic::Ordering::SeqCst) > 0
    });
    good.refuse_with(0);
    let stats = finish(shipper);
    assert!(stats.failures >= 1, "{stats:?}");
    // The hung server's unacknowledged bytes are equal to the good one's where they overlap.
    assert_eq!(union(&[&hung, &good], STREAM), data);
    assert_eq!(good.held(STREAM).end(), data.len() as u64);
}

#[test]
fn a_refusing_server_is_left_for_another() {
    let (full, good) = (MiniServer::start(), MiniServer::start());
    full.refuse_with(2); // disk full
    let data = input("refuse", 300_000);
    let shipper =
        Shipper::read(config(&[&full, &good]), std::io::Cursor::new(data.clone())).unwrap();
    assert!(shipper.wait(WAIT));
    assert!(full.held(STREAM).segments.is_empty());
    assert_eq!(union(&[&good], STREAM), data);
}

#[test]
fn a_followed_file_survives_rotation_a_dead_server_and_a_restart() {
    let (a, b) = (MiniServer::start(), MiniServer::start());
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("app.log");
    let state = dir.path().join("app.log.oasis-ship");
    let parts: Vec<Vec<u8>> = (0..5)
        .map(|i| input(&format!("part{i}"), 100_000))
        .collect();
    let mut total = 0u64;
    let shipper = Shipper::follow(config(&[&a, &b]), &log, &state).unwrap();
    append(&log, &parts[0]);
    total += parts[0].len() as u64;
    wait_for("part 0", || shipper.stats().acked == total);
    // Rotation by rename, then a new file.
    std::fs::rename(&log, dir.path().join("app.log.1")).unwrap();
    append(&log, &parts[1]);
    total += parts[1].len() as u64;
    wait_for("part 1", || shipper.stats().acked == total);
    // The server in use dies.
    let used = shipper.stats().server.expect("connected");
    if used == a.name() {
        a.kill()
    } else {
        b.kill()
    }
    append(&log, &parts[2]);
    total += parts[2].len() as u64;
    wait_for("part 2", || shipper.stats().acked == total);
    let stats = shipper.shutdown(Duration::from_secs(5));
    assert_eq!(stats.acked, total);
    // While no shipper runs: more bytes and another rotation.
    append(&log, &parts[3]);
    std::fs::rename(&log, dir.path().join("app.log.2")).unwrap();
    append(&log, &parts[4]);
    total += (parts[3].len() + parts[4].len()) as u64;
    let shipper = Shipper::follow(config(&[&a, &b]), &log, &state).unwrap();
    wait_for("parts 3 and 4", || shipper.stats().acked == total);
    let stats = shipper.shutdown(Duration::from_secs(5));
    assert_eq!(
        stats.sent_bytes,
        (parts[3].len() + parts[4].len()) as u64,
        "{stats:?}"
    );
    assert_eq!(union(&[&a, &b], STREAM), parts.concat());
}
