//! A library that survives, on real files: every object describes itself, so a catalog that is
//! damaged, truncated or deleted is rebuilt with every name, type, checksum and uploaded bitrate;
//! fsck reports what does not match; a backup taken during uploads and deletes is a data
//! directory whose catalog and files agree.

mod support;

use std::collections::BTreeMap;
use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use oasis_storage::{
    backup, fsck, rebuild_catalog, BitrateSource, ObjectMeta, StoreError, UploadOptions,
    LOST_FOUND_DIR,
};
use support::*;

const PLAYLIST: &str = "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg0.ts\n#EXTINF:2.0,\nseg1.ts\n#EXT-X-ENDLIST\n";

/// A library: a replaced object, an uploader bitrate and type, an HLS package.
fn fill(dir: &Path) -> BTreeMap<String, (ObjectMeta, Vec<u8>)> {
    let (store, _) = open(dir);
    store
        .put("movie.bin", b"first version", UploadOptions::default())
        .unwrap();
    let typed = UploadOptions {
        bitrate_bps: Some(2_500_000),
        content_type: Some("video/x-test".into()),
        ..Default::default()
    };
    store.put("movie.bin", &[7u8; 300_000], typed).unwrap();
    store
        .put("show/seg0.ts", &[1u8; 400_000], UploadOptions::default())
        .unwrap();
    store
        .put("show/seg1.ts", &[2u8; 100_000], UploadOptions::default())
        .unwrap();
    store
        .put(
            "show/index.m3u8",
            PLAYLIST.as_bytes(),
            UploadOptions::default(),
        )
        .unwrap();
    store
        .list()
        .into_iter()
        .map(|m| {
            let bytes = read_all(&store, &m);
            (m.name.clone(), ((*m).clone(), bytes))
        })
        .collect()
}

/// What a reader sees of the library after a rebuild: every object, byte-exact, with its name,
/// type, checksum and bitrate.
fn assert_library(dir: &Path, expected: &BTreeMap<String, (ObjectMeta, Vec<u8>)>) {
    let (store, report) = open(dir);
    assert_eq!(report.orphan_files_removed, 0, "{report:?}");
    assert_eq!(store.len(), expected.len());
    for (name, (meta, bytes)) in expected {
        let got = store
            .lookup(name)
            .unwrap_or_else(|| panic!("{name} is back"));
        assert_eq!(got.id, meta.id, "{name}");
        assert_eq!(got.size_bytes, meta.size_bytes, "{name}");
        assert_eq!(got.crc32c, meta.crc32c, "{name}");
        assert_eq!(got.content_type, meta.content_type, "{name}");
        assert_eq!(
            (got.bitrate_bps, got.bitrate_source),
            (meta.bitrate_bps, meta.bitrate_source),
            "{name}"
        );
        assert_eq!(&read_all(&store, &got), bytes, "{name}");
    }
    // New uploads continue after the rebuilt ids.
    let fresh = store
        .put("fresh.bin", b"x", UploadOptions::default())
        .unwrap();
    assert!(expected.values().all(|(m, _)| m.id < fresh.id));
}

fn damage_bytes(catalog: &Path) {
    let mut f = fs::OpenOptions::new().write(true).open(catalog).unwrap();
    f.seek(SeekFrom::Start(1024)).unwrap();
    f.write_all(&[0x5a; 12 * 1024]).unwrap();
}

fn truncate(catalog: &Path) {
    let f = fs::OpenOptions::new().write(true).open(catalog).unwrap();
    f.set_len(3000).unwrap();
}

fn delete(catalog: &Path) {
    fs::remove_file(catalog).unwrap();
}

#[test]
fn a_damaged_truncated_or_deleted_catalog_is_rebuilt_from_the_objects() {
    for (how, damage) in [
        ("bytes", damage_bytes as fn(&Path)),
        ("truncated", truncate),
        ("deleted", delete),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let expected = fill(dir.path());
        assert_eq!(
            expected["movie.bin"].0.bitrate_source,
            BitrateSource::Uploader
        );
        assert_eq!(
            expected["show/seg0.ts"].0.bitrate_source,
            BitrateSource::HlsExtinf
        );
        let catalog = dir.path().join("catalog.sqlite");
        damage(&catalog);

        // Start-up refuses, says why, names the command, and removes nothing.
        let files_before = object_files(dir.path()).len();
        let err = oasis_storage::Store::open(config(dir.path()), rm()).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::CatalogDamaged { .. } | StoreError::CatalogLost { .. }
            ),
            "{how}: {err}"
        );
        let msg = err.to_string();
        assert!(msg.contains("--rebuild-catalog"), "{how}: {msg}");
        assert!(!msg.contains("restart (recovery"), "{how}: {msg}");
        assert_eq!(object_files(dir.path()).len(), files_before, "{how}");

        let report = rebuild_catalog(dir.path(), 42).unwrap();
        assert_eq!(report.restored, expected.len() as u64, "{how}: {report:?}");
        assert!(report.unplaced.is_empty(), "{how}: {report:?}");
        if how != "deleted" {
            assert!(
                dir.path().join("catalog.sqlite.damaged-42").exists(),
                "{how}: the old catalog is kept aside"
            );
        }
        assert_library(dir.path(), &expected);
        let check = fsck(dir.path(), true).unwrap();
        assert!(check.is_clean(), "{how}: {check:?}");
    }
}

#[test]
fn a_rebuild_keeps_files_without_a_record_in_lost_and_found() {
    let dir = tempfile::tempdir().unwrap();
    let expected = fill(dir.path());
    // A file under an id no upload wrote, with no record.
    let stray = dir.path().join("objects/ff/00000000000000ff");
    fs::write(&stray, b"who am I").unwrap();
    delete(&dir.path().join("catalog.sqlite"));
    let report = rebuild_catalog(dir.path(), 1).unwrap();
    assert_eq!(report.unplaced.len(), 1, "{report:?}");
    assert!(
        report.unplaced[0].contains("no object record"),
        "{report:?}"
    );
    assert!(!stray.exists());
    assert_eq!(
        fs::read(dir.path().join(LOST_FOUND_DIR).join("00000000000000ff")).unwrap(),
        b"who am I"
    );
    assert_library(dir.path(), &expected);
}

#[test]
fn fsck_reports_every_kind_of_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let expected = fill(dir.path());
    let clean = fsck(dir.path(), true).unwrap();
    assert!(clean.is_clean(), "{clean:?}");
    assert_eq!(clean.objects, expected.len() as u64);
    let path = |name: &str| {
        let id = expected[name].0.id;
        dir.path()
            .join("objects")
            .join(format!("{:02x}", id & 0xff))
            .join(format!("{id:016x}"))
    };
    fs::remove_file(path("show/seg1.ts")).unwrap();
    let mut f = fs::OpenOptions::new()
        .write(true)
        .open(path("show/seg0.ts"))
        .unwrap();
    f.seek(SeekFrom::Start(1000)).unwrap();
    f.write_all(b"rot").unwrap();
    drop(f);
    fs::OpenOptions::new()
        .write(true)
        .open(path("movie.bin"))
        .unwrap()
        .set_len(10)
        .unwrap();
    fs::write(dir.path().join("objects/ee/00000000000000ee"), b"orphan").unwrap();

    let r = fsck(dir.path(), true).unwrap();
    assert!(!r.is_clean());
    assert_eq!(r.missing.len(), 1, "{r:?}");
    assert!(r.missing[0].starts_with("show/seg1.ts"), "{r:?}");
    assert_eq!(r.checksum_mismatches.len(), 1, "{r:?}");
    assert!(
        r.checksum_mismatches[0].starts_with("show/seg0.ts"),
        "{r:?}"
    );
    assert_eq!(r.length_mismatches.len(), 1, "{r:?}");
    assert!(r.length_mismatches[0].starts_with("movie.bin"), "{r:?}");
    assert_eq!(r.orphans, [dir.path().join("objects/ee/00000000000000ee")]);
    // Structure only: the flipped bytes go unseen.
    let quick = fsck(dir.path(), false).unwrap();
    assert!(quick.checksum_mismatches.is_empty() && quick.bytes_checked == 0);
    // fsck never repairs: the same findings again.
    assert_eq!(fsck(dir.path(), true).unwrap().missing.len(), 1);
}

#[test]
fn a_backup_during_uploads_and_deletes_is_consistent_and_incremental() {
    let src = tempfile::tempdir().unwrap();
    let dest = tempfile::tempdir().unwrap();
    let dest = dest.path().join("backup");
    fill(src.path());
    let (store, _) = open(src.path());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (store, stop) = (Arc::clone(&store), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut round = 0u32;
            while !stop.load(Ordering::Relaxed) && round < 2000 {
                let name = format!("busy/{}.bin", round % 7);
                if round % 3 == 2 {
                    let _ = store.delete(&name);
                } else {
                    let body = vec![round as u8; 1000 + (round as usize % 5) * 10_000];
                    store.put(&name, &body, UploadOptions::default()).unwrap();
                }
                round += 1;
            }
            round
        })
    };
    let mut reports = Vec::new();
    for _ in 0..3 {
        reports.push(backup(src.path(), &dest).unwrap());
    }
    stop.store(true, Ordering::Relaxed);
    let rounds = writer.join().unwrap();
    assert!(rounds > 0);
    assert!(reports[0].linked > 0, "{:?}", reports[0]);
    assert!(
        reports[1].reused + reports[2].reused > 0,
        "later runs reuse what the destination holds: {reports:?}"
    );

    // The backup is a data directory whose catalog and files agree.
    let check = fsck(&dest, true).unwrap();
    assert!(check.is_clean(), "{check:?}");
    let (copy, recovery) = open(&dest);
    assert!(recovery.is_clean(), "{recovery:?}");
    assert_eq!(copy.len() as u64, reports[2].objects);
    for meta in copy.list() {
        copy.verify(&meta).unwrap();
    }
    // The source is untouched by all this.
    drop(copy);
    drop(store);
    assert!(fsck(src.path(), true).unwrap().is_clean());
}
