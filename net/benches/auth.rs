//! Benchmarks of the User Manager's per-request costs: hashing a presented token (what a
//! catalog lookup is keyed by) and verifying a signed link, valid or tampered.
//!
//! A valid link costs one HMAC-SHA256 under the current key; a tampered one costs one per
//! configured key (two here, as during a rotation). Timing lives here, never in tests.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion};
use oasis_net::auth::link::{self, LinkError, LinkKeys, Scope};
use oasis_net::auth::token;

const NOW: u64 = 1_700_000_000;
const EXPIRES: u64 = NOW + 3600;
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));

fn bench_token(c: &mut Criterion) {
    let token = token::generate();
    c.bench_function("token_hash", |b| b.iter(|| token::hash(black_box(&token))));
}

fn bench_link(c: &mut Criterion) {
    let keys = LinkKeys::new(&[
        "bench current link key: 0123456789abcdef0123456789",
        "bench previous link key: fedcba9876543210fedcba987",
    ])
    .expect("bench keys are valid");
    let master = link::sign(
        &keys,
        Scope::Prefix("shows/2024/"),
        "shows/2024/index.m3u8",
        EXPIRES,
        None,
    )
    .expect("bench link signs");
    // What a player asks for next: a segment resolved relative to the playlist.
    let segment = master.replace("index.m3u8", "720p/segment_00042.ts");
    assert!(link::verify(&keys, &segment, NOW, CLIENT).is_ok());
    let tampered = segment.replace("/shows/", "/showz/");
    assert_eq!(
        link::verify(&keys, &tampered, NOW, CLIENT),
        Err(LinkError::BadSignature)
    );

    let mut group = c.benchmark_group("link_verify");
    group.bench_function("prefix_valid", |b| {
        b.iter(|| link::verify(&keys, black_box(&segment), NOW, CLIENT))
    });
    group.bench_function("tampered_two_keys", |b| {
        b.iter(|| link::verify(&keys, black_box(&tampered), NOW, CLIENT))
    });
    group.finish();
}

criterion_group!(benches, bench_token, bench_link);
criterion_main!(benches);
