//! The CEL specification's conformance suite (cel.dev/expr, tests/simple/testdata) run through
//! the path a policy's expressions take: each case compiled by `Compiled` as `spec.keep` is
//! (every static check, the type checker, folding) and evaluated by `Compiled::eval`, the folded
//! tree policies run. Each is evaluated unfolded as well (`Compiled::eval_unfolded`) and must
//! have the same outcome, so folding is checked against the suite too.
//!
//! A case's variables are declared with the types of their values (`Compiled::compile_declared`)
//! in place of a policy's, and its result may have any type: a policy field's result type is
//! that field's requirement, and a case has no field.
//!
//! The cases are the JSON files under tests/cel-conformance/, generated from the spec's textproto
//! files by tools/cel-conformance (`make cel-conformance`). Failures retainer knows about are
//! listed with their reason in tests/cel-conformance/known-failures.txt; this test fails on a
//! failure not listed there and on a listed case that passes, so the list stays true. The per-file
//! table is printed and must match the one in docs/cel.md; `CEL_CONFORMANCE_WRITE_DOCS=1` rewrites
//! it there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use cel::Value;
use cel::common::value::{CowVal, Val};
use cel::context::VariableResolver;
use retainer::expr::{CompileError, Compiled};
use serde::Deserialize;
use serde_json::Value as Json;

#[path = "support/cel_values.rs"]
mod cel_values;
use cel_values::{plain_json, same, to_value};

/// Variables bound through retainer's JSON conversion, reported beside the table.
static JSON_BOUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

const DOCS_BEGIN: &str = "<!-- conformance table: begin -->";
const DOCS_END: &str = "<!-- conformance table: end -->";

/// Whole files whose subject retainer's environment does not offer: running them would only
/// count missing functions.
const FILE_SKIPS: &[(&str, &str)] = &[
    ("bindings_ext", "cel.bind is not in retainer's environment"),
    (
        "block_ext",
        "cel.block and cel.index are an optimizer's internal forms, not part of retainer's environment",
    ),
    (
        "encoders_ext",
        "base64 encoders are not in retainer's environment",
    ),
    (
        "math_ext",
        "cel-go's math extension is not in Kubernetes' environment: retainer refuses its functions at compile time",
    ),
    (
        "network_ext",
        "the ip and cidr libraries are not in retainer's environment",
    ),
    (
        "type_deductions",
        "type checker: the cases compare deduced types, which retainer's checker does not report",
    ),
];

#[derive(Deserialize)]
struct File {
    name: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    section: String,
    name: String,
    expr: String,
    #[serde(default)]
    disable_macros: bool,
    /// The case needs the type checker off: it uses names nothing declares.
    #[serde(default)]
    disable_check: bool,
    /// Names resolve in this namespace first; retainer's environment has none.
    #[serde(default)]
    container: String,
    #[serde(default)]
    bindings: BTreeMap<String, Json>,
    value: Option<Json>,
    error: Option<String>,
    skip: Option<String>,
    /// cel-go's outcome for the case, from tools/cel-conformance: "pass", "fail: ..." or
    /// "skip: ..." (the tool could not set the case up).
    celgo: String,
}

enum Outcome {
    Pass,
    Fail(String),
    Skip(String),
}

#[derive(Default)]
struct Counts {
    cases: usize,
    run: usize,
    passed: usize,
    failed: usize,
    known: usize,
    skipped: BTreeMap<String, usize>,
    /// cel-go over every case of the file, retainer's skips included.
    celgo_run: usize,
    celgo_passed: usize,
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cel-conformance")
}

/// A case's variables, as evaluation asks for them.
struct Bindings<'a>(HashMap<&'a str, Box<dyn Val + 'a>>);

impl VariableResolver for Bindings<'_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<CowVal<'b, 'b>> {
        self.0.get(variable).map(|v| CowVal::Borrowed(v.as_ref()))
    }
}

fn run_case(case: &Case) -> Outcome {
    if let Some(reason) = &case.skip {
        return Outcome::Skip(reason.clone());
    }
    if case.disable_macros {
        return Outcome::Skip("parsing without macros".into());
    }
    if !case.container.is_empty() {
        return Outcome::Skip("a container (namespace): policies have none".into());
    }
    // A name with a dot is a variable only to an environment that declares one so (the suite
    // tests how `a.b.c` resolves against `a.b` and `a.b.c`); a policy's variables are
    // identifiers.
    if case.bindings.keys().any(|name| name.contains('.')) {
        return Outcome::Skip(
            "a variable with a qualified name (a.b.c): policies' variables are identifiers".into(),
        );
    }
    let mut values = BTreeMap::new();
    for (name, typed) in &case.bindings {
        match to_value(typed) {
            Ok(v) => values.insert(name.as_str(), v),
            Err(e) => return Outcome::Fail(format!("binding {name}: {e}")),
        };
    }
    // Each variable is declared with the type of its value, which is the type the spec's cases
    // declare it with; a case that turns checking off declares nothing, and cel-go then
    // declares its variables dyn, as this does.
    let declared: Vec<(&str, Option<&Value>)> = values
        .iter()
        .map(|(name, v)| (*name, (!case.disable_check).then_some(v)))
        .collect();
    let compiled = match Compiled::compile_declared(&case.expr, &declared) {
        Ok(c) => c,
        // A refusal at compile time, parse errors included, is the error the case expects.
        Err(_) if case.error.is_some() => return Outcome::Pass,
        Err(
            CompileError::UnboundedRange { .. }
            | CompileError::TooDeep { .. }
            | CompileError::TooNested { .. }
            | CompileError::TooLong { .. },
        ) => {
            return Outcome::Skip("refused by retainer's cost limits".into());
        }
        // A checker refuses names nothing declares, and so does retainer; such cases turn
        // checking off to reach the runtime.
        Err(CompileError::UndeclaredReference { .. }) if case.disable_check => {
            return Outcome::Skip(
                "undeclared names with checking off: retainer refuses them at compile time".into(),
            );
        }
        // The same for type errors: cel-go's checker refuses them as retainer's does, and the
        // case turns checking off to test the runtime's behaviour.
        Err(CompileError::TypeCheck { .. }) if case.disable_check => {
            return Outcome::Skip(
                "type errors with checking off: retainer refuses them at compile time".into(),
            );
        }
        // What only the strings extension's version 3 has; Kubernetes 1.36 has version 2.
        Err(CompileError::TypeCheck { message, .. })
            if message.contains("'reverse' applied to 'string") =>
        {
            return Outcome::Skip(
                "string reverse() is the strings extension's version 3: Kubernetes' environment refuses it at compile time".into(),
            );
        }
        // Kubernetes' environment sets HomogeneousAggregateLiterals; the spec's suite does not,
        // and mixes element types in list and map literals.
        Err(CompileError::TypeCheck { message, .. }) if message.starts_with("expected type") => {
            return Outcome::Skip(
                "a list or map literal mixing types: Kubernetes' environment refuses it at compile time".into(),
            );
        }
        Err(e) => return Outcome::Fail(format!("compile error: {e}")),
    };
    // A binding JSON can carry goes through retainer's own conversion, the one policies'
    // objects take; the others (uint, bytes, timestamps, ...) through the cel crate's values.
    let as_json: Vec<(&str, Json)> = case
        .bindings
        .iter()
        .filter_map(|(name, typed)| Some((name.as_str(), plain_json(typed)?)))
        .collect();
    let mut bindings = Bindings(HashMap::new());
    for (name, json) in &as_json {
        JSON_BOUND.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        bindings.0.insert(name, retainer::expr::json_to_val(json));
    }
    for (name, v) in values {
        if bindings.0.contains_key(name) {
            continue;
        }
        match Box::<dyn Val>::try_from(v) {
            Ok(v) => bindings.0.insert(name, v),
            Err(e) => return Outcome::Fail(format!("binding {name}: {e}")),
        };
    }
    let folded = compiled.eval(&bindings).map_err(|e| e.to_string());
    let unfolded = compiled.eval_unfolded(&bindings).map_err(|e| e.to_string());
    // Folding computes ahead what evaluation would compute, and leaves a call that fails to fail
    // when the expression runs, so neither the value nor the error may change.
    let agree = match (&folded, &unfolded) {
        (Ok(a), Ok(b)) => same(a, b),
        (Err(a), Err(b)) => a == b,
        _ => false,
    };
    if !agree {
        return Outcome::Fail(format!(
            "folded: {folded:?}, unfolded: {unfolded:?}: folding changed the outcome"
        ));
    }
    match (&case.error, &case.value, folded) {
        (Some(_), _, Err(_)) => Outcome::Pass,
        (Some(want), _, Ok(v)) => Outcome::Fail(format!("want error '{want}', got {v:?}")),
        (None, Some(want), Ok(v)) => match to_value(want) {
            Ok(want) if same(&want, &v) => Outcome::Pass,
            Ok(want) => Outcome::Fail(format!("want {want:?}, got {v:?}")),
            Err(e) => Outcome::Fail(format!("expected value: {e}")),
        },
        (None, Some(_), Err(e)) => Outcome::Fail(format!("error: {e}")),
        (None, None, _) => Outcome::Fail("case has neither value nor error".into()),
    }
}

/// `file/section/name` lines, with the reason after ` # `.
fn known_failures() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir().join("known-failures.txt"))
        .expect("tests/cel-conformance/known-failures.txt");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(" # ") {
            Some((id, reason)) => (id.trim().to_string(), reason.trim().to_string()),
            None => (l.to_string(), String::new()),
        })
        .collect()
}

fn rate_of(passed: usize, run: usize) -> String {
    if run == 0 {
        "–".to_string()
    } else {
        format!("{:.1}%", 100.0 * passed as f64 / run as f64)
    }
}

fn table(counts: &BTreeMap<String, Counts>, file_skips: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    out.push_str(
        "| file | cases | run | passed | failed (all listed) | skipped | pass rate of run \
         | cel-go run | cel-go passed | cel-go pass rate |\n",
    );
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    let mut total = Counts::default();
    for (name, c) in counts {
        let skipped: usize = c.skipped.values().sum();
        let rate = if c.run == 0 {
            "–".to_string()
        } else {
            format!("{:.1}%", 100.0 * c.passed as f64 / c.run as f64)
        };
        let _ = writeln!(
            out,
            "| {name} | {} | {} | {} | {} | {skipped} | {rate} | {} | {} | {} |",
            c.cases,
            c.run,
            c.passed,
            c.failed,
            c.celgo_run,
            c.celgo_passed,
            rate_of(c.celgo_passed, c.celgo_run)
        );
        total.celgo_run += c.celgo_run;
        total.celgo_passed += c.celgo_passed;
        total.cases += c.cases;
        total.run += c.run;
        total.passed += c.passed;
        total.failed += c.failed;
        for (k, v) in &c.skipped {
            *total.skipped.entry(k.clone()).or_default() += v;
        }
    }
    let skipped: usize = total.skipped.values().sum();
    let _ = writeln!(
        out,
        "| **total** | {} | {} | {} | {} | {skipped} | {:.1}% | {} | {} | {} |",
        total.cases,
        total.run,
        total.passed,
        total.failed,
        100.0 * total.passed as f64 / total.run.max(1) as f64,
        total.celgo_run,
        total.celgo_passed,
        rate_of(total.celgo_passed, total.celgo_run)
    );
    out.push_str("\nSkipped, by reason:\n\n| reason | cases |\n|---|---:|\n");
    for (reason, n) in &total.skipped {
        let _ = writeln!(out, "| {reason} | {n} |");
    }
    let _ = writeln!(
        out,
        "\nVariables bound through retainer's JSON conversion (`json_to_val`, as objects are): {}.",
        JSON_BOUND.load(std::sync::atomic::Ordering::Relaxed)
    );
    if !file_skips.is_empty() {
        out.push_str("\nWhole files skipped:\n\n");
        for (file, reason) in file_skips {
            let _ = writeln!(out, "- {file}: {reason}");
        }
    }
    out
}

#[test]
fn cel_conformance() {
    // The parser recurses once per nesting level and the suite nests deeply (parse.textproto);
    // the default test thread's stack is too small for a debug build.
    std::thread::Builder::new()
        .stack_size(512 << 20)
        .spawn(conformance)
        .expect("spawn the conformance thread")
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
}

fn conformance() {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("tests/cel-conformance")
        .map(|e| e.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    paths.sort();
    assert!(
        !paths.is_empty(),
        "no conformance files: run make cel-conformance"
    );

    let known = known_failures();
    let mut counts = BTreeMap::new();
    let mut file_skips = BTreeMap::new();
    let mut unexpected = Vec::new();
    let mut now_passing = Vec::new();
    let mut seen = BTreeSet::new();
    for path in &paths {
        let file: File = serde_json::from_str(
            &std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display())),
        )
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut c = Counts {
            cases: file.cases.len(),
            ..Counts::default()
        };
        let file_skip = FILE_SKIPS
            .iter()
            .find(|(n, _)| *n == file.name)
            .map(|(_, r)| r.to_string());
        if let Some(reason) = &file_skip {
            file_skips.insert(file.name.clone(), reason.clone());
        }
        for case in &file.cases {
            if !case.celgo.starts_with("skip") {
                c.celgo_run += 1;
                if case.celgo == "pass" {
                    c.celgo_passed += 1;
                }
            }
            let id = format!("{}/{}/{}", file.name, case.section, case.name);
            let outcome = match &file_skip {
                Some(reason) => Outcome::Skip(reason.clone()),
                // A panic inside the interpreter is a failure of that case, not of the run.
                None => std::panic::catch_unwind(|| {
                    if std::env::var_os("CEL_CONFORMANCE_TRACE").is_some() {
                        eprintln!("{id}");
                    }
                    run_case(case)
                })
                .unwrap_or_else(|_| Outcome::Fail("panicked".into())),
            };
            match outcome {
                Outcome::Skip(reason) => *c.skipped.entry(reason).or_default() += 1,
                Outcome::Pass => {
                    c.run += 1;
                    c.passed += 1;
                    if known.contains_key(&id) {
                        now_passing.push(id.clone());
                    }
                }
                Outcome::Fail(why) => {
                    c.run += 1;
                    c.failed += 1;
                    if known.contains_key(&id) {
                        c.known += 1;
                    } else {
                        unexpected.push(format!("{id} # {why} [{}]", case.expr));
                    }
                }
            }
            seen.insert(id);
        }
        counts.insert(file.name.clone(), c);
    }

    let rendered = table(&counts, &file_skips);
    println!("{rendered}");

    let stale: Vec<_> = known.keys().filter(|k| !seen.contains(*k)).collect();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/cel.md");
    let text = std::fs::read_to_string(&docs).unwrap_or_default();
    let write_docs = std::env::var_os("CEL_CONFORMANCE_WRITE_DOCS").is_some();
    if write_docs {
        let (before, after) = match (text.split_once(DOCS_BEGIN), text.split_once(DOCS_END)) {
            (Some((b, _)), Some((_, a))) => (b.to_string(), a.to_string()),
            _ => (text.clone(), String::new()),
        };
        let new = format!(
            "{before}{DOCS_BEGIN}\n{}\n{DOCS_END}{after}",
            rendered.trim()
        );
        std::fs::write(&docs, new).expect("write docs/cel.md");
    }
    assert!(
        unexpected.is_empty() && now_passing.is_empty() && stale.is_empty(),
        "\nfailures not in known-failures.txt ({}):\n{}\n\nlisted but passing now ({}): remove them:\n{}\n\nlisted but not in the suite: {stale:?}",
        unexpected.len(),
        unexpected.join("\n"),
        now_passing.len(),
        now_passing.join("\n"),
    );
    if !write_docs {
        let docs_table = text
            .split_once(DOCS_BEGIN)
            .and_then(|(_, rest)| rest.split_once(DOCS_END))
            .map(|(t, _)| t.trim().to_string());
        assert_eq!(
            docs_table.as_deref(),
            Some(rendered.trim()),
            "docs/cel.md's conformance table is out of date: rerun with CEL_CONFORMANCE_WRITE_DOCS=1"
        );
    }
}
