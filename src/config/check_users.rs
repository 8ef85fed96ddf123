//! Value checks of the User Manager's sections: `[links]`, `[[access]]`, `[auth]`, `[audit]` and
//! `[http] metrics_public`'s neighbours. Pure, like the rest of `check`.

use super::check::{Key, Problems};
use super::Config;

/// Longest `Cache-Control` value an `[[access]]` table may set.
const CACHE_CONTROL_BYTES_MAX: usize = 256;
/// Most `[[access]]` tables.
const ACCESS_RULES_MAX: usize = 1024;

impl Config {
    pub(super) fn check_users(&self, out: &mut Problems) {
        if let Err(e) = self.link_keys() {
            let message = e.to_string();
            let message = message.trim_start_matches("[links] keys: ").to_string();
            out.add("links", "keys", message)
                .hint("e.g. keys = [\"<the output of `openssl rand -hex 32`>\"]; a second key is accepted during a rotation");
        }
        let key = |index, name| Key {
            section: "access",
            index: Some(index),
            name: Some(name),
        };
        if self.access.len() > ACCESS_RULES_MAX {
            out.at(
                key(ACCESS_RULES_MAX, "prefix"),
                format!("at most {ACCESS_RULES_MAX} [[access]] tables"),
            );
        }
        for (i, a) in self.access.iter().enumerate() {
            if let Err(e) = a.read.parse::<oasis_net::auth::policy::ReadPolicy>() {
                out.at(key(i, "read"), e)
                    .hint("read = \"public\", \"token\" or \"signed\"");
            }
            if self.access[..i].iter().any(|b| b.prefix == a.prefix) {
                out.at(
                    key(i, "prefix"),
                    format!(
                        "prefix {:?} has an [[access]] table above already",
                        a.prefix
                    ),
                )
                .hint("one [[access]] table per prefix; merge the two");
            }
            if !a.prefix.is_empty()
                && oasis_storage::validate_name(&format!("{}x", a.prefix)).is_err()
            {
                out.at(
                    key(i, "prefix"),
                    format!("{:?} is not the start of a valid object name", a.prefix),
                )
                .hint("e.g. prefix = \"premium/\"");
            }
            if let Some(cc) = &a.cache_control {
                let printable = cc.bytes().all(|b| (0x20..0x7f).contains(&b));
                if !printable || cc.len() > CACHE_CONTROL_BYTES_MAX {
                    out.at(
                        key(i, "cache_control"),
                        format!("must be printable ASCII of at most {CACHE_CONTROL_BYTES_MAX} bytes (a header value)"),
                    )
                    .hint("e.g. cache_control = \"private, max-age=60\"");
                }
            }
        }
        if self.auth.failures_window_secs == 0 || self.auth.failures_window_secs > 86_400 {
            out.add(
                "auth",
                "failures_window_secs",
                format!(
                    "must be between 1 and 86400 (got {})",
                    self.auth.failures_window_secs
                ),
            );
        }
        if self.audit.queue_max == 0 || self.audit.queue_max > 1 << 20 {
            out.add(
                "audit",
                "queue_max",
                format!(
                    "must be between 1 and 1048576 (got {})",
                    self.audit.queue_max
                ),
            );
        }
    }
}
