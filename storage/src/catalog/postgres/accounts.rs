//! The PostgreSQL backend's `users` and `audit` tables: the pool's user accounts and its one
//! audit trail (each record also keeps the node that wrote it).
//!
//! Audit seqs come from the `next_audit_seq` counter row, taken in the transaction that inserts
//! the records, so one append gets consecutive seqs and a pruned seq is never handed out again.
//! Rows are checked on the way out exactly as the SQLite backend checks them (`rows`). Keeps no
//! state between calls; never judges a record.

use postgres::types::ToSql;
use postgres::Row;

use super::conn::TxError;
use super::{take_from_counter, PgCatalog};
use crate::catalog::rows::{audit_record, prefixes_json, to_i64, UserRow};
use crate::catalog::{
    audit_text, AuditQuery, AuditRecord, CatalogError, UserRecord, AUDIT_QUERY_LIMIT_MAX,
};

/// The columns of a user row, in the order [`read_user`] reads them.
const USER_COLUMNS: &str =
    "name, role, prefixes, token_hash, old_token_hash, created_unix_ms, updated_unix_ms";

/// The columns of an audit row, in the order [`read_audit`] reads them.
const AUDIT_COLUMNS: &str = "seq, at_unix_ms, user_name, client, action, object, outcome, detail";

/// Most user accounts [`load_users`] returns (the statement's limit).
const USERS_MAX: i64 = 100_000;

fn read_user(location: &str, row: &Row) -> Result<UserRecord, TxError> {
    let row = UserRow {
        name: row.try_get(0)?,
        role: row.try_get(1)?,
        prefixes: row.try_get(2)?,
        token_hash: row.try_get(3)?,
        old_token_hash: row.try_get(4)?,
        created_unix_ms: row.try_get(5)?,
        updated_unix_ms: row.try_get(6)?,
    };
    Ok(row.into_user(location)?)
}

fn read_audit(location: &str, row: &Row) -> Result<AuditRecord, TxError> {
    let text = [
        row.try_get(2)?,
        row.try_get(3)?,
        row.try_get(4)?,
        row.try_get(5)?,
        row.try_get(6)?,
        row.try_get(7)?,
    ];
    Ok(audit_record(
        location,
        (row.try_get(0)?, row.try_get(1)?),
        text,
    )?)
}

pub(super) fn load_users(c: &mut PgCatalog) -> Result<Vec<UserRecord>, CatalogError> {
    c.collect(
        "read the users",
        &format!("SELECT {USER_COLUMNS} FROM users ORDER BY name LIMIT $1"),
        &[&USERS_MAX],
        read_user,
    )
}

pub(super) fn put_user(
    c: &mut PgCatalog,
    user: &UserRecord,
) -> Result<Option<UserRecord>, CatalogError> {
    let location = c.location.clone();
    c.conn.transaction("change a user", |tx| {
        let replaced = tx
            .query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1 FOR UPDATE"),
                &[&user.name],
            )?
            .map(|row| read_user(&location, &row))
            .transpose()?;
        tx.execute(
            &format!(
                "INSERT INTO users ({USER_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (name) DO UPDATE SET role = EXCLUDED.role, \
                 prefixes = EXCLUDED.prefixes, token_hash = EXCLUDED.token_hash, \
                 old_token_hash = EXCLUDED.old_token_hash, \
                 created_unix_ms = EXCLUDED.created_unix_ms, \
                 updated_unix_ms = EXCLUDED.updated_unix_ms"
            ),
            &[
                &user.name,
                &user.role,
                &prefixes_json(user),
                &&user.token_hash[..],
                &user.old_token_hash.as_ref().map(|h| &h[..]),
                &to_i64(user.created_unix_ms),
                &to_i64(user.updated_unix_ms),
            ],
        )?;
        Ok(replaced)
    })
}

pub(super) fn remove_user(
    c: &mut PgCatalog,
    name: &str,
) -> Result<Option<UserRecord>, CatalogError> {
    let location = c.location.clone();
    c.conn.transaction("remove a user", |tx| {
        // Read first, so a row that breaks an invariant is reported and nothing is removed.
        let removed = tx
            .query_opt(
                &format!("SELECT {USER_COLUMNS} FROM users WHERE name = $1 FOR UPDATE"),
                &[&name],
            )?
            .map(|row| read_user(&location, &row))
            .transpose()?;
        if removed.is_some() {
            tx.execute("DELETE FROM users WHERE name = $1", &[&name])?;
        }
        Ok(removed)
    })
}

pub(super) fn append_audit(
    c: &mut PgCatalog,
    records: &[AuditRecord],
) -> Result<u64, CatalogError> {
    if records.is_empty() {
        return Ok(0);
    }
    let (location, node) = (c.location.clone(), c.node_id.clone());
    c.conn.transaction("append audit records", |tx| {
        let first = take_from_counter(tx, &location, "next_audit_seq", records.len() as u64)?;
        let stmt = tx.prepare(&format!(
            "INSERT INTO audit (node_id, {AUDIT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)"
        ))?;
        for (i, r) in records.iter().enumerate() {
            tx.execute(
                &stmt,
                &[
                    &node,
                    &to_i64(first + i as u64),
                    &to_i64(r.at_unix_ms),
                    &audit_text(&r.user),
                    &audit_text(&r.client),
                    &audit_text(&r.action),
                    &audit_text(&r.object),
                    &audit_text(&r.outcome),
                    &audit_text(&r.detail),
                ],
            )?;
        }
        Ok(first)
    })
}

pub(super) fn query_audit(
    c: &mut PgCatalog,
    query: &AuditQuery,
) -> Result<Vec<AuditRecord>, CatalogError> {
    let limit = query.limit.min(AUDIT_QUERY_LIMIT_MAX);
    if limit == 0 {
        return Ok(Vec::new());
    }
    // Only the filters given appear in the statement, so the planner can use (user_name, seq)
    // or (action, seq) and stop after `limit` rows.
    let after = to_i64(query.after_seq.unwrap_or(0));
    let since = query.since_unix_ms.map(to_i64);
    let mut sql = format!("SELECT {AUDIT_COLUMNS} FROM audit WHERE seq > $1");
    let mut args: Vec<&(dyn ToSql + Sync)> = vec![&after];
    let filters: [(&str, &str, Option<&(dyn ToSql + Sync)>); 3] = [
        ("at_unix_ms", ">=", since.as_ref().map(|v| v as _)),
        ("user_name", "=", query.user.as_ref().map(|v| v as _)),
        ("action", "=", query.action.as_ref().map(|v| v as _)),
    ];
    for (column, op, value) in filters {
        if let Some(value) = value {
            args.push(value);
            sql.push_str(&format!(" AND {column} {op} ${}", args.len()));
        }
    }
    sql.push_str(&format!(" ORDER BY seq LIMIT {limit}"));
    c.collect("query the audit trail", &sql, &args, read_audit)
}

pub(super) fn prune_audit(c: &mut PgCatalog, before_unix_ms: u64) -> Result<u64, CatalogError> {
    c.conn.with("prune the audit trail", |client| {
        Ok(client.execute(
            "DELETE FROM audit WHERE at_unix_ms < $1",
            &[&to_i64(before_unix_ms)],
        )?)
    })
}
