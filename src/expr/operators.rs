//! Operators and standard functions that cel-go, as Kubernetes configures it, evaluates
//! otherwise than the cel crate's interpreter. fold.rs rewrites each use to the function here,
//! so that a verdict is the one kube-apiserver would reach:
//!
//! - `has(x.f)` is false when `x` is null, a string, a number or a bool: Kubernetes does not
//!   set cel-go's `EnableErrorOnBadPresenceTest`, which the CEL conformance suite (and so the
//!   cel crate) assumes. On a list it is an error in both.
//! - `x.?f`, and `x.f` where `x` is an optional, hold nothing when the value is not a map
//!   (null, a string, a number), as in cel-go, and are an error on a list.
//! - `k in m` is false for a key of a type no map key can have (null, a list, a map), where
//!   the cel crate reports an unsupported key.
//! - `x.orValue(d)` and `x.or(o)` evaluate `d` and `o` only when `x` holds nothing, and answer
//!   `x` itself when it is not an optional (cel-go's `evalOptionalOrValue`, `evalOptionalOr`):
//!   `object.?spec.a.orValue(object.spec.b)` does not fail for want of `b` when `a` is there.
//! - `x[?i]` is an error for an index no list or map is indexed by (null, a list), and for a
//!   string or a bool index into a list, as cel-go reports it; it holds nothing on a value that
//!   is neither a list nor a map.
//! - `string(d)` of a double is Go's `%g` (`1e+06`, `1.610612736e+09`), of a duration its
//!   seconds as a float64 (`34560000s` for 400 days and 1ns, as cel-go rounds it), and of a
//!   timestamp RFC 3339 in the timestamp's own offset (`2025-06-15T12:30:00+02:00`).
//! - `int(d)` of a duration is its nanoseconds; the cel crate has no such conversion.
//! - `l + x` and `x + l`, a list and something else, is an error, where the cel crate
//!   appends what `x` iterates (a map's keys, a string's characters).
//! - `string(x)`, `double(x)` and the other conversions fail on a value of another type than
//!   the checker gave the argument (types::TypeFacts::conversion_args).
//! - `t.getHours()` and the other accessors without a time zone read a timestamp in UTC, as
//!   cel-go does; the cel crate reads it in the offset it was written with
//!   (`timestamp('2025-06-15T12:30:00+02:00').getHours()` is 10).
//! - `l.isSorted()`, `l.sum()`, `l.min()` and `l.max()` on a list whose element type the
//!   checker left open fail unless its first element is an int (types::TypeFacts::int_lists).
//! - `s.indexOf(t, i)` and `s.lastIndexOf(t, i)` answer -1 for an offset past the end, and
//!   the offset itself for an empty `t`, as cel-go's strings extension does; the cel crate's
//!   reports the offset out of range.

use cel::common::types::{
    CelBool, CelDouble, CelDuration, CelInt, CelList, CelMap, CelOptional, CelString, CelTimestamp,
    CelUInt, DYN_TYPE, INT_TYPE, Kind, LIST_TYPE, STRING_TYPE,
};
use cel::common::value::{CowVal, Val};
use cel::{DeclarationError, Env, ExecutionError};

use super::library::{Args, Ret};

/// The functions fold.rs rewrites to.
pub const HAS: &str = "@has";
pub const OPT_SELECT: &str = "@optSelect";
pub const MEMBER: &str = "@member";
pub const STRING: &str = "@string";
pub const INT: &str = "@int";
pub const OPT_PRESENT: &str = "@optPresent";
pub const OPT_GET: &str = "@optGet";
pub const OPT_INDEX: &str = "@optIndex";
pub const INT_LIST: &str = "@intList";
pub const ADD: &str = "@add";
pub const UTC: &str = "@utc";
pub const SAME_TYPE: &str = "@sameType";

/// The timestamp accessors that take an optional time zone, UTC without one.
pub const TIME_ACCESSORS: &[&str] = &[
    "getFullYear",
    "getMonth",
    "getDayOfYear",
    "getDate",
    "getDayOfMonth",
    "getDayOfWeek",
    "getHours",
    "getMinutes",
    "getSeconds",
    "getMilliseconds",
];
pub const INDEX_OF: &str = "@indexOf";
pub const LAST_INDEX_OF: &str = "@lastIndexOf";

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload(HAS, "has_dyn_string", vec![DYN_TYPE, STRING_TYPE], has)?;
    env.add_overload(
        OPT_SELECT,
        "opt_select_dyn_string",
        vec![DYN_TYPE, STRING_TYPE],
        opt_select,
    )?;
    env.add_overload(MEMBER, "member_dyn_dyn", vec![DYN_TYPE, DYN_TYPE], member)?;
    env.add_overload(STRING, "string_dyn", vec![DYN_TYPE], string)?;
    env.add_overload(INT, "int_dyn", vec![DYN_TYPE], int)?;
    env.add_overload(ADD, "add_dyn_dyn", vec![DYN_TYPE, DYN_TYPE], add)?;
    env.add_overload(UTC, "utc_dyn", vec![DYN_TYPE], utc)?;
    env.add_overload(
        SAME_TYPE,
        "same_type_dyn_string_string",
        vec![DYN_TYPE, STRING_TYPE, STRING_TYPE],
        same_type,
    )?;
    env.add_overload(OPT_PRESENT, "opt_present_dyn", vec![DYN_TYPE], opt_present)?;
    env.add_overload(OPT_GET, "opt_get_dyn", vec![DYN_TYPE], opt_get)?;
    env.add_overload(
        OPT_INDEX,
        "opt_index_dyn_dyn",
        vec![DYN_TYPE, DYN_TYPE],
        opt_index,
    )?;
    env.add_overload(
        INT_LIST,
        "int_list_dyn_string",
        vec![DYN_TYPE, STRING_TYPE],
        int_list,
    )?;
    for (name, string_search, list_search) in [
        (
            INDEX_OF,
            index_of as super::library::Function,
            super::library::index_of as super::library::Function,
        ),
        (LAST_INDEX_OF, last_index_of, super::library::last_index_of),
    ] {
        env.add_member_overload(
            name,
            &format!("{name}_string"),
            STRING_TYPE,
            vec![STRING_TYPE],
            string_search,
        )?;
        env.add_member_overload(
            name,
            &format!("{name}_string_int"),
            STRING_TYPE,
            vec![STRING_TYPE, INT_TYPE],
            string_search,
        )?;
        env.add_member_overload(
            name,
            &format!("{name}_list"),
            LIST_TYPE,
            vec![DYN_TYPE],
            list_search,
        )?;
    }
    Ok(())
}

fn arity(function: &str) -> ExecutionError {
    ExecutionError::function_error(function, "wrong number of arguments")
}

fn bool_val<'b, 'v>(b: bool) -> Ret<'b, 'v> {
    Ok(CowVal::owned(CelBool::from(b)))
}

fn field_name<'a>(function: &str, v: &'a dyn Val) -> Result<&'a str, ExecutionError> {
    v.downcast_ref::<CelString>()
        .map(|s| s.inner())
        .ok_or_else(|| ExecutionError::function_error(function, "the field must be a string"))
}

/// What an optional holds, or the value itself when it is not an optional; `None` for an
/// optional that holds nothing.
fn unwrap<'a, 'v>(v: &'a (dyn Val + 'v)) -> Option<&'a (dyn Val + 'v)> {
    match v.downcast_ref::<CelOptional>() {
        Some(o) => o.inner(),
        None => Some(v),
    }
}

/// The error cel-go reports for a field of a list: a list is indexed by numbers only.
fn list_field(function: &str) -> ExecutionError {
    ExecutionError::function_error(function, "unsupported index type 'string' in list")
}

/// `has(target.field)`.
fn has<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let [target, field] = args.as_slice() else {
        return Err(arity("has"));
    };
    let field = field_name("has", field.as_ref())?;
    let Some(target) = unwrap(target.as_ref()) else {
        return bool_val(false);
    };
    match target.get_type().kind() {
        Kind::Map => match target.as_indexer() {
            Some(map) => match map.get(&CelString::from(field)) {
                Ok(_) => bool_val(true),
                Err(ExecutionError::NoSuchKey(_)) => bool_val(false),
                Err(e) => Err(e),
            },
            None => bool_val(false),
        },
        Kind::List => Err(list_field("has")),
        // Messages with fields are not in a policy's reach; anything else has no fields.
        _ => bool_val(false),
    }
}

/// `target.?field`, and `target.field` where `target` is an optional.
fn opt_select<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let [target, field] = args.as_slice() else {
        return Err(arity("_?._"));
    };
    let field = field_name("_?._", field.as_ref())?;
    let none = || Ok(CowVal::owned(CelOptional::none()));
    let Some(target) = unwrap(target.as_ref()) else {
        return none();
    };
    match target.get_type().kind() {
        Kind::Map => match target.as_indexer() {
            Some(map) => match map.get(&CelString::from(field)) {
                Ok(v) => Ok(CowVal::owned(CelOptional::of(v.into_owned()))),
                Err(ExecutionError::NoSuchKey(_)) => none(),
                Err(e) => Err(e),
            },
            None => none(),
        },
        Kind::List => Err(list_field("_?._")),
        _ => none(),
    }
}

/// `target[?index]`.
fn opt_index<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let [target, index] = args.as_slice() else {
        return Err(arity("_[?_]"));
    };
    let index: &dyn Val = index.as_ref();
    let kind = index.get_type().kind();
    if !matches!(
        kind,
        Kind::String | Kind::Int | Kind::UInt | Kind::Boolean | Kind::Double
    ) {
        return Err(ExecutionError::function_error(
            "_[?_]",
            format!("invalid qualifier type: {}", index.get_type().name()),
        ));
    }
    let none = || Ok(CowVal::owned(CelOptional::none()));
    let Some(target) = unwrap(target.as_ref()) else {
        return none();
    };
    match target.get_type().kind() {
        Kind::Map => match target.as_indexer().map(|map| map.get(index)) {
            Some(Ok(v)) => Ok(CowVal::owned(CelOptional::of(v.into_owned()))),
            _ => none(),
        },
        Kind::List => {
            // As cel-go's IndexOrError: a uint or a double only when it is an int64 exactly.
            let bad_value = |shown: String| {
                Err(ExecutionError::function_error(
                    "_[?_]",
                    format!("unsupported index value {shown} in list"),
                ))
            };
            let position = if let Some(i) = index.downcast_ref::<CelInt>() {
                Some(*i.inner())
            } else if let Some(u) = index.downcast_ref::<CelUInt>() {
                match i64::try_from(*u.inner()) {
                    Ok(i) => Some(i),
                    Err(_) => return bad_value(u.inner().to_string()),
                }
            } else if let Some(d) = index.downcast_ref::<CelDouble>() {
                let d = *d.inner();
                // The range check first: `as` saturates, and 2^63 would pass as i64::MAX.
                if !(d > i64::MIN as f64 && d < i64::MAX as f64) || d as i64 as f64 != d {
                    return bad_value(super::gofmt::format_g(d));
                }
                Some(d as i64)
            } else {
                None
            };
            let Some(position) = position else {
                return Err(ExecutionError::function_error(
                    "_[?_]",
                    format!(
                        "unsupported index type '{}' in list",
                        index.get_type().name()
                    ),
                ));
            };
            let item = target.downcast_ref::<CelList>().and_then(|l| {
                usize::try_from(position)
                    .ok()
                    .and_then(|p| l.inner().get(p))
            });
            match item {
                Some(v) => Ok(CowVal::owned(CelOptional::of(v.clone_as_boxed()))),
                None => none(),
            }
        }
        _ => none(),
    }
}

/// The receiver of `isSorted`, `sum`, `min` or `max`, if cel-go's dispatch to the `list(int)`
/// overload accepts it: empty, or an int first (cel-go looks at the first element only).
fn int_list<'b, 'v>(mut args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (Some(function), Some(list), true) = (args.pop(), args.pop(), args.is_empty()) else {
        return Err(arity("list"));
    };
    let first = list
        .downcast_ref::<CelList>()
        .and_then(|l| l.inner().first().map(|v| v.get_type().kind()));
    match first {
        Some(kind) if kind != Kind::Int => Err(ExecutionError::no_such_overload(
            field_name("list", function.as_ref())?,
            vec!["list".to_owned()],
        )),
        _ => Ok(list),
    }
}

/// A string search: the receiver and the substring as code points, and the offset if given.
struct Search {
    haystack: Vec<char>,
    needle: Vec<char>,
    offset: Option<i64>,
}

fn search_args(function: &str, args: &[CowVal<'_, '_>]) -> Result<Search, ExecutionError> {
    let text = |v: &dyn Val| {
        v.downcast_ref::<CelString>()
            .map(|s| s.inner().chars().collect::<Vec<char>>())
            .ok_or_else(|| ExecutionError::function_error(function, "want a string"))
    };
    let (haystack, needle, offset) = match args {
        [h, n] => (h, n, None),
        [h, n, o] => (h, n, Some(o)),
        _ => return Err(arity(function)),
    };
    let offset = match offset {
        None => None,
        Some(o) => Some(
            *o.downcast_ref::<CelInt>()
                .ok_or_else(|| ExecutionError::function_error(function, "want an int offset"))?
                .inner(),
        ),
    };
    Ok(Search {
        haystack: text(haystack.as_ref())?,
        needle: text(needle.as_ref())?,
        offset,
    })
}

fn int_val<'b, 'v>(i: i64) -> Ret<'b, 'v> {
    Ok(CowVal::owned(CelInt::from(i)))
}

fn matches_at(haystack: &[char], needle: &[char], at: usize) -> bool {
    haystack.get(at..at + needle.len()) == Some(needle)
}

/// cel-go's `indexOf`, in code points.
fn index_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let Search {
        haystack,
        needle,
        offset,
    } = search_args("indexOf", &args)?;
    let offset = offset.unwrap_or(0);
    if needle.is_empty() {
        return int_val(offset);
    }
    let Ok(start) = usize::try_from(offset) else {
        return Err(ExecutionError::function_error(
            "indexOf",
            format!("index out of range: {offset}"),
        ));
    };
    let found = (start..haystack.len()).find(|&i| matches_at(&haystack, &needle, i));
    int_val(found.map_or(-1, |i| i as i64))
}

/// cel-go's `lastIndexOf`, in code points; without an offset, a substring longer in bytes than
/// the string is not searched for, as in cel-go.
fn last_index_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let Search {
        haystack,
        needle,
        offset,
    } = search_args("lastIndexOf", &args)?;
    let offset = match offset {
        Some(o) => o,
        None => {
            if needle.is_empty() {
                return int_val(haystack.len() as i64);
            }
            let bytes = |cs: &[char]| cs.iter().map(|c| c.len_utf8()).sum::<usize>();
            if bytes(&haystack) < bytes(&needle) {
                return int_val(-1);
            }
            haystack.len() as i64 - 1
        }
    };
    if needle.is_empty() {
        return int_val(offset);
    }
    let Ok(start) = usize::try_from(offset) else {
        return Err(ExecutionError::function_error(
            "lastIndexOf",
            format!("index out of range: {offset}"),
        ));
    };
    if start >= haystack.len() || needle.len() > haystack.len() {
        return int_val(-1);
    }
    let start = start.min(haystack.len() - needle.len());
    let found = (0..=start)
        .rev()
        .find(|&i| matches_at(&haystack, &needle, i));
    int_val(found.map_or(-1, |i| i as i64))
}

/// `a + b` where the type checker could not tell that both are lists or neither is.
fn add<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let [a, b] = args.as_slice() else {
        return Err(arity("_+_"));
    };
    let list = |v: &dyn Val| v.get_type().kind() == Kind::List;
    let types = || {
        vec![
            a.get_type().name().to_owned(),
            b.get_type().name().to_owned(),
        ]
    };
    if list(a.as_ref()) != list(b.as_ref()) {
        return Err(ExecutionError::no_such_overload("_+_", types()));
    }
    let Some(adder) = a.as_adder() else {
        return Err(ExecutionError::no_such_overload("_+_", types()));
    };
    Ok(CowVal::Owned(adder.add(b.as_ref())?.into_owned()))
}

/// The argument of a conversion, if it has the type the checker gave it, to which cel-go
/// dispatches (types::TypeFacts::conversion_args).
fn same_type<'b, 'v>(mut args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (Some(conversion), Some(want), Some(v), true) =
        (args.pop(), args.pop(), args.pop(), args.is_empty())
    else {
        return Err(arity("conversion"));
    };
    let conversion = field_name("conversion", conversion.as_ref())?;
    let kind = match field_name("conversion", want.as_ref())? {
        "bool" => Kind::Boolean,
        "bytes" => Kind::Bytes,
        "double" => Kind::Double,
        "duration" => Kind::Duration,
        "int" => Kind::Int,
        "string" => Kind::String,
        "timestamp" => Kind::Timestamp,
        "uint" => Kind::UInt,
        _ => return Ok(v),
    };
    if v.get_type().kind() == kind {
        Ok(v)
    } else {
        Err(ExecutionError::no_such_overload(
            conversion,
            vec![v.get_type().name().to_owned()],
        ))
    }
}

/// A timestamp moved to UTC (the same instant); anything else as it is.
fn utc<'b, 'v>(mut args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (Some(v), true) = (args.pop(), args.is_empty()) else {
        return Err(arity("timestamp"));
    };
    match v.downcast_ref::<CelTimestamp>() {
        Some(t) if t.inner().offset().local_minus_utc() != 0 => Ok(CowVal::owned(
            CelTimestamp::from(t.inner().with_timezone(&chrono::Utc).fixed_offset()),
        )),
        _ => Ok(v),
    }
}

/// `needle in haystack`.
fn member<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let [needle, haystack] = args.as_slice() else {
        return Err(arity("@in"));
    };
    let Some(container) = haystack.as_container() else {
        return Err(ExecutionError::no_such_overload(
            "@in",
            vec![
                needle.get_type().name().to_owned(),
                haystack.get_type().name().to_owned(),
            ],
        ));
    };
    match container.contains(needle.as_ref()) {
        Ok(found) => bool_val(found),
        Err(ExecutionError::UnsupportedKeyType(_))
            if haystack.downcast_ref::<CelMap>().is_some() =>
        {
            bool_val(false)
        }
        Err(e) => Err(e),
    }
}

/// `string(x)`: Go's `%g` for a double, the cel crate's conversion for everything else.
fn string<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let [v] = args.as_slice() else {
        return Err(arity("string"));
    };
    if let Some(d) = v.downcast_ref::<CelDouble>() {
        return Ok(CowVal::owned(CelString::from(super::gofmt::format_g(
            *d.inner(),
        ))));
    }
    if let Some(t) = v.downcast_ref::<CelTimestamp>() {
        return Ok(CowVal::owned(CelString::from(
            crate::gotime::format_rfc3339_nano(t.inner()),
        )));
    }
    if let Some(d) = v.downcast_ref::<CelDuration>() {
        return Ok(CowVal::owned(CelString::from(
            crate::gotime::format_duration_seconds(d.inner().num_nanoseconds().unwrap_or(i64::MAX)),
        )));
    }
    convert("string", args)
}

/// The cel crate's own conversion `function` of the argument.
fn convert<'b, 'v>(function: &str, args: Args<'b, 'v>) -> Ret<'b, 'v> {
    match super::env().find_overload(function, &args) {
        Some(convert) => convert(args),
        None => Err(ExecutionError::no_such_overload(
            function,
            args.iter()
                .map(|v| v.get_type().name().to_owned())
                .collect(),
        )),
    }
}

/// `int(x)`: the nanoseconds of a duration, the cel crate's conversion for everything else.
fn int<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    if let [v] = args.as_slice()
        && let Some(d) = v.downcast_ref::<CelDuration>()
    {
        return match d.inner().num_nanoseconds() {
            Some(n) => int_val(n),
            None => Err(ExecutionError::function_error("int", "integer overflow")),
        };
    }
    convert("int", args)
}

/// Whether `orValue`'s and `or`'s receiver is taken as it is: an optional with a value, or
/// not an optional at all.
fn opt_present<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let [v] = args.as_slice() else {
        return Err(arity("orValue"));
    };
    bool_val(unwrap(v.as_ref()).is_some())
}

/// The value of a present optional, or the receiver that is no optional.
fn opt_get<'b, 'v>(mut args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (Some(v), true) = (args.pop(), args.is_empty()) else {
        return Err(arity("orValue"));
    };
    if v.downcast_ref::<CelOptional>().is_none() {
        return Ok(v);
    }
    match unwrap(v.as_ref()) {
        Some(inner) => Ok(CowVal::Owned(inner.clone_as_boxed())),
        None => Err(ExecutionError::function_error(
            "orValue",
            "optional.none() dereference",
        )),
    }
}
