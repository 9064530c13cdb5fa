//! A small OCI distribution client on reqwest: catalog, tags with `Link` paging, manifests by
//! digest, image config, referrers (OCI 1.1 API with the tag-schema fallback), and DELETE of a
//! manifest by digest. Auth: anonymous, basic, and the bearer-token flow with per-scope tokens.
//! Every request is idempotent, so each is retried with jittered exponential backoff while the
//! registry is unreachable, times out, answers 429 (honouring `Retry-After` up to a cap) or 500,
//! 502, 503, 504; requests are counted by kind, so that tests and benchmarks can say what a
//! sweep costs. A registry is not trusted to be well-behaved: bodies are read up to a limit per
//! kind of response, headers are parsed without assumptions, and a listing is complete or an
//! error.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, LINK, RETRY_AFTER, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::auth::Credentials;
use super::ca::ExtraRoots;

pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// The most a manifest or config may weigh before we refuse to read it: the size the OCI
/// distribution spec says registries should accept manifests up to.
const MAX_DOCUMENT: usize = 4 << 20;
/// The most a page of a tag, catalog or referrers listing may weigh. 1000 tags (the page size
/// asked for) of the longest names allowed take some 130 KiB; a referrers index carries
/// annotations, so it is given far more room, but not without end.
const MAX_LIST_PAGE: usize = 8 << 20;
/// A token response is a token, some KiB of JWT at most, and a few fields.
const MAX_TOKEN_RESPONSE: usize = 1 << 20;
/// An error body is read only for the message in it: what follows this much is dropped, and
/// the error stays the registry's own, not one about its size.
const MAX_ERROR_BODY: usize = 64 << 10;
/// A registry that ignores paging would loop forever: a listing of more pages than this is an
/// error (ten million tags at the 1000 a page asked for).
const MAX_PAGES: usize = 10_000;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RegistryError {
    #[error("{action}: registry {registry} is unreachable: {message}{}", gave_up(*attempts))]
    Unreachable {
        action: String,
        registry: String,
        message: String,
        attempts: u32,
    },
    #[error("{action} at {registry}: HTTP {status} {code}: {message}{}", gave_up(*attempts))]
    Http {
        action: String,
        registry: String,
        status: u16,
        code: String,
        message: String,
        attempts: u32,
    },
    #[error(
        "{action}: the registry does not allow deleting manifests (HTTP {status} {code}); enable deletes in its configuration"
    )]
    DeleteUnsupported {
        action: String,
        status: u16,
        code: String,
    },
    #[error(
        "{action} at {registry}: the credentials do not allow deleting in repository {repository} (HTTP {status} {code}: {message}); grant them the delete action on it (token scope repository:{repository}:delete)"
    )]
    DeleteDenied {
        action: String,
        registry: String,
        repository: String,
        status: u16,
        code: String,
        message: String,
    },
    /// The TLS handshake failed on the registry's certificate: retrying cannot help.
    #[error("{action}: registry {registry}: {message}")]
    Tls {
        action: String,
        registry: String,
        message: String,
    },
    #[error("{action}: {message}")]
    Protocol { action: String, message: String },
    /// The registry sent or announced a body larger than this client reads for that kind of
    /// response: reading on could exhaust memory.
    #[error("{action} at {registry}: the response{} is larger than the {limit} bytes this client reads", declared_size(*declared))]
    TooLarge {
        action: String,
        registry: String,
        limit: usize,
        /// Its Content-Length, when it had one.
        declared: Option<u64>,
    },
    /// A later page of a listing failed after earlier pages were read. Taking what was read for
    /// the whole would make the tags left out look gone, and their digests untagged.
    #[error(
        "{action} at {registry}: page {page} answered HTTP {status} {code}: {message}; the listing is incomplete"
    )]
    IncompleteListing {
        action: String,
        registry: String,
        page: usize,
        status: u16,
        code: String,
        message: String,
    },
    /// The listing went on for more pages than this client follows.
    #[error(
        "{action} at {registry}: more than {pages} pages; the listing is incomplete (does the registry honour `n` and `last`?)"
    )]
    TooManyPages {
        action: String,
        registry: String,
        pages: usize,
    },
    /// A page's `Link` header cannot be read: whether more pages follow is unknown, so the
    /// listing cannot be taken as complete.
    #[error(
        "{action} at {registry}: page {page} has a Link header that cannot be read ({reason}); the listing would be incomplete"
    )]
    MalformedLink {
        action: String,
        registry: String,
        page: usize,
        reason: String,
    },
}

fn declared_size(declared: Option<u64>) -> String {
    declared
        .map(|n| format!(" of {n} bytes"))
        .unwrap_or_default()
}

/// How an error says that retries did not help.
fn gave_up(attempts: u32) -> String {
    if attempts > 1 {
        format!(" (gave up after {attempts} attempts)")
    } else {
        String::new()
    }
}

impl RegistryError {
    /// Whether the registry refused our credentials (or their absence).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            RegistryError::Http {
                status: 401 | 403,
                ..
            } | RegistryError::DeleteDenied { .. }
        )
    }

    /// Whether trying the same request again may succeed: the registry was unreachable or
    /// timed out, asked us to slow down (429), or failed on its side (500, 502, 503, 504).
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Http { status, .. } => transient_status(*status),
            _ => false,
        }
    }

    fn with_attempts(mut self, n: u32) -> RegistryError {
        match &mut self {
            RegistryError::Unreachable { attempts, .. } | RegistryError::Http { attempts, .. } => {
                *attempts = n
            }
            _ => {}
        }
        self
    }
}

fn transient_status(status: u16) -> bool {
    matches!(status, 429 | 500 | 502 | 503 | 504)
}

/// The kinds of request a sweep makes; what `RequestCounts` counts by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RequestKind {
    Catalog,
    TagList,
    ManifestHead,
    ManifestGet,
    BlobGet,
    Referrers,
    Delete,
    Token,
}

impl RequestKind {
    pub const ALL: [RequestKind; 8] = [
        RequestKind::Catalog,
        RequestKind::TagList,
        RequestKind::ManifestHead,
        RequestKind::ManifestGet,
        RequestKind::BlobGet,
        RequestKind::Referrers,
        RequestKind::Delete,
        RequestKind::Token,
    ];

    /// The metric label and report name.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestKind::Catalog => "catalog",
            RequestKind::TagList => "tag_list",
            RequestKind::ManifestHead => "manifest_head",
            RequestKind::ManifestGet => "manifest_get",
            RequestKind::BlobGet => "blob_get",
            RequestKind::Referrers => "referrers",
            RequestKind::Delete => "delete",
            RequestKind::Token => "token",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// HTTP requests sent, by kind, retries included; and how many of them were retries.
#[derive(Debug, Default)]
pub struct RequestCounts {
    sent: [AtomicU64; 8],
    retried: [AtomicU64; 8],
}

impl RequestCounts {
    fn add(&self, kind: RequestKind) {
        self.sent[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    fn add_retry(&self, kind: RequestKind) {
        self.retried[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    pub fn get(&self, kind: RequestKind) -> u64 {
        self.sent[kind.index()].load(Ordering::Relaxed)
    }

    pub fn manifest_requests(&self) -> u64 {
        self.get(RequestKind::ManifestHead) + self.get(RequestKind::ManifestGet)
    }

    /// The counts so far.
    pub fn snapshot(&self) -> RequestTally {
        RequestTally {
            sent: std::array::from_fn(|i| self.sent[i].load(Ordering::Relaxed)),
            retried: std::array::from_fn(|i| self.retried[i].load(Ordering::Relaxed)),
        }
    }

    /// The counts so far, starting again from zero: for exporting them as increments.
    pub fn take(&self) -> RequestTally {
        RequestTally {
            sent: std::array::from_fn(|i| self.sent[i].swap(0, Ordering::Relaxed)),
            retried: std::array::from_fn(|i| self.retried[i].swap(0, Ordering::Relaxed)),
        }
    }
}

/// A copy of `RequestCounts` at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RequestTally {
    sent: [u64; 8],
    retried: [u64; 8],
}

impl RequestTally {
    pub fn get(&self, kind: RequestKind) -> u64 {
        self.sent[kind.index()]
    }

    pub fn retries(&self, kind: RequestKind) -> u64 {
        self.retried[kind.index()]
    }

    pub fn total(&self) -> u64 {
        self.sent.iter().sum()
    }

    /// The requests made between `earlier` and this tally.
    pub fn since(&self, earlier: &RequestTally) -> RequestTally {
        RequestTally {
            sent: std::array::from_fn(|i| self.sent[i].saturating_sub(earlier.sent[i])),
            retried: std::array::from_fn(|i| self.retried[i].saturating_sub(earlier.retried[i])),
        }
    }

    /// The kinds with at least one request, and how many.
    pub fn nonzero(&self) -> Vec<(RequestKind, u64)> {
        RequestKind::ALL
            .iter()
            .map(|k| (*k, self.get(*k)))
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

impl std::fmt::Display for RequestTally {
    /// `tag_list=20 manifest_head=2000`, or `none`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parts: Vec<String> = self
            .nonzero()
            .iter()
            .map(|(k, n)| match self.retries(*k) {
                0 => format!("{}={n}", k.as_str()),
                r => format!("{}={n} ({r} retries)", k.as_str()),
            })
            .collect();
        if parts.is_empty() {
            f.write_str("none")
        } else {
            f.write_str(&parts.join(" "))
        }
    }
}

/// How a failed request is tried again: idempotent requests only (every request this client
/// makes is: GET, HEAD, and DELETE by digest), a bounded number of times, with jittered
/// exponential backoff, within a total time budget.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; 1 means no retries.
    pub attempts: u32,
    /// The first backoff; each next one doubles, up to `max_backoff`.
    pub base: Duration,
    pub max_backoff: Duration,
    /// The longest `Retry-After` honoured; a registry that asks for more is not retried.
    pub max_retry_after: Duration,
    /// No retry starts once this long has passed since the first attempt, waiting included.
    pub budget: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            base: Duration::from_millis(200),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(10),
            budget: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// The wait before attempt `attempt + 1`: half the exponential step plus a random part of
    /// the other half, so that concurrent workers do not retry in lockstep.
    fn backoff(&self, attempt: u32) -> Duration {
        let step = self
            .base
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        step / 2 + step.mul_f64(jitter() / 2.0)
    }
}

/// A number in [0, 1) for backoff jitter. Not for anything secret: a splitmix64 sequence
/// seeded from the clock, which is all spreading retries apart needs.
fn jitter() -> f64 {
    static STATE: AtomicU64 = AtomicU64::new(0);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0x9e37_79b9_7f4a_7c15);
    let mut z = STATE
        .fetch_add(0x9e37_79b9_7f4a_7c15, Ordering::Relaxed)
        .wrapping_add(seed);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
}

/// `Retry-After`: delay-seconds or an HTTP date.
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    parse_retry_after(
        headers.get(RETRY_AFTER)?.to_str().ok()?,
        jiff::Timestamp::now(),
    )
}

/// A `Retry-After` value, delay-seconds or an HTTP date, as the wait from `now`; a date in the
/// past is no wait, and anything else None (the caller's own backoff then applies).
pub fn parse_retry_after(value: &str, now: jiff::Timestamp) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = jiff::fmt::rfc2822::parse(v).ok()?.timestamp();
    Some(Duration::try_from(at.duration_since(now)).unwrap_or(Duration::ZERO))
}

/// What a DELETE did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Deleted {
    /// The registry deleted it (or a retry found it gone after an earlier attempt whose
    /// answer was lost: DELETE by digest is idempotent).
    Now,
    /// It was gone before this delete.
    AlreadyGone,
}

/// A response, and how many attempts it took.
struct Sent {
    resp: Response,
    attempts: u32,
}

/// One request to send: what it is for, and how.
struct Req<'a> {
    action: &'a str,
    kind: RequestKind,
    method: Method,
    url: &'a str,
    accept: Option<&'a str>,
    scope: &'a str,
}

pub struct RegistryClient {
    base: String,
    host: String,
    http: reqwest::Client,
    creds: Option<Credentials>,
    tokens: Mutex<HashMap<String, String>>,
    /// The registry answered with a Basic challenge: send the credentials up front from then
    /// on, rather than being refused once per request.
    basic: AtomicBool,
    retry: RetryPolicy,
    pub counts: RequestCounts,
}

/// A manifest as fetched: its digest, media type and bytes.
pub struct Fetched {
    pub digest: String,
    pub media_type: String,
    pub body: Vec<u8>,
}

/// What to do with a body that goes on past its limit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Overflow {
    /// Fail: the body is what the caller needs, and a part of it would mislead.
    Refuse,
    /// Keep what came before the limit: enough of an error body to say what went wrong.
    Truncate,
}

/// Why a body could not be read.
enum ReadError {
    Transport(reqwest::Error),
    TooLarge { declared: Option<u64> },
}

/// Reads a response's body chunk by chunk, never holding more than `limit` bytes and one chunk:
/// a broken or hostile registry can send an endless body, and reading it whole before checking
/// its size would hold all of it in memory. A Content-Length over the limit is refused before
/// anything is read. What is beyond the limit is never read; dropping the response closes the
/// connection.
async fn read_body(
    mut resp: Response,
    limit: usize,
    overflow: Overflow,
) -> Result<Vec<u8>, ReadError> {
    let declared = resp.content_length();
    if overflow == Overflow::Refuse && declared.is_some_and(|n| n > limit as u64) {
        return Err(ReadError::TooLarge { declared });
    }
    // The declared length sizes the buffer only up to the limit: the header may lie.
    let capacity = declared.map_or(0, |n| n.min(limit as u64) as usize);
    let mut body = Vec::with_capacity(capacity);
    while let Some(chunk) = resp.chunk().await.map_err(ReadError::Transport)? {
        let room = limit.saturating_sub(body.len());
        if chunk.len() > room {
            return match overflow {
                Overflow::Refuse => Err(ReadError::TooLarge { declared }),
                Overflow::Truncate => {
                    body.extend_from_slice(chunk.get(..room).unwrap_or_default());
                    Ok(body)
                }
            };
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Spaces and tabs: the optional whitespace of HTTP headers.
const OWS: [char; 2] = [' ', '\t'];

/// The start of `s`, for error messages about header text a registry sent, which can be long.
fn excerpt(s: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = s.chars().take(MAX).collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// HTTP's token characters (RFC 9110, section 5.6.2).
fn is_tchar(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c)
}

/// The token at the start of `s` (possibly empty), and what follows it.
fn split_token(s: &str) -> (&str, &str) {
    let end = s.find(|c| !is_tchar(c)).unwrap_or(s.len());
    s.split_at_checked(end).unwrap_or((s, ""))
}

/// A quoted-string's content, from just after its opening quote: the unescaped value and the
/// text after the closing quote; None when the quote is never closed.
fn quoted(s: &str) -> Option<(String, &str)> {
    let mut value = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, s.get(i + 1..)?)),
            '\\' => value.push(chars.next()?.1),
            c => value.push(c),
        }
    }
    None
}

/// Why a `Link` header could not be read.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LinkError {
    #[error("it is not visible ASCII text")]
    NotText,
    #[error("a link does not start with '<': {0:?}")]
    NoTarget(String),
    #[error("a link's '<' is never closed by '>'")]
    Unclosed,
    #[error("a link parameter has no name: {0:?}")]
    ParameterWithoutName(String),
    #[error("a link parameter has no value after '=', or its quotes are never closed: {0:?}")]
    ParameterWithoutValue(String),
    #[error("unexpected text after a link: {0:?}")]
    Trailing(String),
    #[error("the next page's URL {target:?} is not a URL: {reason}")]
    BadTarget { target: String, reason: String },
}

/// The target of the first link with relation `next` in one `Link` header value (RFC 8288:
/// `<uri-reference>; rel="next"`, relations compared without case, `rel` possibly a
/// space-separated list or an unquoted token), as written: relative references are resolved
/// by the caller against the page's URL. Ok(None) when no link is `next`, the header empty
/// included.
///
/// Anything else is an error, not None: the header is the only way a registry says that more
/// pages follow, so reading an unreadable one as "no next page" would take a partial tag list
/// for a complete one, and the digests of the tags it leaves out would look untagged.
pub fn next_link(value: &str) -> Result<Option<String>, LinkError> {
    let mut next = None;
    let mut rest = value;
    loop {
        // `#link-value`: empty list elements are allowed.
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            return Ok(next);
        }
        let after = rest
            .strip_prefix('<')
            .ok_or_else(|| LinkError::NoTarget(excerpt(rest)))?;
        let (target, after) = after.split_once('>').ok_or(LinkError::Unclosed)?;
        rest = after;
        let mut is_next = false;
        while let Some(param) = rest.trim_start_matches(OWS).strip_prefix(';') {
            let param = param.trim_start_matches(OWS);
            let (name, after) = split_token(param);
            if name.is_empty() {
                return Err(LinkError::ParameterWithoutName(excerpt(param)));
            }
            let after = after.trim_start_matches(OWS);
            rest = match after.strip_prefix('=') {
                None => after,
                Some(v) => {
                    let v = v.trim_start_matches(OWS);
                    let (value, after) = match v.strip_prefix('"') {
                        Some(q) => quoted(q)
                            .ok_or_else(|| LinkError::ParameterWithoutValue(excerpt(param)))?,
                        None => match split_token(v) {
                            ("", _) => {
                                return Err(LinkError::ParameterWithoutValue(excerpt(param)));
                            }
                            (t, after) => (t.to_string(), after),
                        },
                    };
                    if name.eq_ignore_ascii_case("rel")
                        && value
                            .split_ascii_whitespace()
                            .any(|r| r.eq_ignore_ascii_case("next"))
                    {
                        is_next = true;
                    }
                    after
                }
            };
        }
        rest = rest.trim_start_matches(OWS);
        if !rest.is_empty() && !rest.starts_with(',') {
            return Err(LinkError::Trailing(excerpt(rest)));
        }
        if is_next && next.is_none() {
            next = Some(target.to_string());
        }
    }
}

/// The next page's URL from a response's `Link` headers (each field line read on its own, all
/// of them checked), resolved against the URL of the page that carries them, its link context.
fn next_page(headers: &HeaderMap, page: &reqwest::Url) -> Result<Option<String>, LinkError> {
    let mut next = None;
    for value in headers.get_all(LINK) {
        let text = value.to_str().map_err(|_| LinkError::NotText)?;
        if let Some(target) = next_link(text)? {
            next.get_or_insert(target);
        }
    }
    next.map(|target| {
        page.join(&target)
            .map(String::from)
            .map_err(|e| LinkError::BadTarget {
                target: excerpt(&target),
                reason: e.to_string(),
            })
    })
    .transpose()
}

/// One challenge of a `WWW-Authenticate` header: its scheme and its parameters, both lowercased
/// (parameter values as sent).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Challenge {
    pub scheme: String,
    pub params: HashMap<String, String>,
}

/// The challenges of one `WWW-Authenticate` value (RFC 9110, section 11.6.1), such as
/// `Bearer realm="..",service="..",scope=".."`: a header may carry several, `Basic realm="a",
/// Bearer realm="b"`. Lenient, as registries are: an unquoted value runs to the next comma (a
/// scope's `:` and `/` are not token characters), an unclosed quote to the end; parts that are
/// neither a scheme nor a parameter are skipped.
pub fn parse_challenges(header: &str) -> Vec<Challenge> {
    let mut out: Vec<Challenge> = Vec::new();
    let mut rest = header;
    loop {
        rest = rest.trim_start_matches([',', ' ', '\t']);
        if rest.is_empty() {
            return out;
        }
        let (name, after) = split_token(rest);
        if name.is_empty() {
            // Every turn consumes something: `rest` starts with neither a comma nor a token.
            rest = rest.split_once(',').map_or("", |(_, after)| after);
            continue;
        }
        // A token followed by `=` is a parameter of the challenge before it; otherwise it
        // starts a challenge.
        let Some(v) = after.trim_start_matches(OWS).strip_prefix('=') else {
            out.push(Challenge {
                scheme: name.to_ascii_lowercase(),
                params: HashMap::new(),
            });
            rest = after;
            continue;
        };
        let v = v.trim_start_matches(OWS);
        let (value, after) = match v.strip_prefix('"') {
            Some(q) => quoted(q).unwrap_or_else(|| (q.to_string(), "")),
            None => {
                let (value, after) = v.split_once(',').unwrap_or((v, ""));
                (value.trim().to_string(), after)
            }
        };
        if let Some(c) = out.last_mut() {
            c.params.entry(name.to_ascii_lowercase()).or_insert(value);
        }
        rest = after;
    }
}

/// Whether `s` is a digest as the OCI image spec writes them, `algorithm:encoded`, with the
/// registered sha256 and sha512 in lowercase hex of their length. Digests a registry sends end
/// up in URLs, a DELETE's included, so nothing else passes: a `/`, `..` or `?` in one could
/// address another object.
pub fn valid_digest(s: &str) -> bool {
    let Some((algorithm, encoded)) = s.split_once(':') else {
        return false;
    };
    let component = |c: &str| {
        !c.is_empty()
            && c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    let hex = |len: usize| {
        encoded.len() == len
            && encoded
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    algorithm.split(['+', '.', '_', '-']).all(component)
        && match algorithm {
            "sha256" => hex(64),
            "sha512" => hex(128),
            _ => {
                !encoded.is_empty()
                    && encoded
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'=' | b'_' | b'-'))
            }
        }
}

/// A response's `Docker-Content-Digest`: Ok(None) when it has none, Err with what it says when
/// that is not a digest.
fn content_digest(headers: &HeaderMap) -> Result<Option<String>, String> {
    let Some(value) = headers.get("docker-content-digest") else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        Ok(d) if valid_digest(d) => Ok(Some(d.to_string())),
        Ok(d) => Err(excerpt(d)),
        Err(_) => Err(excerpt(&String::from_utf8_lossy(value.as_bytes()))),
    }
}

/// The names in a tag list or catalog page's `field` array (`tags`, `repositories`); an
/// element that is not a string is not a name, and a page without the array (distribution
/// answers `"tags": null` for a repository without tags) lists none.
pub fn page_names(page: &Json, field: &str) -> Vec<String> {
    page.get(field)
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|v| v.as_str().map(String::from))
        .collect()
}

/// The digests an image index lists in `manifests`: what a referrers response, or the
/// `sha256-<hex>` fallback index, says refers to its subject. Descriptors without a string
/// digest are left out; whether the rest are digests is for the caller to check.
pub fn index_digests(index: &Json) -> Vec<String> {
    index
        .get("manifests")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .filter_map(|m| m.get("digest").and_then(Json::as_str).map(String::from))
        .collect()
}

/// A list endpoint that `paged` reads.
struct Listing<'a> {
    action: &'a str,
    kind: RequestKind,
    /// The first page's path.
    first: &'a str,
    scope: &'a str,
    accept: Option<&'a str>,
    /// A 404 for the first page means "there is no such list" (a repository without tags,
    /// a registry without the referrers API): `paged` answers None for the caller to decide.
    /// Otherwise it is an error, as for any other page.
    absent_ok: bool,
    /// The items of one page.
    items: fn(&Json) -> Vec<String>,
}

impl RegistryClient {
    /// `url` is the registry's base URL, http:// or https://.
    pub fn new(
        url: &str,
        creds: Option<Credentials>,
        timeout: Duration,
    ) -> Result<RegistryClient, RegistryError> {
        Self::with_roots(url, creds, timeout, &ExtraRoots::default())
    }

    /// `new`, trusting `roots` (a private CA) besides the bundled ones.
    pub fn with_roots(
        url: &str,
        creds: Option<Credentials>,
        timeout: Duration,
        roots: &ExtraRoots,
    ) -> Result<RegistryClient, RegistryError> {
        let base = url.trim_end_matches('/').to_string();
        let host =
            crate::engine::registry_host(&base).map_err(|message| RegistryError::Protocol {
                action: "configuring the registry client".into(),
                message,
            })?;
        let mut builder = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("retainer/", env!("CARGO_PKG_VERSION")))
            // Credentials go wherever the registry's token realm or redirects point: an https
            // registry never has them sent in clear text.
            .https_only(base.starts_with("https://"));
        for c in &roots.certificates {
            builder = builder.add_root_certificate(c.clone());
        }
        let http = builder.build().map_err(|e| RegistryError::Protocol {
            action: "configuring the registry client".into(),
            message: e.to_string(),
        })?;
        Ok(RegistryClient {
            base,
            host,
            http,
            creds,
            tokens: Mutex::new(HashMap::new()),
            basic: AtomicBool::new(false),
            retry: RetryPolicy::default(),
            counts: RequestCounts::default(),
        })
    }

    /// The same client with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> RegistryClient {
        self.retry = retry;
        self
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    /// The base URL: what identifies the registry in caches.
    pub fn base(&self) -> &str {
        &self.base
    }

    fn unreachable(&self, action: &str, e: reqwest::Error) -> RegistryError {
        if let Some(message) = certificate_problem(&e) {
            return RegistryError::Tls {
                action: action.into(),
                registry: self.host.clone(),
                message,
            };
        }
        let message = if e.is_timeout() {
            "timed out".to_string()
        } else {
            // reqwest's own message is "error sending request"; the cause says what happened.
            let mut m = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                m.push_str(&format!(": {s}"));
                source = s.source();
            }
            m
        };
        RegistryError::Unreachable {
            action: action.into(),
            registry: self.host.clone(),
            message,
            attempts: 1,
        }
    }

    /// A response body of at most `limit` bytes, or an error saying why not.
    async fn body(
        &self,
        action: &str,
        resp: Response,
        limit: usize,
    ) -> Result<Vec<u8>, RegistryError> {
        read_body(resp, limit, Overflow::Refuse)
            .await
            .map_err(|e| match e {
                ReadError::Transport(e) => self.unreachable(action, e),
                ReadError::TooLarge { declared } => RegistryError::TooLarge {
                    action: action.into(),
                    registry: self.host.clone(),
                    limit,
                    declared,
                },
            })
    }

    /// A JSON response body of at most `limit` bytes.
    async fn json(
        &self,
        action: &str,
        resp: Response,
        limit: usize,
    ) -> Result<Json, RegistryError> {
        let body = self.body(action, resp, limit).await?;
        serde_json::from_slice(&body).map_err(|e| RegistryError::Protocol {
            action: action.into(),
            message: format!("the response is not JSON: {e}"),
        })
    }

    async fn http_error(&self, action: &str, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        // The status is the error; a body that cannot be read only leaves the message empty.
        let body = match read_body(resp, MAX_ERROR_BODY, Overflow::Truncate).await {
            Ok(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
            Err(_) => String::new(),
        };
        let parsed: Option<Json> = serde_json::from_str(&body).ok();
        let first = parsed
            .as_ref()
            .and_then(|j| j.pointer("/errors/0").cloned());
        let code = first
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        let message = first
            .as_ref()
            .and_then(|e| e.get("message"))
            .and_then(Json::as_str)
            .map(String::from)
            .unwrap_or_else(|| body.trim().chars().take(200).collect());
        RegistryError::Http {
            action: action.into(),
            registry: self.host.clone(),
            status,
            code,
            message,
            attempts: 1,
        }
    }

    /// Sends a request, trying again (see `RetryPolicy`) while the registry is unreachable,
    /// times out, asks us to slow down or fails on its side. An answer of another status is
    /// returned for the caller to read; one that stays transient becomes an error saying how
    /// many attempts were made.
    async fn send(&self, req: &Req<'_>) -> Result<Sent, RegistryError> {
        let started = std::time::Instant::now();
        let mut attempt = 1;
        loop {
            let (wait, err) = match self.attempt(req).await {
                Ok(resp) if !transient_status(resp.status().as_u16()) => {
                    return Ok(Sent {
                        resp,
                        attempts: attempt,
                    });
                }
                Ok(resp) => {
                    let asked = (resp.status() == StatusCode::TOO_MANY_REQUESTS)
                        .then(|| retry_after(resp.headers()))
                        .flatten();
                    let mut err = self.http_error(req.action, resp).await;
                    let wait = match asked {
                        Some(a) if a > self.retry.max_retry_after => {
                            if let RegistryError::Http { message, .. } = &mut err {
                                message.push_str(&format!(
                                    " (asked to retry after {}s, more than the {}s this client waits)",
                                    a.as_secs(),
                                    self.retry.max_retry_after.as_secs()
                                ));
                            }
                            None
                        }
                        // Never sooner than asked; the jitter only spreads workers apart.
                        Some(a) => Some(a + self.retry.backoff(1) / 4),
                        None => Some(self.retry.backoff(attempt)),
                    };
                    (wait, err)
                }
                Err(e) if e.is_transient() => (Some(self.retry.backoff(attempt)), e),
                Err(e) => return Err(e.with_attempts(attempt)),
            };
            let within_budget =
                |w: Duration| started.elapsed().saturating_add(w) < self.retry.budget;
            match wait {
                Some(w) if attempt < self.retry.attempts && within_budget(w) => {
                    tracing::debug!(action = req.action, registry = %self.host, attempt, wait = ?w, error = %err, "retrying a registry request");
                    tokio::time::sleep(w).await;
                    attempt += 1;
                    self.counts.add_retry(req.kind);
                }
                _ => return Err(err.with_attempts(attempt)),
            }
        }
    }

    /// One attempt, answering an auth challenge once: basic credentials, or a bearer token for
    /// the request's scope (`repository:<name>:<actions>`).
    async fn attempt(&self, req: &Req<'_>) -> Result<Response, RegistryError> {
        let build = |auth: Option<String>| {
            let mut rb = self.http.request(req.method.clone(), req.url);
            if let Some(a) = req.accept {
                rb = rb.header(ACCEPT, a);
            }
            if let Some(a) = auth {
                rb = rb.header(AUTHORIZATION, a);
            }
            rb
        };
        let known = match &self.creds {
            Some(c) if self.basic.load(Ordering::Relaxed) => Some(basic(c)),
            _ => self
                .tokens
                .lock()
                .ok()
                .and_then(|t| t.get(req.scope).cloned())
                .map(|t| format!("Bearer {t}")),
        };
        self.counts.add(req.kind);
        let first = build(known)
            .send()
            .await
            .map_err(|e| self.unreachable(req.action, e))?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        // The first challenge this client can answer, of all the header lines.
        let challenge = first
            .headers()
            .get_all(WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(parse_challenges)
            .find(|c| c.scheme == "basic" || c.scheme == "bearer")
            .unwrap_or_default();
        let auth = match challenge.scheme.as_str() {
            "basic" => match &self.creds {
                Some(c) => {
                    self.basic.store(true, Ordering::Relaxed);
                    basic(c)
                }
                None => return Err(self.http_error(req.action, first).await),
            },
            "bearer" => {
                let token = self.token(req.action, &challenge.params, req.scope).await?;
                if let Ok(mut t) = self.tokens.lock() {
                    t.insert(req.scope.to_string(), token.clone());
                }
                format!("Bearer {token}")
            }
            _ => return Err(self.http_error(req.action, first).await),
        };
        self.counts.add(req.kind);
        build(Some(auth))
            .send()
            .await
            .map_err(|e| self.unreachable(req.action, e))
    }

    async fn token(
        &self,
        action: &str,
        params: &HashMap<String, String>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let realm = params.get("realm").ok_or_else(|| RegistryError::Protocol {
            action: action.into(),
            message: "bearer challenge without a realm".into(),
        })?;
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = params.get("service") {
            query.push(("service", s));
        }
        let mut rb = self.http.get(realm).query(&query);
        if let Some(c) = &self.creds {
            rb = rb.header(AUTHORIZATION, basic(c));
        }
        self.counts.add(RequestKind::Token);
        let resp = rb.send().await.map_err(|e| self.unreachable(action, e))?;
        if !resp.status().is_success() {
            return Err(self.http_error(&format!("{action} (token)"), resp).await);
        }
        let body = self.json(action, resp, MAX_TOKEN_RESPONSE).await?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(Json::as_str)
            .map(String::from)
            .ok_or_else(|| RegistryError::Protocol {
                action: action.into(),
                message: "token response without a token".into(),
            })
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    /// Follows the `Link` pages of a list endpoint, collecting their items, each once. None
    /// when the first page is absent and `absent_ok`. Every later page must be there: a page
    /// that fails, or whose `Link` cannot be read, is an error naming it, never the end of the
    /// list.
    async fn paged(&self, list: &Listing<'_>) -> Result<Option<Vec<String>>, RegistryError> {
        let mut out: Vec<String> = Vec::new();
        let mut seen_urls = BTreeSet::new();
        let mut seen_items = BTreeSet::new();
        let mut url = self.url(list.first);
        for page in 1..=MAX_PAGES {
            // The first page keeps the plain action, so that its errors read as before.
            let action = match page {
                1 => list.action.to_string(),
                n => format!("{} (page {n})", list.action),
            };
            let req = Req {
                action: &action,
                kind: list.kind,
                method: Method::GET,
                url: &url,
                accept: list.accept,
                scope: list.scope,
            };
            let resp = self.send(&req).await?.resp;
            let status = resp.status();
            if page == 1 && status == StatusCode::NOT_FOUND && list.absent_ok {
                return Ok(None);
            }
            if !status.is_success() {
                return Err(match self.http_error(&action, resp).await {
                    // A page an earlier page linked to is gone: most likely the list changed
                    // while it was read. Whatever the cause, what was read is not the list.
                    RegistryError::Http {
                        action,
                        registry,
                        status: 404,
                        code,
                        message,
                        ..
                    } if page > 1 => RegistryError::IncompleteListing {
                        action,
                        registry,
                        page,
                        status: 404,
                        code,
                        message,
                    },
                    other => other,
                });
            }
            let next = next_page(resp.headers(), resp.url()).map_err(|e| {
                RegistryError::MalformedLink {
                    action: action.clone(),
                    registry: self.host.clone(),
                    page,
                    reason: e.to_string(),
                }
            })?;
            seen_urls.insert(resp.url().to_string());
            seen_urls.insert(url.clone());
            let body = self.json(&action, resp, MAX_LIST_PAGE).await?;
            let mut added = 0;
            for item in (list.items)(&body) {
                if seen_items.insert(item.clone()) {
                    out.push(item);
                    added += 1;
                }
            }
            match next {
                // A registry that ignores `n`/`last` repeats itself: stop when a page adds
                // nothing or a link comes round again.
                Some(n) if added > 0 && !seen_urls.contains(&n) => url = n,
                _ => return Ok(Some(out)),
            }
        }
        Err(RegistryError::TooManyPages {
            action: list.action.into(),
            registry: self.host.clone(),
            pages: MAX_PAGES,
        })
    }

    pub async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        let listing = Listing {
            action: "listing the catalog",
            kind: RequestKind::Catalog,
            first: "/v2/_catalog?n=1000",
            scope: "registry:catalog:*",
            accept: None,
            absent_ok: false,
            items: |page| page_names(page, "repositories"),
        };
        // Not absent_ok: never None.
        Ok(self.paged(&listing).await?.unwrap_or_default())
    }

    /// The repository's tags; none when the registry does not know the repository.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        let listing = Listing {
            action: &format!("listing tags of {repo}"),
            kind: RequestKind::TagList,
            first: &format!("/v2/{repo}/tags/list?n=1000"),
            scope: &pull(repo),
            accept: None,
            absent_ok: true,
            items: |page| page_names(page, "tags"),
        };
        Ok(self.paged(&listing).await?.unwrap_or_default())
    }

    /// Sends a request for which 404 means "not there": None.
    async fn optional(&self, req: &Req<'_>) -> Result<Option<Response>, RegistryError> {
        let resp = self.send(req).await?.resp;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(self.http_error(req.action, resp).await);
        }
        Ok(Some(resp))
    }

    /// The digest a tag (or digest) points at, by HEAD; None when it does not exist.
    pub async fn resolve(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        let action = format!("resolving {repo}:{reference}");
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let scope = pull(repo);
        let req = Req {
            action: &action,
            kind: RequestKind::ManifestHead,
            method: Method::HEAD,
            url: &url,
            accept: Some(MANIFEST_TYPES),
            scope: &scope,
        };
        let Some(resp) = self.optional(&req).await? else {
            return Ok(None);
        };
        match content_digest(resp.headers()) {
            Ok(Some(d)) => Ok(Some(d)),
            // Without the header the body tells: fetch it.
            Ok(None) => Ok(self.manifest(repo, reference).await?.map(|m| m.digest)),
            // A digest that is not one must not end up in a URL; the body's digest is the
            // manifest's own, whatever the header says.
            Err(bad) => {
                tracing::warn!(action, registry = %self.host, header = bad, "ignoring a Docker-Content-Digest that is not a digest");
                Ok(self.manifest(repo, reference).await?.map(|m| m.digest))
            }
        }
    }

    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Fetched>, RegistryError> {
        let action = format!("fetching manifest {repo}@{reference}");
        let url = self.url(&format!("/v2/{repo}/manifests/{reference}"));
        let scope = pull(repo);
        let req = Req {
            action: &action,
            kind: RequestKind::ManifestGet,
            method: Method::GET,
            url: &url,
            accept: Some(MANIFEST_TYPES),
            scope: &scope,
        };
        let Some(resp) = self.optional(&req).await? else {
            return Ok(None);
        };
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = self.body(&action, resp, MAX_DOCUMENT).await?;
        let digest = sha256_digest(&body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(RegistryError::Protocol {
                action,
                message: format!("content digest {digest} does not match"),
            });
        }
        Ok(Some(Fetched {
            digest,
            media_type,
            body,
        }))
    }

    pub async fn blob_json(&self, repo: &str, digest: &str) -> Result<Option<Json>, RegistryError> {
        let action = format!("fetching blob {repo}@{digest}");
        let url = self.url(&format!("/v2/{repo}/blobs/{digest}"));
        let scope = pull(repo);
        let req = Req {
            action: &action,
            kind: RequestKind::BlobGet,
            method: Method::GET,
            url: &url,
            accept: None,
            scope: &scope,
        };
        let Some(resp) = self.optional(&req).await? else {
            return Ok(None);
        };
        // A config too large to read is one this client takes nothing from, as one that is not
        // JSON: the artifact is still listed, without what its config would have added.
        match read_body(resp, MAX_DOCUMENT, Overflow::Refuse).await {
            Ok(body) => Ok(serde_json::from_slice(&body).ok()),
            Err(ReadError::TooLarge { .. }) => Ok(None),
            Err(ReadError::Transport(e)) => Err(self.unreachable(&action, e)),
        }
    }

    /// Digests of the artifacts that refer to `digest`: the referrers API, all its `Link`
    /// pages (the OCI distribution spec lets a registry page the index), else the
    /// `sha256-<hex>` tag-schema index.
    pub async fn referrers(&self, repo: &str, digest: &str) -> Result<Vec<String>, RegistryError> {
        let action = format!("listing referrers of {repo}@{digest}");
        let listing = Listing {
            action: &action,
            kind: RequestKind::Referrers,
            first: &format!("/v2/{repo}/referrers/{digest}"),
            scope: &pull(repo),
            accept: Some("application/vnd.oci.image.index.v1+json"),
            absent_ok: true,
            items: index_digests,
        };
        let digests = match self.paged(&listing).await? {
            Some(digests) => digests,
            // No referrers API.
            None => {
                let tag = digest.replacen(':', "-", 1);
                match self.manifest(repo, &tag).await? {
                    Some(f) => {
                        index_digests(&serde_json::from_slice(&f.body).unwrap_or(Json::Null))
                    }
                    None => return Ok(Vec::new()),
                }
            }
        };
        // Referrers become requests, and a sweep keeps a subject for each of them: one that is
        // not a digest can be neither fetched nor safely left out.
        if let Some(bad) = digests.iter().find(|d| !valid_digest(d)) {
            return Err(RegistryError::Protocol {
                action,
                message: format!(
                    "the registry lists a referrer {:?} that is not a digest",
                    excerpt(bad)
                ),
            });
        }
        Ok(digests)
    }

    /// Deletes a manifest by digest.
    pub async fn delete(&self, repo: &str, digest: &str) -> Result<Deleted, RegistryError> {
        let action = format!("deleting {repo}@{digest}");
        // A DELETE is the one request that cannot be taken back: never to a URL that a
        // malformed digest could point elsewhere.
        if !valid_digest(digest) {
            return Err(RegistryError::Protocol {
                action,
                message: format!("{:?} is not a digest", excerpt(digest)),
            });
        }
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        let scope = format!("repository:{repo}:pull,delete");
        let req = Req {
            action: &action,
            kind: RequestKind::Delete,
            method: Method::DELETE,
            url: &url,
            accept: None,
            scope: &scope,
        };
        let Sent { resp, attempts } = self.send(&req).await?;
        let status = resp.status();
        if status.is_success() {
            return Ok(Deleted::Now);
        }
        if status == StatusCode::NOT_FOUND {
            // After a retry, most likely our earlier attempt deleted it and its answer was lost.
            return Ok(if attempts > 1 {
                Deleted::Now
            } else {
                Deleted::AlreadyGone
            });
        }
        let err = self.http_error(&action, resp).await.with_attempts(attempts);
        match err {
            RegistryError::Http {
                status: 405, code, ..
            } => Err(RegistryError::DeleteUnsupported {
                action,
                status: 405,
                code,
            }),
            RegistryError::Http { status, code, .. } if code == "UNSUPPORTED" => {
                Err(RegistryError::DeleteUnsupported {
                    action,
                    status,
                    code,
                })
            }
            // A token without the delete action: the token server grants what it may and the
            // registry refuses the rest, after the client already asked for pull,delete.
            RegistryError::Http {
                status: status @ (401 | 403),
                registry,
                code,
                message,
                ..
            } => Err(RegistryError::DeleteDenied {
                action,
                registry,
                repository: repo.to_string(),
                status,
                code,
                message,
            }),
            other => Err(other),
        }
    }
}

/// What was wrong with the registry's certificate, when that is why a request failed. rustls's
/// own words ("invalid peer certificate: UnknownIssuer") do not say what to do about it.
fn certificate_problem(e: &reqwest::Error) -> Option<String> {
    use rustls::CertificateError as C;
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = next {
        // io::Error's `source` skips the error it wraps, which is where rustls's is.
        let inner = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        let tls = err
            .downcast_ref::<rustls::Error>()
            .or_else(|| inner.and_then(|i| i.downcast_ref::<rustls::Error>()));
        if let Some(rustls::Error::InvalidCertificate(c)) = tls {
            return Some(match c {
                C::UnknownIssuer => "registry certificate is not trusted (unknown issuer): set target.registry.caBundleRef to the CA that signed it".into(),
                C::BadSignature | C::UnknownRevocationStatus | C::Revoked => {
                    format!("registry certificate is not trusted ({c:?})")
                }
                C::Expired | C::ExpiredContext { .. } => {
                    "registry certificate has expired".into()
                }
                C::NotValidYet | C::NotValidYetContext { .. } => {
                    "registry certificate is not valid yet".into()
                }
                C::NotValidForName | C::NotValidForNameContext { .. } => {
                    "registry certificate is not valid for this host name".into()
                }
                other => format!("registry certificate was rejected: {other:?}"),
            });
        }
        next = inner.or_else(|| err.source());
    }
    None
}

fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn basic(c: &Credentials) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jittered_and_capped() {
        let p = RetryPolicy::default();
        for attempt in 1..=8 {
            let step = (p.base * (1 << (attempt - 1))).min(p.max_backoff);
            let w = p.backoff(attempt);
            assert!(w >= step / 2 && w <= step, "attempt {attempt}: {w:?}");
        }
        assert!(p.backoff(40) <= p.max_backoff);
    }

    #[test]
    fn retry_after_in_seconds_or_as_a_date() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert(
            RETRY_AFTER,
            "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date: now");
        h.insert(RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn errors_say_where_what_and_how_often() {
        let e = RegistryError::Http {
            action: "listing tags of team/app".into(),
            registry: "127.0.0.1:5000".into(),
            status: 503,
            code: "UNAVAILABLE".into(),
            message: "try later".into(),
            attempts: 4,
        };
        assert!(e.is_transient());
        assert_eq!(
            e.to_string(),
            "listing tags of team/app at 127.0.0.1:5000: HTTP 503 UNAVAILABLE: try later (gave up after 4 attempts)"
        );
        let e = RegistryError::Http {
            action: "resolving team/app:1.0".into(),
            registry: "127.0.0.1:5000".into(),
            status: 404,
            code: "MANIFEST_UNKNOWN".into(),
            message: "manifest unknown".into(),
            attempts: 1,
        };
        assert!(!e.is_transient());
        assert!(!e.to_string().contains("attempts"));
    }

    #[test]
    fn tallies_count_by_kind() {
        let c = RequestCounts::default();
        c.add(RequestKind::TagList);
        c.add(RequestKind::TagList);
        c.add_retry(RequestKind::TagList);
        let before = c.snapshot();
        c.add(RequestKind::ManifestHead);
        let t = c.snapshot();
        assert_eq!(t.to_string(), "tag_list=2 (1 retries) manifest_head=1");
        assert_eq!(t.since(&before).to_string(), "manifest_head=1");
        assert_eq!(c.take(), t);
        assert_eq!(c.snapshot().to_string(), "none");
    }

    fn link(value: &str) -> Result<Option<String>, LinkError> {
        next_link(value)
    }

    #[test]
    fn next_links_well_formed() {
        let ok = |v: &str| link(v).unwrap_or_else(|e| panic!("{v:?}: {e}"));
        assert_eq!(
            ok(r#"</v2/x/tags/list?n=2&last=b>; rel="next""#).as_deref(),
            Some("/v2/x/tags/list?n=2&last=b")
        );
        assert_eq!(
            ok(r#"<https://r.example.com/v2/x/tags/list?last=b&n=2>; rel="next""#).as_deref(),
            Some("https://r.example.com/v2/x/tags/list?last=b&n=2")
        );
        assert_eq!(ok("</p2>;rel=next").as_deref(), Some("/p2"), "unquoted");
        assert_eq!(ok("</p2> ; REL = \"Next\"").as_deref(), Some("/p2"));
        assert_eq!(ok(r#"</p2>; rel="prev next""#).as_deref(), Some("/p2"));
        assert_eq!(
            ok(r#"</p0>; rel="prev", </p2>; rel="next", </p3>; rel="next""#).as_deref(),
            Some("/p2"),
            "several links: the first next"
        );
        assert_eq!(
            ok(r#"</p?a=1,2>; title="a, \"b\"; c"; rel="next""#).as_deref(),
            Some("/p?a=1,2"),
            "commas and semicolons inside the target and quotes"
        );
        assert_eq!(ok(r#"</p0>; rel="prev""#), None);
        assert_eq!(ok(r#"</p0>; rel="nextpage"; anchor"#), None);
        assert_eq!(ok(""), None, "empty");
        assert_eq!(ok(" , ,"), None, "empty list elements");
    }

    #[test]
    fn next_links_malformed() {
        for (v, want) in [
            ("<", LinkError::Unclosed),
            ("</p2", LinkError::Unclosed),
            ("/p2; rel=next", LinkError::NoTarget("/p2; rel=next".into())),
            (
                "</p2>; =next",
                LinkError::ParameterWithoutName("=next".into()),
            ),
            (
                "</p2>; rel=",
                LinkError::ParameterWithoutValue("rel=".into()),
            ),
            (
                r#"</p2>; rel="next"#,
                LinkError::ParameterWithoutValue(r#"rel="next"#.into()),
            ),
            ("</p2> rel=next", LinkError::Trailing("rel=next".into())),
            (
                r#"</p1>; rel="prev", garbage"#,
                LinkError::NoTarget("garbage".into()),
            ),
        ] {
            assert_eq!(link(v), Err(want), "{v:?}");
        }
    }

    #[test]
    fn next_pages_resolve_against_the_page() {
        let page: reqwest::Url = "http://127.0.0.1:5000/v2/x/tags/list?n=2".parse().unwrap();
        let next = |values: &[&[u8]]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(LINK, reqwest::header::HeaderValue::from_bytes(v).unwrap());
            }
            next_page(&h, &page)
        };
        assert_eq!(next(&[]), Ok(None));
        assert_eq!(
            next(&[b"</v2/x/tags/list?n=2&last=b>; rel=\"next\""])
                .unwrap()
                .as_deref(),
            Some("http://127.0.0.1:5000/v2/x/tags/list?n=2&last=b")
        );
        assert_eq!(
            next(&[b"<?n=2&last=b>; rel=next"]).unwrap().as_deref(),
            Some("http://127.0.0.1:5000/v2/x/tags/list?n=2&last=b"),
            "a relative reference"
        );
        assert_eq!(
            next(&[b"</a>; rel=prev", b"<https://other.example/b>; rel=next"])
                .unwrap()
                .as_deref(),
            Some("https://other.example/b"),
            "several header lines"
        );
        assert_eq!(
            next(&[b"</b>; rel=next", b"<"]),
            Err(LinkError::Unclosed),
            "every line is checked"
        );
        assert_eq!(next(&[b"</\xff>; rel=next"]), Err(LinkError::NotText));
        assert!(matches!(
            next(&[b"<http://[::1>; rel=next"]),
            Err(LinkError::BadTarget { .. })
        ));
    }

    #[test]
    fn parses_challenges() {
        let one = |h: &str| {
            let mut c = parse_challenges(h);
            assert_eq!(c.len(), 1, "{h:?}: {c:?}");
            c.remove(0)
        };
        let c = one(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#,
        );
        assert_eq!(c.scheme, "bearer");
        assert_eq!(c.params["realm"], "https://auth.example.com/token");
        assert_eq!(c.params["service"], "registry.example.com");
        assert_eq!(c.params["scope"], "repository:a/b:pull");
        let c = one(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (c.scheme.as_str(), c.params["realm"].as_str()),
            ("basic", "Registry Realm")
        );
        let c = one(r#"BEARER Realm=https://a/t , scope="repository:a:pull,push",error="x\"y""#);
        assert_eq!(c.params["realm"], "https://a/t", "unquoted, to the comma");
        assert_eq!(c.params["scope"], "repository:a:pull,push");
        assert_eq!(c.params["error"], r#"x"y"#, "an escaped quote");
        let c = one(r#"Bearer realm="unclosed"#);
        assert_eq!(c.params["realm"], "unclosed");
        let both = parse_challenges(r#"Basic realm="a", Bearer realm="b",service="s""#);
        assert_eq!(both.len(), 2);
        assert_eq!(
            (both[0].scheme.as_str(), both[0].params.len()),
            ("basic", 1)
        );
        assert_eq!(both[1].scheme, "bearer");
        assert_eq!(both[1].params["service"], "s");
        assert_eq!(parse_challenges(""), vec![]);
        assert_eq!(parse_challenges(r#"realm="orphan", "x"#), vec![]);
        assert_eq!(one("Bearer").params.len(), 0);
    }

    #[test]
    fn digests_are_checked() {
        let hex64 = "a".repeat(64);
        for good in [
            format!("sha256:{hex64}"),
            format!("sha512:{}", "0".repeat(128)),
            "multihash+base58:QmRZxt2b1FVZPNqd8hsiykDL3TdBDeTSPX9Kv46HmX4Gx8".to_string(),
            "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564".to_string(),
        ] {
            assert!(valid_digest(&good), "{good}");
        }
        for bad in [
            String::new(),
            "sha256".to_string(),
            format!("sha256:{}", &hex64[1..]),
            format!("sha256:{}", hex64.to_uppercase()),
            format!("sha256:{hex64}/../../other"),
            format!("SHA256:{hex64}"),
            format!(":{hex64}"),
            "sha256..x:abc".to_string(),
            "x:a/b".to_string(),
            "x:a?b".to_string(),
            "x:".to_string(),
            format!("sha256: {hex64}"),
        ] {
            assert!(!valid_digest(&bad), "{bad}");
        }
        let mut h = HeaderMap::new();
        assert_eq!(content_digest(&h), Ok(None));
        h.insert(
            "docker-content-digest",
            format!("sha256:{hex64}").parse().unwrap(),
        );
        assert_eq!(content_digest(&h), Ok(Some(format!("sha256:{hex64}"))));
        h.insert("docker-content-digest", "sha256:../x".parse().unwrap());
        assert_eq!(content_digest(&h), Err("sha256:../x".into()));
        h.insert(
            "docker-content-digest",
            reqwest::header::HeaderValue::from_bytes(b"sha256:\xff").unwrap(),
        );
        assert!(content_digest(&h).is_err());
    }

    #[test]
    fn retry_after_is_total() {
        let now: jiff::Timestamp = "2026-06-01T12:00:00Z".parse().unwrap();
        assert_eq!(parse_retry_after(" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after("Mon, 01 Jun 2026 12:00:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        for bad in [
            "",
            "-1",
            "1.5",
            "18446744073709551616",
            "Mon, 99 Jun 2026",
            "\u{e9}",
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
        assert_eq!(
            parse_retry_after(&u64::MAX.to_string(), now),
            Some(Duration::from_secs(u64::MAX))
        );
    }

    /// How the test registry answers one connection.
    enum Answer {
        /// These bytes, then it closes the connection.
        Raw(String),
        /// This head, then a chunked body of `fill` bytes for as long as the client reads.
        Endless(String, u8),
    }

    /// What a test registry saw and sent.
    struct Seen {
        requests: Mutex<Vec<String>>,
        /// Bytes of endless bodies written.
        written: AtomicU64,
    }

    /// A registry on 127.0.0.1 that answers one request per connection with the next of
    /// `answers`: its base URL, and what it saw.
    async fn registry(answers: Vec<Answer>) -> (String, std::sync::Arc<Seen>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(Seen {
            requests: Mutex::new(Vec::new()),
            written: AtomicU64::new(0),
        });
        let s = seen.clone();
        tokio::spawn(async move {
            for answer in answers {
                let Ok((mut conn, _)) = listener.accept().await else {
                    return;
                };
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => head.extend_from_slice(&buf[..n]),
                    }
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_string();
                s.requests.lock().unwrap().push(line);
                match answer {
                    Answer::Raw(text) => {
                        let _ = conn.write_all(text.as_bytes()).await;
                    }
                    Answer::Endless(head, fill) => {
                        if conn.write_all(head.as_bytes()).await.is_err() {
                            continue;
                        }
                        let chunk = vec![fill; 64 << 10];
                        let framed =
                            [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
                        while conn.write_all(&framed).await.is_ok() {
                            s.written.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                        }
                    }
                }
            }
        });
        (base, seen)
    }

    fn client(base: &str) -> RegistryClient {
        RegistryClient::new(base, None, Duration::from_secs(20))
            .unwrap()
            .with_retry(RetryPolicy {
                attempts: 1,
                ..RetryPolicy::default()
            })
    }

    fn chunked(status: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
    }

    fn json_answer(status: &str, extra_headers: &str, body: &str) -> Answer {
        Answer::Raw(format!(
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{extra_headers}Connection: close\r\n\r\n{body}",
            body.len()
        ))
    }

    /// Whatever the client does with an endless body must end, well within this.
    async fn promptly<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(60), f)
            .await
            .expect("the client stopped reading")
    }

    #[tokio::test]
    async fn an_endless_manifest_stops_at_the_limit() {
        let (base, seen) = registry(vec![Answer::Endless(chunked("200 OK"), b' ')]).await;
        let err = promptly(client(&base).manifest("app", "latest"))
            .await
            .err()
            .expect("an endless manifest is an error");
        assert!(
            matches!(
                &err,
                RegistryError::TooLarge { limit, declared: None, action, .. }
                    if *limit == MAX_DOCUMENT && action == "fetching manifest app@latest"
            ),
            "{err:?}"
        );
        assert!(
            err.to_string().contains("larger than the 4194304 bytes"),
            "{err}"
        );
        // The limit, plus what the two sockets' buffers held when the client hung up.
        let written = seen.written.load(Ordering::Relaxed);
        assert!(written < 64 << 20, "the registry wrote {written} bytes");
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_before_reading() {
        // Nothing follows the head: a client that read the body would fail on the closed
        // connection instead.
        let (base, _) = registry(vec![Answer::Raw(
            "HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\nConnection: close\r\n\r\n".into(),
        )])
        .await;
        let err = promptly(client(&base).manifest("app", "latest"))
            .await
            .err()
            .expect("too large");
        assert!(
            matches!(
                err,
                RegistryError::TooLarge {
                    declared: Some(1073741824),
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_endless_list_page_stops_at_the_limit() {
        let (base, _) = registry(vec![Answer::Endless(chunked("200 OK"), b' ')]).await;
        let err = promptly(client(&base).tags("app"))
            .await
            .expect_err("too large");
        assert!(
            matches!(err, RegistryError::TooLarge { limit, .. } if limit == MAX_LIST_PAGE),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn an_endless_error_body_is_cut_short_not_fatal() {
        let (base, seen) = registry(vec![Answer::Endless(chunked("400 Bad Request"), b'x')]).await;
        let err = promptly(client(&base).catalog())
            .await
            .expect_err("an error");
        match &err {
            RegistryError::Http {
                status: 400,
                message,
                ..
            } => assert_eq!(message.len(), 200, "the start of the body"),
            other => panic!("{other:?}"),
        }
        assert!(seen.written.load(Ordering::Relaxed) < 64 << 20);
    }

    #[tokio::test]
    async fn a_config_too_large_is_no_config() {
        let (base, _) = registry(vec![Answer::Endless(chunked("200 OK"), b' ')]).await;
        let blob = promptly(client(&base).blob_json("app", "sha256:0")).await;
        assert_eq!(blob, Ok(None));
    }

    fn not_found() -> Answer {
        json_answer(
            "404 Not Found",
            "",
            r#"{"errors":[{"code":"NAME_UNKNOWN","message":"repository name not known to registry"}]}"#,
        )
    }

    fn requests(seen: &Seen) -> Vec<String> {
        seen.requests.lock().unwrap().clone()
    }

    #[tokio::test]
    async fn tag_pages_are_followed_and_merged() {
        let (base, seen) = registry(vec![
            json_answer(
                "200 OK",
                "Link: </v2/app/tags/list?n=1000&last=b>; rel=\"next\"\r\n",
                r#"{"name":"app","tags":["a","b"]}"#,
            ),
            json_answer(
                "200 OK",
                "Link: <?n=1000&last=c>; rel=next\r\n",
                r#"{"name":"app","tags":["b","c",7]}"#,
            ),
            json_answer("200 OK", "", r#"{"name":"app","tags":["d"]}"#),
        ])
        .await;
        assert_eq!(
            client(&base).tags("app").await,
            Ok(vec!["a".into(), "b".into(), "c".into(), "d".into()])
        );
        assert_eq!(
            requests(&seen),
            [
                "GET /v2/app/tags/list?n=1000 HTTP/1.1",
                "GET /v2/app/tags/list?n=1000&last=b HTTP/1.1",
                "GET /v2/app/tags/list?n=1000&last=c HTTP/1.1",
            ]
        );
    }

    #[tokio::test]
    async fn a_tag_list_whose_later_page_is_gone_is_an_error() {
        let (base, _) = registry(vec![
            json_answer(
                "200 OK",
                "Link: </v2/app/tags/list?n=1000&last=b>; rel=\"next\"\r\n",
                r#"{"name":"app","tags":["a","b"]}"#,
            ),
            not_found(),
        ])
        .await;
        let err = client(&base).tags("app").await.expect_err("incomplete");
        assert_eq!(
            err,
            RegistryError::IncompleteListing {
                action: "listing tags of app (page 2)".into(),
                registry: base.trim_start_matches("http://").into(),
                page: 2,
                status: 404,
                code: "NAME_UNKNOWN".into(),
                message: "repository name not known to registry".into(),
            }
        );
        assert!(
            err.to_string().contains("the listing is incomplete"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_later_page_failing_otherwise_names_the_page() {
        let (base, _) = registry(vec![
            json_answer(
                "200 OK",
                "Link: </v2/app/tags/list?n=1000&last=b>; rel=\"next\"\r\n",
                r#"{"tags":["a","b"]}"#,
            ),
            json_answer("503 Service Unavailable", "", r#"{"errors":[]}"#),
        ])
        .await;
        let err = client(&base).tags("app").await.expect_err("an error");
        assert!(
            matches!(&err, RegistryError::Http { status: 503, action, .. } if action == "listing tags of app (page 2)"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_missing_repository_has_no_tags_and_a_missing_catalog_is_an_error() {
        let (base, _) = registry(vec![not_found(), not_found()]).await;
        let c = client(&base);
        assert_eq!(c.tags("app").await, Ok(vec![]));
        assert!(matches!(
            c.catalog().await,
            Err(RegistryError::Http { status: 404, .. })
        ));
    }

    #[tokio::test]
    async fn an_unreadable_link_is_an_error_not_the_last_page() {
        let (base, _) = registry(vec![
            json_answer("200 OK", "Link: </p2>; rel=next\r\n", r#"{"tags":["a"]}"#),
            json_answer("200 OK", "Link: <\r\n", r#"{"tags":["b"]}"#),
        ])
        .await;
        let err = client(&base).tags("app").await.expect_err("an error");
        assert!(
            matches!(&err, RegistryError::MalformedLink { page: 2, action, .. } if action == "listing tags of app (page 2)"),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn a_link_that_comes_round_again_ends_the_list() {
        let (base, seen) = registry(vec![
            json_answer("200 OK", "Link: </p2>; rel=next\r\n", r#"{"tags":["a"]}"#),
            json_answer(
                "200 OK",
                "Link: </v2/app/tags/list?n=1000>; rel=next\r\n",
                r#"{"tags":["b"]}"#,
            ),
        ])
        .await;
        assert_eq!(
            client(&base).tags("app").await,
            Ok(vec!["a".into(), "b".into()])
        );
        assert_eq!(requests(&seen).len(), 2);
    }

    fn index(digests: &[String]) -> String {
        let manifests: Vec<Json> = digests
            .iter()
            .map(|d| serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": d, "size": 1}))
            .collect();
        serde_json::json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": manifests}).to_string()
    }

    fn digest(n: u8) -> String {
        format!("sha256:{}", format!("{n:02x}").repeat(32))
    }

    #[tokio::test]
    async fn referrer_pages_are_followed_and_merged() {
        let subject = digest(0);
        let (base, seen) = registry(vec![
            json_answer(
                "200 OK",
                &format!("Link: </v2/app/referrers/{subject}?n=2&last=x>; rel=\"next\"\r\n"),
                &index(&[digest(1), digest(2)]),
            ),
            json_answer("200 OK", "", &index(&[digest(3)])),
        ])
        .await;
        assert_eq!(
            client(&base).referrers("app", &subject).await,
            Ok(vec![digest(1), digest(2), digest(3)])
        );
        assert_eq!(
            requests(&seen)[1],
            format!("GET /v2/app/referrers/{subject}?n=2&last=x HTTP/1.1")
        );
    }

    #[tokio::test]
    async fn a_referrers_listing_whose_later_page_is_gone_is_an_error() {
        let subject = digest(0);
        let (base, _) = registry(vec![
            json_answer(
                "200 OK",
                "Link: <?last=x>; rel=\"next\"\r\n",
                &index(&[digest(1)]),
            ),
            not_found(),
        ])
        .await;
        let err = client(&base)
            .referrers("app", &subject)
            .await
            .expect_err("incomplete");
        assert!(
            matches!(err, RegistryError::IncompleteListing { page: 2, .. }),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn without_the_referrers_api_the_fallback_tag_is_read() {
        let subject = digest(0);
        let hex = subject.trim_start_matches("sha256:");
        let (base, seen) = registry(vec![
            not_found(),
            json_answer("200 OK", "", &index(&[digest(4)])),
            not_found(),
            not_found(),
        ])
        .await;
        let c = client(&base);
        assert_eq!(c.referrers("app", &subject).await, Ok(vec![digest(4)]));
        assert_eq!(c.referrers("app", &subject).await, Ok(vec![]));
        assert_eq!(
            requests(&seen)[1],
            format!("GET /v2/app/manifests/sha256-{hex} HTTP/1.1")
        );
    }

    #[tokio::test]
    async fn a_referrer_that_is_not_a_digest_is_an_error() {
        let (base, _) = registry(vec![json_answer(
            "200 OK",
            "",
            &index(&["sha256:../../other".into()]),
        )])
        .await;
        assert!(matches!(
            client(&base).referrers("app", &digest(0)).await,
            Err(RegistryError::Protocol { .. })
        ));
    }

    #[tokio::test]
    async fn an_invalid_content_digest_is_not_trusted() {
        let body = r#"{"schemaVersion":2}"#;
        let (base, seen) = registry(vec![
            json_answer("200 OK", "Docker-Content-Digest: sha256:../../x\r\n", ""),
            json_answer("200 OK", "", body),
        ])
        .await;
        assert_eq!(
            client(&base).resolve("app", "v1").await,
            Ok(Some(sha256_digest(body.as_bytes())))
        );
        assert_eq!(requests(&seen)[1], "GET /v2/app/manifests/v1 HTTP/1.1");
    }

    #[tokio::test]
    async fn only_digests_are_deleted() {
        let err = client("http://127.0.0.1:9")
            .delete("app", "sha256:abc/../../other")
            .await;
        assert!(
            matches!(err, Err(RegistryError::Protocol { .. })),
            "{err:?}"
        );
    }
}
