//! The cold fetch: a cold stretch's 2 MiB block is read into the page cache (one huge folio, by
//! a ring MADVISE(MADV_POPULATE_READ) of a huge-page mapping, in an io-wq thread) before the
//! stretch leaves by `sendfile` like a hot one. At most `cold_fetches_max` fetches run at once;
//! a stretch whose block is being fetched joins that fetch, one that finds every slot taken
//! queues for one. Neither holds a ring operation while it waits (`Out::Waiting`).
//!
//! [`Fetches`] keeps the lists (bounded: purged of connections that left at twice the
//! connection limit) and starts fetches; it must never send, splice or drive a session. What
//! happens to a stretch it cannot fetch (the splice) is the caller's choice.

use std::collections::VecDeque;
use std::fs::File;
use std::sync::Arc;

use io_uring::opcode;
use slab::Slab;

use super::conn::{Conn, Out};
use super::mapping::Mapping;
use super::op::{user_data, Ring, OP_FETCH};

/// The block a cold fetch brings into the page cache: one huge page, so readahead fills it with
/// a single folio; fetches are aligned to it in the file.
pub(super) const FETCH_BYTES: u64 = 2 << 20;

/// A connection in a fetch list: (slab key, generation). A key whose generation changed has gone.
pub(super) type Entry = (usize, u32);

/// The start of the fetch block holding `offset`.
pub(super) fn block_start(offset: u64) -> u64 {
    offset - offset % FETCH_BYTES
}

/// A fetch in flight and the connections waiting for it (`Out::Waiting`).
struct FetchWait {
    /// The object file, by the address of its shared handle (`Arc::as_ptr`): the fetching
    /// connection holds the `Arc` until the fetch completes, so the address names one file for
    /// as long as this entry lives.
    file: usize,
    /// The block's offset in the file (a multiple of `FETCH_BYTES`).
    start: u64,
    /// Joined connections.
    waiters: Vec<Entry>,
}

/// How [`Fetches::start`] went.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum FetchStart {
    /// The stretch's block was being fetched already: the connection waits for that fetch.
    Joined,
    /// Every fetch slot is taken: the connection waits in the queue.
    Queued,
    /// A fetch of the stretch's block started.
    Fetching,
    /// Not fetched (fetching is off, or the file could not be mapped): splice it.
    Splice,
}

pub(super) struct Fetches {
    /// Fetches in flight (`Out::Fetching`), at most `max`.
    in_flight: usize,
    /// The fetches in flight and the connections joined to each.
    waits: Vec<FetchWait>,
    /// Connections whose stretch waits for a fetch slot, oldest first.
    queue: VecDeque<Entry>,
    /// `EngineConfig::cold_fetches_max`.
    max: usize,
    /// Length at which a list is purged of entries whose connections left: twice the worker's
    /// connection limit.
    list_max: usize,
}

/// Whether the connection of a fetch list entry still waits (`Out::Waiting`).
fn waiting(conns: &Slab<Conn>, (key, gen): Entry) -> bool {
    conns
        .get(key)
        .is_some_and(|c| c.gen == gen && matches!(c.out, Out::Waiting { .. }))
}

impl Fetches {
    pub(super) fn new(max: usize, connections_max: usize) -> Fetches {
        Fetches {
            in_flight: 0,
            waits: Vec::new(),
            queue: VecDeque::new(),
            max,
            list_max: 2 * connections_max,
        }
    }

    /// Brings the 2 MiB-aligned block of `file` holding `offset` into the page cache for the
    /// connection at `key` (`Out::Fetching`), or has it wait for a fetch (`Out::Waiting`).
    ///
    /// Readahead for a huge-page mapping allocates one 2 MiB folio where a read, `sendfile` or
    /// WILLNEED fills 4 KiB pages, and `sendfile` from large folios costs less CPU per byte for
    /// as long as the object stays cached (BENCHMARKS.md: nginx's own sendfile 0.15-0.16 s/GB
    /// from 2 MiB folios, 0.19 from 4 KiB pages). One thread hand-off per 2 MiB, where the ring
    /// splice this replaces took one per 256 KiB piece.
    pub(super) fn start(
        &mut self,
        ring: &mut Ring,
        conns: &mut Slab<Conn>,
        key: usize,
        file: &Arc<File>,
        offset: u64,
        len: u64,
    ) -> FetchStart {
        let start = block_start(offset);
        let id = Arc::as_ptr(file) as usize;
        if let Some(i) = self.in_flight_for(id, start) {
            // Many connections asking for an object that has just become popular wait for the
            // one read of each block; splicing beside it read the same pages again into 4 KiB
            // folios (3 of 16 newly hot 2 MiB objects were left so at 1000 connections).
            self.purge_joined(i, |e| waiting(conns, e));
            let gen = conns[key].park(file, offset, len);
            self.waits[i].waiters.push((key, gen));
            return FetchStart::Joined;
        }
        if self.max == 0 {
            return FetchStart::Splice;
        }
        if !self.has_slot() {
            // Each fetch holds an io-wq thread on the disk. Past this many in flight a cold
            // stretch waits for one to end: splicing it instead read its pages into 4 KiB folios
            // and cost more server CPU, and fetched blocks waited longer to be sent while many
            // were in flight (BENCHMARKS.md, cold fetch queue).
            self.purge_queue(|e| waiting(conns, e));
            let gen = conns[key].park(file, offset, len);
            self.queue.push_back((key, gen));
            return FetchStart::Queued;
        }
        let Ok(size) = file.metadata().map(|m| m.len()) else {
            return FetchStart::Splice;
        };
        if start >= size {
            // The file is shorter than its catalog size: the splice reports it.
            return FetchStart::Splice;
        }
        let map_len = (size - start).min(FETCH_BYTES) as usize;
        let Some(mapping) = Mapping::new(file, start, map_len) else {
            return FetchStart::Splice;
        };
        let c = &mut conns[key];
        let e = opcode::Madvise::new(
            mapping.addr(),
            map_len as libc::off_t,
            libc::MADV_POPULATE_READ,
        )
        .build()
        .user_data(user_data(OP_FETCH, key, c.gen));
        c.ops += 1;
        self.begin(id, start);
        c.out = Out::Fetching {
            file: Arc::clone(file),
            offset,
            len,
            _mapping: mapping,
        };
        // SAFETY: the mapping is held in `c.out` until the completion (a connection is freed
        // only when it has no operations in flight), so the range stays mapped while io-wq
        // faults it in.
        unsafe { ring.push(e) };
        FetchStart::Fetching
    }

    /// Whether another fetch may start now.
    pub(super) fn has_slot(&self) -> bool {
        self.in_flight < self.max
    }

    /// The fetch of the block of `file` holding `offset` has completed: frees its slot
    /// and returns the connections that joined it, in the order they joined.
    pub(super) fn end(&mut self, file: &Arc<File>, offset: u64) -> Vec<Entry> {
        self.in_flight -= 1;
        let (id, start) = (Arc::as_ptr(file) as usize, block_start(offset));
        let at = self
            .waits
            .iter()
            .position(|w| w.file == id && w.start == start)
            .expect("a fetch in flight has its entry");
        self.waits.swap_remove(at).waiters
    }

    /// The oldest queued entry, while a fetch slot is free.
    pub(super) fn next_queued(&mut self) -> Option<Entry> {
        if !self.has_slot() {
            return None;
        }
        self.queue.pop_front()
    }

    fn in_flight_for(&self, file: usize, start: u64) -> Option<usize> {
        self.waits
            .iter()
            .position(|w| w.file == file && w.start == start)
    }

    fn begin(&mut self, file: usize, start: u64) {
        self.in_flight += 1;
        self.waits.push(FetchWait {
            file,
            start,
            waiters: Vec::new(),
        });
    }

    /// Connections that joined and closed leave their entries until the fetch ends: should it
    /// hang while clients come and go, those are dropped rather than let the list grow.
    fn purge_joined(&mut self, i: usize, still_waiting: impl Fn(Entry) -> bool) {
        let waiters = &mut self.waits[i].waiters;
        if waiters.len() >= self.list_max {
            waiters.retain(|&e| still_waiting(e));
        }
    }

    /// As [`Fetches::purge_joined`], for connections that closed while queued.
    fn purge_queue(&mut self, still_waiting: impl Fn(Entry) -> bool) {
        if self.queue.len() >= self.list_max {
            self.queue.retain(|&e| still_waiting(e));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_aligned_to_the_fetch_size() {
        assert_eq!(block_start(0), 0);
        assert_eq!(block_start(FETCH_BYTES - 1), 0);
        assert_eq!(block_start(FETCH_BYTES), FETCH_BYTES);
        assert_eq!(block_start(5 * FETCH_BYTES + 7), 5 * FETCH_BYTES);
    }

    #[test]
    fn slots_bound_the_fetches_and_the_queue_waits_for_one() {
        let mut f = Fetches::new(2, 10);
        f.begin(1, 0);
        f.begin(1, FETCH_BYTES);
        assert!(!f.has_slot());
        f.queue.push_back((5, 1));
        f.queue.push_back((6, 1));
        assert_eq!(f.next_queued(), None, "no slot: the queue waits");
        f.in_flight -= 1;
        f.waits.pop();
        assert_eq!(f.next_queued(), Some((5, 1)), "oldest first");
    }

    #[test]
    fn joined_lists_are_purged_only_at_twice_the_connection_limit() {
        let conns_max = 3;
        let mut f = Fetches::new(1, conns_max);
        f.begin(1, 0);
        let i = f.in_flight_for(1, 0).unwrap();
        assert_eq!(f.in_flight_for(1, FETCH_BYTES), None);
        assert_eq!(f.in_flight_for(2, 0), None);
        let gone = |(key, _): Entry| key % 2 == 0; // odd keys have left
        for key in 0..5 {
            f.purge_joined(i, |e| !gone(e));
            f.waits[i].waiters.push((key, 1));
        }
        assert_eq!(f.waits[i].waiters.len(), 5, "below 6: nothing purged");
        f.waits[i].waiters.push((5, 1));
        f.purge_joined(i, |e| !gone(e));
        assert_eq!(
            f.waits[i].waiters,
            vec![(1, 1), (3, 1), (5, 1)],
            "order kept"
        );
    }

    #[test]
    fn the_queue_is_purged_only_at_twice_the_connection_limit() {
        let mut f = Fetches::new(1, 2);
        let still = |(_, gen): Entry| gen == 1;
        f.queue.extend([(0, 1), (1, 2), (2, 1)]);
        f.purge_queue(still);
        assert_eq!(f.queue.len(), 3);
        f.queue.push_back((3, 2));
        f.purge_queue(still);
        assert_eq!(Vec::from(f.queue.clone()), vec![(0, 1), (2, 1)]);
    }

    #[test]
    fn an_ended_fetch_hands_back_its_joiners() {
        let file = Arc::new(tempfile::tempfile().unwrap());
        let id = Arc::as_ptr(&file) as usize;
        let mut f = Fetches::new(4, 100);
        f.begin(id, FETCH_BYTES);
        f.begin(id, 0);
        let i = f.in_flight_for(id, FETCH_BYTES).unwrap();
        f.waits[i].waiters.extend([(3, 1), (4, 1)]);
        assert_eq!(f.end(&file, FETCH_BYTES + 17), vec![(3, 1), (4, 1)]);
        assert_eq!(f.in_flight, 1);
        assert_eq!(f.in_flight_for(id, FETCH_BYTES), None);
        assert!(f.end(&file, 5).is_empty());
        assert!(f.has_slot());
    }
}
