//! The log checker's parts (`tests/log_checker.rs` runs them): the fault-injecting proxy, the
//! server and shipper processes, the writers of the shipped sources, the fault schedule and the
//! verdict.

pub mod faults;
pub mod procs;
pub mod proxy;
pub mod sources;
pub mod verify;

pub(crate) use crate::support;
