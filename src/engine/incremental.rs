//! The pipeline of `evaluate`, kept up to date change by change.
//!
//! A full evaluation runs match, groupBy, orderBy and keep for every object whenever anything
//! changes. Here each object's placement (what match, groupBy and orderBy made of it) is kept
//! between changes; a change places again only the objects it touches, ranks again only the
//! groups they joined or left, and runs guards and keep again only where the object, its rank,
//! its group's size or its referrers changed. The results equal those of `evaluate` over
//! `objects()` in every field and in their order: docs/incremental.md says why, and the property
//! test below checks it over random change sequences.
//!
//! Expressions that read `now` or `age` cannot be cached across a new `now`: when the clock
//! moves, those are evaluated again for every object (see `TimePlan`). A keep that reads the
//! clock only as `age` compared with constant durations is the exception: each object's
//! verdict is given the instant its age next crosses one of them, and a new `now` decides again
//! only the objects whose instant has come.
//!
//! OCI policies are evaluated whole on every change: their guards (index children, referrers
//! following their subject) tie verdicts across objects. They are registry sweeps, not watch
//! events, so they gain little from incremental evaluation anyway.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value as Json;
use thiserror::Error;

use super::{
    Basis, CompiledPolicy, Counts, CustomRefs, Evaluation, ObjectResult, OverBudget, Row, Snapshot,
    SortKey, Verdict, custom_references, decide, evaluate_within, guard, place, rank_group,
    referrers_of, selects_itself, selects_namespace, sort_name, str_at, to_chrono,
};
use crate::api::{PolicyView, TargetKind};
use crate::expr::FieldTree;
use crate::refs::{RefIndex, Referrer};

/// One change to the objects of the policy's target kind.
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectChange {
    /// Added or modified. Pruned as the objects of a full evaluation would be
    /// (`CompiledPolicy::retained_fields`), or whole.
    Upsert(Json),
    /// Removed: the object's `identity`.
    Delete(String),
}

impl ObjectChange {
    /// The change that removes `obj`.
    pub fn delete(obj: &Json) -> ObjectChange {
        ObjectChange::Delete(identity(obj))
    }
}

/// What identifies an object across its changes: its uid; for a document without one (offline
/// input, OCI artifacts) its namespace and name, or its registry, repository and digest.
pub fn identity(obj: &Json) -> String {
    if let Some(uid) = str_at(obj, "/metadata/uid").filter(|u| !u.is_empty()) {
        return uid.to_string();
    }
    let s = |p: &str| str_at(obj, p).unwrap_or("");
    match str_at(obj, "/digest") {
        Some(digest) => format!("oci:{}/{}@{digest}", s("/registry"), s("/repository")),
        None => format!("name:{}/{}", s("/metadata/namespace"), s("/metadata/name")),
    }
}

/// Everything an evaluation reads besides the target objects, as it is at this change.
pub struct World<'a> {
    /// Built-in references of every namespace.
    pub refs: &'a RefIndex,
    /// Objects of the kinds the policy's custom `referencedBy` names, in a stable order.
    pub custom_referrers: &'a [&'a Json],
    /// Namespace labels, for a ClusterRetentionPolicy's namespaceSelector.
    pub namespace_labels: &'a BTreeMap<String, BTreeMap<String, String>>,
    pub now: Timestamp,
}

/// What changed since the previous `apply`. Custom referrers, namespace labels and `now` are
/// compared with what the previous call saw, so they need no flag here.
///
/// `objects` may be any iterator: a first evaluation is handed every object of a cache, and
/// each is stored (pruned to what the expressions read) before the next is parsed, so the
/// parsed objects are never all held at once.
#[derive(Clone, Debug, Default)]
pub struct Changes<I = Vec<ObjectChange>> {
    pub objects: I,
    /// The built-in reference index differs from the one the previous call saw. Comparing two
    /// indexes would cost as much as using them, so the caller, who rebuilds it, says so.
    pub refs_changed: bool,
}

impl Changes {
    /// No object changed: the world around them may have.
    pub fn none() -> Changes {
        Changes::default()
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum IncrementalError {
    /// Cached placements are those of the old expressions: nothing of them can be reused.
    #[error(
        "the policy changed since its incremental evaluation was built (was {built}); build a new one from every object"
    )]
    PolicyChanged { built: String },
    /// The objects are stored; the next `apply` evaluates everything again.
    #[error(transparent)]
    OverBudget(#[from] OverBudget),
}

/// How much of the pipeline one `apply` ran.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Work {
    /// Objects whose match, groupBy and orderBy ran.
    pub placed: usize,
    /// Groups ranked.
    pub ranked: usize,
    /// Objects whose guards and keep ran.
    pub decided: usize,
    /// Everything was evaluated: the first call, the call after one that ran out of budget,
    /// and every call for an OCI policy.
    pub whole: bool,
}

/// Which expressions depend on the clock, from their ASTs: those are evaluated again for every
/// object when `now` moves, and the others never are.
#[derive(Clone, Debug, PartialEq, Eq)]
struct TimePlan {
    /// match, groupBy or orderBy reads `now` or `age`.
    placement: bool,
    keep: bool,
    /// keep reads the clock only through `age` compared with these (`Compiled::age_thresholds`).
    keep_thresholds: Option<Vec<jiff::SignedDuration>>,
    /// A custom referrer's `refs` reads `now`.
    referrers: bool,
}

impl TimePlan {
    fn of(policy: &CompiledPolicy) -> TimePlan {
        TimePlan {
            placement: [&policy.r#match, &policy.group_by, &policy.order_by]
                .into_iter()
                .flatten()
                .any(|c| c.reads_time()),
            keep: policy.keep.reads_time(),
            keep_thresholds: policy.keep.age_thresholds().map(|ds| {
                ds.into_iter()
                    // An age is never negative: a comparison with a negative duration never
                    // changes.
                    .filter_map(|d| d.to_std().ok())
                    .filter_map(|d| jiff::SignedDuration::try_from(d).ok())
                    .collect()
            }),
            referrers: policy
                .referrer_sources
                .iter()
                .any(|(_, _, c)| c.reads_time()),
        }
    }
}

/// Where an object's result sits in the results: by namespace and name (repository and digest
/// for OCI), then identity, so that the order does not depend on the order of changes.
///
/// Shared text: a position is held by the entries, the uid index and the object's group, and
/// queued in pending work; clones are reference counts, and a namespace's text is one
/// allocation for all its objects (`Interned`).
type Pos = (Arc<str>, Arc<str>, Arc<str>);

fn position(obj: &Json, id: Arc<str>, namespaces: &mut Interned) -> Pos {
    let first = str_at(obj, "/metadata/namespace")
        .or_else(|| str_at(obj, "/repository"))
        .unwrap_or("");
    let second = str_at(obj, "/metadata/name")
        .or_else(|| str_at(obj, "/digest"))
        .unwrap_or("");
    (namespaces.get(first), Arc::from(second), id)
}

/// Texts that many objects share (namespaces, group keys), held once. Entries no object uses
/// any more are dropped when the set has doubled since it was last swept, so it stays within
/// twice what is in use.
#[derive(Default)]
struct Interned {
    texts: HashSet<Arc<str>>,
    swept_at: usize,
}

impl Interned {
    fn get(&mut self, text: &str) -> Arc<str> {
        if let Some(t) = self.texts.get(text) {
            return t.clone();
        }
        if self.texts.len() >= 2 * self.swept_at.max(64) {
            // Held only here: no object uses it.
            self.texts.retain(|t| Arc::strong_count(t) > 1);
            self.swept_at = self.texts.len();
        }
        let t: Arc<str> = Arc::from(text);
        self.texts.insert(t.clone());
        t
    }
}

/// What match, groupBy and orderBy made of a governed object.
#[derive(Debug)]
struct Placement {
    /// Shared by the group's members (`IncrementalEvaluation::group_names`).
    group: Arc<str>,
    key: Option<SortKey>,
    /// An error of match, groupBy or orderBy; boxed, as most objects have none.
    decided: Option<Box<(Basis, String)>>,
}

impl Placement {
    /// The group it is ranked in: only objects with a sort key are ranked.
    fn ranked_in(&self) -> Option<&str> {
        self.key.as_ref().map(|_| &*self.group)
    }

    /// Whether ranking and keep would see no difference between the two.
    fn same(a: Option<&Placement>, b: Option<&Placement>) -> bool {
        match (a, b) {
            (None, None) => true,
            (Some(a), Some(b)) => {
                let same_key = match (&a.key, &b.key) {
                    (None, None) => true,
                    // Keys that compare equal rank alike; keys of different kinds never compare.
                    (Some(x), Some(y)) => {
                        x.kind() == y.kind() && x.cmp(y) == Some(std::cmp::Ordering::Equal)
                    }
                    _ => false,
                };
                a.group == b.group && a.decided == b.decided && same_key
            }
            _ => false,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Ranked {
    At {
        rank: i64,
        size: i64,
    },
    /// The group's orderBy values do not compare: this error is every member's verdict.
    Mixed(String),
}

struct Entry {
    /// The object as far as anything after `store` reads it.
    obj: Stored,
    /// `selects_itself` of the whole object.
    selected: bool,
    /// `guard` of the whole object.
    guard: Option<&'static str>,
    /// None while the policy does not govern it (not selected, or match is false).
    placement: Option<Placement>,
    /// None while it is not in a ranked group.
    ranked: Option<Ranked>,
    /// As of the last time the reference index or the custom referrers changed.
    referrers: Vec<Referrer>,
    /// Some exactly when it is governed.
    result: Option<Arc<ObjectResult>>,
    /// When the clock may change its verdict: the next instant its age crosses one of keep's
    /// thresholds (`TimePlan::keep_thresholds`). None: it never will, or keep reads no clock.
    /// Some exactly when `IncrementalEvaluation::timers` holds it with this position.
    due: Option<Timestamp>,
}

/// A group's ranked members, and how many of their keys are of each kind: keys of two kinds do
/// not compare, which is every member's error.
#[derive(Default)]
struct Group {
    members: BTreeSet<Pos>,
    kinds: BTreeMap<&'static str, usize>,
    /// When keep reads neither rank nor groupSize: the standing every member was given last
    /// (`Ranked::Mixed`, or `Ranked::At` with no rank), so that a change that leaves it as it
    /// was touches only the members that joined.
    standing: Option<Ranked>,
}

/// An object as an evaluation keeps it between changes.
enum Stored {
    /// OCI artifacts, evaluated whole on every change.
    Whole(Json),
    /// A Kubernetes object: what identifies it is its position (namespace, name, uid); besides
    /// that, only what the expressions read, as compact JSON text, parsed again when they run.
    /// A parsed object costs a few hundred bytes a map; its text, tens.
    Parts(Packed),
}

/// A Kubernetes object's resourceVersion, creationTimestamp and the JSON text of the fields
/// the expressions read (`kept_fields`) but metadata's identity, one after another in one
/// allocation: three small allocations cost more than their text.
#[derive(Debug, PartialEq, Eq)]
struct Packed {
    text: Box<str>,
    /// Where resourceVersion and creationTimestamp end in `text`; the fields' text follows.
    ends: [u32; 2],
    /// Which of resourceVersion, creationTimestamp and the fields there are (bits 0, 1, 2).
    present: u8,
}

impl Packed {
    fn new(resource_version: Option<&str>, created: Option<&str>, fields: Option<&str>) -> Packed {
        let parts = [resource_version, created, fields];
        let mut text = String::new();
        let mut ends = [0u32; 2];
        let mut present = 0u8;
        for (i, part) in parts.iter().enumerate() {
            if let Some(p) = part {
                text.push_str(p);
                present |= 1 << i;
            }
            if i < 2 {
                // Object texts are far below 4 GiB (the API server's limit is about 3 MiB), and
                // a text that did not fit would only be cut short where it is split, which
                // `same` and `object` read as a changed object, never as an unchanged one.
                ends[i] = u32::try_from(text.len()).unwrap_or(u32::MAX);
            }
        }
        Packed {
            text: text.into_boxed_str(),
            ends,
            present,
        }
    }

    fn part(&self, i: usize) -> Option<&str> {
        if self.present & (1 << i) == 0 {
            return None;
        }
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        let end = if i < 2 {
            self.ends[i] as usize
        } else {
            self.text.len()
        };
        self.text.get(start..end)
    }

    fn resource_version(&self) -> Option<&str> {
        self.part(0)
    }

    fn creation_timestamp(&self) -> Option<&str> {
        self.part(1)
    }

    fn fields(&self) -> Option<&str> {
        self.part(2)
    }
}

impl Stored {
    fn of(kept: Option<&FieldTree>, mut obj: Json) -> Stored {
        let Some(kept) = kept else {
            return Stored::Whole(obj);
        };
        let take = |obj: &mut Json, field: &str| -> Option<Box<str>> {
            let meta = obj.get_mut("metadata")?.as_object_mut()?;
            match meta.remove(field)? {
                Json::String(s) => Some(s.into_boxed_str()),
                _ => None,
            }
        };
        let resource_version = take(&mut obj, "resourceVersion");
        let creation_timestamp = take(&mut obj, "creationTimestamp");
        kept.prune(&mut obj);
        if let Some(meta) = obj.get_mut("metadata").and_then(Json::as_object_mut) {
            for f in ["name", "namespace", "uid"] {
                meta.remove(f);
            }
            if meta.is_empty() {
                obj.as_object_mut().map(|m| m.remove("metadata"));
            }
        }
        let empty = obj.as_object().is_some_and(|m| m.is_empty());
        // Serializing a JSON value cannot fail: its keys are strings.
        let fields = (!empty).then(|| obj.to_string());
        Stored::Parts(Packed::new(
            resource_version.as_deref(),
            creation_timestamp.as_deref(),
            fields.as_deref(),
        ))
    }

    /// The object as the expressions and the engine read it: identity and the kept fields.
    fn object(&self, kind: &str, pos: &Pos) -> Json {
        let packed = match self {
            Stored::Whole(obj) => return obj.clone(),
            Stored::Parts(packed) => packed,
        };
        // The text was written from a JSON object just above, so it parses to one.
        let mut obj = packed
            .fields()
            .and_then(|t| serde_json::from_str::<Json>(t).ok())
            .filter(Json::is_object)
            .unwrap_or_else(|| Json::Object(Default::default()));
        let Some(top) = obj.as_object_mut() else {
            return obj;
        };
        top.entry("kind").or_insert_with(|| Json::from(kind));
        let meta = top
            .entry("metadata")
            .or_insert_with(|| Json::Object(Default::default()));
        if let Some(meta) = meta.as_object_mut() {
            let (namespace, name, id) = pos;
            if !namespace.is_empty() {
                meta.insert("namespace".into(), Json::from(&**namespace));
            }
            if !name.is_empty() {
                meta.insert("name".into(), Json::from(&**name));
            }
            if !id.starts_with("name:") {
                meta.insert("uid".into(), Json::from(&**id));
            }
            if let Some(v) = packed.resource_version() {
                meta.insert("resourceVersion".into(), Json::from(v));
            }
            if let Some(t) = packed.creation_timestamp() {
                meta.insert("creationTimestamp".into(), Json::from(t));
            }
        }
        obj
    }

    /// Whether two stored forms are of the same object version: by resourceVersion when both
    /// have one, as Kubernetes gives a changed object a new one; otherwise by what is kept.
    fn same(&self, other: &Stored) -> bool {
        match (self, other) {
            (Stored::Whole(a), Stored::Whole(b)) => unchanged(a, b),
            (Stored::Parts(a), Stored::Parts(b)) => {
                match (a.resource_version(), b.resource_version()) {
                    (Some(va), Some(vb)) if !va.is_empty() && !vb.is_empty() => va == vb,
                    _ => a == b,
                }
            }
            _ => false,
        }
    }
}

/// The dirty sets of one `apply`.
#[derive(Default)]
struct Pending {
    place: BTreeSet<Pos>,
    groups: BTreeSet<String>,
    /// Members that joined each group since it was last ranked.
    joined: HashMap<String, Vec<Pos>>,
    decide: BTreeSet<Pos>,
    decide_all: bool,
}

/// One policy's evaluation, kept up to date with `apply`. Bound to the policy (and its
/// generation) it was created for.
pub struct IncrementalEvaluation {
    view: PolicyView,
    kind: TargetKind,
    time: TimePlan,
    /// keep reads `rank` or `groupSize`: only then does a new rank or group size (in a group
    /// whose keys compare) change a verdict.
    keep_reads_rank: bool,
    now: Option<Timestamp>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
    /// Which custom referrers `custom` was computed from; None when that cannot be told.
    referrers_seen: Option<Vec<[String; 4]>>,
    custom: CustomRefs,
    entries: BTreeMap<Pos, Entry>,
    positions: HashMap<Arc<str>, Pos>,
    /// The namespaces (repositories) of the positions.
    namespaces: Interned,
    /// The groups of the placements.
    group_names: Interned,
    /// The ranked members of each group.
    groups: HashMap<String, Group>,
    summary: Counts,
    /// OCI: the last evaluation, made whole.
    whole: Option<Evaluation>,
    /// The cached placements, ranks and results may not match the objects (nothing evaluated
    /// yet, or the last call ran out of budget): the next call evaluates everything.
    stale: bool,
    /// What each object is kept with; None: whole.
    kept: Option<FieldTree>,
    /// Moves whenever a result or the summary may have changed: equal generations mean equal
    /// verdicts, so a caller holding a copy of them need not copy them again.
    generation: u64,
    /// Every entry's `due`, earliest first: when `now` moves, the entries it reached are taken
    /// from the front, in time proportional to their number and not to the entries'. A
    /// policy that reads no clock keeps it empty.
    timers: BTreeSet<(Timestamp, Pos)>,
}

impl IncrementalEvaluation {
    /// An evaluation of no objects yet; the first `apply` evaluates everything it is given.
    pub fn new(policy: &CompiledPolicy) -> IncrementalEvaluation {
        IncrementalEvaluation {
            view: policy.view.clone(),
            kind: policy.target,
            time: TimePlan::of(policy),
            keep_reads_rank: policy.keep.reads(crate::expr::VAR_RANK)
                || policy.keep.reads(crate::expr::VAR_GROUP_SIZE),
            now: None,
            namespace_labels: BTreeMap::new(),
            referrers_seen: None,
            custom: CustomRefs::default(),
            entries: BTreeMap::new(),
            positions: HashMap::new(),
            namespaces: Interned::default(),
            group_names: Interned::default(),
            groups: HashMap::new(),
            summary: Counts::default(),
            whole: None,
            stale: true,
            generation: 0,
            timers: BTreeSet::new(),
            kept: kept_fields(policy),
        }
    }

    /// See the field: equal between two calls exactly when no result changed in between
    /// (a change that cancels out may still move it).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Applies `changes` and brings every result up to date with `world`. `over_budget` is
    /// asked between expression evaluations, as `evaluate_within` does; when it gives up, the
    /// changes are stored and the next call evaluates everything.
    pub fn apply(
        &mut self,
        policy: &CompiledPolicy,
        world: &World<'_>,
        changes: Changes<impl IntoIterator<Item = ObjectChange>>,
        over_budget: &dyn Fn() -> bool,
    ) -> Result<Work, IncrementalError> {
        if policy.view != self.view {
            return Err(IncrementalError::PolicyChanged {
                built: format!("{} generation {:?}", self.view.key(), self.view.generation),
            });
        }
        let mut pending = Pending::default();
        for change in changes.objects {
            self.store(policy, change, &mut pending);
        }
        let was_stale = std::mem::replace(&mut self.stale, true);
        let total = self.entries.len();
        let stop = |evaluated: usize| {
            if over_budget() {
                Err(OverBudget { evaluated, total })
            } else {
                Ok(())
            }
        };

        if self.kind == TargetKind::OciArtifact {
            let eval = evaluate_within(policy, &self.snapshot(world), over_budget)?;
            self.whole = Some(eval);
            self.generation += 1;
            self.stale = false;
            return Ok(Work {
                placed: total,
                ranked: 0,
                decided: total,
                whole: true,
            });
        }

        let now_moved = self.now != Some(world.now);
        // Crossings are found going forwards: a clock that went back decides everything again.
        let went_back = self.now.is_some_and(|before| world.now < before);
        self.now = Some(world.now);
        let now = to_chrono(world.now);
        if was_stale {
            self.forget_derived(&mut pending);
        }
        if world.namespace_labels != &self.namespace_labels {
            for (pos, e) in &self.entries {
                if e.selected
                    && selects_namespace(policy, &pos.0, &self.namespace_labels)
                        != selects_namespace(policy, &pos.0, world.namespace_labels)
                {
                    pending.place.insert(pos.clone());
                }
            }
            self.namespace_labels = world.namespace_labels.clone();
        }
        if now_moved && self.time.placement {
            pending.place.extend(self.entries.keys().cloned());
        }
        if now_moved && self.time.keep {
            if self.time.keep_thresholds.is_some() && !went_back {
                self.due_now(world.now, &mut pending);
            } else {
                pending.decide_all = true;
            }
        }
        pending.decide_all |= was_stale;

        let mut refs_moved = changes.refs_changed || was_stale;
        let seen = referrers_seen(policy, world.custom_referrers);
        if was_stale
            || seen.is_none()
            || seen != self.referrers_seen
            || (now_moved && self.time.referrers)
        {
            let custom = custom_references(policy, world.custom_referrers, now, &|| stop(0))?;
            // Which failed referrers exist decides verdicts of objects whose referrers did
            // not change (`CustomRefs::failure_for`).
            pending.decide_all |= custom.failures != self.custom.failures;
            self.custom = custom;
            self.referrers_seen = seen;
            refs_moved = true;
        }

        let mut work = Work {
            whole: was_stale,
            ..Work::default()
        };
        for pos in std::mem::take(&mut pending.place) {
            stop(work.placed)?;
            work.placed += 1;
            self.place(policy, world, now, pos, &mut pending);
        }

        for group in std::mem::take(&mut pending.groups) {
            work.ranked += 1;
            self.rank(&group, &mut pending);
        }

        if refs_moved {
            for (pos, e) in self.entries.iter_mut() {
                if e.placement.is_none() {
                    continue;
                }
                let found = referrers_of(
                    self.kind,
                    &e.obj.object(self.kind.as_str(), pos),
                    world.refs,
                    &self.custom,
                );
                if found != e.referrers {
                    e.referrers = found;
                    pending.decide.insert(pos.clone());
                }
            }
        }

        let targets: Vec<Pos> = if pending.decide_all {
            self.entries
                .iter()
                .filter(|(_, e)| e.placement.is_some())
                .map(|(pos, _)| pos.clone())
                .collect()
        } else {
            pending.decide.into_iter().collect()
        };
        for pos in targets {
            stop(work.placed + work.decided)?;
            work.decided += 1;
            self.decide(policy, world, now, &pos);
        }
        self.stale = false;
        Ok(work)
    }

    /// Every governed object's result, in the order `evaluate` gives them for `objects()`.
    pub fn results(&self) -> Box<dyn Iterator<Item = &ObjectResult> + '_> {
        match &self.whole {
            Some(eval) => Box::new(eval.results.iter().map(|r| r.as_ref())),
            None => Box::new(self.entries.values().filter_map(|e| e.result.as_deref())),
        }
    }

    pub fn summary(&self) -> Counts {
        match &self.whole {
            Some(eval) => eval.summary,
            None => self.summary,
        }
    }

    /// The evaluation as `evaluate` returns it. Copies every result: the controller may prefer
    /// `results` and `summary`.
    pub fn evaluation(&self) -> Evaluation {
        Evaluation {
            summary: self.summary(),
            results: match &self.whole {
                Some(eval) => eval.results.clone(),
                None => self
                    .entries
                    .values()
                    .filter_map(|e| e.result.clone())
                    .collect(),
            },
        }
    }

    /// The earliest instant at which the clock alone may change a verdict (an object's age
    /// crossing one of keep's thresholds); None when it never will or keep reads the clock in a
    /// way that has no such instants.
    pub fn next_due(&self) -> Option<Timestamp> {
        if self.time.keep_thresholds.is_some() {
            self.timers.first().map(|(at, _)| *at)
        } else {
            None
        }
    }

    /// The timers are the entries' `due`s, one each, and only governed entries have one.
    #[cfg(test)]
    fn timers_consistent(&self) -> Result<(), String> {
        let mut due = 0;
        for (pos, e) in &self.entries {
            if let Some(at) = e.due {
                due += 1;
                if !self.timers.contains(&(at, pos.clone())) {
                    return Err(format!("{pos:?} is due at {at} but has no timer"));
                }
                if e.placement.is_none() {
                    return Err(format!("{pos:?} is not governed but has a timer"));
                }
            }
        }
        if due != self.timers.len() {
            return Err(format!(
                "{} timers for {due} entries that are due",
                self.timers.len()
            ));
        }
        Ok(())
    }

    /// How many objects are stored, governed or not.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The snapshot a full evaluation is given: the OCI artifacts stored, whole, in the order
    /// of the results. Kubernetes objects are not kept whole, so none are in it: a caller
    /// comparing with a full evaluation keeps its own copy of them.
    pub fn snapshot<'a>(&'a self, world: &World<'a>) -> Snapshot<'a> {
        Snapshot {
            objects: self
                .entries
                .values()
                .filter_map(|e| match &e.obj {
                    Stored::Whole(obj) => Some(obj),
                    Stored::Parts(_) => None,
                })
                .collect(),
            refs: world.refs,
            custom_referrers: world.custom_referrers.to_vec(),
            namespace_labels: world.namespace_labels,
            now: world.now,
        }
    }

    fn store(&mut self, policy: &CompiledPolicy, change: ObjectChange, pending: &mut Pending) {
        match change {
            ObjectChange::Upsert(obj) => {
                let id = identity(&obj);
                let selected = selects_itself(policy, &obj);
                let guarded = guard(self.kind, &obj);
                // The uid's text once, shared by the index and the position.
                let id: Arc<str> = match self.positions.get_key_value(id.as_str()) {
                    Some((known, _)) => known.clone(),
                    None => Arc::from(id),
                };
                let pos = position(&obj, id.clone(), &mut self.namespaces);
                let obj = Stored::of(self.kept.as_ref(), obj);
                if let Some(old) = self.positions.get(&id).cloned() {
                    if old == pos
                        && self.entries.get(&old).is_some_and(|e| {
                            e.selected == selected && e.guard == guarded && e.obj.same(&obj)
                        })
                    {
                        return;
                    }
                    self.forget(&old, pending);
                }
                self.positions.insert(id, pos.clone());
                self.entries.insert(
                    pos.clone(),
                    Entry {
                        obj,
                        selected,
                        guard: guarded,
                        placement: None,
                        ranked: None,
                        referrers: Vec::new(),
                        result: None,
                        due: None,
                    },
                );
                pending.place.insert(pos);
            }
            ObjectChange::Delete(id) => {
                if let Some(pos) = self.positions.remove(id.as_str()) {
                    self.forget(&pos, pending);
                }
            }
        }
    }

    /// Queues for deciding the objects whose age crossed one of keep's thresholds by `now`;
    /// `decide` sets their next crossings.
    fn due_now(&mut self, now: Timestamp, pending: &mut Pending) {
        while self.timers.first().is_some_and(|(at, _)| *at <= now) {
            let Some((_, pos)) = self.timers.pop_first() else {
                break;
            };
            if let Some(e) = self.entries.get_mut(&pos) {
                e.due = None;
            }
            pending.decide.insert(pos);
        }
    }

    /// Sets when the clock may next change an entry's verdict, keeping `timers` in step.
    fn set_due(&mut self, pos: &Pos, due: Option<Timestamp>) {
        let Some(e) = self.entries.get_mut(pos) else {
            return;
        };
        if e.due == due {
            return;
        }
        if let Some(old) = e.due.take() {
            self.timers.remove(&(old, pos.clone()));
        }
        if let Some(at) = due {
            self.timers.insert((at, pos.clone()));
        }
        e.due = due;
    }

    /// Removes an object and what it contributed to its group and the summary.
    fn forget(&mut self, pos: &Pos, pending: &mut Pending) {
        let Some(mut e) = self.entries.remove(pos) else {
            return;
        };
        if let Some(at) = e.due {
            self.timers.remove(&(at, pos.clone()));
        }
        if let Some(p) = &e.placement
            && let (Some(group), Some(key)) = (p.ranked_in(), &p.key)
        {
            self.leave(group, key.kind(), pos, pending);
        }
        set_result(&mut self.summary, &mut self.generation, &mut e, None);
        pending.place.remove(pos);
        pending.decide.remove(pos);
    }

    fn leave(&mut self, group: &str, kind: &'static str, pos: &Pos, pending: &mut Pending) {
        if let Some(g) = self.groups.get_mut(group)
            && g.members.remove(pos)
            && let Some(n) = g.kinds.get_mut(kind)
        {
            *n -= 1;
            if *n == 0 {
                g.kinds.remove(kind);
            }
        }
        pending.groups.insert(group.to_string());
    }

    /// Drops every placement, rank and result: all objects are placed and decided again.
    fn forget_derived(&mut self, pending: &mut Pending) {
        for (pos, e) in self.entries.iter_mut() {
            e.placement = None;
            e.ranked = None;
            e.referrers.clear();
            e.result = None;
            e.due = None;
            pending.place.insert(pos.clone());
        }
        self.timers.clear();
        self.generation += 1;
        self.groups.clear();
        self.summary = Counts::default();
    }

    /// select, match, groupBy and orderBy for one object; when its placement changed, its old
    /// and new groups are ranked again and it is decided again.
    fn place(
        &mut self,
        policy: &CompiledPolicy,
        world: &World<'_>,
        now: chrono::DateTime<chrono::FixedOffset>,
        pos: Pos,
        pending: &mut Pending,
    ) {
        let Some(e) = self.entries.get(&pos) else {
            return;
        };
        let placement = if e.selected && selects_namespace(policy, &pos.0, world.namespace_labels) {
            let obj = e.obj.object(self.kind.as_str(), &pos);
            let mut row = Row::new(policy, &obj, world.now);
            place(policy, &mut row, now).then(|| Placement {
                group: self.group_names.get(&row.group),
                key: row.key,
                decided: row.decided.map(Box::new),
            })
        } else {
            None
        };
        if Placement::same(e.placement.as_ref(), placement.as_ref()) {
            return;
        }
        let old = e.placement.as_ref().and_then(|p| {
            let key = p.key.as_ref()?;
            Some((p.ranked_in()?.to_string(), key.kind()))
        });
        if let Some((group, kind)) = old {
            self.leave(&group, kind, &pos, pending);
        }
        if let Some(p) = &placement
            && let (Some(group), Some(key)) = (p.ranked_in(), &p.key)
        {
            let g = self.groups.entry(group.to_string()).or_default();
            if g.members.insert(pos.clone()) {
                *g.kinds.entry(key.kind()).or_default() += 1;
            }
            pending
                .joined
                .entry(group.to_string())
                .or_default()
                .push(pos.clone());
            pending.groups.insert(group.to_string());
        }
        let Some(e) = self.entries.get_mut(&pos) else {
            return;
        };
        e.ranked = None;
        e.placement = placement;
        if e.placement.is_some() {
            pending.decide.insert(pos);
        } else {
            set_result(&mut self.summary, &mut self.generation, e, None);
            pending.decide.remove(&pos);
            // Not governed: nothing of it to decide when its age moves on.
            self.set_due(&pos, None);
        }
    }

    /// Ranks one group again; members whose rank or group size changed are decided again, if
    /// keep reads either (or the group's keys stopped or started comparing).
    fn rank(&mut self, group: &str, pending: &mut Pending) {
        let joined = pending.joined.remove(group).unwrap_or_default();
        let Some(g) = self.groups.get_mut(group) else {
            return;
        };
        if g.members.is_empty() {
            self.groups.remove(group);
            return;
        }
        if !self.keep_reads_rank {
            // Nothing reads the order: only whether the keys compare matters, which the
            // counts of key kinds tell without sorting.
            let want = if g.kinds.len() > 1 {
                Ranked::Mixed(super::mixed_keys_message(group, g.kinds.keys().copied()))
            } else {
                Ranked::At { rank: 0, size: 0 }
            };
            let targets: Vec<Pos> = if g.standing.as_ref() == Some(&want) {
                joined
            } else {
                g.members.iter().cloned().collect()
            };
            g.standing = Some(want.clone());
            for pos in targets {
                if let Some(e) = self.entries.get_mut(&pos)
                    && e.ranked.as_ref() != Some(&want)
                {
                    let seen = !matches!(
                        (&e.ranked, &want),
                        (Some(Ranked::At { .. }), Ranked::At { .. })
                    );
                    e.ranked = Some(want.clone());
                    if seen {
                        pending.decide.insert(pos);
                    }
                }
            }
            return;
        }
        let members = &g.members;
        let entries = &self.entries;
        // In position order, which is the order a full evaluation meets them in: ties of key
        // and name keep it.
        // Each member's key and name looked up once, not at every comparison of the sort.
        let mut order: Vec<(&Pos, Option<&SortKey>, &str)> = members
            .iter()
            .map(|p| {
                let e = entries.get(p);
                let key = e
                    .and_then(|e| e.placement.as_ref())
                    .and_then(|pl| pl.key.as_ref());
                (p, key, e.map(|e| sort_name_of(&e.obj, p)).unwrap_or(""))
            })
            .collect();
        let ranked = rank_group(group, &mut order, |m| m.1, |m| m.2);
        let size = order.len() as i64;
        // Only the members whose standing moved are written back.
        let standings: Vec<(Pos, Ranked)> = order
            .into_iter()
            .enumerate()
            .filter_map(|(rank, (pos, _, _))| {
                let r = match &ranked {
                    Ok(()) => Ranked::At {
                        rank: rank as i64,
                        size,
                    },
                    Err(msg) => Ranked::Mixed(msg.clone()),
                };
                let moved = entries
                    .get(pos)
                    .is_some_and(|e| e.ranked.as_ref() != Some(&r));
                moved.then(|| (pos.clone(), r))
            })
            .collect();
        for (pos, r) in standings {
            if let Some(e) = self.entries.get_mut(&pos)
                && e.ranked.as_ref() != Some(&r)
            {
                // Guards and results do not read the standing; keep sees it only through the
                // two variables. A group of mixed keys is every member's error, though.
                let seen = self.keep_reads_rank
                    || !matches!(
                        (&e.ranked, &r),
                        (Some(Ranked::At { .. }), Ranked::At { .. })
                    );
                e.ranked = Some(r);
                if seen {
                    pending.decide.insert(pos);
                }
            }
        }
    }

    /// Guards and keep for one governed object, through the same steps as `evaluate`.
    fn decide(
        &mut self,
        policy: &CompiledPolicy,
        world: &World<'_>,
        now: chrono::DateTime<chrono::FixedOffset>,
        pos: &Pos,
    ) {
        let Some(e) = self.entries.get(pos) else {
            return;
        };
        let Some(placement) = &e.placement else {
            return;
        };
        let obj = e.obj.object(self.kind.as_str(), pos);
        let mut row = Row::new(policy, &obj, world.now);
        row.guarded = e.guard;
        row.group = placement.group.to_string();
        row.decided = placement.decided.as_deref().cloned();
        match &e.ranked {
            Some(Ranked::At { rank, size }) => {
                row.rank = *rank;
                row.group_size = *size;
            }
            Some(Ranked::Mixed(msg)) => {
                row.decided
                    .get_or_insert_with(|| (Basis::Error, msg.clone()));
            }
            None => {}
        }
        row.referrers = referrers_of(self.kind, &obj, world.refs, &self.custom);
        let mut result = row.result(self.kind, decide(policy, &self.custom, now, &row, None));
        share_position(&mut result.id, pos);
        let referrers = std::mem::take(&mut row.referrers);
        let due = match (&self.time.keep_thresholds, row.created) {
            (Some(thresholds), Some(created)) => next_crossing(created, world.now, thresholds),
            _ => None,
        };
        drop(row);
        self.set_due(pos, due);
        if let Some(e) = self.entries.get_mut(pos) {
            e.referrers = referrers;
            set_result(&mut self.summary, &mut self.generation, e, Some(result));
        }
    }
}

/// Makes a result's identity share the text of its position, which is kept as long as the
/// result: one copy of each namespace, name and uid instead of two.
fn share_position(id: &mut super::ObjectId, pos: &Pos) {
    if let super::ObjectId::Kube {
        namespace,
        name,
        uid,
        ..
    } = id
    {
        for (mine, shared) in [(namespace, &pos.0), (name, &pos.1), (uid, &pos.2)] {
            if mine == shared {
                *mine = shared.clone();
            }
        }
    }
}

/// The first instant after `now` at which the age of an object created at `created` reaches
/// one of `thresholds`, the ages at which keep's comparisons of `age` change. Ages are
/// nanosecond-exact and never negative, so none of them changes in between.
fn next_crossing(
    created: Timestamp,
    now: Timestamp,
    thresholds: &[jiff::SignedDuration],
) -> Option<Timestamp> {
    thresholds
        .iter()
        .filter_map(|d| created.checked_add(*d).ok())
        .filter(|at| *at > now)
        .min()
}

/// The name an object is ranked by among equal keys: its name, or an artifact's digest, which
/// is what its position holds second.
fn sort_name_of<'a>(obj: &'a Stored, pos: &'a Pos) -> &'a str {
    match obj {
        Stored::Whole(obj) => sort_name(obj),
        Stored::Parts(_) => &pos.1,
    }
}

/// What an object is kept with between changes: what identifies it, its creation time, and the
/// fields the expressions read; None (whole) for OCI artifacts, which are evaluated whole.
/// Selection and guards read more, but are worked out in `store` from the whole object.
fn kept_fields(policy: &CompiledPolicy) -> Option<FieldTree> {
    if policy.target == crate::api::TargetKind::OciArtifact {
        return None;
    }
    let mut tree = FieldTree::of(&[
        &["apiVersion"],
        &["kind"],
        &["metadata", "name"],
        &["metadata", "namespace"],
        &["metadata", "uid"],
        &["metadata", "resourceVersion"],
        &["metadata", "creationTimestamp"],
    ]);
    tree.merge(&policy.fields);
    Some(tree)
}

/// Kubernetes gives a changed object a new resourceVersion; documents without one are compared
/// whole (as kept).
fn unchanged(old: &Json, new: &Json) -> bool {
    match (resource_version(old), resource_version(new)) {
        (Some(a), Some(b)) => a == b,
        _ => old == new,
    }
}

fn resource_version(obj: &Json) -> Option<&str> {
    str_at(obj, "/metadata/resourceVersion").filter(|v| !v.is_empty())
}

/// The custom referrers the policy reads, each by kind, identity and resourceVersion, in the
/// order given (which decides the order of failures); None when one has no resourceVersion,
/// so that a change to it could not be told.
fn referrers_seen(policy: &CompiledPolicy, referrers: &[&Json]) -> Option<Vec<[String; 4]>> {
    let mut seen = Vec::new();
    for &obj in referrers {
        let (Some(api_version), Some(kind)) = (str_at(obj, "/apiVersion"), str_at(obj, "/kind"))
        else {
            continue;
        };
        if !policy
            .referrer_sources
            .iter()
            .any(|(a, k, _)| a == api_version && k == kind)
        {
            continue;
        }
        let rv = resource_version(obj)?;
        seen.push([
            api_version.to_string(),
            kind.to_string(),
            identity(obj),
            rv.to_string(),
        ]);
    }
    Some(seen)
}

fn set_result(
    summary: &mut Counts,
    generation: &mut u64,
    e: &mut Entry,
    result: Option<ObjectResult>,
) {
    if e.result.as_deref() == result.as_ref() {
        return;
    }
    *generation += 1;
    let result = result.map(Arc::new);
    let mut count = |r: &ObjectResult, by: i64| {
        summary.governed += by;
        match r.verdict {
            Verdict::Keep => summary.kept += by,
            Verdict::Delete => summary.candidates += by,
            Verdict::Error => summary.errors += by,
        }
    };
    if let Some(old) = &e.result {
        count(old, -1);
    }
    if let Some(new) = &result {
        count(new, 1);
    }
    e.result = result;
}

#[cfg(test)]
mod tests;
