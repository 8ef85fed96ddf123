//! One stream as the server holds it: its segments (which offset ranges, in which files), the
//! durable end readers and shippers are told, and the claim of its one writing connection.
//!
//! Shared by the writer thread (which alone adds segments and moves ends), the sessions (claims,
//! durable ends) and readers (which look up where an offset is). Readers never see past a
//! segment's published durable end. Opens a segment file for reading when a read locates it
//! ([`SegmentFile`]); no other I/O here.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard, Weak};

/// A mark is kept at least every this many bytes of a segment file, so a read finds its first
/// record after reading at most about this much of headers.
pub const MARK_EVERY_BYTES: u64 = 1 << 20;

/// A segment file as readers reach it: opened (read-only) when a read needs it, shared by the
/// reads holding it, closed when the last lets go. A server with many streams thus holds a
/// descriptor only for the segments being read (and, in the writer thread, the last segments
/// being written), not one per segment.
#[derive(Debug)]
pub struct SegmentFile {
    path: PathBuf,
    open: Mutex<Weak<File>>,
}

impl SegmentFile {
    pub(crate) fn new(path: PathBuf) -> Arc<SegmentFile> {
        Arc::new(SegmentFile {
            path,
            open: Mutex::new(Weak::new()),
        })
    }

    /// The file, opened for reading, or the one a read already holds.
    pub fn open(&self) -> io::Result<Arc<File>> {
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = open.upgrade() {
            return Ok(f);
        }
        let f = Arc::new(File::open(&self.path)?);
        *open = Arc::downgrade(&f);
        Ok(f)
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// A segment file and what of it is durable.
#[derive(Debug)]
pub(crate) struct Segment {
    /// Stream offset of its first byte.
    pub start: u64,
    /// Stream offset just past its last durable record.
    pub end: u64,
    /// The segment file.
    pub file: Arc<SegmentFile>,
    /// (stream offset, file position) of record headers, in order: the first record's, then one
    /// at least every [`MARK_EVERY_BYTES`]. May name records past `end` not yet durable.
    pub marks: Vec<(u64, u64)>,
}

impl Segment {
    /// The last mark at or before stream offset `at` (the segment's first when `at` is before it).
    pub fn mark_before(&self, at: u64) -> (u64, u64) {
        let i = self.marks.partition_point(|&(o, _)| o <= at);
        self.marks[i.saturating_sub(1)]
    }
}

/// Adds a mark for a record at stream `offset` and file position `pos`, if the last mark is far
/// enough behind.
pub(crate) fn mark(marks: &mut Vec<(u64, u64)>, offset: u64, pos: u64) {
    if marks
        .last()
        .is_none_or(|&(_, p)| pos >= p + MARK_EVERY_BYTES)
    {
        marks.push((offset, pos));
    }
}

/// Where a read of a stream goes on: the first segment holding bytes at or after an offset.
#[derive(Clone, Debug)]
pub struct Located {
    /// The segment's first offset (a reader's offset before it is in a hole).
    pub start: u64,
    /// Its durable end: read no record past it.
    pub end: u64,
    /// The segment file, open for reading.
    pub file: Arc<File>,
    /// A record at or before the wanted offset: its stream offset...
    pub record_offset: u64,
    /// ... and the file position of its header.
    pub record_pos: u64,
}

/// One stream.
#[derive(Debug)]
pub struct Stream {
    name: String,
    dir: PathBuf,
    durable_end: AtomicU64,
    writer: AtomicBool,
    segments: RwLock<Vec<Segment>>,
}

impl Stream {
    pub(crate) fn new(name: String, dir: PathBuf, segments: Vec<Segment>) -> Stream {
        let end = segments.last().map_or(0, |s| s.end);
        Stream {
            name,
            dir,
            durable_end: AtomicU64::new(end),
            writer: AtomicBool::new(false),
            segments: RwLock::new(segments),
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The end of what the server durably holds (0 for a stream it holds nothing of).
    pub fn durable_end(&self) -> u64 {
        self.durable_end.load(Ordering::Acquire)
    }

    /// Publishes a new durable end (the writer thread, after a sync).
    pub(crate) fn publish(&self, end: u64) {
        if let Some(last) = self.write_segments().last_mut() {
            last.end = end;
        }
        self.durable_end.store(end, Ordering::Release);
    }

    /// Makes this connection the stream's one writer, until the claim is dropped; `None` when
    /// another connection writes it.
    pub fn claim_writer(self: &Arc<Self>) -> Option<WriterClaim> {
        self.writer
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .ok()
            .map(|_| WriterClaim(Arc::clone(self)))
    }

    /// The offset ranges it durably holds, `[from, to)`, in order, adjacent segments merged.
    pub fn ranges(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = Vec::new();
        for s in self.read_segments().iter().filter(|s| s.end > s.start) {
            match out.last_mut() {
                Some(last) if last.1 == s.start => last.1 = s.end,
                _ => out.push((s.start, s.end)),
            }
        }
        out
    }

    /// The first segment with durable bytes at or after `at`, and where to start reading it
    /// (its file opened for reading).
    pub fn locate(&self, at: u64) -> io::Result<Option<Located>> {
        let (start, end, file, (record_offset, record_pos)) = {
            let segments = self.read_segments();
            let Some(s) = segments.iter().find(|s| s.end > at && s.end > s.start) else {
                return Ok(None);
            };
            (s.start, s.end, Arc::clone(&s.file), s.mark_before(at))
        };
        Ok(Some(Located {
            start,
            end,
            file: file.open()?,
            record_offset,
            record_pos,
        }))
    }

    pub(crate) fn read_segments(&self) -> RwLockReadGuard<'_, Vec<Segment>> {
        self.segments.read().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn write_segments(&self) -> RwLockWriteGuard<'_, Vec<Segment>> {
        self.segments.write().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's right to write a stream (one per stream per server); released when dropped.
#[derive(Debug)]
pub struct WriterClaim(Arc<Stream>);

impl WriterClaim {
    /// The claimed stream.
    pub fn stream(&self) -> &Arc<Stream> {
        &self.0
    }
}

impl Drop for WriterClaim {
    fn drop(&mut self) {
        self.0.writer.store(false, Ordering::Release);
    }
}
