//! The Log Manager's access log: one line per response in the combined format plus the request
//! time, written by its own thread through a bounded queue.
//!
//! Workers never write to a file: they format a line and `try_send` it. When the queue is full the
//! line is dropped and counted (`oasis_access_log_dropped_total`) rather than stalling a stream.
//! Each line is timestamped when the response completes (the time is passed in).

use std::fmt::Write as _;
use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::http::response::civil_from_days;
use crate::metrics::Metrics;

/// A batch of at least this many lines means lines arrive faster than one wake-up each.
const POLL_BATCH_LINES_MIN: usize = 2;
/// How long the log thread waits for more lines under load: the most a line waits for the disk.
const POLL_INTERVAL: std::time::Duration = std::time::Duration::from_millis(1);

/// Where access log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogTarget {
    Off,
    Stdout,
    File(PathBuf),
}

#[derive(Clone)]
pub struct AccessLog {
    tx: Option<SyncSender<String>>,
    metrics: Arc<Metrics>,
}

impl AccessLog {
    /// Starts the log thread (unless `Off`). The thread ends when every `AccessLog` clone is gone.
    pub fn start(
        target: LogTarget,
        queue_lines_max: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(AccessLog, Option<JoinHandle<()>>)> {
        let mut out: Box<dyn Write + Send> = match &target {
            LogTarget::Off => return Ok((AccessLog { tx: None, metrics }, None)),
            LogTarget::Stdout => Box::new(std::io::stdout()),
            LogTarget::File(p) => Box::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(p)
                    .map_err(|e| {
                        std::io::Error::new(
                            e.kind(),
                            format!("cannot open access log {}: {e}", p.display()),
                        )
                    })?,
            ),
        };
        let (tx, rx): (SyncSender<String>, Receiver<String>) = sync_channel(queue_lines_max);
        let handle = std::thread::Builder::new()
            .name("oasis-log".into())
            .spawn(move || {
                let mut buf = std::io::BufWriter::with_capacity(64 * 1024, &mut out);
                while let Ok(line) = rx.recv() {
                    let _ = buf.write_all(line.as_bytes());
                    let mut batch_lines = 1;
                    loop {
                        // Flush when the queue is momentarily empty, so lines appear promptly at
                        // low load and in batches at high load.
                        while let Ok(more) = rx.try_recv() {
                            let _ = buf.write_all(more.as_bytes());
                            batch_lines += 1;
                        }
                        let _ = buf.flush();
                        // Under load (more lines came while this batch was written), wait a
                        // moment for the next batch instead of blocking in `recv`: a blocked
                        // receiver costs the worker that sends the next line a futex wake-up.
                        if batch_lines < POLL_BATCH_LINES_MIN {
                            break;
                        }
                        std::thread::sleep(POLL_INTERVAL);
                        batch_lines = 0;
                    }
                }
            })?;
        Ok((
            AccessLog {
                tx: Some(tx),
                metrics,
            },
            Some(handle),
        ))
    }

    pub fn is_on(&self) -> bool {
        self.tx.is_some()
    }

    pub fn write(&self, line: String) {
        if let Some(tx) = &self.tx {
            match tx.try_send(line) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                    self.metrics.access_log_dropped.inc();
                }
            }
        }
    }
}

/// Formats the time of a log line like nginx's `$time_local` (in UTC): `22/Nov/2026:04:56:12 +0000`.
pub fn log_time(t: std::time::SystemTime) -> String {
    let mut out = String::with_capacity(26);
    push_log_time(&mut out, t);
    out
}

/// Appends [`log_time`] to `out`.
pub fn push_log_time(out: &mut String, t: std::time::SystemTime) {
    let secs = t
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let _ = write!(
        out,
        "{d:02}/{}/{y}:{:02}:{:02}:{:02} +0000",
        MONTHS[(m - 1) as usize],
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_format() {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_795_323_372);
        assert_eq!(log_time(t), "22/Nov/2026:04:56:12 +0000");
        assert_eq!(
            log_time(std::time::UNIX_EPOCH),
            "01/Jan/1970:00:00:00 +0000"
        );
    }
}
