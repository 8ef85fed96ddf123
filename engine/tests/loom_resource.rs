//! Loom model of the Resource Manager's reserve/release protocol.
//!
//! What it proves, for every interleaving loom can build within its bounds (C11 memory model,
//! stale loads included) of 2-3 threads working on one account with a limit of 4 units
//! (warning at 2, critical at 3):
//!
//! - a successful reserve or grow never leaves `used` above the limit (the CAS loop in `take`);
//! - when every reservation has been dropped, `used` is back to 0 exactly;
//! - the level masks settle on the truth: once all threads are joined, `level()` and
//!   `is_critical()` equal the level of the final `used`, even when threads crossed the warning
//!   and critical thresholds up and down at the same time (the claim `settle_account` makes);
//! - when the final level differs from the starting one, the epoch moved, so a worker polling
//!   `epoch()` learns of it.
//!
//! How: `engine/src/resource.rs` swaps its atomics for loom's under `cfg(loom)` (`Arc` stays std's:
//! sharing is not part of the protocol). Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p oasis-engine --release
//! --test loom_resource`. Each model is kept small (a few operations per thread; at most 4
//! preemptions with two threads, 3 with three) so all four finish in about 30 s in release mode;
//! without a bound the two-thread models ran past a minute each.
//!
//! The models have teeth: with the re-check removed from `settle_account` (write the level once
//! and return), all four fail on the settle assertion within a second.

#![cfg(loom)]

use loom::thread;
use oasis_engine::resource::{AccountLimits, Level, ResourceLimits, ResourceManager};
use oasis_engine::{Reservation, Resource};
use std::sync::Arc;

const LIMIT: u64 = 4;
const ACCOUNT: Resource = Resource::Connections;

/// Limit 4, warning at 50 % (2 units), critical at 75 % (3 units).
fn manager() -> Arc<ResourceManager> {
    let small = AccountLimits {
        limit: LIMIT,
        warn_permille: 500,
        critical_permille: 750,
    };
    ResourceManager::new(&ResourceLimits {
        memory_bytes: AccountLimits::new(1),
        net_bps: Vec::new(),
        disk_read_bps: AccountLimits::new(1),
        disk_space_bytes: AccountLimits::new(1),
        connections: small,
        open_files: AccountLimits::new(1),
    })
}

/// The level the masks must show for `used` units of the model account.
fn expected_level(used: u64) -> Level {
    match used {
        0..=1 => Level::Normal,
        2 => Level::Warning,
        _ => Level::Critical,
    }
}

fn assert_within_limit(rm: &ResourceManager) {
    let used = rm.used(ACCOUNT);
    assert!(used <= LIMIT, "used {used} above limit {LIMIT}");
}

/// After every thread is joined: the masks agree with the counter, and a level change is visible
/// through the epoch.
fn assert_settled(rm: &ResourceManager) {
    let used = rm.used(ACCOUNT);
    let level = expected_level(used);
    assert_eq!(rm.level(), level, "level mask disagrees with used = {used}");
    assert_eq!(rm.is_critical(), level == Level::Critical, "used = {used}");
    if level != Level::Normal {
        assert!(rm.epoch() > 0, "level is {level} but the epoch never moved");
    }
}

fn run(model: impl Fn() + Sync + Send + 'static, preemption_bound: Option<usize>) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = preemption_bound;
    builder.check(model);
}

/// Two threads reserve, grow and release concurrently; together they want more than the limit.
#[test]
fn reserve_grow_release_never_over_commits() {
    run(
        || {
            let rm = manager();
            let worker = |rm: Arc<ResourceManager>| {
                move || {
                    if let Ok(mut r) = rm.reserve(ACCOUNT, 2) {
                        assert_within_limit(&rm);
                        if r.grow(1).is_ok() {
                            assert_within_limit(&rm);
                        }
                        drop(r);
                    }
                }
            };
            let t1 = thread::spawn(worker(Arc::clone(&rm)));
            let t2 = thread::spawn(worker(Arc::clone(&rm)));
            t1.join().unwrap();
            t2.join().unwrap();
            assert_eq!(rm.used(ACCOUNT), 0);
            assert_settled(&rm);
        },
        Some(4),
    );
}

/// One thread goes Normal -> Critical -> Normal while another goes Normal -> Warning and keeps
/// its reservation: the masks must end on whatever the final counter says.
#[test]
fn racing_threshold_crossings_settle() {
    run(
        || {
            let rm = manager();
            let up_down = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || {
                    if let Ok(r) = rm.reserve(ACCOUNT, 3) {
                        assert_within_limit(&rm);
                        drop(r);
                    }
                })
            };
            let holder = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || rm.reserve(ACCOUNT, 2).ok())
            };
            up_down.join().unwrap();
            let held: Option<Reservation> = holder.join().unwrap();
            assert_eq!(rm.used(ACCOUNT), held.as_ref().map_or(0, |r| r.amount()));
            assert_settled(&rm);
            drop(held);
            assert_eq!(rm.used(ACCOUNT), 0);
            assert_settled(&rm);
        },
        Some(4),
    );
}

/// Both threads cross thresholds in both directions with shrink and drop, so the two settle
/// loops race on both masks (warning and critical) in opposite directions.
#[test]
fn opposite_crossings_with_shrink_settle() {
    run(
        || {
            let rm = manager();
            let t1 = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || {
                    // Normal -> Critical, then back down through Warning.
                    if let Ok(mut r) = rm.reserve(ACCOUNT, 3) {
                        assert_within_limit(&rm);
                        r.shrink(2);
                        Some(r)
                    } else {
                        None
                    }
                })
            };
            let t2 = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || {
                    if let Ok(r) = rm.reserve(ACCOUNT, 1) {
                        assert_within_limit(&rm);
                        drop(r);
                    }
                })
            };
            let kept = t1.join().unwrap();
            t2.join().unwrap();
            assert_eq!(rm.used(ACCOUNT), kept.as_ref().map_or(0, |r| r.amount()));
            assert_settled(&rm);
            drop(kept);
            assert_eq!(rm.used(ACCOUNT), 0);
            assert_settled(&rm);
        },
        Some(4),
    );
}

/// Three threads: one holds the account critical and releases, one grows from warning, one takes
/// a single unit and keeps it. Bounded preemptions keep the state space small.
#[test]
fn three_threads_settle() {
    run(
        || {
            let rm = manager();
            let spike = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || {
                    if let Ok(r) = rm.reserve(ACCOUNT, 3) {
                        assert_within_limit(&rm);
                        drop(r);
                    }
                })
            };
            let grower = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || {
                    if let Ok(mut r) = rm.reserve(ACCOUNT, 1) {
                        if r.grow(1).is_ok() {
                            assert_within_limit(&rm);
                        }
                        drop(r);
                    }
                })
            };
            let keeper = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || rm.reserve(ACCOUNT, 1).ok())
            };
            spike.join().unwrap();
            grower.join().unwrap();
            let kept = keeper.join().unwrap();
            assert_eq!(rm.used(ACCOUNT), kept.as_ref().map_or(0, |r| r.amount()));
            assert_settled(&rm);
            drop(kept);
            assert_eq!(rm.used(ACCOUNT), 0);
            assert_settled(&rm);
        },
        Some(3),
    );
}
