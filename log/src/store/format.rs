//! The on-disk format (`log/FORMAT.md`): where a stream's segments live, a segment's header and
//! each record's header. Pure: bytes in, values out; no file is opened here.

use std::path::{Path, PathBuf};

use crate::proto::{validate_stream, DATA_BYTES_MAX, STREAM_NAME_BYTES_MAX};

/// The first 8 bytes of every segment file.
pub const SEGMENT_MAGIC: &[u8; 8] = b"OASISLOG";
/// The segment format this code writes and reads.
pub const SEGMENT_VERSION: u16 = 1;
/// A segment header's fixed part: magic, version, name length, start offset (the name and a
/// CRC-32C follow).
pub const SEGMENT_HEAD_FIXED_BYTES: usize = 8 + 2 + 2 + 8;
/// A record's header: offset (8), payload length (4), payload CRC-32C (4), header CRC-32C (4).
pub const RECORD_HEAD_BYTES: usize = 20;
/// Most payload bytes in one record (a `CHUNK` sends a whole record).
pub const RECORD_BYTES_MAX: usize = DATA_BYTES_MAX;
/// Directory of the streams, under the data directory.
pub const STREAMS_DIR: &str = "streams";
/// Suffix of segment files.
pub const SEGMENT_SUFFIX: &str = ".seg";

/// A segment's header bytes for `stream` starting at stream offset `start`.
pub fn segment_head(stream: &str, start: u64) -> Vec<u8> {
    debug_assert!(stream.len() <= STREAM_NAME_BYTES_MAX);
    let mut h = Vec::with_capacity(segment_head_len(stream));
    h.extend_from_slice(SEGMENT_MAGIC);
    h.extend_from_slice(&SEGMENT_VERSION.to_be_bytes());
    h.extend_from_slice(&(stream.len() as u16).to_be_bytes());
    h.extend_from_slice(&start.to_be_bytes());
    h.extend_from_slice(stream.as_bytes());
    let crc = crc32c::crc32c(&h);
    h.extend_from_slice(&crc.to_be_bytes());
    h
}

/// Length of the header of a segment of `stream`.
pub fn segment_head_len(stream: &str) -> usize {
    SEGMENT_HEAD_FIXED_BYTES + stream.len() + 4
}

/// A segment header that was read back.
#[derive(Debug, PartialEq, Eq)]
pub struct SegmentHead {
    /// The stream it belongs to.
    pub stream: String,
    /// Stream offset of its first byte.
    pub start: u64,
    /// Its length in the file: records start here.
    pub len: usize,
}

/// Parses a segment header from the start of `bytes` (at least [`segment_head_len`] of the longest
/// name, or the whole file if shorter). `Err` says what is wrong.
pub fn parse_segment_head(bytes: &[u8]) -> Result<SegmentHead, String> {
    if bytes.len() < SEGMENT_HEAD_FIXED_BYTES {
        return Err(format!(
            "{} bytes, shorter than a segment header",
            bytes.len()
        ));
    }
    if &bytes[..8] != SEGMENT_MAGIC {
        return Err("not an Oasis log segment (bad magic)".into());
    }
    let version = u16::from_be_bytes([bytes[8], bytes[9]]);
    if version != SEGMENT_VERSION {
        return Err(format!(
            "segment format {version}; this build reads {SEGMENT_VERSION}"
        ));
    }
    let name_len = usize::from(u16::from_be_bytes([bytes[10], bytes[11]]));
    let start = u64::from_be_bytes(bytes[12..20].try_into().unwrap_or([0; 8]));
    let len = SEGMENT_HEAD_FIXED_BYTES + name_len + 4;
    if name_len > STREAM_NAME_BYTES_MAX || bytes.len() < len {
        return Err("segment header cut short".into());
    }
    let crc = u32::from_be_bytes(bytes[len - 4..len].try_into().unwrap_or([0; 4]));
    if crc32c::crc32c(&bytes[..len - 4]) != crc {
        return Err("segment header fails its checksum".into());
    }
    let stream = std::str::from_utf8(&bytes[SEGMENT_HEAD_FIXED_BYTES..len - 4])
        .map_err(|_| "segment header names no valid stream".to_string())?;
    validate_stream(stream).map_err(|e| e.to_string())?;
    Ok(SegmentHead {
        stream: stream.to_string(),
        start,
        len,
    })
}

/// A record's header: where its payload belongs and its checksum.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecordHead {
    /// Stream offset of the payload's first byte.
    pub offset: u64,
    /// Payload bytes (1 to [`RECORD_BYTES_MAX`]).
    pub len: u32,
    /// CRC-32C of the payload.
    pub crc: u32,
}

impl RecordHead {
    /// The header's bytes (its own CRC last).
    pub fn encode(&self) -> [u8; RECORD_HEAD_BYTES] {
        let mut h = [0u8; RECORD_HEAD_BYTES];
        h[..8].copy_from_slice(&self.offset.to_be_bytes());
        h[8..12].copy_from_slice(&self.len.to_be_bytes());
        h[12..16].copy_from_slice(&self.crc.to_be_bytes());
        let own = crc32c::crc32c(&h[..16]);
        h[16..].copy_from_slice(&own.to_be_bytes());
        h
    }

    /// Parses a header; `Err` when it fails its checksum or holds an impossible length.
    pub fn parse(h: &[u8; RECORD_HEAD_BYTES]) -> Result<RecordHead, &'static str> {
        let word = |at: usize| u32::from_be_bytes([h[at], h[at + 1], h[at + 2], h[at + 3]]);
        if crc32c::crc32c(&h[..16]) != word(16) {
            return Err("record header fails its checksum");
        }
        let head = RecordHead {
            offset: u64::from_be_bytes(h[..8].try_into().unwrap_or([0; 8])),
            len: word(8),
            crc: word(12),
        };
        if head.len == 0 || head.len as usize > RECORD_BYTES_MAX {
            return Err("record length out of bounds");
        }
        Ok(head)
    }

    /// The stream offset just past the payload.
    pub fn end(&self) -> u64 {
        self.offset + u64::from(self.len)
    }
}

/// The directory of `stream`'s segments: `streams/<name>` with each `/` written as `%` (a
/// character names never hold), so every stream is one directory and no name nests in another.
pub fn stream_dir(data_dir: &Path, stream: &str) -> PathBuf {
    data_dir.join(STREAMS_DIR).join(stream.replace('/', "%"))
}

/// The stream a directory under `streams/` holds, or `None` for a name no stream has.
pub fn stream_of_dir(dir_name: &str) -> Option<String> {
    let name = dir_name.replace('%', "/");
    validate_stream(&name).ok().map(|_| name)
}

/// The file name of the segment starting at `start`: 20 digits, so names sort by offset.
pub fn segment_file_name(start: u64) -> String {
    format!("{start:020}{SEGMENT_SUFFIX}")
}

/// The start offset a segment file's name gives, or `None` for another file.
pub fn segment_start_of(file_name: &str) -> Option<u64> {
    let digits = file_name.strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}
