//! The buffer pool: every I/O buffer of the data path, allocated once at start-up.
//!
//! One 4096-aligned region of `count * chunk_bytes` (aligned so O_DIRECT reads can use it), reserved
//! with the Resource Manager as `MemoryBytes` before it is allocated, registered with every ring
//! (READ_FIXED / SEND_ZC with fixed buffers), and handed out as [`Chunk`]s through a lock-free free
//! list. When the pool is empty a caller waits its turn: the pool never grows.

use std::alloc::{alloc_zeroed, Layout};
use std::ptr::NonNull;

use crossbeam_queue::ArrayQueue;

use crate::resource::{Reservation, ReserveError, Resource, ResourceManager};

pub const ALIGN_BYTES: usize = 4096;

pub struct BufferPool {
    base: NonNull<u8>,
    chunk_bytes: usize,
    count: usize,
    free: ArrayQueue<u32>,
    _reservation: Reservation,
}

// SAFETY: the region is only reached through `Chunk`s, and each chunk index is owned by exactly one
// holder at a time (the free list hands an index out once until it is returned).
unsafe impl Send for BufferPool {}
// SAFETY: as above; shared access only touches the lock-free free list and immutable fields.
unsafe impl Sync for BufferPool {}

/// One leased buffer. Not Clone: whoever holds it owns those bytes (or the kernel does, while an
/// operation using it is in flight; the engine keeps the Chunk until its completion arrives).
#[derive(Debug)]
pub struct Chunk {
    index: u32,
}

impl Chunk {
    pub fn index(&self) -> u32 {
        self.index
    }
}

impl BufferPool {
    /// Reserves and allocates the pool. Leaked on purpose: it lives as long as the process, and
    /// rings keep pointers into it.
    pub fn new(
        rm: &std::sync::Arc<ResourceManager>,
        chunk_bytes: usize,
        count: usize,
    ) -> Result<&'static BufferPool, ReserveError> {
        assert!(
            chunk_bytes > 0 && chunk_bytes.is_multiple_of(ALIGN_BYTES),
            "chunk size must be a multiple of 4096"
        );
        assert!(
            count > 0 && count <= u16::MAX as usize,
            "buffer count must fit a fixed-buffer index"
        );
        let total = chunk_bytes * count;
        let reservation = rm.reserve(Resource::MemoryBytes, total as u64)?;
        let layout = Layout::from_size_align(total, ALIGN_BYTES).expect("pool layout");
        // SAFETY: layout has a non-zero size (asserted above).
        let ptr = unsafe { alloc_zeroed(layout) };
        let base = NonNull::new(ptr).unwrap_or_else(|| std::alloc::handle_alloc_error(layout));
        let free = ArrayQueue::new(count);
        for i in 0..count as u32 {
            free.push(i).expect("free list sized to count");
        }
        Ok(Box::leak(Box::new(BufferPool {
            base,
            chunk_bytes,
            count,
            free,
            _reservation: reservation,
        })))
    }

    pub fn lease(&self) -> Option<Chunk> {
        self.free.pop().map(|index| Chunk { index })
    }

    pub fn give_back(&self, chunk: Chunk) {
        self.free.push(chunk.index).expect("a chunk returned twice");
    }

    pub fn chunk_bytes(&self) -> usize {
        self.chunk_bytes
    }

    pub fn count(&self) -> usize {
        self.count
    }

    pub fn available(&self) -> usize {
        self.free.len()
    }

    pub fn ptr(&self, chunk: &Chunk) -> *mut u8 {
        debug_assert!((chunk.index as usize) < self.count);
        // SAFETY: index < count, so the offset stays inside the allocation.
        unsafe {
            self.base
                .as_ptr()
                .add(chunk.index as usize * self.chunk_bytes)
        }
    }

    /// The bytes of a chunk the caller holds.
    pub fn bytes(&self, chunk: &Chunk, len: usize) -> &[u8] {
        assert!(len <= self.chunk_bytes);
        // SAFETY: the caller owns `chunk` (no kernel op in flight on it: the engine only calls this
        // after the completion), and the range is inside the chunk.
        unsafe { std::slice::from_raw_parts(self.ptr(chunk), len) }
    }

    /// iovecs for `register_buffers`, one per chunk.
    pub fn iovecs(&self) -> Vec<libc::iovec> {
        (0..self.count)
            .map(|i| libc::iovec {
                // SAFETY: i < count keeps the pointer inside the allocation.
                iov_base: unsafe { self.base.as_ptr().add(i * self.chunk_bytes) }.cast(),
                iov_len: self.chunk_bytes,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resource::{AccountLimits, ResourceLimits};

    #[test]
    fn reserved_bounded_and_aligned() {
        let rm = ResourceManager::new(&ResourceLimits {
            memory_bytes: AccountLimits::new(3 * 8192),
            net_bps: vec![],
            disk_read_bps: AccountLimits::new(1),
            disk_space_bytes: AccountLimits::new(1),
            connections: AccountLimits::new(1),
            open_files: AccountLimits::new(1),
        });
        assert!(
            BufferPool::new(&rm, 8192, 4).is_err(),
            "more than memory_bytes allows"
        );
        let pool = BufferPool::new(&rm, 8192, 2).unwrap();
        assert_eq!(rm.used(Resource::MemoryBytes), 16384);
        let a = pool.lease().unwrap();
        let b = pool.lease().unwrap();
        assert!(pool.lease().is_none());
        assert_eq!(pool.ptr(&a) as usize % ALIGN_BYTES, 0);
        pool.give_back(a);
        pool.give_back(b);
        assert_eq!(pool.available(), 2);
    }
}
