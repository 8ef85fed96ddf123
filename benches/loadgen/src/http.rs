//! Sans-IO HTTP/1.1 response parser for the load generator: it is fed the bytes of one response
//! at a time, finds the head, and counts the body against `Content-Length`.
//!
//! It only supports what a media server answers to a plain GET: a `Content-Length` body, or no
//! body for 1xx/204/304. A chunked or unbounded body is reported as an error, never guessed at,
//! so a short or malformed response is always counted. It never touches sockets or the clock.

/// Upper bound on a response head; a larger head is an error.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    HeadTooLarge,
    BadStatusLine,
    BadHeader,
    BadContentLength,
    NoContentLength,
    Chunked,
}

impl ParseError {
    /// Stable name used as the error kind in reports.
    pub fn kind(self) -> &'static str {
        match self {
            ParseError::HeadTooLarge => "head_too_large",
            ParseError::BadStatusLine => "bad_status_line",
            ParseError::BadHeader => "bad_header",
            ParseError::BadContentLength => "bad_content_length",
            ParseError::NoContentLength => "no_content_length",
            ParseError::Chunked => "chunked_unsupported",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    pub content_length: u64,
    /// The server will close the connection after this response.
    pub close: bool,
    /// `Retry-After` in seconds, when the response carried one as a number.
    pub retry_after_s: Option<u32>,
}

/// What one call to [`ResponseParser::feed`] found.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Fed {
    /// Bytes of the input that belong to this response.
    pub consumed: usize,
    /// Set on the call that completed the head.
    pub head: Option<Head>,
    /// The response is complete.
    pub done: bool,
}

#[derive(Debug)]
enum State {
    Head,
    Body { remaining: u64 },
    Done,
}

#[derive(Debug)]
pub struct ResponseParser {
    state: State,
    head_buf: Vec<u8>,
    head: Option<Head>,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    pub fn new() -> Self {
        Self {
            state: State::Head,
            head_buf: Vec::with_capacity(1024),
            head: None,
        }
    }

    /// Prepares for the next response on the same connection.
    pub fn reset(&mut self) {
        self.state = State::Head;
        self.head_buf.clear();
        self.head = None;
    }

    pub fn head(&self) -> Option<Head> {
        self.head
    }

    /// True once any byte of the current response has been seen.
    pub fn started(&self) -> bool {
        !matches!(self.state, State::Head) || !self.head_buf.is_empty()
    }

    pub fn is_done(&self) -> bool {
        matches!(self.state, State::Done)
    }

    /// Body bytes still expected (0 before the head is known).
    pub fn remaining(&self) -> u64 {
        match self.state {
            State::Body { remaining } => remaining,
            _ => 0,
        }
    }

    pub fn feed(&mut self, data: &[u8]) -> Result<Fed, ParseError> {
        let mut fed = Fed::default();
        let mut rest = data;
        if let State::Head = self.state {
            let search_from = self.head_buf.len().saturating_sub(3);
            let take = rest
                .len()
                .min(HEAD_BYTES_MAX + 4 - self.head_buf.len().min(HEAD_BYTES_MAX + 4));
            self.head_buf.extend_from_slice(&rest[..take]);
            let Some(pos) = find_crlfcrlf(&self.head_buf[search_from..]) else {
                if self.head_buf.len() > HEAD_BYTES_MAX {
                    return Err(ParseError::HeadTooLarge);
                }
                fed.consumed = take;
                return Ok(fed);
            };
            let head_end = search_from + pos + 4;
            let used = head_end - (self.head_buf.len() - take);
            self.head_buf.truncate(head_end);
            let head = parse_head(&self.head_buf)?;
            fed.head = Some(head);
            self.head = Some(head);
            fed.consumed = used;
            rest = &rest[used..];
            self.state = if head.content_length == 0 {
                State::Done
            } else {
                State::Body {
                    remaining: head.content_length,
                }
            };
        }
        if let State::Body { remaining } = &mut self.state {
            let n = (rest.len() as u64).min(*remaining);
            *remaining -= n;
            fed.consumed += n as usize;
            if *remaining == 0 {
                self.state = State::Done;
            }
        }
        fed.done = self.is_done();
        Ok(fed)
    }
}

impl ResponseParser {
    /// Counts `n` body bytes that were dropped unseen (`--discard-body`). Only valid while
    /// the body is being read, for at most [`ResponseParser::remaining`] bytes.
    pub fn skip_body(&mut self, n: u64) -> Fed {
        let State::Body { remaining } = &mut self.state else {
            panic!("skip_body outside a body");
        };
        assert!(n <= *remaining, "skipped past the body");
        *remaining -= n;
        if *remaining == 0 {
            self.state = State::Done;
        }
        Fed {
            consumed: n as usize,
            head: None,
            done: self.is_done(),
        }
    }
}

fn find_crlfcrlf(buf: &[u8]) -> Option<usize> {
    buf.windows(4).position(|w| w == b"\r\n\r\n")
}

fn parse_head(buf: &[u8]) -> Result<Head, ParseError> {
    let text = std::str::from_utf8(buf).map_err(|_| ParseError::BadHeader)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().ok_or(ParseError::BadStatusLine)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(ParseError::BadStatusLine);
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or(ParseError::BadStatusLine)?;
    let mut content_length: Option<u64> = None;
    let mut close = version == "HTTP/1.0";
    let mut retry_after_s = None;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(ParseError::BadHeader)?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let v: u64 = value.parse().map_err(|_| ParseError::BadContentLength)?;
            if content_length.is_some_and(|old| old != v) {
                return Err(ParseError::BadContentLength);
            }
            content_length = Some(v);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if !value.eq_ignore_ascii_case("identity") {
                return Err(ParseError::Chunked);
            }
        } else if name.eq_ignore_ascii_case("retry-after") {
            // A date form is possible in HTTP; a number is what servers send on 503.
            retry_after_s = value.parse().ok();
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                close = true;
            } else if v.contains("keep-alive") {
                close = false;
            }
        }
    }
    let bodyless = (100..200).contains(&status) || status == 204 || status == 304;
    let content_length = match (bodyless, content_length) {
        (true, _) => 0,
        (false, Some(v)) => v,
        (false, None) => return Err(ParseError::NoContentLength),
    };
    Ok(Head {
        status,
        content_length,
        close,
        retry_after_s,
    })
}

#[cfg(test)]
mod tests {
    //! The parser must count exactly Content-Length bytes however the input is split.
    use super::*;

    fn feed_split(resp: &[u8], split: usize) -> (Vec<Fed>, usize) {
        let mut p = ResponseParser::new();
        let mut out = Vec::new();
        let mut total = 0;
        for chunk in resp.chunks(split) {
            let f = p.feed(chunk).unwrap();
            total += f.consumed;
            out.push(f);
            if f.done {
                break;
            }
        }
        (out, total)
    }

    #[test]
    fn any_split_consumes_exactly_one_response() {
        let body = vec![b'x'; 1000];
        let mut resp = b"HTTP/1.1 200 OK\r\nServer: t\r\nContent-Length: 1000\r\n\r\n".to_vec();
        resp.extend_from_slice(&body);
        let extra = b"HTTP/1.1 200 OK\r\n";
        let mut with_extra = resp.clone();
        with_extra.extend_from_slice(extra);
        for split in [1, 2, 3, 5, 7, 64, 4096] {
            let (feds, total) = feed_split(&with_extra, split);
            assert!(feds.last().unwrap().done, "split {split}");
            assert_eq!(total, resp.len(), "split {split}");
            assert_eq!(feds.iter().filter(|f| f.head.is_some()).count(), 1);
        }
    }

    #[test]
    fn skipped_body_bytes_count_like_fed_ones() {
        let mut p = ResponseParser::new();
        let f = p
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        assert!(f.head.is_some() && !f.done);
        assert_eq!(p.remaining(), 7);
        let f = p.skip_body(4);
        assert_eq!((f.consumed, f.done), (4, false));
        assert_eq!(p.remaining(), 3);
        let f = p.skip_body(3);
        assert_eq!((f.consumed, f.done), (3, true));
        assert_eq!(p.remaining(), 0);
        // The next response on the connection parses from its head again.
        p.reset();
        let f = p.feed(b"HTTP/1.1 304 Not Modified\r\n\r\n").unwrap();
        assert!(f.done);
    }

    #[test]
    #[should_panic(expected = "skipped past the body")]
    fn skipping_past_the_body_is_a_bug() {
        let mut p = ResponseParser::new();
        p.feed(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n")
            .unwrap();
        p.skip_body(3);
    }

    #[test]
    fn short_body_is_not_done() {
        let mut p = ResponseParser::new();
        let f = p
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
            .unwrap();
        assert!(!f.done);
        assert_eq!(p.remaining(), 7);
    }

    #[test]
    fn errors_and_flags() {
        let mut p = ResponseParser::new();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(ParseError::Chunked)
        );
        p.reset();
        assert_eq!(
            p.feed(b"HTTP/1.1 200 OK\r\n\r\n"),
            Err(ParseError::NoContentLength)
        );
        p.reset();
        assert_eq!(p.feed(b"FOO 200\r\n\r\n"), Err(ParseError::BadStatusLine));
        p.reset();
        let f = p
            .feed(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n")
            .unwrap();
        assert!(f.done);
        assert_eq!(f.head.unwrap().status, 304);
        assert!(f.head.unwrap().close);
        p.reset();
        let big = vec![b'a'; HEAD_BYTES_MAX + 10];
        assert_eq!(p.feed(&big), Err(ParseError::HeadTooLarge));
    }
}
