//! Cron schedules in a time zone: strict five fields or @hourly/@daily/@weekly/@monthly, and
//! the exact next fire time after an instant. Pure.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ScheduleError {
    #[error("spec.schedule: invalid cron expression '{schedule}': {reason}")]
    InvalidCron { schedule: String, reason: String },
    #[error("spec.timeZone: unknown time zone '{0}'; use an IANA name such as Europe/Berlin")]
    InvalidTimeZone(String),
    #[error("spec.schedule: '{0}' never fires")]
    NeverFires(String),
}

#[derive(Clone, Debug)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
}

const MACROS: &[&str] = &["@hourly", "@daily", "@weekly", "@monthly"];

impl Schedule {
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let s = schedule.trim();
        let invalid = |reason: String| ScheduleError::InvalidCron {
            schedule: schedule.to_string(),
            reason,
        };
        if s.starts_with('@') {
            if !MACROS.contains(&s.to_ascii_lowercase().as_str()) {
                return Err(invalid(format!(
                    "supported macros are {}",
                    MACROS.join(", ")
                )));
            }
        } else if s.split_whitespace().count() != 5 {
            return Err(invalid(format!(
                "want 5 fields (minute hour day-of-month month day-of-week), got {}",
                s.split_whitespace().count()
            )));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Disallowed)
            .year(Year::Disallowed)
            .build()
            .parse(s)
            .map_err(|e| invalid(e.to_string()))?;
        let tz = match time_zone {
            None | Some("") | Some("UTC") => TimeZone::UTC,
            Some(name) => {
                TimeZone::get(name).map_err(|_| ScheduleError::InvalidTimeZone(name.to_string()))?
            }
        };
        let schedule = Schedule { cron, tz };
        // A pattern such as "0 0 31 2 *" parses but never fires.
        if schedule.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(ScheduleError::NeverFires(s.to_string()));
        }
        Ok(schedule)
    }

    /// The first fire time strictly after `t`.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let zoned = t.to_zoned(self.tz.clone());
        self.cron
            .find_next_occurrence(&zoned, false)
            .ok()
            .map(|z| z.timestamp())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn next_fire_times() {
        let cases = [
            (
                "0 */6 * * *",
                None,
                "2026-03-01T05:59:00Z",
                "2026-03-01T06:00:00Z",
            ),
            (
                "0 */6 * * *",
                None,
                "2026-03-01T06:00:00Z",
                "2026-03-01T12:00:00Z",
            ),
            (
                "@hourly",
                None,
                "2026-03-01T05:10:00Z",
                "2026-03-01T06:00:00Z",
            ),
            (
                "@daily",
                Some("Europe/Berlin"),
                "2026-03-01T12:00:00Z",
                "2026-03-01T23:00:00Z",
            ),
            // Berlin moves to summer time on 2026-03-29: midnight is 22:00 UTC from then on.
            (
                "@daily",
                Some("Europe/Berlin"),
                "2026-03-29T12:00:00Z",
                "2026-03-29T22:00:00Z",
            ),
            (
                "30 2 * * 1",
                Some("UTC"),
                "2026-03-01T00:00:00Z",
                "2026-03-02T02:30:00Z",
            ),
            (
                "@monthly",
                None,
                "2026-03-15T00:00:00Z",
                "2026-04-01T00:00:00Z",
            ),
            (
                "@weekly",
                None,
                "2026-03-01T00:00:00Z",
                "2026-03-08T00:00:00Z",
            ),
        ];
        for (cron, tz, now, want) in cases {
            let s = Schedule::parse(cron, tz).unwrap();
            assert_eq!(
                s.next_after(ts(now)),
                Some(ts(want)),
                "{cron} {tz:?} after {now}"
            );
        }
    }

    #[test]
    fn bad_schedules_say_why() {
        let cases = [
            ("* * * *", None, "want 5 fields"),
            ("0 0 * * * *", None, "want 5 fields"),
            ("61 * * * *", None, "invalid cron expression '61 * * * *'"),
            ("@reboot", None, "supported macros"),
            ("", None, "want 5 fields"),
            (
                "0 0 * * *",
                Some("Mars/Olympus"),
                "unknown time zone 'Mars/Olympus'",
            ),
            ("0 0 31 2 *", None, "never fires"),
        ];
        for (cron, tz, want) in cases {
            let err = Schedule::parse(cron, tz).unwrap_err().to_string();
            assert!(err.contains(want), "{cron}: {err}");
        }
    }
}
