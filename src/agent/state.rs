//! What the agent knows of each process, shared between its supervisor thread (the only writer
//! of its entry), the control endpoint and the main thread (readers). One small mutex around a
//! fixed-size table: entries are made at start, one per `[[process]]`, and never added.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where a process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunState {
    /// Started, not yet up (health URL not answered yet, or `min_uptime_ms` not yet lived).
    Starting,
    /// Up and (as far as the health checks tell) serving.
    Running,
    /// Waiting before the next start.
    Backoff,
    /// Being stopped (hung, or the agent stopping).
    Stopping,
    /// Stopped with the agent.
    Stopped,
}

impl RunState {
    /// The lower-case name used in JSON and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            RunState::Starting => "starting",
            RunState::Running => "running",
            RunState::Backoff => "backoff",
            RunState::Stopping => "stopping",
            RunState::Stopped => "stopped",
        }
    }
}

/// One process's entry.
#[derive(Debug, Clone)]
pub struct ProcessStatus {
    /// Its `[[process]]` name.
    pub name: String,
    /// The running process's id.
    pub pid: Option<u32>,
    /// Where it is in its life.
    pub state: RunState,
    /// Starts after the first.
    pub restarts: u64,
    /// How the last run ended ("killed by signal 9 (SIGKILL)", "exit status 1", ...).
    pub last_exit: Option<String>,
    /// When the current run started.
    pub started_at: Option<Instant>,
    /// When the next start is due (in backoff).
    pub next_start_at: Option<Instant>,
    /// The wait chosen before the latest restart.
    pub last_backoff: Duration,
    /// Flapping until then (`flapping_restarts` within `flapping_window_ms`).
    pub flapping_until: Option<Instant>,
    /// Failed health probes in a row.
    pub health_failures: u32,
}

impl ProcessStatus {
    /// Whether the process is flapping at `now`.
    pub fn flapping(&self, now: Instant) -> bool {
        self.flapping_until.is_some_and(|until| until > now)
    }

    /// The entry as JSON, times relative to `now`.
    pub fn to_json(&self, now: Instant) -> serde_json::Value {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        serde_json::json!({
            "name": self.name,
            "pid": self.pid,
            "state": self.state.as_str(),
            "flapping": self.flapping(now),
            "restarts": self.restarts,
            "last_exit": self.last_exit,
            "uptime_ms": self.started_at.map(|t| ms(now.saturating_duration_since(t))),
            "next_start_in_ms": self.next_start_at.map(|t| ms(t.saturating_duration_since(now))),
            "last_backoff_ms": ms(self.last_backoff),
            "health_failures": self.health_failures,
        })
    }
}

/// The table of every process's entry, in configuration order.
#[derive(Debug, Clone)]
pub struct Table(Arc<Mutex<Vec<ProcessStatus>>>);

impl Table {
    /// One entry per name, each `Starting` with nothing recorded yet.
    pub fn new<'a>(names: impl IntoIterator<Item = &'a str>) -> Table {
        let entries = names
            .into_iter()
            .map(|name| ProcessStatus {
                name: name.to_string(),
                pid: None,
                state: RunState::Starting,
                restarts: 0,
                last_exit: None,
                started_at: None,
                next_start_at: None,
                last_backoff: Duration::ZERO,
                flapping_until: None,
                health_failures: 0,
            })
            .collect();
        Table(Arc::new(Mutex::new(entries)))
    }

    fn lock(&self) -> MutexGuard<'_, Vec<ProcessStatus>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes entry `index` (a supervisor changes only its own).
    pub fn update(&self, index: usize, change: impl FnOnce(&mut ProcessStatus)) {
        if let Some(entry) = self.lock().get_mut(index) {
            change(entry);
        }
    }

    /// A copy of every entry.
    pub fn snapshot(&self) -> Vec<ProcessStatus> {
        self.lock().clone()
    }

    /// `{"processes": [...]}`, as `GET /api/processes` answers.
    pub fn to_json(&self) -> serde_json::Value {
        let now = Instant::now();
        let list: Vec<_> = self.lock().iter().map(|p| p.to_json(now)).collect();
        serde_json::json!({ "processes": list })
    }

    /// One line for `STATUS=`: how many processes are in each state, and which flap.
    pub fn summary(&self) -> String {
        let now = Instant::now();
        let entries = self.snapshot();
        let count = |s: RunState| entries.iter().filter(|p| p.state == s).count();
        let mut line = format!(
            "supervising {}: {} running, {} starting, {} in backoff",
            entries.len(),
            count(RunState::Running),
            count(RunState::Starting),
            count(RunState::Backoff)
        );
        let flapping: Vec<&str> = entries
            .iter()
            .filter(|p| p.flapping(now))
            .map(|p| p.name.as_str())
            .collect();
        if !flapping.is_empty() {
            line.push_str(&format!("; flapping: {}", flapping.join(", ")));
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reports_each_entry_and_a_summary() {
        let t = Table::new(["media", "logd"]);
        let now = Instant::now();
        t.update(0, |p| {
            p.state = RunState::Running;
            p.pid = Some(42);
            p.started_at = Some(now);
        });
        t.update(1, |p| {
            p.state = RunState::Backoff;
            p.restarts = 7;
            p.flapping_until = Some(now + Duration::from_secs(60));
            p.last_exit = Some("exit status 1".into());
        });
        let json = t.to_json();
        assert_eq!(json["processes"][0]["pid"], 42);
        assert_eq!(json["processes"][0]["state"], "running");
        assert_eq!(json["processes"][1]["flapping"], true);
        assert_eq!(json["processes"][1]["restarts"], 7);
        assert_eq!(
            t.summary(),
            "supervising 2: 1 running, 0 starting, 1 in backoff; flapping: logd"
        );
    }
}
