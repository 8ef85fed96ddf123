//! `hold`: many shippers held by one server at once (10,000 in the benchmark), each its own
//! connection and stream. Three phases: connect them all (`HELLO`, `WELCOME`) and let them sit;
//! the peak, each sending a frame and waiting for its `ACK` before the next, as fast as the
//! server goes; then half that load, spread evenly over every connection, measuring each frame's
//! time from its write to its `ACK`. The server's RSS is read before, while they sit, and
//! during the half load.
//!
//! One tokio runtime of two threads; a task per connection; every wait bounded.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use oasis_log::proto::{encode, encode_data, Decoder, Message, VERSION};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Connects in flight at once (the server's accept queue must not overflow).
const CONNECTS_IN_FLIGHT: usize = 256;
/// A connect, a `WELCOME` or an `ACK` that takes longer fails the run.
const WAIT_MAX: Duration = Duration::from_secs(60);

/// What a `hold` run does.
pub struct HoldCfg {
    pub addr: String,
    pub conns: usize,
    pub frame: usize,
    pub phase: Duration,
    pub rss_pid: Option<u32>,
    pub prefix: String,
}

/// A held shipper: its socket, decoder and next offset.
struct Held {
    s: TcpStream,
    d: Decoder,
    pos: u64,
    buf: Vec<u8>,
}

fn rss_kib(pid: Option<u32>) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{}/status", pid?)).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

async fn next_message(h: &mut Held) -> Result<Message> {
    loop {
        if let Some(m) = h.d.next()? {
            return Ok(m);
        }
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(WAIT_MAX, h.s.read(&mut buf))
            .await
            .context("no answer from the server")??;
        if n == 0 {
            bail!("the server closed a connection");
        }
        h.d.feed(&buf[..n]);
    }
}

async fn open(addr: String, stream: String) -> Result<Held> {
    let s = tokio::time::timeout(WAIT_MAX, TcpStream::connect(&addr))
        .await
        .context("connect timed out")??;
    s.set_nodelay(true)?;
    let mut h = Held {
        s,
        d: Decoder::new(),
        pos: 0,
        buf: Vec::new(),
    };
    encode(
        &Message::Hello {
            version: VERSION,
            stream,
            oldest_unacked: 0,
        },
        &mut h.buf,
    );
    h.s.write_all(&h.buf).await?;
    match next_message(&mut h).await? {
        Message::Welcome { expect, .. } => h.pos = expect,
        m => bail!("expected WELCOME, got {m:?}"),
    }
    Ok(h)
}

/// Sends one frame of `data` and waits for the `ACK` past it; the time that took.
async fn frame(h: &mut Held, data: &[u8]) -> Result<Duration> {
    h.buf.clear();
    encode_data(h.pos, data, &mut h.buf);
    let sent = Instant::now();
    h.s.write_all(&h.buf).await?;
    h.pos += data.len() as u64;
    loop {
        match next_message(h).await? {
            Message::Ack { durable_end } if durable_end >= h.pos => return Ok(sent.elapsed()),
            Message::Ack { .. } => {}
            m => bail!("expected ACK, got {m:?}"),
        }
    }
}

/// One phase over every held shipper: back to back (`interval` `None`) or one frame every
/// `interval` each, from a random start; until `until`.
async fn phase(
    held: Vec<Held>,
    data: Arc<Vec<u8>>,
    frame_bytes: usize,
    interval: Option<Duration>,
    until: Instant,
) -> Result<(Vec<Held>, Histogram<u64>, u64)> {
    let bytes = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::with_capacity(held.len());
    for (i, mut h) in held.into_iter().enumerate() {
        let (data, bytes) = (Arc::clone(&data), Arc::clone(&bytes));
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new(3).expect("a histogram");
            let start = (i * 7919 * frame_bytes) % (data.len() - frame_bytes);
            let mut next = Instant::now();
            if let Some(every) = interval {
                next += every.mul_f64(fastrand_like(i));
            }
            while next < until {
                tokio::time::sleep_until(next.into()).await;
                let took = frame(&mut h, &data[start..start + frame_bytes]).await?;
                let _ = hist.record(took.as_micros() as u64);
                bytes.fetch_add(frame_bytes as u64, Ordering::Relaxed);
                next = match interval {
                    Some(every) => (next + every).max(Instant::now()),
                    None => Instant::now(),
                };
            }
            anyhow::Ok((h, hist))
        }));
    }
    let mut all = Histogram::<u64>::new(3).expect("a histogram");
    let mut back = Vec::with_capacity(tasks.len());
    for t in tasks {
        let (h, hist) = t.await??;
        all.add(&hist)?;
        back.push(h);
    }
    Ok((back, all, bytes.load(Ordering::Relaxed)))
}

/// A number in [0, 1) from `i`, spread evenly enough to stagger the connections' starts.
fn fastrand_like(i: usize) -> f64 {
    ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 11) as f64 / (1u64 << 53) as f64
}

fn percentiles(h: &Histogram<u64>) -> Value {
    json!({
        "frames": h.len(),
        "p50_us": h.value_at_quantile(0.5),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
    })
}

/// Runs the three phases; one JSON object of what was measured.
pub fn run(cfg: &HoldCfg) -> Result<Value> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let data = Arc::new(crate::data::stream(0, 16 << 20).0);
        let rss_before = rss_kib(cfg.rss_pid);
        let began = Instant::now();
        let gate = Arc::new(Semaphore::new(CONNECTS_IN_FLIGHT));
        let mut opening = Vec::with_capacity(cfg.conns);
        for i in 0..cfg.conns {
            let (gate, addr) = (Arc::clone(&gate), cfg.addr.clone());
            let stream = format!("{}/{i}", cfg.prefix);
            opening.push(tokio::spawn(async move {
                let _permit = gate.acquire_owned().await?;
                open(addr, stream).await
            }));
        }
        let mut held = Vec::with_capacity(cfg.conns);
        for t in opening {
            held.push(t.await??);
        }
        let connect_s = began.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let rss_idle = rss_kib(cfg.rss_pid);

        let t = Instant::now();
        let (held, peak_hist, peak_bytes) =
            phase(held, Arc::clone(&data), cfg.frame, None, t + cfg.phase).await?;
        let peak_bps = peak_bytes as f64 / t.elapsed().as_secs_f64();

        // Half the peak, spread over every connection.
        let frames_per_s = peak_bps / 2.0 / cfg.frame as f64;
        let every = Duration::from_secs_f64(cfg.conns as f64 / frames_per_s);
        let t = Instant::now();
        let pid = cfg.rss_pid;
        let half = cfg.phase / 2;
        let rss_mid = tokio::spawn(async move {
            tokio::time::sleep(half).await;
            rss_kib(pid)
        });
        let (held, half_hist, half_bytes) =
            phase(held, data, cfg.frame, Some(every), t + cfg.phase).await?;
        let half_bps = half_bytes as f64 / t.elapsed().as_secs_f64();
        let rss_loaded = rss_mid.await?;
        let per_conn =
            |rss: Option<u64>| Some((rss? as f64 - rss_before? as f64) * 1024.0 / cfg.conns as f64);
        drop(held);
        Ok(json!({
            "mode": "hold",
            "conns": cfg.conns,
            "frame_bytes": cfg.frame,
            "phase_s": cfg.phase.as_secs_f64(),
            "connect_s": connect_s,
            "rss_kib_before": rss_before,
            "rss_kib_idle": rss_idle,
            "rss_kib_half_load": rss_loaded,
            "rss_bytes_per_conn_idle": per_conn(rss_idle),
            "rss_bytes_per_conn_half_load": per_conn(rss_loaded),
            "peak_bytes_per_s": peak_bps,
            "peak_ack": percentiles(&peak_hist),
            "half_bytes_per_s": half_bps,
            "half_interval_ms_per_conn": every.as_secs_f64() * 1e3,
            "half_ack": percentiles(&half_hist),
        }))
    })
}
