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
//!   `epoch()` learns of it;
//! - with per-thread leases (the last two models, on an account of 8 units): what the threads
//!   hold at once never exceeds the limit, no unit is lost or made up when a lease refill races a
//!   release, a trim and a threshold crossing that calls the leases back, and the masks settle on
//!   the level of reserved + leased units (what a level means with leases);
//! - a spare reservation (`reserve_spare`) racing an admission that crosses the thresholds never
//!   over-commits and leaves the masks settled, and one that would reach the warning level is
//!   refused in every interleaving, so it never takes units an admission needs.
//!
//! How: `engine/src/resource/` swaps its atomics, thread-locals and statics for loom's under
//! `cfg(loom)` (`Arc` stays std's: sharing is not part of the protocol). Run with
//! `RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom cargo test -p oasis-engine --release
//! --test loom_resource`. Each model is kept small (a few operations per thread; at most 4
//! preemptions with two threads, 3 with three or with leases) so all eight finish in about 50 s in
//! release mode; without a bound the two-thread models ran past a minute each.
//!
//! The models have teeth: with the re-check removed from `settle_account` (write the level once
//! and return), the first four fail on the settle assertion within a second; with the lease
//! call-back made a load and a store instead of one swap, both lease models fail within 8 s;
//! with the warning bound taken out of `take_below_warning`, the last spare model fails at once.

#![cfg(loom)]

use loom::sync::atomic::AtomicU64;
use loom::sync::atomic::Ordering::SeqCst;
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
        lease_units: 0,
    };
    manager_with(small)
}

/// A manager whose model account (connections) has `model` and whose other accounts are unused.
fn manager_with(model: AccountLimits) -> Arc<ResourceManager> {
    ResourceManager::new(&ResourceLimits {
        memory_bytes: AccountLimits::new(1),
        net_bps: Vec::new(),
        disk_read_bps: AccountLimits::new(1),
        disk_space_bytes: AccountLimits::new(1),
        connections: model,
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

/// A spare reservation (`reserve_spare`, a segment's pace above 1x) races reservations that
/// cross the thresholds: it is granted only below the warning level, never over-commits, and
/// the masks still settle on the final counter.
#[test]
fn spare_reservations_race_admissions() {
    run(
        || {
            let rm = manager();
            let spare = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || {
                    let s = rm.reserve_spare(ACCOUNT, 1);
                    assert_within_limit(&rm);
                    s
                })
            };
            let admit = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || {
                    let r = rm.reserve(ACCOUNT, 3);
                    assert_within_limit(&rm);
                    r.ok()
                })
            };
            let s = spare.join().unwrap();
            let r = admit.join().unwrap();
            // Below warning (2 units) a spare unit fits with the admission's 3 in the limit 4.
            assert!(r.is_some(), "the admission was refused");
            assert_eq!(rm.used(ACCOUNT), 3 + s.as_ref().map_or(0, |s| s.amount()));
            assert_settled(&rm);
            drop((s, r));
            assert_eq!(rm.used(ACCOUNT), 0);
            assert_settled(&rm);
        },
        Some(4),
    );
}

/// With one unit already held, a spare unit would reach the warning level: it is refused in
/// every interleaving, so the admission racing it always gets the 3 units left. This is the
/// model that fails when `take_below_warning` loses its bound (a spare unit taken, then the
/// admission refused for want of it).
#[test]
fn a_spare_reservation_never_takes_what_an_admission_needs() {
    run(
        || {
            let rm = manager();
            let held = rm.reserve(ACCOUNT, 1).expect("one unit of four");
            let spare = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || rm.reserve_spare(ACCOUNT, 1))
            };
            let admit = {
                let rm = Arc::clone(&rm);
                thread::spawn(move || rm.reserve(ACCOUNT, 3).ok())
            };
            let s = spare.join().unwrap();
            let r = admit.join().unwrap();
            assert!(s.is_none(), "a spare unit taken at the warning level");
            assert!(r.is_some(), "the admission was refused");
            assert_within_limit(&rm);
            drop((held, s, r));
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

// ---- Leases -------------------------------------------------------------------------------
//
// A second account shape: limit 8, warning at 4, critical at 6, leases of at most 2 units, so a
// reservation of 1 unit is served from a lease (refilled with 1 + 1 units while the account stays
// below 4), anything larger goes to the account. Under loom there are two lease slots, kept until
// the model ends: the two spawned threads get one each, and the main thread, which drops what
// they kept, has none and returns it to the account directly.
//
// What the lease models add to the claims above:
// - what the threads hold at once (counted by themselves in `held`, raised after a reserve
//   returns and lowered before a drop) never exceeds the limit, leased units included in the
//   account's counter;
// - after the threads are joined, reserved + leased equals the account's counter, the reserved
//   part is what is still held, and the level masks equal the level of reserved + leased (the
//   definition of a level with leases);
// - a refill racing a release and another thread's threshold crossing (which calls leases back)
//   loses no unit and settles the masks.

const LEASE_LIMIT: u64 = 8;

fn leasing_manager() -> Arc<ResourceManager> {
    let leased = AccountLimits {
        limit: LEASE_LIMIT,
        warn_permille: 500,
        critical_permille: 750,
        lease_units: 2,
    };
    manager_with(leased)
}

fn lease_level(committed: u64) -> Level {
    match committed {
        0..=3 => Level::Normal,
        4..=5 => Level::Warning,
        _ => Level::Critical,
    }
}

/// Reserves `amount` and counts it in `held`, checking the sum against the limit.
fn hold(rm: &ResourceManager, held: &AtomicU64, amount: u64) -> Option<Reservation> {
    let r = rm.reserve(ACCOUNT, amount).ok()?;
    let now = held.fetch_add(amount, SeqCst) + amount;
    assert!(
        now <= LEASE_LIMIT,
        "{now} units held at once, limit {LEASE_LIMIT}"
    );
    Some(r)
}

fn release(held: &AtomicU64, r: Reservation) {
    held.fetch_sub(r.amount(), SeqCst);
    drop(r);
}

/// Spawns a loom thread running `f` with its own handles on the manager and the `held` count.
fn spawn_holder<T: Send + 'static>(
    rm: &Arc<ResourceManager>,
    held: &Arc<AtomicU64>,
    f: impl FnOnce(&ResourceManager, &AtomicU64) -> T + Send + 'static,
) -> thread::JoinHandle<T> {
    let (rm, held) = (Arc::clone(rm), Arc::clone(held));
    thread::spawn(move || f(&rm, &held))
}

/// After every thread is joined: the counter is reserved + leased, reserved is what is `kept`,
/// and the masks show the level of reserved + leased.
fn assert_lease_settled(rm: &ResourceManager, kept: u64) {
    let (used, leased) = (rm.used(ACCOUNT), rm.leased(ACCOUNT));
    assert_eq!(
        used, kept,
        "reserved {used}, still held {kept} (leased {leased})"
    );
    let committed = used + leased;
    assert!(committed <= LEASE_LIMIT);
    let level = lease_level(committed);
    assert_eq!(
        rm.level(),
        level,
        "masks disagree with committed = {committed}"
    );
    assert_eq!(rm.is_critical(), level == Level::Critical);
}

/// One thread refills its lease, releases into it and takes from it again, while the other takes
/// the account across warning and critical with a direct reservation (calling leases back) and
/// releases it.
#[test]
fn lease_refill_races_release_and_crossing() {
    run(
        || {
            let rm = leasing_manager();
            let held = Arc::new(AtomicU64::new(0));
            let leaser = spawn_holder(&rm, &held, |rm, held| {
                // Refill (1 reserved + 1 leased), release into the lease, take from it.
                let first = hold(rm, held, 1);
                if let Some(r) = first {
                    release(held, r);
                }
                hold(rm, held, 1)
            });
            let crosser = spawn_holder(&rm, &held, |rm, held| {
                if let Some(r) = hold(rm, held, 6) {
                    release(held, r);
                }
            });
            let kept = leaser.join().unwrap();
            crosser.join().unwrap();
            assert_lease_settled(&rm, kept.as_ref().map_or(0, |r| r.amount()));
            drop(kept);
            assert_lease_settled(&rm, 0);
        },
        Some(3),
    );
}

/// Both threads lease: one overflows its lease so a release trims it back to the account, while
/// the other refills, then crosses a threshold or is refused, calling the leases back.
#[test]
fn lease_trim_races_reclaim() {
    run(
        || {
            let rm = leasing_manager();
            let held = Arc::new(AtomicU64::new(0));
            let trimmer = spawn_holder(&rm, &held, |rm, held| {
                // Refill, take from the lease, then a refill refused at the warning
                // threshold (a direct take); three releases overflow the lease: a trim.
                let a = hold(rm, held, 1);
                let b = hold(rm, held, 1);
                let c = hold(rm, held, 1);
                for r in [a, b, c].into_iter().flatten() {
                    release(held, r);
                }
            });
            let taker = spawn_holder(&rm, &held, |rm, held| {
                let small = hold(rm, held, 1);
                let big = hold(rm, held, 5);
                (small, big)
            });
            trimmer.join().unwrap();
            let (small, big) = taker.join().unwrap();
            let kept =
                small.as_ref().map_or(0, |r| r.amount()) + big.as_ref().map_or(0, |r| r.amount());
            assert_lease_settled(&rm, kept);
            drop((small, big));
            assert_lease_settled(&rm, 0);
        },
        Some(3),
    );
}
