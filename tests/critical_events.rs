//! Proves that a critical event reaches the storage cache of a running `oasis serve`: objects are
//! fetched so the open-file cache holds them, then idle client connections push the connection
//! account past its critical threshold (50 % of 20 here), and `/metrics`, read over a keep-alive
//! connection opened before, shows the open-file reservations drop to zero (the supervisor's
//! shrink closed every cached file no stream was reading) while the critical gauge is 1. It polls
//! with a generous deadline and asserts no durations.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{pattern, Server, TOKEN};

/// One response on a keep-alive connection: (head, body), read by Content-Length.
fn exchange(s: &mut TcpStream, request: &str) -> (String, Vec<u8>) {
    s.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    let mut byte = [0u8; 1];
    while !raw.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        raw.push(byte[0]);
    }
    let head = String::from_utf8(raw).unwrap();
    let len: usize = support::header(&head, "Content-Length")
        .unwrap()
        .parse()
        .unwrap();
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    (head, body)
}

fn gauge(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("{name} not in /metrics:\n{metrics}"))
}

#[test]
fn a_critical_event_closes_idle_cached_files() {
    let server = Server::start(
        "\n[resources]\nconnections_max = 20\nwarn_percent = 10\ncritical_percent = 50\n",
    );
    for i in 0..3u8 {
        let name = format!("c/o{i}.bin");
        let data = pattern(70_000 + i as usize, i);
        assert_eq!(server.put(&name, &data), 201);
        let (status, _, body) = server.request(
            &format!("GET /media/{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            b"",
        );
        assert_eq!((status, body == data), (200, true));
    }
    let mut watch = TcpStream::connect(server.addr).unwrap();
    watch
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let get_metrics =
        &format!("GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    let used_files = "oasis_reservation_used{resource=\"open_files\"}";
    let (_, m) = exchange(&mut watch, get_metrics);
    let m = String::from_utf8(m).unwrap();
    assert_eq!(gauge(&m, used_files), 3, "the three objects are cached");
    assert_eq!(gauge(&m, "oasis_resource_critical"), 0);

    // 1 watching + 10 idle connections: the connection account reaches 50 % of 20.
    let idle: Vec<TcpStream> = (0..10)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let until = Instant::now() + Duration::from_secs(20);
    let last = loop {
        let (_, m) = exchange(&mut watch, get_metrics);
        let m = String::from_utf8(m).unwrap();
        if gauge(&m, "oasis_resource_critical") == 1 && gauge(&m, used_files) == 0 {
            break m;
        }
        assert!(
            Instant::now() < until,
            "the cache was not shrunk:\n{m}\n{}",
            server.server_log()
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(gauge(&last, used_files), 0);
    assert!(server
        .server_log()
        .contains("critical event: idle open files closed"));
    drop(idle);
}

/// Descriptors the server process holds now.
fn fds_open(server: &Server) -> u64 {
    std::fs::read_dir(format!("/proc/{}/fd", server.pid()))
        .unwrap()
        .count() as u64
}

/// A descriptor shortage refuses a new connection's first stream (503, `Retry-After`), while a
/// keep-alive connection served before keeps being answered; new connections are served again
/// once the shortage is over. The shortage is real: the server runs under an open-files limit
/// of 2048, idle connections take descriptors, and the observer's threshold is set (by a
/// reload) just below what is open.
#[test]
fn a_descriptor_shortage_refuses_new_connections_not_held_ones() {
    const NOFILE: u64 = 2048;
    let mut server = Server::start_with_nofile("\n[storage]\nopen_files_max = 64\n", NOFILE);
    let data = pattern(300_000, 7);
    assert_eq!(server.put("fd/a.bin", &data), 201);
    let mut held = TcpStream::connect(server.addr).unwrap();
    held.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let get = "GET /media/fd/a.bin HTTP/1.1\r\nHost: t\r\n\r\n";
    let (head, body) = exchange(&mut held, get);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(body, data);

    let before = fds_open(&server);
    let idle: Vec<TcpStream> = (0..80)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    let status =
        &format!("GET /api/status HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\n\r\n");
    // Every idle connection accepted (its descriptor open) before the threshold is set.
    let until = Instant::now() + Duration::from_secs(20);
    while fds_open(&server) < before + 80 {
        assert!(
            Instant::now() < until,
            "the idle connections were not accepted"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let percent = fds_open(&server) * 100 / NOFILE;
    assert!(
        before * 100 / NOFILE < percent,
        "{before} descriptors at start"
    );
    let mut config = std::fs::read_to_string(server.config_path()).unwrap();
    config.push_str(&format!(
        "\n[resources]\nfds_warn_percent = {percent}\nfds_critical_percent = {percent}\n"
    ));
    std::fs::write(server.config_path(), config).unwrap();
    let hup = std::process::Command::new("kill")
        .args(["-HUP", &server.pid().to_string()])
        .status()
        .unwrap();
    assert!(hup.success());
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, s) = exchange(&mut held, status);
        let s = String::from_utf8(s).unwrap();
        if s.contains("\"critical_sources\":[\"file_descriptors\"") {
            break;
        }
        assert!(
            Instant::now() < until,
            "no descriptor event: {s}\n{}",
            server.server_log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // The held connection's next GETs are answered in full.
    for _ in 0..3 {
        let (head, body) = exchange(&mut held, get);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert_eq!(body, data);
    }
    // A new connection's first stream is refused; its health probe is answered.
    let get_close = "GET /media/fd/a.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let (status_code, head, _) = server.request(get_close, b"");
    assert_eq!(status_code, 503, "{head}");
    assert_eq!(support::header(&head, "Retry-After"), Some("2"));
    let healthz = "GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
    let (status_code, head, _) = server.request(healthz, b"");
    assert_eq!(status_code, 200, "{head}");

    // The shortage ends with the idle connections: new connections are served again.
    drop(idle);
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (status_code, _, body) = server.request(get_close, b"");
        if status_code == 200 {
            assert_eq!(body, data);
            break;
        }
        assert!(Instant::now() < until, "still refused: {status_code}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(server.alive());
}
