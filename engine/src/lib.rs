//! The Oasis engine: a thread-per-core io_uring runtime and the Resource Manager.
//!
//! Only this crate submits io_uring operations. Protocols (`oasis-net`) are sans-IO sessions the
//! engine drives; storage hands the engine open files and byte ranges. Every queue, pool and table
//! here has a fixed bound set at start-up.

pub mod resource;

pub use resource::{Reservation, ReserveError, Resource, ResourceLimits, ResourceManager};
