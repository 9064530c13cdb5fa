//! The Kubernetes CEL libraries as kube-apiserver defines them: every expression of
//! tests/k8s-cel-library/cases.txt evaluated through the path a policy's expressions take
//! (`Compiled::compile`, then `Compiled::eval`), compared with what kube-apiserver's own
//! environment returned for it (expected.json, written by tools/k8s-cel-library with
//! `make k8s-cel-library`; CI never runs Go).
//!
//! A value must match in CEL type as well (1, 1u and 1.0 differ). An expected error matches
//! any error, as cel-go and the cel crate word them differently, but it must come at the same
//! stage: what kube-apiserver refuses to compile (its type checker, its literal validators)
//! retainer must refuse to compile, and what it compiles retainer must compile.
//!
//! A section starting with `# declare: keep` declares the variables of a policy's keep
//! expression, bound to the values `evaluate` below binds.
//!
//! Differences that are the cel crate's, not retainer's layer, are listed in `KNOWN` with the
//! reason; the test fails on a difference not listed and on a listed case that now agrees.

use std::collections::BTreeMap;
use std::path::Path;

use cel::Value;
use retainer::expr::{CompileError, Compiled, Field, Vars};
use serde::Deserialize;
use serde_json::Value as Json;

#[path = "support/cel_values.rs"]
mod cel_values;
use cel_values::{Want, expected, opaque_text, same};
/// The cel crate refuses a negative size; cel-go returns an empty list.
const RANGE: &str = "cel crate: lists.range(-1) is an error, cel-go returns []";

/// retainer holds a quantity's big decimal in 128 bits; apimachinery's is unbounded.
const QUANTITY_RANGE: &str = "retainer: a quantity beyond 128-bit precision at nano units is an error (apimachinery's big decimal is unbounded)";

/// Expressions on which retainer knowingly disagrees with kube-apiserver, and why. All but one
/// are inside the cel crate; the one of retainer's own layer is the 128-bit bound of quantities.
const KNOWN: &[(&str, &str)] = &[
    ("lists.range(-1)", RANGE),
    ("quantity('1e100').add(1)", QUANTITY_RANGE),
];

#[derive(Deserialize)]
struct File {
    modules: BTreeMap<String, String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    section: String,
    line: usize,
    expr: String,
    value: Option<Json>,
    error: Option<String>,
    /// `compile` or `eval`, for an error.
    stage: Option<String>,
}

fn load() -> File {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/k8s-cel-library");
    let text = std::fs::read_to_string(dir.join("expected.json")).expect("expected.json");
    let file: File = serde_json::from_str(&text).expect("expected.json parses");
    // The expected values must come from the cases as they are now, or an edited case would be
    // compared with an old answer.
    let cases = std::fs::read_to_string(dir.join("cases.txt")).expect("cases.txt");
    let exprs: Vec<&str> = cases
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let generated: Vec<&str> = file.cases.iter().map(|c| c.expr.as_str()).collect();
    assert!(
        exprs == generated,
        "tests/k8s-cel-library/expected.json is stale: run `make k8s-cel-library`"
    );
    file
}

/// Compiles as a policy's keep expression, which sees every variable. A result keep cannot
/// have (an int, a map) is looked at through `dyn(...)`, which the type checker lets through
/// unchanged and evaluation returns as is.
fn compile(expr: &str) -> Result<Compiled, CompileError> {
    match Compiled::compile(Field::Keep, expr) {
        Err(CompileError::ResultType { .. }) => {
            Compiled::compile(Field::Keep, &format!("dyn({expr})"))
        }
        other => other,
    }
}

/// Where an expression failed.
enum Failed {
    Compile(String),
    Eval(String),
}

/// Evaluated with the values tools/k8s-cel-library binds in a `# declare: keep` section.
fn evaluate(expr: &str) -> Result<Value, Failed> {
    let compiled = compile(expr).map_err(|e| Failed::Compile(e.to_string()))?;
    let object = serde_json::json!({});
    let object = retainer::expr::json_to_val(&object);
    let no_referrers = serde_json::json!([]);
    let referrers = retainer::expr::json_to_val(&no_referrers);
    let vars = Vars {
        object: &*object,
        now: chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z").expect("a timestamp"),
        age: chrono::Duration::zero(),
        group: Some(""),
        rank: Some(0),
        group_size: Some(1),
        referenced_by: Some(&*referrers),
    };
    compiled
        .eval(&vars)
        .map_err(|e| Failed::Eval(e.to_string()))
}

/// `None` when retainer agrees with Kubernetes, else what differs.
fn difference(case: &Case) -> Option<String> {
    let got = evaluate(&case.expr);
    let go_compile = case.stage.as_deref() == Some("compile");
    match (&case.error, &case.value, got) {
        (Some(_), _, Err(Failed::Compile(_))) if go_compile => None,
        (Some(want), _, Err(Failed::Eval(e))) if go_compile => Some(format!(
            "Kubernetes refuses it at compile time ('{want}'); retainer compiles it, then fails: '{e}'"
        )),
        (Some(want), _, Ok(v)) if go_compile => Some(format!(
            "Kubernetes refuses it at compile time ('{want}'); retainer: {v:?}"
        )),
        (_, _, Err(Failed::Compile(e))) => Some(format!(
            "Kubernetes compiles it; retainer refuses it at compile time: '{e}'"
        )),
        (Some(_), _, Err(Failed::Eval(_))) => None,
        (Some(want), _, Ok(v)) => Some(format!("Kubernetes: error '{want}'; retainer: {v:?}")),
        (None, Some(want), got) => match (expected(want), got) {
            (Err(e), _) => Some(format!("expected value unreadable: {e}")),
            (Ok(want), Err(Failed::Eval(e) | Failed::Compile(e))) => {
                Some(format!("Kubernetes: {want:?}; retainer: error '{e}'"))
            }
            (Ok(Want::Value(w)), Ok(g)) => {
                (!same(&w, &g)).then(|| format!("Kubernetes: {w:?}; retainer: {g:?}"))
            }
            (Ok(Want::Opaque(tag, w)), Ok(g)) => {
                let got = opaque_text(&g);
                (got.as_ref().map(|(t, s)| (*t, s.as_str())) != Some((tag, w.as_str())))
                    .then(|| format!("Kubernetes: {tag} {w}; retainer: {got:?} {g:?}"))
            }
        },
        (None, None, _) => Some("case has neither value nor error".into()),
    }
}

#[test]
fn kubernetes_libraries_agree_with_kube_apiserver() {
    let file = load();
    assert!(
        file.modules.contains_key("k8s.io/apiserver"),
        "expected.json records the k8s.io/apiserver it came from"
    );
    let known: BTreeMap<&str, &str> = KNOWN.iter().copied().collect();
    let mut failures = Vec::new();
    let mut stale = Vec::new();
    let mut by_section: BTreeMap<&str, usize> = BTreeMap::new();
    for case in &file.cases {
        *by_section.entry(case.section.as_str()).or_default() += 1;
        match (difference(case), known.contains_key(case.expr.as_str())) {
            (Some(d), false) => failures.push(format!(
                "cases.txt:{} [{}] {}\n    {d}",
                case.line, case.section, case.expr
            )),
            (None, true) => stale.push(case.expr.clone()),
            _ => {}
        }
    }
    for (section, n) in &by_section {
        println!("{n:4}  {section}");
    }
    println!("{:4}  total", file.cases.len());
    let listed_missing: Vec<&str> = known
        .keys()
        .filter(|k| !file.cases.iter().any(|c| c.expr == **k))
        .copied()
        .collect();
    assert!(
        failures.is_empty() && stale.is_empty() && listed_missing.is_empty(),
        "{} differences from kube-apiserver:\n{}\n\nlisted in KNOWN but agreeing now: {stale:?}\nlisted in KNOWN but not a case: {listed_missing:?}",
        failures.len(),
        failures.join("\n"),
    );
    // docs/cel.md states the totals; keep it true.
    let docs = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cel.md"))
        .expect("docs/cel.md");
    let totals = format!("| **{}** | **{}** |", file.cases.len(), KNOWN.len());
    assert!(
        docs.contains(&totals),
        "docs/cel.md's table of Kubernetes libraries should end with `{totals}`"
    );
}
