//! Benchmarks of the User Manager's per-request costs: hashing a presented token, finding its
//! account in the index, deciding a role's action in the policy table, and verifying a signed
//! link, valid or tampered.
//!
//! A valid link costs one HMAC-SHA256 under the current key; a tampered one costs one per
//! configured key (two here, as during a rotation). A token lookup costs one SHA-256 and one
//! hash-map probe under a read lock. Timing lives here, never in tests; the load-run
//! counterpart (signed against public reads through the server) is scenario 8 of
//! `benches/compare.sh`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use oasis_net::auth::link::{self, LinkError, LinkKeys, Scope};
use oasis_net::auth::policy::{
    decide, Account, Action, Decision, PolicySettings, Principal, ReadPolicy, Role,
};
use oasis_net::auth::token;
use oasis_net::auth::users::{Entry, Users};

const NOW: u64 = 1_700_000_000;
const EXPIRES: u64 = NOW + 3600;
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(198, 51, 100, 9));
/// Accounts in the index the lookup searches.
const ACCOUNTS: usize = 1_000;

fn bench_token(c: &mut Criterion) {
    let token = token::generate();
    c.bench_function("token_hash", |b| b.iter(|| token::hash(black_box(&token))));
}

fn bench_users(c: &mut Criterion) {
    let tokens: Vec<String> = (0..ACCOUNTS).map(|_| token::generate()).collect();
    let users = Users::default();
    users.replace_all(tokens.iter().enumerate().map(|(i, t)| Entry {
        account: Account {
            name: format!("user{i:04}"),
            role: Role::Guest,
            prefixes: Vec::new(),
        },
        token_hash: token::hash(t),
        old_token_hash: None,
    }));
    assert_eq!(users.len(), ACCOUNTS);
    let known = &tokens[ACCOUNTS / 2];
    let unknown = token::generate();
    assert!(users.find(known).is_some());
    assert!(users.find(&unknown).is_none());

    let mut group = c.benchmark_group("users_find_1000");
    group.bench_function("known", |b| b.iter(|| users.find(black_box(known))));
    group.bench_function("unknown", |b| b.iter(|| users.find(black_box(&unknown))));
    group.finish();
}

fn bench_decide(c: &mut Criterion) {
    let account = |role, prefixes: &[&str]| {
        Principal::User(Arc::new(Account {
            name: format!("bench-{role}"),
            role,
            prefixes: prefixes.iter().map(|p| p.to_string()).collect(),
        }))
    };
    let provider = account(Role::Provider, &["news/", "shows/2024/"]);
    let guest = account(Role::Guest, &[]);
    let write = Action::Write("shows/2024/720p/segment_00042.ts");
    let read = Action::Read("members/films/a.mp4", ReadPolicy::Token);
    let settings = PolicySettings::default();
    assert_eq!(decide(&provider, &write, settings), Decision::Allow);
    assert_eq!(decide(&guest, &read, settings), Decision::Allow);

    let mut group = c.benchmark_group("decide");
    group.bench_function("provider_write_in_prefix", |b| {
        b.iter(|| decide(black_box(&provider), black_box(&write), settings))
    });
    group.bench_function("guest_read_token_media", |b| {
        b.iter(|| decide(black_box(&guest), black_box(&read), settings))
    });
    group.finish();
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
    // One object, as `oasis sign` without --package writes it (compare.sh scenario 8).
    let object = "hot/seg-00000.bin";
    let single =
        link::sign(&keys, Scope::Object(object), object, EXPIRES, None).expect("bench link signs");
    assert!(link::verify(&keys, &single, NOW, CLIENT).is_ok());

    let mut group = c.benchmark_group("link_verify");
    group.bench_function("prefix_valid", |b| {
        b.iter(|| link::verify(&keys, black_box(&segment), NOW, CLIENT))
    });
    group.bench_function("object_valid", |b| {
        b.iter(|| link::verify(&keys, black_box(&single), NOW, CLIENT))
    });
    group.bench_function("tampered_two_keys", |b| {
        b.iter(|| link::verify(&keys, black_box(&tampered), NOW, CLIENT))
    });
    // What a worker does: the link verified once, then opened from its memo.
    let mut memo = link::LinkMemo::new();
    group.bench_function("object_from_memo", |b| {
        b.iter(|| memo.verify(&keys, black_box(&single), NOW, CLIENT).is_ok())
    });
    group.bench_function("prefix_from_memo", |b| {
        b.iter(|| memo.verify(&keys, black_box(&segment), NOW, CLIENT).is_ok())
    });
    group.finish();
}

criterion_group!(benches, bench_token, bench_users, bench_decide, bench_link);
criterion_main!(benches);
