//! The restart agent and sd_notify, with real processes and real sockets.
//!
//! - `oasis serve` and `oasis agent` speak sd_notify to a Unix datagram socket the test binds
//!   (a path for one, an abstract name for the other): `READY=1`, `STATUS=`, `WATCHDOG=1` again
//!   and again at half of `WATCHDOG_USEC` (2 s here, so every second), and `STOPPING=1` on
//!   SIGTERM, after which each exits 0; the agent's children are stopped with it and never see
//!   the agent's `NOTIFY_SOCKET`.
//! - `oasis agent` supervising a real `oasis serve` on a fixed port: the server is killed with
//!   SIGKILL 10 times (`OASIS_AGENT_KILLS=100` for the long run, `benches/restart.sh`), each time
//!   the test measures death-to-serving (until `GET /healthz` answers 200) and prints the times;
//!   it checks only that the server came back (within a generous 30 s), that an object uploaded
//!   before the kills is still served, and that `/api/processes` counts the restarts.
//! - A process that exits at once every time backs off (the waits the agent logs double up to
//!   the cap and stay there), is marked flapping, and the agent keeps running and retrying; so
//!   does a command that does not exist.
//! - A hung process is killed and restarted: one that never answers its health URL and ignores
//!   SIGTERM (SIGKILL after the grace), and a serving `oasis serve` frozen with SIGSTOP.
//! - A bad configuration is refused with what is wrong and where.
//!
//! No assertion is on timing; the bounds only catch an agent that never acts.

mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;
use support::{free_port, oasis_bin, path_str, split_response, TOKEN};

/// The bound on anything the test waits for: only an agent that never acts reaches it.
const PATIENCE: Duration = Duration::from_secs(30);

fn signal(pid: u32, sig: Signal) {
    let pid = Pid::from_raw(pid as i32).expect("a real pid");
    kill_process(pid, sig).unwrap_or_else(|e| panic!("signalling {pid:?}: {e}"));
}

/// Waits for `child` to exit, at most [`PATIENCE`].
fn wait_exit(child: &mut Child) -> ExitStatus {
    let until = Instant::now() + PATIENCE;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("process {} did not exit", child.id());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether `pid` names a live (not zombie) process.
fn alive(pid: u32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
    !stat.is_empty() && state != Some('Z')
}

/// One GET on a new connection: (status, body), or `None` when nothing answered.
fn get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes())
        .ok()?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).ok()?;
    let (status, _, body) = split_response(&out);
    (status != 0).then_some((status, body))
}

fn put(addr: SocketAddr, name: &str, body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(PATIENCE)).unwrap();
    let head = format!(
        "PUT /media/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    split_response(&out).0
}

/// A Unix datagram socket standing in for systemd's notify socket.
struct NotifySocket {
    socket: UnixDatagram,
    /// What `NOTIFY_SOCKET` is set to.
    env: String,
    seen: Vec<String>,
}

impl NotifySocket {
    fn at_path(dir: &Path) -> NotifySocket {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket::new(socket, path_str(&path).to_string())
    }

    fn abstract_name() -> NotifySocket {
        let name = format!(
            "oasis-test-notify-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        );
        let addr = UnixAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        NotifySocket::new(socket, format!("@{name}"))
    }

    fn new(socket: UnixDatagram, env: String) -> NotifySocket {
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        NotifySocket {
            socket,
            env,
            seen: Vec::new(),
        }
    }

    /// Receives messages until one line is `want`; returns when it arrived.
    fn expect(&mut self, want: &str, log: impl Fn() -> String) -> Instant {
        let until = Instant::now() + PATIENCE;
        let mut buf = [0u8; 4096];
        loop {
            if let Ok(n) = self.socket.recv(&mut buf) {
                let at = Instant::now();
                let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                let found = text.lines().any(|l| l == want);
                self.seen.extend(text.lines().map(str::to_string));
                if found {
                    return at;
                }
            }
            assert!(
                Instant::now() < until,
                "no {want} on the notify socket; received {:?}\nlog:\n{}",
                self.seen,
                log()
            );
        }
    }
}

/// A running `oasis agent` with its configuration and log in `dir`.
struct Agent {
    child: Option<Child>,
    dir: tempfile::TempDir,
    http: SocketAddr,
}

impl Agent {
    /// Starts an agent whose control endpoint listens on a port the kernel picks;
    /// `processes` are its `[[process]]` tables.
    fn start(processes: &str, notify: Option<&NotifySocket>) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(&config, format!("http = \"127.0.0.1:0\"\n{processes}")).unwrap();
        let log = std::fs::File::create(dir.path().join("agent.log")).unwrap();
        let mut cmd = Command::new(oasis_bin());
        cmd.args(["agent", "--config", path_str(&config)])
            .env_remove("NOTIFY_SOCKET")
            .env_remove("WATCHDOG_PID")
            .env_remove("WATCHDOG_USEC")
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(n) = notify {
            cmd.env("NOTIFY_SOCKET", &n.env)
                .env("WATCHDOG_USEC", "2000000");
        }
        let mut agent = Agent {
            child: Some(cmd.spawn().unwrap()),
            dir,
            http: "127.0.0.1:0".parse().unwrap(),
        };
        let until = Instant::now() + PATIENCE;
        agent.http = loop {
            let log = agent.log();
            let addr = log.lines().find_map(|l| {
                l.split("control endpoint on ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            });
            if let Some(addr) = addr {
                break addr;
            }
            if let Some(status) = agent.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("the agent exited at start ({status}):\n{log}");
            }
            assert!(Instant::now() < until, "the agent never listened:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        };
        agent
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("agent.log")).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// The agent's entry for process `name` from `GET /api/processes`.
    fn process(&self, name: &str) -> Value {
        let (status, body) = get(self.http, "/api/processes")
            .unwrap_or_else(|| panic!("the agent's endpoint did not answer:\n{}", self.log()));
        assert_eq!(status, 200);
        let all: Value = serde_json::from_slice(&body).unwrap();
        all["processes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no process {name} in {all}"))
    }

    /// Polls `name`'s entry until `done` holds, at most [`PATIENCE`].
    fn wait_for(&self, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
        let until = Instant::now() + PATIENCE;
        loop {
            let p = self.process(name);
            if done(&p) {
                return p;
            }
            assert!(
                Instant::now() < until,
                "{name} never got to: {what}; last {p}\nagent log:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, and the exit status.
    fn stop(&mut self) -> ExitStatus {
        signal(self.pid(), Signal::TERM);
        self.wait_exit()
    }

    /// The exit status of an agent already told to stop.
    fn wait_exit(&mut self) -> ExitStatus {
        let mut child = self.child.take().unwrap();
        wait_exit(&mut child)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill_process(Pid::from_child(&child), Signal::TERM);
            let until = Instant::now() + PATIENCE;
            while Instant::now() < until {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A `[[process]]` running `oasis serve` on `port` with its data in `data`; `extra` adds keys.
fn server_process(port: u16, data: &Path, extra: &str) -> String {
    format!(
        "[[process]]\nname = \"media\"\ncommand = {:?}\n\
         args = [\"serve\", \"--listen\", \"127.0.0.1:{port}\", \"--data-dir\", {:?}]\n\
         env = {{ OASIS_API_TOKEN = \"{TOKEN}\" }}\n\
         health_url = \"http://127.0.0.1:{port}/healthz\"\n{extra}",
        oasis_bin(),
        path_str(data),
    )
}

#[test]
fn serve_speaks_sd_notify() {
    let dir = tempfile::tempdir().unwrap();
    let mut notify = NotifySocket::at_path(dir.path());
    let log_path = dir.path().join("server.log");
    let mut server = Command::new(oasis_bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .env("NOTIFY_SOCKET", &notify.env)
        .env("WATCHDOG_USEC", "2000000")
        .env_remove("WATCHDOG_PID")
        .env("OASIS_API_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log_path).unwrap())
        .spawn()
        .unwrap();
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    notify.expect("READY=1", log);
    // Serving by then: the listener is bound.
    let addr = support::listening_addr(&log()).expect("a listening line before READY=1");
    assert_eq!(get(addr, "/healthz").map(|r| r.0), Some(200));
    let first = notify.expect("WATCHDOG=1", log);
    let second = notify.expect("WATCHDOG=1", log);
    println!(
        "serve: WATCHDOG=1 every {} ms with WATCHDOG_USEC=2000000",
        second.duration_since(first).as_millis()
    );
    assert!(
        notify
            .seen
            .iter()
            .any(|l| l.starts_with("STATUS=serving on 127.0.0.1:")),
        "{:?}",
        notify.seen
    );
    signal(server.id(), Signal::TERM);
    notify.expect("STOPPING=1", log);
    let status = wait_exit(&mut server);
    assert!(status.success(), "{status}\n{}", log());
}

#[test]
fn the_agent_speaks_sd_notify_and_stops_its_children_on_sigterm() {
    let mut notify = NotifySocket::abstract_name();
    let work = tempfile::tempdir().unwrap();
    let env_file = work.path().join("child-env");
    let script = format!(
        "echo \"notify=$NOTIFY_SOCKET watchdog=$WATCHDOG_USEC\" > {}; exec sleep 600",
        path_str(&env_file)
    );
    let mut agent = Agent::start(
        &format!("[[process]]\nname = \"sleeper\"\ncommand = \"sh\"\nargs = [\"-c\", {script:?}]\nmin_uptime_ms = 100\n"),
        Some(&notify),
    );
    notify.expect("READY=1", || agent.log());
    let first = notify.expect("WATCHDOG=1", || agent.log());
    let second = notify.expect("WATCHDOG=1", || agent.log());
    println!(
        "agent: WATCHDOG=1 every {} ms with WATCHDOG_USEC=2000000",
        second.duration_since(first).as_millis()
    );
    let sleeper = agent.wait_for("sleeper", "running", |p| p["state"] == "running");
    let pid = sleeper["pid"].as_u64().unwrap() as u32;
    assert!(alive(pid));
    assert!(
        notify
            .seen
            .iter()
            .any(|l| l.starts_with("STATUS=supervising 1: ")),
        "{:?}",
        notify.seen
    );
    // The service manager's variables are the agent's, not its children's.
    let env = std::fs::read_to_string(&env_file).unwrap();
    assert_eq!(env.trim(), "notify= watchdog=");

    signal(agent.pid(), Signal::TERM);
    notify.expect("STOPPING=1", || agent.log());
    let status = agent.wait_exit();
    assert!(status.success(), "{status}\n{}", agent.log());
    assert!(
        !alive(pid),
        "the agent exited and left its child {pid} running"
    );
    assert!(agent.log().contains("sleeper (pid"), "{}", agent.log());
}

#[test]
fn the_agent_brings_a_killed_server_back_every_time() {
    let kills: usize = std::env::var("OASIS_AGENT_KILLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mut agent = Agent::start(&server_process(port, data.path(), ""), None);
    let first = agent.wait_for("media", "running", |p| p["state"] == "running");
    let body = support::pattern(100_000, 7);
    assert_eq!(put(addr, "kept.bin", &body), 201, "{}", agent.log());

    let mut pid = first["pid"].as_u64().unwrap();
    let mut restarts_before = 0;
    // Death-to-serving of each kill, and whether its first restart failed (and was retried).
    let mut times = Vec::with_capacity(kills);
    for i in 0..kills {
        signal(pid as u32, Signal::KILL);
        let died = Instant::now();
        loop {
            if get(addr, "/healthz").is_some_and(|(status, _)| status == 200) {
                break;
            }
            assert!(
                died.elapsed() < PATIENCE,
                "kill {}: the server did not come back\nagent log:\n{}",
                i + 1,
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        let took = died.elapsed();
        // The next kill waits until the agent itself has seen the new run serve.
        let now = agent.wait_for("media", "running again", |p| {
            p["state"] == "running" && p["pid"].as_u64().is_some_and(|p| p != pid)
        });
        pid = now["pid"].as_u64().unwrap();
        let restarts = now["restarts"].as_u64().unwrap();
        times.push((took, restarts > restarts_before + 1));
        restarts_before = restarts;
    }
    let media = agent.process("media");
    let restarts = media["restarts"].as_u64().unwrap() as usize;
    assert!(
        restarts >= kills,
        "{kills} kills, {restarts} restarts: {media}"
    );
    let log = agent.log();
    let killed = log
        .lines()
        .filter(|l| {
            l.contains("media (pid") && l.contains("): killed by signal 9 (SIGKILL); restart")
        })
        .count();
    assert_eq!(killed, kills, "each kill logged with its signal:\n{log}");
    let (status, got) = get(addr, "/media/kept.bin").unwrap();
    assert_eq!((status, got.len()), (200, body.len()));
    assert!(got == body, "the object survived {kills} kills");

    print_times(&times);
    let status = agent.stop();
    assert!(status.success(), "{status}");
    assert!(!alive(pid as u32), "the server outlived the agent");
}

/// Prints death-to-serving times: every one, then median, p99 and max, of all and apart for the
/// kills whose first restart failed (`benches/restart.sh` reads the summary lines).
fn print_times(times: &[(Duration, bool)]) {
    let ms = |t: &Duration| t.as_secs_f64() * 1000.0;
    println!(
        "death-to-serving, ms, in kill order (* = first restart failed): {}",
        times
            .iter()
            .map(|(t, retried)| format!("{:.0}{}", ms(t), if *retried { "*" } else { "" }))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let summary = |label: &str, pick: &dyn Fn(bool) -> bool| {
        let mut v: Vec<f64> = times
            .iter()
            .filter(|(_, r)| pick(*r))
            .map(|(t, _)| ms(t))
            .collect();
        if v.is_empty() {
            return;
        }
        v.sort_by(|a, b| a.total_cmp(b));
        let at = |q: f64| v[((v.len() as f64 * q).ceil() as usize).clamp(1, v.len()) - 1];
        println!(
            "restart summary, {label}: {} kills, death-to-serving median {:.0} ms, p99 {:.0} ms, max {:.0} ms",
            v.len(),
            at(0.5),
            at(0.99),
            at(1.0)
        );
    };
    summary("all", &|_| true);
    summary("first restart served", &|r| !r);
    summary("first restart failed, retried after the backoff", &|r| r);
}

#[test]
fn a_process_that_keeps_failing_backs_off_flaps_and_is_never_given_up() {
    let agent = Agent::start(
        "[[process]]\nname = \"broken\"\ncommand = \"false\"\n\
         restart_backoff_ms = 20\nrestart_backoff_max_ms = 160\nflapping_restarts = 3\n\
         [[process]]\nname = \"missing\"\ncommand = \"/nonexistent/oasis-agent-test\"\n\
         restart_backoff_ms = 20\nrestart_backoff_max_ms = 40\n",
        None,
    );
    let broken = agent.wait_for("broken", "8 restarts, flapping", |p| {
        p["restarts"].as_u64().unwrap() >= 8 && p["flapping"] == true
    });
    assert_eq!(broken["last_exit"], "exit status 1");
    assert_eq!(broken["last_backoff_ms"], 160, "at the cap: {broken}");
    let missing = agent.wait_for("missing", "3 restarts", |p| {
        p["restarts"].as_u64().unwrap() >= 3
    });
    let why = missing["last_exit"].as_str().unwrap();
    assert!(
        why.contains("could not start") && why.contains("No such file"),
        "{why}"
    );
    // The waits the agent chose, in order: doubling from 20 ms to the 160 ms cap, then staying.
    let log = agent.log();
    let waits: Vec<u64> = log
        .lines()
        .filter(|l| l.contains("broken (pid") && l.contains("before it came up"))
        .filter_map(|l| l.split(" in ").last()?.strip_suffix(" ms")?.parse().ok())
        .collect();
    assert!(waits.len() >= 8, "{log}");
    assert_eq!(waits[..4], [20, 40, 80, 160], "{log}");
    assert!(waits[4..].iter().all(|&w| w == 160), "{waits:?}");
    assert!(log.contains("broken is flapping: 3 restarts"), "{log}");
    // Still there, still trying.
    let later = agent.wait_for("broken", "more restarts", |p| {
        p["restarts"].as_u64().unwrap() > broken["restarts"].as_u64().unwrap()
    });
    assert!(later["state"] == "backoff" || later["state"] == "starting");
}

#[test]
fn a_process_that_never_answers_and_ignores_sigterm_is_killed_and_restarted() {
    let closed = free_port();
    let agent = Agent::start(
        &format!(
            "[[process]]\nname = \"stuck\"\ncommand = \"sh\"\n\
             args = [\"-c\", \"trap '' TERM; exec sleep 600\"]\n\
             health_url = \"http://127.0.0.1:{closed}/healthz\"\n\
             start_timeout_ms = 300\nstop_grace_ms = 200\n\
             restart_backoff_ms = 50\nrestart_backoff_max_ms = 100\n"
        ),
        None,
    );
    let first = agent.wait_for("stuck", "started", |p| p["pid"].is_u64());
    let pid = first["pid"].as_u64().unwrap() as u32;
    let p = agent.wait_for("stuck", "2 restarts", |p| {
        p["restarts"].as_u64().unwrap() >= 2
    });
    let why = p["last_exit"].as_str().unwrap();
    assert!(why.contains("hung") && why.contains("SIGKILL"), "{why}");
    assert!(!alive(pid), "the hung process {pid} is still there");
    let log = agent.log();
    assert!(
        log.contains("not answering health_url 300 ms after start"),
        "{log}"
    );
}

#[test]
fn a_frozen_server_is_killed_and_restarted() {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let data = tempfile::tempdir().unwrap();
    let agent = Agent::start(
        &server_process(
            port,
            data.path(),
            "health_interval_ms = 100\nhealth_timeout_ms = 200\nhealth_failures = 3\nstop_grace_ms = 500\n",
        ),
        None,
    );
    let first = agent.wait_for("media", "running", |p| p["state"] == "running");
    let pid = first["pid"].as_u64().unwrap();
    // Frozen: the kernel still accepts connections for it, nothing answers them.
    signal(pid as u32, Signal::STOP);
    let back = agent.wait_for("media", "running again", |p| {
        p["state"] == "running" && p["pid"].as_u64().is_some_and(|p| p != pid)
    });
    assert!(back["restarts"].as_u64().unwrap() >= 1);
    assert_eq!(get(addr, "/healthz").map(|r| r.0), Some(200));
    let log = agent.log();
    assert!(
        log.contains("is hung: 3 health checks failed in a row"),
        "{log}"
    );
    assert!(!alive(pid as u32), "the frozen server {pid} is still there");
}

#[test]
fn a_bad_configuration_is_refused_with_what_and_where() {
    let dir = tempfile::tempdir().unwrap();
    let check = |text: &str, wants: &[&str]| {
        let path = dir.path().join("agent.toml");
        std::fs::write(&path, text).unwrap();
        let out = Command::new(oasis_bin())
            .args(["agent", "--config", path_str(&path)])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        for want in wants {
            assert!(err.contains(want), "{want:?} not in:\n{err}");
        }
    };
    check(
        "[[process]]\nname = \"a\"\ncommand = \"true\"\nrestart_delay_ms = 5\n",
        &["agent.toml", "line 4", "unknown field `restart_delay_ms`"],
    );
    check(
        "[[process]]\nname = \"a\"\nargs = []\n",
        &["missing field `command`"],
    );
    check(
        "[[process]]\nname = \"a\"\ncommand = \"true\"\nhealth_failures = 0\n\
         [[process]]\nname = \"a\"\ncommand = \"true\"\n",
        &["health_failures must be 1 to 100", "used twice"],
    );
}
