//! What the shippers ship: lines the checker writes at a steady rate into followed files (one of
//! them rotated by rename on request) or into a shipper's standard input.
//!
//! Every line is unique and can be made again from the seed: `TAG SEQ FILLER\n`, the filler's
//! length and letters drawn from (seed, tag, seq). The verifier finds each line in what the
//! servers hold by its sequence number, so it counts lost, repeated and damaged bytes. The
//! writers sometimes split a line across two writes, so the shippers see partial lines too, and
//! now and then write a burst of megabytes, which shippers send in full batches (the servers
//! answer those on write and acknowledge them after their commit).

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ChildStdin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

/// How often a writer writes.
const TICK: Duration = Duration::from_millis(20);
/// One tick in this many is a burst.
const BURST_ONE_IN: u32 = 800;

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn tag_hash(tag: &str) -> u64 {
    tag.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// Line `seq` of the source tagged `tag`.
pub fn line(seed: u64, tag: &str, seq: u64) -> Vec<u8> {
    let mut h = splitmix(seed ^ tag_hash(tag) ^ splitmix(seq));
    let filler = 8 + (h % 180) as usize;
    let mut out = format!("{tag} {seq:010} ").into_bytes();
    for i in 0..filler {
        if i % 12 == 0 {
            h = splitmix(h);
        }
        out.push(b"abcdefghijklmnopqrstuvwxyz0123456789-_"[((h >> ((i % 12) * 5)) % 38) as usize]);
    }
    out.push(b'\n');
    out
}

/// The tag and sequence number a line claims (not checked against [`line`]).
pub fn parse(l: &[u8]) -> Option<(&str, u64)> {
    let text = std::str::from_utf8(l).ok()?;
    let mut parts = text.splitn(3, ' ');
    let tag = parts.next()?;
    let seq = parts.next()?;
    if seq.len() != 10 {
        return None;
    }
    Some((tag, seq.parse().ok()?))
}

/// Counts a writer keeps while it runs.
#[derive(Default)]
pub struct Written {
    /// Bytes written.
    pub bytes: AtomicU64,
    /// Rotations done.
    pub rotations: AtomicU64,
}

/// What a writer wrote, once stopped.
pub struct Source {
    /// The tag of its lines.
    pub tag: String,
    /// The files that hold its bytes, in stream order (rotated ones first).
    pub files: Vec<PathBuf>,
    /// Lines written.
    pub lines: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// A running writer thread.
pub struct Writer {
    pub written: Arc<Written>,
    stop: Arc<AtomicBool>,
    rotate: Option<Arc<AtomicBool>>,
    thread: JoinHandle<Source>,
}

impl Writer {
    /// Asks for a rotation (a file writer with rotation only); done at its next tick once the
    /// shipper has acknowledged everything before the previous rotation.
    pub fn rotate(&self) {
        if let Some(r) = &self.rotate {
            r.store(true, Ordering::SeqCst);
        }
    }

    /// Stops writing (a pipe is closed: end of input) and says what was written.
    pub fn stop(self) -> Source {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().expect("a writer thread panicked")
    }
}

/// Writes lines into `out` at about `bytes_per_sec`, a tick at a time, until `stop`.
struct Lines {
    seed: u64,
    tag: String,
    seq: u64,
    rng: fastrand::Rng,
    bytes_per_tick: usize,
}

impl Lines {
    fn new(seed: u64, tag: &str, bytes_per_sec: usize) -> Lines {
        Lines {
            seed,
            tag: tag.to_string(),
            seq: 0,
            rng: fastrand::Rng::with_seed(seed ^ tag_hash(tag)),
            bytes_per_tick: bytes_per_sec * TICK.as_millis() as usize / 1000,
        }
    }

    /// One tick's lines (0 to 2 ticks' worth, now and then a burst of 1 to 2 MiB, which a
    /// shipper sends in full batches), each whole.
    fn tick(&mut self) -> Vec<Vec<u8>> {
        let want = if self.rng.u32(0..BURST_ONE_IN) == 0 {
            self.rng.usize(1 << 20..=2 << 20)
        } else {
            self.rng.usize(0..=2 * self.bytes_per_tick)
        };
        let mut out = Vec::new();
        let mut n = 0;
        while n < want {
            let l = line(self.seed, &self.tag, self.seq);
            self.seq += 1;
            n += l.len();
            out.push(l);
        }
        out
    }

    /// Writes `l`, sometimes in two writes a moment apart.
    fn write(&mut self, out: &mut dyn Write, l: &[u8]) -> std::io::Result<()> {
        if self.rng.u32(0..50) == 0 {
            let cut = self.rng.usize(1..l.len());
            out.write_all(&l[..cut])?;
            out.flush()?;
            std::thread::sleep(Duration::from_millis(2));
            out.write_all(&l[cut..])
        } else {
            out.write_all(l)
        }
    }
}

/// The acknowledged offset in a shipper's state file (0 when there is none yet).
fn acked(state: &Path) -> u64 {
    let text = std::fs::read_to_string(state).unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("acked ")?.trim().parse().ok())
        .unwrap_or(0)
}

/// Appends lines to `path` (created now). With `rotation` (the shipper's state file), rotates
/// by rename on request: the file becomes `path.N`, a tick's late lines still go to it, then a new
/// file takes the path. A rotation waits until the state file says everything before the
/// previous one is acknowledged (two rotations while the follower lags behind both would skip
/// the middle file; see the checker's notes).
pub fn spawn_file(
    seed: u64,
    tag: &str,
    path: &Path,
    bytes_per_sec: usize,
    rotation: Option<&Path>,
) -> Writer {
    let written = Arc::new(Written::default());
    let stop = Arc::new(AtomicBool::new(false));
    let rotate = rotation.map(|_| Arc::new(AtomicBool::new(false)));
    let (w, s, r) = (Arc::clone(&written), Arc::clone(&stop), rotate.clone());
    let (path, state) = (path.to_path_buf(), rotation.map(Path::to_path_buf));
    let mut lines = Lines::new(seed, tag, bytes_per_sec);
    let thread = std::thread::spawn(move || {
        let mut file = File::create(&path).expect("create a followed file");
        let mut files = Vec::new();
        let mut total = 0u64;
        let mut before_last_rotation = 0u64;
        while !s.load(Ordering::SeqCst) {
            if let (Some(r), Some(state)) = (&r, &state) {
                if r.load(Ordering::SeqCst) && acked(state) >= before_last_rotation {
                    r.store(false, Ordering::SeqCst);
                    let old = PathBuf::from(format!("{}.{}", path.display(), files.len() + 1));
                    std::fs::rename(&path, &old).expect("rotate by rename");
                    for l in lines.tick() {
                        file.write_all(&l).expect("a late line to the rotated file");
                        total += l.len() as u64;
                    }
                    files.push(old);
                    file = File::create(&path).expect("a new file at the path");
                    before_last_rotation = total;
                    w.rotations.fetch_add(1, Ordering::SeqCst);
                }
            }
            for l in lines.tick() {
                lines
                    .write(&mut file, &l)
                    .expect("append to a followed file");
                total += l.len() as u64;
            }
            w.bytes.store(total, Ordering::SeqCst);
            std::thread::sleep(TICK);
        }
        files.push(path);
        Source {
            tag: lines.tag,
            files,
            lines: lines.seq,
            bytes: total,
        }
    });
    Writer {
        written,
        stop,
        rotate,
        thread,
    }
}

/// Writes lines into a shipper's standard input (blocking when the shipper holds back) and a
/// copy into `tee`; closes the pipe when stopped.
pub fn spawn_pipe(
    seed: u64,
    tag: &str,
    mut pipe: ChildStdin,
    tee: &Path,
    bytes_per_sec: usize,
) -> Writer {
    let written = Arc::new(Written::default());
    let stop = Arc::new(AtomicBool::new(false));
    let (w, s, tee) = (Arc::clone(&written), Arc::clone(&stop), tee.to_path_buf());
    let mut lines = Lines::new(seed, tag, bytes_per_sec);
    let thread = std::thread::spawn(move || {
        let mut copy = File::create(&tee).expect("create the standard input's copy");
        let mut total = 0u64;
        while !s.load(Ordering::SeqCst) {
            for l in lines.tick() {
                lines
                    .write(&mut pipe, &l)
                    .expect("write the shipper's input");
                copy.write_all(&l).expect("write the input's copy");
                total += l.len() as u64;
            }
            w.bytes.store(total, Ordering::SeqCst);
            std::thread::sleep(TICK);
        }
        drop(pipe);
        Source {
            tag: lines.tag,
            files: vec![tee],
            lines: lines.seq,
            bytes: total,
        }
    });
    Writer {
        written,
        stop,
        rotate: None,
        thread,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_made_again_the_same_and_parse() {
        let a = line(7, "file-a", 42);
        assert_eq!(a, line(7, "file-a", 42));
        assert_ne!(a, line(7, "file-a", 43));
        assert_ne!(a, line(8, "file-a", 42));
        assert_eq!(parse(&a[..a.len() - 1]), Some(("file-a", 42)));
        assert!(a.ends_with(b"\n") && !a[..a.len() - 1].contains(&b'\n'));
    }
}
