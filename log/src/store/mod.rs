//! The log store: a `logd` data directory of streams, each in segment files (`log/FORMAT.md`).
//!
//! [`Store::open`] locks the directory, recovers every stream (`scan`: torn tails cut and
//! reported) and starts the writer threads (`writer`: the only code that writes segments, with
//! group commits; each stream is written by one of them, by the hash of its name). Sessions look streams up ([`Store::stream`], bounded by `streams_max`), claim
//! the one writer of a stream ([`Stream::claim_writer`]), queue appends ([`Store::append`], never
//! blocking) and read with a [`Cursor`] or [`plan_read`] (blocking reads: off the engine's
//! workers). [`Store::open_read_only`] reads a data directory without changing it, for
//! `oasis logs`, even beside a running server.
//!
//! Module map: `format` (bytes on disk, pure), `stream` (one stream's segments and durable end),
//! `scan` (recovery), `writer` (a writer thread), `read` (cursors and read plans).

mod format;
mod read;
mod scan;
mod stream;
#[cfg(test)]
mod tests;
mod writer;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

pub use format::{
    RecordHead, RECORD_BYTES_MAX, RECORD_HEAD_BYTES, SEGMENT_MAGIC, SEGMENT_VERSION, STREAMS_DIR,
};
pub use read::{plan_read, Cursor, Piece, Plan, RecordRef, Step};
pub use read::{FILE_PIECE_BYTES_MIN, PLAN_FRAME_BYTES_MAX, PLAN_STREAM_BYTES_MAX};
pub use scan::{Cut, Mode};
pub use stream::{Located, SegmentFile, Stream, WriterClaim, MARK_EVERY_BYTES};
pub use writer::WriterStats;
pub use writer::{Append, AppendDone, AppendError, AppendResult, CommitPolicy, Payload};
pub use writer::{SEGMENT_BYTES_MAX, SYNCFS_FILES_MIN};

use writer::{Writer, WriterShared};

/// The lock file a running server holds (`flock`), so two servers never share a directory.
pub const LOCK_FILE: &str = "LOCK";

/// How a store is opened.
#[derive(Clone, Debug)]
pub struct StoreConfig {
    /// The data directory.
    pub dir: PathBuf,
    /// When the writer thread syncs.
    pub commit: CommitPolicy,
    /// Streams held at most (those found at start-up are all loaded; new ones past it are
    /// refused).
    pub streams_max: usize,
    /// Appends queued for the writer at most.
    pub queue_max: usize,
    /// Segment files the writer threads hold open at most (one per stream being written; past
    /// it the least recently written is closed and opened again when needed), shared evenly
    /// between them (at least one each).
    pub tails_max: usize,
    /// Writer threads (at least 1): each writes and syncs the streams whose names hash to it.
    pub writers: usize,
}

impl StoreConfig {
    /// The defaults: a commit every 5 ms or 1 MiB, 1024 streams, 1024 queued appends, 1024
    /// segment files open for writing, 4 writer threads.
    pub fn new(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            dir: dir.into(),
            commit: CommitPolicy {
                interval: Duration::from_millis(5),
                bytes: 1 << 20,
                sync: true,
            },
            streams_max: 1024,
            queue_max: 1024,
            tails_max: 1024,
            writers: 4,
        }
    }
}

/// What start-up found.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Streams found.
    pub streams: usize,
    /// Segment files kept.
    pub segments: usize,
    /// Durable bytes held, over every stream.
    pub bytes: u64,
    /// Torn tails cut (or corrupt stretches left unindexed), one per segment that had any.
    pub cuts: Vec<Cut>,
}

/// Why a store would not open, or refused a stream.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("log data directory {dir}: {source}")]
    Io { dir: PathBuf, source: io::Error },
    #[error("log data directory {0} is in use by another logd (its LOCK file is held); give each logd a data directory of its own")]
    Locked(PathBuf),
    #[error("the server holds {0} streams, its limit ([logd] streams_max)")]
    TooManyStreams(usize),
}

/// A data directory of streams.
pub struct Store {
    dir: PathBuf,
    streams: Mutex<BTreeMap<String, Arc<Stream>>>,
    streams_max: usize,
    /// The writer threads' queues (none for a read-only store).
    writers: Vec<Arc<WriterShared>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    stats: Option<Arc<WriterStats>>,
    _lock: Option<File>,
}

/// Which of `n` writer threads writes the stream `name` (FNV-1a of the name).
fn writer_of(name: &str, n: usize) -> usize {
    let h = name.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    (h % n as u64) as usize
}

impl Store {
    /// Opens (creating if needed) and recovers a data directory, and starts its writer thread.
    pub fn open(config: StoreConfig) -> Result<(Arc<Store>, Recovery), StoreError> {
        let dir = config.dir.clone();
        let io_err = |source| StoreError::Io {
            dir: dir.clone(),
            source,
        };
        std::fs::create_dir_all(dir.join(STREAMS_DIR)).map_err(io_err)?;
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(dir.join(LOCK_FILE))
            .map_err(io_err)?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => return Err(StoreError::Locked(dir)),
            Err(std::fs::TryLockError::Error(e)) => return Err(io_err(e)),
        }
        let (streams, recovery) = load(&dir, Mode::Repair).map_err(io_err)?;
        let n = config.writers.max(1);
        let stats = Arc::new(WriterStats::default());
        let mut writers = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let shared = Arc::new(WriterShared::new(config.queue_max, Arc::clone(&stats)));
            let tails_max = (config.tails_max / n).max(1);
            let writer = Writer::new(Arc::clone(&shared), dir.clone(), config.commit, tails_max);
            let spawned = std::thread::Builder::new()
                .name(format!("oasis-logd-w{i}"))
                .spawn(move || writer.run());
            match spawned {
                Ok(t) => threads.push(t),
                Err(e) => {
                    // Those already started end before the error is returned.
                    writers.iter().for_each(|w: &Arc<WriterShared>| w.stop());
                    threads
                        .into_iter()
                        .for_each(|t: JoinHandle<()>| drop(t.join()));
                    return Err(io_err(e));
                }
            }
            writers.push(shared);
        }
        let store = Store {
            dir,
            streams: Mutex::new(streams),
            streams_max: config.streams_max,
            writers,
            threads: Mutex::new(threads),
            stats: Some(stats),
            _lock: Some(lock),
        };
        Ok((Arc::new(store), recovery))
    }

    /// Reads a data directory as it is, changing nothing (no lock, no writer: appends fail with
    /// [`AppendError::Stopped`]). Each segment ends at its last good record.
    pub fn open_read_only(dir: &Path) -> Result<(Arc<Store>, Recovery), StoreError> {
        if !dir.join(STREAMS_DIR).is_dir() {
            return Err(StoreError::Io {
                dir: dir.to_path_buf(),
                source: io::Error::new(
                    io::ErrorKind::NotFound,
                    "no streams/ directory here: not a logd data directory",
                ),
            });
        }
        let (streams, recovery) = load(dir, Mode::ReadOnly).map_err(|source| StoreError::Io {
            dir: dir.to_path_buf(),
            source,
        })?;
        let store = Store {
            dir: dir.to_path_buf(),
            streams: Mutex::new(streams),
            streams_max: usize::MAX,
            writers: Vec::new(),
            threads: Mutex::new(Vec::new()),
            stats: None,
            _lock: None,
        };
        Ok((Arc::new(store), recovery))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn lock_streams(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<Stream>>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stream `name` (a valid name: see `proto::validate_stream`), made known if it is new
    /// (in memory only: its first segment is created with its first append).
    pub fn stream(&self, name: &str) -> Result<Arc<Stream>, StoreError> {
        let mut streams = self.lock_streams();
        if let Some(s) = streams.get(name) {
            return Ok(Arc::clone(s));
        }
        if streams.len() >= self.streams_max {
            return Err(StoreError::TooManyStreams(self.streams_max));
        }
        let s = Arc::new(Stream::new(
            name.to_string(),
            format::stream_dir(&self.dir, name),
            Vec::new(),
        ));
        streams.insert(name.to_string(), Arc::clone(&s));
        Ok(s)
    }

    /// The stream `name` if the store knows it.
    pub fn find(&self, name: &str) -> Option<Arc<Stream>> {
        self.lock_streams().get(name).cloned()
    }

    /// The streams whose names start with `prefix` and that hold bytes, in name order.
    pub fn list(&self, prefix: &str) -> Vec<Arc<Stream>> {
        self.lock_streams()
            .range(prefix.to_string()..)
            .take_while(|(n, _)| n.starts_with(prefix))
            .filter(|(_, s)| !s.ranges().is_empty())
            .map(|(_, s)| Arc::clone(s))
            .collect()
    }

    /// Queues bytes for the writer thread; `a.done` hears the outcome (at once if it is
    /// refused). Never blocks on the disk.
    pub fn append(&self, a: Append) {
        if self.writers.is_empty() {
            return (a.done)(Err(AppendError::Stopped));
        }
        let w = &self.writers[writer_of(a.stream.name(), self.writers.len())];
        w.push(a);
    }

    /// The writer threads' counts (`None` for a read-only store).
    pub fn stats(&self) -> Option<&WriterStats> {
        self.stats.as_deref()
    }

    /// Stops the writer threads once what is queued is written and synced, and waits for them.
    /// Later appends fail with [`AppendError::Stopped`]. Idempotent.
    pub fn close(&self) {
        for w in &self.writers {
            w.stop();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            if t.join().is_err() {
                tracing::error!("a log writer thread panicked");
            }
        }
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        self.close();
    }
}

/// Recovers every stream of a data directory.
fn load(dir: &Path, mode: Mode) -> io::Result<(BTreeMap<String, Arc<Stream>>, Recovery)> {
    let mut streams = BTreeMap::new();
    let mut recovery = Recovery::default();
    for entry in std::fs::read_dir(dir.join(STREAMS_DIR))? {
        let entry = entry?;
        let dir_name = entry.file_name();
        let Some(name) = dir_name.to_str().and_then(format::stream_of_dir) else {
            tracing::warn!(
                "{}: not a stream's directory; ignored",
                entry.path().display()
            );
            continue;
        };
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let (segments, cuts) = scan::scan_stream(&entry.path(), &name, mode)?;
        for c in &cuts {
            let what = if c.removed {
                "cut off"
            } else {
                "left unindexed (not the last segment: corruption, not a torn write)"
            };
            tracing::warn!(
                "stream {}: {} bytes from offset {} in {} {what}: {}",
                c.stream,
                c.bytes,
                c.offset,
                c.segment.display(),
                c.why
            );
        }
        recovery.streams += 1;
        recovery.segments += segments.len();
        recovery.bytes += segments.iter().map(|s| s.end - s.start).sum::<u64>();
        recovery.cuts.extend(cuts);
        let stream = Stream::new(name.clone(), entry.path(), segments);
        streams.insert(name, Arc::new(stream));
    }
    Ok((streams, recovery))
}
