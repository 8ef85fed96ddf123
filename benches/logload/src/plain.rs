//! Plain TCP: a sender of raw lines (no framing, no acknowledgement: what `logger --tcp` or a
//! syslog forwarder without RELP does) and `sink`, the baseline receiver that writes what it
//! receives into a file per connection with the log server's `fdatasync` cadence.
//!
//! The sender, told to reconnect, does what such a client can: after a failed write it connects
//! again and goes on from the start of the line the failure interrupted (what the kernel had
//! taken before is gone with the dead server). The sink, at a connection's end, syncs and then
//! closes it, so a sender that waits for the close has the time to durable bytes.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// How long a reconnecting sender keeps trying.
const RECONNECT_FOR: Duration = Duration::from_secs(120);
/// Bytes written at a time.
const WRITE_BYTES: usize = 256 * 1024;

fn connect(addr: &str, reconnect: bool) -> Result<TcpStream> {
    let until = Instant::now() + RECONNECT_FOR;
    loop {
        match TcpStream::connect(addr) {
            Ok(s) => {
                s.set_nodelay(true)?;
                s.set_write_timeout(Some(Duration::from_secs(60)))?;
                return Ok(s);
            }
            Err(e) if !reconnect || Instant::now() >= until => {
                return Err(e).with_context(|| format!("connecting to {addr}"))
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// What a plain sender did.
#[derive(Debug, Default)]
pub struct Sent {
    /// Connections made after the first.
    pub reconnects: u64,
}

/// Sends `data` to `addr`. With `wait_close`, then shuts its side and waits until the receiver
/// closes (the sink does once all is synced); with `reconnect`, survives a dead receiver.
pub fn send(addr: &str, data: &[u8], wait_close: bool, reconnect: bool) -> Result<Sent> {
    let mut sent = Sent::default();
    let mut s = connect(addr, reconnect)?;
    let mut pos = 0;
    while pos < data.len() {
        let end = (pos + WRITE_BYTES).min(data.len());
        match s.write(&data[pos..end]) {
            Ok(0) => bail!("{addr} takes no more bytes"),
            Ok(n) => pos += n,
            Err(e) if !reconnect => return Err(e).context(format!("sending to {addr}")),
            Err(_) => {
                // Back to the start of the line the failure cut.
                pos = data[..pos]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1);
                s = connect(addr, true)?;
                sent.reconnects += 1;
            }
        }
    }
    if wait_close {
        s.shutdown(Shutdown::Write)?;
        s.set_read_timeout(Some(Duration::from_secs(120)))?;
        let mut buf = [0u8; 4096];
        while s.read(&mut buf)? > 0 {}
    }
    Ok(sent)
}

/// When the sink syncs.
#[derive(Clone, Copy, Debug)]
pub struct Cadence {
    /// `fdatasync` at all.
    pub sync: bool,
    /// At most this long after the first unsynced write...
    pub interval: Duration,
    /// ... or as soon as this many bytes are unsynced.
    pub bytes: u64,
}

fn sink_conn(mut s: TcpStream, path: &Path, cadence: Cadence) -> Result<()> {
    let mut file = File::create(path)?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut unsynced = 0u64;
    let mut first_unsynced: Option<Instant> = None;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        file.write_all(&buf[..n])?;
        if !cadence.sync {
            continue;
        }
        unsynced += n as u64;
        let since = *first_unsynced.get_or_insert_with(Instant::now);
        if unsynced >= cadence.bytes || since.elapsed() >= cadence.interval {
            file.sync_data()?;
            unsynced = 0;
            first_unsynced = None;
        }
    }
    if cadence.sync {
        file.sync_data()?;
    }
    Ok(())
}

/// Receives connections on `listen` until killed, each into `dir/conn-N`.
pub fn sink(listen: &str, dir: &Path, cadence: Cadence) -> Result<()> {
    let listener = TcpListener::bind(listen).with_context(|| format!("binding {listen}"))?;
    std::fs::create_dir_all(dir)?;
    eprintln!("sink listening on {}", listener.local_addr()?);
    for (n, s) in listener.incoming().enumerate() {
        let s = s?;
        let path = dir.join(format!("conn-{n}"));
        std::thread::spawn(move || {
            if let Err(e) = sink_conn(s, &path, cadence) {
                eprintln!("sink: {}: {e:#}", path.display());
            }
        });
    }
    Ok(())
}
