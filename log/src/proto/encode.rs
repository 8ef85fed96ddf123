//! Encoding: a message as one frame (`kind`, `len`, body, CRC-32C) appended to a buffer.
//!
//! Appends only; never clears or reads the caller's buffer before the frame's start. A frame it
//! writes always decodes (its sizes are held to the protocol's limits, see [`encode`]).

use super::{kind, Message, DATA_BYTES_MAX, STRING_BYTES_MAX};

/// Appends `msg` as one frame to `out`.
///
/// A `REFUSE` reason longer than [`STRING_BYTES_MAX`] is cut at a character boundary.
///
/// # Panics
/// If a `DATA` or `CHUNK` holds no byte or more than [`DATA_BYTES_MAX`], or a stream name is
/// longer than [`STRING_BYTES_MAX`] (also a `LIST` prefix): the peer would take such a frame for corrupt, so sending
/// it is a bug of the caller.
pub fn encode(msg: &Message, out: &mut Vec<u8>) {
    match msg {
        Message::Data { offset, bytes } => encode_data(*offset, bytes, out),
        Message::Chunk { offset, bytes } => encode_chunk(*offset, bytes, out),
        Message::Hello {
            version,
            stream,
            oldest_unacked,
        } => frame(out, kind::HELLO, |b| {
            b.push(*version);
            put_str(b, stream, false);
            b.extend_from_slice(&oldest_unacked.to_be_bytes());
        }),
        Message::Read {
            stream,
            from,
            follow,
        } => frame(out, kind::READ, |b| {
            put_str(b, stream, false);
            b.extend_from_slice(&from.to_be_bytes());
            b.push(u8::from(*follow));
        }),
        Message::List { prefix } => frame(out, kind::LIST, |b| put_str(b, prefix, false)),
        Message::Stream {
            stream,
            first,
            durable_end,
            held,
        } => frame(out, kind::STREAM, |b| {
            put_str(b, stream, false);
            for n in [first, durable_end, held] {
                b.extend_from_slice(&n.to_be_bytes());
            }
        }),
        Message::Welcome {
            expect,
            durable_end,
        } => frame(out, kind::WELCOME, |b| {
            b.extend_from_slice(&expect.to_be_bytes());
            b.extend_from_slice(&durable_end.to_be_bytes());
        }),
        Message::Ack { durable_end } => frame(out, kind::ACK, |b| {
            b.extend_from_slice(&durable_end.to_be_bytes());
        }),
        Message::Refuse {
            code,
            expect,
            reason,
        } => frame(out, kind::REFUSE, |b| {
            b.push(*code);
            b.extend_from_slice(&expect.to_be_bytes());
            put_str(b, reason, true);
        }),
        Message::Gap { from, to } => frame(out, kind::GAP, |b| {
            b.extend_from_slice(&from.to_be_bytes());
            b.extend_from_slice(&to.to_be_bytes());
        }),
        Message::End { offset } => frame(out, kind::END, |b| {
            b.extend_from_slice(&offset.to_be_bytes());
        }),
    }
}

/// Appends a `DATA` frame of `bytes` at `offset` to `out`, without building a [`Message`] (a
/// shipper encodes straight from its buffer). Panics as [`encode`] does.
pub fn encode_data(offset: u64, bytes: &[u8], out: &mut Vec<u8>) {
    payload_frame(kind::DATA, offset, bytes, out);
}

/// Appends a `CHUNK` frame of `bytes` at `offset` to `out`. Panics as [`encode`] does.
pub fn encode_chunk(offset: u64, bytes: &[u8], out: &mut Vec<u8>) {
    payload_frame(kind::CHUNK, offset, bytes, out);
}

/// A `CHUNK` frame's first 13 bytes (`kind`, `len`, `offset`) and its 4-byte CRC, for a payload
/// of `len` bytes whose own CRC-32C is `payload_crc`, sent by the caller in between (from a file,
/// without reading it here). The frame's CRC is combined from the head's and the payload's.
/// Panics as [`encode`] does for a `len` out of bounds.
pub fn chunk_frame_parts(offset: u64, len: usize, payload_crc: u32) -> ([u8; 13], [u8; 4]) {
    payload_frame_parts(kind::CHUNK, offset, len, payload_crc)
}

/// A `DATA` frame's first 13 bytes and its CRC, as [`chunk_frame_parts`] gives a `CHUNK`'s: for a
/// sender that writes the payload from where it is (a vectored write) instead of copying it into
/// a frame.
pub fn data_frame_parts(offset: u64, len: usize, payload_crc: u32) -> ([u8; 13], [u8; 4]) {
    payload_frame_parts(kind::DATA, offset, len, payload_crc)
}

fn payload_frame_parts(kind: u8, offset: u64, len: usize, payload_crc: u32) -> ([u8; 13], [u8; 4]) {
    assert!(
        len > 0 && len <= DATA_BYTES_MAX,
        "a DATA or CHUNK carries 1 to {DATA_BYTES_MAX} bytes, not {len}"
    );
    let mut head = [0u8; 13];
    head[0] = kind;
    head[1..5].copy_from_slice(&((8 + len) as u32).to_be_bytes());
    head[5..].copy_from_slice(&offset.to_be_bytes());
    let crc = super::crc::combine(crc32c::crc32c(&head), payload_crc, len);
    (head, crc.to_be_bytes())
}

fn payload_frame(kind: u8, offset: u64, bytes: &[u8], out: &mut Vec<u8>) {
    assert!(
        !bytes.is_empty() && bytes.len() <= DATA_BYTES_MAX,
        "a DATA or CHUNK carries 1 to {DATA_BYTES_MAX} bytes, not {}",
        bytes.len()
    );
    out.reserve(super::FRAME_OVERHEAD_BYTES + 8 + bytes.len());
    frame(out, kind, |b| {
        b.extend_from_slice(&offset.to_be_bytes());
        b.extend_from_slice(bytes);
    });
}

/// Writes `kind`, a length placeholder, the body `fill` appends, then patches the length and
/// appends the CRC-32C of everything from `kind` on.
fn frame(out: &mut Vec<u8>, kind: u8, fill: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.push(kind);
    out.extend_from_slice(&[0; 4]);
    fill(out);
    let len = out.len() - start - super::FRAME_HEAD_BYTES;
    debug_assert!(len <= super::BODY_BYTES_MAX);
    out[start + 1..start + 5].copy_from_slice(&(len as u32).to_be_bytes());
    let crc = crc32c::crc32c(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// A string: 2-byte length, then its UTF-8 bytes. `cut`: a longer one is cut at a character
/// boundary (a reason); otherwise it panics (a stream name, which must fit whole).
fn put_str(out: &mut Vec<u8>, s: &str, cut: bool) {
    let s = if s.len() <= STRING_BYTES_MAX {
        s
    } else {
        assert!(
            cut,
            "a stream name of {} bytes is over the protocol's {STRING_BYTES_MAX}",
            s.len()
        );
        let mut end = STRING_BYTES_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        &s[..end]
    };
    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
    out.extend_from_slice(s.as_bytes());
}
