//! Cron schedules in a time zone: strict five fields or one of the macros a Kubernetes CronJob
//! accepts, and the exact next fire time after an instant. Pure.

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

/// The macros and the five fields each stands for, as Kubernetes reads them (robfig/cron v3,
/// which CronJob uses). Expanded here rather than by croner, which lacks `@midnight`, so that
/// every macro means what its row says whatever croner's own table holds.
const MACROS: &[(&str, &str)] = &[
    ("@yearly", "0 0 1 1 *"),
    ("@annually", "0 0 1 1 *"),
    ("@monthly", "0 0 1 * *"),
    ("@weekly", "0 0 * * 0"),
    ("@daily", "0 0 * * *"),
    ("@midnight", "0 0 * * *"),
    ("@hourly", "0 * * * *"),
];

impl Schedule {
    pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<Schedule, ScheduleError> {
        let s = schedule.trim();
        let invalid = |reason: String| ScheduleError::InvalidCron {
            schedule: schedule.to_string(),
            reason,
        };
        let s = if s.starts_with('@') {
            // Case-insensitive, as this field always was; Kubernetes wants lower case.
            let Some((_, fields)) = MACROS.iter().find(|(m, _)| m.eq_ignore_ascii_case(s)) else {
                let names: Vec<&str> = MACROS.iter().map(|(m, _)| *m).collect();
                return Err(invalid(format!(
                    "supported macros are {}",
                    names.join(", ")
                )));
            };
            fields
        } else if s.split_whitespace().count() != 5 {
            return Err(invalid(format!(
                "want 5 fields (minute hour day-of-month month day-of-week), got {}",
                s.split_whitespace().count()
            )));
        } else {
            s
        };
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
        let parsed = Schedule { cron, tz };
        // A pattern such as "0 0 31 2 *" parses but never fires.
        if parsed.next_after(Timestamp::UNIX_EPOCH).is_none() {
            return Err(ScheduleError::NeverFires(schedule.trim().to_string()));
        }
        Ok(parsed)
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

    /// Every macro Kubernetes accepts, from one fixed instant, in UTC and in a zone whose
    /// midnight is not UTC's: each fires where the five fields it stands for fire.
    #[test]
    fn macros_fire_as_kubernetes_expands_them() {
        // A Wednesday, mid-afternoon, so that no macro's next time is trivially "now + 1".
        let now = "2026-05-13T14:25:00Z";
        let cases = [
            ("@yearly", None, "2027-01-01T00:00:00Z"),
            ("@annually", None, "2027-01-01T00:00:00Z"),
            ("@monthly", None, "2026-06-01T00:00:00Z"),
            ("@weekly", None, "2026-05-17T00:00:00Z"),
            ("@daily", None, "2026-05-14T00:00:00Z"),
            ("@midnight", None, "2026-05-14T00:00:00Z"),
            ("@hourly", None, "2026-05-13T15:00:00Z"),
            ("@YEARLY", None, "2027-01-01T00:00:00Z"),
            ("  @midnight ", None, "2026-05-14T00:00:00Z"),
            // New York is at UTC-4 in May and UTC-5 in January.
            ("@yearly", Some("America/New_York"), "2027-01-01T05:00:00Z"),
            (
                "@annually",
                Some("America/New_York"),
                "2027-01-01T05:00:00Z",
            ),
            (
                "@midnight",
                Some("America/New_York"),
                "2026-05-14T04:00:00Z",
            ),
            ("@daily", Some("America/New_York"), "2026-05-14T04:00:00Z"),
            // 14:25 UTC is 23:25 in Tokyo (UTC+9): its midnight comes 35 minutes later.
            ("@midnight", Some("Asia/Tokyo"), "2026-05-13T15:00:00Z"),
            ("@yearly", Some("Asia/Tokyo"), "2026-12-31T15:00:00Z"),
        ];
        for (cron, tz, want) in cases {
            let s = Schedule::parse(cron, tz).unwrap_or_else(|e| panic!("{cron}: {e}"));
            assert_eq!(
                s.next_after(ts(now)),
                Some(ts(want)),
                "{cron} {tz:?} after {now}"
            );
        }
        // A macro and its fields are one schedule.
        for (name, fields) in MACROS {
            let (a, b) = (
                Schedule::parse(name, Some("Europe/Berlin")).unwrap(),
                Schedule::parse(fields, Some("Europe/Berlin")).unwrap(),
            );
            let mut t = ts(now);
            for _ in 0..5 {
                let next = a.next_after(t);
                assert_eq!(next, b.next_after(t), "{name} after {t}");
                t = next.unwrap();
            }
        }
    }

    #[test]
    fn bad_schedules_say_why() {
        let cases = [
            ("* * * *", None, "want 5 fields"),
            ("0 0 * * * *", None, "want 5 fields"),
            ("61 * * * *", None, "invalid cron expression '61 * * * *'"),
            ("@reboot", None, "supported macros"),
            ("@every 1h", None, "supported macros"),
            ("@yearly 0", None, "supported macros"),
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
