//! Evaluation throughput: `cargo bench --bench eval`.
//!
//! 100,000 Jobs under the Fleet policy and 100,000 Helm release Secrets under the Helm-history
//! policy, evaluated by the real pipeline (select, match, group, order, rank, keep). Each run is
//! repeated and the median reported. The same Jobs are also evaluated with every expression
//! binding the whole object, to show what binding only the read fields buys.

use std::time::Instant;

use retainer::api::{PolicyView, RetentionPolicySpec};
use retainer::engine::{CompiledPolicy, Snapshot, evaluate};
use retainer::refs::RefIndex;
use serde_json::{Value, json};

const N: usize = 100_000;
const RUNS: usize = 3;

fn policy(ns: &str, spec: Value) -> CompiledPolicy {
    let spec: RetentionPolicySpec = serde_json::from_value(spec).expect("spec");
    CompiledPolicy::compile(PolicyView {
        namespace: Some(ns.into()),
        name: "bench".into(),
        generation: Some(1),
        spec,
    })
    .expect("policy compiles")
}

fn jobs() -> Vec<Value> {
    (0..N)
        .map(|i| {
            json!({"apiVersion": "batch/v1", "kind": "Job",
                "metadata": {"name": format!("gitjob-{i}"), "namespace": "fleet-local", "uid": format!("uid-{i}"),
                    "resourceVersion": "1", "creationTimestamp": format!("2026-11-{:02}T{:02}:{:02}:00Z", 1 + i % 28, i % 24, i % 60),
                    "labels": {"gitjob.fleet.cattle.io/name": format!("repo-{}", i % 500), "app": "fleet"},
                    "annotations": {"objectset.rio.cattle.io/hash": "0123456789abcdef"}},
                "spec": {"backoffLimit": 6, "template": {"metadata": {"labels": {"app": "fleet"}},
                    "spec": {"restartPolicy": "Never", "serviceAccountName": "gitjob",
                        "containers": [{"name": "fleet", "image": "rancher/fleet:v0.10.0",
                            "args": ["fleet", "apply", "--targets-file=/run/config/targets.yaml"],
                            "env": [{"name": "HOME", "value": "/fleet-home"}, {"name": "NAMESPACE", "value": "fleet-local"}],
                            "volumeMounts": [{"name": "config", "mountPath": "/run/config"}]}],
                        "volumes": [{"name": "config", "configMap": {"name": format!("cfg-{i}")}}]}}},
                "status": {"succeeded": if i % 10 == 0 { 0 } else { 1 }, "startTime": "2026-11-01T00:00:00Z",
                    "completionTime": "2026-11-01T00:01:00Z",
                    "conditions": [{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}]}})
        })
        .collect()
}

fn secrets() -> Vec<Value> {
    (0..N)
        .map(|i| {
            let v = 1 + i % 200;
            json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
                "metadata": {"name": format!("sh.helm.release.v1.rel-{}.v{v}", i / 200), "namespace": "apps",
                    "creationTimestamp": "2026-11-01T00:00:00Z", "uid": format!("uid-{i}"), "resourceVersion": "1",
                    "labels": {"owner": "helm", "name": format!("rel-{}", i / 200), "version": v.to_string(),
                        "status": if v == 200 { "deployed" } else { "superseded" }}}})
        })
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn measure(name: &str, policy: &CompiledPolicy, objects: &[Value]) -> f64 {
    let refs = RefIndex::default();
    let ns = Default::default();
    let mut rates = Vec::new();
    for _ in 0..RUNS {
        let snap = Snapshot {
            objects: objects.iter().collect(),
            refs: &refs,
            custom_referrers: Vec::new(),
            namespace_labels: &ns,
            now: "2026-11-22T12:00:00Z".parse().expect("time"),
        };
        let start = Instant::now();
        let eval = evaluate(policy, &snap);
        let secs = start.elapsed().as_secs_f64();
        assert_eq!(eval.summary.governed as usize, eval.results.len());
        rates.push(objects.len() as f64 / secs);
    }
    let m = median(rates);
    println!("{name:<48} {m:>12.0} objects/s (median of {RUNS})");
    m
}

fn main() {
    // `cargo test --all-targets` runs this binary too, without `--bench`: stay quick there.
    if !std::env::args().any(|a| a == "--bench") {
        println!("evaluation benchmark: run it with `cargo bench --bench eval`");
        return;
    }
    let fleet = json!({"target": {"kind": "Job"},
        "match": "object.status.?succeeded.orValue(0) > 0",
        "groupBy": "object.metadata.labels['gitjob.fleet.cattle.io/name']",
        "keep": "rank < 1", "schedule": "@hourly"});
    let helm = json!({"target": {"kind": "Secret", "fieldSelector": "type=helm.sh/release.v1"},
        "groupBy": "object.metadata.labels.name",
        "orderBy": "int(object.metadata.labels.version)",
        "keep": "rank < 10 || object.metadata.labels.status == 'deployed'", "schedule": "@daily"});
    // The same Fleet policy, but each expression also touches `object` whole, which defeats
    // field projection: the cost of converting whole objects.
    let fleet_whole = json!({"target": {"kind": "Job"},
        "match": "size(object) > 0 && object.status.?succeeded.orValue(0) > 0",
        "groupBy": "object.metadata.labels['gitjob.fleet.cattle.io/name']",
        "keep": "rank < 1", "schedule": "@hourly"});
    let jobs = jobs();
    let secrets = secrets();
    println!("N = {N} objects per scenario");
    let projected = measure(
        "Jobs, fleet-gitjobs policy (projected fields)",
        &policy("fleet-local", fleet),
        &jobs,
    );
    let whole = measure(
        "Jobs, fleet-gitjobs policy (whole object bound)",
        &policy("fleet-local", fleet_whole),
        &jobs,
    );
    measure(
        "Secrets, helm-history policy",
        &policy("apps", helm),
        &secrets,
    );
    println!("projection speed-up: {:.1}x", projected / whole);
}
