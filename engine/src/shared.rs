//! What the engine's threads share: the [`Shared`] state every worker, the acceptor and the
//! catalog thread hold an `Arc` of, the per-worker handles others see ([`WorkerHandle`]), and
//! the messages that cross between threads ([`Msg`], [`JobMsg`]).
//!
//! Both the runtime (which builds it) and the workers (which use it) import this module; it must
//! never import either of them beyond the connection type a hand-off carries, so the start-up code
//! and the loop stay independent of each other.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use crate::config::EngineConfig;
use crate::layout::Roles;
use crate::mailbox::Mailbox;
use crate::pool::{BufferPool, Chunk};
use crate::probe::Features;
use crate::resource::{Reservation, ResourceManager};
use crate::session::{Job, JobResult, Service};
use crate::worker::conn::Conn;

/// Messages between threads. Every producer is bounded (see `runtime::mailbox_capacity`).
pub(crate) enum Msg {
    NewConn {
        fd: OwnedFd,
        listener: u16,
        reservation: Reservation,
    },
    Adopt(Box<Conn>),
    Read {
        file: Arc<File>,
        offset: u64,
        len: u32,
        chunk: Chunk,
        /// Where in the chunk the file bytes go (after a response head).
        at: u32,
        reply_to: u32,
        token: u64,
    },
    ReadDone {
        token: u64,
        chunk: Chunk,
        result: i32,
    },
    JobDone {
        token: u64,
        result: JobResult,
    },
}

pub(crate) struct WorkerHandle {
    pub(crate) roles: Roles,
    pub(crate) mailbox: Mailbox<Msg>,
    pub(crate) conns: AtomicUsize,
    pub(crate) busy: LoopBusy,
    /// Cold stretches fetched into the page cache before being sent (`worker/fetch.rs`).
    pub(crate) cold_fetches: AtomicU64,
    /// Cold pieces sent through a pipe, the file half in io-wq (`worker/splice.rs`).
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
    pub(crate) fn new() -> LoopBusy {
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

    /// Iterations per bucket (not cumulative), as a scrape sees them.
    pub(crate) fn counts(&self) -> Vec<u64> {
        self.counts
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .collect()
    }

    pub(crate) fn sum_us(&self) -> u64 {
        self.sum_us.load(Ordering::Relaxed)
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
    pub(crate) shutdown: AtomicBool,
    pub(crate) drain_deadline: OnceLock<Instant>,
    pub(crate) acceptor_wake: Mailbox<()>,
}

impl Shared {
    /// Stops accepting and tells every worker to drain until `deadline`.
    pub(crate) fn begin_shutdown(&self, deadline: Instant) {
        let _ = self.drain_deadline.set(deadline);
        self.shutdown.store(true, Ordering::Release);
        self.acceptor_wake.wake();
        for w in &self.workers {
            w.mailbox.wake();
        }
    }

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
