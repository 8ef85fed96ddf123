//! The HTTP service's settings: what the configuration file's `[http]` section becomes, and the
//! map from the engine's monotonic time to wall time. Plain data: nothing here reads the clock
//! (the base instant is taken once by the binary) or knows about sessions.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use crate::auth::access::AccessRules;
use crate::auth::limiter::LimiterSettings;
use crate::auth::link::LinkKeys;
use crate::http::HttpLimits;

/// Pacing of streams: after `initial_burst_secs` of media at full speed, a stream is sent at its
/// object's bitrate times a factor, and may run `lead_secs` of that rate ahead of its schedule.
#[derive(Clone, Debug)]
pub struct PacingConfig {
    pub enabled: bool,
    pub initial_burst_secs: f64,
    /// How far ahead of its schedule a stream may run, in seconds of its paced rate: nginx's
    /// `limit_rate` allows one (its write filter's limit is rate x (elapsed seconds + 1)). A
    /// response that fits its burst and its lead goes in one send; 0 (the default) keeps every
    /// stream on its schedule to the piece.
    pub lead_secs: f64,
    /// Factor for progressive media (MP4, WebM, audio): players buffer ahead of the playhead.
    pub factor_progressive: f64,
    /// Factor for HLS/DASH segments: segment players estimate bandwidth from download speed, so a
    /// segment paced near its bitrate would make them switch down; generous keeps estimates high.
    pub factor_segment: f64,
}

impl Default for PacingConfig {
    fn default() -> Self {
        PacingConfig {
            enabled: true,
            initial_burst_secs: 10.0,
            lead_secs: 0.0,
            factor_progressive: 1.5,
            factor_segment: 4.0,
        }
    }
}

#[derive(Clone, Debug)]
pub struct HttpConfig {
    pub limits: HttpLimits,
    /// `[http] api_token`: a bearer token that acts as a built-in admin (set-ups from before
    /// accounts). `None`: only the catalog's accounts authenticate.
    pub api_token: Option<String>,
    /// Who may read the media under each prefix, and its `Cache-Control` (`[[access]]`, the
    /// default from `[http] public_reads`).
    pub access: AccessRules,
    /// `/metrics` for anyone, as before roles (scrapers that cannot send a token).
    pub metrics_public: bool,
    /// Failed authentications allowed per client address before it gets 429 (`[auth]`).
    pub auth_limits: LimiterSettings,
    /// `[links] keys`: what signed links are verified with; `None`: `/s/` links are refused.
    pub link_keys: Option<Arc<LinkKeys>>,
    /// A request head must arrive within this time from its first byte (408 after).
    pub header_timeout: Duration,
    /// An idle keep-alive connection is closed after this.
    pub keepalive_timeout: Duration,
    /// A client that accepts no bytes for this long is dropped.
    pub send_timeout: Duration,
    /// An upload that delivers no bytes for this long gets 408.
    pub body_timeout: Duration,
    pub keepalive_requests_max: u32,
    pub upload_bytes_max: u64,
    pub pacing: PacingConfig,
    /// Bytes one stream reserves as buffer memory (the engine's chunk size).
    pub stream_buffer_bytes: u64,
    pub retry_after_secs: u64,
    /// Objects listed by `GET /api/objects` at most.
    pub list_objects_max: usize,
    /// An object a scrub found corrupt is refused (500) rather than served.
    pub refuse_corrupt: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            limits: HttpLimits::default(),
            api_token: None,
            access: AccessRules::default(),
            metrics_public: false,
            auth_limits: LimiterSettings::default(),
            link_keys: None,
            header_timeout: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(65),
            send_timeout: Duration::from_secs(60),
            body_timeout: Duration::from_secs(60),
            keepalive_requests_max: 1000,
            upload_bytes_max: 64 << 30,
            pacing: PacingConfig::default(),
            stream_buffer_bytes: 256 * 1024,
            retry_after_secs: 2,
            list_objects_max: 10_000,
            refuse_corrupt: true,
        }
    }
}

/// Maps the engine's monotonic `now` to wall time, fixed at start-up, so sessions never read the
/// clock themselves.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    pub(super) base_instant: Instant,
    base_system: SystemTime,
}

impl WallClock {
    pub fn new(base_instant: Instant, base_system: SystemTime) -> Self {
        WallClock {
            base_instant,
            base_system,
        }
    }

    pub fn at(&self, now: Instant) -> SystemTime {
        self.base_system + now.saturating_duration_since(self.base_instant)
    }
}
