//! The GET|HEAD flow of a session: the object looked up in the index, its corrupt mark, the
//! preconditions and ranges planned, the file taken from the fd cache or opened by the engine,
//! the stream admitted by the Resource Manager and the response started.
//!
//! Part of [`super::HttpSession`]; the pure planning is in `server/media.rs`, the check of who
//! may read in `guard.rs` (before this runs).

use prometheus_client::metrics::gauge::Gauge;

use super::*;

/// Reserves what a stream needs before its first byte: bandwidth on its listen address and
/// from the disk, and its buffer.
pub(super) fn admit(
    rm: &Arc<ResourceManager>,
    listener: u16,
    rate_bps: u64,
    buffer_bytes: u64,
) -> Result<Admission, ReserveError> {
    let net = rm.reserve(Resource::NetBps(listener), rate_bps)?;
    let disk = rm.reserve(Resource::DiskReadBps, rate_bps)?;
    let memory = rm.reserve(Resource::MemoryBytes, buffer_bytes)?;
    Ok(Admission {
        _net: Some(net),
        _disk: Some(disk),
        _memory: memory,
    })
}

/// A viewer admitted for an HLS/DASH package: its connection holds bandwidth at the media's
/// bitrate x 1 (what a player needs to keep up) between segments, so its next segment is never
/// refused for bandwidth that newer viewers took meanwhile. Released when the connection closes,
/// when it streams something else that reserves bandwidth, or `grace` after its last segment;
/// shrunk when the player switches to a lower variant.
pub(super) struct Viewer {
    net: Reservation,
    disk: Reservation,
    /// How long the hold outlives the start of its last segment: [`GRACE_SEGMENTS`] times that
    /// segment's media duration, at most the keep-alive timeout. Other requests (a playlist,
    /// a HEAD, a 304) do not extend it.
    pub(super) grace: std::time::Duration,
    /// When its last segment was admitted.
    pub(super) last_segment: Instant,
    /// `oasis_viewers_held`, counted up while this hold lives.
    held: Gauge,
}

impl Drop for Viewer {
    fn drop(&mut self) {
        self.held.dec();
    }
}

/// A viewer's hold lasts this many media durations of its last segment from that segment's
/// start: a player fetches about one segment per segment duration, sent at 1x at the slowest.
const GRACE_SEGMENTS: f64 = 3.0;

impl Viewer {
    /// Whether the hold already covers a segment of `bitrate_bps`.
    pub(super) fn covers(&self, bitrate_bps: u64) -> bool {
        self.net.amount() >= bitrate_bps
    }

    /// Holds `bitrate_bps` for a viewer on `listener` whose segment starts `now`; `held` is the
    /// connection's hold so far, grown (a switch to a higher variant) or kept as it is. A new
    /// hold counts in `viewers_held` until it is dropped.
    pub(super) fn admit(
        rm: &ResourceManager,
        listener: u16,
        bitrate_bps: u64,
        held: Option<Viewer>,
        viewers_held: &Gauge,
        now: Instant,
    ) -> Result<Viewer, (ReserveError, Option<Viewer>)> {
        let Some(mut v) = held else {
            let net = rm
                .reserve(Resource::NetBps(listener), bitrate_bps)
                .map_err(|e| (e, None))?;
            let disk = rm
                .reserve(Resource::DiskReadBps, bitrate_bps)
                .map_err(|e| (e, None))?;
            viewers_held.inc();
            return Ok(Viewer {
                net,
                disk,
                grace: std::time::Duration::ZERO,
                last_segment: now,
                held: viewers_held.clone(),
            });
        };
        let held_bps = v.net.amount();
        if bitrate_bps > held_bps {
            let more = bitrate_bps - held_bps;
            if let Err(e) = v.net.grow(more) {
                return Err((e, Some(v)));
            }
            if let Err(e) = v.disk.grow(more) {
                v.net.shrink(more);
                return Err((e, Some(v)));
            }
        } else if bitrate_bps > 0 && bitrate_bps < held_bps {
            // A switch to a lower variant: what the higher one held goes back.
            let less = held_bps - bitrate_bps;
            v.net.shrink(less);
            v.disk.shrink(less);
        }
        v.last_segment = now;
        Ok(v)
    }
}

/// The part of a segment's pace above bitrate x 1 (net, disk), reserved only out of spare
/// budget (below the accounts' warning level): `None` when it is not there, and the segment is
/// paced at its bitrate. The speed-up never takes what admissions need.
fn reserve_spare(
    rm: &ResourceManager,
    listener: u16,
    extra_bps: u64,
) -> Option<(Reservation, Reservation)> {
    let net = rm.reserve_spare(Resource::NetBps(listener), extra_bps)?;
    let disk = rm.reserve_spare(Resource::DiskReadBps, extra_bps)?;
    Some((net, disk))
}

impl HttpSession {
    /// A GET whose object's content file is gone when it is opened: deleted or replaced
    /// between the lookup and the open, or removed behind the server's back. For this request
    /// the object does not exist.
    pub(super) fn file_gone(&mut self, name: &str, now: Instant) {
        tracing::warn!("{name}: its content file is gone; answering 404");
        self.error(404, &[], false, now)
    }

    pub(super) fn serve_media(
        &mut self,
        head: &RequestHead,
        name: &str,
        opened: Opened,
        now: Instant,
    ) {
        let head_only = head.method == Method::Head;
        let Some(meta) = self.svc.store.lookup(name) else {
            if !self.locate_in_pool(head, name, None) {
                self.error(404, &[], head_only, now);
            }
            return;
        };
        if self.svc.store.is_corrupt(&meta) {
            // Never served as good: refused, or served and counted, by policy.
            if self.svc.cfg.refuse_corrupt {
                self.svc.metrics.corrupt_request("refused");
                tracing::warn!("{name}: refused: a scrub found its bytes changed on disk (corrupt_policy = \"refuse\")");
                return self.error(500, &[], head_only, now);
            }
            if matches!(opened, Opened::NotYet) {
                // Counted once per request (a cache miss enters here again once opened).
                self.svc.metrics.corrupt_request("served");
            }
        }
        let size = meta.size_bytes;
        let (status, spec) = match plan_media(&meta, head, self.svc.cfg.limits.ranges_count_max) {
            MediaPlan::Send { status, spec } => (status, spec),
            MediaPlan::NotModified => {
                let date = self.date(now);
                let framing = Framing {
                    date: date.as_str(),
                    keep_alive: self.keep_alive,
                    cache_control: self.svc.cfg.access.rule_for(name).cache_control(),
                };
                let out = not_modified(&meta, framing);
                return self.respond_bytes(304, out, 0, now);
            }
            MediaPlan::PreconditionFailed => return self.error(412, &[], head_only, now),
            MediaPlan::Unsatisfiable => {
                let range = [("Content-Range", format!("bytes */{size}"))];
                return self.error(416, &range, head_only, now);
            }
        };
        // The file, before anything is reserved: a descriptor the cache does not hold is opened
        // by the engine (a cold directory lookup must not stall the worker), then the request is
        // served again from the top.
        let mut file = None;
        if !head_only && size > 0 {
            let first_try = matches!(opened, Opened::NotYet);
            file = match opened {
                Opened::File(id, f) if id == meta.id => Some(f),
                _ => self.svc.store.cached_file(&meta),
            };
            // Opening a file takes an `OpenFiles` reservation: refused while that account is
            // critical. (A descriptor shortage of the process refuses only a new connection's
            // first stream, below: this one holds its socket, open files have their own budget.)
            if file.is_none() && self.svc.rm.is_critical_for(&[Resource::OpenFiles], &[]) {
                return self.refuse("critical_event", now);
            }
            if file.is_none() && first_try {
                let path = self.svc.store.content_path(&meta).and_then(|p| {
                    std::ffi::CString::new(std::os::unix::ffi::OsStringExt::into_vec(
                        p.into_os_string(),
                    ))
                    .ok()
                });
                if let Some(path) = path {
                    self.state = State::Opening(Box::new(Opening {
                        head: head.clone(),
                        name: name.to_owned(),
                        meta,
                        path: Some(path),
                    }));
                    return;
                }
            }
        }

        // Admission control: a stream with a body reserves before its first byte.
        let mut admission = None;
        let mut pace = None;
        if !head_only && size > 0 {
            // Only what a stream needs: a full disk does not stop the viewers, and a descriptor
            // shortage refuses the first stream of a new connection, not a connection that
            // was served before (it holds its socket; `/healthz` and the API are answered on
            // any). A viewer whose hold covers this segment takes no more bandwidth, nor does
            // a playlist: a bandwidth event refuses new viewers, not an admitted one's next
            // request.
            let rm = &self.svc.rm;
            if self.requests <= 1 && rm.is_critical_for(&[], &[External::FileDescriptors]) {
                return self.refuse("critical_event", now);
            }
            let rate = stream_rate(&meta, name, &self.svc.cfg.pacing);
            let segment = rate.paced && is_segment(name);
            let held = segment
                && self
                    .viewer
                    .as_ref()
                    .is_some_and(|v| v.covers(meta.bitrate_bps));
            let bandwidth = [Resource::DiskReadBps, Resource::NetBps(self.info.listener)];
            let needs: &[Resource] = if held || rate.rate_bps == 0 {
                &[]
            } else {
                &bandwidth
            };
            if rm.is_critical_for(&[Resource::MemoryBytes], &[External::SystemMemory])
                || rm.is_critical_for(needs, &[])
            {
                return self.refuse("critical_event", now);
            }
            let admitted = if segment {
                self.admit_segment(&meta, rate, now)
            } else {
                // Another stream that reserves bandwidth of its own ends the connection's hold
                // as a viewer; a playlist (live players reload it between segments), an init
                // segment or a key, which reserve none, keep it.
                if rate.rate_bps > 0 {
                    self.viewer = None;
                }
                admit(
                    &self.svc.rm,
                    self.info.listener,
                    rate.rate_bps,
                    self.svc.cfg.stream_buffer_bytes,
                )
                .map(|a| (a, rate))
            };
            match admitted {
                Ok((a, rate)) => {
                    admission = Some(a);
                    pace = Pace::start(meta.bitrate_bps, rate, &self.svc.cfg.pacing, now);
                }
                Err(e) => {
                    tracing::debug!("stream of {name} refused: {e}");
                    // A pool hands the viewer to a holder with headroom instead.
                    let reason = e.resource.to_string();
                    if !self.locate_in_pool(head, name, Some(&reason)) {
                        self.refuse(&reason, now);
                    }
                    return;
                }
            }
        }
        let file = if head_only || size == 0 {
            None
        } else if file.is_some() {
            file
        } else {
            self.svc.metrics.file_opened(false);
            match self.svc.store.open_file(&meta) {
                Ok(f) => Some(f),
                Err(StoreError::NotFound { .. }) => return self.file_gone(name, now),
                Err(e) => {
                    tracing::error!("cannot open {name}: {e}");
                    let status = if matches!(e, StoreError::Reserve(_)) {
                        503
                    } else {
                        500
                    };
                    return self.error(status, &[], false, now);
                }
            }
        };
        let boundary_seed = match spec {
            RangeSpec::Multi(_) => {
                meta.id ^ (now.saturating_duration_since(self.svc.started).as_nanos() as u64)
            }
            _ => 0,
        };
        let date = self.date(now);
        let response = media_response(
            &meta,
            status,
            spec,
            file,
            boundary_seed,
            Framing {
                date: date.as_str(),
                keep_alive: self.keep_alive,
                cache_control: self.svc.cfg.access.rule_for(name).cache_control(),
            },
        );
        if let Some(r) = &mut self.req {
            r.status = status;
            r.body_bytes = if head_only { 0 } else { response.body_bytes };
        }
        let respond = Respond {
            head: Some(response.head),
            body: response.body,
            close_after: !self.keep_alive,
            _admission: admission,
            pace,
            body_sent: 0,
            last_progress: now,
        };
        if respond.streams() {
            self.svc.metrics.active_streams.inc();
        }
        self.state = State::Respond(Box::new(respond));
    }

    /// Admits a paced segment: the connection's hold as a viewer at the media's bitrate x 1
    /// (taken at its first segment, kept for the next), its buffer, and the pace above 1x up
    /// to `factor_segment` only out of bandwidth that is free (else it is sent at 1x, which
    /// still keeps the player up). So a viewer once admitted is not refused its next segment.
    /// Every segment starts with the pacing burst, as before: at exactly 1x a fetch would take
    /// a whole segment duration plus the round trip and the player's buffer could only shrink
    /// (a run of scenario 5 without it stalled from 4,054 viewers at 4 Mbit/s); the burst is
    /// the headroom a viewer needs, shared with the others since bursts do not all coincide.
    fn admit_segment(
        &mut self,
        meta: &ObjectMeta,
        rate: StreamRate,
        now: Instant,
    ) -> Result<(Admission, StreamRate), ReserveError> {
        let rm = Arc::clone(&self.svc.rm);
        let listener = self.info.listener;
        let bitrate = meta.bitrate_bps;
        // The buffer first: a segment refused for memory leaves the hold as it was.
        let memory = rm.reserve(Resource::MemoryBytes, self.svc.cfg.stream_buffer_bytes)?;
        let held = self.viewer.take();
        let gauge = &self.svc.metrics.viewers_held;
        let mut viewer = match Viewer::admit(&rm, listener, bitrate, held, gauge, now) {
            Ok(v) => v,
            Err((e, held)) => {
                self.viewer = held;
                return Err(e);
            }
        };
        // A few of the segment's media durations from its start (a bitrate of 0 or a huge
        // segment: the keep-alive).
        let keepalive = self.svc.cfg.keepalive_timeout;
        let media_secs = meta.size_bytes as f64 * 8.0 / bitrate as f64;
        viewer.grace = std::time::Duration::try_from_secs_f64(media_secs * GRACE_SEGMENTS)
            .map_or(keepalive, |d| d.min(keepalive));
        self.viewer = Some(viewer);
        let extra = rate.rate_bps.saturating_sub(bitrate);
        let spare = (extra > 0)
            .then(|| reserve_spare(&rm, listener, extra))
            .flatten();
        let (net, disk, rate) = match spare {
            Some((net, disk)) => (Some(net), Some(disk), rate),
            None => {
                if extra > 0 {
                    self.svc.metrics.segment_paced_at_bitrate();
                }
                let one = StreamRate {
                    rate_bps: bitrate,
                    paced: true,
                };
                (None, None, one)
            }
        };
        Ok((
            Admission {
                _net: net,
                _disk: disk,
                _memory: memory,
            },
            rate,
        ))
    }
}
