//! The `Range` parser: any header against any length gives ranges inside the object, at most
//! the configured count, and never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oasis_net::http::{parse_range, RangeSpec};

const RANGES_MAX: usize = 32;

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (len, header) = data.split_at(8);
    let len = u64::from_le_bytes(len.try_into().expect("8 bytes"));
    let Ok(header) = std::str::from_utf8(header) else {
        return;
    };
    match parse_range(header, len, RANGES_MAX) {
        RangeSpec::Full | RangeSpec::Unsatisfiable => {}
        RangeSpec::Single(r) => assert!(r.start <= r.end_inclusive && r.end_inclusive < len),
        RangeSpec::Multi(rs) => {
            assert!(rs.len() >= 2 && rs.len() <= RANGES_MAX);
            for r in rs {
                assert!(r.start <= r.end_inclusive && r.end_inclusive < len);
            }
        }
    }
});
