//! `oasis-loadgen`: a bounded HTTP/1.1 load generator for side-by-side runs (Oasis vs nginx).
//!
//! Modes: `get` (keep-alive GETs over N connections), `idle` (hold N idle connections, then
//! measure an active request's latency while they are held) and `paced` (add viewers that play
//! an HLS package or a progressive file at its bitrate, step by step until one stalls, or a fixed
//! number of them while stalls and refusals are counted). Every run is bounded in time (and optionally in
//! requests) and only ever targets loopback addresses. One JSON object per run goes to stdout or
//! `--out FILE`.

mod client;
mod http;
mod player;
mod playlist;
mod stats;
mod sys;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use client::{Order, PacedCfg, Shared, Target, WorkerCfg};
use player::{MediaPlan, PlayerCfg};
use serde_json::{json, Value};
use stats::Stats;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

const DURATION_S_MAX: f64 = 3600.0;
const CONNECTIONS_MAX: usize = 100_000;
const IDLE_MAX: usize = 200_000;
const REQUESTS_MAX: u64 = 1_000_000_000;
/// Time allowed for opening the idle set.
const IDLE_OPEN_S_MAX: Duration = Duration::from_secs(60);

/// A connect stuck this long is a server whose accept queue is full: give up on it quickly.
fn idle_connect_timeout(timeout: Duration) -> Duration {
    timeout.min(Duration::from_secs(3))
}

/// Idle connects in flight at once (keeps the server's accept queue from overflowing).
const IDLE_CONNECTS_IN_FLIGHT_MAX: usize = 2048;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Bounded loopback HTTP/1.1 load generator for Oasis benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Keep-alive GETs over N connections.
    Get(GetArgs),
    /// Hold N idle connections, then measure an active request's latency while they are held.
    Idle(IdleArgs),
    /// Add viewers of a given bitrate step by step until any viewer stalls.
    Paced(PacedArgs),
    /// Internal: hold idle connections for an `idle` run (one child per descriptor limit).
    #[command(hide = true)]
    Hold(HoldArgs),
}

#[derive(Args, Debug)]
struct HoldArgs {
    #[arg(long)]
    dest: String,
    #[arg(long)]
    count: usize,
    #[arg(long, default_value_t = 0)]
    sources: u8,
    #[arg(long, default_value_t = 10.0)]
    timeout_s: f64,
}

#[derive(Args, Debug, Clone)]
struct Common {
    /// Target URL(s), http://127.0.0.x:PORT/path or /path joined to --base (repeatable; all on
    /// one host:port).
    #[arg(long = "url")]
    urls: Vec<String>,
    /// File with one URL (or one /path, joined to --base) per line.
    #[arg(long)]
    url_file: Option<String>,
    /// Base for bare paths in --url-file, e.g. http://127.0.0.1:8080
    #[arg(long)]
    base: Option<String>,
    /// Client threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Run length in seconds (the run always stops by then).
    #[arg(long)]
    duration_s: Option<f64>,
    /// Stop after this many requests (a duration cap of 600 s still applies).
    #[arg(long)]
    requests: Option<u64>,
    /// A connection with no progress for this long counts a timeout error.
    #[arg(long, default_value_t = 10.0)]
    timeout_s: f64,
    #[arg(long, value_enum, default_value_t = OrderArg::RoundRobin)]
    order: OrderArg,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Source addresses 127.0.0.1..=127.0.0.K to spread connections over (0 = automatic).
    #[arg(long, default_value_t = 0)]
    source_addrs: u8,
    /// Free-form label copied into the JSON (e.g. "nginx s1 c100").
    #[arg(long, default_value = "")]
    label: String,
    /// Write the JSON object here instead of stdout.
    #[arg(long)]
    out: Option<String>,
    /// Drop response bodies in the kernel (`recv` with `MSG_TRUNC`) instead of copying them
    /// out. Heads are still parsed and every body byte counted; the client then costs much
    /// less per byte, which shows whether a run measured the server or the client.
    #[arg(long)]
    discard_body: bool,
}

#[derive(Args, Debug)]
struct GetArgs {
    #[command(flatten)]
    common: Common,
    /// Concurrent connections.
    #[arg(long, default_value_t = 100)]
    connections: usize,
}

#[derive(Args, Debug)]
struct IdleArgs {
    #[command(flatten)]
    common: Common,
    /// Idle connections to open and hold.
    #[arg(long)]
    idle: usize,
    /// Seconds to hold the idle connections before the active phase.
    #[arg(long, default_value_t = 2.0)]
    hold_s: f64,
    /// Active connections measured while the idle ones are held.
    #[arg(long, default_value_t = 10)]
    connections: usize,
    /// Server PIDs whose VmRSS is summed before and while the idle connections are held.
    #[arg(long, value_delimiter = ',')]
    rss_pids: Vec<u32>,
}

#[derive(Args, Debug)]
struct PacedArgs {
    #[command(flatten)]
    common: Common,
    /// Media bitrate each viewer plays at, bits per second.
    #[arg(long)]
    paced_bps: u64,
    /// Player buffer: a viewer asks for more media while it holds less than this many seconds.
    #[arg(long, default_value_t = 8.0)]
    buffer_s: f64,
    /// Playback starts, and resumes after a stall, with this many seconds buffered.
    #[arg(long, default_value_t = 4.0)]
    start_s: f64,
    /// A viewer that was not refused and has not started playing this long after joining
    /// counts a stall.
    #[arg(long, default_value_t = 10.0)]
    start_timeout_s: f64,
    /// Count stalls over the whole run instead of stopping at the first (an overload run).
    #[arg(long)]
    count_stalls: bool,
    #[arg(long, default_value_t = 50)]
    start_streams: usize,
    #[arg(long, default_value_t = 50)]
    step_streams: usize,
    #[arg(long, default_value_t = 10.0)]
    step_s: f64,
    #[arg(long, default_value_t = 5000)]
    max_streams: usize,
    /// Server PIDs whose CPU time and VmRSS are sampled twice per step (/proc/PID/stat, status).
    #[arg(long, value_delimiter = ',')]
    server_pids: Vec<u32>,
}

#[derive(ValueEnum, Clone, Copy, Debug)]
enum OrderArg {
    RoundRobin,
    Random,
}

struct Url {
    addr: SocketAddrV4,
    host: String,
    path: String,
}

/// Parses `http://HOST[:PORT]/path`, refusing anything that is not an IPv4 loopback address.
fn parse_url(url: &str) -> Result<Url> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url}: only http:// URLs are supported"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (
            h,
            p.parse::<u16>()
                .with_context(|| format!("{url}: bad port"))?,
        ),
        None => (authority, 80),
    };
    let ip: Ipv4Addr = if host.eq_ignore_ascii_case("localhost") {
        Ipv4Addr::LOCALHOST
    } else {
        host.parse()
            .with_context(|| format!("{url}: host must be an IPv4 loopback literal or localhost"))?
    };
    ensure!(
        ip.is_loopback(),
        "{url}: refusing to target {ip}: this tool only loads loopback (127.0.0.0/8)"
    );
    ensure!(
        path.bytes().all(|b| b.is_ascii_graphic()),
        "{url}: path must be printable ASCII without spaces"
    );
    Ok(Url {
        addr: SocketAddrV4::new(ip, port),
        host: authority.to_string(),
        path: path.to_string(),
    })
}

fn load_urls(c: &Common) -> Result<Vec<Url>> {
    let mut given: Vec<String> = c.urls.clone();
    if let Some(file) = &c.url_file {
        let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
        given.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_string),
        );
    }
    let mut raw = Vec::with_capacity(given.len());
    for u in given {
        if u.starts_with('/') {
            let base = c
                .base
                .as_deref()
                .context("bare paths in --url or --url-file: pass --base http://127.0.0.1:PORT")?;
            raw.push(format!("{}{}", base.trim_end_matches('/'), u));
        } else {
            raw.push(u);
        }
    }
    ensure!(!raw.is_empty(), "no URLs: pass --url or --url-file");
    let urls: Vec<Url> = raw.iter().map(|u| parse_url(u)).collect::<Result<_>>()?;
    let first = urls[0].addr;
    ensure!(
        urls.iter().all(|u| u.addr == first),
        "all URLs of one run must target the same host:port"
    );
    Ok(urls)
}

struct RunPlan {
    target: Target,
    duration: Duration,
    requests: Option<u64>,
    timeout: Duration,
    threads: usize,
    order: Order,
    notes: Vec<String>,
    nofile: u64,
    discard_body: bool,
}

/// `sockets` is the total the run opens (sizes the port space); `sockets_here` the most this
/// process holds at once (sizes RLIMIT_NOFILE).
fn plan(c: &Common, sockets: usize, sockets_here: usize) -> Result<RunPlan> {
    let urls = load_urls(c)?;
    ensure!((1..=64).contains(&c.threads), "--threads must be 1..=64");
    if let Some(r) = c.requests {
        ensure!(
            (1..=REQUESTS_MAX).contains(&r),
            "--requests must be 1..={REQUESTS_MAX}"
        );
    }
    let duration_s = match (c.duration_s, c.requests) {
        (Some(d), _) => d,
        (None, Some(_)) => 600.0,
        (None, None) => 10.0,
    };
    ensure!(
        duration_s > 0.0 && duration_s <= DURATION_S_MAX,
        "--duration-s must be in (0, {DURATION_S_MAX}]"
    );
    ensure!(
        c.timeout_s > 0.0 && c.timeout_s <= 600.0,
        "--timeout-s must be in (0, 600]"
    );
    let mut notes = Vec::new();
    let nofile = sys::raise_nofile(sockets_here as u64 + 1024).context("raising RLIMIT_NOFILE")?;
    ensure!(
        nofile >= sockets_here as u64 + 64,
        "RLIMIT_NOFILE is {nofile}, need {}: run as root or raise `ulimit -n`",
        sockets_here + 64
    );
    let mut ports = sys::ephemeral_port_count();
    // Keep a margin: TIME_WAIT sockets from earlier runs hold ports too.
    let per_source = |ports: u64| (ports * 8 / 10).max(1);
    if sockets as u64 > per_source(ports) {
        notes.push(sys::widen_port_range());
        ports = sys::ephemeral_port_count();
    }
    let auto = (sockets as u64).div_ceil(per_source(ports)).clamp(1, 250) as u8;
    let n_sources = if c.source_addrs == 0 {
        auto
    } else {
        c.source_addrs
    };
    let dest = urls[0].addr;
    let sources: Vec<Ipv4Addr> = if n_sources <= 1 {
        Vec::new()
    } else {
        (1..=n_sources)
            .map(|i| Ipv4Addr::new(127, 0, 0, i))
            .collect()
    };
    if !sources.is_empty() {
        notes.push(format!("source addresses 127.0.0.1..=127.0.0.{n_sources}"));
    }
    let requests = urls
        .iter()
        .map(|u| {
            format!(
                "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: oasis-loadgen\r\nAccept: */*\r\n\r\n",
                u.path, u.host
            )
            .into_bytes()
        })
        .collect();
    Ok(RunPlan {
        target: Target {
            dest,
            sources,
            requests,
            media: MediaPlan::Progressive,
        },
        duration: Duration::from_secs_f64(duration_s),
        requests: c.requests,
        timeout: Duration::from_secs_f64(c.timeout_s),
        threads: c.threads,
        order: match c.order {
            OrderArg::RoundRobin => Order::RoundRobin,
            OrderArg::Random => Order::Random,
        },
        notes,
        nofile,
        discard_body: c.discard_body,
    })
}

/// Runs the client threads and merges their stats. Returns (stats, elapsed seconds, shared).
fn run_clients(
    p: &RunPlan,
    connections: usize,
    seed: u64,
    paced: Option<PacedCfg>,
) -> Result<(Stats, f64, Shared)> {
    let start = Instant::now();
    let shared = Shared::new(start, p.duration, p.requests);
    let results: Vec<std::io::Result<Stats>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..p.threads)
            .map(|t| {
                let cfg = WorkerCfg {
                    thread_idx: t,
                    threads: p.threads,
                    connections: connections / p.threads + usize::from(t < connections % p.threads),
                    order: p.order,
                    seed,
                    timeout: p.timeout,
                    paced,
                    discard_body: p.discard_body,
                };
                let target = &p.target;
                let shared = &shared;
                s.spawn(move || client::run_worker(cfg, target, shared))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("client thread panicked"))
            .collect()
    });
    let elapsed = start.elapsed().as_secs_f64();
    let mut total = Stats::default();
    for r in results {
        total.merge(&r.context("client thread failed")?);
    }
    Ok((total, elapsed, shared))
}

fn base_json(mode: &str, c: &Common, p: &RunPlan) -> Value {
    json!({
        "tool": "oasis-loadgen",
        "mode": mode,
        "label": c.label,
        "target": p.target.dest.to_string(),
        "urls": p.target.requests.len(),
        "threads": p.threads,
        "duration_s_max": p.duration.as_secs_f64(),
        "requests_max": p.requests,
        "order": format!("{:?}", c.order),
        "discard_body": p.discard_body,
        "nofile": p.nofile,
        "notes": p.notes,
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    })
}

fn merge(into: &mut Value, from: Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        a.extend(b);
    }
}

fn run_get(a: &GetArgs) -> Result<Value> {
    ensure!(
        (1..=CONNECTIONS_MAX).contains(&a.connections),
        "--connections must be 1..={CONNECTIONS_MAX}"
    );
    let p = plan(&a.common, a.connections, a.connections)?;
    let cpu_before = sys::process_cpu_s();
    let (stats, elapsed, _) = run_clients(&p, a.connections, a.common.seed, None)?;
    let client_cpu_s = sys::process_cpu_s() - cpu_before;
    let mut out = base_json("get", &a.common, &p);
    // The client's own CPU per byte: where client and server share cores, a server that makes
    // the client work harder per byte (smaller reads, more wake-ups) loses throughput to it.
    let gb = stats.bytes_received as f64 / 1e9;
    merge(
        &mut out,
        json!({
            "connections": a.connections,
            "client_cpu_s": client_cpu_s,
            "client_cpu_s_per_gb": if gb > 0.0 { Some(client_cpu_s / gb) } else { None },
        }),
    );
    merge(&mut out, stats.to_json(elapsed));
    Ok(out)
}

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
fn run_hold(h: &HoldArgs) -> Result<()> {
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

fn run_idle(a: &IdleArgs) -> Result<Value> {
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

/// One sample of the server's processes while a paced run goes on.
#[derive(Debug, Clone, Copy)]
struct ServerSample {
    t_s: f64,
    cpu_s: f64,
    rss_kib: u64,
}

fn sample_server(pids: &[u32], start: Instant) -> ServerSample {
    ServerSample {
        t_s: start.elapsed().as_secs_f64(),
        cpu_s: pids.iter().filter_map(|&p| sys::cpu_s(p)).sum(),
        rss_kib: pids.iter().filter_map(|&p| sys::rss_kib(p)).sum(),
    }
}

/// Samples the server at the start, every half step until `done`, and at the end; bounded by
/// the run's longest duration.
fn sampler(
    pids: &[u32],
    start: Instant,
    half_step: Duration,
    done: &std::sync::atomic::AtomicBool,
) -> Vec<ServerSample> {
    let mut out = vec![sample_server(pids, start)];
    let mut k = 1u32;
    while !done.load(std::sync::atomic::Ordering::Relaxed)
        && start.elapsed().as_secs_f64() < DURATION_S_MAX
    {
        let due = start + half_step * k;
        let now = Instant::now();
        if now >= due {
            out.push(sample_server(pids, start));
            k += 1;
        } else {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
        }
    }
    // The end of the run closes its last step.
    out.push(sample_server(pids, start));
    out
}

/// The server's CPU per viewer and RSS per viewer over the second half of step `k` (its
/// first half holds the new viewers' start-up bursts).
fn per_viewer_at_step(samples: &[ServerSample], k: usize, viewers: usize) -> Value {
    let (Some(base), Some(mid), Some(end)) = (
        samples.first(),
        samples.get(2 * k + 1),
        samples.get(2 * k + 2),
    ) else {
        return json!(null);
    };
    let secs = (end.t_s - mid.t_s).max(1e-3);
    let v = viewers.max(1) as f64;
    json!({
        "step": k,
        "viewers": viewers,
        "from_s": mid.t_s,
        "to_s": end.t_s,
        "server_cpu_cores": (end.cpu_s - mid.cpu_s) / secs,
        "server_cpu_ms_per_viewer_s": (end.cpu_s - mid.cpu_s) / secs / v * 1000.0,
        "server_rss_kib_before_run": base.rss_kib,
        "server_rss_kib": end.rss_kib,
        "server_rss_bytes_per_viewer": end.rss_kib.saturating_sub(base.rss_kib) as f64 * 1024.0 / v,
    })
}

fn run_paced(a: &PacedArgs) -> Result<Value> {
    ensure!(a.paced_bps >= 1000, "--paced-bps must be at least 1000");
    ensure!(
        a.buffer_s > 0.0 && a.buffer_s <= 600.0 && a.start_s > 0.0 && a.start_s <= a.buffer_s,
        "need 0 < --start-s <= --buffer-s <= 600"
    );
    ensure!(
        a.start_timeout_s > 0.0 && a.start_timeout_s <= 600.0,
        "--start-timeout-s must be in (0, 600]"
    );
    ensure!(
        a.step_s >= a.buffer_s,
        "--step-s must be at least --buffer-s (a step must outlast a full buffer)"
    );
    ensure!(
        a.start_streams >= 1
            && a.max_streams <= CONNECTIONS_MAX
            && a.start_streams <= a.max_streams,
        "need 1 <= --start-streams <= --max-streams <= {CONNECTIONS_MAX}"
    );
    let mut common = a.common.clone();
    if common.duration_s.is_none() {
        let steps = (a.max_streams - a.start_streams).div_ceil(a.step_streams.max(1)) + 1;
        common.duration_s = Some((steps as f64 * a.step_s).min(DURATION_S_MAX));
    }
    let media = playlist::resolve(&mut common)?;
    let mut p = plan(&common, a.max_streams, a.max_streams)?;
    p.target.media = media.clone();
    let cfg = PacedCfg {
        player: PlayerCfg {
            bitrate_bps: a.paced_bps,
            buffer_s: a.buffer_s,
            start_s: a.start_s,
        },
        start_timeout: Duration::from_secs_f64(a.start_timeout_s),
        stop_on_stall: !a.count_stalls,
        start_streams: a.start_streams,
        step_streams: a.step_streams,
        step: Duration::from_secs_f64(a.step_s),
        max_streams: a.max_streams,
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let (clients, samples) = std::thread::scope(|s| {
        let sampling = s.spawn(|| {
            sampler(
                &a.server_pids,
                start,
                Duration::from_secs_f64(a.step_s / 2.0),
                &done,
            )
        });
        let clients = run_clients(&p, 0, a.common.seed, Some(cfg));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (clients, sampling.join().expect("sampler thread panicked"))
    });
    let (stats, elapsed, shared) = clients?;
    let stall = *shared.stall.lock().expect("stall lock poisoned");
    // Sustained = viewers of the last step that ran in full before the evidence of a stall.
    let steps_done = match stall {
        Some(ev) if !a.count_stalls => (ev.evidence_from.as_secs_f64() / a.step_s).floor() as usize,
        _ => (elapsed / a.step_s + 1e-6).floor() as usize,
    };
    let sustained = match steps_done {
        0 => 0,
        k => cfg.streams_at_step(k - 1),
    };
    let at_sustained = match steps_done {
        0 => json!(null),
        k => per_viewer_at_step(&samples, k - 1, sustained),
    };
    let mut out = base_json("paced", &common, &p);
    merge(
        &mut out,
        json!({
            "paced_bps": a.paced_bps,
            "media": match &media {
                MediaPlan::Hls { segment_s } => json!({ "kind": "hls", "segment_s": segment_s }),
                MediaPlan::Progressive => json!({ "kind": "progressive" }),
            },
            "buffer_s": a.buffer_s,
            "start_s": a.start_s,
            "start_timeout_s": a.start_timeout_s,
            "count_stalls": a.count_stalls,
            "start_streams": a.start_streams,
            "step_streams": a.step_streams,
            "step_s": a.step_s,
            "max_streams": a.max_streams,
            "streams_sustained": sustained,
            "stalled": stall.is_some(),
            "stall_at_s": stall.map(|s| s.at.as_secs_f64()),
            "streams_at_stall": stall.map(|s| s.streams_running),
            "capped_without_stall": stall.is_none() && !a.count_stalls,
            "stall_events": stats.stall_events,
            "viewers": stats.viewers.to_json(),
            "at_sustained": at_sustained,
            "server_samples": samples.iter().map(|x| json!([x.t_s, x.cpu_s, x.rss_kib])).collect::<Vec<_>>(),
            "server_rss_kib_max": samples.iter().map(|x| x.rss_kib).max(),
        }),
    );
    merge(&mut out, stats.to_json(elapsed));
    Ok(out)
}

fn main() {
    if let Err(e) = run() {
        eprintln!("oasis-loadgen: {e:#}");
        std::process::exit(1);
    }
}

fn run() -> Result<()> {
    let cli = Cli::parse();
    let (result, out) = match &cli.mode {
        Mode::Get(a) => (run_get(a), &a.common.out),
        Mode::Idle(a) => (run_idle(a), &a.common.out),
        Mode::Paced(a) => (run_paced(a), &a.common.out),
        Mode::Hold(h) => return run_hold(h),
    };
    let value = result?;
    let line = serde_json::to_string(&value)? + "\n";
    match out {
        Some(path) => std::fs::write(path, line).with_context(|| format!("writing {path}"))?,
        None => print!("{line}"),
    }
    if value["requests_ok"].as_u64() == Some(0) && value["mode"] != "paced" {
        bail!("no request succeeded (see \"errors\" in the JSON)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_targets_are_accepted() {
        assert!(parse_url("http://127.0.0.1:8080/media/a").is_ok());
        assert!(parse_url("http://127.0.0.9:1/").is_ok());
        assert!(parse_url("http://localhost:80/x").is_ok());
        assert!(parse_url("http://10.0.0.1:80/x").is_err());
        assert!(parse_url("http://example.com/x").is_err());
        assert!(parse_url("https://127.0.0.1/x").is_err());
        let u = parse_url("http://127.0.0.1:8080/media/a b").err();
        assert!(u.is_some());
    }
}
