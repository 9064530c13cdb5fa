use std::collections::HashMap;

use super::*;
use crate::api::{PolicyView, RetentionPolicySpec};
use crate::controller::caches::{CHANGE_LOG, Kind};
use crate::engine::{ObjectId, ObjectResult, Snapshot, evaluate as evaluate_whole};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;

fn compile(namespace: Option<&str>, spec: Json) -> CompiledPolicy {
    let spec: RetentionPolicySpec = serde_json::from_value(spec).unwrap();
    CompiledPolicy::compile(PolicyView {
        namespace: namespace.map(String::from),
        name: "p".into(),
        generation: Some(1),
        spec,
    })
    .unwrap()
}

/// Policies whose selection moves with what changes: the object's own labels (selector), its
/// namespace's labels (namespaceSelector), and references (built-in and custom); one reads
/// the clock in match and keep.
fn policies() -> Vec<(&'static str, CompiledPolicy)> {
    vec![
        (
            "selector, newest succeeded per app",
            compile(
                Some("prod"),
                json!({"target": {"kind": "Job", "selector": {"matchLabels": {"team": "x"}}},
                    "match": "object.status.?succeeded.orValue(0) > 0",
                    "groupBy": "object.metadata.labels.?app.orValue('none')",
                    "keep": "rank < 1",
                    "schedule": "@hourly"}),
            ),
        ),
        (
            "namespaceSelector, age in match and keep",
            compile(
                None,
                json!({"target": {"kind": "Job", "namespaceSelector": {"matchLabels": {"env": "prod"}}},
                    "match": "age > duration('30m') || object.metadata.labels.?team.orValue('') == 'y'",
                    "groupBy": "object.metadata.labels.?app.orValue('none')",
                    "orderBy": "object.metadata.creationTimestamp",
                    "keep": "rank < 2 || age < duration('2h')",
                    "schedule": "@hourly"}),
            ),
        ),
        (
            "referenced secrets",
            compile(
                None,
                json!({"target": {"kind": "Secret"},
                    "groupBy": "object.metadata.labels.?app.orValue('none')",
                    "keep": "referencedBy.size() > 0 || rank < 1",
                    "referencedBy": [{"apiVersion": "example.dev/v1", "kind": "Bundle",
                                      "refs": "object.spec.secrets"}],
                    "schedule": "@hourly"}),
            ),
        ),
    ]
}

const NAMESPACES: [&str; 3] = ["prod", "dev", "team"];
const T0: i64 = 1_780_000_000;

fn timestamp(secs: i64) -> String {
    Timestamp::from_second(secs).unwrap().to_string()
}

/// A random Job or Secret, as the cache keeps it: compact JSON text with its type.
fn object(rng: &mut StdRng, secret: bool, ns: &str, name: &str, uid: &str, rv: u64) -> String {
    let mut labels = serde_json::Map::new();
    if rng.random_bool(0.85) {
        labels.insert("app".into(), json!(["a", "b", "c"][rng.random_range(0..3)]));
    }
    if rng.random_bool(0.7) {
        labels.insert("team".into(), json!(["x", "y"][rng.random_range(0..2)]));
    }
    let created = T0 - 600 * rng.random_range(0..40);
    let metadata = json!({"namespace": ns, "name": name, "uid": uid,
        "resourceVersion": rv.to_string(), "labels": labels,
        "creationTimestamp": timestamp(created),
        "managedFields": [{"manager": "test"}]});
    let obj = if secret {
        json!({"apiVersion": "v1", "kind": "Secret", "type": "Opaque", "metadata": metadata})
    } else {
        let status = if rng.random_bool(0.8) {
            json!({"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]})
        } else {
            json!({"failed": 1, "conditions": [{"type": "Failed", "status": "True"}]})
        };
        json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata,
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
            "status": status})
    };
    obj.to_string()
}

/// Pods and Bundles referencing random Secrets: the built-in and custom references.
fn referrers(rng: &mut StdRng, names: &[String], version: u64) -> (RefIndex, Vec<Json>) {
    let pods: Vec<Json> = (0..rng.random_range(0..4))
        .map(|i| {
            let ns = NAMESPACES[rng.random_range(0..NAMESPACES.len())];
            let secret = &names[rng.random_range(0..names.len())];
            json!({"apiVersion": "v1", "kind": "Pod",
                "metadata": {"namespace": ns, "name": format!("pod-{i}")},
                "spec": {"containers": [{"name": "c", "image": "busybox"}],
                         "volumes": [{"name": "v", "secret": {"secretName": secret}}]}})
        })
        .collect();
    let bundles = (0..rng.random_range(0..3))
        .map(|i| {
            let ns = NAMESPACES[rng.random_range(0..NAMESPACES.len())];
            json!({"apiVersion": "example.dev/v1", "kind": "Bundle",
                "metadata": {"namespace": ns, "name": format!("bundle-{i}"),
                    "uid": format!("bundle-uid-{i}"), "resourceVersion": version.to_string()},
                "spec": {"secrets": [names[rng.random_range(0..names.len())]]}})
        })
        .collect();
    (RefIndex::build(&pods), bundles)
}

/// Results in a fixed order: the controller's caches have none, so neither path's order is
/// one to compare.
fn sorted(mut e: Evaluation) -> Evaluation {
    let key = |r: &Arc<ObjectResult>| match &r.id {
        ObjectId::Kube {
            namespace,
            name,
            uid,
            ..
        } => (namespace.to_string(), name.to_string(), uid.to_string()),
        ObjectId::Oci {
            repository, digest, ..
        } => (repository.clone(), digest.clone(), String::new()),
    };
    e.results.sort_by_key(key);
    e
}

/// What the worker did before there was an incremental path: every selected object of the
/// cache, parsed as the policy reads it, evaluated in full.
fn full_evaluation(
    policy: &CompiledPolicy,
    cache: &Cache,
    refs: &RefIndex,
    custom: &[&Json],
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    now: Timestamp,
) -> Evaluation {
    let objects = cache.parsed_where(&policy.retained_fields(), |o| {
        selects(policy, o, namespaces)
    });
    evaluate_whole(
        policy,
        &Snapshot {
            objects: objects.iter().collect(),
            refs,
            custom_referrers: custom.to_vec(),
            namespace_labels: namespaces,
            now,
        },
    )
}

/// Random sequences of cache changes (Jobs or Secrets added, modified, recreated and deleted,
/// their selection flipping with their labels; namespace labels; references; `now`; re-lists,
/// change bursts longer than the log, and evaluations cut short), evaluated after each batch
/// by the worker's path and compared with a full evaluation of the same cache.
#[test]
fn the_worker_path_evaluates_cache_changes_as_a_full_evaluation_does() {
    let mut rng = StdRng::seed_from_u64(14);
    for (name, policy) in policies() {
        let secret = policy.target == crate::api::TargetKind::Secret;
        let cache = Cache::new(if secret {
            Kind::secrets()
        } else {
            Kind::jobs()
        });
        cache.relisted(HashMap::new());
        let names: Vec<String> = (0..30).map(|i| format!("obj-{i}")).collect();
        // (namespace, name) → uid of the objects that exist
        let mut live: BTreeMap<(String, String), String> = BTreeMap::new();
        let (mut next_uid, mut version) = (0, 0);
        let mut refs = Arc::new(RefIndex::default());
        let mut custom: Vec<Json> = Vec::new();
        let mut namespaces = BTreeMap::from([
            (
                "prod".to_string(),
                BTreeMap::from([("env".to_string(), "prod".to_string())]),
            ),
            ("dev".to_string(), BTreeMap::new()),
        ]);
        let mut now = Timestamp::from_second(T0).unwrap();
        let mut tracked: Option<Tracked> = None;
        let mut held: Option<(u64, Evaluation)> = None;
        let mut modes: BTreeMap<&'static str, usize> = BTreeMap::new();
        for step in 0..600 {
            version += 1;
            // What the worker must do, when it is forced.
            let mut must_be_full = false;
            let mut give_up = false;
            let namespaces_before = namespaces.clone();
            for _ in 0..rng.random_range(1..5) {
                match rng.random_range(0..100) {
                    0..50 => {
                        let ns = NAMESPACES[rng.random_range(0..NAMESPACES.len())];
                        let n = &names[rng.random_range(0..names.len())];
                        let key = (ns.to_string(), n.clone());
                        let uid = live.entry(key.clone()).or_insert_with(|| {
                            next_uid += 1;
                            format!("uid-{next_uid}")
                        });
                        if rng.random_bool(0.1) {
                            // Deleted and created again under the same name.
                            cache.deleted(uid);
                            next_uid += 1;
                            *uid = format!("uid-{next_uid}");
                        }
                        let uid = uid.clone();
                        cache.applied(
                            &uid,
                            Arc::from(object(&mut rng, secret, ns, n, &uid, version)),
                        );
                    }
                    50..68 if !live.is_empty() => {
                        let at = rng.random_range(0..live.len());
                        let key = live.keys().nth(at).cloned().unwrap();
                        let uid = live.remove(&key).unwrap();
                        cache.deleted(&uid);
                    }
                    68..76 => {
                        let (r, c) = referrers(&mut rng, &names, version);
                        refs = Arc::new(r);
                        custom = c;
                    }
                    76..88 => now = Timestamp::from_second(now.as_second() + 600).unwrap(),
                    88..94 => {
                        let ns = ["dev", "team"][rng.random_range(0..2)];
                        let labels = if rng.random_bool(0.5) {
                            BTreeMap::from([("env".to_string(), "prod".to_string())])
                        } else {
                            BTreeMap::new()
                        };
                        namespaces.insert(ns.to_string(), labels);
                    }
                    94..96 => {
                        // The watch lost its place and listed everything again.
                        let objects: HashMap<Arc<str>, Arc<str>> = cache
                            .snapshot()
                            .into_iter()
                            .map(|o| {
                                let uid = o["metadata"]["uid"].as_str().unwrap_or("").to_string();
                                (Arc::from(uid), Arc::from(o.to_string()))
                            })
                            .collect();
                        cache.relisted(objects);
                        must_be_full = true;
                    }
                    96..98 => give_up = true,
                    _ => {
                        // More changes than the log holds: it no longer reaches back.
                        let Some(((ns, n), uid)) = live.iter().next() else {
                            continue;
                        };
                        for _ in 0..=CHANGE_LOG {
                            version += 1;
                            cache.applied(
                                uid,
                                Arc::from(object(&mut rng, secret, ns, n, uid, version)),
                            );
                        }
                        must_be_full = true;
                    }
                }
            }
            // Only a policy that selects by namespace labels cannot tell which objects it lacks.
            must_be_full |=
                name.starts_with("namespaceSelector") && namespaces != namespaces_before;
            let custom_refs: Vec<&Json> = custom.iter().collect();
            let inputs = Inputs {
                policy: &policy,
                target: &cache,
                refs: refs.clone(),
                custom_referrers: &custom_refs,
                namespace_labels: &namespaces,
                now,
                held: held.as_ref().map(|(g, _)| *g),
            };
            let had_state = tracked.is_some();
            let out = evaluate(tracked.take(), &inputs, &|| give_up);
            match out.mode {
                Mode::Full(why) => *modes.entry(why).or_default() += 1,
                Mode::Changes(_) => {
                    assert!(!must_be_full, "{name}, step {step}: must evaluate in full");
                    *modes.entry("changes").or_default() += 1;
                }
            }
            assert_eq!(
                matches!(out.mode, Mode::Full(_)),
                !had_state || must_be_full,
                "{name}, step {step}: {:?}",
                out.mode
            );
            if out.result.is_err() {
                // The budget is asked between expressions: with none to run, nothing gives up.
                assert!(give_up && out.tracked.is_none(), "{name}, step {step}");
                *modes.entry("gave up").or_default() += 1;
                held = None;
                continue;
            }
            // None: the verdicts held from the step before, which must still be right.
            let got = match out.result.unwrap() {
                Some(e) => sorted(e),
                None => {
                    *modes.entry("unchanged").or_default() += 1;
                    held.as_ref().expect("verdicts held").1.clone()
                }
            };
            let want = sorted(full_evaluation(
                &policy,
                &cache,
                &refs,
                &custom_refs,
                &namespaces,
                now,
            ));
            assert_eq!(got, want, "{name}, step {step}");
            tracked = out.tracked;
            held = tracked.as_ref().map(|t| (t.generation(), got));
            assert_eq!(
                tracked.as_ref().map(Tracked::len),
                Some(
                    cache
                        .parsed_where(&policy.retained_fields(), |o| selects(
                            &policy,
                            o,
                            &namespaces
                        ))
                        .len()
                ),
                "{name}, step {step}: the state holds exactly the selected objects"
            );
        }
        // Most evaluations went by the changes alone, and every fallback was taken.
        assert!(
            modes.get("changes").copied().unwrap_or(0) > 350,
            "{name}: {modes:?}"
        );
        assert!(
            modes.contains_key("the cache's change log does not reach back far enough")
                && modes.contains_key("no earlier evaluation")
                && modes.contains_key("gave up"),
            "{name}: {modes:?}"
        );
    }
}

#[test]
fn an_unchanged_cache_applies_no_changes_and_a_new_index_is_passed_on() {
    let (_, policy) = policies().remove(2);
    let cache = Cache::new(Kind::secrets());
    let mut rng = StdRng::seed_from_u64(1);
    let mut objects = HashMap::new();
    for i in 0..5 {
        let uid = format!("u{i}");
        let text = object(&mut rng, true, "prod", &format!("s{i}"), &uid, 1);
        objects.insert(Arc::from(uid), Arc::from(text));
    }
    cache.relisted(objects);
    let namespaces = BTreeMap::new();
    let refs = Arc::new(RefIndex::default());
    let inputs = |refs: &Arc<RefIndex>| Inputs {
        policy: &policy,
        target: &cache,
        refs: refs.clone(),
        custom_referrers: &[],
        namespace_labels: &namespaces,
        now: Timestamp::from_second(T0).unwrap(),
        held: None,
    };
    let first = evaluate(None, &inputs(&refs), &|| false);
    assert_eq!(first.mode, Mode::Full("no earlier evaluation"));
    let again = evaluate(first.tracked, &inputs(&refs), &|| false);
    assert_eq!(again.mode, Mode::Changes(0));
    let kept = again
        .result
        .as_ref()
        .ok()
        .and_then(Option::as_ref)
        .map(|e| e.summary.kept)
        .unwrap_or(-1);
    // A pod now mounts s0: a new index, the same cache.
    let pod = json!({"apiVersion": "v1", "kind": "Pod",
        "metadata": {"namespace": "prod", "name": "p"},
        "spec": {"containers": [{"name": "c", "image": "busybox"}],
                 "volumes": [{"name": "v", "secret": {"secretName": "s0"}}]}});
    let refs = Arc::new(RefIndex::build(&[pod]));
    let moved = evaluate(again.tracked, &inputs(&refs), &|| false);
    assert_eq!(moved.mode, Mode::Changes(0));
    let want = full_evaluation(
        &policy,
        &cache,
        &refs,
        &[],
        &namespaces,
        Timestamp::from_second(T0).unwrap(),
    );
    assert_eq!(
        sorted(moved.result.unwrap().expect("no verdicts held")),
        sorted(want.clone())
    );
    assert!(want.summary.kept >= kept);
}
