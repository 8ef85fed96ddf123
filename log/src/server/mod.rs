//! The log server (`logd`) as an engine [`Service`]: every connection is a [`LogSession`], a
//! sans-IO state machine the engine drives (`oasis_engine::session`).
//!
//! A connection's first frame decides its role: `HELLO` makes it a stream's writer (`write`),
//! `READ` or `LIST` a reader (`read`). Sessions never touch a file on the worker: appends go to
//! the store's writer thread as a `Transmit::Defer` (the acknowledgement comes back through its
//! completer once the bytes are durable), read plans run as jobs on the engine's job thread, and
//! record bytes leave by `Transmit::File` (zero copy). Nothing here reads the clock: time comes
//! from the engine.
//!
//! Module map: `session` (the dispatcher: decoding, output, timeouts, closing), `write` (the
//! writer role: `WELCOME`, appends, `ACK`s, refusals), `read` (the reader role: plans, chunks,
//! gaps, following, lists), `batch` (a writer's pending payloads), `memory` (each connection's
//! share of the memory budget, in proportion to what it holds).

mod batch;
mod memory;
mod read;
mod session;
#[cfg(test)]
mod tests;
mod write;

use std::sync::Arc;
use std::time::{Duration, Instant};

use oasis_engine::{ConnInfo, ResourceManager, Service, Session};

use crate::proto::{encode, refuse, Message, BODY_BYTES_MAX, DATA_BYTES_MAX};
use crate::store::{Store, FILE_PIECE_BYTES_MIN, PLAN_FRAME_BYTES_MAX};

pub use memory::CONN_BASE_BYTES;
pub use session::LogSession;

/// A writer's bytes accepted and not yet handed to the store, at most (one batch waits while the
/// one before it is being committed; input is not read past this).
pub const BATCH_BYTES_MAX: usize = 1 << 20;
/// The most memory a writer connection holds: a frame being decoded, a batch with the store and
/// the next one (each may pass [`BATCH_BYTES_MAX`] by one frame). It reserves this only while
/// it holds it; an idle connection reserves [`CONN_BASE_BYTES`].
pub const WRITER_BYTES_MAX: usize = BODY_BYTES_MAX + 2 * (BATCH_BYTES_MAX + DATA_BYTES_MAX);
/// Memory a reader reserves while it reads: one plan's copied frames, which may pass
/// [`PLAN_FRAME_BYTES_MAX`] by a short record, and that record's read.
pub const READER_BYTES: usize = PLAN_FRAME_BYTES_MAX + 2 * FILE_PIECE_BYTES_MIN as usize + 4096;
/// A writer (or a connection that has not said what it is) that sends nothing this long is closed,
/// so a shipper that vanished does not keep its stream's writer claim.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// A send the peer does not take within this long closes the connection.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(60);
/// A reader that follows a stream looks for new durable bytes this often.
pub const FOLLOW_POLL: Duration = Duration::from_millis(50);

/// What every session of a server shares.
pub(crate) struct Shared {
    /// The data directory every session reads and appends to.
    pub store: Arc<Store>,
    /// Each connection reserves what it holds from it (`memory`; `None` in tests).
    pub rm: Option<Arc<ResourceManager>>,
}

/// The log server's protocol, for one or more listen addresses.
#[derive(Clone)]
pub struct LogdService {
    shared: Arc<Shared>,
    refusal: Arc<[u8]>,
}

impl LogdService {
    /// A service over `store`. With `rm`, each connection reserves its memory there first (a
    /// connection that cannot is refused with `REFUSE` 4).
    pub fn new(store: Arc<Store>, rm: Option<Arc<ResourceManager>>) -> LogdService {
        let mut refusal = Vec::new();
        encode(
            &Message::Refuse {
                code: refuse::AT_LIMIT,
                expect: 0,
                reason: "the log server is at its connection limit; try another server".into(),
            },
            &mut refusal,
        );
        LogdService {
            shared: Arc::new(Shared { store, rm }),
            refusal: refusal.into(),
        }
    }

    /// The store it serves.
    pub fn store(&self) -> &Arc<Store> {
        &self.shared.store
    }

    /// A session as the engine would open it (for drivers without an engine: tests).
    pub fn session(&self, now: Instant) -> LogSession {
        LogSession::new(Arc::clone(&self.shared), None, now)
    }
}

impl Service for LogdService {
    fn open(&self, info: ConnInfo, now: Instant) -> Box<dyn Session> {
        Box::new(LogSession::new(Arc::clone(&self.shared), info.peer, now))
    }

    fn refusal(&self) -> &[u8] {
        &self.refusal
    }
}
