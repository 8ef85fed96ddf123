//! A small log server for tests, speaking the shipper's side of `PROTOCOL.md` with the shared
//! codec (`oasis_log::proto`) over real sockets: it keeps each stream's bytes in memory at their
//! offsets (segments, as the protocol describes), acknowledges every `DATA` at once, and can be
//! told to misbehave: stop acknowledging (a hung server), refuse every `HELLO` with a code, or
//! die (listener and connections closed; what it held stays readable for the test). One writer
//! per stream, as the protocol says: a `HELLO` for a stream another connection writes gets
//! `REFUSE` 5 (a killed shipper's connection may still be read for a moment after its death).
//!
//! It exists to test the shipper without `oasis logd`; it is not a model of the real server's
//! durability (nothing is written to disk).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use oasis_log::proto::{encode, Decoder, Message};

/// One stream's bytes: segments by start offset, each contiguous.
#[derive(Default, Debug, Clone)]
pub struct Held {
    pub segments: BTreeMap<u64, Vec<u8>>,
}

impl Held {
    /// The end of the segment with the highest start (0 when empty).
    pub fn end(&self) -> u64 {
        self.segments
            .iter()
            .next_back()
            .map_or(0, |(s, b)| s + b.len() as u64)
    }
}

#[derive(Default)]
struct State {
    streams: BTreeMap<String, Held>,
    /// The streams being written, each by one connection.
    writers: std::collections::BTreeSet<String>,
    conns: Vec<TcpStream>,
}

/// A running mini server.
pub struct MiniServer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    dead: Arc<AtomicBool>,
    hung: Arc<AtomicBool>,
    refuse: Arc<AtomicU8>,
    /// `DATA` frames received.
    pub data_frames: Arc<AtomicU64>,
    /// `HELLO`s received.
    pub hellos: Arc<AtomicU64>,
}

impl MiniServer {
    /// Listens on a free port of 127.0.0.1.
    pub fn start() -> MiniServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let server = MiniServer {
            addr: listener.local_addr().unwrap(),
            state: Arc::default(),
            dead: Arc::default(),
            hung: Arc::default(),
            refuse: Arc::default(),
            data_frames: Arc::default(),
            hellos: Arc::default(),
        };
        let (state, dead, hung, refuse, frames, hellos) = (
            Arc::clone(&server.state),
            Arc::clone(&server.dead),
            Arc::clone(&server.hung),
            Arc::clone(&server.refuse),
            Arc::clone(&server.data_frames),
            Arc::clone(&server.hellos),
        );
        std::thread::spawn(move || {
            while !dead.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((sock, _)) => {
                        sock.set_nonblocking(false).unwrap();
                        state
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .conns
                            .push(sock.try_clone().unwrap());
                        let c = Conn {
                            state: Arc::clone(&state),
                            dead: Arc::clone(&dead),
                            hung: Arc::clone(&hung),
                            refuse: Arc::clone(&refuse),
                            frames: Arc::clone(&frames),
                            hellos: Arc::clone(&hellos),
                        };
                        std::thread::spawn(move || c.serve(sock));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(2)),
                }
            }
        });
        server
    }

    /// The address as a shipper's server list takes it.
    pub fn name(&self) -> String {
        self.addr.to_string()
    }

    /// What the server holds of `stream`.
    pub fn held(&self, stream: &str) -> Held {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .streams
            .get(stream)
            .cloned()
            .unwrap_or_default()
    }

    /// Whether a connection writes `stream` now.
    pub fn writing(&self, stream: &str) -> bool {
        self.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .writers
            .contains(stream)
    }

    /// Stops acknowledging (and keeps reading): a hung server.
    pub fn hang(&self, on: bool) {
        self.hung.store(on, Ordering::SeqCst);
    }

    /// Answers every `HELLO` with `REFUSE` `code` (0: no refusals).
    pub fn refuse_with(&self, code: u8) {
        self.refuse.store(code, Ordering::SeqCst);
    }

    /// Closes every connection open now, as a server closes silent writers; keeps listening.
    pub fn drop_connections(&self) {
        for c in self
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .conns
            .drain(..)
        {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// Dies: stops listening and closes every connection.
    pub fn kill(&self) {
        self.dead.store(true, Ordering::SeqCst);
        self.drop_connections();
    }
}

impl Drop for MiniServer {
    fn drop(&mut self) {
        self.kill();
    }
}

struct Conn {
    state: Arc<Mutex<State>>,
    dead: Arc<AtomicBool>,
    hung: Arc<AtomicBool>,
    refuse: Arc<AtomicU8>,
    frames: Arc<AtomicU64>,
    hellos: Arc<AtomicU64>,
}

fn send(sock: &mut TcpStream, m: &Message) -> bool {
    let mut out = Vec::new();
    encode(m, &mut out);
    sock.write_all(&out).is_ok()
}

impl Conn {
    fn serve(self, sock: TcpStream) {
        let mut stream = None;
        self.serve_frames(sock, &mut stream);
        if let Some(name) = stream {
            self.state
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .writers
                .remove(&name);
        }
    }

    fn serve_frames(&self, mut sock: TcpStream, stream: &mut Option<String>) {
        let mut decoder = Decoder::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut expect = 0u64;
        loop {
            let n = match sock.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            if self.dead.load(Ordering::SeqCst) {
                return;
            }
            decoder.feed(&buf[..n]);
            loop {
                let msg = match decoder.next() {
                    Ok(Some(m)) => m,
                    Ok(None) => break,
                    Err(_) => return,
                };
                match msg {
                    Message::Hello {
                        stream: name,
                        oldest_unacked,
                        ..
                    } => {
                        self.hellos.fetch_add(1, Ordering::SeqCst);
                        let code = self.refuse.load(Ordering::SeqCst);
                        if code != 0 {
                            let reason = "told to refuse".to_string();
                            send(
                                &mut sock,
                                &Message::Refuse {
                                    code,
                                    expect: 0,
                                    reason,
                                },
                            );
                            return;
                        }
                        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                        if stream.is_some() || !st.writers.insert(name.clone()) {
                            drop(st);
                            let reason = "the stream is being written by another connection";
                            let m = Message::Refuse {
                                code: 5,
                                expect: 0,
                                reason: reason.into(),
                            };
                            send(&mut sock, &m);
                            return;
                        }
                        let held = st.streams.entry(name.clone()).or_default();
                        let end = held.end();
                        expect = if end >= oldest_unacked && !held.segments.is_empty() {
                            end
                        } else {
                            held.segments.insert(oldest_unacked, Vec::new());
                            oldest_unacked
                        };
                        drop(st);
                        *stream = Some(name);
                        let welcome = Message::Welcome {
                            expect,
                            durable_end: end,
                        };
                        if !send(&mut sock, &welcome) {
                            return;
                        }
                    }
                    Message::Data { offset, bytes } => {
                        self.frames.fetch_add(1, Ordering::SeqCst);
                        let Some(name) = stream.as_ref() else { return };
                        if offset != expect {
                            let m = Message::Refuse {
                                code: 1,
                                expect,
                                reason: "unexpected offset".into(),
                            };
                            if !send(&mut sock, &m) {
                                return;
                            }
                            continue;
                        }
                        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
                        let held = st.streams.get_mut(name).unwrap();
                        let last = held.segments.values_mut().next_back().unwrap();
                        last.extend_from_slice(&bytes);
                        expect += bytes.len() as u64;
                        drop(st);
                        if !self.hung.load(Ordering::SeqCst)
                            && !send(
                                &mut sock,
                                &Message::Ack {
                                    durable_end: expect,
                                },
                            )
                        {
                            return;
                        }
                    }
                    _ => return,
                }
            }
        }
    }
}

/// The union of what `servers` hold of `stream`, checked: overlapping ranges must be equal and
/// there may be no gap from 0 to the highest end. Returns the bytes from 0.
pub fn union(servers: &[&MiniServer], stream: &str) -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    let mut pieces: Vec<(u64, Vec<u8>)> = servers
        .iter()
        .flat_map(|s| s.held(stream).segments.into_iter())
        .filter(|(_, b)| !b.is_empty())
        .collect();
    pieces.sort_by_key(|(start, _)| *start);
    for (start, bytes) in pieces {
        let start = start as usize;
        assert!(
            start <= out.len(),
            "gap: nothing holds [{}, {start})",
            out.len()
        );
        let overlap = (out.len() - start).min(bytes.len());
        assert_eq!(
            &out[start..start + overlap],
            &bytes[..overlap],
            "two servers hold different bytes at {start}"
        );
        out.extend_from_slice(&bytes[overlap..]);
    }
    out
}

/// How far from 0 the servers together hold `stream` without a gap (no check of equality:
/// for waiting; [`union`] checks).
pub fn covered(servers: &[&MiniServer], stream: &str) -> u64 {
    let mut pieces: Vec<(u64, u64)> = servers
        .iter()
        .flat_map(|s| s.held(stream).segments.into_iter())
        .map(|(start, b)| (start, start + b.len() as u64))
        .collect();
    pieces.sort();
    let mut end = 0;
    for (start, stop) in pieces {
        if start > end {
            break;
        }
        end = end.max(stop);
    }
    end
}

/// A bound on every wait of the tests, so a broken shipper fails a test instead of hanging it.
pub const WAIT: Duration = Duration::from_secs(60);

/// Polls until `done` holds, failing the test after [`WAIT`].
pub fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = std::time::Instant::now();
    while !done() {
        assert!(start.elapsed() < WAIT, "waited {WAIT:?} for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// At least `bytes` of input in distinct lines, so a lost, repeated or misplaced byte shows.
pub fn lines(tag: &str, bytes: usize) -> Vec<u8> {
    let mut out = Vec::new();
    let mut i = 0;
    while out.len() < bytes {
        out.extend_from_slice(format!("{tag} {i:08}\n").as_bytes());
        i += 1;
    }
    out
}

/// Appends `bytes` to the file at `path` (created if missing), as a logging program does.
pub fn append(path: &std::path::Path, bytes: &[u8]) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(bytes)
        .unwrap();
}
