//! The engine's settings and the send-path choice they carry.
//!
//! Plain data read by every thread: the runtime sizes pools and threads from it, workers decide
//! per transmit from it. It must never hold state that changes while the engine runs (live
//! reloads happen above the engine, in the services).

use crate::layout::Layout;

/// Engine settings (from the `[engine]` section of the configuration).
#[derive(Clone, Debug)]
pub struct EngineConfig {
    pub layout: Layout,
    /// Size of one pool chunk: the most a file read or send moves at once.
    pub chunk_bytes: usize,
    /// Number of chunks in the pool (all workers share it).
    pub chunks: usize,
    pub ring_entries: u32,
    /// Per-connection input buffer (request heads, upload bodies in flight).
    pub input_bytes_max: usize,
    /// Provided receive buffers per worker for multishot receives (a power of two; 0 turns
    /// multishot receive off: connections poll, then receive into their own buffer).
    pub recv_buffers: usize,
    /// Size of one provided receive buffer.
    pub recv_buffer_bytes: usize,
    /// Connections one worker may hold; also sizes its mailbox.
    pub connections_per_worker_max: usize,
    /// Blocking jobs queued for the catalog thread at most.
    pub jobs_max: usize,
    /// Register the pool with the rings (READ_FIXED).
    pub fixed_buffers: bool,
    /// How file bytes reach the socket: [`SendPath::ReadSend`] or [`SendPath::ZeroCopy`].
    pub send_path: SendPath,
    /// Object files may be opened with O_DIRECT (storage decides per file): the engine reads such
    /// files block-aligned into pool chunks and never splices. Off: no file is checked.
    pub direct_reads: bool,
    pub listen_backlog: u32,
    /// Cold stretches one worker fetches into the page cache at once before it sends them (a
    /// 2 MiB block each, read into one huge folio by a ring MADVISE in an io-wq thread); more
    /// cold stretches wait for one to end (a stretch whose block is being fetched waits for that
    /// fetch). With 0, cold pieces take the ring splice, 256 KiB at a time.
    pub cold_fetches_max: usize,
    /// Pin workers to their cores.
    pub pin: bool,
    /// Hold a large response body's partial segments (TCP_CORK) until the response is done,
    /// as nginx's `tcp_nopush`: whole segments, fewer packets and ACKs per byte.
    pub tcp_nopush: bool,
}

impl EngineConfig {
    pub fn with_layout(layout: Layout) -> Self {
        EngineConfig {
            layout,
            chunk_bytes: 256 * 1024,
            chunks: 512,
            ring_entries: 1024,
            input_bytes_max: 16 * 1024,
            recv_buffers: 2048,
            recv_buffer_bytes: 4096,
            connections_per_worker_max: 65_536,
            jobs_max: 256,
            fixed_buffers: true,
            send_path: SendPath::ZeroCopy,
            direct_reads: false,
            listen_backlog: 4096,
            cold_fetches_max: 16,
            pin: true,
            tcp_nopush: true,
        }
    }
}

/// How file bytes reach a socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SendPath {
    /// READ (fixed buffer) into a pool chunk, then SEND: one copy in, one copy out; works for any
    /// file and lets a response head share the send with small bodies.
    ReadSend,
    /// Page references move, no copy in the server (`[engine] send_path = "splice"`): one
    /// `sendfile` for stretches whose pages are in the page cache, a 2 MiB cold fetch then
    /// `sendfile` for the rest, and SPLICE file -> pipe -> socket only when fetches are off or
    /// fetched pages were evicted. Used for body pieces of at least `SPLICE_MIN_BYTES`; smaller
    /// ones take `ReadSend`.
    ZeroCopy,
}

/// Body pieces smaller than this take the read-send path even when splicing.
pub const SPLICE_MIN_BYTES: u64 = 64 * 1024;
