//! Proves what `Store::open` repairs, by staging each kind of debris a crash (or an operator) can
//! leave on a real data directory and checking the `RecoveryReport` and the resulting state:
//! interrupted uploads in tmp/, content files with no catalog row, rows whose file is missing or
//! has the wrong size, and stray files it does not own (reported, left alone). Also checks that a
//! catalog with a newer schema version is refused with a clear message.

mod support;

use oasis_storage::{Store, StoreError, UploadOptions};
use support::*;

#[test]
fn recovery_removes_debris_and_drops_bad_rows() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let (store, _) = open(data);
    let good = store
        .put("good.ts", b"good bytes", UploadOptions::default())
        .unwrap();
    let missing = store
        .put(
            "missing.ts",
            b"will lose its file",
            UploadOptions::default(),
        )
        .unwrap();
    let resized = store
        .put("resized.ts", b"will be truncated", UploadOptions::default())
        .unwrap();
    let missing_path = store.object_path(&missing);
    let resized_path = store.object_path(&resized);
    // An orphan has an id the catalog handed out but no row names (here: a deleted object's).
    let gone = store
        .put("gone.ts", b"deleted", UploadOptions::default())
        .unwrap();
    let orphan_path = store.object_path(&gone);
    store.delete("gone.ts").unwrap();
    drop(store);

    std::fs::remove_file(&missing_path).unwrap();
    std::fs::write(&resized_path, b"short").unwrap();
    std::fs::write(data.join("tmp/00000000000000ff.part"), b"half an upload").unwrap();
    std::fs::write(&orphan_path, b"orphan").unwrap();
    std::fs::write(data.join("objects/00/notes.txt"), b"operator's file").unwrap();

    let (store, report) = open(data);
    assert!(!orphan_path.exists());
    assert_eq!(report.tmp_files_removed, 1);
    assert_eq!(report.orphan_files_removed, 1);
    assert_eq!(report.rows_dropped, 2);
    assert!(report
        .rows_dropped_names
        .iter()
        .any(|n| n.starts_with("missing.ts") && n.contains("missing")));
    assert!(report
        .rows_dropped_names
        .iter()
        .any(|n| n.starts_with("resized.ts") && n.contains("5 bytes")));
    assert_eq!(
        report.unknown_files,
        vec![data.join("objects/00/notes.txt")]
    );
    assert_eq!(report.objects_loaded, 1);
    assert_eq!(
        store
            .list()
            .iter()
            .map(|m| m.name.as_str())
            .collect::<Vec<_>>(),
        ["good.ts"]
    );
    assert_eq!(read_all(&store, &good), b"good bytes");
    assert!(!resized_path.exists());
    assert!(
        data.join("objects/00/notes.txt").exists(),
        "files it does not own are left alone"
    );
    drop(store);

    let (_, again) = open(data);
    assert_eq!(
        again.tmp_files_removed + again.orphan_files_removed + again.rows_dropped,
        0,
        "{again:?}"
    );
}

#[test]
fn newer_catalog_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path()));
    let conn = rusqlite::Connection::open(dir.path().join("catalog.sqlite")).unwrap();
    conn.pragma_update(None, "user_version", 999).unwrap();
    drop(conn);
    let err = Store::open(config(dir.path()), rm()).unwrap_err();
    assert!(matches!(err, StoreError::Catalog(_)), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("schema version 999") && msg.contains("newer Oasis"),
        "{msg}"
    );
}
