//! Proves the io_uring datagram loop (`oasis_engine::datagram`) over real UDP sockets on loopback.
//!
//! Every test runs three times: with multishot receives into provided buffers, the same with a
//! batch wait (datagrams gather for 2 ms once traffic flows), and with single receives re-armed
//! (the fallback when the kernel refuses multishot). They check that every
//! datagram arrives once with its bytes and its sender's address (IPv4 and IPv6, several
//! senders, lengths from 0 to the buffer's payload room); that longer datagrams are counted as
//! truncated and never handed over; that when more datagrams wait than there are buffers (two
//! buffers, the handler held on the first datagram while hundreds are sent into a small socket
//! buffer) the counts add up exactly: handed over + dropped by the kernel = sent, with the
//! multishot receive re-armed after `ENOBUFS`; and that stopping joins the loop, idle or under a
//! flood, and that dropping it does too.

use std::collections::HashSet;
use std::net::{SocketAddr, UdpSocket};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use oasis_engine::datagram::{DatagramConfig, DatagramCounts, DatagramHandler, DatagramLoop};

/// (multishot, batch wait in ms)
const MODES: [(bool, u64); 3] = [(true, 0), (true, 2), (false, 0)];

fn config((multishot, wait_ms): (bool, u64)) -> DatagramConfig {
    DatagramConfig {
        multishot,
        thread_name: "test-dgram".into(),
        batch_wait: Duration::from_millis(wait_ms),
        ..DatagramConfig::default()
    }
}

/// What a handler saw, shared with the test.
#[derive(Default)]
struct Seen {
    datagrams: Vec<(Vec<u8>, SocketAddr)>,
    truncated: Vec<(Option<SocketAddr>, usize)>,
    batches: u64,
}

struct Recorder(Arc<Mutex<Seen>>);

impl DatagramHandler for Recorder {
    fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        self.0
            .lock()
            .unwrap()
            .datagrams
            .push((bytes.to_vec(), from));
    }
    fn truncated(&mut self, from: Option<SocketAddr>, len: usize) {
        self.0.lock().unwrap().truncated.push((from, len));
    }
    fn batch_done(&mut self, counts: &DatagramCounts) {
        assert!(counts.received >= self.0.lock().unwrap().datagrams.len() as u64);
        self.0.lock().unwrap().batches += 1;
    }
}

/// Waits until `done` holds for what was seen; panics with `what` after 20 s.
fn wait_for(seen: &Mutex<Seen>, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(&seen.lock().unwrap()) {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A datagram's bytes: sender, sequence number, then a pattern up to `len` bytes in all.
fn payload(sender: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut b = vec![sender];
    b.extend_from_slice(&seq.to_be_bytes());
    b.extend((0..len.saturating_sub(5)).map(|i| (i as u32 ^ seq) as u8));
    b.truncate(len);
    b
}

fn every_datagram_arrives_once(local: &str, mode: (bool, u64)) {
    let cfg = config(mode);
    let max = cfg.payload_bytes_max();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let rx = DatagramLoop::start(
        UdpSocket::bind(local).unwrap(),
        cfg,
        Recorder(Arc::clone(&seen)),
    )
    .unwrap();
    assert_eq!(rx.counts().multishot, mode.0);
    let senders: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind(local).unwrap()).collect();
    const PER_SENDER: u32 = 700;
    const WINDOW: usize = 64; // sent and not yet seen: well within the socket's buffer
    let mut sent = Vec::new();
    for seq in 0..PER_SENDER {
        for (i, s) in senders.iter().enumerate() {
            // Lengths cycle through 5 (the smallest with a sequence), odd sizes and the maximum.
            let len = match seq % 5 {
                0 => max,
                1 => 5,
                _ => 5 + (seq as usize * 37) % (max - 5),
            };
            let bytes = payload(i as u8, seq, len);
            s.send_to(&bytes, rx.local_addr()).unwrap();
            sent.push((bytes, s.local_addr().unwrap()));
            let n = sent.len();
            wait_for(&seen, "the window to drain", |s| {
                s.datagrams.len() + WINDOW > n
            });
        }
    }
    // One empty datagram too.
    senders[0].send_to(&[], rx.local_addr()).unwrap();
    sent.push((Vec::new(), senders[0].local_addr().unwrap()));
    wait_for(&seen, "every datagram", |s| s.datagrams.len() >= sent.len());
    let counts = rx.stop();
    let seen = seen.lock().unwrap();
    let got: HashSet<&(Vec<u8>, SocketAddr)> = seen.datagrams.iter().collect();
    assert_eq!(seen.datagrams.len(), sent.len(), "none twice");
    for d in &sent {
        assert!(got.contains(d), "{} bytes from {} missing", d.0.len(), d.1);
    }
    assert_eq!(counts.received, sent.len() as u64);
    assert_eq!(
        (counts.truncated, counts.errors, counts.kernel_drops),
        (0, 0, 0)
    );
    assert!(seen.truncated.is_empty());
    assert!(seen.batches >= 1 && seen.batches <= counts.received + counts.rearms + 2);
}

#[test]
fn every_datagram_arrives_once_with_its_source_ipv4() {
    for mode in MODES {
        every_datagram_arrives_once("127.0.0.1:0", mode);
    }
}

#[test]
fn every_datagram_arrives_once_with_its_source_ipv6() {
    if UdpSocket::bind("[::1]:0").is_err() {
        panic!("no IPv6 loopback here: this test needs ::1");
    }
    for mode in MODES {
        every_datagram_arrives_once("[::1]:0", mode);
    }
}

#[test]
fn oversized_datagrams_are_counted_and_dropped() {
    for mode in MODES {
        let cfg = config(mode);
        let max = cfg.payload_bytes_max();
        let seen = Arc::new(Mutex::new(Seen::default()));
        let rx = DatagramLoop::start(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            cfg,
            Recorder(Arc::clone(&seen)),
        )
        .unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        let me = tx.local_addr().unwrap();
        tx.send_to(&payload(1, 1, max + 1), rx.local_addr())
            .unwrap();
        tx.send_to(&payload(1, 2, max), rx.local_addr()).unwrap();
        tx.send_to(&payload(1, 3, 9000), rx.local_addr()).unwrap();
        tx.send_to(&payload(1, 4, 10), rx.local_addr()).unwrap();
        wait_for(&seen, "two whole and two truncated", |s| {
            s.datagrams.len() + s.truncated.len() >= 4
        });
        let counts = rx.stop();
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.datagrams,
            vec![(payload(1, 2, max), me), (payload(1, 4, 10), me)],
            "mode {mode:?}: only the datagrams that fit are handed over"
        );
        assert_eq!(counts.truncated, 2, "mode {mode:?}");
        assert_eq!(counts.received, 2);
        assert_eq!(
            seen.truncated,
            vec![(Some(me), max + 1), (Some(me), 9000)],
            "the handler is told each truncated datagram's source and length"
        );
    }
}

/// Holds the loop's thread on the first datagram until the test says go.
struct Gate {
    first: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>,
    seen: Arc<Mutex<Seen>>,
}

impl DatagramHandler for Gate {
    fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        if let Some((arrived, go)) = self.first.take() {
            arrived.send(()).unwrap();
            go.recv().unwrap();
        }
        self.seen
            .lock()
            .unwrap()
            .datagrams
            .push((bytes.to_vec(), from));
    }
}

#[test]
fn more_datagrams_than_buffers_are_received_or_counted_as_dropped() {
    for mode in MODES {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        // A small socket buffer (the kernel doubles it): the kernel drops much of the burst.
        socket2::SockRef::from(&socket)
            .set_recv_buffer_size(16 * 1024)
            .unwrap();
        let cfg = DatagramConfig {
            buffers: 2,
            ..config(mode)
        };
        let seen = Arc::new(Mutex::new(Seen::default()));
        let (arrived_tx, arrived) = mpsc::channel();
        let (go, go_rx) = mpsc::channel();
        let rx = DatagramLoop::start(
            socket,
            cfg,
            Gate {
                first: Some((arrived_tx, go_rx)),
                seen: Arc::clone(&seen),
            },
        )
        .unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        const BURST: u32 = 500;
        tx.send_to(&payload(0, 0, 100), rx.local_addr()).unwrap();
        arrived.recv().unwrap();
        for seq in 1..BURST {
            tx.send_to(&payload(0, seq, 100), rx.local_addr()).unwrap();
        }
        go.send(()).unwrap();
        // The kernel reports its drop count with each datagram it queued afterwards: send
        // markers until one arrives; the ones before it were received or dropped by then.
        let mut markers = 0u32;
        loop {
            markers += 1;
            tx.send_to(&payload(9, markers, 20), rx.local_addr())
                .unwrap();
            let deadline = Instant::now() + Duration::from_secs(1);
            let mine = payload(9, markers, 20);
            while Instant::now() < deadline
                && !seen.lock().unwrap().datagrams.iter().any(|d| d.0 == mine)
            {
                std::thread::sleep(Duration::from_millis(5));
            }
            if seen.lock().unwrap().datagrams.iter().any(|d| d.0 == mine) {
                break;
            }
            assert!(markers < 30, "no marker came through");
        }
        let counts = rx.stop();
        let seen = seen.lock().unwrap();
        let sent = u64::from(BURST + markers);
        assert_eq!(counts.received, seen.datagrams.len() as u64);
        assert_eq!(
            counts.received + counts.kernel_drops,
            sent,
            "mode {mode:?}: handed over + dropped by the kernel = sent ({counts:?})"
        );
        assert!(
            counts.kernel_drops > 0,
            "the burst overflowed the socket buffer"
        );
        assert_eq!((counts.truncated, counts.errors), (0, 0));
        let unique: HashSet<&Vec<u8>> = seen.datagrams.iter().map(|d| &d.0).collect();
        assert_eq!(unique.len(), seen.datagrams.len(), "none twice");
        if mode.0 {
            assert!(
                counts.no_buffers > 0 && counts.rearms >= counts.no_buffers,
                "the two buffers ran out and the receive was armed again: {counts:?}"
            );
        }
    }
}

#[test]
fn stop_joins_idle_and_under_a_flood_and_drop_stops_too() {
    for mode in MODES {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let idle = DatagramLoop::start(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            config(mode),
            Recorder(Arc::clone(&seen)),
        )
        .unwrap();
        assert_eq!(idle.stop().received, 0);

        let busy = DatagramLoop::start(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            config(mode),
            |_: &[u8], _: SocketAddr| {},
        )
        .unwrap();
        let to = busy.local_addr();
        let flooding = Arc::new(std::sync::atomic::AtomicBool::new(true));
        let flood = {
            let flooding = Arc::clone(&flooding);
            std::thread::spawn(move || {
                let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
                let mut n = 0u64;
                while flooding.load(std::sync::atomic::Ordering::Relaxed) {
                    let _ = tx.send_to(&[7; 64], to);
                    n += 1;
                }
                n
            })
        };
        while busy.counts().received < 1000 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let counts = busy.stop();
        flooding.store(false, std::sync::atomic::Ordering::Relaxed);
        let sent = flood.join().unwrap();
        assert!(counts.received >= 1000 && counts.received <= sent);

        let dropped = DatagramLoop::start(
            UdpSocket::bind("127.0.0.1:0").unwrap(),
            config(mode),
            |_: &[u8], _: SocketAddr| {},
        )
        .unwrap();
        drop(dropped); // joins, or the test would hang
    }
}

#[test]
fn a_bad_config_is_refused_with_the_reason() {
    let cfg = DatagramConfig {
        buffers: 100,
        ..DatagramConfig::default()
    };
    let err = DatagramLoop::start(
        UdpSocket::bind("127.0.0.1:0").unwrap(),
        cfg,
        |_: &[u8], _: SocketAddr| {},
    )
    .err()
    .expect("100 buffers is not a power of two");
    assert!(err.to_string().contains("power of two"), "{err}");
}

#[test]
fn the_socket_buffer_asked_for_is_set() {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let same = socket.try_clone().unwrap();
    let before = socket2::SockRef::from(&same).recv_buffer_size().unwrap();
    let cfg = DatagramConfig {
        socket_recv_bytes: before + 64 * 1024,
        ..DatagramConfig::default()
    };
    let rx = DatagramLoop::start(socket, cfg, |_: &[u8], _: SocketAddr| {}).unwrap();
    // The kernel doubles what is asked (for its bookkeeping), up to net.core.rmem_max.
    let after = socket2::SockRef::from(&same).recv_buffer_size().unwrap();
    assert!(after > before, "SO_RCVBUF {before} -> {after}");
    rx.stop();
}
