//! `oasis backup`: a consistent copy of a data directory, taken while its server runs.
//!
//! The catalog is copied first, as one snapshot (SQLite `VACUUM INTO`, a read transaction beside
//! the server's writers in WAL mode). Then every object the snapshot names is hard-linked into the
//! destination (content files never change once committed, so a link is a copy), or copied with
//! its record where the destination is on another file system. An object deleted or replaced
//! between the snapshot and its link is dropped from the copied catalog, so the backup is always
//! a state where catalog and files agree. A second run into the same destination reuses the files
//! it already holds (ids are never reused, so same id means same bytes) and removes the ones the
//! new snapshot no longer names. The destination is a data directory: serve it with
//! `--data-dir`. This module never writes to the source.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use xattr::FileExt;

use crate::catalog::{Catalog, SqliteCatalog};
use crate::error::StoreError;
use crate::files::{scan_objects, sync_dir, take_lock};
use crate::layout::{object_path_in, CATALOG_FILE, OBJECTS_DIR, TMP_DIR};
use crate::record::RECORD_XATTR;

/// What a backup did.
#[derive(Debug, Default)]
pub struct BackupReport {
    /// Objects in the backup's catalog.
    pub objects: u64,
    /// Files hard-linked from the source.
    pub linked: u64,
    /// Files copied (another file system), and their bytes.
    pub copied: u64,
    pub copied_bytes: u64,
    /// Files an earlier backup into the same destination already held.
    pub reused: u64,
    /// Objects deleted or replaced in the source during the backup, left out of it.
    pub vanished: u64,
    /// Files of an earlier backup that the new one no longer names, removed.
    pub removed: u64,
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |e| StoreError::io(op, path, e)
}

/// Backs `source` (a data directory, served or not) up into `dest` (created if needed; locked
/// for the duration, so no server may run on it meanwhile).
pub fn backup(source: &Path, dest: &Path) -> Result<BackupReport, StoreError> {
    let mut report = BackupReport::default();
    let src_catalog = source.join(CATALOG_FILE);
    if !src_catalog.exists() {
        return Err(StoreError::io(
            "reading the catalog",
            &src_catalog,
            io::Error::new(
                io::ErrorKind::NotFound,
                "no catalog: is this a data directory?",
            ),
        ));
    }
    fs::create_dir_all(dest).map_err(io_err("creating", dest))?;
    let _lock = take_lock(dest)?;
    let dest_objects = dest.join(OBJECTS_DIR);
    for fan in 0..=0xffu64 {
        let dir = dest_objects.join(format!("{fan:02x}"));
        fs::create_dir_all(&dir).map_err(io_err("creating", &dir))?;
    }
    let tmp = dest.join(TMP_DIR);
    fs::create_dir_all(&tmp).map_err(io_err("creating", &tmp))?;

    // 1. The catalog snapshot, beside the destination's current catalog until the end.
    let snapshot = tmp.join("catalog.backup");
    let _ = fs::remove_file(&snapshot);
    snapshot_catalog(&src_catalog, &snapshot)?;
    let mut catalog = SqliteCatalog::open(&snapshot)?;
    let rows = catalog.load_all()?;

    // 2. The files it names.
    let src_objects = source.join(OBJECTS_DIR);
    let mut held = scan_objects(&dest_objects)?.by_id;
    for row in &rows {
        let to = object_path_in(&dest_objects, row.id);
        if let Some((_, len)) = held.remove(&row.id) {
            if len == row.size_bytes {
                report.reused += 1;
                continue;
            }
            fs::remove_file(&to).map_err(io_err("replacing", &to))?;
        }
        let from = object_path_in(&src_objects, row.id);
        match fs::hard_link(&from, &to) {
            Ok(()) => report.linked += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                // Deleted or replaced since the snapshot: the backup shows it deleted.
                catalog.remove_id(row.id)?;
                report.vanished += 1;
            }
            Err(e) if e.raw_os_error() == Some(libc::EXDEV) => match copy_object(&from, &to) {
                Ok(bytes) => {
                    report.copied += 1;
                    report.copied_bytes += bytes;
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    catalog.remove_id(row.id)?;
                    report.vanished += 1;
                }
                Err(e) => return Err(StoreError::io("copying", &from, e)),
            },
            Err(e) => return Err(StoreError::io("linking", &from, e)),
        }
    }
    report.objects = rows.len() as u64 - report.vanished;

    // 3. Files of an earlier backup that this one does not name.
    for (_, (path, _)) in held {
        fs::remove_file(&path).map_err(io_err("removing", &path))?;
        report.removed += 1;
    }
    for fan in 0..=0xffu64 {
        sync_dir(&dest_objects.join(format!("{fan:02x}")))?;
    }

    // 4. The files are durable: the new catalog takes the old one's place.
    drop(catalog);
    for suffix in ["-wal", "-shm"] {
        let stale = dest.join(format!("{CATALOG_FILE}{suffix}"));
        let _ = fs::remove_file(&stale);
        let _ = fs::remove_file(tmp.join(format!("catalog.backup{suffix}")));
    }
    File::open(&snapshot)
        .and_then(|f| f.sync_all())
        .map_err(io_err("syncing", &snapshot))?;
    let target = dest.join(CATALOG_FILE);
    fs::rename(&snapshot, &target).map_err(io_err("installing the catalog", &target))?;
    sync_dir(&tmp)?;
    sync_dir(dest)?;
    Ok(report)
}

/// One consistent copy of the catalog at `from` into the new file `to`.
fn snapshot_catalog(from: &Path, to: &Path) -> Result<(), StoreError> {
    let failed = |e: rusqlite::Error| {
        StoreError::io(
            "taking a snapshot of the catalog",
            from,
            io::Error::other(e.to_string()),
        )
    };
    let conn =
        rusqlite::Connection::open_with_flags(from, rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE)
            .map_err(failed)?;
    conn.busy_timeout(std::time::Duration::from_secs(30))
        .map_err(failed)?;
    let to = to.to_str().ok_or_else(|| {
        StoreError::io(
            "taking a snapshot of the catalog into",
            PathBuf::from(to),
            io::Error::new(io::ErrorKind::InvalidInput, "the path is not UTF-8"),
        )
    })?;
    conn.execute("VACUUM INTO ?1", [to]).map_err(failed)?;
    Ok(())
}

/// Copies a content file and its record, durably; returns its length.
fn copy_object(from: &Path, to: &Path) -> io::Result<u64> {
    let mut src = File::open(from)?;
    let part = to.with_extension("part");
    let mut dst = File::create(&part)?;
    let bytes = io::copy(&mut src, &mut dst)?;
    if let Some(record) = src.get_xattr(RECORD_XATTR)? {
        dst.set_xattr(RECORD_XATTR, &record)?;
    }
    dst.sync_all()?;
    fs::rename(&part, to)?;
    Ok(bytes)
}
