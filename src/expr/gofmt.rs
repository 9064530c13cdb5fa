//! Text as Go's `strconv` and `fmt` write it, where Kubernetes' CEL shows Go's output to a
//! policy: `strconv.Quote` (in error messages of the url and format libraries, and in lists
//! and maps that `string.format` writes), `%g` of a double (`string.format`'s `%s`, cel-go's
//! `string(double)`) and `%.<n>f`.
//!
//! Digits come from Rust's formatting, which like Go's `strconv` finds the shortest digits
//! that read back as the same double, or rounds the exact binary value half to even at a
//! given precision; only the layout around the digits is Go's own and written out here.

use std::sync::LazyLock;

use regex::Regex;

/// Go's `unicode.IsPrint` (and `strconv.IsPrint`): letters, marks, numbers, punctuation and
/// symbols, and the ASCII space. Latin-1 is decided by hand, as Go's table does; above it the
/// regex crate's Unicode tables decide, which may differ from Go's for code points a newer
/// Unicode version assigned.
fn is_print(c: char) -> bool {
    // A constant pattern, which the quote test below compiles; were it refused, characters
    // above Latin-1 would all be escaped rather than anything panic.
    static PRINT: LazyLock<Option<Regex>> =
        LazyLock::new(|| Regex::new(r"^[\p{L}\p{M}\p{N}\p{P}\p{S}]$").ok());
    match u32::from(c) {
        0x20..=0x7e => true,
        0..=0xa0 | 0xad => false,
        0xa1..=0xff => true,
        _ => PRINT
            .as_ref()
            .is_some_and(|re| re.is_match(c.encode_utf8(&mut [0; 4]))),
    }
}

/// Go's `strconv.Quote` of bytes: printable characters as they are, the rest escaped; each
/// byte that is not UTF-8 as `\xNN`.
pub(super) fn quote(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for chunk in s.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                c if is_print(c) => out.push(c),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{b}' => out.push_str("\\v"),
                c if c < ' ' || c == '\u{7f}' => out.push_str(&format!("\\x{:02x}", u32::from(c))),
                c if u32::from(c) < 0x10000 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
                c => out.push_str(&format!("\\U{:08x}", u32::from(c))),
            }
        }
        for b in chunk.invalid() {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out.push('"');
    out
}

/// The shortest decimal digits that read back as `abs` (a finite, non-negative double), and
/// the power of ten of the first: `1234.5` is (`12345`, 3). Zero is (`0`, 0).
pub(super) fn shortest_digits(abs: f64) -> (String, i32) {
    split_exponent(&format!("{abs:e}"))
}

/// `abs` (finite, non-negative) rounded to `significant` digits, as (digits, power of ten of
/// the first).
pub(super) fn significant_digits(abs: f64, significant: usize) -> (String, i32) {
    let precision = significant.saturating_sub(1);
    split_exponent(&format!("{abs:.precision$e}"))
}

/// `d.ddde-7` as (`dddd`, -7).
fn split_exponent(text: &str) -> (String, i32) {
    let (mantissa, exponent) = text.split_once('e').unwrap_or((text, "0"));
    let digits = mantissa.chars().filter(char::is_ascii_digit).collect();
    (digits, exponent.parse().unwrap_or(0))
}

/// Go's `%g` (`strconv.FormatFloat(x, 'g', -1, 64)`): the shortest digits, written with an
/// exponent (`1e+06`, `1e-05`) when that of the first digit is below -4 or at least 6.
pub(super) fn format_g(x: f64) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    let sign = if x.is_sign_negative() { "-" } else { "" };
    let (digits, exp) = shortest_digits(x.abs());
    if !(-4..6).contains(&exp) {
        let (first, rest) = digits.split_at(1);
        let point = if rest.is_empty() { "" } else { "." };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        return format!(
            "{sign}{first}{point}{rest}e{exp_sign}{:02}",
            exp.unsigned_abs()
        );
    }
    // Digits before the point: exp + 1, which may be none (0.000dd) or more than there are.
    let before = exp + 1;
    let n = digits.len() as i32;
    if before <= 0 {
        format!(
            "{sign}0.{}{digits}",
            "0".repeat(before.unsigned_abs() as usize)
        )
    } else if before >= n {
        format!("{sign}{digits}{}", "0".repeat((before - n) as usize))
    } else {
        let (int, frac) = digits.split_at(before as usize);
        format!("{sign}{int}.{frac}")
    }
}

/// Go's `fmt.Sprintf("%.<precision>f", x)`: infinities as `+Inf` and `-Inf`, a negative zero
/// keeps its sign.
pub(super) fn format_f(x: f64, precision: usize) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    format!("{x:.precision$}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_as_strconv_quote() {
        for (input, want) in [
            (&b"plain"[..], r#""plain""#),
            (b"a\"b\\c\n\t\x01\x7f", r#""a\"b\\c\n\t\x01\x7f""#),
            ("ÿé😀".as_bytes(), "\"ÿé😀\""),
            (
                "\u{a0}\u{ad}\u{85}\u{200b}\u{e000}\u{378}\u{2028}".as_bytes(),
                r#""\u00a0\u00ad\u0085\u200b\ue000\u0378\u2028""#,
            ),
            ("\u{f0000}".as_bytes(), r#""\U000f0000""#),
            (b"a\xffb\xe2\x82", r#""a\xffb\xe2\x82""#),
        ] {
            assert_eq!(quote(input), want, "{input:?}");
        }
    }

    #[test]
    fn g_as_go_writes_it() {
        for (x, want) in [
            (0.0, "0"),
            (-0.0, "-0"),
            (1.5, "1.5"),
            (100000.0, "100000"),
            (123456.0, "123456"),
            (1234567.0, "1.234567e+06"),
            (1e8, "1e+08"),
            (1e21, "1e+21"),
            (0.0001, "0.0001"),
            (0.00001, "1e-05"),
            (1e-7, "1e-07"),
            (-1e300, "-1e+300"),
            (5e-324, "5e-324"),
            (1.7976931348623157e308, "1.7976931348623157e+308"),
            (f64::NAN, "NaN"),
            (f64::NEG_INFINITY, "-Inf"),
        ] {
            assert_eq!(format_g(x), want, "{x}");
        }
    }

    #[test]
    fn digits() {
        assert_eq!(shortest_digits(1234.5), ("12345".into(), 3));
        assert_eq!(shortest_digits(0.0), ("0".into(), 0));
        assert_eq!(significant_digits(1.2345675, 7), ("1234568".into(), 0));
        assert_eq!(significant_digits(9.9999995, 7), ("9999999".into(), 0));
        assert_eq!(significant_digits(99.999999, 7), ("1000000".into(), 2));
        assert_eq!(format_f(-0.0, 6), "-0.000000");
        assert_eq!(format_f(f64::INFINITY, 6), "+Inf");
    }
}
