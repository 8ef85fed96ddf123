//! The data directory's object files as files: finding them, reading them whole, checking them.
//!
//! Shared by start-up recovery, fsck, scrub and backup. This module never writes and never
//! touches the catalog.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::layout::{object_path_in, LOCK_FILE};

/// What `objects/` holds: content files by id (path, length), and anything else found there.
#[derive(Debug, Default)]
pub(crate) struct ObjectFiles {
    pub by_id: HashMap<u64, (PathBuf, u64)>,
    pub unknown: Vec<PathBuf>,
}

/// Lists the content files under `objects_dir` (`<2 hex>/<16 hex>`); the fan-out directories
/// must exist.
pub(crate) fn scan_objects(objects_dir: &Path) -> Result<ObjectFiles, StoreError> {
    let mut found = ObjectFiles::default();
    for fan in 0..=0xffu64 {
        let dir = objects_dir.join(format!("{fan:02x}"));
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(StoreError::io("listing", &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| StoreError::io("listing", &dir, e))?;
            let path = entry.path();
            let parsed = entry
                .file_name()
                .to_str()
                .filter(|s| s.len() == 16)
                .and_then(|s| u64::from_str_radix(s, 16).ok())
                .filter(|id| object_path_in(objects_dir, *id) == path);
            let meta = entry
                .metadata()
                .map_err(|e| StoreError::io("reading metadata of", &path, e))?;
            match parsed {
                Some(id) if meta.is_file() => {
                    found.by_id.insert(id, (path, meta.len()));
                }
                _ => found.unknown.push(path),
            }
        }
    }
    Ok(found)
}

/// Reads the file at `path` start to end: (length, CRC-32C). `on_bytes` is told how many bytes
/// each read returned (a scrub's rate limit).
pub(crate) fn crc32c_of(
    path: &Path,
    mut on_bytes: impl FnMut(u64),
) -> Result<(u64, u32), StoreError> {
    let mut file = File::open(path).map_err(|e| StoreError::io("opening object file", path, e))?;
    let mut buf = vec![0u8; 256 << 10];
    let (mut len, mut crc) = (0u64, 0u32);
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| StoreError::io("reading object file", path, e))?;
        if n == 0 {
            return Ok((len, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        len += n as u64;
        on_bytes(n as u64);
    }
}

pub(crate) fn io<'a>(
    op: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::io(op, path, e)
}

/// `fsync` of a directory, so renames and creations inside it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing directory", dir))
}

pub(crate) fn take_lock(data_dir: &Path) -> Result<File, StoreError> {
    let path = data_dir.join(LOCK_FILE);
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io("opening lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(StoreError::Locked {
            dir: data_dir.to_path_buf(),
        }),
        Err(fs::TryLockError::Error(e)) => Err(StoreError::io("locking", path, e)),
    }
}
