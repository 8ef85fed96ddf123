//! Proves the fd cache gives back what it holds when a critical event is in force: with a real
//! store and a real Resource Manager, a reservation past the critical threshold makes
//! `Store::shrink_caches_if_critical` (called by the server's supervisor every tick, and by
//! `open_file`) close every cached descriptor no stream holds, once per event. It checks the
//! cache size, the `OpenFiles` account, and the process's own descriptors in `/proc/self/fd`;
//! a held handle keeps reading its object. No timing: everything happens in the calling thread.

mod support;

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use oasis_engine::resource::{Resource, ResourceManager};
use oasis_storage::{ShrinkCounts, Store, UploadOptions};
use support::*;

/// Descriptors of this process open on files under `dir`.
fn fds_under(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.unwrap().path()).ok())
        .filter(|target| target.starts_with(dir.join("objects")))
        .count()
}

/// Reserves memory until the account is past its critical threshold (95 %).
fn make_critical(rm: &Arc<ResourceManager>) -> oasis_engine::Reservation {
    let limit = rm.limit(Resource::MemoryBytes);
    let r = rm.reserve(Resource::MemoryBytes, limit / 100 * 96).unwrap();
    assert!(rm.is_critical());
    r
}

#[test]
fn critical_events_close_idle_cached_files() {
    let dir = tempfile::tempdir().unwrap();
    let rm = rm();
    let (store, _) = Store::open(config(dir.path()), Arc::clone(&rm)).unwrap();
    assert_eq!(config(dir.path()).open_files_max, 4);
    let metas: Vec<_> = (0..4u8)
        .map(|i| {
            store
                .put(&format!("f{i}.bin"), &[i; 5000], UploadOptions::default())
                .unwrap()
        })
        .collect();
    let held = store.open_file(&metas[0]).unwrap();
    for m in &metas[1..] {
        drop(store.open_file(m).unwrap());
    }
    assert_eq!(store.open_files_cached(), 4);
    assert_eq!(rm.used(Resource::OpenFiles), 4);
    assert_eq!(fds_under(dir.path()), 4);

    // Nothing critical: nothing to give back.
    assert_eq!(store.shrink_caches_if_critical(), 0);
    assert_eq!(store.open_files_cached(), 4);

    let pressure = make_critical(&rm);
    assert_eq!(store.shrink_caches_if_critical(), 3, "the three idle files");
    assert_eq!(store.open_files_cached(), 1, "the held one stays");
    assert_eq!(rm.used(Resource::OpenFiles), 1);
    assert_eq!(fds_under(dir.path()), 1);
    // Once per event.
    assert_eq!(store.shrink_caches_if_critical(), 0);
    assert_eq!(
        store.fd_cache_shrinks(),
        ShrinkCounts {
            shrinks: 1,
            files_closed: 3
        }
    );
    let mut byte = [0u8];
    held.read_exact_at(&mut byte, 4999).unwrap();
    assert_eq!(byte, [0]);

    // The event ends; files are cached again.
    drop(pressure);
    assert!(!rm.is_critical());
    for m in &metas[1..3] {
        drop(store.open_file(m).unwrap());
    }
    assert_eq!(store.open_files_cached(), 3);

    // A new event: the next open_file shrinks first, then caches what it opened.
    drop(held);
    let _pressure = make_critical(&rm);
    drop(store.open_file(&metas[3]).unwrap());
    assert_eq!(
        store.open_files_cached(),
        1,
        "three idle closed, the new one cached"
    );
    assert_eq!(
        store.fd_cache_shrinks(),
        ShrinkCounts {
            shrinks: 2,
            files_closed: 6
        }
    );
    assert_eq!(fds_under(dir.path()), 1);
}
