//! Kubernetes' CEL format library: `format.dns1123Label()` and the other named formats,
//! `format.named(name)` (an optional) and `<format>.validate(s)`, which is `optional.none()`
//! for a valid string and otherwise the list of Kubernetes' own validation messages.
//!
//! The messages are apimachinery's word for word (k8s.io/apimachinery/pkg/util/validation and
//! pkg/api/validate/content), because a policy may show or compare them. The checks are
//! written out by hand rather than as the regular expressions apimachinery uses: each is a
//! character class with a condition on the first and last character, and Go's `$` (end of
//! text only, not before a final newline) is then kept without thinking about it. Lengths are
//! in bytes, as Go's `len`.
//!
//! Two quirks are Kubernetes' and kept: the `...Prefix` formats replace a trailing dash by
//! dropping the last *two* characters and appending `a` (apimachinery's `maskTrailingDash`),
//! and `datetime` checks the text between the first and the second `t` only.

use std::sync::Arc;

use cel::common::types::{DYN_TYPE, STRING_TYPE};
use cel::common::value::Val;
use cel::objects::{Opaque, OptionalValue};
use cel::{DeclarationError, Env, ExecutionError, Value};

use super::library::{Args, Ret, ret, string_arg, value};
use super::url::Url;

pub const FORMAT_TYPE_NAME: &str = "kubernetes.NamedFormat";

/// One of Kubernetes' named formats. Two formats are equal when they are the same format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamedFormat {
    Dns1123Label,
    Dns1123Subdomain,
    Dns1035Label,
    QualifiedName,
    Dns1123LabelPrefix,
    Dns1123SubdomainPrefix,
    Dns1035LabelPrefix,
    LabelValue,
    Uri,
    Uuid,
    Byte,
    Date,
    Datetime,
}

impl Opaque for NamedFormat {
    fn runtime_type_name(&self) -> &str {
        FORMAT_TYPE_NAME
    }
}

/// The formats by the name `format.named` takes (and `format.<name>()` spells).
const FORMATS: [(&str, NamedFormat); 13] = [
    ("dns1123Label", NamedFormat::Dns1123Label),
    ("dns1123Subdomain", NamedFormat::Dns1123Subdomain),
    ("dns1035Label", NamedFormat::Dns1035Label),
    ("qualifiedName", NamedFormat::QualifiedName),
    ("dns1123LabelPrefix", NamedFormat::Dns1123LabelPrefix),
    (
        "dns1123SubdomainPrefix",
        NamedFormat::Dns1123SubdomainPrefix,
    ),
    ("dns1035LabelPrefix", NamedFormat::Dns1035LabelPrefix),
    ("labelValue", NamedFormat::LabelValue),
    ("uri", NamedFormat::Uri),
    ("uuid", NamedFormat::Uuid),
    ("byte", NamedFormat::Byte),
    ("date", NamedFormat::Date),
    ("datetime", NamedFormat::Datetime),
];

impl NamedFormat {
    pub fn named(name: &str) -> Option<NamedFormat> {
        FORMATS.iter().find(|(n, _)| *n == name).map(|(_, f)| *f)
    }

    /// The format's `Name` in Kubernetes, which its equality compares.
    pub fn name(self) -> &'static str {
        match self {
            NamedFormat::Dns1123Label => "DNS1123Label",
            NamedFormat::Dns1123Subdomain => "DNS1123Subdomain",
            NamedFormat::Dns1035Label => "DNS1035Label",
            NamedFormat::QualifiedName => "QualifiedName",
            NamedFormat::Dns1123LabelPrefix => "DNS1123LabelPrefix",
            NamedFormat::Dns1123SubdomainPrefix => "DNS1123SubdomainPrefix",
            NamedFormat::Dns1035LabelPrefix => "DNS1035LabelPrefix",
            NamedFormat::LabelValue => "LabelValue",
            NamedFormat::Uri => "URI",
            NamedFormat::Uuid => "uuid",
            NamedFormat::Byte => "byte",
            NamedFormat::Date => "date",
            NamedFormat::Datetime => "datetime",
        }
    }

    /// Kubernetes' messages for `s`; empty when `s` is valid.
    pub fn validate(self, s: &str) -> Vec<String> {
        let b = s.as_bytes();
        let invalid = |ok: bool, msg: &str| if ok { vec![] } else { vec![msg.to_string()] };
        match self {
            NamedFormat::Dns1123Label => dns1123_label(b),
            NamedFormat::Dns1123Subdomain => dns1123_subdomain(b, CHARACTERS),
            NamedFormat::Dns1035Label => dns1035_label(b),
            NamedFormat::QualifiedName => qualified_name(s),
            NamedFormat::Dns1123LabelPrefix => dns1123_label(&mask_trailing_dash(b)),
            NamedFormat::Dns1123SubdomainPrefix => {
                dns1123_subdomain(&mask_trailing_dash(b), CHARACTERS)
            }
            NamedFormat::Dns1035LabelPrefix => dns1035_label(&mask_trailing_dash(b)),
            NamedFormat::LabelValue => label_value(b),
            NamedFormat::Uri => Url::parse_request_uri(s).err().into_iter().collect(),
            NamedFormat::Uuid => invalid(is_uuid(b), "does not match the UUID format"),
            NamedFormat::Byte => invalid(is_base64(b), "invalid base64"),
            NamedFormat::Date => invalid(is_date(b), "invalid date"),
            NamedFormat::Datetime => invalid(is_datetime(s), "invalid datetime"),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// apimachinery's validators.

const DNS1123_LABEL_FMT: &str = "[a-z0-9]([-a-z0-9]*[a-z0-9])?";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character";
const DNS1123_SUBDOMAIN_FMT: &str =
    "[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*";
const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character";
const DNS1035_LABEL_FMT: &str = "[a-z]([-a-z0-9]*[a-z0-9])?";
const DNS1035_LABEL_MSG: &str = "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic character, and end with an alphanumeric character";
const LABEL_KEY_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const LABEL_KEY_MSG: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_MSG: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";

/// util/validation's length message says characters, api/validate/content's says bytes; both
/// count bytes.
const CHARACTERS: &str = "characters";
const BYTES: &str = "bytes";

fn max_len_error(n: usize, unit: &str) -> String {
    format!("must be no more than {n} {unit}")
}

/// apimachinery's `RegexError`, spacing included.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

/// `first`, then optionally `[-a-z0-9]*[a-z0-9]`.
fn is_label(b: &[u8], first: fn(&u8) -> bool) -> bool {
    let inner = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-';
    let last = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    match b {
        [] => false,
        [only] => first(only),
        [head, middle @ .., tail] => first(head) && middle.iter().all(inner) && last(tail),
    }
}

fn is_dns1123_label(b: &[u8]) -> bool {
    is_label(b, |c| c.is_ascii_lowercase() || c.is_ascii_digit())
}

fn is_dns1123_subdomain(b: &[u8]) -> bool {
    b.split(|c| *c == b'.').all(is_dns1123_label)
}

fn dns1123_label(b: &[u8]) -> Vec<String> {
    let mut errs = Vec::new();
    if b.len() > 63 {
        errs.push(max_len_error(63, CHARACTERS));
    }
    if !is_dns1123_label(b) {
        if is_dns1123_subdomain(b) {
            // A valid subdomain that is no label: it has dots.
            errs.push("must not contain dots".into());
        } else {
            errs.push(regex_error(
                DNS1123_LABEL_MSG,
                DNS1123_LABEL_FMT,
                &["my-name", "123-abc"],
            ));
        }
    }
    errs
}

fn dns1123_subdomain(b: &[u8], unit: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if b.len() > 253 {
        errs.push(max_len_error(253, unit));
    }
    if !is_dns1123_subdomain(b) {
        errs.push(regex_error(
            DNS1123_SUBDOMAIN_MSG,
            DNS1123_SUBDOMAIN_FMT,
            &["example.com"],
        ));
    }
    errs
}

fn dns1035_label(b: &[u8]) -> Vec<String> {
    let mut errs = Vec::new();
    if b.len() > 63 {
        errs.push(max_len_error(63, CHARACTERS));
    }
    if !is_label(b, u8::is_ascii_lowercase) {
        errs.push(regex_error(
            DNS1035_LABEL_MSG,
            DNS1035_LABEL_FMT,
            &["my-name", "abc-123"],
        ));
    }
    errs
}

/// `([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]`
fn is_label_key_name(b: &[u8]) -> bool {
    let inner = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    match b {
        [] => false,
        [only] => only.is_ascii_alphanumeric(),
        [head, middle @ .., tail] => {
            head.is_ascii_alphanumeric() && middle.iter().all(inner) && tail.is_ascii_alphanumeric()
        }
    }
}

/// content.IsLabelKey: an optional DNS subdomain prefix and `/`, then a name.
fn qualified_name(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = s.split('/').collect();
    let name = match parts.as_slice() {
        [name] => name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                errs.extend(
                    dns1123_subdomain(prefix.as_bytes(), BYTES)
                        .into_iter()
                        .map(|m| format!("prefix part {m}")),
                );
            }
            name
        }
        _ => {
            return vec![format!(
                "a valid label key {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(
                    LABEL_KEY_MSG,
                    LABEL_KEY_FMT,
                    &["MyName", "my.name", "123-abc"]
                )
            )];
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".into());
    } else if name.len() > 63 {
        errs.push(format!("name part {}", max_len_error(63, BYTES)));
    }
    if !is_label_key_name(name.as_bytes()) {
        errs.push(format!(
            "name part {}",
            regex_error(
                LABEL_KEY_MSG,
                LABEL_KEY_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

fn label_value(b: &[u8]) -> Vec<String> {
    let mut errs = Vec::new();
    if b.len() > 63 {
        errs.push(max_len_error(63, BYTES));
    }
    if !b.is_empty() && !is_label_key_name(b) {
        errs.push(regex_error(
            LABEL_VALUE_MSG,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// apimachinery's `maskTrailingDash`, as it is: `ab-` becomes `aa`, not `aba`.
fn mask_trailing_dash(b: &[u8]) -> Vec<u8> {
    match b {
        [rest @ .., _, b'-'] if b.len() > 1 => {
            let mut out = rest.to_vec();
            out.push(b'a');
            out
        }
        _ => b.to_vec(),
    }
}

// ---------------------------------------------------------------------------------------------
// kube-openapi's strfmt validators.

/// `(?i)^[0-9a-f]{8}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{4}-?[0-9a-f]{12}$`
fn is_uuid(b: &[u8]) -> bool {
    let mut rest = b;
    for (i, n) in [8, 4, 4, 4, 12].into_iter().enumerate() {
        if i > 0
            && let Some(after) = rest.strip_prefix(b"-")
        {
            rest = after;
        }
        if rest.len() < n || !rest[..n].iter().all(u8::is_ascii_hexdigit) {
            return false;
        }
        rest = &rest[n..];
    }
    rest.is_empty()
}

/// govalidator's base64 pattern: groups of four, the last possibly padded with `=` or `==`.
fn is_base64(b: &[u8]) -> bool {
    let alphabet = |c: &u8| c.is_ascii_alphanumeric() || matches!(c, b'+' | b'/');
    if b.is_empty() || !b.len().is_multiple_of(4) {
        return false;
    }
    let data = match b {
        [rest @ .., b'=', b'='] => rest,
        [rest @ .., b'='] => rest,
        _ => b,
    };
    data.iter().all(alphabet)
}

/// Go's `time.Parse("2006-01-02", s)`: four-digit year, two-digit month and day, a day that
/// exists in that month.
fn is_date(b: &[u8]) -> bool {
    let digits = |r: &[u8]| -> Option<u32> {
        r.iter().try_fold(0u32, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + u32::from(c - b'0'))
        })
    };
    let [y0, y1, y2, y3, b'-', m0, m1, b'-', d0, d1] = b else {
        return false;
    };
    let (Some(year), Some(month), Some(day)) = (
        digits(&[*y0, *y1, *y2, *y3]),
        digits(&[*m0, *m1]),
        digits(&[*d0, *d1]),
    ) else {
        return false;
    };
    let leap = year % 4 == 0 && (year % 100 != 0 || year % 400 == 0);
    let days = match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&day)
}

/// strfmt's `IsDateTime`: lower-cased and split at `t`, a date before the first `t`, and
/// between it and the next `t` the pattern
/// `^([0-9]{2}):([0-9]{2}):([0-9]{2})(.[0-9]+)?(z|([+-][0-9]{2}:[0-9]{2}))$` with hours up to
/// 23 and minutes and seconds up to 59.
fn is_datetime(s: &str) -> bool {
    if s.len() < 4 {
        return false;
    }
    let lower = s.to_lowercase();
    let mut parts = lower.split('t');
    let (Some(date), Some(time)) = (parts.next(), parts.next()) else {
        return false;
    };
    if !is_date(date.as_bytes()) {
        return false;
    }
    let c: Vec<char> = time.chars().collect();
    let digit = |i: usize| c.get(i).is_some_and(char::is_ascii_digit);
    let clock = digit(0)
        && digit(1)
        && c.get(2) == Some(&':')
        && digit(3)
        && digit(4)
        && c.get(5) == Some(&':')
        && digit(6)
        && digit(7);
    if !clock {
        return false;
    }
    let zone = |t: &[char]| match t {
        ['z'] => true,
        [sign, h0, h1, ':', m0, m1] => {
            matches!(sign, '+' | '-') && [h0, h1, m0, m1].iter().all(|d| d.is_ascii_digit())
        }
        _ => false,
    };
    let rest = &c[8..];
    // The fraction is any character but a newline, then digits; a zone never starts with a
    // digit, so the digits run up to the zone.
    let fraction_then_zone = match rest.split_first() {
        Some((sep, after)) if *sep != '\n' => {
            let n = after.iter().take_while(|d| d.is_ascii_digit()).count();
            n > 0 && zone(&after[n..])
        }
        _ => false,
    };
    if !(zone(rest) || fraction_then_zone) {
        return false;
    }
    let two = |i: usize| &time[i..i + 2];
    // Digits checked above, so these are ASCII and the slices fall on characters.
    two(0) <= "23" && two(3) <= "59" && two(6) <= "59"
}

// ---------------------------------------------------------------------------------------------
// The CEL functions.

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload("format.named", "format-named", vec![STRING_TYPE], named)?;
    let constants: [(&str, cel::common::functions::Function); 13] = [
        ("dns1123Label", constant::<0>),
        ("dns1123Subdomain", constant::<1>),
        ("dns1035Label", constant::<2>),
        ("qualifiedName", constant::<3>),
        ("dns1123LabelPrefix", constant::<4>),
        ("dns1123SubdomainPrefix", constant::<5>),
        ("dns1035LabelPrefix", constant::<6>),
        ("labelValue", constant::<7>),
        ("uri", constant::<8>),
        ("uuid", constant::<9>),
        ("byte", constant::<10>),
        ("date", constant::<11>),
        ("datetime", constant::<12>),
    ];
    for ((name, f), (expected, _)) in constants.into_iter().zip(FORMATS) {
        // The two tables are in the same order; a slip fails every test run here.
        debug_assert_eq!(name, expected);
        env.add_overload(
            &format!("format.{name}"),
            &format!("format.{name}"),
            vec![],
            f,
        )?;
    }
    env.add_member_overload(
        "validate",
        "format-validate",
        DYN_TYPE,
        vec![STRING_TYPE],
        validate,
    )?;
    Ok(())
}

/// `format.<name>()`: the `I`th format of `FORMATS`.
fn constant<'b, 'v, const I: usize>(_: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(Value::Opaque(Arc::new(FORMATS[I].1)))
}

fn named<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let name = string_arg("format.named", &*args[0])?;
    let found = match NamedFormat::named(&name) {
        Some(f) => OptionalValue::of(Value::Opaque(Arc::new(f))),
        None => OptionalValue::none(),
    };
    ret(Value::Opaque(Arc::new(found)))
}

fn format_arg(v: &dyn Val) -> Result<NamedFormat, ExecutionError> {
    match value(v)? {
        Value::Opaque(o) => o.downcast_ref::<NamedFormat>().copied().ok_or_else(|| {
            ExecutionError::function_error("validate", "want a format, got another opaque value")
        }),
        other => Err(ExecutionError::function_error(
            "validate",
            format!(
                "want a format (format.named(s) or format.<name>()), got {}",
                super::type_name(&other)
            ),
        )),
    }
}

fn validate<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let format = format_arg(&*args[0])?;
    let s = string_arg("validate", &*args[1])?;
    let errors = format.validate(&s);
    let result = if errors.is_empty() {
        OptionalValue::none()
    } else {
        OptionalValue::of(Value::List(Arc::new(
            errors
                .into_iter()
                .map(|e| Value::String(Arc::new(e)))
                .collect(),
        )))
    };
    ret(Value::Opaque(Arc::new(result)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_a_trailing_dash_as_apimachinery_does() {
        for (input, want) in [
            ("ab-", "aa"),
            ("a-", "a"),
            ("-", "-"),
            ("abc", "abc"),
            ("example.-", "examplea"),
        ] {
            assert_eq!(
                mask_trailing_dash(input.as_bytes()),
                want.as_bytes(),
                "{input}"
            );
        }
    }

    #[test]
    fn validators() {
        use NamedFormat::*;
        for (format, input, valid) in [
            (Dns1123Label, "my-name", true),
            (Dns1123Label, "a.b", false),
            (Dns1123Subdomain, "a..b", false),
            (Dns1035Label, "1abc", false),
            (QualifiedName, "example.com/MyName", true),
            (QualifiedName, "a/b/c", false),
            (LabelValue, "", true),
            (LabelValue, "-a", false),
            (Dns1123SubdomainPrefix, "example.-", true),
            (Uuid, "123e4567e89b-12d3-a456426614174000", true),
            (Uuid, "123e4567--e89b-12d3-a456-426614174000", false),
            (Byte, "YQ==", true),
            (Byte, "YQ=", false),
            (Date, "2000-02-29", true),
            (Date, "1900-02-29", false),
            (Datetime, "2021-01-01T00:00:00,5Z", true),
            (Datetime, "2021-01-01T00:00:00ZT", true),
            (Datetime, "2021-01-01T23:59:60Z", false),
            (Uri, "relative", false),
        ] {
            assert_eq!(
                format.validate(input).is_empty(),
                valid,
                "{format:?} {input}"
            );
        }
    }

    #[test]
    fn messages_are_kubernetes_own() {
        assert_eq!(
            NamedFormat::Dns1123Label.validate("a.b"),
            vec!["must not contain dots".to_string()]
        );
        assert_eq!(
            NamedFormat::QualifiedName.validate("/"),
            vec![
                "prefix part must be non-empty".to_string(),
                "name part must be non-empty".to_string(),
                format!(
                    "name part {}",
                    regex_error(
                        LABEL_KEY_MSG,
                        LABEL_KEY_FMT,
                        &["MyName", "my.name", "123-abc"]
                    )
                ),
            ]
        );
        assert!(
            regex_error("m", "f", &["a", "b"])
                == "m (e.g. 'a',  or 'b', regex used for validation is 'f')"
        );
    }
}
