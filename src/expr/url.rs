//! Kubernetes' CEL URL library: `url(s)`, `isURL(s)`, `getScheme()`, `getHost()`,
//! `getHostname()`, `getPort()`, `getEscapedPath()`, `getQuery()` and `==`.
//!
//! Kubernetes hands the string to Go's `net/url`: `url.ParseRequestURI` decides whether it is a
//! URL at all (an absolute URI or an absolute path, no fragment handling), then `url.Parse`
//! builds the value the accessors read, and `==` compares `URL.String()`. A policy sees every
//! quirk of those functions (which escapes a path keeps, that `HTTPS:` becomes `https:`, that a
//! `;` drops a query pair, that only http and https refuse a second colon in the host), so this
//! module follows them step for step rather than RFC 3986 or the `url` crate, which answer
//! differently in many of these places.
//!
//! Components are held as bytes: a `%ff` in a path or host unescapes to a byte that is no
//! UTF-8, and `String()` escapes it back exactly. The accessors return such bytes as U+FFFD.

use std::collections::HashMap;
use std::sync::Arc;

use cel::common::types::{DYN_TYPE, STRING_TYPE};
use cel::common::value::Val;
use cel::objects::{Key, Map, Opaque};
use cel::{DeclarationError, Env, ExecutionError, Value};

// Go's `strconv.Quote`, which error messages (and so `format.uri()`'s) show the input with.
use super::gofmt::quote as go_quote;
use super::library::{Args, Ret, ret, string_arg, value};

pub const URL_TYPE_NAME: &str = "kubernetes.URL";

/// A parsed URL, with the fields of Go's `url.URL` that its methods read.
#[derive(Clone, Debug)]
pub struct Url {
    scheme: String,
    /// Rootless text after the scheme (`mailto:a@b`), kept as written.
    opaque: String,
    user: Option<Userinfo>,
    /// `host[:port]`, unescaped.
    host: Vec<u8>,
    /// Unescaped.
    path: Vec<u8>,
    /// The path as written, when escaping `path` again would not give it back.
    raw_path: String,
    raw_query: String,
    fragment: Vec<u8>,
    raw_fragment: String,
    /// A `?` with nothing after it.
    force_query: bool,
    /// A scheme followed directly by `/`, without `//` and an authority.
    omit_host: bool,
    /// `String()`, computed once: equality compares it.
    text: String,
}

#[derive(Clone, Debug)]
struct Userinfo {
    username: Vec<u8>,
    password: Option<Vec<u8>>,
}

impl PartialEq for Url {
    fn eq(&self, other: &Url) -> bool {
        self.text == other.text
    }
}

impl Eq for Url {}

impl Opaque for Url {
    fn runtime_type_name(&self) -> &str {
        URL_TYPE_NAME
    }
}

/// Go's `URL.String()`.
impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

// ---------------------------------------------------------------------------------------------
// Escaping, as net/url's encoding modes define it.

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Path,
    Host,
    Zone,
    UserPassword,
    QueryComponent,
    Fragment,
}

fn should_escape(c: u8, mode: Mode) -> bool {
    if c.is_ascii_alphanumeric() {
        return false;
    }
    if matches!(mode, Mode::Host | Mode::Zone) && b"!$&'()*+,;=:[]<>\"".contains(&c) {
        return false;
    }
    match c {
        b'-' | b'_' | b'.' | b'~' => return false,
        b'$' | b'&' | b'+' | b',' | b'/' | b':' | b';' | b'=' | b'?' | b'@' => match mode {
            Mode::Path => return c == b'?',
            Mode::UserPassword => return matches!(c, b'@' | b'/' | b'?' | b':'),
            Mode::QueryComponent => return true,
            Mode::Fragment => return false,
            Mode::Host | Mode::Zone => {}
        },
        _ => {}
    }
    !(mode == Mode::Fragment && matches!(c, b'!' | b'(' | b')' | b'*'))
}

fn unhex(c: u8) -> u8 {
    match c {
        b'0'..=b'9' => c - b'0',
        b'a'..=b'f' => c - b'a' + 10,
        _ => c - b'A' + 10,
    }
}

/// Go's `unescape`: `%XX` sequences decoded, `+` a space in a query component. A host may
/// escape only non-ASCII bytes (and `%25`), and must not contain bytes it would escape.
fn unescape(s: &[u8], mode: Mode) -> Result<Vec<u8>, String> {
    let escape_error = |bad: &[u8]| format!("invalid URL escape {}", go_quote(bad));
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            b'%' => {
                if i + 2 >= s.len()
                    || !s[i + 1].is_ascii_hexdigit()
                    || !s[i + 2].is_ascii_hexdigit()
                {
                    return Err(escape_error(&s[i..(i + 3).min(s.len())]));
                }
                let seq = &s[i..i + 3];
                if mode == Mode::Host && unhex(s[i + 1]) < 8 && seq != b"%25" {
                    return Err(escape_error(seq));
                }
                if mode == Mode::Zone {
                    let v = (unhex(s[i + 1]) << 4) | unhex(s[i + 2]);
                    if seq != b"%25" && v != b' ' && should_escape(v, Mode::Host) {
                        return Err(escape_error(seq));
                    }
                }
                i += 3;
            }
            c => {
                if matches!(mode, Mode::Host | Mode::Zone) && c < 0x80 && should_escape(c, mode) {
                    return Err(format!(
                        "invalid character {} in host name",
                        go_quote(&s[i..i + 1])
                    ));
                }
                i += 1;
            }
        }
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        match s[i] {
            // Checked above: two hex digits follow.
            b'%' => {
                out.push((unhex(s[i + 1]) << 4) | unhex(s[i + 2]));
                i += 3;
            }
            b'+' if mode == Mode::QueryComponent => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    Ok(out)
}

/// Go's `escape`: the bytes the mode must escape as `%XX` (upper-case hex), so always ASCII.
fn escape(s: &[u8], mode: Mode) -> String {
    let mut out = String::with_capacity(s.len());
    for &c in s {
        if c == b' ' && mode == Mode::QueryComponent {
            out.push('+');
        } else if should_escape(c, mode) {
            out.push('%');
            out.push(char::from(b"0123456789ABCDEF"[usize::from(c >> 4)]));
            out.push(char::from(b"0123456789ABCDEF"[usize::from(c & 15)]));
        } else {
            out.push(char::from(c));
        }
    }
    out
}

/// Go's `validEncoded`: whether a raw path or fragment holds only bytes that may stand
/// unescaped.
fn valid_encoded(s: &str, mode: Mode) -> bool {
    s.bytes()
        .all(|c| b"!$&'()*+,;=:@[]%".contains(&c) || !should_escape(c, mode))
}

/// `^(:[0-9]*)?$`
fn valid_optional_port(port: &[u8]) -> bool {
    match port.split_first() {
        None => true,
        Some((b':', digits)) => digits.iter().all(u8::is_ascii_digit),
        Some(_) => false,
    }
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------------------------
// Parsing, as net/url's parse, Parse and ParseRequestURI.

/// `scheme:` when the text starts with one (`[a-zA-Z][a-zA-Z0-9+.-]*:`); else no scheme.
fn get_scheme(raw: &str) -> Result<(&str, &str), String> {
    for (i, c) in raw.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((&raw[..i], &raw[i + 1..])),
            _ => return Ok(("", raw)),
        }
    }
    Ok(("", raw))
}

fn valid_userinfo(s: &str) -> bool {
    s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._:~!$&'()*+,;=%@".contains(c))
}

fn parse_authority(scheme: &str, authority: &str) -> Result<(Option<Userinfo>, Vec<u8>), String> {
    let Some(at) = authority.rfind('@') else {
        return Ok((None, parse_host(scheme, authority)?));
    };
    let host = parse_host(scheme, &authority[at + 1..])?;
    let userinfo = &authority[..at];
    if !valid_userinfo(userinfo) {
        return Err("net/url: invalid userinfo".into());
    }
    let user = match userinfo.split_once(':') {
        None => Userinfo {
            username: unescape(userinfo.as_bytes(), Mode::UserPassword)?,
            password: None,
        },
        Some((name, password)) => Userinfo {
            username: unescape(name.as_bytes(), Mode::UserPassword)?,
            password: Some(unescape(password.as_bytes(), Mode::UserPassword)?),
        },
    };
    Ok((Some(user), host))
}

/// `host[:port]`: an IPv6 literal in brackets (with an RFC 6874 zone after `%25`), or a name
/// whose port, if any, is digits.
fn parse_host(scheme: &str, host: &str) -> Result<Vec<u8>, String> {
    let invalid_port = |p: &str| format!("invalid port {} after host", go_quote(p.as_bytes()));
    match host.rfind('[') {
        Some(open) if open > 0 => return Err("invalid IP-literal".into()),
        Some(_) => {
            let Some(close) = host.rfind(']') else {
                return Err("missing ']' in host".into());
            };
            let colon_port = &host[close + 1..];
            if !valid_optional_port(colon_port.as_bytes()) {
                return Err(invalid_port(colon_port));
            }
            // Only digits after the colon, so unescaping leaves it as it is.
            let hostname = &host[1..close];
            let mut unescaped = match hostname.find("%25") {
                Some(zone) => {
                    let mut h = unescape(&hostname.as_bytes()[..zone], Mode::Host)?;
                    h.extend(unescape(&hostname.as_bytes()[zone..], Mode::Zone)?);
                    h
                }
                None => unescape(hostname.as_bytes(), Mode::Host)?,
            };
            // Only an IPv6 address may stand in brackets.
            let is4 = super::net::parse_addr(&lossy(&unescaped))
                .map_err(|e| format!("invalid host: {e}"))?;
            if is4 {
                return Err("invalid IP-literal".into());
            }
            let mut out = vec![b'['];
            out.append(&mut unescaped);
            out.push(b']');
            out.extend_from_slice(colon_port.as_bytes());
            return Ok(out);
        }
        None => {}
    }
    if let Some(first) = host.find(':') {
        // A second colon: http and https refuse it (Go 1.26's default, urlstrictcolons=1);
        // other schemes take the port after the last colon (PostgreSQL's host lists).
        let last = host.rfind(':').unwrap_or(first);
        let colon = if scheme == "http" || scheme == "https" {
            first
        } else {
            last
        };
        if !valid_optional_port(&host.as_bytes()[colon..]) {
            return Err(invalid_port(&host[colon..]));
        }
    }
    unescape(host.as_bytes(), Mode::Host)
}

/// Go's `parse`: `via_request` is ParseRequestURI's (only an absolute URI or an absolute
/// path); otherwise any reference, as Parse reads it after cutting the fragment.
fn parse(raw: &str, via_request: bool) -> Result<Url, String> {
    if raw.bytes().any(|b| b < b' ' || b == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    if raw.is_empty() && via_request {
        return Err("empty url".into());
    }
    let mut url = Url {
        scheme: String::new(),
        opaque: String::new(),
        user: None,
        host: Vec::new(),
        path: Vec::new(),
        raw_path: String::new(),
        raw_query: String::new(),
        fragment: Vec::new(),
        raw_fragment: String::new(),
        force_query: false,
        omit_host: false,
        text: String::new(),
    };
    if raw == "*" {
        url.path = b"*".to_vec();
        return Ok(url);
    }
    let (scheme, mut rest) = get_scheme(raw)?;
    url.scheme = scheme.to_ascii_lowercase();
    if rest.ends_with('?') && rest.matches('?').count() == 1 {
        url.force_query = true;
        rest = &rest[..rest.len() - 1];
    } else if let Some((before, query)) = rest.split_once('?') {
        rest = before;
        url.raw_query = query.to_string();
    }
    if !rest.starts_with('/') {
        if !url.scheme.is_empty() {
            // A rootless path after a scheme is opaque (RFC 3986).
            url.opaque = rest.to_string();
            return Ok(url);
        }
        if via_request {
            return Err("invalid URI for request".into());
        }
        let segment = rest.split('/').next().unwrap_or_default();
        if segment.contains(':') {
            return Err("first path segment in URL cannot contain colon".into());
        }
    }
    if (!url.scheme.is_empty() || !via_request && !rest.starts_with("///"))
        && rest.starts_with("//")
    {
        let (authority, path) = match rest[2..].find('/') {
            Some(i) => (&rest[2..2 + i], &rest[2 + i..]),
            None => (&rest[2..], ""),
        };
        (url.user, url.host) = parse_authority(&url.scheme, authority)?;
        rest = path;
    } else if !url.scheme.is_empty() && rest.starts_with('/') {
        url.omit_host = true;
    }
    url.path = unescape(rest.as_bytes(), Mode::Path)?;
    if escape(&url.path, Mode::Path) != rest {
        url.raw_path = rest.to_string();
    }
    Ok(url)
}

impl Url {
    /// `url.ParseRequestURI`, with its error text.
    pub fn parse_request_uri(raw: &str) -> Result<Url, String> {
        parse(raw, true)
            .map(Url::finish)
            .map_err(|e| format!("parse {}: {e}", go_quote(raw.as_bytes())))
    }

    /// `url.Parse`: the fragment cut off first, then any reference.
    pub fn parse_reference(raw: &str) -> Result<Url, String> {
        let (before, frag) = raw.split_once('#').unwrap_or((raw, ""));
        let mut url = parse(before, false)
            .map_err(|e| format!("parse {}: {e}", go_quote(before.as_bytes())))?;
        if !frag.is_empty() {
            url.fragment = unescape(frag.as_bytes(), Mode::Fragment)
                .map_err(|e| format!("parse {}: {e}", go_quote(raw.as_bytes())))?;
            if escape(&url.fragment, Mode::Fragment) != frag {
                url.raw_fragment = frag.to_string();
            }
        }
        Ok(url.finish())
    }

    /// What `url(s)` returns: Kubernetes checks with ParseRequestURI, which mistakes a
    /// fragment for part of the path or query, and keeps what Parse reads.
    pub fn parse(raw: &str) -> Result<Url, String> {
        Url::parse_request_uri(raw)
            .and_then(|_| Url::parse_reference(raw))
            .map_err(|e| format!("URL parse error during conversion from string: {e}"))
    }

    fn finish(mut self) -> Url {
        self.text = self.go_string();
        self
    }

    pub fn scheme(&self) -> &str {
        &self.scheme
    }

    pub fn host(&self) -> String {
        lossy(&self.host)
    }

    /// The host without a valid port and without IPv6 brackets.
    pub fn hostname(&self) -> String {
        lossy(split_host_port(&self.host).0)
    }

    /// The digits after the last colon of the host, if they form a port.
    pub fn port(&self) -> String {
        lossy(split_host_port(&self.host).1)
    }

    /// Go's `EscapedPath`: the path as written when that is a valid escaping of it, else the
    /// path escaped the default way.
    pub fn escaped_path(&self) -> String {
        if !self.raw_path.is_empty()
            && valid_encoded(&self.raw_path, Mode::Path)
            && unescape(self.raw_path.as_bytes(), Mode::Path).is_ok_and(|p| p == self.path)
        {
            return self.raw_path.clone();
        }
        if self.path == b"*" {
            return "*".into();
        }
        escape(&self.path, Mode::Path)
    }

    fn escaped_fragment(&self) -> String {
        if !self.raw_fragment.is_empty()
            && valid_encoded(&self.raw_fragment, Mode::Fragment)
            && unescape(self.raw_fragment.as_bytes(), Mode::Fragment)
                .is_ok_and(|f| f == self.fragment)
        {
            return self.raw_fragment.clone();
        }
        escape(&self.fragment, Mode::Fragment)
    }

    /// Go's `URL.Query()`: `url.ParseQuery` with its errors ignored, so a pair containing `;`
    /// or a bad escape is dropped, and more than 10,000 pairs give nothing.
    pub fn query(&self) -> Vec<(String, Vec<String>)> {
        let mut out: Vec<(String, Vec<String>)> = Vec::new();
        if self.raw_query.matches('&').count() + 1 > 10_000 {
            return out;
        }
        for pair in self.raw_query.split('&') {
            if pair.is_empty() || pair.contains(';') {
                continue;
            }
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let (Ok(k), Ok(v)) = (
                unescape(k.as_bytes(), Mode::QueryComponent),
                unescape(v.as_bytes(), Mode::QueryComponent),
            ) else {
                continue;
            };
            let (k, v) = (lossy(&k), lossy(&v));
            match out.iter_mut().find(|(key, _)| *key == k) {
                Some((_, values)) => values.push(v),
                None => out.push((k, vec![v])),
            }
        }
        out
    }

    /// Go's `URL.String()`.
    fn go_string(&self) -> String {
        let mut buf = String::new();
        if !self.scheme.is_empty() {
            buf.push_str(&self.scheme);
            buf.push(':');
        }
        if !self.opaque.is_empty() {
            buf.push_str(&self.opaque);
        } else {
            let no_authority = self.host.is_empty() && self.user.is_none();
            // An authority is written after a scheme, unless the URL had none (`http:/p`).
            let authority = !(no_authority && (self.scheme.is_empty() || self.omit_host));
            if authority {
                if !self.host.is_empty() || !self.path.is_empty() || self.user.is_some() {
                    buf.push_str("//");
                }
                if let Some(user) = &self.user {
                    buf.push_str(&escape(&user.username, Mode::UserPassword));
                    if let Some(p) = &user.password {
                        buf.push(':');
                        buf.push_str(&escape(p, Mode::UserPassword));
                    }
                    buf.push('@');
                }
                buf.push_str(&escape(&self.host, Mode::Host));
            }
            let path = self.escaped_path();
            if !path.is_empty() && !path.starts_with('/') && !self.host.is_empty() {
                buf.push('/');
            }
            // A relative path whose first segment has a colon would read as a scheme.
            if buf.is_empty() && path.split('/').next().is_some_and(|s| s.contains(':')) {
                buf.push_str("./");
            }
            buf.push_str(&path);
        }
        if self.force_query || !self.raw_query.is_empty() {
            buf.push('?');
            buf.push_str(&self.raw_query);
        }
        if !self.fragment.is_empty() {
            buf.push('#');
            buf.push_str(&self.escaped_fragment());
        }
        buf
    }
}

/// Go's `splitHostPort` of url: a port only when all digits; brackets removed.
fn split_host_port(host: &[u8]) -> (&[u8], &[u8]) {
    let (mut name, mut port) = (host, &host[host.len()..]);
    if let Some(colon) = host.iter().rposition(|c| *c == b':')
        && valid_optional_port(&host[colon..])
    {
        (name, port) = (&host[..colon], &host[colon + 1..]);
    }
    if name.len() >= 2 && name.starts_with(b"[") && name.ends_with(b"]") {
        name = &name[1..name.len() - 1];
    }
    (name, port)
}

// ---------------------------------------------------------------------------------------------
// The CEL functions.

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload("url", "string_to_url", vec![STRING_TYPE], url_of)?;
    env.add_overload("isURL", "is_url_string", vec![STRING_TYPE], is_url)?;
    env.add_member_overload(
        "getScheme",
        "url_get_scheme",
        DYN_TYPE,
        vec![],
        get_scheme_fn,
    )?;
    env.add_member_overload("getHost", "url_get_host", DYN_TYPE, vec![], get_host)?;
    env.add_member_overload(
        "getHostname",
        "url_get_hostname",
        DYN_TYPE,
        vec![],
        get_hostname,
    )?;
    env.add_member_overload("getPort", "url_get_port", DYN_TYPE, vec![], get_port)?;
    env.add_member_overload(
        "getEscapedPath",
        "url_get_escaped_path",
        DYN_TYPE,
        vec![],
        get_escaped_path,
    )?;
    env.add_member_overload("getQuery", "url_get_query", DYN_TYPE, vec![], get_query)?;
    Ok(())
}

/// `f` of the URL `v` holds; an error for any other value.
fn with_url<T>(
    function: &str,
    v: &dyn Val,
    f: impl FnOnce(&Url) -> T,
) -> Result<T, ExecutionError> {
    match value(v)? {
        Value::Opaque(o) => o.downcast_ref::<Url>().map(f).ok_or_else(|| {
            ExecutionError::function_error(function, "want url, got another opaque value")
        }),
        other => Err(ExecutionError::function_error(
            function,
            format!(
                "want url, got {}; convert with url(s)",
                super::type_name(&other)
            ),
        )),
    }
}

fn url_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("url", &*args[0])?;
    let url = Url::parse(&s).map_err(|e| ExecutionError::function_error("url", e))?;
    ret(Value::Opaque(Arc::new(url)))
}

fn is_url<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("isURL", &*args[0])?;
    ret(Value::Bool(Url::parse_request_uri(&s).is_ok()))
}

fn string_of<'b, 'v>(args: &Args<'b, 'v>, name: &str, f: fn(&Url) -> String) -> Ret<'b, 'v> {
    ret(Value::String(Arc::new(with_url(name, &*args[0], f)?)))
}

fn get_scheme_fn<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    string_of(&args, "getScheme", |u| u.scheme().to_string())
}

fn get_host<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    string_of(&args, "getHost", Url::host)
}

fn get_hostname<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    string_of(&args, "getHostname", Url::hostname)
}

fn get_port<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    string_of(&args, "getPort", Url::port)
}

fn get_escaped_path<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    string_of(&args, "getEscapedPath", Url::escaped_path)
}

fn get_query<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let query = with_url("getQuery", &*args[0], Url::query)?;
    let map: HashMap<Key, Value> = query
        .into_iter()
        .map(|(k, vs)| {
            let list = vs.into_iter().map(|v| Value::String(Arc::new(v))).collect();
            (Key::String(Arc::new(k)), Value::List(Arc::new(list)))
        })
        .collect();
    ret(Value::Map(Map { map: Arc::new(map) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_as_go_writes_them() {
        for (input, want) in [
            ("HTTPS://Example.com", "https://Example.com"),
            ("http://example.com/a b", "http://example.com/a%20b"),
            ("http://example.com/%41", "http://example.com/%41"),
            (
                "http://user:p@ss@example.com/",
                "http://user:p%40ss@example.com/",
            ),
            ("http://a:b:c@example.com/", "http://a:b%3Ac@example.com/"),
            ("http://%c3%bc.com/", "http://%C3%BC.com/"),
            ("https://example.com/p?#", "https://example.com/p?"),
            ("http://example.com/p#a#b", "http://example.com/p#a%23b"),
            ("http:///path", "http:///path"),
            ("a:", "a:"),
            ("*", "*"),
            ("mailto:user@example.com", "mailto:user@example.com"),
        ] {
            assert_eq!(
                Url::parse(input).map(|u| u.to_string()),
                Ok(want.into()),
                "{input}"
            );
        }
    }

    #[test]
    fn refuses_what_go_refuses() {
        for (input, want) in [
            ("", "parse \"\": empty url"),
            ("relative", "parse \"relative\": invalid URI for request"),
            (
                "http://a b/",
                "parse \"http://a b/\": invalid character \" \" in host name",
            ),
            (
                "http://h:1:2/",
                "parse \"http://h:1:2/\": invalid port \":1:2\" after host",
            ),
            (
                "http://[1.2.3.4]/",
                "parse \"http://[1.2.3.4]/\": invalid IP-literal",
            ),
            (
                "http://e.com/%zz",
                "parse \"http://e.com/%zz\": invalid URL escape \"%zz\"",
            ),
            (
                "http://e.com/\u{7f}",
                "parse \"http://e.com/\\x7f\": net/url: invalid control character in URL",
            ),
            (
                "http://ex#a.com/",
                "parse \"http://ex#a.com/\": invalid character \"#\" in host name",
            ),
        ] {
            assert_eq!(
                Url::parse_request_uri(input).err().as_deref(),
                Some(want),
                "{input}"
            );
        }
        // ParseRequestURI reads a fragment as part of the path, whose escape fails; after a
        // `?` it is part of the query, which neither checks, so only Parse's fragment does.
        assert!(Url::parse_request_uri("http://e.com/p#%zz").is_err());
        assert!(Url::parse_request_uri("http://e.com/p?#%zz").is_ok());
        assert!(Url::parse("http://e.com/p?#%zz").is_err());
    }

    #[test]
    fn accessors() {
        let u = |s| Url::parse(s).unwrap_or_else(|e| panic!("{e}"));
        let v6 = u("http://[fe80::1%25en0]:8080/a%2Fb?x=1&x=2&y;=3&z=%zz&w=a+b#f");
        assert_eq!(v6.host(), "[fe80::1%en0]:8080");
        assert_eq!(v6.hostname(), "fe80::1%en0");
        assert_eq!(v6.port(), "8080");
        assert_eq!(v6.escaped_path(), "/a%2Fb");
        assert_eq!(
            v6.query(),
            vec![
                ("x".into(), vec!["1".into(), "2".into()]),
                ("w".into(), vec!["a b".into()])
            ]
        );
        let pg = u("postgres://h1:5432,h2:5433/db");
        assert_eq!(
            (pg.hostname(), pg.port()),
            ("h1:5432,h2".into(), "5433".into())
        );
        assert_eq!(u("http://example.com:/").port(), "");
        assert_eq!(
            u("https://example.com/a[b] c").escaped_path(),
            "/a%5Bb%5D%20c"
        );
    }
}
