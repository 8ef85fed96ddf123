//! The shipper: sends one byte stream (a followed file, standard input, a program's log lines)
//! to a list of log servers, and survives dropped connections, dead or hung servers and its own
//! restarts without losing or repeating a byte.
//!
//! Two threads per stream: a producer reads the source into the [`window`] of unacknowledged
//! bytes (stopping when it is full), and the connection loop (`conn`) sends from it. For each
//! connection the loop picks a server at random, says `HELLO` with its oldest unacknowledged
//! offset, learns from `WELCOME` where that server wants bytes, and sends from there; servers
//! acknowledge what is durable and the window forgets it. A dropped connection, a refusal or a
//! server that acknowledges nothing for `ack_timeout` while bytes are outstanding sends the loop
//! to another server after a jittered, bounded backoff ([`backoff`]); it resends from what that
//! server says it holds, so each byte is stored once per server that took it, at its offset.
//!
//! Sources: [`Shipper::follow`] (a file, `tail -F` style, with a state file so a restart resumes
//! at the acknowledged offset: [`follow`], [`state`]), [`Shipper::read`] (any `Read`, e.g.
//! standard input) and [`Shipper::lines`] (a queue of lines that never blocks its callers, which
//! the `tracing` [`layer`] fills). A source that is not a file starts its offsets after the end
//! the servers hold of the stream (asked of every server before the first byte is sent).
//!
//! Sockets are blocking `std::net` with a timeout on every connect, write and read: one
//! connection per stream needs no event loop, and no call waits forever. This module does not
//! speak the protocol's reading side (`READ`), and never decides where bytes are stored.

pub mod backoff;
mod conn;
pub mod follow;
pub mod layer;
pub mod reader;
pub mod state;
pub mod window;

use std::io::Read;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub use follow::StateKeeper;
pub use reader::{LineReader, LineSender};
pub use state::{FileId, ShipState, StateError};

use window::Window;

/// Most servers a shipper may be given.
pub const SERVERS_MAX: usize = 64;
/// The smallest window: smaller ones would stall a connection between acknowledgements.
pub const WINDOW_BYTES_MIN: usize = 64 * 1024;
/// The largest window.
pub const WINDOW_BYTES_MAX: usize = 1 << 30;

/// How a shipper ships.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShipConfig {
    /// The servers, `host:port` each, resolved at each connection.
    pub servers: Vec<String>,
    /// The stream's name (`PROTOCOL.md`: e.g. `web-1/access`).
    pub stream: String,
    /// A server that acknowledges nothing this long while bytes are outstanding is taken for
    /// dead or hung.
    pub ack_timeout: Duration,
    /// The longest a connection attempt may take.
    pub connect_timeout: Duration,
    /// The longest a write may block (a server that takes no bytes).
    pub write_timeout: Duration,
    /// The first reconnection delay's upper bound (full jitter, doubling per failure).
    pub backoff_initial: Duration,
    /// The reconnection delay's cap.
    pub backoff_max: Duration,
    /// Unacknowledged bytes kept in memory at most; a full window stops reading the source.
    /// At least the socket's send buffer (4 MiB by default on Linux).
    pub window_bytes: usize,
    /// Bytes in one `DATA` frame at most.
    pub frame_bytes_max: usize,
    /// How often a followed file is looked at when nothing is being appended.
    pub poll_interval: Duration,
}

impl ShipConfig {
    /// The defaults for shipping `stream` to `servers`: 5 s ack, connect and write timeouts,
    /// backoff from 50 ms to 5 s, a 4 MiB window, 256 KiB frames, a 100 ms poll.
    pub fn new(servers: Vec<String>, stream: impl Into<String>) -> ShipConfig {
        ShipConfig {
            servers,
            stream: stream.into(),
            ack_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(5),
            backoff_initial: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            window_bytes: 4 << 20,
            frame_bytes_max: 256 * 1024,
            poll_interval: Duration::from_millis(100),
        }
    }

    /// Checks the settings; the error says which and what to change.
    pub fn check(&self) -> Result<(), ShipError> {
        let bad = |why: String| Err(ShipError::Config(why));
        if self.servers.is_empty() {
            return bad("no server to ship to: give at least one host:port".into());
        }
        if self.servers.len() > SERVERS_MAX {
            return bad(format!(
                "{} servers; at most {SERVERS_MAX}",
                self.servers.len()
            ));
        }
        if let Some(s) = self.servers.iter().find(|s| s.rsplit_once(':').is_none()) {
            return bad(format!(
                "server {s:?} is not host:port (e.g. 10.0.0.5:7420)"
            ));
        }
        if let Err(e) = crate::proto::validate_stream(&self.stream) {
            return bad(e.to_string());
        }
        if !(WINDOW_BYTES_MIN..=WINDOW_BYTES_MAX).contains(&self.window_bytes) {
            return bad(format!(
                "window of {} bytes; between {WINDOW_BYTES_MIN} and {WINDOW_BYTES_MAX}",
                self.window_bytes
            ));
        }
        if self.frame_bytes_max == 0 || self.frame_bytes_max > crate::proto::DATA_BYTES_MAX {
            return bad(format!(
                "frame_bytes_max {}; between 1 and {}",
                self.frame_bytes_max,
                crate::proto::DATA_BYTES_MAX
            ));
        }
        let timeouts = [
            self.ack_timeout,
            self.connect_timeout,
            self.write_timeout,
            self.poll_interval,
        ];
        if timeouts.iter().any(|t| t.is_zero()) {
            return bad("timeouts and the poll interval must be positive".into());
        }
        Ok(())
    }
}

/// Why a shipper could not start.
#[derive(Debug, thiserror::Error)]
pub enum ShipError {
    /// A setting is out of range.
    #[error("shipper: {0}")]
    Config(String),
    /// The state file could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The state file belongs to another stream.
    #[error("state file {path} is for stream {found:?}, not {stream:?}; pass --state-file for this stream's own")]
    StateStream {
        /// The state file.
        path: std::path::PathBuf,
        /// The stream it names.
        found: String,
        /// The stream being shipped.
        stream: String,
    },
    /// A thread could not be started.
    #[error("shipper: cannot start a thread: {0}")]
    Thread(std::io::Error),
}

/// What a shipper has done so far.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShipStats {
    /// Every byte of the stream below this offset is durable on some server.
    pub acked: u64,
    /// The stream offset up to which the source has been read.
    pub read: u64,
    /// Bytes sent in `DATA` frames, resends included.
    pub sent_bytes: u64,
    /// Bytes sent again (after a reconnection or a refusal, to a server that lacked them).
    pub resent_bytes: u64,
    /// Times sending went back below what had been sent before.
    pub resends: u64,
    /// Connections a server welcomed.
    pub connects: u64,
    /// Connection attempts after the first.
    pub reconnects: u64,
    /// Connections that failed: no connection, a drop, a timeout, a refusal.
    pub failures: u64,
    /// `REFUSE` frames received.
    pub refusals: u64,
    /// Lines dropped because the line queue was full ([`Shipper::lines`] only).
    pub dropped_lines: u64,
    /// The server of the connection in use, if one is.
    pub server: Option<String>,
}

#[derive(Default)]
pub(crate) struct Counters {
    sent_bytes: AtomicU64,
    resent_bytes: AtomicU64,
    resends: AtomicU64,
    connects: AtomicU64,
    reconnects: AtomicU64,
    failures: AtomicU64,
    refusals: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }
}

/// What the producer, the connection loop and the handle share.
pub(crate) struct Shared {
    pub(crate) config: ShipConfig,
    pub(crate) window: Arc<Window>,
    pub(crate) counters: Counters,
    pub(crate) server: Mutex<Option<String>>,
    /// Set by a shutdown: the connection loop gives up at this instant.
    pub(crate) deadline: Mutex<Option<Instant>>,
}

impl Shared {
    /// The instant to give up at, if a shutdown set one.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the connection loop should end: the source ended and all of it is acknowledged,
    /// or a shutdown's deadline passed.
    pub(crate) fn should_end(&self) -> bool {
        self.window.snapshot().all_acked() || self.deadline().is_some_and(|d| Instant::now() >= d)
    }

    pub(crate) fn set_server(&self, server: Option<&str>) {
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = server.map(str::to_string);
    }
}

/// A running shipper of one stream. Dropping it stops it at once (see [`Shipper::shutdown`]).
pub struct Shipper {
    shared: Arc<Shared>,
    sender: Option<JoinHandle<()>>,
    /// The file follower (joined at shutdown); a `Read` source's thread may be blocked in a read
    /// and is left to end on its own.
    follower: Option<JoinHandle<()>>,
    keeper: Option<Arc<StateKeeper>>,
    dropped: Option<Arc<AtomicU64>>,
    /// Bytes a `Read` source's thread put into the window.
    pushed: Arc<AtomicU64>,
    /// Bytes a line queue took (lines the window is still to get at a shutdown).
    accepted: Option<Arc<AtomicU64>>,
}

impl Shipper {
    fn start(config: ShipConfig, window: Window) -> Result<Shipper, ShipError> {
        config.check()?;
        let shared = Arc::new(Shared {
            config,
            window: Arc::new(window),
            counters: Counters::default(),
            server: Mutex::new(None),
            deadline: Mutex::new(None),
        });
        let sender = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name("oasis-ship".into())
                .spawn(move || conn::run(&shared))
                .map_err(ShipError::Thread)?
        };
        Ok(Shipper {
            shared,
            sender: Some(sender),
            follower: None,
            keeper: None,
            dropped: None,
            pushed: Arc::default(),
            accepted: None,
        })
    }

    /// Follows the file at `path` (`tail -F`: across rotations by rename and truncations) and
    /// ships it, resuming at the acknowledged offset the state file at `state_file` holds (a
    /// new one starts the stream at the file's first byte).
    pub fn follow(
        config: ShipConfig,
        path: &Path,
        state_file: &Path,
    ) -> Result<Shipper, ShipError> {
        config.check()?;
        let state = ShipState::load(state_file)?;
        if let Some(s) = &state {
            if s.stream != config.stream {
                return Err(ShipError::StateStream {
                    path: state_file.to_path_buf(),
                    found: s.stream.clone(),
                    stream: config.stream.clone(),
                });
            }
        }
        let start = state.as_ref().map_or(0, |s| s.acked);
        let keeper = Arc::new(StateKeeper::new(
            state_file.to_path_buf(),
            config.stream.clone(),
        ));
        let poll = config.poll_interval;
        let mut shipper = Shipper::start(
            config.clone(),
            Window::new(start, config.window_bytes, true),
        )?;
        let follower = follow::Follower::new(
            path.to_path_buf(),
            state.as_ref(),
            Arc::clone(&shipper.shared.window),
            Arc::clone(&keeper),
            poll,
        );
        shipper.follower = Some(follower.spawn().map_err(ShipError::Thread)?);
        shipper.keeper = Some(keeper);
        Ok(shipper)
    }

    /// Ships everything `input` gives until its end. The stream's offsets continue after the
    /// end the servers hold.
    pub fn read<R: Read + Send + 'static>(
        config: ShipConfig,
        input: R,
    ) -> Result<Shipper, ShipError> {
        let shipper = Shipper::start(config.clone(), Window::new(0, config.window_bytes, false))?;
        reader::spawn_reader(
            input,
            Arc::clone(&shipper.shared.window),
            Arc::clone(&shipper.pushed),
        )
        .map_err(ShipError::Thread)?;
        Ok(shipper)
    }

    /// Ships lines queued through the returned [`LineSender`], which never blocks: at most
    /// `lines_max` lines and `bytes_max` bytes wait, more are dropped and counted. The stream's
    /// offsets continue after the end the servers hold.
    pub fn lines(
        config: ShipConfig,
        lines_max: usize,
        bytes_max: usize,
    ) -> Result<(Shipper, LineSender), ShipError> {
        let (tx, rx) = reader::line_queue(lines_max, bytes_max);
        let mut shipper = Shipper::read(config, rx)?;
        shipper.dropped = Some(tx.dropped_counter());
        shipper.accepted = Some(tx.accepted_counter());
        Ok((shipper, tx))
    }

    /// What the shipper has done so far.
    pub fn stats(&self) -> ShipStats {
        let s = self.shared.window.snapshot();
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        ShipStats {
            acked: s.acked,
            read: s.read_end,
            sent_bytes: get(&c.sent_bytes),
            resent_bytes: get(&c.resent_bytes),
            resends: get(&c.resends),
            connects: get(&c.connects),
            reconnects: get(&c.reconnects),
            failures: get(&c.failures),
            refusals: get(&c.refusals),
            dropped_lines: self.dropped.as_deref().map_or(0, get),
            server: self
                .shared
                .server
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    /// Whether the source ended and a server acknowledged all of it.
    pub fn is_done(&self) -> bool {
        self.shared.window.snapshot().all_acked()
    }

    /// Waits until the source ended and all of it is acknowledged, or `timeout` passed. Returns
    /// whether it is done.
    pub fn wait(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let s = self.shared.window.snapshot();
            if s.all_acked() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.shared.window.wait_change(s.generation, deadline - now);
        }
    }

    /// Stops reading the source, then keeps trying for at most `grace` to get what was read
    /// acknowledged; writes the state file (for a followed file) and returns the final stats.
    /// A line queue's lines queued before the call are read first. Bytes read and not
    /// acknowledged are lost for a `Read` source; a followed file's are read again by the next
    /// shipper.
    pub fn shutdown(mut self, grace: Duration) -> ShipStats {
        self.stop(grace);
        self.stats()
    }

    fn stop(&mut self, grace: Duration) {
        let deadline = Instant::now() + grace;
        if let Some(accepted) = &self.accepted {
            let queued = accepted.load(Ordering::Relaxed);
            let window = &self.shared.window;
            loop {
                let s = window.snapshot();
                let now = Instant::now();
                if self.pushed.load(Ordering::Relaxed) >= queued || now >= deadline {
                    break;
                }
                // Short waits: the count moves just after the window does.
                window.wait_change(
                    s.generation,
                    (deadline - now).min(Duration::from_millis(10)),
                );
            }
        }
        *self
            .shared
            .deadline
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(deadline);
        self.shared.window.close();
        if let Some(t) = self.follower.take() {
            let _ = t.join();
        }
        if let Some(t) = self.sender.take() {
            let _ = t.join();
        }
        if let Some(keeper) = &self.keeper {
            if let Err(e) = keeper.persist(self.shared.window.snapshot(), true) {
                tracing::warn!("shipper of {}: {e}", self.shared.config.stream);
            }
        }
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        if self.sender.is_some() {
            self.stop(Duration::ZERO);
        }
    }
}
