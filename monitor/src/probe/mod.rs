//! Round trips between nodes, the node side: a [`Prober`] thread (`oasis-mon-probe`) waits on
//! the status sockets (the ones [`crate::Sender`] sends from, so a monitor sees where to reach
//! them), takes peer lists from the configured monitors, sends each listed peer a small echo
//! every interval, answers other nodes' echoes, and keeps the latest round trip per peer for
//! the next status datagram. With the monitor's throughput figures this gives the fleet's
//! delay and bandwidth matrix.
//!
//! Bounds: at most [`PEERS_MAX`] peers; a peer list is taken only from a configured monitor's
//! address, signed with the key when there is one, and newer than the last; echoes are exactly
//! 12 bytes (anything else is dropped) and answered at most [`ECHO_REPLIES_PER_SEC`] a second;
//! at most [`RECV_BURST`] datagrams are read per socket per wake. It never blocks the process's
//! other threads: they only copy the latest figures under a short lock.

pub mod wire;

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};

use crate::status::{Rtt, PEERS_MAX};
use wire::{decode_echo, decode_peers, encode_echo, Echo, Peer, PEERS_BYTES_MAX, PEERS_MAGIC};

/// Echo requests answered per second at most; more are dropped.
pub const ECHO_REPLIES_PER_SEC: u32 = 512;
/// Datagrams read from one socket per wake before the loop looks at its clock again.
pub const RECV_BURST: usize = 64;
/// Longest wait in `poll`, so the stop flag is seen.
const WAKE_MAX: Duration = Duration::from_millis(200);
/// A round trip older than this many intervals is not reported.
const RTT_FRESH_INTERVALS: u32 = 3;

/// The probing thread of one process.
pub struct Prober {
    latest: Arc<Mutex<Vec<Rtt>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Prober {
    /// Starts the thread on `sockets` (clones of the status sockets), taking peer lists from
    /// `monitors` only (checked with `key` when given) and probing every `interval`.
    pub fn start(
        sockets: Vec<UdpSocket>,
        monitors: Vec<SocketAddr>,
        key: Option<Vec<u8>>,
        interval: Duration,
    ) -> io::Result<Prober> {
        let latest = Arc::new(Mutex::new(Vec::with_capacity(PEERS_MAX)));
        let stop = Arc::new(AtomicBool::new(false));
        let v4 = sockets
            .iter()
            .map(|s| s.local_addr().map(|a| a.is_ipv4()))
            .collect::<io::Result<Vec<bool>>>()?;
        let mut state = Probing {
            sockets,
            v4,
            monitors,
            key,
            interval,
            peers: Vec::with_capacity(PEERS_MAX),
            incoming: Vec::with_capacity(PEERS_MAX),
            last_list_seq: 0,
            replies_left: ECHO_REPLIES_PER_SEC,
            window_ends: Instant::now(),
            nonces: RandomState::new(),
            nonce_count: 0,
            latest: Arc::clone(&latest),
        };
        let thread = {
            let stop = Arc::clone(&stop);
            std::thread::Builder::new()
                .name("oasis-mon-probe".into())
                .spawn(move || state.run(&stop))?
        };
        Ok(Prober {
            latest,
            stop,
            thread: Some(thread),
        })
    }

    /// Copies the fresh round trips into `out` (cleared first; no allocation once it has room).
    pub fn fill(&self, out: &mut Vec<Rtt>) {
        out.clear();
        out.extend_from_slice(&self.latest.lock().unwrap_or_else(|e| e.into_inner()));
    }
}

impl Drop for Prober {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One peer being probed.
struct PeerProbe {
    peer: Peer,
    /// The nonce of the request in flight and when it left.
    in_flight: Option<(u64, Instant)>,
    /// The latest round trip and when it was measured.
    measured: Option<(u32, Instant)>,
}

/// The thread's state.
struct Probing {
    sockets: Vec<UdpSocket>,
    /// Whether each socket is IPv4 (probes go out on the peer's family).
    v4: Vec<bool>,
    monitors: Vec<SocketAddr>,
    key: Option<Vec<u8>>,
    interval: Duration,
    peers: Vec<PeerProbe>,
    /// A peer list being decoded (kept for its capacity).
    incoming: Vec<Peer>,
    last_list_seq: u64,
    replies_left: u32,
    window_ends: Instant,
    nonces: RandomState,
    nonce_count: u64,
    latest: Arc<Mutex<Vec<Rtt>>>,
}

impl Probing {
    fn run(&mut self, stop: &AtomicBool) {
        let mut buf = vec![0u8; PEERS_BYTES_MAX + 1];
        let mut next_round = Instant::now();
        while !stop.load(Ordering::Acquire) {
            let wait = next_round
                .saturating_duration_since(Instant::now())
                .min(WAKE_MAX);
            let timeout = Timespec {
                tv_sec: 0,
                tv_nsec: i64::from(wait.subsec_nanos()),
            };
            let mut fds: Vec<PollFd<'_>> = self
                .sockets
                .iter()
                .map(|s| PollFd::new(s, PollFlags::IN))
                .collect();
            let _ = poll(&mut fds, Some(&timeout));
            drop(fds);
            for i in 0..self.sockets.len() {
                for _ in 0..RECV_BURST {
                    let Ok((n, from)) = self.sockets[i].recv_from(&mut buf) else {
                        break;
                    };
                    self.take(i, &buf[..n], from);
                }
            }
            let now = Instant::now();
            if now >= next_round {
                self.round(now);
                next_round = now + self.interval;
            }
        }
    }

    /// Handles one datagram that arrived on socket `i`.
    fn take(&mut self, i: usize, bytes: &[u8], from: SocketAddr) {
        let now = Instant::now();
        match decode_echo(bytes) {
            Some(Echo::Request(nonce)) => {
                if now >= self.window_ends {
                    self.replies_left = ECHO_REPLIES_PER_SEC;
                    self.window_ends = now + Duration::from_secs(1);
                }
                if self.replies_left > 0 {
                    self.replies_left -= 1;
                    let _ = self.sockets[i].send_to(&encode_echo(Echo::Reply(nonce)), from);
                }
            }
            Some(Echo::Reply(nonce)) => {
                let probe = self
                    .peers
                    .iter_mut()
                    .find(|p| p.peer.addr == from && p.in_flight.is_some_and(|(n, _)| n == nonce));
                if let Some(p) = probe {
                    if let Some((_, sent)) = p.in_flight.take() {
                        let us = now.saturating_duration_since(sent).as_micros();
                        p.measured = Some((us.clamp(1, u128::from(u32::MAX)) as u32, now));
                        self.publish(now);
                    }
                }
            }
            None if bytes.starts_with(&PEERS_MAGIC) && self.monitors.contains(&from) => {
                let mut incoming = std::mem::take(&mut self.incoming);
                if let Ok(seq) = decode_peers(bytes, self.key.as_deref(), &mut incoming) {
                    if seq > self.last_list_seq {
                        self.last_list_seq = seq;
                        self.replace_peers(&incoming);
                        self.publish(now);
                    }
                }
                self.incoming = incoming;
            }
            None => {}
        }
    }

    /// Puts `list` in force, keeping what was measured of peers that stay.
    fn replace_peers(&mut self, list: &[Peer]) {
        let mut kept: Vec<PeerProbe> = Vec::with_capacity(PEERS_MAX);
        for peer in list.iter().take(PEERS_MAX) {
            let old = self.peers.iter().position(|p| p.peer == *peer);
            kept.push(match old {
                Some(i) => self.peers.swap_remove(i),
                None => PeerProbe {
                    peer: *peer,
                    in_flight: None,
                    measured: None,
                },
            });
        }
        self.peers = kept;
    }

    /// Sends every peer a new request (one left unanswered is forgotten).
    fn round(&mut self, now: Instant) {
        for i in 0..self.peers.len() {
            self.nonce_count += 1;
            let mut h = self.nonces.build_hasher();
            h.write_u64(self.nonce_count);
            let nonce = h.finish();
            let addr = self.peers[i].peer.addr;
            let family = self.v4.iter().position(|&v4| v4 == addr.is_ipv4());
            if let Some(s) = family.map(|f| &self.sockets[f]) {
                if s.send_to(&encode_echo(Echo::Request(nonce)), addr).is_ok() {
                    self.peers[i].in_flight = Some((nonce, now));
                }
            }
        }
        self.publish(now);
    }

    /// Publishes the fresh round trips for the next status.
    fn publish(&self, now: Instant) {
        let fresh = self.interval * RTT_FRESH_INTERVALS;
        let mut latest = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        latest.clear();
        latest.extend(self.peers.iter().filter_map(|p| {
            let (rtt_us, at) = p.measured?;
            (now.saturating_duration_since(at) <= fresh).then_some(Rtt {
                peer: p.peer.tag,
                rtt_us,
            })
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn socket() -> UdpSocket {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_nonblocking(true).unwrap();
        s
    }

    #[test]
    fn two_probers_measure_each_other_from_a_signed_list_only() {
        let monitor = UdpSocket::bind("127.0.0.1:0").unwrap();
        let m = monitor.local_addr().unwrap();
        let (a, b) = (socket(), socket());
        let (a_addr, b_addr) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        let key = b"probe-key".to_vec();
        let iv = Duration::from_millis(100);
        let pa = Prober::start(vec![a], vec![m], Some(key.clone()), iv).unwrap();
        let pb = Prober::start(vec![b], vec![m], Some(key.clone()), iv).unwrap();
        // Sends `to` a list of one peer, from `from`.
        let list = |from: &UdpSocket, seq, key: Option<&[u8]>, tag, peer, to| {
            let mut bytes = Vec::new();
            wire::encode_peers(seq, &[Peer { tag, addr: peer }], key, &mut bytes);
            from.send_to(&bytes, to).unwrap();
        };
        // An unsigned list and one from a stranger are ignored.
        list(&monitor, 1, None, 2, b_addr, a_addr);
        let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
        list(&stranger, 1, Some(&key), 2, b_addr, a_addr);
        std::thread::sleep(Duration::from_millis(400));
        let mut got = Vec::new();
        pa.fill(&mut got);
        assert!(got.is_empty(), "{got:?}");
        list(&monitor, 2, Some(&key), 2, b_addr, a_addr);
        list(&monitor, 2, Some(&key), 1, a_addr, b_addr);
        let until = Instant::now() + Duration::from_secs(20);
        let mut other = Vec::new();
        loop {
            pa.fill(&mut got);
            pb.fill(&mut other);
            if !got.is_empty() && !other.is_empty() {
                break;
            }
            assert!(Instant::now() < until, "no round trips: {got:?} {other:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(got[0].peer, 2);
        assert_eq!(other[0].peer, 1);
        assert!(got[0].rtt_us >= 1 && other[0].rtt_us >= 1);
        // Echoes of the wrong size are not answered; a right one is.
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        probe.send_to(&[b'O', b'E', 1, 1], a_addr).unwrap();
        probe
            .send_to(&encode_echo(Echo::Request(77)), a_addr)
            .unwrap();
        let mut buf = [0u8; 64];
        let (n, _) = probe.recv_from(&mut buf).unwrap();
        assert_eq!(decode_echo(&buf[..n]), Some(Echo::Reply(77)));
    }
}
