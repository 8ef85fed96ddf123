//! Failed authentications per client address, and the slow-down past a limit.
//!
//! Every wrong or revoked token and every badly signed link counts against the client's address;
//! past `failures_max` in one window, that address's requests that carry credentials are answered
//! 429 with `Retry-After` until the window ends, whether the credentials are right or not, so
//! guessing costs a window per `failures_max` tries. The table is bounded (`TABLE_MAX`
//! addresses); when it is full of live entries, a new address is not tracked (and says so in the
//! counter the caller keeps). Time comes in as `now`; nothing here reads the clock.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Addresses tracked at most.
pub const TABLE_MAX: usize = 65_536;

/// `[auth]` settings: failures allowed per address per window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LimiterSettings {
    /// 0: no limit.
    pub failures_max: u32,
    pub window: Duration,
}

impl Default for LimiterSettings {
    fn default() -> Self {
        LimiterSettings {
            failures_max: 10,
            window: Duration::from_secs(60),
        }
    }
}

struct Entry {
    window_start: Instant,
    failures: u32,
    over: bool,
}

/// What [`FailureLimiter::failed`] did with a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Counted {
    /// Counted; the address is still under its limit.
    Counted,
    /// This failure took the address over its limit.
    NowThrottled,
    /// The table is full of live entries: not tracked.
    Untracked,
}

/// The per-address table, shared by every worker and every configuration generation.
#[derive(Default)]
pub struct FailureLimiter {
    table: Mutex<HashMap<IpAddr, Entry>>,
    /// Addresses over their limit (some may have expired): 0 lets [`FailureLimiter::check`]
    /// answer without the lock, which is the case of every request of a healthy server.
    over: AtomicUsize,
}

impl FailureLimiter {
    /// `Some(retry_after)` while `ip` is over its limit.
    pub fn check(&self, ip: IpAddr, now: Instant, s: LimiterSettings) -> Option<Duration> {
        if self.over.load(Ordering::Relaxed) == 0 || s.failures_max == 0 {
            return None;
        }
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let entry = table.get(&ip)?;
        let ends = entry.window_start + s.window;
        if !entry.over {
            return None;
        }
        if now >= ends {
            table.remove(&ip);
            self.over.fetch_sub(1, Ordering::Relaxed);
            return None;
        }
        Some(ends - now)
    }

    /// Counts one failed authentication from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Instant, s: LimiterSettings) -> Counted {
        if s.failures_max == 0 {
            return Counted::Counted;
        }
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if table.len() >= TABLE_MAX && !table.contains_key(&ip) {
            self.prune(&mut table, now, s.window);
            if table.len() >= TABLE_MAX {
                return Counted::Untracked;
            }
        }
        let entry = table.entry(ip).or_insert(Entry {
            window_start: now,
            failures: 0,
            over: false,
        });
        if now >= entry.window_start + s.window {
            if entry.over {
                self.over.fetch_sub(1, Ordering::Relaxed);
            }
            *entry = Entry {
                window_start: now,
                failures: 0,
                over: false,
            };
        }
        entry.failures = entry.failures.saturating_add(1);
        if entry.failures >= s.failures_max && !entry.over {
            entry.over = true;
            self.over.fetch_add(1, Ordering::Relaxed);
            return Counted::NowThrottled;
        }
        Counted::Counted
    }

    /// Addresses tracked now (for tests and `/api/status`).
    pub fn tracked(&self) -> usize {
        self.table.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    fn prune(&self, table: &mut HashMap<IpAddr, Entry>, now: Instant, window: Duration) {
        let before = table.len();
        let mut expired_over = 0;
        table.retain(|_, e| {
            let live = now < e.window_start + window;
            if !live && e.over {
                expired_over += 1;
            }
            live
        });
        self.over.fetch_sub(expired_over, Ordering::Relaxed);
        tracing::debug!(
            "auth failure table pruned from {before} to {} addresses",
            table.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    #[test]
    fn past_the_limit_an_address_waits_for_its_window() {
        let l = FailureLimiter::default();
        let s = LimiterSettings {
            failures_max: 3,
            window: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        assert_eq!(l.failed(ip(1), t0, s), Counted::Counted);
        assert_eq!(l.failed(ip(1), t0, s), Counted::Counted);
        assert_eq!(l.check(ip(1), t0, s), None);
        assert_eq!(l.failed(ip(1), t0, s), Counted::NowThrottled);
        let later = t0 + Duration::from_secs(20);
        assert_eq!(l.check(ip(1), later, s), Some(Duration::from_secs(40)));
        // Another address is not affected.
        assert_eq!(l.check(ip(2), later, s), None);
        // The window ends: the address starts afresh.
        assert_eq!(l.check(ip(1), t0 + Duration::from_secs(60), s), None);
        assert_eq!(l.tracked(), 0);
        assert_eq!(
            l.failed(ip(1), t0 + Duration::from_secs(61), s),
            Counted::Counted
        );
    }

    #[test]
    fn a_zero_limit_counts_nothing() {
        let l = FailureLimiter::default();
        let s = LimiterSettings {
            failures_max: 0,
            window: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        for _ in 0..100 {
            l.failed(ip(1), t0, s);
        }
        assert_eq!(l.check(ip(1), t0, s), None);
        assert_eq!(l.tracked(), 0);
    }

    #[test]
    fn the_table_is_bounded() {
        let l = FailureLimiter::default();
        let s = LimiterSettings {
            failures_max: 1,
            window: Duration::from_secs(60),
        };
        let t0 = Instant::now();
        for n in 0..TABLE_MAX as u32 {
            let a = IpAddr::from(n.to_be_bytes());
            assert_eq!(l.failed(a, t0, s), Counted::NowThrottled);
        }
        let newcomer = IpAddr::from([255, 255, 255, 255]);
        assert_eq!(l.failed(newcomer, t0, s), Counted::Untracked);
        assert_eq!(l.tracked(), TABLE_MAX);
        // Once the old entries expired, they make room.
        let later = t0 + Duration::from_secs(61);
        assert_eq!(l.failed(newcomer, later, s), Counted::NowThrottled);
        assert_eq!(l.tracked(), 1);
        assert_eq!(l.over.load(Ordering::Relaxed), 1);
    }
}
