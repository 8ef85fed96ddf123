//! One proxied request to the holder of an object: a blocking HTTP/1.1 exchange on a plain
//! `TcpStream` (connect, request head, response head parsed with `httparse`, then the body
//! read a chunk at a time). Every connect, write and read has a timeout; the response head is
//! capped; a body must have a `Content-Length` (an Oasis node always sends one), and a body
//! that ends before it is an error, never a short body.
//!
//! Runs on the proxy threads only (`super`), never on a worker. It decides nothing about the
//! request: the session chose the headers it passes through, and writes its own response head
//! from [`UpstreamHead`].

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Most bytes of a response head read from a holder.
pub const HEAD_BYTES_MAX: usize = 16 * 1024;
/// Most header fields of a response head from a holder.
const HEADERS_MAX: usize = 64;
/// The response header fields passed on to the client (the session adds its own `Date`,
/// `Server`, `Connection`, CORS fields and `Content-Length`).
const KEPT: [&str; 7] = [
    "content-type",
    "content-range",
    "etag",
    "last-modified",
    "accept-ranges",
    "cache-control",
    "retry-after",
];

/// Where and what to ask a holder.
#[derive(Clone, Debug)]
pub struct UpstreamRequest {
    /// The holder's base URL (`http://host:port`, its `[pool] advertise`).
    pub base: String,
    /// The path and query to ask for, percent-encoded (`/media/<name>[?query]`).
    pub path: String,
    /// `HEAD` instead of `GET`.
    pub head_only: bool,
    /// Request fields passed through (`Range`, `If-*`), values checked by the caller.
    pub headers: Vec<(&'static str, String)>,
    /// The pool credential, sent as a bearer token.
    pub token: String,
    /// Bound on the connect, on each write and on each read.
    pub timeout: Duration,
}

/// The holder's response head, as far as the client gets it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UpstreamHead {
    /// The holder's status (200..=599).
    pub status: u16,
    /// The `Content-Length` the holder declared (`None` on a 304 or 204).
    pub content_length: Option<u64>,
    /// The kept fields (see `KEPT`), names as the holder spelled them.
    pub headers: Vec<(String, String)>,
}

/// An exchange whose head was read: the body still to come.
#[derive(Debug)]
pub struct Upstream {
    stream: TcpStream,
    /// Body bytes read along with the head, not handed out yet.
    early: Vec<u8>,
    /// Body bytes still to hand out.
    left: u64,
}

/// Why a proxied request failed (said to the client in a 502 before the head, logged after).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct UpstreamError(pub String);

fn err(msg: impl Into<String>) -> UpstreamError {
    UpstreamError(msg.into())
}

/// `host:port` of an `http://` base URL (port 80 when absent).
fn authority(base: &str) -> Result<(String, String), UpstreamError> {
    let rest = base.strip_prefix("http://").ok_or_else(|| {
        err(format!(
            "the holder's address `{base}` is not http:// (proxying speaks plain HTTP/1.1)"
        ))
    })?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return Err(err(format!(
            "the holder's address `{base}` is not a base URL"
        )));
    }
    let addr = if host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        host.to_string()
    } else {
        format!("{host}:80")
    };
    Ok((host.to_string(), addr))
}

impl Upstream {
    /// Connects to the holder, sends the request and reads the response head.
    pub fn open(req: &UpstreamRequest) -> Result<(Upstream, UpstreamHead), UpstreamError> {
        let (host, addr) = authority(&req.base)?;
        let addrs: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| err(format!("cannot resolve the holder {host}: {e}")))?
            .take(4)
            .collect();
        let mut last = err(format!("the holder {host} has no address"));
        let mut stream = None;
        for a in addrs {
            match TcpStream::connect_timeout(&a, req.timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = err(format!("cannot connect to the holder {host}: {e}")),
            }
        }
        let mut stream = stream.ok_or(last)?;
        let io = |e: std::io::Error| err(format!("the holder {host}: {e}"));
        stream.set_read_timeout(Some(req.timeout)).map_err(io)?;
        stream.set_write_timeout(Some(req.timeout)).map_err(io)?;
        let _ = stream.set_nodelay(true);
        stream
            .write_all(request_head(req, &host).as_bytes())
            .map_err(io)?;

        let mut buf = vec![0u8; HEAD_BYTES_MAX];
        let mut filled = 0;
        loop {
            if filled == buf.len() {
                return Err(err(format!(
                    "the holder {host} sent a response head over {HEAD_BYTES_MAX} bytes"
                )));
            }
            let n = stream.read(&mut buf[filled..]).map_err(io)?;
            if n == 0 {
                return Err(err(format!(
                    "the holder {host} closed the connection before its response head"
                )));
            }
            filled += n;
            if let Some((head, used)) = parse_head(&buf[..filled], req.head_only)? {
                let body = head_body_len(&head, req.head_only);
                let mut early = buf[used..filled].to_vec();
                early.truncate(usize::try_from(body).unwrap_or(usize::MAX));
                let left = body;
                return Ok((
                    Upstream {
                        stream,
                        early,
                        left,
                    },
                    head,
                ));
            }
        }
    }

    /// Body bytes still to come.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// The next body bytes (at most `max`, at least one), into `buf` (cleared first). An empty
    /// `buf` means the body is complete; a body that ends early, or a read that times out, is
    /// an error.
    pub fn read_chunk(&mut self, buf: &mut Vec<u8>, max: usize) -> Result<(), UpstreamError> {
        buf.clear();
        if self.left == 0 {
            return Ok(());
        }
        let want = usize::try_from(self.left).unwrap_or(usize::MAX).min(max);
        if !self.early.is_empty() {
            let n = want.min(self.early.len());
            buf.extend(self.early.drain(..n));
            self.left -= n as u64;
            return Ok(());
        }
        buf.resize(want, 0);
        let n = self
            .stream
            .read(buf)
            .map_err(|e| err(format!("reading the holder's body: {e}")))?;
        buf.truncate(n);
        if n == 0 {
            return Err(err(format!(
                "the holder closed the connection with {} body bytes still to come",
                self.left
            )));
        }
        self.left -= n as u64;
        Ok(())
    }
}

/// How many body bytes follow the head.
fn head_body_len(head: &UpstreamHead, head_only: bool) -> u64 {
    if head_only || matches!(head.status, 204 | 304) || head.status < 200 {
        0
    } else {
        head.content_length.unwrap_or(0)
    }
}

fn request_head(req: &UpstreamRequest, host: &str) -> String {
    let method = if req.head_only { "HEAD" } else { "GET" };
    let mut out = format!(
        "{method} {} HTTP/1.1\r\nHost: {host}\r\nX-Oasis-Pool: 1\r\nAuthorization: Bearer {}\r\n\
         Connection: close\r\nUser-Agent: oasis-proxy\r\n",
        req.path, req.token
    );
    for (name, value) in &req.headers {
        out.push_str(name);
        out.push_str(": ");
        out.push_str(value);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out
}

/// Whether a field value may be written into a response head as is (visible ASCII, spaces
/// and tabs).
pub fn value_ok(value: &str) -> bool {
    value
        .bytes()
        .all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
}

/// The response head at the start of `bytes` and its length, `None` while incomplete.
pub fn parse_head(
    bytes: &[u8],
    head_only: bool,
) -> Result<Option<(UpstreamHead, usize)>, UpstreamError> {
    let mut fields = [httparse::EMPTY_HEADER; HEADERS_MAX];
    let mut resp = httparse::Response::new(&mut fields);
    let used = match resp.parse(bytes) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(err(format!("the holder's response head is malformed: {e}"))),
    };
    let status = resp.code.unwrap_or(0);
    if !(200..=599).contains(&status) {
        return Err(err(format!("the holder answered status {status}")));
    }
    let mut head = UpstreamHead {
        status,
        content_length: None,
        headers: Vec::new(),
    };
    for f in resp.headers.iter() {
        let value = std::str::from_utf8(f.value)
            .map_err(|_| err(format!("the holder's {} field is not UTF-8", f.name)))?
            .trim();
        let lower = f.name.to_ascii_lowercase();
        match lower.as_str() {
            "content-length" => {
                let n = value.parse::<u64>().map_err(|_| {
                    err(format!(
                        "the holder sent Content-Length `{value}`, not a number"
                    ))
                })?;
                if head.content_length.is_some_and(|m| m != n) {
                    return Err(err("the holder sent two different Content-Lengths"));
                }
                head.content_length = Some(n);
            }
            "transfer-encoding" => {
                return Err(err(
                    "the holder sent a body without Content-Length (Transfer-Encoding), which \
                     proxying does not relay",
                ))
            }
            _ if KEPT.contains(&lower.as_str()) && value_ok(value) => {
                head.headers.push((f.name.to_string(), value.to_string()))
            }
            _ => {}
        }
    }
    let bodyless = head_only || matches!(status, 204 | 304);
    if head.content_length.is_none() && !bodyless {
        return Err(err(format!(
            "the holder answered {status} without a Content-Length"
        )));
    }
    Ok(Some((head, used)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_keeps_the_fields_the_client_gets() {
        let raw = b"HTTP/1.1 206 Partial Content\r\nServer: oasis\r\nContent-Length: 10\r\n\
                    Content-Range: bytes 0-9/100\r\nETag: \"v1\"\r\nConnection: close\r\n\r\nabc";
        let (head, used) = parse_head(raw, false).unwrap().unwrap();
        assert_eq!(head.status, 206);
        assert_eq!(head.content_length, Some(10));
        assert_eq!(
            head.headers,
            vec![
                ("Content-Range".to_string(), "bytes 0-9/100".to_string()),
                ("ETag".to_string(), "\"v1\"".to_string()),
            ]
        );
        assert_eq!(&raw[used..], b"abc");
        assert!(parse_head(&raw[..20], false).unwrap().is_none());
    }

    #[test]
    fn heads_proxying_cannot_relay_are_errors() {
        for raw in [
            &b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 101 Switching\r\n\r\n",
            b"garbage\r\n\r\n",
        ] {
            assert!(
                parse_head(raw, false).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let (head, _) = parse_head(b"HTTP/1.1 304 Not Modified\r\nETag: \"a\"\r\n\r\n", false)
            .unwrap()
            .unwrap();
        assert_eq!((head.status, head.content_length), (304, None));
    }

    #[test]
    fn only_plain_http_base_urls_are_reached() {
        assert_eq!(
            authority("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1:8080".into(), "127.0.0.1:8080".into())
        );
        assert_eq!(authority("http://h/").unwrap().1, "h:80");
        assert!(authority("https://h").is_err());
        assert!(authority("http://h/x").is_err());
    }
}
