//! A `tracing` layer that ships a program's events as a stream of text lines.
//!
//! Each event becomes one line, `2026-11-30T04:56:12.345Z WARN target: message key=value`, put
//! on a [`LineSender`] (a [`Shipper::lines`](super::Shipper::lines) queue): the thread that
//! logs never waits for the network; when the queue is full the line is dropped and counted.
//! Which events are shipped is the layer's filter's business (wrap it with
//! `tracing_subscriber::Layer::with_filter`); this module formats and queues, nothing else.

use std::fmt::Write as _;
use std::time::SystemTime;

use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

use super::reader::LineSender;

/// The layer: formats each event it is given and queues the line.
#[derive(Clone, Debug)]
pub struct ShipLayer {
    lines: LineSender,
}

impl ShipLayer {
    /// A layer that queues its lines on `lines`.
    pub fn new(lines: LineSender) -> ShipLayer {
        ShipLayer { lines }
    }
}

impl<S: Subscriber> Layer<S> for ShipLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let line = format_event(event, SystemTime::now());
        self.lines.send(line.as_bytes());
    }
}

/// One event as a line (with its newline): UTC time to the millisecond, level, target, the
/// message, then the other fields as `name=value` (strings quoted).
pub fn format_event(event: &Event<'_>, now: SystemTime) -> String {
    let meta = event.metadata();
    let mut line = String::with_capacity(128);
    push_utc(&mut line, now);
    let _ = write!(line, " {} {}:", meta.level(), meta.target());
    let mut fields = Fields {
        message: String::new(),
        rest: String::new(),
    };
    event.record(&mut fields);
    if !fields.message.is_empty() {
        line.push(' ');
        line.push_str(&fields.message);
    }
    line.push_str(&fields.rest);
    // One event, one line: a newline inside a message would split it.
    let mut line = line.replace('\n', "\\n");
    line.push('\n');
    line
}

struct Fields {
    message: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message.push_str(value);
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.message, "{value:?}");
        } else {
            let _ = write!(self.rest, " {}={value:?}", field.name());
        }
    }
}

/// Appends `t` as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub fn push_utc(out: &mut String, t: SystemTime) {
    let since = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (y, m, d) = date_of_day((secs / 86_400) as i64);
    let s = secs % 86_400;
    let _ = write!(
        out,
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        since.subsec_millis()
    );
}

/// The civil date (proleptic Gregorian) of a day counted from 1970-01-01, by whole 400-year
/// eras (146,097 days each) counted from 0000-03-01, so February ends each computed year.
fn date_of_day(days: i64) -> (i64, u32, u32) {
    let shifted = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * month_from_march + 2) / 5 + 1) as u32;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt;

    #[test]
    fn dates_are_civil() {
        let at = |secs: u64| {
            let mut s = String::new();
            push_utc(&mut s, SystemTime::UNIX_EPOCH + Duration::from_secs(secs));
            s
        };
        assert_eq!(at(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(at(1_795_323_372), "2026-11-22T04:56:12.000Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00.000Z", "a leap day");
        assert_eq!(
            at(4_107_542_399),
            "2100-02-28T23:59:59.000Z",
            "2100 is not leap"
        );
        assert_eq!(at(4_107_542_400), "2100-03-01T00:00:00.000Z");
        let mut s = String::new();
        push_utc(
            &mut s,
            SystemTime::UNIX_EPOCH + Duration::from_millis(1_500),
        );
        assert_eq!(s, "1970-01-01T00:00:01.500Z");
    }

    #[test]
    fn events_become_lines_on_the_queue_and_a_full_queue_drops() {
        let (tx, mut rx) = super::super::reader::line_queue(2, 1 << 20);
        let subscriber = tracing_subscriber::registry().with(ShipLayer::new(tx.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(target: "oasis::test", code = 507, path = "a b", "disk full\nsecond line");
            tracing::info!(target: "oasis::test", "reloaded");
            // The queue holds two lines: the third is dropped, and the caller did not wait.
            tracing::info!(target: "oasis::test", "dropped");
        });
        assert_eq!(tx.dropped(), 1);
        drop(tx);
        let mut text = String::new();
        rx.read_to_string(&mut text).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        assert!(
            lines[0].ends_with(" WARN oasis::test: disk full\\nsecond line code=507 path=\"a b\""),
            "{}",
            lines[0]
        );
        assert!(
            lines[1].ends_with(" INFO oasis::test: reloaded"),
            "{}",
            lines[1]
        );
        assert_eq!(
            lines[0].as_bytes()[10],
            b'T',
            "starts with the time: {}",
            lines[0]
        );
    }
}
