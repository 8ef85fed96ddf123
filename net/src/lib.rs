//! Oasis Client Manager: the HTTP/1.1 side of the server.
//!
//! `http` holds the sans-IO protocol pieces (parsing, range arithmetic, conditional requests,
//! response framing). Nothing in this crate submits io_uring operations or reads the clock:
//! the engine moves the bytes and passes the time in.
#![forbid(unsafe_code)]

pub mod http;
