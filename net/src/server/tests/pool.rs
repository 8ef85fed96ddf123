//! The session's side of the pool with a fake [`PoolHook`]: a GET for a name not held here is
//! redirected (query kept), a private one to a signed link only for a client allowed to read it,
//! all holders down is 503 with `Retry-After`, held nowhere is 404; a request from a peer
//! (`X-Oasis-Pool`) is never handed on; a stream refused here for bandwidth goes to a holder;
//! a commit is handed to the pool, marked when it came from a peer; while the pool refuses
//! writes, PUT and DELETE are 503 with `Retry-After` and the cause in JSON, and reads go on.

use std::sync::{Arc, Mutex};

use oasis_engine::resource::AccountLimits;
use oasis_storage::ObjectMeta;

use super::driver::{Env, Response, TOKEN};
use crate::auth::access::{AccessRule, AccessRules};
use crate::auth::link::{LinkKeys, LINK_PREFIX};
use crate::auth::policy::ReadPolicy;
use crate::server::pool::{Located, PoolHook};
use crate::server::proxy::Proxy;

/// A pool hook that answers what the test set.
#[derive(Default)]
pub(super) struct Fake {
    pub(super) answer: Mutex<Option<Located>>,
    /// Proxy mode's threads, when the test proxies.
    pub(super) proxy: Mutex<Option<Arc<Proxy>>>,
    asked: Mutex<Vec<(String, bool)>>,
    committed: Mutex<Vec<(String, bool)>>,
    deleted: Mutex<Vec<(String, bool)>>,
    refusal: Mutex<Option<String>>,
}

impl PoolHook for Fake {
    fn locate(&self, name: &str, overloaded: bool) -> Located {
        self.asked.lock().unwrap().push((name.into(), overloaded));
        self.answer
            .lock()
            .unwrap()
            .clone()
            .unwrap_or(Located::Nowhere)
    }
    fn committed(&self, meta: &ObjectMeta, from_peer: bool) {
        self.committed
            .lock()
            .unwrap()
            .push((meta.name.clone(), from_peer));
    }
    fn deleted(&self, name: &str, from_peer: bool) {
        self.deleted.lock().unwrap().push((name.into(), from_peer));
    }
    fn status_json(&self) -> String {
        "{\"nodes\":[]}\n".into()
    }
    fn write_refusal(&self) -> Option<String> {
        self.refusal.lock().unwrap().clone()
    }
    fn proxy(&self) -> Option<Arc<Proxy>> {
        self.proxy.lock().unwrap().clone()
    }
}

pub(super) fn attach(env: &Env, answer: Located) -> Arc<Fake> {
    let fake = Arc::new(Fake::default());
    *fake.answer.lock().unwrap() = Some(answer);
    env.service
        .attach_pool(Arc::clone(&fake) as Arc<dyn PoolHook>);
    fake
}

/// A service whose `p/` objects are read through signed links (key `k` x 32).
pub(super) fn signed_prefix_env() -> Env {
    Env::with(|s| {
        s.http.link_keys = Some(Arc::new(LinkKeys::new(&["k".repeat(32)]).unwrap()));
        s.http.access = AccessRules::new(
            vec![AccessRule {
                prefix: "p/".into(),
                read: ReadPolicy::Signed,
                cache_control: None,
            }],
            ReadPolicy::Public,
        );
    })
}

pub(super) fn get(env: &Env, target: &str, extra: &str) -> Response {
    let mut c = env.connect();
    c.send(&format!("GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n"));
    c.response()
}

#[test]
fn a_name_held_elsewhere_is_redirected_with_its_query() {
    let env = Env::new();
    let fake = attach(&env, Located::At("http://b:8080".into()));
    let r = get(&env, "/media/a%20b.mp4?t=5", "");
    assert_eq!(r.status, 307, "{r:?}");
    assert_eq!(
        r.header("location"),
        Some("http://b:8080/media/a%20b.mp4?t=5")
    );
    assert_eq!(
        *fake.asked.lock().unwrap(),
        vec![("a b.mp4".to_string(), false)]
    );
    // From a peer: never handed on.
    assert_eq!(
        get(&env, "/media/x.mp4", "X-Oasis-Pool: probe\r\n").status,
        404
    );
    assert_eq!(fake.asked.lock().unwrap().len(), 1);
    // /api/pool answers the hook's JSON to a token.
    let r = get(
        &env,
        "/api/pool",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    );
    assert_eq!((r.status, r.text()), (200, "{\"nodes\":[]}\n".to_string()));
}

#[test]
fn down_holders_are_503_and_no_holder_is_404() {
    let env = Env::new();
    attach(&env, Located::AllDown);
    let r = get(&env, "/media/x.mp4", "");
    assert_eq!(r.status, 503);
    assert!(r.header("retry-after").is_some(), "{r:?}");
    let env = Env::new();
    attach(&env, Located::Nowhere);
    assert_eq!(get(&env, "/media/x.mp4", "").status, 404);
    // Without a pool, /api/pool says how to join one.
    let env = Env::new();
    let r = get(
        &env,
        "/api/pool",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    );
    assert_eq!(r.status, 404);
    assert!(r.text().contains("[pool] catalog"), "{}", r.text());
}

#[test]
fn a_private_name_is_redirected_to_a_signed_link_only_for_a_reader() {
    let env = signed_prefix_env();
    attach(&env, Located::At("http://b:1".into()));
    assert_eq!(get(&env, "/media/p/a.mp4", "").status, 401);
    let r = get(
        &env,
        "/media/p/a.mp4",
        &format!("Authorization: Bearer {TOKEN}\r\n"),
    );
    assert_eq!(r.status, 307);
    let location = r.header("location").unwrap();
    assert!(
        location.starts_with(&format!("http://b:1{LINK_PREFIX}")),
        "{location}"
    );
}

#[test]
fn a_stream_refused_for_bandwidth_goes_to_a_holder_and_commits_are_handed_on() {
    let env = Env::with(|s| s.limits.net_bps = vec![AccountLimits::new(1)]);
    let fake = attach(&env, Located::At("http://b:1".into()));
    env.put("a.bin", "", &[7u8; 1000]);
    let r = get(&env, "/media/a.bin", "");
    assert_eq!(r.status, 307, "{r:?}");
    assert_eq!(
        *fake.asked.lock().unwrap(),
        vec![("a.bin".to_string(), true)]
    );
    // No holder with headroom: refused as before.
    *fake.answer.lock().unwrap() = Some(Located::Nowhere);
    assert_eq!(get(&env, "/media/a.bin", "").status, 503);
    assert_eq!(
        *fake.committed.lock().unwrap(),
        vec![("a.bin".to_string(), false)]
    );
}

#[test]
fn deletes_one_by_one_and_by_prefix_are_handed_on_unless_from_a_peer() {
    let env = Env::new();
    let fake = attach(&env, Located::Nowhere);
    for name in ["s/a.ts", "s/b.ts", "c.ts"] {
        env.put(name, "", b"x");
    }
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    let mut c = env.connect();
    c.send(&format!(
        "DELETE /media/c.ts HTTP/1.1\r\nHost: t\r\n{auth}\r\n"
    ));
    assert_eq!(c.response().status, 204);
    let mut c = env.connect();
    c.send(&format!(
        "DELETE /api/objects?prefix=s/ HTTP/1.1\r\nHost: t\r\n{auth}\r\n"
    ));
    assert_eq!(c.response().status, 200);
    env.put("d.ts", "", b"x");
    let mut c = env.connect();
    c.send(&format!(
        "DELETE /media/d.ts HTTP/1.1\r\nHost: t\r\n{auth}X-Oasis-Pool: delete\r\n\r\n"
    ));
    assert_eq!(c.response().status, 204);
    let mut got = fake.deleted.lock().unwrap().clone();
    got.sort();
    assert_eq!(
        got,
        vec![
            ("c.ts".to_string(), false),
            ("d.ts".to_string(), true),
            ("s/a.ts".to_string(), false),
            ("s/b.ts".to_string(), false),
        ]
    );
}

#[test]
fn writes_are_refused_while_the_pool_says_so_and_reads_go_on() {
    let env = Env::new();
    let fake = attach(&env, Located::Nowhere);
    env.put("kept.ts", "", b"kept");
    *fake.refusal.lock().unwrap() = Some("catalog unreachable: test".into());
    let auth = format!("Authorization: Bearer {TOKEN}\r\n");
    for head in [
        format!("PUT /media/new.ts HTTP/1.1\r\nHost: t\r\n{auth}Content-Length: 3\r\n\r\nabc"),
        format!("DELETE /media/kept.ts HTTP/1.1\r\nHost: t\r\n{auth}\r\n"),
        format!("DELETE /api/objects?prefix=k HTTP/1.1\r\nHost: t\r\n{auth}\r\n"),
    ] {
        let mut c = env.connect();
        c.send(&head);
        let r = c.response();
        assert_eq!(r.status, 503, "{head}: {r:?}");
        assert!(r.header("retry-after").is_some(), "{r:?}");
        let body: serde_json::Value = serde_json::from_str(&r.text()).unwrap();
        assert_eq!(body["cause"], "catalog_unreachable", "{body}");
        assert_eq!(body["error"], "catalog unreachable: test", "{body}");
    }
    assert_eq!(get(&env, "/media/kept.ts", "").status, 200);
    assert_eq!(get(&env, "/media/new.ts", "").status, 404);
    assert!(fake.deleted.lock().unwrap().is_empty());
    // Writes are taken again once the pool says so.
    *fake.refusal.lock().unwrap() = None;
    env.put("new.ts", "", b"abc");
    assert_eq!(get(&env, "/media/new.ts", "").status, 200);
}
