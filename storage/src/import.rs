//! Bulk import: every regular file under a directory becomes an object.
//!
//! Used by `oasis import DIR --data-dir D`. Object names are the relative paths with `/`
//! separators (plus an optional prefix); files whose names break the naming rules are skipped and
//! reported, not fatal. Playlists are imported after everything else, so their segments are
//! already stored and pick up `#EXTINF` bitrates either way.
//!
//! This module must never follow symbolic links out of the directory, never read a whole file
//! into memory, and never stop on one bad name.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::bitrate::is_playlist_name;
use crate::error::StoreError;
use crate::name::validate_name;
use crate::store::Store;
use crate::upload::UploadOptions;

/// Bytes copied per write while importing.
const IMPORT_CHUNK_BYTES: usize = 256 << 10;
/// Deepest directory nesting followed (deeper ones are reported as skipped).
const IMPORT_DEPTH_MAX: usize = 64;

/// What [`import_dir`] did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Names stored, in import order.
    pub imported: Vec<String>,
    /// Total bytes stored.
    pub imported_bytes: u64,
    /// Entries skipped, with the reason (bad name, not a regular file, too deep).
    pub skipped: Vec<(PathBuf, String)>,
}

/// Ingests every regular file under `dir` (symbolic links and special files are skipped).
/// Stops at the first storage error (no space, reservation refused, I/O), leaving what was
/// already imported in place.
pub fn import_dir(
    store: &Store,
    dir: &Path,
    prefix: Option<&str>,
) -> Result<ImportReport, StoreError> {
    let mut report = ImportReport::default();
    let mut files = Vec::new();
    walk(dir, dir, 0, &mut files, &mut report)?;
    let prefix = prefix
        .map(|p| p.trim_end_matches('/'))
        .filter(|p| !p.is_empty());
    let mut named = Vec::with_capacity(files.len());
    for (path, relative) in files {
        let name = match prefix {
            Some(p) => format!("{p}/{relative}"),
            None => relative,
        };
        match validate_name(&name) {
            Ok(()) => named.push((path, name)),
            Err(why) => report
                .skipped
                .push((path, format!("invalid object name {name:?}: {why}"))),
        }
    }
    // Segments before playlists; otherwise by name, so runs are reproducible.
    named.sort_by(|(_, a), (_, b)| (is_playlist_name(a), a).cmp(&(is_playlist_name(b), b)));
    let mut chunk = vec![0u8; IMPORT_CHUNK_BYTES];
    for (path, name) in named {
        let mut file =
            File::open(&path).map_err(|e| StoreError::io("opening file to import", &path, e))?;
        let len = file
            .metadata()
            .map_err(|e| StoreError::io("reading metadata of", &path, e))?
            .len();
        let mut upload = store.create_upload(
            &name,
            UploadOptions {
                expected_len: Some(len),
                ..Default::default()
            },
        )?;
        loop {
            let n = file
                .read(&mut chunk)
                .map_err(|e| StoreError::io("reading file to import", &path, e))?;
            if n == 0 {
                break;
            }
            upload.write_all(&chunk[..n])?;
        }
        let meta = upload.finish()?;
        report.imported_bytes += meta.size_bytes;
        report.imported.push(name);
    }
    Ok(report)
}

fn walk(
    root: &Path,
    dir: &Path,
    depth: usize,
    out: &mut Vec<(PathBuf, String)>,
    report: &mut ImportReport,
) -> Result<(), StoreError> {
    if depth > IMPORT_DEPTH_MAX {
        report.skipped.push((
            dir.to_path_buf(),
            format!("deeper than {IMPORT_DEPTH_MAX} directories"),
        ));
        return Ok(());
    }
    for entry in fs::read_dir(dir).map_err(|e| StoreError::io("listing", dir, e))? {
        let entry = entry.map_err(|e| StoreError::io("listing", dir, e))?;
        let path = entry.path();
        // file_type() does not follow symbolic links.
        let kind = entry
            .file_type()
            .map_err(|e| StoreError::io("reading type of", &path, e))?;
        if kind.is_dir() {
            walk(root, &path, depth + 1, out, report)?;
        } else if kind.is_file() {
            let relative = path
                .strip_prefix(root)
                .expect("walked paths are under the root");
            let parts: Option<Vec<&str>> = relative
                .components()
                .map(|c| c.as_os_str().to_str())
                .collect();
            match parts {
                Some(parts) => out.push((path.clone(), parts.join("/"))),
                None => report
                    .skipped
                    .push((path, "file name is not UTF-8".to_string())),
            }
        } else {
            report
                .skipped
                .push((path, "not a regular file or directory".to_string()));
        }
    }
    Ok(())
}
