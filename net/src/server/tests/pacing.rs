//! Pacing, measured on the fake clock: after the burst, a stream is sent at its object's
//! bitrate times the factor for its kind.

use std::time::Duration;

use super::driver::Env;
use super::pattern;

const SEC: Duration = Duration::from_secs(1);

/// Streams `name` (uploaded with `bitrate_bps`) and checks the burst and the paced rate.
fn check_rate(env: &Env, name: &str, bitrate_bps: u64, factor: f64, burst_secs: f64) {
    let size = 12 << 20;
    let body = pattern(size);
    env.put(name, &format!("?bitrate={bitrate_bps}"), &body);
    let mut c = env.connect();
    c.send(&format!("GET /media/{name} HTTP/1.1\r\nHost: t\r\n\r\n"));
    let rate = bitrate_bps as f64 / 8.0 * factor;
    let burst = bitrate_bps as f64 / 8.0 * burst_secs;
    let at_start = c.file_bytes_sent as f64;
    assert!(
        at_start <= burst && at_start > burst - 65_536.0,
        "burst: {at_start} bytes, expected {burst}"
    );
    c.advance(SEC);
    let from = c.file_bytes_sent;
    let secs = 4;
    c.advance(SEC * secs);
    let measured = (c.file_bytes_sent - from) as f64 / secs as f64;
    assert!(
        (measured / rate - 1.0).abs() < 0.02,
        "{name}: {measured:.0} B/s, expected {rate:.0} (bitrate x {factor})"
    );
    assert!((c.file_bytes_sent as usize) < size, "still streaming");
    // The rest, and every byte is the object's.
    c.advance(SEC * 60);
    assert_eq!(c.response().body, body);
}

#[test]
fn a_progressive_stream_is_paced_at_bitrate_times_its_factor() {
    let env = Env::with(|s| {
        s.http.pacing.initial_burst_secs = 1.0;
        s.http.pacing.lead_secs = 0.0;
    });
    check_rate(&env, "movie.mp4", 8_000_000, 1.5, 1.0);
}

#[test]
fn a_segment_is_paced_at_the_segment_factor() {
    let env = Env::with(|s| {
        s.http.pacing.initial_burst_secs = 0.5;
        s.http.pacing.lead_secs = 0.0;
    });
    check_rate(&env, "hls/seg-1.ts", 4_000_000, 4.0, 0.5);
}

#[test]
fn a_stream_runs_its_lead_ahead_of_its_schedule() {
    // 8 Mbit/s x 1.5 = 1.5 MB/s: a 1 s burst (1 MB) and a 1 s lead (1.5 MB) go at once.
    let env = Env::with(|s| {
        s.http.pacing.initial_burst_secs = 1.0;
        s.http.pacing.lead_secs = 1.0;
    });
    let body = pattern(12 << 20);
    env.put("lead.mp4", "?bitrate=8000000", &body);
    let mut c = env.connect();
    c.send("GET /media/lead.mp4 HTTP/1.1\r\nHost: t\r\n\r\n");
    let at_start = c.file_bytes_sent;
    assert!(
        at_start <= 2_500_000 && at_start > 2_500_000 - 65_536,
        "burst and lead: {at_start} bytes"
    );
    c.advance(SEC * 2);
    let sent = c.file_bytes_sent;
    assert!(
        sent <= 5_500_000 && sent > 5_500_000 - 400_000,
        "two seconds later, a lead ahead: {sent} bytes"
    );
    c.advance(SEC * 60);
    assert_eq!(c.response().body, body);
}

#[test]
fn unknown_bitrates_and_disabled_pacing_send_at_once() {
    let env = Env::new();
    let body = pattern(4 << 20);
    env.put("default.bin", "", &body);
    let mut c = env.connect();
    c.send("GET /media/default.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().body, body, "a default bitrate is not paced");

    let env = Env::with(|s| s.http.pacing.enabled = false);
    env.put("movie.mp4", "?bitrate=100000", &body);
    let mut c = env.connect();
    c.send("GET /media/movie.mp4 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().body, body);
}
