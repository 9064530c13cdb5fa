//! The CEL layer: one environment with the Kubernetes libraries users know, compilation with
//! precise errors, static checks the interpreter does not do, and a cheap binding of objects.
//!
//! Pure: nothing here does I/O.

mod comprehensions;
mod convert;
mod fold;
mod format;
mod gofmt;
mod library;
mod message;
mod net;
mod operators;
mod quantity;
mod semver;
mod sets;
mod string_format;
mod types;
mod url;

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use cel::common::ast::{EntryExpr, Expr, IdedExpr, LiteralValue};
use cel::common::types::{CelInt, CelString, CelTimestamp};
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use cel::{Context, Env, Program, Value};
use thiserror::Error;

pub use convert::{FieldTree, json_to_val, project};
pub use format::NamedFormat;
pub use message::error_message;
pub use net::{Cidr, Ip};
pub use quantity::Quantity;
pub use semver::Semver;
pub use url::Url;

/// Variables every expression sees.
pub const VAR_OBJECT: &str = "object";
pub const VAR_NOW: &str = "now";
pub const VAR_AGE: &str = "age";
pub const VAR_GROUP: &str = "group";
/// Variables that depend on every other object, so only `keep` sees them.
pub const VAR_RANK: &str = "rank";
pub const VAR_GROUP_SIZE: &str = "groupSize";
pub const VAR_REFERENCED_BY: &str = "referencedBy";
/// Storage variables of `keep` in OCI policies only: Jobs and Secrets have no byte size that a
/// deletion frees in any meaningful sense (etcd space is not reclaimed per object).
pub const VAR_ARTIFACT_BYTES: &str = "artifactBytes";
pub const VAR_GROUP_BYTES: &str = "groupBytes";
pub const OCI_KEEP_VARIABLES: &[&str] = &[VAR_ARTIFACT_BYTES, VAR_GROUP_BYTES];

/// Which expression of a policy, and so which variables it may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Field {
    Match,
    GroupBy,
    OrderBy,
    Keep,
    /// `spec.referencedBy[i].refs`
    Refs(usize),
}

impl Field {
    pub fn path(self) -> String {
        match self {
            Field::Match => "spec.match".into(),
            Field::GroupBy => "spec.groupBy".into(),
            Field::OrderBy => "spec.orderBy".into(),
            Field::Keep => "spec.keep".into(),
            Field::Refs(i) => format!("spec.referencedBy[{i}].refs"),
        }
    }

    fn variables(self) -> &'static [&'static str] {
        match self {
            Field::Keep => &[
                VAR_OBJECT,
                VAR_NOW,
                VAR_AGE,
                VAR_GROUP,
                VAR_RANK,
                VAR_GROUP_SIZE,
                VAR_REFERENCED_BY,
            ],
            Field::Refs(_) => &[VAR_OBJECT, VAR_NOW],
            // `group` is the result of groupBy, so it cannot be an input of groupBy itself;
            // orderBy runs after grouping and may read it.
            Field::OrderBy => &[VAR_OBJECT, VAR_NOW, VAR_AGE, VAR_GROUP],
            Field::Match | Field::GroupBy => &[VAR_OBJECT, VAR_NOW, VAR_AGE],
        }
    }

    /// The result type this field must produce.
    fn expected(self) -> Expected {
        match self {
            Field::Match | Field::Keep => Expected::Bool,
            Field::GroupBy => Expected::String,
            Field::OrderBy => Expected::Comparable,
            Field::Refs(_) => Expected::List,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expected {
    Bool,
    String,
    Comparable,
    List,
}

impl Expected {
    fn describe(self) -> &'static str {
        match self {
            Expected::Bool => "bool",
            Expected::String => "string",
            Expected::Comparable => "timestamp, int, double, string or semver",
            Expected::List => "list of strings",
        }
    }
}

/// A user's mistake in an expression, found at compile time.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CompileError {
    #[error("{field}: syntax error at line {line}, column {column}: {message}")]
    Syntax {
        field: String,
        line: isize,
        column: isize,
        message: String,
    },
    #[error(
        "{field}: undeclared reference to '{name}' at line {line}, column {column} (variables here: {available})"
    )]
    UndeclaredReference {
        field: String,
        name: String,
        line: usize,
        column: usize,
        available: String,
    },
    #[error(
        "{field}: '{name}' at line {line}, column {column} is only available in spec.keep, where all objects have been grouped and ranked"
    )]
    KeepOnly {
        field: String,
        name: String,
        line: usize,
        column: usize,
    },
    #[error("{field}: must evaluate to {want}, but it is {got}")]
    ResultType {
        field: String,
        want: &'static str,
        got: &'static str,
    },
    #[error(
        "{field}: lists.range at line {line}, column {column} needs a literal size of at most {MAX_RANGE}, so that evaluation cost stays bounded"
    )]
    UnboundedRange {
        field: String,
        line: usize,
        column: usize,
    },
    /// `duration('...')` or `timestamp('...')` of a literal that can never parse: refused
    /// when the policy is compiled, as kube-apiserver's environment refuses it.
    #[error("{field}: {function} literal at line {line}, column {column}: {message}")]
    InvalidLiteral {
        field: String,
        function: &'static str,
        line: usize,
        column: usize,
        message: String,
    },
    /// An expression kube-apiserver's type checker refuses: an operator or function applied
    /// to arguments it has no overload for, a heterogeneous list or map literal, a field
    /// selected from a value that has no fields.
    #[error("{field}: {message} at line {line}, column {column}")]
    TypeCheck {
        field: String,
        line: usize,
        column: usize,
        message: String,
    },
    #[error(
        "{field}: the expression is {chars} characters long; at most {MAX_SOURCE_CHARS} are accepted"
    )]
    TooLong { field: String, chars: usize },
    #[error(
        "{field}: the expression nests more than {MAX_DEPTH} levels deep (each operator, call, index and bracket is one); bracket parts of long chains such as a + b + c + ... so that evaluation stays within the stack"
    )]
    TooNested { field: String, depth: usize },
    #[error(
        "{field}: macros such as all, exists, map and filter are nested {depth} deep at line {line}, column {column}; at most {MAX_NESTED_MACROS} may be nested, so that evaluation cost stays bounded"
    )]
    TooDeep {
        field: String,
        depth: usize,
        line: usize,
        column: usize,
    },
}

/// The longest expression accepted, in characters: cel-go's default limit, far beyond any policy.
pub const MAX_SOURCE_CHARS: usize = 100_000;

/// The deepest expression tree accepted (every operator, call, index and bracket is a level):
/// the depth cel-go's parser allows by default. The cel crate parses, evaluates and drops trees
/// by recursion, so a chain such as `1 + 1 + ... + 1` of a few thousand terms overflows a 2 MiB
/// thread stack, and a stack overflow aborts the process: one policy could crash every replica.
pub const MAX_DEPTH: usize = 250;

/// Stack for parsing, which recurses before the depth can be checked: ample for the longest
/// accepted source (a stack is reserved address space, only the touched part costs memory).
const PARSE_STACK: usize = 64 << 20;

/// How deep comprehensions (all, exists, exists_one, map, filter) may nest inside each other's
/// loop bodies. Each level multiplies the work by the size of a list read from the object, so
/// three levels over a label map or a split name already cost millions of steps per object;
/// chained macros (`a.filter(..).map(..)`) add instead of multiply and are not limited.
pub const MAX_NESTED_MACROS: usize = 2;

/// The largest `lists.range(n)`: the extension allows a million, which nested once is a
/// trillion steps.
pub const MAX_RANGE: i64 = 1000;

/// Parses `source` in the shared environment, refusing what the stack could not hold.
fn parse(field: Field, source: &str) -> Result<Program, CompileError> {
    let chars = source.chars().count();
    if chars > MAX_SOURCE_CHARS {
        return Err(CompileError::TooLong {
            field: field.path(),
            chars,
        });
    }
    let run = || {
        let program = env().compile(source).map_err(|e| {
            let first = e.errors.first();
            CompileError::Syntax {
                field: field.path(),
                line: first.map(|e| e.pos.0).unwrap_or(1),
                column: first.map(|e| e.pos.1).unwrap_or(1),
                message: first
                    .map(|e| e.msg.clone())
                    .unwrap_or_else(|| e.to_string()),
            }
        })?;
        let depth = depth(program.expression());
        if depth > MAX_DEPTH {
            // Dropped here, on the large stack: dropping recurses as deeply as parsing.
            return Err(CompileError::TooNested {
                field: field.path(),
                depth,
            });
        }
        Ok(program)
    };
    std::thread::scope(|scope| {
        match std::thread::Builder::new()
            .name("cel-parse".into())
            .stack_size(PARSE_STACK)
            .spawn_scoped(scope, run)
        {
            Ok(handle) => handle
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
            // No thread to be had: parse here rather than refuse a valid policy. Sources of
            // ordinary size parse in a few kilobytes of stack.
            Err(_) => run(),
        }
    })
}

/// The depth of the tree, walked without recursion; stops counting past MAX_DEPTH.
fn depth(root: &IdedExpr) -> usize {
    let mut deepest = 0;
    let mut stack = vec![(root, 1)];
    while let Some((e, d)) = stack.pop() {
        deepest = deepest.max(d);
        if deepest > MAX_DEPTH {
            break;
        }
        stack.extend(children(e).into_iter().map(|c| (c, d + 1)));
    }
    deepest
}

/// A user's expression failing on one object at evaluation time. The object is kept.
#[derive(Debug, Error, Clone, PartialEq)]
pub enum EvalError {
    #[error("{field}: {message}")]
    Execution { field: String, message: String },
    #[error("{field}: must evaluate to {want}, got {got}")]
    ResultType {
        field: String,
        want: &'static str,
        got: String,
    },
}

static ENV: LazyLock<Arc<Env>> = LazyLock::new(|| Arc::new(build_env()));

fn build_env() -> Env {
    let mut env = Env::stdlib();
    // cel-go keeps the last value of a key a map literal repeats, `{'a': 1, 'a': 2}` included;
    // the cel crate's default is the conformance suite's error.
    env.set_error_on_duplicate_map_keys(false);
    // Each registration below declares distinct names or signatures on a fresh environment, so
    // none can collide: a failure here is a programming error caught by every test run.
    env.add_extension(cel::extensions::strings)
        .expect("strings extension registers on a fresh env");
    env.add_extension(cel::extensions::lists)
        .expect("lists extension registers on a fresh env");
    env.add_extension(cel::extensions::math)
        .expect("math extension registers on a fresh env");
    // Before `library`: see quantity::register.
    quantity::register(&mut env).expect("quantity library registers on a fresh env");
    library::register(&mut env).expect("Kubernetes libraries register on a fresh env");
    net::register(&mut env).expect("ip and cidr libraries register on a fresh env");
    url::register(&mut env).expect("url library registers on a fresh env");
    format::register(&mut env).expect("format library registers on a fresh env");
    string_format::register(&mut env).expect("string format registers on a fresh env");
    sets::register(&mut env).expect("sets library registers on a fresh env");
    comprehensions::register(&mut env)
        .expect("two-variable comprehensions register on a fresh env");
    operators::register(&mut env).expect("retainer's operator functions register on a fresh env");
    env
}

/// The shared environment: compiled once per process, cheap to clone.
pub fn env() -> Arc<Env> {
    ENV.clone()
}

/// One compiled expression of a policy.
#[derive(Debug)]
pub struct Compiled {
    pub field: Field,
    pub source: String,
    program: Program,
    /// The expression as it runs: constants folded, `matches` precompiling (fold.rs).
    folded: fold::Folded,
    /// For keep: each top-level `||` operand of the parsed expression, with the text the user
    /// wrote for it, so a verdict can say which held, each as it runs. Empty when keep has no
    /// top-level `||`.
    terms: Vec<(String, fold::Folded)>,
    /// The object fields the expression reads.
    pub fields: FieldTree,
    /// What evaluation must know of the types (types::TypeFacts).
    facts: types::TypeFacts,
}

impl Compiled {
    pub fn compile(field: Field, source: &str) -> Result<Compiled, CompileError> {
        Compiled::compile_with(field, source, &[])
    }

    /// `compile`, where `keep_extra` names variables `keep` may read besides the common ones
    /// (the target kind decides which exist); other fields are told they are keep-only.
    pub fn compile_with(
        field: Field,
        source: &str,
        keep_extra: &[&str],
    ) -> Result<Compiled, CompileError> {
        let mut names = field.variables().to_vec();
        if field == Field::Keep {
            names.extend_from_slice(keep_extra);
        }
        let vars: Vec<(&str, types::Ty)> = names
            .iter()
            .map(|n| (*n, types::variable_type(n)))
            .collect();
        let keep_only: Vec<&str> = Field::Keep
            .variables()
            .iter()
            .chain(keep_extra)
            .copied()
            .collect();
        Compiled::build(field, source, &vars, &keep_only, Some(field.expected()))
    }

    /// Compiles `source` as `spec.keep` is compiled (every static check, then folding), for
    /// test suites written for CEL rather than for policies (the specification's conformance
    /// suite): the variables are `vars` instead of a policy's, each declared with the type of
    /// the value it will be bound to (dyn for `None`), and the result may have any type, since
    /// which type is right is a policy field's requirement and such a suite has no field.
    #[doc(hidden)]
    pub fn compile_declared(
        source: &str,
        vars: &[(&str, Option<&Value>)],
    ) -> Result<Compiled, CompileError> {
        let vars: Vec<(&str, types::Ty)> = vars
            .iter()
            .map(|(n, v)| (*n, v.map_or(types::Ty::Dyn, types::value_type)))
            .collect();
        Compiled::build(Field::Keep, source, &vars, &[], None)
    }

    /// `vars` are the variables the expression may read, with their types; `keep_only` the
    /// names it is told only keep may read; `result` the type it must have, if any.
    fn build(
        field: Field,
        source: &str,
        vars: &[(&str, types::Ty)],
        keep_only: &[&str],
        result: Option<Expected>,
    ) -> Result<Compiled, CompileError> {
        let program = parse(field, source)?;
        let names: Vec<&str> = vars.iter().map(|(n, _)| *n).collect();
        check_references(field, source, &program, &names, keep_only)?;
        check_nesting(field, source, &program)?;
        check_time_literals(field, source, &program)?;
        check_regex_literals(field, source, &program)?;
        let checked = check_types(field, source, &program, vars)?;
        check_constant_conversions(field, source, &program)?;
        check_constant_indexes(field, source, &program)?;
        // The checker's type, as kube-apiserver checks a validation's result: dyn (anything
        // read from `object`) is left to evaluation.
        if let Some(want) = result
            && let Some(got) = result_type_name(&checked.ty)
            && !satisfies(got, want)
        {
            return Err(CompileError::ResultType {
                field: field.path(),
                want: want.describe(),
                got,
            });
        }
        let mut fields = FieldTree::default();
        collect_object_paths(program.expression(), &mut fields);
        let facts = checked.facts;
        let terms = if field == Field::Keep {
            keep_terms(&program)
                .into_iter()
                .map(|(text, term)| (text, fold::Folded::new(&term, &facts)))
                .collect()
        } else {
            Vec::new()
        };
        let folded = fold::Folded::new(program.expression(), &facts);
        Ok(Compiled {
            field,
            source: source.to_string(),
            program,
            folded,
            terms,
            fields,
            facts,
        })
    }

    /// `eval` of the expression with nothing folded: every rewrite fold.rs makes so that it
    /// answers as Kubernetes does, but no constant computed ahead. For tests that folding
    /// never changes an answer.
    #[doc(hidden)]
    pub fn eval_unfolded(&self, vars: &dyn VariableResolver) -> Result<Value, EvalError> {
        let unfolded = fold::Folded::unfolded(self.program.expression(), &self.facts);
        self.run(&unfolded, vars)
    }

    /// Whether the expression reads the variable `name` (it may be shadowed by a macro's
    /// iteration variable of the same name; the answer is then a harmless yes).
    pub fn reads(&self, name: &str) -> bool {
        let mut idents = Vec::new();
        collect_idents(self.program.expression(), &mut idents);
        idents.iter().any(|(_, n)| n == name)
    }

    fn run(&self, folded: &fold::Folded, vars: &dyn VariableResolver) -> Result<Value, EvalError> {
        let resolver = folded.resolver(vars);
        let mut ctx = Context::with_env(env());
        ctx.set_variable_resolver(&resolver);
        Value::resolve(&folded.expr, &ctx).map_err(|e| EvalError::Execution {
            field: self.field.path(),
            message: error_message(&e),
        })
    }

    /// Evaluates to any value; the caller checks what it needs.
    pub fn eval(&self, vars: &dyn VariableResolver) -> Result<Value, EvalError> {
        self.run(&self.folded, vars)
    }

    pub fn eval_bool(&self, vars: &dyn VariableResolver) -> Result<bool, EvalError> {
        match self.eval(vars)? {
            Value::Bool(b) => Ok(b),
            other => Err(self.wrong_type("bool", &other)),
        }
    }

    pub fn eval_string(&self, vars: &Vars<'_>) -> Result<String, EvalError> {
        match self.eval(vars)? {
            Value::String(s) => Ok(s.to_string()),
            other => Err(self.wrong_type("string", &other)),
        }
    }

    pub fn eval_strings(&self, vars: &Vars<'_>) -> Result<Vec<String>, EvalError> {
        match self.eval(vars)? {
            Value::List(items) => items
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.to_string()),
                    other => Err(self.wrong_type("list of strings", other)),
                })
                .collect(),
            Value::String(s) => Ok(vec![s.to_string()]),
            other => Err(self.wrong_type("list of strings", &other)),
        }
    }

    /// For keep: whether it holds, and the text of the first top-level `||` term that held.
    /// CEL's `||` is true when any side is true, even if another side fails, so a failing term
    /// only matters when no term holds.
    pub fn eval_keep(&self, vars: &dyn VariableResolver) -> Result<Option<String>, EvalError> {
        if self.terms.is_empty() {
            return Ok(self
                .eval_bool(vars)?
                .then(|| self.source.trim().to_string()));
        }
        let mut first_error = None;
        for (text, term) in &self.terms {
            match self.run(term, vars) {
                Ok(Value::Bool(true)) => return Ok(Some(text.clone())),
                Ok(Value::Bool(false)) => {}
                Ok(other) => {
                    first_error.get_or_insert_with(|| self.wrong_type("bool", &other));
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                }
            }
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(None),
        }
    }

    fn wrong_type(&self, want: &'static str, got: &Value) -> EvalError {
        EvalError::ResultType {
            field: self.field.path(),
            want,
            got: type_name(got).to_string(),
        }
    }

    /// When the value depends on the clock only through comparisons of `age` with constant
    /// durations (`age < duration('240h')`, `duration('1h') <= age`): the ages at which one of
    /// those comparisons changes its value (240h for `age < duration('240h')`, a nanosecond
    /// more for `age <= duration('240h')`). An object's age reaches each of them once, so in
    /// between the value stays as it was: it needs computing again only when such an age has
    /// been reached, not whenever the clock moves (the TTL controller's idea, one timer per
    /// object). None when the expression reads `now`, uses `age` in any other way, or names a
    /// macro variable `age` or `now`; Some(empty) when it reads neither.
    pub fn age_thresholds(&self) -> Option<Vec<chrono::Duration>> {
        let mut out = Vec::new();
        let all = std::iter::once(&self.folded).chain(self.terms.iter().map(|(_, t)| t));
        for folded in all {
            if !age_comparisons(folded, &folded.expr, &mut out) {
                return None;
            }
        }
        out.sort();
        out.dedup();
        Some(out)
    }

    /// Whether the value can change when only the clock moves: the expression reads `now` or
    /// `age`. A macro's iteration variable of either name counts as a read; that only costs a
    /// needless re-evaluation, where missing a read would leave a stale verdict.
    pub fn reads_time(&self) -> bool {
        let mut idents = Vec::new();
        collect_idents(self.program.expression(), &mut idents);
        idents
            .iter()
            .any(|(_, name)| name == VAR_NOW || name == VAR_AGE)
    }
}

pub fn type_name(v: &Value) -> &'static str {
    match v {
        Value::List(_) => "list",
        Value::Map(_) => "map",
        Value::Function(..) => "function",
        Value::Int(_) => "int",
        Value::UInt(_) => "uint",
        Value::Float(_) => "double",
        Value::String(_) => "string",
        Value::Bytes(_) => "bytes",
        Value::Bool(_) => "bool",
        Value::Duration(_) => "duration",
        Value::Timestamp(_) => "timestamp",
        Value::Opaque(o) if o.downcast_ref::<Semver>().is_some() => "semver",
        Value::Opaque(o) if o.downcast_ref::<Quantity>().is_some() => "quantity",
        Value::Opaque(o) if o.downcast_ref::<Ip>().is_some() => "ip",
        Value::Opaque(o) if o.downcast_ref::<Cidr>().is_some() => "cidr",
        Value::Opaque(o) if o.downcast_ref::<Url>().is_some() => "url",
        Value::Opaque(o) if o.downcast_ref::<NamedFormat>().is_some() => "format",
        Value::Opaque(_) => "opaque",
        Value::Struct(_) => "struct",
        Value::Null => "null",
    }
}

/// The variables of one evaluation. Built per object; `object` is borrowed, never copied.
pub struct Vars<'a> {
    pub object: &'a (dyn Val + 'a),
    pub now: chrono::DateTime<chrono::FixedOffset>,
    pub age: chrono::Duration,
    pub group: Option<&'a str>,
    pub rank: Option<i64>,
    pub group_size: Option<i64>,
    pub referenced_by: Option<&'a (dyn Val + 'a)>,
}

impl VariableResolver for Vars<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        match variable {
            VAR_OBJECT => Some(CowVal::Borrowed(self.object)),
            VAR_NOW => Some(CowVal::owned(CelTimestamp::from(self.now))),
            VAR_AGE => Some(CowVal::owned(cel::common::types::CelDuration::from(
                self.age,
            ))),
            VAR_GROUP => self.group.map(|g| CowVal::owned(CelString::from(g))),
            VAR_RANK => self.rank.map(|r| CowVal::owned(CelInt::from(r))),
            VAR_GROUP_SIZE => self.group_size.map(|r| CowVal::owned(CelInt::from(r))),
            VAR_REFERENCED_BY => self.referenced_by.map(CowVal::Borrowed),
            _ => None,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Static analysis of the AST.

/// Names an expression may use besides its variables: namespaces of library functions and type
/// names (`type(x) == string`).
const KNOWN_IDENTS: &[&str] = &[
    "optional",
    "strings",
    "math",
    "lists",
    "sets",
    "base64",
    // `ip.isCanonical(s)`
    "ip",
    // `format.named(s)`, `format.dns1123Label()`, ...
    "format",
    "int",
    "uint",
    "double",
    "bool",
    "string",
    "bytes",
    "list",
    "map",
    "null_type",
    "optional_type",
    "type",
    "timestamp",
    "duration",
    "google",
];

fn check_references(
    field: Field,
    source: &str,
    program: &Program,
    allowed: &[&str],
    keep_only: &[&str],
) -> Result<(), CompileError> {
    let mut bound = BTreeSet::new();
    collect_bound(program.expression(), &mut bound);
    let mut idents = Vec::new();
    collect_idents(program.expression(), &mut idents);
    for (id, name) in idents {
        if allowed.contains(&name.as_str())
            || bound.contains(&name)
            || KNOWN_IDENTS.contains(&name.as_str())
        {
            continue;
        }
        let (line, column) = position(program, source, id);
        if keep_only.contains(&name.as_str()) {
            return Err(CompileError::KeepOnly {
                field: field.path(),
                name,
                line,
                column,
            });
        }
        return Err(CompileError::UndeclaredReference {
            field: field.path(),
            name,
            line,
            column,
            available: allowed.join(", "),
        });
    }
    Ok(())
}

/// The deepest nesting of comprehensions through loop bodies, and the id of the innermost one.
fn nesting(e: &IdedExpr) -> (usize, u64) {
    let deepest = |es: &[&IdedExpr]| {
        es.iter()
            .map(|c| nesting(c))
            .max_by_key(|(d, _)| *d)
            .unwrap_or((0, e.id))
    };
    match &e.expr {
        Expr::Comprehension(c) => {
            let once = deepest(&[&c.iter_range, &c.accu_init, &c.result]);
            let (body, id) = deepest(&[&c.loop_cond, &c.loop_step]);
            let inner = (body + 1, if body == 0 { e.id } else { id });
            if once.0 > inner.0 { once } else { inner }
        }
        _ => deepest(&children(e)),
    }
}

/// A `lists.range` call whose size is not a small literal.
fn unbounded_range(e: &IdedExpr) -> Option<u64> {
    // Parsed either as one qualified name or as `range` called on the `lists` namespace.
    let is_range = |c: &cel::common::ast::CallExpr| {
        c.func_name == "lists.range"
            || (c.func_name == "range"
                && c.target
                    .as_deref()
                    .is_some_and(|t| matches!(&t.expr, Expr::Ident(n) if n == "lists")))
    };
    if let Expr::Call(c) = &e.expr
        && is_range(c)
    {
        let bounded = matches!(
            c.args.as_slice(),
            [IdedExpr { expr: Expr::Literal(LiteralValue::Int(n)), .. }] if *n.inner() <= MAX_RANGE
        );
        if !bounded {
            return Some(e.id);
        }
    }
    children(e).into_iter().find_map(unbounded_range)
}

fn check_nesting(field: Field, source: &str, program: &Program) -> Result<(), CompileError> {
    if let Some(id) = unbounded_range(program.expression()) {
        let (line, column) = position(program, source, id);
        return Err(CompileError::UnboundedRange {
            field: field.path(),
            line,
            column,
        });
    }
    let (depth, id) = nesting(program.expression());
    if depth <= MAX_NESTED_MACROS {
        return Ok(());
    }
    let (line, column) = position(program, source, id);
    Err(CompileError::TooDeep {
        field: field.path(),
        depth,
        line,
        column,
    })
}

/// The type conversions cel-go evaluates when it plans a program of constant arguments
/// (`overloads.IsTypeConversionFunction`).
const CONVERSIONS: &[&str] = &[
    "bool",
    "bytes",
    "double",
    "duration",
    "dyn",
    "int",
    "string",
    "timestamp",
    "type",
    "uint",
];

fn conversion(e: &IdedExpr) -> Option<(&str, &IdedExpr)> {
    match &e.expr {
        Expr::Call(c) if c.target.is_none() && CONVERSIONS.contains(&c.func_name.as_str()) => {
            match c.args.as_slice() {
                [arg] => Some((c.func_name.as_str(), arg)),
                _ => None,
            }
        }
        _ => None,
    }
}

/// What cel-go's planner treats as a constant: a literal, a list or map literal of constants,
/// a conversion of a constant (already evaluated by then).
fn planned_constant(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Literal(_) => true,
        Expr::List(l) => l.optional_indices.is_empty() && l.elements.iter().all(planned_constant),
        Expr::Map(m) => m.entries.iter().all(|entry| match &entry.expr {
            EntryExpr::MapEntry(me) => {
                !me.optional && planned_constant(&me.key) && planned_constant(&me.value)
            }
            EntryExpr::StructField(_) => false,
        }),
        _ => conversion(e).is_some_and(|(_, arg)| planned_constant(arg)),
    }
}

/// Kubernetes runs cel-go with `OptOptimize`, whose planner evaluates a type conversion of a
/// constant (`int('x')`, `uint(-1)`, `bool('yes')`, `string(b'\xff')`) once when it builds the
/// program, and an error there refuses the expression: kube-apiserver rejects such a policy
/// when it is written. retainer refuses it too, rather than failing on every object.
fn check_constant_conversions(
    field: Field,
    source: &str,
    program: &Program,
) -> Result<(), CompileError> {
    let mut stack = vec![program.expression()];
    while let Some(e) = stack.pop() {
        let Some((function, arg)) = conversion(e).filter(|(_, arg)| planned_constant(arg)) else {
            stack.extend(children(e));
            continue;
        };
        // Evaluated as the expression would run (fold.rs reads duration and timestamp
        // strings as Go does), with no variables: a constant reads none.
        let folded = fold::Folded::new(e, &Default::default());
        let resolver = folded.resolver(&NoVariables);
        let mut ctx = Context::with_env(env());
        ctx.set_variable_resolver(&resolver);
        if let Err(err) = Value::resolve(&folded.expr, &ctx) {
            let (line, column) = position(program, source, arg.id);
            let function = CONVERSIONS
                .iter()
                .find(|f| **f == function)
                .copied()
                .unwrap_or("conversion");
            return Err(CompileError::InvalidLiteral {
                field: field.path(),
                function,
                line,
                column,
                message: error_message(&err),
            });
        }
    }
    Ok(())
}

/// Whether a constant can index: cel-go makes a qualifier of a string, an int, a uint, a bool
/// or a double, and of nothing else.
fn qualifies(e: &IdedExpr) -> bool {
    match &e.expr {
        Expr::Literal(l) => !matches!(l, LiteralValue::Null | LiteralValue::Bytes(_)),
        Expr::List(_) | Expr::Map(_) => false,
        _ => match conversion(e) {
            Some(("dyn", arg)) => qualifies(arg),
            Some((function, _)) => {
                matches!(function, "int" | "uint" | "double" | "string" | "bool")
            }
            None => true,
        },
    }
}

/// cel-go's planner makes the qualifier of a constant index when it builds the program, and
/// one of a type no qualifier has (`x[{}]`, `x[?[1]]`, `x[null]`, `x[b'a']`) fails it:
/// kube-apiserver refuses the expression ("invalid qualifier type"), where evaluation would
/// fail on every object.
fn check_constant_indexes(
    field: Field,
    source: &str,
    program: &Program,
) -> Result<(), CompileError> {
    let mut stack = vec![program.expression()];
    while let Some(e) = stack.pop() {
        stack.extend(children(e));
        let Expr::Call(call) = &e.expr else { continue };
        let ("_[_]" | "_[?_]", None, [_, index]) =
            (call.func_name.as_str(), &call.target, call.args.as_slice())
        else {
            continue;
        };
        if planned_constant(index) && !qualifies(index) {
            let (line, column) = position(program, source, index.id);
            return Err(CompileError::TypeCheck {
                field: field.path(),
                line,
                column,
                message: "invalid qualifier type: an index is a string, an int, a uint, a bool or a double".into(),
            });
        }
    }
    Ok(())
}

struct NoVariables;

impl VariableResolver for NoVariables {
    fn resolve<'b>(&'b self, _: &str) -> Option<CowVal<'b, 'b>> {
        None
    }
}

/// cel-go's `ValidateDurationLiterals` and `ValidateTimestampLiterals`, which Kubernetes'
/// environment enables: a constant argument that Go cannot read fails the compilation rather
/// than every evaluation.
fn check_time_literals(field: Field, source: &str, program: &Program) -> Result<(), CompileError> {
    let mut stack = vec![program.expression()];
    while let Some(e) = stack.pop() {
        stack.extend(children(e));
        let Expr::Call(call) = &e.expr else { continue };
        let ([arg], None) = (call.args.as_slice(), &call.target) else {
            continue;
        };
        let Expr::Literal(literal) = &arg.expr else {
            continue;
        };
        let LiteralValue::String(text) = literal else {
            // cel-go's duration literal validator evaluates the call, and Kubernetes'
            // environment has no conversion of a number to a duration.
            if call.func_name == "duration" {
                let (line, column) = position(program, source, arg.id);
                return Err(CompileError::InvalidLiteral {
                    field: field.path(),
                    function: "duration",
                    line,
                    column,
                    message: "invalid duration argument".into(),
                });
            }
            continue;
        };
        let (function, result) = match call.func_name.as_str() {
            "duration" => (
                "duration",
                crate::gotime::parse_duration(text.inner()).map(|_| ()),
            ),
            "timestamp" => (
                "timestamp",
                crate::gotime::parse_rfc3339(text.inner()).map(|_| ()),
            ),
            _ => continue,
        };
        if let Err(e) = result {
            let (line, column) = position(program, source, arg.id);
            return Err(CompileError::InvalidLiteral {
                field: field.path(),
                function,
                line,
                column,
                message: e.to_string(),
            });
        }
    }
    Ok(())
}

/// The static type check (types.rs), with `vars` declared.
fn check_types(
    field: Field,
    source: &str,
    program: &Program,
    vars: &[(&str, types::Ty)],
) -> Result<types::Checked, CompileError> {
    types::check(program.expression(), vars).map_err(|e| {
        let (line, column) = position(program, source, e.id);
        CompileError::TypeCheck {
            field: field.path(),
            line,
            column,
            message: e.message,
        }
    })
}

/// cel-go's `ValidateRegexLiterals`, which Kubernetes' environment enables, and the regex
/// library's own check of `find` and `findAll`: a literal pattern that cannot compile fails the
/// compilation. Compiled by the same translation evaluation uses, so nothing refused here could
/// have matched at run time.
fn check_regex_literals(field: Field, source: &str, program: &Program) -> Result<(), CompileError> {
    let mut stack = vec![program.expression()];
    while let Some(e) = stack.pop() {
        stack.extend(children(e));
        let Expr::Call(call) = &e.expr else { continue };
        let (function, pattern) =
            match (call.func_name.as_str(), &call.target, call.args.as_slice()) {
                ("matches", Some(_), [p]) | ("matches", None, [_, p]) => ("matches", p),
                ("find", Some(_), [p]) => ("find", p),
                ("findAll", Some(_), [p] | [p, _]) => ("findAll", p),
                _ => continue,
            };
        let Expr::Literal(LiteralValue::String(text)) = &pattern.expr else {
            continue;
        };
        if let Err(e) = library::compile_regex(function, text.inner()) {
            let (line, column) = position(program, source, pattern.id);
            return Err(CompileError::InvalidLiteral {
                field: field.path(),
                function,
                line,
                column,
                message: error_message(&e),
            });
        }
    }
    Ok(())
}

/// The line and column (1-based, in characters) of the expression node `id`, as compile
/// errors report it; the start when the parser recorded no offset.
fn position(program: &Program, source: &str, id: u64) -> (usize, usize) {
    program
        .source_info()
        .offset_for(id)
        .map(|(start, _)| line_column(source, start as usize))
        .unwrap_or((1, 1))
}

fn line_column(source: &str, char_offset: usize) -> (usize, usize) {
    let mut line = 1;
    let mut column = 1;
    for c in source.chars().take(char_offset) {
        if c == '\n' {
            line += 1;
            column = 1;
        } else {
            column += 1;
        }
    }
    (line, column)
}

fn children(e: &IdedExpr) -> Vec<&IdedExpr> {
    match &e.expr {
        Expr::Call(c) => c.target.iter().map(|t| t.as_ref()).chain(&c.args).collect(),
        Expr::Comprehension(c) => vec![
            &c.iter_range,
            &c.accu_init,
            &c.loop_cond,
            &c.loop_step,
            &c.result,
        ],
        Expr::List(l) => l.elements.iter().collect(),
        Expr::Map(m) => m
            .entries
            .iter()
            .flat_map(|en| match &en.expr {
                EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                EntryExpr::StructField(sf) => vec![&sf.value],
            })
            .collect(),
        Expr::Struct(s) => s
            .entries
            .iter()
            .flat_map(|en| match &en.expr {
                EntryExpr::MapEntry(me) => vec![&me.key, &me.value],
                EntryExpr::StructField(sf) => vec![&sf.value],
            })
            .collect(),
        Expr::Select(s) => vec![s.operand.as_ref()],
        Expr::Ident(_) | Expr::Literal(_) | Expr::Unspecified => vec![],
    }
}

fn collect_bound(e: &IdedExpr, out: &mut BTreeSet<String>) {
    if let Expr::Comprehension(c) = &e.expr {
        out.insert(c.iter_var.clone());
        if let Some(v) = &c.iter_var2 {
            out.insert(v.clone());
        }
        out.insert(c.accu_var.clone());
    }
    for c in children(e) {
        collect_bound(c, out);
    }
}

/// `Compiled::age_thresholds` of one expression as it runs: false when the clock is read in a
/// way other than `age` compared with a constant duration.
fn age_comparisons(folded: &fold::Folded, e: &IdedExpr, out: &mut Vec<chrono::Duration>) -> bool {
    let is_clock = |n: &str| n == VAR_AGE || n == VAR_NOW;
    match &e.expr {
        Expr::Ident(name) if is_clock(name) => return false,
        Expr::Comprehension(c)
            if is_clock(&c.iter_var)
                || is_clock(&c.accu_var)
                || c.iter_var2.as_deref().is_some_and(is_clock) =>
        {
            return false;
        }
        Expr::Call(c)
            if c.target.is_none()
                && c.args.len() == 2
                && matches!(
                    c.func_name.as_str(),
                    "_<_" | "_<=_" | "_>_" | "_>=_" | "_==_" | "_!=_"
                ) =>
        {
            let is_age = |x: &IdedExpr| matches!(&x.expr, Expr::Ident(n) if n == VAR_AGE);
            // The operator as read with `age` on the left.
            let (other, op) = match (is_age(&c.args[0]), is_age(&c.args[1])) {
                (true, false) => (&c.args[1], c.func_name.as_str()),
                (false, true) => (
                    &c.args[0],
                    match c.func_name.as_str() {
                        "_<_" => "_>_",
                        "_<=_" => "_>=_",
                        "_>_" => "_<_",
                        "_>=_" => "_<=_",
                        same => same,
                    },
                ),
                (true, true) => return false,
                (false, false) => {
                    return children(e)
                        .into_iter()
                        .all(|x| age_comparisons(folded, x, out));
                }
            };
            let Some(d) = folded.duration_constant(other) else {
                return false;
            };
            // `age < d` and `age >= d` change when the age reaches d; `age <= d` and `age > d`
            // a nanosecond later, when it passes d; `==` and `!=` at both.
            let passed = d + chrono::Duration::nanoseconds(1);
            match op {
                "_<_" | "_>=_" => out.push(d),
                "_<=_" | "_>_" => out.push(passed),
                _ => out.extend([d, passed]),
            }
            return true;
        }
        _ => {}
    }
    children(e)
        .into_iter()
        .all(|x| age_comparisons(folded, x, out))
}

fn collect_idents(e: &IdedExpr, out: &mut Vec<(u64, String)>) {
    if let Expr::Ident(name) = &e.expr {
        out.push((e.id, name.clone()));
    }
    // A qualified function name such as `optional.none` or `math.abs` is a call on an Ident
    // target in the AST; the namespace is in KNOWN_IDENTS.
    for c in children(e) {
        collect_idents(c, out);
    }
}

/// The path `var.a.b['c']` spells, if the expression is such a path.
fn var_path(e: &IdedExpr, var: &str) -> Option<Vec<String>> {
    match &e.expr {
        Expr::Ident(name) if name == var => Some(Vec::new()),
        Expr::Select(s) => {
            let mut p = var_path(&s.operand, var)?;
            p.push(s.field.clone());
            Some(p)
        }
        Expr::Call(c)
            if c.target.is_none()
                && c.args.len() == 2
                && matches!(c.func_name.as_str(), "_[_]" | "_[?_]" | "_?._") =>
        {
            let Expr::Literal(LiteralValue::String(key)) = &c.args[1].expr else {
                return None;
            };
            let mut p = var_path(&c.args[0], var)?;
            p.push(key.to_string());
            Some(p)
        }
        _ => None,
    }
}

/// Records the longest `object...` paths the expression reads; anything read in a way the
/// analysis cannot follow (a computed index, `object` passed whole) records the enclosing path,
/// whose whole subtree is then bound.
fn collect_object_paths(e: &IdedExpr, out: &mut FieldTree) {
    collect_paths(e, VAR_OBJECT, out);
}

/// `collect_object_paths` for the variable `var`. A one-variable comprehension over a path of
/// `var` (what `all`, `exists`, `exists_one`, `map` and `filter` expand to) records what its
/// body reads of the loop variable as read of every element; a comprehension that rebinds
/// `var` hides it from its body.
fn collect_paths(e: &IdedExpr, var: &str, out: &mut FieldTree) {
    if let Some(path) = var_path(e, var) {
        out.insert(&path);
        return;
    }
    if let Expr::Comprehension(c) = &e.expr {
        let body = [&c.loop_cond, &c.loop_step, &c.result];
        let rebinds = c.iter_var == var || c.iter_var2.as_deref() == Some(var) || c.accu_var == var;
        let element = if !rebinds && c.iter_var != c.accu_var && c.iter_var2.is_none() {
            var_path(&c.iter_range, var)
        } else {
            None
        };
        if let Some(path) = element {
            let mut each = FieldTree::default();
            for part in body {
                collect_paths(part, &c.iter_var, &mut each);
            }
            out.insert_each(&path, &each);
        } else {
            collect_paths(&c.iter_range, var, out);
        }
        collect_paths(&c.accu_init, var, out);
        if !rebinds {
            for part in body {
                collect_paths(part, var, out);
            }
        }
        return;
    }
    for c in children(e) {
        collect_paths(c, var, out);
    }
}

/// How a result type is named in `must evaluate to ..., but it is ...`; `None` for dyn, which
/// only evaluation can judge.
fn result_type_name(t: &types::Ty) -> Option<&'static str> {
    use types::Ty;
    Some(match t {
        Ty::Dyn | Ty::Var(_) => return None,
        Ty::Null => "null",
        Ty::Bool => "bool",
        Ty::Int => "int",
        Ty::Uint => "uint",
        Ty::Double => "double",
        Ty::String => "string",
        Ty::Bytes => "bytes",
        Ty::Duration => "duration",
        Ty::Timestamp => "timestamp",
        Ty::List(_) => "list",
        Ty::Map(..) => "map",
        Ty::Type(_) => "type",
        Ty::Optional(_) => "optional",
        Ty::Opaque("kubernetes.Semver") => "semver",
        Ty::Opaque("kubernetes.Quantity") => "quantity",
        Ty::Opaque("kubernetes.URL") => "url",
        Ty::Opaque("net.IP") => "ip",
        Ty::Opaque("net.CIDR") => "cidr",
        Ty::Opaque(_) => "opaque",
    })
}

fn satisfies(got: &str, want: Expected) -> bool {
    match want {
        Expected::Bool => got == "bool",
        Expected::String => got == "string",
        Expected::List => got == "list",
        Expected::Comparable => matches!(
            got,
            "int" | "uint" | "double" | "string" | "timestamp" | "duration" | "semver"
        ),
    }
}

/// The operands of the top-level `||` of keep, in source order, each with the text the user
/// wrote for it. The terms come from the parsed expression, so every operator keeps its CEL
/// precedence: in `c ? a : b || d` the conditional binds loosest and there is one term. A group
/// the user put in brackets stays one term, as written: `(a || b) || c` has two.
fn keep_terms(program: &Program) -> Vec<(String, IdedExpr)> {
    let info = program.source_info();
    let chars: Vec<char> = info.source.chars().collect();
    // The parser's offsets count bytes; the text is searched by character.
    let mut char_at_byte = vec![0; info.source.len() + 1];
    for (i, (b, c)) in info.source.char_indices().enumerate() {
        char_at_byte[b..b + c.len_utf8()].fill(i);
    }
    char_at_byte[info.source.len()] = chars.len();
    let src = Source {
        info,
        partners: bracket_partners(&chars),
        chars,
        char_at_byte,
    };
    let mut leaves = Vec::new();
    match or_args(program.expression()) {
        Some(args) => {
            for a in args {
                src.or_operands(a, &mut leaves);
            }
        }
        None => return Vec::new(),
    }
    leaves
        .into_iter()
        .map(|leaf| {
            let text = src
                .text(leaf)
                // Without positions (never seen from the parser) the reason still names a term.
                .unwrap_or_else(|| format!("term {}", leaf.id));
            (text, leaf.clone())
        })
        .collect()
}

fn or_args(e: &IdedExpr) -> Option<&[IdedExpr]> {
    match &e.expr {
        Expr::Call(c) if c.target.is_none() && c.args.len() == 2 && c.func_name == "_||_" => {
            Some(&c.args)
        }
        _ => None,
    }
}

/// A parsed expression's text, for finding the text of its parts.
struct Source<'a> {
    info: &'a cel::common::ast::SourceInfo,
    chars: Vec<char>,
    partners: Vec<Option<usize>>,
    char_at_byte: Vec<usize>,
}

impl Source<'_> {
    /// The parser balances a chain `a || b || c` into a tree of `||` calls that the user did not
    /// bracket: those are walked through; a bracketed `(a || b)` is a term of its own.
    fn or_operands<'e>(&self, e: &'e IdedExpr, out: &mut Vec<&'e IdedExpr>) {
        match or_args(e) {
            Some(args) if !self.bracketed(e) => {
                for a in args {
                    self.or_operands(a, out);
                }
            }
            _ => out.push(e),
        }
    }

    fn bracketed(&self, e: &IdedExpr) -> bool {
        self.span(e).is_some_and(|(start, stop)| {
            self.enclosing_brackets(start, stop)
                .is_some_and(|(b, _)| self.call_name(b).is_none())
        })
    }

    /// The `(` and `)` around a span, if it is a bracketed group.
    fn enclosing_brackets(&self, start: usize, stop: usize) -> Option<(usize, usize)> {
        let before = self.chars[..start]
            .iter()
            .rposition(|c| !c.is_whitespace())?;
        let after = self.chars[stop + 1..]
            .iter()
            .position(|c| !c.is_whitespace())?
            + stop
            + 1;
        (self.chars[before] == '(' && self.partners[before] == Some(after))
            .then_some((before, after))
    }

    /// Where the name of a call starts whose `(` is at `open`, if it is a call's: a macro such
    /// as `has(x)` is parsed into nodes that do not record where its name was.
    fn call_name(&self, open: usize) -> Option<usize> {
        let name = self.chars[..open]
            .iter()
            .rposition(|c| !(c.is_alphanumeric() || *c == '_'))
            .map_or(0, |i| i + 1);
        (name < open).then_some(name)
    }

    /// The text of a term with the brackets the user put around it.
    fn text(&self, e: &IdedExpr) -> Option<String> {
        let (mut start, mut stop) = self.span(e)?;
        while let Some((b, a)) = self.enclosing_brackets(start, stop) {
            (start, stop) = (self.call_name(b).unwrap_or(b), a);
        }
        let text: String = self.chars.get(start..=stop)?.iter().collect();
        Some(text.trim().to_string())
    }

    /// Where the text of a node starts and ends (inclusive). The parser records where each
    /// node's own token is, not where its text starts and ends, so the span of a subtree's tokens
    /// misses closing brackets (`f(x` of `f(x)`) and the brackets of a group inside it
    /// (`x + y) * 2`); it is widened until every bracket in it has its partner inside.
    fn span(&self, e: &IdedExpr) -> Option<(usize, usize)> {
        let mut span: Option<(usize, usize)> = None;
        let mut stack = vec![e];
        while let Some(e) = stack.pop() {
            if let Some((start, stop)) = self.info.offset_for(e.id) {
                // ANTLR's token stop is inclusive.
                let at = |b: u32| {
                    let b = (b as usize).min(self.char_at_byte.len() - 1);
                    self.char_at_byte[b]
                };
                let (start, stop) = (at(start), at(stop.max(start)));
                span = Some(match span {
                    None => (start, stop),
                    Some((s, t)) => (s.min(start), t.max(stop)),
                });
            }
            stack.extend(children(e));
        }
        let (mut start, mut stop) = span?;
        let last = self.chars.len().checked_sub(1)?;
        stop = stop.min(last);
        start = start.min(stop);
        loop {
            let (mut wide_start, mut wide_stop) = (start, stop);
            for p in self.partners[start..=stop].iter().flatten() {
                wide_start = wide_start.min(*p);
                wide_stop = wide_stop.max(*p);
            }
            let widened = (wide_start, wide_stop) != (start, stop);
            (start, stop) = (wide_start, wide_stop);
            if !widened {
                if self.chars[start] == '(' {
                    start = self.call_name(start).unwrap_or(start);
                }
                return Some((start, stop));
            }
        }
    }
}

/// For each bracket outside string literals, the index of its partner; `None` elsewhere and for
/// an unbalanced bracket (a parsed expression has none).
fn bracket_partners(chars: &[char]) -> Vec<Option<usize>> {
    let mut partners = vec![None; chars.len()];
    let mut open: Vec<usize> = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '(' | '[' | '{' => open.push(i),
            ')' | ']' | '}' => {
                if let Some(o) = open.pop() {
                    partners[o] = Some(i);
                    partners[i] = Some(o);
                }
            }
            '\'' | '"' => {
                // Skip the literal, triple-quoted or not; raw strings have no escapes.
                let raw = i > 0 && matches!(chars[i - 1], 'r' | 'R');
                let triple = chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c);
                let quote_len = if triple { 3 } else { 1 };
                i += quote_len;
                while i < chars.len() {
                    if !raw && chars[i] == '\\' {
                        i += 2;
                        continue;
                    }
                    if chars[i] == c
                        && (!triple
                            || (chars.get(i + 1) == Some(&c) && chars.get(i + 2) == Some(&c)))
                    {
                        i += quote_len - 1;
                        break;
                    }
                    i += 1;
                }
            }
            _ => {}
        }
        i += 1;
    }
    partners
}

#[cfg(test)]
mod tests;
