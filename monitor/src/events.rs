//! Recent level changes: the monitor derives an event each time a node's reported Resource
//! Manager level differs from its previous datagram's (normal → warning → critical and back),
//! and keeps the most recent ones in bounded rings, one per node and one for the fleet (the
//! dashboard's "recent critical events" and `/api/events`). Sans-IO: times are the monitor's
//! clock in milliseconds, passed in. It does not look at the per-account levels, only the node's
//! overall level.

use std::collections::VecDeque;

use serde::Serialize;

use crate::status::Level;

/// Level changes kept for the whole fleet.
pub const FLEET_EVENTS_MAX: usize = 512;
/// Level changes kept per node.
pub const NODE_EVENTS_MAX: usize = 8;

/// One change of a node's level.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct LevelChange {
    /// When the datagram that showed it arrived (monitor clock, ms).
    pub at_ms: u64,
    /// The node.
    pub node: String,
    /// Its level before.
    pub from: Level,
    /// Its level now.
    pub to: Level,
}

/// The change `now` makes after `before` (`None`: the node's first datagram, taken as after a
/// normal level, so a node that starts critical shows).
pub fn level_change(before: Option<Level>, now: Level) -> Option<(Level, Level)> {
    let from = before.unwrap_or(Level::Normal);
    (from != now).then_some((from, now))
}

/// A bounded ring of changes, oldest first.
#[derive(Clone, Debug)]
pub struct EventRing {
    changes: VecDeque<LevelChange>,
    max: usize,
}

impl EventRing {
    /// An empty ring of at most `max` changes (at least 1).
    pub fn new(max: usize) -> EventRing {
        let max = max.max(1);
        EventRing {
            changes: VecDeque::with_capacity(max.min(64)),
            max,
        }
    }

    /// Adds a change, dropping the oldest when full.
    pub fn push(&mut self, change: LevelChange) {
        if self.changes.len() == self.max {
            self.changes.pop_front();
        }
        self.changes.push_back(change);
    }

    /// The latest `limit` changes, newest first.
    pub fn latest(&self, limit: usize) -> impl Iterator<Item = &LevelChange> {
        self.changes.iter().rev().take(limit)
    }

    /// Changes held.
    pub fn len(&self) -> usize {
        self.changes.len()
    }

    /// True when no change was seen.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_derived_from_successive_levels() {
        assert_eq!(level_change(None, Level::Normal), None);
        assert_eq!(
            level_change(None, Level::Critical),
            Some((Level::Normal, Level::Critical))
        );
        assert_eq!(level_change(Some(Level::Warning), Level::Warning), None);
        assert_eq!(
            level_change(Some(Level::Critical), Level::Normal),
            Some((Level::Critical, Level::Normal))
        );
    }

    #[test]
    fn the_ring_is_bounded_and_newest_first() {
        let mut r = EventRing::new(3);
        for at_ms in 0..5 {
            r.push(LevelChange {
                at_ms,
                node: "n".into(),
                from: Level::Normal,
                to: Level::Warning,
            });
        }
        assert_eq!(r.len(), 3);
        let ats: Vec<u64> = r.latest(2).map(|c| c.at_ms).collect();
        assert_eq!(ats, [4, 3]);
    }
}
