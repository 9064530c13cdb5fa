//! Property-based fuzzing of everything a user or a cluster can feed the pure core: policy
//! specs, CEL expressions (grammar-shaped and random), objects of any shape, and `check`'s input
//! files, and what a hostile or broken registry can send the OCI client (`Link`,
//! `WWW-Authenticate`, `Docker-Content-Digest` and `Retry-After` headers, list pages and
//! manifests). Properties: nothing panics; bad input is an error, never a crash; the summary
//! adds up; and the guards hold whatever the expressions say (an object labelled
//! `retainer.dev/keep=true`, a Job that has not finished, or an object being deleted is never a
//! candidate).
//!
//! `cargo test --test fuzz` runs a quick round. A long run, for `make soak`:
//! `RETAINER_FUZZ_SECS=600 cargo test --release --test fuzz -- --nocapture`, which keeps
//! generating new cases until the time is up and prints how many it tried.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use retainer::api::{PolicyView, RetentionPolicySpec};
use retainer::engine::incremental::{Changes, IncrementalEvaluation, ObjectChange, World};
use retainer::engine::{CompiledPolicy, ObjectId, Snapshot, Verdict, evaluate_within};
use retainer::expr::{Compiled, Field};
use retainer::oci::client::{
    index_digests, next_link, page_names, parse_challenges, parse_retry_after, valid_digest,
};
use retainer::oci::inventory::{ChartInfo, subject_of_tag};
use retainer::refs::RefIndex;
use serde_json::{Value as Json, json};

const NOW: &str = "2026-06-01T12:00:00Z";

/// Pieces of CEL that policies are made of; concatenated at random they make expressions that
/// are often valid, sometimes subtly not.
fn cel_atom() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("object".to_string()),
        Just("object.metadata.name".to_string()),
        Just("object.metadata.labels".to_string()),
        Just("object.metadata.labels['app']".to_string()),
        Just("object.metadata.?labels.app.orValue('x')".to_string()),
        Just("object.status.?succeeded.orValue(0)".to_string()),
        Just("object.tags".to_string()),
        Just("object.metadata.creationTimestamp".to_string()),
        Just("timestamp(object.metadata.creationTimestamp)".to_string()),
        Just("now".to_string()),
        Just("age".to_string()),
        Just("rank".to_string()),
        Just("groupSize".to_string()),
        Just("group".to_string()),
        Just("referencedBy".to_string()),
        Just("referencedBy.size()".to_string()),
        Just("duration('1h')".to_string()),
        Just("duration('bogus')".to_string()),
        Just("semver('1.2.3')".to_string()),
        Just("semver(object.metadata.name, true)".to_string()),
        Just("isSemver(object.metadata.name)".to_string()),
        Just("object.metadata.name.split('-')".to_string()),
        Just("[1, 2, 3]".to_string()),
        Just("{'a': 1}".to_string()),
        Just("lists.range(10)".to_string()),
        Just("null".to_string()),
        Just("1.5".to_string()),
        Just("9223372036854775807".to_string()),
        Just("-9223372036854775808".to_string()),
        Just("'\\u00e9'".to_string()),
        Just("b'\\xff'".to_string()),
        (-3i64..100).prop_map(|n| n.to_string()),
        "[a-z]{0,6}".prop_map(|s| format!("'{s}'")),
    ]
}

fn cel_expr() -> impl Strategy<Value = String> {
    cel_atom().prop_recursive(4, 32, 3, |inner| {
        prop_oneof![
            (
                inner.clone(),
                inner.clone(),
                prop::sample::select(vec![
                    "||", "&&", "==", "!=", "<", "<=", ">", ">=", "+", "-", "*", "/", "%", "in"
                ])
            )
                .prop_map(|(a, b, op)| format!("{a} {op} {b}")),
            (
                inner.clone(),
                prop::sample::select(vec![
                    "size()",
                    "lowerAscii()",
                    "trim()",
                    "major()",
                    "sum()",
                    "min()",
                    "max()",
                    "isSorted()",
                    "orValue(1)",
                    "startsWith('a')",
                    "matches('^a.*')",
                    "matches('(')",
                    "join(',')",
                    "indexOf('a')",
                    "substring(1, 2)",
                    "compareTo(semver('1.0.0'))",
                ])
            )
                .prop_map(|(a, m)| format!("{a}.{m}")),
            (
                inner.clone(),
                inner.clone(),
                prop::sample::select(vec!["all", "exists", "exists_one", "map", "filter"])
            )
                .prop_map(|(a, b, m)| format!("{a}.{m}(x, {b})")),
            (inner.clone(), inner.clone(), inner.clone())
                .prop_map(|(c, a, b)| format!("{c} ? {a} : {b}")),
            inner.clone().prop_map(|a| format!("!({a})")),
            inner.clone().prop_map(|a| format!("-({a})")),
            inner.clone().prop_map(|a| format!("[{a}][0]")),
            inner.clone().prop_map(|a| format!("has({a})")),
            (inner.clone(), inner).prop_map(|(a, b)| format!("{a}[{b}]")),
        ]
    })
}

/// Any expression text at all: grammar-shaped, or raw characters.
fn any_expr() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => cel_expr(),
        1 => "\\PC{0,40}",
        1 => "[()\\[\\]{}.,?:!'\"a-z0-9 =<>&|+*/%-]{0,40}",
    ]
}

/// JSON of any shape, for object fields whose types a policy cannot rely on.
fn any_json() -> impl Strategy<Value = Json> {
    let leaf = prop_oneof![
        Just(Json::Null),
        any::<bool>().prop_map(Json::from),
        any::<i64>().prop_map(Json::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Json::from),
        "\\PC{0,12}".prop_map(Json::from),
        Just(json!("2026-05-01T00:00:00Z")),
        Just(json!("1.2.3")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Json::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|m| Json::Object(m.into_iter().collect())),
        ]
    })
}

/// Objects shaped like what the engine sees, with any field possibly the wrong type.
fn object(kind: &'static str) -> impl Strategy<Value = Json> {
    (
        "[a-z0-9-]{1,10}",
        prop::option::of(prop_oneof![
            Just(json!("2026-05-01T00:00:00Z")),
            Just(json!("not a time")),
            Just(json!(12)),
        ]),
        prop::collection::btree_map(
            prop_oneof![
                Just("app".to_string()),
                Just("retainer.dev/keep".to_string()),
                "[a-z]{1,4}".prop_map(String::from)
            ],
            prop_oneof![Just("true".to_string()), "[a-z0-9.]{0,5}".prop_map(String::from)],
            0..3,
        ),
        any::<bool>(),
        prop_oneof![
            Just(json!([{"type": "Complete", "status": "True"}])),
            Just(json!([{"type": "Failed", "status": "True"}])),
            Just(json!([{"type": "Complete", "status": "False"}])),
            Just(json!([])),
            Just(json!("garbage")),
            // As Jobs have them: the engine keeps only type and status of each, unless an
            // expression iterating them reads more.
            Just(json!([
                {"type": "Complete", "status": "True", "reason": "Done", "message": "m"},
                {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": "t"}
            ])),
            Just(json!({"type": "Complete", "status": "True"})),
        ],
        any_json(),
        prop::collection::vec("[0-9a-z.]{1,6}", 0..3),
    )
        .prop_map(move |(name, created, labels, deleting, conditions, extra, tags)| {
            let mut o = match kind {
                "OCIArtifact" => json!({"kind": "OCIArtifact", "registry": "127.0.0.1:5000",
                    "repository": "team/app", "digest": format!("sha256:{:0>64}", name.len()),
                    "tags": tags, "annotations": {"retainer.dev/keep": labels.get("retainer.dev/keep")},
                    "created": created, "extra": extra}),
                _ => json!({"apiVersion": if kind == "Job" { "batch/v1" } else { "v1" }, "kind": kind,
                    "metadata": {"name": name, "namespace": "ns", "uid": format!("uid-{name}"),
                                 "creationTimestamp": created, "labels": labels},
                    "status": {"conditions": conditions, "extra": extra}, "type": "Opaque",
                    "spec": {"template": extra, "n": name.len()}}),
            };
            if deleting {
                o["metadata"]["deletionTimestamp"] = json!("2026-05-02T00:00:00Z");
            }
            o
        })
}

/// Mostly expressions that compile, so that evaluation and the guards get exercised.
fn keep_expr() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => Just("false".to_string()),
        3 => prop::sample::select(vec![
            "false", "true", "rank < 1", "age < duration('1h')", "referencedBy.size() > 0",
            "rank < 2 || age < duration('24h')", "object.metadata.?labels.app.orValue('') == 'web'",
            "groupSize > 3 && rank < groupSize / 2", "object.tags.exists(t, t == 'latest')",
            "object.status.conditions.exists(c, c.reason == 'Done')",
            "object.status.conditions.all(c, c.?message.orValue('') != 'm')",
            "object.status.conditions.exists(c, c == {'type': 'Complete', 'status': 'True'})",
            "object.status.conditions.exists(c, c.type == 'Complete')",
        ]).prop_map(String::from),
        1 => any_expr(),
    ]
}

fn optional_expr() -> impl Strategy<Value = Option<String>> {
    prop_oneof![6 => Just(None), 1 => any_expr().prop_map(Some)]
}

/// Mostly None, so that most generated policies compile and get evaluated.
fn rarely<T: std::fmt::Debug + Clone + 'static>(
    s: impl Strategy<Value = T> + 'static,
) -> impl Strategy<Value = Option<T>> {
    prop_oneof![4 => Just(None), 1 => s.prop_map(Some)]
}

fn spec() -> impl Strategy<Value = Json> {
    (
        prop_oneof![
            9 => prop::sample::select(vec!["Job", "Secret", "OCIArtifact"]),
            1 => Just("Pod"),
        ],
        optional_expr(),
        optional_expr(),
        optional_expr(),
        keep_expr(),
        prop_oneof![
            12 => Just("@daily".to_string()),
            1 => Just("*/5 * * * *".to_string()),
            1 => Just("61 * * * *".to_string()),
            1 => Just("0 0 30 2 *".to_string()),
            1 => "[0-9*/, -]{0,14}".prop_map(String::from),
        ],
        rarely(prop_oneof![
            Just("Europe/Berlin".to_string()),
            Just("Mars/Base".to_string()),
            "\\PC{0,8}".prop_map(String::from),
        ]),
        rarely(prop_oneof![
            Just("1h".to_string()),
            Just("0s".to_string()),
            Just("99999999999h".to_string()),
            "[0-9.a-z]{0,6}".prop_map(String::from),
        ]),
        rarely(prop_oneof![
            Just("metadata.name!=x".to_string()),
            "[a-z.=!, ]{0,16}".prop_map(String::from)
        ]),
        rarely(prop::collection::btree_map(
            prop_oneof!["[a-z]{1,3}", "\\PC{0,8}"],
            prop_oneof!["[a-z]{0,3}", "\\PC{0,8}"],
            0..2,
        )),
    )
        .prop_map(
            |(kind, m, g, o, keep, schedule, tz, grace, fields, labels)| {
                let mut s = json!({"target": {"kind": kind}, "keep": keep, "schedule": schedule});
                if kind == "OCIArtifact" {
                    s["target"]["registry"] =
                        json!({"url": "http://127.0.0.1:5000", "repositories": ["team/*"]});
                } else {
                    if let Some(f) = fields {
                        s["target"]["fieldSelector"] = json!(f);
                    }
                    if let Some(l) = labels {
                        s["target"]["selector"] = json!({"matchLabels": l});
                    }
                }
                for (k, v) in [
                    ("match", m),
                    ("groupBy", g),
                    ("orderBy", o),
                    ("timeZone", tz),
                ] {
                    if let Some(v) = v {
                        s[k] = json!(v);
                    }
                }
                if let Some(g) = grace {
                    s["deletion"] = json!({"gracePeriod": g});
                }
                s
            },
        )
}

fn compile(spec: &Json) -> Option<CompiledPolicy> {
    // A spec that does not deserialize is one the CRD schema refuses before the controller
    // sees it.
    let spec: RetentionPolicySpec = serde_json::from_value(spec.clone()).ok()?;
    CompiledPolicy::compile(PolicyView {
        namespace: Some("ns".into()),
        name: "fuzz".into(),
        generation: Some(1),
        spec,
    })
    .ok()
}

static COMPILED: AtomicUsize = AtomicUsize::new(0);
static CANDIDATES: AtomicUsize = AtomicUsize::new(0);

fn check_policy(spec: Json, objects: Vec<Json>) -> Result<(), TestCaseError> {
    let Some(policy) = compile(&spec) else {
        return Ok(());
    };
    COMPILED.fetch_add(1, Ordering::Relaxed);
    let refs = RefIndex::build(&objects);
    let namespaces = BTreeMap::new();
    let snap = Snapshot {
        objects: objects.iter().collect(),
        refs: &refs,
        custom_referrers: objects.iter().collect(),
        namespace_labels: &namespaces,
        now: NOW.parse().expect("a valid timestamp"),
    };
    // A budget that can never be exhausted in a test, and one that always is: both must be safe.
    let deadline = Instant::now() + Duration::from_secs(30);
    let eval = evaluate_within(&policy, &snap, &|| Instant::now() > deadline)
        .map_err(|e| TestCaseError::fail(format!("over budget: {e}")))?;
    prop_assert!(evaluate_within(&policy, &snap, &|| true).is_err() || objects.is_empty());
    // The controller evaluates its cached objects parsed with only the fields the policy
    // reads; that must decide exactly as the whole objects do.
    let pruned: Vec<Json> = objects
        .iter()
        .map(|o| {
            if o["kind"] == "OCIArtifact" {
                return o.clone();
            }
            let text = serde_json::to_string(o).expect("serializable");
            retainer::json::parse_pruned(&text, &policy.retained_fields()).expect("parses")
        })
        .collect();
    let pruned_snap = Snapshot {
        objects: pruned.iter().collect(),
        ..snap
    };
    let pruned_eval = evaluate_within(&policy, &pruned_snap, &|| false)
        .map_err(|e| TestCaseError::fail(format!("over budget: {e}")))?;
    // An error's text may print a map, whose order differs from one run to the next; an
    // error must stay an error, with the same identity and counts.
    let comparable = |e: &retainer::engine::Evaluation| {
        let mut e = e.clone();
        for r in &mut e.results {
            if r.verdict == Verdict::Error {
                std::sync::Arc::make_mut(r).reason.clear();
            }
        }
        e
    };
    prop_assert_eq!(
        comparable(&pruned_eval),
        comparable(&eval),
        "pruned objects decide differently"
    );
    // Kept up to date in two batches, an evaluation equals a full one over the objects it
    // holds (duplicates of one identity are held once).
    let custom: Vec<&Json> = objects.iter().collect();
    let world = World {
        refs: &refs,
        custom_referrers: &custom,
        namespace_labels: &namespaces,
        now: NOW.parse().expect("a valid timestamp"),
    };
    let mut state = IncrementalEvaluation::new(&policy);
    let (first, second) = objects.split_at(objects.len() / 2);
    // The state keeps parts of each object; the full evaluation reads the last one of each
    // identity whole, in the order of the state's results.
    let mut held: std::collections::BTreeMap<String, &Json> = Default::default();
    for batch in [first, second] {
        let changes = Changes {
            objects: batch
                .iter()
                .cloned()
                .map(ObjectChange::Upsert)
                .collect::<Vec<_>>(),
            refs_changed: false,
        };
        for o in batch {
            held.insert(retainer::engine::incremental::identity(o), o);
        }
        state
            .apply(&policy, &world, changes, &|| false)
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let at = |o: &Json, a: &str, b: &str| {
            o.pointer(a)
                .or_else(|| o.pointer(b))
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string()
        };
        let mut whole: Vec<&Json> = held.values().copied().collect();
        whole.sort_by_key(|o| {
            (
                at(o, "/metadata/namespace", "/repository"),
                at(o, "/metadata/name", "/digest"),
                retainer::engine::incremental::identity(o),
            )
        });
        let snap = retainer::engine::Snapshot {
            objects: whole,
            ..state.snapshot(&world)
        };
        let full = evaluate_within(&policy, &snap, &|| false)
            .map_err(|e| TestCaseError::fail(format!("over budget: {e}")))?;
        prop_assert_eq!(
            comparable(&state.evaluation()),
            comparable(&full),
            "the incremental evaluation differs"
        );
    }
    let s = eval.summary;
    prop_assert_eq!(s.governed, s.kept + s.candidates + s.errors);
    prop_assert_eq!(s.governed as usize, eval.results.len());
    for r in &eval.results {
        if r.verdict != Verdict::Delete {
            continue;
        }
        CANDIDATES.fetch_add(1, Ordering::Relaxed);
        let obj = objects
            .iter()
            .find(|o| match &r.id {
                ObjectId::Kube { name, .. } => o.pointer("/metadata/name") == Some(&json!(name)),
                ObjectId::Oci { digest, .. } => o.get("digest") == Some(&json!(digest)),
            })
            .ok_or_else(|| TestCaseError::fail("a verdict for an object that was not given"))?;
        let keep_label = obj.pointer("/metadata/labels/retainer.dev~1keep") == Some(&json!("true"))
            || obj.pointer("/annotations/retainer.dev~1keep") == Some(&json!("true"));
        prop_assert!(!keep_label, "a kept-labelled object is a candidate: {obj}");
        prop_assert!(
            obj.pointer("/metadata/deletionTimestamp").is_none(),
            "an object being deleted is a candidate"
        );
        if obj["kind"] == "Job" {
            prop_assert!(
                retainer::engine::job_finished(obj),
                "an unfinished Job is a candidate: {obj}"
            );
        }
    }
    Ok(())
}

fn objects() -> impl Strategy<Value = Vec<Json>> {
    prop::collection::vec(
        prop_oneof![object("Job"), object("Secret"), object("OCIArtifact")],
        0..8,
    )
    .prop_map(|mut objects| {
        // Unique identities, so that each verdict names exactly one object.
        for (i, o) in objects.iter_mut().enumerate() {
            if o["kind"] == "OCIArtifact" {
                o["digest"] = json!(format!("sha256:{i:064}"));
            } else {
                o["metadata"]["name"] = json!(format!(
                    "{}-{i}",
                    o["metadata"]["name"].as_str().unwrap_or("o")
                ));
                o["metadata"]["uid"] = json!(format!("uid-{i}"));
            }
        }
        objects
    })
}

/// Runs `test` on generated cases: a fixed number by default, or for RETAINER_FUZZ_SECS.
fn run<S: Strategy>(name: &str, strategy: S, test: impl Fn(S::Value) -> Result<(), TestCaseError>)
where
    S::Value: std::fmt::Debug,
{
    let secs: u64 = std::env::var("RETAINER_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut rounds = 0u64;
    loop {
        let mut runner = TestRunner::new(Config {
            cases: 256,
            failure_persistence: None,
            ..Config::default()
        });
        if let Err(e) = runner.run(&strategy, &test) {
            panic!("{name}: {e}");
        }
        rounds += 1;
        if Instant::now() >= deadline {
            break;
        }
    }
    eprintln!("{name}: {} cases, no failures", rounds * 256);
}

#[test]
fn expressions_compile_or_fail_cleanly_and_evaluate_without_panics() {
    let fields = [Field::Match, Field::GroupBy, Field::OrderBy, Field::Keep];
    run(
        "expressions",
        (
            any_expr(),
            prop::sample::select(fields.to_vec()),
            object("Job"),
        ),
        |(src, field, obj)| {
            let Ok(c) = Compiled::compile(field, &src) else {
                return Ok(());
            };
            let bound = retainer::expr::project(&obj, &c.fields);
            let empty = json!([]);
            let refs = retainer::expr::json_to_val(&empty);
            let vars = retainer::expr::Vars {
                object: bound.as_ref(),
                now: chrono::DateTime::parse_from_rfc3339(NOW).expect("a valid timestamp"),
                age: chrono::Duration::hours(1),
                group: Some("g"),
                rank: Some(0),
                group_size: Some(1),
                referenced_by: Some(refs.as_ref()),
            };
            let _ = c.eval(&vars);
            let _ = c.eval_keep(&vars);
            Ok(())
        },
    );
}

#[test]
fn policies_over_arbitrary_objects_keep_the_guards() {
    run("policies", (spec(), objects()), |(s, o)| check_policy(s, o));
    // The properties mean little unless policies compile and candidates occur.
    let (compiled, candidates) = (
        COMPILED.load(Ordering::Relaxed),
        CANDIDATES.load(Ordering::Relaxed),
    );
    eprintln!("policies: {compiled} compiled, {candidates} candidates checked against the guards");
    assert!(
        compiled > 40 && candidates > 5,
        "{compiled} compiled, {candidates} candidates"
    );
}

#[test]
fn check_input_files_parse_or_fail_cleanly() {
    run(
        "documents",
        prop_oneof![
            "\\PC{0,200}",
            "(---\n|kind: |apiVersion: |metadata:\n  name: |items: |\\[|\\]|\\{|\\}|- |: |'|\"|&a |\\*a |!!binary |[a-z0-9]{1,4}|\n){0,40}",
        ],
        |text| {
            let _ = retainer::check::parse_documents("fuzz.yaml", &text);
            Ok(())
        },
    );
}

/// `Link` values: links with targets, relations and parameters, well-formed or nearly, cut
/// short anywhere.
fn link_value() -> impl Strategy<Value = String> {
    let param = prop_oneof![
        4 => prop::sample::select(vec![
            "rel=next",
            "rel=\"next\"",
            "REL = \"prev next\"",
            "rel=\"prev\"",
            "title=\"a, \\\"b\\\"; c\"",
            "anchor",
        ]),
        1 => prop::sample::select(vec!["rel=\"next", "rel=", "=next", "", "rel=next>"]),
    ];
    let sep = prop_oneof![
        4 => Just("; "),
        1 => prop::sample::select(vec![";", " ; ", " ", ""]),
    ];
    let link = ("[a-z0-9/?=&.:,;\\ -]{0,16}", param, sep)
        .prop_map(|(target, param, sep)| format!("<{target}>{sep}{param}"));
    (
        prop::collection::vec(link, 0..4),
        prop::sample::select(vec![", ", ",", " , ,"]),
        prop::option::weighted(0.2, any::<prop::sample::Index>()),
    )
        .prop_map(|(links, sep, cut)| {
            let v = links.join(sep);
            match cut {
                Some(at) if !v.is_empty() => v.chars().take(at.index(v.chars().count())).collect(),
                _ => v,
            }
        })
}

static NEXT_LINKS: AtomicUsize = AtomicUsize::new(0);
static VALID_DIGESTS: AtomicUsize = AtomicUsize::new(0);

/// Header text a registry could send: any characters, any bytes (as a client that reads them
/// leniently would see them), or the pieces `Link`, `WWW-Authenticate` and digest values are
/// made of, shuffled.
fn header_text() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => link_value(),
        1 => "\\PC{0,60}",
        1 => prop::collection::vec(any::<u8>(), 0..80)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned()),
        1 => "(((Bearer|Basic|Negotiate) )?((realm|service|scope|REALM|error)=(\"[^\"]{0,12}\"?|[a-z:/,]{0,8})|[a-z68=]{0,6})(,? ?)){0,5}",
        1 => "(<|>|;|,|=|\"|\\\\| |\t|rel|REL|next|prev|/v2/x/tags/list\\?n=2&last=b|https://r.example/v2/|Bearer|Basic|realm|scope|service|repository:a/b:pull|sha256|sha512|:|[0-9a-f]{4}|\\.\\.|/|\u{e9}){0,24}",
        1 => "(sha256|sha512|[a-z0-9+._-]{0,8}):[0-9a-fA-Z=_./?-]{0,130}",
        1 => "(sha256:[0-9a-f]{64}|sha512:[0-9a-f]{128}|[a-z0-9]{1,6}([+._-][a-z0-9]{1,4})?:[a-zA-Z0-9=_-]{1,20})",
        1 => "(Mon|Sun), [0-9]{1,2} (Jun|Nov) [0-9]{1,4} [0-9:]{0,8} (GMT|UTC|\\+0100)?",
        1 => "-?[0-9]{0,24}",
    ]
}

#[test]
fn registry_headers_parse_without_panics() {
    let now: jiff::Timestamp = NOW.parse().expect("a valid timestamp");
    run("registry headers", header_text(), |text| {
        if let Ok(Some(target)) = next_link(&text) {
            NEXT_LINKS.fetch_add(1, Ordering::Relaxed);
            prop_assert!(!target.contains('>'), "{target:?} from {text:?}");
            prop_assert!(
                text.contains(&format!("<{target}>")),
                "{target:?} from {text:?}"
            );
        }
        for c in parse_challenges(&text) {
            prop_assert!(!c.scheme.is_empty(), "{text:?}");
            prop_assert_eq!(c.scheme.to_ascii_lowercase(), c.scheme.clone());
            prop_assert!(c.params.keys().all(|k| *k == k.to_ascii_lowercase()));
        }
        if valid_digest(&text) {
            VALID_DIGESTS.fetch_add(1, Ordering::Relaxed);
            // What passes ends up in URL paths: nothing in it may leave its path segment.
            prop_assert!(
                !text.contains(['/', '?', '#', '%', ' ', '\\']) && !text.contains(".."),
                "{text:?}"
            );
            if text.starts_with("sha256:") {
                prop_assert_eq!(text.len(), 71);
            }
        }
        let _ = parse_retry_after(&text, now);
        let _ = subject_of_tag(&text);
        Ok(())
    });
    // The properties mean little unless next links and digests occur.
    let (links, digests) = (
        NEXT_LINKS.load(Ordering::Relaxed),
        VALID_DIGESTS.load(Ordering::Relaxed),
    );
    eprintln!("registry headers: {links} next links, {digests} valid digests");
    assert!(
        links > 5 && digests > 2,
        "{links} next links, {digests} digests"
    );
}

/// Registry JSON: list pages, image indexes and manifests of any shape, right or wrong.
fn registry_json() -> impl Strategy<Value = Json> {
    let descriptor = prop_oneof![
        any_json(),
        (any_json(), any_json()).prop_map(|(digest, annotations)| json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": 1, "annotations": annotations})),
        "[0-9a-f]{64}".prop_map(|h| json!({"digest": format!("sha256:{h}"), "size": 1})),
    ];
    prop_oneof![
        any_json(),
        (prop::collection::vec(descriptor.clone(), 0..6), any_json()).prop_map(
            |(manifests, subject)| json!({"schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": manifests, "subject": subject})
        ),
        (any_json(), prop::collection::vec(descriptor, 0..4)).prop_map(|(config, layers)| {
            json!({"schemaVersion": 2, "config": config, "layers": layers,
                   "name": "chart", "version": config, "apiVersion": "v2"})
        }),
        (any_json(), prop::collection::vec(any_json(), 0..6))
            .prop_map(|(name, tags)| json!({"name": name, "tags": tags, "repositories": tags})),
    ]
}

/// Bytes a registry could send as a page or manifest: JSON of the shapes above, cut short or
/// with a byte changed, or any bytes at all.
fn registry_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        2 => (registry_json(), any::<prop::sample::Index>(), any::<u8>(), 0u8..3).prop_map(
            |(j, at, byte, how)| {
                let mut b = serde_json::to_vec(&j).expect("serializable");
                if !b.is_empty() {
                    let i = at.index(b.len());
                    match how {
                        0 => b.truncate(i),
                        1 => b[i] = byte,
                        _ => {}
                    }
                }
                b
            }
        ),
        1 => prop::collection::vec(any::<u8>(), 0..200),
    ]
}

#[test]
fn registry_bodies_parse_without_panics() {
    run("registry bodies", registry_body(), |body| {
        let Ok(j) = serde_json::from_slice::<Json>(&body) else {
            return Ok(());
        };
        let listed = j
            .get("manifests")
            .and_then(Json::as_array)
            .map_or(0, Vec::len);
        prop_assert!(index_digests(&j).len() <= listed);
        for field in ["tags", "repositories"] {
            let names = page_names(&j, field);
            let strings = j[field]
                .as_array()
                .map_or(0, |a| a.iter().filter(|v| v.is_string()).count());
            prop_assert_eq!(names.len(), strings);
        }
        let _ = ChartInfo::from_config(&j);
        Ok(())
    });
    // Nesting beyond serde_json's recursion limit is an error, not a stack overflow.
    let deep = "[".repeat(100_000);
    assert!(serde_json::from_str::<Json>(&deep).is_err());
    let deep = format!("{}1{}", "{\"manifests\":[".repeat(1000), "]}".repeat(1000));
    assert!(serde_json::from_str::<Json>(&deep).is_err());
}
