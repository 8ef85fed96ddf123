//! A fault-injecting TCP proxy: one per log server, between the shippers and that server. The
//! shippers know only the proxies' addresses; each proxy forwards to wherever its server listens
//! now (a restarted server listens on a new port), and on command cuts every connection (both
//! sides shut) or stalls them: bytes (and closes) in one direction or both stop moving until the
//! stall ends, as in a network partition.
//!
//! Blocking sockets, two pump threads per connection; the test's connections are few.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

/// Which way bytes stop during a stall.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Shipper to server (`DATA` stops).
    ToServer,
    /// Server to shipper (`ACK`s stop, the server still appends).
    ToShipper,
    /// Both ways.
    Both,
}

/// One forwarded connection: the shipper's side and the server's.
struct Pair {
    shipper: TcpStream,
    server: TcpStream,
    cut: AtomicBool,
    /// Pumps that have ended (of two).
    ended: AtomicU8,
}

impl Pair {
    fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        let _ = self.shipper.shutdown(Shutdown::Both);
        let _ = self.server.shutdown(Shutdown::Both);
    }
}

#[derive(Default)]
struct Gate {
    to_server: bool,
    to_shipper: bool,
}

struct Inner {
    backend: Mutex<Option<SocketAddr>>,
    gate: Mutex<Gate>,
    moved: Condvar,
    pairs: Mutex<Vec<Arc<Pair>>>,
    stopping: AtomicBool,
    /// Connections forwarded, for the report.
    forwarded: AtomicU64,
}

/// A proxy listening on a loopback port of its own.
pub struct Proxy {
    inner: Arc<Inner>,
    addr: SocketAddr,
}

impl Proxy {
    /// Listens on a new loopback port; forwards nowhere until [`Proxy::set_backend`].
    pub fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind a proxy port");
        let addr = listener.local_addr().expect("the proxy's address");
        let inner = Arc::new(Inner {
            backend: Mutex::new(None),
            gate: Mutex::new(Gate::default()),
            moved: Condvar::new(),
            pairs: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            forwarded: AtomicU64::new(0),
        });
        let accepting = Arc::clone(&inner);
        std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(&accepting, &listener))
            .expect("spawn the proxy's acceptor");
        Proxy { inner, addr }
    }

    /// The address shippers connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Where new connections go (`None`: the server is down; they are closed at once).
    pub fn set_backend(&self, to: Option<SocketAddr>) {
        *self.inner.backend.lock().unwrap() = to;
    }

    /// Shuts both sides of every connection now.
    pub fn cut_all(&self) {
        let pairs: Vec<Arc<Pair>> = self.inner.pairs.lock().unwrap().drain(..).collect();
        for p in pairs {
            p.cut();
        }
        self.inner.moved.notify_all();
    }

    /// Stops (`on`) or lets go bytes in `dir` on every connection, old and new.
    pub fn stall(&self, dir: Direction, on: bool) {
        let mut g = self.inner.gate.lock().unwrap();
        if dir != Direction::ToShipper {
            g.to_server = on;
        }
        if dir != Direction::ToServer {
            g.to_shipper = on;
        }
        drop(g);
        self.inner.moved.notify_all();
    }

    /// Connections forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.inner.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        self.stall(Direction::Both, false);
        self.cut_all();
        // Wakes the acceptor, which then sees `stopping`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
    }
}

fn accept_loop(inner: &Arc<Inner>, listener: &TcpListener) {
    for shipper in listener.incoming() {
        if inner.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(shipper) = shipper else { continue };
        let backend = *inner.backend.lock().unwrap();
        let Some(backend) = backend else {
            continue; // The server is down: the shipper sees its connection closed.
        };
        let Ok(server) = TcpStream::connect_timeout(&backend, Duration::from_secs(1)) else {
            continue;
        };
        let _ = shipper.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(a), Ok(b)) = (shipper.try_clone(), server.try_clone()) else {
            continue;
        };
        let pair = Arc::new(Pair {
            shipper,
            server,
            cut: AtomicBool::new(false),
            ended: AtomicU8::new(0),
        });
        inner.pairs.lock().unwrap().push(Arc::clone(&pair));
        inner.forwarded.fetch_add(1, Ordering::Relaxed);
        for (from, to, dir) in [
            (a, pair.server.try_clone(), Direction::ToServer),
            (b, pair.shipper.try_clone(), Direction::ToShipper),
        ] {
            let Ok(to) = to else {
                pair.cut();
                break;
            };
            let (inner, pair) = (Arc::clone(inner), Arc::clone(&pair));
            std::thread::Builder::new()
                .name("proxy-pump".into())
                .spawn(move || {
                    pump(&inner, &pair, from, to, dir);
                    if pair.ended.fetch_add(1, Ordering::SeqCst) == 1 {
                        inner
                            .pairs
                            .lock()
                            .unwrap()
                            .retain(|p| !Arc::ptr_eq(p, &pair));
                    }
                })
                .expect("spawn a proxy pump");
        }
    }
}

/// Waits while `dir` is stalled (and the connection not cut).
fn wait_gate(inner: &Inner, pair: &Pair, dir: Direction) {
    let mut g = inner.gate.lock().unwrap();
    loop {
        let stalled = match dir {
            Direction::ToServer => g.to_server,
            _ => g.to_shipper,
        };
        if !stalled || pair.cut.load(Ordering::SeqCst) {
            return;
        }
        g = inner
            .moved
            .wait_timeout(g, Duration::from_millis(100))
            .unwrap()
            .0;
    }
}

/// Moves bytes one way until either side ends; a stall holds bytes and the close alike.
fn pump(inner: &Inner, pair: &Pair, mut from: TcpStream, mut to: TcpStream, dir: Direction) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // A reset ends the connection as a close does.
        let n = from.read(&mut buf).unwrap_or_default();
        wait_gate(inner, pair, dir);
        if n == 0 {
            // The close goes on to the other side, as a FIN.
            let _ = to.shutdown(Shutdown::Write);
            return;
        }
        if pair.cut.load(Ordering::SeqCst) || to.write_all(&buf[..n]).is_err() {
            pair.cut();
            return;
        }
    }
}
