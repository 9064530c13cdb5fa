//! Text as Go's `strconv` writes it, where Kubernetes' CEL shows Go's output to a policy:
//! `strconv.Quote`, in error messages of the url and format libraries.

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
}
