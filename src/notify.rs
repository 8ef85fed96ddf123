//! sd_notify: tells the service manager that started this process (systemd, when it set
//! `NOTIFY_SOCKET`) that the process is ready, what it is doing, that it is stopping, and that it
//! is still alive (the watchdog). Any long-running command (`serve`, `agent`, and later `logd`
//! and `monitor`) calls [`ready`] once it serves, [`status`] when its state changes, a
//! [`Watchdog`]'s `tick` from its supervising loop, and [`stopping`] when it begins to shut down.
//!
//! Each message is one datagram on a Unix socket: a path, or an abstract name written `@name`.
//! Without `NOTIFY_SOCKET` every call does nothing, so commands call these unconditionally.
//! A message that cannot be sent is logged at debug level and otherwise ignored: a service
//! manager that went away must never stop the server.
//!
//! It does not pass file descriptors (`FDSTORE`), speak `Type=notify-reload`, or link
//! libsystemd: the protocol is one `sendto` of `KEY=value` lines.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

/// The environment variable naming the socket (set by systemd for `Type=notify` units).
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";
/// The watchdog period in microseconds (systemd's `WatchdogSec=`).
pub const WATCHDOG_USEC: &str = "WATCHDOG_USEC";
/// The process the watchdog period is meant for; another process ignores it.
pub const WATCHDOG_PID: &str = "WATCHDOG_PID";

/// The longest `STATUS=` text sent; longer ones are cut at a character boundary.
const STATUS_BYTES_MAX: usize = 1024;

/// Says the service is up and serving (`READY=1`). Call once, after the listeners are bound.
pub fn ready() {
    send_logged("READY=1");
}

/// Describes the current state in one line (`STATUS=...`), shown by `systemctl status`.
/// Line breaks become spaces; text past 1 KiB is cut.
pub fn status(text: &str) {
    send_logged(&format!("STATUS={}", status_line(text)));
}

/// Says the service has begun to shut down (`STOPPING=1`).
pub fn stopping() {
    send_logged("STOPPING=1");
}

/// Tells the watchdog the service is alive (`WATCHDOG=1`). Prefer a [`Watchdog`], which keeps
/// the period.
pub fn watchdog() {
    send_logged("WATCHDOG=1");
}

/// How often to call [`watchdog`]: half the period in `WATCHDOG_USEC`, or `None` when no
/// watchdog is asked of this process (unset, 0, unreadable, or meant for another pid).
pub fn watchdog_interval() -> Option<Duration> {
    watchdog_interval_from(
        std::env::var(WATCHDOG_USEC).ok().as_deref(),
        std::env::var(WATCHDOG_PID).ok().as_deref(),
        std::process::id(),
    )
}

/// [`watchdog_interval`] from the variables' values (pure, for tests).
fn watchdog_interval_from(usec: Option<&str>, pid: Option<&str>, me: u32) -> Option<Duration> {
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(me) {
            return None;
        }
    }
    let usec = usec?.trim().parse::<u64>().ok().filter(|&u| u > 0)?;
    Some(Duration::from_micros(usec / 2))
}

/// Sends the watchdog's keep-alive at half its period from a loop that calls [`Watchdog::tick`]
/// more often than that (`oasis serve`'s supervisor ticks every 50 ms, so `WatchdogSec=` down to
/// a fraction of a second works).
#[derive(Debug)]
pub struct Watchdog {
    interval: Option<Duration>,
    last: Option<Instant>,
}

impl Watchdog {
    /// The watchdog asked of this process by its environment ([`watchdog_interval`]).
    pub fn from_env() -> Watchdog {
        Watchdog {
            interval: watchdog_interval(),
            last: None,
        }
    }

    /// Sends `WATCHDOG=1` when half the period has passed since the last one (at once the first
    /// time).
    pub fn tick(&mut self) {
        let Some(interval) = self.interval else {
            return;
        };
        let now = Instant::now();
        if self
            .last
            .is_none_or(|last| now.duration_since(last) >= interval)
        {
            watchdog();
            self.last = Some(now);
        }
    }
}

/// Sends one message to `NOTIFY_SOCKET`. `Ok(false)` when the variable is not set.
pub fn send(message: &str) -> io::Result<bool> {
    let Some(target) = std::env::var_os(NOTIFY_SOCKET) else {
        return Ok(false);
    };
    let target = target
        .to_str()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "NOTIFY_SOCKET is not UTF-8"))?;
    let addr = socket_addr(target)?;
    let socket = UnixDatagram::unbound()?;
    socket.send_to_addr(message.as_bytes(), &addr)?;
    Ok(true)
}

fn send_logged(message: &str) {
    if let Err(e) = send(message) {
        tracing::debug!("sd_notify {message:?} not sent: {e}");
    }
}

/// The socket address `NOTIFY_SOCKET` names: `@name` is in the abstract namespace, anything else
/// must be an absolute path.
fn socket_addr(target: &str) -> io::Result<SocketAddr> {
    if let Some(name) = target.strip_prefix('@') {
        return SocketAddr::from_abstract_name(name.as_bytes());
    }
    if !target.starts_with('/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("NOTIFY_SOCKET {target:?} is neither an absolute path nor @abstract"),
        ));
    }
    SocketAddr::from_pathname(target)
}

/// One line of at most [`STATUS_BYTES_MAX`] bytes.
fn status_line(text: &str) -> String {
    let mut line: String = text
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    if line.len() > STATUS_BYTES_MAX {
        let mut cut = STATUS_BYTES_MAX;
        while !line.is_char_boundary(cut) {
            cut -= 1;
        }
        line.truncate(cut);
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watchdog_runs_at_half_the_period_for_this_pid_only() {
        let half = |u, p| watchdog_interval_from(u, p, 42);
        assert_eq!(half(Some("2000000"), None), Some(Duration::from_secs(1)));
        assert_eq!(
            half(Some("2000000"), Some("42")),
            Some(Duration::from_secs(1))
        );
        assert_eq!(half(Some("2000000"), Some("43")), None);
        assert_eq!(half(Some("0"), None), None);
        assert_eq!(half(Some("soon"), None), None);
        assert_eq!(half(None, Some("42")), None);
    }

    #[test]
    fn status_is_one_bounded_line() {
        assert_eq!(status_line("a\nb\r\nc"), "a b  c");
        let long = "é".repeat(STATUS_BYTES_MAX);
        let cut = status_line(&long);
        assert!(cut.len() <= STATUS_BYTES_MAX && cut.len() >= STATUS_BYTES_MAX - 1);
    }

    #[test]
    fn socket_names_are_paths_or_abstract() {
        assert!(socket_addr("/run/systemd/notify").is_ok());
        let abs = socket_addr("@oasis/test").unwrap();
        assert_eq!(abs.as_abstract_name(), Some(&b"oasis/test"[..]));
        assert!(socket_addr("relative/path").is_err());
    }

    #[test]
    fn a_message_arrives_on_a_real_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let listener = UnixDatagram::bind(&path).unwrap();
        let addr = socket_addr(path.to_str().unwrap()).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1", &addr)
            .unwrap();
        let mut buf = [0u8; 64];
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
    }
}
