//! The memo answers exactly what a full verify answers: a link verified once opens from the memo
//! afterwards, and everything else (an altered field, another address, new keys, expiry, a long
//! prefix) is verified in full or refused as before.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::*;
use crate::auth::link::{sign, verify, Scope};

const KEY_A: &[u8] = b"memo test key A: 0123456789abcdef0123456789";
const KEY_B: &[u8] = b"memo test key B: fedcba9876543210fedcba9876";
const EXP: u64 = 1_800_000_000;
const NOW: u64 = 1_700_000_000;

fn keys(key: &[u8]) -> LinkKeys {
    LinkKeys::new(&[key]).expect("test key")
}

fn ip(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, last))
}

#[test]
fn a_verified_link_opens_from_the_memo_after_its_first_request() {
    let k = keys(KEY_A);
    let path = sign(&k, Scope::Object("films/a.mp4"), "films/a.mp4", EXP, None).unwrap();
    let mut memo = LinkMemo::new();
    for _ in 0..3 {
        assert_eq!(memo.verify(&k, &path, NOW, ip(1)).unwrap(), "films/a.mp4");
    }
    assert_eq!((memo.checked(), memo.hits()), (1, 2));
}

#[test]
fn every_segment_of_a_package_rides_on_one_check() {
    let k = keys(KEY_A);
    let path = sign(&k, Scope::Prefix("show/"), "show/index.m3u8", EXP, None).unwrap();
    let base = path.strip_suffix("index.m3u8").unwrap();
    let mut memo = LinkMemo::new();
    for name in ["index.m3u8", "seg0.ts", "720p/index.m3u8", "720p/seg9.ts"] {
        let path = format!("{base}{name}");
        let got = memo.verify(&k, &path, NOW, ip(1)).unwrap();
        assert_eq!(got, format!("show/{name}"));
    }
    assert_eq!((memo.checked(), memo.hits()), (1, 3));
}

#[test]
fn a_link_altered_after_it_was_verified_is_refused() {
    let k = keys(KEY_A);
    let path = sign(&k, Scope::Object("a.mp4"), "a.mp4", EXP, None).unwrap();
    let mut memo = LinkMemo::new();
    memo.verify(&k, &path, NOW, ip(1)).unwrap();
    // The same signature with another expiry, another object, another scope.
    let exp = EXP.to_string();
    for altered in [
        path.replace(&exp, &(EXP + 1).to_string()),
        path.replace("a.mp4", "b.mp4"),
        path.replace(&format!("/{exp}/0/"), &format!("/{exp}/0i/")),
    ] {
        assert_ne!(altered, path);
        let got = memo.verify(&k, &altered, NOW, ip(1));
        assert_eq!(got, verify(&k, &altered, NOW, ip(1)), "{altered}");
        assert!(got.is_err(), "{altered}");
    }
    assert_eq!(memo.checked(), 1, "refusals are never kept");
}

#[test]
fn an_address_bound_link_opens_from_the_memo_only_for_its_address() {
    let k = keys(KEY_A);
    let path = sign(&k, Scope::Object("a.mp4"), "a.mp4", EXP, Some(ip(1))).unwrap();
    let mut memo = LinkMemo::new();
    memo.verify(&k, &path, NOW, ip(1)).unwrap();
    assert_eq!(
        memo.verify(&k, &path, NOW, ip(2)),
        Err(LinkError::WrongAddress)
    );
    memo.verify(&k, &path, NOW, ip(1)).unwrap();
    assert_eq!(memo.hits(), 1);
}

#[test]
fn new_keys_verify_again_and_a_dropped_key_no_longer_opens() {
    let old = keys(KEY_A);
    let path = sign(&old, Scope::Object("a.mp4"), "a.mp4", EXP, None).unwrap();
    let mut memo = LinkMemo::new();
    memo.verify(&old, &path, NOW, ip(1)).unwrap();
    // A reload that keeps the key as the previous one: checked again, and it opens.
    let rotated = LinkKeys::new(&[KEY_B, KEY_A]).unwrap();
    memo.verify(&rotated, &path, NOW, ip(1)).unwrap();
    assert_eq!((memo.checked(), memo.hits()), (2, 0));
    // A reload that drops it: refused, though the memo held it under both earlier key sets.
    let dropped = keys(KEY_B);
    assert_eq!(
        memo.verify(&dropped, &path, NOW, ip(1)),
        Err(LinkError::BadSignature)
    );
}

#[test]
fn expiry_is_checked_on_every_request() {
    let k = keys(KEY_A);
    let path = sign(&k, Scope::Object("a.mp4"), "a.mp4", EXP, None).unwrap();
    let mut memo = LinkMemo::new();
    memo.verify(&k, &path, EXP, ip(1)).unwrap();
    assert_eq!(
        memo.verify(&k, &path, EXP + 1, ip(1)),
        Err(LinkError::Expired)
    );
    assert_eq!(memo.hits(), 1, "a hit, and still expired");
}

#[test]
fn a_prefix_longer_than_an_entry_is_checked_every_time() {
    let k = keys(KEY_A);
    let prefix = format!("{}/", "p".repeat(SIGNED_BYTES_MAX));
    let object = format!("{prefix}seg.ts");
    let path = sign(&k, Scope::Prefix(&prefix), &object, EXP, None).unwrap();
    let mut memo = LinkMemo::new();
    for _ in 0..2 {
        assert_eq!(memo.verify(&k, &path, NOW, ip(1)).unwrap(), object);
    }
    assert_eq!((memo.checked(), memo.hits()), (2, 0));
}

#[test]
fn the_calling_threads_memo_is_used_across_calls() {
    let k = keys(KEY_A);
    let path = sign(&k, Scope::Object("t.mp4"), "t.mp4", EXP, None).unwrap();
    let on_thread =
        |p: &str| LinkMemo::verify_on_this_thread(&k, p, NOW, ip(1)).map(Cow::into_owned);
    assert_eq!(on_thread(&path).unwrap(), "t.mp4");
    assert_eq!(on_thread(&path).unwrap(), "t.mp4");
    let hits = THIS_THREAD.with(|m| m.borrow().hits());
    assert!(hits >= 1, "the second call hit: {hits}");
}

proptest! {
    /// Any byte of a verified link changed: the memo answers what a full verify answers.
    #[test]
    fn after_any_single_byte_change_the_memo_agrees_with_verify(
        at in 0usize..200,
        byte in any::<u8>(),
        bound in any::<bool>(),
        from in 1u8..4,
    ) {
        let k = keys(KEY_A);
        let path = sign(&k, Scope::Prefix("show/"), "show/seg0.ts", EXP, bound.then(|| ip(1))).unwrap();
        let mut memo = LinkMemo::new();
        memo.verify(&k, &path, NOW, ip(1)).unwrap();
        let mut bytes = path.clone().into_bytes();
        let at = at % bytes.len();
        bytes[at] = byte;
        if let Ok(changed) = String::from_utf8(bytes) {
            prop_assert_eq!(
                memo.verify(&k, &changed, NOW, ip(from)),
                verify(&k, &changed, NOW, ip(from)),
                "{}", changed
            );
        }
    }
}
