//! A TCP proxy on a loopback port in front of the test's PostgreSQL: a node given the proxy's
//! URL as its catalog can be cut off from the catalog ([`CatalogProxy::cut`]: every open
//! connection is shut down and new ones are closed at once, as a partition the client notices)
//! and joined again ([`CatalogProxy::restore`]). Only loopback addresses are ever connected to.

use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Most connections the proxy carries at once (a node opens a handful).
const CONNECTIONS_MAX: usize = 64;

/// The proxy; dropped, it stops accepting and shuts its connections down.
pub struct CatalogProxy {
    pub port: u16,
    cut: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl CatalogProxy {
    /// A proxy to `127.0.0.1:upstream_port`.
    pub fn start(upstream_port: u16) -> CatalogProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let port = listener.local_addr().expect("proxy address").port();
        let proxy = CatalogProxy {
            port,
            cut: Arc::new(AtomicBool::new(false)),
            stop: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(Vec::new())),
        };
        let (cut, stop, open) = (
            Arc::clone(&proxy.cut),
            Arc::clone(&proxy.stop),
            Arc::clone(&proxy.open),
        );
        std::thread::spawn(move || {
            for client in listener.incoming() {
                if stop.load(Ordering::Acquire) {
                    return;
                }
                let Ok(client) = client else { continue };
                if cut.load(Ordering::Acquire) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(("127.0.0.1", upstream_port)) else {
                    continue;
                };
                let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
                open.retain(|s| s.peer_addr().is_ok());
                if open.len() >= CONNECTIONS_MAX {
                    continue;
                }
                for s in [&client, &server] {
                    if let Ok(c) = s.try_clone() {
                        open.push(c);
                    }
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        proxy
    }

    /// The catalog URL of `db_url` (a `postgres://user@127.0.0.1:PORT/db` URL) through this
    /// proxy.
    pub fn url_for(&self, db_url: &str, upstream_port: u16) -> String {
        db_url.replace(
            &format!("127.0.0.1:{upstream_port}/"),
            &format!("127.0.0.1:{}/", self.port),
        )
    }

    /// Cuts the catalog off: open connections are shut down, new ones closed at once.
    pub fn cut(&self) {
        self.cut.store(true, Ordering::Release);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        for s in open.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Lets connections through again.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::Release);
    }
}

impl Drop for CatalogProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        self.cut();
        // Wakes the accepting thread so it sees the stop.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Both);
        let _ = from.shutdown(Shutdown::Both);
    });
}
