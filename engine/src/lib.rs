//! The Oasis engine: a thread-per-core io_uring runtime and the Resource Manager.
//!
//! Only this crate submits io_uring operations. Protocols (`oasis-net`) are sans-IO sessions the
//! engine drives ([`session`]); storage hands the engine open files and byte ranges. Every queue,
//! pool and table here has a fixed bound set at start-up.
//!
//! Map: [`runtime`] starts and stops threads; `worker` is the per-core loop; [`layout`] says
//! which roles (file, command, data) each worker serves and pins it; [`mailbox`], [`timer`] and
//! [`pool`] are the bounded parts the loop uses; [`resource`] and [`observer`] are the Resource
//! Manager; [`probe`] checks io_uring at start-up.

mod acceptor;
mod bufring;
mod config;
pub mod direct;
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
pub mod timer;
mod worker;

pub use layout::{Layout, Roles};
pub use resource::{Reservation, ReserveError, Resource, ResourceLimits, ResourceManager};
pub use runtime::{
    Engine, EngineConfig, EngineHandle, JobRejected, Listener, SendPath, StartError,
};
pub use session::{ConnInfo, Job, JobResult, Phase, Service, Session, Transmit};
