//! Oasis Log Manager: a log server on the Oasis engine (`logd`), the protocol it speaks
//! (`PROTOCOL.md`), and the shipper that sends it a byte stream and resumes by byte offset.
//!
//! - `proto`: the frames of `PROTOCOL.md`, encoded and decoded without I/O.
//! - `ship`: the shipper (a followed file, standard input or a program's lines to a list of
//!   servers) and a `tracing` layer that ships a program's events.
#![forbid(unsafe_code)]

pub mod proto;
pub mod ship;
