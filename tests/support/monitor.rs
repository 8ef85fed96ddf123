//! A real `oasis monitor` for the integration tests: started on loopback ports the kernel
//! picks (read back from its log), asked over HTTP, polled with generous bounds.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use super::oasis_bin;
use super::players::Bounded;

/// Longest any wait on the monitor polls before the test fails.
pub const WAIT_SECS_MAX: u64 = 30;

/// A running `oasis monitor`.
pub struct Monitor {
    pub process: Bounded,
    pub udp: SocketAddr,
    pub http: SocketAddr,
}

impl Monitor {
    /// Starts a monitor on ports the kernel picks, signed datagrams only with `key`.
    pub fn start(key: Option<&str>) -> Monitor {
        let mut args = vec!["monitor", "--udp", "127.0.0.1:0", "--http", "127.0.0.1:0"];
        if let Some(k) = key {
            args.extend(["--key", k]);
        }
        let mut process = Bounded::spawn(oasis_bin(), &args);
        let until = Instant::now() + Duration::from_secs(WAIT_SECS_MAX);
        loop {
            let log = process.stderr_so_far();
            let after = |marker: &str| -> Option<SocketAddr> {
                log.split(marker)
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            };
            if let (Some(udp), Some(http)) = (after("datagrams on udp "), after("listening on ")) {
                return Monitor { process, udp, http };
            }
            assert!(Instant::now() < until, "the monitor did not start:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> String {
        let mut s = TcpStream::connect(self.http).expect("the monitor answers");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: m\r\n\r\n").unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        assert!(out.starts_with("HTTP/1.1 200"), "GET {path}: {out}");
        out.split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default()
    }

    pub fn matrix(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/api/matrix")).expect("/api/matrix is JSON")
    }

    /// Polls `/api/matrix` until every server of `addrs` has a round trip to every other one.
    pub fn wait_matrix(&self, addrs: &[SocketAddr]) -> serde_json::Value {
        let until = Instant::now() + Duration::from_secs(WAIT_SECS_MAX);
        loop {
            let m = self.matrix();
            if full_matrix(&m, addrs) {
                return m;
            }
            assert!(
                Instant::now() < until,
                "waited {WAIT_SECS_MAX} s for round trips between every pair:\n{m:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn nodes(&self) -> serde_json::Value {
        serde_json::from_str(&self.get("/api/nodes")).expect("/api/nodes is JSON")
    }

    /// Polls `/api/nodes` until `done` holds; fails with the last answer.
    pub fn wait(&self, what: &str, done: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
        let until = Instant::now() + Duration::from_secs(WAIT_SECS_MAX);
        loop {
            let nodes = self.nodes();
            if done(&nodes) {
                return nodes;
            }
            assert!(
                Instant::now() < until,
                "waited {WAIT_SECS_MAX} s for {what}:\n{nodes:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// True when `/api/matrix` holds a positive round trip from each server of `addrs` to each
/// other one.
pub fn full_matrix(m: &serde_json::Value, addrs: &[SocketAddr]) -> bool {
    let Some(index) = addrs
        .iter()
        .map(|addr| {
            let suffix = format!("/{addr}");
            m["nodes"]
                .as_array()?
                .iter()
                .position(|n| n["node"].as_str().is_some_and(|id| id.ends_with(&suffix)))
        })
        .collect::<Option<Vec<usize>>>()
    else {
        return false;
    };
    index.iter().all(|&i| {
        index.iter().filter(|&&j| j != i).all(|&j| {
            m["rtt_us"][i][j]
                .as_f64()
                .is_some_and(|us| us.is_finite() && us > 0.0)
        })
    })
}
