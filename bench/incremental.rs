//! Incremental evaluation as the controller runs it: `bench/incremental.sh`, or
//!
//! `cargo bench --bench incremental -- --data bench/data --n 100000 [--changes 200] [--runs 3]`
//!
//! Loads `jobs-N.json` (written by `bench/gen_objects.py`) into a controller cache, as its watch
//! would, and for each scenario times what a policy's worker runs on the blocking pool:
//!
//! - `full`: what the worker did for every change before it kept state, and still does on start
//!   and on a policy edit: parse every cached Job with the fields the policy reads, select,
//!   and evaluate the whole pipeline (`engine::evaluate_within`). Median of `--runs`.
//! - `first`: the worker's first evaluation, which builds the incremental state from every
//!   selected object (`controller::incremental::evaluate` without a state). One run.
//! - `change`: one Job modified, added or deleted in the cache (in turn), then the worker's
//!   evaluation of it: the cache's change log read, the changed Job parsed and selected, the
//!   state updated (`IncrementalEvaluation::apply`), and the verdicts copied out for status and
//!   sweeps. Each change timed alone; p50, p99 and max over `--changes` changes.
//! - `copy`: of `change`, the copy of the verdicts (`Tracked::evaluation`), timed on its own
//!   after each change.
//!
//! After the changes the verdicts are compared with a full evaluation of the cache as it then
//! is. Output: tab-separated `RESULT` and `CHANGE` lines, which `bench/incremental.sh` turns
//! into bench/results/incremental.md.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use jiff::Timestamp;
use retainer::check;
use retainer::controller::caches::{Cache, Kind};
use retainer::controller::incremental::{self, Inputs, Mode, Tracked};
use retainer::engine::{
    CompiledPolicy, Evaluation, ObjectId, Snapshot, evaluate_within, labels_of, selects,
};
use retainer::expr::FieldTree;
use retainer::refs::RefIndex;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

/// The time the generated objects are made relative to (bench/gen_objects.py).
const NOW: &str = "2026-11-22T12:00:00Z";

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn load_policy(path: &str) -> CompiledPolicy {
    let text = std::fs::read_to_string(path).expect("policy file");
    let docs = check::parse_documents(path, &text).expect("policy parses");
    let view = check::policy_from_document(path, &docs[0]).expect("a policy");
    CompiledPolicy::compile(view).expect("policy compiles")
}

#[derive(Deserialize)]
struct List<'a> {
    #[serde(borrow)]
    items: Vec<&'a RawValue>,
}

/// A deterministic sequence (splitmix64): the same changes on every run.
struct Seq(u64);

impl Seq {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// The Jobs of the file in a controller cache, as its watch would hold them, with their uids,
/// and the namespaces' labels.
fn load(
    path: &str,
) -> (
    Cache,
    Vec<String>,
    BTreeMap<String, BTreeMap<String, String>>,
) {
    let text = std::fs::read_to_string(path).expect("objects file");
    let list: List = serde_json::from_str(&text).expect("a List");
    let head = FieldTree::of(&[&["kind"], &["metadata"]]);
    let mut objects = std::collections::HashMap::new();
    let mut uids = Vec::new();
    let mut namespaces = BTreeMap::new();
    for item in list.items {
        let meta = retainer::json::parse_pruned(item.get(), &head).expect("an object");
        match meta["kind"].as_str() {
            Some("Job") => {
                let uid = meta["metadata"]["uid"].as_str().expect("a uid").to_string();
                // Compact, as the cache writes it.
                let obj: Value = serde_json::from_str(item.get()).expect("a Job");
                objects.insert(Arc::from(uid.as_str()), Arc::from(obj.to_string()));
                uids.push(uid);
            }
            Some("Namespace") => {
                let name = meta["metadata"]["name"].as_str().unwrap_or("").to_string();
                namespaces.insert(name, labels_of(&meta));
            }
            _ => {}
        }
    }
    let cache = Cache::new(Kind::jobs());
    cache.relisted(objects);
    uids.sort();
    (cache, uids, namespaces)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn sorted_results(mut e: Evaluation) -> Evaluation {
    e.results.sort_by_key(|r| match &r.id {
        ObjectId::Kube {
            namespace,
            name,
            uid,
            ..
        } => (namespace.to_string(), name.to_string(), uid.to_string()),
        ObjectId::Oci {
            repository, digest, ..
        } => (repository.clone(), digest.clone(), String::new()),
    });
    e
}

fn full(
    policy: &CompiledPolicy,
    cache: &Cache,
    namespaces: &BTreeMap<String, BTreeMap<String, String>>,
    now: Timestamp,
) -> Evaluation {
    let refs = RefIndex::default();
    let objects = cache.parsed_where(&policy.retained_fields(), |o| {
        selects(policy, o, namespaces)
    });
    let snap = Snapshot {
        objects: objects.iter().collect(),
        refs: &refs,
        custom_referrers: Vec::new(),
        namespace_labels: namespaces,
        now,
    };
    evaluate_within(policy, &snap, &|| false).expect("no budget")
}

/// One change to the cache: a Job modified (a new resourceVersion, its success flipped, so
/// that match and its group's ranks move), a Job added (a copy of one, newer than the rest of
/// its group) or a Job deleted.
/// `i` picks the kind of change; `serial` numbers changes across scenarios, so that new Jobs
/// and resourceVersions never repeat.
fn change(
    cache: &Cache,
    uids: &mut Vec<String>,
    seq: &mut Seq,
    (i, serial): (usize, usize),
    now: Timestamp,
) {
    let kinds = ["modify", "add", "delete"];
    let at = seq.below(uids.len());
    let uid = uids[at].clone();
    let Some(text) = cache.text(&uid) else {
        return;
    };
    let mut obj: Value = serde_json::from_str(&text).expect("cached text parses");
    let rv = format!("9{serial:08}");
    match kinds[i % 3] {
        "modify" => {
            obj["metadata"]["resourceVersion"] = Value::from(rv);
            let succeeded = obj["status"]["succeeded"].as_i64().unwrap_or(0);
            obj["status"]["succeeded"] = Value::from(1 - succeeded.min(1));
            cache.applied(&uid, Arc::from(obj.to_string()));
        }
        "add" => {
            let new_uid = format!("bench-new-{serial:08}");
            let name = format!(
                "{}-new-{serial}",
                obj["metadata"]["name"].as_str().unwrap_or("")
            );
            obj["metadata"]["uid"] = Value::from(new_uid.clone());
            obj["metadata"]["name"] = Value::from(name);
            obj["metadata"]["resourceVersion"] = Value::from(rv);
            let created = now.as_second() - 3600;
            obj["metadata"]["creationTimestamp"] =
                Value::from(Timestamp::from_second(created).expect("time").to_string());
            cache.applied(&new_uid, Arc::from(obj.to_string()));
            uids.push(new_uid);
        }
        _ => {
            cache.deleted(&uid);
            uids.swap_remove(at);
        }
    }
}

fn main() {
    // `cargo test --all-targets` runs this binary too, without `--bench`: stay quick there.
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("incremental evaluation benchmark: run it with bench/incremental.sh");
        return;
    }
    let data = flag(&args, "--data").unwrap_or("bench/data");
    let n: usize = flag(&args, "--n").unwrap_or("100000").parse().expect("--n");
    let changes: usize = flag(&args, "--changes")
        .unwrap_or("200")
        .parse()
        .expect("--changes");
    let runs: usize = flag(&args, "--runs")
        .unwrap_or("3")
        .parse()
        .expect("--runs");
    let root = env!("CARGO_MANIFEST_DIR");
    let start = Instant::now();
    let (cache, mut uids, namespaces) = load(&format!("{data}/jobs-{n}.json"));
    eprintln!(
        "loaded {} Jobs in {:.1} s",
        cache.len(),
        start.elapsed().as_secs_f64()
    );
    let t0: Timestamp = NOW.parse().expect("time");
    // (policy, whether `now` moves by a second between changes, share of --changes). The
    // scenarios run one after the other on the same cache, each going on from the changes of
    // the one before.
    let scenarios = [
        ("fleet-gitjobs", false, 1),
        ("finished-jobs", false, 1),
        ("finished-jobs", true, 10),
    ];
    let mut serial = 0;
    for (name, clock, share) in scenarios {
        let policy = load_policy(&format!("{root}/examples/{name}/policy.yaml"));
        let label = if clock {
            format!("{name}, now +1 s a change")
        } else {
            name.to_string()
        };
        let mut full_times = Vec::new();
        let mut governed = 0;
        for _ in 0..runs {
            let start = Instant::now();
            let e = full(&policy, &cache, &namespaces, t0);
            full_times.push(start.elapsed().as_secs_f64() * 1e3);
            governed = e.summary.governed;
        }
        full_times.sort_by(f64::total_cmp);
        let full_ms = full_times[full_times.len() / 2];

        let refs = Arc::new(RefIndex::default());
        // As the worker does: the verdicts it holds are not copied again when none changed.
        let inputs = |now, held| Inputs {
            policy: &policy,
            target: &cache,
            refs: refs.clone(),
            custom_referrers: &[],
            namespace_labels: &namespaces,
            now,
            held,
        };
        let start = Instant::now();
        let out = incremental::evaluate(None, &inputs(t0, None), &|| false);
        let first_ms = start.elapsed().as_secs_f64() * 1e3;
        assert!(matches!(out.mode, Mode::Full(_)));
        let mut tracked: Option<Tracked> = out.tracked;
        let mut last = out.result.expect("no budget").expect("nothing held");

        let mut seq = Seq(14);
        let mut now = t0;
        let count = (changes / share).max(3);
        let mut times: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
        let mut copies = Vec::new();
        for i in 0..count {
            if clock {
                now = Timestamp::from_second(now.as_second() + 1).expect("time");
            }
            serial += 1;
            change(&cache, &mut uids, &mut seq, (i, serial), now);
            let start = Instant::now();
            let held = tracked.as_ref().map(Tracked::generation);
            let out = incremental::evaluate(tracked.take(), &inputs(now, held), &|| false);
            let ms = start.elapsed().as_secs_f64() * 1e3;
            assert_eq!(out.mode, Mode::Changes(1), "{label}: one change");
            if let Some(e) = out.result.expect("no budget") {
                last = e;
            }
            tracked = out.tracked;
            let start = Instant::now();
            let copy = tracked.as_ref().map(Tracked::evaluation);
            copies.push(start.elapsed().as_secs_f64() * 1e3);
            drop(copy);
            times
                .entry(["modify", "add", "delete"][i % 3])
                .or_default()
                .push(ms);
            times.entry("all").or_default().push(ms);
        }
        let same = sorted_results(last) == sorted_results(full(&policy, &cache, &namespaces, now));
        copies.sort_by(f64::total_cmp);
        for v in times.values_mut() {
            v.sort_by(f64::total_cmp);
        }
        let all = &times["all"];
        println!(
            "RESULT\t{n}\t{label}\t{full_ms:.3}\t{first_ms:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{:.3}\t{}\t{}\t{governed}\t{runs}",
            percentile(all, 50.0),
            percentile(all, 99.0),
            all.last().copied().unwrap_or(f64::NAN),
            percentile(&copies, 50.0),
            percentile(&copies, 99.0),
            all.len(),
            if same { "same" } else { "DIFFERENT" },
        );
        for (kind, v) in &times {
            if *kind != "all" {
                println!(
                    "CHANGE\t{n}\t{label}\t{kind}\t{:.3}\t{:.3}\t{}",
                    percentile(v, 50.0),
                    percentile(v, 99.0),
                    v.len()
                );
            }
        }
        eprintln!(
            "N={n} {label}: full {full_ms:.1} ms, first {first_ms:.1} ms, change p50 {:.3} ms p99 {:.3} ms, verdicts {}",
            percentile(all, 50.0),
            percentile(all, 99.0),
            if same { "same" } else { "DIFFERENT" }
        );
    }
}
