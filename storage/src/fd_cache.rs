//! A bounded cache of open content files, keyed by object version id.
//!
//! Streaming a popular object must not cost an `open(2)` per request, so the hot path asks this
//! cache. It is keyed by id, not name: a replaced name gets a new id, so a cached handle can never
//! serve a mix of two versions. Each cached descriptor holds one `OpenFiles` reservation; when the
//! cache is full (or the Resource Manager says no), the least recently used entry is evicted.
//!
//! This module must never grow past its bound, and never hold its lock across a system call: the
//! `open(2)` of a miss happens outside the lock.
//!
//! With `direct` set, files are opened with `O_DIRECT` (the engine then reads them block-aligned,
//! bypassing the page cache). A file system that refuses it (`EINVAL` at open), or reports an
//! alignment the engine cannot meet, gets that file opened buffered instead, with one warning per
//! cache, not an error.
//!
//! While a critical event is in force, the cache gives back what it can: once per Resource
//! Manager epoch, [`FdCache::shrink_if_critical`] closes every cached descriptor no stream holds
//! (their `OpenFiles` reservations return with them). Handles streams hold stay cached.
//!
//! A handle handed out stays valid after eviction (it is an `Arc<File>`): the descriptor closes when
//! the last stream holding it finishes. Its `OpenFiles` reservation follows the cache slot, so a
//! handle outliving its slot is briefly not counted; the engine's per-connection reservations bound
//! how many such handles can exist.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::hash::{BuildHasherDefault, Hasher};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use oasis_engine::direct::{self, DirectSupport};
use oasis_engine::resource::{Reservation, Resource, ResourceManager};

use crate::error::StoreError;

struct Slot {
    file: Arc<File>,
    last_used_tick: u64,
    _open_file: Reservation,
}

/// Hashes a version id with one multiplication. Ids are assigned by the store, never by a
/// client, so the map needs no protection against chosen collisions, and SipHash was a
/// measurable part of every request's cache hit.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_u64(u64::from(byte));
        }
    }

    fn write_u64(&mut self, id: u64) {
        // Fibonacci hashing; the map takes its bucket from the low bits and its tag from the
        // high ones, so fold the well-mixed high half down.
        let product = (self.0 ^ id).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        self.0 = product ^ (product >> 32);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

struct Slots {
    by_id: HashMap<u64, Slot, BuildHasherDefault<IdHasher>>,
    tick: u64,
}

pub(crate) struct FdCache {
    slots: Mutex<Slots>,
    capacity: usize,
    rm: Arc<ResourceManager>,
    /// Open files with O_DIRECT.
    direct: bool,
    /// Files opened buffered although `direct` asked otherwise (the file system refused).
    direct_refused: AtomicU64,
    direct_warned: AtomicBool,
    /// The Resource Manager epoch of the last critical shrink (`u64::MAX`: none yet).
    shrunk_epoch: AtomicU64,
    shrinks: AtomicU64,
    closed_by_shrink: AtomicU64,
}

/// What critical-event shrinking did so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShrinkCounts {
    /// Shrinks done (one per critical epoch that found the cache).
    pub shrinks: u64,
    /// Descriptors closed by them.
    pub files_closed: u64,
}

impl FdCache {
    pub(crate) fn new(capacity: usize, rm: Arc<ResourceManager>, direct: bool) -> FdCache {
        assert!(capacity > 0, "the fd cache needs at least one slot");
        FdCache {
            slots: Mutex::new(Slots {
                by_id: HashMap::with_capacity_and_hasher(capacity, Default::default()),
                tick: 0,
            }),
            capacity,
            rm,
            direct,
            direct_refused: AtomicU64::new(0),
            direct_warned: AtomicBool::new(false),
            shrunk_epoch: AtomicU64::new(u64::MAX),
            shrinks: AtomicU64::new(0),
            closed_by_shrink: AtomicU64::new(0),
        }
    }

    /// Opens a content file for reading: with O_DIRECT when configured and the file system
    /// takes it, buffered otherwise.
    fn open(&self, path: &Path) -> io::Result<File> {
        if !self.direct {
            return File::open(path);
        }
        let why = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(file) => match direct::alignment(&file)? {
                DirectSupport::Aligned { .. } | DirectSupport::Unreported => return Ok(file),
                DirectSupport::Unsupported {
                    memory_align_bytes,
                    offset_align_bytes,
                } => format!(
                    "direct I/O alignment is {memory_align_bytes} (memory) / \
                     {offset_align_bytes} (offset) bytes; Oasis aligns to {}",
                    direct::DIRECT_ALIGN_BYTES
                ),
            },
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                "the file system refuses O_DIRECT".to_string()
            }
            Err(e) => return Err(e),
        };
        self.direct_refused.fetch_add(1, Ordering::Relaxed);
        if !self.direct_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                target: "oasis::storage",
                path = %path.display(),
                "read_mode = \"direct\": {why}; reading such files buffered (warned once)"
            );
        }
        File::open(path)
    }

    /// Files opened buffered because the file system refused direct I/O.
    pub(crate) fn direct_refused(&self) -> u64 {
        self.direct_refused.load(Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slots> {
        // A panic while holding this lock leaves the map consistent (every mutation is one call).
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The cached handle of version `id`, opening `path` on a miss.
    pub(crate) fn get_or_open(
        &self,
        id: u64,
        path: impl FnOnce() -> PathBuf,
        name: &str,
    ) -> Result<Arc<File>, StoreError> {
        if let Some(file) = self.hit(id) {
            return Ok(file);
        }
        let reservation = self.reserve_slot()?;
        let path = path();
        let file = match self.open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::NotFound {
                    name: name.to_string(),
                });
            }
            Err(e) => return Err(StoreError::io("opening object file", &path, e)),
        };
        Ok(self.insert(id, file, reservation))
    }

    /// Takes `file`, opened by the caller, as the handle of `id` (buffered files only: O_DIRECT
    /// opens have fallbacks only [`FdCache::get_or_open`] knows). If another thread cached one
    /// meanwhile, that one is returned and `file` is closed.
    pub(crate) fn adopt(&self, id: u64, file: File) -> Result<Arc<File>, StoreError> {
        debug_assert!(!self.direct, "adopted files are buffered");
        if let Some(existing) = self.hit(id) {
            return Ok(existing);
        }
        let reservation = self.reserve_slot()?;
        Ok(self.insert(id, file, reservation))
    }

    fn insert(&self, id: u64, file: File, reservation: Reservation) -> Arc<File> {
        let file = Arc::new(file);
        let mut slots = self.lock();
        slots.tick += 1;
        let tick = slots.tick;
        if let Some(existing) = slots.by_id.get_mut(&id) {
            // Another thread opened it meanwhile: keep one descriptor.
            existing.last_used_tick = tick;
            return Arc::clone(&existing.file);
        }
        while slots.by_id.len() >= self.capacity {
            Self::evict_lru(&mut slots);
        }
        slots.by_id.insert(
            id,
            Slot {
                file: Arc::clone(&file),
                last_used_tick: tick,
                _open_file: reservation,
            },
        );
        assert!(slots.by_id.len() <= self.capacity);
        file
    }

    /// Whether files are opened with O_DIRECT.
    pub(crate) fn direct(&self) -> bool {
        self.direct
    }

    /// The cached handle of `id`, if there is one (never opens); marks it recently used.
    pub(crate) fn hit(&self, id: u64) -> Option<Arc<File>> {
        let mut slots = self.lock();
        slots.tick += 1;
        let tick = slots.tick;
        let slot = slots.by_id.get_mut(&id)?;
        slot.last_used_tick = tick;
        Some(Arc::clone(&slot.file))
    }

    /// An `OpenFiles` reservation, evicting our own least recently used slot once if the Resource
    /// Manager is at its limit.
    fn reserve_slot(&self) -> Result<Reservation, StoreError> {
        match self.rm.reserve(Resource::OpenFiles, 1) {
            Ok(r) => Ok(r),
            Err(first) => {
                let evicted = {
                    let mut slots = self.lock();
                    Self::evict_lru(&mut slots)
                };
                if !evicted {
                    return Err(StoreError::Reserve(first));
                }
                Ok(self.rm.reserve(Resource::OpenFiles, 1)?)
            }
        }
    }

    /// Drops the least recently used slot; O(capacity), only on a miss when full.
    fn evict_lru(slots: &mut Slots) -> bool {
        let victim = slots
            .by_id
            .iter()
            .min_by_key(|(_, s)| s.last_used_tick)
            .map(|(id, _)| *id);
        match victim {
            Some(id) => slots.by_id.remove(&id).is_some(),
            None => false,
        }
    }

    /// Forgets version `id` (deleted or replaced). Holders of its handle keep reading it.
    pub(crate) fn forget(&self, id: u64) {
        self.lock().by_id.remove(&id);
    }

    pub(crate) fn len(&self) -> usize {
        self.lock().by_id.len()
    }

    /// While a critical event is in force, closes every cached descriptor that no stream holds,
    /// once per Resource Manager epoch (a new event, or a level change, allows another). Returns
    /// how many were closed. One atomic load when nothing is critical.
    pub(crate) fn shrink_if_critical(&self) -> usize {
        if !self.rm.is_critical() {
            return 0;
        }
        let epoch = self.rm.epoch();
        if self.shrunk_epoch.swap(epoch, Ordering::AcqRel) == epoch {
            return 0;
        }
        let idle: Vec<Slot> = {
            let mut slots = self.lock();
            let ids: Vec<u64> = slots
                .by_id
                .iter()
                .filter(|(_, s)| Arc::strong_count(&s.file) == 1)
                .map(|(id, _)| *id)
                .collect();
            ids.iter().filter_map(|id| slots.by_id.remove(id)).collect()
        };
        // Closed here, outside the lock (`close(2)` is a system call).
        let closed = idle.len();
        drop(idle);
        self.shrinks.fetch_add(1, Ordering::Relaxed);
        self.closed_by_shrink
            .fetch_add(closed as u64, Ordering::Relaxed);
        closed
    }

    pub(crate) fn shrink_counts(&self) -> ShrinkCounts {
        ShrinkCounts {
            shrinks: self.shrinks.load(Ordering::Relaxed),
            files_closed: self.closed_by_shrink.load(Ordering::Relaxed),
        }
    }
}
