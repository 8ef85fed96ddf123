//! One supervised process's thread: start it, watch it (its pidfd for the exit, the agent's
//! stop pipe, and its health URL on schedule), and when a run ends, record how, wait as the
//! backoff says and start it again, for as long as the agent runs.
//!
//! A run ends when the process exits (seen through its pidfd at once), when it is hung (its
//! health probes say so; it is then stopped: SIGTERM, SIGKILL after `stop_grace_ms`), or when
//! the agent stops (the process is stopped the same way and not restarted). Its entry in the
//! [`Table`] is written only here. Decisions are `policy.rs`'s; process handling `child.rs`'s.

use std::io::PipeReader;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use super::child::{self, describe, Event, Running};
use super::config::ProcessSpec;
use super::health::Probe;
use super::policy::{Backoff, FlapWindow, Health, Verdict};
use super::state::{RunState, Table};

/// How often a process that has not answered its health URL yet is probed: the sooner the agent
/// knows a restarted process serves, the sooner it can judge the next failure fairly.
const START_PROBE_EVERY: Duration = Duration::from_millis(20);
/// The longest the thread sleeps without looking at its process (a bound, not a schedule).
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// How a run ended.
enum Ended {
    /// It exited on its own.
    Exited {
        status: std::process::ExitStatus,
        came_up: bool,
    },
    /// It was hung, and has been stopped.
    Hung {
        why: String,
        status: std::process::ExitStatus,
        came_up: bool,
    },
    /// The agent is stopping; the process has been stopped.
    AgentStopping,
}

/// One process's supervisor; runs on its own thread.
pub struct Supervisor {
    index: usize,
    spec: ProcessSpec,
    table: Table,
    /// Readable (closed) when the agent stops.
    stop: PipeReader,
    probe: Option<Probe>,
}

impl Supervisor {
    /// Starts the thread supervising `spec`, entry `index` of `table`, until `stop` closes.
    pub fn start(
        index: usize,
        spec: ProcessSpec,
        table: Table,
        stop: PipeReader,
    ) -> std::io::Result<JoinHandle<()>> {
        let probe = spec
            .health_url
            .as_deref()
            .map(|url| Probe::new(url, spec.health_timeout()));
        let name = format!("agent-{}", spec.name);
        let sup = Supervisor {
            index,
            spec,
            table,
            stop,
            probe,
        };
        std::thread::Builder::new()
            .name(name)
            .spawn(move || sup.run())
    }

    fn run(self) {
        let spec = &self.spec;
        let name = &spec.name;
        let mut backoff = Backoff::new(spec.backoff(), spec.backoff_max());
        let mut flaps = FlapWindow::new(spec.flapping_restarts, spec.flapping_window());
        let mut ended_at: Option<Instant> = None;
        loop {
            let (came_up, how, pid) = match Running::spawn(spec) {
                Err(e) => {
                    let how = format!("could not start {:?}: {e}", spec.command);
                    (false, how, None)
                }
                Ok(run) => {
                    let pid = run.pid();
                    tracing::info!("{name}: started pid {pid}");
                    self.table.update(self.index, |p| {
                        p.pid = Some(pid);
                        p.state = RunState::Starting;
                        p.started_at = Some(run.started);
                        p.next_start_at = None;
                        p.health_failures = 0;
                    });
                    match self.watch(run, ended_at) {
                        Ended::AgentStopping => break,
                        Ended::Exited { status, came_up } => (came_up, describe(status), Some(pid)),
                        Ended::Hung {
                            why,
                            status,
                            came_up,
                        } => (
                            came_up,
                            format!("hung ({why}), {}", describe(status)),
                            Some(pid),
                        ),
                    }
                }
            };
            let now = Instant::now();
            ended_at = Some(now);
            let wait = backoff.after_run(came_up);
            let was_flapping = flaps.flapping_until(now).is_some();
            let flapping_until = flaps.record(now);
            let mut restarts = 0;
            self.table.update(self.index, |p| {
                p.pid = None;
                p.state = RunState::Backoff;
                p.restarts += 1;
                restarts = p.restarts;
                p.last_exit = Some(how.clone());
                p.started_at = None;
                p.next_start_at = Some(now + wait);
                p.last_backoff = wait;
                p.flapping_until = flapping_until;
            });
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            if came_up {
                tracing::warn!("{name}{pid}: {how}; restart {restarts} now");
            } else {
                tracing::warn!(
                    "{name}{pid}: {how} before it came up; restart {restarts} in {} ms",
                    wait.as_millis()
                );
            }
            if flapping_until.is_some() && !was_flapping {
                tracing::warn!(
                    "{name} is flapping: {} restarts within {} ms; the agent keeps restarting it (waiting up to {} ms)",
                    spec.flapping_restarts,
                    spec.flapping_window_ms,
                    spec.restart_backoff_max_ms
                );
            }
            if stop_within(&self.stop, wait) {
                break;
            }
        }
        self.table.update(self.index, |p| {
            p.pid = None;
            p.state = RunState::Stopped;
            p.next_start_at = None;
            p.started_at = None;
        });
    }

    /// Watches one run until it ends. `last_end`: when the previous run ended, to log how long
    /// the process was away.
    fn watch(&self, run: Running, last_end: Option<Instant>) -> Ended {
        let spec = &self.spec;
        let mut health = Health::new(run.started, spec.health_failures, spec.start_timeout());
        let mut up = false;
        let mut next_probe = run.started;
        loop {
            let now = Instant::now();
            let due = match (&self.probe, up) {
                (Some(_), _) => next_probe,
                (None, false) => run.started + spec.min_uptime(),
                (None, true) => now + IDLE_WAKE,
            };
            match run.wait(
                &self.stop,
                due.saturating_duration_since(now).min(IDLE_WAKE),
            ) {
                Event::Exited => {
                    return Ended::Exited {
                        status: run.reap(),
                        came_up: up,
                    }
                }
                Event::Stop => {
                    self.set_state(RunState::Stopping);
                    let pid = run.pid();
                    let (status, killed) = run.terminate(spec.stop_grace());
                    let how = if killed { ", after SIGKILL" } else { "" };
                    tracing::info!(
                        "{} (pid {pid}) stopped: {}{how}",
                        spec.name,
                        describe(status)
                    );
                    return Ended::AgentStopping;
                }
                Event::Timeout => {}
            }
            let now = Instant::now();
            let Some(probe) = &self.probe else {
                if !up && now >= run.started + spec.min_uptime() {
                    up = true;
                    self.came_up(&run, last_end, "lived min_uptime_ms");
                }
                continue;
            };
            if now < next_probe {
                continue;
            }
            let outcome = probe.check();
            let after = Instant::now();
            match health.observe(outcome, after) {
                Verdict::CameUp => {
                    up = true;
                    self.came_up(&run, last_end, "answered health_url");
                }
                Verdict::Unchanged => {}
                Verdict::Hung(why) => {
                    self.set_state(RunState::Stopping);
                    tracing::warn!(
                        "{} (pid {}) is hung: {why}; stopping it (SIGTERM, SIGKILL after {} ms)",
                        spec.name,
                        run.pid(),
                        spec.stop_grace_ms
                    );
                    let (status, _) = run.terminate(spec.stop_grace());
                    return Ended::Hung {
                        why,
                        status,
                        came_up: up,
                    };
                }
            }
            let failures = health.failures();
            self.table
                .update(self.index, |p| p.health_failures = failures);
            next_probe = after
                + if health.is_up() {
                    spec.health_interval()
                } else {
                    START_PROBE_EVERY.min(spec.health_interval())
                };
        }
    }

    fn came_up(&self, run: &Running, last_end: Option<Instant>, how: &str) {
        self.set_state(RunState::Running);
        let now = Instant::now();
        let since_start = now.duration_since(run.started).as_millis();
        match last_end {
            Some(end) => tracing::info!(
                "{} (pid {}) is up: {how} {since_start} ms after its start, {} ms after the last run ended",
                self.spec.name,
                run.pid(),
                now.duration_since(end).as_millis()
            ),
            None => tracing::info!(
                "{} (pid {}) is up: {how} {since_start} ms after its start",
                self.spec.name,
                run.pid()
            ),
        }
    }

    fn set_state(&self, state: RunState) {
        self.table.update(self.index, |p| p.state = state);
    }
}

/// Waits up to `wait` for the stop pipe; true when the agent is stopping.
fn stop_within(stop: &PipeReader, wait: Duration) -> bool {
    let mut fds = [PollFd::new(stop, PollFlags::IN)];
    child::poll_until(&mut fds, wait);
    !fds[0].revents().is_empty()
}
