//! What the pool tests share: nodes of `oasis serve` on a PostgreSQL catalog (a throw-away
//! cluster), curl without redirects, polling with a generous deadline, the catalog's holders of
//! a name, a TCP proxy in front of the catalog that a test can cut and restore, and (in
//! [`netns`]) a simulated network of namespaces for the nodes.

#![allow(dead_code)]

pub mod netns;
#[path = "../../storage/tests/support/pg.rs"]
pub mod pg;
mod proxy;

#[allow(unused_imports)]
pub use proxy::CatalogProxy;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::support::{free_port, path_str, pattern, run, Server, TOKEN};

pub const KEY: &str = "pool-test-link-key-0123456789abcdefghij";

pub struct Node {
    pub server: Server,
    pub id: String,
    /// Its configuration and data directory, kept across restarts.
    pub home: tempfile::TempDir,
}

impl Node {
    /// Starts the node again on its configuration, port and data (after a kill).
    pub fn restart(&mut self) {
        let config = self.home.path().join("oasis.toml");
        self.server = Server::start_args(
            tempfile::tempdir().unwrap(),
            &["--config", path_str(&config)],
        );
    }
}

pub fn start_node(url: &str, n: u32) -> Node {
    start_node_with(url, n, BANDWIDTH_BPS)
}

/// The bandwidth of a node's listener unless a test asks for less.
pub const BANDWIDTH_BPS: u64 = 10_000_000_000;

/// `count` nodes on catalog `url` keeping `replicas` copies, each seeing all of them live.
pub fn pool_of(url: &str, count: u32, replicas: u32) -> Vec<Node> {
    let nodes: Vec<Node> = (1..=count)
        .map(|n| start_node_full(url, n, BANDWIDTH_BPS, replicas))
        .collect();
    wait_all_live(&nodes);
    nodes
}

/// A node whose listener has `bandwidth_bps` to reserve.
pub fn start_node_with(url: &str, n: u32, bandwidth_bps: u64) -> Node {
    start_node_full(url, n, bandwidth_bps, 2)
}

/// A node on catalog `url` whose listener has `bandwidth_bps` to reserve, in a pool that keeps
/// `replicas` copies of each object.
pub fn start_node_full(url: &str, n: u32, bandwidth_bps: u64, replicas: u32) -> Node {
    start_node_in(url, n, bandwidth_bps, replicas, "redirect")
}

/// [`start_node_full`] in pool `mode` (`redirect` or `proxy`).
pub fn start_node_in(url: &str, n: u32, bandwidth_bps: u64, replicas: u32, mode: &str) -> Node {
    start_node_extra(url, n, bandwidth_bps, replicas, mode, "")
}

/// [`start_node_in`] with `extra` appended to its configuration file (whole sections).
pub fn start_node_extra(
    url: &str,
    n: u32,
    bandwidth_bps: u64,
    replicas: u32,
    mode: &str,
    extra: &str,
) -> Node {
    let home = tempfile::tempdir().unwrap();
    let port = free_port();
    let id = format!("node-{n}");
    let config = format!(
        "[server]\ndata_dir = {:?}\naccess_log = \"off\"\ndrain_timeout_secs = 2\n\n\
         [[listen]]\naddr = \"127.0.0.1:{port}\"\nbandwidth_bps = {bandwidth_bps}\n\n[links]\nkeys = [\"{KEY}\"]\n\n\
         [[access]]\nprefix = \"private/\"\nread = \"signed\"\n\n\
         [pool]\ncatalog = \"{url}\"\nnode_id = \"{id}\"\nadvertise = \"http://127.0.0.1:{port}\"\n\
         replicas = {replicas}\ndown_after_ms = 3000\nmode = \"{mode}\"\n\n{extra}",
        path_str(&home.path().join("data")),
    );
    let path = home.path().join("oasis.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::start_args(tempfile::tempdir().unwrap(), &["--config", path_str(&path)]);
    Node { server, id, home }
}

/// `(status, head, body)` of one HTTP request.
pub type Answer = (u16, String, Vec<u8>);

/// `(status, head, body)` of one curl request that follows no redirect.
pub fn curl(args: &[&str]) -> (u16, String, Vec<u8>) {
    curl_via(&[], args)
}

/// [`curl`] run through the command `prefix` (say `ip netns exec NS`; empty: curl itself).
pub fn curl_via(prefix: &[&str], args: &[&str]) -> (u16, String, Vec<u8>) {
    let work = tempfile::tempdir().unwrap();
    let head = work.path().join("head");
    let body = work.path().join("body");
    let argv = [
        prefix,
        &[
            "curl",
            "-sS",
            "--max-time",
            "60",
            "-w",
            "%{http_code}",
            "-D",
            path_str(&head),
            "-o",
            path_str(&body),
        ],
        args,
    ]
    .concat();
    let out = run(argv[0], &argv[1..]);
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let head = std::fs::read_to_string(&head).unwrap();
    let status = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (status, head, std::fs::read(&body).unwrap_or_default())
}

pub fn upload(node: &Node, name: &str, file: &Path) -> u16 {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let url = node.server.url(&format!("/media/{name}"));
    curl(&["-H", &auth, "-T", path_str(file), &url]).0
}

pub fn holders(cluster: &pg::Cluster, url: &str, name: &str) -> Vec<String> {
    let rows = cluster.psql(
        url,
        &format!("SELECT node_id FROM pool_replicas WHERE name = '{name}' ORDER BY node_id"),
    );
    rows.lines()
        .map(str::to_string)
        .filter(|l| !l.is_empty())
        .collect()
}

pub fn poll(what: &str, mut done: impl FnMut() -> bool) {
    poll_or(what, &[], &mut done)
}

/// [`poll`], showing the nodes' logs when it gives up.
pub fn poll_or(what: &str, nodes: &[Node], done: &mut dyn FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !done() {
        if Instant::now() >= until {
            let logs: Vec<String> = nodes
                .iter()
                .map(|n| format!("--- {} ---\n{}", n.id, n.server.server_log()))
                .collect();
            panic!("gave up waiting: {what}\n{}", logs.join("\n"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn held_locally(node: &Node, name: &str) -> u16 {
    // A request marked as from the pool is never redirected: it says what this node holds.
    curl(&[
        "-I",
        "-H",
        "X-Oasis-Pool: probe",
        &node.server.url(&format!("/media/{name}")),
    ])
    .0
}

/// Deletes `name` on `on` and waits for its copy on `copy` to go.
pub fn delete_and_wait(on: &Node, copy: &Node, name: &str) {
    let auth = format!("Authorization: Bearer {TOKEN}");
    let target = on.server.url(&format!("/media/{name}"));
    assert_eq!(curl(&["-X", "DELETE", "-H", &auth, &target]).0, 204);
    poll("the other copy deleted", || held_locally(copy, name) == 404);
}

/// Three nodes on a new database, each seeing all three live.
pub fn pool_of_three() -> (std::sync::Arc<pg::Cluster>, String, Vec<Node>) {
    pool_of_three_in("redirect")
}

/// [`pool_of_three`] in pool `mode`.
pub fn pool_of_three_in(mode: &str) -> (std::sync::Arc<pg::Cluster>, String, Vec<Node>) {
    let cluster = pg::shared();
    let url = cluster.create_database();
    let nodes: Vec<Node> = (1..=3)
        .map(|n| start_node_in(&url, n, BANDWIDTH_BPS, 2, mode))
        .collect();
    wait_all_live(&nodes);
    (cluster, url, nodes)
}

/// Waits until every node's `/api/pool` shows all of them live.
pub fn wait_all_live(nodes: &[Node]) {
    wait_all_live_by(nodes, &curl)
}

/// [`wait_all_live`], asking with `curl` (say one run in another network namespace).
pub fn wait_all_live_by(nodes: &[Node], curl: &dyn Fn(&[&str]) -> Answer) {
    let want = nodes.len();
    let auth = format!("Authorization: Bearer {TOKEN}");
    for n in nodes {
        poll_or("every node live in every /api/pool", nodes, &mut || {
            let (_, _, b) = curl(&["-H", &auth, &n.server.url("/api/pool")]);
            String::from_utf8_lossy(&b)
                .matches("\"state\":\"live\"")
                .count()
                == want
        });
    }
}

/// A test file of `len` bytes named `name` in `dir`, and its bytes.
pub fn content(dir: &Path, name: &str, len: usize, seed: u8) -> (Vec<u8>, std::path::PathBuf) {
    let body = pattern(len, seed);
    let file = dir.join(name);
    std::fs::write(&file, &body).unwrap();
    (body, file)
}

/// Encodes a 6-second HLS package in `dir/show` and uploads it as `show` to `server` with the
/// CLI (as README's "Using it" uploads one), run through the command `prefix` (empty: the CLI
/// itself). Returns the package's directory and its segments' names, in playlist order.
pub fn put_hls_package(dir: &Path, prefix: &[&str], server: &str) -> (PathBuf, Vec<String>) {
    let pkg = dir.join("show");
    std::fs::create_dir(&pkg).unwrap();
    crate::support::players::encode_hls_package(
        "testsrc=size=320x240:rate=25:duration=6",
        "sine=frequency=440:duration=6",
        &pkg,
    );
    let put = [
        prefix,
        &[
            crate::support::oasis_bin(),
            "put",
            path_str(&pkg),
            "--name",
            "show",
            "--server",
            server,
            "--token",
            TOKEN,
        ],
    ]
    .concat();
    let out = run(put[0], &put[1..]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let playlist = std::fs::read_to_string(pkg.join("index.m3u8")).unwrap();
    let segments: Vec<String> = playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    assert!(segments.len() >= 3, "{playlist}");
    (pkg, segments)
}

/// What readers of a replaced object saw: `(node index, status, sha256 of the body)` per GET.
pub type Seen = Vec<(usize, u16, [u8; 32])>;

pub fn sha(body: &[u8]) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(body).into()
}

/// Fails unless every read in `seen` was a 200 of version `h1` or `h2` whole; `node` names a
/// node index in the message.
pub fn assert_whole_versions(
    seen: &Seen,
    h1: [u8; 32],
    h2: [u8; 32],
    node: impl Fn(usize) -> String,
) {
    let bad: Vec<_> = seen
        .iter()
        .filter(|(_, code, h)| *code != 200 || (*h != h1 && *h != h2))
        .map(|(i, code, h)| (node(*i), *code, *h == h1, *h == h2))
        .collect();
    assert!(
        bad.is_empty(),
        "{} of {} reads were neither v1 nor v2 (node, status, is v1, is v2): {bad:?}",
        bad.len(),
        seen.len()
    );
}
