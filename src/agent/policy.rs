//! The agent's decisions, pure: how long to wait before a restart ([`Backoff`]), when a process
//! is flapping ([`FlapWindow`]), and what a health probe's outcome means ([`Health`]). Time is
//! passed in; nothing here reads the clock, sleeps or touches a process.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// The wait before each restart. A run that came up (answered its health URL, or lived
/// `min_uptime_ms`) is followed by an immediate restart; each run in a row that did not come up
/// doubles the wait, from the initial one up to the cap, where it stays: the agent never gives up.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    /// Runs in a row that did not come up.
    failures: u32,
}

impl Backoff {
    /// `initial` for the first failed start, doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Backoff {
        Backoff {
            initial,
            max,
            failures: 0,
        }
    }

    /// The wait before the next start, after a run that did (`came_up`) or did not come up.
    pub fn after_run(&mut self, came_up: bool) -> Duration {
        if came_up {
            self.failures = 0;
            return Duration::ZERO;
        }
        let doublings = self.failures.min(31);
        self.failures = self.failures.saturating_add(1);
        self.initial
            .checked_mul(1u32 << doublings)
            .unwrap_or(self.max)
            .min(self.max)
    }
}

/// Restarts within a sliding window: `restarts_max` of them within `window` mark a process as
/// flapping until the oldest of them leaves the window.
#[derive(Debug, Clone)]
pub struct FlapWindow {
    restarts_max: usize,
    window: Duration,
    /// The latest restarts, oldest first; at most `restarts_max`.
    times: VecDeque<Instant>,
}

impl FlapWindow {
    /// `restarts_max` (at least 1) restarts within `window` is flapping.
    pub fn new(restarts_max: u32, window: Duration) -> FlapWindow {
        let restarts_max = restarts_max.max(1) as usize;
        FlapWindow {
            restarts_max,
            window,
            times: VecDeque::with_capacity(restarts_max),
        }
    }

    /// Records a restart at `at`; returns until when the process counts as flapping (`None`:
    /// not flapping).
    pub fn record(&mut self, at: Instant) -> Option<Instant> {
        if self.times.len() == self.restarts_max {
            self.times.pop_front();
        }
        self.times.push_back(at);
        self.flapping_until(at)
    }

    /// Until when the restarts recorded so far make the process flapping, as seen at `now`.
    pub fn flapping_until(&self, now: Instant) -> Option<Instant> {
        if self.times.len() < self.restarts_max {
            return None;
        }
        let until = *self.times.front()? + self.window;
        (until > now).then_some(until)
    }
}

/// What the health probes of one run have shown so far.
#[derive(Debug, Clone)]
pub struct Health {
    failures_max: u32,
    start_timeout: Duration,
    started: Instant,
    up: bool,
    failures: u32,
}

/// What a probe's outcome means for the process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Its first answer: the process is up (serving).
    CameUp,
    /// Nothing changed (still up, or still starting within its time).
    Unchanged,
    /// It stopped answering: kill it. The text says why.
    Hung(String),
}

impl Health {
    /// A run started at `started`: hung once `failures_max` probes in a row fail after it came
    /// up, or if it has not answered within `start_timeout`.
    pub fn new(started: Instant, failures_max: u32, start_timeout: Duration) -> Health {
        Health {
            failures_max: failures_max.max(1),
            start_timeout,
            started,
            up: false,
            failures: 0,
        }
    }

    /// Whether the process has answered a probe in this run.
    pub fn is_up(&self) -> bool {
        self.up
    }

    /// Failed probes in a row (since it came up).
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// Takes one probe's outcome at `now`: `Ok` for a 2xx answer, else the error.
    pub fn observe(&mut self, outcome: Result<(), String>, now: Instant) -> Verdict {
        match outcome {
            Ok(()) => {
                self.failures = 0;
                if self.up {
                    Verdict::Unchanged
                } else {
                    self.up = true;
                    Verdict::CameUp
                }
            }
            Err(e) if self.up => {
                self.failures += 1;
                if self.failures >= self.failures_max {
                    Verdict::Hung(format!(
                        "{} health checks failed in a row (last: {e})",
                        self.failures
                    ))
                } else {
                    Verdict::Unchanged
                }
            }
            Err(e) => {
                if now.duration_since(self.started) >= self.start_timeout {
                    Verdict::Hung(format!(
                        "not answering health_url {} ms after start (last: {e})",
                        self.start_timeout.as_millis()
                    ))
                } else {
                    Verdict::Unchanged
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn failed_starts_double_the_wait_up_to_the_cap_and_stay_there() {
        let mut b = Backoff::new(100 * MS, 1000 * MS);
        let waits: Vec<u128> = (0..7).map(|_| b.after_run(false).as_millis()).collect();
        assert_eq!(waits, [100, 200, 400, 800, 1000, 1000, 1000]);
        for _ in 0..100 {
            assert_eq!(b.after_run(false), 1000 * MS, "never gives up, never grows");
        }
    }

    #[test]
    fn a_run_that_came_up_restarts_at_once_and_resets_the_wait() {
        let mut b = Backoff::new(100 * MS, 5000 * MS);
        b.after_run(false);
        b.after_run(false);
        assert_eq!(b.after_run(true), Duration::ZERO);
        assert_eq!(b.after_run(false), 100 * MS);
    }

    #[test]
    fn flapping_is_n_restarts_within_the_window() {
        let t0 = Instant::now();
        let mut w = FlapWindow::new(3, 1000 * MS);
        assert_eq!(w.record(t0), None);
        assert_eq!(w.record(t0 + 100 * MS), None);
        assert_eq!(w.record(t0 + 200 * MS), Some(t0 + 1000 * MS));
        // Quiet for a while: the oldest restart leaves the window.
        assert_eq!(w.flapping_until(t0 + 1000 * MS), None);
        // Spread-out restarts never flap.
        assert_eq!(w.record(t0 + 2000 * MS), None);
        assert_eq!(w.record(t0 + 3500 * MS), None);
    }

    #[test]
    fn health_comes_up_then_hangs_after_failures_in_a_row() {
        let t0 = Instant::now();
        let mut h = Health::new(t0, 2, 5000 * MS);
        let err = || Err("refused".to_string());
        assert_eq!(h.observe(err(), t0 + MS), Verdict::Unchanged);
        assert_eq!(h.observe(Ok(()), t0 + 2 * MS), Verdict::CameUp);
        assert_eq!(h.observe(err(), t0 + 3 * MS), Verdict::Unchanged);
        assert_eq!(h.observe(Ok(()), t0 + 4 * MS), Verdict::Unchanged);
        assert_eq!(h.observe(err(), t0 + 5 * MS), Verdict::Unchanged);
        assert!(
            matches!(h.observe(err(), t0 + 6 * MS), Verdict::Hung(why) if why.contains("2 health checks"))
        );
    }

    #[test]
    fn a_process_that_never_answers_is_hung_at_the_start_timeout() {
        let t0 = Instant::now();
        let mut h = Health::new(t0, 3, 500 * MS);
        let err = || Err("refused".to_string());
        assert_eq!(h.observe(err(), t0 + 499 * MS), Verdict::Unchanged);
        assert!(
            matches!(h.observe(err(), t0 + 500 * MS), Verdict::Hung(why) if why.contains("500 ms"))
        );
    }
}
