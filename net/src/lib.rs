//! Oasis Client Manager: the HTTP/1.1 side of the server.
//!
//! `http` holds the sans-IO protocol pieces (parsing, range arithmetic, conditional requests,
//! response framing). `server` is the per-connection session the engine drives: routes,
//! admission control, pacing, uploads. `metrics` and `access_log` are what operators read.
//! `auth` holds the User Manager's pure cores: API tokens and signed links.
//! Nothing in this crate submits io_uring operations or reads the clock: the engine moves the
//! bytes and passes the time in.
#![forbid(unsafe_code)]

pub mod access_log;
pub mod auth;
pub mod http;
pub mod metrics;
pub mod server;

pub use access_log::{AccessLog, LogTarget};
pub use metrics::Metrics;
pub use server::{
    redirect_location, ConfigControl, ControlReply, HttpConfig, HttpService, Located, PacingConfig,
    PoolHook, Proxy, ProxySettings, WallClock, API_BODY_BYTES_MAX, REDIRECT_LINK_SECS,
};
