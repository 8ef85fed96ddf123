//! Metrics of the Client Manager, rendered as Prometheus text at `GET /metrics`.
//!
//! Counters and gauges are `prometheus-client` types (atomics; no lock on the request path).
//! Latencies go into hdrhistograms, sharded by worker thread so recording takes an uncontended
//! lock, merged at scrape time and exposed as quantile summaries. Resource levels are read from
//! the Resource Manager at scrape time, so they are never stale.
//!
//! This module never blocks a request on a scrape for longer than copying one shard.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use hdrhistogram::Histogram;
use oasis_engine::resource::{Level, ResourceManager};
use oasis_engine::runtime::{WorkerStatus, LOOP_BUSY_BOUNDS_US};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HowLabel {
    pub how: &'static str,
}

/// The outcomes of `oasis_config_patches_total`, each shown from the start (at 0).
pub const CONFIG_PATCH_OUTCOMES: [&str; 5] =
    ["applied", "pending", "invalid", "conflict", "failed"];

const SHARDS: usize = 16;
/// Latencies above this are clamped (microseconds): one hour.
const LATENCY_US_MAX: u64 = 3_600_000_000;

struct Latency {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latency {
    fn new() -> Self {
        Latency {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(
                        Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram bounds"),
                    )
                })
                .collect(),
        }
    }

    fn record(&self, us: u64) {
        let shard = shard_index();
        if let Ok(mut h) = self.shards[shard].lock() {
            let _ = h.record(us.clamp(1, LATENCY_US_MAX));
        }
    }

    fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("histogram bounds");
        for s in &self.shards {
            if let Ok(h) = s.lock() {
                let _ = all.add(&*h);
            }
        }
        all
    }
}

fn shard_index() -> usize {
    thread_local! {
        static SHARD: usize = {
            static NEXT: AtomicU64 = AtomicU64::new(0);
            NEXT.fetch_add(1, Ordering::Relaxed) as usize % SHARDS
        };
    }
    SHARD.with(|s| *s)
}

/// Statuses 100..=599 get a cached counter handle (see [`Metrics::status`]).
const STATUS_FIRST: u16 = 100;
const STATUS_COUNT: usize = 500;

pub struct Metrics {
    registry: Registry,
    pub requests: Family<StatusLabel, Counter>,
    /// `requests`' counter of each status, taken from the family on the status's first response
    /// (so the exposition still lists only statuses sent): `Family::get_or_create` hashes the
    /// label and takes a lock, once per response otherwise. A clone shares the family's atomic.
    requests_by_status: Box<[OnceLock<Counter>]>,
    pub sent_bytes: Counter,
    pub received_bytes: Counter,
    pub active_streams: Gauge,
    pub admissions_refused: Family<ReasonLabel, Counter>,
    /// Segments sent at bitrate x 1 because the bandwidth for `factor_segment` was not free.
    pub segments_paced_at_bitrate: Counter,
    /// Connections holding bandwidth as an HLS/DASH viewer (between segments too).
    pub viewers_held: Gauge,
    pub limits_hit: Family<ReasonLabel, Counter>,
    /// Requests the User Manager refused, by reason (`unknown_token`, `forbidden`, `throttled`,
    /// `bad_signature`, `expired`, ...).
    auth_refused: Family<ReasonLabel, Counter>,
    pub connections_opened: Counter,
    /// GETs answered with a redirect to another node of the pool.
    pub pool_redirects: Counter,
    /// GETs streamed from another node of the pool (proxy mode), counted at their head.
    pub pool_proxied: Counter,
    /// Proxied streams cut after their head because the holder failed.
    pub pool_proxy_cut: Counter,
    pub access_log_dropped: Counter,
    /// Configuration reloads (SIGHUP) by outcome: "ok" (in force) or "rejected" (invalid file).
    pub config_reloads: Family<OutcomeLabel, Counter>,
    /// `PATCH /api/config` requests the Configuration Manager answered, by outcome (see
    /// [`CONFIG_PATCH_OUTCOMES`]).
    pub config_patches: Family<OutcomeLabel, Counter>,
    /// Object files opened on a cache miss, by how: "ring" (io_uring OPENAT, the worker never
    /// waits) or "sync" (direct reads, or the ring open failed and the error is reported).
    file_opens_ring: Counter,
    file_opens_sync: Counter,
    /// GETs of an object a scrub found corrupt, by what the policy did: "refused" or "served".
    corrupt_requests: Family<OutcomeLabel, Counter>,
    ttfb: Latency,
    response: Latency,
    rm: Arc<ResourceManager>,
    /// The background scrub and the store it checks, once started.
    scrub: OnceLock<(Arc<oasis_storage::ScrubStats>, Arc<oasis_storage::Store>)>,
    /// The audit trail's writer, once started.
    audit: OnceLock<oasis_storage::AuditLog>,
}

/// One sample with its HELP and TYPE lines; a counter's sample name ends in `_total`.
fn write_sample(out: &mut String, name: &str, kind: &str, help: &str, value: u64) {
    use std::fmt::Write;
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    let sample = if kind == "counter" {
        format!("{name}_total")
    } else {
        name.to_string()
    };
    let _ = writeln!(out, "{sample} {value}");
}

impl Metrics {
    pub fn new(rm: Arc<ResourceManager>) -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("oasis");
        let requests = Family::<StatusLabel, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP responses by status",
            requests.clone(),
        );
        let sent_bytes = Counter::default();
        registry.register(
            "http_sent_bytes",
            "Bytes of responses sent (heads and bodies)",
            sent_bytes.clone(),
        );
        let received_bytes = Counter::default();
        registry.register(
            "http_received_bytes",
            "Bytes of request bodies received",
            received_bytes.clone(),
        );
        let active_streams = Gauge::default();
        registry.register(
            "active_streams",
            "Responses with a body being sent now",
            active_streams.clone(),
        );
        let admissions_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "admissions_refused",
            "Streams refused with 503 by admission control, by resource",
            admissions_refused.clone(),
        );
        let segments_paced_at_bitrate = Counter::default();
        registry.register(
            "segments_paced_at_bitrate",
            "Segments sent at their bitrate x 1, the bandwidth for factor_segment not being free",
            segments_paced_at_bitrate.clone(),
        );
        let viewers_held = Gauge::default();
        registry.register(
            "viewers_held",
            "Connections holding their media's bitrate as an HLS/DASH viewer, between segments too",
            viewers_held.clone(),
        );
        let limits_hit = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "limits_hit",
            "Requests or connections stopped by a limit, by limit",
            limits_hit.clone(),
        );
        let connections_opened = Counter::default();
        registry.register(
            "connections_opened",
            "Client connections accepted",
            connections_opened.clone(),
        );
        let pool_redirects = Counter::default();
        registry.register(
            "pool_redirects",
            "GETs redirected to another node of the pool",
            pool_redirects.clone(),
        );
        let pool_proxied = Counter::default();
        registry.register(
            "pool_proxied",
            "GETs streamed from another node of the pool through this one (proxy mode)",
            pool_proxied.clone(),
        );
        let pool_proxy_cut = Counter::default();
        registry.register(
            "pool_proxy_cut",
            "Proxied streams whose connection was closed mid-body because the holder failed",
            pool_proxy_cut.clone(),
        );
        let access_log_dropped = Counter::default();
        registry.register(
            "access_log_dropped",
            "Access log lines dropped because the log queue was full",
            access_log_dropped.clone(),
        );
        let config_reloads = Family::<OutcomeLabel, Counter>::default();
        for outcome in ["ok", "rejected"] {
            // Both series exist from the start, so a scrape before the first reload shows zeros.
            let _ = config_reloads.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "config_reloads",
            "Configuration reloads (SIGHUP) by outcome: ok or rejected",
            config_reloads.clone(),
        );
        let auth_refused = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "auth_refused",
            "Requests refused by the User Manager (401, 403, 410, 429), by reason",
            auth_refused.clone(),
        );
        let config_patches = Family::<OutcomeLabel, Counter>::default();
        for outcome in CONFIG_PATCH_OUTCOMES {
            let _ = config_patches.get_or_create(&OutcomeLabel { outcome });
        }
        registry.register(
            "config_patches",
            "PATCH /api/config by outcome: applied (in force), pending (written, waits for a restart), invalid, conflict (needs a restart, or no file) or failed (the file could not be written)",
            config_patches.clone(),
        );
        let file_opens = Family::<HowLabel, Counter>::default();
        let file_opens_ring = file_opens.get_or_create(&HowLabel { how: "ring" }).clone();
        let file_opens_sync = file_opens.get_or_create(&HowLabel { how: "sync" }).clone();
        registry.register(
            "object_file_opens",
            "Object files opened on an fd cache miss, by how: ring (io_uring OPENAT, off the worker) or sync",
            file_opens,
        );
        let corrupt_requests = Family::<OutcomeLabel, Counter>::default();
        registry.register(
            "corrupt_requests",
            "GETs of objects a scrub found corrupt, by outcome: refused (corrupt_policy = refuse) or served",
            corrupt_requests.clone(),
        );
        Arc::new(Metrics {
            registry,
            corrupt_requests,
            scrub: OnceLock::new(),
            audit: OnceLock::new(),
            requests,
            requests_by_status: (0..STATUS_COUNT).map(|_| OnceLock::new()).collect(),
            sent_bytes,
            received_bytes,
            active_streams,
            admissions_refused,
            segments_paced_at_bitrate,
            viewers_held,
            limits_hit,
            auth_refused,
            connections_opened,
            pool_redirects,
            pool_proxied,
            pool_proxy_cut,
            access_log_dropped,
            config_reloads,
            config_patches,
            file_opens_ring,
            file_opens_sync,
            ttfb: Latency::new(),
            response: Latency::new(),
            rm,
        })
    }

    /// Shows the audit writer's counts in the exposition from now on.
    pub fn attach_audit(&self, audit: oasis_storage::AuditLog) {
        let _ = self.audit.set(audit);
    }

    /// Shows the background scrub in the exposition from now on.
    pub fn attach_scrub(
        &self,
        stats: Arc<oasis_storage::ScrubStats>,
        store: Arc<oasis_storage::Store>,
    ) {
        let _ = self.scrub.set((stats, store));
    }

    /// A GET of a corrupt object: `outcome` is "refused" or "served".
    pub fn corrupt_request(&self, outcome: &'static str) {
        self.corrupt_requests
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Responses sent so far with a status in 100..=599: all of them, and the 5xx among them
    /// (for status datagrams).
    pub fn responses_total(&self) -> (u64, u64) {
        let mut all = 0;
        let mut server_errors = 0;
        for (i, slot) in self.requests_by_status.iter().enumerate() {
            if let Some(c) = slot.get() {
                all += c.get();
                if (500..600).contains(&(i + usize::from(STATUS_FIRST))) {
                    server_errors += c.get();
                }
            }
        }
        (all, server_errors)
    }

    pub fn status(&self, status: u16) {
        let family = || self.requests.get_or_create(&StatusLabel { status }).clone();
        match self
            .requests_by_status
            .get(usize::from(status.wrapping_sub(STATUS_FIRST)))
        {
            Some(slot) => slot.get_or_init(family).inc(),
            None => family().inc(),
        };
    }

    /// A segment paced at its bitrate x 1 (no spare bandwidth for its factor).
    pub fn segment_paced_at_bitrate(&self) {
        self.segments_paced_at_bitrate.inc();
    }

    pub fn refused(&self, reason: &str) {
        self.admissions_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// A request the User Manager refused; `reason` is the refusal's label.
    pub fn auth_refused(&self, reason: &str) {
        self.auth_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub fn limit(&self, reason: &str) {
        self.limits_hit
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    /// Counts one configuration reload; `outcome` is "ok" or "rejected".
    pub fn reload(&self, outcome: &'static str) {
        self.config_reloads
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts one configuration patch; `outcome` is one of [`CONFIG_PATCH_OUTCOMES`].
    pub fn config_patch(&self, outcome: &'static str) {
        debug_assert!(CONFIG_PATCH_OUTCOMES.contains(&outcome), "{outcome}");
        self.config_patches
            .get_or_create(&OutcomeLabel { outcome })
            .inc();
    }

    /// Counts an object file opened on a cache miss (`ring`: by the engine's OPENAT).
    pub fn file_opened(&self, ring: bool) {
        if ring {
            self.file_opens_ring.inc();
        } else {
            self.file_opens_sync.inc();
        }
    }

    pub fn record_ttfb_us(&self, us: u64) {
        self.ttfb.record(us);
    }

    pub fn record_response_us(&self, us: u64) {
        self.response.record(us);
    }

    /// The whole exposition, Prometheus text format; `workers` are the engine's, when it runs.
    pub fn render(&self, workers: &[WorkerStatus]) -> String {
        let mut out = String::new();
        let _ = encode(&mut out, &self.registry);
        // `encode` ends with "# EOF"; the extra families go before it.
        if let Some(pos) = out.rfind("# EOF") {
            out.truncate(pos);
        }
        use std::fmt::Write;
        let _ = writeln!(
            out,
            "# HELP oasis_reservation_used Units reserved with the Resource Manager, by resource."
        );
        let _ = writeln!(out, "# TYPE oasis_reservation_used gauge");
        let snapshot = self.rm.snapshot();
        for a in &snapshot {
            let _ = writeln!(
                out,
                "oasis_reservation_used{{resource=\"{}\"}} {}",
                a.resource, a.used
            );
        }
        let _ = writeln!(
            out,
            "# HELP oasis_reservation_limit Limit of each Resource Manager account."
        );
        let _ = writeln!(out, "# TYPE oasis_reservation_limit gauge");
        for a in &snapshot {
            let _ = writeln!(
                out,
                "oasis_reservation_limit{{resource=\"{}\"}} {}",
                a.resource, a.limit
            );
        }
        if let Some((scrub, store)) = self.scrub.get() {
            for (name, kind, help, value) in [
                (
                    "oasis_scrub_passes",
                    "counter",
                    "Background scrub passes completed.",
                    scrub.passes.load(Ordering::Relaxed),
                ),
                (
                    "oasis_scrub_objects",
                    "counter",
                    "Objects the background scrub has checked.",
                    scrub.objects.load(Ordering::Relaxed),
                ),
                (
                    "oasis_scrub_bytes",
                    "counter",
                    "Bytes the background scrub has read.",
                    scrub.bytes.load(Ordering::Relaxed),
                ),
                (
                    "oasis_scrub_corrupt_found",
                    "counter",
                    "Objects the scrub found with a checksum mismatch.",
                    scrub.corrupt_found.load(Ordering::Relaxed),
                ),
                (
                    "oasis_scrub_running",
                    "gauge",
                    "1 while a scrub pass runs.",
                    scrub.running.load(Ordering::Relaxed),
                ),
                (
                    "oasis_corrupt_objects",
                    "gauge",
                    "Stored objects whose bytes failed their checksum in a scrub.",
                    store.corrupt_count() as u64,
                ),
            ] {
                write_sample(&mut out, name, kind, help, value);
            }
        }
        if let Some(audit) = self.audit.get() {
            for (name, help, value) in [
                (
                    "oasis_audit_records_written",
                    "Audit records written to the catalog.",
                    audit.written(),
                ),
                (
                    "oasis_audit_records_dropped",
                    "Audit records dropped because the writer's queue was full.",
                    audit.dropped(),
                ),
                (
                    "oasis_audit_records_lost",
                    "Audit records lost to failed catalog writes.",
                    audit.write_errors(),
                ),
            ] {
                write_sample(&mut out, name, "counter", help, value);
            }
        }
        let events = self.rm.event_counts();
        let _ = writeln!(
            out,
            "# HELP oasis_resource_events Warning and critical events raised."
        );
        let _ = writeln!(out, "# TYPE oasis_resource_events counter");
        let _ = writeln!(
            out,
            "oasis_resource_events_total{{level=\"warning\"}} {}",
            events.warning
        );
        let _ = writeln!(
            out,
            "oasis_resource_events_total{{level=\"critical\"}} {}",
            events.critical
        );
        let _ = writeln!(
            out,
            "# HELP oasis_resource_critical 1 while a critical event is in force."
        );
        let _ = writeln!(out, "# TYPE oasis_resource_critical gauge");
        let _ = writeln!(
            out,
            "oasis_resource_critical {}",
            u8::from(self.rm.level() == Level::Critical)
        );
        for (name, help, lat) in [
            (
                "oasis_ttfb_seconds",
                "Time from a complete request head to its response head being sent.",
                &self.ttfb,
            ),
            (
                "oasis_response_seconds",
                "Time from a complete request head to the last byte sent.",
                &self.response,
            ),
        ] {
            let h = lat.merged();
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} summary");
            for q in [0.5, 0.9, 0.99, 0.999] {
                let _ = writeln!(
                    out,
                    "{name}{{quantile=\"{q}\"}} {}",
                    h.value_at_quantile(q) as f64 / 1e6
                );
            }
            let _ = writeln!(out, "{name}_count {}", h.len());
        }
        render_busy(&mut out, workers);
        if !workers.is_empty() {
            let name = "oasis_cold_pieces";
            let _ = writeln!(
                out,
                "# HELP {name} Cold body pieces by how they reached the socket: fetch (its 2 MiB \
                 block read into the page cache, then sendfile), join (waited for a fetch of the \
                 same block another connection had started, then sendfile) or splice (through a \
                 pipe, the file half in io_uring's threads: [engine] cold_fetches_max = 0, a \
                 failed fetch, or fetched pages evicted before they were sent)."
            );
            let _ = writeln!(out, "# TYPE {name} counter");
            let fetches: u64 = workers.iter().map(|w| w.cold_fetches).sum();
            let splices: u64 = workers.iter().map(|w| w.cold_splices).sum();
            let _ = writeln!(out, "{name}_total{{how=\"fetch\"}} {fetches}");
            let joins: u64 = workers.iter().map(|w| w.cold_joins).sum();
            let _ = writeln!(out, "{name}_total{{how=\"join\"}} {joins}");
            let _ = writeln!(out, "{name}_total{{how=\"splice\"}} {splices}");
            let name = "oasis_cold_fetch_waits";
            let _ = writeln!(
                out,
                "# HELP {name} Cold stretches that waited for one of their worker's [engine] \
                 cold_fetches_max fetches to end before theirs could start."
            );
            let _ = writeln!(out, "# TYPE {name} counter");
            let queued: u64 = workers.iter().map(|w| w.cold_queued).sum();
            let _ = writeln!(out, "{name}_total {queued}");
        }
        out.push_str("# EOF\n");
        out
    }

    /// p99 of time to first byte in microseconds (for `/api/status`).
    pub fn ttfb_us_p99(&self) -> u64 {
        self.ttfb.merged().value_at_quantile(0.99)
    }
}

/// Each worker's loop busy time as a Prometheus histogram (cumulative buckets, seconds).
fn render_busy(out: &mut String, workers: &[WorkerStatus]) {
    use std::fmt::Write;
    let name = "oasis_worker_busy_seconds";
    let _ = writeln!(
        out,
        "# HELP {name} Busy time of each engine loop iteration, by worker: the longest a new \
         request or completion can wait before its worker looks at it."
    );
    let _ = writeln!(out, "# TYPE {name} histogram");
    for (i, w) in workers.iter().enumerate() {
        let roles = w.roles;
        let mut cumulative = 0;
        for (n, count) in w.busy_counts.iter().enumerate() {
            cumulative += count;
            let le = match LOOP_BUSY_BOUNDS_US.get(n) {
                Some(us) => format!("{}", *us as f64 / 1e6),
                None => "+Inf".to_string(),
            };
            let _ = writeln!(
                out,
                "{name}_bucket{{worker=\"{i}\",roles=\"{roles}\",le=\"{le}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "{name}_sum{{worker=\"{i}\",roles=\"{roles}\"}} {}",
            w.busy_sum_us as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "{name}_count{{worker=\"{i}\",roles=\"{roles}\"}} {cumulative}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oasis_engine::resource::{AccountLimits, ResourceLimits};

    fn metrics() -> Arc<Metrics> {
        let limit = AccountLimits::new(1 << 40);
        Metrics::new(ResourceManager::new(&ResourceLimits {
            memory_bytes: limit,
            net_bps: vec![limit],
            disk_read_bps: limit,
            disk_space_bytes: limit,
            connections: limit,
            open_files: limit,
        }))
    }

    #[test]
    fn cached_status_counters_are_the_family_series() {
        let m = metrics();
        for status in [200, 200, 206, 499, 599, 100, 42, 600] {
            m.status(status);
        }
        let count = |status| m.requests.get_or_create(&StatusLabel { status }).get();
        assert_eq!(count(200), 2);
        for status in [206, 499, 599, 100, 42, 600] {
            assert_eq!(count(status), 1, "{status}");
        }
        let text = m.render(&[]);
        assert!(text.contains("oasis_http_requests_total{status=\"200\"} 2"));
        assert!(
            !text.contains("status=\"404\""),
            "only statuses sent are listed"
        );
    }
}
