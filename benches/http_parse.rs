//! Benchmarks of the sans-IO HTTP hot path: what every request pays before any byte moves.
//!
//! Covers parsing a typical browser-player GET with 10 header fields, resolving single and
//! multi `Range` headers, and serializing a 206 response head into a reused buffer. Timing
//! lives here, never in pass/fail tests; compare runs as ratios.

use std::hint::black_box;
use std::time::{Duration, UNIX_EPOCH};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use oasis_net::http::{
    parse_range, parse_request, ByteRange, HttpLimits, Parse, RangeSpec, ResponseHead,
};

const PLAYER_GET: &[u8] = b"GET /videos/2024/big-buck-bunny_1080p.mp4?token=9f8e7d HTTP/1.1\r\n\
Host: media.example.com\r\n\
User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0\r\n\
Accept: video/webm,video/ogg,video/*;q=0.9,application/ogg;q=0.7,audio/*;q=0.6,*/*;q=0.5\r\n\
Accept-Language: en-US,en;q=0.5\r\n\
Range: bytes=1048576-\r\n\
Referer: https://player.example.com/watch/42\r\n\
Origin: https://player.example.com\r\n\
Connection: keep-alive\r\n\
If-Range: \"1a2b3c4d-1f400-6553f100\"\r\n\
Sec-Fetch-Dest: video\r\n\
\r\n";

fn bench_parse_request(c: &mut Criterion) {
    let limits = HttpLimits::default();
    let mut group = c.benchmark_group("parse_request");
    group.throughput(Throughput::Bytes(PLAYER_GET.len() as u64));
    group.bench_function("player_get_10_headers", |b| {
        b.iter(|| match parse_request(black_box(PLAYER_GET), &limits) {
            Ok(Parse::Complete(head, consumed)) => black_box((head, consumed)),
            other => panic!("benchmark request did not parse: {other:?}"),
        })
    });
    group.finish();
}

fn bench_parse_range(c: &mut Criterion) {
    let object_bytes: u64 = 734_003_200;
    let mut group = c.benchmark_group("parse_range");
    group.bench_function("single", |b| {
        b.iter(|| {
            let spec = parse_range(black_box("bytes=1048576-2097151"), object_bytes, 32);
            assert!(matches!(spec, RangeSpec::Single(_)));
            black_box(spec)
        })
    });
    group.bench_function("multi_4", |b| {
        let header = "bytes=0-1023, 4096-8191, 1048576-1049599, -65536";
        b.iter(|| {
            let spec = parse_range(black_box(header), object_bytes, 32);
            assert!(matches!(spec, RangeSpec::Multi(_)));
            black_box(spec)
        })
    });
    group.finish();
}

fn bench_response_head(c: &mut Criterion) {
    let date = "Sun, 22 Nov 2026 04:42:07 GMT";
    let modified = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let mut out = Vec::with_capacity(1024);
    c.bench_function("response_head_206", |b| {
        b.iter(|| {
            out.clear();
            let mut head = ResponseHead::new(&mut out, 206, date);
            head.content_type("video/mp4")
                .content_length(1_048_576)
                .content_range(ByteRange::new(1_048_576, 2_097_151), 734_003_200)
                .last_modified(modified)
                .etag("\"1a2b3c4d-2bc00000-6553f100\"")
                .accept_ranges()
                .cors()
                .connection(true);
            black_box(head.finish())
        })
    });
}

criterion_group!(
    benches,
    bench_parse_request,
    bench_parse_range,
    bench_response_head
);
criterion_main!(benches);
