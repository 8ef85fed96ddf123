//! A small request body read whole into memory, for API requests that carry one (a
//! configuration fragment, a JSON document): declared length or chunked (decoded by
//! [`ChunkedDecoder`]), capped at [`API_BODY_BYTES_MAX`]. A declared length over the cap is
//! refused from the head; a chunked body is stopped when its decoded bytes pass the cap, and its
//! decoder is kept so a lingering close can find where it ends. Pure: the caller passes `now`,
//! reserves the memory ([`SmallBody::reserve_bytes`]) and decides what the bytes are for. Media
//! uploads never come here: they are streamed to a file (`upload`).

use std::time::Instant;

use super::reply::json_escape;
use super::upload::BodyLeft;
use crate::http::{ChunkedDecoder, HttpError, HttpLimits, RequestHead};

/// Largest body an API request may carry, decoded bytes; beyond it: 413.
pub const API_BODY_BYTES_MAX: usize = 64 << 10;

/// How the body is framed, and how much of a declared length is left.
enum Framing {
    Length(u64),
    Chunked(ChunkedDecoder),
}

/// A body being read into memory.
pub(super) struct SmallBody {
    framing: Framing,
    bytes: Vec<u8>,
    cap_bytes: usize,
    /// When the last bytes arrived (the body timeout runs from here).
    pub(super) last_progress: Instant,
}

/// What one piece of input did.
#[derive(Debug, PartialEq)]
pub(super) enum BodyFed {
    /// This many bytes were taken; more body is to come.
    More(usize),
    /// This many bytes were taken and the body is complete.
    Done(usize),
    /// This many bytes were taken and the body passed the cap (413).
    TooLarge(usize),
    /// Malformed chunked framing: where the body ends is unknown.
    Framing(HttpError),
}

/// The memory a body announced by `head` may need: its declared length, or the cap for a
/// chunked one; `None` when a declared length is over `cap_bytes` (refuse with 413).
pub(super) fn reserve_bytes(head: &RequestHead, cap_bytes: usize) -> Option<u64> {
    match (head.chunked, head.content_length) {
        (true, _) => Some(cap_bytes as u64),
        (false, Some(n)) if n > cap_bytes as u64 => None,
        (false, n) => Some(n.unwrap_or(0)),
    }
}

/// The JSON body of a 413 for an API body over `cap_bytes`.
pub(super) fn too_large_json(cap_bytes: usize) -> String {
    format!(
        "{{\"error\":{}}}\n",
        json_escape(&format!(
            "request body larger than {cap_bytes} bytes, the most an API request may carry; \
             send a smaller document"
        ))
    )
}

impl SmallBody {
    /// The body `head` announces (none: complete at once). `head`'s declared length was held
    /// to `cap_bytes` by [`reserve_bytes`].
    pub(super) fn new(
        head: &RequestHead,
        cap_bytes: usize,
        limits: &HttpLimits,
        now: Instant,
    ) -> SmallBody {
        let (framing, capacity) = if head.chunked {
            (Framing::Chunked(ChunkedDecoder::new(limits)), 0)
        } else {
            let n = head.content_length.unwrap_or(0).min(cap_bytes as u64);
            (Framing::Length(n), n as usize)
        };
        SmallBody {
            framing,
            bytes: Vec::with_capacity(capacity),
            cap_bytes,
            last_progress: now,
        }
    }

    /// Whether the whole body has been read (at once for a body of no bytes).
    pub(super) fn is_complete(&self) -> bool {
        matches!(self.framing, Framing::Length(0))
    }

    /// Takes body bytes from `input` (never past the body's end: what follows is the next
    /// request). `unread` is kept as what is left of the body for a lingering close: the
    /// declared bytes not read yet, the decoder of a chunked body stopped at the cap, nothing
    /// after bad framing or once complete.
    pub(super) fn feed(
        &mut self,
        input: &[u8],
        now: Instant,
        unread: &mut Option<BodyLeft>,
    ) -> BodyFed {
        self.last_progress = now;
        match &mut self.framing {
            Framing::Length(remaining) => {
                let n = (*remaining).min(input.len() as u64) as usize;
                self.bytes.extend_from_slice(&input[..n]);
                *remaining -= n as u64;
                if *remaining == 0 {
                    *unread = None;
                    BodyFed::Done(n)
                } else {
                    *unread = Some(BodyLeft::Bytes(*remaining));
                    BodyFed::More(n)
                }
            }
            Framing::Chunked(dec) => {
                let (bytes, cap) = (&mut self.bytes, self.cap_bytes);
                let mut over = false;
                let res = dec.decode_with(input, |data| {
                    if over || bytes.len() + data.len() > cap {
                        over = true;
                    } else {
                        bytes.extend_from_slice(data);
                    }
                });
                match res {
                    Err(e) => {
                        *unread = None;
                        BodyFed::Framing(e)
                    }
                    Ok(p) if over => {
                        *unread = (!p.done).then(|| self.take_unread()).flatten();
                        BodyFed::TooLarge(p.consumed_bytes)
                    }
                    Ok(p) if p.done => {
                        *unread = None;
                        BodyFed::Done(p.consumed_bytes)
                    }
                    Ok(p) => BodyFed::More(p.consumed_bytes),
                }
            }
        }
    }

    /// What is left of a chunked body that stops being read (a timeout, the cap): its decoder
    /// finds the end during a lingering close. `None` for a declared length (the caller's
    /// `unread` already counts it).
    pub(super) fn take_unread(&mut self) -> Option<BodyLeft> {
        match std::mem::replace(&mut self.framing, Framing::Length(0)) {
            Framing::Chunked(dec) => Some(BodyLeft::Chunked(Box::new(dec))),
            other => {
                self.framing = other;
                None
            }
        }
    }

    /// The body read.
    pub(super) fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(content_length: Option<u64>, chunked: bool) -> RequestHead {
        RequestHead {
            content_length,
            chunked,
            ..RequestHead::default()
        }
    }

    fn body(h: &RequestHead, cap: usize) -> SmallBody {
        SmallBody::new(h, cap, &HttpLimits::default(), Instant::now())
    }

    #[test]
    fn a_declared_length_is_read_in_pieces_and_not_past_its_end() {
        let h = head(Some(10), false);
        assert_eq!(reserve_bytes(&h, 64), Some(10));
        let mut b = body(&h, 64);
        let mut unread = None;
        assert!(!b.is_complete());
        assert_eq!(
            b.feed(b"hello", Instant::now(), &mut unread),
            BodyFed::More(5)
        );
        assert!(matches!(unread, Some(BodyLeft::Bytes(5))));
        let fed = b.feed(b" worldGET / HTTP/1.1", Instant::now(), &mut unread);
        assert_eq!(fed, BodyFed::Done(5));
        assert!(unread.is_none());
        assert_eq!(b.into_bytes(), b"hello worl");
    }

    #[test]
    fn no_body_is_complete_at_once() {
        for h in [head(None, false), head(Some(0), false)] {
            assert_eq!(reserve_bytes(&h, 64), Some(0));
            assert!(body(&h, 64).is_complete());
        }
    }

    #[test]
    fn a_declared_length_over_the_cap_is_refused_from_the_head() {
        assert_eq!(reserve_bytes(&head(Some(65), false), 64), None);
        assert_eq!(reserve_bytes(&head(Some(64), false), 64), Some(64));
        assert_eq!(reserve_bytes(&head(None, true), 64), Some(64));
        let msg = too_large_json(API_BODY_BYTES_MAX);
        let v: serde_json::Value = serde_json::from_str(&msg).unwrap();
        assert!(v["error"].as_str().unwrap().contains("65536"), "{msg}");
    }

    #[test]
    fn a_chunked_body_is_decoded_up_to_its_end() {
        let h = head(None, true);
        let mut b = body(&h, 64);
        let mut unread = None;
        let input = b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\nNEXT";
        let mut at = 0;
        // One byte at a time: every state of the decoder meets the end of an input.
        while at < input.len() {
            match b.feed(&input[at..at + 1], Instant::now(), &mut unread) {
                BodyFed::More(n) => at += n,
                BodyFed::Done(n) => {
                    at += n;
                    break;
                }
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(&input[at..], b"NEXT");
        assert!(unread.is_none());
        assert_eq!(b.into_bytes(), b"hello world");
    }

    #[test]
    fn a_chunked_body_over_the_cap_stops_and_keeps_its_decoder() {
        let h = head(None, true);
        let mut b = body(&h, 8);
        let mut unread = None;
        let fed = b.feed(b"5\r\nhello\r\n5\r\nworld\r\n", Instant::now(), &mut unread);
        assert!(matches!(fed, BodyFed::TooLarge(_)), "{fed:?}");
        // The rest of the body is found by the same decoder, and it ends there.
        let Some(BodyLeft::Chunked(mut dec)) = unread else {
            panic!("the decoder is kept for the lingering close");
        };
        let p = dec.decode_with(b"0\r\n\r\n", |_| {}).unwrap();
        assert!(p.done);
    }

    #[test]
    fn bad_framing_is_a_framing_error() {
        let h = head(None, true);
        let mut b = body(&h, 64);
        let mut unread = None;
        let fed = b.feed(b"zz\r\n", Instant::now(), &mut unread);
        assert!(matches!(fed, BodyFed::Framing(e) if e.status == 400));
        assert!(unread.is_none());
    }
}
