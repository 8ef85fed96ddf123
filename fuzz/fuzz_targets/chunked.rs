//! The chunked body decoder: the same input gives the same body and the same verdict whether it
//! arrives at once or in pieces of any size (the engine hands over whatever the socket gave).
#![no_main]

use libfuzzer_sys::fuzz_target;
use oasis_net::http::{ChunkedDecoder, HttpLimits};

/// Decodes `input` handed over in pieces whose sizes come from `cuts`; returns the body, whether
/// it completed, and whether it failed.
fn decode(input: &[u8], cuts: &[u8]) -> (Vec<u8>, bool, bool) {
    let limits = HttpLimits::default();
    let mut dec = ChunkedDecoder::new(&limits);
    let mut body = Vec::new();
    let mut pending: Vec<u8> = Vec::new();
    let mut at = 0;
    let mut cut = cuts.iter().cycle();
    while at < input.len() {
        let step = if cuts.is_empty() {
            input.len()
        } else {
            usize::from(*cut.next().expect("cycle")).max(1)
        };
        let end = (at + step).min(input.len());
        pending.extend_from_slice(&input[at..end]);
        at = end;
        match dec.decode(&pending, &mut body) {
            Ok(p) => {
                assert!(p.consumed_bytes <= pending.len());
                pending.drain(..p.consumed_bytes);
                if p.done {
                    return (body, true, false);
                }
            }
            Err(_) => return (body, false, true),
        }
    }
    (body, false, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (cuts, input) = rest.split_at(usize::from(n).min(rest.len()));
    let whole = decode(input, &[]);
    let pieces = decode(input, cuts);
    assert_eq!(whole, pieces);
});
