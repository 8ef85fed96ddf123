//! The SQLite backend's `users` and `audit` tables (schema version 3): user accounts, the audit
//! trail, and carrying both over from an old catalog into a rebuilt one.
//!
//! Every row read is checked (a token hash is 32 bytes, prefixes are a JSON array of strings,
//! numbers are in range) and a row that fails gives [`CatalogError::InvalidRow`]. This module
//! keeps no state between calls, never holds a transaction across calls, and never judges a
//! record (roles and actions are opaque text).

use std::path::Path;

use rusqlite::types::Value;
use rusqlite::{params, params_from_iter, Connection, OpenFlags, OptionalExtension};
use rusqlite::{Row, Transaction, TransactionBehavior};

use super::{backend_err, SqliteCatalog};
use crate::catalog::rows::{audit_record, prefixes_json, to_i64 as to_sql, UserRow};
use crate::catalog::{
    audit_text, AuditQuery, AuditRecord, CatalogError, UserRecord, AUDIT_QUERY_LIMIT_MAX,
};

/// The columns of a user row, in the order [`row_to_user`] reads them.
const USER_COLUMNS: &str =
    "name, role, prefixes, token_hash, old_token_hash, created_unix_ms, updated_unix_ms";

/// The columns of an audit row, in the order [`row_to_audit`] reads them.
const AUDIT_COLUMNS: &str = "seq, at_unix_ms, user, client, action, object, outcome, detail";

/// The first schema version with the `users` and `audit` tables.
const ACCOUNTS_SCHEMA_VERSION: u32 = 3;

/// Reads one user row; the outer error is SQLite's, the inner one a broken invariant.
fn row_to_user(
    location: &Path,
    row: &Row<'_>,
) -> rusqlite::Result<Result<UserRecord, CatalogError>> {
    let row = UserRow {
        name: row.get(0)?,
        role: row.get(1)?,
        prefixes: row.get(2)?,
        token_hash: row.get(3)?,
        old_token_hash: row.get(4)?,
        created_unix_ms: row.get(5)?,
        updated_unix_ms: row.get(6)?,
    };
    Ok(row.into_user(&location.display().to_string()))
}

/// Reads one audit row; the outer error is SQLite's, the inner one a broken invariant.
fn row_to_audit(
    location: &Path,
    row: &Row<'_>,
) -> rusqlite::Result<Result<AuditRecord, CatalogError>> {
    let text = [
        row.get(2)?,
        row.get(3)?,
        row.get(4)?,
        row.get(5)?,
        row.get(6)?,
        row.get(7)?,
    ];
    Ok(audit_record(
        &location.display().to_string(),
        (row.get(0)?, row.get(1)?),
        text,
    ))
}

/// Runs `sql` with `args` and reads every row it returns with `read`.
fn collect<T>(
    conn: &Connection,
    location: &Path,
    sql: &str,
    args: impl rusqlite::Params,
    read: fn(&Path, &Row<'_>) -> rusqlite::Result<Result<T, CatalogError>>,
    op: &'static str,
) -> Result<Vec<T>, CatalogError> {
    let mut stmt = conn.prepare_cached(sql).map_err(backend_err(op))?;
    let rows = stmt
        .query_map(args, |r| read(location, r))
        .map_err(backend_err(op))?;
    let mut out = Vec::new();
    for row in rows {
        out.push(row.map_err(backend_err(op))??);
    }
    Ok(out)
}

fn get_user(
    tx: &Transaction<'_>,
    location: &Path,
    name: &str,
) -> Result<Option<UserRecord>, CatalogError> {
    tx.query_row(
        &format!("SELECT {USER_COLUMNS} FROM users WHERE name = ?1"),
        params![name],
        |r| row_to_user(location, r),
    )
    .optional()
    .map_err(backend_err("read a user row"))?
    .transpose()
}

/// Inserts or replaces one user row (within the caller's transaction).
fn write_user(conn: &Connection, u: &UserRecord) -> rusqlite::Result<usize> {
    let prefixes = prefixes_json(u);
    conn.prepare_cached(&format!(
        "INSERT OR REPLACE INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
    ))?
    .execute(params![
        u.name,
        u.role,
        prefixes,
        &u.token_hash[..],
        u.old_token_hash.as_ref().map(|h| &h[..]),
        to_sql(u.created_unix_ms),
        to_sql(u.updated_unix_ms),
    ])
}

/// Appends one audit row (within the caller's transaction); `seq` 0 lets SQLite assign it.
fn write_audit(conn: &Connection, seq: u64, r: &AuditRecord) -> rusqlite::Result<i64> {
    let seq = (seq > 0).then(|| to_sql(seq));
    conn.prepare_cached(&format!(
        "INSERT INTO audit ({AUDIT_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8) RETURNING seq"
    ))?
    .query_row(
        params![
            seq,
            to_sql(r.at_unix_ms),
            audit_text(&r.user),
            audit_text(&r.client),
            audit_text(&r.action),
            audit_text(&r.object),
            audit_text(&r.outcome),
            audit_text(&r.detail),
        ],
        |row| row.get(0),
    )
}

pub(super) fn load_users(
    conn: &Connection,
    location: &Path,
) -> Result<Vec<UserRecord>, CatalogError> {
    collect(
        conn,
        location,
        &format!("SELECT {USER_COLUMNS} FROM users ORDER BY name"),
        [],
        row_to_user,
        "read the users",
    )
}

pub(super) fn put_user(
    conn: &mut Connection,
    location: &Path,
    user: &UserRecord,
) -> Result<Option<UserRecord>, CatalogError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend_err("begin a user change"))?;
    let replaced = get_user(&tx, location, &user.name)?;
    write_user(&tx, user).map_err(backend_err("write a user row"))?;
    tx.commit().map_err(backend_err("commit a user change"))?;
    Ok(replaced)
}

pub(super) fn remove_user(
    conn: &mut Connection,
    location: &Path,
    name: &str,
) -> Result<Option<UserRecord>, CatalogError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend_err("begin a user removal"))?;
    let removed = get_user(&tx, location, name)?;
    if removed.is_some() {
        tx.execute("DELETE FROM users WHERE name = ?1", params![name])
            .map_err(backend_err("remove a user row"))?;
    }
    tx.commit().map_err(backend_err("commit a user removal"))?;
    Ok(removed)
}

pub(super) fn append_audit(
    conn: &mut Connection,
    records: &[AuditRecord],
) -> Result<u64, CatalogError> {
    let Some((head, rest)) = records.split_first() else {
        return Ok(0);
    };
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend_err("begin an audit append"))?;
    let first = write_audit(&tx, 0, head).map_err(backend_err("append an audit record"))?;
    let mut last = first;
    for r in rest {
        last = write_audit(&tx, 0, r).map_err(backend_err("append an audit record"))?;
    }
    tx.commit().map_err(backend_err("commit an audit append"))?;
    // One writer inside one transaction: AUTOINCREMENT hands out consecutive seqs.
    assert_eq!(
        last - first,
        rest.len() as i64,
        "audit seqs of one append are not consecutive"
    );
    assert!(first > 0, "audit seq went non-positive");
    Ok(first as u64)
}

pub(super) fn query_audit(
    conn: &Connection,
    location: &Path,
    query: &AuditQuery,
) -> Result<Vec<AuditRecord>, CatalogError> {
    let limit = query.limit.min(AUDIT_QUERY_LIMIT_MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    // Only the filters given appear in the statement, so the planner can use (user, seq) or
    // (action, seq) and stop after `limit` rows.
    let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > ?1");
    let mut args = vec![Value::Integer(to_sql(query.after_seq.unwrap_or(0)))];
    let mut filter = |column: &str, op: &str, value: Value| {
        args.push(value);
        sql.push_str(&format!(" AND {column} {op} ?{}", args.len()));
    };
    if let Some(since) = query.since_unix_ms {
        filter("at_unix_ms", ">=", Value::Integer(to_sql(since)));
    }
    if let Some(user) = &query.user {
        filter("user", "=", Value::Text(user.clone()));
    }
    if let Some(action) = &query.action {
        filter("action", "=", Value::Text(action.clone()));
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT {limit}"));
    collect(
        conn,
        location,
        &sql,
        params_from_iter(args),
        row_to_audit,
        "query the audit trail",
    )
}

pub(super) fn prune_audit(conn: &Connection, before_unix_ms: u64) -> Result<u64, CatalogError> {
    let n = conn
        .execute(
            "DELETE FROM audit WHERE at_unix_ms < ?1",
            params![to_sql(before_unix_ms)],
        )
        .map_err(backend_err("prune the audit trail"))?;
    Ok(n as u64)
}

/// What [`SqliteCatalog::keep_accounts_from`] carried from an old catalog into a new one.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountsKept {
    /// User accounts carried over.
    pub users: u64,
    /// Audit records carried over (with their seqs).
    pub audit_records: u64,
    /// What could not be carried over, and why. Empty when everything was (or the old catalog
    /// predates users and the audit trail). When it names the users, they must be added again.
    pub lost: Vec<String>,
}

impl SqliteCatalog {
    /// Copies the users and the audit trail of the catalog file `old` (opened read-only, never
    /// changed) into this one, which must hold none yet: a rebuilt catalog keeps its accounts.
    /// The users go in one transaction and the audit trail in another, so a damaged old file may
    /// give one and not the other; what was not carried is named in [`AccountsKept::lost`].
    pub fn keep_accounts_from(&mut self, old: &Path) -> AccountsKept {
        let mut kept = AccountsKept::default();
        let source = match open_old(old) {
            Ok(Some(source)) => source,
            Ok(None) => return kept,
            Err(e) => {
                kept.lost.push(format!(
                    "the user accounts and the audit trail ({} cannot be read: {e})",
                    old.display()
                ));
                return kept;
            }
        };
        match copy_users(&source, old, &mut self.conn) {
            Ok(n) => kept.users = n,
            Err(e) => kept.lost.push(format!("the user accounts ({e})")),
        }
        match copy_audit(&source, old, &mut self.conn) {
            Ok(n) => kept.audit_records = n,
            Err(e) => kept.lost.push(format!("the audit trail ({e})")),
        }
        kept
    }
}

/// The old catalog opened read-only, or `None` when its schema predates users and audit.
fn open_old(old: &Path) -> Result<Option<Connection>, CatalogError> {
    let conn = Connection::open_with_flags(
        old,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(backend_err("open the old catalog"))?;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(backend_err("read the old catalog's schema version"))?;
    Ok((version >= i64::from(ACCOUNTS_SCHEMA_VERSION)).then_some(conn))
}

/// Copies the old catalog's users into `to`, in one transaction.
fn copy_users(source: &Connection, old: &Path, to: &mut Connection) -> Result<u64, CatalogError> {
    let select = format!("SELECT {USER_COLUMNS} FROM users");
    copy_rows(
        (source, old, to),
        &select,
        row_to_user,
        |tx, u| write_user(tx, u).map(drop),
        |_| Ok(()),
    )
}

/// Copies the audit rows with their seqs, and the largest seq ever handed out, so the rebuilt
/// catalog never reuses one; in one transaction.
fn copy_audit(source: &Connection, old: &Path, to: &mut Connection) -> Result<u64, CatalogError> {
    let select = format!("SELECT {AUDIT_COLUMNS} FROM audit ORDER BY seq");
    let high: Option<i64> = source
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'audit'",
            [],
            |r| r.get(0),
        )
        .optional()
        .map_err(backend_err("read the old audit sequence"))?;
    copy_rows(
        (source, old, to),
        &select,
        row_to_audit,
        |tx, r| write_audit(tx, r.seq, r).map(drop),
        |tx| {
            let Some(high) = high else { return Ok(()) };
            for sql in [
                "UPDATE sqlite_sequence SET seq = max(seq, ?1) WHERE name = 'audit'",
                "INSERT INTO sqlite_sequence (name, seq) SELECT 'audit', ?1
                     WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = 'audit')",
            ] {
                tx.execute(sql, params![high])
                    .map_err(backend_err("carry the audit sequence"))?;
            }
            Ok(())
        },
    )
}

/// Reads every row `select` gives in the old catalog (`source`, at `old`), checks it with `read`
/// and writes it into `to` with `write`, all in one transaction of `to`, which `finish` ends.
fn copy_rows<T>(
    (source, old, to): (&Connection, &Path, &mut Connection),
    select: &str,
    read: fn(&Path, &Row<'_>) -> rusqlite::Result<Result<T, CatalogError>>,
    write: impl Fn(&Connection, &T) -> rusqlite::Result<()>,
    finish: impl FnOnce(&Transaction<'_>) -> Result<(), CatalogError>,
) -> Result<u64, CatalogError> {
    let tx = to
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(backend_err("begin copying from the old catalog"))?;
    let mut stmt = source
        .prepare(select)
        .map_err(backend_err("read the old catalog"))?;
    let rows = stmt
        .query_map([], |r| read(old, r))
        .map_err(backend_err("read the old catalog"))?;
    let mut n = 0;
    for row in rows {
        let row = row.map_err(backend_err("read a row of the old catalog"))??;
        write(&tx, &row).map_err(backend_err("write a copied row"))?;
        n += 1;
    }
    finish(&tx)?;
    tx.commit()
        .map_err(backend_err("commit the rows copied from the old catalog"))?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalog::fixtures::{audit, query, user};
    use crate::catalog::Catalog;

    #[test]
    fn a_user_row_breaking_an_invariant_is_reported_not_loaded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.sqlite");
        let mut c = SqliteCatalog::open(&path).unwrap();
        c.put_user(&user("alice", 2)).unwrap();
        // Written by hand past the CHECK constraints: a 31-byte hash.
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "ignore_check_constraints", true)
            .unwrap();
        conn.execute(
            "UPDATE users SET token_hash = zeroblob(31) WHERE name = 'alice'",
            [],
        )
        .unwrap();
        let err = c.load_users().unwrap_err();
        assert!(matches!(err, CatalogError::InvalidRow { .. }), "{err}");
        assert!(err.to_string().contains("31 bytes, not 32"), "{err}");
        // Nor can it be replaced or removed unseen: both read the row first and change nothing.
        assert!(c.remove_user("alice").is_err());
        conn.execute(
            "UPDATE users SET token_hash = zeroblob(32), prefixes = '{\"a\": 1}'",
            [],
        )
        .unwrap();
        let err = c.load_users().unwrap_err();
        assert!(err.to_string().contains("JSON array"), "{err}");
        // The CHECK constraints refuse such a row from any ordinary writer.
        conn.pragma_update(None, "ignore_check_constraints", false)
            .unwrap();
        assert!(conn
            .execute("UPDATE users SET old_token_hash = zeroblob(8)", [])
            .is_err());
    }

    #[test]
    fn a_rebuilt_catalog_keeps_the_accounts_of_a_readable_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let old_path = dir.path().join("old.sqlite");
        let mut old = SqliteCatalog::open(&old_path).unwrap();
        old.put_user(&user("alice", 2)).unwrap();
        old.append_audit(&[
            audit(10, "a", "x"),
            audit(20, "a", "y"),
            audit(30, "a", "z"),
        ])
        .unwrap();
        // The newest record pruned: its seq must still not come back.
        old.conn
            .execute("DELETE FROM audit WHERE seq = 3", [])
            .unwrap();
        let old_trail = old.query_audit(&query(10)).unwrap();
        drop(old);

        let mut new = SqliteCatalog::open(&dir.path().join("new.sqlite")).unwrap();
        let kept = new.keep_accounts_from(&old_path);
        assert_eq!(
            kept,
            AccountsKept {
                users: 1,
                audit_records: 2,
                lost: vec![]
            }
        );
        assert_eq!(new.load_users().unwrap(), vec![user("alice", 2)]);
        assert_eq!(new.query_audit(&query(10)).unwrap(), old_trail);
        assert_eq!(new.append_audit(&[audit(40, "a", "x")]).unwrap(), 4);
        assert!(
            old_path.exists() && SqliteCatalog::open(&old_path).is_ok(),
            "the old file is left as it was"
        );
    }

    /// After a crash the old catalog's last commits may be only in its `-wal`: moved aside with
    /// the main file, it is read too (without the `-shm`, which a crash may not leave).
    #[test]
    fn accounts_still_in_the_write_ahead_log_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("live.sqlite");
        let mut c = SqliteCatalog::open(&live).unwrap();
        c.put_user(&user("alice", 2)).unwrap();
        c.append_audit(&[audit(10, "a", "x")]).unwrap();
        // Copied while open: the commits are in the -wal, not yet in the main file.
        let aside = dir.path().join("aside.sqlite");
        std::fs::copy(&live, &aside).unwrap();
        std::fs::copy(
            dir.path().join("live.sqlite-wal"),
            dir.path().join("aside.sqlite-wal"),
        )
        .unwrap();
        let mut new = SqliteCatalog::open(&dir.path().join("new.sqlite")).unwrap();
        let kept = new.keep_accounts_from(&aside);
        assert_eq!((kept.users, kept.audit_records), (1, 1), "{kept:?}");
        assert!(kept.lost.is_empty(), "{kept:?}");
        drop(c);
    }

    #[test]
    fn keeping_accounts_from_an_older_schema_or_a_damaged_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut new = SqliteCatalog::open(&dir.path().join("new.sqlite")).unwrap();
        // A version 2 catalog never held accounts: nothing to keep, nothing lost.
        let v2 = dir.path().join("v2.sqlite");
        let conn = Connection::open(&v2).unwrap();
        conn.execute_batch(super::super::MIGRATIONS[0]).unwrap();
        conn.execute_batch(super::super::MIGRATIONS[1]).unwrap();
        conn.pragma_update(None, "user_version", 2).unwrap();
        drop(conn);
        assert_eq!(new.keep_accounts_from(&v2), AccountsKept::default());
        // Not a database at all: both are named as lost.
        let junk = dir.path().join("junk.sqlite");
        std::fs::write(&junk, vec![0x5a; 8192]).unwrap();
        let kept = new.keep_accounts_from(&junk);
        assert_eq!((kept.users, kept.audit_records), (0, 0));
        assert_eq!(kept.lost.len(), 1, "{kept:?}");
        assert!(kept.lost[0].contains("user accounts"), "{kept:?}");
        assert_eq!(new.load_users().unwrap(), vec![]);
    }
}
