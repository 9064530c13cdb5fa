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
            namespace: namespace.clone(),
            name: name.clone(),
            uid: uid.clone(),
            resource_version: resource_version.clone(),
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
    let deferred = eligible.len().saturating_sub(cap);
    eligible.truncate(cap);
    // Referrers before their subjects: a registry may refuse or orphan them otherwise.
    eligible.sort_by_key(|t| !t.is_referrer);
    SweepPlan::Proceed {
        targets: eligible,
        deferred,
        waiting,
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
            .map(|t| {
                let propagation = propagation.clone();
                let client = self.client.clone();
                let resource = resource.clone();
                async move {
                    let TargetId::Kube {
                        namespace,
                        name,
                        uid,
                        resource_version,
                    } = &t.id
                    else {
                        return (
                            t.clone(),
                            Outcome::Skipped("not a Kubernetes object".into()),
                        );
                    };
                    let api: Api<DynamicObject> =
                        Api::namespaced_with(client, namespace, &resource);
                    let outcome = if self.pace(cancel).await {
                        delete_one(
                            &api,
                            name,
                            uid,
                            resource_version,
                            propagation,
                            &self.leadership,
                        )
                        .await
                    } else {
                        Outcome::NotAttempted
                    };
                    audit(policy_key, kind, &t, &outcome);
                    (t, outcome)
                }
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await
    }

    /// Deletes OCI artifacts by digest, after checking afresh, right before, that the
    /// registry still looks the way the evaluation (`evaluated`, the inventory's documents)
    /// saw it: the repository's tags are listed and every tag is resolved again, and each
    /// artifact's referrers are listed again. A repository whose tags changed in any way, or
    /// an artifact that gained a referrer, is left alone this sweep (its cached reads
    /// forgotten, so the next inventory reads it all again). When `groups_span_repositories`
    /// (a custom groupBy, so one repository's tags can change another's ranks), every
    /// repository is checked and any change holds back the whole sweep.
    ///
    /// Order: referrers (signatures, SBOMs) first, and only with their subject in the same
    /// sweep; then their subjects, only once every artifact that refers to them is gone; then
    /// manifests that a deleted index listed, only once that index is gone.
    #[allow(clippy::too_many_arguments)]
    pub async fn delete_oci(
        &self,
        registry: &RegistryClient,
        cache: &ManifestCache,
        evaluated: &[Json],
        targets: Vec<Target>,
        groups_span_repositories: bool,
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
            let done = self
                .sweep_repositories(registry, cache, &views, &repos, targets, cancel)
                .await;
            for (t, o) in &done {
                audit(policy_key, TargetKind::OciArtifact, t, o);
            }
            out.extend(done);
        }
        out
    }

    /// Resolves every tag of `repo` now.
    async fn fresh_tags(
        &self,
        registry: &RegistryClient,
        repo: &str,
    ) -> Result<BTreeMap<String, String>, RegistryError> {
        self.limiter.wait().await;
        let tags = registry.tags(repo).await?;
        let resolved: Vec<(String, Option<String>)> = futures::stream::iter(tags)
            .map(|t| async move {
                self.limiter.wait().await;
                registry.resolve(repo, &t).await.map(|d| (t, d))
            })
            .buffer_unordered(self.concurrency.max(1))
            .try_collect()
            .await?;
        Ok(resolved
            .into_iter()
            .filter_map(|(t, d)| d.map(|d| (t, d)))
            .collect())
    }

    /// Checks `repos` afresh, then deletes what still may be deleted of `targets`.
    async fn sweep_repositories(
        &self,
        registry: &RegistryClient,
        cache: &ManifestCache,
        views: &BTreeMap<String, RepoView>,
        repos: &[String],
        targets: Vec<Target>,
        cancel: &CancellationToken,
    ) -> Vec<(Target, Outcome)> {
        let base = registry.base();
        let empty = RepoView::default();
        let view_of = |repo: &str| views.get(repo).unwrap_or(&empty);
        let mut changes = Vec::new();
        for repo in repos {
            match self.fresh_tags(registry, repo).await {
                Ok(fresh) => {
                    let c = tag_changes(&view_of(repo).tags, &fresh);
                    if c.is_empty() {
                        cache.remember_tags(base, repo, &fresh);
                    } else {
                        cache.forget(base, repo);
                        let more = c.len().saturating_sub(3);
                        let mut m = format!("{repo}: {}", c[..c.len().min(3)].join(", "));
                        if more > 0 {
                            m.push_str(&format!(" and {more} more"));
                        }
                        changes.push(m);
                    }
                }
                Err(e) => {
                    let why = format!("checking the registry before deleting: {e}");
                    return targets
                        .into_iter()
                        .map(|t| (t, Outcome::Failed(why.clone())))
                        .collect();
                }
            }
        }
        if !changes.is_empty() {
            let why = format!(
                "the registry changed since the evaluation ({}); kept until the next sweep",
                changes.join("; ")
            );
            return targets
                .into_iter()
                .map(|t| (t, Outcome::Skipped(why.clone())))
                .collect();
        }

        let key = |t: &Target| match &t.id {
            TargetId::Oci {
                repository, digest, ..
            } => (repository.clone(), digest.clone()),
            TargetId::Kube { .. } => (String::new(), String::new()),
        };
        let target_keys: BTreeSet<(String, String)> = targets.iter().map(key).collect();
        let mut decided: BTreeMap<(String, String), Outcome> = BTreeMap::new();

        // Referrers of each artifact that is not one itself: anything unknown holds it back.
        let subjects: Vec<(String, String)> =
            targets.iter().filter(|t| !t.is_referrer).map(key).collect();
        let listed: Vec<(DigestKey, Result<Vec<String>, RegistryError>)> =
            futures::stream::iter(subjects)
                .map(|(repo, digest)| async move {
                    self.limiter.wait().await;
                    let r = registry.referrers(&repo, &digest).await;
                    ((repo, digest), r)
                })
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
        for ((repo, digest), r) in listed {
            match r {
                Ok(refs) => {
                    let known = view_of(&repo).referrers_of(&digest);
                    let unknown: Vec<&String> =
                        refs.iter().filter(|r| !known.contains(*r)).collect();
                    if unknown.is_empty() {
                        cache.remember_referrers(base, &repo, &digest, refs.clone());
                    } else {
                        cache.forget(base, &repo);
                        let names: Vec<&str> = unknown.iter().map(|s| s.as_str()).collect();
                        decided.insert(
                            (repo, digest),
                            Outcome::Skipped(format!(
                                "referred to by {} since the evaluation; kept until the next sweep",
                                names.join(", ")
                            )),
                        );
                    }
                }
                Err(e) => {
                    decided.insert(
                        (repo, digest),
                        Outcome::Failed(format!("checking its referrers before deleting: {e}")),
                    );
                }
            }
        }

        // Referrers go only with their subject, and only once it passed its checks.
        let mut first = Vec::new();
        for t in targets.iter().filter(|t| t.is_referrer) {
            let (repo, digest) = key(t);
            let root = view_of(&repo).root_subject(&digest);
            let blocked = match &root {
                None => Some("refers to nothing this sweep knows of".to_string()),
                Some(r) if !target_keys.contains(&(repo.clone(), r.clone())) => Some(format!(
                    "goes with its subject {r}, which this sweep does not delete"
                )),
                Some(r) => decided.get(&(repo.clone(), r.clone())).map(|_| {
                    format!("goes with its subject {r}, which this sweep does not delete")
                }),
            };
            match blocked {
                Some(why) => {
                    decided.insert((repo, digest), Outcome::Skipped(why));
                }
                None => first.push((repo, digest)),
            }
        }
        for (k, o) in self.delete_digests(registry, first, cancel).await {
            decided.insert(k, o);
        }

        // Subjects, once everything that refers to them is gone; not yet manifests that an
        // index this sweep deletes lists.
        let gone = |o: Option<&Outcome>| o.is_some_and(Outcome::gone);
        let by_index = |repo: &str, digest: &str| -> Vec<String> {
            view_of(repo)
                .listed_by(digest)
                .into_iter()
                .filter(|i| target_keys.contains(&(repo.to_string(), i.clone())))
                .collect()
        };
        let mut second = Vec::new();
        let mut third = Vec::new();
        for t in targets.iter().filter(|t| !t.is_referrer) {
            let k = key(t);
            if decided.contains_key(&k) {
                continue;
            }
            let (repo, digest) = &k;
            let view = view_of(repo);
            let hanging: Vec<String> = view
                .subject_of
                .keys()
                .filter(|r| view.root_subject(r).as_deref() == Some(digest.as_str()))
                .filter(|r| !gone(decided.get(&(repo.clone(), (*r).clone()))))
                .cloned()
                .collect();
            if !hanging.is_empty() {
                decided.insert(
                    k.clone(),
                    Outcome::Skipped(format!("{} still refer to it", hanging.join(", "))),
                );
                continue;
            }
            if by_index(repo, digest).is_empty() {
                second.push(k);
            } else {
                third.push(k);
            }
        }
        for (k, o) in self.delete_digests(registry, second, cancel).await {
            decided.insert(k, o);
        }
        let mut ready = Vec::new();
        for k in third {
            let holding: Vec<String> = by_index(&k.0, &k.1)
                .into_iter()
                .filter(|i| !gone(decided.get(&(k.0.clone(), i.clone()))))
                .collect();
            if holding.is_empty() {
                ready.push(k);
            } else {
                decided.insert(
                    k,
                    Outcome::Skipped(format!(
                        "listed by index {}, which this sweep did not delete",
                        holding.join(", ")
                    )),
                );
            }
        }
        for (k, o) in self.delete_digests(registry, ready, cancel).await {
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
            cache.forget_digests(base, repo, digests);
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

    /// Deletes manifests by digest, concurrently within the rate limit.
    async fn delete_digests(
        &self,
        registry: &RegistryClient,
        keys: Vec<(String, String)>,
        cancel: &CancellationToken,
    ) -> Vec<((String, String), Outcome)> {
        futures::stream::iter(keys)
            .map(|(repo, digest)| async move {
                if !self.pace(cancel).await {
                    return ((repo, digest), Outcome::NotAttempted);
                }
                if !self.leadership.still_leading() {
                    return ((repo, digest), Outcome::Failed(NOT_LEADING.into()));
                }
                let o = match registry.delete(&repo, &digest).await {
                    Ok(Deleted::Now) => Outcome::Deleted,
                    Ok(Deleted::AlreadyGone) => Outcome::AlreadyGone,
                    Err(e) => Outcome::Failed(e.to_string()),
                };
                ((repo, digest), o)
            })
            .buffer_unordered(self.concurrency.max(1))
            .collect()
            .await
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
                    name: format!("j{i}"),
                    uid: format!("u{i}"),
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
}
