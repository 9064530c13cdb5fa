//! Sweeps: which candidates a sweep may delete (pure), and deleting them safely (I/O): a fresh
//! read, the guards again, and a delete with UID and resourceVersion preconditions; for OCI
//! artifacts, a fresh look at each repository and at the artifact's referrers.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, Preconditions, PropagationPolicy};
use kube::{Api, Client};
use serde_json::Value as Json;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

use super::caches::Kind;
use super::leader::Leadership;
use crate::api::{Deletion, PropagationPolicy as Propagation, TargetKind};
use crate::engine::{Basis, Evaluation, ObjectId, ObjectResult};
use crate::oci::inventory::{RepoView, tag_changes, views_of};
use crate::oci::{Deleted, ManifestCache, RegistryClient, RegistryError};

/// One object a sweep will try to delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetId {
    Kube {
        namespace: String,
        name: String,
        uid: String,
        resource_version: String,
    },
    Oci {
        repository: String,
        digest: String,
        tags: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub id: TargetId,
    pub why: String,
    /// An artifact that refers to another (signature, SBOM): deleted before its subject.
    pub is_referrer: bool,
}

impl Target {
    /// What grace-period marks are kept by: the uid, or repository@digest.
    pub fn mark_key(&self) -> String {
        match &self.id {
            TargetId::Kube { uid, .. } => uid.clone(),
            TargetId::Oci {
                repository, digest, ..
            } => format!("{repository}@{digest}"),
        }
    }
}

/// What a sweep may do, decided before any request.
#[derive(Debug, PartialEq, Eq)]
pub enum SweepPlan {
    /// Refused whole: candidates/governed exceeds abortAbovePercent.
    Blocked { message: String },
    Proceed {
        targets: Vec<Target>,
        /// Eligible but left for the next sweep by maxPerSweep.
        deferred: usize,
        /// Candidates still inside their grace period.
        waiting: usize,
    },
}

fn target_of(r: &ObjectResult) -> Option<Target> {
    let id = match &r.id {
        ObjectId::Kube {
            namespace,
            name,
            uid,
            resource_version,
        } if !uid.is_empty() => TargetId::Kube {
            namespace: namespace.to_string(),
            name: name.to_string(),
            uid: uid.to_string(),
            resource_version: resource_version.to_string(),
        },
        ObjectId::Oci {
            repository,
            digest,
            tags,
        } if !digest.is_empty() => TargetId::Oci {
            repository: repository.clone(),
            digest: digest.clone(),
            tags: tags.clone(),
        },
        _ => return None,
    };
    let is_referrer = r.basis == Basis::FollowsSubject;
    Some(Target {
        id,
        why: r.reason.clone(),
        is_referrer,
    })
}

/// The mark keys of an evaluation's candidates (see `Target::mark_key`).
pub fn candidate_mark_keys(eval: &Evaluation) -> Vec<String> {
    eval.candidates()
        .filter_map(|r| target_of(r).map(|t| t.mark_key()))
        .collect()
}

/// Plans a sweep. `marks` holds when each candidate (by uid) was first seen as one; it is
/// updated here: new candidates are marked, objects no longer candidates forgotten.
pub fn plan_sweep(
    eval: &Evaluation,
    deletion: Option<&Deletion>,
    grace: Option<Duration>,
    marks: &mut HashMap<String, Timestamp>,
    now: Timestamp,
) -> SweepPlan {
    let s = eval.summary;
    if let Some(pct) = deletion.and_then(|d| d.abort_above_percent)
        && s.governed > 0
        && s.candidates * 100 > i64::from(pct) * s.governed
    {
        return SweepPlan::Blocked {
            message: format!(
                "{} of {} governed objects ({}%) are candidates, above abortAbovePercent {pct}%: nothing deleted",
                s.candidates,
                s.governed,
                s.candidates * 100 / s.governed
            ),
        };
    }
    let mut candidates: Vec<&ObjectResult> = eval.candidates().collect();
    // Oldest first, so a capped sweep removes what has waited longest.
    candidates.sort_by_key(|r| (r.created.is_none(), r.created));
    let current: std::collections::HashSet<String> = candidates
        .iter()
        .filter_map(|r| target_of(r).map(|t| t.mark_key()))
        .collect();
    marks.retain(|uid, _| current.contains(uid));
    let mut eligible = Vec::new();
    let mut waiting = 0;
    for r in candidates {
        let Some(t) = target_of(r) else { continue };
        match grace {
            None => eligible.push(t),
            Some(g) => {
                let marked = *marks.entry(t.mark_key()).or_insert(now);
                let g = jiff::SignedDuration::try_from(g).unwrap_or(jiff::SignedDuration::MAX);
                if marked.checked_add(g).is_ok_and(|due| due <= now) {
                    eligible.push(t);
                } else {
                    waiting += 1;
                }
            }
        }
    }
    let cap = deletion
        .and_then(|d| d.max_per_sweep)
        .map(|n| usize::try_from(n.max(0)).unwrap_or(usize::MAX))
        .unwrap_or(usize::MAX);
    // Referrers (signatures, SBOMs) are not counted against maxPerSweep: they go with their
    // subject, after it, and only when it goes in the same sweep (`Executor::delete_oci`).
    let (referrers, mut eligible): (Vec<Target>, Vec<Target>) =
        eligible.into_iter().partition(|t| t.is_referrer);
    let deferred = eligible.len().saturating_sub(cap);
    eligible.truncate(cap);
    eligible.extend(referrers);
    SweepPlan::Proceed {
        targets: eligible,
        deferred,
        waiting,
    }
}

/// How old the verdicts a delete acts on may be at most: older ones are worked out again first.
pub const RECHECK_MAX_AGE: Duration = Duration::from_secs(1);
/// How soon after the last re-check a change in a cache the policy reads is re-checked for:
/// bounds the evaluations a busy cluster costs a sweep to ten a second.
pub const RECHECK_MIN_INTERVAL: Duration = Duration::from_millis(100);
/// How long a sweep waits for a cache it reads to be current again before it leaves the rest of
/// its targets to the next sweep.
pub const PAUSE_LIMIT: Duration = Duration::from_secs(300);

/// The policy's verdicts as of one re-check: its candidates by uid, each with the
/// resourceVersion it was decided at and why, and whether the sweep is blocked outright.
#[derive(Debug, Default)]
pub struct Fresh {
    pub candidates: HashMap<String, (String, String)>,
    /// Set when candidates/governed now exceeds abortAbovePercent: nothing more is deleted.
    pub blocked: Option<String>,
    /// Set when the policy could not be evaluated again: nothing more is deleted.
    pub failed: Option<String>,
}

impl Fresh {
    /// The verdicts of a fresh evaluation (see `plan_sweep` for the block).
    pub fn of(eval: &Evaluation, deletion: Option<&Deletion>) -> Fresh {
        let blocked = match plan_sweep(eval, deletion, None, &mut HashMap::new(), Timestamp::MIN) {
            SweepPlan::Blocked { message } => Some(message),
            SweepPlan::Proceed { .. } => None,
        };
        let candidates = eval
            .candidates()
            .filter_map(|r| match &r.id {
                ObjectId::Kube {
                    uid,
                    resource_version,
                    ..
                } if !uid.is_empty() => Some((
                    uid.to_string(),
                    (resource_version.to_string(), r.reason.clone()),
                )),
                _ => None,
            })
            .collect();
        Fresh {
            candidates,
            blocked,
            failed: None,
        }
    }

    /// Verdicts that could not be worked out: every target is kept.
    pub fn failed(why: String) -> Fresh {
        Fresh {
            failed: Some(why),
            ..Fresh::default()
        }
    }

    /// What a re-check says of one target, by uid.
    pub fn verdict(&self, uid: &str) -> Rechecked {
        if let Some(why) = self.failed.as_ref().or(self.blocked.as_ref()) {
            return Rechecked::Keep(why.clone());
        }
        match self.candidates.get(uid) {
            Some((rv, why)) => Rechecked::Delete {
                resource_version: rv.clone(),
                why: why.clone(),
            },
            None => Rechecked::Keep(
                "no longer a candidate when its delete was due (re-checked against the current caches)"
                    .into(),
            ),
        }
    }
}

/// A target's verdict, worked out again right before its delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Rechecked {
    /// Still a candidate: delete it as of this resourceVersion.
    Delete {
        resource_version: String,
        why: String,
    },
    /// Kept now, and why.
    Keep(String),
    /// The sweep was stopped while waiting.
    Stopped,
}

type EvaluateNow = Box<dyn Fn() -> futures::future::BoxFuture<'static, Fresh> + Send + Sync>;
pub type Probe<T> = Box<dyn Fn() -> T + Send + Sync>;
/// What uses (repository, digest, tags) now, as a guard's reason.
pub type UserOf = Box<dyn Fn(&str, &str, &[String]) -> Option<String> + Send + Sync>;

/// Delete-time truth for a sweep of Jobs or Secrets: before each delete the policy's verdicts
/// are worked out again from the caches as they are then, at most `RECHECK_MAX_AGE` old and
/// again after any change in what the policy reads (at most every `RECHECK_MIN_INTERVAL`),
/// and only while every cache the policy reads is current: a cache whose watch failed or that
/// is listing again pauses the sweep until its list is in.
pub struct Recheck {
    evaluate: EvaluateNow,
    unhealthy: Probe<Option<String>>,
    versions: Probe<Vec<u64>>,
    pause_limit: Duration,
    last: Mutex<Option<Checked>>,
}

struct Checked {
    at: tokio::time::Instant,
    versions: Vec<u64>,
    fresh: Arc<Fresh>,
}

impl Recheck {
    pub fn new(
        evaluate: EvaluateNow,
        unhealthy: Probe<Option<String>>,
        versions: Probe<Vec<u64>>,
        pause_limit: Duration,
    ) -> Recheck {
        Recheck {
            evaluate,
            unhealthy,
            versions,
            pause_limit,
            last: Mutex::new(None),
        }
    }

    /// The verdict of the object `uid` as of now.
    pub async fn verdict(&self, uid: &str, cancel: &CancellationToken) -> Rechecked {
        let paused_at = tokio::time::Instant::now();
        let mut said = false;
        'recheck: loop {
            loop {
                if cancel.is_cancelled() {
                    return Rechecked::Stopped;
                }
                let Some(why) = (self.unhealthy)() else { break };
                if paused_at.elapsed() >= self.pause_limit {
                    return Rechecked::Keep(format!(
                        "not deleted: {why} for longer than {}s; left for the next sweep",
                        self.pause_limit.as_secs()
                    ));
                }
                if !said {
                    tracing::info!(reason = %why, "sweep paused until the caches it reads are current");
                    said = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    _ = cancel.cancelled() => return Rechecked::Stopped,
                }
            }
            if said {
                tracing::info!("sweep resumed");
            }
            let fresh = {
                let mut last = self.last.lock().await;
                let versions = (self.versions)();
                let stale = match last.as_ref() {
                    None => true,
                    Some(c) => {
                        let age = c.at.elapsed();
                        age >= RECHECK_MAX_AGE
                            || (c.versions != versions && age >= RECHECK_MIN_INTERVAL)
                    }
                };
                if stale {
                    // Taken before evaluating: a change during the evaluation is re-checked for.
                    let at = tokio::time::Instant::now();
                    let fresh = Arc::new((self.evaluate)().await);
                    *last = Some(Checked {
                        at,
                        versions,
                        fresh,
                    });
                }
                match last.as_ref() {
                    Some(c) => c.fresh.clone(),
                    None => return Rechecked::Keep("not re-checked".into()),
                }
            };
            // A cache that failed while the verdicts were worked out may have missed a change:
            // wait for it again, and work them out anew.
            if (self.unhealthy)().is_some() {
                *self.last.lock().await = None;
                continue 'recheck;
            }
            return fresh.verdict(uid);
        }
    }
}

/// What happened to one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Deleted,
    /// Gone before its delete: counted as skipped, and as gone where order matters.
    AlreadyGone,
    Skipped(String),
    Failed(String),
    /// The sweep was stopped (shutdown, lost lease, an edit) before this target's turn.
    NotAttempted,
}

impl Outcome {
    /// Whether the object no longer exists after this outcome.
    pub fn gone(&self) -> bool {
        matches!(self, Outcome::Deleted | Outcome::AlreadyGone)
    }
}

/// A client-side rate limit: at most `qps` requests a second across all workers.
pub struct RateLimiter {
    interval: Duration,
    next: Mutex<tokio::time::Instant>,
}

impl RateLimiter {
    pub fn new(qps: f64) -> RateLimiter {
        let interval = if qps > 0.0 {
            Duration::from_secs_f64(1.0 / qps)
        } else {
            Duration::ZERO
        };
        RateLimiter {
            interval,
            next: Mutex::new(tokio::time::Instant::now()),
        }
    }

    pub async fn wait(&self) {
        if self.interval.is_zero() {
            return;
        }
        let at = {
            let mut next = self.next.lock().await;
            let now = tokio::time::Instant::now();
            let at = (*next).max(now);
            *next = at + self.interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Deletes for every policy. One rate limiter (`--delete-qps`) and one concurrency bound
/// (`--delete-concurrency` per sweep) serve all sweeps: sweeps running at the same time take
/// turns from the limiter's single queue in the order they ask, so together they never exceed
/// the limit, and a sweep that starts while another runs gets its first slot within one
/// interval of asking, not after the other finishes.
pub struct Executor {
    pub client: Client,
    pub concurrency: usize,
    pub limiter: Arc<RateLimiter>,
    pub leadership: Arc<Leadership>,
}

impl Executor {
    /// Waits for the next request slot; false when the sweep was stopped meanwhile.
    async fn pace(&self, cancel: &CancellationToken) -> bool {
        if cancel.is_cancelled() {
            return false;
        }
        tokio::select! {
            _ = self.limiter.wait() => !cancel.is_cancelled(),
            _ = cancel.cancelled() => false,
        }
    }

    /// Deletes the targets: a fresh read of each, the guards again, then a delete with
    /// preconditions. One failure does not stop the others.
    pub async fn delete_all(
        &self,
        kind: TargetKind,
        targets: Vec<Target>,
        propagation: Option<Propagation>,
        policy_key: &str,
        recheck: Option<&Recheck>,
        cancel: &CancellationToken,
    ) -> Vec<(Target, Outcome)> {
        let k = match kind {
            TargetKind::Secret => Kind::secrets(),
            _ => Kind::jobs(),
        };
        let resource = k.resource();
        let propagation = match propagation.unwrap_or_default() {
            Propagation::Background => PropagationPolicy::Background,
            Propagation::Foreground => PropagationPolicy::Foreground,
            Propagation::Orphan => PropagationPolicy::Orphan,
        };
        futures::stream::iter(targets)
            .map(|mut t| {
                let propagation = propagation.clone();
                let client = self.client.clone();
                let resource = resource.clone();
                async move {
                    let TargetId::Kube {
                        namespace,
                        name,
                        uid,
                        resource_version,
                    } = t.id.clone()
                    else {
                        return (t, Outcome::Skipped("not a Kubernetes object".into()));
                    };
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client, &namespace, &resource);
                    if !self.pace(cancel).await {
                        return (t, Outcome::NotAttempted);
                    }
                    // The verdict as of now, not as of the sweep's start (see `Recheck`).
                    let resource_version = match recheck {
                        None => resource_version,
                        Some(r) => match r.verdict(&uid, cancel).await {
                            Rechecked::Delete {
                                resource_version,
                                why,
                            } => {
                                t.why = why;
                                resource_version
                            }
                            Rechecked::Keep(why) => {
                                let o = Outcome::Skipped(why);
                                audit(policy_key, kind, &t, &o);
                                return (t, o);
                            }
                            Rechecked::Stopped => return (t, Outcome::NotAttempted),
                        },
                    };
                    let outcome = delete_one(
                        &api,
                        &name,
                        &uid,
                        &resource_version,
                        propagation,
                        &self.leadership,
                    )
                    .await;
                    audit(policy_key, kind, &t, &outcome);
                    (t, outcome)
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await
    }

    /// Deletes OCI artifacts by digest, each right after checking afresh that the registry and
    /// the cluster still look the way the evaluation (`evaluated`, the inventory's documents)
    /// saw them: the repository's tags are listed and every tag resolved again whenever that
    /// check is older than `RECHECK_MAX_AGE`, the artifact's referrers are listed again, and
    /// the cluster's references to it are looked up in the current caches (`in_use`), which
    /// must be current. A repository whose tags changed in any way but by this sweep's own
    /// deletes is left alone for the rest of the sweep (its cached reads forgotten, so the next
    /// inventory reads it all again); an artifact that gained a referrer or a user is left.
    /// When `groups_span_repositories` (a custom groupBy, so one repository's tags can change
    /// another's ranks), every repository is checked and any change stops the whole sweep.
    ///
    /// Order: subjects first; manifests that a deleted index listed once that index is gone;
    /// referrers (signatures, SBOMs) last, only once their subject's delete succeeded, so that
    /// a subject that stays never loses its signature.
    #[allow(clippy::too_many_arguments)]
    pub async fn delete_oci(
        &self,
        registry: &RegistryClient,
        cache: &ManifestCache,
        evaluated: &[Json],
        targets: Vec<Target>,
        groups_span_repositories: bool,
        in_use: &InUse,
        policy_key: &str,
        cancel: &CancellationToken,
    ) -> Vec<(Target, Outcome)> {
        let views = views_of(evaluated);
        let mut by_repo: BTreeMap<String, Vec<Target>> = BTreeMap::new();
        let mut out = Vec::new();
        for t in targets {
            match &t.id {
                TargetId::Oci { repository, .. } => {
                    by_repo.entry(repository.clone()).or_default().push(t)
                }
                TargetId::Kube { .. } => {
                    out.push((t, Outcome::Skipped("not an OCI artifact".into())));
                }
            }
        }
        let units: Vec<(Vec<String>, Vec<Target>)> = if groups_span_repositories {
            let mut repos: BTreeSet<String> = views.keys().cloned().collect();
            repos.extend(by_repo.keys().cloned());
            let all = by_repo.into_values().flatten().collect::<Vec<_>>();
            if all.is_empty() {
                Vec::new()
            } else {
                vec![(repos.into_iter().collect(), all)]
            }
        } else {
            by_repo
                .into_iter()
                .map(|(repo, ts)| (vec![repo], ts))
                .collect()
        };
        for (repos, targets) in units {
            let mut sweep = RepoSweep {
                executor: self,
                registry,
                cache,
                views: &views,
                in_use,
                cancel,
                expected: repos
                    .iter()
                    .map(|r| {
                        let tags = views.get(r).map(|v| v.tags.clone()).unwrap_or_default();
                        (r.clone(), tags)
                    })
                    .collect(),
                checked_at: None,
                stopped: None,
            };
            let done = sweep.run(targets).await;
            for (t, o) in &done {
                audit(policy_key, TargetKind::OciArtifact, t, o);
            }
            out.extend(done);
        }
        out
    }

    /// Resolves every tag of `repo` now. Reads are not paced by `--delete-qps`: the check
    /// must be quick for the window between it and the deletes it permits to stay short.
    async fn fresh_tags(
        &self,
        registry: &RegistryClient,
        repo: &str,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        let tags = registry.tags(repo).await?;
        let resolved: Vec<(String, Option<String>)> = futures::stream::iter(tags)
            .map(|t| async move { registry.resolve(repo, &t).await.map(|d| (t, d)) })
            .buffer_unordered(self.concurrency.max(READ_CONCURRENCY))
            .try_collect()
            .await?;
        Ok(resolved
            .into_iter()
            .filter_map(|(t, d)| d.map(|d| (t, d)))
            .collect())
    }
}

/// How many registry reads a delete-time check sends at once, at least.
const READ_CONCURRENCY: usize = 8;

/// What an OCI sweep asks the cluster right before each delete: whether a Pod or workload uses
/// the artifact now, from caches that must be current.
pub struct InUse {
    /// Why a cache of Pods or workloads is not current, if one is not.
    pub unhealthy: Probe<Option<String>>,
    /// What uses (repository, digest, tags) now, as a guard's reason.
    pub user: UserOf,
    pub pause_limit: Duration,
}

impl InUse {
    /// Nothing uses anything: for tests of request sequences.
    pub fn nobody() -> InUse {
        InUse {
            unhealthy: Box::new(|| None),
            user: Box::new(|_, _, _| None),
            pause_limit: PAUSE_LIMIT,
        }
    }

    /// Waits until the caches are current; Err with the outcome when the sweep must not go on.
    async fn wait_current(&self, cancel: &CancellationToken) -> Result<(), Outcome> {
        let started = tokio::time::Instant::now();
        while let Some(why) = (self.unhealthy)() {
            if started.elapsed() >= self.pause_limit {
                return Err(Outcome::Skipped(format!(
                    "not deleted: {why} for longer than {}s; left for the next sweep",
                    self.pause_limit.as_secs()
                )));
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                _ = cancel.cancelled() => return Err(Outcome::NotAttempted),
            }
        }
        Ok(())
    }
}

/// One unit of an OCI sweep (a repository, or every repository when groups span them), and
/// what it has learnt so far.
struct RepoSweep<'a> {
    executor: &'a Executor,
    registry: &'a RegistryClient,
    cache: &'a ManifestCache,
    views: &'a BTreeMap<String, RepoView>,
    in_use: &'a InUse,
    cancel: &'a CancellationToken,
    /// tag → digest per repository, as the evaluation saw it less this sweep's own deletes.
    expected: BTreeMap<String, BTreeMap<String, String>>,
    /// When the last tag check that found nothing changed started.
    checked_at: Option<tokio::time::Instant>,
    /// Why nothing more is deleted in this unit.
    stopped: Option<Outcome>,
}

impl RepoSweep<'_> {
    fn view(&self, repo: &str) -> &RepoView {
        static EMPTY: std::sync::OnceLock<RepoView> = std::sync::OnceLock::new();
        self.views
            .get(repo)
            .unwrap_or_else(|| EMPTY.get_or_init(RepoView::default))
    }

    async fn run(&mut self, targets: Vec<Target>) -> Vec<(Target, Outcome)> {
        let key = |t: &Target| match &t.id {
            TargetId::Oci {
                repository, digest, ..
            } => (repository.clone(), digest.clone()),
            TargetId::Kube { .. } => (String::new(), String::new()),
        };
        let target_keys: BTreeSet<DigestKey> = targets.iter().map(key).collect();
        let by_index = |view: &RepoView, repo: &str, digest: &str| -> Vec<String> {
            view.listed_by(digest)
                .into_iter()
                .filter(|i| target_keys.contains(&(repo.to_string(), i.clone())))
                .collect()
        };
        let mut first = Vec::new();
        let mut children = Vec::new();
        let mut referrers = Vec::new();
        for t in &targets {
            let (repo, digest) = key(t);
            if t.is_referrer {
                referrers.push((repo, digest));
            } else if by_index(self.view(&repo), &repo, &digest).is_empty() {
                first.push((repo, digest));
            } else {
                children.push((repo, digest));
            }
        }
        let mut decided: BTreeMap<DigestKey, Outcome> = BTreeMap::new();
        let gone =
            |d: &BTreeMap<DigestKey, Outcome>, k: &DigestKey| d.get(k).is_some_and(Outcome::gone);
        // A subject goes only with every artifact that refers to it: one that stays (kept by a
        // guard, left by maxPerSweep) would be left without its subject.
        let staying = |view: &RepoView, repo: &str, digest: &str| -> Option<Outcome> {
            let left: Vec<String> = view
                .subject_of
                .keys()
                .filter(|r| view.root_subject(r).as_deref() == Some(digest))
                .filter(|r| !target_keys.contains(&(repo.to_string(), (*r).clone())))
                .cloned()
                .collect();
            (!left.is_empty()).then(|| {
                Outcome::Skipped(format!(
                    "{} refer to it and stay; kept with them",
                    left.join(", ")
                ))
            })
        };
        for k in first {
            let o = match staying(self.view(&k.0), &k.0, &k.1) {
                Some(o) => o,
                None => self.delete_checked(&k).await,
            };
            decided.insert(k, o);
        }
        for k in children {
            let holding: Vec<String> = by_index(self.view(&k.0), &k.0, &k.1)
                .into_iter()
                .filter(|i| !gone(&decided, &(k.0.clone(), i.clone())))
                .collect();
            let left = staying(self.view(&k.0), &k.0, &k.1);
            let o = if let Some(o) = left {
                o
            } else if holding.is_empty() {
                self.delete_checked(&k).await
            } else {
                Outcome::Skipped(format!(
                    "listed by index {}, which this sweep did not delete",
                    holding.join(", ")
                ))
            };
            decided.insert(k, o);
        }
        for k in referrers {
            let root = self.view(&k.0).root_subject(&k.1);
            let o = match root {
                None => Outcome::Skipped("refers to nothing this sweep knows of".into()),
                Some(r) if !target_keys.contains(&(k.0.clone(), r.clone())) => Outcome::Skipped(
                    format!("goes with its subject {r}, which this sweep does not delete"),
                ),
                Some(r) if !gone(&decided, &(k.0.clone(), r.clone())) => Outcome::Skipped(format!(
                    "goes with its subject {r}, which was not deleted; kept with it"
                )),
                Some(_) => self.delete_checked(&k).await,
            };
            decided.insert(k, o);
        }

        let mut deleted: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for ((repo, digest), o) in &decided {
            if *o == Outcome::Deleted {
                deleted
                    .entry(repo.clone())
                    .or_default()
                    .insert(digest.clone());
            }
        }
        for (repo, digests) in &deleted {
            self.cache
                .forget_digests(self.registry.base(), repo, digests);
        }
        targets
            .into_iter()
            .map(|t| {
                let o = decided
                    .remove(&key(&t))
                    .unwrap_or_else(|| Outcome::Skipped("not reached".into()));
                (t, o)
            })
            .collect()
    }

    /// Lists every repository's tags again and compares them with what is expected.
    async fn tags_unchanged(&mut self) -> Result<(), Outcome> {
        let started = tokio::time::Instant::now();
        let base = self.registry.base();
        let mut changes = Vec::new();
        for (repo, expected) in &self.expected {
            match self.executor.fresh_tags(self.registry, repo).await {
                Ok(fresh) => {
                    let c = tag_changes(expected, &fresh);
                    if c.is_empty() {
                        self.cache.remember_tags(base, repo, &fresh);
                    } else {
                        self.cache.forget(base, repo);
                        let more = c.len().saturating_sub(3);
                        let mut m = format!("{repo}: {}", c[..c.len().min(3)].join(", "));
                        if more > 0 {
                            m.push_str(&format!(" and {more} more"));
                        }
                        changes.push(m);
                    }
                }
                Err(e) => {
                    return Err(Outcome::Failed(format!(
                        "checking the registry before deleting: {e}"
                    )));
                }
            }
        }
        if changes.is_empty() {
            self.checked_at = Some(started);
            Ok(())
        } else {
            Err(Outcome::Skipped(format!(
                "the registry changed since the evaluation ({}); kept until the next sweep",
                changes.join("; ")
            )))
        }
    }

    /// One artifact: its slot, the checks, then its DELETE.
    async fn delete_checked(&mut self, (repo, digest): &DigestKey) -> Outcome {
        if let Some(o) = &self.stopped {
            return o.clone();
        }
        if !self.executor.pace(self.cancel).await {
            return Outcome::NotAttempted;
        }
        // Referrers now: one it did not have when evaluated holds it back.
        let known = self.view(repo).referrers_of(digest);
        match self.registry.referrers(repo, digest).await {
            Ok(refs) => {
                let unknown: Vec<&str> = refs
                    .iter()
                    .filter(|r| !known.contains(*r))
                    .map(String::as_str)
                    .collect();
                if !unknown.is_empty() {
                    self.cache.forget(self.registry.base(), repo);
                    return Outcome::Skipped(format!(
                        "referred to by {} since the evaluation; kept until the next sweep",
                        unknown.join(", ")
                    ));
                }
            }
            Err(e) => {
                return Outcome::Failed(format!("checking its referrers before deleting: {e}"));
            }
        }
        // Tags now, at most RECHECK_MAX_AGE before the DELETE.
        if self
            .checked_at
            .is_none_or(|at| at.elapsed() >= RECHECK_MAX_AGE)
            && let Err(o) = self.tags_unchanged().await
        {
            self.stopped = Some(o.clone());
            return o;
        }
        // Users now, from caches that are current.
        if let Err(o) = self.in_use.wait_current(self.cancel).await {
            return o;
        }
        let tags: Vec<String> = self
            .expected
            .get(repo)
            .map(|m| {
                m.iter()
                    .filter(|(_, d)| *d == digest)
                    .map(|(t, _)| t.clone())
                    .collect()
            })
            .unwrap_or_default();
        if let Some(why) = (self.in_use.user)(repo, digest, &tags) {
            return Outcome::Skipped(format!("{why}, found right before its delete"));
        }
        if !self.executor.leadership.still_leading() {
            return Outcome::Failed(NOT_LEADING.into());
        }
        if self
            .checked_at
            .is_none_or(|at| at.elapsed() >= RECHECK_MAX_AGE)
        {
            // The checks above took long: look at the tags once more.
            if let Err(o) = self.tags_unchanged().await {
                self.stopped = Some(o.clone());
                return o;
            }
        }
        let o = match self.registry.delete(repo, digest).await {
            Ok(Deleted::Now) => Outcome::Deleted,
            Ok(Deleted::AlreadyGone) => Outcome::AlreadyGone,
            Err(e) => Outcome::Failed(e.to_string()),
        };
        if o.gone()
            && let Some(m) = self.expected.get_mut(repo)
        {
            // Deleting a manifest takes its tags with it: not a change to stop for.
            m.retain(|_, d| d != digest);
        }
        o
    }
}

/// The artifacts a sweep deleted, as (repository, digest): what it freed is computed from them.
pub fn deleted_artifacts(outcomes: &[(Target, Outcome)]) -> BTreeSet<(String, String)> {
    outcomes
        .iter()
        .filter(|(_, o)| *o == Outcome::Deleted)
        .filter_map(|(t, _)| match &t.id {
            TargetId::Oci {
                repository, digest, ..
            } => Some((repository.clone(), digest.clone())),
            TargetId::Kube { .. } => None,
        })
        .collect()
}

/// An artifact: (repository, digest).
type DigestKey = (String, String);

/// Why a sweep stops deleting when its replica's lease may have run out (see
/// `Leadership::still_leading`); the next leader's sweep deletes what is left.
const NOT_LEADING: &str = "not deleted: this replica's leader lease ran out";

fn audit(policy_key: &str, kind: TargetKind, t: &Target, outcome: &Outcome) {
    let (namespace, name, uid) = match &t.id {
        TargetId::Kube {
            namespace,
            name,
            uid,
            ..
        } => (namespace.clone(), name.clone(), uid.clone()),
        TargetId::Oci {
            repository, digest, ..
        } => (
            String::new(),
            format!("{repository}@{digest}"),
            digest.clone(),
        ),
    };
    match outcome {
        Outcome::Deleted => tracing::info!(
            target: "retainer::audit",
            policy = policy_key, kind = kind.as_str(), namespace = %namespace,
            name = %name, uid = %uid, why = %t.why, "deleted"
        ),
        Outcome::AlreadyGone => tracing::info!(
            policy = policy_key, kind = kind.as_str(), namespace = %namespace,
            name = %name, reason = "already gone", "skipped"
        ),
        Outcome::Skipped(reason) => tracing::info!(
            policy = policy_key, kind = kind.as_str(), namespace = %namespace,
            name = %name, reason = %reason, "skipped"
        ),
        // Neither deleted nor looked at: the next sweep decides afresh.
        Outcome::NotAttempted => {}
        Outcome::Failed(error) => tracing::warn!(
            policy = policy_key, kind = kind.as_str(), namespace = %namespace,
            name = %name, error = %error, "delete failed"
        ),
    }
}

async fn delete_one(
    api: &Api<DynamicObject>,
    name: &str,
    uid: &str,
    resource_version: &str,
    propagation: PropagationPolicy,
    leadership: &Leadership,
) -> Outcome {
    // No read first: the uid and resourceVersion preconditions make the API server refuse the
    // delete (409) unless the object is exactly the one evaluated, guards included. The check
    // and the delete are then one atomic step, where a read before it would leave a gap and
    // double the requests a sweep sends. The caller waited for the rate limiter; the lease may
    // have run out meanwhile.
    if !leadership.still_leading() {
        return Outcome::Failed(NOT_LEADING.into());
    }
    let dp = DeleteParams {
        propagation_policy: Some(propagation),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: Some(resource_version.to_string()),
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => Outcome::Deleted,
        Err(kube::Error::Api(s)) if s.code == 404 => Outcome::AlreadyGone,
        // The preconditions failed: the object changed since it was evaluated, or was replaced
        // by a new one of the same name.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            Outcome::Skipped("changed since it was evaluated".into())
        }
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Counts, Verdict};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn eval(governed: i64, candidates: usize) -> Evaluation {
        let results = (0..candidates)
            .map(|i| ObjectResult {
                kind: "Job",
                id: ObjectId::Kube {
                    namespace: "ns".into(),
                    name: format!("j{i}").into(),
                    uid: format!("u{i}").into(),
                    resource_version: "1".into(),
                },
                verdict: Verdict::Delete,
                reason: "no term of keep held".into(),
                basis: Basis::NoTermHeld,
                // j0 is the newest.
                created: Some(
                    ts("2026-01-10T00:00:00Z") - jiff::SignedDuration::from_hours(i as i64),
                ),
                referrers: vec![],
            })
            .map(std::sync::Arc::new)
            .collect();
        Evaluation {
            summary: Counts {
                governed,
                kept: governed - candidates as i64,
                candidates: candidates as i64,
                errors: 0,
                ..Default::default()
            },
            results,
        }
    }

    fn names(plan: &SweepPlan) -> Vec<String> {
        match plan {
            SweepPlan::Proceed { targets, .. } => targets
                .iter()
                .map(|t| match &t.id {
                    TargetId::Kube { name, .. } => name.clone(),
                    TargetId::Oci { digest, .. } => digest.clone(),
                })
                .collect(),
            SweepPlan::Blocked { .. } => vec!["blocked".into()],
        }
    }

    #[test]
    fn caps_block_and_grace() {
        let now = ts("2026-01-10T12:00:00Z");
        let mut marks = HashMap::new();
        let cap = Deletion {
            max_per_sweep: Some(2),
            ..Default::default()
        };
        let p = plan_sweep(&eval(10, 4), Some(&cap), None, &mut marks, now);
        assert_eq!(names(&p), vec!["j3", "j2"], "oldest first");
        assert!(matches!(p, SweepPlan::Proceed { deferred: 2, .. }));

        let block = Deletion {
            abort_above_percent: Some(50),
            ..Default::default()
        };
        let at_limit = plan_sweep(&eval(10, 5), Some(&block), None, &mut marks, now);
        assert!(
            matches!(at_limit, SweepPlan::Proceed { .. }),
            "50% is not above 50%"
        );
        let p = plan_sweep(&eval(10, 6), Some(&block), None, &mut marks, now);
        let SweepPlan::Blocked { message } = p else {
            panic!("not blocked")
        };
        assert!(
            message.contains("6 of 10 governed objects (60%)"),
            "{message}"
        );

        let grace = Some(Duration::from_secs(3600));
        let p = plan_sweep(&eval(10, 2), None, grace, &mut marks, now);
        assert!(
            matches!(p, SweepPlan::Proceed { ref targets, waiting: 2, .. } if targets.is_empty())
        );
        // An hour later, still candidates: deleted. j1 stopped being one meanwhile and its mark
        // is forgotten, so it would start over.
        let later = now + jiff::SignedDuration::from_hours(1);
        assert_eq!(
            names(&plan_sweep(&eval(10, 2), None, grace, &mut marks, later)),
            vec!["j1", "j0"]
        );
        plan_sweep(&eval(10, 1), None, grace, &mut marks, later);
        assert!(!marks.contains_key("u1"));
    }

    /// A Recheck over fake caches: `health` and `version` are read on every call, and each
    /// evaluation is counted and says uid "u1" is a candidate at resourceVersion "rv<n>" while
    /// `candidate` holds.
    struct Fake {
        unhealthy_until: std::sync::Mutex<tokio::time::Instant>,
        version: std::sync::atomic::AtomicU64,
        evaluations: std::sync::atomic::AtomicU64,
        candidate: std::sync::atomic::AtomicBool,
    }

    fn fake(unhealthy_for: Duration, pause_limit: Duration) -> (Arc<Fake>, Recheck) {
        use std::sync::atomic::Ordering::SeqCst;
        let f = Arc::new(Fake {
            unhealthy_until: std::sync::Mutex::new(tokio::time::Instant::now() + unhealthy_for),
            version: 0.into(),
            evaluations: 0.into(),
            candidate: true.into(),
        });
        let (a, b, c) = (f.clone(), f.clone(), f.clone());
        let r = Recheck::new(
            Box::new(move || {
                let f = a.clone();
                Box::pin(async move {
                    let n = f.evaluations.fetch_add(1, SeqCst) + 1;
                    let mut fresh = Fresh::default();
                    if f.candidate.load(SeqCst) {
                        fresh.candidates.insert(
                            "u1".into(),
                            (format!("rv{n}"), "no term of keep held".into()),
                        );
                    }
                    fresh
                })
            }),
            Box::new(move || {
                (tokio::time::Instant::now() < *b.unhealthy_until.lock().unwrap())
                    .then(|| "the watch of pods failed".to_string())
            }),
            Box::new(move || vec![c.version.load(SeqCst)]),
            pause_limit,
        );
        (f, r)
    }

    #[tokio::test]
    async fn rechecks_are_fresh_paused_while_a_cache_is_not_current_and_bounded() {
        use std::sync::atomic::Ordering::SeqCst;
        let cancel = CancellationToken::new();
        let delete = |rv: &str| Rechecked::Delete {
            resource_version: rv.into(),
            why: "no term of keep held".into(),
        };

        // Paused while a cache is not current, then worked out once.
        let (f, r) = fake(Duration::from_millis(300), Duration::from_secs(10));
        let started = tokio::time::Instant::now();
        assert_eq!(r.verdict("u1", &cancel).await, delete("rv1"));
        assert!(started.elapsed() >= Duration::from_millis(300));
        // Nothing changed, and it is fresh: not worked out again.
        assert_eq!(r.verdict("u1", &cancel).await, delete("rv1"));
        assert_eq!(f.evaluations.load(SeqCst), 1);
        // A change in a cache it reads, once RECHECK_MIN_INTERVAL passed: worked out again,
        // and what is no longer a candidate is kept.
        f.version.fetch_add(1, SeqCst);
        f.candidate.store(false, SeqCst);
        tokio::time::sleep(RECHECK_MIN_INTERVAL).await;
        let Rechecked::Keep(why) = r.verdict("u1", &cancel).await else {
            panic!("a re-check after a change keeps what is no longer a candidate")
        };
        assert!(why.contains("no longer a candidate"), "{why}");
        assert_eq!(f.evaluations.load(SeqCst), 2);
        // Without a change, at most RECHECK_MAX_AGE old.
        f.candidate.store(true, SeqCst);
        tokio::time::sleep(RECHECK_MAX_AGE).await;
        assert_eq!(r.verdict("u1", &cancel).await, delete("rv3"));
        assert_eq!(r.verdict("u2", &cancel).await, Rechecked::Keep(
            "no longer a candidate when its delete was due (re-checked against the current caches)".into()
        ));

        // A cache that stays broken past the pause limit: kept, and said why.
        let (f, r) = fake(Duration::from_secs(60), Duration::from_millis(200));
        let Rechecked::Keep(why) = r.verdict("u1", &cancel).await else {
            panic!("kept when the caches stay broken")
        };
        assert!(
            why.contains("the watch of pods failed for longer than"),
            "{why}"
        );
        assert_eq!(
            f.evaluations.load(SeqCst),
            0,
            "nothing evaluated from a broken cache"
        );

        // Stopped while paused.
        let (_, r) = fake(Duration::from_secs(60), Duration::from_secs(60));
        let stop = CancellationToken::new();
        let s = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(150)).await;
            s.cancel();
        });
        assert_eq!(r.verdict("u1", &stop).await, Rechecked::Stopped);
    }

    #[test]
    fn fresh_verdicts_block_and_fail_as_a_whole() {
        let block = Deletion {
            abort_above_percent: Some(50),
            ..Default::default()
        };
        let f = Fresh::of(&eval(10, 6), Some(&block));
        assert!(matches!(f.verdict("u0"), Rechecked::Keep(m) if m.contains("abortAbovePercent")));
        let f = Fresh::of(&eval(10, 2), Some(&block));
        assert_eq!(
            f.verdict("u1"),
            Rechecked::Delete {
                resource_version: "1".into(),
                why: "no term of keep held".into()
            }
        );
        let f = Fresh::failed("re-checking the verdicts before deleting: over budget".into());
        assert!(matches!(f.verdict("u1"), Rechecked::Keep(m) if m.contains("over budget")));
    }

    #[test]
    fn referrers_are_not_counted_against_max_per_sweep() {
        let mut e = eval(10, 3);
        std::sync::Arc::make_mut(&mut e.results[0]).basis = Basis::FollowsSubject;
        let cap = Deletion {
            max_per_sweep: Some(1),
            ..Default::default()
        };
        let p = plan_sweep(
            &e,
            Some(&cap),
            None,
            &mut HashMap::new(),
            ts("2026-01-10T12:00:00Z"),
        );
        assert_eq!(
            names(&p),
            vec!["j2", "j0"],
            "the oldest subject, and the referrer"
        );
        assert!(matches!(p, SweepPlan::Proceed { deferred: 1, .. }));
    }
}
