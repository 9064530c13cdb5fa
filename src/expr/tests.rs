use super::*;
use serde_json::json;

fn now() -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z").unwrap()
}

fn eval_with(field: Field, src: &str, obj: &serde_json::Value) -> Result<Value, EvalError> {
    // `dyn(...)` hides the result type from the static check, so any value can be looked at.
    let wrapped = format!("dyn({src})");
    let c = Compiled::compile(field, &wrapped).unwrap_or_else(|e| panic!("{src}: {e}"));
    let bound = project(obj, &c.fields);
    let refs = json!([{"apiVersion": "v1", "kind": "Pod", "namespace": "ns", "name": "p"}]);
    let refs_val = json_to_val(&refs);
    let vars = Vars {
        object: bound.as_ref(),
        now: now(),
        age: chrono::Duration::hours(2),
        group: Some("g1"),
        rank: Some(3),
        group_size: Some(7),
        referenced_by: Some(refs_val.as_ref()),
    };
    c.eval(&vars)
}

fn object() -> serde_json::Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": "job-1", "namespace": "ns", "labels": {"app": "web", "version": "1.10.0"},
                     "creationTimestamp": "2026-01-02T01:04:05Z"},
        "status": {"succeeded": 1},
        "spec": {"template": {"spec": {"containers": [{"image": "nginx:1.25"}]}}}
    })
}

#[test]
fn expressions_evaluate_as_kubernetes_users_expect() {
    let obj = object();
    let cases: &[(&str, Value)] = &[
        ("object.metadata.name", Value::from("job-1")),
        ("object.status.?succeeded.orValue(0) > 0", Value::Bool(true)),
        ("object.status.?failed.orValue(0) > 0", Value::Bool(false)),
        ("has(object.metadata.labels.app)", Value::Bool(true)),
        ("has(object.metadata.labels.missing)", Value::Bool(false)),
        ("object.metadata.labels['app'] == 'web'", Value::Bool(true)),
        (
            "rank < 5 && groupSize == 7 && group == 'g1'",
            Value::Bool(true),
        ),
        ("age < duration('3h')", Value::Bool(true)),
        ("age > duration('168h')", Value::Bool(false)),
        (
            "now - timestamp(object.metadata.creationTimestamp) == duration('2h')",
            Value::Bool(true),
        ),
        ("referencedBy.size()", Value::Int(1)),
        ("referencedBy[0].kind == 'Pod'", Value::Bool(true)),
        (
            "semver(object.metadata.labels.version).isGreaterThan(semver('1.9.1'))",
            Value::Bool(true),
        ),
        ("semver('1.10.0').compareTo(semver('1.9.1'))", Value::Int(1)),
        ("semver('v1.2', true).minor()", Value::Int(2)),
        ("semver('1.2.3').major()", Value::Int(1)),
        ("semver('1.2.3').patch()", Value::Int(3)),
        ("isSemver('1.2.3')", Value::Bool(true)),
        ("isSemver('v1.2')", Value::Bool(false)),
        ("isSemver('v1.2', true)", Value::Bool(true)),
        (
            "semver('1.2.3').isLessThan(semver('1.2.4'))",
            Value::Bool(true),
        ),
        ("[1, 2, 3].sum()", Value::Int(6)),
        ("[1.5, 2.5].sum()", Value::Float(4.0)),
        ("[].sum()", Value::Int(0)),
        ("[3, 1, 2].min()", Value::Int(1)),
        ("['b', 'c', 'a'].max()", Value::from("c")),
        ("[1, 2, 2].isSorted()", Value::Bool(true)),
        ("[2, 1].isSorted()", Value::Bool(false)),
        ("[1, 2, 1].indexOf(1)", Value::Int(0)),
        ("[1, 2, 1].lastIndexOf(1)", Value::Int(2)),
        ("'Hello'.lowerAscii()", Value::from("hello")),
        ("'a,b'.split(',').size()", Value::Int(2)),
        ("['a', 'b'].join('-')", Value::from("a-b")),
        ("'abc'.substring(1)", Value::from("bc")),
        ("'abc'.indexOf('c')", Value::Int(2)),
        ("'  x '.trim()", Value::from("x")),
        ("'a-b'.replace('-', '_')", Value::from("a_b")),
        (
            "object.metadata.name.matches('^job-[0-9]+$')",
            Value::Bool(true),
        ),
        (
            "object.spec.template.spec.containers.exists(c, c.image.startsWith('nginx'))",
            Value::Bool(true),
        ),
        (
            "object.spec.template.spec.containers.map(c, c.image)[0]",
            Value::from("nginx:1.25"),
        ),
    ];
    for (src, want) in cases {
        let got = eval_with(Field::Keep, src, &obj).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(&got, want, "{src}");
    }
}

#[test]
fn compile_errors_name_the_field_and_position() {
    let cases: &[(Field, &str, &str)] = &[
        (Field::Keep, "rank <", "spec.keep: syntax error at line 1"),
        (
            Field::Match,
            "object.status.succeeded > 0 &&",
            "spec.match: syntax error",
        ),
        (
            Field::Keep,
            "rank < 1 || foo",
            "spec.keep: undeclared reference to 'foo' at line 1, column 13",
        ),
        (
            Field::Match,
            "rank < 1",
            "spec.match: 'rank' at line 1, column 1 is only available in spec.keep",
        ),
        (
            Field::GroupBy,
            "referencedBy.size() > 0 ? 'a' : 'b'",
            "spec.groupBy: 'referencedBy'",
        ),
        (
            Field::GroupBy,
            "group",
            "spec.groupBy: 'group' at line 1, column 1 is only available",
        ),
        (
            Field::Keep,
            "1",
            "spec.keep: must evaluate to bool, but it is int",
        ),
        (
            Field::Keep,
            "'yes'",
            "spec.keep: must evaluate to bool, but it is string",
        ),
        (
            Field::GroupBy,
            "object.metadata.name == 'x'",
            "spec.groupBy: must evaluate to string, but it is bool",
        ),
        (
            Field::OrderBy,
            "[1]",
            "spec.orderBy: must evaluate to timestamp, int, double, string or semver, but it is list",
        ),
        (Field::Match, "rank", "spec.match: 'rank'"),
        (
            Field::Keep,
            "rank + 1",
            "spec.keep: must evaluate to bool, but it is int",
        ),
        (
            Field::Keep,
            "rank < 1 ? 'yes' : 'no'",
            "spec.keep: must evaluate to bool, but it is string",
        ),
        (
            Field::Keep,
            "now - age",
            "spec.keep: must evaluate to bool, but it is timestamp",
        ),
        (
            Field::OrderBy,
            "[1] + [2]",
            "spec.orderBy: must evaluate to timestamp, int, double, string or semver, but it is list",
        ),
        (
            Field::Keep,
            "object.metadata.name.split('').all(a, object.metadata.name.split('').all(b,\n  object.metadata.name.split('').exists(c, a + b + c == 'xyz')))",
            "spec.keep: macros such as all, exists, map and filter are nested 3 deep at line 2, column",
        ),
        (
            Field::Match,
            "[1].map(a, [2].map(b, [3].filter(c, c > a + b))).size() > 0",
            "spec.match: macros such as all, exists, map and filter are nested 3 deep",
        ),
        (
            Field::Keep,
            "lists.range(1000000).exists(i, i == rank)",
            "spec.keep: lists.range at line 1, column 12 needs a literal size of at most 1000",
        ),
        (
            Field::Keep,
            "lists.range(groupSize).exists(i, i == rank)",
            "spec.keep: lists.range at line 1, column 12 needs a literal size",
        ),
    ];
    for (field, src, want) in cases {
        let err = Compiled::compile(*field, src).expect_err(src).to_string();
        assert!(
            err.starts_with(want),
            "{src}: got {err:?}, want prefix {want:?}"
        );
    }
}

#[test]
fn macro_nesting_is_bounded_but_chaining_is_not() {
    let allowed = [
        "object.spec.template.spec.containers.exists(c, c.env.exists(e, e.name == 'X'))",
        "object.metadata.labels.filter(k, k.startsWith('a')).map(k, k + 'x').filter(k, k.size() > 1).exists(k, k == 'ax')",
        "[1, 2].map(a, [3].map(b, a + b)).map(l, l.filter(x, x > 3)).size() > 0",
        "lists.range(1000).exists(i, i == 999)",
    ];
    for src in allowed {
        Compiled::compile(Field::Match, src).unwrap_or_else(|e| panic!("{src}: {e}"));
    }
}

#[test]
fn declared_variables_are_checked_with_the_types_of_their_values() {
    let int = Value::Int(1);
    let ints = Value::List(Arc::new(vec![Value::Int(1), Value::Int(2)]));
    let mixed = Value::List(Arc::new(vec![Value::Int(1), Value::from("a")]));
    let compile = |src: &str, vars: &[(&str, Option<&Value>)]| {
        Compiled::compile_declared(src, vars).map_err(|e| format!("{src}: {e}"))
    };
    // No field, so no result type is required.
    compile("x + 1", &[("x", Some(&int))]).unwrap();
    compile("x + 'a'", &[("x", None)]).unwrap();
    compile("l[0] + 'a'", &[("l", Some(&mixed))]).unwrap();
    for (src, vars) in [
        ("x + 'a'", &[("x", Some(&int))]),
        ("l[0] + 'a'", &[("l", Some(&ints))]),
    ] {
        let err = Compiled::compile_declared(src, vars).unwrap_err();
        assert!(
            matches!(err, CompileError::TypeCheck { .. }),
            "{src}: {err}"
        );
    }
    // The declared variables replace a policy's.
    let err = Compiled::compile_declared("object.x", &[]).unwrap_err();
    assert!(
        matches!(err, CompileError::UndeclaredReference { .. }),
        "{err}"
    );
}

#[test]
fn runtime_type_errors_are_errors_not_verdicts() {
    let obj = object();
    let c = Compiled::compile(Field::Keep, "object.metadata.name").unwrap();
    let bound = project(&obj, &c.fields);
    let vars = Vars {
        object: bound.as_ref(),
        now: now(),
        age: chrono::Duration::zero(),
        group: None,
        rank: None,
        group_size: None,
        referenced_by: None,
    };
    let err = c.eval_keep(&vars).unwrap_err().to_string();
    assert_eq!(err, "spec.keep: must evaluate to bool, got string");
}

#[test]
fn keep_reports_the_term_that_held() {
    let obj = object();
    let c = Compiled::compile(
        Field::Keep,
        "rank < 1 || (age < duration('1h') || group == 'g1') || referencedBy.size() > 0",
    )
    .unwrap();
    let bound = project(&obj, &c.fields);
    let empty = json!([]);
    let empty_val = json_to_val(&empty);
    let mk = |rank| Vars {
        object: bound.as_ref(),
        now: now(),
        age: chrono::Duration::hours(2),
        group: Some("g1"),
        rank: Some(rank),
        group_size: Some(1),
        referenced_by: Some(empty_val.as_ref()),
    };
    assert_eq!(c.eval_keep(&mk(0)).unwrap().as_deref(), Some("rank < 1"));
    assert_eq!(
        c.eval_keep(&mk(4)).unwrap().as_deref(),
        Some("(age < duration('1h') || group == 'g1')")
    );
    // A failing term does not matter when another holds, as with CEL's own `||`.
    let c = Compiled::compile(Field::Keep, "object.missing.field > 1 || rank < 1").unwrap();
    let bound = project(&obj, &c.fields);
    let vars = Vars {
        object: bound.as_ref(),
        now: now(),
        age: chrono::Duration::zero(),
        group: None,
        rank: Some(0),
        group_size: None,
        referenced_by: None,
    };
    assert_eq!(c.eval_keep(&vars).unwrap().as_deref(), Some("rank < 1"));
    let vars = Vars {
        rank: Some(2),
        ..vars
    };
    assert!(c.eval_keep(&vars).is_err());
}

/// The text of each top-level `||` term of keep, as the user wrote it.
fn terms(src: &str) -> Vec<String> {
    let c = Compiled::compile(Field::Keep, src).unwrap_or_else(|e| panic!("{src}: {e}"));
    c.terms.iter().map(|(t, _)| t.clone()).collect()
}

#[test]
fn keep_terms_follow_the_parsed_expression() {
    let none: Vec<&str> = Vec::new();
    for (src, want) in [
        (
            "rank < 1 || age < duration('1h')",
            vec!["rank < 1", "age < duration('1h')"],
        ),
        (
            "(rank < 1 || rank > 5) || group == 'a'",
            vec!["(rank < 1 || rank > 5)", "group == 'a'"],
        ),
        ("(rank < 1 || rank > 5)", vec!["rank < 1", "rank > 5"]),
        (
            "group == '||' || [rank < 1 || rank > 2].size() == 1",
            vec!["group == '||'", "[rank < 1 || rank > 2].size() == 1"],
        ),
        (
            r#"group == "a\"||" || rank < 1"#,
            vec![r#"group == "a\"||""#, "rank < 1"],
        ),
        // ?: binds more loosely than ||: one term, not `(c ? false : rank < 3) || ...`.
        (
            "group == 'c' ? false : rank < 3 || age < duration('1h')",
            none.clone(),
        ),
        (
            "(group == 'c' ? false : rank < 3) || age < duration('1h')",
            vec!["(group == 'c' ? false : rank < 3)", "age < duration('1h')"],
        ),
        (
            "rank < 1 && group == 'a' || !(rank > 3)",
            vec!["rank < 1 && group == 'a'", "!(rank > 3)"],
        ),
        ("rank < 1 && (group == 'a' || rank > 3)", none.clone()),
        (
            "(rank + 1) * 2 > 3 || [1, 2].exists(x, x == rank) || referencedBy.size() > 0",
            vec![
                "(rank + 1) * 2 > 3",
                "[1, 2].exists(x, x == rank)",
                "referencedBy.size() > 0",
            ],
        ),
        (
            "object.metadata.labels['a'] == 'b' || has(object.status.x) || {'k': 1}['k'] == rank",
            vec![
                "object.metadata.labels['a'] == 'b'",
                "has(object.status.x)",
                "{'k': 1}['k'] == rank",
            ],
        ),
        (
            "object.status.?succeeded.orValue(0) == 0 || ((rank)) < 2 || rank < 3 || rank < 4",
            vec![
                "object.status.?succeeded.orValue(0) == 0",
                "((rank)) < 2",
                "rank < 3",
                "rank < 4",
            ],
        ),
        ("'é' == group || rank < 1", vec!["'é' == group", "rank < 1"]),
        ("single", none.clone()),
    ] {
        let src = src.replace("single", "rank < 1");
        assert_eq!(terms(&src), want, "{src}");
    }
}

#[test]
fn only_read_fields_are_bound() {
    let c = Compiled::compile(
        Field::Keep,
        "object.metadata.labels['app'] == 'web' && has(object.status.succeeded)",
    )
    .unwrap();
    let mut want = FieldTree::default();
    want.insert(&["metadata".into(), "labels".into(), "app".into()]);
    want.insert(&["status".into(), "succeeded".into()]);
    assert_eq!(c.fields, want);
    // A computed index binds the enclosing map whole.
    let c = Compiled::compile(Field::Keep, "object.metadata.labels[group] == 'x'").unwrap();
    let mut want = FieldTree::default();
    want.insert(&["metadata".into(), "labels".into()]);
    assert_eq!(c.fields, want);
    // `object` used whole binds everything.
    let c = Compiled::compile(Field::Keep, "size(object) > 0").unwrap();
    assert!(c.fields.is_whole());
}

/// A random keep expression over `?:`, `!`, `&&`, `||`, brackets and a macro, written without
/// the brackets precedence would need, so that the parser's precedence decides its meaning.
fn random_keep(rng: &mut impl rand::Rng, depth: u32) -> String {
    const ATOMS: &[&str] = &[
        "true",
        "false",
        "rank < 2",
        "rank == 0",
        "group == 'g1'",
        "age < duration('1h')",
        "[1, 2, 3].exists(x, x == rank)",
        "object.metadata.labels['app'] == 'web'",
        // Errors: a missing key, a division by zero, and a value that is not a bool (`dyn`
        // hides its type from the type checker, as a field of the object would).
        "object.missing.field == 1",
        "1 / (rank - rank) == 1",
        "dyn(rank)",
    ];
    if depth == 0 || rng.random_ratio(1, 4) {
        return ATOMS[rng.random_range(0..ATOMS.len())].to_string();
    }
    let mut sub = || random_keep(rng, depth - 1);
    let (a, b) = (sub(), sub());
    match rng.random_range(0..6) {
        0 => format!("!{a}"),
        1 => format!("{a} && {b}"),
        2 | 3 => format!("{a} || {b}"),
        4 => {
            let c = random_keep(rng, depth - 1);
            format!("{a} ? {b} : {c}")
        }
        _ => format!("({a})"),
    }
}

#[test]
fn keep_terms_decide_as_the_whole_expression() {
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(13);
    let obj = object();
    let (mut compared, mut with_terms) = (0, 0);
    for _ in 0..4000 {
        let src = random_keep(&mut rng, 4);
        // The static checks refuse some random texts (a result that is not a bool): not the
        // subject here.
        let Ok(c) = Compiled::compile(Field::Keep, &src) else {
            continue;
        };
        with_terms += usize::from(!c.terms.is_empty());
        let bound = project(&obj, &c.fields);
        let refs = json!([]);
        let refs_val = json_to_val(&refs);
        for rank in 0..3 {
            for (group, hours) in [("g1", 0), ("g2", 2)] {
                let vars = Vars {
                    object: bound.as_ref(),
                    now: now(),
                    age: chrono::Duration::hours(hours),
                    group: Some(group),
                    rank: Some(rank),
                    group_size: Some(3),
                    referenced_by: Some(refs_val.as_ref()),
                };
                let whole = match c.eval(&vars) {
                    Ok(Value::Bool(b)) => Some(b),
                    _ => None,
                };
                let keep = c.eval_keep(&vars);
                let split = match &keep {
                    Ok(held) => Some(held.is_some()),
                    Err(_) => None,
                };
                assert_eq!(
                    split, whole,
                    "{src} with rank {rank}, group {group}: {keep:?}"
                );
                // The term a reason names holds on its own.
                if let Ok(Some(term)) = &keep
                    && !c.terms.is_empty()
                {
                    let t = Compiled::compile(Field::Keep, term)
                        .unwrap_or_else(|e| panic!("term {term} of {src}: {e}"));
                    let tb = project(&obj, &t.fields);
                    let tv = Vars {
                        object: tb.as_ref(),
                        ..vars
                    };
                    assert_eq!(t.eval_bool(&tv).ok(), Some(true), "term {term} of {src}");
                }
                compared += 1;
            }
        }
    }
    assert!(compared > 10_000, "only {compared} evaluations compared");
    assert!(with_terms > 500, "only {with_terms} expressions had terms");
}

#[test]
fn error_messages_do_not_depend_on_hash_order() {
    let mut obj = object();
    let labels: serde_json::Map<String, serde_json::Value> = (0..12)
        .map(|i| (format!("label-{i:02}"), json!(format!("v{i}"))))
        .collect();
    obj["metadata"]["labels"] = serde_json::Value::Object(labels);
    let mut seen = BTreeSet::new();
    for src in [
        "object.metadata.labels + 1 > 0",
        "object.metadata.labels < object.metadata.labels",
        "object.metadata.labels || rank < 1",
    ] {
        let c = Compiled::compile(Field::Keep, src).unwrap_or_else(|e| panic!("{src}: {e}"));
        seen.clear();
        // Each binding builds its maps afresh, each with its own hash order.
        for _ in 0..10 {
            let bound = project(&obj, &c.fields);
            let vars = Vars {
                object: bound.as_ref(),
                now: now(),
                age: chrono::Duration::zero(),
                group: None,
                rank: Some(3),
                group_size: None,
                referenced_by: None,
            };
            seen.insert(c.eval_keep(&vars).unwrap_err().to_string());
        }
        assert_eq!(seen.len(), 1, "{src}: {seen:?}");
    }
    let v = eval_with(
        Field::Keep,
        "{'b': dyn([1, 2, 3, 4, 5, 6, 7]), 'a': dyn({'x': 'y'}), 'c': dyn(null)}",
        &obj,
    )
    .unwrap();
    assert_eq!(
        message::show(&v),
        r#"{"a": {"x": "y"}, "b": [1, 2, 3, 4, 5, …], "c": null}"#
    );
    let long = eval_with(Field::Keep, "dyn('x') * 1", &obj);
    assert!(long.is_err());
    let long = Value::String(std::sync::Arc::new("x".repeat(200)));
    assert_eq!(message::show(&long).chars().count(), 80);
}

#[test]
fn chains_too_deep_for_the_stack_are_refused_not_crashed_on() {
    // Thousands of chained operators overflow the interpreter's stack when evaluated; tens of
    // thousands overflow the parser's.
    for terms in [MAX_DEPTH + 1, 3_000, 12_000] {
        let src = format!("{} == 0", vec!["1"; terms].join("+"));
        let err = Compiled::compile(Field::Keep, &src).unwrap_err();
        assert!(
            matches!(err, CompileError::TooNested { .. }),
            "{terms}: {err}"
        );
    }
    let src = format!("{} == 0", vec!["1"; 100].join(" + "));
    assert!(Compiled::compile(Field::Keep, &src).is_ok());
    // Brackets flatten a chain: the same sum in groups of ten stays shallow.
    let group = format!("({})", ["1"; 10].join(" + "));
    let src = format!("{} == 0", vec![group.as_str(); 100].join(" + "));
    assert!(Compiled::compile(Field::Keep, &src).is_ok());
    let long = format!("'{}' == ''", "x".repeat(MAX_SOURCE_CHARS));
    assert!(matches!(
        Compiled::compile(Field::Keep, &long),
        Err(CompileError::TooLong { .. })
    ));
}

#[test]
fn reads_time_sees_now_and_age_anywhere_in_the_expression() {
    let reads = |field: Field, src: &str| Compiled::compile(field, src).unwrap().reads_time();
    assert!(reads(Field::Keep, "rank < 1 || age < duration('1h')"));
    assert!(reads(
        Field::Match,
        "object.metadata.labels.all(k, now > timestamp('2026-01-01T00:00:00Z'))"
    ));
    assert!(reads(
        Field::OrderBy,
        "now - timestamp(object.metadata.creationTimestamp)"
    ));
    assert!(!reads(Field::Keep, "rank < 3 || referencedBy.size() > 0"));
    assert!(!reads(Field::GroupBy, "object.metadata.labels['app']"));
    // A field named `age` is not the variable.
    assert!(!reads(
        Field::Match,
        "object.metadata.?age.orValue('') == ''"
    ));
}

/// The ages at which keep's value can change with the clock alone, or None when the clock is
/// read in a way that can change it at any instant.
#[test]
fn age_thresholds_are_the_ages_where_comparisons_change() {
    let h = |n: i64| chrono::Duration::hours(n);
    let ns = chrono::Duration::nanoseconds(1);
    let cases: &[(&str, Option<Vec<chrono::Duration>>)] = &[
        ("rank < 1 || age < duration('3h')", Some(vec![h(3)])),
        ("age >= duration('3h') && rank > 2", Some(vec![h(3)])),
        ("duration('3h') > age", Some(vec![h(3)])),
        ("age <= duration('3h')", Some(vec![h(3) + ns])),
        ("duration('1h') < age", Some(vec![h(1) + ns])),
        ("age == duration('1h')", Some(vec![h(1), h(1) + ns])),
        (
            "age < duration('1h') + duration('1h') || age < duration('2h')",
            Some(vec![h(2)]),
        ),
        (
            "object.metadata.labels.exists(k, k == 'x' && age > duration('1h'))",
            Some(vec![h(1) + ns]),
        ),
        ("rank < 3 || referencedBy.size() > 0", Some(vec![])),
        ("now > timestamp('2026-01-01T00:00:00Z')", None),
        ("age.getHours() < 3", None),
        ("age < duration(string(rank) + 'h')", None),
        ("age + duration('1h') < duration('3h')", None),
        ("[1].all(age, age > 0)", None),
        (
            "object.metadata.labels.all(k, v, k == 'now') || age < duration('1h')",
            Some(vec![h(1)]),
        ),
    ];
    for (src, want) in cases {
        let c = Compiled::compile(Field::Keep, src).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(&c.age_thresholds(), want, "{src}");
    }
}

/// Folding (fold.rs) changes when constant calls run, never what an expression answers: each
/// row holds constants that fold, constants mixed with variables, and calls that fail, which
/// are left to fail at evaluation with their usual message.
#[test]
fn folded_constants_answer_as_unfolded() {
    let obj = object();
    let cases: &[(&str, Result<Value, &str>)] = &[
        ("age < duration('24h')", Ok(Value::Bool(true))),
        (
            "age > duration('1h') + duration('30m')",
            Ok(Value::Bool(true)),
        ),
        (
            "now > timestamp('2026-01-01T00:00:00Z')",
            Ok(Value::Bool(true)),
        ),
        (
            "semver(object.metadata.labels.version).isGreaterThan(semver('1.9.0'))",
            Ok(Value::Bool(true)),
        ),
        (
            "object.metadata.labels.app in ['web', 'api']",
            Ok(Value::Bool(true)),
        ),
        (
            "[1, 2, 3].exists(x, x == object.status.succeeded)",
            Ok(Value::Bool(true)),
        ),
        (
            "object.metadata.name.matches('^job-[0-9]+$')",
            Ok(Value::Bool(true)),
        ),
        (
            "matches(object.metadata.name, 'web')",
            Ok(Value::Bool(false)),
        ),
        // RE2, as Kubernetes reads patterns: \d is ASCII only.
        ("'١٢٣'.matches('^\\\\d+$')", Ok(Value::Bool(false))),
        ("duration(object.metadata.name) > age", Err("duration")),
        ("1 / 0 == 1", Err("division by zero")),
        // A literal invalid pattern is refused at compile time; one that is constant only
        // after folding fails when evaluated, folded or not.
        ("object.metadata.name.matches(dyn('('))", Err("regex")),
        ("object.status.succeeded.matches('1')", Err("matches")),
    ];
    for (src, want) in cases {
        let got = eval_with(Field::Keep, src, &obj);
        match (want, &got) {
            (Ok(w), Ok(g)) => assert_eq!(g, w, "{src}"),
            (Err(part), Err(e)) => {
                let msg = e.to_string().to_lowercase();
                assert!(msg.contains(part), "{src}: {msg}");
                assert!(!msg.contains("@"), "{src}: a rewritten name leaks: {msg}");
            }
            _ => panic!("{src}: want {want:?}, got {got:?}"),
        }
    }
}

/// A comprehension over a list of the object binds only what its body reads of each element,
/// and answers as over the whole object; any other read of the list, or of the element whole,
/// binds it whole.
#[test]
fn comprehensions_bind_only_what_they_read_of_each_element() {
    let obj = json!({
        "metadata": {"name": "j", "labels": {"app": "web", "tier": "1"}},
        "spec": {"containers": [
            {"name": "a", "image": "rancher/fleet:v0.12.4", "env": [{"name": "HOME", "value": "/"}]},
            {"name": "b", "image": "nginx:1.25", "args": ["x"]}
        ]}
    });
    let cases: &[(&str, bool, Value)] = &[
        (
            "object.spec.containers.exists(c, c.image.startsWith('rancher/'))",
            false,
            Value::Bool(true),
        ),
        (
            "object.spec.containers.all(c, c.name != '' && has(c.image))",
            false,
            Value::Bool(true),
        ),
        // b has no env: its error is absorbed by a's true, on both bindings.
        (
            "object.spec.containers.exists(c, c.env.exists(e, e.name == 'HOME'))",
            false,
            Value::Bool(true),
        ),
        (
            "object.spec.containers.exists(c, has(c.env) && c.env.exists(e, e.name == 'HOME'))",
            false,
            Value::Bool(true),
        ),
        (
            "object.spec.containers.map(c, c.name) == ['a', 'b']",
            false,
            Value::Bool(true),
        ),
        (
            "object.spec.containers.exists(c, c.name == object.metadata.name)",
            false,
            Value::Bool(false),
        ),
        (
            "object.spec.containers.exists(c, size(c) == 3)",
            false, // each element whole, the list itself not
            Value::Bool(true),
        ),
        (
            "object.spec.containers.exists(c, c.image != '') && size(object.spec.containers) == 2",
            true,
            Value::Bool(true),
        ),
        (
            "object.metadata.labels.exists(k, k == 'tier')",
            false, // iterated: project binds a map with `each` whole
            Value::Bool(true),
        ),
        (
            "object.metadata.labels.all(k, object.metadata.labels[k] != '')",
            true, // a computed index reads the map whole
            Value::Bool(true),
        ),
    ];
    for (src, whole_list, want) in cases {
        let c = Compiled::compile(Field::Keep, src).unwrap_or_else(|e| panic!("{src}: {e}"));
        let projected = project(&obj, &c.fields);
        let whole = json_to_val(&obj);
        for (what, bound) in [("projected", projected.as_ref()), ("whole", whole.as_ref())] {
            let vars = Vars {
                object: bound,
                now: now(),
                age: chrono::Duration::hours(2),
                group: None,
                rank: Some(0),
                group_size: Some(1),
                referenced_by: None,
            };
            assert_eq!(
                &c.eval(&vars).unwrap_or_else(|e| panic!("{src}: {e}")),
                want,
                "{src} ({what})"
            );
        }
        let mut whole_tree = FieldTree::default();
        whole_tree.insert(&["spec".into(), "containers".into()]);
        whole_tree.insert(&["metadata".into(), "labels".into()]);
        let node = |t: &FieldTree, a: &str, b: &str| t.child(a).and_then(|s| s.child(b)).cloned();
        let list_whole = node(&c.fields, "spec", "containers")
            == node(&whole_tree, "spec", "containers")
            || node(&c.fields, "metadata", "labels") == node(&whole_tree, "metadata", "labels");
        assert_eq!(list_whole, *whole_list, "{src}: {:?}", c.fields);
    }
}

/// `duration()` and `timestamp()` of a string accept, refuse and mean what kube-apiserver's
/// environment does (Go's `time.ParseDuration` and `time.Parse(time.RFC3339, ...)`): the
/// "parsing" sections of tests/k8s-cel-library, whose expected values cel-go computed. Each
/// case runs as written (a literal, checked at compile time) and on a string read from the
/// object (checked when evaluated), and must refuse or answer the same either way.
#[test]
fn durations_and_timestamps_parse_as_go_does() {
    let expected: serde_json::Value =
        serde_json::from_str(include_str!("../../tests/k8s-cel-library/expected.json")).unwrap();
    let mut compared = 0;
    for case in expected["cases"].as_array().unwrap() {
        if !case["section"].as_str().unwrap().starts_with("parsing:") {
            continue;
        }
        let src = case["expr"].as_str().unwrap();
        // `duration('…')` → the function and the text between the quotes.
        let (func, rest) = src.split_once("('").unwrap();
        let text = rest.strip_suffix("')").unwrap();
        let want: Option<Value> = if let Some(d) = case["value"].get("duration") {
            Some(Value::Duration(
                chrono::Duration::seconds(d["seconds"].as_i64().unwrap())
                    + chrono::Duration::nanoseconds(d["nanos"].as_i64().unwrap()),
            ))
        } else if let Some(t) = case["value"].get("timestamp") {
            Some(Value::Timestamp(
                chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap()).unwrap(),
            ))
        } else {
            assert!(
                case.get("error").is_some(),
                "{src}: neither value nor error"
            );
            None
        };
        let literal = Compiled::compile(Field::Keep, &format!("[{src}][0] == {src}"));
        match (&want, &literal) {
            (Some(_), Err(e)) => panic!("{src}: cel-go accepts it, retainer refuses: {e}"),
            (None, Ok(_)) => panic!("{src}: cel-go refuses it at compile time, retainer accepts"),
            (None, Err(e)) => assert!(
                matches!(e, CompileError::InvalidLiteral { .. }),
                "{src}: {e}"
            ),
            (Some(_), Ok(_)) => {
                let got = eval_with(Field::Keep, src, &object());
                assert_eq!(got.as_ref().ok(), want.as_ref(), "{src}");
            }
        }
        let obj = json!({"metadata": {"annotations": {"t": text}}});
        let got = eval_with(
            Field::Keep,
            &format!("{func}(object.metadata.annotations.t)"),
            &obj,
        );
        match (&want, &got) {
            (Some(w), Ok(g)) => {
                assert_eq!(g, w, "{src} read from the object");
                // The same instant in the same offset, not only an equal one.
                if let (Value::Timestamp(g), Some(t)) = (g, case["value"].get("timestamp")) {
                    assert_eq!(
                        g.to_utc().to_rfc3339(),
                        chrono::DateTime::parse_from_rfc3339(t.as_str().unwrap())
                            .unwrap()
                            .to_utc()
                            .to_rfc3339(),
                        "{src}"
                    );
                }
            }
            (None, Err(_)) => {}
            _ => panic!("{src} read from the object: want {want:?}, got {got:?}"),
        }
        compared += 1;
    }
    assert!(compared >= 80, "only {compared} cases compared");
}

/// Expressions from a small grammar of constants, variables and the operators folding meets
/// most: `==`, `!=`, `<`, `+`, `size`, `type`, lists and `?:`.
fn small_expr() -> impl proptest::strategy::Strategy<Value = String> {
    use proptest::prelude::*;
    let leaf = prop_oneof![
        (-2i64..3).prop_map(|n| n.to_string()),
        Just("'a'".to_string()),
        Just("''".to_string()),
        Just("true".to_string()),
        Just("false".to_string()),
        Just("[]".to_string()),
        Just("int".to_string()),
        Just("string".to_string()),
        Just("bool".to_string()),
        Just("list".to_string()),
        Just("rank".to_string()),
        Just("group".to_string()),
        Just("object.status.succeeded".to_string()),
    ];
    leaf.prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("[{a}, {b}]")),
            inner.clone().prop_map(|a| format!("[{a}]")),
            inner.clone().prop_map(|a| format!("type({a})")),
            inner.clone().prop_map(|a| format!("size({a})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} == {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} != {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} < {b})")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a} + {b})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(a, b, c)| format!("({a} ? {b} : {c})")),
        ]
    })
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(3000))]

    /// Folding decides when constant parts are computed, never what an expression answers:
    /// the tree as parsed and the folded tree give the same value, or both fail.
    #[test]
    fn folding_never_changes_an_answer(src in small_expr()) {
        // Parsed only: most random texts are ill-typed, and the type checker would refuse
        // them, but folding must hold on every tree it is given.
        let wrapped = format!("[{src}][0]");
        let program = parse(Field::Keep, &wrapped).unwrap_or_else(|e| panic!("{src}: {e}"));
        let mut fields = FieldTree::default();
        collect_object_paths(program.expression(), &mut fields);
        let no_selects = Default::default();
        let folded_tree = fold::Folded::new(program.expression(), &no_selects);
        let unfolded_tree = fold::Folded::unfolded(program.expression(), &no_selects);
        let obj = object();
        let bound = project(&obj, &fields);
        let vars = Vars {
            object: bound.as_ref(),
            now: now(),
            age: chrono::Duration::hours(2),
            group: Some("g1"),
            rank: Some(1),
            group_size: Some(7),
            referenced_by: None,
        };
        let resolver = folded_tree.resolver(&vars);
        let mut folded_ctx = Context::with_env(env());
        folded_ctx.set_variable_resolver(&resolver);
        let folded = Value::resolve(&folded_tree.expr, &folded_ctx).ok();
        let unfolded_resolver = unfolded_tree.resolver(&vars);
        let mut ctx = Context::with_env(env());
        ctx.set_variable_resolver(&unfolded_resolver);
        let unfolded = Value::resolve(&unfolded_tree.expr, &ctx).ok();
        proptest::prop_assert_eq!(folded, unfolded, "{}", src);
    }
}

/// The cases that made folding change answers: type values folded into their names.
#[test]
fn type_values_are_not_folded_into_strings() {
    let obj = object();
    let cases: &[(&str, Value)] = &[
        ("type(1) == int", Value::Bool(true)),
        ("type(1) == type(2)", Value::Bool(true)),
        (
            "type(object.status.succeeded) == type(1)",
            Value::Bool(true),
        ),
        ("type('a') == string", Value::Bool(true)),
        ("dyn(type(1)) == 'int'", Value::Bool(false)),
        ("[type(1)][0] == int", Value::Bool(true)),
        ("type([1]) == list", Value::Bool(true)),
    ];
    for (src, want) in cases {
        assert_eq!(
            eval_with(Field::Keep, src, &obj).as_ref(),
            Ok(want),
            "{src}"
        );
    }
}

/// The quantity, ip and cidr functions on values read from the object, which folding cannot
/// compute at compile time: each answers as the same call on constants (tests/cel_k8s_library.rs
/// compares those with kube-apiserver).
#[test]
fn value_libraries_work_on_object_data() {
    let obj = json!({
        "spec": {"memory": "1.5Gi", "cpu": "250m", "count": 3, "bad": "1KB",
                 "ip": "10.1.2.3", "ip6": "2001:DB8::1", "net": "10.0.0.0/8", "mapped": "::ffff:1.2.3.4"}
    });
    let cases: &[(&str, &str)] = &[
        ("quantity(object.spec.memory)", "quantity('1.5Gi')"),
        // Kept as a big decimal (a binary suffix with a fraction), so no integer, as in Kubernetes.
        ("quantity(object.spec.memory).isInteger()", "false"),
        (
            "quantity(object.spec.memory).compareTo(quantity('1536Mi'))",
            "0",
        ),
        (
            "quantity(object.spec.memory).isGreaterThan(quantity('1G'))",
            "true",
        ),
        (
            "quantity(object.spec.cpu).add(object.spec.count).asApproximateFloat()",
            "3.25",
        ),
        ("quantity(object.spec.cpu).isInteger()", "false"),
        ("sign(quantity(object.spec.cpu).sub(quantity('1')))", "-1"),
        ("quantity(object.spec.cpu) == quantity('0.25')", "true"),
        ("isQuantity(object.spec.bad)", "false"),
        ("ip(object.spec.ip)", "ip('10.1.2.3')"),
        ("string(ip(object.spec.ip6))", "'2001:db8::1'"),
        ("ip.isCanonical(object.spec.ip6)", "false"),
        ("ip(object.spec.ip6).family()", "6"),
        ("cidr(object.spec.net).containsIP(object.spec.ip)", "true"),
        (
            "cidr(object.spec.net).containsIP(ip(object.spec.ip))",
            "true",
        ),
        (
            "cidr(object.spec.ip + '/24').masked()",
            "cidr('10.1.2.0/24')",
        ),
        ("isIP(object.spec.mapped)", "false"),
    ];
    for (from_object, constant) in cases {
        let got = eval_with(Field::Keep, from_object, &obj)
            .unwrap_or_else(|e| panic!("{from_object}: {e}"));
        let want =
            eval_with(Field::Keep, constant, &obj).unwrap_or_else(|e| panic!("{constant}: {e}"));
        assert_eq!(got, want, "{from_object}");
    }
    for failing in [
        "quantity(object.spec.bad)",
        "ip(object.spec.mapped)",
        "cidr(object.spec.ip)",
        "quantity(object.spec.count)",
    ] {
        assert!(eval_with(Field::Keep, failing, &obj).is_err(), "{failing}");
    }
}

/// The url and format libraries and transformMapEntry on strings and maps read from the object
/// at run time, where nothing can be folded at compile time.
#[test]
fn url_and_format_libraries_work_on_object_data() {
    let obj = json!({
        "metadata": {"name": "web-1", "labels": {"app": "web", "Bad Key": "x"}},
        "spec": {"endpoint": "HTTPS://user@[2001:db8::1]:8443/a b?tag=v1&tag=v2;x#top",
                 "relative": "registry/repo", "id": "123e4567-e89b-12d3-a456-426614174000",
                 "day": "2025-02-29"}
    });
    let cases: &[(&str, &str)] = &[
        ("url(object.spec.endpoint).getScheme()", "'https'"),
        ("url(object.spec.endpoint).getHostname()", "'2001:db8::1'"),
        ("url(object.spec.endpoint).getPort()", "'8443'"),
        ("url(object.spec.endpoint).getEscapedPath()", "'/a%20b'"),
        // `tag=v2;x` holds a semicolon, so ParseQuery drops it.
        ("url(object.spec.endpoint).getQuery()", "{'tag': ['v1']}"),
        (
            "url(object.spec.endpoint) == url('https://user@[2001:db8::1]:8443/a%20b?tag=v1&tag=v2;x#top')",
            "true",
        ),
        ("isURL(object.spec.relative)", "false"),
        (
            "format.dns1123Label().validate(object.metadata.name).hasValue()",
            "false",
        ),
        ("format.uuid().validate(object.spec.id)", "optional.none()"),
        (
            "format.date().validate(object.spec.day)",
            "optional.of(['invalid date'])",
        ),
        (
            "format.named('labelValue').value().validate(object.metadata.labels.app).hasValue()",
            "false",
        ),
        (
            "object.metadata.labels.transformMapEntry(k, v, format.qualifiedName().validate(k).hasValue(), {k: v})",
            "{'Bad Key': 'x'}",
        ),
    ];
    for (from_object, constant) in cases {
        let got = eval_with(Field::Keep, from_object, &obj)
            .unwrap_or_else(|e| panic!("{from_object}: {e}"));
        let want =
            eval_with(Field::Keep, constant, &obj).unwrap_or_else(|e| panic!("{constant}: {e}"));
        assert_eq!(got, want, "{from_object}");
    }
    for failing in [
        "url(object.spec.relative)",
        "url(object.metadata).getHost()",
        "object.metadata.labels.transformMapEntry(k, v, {'same': v})",
    ] {
        assert!(eval_with(Field::Keep, failing, &obj).is_err(), "{failing}");
    }
}
