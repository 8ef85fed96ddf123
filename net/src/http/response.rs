//! Response heads and small complete responses, serialized into caller-owned buffers.
//!
//! The engine owns its buffers (they cross into the kernel), so everything here appends to a
//! `&mut Vec<u8>` the caller provides and allocates nothing per header. Field values are the
//! caller's; passing a value with CR or LF is a bug (header injection) and panics. This module
//! must never decide *what* to answer: that is the session's job.

use std::time::{SystemTime, UNIX_EPOCH};

use super::range::ByteRange;

/// The reason phrase for every status Oasis sends; `None` for others.
pub fn reason_phrase(status: u16) -> Option<&'static str> {
    Some(match status {
        100 => "Continue",
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        206 => "Partial Content",
        301 => "Moved Permanently",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        412 => "Precondition Failed",
        413 => "Content Too Large",
        414 => "URI Too Long",
        416 => "Range Not Satisfiable",
        417 => "Expectation Failed",
        422 => "Unprocessable Content",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        507 => "Insufficient Storage",
        _ => return None,
    })
}

/// Formats `time` as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
pub fn http_date(time: SystemTime) -> String {
    ImfDate::new(time).as_str().to_owned()
}

/// An IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`, RFC 9110 §5.6.7) formatted on the stack:
/// what `Date` and `Last-Modified` carry, without an allocation or the `fmt` machinery (both
/// fields are written for every response). Same text and same panics as `httpdate`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImfDate {
    bytes: [u8; IMF_DATE_BYTES],
}

const IMF_DATE_BYTES: usize = 29;

impl ImfDate {
    /// Panics before 1970 or from year 10000 on (an IMF-fixdate has four year digits).
    pub fn new(time: SystemTime) -> Self {
        let secs = time
            .duration_since(UNIX_EPOCH)
            .expect("all times should be after the epoch")
            .as_secs();
        assert!(secs < 253_402_300_800, "date must be before year 9999");
        const WEEKDAYS: [&[u8; 3]; 7] = [b"Thu", b"Fri", b"Sat", b"Sun", b"Mon", b"Tue", b"Wed"];
        const MONTHS: [&[u8; 3]; 12] = [
            b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
            b"Dec",
        ];
        let days = secs / 86_400;
        let secs_of_day = secs % 86_400;
        let (year, month, day) = civil_from_days(days as i64);
        let mut bytes = *b"Thu, 01 Jan 1970 00:00:00 GMT";
        bytes[..3].copy_from_slice(WEEKDAYS[(days % 7) as usize]);
        put_digits(&mut bytes[5..7], u64::from(day));
        bytes[8..11].copy_from_slice(MONTHS[(month - 1) as usize]);
        put_digits(&mut bytes[12..16], year as u64);
        put_digits(&mut bytes[17..19], secs_of_day / 3600);
        put_digits(&mut bytes[20..22], secs_of_day % 3600 / 60);
        put_digits(&mut bytes[23..25], secs_of_day % 60);
        ImfDate { bytes }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes).expect("an IMF-fixdate is ASCII")
    }
}

/// Writes `value` as exactly `out.len()` decimal digits (zero-padded; higher digits dropped).
fn put_digits(out: &mut [u8], mut value: u64) {
    for digit in out.iter_mut().rev() {
        *digit = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

/// Days since 1970-01-01 to (year, month 1..=12, day 1..=31), proleptic Gregorian (Howard
/// Hinnant's `civil_from_days`).
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Methods allowed by CORS preflight answers.
pub const CORS_ALLOW_METHODS: &str = "GET, HEAD, PUT, DELETE, OPTIONS";
/// Request headers allowed by CORS preflight answers (`*` would not cover Authorization).
pub const CORS_ALLOW_HEADERS: &str = "Range, Authorization, Content-Type, If-Match, \
    If-None-Match, If-Modified-Since, If-Unmodified-Since, If-Range";
/// Response headers a cross-origin player may read.
pub const CORS_EXPOSE_HEADERS: &str = "Content-Length, Content-Range, Accept-Ranges, ETag";
/// What [`ResponseHead::cors`] appends (a literal, because `concat!` takes no constants).
const CORS_LINES: &str = "Access-Control-Allow-Origin: *\r\n\
    Access-Control-Expose-Headers: Content-Length, Content-Range, Accept-Ranges, ETag\r\n";

/// Builds a response head into a caller-owned buffer, one header per call.
///
/// ```
/// # use oasis_net::http::{ResponseHead, ByteRange};
/// let mut out = Vec::new();
/// let mut head = ResponseHead::new(&mut out, 206, "Sun, 06 Nov 1994 08:49:37 GMT");
/// head.content_type("video/mp4").content_range(ByteRange::new(0, 99), 1000).content_length(100);
/// let head_bytes = head.finish();
/// assert_eq!(head_bytes, out.len());
/// assert!(out.starts_with(b"HTTP/1.1 206 Partial Content\r\n"));
/// ```
pub struct ResponseHead<'a> {
    out: &'a mut Vec<u8>,
    start: usize,
}

impl<'a> ResponseHead<'a> {
    /// Appends the status line, `Server: oasis` and `Date: {date}` (a preformatted
    /// [`http_date`]). `status` must be a three-digit code.
    pub fn new(out: &'a mut Vec<u8>, status: u16, date: &str) -> Self {
        assert!(
            (100..=599).contains(&status),
            "status {status} is not an HTTP status"
        );
        let start = out.len();
        out.extend_from_slice(b"HTTP/1.1 ");
        push_u64(out, u64::from(status));
        out.push(b' ');
        out.extend_from_slice(reason_phrase(status).unwrap_or("").as_bytes());
        out.extend_from_slice(b"\r\nServer: oasis\r\n");
        let mut head = Self { out, start };
        head.field("Date", date);
        head
    }

    /// Appends `name: value`. Panics if either would break the framing (CR, LF, or a
    /// non-token name): values come from the server, never verbatim from a client.
    pub fn header(&mut self, name: &str, value: &str) -> &mut Self {
        assert!(
            !name.is_empty() && name.bytes().all(is_token_byte),
            "invalid header name {name:?}"
        );
        self.field(name, value)
    }

    /// `header` for the names this module spells itself: only the value is checked.
    fn field(&mut self, name: &str, value: &str) -> &mut Self {
        debug_assert!(!name.is_empty() && name.bytes().all(is_token_byte));
        assert!(
            !value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0),
            "header value for {name} contains CR, LF or NUL"
        );
        let out = &mut *self.out;
        out.reserve(name.len() + value.len() + 4);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
        self
    }

    /// Appends whole lines this module spells itself (each ends with CRLF).
    fn lines(&mut self, lines: &'static str) -> &mut Self {
        debug_assert!(lines.ends_with("\r\n"));
        self.out.extend_from_slice(lines.as_bytes());
        self
    }

    fn header_u64(&mut self, name: &str, value: u64) -> &mut Self {
        self.out.extend_from_slice(name.as_bytes());
        self.out.extend_from_slice(b": ");
        push_u64(self.out, value);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    pub fn content_type(&mut self, content_type: &str) -> &mut Self {
        self.field("Content-Type", content_type)
    }

    pub fn content_length(&mut self, bytes: u64) -> &mut Self {
        self.header_u64("Content-Length", bytes)
    }

    /// `Content-Range: bytes start-end/total`.
    pub fn content_range(&mut self, range: ByteRange, total_bytes: u64) -> &mut Self {
        debug_assert!(range.end_inclusive < total_bytes);
        self.out.extend_from_slice(b"Content-Range: ");
        push_content_range_value(self.out, range, total_bytes);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `Content-Range: bytes */total`, for 416 answers.
    pub fn content_range_unsatisfiable(&mut self, total_bytes: u64) -> &mut Self {
        self.out.extend_from_slice(b"Content-Range: bytes */");
        push_u64(self.out, total_bytes);
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `Last-Modified` as an IMF-fixdate, formatted without allocating.
    pub fn last_modified(&mut self, time: SystemTime) -> &mut Self {
        self.out.extend_from_slice(b"Last-Modified: ");
        self.out
            .extend_from_slice(ImfDate::new(time).as_str().as_bytes());
        self.out.extend_from_slice(b"\r\n");
        self
    }

    /// `ETag` with the quoted tag from [`super::etag::strong_etag`].
    pub fn etag(&mut self, etag: &str) -> &mut Self {
        self.field("ETag", etag)
    }

    pub fn accept_ranges(&mut self) -> &mut Self {
        self.lines("Accept-Ranges: bytes\r\n")
    }

    pub fn connection(&mut self, keep_alive: bool) -> &mut Self {
        self.lines(if keep_alive {
            "Connection: keep-alive\r\n"
        } else {
            "Connection: close\r\n"
        })
    }

    pub fn retry_after(&mut self, secs: u64) -> &mut Self {
        self.header_u64("Retry-After", secs)
    }

    pub fn cache_control(&mut self, value: &str) -> &mut Self {
        self.field("Cache-Control", value)
    }

    /// CORS for players on another origin: any origin may read, and may see the range and
    /// validator headers.
    pub fn cors(&mut self) -> &mut Self {
        self.lines(CORS_LINES)
    }

    /// Ends the head with the empty line; returns the head's length in bytes.
    pub fn finish(self) -> usize {
        self.out.extend_from_slice(b"\r\n");
        self.out.len() - self.start
    }
}

fn is_token_byte(byte: u8) -> bool {
    TOKEN_BYTES[usize::from(byte)]
}

/// `tchar` of RFC 9110 §5.6.2, as a table.
const TOKEN_BYTES: [bool; 256] = {
    let mut table = [false; 256];
    let mut byte = 0;
    while byte < 256 {
        let b = byte as u8;
        table[byte] = b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'!' | b'#'
                    | b'$'
                    | b'%'
                    | b'&'
                    | b'\''
                    | b'*'
                    | b'+'
                    | b'-'
                    | b'.'
                    | b'^'
                    | b'_'
                    | b'`'
                    | b'|'
                    | b'~'
            );
        byte += 1;
    }
    table
};

/// `bytes start-end/total`, shared with the multipart framing.
pub(crate) fn push_content_range_value(out: &mut Vec<u8>, range: ByteRange, total_bytes: u64) {
    out.extend_from_slice(b"bytes ");
    push_u64(out, range.start);
    out.push(b'-');
    push_u64(out, range.end_inclusive);
    out.push(b'/');
    push_u64(out, total_bytes);
}

/// Appends the decimal digits of `value`.
pub(crate) fn push_u64(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

/// Appends a complete error response with a small HTML body in nginx's style; returns the
/// length of the head, so a HEAD request can be answered with `out[..head_bytes]`.
/// Statuses that forbid a body (1xx, 204, 304) get none. For an error page that needs more
/// fields (`Allow` on 405, `Content-Range` on 416, `Retry-After` on 503, CORS), build the head
/// with [`ResponseHead`], sized by [`error_body_bytes`], and append [`push_error_body`].
pub fn error_response(status: u16, keep_alive: bool, date: &str, out: &mut Vec<u8>) -> usize {
    let body_bytes = error_body_bytes(status);
    let mut head = ResponseHead::new(out, status, date);
    if body_bytes > 0 {
        head.content_type("text/html")
            .content_length(body_bytes as u64);
    }
    head.connection(keep_alive);
    let head_bytes = head.finish();
    let body_start = out.len();
    push_error_body(status, out);
    debug_assert_eq!(out.len() - body_start, body_bytes);
    head_bytes
}

const ERROR_BODY_PARTS: [&str; 3] = [
    "<html>\r\n<head><title>",
    "</title></head>\r\n<body>\r\n<center><h1>",
    "</h1></center>\r\n<hr><center>oasis</center>\r\n</body>\r\n</html>\r\n",
];

fn forbids_body(status: u16) -> bool {
    status < 200 || status == 204 || status == 304
}

/// Length of the HTML error page [`push_error_body`] writes for `status` (0 when the status
/// forbids a body).
pub fn error_body_bytes(status: u16) -> usize {
    if forbids_body(status) {
        return 0;
    }
    let reason = reason_phrase(status).unwrap_or("");
    // Each title is "<3 digits> <reason>", written twice.
    ERROR_BODY_PARTS
        .iter()
        .map(|part| part.len())
        .sum::<usize>()
        + 2 * (3 + 1 + reason.len())
}

/// Appends the HTML error page for `status`, nginx style (nothing when the status forbids a
/// body).
pub fn push_error_body(status: u16, out: &mut Vec<u8>) {
    if forbids_body(status) {
        return;
    }
    let reason = reason_phrase(status).unwrap_or("");
    for (index, part) in ERROR_BODY_PARTS.iter().enumerate() {
        out.extend_from_slice(part.as_bytes());
        if index < 2 {
            push_u64(out, u64::from(status));
            out.push(b' ');
            out.extend_from_slice(reason.as_bytes());
        }
    }
}

/// Appends a 204 answer to a CORS preflight (`OPTIONS` with `Access-Control-Request-Method`)
/// allowing the methods and request headers a browser player uses; browsers may cache it for
/// `max_age_secs`. Returns the response length.
pub fn preflight_response(
    keep_alive: bool,
    max_age_secs: u64,
    date: &str,
    out: &mut Vec<u8>,
) -> usize {
    let mut head = ResponseHead::new(out, 204, date);
    head.header("Access-Control-Allow-Origin", "*")
        .header("Access-Control-Allow-Methods", CORS_ALLOW_METHODS)
        .header("Access-Control-Allow-Headers", CORS_ALLOW_HEADERS)
        .header_u64("Access-Control-Max-Age", max_age_secs)
        .connection(keep_alive);
    head.finish()
}

/// Appends `HTTP/1.1 100 Continue` (for `Expect: 100-continue`); returns its length.
pub fn continue_response(out: &mut Vec<u8>) -> usize {
    const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";
    out.extend_from_slice(CONTINUE);
    CONTINUE.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    const DATE: &str = "Sun, 06 Nov 1994 08:49:37 GMT";

    /// Parses a response with httparse, as an independent reader would.
    fn parse(bytes: &[u8]) -> (u16, String, Vec<(String, String)>, usize) {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut headers);
        let head_bytes = match response.parse(bytes).expect("valid response") {
            httparse::Status::Complete(n) => n,
            httparse::Status::Partial => panic!("incomplete response head"),
        };
        let fields = response
            .headers
            .iter()
            .map(|h| {
                (
                    h.name.to_owned(),
                    String::from_utf8(h.value.to_vec()).unwrap(),
                )
            })
            .collect();
        (
            response.code.unwrap(),
            response.reason.unwrap().to_owned(),
            fields,
            head_bytes,
        )
    }

    fn field<'a>(fields: &'a [(String, String)], name: &str) -> Option<&'a str> {
        fields
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn partial_content_head_has_every_field() {
        let mut out = b"previous bytes stay".to_vec();
        let mut head = ResponseHead::new(&mut out, 206, DATE);
        head.content_type("video/mp4")
            .content_length(100)
            .content_range(ByteRange::new(100, 199), 12345)
            .last_modified(UNIX_EPOCH + Duration::from_secs(784111777))
            .etag("\"abc-1\"")
            .accept_ranges()
            .cache_control("public, max-age=3600")
            .cors()
            .connection(true);
        let head_bytes = head.finish();
        assert!(out.starts_with(b"previous bytes stay"));
        let written = &out[19..];
        assert_eq!(head_bytes, written.len());
        let (status, reason, fields, parsed_bytes) = parse(written);
        assert_eq!(
            (status, reason.as_str(), parsed_bytes),
            (206, "Partial Content", head_bytes)
        );
        for (name, value) in [
            ("Server", "oasis"),
            ("Date", DATE),
            ("Content-Type", "video/mp4"),
            ("Content-Length", "100"),
            ("Content-Range", "bytes 100-199/12345"),
            ("Last-Modified", DATE),
            ("ETag", "\"abc-1\""),
            ("Accept-Ranges", "bytes"),
            ("Cache-Control", "public, max-age=3600"),
            ("Access-Control-Allow-Origin", "*"),
            ("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS),
            ("Connection", "keep-alive"),
        ] {
            assert_eq!(field(&fields, name), Some(value), "{name}");
        }
    }

    #[test]
    fn unsatisfiable_and_retry_after() {
        let mut out = Vec::new();
        let mut head = ResponseHead::new(&mut out, 503, DATE);
        head.retry_after(5)
            .content_range_unsatisfiable(u64::MAX)
            .connection(false);
        head.finish();
        let (status, _, fields, _) = parse(&out);
        assert_eq!(status, 503);
        assert_eq!(field(&fields, "Retry-After"), Some("5"));
        assert_eq!(
            field(&fields, "Content-Range"),
            Some("bytes */18446744073709551615")
        );
        assert_eq!(field(&fields, "Connection"), Some("close"));
    }

    #[test]
    fn every_status_the_server_uses_has_a_reason() {
        for status in [
            200, 201, 204, 206, 304, 400, 401, 403, 404, 405, 408, 411, 412, 413, 414, 416, 431,
            500, 501, 503, 505, 507,
        ] {
            assert!(
                reason_phrase(status).is_some_and(|r| !r.is_empty()),
                "{status}"
            );
        }
        assert_eq!(reason_phrase(299), None);
    }

    #[test]
    fn error_response_looks_like_nginx() {
        let mut out = Vec::new();
        let head_bytes = error_response(404, true, DATE, &mut out);
        let (status, reason, fields, parsed_bytes) = parse(&out);
        assert_eq!(
            (status, reason.as_str(), parsed_bytes),
            (404, "Not Found", head_bytes)
        );
        let body = std::str::from_utf8(&out[head_bytes..]).unwrap();
        assert_eq!(
            field(&fields, "Content-Length"),
            Some(body.len().to_string().as_str())
        );
        assert_eq!(field(&fields, "Content-Type"), Some("text/html"));
        assert_eq!(
            body,
            "<html>\r\n<head><title>404 Not Found</title></head>\r\n<body>\r\n\
             <center><h1>404 Not Found</h1></center>\r\n<hr><center>oasis</center>\r\n\
             </body>\r\n</html>\r\n"
        );
        for status in [400, 413, 414, 416, 431, 500, 503, 505, 507, 299] {
            let mut out = Vec::new();
            let head_bytes = error_response(status, false, DATE, &mut out);
            let (_, _, fields, _) = parse(&out);
            let length: usize = field(&fields, "Content-Length").unwrap().parse().unwrap();
            assert_eq!(head_bytes + length, out.len(), "{status}");
        }
        let mut out = Vec::new();
        let head_bytes = error_response(304, true, DATE, &mut out);
        assert_eq!(head_bytes, out.len(), "304 has no body");
        assert!(!out.windows(14).any(|w| w == b"Content-Length"));
    }

    #[test]
    fn custom_error_page_with_extra_fields() {
        let mut out = Vec::new();
        let mut head = ResponseHead::new(&mut out, 416, DATE);
        head.content_type("text/html")
            .content_length(error_body_bytes(416) as u64)
            .content_range_unsatisfiable(1000)
            .cors()
            .connection(true);
        let head_bytes = head.finish();
        push_error_body(416, &mut out);
        let (status, _, fields, _) = parse(&out);
        assert_eq!(status, 416);
        assert_eq!(field(&fields, "Content-Range"), Some("bytes */1000"));
        let body = std::str::from_utf8(&out[head_bytes..]).unwrap();
        assert!(body.contains("<title>416 Range Not Satisfiable</title>"));
        assert_eq!(body.len(), error_body_bytes(416));
    }

    #[test]
    fn preflight_and_continue() {
        let mut out = Vec::new();
        let bytes = preflight_response(true, 86400, DATE, &mut out);
        assert_eq!(bytes, out.len());
        let (status, _, fields, _) = parse(&out);
        assert_eq!(status, 204);
        assert_eq!(
            field(&fields, "Access-Control-Allow-Methods"),
            Some(CORS_ALLOW_METHODS)
        );
        assert!(field(&fields, "Access-Control-Allow-Headers")
            .unwrap()
            .contains("Authorization"));
        assert_eq!(field(&fields, "Access-Control-Max-Age"), Some("86400"));
        let mut out = Vec::new();
        continue_response(&mut out);
        assert_eq!(parse(&out).0, 100);
    }

    #[test]
    fn push_u64_edges() {
        for value in [0, 9, 10, 12345, u64::MAX] {
            let mut out = Vec::new();
            push_u64(&mut out, value);
            assert_eq!(out, value.to_string().into_bytes());
        }
        assert_eq!(http_date(UNIX_EPOCH + Duration::from_secs(784111777)), DATE);
    }

    #[test]
    fn spelled_lines_match_checked_fields() {
        let mut spelled = Vec::new();
        let mut head = ResponseHead::new(&mut spelled, 200, DATE);
        head.cors()
            .accept_ranges()
            .connection(true)
            .connection(false);
        let mut checked = Vec::new();
        let mut head = ResponseHead::new(&mut checked, 200, DATE);
        head.header("Access-Control-Allow-Origin", "*")
            .header("Access-Control-Expose-Headers", CORS_EXPOSE_HEADERS)
            .header("Accept-Ranges", "bytes")
            .header("Connection", "keep-alive")
            .header("Connection", "close");
        assert_eq!(
            String::from_utf8(spelled).unwrap(),
            String::from_utf8(checked).unwrap()
        );
    }

    #[test]
    fn imf_date_edges_match_httpdate() {
        for secs in [
            0,
            59,
            86_399,
            86_400,
            951_782_400,   // 2000-02-29
            951_868_800,   // 2000-03-01
            4_107_456_000, // 2100-02-28 (2100 is not a leap year)
            4_107_542_400, // 2100-03-01
            1_795_323_372,
            253_402_300_799, // the last second of 9999
        ] {
            let time = UNIX_EPOCH + Duration::from_secs(secs);
            assert_eq!(
                ImfDate::new(time).as_str(),
                httpdate::fmt_http_date(time),
                "{secs}"
            );
        }
    }

    #[test]
    #[should_panic(expected = "date must be before year 9999")]
    fn imf_date_refuses_year_10000_like_httpdate() {
        ImfDate::new(UNIX_EPOCH + Duration::from_secs(253_402_300_800));
    }

    proptest::proptest! {
        #[test]
        fn imf_date_matches_httpdate(secs in 0u64..253_402_300_800) {
            let time = UNIX_EPOCH + Duration::from_secs(secs);
            let date = ImfDate::new(time);
            proptest::prop_assert_eq!(date.as_str(), httpdate::fmt_http_date(time));
        }
    }

    #[test]
    #[should_panic(expected = "contains CR, LF or NUL")]
    fn header_injection_is_a_bug() {
        let mut out = Vec::new();
        ResponseHead::new(&mut out, 200, DATE).header("X-Name", "a\r\nSet-Cookie: x");
    }
}
