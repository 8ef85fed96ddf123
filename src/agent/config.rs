//! The agent's configuration file (`agent.toml`): what to run and how to judge its health.
//! Read with serde (unknown keys refused, with their line and column), then checked as a whole:
//! every problem is reported at once, naming the process and the key, before anything starts.
//!
//! It does not start anything, and nothing in it changes while the agent runs (edit the file and
//! restart the agent).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// Most processes one agent supervises (one thread each).
pub const PROCESSES_MAX: usize = 64;
/// Most arguments, and most environment entries, of one process.
const LIST_MAX: usize = 256;
/// Longest process name.
const NAME_BYTES_MAX: usize = 64;
/// Largest value of any `*_ms` key (one hour).
const MS_MAX: u64 = 3_600_000;
/// Largest `flapping_restarts` (the agent keeps that many restart times per process).
const FLAPPING_RESTARTS_MAX: u32 = 1000;

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// Where the control endpoint (`GET /api/processes`) listens; none when absent.
    #[serde(default)]
    pub http: Option<SocketAddr>,
    /// The supervised processes, each a `[[process]]` table.
    #[serde(default, rename = "process")]
    pub processes: Vec<ProcessSpec>,
    /// Where its status datagrams go (the same keys as oasis.toml's `[monitor]`).
    #[serde(default)]
    pub monitor: crate::config::MonitorSection,
}

/// One `[[process]]`: what to start, and when it counts as up, dead or hung.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProcessSpec {
    /// Unique name, used in logs and `/api/processes`.
    pub name: String,
    /// The program: a path, or a name looked up in `PATH`.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Vec<String>,
    /// Variables added to (or replacing those of) the agent's environment.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Working directory (default: the agent's).
    #[serde(default)]
    pub cwd: Option<PathBuf>,
    /// Wait before the restart that follows a run that never came up; doubles with each such
    /// run in a row. A run that came up is followed by an immediate restart.
    #[serde(default = "defaults::restart_backoff_ms")]
    pub restart_backoff_ms: u64,
    /// The cap on that wait: a process that keeps failing is retried at this interval, forever.
    #[serde(default = "defaults::restart_backoff_max_ms")]
    pub restart_backoff_max_ms: u64,
    /// Between SIGTERM and SIGKILL when the agent stops the process (hung, or the agent stopping).
    #[serde(default = "defaults::stop_grace_ms")]
    pub stop_grace_ms: u64,
    /// Without a `health_url`, a run counts as up once the process has lived this long.
    #[serde(default = "defaults::min_uptime_ms")]
    pub min_uptime_ms: u64,
    /// `http://host:port/path` answered with 2xx while the process is healthy.
    #[serde(default)]
    pub health_url: Option<String>,
    /// Between health probes of a process that is up.
    #[serde(default = "defaults::health_interval_ms")]
    pub health_interval_ms: u64,
    /// How long one probe may take.
    #[serde(default = "defaults::health_timeout_ms")]
    pub health_timeout_ms: u64,
    /// Failed probes in a row after which a process that was up counts as hung.
    #[serde(default = "defaults::health_failures")]
    pub health_failures: u32,
    /// How long a new process may take to answer its `health_url` first; past it, hung.
    #[serde(default = "defaults::start_timeout_ms")]
    pub start_timeout_ms: u64,
    /// Restarts within `flapping_window_ms` that mark the process as flapping.
    #[serde(default = "defaults::flapping_restarts")]
    pub flapping_restarts: u32,
    /// The window `flapping_restarts` are counted in.
    #[serde(default = "defaults::flapping_window_ms")]
    pub flapping_window_ms: u64,
}

mod defaults {
    pub fn restart_backoff_ms() -> u64 {
        100
    }
    pub fn restart_backoff_max_ms() -> u64 {
        5000
    }
    pub fn stop_grace_ms() -> u64 {
        10_000
    }
    pub fn min_uptime_ms() -> u64 {
        1000
    }
    pub fn health_interval_ms() -> u64 {
        1000
    }
    pub fn health_timeout_ms() -> u64 {
        500
    }
    pub fn health_failures() -> u32 {
        3
    }
    pub fn start_timeout_ms() -> u64 {
        30_000
    }
    pub fn flapping_restarts() -> u32 {
        5
    }
    pub fn flapping_window_ms() -> u64 {
        60_000
    }
}

impl ProcessSpec {
    /// `restart_backoff_ms` as a duration.
    pub fn backoff(&self) -> Duration {
        Duration::from_millis(self.restart_backoff_ms)
    }
    /// `restart_backoff_max_ms` as a duration.
    pub fn backoff_max(&self) -> Duration {
        Duration::from_millis(self.restart_backoff_max_ms)
    }
    /// `stop_grace_ms` as a duration.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }
    /// `min_uptime_ms` as a duration.
    pub fn min_uptime(&self) -> Duration {
        Duration::from_millis(self.min_uptime_ms)
    }
    /// `health_interval_ms` as a duration.
    pub fn health_interval(&self) -> Duration {
        Duration::from_millis(self.health_interval_ms)
    }
    /// `health_timeout_ms` as a duration.
    pub fn health_timeout(&self) -> Duration {
        Duration::from_millis(self.health_timeout_ms)
    }
    /// `start_timeout_ms` as a duration.
    pub fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms)
    }
    /// `flapping_window_ms` as a duration.
    pub fn flapping_window(&self) -> Duration {
        Duration::from_millis(self.flapping_window_ms)
    }
}

impl AgentConfig {
    /// Reads and checks `path`; the error lists every problem, each with where it is.
    pub fn load(path: &Path) -> Result<AgentConfig> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the agent configuration {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}", path.display()))
    }

    /// Parses and checks a configuration text.
    pub fn parse(text: &str) -> Result<AgentConfig> {
        let cfg: AgentConfig = toml::from_str(text).map_err(|e| anyhow::anyhow!("{e}"))?;
        let problems = cfg.problems();
        if !problems.is_empty() {
            bail!("{}", problems.join("\n"));
        }
        Ok(cfg)
    }

    /// Every problem of the whole file, one sentence each.
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.processes.is_empty() {
            out.push(
                "no [[process]]: add at least one, with `name` and `command` (see dist/agent.toml)"
                    .to_string(),
            );
        }
        if self.processes.len() > PROCESSES_MAX {
            out.push(format!(
                "{} [[process]] tables: one agent supervises at most {PROCESSES_MAX}; run another agent",
                self.processes.len()
            ));
        }
        for (key, message, hint) in self.monitor.problems() {
            let hint = hint.map(|h| format!(" (e.g. {h})")).unwrap_or_default();
            out.push(format!("[monitor] {key}: {message}{hint}"));
        }
        for (i, p) in self.processes.iter().enumerate() {
            let at = format!("[[process]] #{} ({:?})", i + 1, p.name);
            if self.processes[..i].iter().any(|q| q.name == p.name) {
                out.push(format!(
                    "{at}: the name is used twice; names must be unique"
                ));
            }
            for problem in p.problems() {
                out.push(format!("{at}: {problem}"));
            }
        }
        out
    }
}

impl ProcessSpec {
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        let name_ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
        if self.name.is_empty()
            || self.name.len() > NAME_BYTES_MAX
            || !self.name.chars().all(name_ok)
        {
            out.push(format!(
                "name must be 1-{NAME_BYTES_MAX} letters, digits, '-', '_' or '.'"
            ));
        }
        if self.command.trim().is_empty() {
            out.push("command is empty: give the program to run".to_string());
        }
        if self.args.len() > LIST_MAX || self.env.len() > LIST_MAX {
            out.push(format!(
                "at most {LIST_MAX} args and {LIST_MAX} env entries"
            ));
        }
        if let Some(bad) = self.env.keys().find(|k| k.is_empty() || k.contains('=')) {
            out.push(format!("env name {bad:?} is empty or holds '='"));
        }
        for (key, value) in [
            ("restart_backoff_ms", self.restart_backoff_ms),
            ("restart_backoff_max_ms", self.restart_backoff_max_ms),
            ("stop_grace_ms", self.stop_grace_ms),
            ("min_uptime_ms", self.min_uptime_ms),
            ("health_interval_ms", self.health_interval_ms),
            ("health_timeout_ms", self.health_timeout_ms),
            ("start_timeout_ms", self.start_timeout_ms),
            ("flapping_window_ms", self.flapping_window_ms),
        ] {
            if value == 0 || value > MS_MAX {
                out.push(format!("{key} = {value}: must be 1 to {MS_MAX} (one hour)"));
            }
        }
        if self.restart_backoff_ms > self.restart_backoff_max_ms {
            out.push(format!(
                "restart_backoff_ms ({}) is above restart_backoff_max_ms ({}): the first wait cannot exceed the cap",
                self.restart_backoff_ms, self.restart_backoff_max_ms
            ));
        }
        if self.health_failures == 0 || self.health_failures > 100 {
            out.push("health_failures must be 1 to 100".to_string());
        }
        if self.flapping_restarts == 0 || self.flapping_restarts > FLAPPING_RESTARTS_MAX {
            out.push(format!(
                "flapping_restarts must be 1 to {FLAPPING_RESTARTS_MAX}"
            ));
        }
        if let Some(url) = &self.health_url {
            let host = url.strip_prefix("http://").unwrap_or("");
            if host.is_empty() || host.starts_with('/') {
                out.push(format!(
                    "health_url {url:?} must be http://HOST:PORT/PATH (plain HTTP, e.g. http://127.0.0.1:8080/healthz)"
                ));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "[[process]]\nname = \"media\"\ncommand = \"oasis\"\n";

    #[test]
    fn a_minimal_file_gets_the_defaults() {
        let cfg = AgentConfig::parse(MINIMAL).unwrap();
        assert_eq!(cfg.http, None);
        let p = &cfg.processes[0];
        assert_eq!(
            (p.restart_backoff_ms, p.restart_backoff_max_ms),
            (100, 5000)
        );
        assert_eq!(p.health_url, None);
        assert!(p.args.is_empty() && p.env.is_empty() && p.cwd.is_none());
    }

    #[test]
    fn a_full_process_table_reads() {
        let cfg = AgentConfig::parse(
            "http = \"127.0.0.1:9090\"\n[[process]]\nname = \"media\"\ncommand = \"/usr/bin/oasis\"\n\
             args = [\"serve\", \"--listen\", \"127.0.0.1:8080\"]\nenv = { RUST_LOG = \"info\" }\n\
             cwd = \"/srv\"\nhealth_url = \"http://127.0.0.1:8080/healthz\"\nhealth_failures = 2\n",
        )
        .unwrap();
        let p = &cfg.processes[0];
        assert_eq!(cfg.http, Some("127.0.0.1:9090".parse().unwrap()));
        assert_eq!(p.args.len(), 3);
        assert_eq!(p.env["RUST_LOG"], "info");
        assert_eq!(p.health_failures, 2);
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let cfg = AgentConfig::parse(include_str!("../../dist/agent.toml")).unwrap();
        assert_eq!(cfg.processes.len(), 2);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_place() {
        let err = AgentConfig::parse(&format!("{MINIMAL}restart_delay_ms = 5\n"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("restart_delay_ms") && err.contains("line 4"),
            "{err}"
        );
    }

    #[test]
    fn a_missing_command_is_named() {
        let err = AgentConfig::parse("[[process]]\nname = \"media\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("missing field `command`"), "{err}");
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let err = AgentConfig::parse(
            "[[process]]\nname = \"a b\"\ncommand = \"\"\nrestart_backoff_ms = 9000\n\
             health_url = \"https://x/\"\n[[process]]\nname = \"a b\"\ncommand = \"x\"\n",
        )
        .unwrap_err()
        .to_string();
        for part in [
            "name must be",
            "command is empty",
            "above restart_backoff_max_ms",
            "health_url",
            "used twice",
        ] {
            assert!(err.contains(part), "{part} not in {err}");
        }
        assert!(AgentConfig::parse("")
            .unwrap_err()
            .to_string()
            .contains("no [[process]]"));
    }
}
