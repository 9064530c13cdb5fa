//! Compile-time rewriting of an expression for evaluation.
//!
//! The cel crate interprets the parsed tree as it is, so `duration('24h')` parses its string on
//! every evaluation and `x.matches('^a')` compiles its pattern on every evaluation. cel-go plans
//! these once (`OptOptimize`, Kubernetes' regex precompilation). Here, once per compiled
//! expression:
//!
//! - every call whose arguments are all constants is evaluated, and the node is replaced by a
//!   reference to the value (only a value a constant holds exactly: not a type value, which
//!   would become its name as a string, nor an optional or a struct) (a name no expression can spell, resolved from the expression's own
//!   constants); so are list literals of constants. A call that fails is left as it is, so the
//!   error is reported when the expression runs, as before. CEL functions are pure: the value
//!   is the one every evaluation would compute.
//! - `matches` calls retainer's own function, which compiles its pattern once (cached by text)
//!   and reads it as RE2 does, as Kubernetes does (`find` and `findAll` already did).
//! - `duration` and `timestamp` call retainer's own functions, which read a string as Go's
//!   `time.ParseDuration` and `time.Parse(time.RFC3339, ...)` do, as cel-go does.
//! - `<string>.format(<list>)` calls retainer's own function (string_format.rs), which writes
//!   what Kubernetes' version of cel-go's strings extension writes.
//! - `has(x.f)`, `x.?f`, `x[?i]`, `x.f` on an optional, `in`, `string(x)`, `int(x)`,
//!   `orValue`, `or`, `indexOf`, `lastIndexOf`, the timestamp accessors without a time zone,
//!   and where the type checker cannot rule it out `+` of a list and a non-list, call the
//!   functions of operators.rs, which answer as cel-go does in Kubernetes where the cel crate
//!   answers otherwise; `x in []` is false whatever `x` is, as cel-go plans it.
//!
//! The static checks and the field projection run on the tree as written; only evaluation uses
//! the rewritten one. `Folded::unfolded` makes the same rewrites but computes no constant, so
//! that tests can show folding never changes an answer.

use cel::common::ast::{CallExpr, ComprehensionExpr, Expr, IdedExpr, ListExpr, LiteralValue};
use cel::common::types::{CelList, CelMap, CelOptional, Kind};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Value};

use super::types::TypeFacts;

/// Names of folded constants start with this: `@` cannot start a CEL identifier, so no
/// expression or macro variable can spell or shadow one.
const PREFIX: &str = "@c";

/// The function `matches` is rewritten to (`library::matches_re2`).
pub const MATCHES: &str = "@matches";
/// The functions global `duration` and `timestamp` are rewritten to (`library::duration_go`,
/// `library::timestamp_go`): strings read as Go reads them.
pub const DURATION: &str = "@duration";
pub const TIMESTAMP: &str = "@timestamp";

/// An expression rewritten for evaluation and the constants it refers to.
#[derive(Debug, Clone)]
pub struct Folded {
    pub expr: IdedExpr,
    consts: Vec<Box<dyn Val>>,
}

/// What a pass rewrites: `facts` are what the type checker found (types::TypeFacts).
struct Pass<'a> {
    constants: bool,
    facts: &'a TypeFacts,
}

impl Folded {
    pub fn new(expr: &IdedExpr, facts: &TypeFacts) -> Folded {
        Folded::pass(
            expr,
            &Pass {
                constants: true,
                facts,
            },
        )
    }

    /// The rewrites without the constants: evaluation as it would be without folding.
    pub fn unfolded(expr: &IdedExpr, facts: &TypeFacts) -> Folded {
        Folded::pass(
            expr,
            &Pass {
                constants: false,
                facts,
            },
        )
    }

    fn pass(expr: &IdedExpr, pass: &Pass<'_>) -> Folded {
        let mut consts = Vec::new();
        let expr = fold(expr, &mut consts, pass);
        Folded { expr, consts }
    }

    /// The duration `e` stands for, when it is a folded constant holding one.
    pub fn duration_constant(&self, e: &IdedExpr) -> Option<chrono::Duration> {
        let Expr::Ident(name) = &e.expr else {
            return None;
        };
        let v = self
            .consts
            .get(name.strip_prefix(PREFIX)?.parse::<usize>().ok()?)?;
        match Value::try_from(v.as_ref()).ok()? {
            Value::Duration(d) => Some(d),
            _ => None,
        }
    }

    /// A resolver that answers the folded constants and asks `vars` for everything else.
    pub fn resolver<'a>(&'a self, vars: &'a dyn VariableResolver) -> WithConsts<'a> {
        WithConsts {
            consts: &self.consts,
            vars,
        }
    }
}

pub struct WithConsts<'a> {
    consts: &'a [Box<dyn Val>],
    vars: &'a dyn VariableResolver,
}

impl VariableResolver for WithConsts<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        if let Some(i) = variable.strip_prefix(PREFIX) {
            let v = self.consts.get(i.parse::<usize>().ok()?)?;
            return Some(CowVal::Borrowed(v.as_ref()));
        }
        self.vars.resolve(variable)
    }
}

fn is_const(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Literal(_) => true,
        Expr::Ident(name) => name.starts_with(PREFIX),
        _ => false,
    }
}

fn call(id: u64, func_name: &str, args: Vec<IdedExpr>) -> IdedExpr {
    IdedExpr {
        id,
        expr: Expr::Call(CallExpr {
            func_name: func_name.into(),
            target: None,
            args,
        }),
    }
}

fn string_literal(id: u64, s: &str) -> IdedExpr {
    IdedExpr {
        id,
        expr: Expr::Literal(LiteralValue::String(s.to_string().into())),
    }
}

fn ident(id: u64, name: &str) -> IdedExpr {
    IdedExpr {
        id,
        expr: Expr::Ident(name.into()),
    }
}

/// The variable `orValue` and `or` bind their receiver to: `@` cannot start a name a user
/// writes, and an inner rewrite's binding shadows an outer one only inside itself.
const RECEIVER: &str = "@receiver";

/// `receiver` evaluated once and bound to RECEIVER for `result`: a comprehension over no
/// elements evaluates its initial value, then its result (cel-go's `cel.bind`).
fn bind(id: u64, receiver: IdedExpr, result: IdedExpr) -> IdedExpr {
    IdedExpr {
        id,
        expr: Expr::Comprehension(Box::new(ComprehensionExpr {
            iter_range: IdedExpr {
                id,
                expr: Expr::List(ListExpr::default()),
            },
            iter_var: "@none".into(),
            iter_var2: None,
            accu_var: RECEIVER.into(),
            accu_init: receiver,
            loop_cond: IdedExpr {
                id,
                expr: Expr::Literal(LiteralValue::Boolean(false.into())),
            },
            loop_step: ident(id, RECEIVER),
            result,
        })),
    }
}

/// `present(x) ? then : otherwise`, with `x` the bound receiver.
fn if_present(id: u64, then: IdedExpr, otherwise: IdedExpr) -> IdedExpr {
    call(
        id,
        cel::common::ast::operators::CONDITIONAL,
        vec![
            call(id, super::operators::OPT_PRESENT, vec![ident(id, RECEIVER)]),
            then,
            otherwise,
        ],
    )
}

/// `x.orValue(d)` as `present(x) ? get(x) : d` (`x` itself for `or`), `x` evaluated once: the
/// default is evaluated only when needed, as cel-go does.
fn lazy_or(id: u64, receiver: IdedExpr, default: IdedExpr, or_value: bool) -> IdedExpr {
    let value = if or_value {
        call(id, super::operators::OPT_GET, vec![ident(id, RECEIVER)])
    } else {
        ident(id, RECEIVER)
    };
    bind(id, receiver, if_present(id, value, default))
}

fn fold(e: &IdedExpr, consts: &mut Vec<Box<dyn Val>>, pass: &Pass<'_>) -> IdedExpr {
    use cel::common::ast::operators;
    let expr = match &e.expr {
        Expr::Call(call) if call.func_name == operators::IN && call.target.is_none() => {
            // cel-go plans `x in []` as false before anything runs (decOptimize's set
            // membership of a constant list), so not even an error in `x` is reported.
            if let [
                _,
                IdedExpr {
                    expr: Expr::List(list),
                    ..
                },
            ] = call.args.as_slice()
                && list.elements.is_empty()
            {
                return IdedExpr {
                    id: e.id,
                    expr: Expr::Literal(LiteralValue::Boolean(false.into())),
                };
            }
            let mut call = call.clone();
            call.func_name = super::operators::MEMBER.to_string();
            call.args = call.args.iter().map(|a| fold(a, consts, pass)).collect();
            Expr::Call(call)
        }
        Expr::Call(c)
            if matches!(c.func_name.as_str(), "orValue" | "or")
                && c.args.len() == 1
                && c.target.is_some() =>
        {
            let receiver = c.target.as_deref().map(|t| fold(t, consts, pass));
            let default = fold(&c.args[0], consts, pass);
            if let Some(receiver) = receiver {
                return lazy_or(e.id, receiver, default, c.func_name == "orValue");
            }
            Expr::Call(c.clone())
        }
        Expr::Call(call) => {
            let mut call = call.clone();
            call.target = call.target.map(|t| Box::new(fold(&t, consts, pass)));
            if pass.facts.int_lists.contains(&e.id)
                && let Some(target) = call.target.take()
            {
                let checked = self::call(
                    e.id,
                    super::operators::INT_LIST,
                    vec![*target, string_literal(e.id, &call.func_name)],
                );
                call.target = Some(Box::new(constant(checked, consts, pass)));
            }
            call.args = call.args.iter().map(|a| fold(a, consts, pass)).collect();
            if call.func_name == "matches" {
                call.func_name = MATCHES.to_string();
            }
            if call.func_name == "format" && call.target.is_some() && call.args.len() == 1 {
                call.func_name = super::string_format::FORMAT.to_string();
            }
            if call.args.is_empty()
                && super::operators::TIME_ACCESSORS.contains(&call.func_name.as_str())
                && let Some(target) = call.target.take()
            {
                let utc = self::call(e.id, super::operators::UTC, vec![*target]);
                call.target = Some(Box::new(constant(utc, consts, pass)));
            }
            if call.target.is_some() {
                match call.func_name.as_str() {
                    "indexOf" => call.func_name = super::operators::INDEX_OF.to_string(),
                    "lastIndexOf" => call.func_name = super::operators::LAST_INDEX_OF.to_string(),
                    _ => {}
                }
            }
            // A constant's type is its own: only a value computed at run time needs the check,
            // and a constant conversion stays foldable.
            if let Some(kind) = pass.facts.conversion_args.get(&e.id)
                && let [arg] = call.args.as_mut_slice()
                && !is_const(arg)
            {
                let inner = std::mem::replace(arg, string_literal(e.id, kind));
                *arg = self::call(
                    e.id,
                    super::operators::SAME_TYPE,
                    vec![
                        inner,
                        string_literal(e.id, kind),
                        string_literal(e.id, &call.func_name),
                    ],
                );
            }
            if pass.facts.list_adds.contains(&e.id) {
                call.func_name = super::operators::ADD.to_string();
            }
            if call.target.is_none() {
                match call.func_name.as_str() {
                    operators::OPT_SELECT => {
                        call.func_name = super::operators::OPT_SELECT.to_string();
                    }
                    // `x[?i]` of an empty optional is that optional, and `i` is not
                    // evaluated, as in cel-go.
                    operators::OPT_INDEX if call.args.len() == 2 => {
                        let index = call.args.pop().expect("two arguments");
                        let target = call.args.pop().expect("two arguments");
                        let indexed = self::call(
                            e.id,
                            super::operators::OPT_INDEX,
                            vec![ident(e.id, RECEIVER), index],
                        );
                        return bind(
                            e.id,
                            target,
                            if_present(e.id, indexed, ident(e.id, RECEIVER)),
                        );
                    }
                    _ => {}
                }
            }
            if call.target.is_none() && call.args.len() == 1 {
                match call.func_name.as_str() {
                    "duration" => call.func_name = DURATION.to_string(),
                    "timestamp" => call.func_name = TIMESTAMP.to_string(),
                    "string" => call.func_name = super::operators::STRING.to_string(),
                    "int" => call.func_name = super::operators::INT.to_string(),
                    _ => {}
                }
            }
            Expr::Call(call)
        }
        Expr::List(list) => {
            let mut list = list.clone();
            list.elements = list
                .elements
                .iter()
                .map(|a| fold(a, consts, pass))
                .collect();
            Expr::List(list)
        }
        Expr::Select(sel) if sel.test || pass.facts.optional_selects.contains(&e.id) => {
            let function = if sel.test {
                super::operators::HAS
            } else {
                super::operators::OPT_SELECT
            };
            return call(
                e.id,
                function,
                vec![
                    fold(&sel.operand, consts, pass),
                    string_literal(e.id, &sel.field),
                ],
            );
        }
        Expr::Select(sel) => {
            let mut sel = sel.clone();
            sel.operand = Box::new(fold(&sel.operand, consts, pass));
            Expr::Select(sel)
        }
        Expr::Comprehension(c) => {
            let mut c = c.clone();
            c.iter_range = fold(&c.iter_range, consts, pass);
            c.accu_init = fold(&c.accu_init, consts, pass);
            c.loop_cond = fold(&c.loop_cond, consts, pass);
            c.loop_step = fold(&c.loop_step, consts, pass);
            c.result = fold(&c.result, consts, pass);
            Expr::Comprehension(c)
        }
        Expr::Map(map) => {
            let mut map = map.clone();
            for entry in &mut map.entries {
                match &mut entry.expr {
                    cel::common::ast::EntryExpr::MapEntry(me) => {
                        me.key = fold(&me.key, consts, pass);
                        me.value = fold(&me.value, consts, pass);
                    }
                    cel::common::ast::EntryExpr::StructField(sf) => {
                        sf.value = fold(&sf.value, consts, pass);
                    }
                }
            }
            Expr::Map(map)
        }
        other => other.clone(),
    };
    constant(IdedExpr { id: e.id, expr }, consts, pass)
}

/// The node as a reference to its value when it is a call or a list of constants that
/// evaluates to one (in a pass that folds), else the node.
fn constant(folded: IdedExpr, consts: &mut Vec<Box<dyn Val>>, pass: &Pass<'_>) -> IdedExpr {
    if !pass.constants {
        return folded;
    }
    let foldable = match &folded.expr {
        Expr::Call(call) => {
            call.args.iter().all(is_const) && call.target.as_deref().is_none_or(is_const)
        }
        // An empty list is as cheap to build as to look up.
        Expr::List(list) => !list.elements.is_empty() && list.elements.iter().all(is_const),
        _ => false,
    };
    if !foldable {
        return folded;
    }
    let no_vars = WithConsts {
        consts,
        vars: &NoVars,
    };
    let mut ctx = Context::with_env(super::env());
    ctx.set_variable_resolver(&no_vars);
    // Only a value the constant can hold as it is: the conversion through `Value` turns a
    // type value into a string, so `type(1) == int` would fold to `'int' == int`.
    let value = match Value::resolve_val(&folded, &ctx) {
        Ok(v) if exact(v.as_ref()) => Value::try_from(v.as_ref()),
        // Left to fail, or to produce a value no constant can hold, at evaluation.
        _ => return folded,
    };
    drop(ctx);
    match value.and_then(Box::<dyn Val>::try_from) {
        Ok(v) => {
            consts.push(v);
            IdedExpr {
                id: folded.id,
                expr: Expr::Ident(format!("{PREFIX}{}", consts.len() - 1)),
            }
        }
        Err(_) => folded,
    }
}

/// Whether `v` survives the round trip `dyn Val` → `Value` → `Box<dyn Val>` unchanged: the
/// plain values, lists and maps of them, and opaque values (held by the same `Arc`). Not type
/// values (they become strings), optionals, structs or anything else: those stay unfolded.
fn exact(v: &dyn Val) -> bool {
    match v.get_type().kind() {
        Kind::Boolean
        | Kind::Int
        | Kind::UInt
        | Kind::Double
        | Kind::String
        | Kind::NullType
        | Kind::Bytes
        | Kind::Duration
        | Kind::Timestamp => true,
        Kind::List => v
            .downcast_ref::<CelList>()
            .is_some_and(|l| l.inner().iter().all(|i| exact(i.as_ref()))),
        Kind::Map => v
            .downcast_ref::<CelMap>()
            .is_some_and(|m| m.inner().values().all(|i| exact(i.as_ref()))),
        Kind::Opaque => v.downcast_ref::<CelOptional>().is_none(),
        _ => false,
    }
}

struct NoVars;

impl VariableResolver for NoVars {
    fn resolve<'b>(&'b self, _: &str) -> Option<CowVal<'b, 'b>> {
        None
    }
}
