//! The access log line of one response: what is kept of a request while it is answered
//! ([`ReqLog`]) and the combined-format line built from it, plus the request time. Pure: the
//! time comes in, and the line goes to the log thread through the caller; nothing here writes.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::time::{Duration, Instant, SystemTime};

use crate::access_log::push_log_time;
use crate::http::{Method, RequestHead};

/// What is logged about the request being answered. The request's own fields are kept only
/// while the access log is on (`method: None` and an empty `target` otherwise, or for a
/// request that never parsed: logged as "-").
pub(super) struct ReqLog {
    pub(super) method: Option<Method>,
    pub(super) target: String,
    pub(super) version_minor: u8,
    pub(super) referer: Option<String>,
    pub(super) user_agent: Option<String>,
    pub(super) started: Instant,
    pub(super) status: u16,
    pub(super) body_bytes: u64,
    pub(super) head_sent: bool,
    /// The account the request authenticated as (the log line's user field), once known.
    pub(super) user: Option<String>,
}

impl ReqLog {
    /// Moves what the log line needs out of `head` (nothing when the access log is off).
    pub(super) fn of(head: &mut RequestHead, logging: bool, now: Instant) -> ReqLog {
        let mut req = ReqLog::unparsed(0, now);
        req.version_minor = head.version_minor;
        if logging {
            req.method = Some(head.method.clone());
            req.target = std::mem::take(&mut head.target);
            req.referer = head.referer.take();
            req.user_agent = head.user_agent.take();
        }
        req
    }

    /// A request answered before a head was parsed (400s, 408).
    pub(super) fn unparsed(status: u16, now: Instant) -> ReqLog {
        ReqLog {
            method: None,
            target: String::new(),
            version_minor: 1,
            referer: None,
            user_agent: None,
            started: now,
            status,
            body_bytes: 0,
            head_sent: false,
            user: None,
        }
    }
}

/// The access log line of one response: the combined format plus the request time.
pub(super) fn access_line(
    ip: Option<IpAddr>,
    time: SystemTime,
    req: &ReqLog,
    elapsed: Duration,
) -> String {
    // One allocation per line: every piece is written straight into it.
    let field = |s: &Option<String>| s.as_deref().map_or(1, str::len);
    let mut line = String::with_capacity(
        112 + req.target.len() + field(&req.referer) + field(&req.user_agent),
    );
    match ip {
        Some(ip) => {
            let _ = write!(line, "{ip}");
        }
        None => line.push('-'),
    }
    line.push_str(" - ");
    line.push_str(req.user.as_deref().unwrap_or("-"));
    line.push_str(" [");
    push_log_time(&mut line, time);
    line.push_str("] \"");
    match &req.method {
        Some(method) => {
            line.push_str(method.as_str());
            line.push(' ');
            push_replacing(&mut line, &req.target, '"', "%22");
        }
        None => line.push_str("- -"),
    }
    let _ = write!(
        line,
        " HTTP/1.{}\" {} {} \"",
        req.version_minor, req.status, req.body_bytes
    );
    push_replacing(
        &mut line,
        req.referer.as_deref().unwrap_or("-"),
        '"',
        "\\\"",
    );
    line.push_str("\" \"");
    push_replacing(
        &mut line,
        req.user_agent.as_deref().unwrap_or("-"),
        '"',
        "\\\"",
    );
    let _ = writeln!(line, "\" {:.3}", elapsed.as_secs_f64());
    line
}

/// Appends `text` with every `from` replaced by `to` (`str::replace` without its own `String`).
fn push_replacing(out: &mut String, text: &str, from: char, to: &str) {
    let mut pieces = text.split(from);
    if let Some(first) = pieces.next() {
        out.push_str(first);
    }
    for piece in pieces {
        out.push_str(to);
        out.push_str(piece);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::UNIX_EPOCH;

    /// The line as it was built before it was written piece by piece (one `String` per piece).
    fn reference_line(
        ip: Option<IpAddr>,
        time: SystemTime,
        req: &ReqLog,
        elapsed: Duration,
    ) -> String {
        let ip = ip.map(|ip| ip.to_string()).unwrap_or_else(|| "-".into());
        let esc = |s: &Option<String>| s.as_deref().unwrap_or("-").replace('"', "\\\"");
        let (method, target) = match &req.method {
            Some(m) => (m.as_str().to_owned(), req.target.replace('"', "%22")),
            None => ("-".to_owned(), "-".to_owned()),
        };
        format!(
            "{ip} - - [{}] \"{} {} HTTP/1.{}\" {} {} \"{}\" \"{}\" {:.3}\n",
            crate::access_log::log_time(time),
            method,
            target,
            req.version_minor,
            req.status,
            req.body_bytes,
            esc(&req.referer),
            esc(&req.user_agent),
            elapsed.as_secs_f64()
        )
    }

    proptest! {
        #[test]
        fn access_line_matches_the_reference(
            v6 in any::<bool>(),
            ip in any::<u128>(),
            secs in 0u64..100_000_000_000,
            method in proptest::option::of(prop_oneof![
                Just(Method::Get),
                Just(Method::Head),
                "[A-Z]{1,7}".prop_map(|m| Method::from_token(&m)),
            ]),
            target in "[/a-z\"?=%]{0,20}",
            referer in proptest::option::of("[ -~]{0,20}"),
            user_agent in proptest::option::of("[ -~\"]{0,20}"),
            status in 100u16..600,
            body_bytes in any::<u64>(),
            elapsed_us in 0u64..10_000_000_000,
        ) {
            let ip = if v6 {
                IpAddr::from(ip.to_be_bytes())
            } else {
                IpAddr::from((ip as u32).to_be_bytes())
            };
            let now = Instant::now();
            let mut req = ReqLog::unparsed(status, now);
            req.method = method;
            req.target = target;
            req.referer = referer;
            req.user_agent = user_agent;
            req.body_bytes = body_bytes;
            let time = UNIX_EPOCH + Duration::from_secs(secs);
            let elapsed = Duration::from_micros(elapsed_us);
            for ip in [Some(ip), None] {
                prop_assert_eq!(
                    access_line(ip, time, &req, elapsed),
                    reference_line(ip, time, &req, elapsed)
                );
            }
        }
    }
}
