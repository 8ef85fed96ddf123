//! Sends the status datagrams of many made-up nodes to a monitor, for `benches/monitor.sh`.
//!
//!     status_flood ADDR NODES SECONDS [KEY]
//!
//! Every node sends one datagram a second, like a real `oasis serve` with the default interval:
//! the nodes' sends are spread evenly over each second (one tick a millisecond sends the nodes
//! due by then). Each status is a realistic one (six Resource Manager accounts, growing
//! counters, a level that 1 node in 50 raises to warning or critical now and then), encoded, and
//! signed with KEY when one is given, by the crate's own encoder. Prints what was sent and what
//! failed. It does not measure the monitor: the script reads the monitor's CPU time itself.

use std::net::{SocketAddr, UdpSocket};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use oasis_monitor::status::encode;
use oasis_monitor::{Account, Level, Role, Status};

/// Most nodes one run simulates.
const NODES_MAX: u64 = 1_000_000;
/// Longest run, in seconds.
const SECONDS_MAX: u64 = 3600;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let parsed = match args.as_slice() {
        [addr, nodes, secs, rest @ ..] if rest.len() <= 1 => (
            addr.parse::<SocketAddr>().ok(),
            nodes
                .parse::<u64>()
                .ok()
                .filter(|n| (1..=NODES_MAX).contains(n)),
            secs.parse::<u64>()
                .ok()
                .filter(|s| (1..=SECONDS_MAX).contains(s)),
            rest.first().cloned(),
        ),
        _ => (None, None, None, None),
    };
    let (Some(addr), Some(nodes), Some(secs), key) = parsed else {
        eprintln!(
            "usage: status_flood ADDR NODES SECONDS [KEY]  (NODES 1..={NODES_MAX}, SECONDS 1..={SECONDS_MAX})"
        );
        return ExitCode::from(2);
    };
    match run(addr, nodes, secs, key.as_deref().map(str::as_bytes)) {
        Ok((sent, failed)) => {
            println!(
                "status_flood: {nodes} nodes for {secs} s: {sent} datagrams sent, {failed} failed"
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("status_flood: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(addr: SocketAddr, nodes: u64, secs: u64, key: Option<&[u8]>) -> std::io::Result<(u64, u64)> {
    let socket = UdpSocket::bind(if addr.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    })?;
    let mut statuses: Vec<Status> = (0..nodes).map(node_status).collect();
    let start = Instant::now();
    let total = nodes * secs;
    let (mut next, mut sent, mut failed) = (0u64, 0u64, 0u64);
    while next < total {
        let elapsed_us = start.elapsed().as_micros() as u64;
        // Datagram k is due at k / nodes seconds.
        let due = (elapsed_us.saturating_mul(nodes) / 1_000_000 + 1).min(total);
        while next < due {
            let s = &mut statuses[(next % nodes) as usize];
            step(s, next / nodes);
            match encode(s, key).map(|b| socket.send_to(&b, addr)) {
                Some(Ok(_)) => sent += 1,
                _ => failed += 1,
            }
            next += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok((sent, failed))
}

/// Node `i`'s first status.
fn node_status(i: u64) -> Status {
    let mut s = Status::new(&format!("bench-host-{i:06}/0.0.0.0:8080"), Role::Serve);
    s.version = "0.1.0".into();
    s.pid = 10_000 + i as u32;
    s.seq = 1;
    s.interval_ms = 1000;
    s.accounts = [
        "memory_bytes",
        "net_bps[0]",
        "disk_bps[0]",
        "connections",
        "open_files",
        "cpu_permille",
    ]
    .iter()
    .map(|r| Account {
        resource: (*r).into(),
        used: 1 << 20,
        limit: 1 << 30,
        level: Level::Normal,
    })
    .collect();
    s
}

/// Moves node status `s` on to second `sec` of the run.
fn step(s: &mut Status, sec: u64) {
    s.seq += 1;
    s.uptime_ms = 60_000 + sec * 1000;
    s.active_streams = (sec % 40) as u32;
    s.sent_bytes_total += 12_500_000;
    s.received_bytes_total += 40_000;
    s.requests_total += 120;
    let nth = u64::from(s.pid) % 50;
    s.level = match (nth, sec % 20) {
        (0, 5..=9) => Level::Warning,
        (0, 10..=11) => Level::Critical,
        _ => Level::Normal,
    };
    if s.level == Level::Critical {
        s.critical_events_total += 1;
    }
    for a in &mut s.accounts {
        a.used = (a.used + 4096) % a.limit;
    }
}
