//! Proves that hostile or broken clients get the right status, cannot reach anything outside the
//! data directory, and never stop the server from serving everyone else: path traversal in every
//! encoding, request smuggling, oversized heads and URIs, slowloris, garbage bytes, connection
//! limits, admission control by bandwidth, and critical resource events. Each test runs a real
//! `oasis serve` and talks to it over real sockets; a well-behaved client downloads alongside and
//! must get every byte.

mod support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{header, pattern, split_response, Server, TOKEN};

fn raw(server: &Server, bytes: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    split_response(&out)
}

/// Like [`raw`], then the client says it is done sending (a half-close), so a head it left
/// incomplete ends at once instead of at the header timeout.
fn raw_then_eof(server: &Server, bytes: &[u8]) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(bytes).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    split_response(&out)
}

/// A well-behaved client that downloads `name` completely, in a thread.
fn bystander(server: &Server, name: &str, expect: Vec<u8>) -> std::thread::JoinHandle<()> {
    let addr = server.addr;
    let req = format!("GET /media/{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    std::thread::spawn(move || {
        for _ in 0..5 {
            let mut s = TcpStream::connect(addr).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
            s.write_all(req.as_bytes()).unwrap();
            let mut out = Vec::new();
            s.read_to_end(&mut out).unwrap();
            let (status, _, body) = split_response(&out);
            assert_eq!(status, 200);
            assert!(body == expect, "bystander got {} bytes", body.len());
        }
    })
}

#[test]
fn traversal_in_every_encoding_is_refused() {
    let server = Server::start("");
    let secret = server.dir.path().join("secret.txt");
    std::fs::write(&secret, "TOP SECRET").unwrap();
    assert_eq!(server.put("ok.bin", &pattern(3_000_000, 1)), 201);
    let by = bystander(&server, "ok.bin", pattern(3_000_000, 1));
    for target in [
        "/media/../secret.txt",
        "/media/../../secret.txt",
        "/media/%2e%2e/secret.txt",
        "/media/%2E%2E%2Fsecret.txt",
        "/media/..%2fsecret.txt",
        "/media/..%5csecret.txt",
        "/media/..\\secret.txt",
        "/media/%00",
        "/media/a%00b",
        "/media/./../data/catalog.sqlite",
        "/media/objects/../../secret.txt",
        "//media//..//..//secret.txt",
        "/media/%c0%ae%c0%ae/secret.txt",
        "/../../../../etc/passwd",
    ] {
        let (status, head, body) = raw(
            &server,
            format!("GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert!(status == 400 || status == 404, "{target}: {status}\n{head}");
        assert!(
            !String::from_utf8_lossy(&body).contains("TOP SECRET"),
            "{target} leaked the file"
        );
        assert!(
            !String::from_utf8_lossy(&body).contains("root:"),
            "{target} leaked /etc/passwd"
        );
        // Uploads with the same names must not write outside the data directory either.
        let (status, _, _) = raw(
            &server,
            format!("PUT {target} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nEVIL").as_bytes(),
        );
        assert!(
            status == 400 || status == 404 || status == 405,
            "PUT {target}: {status}"
        );
    }
    // Double encoding decodes once: `%252e%252e` is the literal name `%2e%2e/secret.txt`, stored
    // inside the data directory like any other name, and served back under that name.
    let (status, _, _) = raw(
        &server,
        format!("PUT /media/%252e%252e/secret.txt HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 4\r\nConnection: close\r\n\r\nEVIL").as_bytes(),
    );
    assert_eq!(status, 201);
    let (status, _, body) = raw(
        &server,
        b"GET /media/%252e%252e/secret.txt HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!((status, body.as_slice()), (200, &b"EVIL"[..]));
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "TOP SECRET");
    by.join().unwrap();
}

#[test]
fn smuggling_oversize_and_garbage_get_their_status_and_others_are_served() {
    let mut server = Server::start("");
    let big = pattern(5_000_000, 2);
    assert_eq!(server.put("big.ts", &big), 201);
    let by = bystander(&server, "big.ts", big);

    // Content-Length with Transfer-Encoding: refused, and the smuggled request is never answered.
    let smuggle = b"POST /media/big.ts HTTP/1.1\r\nHost: t\r\nContent-Length: 44\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /media/big.ts HTTP/1.1\r\nHost: t\r\n\r\n";
    let (status, _, body) = raw(&server, smuggle);
    assert_eq!(status, 400);
    assert!(
        !String::from_utf8_lossy(&body).contains("HTTP/1.1 200"),
        "the smuggled request was served"
    );
    // Two different Content-Lengths.
    let (status, _, _) = raw(
        &server,
        b"PUT /media/x HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
    );
    assert_eq!(status, 400);
    // A transfer coding we do not speak.
    let (status, _, _) = raw(
        &server,
        b"PUT /media/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: gzip\r\n\r\n",
    );
    assert_eq!(status, 501);

    // Oversized: request line (414), one huge header and too many headers (431).
    let long_uri = format!(
        "GET /media/{} HTTP/1.1\r\nHost: t\r\n\r\n",
        "a".repeat(10_000)
    );
    assert_eq!(raw(&server, long_uri.as_bytes()).0, 414);
    let huge_header = format!(
        "GET /media/big.ts HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "b".repeat(20_000)
    );
    assert_eq!(raw(&server, huge_header.as_bytes()).0, 431);
    let mut many = String::from("GET /media/big.ts HTTP/1.1\r\nHost: t\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(raw(&server, many.as_bytes()).0, 431);
    // HTTP/2 preface and other versions.
    assert_eq!(
        raw(&server, b"GET /media/big.ts HTTP/2.0\r\nHost: t\r\n\r\n").0,
        505
    );

    // Garbage bytes of every kind: a 400 (or a close), never a crash.
    let mut rng = fastrand::Rng::with_seed(0x1234_5678);
    for round in 0..50 {
        let len = 1 + (round * 97) % 3000;
        let mut junk = vec![0u8; len];
        rng.fill(&mut junk);
        let (status, _, _) = raw_then_eof(&server, &junk);
        assert!(
            status == 400
                || status == 0
                || status == 414
                || status == 431
                || status == 501
                || status == 505,
            "junk round {round}: {status}"
        );
    }
    by.join().unwrap();
    assert!(
        server.alive(),
        "the server survived:\n{}",
        server.server_log()
    );
    let metrics = raw(
        &server,
        format!("GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .2;
    let metrics = String::from_utf8(metrics).unwrap();
    assert!(
        metrics.contains("oasis_limits_hit_total{reason=\"header_too_large\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("oasis_limits_hit_total{reason=\"uri_too_long\"} 1"),
        "{metrics}"
    );
}

#[test]
fn slowloris_gets_408_and_the_connection_closes() {
    let server = Server::start("header_timeout_secs = 2\nkeepalive_timeout_secs = 2");
    assert_eq!(server.put("f.bin", &pattern(1_000_000, 3)), 201);
    let by = bystander(&server, "f.bin", pattern(1_000_000, 3));
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // One byte every 300 ms: the head never completes within the header timeout.
    let head = b"GET /media/f.bin HTTP/1.1\r\nHost: t\r\nX-Slow: ";
    s.write_all(head).unwrap();
    let until = Instant::now() + Duration::from_secs(25);
    let mut s2 = s.try_clone().unwrap();
    let trickle = std::thread::spawn(move || {
        while Instant::now() < until {
            if s2.write_all(b"a").is_err() {
                return;
            }
            std::thread::sleep(Duration::from_millis(300));
        }
    });
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let (status, _, _) = split_response(&out);
    assert_eq!(status, 408, "{}", String::from_utf8_lossy(&out));
    trickle.join().unwrap();
    // An idle connection that never sends anything is closed after the keep-alive timeout.
    let mut idle = TcpStream::connect(server.addr).unwrap();
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(
        idle.read(&mut buf).unwrap(),
        0,
        "idle connection closed without a response"
    );
    by.join().unwrap();
}

#[test]
fn connection_limit_answers_503_and_recovers() {
    let server = Server::start("[resources]\nconnections_max = 4\n");
    assert_eq!(server.put("f.bin", &pattern(1000, 4)), 201);
    let held: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(server.addr).unwrap())
        .collect();
    // Give the acceptor time to count them; the fifth must be refused with 503.
    let mut refused = None;
    for _ in 0..50 {
        let (status, head, _) = raw(&server, b"GET /media/f.bin HTTP/1.1\r\nHost: t\r\n\r\n");
        if status == 503 {
            refused = Some(head);
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let head = refused.expect("a connection beyond connections_max is refused");
    assert!(header(&head, "Retry-After").is_some());
    drop(held);
    let mut ok = false;
    for _ in 0..100 {
        if raw(
            &server,
            b"GET /media/f.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .0 == 200
        {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "serving resumes when connections close");
}

#[test]
fn admission_control_refuses_streams_beyond_the_bandwidth_budget() {
    // 10 Mbit/s on the listener; a 4 Mbit/s object paced at 1.5x needs 6 Mbit/s: one fits, two do not.
    let server = Server::start_full(
        "[pacing]\ninitial_burst_secs = 1.0\nlead_secs = 0.0\nfactor_progressive = 1.5\n",
        "combined",
        Some(10_000_000),
    );
    let data = pattern(3_000_000, 5);
    let (status, _, _) = raw(
        &server,
        &[
            format!("PUT /media/movie.mp4?bitrate=4000000 HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", data.len()).as_bytes(),
            &data,
        ]
        .concat(),
    );
    assert_eq!(status, 201);
    let mut a = TcpStream::connect(server.addr).unwrap();
    a.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    a.write_all(b"GET /media/movie.mp4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 1024];
    a.read_exact(&mut first).unwrap();
    assert!(first.starts_with(b"HTTP/1.1 200"));
    let (status, head, _) = raw(
        &server,
        b"GET /media/movie.mp4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 503, "the second stream exceeds the budget");
    assert!(header(&head, "Retry-After").is_some());
    // A HEAD sends no body and reserves nothing.
    assert_eq!(
        raw(
            &server,
            b"HEAD /media/movie.mp4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"
        )
        .0,
        200
    );
    // The admitted stream is unaffected: it completes with every byte.
    let mut rest = Vec::new();
    a.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let (status, _, body) = split_response(&first);
    assert_eq!(status, 200);
    assert!(body == data, "the admitted stream got {} bytes", body.len());
    // Its reservation is released: a new stream is admitted.
    let mut ok = false;
    for _ in 0..50 {
        if raw(&server, b"GET /media/movie.mp4 HTTP/1.1\r\nHost: t\r\nRange: bytes=0-9\r\nConnection: close\r\n\r\n").0 == 206 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(ok, "the budget is free again after the stream ended");
    let metrics = String::from_utf8(
        raw(
            &server,
            format!("GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .2,
    )
    .unwrap();
    assert!(
        metrics.contains("oasis_admissions_refused_total{reason=\"net_bps[0]\"} 1"),
        "{metrics}"
    );
}

#[test]
fn a_full_disk_refuses_uploads_with_507_and_keeps_streaming() {
    // A library imported while no server runs, then served with a free-space threshold above
    // what the machine has: the observer raises a critical disk_free event from a real statvfs
    // reading within a second of start-up.
    let dir = tempfile::tempdir().unwrap();
    let body = pattern(3_000_000, 4);
    let data = dir.path().join("data");
    support::import_one(&data, "stored.ts", &body, 1_000_000_000);
    let server = Server::start_on_with(
        &data,
        "\n[resources]\ndisk_space_bytes = 1000000000\ndisk_free_warn_bytes = 1000000000000000000\ndisk_free_critical_bytes = 1000000000000000000\n",
    );
    support::wait_until(&server, "the disk_free critical event", || {
        support::metric(&server, "oasis_resource_critical") == Some(1)
    });
    // Uploads need the resource in danger: 507 and why.
    let (status, head, reply) = raw(
        &server,
        format!("PUT /media/x.bin HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 3\r\nConnection: close\r\n\r\nabc").as_bytes(),
    );
    assert_eq!(status, 507, "{head}");
    let reply = String::from_utf8_lossy(&reply);
    assert!(
        reply.contains("nearly full") && reply.contains("disk_free_critical_bytes"),
        "{reply}"
    );
    // Streams of stored objects do not: the viewers keep watching.
    let (status, head, got) = raw(
        &server,
        b"GET /media/stored.ts HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
    );
    assert_eq!(status, 200, "{head}");
    assert_eq!(got, body);
    assert!(
        server.server_log().contains("critical event: disk_free"),
        "the event is logged"
    );
}

#[test]
fn a_reader_that_stops_reading_is_closed_after_the_send_timeout() {
    let server = Server::start("send_timeout_secs = 1");
    let body = pattern(24_000_000, 9);
    assert_eq!(server.put("big.bin", &body), 201);
    // Asks for 24 MB and reads nothing: the socket buffers fill, the server waits for room.
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.write_all(b"GET /media/big.bin HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    // Someone else streams the same object meanwhile.
    bystander(&server, "big.bin", body.clone()).join().unwrap();
    // The server closes the stalled connection without a byte read from it: its connection
    // reservation goes back (the status request itself holds the only one left).
    let until = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, _, json) = raw(
            &server,
            format!("GET /api/status HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
        );
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let used = v["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["resource"] == "connections")
            .map(|r| r["used"].as_u64().unwrap())
            .unwrap();
        if used == 1 {
            break;
        }
        assert!(
            Instant::now() < until,
            "the stalled connection is still open ({used} connections held)"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let (_, _, metrics) = raw(
        &server,
        format!("GET /metrics HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n").as_bytes(),
    );
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics.contains("oasis_limits_hit_total{reason=\"send_timeout\"} 1"),
        "{metrics}"
    );
    drop(s);
}
