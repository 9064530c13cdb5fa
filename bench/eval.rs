//! Evaluation throughput: `cargo bench --bench eval`.
//!
//! 100,000 Jobs under the Fleet policy and 100,000 Helm release Secrets under the Helm-history
//! policy, evaluated by the real pipeline (select, match, group, order, rank, keep). Each run is
//! repeated and the median reported. The same Jobs are also evaluated with every expression
//! binding the whole object, to show what binding only the read fields buys, and one Job added
//! to them is evaluated incrementally and in full (docs/incremental.md).
//!
//! `cargo bench --bench eval -- --data bench/data --n 100000 [--runs 3] [--scenario NAME]`
//! instead reads the files `bench/gen_objects.py` writes and times, for each example policy,
//! what `bench/celgo` times for cel-go on the same files (the two print the same RESULT lines,
//! which `bench/eval.sh` tabulates): see `data_bench`.
//!
//! `cargo bench --bench eval -- --data bench/data --n N --cel-exprs bench/cel-exprs.tsv` times
//! CEL alone per line of that file, as `celgo -mode exprs` does (`bench/cel.sh`): see
//! `exprs_bench`.

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
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("evaluation benchmark: run it with `cargo bench --bench eval`");
        return;
    }
    if let Some(dir) = flag(&args, "--data") {
        let n = flag(&args, "--n").unwrap_or("100000");
        let runs = flag(&args, "--runs").map_or(RUNS, |r| r.parse().expect("--runs"));
        if let Some(path) = flag(&args, "--cel-exprs") {
            data::exprs_bench(path, dir, n, runs);
            return;
        }
        data::data_bench(
            dir,
            n,
            runs,
            flag(&args, "--scenario"),
            flag(&args, "--reports"),
        );
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
    let fleet = json!({"target": {"kind": "Job"},
        "match": "object.status.?succeeded.orValue(0) > 0",
        "groupBy": "object.metadata.labels['gitjob.fleet.cattle.io/name']",
        "keep": "rank < 1", "schedule": "@hourly"});
    incremental(&policy("fleet-local", fleet), &jobs);
}

/// One Job added to 100,000, evaluated incrementally and in full. Each change adds a Job
/// newer than the rest of its group (so the group's ranks all move) and is timed alone.
fn incremental(policy: &CompiledPolicy, objects: &[Value]) {
    use retainer::engine::incremental::{Changes, IncrementalEvaluation, ObjectChange, World};
    let refs = RefIndex::default();
    let ns = Default::default();
    let world = World {
        refs: &refs,
        custom_referrers: &[],
        namespace_labels: &ns,
        now: "2026-11-22T12:00:00Z".parse().expect("time"),
    };
    let mut state = IncrementalEvaluation::new(policy);
    let changes = Changes {
        objects: objects
            .iter()
            .cloned()
            .map(ObjectChange::Upsert)
            .collect::<Vec<_>>(),
        refs_changed: false,
    };
    let start = Instant::now();
    state
        .apply(policy, &world, changes, &|| false)
        .expect("no budget");
    let first = start.elapsed().as_secs_f64();
    let mut one = Vec::new();
    let mut full = Vec::new();
    // The state keeps only parts of each object: the full evaluation reads the objects whole.
    let mut added: Vec<Value> = Vec::new();
    for (i, job) in objects.iter().enumerate().take(RUNS * 5) {
        let mut job = job.clone();
        job["metadata"]["name"] = json!(format!("gitjob-new-{i}"));
        job["metadata"]["uid"] = json!(format!("uid-new-{i}"));
        job["metadata"]["creationTimestamp"] = json!("2026-11-30T00:00:00Z");
        added.push(job.clone());
        let changes = Changes {
            objects: vec![ObjectChange::Upsert(job)],
            refs_changed: false,
        };
        let start = Instant::now();
        let work = state
            .apply(policy, &world, changes, &|| false)
            .expect("no budget");
        one.push(start.elapsed().as_secs_f64());
        assert_eq!(work.placed, 1);
        let start = Instant::now();
        let snap = retainer::engine::Snapshot {
            objects: objects.iter().chain(added.iter()).collect(),
            refs: &refs,
            custom_referrers: Vec::new(),
            namespace_labels: &ns,
            now: world.now,
        };
        let eval = evaluate(policy, &snap);
        full.push(start.elapsed().as_secs_f64());
        assert_eq!(eval.summary, state.summary());
    }
    let (one, full) = (median(one), median(full));
    println!(
        "Jobs, fleet-gitjobs policy, one Job added to {}: incremental {:.3} ms, full {:.1} ms ({:.0}x); first incremental apply {:.1} ms",
        objects.len(),
        one * 1e3,
        full * 1e3,
        full / one,
        first * 1e3
    );
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

/// The comparison with cel-go (`bench/eval.sh`), on the generated files.
mod data {
    use std::cmp::Ordering;
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use cel::Value as CelValue;
    use cel::common::value::Val;
    use retainer::api::TargetKind;
    use retainer::check;
    use retainer::engine::{CompiledPolicy, Snapshot, evaluate, labels_of, selects};
    use retainer::expr::{self, Compiled, Field, FieldTree, Vars};
    use retainer::refs::RefIndex;
    use serde_json::Value;

    use super::median;

    /// (example policy, data file): each Job and Secret example over the file of its kind.
    const SCENARIOS: &[(&str, &str)] = &[
        ("fleet-gitjobs", "jobs"),
        ("finished-jobs", "jobs"),
        ("helm-history", "secrets"),
        ("unused-secrets", "secrets"),
    ];
    const NOW: &str = "2026-11-22T12:00:00Z";

    /// Prints, per scenario, the medians of `runs` wall and CPU times of:
    ///   parse       read the file and `check::parse_documents` it, as `retainer check` does
    ///   check       parse + `check::evaluate_offline` + `check::render_json`: `retainer check
    ///               -o json` without process start-up, policy loading and printing
    ///   pipeline    `engine::evaluate` alone, over objects already parsed
    ///   cel         CEL alone: per selected object, bind it (`expr::project`) and run match,
    ///               groupBy, orderBy and keep; ranks, ages and referrers are computed outside
    ///               the timing, and guards are not applied, exactly as bench/celgo does
    ///   cel-bind    of which binding: `expr::project` of every selected object, timed apart
    ///
    /// With `reports`, the `check` report of each scenario is written there as
    /// `report-retainer-<scenario>-<n>.json`, for comparing verdicts with cel-go's.
    pub fn data_bench(dir: &str, n: &str, runs: usize, only: Option<&str>, reports: Option<&str>) {
        let root = env!("CARGO_MANIFEST_DIR");
        for &(name, file) in SCENARIOS {
            if only.is_some_and(|o| o != name) {
                continue;
            }
            let policy_path = format!("{root}/examples/{name}/policy.yaml");
            let data_path = format!("{dir}/{file}-{n}.json");
            let policy = load_policy(&policy_path);
            let now: jiff::Timestamp = NOW.parse().expect("time");
            let emit = |measure: &str, times: &[Times], objects: usize, evals: usize| {
                let wall = median(times.iter().map(|t| t.wall).collect());
                let cpu = median(times.iter().map(|t| t.cpu).collect());
                println!("RESULT\t{name}\t{measure}\t{wall:.6}\t{cpu:.6}\t{objects}\t{evals}");
            };

            let mut parse = Vec::new();
            let mut check_t = Vec::new();
            let mut governed = 0;
            let mut report = String::new();
            for _ in 0..runs {
                let start = Clock::start();
                let objs = read_objects(&data_path);
                parse.push(start.elapsed());
                let eval = check::evaluate_offline(&policy, objs, now);
                let out = check::render_json(&policy, &eval);
                check_t.push(start.elapsed());
                governed = eval.summary.governed as usize;
                report = out;
            }
            if let Some(r) = reports {
                // What `retainer check -o json` prints: the report and a newline.
                std::fs::write(
                    format!("{r}/report-retainer-{name}-{n}.json"),
                    report + "\n",
                )
                .expect("report written");
            }

            let mut objs = read_objects(&data_path);
            for o in &mut objs {
                check::strip_secret_data(o);
            }
            let target = policy.target.as_str();
            let (targets, others): (Vec<&Value>, Vec<&Value>) = objs
                .iter()
                .partition(|o| o.get("kind").and_then(Value::as_str) == Some(target));
            let refs = RefIndex::build(others.iter().copied());
            let ns_labels: BTreeMap<String, BTreeMap<String, String>> = others
                .iter()
                .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Namespace"))
                .map(|o| {
                    let name = o.pointer("/metadata/name").and_then(Value::as_str);
                    (name.unwrap_or("").to_string(), labels_of(o))
                })
                .collect();
            let count = targets.len();
            let mut pipeline = Vec::new();
            for _ in 0..runs {
                let snap = Snapshot {
                    objects: targets.clone(),
                    refs: &refs,
                    custom_referrers: others.clone(),
                    namespace_labels: &ns_labels,
                    now,
                };
                let start = Clock::start();
                let eval = evaluate(&policy, &snap);
                pipeline.push(start.elapsed());
                assert_eq!(eval.summary.governed as usize, governed);
            }
            let exprs = Exprs::compile(&policy);
            let mut cel_t = Vec::new();
            let mut bind_t = Vec::new();
            let mut evals = 0;
            for _ in 0..runs {
                let (d, b, e) = cel_only(&policy, &exprs, &targets, &refs, &ns_labels, now);
                cel_t.push(d);
                bind_t.push(b);
                evals = e;
            }
            emit("parse", &parse, count, 0);
            emit("check", &check_t, count, governed);
            emit("pipeline", &pipeline, count, governed);
            emit("cel", &cel_t, count, evals);
            emit("cel-bind", &bind_t, count, 0);
        }
    }

    /// Times each line of `bench/cel-exprs.tsv`: an example policy's expressions as `cel_only`
    /// runs them, or one expression compiled as a keep and run over every object of its kind
    /// (bound with `expr::project` and run with `eval_keep`, as the pipeline runs keep). One
    /// untimed pass, then the median of `runs`. Prints `EXPR name wall_s cpu_s objects held
    /// errors`, as `celgo -mode exprs` does (for a policy, held is the number of evaluations).
    pub fn exprs_bench(path: &str, dir: &str, n: &str, runs: usize) {
        let root = env!("CARGO_MANIFEST_DIR");
        let now: jiff::Timestamp = NOW.parse().expect("time");
        let now_c = to_chrono(now);
        let text = std::fs::read_to_string(path).expect("expressions file");
        let mut files: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for line in text.lines() {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut f = line.splitn(3, '\t');
            let (Some(name), Some(data), Some(source)) = (f.next(), f.next(), f.next()) else {
                panic!("{path}: not name<TAB>data<TAB>expression: {line:?}");
            };
            let data_name = if data == "policy" {
                let policy = load_policy(&format!("{root}/examples/{source}/policy.yaml"));
                match policy.target {
                    TargetKind::Job => "jobs",
                    TargetKind::Secret => "secrets",
                    _ => panic!("{source}: only Job and Secret policies are benchmarked"),
                }
            } else {
                data
            };
            let objs = files.entry(data_name.to_string()).or_insert_with(|| {
                let mut objs = read_objects(&format!("{dir}/{data_name}-{n}.json"));
                for o in &mut objs {
                    check::strip_secret_data(o);
                }
                objs
            });
            let mut times = Vec::new();
            let (objects, mut held, mut errors);
            if data == "policy" {
                let policy = load_policy(&format!("{root}/examples/{source}/policy.yaml"));
                let target = policy.target.as_str();
                let (targets, others): (Vec<&Value>, Vec<&Value>) = objs
                    .iter()
                    .partition(|o| o.get("kind").and_then(Value::as_str) == Some(target));
                let refs = RefIndex::build(others.iter().copied());
                let ns_labels: BTreeMap<String, BTreeMap<String, String>> = others
                    .iter()
                    .filter(|o| o.get("kind").and_then(Value::as_str) == Some("Namespace"))
                    .map(|o| {
                        let name = o.pointer("/metadata/name").and_then(Value::as_str);
                        (name.unwrap_or("").to_string(), labels_of(o))
                    })
                    .collect();
                let exprs = Exprs::compile(&policy);
                objects = targets.len();
                held = 0;
                errors = 0;
                for i in 0..=runs {
                    let (d, _, e) = cel_only(&policy, &exprs, &targets, &refs, &ns_labels, now);
                    if i > 0 {
                        times.push(d);
                    }
                    held = e;
                }
            } else {
                let kind = match data {
                    "jobs" => "Job",
                    "secrets" => "Secret",
                    other => panic!("{path}: unknown data {other:?}"),
                };
                let keep = Compiled::compile(Field::Keep, source).expect("expression compiles");
                let ins: Vec<(&Value, chrono::Duration)> = objs
                    .iter()
                    .filter(|o| o.get("kind").and_then(Value::as_str) == Some(kind))
                    .map(|o| {
                        let created = o
                            .pointer("/metadata/creationTimestamp")
                            .and_then(Value::as_str)
                            .and_then(|c| c.parse::<jiff::Timestamp>().ok());
                        let age =
                            created.map_or(0, |c| (now.as_nanosecond() - c.as_nanosecond()).max(0));
                        (o, chrono::Duration::nanoseconds(age as i64))
                    })
                    .collect();
                let empty = Value::Array(Vec::new());
                let no_refs = expr::json_to_val(&empty);
                objects = ins.len();
                (held, errors) = (0, 0);
                for i in 0..=runs {
                    (held, errors) = (0, 0);
                    let start = Clock::start();
                    for &(o, age) in &ins {
                        let bound = expr::project(o, &keep.fields);
                        let v = Vars {
                            object: bound.as_ref(),
                            now: now_c,
                            age,
                            group: Some(""),
                            rank: Some(0),
                            group_size: Some(1),
                            referenced_by: Some(no_refs.as_ref()),
                        };
                        match keep.eval_keep(&v) {
                            Ok(Some(_)) => held += 1,
                            Ok(None) => {}
                            Err(_) => errors += 1,
                        }
                    }
                    if i > 0 {
                        times.push(start.elapsed());
                    }
                }
            }
            let wall = median(times.iter().map(|t| t.wall).collect());
            let cpu = median(times.iter().map(|t| t.cpu).collect());
            println!("EXPR\t{name}\t{wall:.6}\t{cpu:.6}\t{objects}\t{held}\t{errors}");
        }
    }

    fn load_policy(path: &str) -> CompiledPolicy {
        let text = std::fs::read_to_string(path).expect("policy file");
        let docs = check::parse_documents(path, &text).expect("policy parses");
        let view = check::policy_from_document(path, &docs[0]).expect("a policy");
        CompiledPolicy::compile(view).expect("policy compiles")
    }

    fn read_objects(path: &str) -> Vec<Value> {
        let text = std::fs::read_to_string(path).expect("objects file");
        check::parse_documents(path, &text).expect("objects parse")
    }

    /// The policy's expressions, compiled as `CompiledPolicy::compile` compiles them (its own
    /// are private), and the object fields they read together.
    pub struct Exprs {
        r#match: Option<Compiled>,
        group_by: Option<Compiled>,
        order_by: Option<Compiled>,
        keep: Compiled,
        fields: FieldTree,
    }

    impl Exprs {
        pub fn compile(policy: &CompiledPolicy) -> Exprs {
            let spec = &policy.view.spec;
            let opt = |f: Field, s: &Option<String>| {
                s.as_deref()
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Compiled::compile(f, s).expect("compiles"))
            };
            let e = Exprs {
                r#match: opt(Field::Match, &spec.r#match),
                group_by: opt(Field::GroupBy, &spec.group_by),
                order_by: opt(Field::OrderBy, &spec.order_by),
                keep: Compiled::compile(Field::Keep, spec.keep.trim()).expect("compiles"),
                fields: FieldTree::default(),
            };
            let mut fields = FieldTree::default();
            for c in [&e.r#match, &e.group_by, &e.order_by].into_iter().flatten() {
                fields.merge(&c.fields);
            }
            fields.merge(&e.keep.fields);
            Exprs { fields, ..e }
        }
    }

    /// An orderBy value, for ranking outside the timing.
    #[derive(Clone, Debug, PartialEq, PartialOrd)]
    enum Key {
        Int(i64),
        Str(String),
        Time(i128),
        Other,
    }

    fn key_of(v: &CelValue) -> Key {
        match v {
            CelValue::Int(i) => Key::Int(*i),
            CelValue::String(s) => Key::Str(s.to_string()),
            CelValue::Timestamp(t) => Key::Time(t.timestamp_nanos_opt().unwrap_or(0).into()),
            _ => Key::Other,
        }
    }

    struct Sel<'a> {
        obj: &'a Value,
        age: chrono::Duration,
        created: i128,
        bound: Option<Box<dyn Val + 'a>>,
        matched: bool,
        group: String,
        key: Key,
        rank: i64,
        size: i64,
    }

    fn to_chrono(t: jiff::Timestamp) -> chrono::DateTime<chrono::FixedOffset> {
        chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
            .unwrap_or_default()
            .fixed_offset()
    }

    // Not inlined, so a profiler can single it out (valgrind --toggle-collect='*cel_only*').
    #[inline(never)]
    fn cel_only<'a>(
        policy: &CompiledPolicy,
        exprs: &Exprs,
        targets: &[&'a Value],
        refs: &RefIndex,
        ns_labels: &BTreeMap<String, BTreeMap<String, String>>,
        now: jiff::Timestamp,
    ) -> (Times, Times, usize) {
        let now_c = to_chrono(now);
        let str_at = |o: &Value, p: &str| {
            o.pointer(p)
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string()
        };
        let mut sels: Vec<Sel<'a>> = Vec::new();
        let mut refs_json: Vec<Value> = Vec::new();
        for &obj in targets {
            if !selects(policy, obj, ns_labels) {
                continue;
            }
            let created = str_at(obj, "/metadata/creationTimestamp")
                .parse::<jiff::Timestamp>()
                .ok();
            let age = created.map_or(0, |c| (now.as_nanosecond() - c.as_nanosecond()).max(0));
            let r = if policy.target == TargetKind::Secret {
                refs.secret_referrers(
                    &str_at(obj, "/metadata/namespace"),
                    &str_at(obj, "/metadata/name"),
                )
            } else {
                Vec::new()
            };
            refs_json.push(serde_json::to_value(&r).expect("referrers serialise"));
            sels.push(Sel {
                obj,
                age: chrono::Duration::nanoseconds(age as i64),
                created: created.map_or(0, |c| c.as_nanosecond()),
                bound: None,
                matched: false,
                group: String::new(),
                key: Key::Other,
                rank: 0,
                size: 0,
            });
        }
        let refs_val: Vec<Box<dyn Val + '_>> = refs_json.iter().map(expr::json_to_val).collect();
        let mut evals = 0;

        // Binding alone, to tell conversion from interpretation; not part of the total.
        let start = Clock::start();
        for s in &sels {
            std::hint::black_box(expr::project(s.obj, &exprs.fields));
        }
        let bind = start.elapsed();

        let start = Clock::start();
        for s in &mut sels {
            s.bound = Some(expr::project(s.obj, &exprs.fields));
            let bound = s.bound.as_deref().expect("bound");
            let mut v = Vars {
                object: bound,
                now: now_c,
                age: s.age,
                group: None,
                rank: None,
                group_size: None,
                referenced_by: None,
            };
            if let Some(m) = &exprs.r#match {
                evals += 1;
                if m.eval_bool(&v) != Ok(true) {
                    continue;
                }
            }
            s.matched = true;
            if let Some(g) = &exprs.group_by {
                evals += 1;
                s.group = g.eval_string(&v).unwrap_or_default();
            }
            s.key = Key::Time(s.created);
            if let Some(o) = &exprs.order_by {
                evals += 1;
                v.group = Some(&s.group);
                s.key = o.eval(&v).map_or(Key::Other, |k| key_of(&k));
            }
        }
        let phase_a = start.elapsed();

        // Rank as the pipeline does: highest key first, ties by name.
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, s) in sels.iter().enumerate().filter(|(_, s)| s.matched) {
            groups.entry(s.group.as_str()).or_default().push(i);
        }
        let name = |i: usize| {
            sels[i]
                .obj
                .pointer("/metadata/name")
                .and_then(Value::as_str)
        };
        let mut ranks = Vec::new();
        for members in groups.values_mut() {
            members.sort_by(|&a, &b| {
                sels[b]
                    .key
                    .partial_cmp(&sels[a].key)
                    .unwrap_or(Ordering::Equal)
                    .then_with(|| name(a).cmp(&name(b)))
            });
            for (rank, &i) in members.iter().enumerate() {
                ranks.push((i, rank as i64, members.len() as i64));
            }
        }
        for (i, rank, size) in ranks {
            sels[i].rank = rank;
            sels[i].size = size;
        }

        let start = Clock::start();
        for (s, r) in sels.iter().zip(&refs_val) {
            if !s.matched {
                continue;
            }
            evals += 1;
            let v = Vars {
                object: s.bound.as_deref().expect("bound"),
                now: now_c,
                age: s.age,
                group: Some(&s.group),
                rank: Some(s.rank),
                group_size: Some(s.size),
                referenced_by: Some(r.as_ref()),
            };
            let _ = std::hint::black_box(exprs.keep.eval_keep(&v));
        }
        let phase_b = start.elapsed();
        let total = Times {
            wall: phase_a.wall + phase_b.wall,
            cpu: phase_a.cpu + phase_b.cpu,
        };
        (total, bind, evals)
    }

    /// Wall and CPU seconds of one measurement.
    #[derive(Clone, Copy, Debug)]
    pub struct Times {
        wall: f64,
        cpu: f64,
    }

    /// CPU time is the whole process's: on a shared machine under load it moves far less than
    /// wall time, and for a single-threaded program it is exactly one core's work.
    struct Clock {
        wall: Instant,
        cpu: Duration,
    }

    impl Clock {
        fn start() -> Clock {
            Clock {
                wall: Instant::now(),
                cpu: process_cpu_time(),
            }
        }

        fn elapsed(&self) -> Times {
            Times {
                wall: self.wall.elapsed().as_secs_f64(),
                cpu: (process_cpu_time() - self.cpu).as_secs_f64(),
            }
        }
    }

    fn process_cpu_time() -> Duration {
        #[repr(C)]
        struct Timespec {
            sec: i64,
            nsec: i64,
        }
        unsafe extern "C" {
            fn clock_gettime(clock: i32, ts: *mut Timespec) -> i32;
        }
        const CLOCK_PROCESS_CPUTIME_ID: i32 = 2;
        let mut ts = Timespec { sec: 0, nsec: 0 };
        // SAFETY: `ts` is a valid, writable timespec and the clock exists on every Linux (the
        // benchmarks' platform); the call writes nothing else.
        let rc = unsafe { clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
        assert_eq!(rc, 0, "clock_gettime");
        Duration::new(ts.sec as u64, ts.nsec as u32)
    }
}
