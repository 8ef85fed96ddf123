//! `paced`: viewers added step by step that play at their bitrate, with the server's CPU and
//! RSS sampled per step.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use serde_json::{json, Value};

use crate::client::PacedCfg;
use crate::player::{MediaPlan, PlayerCfg};
use crate::{
    base_json, merge, plan, playlist, run_clients, sys, PacedArgs, CONNECTIONS_MAX, DURATION_S_MAX,
};

/// One sample of the server's processes while a paced run goes on.
#[derive(Debug, Clone, Copy)]
struct ServerSample {
    t_s: f64,
    cpu_s: f64,
    rss_kib: u64,
}

fn sample_server(pids: &[u32], start: Instant) -> ServerSample {
    ServerSample {
        t_s: start.elapsed().as_secs_f64(),
        cpu_s: pids.iter().filter_map(|&p| sys::cpu_s(p)).sum(),
        rss_kib: pids.iter().filter_map(|&p| sys::rss_kib(p)).sum(),
    }
}

/// Samples the server at the start, every half step until `done`, and at the end; bounded by
/// the run's longest duration.
fn sampler(
    pids: &[u32],
    start: Instant,
    half_step: Duration,
    done: &std::sync::atomic::AtomicBool,
) -> Vec<ServerSample> {
    let mut out = vec![sample_server(pids, start)];
    let mut k = 1u32;
    while !done.load(std::sync::atomic::Ordering::Relaxed)
        && start.elapsed().as_secs_f64() < DURATION_S_MAX
    {
        let due = start + half_step * k;
        let now = Instant::now();
        if now >= due {
            out.push(sample_server(pids, start));
            k += 1;
        } else {
            std::thread::sleep((due - now).min(Duration::from_millis(50)));
        }
    }
    // The end of the run closes its last step.
    out.push(sample_server(pids, start));
    out
}

/// The server's CPU per viewer and RSS per viewer over the second half of step `k` (its
/// first half holds the new viewers' start-up bursts).
fn per_viewer_at_step(samples: &[ServerSample], k: usize, viewers: usize) -> Value {
    let (Some(base), Some(mid), Some(end)) = (
        samples.first(),
        samples.get(2 * k + 1),
        samples.get(2 * k + 2),
    ) else {
        return json!(null);
    };
    let secs = (end.t_s - mid.t_s).max(1e-3);
    let v = viewers.max(1) as f64;
    json!({
        "step": k,
        "viewers": viewers,
        "from_s": mid.t_s,
        "to_s": end.t_s,
        "server_cpu_cores": (end.cpu_s - mid.cpu_s) / secs,
        "server_cpu_ms_per_viewer_s": (end.cpu_s - mid.cpu_s) / secs / v * 1000.0,
        "server_rss_kib_before_run": base.rss_kib,
        "server_rss_kib": end.rss_kib,
        "server_rss_bytes_per_viewer": end.rss_kib.saturating_sub(base.rss_kib) as f64 * 1024.0 / v,
    })
}

pub(crate) fn run_paced(a: &PacedArgs) -> Result<Value> {
    ensure!(a.paced_bps >= 1000, "--paced-bps must be at least 1000");
    ensure!(
        a.buffer_s > 0.0 && a.buffer_s <= 600.0 && a.start_s > 0.0 && a.start_s <= a.buffer_s,
        "need 0 < --start-s <= --buffer-s <= 600"
    );
    ensure!(
        a.start_timeout_s > 0.0 && a.start_timeout_s <= 600.0,
        "--start-timeout-s must be in (0, 600]"
    );
    ensure!(
        a.step_s >= a.buffer_s,
        "--step-s must be at least --buffer-s (a step must outlast a full buffer)"
    );
    ensure!(
        a.start_streams >= 1
            && a.max_streams <= CONNECTIONS_MAX
            && a.start_streams <= a.max_streams,
        "need 1 <= --start-streams <= --max-streams <= {CONNECTIONS_MAX}"
    );
    let mut common = a.common.clone();
    if common.duration_s.is_none() {
        let steps = (a.max_streams - a.start_streams).div_ceil(a.step_streams.max(1)) + 1;
        common.duration_s = Some((steps as f64 * a.step_s).min(DURATION_S_MAX));
    }
    let media = playlist::resolve(&mut common)?;
    let mut p = plan(&common, a.max_streams, a.max_streams)?;
    p.target.media = media.clone();
    let cfg = PacedCfg {
        player: PlayerCfg {
            bitrate_bps: a.paced_bps,
            buffer_s: a.buffer_s,
            start_s: a.start_s,
        },
        start_timeout: Duration::from_secs_f64(a.start_timeout_s),
        stop_on_stall: !a.count_stalls,
        start_streams: a.start_streams,
        step_streams: a.step_streams,
        step: Duration::from_secs_f64(a.step_s),
        max_streams: a.max_streams,
    };
    let done = std::sync::atomic::AtomicBool::new(false);
    let start = Instant::now();
    let (clients, samples) = std::thread::scope(|s| {
        let sampling = s.spawn(|| {
            sampler(
                &a.server_pids,
                start,
                Duration::from_secs_f64(a.step_s / 2.0),
                &done,
            )
        });
        let clients = run_clients(&p, 0, a.common.seed, Some(cfg));
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        (clients, sampling.join().expect("sampler thread panicked"))
    });
    let (stats, elapsed, shared) = clients?;
    let stall = *shared.stall.lock().expect("stall lock poisoned");
    // Sustained = viewers of the last step that ran in full before the evidence of a stall.
    let steps_done = match stall {
        Some(ev) if !a.count_stalls => (ev.evidence_from.as_secs_f64() / a.step_s).floor() as usize,
        _ => (elapsed / a.step_s + 1e-6).floor() as usize,
    };
    let sustained = match steps_done {
        0 => 0,
        k => cfg.streams_at_step(k - 1),
    };
    let at_sustained = match steps_done {
        0 => json!(null),
        k => per_viewer_at_step(&samples, k - 1, sustained),
    };
    let mut out = base_json("paced", &common, &p);
    merge(
        &mut out,
        json!({
            "paced_bps": a.paced_bps,
            "media": match &media {
                MediaPlan::Hls { segment_s } => json!({ "kind": "hls", "segment_s": segment_s }),
                MediaPlan::Progressive => json!({ "kind": "progressive" }),
            },
            "buffer_s": a.buffer_s,
            "start_s": a.start_s,
            "start_timeout_s": a.start_timeout_s,
            "count_stalls": a.count_stalls,
            "start_streams": a.start_streams,
            "step_streams": a.step_streams,
            "step_s": a.step_s,
            "max_streams": a.max_streams,
            "streams_sustained": sustained,
            "stalled": stall.is_some(),
            "stall_at_s": stall.map(|s| s.at.as_secs_f64()),
            "streams_at_stall": stall.map(|s| s.streams_running),
            "capped_without_stall": stall.is_none() && !a.count_stalls,
            "stall_events": stats.stall_events,
            "viewers": stats.viewers.to_json(),
            "at_sustained": at_sustained,
            "server_samples": samples.iter().map(|x| json!([x.t_s, x.cpu_s, x.rss_kib])).collect::<Vec<_>>(),
            "server_rss_kib_max": samples.iter().map(|x| x.rss_kib).max(),
        }),
    );
    merge(&mut out, stats.to_json(elapsed));
    Ok(out)
}
