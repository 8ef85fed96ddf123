//! The catalog test suite, run against both backends: the embedded SQLite file and a real
//! PostgreSQL server (a throw-away cluster, `support/pg.rs`). Every case takes a [`Backend`] that
//! opens (and reopens) one catalog, so each case checks the same contract of the `Catalog` trait
//! on both. Backend-specific cases (SQLite migrations and damaged rows; PostgreSQL nodes, pool
//! tables, crashes of the server) live beside their backends.

mod support;

use std::sync::Arc;

use oasis_storage::catalog_fixtures::{audit, meta, query, seqs, user};
use oasis_storage::{
    AuditQuery, AuditRecord, BitrateSource, BitrateUpdate, Catalog, CatalogError, PgCatalog,
    SqliteCatalog, AUDIT_QUERY_LIMIT_MAX, AUDIT_TEXT_BYTES_MAX, PG_SCHEMA_VERSION, SCHEMA_VERSION,
};
use support::pg;

/// Opens the one catalog a case works on; every call opens it again (a reopen).
trait Backend {
    fn open(&self) -> Box<dyn Catalog>;
    fn schema_version(&self) -> u32;
}

struct Sqlite(tempfile::TempDir);

impl Backend for Sqlite {
    fn open(&self) -> Box<dyn Catalog> {
        Box::new(SqliteCatalog::open(&self.0.path().join("c.sqlite")).unwrap())
    }
    fn schema_version(&self) -> u32 {
        SCHEMA_VERSION
    }
}

struct Postgres {
    _cluster: Arc<pg::Cluster>,
    url: String,
}

impl Backend for Postgres {
    fn open(&self) -> Box<dyn Catalog> {
        Box::new(PgCatalog::open(&self.url, "node-a").unwrap())
    }
    fn schema_version(&self) -> u32 {
        PG_SCHEMA_VERSION
    }
}

fn sqlite() -> Sqlite {
    Sqlite(tempfile::tempdir().unwrap())
}

fn postgres() -> Postgres {
    let cluster = pg::shared();
    let url = cluster.create_database();
    Postgres {
        _cluster: cluster,
        url,
    }
}

/// Each case as a test against SQLite and one against PostgreSQL.
macro_rules! suite {
    ($($case:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $case() { super::$case(&super::sqlite()) })*
        }
        mod postgres {
            $(#[test] fn $case() { super::$case(&super::postgres()) })*
        }
    };
}

suite!(
    insert_replace_remove_and_ids,
    reserved_blocks_never_overlap_across_reopen,
    a_used_id_is_refused_and_nothing_changes,
    users_are_put_replaced_removed_and_kept_across_reopen,
    audit_appends_get_consecutive_seqs_and_queries_filter_them,
    audit_pages_follow_after_seq_within_the_limit,
    audit_limit_is_capped_and_long_fields_are_cut,
    pruning_deletes_old_records_and_seqs_are_never_reused,
);

/// Inserting a version whose id is taken fails, and the row it would have replaced stays.
fn a_used_id_is_refused_and_nothing_changes(b: &dyn Backend) {
    let mut c = b.open();
    let ids = c.reserve_ids(2).unwrap();
    let mut x = meta(ids.start, "x");
    x.duration_ms = Some(4_000);
    x.bitrate_source = BitrateSource::Playlist;
    c.insert_or_replace(&x).unwrap();
    c.insert_or_replace(&meta(ids.start + 1, "y")).unwrap();
    let err = c.insert_or_replace(&meta(ids.start, "y")).unwrap_err();
    assert!(matches!(err, CatalogError::Backend { .. }), "{err}");
    drop(c);
    let mut c = b.open();
    let mut all = c.load_all().unwrap();
    all.sort_by_key(|m| m.id);
    assert_eq!(
        all,
        vec![x, meta(ids.start + 1, "y")],
        "every field round-trips"
    );
    assert!(c.remove_id(ids.start).unwrap());
    assert!(!c.remove_id(ids.start).unwrap());
    c.advance_ids_to(1_000).unwrap();
    assert_eq!(c.peek_next_id().unwrap(), 1_000);
    c.advance_ids_to(10).unwrap();
    assert_eq!(c.next_id().unwrap(), 1_000, "the counter never goes back");
}

fn insert_replace_remove_and_ids(backend: &dyn Backend) {
    let mut c = backend.open();
    assert_eq!(c.schema_version().unwrap(), backend.schema_version());
    let a = c.next_id().unwrap();
    let b = c.next_id().unwrap();
    assert!(b > a);
    assert_eq!(c.insert_or_replace(&meta(a, "x")).unwrap(), None);
    assert_eq!(
        c.insert_or_replace(&meta(b, "x")).unwrap(),
        Some(meta(a, "x"))
    );
    c.update_bitrates(&[BitrateUpdate {
        id: b,
        bitrate_bps: 99,
        bitrate_source: BitrateSource::HlsExtinf,
    }])
    .unwrap();
    drop(c);
    let mut c = backend.open();
    let all = c.load_all().unwrap();
    assert_eq!(all.len(), 1);
    assert_eq!(all[0].bitrate_bps, 99);
    assert!(
        c.next_id().unwrap() > b,
        "ids are never reused across reopen"
    );
    assert_eq!(c.remove("x").unwrap().map(|m| m.id), Some(b));
    assert_eq!(c.remove("x").unwrap(), None);
}

fn reserved_blocks_never_overlap_across_reopen(b: &dyn Backend) {
    let mut c = b.open();
    let a = c.reserve_ids(64).unwrap();
    assert_eq!(a, 1..65);
    assert_eq!(c.peek_next_id().unwrap(), 65);
    let one = c.next_id().unwrap();
    assert_eq!(one, 65);
    drop(c);
    // The block was never used: its ids stay taken after a restart all the same.
    let mut c = b.open();
    assert_eq!(c.reserve_ids(3).unwrap(), 66..69);
}

fn users_are_put_replaced_removed_and_kept_across_reopen(b: &dyn Backend) {
    let mut c = b.open();
    assert_eq!(c.load_users().unwrap(), vec![]);
    let mut bob = user("bob", 1);
    assert_eq!(c.put_user(&bob).unwrap(), None);
    assert_eq!(c.put_user(&user("alice", 2)).unwrap(), None);
    // A rotation: the old hash is kept beside the new one; no prefixes any more.
    let before = bob.clone();
    bob.old_token_hash = Some(bob.token_hash);
    bob.token_hash = [3; 32];
    bob.prefixes.clear();
    bob.updated_unix_ms = 3_000;
    assert_eq!(c.put_user(&bob).unwrap(), Some(before));
    drop(c);

    let mut c = b.open();
    assert_eq!(c.load_users().unwrap(), vec![user("alice", 2), bob.clone()]);
    assert_eq!(c.remove_user("bob").unwrap(), Some(bob));
    assert_eq!(c.remove_user("bob").unwrap(), None);
    assert_eq!(c.load_users().unwrap(), vec![user("alice", 2)]);
}

fn audit_appends_get_consecutive_seqs_and_queries_filter_them(b: &dyn Backend) {
    let mut c = b.open();
    assert_eq!(c.append_audit(&[]).unwrap(), 0, "nothing stored");
    let first = c
        .append_audit(&[
            audit(100, "alice", "upload"),
            audit(200, "bob", "delete"),
            audit(300, "alice", "delete"),
        ])
        .unwrap();
    assert_eq!(first, 1);
    let next = c.append_audit(&[audit(400, "-", "auth_refused")]).unwrap();
    assert_eq!(next, 4);

    let all = c.query_audit(&query(100)).unwrap();
    assert_eq!(seqs(&all), vec![1, 2, 3, 4]);
    let mut expected = audit(200, "bob", "delete");
    expected.seq = 2;
    assert_eq!(all[1], expected, "every field round-trips");

    let by_user = AuditQuery {
        user: Some("alice".into()),
        ..query(100)
    };
    assert_eq!(seqs(&c.query_audit(&by_user).unwrap()), vec![1, 3]);
    let by_action = AuditQuery {
        action: Some("delete".into()),
        ..query(100)
    };
    assert_eq!(seqs(&c.query_audit(&by_action).unwrap()), vec![2, 3]);
    let since = AuditQuery {
        since_unix_ms: Some(300),
        ..query(100)
    };
    assert_eq!(seqs(&c.query_audit(&since).unwrap()), vec![3, 4]);
    let all_filters = AuditQuery {
        since_unix_ms: Some(150),
        user: Some("alice".into()),
        action: Some("delete".into()),
        after_seq: Some(1),
        limit: 100,
    };
    assert_eq!(seqs(&c.query_audit(&all_filters).unwrap()), vec![3]);
    let nobody = AuditQuery {
        user: Some("carol".into()),
        ..query(100)
    };
    assert_eq!(c.query_audit(&nobody).unwrap(), vec![]);
}

fn audit_pages_follow_after_seq_within_the_limit(b: &dyn Backend) {
    let mut c = b.open();
    let batch: Vec<AuditRecord> = (0..25)
        .map(|i| audit(i, if i % 2 == 0 { "even" } else { "odd" }, "upload"))
        .collect();
    c.append_audit(&batch).unwrap();
    assert_eq!(c.query_audit(&query(0)).unwrap(), vec![], "limit 0");

    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = c
            .query_audit(&AuditQuery {
                user: Some("even".into()),
                after_seq: cursor,
                ..query(5)
            })
            .unwrap();
        let Some(last) = page.last() else { break };
        cursor = Some(last.seq);
        pages.push(seqs(&page));
    }
    let even: Vec<u64> = (1..=25).step_by(2).collect();
    assert_eq!(pages.concat(), even);
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [5, 5, 3]);
}

fn audit_limit_is_capped_and_long_fields_are_cut(b: &dyn Backend) {
    let mut c = b.open();
    let batch = vec![audit(1, "u", "upload"); AUDIT_QUERY_LIMIT_MAX + 5];
    c.append_audit(&batch).unwrap();
    let got = c.query_audit(&query(usize::MAX)).unwrap();
    assert_eq!(got.len(), AUDIT_QUERY_LIMIT_MAX);
    assert_eq!(got.last().unwrap().seq, AUDIT_QUERY_LIMIT_MAX as u64);

    let mut long = audit(2, "u", "upload");
    long.detail = "x".repeat(AUDIT_TEXT_BYTES_MAX * 3);
    let seq = c.append_audit(&[long]).unwrap();
    let back = c
        .query_audit(&AuditQuery {
            after_seq: Some(seq - 1),
            ..query(1)
        })
        .unwrap();
    assert_eq!(back[0].detail.len(), AUDIT_TEXT_BYTES_MAX);
}

fn pruning_deletes_old_records_and_seqs_are_never_reused(b: &dyn Backend) {
    let mut c = b.open();
    c.append_audit(&[
        audit(10, "a", "x"),
        audit(20, "a", "x"),
        audit(30, "a", "x"),
    ])
    .unwrap();
    assert_eq!(c.prune_audit(20).unwrap(), 1, "strictly older only");
    assert_eq!(seqs(&c.query_audit(&query(10)).unwrap()), vec![2, 3]);
    assert_eq!(c.prune_audit(u64::MAX).unwrap(), 2);
    assert_eq!(c.query_audit(&query(10)).unwrap(), vec![]);
    drop(c);
    let mut c = b.open();
    assert_eq!(c.append_audit(&[audit(40, "a", "x")]).unwrap(), 4);
}
