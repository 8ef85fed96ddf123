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
