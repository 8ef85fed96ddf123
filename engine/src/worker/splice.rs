//! The ring splice for cold pieces that are not fetched: file -> pipe as a ring SPLICE (in
//! io_uring's worker threads, so a cold read never stalls the worker), then pipe -> socket by
//! the worker itself; a full socket parks the rest on a POLLOUT.
//!
//! It works on one connection and the worker's [`PipePool`]; it reports to the session but must
//! never drive it (a completion says whether the connection is due to be driven).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, types};

use super::conn::{Conn, Out};
use super::op::{user_data, Ring, OP_POLL_OUT, OP_SPLICE_IN};
use super::pipes::PipePool;
use super::send::{send_error, SendStart};

/// Splices up to one chunk (`chunk_bytes`) of `file` to the socket through a pipe: `InFlight`,
/// or `NoPipe` when none is free. Once the pipe is filled the worker moves it to the socket
/// itself ([`flush`]); a socket that is full makes the rest wait for POLLOUT.
#[allow(clippy::too_many_arguments)]
pub(super) fn start(
    pipes: &mut PipePool,
    ring: &mut Ring,
    c: &mut Conn,
    key: usize,
    file: &Arc<File>,
    offset: u64,
    len: u64,
    chunk_bytes: usize,
) -> SendStart {
    let want = len.min(chunk_bytes as u64) as u32;
    let Some(pipe) = pipes.take() else {
        return SendStart::NoPipe;
    };
    let more = u64::from(want) < len;
    let e = opcode::Splice::new(
        types::Fd(file.as_raw_fd()),
        offset as i64,
        types::Fd(pipe.write.as_raw_fd()),
        -1,
        want,
    )
    .build()
    .user_data(user_data(OP_SPLICE_IN, key, c.gen));
    c.ops += 1;
    c.out = Out::Splicing {
        _file: Arc::clone(file),
        pipe,
        in_pipe: 0,
        total: 0,
        more,
    };
    // SAFETY: no buffers; the file and the pipe are held in `c.out` until the completion.
    unsafe { ring.push(e) };
    SendStart::InFlight
}

/// Moves what the pipe holds to the socket now (nonblocking socket). When the pipe empties
/// the piece is reported to the session (`Done`); a full socket arms a POLLOUT
/// (`InFlight`); an error ends the piece and is reported (`Done`).
fn flush(
    pipes: &mut PipePool,
    ring: &mut Ring,
    c: &mut Conn,
    key: usize,
    now: Instant,
) -> SendStart {
    let Out::Splicing {
        pipe,
        in_pipe,
        total,
        more,
        ..
    } = &mut c.out
    else {
        unreachable!("flush without a splice")
    };
    let mut failed = None;
    while *in_pipe > 0 {
        let flags = libc::SPLICE_F_NONBLOCK | if *more { libc::SPLICE_F_MORE } else { 0 };
        // SAFETY: the pipe and the socket are open, owned by `c`; no memory is passed.
        let n = unsafe {
            libc::splice(
                pipe.read.as_raw_fd(),
                std::ptr::null_mut(),
                c.fd.as_raw_fd(),
                std::ptr::null_mut(),
                *in_pipe,
                flags,
            )
        };
        if n > 0 {
            *in_pipe -= n as usize;
            *total += n as usize;
            continue;
        }
        let err = if n == 0 {
            send_error(0)
        } else {
            io::Error::last_os_error()
        };
        match err.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::EAGAIN) => {
                c.push_pollout(ring, key, OP_POLL_OUT);
                return SendStart::InFlight;
            }
            _ => {
                failed = Some(err);
                break;
            }
        }
    }
    let Out::Splicing {
        pipe,
        in_pipe,
        total,
        ..
    } = std::mem::replace(&mut c.out, Out::Idle)
    else {
        unreachable!()
    };
    pipes.put(pipe, in_pipe == 0);
    match failed {
        None => c.session.on_sent(Ok(total as u64), None, now),
        Some(e) => c.session.on_sent(Err(e), None, now),
    }
    SendStart::Done
}

/// A ring splice (file -> pipe, `OP_SPLICE_IN`) or a POLLOUT wait (`OP_POLL_OUT`) completed
/// (`ops` already counted down). True when the piece is over (sent, failed, or the connection
/// closing) and the connection is due to be driven.
pub(super) fn on_complete(
    pipes: &mut PipePool,
    ring: &mut Ring,
    c: &mut Conn,
    key: usize,
    op: u64,
    res: i32,
    now: Instant,
) -> bool {
    let Out::Splicing { in_pipe, .. } = &mut c.out else {
        unreachable!("splice completion without a splice")
    };
    let failed = match op {
        OP_SPLICE_IN if res > 0 => {
            *in_pipe = res as usize;
            None
        }
        OP_SPLICE_IN if res == 0 => Some(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "object file shorter than its catalog size",
        )),
        OP_POLL_OUT if res > 0 => None,
        _ => Some(io::Error::from_raw_os_error(-res)),
    };
    if c.closing || failed.is_some() {
        let Out::Splicing { pipe, in_pipe, .. } = std::mem::replace(&mut c.out, Out::Idle) else {
            unreachable!()
        };
        pipes.put(pipe, in_pipe == 0);
        if !c.closing {
            c.session
                .on_sent(Err(failed.expect("set above")), None, now);
        }
        return true;
    }
    flush(pipes, ring, c, key, now) == SendStart::Done
}
