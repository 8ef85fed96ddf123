//! The monitor's node table: each node's latest status, its replay window, and a bounded ring of
//! samples (rates the table derives from the status counters), with a bound on the number of
//! nodes. Sans-IO: time is passed in as milliseconds on the monitor's monotonic clock.
//!
//! A node is stale when three of its intervals passed without a datagram. When the table is
//! full, a new node takes the place of the stale node heard from longest ago; if no node is
//! stale, the new node's datagram is dropped (counted as `table_full`), so a flood of made-up
//! node ids cannot push live nodes out.

use std::collections::{HashMap, VecDeque};

use serde::Serialize;

use crate::events::{level_change, EventRing, LevelChange, FLEET_EVENTS_MAX, NODE_EVENTS_MAX};
use crate::status::{IntakeCounts, Rejection, ReplayWindow, Role, Status};

/// Missed intervals after which a node is stale.
pub const STALE_INTERVALS: u64 = 3;
/// The interval the staleness rule assumes is clamped to this range, in milliseconds.
const INTERVAL_MS_RANGE: (u64, u64) = (100, 60_000);

/// One point of a node's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// When it arrived (monitor clock, ms).
    pub at_ms: u64,
    /// Bytes sent per second since the previous datagram.
    pub sent_bps: f64,
    /// Requests per second since the previous datagram.
    pub requests_per_sec: f64,
    /// Active streams.
    pub streams: u32,
    /// Memory account in use, bytes (0 when the node has none).
    pub memory_bytes: u64,
    /// Errors and critical events since the previous datagram.
    pub events: u64,
}

/// One node as the table knows it.
#[derive(Clone, Debug)]
pub struct Node {
    /// Its latest status.
    pub latest: Status,
    /// When its first datagram arrived (monitor clock, ms).
    pub first_seen_ms: u64,
    /// When its latest datagram arrived.
    pub last_seen_ms: u64,
    /// Process restarts the table noticed (the pid changed).
    pub restarts_seen: u64,
    /// Its most recent samples, oldest first.
    pub history: VecDeque<Sample>,
    /// Its most recent level changes.
    pub events: EventRing,
    window: ReplayWindow,
}

impl Node {
    /// True when three intervals passed without a datagram.
    pub fn is_stale(&self, now_ms: u64) -> bool {
        let interval =
            u64::from(self.latest.interval_ms).clamp(INTERVAL_MS_RANGE.0, INTERVAL_MS_RANGE.1);
        now_ms.saturating_sub(self.last_seen_ms) > STALE_INTERVALS * interval
    }

    /// The latest sample, if any.
    pub fn last_sample(&self) -> Sample {
        self.history.back().copied().unwrap_or_default()
    }
}

/// Every node heard from, bounded.
pub struct NodeTable {
    nodes: HashMap<String, Node>,
    nodes_max: usize,
    history_max: usize,
    counts: IntakeCounts,
    events: EventRing,
}

impl NodeTable {
    /// A table of at most `nodes_max` nodes with `history_max` samples each (both at least 1).
    pub fn new(nodes_max: usize, history_max: usize) -> NodeTable {
        assert!(nodes_max > 0 && history_max > 0, "bounds must be positive");
        NodeTable {
            nodes: HashMap::with_capacity(nodes_max.min(4096)),
            nodes_max,
            history_max,
            counts: IntakeCounts::default(),
            events: EventRing::new(FLEET_EVENTS_MAX),
        }
    }

    /// Counts a datagram dropped before it reached the table.
    pub fn reject(&mut self, why: Rejection) {
        self.counts.count(why);
    }

    /// Takes a checked status that arrived at `now_ms`, or says why not (and counts it).
    pub fn accept(&mut self, status: Status, now_ms: u64) -> Result<(), Rejection> {
        let result = self.insert(status, now_ms);
        match result {
            Ok(()) => self.counts.accepted += 1,
            Err(why) => self.counts.count(why),
        }
        result
    }

    fn insert(&mut self, status: Status, now_ms: u64) -> Result<(), Rejection> {
        if let Some(node) = self.nodes.get_mut(&status.node) {
            if !node.window.take(status.seq) {
                return Err(Rejection::Replayed);
            }
            let sample = sample(&node.latest, &status, now_ms);
            if status.pid != node.latest.pid {
                node.restarts_seen += 1;
            }
            if node.history.len() == self.history_max {
                node.history.pop_front();
            }
            node.history.push_back(sample);
            if let Some(change) = change_at(Some(&node.latest), &status, now_ms) {
                node.events.push(change.clone());
                self.events.push(change);
            }
            node.latest = status;
            node.last_seen_ms = now_ms;
            return Ok(());
        }
        if self.nodes.len() >= self.nodes_max {
            let oldest_stale = self
                .nodes
                .iter()
                .filter(|(_, n)| n.is_stale(now_ms))
                .min_by_key(|(_, n)| n.last_seen_ms)
                .map(|(id, _)| id.clone());
            match oldest_stale {
                Some(id) => {
                    self.nodes.remove(&id);
                }
                None => return Err(Rejection::TableFull),
            }
        }
        let mut window = ReplayWindow::default();
        window.take(status.seq);
        let mut history = VecDeque::with_capacity(self.history_max.min(256));
        history.push_back(sample(&status, &status, now_ms));
        let mut events = EventRing::new(NODE_EVENTS_MAX);
        if let Some(change) = change_at(None, &status, now_ms) {
            events.push(change.clone());
            self.events.push(change);
        }
        self.nodes.insert(
            status.node.clone(),
            Node {
                latest: status,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                restarts_seen: 0,
                history,
                events,
                window,
            },
        );
        Ok(())
    }

    /// The nodes, ordered by role then id.
    pub fn nodes(&self) -> Vec<&Node> {
        let mut v: Vec<&Node> = self.nodes.values().collect();
        v.sort_by(|a, b| {
            (role_rank(a.latest.role), &a.latest.node)
                .cmp(&(role_rank(b.latest.role), &b.latest.node))
        });
        v
    }

    /// Datagrams accepted and dropped so far.
    pub fn counts(&self) -> IntakeCounts {
        self.counts
    }

    /// The fleet's level changes, newest first, at most `limit`.
    pub fn recent_events(&self, limit: usize) -> impl Iterator<Item = &LevelChange> {
        self.events.latest(limit)
    }

    /// Nodes held.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True when no node was heard from.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}

/// The level change `now` shows after `before` (`None`: the node's first datagram).
fn change_at(before: Option<&Status>, now: &Status, at_ms: u64) -> Option<LevelChange> {
    let (from, to) = level_change(before.map(|b| b.level), now.level)?;
    Some(LevelChange {
        at_ms,
        node: now.node.clone(),
        from,
        to,
    })
}

fn role_rank(r: Role) -> u8 {
    r.code()
}

/// The sample `now` gives after `before` (the same status at a node's first datagram).
fn sample(before: &Status, now: &Status, at_ms: u64) -> Sample {
    let memory_bytes = now
        .accounts
        .iter()
        .find(|a| a.resource == "memory_bytes")
        .map_or(0, |a| a.used);
    // Counters restart with the process: no rate across a restart or a wrapped counter.
    let same_run = before.pid == now.pid && now.uptime_ms > before.uptime_ms;
    let secs = now.uptime_ms.saturating_sub(before.uptime_ms) as f64 / 1000.0;
    let rate = |a: u64, b: u64| {
        if same_run && b >= a {
            (b - a) as f64 / secs
        } else {
            0.0
        }
    };
    let events = |s: &Status| s.errors_total.saturating_add(s.critical_events_total);
    Sample {
        at_ms,
        sent_bps: rate(before.sent_bytes_total, now.sent_bytes_total) * 8.0,
        requests_per_sec: rate(before.requests_total, now.requests_total),
        streams: now.active_streams,
        memory_bytes,
        events: if same_run {
            events(now).saturating_sub(events(before))
        } else {
            0
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(node: &str, seq: u64) -> Status {
        let mut s = Status::new(node, Role::Serve);
        s.seq = seq;
        s.pid = 1;
        s.uptime_ms = seq * 1000;
        s.interval_ms = 1000;
        s.requests_total = seq * 10;
        s
    }

    #[test]
    fn replays_are_dropped_and_rates_derived() {
        let mut t = NodeTable::new(4, 3);
        t.accept(status("a", 1), 0).unwrap();
        assert_eq!(t.accept(status("a", 1), 10), Err(Rejection::Replayed));
        t.accept(status("a", 2), 1000).unwrap();
        let a = t.nodes()[0];
        assert_eq!(a.last_sample().requests_per_sec, 10.0);
        for seq in 3..10 {
            t.accept(status("a", seq), seq * 1000).unwrap();
        }
        assert_eq!(t.nodes()[0].history.len(), 3, "history is bounded");
        assert_eq!(t.counts().accepted, 9);
        assert_eq!(t.counts().replayed, 1);
    }

    #[test]
    fn level_changes_are_kept_per_node_and_for_the_fleet() {
        use crate::status::Level;
        let mut t = NodeTable::new(4, 3);
        let levels = [
            Level::Warning,
            Level::Warning,
            Level::Critical,
            Level::Normal,
        ];
        for (i, level) in levels.into_iter().enumerate() {
            let seq = i as u64 + 1;
            let mut s = status("a", seq);
            s.level = level;
            t.accept(s, seq * 1000).unwrap();
        }
        t.accept(status("b", 1), 500).unwrap();
        let seen: Vec<(u64, Level, Level)> = t
            .recent_events(10)
            .map(|c| (c.at_ms, c.from, c.to))
            .collect();
        assert_eq!(
            seen,
            [
                (4000, Level::Critical, Level::Normal),
                (3000, Level::Warning, Level::Critical),
                (1000, Level::Normal, Level::Warning),
            ]
        );
        assert_eq!(t.recent_events(1).count(), 1);
        let a = t.nodes()[0];
        assert_eq!(a.events.len(), 3);
        assert!(
            t.nodes()[1].events.is_empty(),
            "a node always normal has none"
        );
    }

    #[test]
    fn a_node_goes_stale_after_three_intervals() {
        let mut t = NodeTable::new(4, 3);
        t.accept(status("a", 1), 0).unwrap();
        assert!(!t.nodes()[0].is_stale(3000));
        assert!(t.nodes()[0].is_stale(3001));
    }

    #[test]
    fn a_full_table_makes_room_only_from_stale_nodes_oldest_first() {
        let mut t = NodeTable::new(2, 3);
        t.accept(status("old", 1), 0).unwrap();
        t.accept(status("newer", 1), 1000).unwrap();
        // Both fresh: the stranger is dropped.
        assert_eq!(t.accept(status("x", 1), 2000), Err(Rejection::TableFull));
        // At 10 s both are stale: the one heard from longest ago makes room.
        t.accept(status("y", 1), 10_000).unwrap();
        let ids: Vec<&str> = t.nodes().iter().map(|n| n.latest.node.as_str()).collect();
        assert_eq!(ids, ["newer", "y"]);
        assert_eq!(t.counts().table_full, 1);
    }

    #[test]
    fn a_restart_is_noticed_without_a_rate_spike() {
        let mut t = NodeTable::new(2, 8);
        t.accept(status("a", 5), 0).unwrap();
        let mut again = status("a", 6);
        again.pid = 2;
        again.uptime_ms = 10;
        again.requests_total = 0;
        t.accept(again, 1000).unwrap();
        let a = t.nodes()[0];
        assert_eq!(a.restarts_seen, 1);
        assert_eq!(a.last_sample().requests_per_sec, 0.0);
    }
}
