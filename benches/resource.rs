//! Benchmarks of the Resource Manager's hot path: `reserve` + drop of the returned reservation.
//!
//! Three cases: uncontended (one thread), contended (a second thread hammers the same account at
//! the same time, so the CAS loop and the cache line bounce), and two threads on different
//! accounts (what sharing the manager costs when the accounts do not collide), far apart and
//! adjacent in memory. The two-thread
//! cases use `iter_custom`: both threads run `iters` reserve/drop pairs started by one barrier,
//! and the measured thread's own elapsed time is reported. Timing lives here, never in tests.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oasis_engine::resource::{AccountLimits, Resource, ResourceLimits, ResourceManager};

/// Large enough that neither thread is ever refused (2 threads x 1 unit each).
const LIMIT_UNITS: u64 = 1 << 40;

fn manager() -> Arc<ResourceManager> {
    let limits = AccountLimits::new(LIMIT_UNITS);
    ResourceManager::new(&ResourceLimits {
        memory_bytes: limits,
        net_bps: vec![limits],
        disk_read_bps: limits,
        disk_space_bytes: limits,
        connections: limits,
        open_files: limits,
    })
}

fn reserve_drop(rm: &Arc<ResourceManager>, resource: Resource) {
    let reservation = rm
        .reserve(resource, black_box(4096))
        .expect("limit is huge");
    drop(black_box(reservation));
}

/// Runs `iters` reserve/drop pairs on `measured` while a second thread does the same on `rival`
/// until the measured loop ends. Returns the measured thread's time.
fn two_threads(
    rm: &Arc<ResourceManager>,
    measured: Resource,
    rival: Resource,
    iters: u64,
) -> Duration {
    let barrier = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let other = {
        let rm = Arc::clone(rm);
        let barrier = Arc::clone(&barrier);
        let done = Arc::clone(&done);
        thread::spawn(move || {
            barrier.wait();
            while !done.load(Ordering::Relaxed) {
                reserve_drop(&rm, rival);
            }
        })
    };
    barrier.wait();
    let start = Instant::now();
    for _ in 0..iters {
        reserve_drop(rm, measured);
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    other.join().expect("rival thread panicked");
    elapsed
}

fn bench_reserve(c: &mut Criterion) {
    let rm = manager();
    let mut group = c.benchmark_group("reserve_drop");
    group.throughput(Throughput::Elements(1));
    group.bench_function("uncontended", |b| {
        b.iter(|| reserve_drop(&rm, Resource::MemoryBytes))
    });
    group.bench_function("contended_same_account", |b| {
        b.iter_custom(|iters| two_threads(&rm, Resource::MemoryBytes, Resource::MemoryBytes, iters))
    });
    group.bench_function("two_threads_different_accounts", |b| {
        b.iter_custom(|iters| two_threads(&rm, Resource::MemoryBytes, Resource::NetBps(0), iters))
    });
    // Accounts 0 and 1 sit next to each other in the manager's `Vec<Account>` (40 bytes each), so
    // their counters share a cache line: this case shows what false sharing costs.
    group.bench_function("two_threads_adjacent_accounts", |b| {
        b.iter_custom(|iters| two_threads(&rm, Resource::MemoryBytes, Resource::DiskReadBps, iters))
    });
    group.finish();
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
}

criterion_group!(benches, bench_reserve);
criterion_main!(benches);
