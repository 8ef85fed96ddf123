//! Reconnection delays: bounded exponential backoff with full jitter.
//!
//! After the `n`th failure in a row the shipper waits a random time in `[0, min(max, initial *
//! 2^n)]`, so many shippers that lost the same server do not come back at the same instant, and
//! none waits longer than `max`. A success resets the sequence. Pure apart from the random
//! source, which a test can seed; nothing here sleeps.

use std::time::Duration;

/// The delays between connection attempts.
#[derive(Debug)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Failures in a row since the last success.
    failures: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    /// Delays start at `initial` (at most) and double per failure up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff::with_rng(initial, max, fastrand::Rng::new())
    }

    /// As [`Backoff::new`] with a given random source (tests seed it).
    pub fn with_rng(initial: Duration, max: Duration, rng: fastrand::Rng) -> Backoff {
        let initial = initial.max(Duration::from_millis(1));
        Backoff {
            initial,
            max: max.max(initial),
            failures: 0,
            rng,
        }
    }

    /// The upper bound of the next delay: `initial * 2^failures`, capped at `max`.
    pub fn ceiling(&self) -> Duration {
        // 2^20 * 1 ms is over 17 minutes: past it every cap that makes sense is reached.
        let doublings = self.failures.min(20);
        self.initial.saturating_mul(1 << doublings).min(self.max)
    }

    /// Records a failure and returns how long to wait before the next attempt (full jitter:
    /// uniform in `[0, ceiling]`, taken before the failure is counted).
    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.failures = self.failures.saturating_add(1);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(self.rng.u64(0..=nanos))
    }

    /// Records a success: the next failure waits `initial` at most again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }

    /// Failures in a row since the last success.
    pub fn failures(&self) -> u32 {
        self.failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(seed: u64) -> Backoff {
        Backoff::with_rng(
            Duration::from_millis(50),
            Duration::from_secs(5),
            fastrand::Rng::with_seed(seed),
        )
    }

    #[test]
    fn ceiling_doubles_up_to_the_cap() {
        let mut b = backoff(1);
        let mut ceilings = Vec::new();
        for _ in 0..10 {
            ceilings.push(b.ceiling().as_millis());
            b.next_delay();
        }
        assert_eq!(
            ceilings,
            [50, 100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000]
        );
        // Thousands of failures neither overflow nor pass the cap.
        for _ in 0..10_000 {
            assert!(b.next_delay() <= Duration::from_secs(5));
        }
        assert_eq!(b.ceiling(), Duration::from_secs(5));
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling() {
        for seed in 0..200 {
            let mut b = backoff(seed);
            for _ in 0..12 {
                let ceiling = b.ceiling();
                let d = b.next_delay();
                assert!(d <= ceiling, "seed {seed}: {d:?} > {ceiling:?}");
            }
        }
        // Full jitter: the first delays of many shippers spread over [0, 50 ms], not one value.
        let firsts: std::collections::BTreeSet<Duration> =
            (0..50).map(|seed| backoff(seed).next_delay()).collect();
        assert!(firsts.len() > 40, "{} distinct first delays", firsts.len());
        assert!(firsts.iter().any(|d| *d < Duration::from_millis(25)));
        assert!(firsts.iter().any(|d| *d >= Duration::from_millis(25)));
    }

    #[test]
    fn success_resets() {
        let mut b = backoff(7);
        for _ in 0..6 {
            b.next_delay();
        }
        assert_eq!(b.failures(), 6);
        assert_eq!(b.ceiling(), Duration::from_millis(3200));
        b.reset();
        assert_eq!(b.failures(), 0);
        assert_eq!(b.ceiling(), Duration::from_millis(50));
        assert!(b.next_delay() <= Duration::from_millis(50));
    }

    #[test]
    fn odd_settings_are_held_to_sense() {
        // A zero initial delay would never grow; a cap below it would be no cap.
        let mut b = Backoff::with_rng(Duration::ZERO, Duration::ZERO, fastrand::Rng::with_seed(3));
        assert_eq!(b.ceiling(), Duration::from_millis(1));
        b.next_delay();
        assert_eq!(b.ceiling(), Duration::from_millis(1));
    }
}
