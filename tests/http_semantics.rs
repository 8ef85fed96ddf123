//! Proves the HTTP behaviour a player, a CDN or an operator relies on, against a real `oasis serve`
//! process over real sockets, mostly with curl as the client:
//! full GETs byte for byte, HEAD, single/suffix/open/multiple ranges, 416, conditional requests
//! (304, 412, If-Range), CORS, uploads with Content-Length and chunked, `oasis put|ls|stat|rm`,
//! auth, keep-alive with 10,000 pipelined requests, replace-while-streaming, metrics, and that
//! SIGTERM exits 0 after a response in flight finished.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::Duration;

use support::{header, pattern, run, Server, TOKEN};

fn curl(args: &[&str]) -> (String, Vec<u8>) {
    // -D - puts the response head on stdout before the body; -o writes the body to a file.
    let dir = tempfile::tempdir().unwrap();
    let body_path = dir.path().join("body");
    let mut full = vec!["-s", "-D", "-", "-o", body_path.to_str().unwrap()];
    full.extend_from_slice(args);
    let out = run("curl", &full);
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        std::fs::read(&body_path).unwrap_or_default(),
    )
}

fn status_of(head: &str) -> u16 {
    // With several responses (100 Continue), the last status line counts.
    head.lines()
        .rfind(|l| l.starts_with("HTTP/"))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

#[test]
fn get_head_ranges_and_conditionals() {
    let server = Server::start("");
    let data = pattern(3_000_000, 1);
    assert_eq!(server.put("v/clip.mp4", &data), 201);
    let url = server.url("/media/v/clip.mp4");

    let (head, body) = curl(&[&url]);
    assert_eq!(status_of(&head), 200);
    assert_eq!(body, data, "full GET returns every byte");
    assert_eq!(header(&head, "Content-Type"), Some("video/mp4"));
    assert_eq!(header(&head, "Accept-Ranges"), Some("bytes"));
    assert_eq!(header(&head, "Access-Control-Allow-Origin"), Some("*"));
    let etag = header(&head, "ETag").unwrap().to_string();
    let last_modified = header(&head, "Last-Modified").unwrap().to_string();
    assert!(
        etag.starts_with('"') && !etag.starts_with("W/"),
        "strong ETag: {etag}"
    );
    assert!(header(&head, "Date").is_some());

    // HEAD: the same head, no body (read raw, until the server closes).
    let (status, head, body) = server.request(
        "HEAD /media/v/clip.mp4 HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(status, 200);
    assert_eq!(header(&head, "Content-Length"), Some("3000000"));
    assert_eq!(header(&head, "ETag"), Some(etag.as_str()));
    assert!(body.is_empty(), "HEAD sent {} body bytes", body.len());

    for (range, start, end) in [
        ("0-99", 0, 99),
        ("2999990-", 2_999_990, 2_999_999),
        ("-10", 2_999_990, 2_999_999),
        ("1000-5000000", 1000, 2_999_999),
    ] {
        let (head, body) = curl(&["-r", range, &url]);
        assert_eq!(status_of(&head), 206, "range {range}");
        assert_eq!(
            header(&head, "Content-Range"),
            Some(format!("bytes {start}-{end}/3000000").as_str())
        );
        assert_eq!(body, &data[start..=end], "range {range}");
    }

    let (head, _) = curl(&["-r", "3000000-", &url]);
    assert_eq!(status_of(&head), 416);
    assert_eq!(header(&head, "Content-Range"), Some("bytes */3000000"));

    // Two ranges: multipart/byteranges whose parts carry the right bytes.
    let (head, body) = curl(&["-r", "0-9,100-109", &url]);
    assert_eq!(status_of(&head), 206);
    let ct = header(&head, "Content-Type").unwrap();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart content type");
    assert_eq!(
        header(&head, "Content-Length")
            .unwrap()
            .parse::<usize>()
            .unwrap(),
        body.len()
    );
    let text = body.clone();
    let parts: Vec<&[u8]> = split_on(&text, format!("--{boundary}").as_bytes());
    let payloads: Vec<Vec<u8>> = parts
        .iter()
        .filter_map(|p| {
            let start = p.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
            Some(p[start..p.len() - 2].to_vec())
        })
        .collect();
    assert_eq!(
        payloads,
        vec![data[0..10].to_vec(), data[100..110].to_vec()]
    );

    // Overlapping ranges adding up to more than the object: served whole, as nginx does.
    let (head, body) = curl(&["-r", "0-2999999,0-2999999", &url]);
    assert_eq!(status_of(&head), 200);
    assert_eq!(body.len(), 3_000_000);

    // Conditionals.
    let (head, body) = curl(&["-H", &format!("If-None-Match: {etag}"), &url]);
    assert_eq!(status_of(&head), 304);
    assert!(body.is_empty());
    assert_eq!(header(&head, "ETag"), Some(etag.as_str()));
    let (head, _) = curl(&["-H", &format!("If-Modified-Since: {last_modified}"), &url]);
    assert_eq!(status_of(&head), 304);
    let (head, _) = curl(&["-H", "If-None-Match: \"other\"", &url]);
    assert_eq!(status_of(&head), 200);
    let (head, _) = curl(&["-H", "If-Match: \"other\"", &url]);
    assert_eq!(status_of(&head), 412);
    // If-Range: a matching validator keeps the range, a stale one gets the whole object.
    let (head, body) = curl(&["-r", "0-9", "-H", &format!("If-Range: {etag}"), &url]);
    assert_eq!((status_of(&head), body.len()), (206, 10));
    let (head, body) = curl(&["-r", "0-9", "-H", "If-Range: \"stale\"", &url]);
    assert_eq!((status_of(&head), body.len()), (200, 3_000_000));

    // CORS preflight from a browser player on another origin.
    let (head, _) = curl(&[
        "-X",
        "OPTIONS",
        "-H",
        "Origin: http://player.example",
        "-H",
        "Access-Control-Request-Method: GET",
        &url,
    ]);
    assert_eq!(status_of(&head), 204);
    assert!(header(&head, "Access-Control-Allow-Methods")
        .unwrap()
        .contains("GET"));

    let (head, _) = curl(&[&server.url("/media/missing.mp4")]);
    assert_eq!(status_of(&head), 404);
    let (head, _) = curl(&["-X", "POST", &url]);
    assert_eq!(status_of(&head), 405);
    assert!(header(&head, "Allow").unwrap().contains("GET"));
}

fn split_on<'a>(hay: &'a [u8], sep: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i + sep.len() <= hay.len() {
        if &hay[i..i + sep.len()] == sep {
            out.push(&hay[start..i]);
            i += sep.len();
            start = i;
        } else {
            i += 1;
        }
    }
    out.push(&hay[start..]);
    out
}

#[test]
fn uploads_auth_and_the_cli() {
    let server = Server::start("");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("movie.webm");
    let data = pattern(1_234_567, 2);
    std::fs::write(&file, &data).unwrap();
    let url = server.url("/media/up/movie.webm");

    // No token, wrong token: refused, nothing stored.
    let (head, _) = curl(&["-T", file.to_str().unwrap(), &url]);
    assert_eq!(status_of(&head), 401);
    let (head, _) = curl(&[
        "-T",
        file.to_str().unwrap(),
        "-H",
        "Authorization: Bearer wrong-token-0000000",
        &url,
    ]);
    assert_eq!(status_of(&head), 401);
    assert_eq!(status_of(&curl(&[&url]).0), 404);

    // Content-Length upload with Expect: 100-continue (curl sends it for large bodies).
    let auth = format!("Authorization: Bearer {TOKEN}");
    let (head, body) = curl(&[
        "-T",
        file.to_str().unwrap(),
        "-H",
        &auth,
        "-H",
        "Expect: 100-continue",
        &url,
    ]);
    assert_eq!(status_of(&head), 201, "{head}");
    let meta: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(meta["size_bytes"], 1_234_567);
    assert_eq!(meta["content_type"], "video/webm");
    assert_eq!(curl(&[&url]).1, data);

    // Chunked upload replaces it (200, not 201).
    let data2 = pattern(777_777, 3);
    std::fs::write(&file, &data2).unwrap();
    let (head, _) = curl(&[
        "-H",
        &auth,
        "-H",
        "Transfer-Encoding: chunked",
        "--data-binary",
        &format!("@{}", file.display()),
        "-X",
        "PUT",
        &url,
    ]);
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(curl(&[&url]).1, data2);

    // The uploader's Content-Type is kept and served; `application/octet-stream` (generic
    // tools' "unknown") leaves it to the extension; a malformed one is refused.
    let typed = |ct: &str| {
        let put = format!(
            "PUT /media/typed.bin HTTP/1.1\r\nHost: t\r\n{auth}\r\nContent-Type: {ct}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"
        );
        let (status, _, _) = server.request(&put, b"ok");
        let get = "HEAD /media/typed.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n";
        let (_, head, _) = server.request(get, b"");
        (
            status,
            support::header(&head, "Content-Type").map(str::to_string),
        )
    };
    assert_eq!(
        typed("text/vtt; charset=utf-8"),
        (201, Some("text/vtt; charset=utf-8".into()))
    );
    assert_eq!(
        typed("application/octet-stream"),
        (200, Some("application/octet-stream".into()))
    );
    let (status, _, body) = server.request(
        &format!("PUT /media/typed.vtt HTTP/1.1\r\nHost: t\r\n{auth}\r\nContent-Type: application/octet-stream\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"),
        b"ok",
    );
    assert_eq!(status, 201);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()["content_type"],
        "text/vtt"
    );
    let (status, _, body) = server.request(
        &format!("PUT /media/typed.bin HTTP/1.1\r\nHost: t\r\n{auth}\r\nContent-Type: video mp4\r\nContent-Length: 2\r\nConnection: close\r\n\r\n"),
        b"ok",
    );
    assert_eq!(status, 400);
    assert!(String::from_utf8_lossy(&body).contains("not a media type"));

    // 411 without a length, 413 beyond the limit, 400 for a hostile name.
    let (status, _, _) = server.request(
        &format!("PUT /media/x HTTP/1.1\r\nHost: t\r\n{auth}\r\n\r\n"),
        b"",
    );
    assert_eq!(status, 411);
    let (status, _, _) = server.request(
        &format!(
            "PUT /media/x HTTP/1.1\r\nHost: t\r\n{auth}\r\nContent-Length: 99999999999999\r\n\r\n"
        ),
        b"",
    );
    assert_eq!(status, 413);
    let (status, _, _) = server.request(
        &format!("PUT /media/a%5Cb HTTP/1.1\r\nHost: t\r\n{auth}\r\nContent-Length: 1\r\n\r\n"),
        b"x",
    );
    assert_eq!(status, 400);
    // A short body: the connection closes before the upload is complete; nothing is stored.
    let (status, _, _) = server.request(
        &format!("PUT /media/short HTTP/1.1\r\nHost: t\r\n{auth}\r\nContent-Length: 100\r\n\r\n"),
        b"only-ten!!",
    );
    assert_eq!(status, 0, "no answer to an incomplete upload");
    assert_eq!(status_of(&curl(&[&server.url("/media/short")]).0), 404);

    // The CLI: put a directory as a package, ls, stat, rm.
    let pkg = dir.path().join("pkg");
    std::fs::create_dir_all(pkg.join("sub")).unwrap();
    std::fs::write(pkg.join("a.ts"), pattern(1000, 4)).unwrap();
    std::fs::write(pkg.join("sub/b.ts"), pattern(2000, 5)).unwrap();
    let cli = |args: &[&str]| {
        let out = Command::new(support::oasis_bin())
            .args(args)
            .args(["--server", &server.url("")])
            .env("OASIS_API_TOKEN", TOKEN)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, _, err) = cli(&[
        "put",
        pkg.to_str().unwrap(),
        "--name",
        "pack",
        "--bitrate",
        "800000",
    ]);
    assert!(ok, "{err}");
    let (ok, out, err) = cli(&["ls", "pack/"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("pack/a.ts\t1000") && out.contains("pack/sub/b.ts\t2000"),
        "{out}"
    );
    let (ok, out, _) = cli(&["stat", "pack/sub/b.ts"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["bitrate_bps"].as_u64(), v["bitrate_source"].as_str()),
        (Some(800_000), Some("uploader"))
    );
    let (ok, _, _) = cli(&["rm", "pack/a.ts"]);
    assert!(ok);
    let (ok, _, err) = cli(&["rm", "pack/a.ts"]);
    assert!(!ok && err.contains("pack/a.ts"), "{err}");
    let (ok, out, _) = cli(&["ls"]);
    assert!(
        ok && !out.contains("pack/a.ts") && out.contains("up/movie.webm"),
        "{out}"
    );

    // /api needs the token.
    let (head, _) = curl(&[&server.url("/api/objects")]);
    assert_eq!(status_of(&head), 401);
    let (head, body) = curl(&["-H", &auth, &server.url("/api/status")]);
    assert_eq!(status_of(&head), 200);
    let status: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert!(
        status["layout"]
            .as_str()
            .unwrap()
            .starts_with("threads: 3 + "),
        "{status}"
    );
}

#[test]
fn keep_alive_and_10k_pipelined_requests() {
    let server = Server::start("");
    let data = pattern(100, 6);
    assert_eq!(server.put("small.bin", &data), 201);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let req = b"GET /media/small.bin HTTP/1.1\r\nHost: t\r\n\r\n";
    let n = 10_000;
    let writer = {
        let mut w = s.try_clone().unwrap();
        std::thread::spawn(move || {
            let mut all = Vec::with_capacity(req.len() * n);
            for _ in 0..n {
                all.extend_from_slice(req);
            }
            w.write_all(&all).unwrap();
        })
    };
    let mut r = BufReader::new(&mut s);
    let mut served = 0;
    // keepalive_requests_max (1000 by default) bounds one connection; count until it closes.
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap() == 0 {
            break;
        }
        assert!(
            line.starts_with("HTTP/1.1 200"),
            "response {served}: {line}"
        );
        let mut len = 0;
        let mut close = false;
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
            if let Some(v) = h.strip_prefix("Content-Length: ") {
                len = v.trim().parse().unwrap();
            }
            close |= h.trim() == "Connection: close";
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        assert_eq!(body, data);
        served += 1;
        if close {
            break;
        }
    }
    let _ = writer.join();
    assert_eq!(
        served, 1000,
        "keepalive_requests_max responses, the last with Connection: close"
    );

    // With a higher cap all 10,000 are answered in order on one connection.
    drop(server);
    let server = Server::start("keepalive_requests_max = 20000");
    assert_eq!(server.put("small.bin", &data), 201);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let mut all = Vec::new();
    for _ in 0..n {
        all.extend_from_slice(req);
    }
    let mut w = s.try_clone().unwrap();
    let writer = std::thread::spawn(move || w.write_all(&all).unwrap());
    let mut r = BufReader::new(&mut s);
    for i in 0..n {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "response {i}: {line}");
        loop {
            let mut h = String::new();
            r.read_line(&mut h).unwrap();
            if h == "\r\n" {
                break;
            }
        }
        let mut body = vec![0; 100];
        r.read_exact(&mut body).unwrap();
    }
    writer.join().unwrap();
}

#[test]
fn replace_and_delete_while_streaming_serve_the_old_bytes() {
    // Pacing off and a small send buffer keep the first stream in flight while we replace.
    let server = Server::start("[pacing]\nenabled = false\n");
    let v1 = pattern(8_000_000, 7);
    let v2 = pattern(8_000_000, 8);
    assert_eq!(server.put("live.ts", &v1), 201);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /media/live.ts HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 4096];
    s.read_exact(&mut first).unwrap(); // the stream has started
    assert_eq!(server.put("live.ts", &v2), 200);
    let (_, _, body) = server.request(
        "GET /media/live.ts HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        b"",
    );
    assert_eq!(body, v2, "new requests get the new version");
    let (status, _, _) = server.request(&format!("DELETE /media/live.ts HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {TOKEN}\r\nConnection: close\r\n\r\n"), b"");
    assert_eq!(status, 204);
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let (status, _, body) = support::split_response(&first);
    assert_eq!(status, 200);
    assert!(
        body == v1,
        "the stream that started on v1 finished on v1 ({} bytes)",
        body.len()
    );
}

#[test]
fn metrics_and_access_log_record_requests() {
    let server = Server::start("");
    assert_eq!(server.put("m.mp3", &pattern(5000, 9)), 201);
    for _ in 0..3 {
        curl(&[&server.url("/media/m.mp3")]);
    }
    curl(&[&server.url("/media/nope")]);
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (head, body) = curl(&["-H", &bearer, &server.url("/metrics")]);
    assert_eq!(status_of(&head), 200);
    let text = String::from_utf8(body).unwrap();
    assert!(
        text.contains("oasis_http_requests_total{status=\"200\"} 3"),
        "{text}"
    );
    assert!(
        text.contains("oasis_http_requests_total{status=\"404\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("oasis_reservation_used{resource=\"connections\"}"),
        "{text}"
    );
    assert!(
        text.contains("oasis_ttfb_seconds{quantile=\"0.99\"}"),
        "{text}"
    );
    // Every worker's loop busy-time histogram: its buckets never decrease, the last one holds
    // every iteration, and each worker has gone round its loop.
    let busy: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("oasis_worker_busy_seconds_"))
        .collect();
    let counts: Vec<u64> = busy
        .iter()
        .filter(|l| l.starts_with("oasis_worker_busy_seconds_count{"))
        .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
        .collect();
    assert!(!counts.is_empty(), "{text}");
    for (worker, count) in counts.iter().enumerate() {
        assert!(*count > 0, "worker {worker} never looped: {text}");
        let label = format!("{{worker=\"{worker}\",");
        let buckets: Vec<u64> = busy
            .iter()
            .filter(|l| l.starts_with("oasis_worker_busy_seconds_bucket") && l.contains(&label))
            .map(|l| l.rsplit(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(buckets.len(), 12, "{text}");
        assert!(buckets.windows(2).all(|w| w[0] <= w[1]), "{text}");
        assert_eq!(buckets.last(), Some(count), "the +Inf bucket holds all");
    }
    for how in ["fetch", "join", "splice"] {
        let line = format!("oasis_cold_pieces_total{{how=\"{how}\"}} ");
        assert!(text.lines().any(|l| l.starts_with(&line)), "{line}: {text}");
    }
    assert!(
        text.lines()
            .any(|l| l.starts_with("oasis_cold_fetch_waits_total ")),
        "{text}"
    );
    assert!(text.trim_end().ends_with("# EOF"));
    let log = server.access_log();
    assert_eq!(
        log.lines()
            .filter(|l| l.contains("\"GET /media/m.mp3 HTTP/1.1\" 200 5000"))
            .count(),
        3,
        "{log}"
    );
}

#[test]
fn sigterm_finishes_the_response_in_flight_then_exits_0() {
    let mut server = Server::start("[pacing]\nenabled = false\n");
    let data = pattern(20_000_000, 10);
    assert_eq!(server.put("big.mp4", &data), 201);
    let mut s = TcpStream::connect(server.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    s.write_all(b"GET /media/big.mp4 HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    let mut first = vec![0u8; 1024];
    s.read_exact(&mut first).unwrap();
    let idle = TcpStream::connect(server.addr).unwrap(); // an idle keep-alive client
    let pid = server.child.as_ref().unwrap().id();
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    first.extend_from_slice(&rest);
    let (status, head, body) = support::split_response(&first);
    assert_eq!(status, 200);
    assert_eq!(
        body.len(),
        data.len(),
        "the response in flight is finished: {head}"
    );
    let status = server.stop();
    assert!(
        status.success(),
        "exit status after SIGTERM: {status}\n{}",
        server.server_log()
    );
    drop(idle);
}

/// Reads one response with a `Content-Length` body; returns its status and body.
fn read_response(r: &mut impl BufRead) -> (u16, Vec<u8>) {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    let status = status_of(&line);
    let mut len = 0;
    loop {
        let mut h = String::new();
        r.read_line(&mut h).unwrap();
        if h == "\r\n" || h.is_empty() {
            break;
        }
        if let Some(v) = h.strip_prefix("Content-Length: ") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body).unwrap();
    (status, body)
}

/// Many keep-alive clients at once, each fetching large objects (whole and a range) one after
/// another: more than a worker's send budget is ready at once, so transmits wait in the
/// deferred queue, and bodies leave corked (`tcp_nopush`) or not; last with pool chunks larger
/// than the 8 MiB per-iteration send budget. Every byte must arrive, in order, on every
/// connection.
#[test]
fn concurrent_large_streams_arrive_whole_corked_or_not() {
    for (engine, layout) in [
        ("tcp_nopush = true", "combined"),
        ("tcp_nopush = false", "combined"),
        ("chunk_bytes = 12582912", "combined"),
        // Streams handed from command to data workers, and back for their next request.
        ("tcp_nopush = true", "f=1,nc=1,nd=1"),
    ] {
        let server = Server::start_with(&format!("[engine]\n{engine}\n"), layout);
        let objects: Vec<Vec<u8>> = (0..4).map(|i| pattern(3 << 20, 40 + i)).collect();
        for (i, o) in objects.iter().enumerate() {
            assert_eq!(server.put(&format!("big{i}.bin"), o), 201);
        }
        let objects = std::sync::Arc::new(objects);
        let clients: Vec<_> = (0..32)
            .map(|c| {
                let addr = server.addr;
                let objects = std::sync::Arc::clone(&objects);
                std::thread::spawn(move || {
                    let mut s = TcpStream::connect(addr).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    for k in 0..3 {
                        let i = (c + k) % objects.len();
                        let (want_status, want, range) = if k == 2 {
                            // 300 KiB from an odd offset: a corked range body.
                            let (a, b) = (12_345 + c * 1000, 12_345 + c * 1000 + 300 * 1024 - 1);
                            (206, &objects[i][a..=b], format!("Range: bytes={a}-{b}\r\n"))
                        } else {
                            (200, &objects[i][..], String::new())
                        };
                        write!(
                            s,
                            "GET /media/big{i}.bin HTTP/1.1\r\nHost: t\r\n{range}\r\n"
                        )
                        .unwrap();
                        let (status, body) = read_response(&mut r);
                        assert_eq!(
                            status, want_status,
                            "client {c} request {k} with {engine}, {layout}"
                        );
                        assert!(
                            body == want,
                            "client {c} request {k} with {engine}, {layout}: body differs"
                        );
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().unwrap();
        }
    }
}
