//! Benchmark of a pool node's redirect decision: what `locate` does for a GET of an object held
//! elsewhere once the catalog has answered with the object's holders.
//!
//! Group `pool_redirect_decision`: `pick_holder` (skip this node, keep the live holders with an advertised URL, pick
//! the one with most bandwidth headroom, ties by connections then node id; with
//! `need_bps`, only holders with that much headroom, the overloaded-here path) and the copy of
//! the chosen holder's advertised URL that becomes the `Location` base, over holder lists
//! prepared in memory (2 and 3 holders as `replicas` 2 and 3 give, and 16, the most).
//!
//! Group `pool_redirect_lookup`: the catalog's `holders(name)` (the one query `locate` makes per
//! redirected request) followed by the same decision, on a throw-away PostgreSQL cluster on
//! loopback (made as the storage tests make theirs, storage/tests/support/pg.rs; needs Debian's
//! `postgresql`) holding 3 heartbeating nodes, 1,000 objects and 2 copies of each. Loopback,
//! an idle server and one client: a floor for a catalog on another host, which adds its network
//! round trip. Neither group includes parsing the request or writing the 307. The pool's view
//! module is compiled in from src/pool/view.rs, as the server builds it. Timing lives here,
//! never in tests.

#[allow(dead_code)]
#[path = "../src/pool/view.rs"]
mod view;

#[path = "../storage/tests/support/pg.rs"]
mod pg;

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use oasis_storage::catalog_fixtures::meta;
use oasis_storage::{Catalog, Holder, NodeLoad, NodeRecord, PgCatalog, PoolCatalog, ReplicaRecord};
use view::{pick_holder, Pick};

/// `count` live holders of one version, none of them this node, with different headroom.
fn holders(count: u64) -> Vec<Holder> {
    (0..count)
        .map(|i| {
            let node_id = format!("node-{i}");
            Holder {
                replica: ReplicaRecord {
                    name: "videos/2026/clip-1080p.mp4".into(),
                    node_id: node_id.clone(),
                    version_id: 42,
                    size_bytes: 1 << 30,
                    crc32c: 0x1234_5678,
                    created_unix_ms: 1_765_000_000_000,
                    durable_unix_ms: 1_765_000_000_100,
                },
                node: Some(NodeRecord {
                    advertise: format!("http://10.0.0.{i}:8080"),
                    node_id,
                    heartbeat_unix_ms: 1_765_000_000_000,
                    age_ms: 200 + i * 10,
                    load: NodeLoad {
                        connections: 100 + i,
                        bandwidth_reserved_bps: (i * 7919) % 13 * 100_000_000,
                        bandwidth_limit_bps: 10_000_000_000,
                    },
                }),
            }
        })
        .collect()
}

fn locate(hs: &[Holder], need: Option<u64>) -> Option<String> {
    match pick_holder(black_box(hs), black_box("node-me"), 5_000, need) {
        Pick::Node(n) => Some(n.advertise.clone()),
        Pick::AllDown | Pick::Nowhere => None,
    }
}

fn bench_decision(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool_redirect_decision");
    for count in [2u64, 3, 16] {
        let hs = holders(count);
        assert!(locate(&hs, None).is_some());
        group.bench_function(format!("{count}_holders"), |b| {
            b.iter(|| black_box(locate(&hs, None)))
        });
        group.bench_function(format!("{count}_holders_overloaded_here"), |b| {
            b.iter(|| black_box(locate(&hs, Some(1))))
        });
    }
    group.finish();
}

/// Objects in the benchmark's catalog, each held by node-1 and node-2.
const OBJECTS: u64 = 1_000;

fn bench_lookup(c: &mut Criterion) {
    let cluster = pg::shared();
    let url = cluster.create_database();
    let mut nodes: Vec<PgCatalog> = (1..=3)
        .map(|i| PgCatalog::open(&url, &format!("node-{i}")).expect("catalog opens"))
        .collect();
    for (i, node) in nodes.iter_mut().enumerate() {
        let load = NodeLoad {
            connections: 10,
            bandwidth_reserved_bps: 1_000_000 * i as u64,
            bandwidth_limit_bps: 10_000_000_000,
        };
        node.heartbeat(&format!("http://10.0.0.{i}:8080"), &load)
            .expect("heartbeat");
    }
    let ids = nodes[0].reserve_ids(OBJECTS).expect("ids");
    for id in ids {
        let m = meta(id, &format!("videos/clip-{id}.mp4"));
        nodes[0].insert_or_replace(&m).expect("commit on node-1");
        nodes[1]
            .record_replica(&ReplicaRecord::of(&m, "node-2", 2))
            .expect("copy on node-2");
    }
    // Node-1's objects (a PostgreSQL catalog lists the objects of the node it speaks for).
    let all: Vec<String> = nodes[0]
        .load_all()
        .expect("names")
        .into_iter()
        .map(|m| m.name)
        .collect();
    assert_eq!(all.len() as u64, OBJECTS);
    let me = &mut nodes[2];
    assert_eq!(me.holders(&all[0]).expect("holders").len(), 2);
    let mut group = c.benchmark_group("pool_redirect_lookup");
    let mut k = 0usize;
    group.bench_function("holders_query_and_decision_2_holders", |b| {
        b.iter(|| {
            k = (k + 1) % all.len();
            let hs = me.holders(&all[k]).expect("holders");
            black_box(locate(&hs, None))
        })
    });
    group.finish();
}

criterion_group!(benches, bench_decision, bench_lookup);
criterion_main!(benches);
