//! Reads: keep-alive and pipelining, every range form, conditional requests, HEAD, admission.

use oasis_engine::resource::{AccountLimits, Resource};

use super::driver::{Env, Response};
use super::pattern;

const SIZE: usize = 1000;

fn env_with_object() -> (Env, Vec<u8>) {
    let env = Env::new();
    let body = pattern(SIZE);
    env.put("clip.bin", "", &body);
    (env, body)
}

fn get(env: &Env, extra: &str) -> Response {
    let mut c = env.connect();
    c.send(&format!(
        "GET /media/clip.bin HTTP/1.1\r\nHost: t\r\n{extra}\r\n"
    ));
    c.response()
}

#[test]
fn pipelined_requests_are_answered_in_order_on_one_connection() {
    let (env, body) = env_with_object();
    let mut c = env.connect();
    c.send(
        "GET /media/clip.bin HTTP/1.1\r\nHost: t\r\n\r\n\
         HEAD /media/clip.bin HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    let first = c.response();
    assert_eq!(
        (first.status, first.body.as_slice()),
        (200, body.as_slice())
    );
    let head = c.head_response();
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1000"));
    let last = c.response();
    assert_eq!((last.status, last.text().as_str()), (200, "ok\n"));
    assert_eq!(last.header("connection"), Some("close"));
    assert!(c.closed, "Connection: close ends the connection");
    assert!(c.out.is_empty(), "HEAD sent no body");
}

#[test]
fn keep_alive_serves_requests_one_after_another() {
    let (env, body) = env_with_object();
    let mut c = env.connect();
    for _ in 0..3 {
        c.send("GET /media/clip.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        assert_eq!(c.response().body, body);
        assert!(!c.closed);
    }
    // A request split across sends is answered once it is whole.
    c.send("GET /healthz HTTP/1.1\r\nHo");
    assert!(c.out.is_empty());
    c.send("st: t\r\n\r\n");
    assert_eq!(c.response().status, 200);
}

#[test]
fn http10_closes_and_the_request_cap_ends_keep_alive() {
    let (env, _) = env_with_object();
    let mut c = env.connect();
    c.send("GET /healthz HTTP/1.0\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert!(c.closed);

    let env = Env::with(|s| s.http.keepalive_requests_max = 2);
    let mut c = env.connect();
    c.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_ne!(c.response().header("connection"), Some("close"));
    c.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().header("connection"), Some("close"));
    assert!(c.closed);
}

#[test]
fn partial_sends_resume_where_they_stopped() {
    let env = Env::new();
    let body = pattern(100_000);
    env.put("big.bin", "", &body);
    let mut c = env.connect();
    c.send_bytes_max = 1500;
    c.send("GET /media/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().body, body);
}

#[test]
fn single_suffix_and_open_ended_ranges() {
    let (env, body) = env_with_object();
    for (range, start, end) in [
        ("bytes=10-19", 10, 19),
        ("bytes=-100", 900, 999),
        ("bytes=990-", 990, 999),
        ("bytes=995-5000", 995, 999),
    ] {
        let r = get(&env, &format!("Range: {range}\r\n"));
        assert_eq!(r.status, 206, "{range}");
        assert_eq!(
            r.header("content-range"),
            Some(format!("bytes {start}-{end}/1000").as_str())
        );
        assert_eq!(r.body, &body[start..=end], "{range}");
    }
}

#[test]
fn multiple_ranges_are_multipart_byteranges() {
    let (env, body) = env_with_object();
    let r = get(&env, "Range: bytes=0-9,500-504,-3\r\n");
    assert_eq!(r.status, 206);
    let ct = r.header("content-type").expect("content type");
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart");
    let mut rest = r.body.as_slice();
    for (start, end) in [(0, 9), (500, 504), (997, 999)] {
        let marker = format!("Content-Range: bytes {start}-{end}/1000\r\n\r\n");
        let at = find(rest, marker.as_bytes()).expect("part header");
        rest = &rest[at + marker.len()..];
        assert_eq!(&rest[..end - start + 1], &body[start..=end]);
    }
    assert!(r.body.ends_with(format!("--{boundary}--\r\n").as_bytes()));
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn an_unsatisfiable_range_is_416_with_the_size() {
    let (env, _) = env_with_object();
    let r = get(&env, "Range: bytes=1000-\r\n");
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */1000"));
    // A range header that is not bytes is ignored.
    assert_eq!(get(&env, "Range: items=1-2\r\n").status, 200);
}

#[test]
fn preconditions_answer_304_and_412() {
    let (env, body) = env_with_object();
    let full = get(&env, "");
    let etag = full.header("etag").expect("etag").to_string();
    let modified = full.header("last-modified").expect("date").to_string();

    let r = get(&env, &format!("If-None-Match: {etag}\r\n"));
    assert_eq!(r.status, 304);
    assert_eq!(r.header("etag"), Some(etag.as_str()));
    assert!(r.body.is_empty());
    assert_eq!(
        get(&env, &format!("If-Modified-Since: {modified}\r\n")).status,
        304
    );
    assert_eq!(get(&env, "If-None-Match: \"other\"\r\n").body, body);

    assert_eq!(get(&env, "If-Match: \"other\"\r\n").status, 412);
    assert_eq!(get(&env, &format!("If-Match: {etag}\r\n")).status, 200);
    let before = "If-Unmodified-Since: Thu, 01 Jan 1970 00:00:00 GMT\r\n";
    assert_eq!(get(&env, before).status, 412);
}

#[test]
fn if_range_serves_the_range_only_while_the_object_is_unchanged() {
    let (env, body) = env_with_object();
    let etag = get(&env, "").header("etag").expect("etag").to_string();
    let r = get(&env, &format!("Range: bytes=0-9\r\nIf-Range: {etag}\r\n"));
    assert_eq!((r.status, r.body.as_slice()), (206, &body[..10]));
    let r = get(&env, "Range: bytes=0-9\r\nIf-Range: \"stale\"\r\n");
    assert_eq!((r.status, r.body.as_slice()), (200, body.as_slice()));
}

#[test]
fn head_sends_the_headers_of_get_without_a_body() {
    let (env, _) = env_with_object();
    let mut c = env.connect();
    c.send("HEAD /media/clip.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.head_response();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("1000"));
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.header("etag").is_some());
    assert!(c.out.is_empty());
    c.send("HEAD /media/missing.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.head_response().status, 404);
    assert!(c.out.is_empty(), "a HEAD error has no body either");
}

#[test]
fn a_stream_over_the_bandwidth_budget_gets_503_with_retry_after() {
    let env = Env::with(|s| s.limits.net_bps = vec![AccountLimits::new(1000)]);
    env.put("clip.bin", "", &pattern(SIZE));
    let mut c = env.connect();
    c.send("GET /media/clip.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert!(!c.closed, "a refused read keeps its connection");
    // HEAD streams nothing and reserves nothing.
    c.send("HEAD /media/clip.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.head_response().status, 200);
    assert!(env.metrics.render(&[]).contains("net_bps[0]"));
}

#[test]
fn a_full_job_queue_is_503() {
    let env = Env::new();
    let mut c = env.connect();
    c.reject_jobs = true;
    c.send_bytes(&super::driver::put_head("x.bin", "", 3, &[]));
    c.send("abc");
    let r = c.response();
    assert_eq!(r.status, 503);
    assert_eq!(r.header("retry-after"), Some("2"));
    assert!(c.closed);
    assert!(env.store.lookup("x.bin").is_none());
}

#[test]
fn api_routes_need_the_token_and_answer_json() {
    let (env, _) = env_with_object();
    let mut c = env.connect();
    c.send("GET /api/objects HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 401);
    let auth = format!("Authorization: Bearer {}\r\n", super::driver::TOKEN);
    c.send(&format!(
        "GET /api/objects?prefix=cl HTTP/1.1\r\nHost: t\r\n{auth}\r\n"
    ));
    let r = c.response();
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["count"], 1);
    assert_eq!(v["objects"][0]["name"], "clip.bin");
    assert_eq!(v["objects"][0]["size_bytes"], 1000);
    c.send(&format!(
        "GET /api/status HTTP/1.1\r\nHost: t\r\n{auth}\r\n"
    ));
    let v: serde_json::Value = serde_json::from_slice(&c.response().body).expect("json");
    assert_eq!(v["objects"], 1);
    c.send("POST /metrics HTTP/1.1\r\nHost: t\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(c.response().status, 405);
    c.send(&format!(
        "DELETE /api/objects HTTP/1.1\r\nHost: t\r\n{auth}\r\n"
    ));
    assert_eq!(c.response().status, 400, "a prefix is required");
    c.send(&format!(
        "DELETE /api/objects?prefix=cl HTTP/1.1\r\nHost: t\r\n{auth}\r\n"
    ));
    let v: serde_json::Value = serde_json::from_slice(&c.response().body).expect("json");
    assert_eq!(v["deleted"][0], "clip.bin");
    c.send("GET /media/clip.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 404);
}

#[test]
fn a_half_closed_client_still_gets_its_answer() {
    let (env, body) = env_with_object();
    let mut c = env.connect();
    c.stall();
    c.send("GET /media/clip.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    c.peer_close();
    assert!(!c.closed);
    c.drain(u64::MAX);
    assert_eq!(c.response().body, body);
    assert!(c.closed, "and then the connection closes");
}

#[test]
fn a_critical_event_refuses_new_streams_and_uploads() {
    let memory_bytes = 1 << 40;
    let env = Env::with(|s| s.limits.memory_bytes = AccountLimits::new(memory_bytes));
    env.put("clip.bin", "", &pattern(SIZE));
    let held = env
        .rm
        .reserve(Resource::MemoryBytes, memory_bytes / 100 * 96)
        .expect("reserve");
    let r = get(&env, "");
    assert_eq!((r.status, r.header("retry-after")), (503, Some("2")));
    let mut c = env.connect();
    c.send_bytes(&super::driver::put_head("b.bin", "", 0, &[]));
    assert_eq!(c.response().status, 503);
    drop(held);
    assert_eq!(get(&env, "").status, 200);
}
