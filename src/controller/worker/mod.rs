//! One policy's worker: its own task, its own timers, its own state. It evaluates when what
//! the policy reads changed, reads its registry on a task of its own, sweeps when `decide`
//! says so, and writes the policy's status. Nothing here waits for another policy: what all
//! policies share (caches, evaluation slots, the delete rate limit) lives in `Shared`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use jiff::Timestamp;
use kube::runtime::events::EventType;
use serde_json::Value as Json;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::caches::{Cache, Kind};
use super::decide::{self, Decision, Facts, Interruption, RegistryFacts, SweepStep};
use super::incremental::Tracked;
use super::inputs;
use super::marks;
use super::metrics::SweepResult;
use super::{SWEEP_NOW_ANNOTATION, Shared, now_secs};
use crate::api::{PolicyView, RetentionPolicyStatus, TargetKind};
use crate::engine::{CompiledPolicy, Evaluation, OverBudget, PolicyError};
use crate::expr::FieldTree;
use crate::oci::RegistryClient;
use crate::status::{self, Readiness, SweepStatus};

mod evaluation;
mod registry;
mod sweeping;
mod writer;

use evaluation::{evaluate_now, fields_read};
use registry::InventoryRead;
use sweeping::SweepEnd;
use writer::{WriteInputs, record};

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

/// How often at most the clock alone (ages crossing keep's thresholds) makes a policy's
/// worker evaluate and write status again.
const AGE_REFRESH: Duration = Duration::from_secs(5);

/// How long a status write on the way out (an interrupted sweep at shutdown) may take: the
/// process must be gone well within its termination grace period.
const FINAL_WRITE: Duration = Duration::from_secs(2);

/// A policy compiled for one generation, or why it cannot be.
type CompiledFor = (Option<i64>, Result<Arc<CompiledPolicy>, PolicyError>);

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
    /// Shared: a step clones a pointer, not every verdict.
    evaluation: Option<Arc<Evaluation>>,
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
        let registry_facts = oci.then(|| self.registry_facts(self.state.sweep_waiting_since));
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
        // An object's age crossed one of keep's thresholds: its verdict may have changed with
        // nothing else changing.
        let clock_due = self.clock_due().is_some_and(|due| due <= now);
        if self.state.seen != versions
            || clock_due
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
                    self.state.evaluation = Some(Arc::new(e));
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
    /// What `decide` needs to know of the policy's registry reads.
    fn registry_facts(&self, sweep_waiting_since: Option<Timestamp>) -> RegistryFacts {
        RegistryFacts {
            read_at: self.state.inventory.as_ref().map(|(t, _)| *t),
            failed_at: self.state.registry_error.as_ref().map(|(t, _)| *t),
            reading: self.state.reading.is_some(),
            sweep_waiting_since,
            refresh: self.shared.registry.refresh,
            retry: self
                .shared
                .registry
                .refresh
                .min(self.state.registry_backoff.current(REGISTRY_RETRY)),
        }
    }

    /// When the clock alone may next change a verdict (`Tracked::next_due`).
    fn clock_due(&self) -> Option<Timestamp> {
        self.state
            .carried
            .tracked
            .as_ref()
            .and_then(Tracked::next_due)
    }

    fn next_wake(&self, compiled: &CompiledPolicy, now: Timestamp) -> Option<Timestamp> {
        let oci = compiled.target == TargetKind::OciArtifact;
        let d = decide::decide(&Facts {
            now,
            next_sweep: self.state.next_sweep.unwrap_or(Timestamp::MAX),
            requested: false,
            resume: false,
            suspended: compiled.view.spec.suspend,
            registry: oci.then(|| self.registry_facts(None)),
        });
        if d.read_inventory {
            // Due now: the next step starts the read.
            return Some(now);
        }
        // The next instant the clock alone changes a verdict, so that status shows an object
        // becoming a candidate when its age passes keep's threshold, not at the next change or
        // sweep; at most once per AGE_REFRESH, so that a stream of crossings does not become a
        // stream of status writes.
        let crossing = self
            .clock_due()
            .map(|due| due.max(now.checked_add(AGE_REFRESH).unwrap_or(Timestamp::MAX)));
        match (d.wake_at, crossing) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
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

fn target_kind(t: TargetKind) -> Kind {
    match t {
        TargetKind::Secret => Kind::secrets(),
        _ => Kind::jobs(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
