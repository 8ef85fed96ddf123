//! One run of a supervised process: start it (in a process group of its own, dying with the
//! agent), wait on its pidfd for its exit or the agent's stop, stop it (SIGTERM to its group,
//! SIGKILL after a grace period), reap it and say how it ended.
//!
//! It decides nothing (when to restart, what counts as hung: `supervisor.rs`, `policy.rs`). The
//! system calls go through rustix's safe wrappers; the one pre-exec step that needs `unsafe` is
//! `oasis_engine::host::die_with_parent`.

use std::io::{self, PipeReader};
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use rustix::event::{poll, PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use rustix::process::{kill_process_group, pidfd_open, Pid, PidfdFlags, Signal};

use super::config::ProcessSpec;
use crate::notify;

/// After SIGKILL, how long to wait for the exit before reaping blindly (a process in
/// uninterruptible sleep dies only when its I/O ends).
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A started process, not yet reaped.
#[derive(Debug)]
pub struct Running {
    child: std::process::Child,
    pidfd: OwnedFd,
    pid: Pid,
    /// When it was started.
    pub started: Instant,
}

/// What ended a wait.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The process exited (reap it).
    Exited,
    /// The agent is stopping (its stop pipe was closed).
    Stop,
    /// Neither, within the time given.
    Timeout,
}

impl Running {
    /// Starts `spec`'s command: its arguments, environment (the agent's, less the service
    /// manager's notify variables, plus `env`), working directory; stdin from /dev/null,
    /// stdout and stderr shared with the agent.
    pub fn spawn(spec: &ProcessSpec) -> io::Result<Running> {
        let mut cmd = Command::new(&spec.command);
        cmd.args(&spec.args)
            // Notifications to systemd are the agent's to send, not its children's.
            .env_remove(notify::NOTIFY_SOCKET)
            .env_remove(notify::WATCHDOG_USEC)
            .env_remove(notify::WATCHDOG_PID)
            .envs(&spec.env)
            .stdin(Stdio::null())
            // Its own group: signals reach whatever it started too.
            .process_group(0);
        if let Some(dir) = &spec.cwd {
            cmd.current_dir(dir);
        }
        oasis_engine::host::die_with_parent(&mut cmd);
        let started = Instant::now();
        let mut child = cmd.spawn().map_err(|e| match &spec.cwd {
            Some(dir) if !dir.is_dir() => io::Error::new(
                e.kind(),
                format!("its working directory {} is missing ({e})", dir.display()),
            ),
            _ => e,
        })?;
        let pid = Pid::from_child(&child);
        // The child cannot be reaped by anyone else, so its pid names it until we wait for it.
        let pidfd = match pidfd_open(pid, PidfdFlags::empty()) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(io::Error::other(format!(
                    "pidfd_open failed ({e}); the agent needs Linux 5.3 or later"
                )));
            }
        };
        Ok(Running {
            child,
            pidfd,
            pid,
            started,
        })
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit or for `stop` to become readable or
    /// closed.
    pub fn wait(&self, stop: &PipeReader, timeout: Duration) -> Event {
        let mut fds = [
            PollFd::new(&self.pidfd, PollFlags::IN),
            PollFd::new(stop, PollFlags::IN),
        ];
        poll_until(&mut fds, timeout);
        if !fds[0].revents().is_empty() {
            Event::Exited
        } else if !fds[1].revents().is_empty() {
            Event::Stop
        } else {
            Event::Timeout
        }
    }

    /// Whether the process has exited within `timeout`.
    fn exited_within(&self, timeout: Duration) -> bool {
        let mut fds = [PollFd::new(&self.pidfd, PollFlags::IN)];
        poll_until(&mut fds, timeout);
        !fds[0].revents().is_empty()
    }

    fn signal_group(&self, sig: Signal) {
        // ESRCH: nobody left in the group.
        if let Err(e) = kill_process_group(self.pid, sig) {
            if e != Errno::SRCH {
                tracing::warn!(
                    "signalling process group {}: {e}",
                    self.pid.as_raw_nonzero()
                );
            }
        }
    }

    /// Stops the process: SIGTERM to its group, SIGKILL after `grace` if it still runs; then
    /// reaps it. Returns how it ended and whether SIGKILL was needed.
    pub fn terminate(self, grace: Duration) -> (ExitStatus, bool) {
        let mut killed = false;
        if !self.exited_within(Duration::ZERO) {
            self.signal_group(Signal::TERM);
            if !self.exited_within(grace) {
                killed = true;
                self.signal_group(Signal::KILL);
                if !self.exited_within(KILL_WAIT) {
                    tracing::warn!(
                        "pid {} still there {} s after SIGKILL (uninterruptible sleep?); waiting for it",
                        self.pid(),
                        KILL_WAIT.as_secs()
                    );
                }
            }
        }
        (self.reap(), killed)
    }

    /// Reaps an exited process, after killing whatever it left behind in its group (the pid,
    /// still held by the unreaped process, cannot name another group).
    pub fn reap(mut self) -> ExitStatus {
        self.signal_group(Signal::KILL);
        match self.child.wait() {
            Ok(status) => status,
            Err(e) => {
                // Only possible if someone else reaped it; say so and carry on as if killed.
                tracing::error!("waiting for pid {}: {e}", self.pid());
                ExitStatus::from_raw(libc::SIGKILL)
            }
        }
    }
}

/// `poll` for at most `timeout`, again after a signal interrupts it (the remaining time).
pub(super) fn poll_until(fds: &mut [PollFd<'_>], timeout: Duration) {
    let until = Instant::now() + timeout;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let ts = Timespec::try_from(left).unwrap_or(Timespec {
            tv_sec: i64::MAX,
            tv_nsec: 0,
        });
        match poll(fds, Some(&ts)) {
            Err(Errno::INTR) => continue,
            Err(e) => {
                // Not expected with valid descriptors; avoid a busy loop all the same.
                tracing::error!("poll: {e}");
                std::thread::sleep(left.min(Duration::from_millis(100)));
                return;
            }
            Ok(_) => return,
        }
    }
}

/// How a run ended, in words: "exit status 1", "killed by signal 9 (SIGKILL)".
pub fn describe(status: ExitStatus) -> String {
    if let Some(code) = status.code() {
        return format!("exit status {code}");
    }
    let Some(sig) = status.signal() else {
        return status.to_string();
    };
    let core = if status.core_dumped() {
        ", core dumped"
    } else {
        ""
    };
    match signal_name(sig) {
        Some(name) => format!("killed by signal {sig} ({name}{core})"),
        None => format!("killed by signal {sig}{core}"),
    }
}

fn signal_name(sig: i32) -> Option<&'static str> {
    Some(match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        libc::SIGXCPU => "SIGXCPU",
        libc::SIGXFSZ => "SIGXFSZ",
        libc::SIGSYS => "SIGSYS",
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(command: &str, args: &[&str]) -> ProcessSpec {
        let text = format!("[[process]]\nname = \"t\"\ncommand = {command:?}\nargs = {args:?}\n");
        super::super::config::AgentConfig::parse(&text)
            .unwrap()
            .processes
            .remove(0)
    }

    #[test]
    fn exits_are_described() {
        assert_eq!(describe(ExitStatus::from_raw(1 << 8)), "exit status 1");
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGKILL)),
            "killed by signal 9 (SIGKILL)"
        );
        assert_eq!(
            describe(ExitStatus::from_raw(libc::SIGSEGV | 0x80)),
            "killed by signal 11 (SIGSEGV, core dumped)"
        );
    }

    #[test]
    fn a_missing_working_directory_is_named() {
        let mut s = spec("true", &[]);
        s.cwd = Some("/nonexistent/oasis-agent-cwd".into());
        let err = Running::spawn(&s).unwrap_err().to_string();
        assert!(
            err.contains("working directory /nonexistent/oasis-agent-cwd is missing"),
            "{err}"
        );
    }

    #[test]
    fn an_exit_is_seen_through_the_pidfd() {
        let (stop, _keep) = std::io::pipe().unwrap();
        let run = Running::spawn(&spec("sh", &["-c", "exit 3"])).unwrap();
        assert_eq!(run.wait(&stop, Duration::from_secs(30)), Event::Exited);
        assert_eq!(describe(run.reap()), "exit status 3");
    }

    #[test]
    fn the_stop_pipe_closing_wakes_the_wait() {
        let (stop, writer) = std::io::pipe().unwrap();
        let run = Running::spawn(&spec("sleep", &["600"])).unwrap();
        assert_eq!(run.wait(&stop, Duration::ZERO), Event::Timeout);
        drop(writer);
        assert_eq!(run.wait(&stop, Duration::from_secs(30)), Event::Stop);
        let (status, killed) = run.terminate(Duration::from_secs(30));
        assert_eq!(describe(status), "killed by signal 15 (SIGTERM)");
        assert!(!killed);
    }

    #[test]
    fn a_process_that_ignores_sigterm_gets_sigkill_and_so_does_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let bg = dir.path().join("bg.pid");
        let script = format!("trap '' TERM; sleep 600 & echo $! > {}; wait", bg.display());
        let run = Running::spawn(&spec("sh", &["-c", &script])).unwrap();
        let until = Instant::now() + Duration::from_secs(30);
        let sleeper = loop {
            if let Some(pid) = std::fs::read_to_string(&bg)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            {
                break pid;
            }
            assert!(Instant::now() < until, "the script never started its sleep");
            std::thread::sleep(Duration::from_millis(10));
        };
        let (status, killed) = run.terminate(Duration::from_millis(200));
        assert!(killed);
        assert_eq!(describe(status), "killed by signal 9 (SIGKILL)");
        // The background sleep went with its shell: gone, or a zombie waiting for init.
        let until = Instant::now() + Duration::from_secs(30);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{sleeper}/stat")).unwrap_or_default();
            let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
            if stat.is_empty() || state == Some('Z') {
                break;
            }
            assert!(
                Instant::now() < until,
                "the group's sleep outlived it: {stat}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}
