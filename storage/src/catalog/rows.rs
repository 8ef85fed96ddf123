//! Rows as a SQL backend reads them (signed integers, JSON text, byte strings) and their checks
//! into the catalog's records, shared by every backend so they hold every row to the same rules.
//!
//! A row that breaks an invariant the schema cannot express (or that was written by hand past
//! it) becomes [`CatalogError::InvalidRow`] naming the row. Pure: no I/O, no SQL.

use super::{AuditRecord, CatalogError, ObjectMeta, UserRecord};
use crate::bitrate::BitrateSource;

/// A value for a signed 64-bit column; values past `i64::MAX` (no id, size or clock gets there)
/// are stored as `i64::MAX` rather than refused.
pub(crate) fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn invalid(location: &str, what: String) -> CatalogError {
    CatalogError::InvalidRow {
        location: location.to_string(),
        what,
    }
}

/// An object row's columns as stored.
pub(crate) struct ObjectRow {
    pub(crate) id: i64,
    pub(crate) name: String,
    pub(crate) size_bytes: i64,
    pub(crate) content_type: String,
    pub(crate) crc32c: i64,
    pub(crate) created_unix_ms: i64,
    pub(crate) bitrate_bps: i64,
    pub(crate) bitrate_source: String,
    pub(crate) duration_ms: Option<i64>,
}

impl ObjectRow {
    /// The record, or why the row is invalid; `location` names the catalog in the error.
    pub(crate) fn into_meta(self, location: &str) -> Result<ObjectMeta, CatalogError> {
        let id = self.id;
        let Some(bitrate_source) = BitrateSource::parse(&self.bitrate_source) else {
            return Err(invalid(
                location,
                format!(
                    "object id {id}: unknown bitrate_source {:?}",
                    self.bitrate_source
                ),
            ));
        };
        if let Err(why) = crate::name::validate_name(&self.name) {
            return Err(invalid(
                location,
                format!("object id {id}: name {:?} is invalid: {why}", self.name),
            ));
        }
        // The CHECK constraints guarantee the ranges below; a row that breaks them was written by hand.
        let (
            Ok(id),
            Ok(size_bytes),
            Ok(crc32c),
            Ok(created_unix_ms),
            Ok(bitrate_bps),
            Ok(duration_ms),
        ) = (
            u64::try_from(id),
            u64::try_from(self.size_bytes),
            u32::try_from(self.crc32c),
            u64::try_from(self.created_unix_ms),
            u64::try_from(self.bitrate_bps),
            self.duration_ms.map(u64::try_from).transpose(),
        )
        else {
            return Err(invalid(
                location,
                format!("object id {id}: a numeric column is out of range"),
            ));
        };
        Ok(ObjectMeta {
            id,
            name: self.name,
            size_bytes,
            content_type: self.content_type,
            crc32c,
            created_unix_ms,
            bitrate_bps,
            bitrate_source,
            duration_ms,
        })
    }
}

/// A user row's columns as stored (prefixes as a JSON array of strings).
pub(crate) struct UserRow {
    pub(crate) name: String,
    pub(crate) role: String,
    pub(crate) prefixes: String,
    pub(crate) token_hash: Vec<u8>,
    pub(crate) old_token_hash: Option<Vec<u8>>,
    pub(crate) created_unix_ms: i64,
    pub(crate) updated_unix_ms: i64,
}

impl UserRow {
    /// The record, or why the row is invalid; `location` names the catalog in the error.
    pub(crate) fn into_user(self, location: &str) -> Result<UserRecord, CatalogError> {
        let name = self.name;
        let bad = |what: &str| Err(invalid(location, format!("user {name:?}: {what}")));
        let Ok(prefixes) = serde_json::from_str::<Vec<String>>(&self.prefixes) else {
            return bad("prefixes are not a JSON array of strings");
        };
        let Ok(token_hash) = <[u8; 32]>::try_from(self.token_hash.as_slice()) else {
            return bad(&format!(
                "token_hash is {} bytes, not 32",
                self.token_hash.len()
            ));
        };
        let old_token_hash = match self.old_token_hash {
            None => None,
            Some(h) => match <[u8; 32]>::try_from(h.as_slice()) {
                Ok(h) => Some(h),
                Err(_) => return bad(&format!("old_token_hash is {} bytes, not 32", h.len())),
            },
        };
        let (Ok(created_unix_ms), Ok(updated_unix_ms)) = (
            u64::try_from(self.created_unix_ms),
            u64::try_from(self.updated_unix_ms),
        ) else {
            return bad("a time is negative");
        };
        Ok(UserRecord {
            name,
            role: self.role,
            prefixes,
            token_hash,
            old_token_hash,
            created_unix_ms,
            updated_unix_ms,
        })
    }
}

/// A user's prefixes as the JSON text a user row keeps.
pub(crate) fn prefixes_json(user: &UserRecord) -> String {
    serde_json::Value::from(user.prefixes.clone()).to_string()
}

/// An audit row's two numeric columns as stored, checked; the text columns need no check.
fn audit_numbers(location: &str, seq: i64, at_unix_ms: i64) -> Result<(u64, u64), CatalogError> {
    match (u64::try_from(seq), u64::try_from(at_unix_ms)) {
        (Ok(seq @ 1..), Ok(at_unix_ms)) => Ok((seq, at_unix_ms)),
        _ => Err(invalid(
            location,
            format!("audit seq {seq}: seq or at_unix_ms is out of range"),
        )),
    }
}

/// An audit record with its numbers checked and its text columns as read.
pub(crate) fn audit_record(
    location: &str,
    (seq, at_unix_ms): (i64, i64),
    [user, client, action, object, outcome, detail]: [String; 6],
) -> Result<AuditRecord, CatalogError> {
    let (seq, at_unix_ms) = audit_numbers(location, seq, at_unix_ms)?;
    Ok(AuditRecord {
        seq,
        at_unix_ms,
        user,
        client,
        action,
        object,
        outcome,
        detail,
    })
}
