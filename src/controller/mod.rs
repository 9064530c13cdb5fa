//! `retainer run`: watches policies and what they govern, keeps each policy's status true, and
//! sweeps on schedule. The decisions are the pure engine's and `decide`'s; this module and the
//! workers do the I/O around them.
//!
//! Execution model (docs/execution.md): one supervisor task turns the policy caches into one
//! worker task per policy (worker/), and each worker evaluates, reads its registry, sweeps and
//! writes status on its own, so that no policy waits for another. What they share is in
//! `Shared`: the caches, the reference index, discovery, the manifest cache, a bounded number
//! of evaluation slots and one delete rate limiter. Shutdown, a lost lease, an edit, `suspend`
//! or a deletion stop a running sweep before its next delete.

pub mod caches;
pub mod decide;
pub mod incremental;
pub mod inputs;
pub mod leader;
pub mod marks;
pub mod metrics;
pub mod plan;
pub mod sweep;
mod worker;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, Config};
use serde_json::Value as Json;
use thiserror::Error;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api::{GROUP, TargetKind, VERSION};
use crate::oci::ManifestCache;
/// Re-exported: `retainer run`'s registry settings are part of its `Options`.
pub use crate::oci::RegistryOptions;
use crate::refs::{RefIndex, RefPart};
use caches::{Caches, Kind};
use decide::Interruption;
use leader::Leadership;
use sweep::{Executor, RateLimiter};
use worker::{Worker, policy_key};

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
    #[error(transparent)]
    Webhook(#[from] crate::admission::WebhookError),
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
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
    /// Added to every wall-clock time leader election writes; zero but in tests, which use it
    /// to run replicas whose clocks disagree.
    pub clock_offset: jiff::SignedDuration,
    pub delete_concurrency: usize,
    pub delete_qps: f64,
    pub metrics_addr: SocketAddr,
    pub debounce: Duration,
    pub page_size: u32,
    pub registry: RegistryOptions,
    /// How long one evaluation of one policy may take before it is given up and reported.
    pub eval_budget: Duration,
    /// Evaluate Job and Secret policies change by change (keeping per-policy state), or every
    /// selected object each time.
    pub incremental_evaluation: bool,
    /// Handle only the policies with these labels (a label selector); all when None.
    pub policy_selector: Option<String>,
    /// How long connecting to the API server may take.
    pub api_connect_timeout: Duration,
    /// How long the API server may take to answer a request (not a watch: watches have the
    /// watcher's own idle timeout, above their 290 s server-side timeout).
    pub api_read_timeout: Duration,
    /// Evaluations running at once, across all policies; 0 = one per CPU.
    pub evaluation_concurrency: usize,
    /// Serve the validating admission webhook (docs/admission.md) when set.
    pub webhook: Option<crate::admission::WebhookOptions>,
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
            clock_offset: jiff::SignedDuration::ZERO,
            delete_concurrency: 10,
            delete_qps: 50.0,
            metrics_addr: SocketAddr::from(([0, 0, 0, 0], 8080)),
            debounce: Duration::from_millis(500),
            page_size: 500,
            registry: RegistryOptions::default(),
            eval_budget: Duration::from_secs(10),
            incremental_evaluation: true,
            policy_selector: None,
            api_connect_timeout: Duration::from_secs(10),
            api_read_timeout: Duration::from_secs(30),
            evaluation_concurrency: 0,
            webhook: None,
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

/// Whole seconds: what metav1.Time keeps, so that a status read back equals the one written.
fn now_secs() -> Timestamp {
    Timestamp::from_second(Timestamp::now().as_second()).unwrap_or_else(|_| Timestamp::now())
}

/// Why the workers were told to stop, for the sweeps they interrupt to report.
#[derive(Default)]
struct Stop {
    token: CancellationToken,
    cause: Mutex<Option<Interruption>>,
}

impl Stop {
    fn stop(&self, cause: Interruption) {
        self.cause
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(cause);
        self.token.cancel();
    }

    fn cause(&self) -> Option<Interruption> {
        *self.cause.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A reference index and the referrer cache versions it was built from.
type VersionedRefs = (Vec<(Kind, u64)>, Arc<RefIndex>);

/// How soon a custom referrer kind that was not served is looked up again (and a policy that
/// needs it evaluated again): well within the 30 s a CRD installed later may take to count.
pub(crate) const DISCOVERY_RETRY: Duration = Duration::from_secs(5);

/// A custom kind as discovery answered, and when it asked.
type Discovered = (Option<Kind>, std::time::Instant);

/// What every policy's worker shares.
struct Shared {
    /// Requests (not watches): short read timeout.
    client: Client,
    caches: Caches,
    recorder: Recorder,
    executor: Executor,
    metrics: Arc<metrics::Metrics>,
    eval_budget: Duration,
    incremental_evaluation: bool,
    /// Evaluation slots: evaluations are CPU-bound, so at most this many run at once.
    evaluations: Arc<Semaphore>,
    /// Built-in references, the Secret part and the image part: each rebuilt only when a
    /// referrer cache changed and a policy reads it.
    refs: [Mutex<VersionedRefs>; 2],
    /// Custom referrer kinds by (apiVersion, kind), and when each was looked up: a kind not
    /// served (or a failed lookup) is asked again after DISCOVERY_RETRY, so a CRD installed
    /// after the policy is picked up without a restart.
    discovered: Mutex<HashMap<(String, String), Discovered>>,
    registry: RegistryOptions,
    manifests: Arc<ManifestCache>,
    stop: Stop,
}

impl Shared {
    /// The part of the index of built-in references that a policy of `target` reads, rebuilt
    /// if a referrer cache changed since; Job policies read none.
    fn ref_index(&self, target: TargetKind) -> Arc<RefIndex> {
        let (part, slot) = match target {
            TargetKind::Job => return Arc::new(RefIndex::default()),
            TargetKind::Secret => (RefPart::Secrets, 0),
            TargetKind::OciArtifact => (RefPart::Images, 1),
        };
        let kinds = Kind::builtin_referrers();
        let versions: Vec<(Kind, u64)> = kinds
            .iter()
            .map(|k| {
                (
                    k.clone(),
                    self.caches.get(k).version.load(Ordering::Acquire),
                )
            })
            .collect();
        // Held while rebuilding: two workers that need it at once build it once.
        let mut refs = self.refs[slot].lock().unwrap_or_else(|p| p.into_inner());
        if refs.0 != versions {
            // The old index is let go before the new one is built: policies still holding it
            // keep it alive, the controller does not.
            refs.1 = Arc::new(RefIndex::default());
            let mut index = RefIndex::default();
            for k in &kinds {
                self.caches
                    .get(k)
                    .for_each_refs(|r| index.add_part(part, r));
            }
            *refs = (versions, Arc::new(index));
        }
        refs.1.clone()
    }

    /// The plural of a custom referrer kind, from API discovery; remembered when found, asked
    /// again after DISCOVERY_RETRY when not.
    async fn discover(&self, api_version: &str, kind: &str) -> Option<Kind> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some((k, at)) = self
            .discovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            && (k.is_some() || at.elapsed() < DISCOVERY_RETRY)
        {
            return k.clone();
        }
        let found = inputs::discover(&self.client, api_version, kind).await;
        self.discovered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(key, (found.clone(), std::time::Instant::now()));
        found
    }
}

/// The two clients of the controller, from one configuration: one for watches, whose
/// connections stay open and quiet for minutes (kube's watcher guards them with its own idle
/// timeout, 290 s plus a margin), and one for every other request, with a read timeout so that
/// an API server that accepts a request and never answers cannot hold a policy for long.
pub fn clients(mut config: Config, opts: &Options) -> Result<(Client, Client), ControllerError> {
    config.connect_timeout = Some(opts.api_connect_timeout);
    let watches = Client::try_from(config.clone()).map_err(ControllerError::Client)?;
    config.read_timeout = Some(opts.api_read_timeout);
    // Counted from the request, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
    let requests = Client::try_from(config).map_err(ControllerError::Client)?;
    Ok((requests, watches))
}

/// A worker as the supervisor holds it.
struct WorkerHandle {
    kind: Kind,
    uid: String,
    tx: watch::Sender<Json>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
    /// The kinds the worker's last step read, set by the worker; None until it knows.
    reads: Reads,
    /// What the worker was last woken with: its policy's resourceVersion and the versions of
    /// the caches it reads. A change elsewhere does not wake it.
    sent: Option<(String, Vec<u64>)>,
}

/// The caches a worker reads, shared between it and the supervisor.
pub(crate) type Reads = Arc<Mutex<Option<Vec<Kind>>>>;

/// Parsed policies of one policy kind, and the cache version they were parsed at.
type Policies = HashMap<Kind, (u64, Arc<Vec<Json>>)>;

/// How long the workers get to report interrupted sweeps at shutdown.
const DRAIN: Duration = Duration::from_millis(2500);
/// How long giving the lease up may take at shutdown.
const RELEASE: Duration = Duration::from_secs(1);

pub async fn run(config: Config, opts: Options) -> Result<(), ControllerError> {
    let (client, watch_client) = clients(config, &opts)?;
    let mut shutdown = Box::pin(shutdown_signal());
    let metrics = Arc::new(metrics::Metrics::new());
    let caches = Caches::new(watch_client, opts.page_size, opts.policy_selector.clone());
    let ready = metrics::Readiness::default();
    let server = metrics::serve(opts.metrics_addr, metrics.clone(), ready.clone()).await?;
    tracing::info!(addr = %server, "serving /metrics, /healthz and /readyz");
    if let Some(webhook) = &opts.webhook {
        let addr = crate::admission::serve(webhook).await?;
        tracing::info!(%addr, path = crate::admission::PATH, "serving the admission webhook");
    }

    let clock: Arc<dyn leader::Clock> =
        Arc::new(leader::SystemClock::with_offset(opts.clock_offset));
    let leadership = Arc::new(if opts.leader_elect {
        Leadership::elected(clock.clone())
    } else {
        Leadership::default()
    });
    metrics.track_leadership(leadership.clone());
    let elector = opts.leader_elect.then(|| {
        leader::LeaderElector::new(
            client.clone(),
            &opts.lease_namespace,
            &opts.lease_name,
            &opts.identity,
            opts.lease_duration,
            clock,
            leadership.clone(),
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
            tokio::select! {
                _ = tokio::time::sleep(e.retry_period()) => {}
                _ = &mut shutdown => {
                    tracing::info!("shutting down");
                    return Ok(());
                }
            }
        }
        tracing::info!(identity = %opts.identity, "became leader");
    }

    let reporter = Reporter {
        controller: "retainer".into(),
        instance: Some(opts.identity.clone()),
    };
    let slots = match opts.evaluation_concurrency {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    let shared = Arc::new(Shared {
        recorder: Recorder::new(client.clone(), reporter),
        executor: Executor {
            client: client.clone(),
            concurrency: opts.delete_concurrency,
            limiter: Arc::new(RateLimiter::new(opts.delete_qps)),
            leadership: leadership.clone(),
        },
        client,
        caches,
        metrics,
        eval_budget: opts.eval_budget,
        incremental_evaluation: opts.incremental_evaluation,
        evaluations: Arc::new(Semaphore::new(slots)),
        refs: Default::default(),
        discovered: Mutex::new(HashMap::new()),
        registry: opts.registry.clone(),
        manifests: Arc::new(ManifestCache::default()),
        stop: Stop::default(),
    });
    for k in policy_kinds() {
        shared.caches.get(&k);
    }

    let (lost_tx, mut lost_rx) = watch::channel(false);
    let elector = elector.map(Arc::new);
    if let Some(e) = elector.clone() {
        let retry = e.retry_period();
        let leadership = leadership.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(retry).await;
                match e.try_acquire_or_renew().await {
                    Ok(true) => {}
                    Ok(false) => break,
                    Err(err) => tracing::warn!(error = %err, "renewing the leader lease failed"),
                }
                // Past the renew deadline (failed attempts, or one that succeeded too late)
                // another replica may take over soon: stop, as client-go's elector does.
                if !leadership.still_leading() {
                    break;
                }
            }
            let _ = lost_tx.send(true);
        });
    }

    let changed = shared.caches.changed.clone();
    let mut workers: HashMap<String, WorkerHandle> = HashMap::new();
    let mut policies = Policies::new();
    loop {
        ready.set(shared.caches.all_ready());
        sync_workers(&shared, &mut workers, &mut policies);
        ready.set(shared.caches.all_ready());
        tokio::select! {
            _ = changed.notified() => {
                // Settling, but not past a SIGTERM: that is handled on the next turn.
                tokio::select! {
                    _ = tokio::time::sleep(opts.debounce) => {}
                    _ = shutdown.as_mut() => {
                        shut_down(&shared, workers, elector.as_deref()).await;
                        return Ok(());
                    }
                }
            }
            _ = lost_rx.changed() => {
                // No status write: another replica may lead already. The sweeps stop before
                // their next delete; the next leader finds them in status and finishes them.
                shared.stop.stop(Interruption::LostLease);
                drain(workers, Duration::from_secs(1)).await;
                return Err(ControllerError::LostLease);
            }
            _ = &mut shutdown => {
                shut_down(&shared, workers, elector.as_deref()).await;
                return Ok(());
            }
        }
    }
}

/// One worker per policy in the caches: new policies get one, a worker is woken with the
/// current version of its policy when that changed or a cache it reads did (a change to a kind
/// it does not read costs it nothing), deleted policies' workers are stopped and their metric
/// series dropped.
fn sync_workers(
    shared: &Arc<Shared>,
    workers: &mut HashMap<String, WorkerHandle>,
    policies: &mut Policies,
) {
    let mut seen = HashSet::new();
    let mut listed = Vec::new();
    for k in policy_kinds() {
        let cache = shared.caches.get(&k);
        if !cache.ready.load(Ordering::Acquire) {
            continue;
        }
        listed.push(k.clone());
        // Parsed again only when a policy of this kind changed, not at every change of any
        // cache: policies' statuses can be large.
        let version = cache.version.load(Ordering::Acquire);
        let objs = match policies.get(&k) {
            Some((v, objs)) if *v == version => objs.clone(),
            _ => {
                let objs = Arc::new(cache.snapshot());
                policies.insert(k.clone(), (version, objs.clone()));
                objs
            }
        };
        for obj in objs.iter() {
            let key = policy_key(obj);
            let uid = obj
                .pointer("/metadata/uid")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string();
            seen.insert(key.clone());
            match workers.get_mut(&key) {
                Some(w) if w.uid == uid && !w.tx.is_closed() => {
                    let wake = wake_with(shared, obj, &w.reads);
                    if wake.is_none() || wake != w.sent {
                        w.tx.send_replace(obj.clone());
                        w.sent = wake;
                    }
                }
                _ => {
                    if let Some(old) = workers.remove(&key) {
                        old.cancel.cancel();
                    }
                    let (tx, rx) = watch::channel(obj.clone());
                    let cancel = shared.stop.token.child_token();
                    let reads: Reads = Arc::new(Mutex::new(None));
                    let worker = Worker::new(
                        shared.clone(),
                        k.clone(),
                        key.clone(),
                        rx,
                        cancel.clone(),
                        reads.clone(),
                    );
                    let task = tokio::spawn(worker.run());
                    workers.insert(
                        key,
                        WorkerHandle {
                            kind: k.clone(),
                            uid,
                            tx,
                            cancel,
                            task,
                            reads,
                            sent: None,
                        },
                    );
                }
            }
        }
    }
    workers.retain(|key, w| {
        if !listed.contains(&w.kind) || seen.contains(key) {
            return true;
        }
        w.cancel.cancel();
        let (namespace, name) = key.split_once('/').unwrap_or(("", key.as_str()));
        shared.metrics.forget(name, namespace);
        false
    });
}

/// What a worker is woken with: its policy's resourceVersion and the versions of the caches
/// it reads; None when it has not said what it reads (it is then woken by every change).
fn wake_with(shared: &Shared, obj: &Json, reads: &Reads) -> Option<(String, Vec<u64>)> {
    let kinds = reads.lock().unwrap_or_else(|p| p.into_inner()).clone()?;
    let rv = obj
        .pointer("/metadata/resourceVersion")
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_string();
    let versions = kinds
        .iter()
        .map(|k| shared.caches.get(k).version.load(Ordering::Acquire))
        .collect();
    Some((rv, versions))
}

/// SIGTERM: stops every sweep before its next delete, gives the workers `DRAIN` to report, and
/// gives the lease up so that another replica takes over (and resumes) at once.
async fn shut_down(
    shared: &Shared,
    workers: HashMap<String, WorkerHandle>,
    elector: Option<&leader::LeaderElector>,
) {
    tracing::info!("shutting down");
    shared.stop.stop(Interruption::Shutdown);
    drain(workers, DRAIN).await;
    if let Some(e) = elector {
        let _ = tokio::time::timeout(RELEASE, e.release()).await;
    }
}

/// Waits for the workers to finish, at most `limit`.
async fn drain(workers: HashMap<String, WorkerHandle>, limit: Duration) {
    // The senders stay open meanwhile: a closed one tells a worker its policy is gone.
    let (senders, tasks): (Vec<_>, Vec<_>) = workers.into_values().map(|w| (w.tx, w.task)).unzip();
    let _ = tokio::time::timeout(limit, futures::future::join_all(tasks)).await;
    drop(senders);
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
