//! `[monitor]`: where this process sends its status datagrams (`oasis serve` and `oasis logd`
//! read it from oasis.toml; `oasis agent` from its own file), and their checks.
//! Pure: nothing is resolved or bound here.

use serde::{Deserialize, Serialize};

use super::check::Problems;
use super::Config;

/// Shortest shared key accepted, in bytes.
const KEY_BYTES_MIN: usize = 16;

/// `[monitor]`: status datagrams to monitors.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitorSection {
    /// Monitors' UDP addresses, "host:port" each; empty: no datagrams.
    pub targets: Vec<String>,
    /// Time between two datagrams; a monitor calls the node stale after three.
    pub interval_ms: u64,
    /// The key shared with the monitors (HMAC-SHA256); empty: datagrams are not signed.
    pub key: String,
    /// The node's name on the dashboard; empty: host name and first listen address.
    pub node: String,
}

impl Default for MonitorSection {
    fn default() -> Self {
        MonitorSection {
            targets: Vec::new(),
            interval_ms: 1000,
            key: String::new(),
            node: String::new(),
        }
    }
}

impl MonitorSection {
    /// Every problem of the section, as `(key, message, hint)`.
    pub fn problems(&self) -> Vec<(&'static str, String, Option<&'static str>)> {
        let mut out = Vec::new();
        for t in &self.targets {
            let port_ok = t.rsplit_once(':').is_some_and(|(host, port)| {
                !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p > 0)
            });
            if !port_ok {
                out.push((
                    "targets",
                    format!("`{t}` is not host:port"),
                    Some("targets = [\"monitor.example:7470\"]"),
                ));
            }
        }
        if self.targets.len() > 16 {
            out.push((
                "targets",
                format!("at most 16 monitors (got {})", self.targets.len()),
                None,
            ));
        }
        if !(100..=60_000).contains(&self.interval_ms) {
            out.push((
                "interval_ms",
                format!("must be between 100 and 60000 (got {})", self.interval_ms),
                Some("interval_ms = 1000"),
            ));
        }
        if !self.key.is_empty() && self.key.len() < KEY_BYTES_MIN {
            out.push((
                "key",
                format!(
                    "must be {KEY_BYTES_MIN} bytes or more (got {})",
                    self.key.len()
                ),
                Some("key = \"$(head -c 24 /dev/urandom | base64)\""),
            ));
        }
        if self.node.len() > oasis_monitor::status::NODE_ID_BYTES_MAX {
            out.push((
                "node",
                format!(
                    "must be {} bytes or fewer (got {})",
                    oasis_monitor::status::NODE_ID_BYTES_MAX,
                    self.node.len()
                ),
                None,
            ));
        }
        out
    }

    /// The key, if one is set.
    pub fn key(&self) -> Option<&str> {
        (!self.key.is_empty()).then_some(self.key.as_str())
    }
}

impl Config {
    pub(super) fn check_monitor(&self, out: &mut Problems) {
        out.add_all("monitor", self.monitor.problems());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monitor_values_are_checked_and_located() {
        let err = Config::parse(
            "[monitor]\ntargets = [\"nohost\", \"h:1\"]\ninterval_ms = 5\nkey = \"short\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("[monitor] targets: `nohost` is not host:port"),
            "{err}"
        );
        assert!(
            err.contains("t:3:15: [monitor] interval_ms: must be between 100 and 60000 (got 5)"),
            "{err}"
        );
        assert!(
            err.contains("[monitor] key: must be 16 bytes or more (got 5)"),
            "{err}"
        );
        let ok = Config::parse(
            "[monitor]\ntargets = [\"[::1]:7470\", \"m.example:7470\"]\n",
            "t",
        )
        .unwrap();
        assert_eq!(ok.monitor.interval_ms, 1000);
        assert_eq!(ok.monitor.key(), None);
    }
}
