//! One policy's worker: its own task, its own timers, its own state. It evaluates when what
//! the policy reads changed, reads its registry on a task of its own, sweeps when `decide`
//! says so, and writes the policy's status. Nothing here waits for another policy: what all
//! policies share (caches, evaluation slots, the delete rate limit) lives in `Shared`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde_json::{Value as Json, json};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::caches::{Cache, Kind};
use super::decide::{self, Decision, Facts, Interruption, RegistryFacts, SweepStep, Trigger};
use super::incremental::{self, Inputs, Mode, Tracked};
use super::inputs;
use super::marks;
use super::metrics::SweepResult;
use super::sweep::{
    Fresh, InUse, Outcome, PAUSE_LIMIT, Recheck, SweepPlan, candidate_mark_keys, plan_sweep,
};
use super::{FIELD_MANAGER, SWEEP_NOW_ANNOTATION, Shared, now_secs};
use crate::api::{PolicyView, RetentionPolicyStatus, SweepRecord, TargetKind};
use crate::engine::{
    CompiledPolicy, Evaluation, OverBudget, PolicyError, Snapshot, evaluate_within, labels_of,
    selects,
};
use crate::expr::FieldTree;
use crate::oci::{RegistryClient, RequestTally, fetch_inventory_counted};
use crate::refs::RefIndex;
use crate::status::{self, Readiness, StatusInput, SweepStatus, desired_status};

/// Reasons of the Events a sweep publishes on its policy.
pub mod event {
    pub const SWEPT: &str = "Swept";
    pub const SWEEP_FAILED: &str = "SweepFailed";
    pub const SWEEP_BLOCKED: &str = "SweepBlocked";
    pub const SWEEP_INTERRUPTED: &str = "SweepInterrupted";
    pub const DRY_RUN: &str = "DryRun";
}

/// How soon a failed registry read is tried again at most (1 s after the first failure,
/// doubling with each failure in a row; or the refresh period, if shorter).
const REGISTRY_RETRY: Duration = Duration::from_secs(15);

/// How long a status write on the way out (an interrupted sweep at shutdown) may take: the
/// process must be gone well within its termination grace period.
const FINAL_WRITE: Duration = Duration::from_secs(2);

/// A policy compiled for one generation, or why it cannot be.
type CompiledFor = (Option<i64>, Result<Arc<CompiledPolicy>, PolicyError>);

/// A registry read: when it started, and the client and artifacts, or why not.
type InventoryRead = (
    Timestamp,
    Result<(Arc<RegistryClient>, Vec<Json>), Readiness>,
);

/// Capped exponential backoff for one kind of failure of one policy: 1 s, 2 s, 4 s, ... up to
/// `cap`, back to the start after a success.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Counts a failure; how long to wait before the next try.
    pub fn failed(&mut self, cap: Duration) -> Duration {
        let wait = Duration::from_secs(1u64 << self.failures.min(16)).min(cap);
        self.failures = self.failures.saturating_add(1);
        wait
    }

    /// How long the next try waits, without counting a failure.
    pub fn current(&self, cap: Duration) -> Duration {
        match self.failures {
            0 => Duration::ZERO,
            n => Duration::from_secs(1u64 << (n - 1).min(16)).min(cap),
        }
    }

    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// How long a failed status write waits at most before it is tried again.
const WRITE_RETRY_MAX: Duration = Duration::from_secs(30);

/// What the worker remembers about its policy.
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
    /// Grace-period marks by key (uid, or repository@digest).
    marks: HashMap<String, Timestamp>,
    /// Marks read back from status when the worker started, by hash; used by the first sweep.
    stored_marks: Option<HashMap<String, Timestamp>>,
    /// Whether `marks` are the policy's marks (a sweep planned with them): only then are they
    /// written to status, so that a new worker does not wipe the stored ones before using them.
    marks_current: bool,
    sweep_request: Option<String>,
    /// A sweep that started and did not complete waits to be finished.
    resume: bool,
    last_written: Option<Json>,
    /// Moves whenever `evaluation` is replaced.
    evaluation_version: u64,
    /// What the last status written (or found equal) was computed from: equal inputs give an
    /// equal status (`desired_status`), so it is not built again.
    last_inputs: Option<WriteInputs>,
    /// OCI: the registry's artifacts as last read, and when the read started.
    inventory: Option<(Timestamp, Arc<Vec<Json>>)>,
    registry: Option<Arc<RegistryClient>>,
    /// The last read failed (when it started, and why); cleared by a read that succeeds.
    registry_error: Option<(Timestamp, Readiness)>,
    reading: Option<JoinHandle<InventoryRead>>,
    sweep_waiting_since: Option<Timestamp>,
    /// Registry reads that failed in a row: the next read waits longer, up to REGISTRY_RETRY.
    registry_backoff: Backoff,
    /// A status write failed: when to try it again.
    write_retry: Option<Timestamp>,
    write_backoff: Backoff,
    /// What the last evaluation left for the next one.
    carried: Carried,
}

/// What a status is computed from, besides the policy's own status (its resourceVersion
/// stands for that).
#[derive(Clone, Debug, PartialEq)]
struct WriteInputs {
    resource_version: String,
    readiness: Readiness,
    evaluation: Option<u64>,
    sweep: Option<SweepStatus>,
    next_sweep: Option<Timestamp>,
    sweep_started: Option<Timestamp>,
    marks: Option<u64>,
}

/// Custom referrers as parsed, and the versions of the caches they were parsed from.
type ParsedReferrers = (Vec<(Kind, u64)>, Arc<Vec<Json>>);

/// What one evaluation leaves for the next: the policy's incremental state (Jobs and Secrets),
/// and the custom referrers as parsed, with the cache versions they were parsed at.
#[derive(Default)]
struct Carried {
    tracked: Option<Tracked>,
    custom: Option<ParsedReferrers>,
    /// The generation of the verdicts the worker holds (`Tracked::generation`).
    held: Option<u64>,
}

impl PolicyState {
    /// The state of a policy this worker has not seen before (or that was replaced): what a
    /// previous controller left in status is taken up here.
    fn first_seen(uid: String, obj: &Json) -> PolicyState {
        let status: Option<RetentionPolicyStatus> = obj
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok());
        let in_progress = status
            .as_ref()
            .and_then(|s| s.last_sweep.as_ref())
            .is_some_and(|r| r.start_time.is_some() && r.completion_time.is_none());
        let stored = status
            .as_ref()
            .map(|s| marks::decode(&s.grace_period_marks))
            .filter(|m| !m.is_empty());
        PolicyState {
            uid,
            // A request already on the object was handled by whoever ran before.
            sweep_request: sweep_request(obj),
            resume: in_progress,
            stored_marks: stored,
            ..Default::default()
        }
    }
}

/// What the worker loop does after a step.
enum Next {
    /// Step again at once: the step consumed a change notification (during a sweep).
    Again,
    /// Wait for a change, the inventory, or this time.
    Wait(Option<Timestamp>),
    Stop,
}

pub(super) struct Worker {
    pub shared: Arc<Shared>,
    pub kind: Kind,
    pub key: String,
    pub rx: watch::Receiver<Json>,
    /// Cancelled by the supervisor on shutdown, a lost lease or the policy's deletion.
    pub cancel: CancellationToken,
    /// The caches this worker reads, for the supervisor to wake it only for their changes.
    reads: super::Reads,
    state: PolicyState,
}

enum Woke {
    Changed,
    Closed,
    Timer,
    Read(Result<InventoryRead, tokio::task::JoinError>),
    Cancelled,
}

impl Worker {
    pub fn new(
        shared: Arc<Shared>,
        kind: Kind,
        key: String,
        rx: watch::Receiver<Json>,
        cancel: CancellationToken,
        reads: super::Reads,
    ) -> Worker {
        Worker {
            shared,
            kind,
            key,
            rx,
            cancel,
            reads,
            state: PolicyState::default(),
        }
    }

    /// Says which caches this worker reads: from now on only their changes (and edits of its
    /// policy) wake it.
    fn set_reads(&self, kinds: Vec<Kind>) {
        *self.reads.lock().unwrap_or_else(|p| p.into_inner()) = Some(kinds);
    }

    pub async fn run(mut self) {
        loop {
            if self.cancel.is_cancelled() {
                break;
            }
            let obj = self.rx.borrow_and_update().clone();
            let wake = match self.step(&obj).await {
                Next::Again => continue,
                Next::Stop => break,
                Next::Wait(at) => at,
            };
            // A status write that failed is tried again, with backoff, even if nothing changes.
            let wake = match (wake, self.state.write_retry) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            let sleep = wake
                .map(|t| {
                    Duration::try_from(t.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
                })
                .unwrap_or(Duration::from_secs(3600));
            let reading = self.state.reading.as_mut();
            let woke = tokio::select! {
                c = self.rx.changed() => if c.is_ok() { Woke::Changed } else { Woke::Closed },
                _ = tokio::time::sleep(sleep) => Woke::Timer,
                r = async {
                    match reading {
                        Some(h) => h.await,
                        None => std::future::pending().await,
                    }
                } => Woke::Read(r),
                _ = self.cancel.cancelled() => Woke::Cancelled,
            };
            match woke {
                Woke::Changed | Woke::Timer => {}
                Woke::Closed | Woke::Cancelled => break,
                Woke::Read(r) => {
                    self.state.reading = None;
                    match r {
                        Ok(read) => self.inventory_read(read),
                        Err(e) => {
                            tracing::warn!(policy = %self.key, error = %e, "registry read task failed")
                        }
                    }
                }
            }
        }
        if let Some(h) = self.state.reading.take() {
            h.abort();
        }
    }

    fn inventory_read(&mut self, (started, result): InventoryRead) {
        let s = &mut self.state;
        match result {
            Ok((client, docs)) => {
                s.inventory = Some((started, Arc::new(docs)));
                s.registry = Some(client);
                s.registry_error = None;
                s.registry_backoff.reset();
                s.seen.clear();
            }
            Err(r) => {
                tracing::warn!(policy = %self.key, reason = %r.reason, error = %r.message, "reading the registry failed");
                s.registry_error = Some((started, r));
                s.registry_backoff.failed(REGISTRY_RETRY);
            }
        }
    }

    /// Starts reading the registry on a task of its own, bounded by the registry deadline.
    fn start_read(&mut self, compiled: Arc<CompiledPolicy>) {
        let shared = self.shared.clone();
        let deadline = shared.registry.deadline;
        self.state.reading = Some(tokio::spawn(async move {
            // Precise: compared with when a sweep started to wait for a fresh read.
            let started = Timestamp::now();
            let metrics = &shared.metrics;
            let count = |host: &str, t: &RequestTally| metrics.registry_requests(host, t);
            let read = fetch_inventory_counted(
                &shared.client,
                &shared.registry,
                &shared.manifests,
                &compiled,
                Some(&count),
            );
            let result = match tokio::time::timeout(deadline, read).await {
                Ok(r) => r,
                Err(_) => Err(Readiness {
                    ready: false,
                    reason: status::ready::TARGET_UNAVAILABLE,
                    message: format!(
                        "reading the registry took longer than {}s (--registry-deadline)",
                        deadline.as_secs()
                    ),
                }),
            };
            (started, result)
        }));
    }

    async fn step(&mut self, obj: &Json) -> Next {
        let uid = obj
            .pointer("/metadata/uid")
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        let generation = obj.pointer("/metadata/generation").and_then(Json::as_i64);
        let now = now_secs();
        if self.state.uid != uid {
            if let Some(h) = self.state.reading.take() {
                h.abort();
            }
            self.state = PolicyState::first_seen(uid, obj);
        }
        let view = match PolicyView::from_object(&self.kind.kind, obj) {
            Ok(v) => v,
            Err(e) => {
                // Nothing is read until the policy is edited.
                self.set_reads(Vec::new());
                let r = Readiness::unreadable(&e);
                self.write_not_ready(obj, &r, now).await;
                return Next::Wait(None);
            }
        };
        self.shared.metrics.wake(&view);
        if self.state.compiled.as_ref().map(|c| c.0) != Some(generation) {
            let old_registry = self
                .state
                .compiled
                .as_ref()
                .and_then(|c| c.1.as_ref().ok())
                .map(|c| c.view.spec.target.registry.clone());
            if old_registry.is_some_and(|r| r != view.spec.target.registry) {
                if let Some(h) = self.state.reading.take() {
                    h.abort();
                }
                self.state.inventory = None;
                self.state.registry = None;
                self.state.registry_error = None;
            }
            self.state.compiled = Some((generation, CompiledPolicy::compile(view).map(Arc::new)));
            // New expressions: nothing the old ones worked out can be reused.
            self.state.carried.tracked = None;
            self.state.seen.clear();
            self.state.next_sweep = None;
        }
        let compiled = match self.state.compiled.as_ref().map(|c| &c.1) {
            Some(Ok(c)) => c.clone(),
            Some(Err(e)) => {
                self.set_reads(Vec::new());
                let r = Readiness::invalid(e);
                self.state.evaluation = None;
                self.state.next_sweep = None;
                self.write_not_ready(obj, &r, now).await;
                return Next::Wait(None);
            }
            None => unreachable!("compiled just above"),
        };

        // The caches this policy reads, as `retainer plan` reads them; started on first need.
        // The caches watch every namespace, a superset of each read's scope: the engine keeps
        // to it.
        let oci = compiled.target == TargetKind::OciArtifact;
        let needs = inputs::needs(&compiled);
        let mut discovered = std::collections::BTreeMap::new();
        for c in &needs.custom {
            discovered.insert(
                c.clone(),
                self.shared.discover(&c.api_version, &c.kind).await,
            );
        }
        let needed: Vec<Kind> =
            match inputs::resolve(&needs, |c| discovered.get(c).cloned().flatten()) {
                Ok(reads) => {
                    let mut kinds: Vec<Kind> = reads.into_iter().map(|r| r.kind).collect();
                    kinds.dedup();
                    kinds
                }
                Err(r) => {
                    // Looked at again by its timer below, or when the policy is edited.
                    self.set_reads(Vec::new());
                    self.write_not_ready(obj, &r, now).await;
                    // A kind not served yet may be installed later: look again once the
                    // negative answer is old enough to be asked again (`now` is whole seconds).
                    let again = jiff::SignedDuration::try_from(super::DISCOVERY_RETRY)
                        .unwrap_or(jiff::SignedDuration::from_secs(5))
                        + jiff::SignedDuration::from_secs(2);
                    return Next::Wait(now_secs().checked_add(again).ok());
                }
            };
        let custom: Vec<Kind> = discovered.into_values().flatten().collect();
        self.set_reads(needed.clone());
        let caches: Vec<Arc<Cache>> = needed.iter().map(|k| self.shared.caches.get(k)).collect();
        let fields: Vec<FieldTree> = caches
            .iter()
            .map(|c| {
                let f = fields_read(&compiled, &c.kind, &custom);
                c.require(&f);
                f
            })
            .collect();
        if caches
            .iter()
            .zip(&fields)
            .any(|(c, f)| c.ready.load(Ordering::Acquire) && !c.holds(f))
        {
            // Listing again with the fields this policy reads; the list's end wakes us.
            return Next::Wait(None);
        }
        if let Some(c) = caches.iter().find(|c| !c.ready.load(Ordering::Acquire)) {
            // Still listing: say nothing until the list is in, unless it cannot be read at all.
            let err = c.last_error.lock().ok().and_then(|e| e.clone());
            if let Some(err) = err {
                let r = Readiness {
                    ready: false,
                    reason: status::ready::TARGET_UNAVAILABLE,
                    message: format!("cannot list {}: {err}", c.kind.plural),
                };
                self.write_not_ready(obj, &r, now).await;
            }
            return Next::Wait(None);
        }

        let next = *self
            .state
            .next_sweep
            .get_or_insert_with(|| compiled.schedule.next_after(now).unwrap_or(Timestamp::MAX));
        let requested = sweep_request(obj);
        let manual = requested.is_some() && requested != self.state.sweep_request;
        let suspended = compiled.view.spec.suspend;
        let registry_facts = oci.then(|| RegistryFacts {
            read_at: self.state.inventory.as_ref().map(|(t, _)| *t),
            failed_at: self.state.registry_error.as_ref().map(|(t, _)| *t),
            reading: self.state.reading.is_some(),
            sweep_waiting_since: self.state.sweep_waiting_since,
            refresh: self.shared.registry.refresh,
            retry: self
                .shared
                .registry
                .refresh
                .min(self.state.registry_backoff.current(REGISTRY_RETRY)),
        });
        let Decision {
            sweep,
            read_inventory,
            wake_at,
        } = decide::decide(&Facts {
            now,
            next_sweep: next,
            requested: manual,
            resume: self.state.resume,
            suspended,
            registry: registry_facts,
        });
        if let SweepStep::WaitForInventory(_) = sweep {
            // Precise, and before the read starts: only a read started after this counts.
            self.state
                .sweep_waiting_since
                .get_or_insert_with(Timestamp::now);
        }
        if read_inventory {
            self.start_read(compiled.clone());
        }

        if oci {
            let failed_sweep = match sweep {
                SweepStep::RegistryFailed(_) => {
                    // A sweep that was due cannot run without the registry: say so, and wait
                    // for the next one on the schedule rather than asking the failing registry
                    // again at once.
                    let message = self
                        .state
                        .registry_error
                        .as_ref()
                        .map(|(_, r)| r.message.clone())
                        .unwrap_or_default();
                    self.shared
                        .metrics
                        .sweep(&compiled.view, SweepResult::Failed);
                    let f = SweepStatus {
                        ok: false,
                        reason: status::swept::FAILED,
                        message: format!(
                            "nothing deleted: the registry could not be read: {message}"
                        ),
                        record: None,
                    };
                    self.state.sweep_request = requested.clone();
                    self.state.sweep_waiting_since = None;
                    self.state.resume = false;
                    self.state.next_sweep = compiled.schedule.next_after(now_secs());
                    self.publish(obj, EventType::Warning, event::SWEEP_FAILED, &f.message)
                        .await;
                    Some(f)
                }
                _ => None,
            };
            match (&self.state.inventory, self.state.registry_error.clone()) {
                (None, None) => return Next::Wait(wake_at),
                (None, Some((_, r))) => {
                    self.write(obj, &r, None, failed_sweep.as_ref(), None, None, now)
                        .await;
                    return Next::Wait(self.next_wake(&compiled, now));
                }
                _ => {
                    if let Some(f) = failed_sweep {
                        // Reported with the verdicts of the last good read.
                        self.finish_step(obj, &compiled, Some(f), now).await;
                        return Next::Wait(self.next_wake(&compiled, now));
                    }
                }
            }
        }

        let versions: Vec<(Kind, u64)> = caches
            .iter()
            .map(|c| (c.kind.clone(), c.version.load(Ordering::Acquire)))
            .collect();
        if self.state.seen != versions
            || (self.state.evaluation.is_none() && self.state.over_budget.is_none())
        {
            let started = std::time::Instant::now();
            let inventory = self.state.inventory.as_ref().map(|(_, d)| d.clone());
            let mut carried = std::mem::take(&mut self.state.carried);
            if self.state.evaluation.is_none() {
                carried.held = None;
            }
            let Some((result, carried)) = self
                .evaluate(
                    compiled.clone(),
                    caches.clone(),
                    custom.clone(),
                    inventory,
                    now,
                    carried,
                )
                .await
            else {
                return Next::Stop;
            };
            self.state.carried = carried;
            match result {
                Ok(Some(e)) => {
                    self.state.evaluation = Some(e);
                    self.state.evaluation_version += 1;
                    self.state.over_budget = None;
                }
                // The verdicts held are still right: nothing to copy, and status compares
                // equal without being built.
                Ok(None) => self.state.over_budget = None,
                Err(e) => {
                    tracing::warn!(policy = %self.key, error = %e, budget = ?self.shared.eval_budget, "evaluation gave up");
                    self.state.evaluation = None;
                    self.state.over_budget = Some(e);
                }
            }
            self.shared
                .metrics
                .observe_evaluation(&compiled.view, started.elapsed());
            self.state.seen = versions;
        }
        if let Some(e) = &self.state.over_budget {
            // Without verdicts nothing may be swept; the policy says why until it or its
            // objects change.
            let r = Readiness {
                ready: false,
                reason: status::ready::INVALID_EXPRESSION,
                message: format!(
                    "{e} (budget {}s, set by --eval-budget)",
                    self.shared.eval_budget.as_secs_f64()
                ),
            };
            self.write_not_ready(obj, &r, now).await;
            return Next::Wait(wake_at);
        }
        if let Some(e) = &self.state.evaluation {
            self.shared.metrics.set_counts(&compiled.view, e.summary);
        }

        if let SweepStep::Now(trigger) = sweep {
            self.state.sweep_request = requested;
            self.state.sweep_waiting_since = None;
            let outcome = self
                .sweep(obj, &compiled, trigger, now, &caches, &custom)
                .await;
            self.state.next_sweep = compiled.schedule.next_after(now_secs());
            // A sweep deleted objects: evaluate again before reporting.
            self.state.seen.clear();
            return match outcome {
                SweepEnd::Done(s) => {
                    self.state.resume = false;
                    if oci && s.record.as_ref().is_some_and(|r| r.deleted + r.skipped > 0) {
                        // The registry changed: read it again (tag listings, as the sweep's
                        // checks refreshed the rest).
                        self.state.inventory = None;
                    }
                    self.finish_step(obj, &compiled, Some(s), now).await;
                    Next::Again
                }
                SweepEnd::Interrupted(cause, s) => {
                    self.state.resume = true;
                    if !cause.reportable() {
                        return Next::Stop;
                    }
                    if cause == Interruption::Shutdown {
                        let write = self.finish_step(obj, &compiled, Some(s), now);
                        let _ = tokio::time::timeout(FINAL_WRITE, write).await;
                        return Next::Stop;
                    }
                    self.finish_step(obj, &compiled, Some(s), now).await;
                    Next::Again
                }
            };
        }
        // A sweep that suspend interrupted keeps saying so (and resumes when suspend is
        // lifted); otherwise a suspended policy says it is suspended.
        let sweep_status = (suspended && !self.state.resume).then(|| SweepStatus {
            ok: false,
            reason: status::swept::SUSPENDED,
            message: "suspended: policies are evaluated and reported, never swept".into(),
            record: None,
        });
        self.finish_step(obj, &compiled, sweep_status, now).await;
        Next::Wait(self.next_wake(&compiled, now))
    }

    /// When to look again without any change: the decision's time, worked out again now that
    /// the state moved on.
    fn next_wake(&self, compiled: &CompiledPolicy, now: Timestamp) -> Option<Timestamp> {
        let oci = compiled.target == TargetKind::OciArtifact;
        let d = decide::decide(&Facts {
            now,
            next_sweep: self.state.next_sweep.unwrap_or(Timestamp::MAX),
            requested: false,
            resume: false,
            suspended: compiled.view.spec.suspend,
            registry: oci.then(|| RegistryFacts {
                read_at: self.state.inventory.as_ref().map(|(t, _)| *t),
                failed_at: self.state.registry_error.as_ref().map(|(t, _)| *t),
                reading: self.state.reading.is_some(),
                sweep_waiting_since: None,
                refresh: self.shared.registry.refresh,
                retry: self
                    .shared
                    .registry
                    .refresh
                    .min(self.state.registry_backoff.current(REGISTRY_RETRY)),
            }),
        });
        if d.read_inventory {
            // Due now: the next step starts the read.
            Some(now)
        } else {
            d.wake_at
        }
    }

    /// Writes the status of a policy with verdicts.
    async fn finish_step(
        &mut self,
        obj: &Json,
        compiled: &CompiledPolicy,
        sweep: Option<SweepStatus>,
        now: Timestamp,
    ) -> Next {
        let Some(eval) = self.state.evaluation.clone() else {
            return Next::Wait(None);
        };
        let mut r = Readiness::valid(&eval);
        if let (Some((_, err)), Some((read_at, _))) =
            (&self.state.registry_error, &self.state.inventory)
        {
            // The registry fails now: say so, and that the verdicts shown are older.
            r = Readiness {
                ready: false,
                reason: err.reason,
                message: format!(
                    "{}; the verdicts shown are from the registry as read at {read_at}",
                    err.message
                ),
            };
        }
        let next_sweep = (!compiled.view.spec.suspend)
            .then_some(self.state.next_sweep)
            .flatten();
        self.write(obj, &r, Some(&eval), sweep.as_ref(), next_sweep, None, now)
            .await;
        Next::Wait(None)
    }

    /// Evaluates on the blocking pool, within one of the shared evaluation slots. None when the
    /// worker was stopped meanwhile: the result is not waited for.
    async fn evaluate(
        &self,
        compiled: Arc<CompiledPolicy>,
        caches: Vec<Arc<Cache>>,
        custom: Vec<Kind>,
        inventory: Option<Arc<Vec<Json>>>,
        now: Timestamp,
        carried: Carried,
    ) -> Option<(Result<Option<Evaluation>, OverBudget>, Carried)> {
        let permit = tokio::select! {
            p = self.shared.evaluations.clone().acquire_owned() => p.ok()?,
            _ = self.cancel.cancelled() => return None,
        };
        let shared = self.shared.clone();
        let cancel = self.cancel.clone();
        let task = tokio::task::spawn_blocking(move || {
            let _slot = permit;
            evaluate_now(
                &shared,
                &compiled,
                &caches,
                &custom,
                inventory.as_deref().map(Vec::as_slice),
                now,
                &cancel,
                carried,
                shared.incremental_evaluation,
            )
        });
        tokio::select! {
            r = task => r.ok(),
            _ = self.cancel.cancelled() => None,
        }
    }

    async fn sweep(
        &mut self,
        obj: &Json,
        policy: &Arc<CompiledPolicy>,
        trigger: Trigger,
        now: Timestamp,
        caches: &[Arc<Cache>],
        custom: &[Kind],
    ) -> SweepEnd {
        let spec = &policy.view.spec;
        let Some(eval) = self.state.evaluation.clone() else {
            return SweepEnd::Done(SweepStatus {
                ok: false,
                reason: status::swept::FAILED,
                message: "no evaluation to sweep".into(),
                record: None,
            });
        };
        let started = std::time::Instant::now();
        if let Some(stored) = self.state.stored_marks.take() {
            marks::restore(&mut self.state.marks, &stored, &candidate_mark_keys(&eval));
        }
        // A dry run changes nothing, grace marks included: it plans with a copy, so that
        // turning dryRun off later starts every grace period afresh.
        let mut dry_marks = spec.dry_run.then(|| self.state.marks.clone());
        let plan = plan_sweep(
            &eval,
            spec.deletion.as_ref(),
            policy.grace_period,
            dry_marks.as_mut().unwrap_or(&mut self.state.marks),
            now,
        );
        if !spec.dry_run {
            self.state.marks_current = true;
        }
        let prefix = if trigger == Trigger::Resume {
            "resumed an interrupted sweep: "
        } else {
            ""
        };
        let (targets, deferred, waiting) = match plan {
            SweepPlan::Blocked { message } => {
                self.shared
                    .metrics
                    .sweep(&policy.view, SweepResult::Blocked);
                self.publish(obj, EventType::Warning, event::SWEEP_BLOCKED, &message)
                    .await;
                return SweepEnd::Done(SweepStatus {
                    ok: false,
                    reason: status::swept::BLOCKED,
                    message,
                    record: Some(record(now, Some(now_secs()), 0, 0, 0)),
                });
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
            self.shared.metrics.sweep(&policy.view, SweepResult::DryRun);
            self.publish(obj, EventType::Normal, event::DRY_RUN, &message)
                .await;
            return SweepEnd::Done(SweepStatus {
                ok: true,
                reason: status::swept::DRY_RUN,
                message,
                record: Some(record(now, Some(now_secs()), 0, 0, 0)),
            });
        }
        if !targets.is_empty() {
            // Recorded before the first delete: a sweep cut short by a crash, a restart or a
            // leader change is found in status and finished by whoever runs next.
            let r = Readiness::valid(&eval);
            self.write(
                obj,
                &r,
                Some(&eval),
                None,
                self.state.next_sweep,
                Some(now),
                now,
            )
            .await;
        }

        let key = policy.view.key();
        let propagation = spec.deletion.as_ref().and_then(|d| d.propagation_policy);
        let token = self.cancel.child_token();
        let shared = self.shared.clone();
        let registry = self.state.registry.clone();
        let inventory = self.state.inventory.as_ref().map(|(_, d)| d.clone());
        let group_by = spec.group_by.is_some();
        let target = policy.target;
        let recheck =
            (target != TargetKind::OciArtifact).then(|| self.recheck(policy, caches, custom));
        let in_use = registry.as_ref().map(|r| self.in_use(r.host()));
        let run = {
            let recheck = recheck.as_ref();
            let in_use = in_use.as_ref();
            let token = token.clone();
            async move {
                match (target, registry, in_use) {
                    (TargetKind::OciArtifact, Some(registry), Some(in_use)) => {
                        let evaluated = inventory.as_deref().map(Vec::as_slice);
                        let out = shared
                            .executor
                            .delete_oci(
                                &registry,
                                &shared.manifests,
                                evaluated.unwrap_or_default(),
                                targets,
                                group_by,
                                in_use,
                                &key,
                                &token,
                            )
                            .await;
                        shared
                            .metrics
                            .registry_requests(registry.host(), &registry.counts.take());
                        out
                    }
                    (TargetKind::OciArtifact, _, _) => Vec::new(),
                    _ => {
                        shared
                            .executor
                            .delete_all(target, targets, propagation, &key, recheck, &token)
                            .await
                    }
                }
            }
        };
        tokio::pin!(run);
        let generation = obj.pointer("/metadata/generation").and_then(Json::as_i64);
        let mut cause: Option<Interruption> = None;
        let mut watching = true;
        let outcomes = loop {
            tokio::select! {
                out = &mut run => break out,
                changed = self.rx.changed(), if cause.is_none() && watching => {
                    let c = match changed {
                        Err(_) => {
                            watching = false;
                            // Closed by a supervisor that stops: the cause is its.
                            (!self.cancel.is_cancelled()).then_some(Interruption::PolicyDeleted)
                        }
                        Ok(()) => {
                            let o = self.rx.borrow();
                            interruption_by_edit(&o, &self.state.uid, generation)
                        }
                    };
                    if let Some(c) = c {
                        tracing::info!(policy = %self.key, cause = %c, "stopping the sweep");
                        cause = Some(c);
                        token.cancel();
                    }
                }
            }
        };
        if cause.is_none() && token.is_cancelled() {
            // Stopped from above: shutdown or a lost lease, or the policy's deletion.
            cause = Some(
                self.shared
                    .stop
                    .cause()
                    .unwrap_or(Interruption::PolicyDeleted),
            );
        }

        let (mut deleted, mut failed, mut skipped, mut not_attempted) = (0i64, 0i64, 0i64, 0i64);
        let mut first_failure = None;
        for (_, o) in &outcomes {
            match o {
                Outcome::Deleted => deleted += 1,
                Outcome::AlreadyGone | Outcome::Skipped(_) => skipped += 1,
                Outcome::Failed(e) => {
                    failed += 1;
                    first_failure.get_or_insert_with(|| e.clone());
                }
                Outcome::NotAttempted => not_attempted += 1,
            }
        }
        self.shared
            .metrics
            .deletions(&policy.view, policy.target, deleted, failed);
        self.shared
            .metrics
            .observe_sweep(&policy.view, started.elapsed());
        if let Some(c) = cause {
            let message = format!(
                "{prefix}interrupted by {c}: deleted {deleted}, failed {failed}, skipped {skipped}, {not_attempted} not attempted; the next leader or evaluation resumes it with fresh verdicts"
            );
            self.shared
                .metrics
                .sweep(&policy.view, SweepResult::Interrupted);
            if c.reportable() {
                let publish =
                    self.publish(obj, EventType::Normal, event::SWEEP_INTERRUPTED, &message);
                let _ = tokio::time::timeout(FINAL_WRITE, publish).await;
            }
            return SweepEnd::Interrupted(
                c,
                SweepStatus {
                    ok: false,
                    reason: status::swept::INTERRUPTED,
                    message,
                    record: Some(record(now, None, deleted, failed, skipped)),
                },
            );
        }
        let mut message = format!(
            "{prefix}deleted {deleted}, failed {failed}, skipped {skipped} (changed, guarded or gone)"
        );
        let storage = (policy.target == TargetKind::OciArtifact).then(|| {
            let docs = self.state.inventory.as_ref().map(|(_, d)| d.as_slice());
            crate::engine::bytes::storage(
                docs.unwrap_or_default(),
                &super::sweep::deleted_artifacts(&outcomes),
            )
        });
        if let Some(s) = storage {
            message.push_str(&format!("; freed {} bytes", s.freed));
            tracing::info!(
                target: "retainer::audit",
                policy = %self.key, kind = policy.target.as_str(), deleted,
                bytes_before = s.held, bytes_after = s.held.saturating_sub(s.freed),
                bytes_freed = s.freed, "swept"
            );
        }
        later(&mut message);
        let (ok, reason, result) = match (failed, deleted) {
            (0, _) => (true, status::swept::COMPLETED, SweepResult::Completed),
            (_, 0) => (false, status::swept::FAILED, SweepResult::Failed),
            _ => (
                false,
                status::swept::PARTIALLY_FAILED,
                SweepResult::PartiallyFailed,
            ),
        };
        if let Some(f) = &first_failure {
            message.push_str(&format!("; first failure: {f}"));
        }
        self.shared.metrics.sweep(&policy.view, result);
        let (event_type, reason_text) = if failed > 0 {
            (EventType::Warning, event::SWEEP_FAILED)
        } else {
            (EventType::Normal, event::SWEPT)
        };
        self.publish(obj, event_type, reason_text, &message).await;
        let mut rec = record(now, Some(now_secs()), deleted, failed, skipped);
        rec.bytes_freed = storage.map(|s| status::saturating_i64(s.freed));
        SweepEnd::Done(SweepStatus {
            ok,
            reason,
            message,
            record: Some(rec),
        })
    }

    /// Delete-time truth for this policy's sweep: its verdicts worked out again from the caches
    /// it reads, in full (a sweep must not wait on the incremental state another step holds).
    fn recheck(
        &self,
        policy: &Arc<CompiledPolicy>,
        caches: &[Arc<Cache>],
        custom: &[Kind],
    ) -> Recheck {
        let shared = self.shared.clone();
        let cancel = self.cancel.clone();
        let (p, c, k) = (policy.clone(), caches.to_vec(), custom.to_vec());
        let evaluate = move || -> futures::future::BoxFuture<'static, Fresh> {
            let (shared, cancel, p, c, k) = (
                shared.clone(),
                cancel.clone(),
                p.clone(),
                c.clone(),
                k.clone(),
            );
            Box::pin(async move {
                let Ok(_slot) = shared.evaluations.clone().acquire_owned().await else {
                    return Fresh::failed("the controller is stopping".into());
                };
                let now = now_secs();
                let task = tokio::task::spawn_blocking(move || {
                    let (r, _) = evaluate_now(
                        &shared,
                        &p,
                        &c,
                        &k,
                        None,
                        now,
                        &cancel,
                        Carried::default(),
                        false,
                    );
                    // Evaluated whole with no verdicts held: always Some.
                    r.map(|e| Fresh::of(&e.unwrap_or_default(), p.view.spec.deletion.as_ref()))
                });
                match task.await {
                    Ok(Ok(fresh)) => fresh,
                    Ok(Err(e)) => {
                        Fresh::failed(format!("re-checking the verdicts before deleting: {e}"))
                    }
                    Err(e) => {
                        Fresh::failed(format!("re-checking the verdicts before deleting: {e}"))
                    }
                }
            })
        };
        let health = caches.to_vec();
        let versions = caches.to_vec();
        Recheck::new(
            Box::new(evaluate),
            Box::new(move || health.iter().find_map(|c| c.unhealthy())),
            Box::new(move || {
                versions
                    .iter()
                    .map(|c| c.version.load(Ordering::Acquire))
                    .collect()
            }),
            PAUSE_LIMIT,
        )
    }

    /// What an OCI sweep asks of the cluster right before each delete: the Pods and workloads
    /// that use an artifact of `host` now, from the built-in referrer caches.
    fn in_use(&self, host: &str) -> InUse {
        let host = host.to_string();
        let shared = self.shared.clone();
        let caches: Vec<Arc<Cache>> = Kind::builtin_referrers()
            .iter()
            .map(|k| self.shared.caches.get(k))
            .collect();
        InUse {
            unhealthy: Box::new(move || caches.iter().find_map(|c| c.unhealthy())),
            user: Box::new(move |repo, digest, tags| {
                shared
                    .ref_index()
                    .image_referrers(&host, repo, digest, tags)
                    .first()
                    .map(crate::engine::in_use_reason)
            }),
            pause_limit: PAUSE_LIMIT,
        }
    }

    async fn publish(&self, obj: &Json, type_: EventType, reason: &str, note: &str) {
        let ev = Event {
            type_,
            reason: reason.into(),
            note: Some(note.chars().take(1000).collect()),
            action: "Sweep".into(),
            secondary: None,
        };
        if let Err(e) = self
            .shared
            .recorder
            .publish(&ev, &object_reference(obj))
            .await
        {
            tracing::warn!(error = %e, "publishing an event failed");
        }
    }

    /// Status of a policy that has no evaluation to report: only why it is not Ready.
    async fn write_not_ready(&mut self, obj: &Json, readiness: &Readiness, now: Timestamp) {
        self.write(obj, readiness, None, None, None, None, now)
            .await
    }

    /// Writes status by server-side apply, only when it differs from both what the object
    /// shows and what this worker last wrote.
    #[allow(clippy::too_many_arguments)]
    async fn write(
        &mut self,
        obj: &Json,
        readiness: &Readiness,
        eval: Option<&Evaluation>,
        sweep: Option<&SweepStatus>,
        next_sweep: Option<Timestamp>,
        sweep_started: Option<Timestamp>,
        now: Timestamp,
    ) {
        self.shared.metrics.set_ready(obj, readiness.ready);
        let inputs = WriteInputs {
            resource_version: obj
                .pointer("/metadata/resourceVersion")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string(),
            readiness: readiness.clone(),
            evaluation: eval.map(|_| self.state.evaluation_version),
            sweep: sweep.cloned(),
            next_sweep,
            sweep_started,
            marks: self
                .state
                .marks_current
                .then(|| marks_fingerprint(&self.state.marks)),
        };
        // Parsing the current status and building and serializing the desired one costs as
        // much as the verdicts are many; with the same inputs the answer is the same.
        if self.state.last_written.is_some()
            && self.state.last_inputs.as_ref() == Some(&inputs)
            && self.state.write_retry.is_none()
        {
            return;
        }
        let current: Option<RetentionPolicyStatus> = obj
            .get("status")
            .and_then(|s| serde_json::from_value(s.clone()).ok());
        // This worker is the only writer of the status: what it wrote last is newer than what
        // the cache may show yet (a step right after a sweep must not bring back the status
        // from before it).
        let previous: Option<RetentionPolicyStatus> = self
            .state
            .last_written
            .as_ref()
            .and_then(|s| serde_json::from_value(s.clone()).ok())
            .or_else(|| current.clone());
        let generation = obj.pointer("/metadata/generation").and_then(Json::as_i64);
        let grace_marks = self
            .state
            .marks_current
            .then(|| marks::encode(&self.state.marks, marks::MAX_PERSISTED));
        let desired = desired_status(StatusInput {
            previous: previous.as_ref(),
            generation,
            readiness,
            evaluation: eval,
            sweep,
            next_sweep,
            sweep_started,
            grace_marks,
            now,
        });
        let desired_json = serde_json::to_value(&desired).unwrap_or(Json::Null);
        let current_json = current
            .as_ref()
            .map(|c| serde_json::to_value(c).unwrap_or(Json::Null));
        if current_json.as_ref() == Some(&desired_json)
            || self.state.last_written.as_ref() == Some(&desired_json)
        {
            self.state.last_written = Some(desired_json);
            self.state.last_inputs = Some(inputs);
            return;
        }
        // Past the lease deadline another replica may lead: it writes status, not this one.
        if !self.shared.executor.leadership.still_leading() {
            return;
        }
        let name = obj
            .pointer("/metadata/name")
            .and_then(Json::as_str)
            .unwrap_or("");
        let ar: ApiResource = self.kind.resource();
        let client = self.shared.client.clone();
        let api: Api<DynamicObject> =
            match obj.pointer("/metadata/namespace").and_then(Json::as_str) {
                Some(ns) => Api::namespaced_with(client, ns, &ar),
                None => Api::all_with(client, &ar),
            };
        let patch = json!({"apiVersion": self.kind.api_version(), "kind": self.kind.kind, "status": desired_json});
        match api
            .patch_status(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await
        {
            Ok(_) => {
                self.shared.metrics.status_write();
                tracing::debug!(policy = %self.key, "status written");
                self.state.last_written = Some(desired_json);
                self.state.last_inputs = Some(inputs);
                self.state.write_retry = None;
                self.state.write_backoff.reset();
            }
            // Left as it was: the step after the backoff writes it again.
            Err(e) => {
                let wait = self.state.write_backoff.failed(WRITE_RETRY_MAX);
                tracing::warn!(policy = %self.key, error = %e, retry_in = ?wait, "writing status failed");
                let wait = jiff::SignedDuration::try_from(wait).unwrap_or_default();
                self.state.write_retry = Timestamp::now().checked_add(wait).ok();
            }
        }
    }
}

/// The same for equal sets of marks, whatever order the map holds them in.
fn marks_fingerprint(marks: &HashMap<String, Timestamp>) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    marks.iter().fold(marks.len() as u64, |acc, m| {
        acc.wrapping_add(hasher.hash_one(m))
    })
}

/// How a sweep ended.
enum SweepEnd {
    Done(SweepStatus),
    Interrupted(Interruption, SweepStatus),
}

/// Whether a new version of the policy, seen during its sweep, stops the sweep.
fn interruption_by_edit(obj: &Json, uid: &str, generation: Option<i64>) -> Option<Interruption> {
    let now_uid = obj
        .pointer("/metadata/uid")
        .and_then(Json::as_str)
        .unwrap_or("");
    if now_uid != uid {
        return Some(Interruption::PolicyDeleted);
    }
    if obj.pointer("/spec/suspend").and_then(Json::as_bool) == Some(true) {
        return Some(Interruption::Suspended);
    }
    let g = obj.pointer("/metadata/generation").and_then(Json::as_i64);
    (g != generation).then_some(Interruption::Edited)
}

pub(super) fn policy_key(obj: &Json) -> String {
    let name = obj
        .pointer("/metadata/name")
        .and_then(Json::as_str)
        .unwrap_or("");
    match obj.pointer("/metadata/namespace").and_then(Json::as_str) {
        Some(ns) => format!("{ns}/{name}"),
        None => name.to_string(),
    }
}

fn sweep_request(obj: &Json) -> Option<String> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(SWEEP_NOW_ANNOTATION))
        .and_then(Json::as_str)
        .map(String::from)
}

/// What a policy reads of the objects of `kind`: all its expressions and the engine read of
/// its targets, everything of the kinds its custom `referencedBy` expressions walk and of
/// namespaces; of built-in referrers only their references, which every cache of theirs keeps.
fn fields_read(policy: &CompiledPolicy, kind: &Kind, custom: &[Kind]) -> FieldTree {
    if custom.contains(kind) || *kind == Kind::namespaces() {
        return FieldTree::everything();
    }
    let mut fields = FieldTree::default();
    if policy.target != TargetKind::OciArtifact && *kind == target_kind(policy.target) {
        fields.merge(&policy.retained_fields());
    }
    fields
}

fn target_kind(t: TargetKind) -> Kind {
    match t {
        TargetKind::Secret => Kind::secrets(),
        _ => Kind::jobs(),
    }
}

/// A sweep that started at `start`, ended at `end` (None: cut short).
fn record(
    start: Timestamp,
    end: Option<Timestamp>,
    deleted: i64,
    failed: i64,
    skipped: i64,
) -> SweepRecord {
    SweepRecord {
        start_time: Some(time(start)),
        completion_time: end.map(time),
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

/// Evaluates a policy against the caches (or its registry inventory). Runs on the blocking
/// pool; gives up at the evaluation budget or when the worker is stopped. A Job or Secret
/// policy is evaluated from the changes since its last evaluation when it can be
/// (`incremental::evaluate`); an OCI policy is evaluated whole.
#[allow(clippy::too_many_arguments)]
fn evaluate_now(
    shared: &Shared,
    policy: &CompiledPolicy,
    caches: &[Arc<Cache>],
    custom: &[Kind],
    inventory: Option<&[Json]>,
    now: Timestamp,
    cancel: &CancellationToken,
    carried: Carried,
    incremental: bool,
) -> (Result<Option<Evaluation>, OverBudget>, Carried) {
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
    let refs = if policy.target != TargetKind::Job {
        shared.ref_index()
    } else {
        Arc::new(RefIndex::default())
    };
    // Parsed again only when one of their caches changed.
    let custom_caches: Vec<Arc<Cache>> = custom.iter().map(|k| shared.caches.get(k)).collect();
    // By kind too: an edit may name other kinds whose versions happen to be the same numbers.
    let versions: Vec<(Kind, u64)> = custom_caches
        .iter()
        .map(|c| (c.kind.clone(), c.version.load(Ordering::Acquire)))
        .collect();
    let custom_objs = match carried.custom {
        Some((v, objs)) if v == versions => objs,
        _ => Arc::new(custom_caches.iter().flat_map(|c| c.snapshot()).collect()),
    };
    let custom_refs: Vec<&Json> = custom_objs.iter().collect();
    let deadline = std::time::Instant::now() + shared.eval_budget;
    let over_budget = || cancel.is_cancelled() || std::time::Instant::now() > deadline;

    let (result, tracked, held) = match inventory {
        Some(docs) => {
            let snap = Snapshot {
                objects: docs.iter().collect(),
                refs: &refs,
                custom_referrers: custom_refs.clone(),
                namespace_labels: &namespace_labels,
                now,
            };
            (
                evaluate_within(policy, &snap, &over_budget).map(Some),
                None,
                None,
            )
        }
        None => {
            let target = target_kind(policy.target);
            let Some(cache) = caches.iter().find(|c| c.kind == target) else {
                // Every policy's caches include its target's (inputs::needs): nothing to read.
                return (Ok(Some(Evaluation::default())), Carried::default());
            };
            if !incremental {
                // Only the selected objects are held parsed, and only for this evaluation.
                let owned = cache.parsed_where(&policy.retained_fields(), |o| {
                    selects(policy, o, &namespace_labels)
                });
                let snap = Snapshot {
                    objects: owned.iter().collect(),
                    refs: &refs,
                    custom_referrers: custom_refs.clone(),
                    namespace_labels: &namespace_labels,
                    now,
                };
                let result = evaluate_within(policy, &snap, &over_budget).map(Some);
                drop(snap);
                drop(custom_refs);
                let carried = Carried {
                    tracked: None,
                    custom: Some((versions, custom_objs)),
                    held: None,
                };
                return (result, carried);
            }
            let out = incremental::evaluate(
                carried.tracked,
                &Inputs {
                    policy,
                    target: cache,
                    refs,
                    custom_referrers: &custom_refs,
                    namespace_labels: &namespace_labels,
                    now,
                    held: carried.held,
                },
                &over_budget,
            );
            match out.mode {
                Mode::Full(why) => {
                    tracing::debug!(policy = %policy.view.key(), why, "evaluated every object")
                }
                Mode::Changes(n) => {
                    tracing::debug!(policy = %policy.view.key(), changed = n, "evaluated the changes")
                }
            }
            let held = out.tracked.as_ref().map(Tracked::generation);
            (out.result, out.tracked, held)
        }
    };
    drop(custom_refs);
    let carried = Carried {
        tracked,
        custom: Some((versions, custom_objs)),
        held,
    };
    (result, carried)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_that_stop_a_sweep() {
        let p = |uid: &str, generation: i64, suspend: bool| json!({"metadata": {"uid": uid, "generation": generation}, "spec": {"suspend": suspend}});
        let table = [
            ("status or annotation only", p("u", 3, false), None),
            (
                "new generation",
                p("u", 4, false),
                Some(Interruption::Edited),
            ),
            ("suspended", p("u", 4, true), Some(Interruption::Suspended)),
            (
                "replaced",
                p("v", 1, false),
                Some(Interruption::PolicyDeleted),
            ),
        ];
        for (name, obj, want) in table {
            assert_eq!(interruption_by_edit(&obj, "u", Some(3)), want, "{name}");
        }
    }

    #[test]
    fn backoff_doubles_up_to_its_cap_and_starts_over_after_a_success() {
        let cap = Duration::from_secs(15);
        let mut b = Backoff::default();
        assert_eq!(b.current(cap), Duration::ZERO);
        let waits: Vec<u64> = (0..6).map(|_| b.failed(cap).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 15, 15]);
        assert_eq!(b.current(cap), cap);
        b.reset();
        assert_eq!(b.current(cap), Duration::ZERO);
        assert_eq!(b.failed(cap), Duration::from_secs(1));
        assert_eq!(b.current(cap), Duration::from_secs(1));
    }
}
