//! The Database Manager: the catalog of media objects, user accounts and the audit trail behind
//! one standard interface.
//!
//! [`Catalog`] is the contract every backend meets: the embedded [`SqliteCatalog`] (the default)
//! and [`PgCatalog`], a PostgreSQL database many nodes of a pool share (which also keeps the
//! pool's nodes and replicas, [`PoolCatalog`]). [`CatalogLocation`] says which one a store opens. The Media Object Manager calls
//! it only on the control plane: at start-up to load everything, and on ingest, replace and delete
//! to commit. The User Manager and the Log Manager keep their records here too ([`UserRecord`],
//! [`AuditRecord`]), through the store, from threads that may block. Each mutating call is one
//! durable transaction: when it returns `Ok`, the change survives a crash; when it returns `Err`,
//! nothing changed.
//!
//! This module must never be called on the request path (lookups are served from the in-memory
//! index), never touch object content files, and never read the clock (times come in the records).

#[doc(hidden)]
pub mod fixtures;
mod postgres;
mod records;
mod rows;
mod sqlite;

pub use postgres::{
    node_id_problem, redact_url, url_problem, Holder, NodeLoad, NodeRecord, PgCatalog, PoolCatalog,
    ReplicaRecord, NODE_ID_BYTES_MAX, PG_SCHEMA_VERSION, POOL_NODES_MAX,
};
pub(crate) use records::audit_text;
pub use records::{
    AuditQuery, AuditRecord, UserRecord, AUDIT_QUERY_LIMIT_MAX, AUDIT_TEXT_BYTES_MAX,
};
pub use sqlite::{AccountsKept, SqliteCatalog, SCHEMA_VERSION};

use crate::bitrate::BitrateSource;

/// Which catalog a store opens.
#[derive(Clone, Default, PartialEq, Eq)]
pub enum CatalogLocation {
    /// The embedded SQLite file in the data directory (the default).
    #[default]
    Sqlite,
    /// A PostgreSQL database shared by a pool, opened as node `node_id`.
    Postgres {
        /// `postgres://user[:password]@host:port/database`.
        url: String,
        /// This node's id in the pool.
        node_id: String,
    },
}

impl std::fmt::Debug for CatalogLocation {
    /// Never shows a password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CatalogLocation::Sqlite => f.write_str("Sqlite"),
            CatalogLocation::Postgres { url, node_id } => f
                .debug_struct("Postgres")
                .field("url", &redact_url(url))
                .field("node_id", node_id)
                .finish(),
        }
    }
}

/// The metadata of one stored object version: one catalog row.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectMeta {
    /// Unique version id, never reused, even after delete. Names the content file.
    pub id: u64,
    /// The object name (validated by [`crate::validate_name`]).
    pub name: String,
    /// Exact length of the content file.
    pub size_bytes: u64,
    /// What the object is served as.
    pub content_type: String,
    /// CRC-32C (Castagnoli) of the whole content.
    pub crc32c: u32,
    /// When the version was committed, milliseconds since the Unix epoch (from the store's clock).
    pub created_unix_ms: u64,
    /// Bandwidth needed to stream the object in real time, bits per second.
    pub bitrate_bps: u64,
    /// Where `bitrate_bps` came from.
    pub bitrate_source: BitrateSource,
    /// Media duration in milliseconds where the container gives one (MP4's movie header).
    pub duration_ms: Option<u64>,
}

/// A change of bitrate of an already stored version (HLS segments learning their duration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BitrateUpdate {
    pub id: u64,
    pub bitrate_bps: u64,
    pub bitrate_source: BitrateSource,
}

/// Errors of a catalog backend.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    /// The backend failed an operation.
    #[error(
        "catalog ({backend}) failed to {op}: {source}; check the catalog file and its disk \
         (SQLite) or the database server's log (PostgreSQL), then restart (recovery runs at \
         start-up)"
    )]
    Backend {
        backend: &'static str,
        op: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// The catalog's disk is full.
    #[error(
        "catalog ({backend}) could not {op}: the disk is full; free space on the file system holding \
         the data directory and retry (nothing was changed)"
    )]
    Full {
        backend: &'static str,
        op: &'static str,
    },
    /// The catalog's database server cannot be reached, or the session to it broke (the next
    /// call connects again). `url` has its password redacted.
    #[error(
        "cannot reach the PostgreSQL catalog at {url}: {why}; check that the server runs and \
         accepts this user from this host, or fix [pool] catalog (postgres://user@host:port/database)"
    )]
    Unreachable { url: String, why: String },
    /// The catalog was written by a newer Oasis.
    #[error(
        "catalog {location} has schema version {found}, but this Oasis knows only up to {known}; \
         run the newer Oasis that wrote it, or restore a backup"
    )]
    SchemaTooNew {
        location: String,
        found: u32,
        known: u32,
    },
    /// The backend says its own file is damaged (SQLite: "malformed", "not a database").
    #[error("catalog ({backend}) is damaged: {source}")]
    Corrupt {
        backend: &'static str,
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A row breaks an invariant the schema cannot express.
    #[error(
        "catalog {location} holds an invalid row: {what}; restore a backup or delete that row"
    )]
    InvalidRow { location: String, what: String },
    /// A pool copy of an older version than the pool's current one of its name: refused, so a
    /// copy that arrives late never replaces a newer version (nothing was changed).
    #[error(
        "{name:?}: this copy is pool version {version}, but the pool already holds version \
         {current}; a late copy of a replaced object is not kept"
    )]
    Superseded {
        name: String,
        version: u64,
        current: u64,
    },
}

/// The standard interface of the Database Manager: media objects, user accounts, audit trail.
///
/// Methods take `&mut self`: the store serialises calls (a backend need not be `Sync`). Every
/// mutating method is atomic and durable on `Ok`.
pub trait Catalog: Send {
    /// A short backend name for messages ("sqlite", "postgres").
    fn backend(&self) -> &'static str;
    /// The schema version in force (after migrations).
    fn schema_version(&mut self) -> Result<u32, CatalogError>;
    /// Every record, in no particular order.
    fn load_all(&mut self) -> Result<Vec<ObjectMeta>, CatalogError>;
    /// `n` (at least 1) fresh version ids, never handed out before, in one durable transaction:
    /// a crash does not make any of them reusable, whether they were used or not.
    fn reserve_ids(&mut self, n: u64) -> Result<std::ops::Range<u64>, CatalogError>;
    /// One fresh version id (see [`Catalog::reserve_ids`]).
    fn next_id(&mut self) -> Result<u64, CatalogError> {
        Ok(self.reserve_ids(1)?.start)
    }
    /// The id [`Catalog::reserve_ids`] would hand out next, without taking it. Every id below it
    /// was handed out by this catalog.
    fn peek_next_id(&mut self) -> Result<u64, CatalogError>;
    /// Makes every later id at least `id` (a rebuilt catalog continues after the files it found).
    fn advance_ids_to(&mut self, id: u64) -> Result<(), CatalogError>;
    /// Inserts `record`, replacing the record with the same name if any; returns the replaced one.
    /// Fails if `record.id` is already in use.
    fn insert_or_replace(
        &mut self,
        record: &ObjectMeta,
    ) -> Result<Option<ObjectMeta>, CatalogError>;
    /// [`Catalog::insert_or_replace`] for a copy another node of the pool sent: this node's
    /// replica row carries `pool_version` (the origin's version id), not `record.id`, so the
    /// pool sees one version held by both at once. A backend with no pool (SQLite) inserts it as
    /// any upload. Fails with [`CatalogError::Superseded`] when the pool already lists a newer
    /// version of the name.
    fn insert_copy(
        &mut self,
        record: &ObjectMeta,
        pool_version: u64,
    ) -> Result<Option<ObjectMeta>, CatalogError> {
        let _ = pool_version;
        self.insert_or_replace(record)
    }
    /// Removes the record named `name`; returns it, or `None` if there was none.
    fn remove(&mut self, name: &str) -> Result<Option<ObjectMeta>, CatalogError>;
    /// Removes the record with version `id` (recovery); returns whether there was one.
    fn remove_id(&mut self, id: u64) -> Result<bool, CatalogError>;
    /// Applies bitrate changes to existing versions, all or none. Unknown ids are ignored.
    fn update_bitrates(&mut self, updates: &[BitrateUpdate]) -> Result<(), CatalogError>;

    /// Every user account, sorted by name.
    fn load_users(&mut self) -> Result<Vec<UserRecord>, CatalogError>;
    /// Inserts or replaces the user with this name; returns the replaced one.
    fn put_user(&mut self, user: &UserRecord) -> Result<Option<UserRecord>, CatalogError>;
    /// Removes the user named `name`; returns it, or `None` if there was none.
    fn remove_user(&mut self, name: &str) -> Result<Option<UserRecord>, CatalogError>;
    /// Appends all records in one transaction; returns the seq assigned to the first (the rest
    /// follow consecutively), or 0 when `records` is empty. The records' own `seq` is ignored,
    /// and text fields longer than [`AUDIT_TEXT_BYTES_MAX`] bytes are cut to it.
    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<u64, CatalogError>;
    /// The records `query` selects, ascending by seq, at most
    /// `min(query.limit, AUDIT_QUERY_LIMIT_MAX)` of them.
    fn query_audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, CatalogError>;
    /// Deletes records older than `before_unix_ms`; returns how many. Their seqs are not reused.
    fn prune_audit(&mut self, before_unix_ms: u64) -> Result<u64, CatalogError>;
}
