//! The sets library Kubernetes' CEL environment has and cel-rust lacks: `sets.contains`,
//! `sets.equivalent` and `sets.intersects` over lists, with CEL equality (so `1`, `1u` and `1.0`
//! are one element) and duplicates ignored.

use cel::common::types::LIST_TYPE;
use cel::common::value::{CowVal, Val};
use cel::{DeclarationError, Env, ExecutionError, Value};

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload(
        "sets.contains",
        "sets_contains_list_list",
        vec![LIST_TYPE, LIST_TYPE],
        contains,
    )?;
    env.add_overload(
        "sets.equivalent",
        "sets_equivalent_list_list",
        vec![LIST_TYPE, LIST_TYPE],
        equivalent,
    )?;
    env.add_overload(
        "sets.intersects",
        "sets_intersects_list_list",
        vec![LIST_TYPE, LIST_TYPE],
        intersects,
    )?;
    Ok(())
}

type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
type Ret<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

/// The two list arguments. The overloads are declared on two lists, so anything else reaching
/// here is reported rather than assumed.
fn lists(function: &str, args: &[CowVal<'_, '_>]) -> Result<(Value, Value), ExecutionError> {
    let [a, b] = args else {
        return Err(ExecutionError::function_error(
            function,
            format!("want 2 arguments, got {}", args.len()),
        ));
    };
    let a = Value::try_from(&**a)?;
    let b = Value::try_from(&**b)?;
    match (&a, &b) {
        (Value::List(_), Value::List(_)) => Ok((a, b)),
        _ => Err(ExecutionError::function_error(
            function,
            format!(
                "want two lists, got {} and {}",
                super::type_name(&a),
                super::type_name(&b)
            ),
        )),
    }
}

fn items(v: &Value) -> &[Value] {
    match v {
        Value::List(items) => items,
        // `lists` let only lists through.
        _ => &[],
    }
}

/// Every element of `sub` is in `list`. Quadratic, as the `in` operator on a list is linear.
fn all_in(list: &[Value], sub: &[Value]) -> bool {
    sub.iter().all(|x| list.contains(x))
}

fn ret<'b, 'v>(b: bool) -> Ret<'b, 'v> {
    let boxed: Box<dyn Val> = Value::Bool(b).try_into()?;
    Ok(CowVal::Owned(boxed))
}

fn contains<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (list, sub) = lists("sets.contains", &args)?;
    ret(all_in(items(&list), items(&sub)))
}

fn equivalent<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (a, b) = lists("sets.equivalent", &args)?;
    ret(all_in(items(&a), items(&b)) && all_in(items(&b), items(&a)))
}

fn intersects<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let (a, b) = lists("sets.intersects", &args)?;
    let b = items(&b);
    ret(items(&a).iter().any(|x| b.contains(x)))
}

#[cfg(test)]
mod tests {
    use cel::{Context, Value};

    fn eval(src: &str) -> Result<Value, cel::ExecutionError> {
        let env = super::super::env();
        let program = env.compile(src).expect("compiles");
        program.execute(&Context::with_env(env))
    }

    #[test]
    fn numbers_of_any_type_are_one_element() {
        assert_eq!(
            eval("sets.contains([1, 2.0], [2u, 1.0])"),
            Ok(Value::Bool(true))
        );
        assert_eq!(eval("sets.equivalent([1, 1], [1u])"), Ok(Value::Bool(true)));
        assert_eq!(
            eval("sets.intersects(['a'], ['b'])"),
            Ok(Value::Bool(false))
        );
        assert_eq!(eval("sets.contains([], [])"), Ok(Value::Bool(true)));
    }

    #[test]
    fn only_lists_are_sets() {
        assert!(eval("sets.contains('ab', ['a'])").is_err());
    }
}
