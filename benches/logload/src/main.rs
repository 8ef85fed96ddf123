//! `oasis-logload`: the client side and the baselines of the log server's benchmarks
//! (`benches/logd.sh`). Every mode sends the same bytes (`data`: syslog-style lines, one stream
//! per connection) so throughputs compare:
//!
//! - `ship`: N shippers over the log protocol to `oasis logd`, timed to the last `ACK`;
//! - `plain`: the same lines over plain TCP (to the `sink` baseline, `nc`, or rsyslog), timed to
//!   the receiver's close with `--wait-close`; `--reconnect` survives a killed receiver;
//! - `sink`: the machine's own limit: what it receives into a file per connection with the
//!   server's `fdatasync` cadence (or none);
//! - `hold`: 10,000 shippers held at once: memory per connection, peak, ack latency at half;
//! - `write`: the lines into files (for `oasis log-ship`), `count`: lost and repeated lines.
//!
//! One JSON object per run on standard output. Loopback only, by the script's choice.

mod data;
mod hold;
mod plain;
mod ship;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use clap::{Args, Parser, Subcommand};
use serde_json::json;

/// Connections a `ship` or `plain` run may open.
const CONNS_MAX: usize = 1024;
/// Bytes per connection at most.
const BYTES_MAX: u64 = 16 << 30;

#[derive(Parser)]
#[command(about = "Client and baselines for the Oasis log server's benchmarks")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

/// Where to send and how much: one stream per connection.
#[derive(Args)]
struct Load {
    /// host:port (`plain`: a comma-separated list, connection i to the i-th, round robin).
    #[arg(long)]
    addr: String,
    #[arg(long, default_value_t = 4)]
    conns: usize,
    /// Bytes per connection.
    #[arg(long)]
    bytes: u64,
}

#[derive(Subcommand)]
enum Mode {
    /// Ship N streams over the log protocol; timed to the last ACK.
    Ship {
        #[command(flatten)]
        load: Load,
        #[arg(long, default_value_t = 256 * 1024)]
        frame: usize,
        /// Unacknowledged bytes per connection at most (as `oasis log-ship`: 4 MiB).
        #[arg(long, default_value_t = 4 << 20)]
        window: u64,
        /// Stream names are PREFIX/N.
        #[arg(long, default_value = "bench")]
        prefix: String,
    },
    /// Send the same lines over plain TCP.
    Plain {
        #[command(flatten)]
        load: Load,
        /// Shut down the sending side and wait for the receiver to close.
        #[arg(long)]
        wait_close: bool,
        /// Connect again after a failed write and go on from the cut line.
        #[arg(long)]
        reconnect: bool,
    },
    /// Receive into a file per connection with a sync cadence, until killed.
    Sink {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        dir: PathBuf,
        /// No fdatasync at all.
        #[arg(long)]
        no_sync: bool,
        #[arg(long, default_value_t = 5)]
        sync_interval_ms: u64,
        #[arg(long, default_value_t = 1 << 20)]
        sync_bytes: u64,
    },
    /// Hold many shippers at once: memory, peak, ack latency at half the peak.
    Hold {
        #[arg(long)]
        addr: String,
        #[arg(long, default_value_t = 10_000)]
        conns: usize,
        #[arg(long, default_value_t = 4096)]
        frame: usize,
        /// Seconds of each load phase.
        #[arg(long, default_value_t = 10)]
        phase_s: u64,
        /// The server's process id, for its RSS.
        #[arg(long)]
        rss_pid: Option<u32>,
        #[arg(long, default_value = "hold")]
        prefix: String,
    },
    /// Write connection N's lines into DIR/N.log, for N below CONNS.
    Write {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long, default_value_t = 4)]
        conns: usize,
        #[arg(long)]
        bytes: u64,
    },
    /// Count lost, repeated and corrupt lines in FILES against what CONNS connections sent.
    Count {
        #[arg(long, default_value_t = 4)]
        conns: usize,
        #[arg(long)]
        bytes: u64,
        files: Vec<PathBuf>,
    },
}

/// Each connection's stream, made before any clock starts.
fn streams(conns: usize, bytes: u64) -> Result<Vec<Arc<Vec<u8>>>> {
    ensure!(
        (1..=CONNS_MAX).contains(&conns),
        "--conns between 1 and {CONNS_MAX}"
    );
    ensure!(
        (1..=BYTES_MAX).contains(&bytes),
        "--bytes between 1 and {BYTES_MAX}"
    );
    Ok((0..conns)
        .map(|c| Arc::new(data::stream(c as u32, bytes).0))
        .collect())
}

/// Runs `f` on every stream in its own thread; the seconds until the last is done.
fn timed<T: Send + 'static>(
    streams: &[Arc<Vec<u8>>],
    f: impl Fn(usize, Arc<Vec<u8>>) -> Result<T> + Send + Sync + 'static,
) -> Result<(f64, Vec<T>)> {
    let f = Arc::new(f);
    let began = Instant::now();
    let threads: Vec<_> = streams
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (f, s) = (Arc::clone(&f), Arc::clone(s));
            std::thread::spawn(move || f(i, s))
        })
        .collect();
    let mut out = Vec::new();
    for t in threads {
        out.push(t.join().expect("a connection's thread panicked")?);
    }
    Ok((began.elapsed().as_secs_f64(), out))
}

fn main() -> Result<()> {
    let value = match Cli::parse().mode {
        Mode::Ship {
            load: Load { addr, conns, bytes },
            frame,
            window,
            prefix,
        } => {
            let s = streams(conns, bytes)?;
            let total: usize = s.iter().map(|s| s.len()).sum();
            let (secs, results) = timed(&s, move |i, d| {
                ship::ship(&addr, &format!("{prefix}/{i}"), &d, frame, window)
            })?;
            let mut hist = hdrhistogram::Histogram::<u64>::new(3)?;
            for r in &results {
                hist.add(&r.latency_us)?;
            }
            json!({
                "mode": "ship", "conns": conns, "bytes": total, "secs": secs,
                "bytes_per_s": total as f64 / secs,
                "ack_p50_us": hist.value_at_quantile(0.5),
                "ack_p99_us": hist.value_at_quantile(0.99),
            })
        }
        Mode::Plain {
            load: Load { addr, conns, bytes },
            wait_close,
            reconnect,
        } => {
            let s = streams(conns, bytes)?;
            let total: usize = s.iter().map(|s| s.len()).sum();
            // Connection i goes to the i-th address of a list (one `nc` each), round robin.
            let addrs: Vec<String> = addr.split(',').map(str::to_string).collect();
            let (secs, results) = timed(&s, move |i, d| {
                plain::send(&addrs[i % addrs.len()], &d, wait_close, reconnect)
            })?;
            json!({
                "mode": "plain", "conns": conns, "bytes": total, "secs": secs,
                "bytes_per_s": total as f64 / secs,
                "reconnects": results.iter().map(|r| r.reconnects).sum::<u64>(),
            })
        }
        Mode::Sink {
            listen,
            dir,
            no_sync,
            sync_interval_ms,
            sync_bytes,
        } => {
            let cadence = plain::Cadence {
                sync: !no_sync,
                interval: Duration::from_millis(sync_interval_ms),
                bytes: sync_bytes,
            };
            plain::sink(&listen, &dir, cadence)?;
            return Ok(());
        }
        Mode::Hold {
            addr,
            conns,
            frame,
            phase_s,
            rss_pid,
            prefix,
        } => {
            ensure!((1..=50_000).contains(&conns), "--conns between 1 and 50000");
            ensure!(
                (1..=1 << 20).contains(&frame),
                "--frame between 1 and 1048576"
            );
            hold::run(&hold::HoldCfg {
                addr,
                conns,
                frame,
                phase: Duration::from_secs(phase_s.clamp(1, 600)),
                rss_pid,
                prefix,
            })?
        }
        Mode::Write { dir, conns, bytes } => {
            std::fs::create_dir_all(&dir)?;
            let mut lines = Vec::new();
            for (c, s) in streams(conns, bytes)?.iter().enumerate() {
                std::fs::write(dir.join(format!("{c}.log")), &s[..])?;
                lines.push(data::stream(c as u32, bytes).1);
            }
            json!({ "mode": "write", "conns": conns, "lines": lines })
        }
        Mode::Count {
            conns,
            bytes,
            files,
        } => {
            let lines: Vec<u64> = (0..conns)
                .map(|c| data::stream(c as u32, bytes).1)
                .collect();
            let contents = files
                .iter()
                .map(std::fs::read)
                .collect::<std::io::Result<Vec<_>>>()?;
            let t = data::tally(&lines, contents.iter().map(|c| &c[..]));
            json!({
                "mode": "count", "sent": lines.iter().sum::<u64>(), "held": t.held,
                "lost": t.lost, "duplicated": t.duplicated, "corrupt": t.corrupt,
            })
        }
    };
    println!("{value}");
    Ok(())
}
