//! Frames: examples byte by byte, every way a frame is corrupt, and property round trips in any
//! split of the input.

use proptest::prelude::*;

use super::*;

fn frame(msg: &Message) -> Vec<u8> {
    let mut out = Vec::new();
    encode(msg, &mut out);
    out
}

/// As [`decode_in_steps_lenient`], and every byte belongs to a whole frame.
fn decode_in_steps(bytes: &[u8], step: usize) -> Result<Vec<Message>, Corrupt> {
    let got = decode_in_steps_lenient(bytes, step)?;
    let mut again = Vec::new();
    for m in &got {
        encode(m, &mut again);
    }
    assert_eq!(again.len(), bytes.len(), "bytes left over mid-frame");
    Ok(got)
}

#[test]
fn an_ack_frame_byte_by_byte() {
    let f = frame(&Message::Ack { durable_end: 258 });
    let mut want = vec![17, 0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 1, 2];
    let crc = crc32c::crc32c(&want);
    want.extend_from_slice(&crc.to_be_bytes());
    assert_eq!(f, want);
}

#[test]
fn a_hello_frame_byte_by_byte() {
    let f = frame(&Message::Hello {
        version: 1,
        stream: "a/b".into(),
        oldest_unacked: 7,
    });
    assert_eq!(
        &f[..f.len() - 4],
        &[1, 0, 0, 0, 14, 1, 0, 3, b'a', b'/', b'b', 0, 0, 0, 0, 0, 0, 0, 7]
    );
}

#[test]
fn data_is_one_frame_in_every_split() {
    let msg = Message::Data {
        offset: 1 << 40,
        bytes: (0..5000u32).map(|i| i as u8).collect(),
    };
    let f = frame(&msg);
    assert_eq!(f.len(), FRAME_OVERHEAD_BYTES + 8 + 5000);
    for step in [1, 2, 5, 13, 4096, f.len()] {
        assert_eq!(decode_in_steps(&f, step).unwrap(), vec![msg.clone()]);
    }
}

#[test]
fn the_head_ahead_names_the_body_before_it_is_allocated() {
    let f = frame(&Message::Data {
        offset: 9,
        bytes: vec![7; 5000],
    });
    let mut d = Decoder::new();
    assert_eq!(d.head_ahead(&f[..4]), None, "the head is not complete");
    assert_eq!(d.head_ahead(&f), Some((kind::DATA, 5000)));
    // The head split across calls: the bytes taken count.
    d.decode(&f[..3]).unwrap();
    assert_eq!(d.held_bytes(), 0);
    assert_eq!(d.head_ahead(&f[3..5]), Some((kind::DATA, 5000)));
    d.decode(&f[3..20]).unwrap();
    assert_eq!(d.head_ahead(&f[20..]), None, "the body is being taken");
    assert!(d.held_bytes() >= 5000);
    let (_, m) = d.decode(&f[20..]).unwrap();
    assert!(m.is_some());
    assert_eq!(d.payload_crc(), crc32c::crc32c(&[7; 5000]));
    assert_eq!(d.held_bytes(), 0, "the body went with the message");
    let ack = frame(&Message::Ack { durable_end: 1 });
    assert_eq!(d.head_ahead(&ack), Some((kind::ACK, 8)));
    // A head that is corrupt is not announced: decode says what is wrong.
    assert_eq!(d.head_ahead(&[2, 0x10, 0, 0, 0]), None);
    assert_eq!(d.head_ahead(&[99, 0, 0, 0, 8]), None);
}

#[test]
fn feed_and_next_keep_what_is_not_decoded() {
    let a = Message::End { offset: 3 };
    let b = Message::Gap { from: 1, to: 9 };
    let mut bytes = frame(&a);
    bytes.extend(frame(&b));
    let mut d = Decoder::new();
    d.feed(&bytes[..20]);
    assert_eq!(d.next().unwrap(), Some(a));
    assert_eq!(d.next().unwrap(), None);
    assert!(d.in_frame());
    d.feed(&bytes[20..]);
    assert_eq!(d.next().unwrap(), Some(b));
    assert_eq!(d.next().unwrap(), None);
    assert!(!d.in_frame());
}

fn corrupt(bytes: &[u8]) -> String {
    let mut d = Decoder::new();
    let e = match d.decode(bytes) {
        Err(e) => e,
        Ok(r) => panic!("decoded {r:?}"),
    };
    // It stays failed.
    assert_eq!(d.decode(&[]).unwrap_err(), e);
    e.0
}

fn with_crc(mut body: Vec<u8>) -> Vec<u8> {
    let crc = crc32c::crc32c(&body);
    body.extend_from_slice(&crc.to_be_bytes());
    body
}

#[test]
fn every_rule_a_frame_can_break() {
    assert_eq!(corrupt(&[99]), "unknown message kind 99");
    assert_eq!(corrupt(&[0, 0, 0, 0, 8]), "unknown message kind 0");
    assert!(corrupt(&[2, 0, 0x10, 0, 0x41]).contains("over the limit"));
    assert!(corrupt(&[2, 0, 0, 0, 8]).contains("DATA body of 8 bytes"));
    assert!(corrupt(&[17, 0, 0, 0, 9]).contains("ACK body of 9 bytes"));
    let mut f = frame(&Message::Ack { durable_end: 1 });
    let last = f.len() - 1;
    f[last] ^= 1;
    assert!(corrupt(&f).contains("CRC-32C mismatch in a ACK frame"));
    let mut f = frame(&Message::Data {
        offset: 0,
        bytes: vec![1, 2, 3],
    });
    f[14] ^= 0x80;
    assert!(corrupt(&f).contains("CRC-32C mismatch in a DATA frame"));
    // Fields that do not fit their body, with a correct CRC.
    let short_string = with_crc(vec![1, 0, 0, 0, 11, 1, 0, 5, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(corrupt(&short_string).contains("too short"));
    let trailing = with_crc(vec![1, 0, 0, 0, 12, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 9]);
    assert!(corrupt(&trailing).contains("1 bytes after the fields"));
    let follow = with_crc(vec![3, 0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
    assert!(corrupt(&follow).contains("follow = 2"));
    let gap = with_crc(vec![
        20, 0, 0, 0, 16, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0, 0, 0, 0, 5,
    ]);
    assert!(corrupt(&gap).contains("is empty"));
    let utf8 = with_crc(vec![1, 0, 0, 0, 12, 1, 0, 1, 0xff, 0, 0, 0, 0, 0, 0, 0, 0]);
    assert!(corrupt(&utf8).contains("not UTF-8"));
}

#[test]
fn a_bad_hello_is_not_corrupt() {
    let msg = Message::Hello {
        version: 9,
        stream: "../etc".into(),
        oldest_unacked: 0,
    };
    assert_eq!(decode_in_steps(&frame(&msg), 3).unwrap(), vec![msg]);
}

#[test]
fn stream_names() {
    for ok in ["a", "web-1/access", "A.b_c-9/x/y", &"x".repeat(200)] {
        validate_stream(ok).unwrap();
    }
    for bad in [
        "",
        "/a",
        "a/",
        "a//b",
        "a/./b",
        "..",
        "a b",
        "a%b",
        "é",
        &"x".repeat(201),
    ] {
        assert!(validate_stream(bad).is_err(), "{bad:?}");
    }
    let e = validate_stream("a//b").unwrap_err().to_string();
    assert!(e.contains("empty, `.` or `..` part"), "{e}");
}

#[test]
fn a_long_reason_is_cut_at_a_character() {
    let msg = Message::Refuse {
        code: refuse::DISK_FULL,
        expect: 0,
        reason: "é".repeat(STRING_BYTES_MAX),
    };
    let got = decode_in_steps(&frame(&msg), 100).unwrap();
    let Message::Refuse { reason, .. } = &got[0] else {
        panic!("{got:?}")
    };
    assert_eq!(reason.len(), STRING_BYTES_MAX);
    assert!(reason.chars().all(|c| c == 'é'));
}

#[test]
fn a_data_frame_in_parts_is_the_frame_whole() {
    let payload: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
    let (head, crc) = data_frame_parts(99, payload.len(), crc32c::crc32c(&payload));
    let parts = [&head[..], &payload, &crc].concat();
    let mut whole = Vec::new();
    encode_data(99, &payload, &mut whole);
    assert_eq!(parts, whole);
}

#[test]
fn a_chunk_in_parts_is_the_chunk_whole() {
    let bytes: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
    let (head, crc) = chunk_frame_parts(99, bytes.len(), crc32c::crc32c(&bytes));
    let mut parts = head.to_vec();
    parts.extend_from_slice(&bytes);
    parts.extend_from_slice(&crc);
    let mut whole = Vec::new();
    encode_chunk(99, &bytes, &mut whole);
    assert_eq!(parts, whole);
}

#[test]
#[should_panic(expected = "1 to 1048576 bytes")]
fn an_empty_data_is_a_bug_of_the_sender() {
    encode_data(0, &[], &mut Vec::new());
}

fn any_string() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9._/é-]{0,40}"
}

fn any_message() -> impl Strategy<Value = Message> {
    let bytes = || proptest::collection::vec(any::<u8>(), 1..3000);
    prop_oneof![
        (any::<u8>(), any_string(), any::<u64>()).prop_map(|(version, stream, oldest_unacked)| {
            Message::Hello {
                version,
                stream,
                oldest_unacked,
            }
        }),
        (any::<u64>(), bytes()).prop_map(|(offset, bytes)| Message::Data { offset, bytes }),
        (any_string(), any::<u64>(), any::<bool>()).prop_map(|(stream, from, follow)| {
            Message::Read {
                stream,
                from,
                follow,
            }
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(expect, durable_end)| Message::Welcome {
            expect,
            durable_end
        }),
        any::<u64>().prop_map(|durable_end| Message::Ack { durable_end }),
        (any::<u8>(), any::<u64>(), any_string()).prop_map(|(code, expect, reason)| {
            Message::Refuse {
                code,
                expect,
                reason,
            }
        }),
        (any::<u64>(), bytes()).prop_map(|(offset, bytes)| Message::Chunk { offset, bytes }),
        (any::<u64>(), 1..u64::MAX).prop_map(|(from, n)| Message::Gap {
            from: from.min(u64::MAX - n),
            to: from.min(u64::MAX - n) + n
        }),
        any::<u64>().prop_map(|offset| Message::End { offset }),
        any_string().prop_map(|prefix| Message::List { prefix }),
        (any_string(), any::<u64>(), any::<u64>(), any::<u64>()).prop_map(
            |(stream, first, durable_end, held)| Message::Stream {
                stream,
                first,
                durable_end,
                held
            }
        ),
    ]
}

proptest! {
    #[test]
    fn messages_round_trip_in_any_split(
        msgs in proptest::collection::vec(any_message(), 1..6),
        step in 1usize..200,
    ) {
        let mut bytes = Vec::new();
        for m in &msgs {
            encode(m, &mut bytes);
        }
        prop_assert_eq!(decode_in_steps(&bytes, step).unwrap(), msgs.clone());
        let mut d = Decoder::new();
        let mut got = Vec::new();
        for piece in bytes.chunks(step) {
            d.feed(piece);
            while let Some(m) = d.next().unwrap() {
                got.push(m);
            }
        }
        prop_assert_eq!(got, msgs);
    }

    #[test]
    fn a_flipped_bit_is_never_taken_for_the_frame(
        msg in any_message(),
        at in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let mut bytes = frame(&msg);
        let i = at.index(bytes.len());
        bytes[i] ^= 1 << bit;
        // CRC-32C detects every single-bit error: corrupt, or (a flipped length) incomplete.
        if let Ok(got) = decode_in_steps_lenient(&bytes, 7) {
            prop_assert!(got.is_empty(), "decoded {:?}", got);
        }
    }

    #[test]
    fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64), step in 1usize..9) {
        let _ = decode_in_steps_lenient(&bytes, step);
    }
}

/// Decodes `bytes` handed over in pieces of `step` bytes with `decode`; a frame left incomplete
/// at the end is fine.
fn decode_in_steps_lenient(bytes: &[u8], step: usize) -> Result<Vec<Message>, Corrupt> {
    let mut d = Decoder::new();
    let mut out = Vec::new();
    for piece in bytes.chunks(step.max(1)) {
        let mut at = 0;
        while at < piece.len() {
            let (used, msg) = d.decode(&piece[at..])?;
            assert!(used > 0 && used <= piece.len() - at);
            at += used;
            out.extend(msg);
        }
    }
    Ok(out)
}
