//! Admission of viewers, driven in memory: a keep-alive connection admitted for an HLS package
//! keeps its bandwidth at bitrate x 1 between segments, so its next segment is never refused,
//! while new viewers past the budget get 503 with `Retry-After`, across playlist reloads and
//! shrunk on a switch to a lower variant; and a descriptor shortage refuses a new connection's
//! first stream, not requests on connections served before, nor `/healthz`.

use std::time::Duration;

use oasis_engine::resource::{AccountLimits, External, Level, Resource};

use super::driver::{put_head, Conn, Env};
use super::pattern;

const BITRATE: u64 = 1_000_000;
/// Four seconds of media at `BITRATE`.
const SEGMENT_BYTES: usize = 500_000;
const SEGMENTS: usize = 4;

/// A service whose listen address has bandwidth for `viewers` streams at `BITRATE` x 1, with
/// an HLS package of `SEGMENTS` segments, paced after a half-second burst.
fn package(viewers: u64) -> Env {
    let env = Env::with(|s| {
        s.http.pacing.initial_burst_secs = 0.5;
        s.http.pacing.lead_secs = 0.0;
        s.limits.net_bps = vec![AccountLimits::new(viewers * BITRATE)];
    });
    for i in 0..SEGMENTS {
        let body = pattern(SEGMENT_BYTES + i);
        env.put(
            &format!("hls/seg-{i}.ts"),
            &format!("?bitrate={BITRATE}"),
            &body,
        );
    }
    env
}

fn get_segment(c: &mut Conn, i: usize) {
    c.send(&format!(
        "GET /media/hls/seg-{i}.ts HTTP/1.1\r\nHost: t\r\n\r\n"
    ));
}

/// The answer to a new viewer: refused with 503 and `Retry-After`.
fn assert_refused(env: &Env, i: usize) {
    let mut c = env.connect();
    get_segment(&mut c, i);
    let r = c.response();
    assert_eq!(r.status, 503, "a viewer past the budget is refused");
    assert_eq!(r.header("retry-after"), Some("2"));
}

#[test]
fn admitted_viewers_keep_their_segments_and_new_ones_are_refused() {
    let n = 4;
    let env = package(n);
    let mut viewers: Vec<Conn> = (0..n).map(|_| env.connect()).collect();
    for round in 0..2 * SEGMENTS {
        let segment = round % SEGMENTS;
        // Every viewer's segment in flight at once, and a newcomer each time.
        for v in &mut viewers {
            get_segment(v, segment);
        }
        assert_refused(&env, segment);
        for v in &mut viewers {
            // Paced at 1x: the burst and the rest of the 4 s, with room to spare.
            v.advance(Duration::from_secs(6));
            let r = v.response();
            assert_eq!(
                r.status, 200,
                "round {round}: an admitted viewer is refused"
            );
            assert_eq!(r.body, pattern(SEGMENT_BYTES + segment));
        }
        // Between segments the viewers hold their bandwidth: still no room for a newcomer.
        assert_refused(&env, segment);
    }
    assert_eq!(env.rm.used(Resource::NetBps(0)), n * BITRATE);
    let metrics = env.metrics.render(&[]);
    let paced = (n as usize * 2 * SEGMENTS).to_string();
    assert!(
        metrics.contains(&format!("oasis_segments_paced_at_bitrate_total {paced}")),
        "every segment went at 1x, the budget being full:\n{metrics}"
    );
    assert!(
        metrics.contains(&format!("oasis_viewers_held {n}")),
        "each admitted viewer is one hold:\n{metrics}"
    );
    // A viewer that leaves gives its place to the next.
    viewers.pop().expect("a viewer").peer_close();
    assert_viewers_held(&env, n - 1);
    let mut next = env.connect();
    get_segment(&mut next, 0);
    next.advance(Duration::from_secs(6));
    assert_eq!(next.response().status, 200);
    assert_viewers_held(&env, n);
}

fn assert_viewers_held(env: &Env, n: u64) {
    let metrics = env.metrics.render(&[]);
    assert!(
        metrics.contains(&format!("oasis_viewers_held {n}\n")),
        "want {n} viewers held:\n{metrics}"
    );
}

#[test]
fn a_viewer_alone_is_paced_at_the_factor_and_its_hold_ends_after_the_grace() {
    // Budget for eight at 1x: one viewer's 4x stays below the warning level (80 %).
    let env = package(8);
    let mut v = env.connect();
    get_segment(&mut v, 0);
    // 0.5 s burst, then 4 Mbit/s: the whole 4 s segment within 1.5 s.
    v.advance(Duration::from_millis(1500));
    assert_eq!(v.response().status, 200);
    assert_eq!(
        env.rm.used(Resource::NetBps(0)),
        BITRATE,
        "the segment's speed-up went back; the viewer holds 1x"
    );
    assert!(!env
        .metrics
        .render(&[])
        .contains("oasis_segments_paced_at_bitrate_total 1"));
    // No segment within three times its duration from its start (12 s; other requests do not
    // extend it): the hold goes back, the connection stays open.
    v.advance(Duration::from_secs(5));
    v.send("GET /media/hls/none.ts HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(v.response().status, 404);
    v.advance(Duration::from_secs(6));
    assert_eq!(env.rm.used(Resource::NetBps(0)), 0);
    assert_viewers_held(&env, 0);
    assert!(!v.closed);
    get_segment(&mut v, 1);
    v.advance(Duration::from_secs(2));
    assert_eq!(v.response().status, 200);
}

#[test]
fn a_playlist_reload_between_segments_keeps_the_hold() {
    // Budget for one viewer: its hold fills the account, which is critical from then on.
    let env = package(1);
    let playlist =
        "#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4.0,\nseg-0.ts\n#EXTINF:4.0,\nseg-1.ts\n";
    env.put("hls/index.m3u8", "", playlist.as_bytes());
    let mut v = env.connect();
    get_segment(&mut v, 0);
    v.advance(Duration::from_secs(6));
    assert_eq!(v.response().status, 200);
    assert!(env.rm.is_critical_for(&[Resource::NetBps(0)], &[]));
    // A live player reloads the playlist on the same connection: it reserves nothing and
    // leaves the hold in place, so the next segment is still the viewer's.
    v.send("GET /media/hls/index.m3u8 HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = v.response();
    assert_eq!((r.status, r.body.as_slice()), (200, playlist.as_bytes()));
    assert_eq!(env.rm.used(Resource::NetBps(0)), BITRATE);
    get_segment(&mut v, 1);
    v.advance(Duration::from_secs(6));
    assert_eq!(
        v.response().status,
        200,
        "the admitted viewer's next segment"
    );
    assert_refused(&env, 1);
}

#[test]
fn a_switch_to_a_lower_variant_gives_back_what_the_higher_one_held() {
    let env = package(4);
    let low = pattern(250_000);
    env.put("hls/low-0.ts", &format!("?bitrate={}", BITRATE / 2), &low);
    let mut v = env.connect();
    get_segment(&mut v, 0);
    v.advance(Duration::from_secs(6));
    assert_eq!(v.response().status, 200);
    assert_eq!(env.rm.used(Resource::NetBps(0)), BITRATE);
    v.send("GET /media/hls/low-0.ts HTTP/1.1\r\nHost: t\r\n\r\n");
    v.advance(Duration::from_secs(6));
    let r = v.response();
    assert_eq!((r.status, r.body == low), (200, true));
    assert_eq!(env.rm.used(Resource::NetBps(0)), BITRATE / 2);
    assert_eq!(env.rm.used(Resource::DiskReadBps), BITRATE / 2);
}

#[test]
fn a_descriptor_shortage_does_not_refuse_held_connections() {
    let env = Env::new();
    let a = pattern(300_000);
    let b = pattern(200_000);
    env.put("a.bin", "", &a);
    env.put("b.bin", "", &b);
    let mut c = env.connect();
    c.send("GET /media/a.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 200);

    env.rm
        .set_external(External::FileDescriptors, Level::Critical);
    assert!(env.rm.is_critical());
    // The next GET on the held connection, from the cached file and from a new open.
    c.send("GET /media/a.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body == a), (200, true));
    c.send("GET /media/b.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!((r.status, r.body == b), (200, true));
    // An upload needs a new descriptor of its own (its temp file): refused.
    c.send_bytes(&put_head("c.bin", "", 10, &[]));
    c.send_bytes(&[0; 10]);
    assert_eq!(c.response().status, 503);
    // A new connection's first stream is refused; its health check is answered (an agent or a
    // load balancer must not take the shortage for a dead server).
    let mut fresh = env.connect();
    fresh.send("GET /media/a.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = fresh.response();
    assert_eq!((r.status, r.header("retry-after")), (503, Some("2")));
    let mut probe = env.connect();
    probe.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(probe.response().status, 200);

    env.rm
        .set_external(External::FileDescriptors, Level::Normal);
    env.put("c.bin", "", &[0; 10]);
}

#[test]
fn open_files_at_critical_refuse_only_what_opens_a_file() {
    let env = Env::with(|s| s.limits.open_files = AccountLimits::new(2));
    let a = pattern(100_000);
    env.put("a.bin", "", &a);
    env.put("b.bin", "", &a);
    let mut c = env.connect();
    c.send("GET /media/a.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 200);
    // A second cached file: the account (2) is at its critical level.
    c.send("GET /media/b.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert!(env.rm.is_critical_for(&[Resource::OpenFiles], &[]));
    c.send("GET /media/a.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 200, "a cached file opens nothing");
}
