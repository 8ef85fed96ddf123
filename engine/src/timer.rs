//! A hashed timing wheel for connection deadlines (header and idle timeouts, pacing).
//!
//! Fixed tick (`TICK`), fixed slot count: a deadline beyond one turn stays in its slot and is
//! re-checked when the slot comes round again. Every connection is in at most one slot, so the
//! wheel never holds more entries than there are connections. Time is passed in; the wheel never
//! reads the clock.

use std::time::{Duration, Instant};

pub const TICK: Duration = Duration::from_millis(5);
pub const SLOTS: usize = 1024;
const _: () = assert!(SLOTS.is_power_of_two());

pub struct Wheel {
    start: Instant,
    /// Ticks fully processed.
    done_ticks: u64,
    slots: Vec<Vec<(u32, Instant)>>,
    len: usize,
}

impl Wheel {
    pub fn new(now: Instant) -> Self {
        Wheel {
            start: now,
            done_ticks: 0,
            slots: (0..SLOTS).map(|_| Vec::new()).collect(),
            len: 0,
        }
    }

    fn tick_of(&self, t: Instant) -> u64 {
        (t.saturating_duration_since(self.start).as_micros() / TICK.as_micros()) as u64
    }

    /// Inserts `key` due at `at`; returns its slot so the owner can remove it later.
    pub fn insert(&mut self, key: u32, at: Instant) -> u32 {
        let tick = self.tick_of(at).max(self.done_ticks);
        let slot = (tick as usize) & (SLOTS - 1);
        self.slots[slot].push((key, at));
        self.len += 1;
        slot as u32
    }

    pub fn remove(&mut self, key: u32, slot: u32) {
        let v = &mut self.slots[slot as usize];
        if let Some(i) = v.iter().position(|(k, _)| *k == key) {
            v.swap_remove(i);
            self.len -= 1;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How long the owner may sleep before the next tick that may hold a due entry.
    pub fn timeout(&self, now: Instant) -> Option<Duration> {
        if self.len == 0 {
            return None;
        }
        let next = self.start + TICK * (self.done_ticks as u32 + 1);
        Some(next.saturating_duration_since(now))
    }

    /// Removes and returns every entry due at `now` into `due`.
    pub fn expire(&mut self, now: Instant, due: &mut Vec<u32>) {
        let now_tick = self.tick_of(now);
        let turns = (now_tick.saturating_sub(self.done_ticks)).min(SLOTS as u64);
        for i in 0..=turns {
            let tick = self.done_ticks + i;
            if tick > now_tick {
                break;
            }
            let slot = &mut self.slots[(tick as usize) & (SLOTS - 1)];
            let mut j = 0;
            while j < slot.len() {
                if slot[j].1 <= now {
                    due.push(slot[j].0);
                    slot.swap_remove(j);
                    self.len -= 1;
                } else {
                    j += 1;
                }
            }
        }
        self.done_ticks = now_tick;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_of_time_and_not_before() {
        let t0 = Instant::now();
        let mut w = Wheel::new(t0);
        w.insert(1, t0 + Duration::from_millis(20));
        let s2 = w.insert(2, t0 + Duration::from_millis(40));
        w.insert(3, t0 + Duration::from_secs(30)); // more than one turn away
        let mut due = Vec::new();
        w.expire(t0 + Duration::from_millis(10), &mut due);
        assert!(due.is_empty());
        w.expire(t0 + Duration::from_millis(25), &mut due);
        assert_eq!(due, vec![1]);
        w.remove(2, s2);
        due.clear();
        w.expire(t0 + Duration::from_secs(10), &mut due);
        assert!(
            due.is_empty(),
            "removed and far entries stay quiet: {due:?}"
        );
        w.expire(t0 + Duration::from_secs(31), &mut due);
        assert_eq!(due, vec![3]);
        assert!(w.is_empty());
    }
}
