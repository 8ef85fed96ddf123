//! The User Manager's side of the Client Manager: who a request comes from and whether it may do
//! what it asks. `policy` is the one table of roles and actions; `access` the per-prefix read
//! rules; `users` the in-memory account index; `limiter` the slow-down of failed
//! authentications; `token` and `link` the pure cores of tokens and signed links.

pub mod access;
pub mod limiter;
pub mod policy;
// pub mod users; (after token lands)
