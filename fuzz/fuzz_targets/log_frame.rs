//! The log protocol's frame decoder: never panics, and gives the same messages and the same
//! verdict whether the input arrives at once or in pieces of any size (the engine hands over
//! whatever the socket gave). Whatever decodes encodes back to the same bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use oasis_log::proto::{encode, Decoder, Message};

/// `input` cut into pieces whose sizes come from `cuts` in turn (one piece without cuts).
fn pieces<'a>(input: &'a [u8], cuts: &[u8]) -> Vec<&'a [u8]> {
    let mut out = Vec::new();
    let mut rest = input;
    let mut i = 0;
    while !rest.is_empty() {
        let size = cuts.get(i % cuts.len().max(1)).map_or(rest.len(), |&c| usize::from(c).max(1));
        let (piece, tail) = rest.split_at(size.min(rest.len()));
        out.push(piece);
        rest = tail;
        i += 1;
    }
    out
}

/// Decodes the pieces in order: the messages, and whether the input was corrupt.
fn decode(pieces: &[&[u8]]) -> (Vec<Message>, bool) {
    let mut dec = Decoder::new();
    let mut out = Vec::new();
    for piece in pieces {
        let mut piece = *piece;
        while !piece.is_empty() {
            match dec.decode(piece) {
                Ok((used, msg)) => {
                    assert!(used > 0 && used <= piece.len());
                    piece = &piece[used..];
                    out.extend(msg);
                }
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fuzz_target!(|data: &[u8]| {
    let Some((&n, rest)) = data.split_first() else {
        return;
    };
    let (cuts, input) = rest.split_at(usize::from(n).min(rest.len()));
    let whole = decode(&pieces(input, &[]));
    let cut = decode(&pieces(input, cuts));
    assert_eq!(whole, cut);
    let mut again = Vec::new();
    for m in &whole.0 {
        encode(m, &mut again);
    }
    assert!(input.starts_with(&again), "a decoded frame encodes to other bytes");
});
