//! The session's behaviour, driven in memory: each test builds a real service over a store in a
//! temporary directory, talks HTTP to one `HttpSession` through [`driver`], and moves a fake
//! clock for timeouts and pacing. No socket, no thread, no sleep: a timeout of a minute is
//! tested without waiting for it. The integration tests in `tests/` cover the same ground with
//! real peers over real sockets.

mod admission;
mod api_body;
mod driver;
mod pacing;
mod pool;
mod proxy;
mod requests;
mod timeouts;
mod uploads;

/// Object content that shows where a byte came from.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 % 251) as u8).collect()
}
