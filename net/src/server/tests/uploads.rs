//! Writes: uploads and their refusals, and the lingering close after an early answer.

use std::time::Duration;

use super::driver::{put_head, Env, TOKEN};
use super::pattern;
use crate::server::upload::{LINGER_BYTES_MAX, LINGER_IDLE, LINGER_TIME};

#[test]
fn an_upload_is_created_then_replaced() {
    let env = Env::new();
    let r = env.put("show/a.mp4", "?bitrate=3000000", &pattern(5000));
    assert_eq!(r.status, 201);
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(v["size_bytes"], 5000);
    assert_eq!(v["bitrate_bps"], 3_000_000);
    assert_eq!(v["bitrate_source"], "uploader");
    assert_eq!(env.put("show/a.mp4", "", &pattern(10)).status, 200);
    assert_eq!(
        env.store.lookup("show/a.mp4").expect("stored").size_bytes,
        10
    );
}

#[test]
fn a_chunked_upload_with_100_continue() {
    let env = Env::new();
    let mut c = env.connect();
    c.send(&format!(
        "PUT /media/c.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    ));
    assert_eq!(c.out, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.out.clear();
    c.send("5\r\nhello\r\n");
    c.send("6\r\n world\r\n0\r\n\r\n");
    assert_eq!(c.response().status, 201);
    c.send("GET /media/c.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().text(), "hello world");
}

#[test]
fn a_put_without_a_length_is_411() {
    let env = Env::new();
    let mut c = env.connect();
    c.send(&format!(
        "PUT /media/a.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    ));
    assert_eq!(c.response().status, 411);
    assert!(c.closed);
}

#[test]
fn a_body_over_the_limit_is_413_declared_or_chunked() {
    let env = Env::with(|s| s.http.upload_bytes_max = 100);
    let mut c = env.connect();
    c.send_bytes(&put_head("a.bin", "", 101, &[]));
    assert_eq!(c.response().status, 413);

    let mut c = env.connect();
    c.send(&format!(
        "PUT /media/a.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    ));
    c.send(&format!("65\r\n{}\r\n", "x".repeat(101)));
    let r = c.response();
    assert_eq!(r.status, 413);
    assert!(r.text().contains("100"), "names the limit: {}", r.text());
    assert!(env.store.lookup("a.bin").is_none());
}

#[test]
fn a_bad_name_is_400_with_the_rule_it_broke() {
    let env = Env::new();
    let mut c = env.connect();
    c.send_bytes(&put_head("a%5Cb.bin", "", 0, &[]));
    let r = c.response();
    assert_eq!(r.status, 400);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.text().contains("error"), "{}", r.text());
}

#[test]
fn an_invalid_content_type_is_400() {
    let env = Env::new();
    let mut c = env.connect();
    c.send_bytes(&put_head("a.bin", "", 0, &["Content-Type: not a type"]));
    let r = c.response();
    assert_eq!(r.status, 400);
    assert!(r.text().contains("is not a media type"), "{}", r.text());
}

#[test]
fn a_wrong_token_is_401_and_says_so() {
    let env = Env::new();
    let mut c = env.connect();
    c.send("PUT /media/a.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\nContent-Length: 0\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer realm=\"oasis\""));
    let v: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
    assert_eq!(
        v["error"],
        "the bearer token is not known to this server (mistyped, revoked or rotated out)"
    );

    let mut c = env.connect();
    c.send("DELETE /media/a.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    let r = c.response();
    assert_eq!(r.status, 401);
    assert!(r.text().contains("Authorization: Bearer"), "{}", r.text());
}

#[test]
fn a_server_without_a_token_refuses_writes_with_403() {
    let env = Env::with(|s| s.http.api_token = None);
    let mut c = env.connect();
    c.send_bytes(&put_head("a.bin", "", 0, &[]));
    let r = c.response();
    assert_eq!(r.status, 403);
    assert!(r.header("www-authenticate").is_none());
    assert!(r.text().contains("[http] api_token"), "{}", r.text());
}

/// A PUT refused before its body was read: the answer goes out at once, then the body is read
/// and dropped.
fn refused_put(env: &Env, len: usize) -> super::driver::Conn {
    let mut c = env.connect();
    c.send(&format!(
        "PUT /media/a.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\nContent-Length: {len}\r\n\r\n"
    ));
    assert_eq!(c.response().status, 401);
    c
}

#[test]
fn lingering_ends_exactly_when_the_declared_body_is_read() {
    let env = Env::new();
    let mut c = refused_put(&env, 1000);
    c.send_bytes(&[0; 600]);
    c.send_bytes(&[0; 399]);
    assert!(!c.closed, "one byte of the body is still to come");
    c.send_bytes(&[0]);
    assert!(c.closed);
    assert!(c.out.is_empty(), "nothing more was sent");
}

#[test]
fn lingering_ends_exactly_at_the_terminating_chunk() {
    let env = Env::new();
    let mut c = env.connect();
    c.send(
        "PUT /media/a.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    );
    assert_eq!(c.response().status, 401);
    c.send("a\r\n0123456789\r\n0\r\n\r");
    assert!(!c.closed, "the last CRLF is still to come");
    c.send("\n");
    assert!(c.closed);
}

#[test]
fn lingering_ends_after_an_idle_wait() {
    let env = Env::new();
    let mut c = refused_put(&env, 1000);
    c.advance(LINGER_IDLE - Duration::from_millis(1));
    c.send_bytes(&[0; 10]);
    // Each byte that arrives restarts the idle wait.
    c.advance(LINGER_IDLE - Duration::from_millis(1));
    assert!(!c.closed);
    c.advance(Duration::from_millis(1));
    assert!(c.closed);
}

#[test]
fn lingering_ends_after_its_longest_time() {
    let env = Env::new();
    let mut c = refused_put(&env, 1 << 30);
    let step = LINGER_IDLE - Duration::from_millis(1);
    let mut waited = Duration::ZERO;
    while waited + step < LINGER_TIME {
        c.advance(step);
        waited += step;
        c.send_bytes(&[0; 100]);
        assert!(!c.closed, "closed after {waited:?}");
    }
    c.advance(LINGER_TIME - waited);
    assert!(c.closed);
}

#[test]
fn lingering_ends_after_its_byte_cap() {
    let env = Env::new();
    let mut c = refused_put(&env, 1 << 40);
    let piece = vec![0u8; 1 << 20];
    let pieces = (LINGER_BYTES_MAX >> 20) as usize;
    for _ in 0..pieces - 1 {
        c.send_bytes(&piece);
    }
    c.send_bytes(&piece[1..]);
    assert!(!c.closed);
    c.send_bytes(&[0]);
    assert!(c.closed);
}

/// A body of several staged pieces goes out as engine writes, one at a time, and arrives whole,
/// declared or chunked.
#[test]
fn a_large_body_is_written_by_the_engine_a_piece_at_a_time() {
    let env = Env::new();
    let body = pattern(3 * (256 << 10) + 1000);
    let mut c = env.connect();
    c.send_bytes(&put_head("big.bin", "", body.len(), &[]));
    c.send_bytes(&body);
    assert_eq!(c.response().status, 201);
    assert_eq!(
        c.writes, 3,
        "three full pieces; the tail is written by the commit"
    );

    let mut c = env.connect();
    c.send(&format!(
        "PUT /media/big.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    ));
    for piece in body.chunks(100_000) {
        c.send(&format!("{:x}\r\n", piece.len()));
        c.send_bytes(piece);
        c.send("\r\n");
    }
    c.send("0\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(c.writes, 3);
    c.send("GET /media/big.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().body, body);
}

/// With no version id at hand, the upload waits for a job that reserves more and creates its
/// temp file, and the uploads after it find ids at hand again.
#[test]
fn an_upload_with_no_id_at_hand_starts_in_a_job() {
    let env = Env::new();
    env.store.empty_id_block_for_test();
    let mut c = env.connect();
    c.send_bytes(&put_head("a.bin", "", 5, &["Expect: 100-continue"]));
    assert_eq!(c.out, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.out.clear();
    c.send("hello");
    assert_eq!(c.response().status, 201);
    assert_eq!(env.put("b.bin", "", b"world").status, 201);

    // A refused job is a 503, as for every job.
    env.store.empty_id_block_for_test();
    let mut c = env.connect();
    c.reject_jobs = true;
    c.send_bytes(&put_head("c.bin", "", 5, &[]));
    let r = c.response();
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some());
}
