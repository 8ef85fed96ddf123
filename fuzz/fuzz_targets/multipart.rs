//! The `multipart/byteranges` planner: for any valid ranges of any object, the announced body
//! length is exactly the bytes the plan sends, and every part names its own range.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oasis_net::http::{plan_byteranges, ByteRange};

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (total, rest) = data.split_at(8);
    let total = u64::from_le_bytes(total.try_into().expect("8 bytes")).max(1);
    // Pairs of u64 become ranges clamped into the object.
    let ranges: Vec<ByteRange> = rest
        .chunks_exact(16)
        .take(64)
        .map(|pair| {
            let a = u64::from_le_bytes(pair[..8].try_into().expect("8 bytes")) % total;
            let b = u64::from_le_bytes(pair[8..].try_into().expect("8 bytes")) % total;
            ByteRange::new(a.min(b), a.max(b))
        })
        .collect();
    if ranges.is_empty() {
        return;
    }
    let plan = plan_byteranges(&ranges, "video/mp4", total, "00000000000000000042");
    let mut sent = plan.closing.len() as u64;
    for (part, range) in plan.parts.iter().zip(&ranges) {
        assert_eq!(part.range, *range);
        let head = String::from_utf8(part.header.clone()).expect("ASCII part header");
        let expected = format!(
            "Content-Range: bytes {}-{}/{total}",
            range.start, range.end_inclusive
        );
        assert!(head.contains(&expected), "{head:?}");
        sent += part.header.len() as u64 + (range.end_inclusive - range.start + 1);
    }
    assert_eq!(plan.parts.len(), ranges.len());
    assert_eq!(plan.body_bytes, sent);
});
