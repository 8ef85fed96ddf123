//! The Client Manager's HTTP/1.1 session: one per connection, driven by the engine.
//!
//! A session is a state machine over the sans-IO pieces in [`crate::http`]: it parses request
//! heads from the bytes the engine hands it, decides (routes, preconditions, ranges, admission
//! control with the Resource Manager), and tells the engine what to transmit: a response head,
//! then file ranges, paced by the object's bitrate. It never touches a socket, and reads no clock:
//! the engine passes `now`; wall time for `Date` and logs is derived from it ([`WallClock`]).
//!
//! Routes: `GET|HEAD /media/<name>` (public unless configured), `PUT|DELETE /media/<name>`,
//! `GET|DELETE /api/objects?prefix=`, `GET /api/status`, `GET /api/pool` and
//! `GET|PATCH /api/config` (bearer token), `GET /metrics`, `GET /healthz`.
//! Blocking storage work (commit of an upload, delete) runs as an engine job on the catalog thread.
//!
//! Layers, each file using only those above it in this list (no cycles):
//! - `config`: `HttpConfig`, `PacingConfig`, `WallClock` (plain data);
//! - `proxy`: proxy mode's threads and the blocking exchange with a holder;
//! - `pool`: the pool's hook (`PoolHook`, `Located`) and a redirect's `Location`;
//! - `service`: `HttpService`, the shared modules and the settings generation a reload swaps;
//! - `reply`: small complete responses (error pages, JSON errors);
//! - `access_line`: what is logged of a request, and its access log line;
//! - `pacing`: a stream's reserved rate and its pace schedule;
//! - `respond`: a response on its way out, turned into transmits;
//! - `media`: the status and ranges of a `GET|HEAD /media` request (`plan_media`), its head;
//! - `api`: routes, the token check and its refusals, the `/api` JSON;
//! - `upload`: upload checks, the body as it arrives, the lingering close;
//! - `small_body`: an API request's body read whole into memory, capped;
//! - `control`: the Configuration Manager's hook (`ConfigControl`) and the `/api/config` jobs;
//! - `session`: `HttpSession`, the state machine that drives them all.

mod access_line;
mod api;
mod config;
mod control;
mod guard;
mod media;
mod pacing;
mod pool;
pub mod proxy;
mod reply;
mod respond;
mod service;
mod session;
mod small_body;
mod upload;

#[cfg(test)]
mod tests;

pub use config::{HttpConfig, PacingConfig, WallClock};
pub use control::{ConfigControl, ControlReply};
pub use pool::{redirect_location, Located, PoolHook, REDIRECT_LINK_SECS};
pub use proxy::{Proxy, ProxySettings};
pub use service::HttpService;
pub use session::HttpSession;
pub use small_body::API_BODY_BYTES_MAX;
