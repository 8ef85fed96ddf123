//! Configuration reload on SIGHUP, as an operator knows it from `nginx -s reload`.
//!
//! The supervisor calls [`Reloader::reload`]: it re-reads the file the server was started with,
//! applies the same command-line overrides, and checks the result exactly as `oasis config check`
//! and start-up do. A file that does not pass is logged (file:line and hint) and counted as
//! rejected; the server keeps the settings it has. A file that passes puts its *live* keys
//! ([`LIVE_KEYS`]) in force at once and names every other changed key in a warning: those size
//! threads, rings, pools or accounts, or bind sockets, and take effect at the next restart.
//!
//! The configuration in force is kept as a whole [`Config`] whose restart-only keys still hold
//! their start-up values, so the module settings are derived by the one [`Config::resolve`], and a
//! key that still waits for a restart is named again at every reload until it gets one.
//!
//! A reload is three steps, which `PATCH /api/config` (`config_api`) takes too:
//! [`Reloader::check_text`] (read and check, as `oasis config check`), [`Reloader::prepare`]
//! (split the changes, derive the settings; nothing changes yet) and [`Reloader::apply`] (put the
//! live keys in force). A patch writes its file between the last two, so a file that cannot be
//! written puts nothing in force.
//!
//! This module never touches a socket or a ring: sessions pick the new HTTP settings up at their
//! next request ([`oasis_net::HttpService::reload`]).

use std::path::PathBuf;
use std::sync::{Arc, RwLock};

use anyhow::{Context, Result};
use oasis_engine::observer::ObserverConfig;
use tracing_subscriber::{reload, EnvFilter, Registry};

use crate::config::{Config, Overrides, Resolved};

/// Keys that take effect without a restart, as `section.key`. Everything else needs a restart.
pub const LIVE_KEYS: &[&str] = &[
    "server.log_level",
    "server.drain_timeout_secs",
    "log.level",
    "http.api_token",
    "http.public_reads",
    "http.metrics_public",
    "links.keys",
    "access",
    "auth.failures_max",
    "auth.failures_window_secs",
    "http.header_timeout_secs",
    "http.keepalive_timeout_secs",
    "http.send_timeout_secs",
    "http.body_timeout_secs",
    "http.keepalive_requests_max",
    "http.upload_bytes_max",
    "http.retry_after_secs",
    "pacing.enabled",
    "pacing.initial_burst_secs",
    "pacing.lead_secs",
    "pacing.factor_progressive",
    "pacing.factor_segment",
    "storage.corrupt_policy",
    "resources.memory_available_warn_bytes",
    "resources.memory_available_critical_bytes",
    "resources.disk_free_warn_bytes",
    "resources.disk_free_critical_bytes",
    "resources.fds_warn_percent",
    "resources.fds_critical_percent",
];

/// Replaces the filter of the shipped events (`[log] level`).
pub type ShipFilter = Box<dyn Fn(EnvFilter) -> Result<(), String> + Send + Sync>;

/// The diagnostic log filter, replaceable while the server runs.
pub struct LogFilter {
    pub handle: reload::Handle<EnvFilter, Registry>,
    /// `RUST_LOG` was set at start-up: it wins over `[server] log_level`, then and on reload.
    pub from_env: bool,
    /// The shipped events' filter, when `[log] ship_to` ships them (`RUST_LOG` does not touch it).
    pub ship: Option<ShipFilter>,
}

/// The Configuration Manager's state while the server runs: the file, the configuration in
/// force and what a change is put in force through. SIGHUP reloads and `PATCH /api/config`
/// both go through one `Mutex<Reloader>`, so they happen one at a time and the file and the
/// settings in force agree after each.
pub struct Reloader {
    /// The file given with `--config`; `None`: defaults and command-line options only.
    pub path: Option<PathBuf>,
    pub overrides: Overrides,
    /// The configuration in force: live keys as last reloaded, the others as at start-up.
    pub in_force: Config,
    pub cores: Vec<usize>,
    pub http: oasis_net::HttpService,
    pub metrics: Arc<oasis_net::Metrics>,
    pub log: Option<LogFilter>,
    /// The system observer's thresholds, which the supervisor reads at each sample.
    pub observer: Arc<RwLock<ObserverConfig>>,
}

/// A checked configuration, ready to be put in force by [`Reloader::apply`].
pub struct Prepared {
    /// The configuration in force with the live keys of the new one.
    merged: Config,
    resolved: Resolved,
    /// The new log filter, when `[server] log_level` changes and `RUST_LOG` does not win.
    log_filter: Option<EnvFilter>,
    /// The new filter of shipped events, when `[log] level` changes and events are shipped.
    ship_filter: Option<EnvFilter>,
    /// The live keys that change (`section.key`), put in force by `apply`.
    pub live: Vec<String>,
    /// The keys that differ from the configuration in force and wait for a restart.
    pub restart: Vec<String>,
}

impl Reloader {
    /// Handles one SIGHUP: the file is read, checked and its live keys put in force.
    pub fn reload(&mut self) {
        let Some(path) = self.path.clone() else {
            tracing::info!(
                "SIGHUP: started without --config, so the defaults and command-line options stay in force; nothing to reload"
            );
            self.metrics.reload("ok");
            return;
        };
        let prepared = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read config file {}", path.display()))
            .and_then(|text| self.check_text(&text, &path.display().to_string()))
            .and_then(|next| self.prepare(&next));
        match prepared {
            // Logged before counted: whoever watches the counter finds the line already written.
            Ok(p) => {
                let generation = self.apply(p, "SIGHUP");
                tracing::info!(
                    "SIGHUP: configuration {} reloaded (generation {generation})",
                    path.display()
                );
                self.metrics.reload("ok");
            }
            Err(e) => {
                tracing::error!(
                    "SIGHUP: configuration reload rejected, the previous configuration stays in force: {e:#}"
                );
                self.metrics.reload("rejected");
            }
        }
    }

    /// Reads configuration text (`origin` names it in the messages) exactly as `oasis config
    /// check` and start-up do: every problem located, then the command-line overrides, the
    /// checks again, and what start-up would derive from it, so a text that could not start
    /// is refused.
    pub fn check_text(&self, text: &str, origin: &str) -> Result<Config> {
        let mut next = Config::parse(text, origin)?;
        self.overrides.apply(&mut next);
        next.check()?;
        next.resolve(&self.cores)?;
        Ok(next)
    }

    /// What putting `next` in force would do: its live keys over the configuration in force,
    /// checked and derived. Changes nothing.
    pub fn prepare(&self, next: &Config) -> Result<Prepared> {
        let (live, restart) = split_changes(&self.in_force, next)?;
        let merged = with_keys(&self.in_force, next, &live)?;
        merged
            .check()
            .context("the reloaded keys do not fit the keys that wait for a restart")?;
        let resolved = merged.resolve(&self.cores)?;
        let log_filter = match &self.log {
            Some(log) if !log.from_env && live.iter().any(|k| k == "server.log_level") => {
                Some(EnvFilter::try_new(&merged.server.log_level).context("[server] log_level")?)
            }
            _ => None,
        };
        let ship_filter = match &self.log {
            Some(log) if log.ship.is_some() && live.iter().any(|k| k == "log.level") => {
                Some(EnvFilter::try_new(&merged.log.level).context("[log] level")?)
            }
            _ => None,
        };
        Ok(Prepared {
            merged,
            resolved,
            log_filter,
            ship_filter,
            live,
            restart,
        })
    }

    /// Puts a prepared configuration in force; returns its generation. `source` names the
    /// change in the log (`SIGHUP`, `PATCH /api/config`).
    pub fn apply(&mut self, p: Prepared, source: &str) -> u64 {
        if let (Some(filter), Some(log)) = (p.log_filter, &self.log) {
            if let Err(e) = log.handle.reload(filter) {
                tracing::warn!("{source}: the log filter could not be replaced: {e}");
            }
        } else if p.live.iter().any(|k| k == "server.log_level")
            && self.log.as_ref().is_some_and(|l| l.from_env)
        {
            tracing::info!("{source}: RUST_LOG is set and overrides [server] log_level; the log filter is unchanged");
        }
        if let (Some(filter), Some(ship)) = (
            p.ship_filter,
            self.log.as_ref().and_then(|l| l.ship.as_ref()),
        ) {
            if let Err(e) = ship(filter) {
                tracing::warn!("{source}: the shipped events' filter could not be replaced: {e}");
            }
        }
        if p.resolved.http.api_token.is_none() && p.live.iter().any(|k| k == "http.api_token") {
            tracing::warn!(
                "{source}: no [http] api_token any more: uploads, deletes and /api are refused (403)"
            );
        }
        let generation = self.http.reload(p.resolved.http);
        *self.observer.write().unwrap_or_else(|e| e.into_inner()) = p.resolved.observer;
        self.in_force = p.merged;
        for key in &p.live {
            tracing::info!("{source}: {} is in force", display_key(key));
        }
        if !p.restart.is_empty() {
            tracing::warn!(
                "{source}: changed keys that need a restart to take effect (the running values stay until then): {}",
                p.restart
                    .iter()
                    .map(|k| display_key(k))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        generation
    }
}

/// `server.log_level` as the operator reads it in the file: `[server] log_level`.
pub fn display_key(key: &str) -> String {
    match key.split_once('.') {
        Some((section, name)) => format!("[{section}] {name}"),
        None => format!("[[{key}]]"),
    }
}

/// The keys that differ between two configurations, split into live and restart-only, each as
/// `section.key` (`listen` for the listen addresses, compared as a whole).
pub fn split_changes(old: &Config, new: &Config) -> Result<(Vec<String>, Vec<String>)> {
    let old = toml::Value::try_from(old).context("serializing the configuration")?;
    let new = toml::Value::try_from(new).context("serializing the configuration")?;
    let mut changed = Vec::new();
    for (section, value) in sections(&old).chain(sections(&new)) {
        let (a, b) = (old.get(section), new.get(section));
        match value {
            toml::Value::Table(t) => {
                for key in t.keys() {
                    let key_in = |v: Option<&toml::Value>| v.and_then(|s| s.get(key)).cloned();
                    if key_in(a) != key_in(b) {
                        changed.push(format!("{section}.{key}"));
                    }
                }
            }
            _ if a != b => changed.push(section.to_string()),
            _ => {}
        }
    }
    changed.sort();
    changed.dedup();
    Ok(changed
        .into_iter()
        .partition(|k| LIVE_KEYS.contains(&k.as_str())))
}

fn sections(v: &toml::Value) -> impl Iterator<Item = (&String, &toml::Value)> {
    v.as_table().into_iter().flat_map(|t| t.iter())
}

/// `base` with the given `section.key`s taken from `from`.
fn with_keys(base: &Config, from: &Config, keys: &[String]) -> Result<Config> {
    let mut out = toml::Value::try_from(base).context("serializing the configuration")?;
    let from = toml::Value::try_from(from).context("serializing the configuration")?;
    for key in keys {
        let Some((section, name)) = key.split_once('.') else {
            // A whole section that is an array of tables (`access`), taken as a whole.
            let table = out.as_table_mut().context("the configuration is a table")?;
            match from.get(key.as_str()) {
                Some(v) => table.insert(key.clone(), v.clone()),
                None => table.remove(key.as_str()),
            };
            continue;
        };
        let table = out
            .get_mut(section)
            .and_then(|s| s.as_table_mut())
            .with_context(|| format!("no section [{section}]"))?;
        match from.get(section).and_then(|s| s.get(name)) {
            Some(v) => table.insert(name.to_string(), v.clone()),
            None => table.remove(name),
        };
    }
    out.try_into().context("rebuilding the configuration")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Config {
        Config::parse(text, "test.toml").unwrap()
    }

    #[test]
    fn every_live_key_is_a_config_key() {
        let mut all = Config::default();
        all.http.api_token = Some("x".repeat(16));
        let v = toml::Value::try_from(&all).unwrap();
        for key in LIVE_KEYS {
            let Some((section, name)) = key.split_once('.') else {
                assert!(v.get(*key).is_some_and(|s| s.is_array()), "{key}");
                continue;
            };
            assert!(v.get(section).and_then(|s| s.get(name)).is_some(), "{key}");
        }
    }

    #[test]
    fn changes_split_into_live_and_restart() {
        let old = parse("[http]\napi_token = \"aaaaaaaaaaaaaaaaaaaa\"\n");
        let new = parse(
            "[http]\napi_token = \"bbbbbbbbbbbbbbbbbbbb\"\nheader_bytes_max = 32768\n[[listen]]\naddr = \"127.0.0.1:9\"\n[pacing]\nfactor_segment = 2.0\n",
        );
        let (live, restart) = split_changes(&old, &new).unwrap();
        assert_eq!(live, ["http.api_token", "pacing.factor_segment"]);
        assert_eq!(restart, ["http.header_bytes_max", "listen"]);
        assert_eq!(display_key("listen"), "[[listen]]");
        assert_eq!(display_key("http.api_token"), "[http] api_token");
        // A token that is removed is a change too.
        let (live, _) = split_changes(&old, &Config::default()).unwrap();
        assert_eq!(live, ["http.api_token"]);
    }

    #[test]
    fn the_shipped_level_is_live_the_servers_are_not() {
        let old = Config::default();
        let new = parse("[log]\nship_to = [\"127.0.0.1:7000\"]\nlevel = \"warn\"\nnode = \"n\"\n");
        let (live, restart) = split_changes(&old, &new).unwrap();
        assert_eq!(live, ["log.level"]);
        assert_eq!(restart, ["log.node", "log.ship_to"]);
    }

    #[test]
    fn merged_keeps_restart_keys() {
        let old = Config::default();
        let new = parse("[http]\nheader_bytes_max = 32768\nkeepalive_requests_max = 5\n");
        let (live, _) = split_changes(&old, &new).unwrap();
        let merged = with_keys(&old, &new, &live).unwrap();
        assert_eq!(merged.http.keepalive_requests_max, 5);
        assert_eq!(merged.http.header_bytes_max, old.http.header_bytes_max);
        // Nothing left to reload: the restart-only key is still reported.
        let (live, restart) = split_changes(&merged, &new).unwrap();
        assert!(live.is_empty());
        assert_eq!(restart, ["http.header_bytes_max"]);
    }
}
