//! Proxy mode's threads (`oasis-proxy<i>`): the blocking side of a GET this node answers for
//! an object another node of the pool holds (`[pool] mode = "proxy"`). A session hands each
//! step (open the exchange and read the head; read the next body chunk) to a bounded queue by
//! `Transmit::Defer`; a fixed number of threads carry the steps out on the holder's connection
//! ([`upstream`]) and complete the session's completer with the result, which brings it back
//! to the session on its worker. A connection has at most one step queued or running, so the
//! queue holds at most one per proxied connection; past [`ProxySettings::queue_max`] a new
//! proxied request is refused (503) while a stream under way may still queue its next chunk
//! (up to twice that), so a burst of new requests does not cut running streams.
//!
//! Not here: which node holds an object (the pool's `locate`), what the client may read (the
//! session's guard, before it proxies), the response head the client gets (the session writes
//! it from [`upstream::UpstreamHead`]).

pub mod upstream;

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// Body bytes one step reads from a holder at most (and a proxied stream reserves as memory).
pub const CHUNK_BYTES: usize = 256 * 1024;

/// How proxy mode runs.
#[derive(Clone, Debug)]
pub struct ProxySettings {
    /// Threads carrying out steps (each step waits on one holder's socket at most `timeout`).
    pub threads: usize,
    /// Steps queued at most before new proxied requests are refused.
    pub queue_max: usize,
    /// Bound on the connect to a holder and on each write and read.
    pub timeout: Duration,
    /// The pool credential sent to holders (`[http] api_token`).
    pub token: String,
    /// The bandwidth a proxied stream reserves on this node's listener, bits per second (the
    /// object's bitrate is the holder's to know).
    pub reserve_bps: u64,
}

/// One step for a proxy thread.
pub(crate) type Step = Box<dyn FnOnce() + Send>;

struct Queue {
    steps: Mutex<(VecDeque<Step>, bool)>,
    ready: Condvar,
}

/// Proxy mode's threads and their queue; shared by every session through the pool hook.
pub struct Proxy {
    settings: ProxySettings,
    queue: Arc<Queue>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("threads", &self.settings.threads)
            .field("queue_max", &self.settings.queue_max)
            .finish()
    }
}

impl Proxy {
    /// Starts `settings.threads` threads (at least one).
    pub fn start(settings: ProxySettings) -> std::io::Result<Arc<Proxy>> {
        let queue = Arc::new(Queue {
            steps: Mutex::new((VecDeque::new(), false)),
            ready: Condvar::new(),
        });
        let mut threads = Vec::new();
        for i in 0..settings.threads.max(1) {
            let q = Arc::clone(&queue);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("oasis-proxy{i}"))
                    .spawn(move || run(&q))?,
            );
        }
        Ok(Arc::new(Proxy {
            settings,
            queue,
            threads: Mutex::new(threads),
        }))
    }

    /// The settings it runs on.
    pub fn settings(&self) -> &ProxySettings {
        &self.settings
    }

    /// Queues `step`; `false` (and the step dropped, which rejects its completer) when the
    /// queue is full or stopped. A `new_stream` step is refused past `queue_max`, a step of a
    /// stream under way past twice that.
    pub(crate) fn submit(&self, step: Step, new_stream: bool) -> bool {
        let max = if new_stream {
            self.settings.queue_max
        } else {
            self.settings.queue_max.saturating_mul(2)
        };
        let mut q = self.queue.steps.lock().unwrap_or_else(|e| e.into_inner());
        if q.1 || q.0.len() >= max {
            return false;
        }
        q.0.push_back(step);
        drop(q);
        self.queue.ready.notify_one();
        true
    }

    /// Steps queued now.
    pub fn queued(&self) -> usize {
        self.queue
            .steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .len()
    }

    /// Stops the threads after the steps running finish; queued steps are dropped (their
    /// sessions hear a rejection and close).
    pub fn stop(&self) {
        let dropped = {
            let mut q = self.queue.steps.lock().unwrap_or_else(|e| e.into_inner());
            q.1 = true;
            std::mem::take(&mut q.0)
        };
        drop(dropped);
        self.queue.ready.notify_all();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

fn run(queue: &Queue) {
    loop {
        let step = {
            let mut q = queue.steps.lock().unwrap_or_else(|e| e.into_inner());
            loop {
                if q.1 {
                    return;
                }
                if let Some(s) = q.0.pop_front() {
                    break s;
                }
                q = queue.ready.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        step();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    fn settings(threads: usize, queue_max: usize) -> ProxySettings {
        ProxySettings {
            threads,
            queue_max,
            timeout: Duration::from_secs(5),
            token: "t".into(),
            reserve_bps: 1,
        }
    }

    #[test]
    fn steps_run_on_the_threads_and_a_full_queue_refuses_new_streams_first() {
        let proxy = Proxy::start(settings(1, 1)).unwrap();
        let (hold_tx, hold_rx) = mpsc::channel::<()>();
        let (done_tx, done_rx) = mpsc::channel::<String>();
        // The one thread is held, so what follows stays queued.
        let (started_tx, started_rx) = mpsc::channel::<()>();
        assert!(proxy.submit(
            Box::new(move || {
                started_tx.send(()).unwrap();
                hold_rx.recv().unwrap();
            }),
            true
        ));
        started_rx.recv().unwrap();
        let d = done_tx.clone();
        assert!(proxy.submit(Box::new(move || d.send("a".into()).unwrap()), true));
        assert!(!proxy.submit(Box::new(|| ()), true), "past queue_max");
        let d = done_tx.clone();
        assert!(proxy.submit(Box::new(move || d.send("b".into()).unwrap()), false));
        assert!(
            !proxy.submit(Box::new(|| ()), false),
            "past twice queue_max"
        );
        assert_eq!(proxy.queued(), 2);
        hold_tx.send(()).unwrap();
        assert_eq!(done_rx.recv().unwrap(), "a");
        assert_eq!(done_rx.recv().unwrap(), "b");
        proxy.stop();
        assert!(!proxy.submit(Box::new(|| ()), false), "stopped");
    }
}
