//! Shipping logs to log servers from the binary: the `oasis log-ship` command (a file followed
//! like `tail -F`, or standard input) and `oasis serve`'s own logs (`[log] ship_to`: its events
//! through a `tracing` layer, its access log through a tee of the log thread).
//!
//! The shipping itself is `oasis_log::ship`; this module turns options and configuration into
//! its settings, handles signals and says what happened. It never touches the engine.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use oasis_log::ship::layer::ShipLayer;
use oasis_log::ship::{LineSender, ShipConfig, ShipStats, Shipper};

use crate::config::{Config, LogSection};

/// Events waiting to be shipped at most (lines; beyond, they are dropped and counted).
const EVENT_QUEUE_LINES: usize = 65_536;
/// Bytes of lines waiting to be shipped at most, per stream.
const QUEUE_BYTES_MAX: usize = 16 << 20;
/// At shutdown, the longest `oasis serve` waits for its last lines to be acknowledged.
const SERVE_STOP_GRACE: Duration = Duration::from_secs(5);

/// `oasis log-ship`'s options.
#[derive(clap::Args)]
pub struct LogShipArgs {
    /// Log servers, host:port, comma-separated; each connection goes to one picked at random.
    #[arg(long, value_name = "A,B,C", value_delimiter = ',', required = true)]
    servers: Vec<String>,
    /// The stream's name on the servers: A-Z a-z 0-9 . _ - and / (e.g. web-1/access).
    #[arg(long, value_name = "NAME")]
    stream: String,
    /// Where a followed file's acknowledged position is kept (default: FILE.oasis-ship). Not
    /// for standard input, whose bytes go after the end the servers hold.
    #[arg(long, value_name = "FILE")]
    state_file: Option<PathBuf>,
    /// A server that acknowledges nothing this long (seconds) while bytes are outstanding is
    /// left for another.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    ack_timeout_secs: u64,
    /// On SIGTERM or SIGINT, the longest (seconds) spent getting the last bytes acknowledged.
    #[arg(long, value_name = "SECS", default_value_t = 5)]
    stop_timeout_secs: u64,
    /// The file to follow (across rotations), or - for standard input.
    #[arg(value_name = "FILE", default_value = "-")]
    input: PathBuf,
}

/// `FILE.oasis-ship`, beside the file.
fn default_state_file(file: &std::path::Path) -> PathBuf {
    let mut s = file.as_os_str().to_owned();
    s.push(".oasis-ship");
    PathBuf::from(s)
}

fn summary(stream: &str, s: &ShipStats) -> String {
    format!(
        "stream {stream}: acknowledged up to offset {} ({} bytes sent, {} sent again in {} resends; {} connections, {} failed)",
        s.acked, s.sent_bytes, s.resent_bytes, s.resends, s.connects, s.failures
    )
}

/// Runs `oasis log-ship`: standard input until its end and every byte acknowledged (exit 0),
/// or a file until SIGTERM/SIGINT (then a bounded last try for acknowledgements, exit 0: what
/// is not acknowledged is shipped by the next run, from the state file).
pub fn log_ship(args: LogShipArgs) -> Result<()> {
    // First: a SIGTERM from here on is a request to stop cleanly.
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    crate::init_tracing("info", None);
    let mut cfg = ShipConfig::new(args.servers, args.stream.clone());
    cfg.ack_timeout = Duration::from_secs(args.ack_timeout_secs.max(1));
    cfg.check().map_err(|e| anyhow::anyhow!("{e}"))?;
    let grace = Duration::from_secs(args.stop_timeout_secs);
    let stdin = args.input.as_os_str() == "-";
    let shipper = if stdin {
        if args.state_file.is_some() {
            bail!("--state-file keeps a followed file's position; standard input has none (its bytes go after the end the servers hold): drop --state-file or give a FILE");
        }
        Shipper::read(cfg, std::io::stdin())?
    } else {
        let state = args
            .state_file
            .unwrap_or_else(|| default_state_file(&args.input));
        tracing::info!(
            "following {} (state in {})",
            args.input.display(),
            state.display()
        );
        Shipper::follow(cfg, &args.input, &state)?
    };
    loop {
        if stdin && shipper.wait(Duration::from_millis(200)) {
            eprintln!(
                "oasis log-ship: {}",
                summary(&args.stream, &shipper.stats())
            );
            return Ok(());
        }
        if !stdin {
            std::thread::sleep(Duration::from_millis(200));
        }
        if signals.pending().next().is_some() {
            break;
        }
    }
    let stats = shipper.shutdown(grace);
    eprintln!("oasis log-ship: stopped; {}", summary(&args.stream, &stats));
    let unacked = stats.read.saturating_sub(stats.acked);
    if stdin && unacked > 0 {
        bail!("{unacked} bytes read from standard input were not acknowledged by any server within {grace:?} and are lost");
    }
    if unacked > 0 {
        eprintln!(
            "oasis log-ship: {unacked} bytes not acknowledged yet stay in the file; the next run ships them"
        );
    }
    Ok(())
}

/// The node name of `[log]`: `node`, or the host name made fit for a stream name.
pub fn node_name(log: &LogSection) -> String {
    if !log.node.is_empty() {
        return log.node.clone();
    }
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let name: String = host
        .trim()
        .chars()
        .take(crate::config::NODE_BYTES_MAX)
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '-'
            }
        })
        .collect();
    if name.is_empty() || crate::config::node_problem(&name).is_some() {
        return "oasis".into();
    }
    name
}

/// The shippers of `oasis serve`'s own logs.
pub struct OwnLogs {
    events: Option<(Shipper, LineSender)>,
    access: Option<(Shipper, LineSender)>,
}

impl OwnLogs {
    /// Starts shipping `<node>/events` and `<node>/access` when `[log] ship_to` lists servers.
    pub fn start(cfg: &Config) -> Result<OwnLogs> {
        if cfg.log.ship_to.is_empty() {
            return Ok(OwnLogs {
                events: None,
                access: None,
            });
        }
        let node = node_name(&cfg.log);
        let start = |stream: String, lines: usize| {
            let config = ShipConfig::new(cfg.log.ship_to.clone(), stream.clone());
            Shipper::lines(config, lines, QUEUE_BYTES_MAX)
                .with_context(|| format!("shipping {stream} ([log] ship_to)"))
        };
        Ok(OwnLogs {
            events: Some(start(format!("{node}/events"), EVENT_QUEUE_LINES)?),
            access: Some(start(
                format!("{node}/access"),
                cfg.server.access_log_queue_lines,
            )?),
        })
    }

    /// The layer that ships events, when events are shipped.
    pub fn events_layer(&self) -> Option<ShipLayer> {
        self.events
            .as_ref()
            .map(|(_, lines)| ShipLayer::new(lines.clone()))
    }

    /// The access log's tee, when the access log is shipped.
    pub fn access_tee(&self) -> Option<oasis_net::access_log::LineTee> {
        let (_, lines) = self.access.as_ref()?;
        let lines = lines.clone();
        Some(Box::new(move |line: &str| {
            lines.send(line.as_bytes());
        }))
    }

    /// Stops shipping after a bounded last try to get what is queued acknowledged (the access
    /// log first: its thread has ended; the events last, to carry the shutdown's lines).
    pub fn stop(self) {
        for (shipper, lines) in [self.access, self.events].into_iter().flatten() {
            drop(lines);
            let stats = shipper.shutdown(SERVE_STOP_GRACE);
            let lost = stats.read.saturating_sub(stats.acked);
            if lost > 0 || stats.dropped_lines > 0 {
                tracing::warn!(
                    "log shipping: {lost} bytes not acknowledged at shutdown, {} lines dropped while the queue was full",
                    stats.dropped_lines
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_fit_stream_names() {
        let mut log = LogSection::default();
        let host = node_name(&log);
        assert!(crate::config::node_problem(&host).is_none(), "{host}");
        assert!(!host.is_empty());
        log.node = "web-1".into();
        assert_eq!(node_name(&log), "web-1");
        assert_eq!(
            default_state_file(std::path::Path::new("/var/log/app.log")),
            PathBuf::from("/var/log/app.log.oasis-ship")
        );
    }
}
