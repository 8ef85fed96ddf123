//! Decoding: an incremental frame decoder that takes bytes in any split.
//!
//! Bytes go straight from the caller's input into the frame being assembled (a payload's bytes
//! into the `Vec` the message will own), so each byte is copied once and nothing is copied
//! again as more input arrives. The CRC is computed as the bytes arrive. What a frame may hold is
//! checked as early as possible: an unknown kind at its first byte, a length the kind cannot
//! have at the fifth, so a corrupt stream never makes the decoder allocate a large body.
//!
//! It never reads the clock or touches I/O, and never panics on any input (fuzzed:
//! `fuzz/fuzz_targets/log_frame.rs`).

use super::{kind, Corrupt, Message, BODY_BYTES_MAX, DATA_BYTES_MAX, FRAME_CRC_BYTES};
use super::{FRAME_HEAD_BYTES, STRING_BYTES_MAX};

/// `kind`, `len`, and for `DATA` and `CHUNK` the 8-byte offset kept apart from the payload.
const HEAD_BYTES_MAX: usize = FRAME_HEAD_BYTES + 8;

/// An incremental decoder of frames, one connection's worth.
///
/// Two ways to use it: [`Decoder::decode`] takes a slice and says how much of it it used (at most
/// up to the end of one frame), for a caller that owns an input buffer (the server's sessions);
/// [`Decoder::feed`] and [`Decoder::next`] keep unconsumed bytes inside, for a caller that reads
/// a socket into a scratch buffer (the shipper, `oasis logs`). Do not mix the two on one decoder.
///
/// After a [`Corrupt`] the decoder stays failed: every later call returns the same error.
#[derive(Debug)]
pub struct Decoder {
    head: [u8; HEAD_BYTES_MAX],
    head_len: usize,
    /// How many head bytes this frame has (5, or 13 once a payload kind's length is known).
    head_want: usize,
    /// Body bytes after the head (for a payload kind, the payload alone).
    body_want: usize,
    body: Vec<u8>,
    crc: [u8; FRAME_CRC_BYTES],
    crc_len: usize,
    /// CRC-32C of the frame's head, and of its body so far (combined when the CRC arrives).
    running: u32,
    body_crc: u32,
    /// The CRC-32C of the last `DATA` or `CHUNK` payload decoded.
    payload_crc: u32,
    failed: Option<Corrupt>,
    /// Bytes given to `feed` and not yet decoded, from `staged_at`.
    staged: Vec<u8>,
    staged_at: usize,
}

impl Default for Decoder {
    fn default() -> Self {
        Self::new()
    }
}

impl Decoder {
    /// A decoder at the start of a connection.
    pub fn new() -> Decoder {
        Decoder {
            head: [0; HEAD_BYTES_MAX],
            head_len: 0,
            head_want: FRAME_HEAD_BYTES,
            body_want: 0,
            body: Vec::new(),
            crc: [0; FRAME_CRC_BYTES],
            crc_len: 0,
            running: 0,
            body_crc: 0,
            payload_crc: 0,
            failed: None,
            staged: Vec::new(),
            staged_at: 0,
        }
    }

    /// Takes bytes from `input` up to the end of at most one frame. Returns how many it used
    /// (all of them unless a frame completed before the end) and the message, if one completed.
    /// `Ok((n, None))` with `n == input.len()`: it needs more bytes.
    pub fn decode(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), Corrupt> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        match self.step(input) {
            Ok(r) => Ok(r),
            Err(e) => {
                self.failed = Some(e.clone());
                self.body = Vec::new();
                Err(e)
            }
        }
    }

    /// Keeps `bytes` for [`Decoder::next`]. What is kept is bounded by what the caller feeds
    /// before it asks for messages: feed one read's worth, then call `next` until `Ok(None)`.
    pub fn feed(&mut self, bytes: &[u8]) {
        if self.staged_at == self.staged.len() {
            self.staged.clear();
            self.staged_at = 0;
        } else if self.staged_at > self.staged.len() / 2 {
            self.staged.drain(..self.staged_at);
            self.staged_at = 0;
        }
        self.staged.extend_from_slice(bytes);
    }

    /// The next message from the bytes fed so far: `Ok(None)` when they hold no whole frame yet.
    #[allow(clippy::should_implement_trait)] // Not an Iterator: it fails, and resumes after more input.
    pub fn next(&mut self) -> Result<Option<Message>, Corrupt> {
        let staged = std::mem::take(&mut self.staged);
        let result = self.decode(&staged[self.staged_at..]);
        self.staged = staged;
        let (used, msg) = result?;
        self.staged_at += used;
        Ok(msg)
    }

    /// The frame whose head `input` completes in the next [`Decoder::decode`] of it: its kind
    /// and the body bytes the decoder then allocates (a `DATA` or `CHUNK`: its payload). `None`
    /// when no head completes within `input`, a frame's body is already being taken (see
    /// [`Decoder::held_bytes`]), or the head is corrupt (`decode` will say so). For a caller that
    /// must account for memory before it is allocated.
    pub fn head_ahead(&self, input: &[u8]) -> Option<(u8, usize)> {
        if self.failed.is_some()
            || self.head_len >= FRAME_HEAD_BYTES
            || self.head_len + input.len() < FRAME_HEAD_BYTES
        {
            return None;
        }
        let mut head = [0u8; FRAME_HEAD_BYTES];
        head[..self.head_len].copy_from_slice(&self.head[..self.head_len]);
        head[self.head_len..].copy_from_slice(&input[..FRAME_HEAD_BYTES - self.head_len]);
        let k = head[0];
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let (min, max) = limits(k)?;
        if len > BODY_BYTES_MAX || len < min || len > max {
            return None;
        }
        Some((k, if is_payload(k) { len - 8 } else { len }))
    }

    /// The CRC-32C of the payload of the last `DATA` or `CHUNK` decoded (checked with the
    /// frame's), for a caller that stores the payload with its checksum without computing it again.
    pub fn payload_crc(&self) -> u32 {
        self.payload_crc
    }

    /// Bytes the decoder holds: the body of the frame being taken (allocated whole when its
    /// head arrives) and what [`Decoder::feed`] kept.
    pub fn held_bytes(&self) -> usize {
        self.body.capacity() + self.staged.capacity()
    }

    /// Whether part of a frame has been taken (a connection that ends now ends mid-frame).
    pub fn in_frame(&self) -> bool {
        self.head_len > 0 || self.staged_at < self.staged.len()
    }

    fn step(&mut self, input: &[u8]) -> Result<(usize, Option<Message>), Corrupt> {
        let mut at = 0;
        while at < input.len() {
            let rest = &input[at..];
            if self.head_len < self.head_want {
                let n = rest.len().min(self.head_want - self.head_len);
                self.head[self.head_len..self.head_len + n].copy_from_slice(&rest[..n]);
                self.head_len += n;
                at += n;
                self.check_head()?;
                if self.head_len == self.head_want {
                    self.running = crc32c::crc32c(&self.head[..self.head_len]);
                    self.body_crc = 0;
                }
            } else if self.body.len() < self.body_want {
                let n = rest.len().min(self.body_want - self.body.len());
                self.body.extend_from_slice(&rest[..n]);
                self.body_crc = crc32c::crc32c_append(self.body_crc, &rest[..n]);
                at += n;
            } else {
                let n = rest.len().min(FRAME_CRC_BYTES - self.crc_len);
                self.crc[self.crc_len..self.crc_len + n].copy_from_slice(&rest[..n]);
                self.crc_len += n;
                at += n;
                if self.crc_len == FRAME_CRC_BYTES {
                    return Ok((at, Some(self.finish()?)));
                }
            }
        }
        Ok((at, None))
    }

    /// Checks the head as far as it has arrived; at its fifth byte sets how much follows.
    fn check_head(&mut self) -> Result<(), Corrupt> {
        let k = self.head[0];
        if self.head_len >= 1 && limits(k).is_none() {
            return Err(Corrupt(format!("unknown message kind {k}")));
        }
        if self.head_len == FRAME_HEAD_BYTES && self.head_want == FRAME_HEAD_BYTES {
            let len = u32::from_be_bytes([self.head[1], self.head[2], self.head[3], self.head[4]])
                as usize;
            let (min, max) = limits(k).unwrap_or((0, 0));
            if len > BODY_BYTES_MAX {
                return Err(Corrupt(format!(
                    "length {len} is over the limit of {BODY_BYTES_MAX}"
                )));
            }
            if len < min || len > max {
                return Err(Corrupt(format!(
                    "a {} body of {len} bytes (it has {min} to {max})",
                    name(k)
                )));
            }
            if is_payload(k) {
                self.head_want = HEAD_BYTES_MAX;
                self.body_want = len - 8;
            } else {
                self.body_want = len;
            }
            self.body = Vec::with_capacity(self.body_want);
        }
        Ok(())
    }

    /// The CRC is in: checks it, parses the body and gets ready for the next frame.
    fn finish(&mut self) -> Result<Message, Corrupt> {
        let got = u32::from_be_bytes(self.crc);
        let computed = super::crc::combine(self.running, self.body_crc, self.body.len());
        if got != computed {
            return Err(Corrupt(format!(
                "CRC-32C mismatch in a {} frame (sent {got:08x}, computed {:08x})",
                name(self.head[0]),
                computed
            )));
        }
        let k = self.head[0];
        self.payload_crc = self.body_crc;
        let body = std::mem::take(&mut self.body);
        let offset = u64::from_be_bytes(self.head[5..13].try_into().unwrap_or([0; 8]));
        self.head_len = 0;
        self.head_want = FRAME_HEAD_BYTES;
        self.body_want = 0;
        self.crc_len = 0;
        if is_payload(k) {
            return Ok(if k == kind::DATA {
                Message::Data {
                    offset,
                    bytes: body,
                }
            } else {
                Message::Chunk {
                    offset,
                    bytes: body,
                }
            });
        }
        parse_fields(k, &body)
    }
}

fn is_payload(k: u8) -> bool {
    k == kind::DATA || k == kind::CHUNK
}

/// The least and most body bytes of each kind; `None` for an unknown kind.
fn limits(k: u8) -> Option<(usize, usize)> {
    let string = 2 + STRING_BYTES_MAX;
    Some(match k {
        kind::HELLO => (1 + 2 + 8, 1 + string + 8),
        kind::DATA | kind::CHUNK => (8 + 1, 8 + DATA_BYTES_MAX),
        kind::READ => (2 + 8 + 1, string + 8 + 1),
        kind::LIST => (2, string),
        kind::STREAM => (2 + 24, string + 24),
        kind::WELCOME | kind::GAP => (16, 16),
        kind::ACK | kind::END => (8, 8),
        kind::REFUSE => (1 + 8 + 2, 1 + 8 + string),
        _ => return None,
    })
}

fn name(k: u8) -> &'static str {
    match k {
        kind::HELLO => "HELLO",
        kind::DATA => "DATA",
        kind::READ => "READ",
        kind::LIST => "LIST",
        kind::STREAM => "STREAM",
        kind::WELCOME => "WELCOME",
        kind::ACK => "ACK",
        kind::REFUSE => "REFUSE",
        kind::CHUNK => "CHUNK",
        kind::GAP => "GAP",
        kind::END => "END",
        _ => "unknown",
    }
}

/// The fields of a message without a payload, every body byte accounted for.
fn parse_fields(k: u8, body: &[u8]) -> Result<Message, Corrupt> {
    let mut r = Fields { body, at: 0, k };
    let msg = match k {
        kind::HELLO => Message::Hello {
            version: r.u8()?,
            stream: r.string()?,
            oldest_unacked: r.u64()?,
        },
        kind::READ => Message::Read {
            stream: r.string()?,
            from: r.u64()?,
            follow: match r.u8()? {
                0 => false,
                1 => true,
                f => return Err(Corrupt(format!("READ with follow = {f} (0 or 1)"))),
            },
        },
        kind::LIST => Message::List {
            prefix: r.string()?,
        },
        kind::STREAM => Message::Stream {
            stream: r.string()?,
            first: r.u64()?,
            durable_end: r.u64()?,
            held: r.u64()?,
        },
        kind::WELCOME => Message::Welcome {
            expect: r.u64()?,
            durable_end: r.u64()?,
        },
        kind::ACK => Message::Ack {
            durable_end: r.u64()?,
        },
        kind::REFUSE => Message::Refuse {
            code: r.u8()?,
            expect: r.u64()?,
            reason: r.string()?,
        },
        kind::GAP => {
            let (from, to) = (r.u64()?, r.u64()?);
            if from >= to {
                return Err(Corrupt(format!("GAP from {from} to {to} is empty")));
            }
            Message::Gap { from, to }
        }
        kind::END => Message::End { offset: r.u64()? },
        _ => return Err(Corrupt(format!("unknown message kind {k}"))),
    };
    if r.at != body.len() {
        return Err(Corrupt(format!(
            "{} bytes after the fields of a {} body",
            body.len() - r.at,
            name(k)
        )));
    }
    Ok(msg)
}

/// Reads a body's fields in order.
struct Fields<'a> {
    body: &'a [u8],
    at: usize,
    k: u8,
}

impl Fields<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], Corrupt> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.body.len());
        let Some(end) = end else {
            return Err(Corrupt(format!(
                "a {} body too short for its fields",
                name(self.k)
            )));
        };
        let s = &self.body[self.at..end];
        self.at = end;
        Ok(s)
    }

    fn u8(&mut self) -> Result<u8, Corrupt> {
        Ok(self.take(1)?[0])
    }

    fn u64(&mut self) -> Result<u64, Corrupt> {
        let b = self.take(8)?;
        Ok(u64::from_be_bytes(b.try_into().unwrap_or([0; 8])))
    }

    fn string(&mut self) -> Result<String, Corrupt> {
        let b = self.take(2)?;
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        if n > STRING_BYTES_MAX {
            return Err(Corrupt(format!(
                "a string of {n} bytes in a {} body (at most {STRING_BYTES_MAX})",
                name(self.k)
            )));
        }
        let k = self.k;
        let s = self.take(n)?;
        String::from_utf8(s.to_vec())
            .map_err(|_| Corrupt(format!("a string that is not UTF-8 in a {} body", name(k))))
    }
}
