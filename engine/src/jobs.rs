//! The catalog thread (the Database Manager core): runs sessions' blocking jobs one at a time
//! (upload commit: fsync, rename, SQLite transaction; delete; an upload that found no version id
//! at hand: id reservation and temp file) and mails each result back to the worker that asked.
//!
//! It is the only engine thread allowed to block on the disk or the database; it must never touch
//! a ring or a connection, only the job's closure and the reply mailbox.

use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::Duration;

use crate::shared::{JobMsg, JobRejected, Msg, Shared};

/// The Database Manager core's thread: runs sessions' blocking jobs one at a time.
pub(crate) fn catalog_thread(shared: Arc<Shared>, jobs: Receiver<JobMsg>) {
    loop {
        let JobMsg {
            job,
            reply_to,
            token,
        } = match jobs.recv_timeout(Duration::from_millis(100)) {
            Ok(m) => m,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                if shared.is_shutting_down()
                    && shared.net_workers_alive.load(Ordering::Acquire) == 0
                {
                    return;
                }
                continue;
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return,
        };
        let result = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
            Ok(r) => r,
            Err(_) => {
                tracing::error!("a catalog job panicked; the request gets an error");
                Box::new(JobRejected) as crate::session::JobResult
            }
        };
        shared.send_must(reply_to as usize, Msg::JobDone { token, result });
    }
}
