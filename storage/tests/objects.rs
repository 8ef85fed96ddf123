//! Proves the basic contract of the Media Object Manager on a real directory: bytes and metadata
//! round-trip, replace gives a new version id and removes the old file, delete, sorted listing with
//! prefixes, the index is reloaded from SQLite on reopen, the data directory lock refuses a second
//! store, abandoned uploads leave nothing, length mismatches are refused, import_dir names objects
//! by relative path, and hostile names are refused (a proptest checks that no name, however
//! strange, panics the validator or yields a path outside the data directory).

mod support;

use std::path::Path;

use oasis_storage::{
    content_type_for, import_dir, validate_name, BitrateSource, Store, StoreError, UploadOptions,
    NAME_BYTES_MAX,
};
use proptest::prelude::*;
use support::*;

#[test]
fn round_trip_replace_delete_list_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let (store, report) = open(dir.path());
    assert!(report.is_clean(), "{report:?}");
    assert!(store.is_empty());

    let v1 = store
        .put(
            "show/seg00001.ts",
            b"first version",
            UploadOptions::default(),
        )
        .unwrap();
    assert_eq!(v1.size_bytes, 13);
    assert_eq!(v1.crc32c, crc32c::crc32c(b"first version"));
    assert_eq!(v1.content_type, "video/mp2t");
    assert_eq!(v1.created_unix_ms, fixed_clock());
    assert_eq!(
        (v1.bitrate_bps, v1.bitrate_source),
        (1_234_567, BitrateSource::Default)
    );
    assert_eq!(read_all(&store, &v1), b"first version");
    store.verify(&v1).unwrap();

    let opts = UploadOptions {
        bitrate_bps: Some(800_000),
        content_type: Some("text/x-test".into()),
        ..Default::default()
    };
    let other = store
        .put("show/index.m3u8", b"#EXTM3U\n", opts.clone())
        .unwrap();
    // A playlist has no media bitrate, whatever the uploader says; other objects keep theirs.
    assert_eq!(
        (other.bitrate_bps, other.bitrate_source),
        (0, BitrateSource::Playlist)
    );
    let audio = store.put("show/track.aac", b"aac", opts).unwrap();
    assert_eq!(
        (audio.bitrate_bps, audio.bitrate_source),
        (800_000, BitrateSource::Uploader)
    );
    store.delete("show/track.aac").unwrap();
    assert_eq!(other.content_type, "text/x-test");
    store.put("zzz", b"", UploadOptions::default()).unwrap();

    // Replace: new id, old file gone, lookup gives the new version.
    let v2 = store
        .put(
            "show/seg00001.ts",
            b"second, longer version",
            UploadOptions::default(),
        )
        .unwrap();
    assert!(v2.id > v1.id);
    assert_eq!(store.lookup("show/seg00001.ts").unwrap(), v2);
    assert!(
        !store.object_path(&v1).exists(),
        "replaced version's file removed"
    );
    assert_eq!(read_all(&store, &v2), b"second, longer version");

    let names: Vec<String> = store.list().iter().map(|m| m.name.clone()).collect();
    assert_eq!(names, ["show/index.m3u8", "show/seg00001.ts", "zzz"]);
    assert_eq!(store.list_prefix("show/").len(), 2);
    assert_eq!(store.list_prefix("nope").len(), 0);

    // Delete.
    store.delete("zzz").unwrap();
    assert!(store.lookup("zzz").is_none());
    assert!(matches!(
        store.delete("zzz"),
        Err(StoreError::NotFound { .. })
    ));
    assert_eq!(object_files(dir.path()).len(), 2);

    // Reopen: the index comes back from the catalog, nothing to repair.
    let before = store.list();
    drop(store);
    let (store, report) = open(dir.path());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(report.objects_loaded, 2);
    assert_eq!(store.list(), before);
    assert_eq!(
        read_all(&store, &store.lookup("show/seg00001.ts").unwrap()),
        b"second, longer version"
    );
    // Ids are never reused after reopen.
    let v3 = store.put("new", b"x", UploadOptions::default()).unwrap();
    assert!(v3.id > v2.id);
}

#[test]
fn second_store_on_same_dir_is_locked_out() {
    let dir = tempfile::tempdir().unwrap();
    let (_store, _) = open(dir.path());
    let err = Store::open(config(dir.path()), rm()).unwrap_err();
    assert!(matches!(err, StoreError::Locked { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&dir.path().display().to_string()) && msg.contains("in use"),
        "{msg}"
    );
}

#[test]
fn abandoned_and_mismatched_uploads_leave_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rm = rm_with(1 << 30, 64);
    let (store, _) = Store::open(config(dir.path()), rm.clone()).unwrap();
    let tmp = dir.path().join("tmp");

    let mut up = store
        .create_upload("a.ts", UploadOptions::default())
        .unwrap();
    up.write_all(&[7u8; 100_000]).unwrap();
    assert_eq!(dir_entries(&tmp).len(), 1);
    assert!(rm.used(oasis_engine::resource::Resource::DiskSpaceBytes) >= 100_000);
    drop(up);
    assert!(dir_entries(&tmp).is_empty(), "temp file removed on drop");
    assert_eq!(
        rm.used(oasis_engine::resource::Resource::DiskSpaceBytes),
        0,
        "reservation released"
    );
    assert!(store.lookup("a.ts").is_none());

    // Too short.
    let mut up = store
        .create_upload(
            "a.ts",
            UploadOptions {
                expected_len: Some(10),
                ..Default::default()
            },
        )
        .unwrap();
    up.write_all(b"12345").unwrap();
    let err = up.finish().unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::LengthMismatch {
                expected_bytes: 10,
                got_bytes: 5,
                ..
            }
        ),
        "{err}"
    );
    // Too long: refused at the write, before the bytes hit the disk.
    let mut up = store
        .create_upload(
            "a.ts",
            UploadOptions {
                expected_len: Some(3),
                ..Default::default()
            },
        )
        .unwrap();
    assert!(matches!(
        up.write_all(b"1234"),
        Err(StoreError::LengthMismatch { .. })
    ));
    assert!(matches!(
        up.write_all(b"1"),
        Err(StoreError::UploadAborted { .. })
    ));
    drop(up);
    // A wrong announced CRC-32C (a pool replica's) discards the upload; the right one commits.
    let mut up = store
        .create_upload(
            "c.ts",
            UploadOptions {
                expected_crc32c: Some(crc32c::crc32c(b"12345") ^ 1),
                ..Default::default()
            },
        )
        .unwrap();
    up.write_all(b"12345").unwrap();
    let err = up.finish().unwrap_err();
    assert!(matches!(err, StoreError::ChecksumMismatch { .. }), "{err}");
    assert!(err.to_string().contains("resend the whole object"), "{err}");
    let good = UploadOptions {
        expected_crc32c: Some(crc32c::crc32c(b"12345")),
        ..Default::default()
    };
    let meta = store.put("c.ts", b"12345", good).unwrap();
    store.delete(&meta.name).unwrap();
    assert!(dir_entries(&tmp).is_empty());
    assert!(store.is_empty());
    assert!(object_files(dir.path()).is_empty());

    // Stored objects keep their reservation; deleting returns it.
    let meta = store
        .put("b.bin", &[1u8; 5000], UploadOptions::default())
        .unwrap();
    assert_eq!(
        rm.used(oasis_engine::resource::Resource::DiskSpaceBytes),
        5000
    );
    store.delete(&meta.name).unwrap();
    assert_eq!(rm.used(oasis_engine::resource::Resource::DiskSpaceBytes), 0);
}

#[test]
fn fd_cache_is_bounded_and_reuses_descriptors() {
    let dir = tempfile::tempdir().unwrap();
    let rm = rm_with(1 << 30, 64);
    let (store, _) = Store::open(config(dir.path()), rm.clone()).unwrap();
    let metas: Vec<_> = (0..10)
        .map(|i| {
            store
                .put(&format!("o{i}"), &[i as u8; 10], UploadOptions::default())
                .unwrap()
        })
        .collect();
    let a = store.open_file(&metas[0]).unwrap();
    let b = store.open_file(&metas[0]).unwrap();
    assert!(
        std::sync::Arc::ptr_eq(&a, &b),
        "a hit returns the cached descriptor"
    );
    for m in &metas {
        assert_eq!(
            read_all(&store, m),
            vec![m.name[1..].parse::<u8>().unwrap(); 10]
        );
        assert!(store.open_files_cached() <= 4);
    }
    assert_eq!(store.open_files_cached(), 4);
    assert_eq!(rm.used(oasis_engine::resource::Resource::OpenFiles), 4);
}

#[test]
fn import_dir_names_objects_by_relative_path() {
    let src = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(src.path().join("show/hi")).unwrap();
    std::fs::write(
        src.path().join("show/index.m3u8"),
        "#EXTM3U\n#EXTINF:2.0,\nhi/s1.ts\n",
    )
    .unwrap();
    std::fs::write(src.path().join("show/hi/s1.ts"), vec![0u8; 1000]).unwrap();
    std::fs::write(src.path().join("top.mp4"), b"not really mp4").unwrap();
    std::fs::write(src.path().join("bad\\name"), b"x").unwrap();
    std::os::unix::fs::symlink("/etc/passwd", src.path().join("link")).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let report = import_dir(&store, src.path(), Some("lib/")).unwrap();
    let mut imported = report.imported.clone();
    imported.sort();
    assert_eq!(
        imported,
        ["lib/show/hi/s1.ts", "lib/show/index.m3u8", "lib/top.mp4"]
    );
    assert_eq!(report.imported_bytes, 1000 + 30 + 14);
    assert_eq!(report.skipped.len(), 2, "{:?}", report.skipped);
    let seg = store.lookup("lib/show/hi/s1.ts").unwrap();
    assert_eq!(
        (seg.bitrate_bps, seg.bitrate_source),
        (4000, BitrateSource::HlsExtinf)
    );
    assert_eq!(
        store.lookup("lib/top.mp4").unwrap().bitrate_source,
        BitrateSource::Default
    );
}

#[test]
fn hostile_names_are_refused_with_a_typed_error() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let long = "x".repeat(NAME_BYTES_MAX + 1);
    for name in [
        "",
        "/etc/passwd",
        "a/",
        "a//b",
        "..",
        "../escape",
        "a/./b",
        "nul\0",
        "tab\tx",
        "back\\slash",
        &long,
    ] {
        match store.create_upload(name, UploadOptions::default()) {
            Err(StoreError::InvalidName { name: n, .. }) => assert_eq!(n, name),
            other => panic!("{name:?} gave {other:?}"),
        }
        assert!(matches!(
            store.delete(name),
            Err(StoreError::InvalidName { .. })
        ));
    }
    assert!(dir_entries(&dir.path().join("tmp")).is_empty());
    assert_eq!(content_type_for("x.m3u8"), "application/vnd.apple.mpegurl");
}

fn is_inside(data_dir: &Path, path: &Path) -> bool {
    // Object paths are built from ids only, so they are lexically under data_dir with no `..`.
    path.starts_with(data_dir)
        && path
            .components()
            .all(|c| !matches!(c, std::path::Component::ParentDir))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_names_never_escape_or_panic(name in prop_oneof![
        any::<String>(),
        "[a-z./\\\\\\x00-\\x1f]{0,40}",
        proptest::collection::vec(prop_oneof![Just(".."), Just("."), Just(""), Just("a"), Just("/"), Just("\\")], 0..8)
            .prop_map(|v| v.join("/")),
    ]) {
        let valid = validate_name(&name).is_ok();
        let dir = DIR.with(|d| d.path().to_path_buf());
        STORE.with(|store| {
            match store.put(&name, name.as_bytes(), UploadOptions::default()) {
                Ok(meta) => {
                    prop_assert!(valid);
                    prop_assert!(is_inside(&dir, &store.object_path(&meta)));
                    prop_assert_eq!(read_all(store, &meta), name.as_bytes().to_vec());
                }
                Err(StoreError::InvalidName { .. }) => prop_assert!(!valid),
                Err(e) => prop_assert!(false, "unexpected error {}", e),
            }
            Ok(())
        })?;
        for f in object_files(&dir) {
            prop_assert!(is_inside(&dir, &f));
        }
    }
}

thread_local! {
    static DIR: tempfile::TempDir = tempfile::tempdir().unwrap();
    static STORE: std::sync::Arc<Store> = DIR.with(|d| open(d.path()).0);
}

#[test]
fn uploads_in_odd_pieces_round_trip_and_stage_memory_only_while_open() {
    use oasis_engine::Resource;
    let dir = tempfile::tempdir().unwrap();
    let rm = rm();
    let (store, _) = Store::open(config(dir.path()), std::sync::Arc::clone(&rm)).unwrap();
    let data: Vec<u8> = (0..(3 << 20) + 12_345u32)
        .map(|i| (i * 7 % 253) as u8)
        .collect();
    // Pieces smaller than, straddling and larger than the 256 KiB staging size.
    for piece in [4096usize, 100_003, 262_144, 700_001] {
        let name = format!("odd/{piece}.bin");
        let mut up = store
            .create_upload(&name, UploadOptions::default())
            .unwrap();
        assert!(
            rm.used(Resource::MemoryBytes) >= 256 << 10,
            "an open upload reserves its staging memory"
        );
        for part in data.chunks(piece) {
            up.write_all(part).unwrap();
        }
        let meta = up.finish().unwrap();
        assert_eq!(rm.used(Resource::MemoryBytes), 0, "released at finish");
        assert_eq!(meta.size_bytes, data.len() as u64);
        assert_eq!(meta.crc32c, crc32c::crc32c(&data));
        assert!(read_all(&store, &meta) == data, "content of {name}");
        store.verify(&meta).unwrap();
    }
    let mut up = store
        .create_upload("odd/abandoned", UploadOptions::default())
        .unwrap();
    up.write_all(&data[..1000]).unwrap();
    drop(up);
    assert_eq!(rm.used(Resource::MemoryBytes), 0, "released when abandoned");
}
