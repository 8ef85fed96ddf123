//! `oasis-monitor`: the online monitoring of the original design. Every Oasis process sends a
//! small status datagram to one or more monitors every interval ([`Sender`]); a monitor
//! ([`Monitor`]) checks each datagram (size, format, key, replay), keeps every node's latest
//! status and a short history in a bounded table, and shows the fleet on a dashboard, as JSON
//! (`/api/nodes`) and as one Prometheus endpoint (`/metrics`).
//!
//! The datagram codec (`status`) is sans-IO and reads no clock: times are passed in. The
//! sockets live in `sender`, `receiver` and `http`. The monitor receives on the engine's io_uring
//! datagram loop (`oasis_engine::datagram`); nothing here submits io_uring operations itself.

#![forbid(unsafe_code)]

pub mod events;
mod http;
pub mod probe;
mod receiver;
mod render;
mod sender;
pub mod status;
pub mod table;

pub use events::LevelChange;
pub use receiver::{Monitor, MonitorConfig};
pub use sender::{SendCounts, Sender};
pub use status::{Account, Level, PoolSummary, Process, Role, Status, Stream};
