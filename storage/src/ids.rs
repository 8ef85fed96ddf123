//! Version ids at hand: a block the catalog reserved durably in advance, so starting an upload
//! takes an id without a database transaction (and without the committer lock that commits hold
//! across their fsyncs).
//!
//! The block is refilled under the committer by whoever is already there (an upload's commit,
//! or a blocking [`crate::Store::create_upload`] that found it empty), one transaction for
//! [`IDS_PER_BLOCK`] ids. Ids are never handed out twice: each was counted past in the catalog
//! before it entered the block; ids left in the block at a crash or exit are skipped, never
//! reused. This module must never call the catalog itself or hold its lock across anything but
//! a few instructions.

use std::ops::Range;
use std::sync::Mutex;

/// Ids reserved by one catalog transaction.
pub(crate) const IDS_PER_BLOCK: u64 = 256;
/// A commit refills the block when fewer than this many are left.
pub(crate) const IDS_LOW: u64 = IDS_PER_BLOCK / 4;
const _: () = assert!(IDS_LOW > 0 && IDS_LOW < IDS_PER_BLOCK);

/// The ids at hand, all durably reserved.
pub(crate) struct IdBlock {
    /// Held only to pop or extend: never across I/O.
    range: Mutex<Range<u64>>,
}

impl IdBlock {
    pub(crate) fn new() -> IdBlock {
        IdBlock {
            range: Mutex::new(0..0),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Range<u64>> {
        // Only plain integer updates happen under it: a panic cannot leave it half done.
        self.range.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The next id, or `None` when the block is empty.
    pub(crate) fn take(&self) -> Option<u64> {
        self.lock().next()
    }

    /// How many ids are left.
    pub(crate) fn left(&self) -> u64 {
        let r = self.lock();
        r.end - r.start
    }

    /// Adds ids the catalog just reserved. Ids are reserved in increasing order, so a new range
    /// continues the block or starts above it (ids left below are then skipped).
    pub(crate) fn add(&self, ids: Range<u64>) {
        let mut r = self.lock();
        assert!(
            ids.start >= r.end,
            "reserved ids {ids:?} overlap the block {r:?}"
        );
        if ids.start == r.end {
            r.end = ids.end;
        } else {
            *r = ids;
        }
    }

    /// Empties the block (test seam: the next upload finds no id at hand).
    pub(crate) fn clear(&self) {
        let mut r = self.lock();
        r.start = r.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_in_order_and_continues_or_skips() {
        let b = IdBlock::new();
        assert_eq!(b.take(), None);
        b.add(1..3);
        assert_eq!(b.take(), Some(1));
        b.add(3..5);
        assert_eq!(b.left(), 3);
        assert_eq!(b.take(), Some(2));
        b.add(10..12);
        assert_eq!(b.take(), Some(10), "ids left below a new range are skipped");
        b.clear();
        assert_eq!(b.take(), None);
    }
}
