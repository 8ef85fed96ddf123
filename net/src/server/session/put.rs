//! The PUT flow of a session: refusals by the head, the upload's start (an id at hand or a job),
//! its body as it arrives, written by the engine a piece at a time, and the commit job.
//!
//! Part of [`super::HttpSession`]; the pure checks are in `server/upload.rs`.

use super::*;

impl HttpSession {
    pub(super) fn start_upload(&mut self, head: &RequestHead, name: &str, now: Instant) {
        // A refusal closes the connection after its lingering read of the body.
        let keep_alive = std::mem::replace(&mut self.keep_alive, false);
        if self.guard(head, Action::Write(name), now).is_none() {
            return;
        }
        if self.pool_refuses_write(now) {
            return;
        }
        self.keep_alive = keep_alive;
        let kind = match upload::body_kind(head, &self.svc.cfg) {
            Ok(kind) => kind,
            Err(status) => {
                self.keep_alive = false;
                self.svc.metrics.limit(limit_reason(status));
                return self.error(status, &[], false, now);
            }
        };
        let rm = &self.svc.rm;
        if rm.is_critical_for(&[Resource::DiskSpaceBytes], &[External::DiskFree]) {
            // 507 and why: the one resource an upload needs is running out.
            self.keep_alive = false;
            self.svc.metrics.refused("disk_space");
            let msg = upload::disk_full_refusal(rm.is_critical_for(&[], &[External::DiskFree]));
            return self.respond_small(507, "application/json", msg.as_bytes(), false, now);
        }
        // Memory, and a new descriptor (the temp file) outside the open-files budget.
        let externals = [External::SystemMemory, External::FileDescriptors];
        if rm.is_critical_for(&[Resource::MemoryBytes], &externals) {
            self.keep_alive = false;
            return self.refuse("critical_event", now);
        }
        if let Some(msg) = upload::content_type_refusal(head) {
            self.keep_alive = false;
            return self.respond_small(400, "application/json", msg.as_bytes(), false, now);
        }
        if let Err(msg) = upload::announced_crc32c(head) {
            self.keep_alive = false;
            return self.respond_small(400, "application/json", msg.as_bytes(), false, now);
        }
        let options = upload::upload_options(head);
        let body = BodyStart {
            kind,
            replaced: self.svc.store.lookup(name).is_some(),
            expect_continue: head.expect_continue,
        };
        // A version id comes from the block reserved in advance and the temp file is created
        // by the engine, so a worker never waits for the committer another upload's fsync
        // holds. With no id at hand (a burst used the block up), the PUT waits for a job that
        // reserves more and creates the file rather than being refused: the catalog thread is
        // busy, not broken, and the client's body waits in its socket meanwhile.
        match self.svc.store.upload_ticket(name, options.clone()) {
            Ok(Some(mut ticket)) => {
                use std::os::unix::ffi::OsStrExt;
                let path = std::ffi::CString::new(ticket.path_to_create().as_os_str().as_bytes())
                    .expect("a data directory path has no NUL byte");
                self.state = State::Creating(Box::new(Creating {
                    ticket,
                    body,
                    path: Some(path),
                }));
            }
            Ok(None) => {
                let store = Arc::clone(&self.svc.store);
                let name = name.to_string();
                let job: Job = Box::new(move || Box::new(store.create_upload(&name, options)));
                self.state = State::Job(Some(job), JobKind::Create(Box::new(body)));
            }
            Err(e) => {
                self.keep_alive = false;
                self.store_error(e, now);
            }
        }
    }

    /// The upload's temp file exists: `100 Continue` if asked for, then the body.
    pub(super) fn start_body(&mut self, upload: Upload, body: BodyStart, now: Instant) {
        if body.expect_continue {
            let mut out = Vec::with_capacity(32);
            http::continue_response(&mut out);
            self.pending = Some(out);
        }
        let receiving = Receiving::new(upload, body.kind, body.replaced, now);
        let empty = receiving.is_empty();
        self.state = State::Body(Box::new(receiving));
        if empty {
            self.finish_body();
        }
    }

    /// Feeds upload body bytes; returns how many were consumed.
    pub(super) fn feed_body(&mut self, input: &[u8], now: Instant) -> usize {
        let State::Body(r) = &mut self.state else {
            return 0;
        };
        let limit_bytes = self.svc.cfg.upload_bytes_max;
        match r.feed(input, limit_bytes, now, &mut self.unread_body) {
            Fed::More(n) => {
                self.svc.metrics.received_bytes.inc_by(n as u64);
                n
            }
            Fed::Done(n) => {
                self.svc.metrics.received_bytes.inc_by(n as u64);
                self.finish_body();
                n
            }
            Fed::Framing(e) => {
                // Malformed framing: where the body ends is unknown, so no lingering.
                self.keep_alive = false;
                self.svc.metrics.limit(limit_reason(e.status));
                self.error(e.status, &[], false, now);
                input.len()
            }
            Fed::Failed(n, e) => {
                self.svc.metrics.received_bytes.inc_by(n as u64);
                // Dropping the upload removes its temp file and releases its reservation.
                self.keep_alive = false;
                self.store_error(e, now);
                input.len()
            }
        }
    }

    pub(super) fn finish_body(&mut self) {
        let State::Body(r) = std::mem::replace(&mut self.state, State::Close) else {
            unreachable!()
        };
        self.unread_body = None;
        let (job, replaced) = r.into_job();
        self.state = State::Job(Some(job), JobKind::Finish { replaced });
    }

    /// The engine created (or failed to create) an upload's temp file.
    pub(super) fn created(&mut self, c: Creating, result: std::io::Result<File>, now: Instant) {
        match result {
            Ok(file) => self.start_body(c.ticket.into_upload(file), c.body, now),
            Err(e) => {
                let e = c.ticket.creation_failed(e);
                self.keep_alive = false;
                self.store_error(e, now);
            }
        }
    }
}
