//! What a node knows of the pool without asking the catalog: every node's last heartbeat
//! (advertised URL, load, age) as the pool thread last read it, and the choices made from it
//! (is a node live, which holders or targets are least loaded). Pure: the pool thread builds a
//! [`PoolView`] and replaces the shared one whole; readers clone an `Arc` and never wait.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use oasis_storage::{Holder, NodeLoad, NodeRecord};

/// The pool's nodes as of one refresh.
#[derive(Clone, Debug)]
pub struct PoolView {
    /// Every node that ever sent a heartbeat, by node id.
    pub nodes: Vec<NodeRecord>,
    /// When the pool thread read them (ages grow from here).
    pub read_at: Instant,
    /// Whether the last refresh reached the catalog.
    pub catalog_reachable: bool,
    /// Why the last refresh failed (`None` when it reached the catalog).
    pub catalog_error: Option<String>,
}

impl PoolView {
    /// An empty view (before the first refresh).
    pub fn empty() -> PoolView {
        PoolView {
            nodes: Vec::new(),
            read_at: Instant::now(),
            catalog_reachable: false,
            catalog_error: None,
        }
    }

    /// Why this node takes no write now: the last refresh failed, or none succeeded for
    /// `down_after_ms` (a heartbeat stuck on a silent network), so the other nodes count it as
    /// down. `None` while the catalog answers.
    pub fn write_refusal(&self, down_after_ms: u64, now: Instant) -> Option<String> {
        let since_ms = now.saturating_duration_since(self.read_at).as_millis();
        let stale = since_ms >= u128::from(down_after_ms);
        if self.catalog_reachable && !stale {
            return None;
        }
        let why = match &self.catalog_error {
            Some(e) => e.clone(),
            None => format!("no answer from it for {since_ms} ms"),
        };
        Some(format!(
            "catalog unreachable: this pool node cannot reach its catalog ({why}); it serves \
             what it holds but takes no upload or delete until the catalog answers again: \
             retry later or use another node"
        ))
    }

    /// The node's age now: its age when read plus the time since.
    pub fn age_ms(&self, node: &NodeRecord, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.read_at).as_millis();
        node.age_ms
            .saturating_add(u64::try_from(since).unwrap_or(u64::MAX))
    }

    /// The live nodes other than `me`, the most bandwidth headroom first.
    pub fn live_others(&self, me: &str, down_after_ms: u64, now: Instant) -> Vec<&NodeRecord> {
        let mut out: Vec<&NodeRecord> = self
            .nodes
            .iter()
            .filter(|n| n.node_id != me && self.age_ms(n, now) < down_after_ms)
            .collect();
        out.sort_by(|a, b| {
            headroom(&b.load)
                .cmp(&headroom(&a.load))
                .then(a.load.connections.cmp(&b.load.connections))
                .then(a.node_id.cmp(&b.node_id))
        });
        out
    }
}

/// The shared view: replaced whole by the pool thread, read by anyone.
pub type SharedView = Arc<RwLock<Arc<PoolView>>>;

/// Bandwidth not reserved, bits per second (0 for a node that reported no limit).
pub fn headroom(load: &NodeLoad) -> u64 {
    load.bandwidth_limit_bps
        .saturating_sub(load.bandwidth_reserved_bps)
}

/// Where a GET goes, from the holders of its object's current version.
#[derive(Debug, PartialEq, Eq)]
pub enum Pick<'a> {
    /// This live holder (the most headroom).
    Node(&'a NodeRecord),
    /// Holders exist but none is live (or, when headroom was asked for, none has any).
    AllDown,
    /// No holder other than `me`.
    Nowhere,
}

/// Picks the live holder other than `me` with the most bandwidth headroom; with
/// `need_headroom`, one whose headroom is at least `need_bps`.
pub fn pick_holder<'a>(
    holders: &'a [Holder],
    me: &str,
    down_after_ms: u64,
    need_bps: Option<u64>,
) -> Pick<'a> {
    let others: Vec<&Holder> = holders.iter().filter(|h| h.replica.node_id != me).collect();
    if others.is_empty() {
        return Pick::Nowhere;
    }
    let best = others
        .iter()
        .filter_map(|h| h.node.as_ref())
        .filter(|n| n.age_ms < down_after_ms && !n.advertise.is_empty())
        .filter(|n| need_bps.is_none_or(|need| headroom(&n.load) >= need))
        .max_by(|a, b| {
            headroom(&a.load)
                .cmp(&headroom(&b.load))
                .then(b.load.connections.cmp(&a.load.connections))
                .then(b.node_id.cmp(&a.node_id))
        });
    match (best, need_bps) {
        (Some(n), _) => Pick::Node(n),
        // Overloaded here and no holder with headroom: this node refuses as it would have.
        (None, Some(_)) => Pick::Nowhere,
        (None, None) => Pick::AllDown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_storage::ReplicaRecord;

    fn node(id: &str, age_ms: u64, reserved: u64, limit: u64) -> NodeRecord {
        NodeRecord {
            node_id: id.into(),
            advertise: format!("http://{id}"),
            heartbeat_unix_ms: 1,
            age_ms,
            load: NodeLoad {
                connections: 0,
                bandwidth_reserved_bps: reserved,
                bandwidth_limit_bps: limit,
            },
        }
    }

    fn holder(n: NodeRecord) -> Holder {
        Holder {
            replica: ReplicaRecord {
                name: "a".into(),
                node_id: n.node_id.clone(),
                version_id: 1,
                size_bytes: 1,
                crc32c: 0,
                created_unix_ms: 0,
                durable_unix_ms: 0,
            },
            node: Some(n),
        }
    }

    #[test]
    fn the_live_holder_with_most_headroom_is_picked_and_never_me() {
        let hs = vec![
            holder(node("a", 10, 0, 1_000)),
            holder(node("b", 10, 100, 1_000)),
            holder(node("c", 99_000, 0, 10_000)),
        ];
        assert_eq!(
            pick_holder(&hs, "x", 5_000, None),
            Pick::Node(&hs[0].node.clone().unwrap())
        );
        assert_eq!(
            pick_holder(&hs, "a", 5_000, None),
            Pick::Node(&hs[1].node.clone().unwrap())
        );
        // Headroom asked for: b has 900.
        assert_eq!(pick_holder(&hs, "a", 5_000, Some(950)), Pick::Nowhere);
        assert!(matches!(
            pick_holder(&hs, "a", 5_000, Some(900)),
            Pick::Node(_)
        ));
        // Only a down holder left.
        assert_eq!(pick_holder(&hs[2..], "a", 5_000, None), Pick::AllDown);
        assert_eq!(pick_holder(&hs[..1], "a", 5_000, None), Pick::Nowhere);
        assert_eq!(pick_holder(&[], "a", 5_000, None), Pick::Nowhere);
    }

    #[test]
    fn live_others_are_sorted_by_headroom_and_exclude_me_and_the_down() {
        let view = PoolView {
            nodes: vec![
                node("a", 10, 0, 1_000),
                node("b", 10, 0, 5_000),
                node("c", 10, 0, 9_000),
                node("d", 60_000, 0, 9_000),
            ],
            read_at: Instant::now(),
            catalog_reachable: true,
            catalog_error: None,
        };
        let ids: Vec<&str> = view
            .live_others("c", 5_000, Instant::now())
            .iter()
            .map(|n| n.node_id.as_str())
            .collect();
        assert_eq!(ids, ["b", "a"]);
    }

    #[test]
    fn writes_are_refused_while_the_catalog_fails_or_is_silent() {
        let now = Instant::now();
        let mut view = PoolView {
            nodes: Vec::new(),
            read_at: now,
            catalog_reachable: true,
            catalog_error: None,
        };
        assert_eq!(view.write_refusal(5_000, now), None);
        // Silent for as long as the other nodes take to count this one down.
        let later = now + std::time::Duration::from_millis(5_000);
        let why = view.write_refusal(5_000, later).unwrap();
        assert!(why.starts_with("catalog unreachable"), "{why}");
        view.catalog_reachable = false;
        view.catalog_error = Some("connection refused".into());
        let why = view.write_refusal(5_000, now).unwrap();
        assert!(why.contains("connection refused"), "{why}");
    }
}
