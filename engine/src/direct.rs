//! O_DIRECT reads: which files may take them, and where an aligned read lands in a pool chunk.
//!
//! A file opened with `O_DIRECT` bypasses the page cache, and the kernel then wants the file
//! offset, the length and the buffer address aligned to the file system's direct-I/O alignment.
//! Oasis aligns everything to [`DIRECT_ALIGN_BYTES`] (4096, the pool's alignment, a multiple of
//! every logical block size in use); [`alignment`] tells whether a file accepts that. A response
//! rarely starts on a block boundary, so [`DirectRead::plan`] reads from the aligned-down offset
//! into an aligned place in the chunk and reports where the wanted bytes start; the response head
//! that shares the send is copied right before them once the read has completed.
//!
//! This module only computes and asks the kernel about files; it never submits ring operations
//! (the worker does) and never opens files (storage does).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, RawFd};

use crate::pool::ALIGN_BYTES;

/// What O_DIRECT reads are aligned to: offsets, lengths and buffer addresses.
pub const DIRECT_ALIGN_BYTES: usize = ALIGN_BYTES;
const _: () = assert!(DIRECT_ALIGN_BYTES.is_power_of_two());

/// What the file system reports about direct I/O on one open file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectSupport {
    /// Aligned reads of [`DIRECT_ALIGN_BYTES`] work (the reported alignments divide it).
    Aligned {
        memory_align_bytes: u32,
        offset_align_bytes: u32,
    },
    /// The file system does not report (statx without `STATX_DIOALIGN`, e.g. tmpfs or an old
    /// kernel); the open succeeded, so 4096-aligned reads are the safe assumption.
    Unreported,
    /// Direct I/O is not supported on this file, or needs more than [`DIRECT_ALIGN_BYTES`].
    Unsupported {
        memory_align_bytes: u32,
        offset_align_bytes: u32,
    },
}

/// Asks the kernel (statx `STATX_DIOALIGN`) how direct I/O must be aligned for `file`.
pub fn alignment(file: &File) -> io::Result<DirectSupport> {
    // SAFETY: statx is plain data; all-zero is a valid value that the kernel overwrites.
    let mut stx: libc::statx = unsafe { std::mem::zeroed() };
    // SAFETY: the fd is open (borrowed from `file`), the path is a valid empty C string used with
    // AT_EMPTY_PATH, and `stx` is a valid, writable statx buffer for the duration of the call.
    let rc = unsafe {
        libc::statx(
            file.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut stx,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    if stx.stx_mask & libc::STATX_DIOALIGN == 0 {
        return Ok(DirectSupport::Unreported);
    }
    let (mem, off) = (stx.stx_dio_mem_align, stx.stx_dio_offset_align);
    let fits = |a: u32| a != 0 && a.is_power_of_two() && a as usize <= DIRECT_ALIGN_BYTES;
    Ok(if fits(mem) && fits(off) {
        DirectSupport::Aligned {
            memory_align_bytes: mem,
            offset_align_bytes: off,
        }
    } else {
        DirectSupport::Unsupported {
            memory_align_bytes: mem,
            offset_align_bytes: off,
        }
    })
}

/// True when `fd` was opened with `O_DIRECT` (one `fcntl(F_GETFL)`; never blocks).
pub fn is_direct(fd: RawFd) -> bool {
    // SAFETY: F_GETFL only reads the descriptor's flags; an invalid fd gives -1, not UB.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    flags >= 0 && flags & libc::O_DIRECT != 0
}

/// One O_DIRECT read into a pool chunk, laid out so a response head and the wanted file bytes
/// end up contiguous:
///
/// ```text
/// chunk: [ .. | head | wanted bytes ..................... | .. ]
///               ^start  ^at + skew
///             [ read from file_offset, read_len bytes, starting at `at` ]
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DirectRead {
    /// Aligned-down file offset the read starts at.
    pub file_offset: u64,
    /// Aligned read length (may run past the end of the file; the kernel stops there).
    pub read_len: u32,
    /// Aligned chunk position the read lands at.
    pub at: usize,
    /// Bytes between `file_offset` and the first wanted byte.
    pub skew: usize,
    /// Wanted file bytes this read covers (at most what was asked for).
    pub want: usize,
    /// Length of the head copied before the wanted bytes.
    pub head_len: usize,
}

impl DirectRead {
    /// Plans a read of up to `len` bytes at `offset` with `head_len` bytes of head in front, in a
    /// chunk of `chunk_bytes`. Needs `chunk_bytes` a multiple of the alignment, at least two
    /// alignment units, and `head_len < chunk_bytes / 2` (the engine's rule for heads).
    pub fn plan(offset: u64, len: u64, head_len: usize, chunk_bytes: usize) -> DirectRead {
        const A: usize = DIRECT_ALIGN_BYTES;
        assert!(chunk_bytes.is_multiple_of(A) && chunk_bytes >= 2 * A);
        assert!(head_len < chunk_bytes / 2 && len > 0);
        let skew = (offset % A as u64) as usize;
        // The head goes right before the wanted bytes, so the read must land far enough in.
        let at = head_len.saturating_sub(skew).next_multiple_of(A);
        // at <= chunk/2 rounded up, skew < A: at least one byte of room is left.
        let room = chunk_bytes - at - skew;
        debug_assert!(room > 0);
        let want = len.min(room as u64) as usize;
        let read_len = (skew + want).next_multiple_of(A);
        debug_assert!(at + read_len <= chunk_bytes);
        DirectRead {
            file_offset: offset - skew as u64,
            read_len: read_len as u32,
            at,
            skew,
            want,
            head_len,
        }
    }

    /// Where the head goes (and the send starts) in the chunk.
    pub fn start(&self) -> usize {
        self.at + self.skew - self.head_len
    }

    /// Wanted bytes a read that returned `read` bytes delivered (0: the file ended first).
    pub fn delivered(&self, read: usize) -> usize {
        read.saturating_sub(self.skew).min(self.want)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: usize = 64 * 1024;

    fn check(offset: u64, len: u64, head: usize) {
        let p = DirectRead::plan(offset, len, head, CHUNK);
        let a = DIRECT_ALIGN_BYTES;
        assert_eq!(p.file_offset % a as u64, 0);
        assert_eq!(p.at % a, 0);
        assert_eq!(p.read_len as usize % a, 0);
        assert!(p.at + p.read_len as usize <= CHUNK);
        assert_eq!(p.file_offset + p.skew as u64, offset);
        assert!(p.want > 0 && p.want as u64 <= len);
        assert!(p.skew + p.want <= p.read_len as usize);
        assert!(p.start() + head + p.want <= CHUNK);
        assert_eq!(p.start() + head, p.at + p.skew);
    }

    #[test]
    fn plans_stay_aligned_and_inside_the_chunk() {
        for offset in [0, 1, 511, 4095, 4096, 4097, 65_535, 1 << 40] {
            for len in [1, 2, 4095, 4096, 4097, 65_536, 1 << 30] {
                for head in [0, 1, 200, 4095, 4096, 4097, CHUNK / 2 - 1] {
                    check(offset, len, head);
                }
            }
        }
    }

    #[test]
    fn a_skew_larger_than_the_head_needs_no_extra_block() {
        let p = DirectRead::plan(4096 + 1000, 10, 300, CHUNK);
        assert_eq!((p.at, p.skew, p.start(), p.read_len), (0, 1000, 700, 4096));
        let p = DirectRead::plan(4096 + 100, 10, 300, CHUNK);
        assert_eq!((p.at, p.start()), (4096, 4096 + 100 - 300));
    }

    #[test]
    fn delivered_counts_only_wanted_bytes() {
        let p = DirectRead::plan(5000, 100, 0, CHUNK);
        assert_eq!(p.delivered(0), 0);
        assert_eq!(p.delivered(904), 0); // the file ended before the first wanted byte
        assert_eq!(p.delivered(950), 46);
        assert_eq!(p.delivered(4096), 100);
    }

    #[test]
    fn a_regular_file_reports_its_alignment() {
        let dir = std::env::temp_dir();
        let path = dir.join(format!("oasis-direct-probe-{}", std::process::id()));
        std::fs::write(&path, b"x").unwrap();
        let f = File::open(&path).unwrap();
        let support = alignment(&f).unwrap();
        std::fs::remove_file(&path).unwrap();
        assert!(!is_direct(f.as_raw_fd()));
        // Whatever the file system, the answer is one of the three, never an error.
        let _ = support;
    }
}
