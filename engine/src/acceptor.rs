//! The acceptor thread and the listeners it serves.
//!
//! [`bind`] makes the listening sockets at start-up; [`acceptor`] runs one ring with a multishot
//! accept on each and hands every connection, once reserved with the Resource Manager, to the
//! least-loaded command worker's mailbox. It must never read from or write to a connection beyond
//! the best-effort refusal bytes of one it cannot place.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use io_uring::{opcode, types};
use socket2::{Domain, SockRef, Socket, Type};

use crate::layout::Roles;
use crate::resource::Resource;
use crate::shared::{Msg, Shared};

/// How long [`bind`] keeps trying an address in use. A server killed a moment ago may hold its
/// listener for a while: its rings release their sockets after the process is gone (35-120 ms
/// measured on 2026-12-06), so a restart at once used to fail and wait for the agent's backoff.
/// nginx tries five times, half a second apart; this retries sooner, for about as long.
pub(crate) const BIND_IN_USE_RETRY_FOR: Duration = Duration::from_secs(2);

/// The pause between two tries of an address in use.
const BIND_IN_USE_PAUSE: Duration = Duration::from_millis(25);

/// Makes a listening socket on `addr`: close-on-exec, SO_REUSEADDR, blocking (accepts go through
/// the ring, never a read on the descriptor). An address in use is tried again for
/// [`BIND_IN_USE_RETRY_FOR`] before the error is returned.
pub(crate) fn bind(addr: SocketAddr, backlog: u32) -> std::io::Result<OwnedFd> {
    let mut waited = Duration::ZERO;
    loop {
        match try_bind(addr, backlog) {
            Err(err)
                if err.kind() == std::io::ErrorKind::AddrInUse
                    && waited < BIND_IN_USE_RETRY_FOR =>
            {
                if waited.is_zero() {
                    tracing::warn!(
                        "{addr}: address in use; trying again for up to {} s (a server that \
                         just stopped may still hold it)",
                        BIND_IN_USE_RETRY_FOR.as_secs()
                    );
                }
                std::thread::sleep(BIND_IN_USE_PAUSE);
                waited += BIND_IN_USE_PAUSE;
            }
            Err(err) => return Err(err),
            Ok(fd) => {
                if !waited.is_zero() {
                    tracing::info!("{addr}: bound after {} ms", waited.as_millis());
                }
                return Ok(fd);
            }
        }
    }
}

fn try_bind(addr: SocketAddr, backlog: u32) -> std::io::Result<OwnedFd> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    // Without it a restart may wait out the last run's TIME_WAIT; the listener works either way.
    let _ = socket.set_reuse_address(true);
    socket.bind(&addr.into())?;
    socket.listen(backlog as i32)?;
    Ok(socket.into())
}

const ACCEPT_WAKE: u64 = u64::MAX;
const ACCEPT_RETRY: u64 = u64::MAX - 1;

/// The acceptor: multishot accept on every listener; each connection is reserved, then handed to
/// the least-loaded command worker. Refused connections get the service's refusal bytes.
pub(crate) fn acceptor(shared: Arc<Shared>, sockets: Vec<OwnedFd>) -> std::io::Result<()> {
    let mut ring = io_uring::IoUring::new(256)?;
    let multishot = shared.features.multishot_accept;
    let mut wake_buf = Box::new(0u64);
    // The listeners and the wake eventfd live as long as the ring: registered (fixed) files spare
    // every operation on them the descriptor-table lookup. Slot i is listener i, the last the wake.
    let mut table: Vec<RawFd> = sockets.iter().map(|s| s.as_raw_fd()).collect();
    table.push(shared.acceptor_wake.eventfd());
    let fixed = match ring.submitter().register_files(&table) {
        Ok(()) => true,
        Err(e) => {
            tracing::debug!("acceptor: registered files unavailable ({e}); using descriptors");
            false
        }
    };
    let wake_slot = (table.len() - 1) as u32;
    let arm = |ring: &mut io_uring::IoUring, i: usize, fd: i32| {
        let e = match (multishot, fixed) {
            (true, true) => opcode::AcceptMulti::new(types::Fixed(i as u32))
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build(),
            (true, false) => opcode::AcceptMulti::new(types::Fd(fd))
                .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                .build(),
            (false, true) => opcode::Accept::new(
                types::Fixed(i as u32),
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
            .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
            .build(),
            (false, false) => {
                opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                    .flags(libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
                    .build()
            }
        };
        // SAFETY: no buffers; the listener fd lives in `sockets` until this function returns,
        // after the ring is dropped.
        while unsafe { ring.submission().push(&e.clone().user_data(i as u64)) }.is_err() {
            let _ = ring.submit();
        }
    };
    for (i, s) in sockets.iter().enumerate() {
        arm(&mut ring, i, s.as_raw_fd());
    }
    let mut wake_armed = false;
    let mut rotate = 0usize;
    loop {
        if shared.is_shutting_down() {
            break;
        }
        if !wake_armed {
            let buf = (&mut *wake_buf as *mut u64).cast();
            let e = if fixed {
                opcode::Read::new(types::Fixed(wake_slot), buf, 8).build()
            } else {
                opcode::Read::new(types::Fd(shared.acceptor_wake.eventfd()), buf, 8).build()
            }
            .user_data(ACCEPT_WAKE);
            // SAFETY: `wake_buf` outlives the ring (dropped after it at the end of this function).
            while unsafe { ring.submission().push(&e) }.is_err() {
                let _ = ring.submit();
            }
            wake_armed = true;
        }
        match ring.submit_and_wait(1) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
        let cqes: Vec<(u64, i32, u32)> = ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .collect();
        for (ud, res, flags) in cqes {
            if ud == ACCEPT_WAKE {
                wake_armed = false;
                continue;
            }
            let i = if ud == ACCEPT_RETRY {
                continue;
            } else {
                ud as usize
            };
            let more = io_uring::cqueue::more(flags);
            if res < 0 {
                let err = std::io::Error::from_raw_os_error(-res);
                if matches!(
                    -res,
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
                ) {
                    tracing::warn!("accept on listener {i}: {err}; pausing accepts for 100 ms");
                    std::thread::sleep(Duration::from_millis(100));
                }
                if !more {
                    arm(&mut ring, i, sockets[i].as_raw_fd());
                }
                continue;
            }
            if !more {
                arm(&mut ring, i, sockets[i].as_raw_fd());
            }
            // SAFETY: a successful accept returns a new fd that we now own.
            let fd = unsafe { OwnedFd::from_raw_fd(res) };
            dispatch(&shared, fd, i as u16, &mut rotate);
        }
    }
    drop(ring);
    drop(sockets);
    Ok(())
}

fn dispatch(shared: &Shared, fd: OwnedFd, listener: u16, rotate: &mut usize) {
    let refuse = |fd: OwnedFd, why: &dyn std::fmt::Display| {
        tracing::debug!("refusing a connection: {why}");
        let bytes = shared.services[listener as usize].refusal();
        // Best effort: the socket is closed right after, whatever this wrote.
        let _ = SockRef::from(&fd).send_with_flags(bytes, libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL);
    };
    let reservation = match shared.rm.reserve(Resource::Connections, 1) {
        Ok(r) => r,
        Err(e) => return refuse(fd, &e),
    };
    let command: Vec<usize> = (0..shared.workers.len())
        .filter(|&i| shared.workers[i].roles.contains(Roles::COMMAND))
        .collect();
    // Least loaded first; ties rotate so a burst spreads.
    *rotate = rotate.wrapping_add(1);
    let mut order = command.clone();
    order.rotate_left(*rotate % command.len());
    order.sort_by_key(|&i| shared.workers[i].conns.load(Ordering::Relaxed));
    let mut msg = Msg::NewConn {
        fd,
        listener,
        reservation,
    };
    for i in order {
        let w = &shared.workers[i];
        if w.conns.load(Ordering::Relaxed) >= shared.config.connections_per_worker_max {
            continue;
        }
        w.conns.fetch_add(1, Ordering::Relaxed);
        match w.mailbox.send(msg) {
            Ok(()) => return,
            Err(m) => {
                w.conns.fetch_sub(1, Ordering::Relaxed);
                msg = m;
            }
        }
    }
    if let Msg::NewConn { fd, .. } = msg {
        refuse(fd, &"every command worker is full");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_released_while_bind_retries_is_taken() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        // Whoever holds the address lets it go a little later, as a killed server's rings do.
        let release = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            drop(held);
        });
        let fd = bind(addr, 16).expect("the address is free once the holder lets it go");
        release.join().unwrap();
        let got = SockRef::from(&fd)
            .local_addr()
            .unwrap()
            .as_socket()
            .unwrap();
        assert_eq!(got, addr);
        // It is a listener: a client connects.
        std::net::TcpStream::connect(addr).expect("connect to the new listener");
    }

    #[test]
    fn an_address_held_for_good_fails_with_address_in_use() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap();
        let err = bind(addr, 16).expect_err("another listener holds the address");
        assert_eq!(err.kind(), std::io::ErrorKind::AddrInUse);
        drop(held);
    }
}
