//! Proves that a stream which started on one version finishes on it: a handle from `open_file` on
//! v1 still reads all of v1's bytes after the name is replaced by v2 (and after v1 is deleted
//! outright), while `lookup` already answers v2. Uses real files; the handle is the cached
//! descriptor the network workers would use.

mod support;

use oasis_storage::{StoreError, UploadOptions};
use support::*;

#[test]
fn old_handle_reads_old_version_after_replace() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let v1_bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    let v1 = store
        .put("movie.ts", &v1_bytes, UploadOptions::default())
        .unwrap();
    let v1_handle = store.open_file(&v1).unwrap();

    let v2 = store
        .put("movie.ts", b"version two", UploadOptions::default())
        .unwrap();
    assert_ne!(v1.id, v2.id);
    assert_eq!(store.lookup("movie.ts").unwrap().id, v2.id);
    assert!(
        !store.object_path(&v1).exists(),
        "v1's name in objects/ is gone"
    );

    // The stream that started on v1 reads every byte of v1, not a mix.
    assert_eq!(read_handle(&v1_handle, v1.size_bytes), v1_bytes);
    // New requests get v2 from a different descriptor.
    let v2_handle = store.open_file(&store.lookup("movie.ts").unwrap()).unwrap();
    assert!(!std::sync::Arc::ptr_eq(&v1_handle, &v2_handle));
    assert_eq!(read_handle(&v2_handle, v2.size_bytes), b"version two");
    // A request that looked v1 up before the replace but opens after it gets NotFound, not v2.
    assert!(matches!(
        store.open_file(&v1),
        Err(StoreError::NotFound { .. })
    ));

    // Delete while reading: the handle keeps working.
    let v2_handle_again = store.open_file(&v2).unwrap();
    store.delete("movie.ts").unwrap();
    assert_eq!(read_handle(&v2_handle_again, v2.size_bytes), b"version two");
    assert!(store.lookup("movie.ts").is_none());
}

#[test]
fn concurrent_lookups_during_replaces_see_whole_versions() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    store
        .put("hot.ts", &[0u8; 4096], UploadOptions::default())
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|_| {
            let store = store.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut reads = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let meta = store
                        .lookup("hot.ts")
                        .expect("never missing during replaces");
                    match store.open_file(&meta) {
                        Ok(f) => {
                            let bytes = read_handle(&f, meta.size_bytes);
                            assert_eq!(
                                crc32c::crc32c(&bytes),
                                meta.crc32c,
                                "mixed or torn version"
                            );
                            assert!(bytes.iter().all(|b| *b == bytes[0]));
                            reads += 1;
                        }
                        Err(StoreError::NotFound { .. }) => {} // replaced between lookup and open
                        Err(e) => panic!("{e}"),
                    }
                }
                reads
            })
        })
        .collect();
    for v in 1..=50u8 {
        store
            .put(
                "hot.ts",
                &vec![v; 4096 + v as usize],
                UploadOptions::default(),
            )
            .unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }
    assert_eq!(store.lookup("hot.ts").unwrap().size_bytes, 4096 + 50);
}
