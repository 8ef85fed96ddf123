//! The Oasis engine: a thread-per-core io_uring runtime and the Resource Manager.
//!
//! Only this crate submits io_uring operations. Protocols (`oasis-net`) are sans-IO sessions the
//! engine drives ([`session`]); storage hands the engine open files and byte ranges. Every queue,
//! pool and table here has a fixed bound set at start-up.
//!
//! Map: [`runtime`] starts and stops the engine; `acceptor` accepts and places connections,
//! `jobs` is the catalog thread, `shared` is what they and the workers share and `config` the
//! settings. `worker` is the per-core loop, in layers: `worker/mod.rs` (the loop, completion
//! dispatch) and `worker/drive.rs` (one function per [`Transmit`] kind, closing) call the
//! mechanisms `recv`, `send`, `hot` (`sendfile`, budget, deferred FIFO), `fetch` (cold fetch),
//! `splice`, `read` (reads into chunks) and `migrate`, which stand on `conn` (connection
//! state), `pipes`, `mapping` and `op` (`user_data`, submission). [`layout`] says which roles
//! (file, command, data) each worker serves and pins it; [`mailbox`], [`timer`], [`pool`],
//! `bufring` (provided receive buffers), `residency` and [`direct`] are the bounded parts the
//! loop uses; [`resource`] and [`observer`] are the Resource Manager; [`probe`] checks io_uring
//! at start-up; [`datagram`] is a receive loop of its own for UDP datagrams (the monitor's); [`host`] sets up the process (open-files limit, descriptor table, SIGPIPE) before
//! any thread starts; [`syncfs`] flushes a file system in one call (the log server's commits).

mod acceptor;
mod bufring;
mod config;
pub mod datagram;
pub mod direct;
pub mod host;
mod jobs;
pub mod layout;
pub mod mailbox;
pub mod observer;
pub mod pool;
pub mod probe;
mod residency;
pub mod resource;
pub mod runtime;
pub mod session;
mod shared;
pub mod syncfs;
pub mod timer;
mod worker;

pub use datagram::{DatagramConfig, DatagramCounts, DatagramHandler, DatagramLoop};
pub use layout::{Layout, Roles};
pub use resource::{Reservation, ReserveError, Resource, ResourceLimits, ResourceManager};
pub use runtime::{
    Engine, EngineConfig, EngineHandle, JobRejected, Listener, SendPath, StartError,
};
pub use session::{
    Completer, ConnInfo, Deferred, Job, JobResult, Phase, Service, Session, Transmit,
};
