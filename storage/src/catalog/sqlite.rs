//! The embedded catalog backend: one SQLite file (`DATA/catalog.sqlite`) in WAL mode with
//! `synchronous=FULL`, so a committed transaction is on disk before the call returns.
//!
//! The schema is versioned with `PRAGMA user_version`; [`MIGRATIONS`] brings an older file up to
//! date, each step in its own transaction, and a file newer than this code is refused. Objects
//! and the id counter live here; users and the audit trail in the child module `accounts`. This
//! module must never be used from the request path and never hold a transaction open across calls.

mod accounts;

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

use super::rows::ObjectRow;
use super::{
    AuditQuery, AuditRecord, BitrateUpdate, Catalog, CatalogError, ObjectMeta, UserRecord,
};

pub use accounts::AccountsKept;

const BACKEND: &str = "sqlite";

/// Migration `i` takes the schema from version `i` to `i + 1`. Append only; never edit a shipped one.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: objects and the id counter.
    "CREATE TABLE objects (
        id              INTEGER PRIMARY KEY CHECK (id > 0),
        name            TEXT    NOT NULL UNIQUE CHECK (length(name) > 0),
        size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
        content_type    TEXT    NOT NULL,
        crc32c          INTEGER NOT NULL CHECK (crc32c BETWEEN 0 AND 4294967295),
        created_unix_ms INTEGER NOT NULL CHECK (created_unix_ms >= 0),
        bitrate_bps     INTEGER NOT NULL CHECK (bitrate_bps >= 0),
        bitrate_source  TEXT    NOT NULL
                        CHECK (bitrate_source IN ('uploader', 'mp4', 'hls_extinf', 'default'))
    ) STRICT;
    CREATE TABLE counters (
        name  TEXT    PRIMARY KEY,
        value INTEGER NOT NULL
    ) STRICT;
    INSERT INTO counters (name, value) VALUES ('next_object_id', 1);",
    // 1 -> 2: playlists get a bitrate source of their own; the media duration is kept. SQLite
    // cannot change a CHECK in place, so the table is rebuilt.
    "CREATE TABLE objects_v2 (
        id              INTEGER PRIMARY KEY CHECK (id > 0),
        name            TEXT    NOT NULL UNIQUE CHECK (length(name) > 0),
        size_bytes      INTEGER NOT NULL CHECK (size_bytes >= 0),
        content_type    TEXT    NOT NULL,
        crc32c          INTEGER NOT NULL CHECK (crc32c BETWEEN 0 AND 4294967295),
        created_unix_ms INTEGER NOT NULL CHECK (created_unix_ms >= 0),
        bitrate_bps     INTEGER NOT NULL CHECK (bitrate_bps >= 0),
        bitrate_source  TEXT    NOT NULL
                        CHECK (bitrate_source IN ('uploader', 'mp4', 'hls_extinf', 'default', 'playlist')),
        duration_ms     INTEGER CHECK (duration_ms IS NULL OR duration_ms > 0)
    ) STRICT;
    INSERT INTO objects_v2 (id, name, size_bytes, content_type, crc32c, created_unix_ms, bitrate_bps, bitrate_source)
        SELECT id, name, size_bytes, content_type, crc32c, created_unix_ms, bitrate_bps, bitrate_source FROM objects;
    DROP TABLE objects;
    ALTER TABLE objects_v2 RENAME TO objects;",
    // 2 -> 3: the User Manager's accounts and the Log Manager's audit trail. AUTOINCREMENT keeps
    // the largest seq ever handed out in `sqlite_sequence`, so a seq is never reused, even after
    // the newest records are pruned.
    "CREATE TABLE users (
        name            TEXT    PRIMARY KEY CHECK (length(name) > 0),
        role            TEXT    NOT NULL,
        prefixes        TEXT    NOT NULL,
        token_hash      BLOB    NOT NULL CHECK (length(token_hash) = 32),
        old_token_hash  BLOB    CHECK (old_token_hash IS NULL OR length(old_token_hash) = 32),
        created_unix_ms INTEGER NOT NULL CHECK (created_unix_ms >= 0),
        updated_unix_ms INTEGER NOT NULL CHECK (updated_unix_ms >= 0)
    ) STRICT;
    CREATE TABLE audit (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        at_unix_ms INTEGER NOT NULL CHECK (at_unix_ms >= 0),
        user       TEXT    NOT NULL,
        client     TEXT    NOT NULL,
        action     TEXT    NOT NULL,
        object     TEXT    NOT NULL,
        outcome    TEXT    NOT NULL,
        detail     TEXT    NOT NULL
    ) STRICT;
    CREATE INDEX audit_at ON audit (at_unix_ms);
    CREATE INDEX audit_user_seq ON audit (user, seq);
    CREATE INDEX audit_action_seq ON audit (action, seq);",
];

/// The columns of an object row, in the order [`SqliteCatalog::row_to_meta`] reads them.
const OBJECT_COLUMNS: &str =
    "id, name, size_bytes, content_type, crc32c, created_unix_ms, bitrate_bps, bitrate_source, duration_ms";

/// The schema version this code writes and understands.
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

/// Object rows are bounded by what fits in an `i64` column; ids and sizes never get near it.
fn to_sql_u64(v: u64) -> i64 {
    assert!(
        v <= i64::MAX as u64,
        "value {v} does not fit the catalog's INTEGER columns"
    );
    v as i64
}

/// Inserts one object row (within the caller's transaction).
fn insert_row(conn: &Connection, r: &ObjectMeta) -> rusqlite::Result<usize> {
    conn.prepare_cached(&format!(
        "INSERT INTO objects ({OBJECT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
    ))?
    .execute(params![
        to_sql_u64(r.id),
        r.name,
        to_sql_u64(r.size_bytes),
        r.content_type,
        r.crc32c as i64,
        to_sql_u64(r.created_unix_ms),
        to_sql_u64(r.bitrate_bps.min(i64::MAX as u64)),
        r.bitrate_source.as_str(),
        r.duration_ms.map(to_sql_u64),
    ])
}

/// The SQLite implementation of [`Catalog`].
pub struct SqliteCatalog {
    conn: Connection,
    path: PathBuf,
}

impl std::fmt::Debug for SqliteCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteCatalog")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn backend_err(op: &'static str) -> impl FnOnce(rusqlite::Error) -> CatalogError {
    move |e| {
        if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DiskFull) {
            CatalogError::Full {
                backend: BACKEND,
                op,
            }
        } else if matches!(
            e.sqlite_error_code(),
            Some(rusqlite::ErrorCode::DatabaseCorrupt | rusqlite::ErrorCode::NotADatabase)
        ) {
            CatalogError::Corrupt {
                backend: BACKEND,
                source: Box::new(e),
            }
        } else {
            CatalogError::Backend {
                backend: BACKEND,
                op,
                source: Box::new(e),
            }
        }
    }
}

impl SqliteCatalog {
    /// Opens (creating if needed) the catalog at `path`, sets WAL and `synchronous=FULL`, and
    /// migrates it to [`SCHEMA_VERSION`]. Refuses a file with a newer schema.
    pub fn open(path: &Path) -> Result<SqliteCatalog, CatalogError> {
        let conn = Connection::open(path).map_err(backend_err("open the catalog file"))?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(backend_err("set the busy timeout"))?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0))
            .map_err(backend_err("enable WAL"))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(CatalogError::Backend {
                backend: BACKEND,
                op: "enable WAL",
                source: format!("journal mode stayed {mode:?}").into(),
            });
        }
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(backend_err("set synchronous=FULL"))?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(backend_err("enable foreign keys"))?;
        let mut catalog = SqliteCatalog {
            conn,
            path: path.to_path_buf(),
        };
        catalog.migrate()?;
        Ok(catalog)
    }

    /// Inserts every row in one transaction (a rebuilt catalog; names must be unique).
    pub fn insert_all(&mut self, rows: &[ObjectMeta]) -> Result<(), CatalogError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend_err("begin a bulk insert"))?;
        for r in rows {
            insert_row(&tx, r).map_err(backend_err("insert an object row"))?;
        }
        tx.commit().map_err(backend_err("commit a bulk insert"))?;
        Ok(())
    }

    fn user_version(&self) -> Result<u32, CatalogError> {
        let v: i64 = self
            .conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(backend_err("read the schema version"))?;
        u32::try_from(v).map_err(|_| CatalogError::InvalidRow {
            location: self.path.display().to_string(),
            what: format!("user_version {v} is negative"),
        })
    }

    fn migrate(&mut self) -> Result<(), CatalogError> {
        let found = self.user_version()?;
        if found > SCHEMA_VERSION {
            return Err(CatalogError::SchemaTooNew {
                location: self.path.display().to_string(),
                found,
                known: SCHEMA_VERSION,
            });
        }
        for (from, sql) in MIGRATIONS.iter().enumerate().skip(found as usize) {
            let to = from as u32 + 1;
            let tx = self
                .conn
                .transaction_with_behavior(TransactionBehavior::Immediate)
                .map_err(backend_err("begin a migration"))?;
            tx.execute_batch(sql)
                .map_err(backend_err("apply a schema migration"))?;
            tx.pragma_update(None, "user_version", to)
                .map_err(backend_err("record the schema version"))?;
            tx.commit()
                .map_err(backend_err("commit a schema migration"))?;
            tracing::info!(target: "oasis::storage", path = %self.path.display(), from, to, "catalog schema migrated");
        }
        Ok(())
    }

    fn row_to_meta(
        location: &Path,
        row: &rusqlite::Row<'_>,
    ) -> rusqlite::Result<Result<ObjectMeta, CatalogError>> {
        let row = ObjectRow {
            id: row.get(0)?,
            name: row.get(1)?,
            size_bytes: row.get(2)?,
            content_type: row.get(3)?,
            crc32c: row.get(4)?,
            created_unix_ms: row.get(5)?,
            bitrate_bps: row.get(6)?,
            bitrate_source: row.get(7)?,
            duration_ms: row.get(8)?,
        };
        Ok(row.into_meta(&location.display().to_string()))
    }

    fn get_by_name(
        tx: &rusqlite::Transaction<'_>,
        location: &Path,
        name: &str,
    ) -> Result<Option<ObjectMeta>, CatalogError> {
        let row = tx
            .query_row(
                &format!("SELECT {OBJECT_COLUMNS} FROM objects WHERE name = ?1"),
                params![name],
                |r| Self::row_to_meta(location, r),
            )
            .optional()
            .map_err(backend_err("read an object row"))?;
        row.transpose()
    }
}

impl Catalog for SqliteCatalog {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn schema_version(&mut self) -> Result<u32, CatalogError> {
        self.user_version()
    }

    fn load_all(&mut self) -> Result<Vec<ObjectMeta>, CatalogError> {
        let mut stmt = self
            .conn
            .prepare(&format!("SELECT {OBJECT_COLUMNS} FROM objects"))
            .map_err(backend_err("prepare the object scan"))?;
        let rows = stmt
            .query_map([], |r| Self::row_to_meta(&self.path, r))
            .map_err(backend_err("scan the objects"))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(row.map_err(backend_err("read an object row"))??);
        }
        Ok(out)
    }

    fn reserve_ids(&mut self, n: u64) -> Result<std::ops::Range<u64>, CatalogError> {
        assert!(n > 0, "reserving no ids");
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend_err("begin an id reservation"))?;
        let start: i64 = tx
            .query_row(
                "UPDATE counters SET value = value + ?1 WHERE name = 'next_object_id' RETURNING value - ?1",
                params![to_sql_u64(n)],
                |r| r.get(0),
            )
            .map_err(backend_err("reserve object ids"))?;
        tx.commit()
            .map_err(backend_err("commit an id reservation"))?;
        assert!(start > 0, "object id counter went non-positive");
        let start = start as u64;
        Ok(start..start + n)
    }

    fn peek_next_id(&mut self) -> Result<u64, CatalogError> {
        let id: i64 = self
            .conn
            .query_row(
                "SELECT value FROM counters WHERE name = 'next_object_id'",
                [],
                |r| r.get(0),
            )
            .map_err(backend_err("read the id counter"))?;
        u64::try_from(id).map_err(|_| CatalogError::InvalidRow {
            location: self.path.display().to_string(),
            what: format!("next_object_id {id} is negative"),
        })
    }

    fn advance_ids_to(&mut self, id: u64) -> Result<(), CatalogError> {
        self.conn
            .execute(
                "UPDATE counters SET value = max(value, ?1) WHERE name = 'next_object_id'",
                params![to_sql_u64(id)],
            )
            .map_err(backend_err("advance the id counter"))?;
        Ok(())
    }

    fn insert_or_replace(
        &mut self,
        record: &ObjectMeta,
    ) -> Result<Option<ObjectMeta>, CatalogError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend_err("begin an object commit"))?;
        let replaced = Self::get_by_name(&tx, &self.path, &record.name)?;
        if let Some(old) = &replaced {
            assert_ne!(old.id, record.id, "a version replacing itself");
            tx.execute(
                "DELETE FROM objects WHERE id = ?1",
                params![to_sql_u64(old.id)],
            )
            .map_err(backend_err("remove the replaced row"))?;
        }
        insert_row(&tx, record).map_err(backend_err("insert an object row"))?;
        tx.commit().map_err(backend_err("commit an object row"))?;
        Ok(replaced)
    }

    fn remove(&mut self, name: &str) -> Result<Option<ObjectMeta>, CatalogError> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend_err("begin an object removal"))?;
        let removed = Self::get_by_name(&tx, &self.path, name)?;
        if let Some(old) = &removed {
            tx.execute(
                "DELETE FROM objects WHERE id = ?1",
                params![to_sql_u64(old.id)],
            )
            .map_err(backend_err("remove an object row"))?;
        }
        tx.commit()
            .map_err(backend_err("commit an object removal"))?;
        Ok(removed)
    }

    fn remove_id(&mut self, id: u64) -> Result<bool, CatalogError> {
        let n = self
            .conn
            .execute("DELETE FROM objects WHERE id = ?1", params![to_sql_u64(id)])
            .map_err(backend_err("remove an object row"))?;
        Ok(n > 0)
    }

    fn update_bitrates(&mut self, updates: &[BitrateUpdate]) -> Result<(), CatalogError> {
        if updates.is_empty() {
            return Ok(());
        }
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend_err("begin a bitrate update"))?;
        {
            let mut stmt = tx
                .prepare("UPDATE objects SET bitrate_bps = ?2, bitrate_source = ?3 WHERE id = ?1")
                .map_err(backend_err("prepare a bitrate update"))?;
            for u in updates {
                stmt.execute(params![
                    to_sql_u64(u.id),
                    to_sql_u64(u.bitrate_bps.min(i64::MAX as u64)),
                    u.bitrate_source.as_str()
                ])
                .map_err(backend_err("update a bitrate"))?;
            }
        }
        tx.commit()
            .map_err(backend_err("commit a bitrate update"))?;
        Ok(())
    }

    fn load_users(&mut self) -> Result<Vec<UserRecord>, CatalogError> {
        accounts::load_users(&self.conn, &self.path)
    }

    fn put_user(&mut self, user: &UserRecord) -> Result<Option<UserRecord>, CatalogError> {
        accounts::put_user(&mut self.conn, &self.path, user)
    }

    fn remove_user(&mut self, name: &str) -> Result<Option<UserRecord>, CatalogError> {
        accounts::remove_user(&mut self.conn, &self.path, name)
    }

    fn append_audit(&mut self, records: &[AuditRecord]) -> Result<u64, CatalogError> {
        accounts::append_audit(&mut self.conn, records)
    }

    fn query_audit(&mut self, query: &AuditQuery) -> Result<Vec<AuditRecord>, CatalogError> {
        accounts::query_audit(&self.conn, &self.path, query)
    }

    fn prune_audit(&mut self, before_unix_ms: u64) -> Result<u64, CatalogError> {
        accounts::prune_audit(&self.conn, before_unix_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bitrate::BitrateSource;
    use crate::catalog::fixtures::meta;

    /// A catalog file written by the first schema (before playlists had a source of their own
    /// and durations were kept) opens, migrates, keeps its rows and takes the new values.
    #[test]
    fn a_version_1_catalog_migrates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.pragma_update(None, "user_version", 1).unwrap();
            conn.execute(
                "INSERT INTO objects (id, name, size_bytes, content_type, crc32c, created_unix_ms, bitrate_bps, bitrate_source)
                 VALUES (7, 'show/index.m3u8', 99, 'application/vnd.apple.mpegurl', 5, 1000, 5000000, 'default')",
                [],
            )
            .unwrap();
            conn.execute("UPDATE counters SET value = 8", []).unwrap();
        }
        let mut c = SqliteCatalog::open(&path).unwrap();
        assert_eq!(c.schema_version().unwrap(), SCHEMA_VERSION);
        let all = c.load_all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(
            (all[0].id, all[0].name.as_str(), all[0].duration_ms),
            (7, "show/index.m3u8", None)
        );
        assert_eq!(c.next_id().unwrap(), 8, "the id counter survives");
        let mut m = meta(9, "movie.mp4");
        m.bitrate_source = BitrateSource::Playlist;
        m.duration_ms = Some(12_000);
        c.insert_or_replace(&m).unwrap();
        let back = c
            .load_all()
            .unwrap()
            .into_iter()
            .find(|o| o.id == 9)
            .unwrap();
        assert_eq!(back, m);
    }

    /// A catalog file of schema version 2 (before users and the audit trail) opens, migrates,
    /// keeps its objects and id counter, and then keeps users and audit records like a new one.
    #[test]
    fn a_version_2_catalog_migrates_and_keeps_its_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let mut m = meta(7, "show/seg1.ts");
        m.duration_ms = Some(4_000);
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(MIGRATIONS[0]).unwrap();
            conn.execute_batch(MIGRATIONS[1]).unwrap();
            conn.pragma_update(None, "user_version", 2).unwrap();
            insert_row(&conn, &m).unwrap();
            conn.execute("UPDATE counters SET value = 300", []).unwrap();
        }
        let mut c = SqliteCatalog::open(&path).unwrap();
        assert_eq!(c.schema_version().unwrap(), SCHEMA_VERSION);
        assert_eq!(SCHEMA_VERSION, 3);
        assert_eq!(c.load_all().unwrap(), vec![m]);
        assert_eq!(c.peek_next_id().unwrap(), 300, "the id counter survives");
        assert_eq!(c.load_users().unwrap(), vec![]);
        assert_eq!(
            c.query_audit(&AuditQuery {
                limit: 10,
                ..AuditQuery::default()
            })
            .unwrap(),
            vec![]
        );
        let user = UserRecord {
            name: "alice".into(),
            role: "admin".into(),
            prefixes: vec![],
            token_hash: [9; 32],
            old_token_hash: Some([8; 32]),
            created_unix_ms: 5,
            updated_unix_ms: 6,
        };
        c.put_user(&user).unwrap();
        let rec = AuditRecord {
            seq: 0,
            at_unix_ms: 7,
            user: "api_token".into(),
            client: "-".into(),
            action: "user_add".into(),
            object: "alice".into(),
            outcome: "ok".into(),
            detail: String::new(),
        };
        assert_eq!(c.append_audit(std::slice::from_ref(&rec)).unwrap(), 1);
        drop(c);
        let mut c = SqliteCatalog::open(&path).unwrap();
        assert_eq!(c.load_users().unwrap(), vec![user]);
        let back = c
            .query_audit(&AuditQuery {
                limit: 10,
                ..AuditQuery::default()
            })
            .unwrap();
        assert_eq!(back, vec![AuditRecord { seq: 1, ..rec }]);
    }

    #[test]
    fn refuses_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        drop(SqliteCatalog::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(conn);
        let err = SqliteCatalog::open(&path).unwrap_err();
        assert!(matches!(err, CatalogError::SchemaTooNew { .. }), "{err}");
        assert!(err.to_string().contains("newer Oasis"), "{err}");
    }
}
