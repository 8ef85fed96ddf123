//! The Configuration Manager: one flat TOML file, every key documented in `oasis.toml`.
//!
//! Every field has a default, so `oasis serve` runs with no file at all. A file is read by `file`,
//! which reports every unknown key, wrong type and failing value at once, each with its line,
//! column and a hint (`diagnostics`); the value checks themselves are `check`, pure functions of a
//! [`Config`]. [`Config::resolve`] turns the configuration into the settings each module takes
//! (engine, storage, HTTP, Resource Manager limits). Nothing here starts or binds anything.

mod check;
mod check_log;
mod check_users;
mod diagnostics;
mod file;
mod logd;
mod monitor;
mod pool;

pub use check_log::{node_problem, NODE_BYTES_MAX};
pub use diagnostics::{syntax, Diagnostic, Diagnostics};
pub use logd::{LogdOverrides, LogdSection};
pub use monitor::MonitorSection;
pub use pool::PoolSection;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use oasis_engine::resource::{AccountLimits, ResourceLimits};
use oasis_engine::{EngineConfig, Layout};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerSection,
    pub listen: Vec<ListenSection>,
    pub engine: EngineSection,
    pub http: HttpSection,
    pub pacing: PacingSection,
    pub storage: StorageSection,
    pub resources: ResourcesSection,
    pub links: LinksSection,
    pub access: Vec<AccessSection>,
    pub auth: AuthSection,
    pub audit: AuditSection,
    pub logd: LogdSection,
    pub log: LogSection,
    pub monitor: MonitorSection,
    pub pool: PoolSection,
}

/// `[log]`: this server's own logs shipped to log servers (`oasis logd`), as the streams
/// `<node>/events` (diagnostic events at `level`) and `<node>/access` (the access log).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Log servers, `host:port` each; empty: nothing is shipped.
    pub ship_to: Vec<String>,
    /// This server's name in its streams' names; empty: the host name.
    pub node: String,
    /// Which events are shipped (tracing filter syntax).
    pub level: String,
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            ship_to: Vec::new(),
            node: String::new(),
            level: "info".into(),
        }
    }
}

/// `[links]`: signed links for private media.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LinksSection {
    /// Signing keys, 32 bytes or more each; the first signs, every one verifies (two during a
    /// rotation). Empty: signed links are off.
    pub keys: Vec<String>,
}

/// One `[[access]]` table: who may read the media under a prefix, and its `Cache-Control`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AccessSection {
    pub prefix: String,
    /// "public", "token" or "signed".
    #[serde(default = "default_read")]
    pub read: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_control: Option<String>,
}

fn default_read() -> String {
    "public".into()
}

impl Default for AccessSection {
    fn default() -> Self {
        AccessSection {
            prefix: String::new(),
            read: default_read(),
            cache_control: None,
        }
    }
}

/// `[auth]`: failed authentications per client address.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// Failures an address may make per window before its requests with credentials get 429;
    /// 0: no limit.
    pub failures_max: u32,
    pub failures_window_secs: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            failures_max: 10,
            failures_window_secs: 60,
        }
    }
}

/// `[audit]`: the audit trail in the catalog.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSection {
    /// Records older than this are deleted; 0 keeps them forever.
    pub retention_days: u32,
    /// Records waiting for the catalog at most; more are dropped and counted.
    pub queue_max: usize,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            retention_days: 90,
            queue_max: 4096,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerSection {
    pub data_dir: PathBuf,
    pub drain_timeout_secs: u64,
    /// "stdout", "off", or a file path.
    pub access_log: String,
    pub access_log_queue_lines: usize,
    /// tracing filter, e.g. "info" or "oasis=debug".
    pub log_level: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ListenSection {
    pub addr: SocketAddr,
    #[serde(default = "default_listen_bandwidth_bps")]
    pub bandwidth_bps: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineSection {
    pub layout: String,
    /// Cores to pin workers to; empty means every core this process may use.
    pub cores: Vec<usize>,
    pub pin: bool,
    pub chunk_bytes: usize,
    pub buffer_pool_bytes: usize,
    pub ring_entries: u32,
    pub fixed_buffers: bool,
    pub recv_buffers: usize,
    pub recv_buffer_bytes: usize,
    /// "splice" or "read-send".
    pub send_path: String,
    pub listen_backlog: u32,
    pub jobs_max: usize,
    /// Cold stretches a worker fetches into the page cache at once (0: ring splice only).
    pub cold_fetches_max: usize,
    /// TCP_CORK while a large response body is sent (nginx's `tcp_nopush`).
    pub tcp_nopush: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpSection {
    pub api_token: Option<String>,
    pub public_reads: bool,
    /// `/metrics` without a token (scrapers that cannot send one).
    pub metrics_public: bool,
    pub header_timeout_secs: u64,
    pub keepalive_timeout_secs: u64,
    pub send_timeout_secs: u64,
    pub body_timeout_secs: u64,
    pub keepalive_requests_max: u32,
    pub upload_bytes_max: u64,
    pub request_line_bytes_max: usize,
    pub header_bytes_max: usize,
    pub headers_count_max: usize,
    pub ranges_max: usize,
    pub retry_after_secs: u64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PacingSection {
    pub enabled: bool,
    pub initial_burst_secs: f64,
    /// How far ahead of its schedule a paced stream may run, in seconds of its paced rate.
    pub lead_secs: f64,
    pub factor_progressive: f64,
    pub factor_segment: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSection {
    pub default_bitrate_bps: u64,
    pub open_files_max: usize,
    pub object_bytes_max: u64,
    /// "buffered" (page cache) or "direct" (O_DIRECT into the buffer pool).
    pub read_mode: String,
    /// Background scrub rate, bytes/s; 0: no background scrub.
    pub scrub_bytes_per_sec: u64,
    /// From the start of one scrub pass to the start of the next, hours.
    pub scrub_interval_hours: u64,
    /// An object a scrub found corrupt: "refuse" (500) or "serve" (as it is, logged).
    pub corrupt_policy: String,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ResourcesSection {
    /// 0: a quarter of the host's memory.
    pub memory_bytes: u64,
    pub connections_max: u64,
    /// 0: unlimited.
    pub disk_read_bps: u64,
    /// 0: the data directory's free space at start-up, less `disk_free_critical_bytes`.
    pub disk_space_bytes: u64,
    pub warn_percent: u16,
    pub critical_percent: u16,
    pub memory_available_warn_bytes: u64,
    pub memory_available_critical_bytes: u64,
    pub disk_free_warn_bytes: u64,
    pub disk_free_critical_bytes: u64,
    pub fds_warn_percent: u16,
    pub fds_critical_percent: u16,
}

/// What `oasis serve` options replace in the file; applied again to the file on every reload.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Vec<SocketAddr>,
    pub data_dir: Option<PathBuf>,
    pub layout: Option<String>,
    /// Not an option: the default `connections_max` fitted to the host's open-files limit at
    /// start-up (kept on reload, so the fitted value is not taken for a change).
    pub connections_max: Option<u64>,
    /// Not an option either: the default `open_files_max` shrunk with `connections_max` on a
    /// host whose open-files limit is tight.
    pub open_files_max: Option<usize>,
}

impl Overrides {
    pub fn apply(&self, cfg: &mut Config) {
        if !self.listen.is_empty() {
            let bw = cfg
                .listen
                .first()
                .map(|l| l.bandwidth_bps)
                .unwrap_or_else(default_listen_bandwidth_bps);
            cfg.listen = self
                .listen
                .iter()
                .map(|a| ListenSection {
                    addr: *a,
                    bandwidth_bps: bw,
                })
                .collect();
        }
        if let Some(d) = &self.data_dir {
            cfg.server.data_dir = d.clone();
        }
        if let Some(l) = &self.layout {
            cfg.engine.layout = l.clone();
        }
        // Only while the file leaves the key at its default: a value written there is the
        // operator's, and a change of it waits for a restart like any other.
        if let Some(n) = self.connections_max {
            if cfg.resources.connections_max == ResourcesSection::default().connections_max {
                cfg.resources.connections_max = n;
            }
        }
        if let Some(n) = self.open_files_max {
            if cfg.storage.open_files_max == StorageSection::default().open_files_max {
                cfg.storage.open_files_max = n;
            }
        }
    }
}

fn default_listen_bandwidth_bps() -> u64 {
    100_000_000_000
}

impl Default for Config {
    fn default() -> Self {
        Config {
            server: ServerSection::default(),
            listen: vec![ListenSection {
                addr: "127.0.0.1:8080".parse().expect("literal"),
                bandwidth_bps: default_listen_bandwidth_bps(),
            }],
            engine: EngineSection::default(),
            http: HttpSection::default(),
            pacing: PacingSection::default(),
            storage: StorageSection::default(),
            resources: ResourcesSection::default(),
            links: LinksSection::default(),
            access: Vec::new(),
            auth: AuthSection::default(),
            audit: AuditSection::default(),
            logd: LogdSection::default(),
            log: LogSection::default(),
            monitor: MonitorSection::default(),
            pool: PoolSection::default(),
        }
    }
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            data_dir: PathBuf::from("./oasis-data"),
            drain_timeout_secs: 10,
            access_log: "stdout".into(),
            access_log_queue_lines: 65_536,
            log_level: "info".into(),
        }
    }
}

impl Default for EngineSection {
    fn default() -> Self {
        EngineSection {
            layout: "combined".into(),
            cores: Vec::new(),
            pin: true,
            chunk_bytes: 256 * 1024,
            buffer_pool_bytes: 128 << 20,
            ring_entries: 1024,
            fixed_buffers: true,
            recv_buffers: 2048,
            recv_buffer_bytes: 4096,
            send_path: "splice".into(),
            listen_backlog: 4096,
            jobs_max: 256,
            cold_fetches_max: 16,
            tcp_nopush: true,
        }
    }
}

impl Default for HttpSection {
    fn default() -> Self {
        HttpSection {
            api_token: None,
            public_reads: true,
            metrics_public: false,
            header_timeout_secs: 30,
            keepalive_timeout_secs: 65,
            send_timeout_secs: 60,
            body_timeout_secs: 60,
            keepalive_requests_max: 1000,
            upload_bytes_max: 64 << 30,
            request_line_bytes_max: 8192,
            header_bytes_max: 16384,
            headers_count_max: 64,
            ranges_max: 32,
            retry_after_secs: 2,
        }
    }
}

impl Default for PacingSection {
    fn default() -> Self {
        PacingSection {
            enabled: true,
            initial_burst_secs: 10.0,
            lead_secs: 0.0,
            factor_progressive: 1.5,
            factor_segment: 4.0,
        }
    }
}

impl Default for StorageSection {
    fn default() -> Self {
        StorageSection {
            default_bitrate_bps: 5_000_000,
            open_files_max: 4096,
            read_mode: "buffered".into(),
            object_bytes_max: 64 << 30,
            scrub_bytes_per_sec: 16 << 20,
            scrub_interval_hours: 168,
            corrupt_policy: "refuse".into(),
        }
    }
}

impl Default for ResourcesSection {
    fn default() -> Self {
        ResourcesSection {
            memory_bytes: 0,
            connections_max: 100_000,
            disk_read_bps: 0,
            disk_space_bytes: 0,
            warn_percent: 80,
            critical_percent: 95,
            memory_available_warn_bytes: 512 << 20,
            memory_available_critical_bytes: 128 << 20,
            disk_free_warn_bytes: 2 << 30,
            disk_free_critical_bytes: 256 << 20,
            fds_warn_percent: 80,
            fds_critical_percent: 95,
        }
    }
}

/// How long after start-up the first background scrub pass begins.
const SCRUB_FIRST_DELAY: Duration = Duration::from_secs(300);

/// Everything the modules need, derived from a checked [`Config`].
pub struct Resolved {
    pub engine: EngineConfig,
    pub limits: ResourceLimits,
    pub http: oasis_net::HttpConfig,
    pub store: oasis_storage::StoreConfig,
    pub observer: oasis_engine::observer::ObserverConfig,
    /// The background scrub; `None` when `scrub_bytes_per_sec` is 0.
    pub scrub: Option<oasis_storage::ScrubConfig>,
}

impl Config {
    /// Reads and checks a config file. Errors name the file, the line and what to change.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Reads and checks configuration text; `origin` names it in the messages. The error lists
    /// every problem, one a line with its position and a hint, then how many there are.
    pub fn parse(text: &str, origin: &str) -> Result<Config> {
        Ok(file::read(text, origin)?)
    }

    /// The API token in force: `[http] api_token`, else `OASIS_API_TOKEN` from the environment,
    /// either held to the same rule. `serve` asks before it starts anything.
    pub fn api_token(&self) -> Result<Option<String>> {
        let env = std::env::var("OASIS_API_TOKEN").ok();
        Ok(check::api_token_from(
            self.http.api_token.as_deref(),
            env.as_deref(),
        )?)
    }

    /// The read rules of `[[access]]` over the default of `[http] public_reads` (values checked).
    pub fn access_rules(&self) -> oasis_net::auth::access::AccessRules {
        use oasis_net::auth::access::{AccessRule, AccessRules};
        use oasis_net::auth::policy::ReadPolicy;
        let default = if self.http.public_reads {
            ReadPolicy::Public
        } else {
            ReadPolicy::Token
        };
        let rules = self
            .access
            .iter()
            .filter_map(|a| {
                Some(AccessRule {
                    prefix: a.prefix.clone(),
                    read: a.read.parse().ok()?,
                    cache_control: a.cache_control.clone(),
                })
            })
            .collect();
        AccessRules::new(rules, default)
    }

    /// The signing keys of `[links]`; `None` when there are none (signed links are off).
    pub fn link_keys(&self) -> Result<Option<oasis_net::auth::link::LinkKeys>> {
        if self.links.keys.is_empty() {
            return Ok(None);
        }
        oasis_net::auth::link::LinkKeys::new(&self.links.keys)
            .map(Some)
            .map_err(|e| anyhow::anyhow!("[links] keys: {e}"))
    }

    /// `[storage] read_mode = "direct"`: object files are read with O_DIRECT.
    pub fn direct_reads(&self) -> bool {
        self.storage.read_mode == "direct"
    }

    /// Derives the module settings. `cores` are the cores this process may use.
    pub fn resolve(&self, cores: &[usize]) -> Result<Resolved> {
        let mut engine = self.resolve_engine(cores)?;
        engine.chunks = self.engine.buffer_pool_bytes / self.engine.chunk_bytes;
        // Room for a whole head plus pipelined bytes behind it.
        engine.input_bytes_max = self.http.header_bytes_max + 4096;
        engine.connections_per_worker_max = self.resources.connections_max as usize;

        let r = &self.resources;
        let acct = |limit: u64| AccountLimits {
            warn_permille: r.warn_percent * 10,
            critical_permille: r.critical_percent * 10,
            ..AccountLimits::new(limit)
        };
        let host_memory = host_memory_bytes();
        let memory = if r.memory_bytes == 0 {
            host_memory / 4
        } else {
            r.memory_bytes
        };
        if (self.engine.buffer_pool_bytes as u64) > memory {
            bail!(
                "[engine] buffer_pool_bytes ({}) exceeds [resources] memory_bytes ({memory}); lower the pool or raise memory_bytes",
                self.engine.buffer_pool_bytes
            );
        }
        let disk_space = if r.disk_space_bytes == 0 {
            let free =
                oasis_engine::observer::disk_free_bytes(existing_ancestor(&self.server.data_dir))
                    .unwrap_or(0);
            free.saturating_sub(r.disk_free_critical_bytes)
        } else {
            r.disk_space_bytes
        };
        let (_, fd_limit) = oasis_engine::observer::fds();
        let limits = ResourceLimits {
            memory_bytes: acct(memory),
            net_bps: self.listen.iter().map(|l| acct(l.bandwidth_bps)).collect(),
            disk_read_bps: acct(if r.disk_read_bps == 0 {
                u64::MAX
            } else {
                r.disk_read_bps
            }),
            disk_space_bytes: acct(disk_space),
            connections: acct(r.connections_max),
            open_files: acct(
                (self.storage.open_files_max as u64)
                    .min(fd_limit.unwrap_or(1024) / 2)
                    .max(1),
            ),
        };
        let h = &self.http;
        let http_limits = oasis_net::http::HttpLimits {
            request_line_bytes_max: h.request_line_bytes_max,
            header_bytes_max: h.header_bytes_max,
            headers_count_max: h.headers_count_max,
            ranges_count_max: h.ranges_max,
            body_bytes_max: h.upload_bytes_max,
            ..Default::default()
        };
        http_limits
            .validate()
            .map_err(|e| anyhow::anyhow!("[http] {e}"))?;
        let api_token = self.api_token()?;
        let http = oasis_net::HttpConfig {
            limits: http_limits,
            api_token,
            access: self.access_rules(),
            metrics_public: h.metrics_public,
            auth_limits: oasis_net::auth::limiter::LimiterSettings {
                failures_max: self.auth.failures_max,
                window: Duration::from_secs(self.auth.failures_window_secs),
            },
            link_keys: self.link_keys()?.map(std::sync::Arc::new),
            header_timeout: Duration::from_secs(h.header_timeout_secs),
            keepalive_timeout: Duration::from_secs(h.keepalive_timeout_secs),
            send_timeout: Duration::from_secs(h.send_timeout_secs),
            body_timeout: Duration::from_secs(h.body_timeout_secs),
            keepalive_requests_max: h.keepalive_requests_max,
            upload_bytes_max: h.upload_bytes_max,
            pacing: oasis_net::PacingConfig {
                enabled: self.pacing.enabled,
                initial_burst_secs: self.pacing.initial_burst_secs,
                lead_secs: self.pacing.lead_secs,
                factor_progressive: self.pacing.factor_progressive,
                factor_segment: self.pacing.factor_segment,
            },
            stream_buffer_bytes: self.engine.chunk_bytes as u64,
            retry_after_secs: h.retry_after_secs,
            list_objects_max: 10_000,
            refuse_corrupt: self.storage.corrupt_policy == "refuse",
        };
        let mut store = oasis_storage::StoreConfig::new(&self.server.data_dir);
        store.default_bitrate_bps = self.storage.default_bitrate_bps;
        store.open_files_max = self.storage.open_files_max;
        store.direct_reads = self.direct_reads();
        // Uploads are held to `upload_bytes_max` by the HTTP service (which a reload can change);
        // the store's own limit is the per-object one.
        store.object_bytes_max = self.storage.object_bytes_max;
        store.catalog = self.pool.catalog_location();
        let observer = oasis_engine::observer::ObserverConfig {
            data_dir: self.server.data_dir.clone(),
            memory_available_bytes_warn: r.memory_available_warn_bytes,
            memory_available_bytes_critical: r.memory_available_critical_bytes,
            disk_free_bytes_warn: r.disk_free_warn_bytes,
            disk_free_bytes_critical: r.disk_free_critical_bytes,
            fds_used_permille_warn: r.fds_warn_percent * 10,
            fds_used_permille_critical: r.fds_critical_percent * 10,
        };
        Ok(Resolved {
            engine,
            limits,
            http,
            store,
            observer,
            scrub: (self.storage.scrub_bytes_per_sec > 0).then(|| oasis_storage::ScrubConfig {
                bytes_per_sec: self.storage.scrub_bytes_per_sec,
                interval: Duration::from_secs(self.storage.scrub_interval_hours * 3600),
                first_delay: SCRUB_FIRST_DELAY,
            }),
        })
    }

    /// The engine settings of `[engine]` (shared by `oasis serve` and `oasis logd`; each then
    /// sizes the buffer pool, input buffers and connections for itself). `cores` are the cores
    /// this process may use.
    pub fn resolve_engine(&self, cores: &[usize]) -> Result<EngineConfig> {
        let cores: Vec<usize> = if self.engine.cores.is_empty() {
            cores.to_vec()
        } else {
            for c in &self.engine.cores {
                if !cores.contains(c) {
                    bail!("[engine] cores lists core {c}, which this process may not use (allowed: {cores:?})");
                }
            }
            self.engine.cores.clone()
        };
        let layout = Layout::parse(&self.engine.layout, &cores)?;
        let mut engine = EngineConfig::with_layout(layout);
        engine.chunk_bytes = self.engine.chunk_bytes;
        engine.ring_entries = self.engine.ring_entries;
        engine.fixed_buffers = self.engine.fixed_buffers;
        engine.recv_buffers = self.engine.recv_buffers;
        engine.recv_buffer_bytes = self.engine.recv_buffer_bytes;
        engine.direct_reads = self.direct_reads();
        engine.send_path = if self.engine.send_path == "read-send" {
            oasis_engine::SendPath::ReadSend
        } else {
            oasis_engine::SendPath::ZeroCopy
        };
        engine.listen_backlog = self.engine.listen_backlog;
        engine.pin = self.engine.pin;
        engine.jobs_max = self.engine.jobs_max;
        engine.cold_fetches_max = self.engine.cold_fetches_max;
        engine.tcp_nopush = self.engine.tcp_nopush;
        Ok(engine)
    }
}

fn host_memory_bytes() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("MemTotal:"))?.to_string();
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .map(|kib| kib * 1024)
        .unwrap_or(1 << 30)
}

fn existing_ancestor(p: &Path) -> &Path {
    let mut p = p;
    loop {
        if p.exists() {
            return p;
        }
        match p.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => p = parent,
            _ => return Path::new("."),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_file_is_the_default() {
        let text = include_str!("../../oasis.toml");
        let parsed = Config::parse(text, "oasis.toml").unwrap();
        let default = Config::default();
        assert_eq!(
            toml::to_string(&parsed).unwrap(),
            toml::to_string(&default).unwrap()
        );
        // With its one commented-out key set, too: every key it documents is a key.
        let with_token = text.replace("# api_token = ", "api_token = ");
        assert_ne!(with_token, text);
        let parsed = Config::parse(&with_token, "oasis.toml").unwrap();
        assert!(parsed.http.api_token.is_some());
    }

    #[test]
    fn tcp_nopush_reaches_the_engine() {
        let on = Config::parse("", "t").unwrap().resolve(&[0]).unwrap();
        assert!(on.engine.tcp_nopush, "on by default");
        let off = Config::parse("[engine]\ntcp_nopush = false\n", "t")
            .unwrap()
            .resolve(&[0])
            .unwrap();
        assert!(!off.engine.tcp_nopush);
    }

    #[test]
    fn unknown_keys_name_the_line() {
        let err = Config::parse(
            "[server]\ndata_dir = \"x\"\ndata_dri = \"y\"\n",
            "test.toml",
        )
        .unwrap_err()
        .to_string();
        assert_eq!(
            err,
            "test.toml:3:1: [server] data_dri: unknown key\n  hint: did you mean `data_dir`?\n1 error in test.toml"
        );
    }

    #[test]
    fn bad_values_say_what_to_change() {
        let err = Config::parse("[engine]\nchunk_bytes = 1000\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t:2:15: [engine] chunk_bytes: must be a multiple of 4096"),
            "{err}"
        );
        assert!(
            err.contains("hint: the nearest allowed is chunk_bytes = 4096"),
            "{err}"
        );
        let err = Config::parse("[engine]\nlayout = \"f=1\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t:2:10: [engine] layout: "), "{err}");
        let err = Config::parse("[server]\nlog_level = \"oasis=loud\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t:2:13: [server] log_level: "), "{err}");
        let err = Config::parse("[[listen]]\naddr = \"nope\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("t:2:8: [[listen]] addr: "), "{err}");
    }
}
