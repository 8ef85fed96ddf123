//! The errors of the storage crate: one typed enum, every message saying what happened and what the
//! operator can do about it.
//!
//! This module must never decide policy (retry, log level): it only describes. `Corrupted` is kept
//! apart from `Io` so a caller can tell "the disk said no" from "what is on disk is wrong".

use std::path::PathBuf;

use oasis_engine::resource::ReserveError;

use crate::catalog::CatalogError;
use crate::name::NameError;

/// Everything the Media Object Manager can fail with.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The object name breaks the naming rules; nothing was written.
    #[error(
        "invalid object name {name:?}: {why}; a name is one or more segments joined by '/' \
         (e.g. show/index.m3u8), none of them empty or exactly '.' or '..', with no control \
         characters or backslashes"
    )]
    InvalidName { name: String, why: NameError },

    /// No object has this name.
    #[error("no object named {name:?}; list the names with `oasis ls` (GET /api/objects)")]
    NotFound { name: String },

    /// The file system holding the data directory is full (ENOSPC) or the quota is exhausted
    /// (EDQUOT). The upload was discarded; stored objects are unchanged.
    #[error(
        "no space left while {op} {path}: the upload was discarded and stored objects are unchanged; \
         free space on the file system holding the data directory (or raise the quota) and retry"
    )]
    NoSpace { op: &'static str, path: PathBuf },

    /// The Resource Manager refused a reservation (disk space for an upload, an open file for the
    /// fd cache). Nothing was allocated.
    #[error("{0}; nothing was written: raise that limit in the configuration, or retry when in-flight work has finished")]
    Reserve(#[from] ReserveError),

    /// The upload announced one length and delivered another; the upload was discarded.
    #[error(
        "object {name:?}: expected {expected_bytes} bytes but got {got_bytes}; the upload was discarded, \
         resend the whole object"
    )]
    LengthMismatch {
        name: String,
        expected_bytes: u64,
        got_bytes: u64,
    },

    /// The upload's content does not have the CRC-32C it was announced with; it was discarded.
    #[error(
        "object {name:?}: expected CRC-32C {expected_crc32c:08x} but the content has \
         {got_crc32c:08x}; the upload was discarded, resend the whole object"
    )]
    ChecksumMismatch {
        name: String,
        expected_crc32c: u32,
        got_crc32c: u32,
    },

    /// The object is larger than the configured per-object limit.
    #[error("object {name:?} exceeds the limit of {limit_bytes} bytes per object; raise object_bytes_max or split it")]
    TooLarge { name: String, limit_bytes: u64 },

    /// An earlier write on this upload failed; the upload cannot continue.
    #[error("upload of {name:?} was aborted by an earlier error; start a new upload")]
    UploadAborted { name: String },

    /// What is on disk does not match what the catalog says.
    #[error("corrupted data at {path}: {what}; restore the object from its source (delete and re-upload it)")]
    Corrupted { path: PathBuf, what: String },

    /// Another process (a server or an importer) holds the data directory.
    #[error(
        "data directory {dir} is in use by another Oasis process (lock file LOCK is held); \
         stop that server or importer first, or use another data directory"
    )]
    Locked { dir: PathBuf },

    /// Any other operating-system error, with the operation and path.
    #[error("{op} {path}: {source}; check that the data directory exists, is writable and is on a healthy disk")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The catalog is damaged; the object files still describe themselves.
    #[error(
        "the catalog of {dir} is damaged ({why}); every object file carries its own record, so \
         stop the server and rebuild it with `oasis fsck --data-dir {dir} --rebuild-catalog` \
         (the damaged file is kept aside); restarting alone does not repair it"
    )]
    CatalogDamaged { dir: PathBuf, why: String },

    /// Object files carry ids the catalog never handed out: the catalog was deleted, replaced or
    /// restored from an older copy. Nothing was removed.
    #[error(
        "the catalog of {dir} is older than {files} object files in objects/ (it was deleted, \
         replaced or restored from an older copy), and starting would discard them; nothing was \
         removed. Rebuild it from the files' own records with \
         `oasis fsck --data-dir {dir} --rebuild-catalog`"
    )]
    CatalogLost { dir: PathBuf, files: u64 },

    /// The catalog (Database Manager) failed.
    #[error(transparent)]
    Catalog(CatalogError),
}

impl From<CatalogError> for StoreError {
    /// A full disk under the catalog is the same operator problem as a full disk under the content
    /// files, so it becomes [`StoreError::NoSpace`]; everything else stays a catalog error.
    fn from(e: CatalogError) -> StoreError {
        match e {
            CatalogError::Full { .. } => StoreError::NoSpace {
                op: "committing to the catalog",
                path: PathBuf::from(crate::layout::CATALOG_FILE),
            },
            other => StoreError::Catalog(other),
        }
    }
}

impl StoreError {
    /// Wraps an I/O error, turning ENOSPC/EDQUOT into [`StoreError::NoSpace`].
    pub(crate) fn io(
        op: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> StoreError {
        let path = path.into();
        if is_no_space(&source) {
            StoreError::NoSpace { op, path }
        } else {
            StoreError::Io { op, path, source }
        }
    }
}

/// True for "the disk is full" and "the quota is exhausted".
pub(crate) fn is_no_space(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
