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
//!
//! This module only starts and stops: the acceptor lives in `acceptor`, the catalog thread in
//! `jobs`, what they and the workers share in `shared`. It must never run on a request's path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::acceptor::{acceptor, bind};
use crate::jobs::catalog_thread;
use crate::layout::{pin_current_thread, Layout, Roles};
use crate::mailbox::Mailbox;
use crate::pool::BufferPool;
use crate::probe::{Features, ProbeError};
use crate::resource::ResourceManager;
use crate::session::Service;
use crate::shared::{LoopBusy, Shared, WorkerHandle};
use crate::worker::Worker;

pub use crate::config::{EngineConfig, SendPath, SPLICE_MIN_BYTES};
pub use crate::shared::{JobRejected, LOOP_BUSY_BOUNDS_US};

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
    /// The address each listener got, in the order given (a port 0 resolved to the real one).
    local_addrs: Vec<std::net::SocketAddr>,
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
                busy_counts: w.busy.counts(),
                busy_sum_us: w.busy.sum_us(),
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
    // One message per connection: its arrival (new or adopted) or, once it is here, the
    // completion of its one deferred transmit; one read request or reply per pool chunk; one
    // job reply each.
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
        let mut local_addrs = Vec::new();
        for l in &listeners {
            let fd = bind(l.addr, config.listen_backlog)
                .map_err(|err| StartError::Bind { addr: l.addr, err })?;
            let got = socket2::SockRef::from(&fd)
                .local_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .unwrap_or(l.addr);
            local_addrs.push(got);
            sockets.push(fd);
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
                // However the worker ends (start-up error, return), the threads that wait for
                // the network workers to be gone are told. A panic ends the process.
                let _gone = WorkerGone {
                    shared: Arc::clone(&shared_w),
                    index: i,
                    net: spec.roles != Roles::FILE,
                };
                let worker = match Worker::new(i, Arc::clone(&shared_w)) {
                    Ok(w) => {
                        let _ = ready.send(Ok(()));
                        w
                    }
                    Err(e) => {
                        let _ = ready.send(Err((i, e)));
                        return;
                    }
                };
                worker.run();
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
        let mut engine = Engine {
            shared,
            threads,
            local_addrs,
        };
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

    /// Where each listener listens, in the order given to [`Engine::start`] (port 0 resolved).
    pub fn local_addrs(&self) -> &[std::net::SocketAddr] {
        &self.local_addrs
    }

    pub fn handle(&self) -> EngineHandle {
        EngineHandle {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Begins a graceful shutdown: stop accepting, finish in-flight responses, force-close what is
    /// left after `drain`. Returns at once; [`Engine::join`] waits.
    pub fn shutdown(&self, drain: Duration) {
        self.shared.begin_shutdown(Instant::now() + drain);
    }

    /// Waits for every engine thread to finish.
    pub fn join(self) {
        let Engine {
            shared, threads, ..
        } = self;
        drop(shared);
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Held by a worker's thread. When a network worker ends, the count of live network workers
/// drops and every worker is woken (file workers and the catalog thread exit once it is zero).
/// When a worker panics, the process aborts: the connections it held, the mailbox the acceptor
/// hands it new ones through and the reads it serves for other workers are gone, and a server
/// that limps on without them would hang its clients and its own shutdown. What was acknowledged
/// is on disk; a supervisor (`oasis agent`, systemd) starts the server again.
struct WorkerGone {
    shared: Arc<Shared>,
    index: usize,
    net: bool,
}

impl Drop for WorkerGone {
    fn drop(&mut self) {
        if std::thread::panicking() {
            tracing::error!(
                "worker {} panicked; the server aborts (a supervisor restarts it)",
                self.index
            );
            std::process::abort();
        }
        if self.net {
            self.shared.net_workers_alive.fetch_sub(1, Ordering::AcqRel);
            for w in &self.shared.workers {
                w.mailbox.wake();
            }
        }
    }
}
