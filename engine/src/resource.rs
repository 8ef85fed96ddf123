//! The Resource Manager: every allocation is reserved here first.
//!
//! From the original Oasis design: no module allocates a resource before reserving it with the
//! Resource Manager, cancellations go through it too, and crossing a threshold raises an event that
//! reaches every module. Here that is:
//!
//! - one `Account` per resource (memory bytes, bandwidth per listen address, disk read bandwidth,
//!   disk space, connections, open files), each a single `AtomicU64` of units in use and a fixed
//!   limit. [`ResourceManager::reserve`] is a CAS loop that never over-commits, even under
//!   contention, and takes no lock;
//! - a [`Reservation`] is an RAII handle: dropping it returns exactly what it took;
//! - warning and critical thresholds per account, plus *external* sources fed by the system
//!   observer ([`crate::observer`]) so pressure from other processes raises events too. The current
//!   levels live in two bit masks and an epoch counter; a worker compares the epoch once per loop
//!   iteration ([`ResourceManager::epoch`]) to learn of a change without touching anything shared
//!   on the hot path.
//!
//! This module must never block, allocate on the reserve/release path, or read the clock.

use std::fmt;

// Under loom only the atomics are modelled: they are the protocol. `Arc` stays std's so the
// `self: &Arc<Self>` receiver of `reserve` and the rest of the engine compile unchanged.
#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

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
    pub limit: u64,
    pub warn_permille: u16,
    pub critical_permille: u16,
}

impl AccountLimits {
    pub const fn new(limit: u64) -> Self {
        AccountLimits {
            limit,
            warn_permille: 800,
            critical_permille: 950,
        }
    }
}

/// The limits of every account, built from configuration at start-up.
#[derive(Clone, Debug)]
pub struct ResourceLimits {
    pub memory_bytes: AccountLimits,
    /// One entry per listen address, in configuration order.
    pub net_bps: Vec<AccountLimits>,
    pub disk_read_bps: AccountLimits,
    pub disk_space_bytes: AccountLimits,
    pub connections: AccountLimits,
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
    pub resource: Resource,
    pub requested: u64,
    pub available: u64,
    pub limit: u64,
}

/// Bit positions in the level masks: accounts first, then externals.
const EXTERNAL_BIT_BASE: u32 = 56;
/// Listen addresses are capped so every account has a bit below the externals.
pub const LISTENERS_MAX: usize = (EXTERNAL_BIT_BASE as usize) - FIXED_ACCOUNTS;
const FIXED_ACCOUNTS: usize = 5;
const _: () = assert!(EXTERNAL_BIT_BASE as usize + External::ALL.len() <= 64);

struct Account {
    resource: Resource,
    used: AtomicU64,
    limit: u64,
    warn_at: u64,
    critical_at: u64,
}

impl Account {
    fn new(resource: Resource, limits: AccountLimits) -> Self {
        assert!(
            limits.warn_permille <= limits.critical_permille,
            "warn above critical for {resource}"
        );
        assert!(
            limits.critical_permille <= 1000,
            "critical above 100 % for {resource}"
        );
        let at = |permille: u16| (limits.limit as u128 * permille as u128 / 1000) as u64;
        Account {
            resource,
            used: AtomicU64::new(0),
            limit: limits.limit,
            warn_at: at(limits.warn_permille),
            critical_at: at(limits.critical_permille),
        }
    }

    fn level(&self, used: u64) -> Level {
        // A zero limit means "nothing may be reserved", not "always critical".
        if self.limit == 0 {
            Level::Normal
        } else if used >= self.critical_at {
            Level::Critical
        } else if used >= self.warn_at {
            Level::Warning
        } else {
            Level::Normal
        }
    }
}

/// Counters of events raised, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventCounts {
    pub warning: u64,
    pub critical: u64,
}

/// A point-in-time view of one account, for `/metrics` and `/api/status`.
#[derive(Clone, Debug)]
pub struct AccountSnapshot {
    pub resource: Resource,
    pub used: u64,
    pub limit: u64,
    pub level: Level,
}

/// The lock-free accounting manager. Shared by every thread as `Arc<ResourceManager>`.
pub struct ResourceManager {
    accounts: Vec<Account>,
    listeners: usize,
    /// Bit i set: source i is at warning level or above.
    warning_mask: AtomicU64,
    /// Bit i set: source i is at critical level.
    critical_mask: AtomicU64,
    /// Bumped on every level change; workers compare it once per loop iteration.
    epoch: AtomicU64,
    warning_events: AtomicU64,
    critical_events: AtomicU64,
}

impl fmt::Debug for ResourceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResourceManager")
            .field("listeners", &self.listeners)
            .finish_non_exhaustive()
    }
}

impl ResourceManager {
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
        Arc::new(ResourceManager {
            accounts,
            listeners: limits.net_bps.len(),
            warning_mask: AtomicU64::new(0),
            critical_mask: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            warning_events: AtomicU64::new(0),
            critical_events: AtomicU64::new(0),
        })
    }

    fn index(&self, resource: Resource) -> usize {
        match resource {
            Resource::MemoryBytes => 0,
            Resource::DiskReadBps => 1,
            Resource::DiskSpaceBytes => 2,
            Resource::Connections => 3,
            Resource::OpenFiles => 4,
            Resource::NetBps(i) => {
                assert!((i as usize) < self.listeners, "no listen address {i}");
                FIXED_ACCOUNTS + i as usize
            }
        }
    }

    /// Reserves `amount` units of `resource`. Never over-commits; lock-free.
    pub fn reserve(
        self: &Arc<Self>,
        resource: Resource,
        amount: u64,
    ) -> Result<Reservation, ReserveError> {
        let index = self.index(resource);
        self.take(index, amount)?;
        Ok(Reservation {
            manager: Arc::clone(self),
            index: index as u32,
            amount,
        })
    }

    fn take(&self, index: usize, amount: u64) -> Result<(), ReserveError> {
        let account = &self.accounts[index];
        let mut used = account.used.load(Ordering::Relaxed);
        loop {
            let new = match used.checked_add(amount) {
                Some(new) if new <= account.limit => new,
                _ => {
                    return Err(ReserveError {
                        resource: account.resource,
                        requested: amount,
                        available: account.limit.saturating_sub(used),
                        limit: account.limit,
                    })
                }
            };
            match account
                .used
                .compare_exchange_weak(used, new, Ordering::AcqRel, Ordering::Relaxed)
            {
                Ok(_) => {
                    if account.level(used) != account.level(new) {
                        self.settle_account(index);
                    }
                    return Ok(());
                }
                Err(actual) => used = actual,
            }
        }
    }

    fn give_back(&self, index: usize, amount: u64) {
        let account = &self.accounts[index];
        let old = account.used.fetch_sub(amount, Ordering::AcqRel);
        assert!(
            old >= amount,
            "released more {} than reserved",
            account.resource
        );
        if account.level(old) != account.level(old - amount) {
            self.settle_account(index);
        }
    }

    /// Brings the level bits of account `index` in line with its counter. Called by whoever moved
    /// the counter across a threshold. Racing transitions can write the masks out of order, so the
    /// writer re-reads the counter after writing and repeats until what it wrote still holds: the
    /// last writer always verifies after its own write, so the masks settle on the truth.
    fn settle_account(&self, index: usize) {
        let account = &self.accounts[index];
        loop {
            let level = account.level(account.used.load(Ordering::Acquire));
            self.set_level(index as u32, level, account.resource);
            if account.level(account.used.load(Ordering::Acquire)) == level {
                return;
            }
        }
    }

    fn set_level(&self, bit: u32, level: Level, source: impl fmt::Display) {
        let mask = 1u64 << bit;
        let (warn_old, crit_old) = if level >= Level::Warning {
            (
                self.warning_mask.fetch_or(mask, Ordering::AcqRel),
                self.crit_update(mask, level),
            )
        } else {
            (
                self.warning_mask.fetch_and(!mask, Ordering::AcqRel),
                self.crit_update(mask, level),
            )
        };
        let old = if crit_old & mask != 0 {
            Level::Critical
        } else if warn_old & mask != 0 {
            Level::Warning
        } else {
            Level::Normal
        };
        if old == level {
            return;
        }
        self.epoch.fetch_add(1, Ordering::Release);
        match level {
            Level::Critical => {
                self.critical_events.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "oasis::resource", %source, "critical event: {source} is critical");
            }
            Level::Warning if old < Level::Warning => {
                self.warning_events.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(target: "oasis::resource", %source, "warning event: {source} is high");
            }
            _ => tracing::info!(target: "oasis::resource", %source, "{source} back to {level}"),
        }
    }

    fn crit_update(&self, mask: u64, level: Level) -> u64 {
        if level == Level::Critical {
            self.critical_mask.fetch_or(mask, Ordering::AcqRel)
        } else {
            self.critical_mask.fetch_and(!mask, Ordering::AcqRel)
        }
    }

    /// Sets the level of an external source (called by the system observer).
    pub fn set_external(&self, source: External, level: Level) {
        let bit =
            EXTERNAL_BIT_BASE + External::ALL.iter().position(|s| *s == source).unwrap_or(0) as u32;
        self.set_level(bit, level, source.name());
    }

    /// Changes whenever any source changes level. Cheap: one relaxed load.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// True while any of `resources` or `externals` is at the critical level: what a request
    /// that needs only those must not start (the design's "no further allocation of that
    /// resource"; a full disk refuses uploads, not streams of stored objects).
    pub fn is_critical_for(&self, resources: &[Resource], externals: &[External]) -> bool {
        let mask = self.critical_mask.load(Ordering::Acquire);
        if mask == 0 {
            return false;
        }
        resources.iter().any(|r| match r {
            Resource::NetBps(i) if (*i as usize) >= self.listeners => false,
            _ => mask & (1 << self.index(*r)) != 0,
        }) || externals.iter().any(|e| {
            let bit =
                EXTERNAL_BIT_BASE + External::ALL.iter().position(|s| s == e).unwrap_or(0) as u32;
            mask & (1 << bit) != 0
        })
    }

    /// True while any source is at the critical level.
    pub fn is_critical(&self) -> bool {
        self.critical_mask.load(Ordering::Acquire) != 0
    }

    /// The highest level in force.
    pub fn level(&self) -> Level {
        if self.critical_mask.load(Ordering::Acquire) != 0 {
            Level::Critical
        } else if self.warning_mask.load(Ordering::Acquire) != 0 {
            Level::Warning
        } else {
            Level::Normal
        }
    }

    /// Names of the sources at `level` or above, for logs and status pages.
    pub fn sources_at(&self, level: Level) -> Vec<String> {
        let mask = match level {
            Level::Critical => self.critical_mask.load(Ordering::Acquire),
            _ => self.warning_mask.load(Ordering::Acquire),
        };
        let mut out = Vec::new();
        for (i, a) in self.accounts.iter().enumerate() {
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

    pub fn used(&self, resource: Resource) -> u64 {
        self.accounts[self.index(resource)]
            .used
            .load(Ordering::Acquire)
    }

    pub fn limit(&self, resource: Resource) -> u64 {
        self.accounts[self.index(resource)].limit
    }

    pub fn listeners(&self) -> usize {
        self.listeners
    }

    pub fn snapshot(&self) -> Vec<AccountSnapshot> {
        self.accounts
            .iter()
            .map(|a| {
                let used = a.used.load(Ordering::Acquire);
                AccountSnapshot {
                    resource: a.resource,
                    used,
                    limit: a.limit,
                    level: a.level(used),
                }
            })
            .collect()
    }

    pub fn event_counts(&self) -> EventCounts {
        EventCounts {
            warning: self.warning_events.load(Ordering::Relaxed),
            critical: self.critical_events.load(Ordering::Relaxed),
        }
    }
}

/// An RAII reservation: what it holds is returned to its account when it is dropped.
#[must_use = "a reservation is released as soon as it is dropped"]
pub struct Reservation {
    manager: Arc<ResourceManager>,
    index: u32,
    amount: u64,
}

impl Reservation {
    pub fn amount(&self) -> u64 {
        self.amount
    }

    pub fn resource(&self) -> Resource {
        self.manager.accounts[self.index as usize].resource
    }

    /// Reserves `extra` more units on the same account (an upload whose length was not known).
    pub fn grow(&mut self, extra: u64) -> Result<(), ReserveError> {
        self.manager.take(self.index as usize, extra)?;
        self.amount += extra;
        Ok(())
    }

    /// Returns `less` units early, keeping the rest.
    pub fn shrink(&mut self, less: u64) {
        assert!(less <= self.amount, "shrinking a reservation below zero");
        self.manager.give_back(self.index as usize, less);
        self.amount -= less;
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if self.amount > 0 {
            self.manager.give_back(self.index as usize, self.amount);
        }
    }
}

impl fmt::Debug for Reservation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Reservation({} {})", self.amount, self.resource())
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
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
}
