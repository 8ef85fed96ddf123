//! The Media Object Manager: the data directory, the in-memory index, recovery, replace and delete.
//!
//! [`Store`] owns one data directory (see `FORMAT.md`): content files named by version id under
//! `objects/`, uploads in progress under `tmp/`, and the catalog. Lookups are answered from an
//! in-memory index loaded at start-up (a read lock and an `Arc` clone; never SQLite); every change
//! goes file first, catalog second, index third, cleanup last, so a crash at any point leaves the
//! old state or the new one, and [`Store::open`] tidies whatever a crash left behind.
//!
//! This module must never derive a file path from an object name, never touch the catalog on the
//! lookup/open path, never read the clock itself (the configured clock is called), and never hold
//! the index lock across I/O.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, RwLock};

use oasis_engine::resource::ResourceManager;

use crate::bitrate::{self, BitrateSource};
use crate::catalog::{
    AuditQuery, AuditRecord, BitrateUpdate, Catalog, CatalogError, CatalogLocation, ObjectMeta,
    PgCatalog, SqliteCatalog, UserRecord,
};
use crate::error::StoreError;
use crate::fd_cache::{FdCache, ShrinkCounts};
use crate::files;
use crate::files::{sync_dir, take_lock};
use crate::ids::IdBlock;
use crate::inner::{Committer, CommitterHold, Entry, FaultPoint, HlsDurations, Inner, StoreConfig};
use crate::layout::{CATALOG_FILE, OBJECTS_DIR, TMP_DIR};
use crate::name::validate_name;
use crate::upload::{Upload, UploadOptions, UploadTicket};

/// Most names a [`RecoveryReport`] lists per category (counts are always exact).
pub const REPORT_NAMES_MAX: usize = 1000;

/// What [`Store::open`] found and repaired. Counts are exact; name lists are capped at
/// [`REPORT_NAMES_MAX`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Objects loaded into the index.
    pub objects_loaded: u64,
    /// Upload temp files removed (uploads interrupted by a crash).
    pub tmp_files_removed: u64,
    /// Content files with no catalog row, removed (a crash between rename and commit, or before cleanup).
    pub orphan_files_removed: u64,
    /// Catalog rows dropped because their file was missing or had the wrong size.
    pub rows_dropped: u64,
    /// Names of the objects whose rows were dropped, with the reason.
    pub rows_dropped_names: Vec<String>,
    /// Files under `objects/` whose names are not version ids; left alone.
    pub unknown_files: Vec<PathBuf>,
    /// Stored bytes that could not be reserved with the Resource Manager (its disk_space_bytes
    /// limit is below what is already stored).
    pub unreserved_bytes: u64,
    /// HLS segment bitrates corrected from their playlists.
    pub bitrates_fixed: u64,
    /// Segments whose `hls_extinf` bitrate no stored playlist supports any more (the playlist is
    /// gone or no longer lists them), returned to the default bitrate.
    pub bitrates_reset: u64,
    /// Names of those segments.
    pub bitrates_reset_names: Vec<String>,
}

impl RecoveryReport {
    /// True when nothing needed repair.
    pub fn is_clean(&self) -> bool {
        self.tmp_files_removed == 0
            && self.orphan_files_removed == 0
            && self.rows_dropped == 0
            && self.unknown_files.is_empty()
    }
}

/// The Media Object Manager of one data directory. `Send + Sync`; share it as `Arc<Store>`.
pub struct Store {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("data_dir", &self.inner.config.data_dir)
            .finish_non_exhaustive()
    }
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> StoreError + 'a {
    move |e| StoreError::io(op, path, e)
}

fn push_capped<T>(v: &mut Vec<T>, item: T) {
    if v.len() < REPORT_NAMES_MAX {
        v.push(item);
    }
}

impl Store {
    /// Opens (creating on first use) the data directory, takes its lock, opens the catalog
    /// `config.catalog` names, runs recovery and loads the index. See `FORMAT.md` for what recovery repairs.
    ///
    /// Panics if `config.open_files_max` or `config.reserve_step_bytes` is zero (a configuration
    /// bug the binary validates first).
    pub fn open(
        config: StoreConfig,
        rm: Arc<ResourceManager>,
    ) -> Result<(Arc<Store>, RecoveryReport), StoreError> {
        let location = config.catalog.clone();
        Store::open_with_catalog(config, rm, move |data_dir| match location {
            CatalogLocation::Sqlite => {
                Ok(Box::new(SqliteCatalog::open(&data_dir.join(CATALOG_FILE))?))
            }
            CatalogLocation::Postgres { url, node_id } => {
                Ok(Box::new(PgCatalog::open(&url, &node_id)?))
            }
        })
    }

    /// Like [`Store::open`], with another catalog backend: `make_catalog` is called with the data
    /// directory once the directory lock is held, and its catalog is used for everything. This is
    /// where a PostgreSQL (or remote) Database Manager plugs in; callers of the store do not change.
    pub fn open_with_catalog(
        config: StoreConfig,
        rm: Arc<ResourceManager>,
        make_catalog: impl FnOnce(&Path) -> Result<Box<dyn Catalog>, CatalogError>,
    ) -> Result<(Arc<Store>, RecoveryReport), StoreError> {
        assert!(
            config.open_files_max > 0,
            "open_files_max must be at least 1"
        );
        assert!(
            config.reserve_step_bytes > 0,
            "reserve_step_bytes must be at least 1"
        );
        let data_dir = config.data_dir.clone();
        let objects_dir = data_dir.join(OBJECTS_DIR);
        let tmp_dir = data_dir.join(TMP_DIR);
        fs::create_dir_all(&data_dir).map_err(io("creating data directory", &data_dir))?;
        let lock = take_lock(&data_dir)?;
        let mut report = RecoveryReport::default();

        for dir in [&objects_dir, &tmp_dir] {
            fs::create_dir_all(dir).map_err(io("creating directory", dir))?;
        }
        for fan in 0..=0xffu64 {
            let dir = objects_dir.join(format!("{fan:02x}"));
            fs::create_dir_all(&dir).map_err(io("creating directory", &dir))?;
        }
        sync_dir(&objects_dir)?;
        sync_dir(&data_dir)?;

        // 1. Interrupted uploads.
        for entry in fs::read_dir(&tmp_dir).map_err(io("listing", &tmp_dir))? {
            let entry = entry.map_err(io("listing", &tmp_dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io("reading type of", &path))?;
            if kind.is_dir() {
                // Not ours (uploads are plain files): report, never delete a tree.
                push_capped(&mut report.unknown_files, path);
                continue;
            }
            fs::remove_file(&path).map_err(io("removing temp file", &path))?;
            report.tmp_files_removed += 1;
        }

        // 2. The catalog.
        let damaged = |e: CatalogError| match e {
            CatalogError::Corrupt { source, .. } => StoreError::CatalogDamaged {
                dir: data_dir.clone(),
                why: source.to_string(),
            },
            other => other.into(),
        };
        let mut catalog = make_catalog(&data_dir).map_err(damaged)?;
        let records = catalog.load_all().map_err(damaged)?;

        // 3. Content files on disk: id -> length.
        let files = files::scan_objects(&objects_dir)?;
        let mut on_disk = files.by_id;
        for path in files.unknown {
            push_capped(&mut report.unknown_files, path);
        }

        // A file whose id this catalog never handed out was written under another catalog: this
        // one was lost, replaced or restored from an older copy, and removing the files as
        // orphans would lose the library.
        let next_id = catalog.peek_next_id().map_err(damaged)?;
        let foreign = on_disk.keys().filter(|id| **id >= next_id).count() as u64;
        if foreign > 0 {
            return Err(StoreError::CatalogLost {
                dir: data_dir.clone(),
                files: foreign,
            });
        }

        // 4. Rows whose file is missing or the wrong size are dropped; files with no row removed.
        let mut kept = Vec::with_capacity(records.len());
        for record in records {
            match on_disk.remove(&record.id) {
                Some((_, len)) if len == record.size_bytes => kept.push(record),
                found => {
                    let why = match &found {
                        None => "file missing".to_string(),
                        Some((_, len)) => {
                            format!("file is {len} bytes, catalog says {}", record.size_bytes)
                        }
                    };
                    catalog.remove_id(record.id)?;
                    if let Some((path, _)) = found {
                        fs::remove_file(&path)
                            .map_err(io("removing damaged object file", &path))?;
                    }
                    tracing::warn!(target: "oasis::storage", name = %record.name, id = record.id, "catalog row dropped: {why}");
                    report.rows_dropped += 1;
                    push_capped(
                        &mut report.rows_dropped_names,
                        format!("{} ({why})", record.name),
                    );
                }
            }
        }
        for (_, (path, _)) in on_disk {
            fs::remove_file(&path).map_err(io("removing orphan object file", &path))?;
            report.orphan_files_removed += 1;
        }
        sync_dir(&tmp_dir)?;

        // 5. The index, with each object's disk space reserved.
        let fds = FdCache::new(config.open_files_max, Arc::clone(&rm), config.direct_reads);
        let inner = Inner {
            config,
            rm,
            objects_dir,
            tmp_dir,
            committer: Mutex::new(Committer {
                catalog,
                hls: HlsDurations::default(),
            }),
            ids: IdBlock::new(),
            index: RwLock::new(HashMap::with_capacity(kept.len())),
            fds,
            fault_hits: std::sync::atomic::AtomicU64::new(0),
            records_unsupported: std::sync::atomic::AtomicBool::new(false),
            corrupt: Mutex::new(std::collections::HashSet::new()),
            corrupt_len: std::sync::atomic::AtomicUsize::new(0),
            _lock: lock,
        };
        {
            let mut index = inner.index_write();
            for meta in kept {
                let disk = inner.reserve_stored(&meta);
                if disk.is_none() {
                    report.unreserved_bytes += meta.size_bytes;
                }
                let meta = Arc::new(meta);
                let name = meta.name.clone();
                let previous = index.insert(name, Entry { meta, _disk: disk });
                assert!(previous.is_none(), "catalog returned a name twice");
            }
            report.objects_loaded = index.len() as u64;
        }

        // 6. Segment durations from stored playlists (sorted, so a segment named by two playlists
        //    gets the same answer every start), and bitrates a crash left stale. Then the first
        //    block of version ids, so uploads start without a transaction.
        {
            let mut committer = inner.committer();
            inner.refill_ids(&mut committer)?;
            let playlists: BTreeSet<(String, u64)> = inner
                .index_read()
                .values()
                .filter(|e| bitrate::is_playlist_name(&e.meta.name))
                .map(|e| (e.meta.name.clone(), e.meta.id))
                .collect();
            let mut updates = Vec::new();
            for (playlist, id) in playlists {
                let path = inner.object_path(id);
                let index = inner.index_read();
                updates.extend(inner.learn_playlist(&mut committer.hls, &index, &playlist, &path));
            }
            // A segment named twice keeps the last playlist's answer.
            let mut seen = HashMap::new();
            for (name, u) in updates.into_iter().rev() {
                seen.entry(u.id).or_insert((name, u));
            }
            let mut updates: Vec<(String, BitrateUpdate)> = seen.into_values().collect();
            // Playlists stored before they had a source of their own carry the default bitrate.
            updates.extend(
                inner
                    .index_read()
                    .values()
                    .filter(|e| bitrate::is_manifest_name(&e.meta.name))
                    .filter(|e| e.meta.bitrate_source != BitrateSource::Playlist)
                    .map(|e| {
                        let u = BitrateUpdate {
                            id: e.meta.id,
                            bitrate_bps: 0,
                            bitrate_source: BitrateSource::Playlist,
                        };
                        (e.meta.name.clone(), u)
                    }),
            );
            report.bitrates_fixed = inner.apply_bitrate_updates(&mut committer, &updates);

            // 7. EXTINF-derived bitrates that no stored playlist backs any more (a crash lost the
            //    reset, or a replaced playlist stopped listing the segment): back to the default.
            let resets: Vec<(String, BitrateUpdate)> = {
                let index = inner.index_read();
                let mut stale: Vec<&Entry> = index
                    .values()
                    .filter(|e| e.meta.bitrate_source == BitrateSource::HlsExtinf)
                    .filter(|e| committer.hls.duration_ms(&e.meta.name).is_none())
                    .collect();
                stale.sort_unstable_by(|a, b| a.meta.name.cmp(&b.meta.name));
                stale
                    .into_iter()
                    .map(|e| (e.meta.name.clone(), inner.default_bitrate_update(&e.meta)))
                    .collect()
            };
            report.bitrates_reset = inner.apply_bitrate_updates(&mut committer, &resets);
            if report.bitrates_reset > 0 {
                for (name, _) in &resets {
                    push_capped(&mut report.bitrates_reset_names, name.clone());
                }
                tracing::warn!(
                    target: "oasis::storage",
                    count = report.bitrates_reset,
                    first = %resets[0].0,
                    "segment bitrates from playlists that no longer list them reset to the default"
                );
            }
        }

        tracing::info!(target: "oasis::storage", dir = %inner.config.data_dir.display(), ?report, "store opened");
        Ok((
            Arc::new(Store {
                inner: Arc::new(inner),
            }),
            report,
        ))
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.inner.config.data_dir
    }

    /// Starts an upload of `name`: validates the name, reserves disk space, takes a version id
    /// (reserving more in the catalog if none is at hand), creates the temp file. Blocking.
    /// Nothing is visible until [`Upload::finish`].
    pub fn create_upload(&self, name: &str, options: UploadOptions) -> Result<Upload, StoreError> {
        let ticket = UploadTicket::new(Arc::clone(&self.inner), name, options, |inner| {
            inner.take_id_blocking().map(Some)
        })?;
        ticket.expect("a blocking id never runs out").create_file()
    }

    /// The non-blocking start of an upload, for a request path: checks the name and length,
    /// reserves disk space and memory, and takes a version id reserved in advance, without the
    /// disk or the database. `Ok(None)` when no id is at hand (reserving more takes a catalog
    /// transaction): start it with [`Store::create_upload`] off the request path instead.
    pub fn upload_ticket(
        &self,
        name: &str,
        options: UploadOptions,
    ) -> Result<Option<UploadTicket>, StoreError> {
        UploadTicket::new(Arc::clone(&self.inner), name, options, |inner| {
            Ok(inner.ids.take())
        })
    }

    /// Test seam: holds the committer, as a commit does across its fsyncs and transaction,
    /// until the guard is dropped. Commits, deletes and id reservations wait meanwhile.
    #[doc(hidden)]
    pub fn hold_committer_for_test(&self) -> CommitterHold<'_> {
        CommitterHold {
            _guard: self.inner.committer(),
        }
    }

    /// Test seam: drops the ids at hand, so the next upload must reserve more.
    #[doc(hidden)]
    pub fn empty_id_block_for_test(&self) {
        self.inner.ids.clear();
    }

    /// Stores `bytes` as `name` in one call (a convenience over [`Store::create_upload`]).
    pub fn put(
        &self,
        name: &str,
        bytes: &[u8],
        mut options: UploadOptions,
    ) -> Result<Arc<ObjectMeta>, StoreError> {
        options.expected_len.get_or_insert(bytes.len() as u64);
        let mut upload = self.create_upload(name, options)?;
        upload.write_all(bytes)?;
        upload.finish()
    }

    /// The current version of `name`. Cheap: a read lock and an `Arc` clone; never touches SQLite.
    pub fn lookup(&self, name: &str) -> Option<Arc<ObjectMeta>> {
        self.inner
            .index_read()
            .get(name)
            .map(|e| Arc::clone(&e.meta))
    }

    /// Every object, sorted by name.
    pub fn list(&self) -> Vec<Arc<ObjectMeta>> {
        self.list_prefix("")
    }

    /// The objects whose names start with `prefix`, sorted by name.
    pub fn list_prefix(&self, prefix: &str) -> Vec<Arc<ObjectMeta>> {
        let mut out: Vec<Arc<ObjectMeta>> = self
            .inner
            .index_read()
            .values()
            .filter(|e| e.meta.name.starts_with(prefix))
            .map(|e| Arc::clone(&e.meta))
            .collect();
        out.sort_unstable_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Number of stored objects.
    pub fn len(&self) -> usize {
        self.inner.index_read().len()
    }

    /// True when no object is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An open handle on the content of version `meta.id`, from the bounded fd cache. The handle
    /// keeps reading that version even if the name is replaced or deleted meanwhile. Returns
    /// `NotFound` if the version is already gone.
    pub fn open_file(&self, meta: &ObjectMeta) -> Result<Arc<File>, StoreError> {
        self.shrink_caches_if_critical();
        self.inner
            .fds
            .get_or_open(meta.id, || self.inner.object_path(meta.id), &meta.name)
    }

    /// The cached handle of version `meta.id`, if the fd cache holds one; never opens, so it
    /// never waits on the disk. A miss can be opened asynchronously: [`Store::content_path`],
    /// then [`Store::adopt_file`].
    pub fn cached_file(&self, meta: &ObjectMeta) -> Option<Arc<File>> {
        self.shrink_caches_if_critical();
        self.inner.fds.hit(meta.id)
    }

    /// The path of version `meta.id`'s content, for a caller that opens it itself (read-only)
    /// and hands the file to [`Store::adopt_file`]. `None` when content files are opened
    /// O_DIRECT: that open has fallbacks only [`Store::open_file`] knows.
    pub fn content_path(&self, meta: &ObjectMeta) -> Option<PathBuf> {
        (!self.inner.fds.direct()).then(|| self.object_path(meta))
    }

    /// Puts `file`, opened read-only from [`Store::content_path`], in the fd cache as the
    /// handle of version `meta.id` (reserving an open file first) and returns the shared handle.
    pub fn adopt_file(&self, meta: &ObjectMeta, file: File) -> Result<Arc<File>, StoreError> {
        let file = self.inner.fds.adopt(meta.id, file)?;
        // A delete or replace may have run while the caller was opening: it drops the name from
        // the index before it forgets the cached handle, so a name that no longer maps to this
        // version means the slot just filled belongs to a dead version. The caller keeps reading
        // it (as any stream that held the file before the delete), the cache lets it go.
        if self.lookup(&meta.name).map(|m| m.id) != Some(meta.id) {
            self.inner.fds.forget(meta.id);
        }
        Ok(file)
    }

    /// Number of descriptors in the fd cache (for metrics).
    pub fn open_files_cached(&self) -> usize {
        self.inner.fds.len()
    }

    /// Reacts to critical events (call it often; it is one atomic load when nothing is critical):
    /// while one is in force, once per Resource Manager epoch, the fd cache closes every
    /// descriptor no stream holds. Returns how many it closed now.
    pub fn shrink_caches_if_critical(&self) -> usize {
        let closed = self.inner.fds.shrink_if_critical();
        if closed > 0 {
            tracing::warn!(target: "oasis::storage", closed, "critical event: idle open files closed");
        }
        closed
    }

    /// What critical-event shrinking of the fd cache did since the store opened.
    pub fn fd_cache_shrinks(&self) -> ShrinkCounts {
        self.inner.fds.shrink_counts()
    }

    /// Content files opened buffered although `direct_reads` asked for O_DIRECT (the file
    /// system refused it or needs an alignment the engine does not use).
    pub fn direct_reads_refused(&self) -> u64 {
        self.inner.fds.direct_refused()
    }

    /// Where the content of `meta` lives (for tools; the server uses [`Store::open_file`]).
    pub fn object_path(&self, meta: &ObjectMeta) -> PathBuf {
        self.inner.object_path(meta.id)
    }

    /// Deletes `name`: the catalog row first (durable), then the index, then the file. Streams
    /// that already hold the file keep reading it.
    pub fn delete(&self, name: &str) -> Result<(), StoreError> {
        validate_name(name).map_err(|why| StoreError::InvalidName {
            name: name.to_string(),
            why,
        })?;
        let removed = {
            let mut committer = self.inner.committer();
            let Some(removed) = committer.catalog.remove(name)? else {
                return Err(StoreError::NotFound {
                    name: name.to_string(),
                });
            };
            self.inner.fault_point(FaultPoint::DeleteCommitted);
            let orphaned = if bitrate::is_playlist_name(name) {
                committer.hls.forget_playlist(name)
            } else {
                Vec::new()
            };
            let entry = self.inner.index_write().remove(name);
            // Segments whose bitrate came from this playlist fall back to the default.
            let resets: Vec<(String, BitrateUpdate)> = {
                let index = self.inner.index_read();
                orphaned
                    .into_iter()
                    .filter_map(|seg| {
                        let e = index.get(&seg)?;
                        (e.meta.bitrate_source == BitrateSource::HlsExtinf)
                            .then(|| (seg, self.inner.default_bitrate_update(&e.meta)))
                    })
                    .collect()
            };
            self.inner.apply_bitrate_updates(&mut committer, &resets);
            debug_assert!(
                entry.as_ref().is_some_and(|e| e.meta.id == removed.id),
                "index and catalog disagree"
            );
            removed
        };
        self.inner.fds.forget(removed.id);
        self.inner.forget_corrupt(removed.id);
        let path = self.inner.object_path(removed.id);
        if let Err(e) = fs::remove_file(&path) {
            // Committed already; the orphan is removed at the next start-up.
            tracing::warn!(target: "oasis::storage", path = %path.display(), "deleted object's file not removed: {e}");
        }
        Ok(())
    }

    /// Marks `meta` as failing its checksum (found by a scrub), while it is still the stored
    /// version of its name. True when newly marked.
    pub fn mark_corrupt(&self, meta: &ObjectMeta) -> bool {
        if self.lookup(&meta.name).is_none_or(|m| m.id != meta.id) {
            return false;
        }
        let mut set = self.inner.corrupt.lock().unwrap_or_else(|e| e.into_inner());
        let added = set.insert(meta.id);
        self.inner.corrupt_len.store(set.len(), Ordering::Relaxed);
        added
    }

    /// Whether a scrub found this version's bytes changed on disk (one atomic load while no
    /// object is corrupt).
    pub fn is_corrupt(&self, meta: &ObjectMeta) -> bool {
        self.inner.corrupt_len.load(Ordering::Relaxed) > 0
            && self
                .inner
                .corrupt
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(&meta.id)
    }

    /// How many stored objects a scrub found corrupt.
    pub fn corrupt_count(&self) -> usize {
        self.inner.corrupt_len.load(Ordering::Relaxed)
    }

    /// Reads the whole content of `meta` and checks its length and CRC-32C (for tools and tests;
    /// reads the file start to end).
    pub fn verify(&self, meta: &ObjectMeta) -> Result<(), StoreError> {
        self.verify_paced(meta, |_| {})
    }

    /// [`Store::verify`], telling `on_bytes` how many bytes each read returned (a scrub's rate
    /// limit).
    pub fn verify_paced(
        &self,
        meta: &ObjectMeta,
        on_bytes: impl FnMut(u64),
    ) -> Result<(), StoreError> {
        let path = self.object_path(meta);
        let (len, crc) = files::crc32c_of(&path, on_bytes)?;
        if len != meta.size_bytes || crc != meta.crc32c {
            return Err(StoreError::Corrupted {
                path,
                what: format!(
                    "{} bytes with crc32c {crc:08x}, catalog says {} bytes with crc32c {:08x}",
                    len, meta.size_bytes, meta.crc32c
                ),
            });
        }
        Ok(())
    }
}

/// The User Manager's accounts and the Log Manager's audit trail, kept in the catalog.
///
/// Every method here is blocking: it takes the committer (waiting for any commit in progress) and
/// runs a catalog transaction or query. Call them from job threads or tools, never on a worker
/// or anywhere a request waits.
impl Store {
    /// Every user account, sorted by name. Blocking.
    pub fn users(&self) -> Result<Vec<UserRecord>, StoreError> {
        Ok(self.inner.committer().catalog.load_users()?)
    }

    /// Inserts or replaces the user named `user.name` (one durable transaction); returns the
    /// replaced one. Blocking.
    pub fn put_user(&self, user: &UserRecord) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.inner.committer().catalog.put_user(user)?)
    }

    /// Removes the user named `name` (one durable transaction); returns it, or `None` if there
    /// was none. Blocking.
    pub fn remove_user(&self, name: &str) -> Result<Option<UserRecord>, StoreError> {
        Ok(self.inner.committer().catalog.remove_user(name)?)
    }

    /// The audit records `query` selects, oldest first (see [`AuditQuery`]). Blocking.
    pub fn query_audit(&self, query: &AuditQuery) -> Result<Vec<AuditRecord>, StoreError> {
        Ok(self.inner.committer().catalog.query_audit(query)?)
    }

    /// Appends `records` in one durable transaction; returns the first one's seq (0 when
    /// empty). Blocking; the audit writer's thread calls it.
    pub(crate) fn append_audit(&self, records: &[AuditRecord]) -> Result<u64, StoreError> {
        Ok(self.inner.committer().catalog.append_audit(records)?)
    }

    /// Deletes audit records older than `before_unix_ms`; returns how many. Blocking.
    pub(crate) fn prune_audit(&self, before_unix_ms: u64) -> Result<u64, StoreError> {
        Ok(self.inner.committer().catalog.prune_audit(before_unix_ms)?)
    }

    /// The store's configured clock, milliseconds since the Unix epoch.
    pub(crate) fn now_unix_ms(&self) -> u64 {
        (self.inner.config.clock_unix_ms)()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Store>();
        check::<Upload>();
    }
}
