//! The Log Manager's audit trail writer: records queued by any thread, written to the catalog by
//! one thread of its own (`oasis-audit`), in batches, each one transaction.
//!
//! [`AuditLog::record`] never blocks and never allocates: it pushes into a bounded queue set at
//! start, and when the queue is full the record is dropped and counted ([`AuditLog::dropped`]).
//! The writer wakes every `flush_interval`, when the queue passes half full, or when asked to
//! flush; it drains up to `AUDIT_BATCH_MAX` (512) records into one [`crate::Catalog::append_audit`]
//! transaction at a time. A failed write is logged (once until writes succeed again) and its
//! records are counted as lost ([`AuditLog::write_errors`]), never retried. About once an hour,
//! and once at start, records older than the retention are pruned. Time comes from the store's
//! configured clock.
//!
//! This module never judges a record (what an action means is the caller's business) and never
//! writes anywhere but the catalog.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::catalog::AuditRecord;
use crate::store::Store;

/// Most records one catalog transaction of the writer holds.
const AUDIT_BATCH_MAX: usize = 512;

/// How often (by the store's clock) the writer prunes records past the retention.
const PRUNE_INTERVAL_MS: u64 = 3_600_000;

const DAY_MS: u64 = 86_400_000;

/// How the audit writer is set up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditConfig {
    /// Records the queue holds before [`AuditLog::record`] drops them (at least 1).
    pub queue_max: usize,
    /// Records older than this many days are pruned; 0 keeps them forever.
    pub retention_days: u32,
    /// The longest a queued record waits before the writer takes it (at least 1 ms).
    pub flush_interval: Duration,
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            queue_max: 4096,
            retention_days: 90,
            flush_interval: Duration::from_millis(200),
        }
    }
}

/// A handle on the audit writer. Clones share one queue and one thread; when the last handle is
/// dropped, the thread writes what is queued and exits (the drop waits for it).
#[derive(Clone)]
pub struct AuditLog {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("queued", &self.handle.shared.queue.len())
            .field("written", &self.written())
            .field("dropped", &self.dropped())
            .field("write_errors", &self.write_errors())
            .finish()
    }
}

/// Owned by the handles: stops and joins the thread when the last one goes.
struct Handle {
    shared: Arc<Shared>,
    writer: Thread,
    join: Option<JoinHandle<()>>,
}

/// What the handles and the writer thread share.
struct Shared {
    queue: ArrayQueue<AuditRecord>,
    /// Queue length at which `record` wakes the writer early.
    wake_len: usize,
    dropped: AtomicU64,
    written: AtomicU64,
    write_errors: AtomicU64,
    stop: AtomicBool,
    flushes: Mutex<Flushes>,
    flushed: Condvar,
    /// Held by the writer while it drains, and by [`AuditPause`] to keep it from draining.
    draining: Mutex<()>,
}

/// Flush requests and how far the writer has answered them.
struct Flushes {
    requested: u64,
    done: u64,
    writer_gone: bool,
}

impl Shared {
    fn flushes(&self) -> MutexGuard<'_, Flushes> {
        self.flushes.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Test seam: while held, the writer takes nothing from the queue (see
/// [`AuditLog::pause_for_test`]).
#[doc(hidden)]
pub struct AuditPause<'a> {
    _draining: MutexGuard<'a, ()>,
}

impl AuditLog {
    /// Starts the writer thread ("oasis-audit"). The thread holds `store` until the last handle
    /// is dropped.
    ///
    /// Panics if the system cannot start a thread (at start-up, where nothing can run anyway).
    pub fn start(store: Arc<Store>, config: AuditConfig) -> AuditLog {
        let queue_max = config.queue_max.max(1);
        let shared = Arc::new(Shared {
            queue: ArrayQueue::new(queue_max),
            wake_len: queue_max.div_ceil(2),
            dropped: AtomicU64::new(0),
            written: AtomicU64::new(0),
            write_errors: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            flushes: Mutex::new(Flushes {
                requested: 0,
                done: 0,
                writer_gone: false,
            }),
            flushed: Condvar::new(),
            draining: Mutex::new(()),
        });
        let writer_shared = Arc::clone(&shared);
        let join = std::thread::Builder::new()
            .name("oasis-audit".into())
            .spawn(move || run(&store, &writer_shared, &config))
            .expect("the system refused to start the audit writer thread");
        AuditLog {
            handle: Arc::new(Handle {
                shared,
                writer: join.thread().clone(),
                join: Some(join),
            }),
        }
    }

    /// Queues a record; never blocks, never allocates beyond the bounded queue. Returns false
    /// when the queue is full (the record is dropped and counted).
    pub fn record(&self, rec: AuditRecord) -> bool {
        let shared = &self.handle.shared;
        match shared.queue.push(rec) {
            Ok(()) => {
                if shared.queue.len() >= shared.wake_len {
                    self.handle.writer.unpark();
                }
                true
            }
            Err(_) => {
                shared.dropped.fetch_add(1, Ordering::Relaxed);
                self.handle.writer.unpark();
                false
            }
        }
    }

    /// Records dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.handle.shared.dropped.load(Ordering::Relaxed)
    }

    /// Records written to the catalog.
    pub fn written(&self) -> u64 {
        self.handle.shared.written.load(Ordering::Relaxed)
    }

    /// Records lost because the catalog failed their write (each failed batch adds its size).
    pub fn write_errors(&self) -> u64 {
        self.handle.shared.write_errors.load(Ordering::Relaxed)
    }

    /// Writes everything queued so far and waits until it is in the catalog (for shutdown, tests
    /// and the CLI). Blocking; never call it on a worker, nor while holding an [`AuditPause`].
    /// A record whose write failed counts in [`AuditLog::write_errors`] instead.
    pub fn flush(&self) {
        let shared = &self.handle.shared;
        let mut flushes = shared.flushes();
        flushes.requested += 1;
        let ticket = flushes.requested;
        self.handle.writer.unpark();
        while flushes.done < ticket && !flushes.writer_gone {
            flushes = shared
                .flushed
                .wait(flushes)
                .unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Test seam: keeps the writer from taking records off the queue until the guard is dropped,
    /// so a test can fill the queue deterministically. [`AuditLog::flush`] waits meanwhile.
    #[doc(hidden)]
    pub fn pause_for_test(&self) -> AuditPause<'_> {
        AuditPause {
            _draining: self
                .handle
                .shared
                .draining
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        }
    }
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.writer.unpark();
        if let Some(join) = self.join.take() {
            if join.join().is_err() {
                tracing::error!(target: "oasis::storage", "the audit writer thread panicked; queued records are lost");
            }
        }
    }
}

/// Tells flush waiters that the writer is gone, however it leaves (a panic included).
struct Gone<'a>(&'a Shared);

impl Drop for Gone<'_> {
    fn drop(&mut self) {
        self.0.flushes().writer_gone = true;
        self.0.flushed.notify_all();
    }
}

/// The writer thread's loop.
fn run(store: &Store, shared: &Shared, config: &AuditConfig) {
    let _gone = Gone(shared);
    let interval = config.flush_interval.max(Duration::from_millis(1));
    let mut writer = Writer {
        store,
        shared,
        batch: Vec::with_capacity(AUDIT_BATCH_MAX),
        failing: false,
    };
    let mut last_prune_ms = None;
    loop {
        // Read before draining: every record queued before the last handle went is written.
        let stopping = shared.stop.load(Ordering::Acquire);
        {
            let _draining = shared.draining.lock().unwrap_or_else(|p| p.into_inner());
            let target = shared.flushes().requested;
            writer.drain();
            shared.flushes().done = target;
            shared.flushed.notify_all();
        }
        if stopping {
            return;
        }
        let now_ms = store.now_unix_ms();
        if last_prune_ms.is_none_or(|last: u64| now_ms.abs_diff(last) >= PRUNE_INTERVAL_MS) {
            prune(store, config.retention_days, now_ms);
            last_prune_ms = Some(now_ms);
        }
        std::thread::park_timeout(interval);
    }
}

/// The writer's state between rounds.
struct Writer<'a> {
    store: &'a Store,
    shared: &'a Shared,
    batch: Vec<AuditRecord>,
    /// The last write failed (its warning is out; the next one waits for a success).
    failing: bool,
}

impl Writer<'_> {
    /// Writes, in batches, every record queued when it started (at most the queue's capacity:
    /// the queue is FIFO, so those are all of them, and producers cannot keep it going forever).
    fn drain(&mut self) {
        let mut budget = self.shared.queue.capacity();
        while budget > 0 {
            self.batch.clear();
            while self.batch.len() < AUDIT_BATCH_MAX.min(budget) {
                let Some(rec) = self.shared.queue.pop() else {
                    break;
                };
                self.batch.push(rec);
            }
            if self.batch.is_empty() {
                return;
            }
            budget -= self.batch.len();
            self.write();
        }
    }

    fn write(&mut self) {
        let n = self.batch.len() as u64;
        match self.store.append_audit(&self.batch) {
            Ok(_) => {
                self.shared.written.fetch_add(n, Ordering::Relaxed);
                if self.failing {
                    self.failing = false;
                    tracing::info!(target: "oasis::storage", "audit records are written again");
                }
            }
            Err(e) => {
                self.shared.write_errors.fetch_add(n, Ordering::Relaxed);
                if !self.failing {
                    self.failing = true;
                    tracing::warn!(
                        target: "oasis::storage",
                        lost = n,
                        "audit records not written (they are lost; later failures are counted \
                         in the audit write errors, not logged): {e}"
                    );
                }
            }
        }
    }
}

/// The oldest time kept with `retention_days` at `now_ms` (`None`: keep everything).
fn prune_before_ms(retention_days: u32, now_ms: u64) -> Option<u64> {
    (retention_days > 0).then(|| now_ms.saturating_sub(u64::from(retention_days) * DAY_MS))
}

fn prune(store: &Store, retention_days: u32, now_ms: u64) {
    let Some(before_ms) = prune_before_ms(retention_days, now_ms) else {
        return;
    };
    match store.prune_audit(before_ms) {
        Ok(0) => {}
        Ok(pruned) => {
            tracing::info!(target: "oasis::storage", pruned, retention_days, "old audit records pruned");
        }
        Err(e) => {
            tracing::warn!(target: "oasis::storage", "old audit records not pruned (tried again in an hour): {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retention_cutoff() {
        assert_eq!(prune_before_ms(0, 10 * DAY_MS), None, "0 keeps forever");
        assert_eq!(prune_before_ms(3, 10 * DAY_MS), Some(7 * DAY_MS));
        assert_eq!(
            prune_before_ms(90, DAY_MS),
            Some(0),
            "young clocks prune nothing"
        );
        assert_eq!(
            prune_before_ms(u32::MAX, u64::MAX),
            Some(u64::MAX - u64::from(u32::MAX) * DAY_MS)
        );
    }

    #[test]
    fn audit_log_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<AuditLog>();
    }
}
