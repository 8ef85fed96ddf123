//! Proves `Transmit::Defer`: a session's result completed by another thread reaches
//! `on_job_done` over a real socket, input keeps being read while the result is awaited, and a
//! completer dropped without a result still answers (so the connection can close).
//!
//! A toy line protocol: `WAIT\n` defers; the closure hands the completer to a thread of the
//! test's own, which completes it only when the session, reading on meanwhile, receives `GO <n>\n`
//! and passes `n` on (the result is `n * 2`, answered `DONE <2n>\n`). `DROP\n` defers with a
//! closure that drops its completer (answered `REJECTED\n`). `PARK\n` defers with a closure that
//! hands the completer to the test itself.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oasis_engine::{
    Completer, ConnInfo, Engine, JobRejected, JobResult, ResourceManager, Service, Session,
    Transmit,
};

mod common;

/// Where `PARK` sends its completer (the test holds the receiver).
type Park = Arc<Mutex<SyncSender<Completer>>>;

struct Toy {
    park: Park,
}

struct ToySession {
    park: Park,
    /// The deferred closure to hand to the engine at the next poll.
    defer: Option<oasis_engine::Deferred>,
    /// Where `GO <n>` sends `n` (to the thread holding the completer).
    go: Option<SyncSender<u64>>,
    reply: Option<Vec<u8>>,
    closed: bool,
}

impl Service for Toy {
    fn open(&self, _info: ConnInfo, _now: Instant) -> Box<dyn Session> {
        Box::new(ToySession {
            park: Arc::clone(&self.park),
            defer: None,
            go: None,
            reply: None,
            closed: false,
        })
    }
    fn refusal(&self) -> &[u8] {
        b"BUSY\n"
    }
}

impl Session for ToySession {
    fn on_input(&mut self, input: &[u8], _now: Instant) -> usize {
        let Some(nl) = input.iter().position(|&b| b == b'\n') else {
            return 0;
        };
        let line = std::str::from_utf8(&input[..nl]).unwrap();
        match line {
            "WAIT" => {
                let (tx, rx) = sync_channel::<u64>(1);
                self.go = Some(tx);
                self.defer = Some(Box::new(move |completer: Completer| {
                    std::thread::spawn(move || {
                        let n = rx.recv().unwrap();
                        completer.complete(Box::new(n * 2));
                    });
                }));
            }
            "DROP" => self.defer = Some(Box::new(drop)),
            "PARK" => {
                let park = Arc::clone(&self.park);
                self.defer = Some(Box::new(move |c| park.lock().unwrap().send(c).unwrap()));
            }
            go => {
                let n: u64 = go.strip_prefix("GO ").unwrap().parse().unwrap();
                self.go.take().expect("GO after WAIT").send(n).unwrap();
            }
        }
        nl + 1
    }
    fn on_peer_closed(&mut self, _now: Instant) {
        self.closed = true;
    }
    fn poll_transmit(&mut self, _now: Instant) -> Transmit {
        if let Some(d) = self.defer.take() {
            return Transmit::Defer(d);
        }
        if let Some(r) = self.reply.take() {
            return Transmit::Bytes(r);
        }
        if self.closed {
            return Transmit::Close;
        }
        Transmit::Idle
    }
    fn on_sent(&mut self, _r: std::io::Result<u64>, _b: Option<Vec<u8>>, _now: Instant) {}
    fn on_job_done(&mut self, result: JobResult, _now: Instant) {
        self.reply = Some(match result.downcast::<u64>() {
            Ok(n) => format!("DONE {n}\n").into_bytes(),
            Err(other) => {
                assert!(other.is::<JobRejected>());
                b"REJECTED\n".to_vec()
            }
        });
    }
    fn deadline(&self) -> Option<Instant> {
        None
    }
    fn on_deadline(&mut self, _now: Instant) {}
    fn on_shutdown(&mut self, _now: Instant) {
        self.closed = true;
    }
    fn wants_input(&self) -> bool {
        true
    }
    fn on_close(&mut self, _now: Instant) {}
}

fn start() -> (Engine, Arc<ResourceManager>, Receiver<Completer>) {
    let (park, parked) = sync_channel(8);
    let (engine, rm) = common::small_engine(Arc::new(Toy {
        park: Arc::new(Mutex::new(park)),
    }));
    (engine, rm, parked)
}

fn wait_for_no_connections(rm: &ResourceManager) {
    let until = Instant::now() + Duration::from_secs(10);
    while rm.used(oasis_engine::Resource::Connections) != 0 {
        assert!(Instant::now() < until, "connections were not released");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn line(r: &mut BufReader<TcpStream>) -> String {
    let mut l = String::new();
    r.read_line(&mut l).unwrap();
    l
}

#[test]
fn another_thread_completes_while_input_is_read_and_a_dropped_completer_answers() {
    let (engine, rm, _parked) = start();
    let addr = engine.local_addrs()[0];
    let done = Arc::new(Mutex::new(Vec::new()));
    let clients: Vec<_> = (0..8u64)
        .map(|i| {
            let done = Arc::clone(&done);
            std::thread::spawn(move || {
                let s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut w = s;
                for round in 0..3 {
                    // GO arrives while the defer is in flight: only input read meanwhile
                    // completes it.
                    w.write_all(b"WAIT\n").unwrap();
                    w.write_all(format!("GO {}\n", i * 10 + round).as_bytes())
                        .unwrap();
                    assert_eq!(line(&mut r), format!("DONE {}\n", 2 * (i * 10 + round)));
                }
                w.write_all(b"DROP\n").unwrap();
                assert_eq!(line(&mut r), "REJECTED\n");
                done.lock().unwrap().push(i);
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    assert_eq!(done.lock().unwrap().len(), 8);
    wait_for_no_connections(&rm);
    engine.shutdown(Duration::from_secs(5));
    engine.join();
}

#[test]
fn a_connection_closed_while_deferred_closes_once_the_result_is_in() {
    let (engine, rm, parked) = start();
    let addr = engine.local_addrs()[0];
    let mut s = TcpStream::connect(addr).unwrap();
    s.write_all(b"PARK\n").unwrap();
    let completer = parked.recv_timeout(Duration::from_secs(10)).unwrap();
    drop(s);
    // The client is gone, but the connection waits for its deferred result before closing
    // (no completion for a freed connection, no leaked one).
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(rm.used(oasis_engine::Resource::Connections), 1);
    completer.complete(Box::new(7u64));
    wait_for_no_connections(&rm);
    engine.shutdown(Duration::from_secs(5));
    engine.join();
}
