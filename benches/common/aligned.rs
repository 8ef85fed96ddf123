//! A page-aligned heap buffer for the criterion suites, as registered buffers and O_DIRECT want.
//! Shared by `send_path.rs` and `read_path.rs` (`#[path]` module): one copy of the `unsafe`.

use std::alloc::{self, Layout};
use std::ptr::NonNull;

pub const PAGE_BYTES: usize = 4096;

pub struct AlignedBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

impl AlignedBuf {
    pub fn new(len_bytes: usize) -> Self {
        assert!(len_bytes > 0);
        let layout = Layout::from_size_align(len_bytes, PAGE_BYTES).expect("valid layout");
        // SAFETY: the layout has a non-zero size (asserted above).
        let raw = unsafe { alloc::alloc_zeroed(layout) };
        let ptr = NonNull::new(raw).unwrap_or_else(|| alloc::handle_alloc_error(layout));
        AlignedBuf { ptr, layout }
    }

    pub fn len(&self) -> usize {
        self.layout.size()
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    pub fn iovec(&mut self) -> libc::iovec {
        libc::iovec {
            iov_base: self.as_mut_ptr().cast(),
            iov_len: self.len(),
        }
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from `alloc_zeroed` with this very layout and is freed once, here.
        // Callers never drop a buffer while an operation on it is in flight (every helper waits
        // for its completions before returning).
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}
