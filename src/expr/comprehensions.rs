//! The two-variable comprehensions Kubernetes' CEL environment has and cel-rust lacks:
//! `all(i, v, p)`, `exists(i, v, p)`, `existsOne(i, v, p)`, `transformList(i, v, [f,] t)`,
//! `transformMap(k, v, [f,] t)` and `transformMapEntry(k, v, [f,] m)`, where `i`/`k` is a list
//! index or map key and `v` the element or value.
//!
//! The interpreter evaluates one loop variable only, so each macro becomes a one-variable
//! comprehension over `@entries(target)`, the `[key, value]` pairs of the list or map, and the
//! two names in its body read the pair: `i` becomes `@itN[0]` and `v` `@itN[1]`. The loop
//! shapes are those of the standard macros, so errors are absorbed by `&&` and `||` alike.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use cel::common::ast::{
    CallExpr, ComprehensionExpr, EntryExpr, Expr, IdedExpr, ListExpr, LiteralValue, MapExpr,
    operators,
};
use cel::common::types::DYN_TYPE;
use cel::common::value::{CowVal, Val};
use cel::objects::{Key, Map};
use cel::parser::{Macro, MacroExprHelper, ParseError};
use cel::{DeclarationError, Env, ExecutionError, Value};

pub(super) const ENTRIES: &str = "@entries";
const MAP_INSERT: &str = "@mapInsert";
/// transformMapEntry's step: the entries of a map added to the result, a key already there an
/// error (cel-go's `cel.@mapInsert(map, map)`).
pub(super) const MAP_MERGE: &str = "@mapMerge";
const RESULT: &str = "@result";

pub fn register(env: &mut Env) -> Result<(), DeclarationError> {
    env.add_overload(ENTRIES, "entries_dyn", vec![DYN_TYPE], entries)?;
    env.add_overload(
        MAP_INSERT,
        "mapInsert_map_dyn_dyn",
        vec![DYN_TYPE, DYN_TYPE, DYN_TYPE],
        map_insert,
    )?;
    env.add_overload(
        MAP_MERGE,
        "mapMerge_map_map",
        vec![DYN_TYPE, DYN_TYPE],
        map_merge,
    )?;
    for (name, args, kind) in [
        ("all", 3, Kind::All),
        ("exists", 3, Kind::Exists),
        ("existsOne", 3, Kind::ExistsOne),
        ("transformList", 3, Kind::TransformList),
        ("transformList", 4, Kind::TransformList),
        ("transformMap", 3, Kind::TransformMap),
        ("transformMap", 4, Kind::TransformMap),
        ("transformMapEntry", 3, Kind::TransformMapEntry),
        ("transformMapEntry", 4, Kind::TransformMapEntry),
    ] {
        env.add_macro(Macro::receiver(name, args, move |helper, target, args| {
            expand(kind, helper, target, args)
        }))?;
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    All,
    Exists,
    ExistsOne,
    TransformList,
    TransformMap,
    TransformMapEntry,
}

/// Loop variables of different expansions must differ: a body's own two-variable macro is
/// expanded first, and must not capture the outer pair.
static NEXT: AtomicU64 = AtomicU64::new(0);

fn expand(
    kind: Kind,
    helper: &mut MacroExprHelper<'_>,
    target: &mut Option<IdedExpr>,
    args: &mut Vec<IdedExpr>,
) -> Result<Option<IdedExpr>, ParseError> {
    let (Some(range), [first, second, ..]) = (target.take(), args.as_slice()) else {
        return Ok(None);
    };
    let (Expr::Ident(key), Expr::Ident(value)) = (&first.expr, &second.expr) else {
        // Not the two-variable form: left as a call, which evaluation reports.
        *target = Some(range);
        return Ok(None);
    };
    if key == value {
        // One name cannot be both the index (or key) and the element, as cel-go refuses it.
        return Err(helper.new_error(second.id, format!("duplicate variable name: {key}")));
    }
    let (key, value) = (key.clone(), value.clone());
    let pair = format!("@it{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let mut rest: Vec<IdedExpr> = args.drain(2..).collect();
    for e in &mut rest {
        substitute(e, &key, &pair, 0, helper);
        substitute(e, &value, &pair, 1, helper);
    }
    let call = |helper: &mut MacroExprHelper<'_>, name: &str, args: Vec<IdedExpr>| {
        helper.next_expr(Expr::Call(CallExpr {
            func_name: name.to_string(),
            target: None,
            args,
        }))
    };
    let result = |helper: &mut MacroExprHelper<'_>| helper.next_expr(Expr::Ident(RESULT.into()));
    let iter_range = call(helper, ENTRIES, vec![range]);
    let always = helper.next_expr(Expr::Literal(LiteralValue::Boolean(true.into())));
    // `[f,] t`: the filter, when given, guards the step.
    let guarded =
        |helper: &mut MacroExprHelper<'_>,
         rest: Vec<IdedExpr>,
         step: &dyn Fn(&mut MacroExprHelper<'_>, IdedExpr) -> IdedExpr| {
            let mut rest = rest.into_iter();
            let (filter, transform) = match (rest.next(), rest.next()) {
                (Some(f), Some(t)) => (Some(f), t),
                (Some(t), None) => (None, t),
                // The macros are declared with three or four arguments.
                _ => return None,
            };
            let stepped = step(helper, transform);
            Some(match filter {
                None => stepped,
                Some(f) => {
                    let unchanged = helper.next_expr(Expr::Ident(RESULT.into()));
                    helper.next_expr(Expr::Call(CallExpr {
                        func_name: operators::CONDITIONAL.into(),
                        target: None,
                        args: vec![f, stepped, unchanged],
                    }))
                }
            })
        };
    let (accu_init, loop_cond, loop_step, out) = match kind {
        Kind::All | Kind::Exists => {
            let Some(predicate) = rest.into_iter().next() else {
                return Ok(None);
            };
            let all = matches!(kind, Kind::All);
            let init = helper.next_expr(Expr::Literal(LiteralValue::Boolean(all.into())));
            let accu = result(helper);
            // Stop once the answer is known: false for all, true for exists.
            let cond_arg = if all {
                accu
            } else {
                call(helper, operators::LOGICAL_NOT, vec![accu])
            };
            let cond = call(helper, operators::NOT_STRICTLY_FALSE, vec![cond_arg]);
            let accu = result(helper);
            let op = if all {
                operators::LOGICAL_AND
            } else {
                operators::LOGICAL_OR
            };
            let step = call(helper, op, vec![accu, predicate]);
            (init, cond, step, result(helper))
        }
        Kind::ExistsOne => {
            let Some(predicate) = rest.into_iter().next() else {
                return Ok(None);
            };
            let init = helper.next_expr(Expr::Literal(LiteralValue::Int(0.into())));
            let accu = result(helper);
            let one = helper.next_expr(Expr::Literal(LiteralValue::Int(1.into())));
            let plus = call(helper, operators::ADD, vec![accu, one]);
            let unchanged = result(helper);
            let step = call(
                helper,
                operators::CONDITIONAL,
                vec![predicate, plus, unchanged],
            );
            let accu = result(helper);
            let one = helper.next_expr(Expr::Literal(LiteralValue::Int(1.into())));
            let out = call(helper, operators::EQUALS, vec![accu, one]);
            (init, always, step, out)
        }
        Kind::TransformList => {
            let init = helper.next_expr(Expr::List(ListExpr::new(Vec::new())));
            let Some(step) = guarded(helper, rest, &|helper, t| {
                let accu = helper.next_expr(Expr::Ident(RESULT.into()));
                let one = helper.next_expr(Expr::List(ListExpr::new(vec![t])));
                helper.next_expr(Expr::Call(CallExpr {
                    func_name: operators::ADD.into(),
                    target: None,
                    args: vec![accu, one],
                }))
            }) else {
                return Ok(None);
            };
            (init, always, step, result(helper))
        }
        Kind::TransformMap => {
            let init = helper.next_expr(Expr::Map(MapExpr::default()));
            let pair_name = pair.clone();
            let Some(step) = guarded(helper, rest, &|helper, t| {
                let accu = helper.next_expr(Expr::Ident(RESULT.into()));
                let key = pair_index(helper, &pair_name, 0);
                helper.next_expr(Expr::Call(CallExpr {
                    func_name: MAP_INSERT.into(),
                    target: None,
                    args: vec![accu, key, t],
                }))
            }) else {
                return Ok(None);
            };
            (init, always, step, result(helper))
        }
        Kind::TransformMapEntry => {
            let init = helper.next_expr(Expr::Map(MapExpr::default()));
            let Some(step) = guarded(helper, rest, &|helper, t| {
                let accu = helper.next_expr(Expr::Ident(RESULT.into()));
                helper.next_expr(Expr::Call(CallExpr {
                    func_name: MAP_MERGE.into(),
                    target: None,
                    args: vec![accu, t],
                }))
            }) else {
                return Ok(None);
            };
            (init, always, step, result(helper))
        }
    };
    Ok(Some(helper.next_expr(Expr::Comprehension(Box::new(
        ComprehensionExpr {
            iter_range,
            iter_var: pair,
            iter_var2: None,
            accu_var: RESULT.into(),
            accu_init,
            loop_cond,
            loop_step,
            result: out,
        },
    )))))
}

/// `pair[index]`
fn pair_index(helper: &mut MacroExprHelper<'_>, pair: &str, index: i64) -> IdedExpr {
    let operand = helper.next_expr(Expr::Ident(pair.into()));
    let index = helper.next_expr(Expr::Literal(LiteralValue::Int(index.into())));
    helper.next_expr(Expr::Call(CallExpr {
        func_name: operators::INDEX.into(),
        target: None,
        args: vec![operand, index],
    }))
}

/// Replaces the identifier `name` with `pair[index]`, except where a comprehension inside
/// binds `name` again.
fn substitute(
    e: &mut IdedExpr,
    name: &str,
    pair: &str,
    index: i64,
    helper: &mut MacroExprHelper<'_>,
) {
    match &mut e.expr {
        Expr::Ident(n) if n == name => {
            // The node keeps its id, so positions still point at what the user wrote.
            e.expr = pair_index(helper, pair, index).expr;
        }
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => {}
        Expr::Call(c) => {
            if let Some(t) = c.target.as_deref_mut() {
                substitute(t, name, pair, index, helper);
            }
            for a in &mut c.args {
                substitute(a, name, pair, index, helper);
            }
        }
        Expr::Select(s) => substitute(&mut s.operand, name, pair, index, helper),
        Expr::List(l) => {
            for x in &mut l.elements {
                substitute(x, name, pair, index, helper);
            }
        }
        Expr::Map(m) => {
            for entry in &mut m.entries {
                entry_substitute(&mut entry.expr, name, pair, index, helper);
            }
        }
        Expr::Struct(s) => {
            for entry in &mut s.entries {
                entry_substitute(&mut entry.expr, name, pair, index, helper);
            }
        }
        Expr::Comprehension(c) => {
            substitute(&mut c.iter_range, name, pair, index, helper);
            substitute(&mut c.accu_init, name, pair, index, helper);
            let shadowed =
                c.iter_var == name || c.iter_var2.as_deref() == Some(name) || c.accu_var == name;
            if !shadowed {
                substitute(&mut c.loop_cond, name, pair, index, helper);
                substitute(&mut c.loop_step, name, pair, index, helper);
                substitute(&mut c.result, name, pair, index, helper);
            }
        }
    }
}

fn entry_substitute(
    e: &mut EntryExpr,
    name: &str,
    pair: &str,
    index: i64,
    helper: &mut MacroExprHelper<'_>,
) {
    match e {
        EntryExpr::MapEntry(me) => {
            substitute(&mut me.key, name, pair, index, helper);
            substitute(&mut me.value, name, pair, index, helper);
        }
        EntryExpr::StructField(sf) => substitute(&mut sf.value, name, pair, index, helper),
    }
}

type Args<'b, 'v> = Vec<CowVal<'b, 'v>>;
type Ret<'b, 'v> = Result<CowVal<'b, 'v>, ExecutionError>;

fn ret<'b, 'v>(v: Value) -> Ret<'b, 'v> {
    let boxed: Box<dyn Val> = v.try_into()?;
    Ok(CowVal::Owned(boxed))
}

/// `[[index, element], ...]` of a list, `[[key, value], ...]` of a map.
fn entries<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let Some(arg) = args.first() else {
        return Err(ExecutionError::function_error(ENTRIES, "want 1 argument"));
    };
    let pairs: Vec<Value> = match Value::try_from(&**arg)? {
        Value::List(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| Value::List(Arc::new(vec![Value::Int(i as i64), v.clone()])))
            .collect(),
        Value::Map(m) => m
            .map
            .iter()
            .map(|(k, v)| Value::List(Arc::new(vec![key_value(k), v.clone()])))
            .collect(),
        other => {
            return Err(ExecutionError::function_error(
                "comprehension",
                format!("want list or map, got {}", super::type_name(&other)),
            ));
        }
    };
    ret(Value::List(Arc::new(pairs)))
}

fn key_value(k: &Key) -> Value {
    match k {
        Key::Int(i) => Value::Int(*i),
        Key::Uint(u) => Value::UInt(*u),
        Key::Bool(b) => Value::Bool(*b),
        Key::String(s) => Value::String(s.clone()),
    }
}

/// The map with one more entry; the keys come from a map, so none repeats.
fn map_insert<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let [map, key, value] = args.as_slice() else {
        return Err(ExecutionError::function_error(
            MAP_INSERT,
            "want 3 arguments",
        ));
    };
    let Value::Map(map) = Value::try_from(&**map)? else {
        return Err(ExecutionError::function_error(MAP_INSERT, "want a map"));
    };
    let key = match Value::try_from(&**key)? {
        Value::Int(i) => Key::Int(i),
        Value::UInt(u) => Key::Uint(u),
        Value::Bool(b) => Key::Bool(b),
        Value::String(s) => Key::String(s),
        other => return Err(ExecutionError::UnsupportedKeyType(other)),
    };
    let mut entries: HashMap<Key, Value> = (*map.map).clone();
    entries.insert(key, Value::try_from(&**value)?);
    ret(Value::Map(Map {
        map: Arc::new(entries),
    }))
}

/// The result map with the entries of the step's map added; a key the result already has is
/// an error, as in cel-go: two entries would otherwise decide silently which value wins.
fn map_merge<'b, 'v>(args: Args<'b, 'v>) -> Ret<'b, 'v> {
    let [map, update] = args.as_slice() else {
        return Err(ExecutionError::function_error(
            MAP_MERGE,
            "want 2 arguments",
        ));
    };
    let (Value::Map(map), Value::Map(update)) =
        (Value::try_from(&**map)?, Value::try_from(&**update)?)
    else {
        return Err(ExecutionError::function_error(
            "transformMapEntry",
            "the transform must be a map",
        ));
    };
    let mut entries: HashMap<Key, Value> = (*map.map).clone();
    for (k, v) in update.map.iter() {
        if entries.contains_key(k) {
            return Err(ExecutionError::function_error(
                "transformMapEntry",
                format!("insert failed: key {} already exists", key_text(k)),
            ));
        }
        entries.insert(k.clone(), v.clone());
    }
    ret(Value::Map(Map {
        map: Arc::new(entries),
    }))
}

/// A key as cel-go's message shows it.
fn key_text(k: &Key) -> String {
    match k {
        Key::Int(i) => i.to_string(),
        Key::Uint(u) => u.to_string(),
        Key::Bool(b) => b.to_string(),
        Key::String(s) => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use cel::{Context, Value};

    use crate::expr::{Compiled, Field};

    fn eval(src: &str) -> Result<Value, cel::ExecutionError> {
        let env = super::super::env();
        let program = env.compile(src).expect("compiles");
        program.execute(&Context::with_env(env))
    }

    #[test]
    fn index_and_element_key_and_value() {
        assert_eq!(
            eval("['a', 'b'].transformList(i, v, v + string(i))"),
            eval("['a0', 'b1']")
        );
        assert_eq!(
            eval("{'app': 'web', 'tier': 'db'}.exists(k, v, k == 'tier' && v == 'db')"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("{'a': 1, 'b': 2}.transformMap(k, v, v > 1, v * 10)"),
            eval("{'b': 20}")
        );
        assert_eq!(
            eval("[1, 1].existsOne(i, v, v == 1)"),
            Ok(Value::Bool(false))
        );
        assert_eq!(
            eval("{'a': 1, 'b': 2}.transformMapEntry(k, v, v > 1, {v: k})"),
            eval("{2: 'b'}")
        );
        assert_eq!(
            eval("['x', 'y'].transformMapEntry(i, v, {v: i, v + v: i})"),
            eval("{'x': 0, 'xx': 0, 'y': 1, 'yy': 1}")
        );
        // Two entries for one key: an error, not a silent choice.
        assert!(eval("[1, 2].transformMapEntry(i, v, {'same': v})").is_err());
    }

    #[test]
    fn inner_macros_keep_their_own_variables() {
        // The inner pair rebinds v; the outer i is still the outer index.
        assert_eq!(
            eval("[[1], [2, 3]].all(i, v, v.all(j, v, i <= j + 1 && v > 0))"),
            Ok(Value::Bool(true))
        );
        assert_eq!(
            eval("[10, 20].transformList(i, v, [1, 2].map(v, v + i))"),
            eval("[[1, 2], [2, 3]]")
        );
    }

    #[test]
    fn policies_may_use_them() {
        let c = Compiled::compile(
            Field::Keep,
            "object.metadata.labels.exists(k, v, k.startsWith('keep') && v == 'true') || rank < 0",
        )
        .expect("compiles");
        let obj = serde_json::json!({"metadata": {"labels": {"keep-me": "true"}}});
        let bound = crate::expr::project(&obj, &c.fields);
        let vars = crate::expr::Vars {
            object: bound.as_ref(),
            now: chrono::DateTime::UNIX_EPOCH.fixed_offset(),
            age: chrono::Duration::zero(),
            group: None,
            rank: Some(3),
            group_size: None,
            referenced_by: None,
        };
        // The term that held is named as the user wrote it, positions and all.
        assert_eq!(
            c.eval_keep(&vars).expect("evaluates").as_deref(),
            Some("object.metadata.labels.exists(k, v, k.startsWith('keep') && v == 'true')")
        );
    }
}
