//! Sweeping: the deletes of one sweep, each verdict checked again against fresh facts right
//! before its delete, paused while a cache the policy reads is not caught up.

use super::*;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use jiff::Timestamp;
use kube::runtime::events::EventType;
use serde_json::Value as Json;

use crate::api::TargetKind;
use crate::controller::caches::{Cache, Kind};
use crate::controller::decide::{Interruption, Trigger};
use crate::controller::marks;
use crate::controller::metrics::SweepResult;
use crate::controller::now_secs;
use crate::controller::sweep::{
    Fresh, Outcome, PAUSE_LIMIT, Recheck, SweepPlan, candidate_mark_keys, plan_sweep,
};
use crate::engine::CompiledPolicy;
use crate::status::{self, Readiness, SweepStatus};

impl Worker {
    pub(super) async fn sweep(
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
                &crate::controller::sweep::deleted_artifacts(&outcomes),
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
    pub(super) fn recheck(
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
}

/// How a sweep ended.
pub(super) enum SweepEnd {
    Done(SweepStatus),
    Interrupted(Interruption, SweepStatus),
}

/// Whether a new version of the policy, seen during its sweep, stops the sweep.
pub(super) fn interruption_by_edit(
    obj: &Json,
    uid: &str,
    generation: Option<i64>,
) -> Option<Interruption> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

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
}
