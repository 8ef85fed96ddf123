//! `idle` and `hold`: hold many idle connections open (in this process or in helper
//! processes past the descriptor limit), then measure an active request's latency and the
//! server's RSS and sockets per held connection.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use serde_json::{json, Value};

use crate::client::Target;
use crate::player::MediaPlan;
use crate::stats::Stats;
use crate::{
    base_json, merge, plan, run_clients, sys, HoldArgs, IdleArgs, RunPlan, CONNECTIONS_MAX,
};

const IDLE_MAX: usize = 200_000;
/// Time allowed for opening the idle set.
const IDLE_OPEN_S_MAX: Duration = Duration::from_secs(60);

/// A connect stuck this long is a server whose accept queue is full: give up on it quickly.
fn idle_connect_timeout(timeout: Duration) -> Duration {
    timeout.min(Duration::from_secs(3))
}

/// Idle connects in flight at once (keeps the server's accept queue from overflowing).
const IDLE_CONNECTS_IN_FLIGHT_MAX: usize = 2048;

fn socket_fds_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| sys::socket_fds(p)).sum()
}

fn rss_kib_sum(pids: &[u32]) -> Option<u64> {
    if pids.is_empty() {
        return None;
    }
    pids.iter().map(|&p| sys::rss_kib(p)).sum()
}

/// Opens `n` idle connections (bounded connects in flight). Returns the connected sockets and
/// the error counts of those that failed.
fn open_idle(
    target: &Target,
    n: usize,
    timeout: Duration,
    deadline: Instant,
) -> Result<(Vec<OwnedFd>, Stats)> {
    let mut stats = Stats::default();
    let epoll = sys::Epoll::new()?;
    let mut pending: Vec<Option<(OwnedFd, Instant)>> = Vec::new();
    let mut free_slots: Vec<usize> = Vec::new();
    let mut in_flight = 0usize;
    let mut held = Vec::with_capacity(n);
    let mut opened = 0usize;
    let mut events = Vec::with_capacity(1024);
    let mut last_sweep = Instant::now();
    while (opened < n || in_flight > 0) && Instant::now() < deadline {
        while opened < n && in_flight < IDLE_CONNECTS_IN_FLIGHT_MAX {
            let src = if target.sources.is_empty() {
                None
            } else {
                Some(target.sources[opened % target.sources.len()])
            };
            opened += 1;
            match sys::connect_nonblocking(src, target.dest) {
                Ok(fd) => {
                    let slot = free_slots.pop().unwrap_or_else(|| {
                        pending.push(None);
                        pending.len() - 1
                    });
                    epoll.add(fd.as_raw_fd(), slot as u64)?;
                    pending[slot] = Some((fd, Instant::now()));
                    in_flight += 1;
                }
                Err(e) => stats.error(match e.raw_os_error() {
                    Some(libc::EADDRNOTAVAIL) => "addr_not_available",
                    Some(libc::EMFILE) | Some(libc::ENFILE) => "too_many_open_files",
                    Some(libc::ECONNREFUSED) => "refused",
                    _ => "connect_other",
                }),
            }
        }
        epoll.wait(&mut events, 20)?;
        for ev in events.iter() {
            let slot = ev.u64 as usize;
            let Some((fd, _)) = pending[slot].take() else {
                continue;
            };
            in_flight -= 1;
            free_slots.push(slot);
            match sys::take_socket_error(fd.as_raw_fd()) {
                Ok(()) => {
                    stats.connects += 1;
                    held.push(fd);
                }
                Err(e) => stats.error(match e.raw_os_error() {
                    Some(libc::ECONNREFUSED) => "refused",
                    Some(libc::ECONNRESET) => "reset",
                    Some(libc::ETIMEDOUT) => "connect_timeout",
                    _ => "connect_other",
                }),
            }
        }
        let now = Instant::now();
        if now.duration_since(last_sweep) > Duration::from_millis(200) {
            last_sweep = now;
            for (slot, entry) in pending.iter_mut().enumerate() {
                if entry
                    .as_ref()
                    .is_some_and(|(_, t)| now.duration_since(*t) > timeout)
                {
                    *entry = None;
                    in_flight -= 1;
                    free_slots.push(slot);
                    stats.error("connect_timeout");
                }
            }
        }
    }
    if in_flight > 0 || opened < n {
        stats.errors.insert(
            "not_attempted_or_pending_at_deadline",
            ((n - held.len()) as u64).saturating_sub(stats.errors_total()),
        );
    }
    Ok((held, stats))
}

fn count_quiet(fds: &[OwnedFd]) -> Result<usize> {
    let raw: Vec<_> = fds.iter().map(|f| f.as_raw_fd()).collect();
    Ok(sys::poll_disturbed(&raw)?.iter().filter(|d| !**d).count())
}

/// Idle connections held either here or, when RLIMIT_NOFILE cannot be raised far enough (no
/// CAP_SYS_RESOURCE), spread over child processes of this binary (`hold` subcommand), each
/// within its own descriptor limit.
enum IdleSet {
    Local(Vec<OwnedFd>),
    Children(Vec<HoldChild>),
}

struct HoldChild {
    child: std::process::Child,
    stdin: Option<std::process::ChildStdin>,
    stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl HoldChild {
    fn line(&mut self) -> Result<Value> {
        use std::io::BufRead;
        let mut line = String::new();
        self.stdout.read_line(&mut line)?;
        serde_json::from_str(&line).with_context(|| format!("bad reply from hold child: {line:?}"))
    }
}

impl IdleSet {
    fn quiet(&mut self) -> Result<usize> {
        use std::io::Write;
        match self {
            IdleSet::Local(fds) => count_quiet(fds),
            IdleSet::Children(kids) => {
                let mut total = 0;
                for k in kids.iter_mut() {
                    let stdin = k.stdin.as_mut().context("hold child stdin closed")?;
                    stdin.write_all(b"check\n")?;
                    stdin.flush()?;
                    total += k.line()?["quiet"].as_u64().unwrap_or(0) as usize;
                }
                Ok(total)
            }
        }
    }

    fn close(self) {
        if let IdleSet::Children(kids) = self {
            for mut k in kids {
                drop(k.stdin.take());
                let _ = k.child.wait();
            }
        }
    }
}

/// Opens the idle set; returns it with the connected count and the connect errors by kind.
fn open_idle_set(p: &RunPlan, a: &IdleArgs, per_process: usize) -> Result<(IdleSet, u64, Value)> {
    let deadline = Instant::now() + IDLE_OPEN_S_MAX;
    if a.idle + a.connections + 256 <= per_process {
        let (fds, st) = open_idle(&p.target, a.idle, idle_connect_timeout(p.timeout), deadline)?;
        return Ok((IdleSet::Local(fds), st.connects, json!(st.errors)));
    }
    let share = per_process.saturating_sub(256).max(1);
    let exe = std::env::current_exe().context("locating own binary for hold children")?;
    let mut kids = Vec::new();
    let mut left = a.idle;
    while left > 0 {
        let n = left.min(share);
        left -= n;
        let mut child = std::process::Command::new(&exe)
            .args([
                "hold",
                "--dest",
                &p.target.dest.to_string(),
                "--count",
                &n.to_string(),
            ])
            .args(["--sources", &p.target.sources.len().to_string()])
            .args([
                "--timeout-s",
                &idle_connect_timeout(p.timeout).as_secs_f64().to_string(),
            ])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .context("spawning hold child")?;
        let stdin = child.stdin.take();
        let stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        kids.push(HoldChild {
            child,
            stdin,
            stdout,
        });
    }
    let mut connected = 0;
    let mut errors = serde_json::Map::new();
    for k in kids.iter_mut() {
        let v = k.line()?;
        connected += v["connected"].as_u64().unwrap_or(0);
        if let Some(errs) = v["errors"].as_object() {
            for (kind, n) in errs {
                let old = errors.get(kind).and_then(Value::as_u64).unwrap_or(0);
                errors.insert(kind.clone(), json!(old + n.as_u64().unwrap_or(0)));
            }
        }
    }
    Ok((IdleSet::Children(kids), connected, Value::Object(errors)))
}

/// The hidden `hold` subcommand: open connections, report, answer "check", exit on EOF.
pub(crate) fn run_hold(h: &HoldArgs) -> Result<()> {
    use std::io::{BufRead, Write};
    let dest: SocketAddrV4 = h.dest.parse().context("--dest")?;
    ensure!(dest.ip().is_loopback(), "refusing non-loopback {dest}");
    sys::raise_nofile(h.count as u64 + 64)?;
    let sources = if h.sources <= 1 {
        Vec::new()
    } else {
        (1..=h.sources)
            .map(|i| Ipv4Addr::new(127, 0, 0, i))
            .collect()
    };
    let target = Target {
        dest,
        sources,
        requests: Vec::new(),
        media: MediaPlan::Progressive,
    };
    let deadline = Instant::now() + IDLE_OPEN_S_MAX;
    let (fds, st) = open_idle(
        &target,
        h.count,
        Duration::from_secs_f64(h.timeout_s),
        deadline,
    )?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        json!({ "connected": st.connects, "errors": st.errors })
    )?;
    out.flush()?;
    for line in std::io::stdin().lock().lines() {
        if line?.trim() == "check" {
            writeln!(out, "{}", json!({ "quiet": count_quiet(&fds)? }))?;
            out.flush()?;
        }
    }
    Ok(())
}

pub(crate) fn run_idle(a: &IdleArgs) -> Result<Value> {
    ensure!(
        (1..=IDLE_MAX).contains(&a.idle),
        "--idle must be 1..={IDLE_MAX}"
    );
    ensure!(
        (1..=CONNECTIONS_MAX).contains(&a.connections),
        "--connections must be 1..={CONNECTIONS_MAX}"
    );
    ensure!(
        a.hold_s >= 0.0 && a.hold_s <= 600.0,
        "--hold-s must be in [0, 600]"
    );
    let per_process = sys::raise_nofile((a.idle + a.connections) as u64 + 1024)? as usize;
    let in_process = if a.idle + a.connections + 256 <= per_process {
        a.idle + a.connections
    } else {
        a.connections
    };
    let p = plan(&a.common, a.idle + a.connections, in_process)?;
    let rss_before = rss_kib_sum(&a.rss_pids);
    let sockets_before = socket_fds_sum(&a.rss_pids);
    let t0 = Instant::now();
    let (mut idle, connected, open_errors) = open_idle_set(&p, a, per_process)?;
    let open_s = t0.elapsed().as_secs_f64();
    let processes = match &idle {
        IdleSet::Local(_) => 1,
        IdleSet::Children(k) => k.len(),
    };
    eprintln!(
        "oasis-loadgen idle: {connected} of {} connected in {open_s:.1} s ({processes} holding process(es))",
        a.idle
    );
    std::thread::sleep(Duration::from_secs_f64(a.hold_s));
    let rss_held = rss_kib_sum(&a.rss_pids);
    let sockets_held = socket_fds_sum(&a.rss_pids);
    // Connections the server really accepted (a connect can complete into a full accept queue).
    let server_accepted = match (sockets_before, sockets_held) {
        (Some(b), Some(h)) => Some(h.saturating_sub(b)),
        _ => None,
    };
    let held_before = idle.quiet()?;
    let (stats, elapsed, _) = run_clients(&p, a.connections, a.common.seed, None)?;
    let held_after = idle.quiet()?;
    let rss_after = rss_kib_sum(&a.rss_pids);
    let per_conn_divisor = server_accepted.unwrap_or(held_before as u64);
    let rss_per_conn = match (rss_before, rss_held) {
        (Some(b), Some(h)) if per_conn_divisor > 0 => {
            Some((h.saturating_sub(b) as f64 * 1024.0) / per_conn_divisor as f64)
        }
        _ => None,
    };
    idle.close();
    let mut out = base_json("idle", &a.common, &p);
    merge(
        &mut out,
        json!({
            "idle_requested": a.idle,
            "idle_connected": connected,
            "idle_open_s": open_s,
            "idle_open_errors": open_errors,
            "idle_holding_processes": processes,
            "server_socket_fds_before": sockets_before,
            "server_socket_fds_held": sockets_held,
            "idle_accepted_by_server": server_accepted,
            "idle_held_before_active": held_before,
            "idle_held_after_active": held_after,
            "connections": a.connections,
            "rss_pids": a.rss_pids,
            "rss_kib_before": rss_before,
            "rss_kib_held": rss_held,
            "rss_kib_after_active": rss_after,
            "rss_bytes_per_idle_conn": rss_per_conn,
        }),
    );
    merge(&mut out, stats.to_json(elapsed));
    Ok(out)
}
