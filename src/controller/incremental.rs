//! A Job or Secret policy's evaluation kept from one change to the next: the worker side of
//! `engine::incremental`.
//!
//! A worker that evaluated once keeps the `IncrementalEvaluation` it built and, at its next
//! evaluation, asks the target kind's cache what changed since (`Cache::changes_since`) and
//! applies only that. It evaluates everything again, building a new state, whenever it cannot
//! tell what changed or whether the state still holds the objects a full evaluation would see:
//!
//! - there is no state: the worker started, the policy is new, or its generation changed (the
//!   worker drops the state when it compiles a new generation);
//! - the cache's change log no longer reaches back to the state's sequence number, or the
//!   cache re-listed since (a watch that lost its place lists everything again);
//! - the last evaluation was cut short (evaluation budget, or the worker was stopped): the
//!   state is dropped with it;
//! - a ClusterRetentionPolicy with a namespaceSelector saw namespace labels change: the state
//!   holds only the objects of the namespaces selected before, so objects of a namespace that
//!   joins the selection would be missing.
//!
//! OCI policies never come here: they are evaluated whole (docs/incremental.md).
//!
//! The objects given to the state are those of a full evaluation: parsed with only the fields
//! the policy reads (`CompiledPolicy::retained_fields`) and filtered by `selects`. A changed
//! object the policy no longer selects is deleted from the state; one it selects is upserted.
//! The reference index is rebuilt (a new `Arc`) only when a referrer cache changed, so a
//! different `Arc` than last time tells the state that references may have moved.

use std::collections::BTreeMap;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value as Json;

use super::caches::Cache;
use crate::engine::incremental::{
    Changes, IncrementalError, IncrementalEvaluation, ObjectChange, World,
};
use crate::engine::{CompiledPolicy, Evaluation, OverBudget, selects};
use crate::refs::RefIndex;

/// A policy's evaluation state between two evaluations, and what it is up to date with.
pub struct Tracked {
    state: IncrementalEvaluation,
    /// The target cache's sequence number the state has every change up to.
    seq: u64,
    /// The reference index the state last saw.
    refs: Arc<RefIndex>,
    /// The namespace labels its objects were selected with.
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl Tracked {
    /// How many objects the state holds (those the policy selects).
    pub fn len(&self) -> usize {
        self.state.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The verdicts as `evaluate` returns them; copies every result, as `evaluate` does when
    /// it hands them to the worker.
    pub fn evaluation(&self) -> Evaluation {
        self.state.evaluation()
    }

    /// When the clock alone may next change a verdict (`IncrementalEvaluation::next_due`).
    pub fn next_due(&self) -> Option<Timestamp> {
        self.state.next_due()
    }

    /// Equal after two evaluations when no verdict changed in between.
    pub fn generation(&self) -> u64 {
        self.state.generation()
    }
}

/// Everything one evaluation reads, as the worker gathered it.
pub struct Inputs<'a> {
    pub policy: &'a CompiledPolicy,
    /// The cache of the policy's target kind.
    pub target: &'a Cache,
    pub refs: Arc<RefIndex>,
    pub custom_referrers: &'a [&'a Json],
    pub namespace_labels: &'a BTreeMap<String, BTreeMap<String, String>>,
    pub now: Timestamp,
    /// The generation (`Tracked::generation`) of the verdicts the caller holds from the last
    /// evaluation, if it holds them: when nothing changed they are not copied again.
    pub held: Option<u64>,
}

/// How an evaluation was done, for logs and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Every selected object, into a new state; why.
    Full(&'static str),
    /// Only the objects that changed since the last evaluation: how many.
    Changes(usize),
}

/// One evaluation: the verdicts, how they were reached, and the state to keep for the next
/// one (None when the evaluation gave up: the next one starts over).
pub struct Outcome {
    /// None: the verdicts are those the caller holds (`Inputs::held`), unchanged.
    pub result: Result<Option<Evaluation>, OverBudget>,
    pub mode: Mode,
    pub tracked: Option<Tracked>,
}

/// Evaluates `inputs.policy`, from `previous` when it can be brought up to date with the
/// changes alone, from every object otherwise. The result equals `engine::evaluate_within`
/// over the selected objects of the target cache (up to the order of the results).
pub fn evaluate(
    previous: Option<Tracked>,
    inputs: &Inputs<'_>,
    over_budget: &dyn Fn() -> bool,
) -> Outcome {
    let previous = match previous {
        None => Err("no earlier evaluation"),
        Some(t)
            if inputs.policy.view.spec.target.namespace_selector.is_some()
                && inputs.policy.view.namespace.is_none()
                && &t.namespace_labels != inputs.namespace_labels =>
        {
            Err("namespace labels changed")
        }
        Some(t) => match inputs.target.changes_since(t.seq) {
            Some(changes) => Ok((t, changes)),
            None => Err("the cache's change log does not reach back far enough"),
        },
    };
    let (mut tracked, changes) = match previous {
        Ok(p) => p,
        Err(why) => return full(inputs, over_budget, why),
    };
    let fields = inputs.policy.retained_fields();
    let objects: Vec<ObjectChange> = changes
        .changed
        .into_iter()
        .map(|(uid, text)| {
            // A text that does not parse is left out, as `Cache::parsed_where` leaves it out.
            match text.and_then(|t| crate::json::parse_pruned(&t, &fields).ok()) {
                Some(obj) if selects(inputs.policy, &obj, inputs.namespace_labels) => {
                    ObjectChange::Upsert(obj)
                }
                _ => ObjectChange::Delete(uid.to_string()),
            }
        })
        .collect();
    let n = objects.len();
    let refs_changed = !Arc::ptr_eq(&tracked.refs, &inputs.refs);
    let world = World {
        refs: &inputs.refs,
        custom_referrers: inputs.custom_referrers,
        namespace_labels: inputs.namespace_labels,
        now: inputs.now,
    };
    let applied = tracked.state.apply(
        inputs.policy,
        &world,
        Changes {
            objects,
            refs_changed,
        },
        over_budget,
    );
    match applied {
        Ok(_) => {
            tracked.seq = changes.seq;
            tracked.refs = inputs.refs.clone();
            tracked.namespace_labels = inputs.namespace_labels.clone();
            // Copying every verdict is what a change costs most at scale; skipped when none
            // changed.
            let result =
                (inputs.held != Some(tracked.generation())).then(|| tracked.state.evaluation());
            Outcome {
                result: Ok(result),
                mode: Mode::Changes(n),
                tracked: Some(tracked),
            }
        }
        Err(IncrementalError::OverBudget(e)) => Outcome {
            result: Err(e),
            mode: Mode::Changes(n),
            tracked: None,
        },
        Err(IncrementalError::PolicyChanged { .. }) => {
            full(inputs, over_budget, "the policy changed")
        }
    }
}

/// Every selected object of the target cache into a new state.
fn full(inputs: &Inputs<'_>, over_budget: &dyn Fn() -> bool, why: &'static str) -> Outcome {
    let policy = inputs.policy;
    let fields = policy.retained_fields();
    let (seq, objects) = inputs
        .target
        .parsed_where_at(&fields, |o| selects(policy, o, inputs.namespace_labels));
    let mut state = IncrementalEvaluation::new(policy);
    let world = World {
        refs: &inputs.refs,
        custom_referrers: inputs.custom_referrers,
        namespace_labels: inputs.namespace_labels,
        now: inputs.now,
    };
    let applied = state.apply(
        policy,
        &world,
        Changes {
            objects: objects.map(ObjectChange::Upsert),
            refs_changed: true,
        },
        over_budget,
    );
    let mode = Mode::Full(why);
    match applied {
        Ok(_) => Outcome {
            result: Ok(Some(state.evaluation())),
            mode,
            tracked: Some(Tracked {
                state,
                seq,
                refs: inputs.refs.clone(),
                namespace_labels: inputs.namespace_labels.clone(),
            }),
        },
        Err(IncrementalError::OverBudget(e)) => Outcome {
            result: Err(e),
            mode,
            tracked: None,
        },
        // `apply` refuses only a policy whose view differs from the one `new` copied, and both
        // are `policy` here.
        Err(IncrementalError::PolicyChanged { built }) => {
            unreachable!("a new evaluation state refused its own policy ({built})")
        }
    }
}

#[cfg(test)]
mod tests;
