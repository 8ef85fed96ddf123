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
mod idle;
mod paced;
mod player;
mod playlist;
mod stats;
mod sys;

use anyhow::{bail, ensure, Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use client::{Order, PacedCfg, Shared, Target, WorkerCfg};
use player::MediaPlan;
use serde_json::{json, Value};
use stats::Stats;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

const DURATION_S_MAX: f64 = 3600.0;
const CONNECTIONS_MAX: usize = 100_000;
const REQUESTS_MAX: u64 = 1_000_000_000;
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
        Mode::Idle(a) => (idle::run_idle(a), &a.common.out),
        Mode::Paced(a) => (paced::run_paced(a), &a.common.out),
        Mode::Hold(h) => return idle::run_hold(h),
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
