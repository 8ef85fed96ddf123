//! Operation encoding and submission: what a completion's `user_data` says (operation kind,
//! connection generation, slab key), the tokens that name a connection in mailbox replies, and
//! the one place entries enter the submission queue ([`Ring::push`]).
//!
//! `push` is an `unsafe fn`: its caller promises that every buffer and descriptor the entry names
//! stays alive until the completion has been handled, and says at the call site (`// SAFETY:`)
//! what keeps them so. This module must never build an entry or know what a connection is.

use std::time::Duration;

use io_uring::{squeue, types, IoUring};

pub(super) const OP_WAKE: u64 = 1;
pub(super) const OP_POLL: u64 = 2;
pub(super) const OP_RECV: u64 = 3;
pub(super) const OP_SEND: u64 = 4;
pub(super) const OP_READ: u64 = 5;
pub(super) const OP_REMOTE_READ: u64 = 6;
pub(super) const OP_CANCEL: u64 = 7;
pub(super) const OP_SPLICE_IN: u64 = 8;
pub(super) const OP_POLL_OUT: u64 = 10;
pub(super) const OP_RECV_MULTI: u64 = 11;
pub(super) const OP_OPEN: u64 = 12;
pub(super) const OP_WRITABLE: u64 = 13;
pub(super) const OP_FETCH: u64 = 14;
pub(super) const OP_WRITE: u64 = 15;

/// Generations have 24 bits: `user_data` is op (8) | generation (24) | slab key (32).
pub(super) const GEN_MASK: u32 = (1 << 24) - 1;

pub(super) fn user_data(op: u64, key: usize, gen: u32) -> u64 {
    debug_assert!(key <= u32::MAX as usize);
    (op << 56) | (((gen & GEN_MASK) as u64) << 32) | key as u64
}

/// The (op, key, generation) that [`user_data`] encoded.
pub(super) fn split_user_data(ud: u64) -> (u64, usize, u32) {
    (
        ud >> 56,
        (ud & 0xffff_ffff) as usize,
        ((ud >> 32) as u32) & GEN_MASK,
    )
}

/// A connection's name in replies that come back through the mailbox (remote reads, jobs).
pub(super) fn token(key: usize, gen: u32) -> u64 {
    ((gen as u64) << 32) | key as u64
}

/// The (key, generation) that [`token`] encoded.
pub(super) fn split_token(token: u64) -> (usize, u32) {
    ((token & 0xffff_ffff) as usize, (token >> 32) as u32)
}

/// The worker's source of connection generations: never 0, wrapping within [`GEN_MASK`].
pub(super) struct Gens {
    next: u32,
}

impl Gens {
    pub(super) fn new() -> Gens {
        Gens { next: 1 }
    }

    pub(super) fn take(&mut self) -> u32 {
        let g = self.next;
        self.next = (self.next + 1) & GEN_MASK;
        if self.next == 0 {
            self.next = 1;
        }
        g
    }
}

/// A worker's ring: the only way its entries are queued and its completions collected.
pub(super) struct Ring {
    ring: IoUring,
    /// The worker's index, for log lines.
    worker: usize,
}

impl Ring {
    pub(super) fn new(ring: IoUring, worker: usize) -> Ring {
        Ring { ring, worker }
    }

    /// The ring itself, for registering and unregistering resources.
    pub(super) fn io_uring(&self) -> &IoUring {
        &self.ring
    }

    /// Queues `entry`, submitting what is queued when the submission queue is full.
    ///
    /// # Safety
    ///
    /// Every buffer and descriptor `entry` names must stay valid, and must not move, until its
    /// completion has been handled: owned by a connection (which is freed only with no
    /// operation in flight), the remote-read slab, or the worker.
    pub(super) unsafe fn push(&mut self, entry: squeue::Entry) {
        // SAFETY: the caller keeps what the entry names alive until its completion; here the
        // entry is only copied into the queue.
        while unsafe { self.ring.submission().push(&entry) }.is_err() {
            if let Err(e) = self.ring.submit() {
                tracing::error!("worker {}: submit failed: {e}", self.worker);
            }
        }
    }

    /// Submits what is queued and waits for one completion, at most `timeout`.
    pub(super) fn submit_and_wait(&mut self, timeout: Duration) {
        let ts = types::Timespec::new()
            .sec(timeout.as_secs())
            .nsec(timeout.subsec_nanos());
        let args = types::SubmitArgs::new().timespec(&ts);
        match self.ring.submitter().submit_with_args(1, &args) {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) => {}
            Err(e) => tracing::error!("worker {}: io_uring_enter failed: {e}", self.worker),
        }
    }

    /// Up to `max` completions: (user_data, result, flags).
    pub(super) fn completions(&mut self, max: usize) -> Vec<(u64, i32, u32)> {
        self.ring
            .completion()
            .map(|c| (c.user_data(), c.result(), c.flags()))
            .take(max)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_round_trips() {
        for op in [OP_WAKE, OP_SEND, OP_FETCH, 0xff] {
            for key in [0usize, 1, 4096, u32::MAX as usize] {
                for gen in [0u32, 1, 0x12_3456, GEN_MASK] {
                    assert_eq!(split_user_data(user_data(op, key, gen)), (op, key, gen));
                }
            }
        }
    }

    #[test]
    fn user_data_keeps_only_the_generation_bits() {
        let ud = user_data(OP_RECV, 7, GEN_MASK + 1 + 5);
        assert_eq!(split_user_data(ud), (OP_RECV, 7, 5));
    }

    #[test]
    fn token_round_trips() {
        for key in [0usize, 9, u32::MAX as usize] {
            for gen in [1u32, GEN_MASK] {
                assert_eq!(split_token(token(key, gen)), (key, gen));
            }
        }
    }

    #[test]
    fn generations_skip_zero_when_they_wrap() {
        let mut gens = Gens { next: GEN_MASK - 1 };
        assert_eq!(gens.take(), GEN_MASK - 1);
        assert_eq!(gens.take(), GEN_MASK);
        assert_eq!(gens.take(), 1, "0 is never handed out");
        assert_eq!(gens.take(), 2);
    }
}
