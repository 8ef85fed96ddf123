//! Shared by the integration tests: starts a real `oasis serve` process on a free loopback port
//! with its own data directory and API token, and stops it (SIGTERM) when dropped.
#![allow(dead_code)]

pub mod monitor;
pub mod players;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const TOKEN: &str = "test-token-0123456789abcdef";

pub struct Server {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub child: Option<Child>,
    data: PathBuf,
}

pub fn oasis_bin() -> &'static str {
    env!("CARGO_BIN_EXE_oasis")
}

/// The address from a server log's first "listening on ADDR" line.
pub fn listening_addr(log: &str) -> Option<SocketAddr> {
    log.lines().find_map(|l| {
        let rest = l.split("listening on ").nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// A port that was free a moment ago, for an address no server binds in the test (one bound
/// by a server is given as port 0 and read back with [`listening_addr`]).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Server {
    /// Starts a server; `extra_toml` is appended to a config that sets the token and access log.
    pub fn start(extra_toml: &str) -> Server {
        Self::start_with(extra_toml, "combined")
    }

    pub fn start_with(extra_toml: &str, layout: &str) -> Server {
        Self::start_full(extra_toml, layout, None)
    }

    /// `listen_bandwidth_bps`: the budget of the one listen address (admission control).
    pub fn start_full(extra_toml: &str, layout: &str, listen_bandwidth_bps: Option<u64>) -> Server {
        Self::start_in(
            tempfile::tempdir().unwrap(),
            extra_toml,
            layout,
            listen_bandwidth_bps,
        )
    }

    /// Like [`Server::start_full`], with the data directory on the disk that holds the build
    /// (`CARGO_TARGET_TMPDIR`), for tests that need a real file system (O_DIRECT), not tmpfs.
    pub fn start_on_disk(extra_toml: &str, layout: &str) -> Server {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        Self::start_in(dir, extra_toml, layout, None)
    }

    /// A server with no API token: every write and `/api` request is refused (403).
    pub fn start_without_token() -> Server {
        Self::start_token(
            tempfile::tempdir().unwrap(),
            "",
            "combined",
            None,
            None,
            None,
        )
    }

    /// A server on an existing data directory (a backup, a rebuilt library); its config and logs
    /// live in a directory of its own.
    pub fn start_on(data: &Path) -> Server {
        Self::start_on_with(data, "")
    }

    /// [`Server::start_on`] with `extra_toml` appended to the configuration.
    pub fn start_on_with(data: &Path, extra_toml: &str) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let data = Some(data.to_path_buf());
        Self::start_token(dir, extra_toml, "combined", None, Some(TOKEN), data)
    }

    fn start_in(
        dir: tempfile::TempDir,
        extra_toml: &str,
        layout: &str,
        listen_bandwidth_bps: Option<u64>,
    ) -> Server {
        Self::start_token(
            dir,
            extra_toml,
            layout,
            listen_bandwidth_bps,
            Some(TOKEN),
            None,
        )
    }

    fn start_token(
        dir: tempfile::TempDir,
        extra_toml: &str,
        layout: &str,
        listen_bandwidth_bps: Option<u64>,
        token: Option<&str>,
        data: Option<PathBuf>,
    ) -> Server {
        // Port 0: the server binds whatever port is free and logs it (no bind-close-rebind race).
        let requested: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let data = data.unwrap_or_else(|| dir.path().join("data"));
        let config = format!(
            "[server]\ndata_dir = {:?}\naccess_log = {:?}\ndrain_timeout_secs = 5\n\n[[listen]]\naddr = \"{requested}\"\nbandwidth_bps = {}\n\n[http]\n{}{extra_toml}\n",
            data.to_str().unwrap(),
            dir.path().join("access.log").to_str().unwrap(),
            listen_bandwidth_bps.unwrap_or(100_000_000_000),
            token.map(|t| format!("api_token = \"{t}\"\n")).unwrap_or_default(),
        );
        let config_path = dir.path().join("oasis.toml");
        std::fs::write(&config_path, config).unwrap();
        let args = ["--config", path_str(&config_path), "--layout", layout];
        Self::spawn(dir, &args, None, data, None)
    }

    /// [`Server::start`] in a process whose open-files limit (soft and hard) is `nofile`, so the
    /// observer's descriptor levels are reached with a few connections.
    pub fn start_with_nofile(extra_toml: &str, nofile: u64) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let requested: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let data = dir.path().join("data");
        let config = format!(
            "[server]\ndata_dir = {:?}\naccess_log = {:?}\ndrain_timeout_secs = 5\n\n[[listen]]\naddr = \"{requested}\"\n\n[http]\napi_token = \"{TOKEN}\"\n{extra_toml}\n",
            data.to_str().unwrap(),
            dir.path().join("access.log").to_str().unwrap(),
        );
        let config_path = dir.path().join("oasis.toml");
        std::fs::write(&config_path, config).unwrap();
        let args = ["--config", path_str(&config_path)];
        Self::spawn(dir, &args, None, data, Some(nofile))
    }

    /// `oasis serve ARGS` as given (say `--listen 127.0.0.1:0`; no config file unless the
    /// arguments name one), with `OASIS_API_TOKEN` set to [`TOKEN`] and the logs in `dir`.
    pub fn start_args(dir: tempfile::TempDir, args: &[&str]) -> Server {
        let data = dir.path().join("data");
        Self::spawn(dir, args, Some(TOKEN), data, None)
    }

    /// [`Server::start_args`] inside network namespace `netns` (`ip netns exec NETNS oasis serve
    /// ARGS`; `ip` execs oasis, so [`Server::pid`] is the server's). Ready once it logs the
    /// address it listens on: that address is reached only from the test's namespaces, never
    /// probed from the test's own.
    pub fn start_args_in_netns(dir: tempfile::TempDir, netns: &str, args: &[&str]) -> Server {
        let data = dir.path().join("data");
        Self::spawn_in(Some(netns), dir, args, Some(TOKEN), data, None)
    }

    fn spawn(
        dir: tempfile::TempDir,
        args: &[&str],
        env_token: Option<&str>,
        data: PathBuf,
        nofile: Option<u64>,
    ) -> Server {
        Self::spawn_in(None, dir, args, env_token, data, nofile)
    }

    /// Starts `oasis serve ARGS`, inside `netns` when given, with its open-files limit set to
    /// `nofile` when given.
    fn spawn_in(
        netns: Option<&str>,
        dir: tempfile::TempDir,
        args: &[&str],
        env_token: Option<&str>,
        data: PathBuf,
        nofile: Option<u64>,
    ) -> Server {
        let stderr = std::fs::File::create(dir.path().join("server.log")).unwrap();
        let mut cmd = match netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, oasis_bin()]);
                c
            }
            None => Command::new(oasis_bin()),
        };
        cmd.arg("serve").args(args).env_remove("OASIS_API_TOKEN");
        if let Some(token) = env_token {
            cmd.env("OASIS_API_TOKEN", token);
        }
        if let Some(n) = nofile {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: n as libc::rlim_t,
                rlim_max: n as libc::rlim_t,
            };
            // SAFETY: setrlimit is async-signal-safe and `limit` is a valid, owned value.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        }
        let child = cmd.stdout(Stdio::null()).stderr(stderr).spawn().unwrap();
        let mut server = Server {
            addr: "127.0.0.1:0".parse().unwrap(),
            dir,
            child: Some(child),
            data,
        };
        server.wait_ready(netns.is_none());
        server
    }

    /// Waits for the server's "listening on ADDR" line and takes the address from it; with
    /// `probe`, until a connection to it succeeds too.
    fn wait_ready(&mut self, probe: bool) {
        let until = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(addr) = listening_addr(&self.server_log()) {
                self.addr = addr;
                if !probe || TcpStream::connect(self.addr).is_ok() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "oasis exited during start-up ({status}):\n{}",
                    self.server_log()
                );
            }
            assert!(
                Instant::now() < until,
                "oasis did not start listening:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn data_dir(&self) -> PathBuf {
        self.data.clone()
    }

    /// The config file the server was started with (tests may rewrite it and send SIGHUP).
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("oasis.toml")
    }

    /// The server's process id (for signals).
    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// True while the server process runs.
    pub fn alive(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// Uploads bytes with the API token; returns the status.
    pub fn put(&self, name: &str, bytes: &[u8]) -> u16 {
        let (status, _, _) = self.request(
            &format!(
                "PUT /media/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                bytes.len()
            ),
            bytes,
        );
        status
    }

    /// Sends a raw request (head + body) on a new connection and reads until close.
    /// Returns (status, head, body).
    pub fn request(&self, head: &str, body: &[u8]) -> (u16, String, Vec<u8>) {
        let mut s = TcpStream::connect(self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s.write_all(head.as_bytes()).unwrap();
        s.write_all(body).unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out);
        split_response(&out)
    }

    /// Sends SIGTERM and waits for the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().unwrap();
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        wait_exit(
            &mut child,
            Duration::from_secs(30),
            "within 30 s of SIGTERM",
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &c.id().to_string()])
                .status();
            let until = Instant::now() + Duration::from_secs(10);
            while Instant::now() < until {
                if let Ok(Some(_)) = c.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Waits up to `within` for `child` to exit; kills it and panics naming `what` if it does not.
pub fn wait_exit(child: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let until = Instant::now() + within;
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if Instant::now() > until {
            let _ = child.kill();
            panic!("oasis did not exit {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Imports `name` with `body` into a new data directory at `data` with `oasis import` (no
/// server running), with a disk space budget of `budget_bytes` (the default budget is the free
/// space less 256 MB, which a small test file system does not have).
pub fn import_one(data: &Path, name: &str, body: &[u8], budget_bytes: u64) {
    let work = tempfile::tempdir().unwrap();
    let src = work.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join(name), body).unwrap();
    let config = work.path().join("import.toml");
    std::fs::write(
        &config,
        format!("[resources]\ndisk_space_bytes = {budget_bytes}\n"),
    )
    .unwrap();
    let out = Command::new(oasis_bin())
        .args(["import", path_str(&src), "--config", path_str(&config)])
        .args(["--data-dir", path_str(data)])
        .output()
        .unwrap();
    assert_success(&out);
}

/// Asserts that a command exited 0, showing its stderr if not.
pub fn assert_success(out: &std::process::Output) {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A tmpfs mounted for a test, unmounted (lazily) when dropped.
pub struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `size` (e.g. "64m") on the new directory `at`. Needs root: without it
    /// the test fails saying so, unless `OASIS_ALLOW_SKIP=1` outside CI, where `None` tells the
    /// test to return (skipped, and said so).
    pub fn mount(at: &Path, size: &str) -> Option<Tmpfs> {
        std::fs::create_dir(at).unwrap();
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .status()
            .is_ok_and(|s| s.success());
        if mounted {
            return Some(Tmpfs(at.to_path_buf()));
        }
        if std::env::var_os("OASIS_ALLOW_SKIP").is_some() && std::env::var_os("CI").is_none() {
            eprintln!("skipped (OASIS_ALLOW_SKIP is set): needs root to mount a tmpfs");
            return None;
        }
        panic!("this test cannot run here: it needs root to mount a tmpfs (set OASIS_ALLOW_SKIP=1 to skip it outside CI)");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A sample's value from the server's `/metrics` (`sample` is the name with its labels).
pub fn metric(s: &Server, sample: &str) -> Option<u64> {
    let (status, _, body) = s.request(
        &format!("GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 200);
    String::from_utf8_lossy(&body).lines().find_map(|l| {
        l.strip_prefix(sample)
            .and_then(|rest| rest.trim().parse().ok())
    })
}

/// Polls until `done` holds; the generous deadline only catches a server that never gets there.
pub fn wait_until(s: &Server, what: &str, mut done: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(
            Instant::now() < until,
            "timed out waiting for {what}; server log:\n{}",
            s.server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Splits one HTTP response into (status, head text, body bytes).
pub fn split_response(raw: &[u8]) -> (u16, String, Vec<u8>) {
    let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") else {
        return (0, String::from_utf8_lossy(raw).into_owned(), Vec::new());
    };
    let head = String::from_utf8_lossy(&raw[..end]).into_owned();
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, head, raw[end + 4..].to_vec())
}

/// A header's value from a response head (case-insensitive name).
pub fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Deterministic test content.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 131 + seed as usize * 7) % 251) as u8)
        .collect()
}

/// Whether a command is on PATH.
pub fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

pub fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd}: {e}"))
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}
