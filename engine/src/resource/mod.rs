//! The Resource Manager: every allocation is reserved here first.
//!
//! From the original Oasis design: no module allocates a resource before reserving it with the
//! Resource Manager, cancellations go through it too, and crossing a threshold raises an event that
//! reaches every module. Here that is:
//!
//! - one account per resource (memory bytes, bandwidth per listen address, disk read bandwidth,
//!   disk space, connections, open files), each an atomic counter alone on its cache line and a
//!   fixed limit. [`ResourceManager::reserve`] never over-commits, even under contention, and
//!   takes no lock;
//! - a [`Reservation`] is an RAII handle: dropping it returns exactly what it took. It points at
//!   the manager's tables, which live for the process, so taking and dropping one writes no
//!   shared reference count;
//! - per-thread leases: a thread keeps a small batch of an account's budget in a word of its own
//!   and serves small reservations from it, so threads sharing one account rarely touch its
//!   counter. Leased units count as used, for the limit and for the levels (`ledger.rs` says
//!   how leases keep out of the way of thresholds and refusals);
//! - warning and critical thresholds per account, plus *external* sources fed by the system
//!   observer ([`crate::observer`]) so pressure from other processes raises events too. The current
//!   levels live in two bit masks and an epoch counter; a worker compares the epoch once per loop
//!   iteration ([`ResourceManager::epoch`]) to learn of a change without touching anything shared
//!   on the hot path.
//!
//! Files: `ledger.rs` is the lock-free protocol (accounts, leases, level bits), `slot.rs` gives
//! each thread its lease slot, this file the public types. This module must never block, allocate
//! on the reserve/release path, or read the clock.

mod ledger;
mod slot;
#[cfg(all(test, not(loom)))]
mod tests;

use std::fmt;

#[cfg(loom)]
use loom::sync::atomic::Ordering;
#[cfg(not(loom))]
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ledger::{Account, Ledger, EXTERNAL_BIT_BASE, FIXED_ACCOUNTS};

/// What a reservation is made of. The unit is in the name of each variant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Resource {
    /// Bytes of buffer memory (pools, per-connection buffers).
    MemoryBytes,
    /// Outgoing network bandwidth of one listen address (index into the configured listeners), bits/s.
    NetBps(u16),
    /// Disk read bandwidth, bits/s.
    DiskReadBps,
    /// Disk space in the data directory, bytes.
    DiskSpaceBytes,
    /// Client connections.
    Connections,
    /// Open file descriptors for media objects.
    OpenFiles,
}

impl fmt::Display for Resource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resource::MemoryBytes => f.write_str("memory_bytes"),
            Resource::NetBps(i) => write!(f, "net_bps[{i}]"),
            Resource::DiskReadBps => f.write_str("disk_read_bps"),
            Resource::DiskSpaceBytes => f.write_str("disk_space_bytes"),
            Resource::Connections => f.write_str("connections"),
            Resource::OpenFiles => f.write_str("open_files"),
        }
    }
}

/// Limits and thresholds of one account. Thresholds are fractions of `limit` in per mille, so a
/// config can say "warn at 80 %, critical at 95 %" whatever the limit is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountLimits {
    /// Units that may be reserved at once.
    pub limit: u64,
    /// Warning level from this fraction of `limit`, per mille.
    pub warn_permille: u16,
    /// Critical level from this fraction of `limit`, per mille (at least `warn_permille`).
    pub critical_permille: u16,
    /// Most units one thread may hold in its lease of this account (capped at `limit`); only
    /// reservations of at most half of it are served from leases. 0 turns leases off.
    pub lease_units: u64,
}

impl AccountLimits {
    /// Every thread's lease together holds at most 1/64 of the limit with the default lease
    /// size (64 slots of `limit / 4096`).
    pub const LEASE_DIVISOR: u64 = 4096;

    /// `limit` with warning at 80 %, critical at 95 % and the default lease size.
    pub const fn new(limit: u64) -> Self {
        AccountLimits {
            limit,
            warn_permille: 800,
            critical_permille: 950,
            lease_units: limit / Self::LEASE_DIVISOR,
        }
    }
}

/// The limits of every account, built from configuration at start-up.
#[derive(Clone, Debug)]
pub struct ResourceLimits {
    /// Buffer memory, bytes.
    pub memory_bytes: AccountLimits,
    /// One entry per listen address, in configuration order; bits/s.
    pub net_bps: Vec<AccountLimits>,
    /// Disk read bandwidth, bits/s.
    pub disk_read_bps: AccountLimits,
    /// Disk space of the data directory, bytes.
    pub disk_space_bytes: AccountLimits,
    /// Client connections.
    pub connections: AccountLimits,
    /// Open media files.
    pub open_files: AccountLimits,
}

/// Event levels, ordered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Normal = 0,
    Warning = 1,
    Critical = 2,
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Level::Normal => "normal",
            Level::Warning => "warning",
            Level::Critical => "critical",
        })
    }
}

/// Sources of events that are not accounts: what the system observer samples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum External {
    /// `MemAvailable` of the host fell low.
    SystemMemory,
    /// Free space of the data directory's file system fell low.
    DiskFree,
    /// This process's file descriptors approach `RLIMIT_NOFILE`.
    FileDescriptors,
}

impl External {
    const ALL: [External; 3] = [
        External::SystemMemory,
        External::DiskFree,
        External::FileDescriptors,
    ];

    fn name(self) -> &'static str {
        match self {
            External::SystemMemory => "system_memory",
            External::DiskFree => "disk_free",
            External::FileDescriptors => "file_descriptors",
        }
    }
}

/// A reservation that could not be made. Names the resource, so the operator (and the 503 the
/// client gets) can tell what ran out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot reserve {requested} of {resource}: {available} of {limit} available")]
pub struct ReserveError {
    /// The account that refused.
    pub resource: Resource,
    /// Units asked for.
    pub requested: u64,
    /// Units free when it refused.
    pub available: u64,
    /// The account's limit.
    pub limit: u64,
}

/// Listen addresses are capped so every account has a bit below the externals.
pub const LISTENERS_MAX: usize = (EXTERNAL_BIT_BASE as usize) - FIXED_ACCOUNTS;
const _: () = assert!(EXTERNAL_BIT_BASE as usize + External::ALL.len() <= 64);

/// Counters of events raised, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    /// Warning events raised.
    pub warning: u64,
    /// Critical events raised.
    pub critical: u64,
}

/// A point-in-time view of one account, for `/metrics` and `/api/status`.
#[derive(Clone, Debug)]
pub struct AccountSnapshot {
    /// Which account.
    pub resource: Resource,
    /// Units held by reservations.
    pub used: u64,
    /// Units taken from the account by threads' leases and not reserved yet.
    pub leased: u64,
    /// The account's limit.
    pub limit: u64,
    /// Its level, judged on `used + leased`.
    pub level: Level,
}

/// The lock-free accounting manager. Shared by every thread as `Arc<ResourceManager>`; the
/// tables it points at live for the process.
pub struct ResourceManager {
    ledger: &'static Ledger,
}

impl fmt::Debug for ResourceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceManager")
            .field("listeners", &self.ledger.listeners)
            .finish_non_exhaustive()
    }
}

impl ResourceManager {
    /// Builds the accounts of `limits`. Their tables (about 1 KiB plus 128 bytes per thread
    /// slot and 16 accounts, 9 KiB for one listen address) are leaked on purpose: a reservation
    /// points at them without a reference count, so they must outlive every reservation. A
    /// server builds one manager per process; tests build a few each.
    pub fn new(limits: &ResourceLimits) -> Arc<Self> {
        assert!(
            limits.net_bps.len() <= LISTENERS_MAX,
            "at most {LISTENERS_MAX} listen addresses"
        );
        let mut accounts = vec![
            Account::new(Resource::MemoryBytes, limits.memory_bytes),
            Account::new(Resource::DiskReadBps, limits.disk_read_bps),
            Account::new(Resource::DiskSpaceBytes, limits.disk_space_bytes),
            Account::new(Resource::Connections, limits.connections),
            Account::new(Resource::OpenFiles, limits.open_files),
        ];
        debug_assert_eq!(accounts.len(), FIXED_ACCOUNTS);
        for (i, l) in limits.net_bps.iter().enumerate() {
            accounts.push(Account::new(Resource::NetBps(i as u16), *l));
        }
        let ledger = Box::leak(Box::new(Ledger::new(accounts, limits.net_bps.len())));
        Arc::new(ResourceManager { ledger })
    }

    #[inline]
    fn index(&self, resource: Resource) -> usize {
        index(self.ledger, resource)
    }

    /// Reserves `amount` units of `resource`. Never over-commits; lock-free.
    ///
    /// # Panics
    /// On `NetBps(i)` with no listen address `i` (a caller's bug).
    #[inline]
    pub fn reserve(&self, resource: Resource, amount: u64) -> Result<Reservation, ReserveError> {
        let index = self.index(resource);
        self.ledger.take(index, amount)?;
        Ok(Reservation {
            ledger: self.ledger,
            index: index as u32,
            amount,
        })
    }

    /// Reserves `amount` of `resource` only out of spare capacity: when the account stays below
    /// its warning threshold after it. `None` otherwise; it never raises an event. For what is
    /// nice to have but must not take budget from admissions (a segment's pace above 1x).
    pub fn reserve_spare(&self, resource: Resource, amount: u64) -> Option<Reservation> {
        let index = self.index(resource);
        self.ledger
            .take_below_warning(index, amount)
            .then(|| Reservation {
                ledger: self.ledger,
                index: index as u32,
                amount,
            })
    }

    /// Sets the level of an external source (called by the system observer).
    pub fn set_external(&self, source: External, level: Level) {
        self.ledger
            .set_level(Ledger::external_bit(source), level, source.name());
    }

    /// Changes whenever any source changes level. Cheap: one load.
    pub fn epoch(&self) -> u64 {
        self.ledger.epoch.load(Ordering::Acquire)
    }

    /// True while any of `resources` or `externals` is at the critical level: what a request
    /// that needs only those must not start (the design's "no further allocation of that
    /// resource"; a full disk refuses uploads, not streams of stored objects).
    pub fn is_critical_for(&self, resources: &[Resource], externals: &[External]) -> bool {
        let mask = self.ledger.critical_mask.load(Ordering::Acquire);
        if mask == 0 {
            return false;
        }
        resources.iter().any(|r| match r {
            Resource::NetBps(i) if (*i as usize) >= self.ledger.listeners => false,
            _ => mask & (1 << self.index(*r)) != 0,
        }) || externals
            .iter()
            .any(|e| mask & (1 << Ledger::external_bit(*e)) != 0)
    }

    /// True while any source is at the critical level.
    pub fn is_critical(&self) -> bool {
        self.ledger.critical_mask.load(Ordering::Acquire) != 0
    }

    /// The highest level in force.
    pub fn level(&self) -> Level {
        if self.ledger.critical_mask.load(Ordering::Acquire) != 0 {
            Level::Critical
        } else if self.ledger.warning_mask.load(Ordering::Acquire) != 0 {
            Level::Warning
        } else {
            Level::Normal
        }
    }

    /// Names of the sources at `level` or above, for logs and status pages.
    pub fn sources_at(&self, level: Level) -> Vec<String> {
        let mask = match level {
            Level::Critical => self.ledger.critical_mask.load(Ordering::Acquire),
            _ => self.ledger.warning_mask.load(Ordering::Acquire),
        };
        let mut out = Vec::new();
        for (i, a) in self.ledger.accounts.iter().enumerate() {
            if mask & (1 << i) != 0 {
                out.push(a.resource.to_string());
            }
        }
        for (i, s) in External::ALL.iter().enumerate() {
            if mask & (1 << (EXTERNAL_BIT_BASE + i as u32)) != 0 {
                out.push(s.name().to_string());
            }
        }
        out
    }

    /// Units of `resource` held by reservations. Reads every thread's lease, so it costs a few
    /// dozen loads; exact when no reservation is moving, a close estimate otherwise.
    pub fn used(&self, resource: Resource) -> u64 {
        let index = self.index(resource);
        let leased = self.ledger.leased(index);
        let committed = self.ledger.accounts[index]
            .committed
            .load(Ordering::Acquire);
        committed.saturating_sub(leased)
    }

    /// Units of `resource` sitting in threads' leases, taken from the account but not reserved.
    /// They count as used for the limit and the levels.
    pub fn leased(&self, resource: Resource) -> u64 {
        self.ledger.leased(self.index(resource))
    }

    /// The limit of `resource`.
    pub fn limit(&self, resource: Resource) -> u64 {
        self.ledger.accounts[self.index(resource)].limit
    }

    /// How many listen addresses have a bandwidth account.
    pub fn listeners(&self) -> usize {
        self.ledger.listeners
    }

    /// Every account's use, leases, limit and level.
    pub fn snapshot(&self) -> Vec<AccountSnapshot> {
        self.ledger
            .accounts
            .iter()
            .enumerate()
            .map(|(index, a)| {
                let leased = self.ledger.leased(index);
                let committed = a.committed.load(Ordering::Acquire);
                AccountSnapshot {
                    resource: a.resource,
                    used: committed.saturating_sub(leased),
                    leased,
                    limit: a.limit,
                    level: a.level(committed),
                }
            })
            .collect()
    }

    /// How many warning and critical events were raised since start-up.
    pub fn event_counts(&self) -> EventCounts {
        EventCounts {
            warning: self.ledger.warning_events.load(Ordering::Relaxed),
            critical: self.ledger.critical_events.load(Ordering::Relaxed),
        }
    }
}

/// The account index of `resource`.
#[inline]
fn index(ledger: &Ledger, resource: Resource) -> usize {
    match resource {
        Resource::MemoryBytes => 0,
        Resource::DiskReadBps => 1,
        Resource::DiskSpaceBytes => 2,
        Resource::Connections => 3,
        Resource::OpenFiles => 4,
        Resource::NetBps(i) => {
            assert!((i as usize) < ledger.listeners, "no listen address {i}");
            FIXED_ACCOUNTS + i as usize
        }
    }
}

/// An RAII reservation: what it holds is returned to its account when it is dropped, to the
/// dropping thread's lease when it is small.
#[must_use = "a reservation is released as soon as it is dropped"]
pub struct Reservation {
    ledger: &'static Ledger,
    index: u32,
    amount: u64,
}

impl Reservation {
    /// Units held.
    pub fn amount(&self) -> u64 {
        self.amount
    }

    /// The account they are held on.
    pub fn resource(&self) -> Resource {
        self.ledger.accounts[self.index as usize].resource
    }

    /// Reserves `extra` more units on the same account (an upload whose length was not known).
    pub fn grow(&mut self, extra: u64) -> Result<(), ReserveError> {
        self.ledger.take(self.index as usize, extra)?;
        self.amount += extra;
        Ok(())
    }

    /// Returns `less` units early, keeping the rest.
    pub fn shrink(&mut self, less: u64) {
        assert!(less <= self.amount, "shrinking a reservation below zero");
        self.ledger.give(self.index as usize, less);
        self.amount -= less;
    }
}

impl Drop for Reservation {
    #[inline]
    fn drop(&mut self) {
        if self.amount > 0 {
            self.ledger.give(self.index as usize, self.amount);
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reservation({} {})", self.amount, self.resource())
    }
}
