//! Incremental decoder for the chunked transfer coding of upload bodies (RFC 9112 §7.1).
//!
//! Bytes arrive in arbitrary pieces; [`ChunkedDecoder`] keeps the state between them and hands
//! out the decoded data as slices of the input, without buffering it. It is strict where
//! leniency enables request smuggling (CRLF required, no sign or whitespace in sizes, sizes
//! checked for overflow) and bounded everywhere (size line, extensions, trailers, body). It must
//! never read past the end of the body: the bytes after it belong to the next request.
//!
//! What it accepts:
//!
//! ```text
//! chunk:      1*HEXDIG [ (";" | SP | HTAB) ext-bytes ] CRLF  <size bytes of data> CRLF
//! last chunk: 1*"0"    [ (";" | SP | HTAB) ext-bytes ] CRLF
//! trailers:   *( field-line CRLF )   (checked for control bytes, then discarded)
//! end:        CRLF
//! ```
//!
//! Extensions are bounded and checked for control bytes but otherwise ignored.

use super::limits::HttpLimits;
use super::HttpError;

const ERR_SIZE: HttpError = HttpError::bad_request("invalid chunk size");
const ERR_SIZE_OVERFLOW: HttpError = HttpError::bad_request("chunk size overflows");
const ERR_LINE_TOO_LONG: HttpError = HttpError::bad_request("chunk size line too long");
const ERR_EXTENSION: HttpError = HttpError::bad_request("invalid chunk extension");
const ERR_EXTENSION_TOO_LONG: HttpError = HttpError::bad_request("chunk extension too long");
const ERR_CRLF: HttpError = HttpError::bad_request("chunk not terminated by CRLF");
const ERR_TRAILER: HttpError = HttpError::bad_request("invalid trailer section");
const ERR_TRAILER_TOO_BIG: HttpError = HttpError::bad_request("trailer section too large");
const ERR_BODY_TOO_BIG: HttpError = HttpError::new(413, "chunked body too large");

/// How far one [`ChunkedDecoder::decode`] call got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkedProgress {
    /// Input bytes used; the caller drops them and passes the rest (plus new bytes) next time.
    pub consumed_bytes: usize,
    /// The last chunk and the trailer section have been read: the body is complete.
    pub done: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    Size {
        digits: usize,
    },
    /// After the size: optional whitespace and `;` extensions, up to CR.
    Extension,
    /// Expecting the LF of the size line.
    SizeLf,
    /// Inside chunk data.
    Data {
        remaining_bytes: u64,
    },
    /// Expecting the CR after chunk data.
    DataCr,
    /// Expecting the LF after chunk data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerLineStart,
    /// Inside a trailer field line, up to CR.
    TrailerLine,
    /// Expecting the LF ending a trailer field line.
    TrailerLineLf,
    /// Expecting the LF of the final empty line.
    FinalLf,
    Done,
    Failed(HttpError),
}

/// Decodes one chunked body, fed in pieces.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    chunk_size_bytes: u64,
    line_bytes: usize,
    extension_bytes: usize,
    trailer_bytes: usize,
    body_bytes: u64,
    chunk_line_bytes_max: usize,
    chunk_extension_bytes_max: usize,
    trailer_bytes_max: usize,
    body_bytes_max: u64,
}

impl ChunkedDecoder {
    pub fn new(limits: &HttpLimits) -> Self {
        Self {
            state: State::Size { digits: 0 },
            chunk_size_bytes: 0,
            line_bytes: 0,
            extension_bytes: 0,
            trailer_bytes: 0,
            body_bytes: 0,
            chunk_line_bytes_max: limits.chunk_line_bytes_max,
            chunk_extension_bytes_max: limits.chunk_extension_bytes_max,
            trailer_bytes_max: limits.trailer_bytes_max,
            body_bytes_max: limits.body_bytes_max,
        }
    }

    /// Decoded body bytes so far.
    pub fn body_bytes(&self) -> u64 {
        self.body_bytes
    }

    /// Decodes from `input`, appending body data to `out`.
    pub fn decode(
        &mut self,
        input: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<ChunkedProgress, HttpError> {
        self.decode_with(input, |data| out.extend_from_slice(data))
    }

    /// Decodes from `input`, passing each run of body data (a sub-slice of `input`) to
    /// `on_data`. Stops at the end of the body; an error is final and returned again on
    /// every later call.
    pub fn decode_with(
        &mut self,
        input: &[u8],
        mut on_data: impl FnMut(&[u8]),
    ) -> Result<ChunkedProgress, HttpError> {
        let mut at = 0;
        while at < input.len() {
            if let State::Data { remaining_bytes } = self.state {
                let available = input.len() - at;
                let take = usize::try_from(remaining_bytes)
                    .unwrap_or(usize::MAX)
                    .min(available);
                on_data(&input[at..at + take]);
                at += take;
                let remaining_bytes = remaining_bytes - take as u64;
                self.state = if remaining_bytes == 0 {
                    State::DataCr
                } else {
                    State::Data { remaining_bytes }
                };
                continue;
            }
            if matches!(self.state, State::Done | State::Failed(_)) {
                break;
            }
            let byte = input[at];
            at += 1;
            if let Err(error) = self.step(byte) {
                self.state = State::Failed(error);
            }
        }
        match self.state {
            State::Failed(error) => Err(error),
            State::Done => Ok(ChunkedProgress {
                consumed_bytes: at,
                done: true,
            }),
            _ => Ok(ChunkedProgress {
                consumed_bytes: at,
                done: false,
            }),
        }
    }

    /// Advances the framing state by one byte (everything but chunk data).
    fn step(&mut self, byte: u8) -> Result<(), HttpError> {
        match self.state {
            State::Size { digits } => {
                self.count_line_byte()?;
                if let Some(value) = hex_digit(byte) {
                    // Overflow-safe: refuse before the shift would lose bits.
                    if self.chunk_size_bytes > (u64::MAX >> 4) {
                        return Err(ERR_SIZE_OVERFLOW);
                    }
                    self.chunk_size_bytes = self.chunk_size_bytes << 4 | u64::from(value);
                    self.state = State::Size { digits: digits + 1 };
                    return Ok(());
                }
                if digits == 0 {
                    return Err(ERR_SIZE);
                }
                match byte {
                    b'\r' => self.state = State::SizeLf,
                    b';' | b' ' | b'\t' => {
                        self.state = State::Extension;
                        self.count_extension_byte(byte)?;
                    }
                    _ => return Err(ERR_SIZE),
                }
            }
            State::Extension => {
                self.count_line_byte()?;
                if byte == b'\r' {
                    self.state = State::SizeLf;
                } else {
                    self.count_extension_byte(byte)?;
                }
            }
            State::SizeLf => {
                if byte != b'\n' {
                    return Err(ERR_CRLF);
                }
                self.count_line_byte()?;
                self.end_size_line()?;
            }
            State::DataCr => {
                if byte != b'\r' {
                    return Err(ERR_CRLF);
                }
                self.state = State::DataLf;
            }
            State::DataLf => {
                if byte != b'\n' {
                    return Err(ERR_CRLF);
                }
                self.state = State::Size { digits: 0 };
            }
            State::TrailerLineStart => {
                self.count_trailer_byte()?;
                self.state = match byte {
                    b'\r' => State::FinalLf,
                    // A field line starts with a token character, never whitespace.
                    b' ' | b'\t' | b'\n' | b':' => return Err(ERR_TRAILER),
                    _ if is_field_byte(byte) => State::TrailerLine,
                    _ => return Err(ERR_TRAILER),
                };
            }
            State::TrailerLine => {
                self.count_trailer_byte()?;
                if byte == b'\r' {
                    self.state = State::TrailerLineLf;
                } else if !is_field_byte(byte) {
                    return Err(ERR_TRAILER);
                }
            }
            State::TrailerLineLf => {
                self.count_trailer_byte()?;
                if byte != b'\n' {
                    return Err(ERR_TRAILER);
                }
                self.state = State::TrailerLineStart;
            }
            State::FinalLf => {
                self.count_trailer_byte()?;
                if byte != b'\n' {
                    return Err(ERR_CRLF);
                }
                self.state = State::Done;
            }
            State::Data { .. } | State::Done | State::Failed(_) => {
                unreachable!("decode_with handles data, done and failed states")
            }
        }
        Ok(())
    }

    fn end_size_line(&mut self) -> Result<(), HttpError> {
        let size = self.chunk_size_bytes;
        self.chunk_size_bytes = 0;
        self.line_bytes = 0;
        self.extension_bytes = 0;
        if size == 0 {
            self.state = State::TrailerLineStart;
            return Ok(());
        }
        match self.body_bytes.checked_add(size) {
            Some(total) if total <= self.body_bytes_max => self.body_bytes = total,
            _ => return Err(ERR_BODY_TOO_BIG),
        }
        self.state = State::Data {
            remaining_bytes: size,
        };
        Ok(())
    }

    fn count_line_byte(&mut self) -> Result<(), HttpError> {
        self.line_bytes += 1;
        if self.line_bytes > self.chunk_line_bytes_max {
            return Err(ERR_LINE_TOO_LONG);
        }
        Ok(())
    }

    fn count_extension_byte(&mut self, byte: u8) -> Result<(), HttpError> {
        if !is_field_byte(byte) {
            return Err(ERR_EXTENSION);
        }
        self.extension_bytes += 1;
        if self.extension_bytes > self.chunk_extension_bytes_max {
            return Err(ERR_EXTENSION_TOO_LONG);
        }
        Ok(())
    }

    fn count_trailer_byte(&mut self) -> Result<(), HttpError> {
        self.trailer_bytes += 1;
        if self.trailer_bytes > self.trailer_bytes_max {
            return Err(ERR_TRAILER_TOO_BIG);
        }
        Ok(())
    }
}

fn hex_digit(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Visible characters, space, tab and obs-text: what field lines and extensions may hold.
fn is_field_byte(byte: u8) -> bool {
    byte == b'\t' || (byte >= b' ' && byte != 0x7f)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode_all(input: &[u8]) -> Result<(Vec<u8>, ChunkedProgress), HttpError> {
        let mut decoder = ChunkedDecoder::new(&HttpLimits::default());
        let mut out = Vec::new();
        let progress = decoder.decode(input, &mut out)?;
        Ok((out, progress))
    }

    /// Encodes `body` with the given chunk sizes (cycled), then the last chunk and trailers.
    fn encode(body: &[u8], sizes: &[usize], trailers: &str) -> Vec<u8> {
        let mut encoded = Vec::new();
        let mut rest = body;
        let mut sizes = sizes.iter().cycle();
        while !rest.is_empty() {
            let size = (*sizes.next().unwrap()).clamp(1, rest.len());
            encoded.extend_from_slice(format!("{size:X}\r\n").as_bytes());
            encoded.extend_from_slice(&rest[..size]);
            encoded.extend_from_slice(b"\r\n");
            rest = &rest[size..];
        }
        encoded.extend_from_slice(b"0\r\n");
        encoded.extend_from_slice(trailers.as_bytes());
        encoded.extend_from_slice(b"\r\n");
        encoded
    }

    #[test]
    fn rfc_example_with_extensions_and_trailer() {
        let input = b"4\r\nWiki\r\n5;name=value\r\npedia\r\nE ; x=\"q\"\r\n in\r\n\r\nchunks.\r\n\
            0\r\nExpires: never\r\n\r\nGET / HTTP/1.1";
        let (out, progress) = decode_all(input).unwrap();
        assert_eq!(out, b"Wikipedia in\r\n\r\nchunks.");
        assert!(progress.done);
        assert_eq!(
            &input[progress.consumed_bytes..],
            b"GET / HTTP/1.1",
            "stops at the end"
        );
    }

    #[test]
    fn empty_body_and_leading_zeros() {
        let (out, progress) = decode_all(b"0\r\n\r\n").unwrap();
        assert!(out.is_empty() && progress.done && progress.consumed_bytes == 5);
        let (out, _) = decode_all(b"0003\r\nabc\r\n000\r\n\r\n").unwrap();
        assert_eq!(out, b"abc");
    }

    #[test]
    fn malformed_framing_is_400() {
        for input in [
            &b"\r\n"[..],
            b"g\r\n",
            b"-1\r\n",
            b"+1\r\n",
            b"0x1\r\n",
            b"1\nA\r\n",
            b"1\r\nAB\r\n",
            b"1\r\nA\n0\r\n\r\n",
            b"1\r\nA\r\n0\r\n\n",
            b"0\r\n: no name\r\n\r\n",
            b"0\r\n folded\r\n\r\n",
            b"0\r\nBad\x00: x\r\n\r\n",
            b"1;\x01\r\n",
            b"1 x\x7f\r\n",
        ] {
            let error = decode_all(input).unwrap_err();
            assert_eq!(error.status, 400, "{:?}", String::from_utf8_lossy(input));
        }
    }

    #[test]
    fn size_overflow_is_caught() {
        assert_eq!(
            decode_all(b"10000000000000000\r\n").unwrap_err(),
            ERR_SIZE_OVERFLOW
        );
        let limits = HttpLimits {
            body_bytes_max: u64::MAX,
            ..Default::default()
        };
        let mut decoder = ChunkedDecoder::new(&limits);
        let progress = decoder
            .decode(b"FFFFFFFFFFFFFFFF\r\n", &mut Vec::new())
            .unwrap();
        assert!(!progress.done);
    }

    #[test]
    fn limits_are_enforced() {
        let limits = HttpLimits {
            chunk_line_bytes_max: 16,
            chunk_extension_bytes_max: 8,
            trailer_bytes_max: 12,
            body_bytes_max: 10,
            ..Default::default()
        };
        let run = |input: &[u8]| ChunkedDecoder::new(&limits).decode(input, &mut Vec::new());
        assert_eq!(run(b"000000000000000001\r\n"), Err(ERR_LINE_TOO_LONG));
        assert_eq!(run(b"1;abcdefghi\r\n"), Err(ERR_EXTENSION_TOO_LONG));
        assert!(run(b"1;abcdefg\r\nx\r\n").is_ok());
        assert_eq!(
            run(b"0\r\nX-Long: 1234567\r\n\r\n"),
            Err(ERR_TRAILER_TOO_BIG)
        );
        assert!(run(b"0\r\nX: 1\r\n\r\n").unwrap().done);
        assert_eq!(run(b"5\r\nhello\r\n6\r\n"), Err(ERR_BODY_TOO_BIG));
        assert_eq!(run(b"5\r\nhello\r\n6\r\n").unwrap_err().status, 413);
        assert!(run(b"5\r\nhello\r\n5\r\nworld\r\n0\r\n\r\n").unwrap().done);
    }

    #[test]
    fn errors_are_sticky_and_done_consumes_nothing_more() {
        let mut decoder = ChunkedDecoder::new(&HttpLimits::default());
        assert!(decoder.decode(b"z", &mut Vec::new()).is_err());
        assert!(decoder.decode(b"0\r\n\r\n", &mut Vec::new()).is_err());
        let mut decoder = ChunkedDecoder::new(&HttpLimits::default());
        assert!(decoder.decode(b"0\r\n\r\n", &mut Vec::new()).unwrap().done);
        let again = decoder.decode(b"more", &mut Vec::new()).unwrap();
        assert_eq!(
            again,
            ChunkedProgress {
                consumed_bytes: 0,
                done: true
            }
        );
    }

    #[test]
    fn data_is_handed_out_as_input_slices() {
        let mut decoder = ChunkedDecoder::new(&HttpLimits::default());
        let mut runs = Vec::new();
        decoder
            .decode_with(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n", |d| {
                runs.push(d.to_vec())
            })
            .unwrap();
        assert_eq!(runs, vec![b"abc".to_vec(), b"de".to_vec()]);
        assert_eq!(decoder.body_bytes(), 5);
    }

    proptest! {
        /// Fuzz target: arbitrary bytes in arbitrary pieces never panic, never over-consume.
        #[test]
        fn arbitrary_input_never_panics(
            input in prop::collection::vec(any::<u8>(), 0..512), cut in any::<prop::sample::Index>()
        ) {
            let mut decoder = ChunkedDecoder::new(&HttpLimits::default());
            let mut out = Vec::new();
            let cut = cut.index(input.len() + 1);
            if let Ok(progress) = decoder.decode(&input[..cut], &mut out) {
                prop_assert!(progress.consumed_bytes <= cut);
                if let Ok(second) = decoder.decode(&input[progress.consumed_bytes..], &mut out) {
                    prop_assert!(second.consumed_bytes <= input.len() - progress.consumed_bytes);
                }
            }
            prop_assert!(out.len() <= input.len());
        }

        /// Round trip: any body, any chunking, any delivery pieces decodes to the body and
        /// consumes exactly the encoding.
        #[test]
        fn encoded_bodies_decode_back(
            body in prop::collection::vec(any::<u8>(), 0..2000),
            sizes in prop::collection::vec(1usize..300, 1..5),
            pieces in prop::collection::vec(1usize..64, 1..8),
            trailer in prop::sample::select(vec!["", "X-Checksum: abc\r\n", "A: 1\r\nB: 2\r\n"]),
        ) {
            let mut encoded = encode(&body, &sizes, trailer);
            let encoded_len = encoded.len();
            encoded.extend_from_slice(b"NEXT");
            let mut decoder = ChunkedDecoder::new(&HttpLimits::default());
            let mut out = Vec::new();
            let mut pending: &[u8] = &encoded;
            let mut pieces = pieces.iter().cycle();
            let mut consumed_total = 0;
            loop {
                // Deliver a growing window, as a socket would; keep unconsumed bytes.
                let window = (*pieces.next().unwrap()).min(pending.len());
                let progress = decoder.decode(&pending[..window], &mut out).unwrap();
                consumed_total += progress.consumed_bytes;
                pending = &pending[progress.consumed_bytes..];
                if progress.done {
                    break;
                }
                prop_assert!(!pending.is_empty(), "ran out of input before done");
            }
            prop_assert_eq!(out, body);
            prop_assert_eq!(consumed_total, encoded_len);
            prop_assert_eq!(pending, b"NEXT");
        }
    }
}
