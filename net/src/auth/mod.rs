//! The User Manager's side of the Client Manager: who a request comes from and whether it may do
//! what it asks.
//!
//! - [`policy`]: the one table of roles and actions ([`policy::decide`]);
//! - [`access`]: the per-prefix read rules and `Cache-Control` (`[[access]]`);
//! - [`users`]: the in-memory account index the request path reads;
//! - [`limiter`]: the slow-down of failed authentications per client address;
//! - [`manage`]: account changes, for the CLI offline and `/api/users` (blocking: jobs only);
//! - [`token`]: bearer tokens and the hashes the catalog keeps of them;
//! - [`link`]: signing and checking the `/s/...` paths that open private objects without a
//!   login.
//!
//! `token`, `link`, `policy` and `access` are sans-IO: no socket, no file, no clock (the time and
//! the client's address are arguments). The only outside input is the operating system's random
//! source, read by [`token::generate`].

pub mod access;
pub mod limiter;
pub mod link;
pub mod manage;
pub mod policy;
pub mod token;
pub mod users;

pub use link::{LinkError, LinkKeys, Scope, SignedPath};
