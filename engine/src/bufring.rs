//! A ring of provided receive buffers (IORING_REGISTER_PBUF_RING), one per worker.
//!
//! Multishot receives take a buffer from this ring when bytes arrive, not when the receive is
//! armed, so an idle connection holds no input memory at all. The worker hands a buffer back (by
//! id) as soon as it has parsed or copied its bytes; the kernel never sees a buffer twice at once.
//!
//! Memory: `count * size` bytes of buffers plus `count * 16` bytes of ring entries, allocated once
//! at worker start, reserved with the Resource Manager by the caller, page-aligned. It is freed only
//! after the ring has been unregistered (`teardown`); if unregistering fails it is leaked, because
//! the kernel could still write into it.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::io;
use std::sync::atomic::{AtomicU16, Ordering};

use io_uring::types::BufRingEntry;
use io_uring::IoUring;

/// The buffer group id; each ring has its own namespace, so every worker uses the same one.
pub(crate) const GROUP: u16 = 0;
const PAGE: usize = 4096;

pub(crate) struct RecvBuffers {
    entries: *mut BufRingEntry,
    entries_layout: Layout,
    bufs: *mut u8,
    bufs_layout: Layout,
    /// `count - 1`; `count` is a power of two.
    mask: u16,
    size: u32,
    /// Our copy of the ring tail (the kernel owns the head).
    tail: u16,
}

impl RecvBuffers {
    /// Allocates `count` buffers of `size` bytes and registers them with `ring`.
    /// `count` must be a power of two between 1 and 32768.
    pub(crate) fn register(ring: &IoUring, count: usize, size: usize) -> io::Result<RecvBuffers> {
        assert!(
            count.is_power_of_two() && count <= 32768,
            "bad recv buffer count {count}"
        );
        assert!(
            size > 0 && size <= u32::MAX as usize,
            "bad recv buffer size {size}"
        );
        let entries_layout =
            Layout::from_size_align(count * std::mem::size_of::<BufRingEntry>(), PAGE)
                .map_err(io::Error::other)?;
        let bufs_layout = Layout::from_size_align(count * size, PAGE).map_err(io::Error::other)?;
        // SAFETY: both layouts have a non-zero size (count >= 1, size >= 1).
        let entries = unsafe { alloc_zeroed(entries_layout) }.cast::<BufRingEntry>();
        // SAFETY: as above.
        let bufs = unsafe { alloc_zeroed(bufs_layout) };
        if entries.is_null() || bufs.is_null() {
            // SAFETY: each non-null pointer came from `alloc_zeroed` with its layout.
            unsafe {
                if !entries.is_null() {
                    dealloc(entries.cast(), entries_layout);
                }
                if !bufs.is_null() {
                    dealloc(bufs, bufs_layout);
                }
            }
            return Err(io::Error::from(io::ErrorKind::OutOfMemory));
        }
        let mut me = RecvBuffers {
            entries,
            entries_layout,
            bufs,
            bufs_layout,
            mask: (count - 1) as u16,
            size: size as u32,
            tail: 0,
        };
        for bid in 0..count {
            me.write_entry(bid as u16);
        }
        me.publish();
        // SAFETY: the entries and buffers stay allocated until `teardown` has unregistered the
        // ring (or forever, if that fails).
        let reg = unsafe {
            ring.submitter()
                .register_buf_ring_with_flags(entries as u64, count as u16, GROUP, 0)
        };
        if let Err(e) = reg {
            me.free();
            return Err(e);
        }
        Ok(me)
    }

    fn mask(&self) -> u16 {
        self.mask
    }

    fn write_entry(&mut self, bid: u16) {
        let slot = (self.tail & self.mask()) as usize;
        // SAFETY: `slot <= mask < count`, inside the entries allocation; only the addr/len/bid
        // fields are written, so entry 0's `resv` (the shared tail) is left alone.
        let e = unsafe { &mut *self.entries.add(slot) };
        e.set_addr(self.buf_ptr(bid) as u64);
        e.set_len(self.size);
        e.set_bid(bid);
        self.tail = self.tail.wrapping_add(1);
    }

    fn publish(&self) {
        // SAFETY: the tail lives in entry 0 of our allocation, 2-aligned; the kernel only reads it.
        let tail = unsafe { &*(BufRingEntry::tail(self.entries).cast::<AtomicU16>()) };
        tail.store(self.tail, Ordering::Release);
    }

    fn buf_ptr(&self, bid: u16) -> *mut u8 {
        assert!(bid <= self.mask(), "buffer id {bid} out of range");
        // SAFETY: `bid < count`, so the offset stays inside the buffers allocation.
        unsafe { self.bufs.add(bid as usize * self.size as usize) }
    }

    /// The first `len` bytes of buffer `bid`, which the kernel has handed to us in a completion.
    pub(crate) fn bytes(&self, bid: u16, len: usize) -> &[u8] {
        assert!(len <= self.size as usize);
        // SAFETY: the kernel wrote `len` bytes into this buffer and will not touch it again until
        // `give_back(bid)` puts it back on the ring.
        unsafe { std::slice::from_raw_parts(self.buf_ptr(bid), len) }
    }

    /// Puts buffer `bid` back on the ring for the kernel to fill again.
    pub(crate) fn give_back(&mut self, bid: u16) {
        self.write_entry(bid);
        self.publish();
    }

    /// Unregisters the ring, then frees the memory; leaks it if the kernel may still use it.
    pub(crate) fn teardown(self, ring: &IoUring) {
        match ring.submitter().unregister_buf_ring(GROUP) {
            Ok(()) => self.free(),
            Err(e) => tracing::warn!("cannot unregister the receive buffer ring ({e}); leaking it"),
        }
    }

    fn free(self) {
        // SAFETY: both pointers came from `alloc_zeroed` with these layouts and the kernel no
        // longer references them (never registered, or unregistered).
        unsafe {
            dealloc(self.entries.cast(), self.entries_layout);
            dealloc(self.bufs, self.bufs_layout);
        }
    }
}

// No `Drop`: a `RecvBuffers` dropped without `teardown` (a worker that panicked) leaks its memory
// rather than free it while the kernel may still write into it.
