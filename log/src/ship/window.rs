//! The bytes a shipper has read but no server has acknowledged yet, shared by the thread that
//! reads the source (the producer) and the thread that sends (the connection loop).
//!
//! The window holds the stream's bytes `[acked, read_end)` in memory, at most `capacity` of them:
//! a producer that finds it full waits (backpressure: it stops reading its input) until an
//! acknowledgement frees room. The connection loop copies bytes out from any offset inside the
//! window, so after a dropped connection it resends from whatever a server expects without going
//! back to the source. When a server acknowledges bytes the window has not read yet (it held
//! them from an earlier run), the producer's next bytes below that offset are dropped as they
//! arrive. Every change (bytes in, an acknowledgement, the end of input, a stop, a wake-up) moves
//! a generation counter that waiters watch. No I/O here.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Where the window stands, read at one instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// Every byte below this offset is durable on some server.
    pub acked: u64,
    /// The offset of the next byte the source will give.
    pub read_end: u64,
    /// The source has ended (no byte will come after `read_end`).
    pub finished: bool,
    /// The window's offsets are final; an unanchored source learns its start from the servers.
    pub anchored: bool,
    /// Moves on every change.
    pub generation: u64,
}

impl Snapshot {
    /// The source has ended and a server holds all of it.
    pub fn all_acked(&self) -> bool {
        self.finished && self.acked >= self.read_end
    }
}

struct Inner {
    acked: u64,
    read_end: u64,
    /// The bytes `[max(acked, read_end - len), read_end)`: when `acked > read_end`, empty.
    bytes: VecDeque<u8>,
    capacity: usize,
    finished: bool,
    /// The producer must stop: it returns from `push` at once and reads no more input.
    closed: bool,
    anchored: bool,
    generation: u64,
}

/// The shared window of unacknowledged bytes.
pub struct Window {
    inner: Mutex<Inner>,
    changed: Condvar,
}

impl Window {
    /// A window whose first byte is stream offset `start`, holding at most `capacity` bytes.
    /// `anchored: false` means `start` is provisional until [`Window::anchor`].
    pub fn new(start: u64, capacity: usize, anchored: bool) -> Window {
        Window {
            inner: Mutex::new(Inner {
                acked: start,
                read_end: start,
                bytes: VecDeque::new(),
                capacity: capacity.max(1),
                finished: false,
                closed: false,
                anchored,
                generation: 0,
            }),
            changed: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self, inner: &mut Inner) {
        inner.generation = inner.generation.wrapping_add(1);
        self.changed.notify_all();
    }

    /// Where the window stands now.
    pub fn snapshot(&self) -> Snapshot {
        let inner = self.lock();
        Snapshot {
            acked: inner.acked,
            read_end: inner.read_end,
            finished: inner.finished,
            anchored: inner.anchored,
            generation: inner.generation,
        }
    }

    /// Appends as much of `data` as fits, waiting up to `wait` for room when none is free.
    /// Returns how many bytes were taken (0: still full after `wait`, or the window is closed).
    pub fn push(&self, data: &[u8], wait: Duration) -> usize {
        if data.is_empty() {
            return 0;
        }
        let deadline = Instant::now() + wait;
        let mut inner = self.lock();
        loop {
            if inner.closed {
                return 0;
            }
            // Bytes a server already holds are dropped, not stored.
            let skip = usize::try_from(inner.acked.saturating_sub(inner.read_end))
                .unwrap_or(usize::MAX)
                .min(data.len());
            let room = inner.capacity.saturating_sub(inner.bytes.len());
            let take = (data.len() - skip).min(room);
            if skip > 0 || take > 0 {
                inner.bytes.extend(&data[skip..skip + take]);
                inner.read_end += (skip + take) as u64;
                self.bump(&mut inner);
                return skip + take;
            }
            let now = Instant::now();
            if now >= deadline {
                return 0;
            }
            inner = self
                .changed
                .wait_timeout(inner, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    /// Appends all of `data`, waiting for room as long as it takes. Returns false when the window
    /// was closed first (the rest of `data` is not taken).
    pub fn push_all(&self, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = self.push(data, Duration::from_secs(1));
            if n == 0 && self.is_closed() {
                return false;
            }
            data = &data[n..];
        }
        true
    }

    /// Copies the bytes from stream offset `from` on (at most `max`) into `out` (cleared first).
    /// Returns how many: 0 when `from` is at or past `read_end`, or below `acked` (forgotten).
    pub fn copy_from(&self, from: u64, max: usize, out: &mut Vec<u8>) -> usize {
        out.clear();
        let inner = self.lock();
        let first = inner.read_end - inner.bytes.len() as u64;
        if from < first || from >= inner.read_end {
            return 0;
        }
        let start = (from - first) as usize;
        let n = (inner.bytes.len() - start).min(max);
        let (a, b) = inner.bytes.as_slices();
        if start < a.len() {
            let from_a = n.min(a.len() - start);
            out.extend_from_slice(&a[start..start + from_a]);
            out.extend_from_slice(&b[..n - from_a]);
        } else {
            let at = start - a.len();
            out.extend_from_slice(&b[at..at + n]);
        }
        n
    }

    /// Records that a server durably holds everything below `offset`: those bytes are forgotten
    /// (and, past `read_end`, skipped when the source gives them). Returns whether `acked` moved.
    pub fn ack(&self, offset: u64) -> bool {
        let mut inner = self.lock();
        if offset <= inner.acked {
            return false;
        }
        let first = inner.read_end - inner.bytes.len() as u64;
        let forget = offset.min(inner.read_end).saturating_sub(first) as usize;
        inner.bytes.drain(..forget);
        inner.acked = offset;
        self.bump(&mut inner);
        true
    }

    /// Fixes an unanchored window's offsets: its first byte becomes stream offset `start` (the
    /// bytes already read keep their order after it).
    pub fn anchor(&self, start: u64) {
        let mut inner = self.lock();
        if inner.anchored {
            return;
        }
        debug_assert_eq!(inner.acked, inner.read_end - inner.bytes.len() as u64);
        let len = inner.bytes.len() as u64;
        inner.acked = start;
        inner.read_end = start + len;
        inner.anchored = true;
        self.bump(&mut inner);
    }

    /// The source has ended: nothing comes after `read_end`.
    pub fn finish(&self) {
        let mut inner = self.lock();
        inner.finished = true;
        self.bump(&mut inner);
    }

    /// Tells the producer to stop reading input: `push` takes nothing more. What the window
    /// holds stays, to be sent and acknowledged.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.finished = true;
        self.bump(&mut inner);
    }

    /// Whether [`Window::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Moves the generation so a waiter looks again (an acknowledgement arrived elsewhere).
    pub fn wake(&self) {
        let mut inner = self.lock();
        self.bump(&mut inner);
    }

    /// Waits until the generation is no longer `seen`, or `timeout` passes.
    pub fn wait_change(&self, seen: u64, timeout: Duration) {
        let inner = self.lock();
        if inner.generation != seen {
            return;
        }
        let _unused = self
            .changed
            .wait_timeout_while(inner, timeout, |i| i.generation == seen)
            .unwrap_or_else(|e| e.into_inner());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn copy(w: &Window, from: u64, max: usize) -> Vec<u8> {
        let mut out = Vec::new();
        w.copy_from(from, max, &mut out);
        out
    }

    #[test]
    fn bytes_in_resend_from_any_offset_ack_forgets() {
        let w = Window::new(100, 16, true);
        assert_eq!(w.push(b"abcdef", Duration::ZERO), 6);
        let s = w.snapshot();
        assert_eq!((s.acked, s.read_end), (100, 106));
        assert_eq!(copy(&w, 100, 4), b"abcd");
        assert_eq!(copy(&w, 103, 100), b"def");
        assert_eq!(copy(&w, 106, 100), b"");
        assert!(w.ack(102));
        assert!(!w.ack(101), "acknowledgements never go back");
        assert_eq!(copy(&w, 101, 10), b"", "forgotten");
        assert_eq!(copy(&w, 102, 10), b"cdef");
    }

    #[test]
    fn full_window_pushes_back_until_an_ack() {
        let w = Arc::new(Window::new(0, 8, true));
        assert_eq!(w.push(b"0123456789", Duration::ZERO), 8, "only what fits");
        assert_eq!(
            w.push(b"89", Duration::from_millis(1)),
            0,
            "full: nothing taken"
        );
        // A producer blocked in push_all finishes once the consumer acknowledges.
        let producer = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.push_all(b"89abcdef"))
        };
        let mut acked = 0;
        while w.snapshot().read_end < 16 {
            let s = w.snapshot();
            if s.read_end > acked {
                acked = s.read_end;
                w.ack(acked);
            }
            w.wait_change(s.generation, Duration::from_millis(100));
        }
        assert!(producer.join().unwrap());
        assert_eq!(w.snapshot().read_end, 16);
        assert_eq!(copy(&w, acked, 100).len() as u64, 16 - acked);
    }

    #[test]
    fn close_releases_a_blocked_producer() {
        let w = Arc::new(Window::new(0, 4, true));
        w.push(b"abcd", Duration::ZERO);
        let producer = {
            let w = Arc::clone(&w);
            std::thread::spawn(move || w.push_all(b"more"))
        };
        w.close();
        assert!(!producer.join().unwrap());
        let s = w.snapshot();
        assert!(s.finished);
        assert_eq!(copy(&w, 0, 10), b"abcd", "what was read stays to be sent");
    }

    #[test]
    fn acks_past_the_read_end_skip_arriving_bytes() {
        let w = Window::new(0, 8, true);
        w.push(b"abc", Duration::ZERO);
        w.ack(5);
        assert_eq!(w.snapshot().read_end, 3);
        // d and e are dropped, f, g, h kept.
        assert_eq!(w.push(b"defgh", Duration::ZERO), 5);
        assert_eq!(w.snapshot().read_end, 8);
        assert_eq!(copy(&w, 3, 10), b"", "never held");
        assert_eq!(copy(&w, 5, 10), b"fgh");
    }

    #[test]
    fn an_unanchored_window_moves_to_its_start() {
        let w = Window::new(0, 8, false);
        w.push(b"xyz", Duration::ZERO);
        assert!(!w.snapshot().anchored);
        w.anchor(1000);
        let s = w.snapshot();
        assert!(s.anchored);
        assert_eq!((s.acked, s.read_end), (1000, 1003));
        assert_eq!(copy(&w, 1001, 10), b"yz");
        w.anchor(5);
        assert_eq!(w.snapshot().acked, 1000, "anchored once");
    }

    #[test]
    fn all_acked_needs_the_end_of_input() {
        let w = Window::new(0, 8, true);
        w.push(b"ab", Duration::ZERO);
        w.ack(2);
        assert!(!w.snapshot().all_acked());
        w.finish();
        assert!(w.snapshot().all_acked());
    }
}
