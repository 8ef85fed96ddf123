//! `oasis logs ls|cat|tail`: reading what log servers hold, from the servers (`--servers`) or
//! from their data directories in place (`--data-dir`, read-only, even beside a running logd).
//!
//! Glue: the protocol client, the read-only store and the assembly (each byte once, overlaps
//! checked, the first hole named) are `oasis-log`'s.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{bail, Result};

use oasis_log::assemble::{assemble, PieceSource};
use oasis_log::client::{list, Connection, DirSource, ServerSource};
use oasis_log::proto::Message;
use oasis_log::store::Store;

/// How long a server may take to connect or to send the next frame.
const SERVER_TIMEOUT: Duration = Duration::from_secs(30);
/// Bytes a follower holds that arrived ahead of a hole (from one server while another has not
/// sent the bytes before them); past it, the hole is reported and skipped.
const AHEAD_BYTES_MAX: usize = 64 << 20;

#[derive(clap::Subcommand)]
pub enum LogsCommand {
    /// List the streams log servers (or data directories) hold: one line per stream and source.
    #[command(after_help = "Examples:\n  \
        oasis logs ls --servers 127.0.0.1:7420,127.0.0.1:7421\n  \
        oasis logs ls web-1/ --data-dir /srv/logd-a")]
    Ls {
        /// Only streams whose names start with this.
        #[arg(value_name = "PREFIX", default_value = "")]
        prefix: String,
        #[command(flatten)]
        sources: Sources,
    },
    /// Write a stream to standard output, put together from every source by offset: each byte
    /// once, overlaps checked to be equal. Exits non-zero naming the first offset no source holds.
    #[command(after_help = "Examples:\n  \
        oasis logs cat web-1/access --servers 10.0.0.5:7420,10.0.0.6:7420\n  \
        oasis logs cat web-1/access --data-dir /srv/logd-a --data-dir /srv/logd-b")]
    Cat {
        /// The stream, e.g. web-1/access.
        #[arg(value_name = "STREAM")]
        stream: String,
        /// Start at this byte offset.
        #[arg(long, value_name = "OFFSET", default_value_t = 0)]
        from: u64,
        #[command(flatten)]
        sources: Sources,
    },
    /// Write a stream's last bytes; with -f, keep writing what the servers make durable.
    #[command(
        after_help = "Example:\n  oasis logs tail -f web-1/access --servers 10.0.0.5:7420,10.0.0.6:7420"
    )]
    Tail {
        /// Follow: keep writing new bytes as they become durable (until interrupted).
        #[arg(short = 'f', long)]
        follow: bool,
        /// The stream, e.g. web-1/access.
        #[arg(value_name = "STREAM")]
        stream: String,
        /// Start this many bytes before the stream's end.
        #[arg(long, value_name = "N", default_value_t = 4096)]
        bytes: u64,
        /// Log servers (host:port), comma-separated.
        #[arg(long, value_name = "ADDRS", value_delimiter = ',', required = true)]
        servers: Vec<String>,
    },
}

/// Where a stream is read from: servers, data directories, or both.
#[derive(clap::Args)]
pub struct Sources {
    /// Log servers (host:port), comma-separated.
    #[arg(
        long,
        value_name = "ADDRS",
        value_delimiter = ',',
        required_unless_present = "data_dir"
    )]
    servers: Vec<String>,
    /// A logd data directory, read in place; repeat for several.
    #[arg(long, value_name = "DIR")]
    data_dir: Vec<PathBuf>,
}

/// Runs an `oasis logs` command.
pub fn run(command: LogsCommand) -> Result<()> {
    match command {
        LogsCommand::Ls { prefix, sources } => ls(&prefix, &sources),
        LogsCommand::Cat {
            stream,
            from,
            sources,
        } => cat(&stream, from, &sources),
        LogsCommand::Tail {
            follow,
            stream,
            bytes,
            servers,
        } => tail(&stream, bytes, follow, &servers),
    }
}

fn ls(prefix: &str, sources: &Sources) -> Result<()> {
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for addr in &sources.servers {
        match list(addr, prefix, SERVER_TIMEOUT) {
            Ok(streams) => rows.extend(
                streams
                    .into_iter()
                    .map(|s| (s.stream, addr.clone(), s.first, s.durable_end, s.held)),
            ),
            Err(e) => failed.push(format!("{addr}: {e}")),
        }
    }
    for dir in &sources.data_dir {
        match Store::open_read_only(dir) {
            Ok((store, _)) => {
                for s in store.list(prefix) {
                    let ranges = s.ranges();
                    let first = ranges.first().map_or(0, |r| r.0);
                    let held = ranges.iter().map(|r| r.1 - r.0).sum();
                    let name = dir.display().to_string();
                    rows.push((s.name().to_string(), name, first, s.durable_end(), held));
                }
            }
            Err(e) => failed.push(e.to_string()),
        }
    }
    rows.sort();
    let mut out = std::io::stdout().lock();
    writeln!(out, "STREAM\tSOURCE\tFIRST\tEND\tHELD")?;
    for (stream, source, first, end, held) in rows {
        writeln!(out, "{stream}\t{source}\t{first}\t{end}\t{held}")?;
    }
    out.flush()?;
    if !failed.is_empty() {
        bail!("could not list: {}", failed.join("; "));
    }
    Ok(())
}

fn cat(stream: &str, from: u64, sources: &Sources) -> Result<()> {
    oasis_log::proto::validate_stream(stream)?;
    let mut opened: Vec<Box<dyn PieceSource>> = Vec::new();
    for addr in &sources.servers {
        match ServerSource::open(addr, stream, from, SERVER_TIMEOUT) {
            Ok(s) => opened.push(Box::new(s)),
            Err(e) => eprintln!("oasis: {addr}: {e}; reading the other sources"),
        }
    }
    for dir in &sources.data_dir {
        if let Some(s) = DirSource::open(dir, stream, from)? {
            opened.push(Box::new(s));
        }
    }
    if opened.is_empty() {
        bail!("no source holds stream {stream}");
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let done = assemble(&mut opened, from, &mut out);
    let warnings = match &done {
        Ok(d) => &d.warnings,
        Err(oasis_log::assemble::AssembleError::Gap { warnings, .. }) => warnings,
        Err(_) => &Vec::new(),
    };
    for w in warnings {
        eprintln!("oasis: {w}; the other sources were read");
    }
    let done = done?;
    if done.end == from {
        bail!("no source holds bytes of stream {stream} from offset {from}");
    }
    Ok(())
}

/// The largest durable end the servers report for `stream`.
fn stream_end(stream: &str, servers: &[String]) -> u64 {
    let mut end = 0;
    for addr in servers {
        match list(addr, stream, SERVER_TIMEOUT) {
            Ok(streams) => {
                if let Some(s) = streams.iter().find(|s| s.stream == stream) {
                    end = end.max(s.durable_end);
                }
            }
            Err(e) => eprintln!("oasis: {addr}: {e}"),
        }
    }
    end
}

fn tail(stream: &str, bytes: u64, follow: bool, servers: &[String]) -> Result<()> {
    oasis_log::proto::validate_stream(stream)?;
    let from = stream_end(stream, servers).saturating_sub(bytes);
    if !follow {
        return cat(
            stream,
            from,
            &Sources {
                servers: servers.to_vec(),
                data_dir: Vec::new(),
            },
        );
    }
    let (tx, rx) = mpsc::sync_channel::<(u64, Vec<u8>)>(64);
    for addr in servers {
        let (tx, addr, stream) = (tx.clone(), addr.clone(), stream.to_string());
        std::thread::spawn(move || follow_server(&addr, &stream, from, &tx));
    }
    drop(tx);
    let mut out = std::io::stdout().lock();
    let mut pos = from;
    // Pieces that arrived ahead of `pos`, by offset.
    let mut ahead: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    let mut ahead_bytes = 0;
    for (offset, b) in rx {
        ahead_bytes += b.len();
        ahead.insert(offset, b);
        while let Some(entry) = ahead.first_entry() {
            let (o, len) = (*entry.key(), entry.get().len() as u64);
            if o > pos && ahead_bytes <= AHEAD_BYTES_MAX {
                break;
            }
            let b = entry.remove();
            ahead_bytes -= b.len();
            if o > pos {
                eprintln!("oasis: no server has sent bytes {pos} to {o} of {stream}; skipped");
                pos = o;
            }
            if o + len > pos {
                out.write_all(&b[(pos - o) as usize..])?;
                pos = o + len;
            }
        }
        out.flush()?;
    }
    bail!("every server stopped answering")
}

/// Follows `stream` on one server from `from`, sending its chunks on; reconnects (from where it
/// got to) after a failure, every few seconds, until the reader is gone.
fn follow_server(addr: &str, stream: &str, mut from: u64, tx: &mpsc::SyncSender<(u64, Vec<u8>)>) {
    loop {
        let failure = match Connection::open(addr, None) {
            Ok(mut c) => {
                let asked = c.send(&Message::Read {
                    stream: stream.to_string(),
                    from,
                    follow: true,
                });
                loop {
                    match asked
                        .as_ref()
                        .map_err(|e| e.to_string())
                        .and_then(|()| c.next_message().map_err(|e| e.to_string()))
                    {
                        Ok(Some(Message::Chunk { offset, bytes })) => {
                            from = offset + bytes.len() as u64;
                            if tx.send((offset, bytes)).is_err() {
                                return;
                            }
                        }
                        Ok(Some(Message::Gap { .. } | Message::End { .. })) => {}
                        Ok(None) => break "the server closed the connection".to_string(),
                        Ok(Some(m)) => break format!("unexpected {m:?}"),
                        Err(e) => break e,
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        eprintln!("oasis: {addr}: {failure}; trying again in 3 s");
        std::thread::sleep(Duration::from_secs(3));
    }
}
