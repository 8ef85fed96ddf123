//! The viewer model of `paced` mode: what one player has buffered, when it plays, when it
//! stalls, and when it asks for its next piece of media.
//!
//! An HLS viewer fetches the playlist, then its segments in order (looping over the package); a
//! segment adds its `#EXTINF` seconds to the buffer once it is complete, as segment players
//! only play whole segments. A progressive viewer fetches one file; every body byte adds
//! `8 / bitrate` seconds. Playback starts (and resumes after a stall) once `start_s` are
//! buffered and drains the buffer in real time; a buffer that runs dry while playing is a stall.
//! A viewer asks for more only while it holds less than `buffer_s`. A refused request (any
//! non-2xx) is retried after its `Retry-After` (1 s without one).
//!
//! Pure arithmetic on the `now` it is given: no clock, no sockets. It does not know servers;
//! the connection handling is in `client.rs`.

use std::time::{Duration, Instant};

/// Wait before retrying a refused request that named no `Retry-After`.
const RETRY_DEFAULT: Duration = Duration::from_secs(1);
/// Longest `Retry-After` honoured (a longer one is capped, so a run always retries).
const RETRY_MAX: Duration = Duration::from_secs(30);

/// What a viewer plays.
#[derive(Debug, Clone, PartialEq)]
pub enum MediaPlan {
    /// HLS: request 0 is the playlist, request `i + 1` segment `i` lasting `segment_s[i]`.
    Hls { segment_s: Vec<f64> },
    /// One progressive file (request 0), played at the stream's bitrate as its bytes arrive.
    Progressive,
}

/// The player's settings.
#[derive(Debug, Clone, Copy)]
pub struct PlayerCfg {
    /// Media bitrate, bits per second (the drain rate of a progressive buffer).
    pub bitrate_bps: u64,
    /// The player asks for more media while it holds less than this many seconds.
    pub buffer_s: f64,
    /// Playback starts, and resumes after a stall, with this many seconds buffered.
    pub start_s: f64,
}

/// One viewer's state and counters.
#[derive(Debug, Clone)]
pub struct Player {
    buffered_s: f64,
    playing: bool,
    /// When `buffered_s` was last brought up to date.
    at: Instant,
    /// The next request to make (an index into the run's request list).
    next: usize,
    retry_at: Option<Instant>,
    /// A response of any kind came back (the first request is made at once, later ones only
    /// with room in the buffer).
    answered: bool,
    /// Stalls: times the buffer ran dry while playing.
    pub stalls: u32,
    /// When playback first started.
    pub started_at: Option<Instant>,
    /// Media responses with a 2xx status (the playlist not included), counted when complete.
    pub media_ok: u64,
    /// A media response began with a 2xx head: the server admitted this viewer's stream.
    pub admitted: bool,
    /// Non-2xx responses, and how many of them carried a `Retry-After`.
    pub refusals: u32,
    pub refusals_with_retry_after: u32,
}

impl Player {
    /// A viewer that has nothing yet; its first request is the playlist (HLS) or the file.
    pub fn new(now: Instant) -> Self {
        Self {
            buffered_s: 0.0,
            playing: false,
            at: now,
            next: 0,
            retry_at: None,
            answered: false,
            stalls: 0,
            started_at: None,
            media_ok: 0,
            admitted: false,
            refusals: 0,
            refusals_with_retry_after: 0,
        }
    }

    /// Seconds of media held at `now` (played down since the last update).
    fn level_s(&self, now: Instant) -> f64 {
        let played = if self.playing {
            now.saturating_duration_since(self.at).as_secs_f64()
        } else {
            0.0
        };
        (self.buffered_s - played).max(0.0)
    }

    /// Plays up to `now`. Returns the instant the buffer ran dry when a stall began.
    pub fn advance(&mut self, now: Instant) -> Option<Instant> {
        let dt = now.saturating_duration_since(self.at).as_secs_f64();
        self.at = self.at.max(now);
        if !self.playing {
            return None;
        }
        if dt < self.buffered_s {
            self.buffered_s -= dt;
            return None;
        }
        let dry_at = now - Duration::from_secs_f64(dt - self.buffered_s);
        self.buffered_s = 0.0;
        self.playing = false;
        self.stalls += 1;
        Some(dry_at)
    }

    /// Adds `media_s` seconds to the buffer at `now`; playback starts or resumes when enough
    /// is held. Returns a stall that ended before the media arrived, as `advance` does.
    pub fn credit(&mut self, cfg: &PlayerCfg, media_s: f64, now: Instant) -> Option<Instant> {
        let stall = self.advance(now);
        self.buffered_s += media_s.max(0.0);
        if !self.playing && self.buffered_s >= cfg.start_s {
            self.playing = true;
            self.started_at.get_or_insert(now);
        }
        stall
    }

    /// Body bytes of a progressive file arrived.
    pub fn credit_bytes(&mut self, cfg: &PlayerCfg, bytes: u64, now: Instant) -> Option<Instant> {
        let media_s = bytes as f64 * 8.0 / cfg.bitrate_bps.max(1) as f64;
        self.credit(cfg, media_s, now)
    }

    /// Whether the viewer would make a request now (it has room in its buffer and is not
    /// waiting out a refusal).
    pub fn wants_request(&self, cfg: &PlayerCfg, now: Instant) -> bool {
        if self.retry_at.is_some_and(|t| now < t) {
            return false;
        }
        // A viewer that has nothing yet asks at once.
        !self.answered || self.level_s(now) < cfg.buffer_s
    }

    /// When a refused viewer means to retry (`None`: it is not waiting out a refusal).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// The request to make next.
    pub fn next_request(&self) -> usize {
        self.next
    }

    /// The head of the response to request `idx` arrived with `status`.
    pub fn on_head(&mut self, plan: &MediaPlan, idx: usize, status: u16) {
        let media = match plan {
            MediaPlan::Progressive => true,
            MediaPlan::Hls { .. } => idx > 0,
        };
        self.admitted |= media && (200..300).contains(&status);
    }

    /// A response to request `idx` completed with `status`. For an HLS segment this is when
    /// its media becomes playable. Returns a stall that ended meanwhile, as `advance` does.
    pub fn on_response(
        &mut self,
        plan: &MediaPlan,
        cfg: &PlayerCfg,
        idx: usize,
        status: u16,
        retry_after_s: Option<u32>,
        now: Instant,
    ) -> Option<Instant> {
        self.answered = true;
        if !(200..300).contains(&status) {
            self.refusals += 1;
            self.refusals_with_retry_after += u32::from(retry_after_s.is_some());
            let wait = retry_after_s
                .map(|s| Duration::from_secs(u64::from(s)))
                .unwrap_or(RETRY_DEFAULT)
                .min(RETRY_MAX);
            self.retry_at = Some(now + wait);
            return self.advance(now);
        }
        self.retry_at = None;
        match plan {
            MediaPlan::Progressive => {
                // Body bytes were credited as they came; the next request loops the file.
                self.media_ok += 1;
                self.next = 0;
                self.advance(now)
            }
            MediaPlan::Hls { segment_s } => {
                let n = segment_s.len();
                if idx == 0 || n == 0 {
                    self.next = 1;
                    return self.advance(now);
                }
                self.media_ok += 1;
                self.next = idx % n + 1;
                self.credit(cfg, segment_s[(idx - 1) % n], now)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CFG: PlayerCfg = PlayerCfg {
        bitrate_bps: 8_000_000,
        buffer_s: 8.0,
        start_s: 4.0,
    };

    fn hls() -> MediaPlan {
        MediaPlan::Hls {
            segment_s: vec![4.0, 4.0],
        }
    }

    #[test]
    fn hls_viewer_fetches_playlist_then_loops_segments_and_stalls_when_dry() {
        let t0 = Instant::now();
        let s = |secs: f64| t0 + Duration::from_secs_f64(secs);
        let plan = hls();
        let mut p = Player::new(t0);
        assert!(p.wants_request(&CFG, t0));
        assert_eq!(p.next_request(), 0);
        assert_eq!(p.on_response(&plan, &CFG, 0, 200, None, s(0.1)), None);
        assert_eq!(p.next_request(), 1);
        assert!(p.wants_request(&CFG, s(0.1)));
        // The first segment starts playback.
        assert_eq!(p.on_response(&plan, &CFG, 1, 200, None, s(0.5)), None);
        assert_eq!(p.started_at, Some(s(0.5)));
        assert_eq!(p.next_request(), 2);
        assert_eq!(p.on_response(&plan, &CFG, 2, 200, None, s(1.0)), None);
        // 7.5 s held: still below the 8 s target, so the loop goes back to segment 1.
        assert_eq!(p.next_request(), 1);
        assert!(p.wants_request(&CFG, s(1.0)));
        assert_eq!(p.on_response(&plan, &CFG, 1, 200, None, s(1.5)), None);
        assert!(
            !p.wants_request(&CFG, s(1.5)),
            "11 s held is above the target"
        );
        // Nothing more arrives: the buffer runs dry 11 s later, once.
        assert_eq!(p.advance(s(10.0)), None);
        let dry = p.advance(s(13.0)).expect("a stall");
        assert!((dry.duration_since(t0).as_secs_f64() - 12.5).abs() < 1e-6);
        assert_eq!(
            p.advance(s(14.0)),
            None,
            "a stalled player does not stall again"
        );
        assert_eq!(p.stalls, 1);
        // Playback resumes with the next segment; the stall count stays.
        p.on_response(&plan, &CFG, 2, 200, None, s(15.0));
        assert!(p.advance(s(16.0)).is_none());
        assert_eq!(p.stalls, 1);
        assert_eq!(p.media_ok, 4);
    }

    #[test]
    fn refusals_wait_out_retry_after_and_count_it() {
        let t0 = Instant::now();
        let plan = MediaPlan::Progressive;
        let mut p = Player::new(t0);
        p.on_response(&plan, &CFG, 0, 503, Some(2), t0);
        assert!(!p.wants_request(&CFG, t0 + Duration::from_secs(1)));
        assert!(p.wants_request(&CFG, t0 + Duration::from_secs(2)));
        p.on_response(&plan, &CFG, 0, 503, None, t0 + Duration::from_secs(2));
        assert!(p.wants_request(&CFG, t0 + Duration::from_secs(3)));
        assert_eq!((p.refusals, p.refusals_with_retry_after), (2, 1));
        assert_eq!((p.stalls, p.media_ok, p.started_at), (0, 0, None));
        p.on_head(&plan, 0, 503);
        assert!(!p.admitted);
    }

    #[test]
    fn progressive_bytes_fill_the_buffer_at_the_bitrate() {
        let t0 = Instant::now();
        let plan = MediaPlan::Progressive;
        let mut p = Player::new(t0);
        p.on_head(&plan, 0, 200);
        assert!(p.admitted);
        // 4 s of 8 Mbit/s media starts playback.
        p.credit_bytes(&CFG, 4_000_000, t0);
        assert_eq!(p.started_at, Some(t0));
        p.credit_bytes(&CFG, 5_000_000, t0);
        p.on_response(&plan, &CFG, 0, 200, None, t0);
        assert!(!p.wants_request(&CFG, t0), "9 s held");
        assert!(p.wants_request(&CFG, t0 + Duration::from_secs(2)));
        assert_eq!(p.next_request(), 0);
        assert!(p.advance(t0 + Duration::from_secs(10)).is_some());
    }
}
