//! Starting, running and stopping the engine.
//!
//! [`Engine::start`] probes io_uring, binds every listen address, sizes and reserves the buffer
//! pool, then starts the threads of the original design's `3 + f + nc + nd`: the acceptor (one
//! ring, multishot accept on every listener, hands connections to the least-loaded command worker),
//! the workers (pinned, one ring each), and the catalog thread that runs sessions' blocking jobs
//! (the Database Manager core). The caller's thread stays the supervisor (signals, the resource
//! observer) and, with the log thread, makes up the three service threads.
//!
//! Shutdown: [`Engine::shutdown`] stops accepting, tells every session to finish what it is doing
//! (no new requests), and force-closes whatever is left at the drain deadline.

use std::net::{SocketAddr, TcpListener};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use io_uring::{opcode, types};

use crate::layout::{pin_current_thread, Layout, Roles};
use crate::mailbox::Mailbox;
use crate::pool::BufferPool;
use crate::probe::{Features, ProbeError};
use crate::resource::{Resource, ResourceManager};
use crate::session::{Job, Service};
use crate::worker::{Msg, Worker};

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
    /// How file bytes reach the socket: [`SendPath::ReadSend`] or [`SendPath::Splice`].
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
            send_path: SendPath::Splice,
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
    /// Page references move, no copy in the server: `sendfile` for stretches whose pages are in
    /// the page cache, SPLICE file -> pipe -> socket (the file half in io_uring's threads) for
    /// the rest. Used for body pieces of at least `SPLICE_MIN_BYTES`; smaller ones take
    /// `ReadSend`. In split layouts the data worker's splice does the disk read (file workers
    /// idle).
    Splice,
}

/// Body pieces smaller than this take the read-send path even when splicing.
pub const SPLICE_MIN_BYTES: u64 = 64 * 1024;

/// One listen address and the protocol it speaks.
pub struct Listener {
    pub addr: SocketAddr,
    pub service: Arc<dyn Service>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{0}")]
    IoUring(#[from] ProbeError),
    #[error("cannot listen on {addr}: {err}; check that no other process uses the port and that the address belongs to this host")]
    Bind {
        addr: SocketAddr,
        err: std::io::Error,
    },
    #[error("cannot reserve the buffer pool: {0}; lower [engine] buffer_pool_bytes or raise [resources] memory_bytes")]
    Pool(crate::resource::ReserveError),
    #[error("worker {worker} failed to start: {source}")]
    Worker {
        worker: usize,
        source: std::io::Error,
    },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

pub(crate) struct WorkerHandle {
    pub(crate) roles: Roles,
    pub(crate) mailbox: Mailbox<Msg>,
    pub(crate) conns: AtomicUsize,
    pub(crate) busy: LoopBusy,
    /// Cold stretches fetched into the page cache before being sent (`Worker::start_fetch`).
    pub(crate) cold_fetches: AtomicU64,
    /// Cold pieces sent through a pipe, the file half in io-wq (`Worker::start_splice`).
    pub(crate) cold_splices: AtomicU64,
    /// Cold stretches that waited for a fetch another connection had started.
    pub(crate) cold_joins: AtomicU64,
    /// Cold stretches that waited for a fetch slot (`EngineConfig::cold_fetches_max`).
    pub(crate) cold_queued: AtomicU64,
}

/// Upper bounds, in microseconds, of the buckets of a worker's busy-time histogram; a last
/// bucket holds everything above. A loop iteration's busy time is how long a completion that
/// arrives just after the worker woke can wait before the worker looks at it.
pub const LOOP_BUSY_BOUNDS_US: [u64; 11] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];

/// Busy time of each loop iteration of one worker (from waking in `io_uring_enter` to entering
/// it again): fixed buckets of relaxed atomics, written only by the worker, read by scrapes.
pub(crate) struct LoopBusy {
    counts: [AtomicU64; LOOP_BUSY_BOUNDS_US.len() + 1],
    sum_us: AtomicU64,
}

impl LoopBusy {
    fn new() -> LoopBusy {
        LoopBusy {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }

    pub(crate) fn record(&self, us: u64) {
        let i = LOOP_BUSY_BOUNDS_US.partition_point(|&b| b < us);
        self.counts[i].fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }
}

pub(crate) struct JobMsg {
    pub(crate) job: Job,
    pub(crate) reply_to: u32,
    pub(crate) token: u64,
}

/// The result a session gets when the job queue is full: the job did not run.
#[derive(Debug)]
pub struct JobRejected;

pub(crate) struct Shared {
    pub(crate) config: EngineConfig,
    pub(crate) features: Features,
    pub(crate) workers: Vec<WorkerHandle>,
    pub(crate) services: Vec<Arc<dyn Service>>,
    pub(crate) pool: &'static BufferPool,
    pub(crate) rm: Arc<ResourceManager>,
    pub(crate) jobs: SyncSender<JobMsg>,
    pub(crate) net_workers_alive: AtomicUsize,
    shutdown: AtomicBool,
    drain_deadline: OnceLock<Instant>,
    acceptor_wake: Mailbox<()>,
}

impl Shared {
    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutdown.load(Ordering::Acquire)
    }

    pub(crate) fn drain_deadline_passed(&self, now: Instant) -> bool {
        self.drain_deadline.get().is_some_and(|d| now >= *d)
    }

    pub(crate) fn least_loaded(&self, role: Roles) -> Option<usize> {
        self.workers
            .iter()
            .enumerate()
            .filter(|(_, w)| w.roles.contains(role))
            .min_by_key(|(_, w)| w.conns.load(Ordering::Relaxed))
            .map(|(i, _)| i)
    }

    /// Sends a message that must not be lost (a reply carrying a pool chunk). Mailboxes are sized
    /// so this never waits (see `mailbox_capacity`); if one is full anyway, yield until it drains.
    pub(crate) fn send_must(&self, to: usize, mut msg: Msg) {
        loop {
            match self.workers[to].mailbox.send(msg) {
                Ok(()) => return,
                Err(m) => {
                    msg = m;
                    tracing::warn!("mailbox of worker {to} full; retrying");
                    std::thread::yield_now();
                }
            }
        }
    }
}

/// Status of one worker, for `/api/status`.
#[derive(Clone, Debug)]
pub struct WorkerStatus {
    pub roles: Roles,
    pub cores: Vec<usize>,
    pub connections: usize,
    /// Loop iterations by busy time: one count per bucket of [`LOOP_BUSY_BOUNDS_US`] and a
    /// last one for longer iterations (not cumulative).
    pub busy_counts: Vec<u64>,
    /// Sum of the iterations' busy time, microseconds.
    pub busy_sum_us: u64,
    /// Cold stretches fetched into the page cache, then sent by `sendfile`.
    pub cold_fetches: u64,
    /// Cold pieces spliced through a pipe (`cold_fetches_max = 0`, a failed fetch, or fetched
    /// pages gone again before they were sent).
    pub cold_splices: u64,
    /// Cold stretches that waited for a fetch of the same block another connection of the
    /// worker had started, then went out by `sendfile` (one read for many readers).
    pub cold_joins: u64,
    /// Cold stretches that waited for one of the worker's `cold_fetches_max` fetches to end
    /// before their own could start.
    pub cold_queued: u64,
}

/// A running engine. Cheap to query from any thread through [`EngineHandle`].
pub struct Engine {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
}

/// A read-only view of a running engine for status pages (no control).
#[derive(Clone)]
pub struct EngineHandle {
    shared: Arc<Shared>,
}

impl EngineHandle {
    pub fn workers(&self) -> Vec<WorkerStatus> {
        self.shared
            .workers
            .iter()
            .zip(&self.shared.config.layout.workers)
            .map(|(w, spec)| WorkerStatus {
                roles: w.roles,
                cores: spec.cores.clone(),
                connections: w.conns.load(Ordering::Relaxed),
                busy_counts: w
                    .busy
                    .counts
                    .iter()
                    .map(|c| c.load(Ordering::Relaxed))
                    .collect(),
                busy_sum_us: w.busy.sum_us.load(Ordering::Relaxed),
                cold_fetches: w.cold_fetches.load(Ordering::Relaxed),
                cold_splices: w.cold_splices.load(Ordering::Relaxed),
                cold_joins: w.cold_joins.load(Ordering::Relaxed),
                cold_queued: w.cold_queued.load(Ordering::Relaxed),
            })
            .collect()
    }

    pub fn layout(&self) -> &Layout {
        &self.shared.config.layout
    }

    pub fn features(&self) -> &Features {
        &self.shared.features
    }

    pub fn pool_chunks_free(&self) -> usize {
        self.shared.pool.available()
    }

    pub fn pool_chunks(&self) -> usize {
        self.shared.pool.count()
    }
}

fn mailbox_capacity(config: &EngineConfig) -> usize {
    // New and adopted connections, one read request or reply per pool chunk, one job reply each.
    config.connections_per_worker_max + 2 * config.chunks + config.jobs_max + 64
}

impl Engine {
    /// Starts the engine; returns once every worker's ring is up and every listener is bound.
    pub fn start(
        config: EngineConfig,
        listeners: Vec<Listener>,
        rm: Arc<ResourceManager>,
        features: Features,
    ) -> Result<Engine, StartError> {
        assert!(!listeners.is_empty(), "at least one listen address");
        assert!(config.layout.count(Roles::FILE) > 0);
        assert!(config.layout.count(Roles::COMMAND) > 0);
        assert!(config.layout.count(Roles::DATA) > 0);
        assert!(
            !config.direct_reads || config.chunk_bytes >= 2 * crate::direct::DIRECT_ALIGN_BYTES,
            "direct reads need chunks of at least two alignment units (head + skewed data)"
        );
        let mut sockets = Vec::new();
        for l in &listeners {
            sockets.push(
                bind(l.addr, config.listen_backlog)
                    .map_err(|err| StartError::Bind { addr: l.addr, err })?,
            );
        }
        let pool =
            BufferPool::new(&rm, config.chunk_bytes, config.chunks).map_err(StartError::Pool)?;
        let cap = mailbox_capacity(&config);
        let mut workers = Vec::new();
        for spec in &config.layout.workers {
            workers.push(WorkerHandle {
                roles: spec.roles,
                mailbox: Mailbox::new(cap)?,
                conns: AtomicUsize::new(0),
                busy: LoopBusy::new(),
                cold_fetches: AtomicU64::new(0),
                cold_splices: AtomicU64::new(0),
                cold_joins: AtomicU64::new(0),
                cold_queued: AtomicU64::new(0),
            });
        }
        let (jobs_tx, jobs_rx) = sync_channel(config.jobs_max);
        let net_workers = config
            .layout
            .workers
            .iter()
            .filter(|w| w.roles != Roles::FILE)
            .count();
        let shared = Arc::new(Shared {
            features,
            workers,
            services: listeners.iter().map(|l| Arc::clone(&l.service)).collect(),
            pool,
            rm,
            jobs: jobs_tx,
            net_workers_alive: AtomicUsize::new(net_workers),
            shutdown: AtomicBool::new(false),
            drain_deadline: OnceLock::new(),
            acceptor_wake: Mailbox::new(1)?,
            config,
        });

        let mut threads = Vec::new();
        let (ready_tx, ready_rx) =
            sync_channel::<Result<(), (usize, std::io::Error)>>(shared.workers.len());
        for i in 0..shared.workers.len() {
            let shared_w = Arc::clone(&shared);
            let ready = ready_tx.clone();
            let spec = shared.config.layout.workers[i].clone();
            let name = format!("oasis-w{i}-{}", spec.roles).replace('+', "");
            let t = std::thread::Builder::new().name(name).spawn(move || {
                if shared_w.config.pin {
                    if let Err(e) = pin_current_thread(&spec.cores) {
                        tracing::warn!("worker {i}: cannot pin to cores {:?}: {e}", spec.cores);
                    }
                }
                let worker = match Worker::new(i, Arc::clone(&shared_w)) {
                    Ok(w) => {
                        let _ = ready.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let _ = ready.send(Err((i, e)));
                        if spec.roles != Roles::FILE {
                            shared_w.net_workers_alive.fetch_sub(1, Ordering::AcqRel);
                        }
                        return;
                    }
                };
                worker.run();
                if spec.roles != Roles::FILE {
                    shared_w.net_workers_alive.fetch_sub(1, Ordering::AcqRel);
                    for w in &shared_w.workers {
                        w.mailbox.wake();
                    }
                }
            })?;
            threads.push(t);
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..shared.workers.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err((worker, source))) => {
                    failure = failure.or(Some(StartError::Worker { worker, source }))
                }
                Err(_) => break,
            }
        }
        let mut engine = Engine { shared, threads };
        if let Some(e) = failure {
            engine.shutdown(Duration::ZERO);
            engine.join();
            return Err(e);
        }

        let shared_c = Arc::clone(&engine.shared);
        engine.threads.push(
            std::thread::Builder::new()
                .name("oasis-catalog".into())
                .spawn(move || catalog_thread(shared_c, jobs_rx))?,
        );
        let shared_a = Arc::clone(&engine.shared);
        engine.threads.push(
            std::thread::Builder::new()
                .name("oasis-accept".into())
                .spawn(move || {
                    if let Err(e) = acceptor(shared_a, sockets) {
                        tracing::error!("acceptor stopped: {e}");
                    }
                })?,
        );
        Ok(engine)
    }

    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Begins a graceful shutdown: stop accepting, finish in-flight responses, force-close what is
    /// left after `drain`. Returns at once; [`Engine::join`] waits.
    pub fn shutdown(&self, drain: Duration) {
        let _ = self.shared.drain_deadline.set(Instant::now() + drain);
        self.shared.shutdown.store(true, Ordering::Release);
        self.shared.acceptor_wake.wake();
        for w in &self.shared.workers {
            w.mailbox.wake();
        }
    }

    /// Waits for every engine thread to finish.
    pub fn join(self) {
        let Engine { shared, threads } = self;
        drop(shared);
        for t in threads {
            let _ = t.join();
        }
    }
}

fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain socket(2) call; the result is checked.
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket we own.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    let one: libc::c_int = 1;
    // SAFETY: the option value points to a live c_int of the given size.
    unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    // Bind and listen through std (it knows sockaddr layouts), then take the fd back.
    let std_listener = TcpListener::from(owned);
    let sock = socket_addr_to_c(&addr);
    // SAFETY: `sock` holds a sockaddr of the right family and length for this socket.
    let rc = unsafe {
        libc::bind(
            fd,
            (&sock.0 as *const libc::sockaddr_storage).cast(),
            sock.1,
        )
    };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a bound stream socket.
    if unsafe { libc::listen(fd, backlog as libc::c_int) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: into_raw_fd gives up std's ownership; we take it back as an OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(std_listener.into_raw_fd()) })
}

fn socket_addr_to_c(addr: &SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: zeroed sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_in fits inside sockaddr_storage, which is suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_in6 fits inside sockaddr_storage, which is suitably aligned.
            unsafe { std::ptr::write((&mut storage as *mut libc::sockaddr_storage).cast(), sin6) };
            (
                storage,
                std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            )
        }
    }
}

pub(crate) fn sockaddr_to_std(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match storage.ss_family as libc::c_int {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in.
            let a: &libc::sockaddr_in =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv4Addr::from(a.sin_addr.s_addr.to_ne_bytes());
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: the family says the storage holds a sockaddr_in6.
            let a: &libc::sockaddr_in6 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
        }
        _ => None,
    }
}

/// The Database Manager core's thread: runs sessions' blocking jobs one at a time.
fn catalog_thread(shared: Arc<Shared>, jobs: Receiver<JobMsg>) {
    loop {
        let JobMsg {
            job,
            reply_to,
            token,
        } = match jobs.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if shared.is_shutting_down()
                    && shared.net_workers_alive.load(Ordering::Acquire) == 0
                {
                    return;
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!("a catalog job panicked; the request gets an error");
                Box::new(JobRejected) as crate::session::JobResult
            }
        };
        shared.send_must(reply_to as usize, Msg::JobDone { token, result });
    }
}

const ACCEPT_WAKE: u64 = u64::MAX;
const ACCEPT_RETRY: u64 = u64::MAX - 1;

/// The acceptor: multishot accept on every listener; each connection is reserved, then handed to
/// the least-loaded command worker. Refused connections get the service's refusal bytes.
fn acceptor(shared: Arc<Shared>, sockets: Vec<OwnedFd>) -> std::io::Result<()> {
    let mut ring = io_uring::IoUring::new(256)?;
    let multishot = shared.features.multishot_accept;
    let mut wake_buf = Box::new(0u64);
    // The listeners and the wake eventfd live as long as the ring: registered (fixed) files spare
    // every operation on them the descriptor-table lookup. Slot i is listener i, the last the wake.
    let mut table: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    table.push(shared.acceptor_wake.eventfd());
    let fixed = match ring.submitter().register_files(&table) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("acceptor: registered files unavailable ({e}); using descriptors");
            false
        }
    };
    let wake_slot = (table.len() - 1) as u32;
    let arm = |ring: &mut io_uring::IoUring, i: usize, fd: i32| {
        let e = match (multishot, fixed) {
            (true, true) => opcode::AcceptMulti::new(types::Fixed(i as u32))
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build(),
            (true, false) => opcode::AcceptMulti::new(types::Fd(fd))
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build(),
            (false, true) => opcode::Accept::new(
                types::Fixed(i as u32),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build(),
            (false, false) => {
                opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                    .build()
            }
        };
        // SAFETY: no buffers; the listener fd lives in `sockets` until this function returns,
        // after the ring is dropped.
        while unsafe { ring.submission().push(&e.clone().user_data(i as u64)) }.is_err() {
            let _ = ring.submit();
        }
    };
    for (i, s) in sockets.iter().enumerate() {
        arm(&mut ring, i, s.as_raw_fd());
    }
    let mut wake_armed = false;
    let mut rotate = 0usize;
    loop {
        if shared.is_shutting_down() {
            break;
        }
        if !wake_armed {
            let buf = (&mut *wake_buf as *mut u64).cast();
            let e = if fixed {
                opcode::Read::new(types::Fixed(wake_slot), buf, 8).build()
            } else {
                opcode::Read::new(types::Fd(shared.acceptor_wake.eventfd()), buf, 8).build()
            }
            .user_data(ACCEPT_WAKE);
            // SAFETY: `wake_buf` outlives the ring (dropped after it at the end of this function).
            while unsafe { ring.submission().push(&e) }.is_err() {
                let _ = ring.submit();
            }
            wake_armed = true;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        let cqes: Vec<(u64, i32, u32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        for (ud, res, flags) in cqes {
            if ud == ACCEPT_WAKE {
                wake_armed = false;
                continue;
            }
            let i = if ud == ACCEPT_RETRY {
                continue;
            } else {
                ud as usize
            };
            let more = io_uring::cqueue::more(flags);
            if res < 0 {
                let err = std::io::Error::from_raw_os_error(-res);
                if matches!(
                    -res,
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
                ) {
                    tracing::warn!("accept on listener {i}: {err}; pausing accepts for 100 ms");
                    std::thread::sleep(Duration::from_millis(100));
                }
                if !more {
                    arm(&mut ring, i, sockets[i].as_raw_fd());
                }
                continue;
            }
            if !more {
                arm(&mut ring, i, sockets[i].as_raw_fd());
            }
            // SAFETY: a successful accept returns a new fd that we now own.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            dispatch(&shared, fd, i as u16, &mut rotate);
        }
    }
    drop(ring);
    drop(sockets);
    Ok(())
}

fn dispatch(shared: &Shared, fd: OwnedFd, listener: u16, rotate: &mut usize) {
    let refuse = |fd: OwnedFd, why: &dyn std::fmt::Display| {
        tracing::debug!("refusing a connection: {why}");
        let bytes = shared.services[listener as usize].refusal();
        // SAFETY: best-effort non-blocking write of a live byte slice to a socket we own.
        unsafe {
            libc::send(
                fd.as_raw_fd(),
                bytes.as_ptr().cast(),
                bytes.len(),
                libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
    };
    let reservation = match shared.rm.reserve(Resource::Connections, 1) {
        Ok(r) => r,
        Err(e) => return refuse(fd, &e),
    };
    let command: Vec<usize> = (0..shared.workers.len())
        .filter(|&i| shared.workers[i].roles.contains(Roles::COMMAND))
        .collect();
    // Least loaded first; ties rotate so a burst spreads.
    *rotate = rotate.wrapping_add(1);
    let mut order = command.clone();
    order.rotate_left(*rotate % command.len());
    order.sort_by_key(|&i| shared.workers[i].conns.load(Ordering::Relaxed));
    let mut msg = Msg::NewConn {
        fd,
        listener,
        reservation,
    };
    for i in order {
        let w = &shared.workers[i];
        if w.conns.load(Ordering::Relaxed) >= shared.config.connections_per_worker_max {
            continue;
        }
        w.conns.fetch_add(1, Ordering::Relaxed);
        match w.mailbox.send(msg) {
            Ok(()) => return,
            Err(m) => {
                w.conns.fetch_sub(1, Ordering::Relaxed);
                msg = m;
            }
        }
    }
    if let Msg::NewConn { fd, .. } = msg {
        refuse(fd, &"every command worker is full");
    }
}
