//! Status computation, pure: from what the controller knows to the status it should show.
//! Writing it is the caller's job, and only when the result differs from what is there.

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::{
    CandidateRef, GraceMarks, PolicyView, RetentionPolicyStatus, Summary, SweepRecord,
};
use crate::engine::{CompiledPolicy, Evaluation, ObjectId, PolicyError, Verdict};

pub const READY: &str = "Ready";
pub const SWEPT: &str = "Swept";
/// kstatus's abnormal-true condition: True when the controller cannot make progress until the
/// policy is edited. GitOps tools compute health with kstatus, which reads `Ready=False` as
/// InProgress (it may yet become ready) and only `Stalled=True` as Failed; without it an invalid
/// policy would leave a sync waiting for its timeout instead of failing at once.
pub const STALLED: &str = "Stalled";

/// Reasons of the Ready condition. Typed: whether a policy stalls is decided from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadyReason {
    Valid,
    InvalidExpression,
    InvalidSchedule,
    InvalidTarget,
    TargetUnavailable,
    CredentialsError,
}

impl ReadyReason {
    /// As the condition's `reason` shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            ReadyReason::Valid => "Valid",
            ReadyReason::InvalidExpression => "InvalidExpression",
            ReadyReason::InvalidSchedule => "InvalidSchedule",
            ReadyReason::InvalidTarget => "InvalidTarget",
            ReadyReason::TargetUnavailable => "TargetUnavailable",
            ReadyReason::CredentialsError => "CredentialsError",
        }
    }

    /// Whether the controller cannot make progress until the policy is edited: an invalid
    /// expression, schedule or target fails the same way on every attempt. An unreachable
    /// target, a refused list or missing credentials can mend without an edit (RBAC granted, a
    /// registry back, a Secret created), so those stay InProgress to kstatus.
    pub fn stalls(self) -> bool {
        matches!(
            self,
            ReadyReason::InvalidExpression
                | ReadyReason::InvalidSchedule
                | ReadyReason::InvalidTarget
        )
    }
}

impl std::fmt::Display for ReadyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The reasons of the Ready condition by their names as written.
pub mod ready {
    use super::ReadyReason;
    pub const VALID: ReadyReason = ReadyReason::Valid;
    pub const INVALID_EXPRESSION: ReadyReason = ReadyReason::InvalidExpression;
    pub const INVALID_SCHEDULE: ReadyReason = ReadyReason::InvalidSchedule;
    pub const INVALID_TARGET: ReadyReason = ReadyReason::InvalidTarget;
    pub const TARGET_UNAVAILABLE: ReadyReason = ReadyReason::TargetUnavailable;
    pub const CREDENTIALS_ERROR: ReadyReason = ReadyReason::CredentialsError;
}

/// Reasons of the Swept condition.
pub mod swept {
    pub const COMPLETED: &str = "Completed";
    pub const DRY_RUN: &str = "DryRun";
    pub const SUSPENDED: &str = "Suspended";
    pub const PARTIALLY_FAILED: &str = "PartiallyFailed";
    pub const BLOCKED: &str = "Blocked";
    pub const FAILED: &str = "Failed";
    pub const INTERRUPTED: &str = "Interrupted";
}

/// How many candidates status lists.
pub const MAX_LISTED_CANDIDATES: usize = 20;

/// The Ready condition's reason for a policy that cannot be used.
pub fn policy_error_reason(e: &PolicyError) -> ReadyReason {
    match e {
        PolicyError::InvalidExpression(_) => ready::INVALID_EXPRESSION,
        PolicyError::InvalidSchedule(_) => ready::INVALID_SCHEDULE,
        PolicyError::InvalidTarget(_) => ready::INVALID_TARGET,
    }
}

/// Whether the policy can be used, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Readiness {
    pub ready: bool,
    pub reason: ReadyReason,
    pub message: String,
}

impl Readiness {
    pub fn valid(eval: &Evaluation) -> Readiness {
        let s = eval.summary;
        Readiness {
            ready: true,
            reason: ready::VALID,
            message: format!(
                "governs {}: {} kept, {} candidates, {} errors",
                s.governed, s.kept, s.candidates, s.errors
            ),
        }
    }

    pub fn invalid(e: &PolicyError) -> Readiness {
        Readiness {
            ready: false,
            reason: policy_error_reason(e),
            message: e.to_string(),
        }
    }

    /// A policy object that does not fit the schema (what the API server's own validation
    /// lets through, such as a `target.kind` this version does not know).
    pub fn unreadable(e: &str) -> Readiness {
        Readiness {
            ready: false,
            reason: ready::INVALID_TARGET,
            message: format!("spec: {e}"),
        }
    }

    /// What the controller will say of a policy object before reading anything: Err with the
    /// Ready=False it would write (InvalidExpression, InvalidSchedule or InvalidTarget), Ok
    /// with the compiled policy. The admission webhook refuses with exactly this.
    pub fn judge(kind: &str, obj: &serde_json::Value) -> Result<CompiledPolicy, Readiness> {
        let view = PolicyView::from_object(kind, obj).map_err(|e| Readiness::unreadable(&e))?;
        CompiledPolicy::compile(view).map_err(|e| Readiness::invalid(&e))
    }
}

/// The outcome of a sweep as the Swept condition and lastSweep show it.
#[derive(Clone, Debug, PartialEq)]
pub struct SweepStatus {
    pub ok: bool,
    pub reason: &'static str,
    pub message: String,
    pub record: Option<SweepRecord>,
}

/// Sets a condition, keeping lastTransitionTime when the status did not change.
pub fn set_condition(conditions: &mut Vec<Condition>, mut new: Condition) {
    match conditions.iter_mut().find(|c| c.type_ == new.type_) {
        Some(old) => {
            if old.status == new.status {
                new.last_transition_time = old.last_transition_time.clone();
            }
            *old = new;
        }
        None => conditions.push(new),
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    Condition {
        type_: type_.to_string(),
        status: if ok { "True" } else { "False" }.to_string(),
        reason: reason.to_string(),
        // The API server limits condition messages to 32768 bytes.
        message: truncate(message, 4096),
        observed_generation: generation,
        last_transition_time: Time(now),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The candidates status lists: the oldest first, at most MAX_LISTED_CANDIDATES.
pub fn listed_candidates(eval: &Evaluation) -> Vec<CandidateRef> {
    // Unknown creation times sort last: they read as new; equal times in the results' order.
    // The index makes every key distinct, so choosing the first few and sorting only those
    // lists what sorting every candidate would: status is built after every change, and a
    // policy may have a hundred thousand candidates.
    let mut c: Vec<_> = eval
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Delete)
        .enumerate()
        .map(|(i, r)| ((r.created.is_none(), r.created, i), r))
        .collect();
    if c.len() > MAX_LISTED_CANDIDATES {
        c.select_nth_unstable_by_key(MAX_LISTED_CANDIDATES, |(key, _)| *key);
        c.truncate(MAX_LISTED_CANDIDATES);
    }
    c.sort_unstable_by_key(|(key, _)| *key);
    c.into_iter()
        .map(|(_, r)| match &r.id {
            ObjectId::Kube {
                namespace, name, ..
            } => CandidateRef {
                namespace: Some(namespace.to_string()).filter(|n| !n.is_empty()),
                name: Some(name.to_string()),
                ..Default::default()
            },
            ObjectId::Oci {
                repository,
                digest,
                tags,
            } => CandidateRef {
                repository: Some(repository.clone()),
                digest: Some(digest.clone()),
                tags: tags.clone(),
                ..Default::default()
            },
        })
        .collect()
}

/// Byte counts as the API's integers; no registry holds 8 EiB.
pub fn saturating_i64(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// Everything status is computed from.
pub struct StatusInput<'a> {
    pub previous: Option<&'a RetentionPolicyStatus>,
    pub generation: Option<i64>,
    pub readiness: &'a Readiness,
    pub evaluation: Option<&'a Evaluation>,
    pub sweep: Option<&'a SweepStatus>,
    pub next_sweep: Option<Timestamp>,
    /// A sweep starts at this time: recorded as a lastSweep without completionTime, so that
    /// a sweep cut short is found and finished by whoever runs next.
    pub sweep_started: Option<Timestamp>,
    /// Grace-period marks to persist; None keeps those in `previous`.
    pub grace_marks: Option<Vec<GraceMarks>>,
    pub now: Timestamp,
}

/// The status the policy should show. Equal inputs give an equal status whatever `now` is,
/// as long as no condition changes its status: no timestamp churn.
pub fn desired_status(input: StatusInput<'_>) -> RetentionPolicyStatus {
    let prev = input.previous.cloned().unwrap_or_default();
    let mut conditions = prev.conditions.clone();
    let r = input.readiness;
    set_condition(
        &mut conditions,
        condition(
            READY,
            r.ready,
            r.reason.as_str(),
            &r.message,
            input.generation,
            input.now,
        ),
    );
    if !r.ready && r.reason.stalls() {
        set_condition(
            &mut conditions,
            condition(
                STALLED,
                true,
                r.reason.as_str(),
                &r.message,
                input.generation,
                input.now,
            ),
        );
    } else {
        // Abnormal-true: absent rather than False once the policy can make progress again.
        conditions.retain(|c| c.type_ != STALLED);
    }
    if let Some(s) = input.sweep {
        set_condition(
            &mut conditions,
            condition(
                SWEPT,
                s.ok,
                s.reason,
                &s.message,
                input.generation,
                input.now,
            ),
        );
    }
    let (summary, candidates) = match input.evaluation {
        Some(e) => (
            Some(Summary {
                governed: e.summary.governed,
                kept: e.summary.kept,
                candidates: e.summary.candidates,
                errors: e.summary.errors,
                bytes: e.summary.bytes.map(saturating_i64),
                bytes_freed: e.summary.bytes_freed.map(saturating_i64),
            }),
            listed_candidates(e),
        ),
        // An invalid policy evaluates nothing: report no counts rather than stale ones.
        None => (None, Vec::new()),
    };
    RetentionPolicyStatus {
        observed_generation: input.generation,
        conditions,
        summary,
        candidates,
        last_sweep: input
            .sweep
            .and_then(|s| s.record.clone())
            .or_else(|| {
                input.sweep_started.map(|t| SweepRecord {
                    start_time: Some(Time(t)),
                    ..Default::default()
                })
            })
            .or(prev.last_sweep),
        next_sweep_time: input.next_sweep.map(Time),
        grace_period_marks: input.grace_marks.unwrap_or(prev.grace_period_marks),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{Counts, ObjectResult};

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn eval(n_delete: usize) -> Evaluation {
        let mut results = Vec::new();
        for i in 0..n_delete {
            results.push(ObjectResult {
                kind: "Job",
                id: ObjectId::Kube {
                    namespace: "ns".into(),
                    name: format!("j{i:02}").into(),
                    uid: "".into(),
                    resource_version: "".into(),
                },
                verdict: Verdict::Delete,
                reason: "no term of keep held".into(),
                basis: crate::engine::Basis::NoTermHeld,
                created: Some(
                    ts("2026-01-01T00:00:00Z")
                        + jiff::SignedDuration::from_hours(24 * (n_delete - i) as i64),
                ),
                referrers: vec![],
            });
        }
        Evaluation {
            summary: Counts {
                governed: n_delete as i64 + 1,
                kept: 1,
                candidates: n_delete as i64,
                errors: 0,
                ..Default::default()
            },
            results: results.into_iter().map(std::sync::Arc::new).collect(),
        }
    }

    #[test]
    fn status_is_stable_across_evaluations_and_transitions_only_on_change() {
        let e = eval(3);
        let ready = Readiness::valid(&e);
        let first = desired_status(StatusInput {
            previous: None,
            generation: Some(1),
            readiness: &ready,
            evaluation: Some(&e),
            sweep: None,
            next_sweep: Some(ts("2026-02-01T00:00:00Z")),
            sweep_started: None,
            grace_marks: None,
            now: ts("2026-01-10T00:00:00Z"),
        });
        let again = desired_status(StatusInput {
            previous: Some(&first),
            generation: Some(1),
            readiness: &ready,
            evaluation: Some(&e),
            sweep: None,
            next_sweep: Some(ts("2026-02-01T00:00:00Z")),
            sweep_started: None,
            grace_marks: None,
            now: ts("2026-01-10T00:05:00Z"),
        });
        assert_eq!(first, again, "same inputs later: no write");
        let broken = PolicyError::InvalidTarget("x".into());
        let invalid = Readiness::invalid(&broken);
        let third = desired_status(StatusInput {
            previous: Some(&again),
            generation: Some(2),
            readiness: &invalid,
            evaluation: None,
            sweep: None,
            next_sweep: None,
            sweep_started: None,
            grace_marks: None,
            now: ts("2026-01-10T00:06:00Z"),
        });
        let c = &third.conditions[0];
        assert_eq!(
            (c.status.as_str(), c.reason.as_str(), c.observed_generation),
            ("False", "InvalidTarget", Some(2))
        );
        assert_eq!(c.last_transition_time.0, ts("2026-01-10T00:06:00Z"));
        assert!(third.summary.is_none() && third.candidates.is_empty());
    }

    #[test]
    fn candidates_are_listed_oldest_first_and_capped() {
        let e = eval(25);
        let listed = listed_candidates(&e);
        assert_eq!(listed.len(), MAX_LISTED_CANDIDATES);
        assert_eq!(listed[0].name.as_deref(), Some("j24"));
        assert_eq!(listed[19].name.as_deref(), Some("j05"));
    }

    /// Choosing the oldest few lists what a stable sort of every candidate lists, ties (equal
    /// and unknown creation times) in the results' order.
    #[test]
    fn listing_the_oldest_equals_sorting_every_candidate() {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        for n in [0, 1, 19, 20, 21, 200] {
            let mut e = eval(n);
            for r in e.results.iter_mut() {
                let r = std::sync::Arc::make_mut(r);
                // Few distinct times, some unknown: many ties.
                r.created = match rng.random_range(0..5) {
                    0 => None,
                    d => Some(ts("2026-01-01T00:00:00Z") + jiff::SignedDuration::from_hours(d)),
                };
                if rng.random_bool(0.2) {
                    r.verdict = Verdict::Keep;
                }
            }
            let mut want: Vec<_> = e
                .results
                .iter()
                .filter(|r| r.verdict == Verdict::Delete)
                .collect();
            want.sort_by_key(|r| (r.created.is_none(), r.created));
            let want: Vec<_> = want
                .iter()
                .take(MAX_LISTED_CANDIDATES)
                .map(|r| match &r.id {
                    ObjectId::Kube { name, .. } => Some(name.to_string()),
                    ObjectId::Oci { .. } => None,
                })
                .collect();
            let got: Vec<_> = listed_candidates(&e).into_iter().map(|c| c.name).collect();
            assert_eq!(got, want, "{n} candidates");
        }
    }

    #[test]
    fn swept_condition_and_last_sweep_persist() {
        let e = eval(1);
        let ready = Readiness::valid(&e);
        let record = SweepRecord {
            start_time: Some(Time(ts("2026-01-10T00:00:00Z"))),
            completion_time: Some(Time(ts("2026-01-10T00:00:01Z"))),
            deleted: 1,
            failed: 0,
            skipped: 0,
            bytes_freed: None,
        };
        let sweep = SweepStatus {
            ok: true,
            reason: swept::COMPLETED,
            message: "deleted 1".into(),
            record: Some(record.clone()),
        };
        let s1 = desired_status(StatusInput {
            previous: None,
            generation: Some(1),
            readiness: &ready,
            evaluation: Some(&e),
            sweep: Some(&sweep),
            next_sweep: None,
            sweep_started: None,
            grace_marks: None,
            now: ts("2026-01-10T00:00:01Z"),
        });
        let s2 = desired_status(StatusInput {
            previous: Some(&s1),
            generation: Some(1),
            readiness: &ready,
            evaluation: Some(&e),
            sweep: None,
            next_sweep: None,
            sweep_started: None,
            grace_marks: None,
            now: ts("2026-01-10T00:10:00Z"),
        });
        assert_eq!(s2.last_sweep, Some(record));
        assert_eq!(
            s2.conditions
                .iter()
                .find(|c| c.type_ == SWEPT)
                .map(|c| c.reason.as_str()),
            Some("Completed")
        );
    }

    fn conditions_of(
        readiness: &Readiness,
        previous: Option<&RetentionPolicyStatus>,
    ) -> RetentionPolicyStatus {
        desired_status(StatusInput {
            previous,
            generation: Some(2),
            readiness,
            evaluation: None,
            sweep: None,
            next_sweep: None,
            sweep_started: None,
            grace_marks: None,
            now: ts("2026-01-10T00:00:00Z"),
        })
    }

    fn find<'a>(s: &'a RetentionPolicyStatus, type_: &str) -> Option<&'a Condition> {
        s.conditions.iter().find(|c| c.type_ == type_)
    }

    #[test]
    fn an_invalid_policy_is_stalled_and_an_unavailable_target_is_not() {
        for reason in [
            ready::INVALID_EXPRESSION,
            ready::INVALID_SCHEDULE,
            ready::INVALID_TARGET,
        ] {
            let r = Readiness {
                ready: false,
                reason,
                message: "spec.keep: syntax error".into(),
            };
            let st = conditions_of(&r, None);
            let stalled = find(&st, STALLED).expect("Stalled");
            let ready = find(&st, READY).expect("Ready");
            assert_eq!(stalled.status, "True");
            assert_eq!(
                (stalled.reason.as_str(), stalled.message.as_str()),
                (ready.reason.as_str(), ready.message.as_str())
            );
            assert_eq!(stalled.observed_generation, Some(2));
        }
        for reason in [ready::TARGET_UNAVAILABLE, ready::CREDENTIALS_ERROR] {
            let r = Readiness {
                ready: false,
                reason,
                message: "refused".into(),
            };
            let st = conditions_of(&r, None);
            assert!(
                find(&st, STALLED).is_none(),
                "{reason} can mend without an edit"
            );
            assert_eq!(find(&st, READY).map(|c| c.status.as_str()), Some("False"));
        }
    }

    #[test]
    fn stalled_goes_away_once_the_policy_is_fixed() {
        let broken = conditions_of(
            &Readiness::invalid(&PolicyError::InvalidTarget("x".into())),
            None,
        );
        assert!(find(&broken, STALLED).is_some());
        let fixed = conditions_of(&Readiness::valid(&eval(1)), Some(&broken));
        assert!(find(&fixed, STALLED).is_none(), "{:?}", fixed.conditions);
        assert_eq!(find(&fixed, READY).map(|c| c.status.as_str()), Some("True"));
        // A policy that was never stalled has no Stalled condition at all.
        let ok = conditions_of(&Readiness::valid(&eval(1)), None);
        assert!(find(&ok, STALLED).is_none());
    }
}
