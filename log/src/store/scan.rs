//! Start-up recovery: read a stream's segment files, check every record, and rebuild what the
//! stream holds (its segments, their durable ends and marks).
//!
//! A record is good when its header passes its checksum, its offset continues the one before,
//! its payload is all in the file and passes its checksum. The first record that is not good
//! ends what the segment holds. Only a stream's last segment can have a torn tail (the writer
//! syncs a segment before it starts the next one), so in [`Mode::Repair`] that tail is cut off
//! the file (a last segment whose very header is torn is removed); in an older segment bad bytes
//! are corruption, not a crash, so they stay on disk, unindexed, and are reported. Every cut is
//! returned, with its stream, offset and length, for the start-up log.
//!
//! Reads every byte of every segment once (sequentially, 1 MiB at a time).

use std::fs::{File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::format::{parse_segment_head, segment_start_of, RecordHead, RECORD_HEAD_BYTES};
use super::format::{SEGMENT_HEAD_FIXED_BYTES, SEGMENT_SUFFIX};
use super::stream::{mark, Segment, SegmentFile};
use crate::proto::STREAM_NAME_BYTES_MAX;

/// Whether a scan may change files.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The server's start-up: cut torn tails, remove a last segment whose header is torn, open
    /// the last segment for writing.
    Repair,
    /// Offline reading (`oasis logs cat --data-dir`), maybe beside a running server: change
    /// nothing, stop each segment at its last good record.
    ReadOnly,
}

/// Bytes recovery took away from (or, in an older segment, stopped short of) a segment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cut {
    /// The stream whose segment it was.
    pub stream: String,
    /// The segment file.
    pub segment: PathBuf,
    /// Stream offset where the good records end.
    pub offset: u64,
    /// Bytes of the file from there on.
    pub bytes: u64,
    /// Why the first of them is not a good record.
    pub why: String,
    /// Whether they were cut off the file (a last segment) or left there unindexed (an older one).
    pub removed: bool,
}

/// Scans every segment of the stream `name` in `dir`, oldest first.
pub(crate) fn scan_stream(
    dir: &Path,
    name: &str,
    mode: Mode,
) -> io::Result<(Vec<Segment>, Vec<Cut>)> {
    let mut files: Vec<(u64, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let file_name = entry.file_name();
        match file_name.to_str().and_then(segment_start_of) {
            Some(start) => files.push((start, entry.path())),
            None if file_name.to_string_lossy().ends_with(SEGMENT_SUFFIX) => {
                tracing::warn!("{}: not a segment name; ignored", entry.path().display())
            }
            None => {}
        }
    }
    files.sort();
    let mut segments: Vec<Segment> = Vec::new();
    let mut cuts = Vec::new();
    let count = files.len();
    for (i, (start, path)) in files.into_iter().enumerate() {
        let last = i + 1 == count;
        let Some((segment, cut)) = scan_segment(&path, name, start, last, mode)? else {
            continue;
        };
        if let Some(prev) = segments.last() {
            if segment.start < prev.end {
                return Err(invalid(format!(
                    "{} starts at offset {}, inside the segment before it (which ends at {}); two segments of stream {name} overlap: move one out of the data directory",
                    path.display(),
                    segment.start,
                    prev.end
                )));
            }
        }
        cuts.extend(cut);
        segments.push(segment);
    }
    Ok((segments, cuts))
}

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg)
}

/// One segment: `None` when it is a last segment whose header is torn (removed in repair mode).
fn scan_segment(
    path: &Path,
    name: &str,
    start: u64,
    last: bool,
    mode: Mode,
) -> io::Result<Option<(Segment, Option<Cut>)>> {
    let writable = last && mode == Mode::Repair;
    let file = OpenOptions::new()
        .read(true)
        .write(writable)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    let file_len = file.metadata()?.len();
    let mut head_bytes = vec![0u8; (SEGMENT_HEAD_FIXED_BYTES + STREAM_NAME_BYTES_MAX + 4) as _];
    head_bytes.truncate(
        usize::try_from(file_len)
            .unwrap_or(usize::MAX)
            .min(head_bytes.len()),
    );
    file.read_exact_at(&mut head_bytes, 0)?;
    let head = match parse_segment_head(&head_bytes) {
        Ok(h) => h,
        Err(why) if last => {
            // Created when the server stopped: a new segment's header is synced by the commit
            // that syncs its first records, before any of them is acknowledged.
            tracing::warn!(
                "stream {name}: segment {} has a torn header ({why}); {}",
                path.display(),
                if mode == Mode::Repair {
                    "removed (nothing in it was acknowledged)"
                } else {
                    "skipped"
                }
            );
            if mode == Mode::Repair {
                std::fs::remove_file(path)?;
            }
            return Ok(None);
        }
        Err(why) => {
            return Err(invalid(format!(
                "{}: {why}; move it out of the data directory to start without it",
                path.display()
            )))
        }
    };
    if head.stream != name || head.start != start {
        return Err(invalid(format!(
            "{} holds stream {} from offset {}, not what its place says (stream {name} from {start}); move it out of the data directory",
            path.display(),
            head.stream,
            head.start
        )));
    }
    let mut marks = vec![(start, head.len as u64)];
    let (pos, end, bad) = scan_records(&file, file_len, head.len as u64, start, &mut marks)?;
    let mut segment = Segment {
        start,
        end,
        file: SegmentFile::new(path.to_path_buf()),
        marks,
    };
    let Some(why) = bad else {
        return Ok(Some((segment, None)));
    };
    let removed = writable;
    let cut = Cut {
        stream: name.to_string(),
        segment: path.to_path_buf(),
        offset: segment.end,
        bytes: file_len - pos,
        why,
        removed,
    };
    if removed {
        file.set_len(pos)?;
        file.sync_all()?;
        segment.marks.retain(|&(_, p)| p < pos);
    }
    Ok(Some((segment, Some(cut))))
}

/// Reads records from file position `pos` on, the first at stream offset `end`, marking them.
/// Returns the file position and stream offset where the good records end and, if something
/// follows them, why it is not a record.
fn scan_records(
    file: &File,
    file_len: u64,
    mut pos: u64,
    mut end: u64,
    marks: &mut Vec<(u64, u64)>,
) -> io::Result<(u64, u64, Option<String>)> {
    let mut reader = BufReader::with_capacity(1 << 20, file);
    reader.seek(SeekFrom::Start(pos))?;
    let mut payload = Vec::new();
    loop {
        let left = file_len - pos;
        if left == 0 {
            return Ok((pos, end, None));
        }
        if left < RECORD_HEAD_BYTES as u64 {
            let why = format!("{left} bytes, less than a record header");
            return Ok((pos, end, Some(why)));
        }
        let mut h = [0u8; RECORD_HEAD_BYTES];
        reader.read_exact(&mut h)?;
        let head = match RecordHead::parse(&h) {
            Ok(head) => head,
            Err(why) => return Ok((pos, end, Some(why.to_string()))),
        };
        if head.offset != end {
            let why = format!("a record at offset {} where {end} was next", head.offset);
            return Ok((pos, end, Some(why)));
        }
        let len = u64::from(head.len);
        if left < RECORD_HEAD_BYTES as u64 + len {
            return Ok((pos, end, Some("a record cut short".into())));
        }
        payload.resize(head.len as usize, 0);
        reader.read_exact(&mut payload)?;
        if crc32c::crc32c(&payload) != head.crc {
            return Ok((pos, end, Some("a record that fails its checksum".into())));
        }
        mark(marks, head.offset, pos);
        end = head.end();
        pos += RECORD_HEAD_BYTES as u64 + len;
    }
}
