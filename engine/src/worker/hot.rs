//! Hot sends: a stretch whose pages are all in the page cache leaves by one nonblocking
//! `sendfile` from the worker's own thread, bounded by a per-iteration budget ([`SendBudget`]);
//! a transmit that finds the budget spent waits on the [`DeferredFifo`] for a later iteration.
//! Large bodies are corked (`tcp_nopush`) so they leave in whole segments.
//!
//! Nothing here may wait on the disk: a stretch is residency-tested before it is sent, and one
//! that is not resident is handed back as `Cold`. It must never drive a session or choose the
//! cold path itself.

use std::collections::VecDeque;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Instant;

use slab::Slab;

use super::conn::{Conn, Out, Pending};
use super::fetch::FETCH_BYTES;
use super::op::{Ring, OP_WRITABLE};
use super::send::SendStart;
use crate::residency::{resident, Verified};

/// Per-iteration allowance of synchronous sending from files (see [`SendBudget`]).
pub(super) const SYNC_SEND_BUDGET_BYTES: u64 = 8 << 20;
/// Per-iteration allowance for one-chunk transmits beyond the budget: 64 hot 64 KiB objects.
pub(super) const SMALL_SEND_BUDGET_BYTES: u64 = 4 << 20;
/// What one round of the kernel's `sendfile` moves through its internal pipe (16 pages).
pub(super) const PIPE_ROUND_BYTES: u64 = 64 << 10;

/// Bytes one loop iteration may still send synchronously from files, refilled each iteration,
/// so a few fast readers of hot objects cannot keep the worker from its other connections.
#[derive(Debug)]
pub(super) struct SendBudget {
    /// What is left of [`SYNC_SEND_BUDGET_BYTES`].
    sync: u64,
    /// What is left of [`SMALL_SEND_BUDGET_BYTES`]: for transmits that fit in one chunk once
    /// `sync` is spent; together the two bound an iteration's synchronous sends.
    small: u64,
}

/// What the budget allows a transmit of `len` bytes now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Grant {
    /// Up to this many bytes, from the main budget.
    Sync(u64),
    /// The whole transmit, from the small-transmit allowance.
    Small,
    /// Part of the budget is spent: wait for the next iteration.
    Later,
    /// A piece larger than a whole budget: never waits, takes the ring path.
    Cold,
}

impl SendBudget {
    pub(super) fn new() -> SendBudget {
        SendBudget {
            sync: SYNC_SEND_BUDGET_BYTES,
            small: SMALL_SEND_BUDGET_BYTES,
        }
    }

    pub(super) fn refill(&mut self) {
        *self = SendBudget::new();
    }

    /// Whether a full budget's first piece (`chunk_bytes`, at most the whole budget) still fits:
    /// the deferred FIFO is driven while it does. With chunks above the budget the first
    /// transmit of an iteration still goes (by the ring path).
    pub(super) fn piece_left(&self, chunk_bytes: u64) -> bool {
        self.sync >= chunk_bytes.min(SYNC_SEND_BUDGET_BYTES)
    }

    /// What a transmit of `len` bytes, sent `piece` bytes at a time at most, may send now.
    pub(super) fn grant(&self, len: u64, piece: u64) -> Grant {
        // A transmit that fits in one chunk (a small object, a stream's last piece) draws on
        // an allowance of its own once the budget is spent, so it does not wait a loop
        // iteration behind large streams: during a cold sweep 2-3% of hot 64 KiB requests
        // waited 10-90 ms that way inside the server (access-log request times).
        if self.sync >= piece {
            return Grant::Sync(self.sync);
        }
        if len <= piece && self.small >= len {
            return Grant::Small;
        }
        if self.sync < SYNC_SEND_BUDGET_BYTES {
            // Part of this iteration's budget is spent: the transmit waits for the next
            // iteration (and is looked at then) rather than taking the ring path, whose
            // file half runs in io_uring's threads (seen: at 1000 connections a third of
            // the hot pieces went there once the budget ran out, each a thread hand-off).
            return Grant::Later;
        }
        Grant::Cold
    }

    /// Takes `n` sent bytes off what `grant` drew on.
    pub(super) fn charge(&mut self, grant: Grant, n: u64) {
        match grant {
            Grant::Small => self.small -= n,
            _ => self.sync -= n,
        }
    }
}

/// The hot path's state: the budget and the memo of ranges recently found resident.
pub(super) struct HotSender {
    pub(super) budget: SendBudget,
    /// File ranges recently found resident, so hot objects are not asked about every time.
    verified: Verified,
    chunk_bytes: u64,
    tcp_nopush: bool,
}

impl HotSender {
    pub(super) fn new(chunk_bytes: usize, tcp_nopush: bool) -> HotSender {
        HotSender {
            budget: SendBudget::new(),
            verified: Verified::new(),
            chunk_bytes: chunk_bytes as u64,
            tcp_nopush,
        }
    }

    /// Sends a stretch of `file` whose pages are all in the page cache with one `sendfile`,
    /// right here: up to the rest of the transmit, bounded by this iteration's budget.
    ///
    /// The residency test (cachestat, then a one-byte `RWF_NOWAIT` read of the last page, see
    /// [`resident`]) covers the whole stretch, so nothing here can wait on the disk; a stretch
    /// that is not all resident is tried as one chunk, and a chunk that is not resident either
    /// is `Cold` (the ring path). A socket that takes less than offered arms a POLLOUT.
    /// Before this, hot pieces went file -> pipe -> socket one chunk at a time: 32 syscalls
    /// per 2 MiB response where nginx's `sendfile` needs about 5, and 1.3x its CPU per byte at
    /// 1000 connections.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn send(
        &mut self,
        ring: &mut Ring,
        c: &mut Conn,
        key: usize,
        file: &Arc<File>,
        offset: u64,
        len: u64,
        fetched: bool,
        now: Instant,
    ) -> SendStart {
        let piece = len.min(self.chunk_bytes);
        let grant = self.budget.grant(len, piece);
        let stretch = match grant {
            Grant::Later => return SendStart::Later,
            Grant::Cold => return SendStart::Cold,
            Grant::Small => len,
            // What was fetched (`fetch::Fetches::start`: the 2 MiB block holding `offset`),
            // not more: the pages after it are likely cold.
            Grant::Sync(max) if fetched => len.min(max).min(FETCH_BYTES - offset % FETCH_BYTES),
            Grant::Sync(max) => len.min(max),
        };
        let fd = file.as_raw_fd();
        // Both fit in a u32: the budget is far below 4 GiB. One probe vouches for the whole
        // stretch (see `resident`); probing the end of every chunk too (8 one-byte reads per
        // 2 MiB response) cost 0.196-0.205 s of server CPU per GB at 1000 connections against
        // 0.170-0.184 with one (alternating 6 s runs).
        // Asking costs a cachestat walk of every page (5% of the server's CPU at 1000
        // connections on 2 MiB objects); a hot object is sent many times within `TRUST`. Only
        // an answer from the kernel is remembered, so a trusted range is asked about again
        // once `TRUST` has passed however often it is sent.
        // The fallback when the whole stretch is not resident: one chunk, within the 2 MiB block
        // holding `offset`, so that when it is cold too the fetch brings in the block holding
        // the missing pages (a chunk crossing into a cold block fetched the resident one).
        let first = piece.min(FETCH_BYTES - offset % FETCH_BYTES);
        let stretch = if self.verified.trusted(file, offset, stretch, now) {
            stretch
        } else if resident(fd, offset, stretch as u32, stretch as u32) {
            self.verified.remember(file, offset, stretch, now);
            stretch
        } else if stretch > first && resident(fd, offset, first as u32, first as u32) {
            first
        } else {
            return SendStart::Cold;
        };
        cork_body(c, self.tcp_nopush, stretch);
        loop {
            let mut off = offset as libc::off_t;
            // SAFETY: both fds are open (the socket is owned by `c`, the file held by `file`);
            // `off` is a live off_t the kernel advances. The socket is nonblocking.
            let n = unsafe { libc::sendfile(c.fd.as_raw_fd(), fd, &mut off, stretch as usize) };
            if n > 0 {
                let n = n as u64;
                self.budget.charge(grant, n);
                c.session.on_sent(Ok(n), None, now);
                if n < stretch {
                    // The socket is full: wait for room; the session asks for the rest.
                    wait_writable(ring, c, key, None);
                    return SendStart::InFlight;
                }
                return SendStart::Done;
            }
            let err = if n == 0 {
                io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "object file shorter than its catalog size",
                )
            } else {
                io::Error::last_os_error()
            };
            match err.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    let pending = Pending {
                        file: Arc::clone(file),
                        offset,
                        len,
                        fetched,
                    };
                    wait_writable(ring, c, key, Some(pending));
                    return SendStart::InFlight;
                }
                _ => {
                    c.session.on_sent(Err(err), None, now);
                    return SendStart::Failed;
                }
            }
        }
    }
}

/// Corks the socket (with `tcp_nopush`) for a body part larger than one `sendfile` round: the
/// kernel releases the socket between rounds, and a client ACK handled there pushed the round's
/// short tail as a segment of its own (0.7 client ACKs per data segment against nginx's 0.4).
pub(super) fn cork_body(c: &mut Conn, tcp_nopush: bool, len: u64) {
    if tcp_nopush && len > PIPE_ROUND_BYTES {
        c.cork();
    }
}

/// Arms a POLLOUT for a socket a `sendfile` found full (see `Out::Blocked`).
fn wait_writable(ring: &mut Ring, c: &mut Conn, key: usize, pending: Option<Pending>) {
    c.out = Out::Blocked(pending);
    c.push_pollout(ring, key, OP_WRITABLE);
}

/// The POLLOUT of a blocked `sendfile` completed (`ops` already counted down): a transmit that
/// sent nothing is issued again through the deferred path (an error shows there, from the send).
pub(super) fn on_writable(c: &mut Conn) {
    let Out::Blocked(pending) = std::mem::replace(&mut c.out, Out::Idle) else {
        unreachable!("writable completion without a blocked send")
    };
    if let (Some(p), false) = (pending, c.closing) {
        c.out = Out::Deferred {
            file: p.file,
            offset: p.offset,
            len: p.len,
            fetched: p.fetched,
        };
    }
}

/// What the deferred FIFO needs of a connection: its generation, and the generation it had when
/// it was queued (`Conn::deferred_gen`) while that entry waits.
pub(super) trait Deferrable {
    fn gen(&self) -> u32;
    fn deferred_gen(&mut self) -> &mut Option<u32>;
}

impl Deferrable for Conn {
    fn gen(&self) -> u32 {
        self.gen
    }

    fn deferred_gen(&mut self) -> &mut Option<u32> {
        &mut self.deferred_gen
    }
}

/// Hot transmits (`Out::Deferred`) that found an iteration's send budget spent, oldest first.
/// Each iteration drives them from the front while its budget lasts; the rest are not touched.
/// (Re-driving all of them every iteration, as the ready queue does, kept 10.7% of the worker's
/// core in user space at 1000 connections against 2.8% with this queue: a thousand cache-cold
/// sessions looked at per iteration for the four that could send.) One entry per connection
/// generation at most; entries of gone generations are skipped.
#[derive(Default)]
pub(super) struct DeferredFifo {
    queue: VecDeque<(usize, u32)>,
}

impl DeferredFifo {
    /// Queues the connection at `key` unless its current generation already waits. One that got
    /// a new generation (adopted, or put back after a failed hand-off) no longer matches its
    /// stale entry, so it is queued again.
    pub(super) fn push<C: Deferrable>(&mut self, key: usize, c: &mut C) {
        let gen = c.gen();
        let queued = c.deferred_gen();
        if *queued != Some(gen) {
            *queued = Some(gen);
            self.queue.push_back((key, gen));
        }
    }

    /// The key of the oldest entry whose connection is still there in the generation it was
    /// queued with (its mark cleared: it may be queued again); stale entries are dropped.
    pub(super) fn pop_live<C: Deferrable>(&mut self, conns: &mut Slab<C>) -> Option<usize> {
        while let Some((key, gen)) = self.queue.pop_front() {
            if let Some(c) = conns.get_mut(key).filter(|c| c.gen() == gen) {
                *c.deferred_gen() = None;
                return Some(key);
            }
        }
        None
    }

    pub(super) fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn a_full_budget_grants_itself() {
        let b = SendBudget::new();
        assert_eq!(
            b.grant(2 * MIB, MIB / 4),
            Grant::Sync(SYNC_SEND_BUDGET_BYTES)
        );
        assert!(b.piece_left(MIB / 4));
    }

    #[test]
    fn spent_budget_defers_large_transmits_and_lets_small_ones_through() {
        let mut b = SendBudget::new();
        let piece = MIB / 4;
        b.charge(
            Grant::Sync(SYNC_SEND_BUDGET_BYTES),
            SYNC_SEND_BUDGET_BYTES - 1000,
        );
        assert!(!b.piece_left(piece));
        assert_eq!(b.grant(2 * MIB, piece), Grant::Later, "a stream waits");
        assert_eq!(
            b.grant(64 << 10, 64 << 10),
            Grant::Small,
            "a small object goes"
        );
        // The small allowance runs out too.
        for _ in 0..SMALL_SEND_BUDGET_BYTES / (64 << 10) {
            b.charge(Grant::Small, 64 << 10);
        }
        assert_eq!(b.grant(64 << 10, 64 << 10), Grant::Later);
        b.refill();
        assert_eq!(b.grant(2 * MIB, piece), Grant::Sync(SYNC_SEND_BUDGET_BYTES));
    }

    #[test]
    fn a_piece_above_a_whole_budget_takes_the_ring_path() {
        let b = SendBudget::new();
        let piece = 16 * MIB;
        assert_eq!(b.grant(32 * MIB, piece), Grant::Cold);
        assert!(
            b.piece_left(piece),
            "the first transmit of an iteration still goes"
        );
    }

    #[test]
    fn charges_come_off_what_was_granted() {
        let mut b = SendBudget::new();
        b.charge(Grant::Small, MIB);
        b.charge(Grant::Sync(SYNC_SEND_BUDGET_BYTES), 3 * MIB);
        assert_eq!(b.sync, SYNC_SEND_BUDGET_BYTES - 3 * MIB);
        assert_eq!(b.small, SMALL_SEND_BUDGET_BYTES - MIB);
        assert_eq!(b.grant(8 * MIB, MIB), Grant::Sync(5 * MIB));
    }

    struct Fake {
        gen: u32,
        mark: Option<u32>,
    }

    impl Deferrable for Fake {
        fn gen(&self) -> u32 {
            self.gen
        }
        fn deferred_gen(&mut self) -> &mut Option<u32> {
            &mut self.mark
        }
    }

    fn fake(conns: &mut Slab<Fake>, gen: u32) -> usize {
        conns.insert(Fake { gen, mark: None })
    }

    #[test]
    fn deferred_fifo_keeps_order_and_one_entry_per_generation() {
        let mut conns = Slab::new();
        let (a, b, c) = (
            fake(&mut conns, 1),
            fake(&mut conns, 2),
            fake(&mut conns, 3),
        );
        let mut fifo = DeferredFifo::default();
        for k in [b, a, c, b, a] {
            fifo.push(k, &mut conns[k]);
        }
        assert_eq!(fifo.pop_live(&mut conns), Some(b));
        assert_eq!(conns[b].mark, None, "popped: may queue again");
        fifo.push(b, &mut conns[b]);
        assert_eq!(fifo.pop_live(&mut conns), Some(a));
        assert_eq!(fifo.pop_live(&mut conns), Some(c));
        assert_eq!(fifo.pop_live(&mut conns), Some(b));
        assert_eq!(fifo.pop_live(&mut conns), None);
        assert!(fifo.is_empty());
    }

    #[test]
    fn deferred_fifo_skips_stale_entries_and_requeues_a_new_generation() {
        let mut conns = Slab::new();
        let (a, b) = (fake(&mut conns, 1), fake(&mut conns, 2));
        let mut fifo = DeferredFifo::default();
        fifo.push(a, &mut conns[a]);
        fifo.push(b, &mut conns[b]);
        // `a` moves away and back with a new generation: its old entry is stale, and it can
        // queue again although its mark was never cleared.
        conns[a].gen = 7;
        fifo.push(a, &mut conns[a]);
        // `b` closes and its slot goes to another connection.
        conns.remove(b);
        let d = fake(&mut conns, 9);
        assert_eq!(d, b);
        assert_eq!(
            fifo.pop_live(&mut conns),
            Some(a),
            "the new entry, behind the stale ones"
        );
        assert_eq!(fifo.pop_live(&mut conns), None);
    }
}
