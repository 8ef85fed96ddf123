//! Every timeout, reached by moving the fake clock: header, body, keep-alive idle, send.

use std::time::Duration;

use super::driver::{put_head, Env};
use super::pattern;
use crate::server::HttpConfig;

const MS: Duration = Duration::from_millis(1);

#[test]
fn a_head_that_does_not_complete_in_time_is_408() {
    let env = Env::new();
    let timeout = HttpConfig::default().header_timeout;
    let mut c = env.connect();
    c.send("GET /healthz HTTP/1.1\r\n");
    c.advance(timeout / 2);
    // More bytes do not restart the wait: it runs from the head's first byte.
    c.send("Host: t\r\n");
    c.advance(timeout / 2 - MS);
    assert!(c.out.is_empty() && !c.closed);
    c.advance(MS);
    assert_eq!(c.response().status, 408);
    assert!(c.closed);
}

#[test]
fn a_stalled_upload_body_is_408_then_lingers() {
    let env = Env::new();
    let timeout = HttpConfig::default().body_timeout;
    let mut c = env.connect();
    c.send_bytes(&put_head("a.bin", "", 100, &[]));
    c.send_bytes(&[1; 10]);
    c.advance(timeout - MS);
    c.send_bytes(&[1; 10]);
    // Each piece of body restarts the wait.
    c.advance(timeout - MS);
    assert!(c.out.is_empty());
    c.advance(MS);
    assert_eq!(c.response().status, 408);
    assert!(
        !c.closed,
        "the rest of the declared body is read and dropped"
    );
    c.send_bytes(&[1; 80]);
    assert!(c.closed);
    assert!(env.store.lookup("a.bin").is_none());
}

#[test]
fn a_stalled_chunked_upload_lingers_to_its_own_end() {
    let env = Env::new();
    let timeout = HttpConfig::default().body_timeout;
    let mut c = env.connect();
    c.send(&format!(
        "PUT /media/c.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {}\r\n\
         Transfer-Encoding: chunked\r\n\r\n5\r\nhel",
        super::driver::TOKEN
    ));
    c.advance(timeout);
    assert_eq!(c.response().status, 408);
    // The decoder that read the start finds the end: the rest of that chunk, then the last.
    c.send("lo\r\n0\r\n\r");
    assert!(!c.closed, "the last CRLF is still to come");
    c.send("\n");
    assert!(c.closed);
    assert!(env.store.lookup("c.bin").is_none());
}

#[test]
fn an_idle_keep_alive_connection_is_closed_silently() {
    let env = Env::new();
    let timeout = HttpConfig::default().keepalive_timeout;
    let mut c = env.connect();
    c.advance(timeout / 2);
    c.send("GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 200);
    // The wait runs from the end of the last response.
    c.advance(timeout - MS);
    assert!(!c.closed);
    c.advance(MS);
    assert!(c.closed);
    assert!(c.out.is_empty());
}

fn env_with_object() -> (Env, Vec<u8>) {
    let env = Env::new();
    let body = pattern(100_000);
    env.put("a.bin", "", &body);
    (env, body)
}

#[test]
fn a_peer_that_accepts_no_bytes_is_dropped_at_the_send_timeout() {
    let (env, _) = env_with_object();
    let timeout = HttpConfig::default().send_timeout;
    let mut c = env.connect();
    c.send("GET /media/a.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    // The body went out; now the peer stops reading a second response.
    c.response();
    c.stall();
    c.send("GET /media/a.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    c.advance(timeout - MS);
    assert!(!c.closed);
    c.advance(MS);
    assert!(c.closed, "the session gave up (wants_close)");
    assert!(env.metrics.render(&[]).contains("send_timeout"));
}

#[test]
fn progress_restarts_the_send_timeout() {
    let (env, body) = env_with_object();
    let timeout = HttpConfig::default().send_timeout;
    let mut c = env.connect();
    c.stall();
    c.send("GET /media/a.bin HTTP/1.1\r\nHost: t\r\n\r\n");
    c.advance(timeout - MS);
    c.drain(5000);
    c.advance(timeout - MS);
    assert!(!c.closed);
    c.drain(u64::MAX);
    assert_eq!(c.response().body, body);
}
