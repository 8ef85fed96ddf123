//! A writer thread: the only thread of a `logd` that writes its streams' segment files (a store
//! has a few, each with the streams whose names hash to it, so page-cache copies and syncs of
//! different streams run side by side). It appends and makes them durable in group commits.
//!
//! Sessions never touch a file: they queue an [`Append`] (bounded: `queue_max` appends; a server
//! has at most one in flight per connection, see `server/`) and get its outcome through the
//! append's `done` callback, called exactly once, from the writer thread (or at once, from the
//! caller's, when the queue is full or the store is stopping). An append's records go into the
//! stream's last segment file (a new one when a connection's first append jumps past the
//! stream's end, when the stream has none, or when the last passed [`SEGMENT_BYTES_MAX`]). Once
//! what is queued is written, a commit runs if an append waits for it (group commit: what comes
//! during its sync joins the next), or `commit_interval` after the first write not yet synced, or
//! once `commit_bytes` are unsynced: each written file gets an `fdatasync` (or, for
//! [`SYNCFS_FILES_MIN`] files or more, their file system one `syncfs`), then each stream's new
//! durable end is published, then the waiting appends' callbacks run with it. An append that
//! does not wait ([`Append::durable`] false) is answered when written, with the durable end as
//! it is.
//!
//! A failed write (ENOSPC above all) cuts the file back to where that append began, so nothing
//! partial stays, and the append alone fails; a failed sync cuts the stream back to its last
//! durable end and fails every append of the stream waiting for it. Either way the thread goes on
//! serving other streams and later appends.
//!
//! The last segment of each stream being written is held open (its "tail"), at most
//! `tails_max` of them: past that the least recently written clean tail is closed (after a
//! commit, if every tail has bytes not yet synced), so a server with more streams than
//! descriptors to spare still takes them all.

use std::collections::{HashMap, VecDeque};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::format::{segment_file_name, segment_head, RecordHead, RECORD_BYTES_MAX};
use super::format::{RECORD_HEAD_BYTES, STREAMS_DIR};
use super::stream::{mark, Segment, SegmentFile, Stream};
use oasis_engine::syncfs::syncfs;

/// A segment this long gets no more records: the next append starts a new one.
pub const SEGMENT_BYTES_MAX: u64 = 1 << 30;
/// A commit of this many files or more flushes their file system with one `syncfs` rather than
/// `fdatasync` each (each of which flushes the device's cache: 2,000 files took 340 ms one by
/// one and 35-65 ms by `syncfs` on the development VM). Fewer files are synced one by one, so a
/// few busy streams do not flush what else the file system holds.
pub const SYNCFS_FILES_MIN: usize = 16;

/// A run of a stream's bytes and its CRC-32C: one record (a longer one, several).
#[derive(Debug)]
pub struct Payload {
    /// The bytes.
    pub bytes: Vec<u8>,
    /// Their CRC-32C (a `DATA` frame's decoder computed it already).
    pub crc: u32,
}

impl Payload {
    /// `bytes` with their CRC-32C computed.
    pub fn new(bytes: Vec<u8>) -> Payload {
        let crc = crc32c::crc32c(&bytes);
        Payload { bytes, crc }
    }
}

/// Bytes of a stream to append at `offset`, and who hears how it went.
pub struct Append {
    /// The stream appended to.
    pub stream: Arc<Stream>,
    /// The stream offset of the first byte (the stream's end, or past it to start a segment).
    pub offset: u64,
    /// The bytes, one record per payload (a payload over 1 MiB is split). None: a wait for the
    /// stream's bytes written up to `offset` to be durable (answered at the next commit, or at
    /// once if they are; [`AppendError::Unexpected`] if a failed commit cut them off).
    pub payloads: Vec<Payload>,
    /// Answer once the bytes are durable (`true`), or as soon as they are written (`false`: a
    /// shipper with more to send hands its next batch meanwhile, and learns of the commit from a
    /// later answer). A commit that fails cuts the stream back to its durable end either way.
    pub durable: bool,
    /// The first append of a shipper's connection: it may start a segment past the stream's
    /// end (the bytes between are another server's). Any other append must continue the stream
    /// where it ends, or it is refused ([`AppendError::Unexpected`]): after a failed commit cut
    /// written bytes off, a connection's next batch must not leave a hole behind it.
    pub opens: bool,
    /// Called once with the outcome: `Ok(the stream's durable end)` then.
    pub done: AppendDone,
}

/// The outcome of an [`Append`]: the stream's durable end when it was answered.
pub type AppendResult = Result<u64, AppendError>;

/// Who hears an append's outcome.
pub type AppendDone = Box<dyn FnOnce(AppendResult) + Send>;

/// Why an append was not made durable. Nothing of it is kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// The stream's next offset is `expect`, not the append's (nothing was written).
    #[error("offset {offset} is not the stream's next ({expect})")]
    Unexpected { offset: u64, expect: u64 },
    /// The file system is full (or over quota).
    #[error("the disk is full: {0}")]
    DiskFull(String),
    /// Another write or sync error.
    #[error("cannot write the stream: {0}")]
    Io(String),
    /// The queue of appends is at its bound.
    #[error("the log server has {0} appends queued, its limit")]
    Busy(usize),
    /// The store is stopping (or was opened read-only).
    #[error("the log store takes no appends (stopping or read-only)")]
    Stopped,
}

impl AppendError {
    fn from_io(e: &io::Error) -> AppendError {
        match e.kind() {
            io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => {
                AppendError::DiskFull(e.to_string())
            }
            _ => AppendError::Io(e.to_string()),
        }
    }
}

/// When the writer syncs.
#[derive(Clone, Copy, Debug)]
pub struct CommitPolicy {
    /// At most this long from a write to its sync (an append that waits for durability is
    /// synced as soon as it is written).
    pub interval: Duration,
    /// Sync as soon as this many bytes are unsynced.
    pub bytes: u64,
    /// `fdatasync` the written files at each commit. Without, a commit only publishes what was
    /// written (the page cache): it survives the server's crash, not the machine's.
    pub sync: bool,
}

/// Counts since start-up, over every writer thread of a store, for logs and tests.
#[derive(Debug, Default)]
pub struct WriterStats {
    /// Appends written.
    pub appends: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// `fdatasync`s (one per file written in a commit).
    pub syncs: AtomicU64,
    /// Appends that failed (not counted above).
    pub failed: AtomicU64,
    /// Segment files the writer threads hold open now.
    pub tails_open: AtomicU64,
}

struct Inbox {
    queue: VecDeque<Append>,
    stopping: bool,
}

/// What the store and the writer thread share.
pub(crate) struct WriterShared {
    inbox: Mutex<Inbox>,
    wake: Condvar,
    queue_max: usize,
    /// Counts since start-up (shared by a store's writer threads).
    pub stats: Arc<WriterStats>,
}

impl WriterShared {
    /// An empty queue of at most `queue_max` appends, counting into `stats`.
    pub fn new(queue_max: usize, stats: Arc<WriterStats>) -> WriterShared {
        WriterShared {
            inbox: Mutex::new(Inbox {
                queue: VecDeque::new(),
                stopping: false,
            }),
            wake: Condvar::new(),
            queue_max,
            stats,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inbox> {
        self.inbox.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues an append, or fails it at once (queue full, stopping). Never blocks on the disk.
    pub fn push(&self, a: Append) {
        let mut inbox = self.lock();
        let refused = if inbox.stopping {
            AppendError::Stopped
        } else if inbox.queue.len() >= self.queue_max {
            AppendError::Busy(self.queue_max)
        } else {
            inbox.queue.push_back(a);
            drop(inbox);
            self.wake.notify_one();
            return;
        };
        drop(inbox);
        (a.done)(Err(refused));
    }

    /// Tells the thread to finish what is queued, sync and return.
    pub fn stop(&self) {
        self.lock().stopping = true;
        self.wake.notify_one();
    }
}

/// The last segment of a stream as the writer appends to it.
struct Tail {
    stream: Arc<Stream>,
    file: Arc<File>,
    /// Where the next record goes in the file, and its stream offset.
    len: u64,
    end: u64,
    /// The same at the last sync.
    durable_len: u64,
    durable_end: u64,
    dirty: bool,
    /// A new segment file whose directory entry (and, when the stream's directory is new too,
    /// that directory's entry) the next commit makes durable with its bytes.
    new_entry: NewEntry,
    /// When it was last written (the writer's append count then).
    used: u64,
}

impl Tail {
    /// Whether closing it loses nothing a commit still owes: its bytes and, for a new segment,
    /// its directory entries are synced (a failed sync of them keeps it open, to be retried).
    fn synced(&self) -> bool {
        !self.dirty && self.new_entry == NewEntry::None
    }
}

/// Directory entries a new segment needs synced before anything in it is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NewEntry {
    None,
    /// The segment file's, in its stream's directory.
    File,
    /// The segment file's and its stream directory's, in the data directory's `streams/`.
    FileAndDir,
}

/// The writer thread's state.
pub(crate) struct Writer {
    shared: Arc<WriterShared>,
    data_dir: PathBuf,
    policy: CommitPolicy,
    tails: HashMap<String, Tail>,
    /// Tails held open at most.
    tails_max: usize,
    /// Appends written so far (the clock of `Tail::used`).
    clock: u64,
    /// Appends written and waiting for the next sync.
    waiting: Vec<(Arc<Stream>, AppendDone)>,
    unsynced_bytes: u64,
    first_unsynced: Option<Instant>,
}

impl Writer {
    /// The thread's state, before [`Writer::run`]; it holds at most `tails_max` (at least 1)
    /// segment files open.
    pub fn new(
        shared: Arc<WriterShared>,
        data_dir: PathBuf,
        policy: CommitPolicy,
        tails_max: usize,
    ) -> Writer {
        Writer {
            shared,
            data_dir,
            policy,
            tails: HashMap::new(),
            tails_max: tails_max.max(1),
            clock: 0,
            waiting: Vec::new(),
            unsynced_bytes: 0,
            first_unsynced: None,
        }
    }

    /// The thread's loop: take what is queued, write it, sync when due; on stop, finish the queue.
    pub fn run(mut self) {
        loop {
            let (batch, stopping) = self.wait_for_work();
            // Everything queued joins the commit it makes due: one sync for all of it. An append
            // waiting for it makes it due at once (those that come during the sync join the
            // next): waiting out the interval would only hold the shipper back.
            for a in batch {
                self.write(a);
            }
            let due = !self.waiting.is_empty()
                || self.unsynced_bytes >= self.policy.bytes
                || self
                    .first_unsynced
                    .is_some_and(|t| t.elapsed() >= self.policy.interval);
            if due || stopping {
                self.commit();
            }
            if stopping && self.shared.lock().queue.is_empty() {
                return;
            }
        }
    }

    /// Waits until something is queued, the store stops, or a sync is due.
    fn wait_for_work(&self) -> (Vec<Append>, bool) {
        let mut inbox = self.shared.lock();
        loop {
            if !inbox.queue.is_empty() || inbox.stopping {
                return (inbox.queue.drain(..).collect(), inbox.stopping);
            }
            let wait = match self.first_unsynced {
                Some(t) => match self.policy.interval.checked_sub(t.elapsed()) {
                    Some(left) if !left.is_zero() => left,
                    _ => return (Vec::new(), false),
                },
                None => Duration::from_secs(1),
            };
            inbox = self
                .shared
                .wake
                .wait_timeout(inbox, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn write(&mut self, a: Append) {
        let Append {
            stream,
            offset,
            payloads,
            durable,
            opens,
            done,
        } = a;
        let shared = Arc::clone(&self.shared);
        let stats = &shared.stats;
        if payloads.is_empty() {
            // A wait for what is written up to `offset` to be durable.
            let (written, dirty) = match self.tails.get(stream.name()) {
                Some(t) => (t.end, t.dirty),
                None => (stream.durable_end(), false),
            };
            match () {
                _ if written < offset => done(Err(AppendError::Unexpected {
                    offset,
                    expect: written,
                })),
                _ if dirty => self.waiting.push((stream, done)),
                _ => done(Ok(stream.durable_end())),
            }
            return;
        }
        let len: u64 = payloads.iter().map(|p| p.bytes.len() as u64).sum();
        match self.write_records(&stream, offset, &payloads, opens) {
            Ok(()) => {
                stats.appends.fetch_add(1, Ordering::Relaxed);
                stats.bytes.fetch_add(len, Ordering::Relaxed);
                self.unsynced_bytes += len;
                self.first_unsynced.get_or_insert_with(Instant::now);
                drop(payloads);
                if durable {
                    self.waiting.push((stream, done));
                } else {
                    done(Ok(stream.durable_end()));
                }
            }
            Err(e) => {
                stats.failed.fetch_add(1, Ordering::Relaxed);
                done(Err(e));
            }
        }
    }

    /// Writes `payloads` at `offset` as records of the stream's tail (a new segment when
    /// needed); on failure nothing of them stays in the file.
    fn write_records(
        &mut self,
        stream: &Arc<Stream>,
        offset: u64,
        payloads: &[Payload],
        opens: bool,
    ) -> Result<(), AppendError> {
        let name = stream.name().to_string();
        self.clock += 1;
        if !self.tails.contains_key(&name) {
            let tail = tail_of(stream).map_err(|e| AppendError::from_io(&e))?;
            if let Some(tail) = tail {
                self.hold(name.clone(), tail);
            }
        }
        let (end, len) = match self.tails.get(&name) {
            Some(t) => (Some(t.end), t.len),
            None => (None, 0),
        };
        match end {
            Some(end) if offset < end || (offset > end && !opens) => {
                return Err(AppendError::Unexpected {
                    offset,
                    expect: end,
                })
            }
            Some(end) if offset == end && len < SEGMENT_BYTES_MAX => {}
            _ => {
                // The previous segment is durable before the next begins, so only a stream's
                // last segment can ever have a torn tail. A stream's first segment has none
                // before it: 10,000 new streams at once paid a commit each (2026-12-07).
                if end.is_some() {
                    self.commit();
                }
                let tail = self
                    .start_segment(stream, offset)
                    .map_err(|e| AppendError::from_io(&e))?;
                self.hold(name.clone(), tail);
            }
        }
        let tail = self.tails.get_mut(&name).expect("a tail was just made");
        tail.used = self.clock;
        let before = (tail.len, tail.end);
        let result = payloads.iter().try_for_each(|p| append_records(tail, p));
        if let Err(e) = &result {
            tracing::warn!(
                "stream {name}: append of {} bytes at offset {offset} failed ({e}); the file is cut back to its last good record",
                payloads.iter().map(|p| p.bytes.len()).sum::<usize>()
            );
            cut_back(tail, before.0, before.1);
        }
        result.map_err(|e| AppendError::from_io(&e))
    }

    /// Holds `tail` open as its stream's, first closing the least recently written synced tail
    /// when `tails_max` are open (committing first if none is synced, see `Tail::synced`).
    fn hold(&mut self, name: String, tail: Tail) {
        if !self.tails.contains_key(&name) && self.tails.len() >= self.tails_max {
            if self.tails.values().all(|t| !t.synced()) {
                self.commit();
            }
            let oldest = self
                .tails
                .iter()
                .filter(|(_, t)| t.synced())
                .min_by_key(|(_, t)| t.used)
                .map(|(n, _)| n.clone());
            if let Some(n) = oldest {
                self.tails.remove(&n);
                self.shared.stats.tails_open.fetch_sub(1, Ordering::Relaxed);
            }
        }
        if self.tails.insert(name, tail).is_none() {
            self.shared.stats.tails_open.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Creates the segment file starting at `offset` with its header. The header and the
    /// directory entries are made durable by the next commit, with the first records and
    /// before any of them is acknowledged: a crash before it leaves at most a last segment
    /// whose header is torn, which start-up removes (nothing in it was acknowledged). Syncing
    /// them here cost three syncs per new stream; 10,000 new streams took 3 s.
    fn start_segment(&self, stream: &Arc<Stream>, offset: u64) -> io::Result<Tail> {
        let dir = stream.dir();
        // A stream's first segment also syncs its directory's entry, even when the directory
        // is there already (left by a server killed before its first commit, maybe only in
        // the page cache).
        let first = stream.read_segments().is_empty();
        if !dir.exists() {
            std::fs::create_dir_all(dir)?;
        }
        let new_entry = if first {
            NewEntry::FileAndDir
        } else {
            NewEntry::File
        };
        let path = dir.join(segment_file_name(offset));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        let head = segment_head(stream.name(), offset);
        if let Err(e) = file.write_all_at(&head, 0) {
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        let file = Arc::new(file);
        let head_len = head.len() as u64;
        stream.write_segments().push(Segment {
            start: offset,
            end: offset,
            file: SegmentFile::new(path),
            marks: vec![(offset, head_len)],
        });
        tracing::debug!("stream {}: new segment at offset {offset}", stream.name());
        Ok(Tail {
            stream: Arc::clone(stream),
            file,
            len: head_len,
            end: offset,
            durable_len: head_len,
            durable_end: offset,
            // The commit syncs the header and the entries even before a record goes in.
            dirty: true,
            new_entry,
            used: self.clock,
        })
    }

    /// Syncs every written file, publishes the streams' durable ends, then tells the appends.
    fn commit(&mut self) {
        if self.waiting.is_empty() && self.tails.values().all(|t| !t.dirty) {
            return;
        }
        let mut failed: HashMap<String, AppendError> = HashMap::new();
        let sync = self.policy.sync;
        let stats = &self.shared.stats;
        // Many files: one syncfs (one device flush) for all; each file is asked on its own only
        // if that reports a failed write-back somewhere.
        let dirty = self.tails.values().filter(|t| t.dirty);
        let all_synced = sync
            && dirty.clone().count() >= SYNCFS_FILES_MIN
            && dirty.clone().next().is_some_and(|t| {
                stats.syncs.fetch_add(1, Ordering::Relaxed);
                syncfs(&t.file).is_ok()
            });
        let data_dir = &self.data_dir;
        for (name, tail) in self.tails.iter_mut().filter(|(_, t)| t.dirty) {
            tail.dirty = false;
            let synced = if sync && !all_synced {
                stats.syncs.fetch_add(1, Ordering::Relaxed);
                tail.file
                    .sync_data()
                    .and_then(|()| sync_entries(tail, data_dir))
            } else {
                Ok(())
            };
            match synced {
                Ok(()) => {
                    tail.new_entry = NewEntry::None;
                    tail.durable_len = tail.len;
                    tail.durable_end = tail.end;
                    tail.stream.publish(tail.end);
                }
                Err(e) => {
                    tracing::error!(
                        "stream {name}: sync failed ({e}); the bytes after offset {} are cut and their appends fail",
                        tail.durable_end
                    );
                    let (len, end) = (tail.durable_len, tail.durable_end);
                    cut_back(tail, len, end);
                    failed.insert(name.clone(), AppendError::from_io(&e));
                }
            }
        }
        for (stream, done) in self.waiting.drain(..) {
            match failed.get(stream.name()) {
                Some(e) => {
                    self.shared.stats.failed.fetch_add(1, Ordering::Relaxed);
                    done(Err(e.clone()));
                }
                None => done(Ok(stream.durable_end())),
            }
        }
        self.unsynced_bytes = 0;
        self.first_unsynced = None;
    }
}

/// Syncs the directories holding a new segment's entries (a `syncfs` covers them already).
fn sync_entries(tail: &Tail, data_dir: &std::path::Path) -> io::Result<()> {
    if tail.new_entry == NewEntry::None {
        return Ok(());
    }
    File::open(tail.stream.dir())?.sync_all()?;
    if tail.new_entry == NewEntry::FileAndDir {
        File::open(data_dir.join(STREAMS_DIR))?.sync_all()?;
    }
    Ok(())
}

/// The tail of a stream's last segment, reopened for writing (`None`: the stream has none).
fn tail_of(stream: &Arc<Stream>) -> io::Result<Option<Tail>> {
    let (path, end) = {
        let segments = stream.read_segments();
        let Some(last) = segments.last() else {
            return Ok(None);
        };
        (last.file.path().to_path_buf(), last.end)
    };
    let file = OpenOptions::new().read(true).write(true).open(path)?;
    let len = file.metadata()?.len();
    Ok(Some(Tail {
        stream: Arc::clone(stream),
        file: Arc::new(file),
        len,
        end,
        durable_len: len,
        durable_end: end,
        dirty: false,
        new_entry: NewEntry::None,
        used: 0,
    }))
}

/// Writes `payload` as a record (several, past 1 MiB) at the tail's end, marking them; moves
/// the tail on.
fn append_records(tail: &mut Tail, payload: &Payload) -> io::Result<()> {
    let whole = payload.bytes.len() <= RECORD_BYTES_MAX;
    for piece in payload.bytes.chunks(RECORD_BYTES_MAX) {
        let head = RecordHead {
            offset: tail.end,
            len: piece.len() as u32,
            crc: if whole {
                payload.crc
            } else {
                crc32c::crc32c(piece)
            },
        };
        tail.file.write_all_at(&head.encode(), tail.len)?;
        tail.file
            .write_all_at(piece, tail.len + RECORD_HEAD_BYTES as u64)?;
        if let Some(last) = tail.stream.write_segments().last_mut() {
            mark(&mut last.marks, tail.end, tail.len);
        }
        tail.len += (RECORD_HEAD_BYTES + piece.len()) as u64;
        tail.end += piece.len() as u64;
        tail.dirty = true;
    }
    Ok(())
}

/// Cuts the tail's file back to `len` (stream offset `end`), dropping marks past it.
fn cut_back(tail: &mut Tail, len: u64, end: u64) {
    if let Err(e) = tail.file.set_len(len) {
        // The bytes past `len` stay in the file, unacknowledged; start-up recovery or the
        // next append (which overwrites them) deals with them.
        tracing::error!(
            "stream {}: cannot cut the segment back to {len} bytes: {e}",
            tail.stream.name()
        );
    }
    tail.len = len;
    tail.end = end;
    if let Some(last) = tail.stream.write_segments().last_mut() {
        last.marks.retain(|&(_, p)| p < len);
    }
}
