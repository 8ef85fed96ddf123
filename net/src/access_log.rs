//! The Log Manager's access log: one line per response in the combined format plus the request
//! time, written by its own thread through a bounded queue.
//!
//! Workers never write to a file: they format a line and `try_send` it. When the queue is full the
//! line is dropped and counted (`oasis_access_log_dropped_total`) rather than stalling a stream.
//! Each line is timestamped when the response completes (the time is passed in).
//!
//! A tee ([`AccessLog::start_teed`]) hands every line, on the log thread, to a second sink as
//! well: `oasis serve` ships the access log to log servers that way (`[log] ship_to`). The tee
//! must not block (the shipper's queue drops and counts instead); with the target `Off` the
//! lines go to the tee alone.

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

/// A second destination of every access log line, called on the log thread; must not block.
pub type LineTee = Box<dyn FnMut(&str) + Send>;

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
        Self::start_teed(target, None, queue_lines_max, metrics)
    }

    /// As [`AccessLog::start`], and every line also goes to `tee` (when given; then the thread
    /// runs even for `Off`, whose lines go to the tee alone).
    pub fn start_teed(
        target: LogTarget,
        mut tee: Option<LineTee>,
        queue_lines_max: usize,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(AccessLog, Option<JoinHandle<()>>)> {
        let mut out: Box<dyn Write + Send> = match &target {
            LogTarget::Off if tee.is_none() => return Ok((AccessLog { tx: None, metrics }, None)),
            LogTarget::Off => Box::new(std::io::sink()),
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
                let mut put = |buf: &mut std::io::BufWriter<_>, line: &str| {
                    let _ = buf.write_all(line.as_bytes());
                    if let Some(tee) = tee.as_mut() {
                        tee(line);
                    }
                };
                while let Ok(line) = rx.recv() {
                    put(&mut buf, &line);
                    let mut batch_lines = 1;
                    loop {
                        // Flush when the queue is momentarily empty, so lines appear promptly at
                        // low load and in batches at high load.
                        while let Ok(more) = rx.try_recv() {
                            put(&mut buf, &more);
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
    fn a_tee_gets_every_line_even_with_the_log_off() {
        use oasis_engine::resource::{AccountLimits, ResourceLimits};
        let any = AccountLimits::new(1 << 40);
        let rm = oasis_engine::ResourceManager::new(&ResourceLimits {
            memory_bytes: any,
            net_bps: vec![any],
            disk_read_bps: any,
            disk_space_bytes: any,
            connections: any,
            open_files: any,
        });
        let metrics = Metrics::new(rm);
        let got = Arc::new(std::sync::Mutex::new(String::new()));
        let tee = {
            let got = Arc::clone(&got);
            Box::new(move |line: &str| got.lock().unwrap().push_str(line)) as LineTee
        };
        let (log, thread) = AccessLog::start_teed(LogTarget::Off, Some(tee), 16, metrics).unwrap();
        assert!(log.is_on());
        log.write("a\n".into());
        log.write("b\n".into());
        drop(log);
        thread.unwrap().join().unwrap();
        assert_eq!(*got.lock().unwrap(), "a\nb\n");
    }

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
