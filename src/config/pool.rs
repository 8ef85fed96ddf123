//! `[pool]`: this server as a node of a pool that shares one PostgreSQL catalog, and its checks.
//! Empty `catalog` (the default): the embedded SQLite catalog in the data directory.
//! Pure: nothing connects here; the store opens the catalog at start-up.

use serde::{Deserialize, Serialize};

use super::check::Problems;
use super::Config;

/// `[pool]`: the shared catalog and this node's id in it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoolSection {
    /// `postgres://user[:password]@host:port/database`; empty: the embedded SQLite catalog.
    pub catalog: String,
    /// This node's id in the pool (required with `catalog`).
    pub node_id: String,
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
        out
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
        let err = Config::parse("[pool]\nnode_id = \"n1\"\n", "t")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[pool] node_id: is set but [pool] catalog is empty"),
            "{err}"
        );

        let ok = Config::parse(
            "[pool]\ncatalog = \"postgres://oasis@127.0.0.1:5432/oasis\"\nnode_id = \"node-1\"\n",
            "t",
        )
        .unwrap();
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
