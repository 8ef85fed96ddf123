//! The store's shared state: its configuration, the in-memory index, the committer (catalog and
//! playlist durations behind one lock) and what uploads and the store both need of them.
//!
//! Below `store` (the public API, open and recovery) and `upload` (the ingest order), which both
//! use it; it uses neither. It never takes the index lock across I/O.

use std::collections::HashMap;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use oasis_engine::resource::{Reservation, Resource, ResourceManager};

use crate::bitrate::{self, BitrateSource};
use crate::catalog::{BitrateUpdate, Catalog, ObjectMeta};
use crate::error::StoreError;
use crate::fd_cache::FdCache;
use crate::ids::{IdBlock, IDS_LOW, IDS_PER_BLOCK};
use crate::layout::object_path_in;
use crate::name;

/// Milliseconds since the Unix epoch from the system clock: what the server passes as
/// [`StoreConfig::clock_unix_ms`]. Storage code itself never calls it.
pub fn system_clock_unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// How a store is set up. Build with [`StoreConfig::new`] and adjust fields.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The data directory; created with its layout on first use.
    pub data_dir: PathBuf,
    /// Bitrate given to objects whose bitrate is neither uploaded nor derivable, bits/s.
    pub default_bitrate_bps: u64,
    /// Slots in the open-file cache (each holds one `OpenFiles` reservation). At least 1.
    pub open_files_max: usize,
    /// Open content files with O_DIRECT for serving ([`crate::Store::open_file`]); files on a file
    /// system that refuses it are opened buffered (one warning). The engine must be told too
    /// (`EngineConfig::direct_reads`).
    pub direct_reads: bool,
    /// Largest object accepted, bytes.
    pub object_bytes_max: u64,
    /// Disk space reserved at a time for uploads of unknown length, bytes. At least 1.
    pub reserve_step_bytes: u64,
    /// The clock, milliseconds since the Unix epoch (injected so storage never reads time).
    pub clock_unix_ms: fn() -> u64,
    /// Which catalog [`crate::Store::open`] opens: the data directory's SQLite file (default) or
    /// a pool's PostgreSQL database.
    pub catalog: crate::catalog::CatalogLocation,
    /// Test seam (fault injection): abort the process the `n`-th time (1-based) the given point of
    /// the commit protocol is reached. Always `None` in production; used by the crash tests to
    /// stop exactly between two steps of `FORMAT.md`'s ingest order.
    #[doc(hidden)]
    pub abort_at: Option<(FaultPoint, u64)>,
}

/// Points of the commit protocol where the crash tests can abort the process (see
/// [`StoreConfig::abort_at`]).
#[doc(hidden)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FaultPoint {
    /// Upload: the temp file is synced, not yet renamed.
    UploadSynced,
    /// Upload: renamed into `objects/`, directory synced, catalog not yet committed.
    UploadRenamed,
    /// Upload: catalog committed, index not yet swapped.
    UploadCommitted,
    /// Upload: index swapped, replaced file not yet unlinked.
    UploadIndexed,
    /// Delete: catalog committed, file not yet unlinked.
    DeleteCommitted,
}

impl FaultPoint {
    pub fn parse(s: &str) -> Option<FaultPoint> {
        Some(match s {
            "upload_synced" => FaultPoint::UploadSynced,
            "upload_renamed" => FaultPoint::UploadRenamed,
            "upload_committed" => FaultPoint::UploadCommitted,
            "upload_indexed" => FaultPoint::UploadIndexed,
            "delete_committed" => FaultPoint::DeleteCommitted,
            _ => return None,
        })
    }
}

impl StoreConfig {
    pub fn new(data_dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: data_dir.into(),
            default_bitrate_bps: 5_000_000,
            open_files_max: 256,
            direct_reads: false,
            object_bytes_max: 64 << 30,
            reserve_step_bytes: 8 << 20,
            clock_unix_ms: system_clock_unix_ms,
            catalog: crate::catalog::CatalogLocation::Sqlite,
            abort_at: None,
        }
    }
}

/// One index entry: the current version and the disk space it holds.
pub(crate) struct Entry {
    pub(crate) meta: Arc<ObjectMeta>,
    pub(crate) _disk: Option<Reservation>,
}

/// Segment durations learned from stored playlists.
#[derive(Default)]
pub(crate) struct HlsDurations {
    /// Segment object name to (playlist name, duration ms).
    segments: HashMap<String, (String, u64)>,
    /// Playlist name to the segment names it set.
    by_playlist: HashMap<String, Vec<String>>,
}

impl HlsDurations {
    pub(crate) fn duration_ms(&self, segment: &str) -> Option<u64> {
        self.segments.get(segment).map(|(_, ms)| *ms)
    }

    /// Forgets what `playlist` said; returns the segments whose duration came from it.
    pub(crate) fn forget_playlist(&mut self, playlist: &str) -> Vec<String> {
        let mut orphaned = Vec::new();
        for segment in self.by_playlist.remove(playlist).unwrap_or_default() {
            if self
                .segments
                .get(&segment)
                .is_some_and(|(p, _)| p == playlist)
            {
                self.segments.remove(&segment);
                orphaned.push(segment);
            }
        }
        orphaned
    }

    /// Replaces what `playlist` said with `entries` (already resolved to object names).
    pub(crate) fn set_playlist(&mut self, playlist: &str, entries: Vec<(String, u64)>) {
        self.forget_playlist(playlist);
        let mut names = Vec::with_capacity(entries.len());
        for (segment, ms) in entries {
            names.push(segment.clone());
            self.segments.insert(segment, (playlist.to_string(), ms));
        }
        self.by_playlist.insert(playlist.to_string(), names);
    }
}

/// State changed only by commits, behind one lock so catalog order and index order agree.
pub(crate) struct Committer {
    pub(crate) catalog: Box<dyn Catalog>,
    pub(crate) hls: HlsDurations,
}

pub(crate) struct Inner {
    pub(crate) config: StoreConfig,
    pub(crate) rm: Arc<ResourceManager>,
    pub(crate) objects_dir: PathBuf,
    pub(crate) tmp_dir: PathBuf,
    pub(crate) committer: Mutex<Committer>,
    /// Version ids reserved in the catalog ahead of use (see `ids.rs`).
    pub(crate) ids: IdBlock,
    pub(crate) index: RwLock<HashMap<String, Entry>>,
    pub(crate) fds: FdCache,
    /// How often the configured fault point was reached (test seam).
    pub(crate) fault_hits: std::sync::atomic::AtomicU64,
    /// Set once an object record could not be written (no user xattrs): warned about once.
    pub(crate) records_unsupported: std::sync::atomic::AtomicBool,
    /// Versions a scrub found corrupt (at most one per stored object).
    pub(crate) corrupt: Mutex<std::collections::HashSet<u64>>,
    /// How many `corrupt` holds: every GET asks, and while it is 0 (nearly always) the answer
    /// costs one relaxed load instead of a lock both workers would contend on.
    pub(crate) corrupt_len: std::sync::atomic::AtomicUsize,
    /// Held for the life of the store: the flock on `LOCK`.
    pub(crate) _lock: File,
}

/// The committer held by [`Store::hold_committer_for_test`].
#[doc(hidden)]
pub struct CommitterHold<'a> {
    pub(crate) _guard: MutexGuard<'a, Committer>,
}

impl Inner {
    /// Notes that the data directory's file system keeps no object records (user xattrs);
    /// warns the first time.
    pub(crate) fn records_unsupported(&self) {
        if !self
            .records_unsupported
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            tracing::warn!(
                target: "oasis::storage",
                dir = %self.config.data_dir.display(),
                "the data directory's file system keeps no user xattrs: objects carry no record of their own, \
                 so `oasis fsck --rebuild-catalog` could not recover their names; use ext4, xfs or tmpfs"
            );
        }
    }

    /// A deleted or replaced version is no longer corrupt: it is gone.
    pub(crate) fn forget_corrupt(&self, id: u64) {
        if self.corrupt_len.load(std::sync::atomic::Ordering::Relaxed) == 0 {
            return;
        }
        let mut set = self.corrupt.lock().unwrap_or_else(|e| e.into_inner());
        set.remove(&id);
        self.corrupt_len
            .store(set.len(), std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn committer(&self) -> MutexGuard<'_, Committer> {
        // A panic mid-commit is a bug; the catalog is transactional and the index is updated by
        // single insert/remove calls, so the state behind a poisoned lock is still consistent.
        self.committer.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn index_read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, Entry>> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn index_write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Entry>> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Reserves a new block of ids in the catalog (one transaction) and adds it to the block.
    /// The caller holds the committer.
    pub(crate) fn refill_ids(&self, committer: &mut Committer) -> Result<(), StoreError> {
        let ids = committer.catalog.reserve_ids(IDS_PER_BLOCK)?;
        self.ids.add(ids);
        Ok(())
    }

    /// [`Inner::refill_ids`] when few ids are left. A failure is logged, not returned: the
    /// caller's own change is committed, and an upload that finds no id refills it itself.
    pub(crate) fn refill_ids_if_low(&self, committer: &mut Committer) {
        if self.ids.left() < IDS_LOW {
            if let Err(e) = self.refill_ids(committer) {
                tracing::warn!(target: "oasis::storage", "version ids not reserved ahead (the next upload reserves them): {e}");
            }
        }
    }

    /// An id from the block, refilling it from the catalog when empty (blocking: takes the
    /// committer and runs a transaction).
    pub(crate) fn take_id_blocking(&self) -> Result<u64, StoreError> {
        if let Some(id) = self.ids.take() {
            return Ok(id);
        }
        let mut committer = self.committer();
        loop {
            if let Some(id) = self.ids.take() {
                return Ok(id);
            }
            self.refill_ids(&mut committer)?;
        }
    }

    /// The fault-injection seam: aborts the process if the configuration asks for it here.
    pub(crate) fn fault_point(&self, point: FaultPoint) {
        if let Some((at, nth)) = self.config.abort_at {
            if at == point
                && self
                    .fault_hits
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                    + 1
                    == nth
            {
                std::process::abort();
            }
        }
    }

    pub(crate) fn object_path(&self, id: u64) -> PathBuf {
        object_path_in(&self.objects_dir, id)
    }

    /// Reserves disk space for a stored object, or `None` (with a warning) if the account is full:
    /// what is already on disk is kept even when the limit was lowered.
    pub(crate) fn reserve_stored(&self, meta: &ObjectMeta) -> Option<Reservation> {
        match self.rm.reserve(Resource::DiskSpaceBytes, meta.size_bytes) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(target: "oasis::storage", name = %meta.name, "stored object not accounted: {e}");
                None
            }
        }
    }

    /// Learns segment durations from the playlist stored as `playlist` at `path`, and returns the
    /// bitrate updates for stored segments whose bitrate may be replaced. Caller holds the committer.
    pub(crate) fn learn_playlist(
        &self,
        hls: &mut HlsDurations,
        index: &HashMap<String, Entry>,
        playlist: &str,
        path: &Path,
    ) -> Vec<(String, BitrateUpdate)> {
        let base = name::parent(playlist);
        let entries: Vec<(String, u64)> = bitrate::read_playlist(path)
            .into_iter()
            .filter_map(|e| name::resolve_relative(base, &e.uri).map(|n| (n, e.duration_ms)))
            .collect();
        let mut updates = Vec::new();
        for (segment, duration_ms) in &entries {
            if let Some(entry) = index.get(segment) {
                if let Some(u) = segment_update(&entry.meta, *duration_ms) {
                    updates.push((segment.clone(), u));
                }
            }
        }
        hls.set_playlist(playlist, entries);
        updates
    }

    /// Applies bitrate updates to the catalog, then the index. A catalog failure is logged, not
    /// returned: the objects are committed, and the next start-up recomputes these values.
    pub(crate) fn apply_bitrate_updates(
        &self,
        committer: &mut Committer,
        updates: &[(String, BitrateUpdate)],
    ) -> u64 {
        if updates.is_empty() {
            return 0;
        }
        let rows: Vec<BitrateUpdate> = updates.iter().map(|(_, u)| *u).collect();
        if let Err(e) = committer.catalog.update_bitrates(&rows) {
            tracing::warn!(target: "oasis::storage", "segment bitrates not updated (recomputed at next start): {e}");
            return 0;
        }
        let mut index = self.index_write();
        let mut applied = 0;
        for (name, u) in updates {
            if let Some(entry) = index.get_mut(name).filter(|e| e.meta.id == u.id) {
                let mut meta = (*entry.meta).clone();
                meta.bitrate_bps = u.bitrate_bps;
                meta.bitrate_source = u.bitrate_source;
                entry.meta = Arc::new(meta);
                applied += 1;
            }
        }
        applied
    }

    /// The update that returns `meta` to the configured default bitrate.
    pub(crate) fn default_bitrate_update(&self, meta: &ObjectMeta) -> BitrateUpdate {
        BitrateUpdate {
            id: meta.id,
            bitrate_bps: self.config.default_bitrate_bps,
            bitrate_source: BitrateSource::Default,
        }
    }
}

/// The update that gives `meta` the bitrate implied by a playlist duration, if it is replaceable
/// and different.
fn segment_update(meta: &ObjectMeta, duration_ms: u64) -> Option<BitrateUpdate> {
    if !meta.bitrate_source.is_derived_or_default() {
        return None;
    }
    let bps = bitrate::bitrate_bps(meta.size_bytes, duration_ms)?;
    if bps == meta.bitrate_bps && meta.bitrate_source == BitrateSource::HlsExtinf {
        return None;
    }
    Some(BitrateUpdate {
        id: meta.id,
        bitrate_bps: bps,
        bitrate_source: BitrateSource::HlsExtinf,
    })
}
