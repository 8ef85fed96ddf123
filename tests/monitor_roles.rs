//! Every role's status datagrams reach the monitor, from real processes over real UDP:
//!
//! - a real `oasis logd`, fed by a real `oasis serve` shipping its access log to it
//!   (`[log] ship_to`), shows as role `logd` with that stream and a durable offset that grows
//!   past 0 once a request is logged;
//! - with two log servers, the stream shows on whichever one the shipper picked, and after that
//!   one is killed with SIGKILL it shows on the other (where the stream went) while the killed
//!   one turns stale;
//! - a real `oasis agent` supervising a `sleep` shows as role `agent` with the process running
//!   and its pid; after the process is killed with SIGKILL the agent's datagrams show the
//!   restart and a new pid, and a process that never stays up shows as flapping.
//!
//! All signed with one key. Waits poll with generous bounds; nothing asserts a duration.

mod support;

use std::process::Command;

use serde_json::Value;
use support::monitor::Monitor;
use support::players::Bounded;
use support::{listening_addr, oasis_bin, path_str, Server};

const KEY: &str = "roles-test-key-0123456789";

/// `[monitor]` sending to `m` every 300 ms, signed, as `node` (empty: the default name).
fn monitored(m: &Monitor, node: &str) -> String {
    format!(
        "\n[monitor]\ntargets = [\"{}\"]\ninterval_ms = 300\nkey = \"{KEY}\"\nnode = \"{node}\"\n",
        m.udp
    )
}

/// The node named `id`, if shown.
fn node<'a>(nodes: &'a Value, id: &str) -> Option<&'a Value> {
    nodes["nodes"]
        .as_array()?
        .iter()
        .find(|n| n["node"].as_str() == Some(id))
}

#[test]
fn a_log_server_shows_its_streams_and_durable_offsets() {
    let m = Monitor::start(Some(KEY));
    let dir = tempfile::tempdir().unwrap();
    let (mut logd, addr) = start_logd(&m, dir.path(), "roles/logd");
    let nodes = m.wait("the log server up", |n| {
        node(n, "roles/logd").is_some_and(|x| x["state"] == "up")
    });
    assert_eq!(node(&nodes, "roles/logd").unwrap()["role"], "logd");
    let server = Server::start(&format!(
        "\n[log]\nship_to = [\"{addr}\"]\nnode = \"roles-media\"\nlevel = \"warn\"\n"
    ));
    let (status, _, _) = server.request(
        "GET /media/no-such-object HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 404);
    let nodes = m.wait("the shipped access stream with a durable offset", |n| {
        node(n, "roles/logd").is_some_and(|x| {
            x["streams"].as_array().is_some_and(|s| {
                s.iter().any(|st| {
                    st["name"] == "roles-media/access" && st["durable_offset"].as_u64() > Some(0)
                })
            })
        })
    });
    let shown = node(&nodes, "roles/logd").unwrap();
    assert!(shown["active_streams"].as_u64().is_some(), "{shown:#}");
    assert!(!logd.stderr_so_far().contains("panicked"));
}

/// A `oasis logd` on a free loopback port reporting to `m` as `node`; its address.
fn start_logd(m: &Monitor, dir: &std::path::Path, node: &str) -> (Bounded, String) {
    let config = dir.join(format!("{}.toml", node.replace('/', "-")));
    std::fs::write(&config, monitored(m, node)).unwrap();
    let data = dir.join(format!("{}-data", node.replace('/', "-")));
    let mut logd = Bounded::spawn(
        oasis_bin(),
        &[
            "logd",
            "--listen",
            "127.0.0.1:0",
            "--data-dir",
            path_str(&data),
            "--config",
            path_str(&config),
        ],
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let addr = loop {
        if let Some(a) = listening_addr(&logd.stderr_so_far()) {
            break a;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{node} never listened"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    (logd, addr.to_string())
}

/// The durable offset of `stream` as the log server `id` reports it, if it reports it.
fn durable_on(nodes: &Value, id: &str, stream: &str) -> Option<u64> {
    node(nodes, id)?["streams"]
        .as_array()?
        .iter()
        .find(|s| s["name"] == stream)?["durable_offset"]
        .as_u64()
}

#[test]
fn a_stream_shows_where_it_went_after_its_log_server_dies() {
    const STREAM: &str = "moving-media/access";
    let m = Monitor::start(Some(KEY));
    let dir = tempfile::tempdir().unwrap();
    let (logd_a, addr_a) = start_logd(&m, dir.path(), "moving/a");
    let (logd_b, addr_b) = start_logd(&m, dir.path(), "moving/b");
    let server = Server::start(&format!(
        "\n[log]\nship_to = [\"{addr_a}\", \"{addr_b}\"]\nnode = \"moving-media\"\nlevel = \"warn\"\n"
    ));
    let request = || {
        let (status, _, _) = server.request(
            "GET /media/no-such-object HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
            b"",
        );
        assert_eq!(status, 404);
    };
    request();
    let nodes = m.wait("the access stream on one of the log servers", |n| {
        ["moving/a", "moving/b"]
            .iter()
            .any(|id| durable_on(n, id, STREAM) > Some(0))
    });
    let (first, other, mut victim, _survivor) = if durable_on(&nodes, "moving/a", STREAM) > Some(0)
    {
        ("moving/a", "moving/b", logd_a, logd_b)
    } else {
        ("moving/b", "moving/a", logd_b, logd_a)
    };
    victim.kill_group();
    // Lines logged after the kill can only become durable on the other server.
    for _ in 0..5 {
        request();
    }
    let nodes = m.wait(
        "the stream on the other log server, the killed one stale",
        |n| {
            durable_on(n, other, STREAM) > Some(0)
                && node(n, first).is_some_and(|x| x["state"] == "stale")
        },
    );
    assert_eq!(node(&nodes, other).unwrap()["state"], "up", "{nodes:#}");
}

#[test]
fn an_agent_shows_its_processes_running_and_restarted() {
    let m = Monitor::start(Some(KEY));
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[[process]]\nname = \"sleeper\"\ncommand = \"sleep\"\nargs = [\"600\"]\n\
             min_uptime_ms = 100\n\
             [[process]]\nname = \"broken\"\ncommand = \"false\"\n\
             restart_backoff_ms = 20\nrestart_backoff_max_ms = 160\nflapping_restarts = 3\n{}",
            monitored(&m, "roles/agent")
        ),
    )
    .unwrap();
    let mut agent = Bounded::spawn(oasis_bin(), &["agent", "--config", path_str(&config)]);
    let sleeper = |n: &Value| -> Option<Value> {
        node(n, "roles/agent")?["processes"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "sleeper")
            .cloned()
    };
    let nodes = m.wait("the agent with its process running", |n| {
        sleeper(n).is_some_and(|p| p["state"] == "running" && p["pid"].as_u64() > Some(0))
    });
    let shown = node(&nodes, "roles/agent").unwrap();
    assert_eq!(shown["role"], "agent");
    assert_eq!(shown["state"], "up");
    let first = sleeper(&nodes).unwrap();
    let pid = first["pid"].as_u64().unwrap();
    assert!(Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let nodes = m.wait("the process restarted under a new pid", |n| {
        sleeper(n).is_some_and(|p| {
            p["state"] == "running"
                && p["restarts"].as_u64() >= Some(1)
                && p["pid"].as_u64().is_some_and(|new| new != pid && new > 0)
        })
    });
    let shown = node(&nodes, "roles/agent").unwrap();
    assert!(shown["errors_total"].as_u64() >= Some(1), "{shown:#}");
    // A process that never stays up is shown flapping, and the agent keeps restarting it.
    let broken = |n: &Value| -> Option<Value> {
        node(n, "roles/agent")?["processes"]
            .as_array()?
            .iter()
            .find(|p| p["name"] == "broken")
            .cloned()
    };
    let nodes = m.wait("the failing process shown flapping", |n| {
        broken(n).is_some_and(|p| p["state"] == "flapping" && p["restarts"].as_u64() >= Some(3))
    });
    // The agent itself stays up while one of its processes flaps.
    assert_eq!(
        node(&nodes, "roles/agent").unwrap()["state"],
        "up",
        "{nodes:#}"
    );
    assert!(
        !agent.stderr_so_far().contains("panicked"),
        "{}",
        agent.stderr_so_far()
    );
}
