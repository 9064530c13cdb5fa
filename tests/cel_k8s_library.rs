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

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use base64::Engine as _;
use cel::Value;
use cel::objects::{Key, Map, OptionalValue};
use retainer::expr::{
    Cidr, CompileError, Compiled, Field, Ip, NamedFormat, Quantity, Semver, Url, Vars,
};
use serde::Deserialize;
use serde_json::Value as Json;

/// cel-go 0.26 answers -1 for an offset at or past the end; the cel crate's strings extension
/// reports the offset out of range.
const STRING_OFFSET: &str = "cel crate: strings extension errors on an indexOf/lastIndexOf offset past the end, cel-go returns -1";
/// The cel crate has no `int()` of a duration; the type checker accepts it, as cel-go does.
const INT_OF_DURATION: &str = "cel crate: int(duration) is not implemented";
/// The cel crate refuses a negative size; cel-go returns an empty list.
const RANGE: &str = "cel crate: lists.range(-1) is an error, cel-go returns []";

/// retainer holds a quantity's big decimal in 128 bits; apimachinery's is unbounded.
const QUANTITY_RANGE: &str = "retainer: a quantity beyond 128-bit precision at nano units is an error (apimachinery's big decimal is unbounded)";

/// Expressions on which retainer knowingly disagrees with kube-apiserver, and why. All but one
/// are inside the cel crate; the one of retainer's own layer is the 128-bit bound of quantities.
const KNOWN: &[(&str, &str)] = &[
    ("'hello mellow'.indexOf('ello', 20)", STRING_OFFSET),
    ("'hello mellow'.indexOf('ello', 12)", STRING_OFFSET),
    ("'hello mellow'.lastIndexOf('ello', 12)", STRING_OFFSET),
    ("'hello mellow'.lastIndexOf('ello', 13)", STRING_OFFSET),
    ("lists.range(-1)", RANGE),
    ("int(duration('1s'))", INT_OF_DURATION),
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

/// What kube-apiserver returned, in the form retainer's values are compared with.
#[derive(Debug)]
enum Want {
    Value(Value),
    /// An opaque value of the Kubernetes libraries, by its tag and its canonical text.
    Opaque(&'static str, String),
}

/// The tags of opaque values and how retainer writes each in the form kube-apiserver's encoder
/// does (the quantity's canonical form, the address or prefix, the URL's String(), the named
/// format's Name).
const OPAQUE: &[&str] = &["semver", "quantity", "ip", "cidr", "url", "format"];

/// The names `format.named` takes.
const FORMAT_NAMES: &[&str] = &[
    "dns1123Label",
    "dns1123Subdomain",
    "dns1035Label",
    "qualifiedName",
    "dns1123LabelPrefix",
    "dns1123SubdomainPrefix",
    "dns1035LabelPrefix",
    "labelValue",
    "uri",
    "uuid",
    "byte",
    "date",
    "datetime",
];

fn opaque_text(v: &Value) -> Option<(&'static str, String)> {
    let Value::Opaque(o) = v else { return None };
    if let Some(s) = o.downcast_ref::<Semver>() {
        return Some(("semver", s.0.to_string()));
    }
    if let Some(q) = o.downcast_ref::<Quantity>() {
        return Some(("quantity", q.canonical()));
    }
    if let Some(ip) = o.downcast_ref::<Ip>() {
        return Some(("ip", ip.to_string()));
    }
    if let Some(cidr) = o.downcast_ref::<Cidr>() {
        return Some(("cidr", cidr.to_string()));
    }
    if let Some(url) = o.downcast_ref::<Url>() {
        return Some(("url", url.to_string()));
    }
    if let Some(format) = o.downcast_ref::<NamedFormat>() {
        return Some(("format", format.name().to_string()));
    }
    None
}

fn expected(j: &Json) -> Result<Want, String> {
    let obj = j
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| format!("not a typed value: {j}"))?;
    let (tag, v) = obj.iter().next().ok_or("empty typed value")?;
    // The cel crate hands a type value out as its name (`type(x)` is a string once it leaves
    // the interpreter), so the name is what can be compared; that it is a type, not a
    // string, the type checker sees to (`type(x) == 'int'` does not compile).
    if tag == "type" {
        return Ok(Want::Value(Value::String(Arc::new(
            v.as_str().ok_or("type")?.to_string(),
        ))));
    }
    if let Some(tag) = OPAQUE.iter().find(|t| **t == tag) {
        return Ok(Want::Opaque(tag, v.as_str().ok_or(*tag)?.to_string()));
    }
    Ok(Want::Value(to_value(j)?))
}

fn to_value(j: &Json) -> Result<Value, String> {
    let obj = j
        .as_object()
        .filter(|o| o.len() == 1)
        .ok_or_else(|| format!("not a typed value: {j}"))?;
    let (tag, v) = obj.iter().next().ok_or("empty typed value")?;
    Ok(match tag.as_str() {
        "null" => Value::Null,
        "bool" => Value::Bool(v.as_bool().ok_or("bool")?),
        "int" => Value::Int(v.as_i64().ok_or("int")?),
        "uint" => Value::UInt(v.as_u64().ok_or("uint")?),
        "double" => Value::Float(match v.as_str().ok_or("double")? {
            "NaN" => f64::NAN,
            "Infinity" => f64::INFINITY,
            "-Infinity" => f64::NEG_INFINITY,
            other => other.parse().map_err(|e| format!("double {other}: {e}"))?,
        }),
        "string" => Value::String(Arc::new(v.as_str().ok_or("string")?.to_string())),
        "bytes" => Value::Bytes(Arc::new(
            base64::engine::general_purpose::STANDARD
                .decode(v.as_str().ok_or("bytes")?)
                .map_err(|e| e.to_string())?,
        )),
        "timestamp" => Value::Timestamp(
            chrono::DateTime::parse_from_rfc3339(v.as_str().ok_or("timestamp")?)
                .map_err(|e| e.to_string())?,
        ),
        "duration" => {
            let secs = v["seconds"].as_i64().ok_or("duration seconds")?;
            let nanos = v["nanos"].as_i64().ok_or("duration nanos")?;
            Value::Duration(chrono::Duration::seconds(secs) + chrono::Duration::nanoseconds(nanos))
        }
        "list" => Value::List(Arc::new(
            v.as_array()
                .ok_or("list")?
                .iter()
                .map(to_value)
                .collect::<Result<_, _>>()?,
        )),
        // Entries as [key, value] pairs; an empty map is written as null.
        "map" => {
            let mut map = HashMap::new();
            for entry in v.as_array().map(Vec::as_slice).unwrap_or_default() {
                let key = match to_value(&entry[0])? {
                    Value::String(s) => Key::String(s),
                    Value::Int(i) => Key::Int(i),
                    Value::UInt(u) => Key::Uint(u),
                    Value::Bool(b) => Key::Bool(b),
                    other => return Err(format!("map key {other:?}")),
                };
                map.insert(key, to_value(&entry[1])?);
            }
            Value::Map(Map { map: Arc::new(map) })
        }
        "optional" => Value::Opaque(Arc::new(if v.is_null() {
            OptionalValue::none()
        } else {
            OptionalValue::of(to_value(v)?)
        })),
        // A format inside an optional (`format.named(...)`), by its Name.
        "format" => {
            let name = v.as_str().ok_or("format")?;
            let format = FORMAT_NAMES
                .iter()
                .filter_map(|n| NamedFormat::named(n))
                .find(|f| f.name() == name)
                .ok_or_else(|| format!("no format named {name}"))?;
            Value::Opaque(Arc::new(format))
        }
        other => return Err(format!("no comparison for {other} values")),
    })
}

/// Equality that keeps CEL types apart: `1 == 1.0` is true in CEL, but a library returning a
/// double where Kubernetes returns an int is a difference.
fn same(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Float(a), Value::Float(b)) => (a.is_nan() && b.is_nan()) || a == b,
        (Value::List(a), Value::List(b)) => {
            a.len() == b.len() && a.iter().zip(b.iter()).all(|(x, y)| same(x, y))
        }
        (Value::Null, Value::Null) => true,
        (Value::Map(a), Value::Map(b)) => {
            a.map.len() == b.map.len()
                && a.map
                    .iter()
                    .all(|(k, x)| b.map.get(k).is_some_and(|y| same(x, y)))
        }
        (Value::Bool(a), Value::Bool(b)) => a == b,
        (Value::Int(a), Value::Int(b)) => a == b,
        (Value::UInt(a), Value::UInt(b)) => a == b,
        (Value::String(a), Value::String(b)) => a == b,
        (Value::Bytes(a), Value::Bytes(b)) => a == b,
        (Value::Timestamp(a), Value::Timestamp(b)) => a == b,
        (Value::Duration(a), Value::Duration(b)) => a == b,
        (Value::Opaque(a), Value::Opaque(b)) => {
            match (
                a.downcast_ref::<OptionalValue>(),
                b.downcast_ref::<OptionalValue>(),
            ) {
                (Some(a), Some(b)) => match (a.value(), b.value()) {
                    (Some(x), Some(y)) => same(x, y),
                    (None, None) => true,
                    _ => false,
                },
                // Formats, the one library value the expected values nest in an optional.
                _ => matches!(
                    (a.downcast_ref::<NamedFormat>(), b.downcast_ref::<NamedFormat>()),
                    (Some(x), Some(y)) if x == y
                ),
            }
        }
        _ => false,
    }
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
