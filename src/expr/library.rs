//! The Kubernetes CEL libraries cel-rust lacks: semver, and the list functions `sum`, `min`,
//! `max`, `isSorted`, `indexOf`, `lastIndexOf`.

use std::cmp::Ordering;
use std::sync::Arc;

use cel::common::types::{BOOL_TYPE, DYN_TYPE, LIST_TYPE, STRING_TYPE};
use cel::common::value::{CowVal, Val};
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
    Ok(())
}

type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
type Ret<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

fn value(v: &dyn Val) -> Result<Value, ExecutionError> {
    Value::try_from(v)
}

fn ret<'b, 'v>(v: Value) -> Ret<'b, 'v> {
    let boxed: Box<dyn Val> = v.try_into()?;
    Ok(CowVal::Owned(boxed))
}

fn string_arg(function: &str, v: &dyn Val) -> Result<String, ExecutionError> {
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
    ret(Value::Int(i64::try_from(f(&v.0)).unwrap_or(i64::MAX)))
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

/// Orders two values of one comparable type, as Kubernetes' list library does; `None` when the
/// types differ or do not order.
pub fn compare(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => Some(x.cmp(y)),
        (Value::UInt(x), Value::UInt(y)) => Some(x.cmp(y)),
        (Value::Float(x), Value::Float(y)) => x.partial_cmp(y),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        (Value::Bool(x), Value::Bool(y)) => Some(x.cmp(y)),
        (Value::Bytes(x), Value::Bytes(y)) => Some(x.cmp(y)),
        (Value::Duration(x), Value::Duration(y)) => Some(x.cmp(y)),
        (Value::Timestamp(x), Value::Timestamp(y)) => Some(x.cmp(y)),
        (Value::Opaque(x), Value::Opaque(y)) => {
            let (x, y) = (x.downcast_ref::<Semver>()?, y.downcast_ref::<Semver>()?);
            Some(x.cmp_precedence(y))
        }
        _ => None,
    }
}

fn not_comparable(function: &str, a: &Value, b: &Value) -> ExecutionError {
    ExecutionError::function_error(
        function,
        format!(
            "elements of types {} and {} do not compare",
            super::type_name(a),
            super::type_name(b)
        ),
    )
}

fn extreme<'b, 'v>(args: Args<'b, 'v>, name: &str, want: Ordering) -> Ret<'b, 'v> {
    let items = list_items(name, &*args[0])?;
    let mut best: Option<&Value> = None;
    for item in items.iter() {
        best = Some(match best {
            None => item,
            Some(b) => match compare(item, b) {
                Some(o) if o == want => item,
                Some(_) => b,
                None => return Err(not_comparable(name, item, b)),
            },
        });
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
            (Some(Value::Duration(a)), Value::Duration(b)) => {
                Value::Duration(a.checked_add(b).ok_or_else(overflow)?)
            }
            (Some(a), b) => return Err(not_comparable("sum", &a, b)),
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

fn is_sorted<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let items = list_items("isSorted", &*args[0])?;
    for pair in items.windows(2) {
        match compare(&pair[0], &pair[1]) {
            Some(Ordering::Greater) => return ret(Value::Bool(false)),
            Some(_) => {}
            None => return Err(not_comparable("isSorted", &pair[0], &pair[1])),
        }
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

fn index_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    position(args, "indexOf", false)
}

fn last_index_of<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    position(args, "lastIndexOf", true)
}
