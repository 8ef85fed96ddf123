//! The sending side: one non-blocking UDP socket per address family, the configured monitors,
//! the key, and the sequence number. A process calls [`Sender::due`] from a thread that may
//! make a syscall (never an engine worker) and [`Sender::send`] when it is due; a failed send
//! is counted, never fatal and never waited for.
//!
//! The same sockets answer and send round-trip probes: [`Sender::new`] starts a
//! [`Prober`] thread on clones of them (see `probe`), and each status carries its latest round
//! trips.
//!
//! The sequence number starts at the wall clock in microseconds, so it keeps growing across a
//! restart of the process and the monitor's replay window takes the new run's datagrams.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::probe::Prober;
use crate::status::{encode, Status};

/// Datagrams sent and failed, over every target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SendCounts {
    /// Datagrams the kernel took.
    pub sent: u64,
    /// Sends that failed (a full socket buffer, an unreachable network, ...).
    pub failed: u64,
}

/// Sends a process's status to its monitors every interval.
pub struct Sender {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
    targets: Vec<SocketAddr>,
    key: Option<Vec<u8>>,
    interval: Duration,
    seq: u64,
    started: Instant,
    next_due: Instant,
    counts: SendCounts,
    prober: Prober,
}

impl Sender {
    /// Resolves `targets` ("host:port" each), opens the sockets and starts the round-trip
    /// prober on them (probing every `interval`). `started` is when the process started (its
    /// uptime counts from there).
    pub fn new(
        targets: &[String],
        interval: Duration,
        key: Option<&str>,
        started: Instant,
    ) -> io::Result<Sender> {
        let mut addrs = Vec::with_capacity(targets.len());
        for t in targets {
            let found = t
                .to_socket_addrs()
                .map_err(|e| io::Error::new(e.kind(), format!("monitor target `{t}`: {e}")))?
                .next()
                .ok_or_else(|| {
                    io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("monitor target `{t}` resolves to no address"),
                    )
                })?;
            addrs.push(found);
        }
        let open = |any: &str| -> io::Result<UdpSocket> {
            let s = UdpSocket::bind(any)?;
            s.set_nonblocking(true)?;
            Ok(s)
        };
        let v4 = match addrs.iter().any(SocketAddr::is_ipv4) {
            true => Some(open("0.0.0.0:0")?),
            false => None,
        };
        let v6 = match addrs.iter().any(SocketAddr::is_ipv6) {
            true => Some(open("[::]:0")?),
            false => None,
        };
        let clones: io::Result<Vec<UdpSocket>> = v4
            .iter()
            .chain(v6.iter())
            .map(UdpSocket::try_clone)
            .collect();
        let key_bytes = key.map(|k| k.as_bytes().to_vec());
        let prober = Prober::start(clones?, addrs.clone(), key_bytes.clone(), interval)?;
        let seq = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1, |d| d.as_micros() as u64);
        Ok(Sender {
            v4,
            v6,
            targets: addrs,
            key: key_bytes,
            interval,
            seq,
            started,
            next_due: started,
            counts: SendCounts::default(),
            prober,
        })
    }

    /// True when the next datagram is due at `now`.
    pub fn due(&self, now: Instant) -> bool {
        now >= self.next_due
    }

    /// Stamps `status` (sequence, pid, uptime, interval), fits it to its bounds and sends it to
    /// every target without waiting. Schedules the next one an interval later.
    pub fn send(&mut self, status: &mut Status, now: Instant) {
        self.next_due = now + self.interval;
        self.seq += 1;
        status.seq = self.seq;
        status.pid = std::process::id();
        status.uptime_ms = now.saturating_duration_since(self.started).as_millis() as u64;
        status.interval_ms = self.interval.as_millis().min(u128::from(u32::MAX)) as u32;
        self.prober.fill(&mut status.rtts);
        status.fit();
        let Some(bytes) = encode(status, self.key.as_deref()) else {
            // fit() keeps every bound: this is a bug, counted rather than fatal.
            debug_assert!(false, "a fitted status did not encode");
            self.counts.failed += 1;
            return;
        };
        for target in &self.targets {
            let socket = if target.is_ipv4() { &self.v4 } else { &self.v6 };
            match socket.as_ref().map(|s| s.send_to(&bytes, target)) {
                Some(Ok(_)) => self.counts.sent += 1,
                _ => self.counts.failed += 1,
            }
        }
    }

    /// Datagrams sent and failed so far.
    pub fn counts(&self) -> SendCounts {
        self.counts
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Intake, Role};

    #[test]
    fn sends_signed_growing_datagrams_and_counts_failures_without_blocking() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let target = rx.local_addr().unwrap().to_string();
        let start = Instant::now();
        let mut tx = Sender::new(&[target], Duration::from_millis(500), Some("k"), start).unwrap();
        assert!(tx.due(start));
        let mut status = Status::new("n", Role::Logd);
        tx.send(&mut status, start);
        assert!(!tx.due(start + Duration::from_millis(499)));
        tx.send(&mut status, start + Duration::from_millis(500));
        let intake = Intake::new(Some(b"k"));
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        let first = intake.check(&buf[..n]).unwrap();
        let n = rx.recv(&mut buf).unwrap();
        let second = intake.check(&buf[..n]).unwrap();
        assert_eq!(second.seq, first.seq + 1);
        assert_eq!((second.uptime_ms, second.interval_ms), (500, 500));
        assert_eq!(tx.counts(), SendCounts { sent: 2, failed: 0 });
        assert!(Sender::new(
            &["no-such-host.invalid:1".into()],
            Duration::from_secs(1),
            None,
            start
        )
        .is_err());
    }
}
