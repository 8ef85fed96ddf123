//! Reads into pool chunks (the read-send path): a file range is read into a leased chunk, behind
//! a copy of the response head, then sent from the chunk in one SEND. A worker with the file role
//! reads itself (READ_FIXED when the pool is registered; block-aligned for O_DIRECT files);
//! others ask a file worker by mailbox and get the chunk back. Connections wait in a FIFO for
//! a free chunk.
//!
//! It fills chunks and hands them on; it must never send, drive a session or free a chunk before
//! its read's completion.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::Arc;
use std::time::Instant;

use io_uring::{opcode, squeue, types};
use slab::Slab;

use super::conn::{Conn, Out};
use super::op::{token, user_data, Ring, OP_READ, OP_REMOTE_READ};
use crate::direct::{self, DirectRead};
use crate::layout::Roles;
use crate::pool::{BufferPool, Chunk};
use crate::shared::{Msg, Shared};

/// A read this worker does for another one: what it holds until the completion.
struct RemoteRead {
    _file: Arc<File>,
    chunk: Chunk,
    reply_to: u32,
    token: u64,
}

pub(super) struct Reads {
    /// Reads for other workers in flight.
    remote: Slab<RemoteRead>,
    /// Connections waiting for a free chunk (`Out::WaitChunk`), oldest first.
    waiters: VecDeque<(usize, u32)>,
    /// The pool is registered with this ring (READ_FIXED).
    fixed_buffers: bool,
    /// Where the last remote read went (round robin over file workers).
    next_file_worker: usize,
    /// This worker's index and roles.
    index: usize,
    roles: Roles,
}

impl Reads {
    pub(super) fn new(index: usize, roles: Roles, fixed_buffers: bool) -> Reads {
        Reads {
            remote: Slab::new(),
            waiters: VecDeque::new(),
            fixed_buffers,
            next_file_worker: index,
            index,
            roles,
        }
    }

    /// Reads for other workers are in flight (the worker may not exit yet).
    pub(super) fn serving_others(&self) -> bool {
        !self.remote.is_empty()
    }

    pub(super) fn waiting_for_chunks(&self) -> bool {
        !self.waiters.is_empty()
    }

    fn entry(&self, fd: RawFd, ptr: *mut u8, len: u32, offset: u64, chunk: u32) -> squeue::Entry {
        if self.fixed_buffers {
            opcode::ReadFixed::new(types::Fd(fd), ptr, len, chunk as u16)
                .offset(offset)
                .build()
        } else {
            opcode::Read::new(types::Fd(fd), ptr, len)
                .offset(offset)
                .build()
        }
    }

    /// Starts reading `len` bytes of `file` at `offset` into a chunk behind `head`, here or on a
    /// file worker (`Out::Reading`); without a free chunk the connection waits (`Out::WaitChunk`).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn start(
        &mut self,
        ring: &mut Ring,
        shared: &Shared,
        c: &mut Conn,
        key: usize,
        head: Option<Vec<u8>>,
        file: Arc<File>,
        offset: u64,
        len: u64,
    ) {
        let pool = shared.pool;
        let Some(chunk) = pool.lease() else {
            c.out = Out::WaitChunk {
                head,
                file,
                offset,
                len,
            };
            self.waiters.push_back((key, c.gen));
            return;
        };
        let head_len = head.as_ref().map_or(0, |h| h.len());
        let chunk_bytes = pool.chunk_bytes();
        // A file storage opened with O_DIRECT is read block-aligned; its head goes in afterwards.
        let direct = (shared.config.direct_reads && direct::is_direct(file.as_raw_fd()))
            .then(|| DirectRead::plan(offset, len, head_len, chunk_bytes));
        let (read_offset, want, at) = match &direct {
            Some(d) => (d.file_offset, d.read_len, d.at),
            None => {
                if let Some(h) = &head {
                    // SAFETY: the chunk is leased to this connection (no operation uses it) and
                    // `h.len() < chunk_bytes / 2` (asserted by the driver): the copy stays inside.
                    unsafe { std::ptr::copy_nonoverlapping(h.as_ptr(), pool.ptr(&chunk), h.len()) };
                }
                let want = len.min((chunk_bytes - head_len) as u64) as u32;
                (offset, want, head_len)
            }
        };
        if self.roles.contains(Roles::FILE) {
            // SAFETY: `at + want <= chunk_bytes` (`DirectRead::plan` keeps aligned reads inside
            // too): the read lands inside the chunk.
            let ptr = unsafe { pool.ptr(&chunk).add(at) };
            let e = self
                .entry(file.as_raw_fd(), ptr, want, read_offset, chunk.index())
                .user_data(user_data(OP_READ, key, c.gen));
            c.ops += 1;
            c.out = Out::Reading {
                local: Some((chunk, file)),
                head,
                direct,
            };
            // SAFETY: the chunk and the file are held in `c.out` until the completion.
            unsafe { ring.push(e) };
        } else {
            c.ops += 1;
            c.out = Out::Reading {
                local: None,
                head,
                direct,
            };
            let msg = Msg::Read {
                file,
                offset: read_offset,
                len: want,
                chunk,
                at: at as u32,
                reply_to: self.index as u32,
                token: token(key, c.gen),
            };
            shared.send_must(self.pick_file_worker(shared), msg);
        }
    }

    /// Starts the reads of connections waiting for a chunk, oldest first, while chunks are free.
    pub(super) fn retry_waiters(
        &mut self,
        ring: &mut Ring,
        shared: &Shared,
        conns: &mut Slab<Conn>,
    ) {
        while shared.pool.available() > 0 {
            let Some((key, gen)) = self.waiters.pop_front() else {
                return;
            };
            let Some(c) = conns.get_mut(key).filter(|c| c.gen == gen) else {
                continue;
            };
            if let Out::WaitChunk { .. } = c.out {
                let Out::WaitChunk {
                    head,
                    file,
                    offset,
                    len,
                } = std::mem::replace(&mut c.out, Out::Idle)
                else {
                    unreachable!()
                };
                self.start(ring, shared, c, key, head, file, offset, len);
                if matches!(c.out, Out::WaitChunk { .. }) {
                    return; // Lost the race for the chunk; still queued.
                }
            }
        }
    }

    /// Reads for another worker (`Msg::Read`) into the chunk it sent, at `at`.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn serve(
        &mut self,
        ring: &mut Ring,
        pool: &BufferPool,
        file: Arc<File>,
        offset: u64,
        len: u32,
        chunk: Chunk,
        at: u32,
        reply_to: u32,
        token: u64,
    ) {
        // SAFETY: `at + len <= chunk_bytes` (checked by the sender), inside the chunk.
        let ptr = unsafe { pool.ptr(&chunk).add(at as usize) };
        let fd = file.as_raw_fd();
        let idx = chunk.index();
        let key = self.remote.insert(RemoteRead {
            _file: file,
            chunk,
            reply_to,
            token,
        });
        let e = self
            .entry(fd, ptr, len, offset, idx)
            .user_data(user_data(OP_REMOTE_READ, key, 0));
        // SAFETY: the chunk and the file stay in `remote[key]` until the completion.
        unsafe { ring.push(e) };
    }

    /// A read for another worker completed: the chunk goes back to it with the result.
    pub(super) fn served(&mut self, shared: &Shared, key: usize, result: i32) {
        let RemoteRead {
            chunk,
            reply_to,
            token,
            ..
        } = self.remote.remove(key);
        shared.send_must(
            reply_to as usize,
            Msg::ReadDone {
                token,
                chunk,
                result,
            },
        );
    }

    fn pick_file_worker(&mut self, shared: &Shared) -> usize {
        let n = shared.workers.len();
        for _ in 0..n {
            self.next_file_worker = (self.next_file_worker + 1) % n;
            if shared.workers[self.next_file_worker]
                .roles
                .contains(Roles::FILE)
            {
                return self.next_file_worker;
            }
        }
        unreachable!("a layout always has a file worker")
    }
}

/// A read into `chunk` completed with `result`. True: the chunk now holds the head and the file
/// bytes (`Out::Sending`), to be sent. False: the read failed, or the connection is closing; the
/// chunk went back to the pool and the session was told.
pub(super) fn finish(
    pool: &BufferPool,
    c: &mut Conn,
    chunk: Chunk,
    head: Option<Vec<u8>>,
    direct: Option<DirectRead>,
    result: i32,
    now: Instant,
) -> bool {
    // File bytes the read delivered that the session asked for.
    let result = match &direct {
        Some(d) if result > 0 => d.delivered(result as usize) as i32,
        _ => result,
    };
    if c.closing || result <= 0 {
        pool.give_back(chunk);
        c.out = Out::Idle;
        if !c.closing {
            let err = if result == 0 {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "object file shorter than its catalog size",
                )
            } else {
                io::Error::from_raw_os_error(-result)
            };
            c.session.on_sent(Err(err), head, now);
        }
        return false;
    }
    let head_len = head.as_ref().map_or(0, |h| h.len());
    let start = match &direct {
        Some(d) => {
            if let Some(h) = &head {
                // SAFETY: the read completed, so the chunk is ours again; the head ends where
                // the wanted bytes begin (`d.start() + head_len == d.at + d.skew`), inside it.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        h.as_ptr(),
                        pool.ptr(&chunk).add(d.start()),
                        h.len(),
                    )
                };
            }
            d.start()
        }
        None => 0,
    };
    c.out = Out::Sending {
        chunk,
        start,
        len: head_len + result as usize,
        sent: 0,
        head,
    };
    true
}
