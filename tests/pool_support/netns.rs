//! A simulated network for the pool tests, made of Linux network namespaces (`ip netns`):
//!
//! - a switch namespace holding two bridges, `pool` (10.231.0.0/24: the nodes and a client)
//!   and `db` (10.231.1.0/24: the nodes and PostgreSQL);
//! - one namespace per node, with `eth0` on the pool bridge (10.231.0.1N) and `eth1` on the db
//!   bridge (10.231.1.1N), `oasis serve` running inside (`ip netns exec`) on port 8080;
//! - one for PostgreSQL (10.231.1.2:5432), one for the test's client (10.231.0.3), where curl
//!   runs.
//!
//! Every link is a veth pair made directly between its namespace and the switch (no interface
//! and no address is ever added to the test's own namespace, so nothing outside the namespaces
//! made here is a target), rate-limited by `tc` `tbf` at [`RATE`] at both ends. A node is cut off
//! from the catalog by setting its db port on the switch down ([`Net::cut_catalog`]): its
//! packets to PostgreSQL are dropped silently, as by a pulled cable, and its pool link stays up.
//!
//! Namespace names are `oasis-<tag>-<pid>-<role>`: a tag per test, so tests running at once do
//! not share anything, and the test process's id, so two runs at once do not either. Set-up
//! first removes the namespaces of the same tag left by a run whose process is gone (a crash),
//! ending the processes still in them. Dropped (a panic too), [`Net`] ends what still runs in
//! its namespaces and deletes them; the veth pairs and bridges go with them.
//!
//! Needs root and iproute2 (`ip`, `tc`): without them set-up fails saying so, never skips.

use std::path::Path;
use std::process::Command;

use super::{curl_via, pg, poll_or, wait_all_live_by, Node, BANDWIDTH_BPS, KEY};
use crate::support::players::ffmpeg_decoded_frames_via;
use crate::support::{path_str, Server, TOKEN};

/// Each link's rate, both ways (`tc qdisc ... tbf rate`).
pub const RATE: &str = "50mbit";
/// The port every node listens on (in its own namespace, so they never collide).
pub const PORT: u16 = 8080;
/// The address PostgreSQL listens on, in its namespace.
pub const DB_ADDR: &str = "10.231.1.2";
const PG_PORT: u16 = 5432;
const CLIENT_ADDR: &str = "10.231.0.3";

/// The namespaces of one test; dropped, everything in them is ended and they are deleted.
pub struct Net {
    base: String,
    /// The client's namespace.
    client: String,
    made: Vec<String>,
    nodes: u32,
}

/// Runs `cmd args`; a failure panics with `what`, the command and its output.
fn must(what: &str, cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run `{cmd}` ({e}); the simulated-network pool tests need root and \
             iproute2 (`apt-get install -y iproute2`; tests/run.sh installs it)"
        )
    });
    assert!(
        out.status.success(),
        "{what}: `{cmd} {}` failed ({}): {}{}\nthe simulated-network pool tests need root and \
         iproute2 (ip, tc) to make network namespaces, veth pairs, bridges and tbf qdiscs",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn ip(what: &str, args: &[&str]) -> String {
    must(what, "ip", args)
}

/// Ends every process in namespace `ns` and deletes it (errors ignored: used while cleaning up).
fn remove_namespace(ns: &str) {
    if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// The namespaces that exist now, by name.
fn namespaces() -> Vec<String> {
    ip("list the network namespaces", &["netns", "list"])
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

impl Net {
    /// The network of test `tag` with `nodes` node namespaces (1..=9), PostgreSQL's and the
    /// client's, every link up and rate-limited.
    pub fn new(tag: &str, nodes: u32) -> Net {
        assert!((1..=9).contains(&nodes), "1 to 9 nodes");
        let me = std::process::id();
        let base = format!("oasis-{tag}-{me}");
        // Leftovers of this test from a run that is gone (or had this process id).
        let ours = format!("oasis-{tag}-");
        for ns in namespaces() {
            let Some(rest) = ns.strip_prefix(&ours) else {
                continue;
            };
            let owner = rest.split('-').next().unwrap_or("");
            let gone = owner
                .parse::<u32>()
                .is_ok_and(|p| p == me || !Path::new(&format!("/proc/{p}")).exists());
            if gone {
                remove_namespace(&ns);
            }
        }
        let mut net = Net {
            client: format!("{base}-cl"),
            base,
            made: Vec::new(),
            nodes,
        };
        let sw = net.add("sw");
        for bridge in ["pool", "db"] {
            ip(
                "add a bridge",
                &["-n", &sw, "link", "add", bridge, "type", "bridge"],
            );
            ip("bridge up", &["-n", &sw, "link", "set", bridge, "up"]);
        }
        let client = net.add("cl");
        net.link(&client, "eth0", "pool", "p-cl", CLIENT_ADDR);
        let db = net.add("db");
        net.link(&db, "eth0", "db", "d-db", DB_ADDR);
        for n in 1..=nodes {
            let ns = net.add(&format!("n{n}"));
            net.link(&ns, "eth0", "pool", &format!("p-n{n}"), &node_addr(n));
            net.link(
                &ns,
                "eth1",
                "db",
                &format!("d-n{n}"),
                &format!("10.231.1.1{n}"),
            );
        }
        net
    }

    fn ns(&self, role: &str) -> String {
        format!("{}-{role}", self.base)
    }

    /// Makes namespace `role` with its loopback up (local traffic goes through it).
    fn add(&mut self, role: &str) -> String {
        let ns = self.ns(role);
        ip("make a network namespace", &["netns", "add", &ns]);
        self.made.push(ns.clone());
        ip("loopback up", &["-n", &ns, "link", "set", "lo", "up"]);
        ns
    }

    /// A veth pair from `dev` (address `addr`/24) in `ns` to port `port` of `bridge` on the
    /// switch, both ends up and rate-limited.
    fn link(&self, ns: &str, dev: &str, bridge: &str, port: &str, addr: &str) {
        let sw = self.ns("sw");
        ip(
            "make a veth pair",
            &[
                "-n", &sw, "link", "add", port, "type", "veth", "peer", "name", dev, "netns", ns,
            ],
        );
        ip(
            "attach to the bridge",
            &["-n", &sw, "link", "set", port, "master", bridge, "up"],
        );
        let cidr = format!("{addr}/24");
        ip("address", &["-n", ns, "addr", "add", &cidr, "dev", dev]);
        ip("link up", &["-n", ns, "link", "set", dev, "up"]);
        for (at, d) in [(ns, dev), (sw.as_str(), port)] {
            must(
                "rate limit",
                "tc",
                &[
                    "-n", at, "qdisc", "add", "dev", d, "root", "tbf", "rate", RATE, "burst",
                    "128kb", "latency", "100ms",
                ],
            );
        }
    }

    /// Namespace of node `n` (1-based).
    pub fn node_ns(&self, n: u32) -> String {
        assert!((1..=self.nodes).contains(&n));
        self.ns(&format!("n{n}"))
    }

    /// The command prefix that runs a program in the client's namespace.
    pub fn client(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.client]
    }

    /// [`curl_via`] from the client's namespace.
    pub fn curl(&self, args: &[&str]) -> (u16, String, Vec<u8>) {
        curl_via(&self.client(), args)
    }

    /// Node `n`'s link to PostgreSQL down at the switch: its packets to the catalog are dropped.
    pub fn cut_catalog(&self, n: u32) {
        let port = format!("d-n{n}");
        ip(
            "cut a node's catalog link",
            &["-n", &self.ns("sw"), "link", "set", &port, "down"],
        );
    }

    /// Node `n`'s link to PostgreSQL up again.
    pub fn join_catalog(&self, n: u32) {
        let port = format!("d-n{n}");
        ip(
            "restore a node's catalog link",
            &["-n", &self.ns("sw"), "link", "set", &port, "up"],
        );
    }

    /// Bytes the rate limiter of node `n`'s pool link has sent out of the node.
    pub fn node_sent_bytes(&self, n: u32) -> u64 {
        let stats = must(
            "read the qdisc counters",
            "tc",
            &["-s", "-n", &self.node_ns(n), "qdisc", "show", "dev", "eth0"],
        );
        assert!(stats.contains("qdisc tbf"), "{stats}");
        stats
            .split("Sent ")
            .nth(1)
            .and_then(|s| s.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no Sent counter in {stats}"))
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.made.iter().rev() {
            remove_namespace(ns);
        }
    }
}

/// Node `n`'s address on the pool network.
pub fn node_addr(n: u32) -> String {
    format!("10.231.0.1{n}")
}

/// Nodes in their namespaces on one PostgreSQL across the simulated network. Fields drop in
/// order: the nodes, then PostgreSQL, then the network.
pub struct NetPool {
    pub nodes: Vec<Node>,
    pub cluster: pg::Cluster,
    /// The catalog's URL (PostgreSQL's address on the db network).
    pub url: String,
    pub net: Net,
}

impl NetPool {
    /// `count` nodes of test `tag` keeping `replicas` copies in pool `mode`, each seeing all of
    /// them live.
    pub fn start(tag: &str, count: u32, replicas: u32, mode: &str) -> NetPool {
        let net = Net::new(tag, count);
        let cluster = pg::in_netns(&net.ns("db"), DB_ADDR, PG_PORT);
        let url = cluster.create_database();
        let nodes = (1..=count)
            .map(|n| start_node(&net, &url, n, replicas, mode))
            .collect();
        let pool = NetPool {
            nodes,
            cluster,
            url,
            net,
        };
        wait_all_live_by(&pool.nodes, &|args| pool.net.curl(args));
        pool
    }

    /// The node ids the catalog lists as holding `name`.
    pub fn holders(&self, name: &str) -> Vec<String> {
        super::holders(&self.cluster, &self.url, name)
    }

    /// Waits until `done` holds (a generous deadline; the nodes' logs when it gives up).
    pub fn poll(&self, what: &str, mut done: impl FnMut() -> bool) {
        poll_or(what, &self.nodes, &mut done)
    }

    /// `(status, head, body)` of a GET of `path` on node index `i`, from the client.
    pub fn get(&self, i: usize, path: &str, extra: &[&str]) -> (u16, String, Vec<u8>) {
        let url = self.nodes[i].server.url(path);
        self.net.curl(&[extra, &[url.as_str()]].concat())
    }

    /// The status of a PUT of `file` as `name` on node index `i`, with the API token.
    pub fn put(&self, i: usize, name: &str, file: &Path) -> (u16, String, Vec<u8>) {
        let auth = format!("Authorization: Bearer {TOKEN}");
        let url = self.nodes[i].server.url(&format!("/media/{name}"));
        self.net.curl(&["-H", &auth, "-T", path_str(file), &url])
    }

    /// Whether node index `i` holds `name` itself (200) or not (404): a pool probe, never
    /// redirected or proxied.
    pub fn held(&self, i: usize, name: &str) -> u16 {
        let path = format!("/media/{name}");
        self.get(i, &path, &["-I", "-H", "X-Oasis-Pool: probe"]).0
    }

    /// The frames ffmpeg decodes from `url`, played in the client's namespace.
    pub fn played_frames(&self, url: &str) -> u64 {
        ffmpeg_decoded_frames_via(&self.net.client(), url)
    }

    /// Whether node index `i`'s `/api/pool` lists node `id` as down.
    pub fn sees_down(&self, i: usize, id: &str) -> bool {
        let nodes = self.api_pool(i)["nodes"].clone();
        nodes
            .as_array()
            .is_some_and(|a| a.iter().any(|n| n["node_id"] == id && n["state"] == "down"))
    }

    /// Node index `i`'s `/api/pool`.
    pub fn api_pool(&self, i: usize) -> serde_json::Value {
        let auth = format!("Authorization: Bearer {TOKEN}");
        let (status, _, body) = self.get(i, "/api/pool", &["-H", &auth]);
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        serde_json::from_slice(&body).expect("/api/pool is JSON")
    }
}

/// Node `n` in its namespace, on `url`, listening on its pool address.
fn start_node(net: &Net, url: &str, n: u32, replicas: u32, mode: &str) -> Node {
    let home = tempfile::tempdir().unwrap();
    let id = format!("node-{n}");
    let addr = format!("{}:{PORT}", node_addr(n));
    let config = format!(
        "[server]\ndata_dir = {:?}\naccess_log = \"off\"\ndrain_timeout_secs = 2\n\n\
         [[listen]]\naddr = \"{addr}\"\nbandwidth_bps = {BANDWIDTH_BPS}\n\n\
         [links]\nkeys = [\"{KEY}\"]\n\n\
         [pool]\ncatalog = \"{url}\"\nnode_id = \"{id}\"\nadvertise = \"http://{addr}\"\n\
         replicas = {replicas}\ndown_after_ms = 3000\nmode = \"{mode}\"\n",
        path_str(&home.path().join("data")),
    );
    let path = home.path().join("oasis.toml");
    std::fs::write(&path, config).unwrap();
    let server = Server::start_args_in_netns(
        tempfile::tempdir().unwrap(),
        &net.node_ns(n),
        &["--config", path_str(&path)],
    );
    Node { server, id, home }
}
