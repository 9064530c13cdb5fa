//! Evaluating the policy: from the changes since the last evaluation when it can be, on the
//! blocking pool, within the evaluation budget.

use super::*;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use jiff::Timestamp;
use serde_json::Value as Json;
use tokio_util::sync::CancellationToken;

use crate::api::TargetKind;
use crate::controller::Shared;
use crate::controller::caches::{Cache, Kind};
use crate::controller::incremental::{self, Inputs, Mode, Tracked};
use crate::engine::{
    CompiledPolicy, Evaluation, OverBudget, Snapshot, evaluate_within, labels_of, selects,
};
use crate::expr::FieldTree;

impl Worker {
    /// Evaluates on the blocking pool, within one of the shared evaluation slots. None when the
    /// worker was stopped meanwhile: the result is not waited for.
    pub(super) async fn evaluate(
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
}

/// Evaluates a policy against the caches (or its registry inventory). Runs on the blocking
/// pool; gives up at the evaluation budget or when the worker is stopped. A Job or Secret
/// policy is evaluated from the changes since its last evaluation when it can be
/// (`incremental::evaluate`); an OCI policy is evaluated whole.
#[allow(clippy::too_many_arguments)]
pub(super) fn evaluate_now(
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
    let refs = shared.ref_index(policy.target);
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

/// What a policy reads of the objects of `kind`: all its expressions and the engine read of
/// its targets, everything of the kinds its custom `referencedBy` expressions walk and of
/// namespaces; of built-in referrers only their references, which every cache of theirs keeps.
pub(super) fn fields_read(policy: &CompiledPolicy, kind: &Kind, custom: &[Kind]) -> FieldTree {
    if custom.contains(kind) || *kind == Kind::namespaces() {
        return FieldTree::everything();
    }
    let mut fields = FieldTree::default();
    if policy.target != TargetKind::OciArtifact && *kind == target_kind(policy.target) {
        fields.merge(&policy.retained_fields());
    }
    fields
}
