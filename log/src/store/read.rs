//! Reading a stream: a [`Cursor`] walks its durable records in offset order (and the holes
//! between segments); [`plan_read`] turns the next stretch into what a server sends a reader.
//!
//! Blocking file reads (`pread`): callers run it off the engine's workers (a job) or in a
//! command-line tool. Reads only below each segment's published durable end, so it never sees a
//! record the writer has not synced, and never writes.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use super::format::{RecordHead, RECORD_HEAD_BYTES};
use super::stream::{Located, Stream};
use crate::proto::{chunk_frame_parts, encode, encode_chunk, Message};

/// A record a read reached; its payload is still in the file.
#[derive(Clone, Debug)]
pub struct RecordRef {
    /// Stream offset of the payload's first byte.
    pub offset: u64,
    /// Payload bytes.
    pub len: u32,
    /// CRC-32C of the payload.
    pub crc: u32,
    /// The segment file holding it.
    pub file: Arc<File>,
    /// File position of the payload.
    pub pos: u64,
    /// Bytes at its start before the offset the read asked for (only the first record of a read
    /// that starts inside one has any).
    pub skip: u32,
}

impl RecordRef {
    /// The payload from the wanted offset on, its checksum verified.
    pub fn read(&self) -> io::Result<Vec<u8>> {
        let mut payload = vec![0u8; self.len as usize];
        self.file.read_exact_at(&mut payload, self.pos)?;
        if crc32c::crc32c(&payload) != self.crc {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the record at stream offset {} fails its checksum on disk",
                    self.offset
                ),
            ));
        }
        payload.drain(..self.skip as usize);
        Ok(payload)
    }

    /// The stream offset of the first byte [`RecordRef::read`] returns.
    pub fn from(&self) -> u64 {
        self.offset + u64::from(self.skip)
    }

    /// The stream offset just past the record.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// What comes next in a stream.
#[derive(Clone, Debug)]
pub enum Step {
    /// The server holds nothing in `[from, to)`.
    Gap {
        from: u64,
        to: u64,
    },
    Record(RecordRef),
}

/// Walks a stream's durable records from an offset.
pub struct Cursor {
    stream: Arc<Stream>,
    /// The next stream offset wanted.
    at: u64,
    /// The segment being read and the file position of its next record header.
    segment: Option<(Located, u64)>,
}

impl Cursor {
    /// A cursor at stream offset `from`.
    pub fn new(stream: Arc<Stream>, from: u64) -> Cursor {
        Cursor {
            stream,
            at: from,
            segment: None,
        }
    }

    /// The next stream offset it will return.
    pub fn at(&self) -> u64 {
        self.at
    }

    /// The next gap or record at or after [`Cursor::at`]; `None` at the durable end (as it is
    /// now: call again later for what has become durable since).
    pub fn next_step(&mut self) -> io::Result<Option<Step>> {
        loop {
            let (seg, pos) = match &mut self.segment {
                Some((seg, pos)) if self.at < seg.end => (seg, pos),
                _ => {
                    let Some(seg) = self.stream.locate(self.at)? else {
                        return Ok(None);
                    };
                    let from = self.at;
                    // The segment read so far, grown since: go on from the next header rather
                    // than from a mark.
                    let pos = match &self.segment {
                        Some((old, pos)) if old.start == seg.start && old.end == from => *pos,
                        _ => seg.record_pos,
                    };
                    let gap_to = seg.start;
                    self.segment = Some((seg, pos));
                    if gap_to > from {
                        self.at = gap_to;
                        return Ok(Some(Step::Gap { from, to: gap_to }));
                    }
                    continue;
                }
            };
            let mut h = [0u8; RECORD_HEAD_BYTES];
            seg.file.read_exact_at(&mut h, *pos)?;
            let head = RecordHead::parse(&h).map_err(|why| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "stream {}: {why} at file position {} (between offsets {} and {})",
                        self.stream.name(),
                        *pos,
                        seg.start,
                        seg.end
                    ),
                )
            })?;
            let payload_pos = *pos + RECORD_HEAD_BYTES as u64;
            *pos = payload_pos + u64::from(head.len);
            if head.end() <= self.at {
                continue;
            }
            let skip = self.at.saturating_sub(head.offset) as u32;
            self.at = head.end();
            return Ok(Some(Step::Record(RecordRef {
                offset: head.offset,
                len: head.len,
                crc: head.crc,
                file: Arc::clone(&seg.file),
                pos: payload_pos,
                skip,
            })));
        }
    }
}

/// Records at least this long go out from their file (zero copy); shorter ones are copied into
/// frames, several to a send.
pub const FILE_PIECE_BYTES_MIN: u32 = 64 * 1024;
/// A plan stops once its copied frames reach this size...
pub const PLAN_FRAME_BYTES_MAX: usize = 256 * 1024;
/// ... or it covers this many stream bytes.
pub const PLAN_STREAM_BYTES_MAX: u64 = 8 << 20;

/// Part of a reader's answer.
#[derive(Debug)]
pub enum Piece {
    /// Whole frames (`CHUNK`s of short records, `GAP`s), to send as they are.
    Frames(Vec<u8>),
    /// A `CHUNK` of a whole record from its file: `head`, then `len` bytes of `file` from
    /// `pos`, then `crc`.
    File {
        head: [u8; 13],
        file: Arc<File>,
        pos: u64,
        len: u64,
        crc: [u8; 4],
    },
}

/// The next stretch of a reader's answer.
#[derive(Debug)]
pub struct Plan {
    /// What to send, in order.
    pub pieces: Vec<Piece>,
    /// Where the next plan starts.
    pub next: u64,
    /// Whether it reached the stream's durable end (as it was while planning).
    pub at_end: bool,
}

/// Plans the next stretch of a reader's answer from where `cursor` is: up to
/// [`PLAN_STREAM_BYTES_MAX`] of stream bytes or [`PLAN_FRAME_BYTES_MAX`] of copied frames. Keep
/// the cursor for the next plan (a follower's next plan then starts where this one ended).
pub fn plan_read(cursor: &mut Cursor) -> io::Result<Plan> {
    let mut pieces = Vec::new();
    let mut frames = Vec::new();
    let mut covered = 0u64;
    let mut at_end = false;
    while frames.len() < PLAN_FRAME_BYTES_MAX && covered < PLAN_STREAM_BYTES_MAX {
        match cursor.next_step()? {
            None => {
                at_end = true;
                break;
            }
            Some(Step::Gap { from, to }) => encode(&Message::Gap { from, to }, &mut frames),
            Some(Step::Record(r)) => {
                covered += u64::from(r.len - r.skip);
                if r.skip == 0 && r.len >= FILE_PIECE_BYTES_MIN {
                    if !frames.is_empty() {
                        pieces.push(Piece::Frames(std::mem::take(&mut frames)));
                    }
                    let (head, crc) = chunk_frame_parts(r.offset, r.len as usize, r.crc);
                    pieces.push(Piece::File {
                        head,
                        file: r.file,
                        pos: r.pos,
                        len: u64::from(r.len),
                        crc,
                    });
                } else {
                    encode_chunk(r.from(), &r.read()?, &mut frames);
                }
            }
        }
    }
    if !frames.is_empty() {
        pieces.push(Piece::Frames(frames));
    }
    Ok(Plan {
        pieces,
        next: cursor.at(),
        at_end,
    })
}
