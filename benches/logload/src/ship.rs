//! `ship`: N shippers over the log protocol, as fast as the server acknowledges. Each connection
//! sends its own stream (`HELLO`, then `DATA` frames from the offset `WELCOME` names) keeping at
//! most a window of bytes unacknowledged, as `oasis log-ship` does, and ends when the server has
//! acknowledged all of it. Measures the time to the last `ACK` and each frame's time from its
//! write to the `ACK` that covers it.
//!
//! Two threads per connection (frames out, acknowledgements in), blocking sockets with timeouts.

use std::collections::VecDeque;
use std::io::{IoSlice, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;
use oasis_log::proto::{data_frame_parts, encode, Decoder, Message};

/// Every wait on the server is bounded by this.
const IO_TIMEOUT: Duration = Duration::from_secs(60);

/// What one connection's acknowledgement reader and sender share.
struct Acks {
    state: Mutex<AckState>,
    moved: Condvar,
}

struct AckState {
    acked: u64,
    /// (end offset, when written) of frames not yet acknowledged.
    sent: VecDeque<(u64, Instant)>,
    failed: Option<String>,
}

/// One connection's outcome.
pub struct ConnResult {
    /// Latencies from a frame's write to its acknowledgement, in microseconds.
    pub latency_us: Histogram<u64>,
}

/// Writes every byte of `parts`, in order, with vectored writes (no copy into a frame).
fn write_parts(s: &mut TcpStream, mut parts: Vec<&[u8]>) -> std::io::Result<()> {
    while !parts.is_empty() {
        let slices: Vec<IoSlice<'_>> = parts.iter().map(|p| IoSlice::new(p)).collect();
        let mut n = s.write_vectored(&slices)?;
        if n == 0 {
            return Err(std::io::ErrorKind::WriteZero.into());
        }
        while n > 0 {
            if n >= parts[0].len() {
                n -= parts[0].len();
                parts.remove(0);
            } else {
                parts[0] = &parts[0][n..];
                n = 0;
            }
        }
    }
    Ok(())
}

/// Opens a writer connection for `stream`: the offset the server wants from.
pub fn hello(addr: &str, stream: &str) -> Result<(TcpStream, u64)> {
    let mut s = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
    s.set_nodelay(true)?;
    s.set_read_timeout(Some(IO_TIMEOUT))?;
    s.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut out = Vec::new();
    encode(
        &Message::Hello {
            version: oasis_log::proto::VERSION,
            stream: stream.to_string(),
            oldest_unacked: 0,
        },
        &mut out,
    );
    s.write_all(&out)?;
    let mut d = Decoder::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(m) = d.next()? {
            return match m {
                Message::Welcome { expect, .. } => Ok((s, expect)),
                m => bail!("{addr}: expected WELCOME for {stream}, got {m:?}"),
            };
        }
        let n = s.read(&mut buf)?;
        if n == 0 {
            bail!("{addr} closed the connection before WELCOME");
        }
        d.feed(&buf[..n]);
    }
}

fn read_acks(mut s: TcpStream, acks: &Acks, end: u64) -> Histogram<u64> {
    let mut hist = Histogram::<u64>::new(3).expect("a histogram");
    let mut d = Decoder::new();
    let mut buf = vec![0u8; 64 * 1024];
    let why = loop {
        let msg = match d.next() {
            Ok(Some(m)) => m,
            Ok(None) => match s.read(&mut buf) {
                Ok(0) => break "the server closed the connection".to_string(),
                Ok(n) => {
                    d.feed(&buf[..n]);
                    continue;
                }
                Err(e) => break format!("reading acknowledgements: {e}"),
            },
            Err(e) => break format!("a corrupt frame: {e}"),
        };
        let Message::Ack { durable_end } = msg else {
            break format!("unexpected {msg:?}");
        };
        let now = Instant::now();
        let mut st = acks.state.lock().unwrap();
        st.acked = st.acked.max(durable_end);
        while st.sent.front().is_some_and(|&(e, _)| e <= durable_end) {
            let (_, at) = st.sent.pop_front().expect("a frame");
            let _ = hist.record(now.duration_since(at).as_micros() as u64);
        }
        drop(st);
        acks.moved.notify_all();
        if durable_end >= end {
            return hist;
        }
    };
    acks.state.lock().unwrap().failed = Some(why);
    acks.moved.notify_all();
    hist
}

/// Ships `data` as `stream` to `addr` in frames of `frame` bytes, at most `window` bytes
/// unacknowledged; returns when all of it is acknowledged.
pub fn ship(
    addr: &str,
    stream: &str,
    data: &[u8],
    frame: usize,
    window: u64,
) -> Result<ConnResult> {
    let (mut s, expect) = hello(addr, stream)?;
    let end = data.len() as u64;
    if expect != 0 {
        bail!("{addr} already holds {stream} to {expect}: give the run fresh stream names");
    }
    let acks = Arc::new(Acks {
        state: Mutex::new(AckState {
            acked: 0,
            sent: VecDeque::new(),
            failed: None,
        }),
        moved: Condvar::new(),
    });
    let reader = {
        let (r, acks) = (s.try_clone()?, Arc::clone(&acks));
        std::thread::spawn(move || read_acks(r, &acks, end))
    };
    let mut pos = 0u64;
    while pos < end {
        let n = (end - pos).min(frame as u64);
        {
            let mut st = acks.state.lock().unwrap();
            while pos + n - st.acked > window && st.failed.is_none() {
                st = acks.moved.wait(st).unwrap();
            }
            if let Some(why) = &st.failed {
                bail!("{stream}: {why}");
            }
            st.sent.push_back((pos + n, Instant::now()));
        }
        let payload = &data[pos as usize..(pos + n) as usize];
        let (head, crc) = data_frame_parts(pos, payload.len(), crc32c::crc32c(payload));
        write_parts(&mut s, vec![&head[..], payload, &crc[..]])
            .with_context(|| format!("{stream}: sending at {pos}"))?;
        pos += n;
    }
    let latency_us = reader.join().expect("the acknowledgement reader panicked");
    if let Some(why) = &acks.state.lock().unwrap().failed {
        bail!("{stream}: {why}");
    }
    Ok(ConnResult { latency_us })
}
