//! `[pool]`: this server as a node of a pool that shares one PostgreSQL catalog, and its checks.
//! Empty `catalog` (the default): the embedded SQLite catalog in the data directory.
//! Pure: nothing connects here; the store opens the catalog at start-up.

use serde::{Deserialize, Serialize};

use super::check::Problems;
use super::Config;

/// Most copies of an object a pool keeps (`replicas`).
pub const REPLICAS_MAX: u32 = 16;

/// `[pool]`: the shared catalog, this node's id and address in it, and how it shares objects.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    /// `postgres://user[:password]@host:port/database`; empty: the embedded SQLite catalog.
    pub catalog: String,
    /// This node's id in the pool (required with `catalog`).
    pub node_id: String,
    /// The base URL clients and the other nodes reach this node on (required with `catalog`),
    /// e.g. `http://10.0.0.1:8080`.
    pub advertise: String,
    /// How many nodes hold a copy of each object (1..=16).
    pub replicas: u32,
    /// What a node does with a GET for an object held elsewhere: `redirect` (307 to a holder)
    /// or `proxy` (streamed from a holder through this node).
    pub mode: String,
    /// A node whose last heartbeat is older than this is down, milliseconds.
    pub down_after_ms: u64,
}

impl Default for PoolSection {
    fn default() -> Self {
        PoolSection {
            catalog: String::new(),
            node_id: String::new(),
            advertise: String::new(),
            replicas: 2,
            mode: "redirect".into(),
            down_after_ms: 5_000,
        }
    }
}

impl PoolSection {
    /// Every problem of the section, as `(key, message, hint)`.
    pub fn problems(&self) -> Vec<(&'static str, String, Option<&'static str>)> {
        let mut out = Vec::new();
        let url_hint = Some("catalog = \"postgres://oasis@db.example:5432/oasis\"");
        if self.catalog.is_empty() {
            if !self.node_id.is_empty() {
                out.push((
                    "node_id",
                    "is set but [pool] catalog is empty: a node id needs a shared catalog".into(),
                    url_hint,
                ));
            }
            return out;
        }
        let shown = oasis_storage::redact_url(&self.catalog);
        if let Some(why) = oasis_storage::url_problem(&self.catalog) {
            out.push(("catalog", format!("`{shown}`: {why}"), url_hint));
        }
        if self.node_id.is_empty() {
            out.push((
                "node_id",
                "is required with [pool] catalog: each node of a pool needs its own id".into(),
                Some("node_id = \"node-1\""),
            ));
        } else if let Some(why) = oasis_storage::node_id_problem(&self.node_id) {
            out.push(("node_id", why, Some("node_id = \"node-1\"")));
        }
        let advertise_hint = Some("advertise = \"http://10.0.0.1:8080\"");
        if self.advertise.is_empty() {
            out.push((
                "advertise",
                "is required with [pool] catalog: the URL clients and the other nodes reach \
                 this node on"
                    .into(),
                advertise_hint,
            ));
        } else if !advertise_ok(&self.advertise) {
            out.push((
                "advertise",
                format!(
                    "`{}` is not a base URL: use http://host:port, without a path, query or \
                     spaces",
                    self.advertise
                ),
                advertise_hint,
            ));
        }
        if self.replicas == 0 || self.replicas > REPLICAS_MAX {
            out.push((
                "replicas",
                format!(
                    "{} copies: keep between 1 and {REPLICAS_MAX} copies of each object",
                    self.replicas
                ),
                Some("replicas = 2"),
            ));
        }
        match self.mode.as_str() {
            "redirect" | "proxy" => {}
            other => out.push((
                "mode",
                format!("{other:?} is not a pool mode: use \"redirect\" or \"proxy\""),
                Some("mode = \"redirect\""),
            )),
        }
        if !(1_000..=3_600_000).contains(&self.down_after_ms) {
            out.push((
                "down_after_ms",
                format!(
                    "{} ms: a node is marked down after 1,000 to 3,600,000 ms without a \
                     heartbeat (heartbeats come every second)",
                    self.down_after_ms
                ),
                Some("down_after_ms = 5000"),
            ));
        }
        out
    }

    /// Whether this server is a node of a pool (a shared catalog is set).
    pub fn is_pool(&self) -> bool {
        !self.catalog.is_empty()
    }

    /// The catalog the store opens.
    pub fn catalog_location(&self) -> oasis_storage::CatalogLocation {
        if self.catalog.is_empty() {
            oasis_storage::CatalogLocation::Sqlite
        } else {
            oasis_storage::CatalogLocation::Postgres {
                url: self.catalog.clone(),
                node_id: self.node_id.clone(),
            }
        }
    }
}

/// `http://host[:port]` or `https://...`, no path beyond `/`, no query, no spaces.
fn advertise_ok(url: &str) -> bool {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"));
    let Some(rest) = rest else {
        return false;
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    !authority.is_empty()
        && authority.len() <= 255
        && !authority.contains(['/', '?', '#', ' ', '@'])
        && authority.chars().all(|c| c.is_ascii_graphic())
}

impl Config {
    pub(super) fn check_pool(&self, out: &mut Problems) {
        out.add_all("pool", self.pool.problems());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_values_are_checked_and_located_without_the_password() {
        let err = Config::parse(
            "[pool]\ncatalog = \"mysql://u:pw-secret@h/db\"\nnode_id = \"a b\"\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("t:2:11: [pool] catalog: `mysql://u:<redacted>@h/db`: the catalog must be a URL like postgres://"),
            "{err}"
        );
        assert!(!err.contains("pw-secret"), "{err}");
        assert!(
            err.contains("t:3:11: [pool] node_id: ' ' is not allowed"),
            "{err}"
        );
        let err = Config::parse("[pool]\ncatalog = \"postgres://u:pw@h:5432/db\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(err.contains("[pool] node_id: is required"), "{err}");
        assert!(err.contains("[pool] advertise: is required"), "{err}");
        let err = Config::parse(
            "[pool]\ncatalog = \"postgres://u@h/db\"\nnode_id = \"n\"\nadvertise = \"ftp://x\"\n\
             replicas = 0\nmode = \"relay\"\ndown_after_ms = 10\n",
            "t",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "[pool] advertise: `ftp://x` is not a base URL",
            "[pool] replicas: 0 copies",
            "[pool] mode: \"relay\" is not a pool mode: use \"redirect\" or \"proxy\"",
            "[pool] down_after_ms: 10 ms",
        ] {
            assert!(err.contains(want), "{want}: {err}");
        }
        let err = Config::parse("[pool]\nnode_id = \"n1\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[pool] node_id: is set but [pool] catalog is empty"),
            "{err}"
        );

        let ok = Config::parse(
            "[pool]\ncatalog = \"postgres://oasis@127.0.0.1:5432/oasis\"\nnode_id = \"node-1\"\n\
             advertise = \"http://127.0.0.1:8080\"\n",
            "t",
        )
        .unwrap();
        assert!(Config::parse(
            "[pool]\ncatalog = \"postgres://oasis@127.0.0.1:5432/oasis\"\nnode_id = \"n\"\n\
             advertise = \"http://127.0.0.1:8080\"\nmode = \"proxy\"\n",
            "t",
        )
        .is_ok());
        let resolved = ok.resolve(&[0]).unwrap();
        assert_eq!(
            resolved.store.catalog,
            oasis_storage::CatalogLocation::Postgres {
                url: "postgres://oasis@127.0.0.1:5432/oasis".into(),
                node_id: "node-1".into()
            }
        );
        let default = Config::parse("", "t").unwrap().resolve(&[0]).unwrap();
        assert_eq!(
            default.store.catalog,
            oasis_storage::CatalogLocation::Sqlite
        );
    }
}
