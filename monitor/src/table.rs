//! The monitor's node table: each node's latest status, its replay window, and a bounded ring of
//! samples (rates the table derives from the status counters), with a bound on the number of
//! nodes. Sans-IO: time is passed in as milliseconds on the monitor's monotonic clock.
//!
//! A node is stale when three of its intervals passed without a datagram. When the table is
//! full, a new node takes the place of the stale node heard from longest ago; if no node is
//! stale, the new node's datagram is dropped (counted as `table_full`), so a flood of made-up
//! node ids cannot push live nodes out.
//!
//! The table also keeps the roster the round-trip probes use: every live node's tag and the
//! address its datagrams come from (its status socket, which answers echoes), sorted by tag and
//! rebuilt at most once a second. A node is due a peer list on its first datagram, after a
//! restart, every [`PEER_LIST_PERIOD_MS`], and (at most once a second) when the roster changed.
//! Its peers are the [`PEERS_MAX`] nodes after it on the roster (everyone in a fleet of
//! `PEERS_MAX + 1` or fewer), the window moving on every [`PEER_WINDOW_TURN_MS`] in larger
//! fleets.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;

use serde::Serialize;

use crate::events::{level_change, EventRing, LevelChange, FLEET_EVENTS_MAX, NODE_EVENTS_MAX};
use crate::probe::wire::Peer;
use crate::status::{node_tag, IntakeCounts, Rejection, ReplayWindow, Role, Status, PEERS_MAX};

/// Missed intervals after which a node is stale.
pub const STALE_INTERVALS: u64 = 3;
/// A node is sent its peer list again after this long, in milliseconds.
pub const PEER_LIST_PERIOD_MS: u64 = 5000;
/// In a fleet larger than a peer list, each node's window of peers moves on this often.
pub const PEER_WINDOW_TURN_MS: u64 = 60_000;
/// The roster is rebuilt at most this often, in milliseconds.
const ROSTER_PERIOD_MS: u64 = 1000;
/// The interval the staleness rule assumes is clamped to this range, in milliseconds.
const INTERVAL_MS_RANGE: (u64, u64) = (100, 60_000);

/// One point of a node's history.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Sample {
    /// When it arrived (monitor clock, ms).
    pub at_ms: u64,
    /// Bytes sent per second since the previous datagram.
    pub sent_bps: f64,
    /// Bytes received per second since the previous datagram, in bits.
    pub received_bps: f64,
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
    /// Its tag (`node_tag` of its id), how peers name it in their round trips.
    pub tag: u32,
    /// Where its latest datagram came from (where it answers echoes).
    pub probe_addr: Option<SocketAddr>,
    window: ReplayWindow,
    /// When it was last sent a peer list, and the roster generation of that list.
    peers_sent: Option<(u64, u64)>,
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
    /// Live nodes' tags and probe addresses, sorted by tag.
    roster: Vec<Peer>,
    /// The roster being rebuilt (kept for its capacity).
    roster_next: Vec<Peer>,
    roster_built_ms: Option<u64>,
    roster_generation: u64,
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
            roster: Vec::new(),
            roster_next: Vec::new(),
            roster_built_ms: None,
            roster_generation: 0,
        }
    }

    /// Counts a datagram dropped before it reached the table.
    pub fn reject(&mut self, why: Rejection) {
        self.counts.count(why);
    }

    /// Takes a checked status that arrived at `now_ms`, or says why not (and counts it).
    pub fn accept(&mut self, status: Status, now_ms: u64) -> Result<(), Rejection> {
        self.accept_from(status, None, now_ms, &mut Vec::new())
            .map(|_| ())
    }

    /// As [`NodeTable::accept`], for a datagram from `from`. When the node is due a peer list,
    /// puts it in `peers` (cleared first) and returns true.
    pub fn accept_from(
        &mut self,
        status: Status,
        from: Option<SocketAddr>,
        now_ms: u64,
        peers: &mut Vec<Peer>,
    ) -> Result<bool, Rejection> {
        peers.clear();
        let result = self.insert(status, from, now_ms);
        match result {
            Ok(Some(tag)) => {
                self.counts.accepted += 1;
                self.peers_of(tag, now_ms, peers);
                Ok(true)
            }
            Ok(None) => {
                self.counts.accepted += 1;
                Ok(false)
            }
            Err(why) => {
                self.counts.count(why);
                Err(why)
            }
        }
    }

    /// Rebuilds the roster when it is older than a second.
    fn refresh_roster(&mut self, now_ms: u64) {
        if self
            .roster_built_ms
            .is_some_and(|t| now_ms.saturating_sub(t) < ROSTER_PERIOD_MS)
        {
            return;
        }
        self.roster_built_ms = Some(now_ms);
        let mut next = std::mem::take(&mut self.roster_next);
        next.clear();
        next.extend(self.nodes.values().filter_map(|n| {
            let addr = n.probe_addr.filter(|_| !n.is_stale(now_ms))?;
            Some(Peer { tag: n.tag, addr })
        }));
        next.sort_unstable_by_key(|p| (p.tag, p.addr));
        if next != self.roster {
            self.roster_generation += 1;
        }
        self.roster_next = std::mem::replace(&mut self.roster, next);
    }

    /// The peers of the node tagged `tag`: the window after it on the roster, itself excluded.
    fn peers_of(&self, tag: u32, now_ms: u64, out: &mut Vec<Peer>) {
        let n = self.roster.len();
        if n == 0 {
            return;
        }
        let at = self.roster.partition_point(|p| p.tag < tag);
        let turn = if n > PEERS_MAX + 1 {
            (now_ms / PEER_WINDOW_TURN_MS) as usize * PEERS_MAX
        } else {
            0
        };
        out.extend(
            (0..n)
                .map(|i| self.roster[(at + turn + i) % n])
                .filter(|p| p.tag != tag)
                .take(PEERS_MAX),
        );
    }

    /// Files `status`; `Some(tag)` when its node is due a peer list.
    fn insert(
        &mut self,
        status: Status,
        from: Option<SocketAddr>,
        now_ms: u64,
    ) -> Result<Option<u32>, Rejection> {
        self.refresh_roster(now_ms);
        let generation = self.roster_generation;
        let due = |sent: Option<(u64, u64)>, restarted: bool| match sent {
            _ if from.is_none() => false,
            None => true,
            Some((at, seen)) => {
                let since = now_ms.saturating_sub(at);
                restarted
                    || since >= PEER_LIST_PERIOD_MS
                    || (seen != generation && since >= ROSTER_PERIOD_MS)
            }
        };
        if let Some(node) = self.nodes.get_mut(&status.node) {
            if !node.window.take(status.seq) {
                return Err(Rejection::Replayed);
            }
            let sample = sample(&node.latest, &status, now_ms);
            let restarted = status.pid != node.latest.pid;
            if restarted {
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
            if from.is_some() {
                node.probe_addr = from;
            }
            if !due(node.peers_sent, restarted) {
                return Ok(None);
            }
            node.peers_sent = Some((now_ms, generation));
            return Ok(Some(node.tag));
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
        let tag = node_tag(&status.node);
        let due = due(None, false);
        self.nodes.insert(
            status.node.clone(),
            Node {
                latest: status,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                restarts_seen: 0,
                history,
                events,
                tag,
                probe_addr: from,
                window,
                peers_sent: due.then_some((now_ms, generation)),
            },
        );
        Ok(due.then_some(tag))
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
        received_bps: rate(before.received_bytes_total, now.received_bytes_total) * 8.0,
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
    fn live_nodes_are_sent_each_other_as_peers_when_due() {
        let mut t = NodeTable::new(8, 3);
        let addr = |port| SocketAddr::from(([127, 0, 0, 1], port));
        let mut peers = Vec::new();
        let mut take = |t: &mut NodeTable, s: Status, port, at| {
            let due = t.accept_from(s, Some(addr(port)), at, &mut peers);
            (due, peers.iter().map(|p| p.addr.port()).collect::<Vec<_>>())
        };
        // Alone, and then before the roster is rebuilt: due, with nobody to probe.
        assert_eq!(take(&mut t, status("a", 1), 1, 0), (Ok(true), vec![]));
        assert_eq!(take(&mut t, status("b", 1), 2, 100), (Ok(true), vec![]));
        // The roster changed: each is sent the other once, then only after the period.
        assert_eq!(take(&mut t, status("a", 2), 1, 1000), (Ok(true), vec![2]));
        assert_eq!(take(&mut t, status("b", 2), 2, 1100), (Ok(true), vec![1]));
        assert_eq!(take(&mut t, status("a", 3), 1, 2000), (Ok(false), vec![]));
        assert_eq!(take(&mut t, status("a", 4), 1, 4000), (Ok(false), vec![]));
        assert_eq!(take(&mut t, status("b", 3), 2, 4000), (Ok(false), vec![]));
        assert_eq!(take(&mut t, status("a", 5), 1, 6000), (Ok(true), vec![2]));
        // A restarted node is sent its list at once.
        let mut again = status("b", 5);
        again.pid = 9;
        assert_eq!(take(&mut t, again, 2, 6100), (Ok(true), vec![1]));
        // Without a source there is nowhere to send a list.
        assert_eq!(t.accept(status("a", 9), 20_000), Ok(()));
        assert_eq!(t.nodes()[0].tag, node_tag("a"));
    }

    #[test]
    fn a_large_fleet_gives_each_node_a_bounded_window_without_itself() {
        let mut t = NodeTable::new(100, 2);
        let mut peers = Vec::new();
        for i in 0..50u16 {
            let from = Some(SocketAddr::from(([127, 0, 0, 1], 1000 + i)));
            let _ = t.accept_from(status(&format!("n{i}"), 1), from, 0, &mut peers);
        }
        let from = Some(SocketAddr::from(([127, 0, 0, 1], 1000)));
        assert_eq!(
            t.accept_from(status("n0", 2), from, 1000, &mut peers),
            Ok(true)
        );
        assert_eq!(peers.len(), PEERS_MAX);
        assert!(peers.iter().all(|p| p.tag != node_tag("n0")));
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
