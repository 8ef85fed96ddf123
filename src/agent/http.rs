//! The agent's control endpoint: `GET /api/processes` (every process's pid, state, restarts,
//! last exit, flapping) and `GET /healthz`, on one thread with blocking std sockets.
//!
//! It is a small, bounded control surface for operators and monitors on a trusted network (bind
//! it to loopback): one connection at a time, a request head of at most 8 KiB, 2 s to send it,
//! one response per connection. It changes nothing and has no authentication.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::Duration;

use super::state::Table;

/// Largest request head read.
const HEAD_BYTES_MAX: usize = 8 * 1024;
/// How long a client may take to send its head or read the answer.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// Binds `addr` and serves the endpoint on its own thread; returns the bound address (a port 0
/// becomes the one the kernel chose).
pub fn start(addr: SocketAddr, table: Table) -> io::Result<SocketAddr> {
    let listener = TcpListener::bind(addr)?;
    let local = listener.local_addr()?;
    std::thread::Builder::new()
        .name("agent-http".to_string())
        .spawn(move || serve(listener, &table))?;
    Ok(local)
}

fn serve(listener: TcpListener, table: &Table) {
    for conn in listener.incoming() {
        match conn {
            Ok(stream) => {
                if let Err(e) = answer(stream, table) {
                    tracing::debug!("control endpoint: {e}");
                }
            }
            Err(e) => {
                // Out of descriptors, say: back off a little instead of spinning.
                tracing::warn!("control endpoint: accept: {e}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

fn answer(mut stream: TcpStream, table: &Table) -> io::Result<()> {
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    let mut head = vec![0u8; HEAD_BYTES_MAX];
    let mut len = 0;
    let (status, body) = loop {
        let n = stream.read(&mut head[len..])?;
        if n == 0 {
            return Ok(());
        }
        len += n;
        let mut fields = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut fields);
        match req.parse(&head[..len]) {
            Ok(httparse::Status::Complete(_)) => {
                break route(req.method.unwrap_or(""), req.path.unwrap_or(""), table)
            }
            Ok(httparse::Status::Partial) if len < HEAD_BYTES_MAX => continue,
            Ok(httparse::Status::Partial) => {
                break (431, error_json("request head over 8 KiB"));
            }
            Err(e) => break (400, error_json(&format!("malformed request: {e}"))),
        }
    };
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Request Header Fields Too Large",
    };
    let allow = if status == 405 {
        "Allow: GET, HEAD\r\n"
    } else {
        ""
    };
    write!(
        stream,
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{allow}Cache-Control: no-store\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    let is_head = head.starts_with(b"HEAD ");
    if !is_head {
        stream.write_all(body.as_bytes())?;
    }
    stream.flush()
}

/// The answer to `method path`: status and JSON body.
fn route(method: &str, path: &str, table: &Table) -> (u16, String) {
    let path = path.split('?').next().unwrap_or("");
    let known = matches!(path, "/api/processes" | "/healthz");
    if !known {
        return (
            404,
            error_json("not found: the agent serves GET /api/processes and GET /healthz"),
        );
    }
    if method != "GET" && method != "HEAD" {
        return (
            405,
            error_json("the agent's endpoint is read-only: use GET"),
        );
    }
    match path {
        "/healthz" => (200, "{\"status\":\"ok\"}".to_string()),
        _ => (200, table.to_json().to_string()),
    }
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.write_all(request.as_bytes()).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap();
        out
    }

    #[test]
    fn the_endpoint_answers_processes_and_refuses_the_rest() {
        let table = Table::new(["media"]);
        let addr = start("127.0.0.1:0".parse().unwrap(), table).unwrap();
        let ok = get(addr, "GET /api/processes HTTP/1.1\r\nHost: a\r\n\r\n");
        assert!(ok.starts_with("HTTP/1.1 200 OK"), "{ok}");
        let body = ok.split("\r\n\r\n").nth(1).unwrap();
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(json["processes"][0]["name"], "media");
        assert!(get(addr, "GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
        assert!(get(addr, "POST /api/processes HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
        assert!(get(addr, "\x01\x02 garbage\r\n\r\n").starts_with("HTTP/1.1 400"));
        // Exactly the bound, never finished: all of it is read, so the close is clean.
        let prefix = "GET /healthz HTTP/1.1\r\nX: ";
        let huge = format!("{prefix}{}", "a".repeat(HEAD_BYTES_MAX - prefix.len()));
        let mut s = TcpStream::connect(addr).unwrap();
        let _ = s.write_all(huge.as_bytes());
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        assert!(out.starts_with("HTTP/1.1 431"), "{out}");
        let head = get(addr, "HEAD /healthz HTTP/1.1\r\n\r\n");
        assert!(head.ends_with("\r\n\r\n"), "HEAD has no body: {head}");
    }
}
