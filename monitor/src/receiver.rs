//! The monitor's process side: [`Monitor::start`] binds the UDP and HTTP addresses and starts
//! the receiver (`oasis-mon-rx`, below) and the HTTP thread (`http.rs`); both share the node
//! table behind one mutex, held only to insert a checked status or to render a page.
//!
//! The receiver is the engine's io_uring datagram loop (`oasis_engine::datagram`: multishot
//! receives into a ring of provided buffers, on a thread of its own); this module is its
//! handler. Each datagram is decoded and its MAC checked before the lock is taken; one the loop
//! found longer than its buffers is counted as oversized. When the table says a node is due its
//! peer list (for the round-trip probes, see `table.rs`), the handler encodes it after the lock
//! is released, in a buffer it keeps, and sends it back to the datagram's source on a clone of
//! the socket (a plain `sendto` with a short timeout; signed with the key when there is one).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use oasis_engine::datagram::{DatagramConfig, DatagramCounts, DatagramHandler, DatagramLoop};

use crate::probe::wire::{encode_peers, Peer, PEERS_BYTES_MAX};
use crate::status::{Intake, Rejection, MAX_DATAGRAM_BYTES, PEERS_MAX};
use crate::table::NodeTable;

/// The longest a peer list's send may wait for the socket's buffer.
const SEND_TIMEOUT: Duration = Duration::from_millis(20);
/// The receive loop's provided buffers: 256 of 2 KiB (512 KiB), each holding a datagram up to
/// 1,980 bytes, past the status bound, so an oversized one is still seen whole and counted.
const RX_BUFFERS: usize = 256;
const RX_BUFFER_BYTES: usize = 2048;
/// While datagrams flow, the receive loop wakes at most this often (or when 128 wait): a
/// wake-up then takes a handful of datagrams instead of one, for 5 ms of latency on a view
/// that refreshes every second.
const RX_BATCH_WAIT: Duration = Duration::from_millis(5);
/// The socket buffer asked for: about 2,000 status datagrams (a fifth of a second of 10,000
/// nodes) while the loop waits or is not scheduled; the kernel caps it at `net.core.rmem_max`
/// (208 KiB by default: raise it on a monitor of thousands of nodes).
const RX_SOCKET_BYTES: usize = 4 << 20;
/// Node ids the dashboard reported rendering, kept for `/api/nodes` (most recent last).
pub(crate) const RENDERED_MAX: usize = 64;

/// What `oasis monitor` is started with.
#[derive(Clone, Debug)]
pub struct MonitorConfig {
    /// Where status datagrams arrive.
    pub udp: SocketAddr,
    /// The dashboard, `/api/nodes`, `/metrics` and `/events`.
    pub http: SocketAddr,
    /// The shared key: with one, only datagrams signed with it are taken.
    pub key: Option<String>,
    /// Most nodes held; past it the oldest stale node makes room.
    pub nodes_max: usize,
    /// Samples kept per node.
    pub history_max: usize,
}

impl MonitorConfig {
    /// A configuration with the default bounds (4096 nodes, 120 samples each).
    pub fn new(udp: SocketAddr, http: SocketAddr, key: Option<String>) -> MonitorConfig {
        MonitorConfig {
            udp,
            http,
            key,
            nodes_max: 4096,
            history_max: 120,
        }
    }
}

/// What the threads share.
pub(crate) struct State {
    pub table: NodeTable,
    /// The monitor's clock starts here; table times are milliseconds since.
    pub started: Instant,
    /// Node ids the dashboard said it rendered (`GET /api/rendered?node=`), bounded.
    pub rendered: VecDeque<String>,
    /// Dashboard render reports received.
    pub renders: u64,
    /// Whether a key is configured (shown, never the key).
    pub authenticated: bool,
    /// Receive errors of the UDP socket (counted by the receive loop's handler).
    pub recv_errors: u64,
    /// Peer lists that could not be sent.
    pub send_errors: u64,
    /// Datagrams the kernel dropped on the socket for a full receive buffer (as the receive
    /// loop last saw it).
    pub lost_in_kernel: u64,
}

impl State {
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }
}

pub(crate) type Shared = Arc<Mutex<State>>;

pub(crate) fn lock(shared: &Shared) -> MutexGuard<'_, State> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running monitor.
pub struct Monitor {
    udp_addr: SocketAddr,
    http_addr: SocketAddr,
    stop: Arc<AtomicBool>,
    rx: DatagramLoop,
    web: JoinHandle<()>,
    shared: Shared,
}

impl Monitor {
    /// Binds both addresses and starts the receive loop and the HTTP thread.
    pub fn start(cfg: MonitorConfig) -> io::Result<Monitor> {
        let udp = UdpSocket::bind(cfg.udp).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("binding --udp {}: {e}; pick a free address", cfg.udp),
            )
        })?;
        // The clone shares the socket: replies go out on it while the loop receives.
        let reply = udp.try_clone()?;
        reply.set_write_timeout(Some(SEND_TIMEOUT))?;
        let http = std::net::TcpListener::bind(cfg.http).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("binding --http {}: {e}; pick a free address", cfg.http),
            )
        })?;
        let shared = Arc::new(Mutex::new(State {
            table: NodeTable::new(cfg.nodes_max.max(1), cfg.history_max.max(1)),
            started: Instant::now(),
            rendered: VecDeque::with_capacity(RENDERED_MAX),
            renders: 0,
            authenticated: cfg.key.is_some(),
            recv_errors: 0,
            send_errors: 0,
            lost_in_kernel: 0,
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let udp_addr = udp.local_addr()?;
        let http_addr = http.local_addr()?;
        let intake = Intake::new(cfg.key.as_deref().map(str::as_bytes));
        let key = cfg.key.map(String::into_bytes);
        let cfg = DatagramConfig {
            buffers: RX_BUFFERS,
            buffer_bytes: RX_BUFFER_BYTES,
            multishot: true,
            thread_name: "oasis-mon-rx".into(),
            batch_wait: RX_BATCH_WAIT,
            socket_recv_bytes: RX_SOCKET_BYTES,
        };
        debug_assert!(cfg.payload_bytes_max() > MAX_DATAGRAM_BYTES);
        let handler = Receiver::new(intake, key, reply, Arc::clone(&shared));
        let rx = DatagramLoop::start(udp, cfg, handler).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("starting the io_uring receive loop on {udp_addr}: {e}"),
            )
        })?;
        let web = crate::http::start(http, Arc::clone(&shared), Arc::clone(&stop))?;
        Ok(Monitor {
            udp_addr,
            http_addr,
            stop,
            rx,
            web,
            shared,
        })
    }

    /// The bound UDP address (a port 0 asked is the one the kernel chose).
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp_addr
    }

    /// The bound HTTP address.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// Nodes held and datagrams accepted and dropped, for a status line.
    pub fn summary(&self) -> String {
        let s = lock(&self.shared);
        let now = s.now_ms();
        let stale = s.table.nodes().iter().filter(|n| n.is_stale(now)).count();
        let c = s.table.counts();
        format!(
            "{} nodes ({stale} stale); {} datagrams taken, {} dropped",
            s.table.len(),
            c.accepted,
            c.dropped()
        )
    }

    /// Stops the receive loop and the HTTP thread (its open event streams end within a second).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        let counts = self.rx.stop();
        tracing::debug!("monitor: receive loop stopped: {counts:?}");
        // Wakes the accept loop, which then sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.http_addr, Duration::from_secs(1));
        let _ = self.web.join();
    }
}

/// The receive loop's handler: checks each datagram outside the lock, then files it in the
/// table; sends the node its peer list when one is due.
struct Receiver {
    intake: Intake,
    key: Option<Vec<u8>>,
    reply: UdpSocket,
    shared: Shared,
    peers: Vec<Peer>,
    list: Vec<u8>,
    /// Grows across restarts, as the senders' sequence does: nodes drop older lists.
    list_seq: u64,
    /// The kernel's drop count last put in the state.
    lost_in_kernel: u64,
}

impl Receiver {
    fn new(intake: Intake, key: Option<Vec<u8>>, reply: UdpSocket, shared: Shared) -> Receiver {
        Receiver {
            intake,
            key,
            reply,
            shared,
            peers: Vec::with_capacity(PEERS_MAX),
            list: Vec::with_capacity(PEERS_BYTES_MAX),
            list_seq: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_micros() as u64),
            lost_in_kernel: 0,
        }
    }
}

impl DatagramHandler for Receiver {
    fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        let checked = self.intake.check(bytes);
        let mut s = lock(&self.shared);
        let due = match checked {
            Ok(status) => {
                let now = s.now_ms();
                s.table
                    .accept_from(status, Some(from), now, &mut self.peers)
                    == Ok(true)
            }
            Err(why) => {
                s.table.reject(why);
                false
            }
        };
        drop(s);
        if due {
            self.list_seq += 1;
            encode_peers(
                self.list_seq,
                &self.peers,
                self.key.as_deref(),
                &mut self.list,
            );
            if self.reply.send_to(&self.list, from).is_err() {
                lock(&self.shared).send_errors += 1;
            }
        }
    }

    fn truncated(&mut self, _from: Option<SocketAddr>, _len: usize) {
        lock(&self.shared).table.reject(Rejection::Oversized);
    }

    fn error(&mut self, err: &io::Error) {
        tracing::debug!("monitor: receive error: {err}");
        lock(&self.shared).recv_errors += 1;
    }

    fn batch_done(&mut self, counts: &DatagramCounts) {
        if counts.kernel_drops != self.lost_in_kernel {
            self.lost_in_kernel = counts.kernel_drops;
            lock(&self.shared).lost_in_kernel = counts.kernel_drops;
        }
    }
}
