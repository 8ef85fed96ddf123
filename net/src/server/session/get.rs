//! The GET|HEAD flow of a session: the object looked up in the index, its corrupt mark, the
//! preconditions and ranges planned, the file taken from the fd cache or opened by the engine,
//! the stream admitted by the Resource Manager and the response started.
//!
//! Part of [`super::HttpSession`]; the pure planning is in `server/media.rs`, the check of who
//! may read in `guard.rs` (before this runs).

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
        _net: net,
        _disk: Some(disk),
        _memory: memory,
    })
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
            // Only what a stream needs: a full disk does not stop the viewers.
            let needs = [
                Resource::MemoryBytes,
                Resource::DiskReadBps,
                Resource::OpenFiles,
                Resource::NetBps(self.info.listener),
            ];
            let external = [External::SystemMemory, External::FileDescriptors];
            if self.svc.rm.is_critical_for(&needs, &external) {
                return self.refuse("critical_event", now);
            }
            let pacing = &self.svc.cfg.pacing;
            let rate = stream_rate(&meta, name, pacing);
            let buffer_bytes = self.svc.cfg.stream_buffer_bytes;
            match admit(
                &self.svc.rm,
                self.info.listener,
                rate.rate_bps,
                buffer_bytes,
            ) {
                Ok(a) => admission = Some(a),
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
            pace = Pace::start(meta.bitrate_bps, rate, pacing, now);
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
}
