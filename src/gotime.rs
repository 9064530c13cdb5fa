//! Durations and timestamps read exactly as Go reads them, because Kubernetes' CEL (cel-go)
//! reads `duration(s)` with `time.ParseDuration` and `timestamp(s)` with
//! `time.Parse(time.RFC3339, s)`: a policy must accept and mean what kube-apiserver would.
//! Each step below follows Go's `time/format.go`, including its leniencies (a one-digit hour, a
//! comma before the fraction, a zone offset of +24:00) and its refusals (a space or lower-case
//! `t` for `T`, `24hours`, `1h-30m`). Pure.
//!
//! Written back too, where cel-go shows Go's text to a policy (`string.format`): a timestamp
//! as `time.RFC3339Nano` formats it, a duration as cel-go's `string(duration)`.

use chrono::{Datelike as _, Offset as _, Timelike as _, Utc};
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum GoTimeError {
    #[error("cannot parse duration '{input}': {reason}")]
    Duration { input: String, reason: String },
    #[error("cannot parse timestamp '{input}': {reason}")]
    Timestamp { input: String, reason: String },
}

const MAX: u64 = 1 << 63;

/// `time.ParseDuration`: `[-+]?([0-9]*(\.[0-9]*)?[a-z]+)+`, or `0` alone, in signed 64-bit
/// nanoseconds; anything past that range is an error.
pub fn parse_duration(input: &str) -> Result<i64, GoTimeError> {
    let err = |reason: &str| GoTimeError::Duration {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let invalid = || err("want Go syntax such as 90s, 1h30m or 1.5h");
    let mut s = input;
    let mut neg = false;
    if let Some(rest) = s.strip_prefix('-') {
        (neg, s) = (true, rest);
    } else if let Some(rest) = s.strip_prefix('+') {
        s = rest;
    }
    if s == "0" {
        return Ok(0);
    }
    if s.is_empty() {
        return Err(invalid());
    }
    let mut d: u64 = 0;
    while !s.is_empty() {
        let b = s.as_bytes();
        if !(b[0] == b'.' || b[0].is_ascii_digit()) {
            return Err(invalid());
        }
        let before = s.len();
        let (v, rest) = leading_int(s).ok_or_else(|| err("out of range"))?;
        s = rest;
        let pre = before != s.len();
        let (mut f, mut scale, mut post) = (0u64, 1f64, false);
        if let Some(rest) = s.strip_prefix('.') {
            let before = rest.len();
            (f, scale, s) = leading_fraction(rest);
            post = before != s.len();
        }
        if !pre && !post {
            return Err(invalid());
        }
        // The unit runs to the next digit or dot; both are ASCII, so the cut is on a char
        // boundary.
        let i = s
            .bytes()
            .position(|c| c == b'.' || c.is_ascii_digit())
            .unwrap_or(s.len());
        if i == 0 {
            return Err(err("missing unit (ns, us, ms, s, m or h)"));
        }
        let (u, rest) = s.split_at(i);
        s = rest;
        let unit: u64 = match u {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => {
                return Err(err(&format!("unknown unit '{u}' (ns, us, ms, s, m or h)")));
            }
        };
        if v > MAX / unit {
            return Err(err("out of range"));
        }
        let mut v = v * unit;
        if f > 0 {
            // Go computes the fraction in float64 and truncates; so must this, to the
            // nanosecond. The sum cannot wrap: v <= 2^63 and the fraction is below one hour.
            v += (f as f64 * (unit as f64 / scale)) as u64;
            if v > MAX {
                return Err(err("out of range"));
            }
        }
        // Both are at most 2^63, so the sum fits in u64 only when checked.
        d = d.checked_add(v).ok_or_else(|| err("out of range"))?;
        if d > MAX {
            return Err(err("out of range"));
        }
    }
    if neg {
        // d <= 2^63, so the negation is at least i64::MIN; 2^63 itself wraps to exactly it.
        return Ok((d as i64).wrapping_neg());
    }
    i64::try_from(d).map_err(|_| err("out of range"))
}

/// Go's `leadingInt`: the leading digits, or None past 2^63.
fn leading_int(s: &str) -> Option<(u64, &str)> {
    let mut x: u64 = 0;
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    for c in s[..end].bytes() {
        if x > MAX / 10 {
            return None;
        }
        x = x * 10 + u64::from(c - b'0');
        if x > MAX {
            return None;
        }
    }
    Some((x, &s[end..]))
}

/// Go's `leadingFraction`: the leading digits and their scale, keeping only as many as fit.
fn leading_fraction(s: &str) -> (u64, f64, &str) {
    let (mut x, mut scale, mut overflow) = (0u64, 1f64, false);
    let end = s
        .bytes()
        .position(|c| !c.is_ascii_digit())
        .unwrap_or(s.len());
    for c in s[..end].bytes() {
        if overflow {
            continue;
        }
        if x > (MAX - 1) / 10 {
            overflow = true;
            continue;
        }
        let y = x * 10 + u64::from(c - b'0');
        if y > MAX {
            overflow = true;
            continue;
        }
        x = y;
        scale *= 10.0;
    }
    (x, scale, &s[end..])
}

/// An instant as `time.Parse(time.RFC3339, s)` reads it, within CEL's range (years 1 to
/// 9999 in UTC, as cel-go checks), with the offset the text gave.
pub fn parse_rfc3339(input: &str) -> Result<chrono::DateTime<chrono::FixedOffset>, GoTimeError> {
    let err = |reason: &str| GoTimeError::Timestamp {
        input: input.to_string(),
        reason: reason.to_string(),
    };
    let bad = || err("want RFC 3339 such as 2006-01-02T15:04:05Z or 2006-01-02T15:04:05.5+01:00");
    let mut v = input.as_bytes();

    // 2006: four digits.
    if v.len() < 4 || !v[..4].iter().all(u8::is_ascii_digit) {
        return Err(bad());
    }
    let year = digits(&v[..4]);
    v = &v[4..];
    v = skip(v, b'-').ok_or_else(bad)?;
    // 01: two digits.
    let (month, rest) = getnum(v, true).ok_or_else(bad)?;
    if !(1..=12).contains(&month) {
        return Err(err("month out of range"));
    }
    v = skip(rest, b'-').ok_or_else(bad)?;
    // 02: two digits; checked against the month once all is read, as Go does.
    let (day, rest) = getnum(v, true).ok_or_else(bad)?;
    v = skip(rest, b'T').ok_or_else(bad)?;
    // 15: one or two digits, as Go's stdHour reads it.
    let (hour, rest) = getnum(v, false).ok_or_else(bad)?;
    if hour >= 24 {
        return Err(err("hour out of range"));
    }
    v = skip(rest, b':').ok_or_else(bad)?;
    let (min, rest) = getnum(v, true).ok_or_else(bad)?;
    if min >= 60 {
        return Err(err("minute out of range"));
    }
    v = skip(rest, b':').ok_or_else(bad)?;
    let (sec, rest) = getnum(v, true).ok_or_else(bad)?;
    if sec >= 60 {
        return Err(err("second out of range"));
    }
    v = rest;
    // A fraction the layout does not name is read anyway, after a dot or a comma; digits past
    // the ninth are dropped.
    let mut nsec = 0i64;
    if v.len() >= 2 && (v[0] == b'.' || v[0] == b',') && v[1].is_ascii_digit() {
        let n = 1 + v[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        let kept = &v[1..n.min(10)];
        nsec = digits(kept) * 10i64.pow(9 - kept.len() as u32);
        v = &v[n..];
    }
    // Z07:00: an upper-case Z, or a sign, two digits, a colon and two digits; Go allows
    // offsets up to 24:60 since some write them.
    let offset: i64 = if let Some(rest) = v.strip_prefix(b"Z") {
        v = rest;
        0
    } else {
        if v.len() < 6 || v[3] != b':' {
            return Err(bad());
        }
        let (hh, _) = getnum(&v[1..3], true).ok_or_else(bad)?;
        let (mm, _) = getnum(&v[4..6], true).ok_or_else(bad)?;
        if hh > 24 {
            return Err(err("time zone offset hour out of range"));
        }
        if mm > 60 {
            return Err(err("time zone offset minute out of range"));
        }
        let magnitude = (hh * 60 + mm) * 60;
        let signed = match v[0] {
            b'+' => magnitude,
            b'-' => -magnitude,
            _ => return Err(bad()),
        };
        v = &v[6..];
        signed
    };
    if !v.is_empty() {
        return Err(err(&format!("extra text '{}'", String::from_utf8_lossy(v))));
    }
    if day < 1 || day > days_in(month, year) {
        return Err(err("day out of range"));
    }
    let unix = days_from_civil(year, month, day) * 86_400 + hour * 3600 + min * 60 + sec - offset;
    // cel-go's range: 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
    if !(-62_135_596_800..=253_402_300_799).contains(&unix) {
        return Err(err("out of the range of CEL timestamps (years 1 to 9999)"));
    }
    let utc = chrono::DateTime::from_timestamp(unix, nsec as u32)
        .ok_or_else(|| err("out of the range of CEL timestamps (years 1 to 9999)"))?;
    // An offset of 24 hours or more is no chrono offset; the instant is the same in UTC.
    let zone = chrono::FixedOffset::east_opt(offset as i32).unwrap_or_else(|| Utc.fix());
    Ok(utc.with_timezone(&zone))
}

fn skip(v: &[u8], c: u8) -> Option<&[u8]> {
    v.strip_prefix(&[c])
}

/// Go's `getnum`: one or two leading digits; `fixed` demands two.
fn getnum(v: &[u8], fixed: bool) -> Option<(i64, &[u8])> {
    let d0 = *v.first().filter(|c| c.is_ascii_digit())?;
    match v.get(1).filter(|c| c.is_ascii_digit()) {
        Some(&d1) => Some((i64::from(d0 - b'0') * 10 + i64::from(d1 - b'0'), &v[2..])),
        None if fixed => None,
        None => Some((i64::from(d0 - b'0'), &v[1..])),
    }
}

/// The value of at most nine ASCII digits.
fn digits(v: &[u8]) -> i64 {
    v.iter().fold(0, |n, c| n * 10 + i64::from(c - b'0'))
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in(month: i64, year: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar (Howard Hinnant's
/// algorithm); year 0 is allowed, as Go allows it before the range check.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// `t.Format(time.RFC3339Nano)`: the fraction without trailing zeros (none when zero), `Z` for
/// a zero offset.
pub fn format_rfc3339_nano(t: &chrono::DateTime<chrono::FixedOffset>) -> String {
    let mut out = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    );
    // A leap second is no CEL timestamp; chrono's extra second past 1e9 ns is not kept.
    let nanos = t.nanosecond() % 1_000_000_000;
    if nanos != 0 {
        let fraction = format!("{nanos:09}");
        out.push('.');
        out.push_str(fraction.trim_end_matches('0'));
    }
    // Go writes the offset in whole minutes.
    let minutes = t.offset().local_minus_utc() / 60;
    if minutes == 0 {
        out.push('Z');
    } else {
        let sign = if minutes < 0 { '-' } else { '+' };
        let m = minutes.unsigned_abs();
        out.push_str(&format!("{sign}{:02}:{:02}", m / 60, m % 60));
    }
    out
}

/// cel-go's `string(duration)`: Go's `Duration.Seconds()`, whole seconds plus the nanoseconds
/// divided by 1e9 in float64, in the shortest decimal that reads back, then `s`.
pub fn format_duration_seconds(nanos: i64) -> String {
    let seconds = (nanos / 1_000_000_000) as f64 + (nanos % 1_000_000_000) as f64 / 1e9;
    // Rust's Display of a double is Go's FormatFloat(x, 'f', -1, 64): shortest, no exponent.
    format!("{seconds}s")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_days_match_chrono() {
        for (y, m, d) in [
            (1970, 1, 1),
            (2024, 2, 29),
            (1, 1, 1),
            (9999, 12, 31),
            (1900, 3, 1),
        ] {
            let want = chrono::NaiveDate::from_ymd_opt(y as i32, m as u32, d as u32)
                .unwrap()
                .and_hms_opt(0, 0, 0)
                .unwrap()
                .and_utc()
                .timestamp()
                / 86_400;
            assert_eq!(days_from_civil(y, m, d), want, "{y}-{m}-{d}");
        }
    }

    #[test]
    fn errors_name_the_input_and_the_reason() {
        let cases = [
            (
                parse_duration("24hours").unwrap_err(),
                "duration '24hours': unknown unit 'hours'",
            ),
            (parse_duration("1h-30m").unwrap_err(), "unknown unit 'h-'"),
            (
                parse_duration("-").unwrap_err(),
                "duration '-': want Go syntax",
            ),
            (parse_duration("10").unwrap_err(), "missing unit"),
            (parse_duration("2562048h").unwrap_err(), "out of range"),
            (
                parse_rfc3339("2024-01-02t03:04:05Z").unwrap_err(),
                "timestamp '2024-01-02t03:04:05Z': want RFC 3339",
            ),
            (
                parse_rfc3339("2023-02-29T00:00:00Z").unwrap_err(),
                "day out of range",
            ),
            (
                parse_rfc3339("2024-01-02T03:04:05Z ").unwrap_err(),
                "extra text ' '",
            ),
            (
                parse_rfc3339("0000-12-31T23:59:59Z").unwrap_err(),
                "years 1 to 9999",
            ),
        ];
        for (e, want) in cases {
            assert!(e.to_string().contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn offsets_are_kept() {
        let t = parse_rfc3339("2024-01-02T03:04:05.5-07:30").unwrap();
        assert_eq!(t.offset().local_minus_utc(), -(7 * 3600 + 1800));
        assert_eq!(t.to_rfc3339(), "2024-01-02T03:04:05.500-07:30");
        // Beyond chrono's offsets: the same instant, in UTC.
        let t = parse_rfc3339("2024-01-02T03:04:05+24:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2024-01-01T03:04:05+00:00");
    }

    #[test]
    fn writes_as_go_writes() {
        for (input, want) in [
            ("2024-01-02T03:04:05Z", "2024-01-02T03:04:05Z"),
            ("2024-01-02T03:04:05.120Z", "2024-01-02T03:04:05.12Z"),
            (
                "2024-01-02T03:04:05.123456789-08:00",
                "2024-01-02T03:04:05.123456789-08:00",
            ),
            ("0001-01-01T05:30:00+05:30", "0001-01-01T05:30:00+05:30"),
        ] {
            let t = parse_rfc3339(input).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(format_rfc3339_nano(&t), want, "{input}");
        }
        for (nanos, want) in [
            (0, "0s"),
            (1, "0.000000001s"),
            (-1_500_000_000, "-1.5s"),
            (360_000_000_000_000_000, "360000000s"),
        ] {
            assert_eq!(format_duration_seconds(nanos), want, "{nanos}");
        }
    }
}
