//! The Kubernetes CEL libraries cel-rust lacks: semver, the list functions `sum`, `min`, `max`,
//! `isSorted`, `indexOf`, `lastIndexOf`, the regex functions `find` and `findAll`, and the list
//! helpers of cel-go's optional library Kubernetes enables (`first`, `last`, `unwrapOpt`,
//! `optional.unwrap`).

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use cel::common::types::{
    BOOL_TYPE, CelBool, CelDuration, CelString, CelTimestamp, DYN_TYPE, INT_TYPE, LIST_TYPE,
    STRING_TYPE,
};
use cel::common::value::{CowVal, Val};
use cel::objects::OptionalValue;
use cel::{DeclarationError, Env, ExecutionError, Value};

use super::semver::Semver;

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload("isSemver", "isSemver_string", vec![STRING_TYPE], is_semver)?;
    env.add_overload(
        "isSemver",
        "isSemver_string_bool",
        vec![STRING_TYPE, BOOL_TYPE],
        is_semver,
    )?;
    env.add_overload("semver", "semver_string", vec![STRING_TYPE], semver_of)?;
    env.add_overload(
        "semver",
        "semver_string_bool",
        vec![STRING_TYPE, BOOL_TYPE],
        semver_of,
    )?;
    env.add_member_overload("major", "semver_major", DYN_TYPE, vec![], major)?;
    env.add_member_overload("minor", "semver_minor", DYN_TYPE, vec![], minor)?;
    env.add_member_overload("patch", "semver_patch", DYN_TYPE, vec![], patch)?;
    env.add_member_overload(
        "compareTo",
        "semver_compareTo",
        DYN_TYPE,
        vec![DYN_TYPE],
        compare_to,
    )?;
    env.add_member_overload(
        "isGreaterThan",
        "semver_isGreaterThan",
        DYN_TYPE,
        vec![DYN_TYPE],
        is_greater_than,
    )?;
    env.add_member_overload(
        "isLessThan",
        "semver_isLessThan",
        DYN_TYPE,
        vec![DYN_TYPE],
        is_less_than,
    )?;
    env.add_member_overload("sum", "list_sum", LIST_TYPE, vec![], sum)?;
    env.add_member_overload("min", "list_min", LIST_TYPE, vec![], min)?;
    env.add_member_overload("max", "list_max", LIST_TYPE, vec![], max)?;
    env.add_member_overload("isSorted", "list_isSorted", LIST_TYPE, vec![], is_sorted)?;
    env.add_member_overload(
        "indexOf",
        "list_indexOf",
        LIST_TYPE,
        vec![DYN_TYPE],
        index_of,
    )?;
    env.add_member_overload(
        "lastIndexOf",
        "list_lastIndexOf",
        LIST_TYPE,
        vec![DYN_TYPE],
        last_index_of,
    )?;
    env.add_member_overload("first", "list_first", LIST_TYPE, vec![], first)?;
    env.add_member_overload("last", "list_last", LIST_TYPE, vec![], last)?;
    env.add_member_overload("unwrapOpt", "list_unwrapOpt", LIST_TYPE, vec![], unwrap_opt)?;
    env.add_overload(
        "optional.unwrap",
        "optional_unwrap_list",
        vec![LIST_TYPE],
        unwrap_opt,
    )?;
    // `matches`, as the evaluation tree calls it (fold.rs): RE2's reading of the pattern, and
    // compiled once per pattern rather than on every call. Declared over dyn so that a call on
    // other types reports the missing overload of `matches` itself.
    env.add_member_overload(
        super::fold::MATCHES,
        "retainer_matches_member",
        DYN_TYPE,
        vec![DYN_TYPE],
        matches_member,
    )?;
    env.add_overload(
        super::fold::MATCHES,
        "retainer_matches_global",
        vec![DYN_TYPE, DYN_TYPE],
        matches_global,
    )?;
    // `duration` and `timestamp`, as the evaluation tree calls them (fold.rs): a string is read
    // as Go reads it (gotime.rs), where the cel crate's parser is laxer (`24hours`, `1h-30m`,
    // a space for `T`); other arguments go to the cel crate's own overloads.
    env.add_overload(
        super::fold::DURATION,
        "retainer_duration",
        vec![DYN_TYPE],
        duration_go,
    )?;
    env.add_overload(
        super::fold::TIMESTAMP,
        "retainer_timestamp",
        vec![DYN_TYPE],
        timestamp_go,
    )?;
    env.add_member_overload(
        "find",
        "string_find_string",
        STRING_TYPE,
        vec![STRING_TYPE],
        find,
    )?;
    env.add_member_overload(
        "findAll",
        "string_find_all_string",
        STRING_TYPE,
        vec![STRING_TYPE],
        find_all,
    )?;
    env.add_member_overload(
        "findAll",
        "string_find_all_string_int",
        STRING_TYPE,
        vec![STRING_TYPE, INT_TYPE],
        find_all,
    )?;
    Ok(())
}

pub(super) type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
pub(super) type Function = for<'b, 'v> fn(Args<'b, 'v>) -> Ret<'b, 'v>;
pub(super) type Ret<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

pub(super) fn value(v: &dyn Val) -> Result<Value, ExecutionError> {
    Value::try_from(v)
}

pub(super) fn ret<'b, 'v>(v: Value) -> Ret<'b, 'v> {
    let boxed: Box<dyn Val> = v.try_into()?;
    Ok(CowVal::Owned(boxed))
}

pub(super) fn string_arg(function: &str, v: &dyn Val) -> Result<String, ExecutionError> {
    match value(v)? {
        Value::String(s) => Ok(s.to_string()),
        other => Err(ExecutionError::function_error(
            function,
            format!("want string, got {}", super::type_name(&other)),
        )),
    }
}

fn normalize_arg(args: &[CowVal<'_, '_>]) -> Result<bool, ExecutionError> {
    match args.get(1) {
        None => Ok(false),
        Some(v) => match value(&**v)? {
            Value::Bool(b) => Ok(b),
            other => Err(ExecutionError::function_error(
                "semver",
                format!("normalize must be a bool, got {}", super::type_name(&other)),
            )),
        },
    }
}

fn semver_arg(function: &str, v: &dyn Val) -> Result<Semver, ExecutionError> {
    match value(v)? {
        Value::Opaque(o) => o.downcast_ref::<Semver>().cloned().ok_or_else(|| {
            ExecutionError::function_error(function, "receiver is not a semver".to_string())
        }),
        other => Err(ExecutionError::function_error(
            function,
            format!(
                "want semver, got {}; convert with semver(s)",
                super::type_name(&other)
            ),
        )),
    }
}

fn is_semver<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("isSemver", &*args[0])?;
    let normalize = normalize_arg(&args)?;
    ret(Value::Bool(Semver::parse(&s, normalize).is_ok()))
}

fn semver_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("semver", &*args[0])?;
    let normalize = normalize_arg(&args)?;
    let v =
        Semver::parse(&s, normalize).map_err(|e| ExecutionError::function_error("semver", e))?;
    ret(Value::Opaque(Arc::new(v)))
}

fn component<'b, 'v>(
    args: Args<'b, 'v>,
    name: &str,
    f: fn(&semver::Version) -> u64,
) -> Ret<'b, 'v> {
    let v = semver_arg(name, &*args[0])?;
    // Kubernetes converts the unsigned component with a plain cast, so a component above
    // i64::MAX reads as negative there; the same cast keeps a policy's answer the same in both.
    ret(Value::Int(f(&v.0) as i64))
}

fn major<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    component(args, "major", |v| v.major)
}

fn minor<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    component(args, "minor", |v| v.minor)
}

fn patch<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    component(args, "patch", |v| v.patch)
}

fn semver_pair(name: &str, args: &[CowVal<'_, '_>]) -> Result<Ordering, ExecutionError> {
    let a = semver_arg(name, &*args[0])?;
    let b = semver_arg(name, &*args[1])?;
    Ok(a.cmp_precedence(&b))
}

fn compare_to<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(Value::Int(semver_pair("compareTo", &args)? as i64))
}

fn is_greater_than<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(Value::Bool(
        semver_pair("isGreaterThan", &args)? == Ordering::Greater,
    ))
}

fn is_less_than<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(Value::Bool(
        semver_pair("isLessThan", &args)? == Ordering::Less,
    ))
}

fn list_items(function: &str, v: &dyn Val) -> Result<Arc<Vec<Value>>, ExecutionError> {
    match value(v)? {
        Value::List(items) => Ok(items),
        other => Err(ExecutionError::function_error(
            function,
            format!("want list, got {}", super::type_name(&other)),
        )),
    }
}

/// The element types Kubernetes' list library orders (`min`, `max`, `isSorted`). Semvers are not
/// among them there (on a list of semvers those functions do not compile in Kubernetes), so they
/// are not here either: a policy that works in retainer means the same in a
/// ValidatingAdmissionPolicy.
fn orders(v: &Value) -> bool {
    matches!(
        v,
        Value::Int(_)
            | Value::UInt(_)
            | Value::Float(_)
            | Value::String(_)
            | Value::Bool(_)
            | Value::Bytes(_)
            | Value::Duration(_)
            | Value::Timestamp(_)
    )
}

/// Orders two values as CEL does: within one type, and numbers across int, uint and double by
/// value. `None` when they do not order (different types, NaN).
fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::UInt(x), Value::UInt(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::Int(x), Value::UInt(y)) => Some(i128::from(*x).cmp(&i128::from(*y))),
        (Value::UInt(x), Value::Int(y)) => Some(i128::from(*x).cmp(&i128::from(*y))),
        (Value::Int(x), Value::Float(y)) => (*x as f64).partial_cmp(y),
        (Value::Float(x), Value::Int(y)) => x.partial_cmp(&(*y as f64)),
        (Value::UInt(x), Value::Float(y)) => (*x as f64).partial_cmp(y),
        (Value::Float(x), Value::UInt(y)) => x.partial_cmp(&(*y as f64)),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Bytes(x), Value::Bytes(y)) => Some(x.cmp(y)),
        (Value::Duration(x), Value::Duration(y)) => Some(x.cmp(y)),
        (Value::Timestamp(x), Value::Timestamp(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn does_not_order(function: &str, v: &Value) -> ExecutionError {
    ExecutionError::function_error(
        function,
        format!("elements of type {} do not order", super::type_name(v)),
    )
}

fn cannot_add(function: &str, a: &Value, b: &Value) -> ExecutionError {
    ExecutionError::function_error(
        function,
        format!(
            "elements of types {} and {} do not add",
            super::type_name(a),
            super::type_name(b)
        ),
    )
}

/// The first element no other beats, as Kubernetes finds it: elements of a list read from an
/// object may differ in type, and one that does not order against the best so far (a string
/// among numbers) is passed over rather than an error.
fn extreme<'b, 'v>(args: Args<'b, 'v>, name: &str, want: Ordering) -> Ret<'b, 'v> {
    let items = list_items(name, &*args[0])?;
    let mut best: Option<&Value> = None;
    for item in items.iter() {
        if !orders(item) {
            return Err(does_not_order(name, item));
        }
        best = match best {
            Some(b) if compare(item, b) != Some(want) => Some(b),
            _ => Some(item),
        };
    }
    match best {
        Some(v) => ret(v.clone()),
        None => Err(ExecutionError::function_error(
            name,
            "the list is empty".to_string(),
        )),
    }
}

fn min<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    extreme(args, "min", Ordering::Less)
}

fn max<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    extreme(args, "max", Ordering::Greater)
}

fn sum<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let items = list_items("sum", &*args[0])?;
    let overflow = || ExecutionError::function_error("sum", "integer overflow".to_string());
    let mut acc: Option<Value> = None;
    for item in items.iter() {
        acc = Some(match (acc, item) {
            (None, v @ (Value::Int(_) | Value::UInt(_) | Value::Float(_) | Value::Duration(_))) => {
                v.clone()
            }
            (Some(Value::Int(a)), Value::Int(b)) => {
                Value::Int(a.checked_add(*b).ok_or_else(overflow)?)
            }
            (Some(Value::UInt(a)), Value::UInt(b)) => {
                Value::UInt(a.checked_add(*b).ok_or_else(overflow)?)
            }
            (Some(Value::Float(a)), Value::Float(b)) => Value::Float(a + b),
            // A CEL duration is a signed 64-bit count of nanoseconds, a narrower range than
            // chrono's, so the sum must also fit in that.
            (Some(Value::Duration(a)), Value::Duration(b)) => Value::Duration(
                a.checked_add(b)
                    .filter(|d| d.num_nanoseconds().is_some())
                    .ok_or_else(overflow)?,
            ),
            (Some(a), b) => return Err(cannot_add("sum", &a, b)),
            (None, b) => {
                return Err(ExecutionError::function_error(
                    "sum",
                    format!("cannot sum {}", super::type_name(b)),
                ));
            }
        });
    }
    ret(acc.unwrap_or(Value::Int(0)))
}

/// Sorted unless some element is greater than the next; neighbours that do not order against
/// each other (different types) do not unsort the list, as in Kubernetes. Elements are checked
/// in order, so a list already found unsorted is `false` even if a later element cannot order.
fn is_sorted<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let items = list_items("isSorted", &*args[0])?;
    let mut prev: Option<&Value> = None;
    for item in items.iter() {
        if !orders(item) {
            return Err(does_not_order("isSorted", item));
        }
        if prev.is_some_and(|p| compare(p, item) == Some(Ordering::Greater)) {
            return ret(Value::Bool(false));
        }
        prev = Some(item);
    }
    ret(Value::Bool(true))
}

fn position<'b, 'v>(args: Args<'b, 'v>, name: &str, last: bool) -> Ret<'b, 'v> {
    let items = list_items(name, &*args[0])?;
    let needle = value(&*args[1])?;
    let found = if last {
        items.iter().rposition(|v| *v == needle)
    } else {
        items.iter().position(|v| *v == needle)
    };
    ret(Value::Int(found.map(|i| i as i64).unwrap_or(-1)))
}

pub(super) fn index_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    position(args, "indexOf", false)
}

pub(super) fn last_index_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    position(args, "lastIndexOf", true)
}

/// Kubernetes evaluates regexes with Go's RE2, where `\d`, `\w`, `\s` and `\b` are ASCII;
/// the regex crate makes them Unicode. This rewrites those escapes to their ASCII meaning (a
/// nested class inside a class, which the regex crate allows), escapes a `[` inside a class that
/// does not open a POSIX class (`[[]` is a class of `[` in RE2, a nested class here) and the
/// class set operators `&&` and `~~` that RE2 reads literally. (`--` is left alone: in RE2 it
/// can end a range, as in `[+--]`.) RE2 also refuses a repeat count above 1000, reads a brace
/// that is no repeat count as a literal, and has `\Q...\E` quoting and octal escapes; the regex
/// crate differs on each.
fn re2_pattern(pattern: &str) -> Result<String, String> {
    const DIGIT: &str = "[0-9]";
    const NOT_DIGIT: &str = "[^0-9]";
    const WORD: &str = "[0-9A-Za-z_]";
    const NOT_WORD: &str = "[^0-9A-Za-z_]";
    const SPACE: &str = "[\\t\\n\\f\\r ]";
    const NOT_SPACE: &str = "[^\\t\\n\\f\\r ]";
    let mut out = String::with_capacity(pattern.len() + 8);
    let mut chars = pattern.chars().peekable();
    let mut in_class = false;
    // Right after `[` or `[^`, a `]` is a literal member, not the end of the class.
    let mut class_start = false;
    while let Some(c) = chars.next() {
        let at_start = std::mem::take(&mut class_start);
        match c {
            '\\' => match chars.next() {
                Some('d') => out.push_str(DIGIT),
                Some('D') => out.push_str(NOT_DIGIT),
                Some('w') => out.push_str(WORD),
                Some('W') => out.push_str(NOT_WORD),
                Some('s') => out.push_str(SPACE),
                Some('S') => out.push_str(NOT_SPACE),
                Some('b') if !in_class => out.push_str("(?-u:\\b)"),
                Some('B') if !in_class => out.push_str("(?-u:\\B)"),
                // RE2's \Q...\E (or \Q to the end), outside a class only, is literal text, which
                // the regex crate lacks: its punctuation is escaped instead.
                Some('Q') if !in_class => {
                    let rest: String = chars.clone().collect();
                    let (literal, consumed) = match rest.find("\\E") {
                        Some(i) => (&rest[..i], rest[..i].chars().count() + 2),
                        None => (rest.as_str(), rest.chars().count()),
                    };
                    for l in literal.chars() {
                        if l.is_ascii_punctuation() {
                            out.push('\\');
                        }
                        out.push(l);
                    }
                    for _ in 0..consumed {
                        chars.next();
                    }
                }
                // Octal: \0 with up to two more digits, or two or three digits starting 1-7
                // (one digit 1-7 alone would be a backreference, which both refuse).
                Some(first @ '0'..='7')
                    if first == '0' || chars.peek().is_some_and(|c| ('0'..='7').contains(c)) =>
                {
                    let mut code = first.to_digit(8).unwrap_or(0);
                    for _ in 0..2 {
                        match chars.peek().and_then(|c| c.to_digit(8)) {
                            Some(d) => {
                                code = code * 8 + d;
                                chars.next();
                            }
                            None => break,
                        }
                    }
                    out.push_str(&format!("\\x{{{code:X}}}"));
                }
                // \p{Greek}, \x{e9}: the braces belong to the escape, not a repeat.
                Some(e @ ('p' | 'P' | 'x')) if chars.peek() == Some(&'{') => {
                    out.push('\\');
                    out.push(e);
                    for b in chars.by_ref() {
                        out.push(b);
                        if b == '}' {
                            break;
                        }
                    }
                }
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            '[' if !in_class => {
                in_class = true;
                class_start = true;
                out.push('[');
                if chars.peek() == Some(&'^') {
                    chars.next();
                    out.push('^');
                }
            }
            '[' if chars.peek() == Some(&':') => {
                // A POSIX class such as [:alpha:]: copied whole, the same in both.
                out.push('[');
                for p in chars.by_ref() {
                    out.push(p);
                    if p == ']' {
                        break;
                    }
                }
            }
            '[' => out.push_str("\\["),
            ']' if in_class && !at_start => {
                in_class = false;
                out.push(']');
            }
            '{' if !in_class => {
                // `{n}`, `{n,}` and `{n,m}` repeat; any other brace is a literal in RE2, and an
                // error in the regex crate.
                let body: String = chars.clone().take_while(|&c| c != '}').collect();
                let closed = chars.clone().nth(body.chars().count()) == Some('}');
                let (low, high) = body.split_once(',').unwrap_or((&body, "0"));
                let digits = |n: &str| n.chars().all(|c| c.is_ascii_digit());
                if !(closed && !low.is_empty() && digits(low) && digits(high)) {
                    out.push_str("\\{");
                    continue;
                }
                if [low, high]
                    .iter()
                    .any(|n| n.parse::<u64>().map_or(!n.is_empty(), |n| n > 1000))
                {
                    return Err(format!("invalid repeat count: {{{body}}}"));
                }
                out.push('{');
            }
            '&' | '~' if in_class && chars.peek() == Some(&c) => {
                chars.next();
                out.push('\\');
                out.push(c);
                out.push('\\');
                out.push(c);
            }
            _ => out.push(c),
        }
    }
    Ok(out)
}

/// Compiled patterns, by their text. A policy applies the same literal pattern to every object
/// of a sweep, and compiling costs far more than matching; the bound keeps patterns built from
/// object data from growing the map without limit.
///
/// Shared behind an `Arc`: a cloned `Regex` starts a new pool of match caches, which its first
/// match allocates again.
static REGEXES: LazyLock<Mutex<HashMap<String, Arc<regex::Regex>>>> =
    LazyLock::new(Default::default);
const MAX_CACHED_REGEXES: usize = 256;

pub(super) fn compile_regex(
    function: &str,
    pattern: &str,
) -> Result<Arc<regex::Regex>, ExecutionError> {
    // A poisoned lock only means another evaluation panicked while holding it; a map of
    // compiled patterns is valid at every step, so it is used as is.
    let cache = || REGEXES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(re) = cache().get(pattern) {
        return Ok(Arc::clone(re));
    }
    let invalid =
        |e: String| ExecutionError::function_error(function, format!("invalid regex: {e}"));
    let translated = re2_pattern(pattern).map_err(invalid)?;
    // Compiled without the lock held, so other evaluations are not kept waiting.
    let re = Arc::new(regex::Regex::new(&translated).map_err(|e| invalid(e.to_string()))?);
    let mut cache = cache();
    if cache.len() >= MAX_CACHED_REGEXES {
        cache.clear();
    }
    cache.insert(pattern.to_string(), re.clone());
    Ok(re)
}

fn matches_member<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    matches_re2(args, true)
}

fn matches_global<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    matches_re2(args, false)
}

fn matches_re2<'b, 'v>(args: Args<'b, 'v>, member: bool) -> Ret<'b, 'v> {
    let s = args.first().and_then(|a| a.downcast_ref::<CelString>());
    let p = args.get(1).and_then(|a| a.downcast_ref::<CelString>());
    let (Some(s), Some(p)) = (s, p) else {
        let types = args
            .iter()
            .map(|a| a.get_type().name().to_owned())
            .collect();
        return Err(if member {
            ExecutionError::no_such_member_overload("matches", types)
        } else {
            ExecutionError::no_such_overload("matches", types)
        });
    };
    let re = compile_regex("matches", p.inner())?;
    Ok(CowVal::owned(CelBool::from(re.is_match(s.inner()))))
}

fn duration_go<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    if let Some(s) = args.first().and_then(|a| a.downcast_ref::<CelString>()) {
        let nanos = crate::gotime::parse_duration(s.inner())
            .map_err(|e| ExecutionError::function_error("duration", e))?;
        return Ok(CowVal::owned(CelDuration::from(
            chrono::Duration::nanoseconds(nanos),
        )));
    }
    stdlib_overload("duration", args)
}

fn timestamp_go<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    if let Some(s) = args.first().and_then(|a| a.downcast_ref::<CelString>()) {
        let t = crate::gotime::parse_rfc3339(s.inner())
            .map_err(|e| ExecutionError::function_error("timestamp", e))?;
        return Ok(CowVal::owned(CelTimestamp::from(t)));
    }
    stdlib_overload("timestamp", args)
}

/// The cel crate's overload of `name` for these arguments, or its usual error when none fits.
fn stdlib_overload<'b, 'v>(name: &str, args: Args<'b, 'v>) -> Ret<'b, 'v> {
    match super::env().find_overload(name, &args) {
        Some(f) => f(args),
        None => Err(ExecutionError::no_such_overload(
            name,
            args.iter()
                .map(|a| a.get_type().name().to_owned())
                .collect(),
        )),
    }
}

fn find<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("find", &*args[0])?;
    let re = compile_regex("find", &string_arg("find", &*args[1])?)?;
    let found = re.find(&s).map(|m| m.as_str()).unwrap_or_default();
    ret(Value::String(Arc::new(found.to_string())))
}

fn find_all<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let s = string_arg("findAll", &*args[0])?;
    let re = compile_regex("findAll", &string_arg("findAll", &*args[1])?)?;
    // A negative limit means all matches, as in Go's FindAllString.
    let limit = match args.get(2).map(|v| value(&**v)).transpose()? {
        None => usize::MAX,
        Some(Value::Int(n)) => usize::try_from(n).unwrap_or(usize::MAX),
        Some(other) => {
            return Err(ExecutionError::function_error(
                "findAll",
                format!("limit must be an int, got {}", super::type_name(&other)),
            ));
        }
    };
    let found: Vec<Value> = re
        .find_iter(&s)
        .take(limit)
        .map(|m| Value::String(Arc::new(m.as_str().to_string())))
        .collect();
    ret(Value::List(Arc::new(found)))
}

fn optional(v: Option<&Value>) -> Value {
    Value::Opaque(Arc::new(match v {
        Some(v) => OptionalValue::of(v.clone()),
        None => OptionalValue::none(),
    }))
}

fn first<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(optional(list_items("first", &*args[0])?.first()))
}

fn last<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    ret(optional(list_items("last", &*args[0])?.last()))
}

/// The values of a list of optionals, the empty ones left out.
fn unwrap_opt<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let items = list_items("unwrapOpt", &*args[0])?;
    let mut values = Vec::with_capacity(items.len());
    for item in items.iter() {
        match item {
            Value::Opaque(o) => match o.downcast_ref::<OptionalValue>() {
                Some(opt) => values.extend(opt.value().cloned()),
                None => return Err(not_optional(item)),
            },
            other => return Err(not_optional(other)),
        }
    }
    ret(Value::List(Arc::new(values)))
}

fn not_optional(v: &Value) -> ExecutionError {
    ExecutionError::function_error(
        "unwrapOpt",
        format!(
            "want a list of optionals, got an element of type {}",
            super::type_name(v)
        ),
    )
}
