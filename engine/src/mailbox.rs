//! Bounded cross-thread mailboxes with eventfd wake-ups.
//!
//! Each worker owns one [`Mailbox`]: a lock-free bounded MPMC queue (crossbeam's `ArrayQueue`) and
//! an eventfd the worker's ring keeps a read on. A sender pushes, then writes the eventfd only if
//! the worker said it was about to sleep, so a busy worker takes no syscall per message.
//! A full mailbox is an answer, not a wait: [`Mailbox::send`] hands the message back.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crossbeam_queue::ArrayQueue;

pub struct Mailbox<T> {
    queue: ArrayQueue<T>,
    sleeping: AtomicBool,
    eventfd: OwnedFd,
}

impl<T> Mailbox<T> {
    pub fn new(capacity: usize) -> std::io::Result<Self> {
        assert!(capacity > 0);
        // SAFETY: eventfd has no memory preconditions; the result is checked below.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor we own exclusively.
        let eventfd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Mailbox {
            queue: ArrayQueue::new(capacity),
            sleeping: AtomicBool::new(false),
            eventfd,
        })
    }

    /// Queues `msg` and wakes the owner if it sleeps. Gives the message back when full.
    pub fn send(&self, msg: T) -> Result<(), T> {
        self.queue.push(msg)?;
        if self.sleeping.swap(false, Ordering::SeqCst) {
            self.wake();
        }
        Ok(())
    }

    /// Wakes the owner unconditionally (shutdown, events).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64 to our eventfd. EAGAIN (counter full) means the
        // owner is already due to wake, so the result is ignored on purpose.
        let _ = unsafe { libc::write(self.eventfd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    pub fn try_recv(&self) -> Option<T> {
        self.queue.pop()
    }

    /// Called by the owner before it blocks. Returns false (and stays awake) if messages wait.
    pub fn prepare_sleep(&self) -> bool {
        self.sleeping.store(true, Ordering::SeqCst);
        if !self.queue.is_empty() {
            self.sleeping.store(false, Ordering::SeqCst);
            return false;
        }
        true
    }

    pub fn woke(&self) {
        self.sleeping.store(false, Ordering::SeqCst);
    }

    pub fn eventfd(&self) -> RawFd {
        self.eventfd.as_raw_fd()
    }

    pub fn len(&self) -> usize {
        self.queue.len()
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.queue.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_wakes() {
        let m = Mailbox::new(2).unwrap();
        assert!(m.prepare_sleep());
        m.send(1).unwrap();
        m.send(2).unwrap();
        assert_eq!(m.send(3), Err(3));
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64 from our eventfd.
        let n = unsafe { libc::read(m.eventfd(), (&mut v as *mut u64).cast(), 8) };
        assert_eq!(
            (n, v),
            (8, 1),
            "the first send after prepare_sleep wakes exactly once"
        );
        assert_eq!(m.try_recv(), Some(1));
        assert!(
            !m.prepare_sleep(),
            "a pending message keeps the owner awake"
        );
    }
}
