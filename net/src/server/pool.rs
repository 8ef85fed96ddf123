//! The hook from HTTP to the pool: what a session asks of the other nodes sharing its catalog.
//!
//! The HTTP side does not know the pool (its catalog, its view of the nodes, replication): the
//! binary attaches a [`PoolHook`] ([`super::HttpService::attach_pool`]) and sessions call it at
//! six points: a GET for a name not held here (or refused here for load) asks where it is held
//! ([`PoolHook::locate`]) and, in proxy mode ([`PoolHook::proxy`]), streams it from there; an
//! upload committed here is handed on ([`PoolHook::committed`]); a
//! delete is propagated ([`PoolHook::deleted`]); `GET /api/pool` reads the pool's state
//! ([`PoolHook::status_json`]); a write is refused while the pool says so
//! ([`PoolHook::write_refusal`], e.g. the catalog is unreachable). This module holds that
//! contract and the `Location` a redirect carries; it decides nothing about placement and
//! answers no request itself.

use std::net::IpAddr;
use std::sync::{Arc, RwLock};

use oasis_storage::ObjectMeta;

use super::proxy::Proxy;
use crate::auth::link::{self, LinkKeys, Scope};

/// How long a signed link made for a redirect is valid, seconds.
pub const REDIRECT_LINK_SECS: u64 = 300;

/// Where a GET this node cannot serve goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Located {
    /// To the node reachable at this base URL (its `[pool] advertise`, no trailing `/`).
    At(String),
    /// Nodes hold the current version, but none of them is live: 503 with `Retry-After`.
    AllDown,
    /// No node holds it (or, for an overloaded request, none with headroom).
    Nowhere,
}

/// The pool as the HTTP service sees it. Blocking calls run on the catalog thread (jobs),
/// never on a worker; the others only queue work and return at once.
pub trait PoolHook: Send + Sync {
    /// Where a GET for `name` goes: a live holder other than this node, the least loaded
    /// first. `overloaded`: this node refused the stream for lack of resources, so only a
    /// holder with bandwidth headroom will do. Blocking (may ask the catalog).
    fn locate(&self, name: &str, overloaded: bool) -> Located;
    /// An upload committed here; `from_peer` when it was a copy another node sent
    /// (`X-Oasis-Pool`), which is not handed on again. Never blocks (queues the replication).
    fn committed(&self, meta: &ObjectMeta, from_peer: bool);
    /// `name` was deleted here; unless `from_peer`, the other nodes' copies go too. Blocking
    /// (forgets the replicas in the catalog, then queues the deletes on the other nodes).
    fn deleted(&self, name: &str, from_peer: bool);
    /// The pool's state for `GET /api/pool`, one JSON object ending in a newline. Blocking.
    fn status_json(&self) -> String;
    /// Why this node takes no write now (`PUT`, `DELETE`), e.g. its catalog cannot be reached:
    /// the session answers `503` with `Retry-After` and this message in a JSON body. `None`:
    /// writes are taken. Never blocks (reads what the pool thread last saw).
    fn write_refusal(&self) -> Option<String> {
        None
    }
    /// Proxy mode's threads when this node streams objects held elsewhere itself
    /// (`[pool] mode = "proxy"`); `None` (the default): it redirects. Never blocks.
    fn proxy(&self) -> Option<Arc<Proxy>> {
        None
    }
}

/// The slot every configuration generation shares: the hook, once the binary attached it.
pub(super) type PoolSlot = Arc<RwLock<Option<Arc<dyn PoolHook>>>>;

/// The `Location` of a redirect of `GET /media/<name>` to the node at `base`: the name as the
/// client sent it (`raw_name`, still percent-encoded) and its query kept. With `keys` (the
/// object is not public), a signed link to the object valid for [`REDIRECT_LINK_SECS`] from
/// `now_unix` instead, bound to nothing (the holder sees the client's own address); the query
/// is kept after it too. `None` when the link cannot be made (a name the link format refuses).
pub fn redirect_location(
    base: &str,
    raw_name: &str,
    name: &str,
    query: Option<&str>,
    keys: Option<&LinkKeys>,
    now_unix: u64,
) -> Option<String> {
    let base = base.trim_end_matches('/');
    let path = match keys {
        None => format!("/media/{raw_name}"),
        Some(keys) => {
            let expires = now_unix.saturating_add(REDIRECT_LINK_SECS);
            link::sign(keys, Scope::Object(name), name, expires, None::<IpAddr>).ok()?
        }
    };
    Some(match query {
        Some(q) => format!("{base}{path}?{q}"),
        None => format!("{base}{path}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_location_keeps_the_name_as_sent_and_the_query() {
        assert_eq!(
            redirect_location(
                "http://b:8080/",
                "a%20b.mp4",
                "a b.mp4",
                Some("x=1"),
                None,
                0
            ),
            Some("http://b:8080/media/a%20b.mp4?x=1".to_string())
        );
        assert_eq!(
            redirect_location("http://b:8080", "a.mp4", "a.mp4", None, None, 0),
            Some("http://b:8080/media/a.mp4".to_string())
        );
    }

    #[test]
    fn a_private_object_gets_a_signed_link_that_verifies() {
        let keys = LinkKeys::new(&["k".repeat(32)]).unwrap();
        let loc = redirect_location("http://b:1", "p/a.mp4", "p/a.mp4", None, Some(&keys), 1_000)
            .unwrap();
        let path = loc.strip_prefix("http://b:1").unwrap();
        assert!(path.starts_with(link::LINK_PREFIX), "{loc}");
        let name = link::verify(
            &keys,
            path,
            1_000 + REDIRECT_LINK_SECS - 1,
            [127, 0, 0, 1].into(),
        )
        .unwrap();
        assert_eq!(name, "p/a.mp4");
        assert!(link::verify(
            &keys,
            path,
            1_001 + REDIRECT_LINK_SECS,
            [127, 0, 0, 1].into()
        )
        .is_err());
    }
}
