//! Following a log file like `tail -F`: the producer that reads a file's appended bytes into the
//! shipper's window, across rotations, and keeps the state file that lets a restarted shipper
//! resume where the servers' acknowledgements left it.
//!
//! - **Rotation by rename**: when the file at the path is no longer the one being read, the old
//!   one is read to its end first (it stays open, so even a deleted file is finished), then the
//!   new one from its start. Stream offsets keep increasing across files.
//! - **Truncation** (`copytruncate`): when the file being read became shorter than the position
//!   read, reading goes on from its start, at the next stream offset. Bytes written and cut off
//!   between two looks are lost, as with any follower of a truncated file; bytes already read
//!   are in the window and are not.
//! - **Restart**: the state file names the acknowledged stream offset and the file (device,
//!   inode) and position it lies at. The follower reopens that file (at the path, or, rotated
//!   since, found by its identity in the same directory) at that position.
//!
//! The decisions (what a look at the path means, where to start, which file an offset lies in)
//! are pure functions below the thread; the thread does the reads. This module never sends.

use std::collections::VecDeque;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::state::{FileId, ShipState, StateError};
use super::window::{Snapshot, Window};

/// Bytes read from the file at a time.
const READ_CHUNK_BYTES: usize = 64 * 1024;
/// A state file is rewritten at most this often while acknowledgements arrive (and once more at
/// the end). A state that lags is safe: the servers say what they hold.
const STATE_INTERVAL: Duration = Duration::from_millis(200);
/// At most this many directory entries are looked at to find a rotated file by its identity.
const DIR_SCAN_ENTRIES_MAX: usize = 100_000;

/// What a look at the path, at the end of the file being read, calls for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing new: wait and look again.
    Wait,
    /// The file being read shrank below the position read: go on from its start.
    Truncated,
    /// The path names another file: finish this one, then read that one from its start.
    Rotated,
}

/// Decides what to do at the end of the file being read (`current`, read up to `pos`, now
/// `size` bytes long), given the identity of the file at the path (`None`: no file there).
pub fn decide(current: FileId, pos: u64, size: u64, at_path: Option<FileId>) -> Step {
    if size < pos {
        return Step::Truncated;
    }
    match at_path {
        Some(id) if id != current => Step::Rotated,
        _ => Step::Wait,
    }
}

/// A file that could be opened: its identity and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seen {
    /// Device and inode.
    pub id: FileId,
    /// Length in bytes.
    pub size: u64,
}

/// Where reading starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Start {
    /// Read the file at the path from this position.
    Path(u64),
    /// Read the rotated file the state names (found in the directory) from this position; the
    /// file at the path comes after it.
    Rotated(u64),
    /// Wait for a file to appear at the path.
    Wait,
}

/// Decides where to start from the state (if any), the file at the path and the file the state
/// names when it is elsewhere (`found`). Returns the start and, when bytes may have been lost
/// while no shipper ran, a sentence saying so.
pub fn plan_start(
    state: Option<&ShipState>,
    at_path: Option<Seen>,
    found: Option<Seen>,
) -> (Start, Option<String>) {
    let fresh = |note| match at_path {
        Some(_) => (Start::Path(0), note),
        None => (Start::Wait, note),
    };
    let Some(state) = state else {
        return fresh(None);
    };
    match (at_path, found) {
        (Some(p), _) if p.id == state.file => {
            if p.size >= state.pos {
                (Start::Path(state.pos), None)
            } else {
                (
                    Start::Path(0),
                    Some(format!(
                        "the file shrank to {} bytes while no shipper ran (the state's position was {}); shipping it from its start",
                        p.size, state.pos
                    )),
                )
            }
        }
        (_, Some(f)) if f.id == state.file && f.size >= state.pos => {
            (Start::Rotated(state.pos), None)
        }
        _ => fresh(Some(format!(
            "the file the state file names (dev {}, inode {}) is gone or shorter than position {}; what was appended to it after that position and not acknowledged is lost",
            state.file.dev, state.file.ino, state.pos
        ))),
    }
}

/// Where stream offsets lie in files: one mark where each file's (or, after a truncation,
/// each pass's) bytes begin. Marks wholly below the acknowledged offset are dropped.
#[derive(Debug, Default)]
pub struct Marks(VecDeque<(u64, FileId, u64)>);

impl Marks {
    /// Stream offset `stream_offset` is position `pos` of `file`, and so are the bytes after it
    /// until the next mark.
    pub fn push(&mut self, stream_offset: u64, file: FileId, pos: u64) {
        self.0.push_back((stream_offset, file, pos));
    }

    /// The file and position of a stream offset (`None`: before every mark).
    pub fn locate(&self, offset: u64) -> Option<(FileId, u64)> {
        self.0
            .iter()
            .rev()
            .find(|(base, _, _)| *base <= offset)
            .map(|(base, file, pos)| (*file, pos + (offset - base)))
    }

    /// Drops the marks no offset at or past `offset` needs.
    pub fn trim(&mut self, offset: u64) {
        while self.0.len() > 1 && self.0[1].0 <= offset {
            self.0.pop_front();
        }
    }

    /// How many marks are kept.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether no mark is kept.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Writes the state file from the window's acknowledged offset (shared by the follower and the
/// shipper's last word at shutdown).
pub struct StateKeeper {
    path: PathBuf,
    stream: String,
    inner: Mutex<KeeperInner>,
}

struct KeeperInner {
    marks: Marks,
    written: Option<u64>,
    last_write: Option<Instant>,
}

impl StateKeeper {
    /// A keeper of the state file at `path` for `stream`.
    pub fn new(path: PathBuf, stream: String) -> StateKeeper {
        StateKeeper {
            path,
            stream,
            inner: Mutex::new(KeeperInner {
                marks: Marks::default(),
                written: None,
                last_write: None,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, KeeperInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// See [`Marks::push`].
    pub fn mark(&self, stream_offset: u64, file: FileId, pos: u64) {
        self.lock().marks.push(stream_offset, file, pos);
    }

    /// Writes the state for the window's acknowledged offset if it moved, at most once per
    /// `STATE_INTERVAL` unless `force`.
    pub fn persist(&self, s: Snapshot, force: bool) -> Result<(), StateError> {
        let mut inner = self.lock();
        // Bytes skipped past the read end are not in a file yet: the state stays at the read end.
        let offset = s.acked.min(s.read_end);
        if inner.written == Some(offset) {
            return Ok(());
        }
        if !force
            && inner
                .last_write
                .is_some_and(|t| t.elapsed() < STATE_INTERVAL)
        {
            return Ok(());
        }
        let Some((file, pos)) = inner.marks.locate(offset) else {
            return Ok(());
        };
        inner.last_write = Some(Instant::now());
        ShipState {
            stream: self.stream.clone(),
            acked: offset,
            file,
            pos,
        }
        .store(&self.path)?;
        inner.written = Some(offset);
        inner.marks.trim(offset);
        Ok(())
    }
}

/// The file being read.
struct Current {
    file: File,
    id: FileId,
    pos: u64,
}

/// The producer thread of a followed file.
pub struct Follower {
    path: PathBuf,
    window: Arc<Window>,
    keeper: Arc<StateKeeper>,
    poll: Duration,
    current: Option<Current>,
    /// A problem already logged (not repeated every poll).
    complained: Option<String>,
}

fn open(path: &Path) -> std::io::Result<(File, Seen)> {
    let file = File::open(path)?;
    let meta = file.metadata()?;
    let seen = Seen {
        id: FileId::of(&meta),
        size: meta.len(),
    };
    Ok((file, seen))
}

/// The file with identity `id` among `dir`'s entries, if any (a rotated log stays beside its
/// path in every common scheme: `app.log.1`, `app.log-20261130`).
fn find_in_dir(dir: &Path, id: FileId) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .take(DIR_SCAN_ENTRIES_MAX)
        .filter_map(Result::ok)
        .find(|e| {
            std::fs::symlink_metadata(e.path()).is_ok_and(|m| m.is_file() && FileId::of(&m) == id)
        })
        .map(|e| e.path())
}

impl Follower {
    /// Opens the file where `state` left off (see [`plan_start`]); the window must start at
    /// `state.acked` (0 without a state). Logs a warning when bytes may have been lost while no
    /// shipper ran.
    pub fn new(
        path: PathBuf,
        state: Option<&ShipState>,
        window: Arc<Window>,
        keeper: Arc<StateKeeper>,
        poll: Duration,
    ) -> Follower {
        let at_path = open(&path).ok();
        let found = state
            .filter(|s| at_path.as_ref().is_none_or(|(_, p)| p.id != s.file))
            .and_then(|s| {
                let dir = match path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                find_in_dir(dir, s.file)
            })
            .and_then(|p| open(&p).ok());
        let (start, note) = plan_start(
            state,
            at_path.as_ref().map(|(_, s)| *s),
            found.as_ref().map(|(_, s)| *s),
        );
        if let Some(note) = note {
            tracing::warn!("{}: {note}", path.display());
        }
        let base = state.map_or(0, |s| s.acked);
        let current = match (start, at_path, found) {
            (Start::Path(pos), Some((file, seen)), _)
            | (Start::Rotated(pos), _, Some((file, seen))) => {
                keeper.mark(base, seen.id, pos);
                Some(Current {
                    file,
                    id: seen.id,
                    pos,
                })
            }
            _ => None,
        };
        Follower {
            path,
            window,
            keeper,
            poll,
            current,
            complained: None,
        }
    }

    /// Spawns the follower's thread; it runs until the window is closed.
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("oasis-ship-follow".into())
            .spawn(move || self.run())
    }

    fn complain(&mut self, what: String) {
        if self.complained.as_deref() != Some(what.as_str()) {
            tracing::warn!("{what}");
            self.complained = Some(what);
        }
    }

    fn run(mut self) {
        let mut buf = vec![0u8; READ_CHUNK_BYTES];
        while !self.window.is_closed() {
            let progressed = match self.current.is_some() {
                true => self.read_some(&mut buf),
                false => self.open_new(),
            };
            if let Err(e) = self.keeper.persist(self.window.snapshot(), false) {
                self.complain(format!("cannot write the shipper's state: {e}"));
            }
            if !progressed {
                std::thread::sleep(self.poll);
            }
        }
    }

    /// Reads the next bytes into the window; at the end of the file, looks at the path. Returns
    /// whether anything was read or changed.
    fn read_some(&mut self, buf: &mut [u8]) -> bool {
        let Some(cur) = self.current.as_mut() else {
            return false;
        };
        match cur.file.read_at(buf, cur.pos) {
            Ok(0) => {}
            Ok(n) => {
                let pushed = self.window.push_all(&buf[..n]);
                if pushed {
                    cur.pos += n as u64;
                }
                return pushed;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => return true,
            Err(e) => {
                let what = format!("reading {}: {e}; trying again", self.path.display());
                self.complain(what);
                return false;
            }
        }
        let size = cur.file.metadata().map(|m| m.len()).unwrap_or(cur.pos);
        let at_path = std::fs::metadata(&self.path).ok().map(|m| FileId::of(&m));
        match decide(cur.id, cur.pos, size, at_path) {
            Step::Wait => false,
            Step::Truncated => {
                tracing::info!(
                    "{} was truncated ({} bytes, read up to {}): shipping it again from its start",
                    self.path.display(),
                    size,
                    cur.pos
                );
                cur.pos = 0;
                self.keeper.mark(self.window.snapshot().read_end, cur.id, 0);
                true
            }
            Step::Rotated => {
                // Whatever reached the old file before the look is read first.
                if self.drain(buf) {
                    self.current = None;
                    self.open_new();
                }
                true
            }
        }
    }

    /// Reads the current file to its end. Returns false when the window was closed first.
    fn drain(&mut self, buf: &mut [u8]) -> bool {
        let Some(cur) = self.current.as_mut() else {
            return true;
        };
        loop {
            match cur.file.read_at(buf, cur.pos) {
                Ok(0) => return true,
                Ok(n) => {
                    if !self.window.push_all(&buf[..n]) {
                        return false;
                    }
                    cur.pos += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    tracing::warn!(
                        "reading the rotated {} at {}: {e}; going on with the new file",
                        self.path.display(),
                        cur.pos
                    );
                    return true;
                }
            }
        }
    }

    /// Opens the file at the path (from its start). Returns whether one was opened.
    fn open_new(&mut self) -> bool {
        match open(&self.path) {
            Ok((file, seen)) => {
                let at = self.window.snapshot().read_end;
                self.keeper.mark(at, seen.id, 0);
                tracing::info!(
                    "following {} (inode {}) from stream offset {at}",
                    self.path.display(),
                    seen.id.ino
                );
                self.current = Some(Current {
                    file,
                    id: seen.id,
                    pos: 0,
                });
                self.complained = None;
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
            Err(e) => {
                let what = format!("cannot open {}: {e}; trying again", self.path.display());
                self.complain(what);
                false
            }
        }
    }
}

#[cfg(test)]
#[path = "follow_tests.rs"]
mod tests;
