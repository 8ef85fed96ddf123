//! The User Manager's accounts and the Log Manager's audit trail kept by a real store in a real
//! directory: users survive a reopen; the audit writer takes records from four threads at once
//! and stores every one, in each thread's order, with unique ascending seqs; a full queue drops
//! and counts instead of blocking (the writer held by its test seam, so the count is exact);
//! dropping the last handle writes what is queued; retention prunes old records at start; and a
//! rebuilt catalog or a backup keeps the accounts and the trail.

mod support;

use std::sync::Arc;
use std::time::Duration;

use oasis_storage::{
    backup, rebuild_catalog, AuditConfig, AuditLog, AuditQuery, AuditRecord, Store, UploadOptions,
    UserRecord,
};
use support::*;

fn user(name: &str, role: &str, hash_byte: u8) -> UserRecord {
    UserRecord {
        name: name.into(),
        role: role.into(),
        prefixes: if role == "provider" {
            vec![format!("{name}/")]
        } else {
            vec![]
        },
        token_hash: [hash_byte; 32],
        old_token_hash: None,
        created_unix_ms: fixed_clock(),
        updated_unix_ms: fixed_clock(),
    }
}

/// A record of `user` about `object`, at the store's clock plus `offset_ms`.
fn rec(user: &str, object: &str, offset_ms: u64) -> AuditRecord {
    AuditRecord {
        seq: 0,
        at_unix_ms: fixed_clock() + offset_ms,
        user: user.into(),
        client: "127.0.0.1:5000".into(),
        action: "upload".into(),
        object: object.into(),
        outcome: "ok".into(),
        detail: "201".into(),
    }
}

/// An audit writer on `store` with the default configuration as `adjust` changes it.
fn start_log(store: &Arc<Store>, adjust: impl FnOnce(&mut AuditConfig)) -> AuditLog {
    let mut config = AuditConfig::default();
    adjust(&mut config);
    AuditLog::start(Arc::clone(store), config)
}

/// The whole trail, read a page of 300 at a time through the pagination cursor.
fn whole_trail(store: &Store) -> Vec<AuditRecord> {
    let mut all: Vec<AuditRecord> = Vec::new();
    loop {
        let page = store
            .query_audit(&AuditQuery {
                after_seq: all.last().map(|r| r.seq),
                limit: 300,
                ..AuditQuery::default()
            })
            .unwrap();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

#[test]
fn users_are_kept_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    assert_eq!(store.users().unwrap(), vec![]);
    for u in [
        user("carol", "provider", 1),
        user("alice", "admin", 2),
        user("bob", "viewer", 3),
    ] {
        assert_eq!(store.put_user(&u).unwrap(), None);
    }
    let mut rotated = user("carol", "provider", 4);
    rotated.old_token_hash = Some([1; 32]);
    rotated.updated_unix_ms += 1;
    assert_eq!(
        store.put_user(&rotated).unwrap(),
        Some(user("carol", "provider", 1))
    );
    assert_eq!(
        store.remove_user("bob").unwrap(),
        Some(user("bob", "viewer", 3))
    );
    assert_eq!(store.remove_user("bob").unwrap(), None);
    drop(store);

    let (store, _) = open(dir.path());
    assert_eq!(
        store.users().unwrap(),
        vec![user("alice", "admin", 2), rotated],
        "sorted by name, as last written"
    );
}

#[test]
fn records_from_four_threads_are_all_stored_in_order() {
    const THREADS: usize = 4;
    const EACH: usize = 250;
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let log = start_log(&store, |_| {});
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let log = log.clone();
            s.spawn(move || {
                for i in 0..EACH {
                    let r = rec(&format!("user{t}"), &format!("obj{i}"), i as u64);
                    assert!(log.record(r), "the default queue holds all 1000");
                }
            });
        }
    });
    log.flush();
    assert_eq!(
        (log.written(), log.dropped(), log.write_errors()),
        (1000, 0, 0)
    );

    let trail = whole_trail(&store);
    assert_eq!(trail.len(), THREADS * EACH);
    assert!(
        trail.windows(2).all(|w| w[0].seq < w[1].seq),
        "unique seqs, ascending"
    );
    for t in 0..THREADS {
        let objects: Vec<String> = trail
            .iter()
            .filter(|r| r.user == format!("user{t}"))
            .map(|r| r.object.clone())
            .collect();
        let expected: Vec<String> = (0..EACH).map(|i| format!("obj{i}")).collect();
        assert_eq!(objects, expected, "thread {t}'s records, in its order");
    }
    // The user filter gives the same records as filtering the whole trail.
    let user2 = store
        .query_audit(&AuditQuery {
            user: Some("user2".into()),
            limit: 10_000,
            ..AuditQuery::default()
        })
        .unwrap();
    let filtered: Vec<AuditRecord> = trail.into_iter().filter(|r| r.user == "user2").collect();
    assert_eq!(user2, filtered);
}

#[test]
fn a_full_queue_drops_and_counts_instead_of_blocking() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let log = start_log(&store, |c| c.queue_max = 4);
    {
        let _paused = log.pause_for_test();
        for i in 0..4 {
            assert!(log.record(rec("u", &format!("kept{i}"), i)), "record {i}");
        }
        for i in 0..6 {
            assert!(!log.record(rec("u", &format!("dropped{i}"), 10 + i)));
        }
        assert_eq!(log.dropped(), 6);
        assert_eq!(log.written(), 0, "the writer took nothing while paused");
    }
    log.flush();
    assert_eq!((log.written(), log.dropped()), (4, 6));
    let objects: Vec<String> = whole_trail(&store).into_iter().map(|r| r.object).collect();
    assert_eq!(objects, ["kept0", "kept1", "kept2", "kept3"]);
    // Room again once written.
    assert!(log.record(rec("u", "later", 20)));
}

#[test]
fn dropping_the_last_handle_writes_what_is_queued() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let log = start_log(&store, |c| c.flush_interval = Duration::from_secs(3600));
    // After a flush the writer sleeps for the hour: the records below wait in the queue (fewer
    // than half of it, so none wakes the writer) until the handles go.
    log.flush();
    let other = log.clone();
    for i in 0..100 {
        assert!(other.record(rec("u", &format!("o{i}"), i)));
    }
    drop(log);
    drop(other);
    drop(store);

    let (store, _) = open(dir.path());
    let trail = whole_trail(&store);
    assert_eq!(trail.len(), 100, "nothing lost");
    assert_eq!(trail[99].object, "o99");
}

#[test]
fn retention_prunes_old_records_when_the_writer_starts() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let day_ms = 86_400_000;
    {
        let keep_all = start_log(&store, |c| c.retention_days = 0);
        let mut old = rec("u", "three days old", 0);
        old.at_unix_ms = fixed_clock() - 3 * day_ms;
        assert!(keep_all.record(old));
        let mut recent = rec("u", "one day old", 0);
        recent.at_unix_ms = fixed_clock() - day_ms;
        assert!(keep_all.record(recent));
        keep_all.flush();
        assert_eq!(whole_trail(&store).len(), 2, "0 keeps forever");
    }
    let two_days = start_log(&store, |c| c.retention_days = 2);
    // The writer prunes after the round that answers the first flush; the second flush is
    // answered by a later round, so the prune is done when it returns.
    two_days.flush();
    two_days.flush();
    let left: Vec<String> = whole_trail(&store).into_iter().map(|r| r.object).collect();
    assert_eq!(left, ["one day old"]);
}

/// A store with an object, two users and three audit records, closed.
fn fill_accounts(dir: &std::path::Path) -> (Vec<UserRecord>, Vec<AuditRecord>) {
    let (store, _) = open(dir);
    store
        .put("show/a.ts", b"bytes", UploadOptions::default())
        .unwrap();
    store.put_user(&user("alice", "admin", 1)).unwrap();
    store.put_user(&user("pat", "provider", 2)).unwrap();
    let log = start_log(&store, |_| {});
    for i in 0..3 {
        assert!(log.record(rec("alice", &format!("x{i}"), i)));
    }
    log.flush();
    (store.users().unwrap(), whole_trail(&store))
}

#[test]
fn a_rebuilt_catalog_keeps_users_and_the_trail_of_a_readable_one() {
    let dir = tempfile::tempdir().unwrap();
    let (users, trail) = fill_accounts(dir.path());
    let report = rebuild_catalog(dir.path(), 7).unwrap();
    assert_eq!(report.restored, 1);
    assert_eq!(
        (report.accounts.users, report.accounts.audit_records),
        (2, 3)
    );
    assert!(report.accounts.lost.is_empty(), "{report:?}");
    let (store, _) = open(dir.path());
    assert_eq!(store.users().unwrap(), users);
    assert_eq!(whole_trail(&store), trail);
    assert!(store.lookup("show/a.ts").is_some());
}

#[test]
fn a_rebuild_without_the_old_catalog_says_the_users_are_lost() {
    let dir = tempfile::tempdir().unwrap();
    fill_accounts(dir.path());
    std::fs::remove_file(dir.path().join("catalog.sqlite")).unwrap();
    let report = rebuild_catalog(dir.path(), 7).unwrap();
    assert_eq!(
        report.restored, 1,
        "the objects come back from their records"
    );
    assert_eq!(report.accounts.users, 0);
    assert_eq!(report.accounts.lost.len(), 1, "{report:?}");
    assert!(
        report.accounts.lost[0].contains("user accounts"),
        "{report:?}"
    );
    let (store, _) = open(dir.path());
    assert_eq!(store.users().unwrap(), vec![]);
}

#[test]
fn a_backup_carries_users_and_the_trail() {
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let (users, trail) = fill_accounts(src.path());
    backup(src.path(), dest.path()).unwrap();
    let (copy, _) = open(dest.path());
    assert_eq!(copy.users().unwrap(), users);
    assert_eq!(whole_trail(&copy), trail);
}
