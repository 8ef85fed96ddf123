//! The object record: each content file describes itself, so the catalog can be rebuilt from the
//! files alone (as Haystack keeps each needle's key and checksum beside its data).
//!
//! The record is an extended attribute of the content file (`user.oasis.object`), written before
//! the file's fsync, so the one fsync that makes the content durable makes its record durable too,
//! and the rename into `objects/` carries both. The content stays raw bytes: `sendfile` sends it
//! unchanged. The format is text, one `key value` per line, first line `oasis-object 1`; see
//! `FORMAT.md`. This module never touches the catalog.

use std::fs::File;
use std::io;
use std::path::Path;

use xattr::FileExt;

use crate::bitrate::BitrateSource;
use crate::catalog::ObjectMeta;

/// The extended attribute that holds the record.
pub const RECORD_XATTR: &str = "user.oasis.object";
/// First line of a record; the number is the format version.
const MAGIC: &str = "oasis-object 1";
/// Largest record accepted when reading (a name is at most 1 KiB; ext4 allows 4 KiB per value).
pub const RECORD_BYTES_MAX: usize = 4096;

/// Why a record could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("no object record (the file predates records, or its file system has no user xattrs)")]
    Missing,
    #[error("object record is malformed: {0}")]
    Malformed(String),
}

/// The record of `meta`.
pub fn encode(meta: &ObjectMeta) -> Vec<u8> {
    let mut out = format!(
        "{MAGIC}\nid {}\nsize_bytes {}\ncrc32c {:08x}\ncreated_unix_ms {}\nbitrate_bps {}\nbitrate_source {}\n",
        meta.id,
        meta.size_bytes,
        meta.crc32c,
        meta.created_unix_ms,
        meta.bitrate_bps,
        meta.bitrate_source.as_str(),
    );
    if let Some(d) = meta.duration_ms {
        out.push_str(&format!("duration_ms {d}\n"));
    }
    // Free text last: a name has no control characters, a content type no line breaks.
    out.push_str(&format!(
        "content_type {}\nname {}\n",
        meta.content_type, meta.name
    ));
    out.into_bytes()
}

/// Parses a record; every field but `duration_ms` is required, unknown keys are refused.
pub fn decode(bytes: &[u8]) -> Result<ObjectMeta, RecordError> {
    let bad = |what: &str| RecordError::Malformed(what.to_string());
    if bytes.len() > RECORD_BYTES_MAX {
        return Err(bad("longer than 4096 bytes"));
    }
    let text = std::str::from_utf8(bytes).map_err(|_| bad("not UTF-8"))?;
    let mut lines = text.lines();
    if lines.next() != Some(MAGIC) {
        return Err(bad("first line is not `oasis-object 1`"));
    }
    let (mut id, mut size, mut crc, mut created, mut bitrate, mut source) =
        (None, None, None, None, None, None);
    let (mut duration, mut content_type, mut name) = (None, None, None);
    for line in lines {
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| bad("a line without a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| bad(&format!("{key} is not a number")))
        };
        match key {
            "id" => id = Some(number()?),
            "size_bytes" => size = Some(number()?),
            "crc32c" => {
                crc = Some(u32::from_str_radix(value, 16).map_err(|_| bad("crc32c is not hex"))?)
            }
            "created_unix_ms" => created = Some(number()?),
            "bitrate_bps" => bitrate = Some(number()?),
            "bitrate_source" => {
                source =
                    Some(BitrateSource::parse(value).ok_or_else(|| bad("unknown bitrate_source"))?)
            }
            "duration_ms" => duration = Some(number()?),
            "content_type" => content_type = Some(value.to_string()),
            "name" => name = Some(value.to_string()),
            other => return Err(bad(&format!("unknown key {other:?}"))),
        }
    }
    let missing = |what: &str| bad(&format!("no {what}"));
    let name = name.ok_or_else(|| missing("name"))?;
    crate::name::validate_name(&name).map_err(|why| bad(&format!("name {name:?}: {why}")))?;
    let id = id.ok_or_else(|| missing("id"))?;
    if id == 0 {
        return Err(bad("id 0"));
    }
    Ok(ObjectMeta {
        id,
        name,
        size_bytes: size.ok_or_else(|| missing("size_bytes"))?,
        content_type: content_type.ok_or_else(|| missing("content_type"))?,
        crc32c: crc.ok_or_else(|| missing("crc32c"))?,
        created_unix_ms: created.ok_or_else(|| missing("created_unix_ms"))?,
        bitrate_bps: bitrate.ok_or_else(|| missing("bitrate_bps"))?,
        bitrate_source: source.ok_or_else(|| missing("bitrate_source"))?,
        duration_ms: duration,
    })
}

/// Attaches `meta`'s record to `file` (not yet durable: the caller's fsync makes it so).
/// `Ok(false)`: the file system keeps no user xattrs.
pub fn write(file: &File, meta: &ObjectMeta) -> io::Result<bool> {
    match file.set_xattr(RECORD_XATTR, &encode(meta)) {
        Ok(()) => Ok(true),
        Err(e) if is_unsupported(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The record of the content file at `path`.
pub fn read(path: &Path) -> io::Result<Result<ObjectMeta, RecordError>> {
    match xattr::get(path, RECORD_XATTR) {
        Ok(Some(bytes)) => Ok(decode(&bytes)),
        Ok(None) => Ok(Err(RecordError::Missing)),
        Err(e) if is_unsupported(&e) => Ok(Err(RecordError::Missing)),
        Err(e) => Err(e),
    }
}

fn is_unsupported(e: &io::Error) -> bool {
    e.raw_os_error() == Some(libc::ENOTSUP) || e.kind() == io::ErrorKind::Unsupported
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ObjectMeta {
        ObjectMeta {
            id: 0x1234,
            name: "show/a b/seg 1.ts".into(),
            size_bytes: 99,
            content_type: "video/mp4; codecs=\"avc1\"".into(),
            crc32c: 0xdead_beef,
            created_unix_ms: 1_700_000_000_000,
            bitrate_bps: 800_000,
            bitrate_source: BitrateSource::Uploader,
            duration_ms: Some(12_000),
        }
    }

    #[test]
    fn round_trip() {
        let m = meta();
        assert_eq!(decode(&encode(&m)).unwrap(), m);
        let mut m = meta();
        m.duration_ms = None;
        m.bitrate_source = BitrateSource::Playlist;
        assert_eq!(decode(&encode(&m)).unwrap(), m);
    }

    #[test]
    fn refuses_what_it_did_not_write() {
        let good = String::from_utf8(encode(&meta())).unwrap();
        for bad in [
            String::new(),
            good.replace("oasis-object 1", "oasis-object 2"),
            good.replace("id 4660\n", ""),
            good.replace("crc32c deadbeef", "crc32c zz"),
            good.replace("name show/a b/seg 1.ts", "name ../x"),
            format!("{good}extra 1\n"),
            good.replace("bitrate_source uploader", "bitrate_source guess"),
        ] {
            assert!(decode(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(decode(&vec![b'a'; RECORD_BYTES_MAX + 1]).is_err());
    }

    #[test]
    fn lives_on_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("obj");
        let file = File::create(&path).unwrap();
        if !write(&file, &meta()).unwrap() {
            panic!("this test needs a file system with user xattrs (ext4, xfs, tmpfs)");
        }
        assert_eq!(read(&path).unwrap().unwrap(), meta());
        let other = dir.path().join("other");
        File::create(&other).unwrap();
        assert_eq!(read(&other).unwrap(), Err(RecordError::Missing));
    }
}
