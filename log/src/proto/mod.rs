//! The frames of the log protocol (`log/PROTOCOL.md`), encoded and decoded without I/O.
//!
//! [`encode`] appends one frame to a caller's buffer; [`Decoder`] takes bytes as they arrive
//! (any split) and yields whole [`Message`]s, or [`Corrupt`] for a frame that breaks a rule (the
//! caller then closes the connection and keeps nothing of it). Stream names are checked by
//! [`validate_stream`]. Every size the protocol bounds is a constant here.
//!
//! Pure: no socket, no file, no clock. The decoder allocates at most one frame's body at a time
//! (at most [`BODY_BYTES_MAX`]), so a peer cannot make it hold more. A `HELLO` whose version or
//! stream name is wrong is *not* corrupt: it decodes, and the server answers `REFUSE` 3.

pub mod crc;
mod decode;
mod encode;
mod name;
#[cfg(test)]
mod tests;

pub use decode::Decoder;
pub use encode::{chunk_frame_parts, data_frame_parts, encode, encode_chunk, encode_data};
pub use name::{validate_stream, BadStreamName, STREAM_NAME_BYTES_MAX};

/// The protocol version a `HELLO` carries (and the only one this crate speaks).
pub const VERSION: u8 = 1;

/// Most bytes in a frame's body (`len`): a full `DATA` plus room for its fields.
pub const BODY_BYTES_MAX: usize = DATA_BYTES_MAX + 64;
/// Most stream bytes in one `DATA` (and one `CHUNK`); at least one.
pub const DATA_BYTES_MAX: usize = 1_048_576;
/// Longest string [`encode`] writes (a `REFUSE` reason is cut to it at a character boundary).
pub const STRING_BYTES_MAX: usize = 1024;
/// Bytes before a frame's body: `kind` (1) and `len` (4).
pub const FRAME_HEAD_BYTES: usize = 5;
/// Bytes after a frame's body: the CRC-32C.
pub const FRAME_CRC_BYTES: usize = 4;
/// What a frame adds to its body.
pub const FRAME_OVERHEAD_BYTES: usize = FRAME_HEAD_BYTES + FRAME_CRC_BYTES;

const _: () = assert!(BODY_BYTES_MAX <= u32::MAX as usize);
const _: () = assert!(STRING_BYTES_MAX <= u16::MAX as usize);
// A HELLO or READ with the longest string fits in a body.
const _: () = assert!(2 + STRING_BYTES_MAX + 9 <= BODY_BYTES_MAX);

/// The `kind` byte of each message.
pub mod kind {
    /// Shipper: opens a stream for writing.
    pub const HELLO: u8 = 1;
    /// Shipper: bytes of the stream at an offset.
    pub const DATA: u8 = 2;
    /// Reader: asks for a stream's bytes.
    pub const READ: u8 = 3;
    /// Reader: asks which streams the server holds.
    pub const LIST: u8 = 4;
    /// Server: where to send from.
    pub const WELCOME: u8 = 16;
    /// Server: what is durable.
    pub const ACK: u8 = 17;
    /// Server: a refusal with its code.
    pub const REFUSE: u8 = 18;
    /// Server: stream bytes for a reader.
    pub const CHUNK: u8 = 19;
    /// Server: a range it does not hold.
    pub const GAP: u8 = 20;
    /// Server: no more bytes now (or the end of a `LIST`'s answer).
    pub const END: u8 = 21;
    /// Server: one stream it holds (a `LIST`'s answer).
    pub const STREAM: u8 = 22;
}

/// `REFUSE` codes (`PROTOCOL.md`). After codes 2-5 the server closes the connection.
pub mod refuse {
    /// A `DATA` at an offset other than the expected one: resume at `expect`.
    pub const UNEXPECTED_OFFSET: u8 = 1;
    /// The server's disk is full; nothing of the frame was kept. Try another server.
    pub const DISK_FULL: u8 = 2;
    /// A bad `HELLO` (version, stream name), or a message that has no place where it came.
    pub const BAD_HELLO: u8 = 3;
    /// The server is at its limit of streams or connections.
    pub const AT_LIMIT: u8 = 4;
    /// Another connection of this server is writing the stream.
    pub const STREAM_BUSY: u8 = 5;
}

/// One frame's message. Byte payloads are owned (`Vec`): a decoded `DATA` hands its buffer on
/// without another copy; [`encode_data`] and [`encode_chunk`] encode from a borrowed slice.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Message {
    /// Opens `stream` for writing; `oldest_unacked` is the shipper's oldest byte no server has
    /// acknowledged. `version` is [`VERSION`] (another one decodes, and is refused).
    Hello {
        version: u8,
        stream: String,
        oldest_unacked: u64,
    },
    /// The stream's bytes from `offset` (1 to [`DATA_BYTES_MAX`] of them).
    Data { offset: u64, bytes: Vec<u8> },
    /// A reader's request: `stream` from `from`; with `follow`, keep sending as it grows.
    Read {
        stream: String,
        from: u64,
        follow: bool,
    },
    /// A reader's request for the streams whose names start with `prefix` (every one when empty).
    List { prefix: String },
    /// The answer to `HELLO`: append from `expect`; the server durably holds up to
    /// `durable_end`.
    Welcome { expect: u64, durable_end: u64 },
    /// Everything of the stream up to `durable_end` this connection sent is durable.
    Ack { durable_end: u64 },
    /// A refusal (`code` from [`refuse`]); `expect` is where to resume for code 1.
    Refuse {
        code: u8,
        expect: u64,
        reason: String,
    },
    /// Stream bytes from `offset` for a reader (1 to [`DATA_BYTES_MAX`] of them).
    Chunk { offset: u64, bytes: Vec<u8> },
    /// The server holds nothing of the stream in `[from, to)` (`from < to`).
    Gap { from: u64, to: u64 },
    /// Nothing more now; for a `READ` without `follow` the reply is complete. After a `LIST`'s
    /// `STREAM`s, `offset` is how many there were.
    End { offset: u64 },
    /// One stream a server holds (a `LIST`'s answer): from `first` to `durable_end`, `held`
    /// bytes of it (less where it has holes).
    Stream {
        stream: String,
        first: u64,
        durable_end: u64,
        held: u64,
    },
}

impl Message {
    /// The message's `kind` byte.
    pub fn kind(&self) -> u8 {
        match self {
            Message::Hello { .. } => kind::HELLO,
            Message::Data { .. } => kind::DATA,
            Message::Read { .. } => kind::READ,
            Message::List { .. } => kind::LIST,
            Message::Welcome { .. } => kind::WELCOME,
            Message::Ack { .. } => kind::ACK,
            Message::Refuse { .. } => kind::REFUSE,
            Message::Chunk { .. } => kind::CHUNK,
            Message::Gap { .. } => kind::GAP,
            Message::End { .. } => kind::END,
            Message::Stream { .. } => kind::STREAM,
        }
    }
}

/// A frame that breaks the protocol: unknown kind, length over the limit, CRC mismatch, or a
/// body that does not hold its message's fields. The connection must be closed; nothing of the
/// frame may be kept. The text says what was wrong, for logs.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt frame: {0}")]
pub struct Corrupt(pub String);
