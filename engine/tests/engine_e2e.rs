//! Proves the engine moves bytes end to end over real sockets, in combined and split layouts.
//!
//! A toy line protocol runs on the engine: the client sends `GET <len>\n`, the session answers
//! `OK <len>\n` and then streams `<len>` bytes of a real file in Data phase (so in a split layout
//! the session moves from a command worker to a data worker, and file reads go to a file worker),
//! then returns to Command phase for the next request on the same connection. The test checks
//! every byte, many clients at once, keep-alive, the connection count going back to zero, and a
//! graceful shutdown that lets an in-flight response finish. Both send paths (splice, and read
//! into a pool chunk then send) are run.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::{Duration, Instant};

use oasis_engine::resource::{AccountLimits, ResourceLimits};
use oasis_engine::{
    ConnInfo, Engine, EngineConfig, JobResult, Layout, Listener, Phase, ResourceManager, Service,
    Session, Transmit,
};

struct Lines {
    file: Arc<File>,
}

struct LineSession {
    file: Arc<File>,
    /// Bytes of the current response still to send.
    body_left: u64,
    body_off: u64,
    head: Option<Vec<u8>>,
    closed: bool,
    draining: bool,
}

impl Service for Lines {
    fn open(&self, _info: ConnInfo, _now: Instant) -> Box<dyn Session> {
        Box::new(LineSession {
            file: Arc::clone(&self.file),
            body_left: 0,
            body_off: 0,
            head: None,
            closed: false,
            draining: false,
        })
    }
    fn refusal(&self) -> &[u8] {
        b"BUSY\n"
    }
}

impl Session for LineSession {
    fn on_input(&mut self, input: &[u8], _now: Instant) -> usize {
        if self.head.is_some() || self.body_left > 0 {
            return 0;
        }
        let Some(nl) = input.iter().position(|&b| b == b'\n') else {
            return 0;
        };
        let line = std::str::from_utf8(&input[..nl]).unwrap();
        // "GET <len>" sends the object's first <len> bytes, "GET <len> <offset>" from <offset>.
        let mut words = line.strip_prefix("GET ").unwrap().split(' ');
        let len: u64 = words.next().unwrap().parse().unwrap();
        let off: u64 = words.next().map_or(0, |w| w.parse().unwrap());
        self.head = Some(format!("OK {len}\n").into_bytes());
        self.body_left = len;
        self.body_off = off;
        nl + 1
    }
    fn on_peer_closed(&mut self, _now: Instant) {
        self.closed = true;
    }
    fn poll_transmit(&mut self, _now: Instant) -> Transmit {
        if let Some(h) = self.head.take() {
            return Transmit::Bytes(h);
        }
        if self.body_left > 0 {
            return Transmit::File {
                file: Arc::clone(&self.file),
                offset: self.body_off,
                len: self.body_left,
            };
        }
        if self.closed || self.draining {
            return Transmit::Close;
        }
        Transmit::Idle
    }
    fn on_sent(&mut self, result: std::io::Result<u64>, returned: Option<Vec<u8>>, _now: Instant) {
        match result {
            // `returned` is the head's buffer; file chunks come back without one.
            Ok(n) if returned.is_none() => {
                self.body_left -= n;
                self.body_off += n;
            }
            Ok(_) => {}
            Err(_) => {
                self.closed = true;
                self.body_left = 0; // nothing more is sent on a failed connection
            }
        }
    }
    fn on_job_done(&mut self, _r: JobResult, _now: Instant) {}
    fn deadline(&self) -> Option<Instant> {
        None
    }
    fn on_deadline(&mut self, _now: Instant) {}
    fn on_shutdown(&mut self, _now: Instant) {
        self.draining = true;
    }
    fn wants_input(&self) -> bool {
        self.body_left == 0 && self.head.is_none()
    }
    fn phase(&self) -> Phase {
        if self.body_left > 0 {
            Phase::Data
        } else {
            Phase::Command
        }
    }
    fn on_close(&mut self, _now: Instant) {}
}

fn content(i: u64) -> u8 {
    (i * 31 % 251) as u8
}

fn start(layout: &str) -> (Engine, SocketAddr, Arc<ResourceManager>, tempfile::TempDir) {
    start_with(layout, oasis_engine::SendPath::ZeroCopy)
}

fn start_with(
    layout: &str,
    send_path: oasis_engine::SendPath,
) -> (Engine, SocketAddr, Arc<ResourceManager>, tempfile::TempDir) {
    start_cfg(layout, |cfg| cfg.send_path = send_path)
}

fn start_cfg(
    layout: &str,
    tweak: impl FnOnce(&mut EngineConfig),
) -> (Engine, SocketAddr, Arc<ResourceManager>, tempfile::TempDir) {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("object");
    let data: Vec<u8> = (0..3_000_000u64).map(content).collect();
    std::fs::write(&path, &data).unwrap();
    let rm = ResourceManager::new(&ResourceLimits {
        memory_bytes: AccountLimits::new(1 << 30),
        net_bps: vec![AccountLimits::new(u64::MAX)],
        disk_read_bps: AccountLimits::new(u64::MAX),
        disk_space_bytes: AccountLimits::new(u64::MAX),
        connections: AccountLimits::new(1000),
        open_files: AccountLimits::new(1000),
    });
    let features = oasis_engine::probe::probe().unwrap();
    let mut cfg = EngineConfig::with_layout(Layout::parse(layout, &[0, 1]).unwrap());
    cfg.chunk_bytes = 64 * 1024;
    cfg.chunks = 8; // fewer chunks than clients: waiting for a chunk is exercised too
    cfg.connections_per_worker_max = 256;
    tweak(&mut cfg);
    // Port 0: the engine binds a free port and says which (no bind-close-rebind race).
    let requested: SocketAddr = "127.0.0.1:0".parse().unwrap();
    let service: Arc<dyn Service> = Arc::new(Lines {
        file: Arc::new(File::open(&path).unwrap()),
    });
    let engine = Engine::start(
        cfg,
        vec![Listener {
            addr: requested,
            service,
        }],
        Arc::clone(&rm),
        features,
    )
    .unwrap();
    let addr = engine.local_addrs()[0];
    (engine, addr, rm, dir)
}

fn fetch(stream: &mut BufReader<TcpStream>, len: u64) {
    fetch_at(stream, len, 0);
}

/// Asks for `len` bytes of the object from `off` and checks every one.
fn fetch_at(stream: &mut BufReader<TcpStream>, len: u64, off: u64) {
    stream
        .get_mut()
        .write_all(format!("GET {len} {off}\n").as_bytes())
        .unwrap();
    let mut line = String::new();
    stream.read_line(&mut line).unwrap();
    assert_eq!(line, format!("OK {len}\n"));
    let mut body = vec![0u8; len as usize];
    stream.read_exact(&mut body).unwrap();
    for (i, b) in body.iter().enumerate() {
        assert_eq!(
            *b,
            content(off + i as u64),
            "byte {i} of a {len}-byte response from {off}"
        );
    }
}

fn run_clients(addr: SocketAddr) {
    let clients: Vec<_> = (0..12u64)
        .map(|c| {
            std::thread::spawn(move || {
                let s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut s = BufReader::new(s);
                for r in 0..4u64 {
                    fetch(
                        &mut s,
                        [0, 1, 65_536, 100_000, 2_999_999][((c + r) % 5) as usize],
                    );
                }
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
}

fn wait_for_zero(rm: &ResourceManager) {
    let until = Instant::now() + Duration::from_secs(10);
    while rm.used(oasis_engine::Resource::Connections) != 0 {
        assert!(Instant::now() < until, "connections were not released");
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn combined_layout_streams_every_byte() {
    let (engine, addr, rm, _dir) = start("combined");
    run_clients(addr);
    wait_for_zero(&rm);
    engine.shutdown(Duration::from_secs(5));
    engine.join();
}

/// Drops `dir`/object from the page cache, so the next reads of it go to the disk, and waits
/// out the time workers trust pages they last found resident. False when the file system keeps
/// the pages anyway (tmpfs).
/// A test that cannot run on this host fails, saying why; a developer may opt out with
/// `OASIS_ALLOW_SKIP=1` (ignored when `CI` is set), so it never passes silently.
fn cannot_run(why: &str) {
    if std::env::var_os("OASIS_ALLOW_SKIP").is_some() && std::env::var_os("CI").is_none() {
        eprintln!("skipped (OASIS_ALLOW_SKIP is set): {why}");
        return;
    }
    panic!("this test cannot run here: {why} (set OASIS_ALLOW_SKIP=1 to skip it outside CI)");
}

fn evict(dir: &std::path::Path) -> bool {
    let f = File::open(dir.join("object")).unwrap();
    f.sync_all().unwrap(); // dirty pages are not dropped
                           // SAFETY: a valid fd; fadvise only drops clean cached pages of this file.
    let rc = unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        )
    };
    assert_eq!(rc, 0);
    // Longer than a worker trusts a range it found resident (100 ms).
    std::thread::sleep(Duration::from_millis(150));
    let mut byte = 0u8;
    let iov = libc::iovec {
        iov_base: (&mut byte as *mut u8).cast(),
        iov_len: 1,
    };
    // SAFETY: `iov` describes one live byte for the duration of the call.
    let n = unsafe {
        libc::preadv2(
            std::os::fd::AsRawFd::as_raw_fd(&f),
            &iov,
            1,
            0,
            libc::RWF_NOWAIT,
        )
    };
    n != 1
}

/// A client that asks for four 3 MB responses at once and reads nothing for 300 ms: more than
/// the socket buffers hold, so the server's sends find the socket full. Then it checks every byte.
fn slow_reader(addr: SocketAddr) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let mut s = BufReader::with_capacity(4096, s);
        s.get_mut().write_all(&b"GET 2999999\n".repeat(4)).unwrap();
        std::thread::sleep(Duration::from_millis(300));
        for _ in 0..4 {
            let mut line = String::new();
            s.read_line(&mut line).unwrap();
            assert_eq!(line, "OK 2999999\n");
            let mut body = vec![0u8; 2_999_999];
            s.read_exact(&mut body).unwrap();
            for (i, b) in body.iter().enumerate() {
                assert_eq!(*b, content(i as u64), "byte {i}");
            }
        }
    })
}

#[test]
fn hot_pages_wait_for_a_full_socket_and_lose_nothing() {
    let (engine, addr, rm, _dir) = start("combined");
    // The object is now in the page cache, so its bytes leave by sendfile, not the ring. Each
    // sendfile offers more than a stalled reader's socket takes: partial sends, then POLLOUT.
    run_clients(addr);
    let slow: Vec<_> = (0..3).map(|_| slow_reader(addr)).collect();
    run_clients(addr);
    for s in slow {
        s.join().unwrap();
    }
    wait_for_zero(&rm);
    engine.shutdown(Duration::from_secs(5));
    engine.join();
}

#[test]
fn cold_pages_and_slow_readers_take_the_ring_paths() {
    // Out of the page cache, pages must never be waited for by a worker: by default a cold
    // stretch's 2 MiB block is fetched (a ring MADVISE populates it in io_uring's threads) and
    // then sent; with no fetches allowed, the file half of a splice goes through the ring. A
    // reader that stalls makes the sends wait for POLLOUT.
    for (layout, fetches) in [("combined", 16), ("combined", 0), ("f=1,nc=1,nd=1", 16)] {
        let (engine, addr, rm, dir) = start_cfg(layout, |cfg| cfg.cold_fetches_max = fetches);
        if !evict(dir.path()) {
            cannot_run("pages stay resident on this file system (fadvise DONTNEED keeps them)");
            return;
        }
        let slow = slow_reader(addr);
        run_clients(addr);
        evict(dir.path());
        run_clients(addr);
        slow.join().unwrap();
        wait_for_zero(&rm);
        let workers = engine.handle().workers();
        let fetched: u64 = workers.iter().map(|w| w.cold_fetches).sum();
        let spliced: u64 = workers.iter().map(|w| w.cold_splices).sum();
        if fetches == 0 {
            assert_eq!(fetched, 0, "{layout}: no fetches allowed");
            assert!(spliced > 0, "{layout}: cold pieces were spliced");
        } else {
            assert!(fetched > 0, "{layout}: cold stretches were fetched");
        }
        engine.shutdown(Duration::from_secs(5));
        engine.join();
    }
}

#[test]
fn a_crowd_on_a_cold_object_waits_for_one_fetch_per_block() {
    // 32 clients ask for the same evicted 3 MB object at once, on one worker allowed one fetch
    // at a time, half from its first 2 MiB block and half from its second. Each block is read
    // once: a stretch whose block is being fetched waits for that fetch (a join), one whose
    // block is not waits for the fetch in flight to end (queued) rather than splicing, and
    // every byte arrives.
    const CLIENTS: usize = 32;
    let (engine, addr, rm, dir) = start_cfg("combined", |cfg| {
        cfg.layout = Layout::parse("combined", &[0]).unwrap();
        cfg.connections_per_worker_max = 64;
        cfg.cold_fetches_max = 1;
    });
    let counts = |engine: &Engine| {
        let workers = engine.handle().workers();
        let sum =
            |f: fn(&oasis_engine::runtime::WorkerStatus) -> u64| workers.iter().map(f).sum::<u64>();
        [
            sum(|w| w.cold_fetches),
            sum(|w| w.cold_joins),
            sum(|w| w.cold_queued),
            sum(|w| w.cold_splices),
        ]
    };
    // A round whose requests all came after the fetches proves little (each found its block
    // in): the crowd is sent again, on the object evicted again, until a round has requests
    // that joined a fetch and requests that queued for one.
    let mut overlapped = false;
    for _round in 0..5 {
        if !evict(dir.path()) {
            cannot_run("pages stay resident on this file system (fadvise DONTNEED keeps them)");
            return;
        }
        let before = counts(&engine);
        let go = Arc::new(std::sync::Barrier::new(CLIENTS));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|i| {
                let go = Arc::clone(&go);
                std::thread::spawn(move || {
                    let s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    let mut s = BufReader::new(s);
                    go.wait();
                    if i % 2 == 0 {
                        fetch(&mut s, 2_999_999);
                    } else {
                        fetch_at(&mut s, 900_000, 2 << 20);
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
        wait_for_zero(&rm);
        let after = counts(&engine);
        let [fetched, joined, queued, spliced] = [0, 1, 2, 3].map(|i| after[i] - before[i]);
        eprintln!("fetched {fetched}, joined {joined}, queued {queued}, spliced {spliced}");
        assert!(
            (1..=2).contains(&fetched),
            "each block is fetched at most once: {fetched}"
        );
        assert_eq!(spliced, 0, "no block was read beside its fetch");
        if joined > 0 && queued > 0 {
            overlapped = true;
            break;
        }
    }
    assert!(
        overlapped,
        "in 5 rounds no round had requests both joining a fetch and queued for one"
    );
    engine.shutdown(Duration::from_secs(5));
    engine.join();
}

#[test]
fn a_critical_event_makes_workers_close_idle_pipes() {
    use oasis_engine::resource::{External, Level};
    // With no cold fetches allowed, cold pages take the ring splice, which leaves pipes pooled
    // in the workers, each reserved as memory (hot pages leave with sendfile and need none).
    let (engine, addr, rm, dir) = start_cfg("combined", |cfg| cfg.cold_fetches_max = 0);
    evict(dir.path());
    run_clients(addr);
    wait_for_zero(&rm);
    let before = rm.used(oasis_engine::Resource::MemoryBytes);
    rm.set_external(External::SystemMemory, Level::Critical);
    let until = Instant::now() + Duration::from_secs(10);
    while rm.used(oasis_engine::Resource::MemoryBytes) >= before {
        assert!(Instant::now() < until, "no worker let go of its idle pipes");
        std::thread::sleep(Duration::from_millis(10));
    }
    let freed = before - rm.used(oasis_engine::Resource::MemoryBytes);
    assert_eq!(
        freed % 4096,
        0,
        "pipes are reserved 4096 bytes each, freed {freed}"
    );
    rm.set_external(External::SystemMemory, Level::Normal);
    run_clients(addr); // and streaming goes on once the event is over
    wait_for_zero(&rm);
    engine.shutdown(Duration::from_secs(5));
    engine.join();
}

#[test]
fn read_send_path_streams_every_byte_in_both_layouts() {
    for layout in ["combined", "f=1,nc=1,nd=1"] {
        let (engine, addr, rm, _dir) = start_with(layout, oasis_engine::SendPath::ReadSend);
        run_clients(addr);
        wait_for_zero(&rm);
        engine.shutdown(Duration::from_secs(5));
        engine.join();
    }
}

#[test]
fn split_layout_moves_sessions_between_roles() {
    let (engine, addr, rm, _dir) = start("f=1,nc=1,nd=2");
    run_clients(addr);
    wait_for_zero(&rm);
    engine.shutdown(Duration::from_secs(5));
    engine.join();
}

#[test]
fn shutdown_lets_a_response_finish_and_refuses_new_connections() {
    let (engine, addr, rm, _dir) = start("combined:2");
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut s = BufReader::new(s);
    fetch(&mut s, 10); // the connection is established and served
    s.get_mut().write_all(b"GET 2999999\n").unwrap();
    let mut line = String::new();
    s.read_line(&mut line).unwrap();
    engine.shutdown(Duration::from_secs(10));
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap(); // the server finishes the response, then closes
    assert_eq!(body.len(), 2_999_999);
    engine.join();
    assert_eq!(rm.used(oasis_engine::Resource::Connections), 0);
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listener is closed after shutdown"
    );
}
