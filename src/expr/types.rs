//! A static type checker over the parsed expression, in the manner of cel-go's checker, so that
//! what kube-apiserver's CEL environment refuses at compile time (`'a' + true`, `[1, 'a']`,
//! `rank == 'a'`, `size(1)`, `object.x.startsWith(1)`) is refused when the policy is compiled,
//! rather than failing, or deciding wrongly, on every object.
//!
//! The rules are cel-go's: `dyn` is assignable to and from every type, so anything read from
//! `object` checks against anything; overloads are chosen by assignability of the argument
//! types, with type parameters (`A` in `_==_(A, A)`) bound by unification; list and map
//! literals must be homogeneous (Kubernetes sets `HomogeneousAggregateLiterals`); a
//! comprehension's variables get the element type of its range.
//!
//! A function the table below does not know is refused, as cel-go refuses a name its
//! environment does not declare: what Kubernetes' environment lacks (cel-go's math extension,
//! base64, `cel.bind`, the strings extension's version 3) is refused too, although the cel
//! crate could evaluate some of it, so that a policy `retainer check` accepts is one
//! kube-apiserver's CEL accepts.

use std::collections::{HashMap, HashSet};
use std::sync::LazyLock;

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};

use super::string_format::{self, Failure, Verb};

/// A CEL type as the checker sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Ty {
    Dyn,
    Null,
    Bool,
    Int,
    Uint,
    Double,
    String,
    Bytes,
    Duration,
    Timestamp,
    List(Box<Ty>),
    Map(Box<Ty>, Box<Ty>),
    /// `type(T)`: the value of a type name or of `type(x)`.
    Type(Box<Ty>),
    Optional(Box<Ty>),
    /// A library's own type, by its CEL name (`kubernetes.Semver`, `net.IP`, ...).
    Opaque(&'static str),
    /// A type parameter, bound by unification.
    Var(u32),
}

impl Ty {
    fn list(t: Ty) -> Ty {
        Ty::List(Box::new(t))
    }

    fn map(k: Ty, v: Ty) -> Ty {
        Ty::Map(Box::new(k), Box::new(v))
    }

    fn optional(t: Ty) -> Ty {
        Ty::Optional(Box::new(t))
    }

    fn is_dyn(&self) -> bool {
        matches!(self, Ty::Dyn)
    }

    /// Kubernetes' library types declared as object types (cel-go's struct kind) rather than
    /// opaque ones: selecting a field of them reports an undefined field.
    fn is_object(&self) -> bool {
        matches!(self, Ty::Opaque(name) if name.starts_with("kubernetes."))
    }
}

/// The type as cel-go's messages spell it.
impl std::fmt::Display for Ty {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Ty::Dyn | Ty::Var(_) => f.write_str("dyn"),
            Ty::Null => f.write_str("null"),
            Ty::Bool => f.write_str("bool"),
            Ty::Int => f.write_str("int"),
            Ty::Uint => f.write_str("uint"),
            Ty::Double => f.write_str("double"),
            Ty::String => f.write_str("string"),
            Ty::Bytes => f.write_str("bytes"),
            Ty::Duration => f.write_str("google.protobuf.Duration"),
            Ty::Timestamp => f.write_str("google.protobuf.Timestamp"),
            Ty::List(e) => write!(f, "list({e})"),
            Ty::Map(k, v) => write!(f, "map({k}, {v})"),
            Ty::Type(t) => write!(f, "type({t})"),
            Ty::Optional(t) => write!(f, "optional_type({t})"),
            Ty::Opaque(name) => f.write_str(name),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The overload table: every function of kube-apiserver 1.36's expression environment
// (`environment.MustBaseEnvSet(1.36).NewExpressionsEnv()`), one overload a line.
//
//   name(arg, ...) -> result          a global function (`size(x)`, `optional.of(x)`)
//   .recv.name(arg, ...) -> result    a member function (`x.size()`)
//
// Single capital letters are type parameters; capitalised names are the libraries' types.
// Kubernetes' environment does not have cel-go's math extension, base64 encoders or
// `cel.bind`: those are not listed, and so are refused as undeclared.

const OVERLOADS: &str = r"
# CEL standard library: logic and equality (`_&&_` and `_||_` are checked apart, as cel-go does)
_?_:_(bool, A, A) -> A
!_(bool) -> bool
@not_strictly_false(bool) -> bool
# transformMapEntry's step (comprehensions.rs), cel-go's `cel.@mapInsert(map, map)`
@mapMerge(map(K, V), map(K, V)) -> map(K, V)
_==_(A, A) -> bool
_!=_(A, A) -> bool
# arithmetic
_+_(bytes, bytes) -> bytes
_+_(double, double) -> double
_+_(duration, duration) -> duration
_+_(duration, timestamp) -> timestamp
_+_(timestamp, duration) -> timestamp
_+_(int, int) -> int
_+_(list(A), list(A)) -> list(A)
_+_(string, string) -> string
_+_(uint, uint) -> uint
_-_(double, double) -> double
_-_(duration, duration) -> duration
_-_(int, int) -> int
_-_(timestamp, duration) -> timestamp
_-_(timestamp, timestamp) -> duration
_-_(uint, uint) -> uint
_*_(double, double) -> double
_*_(int, int) -> int
_*_(uint, uint) -> uint
_/_(double, double) -> double
_/_(int, int) -> int
_/_(uint, uint) -> uint
_%_(int, int) -> int
_%_(uint, uint) -> uint
-_(double) -> double
-_(int) -> int
# ordering, with the cross-type numeric comparisons Kubernetes enables
_<_(bool, bool) -> bool
_<_(int, int) -> bool
_<_(int, double) -> bool
_<_(int, uint) -> bool
_<_(uint, uint) -> bool
_<_(uint, double) -> bool
_<_(uint, int) -> bool
_<_(double, double) -> bool
_<_(double, int) -> bool
_<_(double, uint) -> bool
_<_(string, string) -> bool
_<_(bytes, bytes) -> bool
_<_(timestamp, timestamp) -> bool
_<_(duration, duration) -> bool
_<=_(bool, bool) -> bool
_<=_(int, int) -> bool
_<=_(int, double) -> bool
_<=_(int, uint) -> bool
_<=_(uint, uint) -> bool
_<=_(uint, double) -> bool
_<=_(uint, int) -> bool
_<=_(double, double) -> bool
_<=_(double, int) -> bool
_<=_(double, uint) -> bool
_<=_(string, string) -> bool
_<=_(bytes, bytes) -> bool
_<=_(timestamp, timestamp) -> bool
_<=_(duration, duration) -> bool
_>_(bool, bool) -> bool
_>_(int, int) -> bool
_>_(int, double) -> bool
_>_(int, uint) -> bool
_>_(uint, uint) -> bool
_>_(uint, double) -> bool
_>_(uint, int) -> bool
_>_(double, double) -> bool
_>_(double, int) -> bool
_>_(double, uint) -> bool
_>_(string, string) -> bool
_>_(bytes, bytes) -> bool
_>_(timestamp, timestamp) -> bool
_>_(duration, duration) -> bool
_>=_(bool, bool) -> bool
_>=_(int, int) -> bool
_>=_(int, double) -> bool
_>=_(int, uint) -> bool
_>=_(uint, uint) -> bool
_>=_(uint, double) -> bool
_>=_(uint, int) -> bool
_>=_(double, double) -> bool
_>=_(double, int) -> bool
_>=_(double, uint) -> bool
_>=_(string, string) -> bool
_>=_(bytes, bytes) -> bool
_>=_(timestamp, timestamp) -> bool
_>=_(duration, duration) -> bool
# indexing and membership
_[_](list(A), int) -> A
_[_](map(A, B), A) -> B
@in(A, list(A)) -> bool
@in(A, map(A, B)) -> bool
# transformMap's step (comprehensions.rs): one entry added
@mapInsert(map(K, V), K, V) -> map(K, V)
# size
size(bytes) -> int
size(list(A)) -> int
size(map(A, B)) -> int
size(string) -> int
.bytes.size() -> int
.list(A).size() -> int
.map(A, B).size() -> int
.string.size() -> int
# conversions
type(A) -> type(A)
dyn(A) -> dyn
bool(bool) -> bool
bool(string) -> bool
bytes(bytes) -> bytes
bytes(string) -> bytes
double(double) -> double
double(int) -> double
double(string) -> double
double(uint) -> double
duration(duration) -> duration
duration(int) -> duration
duration(string) -> duration
int(int) -> int
int(double) -> int
int(duration) -> int
int(string) -> int
int(timestamp) -> int
int(uint) -> int
string(string) -> string
string(bool) -> string
string(bytes) -> string
string(double) -> string
string(duration) -> string
string(int) -> string
string(timestamp) -> string
string(uint) -> string
timestamp(timestamp) -> timestamp
timestamp(int) -> timestamp
timestamp(string) -> timestamp
uint(uint) -> uint
uint(double) -> uint
uint(int) -> uint
uint(string) -> uint
# strings and regular expressions
.string.contains(string) -> bool
.string.endsWith(string) -> bool
.string.startsWith(string) -> bool
matches(string, string) -> bool
.string.matches(string) -> bool
# timestamp and duration accessors, with an optional time zone
.timestamp.getFullYear() -> int
.timestamp.getFullYear(string) -> int
.timestamp.getMonth() -> int
.timestamp.getMonth(string) -> int
.timestamp.getDayOfYear() -> int
.timestamp.getDayOfYear(string) -> int
.timestamp.getDate() -> int
.timestamp.getDate(string) -> int
.timestamp.getDayOfMonth() -> int
.timestamp.getDayOfMonth(string) -> int
.timestamp.getDayOfWeek() -> int
.timestamp.getDayOfWeek(string) -> int
.timestamp.getHours() -> int
.timestamp.getHours(string) -> int
.timestamp.getMinutes() -> int
.timestamp.getMinutes(string) -> int
.timestamp.getSeconds() -> int
.timestamp.getSeconds(string) -> int
.timestamp.getMilliseconds() -> int
.timestamp.getMilliseconds(string) -> int
.duration.getHours() -> int
.duration.getMinutes() -> int
.duration.getSeconds() -> int
.duration.getMilliseconds() -> int
# optional types (cel.OptionalTypes); optMap and optFlatMap are macros
optional.of(A) -> optional(A)
optional.ofNonZeroValue(A) -> optional(A)
optional.none() -> optional(A)
.optional(A).value() -> A
.optional(A).hasValue() -> bool
.optional(A).or(optional(A)) -> optional(A)
.optional(A).orValue(A) -> A
_[?_](list(A), int) -> optional(A)
_[?_](optional(list(A)), int) -> optional(A)
_[?_](map(K, V), K) -> optional(V)
_[?_](optional(map(K, V)), K) -> optional(V)
_[_](optional(list(A)), int) -> optional(A)
_[_](optional(map(K, V)), K) -> optional(V)
.list(A).first() -> optional(A)
.list(A).last() -> optional(A)
optional.unwrap(list(optional(A))) -> list(A)
.list(optional(A)).unwrapOpt() -> list(A)
# Kubernetes list library's indexOf and lastIndexOf, ahead of the strings extension's: the
# order of a name's overloads is cel-go's, which binds an open type (`v` of
# `object.l.reverse().all(v, ...)`) to the first overload that fits
.list(A).indexOf(A) -> int
.list(A).lastIndexOf(A) -> int
# cel-go strings extension, version 2
.string.charAt(int) -> string
.string.indexOf(string) -> int
.string.indexOf(string, int) -> int
.string.lastIndexOf(string) -> int
.string.lastIndexOf(string, int) -> int
.string.lowerAscii() -> string
.string.upperAscii() -> string
.string.replace(string, string) -> string
.string.replace(string, string, int) -> string
.string.split(string) -> list(string)
.string.split(string, int) -> list(string)
.string.substring(int) -> string
.string.substring(int, int) -> string
.string.trim() -> string
.string.format(list(dyn)) -> string
strings.quote(string) -> string
.list(string).join() -> string
.list(string).join(string) -> string
# cel-go lists extension, version 3; sortBy is a macro over @sortByAssociatedKeys
.list(A).slice(int, int) -> list(A)
.list(list(A)).flatten() -> list(A)
.list(dyn).flatten(int) -> list(dyn)
.list(int).sort() -> list(int)
.list(uint).sort() -> list(uint)
.list(double).sort() -> list(double)
.list(bool).sort() -> list(bool)
.list(duration).sort() -> list(duration)
.list(timestamp).sort() -> list(timestamp)
.list(string).sort() -> list(string)
.list(bytes).sort() -> list(bytes)
.list(A).@sortByAssociatedKeys(list(int)) -> list(A)
.list(A).@sortByAssociatedKeys(list(uint)) -> list(A)
.list(A).@sortByAssociatedKeys(list(double)) -> list(A)
.list(A).@sortByAssociatedKeys(list(bool)) -> list(A)
.list(A).@sortByAssociatedKeys(list(duration)) -> list(A)
.list(A).@sortByAssociatedKeys(list(timestamp)) -> list(A)
.list(A).@sortByAssociatedKeys(list(string)) -> list(A)
.list(A).@sortByAssociatedKeys(list(bytes)) -> list(A)
lists.range(int) -> list(int)
.list(A).reverse() -> list(A)
.list(A).distinct() -> list(A)
# cel-go sets extension
sets.contains(list(A), list(A)) -> bool
sets.equivalent(list(A), list(A)) -> bool
sets.intersects(list(A), list(A)) -> bool
# Kubernetes list library
.list(int).isSorted() -> bool
.list(uint).isSorted() -> bool
.list(double).isSorted() -> bool
.list(bool).isSorted() -> bool
.list(duration).isSorted() -> bool
.list(timestamp).isSorted() -> bool
.list(string).isSorted() -> bool
.list(bytes).isSorted() -> bool
.list(int).sum() -> int
.list(uint).sum() -> uint
.list(double).sum() -> double
.list(duration).sum() -> duration
.list(int).min() -> int
.list(uint).min() -> uint
.list(double).min() -> double
.list(bool).min() -> bool
.list(duration).min() -> duration
.list(timestamp).min() -> timestamp
.list(string).min() -> string
.list(bytes).min() -> bytes
.list(int).max() -> int
.list(uint).max() -> uint
.list(double).max() -> double
.list(bool).max() -> bool
.list(duration).max() -> duration
.list(timestamp).max() -> timestamp
.list(string).max() -> string
.list(bytes).max() -> bytes
# Kubernetes regex library
.string.find(string) -> string
.string.findAll(string) -> list(string)
.string.findAll(string, int) -> list(string)
# Kubernetes URL library
url(string) -> URL
isURL(string) -> bool
.URL.getScheme() -> string
.URL.getHost() -> string
.URL.getHostname() -> string
.URL.getPort() -> string
.URL.getEscapedPath() -> string
.URL.getQuery() -> map(string, list(string))
# Kubernetes IP library
ip(string) -> IP
isIP(string) -> bool
ip.isCanonical(string) -> bool
string(IP) -> string
.IP.family() -> int
.IP.isUnspecified() -> bool
.IP.isLoopback() -> bool
.IP.isLinkLocalMulticast() -> bool
.IP.isLinkLocalUnicast() -> bool
.IP.isGlobalUnicast() -> bool
# Kubernetes CIDR library
cidr(string) -> CIDR
isCIDR(string) -> bool
string(CIDR) -> string
.CIDR.containsIP(string) -> bool
.CIDR.containsIP(IP) -> bool
.CIDR.containsCIDR(string) -> bool
.CIDR.containsCIDR(CIDR) -> bool
.CIDR.ip() -> IP
.CIDR.prefixLength() -> int
.CIDR.masked() -> CIDR
# Kubernetes quantity library (sign is declared as a global function)
quantity(string) -> Quantity
isQuantity(string) -> bool
sign(Quantity) -> int
.Quantity.isGreaterThan(Quantity) -> bool
.Quantity.isLessThan(Quantity) -> bool
.Quantity.compareTo(Quantity) -> int
.Quantity.asApproximateFloat() -> double
.Quantity.asInteger() -> int
.Quantity.isInteger() -> bool
.Quantity.add(Quantity) -> Quantity
.Quantity.add(int) -> Quantity
.Quantity.sub(Quantity) -> Quantity
.Quantity.sub(int) -> Quantity
# Kubernetes semver library, version 1
semver(string) -> Semver
semver(string, bool) -> Semver
isSemver(string) -> bool
isSemver(string, bool) -> bool
.Semver.isGreaterThan(Semver) -> bool
.Semver.isLessThan(Semver) -> bool
.Semver.compareTo(Semver) -> int
.Semver.major() -> int
.Semver.minor() -> int
.Semver.patch() -> int
# Kubernetes format library
format.named(string) -> optional(Format)
format.dns1123Label() -> Format
format.dns1123Subdomain() -> Format
format.dns1035Label() -> Format
format.qualifiedName() -> Format
format.dns1123LabelPrefix() -> Format
format.dns1123SubdomainPrefix() -> Format
format.dns1035LabelPrefix() -> Format
format.labelValue() -> Format
format.uri() -> Format
format.uuid() -> Format
format.byte() -> Format
format.date() -> Format
format.datetime() -> Format
.Format.validate(string) -> optional(list(string))
# Kubernetes authorization library: its receivers come from the `authorizer` variable, which
# policies do not have, but the names are declared
.Authorizer.path(string) -> PathCheck
.Authorizer.group(string) -> GroupCheck
.Authorizer.serviceAccount(string, string) -> Authorizer
.GroupCheck.resource(string) -> ResourceCheck
.ResourceCheck.subresource(string) -> ResourceCheck
.ResourceCheck.namespace(string) -> ResourceCheck
.ResourceCheck.name(string) -> ResourceCheck
.ResourceCheck.fieldSelector(string) -> ResourceCheck
.ResourceCheck.labelSelector(string) -> ResourceCheck
.PathCheck.check(string) -> Decision
.ResourceCheck.check(string) -> Decision
.Decision.errored() -> bool
.Decision.error() -> string
.Decision.allowed() -> bool
.Decision.reason() -> string
";

/// The conversions, each of which has an overload per argument type, the identity first
/// (`string(string)`), which cel-go's checker binds an open type to.
const CONVERSIONS: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "duration",
    "int",
    "string",
    "timestamp",
    "uint",
];

/// Namespaces of functions: Kubernetes' own, and those of cel-go extensions it does not have
/// (`math`, `base64`), so that `math.abs(1)` is refused as the function it names.
const NAMESPACES: &[&str] = &[
    "optional", "strings", "math", "lists", "sets", "base64", "format",
];

/// The libraries' own types, by the short name the table uses.
const NAMED_TYPES: &[(&str, &str)] = &[
    ("Semver", "kubernetes.Semver"),
    ("Quantity", "kubernetes.Quantity"),
    ("URL", "kubernetes.URL"),
    ("Format", "kubernetes.NamedFormat"),
    ("IP", "net.IP"),
    ("CIDR", "net.CIDR"),
    ("Authorizer", "kubernetes.authorization.Authorizer"),
    ("PathCheck", "kubernetes.authorization.PathCheck"),
    ("GroupCheck", "kubernetes.authorization.GroupCheck"),
    ("ResourceCheck", "kubernetes.authorization.ResourceCheck"),
    ("Decision", "kubernetes.authorization.Decision"),
];

/// One overload. Type parameters are `Var(0)`, `Var(1)`, ... in the order they first appear,
/// renamed to fresh variables at each call.
#[derive(Debug)]
struct Overload {
    member: bool,
    /// For a member overload, the receiver first.
    args: Vec<Ty>,
    result: Ty,
    params: u32,
}

type Table = HashMap<String, Vec<Overload>>;

/// The table is a constant: the unit test `the_overload_table_parses` parses every line, so a
/// mistake in it fails the tests, never a user's policy.
static TABLE: LazyLock<Table> =
    LazyLock::new(|| parse_table(OVERLOADS).expect("the overload table parses (unit tested)"));

fn parse_table(text: &str) -> Result<Table, String> {
    let mut table: Table = HashMap::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, overload) = parse_overload(line).map_err(|e| format!("{line}: {e}"))?;
        table.entry(name).or_default().push(overload);
    }
    Ok(table)
}

fn parse_overload(line: &str) -> Result<(String, Overload), String> {
    let (call, result) = line.split_once("->").ok_or("no ->")?;
    let mut params = HashMap::new();
    let mut p = SigParser {
        text: call.trim().as_bytes(),
        at: 0,
        params: &mut params,
    };
    let member = p.eat(b'.');
    let mut args = Vec::new();
    if member {
        args.push(p.ty()?);
        if !p.eat(b'.') {
            return Err("a member overload names its receiver, then '.'".into());
        }
    }
    let name = p.name();
    if name.is_empty() || !p.eat(b'(') {
        return Err("expected name(".into());
    }
    if !p.eat(b')') {
        loop {
            args.push(p.ty()?);
            if p.eat(b')') {
                break;
            }
            if !p.eat(b',') {
                return Err("expected , or )".into());
            }
        }
    }
    if p.at != p.text.len() {
        return Err("text after the arguments".into());
    }
    let mut r = SigParser {
        text: result.trim().as_bytes(),
        at: 0,
        params: &mut params,
    };
    let result = r.ty()?;
    if r.at != r.text.len() {
        return Err("text after the result".into());
    }
    let params = u32::try_from(params.len()).map_err(|_| "too many type parameters")?;
    Ok((
        name,
        Overload {
            member,
            args,
            result,
            params,
        },
    ))
}

struct SigParser<'a> {
    text: &'a [u8],
    at: usize,
    params: &'a mut HashMap<String, u32>,
}

impl SigParser<'_> {
    fn skip_space(&mut self) {
        while self.text.get(self.at) == Some(&b' ') {
            self.at += 1;
        }
    }

    fn eat(&mut self, c: u8) -> bool {
        self.skip_space();
        if self.text.get(self.at) == Some(&c) {
            self.at += 1;
            true
        } else {
            false
        }
    }

    /// A function or type name: letters, digits, `_`, `@`, `!`, `-`, `?`, `:`, `=`, `<`, `>`,
    /// `%`, `*`, `/`, `+`, `[`, `]` and inner dots (`optional.of`, `_[?_]`).
    fn name(&mut self) -> String {
        self.skip_space();
        let start = self.at;
        while let Some(&c) = self.text.get(self.at) {
            let op = b"_@!-?:=<>%*/+[]".contains(&c);
            // A dot belongs to the name when a name character follows (`optional.of`).
            let dot = c == b'.'
                && self
                    .text
                    .get(self.at + 1)
                    .is_some_and(|n| n.is_ascii_alphabetic());
            if c.is_ascii_alphanumeric() || op || dot {
                self.at += 1;
            } else {
                break;
            }
        }
        String::from_utf8_lossy(&self.text[start..self.at]).into_owned()
    }

    /// A type name without dots, then its parameters.
    fn ty(&mut self) -> Result<Ty, String> {
        self.skip_space();
        let start = self.at;
        while self
            .text
            .get(self.at)
            .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_')
        {
            self.at += 1;
        }
        let name = String::from_utf8_lossy(&self.text[start..self.at]).into_owned();
        let mut inner = Vec::new();
        if self.eat(b'(') {
            loop {
                inner.push(self.ty()?);
                if self.eat(b')') {
                    break;
                }
                if !self.eat(b',') {
                    return Err(format!("expected , or ) in {name}(...)"));
                }
            }
        }
        let mut inner = inner.into_iter();
        let mut next = || inner.next().ok_or(format!("{name} needs a parameter"));
        Ok(match name.as_str() {
            "int" => Ty::Int,
            "uint" => Ty::Uint,
            "double" => Ty::Double,
            "bool" => Ty::Bool,
            "string" => Ty::String,
            "bytes" => Ty::Bytes,
            "null_type" => Ty::Null,
            "duration" => Ty::Duration,
            "timestamp" => Ty::Timestamp,
            "dyn" => Ty::Dyn,
            "list" => Ty::list(next()?),
            "map" => {
                let k = next()?;
                Ty::map(k, next()?)
            }
            "optional" => Ty::optional(next()?),
            "type" => Ty::Type(Box::new(next()?)),
            p if p.len() == 1 && p.as_bytes()[0].is_ascii_uppercase() => {
                let n = u32::try_from(self.params.len()).map_err(|_| "too many parameters")?;
                Ty::Var(*self.params.entry(p.to_string()).or_insert(n))
            }
            other => match NAMED_TYPES.iter().find(|(short, _)| *short == other) {
                Some((_, full)) => Ty::Opaque(full),
                None => return Err(format!("unknown type {other:?}")),
            },
        })
    }
}

// ---------------------------------------------------------------------------------------------
// Unification, as cel-go's checker does it.

#[derive(Clone, Default)]
struct Subst(HashMap<u32, Ty>);

impl Subst {
    /// Replaces bound type parameters; unbound ones become `dyn` when `to_dyn`.
    fn apply(&self, t: &Ty, to_dyn: bool) -> Ty {
        match t {
            Ty::Var(v) => match self.0.get(v) {
                Some(s) => self.apply(s, to_dyn),
                None if to_dyn => Ty::Dyn,
                None => t.clone(),
            },
            Ty::List(e) => Ty::list(self.apply(e, to_dyn)),
            Ty::Map(k, v) => Ty::map(self.apply(k, to_dyn), self.apply(v, to_dyn)),
            Ty::Optional(e) => Ty::optional(self.apply(e, to_dyn)),
            Ty::Type(e) => Ty::Type(Box::new(self.apply(e, to_dyn))),
            _ => t.clone(),
        }
    }

    /// Whether a value of type `t1` may be passed where `t2` is expected, binding type
    /// parameters of either side as needed.
    fn assignable(&mut self, t1: &Ty, t2: &Ty) -> bool {
        if let Ty::Var(v2) = t2 {
            let (valid, bound) = self.substitutes(t1, *v2);
            if valid {
                return true;
            }
            if bound {
                return false;
            }
        }
        if let Ty::Var(v1) = t1 {
            return self.substitutes(t2, *v1).0;
        }
        if t1.is_dyn() || t2.is_dyn() {
            return true;
        }
        match (t1, t2) {
            (Ty::Null, other) | (other, Ty::Null) => nullable(other),
            (Ty::List(a), Ty::List(b)) | (Ty::Optional(a), Ty::Optional(b)) => {
                self.assignable(a, b)
            }
            (Ty::Map(k1, v1), Ty::Map(k2, v2)) => {
                self.assignable(k1, k2) && self.assignable(v1, v2)
            }
            (Ty::Type(_), Ty::Type(_)) => true,
            (a, b) => a == b,
        }
    }

    /// Whether `t` is a valid substitution for the parameter `v`, and whether `v` was bound.
    fn substitutes(&mut self, t: &Ty, v: u32) -> (bool, bool) {
        if *t == Ty::Var(v) {
            return (true, true);
        }
        if let Some(bound) = self.0.get(&v).cloned() {
            if *t == bound {
                return (true, true);
            }
            if self.assignable(t, &bound) {
                let general = most_general(t, &bound);
                if self.not_in(v, &general) {
                    self.0.insert(v, general);
                }
                return (true, true);
            }
            return (false, true);
        }
        if self.not_in(v, t) {
            self.0.insert(v, t.clone());
            return (true, false);
        }
        (false, false)
    }

    /// The occurs check.
    fn not_in(&self, v: u32, within: &Ty) -> bool {
        match within {
            Ty::Var(w) if *w == v => false,
            Ty::Var(w) => self.0.get(w).is_none_or(|s| self.not_in(v, s)),
            Ty::List(e) | Ty::Optional(e) | Ty::Type(e) => self.not_in(v, e),
            Ty::Map(k, e) => self.not_in(v, k) && self.not_in(v, e),
            _ => true,
        }
    }
}

/// cel-go keeps the nullness rules of its first checker: null is assignable to durations,
/// timestamps, optionals and library types, not to primitives, lists or maps.
fn nullable(t: &Ty) -> bool {
    matches!(
        t,
        Ty::Null | Ty::Duration | Ty::Timestamp | Ty::Optional(_) | Ty::Opaque(_)
    )
}

/// Of two types known to unify, the one with fewer constraints.
fn most_general(t1: &Ty, t2: &Ty) -> Ty {
    if less_specific(t1, t2) {
        t1.clone()
    } else {
        t2.clone()
    }
}

fn less_specific(t1: &Ty, t2: &Ty) -> bool {
    if matches!(t1, Ty::Dyn | Ty::Var(_)) {
        return true;
    }
    if matches!(t2, Ty::Dyn | Ty::Var(_)) {
        return false;
    }
    match (t1, t2) {
        (Ty::List(a), Ty::List(b)) | (Ty::Optional(a), Ty::Optional(b)) => less_specific(a, b),
        (Ty::Map(k1, v1), Ty::Map(k2, v2)) => less_specific(k1, k2) && less_specific(v1, v2),
        (Ty::Type(_), Ty::Type(_)) => true,
        (a, b) => a == b,
    }
}

// ---------------------------------------------------------------------------------------------
// The checker.

/// A type error: the node it is at and what is wrong, worded as cel-go words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TypeError {
    pub id: u64,
    pub message: String,
}

/// A type's name as cel-go's format messages give it: its kind's, without parameters.
fn format_type_name(t: &Ty) -> String {
    match t {
        Ty::Null => "null_type".into(),
        Ty::List(_) => "list".into(),
        Ty::Map(..) => "map".into(),
        Ty::Type(_) => "type".into(),
        Ty::Optional(_) => "optional_type".into(),
        other => other.to_string(),
    }
}

/// The names a type name denotes as a value (`type(x) == string`).
fn type_name(name: &str) -> Option<Ty> {
    Some(match name {
        "int" => Ty::Int,
        "uint" => Ty::Uint,
        "double" => Ty::Double,
        "bool" => Ty::Bool,
        "string" => Ty::String,
        "bytes" => Ty::Bytes,
        "list" => Ty::list(Ty::Dyn),
        "map" => Ty::map(Ty::Dyn, Ty::Dyn),
        "null_type" => Ty::Null,
        "type" => Ty::Dyn,
        "timestamp" => Ty::Timestamp,
        "duration" => Ty::Duration,
        "optional_type" => Ty::optional(Ty::Dyn),
        _ => return None,
    })
}

/// The type of a policy variable.
pub(crate) fn variable_type(name: &str) -> Ty {
    match name {
        super::VAR_NOW => Ty::Timestamp,
        super::VAR_AGE => Ty::Duration,
        super::VAR_GROUP => Ty::String,
        super::VAR_RANK
        | super::VAR_GROUP_SIZE
        | super::VAR_ARTIFACT_BYTES
        | super::VAR_GROUP_BYTES => Ty::Int,
        // object, referencedBy: JSON read at run time.
        _ => Ty::Dyn,
    }
}

/// The type a variable bound to `v` is declared with, as a CEL environment declares it: a list
/// or map whose elements all have one type has that element type, an empty or mixed one dyn
/// elements; a value the checker has no type for (a library's or an optional) is dyn.
pub(crate) fn value_type(v: &cel::Value) -> Ty {
    use cel::Value;
    use cel::objects::Key;
    /// The one type of all `types`, if they agree.
    fn common(mut types: impl Iterator<Item = Ty>) -> Ty {
        let Some(first) = types.next() else {
            return Ty::Dyn;
        };
        if types.all(|t| t == first) {
            first
        } else {
            Ty::Dyn
        }
    }
    match v {
        Value::Null => Ty::Null,
        Value::Bool(_) => Ty::Bool,
        Value::Int(_) => Ty::Int,
        Value::UInt(_) => Ty::Uint,
        Value::Float(_) => Ty::Double,
        Value::String(_) => Ty::String,
        Value::Bytes(_) => Ty::Bytes,
        Value::Duration(_) => Ty::Duration,
        Value::Timestamp(_) => Ty::Timestamp,
        Value::List(items) => Ty::list(common(items.iter().map(value_type))),
        Value::Map(m) => Ty::map(
            common(m.map.keys().map(|k| match k {
                Key::Int(_) => Ty::Int,
                Key::Uint(_) => Ty::Uint,
                Key::Bool(_) => Ty::Bool,
                Key::String(_) => Ty::String,
            })),
            common(m.map.values().map(value_type)),
        ),
        _ => Ty::Dyn,
    }
}

/// What checking found besides the absence of errors.
#[derive(Debug)]
pub(crate) struct Checked {
    /// The expression's type.
    pub ty: Ty,
    pub facts: TypeFacts,
}

/// What evaluation must know of the types cel-go's checker found, to answer as cel-go does
/// (fold.rs rewrites these nodes).
#[derive(Debug, Default, Clone)]
pub(crate) struct TypeFacts {
    /// The field selections (`x.f`, not `has(x.f)`) whose operand is an optional: cel-go
    /// qualifies the value such an optional holds as `x.?f` does.
    pub optional_selects: HashSet<u64>,
    /// Calls of `isSorted`, `sum`, `min` or `max` on a list whose element type was still open
    /// (`object.l.reverse()`): the first overload, the one for `list(int)`, binds it, and
    /// cel-go then dispatches to that overload only, which refuses a list whose first element
    /// is not an int ("no such overload").
    pub int_lists: HashSet<u64>,
    /// Conversions (`string(x)`, `double(x)`, ...) whose argument the checker typed: cel-go
    /// then dispatches to the overload of that type only, and refuses a value of another
    /// type at run time ("no such overload: double(double)"). A type bound by unification
    /// can be other than the value: `double(object.x.orValue('none'))` is `double(string)` to
    /// the checker, and `object.x` a double; an open type is bound to the first overload, the
    /// identity (`string(object.l.first().value())` is `string(string)`). With the name of
    /// the type.
    pub conversion_args: HashMap<u64, &'static str>,
    /// `a + b` where a side may be a list at run time: cel-go has no overload
    /// for a list and anything but a list, where the cel crate appends what the other side
    /// iterates (a map's keys).
    pub list_adds: HashSet<u64>,
}

/// Checks `root` with the variables `vars` declared; returns its type.
pub(crate) fn check(root: &IdedExpr, vars: &[(&str, Ty)]) -> Result<Checked, TypeError> {
    let mut c = Checker {
        subst: Subst::default(),
        next_var: 0,
        scopes: vars
            .iter()
            .map(|(n, t)| (n.to_string(), t.clone()))
            .collect(),
        types: HashMap::new(),
        pairs: Vec::new(),
        facts: TypeFacts::default(),
    };
    let t = c.check(root)?;
    c.homogeneous(root, false)?;
    c.format_literals(root)?;
    Ok(Checked {
        ty: c.subst.apply(&t, true),
        facts: c.facts,
    })
}

struct Checker {
    subst: Subst,
    next_var: u32,
    /// Declared variables, then comprehension variables, innermost last.
    scopes: Vec<(String, Ty)>,
    /// The type found for each node, before the last substitution.
    types: HashMap<u64, Ty>,
    /// The `[key, value]` pair variables of two-variable comprehensions (comprehensions.rs),
    /// with the types of their key (or index) and value, innermost last.
    pairs: Vec<(String, Ty, Ty)>,
    facts: TypeFacts,
}

impl Checker {
    fn fresh(&mut self) -> Ty {
        self.next_var += 1;
        // Table parameters are renamed above every number the table uses.
        Ty::Var(1000 + self.next_var)
    }

    fn lookup(&self, name: &str) -> Option<Ty> {
        self.scopes
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
    }

    /// The final type of a checked node.
    fn final_type(&self, id: u64) -> Ty {
        self.types
            .get(&id)
            .map_or(Ty::Dyn, |t| self.subst.apply(t, true))
    }

    /// cel-go's `ValidateHomogeneousAggregateLiterals`, which Kubernetes enables: the elements
    /// of a list literal, and the keys and the values of a map literal, must have one type, dyn
    /// included (`[object.a, 1]` is refused). Literals anywhere inside a `format` call are
    /// exempt, as the strings extension declares.
    fn homogeneous(&self, e: &IdedExpr, in_format: bool) -> Result<(), TypeError> {
        // Retainer's math extension (beyond Kubernetes) mixes numbers in its argument list too.
        let in_format = in_format
            || matches!(&e.expr, Expr::Call(c)
                if matches!(c.func_name.as_str(), "format" | "math.@max" | "math.@min"));
        if !in_format {
            let unwrap = |t: Ty, optional: bool| match t {
                Ty::Optional(inner) if optional => *inner,
                other => other,
            };
            let same = |first: &mut Option<Ty>, id: u64, t: Ty| -> Result<(), TypeError> {
                match first {
                    None => *first = Some(t),
                    Some(f) if *f == t => {}
                    Some(f) => {
                        return Err(TypeError {
                            id,
                            message: format!("expected type '{f}' but found '{t}'"),
                        });
                    }
                }
                Ok(())
            };
            match &e.expr {
                Expr::List(list) => {
                    let mut first = None;
                    for (i, item) in list.elements.iter().enumerate() {
                        let t =
                            unwrap(self.final_type(item.id), list.optional_indices.contains(&i));
                        same(&mut first, item.id, t)?;
                    }
                }
                Expr::Map(map) => {
                    let (mut keys, mut values) = (None, None);
                    for entry in &map.entries {
                        if let EntryExpr::MapEntry(me) = &entry.expr {
                            same(&mut keys, me.key.id, self.final_type(me.key.id))?;
                            let v = unwrap(self.final_type(me.value.id), me.optional);
                            same(&mut values, me.value.id, v)?;
                        }
                    }
                }
                _ => {}
            }
        }
        for c in super::children(e) {
            self.homogeneous(c, in_format)?;
        }
        Ok(())
    }

    /// The type found for a node, with what is bound so far substituted.
    fn node_type(&self, id: u64) -> Ty {
        self.types
            .get(&id)
            .map_or(Ty::Dyn, |t| self.subst.apply(t, false))
    }

    /// cel-go's `stringFormatValidator`, which the strings extension adds to Kubernetes'
    /// environment: a literal format string applied to a list literal must have a valid clause
    /// for each argument, no argument left over, and arguments whose type can suit their
    /// clause (dyn always can). What it refuses could only fail when evaluated.
    fn format_literals(&self, root: &IdedExpr) -> Result<(), TypeError> {
        let mut stack = vec![root];
        while let Some(e) = stack.pop() {
            stack.extend(super::children(e));
            let Expr::Call(call) = &e.expr else { continue };
            let (Some(target), [arg]) = (call.target.as_deref(), call.args.as_slice()) else {
                continue;
            };
            let (Expr::Literal(LiteralValue::String(text)), Expr::List(list)) =
                (&target.expr, &arg.expr)
            else {
                continue;
            };
            if call.func_name != "format" {
                continue;
            }
            let args = &list.elements;
            let checked =
                string_format::interpolate(text.inner(), args.len(), |i, verb| match args.get(i) {
                    Some(a) => self.format_arg(a, verb).map(|()| String::new()),
                    None => Ok(String::new()),
                });
            let clauses = match checked {
                Ok((_, clauses)) => clauses,
                Err(Failure::Text(message)) => return Err(TypeError { id: e.id, message }),
                Err(Failure::Clause(err)) => return Err(err),
            };
            if args.len() > clauses {
                return Err(TypeError {
                    id: e.id,
                    message: format!(
                        "too many arguments supplied to string.format (expected {clauses}, got {})",
                        args.len()
                    ),
                });
            }
        }
        Ok(())
    }

    /// Whether the argument's type can suit the clause, by its kind only (cel-go's
    /// `stringFormatChecker`).
    fn format_arg(&self, arg: &IdedExpr, verb: Verb) -> Result<(), TypeError> {
        let t = self.final_type(arg.id);
        let (ok, what) = match verb {
            Verb::String => return self.format_string_arg(arg),
            Verb::Decimal => (
                matches!(t, Ty::Int | Ty::Uint),
                "decimal clause can only be used on integers",
            ),
            Verb::Fixed(_) => (
                matches!(t, Ty::Double | Ty::String),
                "fixed-point clause can only be used on doubles",
            ),
            Verb::Scientific(_) => (
                matches!(t, Ty::Double | Ty::String),
                "scientific clause can only be used on doubles",
            ),
            Verb::Binary => (
                matches!(t, Ty::Int | Ty::Uint | Ty::Bool),
                "only integers and bools can be formatted as binary",
            ),
            Verb::Hex { .. } => (
                matches!(t, Ty::Int | Ty::Uint | Ty::String | Ty::Bytes),
                "only integers, byte buffers, and strings can be formatted as hex",
            ),
            Verb::Octal => (
                matches!(t, Ty::Int | Ty::Uint),
                "octal clause can only be used on integers",
            ),
        };
        if ok || t.is_dyn() {
            return Ok(());
        }
        Err(TypeError {
            id: arg.id,
            message: format!(
                "error during formatting: {what}, was given {}",
                format_type_name(&t)
            ),
        })
    }

    /// `%s` takes any type but optionals and the libraries' own; into list and map literals
    /// it looks at each element, key and value.
    fn format_string_arg(&self, arg: &IdedExpr) -> Result<(), TypeError> {
        let t = self.final_type(arg.id);
        if matches!(t, Ty::Optional(_) | Ty::Opaque(_)) {
            return Err(TypeError {
                id: arg.id,
                message: format!(
                    "error during formatting: string clause can only be used on strings, bools, bytes, ints, doubles, maps, lists, types, durations, and timestamps, was given {}",
                    format_type_name(&t)
                ),
            });
        }
        match &arg.expr {
            Expr::List(list) => {
                for item in &list.elements {
                    self.format_string_arg(item)?;
                }
            }
            Expr::Map(map) => {
                for entry in &map.entries {
                    if let EntryExpr::MapEntry(me) = &entry.expr {
                        self.format_string_arg(&me.key)?;
                        self.format_string_arg(&me.value)?;
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// For messages: bound parameters replaced, unbound ones `dyn`.
    fn show(&self, t: &Ty) -> Ty {
        self.subst.apply(t, true)
    }

    fn mismatch(&self, id: u64, want: &Ty, got: &Ty) -> TypeError {
        TypeError {
            id,
            message: format!(
                "expected type '{}' but found '{}'",
                self.show(want),
                self.show(got)
            ),
        }
    }

    fn check(&mut self, e: &IdedExpr) -> Result<Ty, TypeError> {
        let t = self.check_node(e)?;
        self.types.insert(e.id, t.clone());
        Ok(t)
    }

    fn check_node(&mut self, e: &IdedExpr) -> Result<Ty, TypeError> {
        match &e.expr {
            Expr::Literal(l) => Ok(match l {
                LiteralValue::Boolean(_) => Ty::Bool,
                LiteralValue::Int(_) => Ty::Int,
                LiteralValue::UInt(_) => Ty::Uint,
                LiteralValue::Double(_) => Ty::Double,
                LiteralValue::String(_) => Ty::String,
                LiteralValue::Bytes(_) => Ty::Bytes,
                LiteralValue::Null => Ty::Null,
            }),
            Expr::Ident(name) => Ok(self
                .lookup(name)
                .or_else(|| type_name(name).map(|t| Ty::Type(Box::new(t))))
                // Namespaces and names the reference check accepted: nothing to check.
                .unwrap_or(Ty::Dyn)),
            Expr::Select(s) => {
                let t = self.select(e.id, &s.operand, &s.field, false)?;
                if !s.test && matches!(self.node_type(s.operand.id), Ty::Optional(_)) {
                    self.facts.optional_selects.insert(e.id);
                }
                Ok(if s.test { Ty::Bool } else { t })
            }
            Expr::Call(call) => self.call(e, call),
            Expr::List(list) => {
                let mut elem: Option<Ty> = None;
                for (i, item) in list.elements.iter().enumerate() {
                    let mut t = self.check(item)?;
                    if list.optional_indices.contains(&i) {
                        t = self.unwrap_optional(item.id, t)?;
                    }
                    elem = Some(self.join(elem, t));
                }
                let elem = match elem {
                    Some(t) => t,
                    None => self.fresh(),
                };
                Ok(Ty::list(elem))
            }
            Expr::Map(map) => {
                let (mut key, mut value): (Option<Ty>, Option<Ty>) = (None, None);
                for entry in &map.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(me) => {
                            let k = self.check(&me.key)?;
                            key = Some(self.join(key, k));
                            let mut v = self.check(&me.value)?;
                            if me.optional {
                                v = self.unwrap_optional(me.value.id, v)?;
                            }
                            value = Some(self.join(value, v));
                        }
                        EntryExpr::StructField(sf) => {
                            self.check(&sf.value)?;
                        }
                    }
                }
                let key = match key {
                    Some(t) => t,
                    None => self.fresh(),
                };
                let value = match value {
                    Some(t) => t,
                    None => self.fresh(),
                };
                Ok(Ty::map(key, value))
            }
            // Message construction: policies have no message types, which evaluation reports.
            Expr::Struct(s) => {
                for entry in &s.entries {
                    match &entry.expr {
                        EntryExpr::MapEntry(me) => {
                            self.check(&me.key)?;
                            self.check(&me.value)?;
                        }
                        EntryExpr::StructField(sf) => {
                            self.check(&sf.value)?;
                        }
                    }
                }
                Ok(Ty::Dyn)
            }
            Expr::Comprehension(c) => {
                let range = self.check(&c.iter_range)?;
                let range = self.subst.apply(&range, false);
                let accu = self.check(&c.accu_init)?;
                let (var, var2) = match &range {
                    Ty::List(elem) => match c.iter_var2 {
                        Some(_) => (Ty::Int, Some((**elem).clone())),
                        None => ((**elem).clone(), None),
                    },
                    Ty::Map(k, v) => ((**k).clone(), Some((**v).clone())),
                    Ty::Dyn | Ty::Var(_) => {
                        self.subst.assignable(&Ty::Dyn, &range);
                        (Ty::Dyn, Some(Ty::Dyn))
                    }
                    other => {
                        return Err(TypeError {
                            id: c.iter_range.id,
                            message: format!(
                                "expression of type '{}' cannot be range of a comprehension (must be list, map, or dynamic)",
                                self.show(other)
                            ),
                        });
                    }
                };
                let pair = self.pair_types(c)?;
                let has_pair = pair.is_some();
                if let Some((k, v)) = pair {
                    self.pairs.push((c.iter_var.clone(), k, v));
                }
                let outer = self.scopes.len();
                self.scopes.push((c.accu_var.clone(), accu.clone()));
                let body = self.scopes.len();
                self.scopes.push((c.iter_var.clone(), var));
                if let (Some(name), Some(t)) = (&c.iter_var2, var2) {
                    self.scopes.push((name.clone(), t));
                }
                let result = (|| {
                    let cond = self.check(&c.loop_cond)?;
                    if !self.subst.assignable(&Ty::Bool, &cond) {
                        return Err(self.mismatch(c.loop_cond.id, &Ty::Bool, &cond));
                    }
                    let step = self.check(&c.loop_step)?;
                    if !self.subst.assignable(&accu, &step) {
                        return Err(self.mismatch(c.loop_step.id, &accu, &step));
                    }
                    self.scopes.truncate(body);
                    self.check(&c.result)
                })();
                self.scopes.truncate(outer);
                if has_pair {
                    self.pairs.pop();
                }
                Ok(self.subst.apply(&result?, false))
            }
            Expr::Unspecified => Ok(Ty::Dyn),
        }
    }

    /// For a two-variable comprehension, which iterates over `@entries(range)`: the types of
    /// the index (or key) and the value, as cel-go gives its two variables.
    fn pair_types(
        &mut self,
        c: &cel::common::ast::ComprehensionExpr,
    ) -> Result<Option<(Ty, Ty)>, TypeError> {
        let Expr::Call(call) = &c.iter_range.expr else {
            return Ok(None);
        };
        let ([range], None) = (call.args.as_slice(), &call.target) else {
            return Ok(None);
        };
        if call.func_name != super::comprehensions::ENTRIES {
            return Ok(None);
        }
        let t = self.types.get(&range.id).cloned().unwrap_or(Ty::Dyn);
        Ok(Some(match self.subst.apply(&t, false) {
            Ty::List(e) => (Ty::Int, *e),
            Ty::Map(k, v) => (*k, *v),
            // A non-range was reported by `@entries` already.
            _ => (Ty::Dyn, Ty::Dyn),
        }))
    }

    /// The element type of an optional entry of a literal (`[?x]`, `{?k: v}`).
    fn unwrap_optional(&mut self, id: u64, t: Ty) -> Result<Ty, TypeError> {
        match self.subst.apply(&t, false) {
            Ty::Optional(inner) => Ok(*inner),
            Ty::Dyn => Ok(Ty::Dyn),
            other => Err(self.mismatch(id, &Ty::optional(other.clone()), &other)),
        }
    }

    /// The common type of a literal's elements: the most general one, or dyn when they do
    /// not unify. Kubernetes refuses the latter afterwards (`homogeneous`), except inside
    /// `format`, whose argument list mixes types by design.
    fn join(&mut self, previous: Option<Ty>, current: Ty) -> Ty {
        let Some(previous) = previous else {
            return current;
        };
        let mut trial = self.subst.clone();
        if trial.assignable(&previous, &current) {
            self.subst = trial;
            return most_general(&previous, &current);
        }
        Ty::Dyn
    }

    fn select(
        &mut self,
        id: u64,
        operand: &IdedExpr,
        field: &str,
        optional: bool,
    ) -> Result<Ty, TypeError> {
        let t = self.check(operand)?;
        let t = self.subst.apply(&t, false);
        let (target, was_optional) = match t {
            Ty::Optional(inner) => (*inner, true),
            other => (other, false),
        };
        let result = match &target {
            Ty::Map(_, v) => (**v).clone(),
            Ty::Var(_) => {
                self.subst.assignable(&Ty::Dyn, &target);
                Ty::Dyn
            }
            Ty::Dyn => Ty::Dyn,
            object if object.is_object() => {
                return Err(TypeError {
                    id,
                    message: format!("undefined field '{field}'"),
                });
            }
            other => {
                return Err(TypeError {
                    id,
                    message: format!("type '{other}' does not support field selection"),
                });
            }
        };
        Ok(if was_optional || optional {
            Ty::optional(result)
        } else {
            result
        })
    }

    fn call(&mut self, e: &IdedExpr, call: &cel::common::ast::CallExpr) -> Result<Ty, TypeError> {
        let name = call.func_name.as_str();
        if name == "_?._" && call.target.is_none() && call.args.len() == 2 {
            let Expr::Literal(LiteralValue::String(field)) = &call.args[1].expr else {
                return Err(TypeError {
                    id: call.args[1].id,
                    message: "unsupported optional field selection".into(),
                });
            };
            return self.select(e.id, &call.args[0], field.inner(), true);
        }
        let mut arg_types = Vec::with_capacity(call.args.len() + 1);
        // `math.greatest(1, 2.0, 3u)` expands to `math.@max([1, 2.0, 3u])`: the math extension
        // is retainer's own, beyond Kubernetes' environment, and mixes numeric types by design.
        let mixed_ok = matches!(name, "math.@max" | "math.@min" | "@max" | "@min");
        for a in &call.args {
            arg_types.push(match &a.expr {
                Expr::List(list) if mixed_ok => {
                    for item in &list.elements {
                        self.check(item)?;
                    }
                    Ty::list(Ty::Dyn)
                }
                _ => self.check(a)?,
            });
        }
        // `pair[0]` and `pair[1]` of a two-variable comprehension are its two variables.
        if let ("_[_]", None, [pair, index]) = (name, &call.target, call.args.as_slice())
            && let (Expr::Ident(pair), Expr::Literal(LiteralValue::Int(i))) =
                (&pair.expr, &index.expr)
            && let Some((_, k, v)) = self.pairs.iter().rev().find(|(n, _, _)| n == pair)
        {
            match *i.inner() {
                0 => return Ok(k.clone()),
                1 => return Ok(v.clone()),
                _ => {}
            }
        }
        if matches!(name, "_&&_" | "_||_") && call.target.is_none() {
            for (a, t) in call.args.iter().zip(&arg_types) {
                if !self.subst.assignable(t, &Ty::Bool) {
                    return Err(self.mismatch(a.id, &Ty::Bool, t));
                }
            }
            return Ok(Ty::Bool);
        }
        // The two-variable comprehensions iterate over `@entries(range)` (comprehensions.rs):
        // its pairs are `[index or key, value]`, read as dyn.
        if name == super::comprehensions::ENTRIES && call.target.is_none() {
            let range = arg_types
                .first()
                .map(|t| self.subst.apply(t, false))
                .unwrap_or(Ty::Dyn);
            return match range {
                Ty::List(_) | Ty::Map(..) | Ty::Dyn | Ty::Var(_) => Ok(Ty::list(Ty::list(Ty::Dyn))),
                other => Err(TypeError {
                    id: call.args.first().map_or(e.id, |a| a.id),
                    message: format!(
                        "expression of type '{}' cannot be range of a comprehension (must be list, map, or dynamic)",
                        self.show(&other)
                    ),
                }),
            };
        }
        if name == "_+_"
            && call.target.is_none()
            && let [a, b] = arg_types.as_slice()
        {
            let (a, b) = (self.subst.apply(a, false), self.subst.apply(b, false));
            // Either side, two lists included: a type bound by unification can be other than
            // the value at run time (`object.l.first().orValue([])` is a list to the checker,
            // and may hold a map).
            let maybe_list = |t: &Ty| matches!(t, Ty::List(_) | Ty::Dyn | Ty::Var(_));
            if maybe_list(&a) || maybe_list(&b) {
                self.facts.list_adds.insert(e.id);
            }
        }
        let Some(target) = call.target.as_deref() else {
            let t = self.resolve(e.id, name, None, &arg_types)?;
            if CONVERSIONS.contains(&name)
                && let [arg] = arg_types.as_slice()
            {
                let kind = match self.subst.apply(arg, false) {
                    Ty::Bool => Some("bool"),
                    Ty::Bytes => Some("bytes"),
                    Ty::Double => Some("double"),
                    Ty::Duration => Some("duration"),
                    Ty::Int => Some("int"),
                    Ty::String => Some("string"),
                    Ty::Timestamp => Some("timestamp"),
                    Ty::Uint => Some("uint"),
                    _ => None,
                };
                if let Some(kind) = kind {
                    self.facts.conversion_args.insert(e.id, kind);
                }
            }
            return Ok(t);
        };
        // `ns.f(x)`: a namespaced function, unless `ns` is a variable. A function of a
        // namespace the table does not know (`math.abs`) is an unknown function.
        if let Expr::Ident(ns) = &target.expr
            && self.lookup(ns).is_none()
        {
            let qualified = format!("{ns}.{name}");
            if TABLE.contains_key(&qualified) || NAMESPACES.contains(&ns.as_str()) {
                return self.resolve(e.id, &qualified, None, &arg_types);
            }
        }
        let receiver = self.check(target)?;
        let open_list = matches!(
            self.subst.apply(&receiver, false),
            Ty::List(elem) if matches!(*elem, Ty::Var(_))
        );
        let t = self.resolve(e.id, name, Some(receiver), &arg_types)?;
        if open_list && matches!(name, "isSorted" | "sum" | "min" | "max") {
            self.facts.int_lists.insert(e.id);
        }
        Ok(t)
    }

    /// cel-go's overload resolution: every overload the arguments are assignable to counts;
    /// the result is the first one's type, or dyn when they disagree.
    fn resolve(
        &mut self,
        id: u64,
        name: &str,
        receiver: Option<Ty>,
        args: &[Ty],
    ) -> Result<Ty, TypeError> {
        let Some(overloads) = TABLE.get(name) else {
            // The cel crate's parser expands the math extension's macros into internal names;
            // the message names what the expression says.
            let written = match name {
                "math.@max" => "math.greatest",
                "math.@min" => "math.least",
                other => other,
            };
            return Err(TypeError {
                id,
                message: format!("undeclared reference to '{written}'"),
            });
        };
        let member = receiver.is_some();
        let actual: Vec<Ty> = receiver.iter().chain(args).cloned().collect();
        let mut result: Option<Ty> = None;
        for o in overloads {
            if o.member != member || o.args.len() != actual.len() {
                continue;
            }
            let mut fresh = Subst::default();
            for p in 0..o.params {
                let v = self.fresh();
                fresh.0.insert(p, v);
            }
            let mut trial = self.subst.clone();
            let ok = o
                .args
                .iter()
                .zip(&actual)
                .all(|(want, got)| trial.assignable(got, &fresh.apply(want, false)));
            if ok {
                self.subst = trial;
                let r = self.subst.apply(&fresh.apply(&o.result, false), false);
                result = Some(match result {
                    None => r,
                    Some(prev) if prev == Ty::Dyn || prev == r => prev,
                    Some(_) => Ty::Dyn,
                });
            }
        }
        result.ok_or_else(|| {
            let shown: Vec<String> = actual.iter().map(|t| self.show(t).to_string()).collect();
            let signature = if member {
                format!("{}.({})", shown[0], shown[1..].join(", "))
            } else {
                format!("({})", shown.join(", "))
            };
            TypeError {
                id,
                message: format!(
                    "found no matching overload for '{name}' applied to '{signature}'"
                ),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expr::{CompileError, Compiled, Field};

    /// The type error of `src` as keep (`dyn(...)` around it, so the result type is not the
    /// subject), or `None` when it type-checks.
    fn type_error(field: Field, src: &str) -> Option<String> {
        match Compiled::compile_with(field, src, crate::expr::OCI_KEEP_VARIABLES) {
            Ok(_) | Err(CompileError::ResultType { .. }) => None,
            Err(CompileError::TypeCheck {
                line,
                column,
                message,
                ..
            }) => Some(format!("{line}:{column}: {message}")),
            Err(other) => panic!("{src}: not a type error: {other}"),
        }
    }

    #[test]
    fn what_kube_apiserver_compiles_type_checks() {
        for src in [
            "rank < 1 || age < duration('1h') || referencedBy.size() > 0",
            "object.status.?succeeded.orValue(0) > 0",
            "object.metadata.labels['gitjob.fleet.cattle.io/name']",
            "object.metadata.name == 'a' && object.x.y.z > 3",
            "object.spec.containers.exists(c, c.image.startsWith('nginx:'))",
            "object.spec.containers.map(c, c.name).join(',') != ''",
            "!('x' in object.metadata.labels)",
            "1 < 1.5 && 2u > 1 && 1.5 >= 1u",
            "now - age < timestamp('2026-01-01T00:00:00Z')",
            "now - timestamp('2026-01-01T00:00:00Z') > duration('1h')",
            "groupSize > 3 ? rank < 2 : rank < 1",
            "artifactBytes + groupBytes > 1000",
            "group.split('-')[0] == 'build'",
            "[1, 2].map(x, x * 2)[0] + 1 == 3",
            "[[1], []].size() == 2",
            "{'a': [1], 'b': []}.size() == 2",
            "type(rank) == int && type(group) == string",
            "semver(object.spec.version, true).isGreaterThan(semver('1.0.0'))",
            "object.tags.filter(t, isSemver(t, true)).size() > 0",
            "[1, 2].all(i, v, i < v) && {'a': 1}.exists(k, v, k == 'a' && v == 1)",
            "optional.of(1).optMap(x, x + 1).value() == 2",
            "[?optional.of(1), ?optional.none()].size() == 1",
            "'%s-%d'.format(['a', 1]) == 'a-1'",
            "object.a == null || [object.b, object.c].size() == 2",
            "sets.contains(['a', 'b'], ['a'])",
            "lists.range(3).sum() == 3",
            "[3, 1].sortBy(x, -x)[0] == 3",
            "quantity(object.spec.memory).isLessThan(quantity('1Gi'))",
            "url(object.spec.url).getHost() == 'example.com'",
            "cidr('10.0.0.0/8').containsIP(ip(object.spec.ip))",
        ] {
            assert_eq!(type_error(Field::Keep, src), None, "{src}");
        }
    }

    #[test]
    fn what_kube_apiserver_refuses_is_refused_with_its_words() {
        for (src, want) in [
            // Names Kubernetes' environment does not declare, though the cel crate has some.
            (
                "notAFunction(1) == 2",
                "1:13: undeclared reference to 'notAFunction'",
            ),
            (
                "math.greatest(1, 2) > 0",
                "1:14: undeclared reference to 'math.greatest'",
            ),
            (
                "math.least([1, 2]) == 1",
                "1:11: undeclared reference to 'math.least'",
            ),
            (
                "math.abs(-1) == 1",
                "1:9: undeclared reference to 'math.abs'",
            ),
            (
                "base64.encode(b'a') == 'YQ=='",
                "1:14: undeclared reference to 'base64.encode'",
            ),
            (
                "format.nope() == 'x'",
                "1:12: undeclared reference to 'format.nope'",
            ),
            (
                "'abc'.reverse() == 'cba'",
                "1:14: found no matching overload for 'reverse' applied to 'string.()'",
            ),
            (
                "'a' + true",
                "1:5: found no matching overload for '_+_' applied to '(string, bool)'",
            ),
            (
                "!'x' in object.metadata.labels",
                "1:1: found no matching overload for '!_' applied to '(string)'",
            ),
            (
                "[1, 2].join('/')",
                "1:12: found no matching overload for 'join' applied to 'list(int).(string)'",
            ),
            ("[1, 'a']", "1:5: expected type 'int' but found 'string'"),
            ("[object.a, 1]", "1:12: expected type 'dyn' but found 'int'"),
            (
                "{'a': 1, 'b': 'c'}",
                "1:15: expected type 'int' but found 'string'",
            ),
            (
                "rank == 'a'",
                "1:6: found no matching overload for '_==_' applied to '(int, string)'",
            ),
            (
                "rank + 'a'",
                "1:6: found no matching overload for '_+_' applied to '(int, string)'",
            ),
            (
                "age > 5",
                "1:5: found no matching overload for '_>_' applied to '(google.protobuf.Duration, int)'",
            ),
            (
                "now - 1",
                "1:5: found no matching overload for '_-_' applied to '(google.protobuf.Timestamp, int)'",
            ),
            (
                "size(1)",
                "1:5: found no matching overload for 'size' applied to '(int)'",
            ),
            (
                "object.x.startsWith(1)",
                "1:20: found no matching overload for 'startsWith' applied to 'dyn.(int)'",
            ),
            (
                "1 == 1.0",
                "1:3: found no matching overload for '_==_' applied to '(int, double)'",
            ),
            (
                "rank == null",
                "1:6: found no matching overload for '_==_' applied to '(int, null)'",
            ),
            (
                "true ? 1 : 'a'",
                "1:6: found no matching overload for '_?_:_' applied to '(bool, int, string)'",
            ),
            ("true && 1", "1:9: expected type 'bool' but found 'int'"),
            (
                "[1, 2].map(x, x * 2)[0] + 'a'",
                "1:25: found no matching overload for '_+_' applied to '(int, string)'",
            ),
            (
                "[1, 2].all(i, v, i == 'a')",
                "1:20: found no matching overload for '_==_' applied to '(int, string)'",
            ),
            ("rank.a", "1:5: type 'int' does not support field selection"),
            ("semver('1.0.0').major", "1:16: undefined field 'major'"),
            (
                "semver('1.0.0') < semver('2.0.0')",
                "1:17: found no matching overload for '_<_' applied to '(kubernetes.Semver, kubernetes.Semver)'",
            ),
            (
                "1.all(x, x > 0)",
                "1:1: expression of type 'int' cannot be range of a comprehension (must be list, map, or dynamic)",
            ),
            (
                "optional.of(1).orValue('a')",
                "1:23: found no matching overload for 'orValue' applied to 'optional_type(int).(string)'",
            ),
            (
                "group.matches(1)",
                "1:14: found no matching overload for 'matches' applied to 'string.(int)'",
            ),
        ] {
            assert_eq!(type_error(Field::Keep, src).as_deref(), Some(want), "{src}");
        }
        // Each field sees its own variables with their types.
        assert_eq!(
            type_error(Field::GroupBy, "object.x + now").as_deref(),
            None,
            "dyn + timestamp resolves"
        );
        assert!(
            type_error(Field::OrderBy, "group + 1").is_some_and(|e| e.contains("'(string, int)'"))
        );
    }

    #[test]
    fn the_overload_table_parses() {
        let table = parse_table(OVERLOADS).unwrap_or_else(|e| panic!("{e}"));
        assert!(table["_+_"].len() >= 9);
        assert!(table["size"].iter().any(|o| o.member));
        assert!(table.contains_key("optional.of"));
        assert!(table.contains_key("_[?_]"));
        assert!(table.contains_key("@sortByAssociatedKeys"));
        let index_of = &table["indexOf"];
        assert!(index_of.iter().any(|o| o.args[0] == Ty::list(Ty::Var(0))));
    }
}
