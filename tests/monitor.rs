//! Online monitoring, end to end with real processes: an `oasis monitor`, `oasis serve`s whose
//! `[monitor] targets` point at it, real UDP datagrams, and headless Chromium on the dashboard.
//!
//! - Both servers appear in `/api/nodes` and `/metrics`; the dashboard, opened before they
//!   start, draws them (its render reports reach the monitor), so the live update works; a
//!   server killed with SIGKILL turns stale, in the JSON and in the browser. Screenshots go to
//!   `target/monitor-dashboard*.png`.
//! - With a key, a server with another key is counted as unauthenticated and never shown; the
//!   test's own malformed, truncated, oversized and replayed datagrams are counted and dropped,
//!   and the monitor keeps answering; a signed node turning critical shows in the recent level
//!   changes (`/api/nodes` and `/api/events`).
//!
//! - Three servers measure round trips to each other (UDP echoes to the peers the monitor
//!   lists): `/api/matrix` shows a positive, finite entry for every ordered pair, and the
//!   dashboard draws them as heat-map cells.
//!
//! Waits poll with generous bounds; nothing asserts a duration.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use support::monitor::Monitor;
use support::players::{need, Bounded};
use support::Server;

const KEY: &str = "monitor-test-key-0123456789";

/// `[monitor]` for a server sending to `m` every 300 ms.
fn monitored(m: &Monitor, key: Option<&str>) -> String {
    format!(
        "\n[monitor]\ntargets = [\"{}\"]\ninterval_ms = 300\nkey = \"{}\"\n",
        m.udp,
        key.unwrap_or("")
    )
}

/// The node of the server listening at `addr`, if shown.
fn node_of(nodes: &serde_json::Value, addr: SocketAddr) -> Option<&serde_json::Value> {
    let suffix = format!("/{addr}");
    nodes["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"].as_str().is_some_and(|id| id.ends_with(&suffix)))
}

fn state_of(nodes: &serde_json::Value, addr: SocketAddr) -> Option<String> {
    node_of(nodes, addr).map(|n| n["state"].as_str().unwrap_or("").to_string())
}

/// True when the dashboard reported drawing the node of `addr` in `state`.
fn rendered(nodes: &serde_json::Value, addr: SocketAddr, state: &str) -> bool {
    let want = format!("/{addr} {state}");
    nodes["dashboard"]["rendered_nodes"]
        .as_array()
        .is_some_and(|r| {
            r.iter()
                .any(|s| s.as_str().is_some_and(|s| s.ends_with(&want)))
        })
}

fn chromium_args(profile: &std::path::Path) -> Vec<String> {
    [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1400,500",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--user-data-dir={}", profile.display())])
    .collect()
}

/// Saves a screenshot of the dashboard under target/.
fn screenshot(m: &Monitor, name: &str) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let path = dir.join(name);
    let _ = std::fs::remove_file(&path);
    let profile = tempfile::tempdir().unwrap();
    let mut args = chromium_args(profile.path());
    args.push(format!("--screenshot={}", path.display()));
    args.push("--virtual-time-budget=3000".into());
    // A snapshot page: an open event stream would keep the headless page from settling.
    args.push(format!("http://{}/?once", m.http));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done = Bounded::spawn("chromium", &args).finish();
    assert!(
        std::fs::metadata(&path).is_ok_and(|m| m.len() > 1000),
        "no screenshot at {}\n{}",
        path.display(),
        done.describe()
    );
}

/// The dashboard's DOM after its one-snapshot page ran its scripts.
fn dashboard_dom(m: &Monitor) -> String {
    let profile = tempfile::tempdir().unwrap();
    let mut args = chromium_args(profile.path());
    args.push("--dump-dom".into());
    args.push("--virtual-time-budget=3000".into());
    args.push(format!("http://{}/?once", m.http));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let done = Bounded::spawn("chromium", &args).finish();
    let dom = done.stdout.clone();
    assert!(
        dom.contains("id=\"matrix\""),
        "no dashboard DOM:\n{}",
        done.describe()
    );
    dom
}

#[test]
fn three_servers_measure_round_trips_to_each_other() {
    let m = Monitor::start(Some(KEY));
    let servers: Vec<Server> = (0..3)
        .map(|_| Server::start(&monitored(&m, Some(KEY))))
        .collect();
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let matrix = m.wait_matrix(&addrs);
    assert!(matrix["entries"].as_u64() >= Some(6), "{matrix:#}");
    // The bandwidth row: every node's throughput is a number.
    for n in matrix["nodes"].as_array().unwrap() {
        assert!(n["sent_bps"].as_f64().is_some() && n["received_bps"].as_f64().is_some());
    }
    let nodes = m.nodes();
    assert_eq!(nodes["datagrams"]["unauthenticated"], 0, "{nodes:#}");
    assert_eq!(nodes["peer_list_send_errors"], 0, "{nodes:#}");
}

#[test]
fn servers_appear_live_on_the_dashboard_and_a_killed_one_turns_stale() {
    need("chromium", "chromium");
    let m = Monitor::start(None);
    // The browser opens the dashboard before any server runs: what it draws came live.
    let profile = tempfile::tempdir().unwrap();
    let mut args = chromium_args(profile.path());
    args.push("--remote-debugging-port=0".into());
    args.push(format!("http://{}/", m.http));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut browser = Bounded::spawn("chromium", &args);

    let a = Server::start(&monitored(&m, None));
    let mut b = Server::start(&monitored(&m, None));
    let nodes = m.wait("both servers up in /api/nodes", |n| {
        state_of(n, a.addr).as_deref() == Some("up") && state_of(n, b.addr).as_deref() == Some("up")
    });
    let node_a = node_of(&nodes, a.addr).unwrap();
    assert_eq!(node_a["role"], "serve");
    assert!(
        node_a["accounts"].as_array().is_some_and(|a| !a.is_empty()),
        "{node_a}"
    );
    let metrics = m.get("/metrics");
    let id_a = node_a["node"].as_str().unwrap();
    assert!(
        metrics.contains(&format!(
            "oasis_node_up{{node=\"{id_a}\",role=\"serve\"}} 1"
        )),
        "{metrics}"
    );

    // A request shows in the counters the next datagram carries.
    assert_eq!(
        a.request("GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n", b"").0,
        404
    );
    m.wait("the request counted", |n| {
        node_of(n, a.addr).is_some_and(|x| x["requests_total"].as_u64() >= Some(1))
    });

    let until = Instant::now() + Duration::from_secs(support::players::BROWSER_WAIT_SECS_MAX);
    while !(rendered(&m.nodes(), a.addr, "up") && rendered(&m.nodes(), b.addr, "up")) {
        assert!(
            Instant::now() < until,
            "the dashboard did not draw both servers:\n{:#}\n--- chromium ---\n{}",
            m.nodes()["dashboard"],
            support::players::tail(&browser.stderr_so_far(), 3000)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // The delay matrix: both directions measured, and drawn as heat-map cells.
    m.wait_matrix(&[a.addr, b.addr]);
    let dom = dashboard_dom(&m);
    assert!(
        dom.matches("class=\"rtt\"").count() >= 2,
        "the heat map has no measured cells:\n{dom}"
    );
    assert!(dom.contains("class=\"bw\""), "no bandwidth row:\n{dom}");
    screenshot(&m, "monitor-dashboard.png");

    let pid = b.pid();
    assert!(std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let _ = b.child.as_mut().unwrap().wait();
    b.child = None;
    m.wait("the killed server stale, the other up", |n| {
        state_of(n, b.addr).as_deref() == Some("stale")
            && state_of(n, a.addr).as_deref() == Some("up")
    });
    let until = Instant::now() + Duration::from_secs(support::players::BROWSER_WAIT_SECS_MAX);
    while !rendered(&m.nodes(), b.addr, "stale") {
        assert!(
            Instant::now() < until,
            "the dashboard did not show the killed server stale:\n{:#}",
            m.nodes()["dashboard"]
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    screenshot(&m, "monitor-dashboard-stale.png");
    let metrics = m.get("/metrics");
    assert!(
        metrics.contains("oasis_monitor_nodes{state=\"stale\"} 1"),
        "{metrics}"
    );
    browser.kill_group();
    drop(m.process);
}

#[test]
fn with_a_key_strangers_and_bad_datagrams_are_counted_and_never_shown() {
    use oasis_monitor::status::{encode, Level, Role, Status};
    let m = Monitor::start(Some(KEY));
    let good = Server::start(&monitored(&m, Some(KEY)));
    let stranger = Server::start(&monitored(&m, Some("another-key-0123456789")));
    let unsigned = Server::start(&monitored(&m, None));
    m.wait("the signed server up, strangers counted", |n| {
        state_of(n, good.addr).as_deref() == Some("up")
            && n["datagrams"]["unauthenticated"].as_u64() >= Some(4)
    });

    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |bytes: &[u8]| {
        udp.send_to(bytes, m.udp).unwrap();
    };
    let mut forged = Status::new("test/forged", Role::Serve);
    forged.seq = 7;
    let signed = encode(&forged, Some(KEY.as_bytes())).unwrap();
    send(b"not a status datagram at all");
    send(&signed[..signed.len() / 2]);
    send(&[b'O'; 1500]);
    send(&signed);
    send(&signed);
    let nodes = m.wait("every bad datagram counted", |n| {
        let d = &n["datagrams"];
        d["malformed"].as_u64() >= Some(1)
            && d["truncated"].as_u64() >= Some(1)
            && d["oversized"].as_u64() >= Some(1)
            && d["replayed"].as_u64() >= Some(1)
    });
    let ids: Vec<&str> = nodes["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|n| n["node"].as_str())
        .collect();
    assert!(
        ids.contains(&"test/forged"),
        "the signed datagram is shown once: {ids:?}"
    );
    assert_eq!(
        node_of(&nodes, stranger.addr),
        None,
        "a wrong key is never shown"
    );
    assert_eq!(
        node_of(&nodes, unsigned.addr),
        None,
        "an unsigned sender is never shown"
    );
    assert_eq!(nodes["authenticated"], true);
    // A signed node turning critical is listed among the recent level changes.
    forged.seq = 8;
    forged.level = Level::Critical;
    send(&encode(&forged, Some(KEY.as_bytes())).unwrap());
    let is_forged_critical =
        |e: &serde_json::Value| e["node"] == "test/forged" && e["to"] == "critical";
    m.wait("the critical level change listed", |n| {
        n["events"]
            .as_array()
            .is_some_and(|es| es.iter().any(is_forged_critical))
    });
    let events: serde_json::Value =
        serde_json::from_str(&m.get("/api/events?limit=1")).expect("/api/events is JSON");
    assert!(
        is_forged_critical(&events["events"][0]),
        "the newest change first: {events}"
    );
    // Still running and answering, with the drops in /metrics.
    let metrics = m.get("/metrics");
    assert!(
        metrics.contains("oasis_monitor_datagrams_total{outcome=\"unauthenticated\"}"),
        "{metrics}"
    );
    let mut process = m.process;
    assert!(
        !process.stderr_so_far().contains("panicked"),
        "{}",
        process.stderr_so_far()
    );
}
