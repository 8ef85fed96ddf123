//! A connection's share of the server's memory budget (`[resources] memory_bytes`), in
//! proportion to what it holds: [`CONN_BASE_BYTES`] while it is open, and more only while it
//! holds more (a frame being received, a batch gathering or with the store, a reader's plan, a
//! list being answered), given back as those drain.
//!
//! The session asks before it allocates: [`ConnMemory::cover`] grows the reservation to what the
//! connection will hold, and the Resource Manager refuses past the budget, so the budget is
//! never over-committed. A refusal does not block anything: the session stops reading while it
//! has a batch with the store (whose answer frees memory and drives it again), and otherwise
//! refuses with `REFUSE` 4 and closes. An idle connection of 10,000 costs its base alone.
//!
//! Counts bytes; allocates nothing and never blocks.

use std::sync::Arc;

use oasis_engine::resource::Resource;
use oasis_engine::{Reservation, ReserveError, ResourceManager};

/// Reserved for every open connection: its session and up to `IN_BASE_BYTES` (2 KiB) of what it
/// holds (a `HELLO` being decoded, queued control frames: `WELCOME`, `ACK`, `REFUSE`).
pub const CONN_BASE_BYTES: u64 = 4096;
/// What a connection may hold within its base.
pub const IN_BASE_BYTES: usize = 2048;
/// Beyond the base, reservations grow in steps of this, so a connection does not touch the
/// shared account for every frame.
const STEP_BYTES: u64 = 16 * 1024;
/// A reservation is cut back once it exceeds what the connection holds by this much.
const SLACK_BYTES: u64 = 128 * 1024;

/// What one connection has reserved of the server's memory.
pub(super) struct ConnMemory {
    /// `None` without a Resource Manager (tests): nothing is counted.
    reservation: Option<Reservation>,
}

/// What `held` bytes call for: the base, and past what it covers, the bytes rounded up to a
/// step.
fn wanted(held: usize) -> u64 {
    if held <= IN_BASE_BYTES {
        return CONN_BASE_BYTES;
    }
    CONN_BASE_BYTES + (held as u64).div_ceil(STEP_BYTES) * STEP_BYTES
}

impl ConnMemory {
    /// Reserves the base of a new connection (nothing without `rm`).
    pub fn open(rm: Option<&Arc<ResourceManager>>) -> Result<ConnMemory, ReserveError> {
        let reservation = match rm {
            Some(rm) => Some(rm.reserve(Resource::MemoryBytes, CONN_BASE_BYTES)?),
            None => None,
        };
        Ok(ConnMemory { reservation })
    }

    /// Makes the reservation cover `held` bytes, growing it if needed; false (and nothing
    /// changed) when the budget cannot.
    pub fn cover(&mut self, held: usize) -> bool {
        let Some(r) = &mut self.reservation else {
            return true;
        };
        let want = wanted(held);
        if want <= r.amount() {
            return true;
        }
        r.grow(want - r.amount()).is_ok()
    }

    /// Gives back what is reserved beyond `held` bytes once that is more than the slack.
    pub fn settle(&mut self, held: usize) {
        let Some(r) = &mut self.reservation else {
            return;
        };
        let want = wanted(held);
        if r.amount() > want + SLACK_BYTES {
            r.shrink(r.amount() - want);
        }
    }

    /// What is reserved (0 without a Resource Manager).
    pub fn reserved(&self) -> u64 {
        self.reservation.as_ref().map_or(0, Reservation::amount)
    }

    /// Whether `held` bytes are within the reservation (always, without a Resource Manager).
    pub fn covers(&self, held: usize) -> bool {
        self.reservation
            .as_ref()
            .is_none_or(|r| wanted(held) <= r.amount())
    }
}

/// A Resource Manager whose memory budget is `memory_bytes` (every other account unlimited).
#[cfg(test)]
pub(super) fn budget_for_test(memory_bytes: u64) -> Arc<ResourceManager> {
    use oasis_engine::resource::{AccountLimits, ResourceLimits};
    let unlimited = AccountLimits::new(u64::MAX);
    ResourceManager::new(&ResourceLimits {
        memory_bytes: AccountLimits::new(memory_bytes),
        net_bps: vec![unlimited],
        disk_read_bps: unlimited,
        disk_space_bytes: unlimited,
        connections: unlimited,
        open_files: unlimited,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manager(memory_bytes: u64) -> Arc<ResourceManager> {
        budget_for_test(memory_bytes)
    }

    #[test]
    fn a_connection_reserves_its_base_then_what_it_holds_and_gives_it_back() {
        let rm = manager(1 << 20);
        let mut m = ConnMemory::open(Some(&rm)).unwrap();
        assert_eq!(rm.used(Resource::MemoryBytes), CONN_BASE_BYTES);
        assert!(m.covers(IN_BASE_BYTES));
        assert!(!m.covers(IN_BASE_BYTES + 1));
        assert!(m.cover(100_000));
        assert!(m.covers(100_000));
        let grown = rm.used(Resource::MemoryBytes);
        assert_eq!(grown, CONN_BASE_BYTES + 7 * STEP_BYTES);
        // Less held, within the slack: kept; drained: given back.
        m.settle(50_000);
        assert_eq!(rm.used(Resource::MemoryBytes), grown);
        assert!(m.cover(600_000));
        m.settle(0);
        assert_eq!(rm.used(Resource::MemoryBytes), CONN_BASE_BYTES);
        drop(m);
        assert_eq!(rm.used(Resource::MemoryBytes), 0);
    }

    #[test]
    fn the_budget_is_never_over_committed() {
        let rm = manager(CONN_BASE_BYTES * 3 + STEP_BYTES);
        let mut a = ConnMemory::open(Some(&rm)).unwrap();
        let _b = ConnMemory::open(Some(&rm)).unwrap();
        let _c = ConnMemory::open(Some(&rm)).unwrap();
        assert!(a.cover(STEP_BYTES as usize));
        assert!(ConnMemory::open(Some(&rm)).is_err(), "a fourth base");
        assert!(!a.cover(STEP_BYTES as usize + 1), "one step more");
        assert!(a.covers(STEP_BYTES as usize));
        assert_eq!(
            rm.used(Resource::MemoryBytes),
            rm.limit(Resource::MemoryBytes)
        );
        let mut free = ConnMemory::open(None).unwrap();
        assert!(free.cover(usize::MAX / 2) && free.covers(usize::MAX / 2));
    }
}
