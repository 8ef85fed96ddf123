//! Pacing of a stream by its object's bitrate: what bandwidth a stream reserves, and how many
//! body bytes its schedule lets it send at a given instant (a burst of `initial_burst_secs` of
//! media at once, then bitrate x factor, with a lead of `lead_secs` of that rate). Pure
//! arithmetic on the `now` it is given: it never reads the clock and never sends.

use std::time::{Duration, Instant};

use oasis_storage::{BitrateSource, ObjectMeta};

use super::config::PacingConfig;

/// A paced stream waits until it may send at least this much (or the rest of its body), so a
/// slow stream still sends in pieces worth a system call.
pub(super) const PACE_CHUNK_MIN_BYTES: u64 = 64 * 1024;

/// A paced stream sends at least this much of its schedule at once: each piece costs a send, a
/// cork and uncork, a timer wake-up and a wake-up of the receiver whatever its size, so a 4x
/// segment of 4 Mbit/s media went out in 16 pieces of 64 KiB after its burst (12.7 `sendfile`
/// and 25 `setsockopt` calls per segment, measured 2026-12-06). The lead (`lead_secs`) is what
/// a stream may run ahead of its schedule; the quantum is how finely it catches up.
pub(super) const PACE_QUANTUM: Duration = Duration::from_millis(250);

/// Whether a name is an HLS/DASH segment or playlist (paced by `factor_segment`).
pub(super) fn is_segment(name: &str) -> bool {
    let Some((_, ext)) = name.rsplit_once('.') else {
        return false;
    };
    ["ts", "m4s", "aac", "m3u8", "mpd", "cmfv", "cmfa"]
        .iter()
        .any(|segment| ext.eq_ignore_ascii_case(segment))
}

/// The bandwidth a stream reserves, and whether it is paced at that rate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct StreamRate {
    pub(super) rate_bps: u64,
    pub(super) paced: bool,
}

/// The rate of a stream of `meta` (served as `name`) under `cfg`.
pub(super) fn stream_rate(meta: &ObjectMeta, name: &str, cfg: &PacingConfig) -> StreamRate {
    // A playlist (bitrate 0) reserves its buffer but no bandwidth, and is not paced.
    let known = !matches!(
        meta.bitrate_source,
        BitrateSource::Default | BitrateSource::Playlist
    );
    let factor = if is_segment(name) {
        cfg.factor_segment
    } else {
        cfg.factor_progressive
    };
    let paced = cfg.enabled && known;
    let rate_bps = if paced {
        (meta.bitrate_bps as f64 * factor) as u64
    } else {
        meta.bitrate_bps
    };
    StreamRate { rate_bps, paced }
}

/// The schedule of a paced stream.
#[derive(Debug)]
pub(super) struct Pace {
    start: Instant,
    /// The burst and the lead: what the schedule allows at its start.
    start_bytes: u64,
    rate_bytes_per_sec: f64,
    /// The least a stream waits to send at once: [`PACE_QUANTUM`] of its rate, no more than its
    /// start (what the operator lets go at once), at least [`PACE_CHUNK_MIN_BYTES`].
    piece_bytes: u64,
}

impl Pace {
    /// The schedule of a stream of an object of `bitrate_bps` starting at `now` (`None`: it is
    /// not paced).
    pub(super) fn start(
        bitrate_bps: u64,
        rate: StreamRate,
        cfg: &PacingConfig,
        now: Instant,
    ) -> Option<Pace> {
        (rate.paced && rate.rate_bps > 0).then(|| {
            let rate_bytes_per_sec = rate.rate_bps as f64 / 8.0;
            let burst_bytes = (bitrate_bps as f64 / 8.0 * cfg.initial_burst_secs) as u64;
            let lead_bytes = (rate_bytes_per_sec * cfg.lead_secs) as u64;
            Pace {
                start: now,
                start_bytes: burst_bytes + lead_bytes,
                rate_bytes_per_sec,
                piece_bytes: ((rate_bytes_per_sec * PACE_QUANTUM.as_secs_f64()) as u64)
                    .min(burst_bytes + lead_bytes)
                    .max(PACE_CHUNK_MIN_BYTES),
            }
        })
    }
}

/// How many of `want` body bytes a stream that has sent `sent_bytes` may send now, or when to
/// ask again.
pub(super) fn pace_allows(
    pace: Option<&Pace>,
    sent_bytes: u64,
    want: u64,
    now: Instant,
) -> Result<u64, Instant> {
    let Some(p) = pace else { return Ok(want) };
    let elapsed = now.saturating_duration_since(p.start).as_secs_f64();
    let budget = p.start_bytes as f64 + p.rate_bytes_per_sec * elapsed;
    let slack = budget - sent_bytes as f64;
    let need = want.min(p.piece_bytes) as f64;
    if slack >= need {
        Ok(want.min(slack as u64))
    } else {
        let secs = (need - slack) / p.rate_bytes_per_sec;
        Err(now + Duration::from_secs_f64(secs.clamp(0.001, 60.0)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(bitrate_bps: u64, bitrate_source: BitrateSource) -> ObjectMeta {
        ObjectMeta {
            id: 1,
            name: "x".into(),
            size_bytes: 1 << 30,
            content_type: "video/mp4".into(),
            crc32c: 0,
            created_unix_ms: 0,
            bitrate_bps,
            bitrate_source,
            duration_ms: None,
        }
    }

    #[test]
    fn segments_by_extension_ignore_case() {
        for (name, segment) in [
            ("a/seg-1.ts", true),
            ("a/seg-1.M4S", true),
            ("index.m3u8", true),
            ("movie.mp4", false),
            ("ts", false),
            ("a.ts.mp4", false),
        ] {
            assert_eq!(is_segment(name), segment, "{name}");
        }
    }

    #[test]
    fn only_known_bitrates_are_paced_and_segments_get_their_factor() {
        let cfg = PacingConfig::default();
        let rate = |source, name| stream_rate(&meta(1_000_000, source), name, &cfg);
        let paced = |rate_bps| StreamRate {
            rate_bps,
            paced: true,
        };
        assert_eq!(rate(BitrateSource::Uploader, "a.mp4"), paced(1_500_000));
        assert_eq!(rate(BitrateSource::HlsExtinf, "a.ts"), paced(4_000_000));
        // Unknown: reserves the default bitrate, sent at full speed.
        let unpaced = StreamRate {
            rate_bps: 1_000_000,
            paced: false,
        };
        assert_eq!(rate(BitrateSource::Default, "a.mp4"), unpaced);
        let off = PacingConfig {
            enabled: false,
            ..PacingConfig::default()
        };
        let m = meta(1_000_000, BitrateSource::Mp4);
        assert_eq!(stream_rate(&m, "a.mp4", &off), unpaced);
        let playlist = meta(0, BitrateSource::Playlist);
        assert!(Pace::start(
            0,
            stream_rate(&playlist, "a.m3u8", &cfg),
            &cfg,
            Instant::now()
        )
        .is_none());
    }

    #[test]
    fn a_burst_then_the_rate() {
        let cfg = PacingConfig {
            initial_burst_secs: 2.0,
            lead_secs: 0.0,
            ..PacingConfig::default()
        };
        let t0 = Instant::now();
        // 8 Mbit/s x 1.5: a 2 MB burst, then 1.5 MB/s.
        let rate = stream_rate(&meta(8_000_000, BitrateSource::Uploader), "a.mp4", &cfg);
        let pace = Pace::start(8_000_000, rate, &cfg, t0).expect("paced");
        let p = Some(&pace);
        assert_eq!(pace_allows(p, 0, 1 << 30, t0), Ok(2_000_000));
        // The burst is spent: wait until a piece (a quarter second at 1.5 MB/s) is due.
        let piece = 375_000;
        let at = pace_allows(p, 2_000_000, 1 << 30, t0).expect_err("waits");
        let due = piece as f64 / 1_500_000.0;
        assert!(((at - t0).as_secs_f64() - due).abs() < 1e-6);
        assert_eq!(pace_allows(p, 2_000_000, 1 << 30, at), Ok(piece));
        // Not a byte before the piece is due.
        let early = at - Duration::from_millis(1);
        assert!(pace_allows(p, 2_000_000, 1 << 30, early).is_err());
        let later = t0 + Duration::from_secs(4);
        assert_eq!(pace_allows(p, 2_000_000, 1 << 30, later), Ok(6_000_000));
        // The end of a body smaller than a minimum piece goes as soon as it is due.
        assert_eq!(
            pace_allows(p, 2_000_000, 1000, t0 + Duration::from_millis(1)),
            Ok(1000)
        );
        // Far behind schedule, a stream is asked again within a minute.
        let far = pace_allows(p, 1 << 40, 1 << 30, t0).expect_err("waits");
        assert_eq!(far - t0, Duration::from_secs(60));
        assert_eq!(pace_allows(None, 1 << 40, 7, t0), Ok(7));
    }

    #[test]
    fn a_slow_stream_still_sends_pieces_worth_a_system_call() {
        let cfg = PacingConfig {
            initial_burst_secs: 0.0,
            lead_secs: 0.0,
            ..PacingConfig::default()
        };
        let t0 = Instant::now();
        // 100 kbit/s x 1.5: a quarter second is 4,687 bytes, below the 64 KiB floor.
        let rate = stream_rate(&meta(100_000, BitrateSource::Uploader), "a.mp4", &cfg);
        let pace = Pace::start(100_000, rate, &cfg, t0).expect("paced");
        let at = pace_allows(Some(&pace), 0, 1 << 30, t0).expect_err("waits");
        let due = PACE_CHUNK_MIN_BYTES as f64 / 18_750.0;
        assert!(((at - t0).as_secs_f64() - due).abs() < 1e-6);
        let after = at + Duration::from_micros(1);
        assert_eq!(
            pace_allows(Some(&pace), 0, 1 << 30, after),
            Ok(PACE_CHUNK_MIN_BYTES)
        );
    }

    #[test]
    fn a_stream_may_run_its_lead_ahead_and_a_short_segment_goes_whole() {
        let cfg = PacingConfig {
            initial_burst_secs: 2.0,
            lead_secs: 1.0,
            ..PacingConfig::default()
        };
        let t0 = Instant::now();
        // A 4 s segment of 1 Mbit/s media, paced at 4x (500,000 B/s): 250,000 bytes of burst
        // and 500,000 of lead cover its 500,000 bytes, so it goes in one send, as nginx's
        // limit_rate sends it.
        let rate = stream_rate(&meta(1_000_000, BitrateSource::HlsExtinf), "a.ts", &cfg);
        let pace = Pace::start(1_000_000, rate, &cfg, t0).expect("paced");
        assert_eq!(pace_allows(Some(&pace), 0, 500_000, t0), Ok(500_000));
        // A long stream gets its burst and its lead at once, then keeps its rate a lead ahead.
        assert_eq!(pace_allows(Some(&pace), 0, 1 << 30, t0), Ok(750_000));
        let at = pace_allows(Some(&pace), 750_000, 1 << 30, t0).expect_err("waits");
        assert!(
            ((at - t0).as_secs_f64() - 0.25).abs() < 1e-6,
            "a quarter second"
        );
        let t3 = t0 + Duration::from_secs(3);
        assert_eq!(
            pace_allows(Some(&pace), 750_000, 1 << 30, t3),
            Ok(1_500_000)
        );
        // A lead of 0 keeps the strict schedule: the burst only.
        let strict = PacingConfig {
            lead_secs: 0.0,
            ..cfg
        };
        let pace = Pace::start(1_000_000, rate, &strict, t0).expect("paced");
        assert_eq!(pace_allows(Some(&pace), 0, 500_000, t0), Ok(250_000));
    }
}
