//! A read-only shared mapping of one block of an object file, which a cold fetch's ring MADVISE
//! faults in (in huge pages where the kernel can).
//!
//! The process never reads through it: only the kernel touches the pages. It must never outlive
//! the fetch that uses it (the connection holds it until the completion, then drops it).

use std::fs::File;
use std::os::fd::AsRawFd;

/// A read-only shared mapping of part of an object file, unmapped on drop.
pub(crate) struct Mapping {
    addr: *mut libc::c_void,
    len: usize,
}

// SAFETY: the mapping is owned by one connection and never dereferenced by this process (only
// the kernel touches it, through MADVISE); moving its owner to another thread is harmless.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `file` at `offset` (page-aligned) and asks for huge-page readahead.
    pub(super) fn new(file: &File, offset: u64, len: usize) -> Option<Mapping> {
        // SAFETY: a new read-only mapping chosen by the kernel; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                offset as libc::off_t,
            )
        };
        if addr == libc::MAP_FAILED {
            return None;
        }
        // Without it (THP off, an old kernel) the block is read in 4 KiB pages: still correct.
        // SAFETY: advice on the mapping just made; no memory is accessed.
        unsafe { libc::madvise(addr, len, libc::MADV_HUGEPAGE) };
        Some(Mapping { addr, len })
    }

    /// Where the mapping starts, for the MADVISE that populates it.
    pub(super) fn addr(&self) -> *const libc::c_void {
        self.addr.cast_const()
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the range was mapped by `Mapping::new` and is unmapped once, here.
        unsafe { libc::munmap(self.addr, self.len) };
    }
}
