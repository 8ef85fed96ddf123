//! Atomic ingest: an [`Upload`] streams bytes into a temp file and [`Upload::finish`] publishes
//! them as a new version in one crash-safe step.
//!
//! The order in `finish` is what makes a crash harmless (details in `FORMAT.md`):
//! 1. check the length, `fsync` the temp file;
//! 2. rename it to `objects/<fan>/<id>` and `fsync` that directory (a file with no row yet:
//!    recovery removes it);
//! 3. commit the catalog row in one transaction (from here the new version is the truth);
//! 4. swap the in-memory index entry;
//! 5. unlink the replaced version's file (if a crash skips it, recovery removes the orphan; open
//!    descriptors keep reading it either way).
//!
//! This module must never hold a whole object in memory, never write a byte before the disk space
//! is reserved, and never let a name choose a path.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use oasis_engine::resource::{Reservation, Resource};

use crate::bitrate::{self, BitrateSource};
use crate::catalog::ObjectMeta;
use crate::content_type::content_type_for;
use crate::error::StoreError;
use crate::files::sync_dir;
use crate::inner::{Entry, FaultPoint, Inner};
use crate::layout::TMP_SUFFIX;
use crate::name::validate_name;
use crate::record;

/// Bytes staged before each write to the temp file, at offsets that are multiples of it. The
/// page cache then holds the new object in 256 KiB folios (ext4 and other file systems with
/// large folios size them by the write) instead of the 4 KiB pages that writes of network-sized
/// pieces leave, and a hot object is cheaper to send: nginx serving the same 2 MiB objects at
/// 1000 connections measured 0.145-0.162 s of CPU per GB with 256 KiB folios, 0.171-0.185 with
/// 64 KiB ones and 0.19 with 4 KiB pages (docs/bench-log/2026-11-28-page-cache-folios-and-cold-fetch.md). It also turns the
/// upload's thousands of small writes into a few large ones.
pub(crate) const UPLOAD_WRITE_BYTES: usize = 256 << 10;

/// What the uploader knows about an object.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UploadOptions {
    /// The exact length, if known: reserved up front and checked at `finish`.
    pub expected_len: Option<u64>,
    /// The bandwidth requirement, if the uploader knows it; otherwise derived (MP4, HLS) or default.
    pub bitrate_bps: Option<u64>,
    /// The content type; otherwise from the name's extension.
    pub content_type: Option<String>,
    /// The CRC-32C the content must have (a pool replica's, from its origin): checked at
    /// `finish`, before anything is published; a mismatch discards the upload.
    pub expected_crc32c: Option<u32>,
    /// A pool copy's version id at its origin: this node's replica row carries it (see
    /// [`crate::Catalog::insert_copy`]).
    pub pool_version: Option<u64>,
}

/// An upload that has its name checked, its reservations and its version id, but no temp file
/// yet: made without the disk or the database ([`crate::Store::upload_ticket`]), so a request
/// path can take one. The caller creates the file at [`UploadTicket::path_to_create`]
/// (write-only, `O_CREAT | O_EXCL`) however it likes (the server: an io_uring OPENAT) and
/// hands it to [`UploadTicket::into_upload`]. Dropped, it releases its reservations; its id is
/// skipped.
pub struct UploadTicket {
    inner: Arc<Inner>,
    name: String,
    id: u64,
    options: UploadOptions,
    tmp_path: PathBuf,
    /// Taken by [`UploadTicket::into_upload`].
    disk: Option<Reservation>,
    staged_memory: Option<Reservation>,
    /// The path was handed out, so a file may exist there: dropped unused, it is removed.
    path_out: bool,
}

impl std::fmt::Debug for UploadTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UploadTicket")
            .field("name", &self.name)
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl UploadTicket {
    /// Checks and reserves for an upload of `name`, with `id` (taken from the block, or
    /// `None` when it is empty: then nothing is reserved and `Ok(None)` is returned).
    pub(crate) fn new(
        inner: Arc<Inner>,
        name: &str,
        options: UploadOptions,
        take_id: impl FnOnce(&Inner) -> Result<Option<u64>, StoreError>,
    ) -> Result<Option<UploadTicket>, StoreError> {
        validate_name(name).map_err(|why| StoreError::InvalidName {
            name: name.to_string(),
            why,
        })?;
        let limit_bytes = inner.config.object_bytes_max;
        let initial_bytes = match options.expected_len {
            Some(len) if len > limit_bytes => {
                return Err(StoreError::TooLarge {
                    name: name.to_string(),
                    limit_bytes,
                })
            }
            Some(len) => len,
            None => inner.config.reserve_step_bytes.min(limit_bytes),
        };
        // Reserve before anything touches the disk. With an unknown length, a refused step is
        // not an error yet: each write reserves at least what it needs before writing.
        let disk = match (
            options.expected_len,
            inner.rm.reserve(Resource::DiskSpaceBytes, initial_bytes),
        ) {
            (_, Ok(r)) => r,
            (Some(_), Err(e)) => return Err(e.into()),
            (None, Err(_)) => inner.rm.reserve(Resource::DiskSpaceBytes, 0)?,
        };
        let staged_memory = inner
            .rm
            .reserve(Resource::MemoryBytes, UPLOAD_WRITE_BYTES as u64)?;
        let Some(id) = take_id(&inner)? else {
            return Ok(None);
        };
        let tmp_path = inner.tmp_dir.join(format!("{id:016x}{TMP_SUFFIX}"));
        Ok(Some(UploadTicket {
            inner,
            name: name.to_string(),
            id,
            options,
            tmp_path,
            disk: Some(disk),
            staged_memory: Some(staged_memory),
            path_out: false,
        }))
    }

    /// The object name being uploaded.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where the temp file is to be created: write-only, `O_CREAT | O_EXCL`.
    pub fn path_to_create(&mut self) -> &Path {
        self.path_out = true;
        &self.tmp_path
    }

    /// The upload, writing to `file`, which the caller created at [`Self::path_to_create`].
    pub fn into_upload(mut self, file: File) -> Upload {
        self.path_out = false;
        Upload {
            inner: Arc::clone(&self.inner),
            name: std::mem::take(&mut self.name),
            id: self.id,
            options: std::mem::take(&mut self.options),
            tmp_path: std::mem::take(&mut self.tmp_path),
            file: Some(Arc::new(file)),
            written_bytes: 0,
            file_bytes: 0,
            crc32c: 0,
            disk: self.disk.take(),
            staged: Some(Vec::with_capacity(UPLOAD_WRITE_BYTES)),
            _staged_memory: self.staged_memory.take().expect("a ticket is used once"),
            aborted: false,
            done: false,
        }
    }

    /// The error to report when creating the temp file failed (the ticket is then dropped).
    pub fn creation_failed(&self, e: std::io::Error) -> StoreError {
        StoreError::io("creating upload temp file", &self.tmp_path, e)
    }

    /// Creates the temp file here (blocking: a metadata operation) and starts the upload.
    pub(crate) fn create_file(mut self) -> Result<Upload, StoreError> {
        let path = self.path_to_create().to_path_buf();
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| StoreError::io("creating upload temp file", &path, e))?;
        Ok(self.into_upload(file))
    }
}

impl Drop for UploadTicket {
    fn drop(&mut self) {
        if self.path_out {
            remove_abandoned(&self.tmp_path);
        }
    }
}

/// A full staged piece of an upload, to be written to `file` at `offset` (a multiple of
/// the 256 KiB staging size); the buffer goes back with [`Upload::piece_written`].
#[derive(Debug)]
pub struct Piece {
    pub file: Arc<File>,
    pub offset: u64,
    pub data: Vec<u8>,
}

/// An upload in progress. Drop it without [`Upload::finish`] to abandon it: the temp file is
/// removed and the reservation released.
///
/// Bytes go in two steps so that a server can have them written without blocking:
/// [`Upload::stage`] checks, reserves and checksums them into the staging buffer;
/// [`Upload::take_piece`] gives a full buffer out to be written, and
/// [`Upload::piece_written`] takes it back. [`Upload::write_all`] does both here (blocking).
pub struct Upload {
    inner: Arc<Inner>,
    name: String,
    id: u64,
    options: UploadOptions,
    tmp_path: PathBuf,
    file: Option<Arc<File>>,
    /// Bytes taken so far (staged or in the file): what the CRC covers.
    written_bytes: u64,
    /// Bytes in the file: where the next piece goes.
    file_bytes: u64,
    crc32c: u32,
    /// Disk space reserved for this upload; moved to the index entry at commit.
    disk: Option<Reservation>,
    /// Bytes not yet written to the file, at most `UPLOAD_WRITE_BYTES` (see there); `None`
    /// while the buffer is out being written.
    staged: Option<Vec<u8>>,
    /// The memory `staged` may use, reserved for the upload's lifetime.
    _staged_memory: Reservation,
    /// Set by a failed write: the temp file's content is unknown, so the upload cannot finish.
    aborted: bool,
    /// Set once the temp file is renamed away (or removed): nothing left for `Drop`.
    done: bool,
}

impl std::fmt::Debug for Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Upload")
            .field("name", &self.name)
            .field("id", &self.id)
            .field("written_bytes", &self.written_bytes)
            .finish_non_exhaustive()
    }
}

impl Upload {
    /// The object name being uploaded.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes taken so far.
    pub fn written_bytes(&self) -> u64 {
        self.written_bytes
    }

    /// Appends `bytes`, writing full pieces here (blocking). Any error aborts the upload (drop
    /// it; `finish` will refuse).
    pub fn write_all(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let take = self.stage_room().min(rest.len());
            self.stage(&rest[..take])?;
            rest = &rest[take..];
            if let Some(p) = self.take_piece() {
                let result = p.file.write_all_at(&p.data, p.offset);
                self.piece_written(result, p.data)?;
            }
        }
        Ok(())
    }

    /// How many bytes [`Upload::stage`] takes now: 0 while a full piece waits to be taken or
    /// is out being written.
    pub fn stage_room(&self) -> usize {
        self.staged
            .as_ref()
            .map_or(0, |s| UPLOAD_WRITE_BYTES - s.len())
    }

    /// Takes `bytes` (at most [`Upload::stage_room`]) into the staging buffer: checks the
    /// limits, grows the disk reservation first if needed, updates the CRC. Any error aborts
    /// the upload.
    pub fn stage(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        assert!(
            bytes.len() <= self.stage_room(),
            "staged past the staging buffer"
        );
        if self.aborted {
            return Err(StoreError::UploadAborted {
                name: self.name.clone(),
            });
        }
        let result = self.stage_inner(bytes);
        if result.is_err() {
            self.aborted = true;
        }
        result
    }

    fn stage_inner(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        let new_len = self.written_bytes + bytes.len() as u64;
        let limit_bytes = self.inner.config.object_bytes_max;
        if new_len > limit_bytes {
            return Err(StoreError::TooLarge {
                name: self.name.clone(),
                limit_bytes,
            });
        }
        if let Some(expected) = self.options.expected_len {
            if new_len > expected {
                return Err(StoreError::LengthMismatch {
                    name: self.name.clone(),
                    expected_bytes: expected,
                    got_bytes: new_len,
                });
            }
        }
        let disk = self
            .disk
            .as_mut()
            .expect("an upload that is not done has its reservation");
        if new_len > disk.amount() {
            let needed = new_len - disk.amount();
            let step = self.inner.config.reserve_step_bytes.max(needed);
            let room = limit_bytes - disk.amount().min(limit_bytes);
            let chunk_bytes = step.min(room).max(needed);
            if disk.grow(chunk_bytes).is_err() {
                disk.grow(needed)?;
            }
        }
        self.staged
            .as_mut()
            .expect("room was checked")
            .extend_from_slice(bytes);
        self.crc32c = crc32c::crc32c_append(self.crc32c, bytes);
        self.written_bytes = new_len;
        debug_assert!(self
            .disk
            .as_ref()
            .is_some_and(|d| d.amount() >= self.written_bytes));
        Ok(())
    }

    /// The staging buffer, when it is full, with where it goes; staging stops until
    /// [`Upload::piece_written`] returns the buffer.
    pub fn take_piece(&mut self) -> Option<Piece> {
        if self.aborted || self.staged.as_ref()?.len() < UPLOAD_WRITE_BYTES {
            return None;
        }
        let file = Arc::clone(self.file.as_ref()?);
        Some(Piece {
            file,
            offset: self.file_bytes,
            data: self.staged.take()?,
        })
    }

    /// A piece from [`Upload::take_piece`] was written (all of it, or the error that stopped
    /// it); `data` is its buffer, back for reuse. An error aborts the upload.
    pub fn piece_written(
        &mut self,
        result: std::io::Result<()>,
        mut data: Vec<u8>,
    ) -> Result<(), StoreError> {
        debug_assert!(self.staged.is_none(), "a piece came back that was not out");
        let len = data.len() as u64;
        data.clear();
        self.staged = Some(data);
        match result {
            Ok(()) => {
                self.file_bytes += len;
                Ok(())
            }
            Err(e) => {
                self.aborted = true;
                Err(StoreError::io(
                    "writing upload temp file",
                    &self.tmp_path,
                    e,
                ))
            }
        }
    }

    /// Writes what is staged (at `finish`, on the thread that commits).
    fn flush_staged(&mut self) -> Result<(), StoreError> {
        let staged = self
            .staged
            .as_mut()
            .expect("no piece is out being written at finish");
        let file = self
            .file
            .as_ref()
            .expect("an upload that is not done has its file");
        let result = file
            .write_all_at(staged, self.file_bytes)
            .map_err(|e| StoreError::io("writing upload temp file", &self.tmp_path, e));
        self.file_bytes += staged.len() as u64;
        staged.clear();
        result
    }

    /// Publishes the upload as the current version of its name (see the module docs for the
    /// order of steps) and returns its metadata.
    pub fn finish(mut self) -> Result<Arc<ObjectMeta>, StoreError> {
        if self.aborted {
            return Err(StoreError::UploadAborted {
                name: self.name.clone(),
            });
        }
        if let Some(expected) = self.options.expected_len {
            if expected != self.written_bytes {
                return Err(StoreError::LengthMismatch {
                    name: self.name.clone(),
                    expected_bytes: expected,
                    got_bytes: self.written_bytes,
                });
            }
        }
        if let Some(expected) = self.options.expected_crc32c {
            if expected != self.crc32c {
                return Err(StoreError::ChecksumMismatch {
                    name: self.name.clone(),
                    expected_crc32c: expected,
                    got_crc32c: self.crc32c,
                });
            }
        }
        let disk = self
            .disk
            .as_mut()
            .expect("an upload that is not done has its reservation");
        let excess = disk.amount() - self.written_bytes;
        disk.shrink(excess);
        if let Err(e) = self.flush_staged() {
            self.aborted = true;
            return Err(e);
        }

        // Derived metadata, from the temp file (in the page cache), outside every lock.
        let content_type = self
            .options
            .content_type
            .clone()
            .unwrap_or_else(|| content_type_for(&self.name).to_string());
        let duration_ms = if bitrate::is_mp4_name(&self.name) {
            bitrate::mp4_duration_ms(&self.tmp_path)
        } else {
            None
        };
        let known_bitrate = match self.options.bitrate_bps {
            // A playlist has no media bitrate, whatever the uploader says.
            _ if bitrate::is_manifest_name(&self.name) => Some((0, BitrateSource::Playlist)),
            Some(bps) => Some((bps, BitrateSource::Uploader)),
            None => duration_ms
                .and_then(|ms| bitrate::bitrate_bps(self.written_bytes, ms))
                .map(|bps| (bps, BitrateSource::Mp4)),
        };
        let inner = Arc::clone(&self.inner);
        let (bitrate_bps, bitrate_source) =
            known_bitrate.unwrap_or((inner.config.default_bitrate_bps, BitrateSource::Default));
        let mut meta = ObjectMeta {
            id: self.id,
            name: self.name.clone(),
            size_bytes: self.written_bytes,
            content_type,
            crc32c: self.crc32c,
            created_unix_ms: (inner.config.clock_unix_ms)(),
            bitrate_bps,
            bitrate_source,
            duration_ms,
        };

        // 1. Durable content and its record: one fsync covers the bytes and the xattr. A bitrate
        //    learnt from a playlist below is derived data and stays out of the record.
        let file = self
            .file
            .take()
            .expect("an upload that is not done has its file");
        match record::write(&file, &meta) {
            Ok(true) => {}
            Ok(false) => inner.records_unsupported(),
            Err(e) => {
                return Err(StoreError::io(
                    "writing the object record of",
                    &self.tmp_path,
                    e,
                ))
            }
        }
        file.sync_all()
            .map_err(|e| StoreError::io("syncing upload temp file", &self.tmp_path, e))?;
        drop(file);
        self.inner.fault_point(FaultPoint::UploadSynced);

        let final_path = inner.object_path(self.id);
        let mut committer = inner.committer();
        if known_bitrate.is_none() {
            let learnt = committer
                .hls
                .duration_ms(&self.name)
                .and_then(|ms| bitrate::bitrate_bps(self.written_bytes, ms));
            if let Some(bps) = learnt {
                meta.bitrate_bps = bps;
                meta.bitrate_source = BitrateSource::HlsExtinf;
            }
        }

        // 2. Content in place under its id; no row names it yet.
        fs::rename(&self.tmp_path, &final_path)
            .map_err(|e| StoreError::io("moving upload into objects", &final_path, e))?;
        self.done = true;
        let fan_dir = final_path
            .parent()
            .expect("object paths have a fan-out directory");
        if let Err(e) = sync_dir(fan_dir) {
            discard(&final_path);
            return Err(e);
        }
        inner.fault_point(FaultPoint::UploadRenamed);

        // 3. The commit point.
        let committed = match self.options.pool_version {
            Some(v) => committer.catalog.insert_copy(&meta, v),
            None => committer.catalog.insert_or_replace(&meta),
        };
        let replaced = match committed {
            Ok(replaced) => replaced,
            Err(e) => {
                discard(&final_path);
                return Err(e.into());
            }
        };
        inner.fault_point(FaultPoint::UploadCommitted);

        // 4. The index. The reservation moves from the upload to the stored object.
        let meta = Arc::new(meta);
        let disk = self.disk.take();
        let old_entry = inner.index_write().insert(
            self.name.clone(),
            Entry {
                meta: Arc::clone(&meta),
                _disk: disk,
            },
        );
        assert_eq!(
            old_entry.as_ref().map(|e| e.meta.id),
            replaced.as_ref().map(|r| r.id),
            "index and catalog disagree on the replaced version of {:?}",
            self.name
        );
        drop(old_entry);
        inner.fault_point(FaultPoint::UploadIndexed);

        // Playlists teach their segments a duration.
        if bitrate::is_playlist_name(&self.name) {
            let updates = {
                let index = inner.index_read();
                inner.learn_playlist(&mut committer.hls, &index, &self.name, &final_path)
            };
            inner.apply_bitrate_updates(&mut committer, &updates);
        }
        // Still under the committer, so this is our version, with any update a playlist naming
        // itself made; once the lock is released another upload may replace it.
        let committed = inner
            .index_read()
            .get(&self.name)
            .map(|e| Arc::clone(&e.meta))
            .unwrap_or(meta);
        debug_assert_eq!(committed.id, self.id);
        // Already under the committer: keep ids at hand for the uploads that start on workers.
        inner.refill_ids_if_low(&mut committer);
        drop(committer);

        // 5. Cleanup of the replaced version.
        if let Some(old) = replaced {
            inner.forget_corrupt(old.id);
            inner.fds.forget(old.id);
            let old_path = inner.object_path(old.id);
            if let Err(e) = fs::remove_file(&old_path) {
                tracing::warn!(target: "oasis::storage", path = %old_path.display(), "replaced version not removed (recovery will): {e}");
            }
        }
        Ok(committed)
    }
}

/// Removes a content file that never got its row; failure only leaves an orphan for recovery.
fn discard(path: &std::path::Path) {
    if let Err(e) = fs::remove_file(path) {
        tracing::warn!(target: "oasis::storage", path = %path.display(), "uncommitted object file not removed (recovery will): {e}");
    }
}

/// Removes the temp file of an abandoned upload; failure only leaves it for recovery.
fn remove_abandoned(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(target: "oasis::storage", path = %path.display(), "abandoned upload not removed (recovery will): {e}");
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        drop(self.file.take());
        remove_abandoned(&self.tmp_path);
    }
}
