//! Glue for online monitoring: `oasis monitor` (binds, starts `oasis-monitor`'s threads, waits for
//! SIGTERM or SIGINT), and [`Reporter`], which `serve`, `logd` and `agent` tick from their
//! supervising (main) thread to send their status datagrams: never from an engine worker.
//!
//! The codec, the table and the dashboard are `oasis-monitor`'s; only the filling of a status
//! from this binary's modules is here.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use oasis_monitor::{Account, Level, Role, Sender, Status};

use crate::config::MonitorSection;

/// `oasis monitor` options.
#[derive(clap::Args)]
pub struct MonitorArgs {
    /// UDP address the status datagrams arrive at.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7470")]
    udp: SocketAddr,
    /// HTTP address of the dashboard, /api/nodes, /metrics and /events.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7471")]
    http: SocketAddr,
    /// The key shared with every sender (`[monitor] key`): unsigned datagrams are then dropped.
    #[arg(
        long,
        value_name = "KEY",
        env = "OASIS_MONITOR_KEY",
        hide_env_values = true
    )]
    key: Option<String>,
    /// Most nodes held; past it the stale node heard from longest ago makes room.
    #[arg(long, value_name = "N", default_value_t = 4096)]
    nodes_max: usize,
}

/// Runs a monitor until SIGTERM or SIGINT.
pub fn run(args: MonitorArgs) -> Result<()> {
    crate::init_tracing("info", None);
    if args.key.as_deref().is_some_and(|k| k.len() < 16) {
        anyhow::bail!("--key must be 16 bytes or more (the same as the senders' [monitor] key)");
    }
    if !(1..=1_000_000).contains(&args.nodes_max) {
        anyhow::bail!("--nodes-max must be between 1 and 1000000");
    }
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let mut cfg = oasis_monitor::MonitorConfig::new(args.udp, args.http, args.key);
    cfg.nodes_max = args.nodes_max;
    let keyed = cfg.key.is_some();
    let monitor = oasis_monitor::Monitor::start(cfg).context("starting the monitor")?;
    tracing::info!(
        "monitor: status datagrams on udp {}{}",
        monitor.udp_addr(),
        if keyed { " (signed only)" } else { "" }
    );
    tracing::info!(
        "listening on {} (dashboard, /api/nodes, /metrics, /events)",
        monitor.http_addr()
    );
    crate::notify::ready();
    let mut watchdog = crate::notify::Watchdog::from_env();
    let mut last = Instant::now();
    loop {
        watchdog.tick();
        if signals.pending().next().is_some() {
            break;
        }
        if last.elapsed() >= Duration::from_secs(1) {
            crate::notify::status(&monitor.summary());
            last = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    crate::notify::stopping();
    tracing::info!("monitor: stopping ({})", monitor.summary());
    monitor.stop();
    Ok(())
}

/// Sends this process's status to the `[monitor] targets`, when there are any.
pub struct Reporter {
    sender: Sender,
    status: Status,
}

impl Reporter {
    /// A reporter for `role`, named `[monitor] node` or else `default_node`; `None` without
    /// targets, or (said in the log) when a target does not resolve.
    pub fn start(
        section: &MonitorSection,
        role: Role,
        default_node: &str,
        started: Instant,
    ) -> Option<Reporter> {
        if section.targets.is_empty() {
            return None;
        }
        let interval = Duration::from_millis(section.interval_ms);
        match Sender::new(&section.targets, interval, section.key(), started) {
            Ok(sender) => {
                let node = if section.node.is_empty() {
                    default_node
                } else {
                    &section.node
                };
                let mut status = Status::new(node, role);
                status.version = env!("CARGO_PKG_VERSION").to_string();
                tracing::info!(
                    "monitor: status of `{}` to {} every {} ms{}",
                    status.node,
                    section.targets.join(", "),
                    section.interval_ms,
                    if section.key().is_some() {
                        ", signed"
                    } else {
                        ""
                    }
                );
                Some(Reporter { sender, status })
            }
            Err(e) => {
                tracing::warn!(
                    "monitor: no status datagrams: {e}; fix [monitor] targets and restart"
                );
                None
            }
        }
    }

    /// When a datagram is due, lets `fill` update the status and sends it.
    pub fn tick(&mut self, fill: impl FnOnce(&mut Status)) {
        let now = Instant::now();
        if self.sender.due(now) {
            fill(&mut self.status);
            self.sender.send(&mut self.status, now);
        }
    }
}

/// The default node name: the host name, then what tells this process apart on its host.
pub fn node_name(what: &str) -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    let host = host.trim();
    format!(
        "{}/{what}",
        if host.is_empty() { "localhost" } else { host }
    )
}

/// Puts the Resource Manager's accounts, level and event counts into `s`.
pub fn fill_resources(s: &mut Status, rm: &oasis_engine::ResourceManager) {
    s.level = level(rm.level());
    s.accounts = rm
        .snapshot()
        .into_iter()
        .map(|a| Account {
            resource: a.resource.to_string(),
            used: a.used,
            limit: a.limit,
            level: level(a.level),
        })
        .collect();
    let events = rm.event_counts();
    s.warning_events_total = events.warning;
    s.critical_events_total = events.critical;
}

fn level(l: oasis_engine::resource::Level) -> Level {
    match l {
        oasis_engine::resource::Level::Normal => Level::Normal,
        oasis_engine::resource::Level::Warning => Level::Warning,
        oasis_engine::resource::Level::Critical => Level::Critical,
    }
}
