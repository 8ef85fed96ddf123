//! The reading side for tools (`oasis logs ls|cat|tail`): a blocking client of a server's `READ`
//! and `LIST`, and a data directory read in place; both are [`PieceSource`]s for `assemble`.
//!
//! Blocking I/O on the caller's thread, every wait bounded by the timeout given (none while
//! following). Writes nothing anywhere: a data directory is opened read-only.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::assemble::PieceSource;
use crate::proto::{encode, Decoder, Message};
use crate::store::{Cursor, Step, Store, StoreError};

/// A connection to a log server, reading its frames.
pub struct Connection {
    name: String,
    socket: TcpStream,
    decoder: Decoder,
    buf: Vec<u8>,
}

impl Connection {
    /// Connects to `addr` (`host:port`); `timeout` bounds the connect and every later read
    /// (`None`: reads wait as long as it takes, for following).
    pub fn open(addr: &str, timeout: Option<Duration>) -> io::Result<Connection> {
        let connect = timeout.unwrap_or(Duration::from_secs(10));
        let mut last = io::Error::new(io::ErrorKind::NotFound, "the address resolves to nothing");
        for a in addr.to_socket_addrs()? {
            match TcpStream::connect_timeout(&a, connect) {
                Ok(socket) => {
                    socket.set_read_timeout(timeout)?;
                    socket.set_write_timeout(Some(connect))?;
                    let _ = socket.set_nodelay(true);
                    return Ok(Connection {
                        name: addr.to_string(),
                        socket,
                        decoder: Decoder::new(),
                        buf: vec![0; 64 * 1024],
                    });
                }
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    /// Sends one message.
    pub fn send(&mut self, msg: &Message) -> io::Result<()> {
        let mut b = Vec::new();
        encode(msg, &mut b);
        self.socket.write_all(&b)
    }

    /// The next message; `None` when the server closed the connection between frames.
    pub fn next_message(&mut self) -> io::Result<Option<Message>> {
        loop {
            let decoded = self
                .decoder
                .next()
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            if let Some(m) = decoded {
                return Ok(Some(m));
            }
            let n = self.socket.read(&mut self.buf)?;
            if n == 0 {
                if self.decoder.in_frame() {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                return Ok(None);
            }
            self.decoder.feed(&self.buf[..n]);
        }
    }

    /// The address it was opened with.
    pub fn name(&self) -> &str {
        &self.name
    }
}

/// One stream a server holds (a `STREAM` frame).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Its name.
    pub stream: String,
    /// The first offset the server holds.
    pub first: u64,
    /// The end of what it durably holds.
    pub durable_end: u64,
    /// Bytes it holds (`durable_end - first` less its holes).
    pub held: u64,
}

/// The streams `addr` holds whose names start with `prefix`.
pub fn list(addr: &str, prefix: &str, timeout: Duration) -> io::Result<Vec<StreamInfo>> {
    let mut c = Connection::open(addr, Some(timeout))?;
    c.send(&Message::List {
        prefix: prefix.to_string(),
    })?;
    let mut out = Vec::new();
    loop {
        match c.next_message()? {
            Some(Message::Stream {
                stream,
                first,
                durable_end,
                held,
            }) => out.push(StreamInfo {
                stream,
                first,
                durable_end,
                held,
            }),
            Some(Message::End { .. }) => return Ok(out),
            other => return Err(unexpected(other)),
        }
    }
}

fn unexpected(m: Option<Message>) -> io::Error {
    let what = match m {
        Some(Message::Refuse { code, reason, .. }) => format!("refused (code {code}): {reason}"),
        Some(m) => format!("unexpected {m:?}"),
        None => "the server closed the connection before END".into(),
    };
    io::Error::new(io::ErrorKind::InvalidData, what)
}

/// A stream read from a server (`READ` without follow), as pieces.
pub struct ServerSource {
    conn: Connection,
}

impl ServerSource {
    /// Asks `addr` for `stream` from `from`.
    pub fn open(addr: &str, stream: &str, from: u64, timeout: Duration) -> io::Result<Self> {
        let mut conn = Connection::open(addr, Some(timeout))?;
        conn.send(&Message::Read {
            stream: stream.to_string(),
            from,
            follow: false,
        })?;
        Ok(ServerSource { conn })
    }
}

impl PieceSource for ServerSource {
    fn next_piece(&mut self) -> Result<Option<(u64, Vec<u8>)>, String> {
        loop {
            match self.conn.next_message().map_err(|e| e.to_string())? {
                Some(Message::Chunk { offset, bytes }) => return Ok(Some((offset, bytes))),
                Some(Message::Gap { .. }) => {}
                Some(Message::End { .. }) => return Ok(None),
                other => return Err(unexpected(other).to_string()),
            }
        }
    }

    fn name(&self) -> &str {
        self.conn.name()
    }
}

/// A stream read from a data directory in place (read-only, beside a running server or not).
pub struct DirSource {
    name: String,
    cursor: Cursor,
    _store: Arc<Store>,
}

impl DirSource {
    /// `stream` in the data directory `dir`, from `from`; `None` if it holds none of it.
    pub fn open(dir: &Path, stream: &str, from: u64) -> Result<Option<DirSource>, StoreError> {
        let (store, _) = Store::open_read_only(dir)?;
        let Some(s) = store.find(stream) else {
            return Ok(None);
        };
        Ok(Some(DirSource {
            name: dir.display().to_string(),
            cursor: Cursor::new(s, from),
            _store: store,
        }))
    }
}

impl PieceSource for DirSource {
    fn next_piece(&mut self) -> Result<Option<(u64, Vec<u8>)>, String> {
        loop {
            match self.cursor.next_step().map_err(|e| e.to_string())? {
                None => return Ok(None),
                Some(Step::Gap { .. }) => {}
                Some(Step::Record(r)) => {
                    let bytes = r.read().map_err(|e| e.to_string())?;
                    return Ok(Some((r.from(), bytes)));
                }
            }
        }
    }

    fn name(&self) -> &str {
        &self.name
    }
}
