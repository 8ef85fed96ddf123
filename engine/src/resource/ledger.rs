//! The accounts, their level bits and the per-thread leases: the lock-free protocol itself.
//!
//! One [`Ledger`] per manager, leaked at start-up so a reservation can point at it without a
//! reference count ([`super::ResourceManager::new`]). Each account's counter (`committed`) holds
//! the units reserved plus the units leased to threads and not yet reserved; it sits alone on its
//! cache line, so threads on different accounts never share one.
//!
//! Leases: a thread with a slot ([`super::slot`]) keeps up to `lease_max` units of an account in
//! its own word of the lease table and serves small reservations from there and returns small
//! releases there, without touching the shared counter. A word is refilled from the account in
//! batches (the reservation plus half a lease) and trimmed back to half a lease when a release
//! takes it above `lease_max`. A unit of budget is always in exactly one place (the account's
//! free room, a lease word, a reservation, or the hands of a thread moving it between the two
//! with read-modify-writes), so the reserved units plus the leased ones never exceed the limit.
//!
//! Levels count leased units as used, and leases stay out of the way of the thresholds: a refill
//! is granted only while the counter stays below the warning threshold, releases go straight to
//! the account at or above it, and a reservation that takes the account across a threshold
//! upwards, or is refused, first calls every idle lease back. So warning and critical are reached
//! by reservations (plus at most the units of a release racing the threshold check), and a
//! reservation is refused only after the budget idling in leases has gone back to the account.
//!
//! This module never blocks, allocates (after construction) or reads the clock.

use std::fmt;

#[cfg(loom)]
use loom::sync::atomic::{AtomicU64, Ordering};
#[cfg(not(loom))]
use std::sync::atomic::{AtomicU64, Ordering};

use super::slot::{self, SLOTS};
use super::{AccountLimits, External, Level, ReserveError, Resource};

/// Bit positions in the level masks: accounts first, then externals.
pub(super) const EXTERNAL_BIT_BASE: u32 = 56;
/// Accounts that are not per listen address.
pub(super) const FIXED_ACCOUNTS: usize = 5;

/// Lease words per cache line of the lease table.
const LINE_WORDS: usize = 16;

/// One account, alone on its cache line (128 bytes: adjacent-line prefetch pairs lines).
#[repr(align(128))]
pub(super) struct Account {
    pub(super) resource: Resource,
    /// Units reserved plus units leased to threads.
    pub(super) committed: AtomicU64,
    pub(super) limit: u64,
    warn_at: u64,
    critical_at: u64,
    /// Most units one thread's lease holds; 0 = this account does not lease.
    lease_max: u64,
}

impl Account {
    pub(super) fn new(resource: Resource, limits: AccountLimits) -> Self {
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
            committed: AtomicU64::new(0),
            limit: limits.limit,
            warn_at: at(limits.warn_permille),
            critical_at: at(limits.critical_permille),
            lease_max: limits.lease_units.min(limits.limit),
        }
    }

    pub(super) fn level(&self, committed: u64) -> Level {
        // A zero limit means "nothing may be reserved", not "always critical".
        if self.limit == 0 {
            Level::Normal
        } else if committed >= self.critical_at {
            Level::Critical
        } else if committed >= self.warn_at {
            Level::Warning
        } else {
            Level::Normal
        }
    }

    /// Whether `amount` is small enough to be served from and returned to a lease.
    #[inline]
    fn leases(&self, amount: u64) -> bool {
        amount <= self.lease_max / 2 && self.lease_max >= 2
    }
}

/// Lease words, padded so that each slot's words share lines with no other slot's.
#[repr(align(128))]
struct Line([AtomicU64; LINE_WORDS]);

/// The manager's state. Never freed: see [`super::ResourceManager::new`].
pub(super) struct Ledger {
    pub(super) accounts: Vec<Account>,
    pub(super) listeners: usize,
    /// `SLOTS` rows of `lines_per_slot` lines; word `index` of a row is that slot's lease of
    /// account `index`.
    leases: Box<[Line]>,
    lines_per_slot: usize,
    /// Bit i set: source i is at warning level or above.
    pub(super) warning_mask: AtomicU64,
    /// Bit i set: source i is at critical level.
    pub(super) critical_mask: AtomicU64,
    /// Bumped on every level change; workers compare it once per loop iteration.
    pub(super) epoch: AtomicU64,
    pub(super) warning_events: AtomicU64,
    pub(super) critical_events: AtomicU64,
}

impl Ledger {
    pub(super) fn new(accounts: Vec<Account>, listeners: usize) -> Ledger {
        let lines_per_slot = accounts.len().div_ceil(LINE_WORDS);
        let leases = (0..SLOTS * lines_per_slot)
            .map(|_| Line(std::array::from_fn(|_| AtomicU64::new(0))))
            .collect();
        Ledger {
            accounts,
            listeners,
            leases,
            lines_per_slot,
            warning_mask: AtomicU64::new(0),
            critical_mask: AtomicU64::new(0),
            epoch: AtomicU64::new(0),
            warning_events: AtomicU64::new(0),
            critical_events: AtomicU64::new(0),
        }
    }

    #[inline]
    fn lease(&self, slot: usize, index: usize) -> &AtomicU64 {
        &self.leases[slot * self.lines_per_slot + index / LINE_WORDS].0[index % LINE_WORDS]
    }

    /// Units of account `index` sitting in leases now (a sum of racy loads; exact when quiet).
    pub(super) fn leased(&self, index: usize) -> u64 {
        (0..SLOTS)
            .map(|slot| self.lease(slot, index).load(Ordering::Acquire))
            .sum()
    }

    /// Takes `amount` units of account `index` for a reservation: from the calling thread's
    /// lease when it can, else from the account. Inlined into callers: this and [`Self::give`]
    /// are the whole hot path.
    #[inline]
    pub(super) fn take(&self, index: usize, amount: u64) -> Result<(), ReserveError> {
        if self.accounts[index].leases(amount) {
            if let Some(slot) = slot::current() {
                if self.take_leased(slot, index, amount) {
                    return Ok(());
                }
            }
        }
        self.take_shared(index, amount)
    }

    /// Returns `amount` units of account `index` from a reservation.
    #[inline]
    pub(super) fn give(&self, index: usize, amount: u64) {
        let account = &self.accounts[index];
        // The load reads a line written only by refills and direct reservations, so it is
        // normally in this core's cache.
        if account.leases(amount) && account.committed.load(Ordering::Relaxed) < account.warn_at {
            if let Some(slot) = slot::current() {
                self.put_leased(slot, index, amount);
                return;
            }
        }
        self.give_shared(index, amount);
    }

    /// Serves `amount` from the lease of `slot`, refilling it from the account when it is
    /// short. False when the refill would take the account to its warning threshold.
    #[inline]
    fn take_leased(&self, slot: usize, index: usize, amount: u64) -> bool {
        let word = self.lease(slot, index);
        let mut free = word.load(Ordering::Acquire);
        while free >= amount {
            match word.compare_exchange_weak(
                free,
                free - amount,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => free = now,
            }
        }
        self.refill(slot, index, amount)
    }

    /// Takes `amount` plus half a lease from the account, keeping the half in the lease of
    /// `slot`; false, taking nothing, when that would reach the warning threshold.
    #[inline(never)]
    fn refill(&self, slot: usize, index: usize, amount: u64) -> bool {
        let account = &self.accounts[index];
        let spare = account.lease_max / 2;
        let batch = amount + spare; // <= lease_max <= limit: no overflow below
        let mut committed = account.committed.load(Ordering::Relaxed);
        loop {
            let new = committed.saturating_add(batch);
            if new >= account.warn_at || new > account.limit {
                return false;
            }
            match account.committed.compare_exchange_weak(
                committed,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => committed = now,
            }
        }
        // Both below the warning threshold: no level changed.
        debug_assert_eq!(
            account.level(committed.saturating_add(batch)),
            Level::Normal
        );
        if spare > 0 {
            self.put_leased(slot, index, spare);
        }
        true
    }

    /// Adds `amount` to the lease of `slot`, trimming the lease to half when it overflows.
    #[inline]
    fn put_leased(&self, slot: usize, index: usize, amount: u64) {
        let account = &self.accounts[index];
        let now = self.lease(slot, index).fetch_add(amount, Ordering::AcqRel) + amount;
        if now > account.lease_max {
            self.trim(slot, index, now);
        }
    }

    /// Takes the lease of `slot`, seen at `now` units, back to half a lease.
    #[inline(never)]
    fn trim(&self, slot: usize, index: usize, mut now: u64) {
        let account = &self.accounts[index];
        let word = self.lease(slot, index);
        let keep = account.lease_max / 2;
        while now > account.lease_max {
            match word.compare_exchange_weak(now, keep, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.give_shared(index, now - keep);
                    return;
                }
                Err(actual) => now = actual,
            }
        }
    }

    /// Calls every lease of account `index` back to the account. Returns the units recovered.
    fn reclaim(&self, index: usize) -> u64 {
        let recovered: u64 = (0..SLOTS)
            .map(|slot| self.lease(slot, index).swap(0, Ordering::AcqRel))
            .sum();
        if recovered > 0 {
            self.give_shared(index, recovered);
        }
        recovered
    }

    /// Takes `amount` from the account itself: a CAS loop that never over-commits. Calls idle
    /// leases back before a refusal and before settling an upward threshold crossing.
    #[inline(never)]
    fn take_shared(&self, index: usize, amount: u64) -> Result<(), ReserveError> {
        let account = &self.accounts[index];
        let (old, new) = match self.cas_add(account, amount) {
            Ok(moved) => moved,
            Err(_) if account.lease_max > 0 && self.reclaim(index) > 0 => self
                .cas_add(account, amount)
                .map_err(|committed| ReserveError {
                    resource: account.resource,
                    requested: amount,
                    available: account.limit.saturating_sub(committed),
                    limit: account.limit,
                })?,
            Err(committed) => {
                return Err(ReserveError {
                    resource: account.resource,
                    requested: amount,
                    available: account.limit.saturating_sub(committed),
                    limit: account.limit,
                })
            }
        };
        let (before, after) = (account.level(old), account.level(new));
        if before != after {
            if after > before && account.lease_max > 0 {
                self.reclaim(index);
            }
            self.settle_account(index);
        }
        Ok(())
    }

    /// Takes `amount` from the account itself only if the account stays below its warning
    /// threshold after it (spare capacity): never changes a level, so it raises no event and
    /// never takes what a reservation at or above the warning level would need.
    pub(super) fn take_below_warning(&self, index: usize, amount: u64) -> bool {
        let account = &self.accounts[index];
        let mut committed = account.committed.load(Ordering::Relaxed);
        loop {
            match committed.checked_add(amount) {
                Some(new) if new < account.warn_at && new <= account.limit => {
                    match account.committed.compare_exchange_weak(
                        committed,
                        new,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return true,
                        Err(now) => committed = now,
                    }
                }
                _ => return false,
            }
        }
    }

    /// Adds `amount` to the account's counter if it stays within the limit: `(old, new)`, or
    /// the counter that refused it.
    fn cas_add(&self, account: &Account, amount: u64) -> Result<(u64, u64), u64> {
        let mut committed = account.committed.load(Ordering::Relaxed);
        loop {
            let new = match committed.checked_add(amount) {
                Some(new) if new <= account.limit => new,
                _ => return Err(committed),
            };
            match account.committed.compare_exchange_weak(
                committed,
                new,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => return Ok((committed, new)),
                Err(now) => committed = now,
            }
        }
    }

    #[inline(never)]
    fn give_shared(&self, index: usize, amount: u64) {
        let account = &self.accounts[index];
        let old = account.committed.fetch_sub(amount, Ordering::AcqRel);
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
            let level = account.level(account.committed.load(Ordering::Acquire));
            self.set_level(index as u32, level, account.resource);
            if account.level(account.committed.load(Ordering::Acquire)) == level {
                return;
            }
        }
    }

    pub(super) fn set_level(&self, bit: u32, level: Level, source: impl fmt::Display) {
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

    /// The mask bit of an external source.
    pub(super) fn external_bit(source: External) -> u32 {
        EXTERNAL_BIT_BASE + External::ALL.iter().position(|s| *s == source).unwrap_or(0) as u32
    }
}
