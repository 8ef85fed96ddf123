//! The pool in a simulated network: three `oasis serve` nodes, each in a network namespace of
//! its own, one PostgreSQL in another, and curl in a client namespace, joined by veth pairs to
//! bridges, every link rate-limited by `tc` `tbf` (tests/pool_support/netns.rs). Cases: an
//! upload to node 1 is read byte-exact, Range too, from every node, node 3 included, in
//! `redirect` and in `proxy` mode, and the bytes crossed the rate-limited links; node 1 killed
//! (-9), the survivors restore the replica count and serve the object; a node whose link to
//! PostgreSQL is cut serves what it holds, refuses writes with 503 and `Retry-After`, and takes
//! writes again once the link is back; ffmpeg in the client's namespace plays an HLS package
//! through a proxying node that holds none of it; a replacement uploaded while the first
//! version's copies cross the rate-limited links never serves a mix of versions, and the pool
//! settles on the new one; a test that panics leaves no namespace
//! behind, and a crashed run's are removed by the next. Needs root and iproute2: without them
//! the tests fail saying so. No timing assertions: every wait polls with a generous deadline.

mod pool_support;
mod support;

use pool_support::netns::{self, NetPool};
use pool_support::*;
use support::players::need;
use support::{header, run, TOKEN};

/// Objects of a few MB: a second or less on each 50 Mbit/s link.
const SIZE: usize = 4 << 20;

/// Upload to node 1, then GET from every node (node 3 included) as a client of `mode` would,
/// whole and in ranges, byte-exact.
fn upload_on_one_read_on_all(tag: &str, mode: &str) {
    let pool = NetPool::start(tag, 3, 2, mode);
    let work = tempfile::tempdir().unwrap();
    let (body, file) = content(work.path(), "clip.mp4", SIZE, 31);
    let sent_before = pool.net.node_sent_bytes(1);
    let (status, head, _) = pool.put(0, "show/clip.mp4", &file);
    assert_eq!(status, 201, "{head}");
    pool.poll("two holders of show/clip.mp4", || {
        pool.holders("show/clip.mp4").len() == 2
    });
    let held = pool.holders("show/clip.mp4");
    assert!(held.contains(&"node-1".to_string()), "{held:?}");
    let bare = (0..3).find(|i| !held.contains(&pool.nodes[*i].id)).unwrap();
    assert_ne!(bare, 0);
    assert_eq!(pool.held(bare, "show/clip.mp4"), 404);
    // The copy left node 1 through its rate-limited link.
    let sent = pool.net.node_sent_bytes(1) - sent_before;
    assert!(sent >= SIZE as u64, "node 1 sent {sent} bytes");

    // The node holding nothing: a 307 to a holder (redirect) or the bytes itself (proxy).
    let (status, head, _) = pool.get(bare, "/media/show/clip.mp4", &["-r", "0-0"]);
    match mode {
        "redirect" => {
            assert_eq!(status, 307, "{head}");
            let location = header(&head, "location").unwrap();
            assert!(location.starts_with("http://10.231.0.1"), "{location}");
        }
        _ => {
            assert_eq!(status, 206, "{head}");
            assert!(header(&head, "location").is_none(), "{head}");
        }
    }
    let bare_sent = pool.net.node_sent_bytes(bare as u32 + 1);
    for i in [2, bare, 1, 0] {
        let (status, head, got) = pool.get(i, "/media/show/clip.mp4", &["-L"]);
        assert_eq!(status, 200, "node {}: {head}", i + 1);
        assert!(got == body, "node {}: the body differs", i + 1);
        for (from, to) in [
            (1000, 2999),
            (SIZE / 2 - 7, SIZE / 2 + 300_000),
            (SIZE - 10, SIZE - 1),
        ] {
            let range = format!("{from}-{to}");
            let (status, head, got) = pool.get(i, "/media/show/clip.mp4", &["-L", "-r", &range]);
            assert_eq!(status, 206, "node {} range {range}: {head}", i + 1);
            let want = format!("bytes {from}-{to}/{SIZE}");
            assert_eq!(
                header(&head, "content-range"),
                Some(want.as_str()),
                "{head}"
            );
            assert!(
                got == body[from..=to],
                "node {} range {range} differs",
                i + 1
            );
        }
    }
    // In proxy mode the whole object went out through the bare node's own link, twice (node
    // 3 and itself asked); redirected, the client fetched it from a holder.
    let through_bare = pool.net.node_sent_bytes(bare as u32 + 1) - bare_sent;
    if mode == "proxy" {
        assert!(through_bare >= SIZE as u64, "{through_bare}");
    } else {
        assert!(through_bare < SIZE as u64 / 2, "{through_bare}");
    }
    let (status, _, _) = pool.get(bare, "/media/never.mp4", &[]);
    assert_eq!(status, 404);
}

#[test]
fn redirect_mode_serves_node_1_s_upload_from_node_3_byte_exact() {
    upload_on_one_read_on_all("redir", "redirect");
}

#[test]
fn proxy_mode_serves_node_1_s_upload_from_node_3_byte_exact() {
    upload_on_one_read_on_all("proxy", "proxy");
}

#[test]
fn a_killed_holder_s_copies_are_restored_and_served_everywhere() {
    let pool = NetPool::start("kill", 3, 2, "redirect");
    let work = tempfile::tempdir().unwrap();
    let (body, file) = content(work.path(), "r.mp4", SIZE, 33);
    assert_eq!(pool.put(0, "r.mp4", &file).0, 201);
    pool.poll("two holders of r.mp4", || pool.holders("r.mp4").len() == 2);

    // Node 1, the origin and a holder, killed: the one survivor holding nothing gets a copy.
    let pid = pool.nodes[0].server.pid().to_string();
    assert!(run("kill", &["-9", &pid]).status.success());
    pool.poll("node 1 down in the survivors' /api/pool", || {
        pool.sees_down(1, "node-1") && pool.sees_down(2, "node-1")
    });
    pool.poll("both survivors hold r.mp4", || {
        pool.held(1, "r.mp4") == 200 && pool.held(2, "r.mp4") == 200
    });
    pool.poll("two live holders of r.mp4 in the catalog", || {
        let held = pool.holders("r.mp4");
        held.contains(&"node-2".to_string()) && held.contains(&"node-3".to_string())
    });
    let versions = pool.cluster.psql(
        &pool.url,
        "SELECT count(DISTINCT version_id) FROM pool_replicas WHERE name = 'r.mp4'",
    );
    assert_eq!(versions.trim(), "1");
    for i in [1, 2] {
        let (status, _, got) = pool.get(i, "/media/r.mp4", &["-H", "X-Oasis-Pool: probe"]);
        assert_eq!(status, 200);
        assert!(got == body, "node {}'s copy differs", i + 1);
        let (status, _, got) = pool.get(i, "/media/r.mp4", &["-L", "-r", "5000-9999"]);
        assert_eq!(status, 206);
        assert!(got == body[5000..10000], "node {}'s range differs", i + 1);
    }
    let status = pool.api_pool(2);
    assert_eq!(status["under_replicated"], 0, "{status}");
}

#[test]
fn a_node_cut_off_from_the_catalog_serves_reads_refuses_writes_and_rejoins() {
    // Three copies of everything: node 3 holds each object.
    let pool = NetPool::start("part", 3, 3, "redirect");
    let work = tempfile::tempdir().unwrap();
    let (body, file) = content(work.path(), "held.mp4", SIZE, 35);
    let (_, small) = content(work.path(), "small.mp4", 64 << 10, 36);
    assert_eq!(pool.put(0, "held.mp4", &file).0, 201);
    pool.poll("three holders of held.mp4", || {
        pool.holders("held.mp4").len() == 3
    });
    assert_eq!(pool.api_pool(2)["catalog"]["state"], "reachable");

    // Node 3's cable to the database network pulled: its packets to PostgreSQL are dropped.
    pool.net.cut_catalog(3);
    // Node 3 answers what needs the catalog only when the silent connection gives up (its 5 s
    // TCP user timeout), unless it already knows the catalog is gone: then it refuses at once
    // without asking. The others count it down after `down_after_ms`; it is asked after that.
    pool.poll("node 3 down in node 1's /api/pool", || {
        pool.sees_down(0, "node-3")
    });
    pool.poll("node 3 sees its catalog unreachable", || {
        pool.api_pool(2)["catalog"]["state"] == "unreachable"
    });
    let status = pool.api_pool(2);
    assert_eq!(status["catalog"]["writes"], "refused (503)", "{status}");
    // Reads of what it holds go on, byte-exact, Range too.
    let (code, _, got) = pool.get(2, "/media/held.mp4", &[]);
    assert_eq!(code, 200);
    assert!(got == body, "node 3's copy differs while cut off");
    let (code, _, got) = pool.get(2, "/media/held.mp4", &["-r", "100-199999"]);
    assert_eq!(code, 206);
    assert!(
        got == body[100..200_000],
        "node 3's range differs while cut off"
    );
    // Writes are refused at once: 503, Retry-After, the cause in JSON.
    let (code, head, answer) = pool.put(2, "during.mp4", &small);
    assert_eq!(code, 503, "{head}{}", String::from_utf8_lossy(&answer));
    assert!(header(&head, "retry-after").is_some(), "{head}");
    let why: serde_json::Value = serde_json::from_slice(&answer).expect("a JSON body");
    assert_eq!(why["cause"], "catalog_unreachable", "{why}");
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (code, head, _) = pool.get(2, "/media/held.mp4", &["-X", "DELETE", "-H", &auth]);
    assert_eq!(code, 503, "{head}");
    assert!(header(&head, "retry-after").is_some(), "{head}");
    assert_eq!(pool.held(2, "held.mp4"), 200);
    assert_eq!(pool.held(2, "during.mp4"), 404);
    // The others, on the catalog, take writes meanwhile. Node 3 cannot ask where that object
    // is: 503 with Retry-After, answered without waiting on the dead connection.
    assert_eq!(pool.put(0, "meanwhile.mp4", &small).0, 201);
    let (code, head, _) = pool.get(2, "/media/meanwhile.mp4", &[]);
    assert_eq!(code, 503, "{head}");
    assert!(header(&head, "retry-after").is_some(), "{head}");

    pool.net.join_catalog(3);
    pool.poll("node 3 takes uploads again", || {
        pool.put(2, "after.mp4", &small).0 == 201
    });
    assert_eq!(pool.api_pool(2)["catalog"]["state"], "reachable");
    // Its upload reaches the others, and what it missed is restored on it.
    pool.poll("three holders of after.mp4 and of meanwhile.mp4", || {
        pool.holders("after.mp4").len() == 3 && pool.holders("meanwhile.mp4").len() == 3
    });
    pool.poll("node 1 holds after.mp4, node 3 meanwhile.mp4", || {
        pool.held(0, "after.mp4") == 200 && pool.held(2, "meanwhile.mp4") == 200
    });
    let (code, _, got) = pool.get(2, "/media/held.mp4", &[]);
    assert_eq!(code, 200);
    assert!(got == body, "node 3's copy differs after rejoining");
}

#[test]
fn ffmpeg_plays_an_hls_package_proxied_by_a_node_that_holds_none_of_it() {
    need("ffmpeg", "ffmpeg");
    // One copy of each object: node 3 never holds any of the package.
    let pool = NetPool::start("hls", 3, 1, "proxy");
    let work = tempfile::tempdir().unwrap();
    // Uploaded with the CLI from the client's namespace.
    let server = pool.nodes[0].server.url("");
    let (pkg, segments) = put_hls_package(work.path(), &pool.net.client(), &server);
    for name in std::iter::once("index.m3u8").chain(segments.iter().map(String::as_str)) {
        let name = format!("show/{name}");
        assert_eq!(pool.holders(&name), vec!["node-1".to_string()]);
        assert_eq!(pool.held(2, &name), 404, "{name}");
    }
    // Node 3 answers the playlist and every segment itself, byte-exact.
    for name in std::iter::once("index.m3u8").chain(segments.iter().map(String::as_str)) {
        let (code, head, got) = pool.get(2, &format!("/media/show/{name}"), &[]);
        assert_eq!(code, 200, "{name}: {head}");
        assert!(header(&head, "location").is_none(), "{head}");
        assert!(
            got == std::fs::read(pkg.join(name)).unwrap(),
            "{name} differs"
        );
    }
    let sent = pool.net.node_sent_bytes(3);
    let direct = pool.played_frames(&pool.nodes[0].server.url("/media/show/index.m3u8"));
    let through = pool.played_frames(&pool.nodes[2].server.url("/media/show/index.m3u8"));
    assert!(direct > 0);
    assert_eq!(through, direct, "frames played through node 3 and directly");
    // What ffmpeg played through node 3 left node 3 on its own rate-limited link.
    let package: u64 = segments
        .iter()
        .map(|s| std::fs::metadata(pkg.join(s)).unwrap().len())
        .sum();
    let through_3 = pool.net.node_sent_bytes(3) - sent;
    assert!(through_3 >= package, "{through_3} < {package}");
}

#[test]
fn the_namespaces_go_when_a_test_panics_and_a_crashed_run_s_are_removed() {
    // A crashed run's namespace of this tag: its process id is above any the kernel gives.
    let pid_max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stale = format!("oasis-clean-{}-sw", pid_max + 1);
    let out = run("ip", &["netns", "add", &stale]);
    assert!(
        out.status.success(),
        "making a namespace needs root and iproute2: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let ours = format!("oasis-clean-{}-", std::process::id());
    let caught = std::panic::catch_unwind(|| {
        let net = netns::Net::new("clean", 2);
        let listed = String::from_utf8_lossy(&run("ip", &["netns", "list"]).stdout).into_owned();
        assert!(!listed.contains(&stale), "{listed}");
        assert_eq!(listed.matches(&ours).count(), 5, "{listed}");
        assert!(net.node_sent_bytes(2) < 1 << 20);
        panic!("a test failing with its network up");
    });
    assert!(caught.is_err());
    let listed = String::from_utf8_lossy(&run("ip", &["netns", "list"]).stdout).into_owned();
    assert!(!listed.contains("oasis-clean-"), "{listed}");
}

#[test]
fn a_replacement_during_replication_never_serves_a_mix_of_versions() {
    use std::sync::atomic::{AtomicBool, Ordering};

    // Three copies of each version: v1's two copies leave node 1 over its 50 Mbit/s link (about
    // 2.7 s), and v2 is uploaded while they are on their way.
    let pool = NetPool::start("swap", 3, 3, "redirect");
    let work = tempfile::tempdir().unwrap();
    let (v1, f1) = content(work.path(), "v1.mp4", 8 << 20, 41);
    let (v2, f2) = content(work.path(), "v2.mp4", 8 << 20, 42);
    let (h1, h2) = (sha(&v1), sha(&v2));
    assert_ne!(h1, h2);
    assert_eq!(pool.put(0, "swap.mp4", &f1).0, 201);

    let stop = AtomicBool::new(false);
    let (seen, rows) = std::thread::scope(|s| {
        // Readers on every node from the client's namespace, following redirects, until the
        // pool has settled: `(node, status, sha)` of each read.
        let readers: Vec<_> = (0..3)
            .map(|i| {
                let (pool, stop) = (&pool, &stop);
                s.spawn(move || {
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Acquire) {
                        let (code, _, got) = pool.get(i, "/media/swap.mp4", &["-L"]);
                        seen.push((i, code, sha(&got)));
                    }
                    seen
                })
            })
            .collect();
        // The catalog's rows of the name: `(version id, crc32c)` of each row ever seen.
        let watcher = {
            let (pool, stop) = (&pool, &stop);
            s.spawn(move || {
                let mut rows = std::collections::BTreeSet::new();
                let sql = "SELECT version_id, crc32c FROM pool_replicas WHERE name = 'swap.mp4'";
                while !stop.load(Ordering::Acquire) {
                    for line in pool.cluster.psql(&pool.url, sql).lines() {
                        if let Some((v, crc)) = line.split_once('|') {
                            rows.insert((v.parse::<u64>().unwrap(), crc.parse::<u32>().unwrap()));
                        }
                    }
                }
                rows
            })
        };
        // The replacement (200: the name exists), while v1's copies cross the network.
        let (code, head, _) = pool.put(0, "swap.mp4", &f2);
        assert_eq!(code, 200, "{head}");
        pool.poll(
            "every node holds v2, the catalog one version on three",
            || {
                let versions = pool.cluster.psql(
                    &pool.url,
                    "SELECT count(DISTINCT version_id) FROM pool_replicas WHERE name = 'swap.mp4'",
                );
                pool.holders("swap.mp4").len() == 3
                    && versions.trim() == "1"
                    && (0..3).all(|i| {
                        let (code, _, got) =
                            pool.get(i, "/media/swap.mp4", &["-H", "X-Oasis-Pool: probe"]);
                        code == 200 && sha(&got) == h2
                    })
            },
        );
        stop.store(true, Ordering::Release);
        let seen: Seen = readers
            .into_iter()
            .flat_map(|r| r.join().expect("a reader panicked"))
            .collect();
        (seen, watcher.join().expect("the watcher panicked"))
    });
    for i in 0..3 {
        assert!(seen.iter().any(|s| s.0 == i), "no read on node {}", i + 1);
        let (code, _, got) = pool.get(i, "/media/swap.mp4", &["-L"]);
        assert_eq!(code, 200);
        assert!(
            sha(&got) == h2,
            "node {} serves something else than v2",
            i + 1
        );
    }
    // Only the origin's two version ids were ever listed, each naming one content.
    let ids: std::collections::BTreeSet<u64> = rows.iter().map(|r| r.0).collect();
    assert!(ids.len() <= 2 && ids.len() == rows.len(), "{rows:?}");
    let (c1, c2) = (crc32c::crc32c(&v1), crc32c::crc32c(&v2));
    assert!(rows.iter().all(|r| r.1 == c1 || r.1 == c2), "{rows:?}");
    assert_eq!(rows.last().map(|r| r.1), Some(c2), "{rows:?}");
    // Every read was v1 or v2 whole, never a mix, never an error.
    assert_whole_versions(&seen, h1, h2, |i| format!("node-{}", i + 1));
}
