//! Which lease slot the calling thread uses: a small number claimed once per thread.
//!
//! The first reservation a thread makes claims the lowest free slot number from one process-wide
//! bit mask and keeps it until the thread exits, when a thread-local destructor gives it back, so a
//! pool that starts and stops threads reuses the same few numbers. Every manager indexes its lease
//! table with that number ([`super::lease`]). When every slot is claimed the thread gets none and
//! reserves straight from the shared account, as every thread did before leases.
//!
//! A slot number is a hint that spreads threads over cache lines, not a lock: every operation on
//! a lease is an atomic read-modify-write, so two threads that ended up on one slot (a destructor
//! racing a claim, say) stay correct and only contend. This module never blocks and never
//! allocates after a thread's first claim.

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

/// Threads that lease at once, at most; later threads reserve from the shared account. Under loom
/// two slots keep the state space small and still model a thread that has none (the model's main
/// thread, after its two spawned threads took both).
pub(super) const SLOTS: usize = if cfg!(loom) { 2 } else { 64 };
const _: () = assert!(SLOTS >= 1 && SLOTS <= 64);

/// All slot bits.
const ALL: u64 = if SLOTS == 64 {
    u64::MAX
} else {
    (1u64 << SLOTS) - 1
};

#[cfg(not(loom))]
static CLAIMED: AtomicU64 = AtomicU64::new(0);

#[cfg(loom)]
loom::lazy_static! {
    static ref CLAIMED: AtomicU64 = AtomicU64::new(0);
}

/// A thread's claim on one slot number, given back when the thread exits.
struct Claim(Option<usize>);

impl Claim {
    fn take() -> Claim {
        let mut claimed = CLAIMED.load(Ordering::Relaxed);
        loop {
            let free = !claimed & ALL;
            if free == 0 {
                return Claim(None);
            }
            let bit = free.trailing_zeros();
            match CLAIMED.compare_exchange_weak(
                claimed,
                claimed | (1 << bit),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Claim(Some(bit as usize)),
                Err(now) => claimed = now,
            }
        }
    }
}

// Under loom the claim is kept until the model ends: the main thread's locals are destroyed
// after loom's statics, so a release there would touch a dead static. Spawned threads keep their
// slots, and a thread started later runs without one, which the models want covered anyway.
#[cfg(not(loom))]
impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(slot) = self.0 {
            CLAIMED.fetch_and(!(1u64 << slot), Ordering::AcqRel);
        }
    }
}

#[cfg(not(loom))]
std::thread_local! {
    static SLOT: Claim = Claim::take();
}

#[cfg(loom)]
loom::thread_local! {
    static SLOT: Claim = Claim::take();
}

/// The calling thread's slot, claiming one on first use. `None` when all are taken, or while the
/// thread's locals are being destroyed (a reservation dropped by another thread-local's
/// destructor): the caller then uses the shared account.
#[inline]
pub(super) fn current() -> Option<usize> {
    SLOT.try_with(|claim| claim.0).ok().flatten()
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn live_threads_hold_distinct_slots() {
        let mine = current().expect("a test thread gets a slot");
        assert_eq!(current(), Some(mine), "the slot is kept between calls");
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(2));
        let spawn = || {
            let barrier = std::sync::Arc::clone(&barrier);
            std::thread::spawn(move || {
                let slot = current();
                barrier.wait(); // both threads hold their claim at this point
                slot
            })
        };
        let (a, b) = (spawn(), spawn());
        let (a, b) = (a.join().unwrap(), b.join().unwrap());
        assert!(
            a.is_some() && b.is_some(),
            "fewer than {SLOTS} threads here"
        );
        assert_ne!(a, b, "two live threads never share a slot");
        assert_ne!(a, Some(mine));
        assert_ne!(b, Some(mine));
    }
}
