//! Proves `[storage] read_mode = "direct"` serves the same bytes as the file on disk: a real
//! `oasis serve` with its data directory on the build's disk (ext4/xfs, not tmpfs), objects of
//! awkward sizes (empty, one byte, just under/over a block, odd sizes spanning many chunks),
//! and over raw TCP: full GETs, HEAD, single ranges at unaligned offsets (first byte, last byte,
//! across block and chunk boundaries, suffix and open-ended) and a multipart range, each
//! compared byte for byte with the object file under `data/objects/`. Small pool chunks (16 KiB)
//! make every object of some size cross chunk boundaries. Both layouts run: combined (one ring
//! reads and sends) and split `f=1,nc=1,nd=1` (the file worker reads for the data worker).
//! It also checks, in `/proc/<pid>/fdinfo`, that the server really holds the files with O_DIRECT.

mod support;

use std::path::PathBuf;

use support::{header, pattern, Server};

const CHUNK_BYTES: usize = 16 * 1024;

/// Object sizes: around the 4096-byte alignment, around the chunk, and odd large ones.
const SIZES: &[usize] = &[
    0, 1, 100, 4095, 4096, 4097, 12_345, 16_383, 16_384, 16_385, 100_003, 1_000_003,
];

fn direct_server(layout: &str) -> Server {
    Server::start_on_disk(
        &format!(
            "\n[engine]\nchunk_bytes = {CHUNK_BYTES}\nbuffer_pool_bytes = 8388608\n\n[storage]\nread_mode = \"direct\"\n"
        ),
        layout,
    )
}

/// The content file of the object that `GET` just served (the only file of that size).
fn object_file(server: &Server, size: usize) -> PathBuf {
    let objects = server.data_dir().join("objects");
    let mut found = Vec::new();
    for fan in std::fs::read_dir(&objects).unwrap() {
        for f in std::fs::read_dir(fan.unwrap().path()).unwrap() {
            let f = f.unwrap();
            if f.metadata().unwrap().len() == size as u64 {
                found.push(f.path());
            }
        }
    }
    assert_eq!(found.len(), 1, "one object file of {size} bytes");
    found.pop().unwrap()
}

fn get(server: &Server, name: &str, extra: &str) -> (u16, String, Vec<u8>) {
    server.request(
        &format!("GET /media/{name} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n"),
        b"",
    )
}

/// The (first, last) byte ranges to ask of an object of `size` bytes.
fn ranges(size: usize) -> Vec<(usize, usize)> {
    let last = size - 1;
    let mut r = vec![(0, 0), (last, last), (0, last)];
    for (a, b) in [
        (1, 4096),
        (4095, 4097),
        (100, 8191),
        (4097, CHUNK_BYTES + 1),
        (CHUNK_BYTES - 3, CHUNK_BYTES + 3),
        (CHUNK_BYTES + 7, 3 * CHUNK_BYTES + 11),
        (size / 2 + 1, last),
    ] {
        if a <= b && b <= last {
            r.push((a, b));
        }
    }
    r
}

/// Parts of a `multipart/byteranges` body: (first, last, bytes).
fn parts(body: &[u8]) -> Vec<(usize, usize, Vec<u8>)> {
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let mut out = Vec::new();
    let mut at = 0;
    let marker = b"Content-Range: bytes ";
    while let Some(p) = body[at..].windows(marker.len()).position(|w| w == marker) {
        let start = at + p + marker.len();
        let end = start + body[start..].windows(2).position(|w| w == b"\r\n").unwrap();
        let range = text(&body[start..end]);
        let (span, _) = range.split_once('/').unwrap();
        let (a, b) = span.split_once('-').unwrap();
        let (a, b): (usize, usize) = (a.parse().unwrap(), b.parse().unwrap());
        let data = end
            + body[end..]
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .unwrap()
            + 4;
        out.push((a, b, body[data..data + b - a + 1].to_vec()));
        at = data + b - a + 1;
    }
    out
}

fn serves_every_byte(layout: &str) {
    let server = direct_server(layout);
    for (i, &size) in SIZES.iter().enumerate() {
        assert_eq!(
            server.put(&format!("d/o{i}.bin"), &pattern(size, i as u8)),
            201
        );
    }
    for (i, &size) in SIZES.iter().enumerate() {
        let name = format!("d/o{i}.bin");
        let disk = std::fs::read(object_file(&server, size)).unwrap();
        assert_eq!(
            disk,
            pattern(size, i as u8),
            "the stored file is the upload"
        );

        let (status, head, body) = get(&server, &name, "");
        assert_eq!(status, 200, "{layout}: GET {name}");
        assert_eq!(body, disk, "{layout}: full GET of {size} bytes");

        let (status, head_only, body) = server.request(
            &format!("HEAD /media/{name} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n"),
            b"",
        );
        assert_eq!(status, 200);
        assert!(body.is_empty(), "HEAD has no body");
        assert_eq!(
            header(&head_only, "Content-Length"),
            header(&head, "Content-Length")
        );
        assert_eq!(
            header(&head_only, "Content-Length"),
            Some(size.to_string().as_str())
        );
        if size == 0 {
            continue;
        }

        for (a, b) in ranges(size) {
            let (status, head, body) = get(&server, &name, &format!("Range: bytes={a}-{b}\r\n"));
            assert_eq!(status, 206, "{layout}: {size} bytes, range {a}-{b}");
            assert_eq!(
                header(&head, "Content-Range"),
                Some(format!("bytes {a}-{b}/{size}").as_str())
            );
            assert_eq!(body, disk[a..=b], "{layout}: {size} bytes, range {a}-{b}");
        }
        for suffix in [1, 4095, 4097, 10_000] {
            let n = suffix.min(size);
            let (status, _, body) = get(&server, &name, &format!("Range: bytes=-{suffix}\r\n"));
            assert_eq!(status, 206);
            assert_eq!(
                body,
                disk[size - n..],
                "{layout}: {size} bytes, suffix {suffix}"
            );
        }
        let from = size / 3 + 1;
        if from < size {
            let (status, _, body) = get(&server, &name, &format!("Range: bytes={from}-\r\n"));
            assert_eq!(status, 206);
            assert_eq!(body, disk[from..], "{layout}: {size} bytes, from {from}");
        }
        if size > 10 {
            let spec = format!("0-2,{}-{},{}-", size / 2 - 1, size / 2 + 3, size - 3);
            let (status, head, body) = get(&server, &name, &format!("Range: bytes={spec}\r\n"));
            assert_eq!(status, 206, "{layout}: multipart {spec}");
            assert!(header(&head, "Content-Type")
                .unwrap()
                .starts_with("multipart/byteranges"));
            let got = parts(&body);
            assert_eq!(got.len(), 3, "{layout}: parts of {spec}");
            for (a, b, bytes) in got {
                assert_eq!(bytes, disk[a..=b], "{layout}: {size} bytes, part {a}-{b}");
            }
        }
    }
    assert_eq!(
        o_direct_object_fds(server.pid()),
        (SIZES.len() - 1, 0),
        "{layout}: every non-empty object is held open with O_DIRECT and none without"
    );
    let log = server.server_log();
    assert!(
        !log.contains("reading such files buffered"),
        "no fallback on a real disk:\n{log}"
    );
}

/// `O_DIRECT` as `/proc/<pid>/fdinfo` prints it (octal; the value differs between architectures).
#[cfg(target_arch = "x86_64")]
const O_DIRECT_FLAG: u32 = 0o40000;
#[cfg(target_arch = "aarch64")]
const O_DIRECT_FLAG: u32 = 0o200000;

/// How many object files the server holds open (with O_DIRECT, without).
fn o_direct_object_fds(pid: i32) -> (usize, usize) {
    let (mut direct, mut buffered) = (0, 0);
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let fd = fd.unwrap();
        let Ok(target) = std::fs::read_link(fd.path()) else {
            continue;
        };
        if !target.to_string_lossy().contains("/data/objects/") {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{pid}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap();
        let flags = info
            .lines()
            .find_map(|l| l.strip_prefix("flags:"))
            .map(|v| u32::from_str_radix(v.trim(), 8).unwrap())
            .unwrap();
        if flags & O_DIRECT_FLAG != 0 {
            direct += 1;
        } else {
            buffered += 1;
        }
    }
    (direct, buffered)
}

#[test]
fn direct_reads_serve_every_byte_combined() {
    serves_every_byte("combined");
}

#[test]
fn direct_reads_serve_every_byte_split() {
    serves_every_byte("f=1,nc=1,nd=1");
}

/// Keep-alive with several responses queued on one connection: each head lands right before its
/// body's unaligned first byte in a chunk that the previous response just used.
#[test]
fn direct_reads_keep_alive_pipeline() {
    let server = direct_server("combined");
    let size = 50_001;
    assert_eq!(server.put("p.bin", &pattern(size, 9)), 201);
    let disk = std::fs::read(object_file(&server, size)).unwrap();
    let asks = [(3, 9000), (4096, 4096), (17, 40_000), (49_999, 50_000)];
    let mut req = String::new();
    for (a, b) in asks {
        req.push_str(&format!(
            "GET /media/p.bin HTTP/1.1\r\nHost: t\r\nRange: bytes={a}-{b}\r\n\r\n"
        ));
    }
    req.push_str("GET /media/p.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n");
    let (_, _, raw) = server.request(&req, b"");
    // `request` split off the first head; walk the rest by Content-Length.
    let mut rest = raw.as_slice();
    for (i, (a, b)) in asks.iter().chain([(0, size - 1)].iter()).enumerate() {
        let n = b - a + 1;
        assert_eq!(rest[..n], disk[*a..=*b], "response {i}: bytes {a}-{b}");
        rest = &rest[n..];
        if i < asks.len() {
            let end = rest.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            rest = &rest[end + 4..];
        }
    }
    assert!(rest.is_empty());
}
