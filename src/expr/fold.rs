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
//!
//! The static checks and the field projection run on the tree as written; only evaluation uses
//! the rewritten one.

use cel::common::ast::{Expr, IdedExpr};
use cel::common::types::{CelList, CelMap, CelOptional, Kind};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Value};

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

impl Folded {
    pub fn new(expr: &IdedExpr) -> Folded {
        let mut consts = Vec::new();
        let expr = fold(expr, &mut consts);
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

fn fold(e: &IdedExpr, consts: &mut Vec<Box<dyn Val>>) -> IdedExpr {
    let expr = match &e.expr {
        Expr::Call(call) => {
            let mut call = call.clone();
            call.target = call.target.map(|t| Box::new(fold(&t, consts)));
            call.args = call.args.iter().map(|a| fold(a, consts)).collect();
            if call.func_name == "matches" {
                call.func_name = MATCHES.to_string();
            }
            if call.func_name == "format" && call.target.is_some() && call.args.len() == 1 {
                call.func_name = super::string_format::FORMAT.to_string();
            }
            if call.target.is_none() && call.args.len() == 1 {
                match call.func_name.as_str() {
                    "duration" => call.func_name = DURATION.to_string(),
                    "timestamp" => call.func_name = TIMESTAMP.to_string(),
                    _ => {}
                }
            }
            Expr::Call(call)
        }
        Expr::List(list) => {
            let mut list = list.clone();
            list.elements = list.elements.iter().map(|a| fold(a, consts)).collect();
            Expr::List(list)
        }
        Expr::Select(sel) => {
            let mut sel = sel.clone();
            // A qualified name stays as it is; a select on a call result may hold constants.
            if !matches!(sel.operand.expr, Expr::Ident(_) | Expr::Select(_)) {
                sel.operand = Box::new(fold(&sel.operand, consts));
            }
            Expr::Select(sel)
        }
        Expr::Comprehension(c) => {
            let mut c = c.clone();
            c.iter_range = fold(&c.iter_range, consts);
            c.accu_init = fold(&c.accu_init, consts);
            c.loop_cond = fold(&c.loop_cond, consts);
            c.loop_step = fold(&c.loop_step, consts);
            c.result = fold(&c.result, consts);
            Expr::Comprehension(c)
        }
        other => other.clone(),
    };
    let folded = IdedExpr { id: e.id, expr };
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
                id: e.id,
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
