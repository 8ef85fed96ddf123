//! Helpers shared by the storage integration tests: a Resource Manager with chosen limits and a
//! store on a real directory. No mocks: every test uses real files.

#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;

use oasis_engine::resource::{AccountLimits, ResourceLimits, ResourceManager};
use oasis_storage::{RecoveryReport, Store, StoreConfig, StoreError};

/// A manager whose disk space and open files limits are the given ones; the rest is generous.
pub fn rm_with(disk_space_bytes: u64, open_files: u64) -> Arc<ResourceManager> {
    let big = AccountLimits::new(1 << 40);
    ResourceManager::new(&ResourceLimits {
        memory_bytes: big,
        net_bps: Vec::new(),
        disk_read_bps: big,
        disk_space_bytes: AccountLimits::new(disk_space_bytes),
        connections: big,
        open_files: AccountLimits::new(open_files),
    })
}

pub fn rm() -> Arc<ResourceManager> {
    rm_with(1 << 40, 1024)
}

/// A fixed clock, so created times are predictable.
pub fn fixed_clock() -> u64 {
    1_700_000_000_000
}

pub fn config(dir: &Path) -> StoreConfig {
    let mut c = StoreConfig::new(dir);
    c.clock_unix_ms = fixed_clock;
    c.default_bitrate_bps = 1_234_567;
    c.open_files_max = 4;
    c.reserve_step_bytes = 64 << 10;
    c
}

/// Opens a store on `dir`. Retries `Locked` for up to two seconds: when another test thread
/// spawns a child process, the child holds a copy of every descriptor of this process (including
/// a just-dropped store's LOCK) until it calls exec, so the flock can outlive the `Store` briefly.
pub fn open(dir: &Path) -> (Arc<Store>, RecoveryReport) {
    for _ in 0..200 {
        match Store::open(config(dir), rm()) {
            Err(StoreError::Locked { .. }) => {
                std::thread::sleep(std::time::Duration::from_millis(10))
            }
            other => return other.expect("store opens"),
        }
    }
    panic!("data directory {} stayed locked", dir.display());
}

/// All bytes of a version through the store's fd cache (positional reads: the cached descriptor
/// is shared, so nobody moves its offset).
pub fn read_all(store: &Store, meta: &oasis_storage::ObjectMeta) -> Vec<u8> {
    let file = store.open_file(meta).expect("open_file");
    read_handle(&file, meta.size_bytes)
}

pub fn read_handle(file: &std::fs::File, len: u64) -> Vec<u8> {
    use std::os::unix::fs::FileExt;
    let mut out = vec![0u8; len as usize];
    file.read_exact_at(&mut out, 0).expect("read content");
    out
}

/// Names of the entries of a directory.
pub fn dir_entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Every content file under DATA/objects.
pub fn object_files(data_dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for fan in std::fs::read_dir(data_dir.join("objects")).unwrap() {
        for f in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            out.push(f.unwrap().path());
        }
    }
    out.sort();
    out
}

/// A test that cannot run on this host fails, saying why; a developer may opt out with
/// `OASIS_ALLOW_SKIP=1` (ignored when `CI` is set), so it never passes silently.
pub fn cannot_run(why: &str) {
    if std::env::var_os("OASIS_ALLOW_SKIP").is_some() && std::env::var_os("CI").is_none() {
        eprintln!("skipped (OASIS_ALLOW_SKIP is set): {why}");
        return;
    }
    panic!("this test cannot run here: {why} (set OASIS_ALLOW_SKIP=1 to skip it outside CI)");
}
pub mod pg;
