//! A throw-away PostgreSQL cluster for tests: `initdb` in a temp directory owned by the
//! `postgres` user (the commands run through `runuser -u postgres --` when the tests run as
//! root), started with `pg_ctl` on a free loopback port with its socket in that directory, and
//! stopped and removed when the last handle is dropped. Clusters are shared by the tests of one
//! binary that run at the same time; each test takes a database of its own.
//!
//! [`in_netns`] starts a cluster of the caller's own inside a network namespace the test made,
//! listening on an address of that namespace only (for the tests in a simulated network).
//!
//! No PostgreSQL installed is a test failure that says what to install, never a skip.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// Where Debian's `postgresql` package puts the server binaries, newest first.
fn bin_dir() -> PathBuf {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|p| p.join("initdb").exists())
        .collect();
    dirs.sort();
    match dirs.pop() {
        Some(d) => d,
        None => panic!(
            "initdb was not found under /usr/lib/postgresql/*/bin: the PostgreSQL catalog tests \
             need a real server; install it with `apt-get install -y postgresql` (tests/run.sh does)"
        ),
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// Runs a PostgreSQL tool as the `postgres` user.
fn pg_tool(tool: &str, args: &[&str]) -> Output {
    pg_tool_in(None, tool, args)
}

/// [`pg_tool`], inside network namespace `netns` when one is given (`ip netns exec`).
fn pg_tool_in(netns: Option<&str>, tool: &str, args: &[&str]) -> Output {
    let path = bin_dir().join(tool);
    let mut argv: Vec<std::ffi::OsString> = Vec::new();
    if let Some(ns) = netns {
        argv.extend(["ip", "netns", "exec", ns].map(Into::into));
    }
    if is_root() {
        argv.extend(["runuser", "-u", "postgres", "--"].map(Into::into));
    }
    argv.push(path.clone().into());
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..]);
    let out = cmd
        .args(args)
        .current_dir("/")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", path.display()));
    out
}

fn check(what: &str, out: Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A running cluster. Dropped: stopped (fast) and its directory removed.
pub struct Cluster {
    dir: tempfile::TempDir,
    pub port: u16,
    /// The one address it listens on.
    pub host: String,
    /// The network namespace it runs in (None: the test's own).
    netns: Option<String>,
    databases: AtomicU64,
}

impl Cluster {
    /// A new cluster on a free loopback port.
    fn start() -> Cluster {
        Cluster::start_on(None, "127.0.0.1", free_port())
    }

    /// A new cluster listening on `host:port`, in network namespace `netns` if given.
    fn start_on(netns: Option<&str>, host: &str, port: u16) -> Cluster {
        let dir = tempfile::Builder::new()
            .prefix("oasis-pg-")
            .tempdir()
            .expect("temp dir");
        if is_root() {
            check(
                "chown of the cluster directory",
                Command::new("chown")
                    .args(["-R", "postgres:postgres"])
                    .arg(dir.path())
                    .output()
                    .expect("chown runs"),
            );
        }
        let data = dir.path().join("data");
        check(
            "initdb",
            pg_tool(
                "initdb",
                &[
                    "-D",
                    data.to_str().expect("utf-8 path"),
                    "-U",
                    "postgres",
                    "-A",
                    "trust",
                    "-E",
                    "UTF8",
                    "--no-instructions",
                ],
            ),
        );
        if netns.is_some() {
            // Inside its own namespace it trusts the subnets it is on (the test's network).
            let hba = data.join("pg_hba.conf");
            let mut text = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
            text.push_str("host all all samenet trust\n");
            std::fs::write(&hba, text).expect("write pg_hba.conf");
        }
        let cluster = Cluster {
            dir,
            port,
            host: host.to_string(),
            netns: netns.map(str::to_string),
            databases: AtomicU64::new(0),
        };
        cluster.pg_ctl_start();
        cluster
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Starts the server (again) and waits until it accepts connections.
    pub fn pg_ctl_start(&self) {
        let opts = format!(
            "-c listen_addresses={} -p {} -k {} -c fsync=on",
            self.host,
            self.port,
            self.dir.path().display()
        );
        let log = self.dir.path().join("server.log");
        check(
            "pg_ctl start",
            pg_tool_in(
                self.netns.as_deref(),
                "pg_ctl",
                &[
                    "-D",
                    self.data_dir().to_str().expect("utf-8 path"),
                    "-l",
                    log.to_str().expect("utf-8 path"),
                    "-o",
                    &opts,
                    "-w",
                    "-t",
                    "60",
                    "start",
                ],
            ),
        );
    }

    /// Stops the server with `mode` ("fast", or "immediate": no shutdown checkpoint, as a crash).
    pub fn pg_ctl_stop(&self, mode: &str) {
        check(
            "pg_ctl stop",
            pg_tool(
                "pg_ctl",
                &[
                    "-D",
                    self.data_dir().to_str().expect("utf-8 path"),
                    "-m",
                    mode,
                    "-w",
                    "stop",
                ],
            ),
        );
    }

    /// A new empty database; returns its URL.
    pub fn create_database(&self) -> String {
        let n = self.databases.fetch_add(1, Ordering::Relaxed);
        let name = format!("t{}_{n}", std::process::id());
        let port = self.port.to_string();
        check(
            "createdb",
            pg_tool_in(
                self.netns.as_deref(),
                "createdb",
                &["-h", &self.host, "-p", &port, "-U", "postgres", &name],
            ),
        );
        format!("postgres://postgres@{}:{port}/{name}", self.host)
    }

    /// The rows `sql` returns in database `url` (as `psql -At` prints them: one a line, columns
    /// separated by `|`).
    pub fn psql(&self, url: &str, sql: &str) -> String {
        let out = pg_tool_in(
            self.netns.as_deref(),
            "psql",
            &["-At", "-X", "-d", url, "-c", sql],
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        check("psql", out);
        text
    }

    /// The cluster's directory (the socket and the server log are in it).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = pg_tool(
            "pg_ctl",
            &[
                "-D",
                self.data_dir().to_str().unwrap_or("."),
                "-m",
                "fast",
                "-w",
                "stop",
            ],
        );
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

static SHARED: Mutex<Weak<Cluster>> = Mutex::new(Weak::new());

/// The cluster the tests running now share (started if none runs).
pub fn shared() -> Arc<Cluster> {
    let mut slot = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(c) = slot.upgrade() {
        return c;
    }
    let c = Arc::new(Cluster::start());
    *slot = Arc::downgrade(&c);
    c
}

/// A cluster of the caller's own (for tests that stop and start the server).
pub fn own() -> Cluster {
    Cluster::start()
}

/// A cluster of the caller's own running in network namespace `netns` (which the caller made and
/// keeps until the cluster is dropped), listening on `host:port` only, an address of that
/// namespace. Its tools run in the namespace too; stopping it needs no network.
pub fn in_netns(netns: &str, host: &str, port: u16) -> Cluster {
    Cluster::start_on(Some(netns), host, port)
}
