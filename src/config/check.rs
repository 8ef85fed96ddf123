//! Value checks: every value, and every relation between values, that the types alone do not hold
//! to, each problem attributed to the key an operator would change.
//!
//! Pure: reads the [`Config`] and nothing else (no file, no clock; the environment only through
//! [`api_token_from`]'s arguments), so the same checks serve `oasis config check`, start-up after
//! command-line options and SIGHUP reloads. Finding a problem's place in the file is `file`'s job.

use std::fmt;

use oasis_engine::Layout;

use super::diagnostics::{Diagnostic, Diagnostics};
use super::Config;

/// An API token, from the file or the environment, has at least this many characters.
pub const API_TOKEN_CHARS_MIN: usize = 16;

/// A key as the operator reads it: `[engine] chunk_bytes`, `[[listen]] addr`, or a whole section
/// (`name: None`). `index` is the `[[listen]]` table, counted from 0.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Key {
    pub section: &'static str,
    pub index: Option<usize>,
    pub name: Option<&'static str>,
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.section == "listen" || self.section == "access" {
            write!(f, "[[{}]]", self.section)?;
        } else {
            write!(f, "[{}]", self.section)?;
        }
        match self.name {
            Some(name) => write!(f, " {name}"),
            None => Ok(()),
        }
    }
}

/// A value that fails a check.
#[derive(Clone, Debug, PartialEq)]
pub struct Problem {
    pub key: Key,
    pub message: String,
    pub hint: Option<String>,
}

impl Problem {
    /// As a diagnostic, not yet placed in a file.
    pub fn diagnostic(self) -> Diagnostic {
        Diagnostic {
            at: None,
            key: self.key.to_string(),
            message: self.message,
            hint: self.hint,
        }
    }

    pub(super) fn hint(&mut self, hint: impl Into<String>) {
        self.hint = Some(hint.into());
    }
}

#[derive(Default)]
pub(super) struct Problems(Vec<Problem>);

impl Problems {
    /// Adds a section's problems, each as `(key, message, hint)`.
    pub(super) fn add_all(
        &mut self,
        section: &'static str,
        found: Vec<(&'static str, String, Option<&'static str>)>,
    ) {
        for (key, message, hint) in found {
            let p = self.add(section, key, message);
            if let Some(h) = hint {
                p.hint(h);
            }
        }
    }

    pub(super) fn add(
        &mut self,
        section: &'static str,
        name: &'static str,
        message: impl Into<String>,
    ) -> &mut Problem {
        self.at(
            Key {
                section,
                index: None,
                name: Some(name),
            },
            message,
        )
    }

    pub(super) fn at(&mut self, key: Key, message: impl Into<String>) -> &mut Problem {
        self.0.push(Problem {
            key,
            message: message.into(),
            hint: None,
        });
        self.0.last_mut().expect("just pushed")
    }
}

impl Config {
    /// Checks values and the relations between them; every problem at once.
    pub fn check(&self) -> Result<(), Diagnostics> {
        let problems = self.problems();
        if problems.is_empty() {
            return Ok(());
        }
        Err(Diagnostics {
            origin: None,
            items: problems.into_iter().map(|p| p.diagnostic()).collect(),
        })
    }

    /// Every value that fails a check, in the order of the sections in `oasis.toml`.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out = Problems::default();
        self.check_server(&mut out);
        self.check_listen(&mut out);
        self.check_engine(&mut out);
        self.check_http(&mut out);
        self.check_pacing(&mut out);
        self.check_storage(&mut out);
        self.check_resources(&mut out);
        self.check_users(&mut out);
        self.check_logd(&mut out);
        self.check_log(&mut out);
        self.check_monitor(&mut out);
        self.check_pool(&mut out);
        out.0
    }

    fn check_server(&self, out: &mut Problems) {
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.server.log_level) {
            out.add(
                "server",
                "log_level",
                format!("{:?} is not a tracing filter ({e})", self.server.log_level),
            )
            .hint("e.g. log_level = \"info\" or \"oasis_engine=debug\"");
        }
    }

    fn check_listen(&self, out: &mut Problems) {
        let key = |index, name| Key {
            section: "listen",
            index,
            name,
        };
        if self.listen.is_empty() {
            out.at(key(None, None), "needs at least one address")
                .hint("[[listen]] on a line of its own, then addr = \"127.0.0.1:8080\"");
        }
        let max = oasis_engine::resource::LISTENERS_MAX;
        if self.listen.len() > max {
            out.at(
                key(Some(max), None),
                format!("at most {max} [[listen]] addresses (this is one more)"),
            );
        }
        for (i, l) in self.listen.iter().enumerate() {
            if let Some(first) = self.listen[..i].iter().position(|o| o.addr == l.addr) {
                out.at(
                    key(Some(i), Some("addr")),
                    format!("{} is given twice", l.addr),
                )
                .hint(format!(
                    "[[listen]] table {} already has it; remove one",
                    first + 1
                ));
            }
            if l.bandwidth_bps == 0 {
                out.at(
                    key(Some(i), Some("bandwidth_bps")),
                    format!("must be positive for {} (bits per second)", l.addr),
                )
                .hint("e.g. bandwidth_bps = 10000000000 for 10 Gbit/s");
            }
        }
    }

    fn check_engine(&self, out: &mut Problems) {
        let e = &self.engine;
        if let Err(err) = Layout::parse(&e.layout, &[0]) {
            out.add("engine", "layout", err.to_string())
                .hint("\"combined\", \"combined:N\" or \"f=F,nc=C,nd=D\"");
        }
        let chunk_ok =
            (4096..=16 << 20).contains(&e.chunk_bytes) && e.chunk_bytes.is_multiple_of(4096);
        if !chunk_ok {
            let nearest = (e.chunk_bytes.saturating_add(2048) / 4096 * 4096).clamp(4096, 16 << 20);
            out.add(
                "engine",
                "chunk_bytes",
                format!(
                    "must be a multiple of 4096 between 4096 and 16 MiB (got {})",
                    e.chunk_bytes
                ),
            )
            .hint(format!("the nearest allowed is chunk_bytes = {nearest}"));
        }
        // The relations need a chunk size that holds; with a bad one they say nothing new.
        if chunk_ok && e.buffer_pool_bytes < e.chunk_bytes * 4 {
            out.add(
                "engine",
                "buffer_pool_bytes",
                format!(
                    "must hold at least 4 chunks of chunk_bytes ({} bytes; got {})",
                    e.chunk_bytes * 4,
                    e.buffer_pool_bytes
                ),
            )
            .hint(format!(
                "buffer_pool_bytes = {}, or a smaller chunk_bytes",
                e.chunk_bytes * 4
            ));
        }
        if chunk_ok && e.buffer_pool_bytes / e.chunk_bytes > u16::MAX as usize {
            out.add(
                "engine",
                "buffer_pool_bytes",
                format!(
                    "holds {} chunks of chunk_bytes; at most 65535",
                    e.buffer_pool_bytes / e.chunk_bytes
                ),
            )
            .hint(format!(
                "raise chunk_bytes, or buffer_pool_bytes = {}",
                e.chunk_bytes * u16::MAX as usize
            ));
        }
        if !(8..=32768).contains(&e.ring_entries) || !e.ring_entries.is_power_of_two() {
            let nearest = e.ring_entries.clamp(8, 32768).next_power_of_two();
            out.add(
                "engine",
                "ring_entries",
                format!(
                    "must be a power of two between 8 and 32768 (got {})",
                    e.ring_entries
                ),
            )
            .hint(format!("e.g. ring_entries = {nearest}"));
        }
        check_recv_buffers(out, "engine", e.recv_buffers, e.recv_buffer_bytes);
        if !matches!(e.send_path.as_str(), "splice" | "read-send") {
            out.add(
                "engine",
                "send_path",
                format!(
                    "must be \"splice\" or \"read-send\" (got {:?})",
                    e.send_path
                ),
            );
        }
        if e.cold_fetches_max > 1024 {
            out.add(
                "engine",
                "cold_fetches_max",
                format!(
                    "is {}; at most 1024 (each reads a 2 MiB block in an io_uring thread)",
                    e.cold_fetches_max
                ),
            );
        }
        if e.jobs_max == 0 {
            out.add("engine", "jobs_max", "must be at least 1");
        }
    }

    fn check_http(&self, out: &mut Problems) {
        let h = &self.http;
        if h.request_line_bytes_max == 0 || h.request_line_bytes_max > h.header_bytes_max {
            out.add(
                "http",
                "request_line_bytes_max",
                format!(
                    "must be positive and at most header_bytes_max ({}; got {})",
                    h.header_bytes_max, h.request_line_bytes_max
                ),
            );
        }
        if h.header_bytes_max > 1 << 20 {
            out.add(
                "http",
                "header_bytes_max",
                format!("must be at most 1 MiB (got {})", h.header_bytes_max),
            );
        }
        if h.headers_count_max == 0 || h.headers_count_max > 128 {
            out.add(
                "http",
                "headers_count_max",
                format!("must be between 1 and 128 (got {})", h.headers_count_max),
            );
        }
        if let Some(token) = &h.api_token {
            if let Some(why) = api_token_too_short(token) {
                out.add("http", "api_token", format!("the file key {why}"))
                    .hint(API_TOKEN_HINT);
            }
        }
        for (k, v) in [
            ("header_timeout_secs", h.header_timeout_secs),
            ("keepalive_timeout_secs", h.keepalive_timeout_secs),
            ("send_timeout_secs", h.send_timeout_secs),
            ("body_timeout_secs", h.body_timeout_secs),
        ] {
            if v == 0 || v > 3600 {
                out.add(
                    "http",
                    k,
                    format!("must be between 1 and 3600 seconds (got {v})"),
                );
            }
        }
    }

    fn check_pacing(&self, out: &mut Problems) {
        let p = &self.pacing;
        if !(0.0..=600.0).contains(&p.initial_burst_secs) {
            out.add(
                "pacing",
                "initial_burst_secs",
                format!("must be between 0 and 600 (got {})", p.initial_burst_secs),
            );
        }
        if !(0.0..=60.0).contains(&p.lead_secs) {
            out.add(
                "pacing",
                "lead_secs",
                format!("must be between 0 and 60 (got {})", p.lead_secs),
            )
            .hint(
                "1.0 is what nginx's limit_rate allows; 0 keeps a stream exactly on its schedule",
            );
        }
        for (k, v) in [
            ("factor_progressive", p.factor_progressive),
            ("factor_segment", p.factor_segment),
        ] {
            if !(1.0..=100.0).contains(&v) {
                out.add(
                    "pacing",
                    k,
                    format!("must be between 1.0 and 100.0 (got {v})"),
                )
                .hint("1.0 sends at exactly the media's bitrate");
            }
        }
    }

    fn check_storage(&self, out: &mut Problems) {
        let s = &self.storage;
        if s.open_files_max == 0 {
            out.add("storage", "open_files_max", "must be at least 1");
        }
        if s.default_bitrate_bps == 0 {
            out.add("storage", "default_bitrate_bps", "must be positive")
                .hint("e.g. default_bitrate_bps = 5000000 (5 Mbit/s)");
        }
        if !matches!(s.read_mode.as_str(), "buffered" | "direct") {
            out.add(
                "storage",
                "read_mode",
                format!("must be \"buffered\" or \"direct\" (got {:?})", s.read_mode),
            );
        } else if self.direct_reads() && self.engine.chunk_bytes < 8192 {
            out.add(
                "engine",
                "chunk_bytes",
                format!(
                    "must be at least 8192 with [storage] read_mode = \"direct\" (got {})",
                    self.engine.chunk_bytes
                ),
            )
            .hint("chunk_bytes = 8192, or [storage] read_mode = \"buffered\"");
        }
        if s.scrub_interval_hours == 0 || s.scrub_interval_hours > 24 * 366 {
            out.add(
                "storage",
                "scrub_interval_hours",
                format!(
                    "must be between 1 and 8784 (got {})",
                    s.scrub_interval_hours
                ),
            )
            .hint(
                "scrub_interval_hours = 168 (weekly); scrub_bytes_per_sec = 0 turns the scrub off",
            );
        }
        if !matches!(s.corrupt_policy.as_str(), "refuse" | "serve") {
            out.add(
                "storage",
                "corrupt_policy",
                format!(
                    "must be \"refuse\" or \"serve\" (got {:?})",
                    s.corrupt_policy
                ),
            );
        }
    }

    fn check_resources(&self, out: &mut Problems) {
        let r = &self.resources;
        for (warn, warn_name, critical, critical_name) in [
            (
                r.warn_percent,
                "warn_percent",
                r.critical_percent,
                "critical_percent",
            ),
            (
                r.fds_warn_percent,
                "fds_warn_percent",
                r.fds_critical_percent,
                "fds_critical_percent",
            ),
        ] {
            if critical > 100 {
                out.add(
                    "resources",
                    critical_name,
                    format!("is a percentage: at most 100 (got {critical})"),
                );
            } else if warn > critical {
                out.add(
                    "resources",
                    warn_name,
                    format!("must be at most {critical_name} ({critical}; got {warn})"),
                )
                .hint(format!("{warn_name} = {}", critical.saturating_sub(15)));
            }
        }
        if r.connections_max == 0 {
            out.add("resources", "connections_max", "must be at least 1");
        }
    }
}

const API_TOKEN_HINT: &str =
    "use a long random string, e.g. the output of `openssl rand -hex 16` (32 characters)";

/// The one rule for an API token wherever it comes from; `Some(why)` when it breaks it.
/// `recv_buffers` and `recv_buffer_bytes` of `section` (`[engine]` for the media server,
/// `[logd]` for a log server): what the engine registers as provided receive buffers.
pub(super) fn check_recv_buffers(
    out: &mut Problems,
    section: &'static str,
    buffers: usize,
    bytes: usize,
) {
    if buffers != 0 && (buffers > 32768 || !buffers.is_power_of_two()) {
        out.add(
            section,
            "recv_buffers",
            format!("must be 0 (off) or a power of two up to 32768 (got {buffers})"),
        )
        .hint(format!(
            "e.g. recv_buffers = {}",
            buffers.min(32768).next_power_of_two()
        ));
    }
    if !(512..=65536).contains(&bytes) {
        out.add(
            section,
            "recv_buffer_bytes",
            format!("must be between 512 and 65536 (got {bytes})"),
        );
    }
}

fn api_token_too_short(token: &str) -> Option<String> {
    let n = token.chars().count();
    (n < API_TOKEN_CHARS_MIN).then(|| {
        format!("is {n} characters long; an API token needs at least {API_TOKEN_CHARS_MIN}")
    })
}

/// The API token in force: the file's `[http] api_token`, else a non-empty `OASIS_API_TOKEN`
/// (`env`). Either is held to the same rule; the error names which one breaks it.
pub fn api_token_from(
    file: Option<&str>,
    env: Option<&str>,
) -> Result<Option<String>, Diagnostics> {
    let (token, key, source, hint) = match (file, env.filter(|t| !t.is_empty())) {
        (Some(t), _) => (t, "[http] api_token", "the file key", API_TOKEN_HINT.into()),
        (None, Some(t)) => (
            t,
            "OASIS_API_TOKEN",
            "the environment variable",
            format!(
                "{API_TOKEN_HINT}; or unset OASIS_API_TOKEN and set [http] api_token in the file"
            ),
        ),
        (None, None) => return Ok(None),
    };
    match api_token_too_short(token) {
        None => Ok(Some(token.to_string())),
        Some(why) => Err(Diagnostics {
            origin: None,
            items: vec![Diagnostic {
                at: None,
                key: key.into(),
                message: format!("{source} {why}"),
                hint: Some(hint),
            }],
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(cfg: &Config) -> Vec<String> {
        cfg.problems().iter().map(|p| p.key.to_string()).collect()
    }

    #[test]
    fn the_default_passes() {
        assert_eq!(Config::default().problems(), vec![]);
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let mut cfg = Config::default();
        cfg.engine.chunk_bytes = 1000;
        cfg.engine.ring_entries = 100;
        cfg.http.send_timeout_secs = 0;
        cfg.pacing.factor_segment = 0.5;
        cfg.pacing.lead_secs = -1.0;
        assert_eq!(
            keys(&cfg),
            [
                "[engine] chunk_bytes",
                "[engine] ring_entries",
                "[http] send_timeout_secs",
                "[pacing] lead_secs",
                "[pacing] factor_segment"
            ]
        );
        let err = cfg.check().unwrap_err().to_string();
        assert!(err.ends_with("5 errors in the configuration"), "{err}");
        assert!(err.contains("what nginx's limit_rate allows"), "{err}");
        assert!(
            err.contains("hint: the nearest allowed is chunk_bytes = 4096"),
            "{err}"
        );
        assert!(err.contains("hint: e.g. ring_entries = 128"), "{err}");
    }

    #[test]
    fn relations_name_the_key_to_change() {
        let mut cfg = Config::default();
        cfg.resources.warn_percent = 99;
        cfg.storage.read_mode = "direct".into();
        cfg.engine.chunk_bytes = 4096;
        cfg.engine.buffer_pool_bytes = 8192;
        assert_eq!(
            keys(&cfg),
            [
                "[engine] buffer_pool_bytes",
                "[engine] chunk_bytes",
                "[resources] warn_percent"
            ]
        );
        let mut cfg = Config::default();
        cfg.listen.push(cfg.listen[0].clone());
        cfg.listen[0].bandwidth_bps = 0;
        let problems = cfg.problems();
        assert_eq!(problems[0].key.index, Some(0));
        assert_eq!(problems[0].key.name, Some("bandwidth_bps"));
        assert_eq!(problems[1].key.index, Some(1));
        assert_eq!(problems[1].key.to_string(), "[[listen]] addr");
    }

    #[test]
    fn a_short_token_is_refused_from_either_source() {
        let long = "0123456789abcdef";
        assert_eq!(api_token_from(None, None).unwrap(), None);
        assert_eq!(api_token_from(None, Some("")).unwrap(), None);
        assert_eq!(
            api_token_from(None, Some(long)).unwrap().as_deref(),
            Some(long)
        );
        // The file's key wins; the environment is not consulted then.
        assert_eq!(
            api_token_from(Some(long), Some("short"))
                .unwrap()
                .as_deref(),
            Some(long)
        );
        let err = api_token_from(None, Some("short")).unwrap_err().to_string();
        assert!(
            err.starts_with("OASIS_API_TOKEN: the environment variable is 5 characters long; an API token needs at least 16\n"),
            "{err}"
        );
        let err = api_token_from(Some("short"), None).unwrap_err().to_string();
        assert!(
            err.starts_with("[http] api_token: the file key is 5 characters long"),
            "{err}"
        );
        let mut cfg = Config::default();
        cfg.http.api_token = Some("short".into());
        assert_eq!(keys(&cfg), ["[http] api_token"]);
    }
}
