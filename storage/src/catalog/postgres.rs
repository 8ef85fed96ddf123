//! The PostgreSQL catalog backend, for pools: many Oasis nodes share one database, each opening
//! it as one node (`node_id`).
//!
//! Object rows carry the node that holds their file: a [`PgCatalog`] loads, replaces and removes
//! only its own node's rows, while version ids come from one counter row shared by the whole pool,
//! so an id names one version in the pool. Users and the audit trail are the pool's (one account
//! list, one trail whose seqs come from a counter row too, so they are never reused after a
//! prune). The pool's own tables (nodes and their heartbeats, which node holds which version) are
//! in the child module `pool`; users and audit in `accounts`; the session in `conn`.
//!
//! The schema is versioned in the `oasis_schema` row; [`MIGRATIONS`] brings an older database up
//! to date, one transaction per step with that row locked, and a newer database is refused.
//! Every mutating call is one transaction, committed before it returns (PostgreSQL's
//! `synchronous_commit` must stay on for a commit to be durable). The store keeps its order: a
//! version's file is durable on its node before its row is inserted here.
//!
//! Kept to SQL that PostgreSQL-wire distributed databases run too: no advisory locks, no
//! LISTEN/NOTIFY, no triggers, functions or sequences (counters are rows updated in the
//! transaction that uses them), explicit transactions retried on SQLSTATE 40001.
//! Never called on the request path; never holds a transaction across calls.

mod accounts;
mod conn;
mod pool;

use postgres::types::ToSql;
use postgres::{GenericClient, Row};

use super::rows::{to_i64, ObjectRow};
use super::{
    AuditQuery, AuditRecord, BitrateUpdate, Catalog, CatalogError, ObjectMeta, UserRecord,
};
use conn::{Conn, TxError, BACKEND};

pub use conn::{redact_url, url_problem};
pub use pool::{Holder, NodeLoad, NodeRecord, PoolCatalog, ReplicaRecord, POOL_NODES_MAX};

/// Migration `i` takes the schema from version `i` to `i + 1`. Append only; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: objects per node, the pool-wide counters, users, the audit trail, the pool's nodes
    // and replicas.
    "CREATE TABLE oasis_counters (
        name  TEXT   PRIMARY KEY,
        value BIGINT NOT NULL CHECK (value > 0)
    );
    INSERT INTO oasis_counters (name, value) VALUES ('next_object_id', 1), ('next_audit_seq', 1);
    CREATE TABLE objects (
        id              BIGINT PRIMARY KEY CHECK (id > 0),
        node_id         TEXT   NOT NULL CHECK (length(node_id) > 0),
        name            TEXT   NOT NULL CHECK (length(name) > 0),
        size_bytes      BIGINT NOT NULL CHECK (size_bytes >= 0),
        content_type    TEXT   NOT NULL,
        crc32c          BIGINT NOT NULL CHECK (crc32c BETWEEN 0 AND 4294967295),
        created_unix_ms BIGINT NOT NULL CHECK (created_unix_ms >= 0),
        bitrate_bps     BIGINT NOT NULL CHECK (bitrate_bps >= 0),
        bitrate_source  TEXT   NOT NULL
                        CHECK (bitrate_source IN ('uploader', 'mp4', 'hls_extinf', 'default', 'playlist')),
        duration_ms     BIGINT CHECK (duration_ms IS NULL OR duration_ms > 0),
        UNIQUE (node_id, name)
    );
    CREATE TABLE users (
        name            TEXT   PRIMARY KEY CHECK (length(name) > 0),
        role            TEXT   NOT NULL,
        prefixes        TEXT   NOT NULL,
        token_hash      BYTEA  NOT NULL CHECK (length(token_hash) = 32),
        old_token_hash  BYTEA  CHECK (old_token_hash IS NULL OR length(old_token_hash) = 32),
        created_unix_ms BIGINT NOT NULL CHECK (created_unix_ms >= 0),
        updated_unix_ms BIGINT NOT NULL CHECK (updated_unix_ms >= 0)
    );
    CREATE TABLE audit (
        seq        BIGINT PRIMARY KEY CHECK (seq > 0),
        node_id    TEXT   NOT NULL,
        at_unix_ms BIGINT NOT NULL CHECK (at_unix_ms >= 0),
        user_name  TEXT   NOT NULL,
        client     TEXT   NOT NULL,
        action     TEXT   NOT NULL,
        object     TEXT   NOT NULL,
        outcome    TEXT   NOT NULL,
        detail     TEXT   NOT NULL
    );
    CREATE INDEX audit_at ON audit (at_unix_ms);
    CREATE INDEX audit_user_seq ON audit (user_name, seq);
    CREATE INDEX audit_action_seq ON audit (action, seq);
    CREATE TABLE pool_nodes (
        node_id                TEXT   PRIMARY KEY CHECK (length(node_id) > 0),
        advertise              TEXT   NOT NULL,
        heartbeat_unix_ms      BIGINT NOT NULL,
        connections            BIGINT NOT NULL CHECK (connections >= 0),
        bandwidth_reserved_bps BIGINT NOT NULL CHECK (bandwidth_reserved_bps >= 0),
        bandwidth_limit_bps    BIGINT NOT NULL CHECK (bandwidth_limit_bps >= 0)
    );
    CREATE TABLE pool_replicas (
        name            TEXT   NOT NULL CHECK (length(name) > 0),
        node_id         TEXT   NOT NULL CHECK (length(node_id) > 0),
        version_id      BIGINT NOT NULL CHECK (version_id > 0),
        size_bytes      BIGINT NOT NULL CHECK (size_bytes >= 0),
        crc32c          BIGINT NOT NULL CHECK (crc32c BETWEEN 0 AND 4294967295),
        created_unix_ms BIGINT NOT NULL CHECK (created_unix_ms >= 0),
        durable_unix_ms BIGINT NOT NULL CHECK (durable_unix_ms >= 0),
        PRIMARY KEY (name, node_id)
    );
    CREATE INDEX pool_replicas_version ON pool_replicas (name, version_id);",
];

/// The schema version this code writes and understands.
pub const PG_SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// The columns of an object row, in the order [`read_meta`] reads them.
const OBJECT_COLUMNS: &str =
    "id, name, size_bytes, content_type, crc32c, created_unix_ms, bitrate_bps, bitrate_source, duration_ms";

/// Object rows read per statement by [`Catalog::load_all`] (it pages by id).
const LOAD_PAGE_ROWS: i64 = 10_000;

/// Longest node id, bytes.
pub const NODE_ID_BYTES_MAX: usize = 64;

/// Why `node_id` cannot name a node of a pool, or `None` when it can: 1 to
/// [`NODE_ID_BYTES_MAX`] bytes of ASCII letters, digits, `.`, `_` and `-`.
pub fn node_id_problem(node_id: &str) -> Option<String> {
    if node_id.is_empty() || node_id.len() > NODE_ID_BYTES_MAX {
        return Some(format!(
            "must be 1 to {NODE_ID_BYTES_MAX} bytes (got {})",
            node_id.len()
        ));
    }
    if let Some(c) = node_id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Some(format!(
            "{c:?} is not allowed: use ASCII letters, digits, '.', '_' and '-'"
        ));
    }
    None
}

/// The PostgreSQL implementation of [`Catalog`] (and [`PoolCatalog`]), opened for one node.
pub struct PgCatalog {
    conn: Conn,
    node_id: String,
    /// The redacted URL and the node, for messages.
    location: String,
}

impl std::fmt::Debug for PgCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCatalog")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// Reads one object row (selected as [`OBJECT_COLUMNS`]).
fn read_meta(location: &str, row: &Row) -> Result<ObjectMeta, TxError> {
    let row = ObjectRow {
        id: row.try_get(0)?,
        name: row.try_get(1)?,
        size_bytes: row.try_get(2)?,
        content_type: row.try_get(3)?,
        crc32c: row.try_get(4)?,
        created_unix_ms: row.try_get(5)?,
        bitrate_bps: row.try_get(6)?,
        bitrate_source: row.try_get(7)?,
        duration_ms: row.try_get(8)?,
    };
    Ok(row.into_meta(location)?)
}

/// Inserts one object row of `node_id` (within the caller's transaction).
fn insert_row(tx: &mut impl GenericClient, node_id: &str, r: &ObjectMeta) -> Result<(), TxError> {
    tx.execute(
        &format!(
            "INSERT INTO objects (node_id, {OBJECT_COLUMNS}) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)"
        ),
        &[
            &node_id,
            &to_i64(r.id),
            &r.name,
            &to_i64(r.size_bytes),
            &r.content_type,
            &i64::from(r.crc32c),
            &to_i64(r.created_unix_ms),
            &to_i64(r.bitrate_bps),
            &r.bitrate_source.as_str(),
            &r.duration_ms.map(to_i64),
        ],
    )?;
    Ok(())
}

/// Reads a counter row's value as an id or seq.
fn positive(location: &str, what: &str, v: i64) -> Result<u64, TxError> {
    match u64::try_from(v) {
        Ok(v @ 1..) => Ok(v),
        _ => Err(TxError::Catalog(CatalogError::InvalidRow {
            location: location.to_string(),
            what: format!("{what} {v} is not positive"),
        })),
    }
}

/// Takes `n` from the counter row `name` in the caller's transaction; returns the first value.
fn take_from_counter(
    tx: &mut impl GenericClient,
    location: &str,
    name: &str,
    n: u64,
) -> Result<u64, TxError> {
    let n = to_i64(n);
    let row = tx.query_one(
        "UPDATE oasis_counters SET value = value + $2 WHERE name = $1 RETURNING value - $2",
        &[&name, &n],
    )?;
    positive(location, name, row.try_get(0)?)
}

impl PgCatalog {
    /// Connects to the database at `url` (`postgres://user[:password]@host:port/database`) as
    /// node `node_id`, and migrates the schema to [`PG_SCHEMA_VERSION`]. Refuses a database with
    /// a newer schema, and a node id [`node_id_problem`] refuses.
    pub fn open(url: &str, node_id: &str) -> Result<PgCatalog, CatalogError> {
        let conn = Conn::new(url)?;
        let location = format!("{} (node {node_id:?})", conn.shown());
        if let Some(why) = node_id_problem(node_id) {
            return Err(CatalogError::InvalidRow {
                location,
                what: format!("node id {node_id:?}: {why}"),
            });
        }
        let mut catalog = PgCatalog {
            conn,
            node_id: node_id.to_string(),
            location,
        };
        catalog.migrate()?;
        Ok(catalog)
    }

    /// The node this catalog was opened for.
    pub fn node_id(&self) -> &str {
        &self.node_id
    }

    /// Commits an object row and this node's replica row in one transaction: the replica row
    /// carries `pool_version` for a copy from another node (refused when the pool lists a newer
    /// version of the name), the object's own id otherwise.
    fn commit_row(
        &mut self,
        record: &ObjectMeta,
        pool_version: Option<u64>,
    ) -> Result<Option<ObjectMeta>, CatalogError> {
        let (location, node) = (self.location.clone(), self.node_id.clone());
        self.conn.transaction("commit an object row", |tx| {
            if let Some(version) = pool_version {
                let row = tx.query_one(
                    "SELECT max(version_id) FROM pool_replicas WHERE name = $1",
                    &[&record.name],
                )?;
                let current: Option<i64> = row.try_get(0)?;
                let current = current.and_then(|c| u64::try_from(c).ok()).unwrap_or(0);
                if current > version {
                    return Err(CatalogError::Superseded {
                        name: record.name.clone(),
                        version,
                        current,
                    }
                    .into());
                }
            }
            let replaced = tx
                .query_opt(
                    &format!(
                        "DELETE FROM objects WHERE node_id = $1 AND name = $2 RETURNING {OBJECT_COLUMNS}"
                    ),
                    &[&node, &record.name],
                )?
                .map(|row| read_meta(&location, &row))
                .transpose()?;
            if let Some(old) = &replaced {
                assert_ne!(old.id, record.id, "a version replacing itself");
            }
            insert_row(tx, &node, record)?;
            // This node holds the new version from now on (its file is durable: the store syncs
            // it before this call).
            let mut replica = ReplicaRecord::of(record, &node, record.created_unix_ms);
            if let Some(version) = pool_version {
                replica.version_id = version;
            }
            pool::put_replica(tx, &replica)?;
            Ok(replaced)
        })
    }

    fn migrate(&mut self) -> Result<(), CatalogError> {
        // Two nodes starting at once may both create the table: the loser's statement fails
        // with a duplicate, and the second try sees the table.
        let bootstrap = "CREATE TABLE IF NOT EXISTS oasis_schema (
                id      INT PRIMARY KEY CHECK (id = 1),
                version INT NOT NULL CHECK (version >= 0)
            );
            INSERT INTO oasis_schema (id, version) VALUES (1, 0) ON CONFLICT (id) DO NOTHING;";
        if self
            .conn
            .with("create the schema version table", |c| {
                Ok(c.batch_execute(bootstrap)?)
            })
            .is_err()
        {
            self.conn.with("create the schema version table", |c| {
                Ok(c.batch_execute(bootstrap)?)
            })?;
        }
        let location = self.location.clone();
        loop {
            let step = self.conn.transaction("apply a schema migration", |tx| {
                let found: i32 = tx
                    .query_one(
                        "SELECT version FROM oasis_schema WHERE id = 1 FOR UPDATE",
                        &[],
                    )?
                    .try_get(0)?;
                let found = u32::try_from(found).unwrap_or(0);
                if found > PG_SCHEMA_VERSION {
                    return Err(TxError::Catalog(CatalogError::SchemaTooNew {
                        location: location.clone(),
                        found,
                        known: PG_SCHEMA_VERSION,
                    }));
                }
                let Some(sql) = MIGRATIONS.get(found as usize) else {
                    return Ok(None);
                };
                tx.batch_execute(sql)?;
                tx.execute(
                    "UPDATE oasis_schema SET version = $1 WHERE id = 1",
                    &[&(found as i32 + 1)],
                )?;
                Ok(Some(found))
            })?;
            let Some(from) = step else { return Ok(()) };
            tracing::info!(target: "oasis::storage", catalog = %self.location, from, to = from + 1, "catalog schema migrated");
        }
    }

    /// Runs `sql` (one statement taking `args`) and reads every row with `read`.
    fn collect<T>(
        &mut self,
        op: &'static str,
        sql: &str,
        args: &[&(dyn ToSql + Sync)],
        read: impl Fn(&str, &Row) -> Result<T, TxError>,
    ) -> Result<Vec<T>, CatalogError> {
        let location = &self.location;
        self.conn.with(op, |c| {
            c.query(sql, args)?
                .iter()
                .map(|row| read(location, row))
                .collect()
        })
    }

    fn counter(&mut self, name: &'static str) -> Result<u64, CatalogError> {
        let location = &self.location;
        self.conn.with("read a counter", |c| {
            let row = c.query_one("SELECT value FROM oasis_counters WHERE name = $1", &[&name])?;
            positive(location, name, row.try_get(0)?)
        })
    }
}

impl Catalog for PgCatalog {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn schema_version(&mut self) -> Result<u32, CatalogError> {
        let v: i32 = self.conn.with("read the schema version", |c| {
            Ok(
                c.query_one("SELECT version FROM oasis_schema WHERE id = 1", &[])?
                    .try_get(0)?,
            )
        })?;
        Ok(u32::try_from(v).unwrap_or(0))
    }

    fn load_all(&mut self) -> Result<Vec<ObjectMeta>, CatalogError> {
        let sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE node_id = $1 AND id > $2 ORDER BY id LIMIT $3"
        );
        let mut out = Vec::new();
        let mut after = 0i64;
        loop {
            let node = self.node_id.clone();
            let page = self.collect(
                "read the objects",
                &sql,
                &[&node, &after, &LOAD_PAGE_ROWS],
                read_meta,
            )?;
            let full = page.len() as i64 == LOAD_PAGE_ROWS;
            if let Some(last) = page.last() {
                after = to_i64(last.id);
            }
            out.extend(page);
            if !full {
                return Ok(out);
            }
        }
    }

    fn reserve_ids(&mut self, n: u64) -> Result<std::ops::Range<u64>, CatalogError> {
        assert!(n > 0, "reserving no ids");
        let location = self.location.clone();
        let start = self.conn.transaction("reserve object ids", |tx| {
            take_from_counter(tx, &location, "next_object_id", n)
        })?;
        Ok(start..start + n)
    }

    fn peek_next_id(&mut self) -> Result<u64, CatalogError> {
        self.counter("next_object_id")
    }

    fn advance_ids_to(&mut self, id: u64) -> Result<(), CatalogError> {
        self.conn.with("advance the id counter", |c| {
            c.execute(
                "UPDATE oasis_counters SET value = GREATEST(value, $1) WHERE name = 'next_object_id'",
                &[&to_i64(id)],
            )?;
            Ok(())
        })
    }

    fn insert_or_replace(
        &mut self,
        record: &ObjectMeta,
    ) -> Result<Option<ObjectMeta>, CatalogError> {
        self.commit_row(record, None)
    }

    fn insert_copy(
        &mut self,
        record: &ObjectMeta,
        pool_version: u64,
    ) -> Result<Option<ObjectMeta>, CatalogError> {
        self.commit_row(record, Some(pool_version))
    }

    fn remove(&mut self, name: &str) -> Result<Option<ObjectMeta>, CatalogError> {
        let (location, node) = (self.location.clone(), self.node_id.clone());
        self.conn.transaction("remove an object row", |tx| {
            let removed = tx
                .query_opt(
                    &format!(
                        "DELETE FROM objects WHERE node_id = $1 AND name = $2 RETURNING {OBJECT_COLUMNS}"
                    ),
                    &[&node, &name],
                )?
                .map(|row| read_meta(&location, &row))
                .transpose()?;
            tx.execute(
                "DELETE FROM pool_replicas WHERE node_id = $1 AND name = $2",
                &[&node, &name],
            )?;
            Ok(removed)
        })
    }

    fn remove_id(&mut self, id: u64) -> Result<bool, CatalogError> {
        let node = self.node_id.clone();
        self.conn.transaction("remove an object row", |tx| {
            let id = to_i64(id);
            let n = tx.execute(
                "DELETE FROM objects WHERE node_id = $1 AND id = $2",
                &[&node, &id],
            )?;
            tx.execute(
                "DELETE FROM pool_replicas WHERE node_id = $1 AND version_id = $2",
                &[&node, &id],
            )?;
            Ok(n > 0)
        })
    }

    fn update_bitrates(&mut self, updates: &[BitrateUpdate]) -> Result<(), CatalogError> {
        if updates.is_empty() {
            return Ok(());
        }
        let node = self.node_id.clone();
        self.conn.transaction("update bitrates", |tx| {
            let stmt = tx.prepare(
                "UPDATE objects SET bitrate_bps = $3, bitrate_source = $4 WHERE node_id = $1 AND id = $2",
            )?;
            for u in updates {
                tx.execute(
                    &stmt,
                    &[
                        &node,
                        &to_i64(u.id),
                        &to_i64(u.bitrate_bps),
                        &u.bitrate_source.as_str(),
                    ],
                )?;
            }
            Ok(())
        })
    }

    fn load_users(&mut self) -> Result<Vec<UserRecord>, CatalogError> {
        accounts::load_users(self)
    }

    fn put_user(&mut self, user: &UserRecord) -> Result<Option<UserRecord>, CatalogError> {
        accounts::put_user(self, user)
    }

    fn remove_user(&mut self, name: &str) -> Result<Option<UserRecord>, CatalogError> {
        accounts::remove_user(self, name)
    }

    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<u64, CatalogError> {
        accounts::append_audit(self, records)
    }

    fn query_audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, CatalogError> {
        accounts::query_audit(self, query)
    }

    fn prune_audit(&mut self, before_unix_ms: u64) -> Result<u64, CatalogError> {
        accounts::prune_audit(self, before_unix_ms)
    }
}
