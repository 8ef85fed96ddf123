//! The monitor's process side: [`Monitor::start`] binds the UDP and HTTP addresses and starts
//! the receiver thread (`oasis-mon-rx`, below) and the HTTP thread (`http.rs`); both share the
//! node table behind one mutex, held only to insert a checked status or to render a page.
//!
//! The receiver is a plain thread with a blocking UDP socket (a read timeout lets it notice the
//! stop flag), not an io_uring engine service: the engine serves TCP only so far. Each datagram
//! is decoded and its MAC checked before the lock is taken. When the table says a node is due
//! its peer list (for the round-trip probes, see `table.rs`), the receiver encodes it after the
//! lock is released, in a buffer it keeps, and sends it back to the datagram's source (signed
//! with the key when there is one).

use std::collections::VecDeque;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::probe::wire::{encode_peers, PEERS_BYTES_MAX};
use crate::status::{Intake, MAX_DATAGRAM_BYTES, PEERS_MAX};
use crate::table::NodeTable;

/// The longest a peer list's send may wait for the socket's buffer.
const SEND_TIMEOUT: Duration = Duration::from_millis(20);
/// How often the receiver looks at the stop flag while no datagram comes.
const RECV_TIMEOUT: Duration = Duration::from_millis(200);
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
    /// Receive errors of the UDP socket.
    pub recv_errors: u64,
    /// Peer lists that could not be sent.
    pub send_errors: u64,
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
    threads: Vec<JoinHandle<()>>,
    shared: Shared,
}

impl Monitor {
    /// Binds both addresses and starts the receiver and HTTP threads.
    pub fn start(cfg: MonitorConfig) -> io::Result<Monitor> {
        let udp = UdpSocket::bind(cfg.udp).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("binding --udp {}: {e}; pick a free address", cfg.udp),
            )
        })?;
        udp.set_read_timeout(Some(RECV_TIMEOUT))?;
        udp.set_write_timeout(Some(SEND_TIMEOUT))?;
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
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let udp_addr = udp.local_addr()?;
        let http_addr = http.local_addr()?;
        let intake = Intake::new(cfg.key.as_deref().map(str::as_bytes));
        let key = cfg.key.map(String::into_bytes);
        let rx = {
            let (shared, stop) = (Arc::clone(&shared), Arc::clone(&stop));
            std::thread::Builder::new()
                .name("oasis-mon-rx".into())
                .spawn(move || receive(udp, intake, key.as_deref(), &shared, &stop))?
        };
        let web = crate::http::start(http, Arc::clone(&shared), Arc::clone(&stop))?;
        Ok(Monitor {
            udp_addr,
            http_addr,
            stop,
            threads: vec![rx, web],
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

    /// Stops both threads (the HTTP thread's open event streams end within a second).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Release);
        // Wakes the accept loop, which then sees the flag.
        let _ = std::net::TcpStream::connect_timeout(&self.http_addr, Duration::from_secs(1));
        for t in self.threads {
            let _ = t.join();
        }
    }
}

/// The receiver thread: checks each datagram outside the lock, then files it in the table;
/// sends the node its peer list when one is due.
fn receive(udp: UdpSocket, intake: Intake, key: Option<&[u8]>, shared: &Shared, stop: &AtomicBool) {
    // One byte more than the bound: a datagram that fills the buffer is oversized.
    let mut buf = vec![0u8; MAX_DATAGRAM_BYTES + 1];
    let mut peers = Vec::with_capacity(PEERS_MAX);
    let mut list = Vec::with_capacity(PEERS_BYTES_MAX);
    // Grows across restarts, as the senders' sequence does: nodes drop older lists.
    let mut list_seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_micros() as u64);
    while !stop.load(Ordering::Acquire) {
        let (n, from) = match udp.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                tracing::debug!("monitor: receive error: {e}");
                lock(shared).recv_errors += 1;
                continue;
            }
        };
        let checked = intake.check(&buf[..n]);
        let mut s = lock(shared);
        let due = match checked {
            Ok(status) => {
                let now = s.now_ms();
                s.table.accept_from(status, Some(from), now, &mut peers) == Ok(true)
            }
            Err(why) => {
                s.table.reject(why);
                false
            }
        };
        drop(s);
        if due {
            list_seq += 1;
            encode_peers(list_seq, &peers, key, &mut list);
            if udp.send_to(&list, from).is_err() {
                lock(shared).send_errors += 1;
            }
        }
    }
}
