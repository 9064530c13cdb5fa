//! Writing the policy's status (server-side apply, only when it changes) and its Events.

use super::*;
use std::collections::HashMap;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::Api;
use kube::api::{ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use serde_json::{Value as Json, json};

use crate::api::{RetentionPolicyStatus, SweepRecord};
use crate::controller::FIELD_MANAGER;
use crate::controller::marks;
use crate::engine::{CompiledPolicy, Evaluation};
use crate::status::{Readiness, StatusInput, SweepStatus, desired_status};

impl Worker {
    /// Writes the status of a policy with verdicts.
    pub(super) async fn finish_step(
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

    pub(super) async fn publish(&self, obj: &Json, type_: EventType, reason: &str, note: &str) {
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
    pub(super) async fn write_not_ready(
        &mut self,
        obj: &Json,
        readiness: &Readiness,
        now: Timestamp,
    ) {
        self.write(obj, readiness, None, None, None, None, now)
            .await
    }

    /// Writes status by server-side apply, only when it differs from both what the object
    /// shows and what this worker last wrote.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn write(
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

/// What a status is computed from, besides the policy's own status (its resourceVersion
/// stands for that).
#[derive(Clone, Debug, PartialEq)]
pub(super) struct WriteInputs {
    resource_version: String,
    readiness: Readiness,
    evaluation: Option<u64>,
    sweep: Option<SweepStatus>,
    next_sweep: Option<Timestamp>,
    sweep_started: Option<Timestamp>,
    marks: Option<u64>,
}

/// The same for equal sets of marks, whatever order the map holds them in.
pub(super) fn marks_fingerprint(marks: &HashMap<String, Timestamp>) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hasher = BuildHasherDefault::<DefaultHasher>::default();
    marks.iter().fold(marks.len() as u64, |acc, m| {
        acc.wrapping_add(hasher.hash_one(m))
    })
}

/// A sweep that started at `start`, ended at `end` (None: cut short).
pub(super) fn record(
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

pub(super) fn time(t: Timestamp) -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(t)
}

pub(super) fn object_reference(obj: &Json) -> ObjectReference {
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
