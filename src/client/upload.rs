//! One upload: a `PUT` written by hand over a TCP connection, because a refused upload must still
//! be reported with the server's own answer.
//!
//! The request carries `Expect: 100-continue`, so a server that refuses by the head alone (a wrong
//! token, a name it will not take, a full disk) answers before any body byte is sent. When the
//! server stops reading in the middle of the body (its disk filled), the write fails, and the
//! answer it sent is read all the same. Plain `http://` only, as the rest of the client.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// How long to wait for `100 Continue` before sending the body anyway (a server or proxy that
/// ignores the expectation); curl waits one second too.
const CONTINUE_WAIT: Duration = Duration::from_secs(1);
/// How long a connect, a stalled write or a stalled read may take.
const IO_TIMEOUT: Duration = Duration::from_secs(60);
/// How long to wait for the answer after a write failed.
const ANSWER_AFTER_FAILURE_WAIT: Duration = Duration::from_secs(5);
/// Largest answer read (heads and JSON bodies of the API are far smaller).
const ANSWER_BYTES_MAX: usize = 1 << 20;

/// The server's final answer to an upload.
pub struct Answer {
    pub status: u16,
    pub body: String,
    /// The body was not sent whole: the server answered (and stopped reading) before its end.
    pub body_cut: bool,
}

/// `http://host:port` split into what the connection needs.
#[derive(Debug)]
struct Origin {
    host_header: String,
    connect_to: String,
}

fn origin(base: &str) -> Result<Origin> {
    let Some(rest) = base.strip_prefix("http://") else {
        bail!("--server {base}: only http:// URLs are supported (e.g. http://127.0.0.1:8080)");
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        bail!("--server {base}: no host in the URL (e.g. http://127.0.0.1:8080)");
    }
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let connect_to = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Origin {
        host_header: authority.to_string(),
        connect_to,
    })
}

/// Sends `len` bytes from `body` as `PUT <path_and_query>` to `base`.
pub fn put(
    base: &str,
    path_and_query: &str,
    authorization: Option<&str>,
    body: &mut impl Read,
    len: u64,
) -> Result<Answer> {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| ("Authorization", a))
        .into_iter()
        .collect();
    put_with(base, path_and_query, &headers, body, len)
}

/// [`put`] with these header fields (each `name: value`, no CR or LF in either).
pub fn put_with(
    base: &str,
    path_and_query: &str,
    headers: &[(&str, &str)],
    body: &mut impl Read,
    len: u64,
) -> Result<Answer> {
    let origin = origin(base)?;
    let addr = origin
        .connect_to
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", origin.connect_to))?
        .next()
        .with_context(|| format!("{} resolves to no address", origin.connect_to))?;
    let mut stream = TcpStream::connect_timeout(&addr, IO_TIMEOUT).with_context(|| {
        format!("cannot reach {base} (is `oasis serve` running there, or is --server wrong?)")
    })?;
    stream.set_nodelay(true)?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;

    let mut head = format!(
        "PUT {path_and_query} HTTP/1.1\r\nHost: {}\r\nUser-Agent: oasis/{}\r\nContent-Length: {len}\r\nConnection: close\r\n",
        origin.host_header,
        env!("CARGO_PKG_VERSION")
    );
    if len > 0 {
        head.push_str("Expect: 100-continue\r\n");
    }
    for (name, value) in headers {
        if name.contains(['\r', '\n']) || value.contains(['\r', '\n']) {
            bail!("header field {name:?} holds a line break");
        }
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .with_context(|| format!("cannot send to {base}"))?;

    let mut input = Vec::new();
    if len > 0 {
        stream.set_read_timeout(Some(CONTINUE_WAIT))?;
        match read_answer(&mut stream, &mut input, true) {
            // Refused by the head: no body byte was sent.
            Ok(Some(answer)) => return Ok(answer),
            // 100 Continue, or no interim answer within the wait: send the body.
            Ok(None) => {}
            Err(e) => return Err(e).with_context(|| format!("no answer from {base}")),
        }
        if let Err(e) = send_body(&mut stream, body, len) {
            // The server may have answered and stopped reading (a full disk, a limit): its answer
            // says why, so read it before reporting the write.
            stream.set_read_timeout(Some(ANSWER_AFTER_FAILURE_WAIT))?;
            return match read_answer(&mut stream, &mut input, false) {
                Ok(Some(mut answer)) => {
                    answer.body_cut = true;
                    Ok(answer)
                }
                _ => Err(e).with_context(|| format!("the upload to {base} broke off")),
            };
        }
    }
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    match read_answer(&mut stream, &mut input, false) {
        Ok(Some(answer)) => Ok(answer),
        Ok(None) => bail!("{base} closed the connection without an answer"),
        Err(e) => Err(e).with_context(|| format!("no answer from {base}")),
    }
}

fn send_body(stream: &mut TcpStream, body: &mut impl Read, len: u64) -> Result<()> {
    let mut buf = vec![0u8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = body.read(&mut buf[..want]).context("reading the file")?;
        if n == 0 {
            bail!("the file shrank while it was sent ({left} bytes short)");
        }
        stream.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// Reads the next final answer. With `interim`, returns `Ok(None)` on `100 Continue` or when
/// nothing arrived within the read timeout; without, `Ok(None)` means the connection closed
/// before an answer began.
fn read_answer(
    stream: &mut TcpStream,
    input: &mut Vec<u8>,
    interim: bool,
) -> Result<Option<Answer>> {
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if let Some((status, head_len, content_length)) = parse_head(input)? {
            if (100..200).contains(&status) {
                input.drain(..head_len);
                if interim {
                    return Ok(None);
                }
                continue;
            }
            input.drain(..head_len);
            let want = content_length
                .unwrap_or(ANSWER_BYTES_MAX)
                .min(ANSWER_BYTES_MAX);
            while input.len() < want {
                match stream.read(&mut chunk) {
                    Ok(0) => break,
                    Ok(n) => input.extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            input.truncate(want);
            return Ok(Some(Answer {
                status,
                body: String::from_utf8_lossy(input).into_owned(),
                body_cut: false,
            }));
        }
        if input.len() > ANSWER_BYTES_MAX {
            bail!("the answer's head is larger than {ANSWER_BYTES_MAX} bytes");
        }
        match stream.read(&mut chunk) {
            Ok(0) => return Ok(None),
            Ok(n) => input.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e)
                if interim && matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A complete response head in `input`: (status, head length, Content-Length).
fn parse_head(input: &[u8]) -> Result<Option<(u16, usize, Option<usize>)>> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut resp = httparse::Response::new(&mut headers);
    match resp
        .parse(input)
        .context("the server sent an invalid HTTP answer")?
    {
        httparse::Status::Partial => Ok(None),
        httparse::Status::Complete(n) => {
            let status = resp.code.unwrap_or(0);
            let length = resp
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok())
                .and_then(|v| v.trim().parse::<usize>().ok());
            Ok(Some((status, n, length)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins() {
        let o = origin("http://127.0.0.1:8080/").unwrap();
        assert_eq!(
            (o.host_header.as_str(), o.connect_to.as_str()),
            ("127.0.0.1:8080", "127.0.0.1:8080")
        );
        let o = origin("http://media.example").unwrap();
        assert_eq!(o.connect_to, "media.example:80");
        let o = origin("http://[::1]:9000").unwrap();
        assert_eq!(o.connect_to, "[::1]:9000");
        assert!(origin("https://x")
            .unwrap_err()
            .to_string()
            .contains("only http://"));
        assert!(origin("http://").is_err());
    }

    #[test]
    fn heads() {
        let (s, n, l) = parse_head(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!((s, n, l), (401, 48, Some(5)));
        assert!(parse_head(b"HTTP/1.1 100 Cont").unwrap().is_none());
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
    }
}
