//! The checker's processes: `oasis logd` servers (each with its own data directory, restarted on
//! the same one after a `kill -9`) and `oasis log-ship` shippers (restarted with the same
//! arguments and state file). Every start writes its own log file, kept for a failure's
//! post-mortem. Signals go by process id to the children this test started, never by name.

use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::support::{listening_addr, oasis_bin};

/// The longest a start-up or a clean stop may take before the checker fails.
const START_STOP_MAX: Duration = Duration::from_secs(60);

/// Sends `signal` (e.g. "STOP") to one child process by id.
pub fn signal(child: &Child, signal: &str) {
    let ok = Command::new("kill")
        .args([&format!("-{signal}"), &child.id().to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{signal} {} failed", child.id());
}

/// How a stop went: the exit status, or (the child did not exit within [`START_STOP_MAX`] of its
/// SIGTERM, and was then killed) what it was doing.
pub type Stopped = Result<ExitStatus, String>;

/// Waits for a child to exit after a SIGTERM. One that does not within [`START_STOP_MAX`] is
/// described (each thread's stack, from `gdb` where it is installed, else each thread's kernel
/// wait channel) and killed, and the description is returned for the checker's report.
fn term(child: &mut Child, what: &str) -> Stopped {
    signal(child, "TERM");
    let until = Instant::now() + START_STOP_MAX;
    loop {
        if let Some(st) = child.try_wait().expect("wait for a child") {
            return Ok(st);
        }
        if Instant::now() >= until {
            let stacks = post_mortem(child.id());
            kill9(child);
            return Err(format!(
                "{what} did not exit within {START_STOP_MAX:?} of SIGTERM; its threads:\n{stacks}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Each thread of process `pid`: its stack by `gdb` if that runs, otherwise its name, state and
/// kernel wait channel from `/proc`.
fn post_mortem(pid: u32) -> String {
    // Bounded: attaching can itself hang on a thread in uninterruptible sleep.
    let gdb = Command::new("timeout")
        .args([
            "-k",
            "5",
            "30",
            "gdb",
            "-batch",
            "-nx",
            "-p",
            &pid.to_string(),
        ])
        .args(["-ex", "thread apply all bt 30"])
        .stdin(Stdio::null())
        .output();
    if let Ok(out) = gdb {
        let text = String::from_utf8_lossy(&out.stdout);
        if text.contains("Thread ") {
            return text.into_owned();
        }
    }
    let read = |p: PathBuf| std::fs::read_to_string(p).unwrap_or_default();
    let tasks = PathBuf::from(format!("/proc/{pid}/task"));
    let mut out = String::new();
    for t in std::fs::read_dir(&tasks).into_iter().flatten().flatten() {
        let stat = read(t.path().join("stat"));
        let state = stat
            .rsplit_once(") ")
            .map_or("?", |(_, rest)| &rest[..1.min(rest.len())]);
        out.push_str(&format!(
            "  {} {} state {state} wchan {}\n",
            t.file_name().to_string_lossy(),
            read(t.path().join("comm")).trim(),
            read(t.path().join("wchan")).trim(),
        ));
    }
    out
}

fn kill9(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

/// One `oasis logd` and its data directory.
pub struct Logd {
    pub name: String,
    pub data: PathBuf,
    logs: PathBuf,
    child: Option<Child>,
    /// Where it listens while it runs.
    pub addr: Option<SocketAddr>,
    /// Starts so far (the first included).
    pub starts: u32,
    stopped: bool,
}

impl Logd {
    /// A server named `name`, its data in `data`, its logs in `logs` (not started).
    pub fn new(name: &str, data: &Path, logs: &Path) -> Logd {
        Logd {
            name: name.to_string(),
            data: data.to_path_buf(),
            logs: logs.to_path_buf(),
            child: None,
            addr: None,
            starts: 0,
            stopped: false,
        }
    }

    fn log_path(&self, start: u32) -> PathBuf {
        self.logs.join(format!("{}.{start}.log", self.name))
    }

    /// Starts it (recovering its data directory) and returns where it listens.
    pub fn start(&mut self) -> SocketAddr {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.starts += 1;
        let log = self.log_path(self.starts);
        let mut child = Command::new(oasis_bin())
            .args(["logd", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(&self.data)
            .stdout(Stdio::null())
            .stderr(File::create(&log).expect("create a server log"))
            .spawn()
            .expect("spawn oasis logd");
        let until = Instant::now() + START_STOP_MAX;
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if let Some(a) = listening_addr(&text) {
                self.child = Some(child);
                self.addr = Some(a);
                self.stopped = false;
                return a;
            }
            if let Some(st) = child.try_wait().expect("wait for logd") {
                panic!("{} exited during start-up ({st}):\n{text}", self.name);
            }
            assert!(
                Instant::now() < until,
                "{} did not start:\n{text}",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        self.addr = None;
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
        }
    }

    /// SIGSTOP (`true`) or SIGCONT.
    pub fn pause(&mut self, on: bool) {
        if let Some(c) = &self.child {
            signal(c, if on { "STOP" } else { "CONT" });
            self.stopped = on;
        }
    }

    /// SIGTERM (after a SIGCONT if it was stopped) and how it went (`None`: it was not running).
    /// A server that does not exit is killed, and the last lines of its log join the report.
    pub fn stop(&mut self) -> Option<Stopped> {
        if self.stopped {
            self.pause(false);
        }
        self.addr = None;
        let mut c = self.child.take()?;
        Some(term(&mut c, &self.name).map_err(|e| {
            let log = std::fs::read_to_string(self.log_path(self.starts)).unwrap_or_default();
            let lines: Vec<&str> = log.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            format!("{e}\nthe last lines of its log:\n{tail}")
        }))
    }
}

impl Drop for Logd {
    fn drop(&mut self) {
        if self.stopped {
            self.pause(false);
        }
        self.kill9();
    }
}

/// One `oasis log-ship`.
pub struct Shipper {
    pub name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    /// Starts so far (the first included).
    pub starts: u32,
}

impl Shipper {
    /// A shipper of `stream` to `servers`: of `file` with its `state` file, or of its standard
    /// input (`file` `None`). Not started.
    pub fn new(
        name: &str,
        servers: &str,
        stream: &str,
        file: Option<(&Path, &Path)>,
        log: &Path,
    ) -> Shipper {
        let mut args: Vec<String> = [
            "log-ship",
            "--servers",
            servers,
            "--stream",
            stream,
            "--ack-timeout-secs",
            "2",
            "--stop-timeout-secs",
            "10",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match file {
            Some((file, state)) => {
                args.push("--state-file".into());
                args.push(state.display().to_string());
                args.push(file.display().to_string());
            }
            None => args.push("-".into()),
        }
        Shipper {
            name: name.to_string(),
            args,
            log: log.to_path_buf(),
            child: None,
            starts: 0,
        }
    }

    /// Starts it; for a shipper of standard input, returns the pipe to write it.
    pub fn start(&mut self) -> Option<ChildStdin> {
        assert!(self.child.is_none(), "{} is running", self.name);
        self.starts += 1;
        let log = File::options()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open a shipper log");
        let stdin = match self.args.last() {
            Some(a) if a == "-" => Stdio::piped(),
            _ => Stdio::null(),
        };
        let mut child = Command::new(oasis_bin())
            .args(&self.args)
            .stdin(stdin)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn oasis log-ship");
        let pipe = child.stdin.take();
        self.child = Some(child);
        pipe
    }

    /// `kill -9`.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            kill9(&mut c);
        }
    }

    /// Whether it has exited by itself; its status then.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().expect("wait for a shipper")
    }

    /// SIGTERM and how it went (`None` if it was not running).
    pub fn stop(&mut self) -> Option<Stopped> {
        let mut c = self.child.take()?;
        if let Some(st) = c.try_wait().expect("wait for a shipper") {
            return Some(Ok(st));
        }
        Some(term(&mut c, &self.name))
    }

    /// Its log (every start's).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Shipper {
    fn drop(&mut self) {
        self.kill9();
    }
}
