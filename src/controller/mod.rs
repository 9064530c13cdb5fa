//! `retainer run`: watches policies and what they govern, keeps each policy's status true, and
//! sweeps on schedule. The decisions are the pure engine's; this module does the I/O around it.

pub mod caches;
pub mod inputs;
pub mod leader;
pub mod metrics;
pub mod plan;
pub mod sweep;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Client};
use serde_json::{Value as Json, json};
use thiserror::Error;

use crate::api::{
    ClusterRetentionPolicy, GROUP, PolicyView, RetentionPolicy, RetentionPolicyStatus, SweepRecord,
    TargetKind, VERSION,
};
use crate::engine::{
    CompiledPolicy, Evaluation, OverBudget, PolicyError, Snapshot, evaluate_within, labels_of,
    selects,
};
use crate::oci::{ManifestCache, RegistryClient, credentials_for};
use crate::refs::RefIndex;
use crate::status::{self, Readiness, StatusInput, SweepStatus, desired_status};
use caches::{Cache, Caches, Kind};
use sweep::{Executor, Outcome, RateLimiter, SweepPlan, plan_sweep};

/// Annotation that asks for one sweep now: set it to any new value.
pub const SWEEP_NOW_ANNOTATION: &str = "retainer.dev/sweep-requested";
/// Field manager of status writes.
pub const FIELD_MANAGER: &str = "retainer";

#[derive(Debug, Error)]
pub enum ControllerError {
    #[error("serving metrics on {addr}: {source}")]
    Serve {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("leader election: {0}")]
    Lease(#[from] leader::LeaseError),
    #[error("lost the leader lease; exiting so that another replica takes over")]
    LostLease,
}

/// Settings of `retainer run`.
#[derive(Clone, Debug)]
pub struct Options {
    pub leader_elect: bool,
    pub lease_namespace: String,
    pub lease_name: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub delete_concurrency: usize,
    pub delete_qps: f64,
    pub metrics_addr: SocketAddr,
    pub debounce: Duration,
    pub page_size: u32,
    pub registry: RegistryOptions,
    /// How long one evaluation of one policy may take before it is given up and reported.
    pub eval_budget: Duration,
    /// Handle only the policies with these labels (a label selector); all when None.
    pub policy_selector: Option<String>,
}

/// The defaults of `retainer run`'s flags.
impl Default for Options {
    fn default() -> Self {
        Options {
            leader_elect: false,
            lease_namespace: "default".into(),
            lease_name: "retainer-leader".into(),
            identity: "retainer".into(),
            lease_duration: Duration::from_secs(15),
            delete_concurrency: 10,
            delete_qps: 50.0,
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            debounce: Duration::from_millis(500),
            page_size: 500,
            registry: RegistryOptions::default(),
            eval_budget: Duration::from_secs(10),
            policy_selector: None,
        }
    }
}

fn policy_kinds() -> [Kind; 2] {
    [
        Kind::new(GROUP, VERSION, "RetentionPolicy", "retentionpolicies"),
        Kind::new(
            GROUP,
            VERSION,
            "ClusterRetentionPolicy",
            "clusterretentionpolicies",
        ),
    ]
}

/// A policy compiled for one generation, or why it cannot be.
type CompiledFor = (Option<i64>, Result<Arc<CompiledPolicy>, PolicyError>);

/// What the controller remembers about one policy between reconciles.
#[derive(Default)]
struct PolicyState {
    uid: String,
    compiled: Option<CompiledFor>,
    /// Cache versions the last evaluation saw; equal means nothing changed.
    seen: Vec<(Kind, u64)>,
    evaluation: Option<Evaluation>,
    /// The last evaluation ran out of time: reported, and not retried until something changes.
    over_budget: Option<OverBudget>,
    next_sweep: Option<Timestamp>,
    /// Grace-period marks, by uid: in memory, so a restart starts every grace period over
    /// (objects are deleted later, never earlier).
    marks: HashMap<String, Timestamp>,
    sweep_request: Option<String>,
    last_written: Option<Json>,
    /// OCI: the registry's artifacts as last read, and when.
    inventory: Option<(Timestamp, Vec<Json>)>,
    registry: Option<Arc<RegistryClient>>,
    registry_error: Option<Readiness>,
}

struct Ctx {
    client: Client,
    caches: Caches,
    recorder: Recorder,
    executor: Executor,
    metrics: Arc<metrics::Metrics>,
    debounce: Duration,
    eval_budget: Duration,
    states: HashMap<String, PolicyState>,
    /// Built-in references: rebuilt only when a referrer cache changed.
    refs: (Vec<(Kind, u64)>, Arc<RefIndex>),
    discovered: HashMap<(String, String), Option<Kind>>,
    registry: RegistryOptions,
    manifests: Arc<ManifestCache>,
}

/// How the controller talks to registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    pub timeout: Duration,
    pub concurrency: usize,
    /// How often a registry's inventory is read again between sweeps.
    pub refresh: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            timeout: Duration::from_secs(10),
            concurrency: 8,
            refresh: Duration::from_secs(300),
        }
    }
}

/// Whole seconds: what metav1.Time keeps, so that a status read back equals the one written.
fn now_secs() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

pub async fn run(client: Client, opts: Options) -> Result<(), ControllerError> {
    let metrics = Arc::new(metrics::Metrics::new());
    let caches = Caches::new(client.clone(), opts.page_size, opts.policy_selector.clone());
    let ready = metrics::Readiness::default();
    let server = metrics::serve(opts.metrics_addr, metrics.clone(), ready.clone()).await?;
    tracing::info!(addr = %server, "serving /metrics, /healthz and /readyz");

    let elector = opts.leader_elect.then(|| {
        leader::LeaderElector::new(
            client.clone(),
            &opts.lease_namespace,
            &opts.lease_name,
            &opts.identity,
            opts.lease_duration,
        )
    });
    if let Some(e) = &elector {
        // A replica waiting for the lease has nothing to sync: it is ready to take over.
        ready.set(true);
        tracing::info!(identity = %opts.identity, lease = %opts.lease_name, "waiting for the leader lease");
        loop {
            match e.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => tracing::warn!(error = %err, "leader election attempt failed"),
            }
            tokio::time::sleep(e.renew_interval()).await;
        }
        tracing::info!(identity = %opts.identity, "became leader");
    }

    let reporter = Reporter {
        controller: "retainer".into(),
        instance: Some(opts.identity.clone()),
    };
    let mut ctx = Ctx {
        recorder: Recorder::new(client.clone(), reporter),
        executor: Executor {
            client: client.clone(),
            concurrency: opts.delete_concurrency,
            limiter: Arc::new(RateLimiter::new(opts.delete_qps)),
        },
        client,
        caches,
        metrics,
        debounce: opts.debounce,
        eval_budget: opts.eval_budget,
        states: HashMap::new(),
        refs: (Vec::new(), Arc::new(RefIndex::default())),
        discovered: HashMap::new(),
        registry: opts.registry.clone(),
        manifests: Arc::new(ManifestCache::default()),
    };
    for k in policy_kinds() {
        ctx.caches.get(&k);
    }

    let (lost_tx, mut lost_rx) = tokio::sync::watch::channel(false);
    if let Some(e) = elector {
        let renew = e.renew_interval();
        let deadline = opts.lease_duration;
        tokio::spawn(async move {
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(renew).await;
                match e.try_acquire_or_renew().await {
                    Ok(true) => last_ok = tokio::time::Instant::now(),
                    Ok(false) => break,
                    Err(err) => {
                        tracing::warn!(error = %err, "renewing the leader lease failed");
                        if last_ok.elapsed() >= deadline {
                            break;
                        }
                    }
                }
            }
            let _ = lost_tx.send(true);
        });
    }

    let changed = ctx.caches.changed.clone();
    let mut shutdown = Box::pin(shutdown_signal());
    loop {
        ready.set(ctx.caches.all_ready());
        reconcile_all(&mut ctx).await;
        ready.set(ctx.caches.all_ready());
        let due = ctx.states.values().filter_map(|s| s.next_sweep).min();
        let sleep = match due {
            // Sleep until exactly the next fire time; a change wakes the loop earlier.
            Some(t) => {
                Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
            }
            None => Duration::from_secs(3600),
        };
        tokio::select! {
            _ = changed.notified() => tokio::time::sleep(ctx.debounce).await,
            _ = tokio::time::sleep(sleep) => {}
            _ = lost_rx.changed() => return Err(ControllerError::LostLease),
            _ = &mut shutdown => {
                tracing::info!("shutting down");
                return Ok(());
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

async fn reconcile_all(ctx: &mut Ctx) {
    let mut seen = Vec::new();
    for k in policy_kinds() {
        let cache = ctx.caches.get(&k);
        if !cache.ready.load(Ordering::Acquire) {
            continue;
        }
        for obj in cache.snapshot() {
            let key = policy_key(&obj);
            seen.push(key.clone());
            reconcile(ctx, &k, key, &obj).await;
        }
    }
    ctx.states.retain(|k, _| seen.contains(k));
    ctx.metrics.retain_policies(&seen);
}

fn policy_key(obj: &Json) -> String {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or("");
    match obj.pointer("/metadata/namespace").and_then(Json::as_str) {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn view_of(kind: &Kind, obj: &Json) -> Result<PolicyView, String> {
    if kind.kind == "RetentionPolicy" {
        serde_json::from_value::<RetentionPolicy>(obj.clone())
            .map(|p| PolicyView::from(&p))
            .map_err(|e| e.to_string())
    } else {
        serde_json::from_value::<ClusterRetentionPolicy>(obj.clone())
            .map(|p| PolicyView::from(&p))
            .map_err(|e| e.to_string())
    }
}

async fn reconcile(ctx: &mut Ctx, kind: &Kind, key: String, obj: &Json) {
    let uid = obj
        .pointer("/metadata/uid")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_string();
    let generation = obj.pointer("/metadata/generation").and_then(Json::as_i64);
    let now = now_secs();
    let mut state = ctx.states.remove(&key).unwrap_or_default();
    if state.uid != uid {
        state = PolicyState {
            uid,
            ..Default::default()
        };
        state.sweep_request = sweep_request(obj);
    }
    let view = match view_of(kind, obj) {
        Ok(v) => v,
        Err(e) => {
            let r = Readiness {
                ready: false,
                reason: status::ready::INVALID_TARGET,
                message: format!("spec: {e}"),
            };
            write_not_ready(ctx, kind, &key, obj, &r, now, &mut state.last_written).await;
            ctx.states.insert(key, state);
            return;
        }
    };
    if state.compiled.as_ref().map(|c| c.0) != Some(generation) {
        state.compiled = Some((generation, CompiledPolicy::compile(view).map(Arc::new)));
        state.seen.clear();
        state.next_sweep = None;
    }
    let compiled = match state.compiled.as_ref().map(|c| &c.1) {
        Some(Ok(c)) => c.clone(),
        Some(Err(e)) => {
            let r = Readiness::invalid(e);
            state.evaluation = None;
            state.next_sweep = None;
            write_not_ready(ctx, kind, &key, obj, &r, now, &mut state.last_written).await;
            ctx.states.insert(key, state);
            return;
        }
        None => unreachable!("compiled just above"),
    };
    // The caches this policy reads, as `retainer plan` reads them; started on first need. The
    // caches watch every namespace, a superset of each read's scope: the engine keeps to it.
    let oci = compiled.target == TargetKind::OciArtifact;
    let needs = inputs::needs(&compiled);
    for c in &needs.custom {
        discover(ctx, &c.api_version, &c.kind).await;
    }
    let reads = inputs::resolve(&needs, |c| {
        ctx.discovered
            .get(&(c.api_version.clone(), c.kind.clone()))
            .cloned()
            .flatten()
    });
    let mut needed: Vec<Kind> = match reads {
        Ok(reads) => reads.into_iter().map(|r| r.kind).collect(),
        Err(r) => {
            write_not_ready(ctx, kind, &key, obj, &r, now, &mut state.last_written).await;
            ctx.states.insert(key, state);
            return;
        }
    };
    needed.dedup();
    let custom: Vec<Kind> = needs
        .custom
        .iter()
        .filter_map(|c| {
            ctx.discovered
                .get(&(c.api_version.clone(), c.kind.clone()))
                .cloned()
                .flatten()
        })
        .collect();
    let caches: Vec<Arc<Cache>> = needed.iter().map(|k| ctx.caches.get(k)).collect();
    if let Some(c) = caches.iter().find(|c| !c.ready.load(Ordering::Acquire)) {
        // Still listing: say nothing until the list is in, unless it cannot be read at all.
        let err = c.last_error.lock().ok().and_then(|e| e.clone());
        if let Some(err) = err {
            let r = Readiness {
                ready: false,
                reason: status::ready::TARGET_UNAVAILABLE,
                message: format!("cannot list {}: {err}", c.kind.plural),
            };
            write_not_ready(ctx, kind, &key, obj, &r, now, &mut state.last_written).await;
        }
        ctx.states.insert(key, state);
        return;
    }

    let next = match state.next_sweep {
        Some(t) => t,
        None => {
            let t = compiled.schedule.next_after(now).unwrap_or(Timestamp::MAX);
            state.next_sweep = Some(t);
            t
        }
    };
    let requested = sweep_request(obj);
    let manual = requested.is_some() && requested != state.sweep_request;
    let sweep_due = now >= next || manual;

    if oci {
        // A registry has no watch: its inventory is read on a timer, and afresh for a sweep.
        let stale = sweep_due
            || state.inventory.as_ref().is_none_or(|(at, _)| {
                Duration::try_from(now.duration_since(*at)).unwrap_or(Duration::ZERO)
                    >= ctx.registry.refresh
            });
        if stale {
            let read = fetch_inventory_counted(
                &ctx.client,
                &ctx.registry,
                &ctx.manifests,
                &compiled,
                Some(&ctx.metrics),
            )
            .await;
            match read {
                Ok((client, docs)) => {
                    state.inventory = Some((now, docs));
                    state.registry = Some(client);
                    state.registry_error = None;
                    state.seen.clear();
                }
                Err(r) => {
                    state.registry_error = Some(r);
                    state.inventory = None;
                    state.evaluation = None;
                }
            }
        }
        if let Some(r) = state.registry_error.clone() {
            // A sweep that was due cannot run without the registry: say so, and wait for the
            // next one on the schedule rather than asking the failing registry again at once.
            let failed_sweep = sweep_due.then(|| {
                ctx.metrics.sweep(&compiled.view, "failed");
                SweepStatus {
                    ok: false,
                    reason: status::swept::FAILED,
                    message: format!(
                        "nothing deleted: the registry could not be read: {}",
                        r.message
                    ),
                    record: None,
                }
            });
            if let Some(f) = &failed_sweep {
                state.sweep_request = requested;
                state.next_sweep = compiled.schedule.next_after(now_secs());
                let reference = object_reference(obj);
                publish(
                    ctx,
                    &reference,
                    EventType::Warning,
                    "SweepFailed",
                    &f.message,
                )
                .await;
            }
            write_status(
                ctx,
                kind,
                &key,
                obj,
                &r,
                None,
                failed_sweep.as_ref(),
                None,
                now,
                &mut state.last_written,
            )
            .await;
            ctx.states.insert(key, state);
            return;
        }
    }

    let versions: Vec<(Kind, u64)> = caches
        .iter()
        .map(|c| (c.kind.clone(), c.version.load(Ordering::Acquire)))
        .collect();
    if state.seen != versions || (state.evaluation.is_none() && state.over_budget.is_none()) {
        let started = std::time::Instant::now();
        let inventory = state.inventory.as_ref().map(|(_, docs)| docs.as_slice());
        let mut evaluate = || evaluate_now(ctx, &compiled, &caches, &custom, inventory, now);
        // Evaluation is CPU-bound for up to the budget: on a multi-threaded runtime, let the
        // watchers, the lease renewal and the probes move to other workers meanwhile.
        let result = match tokio::runtime::Handle::current().runtime_flavor() {
            tokio::runtime::RuntimeFlavor::MultiThread => tokio::task::block_in_place(evaluate),
            _ => evaluate(),
        };
        match result {
            Ok(e) => {
                state.evaluation = Some(e);
                state.over_budget = None;
            }
            Err(e) => {
                tracing::warn!(policy = %key, error = %e, budget = ?ctx.eval_budget, "evaluation gave up");
                state.evaluation = None;
                state.over_budget = Some(e);
            }
        }
        ctx.metrics
            .observe_evaluation(&compiled.view, started.elapsed());
        state.seen = versions;
    }
    if let Some(e) = &state.over_budget {
        // Without verdicts nothing may be swept; the policy says why until it or its objects
        // change.
        let r = Readiness {
            ready: false,
            reason: status::ready::INVALID_EXPRESSION,
            message: format!(
                "{e} (budget {}s, set by --eval-budget)",
                ctx.eval_budget.as_secs_f64()
            ),
        };
        write_not_ready(ctx, kind, &key, obj, &r, now, &mut state.last_written).await;
        ctx.states.insert(key, state);
        return;
    }
    let eval = state.evaluation.as_ref().expect("evaluated just above");
    ctx.metrics.set_counts(&compiled.view, eval.summary);

    let mut sweep_status = None;
    if sweep_due {
        state.sweep_request = requested;
        let s = sweep_policy(ctx, &compiled, &mut state, obj, now).await;
        state.next_sweep = compiled.schedule.next_after(now_secs());
        // A sweep deleted objects: evaluate again before reporting.
        state.seen.clear();
        if oci && s.record.as_ref().is_some_and(|r| r.deleted + r.skipped > 0) {
            // The registry changed: read it again on the next reconcile (the status write
            // brings one), which costs tag listings, as the sweep's checks refreshed the rest.
            state.inventory = None;
        }
        sweep_status = Some(s);
    } else if compiled.view.spec.suspend {
        sweep_status = Some(SweepStatus {
            ok: false,
            reason: status::swept::SUSPENDED,
            message: "suspended: policies are evaluated and reported, never swept".into(),
            record: None,
        });
    }
    let eval = state.evaluation.clone();
    let r = Readiness::valid(eval.as_ref().expect("evaluated above"));
    let next_sweep = (!compiled.view.spec.suspend)
        .then_some(state.next_sweep)
        .flatten();
    write_status(
        ctx,
        kind,
        &key,
        obj,
        &r,
        eval.as_ref(),
        sweep_status.as_ref(),
        next_sweep,
        now,
        &mut state.last_written,
    )
    .await;
    ctx.states.insert(key, state);
}

fn sweep_request(obj: &Json) -> Option<String> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(SWEEP_NOW_ANNOTATION))
        .and_then(Json::as_str)
        .map(String::from)
}

fn target_kind(t: TargetKind) -> Kind {
    match t {
        TargetKind::Secret => Kind::secrets(),
        _ => Kind::jobs(),
    }
}

/// The kind behind a custom referrer, from API discovery; remembered.
async fn discover(ctx: &mut Ctx, api_version: &str, kind: &str) -> Option<Kind> {
    let key = (api_version.to_string(), kind.to_string());
    if let Some(k) = ctx.discovered.get(&key) {
        return k.clone();
    }
    let found = inputs::discover(&ctx.client, api_version, kind).await;
    ctx.discovered.insert(key, found.clone());
    found
}

/// Reads the credentials and the registry's inventory; a failure is the Ready condition to show.
pub async fn fetch_inventory(
    kube: &Client,
    opts: &RegistryOptions,
    manifests: &ManifestCache,
    policy: &CompiledPolicy,
) -> Result<(Arc<RegistryClient>, Vec<Json>), Readiness> {
    fetch_inventory_counted(kube, opts, manifests, policy, None).await
}

/// `fetch_inventory`, adding the registry requests it made to `metrics`.
pub async fn fetch_inventory_counted(
    kube: &Client,
    opts: &RegistryOptions,
    manifests: &ManifestCache,
    policy: &CompiledPolicy,
    metrics: Option<&metrics::Metrics>,
) -> Result<(Arc<RegistryClient>, Vec<Json>), Readiness> {
    let Some(reg) = policy.view.spec.target.registry.as_ref() else {
        return Err(Readiness {
            ready: false,
            reason: status::ready::INVALID_TARGET,
            message: "spec.target.registry is required for kind OCIArtifact".into(),
        });
    };
    let host = policy.registry_host.clone().unwrap_or_default();
    let cred_error = |message: String| Readiness {
        ready: false,
        reason: status::ready::CREDENTIALS_ERROR,
        message,
    };
    let creds = match &reg.credentials_secret_ref {
        None => None,
        Some(r) => {
            // A namespaced policy may only use a Secret of its own namespace (the schema forbids
            // naming another); a cluster policy must name one.
            let ns = match (&policy.view.namespace, &r.namespace) {
                (Some(own), _) => own.clone(),
                (None, Some(ns)) => ns.clone(),
                (None, None) => {
                    return Err(cred_error(
                        "spec.target.registry.credentialsSecretRef.namespace is required on a ClusterRetentionPolicy".into(),
                    ));
                }
            };
            let secrets: Api<Secret> = Api::namespaced(kube.clone(), &ns);
            let secret = match secrets.get_opt(&r.name).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    return Err(cred_error(format!(
                        "credentials Secret {ns}/{} not found",
                        r.name
                    )));
                }
                Err(e) => {
                    return Err(cred_error(format!(
                        "reading credentials Secret {ns}/{}: {e}",
                        r.name
                    )));
                }
            };
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(".dockerconfigjson"))
                .map(|b| b.0.clone())
                .ok_or_else(|| {
                    cred_error(format!(
                        "credentials Secret {ns}/{}: {}",
                        r.name,
                        crate::oci::CredentialsError::MissingKey
                    ))
                })?;
            Some(
                credentials_for(&bytes, &host)
                    .map_err(|e| cred_error(format!("credentials Secret {ns}/{}: {e}", r.name)))?,
            )
        }
    };
    let client = RegistryClient::new(&reg.url, creds, opts.timeout).map_err(|e| Readiness {
        ready: false,
        reason: status::ready::INVALID_TARGET,
        message: e.to_string(),
    })?;
    // Tag resolutions and referrer listings are reused for one refresh period: a sweep checks
    // them afresh before it deletes anything.
    let read = crate::oci::inventory(
        &client,
        manifests,
        &reg.repositories,
        opts.concurrency,
        opts.refresh,
    )
    .await;
    if let Some(m) = metrics {
        m.registry_requests(client.host(), &client.counts.take());
    }
    match read {
        Ok(docs) => Ok((Arc::new(client), docs)),
        Err(e) if e.is_auth() => Err(cred_error(format!(
            "registry {host} refused the credentials: {e}"
        ))),
        Err(e) => Err(Readiness {
            ready: false,
            reason: status::ready::TARGET_UNAVAILABLE,
            message: e.to_string(),
        }),
    }
}

fn evaluate_now(
    ctx: &mut Ctx,
    policy: &CompiledPolicy,
    caches: &[Arc<Cache>],
    custom: &[Kind],
    inventory: Option<&[Json]>,
    now: Timestamp,
) -> Result<Evaluation, OverBudget> {
    let namespace_labels: BTreeMap<String, BTreeMap<String, String>> = caches
        .iter()
        .find(|c| c.kind == Kind::namespaces())
        .map(|c| {
            let mut labels = BTreeMap::new();
            c.for_each(|n| {
                let name = n
                    .pointer("/metadata/name")
                    .and_then(Json::as_str)
                    .unwrap_or("")
                    .to_string();
                labels.insert(name, labels_of(&n));
            });
            labels
        })
        .unwrap_or_default();
    // Only the objects the policy selects are held parsed: the cache keeps text (see
    // caches.rs), and an evaluation's memory is then that of its own objects.
    let target = target_kind(policy.target);
    let owned: Vec<Json> = match inventory {
        Some(_) => Vec::new(),
        None => caches
            .iter()
            .find(|c| c.kind == target)
            .map(|c| {
                c.parsed_where(&policy.retained_fields(), |o| {
                    selects(policy, o, &namespace_labels)
                })
            })
            .unwrap_or_default(),
    };
    let refs = if policy.target != TargetKind::Job {
        let kinds = Kind::builtin_referrers();
        let versions: Vec<(Kind, u64)> = kinds
            .iter()
            .map(|k| (k.clone(), ctx.caches.get(k).version.load(Ordering::Acquire)))
            .collect();
        if ctx.refs.0 != versions {
            let mut index = RefIndex::default();
            for k in &kinds {
                ctx.caches.get(k).for_each(|o| index.add(&o));
            }
            ctx.refs = (versions, Arc::new(index));
        }
        ctx.refs.1.clone()
    } else {
        Arc::new(RefIndex::default())
    };
    let custom_objs: Vec<Json> = custom
        .iter()
        .flat_map(|k| ctx.caches.get(k).snapshot())
        .collect();
    let objects: Vec<&Json> = match inventory {
        Some(docs) => docs.iter().collect(),
        None => owned.iter().collect(),
    };
    let snap = Snapshot {
        objects,
        refs: &refs,
        custom_referrers: custom_objs.iter().collect(),
        namespace_labels: &namespace_labels,
        now,
    };
    let deadline = std::time::Instant::now() + ctx.eval_budget;
    evaluate_within(policy, &snap, &|| std::time::Instant::now() > deadline)
}

async fn sweep_policy(
    ctx: &mut Ctx,
    policy: &CompiledPolicy,
    state: &mut PolicyState,
    obj: &Json,
    now: Timestamp,
) -> SweepStatus {
    let spec = &policy.view.spec;
    let reference = object_reference(obj);
    if spec.suspend {
        return SweepStatus {
            ok: false,
            reason: status::swept::SUSPENDED,
            message: "suspended: policies are evaluated and reported, never swept".into(),
            record: None,
        };
    }
    let Some(eval) = state.evaluation.as_ref() else {
        return SweepStatus {
            ok: false,
            reason: status::swept::FAILED,
            message: "no evaluation to sweep".into(),
            record: None,
        };
    };
    let started = std::time::Instant::now();
    let plan = plan_sweep(
        eval,
        spec.deletion.as_ref(),
        policy.grace_period,
        &mut state.marks,
        now,
    );
    let (targets, deferred, waiting) = match plan {
        SweepPlan::Blocked { message } => {
            ctx.metrics.sweep(&policy.view, "blocked");
            publish(
                ctx,
                &reference,
                EventType::Warning,
                "SweepBlocked",
                &message,
            )
            .await;
            return SweepStatus {
                ok: false,
                reason: status::swept::BLOCKED,
                message,
                record: Some(record(now, 0, 0, 0)),
            };
        }
        SweepPlan::Proceed {
            targets,
            deferred,
            waiting,
        } => (targets, deferred, waiting),
    };
    let later = |msg: &mut String| {
        if deferred > 0 {
            msg.push_str(&format!(
                "; {deferred} left for the next sweep by maxPerSweep"
            ));
        }
        if waiting > 0 {
            msg.push_str(&format!(
                "; {waiting} marked, waiting for their grace period"
            ));
        }
    };
    if spec.dry_run {
        let mut message = format!(
            "dry run: would delete {} of {} candidates",
            targets.len(),
            eval.summary.candidates
        );
        later(&mut message);
        ctx.metrics.sweep(&policy.view, "dry_run");
        publish(ctx, &reference, EventType::Normal, "DryRun", &message).await;
        return SweepStatus {
            ok: true,
            reason: status::swept::DRY_RUN,
            message,
            record: Some(record(now, 0, 0, 0)),
        };
    }
    let key = policy.view.key();
    let propagation = spec.deletion.as_ref().and_then(|d| d.propagation_policy);
    let outcomes = match (policy.target, state.registry.clone()) {
        (TargetKind::OciArtifact, Some(registry)) => {
            let evaluated = state.inventory.as_ref().map(|(_, d)| d.as_slice());
            let out = ctx
                .executor
                .delete_oci(
                    &registry,
                    &ctx.manifests,
                    evaluated.unwrap_or_default(),
                    targets,
                    spec.group_by.is_some(),
                    &key,
                )
                .await;
            ctx.metrics
                .registry_requests(registry.host(), &registry.counts.take());
            out
        }
        (TargetKind::OciArtifact, None) => Vec::new(),
        _ => {
            ctx.executor
                .delete_all(policy.target, targets, propagation, &key)
                .await
        }
    };
    let (mut deleted, mut failed, mut skipped) = (0i64, 0i64, 0i64);
    let mut first_failure = None;
    for (_, o) in &outcomes {
        match o {
            Outcome::Deleted => deleted += 1,
            Outcome::Skipped(_) => skipped += 1,
            Outcome::Failed(e) => {
                failed += 1;
                first_failure.get_or_insert_with(|| e.clone());
            }
        }
    }
    ctx.metrics
        .deletions(&policy.view, policy.target, deleted, failed);
    let mut message =
        format!("deleted {deleted}, failed {failed}, skipped {skipped} (changed, guarded or gone)");
    let storage = (policy.target == TargetKind::OciArtifact).then(|| {
        let docs = state.inventory.as_ref().map(|(_, d)| d.as_slice());
        crate::engine::bytes::storage(
            docs.unwrap_or_default(),
            &sweep::deleted_artifacts(&outcomes),
        )
    });
    if let Some(s) = storage {
        message.push_str(&format!("; freed {} bytes", s.freed));
        tracing::info!(
            target: "retainer::audit",
            policy = %key, kind = policy.target.as_str(), deleted,
            bytes_before = s.held, bytes_after = s.held.saturating_sub(s.freed),
            bytes_freed = s.freed, "swept"
        );
    }
    let bytes_freed = storage.map(|s| s.freed);
    later(&mut message);
    let (ok, reason, result) = match (failed, deleted) {
        (0, _) => (true, status::swept::COMPLETED, "completed"),
        (_, 0) => (false, status::swept::FAILED, "failed"),
        _ => (false, status::swept::PARTIALLY_FAILED, "partially_failed"),
    };
    if let Some(f) = &first_failure {
        message.push_str(&format!("; first failure: {f}"));
    }
    ctx.metrics.sweep(&policy.view, result);
    ctx.metrics.observe_sweep(&policy.view, started.elapsed());
    let event_type = if failed > 0 {
        EventType::Warning
    } else {
        EventType::Normal
    };
    publish(
        ctx,
        &reference,
        event_type,
        if failed > 0 { "SweepFailed" } else { "Swept" },
        &message,
    )
    .await;
    let mut rec = record(now, deleted, failed, skipped);
    rec.bytes_freed = bytes_freed.map(status::saturating_i64);
    SweepStatus {
        ok,
        reason,
        message,
        record: Some(rec),
    }
}

/// A sweep that started at `start` and ends now.
fn record(start: Timestamp, deleted: i64, failed: i64, skipped: i64) -> SweepRecord {
    SweepRecord {
        start_time: Some(time(start)),
        completion_time: Some(time(now_secs())),
        deleted,
        failed,
        skipped,
        bytes_freed: None,
    }
}

fn time(t: Timestamp) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t)
}

fn object_reference(obj: &Json) -> ObjectReference {
    let s = |p: &str| obj.pointer(p).and_then(Json::as_str).map(String::from);
    ObjectReference {
        api_version: s("/apiVersion"),
        kind: s("/kind"),
        name: s("/metadata/name"),
        namespace: s("/metadata/namespace"),
        uid: s("/metadata/uid"),
        resource_version: s("/metadata/resourceVersion"),
        field_path: None,
    }
}

async fn publish(
    ctx: &Ctx,
    reference: &ObjectReference,
    type_: EventType,
    reason: &str,
    note: &str,
) {
    let ev = Event {
        type_,
        reason: reason.into(),
        note: Some(note.chars().take(1000).collect()),
        action: "Sweep".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&ev, reference).await {
        tracing::warn!(error = %e, "publishing an event failed");
    }
}

/// Status of a policy that has no evaluation to report: only why it is not Ready.
async fn write_not_ready(
    ctx: &Ctx,
    kind: &Kind,
    key: &str,
    obj: &Json,
    readiness: &Readiness,
    now: Timestamp,
    last_written: &mut Option<Json>,
) {
    write_status(
        ctx,
        kind,
        key,
        obj,
        readiness,
        None,
        None,
        None,
        now,
        last_written,
    )
    .await
}

/// Writes status by server-side apply, only when it differs from both what the object shows
/// and what this controller last wrote. Returns what is now written.
#[allow(clippy::too_many_arguments)]
async fn write_status(
    ctx: &Ctx,
    kind: &Kind,
    key: &str,
    obj: &Json,
    readiness: &Readiness,
    eval: Option<&Evaluation>,
    sweep: Option<&SweepStatus>,
    next_sweep: Option<Timestamp>,
    now: Timestamp,
    last_written: &mut Option<Json>,
) {
    ctx.metrics.set_ready(obj, readiness.ready);
    let current: Option<RetentionPolicyStatus> = obj
        .get("status")
        .and_then(|s| serde_json::from_value(s.clone()).ok());
    let generation = obj.pointer("/metadata/generation").and_then(Json::as_i64);
    let desired = desired_status(StatusInput {
        previous: current.as_ref(),
        generation,
        readiness,
        evaluation: eval,
        sweep,
        next_sweep,
        now,
    });
    let desired_json = serde_json::to_value(&desired).unwrap_or(Json::Null);
    let current_json = current
        .as_ref()
        .map(|c| serde_json::to_value(c).unwrap_or(Json::Null));
    if current_json.as_ref() == Some(&desired_json) || last_written.as_ref() == Some(&desired_json)
    {
        *last_written = Some(desired_json);
        return;
    }
    let name = obj
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or("");
    let ar: ApiResource = kind.resource();
    let api: Api<DynamicObject> = match obj.pointer("/metadata/namespace").and_then(Json::as_str) {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &ar),
        None => Api::all_with(ctx.client.clone(), &ar),
    };
    let patch =
        json!({"apiVersion": kind.api_version(), "kind": kind.kind, "status": desired_json});
    match api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await
    {
        Ok(_) => {
            ctx.metrics.status_write();
            tracing::debug!(policy = key, "status written");
            *last_written = Some(desired_json);
        }
        // Left as it was: the next reconcile tries again.
        Err(e) => tracing::warn!(policy = key, error = %e, "writing status failed"),
    }
}
