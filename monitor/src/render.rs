//! The node table as the HTTP side shows it: `/api/nodes` JSON (also each `/events` message),
//! `/api/matrix` (the delay and bandwidth matrix) and the fleet's Prometheus exposition
//! (`/metrics`: per-node gauges with a `node` label).
//! Pure functions of the shared state; nothing here does I/O.

use std::collections::HashMap;
use std::fmt::Write;

use serde_json::{json, Value};

use crate::events::LevelChange;
use crate::receiver::State;
use crate::status::{process_state_name, PoolSummary};
use crate::table::Node;

/// Level changes each `/api/nodes` answer (and `/events` message) carries, newest first.
pub const EVENTS_SHOWN: usize = 20;

/// Most nodes one `/api/matrix` answer shows (the matrix has their square of cells).
pub const MATRIX_NODES_MAX: usize = 64;

/// `/api/matrix`: for the first `limit` nodes whose id contains `filter` (table order), each
/// node's throughput (the bandwidth row) and the round trips each measured to the others:
/// `rtt_us[i][j]` is what node `i` last measured to node `j` (null: not measured, or `i` is
/// stale). A round trip names its peer by tag; a tag two nodes of the table share is shown
/// for neither.
pub fn matrix_json(s: &State, filter: &str, limit: usize) -> Value {
    let now = s.now_ms();
    let all = s.table.nodes();
    let mut tags: HashMap<u32, u32> = HashMap::with_capacity(all.len());
    for n in &all {
        *tags.entry(n.tag).or_default() += 1;
    }
    let shown: Vec<&Node> = all
        .iter()
        .copied()
        .filter(|n| filter.is_empty() || n.latest.node.contains(filter))
        .take(limit)
        .collect();
    let column: HashMap<u32, usize> = shown
        .iter()
        .enumerate()
        .filter(|(_, n)| tags.get(&n.tag) == Some(&1))
        .map(|(i, n)| (n.tag, i))
        .collect();
    let mut entries = 0usize;
    let rtt_us: Vec<Vec<Option<u32>>> = shown
        .iter()
        .map(|n| {
            let mut row = vec![None; shown.len()];
            if !n.is_stale(now) {
                for r in &n.latest.rtts {
                    if let Some(&j) = column.get(&r.peer) {
                        row[j] = Some(r.rtt_us);
                        entries += 1;
                    }
                }
            }
            row
        })
        .collect();
    let nodes: Vec<Value> = shown
        .iter()
        .map(|n| {
            let last = n.last_sample();
            json!({
                "node": n.latest.node,
                "role": n.latest.role,
                "state": if n.is_stale(now) { "stale" } else { "up" },
                "sent_bps": last.sent_bps,
                "received_bps": last.received_bps,
            })
        })
        .collect();
    json!({"now_ms": now, "total": all.len(), "entries": entries, "nodes": nodes, "rtt_us": rtt_us})
}

/// `/api/events`: the fleet's latest `limit` level changes, newest first.
pub fn events_json(s: &State, limit: usize) -> Value {
    let now = s.now_ms();
    let events: Vec<Value> = s
        .table
        .recent_events(limit)
        .map(|c| change_json(c, now))
        .collect();
    json!({"now_ms": now, "events": events})
}

fn change_json(c: &LevelChange, now: u64) -> Value {
    json!({
        "at_ms": c.at_ms,
        "age_ms": now.saturating_sub(c.at_ms),
        "node": c.node,
        "from": c.from,
        "to": c.to,
    })
}

/// `/api/nodes`: every node (at most `limit`, those whose id contains `filter`), the intake
/// counts, the latest [`EVENTS_SHOWN`] level changes, and the dashboard's render reports.
pub fn nodes_json(s: &State, filter: &str, limit: usize) -> Value {
    let now = s.now_ms();
    let all = s.table.nodes();
    let matching: Vec<&&Node> = all
        .iter()
        .filter(|n| filter.is_empty() || n.latest.node.contains(filter))
        .collect();
    let nodes: Vec<Value> = matching
        .iter()
        .take(limit)
        .map(|n| node_json(n, now))
        .collect();
    let stale = all.iter().filter(|n| n.is_stale(now)).count();
    json!({
        "now_ms": now,
        "total": all.len(),
        "matching": matching.len(),
        "stale": stale,
        "authenticated": s.authenticated,
        "datagrams": s.table.counts(),
        "recv_errors": s.recv_errors,
        "lost_in_kernel": s.lost_in_kernel,
        "peer_list_send_errors": s.send_errors,
        "dashboard": {"renders": s.renders, "rendered_nodes": s.rendered},
        "events": events_json(s, EVENTS_SHOWN)["events"],
        "nodes": nodes,
    })
}

fn node_json(n: &Node, now: u64) -> Value {
    let l = &n.latest;
    let last = n.last_sample();
    let processes: Vec<Value> = l
        .processes
        .iter()
        .map(|p| {
            json!({"name": p.name, "state": process_state_name(p.state), "restarts": p.restarts, "pid": p.pid})
        })
        .collect();
    json!({
        "node": l.node,
        "role": l.role,
        "state": if n.is_stale(now) { "stale" } else { "up" },
        "level": l.level,
        "version": l.version,
        "pid": l.pid,
        "uptime_ms": l.uptime_ms,
        "seq": l.seq,
        "interval_ms": l.interval_ms,
        "age_ms": now.saturating_sub(n.last_seen_ms),
        "first_seen_ms": n.first_seen_ms,
        "restarts_seen": n.restarts_seen,
        "config_generation": l.config_generation,
        "active_streams": l.active_streams,
        "sent_bps": last.sent_bps,
        "requests_per_sec": last.requests_per_sec,
        "sent_bytes_total": l.sent_bytes_total,
        "received_bytes_total": l.received_bytes_total,
        "requests_total": l.requests_total,
        "errors_total": l.errors_total,
        "warning_events_total": l.warning_events_total,
        "critical_events_total": l.critical_events_total,
        "accounts": l.accounts,
        "streams": l.streams,
        "processes": processes,
        "pool": l.pool,
        "history": n.history,
        "events": n.events.latest(usize::MAX).map(|c| change_json(c, now)).collect::<Vec<_>>(),
    })
}

/// `/metrics`: the fleet in the Prometheus text format.
pub fn prometheus(s: &State) -> String {
    let now = s.now_ms();
    let nodes = s.table.nodes();
    let mut out = String::with_capacity(256 + nodes.len() * 1024);
    let c = s.table.counts();
    family(
        &mut out,
        "oasis_monitor_nodes",
        "gauge",
        "Nodes in the table, by state",
    );
    let stale = nodes.iter().filter(|n| n.is_stale(now)).count();
    let _ = writeln!(
        out,
        "oasis_monitor_nodes{{state=\"up\"}} {}",
        nodes.len() - stale
    );
    let _ = writeln!(out, "oasis_monitor_nodes{{state=\"stale\"}} {stale}");
    family(
        &mut out,
        "oasis_monitor_datagrams",
        "counter",
        "Status datagrams taken or dropped, by outcome",
    );
    for (outcome, v) in [
        ("accepted", c.accepted),
        ("oversized", c.oversized),
        ("truncated", c.truncated),
        ("malformed", c.malformed),
        ("unauthenticated", c.unauthenticated),
        ("replayed", c.replayed),
        ("table_full", c.table_full),
    ] {
        let _ = writeln!(
            out,
            "oasis_monitor_datagrams_total{{outcome=\"{outcome}\"}} {v}"
        );
    }
    family(
        &mut out,
        "oasis_monitor_datagrams_lost",
        "counter",
        "Status datagrams the kernel dropped before the monitor read them (full socket buffer)",
    );
    let _ = writeln!(
        out,
        "oasis_monitor_datagrams_lost_total {}",
        s.lost_in_kernel
    );
    type Get = fn(&Node, u64) -> f64;
    let gauges: [(&str, &str, Get); 10] = [
        (
            "oasis_node_up",
            "1 while the node reports, 0 once stale",
            |n, now| f64::from(u8::from(!n.is_stale(now))),
        ),
        (
            "oasis_node_level",
            "Resource Manager level: 0 normal, 1 warning, 2 critical",
            |n, _| f64::from(n.latest.level as u8),
        ),
        (
            "oasis_node_uptime_seconds",
            "Seconds since the node's process started",
            |n, _| n.latest.uptime_ms as f64 / 1000.0,
        ),
        (
            "oasis_node_active_streams",
            "Responses with a body being sent",
            |n, _| f64::from(n.latest.active_streams),
        ),
        (
            "oasis_node_sent_bits_per_second",
            "Bits sent per second over the last interval",
            |n, _| n.last_sample().sent_bps,
        ),
        (
            "oasis_node_requests_per_second",
            "Requests per second over the last interval",
            |n, _| n.last_sample().requests_per_sec,
        ),
        (
            "oasis_node_errors",
            "Errors so far (5xx answers; unplanned exits)",
            |n, _| n.latest.errors_total as f64,
        ),
        (
            "oasis_node_critical_events",
            "Critical resource events so far",
            |n, _| n.latest.critical_events_total as f64,
        ),
        (
            "oasis_node_memory_bytes",
            "Memory account in use",
            |n, _| n.last_sample().memory_bytes as f64,
        ),
        (
            "oasis_node_config_generation",
            "Configuration generation in force",
            |n, _| n.latest.config_generation as f64,
        ),
    ];
    for (name, help, get) in gauges {
        family(&mut out, name, "gauge", help);
        for n in &nodes {
            let _ = writeln!(
                out,
                "{name}{{node=\"{}\",role=\"{}\"}} {}",
                escape(&n.latest.node),
                n.latest.role.as_str(),
                get(n, now)
            );
        }
    }
    pool_gauges(&mut out, &nodes);
    out
}

/// The pool gauges, for the nodes that report a pool (none when no node is in one).
fn pool_gauges(out: &mut String, nodes: &[&Node]) {
    type GetPool = fn(&PoolSummary) -> Option<f64>;
    let gauges: [(&str, &str, GetPool); 4] = [
        (
            "oasis_node_pool_catalog_reachable",
            "1 while the pool node's heartbeats reach the shared catalog (it takes writes)",
            |p| Some(f64::from(u8::from(p.catalog_reachable))),
        ),
        (
            "oasis_node_pool_nodes_live",
            "Pool nodes this node counts live, itself included",
            |p| Some(f64::from(p.nodes_live)),
        ),
        (
            "oasis_node_pool_under_replicated",
            "Objects with fewer than the pool's replica count on live nodes, as last counted",
            |p| p.under_replicated.map(f64::from),
        ),
        (
            "oasis_node_pool_replication_queued",
            "Copies and deletes queued on this node for other nodes",
            |p| Some(f64::from(p.replication_queued)),
        ),
    ];
    let pooled: Vec<(&Node, &PoolSummary)> = nodes
        .iter()
        .filter_map(|n| n.latest.pool.as_ref().map(|p| (*n, p)))
        .collect();
    if pooled.is_empty() {
        return;
    }
    for (name, help, get) in gauges {
        family(out, name, "gauge", help);
        for (n, p) in &pooled {
            if let Some(v) = get(p) {
                let _ = writeln!(out, "{name}{{node=\"{}\"}} {v}", escape(&n.latest.node));
            }
        }
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value as the text format wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{Role, Status};
    use crate::table::NodeTable;

    #[test]
    fn both_views_show_a_node_and_the_counts() {
        let mut s = State {
            table: NodeTable::new(4, 4),
            started: std::time::Instant::now(),
            rendered: Default::default(),
            renders: 0,
            authenticated: true,
            recv_errors: 0,
            send_errors: 0,
            lost_in_kernel: 3,
        };
        let mut st = Status::new("a\"b", Role::Logd);
        st.seq = 1;
        st.level = crate::status::Level::Critical;
        s.table.accept(st, 0).unwrap();
        s.table.reject(crate::status::Rejection::Malformed);
        let j = nodes_json(&s, "", 10);
        assert_eq!(j["nodes"][0]["node"], "a\"b");
        assert_eq!(j["nodes"][0]["role"], "logd");
        assert_eq!(j["datagrams"]["malformed"], 1);
        assert_eq!(j["events"][0]["to"], "critical");
        assert_eq!(j["nodes"][0]["events"][0]["from"], "normal");
        assert_eq!(events_json(&s, 0)["events"].as_array().unwrap().len(), 0);
        assert_eq!(events_json(&s, 5)["events"][0]["node"], "a\"b");
        assert_eq!(
            nodes_json(&s, "zzz", 10)["nodes"].as_array().unwrap().len(),
            0
        );
        // Round trips: b measured a; a's entry names an unknown tag and is left out.
        let mut b = Status::new("b", Role::Serve);
        b.seq = 1;
        b.rtts = vec![crate::status::Rtt {
            peer: crate::status::node_tag("a\"b"),
            rtt_us: 250,
        }];
        s.table.accept(b, 0).unwrap();
        let mut a = Status::new("a\"b", Role::Logd);
        a.seq = 2;
        a.rtts = vec![crate::status::Rtt {
            peer: 12345,
            rtt_us: 9,
        }];
        s.table.accept(a, 0).unwrap();
        let mx = matrix_json(&s, "", 10);
        assert_eq!(mx["nodes"][0]["node"], "b", "serve before logd");
        assert_eq!(mx["rtt_us"][0][1], 250);
        assert_eq!(mx["rtt_us"][1], json!([null, null]));
        assert_eq!(mx["entries"], 1);
        assert_eq!(matrix_json(&s, "", 1)["rtt_us"], json!([[null]]));
        let m = prometheus(&s);
        assert!(
            m.contains("oasis_node_up{node=\"a\\\"b\",role=\"logd\"} 1"),
            "{m}"
        );
        assert!(
            m.contains("oasis_monitor_datagrams_total{outcome=\"malformed\"} 1"),
            "{m}"
        );
        assert!(m.contains("oasis_monitor_datagrams_lost_total 3\n"), "{m}");
        assert_eq!(nodes_json(&s, "", 10)["lost_in_kernel"], 3);
    }
}
