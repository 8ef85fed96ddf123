//! Pool cases on three `oasis serve` nodes and one throw-away PostgreSQL: a node cut off from
//! the catalog (a TCP proxy in front of PostgreSQL, cut and restored) serves what it holds,
//! refuses writes with 503 and rejoins, and `oasis monitor` shows its pool state throughout; ffmpeg plays an HLS package through a node that holds
//! none of it; a replacement uploaded while the first version is being copied never serves a
//! mix of versions, and the pool settles on the new one. No timing assertions: every wait polls
//! with a generous deadline.

mod pool_support;
mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use pool_support::*;
use support::monitor::Monitor;
use support::players::{ffmpeg_decoded_frames, need};
use support::{header, path_str, TOKEN};

fn api_pool(node: &Node) -> serde_json::Value {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (status, _, body) = curl(&["-H", &auth, &node.server.url("/api/pool")]);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    serde_json::from_slice(&body).expect("/api/pool is JSON")
}

/// The pool block the monitor shows for `pool-node-<n>` (`None`: not reported yet).
fn pool_of_node(nodes: &serde_json::Value, n: u32) -> Option<&serde_json::Value> {
    let id = format!("pool-node-{n}");
    nodes["nodes"]
        .as_array()?
        .iter()
        .find(|x| x["node"] == id.as_str())
        .map(|x| &x["pool"])
        .filter(|p| !p.is_null())
}

/// `(status, head, body)` of a PUT of `file` to `node` (not polled).
fn put(node: &Node, name: &str, file: &std::path::Path) -> (u16, String, Vec<u8>) {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let url = node.server.url(&format!("/media/{name}"));
    curl(&["-H", &auth, "-T", path_str(file), &url])
}

#[test]
fn a_node_cut_off_from_the_catalog_serves_what_it_holds_refuses_writes_and_rejoins() {
    let cluster = pg::shared();
    let url = cluster.create_database();
    let proxy = CatalogProxy::start(cluster.port);
    let through_proxy = proxy.url_for(&url, cluster.port);
    assert_ne!(through_proxy, url);
    // Three copies of everything: node 3 (behind the proxy) holds each object. Every node
    // reports to one monitor.
    let monitor = Monitor::start(None);
    let reporting = |n: u32| {
        format!(
            "[monitor]\ntargets = [\"{}\"]\ninterval_ms = 200\nnode = \"pool-node-{n}\"\n",
            monitor.udp
        )
    };
    let nodes = vec![
        start_node_extra(&url, 1, BANDWIDTH_BPS, 3, "redirect", &reporting(1)),
        start_node_extra(&url, 2, BANDWIDTH_BPS, 3, "redirect", &reporting(2)),
        start_node_extra(
            &through_proxy,
            3,
            BANDWIDTH_BPS,
            3,
            "redirect",
            &reporting(3),
        ),
    ];
    wait_all_live(&nodes);
    let work = tempfile::tempdir().unwrap();
    let (body, file) = content(work.path(), "held.mp4", 2 << 20, 11);
    let (_, small) = content(work.path(), "small.mp4", 64 << 10, 12);
    assert_eq!(upload(&nodes[0], "held.mp4", &file), 201);
    poll_or("three holders of held.mp4", &nodes, &mut || {
        holders(&cluster, &url, "held.mp4").len() == 3
    });
    assert_eq!(api_pool(&nodes[2])["catalog"]["state"], "reachable");
    // The monitor shows every node's pool: all three live, the catalog reachable, nothing
    // under-replicated once the copies are made.
    monitor.wait(
        "three pool nodes, all live, nothing under-replicated",
        |m| {
            (1..=3).all(|n| {
                pool_of_node(m, n).is_some_and(|p| {
                    p["nodes_live"] == 3
                        && p["nodes_total"] == 3
                        && p["catalog_reachable"] == true
                        && p["under_replicated"] == 0
                })
            })
        },
    );

    proxy.cut();
    poll_or("node 3 sees its catalog unreachable", &nodes, &mut || {
        api_pool(&nodes[2])["catalog"]["state"] == "unreachable"
    });
    monitor.wait("node 3 reported cut off from its catalog", |m| {
        pool_of_node(m, 3).is_some_and(|p| p["catalog_reachable"] == false)
            && pool_of_node(m, 1).is_some_and(|p| p["catalog_reachable"] == true)
    });
    let metrics = monitor.get("/metrics");
    assert!(
        metrics.contains("oasis_node_pool_catalog_reachable{node=\"pool-node-3\"} 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains("oasis_node_pool_catalog_reachable{node=\"pool-node-1\"} 1"),
        "{metrics}"
    );
    let status = api_pool(&nodes[2]);
    assert_eq!(status["catalog_reachable"], false, "{status}");
    assert_eq!(status["catalog"]["writes"], "refused (503)", "{status}");
    // Reads of what it holds go on, byte-exact.
    for _ in 0..3 {
        let (code, _, got) = curl(&[&nodes[2].server.url("/media/held.mp4")]);
        assert_eq!(code, 200);
        assert!(got == body, "node 3's copy differs while cut off");
    }
    let (code, _, got) = curl(&["-r", "100-199", &nodes[2].server.url("/media/held.mp4")]);
    assert_eq!(code, 206);
    assert!(
        got == body[100..200],
        "node 3's range differs while cut off"
    );
    // Writes are refused at once: 503, Retry-After, and the cause in JSON.
    let (code, head, answer) = put(&nodes[2], "during.mp4", &small);
    assert_eq!(code, 503, "{head}{}", String::from_utf8_lossy(&answer));
    assert!(header(&head, "retry-after").is_some(), "{head}");
    let why: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON body");
    assert_eq!(why["cause"], "catalog_unreachable", "{why}");
    assert!(
        why["error"]
            .as_str()
            .unwrap()
            .contains("catalog unreachable"),
        "{why}"
    );
    let auth = format!("Authorization: Bearer {TOKEN}");
    let target = nodes[2].server.url("/media/held.mp4");
    let (code, head, answer) = curl(&["-X", "DELETE", "-H", &auth, &target]);
    assert_eq!(code, 503, "{head}{}", String::from_utf8_lossy(&answer));
    assert!(header(&head, "retry-after").is_some(), "{head}");
    let prefix = nodes[2].server.url("/api/objects?prefix=held");
    let (code, _, _) = curl(&["-X", "DELETE", "-H", &auth, &prefix]);
    assert_eq!(code, 503);
    assert_eq!(held_locally(&nodes[2], "held.mp4"), 200);
    assert_eq!(held_locally(&nodes[2], "during.mp4"), 404);
    // The others, on the catalog, take writes; node 3 gets no copy meanwhile (it is down).
    assert_eq!(upload(&nodes[0], "meanwhile.mp4", &small), 201);

    proxy.restore();
    poll_or("node 3 takes uploads again", &nodes, &mut || {
        put(&nodes[2], "after.mp4", &small).0 == 201
    });
    assert_eq!(api_pool(&nodes[2])["catalog"]["state"], "reachable");
    monitor.wait("node 3 reported back on its catalog", |m| {
        pool_of_node(m, 3).is_some_and(|p| p["catalog_reachable"] == true)
    });
    // Replication resumes both ways: node 3's upload reaches the others, and the object
    // uploaded while it was away is restored on it.
    poll_or("three holders of after.mp4", &nodes, &mut || {
        holders(&cluster, &url, "after.mp4").len() == 3
    });
    poll_or("three holders of meanwhile.mp4", &nodes, &mut || {
        holders(&cluster, &url, "meanwhile.mp4").len() == 3
    });
    poll_or(
        "node 1 holds after.mp4, node 3 meanwhile.mp4",
        &nodes,
        &mut || {
            held_locally(&nodes[0], "after.mp4") == 200
                && held_locally(&nodes[2], "meanwhile.mp4") == 200
        },
    );
    let log = nodes[2].server.server_log();
    assert!(
        log.contains("the catalog answers heartbeats again"),
        "{log}"
    );
}

#[test]
fn ffmpeg_plays_an_hls_package_through_a_node_that_holds_none_of_it() {
    need("ffmpeg", "ffmpeg");
    let cluster = pg::shared();
    let url = cluster.create_database();
    // One copy of each object: node 3 never holds any of the package.
    let nodes = pool_of(&url, 3, 1);
    let work = tempfile::tempdir().unwrap();
    let (pkg, segments) = put_hls_package(work.path(), &[], &nodes[0].server.url(""));
    for name in std::iter::once("index.m3u8").chain(segments.iter().map(String::as_str)) {
        let name = format!("show/{name}");
        assert_eq!(holders(&cluster, &url, &name), vec!["node-1".to_string()]);
        assert_eq!(held_locally(&nodes[2], &name), 404, "{name}");
    }
    // Node 3 redirects the playlist; its segments' relative URLs resolve against the
    // redirected URL (node 1's), where they are held.
    let (code, head, _) = curl(&[&nodes[2].server.url("/media/show/index.m3u8")]);
    assert_eq!(code, 307, "{head}");
    let location = header(&head, "location").unwrap().to_string();
    assert_eq!(location, nodes[0].server.url("/media/show/index.m3u8"));
    let base = location.trim_end_matches("index.m3u8");
    for seg in &segments {
        let (code, _, got) = curl(&[&format!("{base}{seg}")]);
        assert_eq!(code, 200, "{base}{seg}");
        assert!(
            got == std::fs::read(pkg.join(seg)).unwrap(),
            "{seg} differs"
        );
    }
    let direct = ffmpeg_decoded_frames(&nodes[0].server.url("/media/show/index.m3u8"));
    let through = ffmpeg_decoded_frames(&nodes[2].server.url("/media/show/index.m3u8"));
    assert!(direct > 0);
    assert_eq!(through, direct, "frames played through node 3 and directly");
}

#[test]
fn a_replacement_during_replication_never_serves_a_mix_of_versions() {
    let cluster = pg::shared();
    let url = cluster.create_database();
    let nodes = pool_of(&url, 3, 3);
    let work = tempfile::tempdir().unwrap();
    let (v1, f1) = content(work.path(), "v1.mp4", 24 << 20, 21);
    let (v2, f2) = content(work.path(), "v2.mp4", 24 << 20, 22);
    let (h1, h2) = (sha(&v1), sha(&v2));
    assert_ne!(h1, h2);

    assert_eq!(upload(&nodes[0], "swap.mp4", &f1), 201);
    // Readers on every node, following redirects, from now until the pool has settled.
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let target = n.server.url("/media/swap.mp4");
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut seen: Seen = Vec::new();
                while !stop.load(Ordering::Acquire) {
                    let (code, _, got) = curl(&["-L", &target]);
                    seen.push((i, code, sha(&got)));
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                seen
            })
        })
        .collect();
    // A watcher of the catalog's rows of the name: `(version id, crc32c)` of each row seen.
    let watcher = {
        let (cluster, url, stop) = (Arc::clone(&cluster), url.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut rows = std::collections::BTreeSet::new();
            while !stop.load(Ordering::Acquire) {
                let sql = "SELECT version_id, crc32c FROM pool_replicas WHERE name = 'swap.mp4'";
                for line in cluster.psql(&url, sql).lines() {
                    if let Some((v, crc)) = line.split_once('|') {
                        rows.insert((v.parse::<u64>().unwrap(), crc.parse::<u32>().unwrap()));
                    }
                }
            }
            rows
        })
    };
    // The replacement, while v1's copies are on their way.
    // A replacement answers 200 (201 is for a new name).
    assert_eq!(upload(&nodes[0], "swap.mp4", &f2), 200);
    poll_or("every node holds v2", &nodes, &mut || {
        nodes.iter().all(|n| {
            let (code, _, got) = curl(&[
                "-H",
                "X-Oasis-Pool: probe",
                &n.server.url("/media/swap.mp4"),
            ]);
            code == 200 && sha(&got) == h2
        })
    });
    poll_or("three holders of one version", &nodes, &mut || {
        let versions = cluster.psql(
            &url,
            "SELECT count(DISTINCT version_id) FROM pool_replicas WHERE name = 'swap.mp4'",
        );
        holders(&cluster, &url, "swap.mp4").len() == 3 && versions.trim() == "1"
    });
    // A last read on each node after the pool settled.
    std::thread::sleep(std::time::Duration::from_millis(200));
    stop.store(true, Ordering::Release);
    let seen: Seen = readers
        .into_iter()
        .flat_map(|r| r.join().expect("a reader panicked"))
        .collect();
    for (i, n) in nodes.iter().enumerate() {
        assert!(seen.iter().any(|s| s.0 == i), "no read on {}", n.id);
        let (code, _, got) = curl(&["-L", &n.server.url("/media/swap.mp4")]);
        assert_eq!(code, 200);
        assert!(sha(&got) == h2, "{} serves something else than v2", n.id);
    }
    // Only the origin's two version ids were ever listed, each naming one content: no row
    // showed a copy under an id of its own, nor a version id with other bytes.
    let rows = watcher.join().expect("the watcher panicked");
    let crcs: Vec<u32> = rows.iter().map(|r| r.1).collect();
    let ids: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.0).collect();
    assert!(ids.len() <= 2 && ids.len() == rows.len(), "{rows:?}");
    let (c1, c2) = (crc32c::crc32c(&v1), crc32c::crc32c(&v2));
    assert!(crcs.iter().all(|c| *c == c1 || *c == c2), "{rows:?}");
    assert_eq!(rows.last().map(|r| r.1), Some(c2), "{rows:?}");
    assert_whole_versions(&seen, h1, h2, |i| nodes[i].id.clone());
}
