//! The status datagram decoder and its checks: never panics on any bytes; whatever decodes in
//! the current version encodes back to the very same bytes (signed or not), an older version's
//! status encodes (in the current version) to bytes that decode to it again, and a signed
//! datagram passes the key check only with its key.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oasis_monitor::status::{decode, encode, Intake, VERSION};

fuzz_target!(|data: &[u8]| {
    let Ok(decoded) = decode(data) else {
        let _ = Intake::new(Some(b"key")).check(data);
        return;
    };
    if data[2] != VERSION {
        // Read for compatibility, always written in the current version.
        let again = encode(&decoded.status, None).expect("a decoded status encodes");
        let status = decode(&again).expect("an encoded status decodes").status;
        assert_eq!(status, decoded.status, "an older version's status changed on the way");
        return;
    }
    let again = if decoded.mac.is_some() {
        let mut unsigned = encode(&decoded.status, Some(b"key")).expect("a decoded status encodes");
        // The MAC is whatever the input had: compare the bytes it covers.
        unsigned.truncate(unsigned.len() - 32);
        unsigned.extend_from_slice(&data[data.len() - 32..]);
        unsigned
    } else {
        encode(&decoded.status, None).expect("a decoded status encodes")
    };
    assert_eq!(again, data, "a decoded datagram encodes to other bytes");
    let signed = encode(&decoded.status, Some(b"key")).expect("a decoded status encodes");
    assert!(Intake::new(Some(b"key")).check(&signed).is_ok());
    assert!(Intake::new(Some(b"other")).check(&signed).is_err());
});
