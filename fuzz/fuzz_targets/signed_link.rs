//! Signed links on arbitrary bytes: `parse` and `verify` never panic, what parses keeps the
//! format's promises (a bounded name without `.`/`..`/empty segments, the signed part a prefix
//! of it), and any name that `sign` accepts comes back unchanged from `verify`.
#![no_main]

use std::net::{IpAddr, Ipv4Addr};
use std::sync::LazyLock;

use libfuzzer_sys::fuzz_target;
use oasis_net::auth::link::{self, LinkError, LinkKeys, Scope, NAME_BYTES_MAX};

static KEYS: LazyLock<LinkKeys> = LazyLock::new(|| {
    LinkKeys::new(&[
        "fuzz current key: 0123456789abcdef0123456789abcdef",
        "fuzz previous key: fedcba9876543210fedcba9876543210",
    ])
    .expect("fixed keys are valid")
});

const NOW: u64 = 1_700_000_000;
const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(parsed) = link::parse(text) {
        let name = parsed.name();
        assert!(!name.is_empty() && name.len() <= NAME_BYTES_MAX);
        assert!(
            !name.split('/').any(|s| s.is_empty() || s == "." || s == ".."),
            "{name:?}"
        );
        assert!(name.starts_with(parsed.signed_part()));
        assert!(parsed.scope_components() <= 16);
    }
    match link::verify(&KEYS, text, NOW, CLIENT) {
        Ok(name) => assert_eq!(link::parse(text).map(|p| p.into_name()), Ok(name)),
        Err(err) => assert!(err.status() == 403 || err == LinkError::Expired),
    }
    // The same text as an object name: whatever `sign` accepts must verify to itself.
    if let Ok(path) = link::sign(&KEYS, Scope::Object(text), text, NOW, Some(CLIENT)) {
        let got = link::verify(&KEYS, &path, NOW, CLIENT);
        assert_eq!(got.as_deref(), Ok(text), "{path}");
    }
});
