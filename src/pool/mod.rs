//! This server as a node of a pool (`[pool] catalog`, `node_id`, `advertise`): the pool thread
//! (`oasis-pool`) that heartbeats with this node's load every second and refreshes the shared
//! [`view::PoolView`]; the [`PoolHook`] the HTTP service calls (where an object not held here
//! is, what a commit or a delete hands on, `/api/pool`); and the replication threads
//! ([`replicate`]). No engine worker ever waits here: lookups run on the catalog thread (jobs)
//! with their own catalog session, commits and deletes only queue tasks.
//!
//! Every [`REPAIR_EVERY`] heartbeats the pool thread also counts the objects with too few live
//! copies (for the status datagrams, [`Pool::summary`]) and asks the catalog which names this node
//! must restore copies of (it is the smallest live holder of a name with too few live copies)
//! and queues them, at most [`REPAIR_BATCH`] a round.
//!
//! At start, before the node listens ([`reconcile_at_start`]), it reconciles with the catalog:
//! a local object whose replica row is gone (deleted on another node while this one was away)
//! or whose version is older than the pool's current one is deleted here; what this node lacks
//! comes back through the other nodes' repair rounds.
//!
//! Cut off from the catalog (the last heartbeat failed, or none succeeded for `down_after_ms`)
//! the node serves what it holds and refuses writes ([`PoolHook::write_refusal`]); the
//! heartbeat keeps trying every second, and the first one that succeeds takes writes again.
//!
//! In proxy mode (`[pool] mode = "proxy"`) the node also runs the HTTP service's proxy threads
//! ([`oasis_net::Proxy`], [`PROXY_THREADS`] of them), handed to sessions through the hook.

pub mod replicate;
pub mod view;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use oasis_engine::resource::Resource;
use oasis_engine::ResourceManager;
use oasis_net::{Located, PoolHook, Proxy, ProxySettings};
use oasis_storage::{NodeLoad, ObjectMeta, PgCatalog, PoolCatalog, Store};

use crate::config::Config;
use replicate::{Queue, Task, Worker};
use view::{pick_holder, Pick, PoolView, SharedView};

/// How often the pool thread heartbeats and reads the nodes.
pub const HEARTBEAT: Duration = Duration::from_secs(1);

/// The under-replicated count before the first count, or after a failed one.
const NOT_COUNTED: u64 = u64::MAX;

/// Heartbeats between two repair rounds (and two counts of the under-replicated objects).
pub const REPAIR_EVERY: u32 = 5;
/// Most names one repair round queues.
pub const REPAIR_BATCH: u32 = 256;

/// Proxy mode's threads (each waits on one holder's socket at a time).
pub const PROXY_THREADS: usize = 16;
/// Proxy steps queued at most before new proxied requests are refused (503).
pub const PROXY_QUEUE_MAX: usize = 1024;
/// Bound on a proxy's connect to a holder and on each of its writes and reads.
pub const PROXY_TIMEOUT: Duration = Duration::from_secs(10);

/// What the pool runs on, from `[pool]` and `[http] api_token`.
#[derive(Clone, Debug)]
pub struct Settings {
    pub catalog: String,
    pub node_id: String,
    pub advertise: String,
    pub replicas: u32,
    pub down_after_ms: u64,
    /// `[pool] mode = "proxy"`: objects held elsewhere are streamed through this node.
    pub proxy: bool,
    /// What a proxied stream reserves on this node's listener (`[storage]
    /// default_bitrate_bps`: the object's own bitrate is on its holder).
    pub proxy_reserve_bps: u64,
    /// The pool credential: `[http] api_token`, the same on every node.
    pub token: String,
}

/// The pool's settings when `[pool] catalog` is set; a pool needs an API token (its nodes'
/// credential for copies and deletes).
pub fn settings(cfg: &Config, token: Option<&str>) -> Result<Option<Settings>> {
    let p = &cfg.pool;
    if !p.is_pool() {
        return Ok(None);
    }
    let Some(token) = token else {
        anyhow::bail!(
            "[pool] needs [http] api_token (or OASIS_API_TOKEN), the same on every node: the \
             nodes send each other copies and deletes with it"
        );
    };
    Ok(Some(Settings {
        catalog: p.catalog.clone(),
        node_id: p.node_id.clone(),
        advertise: p.advertise.trim_end_matches('/').to_string(),
        replicas: p.replicas,
        down_after_ms: p.down_after_ms,
        proxy: p.mode == "proxy",
        proxy_reserve_bps: cfg.storage.default_bitrate_bps,
        token: token.to_string(),
    }))
}

/// A running pool node: its threads and its side of the HTTP service.
pub struct Pool {
    settings: Arc<Settings>,
    view: SharedView,
    /// The catalog session of lookups made for requests (jobs on the catalog thread).
    lookups: Mutex<Option<PgCatalog>>,
    queue: Arc<Queue>,
    /// Proxy mode's threads (`None` in redirect mode).
    proxy: Option<Arc<Proxy>>,
    /// Objects under-replicated as the pool thread last counted them ([`NOT_COUNTED`]: not
    /// yet, or the count failed), for the status datagrams.
    under_replicated: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Pool {
    /// Starts the pool thread and the replication threads. Fails when the catalog cannot be
    /// reached for the first heartbeat.
    pub fn start(
        settings: Settings,
        store: Arc<Store>,
        rm: Arc<ResourceManager>,
    ) -> Result<Arc<Pool>> {
        let settings = Arc::new(settings);
        let mut beat = PgCatalog::open(&settings.catalog, &settings.node_id)?;
        let view: SharedView = Arc::new(RwLock::new(Arc::new(PoolView::empty())));
        refresh(&mut beat, &settings, &rm, &view).context("the pool's first heartbeat failed")?;
        let proxy = if settings.proxy {
            let proxy = Proxy::start(ProxySettings {
                threads: PROXY_THREADS,
                queue_max: PROXY_QUEUE_MAX,
                timeout: PROXY_TIMEOUT,
                token: settings.token.clone(),
                reserve_bps: settings.proxy_reserve_bps,
            })
            .context("cannot start the proxy threads")?;
            Some(proxy)
        } else {
            None
        };
        let pool = Arc::new(Pool {
            settings: Arc::clone(&settings),
            view: Arc::clone(&view),
            lookups: Mutex::new(None),
            queue: Queue::new(),
            proxy,
            under_replicated: Arc::new(AtomicU64::new(NOT_COUNTED)),
            stop: Arc::new(AtomicBool::new(false)),
            threads: Mutex::new(Vec::new()),
        });
        let mut threads = Vec::new();
        let stop = Arc::clone(&pool.stop);
        let (s, v, q, u) = (
            Arc::clone(&settings),
            Arc::clone(&view),
            Arc::clone(&pool.queue),
            Arc::clone(&pool.under_replicated),
        );
        threads.push(
            std::thread::Builder::new()
                .name("oasis-pool".into())
                .spawn(move || heartbeat_loop(beat, &s, &rm, &v, &q, &u, &stop))?,
        );
        for i in 0..replicate::THREADS {
            let worker = Worker {
                settings: Arc::clone(&settings),
                queue: Arc::clone(&pool.queue),
                store: Arc::clone(&store),
                view: Arc::clone(&view),
            };
            threads.push(
                std::thread::Builder::new()
                    .name(format!("oasis-pool-rep{i}"))
                    .spawn(move || worker.run())?,
            );
        }
        *pool.threads.lock().unwrap_or_else(|e| e.into_inner()) = threads;
        Ok(pool)
    }

    /// Starts the node ([`Pool::start`]) and attaches it to the HTTP service.
    pub fn attach(
        settings: Settings,
        store: &Arc<Store>,
        rm: &Arc<ResourceManager>,
        http: &oasis_net::HttpService,
    ) -> Result<Arc<Pool>> {
        let node_id = settings.node_id.clone();
        let pool = Pool::start(settings, Arc::clone(store), Arc::clone(rm))?;
        http.attach_pool(Arc::clone(&pool) as Arc<dyn PoolHook>);
        let mode = if pool.proxy.is_some() {
            "proxies objects held elsewhere"
        } else {
            "redirects to objects held elsewhere"
        };
        tracing::info!("pool: node {node_id}, heartbeat every second, {mode}");
        Ok(pool)
    }

    /// Stops the threads and waits for them (a copy in flight finishes first).
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.queue.stop();
        if let Some(p) = &self.proxy {
            p.stop();
        }
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }

    /// Runs `f` on the lookup session, opening it first (again after it failed).
    fn with_catalog<T>(&self, f: impl FnOnce(&mut PgCatalog) -> Result<T>) -> Result<T> {
        let mut slot = self.lookups.lock().unwrap_or_else(|e| e.into_inner());
        f(session(&mut slot, &self.settings)?)
    }

    fn view(&self) -> Arc<PoolView> {
        Arc::clone(&self.view.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// The pool as this node sees it, for its status datagrams. Never blocks: the view and the
    /// count the pool thread last made.
    pub fn summary(&self) -> oasis_monitor::PoolSummary {
        let view = self.view();
        let now = Instant::now();
        let down_after = self.settings.down_after_ms;
        let live = view
            .nodes
            .iter()
            .filter(|n| view.age_ms(n, now) < down_after)
            .count();
        let under = self.under_replicated.load(Ordering::Relaxed);
        oasis_monitor::PoolSummary {
            catalog_reachable: view.write_refusal(down_after, now).is_none(),
            nodes_live: u16::try_from(live).unwrap_or(u16::MAX),
            nodes_total: u16::try_from(view.nodes.len()).unwrap_or(u16::MAX),
            under_replicated: (under != NOT_COUNTED)
                .then(|| u32::try_from(under).unwrap_or(u32::MAX - 1)),
            replication_queued: u32::try_from(self.queue.len()).unwrap_or(u32::MAX),
        }
    }
}

/// The catalog session in `slot`, opened first when there is none (again after a failure
/// emptied it).
pub fn session<'a>(
    slot: &'a mut Option<PgCatalog>,
    settings: &Settings,
) -> Result<&'a mut PgCatalog> {
    if slot.is_none() {
        *slot = Some(PgCatalog::open(&settings.catalog, &settings.node_id)?);
    }
    slot.as_mut().context("the catalog session was just opened")
}

/// This node's load, from the Resource Manager: connections and bandwidth over every listener.
fn load(rm: &ResourceManager) -> NodeLoad {
    let listeners = u16::try_from(rm.listeners()).unwrap_or(u16::MAX);
    let (mut reserved, mut limit) = (0u64, 0u64);
    for i in 0..listeners {
        reserved = reserved.saturating_add(rm.used(Resource::NetBps(i)));
        limit = limit.saturating_add(rm.limit(Resource::NetBps(i)));
    }
    NodeLoad {
        connections: rm.used(Resource::Connections),
        bandwidth_reserved_bps: reserved,
        bandwidth_limit_bps: limit,
    }
}

/// One heartbeat and one read of the nodes, then the view replaced whole.
fn refresh(
    cat: &mut PgCatalog,
    settings: &Settings,
    rm: &ResourceManager,
    view: &SharedView,
) -> Result<()> {
    let result = cat
        .heartbeat(&settings.advertise, &load(rm))
        .and_then(|()| cat.nodes());
    let next = match &result {
        Ok(nodes) => PoolView {
            nodes: nodes.clone(),
            read_at: Instant::now(),
            catalog_reachable: true,
            catalog_error: None,
        },
        Err(e) => {
            let old = Arc::clone(&view.read().unwrap_or_else(|e| e.into_inner()));
            PoolView {
                catalog_reachable: false,
                catalog_error: Some(e.to_string()),
                ..(*old).clone()
            }
        }
    };
    *view.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(next);
    result.map(|_| ()).map_err(Into::into)
}

fn heartbeat_loop(
    mut cat: PgCatalog,
    settings: &Settings,
    rm: &ResourceManager,
    view: &SharedView,
    queue: &Queue,
    under_replicated: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut failing = false;
    let mut beats = 0u32;
    while !stop.load(Ordering::Acquire) {
        std::thread::sleep(HEARTBEAT);
        beats = beats.wrapping_add(1);
        let result = refresh(&mut cat, settings, rm, view);
        // Only when another node is live: with none, no copy could be made.
        let others_live = {
            let v = Arc::clone(&view.read().unwrap_or_else(|e| e.into_inner()));
            !v.live_others(&settings.node_id, settings.down_after_ms, Instant::now())
                .is_empty()
        };
        // A round waits for the queue to drain and the copies in flight to end, so neither a
        // failing copy nor one still being made is queued twice (a third copy nothing removes).
        let due = beats.is_multiple_of(REPAIR_EVERY) && queue.idle();
        if result.is_ok() && others_live && due && settings.replicas > 1 {
            repair_round(&mut cat, settings, queue);
        }
        if beats == 1 || beats.is_multiple_of(REPAIR_EVERY) {
            let counted = match &result {
                Ok(()) => cat
                    .under_replicated(settings.replicas, settings.down_after_ms)
                    .unwrap_or(NOT_COUNTED),
                Err(_) => NOT_COUNTED,
            };
            under_replicated.store(counted, Ordering::Relaxed);
        }
        match result {
            Ok(()) if failing => {
                failing = false;
                tracing::info!("pool: the catalog answers heartbeats again");
            }
            Ok(()) => {}
            Err(e) if !failing => {
                failing = true;
                tracing::warn!("pool: heartbeat failed (tried again every second): {e:#}");
            }
            Err(_) => {}
        }
    }
}

/// Reconciles this node with the catalog before it listens (see the module doc): no request
/// and no peer's delete can meet a stale object meanwhile. One catalog query per local object.
pub fn reconcile_at_start(settings: &Settings, store: &Store) -> Result<()> {
    let mut cat = PgCatalog::open(&settings.catalog, &settings.node_id)?;
    reconcile(&mut cat, store, &settings.node_id);
    Ok(())
}

/// Deletes the local objects the pool no longer lists here, or lists in a newer version
/// elsewhere.
fn reconcile(cat: &mut PgCatalog, store: &Store, me: &str) {
    let mut dropped = 0usize;
    for meta in store.list() {
        let replicas = match cat.replicas(&meta.name) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("pool: reconciling stopped, the catalog failed: {e}");
                return;
            }
        };
        let newest = replicas.iter().map(|r| r.version_id).max();
        let why = match replicas.iter().find(|r| r.node_id == me) {
            None => "deleted in the pool while this node was away",
            Some(mine) if Some(mine.version_id) < newest => {
                "replaced in the pool by a newer version"
            }
            Some(_) => continue,
        };
        match store.delete(&meta.name) {
            Ok(()) => {
                dropped += 1;
                tracing::info!("pool: {}: {why}: deleted here", meta.name);
            }
            Err(e) => tracing::warn!("pool: {}: {why}, but deleting it failed: {e}", meta.name),
        }
    }
    if dropped > 0 {
        tracing::info!("pool: reconciled with the catalog: {dropped} stale objects deleted");
    }
}

/// Queues a copy of every name this node must restore (see the module doc).
fn repair_round(cat: &mut PgCatalog, settings: &Settings, queue: &Queue) {
    match cat.to_repair(settings.replicas, settings.down_after_ms, REPAIR_BATCH) {
        Ok(names) => {
            for (name, version_id) in names {
                tracing::info!(
                    "pool: {name} has fewer than {} live copies: repairing",
                    settings.replicas
                );
                queue.push(Task::Replicate { name, version_id });
            }
        }
        Err(e) => tracing::warn!("pool: cannot list the names to repair: {e}"),
    }
}

impl PoolHook for Pool {
    fn locate(&self, name: &str, overloaded: bool) -> Located {
        // Cut off from the catalog: answered from the view at once (503), not after a wait on
        // a connection that is gone.
        if self
            .view()
            .write_refusal(self.settings.down_after_ms, Instant::now())
            .is_some()
        {
            return Located::AllDown;
        }
        let holders = self.with_catalog(|c| Ok(c.holders(name)?));
        let holders = match holders {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!("pool: cannot look up the holders of {name}: {e:#}");
                *self.lookups.lock().unwrap_or_else(|e| e.into_inner()) = None;
                return Located::AllDown;
            }
        };
        let need = overloaded.then_some(1);
        match pick_holder(
            &holders,
            &self.settings.node_id,
            self.settings.down_after_ms,
            need,
        ) {
            Pick::Node(n) => Located::At(n.advertise.clone()),
            Pick::AllDown => Located::AllDown,
            Pick::Nowhere => Located::Nowhere,
        }
    }

    fn committed(&self, meta: &ObjectMeta, from_peer: bool) {
        if !from_peer && self.settings.replicas > 1 {
            self.queue.push(Task::Replicate {
                name: meta.name.clone(),
                version_id: meta.id,
            });
        }
    }

    fn deleted(&self, name: &str, from_peer: bool) {
        if from_peer {
            return;
        }
        let me = self.settings.node_id.clone();
        let dropped = self.with_catalog(|c| {
            let mut others = Vec::new();
            for r in c.replicas(name)? {
                if r.node_id != me && c.drop_replica(name, &r.node_id)? {
                    others.push(r.node_id);
                }
            }
            Ok(others)
        });
        match dropped {
            Ok(others) => {
                for node_id in others {
                    self.queue.push(Task::Delete {
                        name: name.to_string(),
                        node_id,
                    });
                }
            }
            Err(e) => {
                tracing::warn!(
                    "pool: {name} deleted here, but its other copies stay listed: {e:#}"
                );
                *self.lookups.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
        }
    }

    fn proxy(&self) -> Option<Arc<Proxy>> {
        self.proxy.clone()
    }

    fn status_json(&self) -> String {
        let view = self.view();
        let now = Instant::now();
        let down_after = self.settings.down_after_ms;
        let nodes: Vec<_> = view
            .nodes
            .iter()
            .map(|n| {
                let age = view.age_ms(n, now);
                serde_json::json!({
                    "node_id": n.node_id,
                    "advertise": n.advertise,
                    "state": if age < down_after { "live" } else { "down" },
                    "heartbeat_age_ms": age,
                    "connections": n.load.connections,
                    "bandwidth_reserved_bps": n.load.bandwidth_reserved_bps,
                    "bandwidth_limit_bps": n.load.bandwidth_limit_bps,
                })
            })
            .collect();
        let refusal = view.write_refusal(down_after, now);
        // Cut off from the catalog: answered from the view alone, without waiting for it.
        let under = match &refusal {
            Some(why) => Err(why.clone()),
            None => self
                .with_catalog(|c| Ok(c.under_replicated(self.settings.replicas, down_after)?))
                .map_err(|e| e.to_string()),
        };
        let last_ms = u64::try_from(now.saturating_duration_since(view.read_at).as_millis())
            .unwrap_or(u64::MAX);
        let counts = &self.queue.counts;
        let body = serde_json::json!({
            "node_id": self.settings.node_id,
            "replicas": self.settings.replicas,
            "mode": if self.proxy.is_some() { "proxy" } else { "redirect" },
            "proxy_queued": self.proxy.as_ref().map(|p| p.queued()),
            "down_after_ms": down_after,
            "catalog_reachable": refusal.is_none(),
            "catalog": {
                "state": if refusal.is_none() { "reachable" } else { "unreachable" },
                "last_contact_ms_ago": last_ms,
                "error": view.catalog_error,
                "writes": if refusal.is_none() { "taken" } else { "refused (503)" },
            },
            "nodes": nodes,
            "under_replicated": under.as_ref().ok(),
            "under_replicated_error": under.as_ref().err(),
            "replication": {
                "queued": self.queue.len(),
                "in_flight": counts.in_flight.load(Ordering::Relaxed),
                "done": counts.done.load(Ordering::Relaxed),
                "failed": counts.failed.load(Ordering::Relaxed),
                "dropped": counts.dropped.load(Ordering::Relaxed),
            },
        });
        format!("{body}\n")
    }

    fn write_refusal(&self) -> Option<String> {
        self.view()
            .write_refusal(self.settings.down_after_ms, Instant::now())
    }
}
