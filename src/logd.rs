//! `oasis logd`: the log server. Reads `[logd]` (options replace its listen addresses and data
//! directory), opens and recovers the data directory, starts the engine with the log service on
//! every address, says `listening on ADDR` for each, and waits for SIGTERM or SIGINT: then it
//! stops accepting, lets writers' last batches be acknowledged, syncs and exits 0. With
//! `[monitor] targets`, its status (streams and durable offsets among it) goes to the monitors.
//!
//! Glue only: the protocol, the store and the writer thread are `oasis-log`'s.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::config::LogdOverrides;
use oasis_engine::{Engine, Listener, ResourceManager, Service};
use oasis_log::server::LogdService;
use oasis_log::store::Store;

/// Descriptors kept free beyond connections and segment files open for writing (segments being
/// read, listeners, rings, logs).
const FD_SLACK: u64 = 3072;

/// `oasis logd` options.
#[derive(clap::Args)]
pub struct LogdArgs {
    /// Address to listen on; repeat for several. Replaces `[logd] listen`.
    #[arg(long, value_name = "ADDR")]
    listen: Vec<std::net::SocketAddr>,
    /// Data directory of the streams (one logd per directory). Replaces `[logd] data_dir`.
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// Configuration file (its `[logd]` section; `[server] log_level`, `[engine]` and
    /// `[resources] memory_bytes` apply too).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

/// Runs a log server until SIGTERM or SIGINT.
pub fn run(args: LogdArgs) -> Result<()> {
    let started = std::time::Instant::now();
    let mut cfg = crate::load(args.config.as_ref())?;
    LogdOverrides {
        listen: args.listen,
        data_dir: args.data_dir,
    }
    .apply(&mut cfg);
    cfg.check()?;
    crate::init_tracing(&cfg.server.log_level, None);
    let features = oasis_engine::probe::probe()?;
    oasis_engine::host::ignore_sigpipe();
    let mut signals = signal_hook::iterator::Signals::new([
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
    ])?;
    let want = cfg.logd.connections_max + cfg.logd.open_segments_max as u64 + FD_SLACK;
    if let Some(limit) = oasis_engine::host::raise_nofile_limit(want) {
        if limit < want {
            tracing::warn!(
                "open files limited to {limit}, below the {want} that connections_max ({}) + open_segments_max ({}) + {FD_SLACK} need; raise `ulimit -n` or lower [logd] connections_max or open_segments_max",
                cfg.logd.connections_max,
                cfg.logd.open_segments_max
            );
        }
    }
    let resolved = cfg.resolve_logd(&oasis_engine::layout::available_cores())?;
    let (store, recovery) = Store::open(resolved.store.clone())?;
    let bytes_cut: u64 = recovery.cuts.iter().map(|c| c.bytes).sum();
    tracing::info!(
        "log store {}: {} streams, {} segments, {} bytes durable{}",
        cfg.logd.data_dir.display(),
        recovery.streams,
        recovery.segments,
        recovery.bytes,
        if recovery.cuts.is_empty() {
            String::new()
        } else {
            format!(
                "; recovery cut {bytes_cut} bytes of torn tails in {} segments (each logged above)",
                recovery.cuts.len()
            )
        }
    );
    let rm = ResourceManager::new(&resolved.limits);
    let service = LogdService::new(Arc::clone(&store), Some(Arc::clone(&rm)));
    let listeners = cfg
        .logd
        .listen
        .iter()
        .map(|addr| Listener {
            addr: *addr,
            service: Arc::new(service.clone()) as Arc<dyn Service>,
        })
        .collect();
    let engine = Engine::start(resolved.engine, listeners, Arc::clone(&rm), features)
        .context("starting the log server")?;
    let addrs: Vec<String> = engine.local_addrs().iter().map(|a| a.to_string()).collect();
    for addr in &addrs {
        tracing::info!("listening on {addr} (log server)");
    }
    crate::notify::ready();
    crate::notify::status(&format!("log server on {}", addrs.join(", ")));
    // The supervisor only waits (the log server has no live keys and no observer), waking to
    // keep a systemd watchdog fed and to send status datagrams (`[monitor]`).
    let mut watchdog = crate::notify::Watchdog::from_env();
    let node = crate::monitor::node_name(&format!(
        "logd/{}",
        addrs.first().map_or("", String::as_str)
    ));
    let mut reporter =
        crate::monitor::Reporter::start(&cfg.monitor, oasis_monitor::Role::Logd, &node, started);
    let sig = loop {
        watchdog.tick();
        if let Some(r) = reporter.as_mut() {
            r.tick(|s| {
                crate::monitor::fill_resources(s, &rm);
                s.active_streams =
                    u32::try_from(rm.used(oasis_engine::resource::Resource::Connections))
                        .unwrap_or(u32::MAX);
                s.streams = store
                    .list("")
                    .iter()
                    .take(oasis_monitor::status::STREAMS_MAX)
                    .map(|st| oasis_monitor::Stream {
                        name: st.name().to_string(),
                        durable_offset: st.durable_end(),
                    })
                    .collect();
            });
        }
        if let Some(sig) = signals.pending().next() {
            break Some(sig);
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    tracing::info!(
        "received {}",
        if sig == Some(signal_hook::consts::SIGTERM) {
            "SIGTERM"
        } else {
            "SIGINT"
        }
    );
    let drain = Duration::from_secs(cfg.server.drain_timeout_secs);
    crate::notify::stopping();
    tracing::info!("shutting down: draining for up to {drain:?}");
    engine.shutdown(drain);
    engine.join();
    drop(service);
    // What was queued is written and synced before the writer thread ends.
    store.close();
    tracing::info!("stopped");
    Ok(())
}
