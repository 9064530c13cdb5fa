//! OCI sweep cost (issue #7): what a first and a repeat sweep of a registry cost in time and in
//! requests by kind, against a plain parallel DELETE client deleting the same digests (the
//! limit). Run by `bench/oci.sh`, which starts a private olareg; this driver only needs a
//! registry address.
//!
//! Each run pushes `--tags` small images (distinct configs, one shared layer) as semver tags
//! spread over `--repos` fresh repositories, then drives the controller's own code path with a
//! policy keeping the `--keep` highest tags per repository:
//! - first sweep: a cold cache (a new process), the inventory, the evaluation, the fresh check
//!   of each repository and the deletes (`Executor::delete_oci`);
//! - repeat sweep: the same again with the cache warm and nothing left to delete;
//! - limit: the deleted images are pushed again (same bytes, same digests) and deleted by
//!   plain `DELETE /v2/<repo>/manifests/<digest>` requests at the same concurrency.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use futures::StreamExt;
use retainer::api::{PolicyView, RetentionPolicySpec};
use retainer::controller::sweep::{
    Executor, InUse, Outcome, RateLimiter, SweepPlan, TargetId, plan_sweep,
};
use retainer::engine::CompiledPolicy;
use retainer::oci::{ManifestCache, RegistryOptions, RequestKind, RequestTally, fetch_inventory};
use serde_json::json;
use sha2::{Digest, Sha256};

#[derive(Parser)]
struct Args {
    /// host:port of an OCI registry with deletes enabled.
    #[arg(long)]
    registry: String,
    /// Images (tags) in all.
    #[arg(long, default_value_t = 2000)]
    tags: usize,
    #[arg(long, default_value_t = 20)]
    repos: usize,
    /// Tags kept per repository; the rest are deleted.
    #[arg(long)]
    keep: Option<usize>,
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Deletes in flight, for retainer (`--delete-concurrency`) and the plain client alike.
    #[arg(long, default_value_t = 10)]
    delete_concurrency: usize,
    /// retainer's `--registry-concurrency` (inventory requests in flight).
    #[arg(long, default_value_t = 8)]
    registry_concurrency: usize,
    /// Pushes in flight while setting up.
    #[arg(long, default_value_t = 16)]
    push_concurrency: usize,
    /// Markdown file to write.
    #[arg(long)]
    out: Option<String>,
    /// Where the figures go, one `key<TAB>value<TAB>unit` line each (bench/README.md).
    #[arg(long)]
    tsv: Option<String>,
    /// The command line to print in the results.
    #[arg(long, default_value = "")]
    command_line: String,
    /// Registry name and version, for the results.
    #[arg(long, default_value = "olareg")]
    registry_version: String,
    #[arg(long, default_value = "unknown")]
    rev: String,
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(b))
}

type Failure = String;

/// One image: its repository, tag and manifest bytes.
struct Image {
    repo: String,
    tag: String,
    manifest: Vec<u8>,
}

async fn upload_blob(
    http: &reqwest::Client,
    reg: &str,
    repo: &str,
    blob: &[u8],
) -> Result<(), Failure> {
    let resp = http
        .post(format!("http://{reg}/v2/{repo}/blobs/uploads/"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let location = resp
        .headers()
        .get("location")
        .and_then(|l| l.to_str().ok())
        .ok_or(format!("upload to {repo}: no location ({})", resp.status()))?
        .to_string();
    let url = if location.starts_with("http") {
        location
    } else {
        format!("http://{reg}{location}")
    };
    let sep = if url.contains('?') { '&' } else { '?' };
    let resp = http
        .put(format!("{url}{sep}digest={}", sha256(blob)))
        .header("content-type", "application/octet-stream")
        .body(blob.to_vec())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("blob upload to {repo}: {}", resp.status()));
    }
    Ok(())
}

async fn put_manifest(http: &reqwest::Client, reg: &str, img: &Image) -> Result<(), Failure> {
    let resp = http
        .put(format!(
            "http://{reg}/v2/{}/manifests/{}",
            img.repo, img.tag
        ))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(img.manifest.clone())
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        return Err(format!("put {}:{}: {}", img.repo, img.tag, resp.status()));
    }
    Ok(())
}

/// Pushes `n` images over `repos` repositories: per image one config blob and one manifest,
/// all images of a repository sharing one layer.
async fn push_all(args: &Args, prefix: &str) -> Result<(Vec<Image>, Duration), Failure> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let per_repo = args.tags / args.repos;
    let layer = b"one layer shared by every image".to_vec();
    let mut images = Vec::new();
    let mut configs = Vec::new();
    for r in 0..args.repos {
        let repo = format!("{prefix}/app-{r:02}");
        upload_blob(&http, &args.registry, &repo, &layer).await?;
        for i in 0..per_repo {
            let config = serde_json::to_vec(&json!({
                "created": format!("2026-01-01T00:{:02}:{:02}Z", (i / 60) % 60, i % 60),
                "architecture": "amd64", "os": "linux",
                "config": {"Labels": {"image": format!("{repo}:{i}")}},
                "rootfs": {"type": "layers", "diff_ids": []}
            }))
            .map_err(|e| e.to_string())?;
            let manifest = serde_json::to_vec(&json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
            }))
            .map_err(|e| e.to_string())?;
            configs.push((repo.clone(), config));
            images.push(Image {
                repo: repo.clone(),
                tag: format!("1.{}.{}", i / 100, i % 100),
                manifest,
            });
        }
    }
    let results: Vec<Result<(), Failure>> = futures::stream::iter(configs.iter())
        .map(|(repo, config)| upload_blob(&http, &args.registry, repo, config))
        .buffer_unordered(args.push_concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    let results: Vec<Result<(), Failure>> = futures::stream::iter(images.iter())
        .map(|img| put_manifest(&http, &args.registry, img))
        .buffer_unordered(args.push_concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok((images, started.elapsed()))
}

fn policy(args: &Args, repos: &[String], keep: usize) -> Result<CompiledPolicy, Failure> {
    let spec: RetentionPolicySpec = serde_json::from_value(json!({
        "target": {"kind": "OCIArtifact", "registry": {"url": format!("http://{}", args.registry), "repositories": repos}},
        "orderBy": "semver(object.tags[0])",
        "keep": format!("rank < {keep}"),
        "schedule": "0 0 29 2 *"}))
    .map_err(|e| e.to_string())?;
    CompiledPolicy::compile(PolicyView {
        namespace: Some("bench".into()),
        name: "oci".into(),
        generation: Some(1),
        spec,
    })
    .map_err(|e| e.to_string())
}

/// One sweep as the controller makes it; returns (phase times, requests, digests deleted).
struct Swept {
    inventory: Duration,
    evaluation: Duration,
    check_and_delete: Duration,
    total: Duration,
    requests: RequestTally,
    deleted: Vec<(String, String)>,
}

async fn sweep(
    args: &Args,
    kube: &kube::Client,
    cache: &ManifestCache,
    policy: &CompiledPolicy,
) -> Result<Swept, Failure> {
    let opts = RegistryOptions {
        concurrency: args.registry_concurrency,
        ..RegistryOptions::default()
    };
    let started = Instant::now();
    let (client, docs) = fetch_inventory(kube, &opts, cache, policy)
        .await
        .map_err(|r| format!("{}: {}", r.reason, r.message))?;
    let inventory = started.elapsed();
    let t = Instant::now();
    let now = jiff::Timestamp::now();
    let eval = retainer::check::evaluate_offline(policy, docs.clone(), now);
    let targets = match plan_sweep(&eval, None, None, &mut HashMap::new(), now) {
        SweepPlan::Proceed { targets, .. } => targets,
        SweepPlan::Blocked { message } => return Err(message),
    };
    let evaluation = t.elapsed();
    let t = Instant::now();
    let executor = Executor {
        client: kube.clone(),
        concurrency: args.delete_concurrency,
        limiter: Arc::new(RateLimiter::new(0.0)),
        leadership: Arc::default(),
    };
    let outcomes = executor
        .delete_oci(
            &client,
            cache,
            &docs,
            targets,
            false,
            &InUse::nobody(),
            "bench/oci",
            &tokio_util::sync::CancellationToken::new(),
        )
        .await;
    let check_and_delete = t.elapsed();
    let mut deleted = Vec::new();
    for (t, o) in outcomes {
        match (t.id, o) {
            (
                TargetId::Oci {
                    repository, digest, ..
                },
                Outcome::Deleted,
            ) => deleted.push((repository, digest)),
            (id, o) => return Err(format!("{id:?}: {o:?}")),
        }
    }
    Ok(Swept {
        inventory,
        evaluation,
        check_and_delete,
        total: started.elapsed(),
        requests: client.counts.snapshot(),
        deleted,
    })
}

/// The limit: plain DELETEs of the same digests at the same concurrency.
async fn plain_delete(args: &Args, digests: &[(String, String)]) -> Result<Duration, Failure> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let results: Vec<Result<(), Failure>> = futures::stream::iter(digests)
        .map(|(repo, digest)| {
            let http = http.clone();
            async move {
                let resp = http
                    .delete(format!(
                        "http://{}/v2/{repo}/manifests/{digest}",
                        args.registry
                    ))
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("DELETE {repo}@{digest}: {}", resp.status()))
                }
            }
        })
        .buffer_unordered(args.delete_concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    Ok(started.elapsed())
}

struct Run {
    push: Duration,
    first: Swept,
    repeat: Swept,
    plain: Duration,
}

async fn run(args: &Args, kube: &kube::Client, n: usize, keep: usize) -> Result<Run, Failure> {
    let prefix = format!("bench-{}-{n}", std::process::id());
    let (images, push) = push_all(args, &prefix).await?;
    let repos: Vec<String> = (0..args.repos)
        .map(|r| format!("{prefix}/app-{r:02}"))
        .collect();
    let policy = policy(args, &repos, keep)?;
    // A new cache: the first sweep of a process.
    let cache = ManifestCache::default();
    let first = sweep(args, kube, &cache, &policy).await?;
    let want = args.repos * (args.tags / args.repos).saturating_sub(keep);
    if first.deleted.len() != want {
        return Err(format!(
            "first sweep deleted {}, not {want}",
            first.deleted.len()
        ));
    }
    let repeat = sweep(args, kube, &cache, &policy).await?;
    if !repeat.deleted.is_empty() {
        return Err(format!("repeat sweep deleted {}", repeat.deleted.len()));
    }
    // The same images again (same bytes: same digests), for the plain client to delete.
    let gone: std::collections::BTreeSet<(String, String)> =
        first.deleted.iter().cloned().collect();
    let http = reqwest::Client::new();
    let again: Vec<&Image> = images
        .iter()
        .filter(|i| gone.contains(&(i.repo.clone(), sha256(&i.manifest))))
        .collect();
    let results: Vec<Result<(), Failure>> = futures::stream::iter(again)
        .map(|img| put_manifest(&http, &args.registry, img))
        .buffer_unordered(args.push_concurrency)
        .collect()
        .await;
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    let plain = plain_delete(args, &first.deleted).await?;
    Ok(Run {
        push,
        first,
        repeat,
        plain,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn secs(runs: &[Run], f: impl Fn(&Run) -> Duration) -> f64 {
    median(runs.iter().map(|r| f(r).as_secs_f64()).collect())
}

fn requests(runs: &[Run], f: impl Fn(&Run) -> &RequestTally) -> String {
    let mut by_kind: BTreeMap<RequestKind, Vec<f64>> = BTreeMap::new();
    for r in runs {
        for k in RequestKind::ALL {
            by_kind.entry(k).or_default().push(f(r).get(k) as f64);
        }
    }
    let parts: Vec<String> = by_kind
        .into_iter()
        .map(|(k, v)| (k, median(v)))
        .filter(|(_, m)| *m > 0.0)
        .map(|(k, m)| format!("{} {m}", k.as_str()))
        .collect();
    if parts.is_empty() {
        "none".into()
    } else {
        parts.join(", ")
    }
}

fn total_requests(runs: &[Run], f: impl Fn(&Run) -> &RequestTally) -> f64 {
    median(runs.iter().map(|r| f(r).total() as f64).collect())
}

fn report(args: &Args, keep: usize, runs: &[Run]) -> String {
    let per_repo = args.tags / args.repos;
    let n = per_repo * args.repos;
    let deleted = runs.first().map(|r| r.first.deleted.len()).unwrap_or(0);
    let first = secs(runs, |r| r.first.total);
    let repeat = secs(runs, |r| r.repeat.total);
    let plain = secs(runs, |r| r.plain);
    let check = secs(runs, |r| r.first.check_and_delete);
    let mut s = String::new();
    s.push_str("## OCI sweep cost\n\n");
    s.push_str(&format!(
        "{n} images as semver tags in {} repositories ({per_repo} each; distinct image configs, one shared layer) on a private {}; a policy keeps the {keep} highest tags per repository, so a sweep deletes {deleted} manifests. Each run pushes into fresh repositories and drives the controller's own code path (`fetch_inventory`, the engine, `plan_sweep`, `Executor::delete_oci`) in one process; medians of {} runs.\n\n",
        args.repos,
        args.registry_version,
        runs.len()
    ));
    s.push_str(
        "| | what | median (s) | requests by kind (median) | requests |\n|---|---|---|---|---|\n",
    );
    s.push_str(&format!(
        "| a | first sweep, cold cache: inventory {:.2} s, evaluation {:.3} s, fresh check and deletes {:.2} s | {first:.2} | {} | {} |\n",
        secs(runs, |r| r.first.inventory),
        secs(runs, |r| r.first.evaluation),
        check,
        requests(runs, |r| &r.first.requests),
        total_requests(runs, |r| &r.first.requests),
    ));
    s.push_str(&format!(
        "| b | repeat sweep, nothing changed, nothing left to delete | {repeat:.3} | {} | {} |\n",
        requests(runs, |r| &r.repeat.requests),
        total_requests(runs, |r| &r.repeat.requests),
    ));
    s.push_str(&format!(
        "| l | plain client: `DELETE /v2/<repo>/manifests/<digest>` of the same {deleted} digests, {} in flight (the limit) | {plain:.2} | delete {deleted} | {deleted} |\n\n",
        args.delete_concurrency
    ));
    let manifest_requests = median(
        runs.iter()
            .map(|r| {
                (r.repeat.requests.get(RequestKind::ManifestHead)
                    + r.repeat.requests.get(RequestKind::ManifestGet)) as f64
            })
            .collect(),
    );
    s.push_str(&format!(
        "Ratios of medians: a/l = {:.2}, (fresh check and deletes)/l = {:.2}, a/b = {:.0}.\n",
        first / plain,
        check / plain,
        first / repeat
    ));
    s.push_str(&format!(
        "Target (issue #7): zero manifest requests on a repeat sweep, tag listings only: {} (manifest requests {manifest_requests}; {}).\n\n",
        if manifest_requests == 0.0 && total_requests(runs, |r| &r.repeat.requests) == args.repos as f64 {
            "met"
        } else {
            "not met"
        },
        requests(runs, |r| &r.repeat.requests)
    ));
    s.push_str(&format!(
        "- Before deleting from a repository a sweep lists its tags and resolves every tag again (HEAD), and lists each candidate's referrers: a tag can be re-pointed, or a signature added, without the tag list changing, and the inventory it planned from may come from the cache. That is {} requests per sweep here besides the deletes, and why a sweep costs more than the plain client's deletes alone.\n",
        per_repo * args.repos + args.repos + deleted
    ));
    s.push_str("- The first sweep of a process reads every manifest and image config once (cached by digest for the life of the process) and resolves every tag; inside the controller the status reads before a sweep usually warm the cache, so a scheduled sweep costs the repeat sweep's reads plus the fresh check of the repositories it deletes from.\n");
    s.push_str(&format!(
        "- Pushing the {n} images ({}-way concurrency; per image one config blob upload and one manifest PUT) took {:.2} s (median).\n",
        args.push_concurrency,
        secs(runs, |r| r.push)
    ));
    s.push_str(&format!(
        "- retainer: `--registry-concurrency {}`, `--delete-concurrency {}`, no rate limit (`--delete-qps 0`; the default 50/s would bind: the fresh check's reads count against it too), `--registry-timeout 10s`, `--registry-refresh 5m`.\n\n",
        args.registry_concurrency, args.delete_concurrency
    ));
    s.push_str(&format!(
        "Runs (s), first / repeat / plain: {}.\n\n",
        runs.iter()
            .map(|r| format!(
                "{:.2} / {:.3} / {:.2}",
                r.first.total.as_secs_f64(),
                r.repeat.total.as_secs_f64(),
                r.plain.as_secs_f64()
            ))
            .collect::<Vec<_>>()
            .join("; ")
    ));
    s.push_str(&format!(
        "Setup: N = {n}, {} repositories, {} runs; retainer {} (`{}`, release profile); {}; 2 cores shared with other work; {}.\n\n",
        args.repos,
        runs.len(),
        env!("CARGO_PKG_VERSION"),
        args.rev,
        args.registry_version,
        jiff::Timestamp::now().strftime("%Y-%m-%d")
    ));
    s.push_str(&format!("Command: `{}`\n", args.command_line));
    s
}

/// The figures bench/targets.sh and the summary tables read, one `key<TAB>value<TAB>unit` line
/// each; what is not finite (no runs) is left out, so a target reading it says "not measured".
fn figures(args: &Args, runs: &[Run]) -> String {
    let first = secs(runs, |r| r.first.total);
    let repeat = secs(runs, |r| r.repeat.total);
    let plain = secs(runs, |r| r.plain);
    let repeat_manifests = median(
        runs.iter()
            .map(|r| {
                (r.repeat.requests.get(RequestKind::ManifestHead)
                    + r.repeat.requests.get(RequestKind::ManifestGet)) as f64
            })
            .collect(),
    );
    let rows: [(&str, f64, &str); 12] = [
        ("tags", (args.tags / args.repos * args.repos) as f64, "tags"),
        ("repos", args.repos as f64, "repositories"),
        ("runs", runs.len() as f64, "runs"),
        (
            "deleted",
            runs.first()
                .map_or(f64::NAN, |r| r.first.deleted.len() as f64),
            "manifests",
        ),
        ("first_s", first, "s"),
        ("repeat_s", repeat, "s"),
        ("plain_s", plain, "s"),
        ("ratio_first_plain", first / plain, "x"),
        (
            "ratio_check_plain",
            secs(runs, |r| r.first.check_and_delete) / plain,
            "x",
        ),
        (
            "first_requests",
            total_requests(runs, |r| &r.first.requests),
            "requests",
        ),
        (
            "repeat_requests",
            total_requests(runs, |r| &r.repeat.requests),
            "requests",
        ),
        ("repeat_manifest_requests", repeat_manifests, "requests"),
    ];
    rows.iter()
        .filter(|(_, v, _)| v.is_finite())
        .map(|(k, v, u)| format!("{k}\t{v}\t{u}\n"))
        .collect()
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let args = Args::parse();
    if args.repos == 0 || args.tags < args.repos {
        return Err("need at least one tag per repository".into());
    }
    let keep = args.keep.unwrap_or(args.tags / args.repos / 2);
    // OCI sweeps never talk to the API server: a client that points nowhere will do.
    let kube = kube::Client::try_from(kube::Config::new(
        "http://127.0.0.1:9".parse().map_err(|e| format!("{e}"))?,
    ))
    .map_err(|e| e.to_string())?;
    let mut runs = Vec::new();
    for n in 0..args.runs {
        let r = run(&args, &kube, n, keep).await?;
        eprintln!(
            "[oci] run {}: push {:.2}s, first sweep {:.2}s ({}), repeat {:.3}s ({}), plain delete {:.2}s",
            n + 1,
            r.push.as_secs_f64(),
            r.first.total.as_secs_f64(),
            r.first.requests,
            r.repeat.total.as_secs_f64(),
            r.repeat.requests,
            r.plain.as_secs_f64()
        );
        runs.push(r);
    }
    let md = report(&args, keep, &runs);
    match &args.out {
        Some(path) => std::fs::write(path, &md).map_err(|e| format!("writing {path}: {e}"))?,
        None => print!("{md}"),
    }
    if let Some(path) = &args.tsv {
        std::fs::write(path, figures(&args, &runs)).map_err(|e| format!("writing {path}: {e}"))?;
    }
    Ok(())
}
