//! Proves that an upload never makes a worker wait for the catalog: while a commit holds the
//! store's committer (as a commit does across its fsyncs and SQLite transaction), uploads start
//! and have their bodies written, and GETs on every worker complete; the uploads finish once
//! the hold ends.
//!
//! How: the real engine (two workers, combined layout) runs the real `HttpService` over a
//! `Store` in a temporary directory; the test holds the committer with
//! `Store::hold_committer_for_test`, starts one upload that takes its id from the block and one
//! that finds the block empty (its job then waits behind the held committer), and checks what
//! the engine wrote to the first upload's temp file while the hold lasts. GETs go over
//! connections spread so that every worker has one. Nothing is timed: a worker stuck behind the
//! committer would leave a GET unanswered, which the socket's read timeout turns into a failure
//! instead of a hang.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use oasis_engine::resource::{AccountLimits, ResourceLimits, ResourceManager};
use oasis_engine::{Engine, EngineConfig, Layout, Listener, Service};
use oasis_net::{AccessLog, HttpConfig, HttpService, LogTarget, Metrics, WallClock};
use oasis_storage::{Store, StoreConfig};

const TOKEN: &str = "upload-off-worker-token-0123";
/// A stuck worker fails the test after this instead of hanging it (not a measurement).
const STUCK: Duration = Duration::from_secs(60);
/// Engine writes are 256 KiB pieces; this body needs three of them, and a tail.
const BODY_BYTES: usize = 3 * (256 << 10) + 12_345;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(seed))
        .collect()
}

fn start() -> (Engine, SocketAddr, Arc<Store>, tempfile::TempDir) {
    let plenty = AccountLimits::new(1 << 50);
    let rm = ResourceManager::new(&ResourceLimits {
        memory_bytes: AccountLimits::new(1 << 30),
        net_bps: vec![plenty],
        disk_read_bps: plenty,
        disk_space_bytes: plenty,
        connections: AccountLimits::new(1000),
        open_files: AccountLimits::new(1000),
    });
    let dir = tempfile::tempdir().expect("temporary directory");
    let (store, _) =
        Store::open(StoreConfig::new(dir.path()), Arc::clone(&rm)).expect("store opens");
    let metrics = Metrics::new(Arc::clone(&rm));
    let (log, _) = AccessLog::start(LogTarget::Off, 16, Arc::clone(&metrics)).expect("log off");
    let http = HttpService::new(
        HttpConfig {
            api_token: Some(TOKEN.to_string()),
            ..HttpConfig::default()
        },
        Arc::clone(&store),
        Arc::clone(&rm),
        metrics,
        log,
        WallClock::new(Instant::now(), SystemTime::now()),
    );
    let features = oasis_engine::probe::probe().expect("io_uring is available");
    let mut cfg = EngineConfig::with_layout(Layout::parse("combined", &[0, 1]).expect("layout"));
    cfg.connections_per_worker_max = 64;
    // Port 0: the engine binds a free port and says which.
    let requested: SocketAddr = "127.0.0.1:0".parse().expect("address");
    let service: Arc<dyn Service> = Arc::new(http.clone());
    let listener = Listener {
        addr: requested,
        service,
    };
    let engine = Engine::start(cfg, vec![listener], rm, features).expect("engine starts");
    let addr = engine.local_addrs()[0];
    http.attach_engine(engine.handle());
    (engine, addr, store, dir)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(STUCK)).expect("read timeout");
    s
}

fn put_head(name: &str, len: usize) -> String {
    format!(
        "PUT /media/{name} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\
         Content-Length: {len}\r\n\r\n"
    )
}

/// Reads one response with a `Content-Length` body: (status, body).
fn response(s: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let n = s
            .read(&mut byte)
            .expect("a response head before the read timeout");
        assert_eq!(n, 1, "connection closed before a response head");
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).expect("ASCII head");
    let status = head[9..12].parse().expect("status");
    let len: usize = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().expect("length"))
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body)
        .expect("the body before the read timeout");
    (status, body)
}

fn get(s: &mut TcpStream, name: &str) -> (u16, Vec<u8>) {
    s.write_all(format!("GET /media/{name} HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes())
        .expect("send GET");
    response(s)
}

/// Waits (polling, without a deadline it asserts on) until `done` holds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < STUCK, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Bytes in the upload temp files (`tmp/*.part`).
fn temp_bytes(data_dir: &std::path::Path) -> u64 {
    std::fs::read_dir(data_dir.join(oasis_storage::TMP_DIR))
        .expect("tmp directory")
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[test]
fn gets_complete_on_every_worker_while_a_commit_is_held() {
    let (engine, addr, store, dir) = start();
    let workers = engine.handle().workers().len();
    assert_eq!(workers, 2, "the layout has a worker per core listed");

    let seed = pattern(100_000, 1);
    let mut c = connect(addr);
    c.write_all(put_head("seed.bin", seed.len()).as_bytes())
        .expect("send");
    c.write_all(&seed).expect("send");
    assert_eq!(response(&mut c).0, 201);
    drop(c);
    wait_until("the seed connection is gone", || {
        engine.handle().workers().iter().all(|w| w.connections == 0)
    });

    let hold = store.hold_committer_for_test();

    // An upload with an id at hand: its temp file is created and its full pieces are written
    // by the engine while the hold lasts; only the commit waits.
    let body = pattern(BODY_BYTES, 2);
    let mut up = connect(addr);
    up.write_all(put_head("held.bin", body.len()).as_bytes())
        .expect("send");
    up.write_all(&body).expect("send");
    wait_until("the engine wrote the upload's full pieces", || {
        temp_bytes(dir.path()) >= 3 * (256 << 10)
    });

    // An upload with no id at hand: its job waits behind the held committer.
    store.empty_id_block_for_test();
    let small = pattern(1000, 3);
    let mut up2 = connect(addr);
    up2.write_all(put_head("later.bin", small.len()).as_bytes())
        .expect("send");
    up2.write_all(&small).expect("send");

    // Connections go to the least loaded worker: two per worker puts a GET on every one.
    let mut gets: Vec<TcpStream> = Vec::new();
    for _ in 0..2 * workers {
        let mut g = connect(addr);
        let (status, got) = get(&mut g, "seed.bin");
        assert_eq!(status, 200);
        assert_eq!(got, seed);
        gets.push(g);
    }
    // Six connections, three on each worker, and only two of them uploads.
    let status = engine.handle().workers();
    for (i, w) in status.iter().enumerate() {
        assert!(w.connections >= 3, "worker {i} may hold no GET: {status:?}");
    }
    // Every connection answers again, on whichever worker holds it.
    for g in &mut gets {
        let (status, got) = get(g, "seed.bin");
        assert_eq!((status, got.len()), (200, seed.len()));
    }

    // The commits cannot have happened: no answer yet.
    for s in [&mut up, &mut up2] {
        s.set_nonblocking(true).expect("nonblocking");
        let mut b = [0u8; 1];
        let e = s
            .read(&mut b)
            .expect_err("no answer while the committer is held");
        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock);
        s.set_nonblocking(false).expect("blocking");
    }
    assert!(store.lookup("held.bin").is_none());

    drop(hold);
    assert_eq!(response(&mut up).0, 201);
    assert_eq!(response(&mut up2).0, 201);
    let (status, got) = get(&mut gets[0], "held.bin");
    assert_eq!(status, 200);
    assert!(got == body, "the uploaded object reads back whole");
    assert_eq!(get(&mut gets[1], "later.bin").1, small);

    drop((up, up2, gets));
    engine.shutdown(Duration::from_secs(5));
    engine.join();
}
