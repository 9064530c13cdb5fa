//! `<string>.format(<list>)` as kube-apiserver 1.36 evaluates it: cel-go's strings extension at
//! version 2, whose formatter is cel-go's first one (`ext/formatting.go`, locale `en_US`). The
//! cel crate implements the later one (cel-spec's, cel-go's strings version 4), which writes
//! different text for the same clause, so `fold.rs` sends every member call `format(list)`
//! here instead.
//!
//! A clause is `%` then an optional `.precision` then one of `s d f e b o x X`; `%%` is a `%`.
//! What Kubernetes' version writes, and a policy therefore sees:
//!
//! - `%f` and `%e` go through golang.org/x/text's `message` printer for English: `%f` groups
//!   thousands (`1,234.500000`), `%e` writes `1.234568×10⁰³`. `%e` passes its precision as a
//!   *width* (`%6e` by default): its digits are always six after the point, and the text is
//!   padded with spaces to that many characters. The printer keeps a precision in 16 bits and
//!   a minimum of fraction digits in 8, so precisions past 255 behave as that truncation makes
//!   them (`%.256f` of 1.0 is `1`), and one past 10,000,009 is no verb to its parser.
//!   A negative zero is written without its sign, and the strings `NaN`, `Infinity` and
//!   `-Infinity` are accepted as doubles (`NaN`, `∞`, `-∞`).
//! - `%s` of a double is Go's `%g` (`1e+06`); inside a list or map it is `%.6f` and strings,
//!   bytes, timestamps and durations are quoted as CEL literals (`["a", b"b",
//!   timestamp("2024-01-02T03:04:05Z")]`), map entries sorted by their key's text.
//! - `%d` takes integers only, `%b` integers and bools, `%x` integers, strings and bytes.
//!
//! A literal format string applied to a list literal is checked when the expression is
//! compiled, as cel-go's `stringFormatValidator` does (types.rs calls `interpolate` with the
//! argument types): a bad clause, too few or too many arguments, or an argument whose type
//! cannot suit its clause fails the compilation.

use std::sync::Arc;

use cel::common::types::{CelType, Kind, LIST_TYPE, STRING_TYPE};
use cel::common::value::Val;
use cel::{DeclarationError, Env, ExecutionError, Value};

use super::gofmt;
use super::library::{Args, Ret, ret, string_arg};

/// The member function `format` is rewritten to (fold.rs).
pub const FORMAT: &str = "@format";

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_member_overload(
        FORMAT,
        "string_format_list_v2",
        STRING_TYPE,
        vec![LIST_TYPE],
        format,
    )
}

/// A clause's conversion, with the precision written with it, if any.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Verb {
    String,
    Decimal,
    Fixed(Option<i64>),
    Scientific(Option<i64>),
    Binary,
    Hex { upper: bool },
    Octal,
}

/// Why a format failed.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Failure<E> {
    /// The format string, or an argument missing for one of its clauses.
    Text(String),
    /// What the clause said of its argument.
    Clause(E),
}

/// cel-go's `parseFormatString`: the text with each clause replaced by what `clause` makes of
/// it, given the clause's argument index (below `args`) and conversion; and how many clauses
/// there were. The first failure ends it.
pub(super) fn interpolate<E>(
    format: &str,
    args: usize,
    mut clause: impl FnMut(usize, Verb) -> Result<String, E>,
) -> Result<(String, usize), Failure<E>> {
    let mut out = String::with_capacity(format.len());
    let mut rest = format;
    let mut next = 0;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(after) = after.strip_prefix('%') {
            out.push('%');
            rest = after;
            continue;
        }
        // cel-go asks for the argument before it looks at the clause.
        if next >= args {
            return Err(Failure::Text(format!("index {next} out of range")));
        }
        if after.is_empty() {
            return Err(Failure::Text("unexpected end of string".into()));
        }
        let (verb, len) = parse_clause(after.as_bytes())
            .map_err(|e| Failure::Text(format!("could not parse formatting clause: {e}")))?;
        out.push_str(&clause(next, verb).map_err(Failure::Clause)?);
        // A clause is ASCII (a dot, digits and its letter), so this is a character boundary.
        rest = after.get(len..).unwrap_or_default();
        next += 1;
    }
    out.push_str(rest);
    Ok((out, next))
}

/// The clause at the start of `b` (after its `%`, which is not the last byte): its conversion
/// and its length in bytes.
fn parse_clause(b: &[u8]) -> Result<(Verb, usize), String> {
    let mut i = 0;
    let mut precision = None;
    if b.first() == Some(&b'.') {
        i = 1;
        loop {
            match b.get(i) {
                None => {
                    return Err(
                        "error while parsing precision: could not find end of precision specifier"
                            .into(),
                    );
                }
                Some(c) if c.is_ascii_digit() => i += 1,
                Some(_) => break,
            }
        }
        precision = Some(atoi(&b[1..i]).map_err(|e| {
            format!(
                "error while parsing precision: error while converting precision to integer: {e}"
            )
        })?);
    }
    let verb = match b.get(i) {
        Some(b's') => Verb::String,
        Some(b'd') => Verb::Decimal,
        Some(b'f') => Verb::Fixed(precision),
        Some(b'e') => Verb::Scientific(precision),
        Some(b'b') => Verb::Binary,
        Some(b'x') => Verb::Hex { upper: false },
        Some(b'X') => Verb::Hex { upper: true },
        Some(b'o') => Verb::Octal,
        // Go reads the byte as a character, so a UTF-8 lead byte shows as Latin-1.
        Some(c) => {
            return Err(format!(
                "unrecognized formatting clause \"{}\"",
                char::from(*c)
            ));
        }
        None => return Err("unexpected end of string".into()),
    };
    Ok((verb, i + 1))
}

/// Go's `strconv.Atoi` of ASCII digits.
fn atoi(digits: &[u8]) -> Result<i64, String> {
    let text = String::from_utf8_lossy(digits);
    if digits.is_empty() {
        return Err(format!("strconv.Atoi: parsing \"{text}\": invalid syntax"));
    }
    digits
        .iter()
        .try_fold(0i64, |n, d| {
            n.checked_mul(10)?.checked_add(i64::from(d - b'0'))
        })
        .ok_or_else(|| format!("strconv.Atoi: parsing \"{text}\": value out of range"))
}

// ---------------------------------------------------------------------------------------------
// Evaluation.

fn format<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let [this, list] = args.as_slice() else {
        return Err(ExecutionError::function_error(
            "format",
            "want a format string and a list",
        ));
    };
    let text = string_arg("format", this.as_ref())?;
    let Some(iterable) = list.as_ref().as_iterable() else {
        return Err(ExecutionError::function_error("format", "want a list"));
    };
    let mut items = Vec::new();
    let mut iter = iterable.iter();
    while let Some(item) = iter.next() {
        items.push(item);
    }
    let written = interpolate(&text, items.len(), |i, verb| match items.get(i) {
        Some(item) => apply(verb, *item),
        None => Err(format!("index {i} out of range")),
    });
    match written {
        Ok((out, _)) => ret(Value::String(Arc::new(out))),
        Err(Failure::Text(message)) => Err(ExecutionError::function_error("format", message)),
        Err(Failure::Clause(message)) => Err(ExecutionError::function_error(
            "format",
            format!("error during formatting: {message}"),
        )),
    }
}

/// A scalar argument, read once its kind is known.
enum Scalar {
    Int(i64),
    Uint(u64),
    Double(f64),
    Bool(bool),
    String(Arc<String>),
    Bytes(Arc<Vec<u8>>),
    Duration(i64),
    Timestamp(chrono::DateTime<chrono::FixedOffset>),
    Null,
    /// A type value, by its name.
    Type(String),
    /// A list, a map, or a value no clause formats.
    Other,
}

fn scalar(v: &dyn Val) -> Scalar {
    match v.get_type().kind() {
        // Converting to `Value` would turn a type into its name as a string.
        Kind::Type => {
            return match v.downcast_ref::<CelType>() {
                Some(t) => Scalar::Type(t.name().to_string()),
                None => Scalar::Other,
            };
        }
        Kind::List | Kind::Map => return Scalar::Other,
        _ => {}
    }
    match Value::try_from(v) {
        Ok(Value::Int(i)) => Scalar::Int(i),
        Ok(Value::UInt(u)) => Scalar::Uint(u),
        Ok(Value::Float(d)) => Scalar::Double(d),
        Ok(Value::Bool(b)) => Scalar::Bool(b),
        Ok(Value::String(s)) => Scalar::String(s),
        Ok(Value::Bytes(b)) => Scalar::Bytes(b),
        Ok(Value::Duration(d)) => d.num_nanoseconds().map_or(Scalar::Other, Scalar::Duration),
        Ok(Value::Timestamp(t)) => Scalar::Timestamp(t),
        Ok(Value::Null) => Scalar::Null,
        _ => Scalar::Other,
    }
}

/// The type's name as cel-go's messages give it.
fn type_name(v: &dyn Val) -> String {
    match v.get_type().kind() {
        Kind::NullType => "null_type".into(),
        Kind::List => "list".into(),
        Kind::Map => "map".into(),
        Kind::Duration => "google.protobuf.Duration".into(),
        Kind::Timestamp => "google.protobuf.Timestamp".into(),
        _ => v.get_type().name().to_string(),
    }
}

fn apply(verb: Verb, v: &dyn Val) -> Result<String, String> {
    let arg = scalar(v);
    let clause_error = |what: &str| format!("{what}, was given {}", type_name(v));
    match verb {
        Verb::String => string(v),
        Verb::Decimal => match arg {
            Scalar::Int(i) => Ok(i.to_string()),
            Scalar::Uint(u) => Ok(u.to_string()),
            _ => Err(clause_error("decimal clause can only be used on integers")),
        },
        Verb::Fixed(precision) => match double_of(&arg) {
            Some(x) => Ok(fixed_en(x, precision.unwrap_or(DEFAULT_PRECISION))),
            None => Err(clause_error(
                "fixed-point clause can only be used on doubles",
            )),
        },
        Verb::Scientific(precision) => match double_of(&arg) {
            Some(x) => Ok(scientific_en(x, precision.unwrap_or(DEFAULT_PRECISION))),
            None => Err(clause_error(
                "scientific clause can only be used on doubles",
            )),
        },
        Verb::Binary => match arg {
            Scalar::Int(i) => Ok(signed(i, |u| format!("{u:b}"))),
            Scalar::Uint(u) => Ok(format!("{u:b}")),
            Scalar::Bool(b) => Ok(if b { "1" } else { "0" }.into()),
            _ => Err(clause_error(
                "only integers and bools can be formatted as binary",
            )),
        },
        Verb::Hex { upper } => match arg {
            Scalar::Int(i) if upper => Ok(signed(i, |u| format!("{u:X}"))),
            Scalar::Int(i) => Ok(signed(i, |u| format!("{u:x}"))),
            Scalar::Uint(u) if upper => Ok(format!("{u:X}")),
            Scalar::Uint(u) => Ok(format!("{u:x}")),
            Scalar::String(s) => Ok(hex(s.as_bytes(), upper)),
            Scalar::Bytes(b) => Ok(hex(&b, upper)),
            _ => Err(clause_error(
                "only integers, byte buffers, and strings can be formatted as hex",
            )),
        },
        Verb::Octal => match arg {
            Scalar::Int(i) => Ok(signed(i, |u| format!("{u:o}"))),
            Scalar::Uint(u) => Ok(format!("{u:o}")),
            _ => Err(clause_error("octal clause can only be used on integers")),
        },
    }
}

/// cel-go's precision for `%f` and `%e` (for `%e`, its width) when the clause has none.
const DEFAULT_PRECISION: i64 = 6;

/// `%f` and `%e` take doubles, and the strings a double's special values are written as.
fn double_of(arg: &Scalar) -> Option<f64> {
    match arg {
        Scalar::Double(x) => Some(*x),
        Scalar::String(s) => match s.as_str() {
            "NaN" => Some(f64::NAN),
            "Infinity" => Some(f64::INFINITY),
            "-Infinity" => Some(f64::NEG_INFINITY),
            _ => None,
        },
        _ => None,
    }
}

/// Go's `%b`, `%o` and `%x` of a signed integer: a minus sign, then the magnitude.
fn signed(i: i64, digits: impl Fn(u64) -> String) -> String {
    let sign = if i < 0 { "-" } else { "" };
    format!("{sign}{}", digits(i.unsigned_abs()))
}

fn hex(bytes: &[u8], upper: bool) -> String {
    bytes
        .iter()
        .map(|b| {
            if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            }
        })
        .collect()
}

/// `%s` (cel-go's `FormatString`).
fn string(v: &dyn Val) -> Result<String, String> {
    match v.get_type().kind() {
        Kind::List => return list(v),
        Kind::Map => return map(v),
        _ => {}
    }
    Ok(match scalar(v) {
        Scalar::Int(i) => i.to_string(),
        Scalar::Uint(u) => u.to_string(),
        Scalar::Double(x) => gofmt::format_g(x),
        Scalar::Bool(b) => b.to_string(),
        Scalar::String(s) => s.to_string(),
        Scalar::Bytes(b) => utf8(&b)?,
        Scalar::Duration(nanos) => crate::gotime::format_duration_seconds(nanos),
        Scalar::Timestamp(t) => crate::gotime::format_rfc3339_nano(&t),
        Scalar::Null => "null".into(),
        Scalar::Type(name) => name,
        Scalar::Other => {
            return Err(format!(
                "string clause can only be used on strings, bools, bytes, ints, doubles, maps, lists, types, durations, and timestamps, was given {}",
                type_name(v)
            ));
        }
    })
}

/// Bytes as text, which cel-go's conversion refuses when they are not UTF-8.
fn utf8(b: &[u8]) -> Result<String, String> {
    String::from_utf8(b.to_vec()).map_err(|_| {
        "could not convert argument \"invalid UTF-8 in bytes, cannot convert to string\" to string"
            .to_string()
    })
}

/// An element of a list or a value of a map, written as a CEL literal would be (cel-go's
/// `clauseForType`, then `quoteForCEL`).
fn element(v: &dyn Val) -> Result<String, String> {
    match v.get_type().kind() {
        Kind::List => return list(v),
        Kind::Map => return map(v),
        _ => {}
    }
    Ok(match scalar(v) {
        Scalar::Int(i) => i.to_string(),
        Scalar::Uint(u) => u.to_string(),
        // Go's "%.6f", with no grouping; the non-finite values are quoted.
        Scalar::Double(x) if x.is_finite() => gofmt::format_f(x, 6),
        Scalar::Double(x) => gofmt::quote(gofmt::format_f(x, 6).as_bytes()),
        Scalar::String(s) => gofmt::quote(s.as_bytes()),
        Scalar::Bytes(b) => format!("b{}", gofmt::quote(utf8(&b)?.as_bytes())),
        Scalar::Bool(b) => b.to_string(),
        Scalar::Null => "null".into(),
        Scalar::Type(name) => name,
        Scalar::Duration(nanos) => format!(
            "duration({})",
            gofmt::quote(crate::gotime::format_duration_seconds(nanos).as_bytes())
        ),
        Scalar::Timestamp(t) => format!(
            "timestamp({})",
            gofmt::quote(crate::gotime::format_rfc3339_nano(&t).as_bytes())
        ),
        Scalar::Other => return Err(format!("no formatting function for {}", type_name(v))),
    })
}

fn list(v: &dyn Val) -> Result<String, String> {
    let Some(iterable) = v.as_iterable() else {
        return Err(format!("no formatting function for {}", type_name(v)));
    };
    let mut parts = Vec::new();
    let mut iter = iterable.iter();
    while let Some(item) = iter.next() {
        parts.push(element(item)?);
    }
    Ok(format!("[{}]", parts.join(", ")))
}

/// `{key:value, ...}`, the entries sorted by the written key (quotes included, byte by byte),
/// as cel-go sorts them.
fn map(v: &dyn Val) -> Result<String, String> {
    let (Some(keys), Some(indexer)) = (v.as_iterable(), v.as_indexer()) else {
        return Err(format!("no formatting function for {}", type_name(v)));
    };
    let mut entries = Vec::new();
    let mut iter = keys.iter();
    while let Some(key) = iter.next() {
        let key_text = match scalar(key) {
            Scalar::String(s) => gofmt::quote(s.as_bytes()),
            Scalar::Bool(b) => b.to_string(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Uint(u) => u.to_string(),
            _ => {
                return Err(format!(
                    "no formatting function for map key of type {}",
                    type_name(key)
                ));
            }
        };
        let value = indexer.get(key).map_err(|e| e.to_string())?;
        entries.push((key_text, element(value.as_ref())?));
    }
    entries.sort_by(|a, b| a.0.cmp(&b.0));
    let parts: Vec<String> = entries
        .into_iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    Ok(format!("{{{}}}", parts.join(", ")))
}

// ---------------------------------------------------------------------------------------------
// golang.org/x/text/message's `%f` and `%e` for English, as cel-go calls them:
// `Sprintf("%.<precision>f", x)` and `Sprintf("%<precision>e", x)`.

/// What the printer writes for a width or precision its parser will not read: it reads at most
/// one digit after its running value passes 1e6.
const NO_VERB: &str = "%!(NOVERB)";
const MAX_NUMBER: i64 = 10_000_009;

/// Digits of a number (ASCII) and the position of the decimal point relative to
/// the first: 0.0123 is (`123`, -1), 12.3 is (`123`, 2). Zero has no digits.
struct Decimal {
    digits: Vec<u8>,
    exp: i32,
}

impl Decimal {
    /// From Rust's digits and the power of ten of the first, leading and trailing zeros removed.
    fn new(digits: &str, first_power: i32) -> Decimal {
        let mut exp = first_power + 1;
        let mut d = digits.as_bytes();
        while let [b'0', rest @ ..] = d {
            d = rest;
            exp -= 1;
        }
        while let [rest @ .., b'0'] = d {
            d = rest;
        }
        if d.is_empty() {
            exp = 0;
        }
        Decimal {
            digits: d.to_vec(),
            exp,
        }
    }

    /// `abs` rounded to `places` after the point.
    fn fixed(abs: f64, places: usize) -> Decimal {
        let text = format!("{abs:.places$}");
        let before = text.find('.').unwrap_or(text.len()) as i32;
        let digits: String = text.chars().filter(char::is_ascii_digit).collect();
        Decimal::new(&digits, before - 1)
    }

    fn shortest(abs: f64) -> Decimal {
        let (digits, power) = gofmt::shortest_digits(abs);
        Decimal::new(&digits, power)
    }

    fn significant(abs: f64, n: usize) -> Decimal {
        let (digits, power) = gofmt::significant_digits(abs, n);
        Decimal::new(&digits, power)
    }
}

/// `%.<precision>f` in English: thousands grouped with commas.
fn fixed_en(x: f64, precision: i64) -> String {
    if precision > MAX_NUMBER {
        return NO_VERB.into();
    }
    if x.is_nan() {
        return "NaN".into();
    }
    // The sign of a negative zero is not seen (`x < 0` decides it).
    let neg = x < 0.0;
    let sign = if neg { "-" } else { "" };
    let abs = x.abs();
    if abs.is_infinite() {
        return format!("{sign}∞");
    }
    // The printer's fields: at most `precision as int16` fraction digits (none past a
    // negative one: the shortest digits), at least `precision as uint8`.
    let max_frac = precision as i16;
    let min_frac = i32::from(precision as u8);
    let d = match usize::try_from(max_frac) {
        Ok(places) => Decimal::fixed(abs, places),
        Err(_) => Decimal::shortest(abs),
    };
    let (exp, end) = if d.digits.is_empty() {
        (0, min_frac)
    } else {
        (d.exp, (d.digits.len() as i32).max(d.exp + min_frac))
    };
    let num_frac = end - exp;
    let num_int = exp.max(0);
    let mut out = String::from(sign);
    if num_int == 0 {
        out.push('0');
    }
    for i in 0..num_int {
        out.push(char::from(
            d.digits.get(i as usize).copied().unwrap_or(b'0'),
        ));
        // A comma before each group of three digits that follow.
        let after = num_int - i - 1;
        if after > 0 && after % 3 == 0 {
            out.push(',');
        }
    }
    if num_frac > 0 {
        out.push('.');
        let frac_digits = d.digits.get(num_int as usize..).unwrap_or_default();
        let leading = (-exp).max(0);
        let written = leading + frac_digits.len() as i32;
        out.extend(std::iter::repeat_n('0', leading as usize));
        out.extend(frac_digits.iter().map(|c| char::from(*c)));
        out.extend(std::iter::repeat_n(
            '0',
            (num_frac - written).max(0) as usize,
        ));
    }
    out
}

/// `%<width>e` in English: seven significant digits, `×10` and the exponent in superscript
/// digits (at least two), the whole padded on the left with spaces to `width` characters.
fn scientific_en(x: f64, width: i64) -> String {
    if width > MAX_NUMBER {
        return NO_VERB.into();
    }
    let text = if x.is_nan() {
        "NaN".to_string()
    } else {
        let sign = if x < 0.0 { "-" } else { "" };
        let abs = x.abs();
        if abs.is_infinite() {
            format!("{sign}∞")
        } else {
            let d = Decimal::significant(abs, 7);
            // Zero is one digit, 0, before the point.
            let (first, rest, exp) = match d.digits.split_first() {
                Some((first, rest)) => (*first, rest, d.exp),
                None => (b'0', &[][..], 1),
            };
            let mut out = String::from(sign);
            out.push(char::from(first));
            out.push('.');
            out.extend(rest.iter().map(|c| char::from(*c)));
            out.extend(std::iter::repeat_n('0', 6usize.saturating_sub(rest.len())));
            out.push_str("×10");
            let power = exp - 1;
            if power < 0 {
                out.push('\u{207b}');
            }
            out.push_str(&superscript(power.unsigned_abs()));
            out
        }
    };
    // `%0e` is the zero flag, not a width; the printer keeps a width in 16 bits.
    let width = usize::from(width as u16);
    let count = text.chars().count();
    if width > count {
        format!("{}{text}", " ".repeat(width - count))
    } else {
        text
    }
}

/// `n` in superscript digits, at least two.
fn superscript(n: u32) -> String {
    const DIGITS: [char; 10] = [
        '\u{2070}', '\u{b9}', '\u{b2}', '\u{b3}', '\u{2074}', '\u{2075}', '\u{2076}', '\u{2077}',
        '\u{2078}', '\u{2079}',
    ];
    format!("{n:02}")
        .bytes()
        .map(|c| DIGITS[usize::from(c - b'0')])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(format: &str, args: &[f64]) -> Result<String, String> {
        interpolate(format, args.len(), |i, verb| {
            let x = args[i];
            match verb {
                Verb::Fixed(p) => Ok(fixed_en(x, p.unwrap_or(DEFAULT_PRECISION))),
                Verb::Scientific(p) => Ok(scientific_en(x, p.unwrap_or(DEFAULT_PRECISION))),
                other => Err(format!("{other:?}")),
            }
        })
        .map(|(s, _)| s)
        .map_err(|e| match e {
            Failure::Text(t) | Failure::Clause(t) => t,
        })
    }

    #[test]
    fn fixed_as_the_english_printer_writes_it() {
        for (format, x, want) in [
            ("%f", 1234567.5, "1,234,567.500000"),
            ("%.2f", -1234.567, "-1,234.57"),
            ("%.0f", 2.5, "2"),
            ("%.0f", -0.5, "-0"),
            ("%.1f", 0.05, "0.1"),
            ("%.1f", 0.25, "0.2"),
            ("%f", -0.0, "0.000000"),
            ("%.2f", -0.0001, "-0.00"),
            ("%f", 999.9999999, "1,000.000000"),
            ("%f", 5e-324, "0.000000"),
            ("%f", 1e21, "1,000,000,000,000,000,000,000.000000"),
            ("%.256f", 1.0, "1"),
            (
                "%.300f",
                0.1,
                "0.1000000000000000055511151231257827021181583404541015625",
            ),
            ("%.65536f", 2.5, "2"),
            ("%.65537f", 1.25, "1.2"),
            ("%.10000010f", 1.0, "%!(NOVERB)"),
            ("%f", f64::NAN, "NaN"),
            ("%f", f64::NEG_INFINITY, "-∞"),
        ] {
            assert_eq!(run(format, &[x]).as_deref(), Ok(want), "{format} {x}");
        }
        // A negative int16 precision: the shortest digits, at least 64 (40000 as uint8) places.
        assert_eq!(
            run("%.40000f", &[0.1]).map(|s| s.len()),
            Ok("0.".len() + 64)
        );
    }

    #[test]
    fn scientific_as_the_english_printer_writes_it() {
        for (format, x, want) in [
            ("%e", 1234.5678, "1.234568×10⁰³"),
            ("%e", 0.0, "0.000000×10⁰⁰"),
            ("%e", -0.0, "0.000000×10⁰⁰"),
            ("%e", -1.5e-300, "-1.500000×10⁻³⁰⁰"),
            ("%e", 1e100, "1.000000×10¹⁰⁰"),
            ("%e", 9.9999995, "9.999999×10⁰⁰"),
            ("%e", 5e-324, "4.940656×10⁻³²⁴"),
            ("%.20e", 1234.5678, "       1.234568×10⁰³"),
            ("%.0e", 1.0, "1.000000×10⁰⁰"),
            ("%.65536e", 1.0, "1.000000×10⁰⁰"),
            ("%e", f64::NAN, "   NaN"),
            ("%e", f64::INFINITY, "     ∞"),
            ("%.10000010e", 1.0, "%!(NOVERB)"),
        ] {
            assert_eq!(run(format, &[x]).as_deref(), Ok(want), "{format} {x}");
        }
        assert_eq!(
            run("%.100000e", &[1.0]).map(|s| s.chars().count()),
            Ok(34464)
        );
    }

    #[test]
    fn clauses_and_their_failures() {
        assert_eq!(run("a%%b", &[]).as_deref(), Ok("a%b"));
        assert_eq!(run("é%fü", &[1.0]).as_deref(), Ok("é1.000000ü"));
        for (format, args, want) in [
            ("%f %f", &[1.0][..], "index 1 out of range"),
            ("100%", &[][..], "index 0 out of range"),
            ("100%", &[1.0][..], "unexpected end of string"),
            (
                "%.",
                &[1.0][..],
                "could not parse formatting clause: error while parsing precision: could not find end of precision specifier",
            ),
            (
                "%.f",
                &[1.0][..],
                "could not parse formatting clause: error while parsing precision: error while converting precision to integer: strconv.Atoi: parsing \"\": invalid syntax",
            ),
            (
                "%.99999999999999999999f",
                &[1.0][..],
                "could not parse formatting clause: error while parsing precision: error while converting precision to integer: strconv.Atoi: parsing \"99999999999999999999\": value out of range",
            ),
            (
                "%5d",
                &[1.0][..],
                "could not parse formatting clause: unrecognized formatting clause \"5\"",
            ),
            (
                "%é",
                &[1.0][..],
                "could not parse formatting clause: unrecognized formatting clause \"Ã\"",
            ),
        ] {
            assert_eq!(run(format, args), Err(want.to_string()), "{format}");
        }
        assert_eq!(
            interpolate::<String>("%s %.3d", 5, |_, _| Ok(String::new())),
            Ok((" ".to_string(), 2))
        );
    }
}
