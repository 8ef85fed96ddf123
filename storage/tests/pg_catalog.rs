//! The PostgreSQL catalog's own cases, against a real server (a throw-away cluster): nodes of one
//! pool sharing a database, the pool tables, the server crashing and restarting, an unreachable
//! server, a schema newer than the code, and a store opened on it. The contract both backends
//! share is `catalog_suite.rs`.

mod support;

use oasis_storage::catalog_fixtures::audit;
use oasis_storage::{
    BitrateSource, Catalog, CatalogError, CatalogLocation, NodeLoad, ObjectMeta, PgCatalog,
    PoolCatalog, ReplicaRecord, Store, UploadOptions,
};
use support::pg;

fn meta(id: u64, name: &str) -> ObjectMeta {
    ObjectMeta {
        id,
        name: name.into(),
        size_bytes: 10,
        content_type: "video/mp4".into(),
        crc32c: 7,
        created_unix_ms: 1_000,
        bitrate_bps: 8,
        bitrate_source: BitrateSource::Default,
        duration_ms: None,
    }
}

fn names(c: &mut PgCatalog) -> Vec<(u64, String)> {
    let mut all: Vec<_> = c
        .load_all()
        .unwrap()
        .into_iter()
        .map(|m| (m.id, m.name))
        .collect();
    all.sort();
    all
}

/// The node ids of the holders of `name`'s current version.
fn holder_ids(c: &mut PgCatalog, name: &str) -> Vec<String> {
    let holders = c.holders(name).unwrap();
    holders.into_iter().map(|h| h.replica.node_id).collect()
}

/// A fresh database with a handle for node-a and one for node-b.
fn two_nodes() -> (std::sync::Arc<pg::Cluster>, String, PgCatalog, PgCatalog) {
    let cluster = pg::shared();
    let url = cluster.create_database();
    let a = PgCatalog::open(&url, "node-a").unwrap();
    let b = PgCatalog::open(&url, "node-b").unwrap();
    (cluster, url, a, b)
}

#[test]
fn two_nodes_see_only_their_own_objects_and_get_disjoint_ids() {
    let (_cluster, url, mut a, mut b) = two_nodes();
    let ra = a.reserve_ids(10).unwrap();
    let rb = b.reserve_ids(10).unwrap();
    let ra2 = a.reserve_ids(5).unwrap();
    for (x, y) in [(&ra, &rb), (&rb, &ra2), (&ra, &ra2)] {
        assert!(
            x.end <= y.start || y.end <= x.start,
            "{x:?} and {y:?} overlap"
        );
    }
    assert_eq!(a.peek_next_id().unwrap(), b.peek_next_id().unwrap());
    // The same name on both nodes: two rows, each node sees its own.
    a.insert_or_replace(&meta(ra.start, "show/a.mp4")).unwrap();
    b.insert_or_replace(&meta(rb.start, "show/a.mp4")).unwrap();
    b.insert_or_replace(&meta(rb.start + 1, "b-only.mp4"))
        .unwrap();
    assert_eq!(names(&mut a), vec![(ra.start, "show/a.mp4".into())]);
    assert_eq!(
        names(&mut b),
        vec![
            (rb.start, "show/a.mp4".into()),
            (rb.start + 1, "b-only.mp4".into())
        ]
    );
    // A removal on one node leaves the other's row; so does removal by id.
    assert_eq!(
        a.remove("show/a.mp4").unwrap().map(|m| m.id),
        Some(ra.start)
    );
    assert!(!a.remove_id(rb.start + 1).unwrap(), "not node a's row");
    assert_eq!(names(&mut a), vec![]);
    assert_eq!(names(&mut b).len(), 2);
    // A third handle for node a, opened later, sees what node a left.
    a.insert_or_replace(&meta(ra2.start, "late.mp4")).unwrap();
    let mut a2 = PgCatalog::open(&url, "node-a").unwrap();
    assert_eq!(names(&mut a2), vec![(ra2.start, "late.mp4".into())]);
}

#[test]
fn heartbeats_nodes_and_holders() {
    let (_cluster, _url, mut a, mut b) = two_nodes();
    assert_eq!(a.nodes().unwrap(), vec![]);
    let load = NodeLoad {
        connections: 3,
        bandwidth_reserved_bps: 4_000_000,
        bandwidth_limit_bps: 1_000_000_000,
    };
    a.heartbeat("http://127.0.0.1:8081", &load).unwrap();
    b.heartbeat("http://127.0.0.1:8082", &NodeLoad::default())
        .unwrap();
    a.heartbeat("http://127.0.0.2:8081", &load).unwrap();
    let nodes = a.nodes().unwrap();
    assert_eq!(
        nodes
            .iter()
            .map(|n| (n.node_id.as_str(), n.advertise.as_str(), n.load))
            .collect::<Vec<_>>(),
        vec![
            ("node-a", "http://127.0.0.2:8081", load),
            ("node-b", "http://127.0.0.1:8082", NodeLoad::default()),
        ]
    );
    assert!(nodes
        .iter()
        .all(|n| n.heartbeat_unix_ms > 1_600_000_000_000));
    assert!(nodes.iter().all(|n| n.age_ms < 3_600_000), "{nodes:?}");

    // A commit on node a makes it the holder of that version.
    let ids = a.reserve_ids(3).unwrap();
    let v1 = meta(ids.start, "movie.mp4");
    a.insert_or_replace(&v1).unwrap();
    let holders = b.holders("movie.mp4").unwrap();
    assert_eq!(holders.len(), 1);
    assert_eq!(holders[0].replica, ReplicaRecord::of(&v1, "node-a", 1_000));
    assert_eq!(
        holders[0].node.as_ref().map(|n| n.advertise.as_str()),
        Some("http://127.0.0.2:8081")
    );
    // A copy made durable on node b: both hold it; a node that never beat has no record.
    b.record_replica(&ReplicaRecord::of(&v1, "node-b", 2_000))
        .unwrap();
    b.record_replica(&ReplicaRecord::of(&v1, "node-c", 2_500))
        .unwrap();
    let held: Vec<_> = a
        .holders("movie.mp4")
        .unwrap()
        .into_iter()
        .map(|h| (h.replica.node_id, h.node.is_some()))
        .collect();
    assert_eq!(
        held,
        vec![
            ("node-a".into(), true),
            ("node-b".into(), true),
            ("node-c".into(), false)
        ]
    );
    // A replacement on node a: only node a holds the current version now.
    let v2 = meta(ids.start + 1, "movie.mp4");
    assert_eq!(a.insert_or_replace(&v2).unwrap(), Some(v1.clone()));
    let holders = b.holders("movie.mp4").unwrap();
    assert_eq!(
        holders
            .iter()
            .map(|h| (h.replica.node_id.as_str(), h.replica.version_id))
            .collect::<Vec<_>>(),
        vec![("node-a", v2.id)]
    );
    assert!(b.drop_replica("movie.mp4", "node-c").unwrap());
    assert!(!b.drop_replica("movie.mp4", "node-c").unwrap());
    // Removing it on node a leaves node b's older copy as the newest one left.
    a.remove("movie.mp4").unwrap();
    assert_eq!(holder_ids(&mut a, "movie.mp4"), vec!["node-b".to_string()]);
    assert_eq!(a.holders("never.mp4").unwrap(), vec![]);
    // Every copy whatever its version, and the names short of copies on live nodes.
    a.insert_or_replace(&meta(ids.start + 2, "other.mp4"))
        .unwrap();
    assert_eq!(
        b.replicas("movie.mp4").unwrap(),
        vec![ReplicaRecord::of(&v1, "node-b", 2_000)]
    );
    assert_eq!(b.replicas("never.mp4").unwrap(), vec![]);
    assert_eq!(b.under_replicated(1, 3_600_000).unwrap(), 0);
    assert_eq!(b.under_replicated(2, 3_600_000).unwrap(), 2);
    // No node is live within 0 ms: every name is short of copies.
    assert_eq!(b.under_replicated(1, 0).unwrap(), 2);
    // Node a holds other.mp4 alone: it repairs it; node b holds movie.mp4 alone: it repairs it.
    assert_eq!(
        a.to_repair(2, 3_600_000, 10).unwrap(),
        vec![("other.mp4".to_string(), ids.start + 2)]
    );
    assert_eq!(
        b.to_repair(2, 3_600_000, 10).unwrap(),
        vec![("movie.mp4".to_string(), v1.id)]
    );
    assert_eq!(b.to_repair(1, 3_600_000, 10).unwrap(), vec![]);
    // Both hold other.mp4: the smaller node id (a) repairs it, b does not.
    b.record_replica(&ReplicaRecord::of(
        &meta(ids.start + 2, "other.mp4"),
        "node-b",
        1,
    ))
    .unwrap();
    assert_eq!(a.to_repair(3, 3_600_000, 10).unwrap().len(), 1);
    assert_eq!(
        b.to_repair(3, 3_600_000, 10).unwrap(),
        vec![("movie.mp4".to_string(), v1.id)]
    );
    // Nobody live: nobody repairs.
    assert_eq!(a.to_repair(2, 0, 10).unwrap(), vec![]);
    let err = a
        .record_replica(&ReplicaRecord::of(&v2, "bad node", 1))
        .unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
}

/// Every committed row (objects, ids, users, audit, nodes) is there after the server is killed
/// without a shutdown checkpoint and started again, and the open handle reconnects by itself.
#[test]
fn a_copy_is_listed_under_the_origin_s_version_and_a_late_older_one_is_refused() {
    let (_cluster, _url, mut a, mut b) = two_nodes();
    let ids_a = a.reserve_ids(2).unwrap();
    let ids_b = b.reserve_ids(2).unwrap();
    let v1 = meta(ids_a.start, "swap.mp4");
    let v2 = ObjectMeta {
        crc32c: 9,
        ..meta(ids_a.start + 1, "swap.mp4")
    };
    a.insert_or_replace(&v1).unwrap();
    // Node b's copy of v1 keeps its own object id but is listed under v1's: one version.
    b.insert_copy(&meta(ids_b.start, "swap.mp4"), v1.id)
        .unwrap();
    let listed: Vec<(String, u64)> = b
        .replicas("swap.mp4")
        .unwrap()
        .into_iter()
        .map(|r| (r.node_id, r.version_id))
        .collect();
    assert_eq!(
        listed,
        vec![("node-a".into(), v1.id), ("node-b".into(), v1.id)]
    );
    assert_eq!(names(&mut b), vec![(ids_b.start, "swap.mp4".to_string())]);
    // Replaced on node a; a copy of v1 arriving late at node b is refused, nothing changes.
    a.insert_or_replace(&v2).unwrap();
    let late = b.insert_copy(&meta(ids_b.start + 1, "swap.mp4"), v1.id);
    assert!(
        matches!(late, Err(CatalogError::Superseded { current, .. }) if current == v2.id),
        "{late:?}"
    );
    assert_eq!(names(&mut b), vec![(ids_b.start, "swap.mp4".to_string())]);
    assert_eq!(holder_ids(&mut b, "swap.mp4"), vec!["node-a".to_string()]);
}

#[test]
fn committed_rows_survive_an_immediate_stop_and_handles_reconnect() {
    let cluster = pg::own();
    let url = cluster.create_database();
    let mut c = PgCatalog::open(&url, "node-a").unwrap();
    let ids = c.reserve_ids(100).unwrap();
    for i in 0..50 {
        c.insert_or_replace(&meta(ids.start + i, &format!("o/{i}.ts")))
            .unwrap();
    }
    let seq = c.append_audit(&[audit(5, "u", "upload")]).unwrap();
    c.heartbeat("http://127.0.0.1:1", &NodeLoad::default())
        .unwrap();

    cluster.pg_ctl_stop("immediate");
    // While the server is down: a clear error, never a panic, and nothing half done.
    let err = c.load_all().unwrap_err();
    assert!(matches!(err, CatalogError::Unreachable { .. }), "{err}");
    let err = c.next_id().unwrap_err();
    assert!(
        err.to_string()
            .contains("cannot reach the PostgreSQL catalog"),
        "{err}"
    );
    cluster.pg_ctl_start();

    // The same handle works again at its next call.
    assert_eq!(c.load_all().unwrap().len(), 50);
    assert!(
        c.next_id().unwrap() >= ids.end,
        "reserved ids are never handed out again"
    );
    let mut fresh = PgCatalog::open(&url, "node-a").unwrap();
    assert_eq!(names(&mut fresh).len(), 50);
    assert_eq!(fresh.nodes().unwrap().len(), 1);
    let next = fresh.append_audit(&[audit(6, "u", "delete")]).unwrap();
    assert_eq!(next, seq + 1);
}

#[test]
fn an_unreachable_server_is_named_with_the_fix_and_no_password() {
    let port = pg::free_port();
    let url = format!("postgres://oasis:hunter2-secret@127.0.0.1:{port}/oasis");
    let err = PgCatalog::open(&url, "node-a").unwrap_err();
    let text = err.to_string();
    assert!(matches!(err, CatalogError::Unreachable { .. }), "{text}");
    assert!(
        text.contains(&format!(
            "postgres://oasis:<redacted>@127.0.0.1:{port}/oasis"
        )),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    assert!(text.contains("check that the server runs"), "{text}");
    let err = PgCatalog::open("mysql://x@h/db", "node-a").unwrap_err();
    assert!(
        err.to_string()
            .contains("postgres://user@host:5432/database"),
        "{err}"
    );
    let err = PgCatalog::open(&url, "no spaces").unwrap_err();
    assert!(err.to_string().contains("node id"), "{err}");
}

#[test]
fn a_newer_schema_is_refused_with_the_fix() {
    let cluster = pg::shared();
    let url = cluster.create_database();
    drop(PgCatalog::open(&url, "node-a").unwrap());
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    admin
        .batch_execute("UPDATE oasis_schema SET version = 99")
        .unwrap();
    let err = PgCatalog::open(&url, "node-a").unwrap_err();
    assert!(
        matches!(err, CatalogError::SchemaTooNew { found: 99, .. }),
        "{err}"
    );
    let text = err.to_string();
    assert!(
        text.contains("newer Oasis") && text.contains("127.0.0.1"),
        "{text}"
    );
}

/// A store opened on the PostgreSQL catalog commits uploads there (file first, then row) and
/// finds them again after a reopen; recovery drops a row whose file is gone.
#[test]
fn a_store_on_postgres_keeps_its_objects_across_reopen() {
    let cluster = pg::shared();
    let url = cluster.create_database();
    let dir = tempfile::tempdir().unwrap();
    let config = || {
        let mut c = support::config(dir.path());
        c.catalog = CatalogLocation::Postgres {
            url: url.clone(),
            node_id: "node-a".into(),
        };
        c
    };
    let body = b"0123456789abcdef".repeat(1000);
    {
        let (store, _) = Store::open(config(), support::rm()).unwrap();
        store
            .put("show/clip.mp4", &body, UploadOptions::default())
            .unwrap();
        store
            .put("show/gone.ts", b"abc", UploadOptions::default())
            .unwrap();
    }
    let mut c = PgCatalog::open(&url, "node-a").unwrap();
    let rows = c.load_all().unwrap();
    assert_eq!(rows.len(), 2);
    {
        let (store, _) = Store::open(config(), support::rm()).unwrap();
        let gone = store.lookup("show/gone.ts").unwrap();
        std::fs::remove_file(store.object_path(&gone)).unwrap();
    }
    let (store, report) = Store::open(config(), support::rm()).unwrap();
    assert_eq!(report.rows_dropped, 1);
    let meta = store.lookup("show/clip.mp4").unwrap();
    assert_eq!(support::read_all(&store, &meta), body);
    assert!(store.lookup("show/gone.ts").is_none());
    assert_eq!(c.load_all().unwrap().len(), 1);
}
