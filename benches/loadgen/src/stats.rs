//! Measurements collected by each client thread and merged at the end of a run: latency
//! histograms (microseconds), counters, errors by kind and non-2xx statuses.

use hdrhistogram::Histogram;
use serde_json::{json, Value};
use std::collections::BTreeMap;

/// Highest latency a histogram records, in microseconds (larger values are clamped).
pub const LATENCY_US_MAX: u64 = 120_000_000;

pub fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, LATENCY_US_MAX, 3).expect("constant bounds are valid")
}

/// Histogram for rates in kbit/s (up to 100 Gbit/s).
pub fn rate_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000, 3).expect("constant bounds are valid")
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
    /// Paced mode: each stream's average delivered rate over its life, kbit/s.
    pub stream_rate_kbps: Histogram<u64>,
    /// Paced mode: every evaluated window's rate, kbit/s.
    pub window_rate_kbps: Histogram<u64>,
    pub stalls: BTreeMap<&'static str, u64>,
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
            stream_rate_kbps: rate_histogram(),
            window_rate_kbps: rate_histogram(),
            stalls: BTreeMap::new(),
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
        self.stream_rate_kbps
            .add(&other.stream_rate_kbps)
            .expect("same bounds");
        self.window_rate_kbps
            .add(&other.window_rate_kbps)
            .expect("same bounds");
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
        for (k, v) in &other.stalls {
            *self.stalls.entry(k).or_default() += v;
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
