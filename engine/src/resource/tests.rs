//! Unit tests of the Resource Manager: accounts, thresholds, and leases (what a level means
//! with them, refusals with budget idling in another thread's lease).

use super::*;

fn limits(limit: u64) -> ResourceLimits {
    ResourceLimits {
        memory_bytes: AccountLimits::new(limit),
        net_bps: vec![AccountLimits::new(limit), AccountLimits::new(limit)],
        disk_read_bps: AccountLimits::new(limit),
        disk_space_bytes: AccountLimits::new(limit),
        connections: AccountLimits::new(limit),
        open_files: AccountLimits::new(limit),
    }
}

#[test]
fn reserve_and_drop_returns_exactly() {
    let rm = ResourceManager::new(&limits(100));
    let a = rm.reserve(Resource::MemoryBytes, 60).unwrap();
    assert_eq!(rm.used(Resource::MemoryBytes), 60);
    let err = rm.reserve(Resource::MemoryBytes, 41).unwrap_err();
    assert_eq!(err.resource, Resource::MemoryBytes);
    assert_eq!(err.available, 40);
    assert!(err.to_string().contains("memory_bytes"));
    let b = rm.reserve(Resource::MemoryBytes, 40).unwrap();
    drop(a);
    assert_eq!(rm.used(Resource::MemoryBytes), 40);
    drop(b);
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
}

#[test]
fn spare_reservations_stay_below_the_warning_level() {
    // Warning at 80 of 100: spare capacity is what keeps the account below it.
    let rm = ResourceManager::new(&limits(100));
    let held = rm.reserve(Resource::NetBps(0), 50).unwrap();
    assert!(rm.reserve_spare(Resource::NetBps(0), 30).is_none());
    let spare = rm.reserve_spare(Resource::NetBps(0), 29).expect("below 80");
    assert_eq!(rm.used(Resource::NetBps(0)), 79);
    assert_eq!(rm.level(), Level::Normal);
    assert_eq!(rm.event_counts(), EventCounts::default(), "no event raised");
    // Admissions still get what is left up to the limit.
    let admitted = rm.reserve(Resource::NetBps(0), 21).unwrap();
    assert!(rm.reserve_spare(Resource::NetBps(0), 1).is_none());
    drop((held, spare, admitted));
    assert_eq!(rm.used(Resource::NetBps(0)), 0);
}

#[test]
fn accounts_are_independent_per_listener() {
    let rm = ResourceManager::new(&limits(10));
    let _a = rm.reserve(Resource::NetBps(0), 10).unwrap();
    assert!(rm.reserve(Resource::NetBps(0), 1).is_err());
    let _b = rm.reserve(Resource::NetBps(1), 10).unwrap();
}

#[test]
fn thresholds_raise_and_clear_events() {
    let rm = ResourceManager::new(&limits(1000));
    let e0 = rm.epoch();
    let a = rm.reserve(Resource::Connections, 800).unwrap();
    assert_eq!(rm.level(), Level::Warning);
    assert!(rm.epoch() > e0);
    let b = rm.reserve(Resource::Connections, 150).unwrap();
    assert!(rm.is_critical());
    assert_eq!(
        rm.sources_at(Level::Critical),
        vec!["connections".to_string()]
    );
    drop(b);
    assert!(!rm.is_critical());
    assert_eq!(rm.level(), Level::Warning);
    drop(a);
    assert_eq!(rm.level(), Level::Normal);
    assert_eq!(
        rm.event_counts(),
        EventCounts {
            warning: 1,
            critical: 1
        }
    );
}

#[test]
fn external_sources_are_independent_of_accounts() {
    let rm = ResourceManager::new(&limits(1000));
    rm.set_external(External::DiskFree, Level::Critical);
    assert!(rm.is_critical());
    assert_eq!(rm.sources_at(Level::Warning), vec!["disk_free".to_string()]);
    rm.set_external(External::DiskFree, Level::Normal);
    assert_eq!(rm.level(), Level::Normal);
}

#[test]
fn grow_and_shrink() {
    let rm = ResourceManager::new(&limits(100));
    let mut r = rm.reserve(Resource::DiskSpaceBytes, 10).unwrap();
    r.grow(50).unwrap();
    assert!(r.grow(41).is_err());
    assert_eq!(rm.used(Resource::DiskSpaceBytes), 60);
    r.shrink(20);
    assert_eq!(rm.used(Resource::DiskSpaceBytes), 40);
    drop(r);
    assert_eq!(rm.used(Resource::DiskSpaceBytes), 0);
}

#[test]
fn never_over_commits_under_contention() {
    let rm = ResourceManager::new(&limits(1000));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let rm = Arc::clone(&rm);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                for i in 0..20_000u64 {
                    if let Ok(r) = rm.reserve(Resource::MemoryBytes, 1 + i % 7) {
                        assert!(rm.used(Resource::MemoryBytes) <= 1000);
                        held.push(r);
                    }
                    if held.len() > 30 {
                        held.clear();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
    assert_eq!(rm.level(), Level::Normal);
}

/// Memory limited to `limit` with leases of `lease_units` and thresholds in per mille; the other
/// accounts are unused.
fn leasing(limit: u64, lease_units: u64, warn: u16, critical: u16) -> Arc<ResourceManager> {
    let mut l = limits(limit);
    l.memory_bytes = AccountLimits {
        limit,
        warn_permille: warn,
        critical_permille: critical,
        lease_units,
    };
    ResourceManager::new(&l)
}

fn level_of(used: u64, warn_at: u64, critical_at: u64) -> Level {
    if used >= critical_at {
        Level::Critical
    } else if used >= warn_at {
        Level::Warning
    } else {
        Level::Normal
    }
}

#[test]
fn small_reservations_are_served_from_a_lease() {
    let rm = leasing(1_000_000, 10_000, 800, 950);
    let r = rm.reserve(Resource::MemoryBytes, 100).unwrap();
    // The refill took the reservation plus half a lease.
    assert_eq!(rm.used(Resource::MemoryBytes), 100);
    assert_eq!(rm.leased(Resource::MemoryBytes), 5_000);
    drop(r);
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
    assert_eq!(rm.leased(Resource::MemoryBytes), 5_100);
    // Reserving and dropping again moves units between the lease and the reservation only.
    for _ in 0..1000 {
        let r = rm.reserve(Resource::MemoryBytes, 100).unwrap();
        assert_eq!(rm.leased(Resource::MemoryBytes), 5_000);
        drop(r);
    }
    assert_eq!(rm.leased(Resource::MemoryBytes), 5_100);
    // A release that overflows the lease trims it back to half.
    let held: Vec<_> = (0..60)
        .map(|_| rm.reserve(Resource::MemoryBytes, 100).unwrap())
        .collect();
    assert_eq!(rm.used(Resource::MemoryBytes), 6_000);
    drop(held);
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
    assert!(rm.leased(Resource::MemoryBytes) <= 10_000);
    // A reservation above half a lease goes to the account itself.
    let big = rm.reserve(Resource::MemoryBytes, 5_001).unwrap();
    assert_eq!(rm.used(Resource::MemoryBytes), 5_001);
    drop(big);
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
}

/// Starts a thread that reserves and drops 10 units (leaving a lease of 60: 10 + half of 100)
/// and then idles, keeping its slot and lease, until the returned sender is dropped or used.
fn idle_lease_holder(
    rm: &Arc<ResourceManager>,
) -> (std::thread::JoinHandle<()>, std::sync::mpsc::Sender<()>) {
    let (leased_tx, leased_rx) = std::sync::mpsc::channel();
    let (exit_tx, exit_rx) = std::sync::mpsc::channel::<()>();
    let rm = Arc::clone(rm);
    let idle = std::thread::spawn(move || {
        drop(rm.reserve(Resource::MemoryBytes, 10).unwrap());
        leased_tx.send(()).unwrap();
        let _ = exit_rx.recv();
    });
    leased_rx.recv().unwrap();
    (idle, exit_tx)
}

/// What a level means with leases: leased units count as used, but leases are only granted below
/// the warning threshold and are called back when a reservation crosses a threshold, so the level
/// is that of the units reserved, on the way up to the limit and down, even while another thread
/// sits on an idle lease.
#[test]
fn the_level_is_that_of_the_reservations() {
    let rm = leasing(1_000, 100, 500, 800);
    let (idle, exit) = idle_lease_holder(&rm);
    assert_eq!(rm.leased(Resource::MemoryBytes), 60);
    let mut held = Vec::new();
    loop {
        match rm.reserve(Resource::MemoryBytes, 10) {
            Ok(r) => held.push(r),
            Err(e) => {
                assert_eq!(e.available, 0, "refused with room left: {e}");
                break;
            }
        }
        let used = rm.used(Resource::MemoryBytes);
        assert_eq!(rm.level(), level_of(used, 500, 800), "used {used}");
    }
    assert_eq!(held.len(), 100, "the whole limit is reservable");
    assert_eq!(rm.leased(Resource::MemoryBytes), 0);
    assert_eq!(
        rm.event_counts(),
        EventCounts {
            warning: 1,
            critical: 1
        }
    );
    while let Some(r) = held.pop() {
        drop(r);
        let used = rm.used(Resource::MemoryBytes);
        assert_eq!(rm.level(), level_of(used, 500, 800), "used {used}");
    }
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
    assert!(rm.leased(Resource::MemoryBytes) <= 100);
    drop(exit);
    idle.join().unwrap();
    let snap = &rm.snapshot()[0];
    assert_eq!(snap.resource, Resource::MemoryBytes);
    assert_eq!(
        (snap.used, snap.leased),
        (0, rm.leased(Resource::MemoryBytes))
    );
    assert_eq!(snap.level, Level::Normal);
}

/// Budget idling in the lease of a thread that does nothing more is called back when another
/// thread needs it, so the whole limit stays reservable.
#[test]
fn an_idle_lease_does_not_cause_a_refusal() {
    let rm = leasing(1_000, 100, 900, 950);
    let (idle, exit) = idle_lease_holder(&rm);
    assert_eq!(rm.leased(Resource::MemoryBytes), 60);
    let all = rm
        .reserve(Resource::MemoryBytes, 1_000)
        .expect("the idle lease is called back");
    assert_eq!(rm.used(Resource::MemoryBytes), 1_000);
    assert_eq!(rm.leased(Resource::MemoryBytes), 0);
    drop(exit);
    idle.join().unwrap();
    drop(all);
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
}

/// A reservation may be dropped by another thread than the one that took it: its units go to
/// that thread's lease (or the account), never lost.
#[test]
fn a_reservation_dropped_elsewhere_returns_its_units() {
    let rm = leasing(1_000_000, 10_000, 800, 950);
    let r = rm.reserve(Resource::MemoryBytes, 300).unwrap();
    std::thread::spawn(move || drop(r)).join().unwrap();
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
}

/// Threads with leases on one account: what is reserved at once, counted by the threads
/// themselves, never exceeds the limit, and everything comes back.
#[test]
fn leases_never_over_commit_under_contention() {
    use std::sync::atomic::AtomicU64 as StdAtomic;
    const LIMIT: u64 = 1_000;
    let rm = leasing(LIMIT, 100, 800, 950);
    let held_total = Arc::new(StdAtomic::new(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let rm = Arc::clone(&rm);
            let held_total = Arc::clone(&held_total);
            std::thread::spawn(move || {
                let mut held = Vec::new();
                let mut refused = 0u32;
                for i in 0..20_000u64 {
                    let amount = 1 + (i + t) % 90;
                    match rm.reserve(Resource::MemoryBytes, amount) {
                        Ok(r) => {
                            let now = held_total.fetch_add(amount, Ordering::SeqCst) + amount;
                            assert!(now <= LIMIT, "{now} reserved at once, limit {LIMIT}");
                            held.push(r);
                        }
                        Err(_) => refused += 1,
                    }
                    if held.len() > 12 {
                        for r in held.drain(..) {
                            held_total.fetch_sub(r.amount(), Ordering::SeqCst);
                        }
                    }
                }
                for r in held.drain(..) {
                    held_total.fetch_sub(r.amount(), Ordering::SeqCst);
                }
                refused
            })
        })
        .collect();
    let refused: u32 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    // 13 consecutive amounts can sum to 1092: even one thread alone reaches the limit.
    assert!(
        refused > 0,
        "the limit was never reached: the test proves nothing"
    );
    assert_eq!(rm.used(Resource::MemoryBytes), 0);
    assert_eq!(rm.level(), Level::Normal);
}
