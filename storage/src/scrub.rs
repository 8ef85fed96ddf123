//! The background scrub: every object's CRC-32C checked on a schedule, as ZFS and Ceph scrub.
//!
//! One thread of its own (never a worker) reads the objects one after another, paced to
//! `bytes_per_sec`, holding that much of the Resource Manager's disk read account while it reads,
//! so admitted streams keep the disk bandwidth they reserved: when the account has no room, the
//! scrub waits. An object whose bytes no longer match its checksum is marked corrupt in the store
//! (the server then refuses or serves it by policy), logged and counted. This module decides no
//! HTTP behaviour.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use oasis_engine::resource::{Resource, ResourceManager};

use crate::error::StoreError;
use crate::store::Store;

/// How the background scrub runs.
#[derive(Clone, Debug)]
pub struct ScrubConfig {
    /// Read rate, bytes per second (the disk read account is charged 8x this in bits).
    pub bytes_per_sec: u64,
    /// From the start of one pass to the start of the next.
    pub interval: Duration,
    /// Before the first pass (the server starts up without extra disk load).
    pub first_delay: Duration,
}

/// What the scrub has done, read by `/metrics` and `/api/status`.
#[derive(Debug, Default)]
pub struct ScrubStats {
    pub passes: AtomicU64,
    pub objects: AtomicU64,
    pub bytes: AtomicU64,
    /// Objects found corrupt, over all passes.
    pub corrupt_found: AtomicU64,
    /// 1 while a pass runs.
    pub running: AtomicU64,
}

struct Control {
    stop: AtomicBool,
    /// A pass was asked for now (`POST /api/scrub`).
    now: Mutex<bool>,
    wake: Condvar,
}

/// The running scrub thread; stops when dropped.
pub struct Scrubber {
    control: Arc<Control>,
    pub stats: Arc<ScrubStats>,
    thread: Option<JoinHandle<()>>,
}

impl Scrubber {
    /// Starts the scrub thread over `store`.
    pub fn start(store: Arc<Store>, rm: Arc<ResourceManager>, config: ScrubConfig) -> Scrubber {
        assert!(config.bytes_per_sec > 0, "a scrub needs a rate");
        let control = Arc::new(Control {
            stop: AtomicBool::new(false),
            now: Mutex::new(false),
            wake: Condvar::new(),
        });
        let stats = Arc::new(ScrubStats::default());
        let thread = {
            let (control, stats) = (Arc::clone(&control), Arc::clone(&stats));
            std::thread::Builder::new()
                .name("oasis-scrub".into())
                .spawn(move || run(&store, &rm, &config, &control, &stats))
                .expect("spawn the scrub thread")
        };
        Scrubber {
            control,
            stats,
            thread: Some(thread),
        }
    }

    /// Starts a pass now unless one runs. Returns false when one was already running.
    pub fn request_pass(&self) -> bool {
        if self.stats.running.load(Ordering::Relaxed) == 1 {
            return false;
        }
        *self.control.now.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.control.wake.notify_all();
        true
    }
}

impl Drop for Scrubber {
    fn drop(&mut self) {
        self.control.stop.store(true, Ordering::Relaxed);
        self.control.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Waits until `deadline` or a request for a pass; false when asked to stop.
fn sleep_until(control: &Control, deadline: Instant) -> bool {
    let mut now_asked = control.now.lock().unwrap_or_else(|e| e.into_inner());
    loop {
        if control.stop.load(Ordering::Relaxed) {
            return false;
        }
        if *now_asked {
            *now_asked = false;
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        now_asked = control
            .wake
            .wait_timeout(now_asked, left)
            .unwrap_or_else(|e| e.into_inner())
            .0;
    }
}

fn run(
    store: &Store,
    rm: &Arc<ResourceManager>,
    config: &ScrubConfig,
    control: &Control,
    stats: &ScrubStats,
) {
    let mut next = Instant::now() + config.first_delay;
    while sleep_until(control, next) {
        next = Instant::now() + config.interval;
        stats.running.store(1, Ordering::Relaxed);
        let stopped = pass(store, rm, config, control, stats);
        stats.running.store(0, Ordering::Relaxed);
        if stopped {
            return;
        }
        stats.passes.fetch_add(1, Ordering::Relaxed);
    }
}

/// One pass over every object; true when asked to stop midway.
fn pass(
    store: &Store,
    rm: &Arc<ResourceManager>,
    config: &ScrubConfig,
    control: &Control,
    stats: &ScrubStats,
) -> bool {
    let started = Instant::now();
    let mut read = 0u64;
    for meta in store.list() {
        // The disk bandwidth it uses is reserved like a stream's, and streams come first.
        let _reservation = loop {
            if control.stop.load(Ordering::Relaxed) {
                return true;
            }
            match rm.reserve(
                Resource::DiskReadBps,
                config.bytes_per_sec.saturating_mul(8),
            ) {
                Ok(r) => break r,
                Err(_) => std::thread::sleep(Duration::from_millis(500)),
            }
        };
        let result = store.verify_paced(&meta, |n| {
            read += n;
            stats.bytes.fetch_add(n, Ordering::Relaxed);
            // Paced to the rate: never ahead of `bytes_per_sec` since the pass started.
            let due = Duration::from_secs_f64(read as f64 / config.bytes_per_sec as f64);
            let ahead = due.saturating_sub(started.elapsed());
            if !ahead.is_zero() && !control.stop.load(Ordering::Relaxed) {
                std::thread::sleep(ahead.min(Duration::from_secs(1)));
            }
        });
        stats.objects.fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(()) => {}
            Err(e @ StoreError::Corrupted { .. }) => {
                if store.mark_corrupt(&meta) {
                    stats.corrupt_found.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(target: "oasis::storage", name = %meta.name, id = meta.id, "scrub: {e}");
                }
            }
            // Deleted or replaced while the pass ran: nothing to check any more.
            Err(StoreError::Io { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => {
            }
            Err(e) => {
                tracing::warn!(target: "oasis::storage", name = %meta.name, "scrub could not read: {e}")
            }
        }
    }
    false
}
