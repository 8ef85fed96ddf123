//! The log server over real sockets and real processes: two `oasis logd` side by side (their own
//! ports and data directories), spoken to by a small client in this file built on the protocol's
//! frames (`oasis_log::proto`).
//!
//! Proves: what a server ACKed survives `kill -9` and a restart, and the shipper resumes where
//! the server says; a DATA at a wrong offset is refused (code 1) with the offset expected; a
//! corrupt frame closes the connection and nothing of it is written; a stream whose halves went
//! to different servers is put back together by `oasis logs cat` from both data directories
//! (and from both servers), and a missing half is named; SIGTERM exits 0; a data directory on a
//! small tmpfs that fills refuses the append (code 2), keeps nothing of it, and the server goes
//! on serving (needs root to mount; fails without, unless `OASIS_ALLOW_SKIP=1` outside CI); a
//! memory budget that 3.3 MB per connection would fill with a dozen shippers holds a thousand
//! idle ones and still takes a streaming one's bytes. Nothing asserts on timing.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use oasis_log::proto::{encode, encode_data, refuse, Decoder, Message};
use support::{listening_addr, oasis_bin, path_str, Tmpfs};

/// A running `oasis logd` on a port of its own.
struct Logd {
    addr: SocketAddr,
    log: PathBuf,
    child: Option<Child>,
}

impl Logd {
    /// Starts a logd on `data` (created if new); its log goes to `log`.
    fn start(data: &Path, log: &Path) -> Logd {
        Logd::start_with(data, log, "")
    }

    /// As [`Logd::start`], with `toml` as its configuration file.
    fn start_with(data: &Path, log: &Path, toml: &str) -> Logd {
        let stderr = std::fs::File::create(log).unwrap();
        let config = log.with_extension("toml");
        std::fs::write(&config, toml).unwrap();
        let child = Command::new(oasis_bin())
            .args([
                "logd",
                "--listen",
                "127.0.0.1:0",
                "--data-dir",
                path_str(data),
                "--config",
                path_str(&config),
            ])
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut l = Logd {
            addr: "127.0.0.1:0".parse().unwrap(),
            log: log.to_path_buf(),
            child: Some(child),
        };
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(a) = listening_addr(&l.server_log()) {
                l.addr = a;
                return l;
            }
            if let Some(st) = l.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("logd exited during start-up ({st}):\n{}", l.server_log());
            }
            assert!(
                Instant::now() < until,
                "logd did not start:\n{}",
                l.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn server_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn kill9(&mut self) {
        let mut c = self.child.take().unwrap();
        c.kill().unwrap();
        c.wait().unwrap();
    }

    /// SIGTERM; the exit status.
    fn stop(&mut self) -> std::process::ExitStatus {
        let mut c = self.child.take().unwrap();
        Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = c.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < until, "logd did not exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Logd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The test's client: frames out, frames in.
struct Client {
    s: TcpStream,
    d: Decoder,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        Client {
            s,
            d: Decoder::new(),
        }
    }

    fn send(&mut self, m: &Message) {
        let mut b = Vec::new();
        encode(m, &mut b);
        self.s.write_all(&b).unwrap();
    }

    fn data(&mut self, offset: u64, bytes: &[u8]) {
        let mut b = Vec::new();
        encode_data(offset, bytes, &mut b);
        self.s.write_all(&b).unwrap();
    }

    /// The next message; `None` once the server closed the connection.
    fn recv(&mut self) -> Option<Message> {
        let mut buf = [0u8; 65536];
        loop {
            if let Some(m) = self.d.next().unwrap() {
                return Some(m);
            }
            match self.s.read(&mut buf) {
                Ok(0) => return None,
                Ok(n) => self.d.feed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return None,
                Err(e) => panic!("reading from the server: {e}"),
            }
        }
    }

    /// HELLO; the WELCOME's (expect, durable_end). A stream still held by the shipper's
    /// previous connection (the server has not yet seen it close: REFUSE 5) is asked again.
    fn hello(addr: SocketAddr, stream: &str, oldest_unacked: u64) -> (Client, u64, u64) {
        let until = Instant::now() + Duration::from_secs(10);
        loop {
            let mut c = Client::connect(addr);
            c.send(&Message::Hello {
                version: 1,
                stream: stream.into(),
                oldest_unacked,
            });
            match c.recv() {
                Some(Message::Welcome {
                    expect,
                    durable_end,
                }) => return (c, expect, durable_end),
                Some(Message::Refuse { code, .. })
                    if code == refuse::STREAM_BUSY && Instant::now() < until =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                m => panic!("expected WELCOME, got {m:?}"),
            }
        }
    }

    fn ack(&mut self) -> u64 {
        match self.recv() {
            Some(Message::Ack { durable_end }) => durable_end,
            m => panic!("expected ACK, got {m:?}"),
        }
    }
}

fn pattern(from: u64, len: usize) -> Vec<u8> {
    (from..from + len as u64)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect()
}

/// Every byte `addr` holds of `stream` from 0, read with READ (gaps not allowed).
fn read_all(addr: SocketAddr, stream: &str) -> Vec<u8> {
    let mut c = Client::connect(addr);
    c.send(&Message::Read {
        stream: stream.into(),
        from: 0,
        follow: false,
    });
    let mut out = Vec::new();
    loop {
        match c.recv() {
            Some(Message::Chunk { offset, bytes }) => {
                assert_eq!(offset, out.len() as u64);
                out.extend(bytes);
            }
            Some(Message::End { offset }) => {
                assert_eq!(offset, out.len() as u64);
                return out;
            }
            m => panic!("reading {stream}: {m:?}"),
        }
    }
}

fn logs(args: &[&str]) -> std::process::Output {
    Command::new(oasis_bin())
        .arg("logs")
        .args(args)
        .output()
        .unwrap()
}

const FRAME: usize = 64 * 1024;

#[test]
fn what_was_acked_survives_kill_9_and_the_shipper_resumes_where_told() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("a");
    let mut a = Logd::start(&data, &dir.path().join("a.log"));
    let total = 40 * FRAME;
    let body = pattern(0, total);
    let (mut c, expect, durable) = Client::hello(a.addr, "web-1/access", 0);
    assert_eq!((expect, durable), (0, 0));
    // Everything sent at once; killed once a first part is acknowledged, the rest in flight.
    for i in 0..40 {
        c.data((i * FRAME) as u64, &body[i * FRAME..(i + 1) * FRAME]);
    }
    let mut acked = 0;
    while acked < (total / 4) as u64 {
        acked = c.ack();
    }
    a.kill9();
    drop(c);

    let mut a = Logd::start(&data, &dir.path().join("a2.log"));
    let (mut c, expect, durable) = Client::hello(a.addr, "web-1/access", acked);
    assert!(durable >= acked, "ACKed {acked}, holds {durable}");
    assert_eq!(
        expect, durable,
        "it holds up to oldest_unacked: resume at its end"
    );
    let held = read_all(a.addr, "web-1/access");
    assert_eq!(held.len() as u64, durable);
    assert!(
        held == body[..held.len()],
        "the bytes held after the restart differ"
    );
    // The shipper sends the rest from where the server said.
    let mut at = expect as usize;
    while at < total {
        let end = (at + FRAME).min(total);
        c.data(at as u64, &body[at..end]);
        at = end;
    }
    // Everything may have been durable before the kill (then WELCOME said so, and no ACK follows).
    let mut acked = durable;
    while acked < total as u64 {
        acked = c.ack();
    }
    assert!(read_all(a.addr, "web-1/access") == body);
    assert!(a.stop().success(), "{}", a.server_log());
}

#[test]
fn a_wrong_offset_is_refused_with_the_expected_one_and_a_corrupt_frame_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut a = Logd::start(&dir.path().join("a"), &dir.path().join("a.log"));
    let (mut c, _, _) = Client::hello(a.addr, "s", 0);
    c.data(0, &pattern(0, 1000));
    assert_eq!(c.ack(), 1000);
    c.data(5000, &pattern(5000, 10));
    match c.recv() {
        Some(Message::Refuse { code, expect, .. }) => {
            assert_eq!((code, expect), (refuse::UNEXPECTED_OFFSET, 1000))
        }
        m => panic!("expected REFUSE 1, got {m:?}"),
    }
    // The connection stays: the shipper resumes at the expected offset.
    c.data(1000, &pattern(1000, 24));
    assert_eq!(c.ack(), 1024);
    drop(c);

    // A DATA with one bit flipped: the connection closes, nothing of it is kept.
    let (mut c, expect, _) = Client::hello(a.addr, "s", 0);
    assert_eq!(expect, 1024);
    let mut frame = Vec::new();
    encode_data(1024, &pattern(1024, 3000), &mut frame);
    frame[2000] ^= 0x10;
    c.s.write_all(&frame).unwrap();
    assert_eq!(c.recv(), None, "the server closes on a corrupt frame");
    let (_c, expect, durable) = Client::hello(a.addr, "s", 0);
    assert_eq!((expect, durable), (1024, 1024));
    assert!(read_all(a.addr, "s") == pattern(0, 1024));
    assert!(a.stop().success());
}

#[test]
fn halves_on_two_servers_make_one_stream_and_a_missing_half_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let (da, db) = (dir.path().join("a"), dir.path().join("b"));
    let mut a = Logd::start(&da, &dir.path().join("a.log"));
    let mut b = Logd::start(&db, &dir.path().join("b.log"));
    assert_ne!(a.addr, b.addr);
    let half = 1 << 20;
    let body = pattern(0, 2 * half);
    // The first half to A; A goes quiet, the shipper moves to B with what A acknowledged.
    let (mut c, _, _) = Client::hello(a.addr, "app/events", 0);
    for at in (0..half).step_by(FRAME) {
        c.data(at as u64, &body[at..at + FRAME]);
    }
    while c.ack() < half as u64 {}
    let (mut c, expect, durable) = Client::hello(b.addr, "app/events", half as u64);
    assert_eq!(
        (expect, durable),
        (half as u64, 0),
        "B starts a segment there"
    );
    for at in (half..2 * half).step_by(FRAME) {
        c.data(at as u64, &body[at..at + FRAME]);
    }
    while c.ack() < 2 * half as u64 {}
    drop(c);

    let servers = format!("{},{}", a.addr, b.addr);
    let out = logs(&["cat", "app/events", "--servers", &servers]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == body, "cat over both servers");
    let out = logs(&["ls", "--servers", &servers]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&format!("app/events\t{}\t0\t{half}\t{half}", a.addr)),
        "{listing}"
    );
    assert!(
        listing.contains(&format!(
            "app/events\t{}\t{half}\t{}\t{half}",
            b.addr,
            2 * half
        )),
        "{listing}"
    );

    assert!(a.stop().success(), "{}", a.server_log());
    assert!(b.stop().success(), "{}", b.server_log());
    let out = logs(&[
        "cat",
        "app/events",
        "--data-dir",
        path_str(&da),
        "--data-dir",
        path_str(&db),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout == body, "cat over both data directories");
    let out = logs(&["ls", "app/", "--data-dir", path_str(&db)]);
    let listing = String::from_utf8_lossy(&out.stdout);
    assert!(
        listing.contains(&format!(
            "app/events\t{}\t{half}\t{}\t{half}",
            db.display(),
            2 * half
        )),
        "{listing}"
    );
    // B alone: the first half is missing, and named.
    let out = logs(&["cat", "app/events", "--data-dir", path_str(&db)]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("bytes 0 to {half}")), "{err}");
    assert!(out.stdout.is_empty());
}

#[test]
fn a_full_disk_refuses_the_append_keeps_nothing_of_it_and_serves_on() {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("mnt");
    let Some(_mount) = Tmpfs::mount(&mnt, "4m") else {
        return;
    };
    let data = mnt.join("logd");
    let mut a = Logd::start(&data, &dir.path().join("a.log"));
    let (mut c, _, _) = Client::hello(a.addr, "big", 0);
    // Frames one after another, each acknowledged, until the disk refuses one.
    let mut acked = 0u64;
    let refused = loop {
        assert!(acked < 8 << 20, "a 4 MB file system took {acked} bytes");
        c.data(acked, &pattern(acked, 256 * 1024));
        match c.recv() {
            Some(Message::Ack { durable_end }) => acked = durable_end,
            Some(Message::Refuse { code, reason, .. }) => break (code, reason),
            m => panic!("{m:?}"),
        }
    };
    assert_eq!(refused.0, refuse::DISK_FULL, "{}", refused.1);
    assert_eq!(c.recv(), None, "code 2 closes the connection");
    // The server serves on: what was acknowledged, all of it, and nothing of the refused frame.
    assert!(read_all(a.addr, "big") == pattern(0, acked as usize));
    let (_c, expect, durable) = Client::hello(a.addr, "big", 0);
    assert_eq!((expect, durable), (acked, acked));
    drop(_c);
    assert!(a.stop().success(), "{}", a.server_log());
    let out = logs(&["cat", "big", "--data-dir", path_str(&data)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len() as u64, acked);
    // A restart finds no torn tail: the refused append was cut off the file.
    let a = Logd::start(&data, &dir.path().join("a2.log"));
    assert!(!a.server_log().contains("cut"), "{}", a.server_log());
}

#[test]
fn tail_follows_a_stream_as_the_shipper_moves_between_servers() {
    let dir = tempfile::tempdir().unwrap();
    let a = Logd::start(&dir.path().join("a"), &dir.path().join("a.log"));
    let b = Logd::start(&dir.path().join("b"), &dir.path().join("b.log"));
    let body = pattern(0, 3000);
    let (mut c, _, _) = Client::hello(a.addr, "t", 0);
    c.data(0, &body[..1000]);
    assert_eq!(c.ack(), 1000);
    let servers = format!("{},{}", a.addr, b.addr);
    let mut tail = Command::new(oasis_bin())
        .args([
            "logs",
            "tail",
            "-f",
            "t",
            "--bytes",
            "400",
            "--servers",
            &servers,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdout = tail.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stdout.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                return;
            }
        }
    });
    let mut got = Vec::new();
    let read_until = |len: usize, got: &mut Vec<u8>| {
        while got.len() < len {
            got.extend(
                rx.recv_timeout(Duration::from_secs(20))
                    .expect("tail wrote nothing more"),
            );
        }
    };
    read_until(400, &mut got);
    assert!(got == body[600..1000]);
    // The shipper moves to B; tail follows there, and A's next bytes too.
    drop(c);
    let (mut c, expect, _) = Client::hello(b.addr, "t", 1000);
    assert_eq!(expect, 1000);
    c.data(1000, &body[1000..2000]);
    assert_eq!(c.ack(), 2000);
    read_until(1400, &mut got);
    drop(c);
    let (mut c, expect, _) = Client::hello(a.addr, "t", 2000);
    assert_eq!(expect, 2000);
    c.data(2000, &body[2000..3000]);
    assert_eq!(c.ack(), 3000);
    read_until(2400, &mut got);
    assert!(got == body[600..], "tail wrote each byte once, in order");
    tail.kill().unwrap();
    tail.wait().unwrap();
}

#[test]
fn a_small_memory_budget_holds_a_thousand_idle_shippers_and_streams_for_another() {
    let dir = tempfile::tempdir().unwrap();
    // The engine takes 48 MiB of it on two workers (a 16 MiB buffer pool, 16 MiB of receive
    // buffers each); about 16 MiB is left for connections: at 4 KiB each while idle, a thousand fit.
    let mut a = Logd::start_with(
        &dir.path().join("a"),
        &dir.path().join("a.log"),
        "[resources]\nmemory_bytes = 67108864\n[logd]\nconnections_max = 2000\nstreams_max = 2000\n",
    );
    let idle: Vec<Client> = (0..1000)
        .map(|i| Client::hello(a.addr, &format!("idle/{i}"), 0).0)
        .collect();
    let (mut c, _, _) = Client::hello(a.addr, "busy", 0);
    let body = pattern(0, 64 * FRAME);
    for at in (0..body.len()).step_by(FRAME) {
        c.data(at as u64, &body[at..at + FRAME]);
    }
    while c.ack() < body.len() as u64 {}
    assert!(read_all(a.addr, "busy") == body);
    drop(idle);
    drop(c);
    assert!(a.stop().success(), "{}", a.server_log());
}
