//! Proxy mode with a fake [`PoolHook`] and a fake holder on a loopback socket: the holder's
//! bytes come back through the session (Range, the pool credential and `X-Oasis-Pool` passed
//! on; its ETag and Content-Range kept; this node's own head); a holder failing before its head
//! is 502 with a JSON reason, after it the connection is cut; a HEAD carries the holder's
//! length and no body; a stream this node cannot reserve goes to the holder (307); a full
//! proxy queue is 503 with `Retry-After`; a signed link is proxied as the name it opens.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use oasis_engine::resource::AccountLimits;

use super::driver::Env;
use super::pool::{attach, get, signed_prefix_env};
use crate::auth::link::{self, LinkKeys, Scope};
use crate::server::pool::Located;
use crate::server::proxy::{Proxy, ProxySettings};

/// A holder on a loopback port: for each answer, one connection whose request head it reads
/// (and hands to the test) before it writes the answer and closes.
fn holder(answers: Vec<Vec<u8>>) -> (String, mpsc::Receiver<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for answer in answers {
            let (mut s, _) = listener.accept().unwrap();
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 16_384 {
                if s.read(&mut byte).unwrap() == 0 {
                    break;
                }
                head.push(byte[0]);
            }
            tx.send(String::from_utf8_lossy(&head).into_owned())
                .unwrap();
            let _ = s.write_all(&answer);
        }
    });
    (base, rx)
}

fn proxying(env: &Env, base: &str, queue_max: usize) -> Arc<Proxy> {
    let proxy = Proxy::start(ProxySettings {
        threads: 2,
        queue_max,
        timeout: Duration::from_secs(20),
        token: "pool-tok".into(),
        reserve_bps: 1_000,
    })
    .unwrap();
    let fake = attach(env, Located::At(base.into()));
    *fake.proxy.lock().unwrap() = Some(Arc::clone(&proxy));
    proxy
}

fn body(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

#[test]
fn a_proxied_get_passes_range_and_credential_and_returns_the_holders_bytes() {
    let env = Env::new();
    let bytes = body(600_000);
    let mut answer = b"HTTP/1.1 206 Partial Content\r\nServer: other\r\nContent-Length: 600000\r\n\
        Content-Range: bytes 100-600099/1000000\r\nETag: \"e1\"\r\nContent-Type: video/mp4\r\n\
        X-Secret: no\r\n\r\n"
        .to_vec();
    answer.extend_from_slice(&bytes);
    let (base, asked) = holder(vec![answer]);
    let proxy = proxying(&env, &base, 8);
    let r = get(&env, "/media/a%20b.mp4?t=1", "Range: bytes=100-600099\r\n");
    assert_eq!(r.status, 206, "{r:?}");
    assert_eq!(r.header("content-range"), Some("bytes 100-600099/1000000"));
    assert_eq!(r.header("etag"), Some("\"e1\""));
    assert_eq!(r.header("content-type"), Some("video/mp4"));
    assert_eq!(r.header("server"), Some("oasis"));
    assert_eq!(r.header("x-secret"), None);
    assert_eq!(r.header("location"), None);
    assert!(r.body == bytes, "the proxied body differs");
    let req = asked.recv().unwrap();
    for want in [
        "GET /media/a%20b.mp4?t=1 HTTP/1.1\r\n",
        "X-Oasis-Pool: 1\r\n",
        "Authorization: Bearer pool-tok\r\n",
        "Range: bytes=100-600099\r\n",
    ] {
        assert!(req.contains(want), "{want:?} not in {req:?}");
    }
    assert_eq!(env.metrics.active_streams.get(), 0);
    proxy.stop();
}

#[test]
fn a_holder_failing_before_its_head_is_502_and_after_it_cuts_the_connection() {
    let env = Env::new();
    let short = b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n0123456789".to_vec();
    let (base, _asked) = holder(vec![Vec::new(), short]);
    let proxy = proxying(&env, &base, 8);
    let r = get(&env, "/media/x.mp4", "");
    assert_eq!(r.status, 502, "{r:?}");
    assert!(
        r.text().starts_with("{\"error\":\"the node holding"),
        "{}",
        r.text()
    );

    let mut c = env.connect();
    c.send("GET /media/x.mp4 HTTP/1.1\r\nHost: t\r\n\r\n");
    assert!(c.closed, "the connection is cut");
    let out = String::from_utf8_lossy(&c.out).into_owned();
    assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
    assert!(out.contains("Content-Length: 1000\r\n"), "{out}");
    assert!(out.ends_with("\r\n\r\n0123456789"), "{out}");
    assert_eq!(env.metrics.pool_proxy_cut.get(), 1);
    assert_eq!(env.metrics.pool_proxied.get(), 1);
    proxy.stop();
}

#[test]
fn a_head_carries_the_holders_length_without_a_body() {
    let env = Env::new();
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\nETag: \"e\"\r\n\r\n".to_vec();
    let (base, asked) = holder(vec![answer]);
    let proxy = proxying(&env, &base, 8);
    let mut c = env.connect();
    c.send("HEAD /media/x.mp4 HTTP/1.1\r\nHost: t\r\nIf-None-Match: \"old\"\r\n\r\n");
    let r = c.head_response();
    assert_eq!((r.status, r.header("content-length")), (200, Some("5000")));
    assert!(c.out.is_empty() && !c.closed);
    let req = asked.recv().unwrap();
    assert!(req.starts_with("HEAD /media/x.mp4 HTTP/1.1\r\n"), "{req}");
    assert!(req.contains("If-None-Match: \"old\"\r\n"), "{req}");
    proxy.stop();
}

#[test]
fn a_stream_not_reservable_here_is_redirected_and_a_full_queue_is_503() {
    let env = Env::with(|s| s.limits.net_bps = vec![AccountLimits::new(1)]);
    let proxy = proxying(&env, "http://127.0.0.1:9", 8);
    let r = get(&env, "/media/x.mp4", "");
    assert_eq!(r.status, 307, "{r:?}");
    assert_eq!(r.header("location"), Some("http://127.0.0.1:9/media/x.mp4"));
    proxy.stop();

    let env = Env::new();
    let proxy = proxying(&env, "http://127.0.0.1:9", 0);
    let r = get(&env, "/media/x.mp4", "");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(r.header("retry-after").is_some(), "{r:?}");
    proxy.stop();
}

#[test]
fn a_signed_link_is_proxied_by_the_name_it_opens() {
    let env = signed_prefix_env();
    let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc".to_vec();
    let (base, asked) = holder(vec![answer]);
    let proxy = proxying(&env, &base, 8);
    assert_eq!(get(&env, "/media/p/a%20b.mp4", "").status, 401);
    let keys = LinkKeys::new(&["k".repeat(32)]).unwrap();
    let expires = link::EXPIRES_UNIX_MAX - 1;
    let path = link::sign(
        &keys,
        Scope::Object("p/a b.mp4"),
        "p/a b.mp4",
        expires,
        None,
    )
    .unwrap();
    let r = get(&env, &path, "");
    assert_eq!((r.status, r.body.as_slice()), (200, &b"abc"[..]), "{r:?}");
    let req = asked.recv().unwrap();
    assert!(
        req.starts_with("GET /media/p/a%20b.mp4 HTTP/1.1\r\n"),
        "{req}"
    );
    proxy.stop();
}
