//! Sending bytes a connection holds: ring SENDs of a `Vec` (a response head, a generated body) or
//! of a pool chunk a read filled, and the nonblocking direct send of a head before its body. Also
//! [`SendStart`], how a file transmit's start went, shared by the hot and cold paths.
//!
//! It must never choose a path for file bytes (the driver does) nor drive a session: a completion
//! reports to the session and says whether the connection is due to be driven.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use io_uring::{opcode, types};
use socket2::SockRef;

use super::conn::{Conn, Out};
use super::op::{user_data, Ring, OP_SEND};
use crate::pool::BufferPool;

/// How a file transmit's start went (`hot::HotSender::send`, the splice, the cold fetch).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum SendStart {
    /// The bytes are out (or failed) and were reported to the session.
    Done,
    /// A ring operation carries on (a splice into a pipe, or a POLLOUT wait); its completion
    /// continues the transmit, or (after a partial `sendfile`) lets the session ask for the rest.
    InFlight,
    /// No pipe is free: use the read-send path.
    NoPipe,
    /// This iteration's synchronous budget is spent: try again next iteration (nothing was
    /// started).
    Later,
    /// Not every page is in the page cache (or the piece is larger than a whole budget): the
    /// file half goes to the ring.
    Cold,
    /// The send failed and the session was told; it is asked again next iteration, not now (a
    /// session that kept asking for the same bytes would hold the worker otherwise).
    Failed,
}

/// Submits a SEND of what is left of the connection's `Out::Bytes` or `Out::Sending`.
pub(super) fn submit(ring: &mut Ring, pool: &BufferPool, c: &mut Conn, key: usize) {
    let fd = c.fd.as_raw_fd();
    let (ptr, len) = match &c.out {
        Out::Bytes { buf, sent } => (buf[*sent..].as_ptr(), buf.len() - sent),
        Out::Sending {
            chunk,
            start,
            len,
            sent,
            ..
        } => {
            // SAFETY: `sent < len` and `start + len <= chunk_bytes`: inside the chunk this
            // connection holds.
            (
                unsafe { pool.ptr(chunk).add(start + sent) } as *const u8,
                len - sent,
            )
        }
        _ => unreachable!("submit_send without bytes to send"),
    };
    c.ops += 1;
    let e = opcode::Send::new(types::Fd(fd), ptr, len as u32)
        .flags(libc::MSG_NOSIGNAL)
        .build()
        .user_data(user_data(OP_SEND, key, c.gen));
    // SAFETY: the bytes live in `c.out` (a Vec or a leased chunk), which is not touched until
    // the completion; the socket is owned by the connection.
    unsafe { ring.push(e) };
}

/// A SEND completed: the rest is submitted (false: nothing more to do now), or the transmit is
/// over and reported to the session (true: drive the connection).
pub(super) fn on_complete(
    ring: &mut Ring,
    pool: &BufferPool,
    c: &mut Conn,
    key: usize,
    res: i32,
    now: Instant,
) -> bool {
    let out = std::mem::replace(&mut c.out, Out::Idle);
    match out {
        Out::Bytes { buf, sent } => {
            if res > 0 && sent + (res as usize) < buf.len() {
                c.out = Out::Bytes {
                    buf,
                    sent: sent + res as usize,
                };
                if !c.closing {
                    submit(ring, pool, c, key);
                    return false;
                }
            } else if res > 0 {
                let n = buf.len() as u64;
                c.session.on_sent(Ok(n), Some(buf), now);
            } else if !c.closing {
                c.session.on_sent(Err(send_error(res)), Some(buf), now);
            }
        }
        Out::Sending {
            chunk,
            start,
            len,
            sent,
            head,
        } => {
            if res > 0 && sent + (res as usize) < len && !c.closing {
                c.out = Out::Sending {
                    chunk,
                    start,
                    len,
                    sent: sent + res as usize,
                    head,
                };
                submit(ring, pool, c, key);
                return false;
            }
            pool.give_back(chunk);
            if res > 0 && !c.closing {
                let head_len = head.as_ref().map_or(0, |h| h.len());
                if head.is_some() {
                    c.session.on_sent(Ok(head_len as u64), head, now);
                }
                c.session.on_sent(Ok((len - head_len) as u64), None, now);
            } else if !c.closing {
                c.session.on_sent(Err(send_error(res)), head, now);
            }
        }
        other => {
            debug_assert!(false, "send completion without a send");
            c.out = other;
        }
    }
    true
}

/// The error a failed or empty send completion stands for.
pub(super) fn send_error(res: i32) -> io::Error {
    if res == 0 {
        io::Error::new(io::ErrorKind::WriteZero, "peer accepted no bytes")
    } else {
        io::Error::from_raw_os_error(-res)
    }
}

/// Sends what a nonblocking socket takes now; `Ok(0)` when it takes nothing (EAGAIN).
pub(super) fn send_now(fd: &OwnedFd, bytes: &[u8], flags: libc::c_int) -> io::Result<usize> {
    let socket = SockRef::from(fd);
    loop {
        match socket.send_with_flags(bytes, flags | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL) {
            Ok(n) => return Ok(n),
            Err(e) => match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => return Ok(0),
                _ => return Err(e),
            },
        }
    }
}
