//! Replication: the bounded queue of copies and deletes this node owes the other nodes, and the
//! threads (`oasis-pool-rep<i>`, never an engine worker) that carry them out over HTTP.
//!
//! A copy is a `PUT /media/<name>` to a target node with the pool credential (`[http]
//! api_token`, the same on every node), `X-Oasis-Pool` (so the target does not hand it on) and
//! `X-Oasis-Crc32c` (the target's store refuses the upload, 422, when its content differs) and
//! `X-Oasis-Pool-Version` (the pool's id of the version). Once the target answered 2xx its
//! copy is durable there and its own commit wrote its replica row under that id, in the same
//! transaction as its object row: the catalog sees one version held by both, and a row never
//! names other bytes than its node's file holds (two copies of different versions racing to a
//! node leave the row of whichever committed last). A copy older than the pool's current
//! version is refused by the target (409) and the task finds itself superseded on its retry. A delete is a `DELETE /media/<name>` with the same fields. Failed
//! tasks are tried again with a growing delay, up to [`ATTEMPTS_MAX`] times; a full queue drops
//! the newest task, logged and counted. This module does not choose what to replicate
//! (commits, deletes and the pool thread's repair rounds push tasks).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use oasis_storage::{PgCatalog, PoolCatalog, Store};

use super::view::SharedView;
use super::Settings;
use crate::client::encode_name;
use crate::client::upload::put_with;

/// Most tasks waiting at once; past it new tasks are dropped (logged, counted).
pub const QUEUE_MAX: usize = 4096;
/// Replication threads per node: at most this many copies or deletes in flight.
pub const THREADS: usize = 2;
/// Tries of one task before it is given up (logged, counted).
pub const ATTEMPTS_MAX: u32 = 6;
/// The first retry's delay; each next one doubles it.
const RETRY_FIRST: Duration = Duration::from_millis(500);

/// One thing owed to the pool.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Task {
    /// Copy version `version_id` (the pool's id, as in this node's replica row) of `name`,
    /// held here, to as many live nodes as the pool wants.
    Replicate { name: String, version_id: u64 },
    /// Delete `node_id`'s copy of `name`.
    Delete { name: String, node_id: String },
}

struct Queued {
    task: Task,
    attempt: u32,
    not_before: Instant,
}

/// Counters of the queue, for `/api/pool`.
#[derive(Default)]
pub struct Counts {
    pub done: AtomicU64,
    pub failed: AtomicU64,
    pub dropped: AtomicU64,
    pub in_flight: AtomicU64,
}

/// The bounded task queue the replication threads take from.
pub struct Queue {
    tasks: Mutex<VecDeque<Queued>>,
    ready: Condvar,
    pub counts: Counts,
    stop: AtomicBool,
}

impl Queue {
    pub fn new() -> Arc<Queue> {
        Arc::new(Queue {
            tasks: Mutex::new(VecDeque::new()),
            ready: Condvar::new(),
            counts: Counts::default(),
            stop: AtomicBool::new(false),
        })
    }

    /// Queues `task` now; never blocks beyond the queue's lock. A full queue drops it.
    pub fn push(&self, task: Task) {
        self.push_at(task, 0, Instant::now());
    }

    fn push_at(&self, task: Task, attempt: u32, not_before: Instant) {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.len() >= QUEUE_MAX {
            drop(tasks);
            self.counts.dropped.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                "pool: replication queue full ({QUEUE_MAX} tasks): dropped {task:?}; the object \
                 stays under-replicated until it is uploaded again"
            );
            return;
        }
        if !tasks.iter().any(|q| q.task == task) {
            tasks.push_back(Queued {
                task,
                attempt,
                not_before,
            });
        }
        self.ready.notify_one();
    }

    /// Tasks waiting now.
    pub fn len(&self) -> usize {
        self.tasks.lock().map_or(0, |t| t.len())
    }

    /// True when no task waits and none is being carried out: a repair round started now
    /// cannot queue a second copy of one an upload's own copy is still making.
    pub fn idle(&self) -> bool {
        let tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        tasks.is_empty() && self.counts.in_flight.load(Ordering::Relaxed) == 0
    }

    /// Wakes every thread to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.ready.notify_all();
    }

    /// The next task due, waiting for one; `None` once stopped.
    fn take(&self) -> Option<Queued> {
        let mut tasks = self.tasks.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if self.stop.load(Ordering::Acquire) {
                return None;
            }
            let now = Instant::now();
            if let Some(i) = tasks.iter().position(|q| q.not_before <= now) {
                // Counted under the lock, so `idle` never sees the task in neither place.
                self.counts.in_flight.fetch_add(1, Ordering::Relaxed);
                return tasks.remove(i);
            }
            let wait = tasks
                .iter()
                .map(|q| q.not_before.saturating_duration_since(now))
                .min()
                .unwrap_or(Duration::from_secs(1));
            tasks = self
                .ready
                .wait_timeout(tasks, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

/// A file read from the start by `pread`, leaving the descriptor's own offset alone.
struct ReadAt<'a> {
    file: &'a std::fs::File,
    offset: u64,
}

impl std::io::Read for ReadAt<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(self.file, buf, self.offset)?;
        self.offset += n as u64;
        Ok(n)
    }
}

/// What a replication thread works with.
pub struct Worker {
    pub settings: Arc<Settings>,
    pub queue: Arc<Queue>,
    pub store: Arc<Store>,
    pub view: SharedView,
}

impl Worker {
    /// The thread's loop: tasks until the queue stops.
    pub fn run(self) {
        let mut catalog: Option<PgCatalog> = None;
        // `take` counted the task in flight; it stops counting once the task is done, given
        // up, or queued again, so the queue is never seen idle in between.
        while let Some(q) = self.queue.take() {
            let result = self.carry_out(&q.task, &mut catalog);
            match result {
                Ok(()) => {
                    self.queue.counts.done.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) if q.attempt + 1 < ATTEMPTS_MAX => {
                    let delay = RETRY_FIRST * 2u32.pow(q.attempt);
                    tracing::warn!(
                        "pool: {:?} failed (try {} of {ATTEMPTS_MAX}), again in {delay:?}: {e:#}",
                        q.task,
                        q.attempt + 1
                    );
                    self.queue
                        .push_at(q.task, q.attempt + 1, Instant::now() + delay);
                }
                Err(e) => {
                    self.queue.counts.failed.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(
                        "pool: gave up {:?} after {ATTEMPTS_MAX} tries: {e:#}",
                        q.task
                    );
                }
            }
            self.queue.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn carry_out(&self, task: &Task, catalog: &mut Option<PgCatalog>) -> anyhow::Result<()> {
        let cat = super::session(catalog, &self.settings)?;
        match task {
            Task::Replicate { name, version_id } => self.replicate(cat, name, *version_id),
            Task::Delete { name, node_id } => self.delete_on(name, node_id),
        }
    }

    fn advertise_of(&self, node_id: &str) -> Option<String> {
        let view = Arc::clone(&self.view.read().unwrap_or_else(|e| e.into_inner()));
        view.nodes
            .iter()
            .find(|n| n.node_id == node_id)
            .map(|n| n.advertise.clone())
    }

    fn replicate(&self, cat: &mut PgCatalog, name: &str, version_id: u64) -> anyhow::Result<()> {
        let me = self.settings.node_id.as_str();
        let replicas = cat.replicas(name)?;
        // `version_id` is the pool's id of the version (this node's replica row: the origin's
        // id, also on a node that received its copy). Superseded or deleted since: the task of
        // the newer version (if any) does the work.
        let Some(mine) = replicas
            .iter()
            .find(|r| r.node_id == me && r.version_id == version_id)
        else {
            return Ok(());
        };
        if replicas.iter().any(|r| r.version_id > version_id) {
            return Ok(());
        }
        let Some(meta) = self
            .store
            .lookup(name)
            .filter(|m| m.size_bytes == mine.size_bytes && m.crc32c == mine.crc32c)
        else {
            return Ok(());
        };
        let view = Arc::clone(&self.view.read().unwrap_or_else(|e| e.into_inner()));
        let now = Instant::now();
        let live = view.live_others(me, self.settings.down_after_ms, now);
        // Copies on nodes that are down do not count.
        let holding: Vec<&str> = replicas
            .iter()
            .filter(|r| r.version_id == version_id && r.node_id != me)
            .map(|r| r.node_id.as_str())
            .filter(|id| live.iter().any(|n| n.node_id == *id))
            .collect();
        let want = self.settings.replicas.saturating_sub(1) as usize;
        let needed = want.saturating_sub(holding.len());
        // Nodes with an older version go first (their copy is replaced), then the least loaded.
        let stale: Vec<&str> = replicas
            .iter()
            .filter(|r| r.version_id < version_id && r.node_id != me)
            .map(|r| r.node_id.as_str())
            .collect();
        let mut candidates = live;
        candidates.retain(|n| !holding.contains(&n.node_id.as_str()));
        candidates.sort_by_key(|n| !stale.contains(&n.node_id.as_str()));
        let targets: Vec<_> = candidates.into_iter().take(needed).collect();
        let mut failure = None;
        for target in &targets {
            // The target's commit records its replica row under `version_id`, in the same
            // transaction as its object row: the row always names what its file holds.
            match self.send_copy(&meta, version_id, &target.advertise) {
                Ok(()) => tracing::info!("pool: {name} copied to {}", target.node_id),
                Err(e) => failure = Some(e.context(format!("copy to {}", target.node_id))),
            }
        }
        // Older versions on nodes that did not get this one are deleted, so none serves them.
        for node in stale {
            if !targets.iter().any(|t| t.node_id == node) {
                cat.drop_replica(name, node)?;
                self.queue.push(Task::Delete {
                    name: name.to_string(),
                    node_id: node.to_string(),
                });
            }
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if targets.len() < needed {
            // A node may have joined since the view was read: tried again with the others.
            anyhow::bail!(
                "{name}: {} of {needed} more copies made: not enough live nodes",
                targets.len()
            );
        }
        Ok(())
    }

    fn send_copy(
        &self,
        meta: &oasis_storage::ObjectMeta,
        version_id: u64,
        base: &str,
    ) -> anyhow::Result<()> {
        let file = self.store.open_file(meta)?;
        // Read at its own offsets: the descriptor is shared with the fd cache.
        let mut reader = ReadAt {
            file: &file,
            offset: 0,
        };
        let mut path = format!("/media/{}", encode_name(&meta.name));
        // A bitrate the uploader gave is the copy's too (the others are derived again there).
        if meta.bitrate_source == oasis_storage::BitrateSource::Uploader {
            path.push_str(&format!("?bitrate={}", meta.bitrate_bps));
        }
        let auth = format!("Bearer {}", self.settings.token);
        let crc = format!("{:08x}", meta.crc32c);
        let version = version_id.to_string();
        let headers = [
            ("Authorization", auth.as_str()),
            ("X-Oasis-Pool", "replica"),
            ("X-Oasis-Pool-Version", version.as_str()),
            ("X-Oasis-Crc32c", crc.as_str()),
            ("Content-Type", meta.content_type.as_str()),
        ];
        let answer = put_with(base, &path, &headers, &mut reader, meta.size_bytes)?;
        if !(200..300).contains(&answer.status) {
            anyhow::bail!("{base} answered {}: {}", answer.status, answer.body.trim());
        }
        Ok(())
    }

    fn delete_on(&self, name: &str, node_id: &str) -> anyhow::Result<()> {
        let Some(base) = self.advertise_of(node_id) else {
            anyhow::bail!("node {node_id} has no advertised address in the pool");
        };
        let url = format!("{}/media/{}", base.trim_end_matches('/'), encode_name(name));
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into();
        let answer = agent
            .delete(&url)
            .header("Authorization", &format!("Bearer {}", self.settings.token))
            .header("X-Oasis-Pool", "delete")
            .call()?;
        match answer.status().as_u16() {
            // 404: it was gone already.
            200..=299 | 404 => Ok(()),
            other => anyhow::bail!("{url} answered {other}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_is_idle_only_with_nothing_waiting_and_nothing_in_flight() {
        let queue = Queue::new();
        assert!(queue.idle());
        let task = Task::Replicate {
            name: "a.mp4".into(),
            version_id: 1,
        };
        queue.push(task.clone());
        queue.push(task.clone());
        assert_eq!(queue.len(), 1, "the same task is queued once");
        assert!(!queue.idle());
        let taken = queue.take().expect("a task due now");
        assert!(taken.task == task);
        assert_eq!(queue.len(), 0);
        assert!(
            !queue.idle(),
            "a task being carried out keeps the queue busy"
        );
        // Queued again after a failure, then finished: busy until the count drops.
        queue.push_at(taken.task, 1, Instant::now() + Duration::from_secs(60));
        queue.counts.in_flight.fetch_sub(1, Ordering::Relaxed);
        assert!(!queue.idle());
        queue.tasks.lock().unwrap().clear();
        assert!(queue.idle());
    }
}
