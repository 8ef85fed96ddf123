//! Thin, fenced wrappers over the Linux calls the load generator needs: non-blocking IPv4
//! sockets bound to a chosen loopback source address, epoll, poll, and process limits.
//!
//! Every `unsafe` block of the crate lives here. Nothing here keeps state or reads the clock.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn cvt(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

fn sockaddr_in(addr: SocketAddrV4) -> libc::sockaddr_in {
    libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: addr.port().to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(*addr.ip()).to_be(),
        },
        sin_zero: [0; 8],
    }
}

fn set_int_opt(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `fd` is an open socket owned by the caller; the option value points to a live
    // c_int on this stack frame and its exact size is passed.
    cvt(unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Opens a non-blocking TCP socket, binds it to `source` (port chosen at connect time, so each
/// source address has its own ephemeral port space) and starts connecting to `dest`.
/// The connect is usually still in progress on return: wait for writability, then call
/// [`take_socket_error`].
pub fn connect_nonblocking(source: Option<Ipv4Addr>, dest: SocketAddrV4) -> io::Result<OwnedFd> {
    // SAFETY: plain syscall with constant arguments; the returned descriptor is checked below
    // and immediately wrapped in an OwnedFd, which closes it on every path.
    let raw = cvt(unsafe {
        libc::socket(
            libc::AF_INET,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    })?;
    // SAFETY: `raw` was just returned by socket() and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    set_int_opt(fd.as_raw_fd(), libc::IPPROTO_TCP, libc::TCP_NODELAY, 1)?;
    if let Some(src) = source {
        set_int_opt(
            fd.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            1,
        )?;
        let sa = sockaddr_in(SocketAddrV4::new(src, 0));
        // SAFETY: `sa` is a fully initialised sockaddr_in living on this frame; its size is passed.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        })?;
    }
    let sa = sockaddr_in(dest);
    // SAFETY: as for bind above.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    if ret < 0 {
        let err = io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINPROGRESS) {
            return Err(err);
        }
    }
    Ok(fd)
}

/// Returns the pending error of a socket (the outcome of a non-blocking connect).
pub fn take_socket_error(fd: RawFd) -> io::Result<()> {
    let mut value: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `value` and `len` are live locals; `len` holds the buffer size as required.
    cvt(unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut value as *mut libc::c_int).cast(),
            &mut len,
        )
    })?;
    if value == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(value))
    }
}

/// `read(2)` into `buf`; `Ok(0)` is end of stream.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid writable slice for its whole length during the call.
    let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// Drops up to `len` bytes from a TCP socket's receive queue without copying them
/// (`recv` with `MSG_TRUNC`, which TCP treats as "discard"); returns how many were dropped.
pub fn recv_discard(fd: RawFd, buf: &mut [u8], len: usize) -> io::Result<usize> {
    // Never more than `buf` holds, so the call stays valid even where a kernel would copy.
    let len = len.min(buf.len());
    // SAFETY: `buf` is a valid writable slice of at least `len` bytes during the call.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), len, libc::MSG_TRUNC) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `send(2)` without SIGPIPE.
pub fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a valid readable slice for its whole length during the call.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// An epoll instance; tokens are caller-chosen u64 values.
pub struct Epoll {
    fd: OwnedFd,
}

pub const EV_IN: u32 = libc::EPOLLIN as u32;
pub const EV_OUT: u32 = libc::EPOLLOUT as u32;
pub const EV_ERR: u32 = libc::EPOLLERR as u32;
pub const EV_HUP: u32 = libc::EPOLLHUP as u32;
pub const EV_RDHUP: u32 = libc::EPOLLRDHUP as u32;
const EV_ET: u32 = libc::EPOLLET as u32;

impl Epoll {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the descriptor is wrapped in an OwnedFd right away.
        let raw = cvt(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        // SAFETY: `raw` was just returned by epoll_create1 and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        Ok(Self { fd })
    }

    /// Registers `fd` edge-triggered for input, output, hang-up and errors.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: EV_IN | EV_OUT | EV_RDHUP | EV_ET,
            u64: token,
        };
        // SAFETY: both descriptors are open; `ev` is a live local the kernel only reads.
        cvt(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })
            .map(|_| ())
    }

    /// Waits up to `timeout_ms` and fills `events` (its capacity bounds the batch).
    pub fn wait(&self, events: &mut Vec<libc::epoll_event>, timeout_ms: i32) -> io::Result<usize> {
        events.clear();
        let cap = events.capacity().min(i32::MAX as usize) as i32;
        assert!(cap > 0, "event buffer needs capacity");
        // SAFETY: the kernel writes at most `cap` entries into the vector's spare capacity,
        // and we set the length to exactly the number it reports as written.
        let n =
            unsafe { libc::epoll_wait(self.fd.as_raw_fd(), events.as_mut_ptr(), cap, timeout_ms) };
        if n < 0 {
            let err = io::Error::last_os_error();
            if err.kind() == io::ErrorKind::Interrupted {
                return Ok(0);
            }
            return Err(err);
        }
        // SAFETY: see above: the first `n` entries were initialised by epoll_wait.
        unsafe { events.set_len(n as usize) };
        Ok(n as usize)
    }
}

/// Returns, for each descriptor, whether the peer has closed it or sent data (i.e. it is no
/// longer a quietly held idle connection). Non-blocking.
pub fn poll_disturbed(fds: &[RawFd]) -> io::Result<Vec<bool>> {
    let mut pfds: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLRDHUP,
            revents: 0,
        })
        .collect();
    for chunk in pfds.chunks_mut(4096) {
        // SAFETY: `chunk` is a valid, initialised pollfd slice of the given length.
        cvt(unsafe { libc::poll(chunk.as_mut_ptr(), chunk.len() as libc::nfds_t, 0) })?;
    }
    Ok(pfds.iter().map(|p| p.revents != 0).collect())
}

/// Raises RLIMIT_NOFILE (soft and, when needed and permitted, hard) to at least `want`.
/// Returns the soft limit now in force.
pub fn raise_nofile(want: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live local the kernel fills.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) })?;
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20);
    let target = want.min(nr_open);
    let mut new = libc::rlimit {
        rlim_cur: target,
        rlim_max: lim.rlim_max.max(target),
    };
    // SAFETY: `new` is a live, initialised local the kernel only reads.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) } != 0 {
        // Not privileged: settle for the hard limit.
        new.rlim_cur = lim.rlim_max.min(target);
        new.rlim_max = lim.rlim_max;
        // SAFETY: as above.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &new) })?;
    }
    Ok(new.rlim_cur)
}

/// Number of ephemeral ports per (source, destination) pair, from ip_local_port_range.
pub fn ephemeral_port_count() -> u64 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            let mut it = s.split_whitespace().map(|v| v.parse::<u64>().ok());
            let lo = it.next()??;
            let hi = it.next()??;
            Some(hi.saturating_sub(lo) + 1)
        })
        .unwrap_or(28_000)
}

/// Tries to widen ip_local_port_range to 1024..65000. Returns a note for the report.
pub fn widen_port_range() -> String {
    let path = "/proc/sys/net/ipv4/ip_local_port_range";
    let before = std::fs::read_to_string(path).unwrap_or_default();
    match std::fs::write(path, "1024 65000") {
        Ok(()) => format!(
            "ip_local_port_range widened from '{}' to '1024 65000'",
            before.trim()
        ),
        Err(e) => format!("ip_local_port_range kept at '{}' ({e})", before.trim()),
    }
}

/// VmRSS of a process in KiB, from /proc/PID/status.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Clock ticks per second of `/proc/PID/stat` times: the kernel's USER_HZ, 100 on every Linux
/// architecture this tool runs on.
const USER_HZ: f64 = 100.0;

/// CPU seconds (user + system, every thread) a process has used so far, from /proc/PID/stat.
pub fn cpu_s(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: fields are counted from after its closing parenthesis.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((utime + stime) as f64 / USER_HZ)
}

/// Number of socket descriptors a process holds (its accepted connections plus listeners).
pub fn socket_fds(pid: u32) -> Option<u64> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).ok()?;
    Some(
        dir.filter_map(|e| e.ok())
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .filter(|l| l.to_string_lossy().starts_with("socket:"))
            .count() as u64,
    )
}

/// CPU seconds (user + system) this process has used so far, every thread included.
pub fn process_cpu_s() -> f64 {
    // SAFETY: an all-zero rusage is a valid value; getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid out-pointer cannot fail.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(ru.ru_utime) + secs(ru.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    /// TCP drops what `recv_discard` is asked for, and only that: the bytes after it are still
    /// there, in order.
    #[test]
    fn recv_discard_drops_only_the_bytes_asked_for() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut tx = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (rx, _) = listener.accept().unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        tx.write_all(&data).unwrap();
        drop(tx);
        let fd = rx.as_raw_fd();
        let mut buf = vec![0u8; 8192];
        let mut dropped = 0;
        while dropped < 90_000 {
            let n = recv_discard(fd, &mut buf, 90_000 - dropped).unwrap();
            assert!(n > 0, "EOF after {dropped} bytes");
            dropped += n;
        }
        assert_eq!(dropped, 90_000);
        let mut rest = Vec::new();
        loop {
            let n = read(fd, &mut buf).unwrap();
            if n == 0 {
                break;
            }
            rest.extend_from_slice(&buf[..n]);
        }
        assert_eq!(rest, data[90_000..]);
    }
}
