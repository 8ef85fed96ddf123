//! A worker thread that panics ends the process (`WorkerGone` in `runtime.rs`), rather than
//! leaving a server without that worker whose shutdown then waits for it forever.
//!
//! The test runs itself again as a child process (the same test, with `OASIS_PANIC_CHILD` set):
//! the child starts an engine whose sessions panic on their first input and says where it
//! listens; the parent sends one byte and expects the child to die of SIGABRT, having said why.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oasis_engine::{ConnInfo, JobResult, Service, Session, Transmit};

mod common;

const CHILD: &str = "OASIS_PANIC_CHILD";
const TEST: &str = "a_worker_that_panics_aborts_the_process";

struct Panicky;

struct PanickySession;

impl Service for Panicky {
    fn open(&self, _info: ConnInfo, _now: Instant) -> Box<dyn Session> {
        Box::new(PanickySession)
    }
    fn refusal(&self) -> &[u8] {
        b"BUSY\n"
    }
}

impl Session for PanickySession {
    fn on_input(&mut self, _input: &[u8], _now: Instant) -> usize {
        panic!("a session bug");
    }
    fn on_peer_closed(&mut self, _now: Instant) {}
    fn poll_transmit(&mut self, _now: Instant) -> Transmit {
        Transmit::Idle
    }
    fn on_sent(&mut self, _r: std::io::Result<u64>, _b: Option<Vec<u8>>, _now: Instant) {}
    fn on_job_done(&mut self, _result: JobResult, _now: Instant) {}
    fn deadline(&self) -> Option<Instant> {
        None
    }
    fn on_deadline(&mut self, _now: Instant) {}
    fn on_shutdown(&mut self, _now: Instant) {}
    fn wants_input(&self) -> bool {
        true
    }
    fn on_close(&mut self, _now: Instant) {}
}

/// The child: an engine that serves until the process ends.
fn serve() -> ! {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();
    let (engine, _rm) = common::small_engine(Arc::new(Panicky));
    println!("ADDR {}", engine.local_addrs()[0]);
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// The child, killed if the test fails before it has ended.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn a_worker_that_panics_aborts_the_process() {
    if std::env::var_os(CHILD).is_some() {
        serve();
    }
    let mut child = KillOnDrop(
        Command::new(std::env::current_exe().unwrap())
            .args([TEST, "--exact", "--nocapture", "--test-threads", "1"])
            .env(CHILD, "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run the test binary again"),
    );
    let child = &mut child.0;
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let addr = loop {
        let mut l = String::new();
        assert!(
            out.read_line(&mut l).unwrap() > 0,
            "the child ended before it listened"
        );
        // The test harness's "test ... " may come first on the line.
        if let Some(at) = l.find("ADDR ") {
            break l[at + 5..].trim().to_string();
        }
    };
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(b"x").unwrap();

    let until = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < until,
            "the server went on after its worker panicked"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}: {err}");
    assert!(err.contains("a session bug"), "{err}");
    assert!(err.contains("panicked; the server aborts"), "{err}");
}
