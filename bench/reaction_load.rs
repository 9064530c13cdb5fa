//! `bench-driver reaction-load` (issue #12, item 8): from applying a new RetentionPolicy to its
//! `Ready` condition, on a quiet controller and on one under load, measured in one run with
//! the two kinds of applies interleaved. `bench/reaction-load.sh` builds and calls it.
//!
//! Two controller processes run side by side, each handling only the policies labelled for it
//! (`--policy-selector`):
//! - quiet: nothing but the policy being measured;
//! - load: `--delete-qps 10`, `--others` Job policies, one OCIArtifact policy whose registry
//!   accepts connections and never answers, and one sweep of `--sweep-jobs` finished Jobs,
//!   requested before the first timed apply.
//!
//! Each step applies a new policy for each controller at the same moment (in namespaces of their
//! own, with the same Jobs), waits for both to show `Ready` for their generation, deletes them
//! and pauses. Both controllers share the machine, the API server and its watch events, so
//! what differs between the two columns is what the load controller is busy with.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::time::{Duration, Instant};

use clap::Args;
use futures::StreamExt;
use kube::Client;
use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event};
use serde_json::{Value, json};
use tokio::sync::watch;

use super::{
    Common, Controller, NEVER, R, Tracker, bed_contents, create_jobs, create_namespace,
    delete_namespace, install_crds, percentile, policy_api, poll, runs, say, short_id, thousands,
    today, versions, write_section,
};

/// The label that says which controller handles a policy.
const ROLE: &str = "retainer-bench-role";
/// Issue #12, item 7: a policy is Ready within 2 s of its apply under this load.
const TARGET_MS: f64 = 2000.0;
/// How long one apply may wait for Ready before it is recorded as a timeout.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Args)]
pub(crate) struct ReactionLoadArgs {
    #[command(flatten)]
    common: Common,
    /// Timed applies per controller and run.
    #[arg(long, default_value_t = 50)]
    applies: usize,
    /// Job policies besides the measured one on the loaded controller.
    #[arg(long, default_value_t = 50)]
    others: usize,
    /// Finished Jobs the loaded controller sweeps during the measurement.
    #[arg(long, default_value_t = 1000)]
    sweep_jobs: usize,
    /// The loaded controller's --delete-qps.
    #[arg(long, default_value_t = 10.0)]
    delete_qps: f64,
    /// Finished Jobs in each namespace a measured or other policy governs.
    #[arg(long, default_value_t = 100)]
    jobs: usize,
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// Pause after both policies of a step were Ready and deleted, in milliseconds.
    #[arg(long, default_value_t = 300)]
    gap_ms: u64,
}

/// The latencies of one run, in ms (infinite for a timeout), and how many of the loaded
/// applies were made while the sweep was still deleting.
struct RunResult {
    quiet: Vec<f64>,
    load: Vec<f64>,
    under_sweep: usize,
    swept: usize,
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let ram = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or("unknown".into(), |kib| {
            format!("{:.0} GiB", kib / 1024.0 / 1024.0)
        });
    format!("{cpus} vCPU ({model}), {ram} RAM")
}

/// Accepts connections and never answers them: a registry that hangs. The thread holds every
/// connection until the process exits.
fn hanging_registry() -> R<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?.to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    Ok(addr)
}

fn fmt_ms(x: f64) -> String {
    if x.is_finite() {
        format!("{x:.0}")
    } else {
        "timeout".into()
    }
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NAN, f64::max)
}

fn ratio(a: f64, b: f64) -> String {
    if a.is_finite() && b.is_finite() && b > 0.0 {
        format!("{:.1}×", a / b)
    } else {
        "–".into()
    }
}

pub(crate) async fn reaction_load(args: ReactionLoadArgs) -> R<()> {
    let client = Client::try_default().await?;
    install_crds(&client).await?;
    let bed = bed_contents(&client).await;
    let load_before = loadavg();
    let mut results = Vec::new();
    for run in 1..=args.runs {
        results.push(one_run(&client, &args, run).await?);
    }
    let load_after = loadavg();

    let quiet: Vec<f64> = results.iter().flat_map(|r| r.quiet.clone()).collect();
    let load: Vec<f64> = results.iter().flat_map(|r| r.load.clone()).collect();
    let under_sweep: usize = results.iter().map(|r| r.under_sweep).sum();
    let swept: Vec<String> = results.iter().map(|r| thousands(r.swept)).collect();
    let n = quiet.len();
    let (q50, q99, qmax) = (
        percentile(&quiet, 50.0),
        percentile(&quiet, 99.0),
        max(&quiet),
    );
    let (l50, l99, lmax) = (percentile(&load, 50.0), percentile(&load, 99.0), max(&load));
    let timeouts = |xs: &[f64]| xs.iter().filter(|x| !x.is_finite()).count();

    let mut figs = super::Figures::default();
    figs.add("applies", n as f64, "applies");
    figs.add("p50_quiet_ms", q50, "ms");
    figs.add("p99_quiet_ms", q99, "ms");
    figs.add("p50_load_ms", l50, "ms");
    figs.add("p99_load_ms", l99, "ms");
    figs.add("max_load_ms", lmax, "ms");
    figs.add("ratio_p99_load_quiet", l99 / q99, "x");
    figs.write(&args.common)?;

    // Provenance (commit, clean or not, load, runs) is the harness's header (bench/lib.sh).
    let mut md = String::new();
    md.push_str("## Reaction under load: from a new policy applied to Ready\n\n");
    md.push_str(&format!(
        "Two controllers run side by side on one test bed, each handling only the policies \
         labelled for it. The quiet one has nothing but the policy being measured. The loaded \
         one (`--delete-qps {}`) has {} other Job policies, one OCIArtifact policy whose \
         registry accepts connections and never answers, and a sweep of {} finished Jobs \
         requested before the first timed apply. Each step applies one new RetentionPolicy for \
         each controller at the same moment (each over {} finished Jobs of its own namespace) \
         and times how long until a watch shows its `Ready` condition `True` for that \
         generation; then both are deleted and the next step follows {} ms later. {} steps per \
         run, {}; percentiles by nearest rank over all {} applies of each kind ({}).\n\n",
        args.delete_qps,
        args.others,
        thousands(args.sweep_jobs),
        thousands(args.jobs),
        args.gap_ms,
        args.applies,
        runs(args.runs),
        n,
        super::p99_rank(n),
    ));
    md.push_str(
        "| controller | p50 (ms) | p99 (ms) | max (ms) | timeouts |\n|---|---|---|---|---|\n",
    );
    md.push_str(&format!(
        "| quiet | {} | {} | {} | {} |\n",
        fmt_ms(q50),
        fmt_ms(q99),
        fmt_ms(qmax),
        timeouts(&quiet)
    ));
    md.push_str(&format!(
        "| under load | {} | {} | {} | {} |\n",
        fmt_ms(l50),
        fmt_ms(l99),
        fmt_ms(lmax),
        timeouts(&load)
    ));
    md.push_str(&format!(
        "| under load ÷ quiet | {} | {} | {} | |\n\n",
        ratio(l50, q50),
        ratio(l99, q99),
        ratio(lmax, qmax)
    ));
    md.push_str(&format!(
        "Target (issue #12, item 7): Ready within 2 s under this load, p99 under load ≤ {:.0} ms: {}.\n\n",
        TARGET_MS,
        if n == 0 || !l99.is_finite() {
            "missed (no figure: an apply timed out or none was measured)"
        } else if l99 <= TARGET_MS {
            "met"
        } else {
            "missed"
        }
    ));
    md.push_str(&format!(
        "- The sweep was still deleting when {under_sweep} of the {n} loaded applies were made; \
         Jobs it deleted by the end of the measurement, per run: {}.\n",
        swept.join(", ")
    ));
    md.push_str(
        "- Both controllers watch every Job of the bed, so the quiet one also sees the sweep's \
         deletions as watch events; it has no policy they concern.\n",
    );
    md.push_str(&format!(
        "- Besides its own namespaces, the bed held {bed} at the start.\n"
    ));
    md.push_str(&format!(
        "\nMachine: {}. Load average (1, 5, 15 min) before: {load_before}; after: {load_after}.\n",
        machine()
    ));
    md.push_str(&format!(
        "\nSetup: {} applies per kind, {}; {}; {}.\n\nCommand: `{}`\n",
        args.applies,
        runs(args.runs),
        versions(&client, &args.common).await,
        today(),
        args.common.command_line
    ));
    write_section(&args.common, &md)
}

/// The namespaces of one run.
struct Namespaces {
    quiet: String,
    load: String,
    others: String,
    sweep: String,
}

async fn one_run(client: &Client, args: &ReactionLoadArgs, run: usize) -> R<RunResult> {
    let ns = Namespaces {
        quiet: create_namespace(client, "bench-rl-quiet").await?,
        load: create_namespace(client, "bench-rl-load").await?,
        others: create_namespace(client, "bench-rl-others").await?,
        sweep: create_namespace(client, "bench-rl-sweep").await?,
    };
    let result = run_in(client, args, run, &ns).await;
    for n in [&ns.quiet, &ns.load, &ns.others, &ns.sweep] {
        delete_namespace(client, n).await;
    }
    result
}

fn labelled(role: &str, name: &str, spec: Value) -> Value {
    json!({"apiVersion": "retainer.dev/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": name, "labels": {ROLE: role}}, "spec": spec})
}

async fn apply(api: &Api<DynamicObject>, obj: &Value) -> R<DynamicObject> {
    let name = obj["metadata"]["name"].as_str().unwrap_or_default();
    Ok(api
        .patch(
            name,
            &PatchParams::apply(super::MANAGER).force(),
            &Patch::Apply(obj),
        )
        .await?)
}

fn jobs_spec(keep: &str) -> Value {
    json!({"target": {"kind": "Job"}, "keep": keep, "schedule": NEVER})
}

/// Every policy of a namespace by name, as a watch sees it.
fn watch_policies(
    api: Api<DynamicObject>,
) -> (
    watch::Receiver<BTreeMap<String, DynamicObject>>,
    tokio::task::JoinHandle<()>,
) {
    let (tx, rx) = watch::channel(BTreeMap::new());
    let task = tokio::spawn(async move {
        let mut stream = watcher::watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(ev) = stream.next().await {
            match ev {
                Ok(Event::Apply(o)) | Ok(Event::InitApply(o)) => {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    tx.send_modify(|m| {
                        m.insert(name, o);
                    });
                }
                Ok(Event::Delete(o)) => {
                    let name = o.metadata.name.clone().unwrap_or_default();
                    tx.send_modify(|m| {
                        m.remove(&name);
                    });
                }
                _ => {}
            }
        }
    });
    (rx, task)
}

fn ready_for(p: &DynamicObject) -> bool {
    p.data["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| {
            c["status"] == "True" && c["observedGeneration"].as_i64() == p.metadata.generation
        })
}

/// Applies a new policy and waits for its Ready condition; the time in ms, infinite after
/// `READY_TIMEOUT`.
async fn timed_apply(
    api: &Api<DynamicObject>,
    rx: &mut watch::Receiver<BTreeMap<String, DynamicObject>>,
    obj: Value,
) -> R<f64> {
    let name = obj["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let t0 = Instant::now();
    let applied = apply(api, &obj).await?;
    let generation = applied.metadata.generation;
    let seen = tokio::time::timeout(
        READY_TIMEOUT,
        rx.wait_for(|m| {
            m.get(&name)
                .is_some_and(|p| p.metadata.generation == generation && ready_for(p))
        }),
    )
    .await;
    let ms = match seen {
        Ok(r) => {
            r?;
            t0.elapsed().as_secs_f64() * 1000.0
        }
        Err(_) => {
            say(format!("{name}: not Ready within {READY_TIMEOUT:?}"));
            f64::INFINITY
        }
    };
    let _ = api.delete(&name, &DeleteParams::default()).await;
    Ok(ms)
}

async fn run_in(
    client: &Client,
    args: &ReactionLoadArgs,
    run: usize,
    ns: &Namespaces,
) -> R<RunResult> {
    say(format!(
        "run {run}: creating {} Jobs to sweep in {} and {} in each of {}, {}, {}",
        args.sweep_jobs, ns.sweep, args.jobs, ns.quiet, ns.load, ns.others
    ));
    let label = |_| json!({"retainer-bench": "reaction-load"});
    create_jobs(client, &ns.sweep, "job", args.sweep_jobs, label).await?;
    for n in [&ns.quiet, &ns.load, &ns.others] {
        create_jobs(client, n, "job", args.jobs, label).await?;
    }
    let registry = hanging_registry()?;
    let others = policy_api(client, Some(&ns.others));
    for i in 0..args.others {
        apply(
            &others,
            &labelled("load", &format!("other-{i:03}"), jobs_spec("true")),
        )
        .await?;
    }
    apply(
        &others,
        &labelled(
            "load",
            "hanging-registry",
            json!({"target": {"kind": "OCIArtifact",
                "registry": {"url": format!("http://{registry}"), "repositories": ["team/app"]}},
                "keep": "false", "schedule": NEVER}),
        ),
    )
    .await?;
    let sweep_api = policy_api(client, Some(&ns.sweep));
    apply(&sweep_api, &labelled("load", "sweep", jobs_spec("false"))).await?;

    let log = |role: &str| {
        args.common
            .log_dir
            .join(format!("retainer-reaction-load-{role}-{run}.log"))
    };
    let quiet_ctl = Controller::start(
        &args.common.retainer,
        &["--policy-selector".into(), format!("{ROLE}=quiet")],
        log("quiet"),
    )
    .await?;
    let load_ctl = Controller::start(
        &args.common.retainer,
        &[
            "--policy-selector".into(),
            format!("{ROLE}=load"),
            "--delete-qps".into(),
            args.delete_qps.to_string(),
        ],
        log("load"),
    )
    .await?;
    let outcome = measure(client, args, ns, &sweep_api, &others).await;
    quiet_ctl.stop().await;
    load_ctl.stop().await;
    outcome
}

async fn measure(
    client: &Client,
    args: &ReactionLoadArgs,
    ns: &Namespaces,
    sweep_api: &Api<DynamicObject>,
    others: &Api<DynamicObject>,
) -> R<RunResult> {
    // Before anything is timed: every other policy and the sweep's evaluation in status.
    let want = args.others;
    poll(
        "the other policies to be Ready",
        Duration::from_secs(300),
        || async move {
            let list = others.list(&Default::default()).await.ok()?;
            let ready = list.items.iter().filter(|p| ready_for(p)).count();
            (ready >= want).then_some(())
        },
    )
    .await?;
    let sweep_jobs = args.sweep_jobs as u64;
    poll(
        "the sweep policy's evaluation",
        Duration::from_secs(300),
        || async move {
            let p = sweep_api.get("sweep").await.ok()?;
            (p.data["status"]["summary"]["candidates"].as_u64() == Some(sweep_jobs)).then_some(())
        },
    )
    .await?;

    let quiet_api = policy_api(client, Some(&ns.quiet));
    let load_api = policy_api(client, Some(&ns.load));
    let (mut quiet_rx, quiet_task) = watch_policies(quiet_api.clone());
    let (mut load_rx, load_task) = watch_policies(load_api.clone());
    // One untimed apply each: the first policy of a controller's namespace may meet caches
    // still listing.
    timed_apply(
        &quiet_api,
        &mut quiet_rx,
        labelled("quiet", "warm", jobs_spec("true")),
    )
    .await?;
    timed_apply(
        &load_api,
        &mut load_rx,
        labelled("load", "warm", jobs_spec("true")),
    )
    .await?;

    let tracker = Tracker::start(client, &ns.sweep).await?;
    let patch = json!({"metadata": {"annotations": {"retainer.dev/sweep-requested": short_id()}}});
    sweep_api
        .patch("sweep", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    poll(
        "the sweep to start deleting",
        Duration::from_secs(120),
        || {
            let started = tracker.rx.borrow().first_gone.is_some();
            async move { started.then_some(()) }
        },
    )
    .await?;
    say("the sweep is deleting; measuring");

    let mut result = RunResult {
        quiet: Vec::new(),
        load: Vec::new(),
        under_sweep: 0,
        swept: 0,
    };
    for i in 0..args.applies {
        let sweeping = tracker.rx.borrow().all_gone.is_none();
        let name = format!("p-{i:03}");
        let (q, l) = tokio::join!(
            timed_apply(
                &quiet_api,
                &mut quiet_rx,
                labelled("quiet", &name, jobs_spec("true"))
            ),
            timed_apply(
                &load_api,
                &mut load_rx,
                labelled("load", &name, jobs_spec("true"))
            ),
        );
        result.quiet.push(q?);
        result.load.push(l?);
        if sweeping {
            result.under_sweep += 1;
        }
        tokio::time::sleep(Duration::from_millis(args.gap_ms)).await;
    }
    let left = tracker.rx.borrow().present;
    result.swept = args.sweep_jobs.saturating_sub(left);
    say(format!(
        "quiet p50 {} ms, p99 {} ms; under load p50 {} ms, p99 {} ms; {} Jobs swept meanwhile",
        fmt_ms(percentile(&result.quiet, 50.0)),
        fmt_ms(percentile(&result.quiet, 99.0)),
        fmt_ms(percentile(&result.load, 50.0)),
        fmt_ms(percentile(&result.load, 99.0)),
        result.swept
    ));
    quiet_task.abort();
    load_task.abort();
    drop(tracker);
    Ok(result)
}
