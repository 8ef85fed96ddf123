//! The connection loop: one thread that connects to a server picked at random, says `HELLO`,
//! sends the window's bytes from where `WELCOME` says, takes `ACK`s, and on any failure backs
//! off and tries another server.
//!
//! A second thread per connection reads the server's frames (blocking reads with a timeout) and
//! hands them over through a channel, waking the loop through the window's generation. The loop
//! never waits on a socket without a timeout: connects, writes and the `WELCOME` read are bounded,
//! and outstanding bytes with no `ACK` for `ack_timeout` end the connection. This module speaks
//! the shipper's side of `PROTOCOL.md` with the codec of `crate::proto`; it stores nothing.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::{encode, encode_data, refuse, Decoder, Message, VERSION};

use super::backoff::Backoff;
use super::window::Window;
use super::{Counters, Shared};

/// The longest one wait for news lasts (the loop then looks at its deadlines again).
const WAIT_SLICE: Duration = Duration::from_millis(200);
/// Of failures in a row, every this many is logged as a warning (the others at debug level).
const FAILURES_PER_WARNING: u32 = 10;
/// Bytes read from the socket at a time by the frame reader.
const READ_BYTES: usize = 16 * 1024;

/// Why a connection ended before the stream was done.
#[derive(Debug)]
enum Failure {
    /// No connection, or it broke (connect, write or read error, end of stream).
    Io(String),
    /// A `REFUSE` with code 2-5, or a code 1 the shipper cannot follow.
    Refused(u8, String),
    /// Bytes outstanding and no `ACK` for the ack timeout.
    Hung(Duration),
    /// A frame the protocol does not allow here.
    Protocol(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Io(e) => write!(f, "{e}"),
            Failure::Refused(code, reason) => write!(f, "refused (code {code}): {reason}"),
            Failure::Hung(t) => write!(f, "no acknowledgement for {t:?} with bytes outstanding"),
            Failure::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

/// How a connection ended without failing.
#[derive(Debug, PartialEq, Eq)]
enum Ended {
    /// The stream is done, or a shutdown's deadline passed.
    Done,
    /// The server closed the connection with nothing outstanding (a server closes writers that
    /// stay silent): connect again when there is something to send.
    Idle,
}

/// What the frame reader hands to the loop.
enum Event {
    Frame(Message),
    Closed(String),
}

/// Runs until the stream is done or a shutdown's deadline passes.
pub(crate) fn run(shared: &Shared) {
    let cfg = &shared.config;
    let mut backoff = Backoff::new(cfg.backoff_initial, cfg.backoff_max);
    let mut last: Option<usize> = None;
    let mut attempts = 0u64;
    // The highest offset ever sent: sending below it again is a resend.
    let mut sent_high = 0u64;
    while !shared.should_end() {
        if !shared.window.snapshot().anchored {
            let loud = backoff.failures().is_multiple_of(FAILURES_PER_WARNING);
            match probe_end(shared, loud) {
                Some(end) => shared.window.anchor(end),
                None => {
                    pause(shared, backoff.next_delay());
                    continue;
                }
            }
        }
        let idx = pick(cfg.servers.len(), last);
        last = Some(idx);
        if attempts > 0 {
            Counters::add(&shared.counters.reconnects, 1);
        }
        attempts += 1;
        let server = &cfg.servers[idx];
        let ended = session(shared, server, &mut backoff, &mut sent_high);
        shared.set_server(None);
        match ended {
            Ok(Ended::Done) => {}
            Ok(Ended::Idle) => {
                tracing::debug!(
                    "shipping {}: {server} closed the idle connection",
                    cfg.stream
                );
                wait_for_bytes(shared);
            }
            Err(failure) => {
                Counters::add(&shared.counters.failures, 1);
                if let Failure::Refused(..) = failure {
                    Counters::add(&shared.counters.refusals, 1);
                }
                // The first failure in a row is a warning, then every tenth: servers down for
                // an hour do not fill the log.
                let loud = backoff.failures().is_multiple_of(FAILURES_PER_WARNING);
                let delay = backoff.next_delay();
                if loud {
                    tracing::warn!(
                        "shipping {} to {server}: {failure}; connecting again in {} ms ({} failures in a row)",
                        cfg.stream,
                        delay.as_millis(),
                        backoff.failures()
                    );
                } else {
                    tracing::debug!("shipping {} to {server}: {failure}", cfg.stream);
                }
                pause(shared, delay);
            }
        }
    }
}

/// Waits until the window holds bytes to send, the stream is done or a shutdown's deadline
/// passes.
fn wait_for_bytes(shared: &Shared) {
    loop {
        let s = shared.window.snapshot();
        if s.read_end > s.acked || shared.should_end() {
            return;
        }
        shared.window.wait_change(s.generation, WAIT_SLICE);
    }
}

/// A server index at random, another than `last` when there is another.
fn pick(n: usize, last: Option<usize>) -> usize {
    match last {
        Some(l) if n > 1 => {
            let i = fastrand::usize(..n - 1);
            if i >= l {
                i + 1
            } else {
                i
            }
        }
        _ => fastrand::usize(..n),
    }
}

/// Sleeps `delay`, or less when a shutdown's deadline comes first or the stream gets done.
fn pause(shared: &Shared, delay: Duration) {
    let until = Instant::now() + delay;
    loop {
        let now = Instant::now();
        if now >= until || shared.should_end() {
            return;
        }
        let s = shared.window.snapshot();
        shared
            .window
            .wait_change(s.generation, (until - now).min(WAIT_SLICE));
    }
}

/// `timeout`, shortened to what is left before a shutdown's deadline (at least 1 ms).
fn bounded(shared: &Shared, timeout: Duration) -> Duration {
    let left = shared
        .deadline()
        .map_or(timeout, |d| d.saturating_duration_since(Instant::now()));
    timeout.min(left).max(Duration::from_millis(1))
}

/// Connects to `server` (every address it resolves to, in turn) with the connect timeout.
fn connect(shared: &Shared, server: &str) -> Result<TcpStream, Failure> {
    let addrs: Vec<SocketAddr> = server
        .to_socket_addrs()
        .map_err(|e| Failure::Io(format!("cannot resolve: {e}")))?
        .collect();
    let mut last = String::from("resolves to no address");
    for addr in addrs {
        let timeout = bounded(shared, shared.config.connect_timeout);
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(s) => {
                let io = |e: std::io::Error| Failure::Io(format!("socket options: {e}"));
                s.set_nodelay(true).map_err(io)?;
                s.set_write_timeout(Some(shared.config.write_timeout))
                    .map_err(io)?;
                return Ok(s);
            }
            Err(e) => last = format!("cannot connect to {addr}: {e}"),
        }
    }
    Err(Failure::Io(last))
}

fn write_frame(sock: &mut TcpStream, frame: &[u8]) -> Result<(), Failure> {
    sock.write_all(frame)
        .map_err(|e| Failure::Io(format!("write: {e}")))
}

/// Reads frames until one message is whole, or `timeout` passes with none.
fn read_message(
    sock: &mut TcpStream,
    decoder: &mut Decoder,
    timeout: Duration,
) -> Result<Message, Failure> {
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    loop {
        if let Some(m) = decoder
            .next()
            .map_err(|e| Failure::Protocol(e.to_string()))?
        {
            return Ok(m);
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Io(format!("no answer within {timeout:?}")));
        }
        sock.set_read_timeout(Some(left))
            .map_err(|e| Failure::Io(e.to_string()))?;
        match sock.read(&mut buf) {
            Ok(0) => return Err(Failure::Io("the server closed the connection".into())),
            Ok(n) => decoder.feed(&buf[..n]),
            Err(e) if is_timeout(&e) => {}
            Err(e) => return Err(Failure::Io(format!("read: {e}"))),
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock
            | std::io::ErrorKind::TimedOut
            | std::io::ErrorKind::Interrupted
    )
}

/// Connects, says `HELLO` with `oldest_unacked`, and returns the socket, its decoder and the
/// `WELCOME`'s `(expect, durable_end)`.
fn hello(
    shared: &Shared,
    server: &str,
    oldest_unacked: u64,
) -> Result<(TcpStream, Decoder, u64, u64), Failure> {
    let mut sock = connect(shared, server)?;
    let mut frame = Vec::new();
    encode(
        &Message::Hello {
            version: VERSION,
            stream: shared.config.stream.clone(),
            oldest_unacked,
        },
        &mut frame,
    );
    write_frame(&mut sock, &frame)?;
    let mut decoder = Decoder::new();
    let timeout = bounded(shared, shared.config.ack_timeout);
    match read_message(&mut sock, &mut decoder, timeout)? {
        Message::Welcome {
            expect,
            durable_end,
        } => Ok((sock, decoder, expect, durable_end)),
        Message::Refuse { code, reason, .. } => Err(Failure::Refused(code, reason)),
        other => Err(Failure::Protocol(format!(
            "a frame of kind {} instead of WELCOME",
            other.kind()
        ))),
    }
}

/// Asks every server where the stream ends and returns the largest end (`None`: no server
/// answered). A source without offsets of its own starts there. `loud`: when no server
/// answers, say so as a warning (else at debug level).
fn probe_end(shared: &Shared, loud: bool) -> Option<u64> {
    let mut order: Vec<usize> = (0..shared.config.servers.len()).collect();
    fastrand::shuffle(&mut order);
    let mut end = None;
    let mut silent = Vec::new();
    for i in order {
        let server = &shared.config.servers[i];
        match hello(shared, server, 0) {
            Ok((sock, _, expect, durable_end)) => {
                let _ = sock.shutdown(Shutdown::Both);
                end = Some(end.unwrap_or(0).max(expect).max(durable_end));
            }
            Err(e) => silent.push(format!("{server} ({e})")),
        }
        if shared.deadline().is_some_and(|d| Instant::now() >= d) {
            break;
        }
    }
    match end {
        Some(end) if !silent.is_empty() => tracing::warn!(
            "stream {} continues at offset {end}, the end the servers that answered hold; {} did not answer: if one of them holds more of the stream, what it holds past {end} and what is shipped now overlap",
            shared.config.stream,
            silent.join(", ")
        ),
        None if loud => tracing::warn!(
            "stream {}: no server answered ({}); trying again",
            shared.config.stream,
            silent.join(", ")
        ),
        None => tracing::debug!("stream {}: no server answered", shared.config.stream),
        Some(_) => {}
    }
    end
}

/// Starts the thread that reads the server's frames onto the returned channel (waking the loop
/// through the window) until the socket is shut down or breaks.
fn spawn_reader(
    mut sock: TcpStream,
    mut decoder: Decoder,
    window: Arc<Window>,
    ack_timeout: Duration,
) -> std::io::Result<(Receiver<Event>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = channel();
    sock.set_read_timeout(Some(ack_timeout))?;
    let handle = std::thread::Builder::new()
        .name("oasis-ship-ack".into())
        .spawn(move || {
            let mut buf = vec![0u8; READ_BYTES];
            loop {
                loop {
                    match decoder.next() {
                        Ok(Some(m)) => {
                            if tx.send(Event::Frame(m)).is_err() {
                                return;
                            }
                            window.wake();
                        }
                        Ok(None) => break,
                        Err(e) => {
                            let _ = tx.send(Event::Closed(e.to_string()));
                            window.wake();
                            return;
                        }
                    }
                }
                let closed = match sock.read(&mut buf) {
                    Ok(0) => "the server closed the connection".to_string(),
                    Ok(n) => {
                        decoder.feed(&buf[..n]);
                        continue;
                    }
                    // Quiet is not a failure here: the loop decides with its own deadlines.
                    Err(e) if is_timeout(&e) => continue,
                    Err(e) => format!("read: {e}"),
                };
                let _ = tx.send(Event::Closed(closed));
                window.wake();
                return;
            }
        })?;
    Ok((rx, handle))
}

/// One connection: `HELLO`, then bytes out and acknowledgements in until the stream is done
/// or a shutdown's deadline passes (`Done`), the server closes it with nothing outstanding
/// (`Idle`), or the connection fails.
fn session(
    shared: &Shared,
    server: &str,
    backoff: &mut Backoff,
    sent_high: &mut u64,
) -> Result<Ended, Failure> {
    let window = &shared.window;
    let cfg = &shared.config;
    let oldest = window.snapshot().acked;
    let (sock, decoder, expect, _durable_end) = hello(shared, server, oldest)?;
    if expect < oldest {
        let _ = sock.shutdown(Shutdown::Both);
        return Err(Failure::Protocol(format!(
            "WELCOME expects offset {expect}, below the oldest unacknowledged {oldest}"
        )));
    }
    // A server that expects more than was acknowledged holds those bytes durably.
    window.ack(expect);
    backoff.reset();
    Counters::add(&shared.counters.connects, 1);
    shared.set_server(Some(server));
    tracing::info!("shipping {} to {server} from offset {expect}", cfg.stream);
    let reader_sock = sock
        .try_clone()
        .map_err(|e| Failure::Io(format!("socket: {e}")))?;
    let (events, reader) = spawn_reader(reader_sock, decoder, Arc::clone(window), cfg.ack_timeout)
        .map_err(|e| Failure::Io(format!("cannot start the acknowledgement reader: {e}")))?;
    let mut link = Link {
        shared,
        sock,
        next: expect,
        outstanding_since: None,
        resending: false,
        frame: Vec::new(),
        bytes: Vec::new(),
    };
    let result = link.pump(&events, sent_high);
    let _ = link.sock.shutdown(Shutdown::Both);
    let _ = reader.join();
    result
}

/// A welcomed connection's sending state.
struct Link<'a> {
    shared: &'a Shared,
    sock: TcpStream,
    /// The offset of the next byte to send.
    next: u64,
    /// Since when bytes have been outstanding with no acknowledgement moving.
    outstanding_since: Option<Instant>,
    /// The last frame went below the high-water mark and did not reach it.
    resending: bool,
    frame: Vec<u8>,
    bytes: Vec<u8>,
}

impl Link<'_> {
    fn pump(&mut self, events: &Receiver<Event>, sent_high: &mut u64) -> Result<Ended, Failure> {
        let window = &self.shared.window;
        loop {
            while let Ok(event) = events.try_recv() {
                if let Event::Closed(why) = &event {
                    if window.snapshot().acked >= self.next {
                        return Ok(Ended::Idle);
                    }
                    return Err(Failure::Io(why.clone()));
                }
                self.on_event(event)?;
            }
            let s = window.snapshot();
            if s.all_acked() {
                return Ok(Ended::Done);
            }
            let now = Instant::now();
            if self.shared.deadline().is_some_and(|d| now >= d) {
                return Ok(Ended::Done);
            }
            self.next = self.next.max(s.acked);
            if self.next < s.read_end {
                self.send(sent_high)?;
                continue;
            }
            if s.acked < self.next {
                let since = *self.outstanding_since.get_or_insert(now);
                let quiet = now.duration_since(since);
                if quiet >= self.shared.config.ack_timeout {
                    return Err(Failure::Hung(quiet));
                }
            } else {
                self.outstanding_since = None;
            }
            window.wait_change(s.generation, WAIT_SLICE);
        }
    }

    /// Sends one `DATA` frame from `next`.
    fn send(&mut self, sent_high: &mut u64) -> Result<(), Failure> {
        let cfg = &self.shared.config;
        let n = self
            .shared
            .window
            .copy_from(self.next, cfg.frame_bytes_max, &mut self.bytes);
        // `next` lies in [acked, read_end): the window holds it.
        debug_assert!(n > 0, "nothing to send at {}", self.next);
        if n == 0 {
            return Ok(());
        }
        self.frame.clear();
        encode_data(self.next, &self.bytes, &mut self.frame);
        write_frame(&mut self.sock, &self.frame)?;
        let end = self.next + n as u64;
        let c = &self.shared.counters;
        Counters::add(&c.sent_bytes, n as u64);
        if self.next < *sent_high {
            Counters::add(&c.resent_bytes, (*sent_high).min(end) - self.next);
            // One resend per return below the high-water mark, counted at its first frame.
            if !self.resending {
                Counters::add(&c.resends, 1);
            }
        }
        self.resending = end < *sent_high;
        *sent_high = (*sent_high).max(end);
        self.outstanding_since.get_or_insert_with(Instant::now);
        self.next = end;
        Ok(())
    }

    fn on_event(&mut self, event: Event) -> Result<(), Failure> {
        let window = &self.shared.window;
        match event {
            Event::Closed(why) => Err(Failure::Io(why)),
            Event::Frame(Message::Ack { durable_end }) => {
                if window.ack(durable_end) {
                    self.outstanding_since = Some(Instant::now());
                }
                self.next = self.next.max(durable_end);
                Ok(())
            }
            Event::Frame(Message::Refuse {
                code: refuse::UNEXPECTED_OFFSET,
                expect,
                reason,
            }) => {
                let s = window.snapshot();
                if expect < s.acked || expect > s.read_end {
                    return Err(Failure::Refused(
                        refuse::UNEXPECTED_OFFSET,
                        format!(
                            "{reason} (expects {expect}; this shipper holds {}..{})",
                            s.acked, s.read_end
                        ),
                    ));
                }
                Counters::add(&self.shared.counters.refusals, 1);
                self.next = expect;
                Ok(())
            }
            Event::Frame(Message::Refuse { code, reason, .. }) => {
                Err(Failure::Refused(code, reason))
            }
            Event::Frame(other) => Err(Failure::Protocol(format!(
                "a frame of kind {} on a shipper's connection",
                other.kind()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_server_is_picked_after_a_failure() {
        for _ in 0..1000 {
            assert_ne!(pick(2, Some(0)), 0);
            assert_ne!(pick(2, Some(1)), 1);
            let i = pick(5, Some(3));
            assert!(i < 5 && i != 3);
        }
        assert_eq!(pick(1, Some(0)), 0, "the only server is tried again");
        let seen: std::collections::BTreeSet<usize> = (0..1000).map(|_| pick(4, None)).collect();
        assert_eq!(seen.len(), 4, "every server gets picked");
    }
}
