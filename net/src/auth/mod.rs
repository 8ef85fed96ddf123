//! The User Manager's pure cores: API tokens and signed links for private media.
//!
//! [`token`] makes bearer tokens and the hashes a catalog keeps of them; [`link`] signs and
//! checks the `/s/...` paths that open private objects without a login. Everything here is
//! sans-IO: no socket, no file, no clock (the current time and the client's address are
//! arguments), and no policy (who may sign what is decided elsewhere). The only outside input
//! is the operating system's random source, read by [`token::generate`].

pub mod link;
pub mod token;

pub use link::{LinkError, LinkKeys, Scope, SignedPath};
