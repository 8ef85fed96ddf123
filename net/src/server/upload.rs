//! `PUT /media/<name>`: the checks on an upload's head, the body as it arrives (declared length
//! or chunked, staged in a storage `Upload` and written by the engine a full piece at a time),
//! the commit job, and the lingering close that reads and drops a body answered before it was
//! read. Bounded: a chunked body stops at `upload_bytes_max`, staging at one piece (input waits
//! while it is written), a lingering close at [`LINGER_TIME`], [`LINGER_IDLE`] and
//! [`LINGER_BYTES_MAX`]. It never writes or commits on a worker: pieces go out as
//! `Transmit::Write`, the commit is a job for the catalog thread.

use std::time::{Duration, Instant};

use oasis_engine::{Job, JobResult, Transmit};
use oasis_storage::{StoreError, Upload, UploadOptions};

use super::config::HttpConfig;
use super::reply::json_escape;
use crate::http::{self, ChunkedDecoder, HttpError, HttpLimits, RequestHead};

/// Longest lingering close.
pub(super) const LINGER_TIME: Duration = Duration::from_secs(30);
/// Longest wait for the next byte during a lingering close.
pub(super) const LINGER_IDLE: Duration = Duration::from_secs(5);
/// Most bytes a lingering close reads and drops.
pub(super) const LINGER_BYTES_MAX: u64 = 256 << 20;

/// How an upload's body is framed, and how much of a declared length is left.
pub(super) enum BodyKind {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// How an upload's body is framed, or the status that refuses it (411, 413).
pub(super) fn body_kind(head: &RequestHead, cfg: &HttpConfig) -> Result<BodyKind, u16> {
    match (head.content_length, head.chunked) {
        (_, true) => Ok(BodyKind::Chunked(ChunkedDecoder::new(&cfg.limits))),
        (Some(n), false) if n > cfg.upload_bytes_max => Err(413),
        (Some(n), false) => Ok(BodyKind::Length(n)),
        (None, false) => Err(411),
    }
}

/// The JSON body of a 400 for an uploader's `Content-Type` that is not a media type.
pub(super) fn content_type_refusal(head: &RequestHead) -> Option<String> {
    // The uploader's own type is kept; one that is not a media type is refused.
    let ct = head.content_type.as_deref()?;
    if http::is_valid_media_type(ct) {
        return None;
    }
    Some(format!(
        "{{\"error\":{}}}\n",
        json_escape(&format!(
            "Content-Type {ct:?} is not a media type (type/subtype, e.g. video/mp4); \
             leave it out to have the type taken from the name's extension"
        ))
    ))
}

/// `X-Oasis-Crc32c` as a CRC: `Ok(None)` when absent; the 400 message when not 8 hex digits.
pub(super) fn announced_crc32c(head: &RequestHead) -> Result<Option<u32>, String> {
    let Some(v) = head.crc32c.as_deref() else {
        return Ok(None);
    };
    let v = v.trim();
    match u32::from_str_radix(v, 16) {
        Ok(crc) if v.len() == 8 => Ok(Some(crc)),
        _ => Err(format!(
            "{{\"error\":{}}}\n",
            json_escape(&format!(
                "X-Oasis-Crc32c {v:?} is not a CRC-32C: send 8 hex digits (e.g. 0a1b2c3d), or \
                 leave the field out"
            ))
        )),
    }
}

/// What the uploader said about the object: its length, `?bitrate=`, its type, its CRC-32C
/// (already checked by [`announced_crc32c`]).
pub(super) fn upload_options(head: &RequestHead) -> UploadOptions {
    let bitrate_bps = super::api::query_param(head.query.as_deref(), "bitrate")
        .and_then(|b| b.parse::<u64>().ok())
        .filter(|b| *b > 0);
    UploadOptions {
        expected_len: head.content_length.filter(|_| !head.chunked),
        bitrate_bps,
        // `application/octet-stream` is what generic tools send for "unknown": the name's
        // extension knows better.
        content_type: head
            .content_type
            .clone()
            .filter(|ct| !ct.eq_ignore_ascii_case("application/octet-stream")),
        expected_crc32c: announced_crc32c(head).ok().flatten(),
        // Only a copy from another node of the pool carries its origin's version.
        pool_version: head.pool_version.filter(|_| head.pool_peer),
    }
}

/// An upload receiving its body.
pub(super) struct Receiving {
    upload: Upload,
    kind: BodyKind,
    pub(super) last_progress: Instant,
    replaced: bool,
    /// A full piece is out being written (`Transmit::Write`): no input is taken meanwhile.
    pub(super) writing: bool,
}

/// What one piece of body did.
pub(super) enum Fed {
    /// This many bytes were taken; more body is to come.
    More(usize),
    /// This many bytes were taken and the body is complete.
    Done(usize),
    /// Malformed chunked framing: where the body ends is unknown.
    Framing(HttpError),
    /// This many bytes were taken, and the upload failed.
    Failed(usize, StoreError),
}

/// The 507 body of an upload refused because disk space ran out: the file system's free space
/// fell below `disk_free_critical_bytes`, or the disk space budget is spent.
pub(super) fn disk_full_refusal(file_system: bool) -> String {
    let why = if file_system {
        "the data directory's file system is nearly full (free space below [resources] \
         disk_free_critical_bytes): uploads are refused until space is freed there; stored \
         objects keep streaming"
    } else {
        "the disk space budget for objects is spent ([resources] disk_space_bytes, or the free \
         space at start-up less disk_free_critical_bytes): delete objects or raise the budget \
         (a restart re-reads the free space); stored objects keep streaming"
    };
    format!("{{\"error\":{}}}\n", json_escape(why))
}

impl Receiving {
    /// The chunked decoder that has read the body so far (the upload ends: what is left of the
    /// body is found by it during a lingering close).
    pub(super) fn take_chunked(&mut self) -> Option<ChunkedDecoder> {
        match std::mem::replace(&mut self.kind, BodyKind::Length(0)) {
            BodyKind::Chunked(dec) => Some(dec),
            other => {
                self.kind = other;
                None
            }
        }
    }

    /// `replaced`: an object of that name existed when the upload began (200, not 201).
    pub(super) fn new(upload: Upload, kind: BodyKind, replaced: bool, now: Instant) -> Receiving {
        Receiving {
            upload,
            kind,
            last_progress: now,
            replaced,
            writing: false,
        }
    }

    /// Whether body bytes are taken now: not while the staging buffer is full or out.
    pub(super) fn takes_input(&self) -> bool {
        !self.writing && self.upload.stage_room() > 0
    }

    /// The write of a full staged piece, if one waits.
    pub(super) fn next_write(&mut self) -> Option<Transmit> {
        if self.writing {
            return None;
        }
        let piece = self.upload.take_piece()?;
        self.writing = true;
        Some(Transmit::Write {
            file: piece.file,
            offset: piece.offset,
            data: piece.data,
        })
    }

    /// The engine wrote a piece (or failed to); staging resumes with its buffer.
    pub(super) fn written(
        &mut self,
        result: std::io::Result<()>,
        data: Vec<u8>,
        now: Instant,
    ) -> Result<(), StoreError> {
        debug_assert!(self.writing);
        self.writing = false;
        self.last_progress = now;
        self.upload.piece_written(result, data)
    }

    /// Stages the body bytes in `input` (a chunked body at most `limit_bytes` long), no more
    /// than the staging buffer has room for; a full buffer is then written ([`Self::next_write`])
    /// before more is taken. `unread` is kept as what is left of the body for a lingering close:
    /// the declared bytes not read yet, the decoder of a chunked body that failed to store,
    /// nothing after bad framing.
    pub(super) fn feed(
        &mut self,
        input: &[u8],
        limit_bytes: u64,
        now: Instant,
        unread: &mut Option<BodyLeft>,
    ) -> Fed {
        self.last_progress = now;
        let room = self.upload.stage_room();
        let mut write_err = None;
        let (consumed, done) = match &mut self.kind {
            BodyKind::Length(remaining) => {
                let n = (*remaining).min(input.len().min(room) as u64) as usize;
                if let Err(e) = self.upload.stage(&input[..n]) {
                    write_err = Some(e);
                }
                *remaining -= n as u64;
                *unread = Some(BodyLeft::Bytes(*remaining));
                (n, *remaining == 0)
            }
            BodyKind::Chunked(dec) => {
                let upload = &mut self.upload;
                // Decoded bytes never outnumber the framed bytes they came in, so they fit.
                let res = dec.decode_with(&input[..input.len().min(room)], |data| {
                    if write_err.is_none() {
                        if upload.written_bytes() + data.len() as u64 > limit_bytes {
                            write_err = Some(StoreError::TooLarge {
                                name: upload.name().to_string(),
                                limit_bytes,
                            });
                        } else if let Err(e) = upload.stage(data) {
                            write_err = Some(e);
                        }
                    }
                });
                match res {
                    Ok(p) => (p.consumed_bytes, p.done),
                    Err(e) => {
                        *unread = None;
                        return Fed::Framing(e);
                    }
                }
            }
        };
        if let Some(e) = write_err {
            // The rest of a chunked body is read and dropped after the answer by this decoder.
            self.keep_chunked_unread(unread);
            return Fed::Failed(consumed, e);
        }
        if done {
            Fed::Done(consumed)
        } else {
            Fed::More(consumed)
        }
    }

    /// A chunked body that stops being stored: its decoder finds the rest during a lingering
    /// close.
    pub(super) fn keep_chunked_unread(&mut self, unread: &mut Option<BodyLeft>) {
        if let Some(dec) = self.take_chunked() {
            *unread = Some(BodyLeft::Chunked(Box::new(dec)));
        }
    }

    /// Whether the body is complete before any of it arrived (`Content-Length: 0`).
    pub(super) fn is_empty(&self) -> bool {
        matches!(self.kind, BodyKind::Length(0))
    }

    /// The commit (fsync, rename, catalog; the last staged bytes are written there too) as a
    /// job, and whether it replaces an object.
    pub(super) fn into_job(self) -> (Job, bool) {
        debug_assert!(!self.writing, "committing with a piece out");
        let upload = self.upload;
        let job: Job = Box::new(move || Box::new(upload.finish()) as JobResult);
        (job, self.replaced)
    }
}

/// What is left of a request body that was not read.
#[derive(Debug)]
pub(super) enum BodyLeft {
    Bytes(u64),
    /// Chunked: the decoder finds where the body ends.
    Chunked(Box<ChunkedDecoder>),
}

impl BodyLeft {
    /// The body a request head announces (`None`: none).
    pub(super) fn of(head: &RequestHead, limits: &HttpLimits) -> Option<BodyLeft> {
        match (head.content_length, head.chunked) {
            (_, true) => Some(BodyLeft::Chunked(Box::new(ChunkedDecoder::new(limits)))),
            (Some(n), false) if n > 0 => Some(BodyLeft::Bytes(n)),
            _ => None,
        }
    }
}

/// A lingering close: the answer went out before the request's body was read; what the client
/// still sends is read and dropped, so it reads the answer instead of a reset. Its bounds are
/// nginx's `lingering_time` and `lingering_timeout`, plus a byte cap: whichever comes first
/// ends it.
#[derive(Debug)]
pub(super) struct Discard {
    left: BodyLeft,
    read_bytes: u64,
    until: Instant,
    idle_until: Instant,
}

impl Discard {
    pub(super) fn new(left: BodyLeft, now: Instant) -> Discard {
        Discard {
            left,
            read_bytes: 0,
            until: now + LINGER_TIME,
            idle_until: now + LINGER_IDLE,
        }
    }

    /// Drops `input`; returns whether the connection closes now (the body is all read, or the
    /// byte cap is reached).
    pub(super) fn feed(&mut self, input: &[u8], now: Instant) -> bool {
        let n = input.len() as u64;
        self.read_bytes += n;
        self.idle_until = now + LINGER_IDLE;
        let body_ended = match &mut self.left {
            BodyLeft::Bytes(left) => {
                *left = left.saturating_sub(n);
                *left == 0
            }
            // A framing error ends the discard too: the body's end cannot be found.
            BodyLeft::Chunked(dec) => dec.decode_with(input, |_| {}).map_or(true, |p| p.done),
        };
        body_ended || self.read_bytes >= LINGER_BYTES_MAX
    }

    /// When the lingering close ends if nothing else ends it.
    pub(super) fn deadline(&self) -> Instant {
        self.until.min(self.idle_until)
    }
}
