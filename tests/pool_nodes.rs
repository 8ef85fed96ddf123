//! Three `oasis serve` nodes on one PostgreSQL catalog (a throw-away cluster), on loopback
//! ports: an upload to node 1 is copied to one more node (replicas = 2) and both are listed as
//! holders; node 3, holding none, redirects GETs (307) to a holder, and following the redirect
//! gives the bytes, Range too; a private object's redirect is a signed link that opens it; a
//! delete on node 1 removes node 2's copy; with its holders killed (-9), node 3 answers 503 with
//! `Retry-After`; `oasis pool status` lists the nodes and their states. A node without the
//! bandwidth for a stream hands it to a holder with headroom (307) instead of refusing it; an
//! upload whose content differs from its `X-Oasis-Crc32c` is refused (422). A copy's node
//! killed: the survivors restore the replica count; deleted while it is away, its copy goes
//! when it returns. In proxy mode the node holding nothing streams the object itself (200,
//! Range, HEAD, 304 passed through), and a holder killed mid-stream cuts the client's
//! connection. No timing
//! assertions: every wait polls with a generous deadline.

mod pool_support;
mod support;

use pool_support::*;
use std::time::Duration;

use support::{header, path_str, run, TOKEN};

#[test]
fn three_nodes_replicate_redirect_and_delete() {
    let (cluster, url, mut nodes) = pool_of_three();
    let work = tempfile::tempdir().unwrap();
    let (body, file) = content(work.path(), "clip.mp4", 3 << 20, 7);

    // Upload to node 1: one more copy appears on node 2 or 3 (the least loaded); the other
    // one holds nothing and redirects below.
    assert_eq!(upload(&nodes[0], "show/clip.mp4", &file), 201);
    poll_or(
        "two holders of show/clip.mp4 in the catalog",
        &nodes,
        &mut || holders(&cluster, &url, "show/clip.mp4").len() == 2,
    );
    let held = holders(&cluster, &url, "show/clip.mp4");
    assert!(held.contains(&"node-1".to_string()), "{held:?}");
    let copy = if held.contains(&"node-2".to_string()) {
        1
    } else {
        2
    };
    let bare = 3 - copy; // index of the node holding nothing (1 or 2, never node 1)
    assert_eq!(held_locally(&nodes[copy], "show/clip.mp4"), 200);
    assert_eq!(held_locally(&nodes[bare], "show/clip.mp4"), 404);
    // One version: both replica rows carry node 1's version id.
    let versions = cluster.psql(
        &url,
        "SELECT count(DISTINCT version_id) FROM pool_replicas WHERE name = 'show/clip.mp4'",
    );
    assert_eq!(versions.trim(), "1");

    // The node holding nothing redirects to a holder, query kept; following it gives the bytes.
    let direct = nodes[bare].server.url("/media/show/clip.mp4?x=1");
    let (status, head, _) = curl(&[&direct]);
    assert_eq!(status, 307, "{head}");
    let location = header(&head, "location").unwrap().to_string();
    assert!(location.ends_with("/media/show/clip.mp4?x=1"), "{location}");
    assert!(
        location.starts_with(&nodes[0].server.url(""))
            || location.starts_with(&nodes[copy].server.url("")),
        "{location}"
    );
    let (status, _, got) = curl(&["-L", &direct]);
    assert_eq!(status, 200);
    assert!(got == body, "the redirected body differs");
    let (status, _, got) = curl(&["-L", "-r", "1000-2999", &direct]);
    assert_eq!(status, 206);
    assert!(got == body[1000..3000], "the redirected range differs");
    let (status, _, _) = curl(&[&nodes[bare].server.url("/media/never.mp4")]);
    assert_eq!(status, 404);

    // A private object: the redirect is a signed link the holder honours.
    assert_eq!(upload(&nodes[0], "private/p.mp4", &file), 201);
    poll("the private object's copy", || {
        holders(&cluster, &url, "private/p.mp4").len() == 2
    });
    let third = if holders(&cluster, &url, "private/p.mp4").contains(&"node-2".to_string()) {
        2
    } else {
        1
    };
    // Without credentials it is refused here as on any node; with them the redirect carries a
    // signed link, which opens it on the holder with no credentials.
    let private = nodes[third].server.url("/media/private/p.mp4");
    assert_eq!(curl(&[&private]).0, 401);
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (status, head, _) = curl(&["-H", &auth, &private]);
    assert_eq!(status, 307, "{head}");
    let location = header(&head, "location").unwrap().to_string();
    assert!(location.contains("/s/"), "{location}");
    let (status, _, got) = curl(&[&location]);
    assert_eq!(status, 200);
    assert!(got == body, "the signed redirect's body differs");

    // `oasis pool status` lists the three nodes, live.
    let out = run(
        support::oasis_bin(),
        &[
            "pool",
            "status",
            "--server",
            &nodes[2].server.url(""),
            "--token",
            TOKEN,
        ],
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for n in &nodes {
        assert!(text.contains(&n.id), "{text}");
    }
    assert_eq!(text.matches(" live ").count(), 3, "{text}");
    assert!(text.contains("objects under-replicated: 0"), "{text}");

    // A delete on node 1 removes the other copy too.
    delete_and_wait(&nodes[0], &nodes[copy], "show/clip.mp4");
    assert_eq!(
        holders(&cluster, &url, "show/clip.mp4"),
        Vec::<String>::new()
    );
    let (status, _, _) = curl(&[&nodes[bare].server.url("/media/show/clip.mp4")]);
    assert_eq!(status, 404);

    // Both holders of the private object killed: the bare node says 503, try again later.
    let bare_node = nodes.remove(bare);
    for n in &mut nodes {
        let pid = n.server.pid().to_string();
        assert!(run("kill", &["-9", &pid]).status.success());
    }
    poll("503 once the holders are down", || {
        let (status, head, _) = curl(&["-H", &auth, &bare_node.server.url("/media/private/p.mp4")]);
        status == 503 && header(&head, "retry-after").is_some()
    });
}

#[test]
fn an_overloaded_holder_hands_the_viewer_on_and_a_wrong_checksum_is_refused() {
    let cluster = pg::shared();
    let url = cluster.create_database();
    // Node 1 can reserve almost no bandwidth: every stream is refused there (503 alone).
    let starved = start_node_with(&url, 1, 1_000);
    let roomy = start_node(&url, 2);
    let work = tempfile::tempdir().unwrap();
    let (body, file) = content(work.path(), "a.mp4", 1 << 20, 3);
    let auth = format!("Authorization: Bearer {TOKEN}");

    // A wrong CRC-32C is refused and nothing is stored; the right one is taken.
    let crc = format!("X-Oasis-Crc32c: {:08x}", crc32c::crc32c(&body));
    let wrong = format!("X-Oasis-Crc32c: {:08x}", crc32c::crc32c(&body) ^ 1);
    let target = roomy.server.url("/media/a.mp4");
    let (status, _, answer) = curl(&["-H", &auth, "-H", &wrong, "-T", path_str(&file), &target]);
    assert_eq!(status, 422, "{}", String::from_utf8_lossy(&answer));
    assert!(String::from_utf8_lossy(&answer).contains("CRC-32C"));
    assert_eq!(held_locally(&roomy, "a.mp4"), 404);
    let bad = "X-Oasis-Crc32c: not-hex";
    assert_eq!(
        curl(&["-H", &auth, "-H", bad, "-T", path_str(&file), &target]).0,
        400
    );
    let with_rate = roomy.server.url("/media/a.mp4?bitrate=123457");
    let (status, _, _) = curl(&["-H", &auth, "-H", &crc, "-T", path_str(&file), &with_rate]);
    assert_eq!(status, 201);

    // Copied to the starved node, which holds it but cannot stream it: it redirects.
    poll_or(
        "the copy on node 1",
        std::slice::from_ref(&roomy),
        &mut || held_locally(&starved, "a.mp4") == 200,
    );
    // The uploader's bitrate came with the copy.
    let (_, _, listed) = curl(&["-H", &auth, &starved.server.url("/api/objects")]);
    assert!(
        String::from_utf8_lossy(&listed).contains("123457"),
        "{}",
        String::from_utf8_lossy(&listed)
    );
    let (status, head, _) = curl(&[&starved.server.url("/media/a.mp4")]);
    assert_eq!(status, 307, "{head}");
    let location = header(&head, "location").unwrap();
    assert_eq!(location, roomy.server.url("/media/a.mp4"));
    let (status, _, got) = curl(&["-L", &starved.server.url("/media/a.mp4")]);
    assert_eq!(status, 200);
    assert!(got == body, "the handed-on body differs");
}

#[test]
fn a_dead_holder_s_copy_is_restored_on_a_survivor() {
    let (cluster, url, mut nodes) = pool_of_three();
    let work = tempfile::tempdir().unwrap();
    let (body, file) = content(work.path(), "r.mp4", 1 << 20, 5);
    assert_eq!(upload(&nodes[0], "r.mp4", &file), 201);
    poll_or("the first copy", &nodes, &mut || {
        holders(&cluster, &url, "r.mp4").len() == 2
    });
    let copy = if holders(&cluster, &url, "r.mp4").contains(&"node-2".to_string()) {
        1
    } else {
        2
    };
    let survivor = 3 - copy;
    assert_eq!(held_locally(&nodes[survivor], "r.mp4"), 404);
    let pid = nodes[copy].server.pid().to_string();
    assert!(run("kill", &["-9", &pid]).status.success());
    poll_or("the copy restored on the survivor", &nodes, &mut || {
        held_locally(&nodes[survivor], "r.mp4") == 200
    });
    let held = holders(&cluster, &url, "r.mp4");
    assert!(held.contains(&nodes[survivor].id), "{held:?}");
    // The restored copy is byte-exact and of the same version.
    let (status, _, got) = curl(&[
        "-H",
        "X-Oasis-Pool: probe",
        &nodes[survivor].server.url("/media/r.mp4"),
    ]);
    assert_eq!(status, 200);
    assert!(got == body, "the restored copy differs");
    let versions = cluster.psql(
        &url,
        "SELECT count(DISTINCT version_id) FROM pool_replicas WHERE name = 'r.mp4'",
    );
    assert_eq!(versions.trim(), "1");

    // Deleted while the dead node is away: back, it drops its stale copy.
    delete_and_wait(&nodes[0], &nodes[survivor], "r.mp4");
    nodes[copy].restart();
    // Reconciled before it listens: the copy is gone by the time it answers.
    assert_eq!(held_locally(&nodes[copy], "r.mp4"), 404);
    let log = nodes[copy].server.server_log();
    assert!(
        log.contains("r.mp4: deleted in the pool while this node was away"),
        "{log}"
    );
    assert_eq!(holders(&cluster, &url, "r.mp4"), Vec::<String>::new());
}

/// The index of the node of three that holds no copy of `name` (two holders listed).
fn bare_node(cluster: &pg::Cluster, url: &str, nodes: &[Node], name: &str) -> usize {
    poll_or("two holders in the catalog", nodes, &mut || {
        holders(cluster, url, name).len() == 2
    });
    let held = holders(cluster, url, name);
    nodes.iter().position(|n| !held.contains(&n.id)).unwrap()
}

#[test]
fn proxy_mode_streams_from_the_holder_and_cuts_when_it_dies() {
    let (cluster, url, mut nodes) = pool_of_three_in("proxy");
    let work = tempfile::tempdir().unwrap();
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (body, file) = content(work.path(), "clip.mp4", 3 << 20, 11);
    assert_eq!(upload(&nodes[0], "show/clip.mp4", &file), 201);
    let bare = bare_node(&cluster, &url, &nodes, "show/clip.mp4");
    let at = nodes[bare].server.url("/media/show/clip.mp4");

    // The node holding nothing answers itself: no redirect, the same bytes.
    let (status, head, got) = curl(&[&at]);
    assert_eq!(status, 200, "{head}");
    assert!(header(&head, "location").is_none(), "{head}");
    assert_eq!(header(&head, "content-length"), Some("3145728"), "{head}");
    assert!(got == body, "the proxied body differs");
    let etag = header(&head, "etag")
        .expect("an ETag from the holder")
        .to_string();

    // A range passes through: 206, the holder's Content-Range, the exact slice.
    let (status, head, got) = curl(&["-r", "1000-2999", &at]);
    assert_eq!(status, 206, "{head}");
    assert_eq!(
        header(&head, "content-range"),
        Some("bytes 1000-2999/3145728"),
        "{head}"
    );
    assert!(got == body[1000..3000], "the proxied range differs");

    // HEAD: the length, no body; a precondition passes through: 304.
    let (status, head, got) = curl(&["-I", &at]);
    assert_eq!(status, 200, "{head}");
    assert_eq!(header(&head, "content-length"), Some("3145728"), "{head}");
    // (curl -I writes the head where the body would go.)
    assert!(got.starts_with(b"HTTP/1.1 200") && got.len() < 4096);
    let inm = format!("If-None-Match: {etag}");
    let (status, head, got) = curl(&["-H", &inm, &at]);
    assert_eq!(status, 304, "{head}");
    assert!(got.is_empty());
    let (status, _, _) = curl(&[&nodes[bare].server.url("/media/never.mp4")]);
    assert_eq!(status, 404);

    // A private object: this node checks the client, the holder trusts the pool credential.
    let (pbody, pfile) = content(work.path(), "p.mp4", 100_000, 12);
    assert_eq!(upload(&nodes[0], "private/p.mp4", &pfile), 201);
    let pbare = bare_node(&cluster, &url, &nodes, "private/p.mp4");
    let purl = nodes[pbare].server.url("/media/private/p.mp4");
    let (status, _, _) = curl(&[&purl]);
    assert_eq!(status, 401);
    let (status, _, got) = curl(&["-H", &auth, &purl]);
    assert_eq!(status, 200);
    assert!(got == pbody, "the proxied private body differs");

    // A large object read slowly: the stream holds a reservation on the proxying node; its
    // holders killed mid-stream, the client sees the connection cut, never a short body
    // that looks complete.
    let (_, big) = content(work.path(), "big.mp4", 96 << 20, 13);
    assert_eq!(upload(&nodes[0], "show/big.mp4", &big), 201);
    let bare = bare_node(&cluster, &url, &nodes, "show/big.mp4");
    let out = work.path().join("big.out");
    let mut client = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "120", "--limit-rate", "2M", "-o"])
        .arg(&out)
        .arg(nodes[bare].server.url("/media/show/big.mp4"))
        .spawn()
        .unwrap();
    poll("the slow client got its first MiB", || {
        std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0) > 1 << 20
    });
    let (_, _, status) = curl(&["-H", &auth, &nodes[bare].server.url("/api/status")]);
    let status: serde_json::Value = serde_json::from_slice(&status).unwrap();
    assert!(status["active_streams"].as_u64() >= Some(1), "{status}");
    let net = status["resources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["resource"] == "net_bps[0]")
        .unwrap()
        .clone();
    assert!(net["used"].as_u64() >= Some(5_000_000), "{net}");
    for (i, n) in nodes.iter_mut().enumerate() {
        if i != bare {
            let pid = n.server.pid().to_string();
            assert!(run("kill", &["-9", &pid]).status.success());
        }
    }
    let exit = support::wait_exit(&mut client, Duration::from_secs(150), "the slow client");
    let got = std::fs::metadata(&out).map(|m| m.len()).unwrap_or(0);
    assert!(
        !exit.success(),
        "curl took {got} of {} bytes as a complete body",
        96u64 << 20
    );
    assert!(got < 96 << 20, "{got}");
}
