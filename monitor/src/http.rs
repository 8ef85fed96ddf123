//! The monitor's HTTP side (a control-plane endpoint, not the media path): one accepting thread
//! (`oasis-mon-http`) and a thread per connection, at most [`CONNECTIONS_MAX`] at once (more are
//! answered 503 and closed), each answering one request and closing; `/events` streams.
//!
//! Routes: `GET /` the dashboard (built into the binary), `GET /api/nodes[?filter=&limit=]`,
//! `GET /api/matrix[?filter=&limit=]` (round trips between nodes and their throughput, at most
//! 64 nodes),
//! `GET /api/events[?limit=]` (the fleet's latest level changes, newest first),
//! `GET /metrics`, `GET /events` (server-sent events: the `/api/nodes` JSON every second, at most
//! [`EVENT_STREAMS_MAX`] at once), `GET /api/rendered?node=ID&state=S` (the dashboard says it drew a node in a state: how a
//! test sees the browser's live update).

use std::io::{self, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::events::FLEET_EVENTS_MAX;
use crate::receiver::{lock, Shared, RENDERED_MAX};
use crate::render;

/// Connections served at once.
const CONNECTIONS_MAX: usize = 64;
/// Event streams open at once (each holds a connection).
const EVENT_STREAMS_MAX: usize = 16;
/// Largest request head read.
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// How long a client may take to send its head, or to take a write.
const IO_TIMEOUT: Duration = Duration::from_secs(5);
/// Nodes per `/api/nodes` answer unless `limit` says fewer (also each event's).
const NODES_PER_PAGE_MAX: usize = 500;
/// Time between two events on a stream.
const EVENT_PERIOD: Duration = Duration::from_millis(1000);

const DASHBOARD: &str = include_str!("../assets/dashboard.html");

struct Limits {
    connections: AtomicUsize,
    streams: AtomicUsize,
}

/// Starts the accepting thread.
pub fn start(
    listener: TcpListener,
    shared: Shared,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    let limits = Arc::new(Limits {
        connections: AtomicUsize::new(0),
        streams: AtomicUsize::new(0),
    });
    std::thread::Builder::new()
        .name("oasis-mon-http".into())
        .spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    break;
                }
                let Ok(mut conn) = conn else { continue };
                if limits.connections.fetch_add(1, Ordering::AcqRel) >= CONNECTIONS_MAX {
                    limits.connections.fetch_sub(1, Ordering::AcqRel);
                    let _ = conn.set_write_timeout(Some(IO_TIMEOUT));
                    let _ = respond(
                        &mut conn,
                        503,
                        "text/plain",
                        b"too many connections; retry\n",
                    );
                    continue;
                }
                let (shared, stop, limits) =
                    (Arc::clone(&shared), Arc::clone(&stop), Arc::clone(&limits));
                let spawned = std::thread::Builder::new()
                    .name("oasis-mon-conn".into())
                    .spawn(move || {
                        let _ = serve(conn, &shared, &stop, &limits);
                        limits.connections.fetch_sub(1, Ordering::AcqRel);
                    });
                if spawned.is_err() {
                    // The closure (and its count) was dropped with the failed spawn.
                    tracing::warn!("monitor: cannot start a connection thread");
                }
            }
        })
}

fn serve(
    mut conn: TcpStream,
    shared: &Shared,
    stop: &AtomicBool,
    limits: &Limits,
) -> io::Result<()> {
    conn.set_read_timeout(Some(IO_TIMEOUT))?;
    conn.set_write_timeout(Some(IO_TIMEOUT))?;
    let Some(target) = read_target(&mut conn)? else {
        return respond(
            &mut conn,
            400,
            "text/plain",
            b"bad request: GET only, head under 8 KiB\n",
        );
    };
    let (path, query) = target.split_once('?').unwrap_or((&target, ""));
    match path {
        "/" | "/index.html" => respond(
            &mut conn,
            200,
            "text/html; charset=utf-8",
            DASHBOARD.as_bytes(),
        ),
        "/api/nodes" => {
            let filter = param(query, "filter").unwrap_or_default();
            let limit = param(query, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(NODES_PER_PAGE_MAX)
                .min(NODES_PER_PAGE_MAX);
            let body = render::nodes_json(&lock(shared), &filter, limit).to_string();
            respond(&mut conn, 200, "application/json", body.as_bytes())
        }
        "/api/matrix" => {
            let filter = param(query, "filter").unwrap_or_default();
            let limit = param(query, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(render::MATRIX_NODES_MAX)
                .min(render::MATRIX_NODES_MAX);
            let body = render::matrix_json(&lock(shared), &filter, limit).to_string();
            respond(&mut conn, 200, "application/json", body.as_bytes())
        }
        "/api/events" => {
            let limit = param(query, "limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(render::EVENTS_SHOWN)
                .min(FLEET_EVENTS_MAX);
            let body = render::events_json(&lock(shared), limit).to_string();
            respond(&mut conn, 200, "application/json", body.as_bytes())
        }
        "/metrics" => {
            let body = render::prometheus(&lock(shared));
            respond(&mut conn, 200, "text/plain; version=0.0.4", body.as_bytes())
        }
        "/api/rendered" => {
            if let Some(node) = param(query, "node") {
                let mut s = lock(shared);
                s.renders += 1;
                if s.rendered.len() == RENDERED_MAX {
                    s.rendered.pop_front();
                }
                let state = param(query, "state").unwrap_or_default();
                let seen: String = format!("{node} {state}").chars().take(80).collect();
                s.rendered.push_back(seen);
            }
            respond(&mut conn, 204, "text/plain", b"")
        }
        "/events" => {
            if limits.streams.fetch_add(1, Ordering::AcqRel) >= EVENT_STREAMS_MAX {
                limits.streams.fetch_sub(1, Ordering::AcqRel);
                return respond(
                    &mut conn,
                    503,
                    "text/plain",
                    b"too many event streams; retry\n",
                );
            }
            let filter = param(query, "filter").unwrap_or_default();
            let r = events(&mut conn, shared, stop, &filter);
            limits.streams.fetch_sub(1, Ordering::AcqRel);
            r
        }
        _ => respond(
            &mut conn,
            404,
            "text/plain",
            b"not found: try /, /api/nodes, /api/matrix, /api/events, /metrics or /events\n",
        ),
    }
}

/// Streams the node table every [`EVENT_PERIOD`] until the client goes or the monitor stops.
fn events(
    conn: &mut TcpStream,
    shared: &Shared,
    stop: &AtomicBool,
    filter: &str,
) -> io::Result<()> {
    conn.write_all(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-store\r\nConnection: close\r\n\r\nretry: 1000\n\n",
    )?;
    while !stop.load(Ordering::Acquire) {
        let body = render::nodes_json(&lock(shared), filter, NODES_PER_PAGE_MAX).to_string();
        conn.write_all(format!("data: {body}\n\n").as_bytes())?;
        std::thread::sleep(EVENT_PERIOD);
    }
    Ok(())
}

/// The request target of a `GET`, or `None` for anything else or a head over the bound.
fn read_target(conn: &mut TcpStream) -> io::Result<Option<String>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() > HEAD_BYTES_MAX {
            return Ok(None);
        }
        let n = conn.read(&mut buf)?;
        if n == 0 {
            return Ok(None);
        }
        head.extend_from_slice(&buf[..n]);
    }
    let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
    let line = String::from_utf8_lossy(line);
    let mut parts = line.split(' ');
    match (parts.next(), parts.next()) {
        (Some("GET"), Some(target)) if target.starts_with('/') => Ok(Some(target.to_string())),
        _ => Ok(None),
    }
}

/// A query parameter's value, percent-decoded (`+` is a space).
fn param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(v: &str) -> String {
    let bytes = v.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => match (
                bytes.get(i + 1).and_then(hex),
                bytes.get(i + 2).and_then(hex),
            ) {
                (Some(hi), Some(lo)) => {
                    out.push(hi << 4 | lo);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: &u8) -> Option<u8> {
    (*b as char).to_digit(16).map(|d| d as u8)
}

fn respond(conn: &mut TcpStream, status: u16, kind: &str, body: &[u8]) -> io::Result<()> {
    let reason = match status {
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        404 => "Not Found",
        _ => "Service Unavailable",
    };
    let head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes())?;
    conn.write_all(body)?;
    conn.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_parameters_are_decoded_and_bad_escapes_kept() {
        assert_eq!(param("a=1&node=h%2Fx+y", "node").as_deref(), Some("h/x y"));
        assert_eq!(param("node=%zz%4", "node").as_deref(), Some("%zz%4"));
        assert_eq!(param("node=%", "node").as_deref(), Some("%"));
        assert_eq!(param("node=%\u{e9}", "node").as_deref(), Some("%\u{e9}"));
        assert_eq!(param("x=1", "node"), None);
    }
}
