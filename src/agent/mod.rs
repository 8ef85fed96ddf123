//! `oasis agent`: the restart agent of the original design's monitors, for hosts without
//! systemd. It starts every `[[process]]` of its configuration, notices a death at once through
//! the process's pidfd and a hang through its health URL, and restarts it: at once after a run
//! that came up, with a growing (capped) wait after runs that did not, forever. Its state is in
//! its log and at `GET /api/processes` on its optional control endpoint.
//!
//! Threads: the main thread (signals, sd_notify's status and watchdog), one supervisor per
//! process (`supervisor.rs`), and the control endpoint's (`http.rs`). SIGTERM or SIGINT stops
//! every process (SIGTERM, SIGKILL after its `stop_grace_ms`) and exits 0.
//!
//! With `[monitor] targets`, the main thread sends the agent's status datagrams: its processes'
//! states and restarts. It does not daemonize or reload its file (SIGHUP is logged and ignored:
//! restart the agent). Supervised processes must stay in the foreground: when one exits,
//! whatever is left in its process group is killed.

mod child;
pub mod config;
mod health;
mod http;
mod policy;
mod state;
mod supervisor;

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::notify;
use config::AgentConfig;
use state::Table;
use supervisor::Supervisor;

/// How often the main thread looks at signals, the watchdog and the status line.
const TICK: Duration = Duration::from_millis(100);

/// Runs the agent with the configuration at `path` until SIGTERM or SIGINT.
pub fn run(path: &Path) -> Result<()> {
    let started = std::time::Instant::now();
    let cfg = AgentConfig::load(path)?;
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    let table = Table::new(cfg.processes.iter().map(|p| p.name.as_str()));
    if let Some(addr) = cfg.http {
        let bound = http::start(addr, table.clone()).with_context(|| {
            format!("binding the control endpoint `http = \"{addr}\"`: pick a free address")
        })?;
        tracing::info!("agent: control endpoint on {bound} (GET /api/processes)");
    }
    // Closing the write end tells every supervisor to stop (their polls see the hang-up).
    let (stop_read, stop_write) = std::io::pipe().context("creating the stop pipe")?;
    let count = cfg.processes.len();
    let mut threads = Vec::with_capacity(count);
    for (index, spec) in cfg.processes.into_iter().enumerate() {
        let stop = stop_read.try_clone().context("duplicating the stop pipe")?;
        let thread = Supervisor::start(index, spec, table.clone(), stop)
            .context("starting a supervisor thread")?;
        threads.push(thread);
    }
    drop(stop_read);
    tracing::info!("agent: supervising {count} processes");
    notify::ready();
    let mut watchdog = notify::Watchdog::from_env();
    let mut last_status = String::new();
    let node = crate::monitor::node_name("agent");
    let mut reporter =
        crate::monitor::Reporter::start(&cfg.monitor, oasis_monitor::Role::Agent, &node, started);
    'run: loop {
        if let Some(r) = reporter.as_mut() {
            r.tick(|s| report(s, &table));
        }
        for sig in signals.pending() {
            if sig == SIGHUP {
                tracing::warn!(
                    "agent: SIGHUP ignored; the agent does not reload its file: restart it to apply changes"
                );
                continue;
            }
            let name = if sig == SIGTERM { "SIGTERM" } else { "SIGINT" };
            tracing::info!("agent: received {name}; stopping every process");
            break 'run;
        }
        watchdog.tick();
        let summary = table.summary();
        if summary != last_status {
            notify::status(&summary);
            last_status = summary;
        }
        std::thread::sleep(TICK);
    }
    notify::stopping();
    notify::status("stopping every process");
    drop(stop_write);
    // Processes may take their stop_grace_ms to stop: keep the watchdog fed meanwhile.
    while !threads.iter().all(|t| t.is_finished()) {
        watchdog.tick();
        std::thread::sleep(TICK);
    }
    for thread in threads {
        if thread.join().is_err() {
            tracing::error!("agent: a supervisor thread panicked");
        }
    }
    tracing::info!("agent: stopped");
    Ok(())
}

/// Puts the processes' states into a status datagram; restarts count as errors.
fn report(s: &mut oasis_monitor::Status, table: &Table) {
    let now = std::time::Instant::now();
    let processes = table.snapshot();
    s.errors_total = processes.iter().map(|p| p.restarts).sum();
    s.active_streams = processes
        .iter()
        .filter(|p| p.state == state::RunState::Running)
        .count() as u32;
    s.processes = processes
        .iter()
        .take(oasis_monitor::status::PROCESSES_MAX)
        .map(|p| oasis_monitor::Process {
            name: p.name.clone(),
            state: match p.state {
                _ if p.flapping(now) => 4,
                state::RunState::Starting => 0,
                state::RunState::Running => 1,
                state::RunState::Backoff => 2,
                state::RunState::Stopping | state::RunState::Stopped => 3,
            },
            restarts: u32::try_from(p.restarts).unwrap_or(u32::MAX),
            pid: p.pid.unwrap_or(0),
        })
        .collect();
}
