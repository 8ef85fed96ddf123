//! API requests with a body (`PATCH /api/config`), against a recording Configuration Manager:
//! the body is read whole in any pieces, declared or chunked, and handed over with its format
//! and flag; the connection stays open for the next request. A body over the cap is 413, a
//! stalled one 408, bad framing 400; refusals by the head come before any body is read; and the
//! body's memory reservation is returned once the job is done.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oasis_engine::resource::Resource;

use super::driver::{Env, TOKEN};
use crate::server::{ConfigControl, ControlReply, HttpConfig, API_BODY_BYTES_MAX};

/// One `patch` call: the fragment, `json`, `restart_pending`.
type Call = (Vec<u8>, bool, bool);

#[derive(Default)]
struct Recorder {
    calls: Mutex<Vec<Call>>,
}

impl Recorder {
    fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

impl ConfigControl for Recorder {
    fn get(&self) -> ControlReply {
        ControlReply {
            status: 200,
            body: "{\"config\":{\"pacing\":{\"factor_progressive\":1.5}}}\n".into(),
            changed: Vec::new(),
        }
    }

    fn patch(&self, fragment: &[u8], json: bool, restart_pending: bool) -> ControlReply {
        self.calls
            .lock()
            .unwrap()
            .push((fragment.to_vec(), json, restart_pending));
        ControlReply {
            status: 200,
            body: format!("{{\"bytes\":{}}}\n", fragment.len()),
            changed: vec!["pacing.factor_progressive".into()],
        }
    }
}

fn env() -> (Env, Arc<Recorder>) {
    let env = Env::new();
    let recorder = Arc::new(Recorder::default());
    env.service.attach_config_control(recorder.clone());
    (env, recorder)
}

/// An authorized PATCH's head lines, `extra` last, without the empty line that ends the head.
fn patch_lines(query: &str, extra: &str) -> String {
    format!(
        "PATCH /api/config{query} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n{extra}"
    )
}

fn patch_head(query: &str, extra: &str) -> String {
    patch_lines(query, extra) + "\r\n"
}

fn memory_used(env: &Env) -> u64 {
    env.rm.used(Resource::MemoryBytes)
}

#[test]
fn a_declared_body_in_pieces_reaches_the_control_and_the_connection_stays_open() {
    let (env, recorder) = env();
    let before = memory_used(&env);
    let body = "[pacing]\nfactor_progressive = 2.0\n";
    let mut c = env.connect();
    c.send(&patch_head(
        "",
        &format!("Content-Length: {}\r\n", body.len()),
    ));
    c.send(&body[..10]);
    assert!(c.out.is_empty(), "answered before the body was complete");
    c.send(&format!(
        "{}GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n",
        &body[10..]
    ));
    let r = c.response();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.text(), format!("{{\"bytes\":{}}}\n", body.len()));
    assert_eq!(recorder.calls(), [(body.as_bytes().to_vec(), false, false)]);
    // The pipelined request behind the body is the next one on the same connection.
    assert_eq!(c.response().text(), "ok\n");
    assert!(!c.closed);
    assert_eq!(memory_used(&env), before, "the body's memory is returned");
}

#[test]
fn a_chunked_json_body_with_100_continue_and_the_restart_flag() {
    let (env, recorder) = env();
    let mut c = env.connect();
    c.send(&patch_head(
        "?restart_pending=true",
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n",
    ));
    assert_eq!(c.out, b"HTTP/1.1 100 Continue\r\n\r\n");
    c.out.clear();
    c.send("3\r\n{\"h\r\n");
    c.send("5\r\nttp\":\r\n3\r\n{}}\r\n0\r\n\r\n");
    assert_eq!(c.response().status, 200);
    assert_eq!(recorder.calls(), [(b"{\"http\":{}}".to_vec(), true, true)]);
}

#[test]
fn a_body_over_the_cap_is_413_declared_or_chunked_and_never_reaches_the_control() {
    let (env, recorder) = env();
    let before = memory_used(&env);
    let over = API_BODY_BYTES_MAX + 1;
    let mut c = env.connect();
    c.send(&patch_head("", &format!("Content-Length: {over}\r\n")));
    let r = c.response();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("connection"), Some("close"));
    assert!(
        r.text().contains(&API_BODY_BYTES_MAX.to_string()),
        "{}",
        r.text()
    );
    // The body the client still sends is read and dropped, then the connection closes.
    assert!(!c.closed);
    c.send_bytes(&vec![b'x'; over]);
    assert!(c.closed);

    let mut c = env.connect();
    c.send(&patch_head("", "Transfer-Encoding: chunked\r\n"));
    let chunk = vec![b'#'; 16 << 10];
    for _ in 0..4 {
        c.send(&format!("{:x}\r\n", chunk.len()));
        c.send_bytes(&chunk);
        c.send("\r\n");
    }
    assert!(c.out.is_empty(), "64 KiB exactly is still taken");
    c.send("1\r\n#\r\n");
    let r = c.response();
    assert_eq!(r.status, 413);
    assert_eq!(r.header("content-type"), Some("application/json"));
    // The rest of the chunked body is found by its decoder, and the connection then closes.
    c.send("0\r\n\r\n");
    assert!(c.closed);
    assert!(recorder.calls().is_empty());
    assert_eq!(memory_used(&env), before);
}

#[test]
fn a_stalled_body_is_408_and_bad_framing_400() {
    let (env, recorder) = env();
    let timeout = HttpConfig::default().body_timeout;
    let mut c = env.connect();
    c.send(&patch_head("", "Content-Length: 10\r\n"));
    c.send("[pac");
    c.advance(timeout - Duration::from_millis(1));
    assert!(c.out.is_empty());
    c.advance(Duration::from_millis(1));
    assert_eq!(c.response().status, 408);

    let mut c = env.connect();
    c.send(&patch_head("", "Transfer-Encoding: chunked\r\n"));
    c.send("zz\r\n");
    assert_eq!(c.response().status, 400);
    assert!(c.closed);
    assert!(recorder.calls().is_empty());
}

#[test]
fn refusals_by_the_head_come_before_the_body() {
    let (env, recorder) = env();
    let body = "[pacing]\nenabled = false\n";
    let cases = [
        ("PATCH /api/config HTTP/1.1\r\nHost: t\r\n".to_string(), 401),
        (
            patch_lines("", "Content-Type: application/x-www-form-urlencoded\r\n"),
            415,
        ),
        (patch_lines("?restart_pending=maybe", ""), 400),
    ];
    for (head, status) in cases {
        let mut c = env.connect();
        c.send(&format!("{head}Content-Length: {}\r\n\r\n", body.len()));
        let r = c.response();
        assert_eq!(r.status, status, "{head}: {}", r.text());
        assert_eq!(r.header("connection"), Some("close"), "{head}");
        // The unread body is dropped, not taken for a request.
        c.send(body);
        assert!(c.closed, "{head}");
    }
    assert!(recorder.calls().is_empty());
}

#[test]
fn get_head_and_other_methods() {
    let (env, _) = env();
    let mut c = env.connect();
    c.send(&format!(
        "GET /api/config HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!(r.status, 200);
    assert!(r.text().contains("factor_progressive"), "{}", r.text());
    c.send(&format!(
        "HEAD /api/config HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    ));
    let r = c.head_response();
    assert_eq!(r.status, 200);
    assert!(c.out.is_empty(), "HEAD has no body");
    c.send("GET /api/config HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!(c.response().status, 401);
    c.send(&format!(
        "PUT /api/config HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!(r.status, 405);
    assert_eq!(r.header("allow"), Some("GET, HEAD, PATCH"));
}

#[test]
fn without_a_configuration_manager_the_api_says_so() {
    let env = Env::new();
    let mut c = env.connect();
    c.send(&format!(
        "GET /api/config HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n"
    ));
    let r = c.response();
    assert_eq!(r.status, 501);
    assert!(r.text().contains("SIGHUP"), "{}", r.text());
    c.send(&patch_head("", "Content-Length: 2\r\n"));
    assert_eq!(c.response().status, 501);
}
