//! Request head parsing: bytes in, a validated [`RequestHead`] or an [`HttpError`] out.
//!
//! This is the front door for untrusted bytes. It tokenizes with `httparse`, then applies the
//! rules that keep the server safe: size limits (414/431), framing rules against request
//! smuggling (Content-Length vs Transfer-Encoding), and nginx-style path normalization so that
//! no decoded path can climb above the root. It must never panic on any input, never read more
//! than `HttpLimits::header_bytes_max` bytes, and never touch a socket or the clock.

use std::time::SystemTime;

use super::limits::{HttpLimits, HEADERS_COUNT_CAP};
use super::HttpError;

/// Request method. Anything not listed is kept verbatim in `Other`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Method {
    #[default]
    Get,
    Head,
    Put,
    Delete,
    Options,
    Post,
    Patch,
    /// Any other syntactically valid method token, case preserved.
    Other(String),
}

impl Method {
    /// Maps a method token (case-sensitive, as RFC 9110 §9.1 says) to a `Method`.
    pub fn from_token(token: &str) -> Self {
        match token {
            "GET" => Self::Get,
            "HEAD" => Self::Head,
            "PUT" => Self::Put,
            "DELETE" => Self::Delete,
            "OPTIONS" => Self::Options,
            "POST" => Self::Post,
            "PATCH" => Self::Patch,
            other => Self::Other(other.to_owned()),
        }
    }

    /// The method token as sent on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Get => "GET",
            Self::Head => "HEAD",
            Self::Put => "PUT",
            Self::Delete => "DELETE",
            Self::Options => "OPTIONS",
            Self::Post => "POST",
            Self::Patch => "PATCH",
            Self::Other(token) => token,
        }
    }
}

/// A parsed and validated request head, with the header fields the server acts on.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RequestHead {
    pub method: Method,
    /// The request target exactly as sent.
    pub target: String,
    /// Percent-decoded, normalized path: starts with `/` (or is `*` for `OPTIONS *`), no empty,
    /// `.` or `..` segments. A trailing `/` is kept.
    pub path: String,
    /// The raw (still percent-encoded) query string after `?`, if there was a `?`.
    pub query: Option<String>,
    /// 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub version_minor: u8,
    /// Host from the `Host` field, or from the authority of an absolute-form target.
    pub host: Option<String>,
    pub content_length: Option<u64>,
    /// `Transfer-Encoding: chunked` was sent (the only transfer coding accepted).
    pub chunked: bool,
    /// Whether the connection may stay open after this exchange.
    pub keep_alive: bool,
    /// Raw `Range` value; `None` when absent or sent more than once.
    pub range: Option<String>,
    pub if_range: Option<String>,
    /// `If-None-Match`; several fields are joined with `", "`.
    pub if_none_match: Option<String>,
    /// `If-Match`; several fields are joined with `", "`.
    pub if_match: Option<String>,
    /// `If-Modified-Since`, `None` when absent or not a valid HTTP-date.
    pub if_modified_since: Option<SystemTime>,
    /// `If-Unmodified-Since`, `None` when absent or not a valid HTTP-date.
    pub if_unmodified_since: Option<SystemTime>,
    pub authorization: Option<String>,
    pub origin: Option<String>,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    pub user_agent: Option<String>,
    pub referer: Option<String>,
    /// `Content-Type` as sent (checked by the route that uses it); the first when repeated.
    pub content_type: Option<String>,
    /// `X-Oasis-Crc32c`: the CRC-32C (8 hex digits) an upload's content must have; the first
    /// when repeated.
    pub crc32c: Option<String>,
    /// `X-Oasis-Pool` was sent: the request comes from another node of the pool (a replica
    /// copy or a propagated delete), so it is not handed on again.
    pub pool_peer: bool,
    /// `X-Oasis-Pool-Version`: a pool copy's version id at its origin (decimal); a value that
    /// is not one is ignored (the copy is then recorded under this node's own id).
    pub pool_version: Option<u64>,
}

impl RequestHead {
    /// Whether a request body follows the head (chunked, or a non-zero Content-Length).
    pub fn has_body(&self) -> bool {
        self.chunked || self.content_length.is_some_and(|bytes| bytes > 0)
    }
}

/// Outcome of [`parse_request`] on the bytes received so far.
#[derive(Debug, Clone, PartialEq, Eq)]
// Returned once per request and matched at once; boxing would cost an allocation per request.
#[allow(clippy::large_enum_variant)]
pub enum Parse {
    /// The head is not complete yet and the limits are not exceeded: read more bytes.
    Partial,
    /// A complete head, and how many bytes of the buffer it used (the body, or the next
    /// pipelined request, starts right after).
    Complete(RequestHead, usize),
}

const ERR_SYNTAX: HttpError = HttpError::bad_request("malformed request head");
const ERR_TOO_MANY_HEADERS: HttpError = HttpError::new(431, "too many header fields");
const ERR_HEAD_TOO_BIG: HttpError = HttpError::new(431, "request head too large");
const ERR_LINE_TOO_LONG: HttpError = HttpError::new(414, "request line too long");
const ERR_VERSION: HttpError = HttpError::new(505, "HTTP version not supported");
const ERR_PATH: HttpError = HttpError::bad_request("invalid request path");

/// Parses a request head from the start of `buf`.
///
/// Returns `Partial` when more bytes are needed, unless `buf` already holds more than the
/// limits allow without a complete head: 414 for an over-long request line, 431 for an
/// over-large head or too many fields. Work is bounded by `limits.header_bytes_max`.
pub fn parse_request(buf: &[u8], limits: &HttpLimits) -> Result<Parse, HttpError> {
    check_request_line_length(buf, limits)?;

    let window = &buf[..buf.len().min(limits.header_bytes_max)];
    let mut slots = [httparse::EMPTY_HEADER; HEADERS_COUNT_CAP];
    let slots_count = limits.headers_count_max.min(HEADERS_COUNT_CAP);
    let mut req = httparse::Request::new(&mut slots[..slots_count]);
    let consumed = match req.parse(window) {
        Ok(httparse::Status::Complete(consumed)) => consumed,
        Ok(httparse::Status::Partial) if buf.len() > limits.header_bytes_max => {
            return Err(ERR_HEAD_TOO_BIG)
        }
        Ok(httparse::Status::Partial) => return Ok(Parse::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(ERR_TOO_MANY_HEADERS),
        Err(httparse::Error::Version) => return Err(classify_version_error(window)),
        Err(_) => return Err(ERR_SYNTAX),
    };
    debug_assert!(consumed <= limits.header_bytes_max);

    let (Some(method), Some(target), Some(version_minor)) = (req.method, req.path, req.version)
    else {
        return Err(ERR_SYNTAX);
    };
    let method = Method::from_token(method);
    let mut head = RequestHead {
        target: target.to_owned(),
        version_minor,
        keep_alive: version_minor == 1,
        ..RequestHead::default()
    };
    let target_host = split_target(&method, target, &mut head)?;
    head.method = method;
    apply_headers(req.headers, &mut head)?;

    if let Some(host) = target_host {
        // RFC 9112 §3.2.2: the authority of an absolute-form target replaces Host.
        head.host = Some(host);
    } else if head.host.is_none() && version_minor == 1 {
        return Err(HttpError::bad_request("HTTP/1.1 request without Host"));
    }
    Ok(Parse::Complete(head, consumed))
}

/// 414 when the request line is longer than allowed, whether or not its end has arrived.
fn check_request_line_length(buf: &[u8], limits: &HttpLimits) -> Result<(), HttpError> {
    // Empty lines before the request line are tolerated (RFC 9112 §2.2); the head limit bounds
    // them.
    let scan = &buf[..buf.len().min(limits.header_bytes_max)];
    let start = scan
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(scan.len());
    let line_scan_end = scan.len().min(start + limits.request_line_bytes_max + 2);
    let line = &scan[start..line_scan_end];
    let line_bytes = match line.iter().position(|&b| b == b'\n') {
        Some(lf) if lf > 0 && line[lf - 1] == b'\r' => lf - 1,
        Some(lf) => lf,
        None => line.len(),
    };
    if line_bytes > limits.request_line_bytes_max {
        return Err(ERR_LINE_TOO_LONG);
    }
    Ok(())
}

/// `HTTP/<digits>.<digits>` other than 1.0/1.1 is a version we do not speak (505); any other
/// garbage in the version position is a syntax error (400), as nginx does.
fn classify_version_error(window: &[u8]) -> HttpError {
    let start = window
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(window.len());
    let rest = &window[start..];
    let line_end = rest
        .iter()
        .position(|&b| b == b'\r' || b == b'\n')
        .unwrap_or(rest.len());
    let line = &rest[..line_end];
    let version = match line.iter().rposition(|&b| b == b' ') {
        Some(space) => &line[space + 1..],
        None => return ERR_SYNTAX,
    };
    let Some(number) = version.strip_prefix(b"HTTP/") else {
        return ERR_SYNTAX;
    };
    let mut parts = number.splitn(2, |&b| b == b'.');
    let major = parts.next().unwrap_or(b"");
    let minor = parts.next().unwrap_or(b"");
    let digits = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    // A version cut short by the end of the buffer ("HTTP/2") is judged on what arrived.
    if digits(major) && (minor.is_empty() || digits(minor)) {
        ERR_VERSION
    } else {
        ERR_SYNTAX
    }
}

/// Fills `path` and `query` from the target; returns the host of an absolute-form target.
fn split_target(
    method: &Method,
    target: &str,
    head: &mut RequestHead,
) -> Result<Option<String>, HttpError> {
    if target == "*" {
        if *method != Method::Options {
            return Err(ERR_PATH);
        }
        head.path = "*".to_owned();
        return Ok(None);
    }
    let (origin_form, host) = match strip_scheme(target) {
        Some(rest) => {
            let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            let authority = &rest[..authority_end];
            // Userinfo in a request target is never legitimate.
            if authority.is_empty() || authority.contains('@') || !valid_host(authority) {
                return Err(HttpError::bad_request(
                    "invalid authority in request target",
                ));
            }
            let path = &rest[authority_end..];
            if !path.starts_with('/') && !path.is_empty() {
                // "http://host?x" means path "/" with query "x".
                let mut with_root = String::with_capacity(path.len() + 1);
                with_root.push('/');
                with_root.push_str(path);
                return finish_split(&with_root, head).map(|()| Some(authority.to_owned()));
            }
            (
                if path.is_empty() { "/" } else { path },
                Some(authority.to_owned()),
            )
        }
        None => (target, None),
    };
    finish_split(origin_form, head)?;
    Ok(host)
}

fn finish_split(origin_form: &str, head: &mut RequestHead) -> Result<(), HttpError> {
    if !origin_form.starts_with('/') {
        return Err(ERR_PATH);
    }
    // A fragment is never meant for the server; drop it like nginx does.
    let without_fragment = origin_form.split('#').next().unwrap_or("");
    let (raw_path, query) = match without_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (without_fragment, None),
    };
    head.path = decode_and_normalize(raw_path.as_bytes())?;
    head.query = query;
    Ok(())
}

/// The path of a request target as it was sent, still percent-encoded: without the scheme and
/// authority of an absolute-form target, the query and the fragment ("/" when an absolute-form
/// target has none). For routes that decode the path themselves, such as signed links, where
/// [`RequestHead::path`] has already been decoded once.
pub fn raw_path(target: &str) -> &str {
    let origin_form = match strip_scheme(target) {
        Some(rest) => {
            let path = &rest[rest.find(['/', '?', '#']).unwrap_or(rest.len())..];
            if !path.starts_with('/') {
                return "/";
            }
            path
        }
        None => target,
    };
    let end = origin_form.find(['?', '#']).unwrap_or(origin_form.len());
    &origin_form[..end]
}

fn strip_scheme(target: &str) -> Option<&str> {
    let (scheme, rest) = target.split_once("://")?;
    if scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https") {
        Some(rest)
    } else {
        None
    }
}

/// Percent-decodes `input` once (RFC 3986 §2.1). `None` if a `%` is not followed by two hex
/// digits. `+` is left alone: it means space only in form bodies, not in paths.
pub fn percent_decode(input: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        let byte = input[i];
        if byte == b'%' {
            let high = hex_value(*input.get(i + 1)?)?;
            let low = hex_value(*input.get(i + 2)?)?;
            out.push(high << 4 | low);
            i += 3;
        } else {
            out.push(byte);
            i += 1;
        }
    }
    Some(out)
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

/// Decodes once, then merges slashes and resolves `.` and `..` like nginx. The result is
/// valid UTF-8 without control bytes, starts with `/`, and never climbs above the root.
fn decode_and_normalize(raw_path: &[u8]) -> Result<String, HttpError> {
    if let Some(path) = already_normal(raw_path) {
        return Ok(path.to_owned());
    }
    let decoded = percent_decode(raw_path)
        .ok_or(HttpError::bad_request("invalid percent-encoding in path"))?;
    if decoded.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return Err(HttpError::bad_request("control byte in path"));
    }
    let decoded = String::from_utf8(decoded)
        .map_err(|_| HttpError::bad_request("path is not valid UTF-8"))?;

    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for segment in decoded.split('/') {
        trailing_slash = false;
        match segment {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                if segments.pop().is_none() {
                    return Err(HttpError::bad_request("path climbs above the root"));
                }
                trailing_slash = true;
            }
            _ => segments.push(segment),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for segment in &segments {
        path.push('/');
        path.push_str(segment);
    }
    if path.is_empty() || trailing_slash {
        path.push('/');
    }
    Ok(path)
}

/// `raw_path` itself when decoding and normalizing would leave it as it is (the common case:
/// printable ASCII without `%`, no empty segment but the last, no `.` or `..` segment), so the
/// per-request path costs one copy instead of a decode, a segment list and a rebuild.
fn already_normal(raw_path: &[u8]) -> Option<&str> {
    let rest = raw_path.strip_prefix(b"/")?;
    if rest
        .iter()
        .any(|&b| !(0x21..=0x7e).contains(&b) || b == b'%')
    {
        return None;
    }
    let mut segments = rest.split(|&b| b == b'/').peekable();
    while let Some(segment) = segments.next() {
        let last = segments.peek().is_none();
        if (segment.is_empty() && !last) || segment == b"." || segment == b".." {
            return None;
        }
    }
    std::str::from_utf8(raw_path).ok()
}

/// Host per RFC 3986 reg-name / IP-literal, loosely: no separators, blanks or controls.
fn valid_host(host: &str) -> bool {
    !host.bytes().any(|b| {
        b <= b' ' || b == 0x7f || matches!(b, b'/' | b'\\' | b'@' | b'?' | b'#' | b'"' | b',')
    }) && !host.contains("..")
}

/// Reads the header fields the server needs into `head`, enforcing the framing rules.
fn apply_headers(
    headers: &[httparse::Header<'_>],
    head: &mut RequestHead,
) -> Result<(), HttpError> {
    let mut transfer_encoding_seen = false;
    let mut transfer_encoding_chunked_only = true;
    let mut transfer_encoding_codings = 0usize;
    let mut range_fields = 0usize;
    let mut connection_close = false;
    let mut connection_keep_alive = false;

    for header in headers {
        let value = field_value(header.value);
        let name = header.name;
        if name.eq_ignore_ascii_case("host") {
            if head.host.is_some() {
                return Err(HttpError::bad_request("more than one Host field"));
            }
            if !valid_host(&value) {
                return Err(HttpError::bad_request("invalid Host"));
            }
            head.host = Some(value);
        } else if name.eq_ignore_ascii_case("content-length") {
            let length = parse_content_length(&value)?;
            if head
                .content_length
                .is_some_and(|previous| previous != length)
            {
                return Err(HttpError::bad_request("conflicting Content-Length fields"));
            }
            head.content_length = Some(length);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            transfer_encoding_seen = true;
            for coding in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                transfer_encoding_codings += 1;
                if !coding.eq_ignore_ascii_case("chunked") {
                    transfer_encoding_chunked_only = false;
                }
            }
        } else if name.eq_ignore_ascii_case("connection") {
            for token in value.split(',').map(str::trim) {
                if token.eq_ignore_ascii_case("close") {
                    connection_close = true;
                } else if token.eq_ignore_ascii_case("keep-alive") {
                    connection_keep_alive = true;
                }
            }
        } else if name.eq_ignore_ascii_case("range") {
            range_fields += 1;
            head.range = Some(value);
        } else if name.eq_ignore_ascii_case("if-range") {
            head.if_range.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("if-none-match") {
            append_list(&mut head.if_none_match, value);
        } else if name.eq_ignore_ascii_case("if-match") {
            append_list(&mut head.if_match, value);
        } else if name.eq_ignore_ascii_case("if-modified-since") {
            if head.if_modified_since.is_none() {
                head.if_modified_since = httpdate::parse_http_date(&value).ok();
            }
        } else if name.eq_ignore_ascii_case("if-unmodified-since") {
            if head.if_unmodified_since.is_none() {
                head.if_unmodified_since = httpdate::parse_http_date(&value).ok();
            }
        } else if name.eq_ignore_ascii_case("authorization") {
            if head.authorization.is_some() {
                return Err(HttpError::bad_request("more than one Authorization field"));
            }
            head.authorization = Some(value);
        } else if name.eq_ignore_ascii_case("origin") {
            head.origin.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("expect") {
            if head.version_minor == 1 && value.eq_ignore_ascii_case("100-continue") {
                head.expect_continue = true;
            }
        } else if name.eq_ignore_ascii_case("user-agent") {
            head.user_agent.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("referer") {
            head.referer.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("content-type") {
            head.content_type.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("x-oasis-crc32c") {
            head.crc32c.get_or_insert(value);
        } else if name.eq_ignore_ascii_case("x-oasis-pool") {
            head.pool_peer = true;
        } else if name.eq_ignore_ascii_case("x-oasis-pool-version") {
            head.pool_version = head.pool_version.or(value.trim().parse().ok());
        }
    }

    // HTTP/1.1 defaults to persistent, HTTP/1.0 to close; "close" wins wherever it appears.
    head.keep_alive = !connection_close && (head.version_minor == 1 || connection_keep_alive);
    if range_fields > 1 {
        // Range is a singleton field; two of them make it invalid, and an invalid Range is
        // ignored (RFC 9110 §14.2).
        head.range = None;
    }
    if transfer_encoding_seen {
        if head.content_length.is_some() {
            return Err(HttpError::bad_request(
                "both Content-Length and Transfer-Encoding",
            ));
        }
        if head.version_minor == 0 {
            return Err(HttpError::bad_request(
                "Transfer-Encoding in an HTTP/1.0 request",
            ));
        }
        if transfer_encoding_codings == 0 {
            return Err(HttpError::bad_request("empty Transfer-Encoding"));
        }
        if !transfer_encoding_chunked_only || transfer_encoding_codings != 1 {
            return Err(HttpError::new(501, "transfer coding other than chunked"));
        }
        head.chunked = true;
    }
    Ok(())
}

fn field_value(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_matches([' ', '\t'])
        .to_owned()
}

fn append_list(slot: &mut Option<String>, value: String) {
    match slot {
        Some(existing) => {
            existing.push_str(", ");
            existing.push_str(&value);
        }
        None => *slot = Some(value),
    }
}

/// `1*DIGIT`, or a list of identical such values (RFC 9110 §8.6); overflow is an error.
fn parse_content_length(value: &str) -> Result<u64, HttpError> {
    let mut length: Option<u64> = None;
    for item in value.split(',') {
        let item = item.trim_matches([' ', '\t']);
        if item.is_empty() || !item.bytes().all(|b| b.is_ascii_digit()) {
            return Err(HttpError::bad_request("invalid Content-Length"));
        }
        let parsed = item
            .bytes()
            .try_fold(0u64, |acc, b| {
                acc.checked_mul(10)?.checked_add(u64::from(b - b'0'))
            })
            .ok_or(HttpError::bad_request("Content-Length overflows"))?;
        if length.is_some_and(|previous| previous != parsed) {
            return Err(HttpError::bad_request("conflicting Content-Length values"));
        }
        length = Some(parsed);
    }
    length.ok_or(HttpError::bad_request("invalid Content-Length"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn limits() -> HttpLimits {
        HttpLimits::default()
    }

    fn complete(raw: &str) -> (RequestHead, usize) {
        match parse_request(raw.as_bytes(), &limits()) {
            Ok(Parse::Complete(head, consumed)) => (head, consumed),
            other => panic!("expected a complete head for {raw:?}, got {other:?}"),
        }
    }

    fn status_of(raw: &[u8]) -> u16 {
        match parse_request(raw, &limits()) {
            Err(error) => error.status,
            other => panic!(
                "expected an error for {:?}, got {other:?}",
                String::from_utf8_lossy(raw)
            ),
        }
    }

    const PLAYER_GET: &str = "GET /videos/movie.mp4?token=abc HTTP/1.1\r\n\
        Host: media.example.com\r\n\
        User-Agent: Mozilla/5.0 (X11; Linux x86_64) Firefox/120.0\r\n\
        Accept: */*\r\n\
        Accept-Language: en-US,en;q=0.5\r\n\
        Range: bytes=0-\r\n\
        Referer: https://player.example.com/watch\r\n\
        Origin: https://player.example.com\r\n\
        Connection: keep-alive\r\n\
        If-None-Match: \"abc-1\"\r\n\
        If-Modified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
        \r\n";

    #[test]
    fn typical_player_get_is_parsed_with_all_fields() {
        let (head, consumed) = complete(PLAYER_GET);
        assert_eq!(consumed, PLAYER_GET.len());
        assert_eq!(head.method, Method::Get);
        assert_eq!(head.target, "/videos/movie.mp4?token=abc");
        assert_eq!(head.path, "/videos/movie.mp4");
        assert_eq!(head.query.as_deref(), Some("token=abc"));
        assert_eq!(head.version_minor, 1);
        assert_eq!(head.host.as_deref(), Some("media.example.com"));
        assert!(head.keep_alive);
        assert_eq!(head.range.as_deref(), Some("bytes=0-"));
        assert_eq!(
            head.referer.as_deref(),
            Some("https://player.example.com/watch")
        );
        assert_eq!(head.origin.as_deref(), Some("https://player.example.com"));
        assert_eq!(head.if_none_match.as_deref(), Some("\"abc-1\""));
        assert_eq!(
            head.if_modified_since,
            Some(UNIX_EPOCH + Duration::from_secs(784111777))
        );
        assert!(head.user_agent.unwrap().starts_with("Mozilla"));
        assert!(!head.chunked && head.content_length.is_none() && !head.expect_continue);
    }

    #[test]
    fn every_prefix_of_a_valid_head_is_partial() {
        for end in 0..PLAYER_GET.len() {
            assert_eq!(
                parse_request(&PLAYER_GET.as_bytes()[..end], &limits()),
                Ok(Parse::Partial),
                "prefix of {end} bytes"
            );
        }
    }

    #[test]
    fn consumed_stops_at_the_end_of_the_head() {
        let raw = "PUT /up HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhelloGET";
        let (head, consumed) = complete(raw);
        assert_eq!(&raw[consumed..], "helloGET");
        assert_eq!(head.content_length, Some(5));
        assert!(head.has_body());
    }

    #[test]
    fn methods_are_mapped_and_unknown_ones_kept() {
        for (token, method) in [
            ("GET", Method::Get),
            ("HEAD", Method::Head),
            ("PUT", Method::Put),
            ("DELETE", Method::Delete),
            ("POST", Method::Post),
            ("PATCH", Method::Patch),
            ("PROPFIND", Method::Other("PROPFIND".into())),
            ("get", Method::Other("get".into())),
        ] {
            let (head, _) = complete(&format!("{token} / HTTP/1.1\r\nHost: h\r\n\r\n"));
            assert_eq!(head.method, method);
            assert_eq!(head.method.as_str(), token);
        }
    }

    #[test]
    fn keep_alive_defaults_and_connection_tokens() {
        let cases = [
            ("HTTP/1.1", "", true),
            ("HTTP/1.1", "Connection: close\r\n", false),
            ("HTTP/1.1", "Connection: Keep-Alive, CLOSE\r\n", false),
            (
                "HTTP/1.1",
                "Connection: close\r\nConnection: keep-alive\r\n",
                false,
            ),
            ("HTTP/1.0", "", false),
            ("HTTP/1.0", "Connection: keep-alive\r\n", true),
            ("HTTP/1.0", "Connection: Upgrade, Keep-Alive\r\n", true),
            (
                "HTTP/1.0",
                "Connection: close\r\nConnection: keep-alive\r\n",
                false,
            ),
        ];
        for (version, extra, keep_alive) in cases {
            let (head, _) = complete(&format!("GET / {version}\r\nHost: h\r\n{extra}\r\n"));
            assert_eq!(head.keep_alive, keep_alive, "{version} {extra:?}");
        }
    }

    #[test]
    fn http_1_0_needs_no_host_but_1_1_does() {
        let (head, _) = complete("GET / HTTP/1.0\r\n\r\n");
        assert_eq!(head.version_minor, 0);
        assert_eq!(head.host, None);
        assert_eq!(status_of(b"GET / HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(
            status_of(b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
            400
        );
        assert_eq!(status_of(b"GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"), 400);
        let (head, _) = complete("GET / HTTP/1.1\r\nHost:\r\n\r\n");
        assert_eq!(head.host.as_deref(), Some(""));
    }

    #[test]
    fn unsupported_versions_get_505_and_garbage_gets_400() {
        assert_eq!(status_of(b"GET / HTTP/2.0\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(status_of(b"GET / HTTP/1.2\r\nHost: h\r\n\r\n"), 505);
        assert_eq!(status_of(b"GET / HTTP/0.9\r\n\r\n"), 505);
        assert_eq!(status_of(b"GET / HTTP/3\r\n\r\n"), 505);
        assert_eq!(status_of(b"GET / HTTX/1.1\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET / HTTP/1.x\r\n\r\n"), 400);
    }

    #[test]
    fn malformed_syntax_is_400() {
        for raw in [
            &b"GET  / HTTP/1.1\r\nHost: h\r\n\r\n"[..],
            b"GET / HTTP/1.1\r\nHost : h\r\n\r\n",
            b"GET / HTTP/1.1\r\n folded: x\r\n\r\n",
            b"G\x01T / HTTP/1.1\r\nHost: h\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: h\x00\r\n\r\n",
            b"GET / HTTP/1.1\r\nBad\x7fName: v\r\n\r\n",
        ] {
            assert_eq!(status_of(raw), 400, "{:?}", String::from_utf8_lossy(raw));
        }
    }

    #[test]
    fn leading_empty_lines_are_tolerated() {
        let raw = "\r\n\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n";
        let (head, consumed) = complete(raw);
        assert_eq!(consumed, raw.len());
        assert_eq!(head.path, "/");
    }

    #[test]
    fn over_long_request_line_is_414_even_before_it_ends() {
        let limits = limits();
        let long_target = "a".repeat(limits.request_line_bytes_max);
        let complete_line = format!("GET /{long_target} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(status_of(complete_line.as_bytes()), 414);
        let unfinished = format!("GET /{long_target}");
        assert_eq!(status_of(unfinished.as_bytes()), 414);
        // Exactly at the limit is fine.
        let target = "a".repeat(limits.request_line_bytes_max - "GET / HTTP/1.1".len());
        let at_limit = format!("GET /{target} HTTP/1.1\r\nHost: h\r\n\r\n");
        assert!(matches!(
            parse_request(at_limit.as_bytes(), &limits),
            Ok(Parse::Complete(..))
        ));
    }

    #[test]
    fn over_large_head_is_431_complete_or_not() {
        let limits = limits();
        let filler = format!("X-Filler: {}\r\n", "v".repeat(8000));
        let head = format!("GET / HTTP/1.1\r\nHost: h\r\n{filler}{filler}{filler}\r\n");
        assert_eq!(status_of(head.as_bytes()), 431);
        let unfinished = &head.as_bytes()[..limits.header_bytes_max + 1];
        assert_eq!(status_of(unfinished), 431);
        let within = &head.as_bytes()[..limits.header_bytes_max];
        assert_eq!(parse_request(within, &limits), Ok(Parse::Partial));
    }

    #[test]
    fn too_many_headers_is_431() {
        let mut raw = String::from("GET / HTTP/1.1\r\nHost: h\r\n");
        for i in 0..limits().headers_count_max {
            raw.push_str(&format!("X-{i}: v\r\n"));
        }
        raw.push_str("\r\n");
        assert_eq!(status_of(raw.as_bytes()), 431);
        let small = HttpLimits {
            headers_count_max: 2,
            ..limits()
        };
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\n\r\n";
        assert!(matches!(
            parse_request(raw, &small),
            Ok(Parse::Complete(..))
        ));
        let raw = b"GET / HTTP/1.1\r\nHost: h\r\nA: 1\r\nB: 2\r\n\r\n";
        assert_eq!(parse_request(raw, &small).unwrap_err().status, 431);
    }

    #[test]
    fn framing_rules_against_smuggling() {
        let h = "GET / HTTP/1.1\r\nHost: h\r\n";
        let cases: &[(&str, u16)] = &[
            ("Content-Length: 5\r\nTransfer-Encoding: chunked\r\n", 400),
            ("Transfer-Encoding: chunked\r\nContent-Length: 5\r\n", 400),
            ("Content-Length: 5\r\nContent-Length: 6\r\n", 400),
            ("Content-Length: 5, 6\r\n", 400),
            ("Content-Length: -1\r\n", 400),
            ("Content-Length: +5\r\n", 400),
            ("Content-Length: 0x10\r\n", 400),
            ("Content-Length: \r\n", 400),
            ("Content-Length: 99999999999999999999999\r\n", 400),
            ("Transfer-Encoding: gzip\r\n", 501),
            ("Transfer-Encoding: gzip, chunked\r\n", 501),
            ("Transfer-Encoding: chunked, chunked\r\n", 501),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
                501,
            ),
            ("Transfer-Encoding: \r\n", 400),
        ];
        for (extra, status) in cases {
            assert_eq!(
                status_of(format!("{h}{extra}\r\n").as_bytes()),
                *status,
                "{extra:?}"
            );
        }
        assert_eq!(
            status_of(b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            400
        );

        let (head, _) = complete(&format!(
            "{h}Content-Length: 7\r\nContent-Length: 7, 7\r\n\r\n"
        ));
        assert_eq!(head.content_length, Some(7));
        let (head, _) = complete(&format!("{h}Transfer-Encoding: Chunked\r\n\r\n"));
        assert!(head.chunked && head.has_body());
        let (head, _) = complete(&format!("{h}Content-Length: 0\r\n\r\n"));
        assert!(!head.has_body());
    }

    #[test]
    fn conditional_and_misc_fields() {
        let raw = "GET / HTTP/1.1\r\nHost: h\r\n\
            If-Match: \"a\"\r\nIf-Match: \"b\"\r\n\
            If-Unmodified-Since: Sun, 06 Nov 1994 08:49:37 GMT\r\n\
            If-Modified-Since: yesterday\r\n\
            If-Range: \"a\"\r\n\
            Authorization: Bearer t\r\n\
            Expect: 100-Continue\r\n\r\n";
        let (head, _) = complete(raw);
        assert_eq!(head.if_match.as_deref(), Some("\"a\", \"b\""));
        assert_eq!(
            head.if_unmodified_since,
            Some(UNIX_EPOCH + Duration::from_secs(784111777))
        );
        assert_eq!(head.if_modified_since, None, "unparsable dates are ignored");
        assert_eq!(head.if_range.as_deref(), Some("\"a\""));
        assert_eq!(head.authorization.as_deref(), Some("Bearer t"));
        assert!(head.expect_continue);

        let (head, _) = complete("PUT / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n");
        assert!(
            !head.expect_continue,
            "HTTP/1.0 clients cannot expect 100-continue"
        );
        let (head, _) =
            complete("GET / HTTP/1.1\r\nHost: h\r\nRange: bytes=0-1\r\nRange: bytes=2-3\r\n\r\n");
        assert_eq!(
            head.range, None,
            "a duplicated Range is invalid and ignored"
        );
        assert_eq!(
            status_of(b"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: a\r\nAuthorization: b\r\n\r\n"),
            400
        );
    }

    #[test]
    fn paths_are_decoded_once_and_normalized_like_nginx() {
        let cases = [
            ("/", "/"),
            ("/a/b.mp4", "/a/b.mp4"),
            ("//a///b", "/a/b"),
            ("/a/./b", "/a/b"),
            ("/a/b/..", "/a/"),
            ("/a/b/../c", "/a/c"),
            ("/a/.", "/a/"),
            ("/a/b/", "/a/b/"),
            ("/..a/b..", "/..a/b.."),
            ("/my%20movie.mp4", "/my movie.mp4"),
            ("/a%2Fb", "/a/b"),
            ("/a/%2e%2E/b", "/b"),
            ("/%252e%252e/x", "/%2e%2e/x"),
            ("/caf%C3%A9", "/café"),
            ("/a+b", "/a+b"),
            ("/x#frag", "/x"),
        ];
        for (target, path) in cases {
            let (head, _) = complete(&format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n"));
            assert_eq!(head.path, path, "target {target}");
            assert_eq!(head.target, target);
        }
        let (head, _) = complete("GET /q?a=%20&b=/../ HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.path, "/q");
        assert_eq!(head.query.as_deref(), Some("a=%20&b=/../"));
        let (head, _) = complete("GET /q? HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!(head.query.as_deref(), Some(""));
    }

    #[test]
    fn the_raw_path_is_the_target_as_sent_without_query_or_fragment() {
        let cases = [
            ("/s/sig/1/0/my%20clip.ts", "/s/sig/1/0/my%20clip.ts"),
            ("/s/a%2Fb?x=%2F#f", "/s/a%2Fb"),
            ("/a/../b#x?y", "/a/../b"),
            ("http://h:8080/s/x?q", "/s/x"),
            ("HTTPS://h/p%2e%2e", "/p%2e%2e"),
            ("http://h?x", "/"),
            ("http://h", "/"),
        ];
        for (target, raw) in cases {
            assert_eq!(raw_path(target), raw, "target {target}");
            // Parsing takes the same path apart: decoding the raw one gives the decoded path.
            let (head, _) = complete(&format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n"));
            assert_eq!(
                decode_and_normalize(raw.as_bytes()).unwrap(),
                head.path,
                "target {target}"
            );
        }
    }

    #[test]
    fn bad_paths_are_400() {
        for target in [
            "/..",
            "/a/../..",
            "/%2e%2e/etc/passwd",
            "/a/%2E%2E/%2e%2e/x",
            "/a%00b",
            "/a%0d%0ab",
            "/a%7f",
            "/%zz",
            "/%4",
            "/%",
            "/%ff",
            "relative",
            "*",
        ] {
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            assert_eq!(status_of(raw.as_bytes()), 400, "target {target}");
        }
    }

    #[test]
    fn options_asterisk_and_absolute_form() {
        let (head, _) = complete("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n");
        assert_eq!((head.method, head.path.as_str()), (Method::Options, "*"));

        let (head, _) =
            complete("GET http://Media.Example:8080/a//b?x=1 HTTP/1.1\r\nHost: other\r\n\r\n");
        assert_eq!(head.host.as_deref(), Some("Media.Example:8080"));
        assert_eq!(head.path, "/a/b");
        assert_eq!(head.query.as_deref(), Some("x=1"));
        let (head, _) = complete("GET http://h HTTP/1.1\r\n\r\n");
        assert_eq!((head.host.as_deref(), head.path.as_str()), (Some("h"), "/"));
        let (head, _) = complete("GET https://h?q HTTP/1.1\r\n\r\n");
        assert_eq!(
            (head.path.as_str(), head.query.as_deref()),
            ("/", Some("q"))
        );
        assert_eq!(status_of(b"GET http://user@h/ HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET http:///x HTTP/1.1\r\n\r\n"), 400);
        assert_eq!(status_of(b"GET ftp://h/x HTTP/1.1\r\nHost: h\r\n\r\n"), 400);
    }

    #[test]
    fn percent_decode_examples() {
        assert_eq!(percent_decode(b"a%20b%2F%2f"), Some(b"a b//".to_vec()));
        assert_eq!(percent_decode(b"%00"), Some(vec![0]));
        assert_eq!(percent_decode(b"100%"), None);
        assert_eq!(percent_decode(b"%g0"), None);
        assert_eq!(percent_decode(b""), Some(vec![]));
    }

    fn percent_encode_all(bytes: &[u8]) -> Vec<u8> {
        bytes
            .iter()
            .flat_map(|b| format!("%{b:02X}").into_bytes())
            .collect()
    }

    /// A request built from parts, to compare the parse against.
    #[derive(Debug, Clone)]
    struct Model {
        method: &'static str,
        segments: Vec<String>,
        query: Option<String>,
        version_minor: u8,
        content_length: Option<u64>,
        close: bool,
        range: Option<String>,
        extra_headers: Vec<(String, String)>,
    }

    fn model() -> impl Strategy<Value = Model> {
        (
            prop::sample::select(vec!["GET", "HEAD", "PUT", "DELETE", "POST", "PROPFIND"]),
            prop::collection::vec("[a-zA-Z0-9_.~-]{1,12}", 0..6),
            prop::option::of("[a-z0-9=&%]{0,20}"),
            0u8..2,
            prop::option::of(any::<u64>()),
            any::<bool>(),
            prop::option::of("bytes=[0-9]{1,5}-[0-9]{0,5}"),
            prop::collection::vec(("X-[A-Za-z]{1,10}", "[ -~]{0,30}"), 0..8),
        )
            .prop_map(
                |(method, segments, query, version_minor, content_length, close, range, extra)| {
                    Model {
                        method,
                        // "." and ".." are resolved, so keep them out of the model.
                        segments: segments
                            .into_iter()
                            .filter(|s| s != "." && s != "..")
                            .collect(),
                        query,
                        version_minor,
                        content_length,
                        close,
                        range,
                        extra_headers: extra,
                    }
                },
            )
    }

    fn render(model: &Model) -> String {
        let mut raw = format!("{} /", model.method);
        raw.push_str(&model.segments.join("/"));
        if let Some(query) = &model.query {
            raw.push('?');
            raw.push_str(query);
        }
        raw.push_str(&format!(
            " HTTP/1.{}\r\nHost: example\r\n",
            model.version_minor
        ));
        if let Some(length) = model.content_length {
            raw.push_str(&format!("Content-Length: {length}\r\n"));
        }
        if model.close {
            raw.push_str("Connection: close\r\n");
        }
        if let Some(range) = &model.range {
            raw.push_str(&format!("Range: {range}\r\n"));
        }
        for (name, value) in &model.extra_headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        raw
    }

    #[test]
    fn already_normal_paths_skip_the_decoder() {
        for (raw, normal) in [
            ("/", true),
            ("/media/a.mp4", true),
            ("/media/dir/", true),
            ("/media//a", false),
            ("/media/./a", false),
            ("/media/../a", false),
            ("/media/.", false),
            ("/media/%41", false),
            ("/media/a b", false),
            ("/media/\u{e9}", false),
            ("/.hidden/..x/x..", true),
        ] {
            assert_eq!(already_normal(raw.as_bytes()).is_some(), normal, "{raw:?}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn already_normal_agrees_with_the_decoder(raw in "/[/.a%2Fé ]{0,12}") {
            if let Some(fast) = already_normal(raw.as_bytes()) {
                prop_assert_eq!(fast, raw.as_str());
                let mut slow = raw.clone();
                slow.insert(0, '/'); // defeats the fast path; "//x" normalizes like "/x"
                let decoded = decode_and_normalize(slow.as_bytes()).ok();
                prop_assert_eq!(decoded.as_deref(), Some(fast));
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Fuzz target: arbitrary bytes never panic, and an answer is always consistent.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
            match parse_request(&bytes, &limits()) {
                Ok(Parse::Complete(head, consumed)) => {
                    prop_assert!(consumed <= bytes.len());
                    prop_assert!(head.path.starts_with('/') || head.path == "*");
                }
                Ok(Parse::Partial) => {}
                Err(error) => prop_assert!(matches!(error.status, 400 | 414 | 431 | 501 | 505)),
            }
        }

        /// Fuzz target: a valid request with bytes flipped or spliced in never panics.
        #[test]
        fn mutated_requests_never_panic(
            model in model(),
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        ) {
            let mut bytes = render(&model).into_bytes();
            for (index, byte) in edits {
                let at = index.index(bytes.len());
                bytes[at] = byte;
            }
            let _ = parse_request(&bytes, &limits());
        }

        /// Round trip: rendering a model and parsing it gives the model back.
        #[test]
        fn rendered_requests_parse_back(model in model()) {
            let raw = render(&model);
            let (head, consumed) = match parse_request(raw.as_bytes(), &limits()) {
                Ok(Parse::Complete(head, consumed)) => (head, consumed),
                other => return Err(TestCaseError::fail(format!("{other:?} for {raw:?}"))),
            };
            prop_assert_eq!(consumed, raw.len());
            prop_assert_eq!(head.method.as_str(), model.method);
            let expected_path = format!("/{}", model.segments.join("/"));
            prop_assert_eq!(&head.path, &expected_path);
            prop_assert_eq!(head.query, model.query);
            prop_assert_eq!(head.version_minor, model.version_minor);
            prop_assert_eq!(head.content_length, model.content_length);
            prop_assert_eq!(head.keep_alive, model.version_minor == 1 && !model.close);
            prop_assert_eq!(head.range, model.range);
            prop_assert_eq!(head.host.as_deref(), Some("example"));
        }

        /// Round trip: the request can arrive in any two pieces; the first is Partial.
        #[test]
        fn split_delivery_is_partial_then_complete(model in model(), cut in any::<prop::sample::Index>()) {
            let raw = render(&model);
            let cut = cut.index(raw.len());
            prop_assert_eq!(parse_request(&raw.as_bytes()[..cut], &limits()), Ok(Parse::Partial));
            prop_assert!(matches!(parse_request(raw.as_bytes(), &limits()), Ok(Parse::Complete(..))));
        }

        /// Round trip: percent-encoding any bytes and decoding gives them back.
        #[test]
        fn percent_decode_inverts_encoding(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            prop_assert_eq!(percent_decode(&percent_encode_all(&bytes)), Some(bytes));
        }

        /// Normalized paths never contain empty, "." or ".." segments, whatever was encoded.
        #[test]
        fn normalized_paths_are_clean(
            segments in prop::collection::vec(prop::sample::select(vec!["a", ".", "..", "", "%2e%2e", "%2E", "b%2fc"]), 0..10)
        ) {
            let target = format!("/{}", segments.join("/"));
            let raw = format!("GET {target} HTTP/1.1\r\nHost: h\r\n\r\n");
            match parse_request(raw.as_bytes(), &limits()) {
                Ok(Parse::Complete(head, _)) => {
                    prop_assert!(head.path.starts_with('/'));
                    let inner = head.path.trim_start_matches('/').trim_end_matches('/');
                    if !inner.is_empty() {
                        for segment in inner.split('/') {
                            prop_assert!(!matches!(segment, "" | "." | ".."), "{}", head.path);
                        }
                    }
                }
                Err(error) => prop_assert_eq!(error.status, 400),
                Ok(Parse::Partial) => prop_assert!(false, "complete request reported partial"),
            }
        }
    }
}
