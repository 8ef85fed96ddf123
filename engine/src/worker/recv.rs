//! The receive path: one multishot RECV per connection into the worker's provided buffers when it
//! has them (command and data roles together), otherwise poll-then-receive into the connection's
//! own buffer; input backpressure at `input_bytes_max`; what a receive's completion means.
//!
//! It feeds bytes to the session and stashes what the session leaves; it must never drive a
//! session or close a connection itself: a refused input buffer is reported to the caller.

use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use io_uring::{cqueue, opcode, types, IoUring};

use super::conn::{Conn, RecvState};
use super::op::{user_data, Ring, OP_CANCEL, OP_POLL, OP_RECV, OP_RECV_MULTI};
use crate::bufring::RecvBuffers;
use crate::layout::Roles;
use crate::resource::{Reservation, Resource, ResourceManager};
use crate::shared::Shared;

pub(super) struct Receive {
    /// Provided receive buffers; present when this worker keeps its connections (it has both
    /// the command and data roles, so they never migrate) and the kernel has buffer rings.
    bufs: Option<RecvBuffers>,
    _reservation: Option<Reservation>,
    input_bytes_max: usize,
    rm: Arc<ResourceManager>,
}

impl Receive {
    /// Sets up provided receive buffers when this worker can use multishot receives; on any
    /// failure (no memory budget, old kernel) it says why once and connections poll instead.
    pub(super) fn new(index: usize, roles: Roles, ring: &IoUring, shared: &Shared) -> Receive {
        let cfg = &shared.config;
        let (bufs, reservation) = if cfg.recv_buffers == 0
            || !(roles.contains(Roles::COMMAND) && roles.contains(Roles::DATA))
        {
            (None, None)
        } else {
            let bytes = (cfg.recv_buffers * cfg.recv_buffer_bytes) as u64;
            match shared.rm.reserve(Resource::MemoryBytes, bytes) {
                Err(e) => {
                    tracing::warn!(
                        "worker {index}: no memory for receive buffers ({e}); polling instead"
                    );
                    (None, None)
                }
                Ok(reservation) => {
                    match RecvBuffers::register(ring, cfg.recv_buffers, cfg.recv_buffer_bytes) {
                        Ok(b) => (Some(b), Some(reservation)),
                        Err(e) => {
                            tracing::warn!(
                                "worker {index}: provided receive buffers unavailable ({e}); polling instead"
                            );
                            (None, None)
                        }
                    }
                }
            }
        };
        Receive {
            bufs,
            _reservation: reservation,
            input_bytes_max: cfg.input_bytes_max,
            rm: Arc::clone(&shared.rm),
        }
    }

    /// Unregisters the provided buffers (at the worker's exit, before the ring goes).
    pub(super) fn teardown(&mut self, ring: &IoUring) {
        if let Some(bufs) = self.bufs.take() {
            bufs.teardown(ring);
        }
    }

    /// Arms the connection's receive (multishot, poll, or a single receive into its buffer), or
    /// nothing under backpressure. False when the connection needed its own buffer and memory
    /// was refused: the caller closes it.
    pub(super) fn arm(&mut self, ring: &mut Ring, c: &mut Conn, key: usize) -> bool {
        let fd = c.fd.as_raw_fd();
        if self.bufs.is_some() && !c.no_bufs {
            if c.input.len() >= self.input_bytes_max {
                return true; // Backpressure: the session must consume buffered input first.
            }
            c.recv = RecvState::Multishot;
            c.recv_cancelling = false;
            c.ops += 1;
            let e = opcode::RecvMulti::new(types::Fd(fd), crate::bufring::GROUP)
                .build()
                .user_data(user_data(OP_RECV_MULTI, key, c.gen));
            // SAFETY: the kernel picks buffers from the worker's registered ring, which outlives
            // every operation; the fd is owned by the connection, which outlives the receive.
            unsafe { ring.push(e) };
            return true;
        }
        if c.no_bufs && c.input.capacity() == 0 {
            // Bytes are waiting (the buffers ran out while they arrived): no poll first.
            if !c.give_input_buffer(self.input_bytes_max, &self.rm) {
                return false;
            }
        }
        if c.input.capacity() == 0 {
            // Idle connections hold no buffer: poll first, allocate when bytes arrive.
            c.recv = RecvState::Polling;
            c.ops += 1;
            let e = opcode::PollAdd::new(types::Fd(fd), libc::POLLIN as u32)
                .build()
                .user_data(user_data(OP_POLL, key, c.gen));
            // SAFETY: no buffer; the fd is owned by the connection, which outlives the op.
            unsafe { ring.push(e) };
            return true;
        }
        let spare = c.input.capacity() - c.input.len();
        if spare == 0 {
            return true; // Backpressure: the session must consume before we read more.
        }
        c.recv = RecvState::Receiving;
        c.ops += 1;
        // SAFETY: the spare capacity of `input` is valid for `spare` bytes; the Vec is not touched
        // (no push, no reallocation) while the receive is in flight (`recv == Receiving`).
        let ptr = unsafe { c.input.as_mut_ptr().add(c.input.len()) };
        let e = opcode::Recv::new(types::Fd(fd), ptr, spare as u32)
            .build()
            .user_data(user_data(OP_RECV, key, c.gen));
        // SAFETY: the spare capacity stays owned by the connection, untouched, until the
        // completion; so does the socket.
        unsafe { ring.push(e) };
        true
    }

    /// A poll for input completed (`ops` already counted down). False when bytes arrived but
    /// the input buffer was refused: the caller closes the connection.
    pub(super) fn on_poll(&self, c: &mut Conn, res: i32, now: Instant) -> bool {
        c.recv = RecvState::None;
        if res < 0 && res != -libc::ECANCELED {
            c.peer_closed = true;
            c.session.on_peer_closed(now);
        } else if res > 0 && !c.closing {
            return c.give_input_buffer(self.input_bytes_max, &self.rm);
        }
        true
    }

    /// A single receive into the connection's buffer completed (`ops` already counted down).
    pub(super) fn on_recv(c: &mut Conn, res: i32, now: Instant) {
        c.recv = RecvState::None;
        c.no_bufs = false;
        if res > 0 {
            // SAFETY: the kernel wrote `res` bytes into the spare capacity we gave it.
            unsafe { c.input.set_len(c.input.len() + res as usize) };
            if c.lingering.is_some() {
                c.input.clear(); // discarded: the connection is closing
            } else if !c.closing {
                let used = c.session.on_input(&c.input, now);
                debug_assert!(used <= c.input.len());
                // The buffer stays with the connection: a keep-alive client's next request
                // is received straight away, without a poll first.
                c.input.drain(..used.min(c.input.len()));
            }
        } else if res == 0 || res != -libc::ECANCELED {
            c.peer_closed = true;
            if !c.closing {
                c.session.on_peer_closed(now);
            }
        }
    }

    /// A multishot receive completed: bytes in a provided buffer, or its end (`more` false).
    /// False when unconsumed bytes could not be kept (memory refused): the caller closes.
    pub(super) fn on_multi(
        &mut self,
        ring: &mut Ring,
        c: &mut Conn,
        key: usize,
        res: i32,
        flags: u32,
        now: Instant,
    ) -> bool {
        let bufs = self
            .bufs
            .as_mut()
            .expect("multishot receives only with provided buffers");
        if !cqueue::more(flags) {
            c.ops -= 1;
            c.recv = RecvState::None;
            c.recv_cancelling = false;
        }
        let mut stash_failed = false;
        if res > 0 {
            let bid = cqueue::buffer_select(flags).expect("received bytes name their buffer");
            let data = bufs.bytes(bid, res as usize);
            if c.lingering.is_some() || c.closing {
                // Discarded: the connection is closing.
            } else if c.input.is_empty() && c.session.wants_input() {
                let used = c.session.on_input(data, now).min(data.len());
                stash_failed = !c.stash(&data[used..], self.input_bytes_max, &self.rm);
            } else {
                stash_failed = !c.stash(data, self.input_bytes_max, &self.rm);
            }
            bufs.give_back(bid);
        } else if res == -libc::ENOBUFS {
            c.no_bufs = true;
        } else if res == 0 || res != -libc::ECANCELED {
            c.peer_closed = true;
            if !c.closing {
                c.session.on_peer_closed(now);
            }
        }
        if stash_failed {
            return false;
        }
        if c.recv == RecvState::Multishot
            && !c.recv_cancelling
            && c.input.len() >= self.input_bytes_max
        {
            // Backpressure: stop receiving until the session consumes what it has.
            c.recv_cancelling = true;
            let e = opcode::AsyncCancel::new(user_data(OP_RECV_MULTI, key, c.gen))
                .build()
                .user_data(user_data(OP_CANCEL, key, c.gen));
            // SAFETY: no buffers or fds; the cancel names the receive by its user_data.
            unsafe { ring.push(e) };
        }
        true
    }
}
