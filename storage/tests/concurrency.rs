//! Proves that the store is safe to share between threads: several writer threads put, replace and
//! delete the same few names at once while reader threads look up and read them. Afterwards the
//! in-memory index equals what a reopen loads from the catalog, every object verifies against its
//! CRC, and there is exactly one content file per object (no leaked or missing files). Readers
//! only ever see whole versions.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use oasis_storage::{StoreError, UploadOptions};
use support::*;

const NAMES: [&str; 5] = ["a.ts", "b.ts", "show/c.ts", "show/index.m3u8", "d.mp4"];

#[test]
fn writers_and_readers_share_one_store() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path());
    let stop = Arc::new(AtomicBool::new(false));

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (store, stop) = (store.clone(), stop.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for name in NAMES {
                        let Some(meta) = store.lookup(name) else {
                            continue;
                        };
                        match store.open_file(&meta) {
                            Ok(f) => {
                                let bytes = read_handle(&f, meta.size_bytes);
                                assert_eq!(
                                    crc32c::crc32c(&bytes),
                                    meta.crc32c,
                                    "{name}: torn version"
                                );
                            }
                            Err(StoreError::NotFound { .. }) => {} // replaced between lookup and open
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
            })
        })
        .collect();

    let writers: Vec<_> = (0..3u64)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                for i in 0..40u64 {
                    let name = NAMES[((t * 7 + i * 3) % NAMES.len() as u64) as usize];
                    if (t + i) % 6 == 0 {
                        match store.delete(name) {
                            Ok(()) | Err(StoreError::NotFound { .. }) => {}
                            Err(e) => panic!("{e}"),
                        }
                    } else {
                        let body = vec![(t * 40 + i) as u8; (1 + i * 997 % 20_000) as usize];
                        let text;
                        let bytes: &[u8] = if name.ends_with(".m3u8") {
                            text = format!(
                                "#EXTM3U\n#EXTINF:{}.0,\na.ts\n#EXTINF:2,\nc.ts\n",
                                1 + i % 5
                            );
                            text.as_bytes()
                        } else {
                            &body
                        };
                        store.put(name, bytes, UploadOptions::default()).unwrap();
                    }
                }
            })
        })
        .collect();
    for w in writers {
        w.join().unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().unwrap();
    }

    let in_memory = store.list();
    for meta in &in_memory {
        store.verify(meta).unwrap();
    }
    assert_eq!(object_files(dir.path()).len(), in_memory.len());
    drop(store);
    let (store, report) = open(dir.path());
    assert!(report.is_clean(), "{report:?}");
    assert_eq!(store.list(), in_memory, "index and catalog agree");
}
