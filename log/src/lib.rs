//! Oasis Log Manager: a log server on the Oasis engine (`logd`), the protocol it speaks
//! (`PROTOCOL.md`), and the shipper that sends it a byte stream and resumes by byte offset.
//!
//! - `proto`: the frames of `PROTOCOL.md`, encoded and decoded without I/O.
//! - `store`: a server's data directory: streams in segment files (`FORMAT.md`), start-up
//!   recovery, the writer thread and its group commits, reads.
//! - `server`: the log server's engine service: one sans-IO session per connection.
//! - `assemble`: one stream put together from several sources, each byte once, overlaps checked.
//! - `client`: the reading side for tools: a server's `READ` and `LIST`, a data directory in place.
//! - `ship`: the shipper (a followed file, standard input or a program's lines to a list of
//!   servers) and a `tracing` layer that ships a program's events.
#![forbid(unsafe_code)]

pub mod assemble;
pub mod client;
pub mod proto;
pub mod server;
pub mod ship;
pub mod store;
