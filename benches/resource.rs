//! Benchmarks of the Resource Manager's hot path: `reserve` + drop of the returned reservation.
//!
//! Three cases: uncontended (one thread), contended (a second thread hammers the same account at
//! the same time: every worker on one shared account, which per-thread leases are for), and two
//! threads on different accounts (what sharing the manager costs when the accounts do not
//! collide), far apart and adjacent in memory. The two-thread cases use `iter_custom`: both
//! threads run reserve/drop pairs started by one barrier, and the measured thread's own elapsed
//! time for `iters` pairs is reported. The accounts use the default lease size (1/4096 of the
//! limit), far above the 4 KiB reserved, so every pair is served by the thread's lease after its
//! first refill. Timing lives here, never in tests.
//!
//! A control group runs the same two atomic read-modify-writes per pair on a private cache line,
//! alone and beside a rival thread doing the same on another line, with no manager and nothing
//! shared: the ratio of the two is what the machine alone makes a second thread cost (on a VM
//! whose vCPUs are busy or hyperthread siblings, far above 1), the floor of the two-thread cases.

use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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

/// Runs `measured` `iters` times while a second thread runs `rival` until the measured loop
/// ends. Returns the measured thread's time.
fn two_threads(measured: impl Fn(), rival: impl Fn() + Send + 'static, iters: u64) -> Duration {
    let barrier = Arc::new(Barrier::new(2));
    let done = Arc::new(AtomicBool::new(false));
    let other = {
        let barrier = Arc::clone(&barrier);
        let done = Arc::clone(&done);
        thread::spawn(move || {
            barrier.wait();
            while !done.load(Ordering::Relaxed) {
                rival();
            }
        })
    };
    barrier.wait();
    let start = Instant::now();
    for _ in 0..iters {
        measured();
    }
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    other.join().expect("rival thread panicked");
    elapsed
}

/// Reserve/drop pairs on `measured` beside a thread doing the same on `rival`.
fn two_accounts(
    rm: &Arc<ResourceManager>,
    measured: Resource,
    rival: Resource,
    iters: u64,
) -> Duration {
    let other = Arc::clone(rm);
    two_threads(
        || reserve_drop(rm, measured),
        move || reserve_drop(&other, rival),
        iters,
    )
}

fn bench_reserve(c: &mut Criterion) {
    let rm = manager();
    let mut group = c.benchmark_group("reserve_drop");
    group.throughput(Throughput::Elements(1));
    group.bench_function("uncontended", |b| {
        b.iter(|| reserve_drop(&rm, Resource::MemoryBytes))
    });
    group.bench_function("contended_same_account", |b| {
        b.iter_custom(|iters| {
            two_accounts(&rm, Resource::MemoryBytes, Resource::MemoryBytes, iters)
        })
    });
    group.bench_function("two_threads_different_accounts", |b| {
        b.iter_custom(|iters| two_accounts(&rm, Resource::MemoryBytes, Resource::NetBps(0), iters))
    });
    // Accounts 0 and 1 sit next to each other in the manager's table; each is padded to 128
    // bytes, so their counters no longer share a cache line (before padding this case showed
    // what false sharing cost).
    group.bench_function("two_threads_adjacent_accounts", |b| {
        b.iter_custom(|iters| {
            two_accounts(&rm, Resource::MemoryBytes, Resource::DiskReadBps, iters)
        })
    });
    group.finish();
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
}

/// One counter alone on its cache line.
#[repr(align(128))]
struct Line(AtomicU64);

/// What the lease path costs in atomics, without the manager: a CAS down, an add back.
fn atomic_pair(line: &Line) {
    let word = &line.0;
    let v = word.load(Ordering::Acquire);
    let _ = black_box(word.compare_exchange(
        v,
        v.wrapping_sub(black_box(4096)),
        Ordering::AcqRel,
        Ordering::Acquire,
    ));
    word.fetch_add(black_box(4096), Ordering::AcqRel);
}

fn bench_control(c: &mut Criterion) {
    let lines: &'static [Line; 2] = Box::leak(Box::new([
        Line(AtomicU64::new(LIMIT_UNITS)),
        Line(AtomicU64::new(LIMIT_UNITS)),
    ]));
    let mut group = c.benchmark_group("control_atomic_pair");
    group.throughput(Throughput::Elements(1));
    group.bench_function("alone", |b| b.iter(|| atomic_pair(&lines[0])));
    group.bench_function("rival_on_another_line", |b| {
        b.iter_custom(|iters| {
            two_threads(|| atomic_pair(&lines[0]), || atomic_pair(&lines[1]), iters)
        })
    });
    group.finish();
}

criterion_group!(benches, bench_reserve, bench_control);
criterion_main!(benches);
