//! The splice pipes of one worker: each reserved with the Resource Manager, sized to one pool
//! chunk, reused when empty, at most [`PIPES_PER_WORKER_MAX`] (or the connection limit) out at
//! once.
//!
//! A pool hands pipes out and takes them back; it must never splice, and never keep a pipe that
//! may still hold bytes (one an error left mid-splice is closed instead).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Arc;

use crate::resource::{Reservation, Resource, ResourceManager};

/// Pipes one worker keeps for splicing at most (two descriptors each).
pub(super) const PIPES_PER_WORKER_MAX: usize = 4096;
/// What one pipe is reserved as: its kernel bookkeeping. The bytes in a pipe are page-cache pages
/// it references, not copies.
const PIPE_MEMORY_BYTES: u64 = 4096;

/// A pipe for splicing, sized to one pool chunk, reserved with the Resource Manager, reused.
pub(crate) struct Pipe {
    pub(super) read: OwnedFd,
    pub(super) write: OwnedFd,
    _memory: Reservation,
}

pub(super) struct PipePool {
    /// Empty pipes ready for reuse.
    idle: Vec<Pipe>,
    /// Pipes handed out and not yet returned.
    out: usize,
    max: usize,
    pipe_bytes: usize,
    rm: Arc<ResourceManager>,
    /// A failed pipe resize was reported (once per worker).
    size_warned: bool,
    worker: usize,
}

impl PipePool {
    pub(super) fn new(
        worker: usize,
        max: usize,
        pipe_bytes: usize,
        rm: Arc<ResourceManager>,
    ) -> PipePool {
        PipePool {
            idle: Vec::new(),
            out: 0,
            max,
            pipe_bytes,
            rm,
            size_warned: false,
            worker,
        }
    }

    /// An empty pipe, or None when the worker holds its limit, memory is refused or pipe2 fails.
    pub(super) fn take(&mut self) -> Option<Pipe> {
        if let Some(p) = self.idle.pop() {
            self.out += 1;
            return Some(p);
        }
        if self.out >= self.max {
            return None;
        }
        let bytes = self.pipe_bytes;
        let memory = self
            .rm
            .reserve(Resource::MemoryBytes, PIPE_MEMORY_BYTES)
            .ok()?;
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2 writes.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            tracing::warn!(
                "worker {}: pipe2 failed: {}; reading instead of splicing",
                self.worker,
                io::Error::last_os_error()
            );
            return None;
        }
        // SAFETY: pipe2 succeeded: both descriptors are new and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on our pipe; failure leaves the default size, which still works.
        let rc =
            unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, bytes as libc::c_int) };
        if rc < 0 && !self.size_warned {
            self.size_warned = true;
            tracing::warn!(
                "worker {}: cannot size a splice pipe to {bytes} bytes ({}); splices move less per call. For an unprivileged user raise fs.pipe-user-pages-soft (or fs.pipe-max-size)",
                self.worker,
                io::Error::last_os_error()
            );
        }
        self.out += 1;
        Some(Pipe {
            read,
            write,
            _memory: memory,
        })
    }

    /// Returns a pipe; one that may still hold bytes (an error mid-splice) is closed instead,
    /// and so is every pipe while a resource is critical.
    pub(super) fn put(&mut self, pipe: Pipe, empty: bool) {
        self.out -= 1;
        if empty && !self.rm.is_critical() {
            self.idle.push(pipe);
        }
    }

    /// Closes the idle pipes (a critical resource event), returning their memory; how many.
    pub(super) fn close_idle(&mut self) -> usize {
        let n = self.idle.len();
        self.idle.clear();
        n
    }
}
