//! A writer connection's pending batch: the `DATA` payloads taken since the last batch went to
//! the store, kept as they arrived, each with the CRC-32C its frame's decoder computed. A batch's
//! bytes are thus copied once on their way from the socket to the file (into their frame), and
//! never checksummed again. Small payloads in a row are merged (copied) into one, up to
//! [`MERGE_BYTES_MAX`], so a shipper of single lines does not make a record per line.
//!
//! Counts the memory it holds and what taking more would add, so the session reserves first.
//! Pure: no I/O.

use crate::store::Payload;

/// Payloads under this size are merged with the one before if it is small too.
pub const MERGE_BYTES_MAX: usize = 64 * 1024;
/// Payloads in a batch at most (a batch of just under 1 MiB alternating large and small frames
/// makes 34); past it, payloads are merged whatever their size.
const PAYLOADS_MAX: usize = 40;
const _: () = assert!(PAYLOADS_MAX >= 2 * (super::BATCH_BYTES_MAX / MERGE_BYTES_MAX) + 4);

/// The list of a batch's payloads, allocated whole by its first payload.
pub const LIST_BYTES: usize = PAYLOADS_MAX * std::mem::size_of::<Payload>();

/// The capacity a merged payload of capacity `cap` grows to so it holds `needed` bytes:
/// doubling, never past what it must hold or [`MERGE_BYTES_MAX`].
fn grown(cap: usize, needed: usize) -> usize {
    if needed <= cap {
        return cap;
    }
    cap.saturating_mul(2)
        .min(MERGE_BYTES_MAX.max(needed))
        .max(needed)
}

/// Payloads waiting for the store.
#[derive(Debug, Default)]
pub(super) struct Batch {
    payloads: Vec<Payload>,
    len: usize,
}

impl Batch {
    /// Its bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether a payload of `len` bytes would be merged into the last one.
    fn merges(&self, len: usize) -> bool {
        let Some(last) = self.payloads.last() else {
            return false;
        };
        self.payloads.len() == PAYLOADS_MAX
            || (len < MERGE_BYTES_MAX && last.bytes.len() + len <= MERGE_BYTES_MAX)
    }

    /// Memory taking a payload of `len` bytes adds while it is taken: the payload itself, and
    /// what the last payload grows by if it is merged there (or the list of payloads, if none
    /// is held yet).
    pub fn bytes_to_take(&self, len: usize) -> usize {
        let list = if self.payloads.capacity() == 0 {
            LIST_BYTES
        } else {
            0
        };
        let growth = match self.payloads.last() {
            Some(last) if self.merges(len) => {
                let cap = last.bytes.capacity();
                grown(cap, last.bytes.len() + len) - cap
            }
            _ => 0,
        };
        len + growth + list
    }

    /// Takes a payload and its CRC-32C.
    pub fn take(&mut self, bytes: Vec<u8>, crc: u32) {
        if self.payloads.capacity() == 0 {
            self.payloads.reserve_exact(PAYLOADS_MAX);
        }
        self.len += bytes.len();
        if self.merges(bytes.len()) {
            let last = self.payloads.last_mut().expect("merging into a payload");
            let cap = grown(last.bytes.capacity(), last.bytes.len() + bytes.len());
            last.bytes.reserve_exact(cap - last.bytes.len());
            last.bytes.extend_from_slice(&bytes);
            last.crc = crate::proto::crc::combine(last.crc, crc, bytes.len());
        } else {
            self.payloads.push(Payload { bytes, crc });
        }
    }

    /// Memory it holds.
    pub fn held_bytes(&self) -> usize {
        let list = self.payloads.capacity() * std::mem::size_of::<Payload>();
        list + self
            .payloads
            .iter()
            .map(|p| p.bytes.capacity())
            .sum::<usize>()
    }

    /// Its payloads, leaving it empty.
    pub fn take_all(&mut self) -> Vec<Payload> {
        self.len = 0;
        std::mem::take(&mut self.payloads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(len: usize, byte: u8) -> (Vec<u8>, u32) {
        let b = vec![byte; len];
        let crc = crc32c::crc32c(&b);
        (b, crc)
    }

    #[test]
    fn large_payloads_stay_as_they_came_and_small_ones_merge_with_their_checksums() {
        let mut b = Batch::default();
        let (big, crc) = payload(300_000, 1);
        assert_eq!(b.bytes_to_take(big.len()), 300_000 + 40 * 32);
        b.take(big, crc);
        for i in 0..3 {
            let (small, crc) = payload(100, i);
            b.take(small, crc);
        }
        assert_eq!(b.len(), 300_300);
        let all = b.take_all();
        assert!(b.is_empty() && b.held_bytes() == 0);
        assert_eq!(all.len(), 2, "the small ones in one payload");
        for p in &all {
            assert_eq!(p.crc, crc32c::crc32c(&p.bytes));
        }
        assert_eq!(all[1].bytes.len(), 300);
    }

    #[test]
    fn what_taking_costs_is_what_it_holds_after() {
        let mut b = Batch::default();
        for len in [10, 5000, 70_000, 20, 64 * 1024 - 30, 1] {
            let before = b.held_bytes();
            let cost = b.bytes_to_take(len);
            let (bytes, crc) = payload(len, 7);
            b.take(bytes, crc);
            assert!(b.held_bytes() <= before + cost, "taking {len}");
        }
        // A full list merges whatever comes.
        let mut b = Batch::default();
        for _ in 0..PAYLOADS_MAX + 3 {
            let (bytes, crc) = payload(MERGE_BYTES_MAX, 3);
            b.take(bytes, crc);
        }
        let all = b.take_all();
        assert_eq!(all.len(), PAYLOADS_MAX);
        assert_eq!(all[PAYLOADS_MAX - 1].bytes.len(), 4 * MERGE_BYTES_MAX);
        assert_eq!(
            all[PAYLOADS_MAX - 1].crc,
            crc32c::crc32c(&all[PAYLOADS_MAX - 1].bytes)
        );
    }
}
