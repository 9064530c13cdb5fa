//! Sweeps: which candidates a sweep may delete (pure), and deleting them safely (I/O): a fresh
//! read, the guards again, and a delete with UID and resourceVersion preconditions.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use jiff::Timestamp;
use kube::api::{DeleteParams, DynamicObject, Preconditions, PropagationPolicy};
use kube::{Api, Client};
use serde_json::Value as Json;
use tokio::sync::Mutex;

use super::caches::{Kind, prune};
use crate::api::{Deletion, PropagationPolicy as Propagation, TargetKind};
use crate::engine::{Evaluation, ObjectId, ObjectResult, guard};
use crate::oci::RegistryClient;

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
    let is_referrer = r.reason.starts_with(crate::engine::FOLLOWS_SUBJECT);
    Some(Target {
        id,
        why: r.reason.clone(),
        is_referrer,
    })
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
    Skipped(String),
    Failed(String),
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

pub struct Executor {
    pub client: Client,
    pub concurrency: usize,
    pub limiter: Arc<RateLimiter>,
}

impl Executor {
    /// Deletes the targets: a fresh read of each, the guards again, then a delete with
    /// preconditions. One failure does not stop the others.
    pub async fn delete_all(
        &self,
        kind: TargetKind,
        targets: Vec<Target>,
        propagation: Option<Propagation>,
        policy_key: &str,
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
                let limiter = self.limiter.clone();
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
                    let outcome = delete_one(
                        &api,
                        kind,
                        name,
                        uid,
                        resource_version,
                        propagation,
                        &limiter,
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

    /// Deletes OCI artifacts by digest, referrers first: each digest is checked to exist and to
    /// carry the tags it was evaluated with, then deleted.
    pub async fn delete_oci(
        &self,
        registry: &RegistryClient,
        targets: Vec<Target>,
        policy_key: &str,
    ) -> Vec<(Target, Outcome)> {
        let (referrers, others): (Vec<Target>, Vec<Target>) =
            targets.into_iter().partition(|t| t.is_referrer);
        let mut out = Vec::new();
        for batch in [referrers, others] {
            let done: Vec<(Target, Outcome)> = futures::stream::iter(batch)
                .map(|t| async move {
                    let outcome = delete_artifact(registry, &t, &self.limiter).await;
                    audit(policy_key, TargetKind::OciArtifact, &t, &outcome);
                    (t, outcome)
                })
                .buffer_unordered(self.concurrency.max(1))
                .collect()
                .await;
            out.extend(done);
        }
        out
    }
}

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
        Outcome::Skipped(reason) => tracing::info!(
            policy = policy_key, kind = kind.as_str(), namespace = %namespace,
            name = %name, reason = %reason, "skipped"
        ),
        Outcome::Failed(error) => tracing::warn!(
            policy = policy_key, kind = kind.as_str(), namespace = %namespace,
            name = %name, error = %error, "delete failed"
        ),
    }
}

async fn delete_artifact(registry: &RegistryClient, t: &Target, limiter: &RateLimiter) -> Outcome {
    let TargetId::Oci {
        repository,
        digest,
        tags,
    } = &t.id
    else {
        return Outcome::Skipped("not an OCI artifact".into());
    };
    limiter.wait().await;
    match registry.resolve(repository, digest).await {
        Ok(Some(_)) => {}
        Ok(None) => return Outcome::Skipped("already gone".into()),
        Err(e) => return Outcome::Failed(e.to_string()),
    }
    for tag in tags {
        limiter.wait().await;
        match registry.resolve(repository, tag).await {
            Ok(Some(d)) if &d == digest => {}
            Ok(_) => return Outcome::Skipped(format!("tag {tag} moved since it was evaluated")),
            Err(e) => return Outcome::Failed(e.to_string()),
        }
    }
    limiter.wait().await;
    match registry.delete(repository, digest).await {
        Ok(()) => Outcome::Deleted,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

async fn delete_one(
    api: &Api<DynamicObject>,
    kind: TargetKind,
    name: &str,
    uid: &str,
    resource_version: &str,
    propagation: PropagationPolicy,
    limiter: &RateLimiter,
) -> Outcome {
    limiter.wait().await;
    let fresh = match api.get_opt(name).await {
        Ok(Some(o)) => o,
        Ok(None) => return Outcome::Skipped("already gone".into()),
        Err(e) => return Outcome::Failed(format!("reading before delete: {e}")),
    };
    if fresh.metadata.uid.as_deref() != Some(uid) {
        return Outcome::Skipped("replaced by a new object of the same name".into());
    }
    if fresh.metadata.resource_version.as_deref() != Some(resource_version) {
        return Outcome::Skipped("changed since it was evaluated".into());
    }
    let mut json = serde_json::to_value(&fresh).unwrap_or(Json::Null);
    prune(kind.as_str(), &mut json);
    if let Some(g) = guard(kind, &json) {
        return Outcome::Skipped(g.to_string());
    }
    limiter.wait().await;
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
        Err(kube::Error::Api(s)) if s.code == 404 => Outcome::Skipped("already gone".into()),
        // The preconditions failed: the object changed between the read and the delete.
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
