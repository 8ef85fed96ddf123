//! The HTTP service and its configuration reload: the modules every session shares (store,
//! Resource Manager, metrics, access log, clock) and the settings generation in force. A reload
//! swaps the generation; sessions take the new one at their next request. Nothing here parses,
//! answers a request or blocks a worker beyond a read lock held for one `Arc` clone.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Instant;

use oasis_engine::resource::ResourceManager;
use oasis_engine::EngineHandle;
use oasis_storage::{AuditLog, Store};

use super::config::{HttpConfig, WallClock};
use super::control::{ConfigControl, ControlSlot};
use super::pool::{PoolHook, PoolSlot};
use crate::access_log::AccessLog;
use crate::auth::limiter::FailureLimiter;
use crate::auth::users::Users;
use crate::metrics::Metrics;

/// Everything a session needs, for one configuration generation. A reload builds a new `Inner`
/// with the new settings and the same modules; sessions switch at their next request.
pub(super) struct Inner {
    pub(super) cfg: HttpConfig,
    /// Counts applied reloads: 0 is the configuration the server started with.
    pub(super) generation: u64,
    pub(super) store: Arc<Store>,
    pub(super) rm: Arc<ResourceManager>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) log: AccessLog,
    pub(super) clock: WallClock,
    /// Set while the engine runs; cleared at shutdown (the engine holds this service: no cycle).
    /// Shared by every generation.
    pub(super) engine: Arc<RwLock<Option<EngineHandle>>>,
    /// The background scrub, when it runs (shared by every generation, like `engine`).
    pub(super) scrubber: Arc<RwLock<Option<Arc<oasis_storage::Scrubber>>>>,
    /// The Configuration Manager behind `/api/config`, once attached (shared like `engine`).
    pub(super) control: ControlSlot,
    /// The pool this node belongs to, once attached (shared like `engine`).
    pub(super) pool: PoolSlot,
    pub(super) started: Instant,
    /// The User Manager's accounts (shared by every generation; replaced whole on a change).
    pub(super) users: Arc<Users>,
    /// Failed authentications per client address (shared by every generation).
    pub(super) limiter: Arc<FailureLimiter>,
    /// The audit trail's writer, once the binary attached it (shared by every generation).
    pub(super) audit: Arc<OnceLock<AuditLog>>,
}

/// The generation in force. Sessions compare `generation` (one load of a line written only on
/// reload) with their snapshot's before each request and take the lock only when it moved.
pub(super) struct Live {
    generation: AtomicU64,
    current: RwLock<Arc<Inner>>,
    /// The engine's 503 for connections over the limit, carrying `retry_after_secs`. Leaked so the
    /// engine can borrow it for as long as it likes: one small buffer per reload that changes it.
    refusal: RwLock<&'static [u8]>,
}

impl Live {
    /// The generation in force when it is not `generation` (a reload happened since), else `None`.
    pub(super) fn newer_than(&self, generation: u64) -> Option<Arc<Inner>> {
        if self.generation.load(Ordering::Acquire) == generation {
            return None;
        }
        Some(Arc::clone(
            &self.current.read().unwrap_or_else(|e| e.into_inner()),
        ))
    }

    /// The engine's 503 for connections refused before they get a session.
    pub(super) fn refusal(&self) -> &'static [u8] {
        *self.refusal.read().unwrap_or_else(|e| e.into_inner())
    }
}

fn refusal_bytes(retry_after_secs: u64) -> &'static [u8] {
    let bytes = format!(
        "HTTP/1.1 503 Service Unavailable\r\nServer: oasis\r\nRetry-After: {retry_after_secs}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    Box::leak(bytes.into_bytes().into_boxed_slice())
}

/// The HTTP protocol as an engine [`Service`](oasis_engine::Service).
#[derive(Clone)]
pub struct HttpService {
    pub(super) live: Arc<Live>,
}

impl HttpService {
    pub fn new(
        cfg: HttpConfig,
        store: Arc<Store>,
        rm: Arc<ResourceManager>,
        metrics: Arc<Metrics>,
        log: AccessLog,
        clock: WallClock,
    ) -> Self {
        let refusal = refusal_bytes(cfg.retry_after_secs);
        let started = clock.base_instant;
        let inner = Inner {
            cfg,
            generation: 0,
            store,
            rm,
            metrics,
            log,
            clock,
            engine: Arc::new(RwLock::new(None)),
            scrubber: Arc::new(RwLock::new(None)),
            control: Arc::new(RwLock::new(None)),
            pool: Arc::new(RwLock::new(None)),
            started,
            users: Arc::new(Users::default()),
            limiter: Arc::new(FailureLimiter::default()),
            audit: Arc::new(OnceLock::new()),
        };
        HttpService {
            live: Arc::new(Live {
                generation: AtomicU64::new(0),
                current: RwLock::new(Arc::new(inner)),
                refusal: RwLock::new(refusal),
            }),
        }
    }

    pub(super) fn current(&self) -> Arc<Inner> {
        let guard = self.live.current.read().unwrap_or_else(|e| e.into_inner());
        Arc::clone(&guard)
    }

    /// Puts new settings in force (configuration reload) and returns their generation. Requests
    /// already being answered finish with the settings they started with; every session uses the
    /// new ones from its next request on. Limits that size buffers (`limits`,
    /// `stream_buffer_bytes`) are the caller's to keep unchanged: the engine was sized for them.
    pub fn reload(&self, cfg: HttpConfig) -> u64 {
        let mut current = self.live.current.write().unwrap_or_else(|e| e.into_inner());
        if cfg.retry_after_secs != current.cfg.retry_after_secs {
            *self.live.refusal.write().unwrap_or_else(|e| e.into_inner()) =
                refusal_bytes(cfg.retry_after_secs);
        }
        let generation = current.generation + 1;
        *current = Arc::new(Inner {
            cfg,
            generation,
            store: Arc::clone(&current.store),
            rm: Arc::clone(&current.rm),
            metrics: Arc::clone(&current.metrics),
            log: current.log.clone(),
            clock: current.clock,
            engine: Arc::clone(&current.engine),
            scrubber: Arc::clone(&current.scrubber),
            control: Arc::clone(&current.control),
            pool: Arc::clone(&current.pool),
            started: current.started,
            users: Arc::clone(&current.users),
            limiter: Arc::clone(&current.limiter),
            audit: Arc::clone(&current.audit),
        });
        self.live.generation.store(generation, Ordering::Release);
        generation
    }

    /// The configuration generation in force (0 until the first reload).
    pub fn generation(&self) -> u64 {
        self.live.generation.load(Ordering::Acquire)
    }

    /// The User Manager's accounts this service authenticates against: the binary loads them
    /// from the catalog at start, and every change through `/api/users` replaces them.
    pub fn users(&self) -> Arc<Users> {
        Arc::clone(&self.current().users)
    }

    /// Records uploads, deletes, account changes and refusals in this audit trail from now on
    /// (once; a second call is ignored).
    pub fn attach_audit(&self, audit: AuditLog) {
        let svc = self.current();
        svc.metrics.attach_audit(audit.clone());
        let _ = svc.audit.set(audit);
    }

    /// Lets `POST /api/scrub` start passes of this scrub, and `/metrics` show it.
    pub fn attach_scrubber(&self, scrubber: Arc<oasis_storage::Scrubber>) {
        let svc = self.current();
        svc.metrics
            .attach_scrub(Arc::clone(&scrubber.stats), Arc::clone(&svc.store));
        let slot = Arc::clone(&svc.scrubber);
        if let Ok(mut s) = slot.write() {
            *s = Some(scrubber);
        };
    }

    /// Drops the scrub (at shutdown, so the caller's drop stops its thread).
    pub fn detach_scrubber(&self) {
        if let Ok(mut s) = self.current().scrubber.write() {
            *s = None;
        }
    }

    /// Lets `GET|PATCH /api/config` reach the Configuration Manager. Every generation shares it.
    pub fn attach_config_control(&self, control: Arc<dyn ConfigControl>) {
        if let Ok(mut c) = self.current().control.write() {
            *c = Some(control);
        }
    }

    /// Drops the Configuration Manager (at shutdown: it holds this service, a cycle otherwise).
    pub fn detach_config_control(&self) {
        if let Ok(mut c) = self.current().control.write() {
            *c = None;
        }
    }

    /// Makes this server a node of a pool: GETs for objects held elsewhere are redirected,
    /// uploads and deletes handed on, `/api/pool` answered. Every generation shares it.
    pub fn attach_pool(&self, pool: Arc<dyn PoolHook>) {
        if let Ok(mut p) = self.current().pool.write() {
            *p = Some(pool);
        }
    }

    /// Drops the pool hook (at shutdown: it may hold this service's store).
    pub fn detach_pool(&self) {
        if let Ok(mut p) = self.current().pool.write() {
            *p = None;
        }
    }

    /// Gives `/api/status` a view of the running engine.
    pub fn attach_engine(&self, engine: EngineHandle) {
        if let Ok(mut e) = self.current().engine.write() {
            *e = Some(engine);
        }
    }

    /// Drops the engine view (after the engine stopped), so nothing keeps the engine alive.
    pub fn detach_engine(&self) {
        if let Ok(mut e) = self.current().engine.write() {
            *e = None;
        }
    }
}
