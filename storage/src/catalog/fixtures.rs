//! Sample records for tests of catalog backends (this crate's and the integration tests'), so
//! every backend is checked with the same rows. Not part of the API: hidden, stable only for tests.

use super::{AuditQuery, AuditRecord, ObjectMeta, UserRecord};
use crate::bitrate::BitrateSource;

/// An object version named `name` with id `id` and fixed other fields.
pub fn meta(id: u64, name: &str) -> ObjectMeta {
    ObjectMeta {
        id,
        name: name.into(),
        size_bytes: 10,
        content_type: "video/mp2t".into(),
        crc32c: 0xdead_beef,
        created_unix_ms: 1,
        bitrate_bps: 8,
        bitrate_source: BitrateSource::Default,
        duration_ms: None,
    }
}

/// A provider named `name` whose token hash is 32 bytes of `hash_byte`; its prefixes hold
/// quotes and a line break, which every backend must keep.
pub fn user(name: &str, hash_byte: u8) -> UserRecord {
    UserRecord {
        name: name.into(),
        role: "provider".into(),
        prefixes: vec!["shows/".into(), "with \"quotes\"\nand a line break/".into()],
        token_hash: [hash_byte; 32],
        old_token_hash: None,
        created_unix_ms: 1_000,
        updated_unix_ms: 2_000,
    }
}

/// An audit record of `user` doing `action` at `at_unix_ms` (seq 0: not stored yet).
pub fn audit(at_unix_ms: u64, user: &str, action: &str) -> AuditRecord {
    AuditRecord {
        seq: 0,
        at_unix_ms,
        user: user.into(),
        client: "127.0.0.1:5000".into(),
        action: action.into(),
        object: "show/seg1.ts".into(),
        outcome: "ok".into(),
        detail: "201".into(),
    }
}

/// The seqs of `records`, in order.
pub fn seqs(records: &[AuditRecord]) -> Vec<u64> {
    records.iter().map(|r| r.seq).collect()
}

/// A query with no filter, at most `limit` records.
pub fn query(limit: usize) -> AuditQuery {
    AuditQuery {
        limit,
        ..AuditQuery::default()
    }
}
