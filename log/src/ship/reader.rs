//! Producers that are not files: any `Read` (standard input, a pipe) and a bounded queue of
//! lines that a program's threads fill without ever waiting (the `tracing` layer, the access
//! log).
//!
//! A `Read` source is read by its own thread into the window; when the window is full the thread
//! stops reading (backpressure reaches whoever writes into the pipe). The line queue never
//! pushes back on its callers: a line that does not fit (too many lines, or bytes, waiting) is
//! dropped and counted. Its reading end is a `Read`, so it is shipped like standard input.

use std::io::Read;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;

use super::window::Window;

/// Bytes read from the source at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A longer line is cut to this many bytes (and still ends with a newline).
pub const LINE_BYTES_MAX: usize = 16 * 1024;

/// Spawns the thread that reads `input` into `window` until end of input (then marks the
/// window finished) or until the window is closed. A read error ends the input, logged.
/// `pushed` counts the bytes put into the window.
pub fn spawn_reader<R: Read + Send + 'static>(
    mut input: R,
    window: Arc<Window>,
    pushed: Arc<AtomicU64>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    std::thread::Builder::new()
        .name("oasis-ship-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; READ_CHUNK_BYTES];
            loop {
                match input.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if !window.push_all(&buf[..n]) {
                            return;
                        }
                        pushed.fetch_add(n as u64, Ordering::Relaxed);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::warn!("reading the shipper's input: {e}; treating it as its end");
                        break;
                    }
                }
            }
            window.finish();
        })
}

/// The filling end of a line queue: cheap to clone, never blocks.
#[derive(Clone, Debug)]
pub struct LineSender {
    tx: SyncSender<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    bytes_max: usize,
    dropped: Arc<AtomicU64>,
    /// Bytes of the lines taken, in all.
    accepted: Arc<AtomicU64>,
}

/// The reading end of a line queue: a `Read` that yields the lines in order and ends when
/// every [`LineSender`] is gone.
#[derive(Debug)]
pub struct LineReader {
    rx: Receiver<Vec<u8>>,
    queued_bytes: Arc<AtomicUsize>,
    pending: Vec<u8>,
    at: usize,
}

/// A queue of at most `lines_max` lines and `bytes_max` bytes waiting to be shipped.
pub fn line_queue(lines_max: usize, bytes_max: usize) -> (LineSender, LineReader) {
    let (tx, rx) = sync_channel(lines_max.max(1));
    let queued_bytes = Arc::new(AtomicUsize::new(0));
    (
        LineSender {
            tx,
            queued_bytes: Arc::clone(&queued_bytes),
            bytes_max: bytes_max.max(LINE_BYTES_MAX),
            dropped: Arc::new(AtomicU64::new(0)),
            accepted: Arc::new(AtomicU64::new(0)),
        },
        LineReader {
            rx,
            queued_bytes,
            pending: Vec::new(),
            at: 0,
        },
    )
}

impl LineSender {
    /// Queues one line (a newline is added if it lacks one; a line over [`LINE_BYTES_MAX`] is
    /// cut). Returns false when it was dropped: the queue is full or its reader is gone.
    pub fn send(&self, line: &[u8]) -> bool {
        let mut line = line[..line.len().min(LINE_BYTES_MAX - 1)].to_vec();
        if line.last() != Some(&b'\n') {
            line.push(b'\n');
        }
        let len = line.len();
        let before = self.queued_bytes.fetch_add(len, Ordering::Relaxed);
        if before + len > self.bytes_max {
            return self.drop_line(len);
        }
        match self.tx.try_send(line) {
            Ok(()) => {
                self.accepted.fetch_add(len as u64, Ordering::Relaxed);
                true
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => self.drop_line(len),
        }
    }

    fn drop_line(&self, len: usize) -> bool {
        self.queued_bytes.fetch_sub(len, Ordering::Relaxed);
        self.dropped.fetch_add(1, Ordering::Relaxed);
        false
    }

    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    pub(crate) fn dropped_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.dropped)
    }

    pub(crate) fn accepted_counter(&self) -> Arc<AtomicU64> {
        Arc::clone(&self.accepted)
    }
}

impl LineReader {
    fn take(&mut self, line: Vec<u8>) {
        self.queued_bytes.fetch_sub(line.len(), Ordering::Relaxed);
        self.pending = line;
        self.at = 0;
    }
}

impl Read for LineReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.at == self.pending.len() {
            match self.rx.recv() {
                Ok(line) => self.take(line),
                Err(_) => return Ok(0),
            }
        }
        let mut n = 0;
        loop {
            let chunk = &self.pending[self.at..];
            let k = chunk.len().min(buf.len() - n);
            buf[n..n + k].copy_from_slice(&chunk[..k]);
            n += k;
            self.at += k;
            if n == buf.len() {
                return Ok(n);
            }
            // More lines waiting go out in the same read.
            match self.rx.try_recv() {
                Ok(line) => self.take(line),
                Err(TryRecvError::Empty) | Err(TryRecvError::Disconnected) => return Ok(n),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_full_window_stops_the_reader_which_resumes_on_acks() {
        // 1 MiB of input through a 4 KiB window: the reader may never hold more than 4 KiB
        // unacknowledged, and every byte arrives once, in order.
        let input: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
        let window = Arc::new(Window::new(0, 4096, true));
        let reader = spawn_reader(
            std::io::Cursor::new(input.clone()),
            Arc::clone(&window),
            Arc::default(),
        )
        .unwrap();
        let mut got = Vec::new();
        let mut buf = Vec::new();
        loop {
            let s = window.snapshot();
            assert!(
                s.read_end - s.acked <= 4096,
                "backpressure: {} bytes held",
                s.read_end - s.acked
            );
            if s.all_acked() {
                break;
            }
            // Take at most 1000 bytes at a time so the reader finds the window full often.
            let n = window.copy_from(s.acked, 1000, &mut buf);
            if n == 0 {
                window.wait_change(s.generation, Duration::from_millis(100));
                continue;
            }
            got.extend_from_slice(&buf);
            window.ack(s.acked + n as u64);
        }
        reader.join().unwrap();
        assert_eq!(got, input);
    }

    #[test]
    fn a_blocked_reader_really_stops_reading() {
        // A source that counts what was asked of it: with the window full and nothing
        // acknowledged, it is not read past the window (plus the one chunk in hand).
        struct Counting(Arc<AtomicUsize>);
        impl Read for Counting {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.0.fetch_add(buf.len(), Ordering::SeqCst);
                buf.fill(b'x');
                Ok(buf.len())
            }
        }
        let count = Arc::new(AtomicUsize::new(0));
        let window = Arc::new(Window::new(0, 4096, true));
        let reader = spawn_reader(
            Counting(Arc::clone(&count)),
            Arc::clone(&window),
            Arc::default(),
        )
        .unwrap();
        while window.snapshot().read_end < 4096 {
            let g = window.snapshot().generation;
            window.wait_change(g, Duration::from_millis(100));
        }
        let asked = count.load(Ordering::SeqCst);
        assert_eq!(asked, READ_CHUNK_BYTES, "one read, then it waits");
        window.close();
        reader.join().unwrap();
        assert_eq!(
            count.load(Ordering::SeqCst),
            asked,
            "no read after the close"
        );
    }

    #[test]
    fn the_line_queue_never_blocks_and_counts_what_it_drops() {
        let (tx, mut rx) = line_queue(3, LINE_BYTES_MAX);
        assert!(tx.send(b"one"));
        assert!(tx.send(b"two\n"));
        assert!(tx.send(b"three"));
        assert!(!tx.send(b"four"), "full: dropped, not waited for");
        assert_eq!(tx.dropped(), 1);
        let mut buf = [0u8; 5];
        let mut out = Vec::new();
        while out.len() < 14 {
            let n = rx.read(&mut buf).unwrap();
            out.extend_from_slice(&buf[..n]);
        }
        assert_eq!(out, b"one\ntwo\nthree\n");
        // Room again; a line too long is cut and still a line.
        assert!(tx.send(&vec![b'a'; LINE_BYTES_MAX * 2]));
        drop(tx);
        let mut rest = Vec::new();
        rx.read_to_end(&mut rest).unwrap();
        assert_eq!(rest.len(), LINE_BYTES_MAX);
        assert_eq!(rest.last(), Some(&b'\n'));
    }

    #[test]
    fn the_line_queue_bounds_bytes_too() {
        let (tx, _rx) = line_queue(1000, LINE_BYTES_MAX * 2);
        let line = vec![b'z'; LINE_BYTES_MAX - 1];
        assert!(tx.send(&line));
        assert!(tx.send(&line));
        assert!(!tx.send(&line), "the byte bound, before the line bound");
        assert!(
            !tx.send(b"tiny"),
            "nothing fits until the reader takes some"
        );
        assert_eq!(tx.dropped(), 2);
    }
}
