//! Signed links: round trips, relative URI resolution as a player does it, every field altered,
//! names the format refuses, key rotation, address binding, and property tests over names and
//! single-byte mutations.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use proptest::prelude::*;

use super::*;

const KEY_NEW: &[u8] = b"current link key: 0123456789abcdef0123456789";
const KEY_OLD: &[u8] = b"previous link key: fedcba9876543210fedcba9876";
const KEY_OTHER: &[u8] = b"some other server's key: 00112233445566778899";
const EXP: u64 = 1_800_000_000;
const NOW: u64 = 1_700_000_000;

fn keys() -> LinkKeys {
    LinkKeys::new(&[KEY_NEW]).expect("test key")
}

fn v4(a: u8, b: u8, c: u8, d: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(a, b, c, d))
}

fn client() -> IpAddr {
    v4(198, 51, 100, 9)
}

fn sign_object(name: &str) -> String {
    sign(&keys(), Scope::Object(name), name, EXP, None).expect("valid object link")
}

fn sign_prefix(prefix: &str, object: &str) -> String {
    sign(&keys(), Scope::Prefix(prefix), object, EXP, None).expect("valid prefix link")
}

fn check(path: &str) -> Result<String, LinkError> {
    verify(&keys(), path, NOW, client()).map(Cow::into_owned)
}

/// Resolves a relative reference against a base path the way a player does (RFC 3986 §5.2:
/// merge, then remove dot segments); references here have no scheme, authority or query.
fn resolve(base: &str, reference: &str) -> String {
    let merged = if reference.starts_with('/') {
        reference.to_owned()
    } else {
        let dir = &base[..=base.rfind('/').expect("base path has a '/'")];
        format!("{dir}{reference}")
    };
    let mut out: Vec<&str> = Vec::new();
    let segments: Vec<&str> = merged.split('/').skip(1).collect();
    for (i, segment) in segments.iter().enumerate() {
        let last = i + 1 == segments.len();
        match *segment {
            "." => {
                if last {
                    out.push("");
                }
            }
            ".." => {
                out.pop();
                if last {
                    out.push("");
                }
            }
            other => out.push(other),
        }
    }
    format!("/{}", out.join("/"))
}

/// The path with the byte range `at` replaced by `with`.
fn replaced(path: &str, at: std::ops::Range<usize>, with: &str) -> String {
    let mut s = path.to_owned();
    s.replace_range(at, with);
    s
}

/// The path's `/`-separated fields after `/s/`: sig, expires, scope, name.
fn fields(path: &str) -> [String; 4] {
    let rest = path.strip_prefix("/s/").expect("a link path");
    let mut parts = rest.splitn(4, '/');
    std::array::from_fn(|_| parts.next().expect("four fields").to_owned())
}

fn join(fields: &[&str]) -> String {
    format!("/s/{}", fields.join("/"))
}

#[test]
fn keys_need_one_or_two_long_enough_keys() {
    let none: [&[u8]; 0] = [];
    assert!(LinkKeys::new(&none).unwrap_err().contains("1 or 2 keys"));
    let three = LinkKeys::new(&[KEY_NEW, KEY_OLD, KEY_OTHER]).unwrap_err();
    assert!(three.contains("3 given"), "{three}");
    let short = LinkKeys::new(&["thirty-one bytes of key text..."]).unwrap_err();
    assert!(
        short.contains("31 bytes") && short.contains("at least 32"),
        "{short}"
    );
    let long = LinkKeys::new(&[vec![b'k'; KEY_BYTES_MAX + 1]]).unwrap_err();
    assert!(long.contains("1025 bytes"), "{long}");
    assert!(LinkKeys::new(&["exactly thirty-two bytes of key!"]).is_ok());
    assert!(LinkKeys::new(&[String::from_utf8(KEY_NEW.to_vec()).unwrap()]).is_ok());
    let debug = format!("{:?}", LinkKeys::new(&[KEY_NEW, KEY_OLD]).unwrap());
    assert_eq!(debug, "LinkKeys { keys: 2 }");
}

#[test]
fn object_link_round_trips_and_opens_only_its_object() {
    let path = sign_object("films/big buck bunny.mp4");
    assert!(path.starts_with("/s/"), "{path}");
    assert!(
        path.ends_with("/1800000000/0/films/big%20buck%20bunny.mp4"),
        "{path}"
    );
    assert_eq!(check(&path).as_deref(), Ok("films/big buck bunny.mp4"));

    let plain = sign_object("films/a.mp4");
    assert!(matches!(
        verify(&keys(), &plain, NOW, client()),
        Ok(Cow::Borrowed("films/a.mp4"))
    ));
    let [sig, exp, scope, _] = fields(&plain);
    let other = join(&[&sig, &exp, &scope, "films/b.mp4"]);
    assert_eq!(check(&other), Err(LinkError::BadSignature));
    let longer = join(&[&sig, &exp, &scope, "films/a.mp4/x"]);
    assert_eq!(check(&longer), Err(LinkError::BadSignature));
}

#[test]
fn names_with_any_text_are_escaped_and_come_back_decoded() {
    for name in [
        "a%b",
        "q?x#y",
        "tab\u{e9}/\u{6f22}\u{5b57}.ts",
        "plus+and&eq=;@:!",
        "~-_.x",
    ] {
        let path = sign_object(name);
        let [_, _, _, raw] = fields(&path);
        assert!(raw.bytes().all(|b| b.is_ascii_graphic()), "{raw}");
        assert!(!raw.contains(['?', '#', '\\']), "{raw}");
        assert_eq!(check(&path).as_deref(), Ok(name), "{path}");
    }
}

#[test]
fn prefix_link_opens_what_a_player_resolves_inside_the_prefix() {
    let master = sign_prefix("show/", "show/index.m3u8");
    assert!(master.contains("/1/show/index.m3u8"), "{master}");
    assert_eq!(check(&master).as_deref(), Ok("show/index.m3u8"));

    let segment = resolve(&master, "seg1.ts");
    assert_eq!(check(&segment).as_deref(), Ok("show/seg1.ts"));
    let variant = resolve(&master, "720p/index.m3u8");
    assert_eq!(check(&variant).as_deref(), Ok("show/720p/index.m3u8"));
    let variant_segment = resolve(&variant, "seg1.ts");
    assert_eq!(check(&variant_segment).as_deref(), Ok("show/720p/seg1.ts"));
    let sibling = resolve(&variant_segment, "../480p/seg9.ts");
    assert_eq!(check(&sibling).as_deref(), Ok("show/480p/seg9.ts"));
    let dotted = resolve(&master, "./seg2.ts");
    assert_eq!(check(&dotted).as_deref(), Ok("show/seg2.ts"));

    // Out of the package: the prefix alone, another package, the route, an absolute path.
    assert_eq!(check(&resolve(&master, "../x")), Err(LinkError::Malformed));
    assert_eq!(
        check(&resolve(&master, "../other/x")),
        Err(LinkError::BadSignature)
    );
    assert_eq!(
        check(&resolve(&master, "../../x")),
        Err(LinkError::Malformed)
    );
    assert_eq!(
        check(&resolve(&master, "/show/seg1.ts")),
        Err(LinkError::Malformed)
    );
    assert_eq!(check(&resolve(&master, "./")), Err(LinkError::Malformed));
}

#[test]
fn two_component_prefix_needs_both_components() {
    let link = sign_prefix("a/b/", "a/b/index.m3u8");
    assert!(link.contains("/2/a/b/index.m3u8"), "{link}");
    assert_eq!(check(&resolve(&link, "s.ts")).as_deref(), Ok("a/b/s.ts"));
    assert_eq!(check(&resolve(&link, "../s.ts")), Err(LinkError::Malformed));
    assert_eq!(
        check(&resolve(&link, "../c/s.ts")),
        Err(LinkError::BadSignature)
    );
    let parsed = parse(&link).unwrap();
    assert_eq!(parsed.scope_components(), 2);
    assert_eq!(parsed.signed_part(), "a/b/");
    assert_eq!(parsed.name(), "a/b/index.m3u8");
    assert_eq!(parsed.expires_unix(), EXP);
    assert!(!parsed.is_address_bound());
}

#[test]
fn expiry_counts_the_last_second_and_needs_a_valid_signature() {
    let path = sign(&keys(), Scope::Object("a.mp4"), "a.mp4", NOW, None).unwrap();
    assert!(verify(&keys(), &path, NOW - 1, client()).is_ok());
    assert!(verify(&keys(), &path, NOW, client()).is_ok());
    assert_eq!(
        verify(&keys(), &path, NOW + 1, client()),
        Err(LinkError::Expired)
    );
    assert_eq!(
        verify(&keys(), &path, u64::MAX, client()),
        Err(LinkError::Expired)
    );
    let [sig, exp, scope, _] = fields(&path);
    let tampered = join(&[&sig, &exp, &scope, "b.mp4"]);
    assert_eq!(
        verify(&keys(), &tampered, NOW + 1, client()),
        Err(LinkError::BadSignature)
    );
    // Pushing the expiry later breaks the signature.
    let later = join(&[&sig, "1700000001", &scope, "a.mp4"]);
    assert_eq!(
        verify(&keys(), &later, NOW + 1, client()),
        Err(LinkError::BadSignature)
    );

    let zero = sign(&keys(), Scope::Object("a.mp4"), "a.mp4", 0, None).unwrap();
    assert!(zero.contains("/0/0/a.mp4"), "{zero}");
    assert!(verify(&keys(), &zero, 0, client()).is_ok());
    let last = sign(&keys(), Scope::Object("a"), "a", EXPIRES_UNIX_MAX, None).unwrap();
    assert!(last.contains("/999999999999/"), "{last}");
    let past = sign(&keys(), Scope::Object("a"), "a", EXPIRES_UNIX_MAX + 1, None);
    assert!(past.unwrap_err().contains("999999999999"));
}

#[test]
fn every_field_altered_fails() {
    let path = sign_prefix("show/", "show/hls/index.m3u8");
    let [sig, exp, scope, name] = fields(&path);
    assert_eq!(scope, "1");

    let sig_start = 3;
    for i in 0..sig.len() {
        let old = path.as_bytes()[sig_start + i];
        let new = if old == b'A' { "Q" } else { "A" };
        let altered = replaced(&path, sig_start + i..sig_start + i + 1, new);
        let got = check(&altered);
        // The last character's spare bits make some changes malformed rather than wrong.
        assert!(
            got == Err(LinkError::BadSignature) || (i == 42 && got == Err(LinkError::Malformed)),
            "sig char {i}: {got:?}"
        );
    }
    for i in 0..exp.len() {
        let mut digits = exp.clone().into_bytes();
        digits[i] = if digits[i] == b'9' {
            b'1'
        } else {
            digits[i] + 1
        };
        let altered = join(&[&sig, std::str::from_utf8(&digits).unwrap(), &scope, &name]);
        assert_eq!(check(&altered), Err(LinkError::BadSignature), "{altered}");
    }
    for other_scope in ["0", "2"] {
        let altered = join(&[&sig, &exp, other_scope, &name]);
        assert_eq!(check(&altered), Err(LinkError::BadSignature), "{altered}");
    }
    assert_eq!(
        check(&join(&[&sig, &exp, "3", &name])),
        Err(LinkError::Malformed)
    );
    let altered = join(&[&sig, &exp, &scope, "shoW/hls/index.m3u8"]);
    assert_eq!(check(&altered), Err(LinkError::BadSignature));
    let altered = join(&[&sig, &exp, &scope, "show_hls/index.m3u8"]);
    assert_eq!(check(&altered), Err(LinkError::BadSignature));

    let object = sign_object("films/a.mp4");
    let name_start = object.len() - "films/a.mp4".len();
    for i in name_start..object.len() {
        let new = if object.as_bytes()[i] == b'x' {
            "y"
        } else {
            "x"
        };
        let altered = replaced(&object, i..i + 1, new);
        assert_ne!(check(&altered).as_deref(), Ok("films/a.mp4"));
        assert!(check(&altered).is_err(), "{altered}");
    }
}

#[test]
fn truncated_and_reordered_paths_fail() {
    let path = sign_object("films/a.mp4");
    for end in 0..path.len() {
        assert!(check(&path[..end]).is_err(), "{}", &path[..end]);
    }
    let [sig, exp, scope, name] = fields(&path);
    for order in [
        [&exp, &sig, &scope, &name],
        [&sig, &scope, &exp, &name],
        [&scope, &exp, &sig, &name],
        [&name, &sig, &exp, &scope],
    ] {
        let reordered = join(&order.map(String::as_str));
        assert_eq!(check(&reordered), Err(LinkError::Malformed), "{reordered}");
    }
    for wrong_route in [&path[2..], &path[1..]] {
        assert_eq!(check(wrong_route), Err(LinkError::Malformed));
    }
    let s2 = path.replacen("/s/", "/S/", 1);
    assert_eq!(check(&s2), Err(LinkError::Malformed));
    assert_eq!(check(&format!("/s{path}")), Err(LinkError::Malformed));
    assert_eq!(check(&format!("{path}?t=1")), Err(LinkError::Malformed));
    assert_eq!(check(&format!("{path}#t")), Err(LinkError::Malformed));
    assert_eq!(check(&format!("{path}/")), Err(LinkError::Malformed));
    assert_eq!(
        check(&join(&[&sig, &exp, &scope])),
        Err(LinkError::Malformed)
    );
    assert_eq!(
        check(&join(&[&sig, &exp, &scope, ""])),
        Err(LinkError::Malformed)
    );
}

#[test]
fn expiry_and_scope_text_must_be_canonical() {
    let path = sign_object("a.mp4");
    let [sig, _, _, name] = fields(&path);
    // 13 digits, u64::MAX + 1, and forms a lenient number parser would take.
    let overflow = ["1".repeat(13), (u128::from(u64::MAX) + 1).to_string()];
    for exp in [
        &overflow[0],
        &overflow[1],
        "",
        "+1800000000",
        "-1",
        "01800000000",
        "00",
        "1e9",
        "18000 0000",
        "\u{661}",
    ] {
        let bad = join(&[&sig, exp, "0", &name]);
        assert_eq!(parse(&bad), Err(LinkError::Malformed), "{exp:?}");
    }
    for scope in [
        "", "00", "01", "17", "99", "100", "i", "ii", "0ii", "i0", "1I", "+1", "-0",
    ] {
        let bad = join(&[&sig, "1800000000", scope, "a/b"]);
        assert_eq!(parse(&bad), Err(LinkError::Malformed), "{scope:?}");
    }
    let deep = vec!["d"; 17].join("/");
    assert!(parse(&join(&[&sig, "1", "16", &deep])).is_ok());
    assert!(parse(&join(&[&sig, "1", "16i", &deep])).is_ok());
    assert_eq!(
        parse(&join(&[&sig, "1", "16", &deep[2..]])),
        Err(LinkError::Malformed)
    );
    let long_sig = format!("{sig}A");
    assert_eq!(
        parse(&join(&[&long_sig, "1", "0", "a"])),
        Err(LinkError::Malformed)
    );
    let padded = format!("{}=", &sig[..42]);
    assert_eq!(
        parse(&join(&[&padded, "1", "0", "a"])),
        Err(LinkError::Malformed)
    );
}

#[test]
fn dangerous_names_are_malformed_even_when_the_rest_is_valid() {
    let path = sign_prefix("show/", "show/index.m3u8");
    let [sig, exp, scope, _] = fields(&path);
    for name in [
        "show/../x",
        "show/..",
        "show/./x",
        "show/.",
        "show/%2e%2e/x",
        "show/%2E%2E/x",
        "show/%2e/x",
        "show/.%2e/x",
        "show%2Fx",
        "show%2fx",
        "show/a%2Fb",
        "show//x",
        "show/x/",
        "show/a\\b",
        "show/a%5Cb",
        "show/a%5cb",
        "show/a%00b",
        "show/a%0Ab",
        "show/a%7F",
        "show/a b",
        "show/%",
        "show/%4",
        "show/%zz",
        "show/%C3",
        "show/%FF",
        "show/\u{e9}",
        "show",
        "show/",
    ] {
        let bad = join(&[&sig, &exp, &scope, name]);
        assert_eq!(check(&bad), Err(LinkError::Malformed), "{name:?}");
    }
    let long = format!("show/{}", "x".repeat(NAME_BYTES_MAX - 5));
    assert_eq!(
        parse(&join(&[&sig, &exp, &scope, &long])).map(|_| ()),
        Ok(())
    );
    let too_long = format!("{long}x");
    assert_eq!(
        check(&join(&[&sig, &exp, &scope, &too_long])),
        Err(LinkError::Malformed)
    );
    let too_long_raw = format!("show/{}", "%41".repeat(NAME_RAW_BYTES_MAX));
    assert_eq!(
        check(&join(&[&sig, &exp, &scope, &too_long_raw])),
        Err(LinkError::Malformed)
    );
}

#[test]
fn escapes_of_the_same_name_open_the_same_object() {
    let path = sign_prefix("show/", "show/index.m3u8");
    let [sig, exp, scope, _] = fields(&path);
    let escaped = join(&[&sig, &exp, &scope, "%73how/index%2Em3u8"]);
    assert_eq!(check(&escaped).as_deref(), Ok("show/index.m3u8"));
    // Hex digits in either case: one byte of the path changes, the name does not.
    let object = sign_object("a b");
    assert!(object.ends_with("a%20b"), "{object}");
    let accented = sign_object("a\u{e9}");
    let lower = accented.replace("%C3%A9", "%c3%a9");
    assert_ne!(lower, accented);
    assert_eq!(check(&lower).as_deref(), Ok("a\u{e9}"));
}

#[test]
fn sign_refuses_what_verify_would_refuse() {
    let k = keys();
    let err = |scope, object| sign(&k, scope, object, EXP, None).unwrap_err();
    assert!(err(Scope::Prefix("show"), "show/a").contains("must end with '/'"));
    assert!(err(Scope::Prefix("show/"), "other/a").contains("not inside prefix"));
    assert!(err(Scope::Prefix("show/"), "show/").contains("empty segment"));
    assert!(err(Scope::Prefix("/show/"), "/show/a").contains("empty segment"));
    assert!(err(Scope::Prefix("a//"), "a//b").contains("empty segment"));
    assert!(err(Scope::Prefix("../"), "../a").contains("'..'"));
    assert!(err(Scope::Object("a"), "b").contains("opens its own object"));
    assert!(err(Scope::Object("a/../b"), "a/../b").contains("'..'"));
    assert!(err(Scope::Object(""), "").contains("is empty"));
    assert!(err(Scope::Object("a\nb"), "a\nb").contains("control"));
    assert!(err(Scope::Object("a\\b"), "a\\b").contains("backslash"));
    let long = "x".repeat(NAME_BYTES_MAX + 1);
    assert!(err(Scope::Object(&long), &long).contains("longer than 1024"));
    let prefix17 = "d/".repeat(17);
    let object17 = format!("{prefix17}x");
    assert!(err(Scope::Prefix(&prefix17), &object17).contains("17 components"));
    let prefix16 = "d/".repeat(16);
    let object16 = format!("{prefix16}x");
    let ok = sign(&k, Scope::Prefix(&prefix16), &object16, EXP, None).unwrap();
    assert_eq!(check(&ok).as_deref(), Ok(object16.as_str()));
}

#[test]
fn rotation_keeps_old_links_and_refuses_unknown_keys() {
    let old_only = LinkKeys::new(&[KEY_OLD]).unwrap();
    let rotated = LinkKeys::new(&[KEY_NEW, KEY_OLD]).unwrap();
    let new_only = LinkKeys::new(&[KEY_NEW]).unwrap();
    let other = LinkKeys::new(&[KEY_OTHER]).unwrap();

    let sign_with = |keys: &LinkKeys| sign(keys, Scope::Prefix("p/"), "p/i.m3u8", EXP, None);
    let old_link = sign_with(&old_only).unwrap();
    // The first key signs.
    let new_link = sign_with(&rotated).unwrap();
    assert_eq!(sign_with(&new_only).as_ref(), Ok(&new_link));
    let opened = Ok("p/i.m3u8");
    let forged = Err(&LinkError::BadSignature);
    for (keys, link, now, expected) in [
        (&rotated, &old_link, NOW, opened),
        (&new_only, &old_link, NOW, forged),
        (&other, &old_link, NOW, forged),
        // Expired under the previous key is still reported as expired, not as forged.
        (&rotated, &old_link, EXP + 1, Err(&LinkError::Expired)),
        (&new_only, &new_link, NOW, opened),
        (&old_only, &new_link, NOW, forged),
    ] {
        assert_eq!(
            verify(keys, link, now, client()).as_deref(),
            expected,
            "{keys:?} {link}"
        );
    }
}

#[test]
fn address_bound_links_open_only_for_their_address() {
    let k = keys();
    let here = v4(203, 0, 113, 7);
    let path = sign(&k, Scope::Object("a.mp4"), "a.mp4", EXP, Some(here)).unwrap();
    assert!(path.contains("/0i/a.mp4"), "{path}");
    assert!(parse(&path).unwrap().is_address_bound());
    assert_eq!(verify(&k, &path, NOW, here).as_deref(), Ok("a.mp4"));
    assert_eq!(
        verify(&k, &path, NOW, v4(203, 0, 113, 8)),
        Err(LinkError::WrongAddress)
    );
    assert_eq!(verify(&k, &path, EXP + 1, here), Err(LinkError::Expired));
    assert_eq!(
        verify(&k, &path, EXP + 1, v4(1, 2, 3, 4)),
        Err(LinkError::WrongAddress)
    );

    // The IPv4-mapped IPv6 form of the same address is the same client, both ways.
    let mapped = IpAddr::V6(Ipv4Addr::new(203, 0, 113, 7).to_ipv6_mapped());
    assert_eq!(verify(&k, &path, NOW, mapped).as_deref(), Ok("a.mp4"));
    let from_mapped = sign(&k, Scope::Object("a.mp4"), "a.mp4", EXP, Some(mapped)).unwrap();
    assert_eq!(from_mapped, path);
    // IPv4-compatible (::a.b.c.d) is not IPv4-mapped: another address.
    let compatible = IpAddr::V6(Ipv6Addr::new(0, 0, 0, 0, 0, 0, 0xcb00, 0x7107));
    assert_eq!(
        verify(&k, &path, NOW, compatible),
        Err(LinkError::WrongAddress)
    );

    let six: IpAddr = "2001:db8::1".parse().unwrap();
    let six_link = sign(&k, Scope::Prefix("show/"), "show/i.m3u8", EXP, Some(six)).unwrap();
    assert!(six_link.contains("/1i/show/"), "{six_link}");
    let seg = resolve(&six_link, "seg.ts");
    assert_eq!(verify(&k, &seg, NOW, six).as_deref(), Ok("show/seg.ts"));
    let six_long: IpAddr = "2001:0db8:0000:0000:0000:0000:0000:0001".parse().unwrap();
    assert_eq!(
        verify(&k, &seg, NOW, six_long).as_deref(),
        Ok("show/seg.ts")
    );
    let six_other: IpAddr = "2001:db8::2".parse().unwrap();
    assert_eq!(
        verify(&k, &seg, NOW, six_other),
        Err(LinkError::WrongAddress)
    );

    // Dropping the binding breaks the signature; adding one to an unbound link does too.
    let unbound = path.replace("/0i/", "/0/");
    assert_eq!(
        verify(&k, &unbound, NOW, here),
        Err(LinkError::BadSignature)
    );
    let open = sign(&k, Scope::Object("a.mp4"), "a.mp4", EXP, None).unwrap();
    let bound = open.replace("/0/", "/0i/");
    assert_eq!(verify(&k, &bound, NOW, here), Err(LinkError::WrongAddress));
    // An unbound link opens from anywhere.
    assert!(verify(&k, &open, NOW, six).is_ok());
}

#[test]
fn errors_map_to_secure_link_statuses() {
    assert_eq!(LinkError::Malformed.status(), 403);
    assert_eq!(LinkError::BadSignature.status(), 403);
    assert_eq!(LinkError::WrongAddress.status(), 403);
    assert_eq!(LinkError::Expired.status(), 410);
    for e in [
        LinkError::Malformed,
        LinkError::BadSignature,
        LinkError::Expired,
        LinkError::WrongAddress,
    ] {
        assert!(!e.reason().is_empty());
        assert_eq!(e.to_string(), e.reason());
    }
}

/// One name segment: any text but '/', '\' and control characters, never "." or "..".
fn segment() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 ._~%?#+&=;:@!$'()*,\\-\u{e9}\u{6f22}\u{1f3ac}]{1,10}"
        .prop_filter("dot segment", |s| s != "." && s != "..")
}

/// A valid object name and a prefix scope 0..components-1 for it (0 meaning object scope).
fn name_and_scope() -> impl Strategy<Value = (Vec<String>, usize)> {
    prop::collection::vec(segment(), 1..6).prop_flat_map(|segments| {
        let n = segments.len();
        (Just(segments), 0..n)
    })
}

/// Signs `segments` with `k` prefix components (0: the whole name); returns the path, the name
/// and the signed prefix (the name itself for an object link).
fn sign_segments(segments: &[String], k: usize, ip: Option<IpAddr>) -> (String, String, String) {
    let name = segments.join("/");
    let prefix = if k == 0 {
        name.clone()
    } else {
        format!("{}/", segments[..k].join("/"))
    };
    let scope = if k == 0 {
        Scope::Object(&name)
    } else {
        Scope::Prefix(&prefix)
    };
    let path = sign(&keys(), scope, &name, EXP, ip).expect("valid name signs");
    (path, name, prefix)
}

proptest! {
    #[test]
    fn sign_then_verify_returns_the_name((segments, k) in name_and_scope(), bound in any::<bool>()) {
        let ip = bound.then(client);
        let (path, name, prefix) = sign_segments(&segments, k, ip);
        prop_assert!(path.is_ascii());
        prop_assert_eq!(check(&path), Ok(name));
        let parsed = parse(&path).unwrap();
        prop_assert_eq!(parsed.signed_part(), prefix.as_str());
        prop_assert_eq!(parsed.scope_components(), k);
        prop_assert_eq!(parsed.is_address_bound(), bound);
    }

    #[test]
    fn a_mutated_link_never_opens_something_unsigned(
        (segments, k) in name_and_scope(),
        bound in any::<bool>(),
        at in any::<prop::sample::Index>(),
        byte in 0u8..0x80,
    ) {
        let (path, name, prefix) = sign_segments(&segments, k, bound.then(client));
        let i = at.index(path.len());
        prop_assume!(path.as_bytes()[i] != byte);
        let mut bytes = path.clone().into_bytes();
        bytes[i] = byte;
        let mutated = String::from_utf8(bytes).expect("ASCII stays UTF-8");
        let name_start = path.len() - fields(&path)[3].len();
        match check(&mutated) {
            Err(_) => {}
            Ok(got) => {
                // Only the name may change (to another spelling of the same name, or, under a
                // prefix scope, to another object inside the same prefix).
                prop_assert!(i >= name_start, "mutated {mutated} verified");
                if k == 0 {
                    prop_assert_eq!(got, name);
                } else {
                    prop_assert!(got.starts_with(&prefix), "{} outside {}", got, prefix);
                }
            }
        }
    }
}
