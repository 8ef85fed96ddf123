//! Measurements collected by each client thread and merged at the end of a run: latency
//! histograms (microseconds), counters, errors by kind and non-2xx statuses, and in paced mode
//! the viewers' outcomes (started, admitted, refused, stalled).

use crate::player::Player;
use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Highest latency a histogram records, in microseconds (larger values are clamped).
pub const LATENCY_US_MAX: u64 = 120_000_000;

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant bounds are valid")
}

/// Histogram for small counts (stalls per viewer).
fn count_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 1_000_000, 3).expect("constant bounds are valid")
}

/// Paced mode: what became of the viewers, one `add` per viewer at the end of a run.
#[derive(Debug)]
pub struct ViewerStats {
    pub viewers: u64,
    /// Viewers whose playback started.
    pub started: u64,
    /// Viewers that got at least one media response head with a 2xx status.
    pub admitted: u64,
    /// Viewers that were refused and never got media.
    pub refused_never_admitted: u64,
    /// Viewers that got media and were also refused at some point (a later segment).
    pub refused_after_admission: u64,
    /// Non-2xx responses to viewers, and how many carried `Retry-After`.
    pub refusals: u64,
    pub refusals_with_retry_after: u64,
    /// Viewers with at least one stall, and among them the admitted ones.
    pub stalled: u64,
    pub admitted_stalled: u64,
    pub stalls_total: u64,
    /// Stalls of each viewer that stalled.
    pub stalls_per_stalled_viewer: Histogram<u64>,
    /// From joining to the start of playback, microseconds.
    pub startup_us: Histogram<u64>,
}

impl Default for ViewerStats {
    fn default() -> Self {
        Self {
            viewers: 0,
            started: 0,
            admitted: 0,
            refused_never_admitted: 0,
            refused_after_admission: 0,
            refusals: 0,
            refusals_with_retry_after: 0,
            stalled: 0,
            admitted_stalled: 0,
            stalls_total: 0,
            stalls_per_stalled_viewer: count_histogram(),
            startup_us: latency_histogram(),
        }
    }
}

impl ViewerStats {
    /// Counts one viewer that joined at `joined`.
    pub fn add(&mut self, p: &Player, joined: std::time::Instant) {
        let admitted = p.admitted;
        self.viewers += 1;
        self.admitted += u64::from(admitted);
        self.refused_never_admitted += u64::from(!admitted && p.refusals > 0);
        self.refused_after_admission += u64::from(admitted && p.refusals > 0);
        self.refusals += u64::from(p.refusals);
        self.refusals_with_retry_after += u64::from(p.refusals_with_retry_after);
        if let Some(t) = p.started_at {
            self.started += 1;
            record(
                &mut self.startup_us,
                t.duration_since(joined).as_micros() as u64,
            );
        }
        if p.stalls > 0 {
            self.stalled += 1;
            self.admitted_stalled += u64::from(admitted);
            self.stalls_total += u64::from(p.stalls);
            record(&mut self.stalls_per_stalled_viewer, u64::from(p.stalls));
        }
    }

    fn merge(&mut self, o: &ViewerStats) {
        self.viewers += o.viewers;
        self.started += o.started;
        self.admitted += o.admitted;
        self.refused_never_admitted += o.refused_never_admitted;
        self.refused_after_admission += o.refused_after_admission;
        self.refusals += o.refusals;
        self.refusals_with_retry_after += o.refusals_with_retry_after;
        self.stalled += o.stalled;
        self.admitted_stalled += o.admitted_stalled;
        self.stalls_total += o.stalls_total;
        self.stalls_per_stalled_viewer
            .add(&o.stalls_per_stalled_viewer)
            .expect("same bounds");
        self.startup_us.add(&o.startup_us).expect("same bounds");
    }

    pub fn to_json(&self) -> Value {
        json!({
            "viewers": self.viewers,
            "started": self.started,
            "admitted": self.admitted,
            "refused_never_admitted": self.refused_never_admitted,
            "refused_after_admission": self.refused_after_admission,
            "refusals": self.refusals,
            "refusals_with_retry_after": self.refusals_with_retry_after,
            "stalled": self.stalled,
            "admitted_stalled": self.admitted_stalled,
            "stalls_total": self.stalls_total,
            "stalls_per_stalled_viewer": summary(&self.stalls_per_stalled_viewer),
            "startup_us": summary(&self.startup_us),
        })
    }
}

pub fn record(h: &mut Histogram<u64>, value: u64) {
    h.saturating_record(value.clamp(h.low(), h.high()));
}

#[derive(Debug)]
pub struct Stats {
    pub ttfb_us: Histogram<u64>,
    pub total_us: Histogram<u64>,
    pub requests_ok: u64,
    pub responses_non2xx: u64,
    pub bytes_received: u64,
    pub body_bytes: u64,
    pub connects: u64,
    pub errors: BTreeMap<&'static str, u64>,
    pub statuses_non2xx: BTreeMap<u16, u64>,
    /// Requests cut off by the end of a duration-bounded run (neither success nor error).
    pub abandoned_at_end: u64,
    /// Paced mode: the viewers' outcomes.
    pub viewers: ViewerStats,
    /// Paced mode: stalls seen while the run went on.
    pub stall_events: u64,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            ttfb_us: latency_histogram(),
            total_us: latency_histogram(),
            requests_ok: 0,
            responses_non2xx: 0,
            bytes_received: 0,
            body_bytes: 0,
            connects: 0,
            errors: BTreeMap::new(),
            statuses_non2xx: BTreeMap::new(),
            abandoned_at_end: 0,
            viewers: ViewerStats::default(),
            stall_events: 0,
        }
    }
}

impl Stats {
    pub fn error(&mut self, kind: &'static str) {
        *self.errors.entry(kind).or_default() += 1;
    }

    pub fn errors_total(&self) -> u64 {
        self.errors.values().sum()
    }

    pub fn merge(&mut self, other: &Stats) {
        self.ttfb_us.add(&other.ttfb_us).expect("same bounds");
        self.total_us.add(&other.total_us).expect("same bounds");
        self.viewers.merge(&other.viewers);
        self.stall_events += other.stall_events;
        self.requests_ok += other.requests_ok;
        self.responses_non2xx += other.responses_non2xx;
        self.bytes_received += other.bytes_received;
        self.body_bytes += other.body_bytes;
        self.connects += other.connects;
        self.abandoned_at_end += other.abandoned_at_end;
        for (k, v) in &other.errors {
            *self.errors.entry(k).or_default() += v;
        }
        for (k, v) in &other.statuses_non2xx {
            *self.statuses_non2xx.entry(*k).or_default() += v;
        }
    }

    /// The common part of every mode's JSON report.
    pub fn to_json(&self, elapsed_s: f64) -> Value {
        let elapsed_s = elapsed_s.max(1e-9);
        json!({
            "elapsed_s": elapsed_s,
            "requests_ok": self.requests_ok,
            "responses_non2xx": self.responses_non2xx,
            "statuses_non2xx": self.statuses_non2xx.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "errors_total": self.errors_total(),
            "errors": self.errors,
            "abandoned_at_end": self.abandoned_at_end,
            "connects": self.connects,
            "bytes_received": self.bytes_received,
            "body_bytes": self.body_bytes,
            "requests_per_s": self.requests_ok as f64 / elapsed_s,
            "bytes_per_s": self.bytes_received as f64 / elapsed_s,
            "gbit_per_s": self.bytes_received as f64 * 8.0 / elapsed_s / 1e9,
            "ttfb_us": summary(&self.ttfb_us),
            "total_us": summary(&self.total_us),
        })
    }
}

pub fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return json!({ "count": 0 });
    }
    json!({
        "count": h.len(),
        "min": h.min(),
        "mean": h.mean(),
        "p50": h.value_at_quantile(0.50),
        "p90": h.value_at_quantile(0.90),
        "p99": h.value_at_quantile(0.99),
        "p999": h.value_at_quantile(0.999),
        "max": h.max(),
    })
}
