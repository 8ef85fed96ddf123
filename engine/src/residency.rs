//! Whether a file's pages can be sent without waiting for the disk: the worker sends hot
//! stretches with a synchronous `sendfile` only when they are resident (a cold page there
//! would stall every connection of the worker), and hands the rest to io_uring.
//!
//! `resident` asks the kernel (cachestat plus a nonblocking probe read); [`Verified`] remembers
//! recent answers for a short while, bounded, so a hot object sent many times a second is not
//! asked about on every response.

use std::fs::File;
use std::os::fd::RawFd;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// How long a range found resident is trusted without asking again. Its pages were just sent,
/// which marks them recently used; the kernel evicts those last, so within this window only a
/// host thrashing its page cache would take them, and the cost then is one `sendfile` waiting
/// for a re-read (which the memory observer reports as a critical event anyway).
pub(crate) const TRUST: Duration = Duration::from_millis(100);

/// Slots of the memo, per worker: direct-mapped by file, a collision only costs a question.
const SLOTS: usize = 64;

struct Entry {
    /// Identity of the file: a `Weak` keeps the allocation, so its address is not reused by
    /// another file while the entry exists.
    file: Weak<File>,
    start: u64,
    end: u64,
    at: Instant,
}

/// Ranges of files recently found resident, per worker (fixed size, no locking).
pub(crate) struct Verified {
    slots: Vec<Option<Entry>>,
}

impl Verified {
    pub(crate) fn new() -> Verified {
        Verified {
            slots: (0..SLOTS).map(|_| None).collect(),
        }
    }

    fn slot(file: &Arc<File>) -> usize {
        // Allocations are at least 8-byte aligned; mix the address so neighbours spread.
        let a = Arc::as_ptr(file) as usize as u64;
        (a.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 58) as usize % SLOTS
    }

    /// Whether `len` bytes at `offset` of `file` were found resident within [`TRUST`].
    pub(crate) fn trusted(&self, file: &Arc<File>, offset: u64, len: u64, now: Instant) -> bool {
        match &self.slots[Self::slot(file)] {
            Some(e) => {
                std::ptr::eq(e.file.as_ptr(), Arc::as_ptr(file))
                    && e.start <= offset
                    && offset + len <= e.end
                    && now.saturating_duration_since(e.at) < TRUST
            }
            None => false,
        }
    }

    /// Records that `len` bytes at `offset` of `file` were found resident at `now`.
    pub(crate) fn remember(&mut self, file: &Arc<File>, offset: u64, len: u64, now: Instant) {
        self.slots[Self::slot(file)] = Some(Entry {
            file: Arc::downgrade(file),
            start: offset,
            end: offset + len,
            at: now,
        });
    }
}

/// Whether every page of `len` bytes at `offset` of the file is in the page cache (cachestat,
/// Linux 6.5+) and filled, the latter probed once per `step` bytes (see below). False when
/// unknown, so callers take the path that cannot block.
pub(crate) fn resident(fd: RawFd, offset: u64, len: u32, step: u32) -> bool {
    #[repr(C)]
    struct Range {
        off: u64,
        len: u64,
    }
    #[repr(C)]
    #[derive(Default)]
    struct Stat {
        nr_cache: u64,
        nr_dirty: u64,
        nr_writeback: u64,
        nr_evicted: u64,
        nr_recently_evicted: u64,
    }
    const SYS_CACHESTAT: libc::c_long = 451;
    const PAGE: u64 = 4096;
    if len == 0 {
        return false;
    }
    let range = Range {
        off: offset,
        len: u64::from(len),
    };
    let mut stat = Stat::default();
    // SAFETY: both pointers are to live, properly laid out structs for the duration of the call.
    let rc = unsafe {
        libc::syscall(
            SYS_CACHESTAT,
            fd,
            &range as *const Range,
            &mut stat as *mut Stat,
            0,
        )
    };
    let pages = (offset + u64::from(len)).div_ceil(PAGE) - offset / PAGE;
    if rc != 0 || stat.nr_cache < pages {
        return false;
    }
    // cachestat also counts pages that readahead has put in the cache but not filled yet, and a
    // splice of those waits for the disk (seen: workers in D state in `folio_wait_bit_common`
    // while a cold sweep ran). A one-byte RWF_NOWAIT read of the piece's last page fails with
    // EAGAIN while that page is not up to date. Readahead fills a window in order, so the last
    // page of a piece vouches for the ones before it in practice; should one of those still be
    // in flight, the worker waits for that read to land, never for a read it issued itself.
    // (Probing the first page too cost 7% of hot 64 KiB throughput in an A/B; the last alone
    // kept workers out of D state.) The last page of every `step` is probed. `HotSender::send`
    // passes the whole stretch as the step: readahead submits its windows in file order too, so a
    // filled last page leaves a window in flight in the middle only when another reader started
    // one there (a range request) in the meantime, and the cost then is one wait for that read.
    // Should its one probe fail, it falls back to a single chunk probed on its own.
    let (end, step) = (offset + u64::from(len), u64::from(step.max(1)));
    let mut at = offset;
    loop {
        let piece_end = (at + step).min(end);
        if !up_to_date(fd, piece_end - 1) {
            return false;
        }
        if piece_end == end {
            return true;
        }
        at = piece_end;
    }
}

/// Whether the page holding byte `at` of the file is in the page cache and up to date: a
/// one-byte read that must not wait (RWF_NOWAIT) succeeds.
fn up_to_date(fd: RawFd, at: u64) -> bool {
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // SAFETY: `iov` describes one live byte on this stack frame for the duration of the call.
    let n = unsafe { libc::preadv2(fd, &iov, 1, at as libc::off_t, libc::RWF_NOWAIT) };
    n == 1
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;

    fn evict(f: &File) {
        f.sync_all().unwrap();
        // SAFETY: a valid fd; fadvise only drops clean cached pages of this file.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
    }

    #[test]
    fn resident_tells_cached_and_filled_pages_from_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let mut f = File::create(&path).unwrap();
        f.write_all(&vec![7u8; 1 << 20]).unwrap();
        let mut f = File::open(&path).unwrap();
        evict(&f);
        let fd = f.as_raw_fd();
        if resident(fd, 0, 4096, 4096) {
            // Some file systems (tmpfs) keep every page: nothing to tell apart there.
            eprintln!("pages stay resident on this file system; skipping");
            return;
        }
        assert!(!resident(fd, 512 << 10, 64 << 10, 64 << 10));
        // No readahead, so exactly the pages read below come in.
        // SAFETY: a valid fd; the advice has no memory effects.
        let rc = unsafe { libc::posix_fadvise(fd, 0, 0, libc::POSIX_FADV_RANDOM) };
        assert_eq!(rc, 0);
        let mut first = vec![0u8; 256 << 10];
        f.read_exact(&mut first).unwrap();
        assert!(
            resident(fd, 0, 256 << 10, 256 << 10),
            "pages just read are resident"
        );
        assert!(
            resident(fd, 4000, 200, 200),
            "an unaligned piece inside them"
        );
        assert!(
            !resident(fd, (1 << 20) - (64 << 10), 64 << 10, 64 << 10),
            "the file's tail was never read"
        );
        assert!(
            resident(fd, 0, 256 << 10, 16 << 10),
            "probed every 16 KiB, the pages read are still resident"
        );
        assert!(
            !resident(fd, 0, 1 << 20, 256 << 10),
            "a range of which only the first quarter was read"
        );
        assert!(
            !resident(fd, 0, 0, 0),
            "an empty piece is not worth a synchronous send"
        );
    }

    #[test]
    fn verified_ranges_are_trusted_briefly_and_only_for_their_file() {
        let dir = tempfile::tempdir().unwrap();
        let open = |n: &str| {
            let p = dir.path().join(n);
            std::fs::write(&p, b"x").unwrap();
            Arc::new(File::open(p).unwrap())
        };
        let (a, b) = (open("a"), open("b"));
        let mut v = Verified::new();
        let t0 = Instant::now();
        assert!(!v.trusted(&a, 0, 10, t0), "nothing remembered yet");
        v.remember(&a, 100, 1000, t0);
        assert!(v.trusted(&a, 100, 1000, t0));
        assert!(
            v.trusted(&a, 200, 500, t0 + TRUST / 2),
            "a part, within the window"
        );
        assert!(!v.trusted(&a, 0, 1000, t0), "starts before the range");
        assert!(!v.trusted(&a, 500, 1000, t0), "ends after the range");
        assert!(
            !v.trusted(&a, 100, 1000, t0 + TRUST),
            "the window has passed"
        );
        assert!(!v.trusted(&b, 100, 1000, t0), "another file");
        // Whatever slot `b` lands in, remembering it never vouches for `a`'s other ranges.
        v.remember(&b, 0, 10, t0);
        assert!(v.trusted(&b, 0, 10, t0));
        assert!(!v.trusted(&a, 0, 10, t0));
    }
}
