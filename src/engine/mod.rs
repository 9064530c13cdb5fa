//! The policy pipeline as pure functions over a snapshot:
//! select → match → group → order → rank → referenced-by → keep → guards → verdict.
//!
//! No I/O and no clock: the caller passes the objects and `now`.

pub mod bytes;
pub mod incremental;
mod select;

use std::cmp::Ordering;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use cel::Value;
use cel::common::value::Val;
use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value as Json;
use thiserror::Error;

use crate::api::{KEEP_LABEL, PolicyView, TargetKind};
use crate::expr::{self, CompileError, Compiled, Field, FieldTree, Semver, Vars};
use crate::refs::{RefIndex, Referrer, normalize_registry};
use crate::schedule::{Schedule, ScheduleError};

pub use select::{LabelSelectorError, matches_field_selector, matches_label_selector};

/// Why a policy cannot be used. Each maps to a Ready=False reason.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PolicyError {
    #[error(transparent)]
    InvalidExpression(#[from] CompileError),
    #[error(transparent)]
    InvalidSchedule(#[from] ScheduleError),
    #[error("{0}")]
    InvalidTarget(String),
}

/// A policy with every expression compiled once for its generation.
#[derive(Debug)]
pub struct CompiledPolicy {
    pub view: PolicyView,
    pub target: TargetKind,
    r#match: Option<Compiled>,
    group_by: Option<Compiled>,
    order_by: Option<Compiled>,
    keep: Compiled,
    /// Custom referrers: (apiVersion, kind, refs)
    pub referrer_sources: Vec<(String, String, Compiled)>,
    /// The object fields any of match, groupBy, orderBy and keep reads.
    fields: FieldTree,
    pub schedule: Schedule,
    pub grace_period: Option<std::time::Duration>,
    /// For OCI: the registry host and the repository patterns.
    pub registry_host: Option<String>,
    /// keep reads artifactBytes or groupBytes: verdicts then say what the bytes were.
    keep_reads_bytes: bool,
}

fn compile_opt(
    field: Field,
    src: &Option<String>,
    keep_extra: &[&str],
) -> Result<Option<Compiled>, CompileError> {
    match src.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(s) => Compiled::compile_with(field, s, keep_extra).map(Some),
    }
}

impl CompiledPolicy {
    /// The fields of a target object that evaluating this policy reads: those its expressions
    /// read, and those the engine itself reads (the kind, `type` for field selectors, all of
    /// `metadata` for selectors, identity and guards, the type and status of a Job's
    /// conditions and its succeeded count for the finished-Job guard and field selectors). Objects pruned to these evaluate exactly as whole ones (the
    /// fuzz suite checks it); the controller parses its cached objects this way, so that a
    /// policy reading labels does not hold every Job's pod template in memory.
    pub fn retained_fields(&self) -> FieldTree {
        // Of status, the engine reads only the type and status of a Job's conditions
        // (`job_finished`) and its succeeded count (the field selector `status.successful`);
        // the rest of it (start and completion times, other counts, each condition's reason,
        // message and times) is most of a finished Job's cached text.
        let mut tree = FieldTree::of(&[
            &["apiVersion"],
            &["kind"],
            &["type"],
            &["metadata"],
            &["status", "succeeded"],
        ]);
        tree.insert_each(
            &["status".to_string(), "conditions".to_string()],
            &FieldTree::of(&[&["type"], &["status"]]),
        );
        if self.target == TargetKind::OciArtifact {
            // What the engine itself reads of an artifact: identity and references, guards,
            // index children and referrers, and the descriptors its bytes are counted from.
            tree.merge(&FieldTree::of(&[
                &["registry"],
                &["repository"],
                &["digest"],
                &["tags"],
                &["created"],
                &["annotations"],
                &["subject"],
                &["manifests"],
                &["size"],
                &["config"],
                &["layers"],
            ]));
        }
        tree.merge(&self.fields);
        tree
    }
}

/// Parses a Go duration such as `1h30m` or `90s` exactly as Go's `time.ParseDuration` does,
/// for settings that are durations of time to wait: not negative, at most ten years.
pub fn parse_go_duration(s: &str) -> Result<std::time::Duration, String> {
    let nanos = crate::gotime::parse_duration(s).map_err(|e| e.to_string())?;
    let nanos = u64::try_from(nanos)
        .map_err(|_| format!("invalid duration '{s}': must not be negative"))?;
    let d = std::time::Duration::from_nanos(nanos);
    if d > std::time::Duration::from_secs(10 * 365 * 86400) {
        return Err(format!("invalid duration '{s}': must be at most ten years"));
    }
    Ok(d)
}

impl CompiledPolicy {
    pub fn compile(view: PolicyView) -> Result<CompiledPolicy, PolicyError> {
        let spec = &view.spec;
        let target = spec.target.kind;
        let invalid = |m: String| PolicyError::InvalidTarget(m);
        match target {
            TargetKind::OciArtifact if spec.target.registry.is_none() => {
                return Err(invalid(
                    "spec.target.registry is required for kind OCIArtifact".into(),
                ));
            }
            TargetKind::Job | TargetKind::Secret if spec.target.registry.is_some() => {
                return Err(invalid(format!(
                    "spec.target.registry is only allowed for kind OCIArtifact, not {}",
                    target.as_str()
                )));
            }
            _ => {}
        }
        if !view.is_cluster() && spec.target.namespace_selector.is_some() {
            return Err(invalid(
                "spec.target.namespaceSelector is only allowed on a ClusterRetentionPolicy".into(),
            ));
        }
        if let Some(sel) = &spec.target.selector {
            select::validate_label_selector(sel)
                .map_err(|e| invalid(format!("spec.target.selector: {e}")))?;
        }
        if let Some(sel) = &spec.target.namespace_selector {
            select::validate_label_selector(sel)
                .map_err(|e| invalid(format!("spec.target.namespaceSelector: {e}")))?;
        }
        if let Some(fs) = &spec.target.field_selector {
            select::validate_field_selector(spec.target.kind.as_str(), fs)
                .map_err(|e| invalid(format!("spec.target.fieldSelector: {e}")))?;
        }
        let registry_host = match &spec.target.registry {
            None => None,
            Some(r) => Some(
                registry_host(&r.url)
                    .map_err(|e| invalid(format!("spec.target.registry.url: {e}")))?,
            ),
        };
        let keep_extra = match target {
            TargetKind::OciArtifact => expr::OCI_KEEP_VARIABLES,
            TargetKind::Job | TargetKind::Secret => &[],
        };
        let r#match = compile_opt(Field::Match, &spec.r#match, keep_extra)?;
        let group_by = compile_opt(Field::GroupBy, &spec.group_by, keep_extra)?;
        let order_by = compile_opt(Field::OrderBy, &spec.order_by, keep_extra)?;
        let keep = Compiled::compile_with(Field::Keep, spec.keep.trim(), keep_extra)?;
        let keep_reads_bytes = keep_extra.iter().any(|v| keep.reads(v));
        let referrer_sources = spec
            .referenced_by
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Compiled::compile(Field::Refs(i), &r.refs)
                    .map(|c| (r.api_version.clone(), r.kind.clone(), c))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut fields = FieldTree::default();
        for c in [&r#match, &group_by, &order_by].into_iter().flatten() {
            fields.merge(&c.fields);
        }
        fields.merge(&keep.fields);
        let schedule = Schedule::parse(&spec.schedule, spec.time_zone.as_deref())?;
        let grace_period = spec
            .deletion
            .as_ref()
            .and_then(|d| d.grace_period.as_deref())
            .map(parse_go_duration)
            .transpose()
            .map_err(|e| invalid(format!("spec.deletion.gracePeriod: {e}")))?;
        if let Some(d) = &spec.deletion {
            if d.max_per_sweep.is_some_and(|n| n < 1) {
                return Err(invalid(
                    "spec.deletion.maxPerSweep must be at least 1".into(),
                ));
            }
            if d.abort_above_percent
                .is_some_and(|p| !(0..=100).contains(&p))
            {
                return Err(invalid(
                    "spec.deletion.abortAbovePercent must be within 0..100".into(),
                ));
            }
        }
        Ok(CompiledPolicy {
            view,
            target,
            r#match,
            group_by,
            order_by,
            keep,
            referrer_sources,
            fields,
            schedule,
            grace_period,
            registry_host,
            keep_reads_bytes,
        })
    }
}

/// `host[:port]` of a registry URL.
pub fn registry_host(url: &str) -> Result<String, String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("'{url}' must start with https:// or http://"))?;
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', ' ', '@']) {
        return Err(format!(
            "'{url}' must be a scheme and a host, such as https://registry.example.com"
        ));
    }
    Ok(normalize_registry(host))
}

/// What the pipeline decided for one object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Keep,
    Delete,
    Error,
}

/// What decided a verdict. `reason` says it for people; code that acts on a verdict (a sweep
/// ordering referrers after their subjects, `explain-verdict` naming the term or the guard)
/// reads this instead of parsing the reason.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Basis {
    /// A guard kept the object whatever the expressions say.
    Guard,
    /// This top-level term of `keep` held.
    Term(String),
    /// No term of `keep` held.
    NoTermHeld,
    /// An OCI artifact with a subject (a signature, an SBOM), deleted because its subject is.
    FollowsSubject,
    /// An expression, the ranking or a reference could not be evaluated.
    Error,
}

impl Basis {
    pub fn verdict(&self) -> Verdict {
        match self {
            Basis::Guard | Basis::Term(_) => Verdict::Keep,
            Basis::NoTermHeld | Basis::FollowsSubject => Verdict::Delete,
            Basis::Error => Verdict::Error,
        }
    }
}

/// Which object a result is about.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum ObjectId {
    /// Shared text: an incremental evaluation holds the same namespace, name and uid in its
    /// positions, and a result is kept for every governed object.
    #[serde(rename_all = "camelCase")]
    Kube {
        namespace: Arc<str>,
        name: Arc<str>,
        #[serde(skip)]
        uid: Arc<str>,
        #[serde(skip)]
        resource_version: Arc<str>,
    },
    Oci {
        repository: String,
        digest: String,
        tags: Vec<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ObjectResult {
    pub kind: &'static str,
    #[serde(flatten)]
    pub id: ObjectId,
    pub verdict: Verdict,
    pub reason: String,
    /// Not in `check`/`plan` output: `reason` says the same there.
    #[serde(skip)]
    pub basis: Basis,
    #[serde(skip)]
    pub created: Option<Timestamp>,
    #[serde(skip)]
    pub referrers: Vec<Referrer>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub governed: i64,
    pub kept: i64,
    pub candidates: i64,
    pub errors: i64,
    /// OCI only: the unique blobs (manifests, configs, layers) the selected repositories hold,
    /// summed over repositories.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// OCI only: of those, the bytes deleting every candidate would leave unreferenced.
    #[serde(rename = "bytesFreed", skip_serializing_if = "Option::is_none")]
    pub bytes_freed: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Evaluation {
    pub summary: Counts,
    /// Shared with whoever else holds them (an incremental evaluation's state): copying an
    /// evaluation copies pointers, not results.
    pub results: Vec<Arc<ObjectResult>>,
}

impl Evaluation {
    pub fn candidates(&self) -> impl Iterator<Item = &ObjectResult> {
        self.results
            .iter()
            .map(|r| r.as_ref())
            .filter(|r| r.verdict == Verdict::Delete)
    }
}

/// What the world looked like at `now`.
pub struct Snapshot<'a> {
    /// Objects of the policy's target kind (Secrets without data; OCI artifacts as the
    /// contract's documents).
    pub objects: Vec<&'a Json>,
    /// Built-in references of every namespace.
    pub refs: &'a RefIndex,
    /// Objects of the kinds the policy's custom `referencedBy` names.
    pub custom_referrers: Vec<&'a Json>,
    /// Namespace labels, for a ClusterRetentionPolicy's namespaceSelector.
    pub namespace_labels: &'a BTreeMap<String, BTreeMap<String, String>>,
    pub now: Timestamp,
}

/// A sort key from orderBy; values of different kinds never compare. Kept per object between
/// changes, so kept small: 24 bytes, with strings and semvers boxed.
#[derive(Clone, Debug)]
enum SortKey {
    Int(i64),
    UInt(u64),
    Double(f64),
    Str(Box<str>),
    /// Seconds since the epoch (floored) and the nanoseconds after them: every timestamp CEL
    /// can hold, years 1 to 9999, which nanoseconds in an i64 cannot.
    Time(i64, u32),
    Duration(i64),
    Semver(Box<Semver>),
    /// Unknown creation time: reads as newest, like age 0.
    Newest,
}

impl SortKey {
    fn from_value(v: Value) -> Result<SortKey, String> {
        Ok(match v {
            Value::Int(i) => SortKey::Int(i),
            Value::UInt(u) => SortKey::UInt(u),
            Value::Float(f) if !f.is_nan() => SortKey::Double(f),
            Value::String(s) => SortKey::Str(s.as_str().into()),
            Value::Timestamp(t) => SortKey::Time(t.timestamp(), t.timestamp_subsec_nanos()),
            Value::Duration(d) => SortKey::Duration(d.num_nanoseconds().unwrap_or(i64::MAX)),
            Value::Opaque(o) => match o.downcast_ref::<Semver>() {
                Some(s) => SortKey::Semver(Box::new(s.clone())),
                None => return Err("spec.orderBy: must evaluate to timestamp, int, double, string or semver, got opaque".into()),
            },
            other => {
                return Err(format!(
                    "spec.orderBy: must evaluate to timestamp, int, double, string or semver, got {}",
                    expr::type_name(&other)
                ));
            }
        })
    }

    fn kind(&self) -> &'static str {
        match self {
            SortKey::Int(_) => "int",
            SortKey::UInt(_) => "uint",
            SortKey::Double(_) => "double",
            SortKey::Str(_) => "string",
            SortKey::Time(..) | SortKey::Newest => "timestamp",
            SortKey::Duration(_) => "duration",
            SortKey::Semver(_) => "semver",
        }
    }

    fn cmp(&self, other: &SortKey) -> Option<Ordering> {
        use SortKey::*;
        Some(match (self, other) {
            (Newest, Newest) => Ordering::Equal,
            (Newest, Time(..)) => Ordering::Greater,
            (Time(..), Newest) => Ordering::Less,
            (Int(a), Int(b)) => a.cmp(b),
            (UInt(a), UInt(b)) => a.cmp(b),
            (Double(a), Double(b)) => a.partial_cmp(b)?,
            (Str(a), Str(b)) => a.cmp(b),
            (Time(a, an), Time(b, bn)) => (a, an).cmp(&(b, bn)),
            (Duration(a), Duration(b)) => a.cmp(b),
            (Semver(a), Semver(b)) => a.cmp_precedence(b),
            _ => return None,
        })
    }
}

fn str_at<'a>(obj: &'a Json, pointer: &str) -> Option<&'a str> {
    crate::json::at(obj, pointer).and_then(Json::as_str)
}

fn parse_time(s: Option<&str>) -> Option<Timestamp> {
    s.and_then(|s| s.parse::<Timestamp>().ok())
}

fn base_vars<'a>(
    object: &'a (dyn Val + 'a),
    now: chrono::DateTime<chrono::FixedOffset>,
    age: chrono::Duration,
) -> Vars<'a> {
    Vars {
        object,
        now,
        age,
        group: None,
        rank: None,
        group_size: None,
        referenced_by: None,
    }
}

fn to_chrono(t: Timestamp) -> chrono::DateTime<chrono::FixedOffset> {
    chrono::DateTime::from_timestamp(t.as_second(), t.subsec_nanosecond().max(0) as u32)
        .unwrap_or_default()
        .fixed_offset()
}

/// A guard that keeps an object whatever the expressions say, if one applies.
pub fn guard(kind: TargetKind, obj: &Json) -> Option<&'static str> {
    if crate::json::at(obj, "/metadata/deletionTimestamp").is_some_and(|v| !v.is_null()) {
        return Some("guard: already being deleted");
    }
    let meta = |field: &str| {
        obj.get("metadata")
            .and_then(|m| m.get(field))
            .and_then(|l| l.get(KEEP_LABEL))
            .and_then(Json::as_str)
    };
    if meta("labels") == Some("true") {
        return Some("guard: label retainer.dev/keep=true");
    }
    if meta("annotations") == Some("true") {
        return Some("guard: annotation retainer.dev/keep=true");
    }
    if kind == TargetKind::OciArtifact
        && obj
            .get("annotations")
            .and_then(|a| a.get(KEEP_LABEL))
            .and_then(Json::as_str)
            == Some("true")
    {
        return Some("guard: annotation retainer.dev/keep=true");
    }
    if kind == TargetKind::Job && !job_finished(obj) {
        return Some("guard: job has not finished");
    }
    None
}

/// A Job is finished when its Complete or Failed condition is True.
pub fn job_finished(obj: &Json) -> bool {
    crate::json::at(obj, "/status/conditions")
        .and_then(Json::as_array)
        .into_iter()
        .flatten()
        .any(|c| {
            matches!(
                c.get("type").and_then(Json::as_str),
                Some("Complete" | "Failed")
            ) && c.get("status").and_then(Json::as_str) == Some("True")
        })
}

/// Whether the policy selects this object at all (scope, selectors, registry and repository).
pub fn selects(
    policy: &CompiledPolicy,
    obj: &Json,
    namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    selects_itself(policy, obj)
        && selects_namespace(
            policy,
            str_at(obj, "/metadata/namespace").unwrap_or(""),
            namespace_labels,
        )
}

/// The part of `selects` that reads only the object: its kind, namespace against the policy's
/// own, labels and fields. What is left, the namespaceSelector, depends on the namespace's
/// labels (`selects_namespace`).
pub fn selects_itself(policy: &CompiledPolicy, obj: &Json) -> bool {
    let spec = &policy.view.spec;
    if obj.get("kind").and_then(Json::as_str) != Some(policy.target.as_str()) {
        return false;
    }
    if policy.target == TargetKind::OciArtifact {
        let (Some(reg), Some(repo)) = (str_at(obj, "/registry"), str_at(obj, "/repository")) else {
            return false;
        };
        let repos = spec
            .target
            .registry
            .as_ref()
            .map(|r| r.repositories.as_slice())
            .unwrap_or(&[]);
        return policy.registry_host.as_deref() == Some(normalize_registry(reg).as_str())
            && repos.iter().any(|p| repository_matches(p, repo));
    }
    let ns = str_at(obj, "/metadata/namespace").unwrap_or("");
    if policy.view.namespace.as_ref().is_some_and(|own| own != ns) {
        return false;
    }
    if let Some(sel) = &spec.target.selector {
        // Validated when the policy compiled.
        let labels = obj
            .get("metadata")
            .and_then(|m| m.get("labels"))
            .and_then(Json::as_object);
        let label = |k: &str| labels.and_then(|m| m.get(k)).and_then(Json::as_str);
        if !select::matches_validated_selector(sel, label) {
            return false;
        }
    }
    if let Some(fs) = &spec.target.field_selector
        && !matches_field_selector(fs, obj)
    {
        return false;
    }
    true
}

/// The namespaceSelector of a ClusterRetentionPolicy against the labels of namespace `ns`;
/// true for every other policy and for OCI artifacts.
pub fn selects_namespace(
    policy: &CompiledPolicy,
    ns: &str,
    namespace_labels: &BTreeMap<String, BTreeMap<String, String>>,
) -> bool {
    if policy.target == TargetKind::OciArtifact || policy.view.namespace.is_some() {
        return true;
    }
    match &policy.view.spec.target.namespace_selector {
        Some(sel) => {
            let empty = BTreeMap::new();
            matches_label_selector(sel, namespace_labels.get(ns).unwrap_or(&empty))
        }
        None => true,
    }
}

/// An object's `metadata.labels` as a map.
pub fn labels_of(obj: &Json) -> BTreeMap<String, String> {
    crate::json::at(obj, "/metadata/labels")
        .and_then(Json::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| v.as_str().map(|v| (k.clone(), v.to_string())))
                .collect()
        })
        .unwrap_or_default()
}

/// `team/app` matches itself; `team/*` matches every repository under `team/`.
pub fn repository_matches(pattern: &str, repo: &str) -> bool {
    match pattern.strip_suffix("/*") {
        Some(prefix) => {
            repo.len() > prefix.len() + 1
                && repo.starts_with(prefix)
                && repo.as_bytes()[prefix.len()] == b'/'
        }
        None => pattern == "*" || pattern == repo,
    }
}

struct Row<'a> {
    obj: &'a Json,
    bound: Box<dyn Val + 'a>,
    created: Option<Timestamp>,
    age: chrono::Duration,
    group: String,
    key: Option<SortKey>,
    /// A guard or an error decided before keep.
    decided: Option<(Basis, String)>,
    rank: i64,
    group_size: i64,
    referrers: Vec<Referrer>,
    /// OCI: a Pod or workload in the cluster that runs or names this artifact (the mark).
    in_use: Option<Referrer>,
    /// What `guard` says of the object: read when the row is made, from the whole object (an
    /// incremental evaluation keeps the answer, not the fields it came from).
    guarded: Option<&'static str>,
}

impl<'a> Row<'a> {
    /// A selected object bound for evaluation, with its creation time and its age at `now`.
    fn new(policy: &CompiledPolicy, obj: &'a Json, now: Timestamp) -> Row<'a> {
        let created = match policy.target {
            TargetKind::OciArtifact => parse_time(str_at(obj, "/created")),
            _ => parse_time(str_at(obj, "/metadata/creationTimestamp")),
        };
        let age = created
            .map(|c| {
                chrono::Duration::nanoseconds(
                    (now.as_nanosecond() - c.as_nanosecond()).clamp(0, i64::MAX as i128) as i64,
                )
            })
            .unwrap_or_else(chrono::Duration::zero);
        Row {
            obj,
            bound: expr::project(obj, &policy.fields),
            created,
            age,
            group: String::new(),
            key: None,
            decided: None,
            rank: 0,
            group_size: 0,
            referrers: Vec::new(),
            in_use: None,
            guarded: guard(policy.target, obj),
        }
    }

    fn result(&self, kind: TargetKind, (basis, reason): (Basis, String)) -> ObjectResult {
        ObjectResult {
            kind: kind.as_str(),
            id: object_id(kind, self.obj),
            verdict: basis.verdict(),
            reason,
            basis,
            created: self.created,
            referrers: self.referrers.clone(),
        }
    }
}

/// match, groupBy and orderBy for one selected row: whether match governs it, and if so its
/// group and sort key, or the error that decided it. Nothing here depends on other objects.
fn place(
    policy: &CompiledPolicy,
    row: &mut Row<'_>,
    now: chrono::DateTime<chrono::FixedOffset>,
) -> bool {
    let v = base_vars(row.bound.as_ref(), now, row.age);
    if let Some(m) = &policy.r#match {
        match m.eval_bool(&v) {
            Ok(false) => return false,
            Ok(true) => {}
            Err(e) => row.decided = Some((Basis::Error, e.to_string())),
        }
    }
    if row.decided.is_none() {
        let group = match &policy.group_by {
            Some(g) => g.eval_string(&v).map_err(|e| e.to_string()),
            None => Ok(match policy.target {
                TargetKind::OciArtifact => str_at(row.obj, "/repository").unwrap_or("").to_string(),
                _ => str_at(row.obj, "/metadata/namespace")
                    .unwrap_or("")
                    .to_string(),
            }),
        };
        match group {
            Ok(g) => row.group = g,
            Err(e) => row.decided = Some((Basis::Error, e)),
        }
    }
    if row.decided.is_none() {
        let key = match &policy.order_by {
            Some(o) => {
                let v = Vars {
                    group: Some(&row.group),
                    ..base_vars(row.bound.as_ref(), now, row.age)
                };
                o.eval(&v)
                    .map_err(|e| e.to_string())
                    .and_then(SortKey::from_value)
            }
            None => Ok(match row.created {
                Some(c) => {
                    // Floored seconds and non-negative nanoseconds, as chrono gives them for
                    // orderBy's timestamps. jiff's timestamps are within ±9999 years, so the
                    // seconds fit an i64 and the remainder a u32.
                    let nanos = c.as_nanosecond();
                    SortKey::Time(
                        nanos.div_euclid(1_000_000_000) as i64,
                        nanos.rem_euclid(1_000_000_000) as u32,
                    )
                }
                None => SortKey::Newest,
            }),
        };
        match key {
            Ok(k) => row.key = Some(k),
            Err(e) => row.decided = Some((Basis::Error, e)),
        }
    }
    true
}

/// Every member's error when a group's orderBy values are of different kinds, named in order.
fn mixed_keys_message<'k>(group: &str, kinds: impl Iterator<Item = &'k str>) -> String {
    format!(
        "spec.orderBy: values of different types ({}) in group '{group}' cannot be ranked",
        kinds.collect::<Vec<_>>().join(", ")
    )
}

/// Orders one group's members newest/highest first; ties go by name, then by the order the
/// members came in (the sort is stable), so the caller must pass them in snapshot order. When
/// the orderBy values are of different kinds nothing can be ranked: the error is every member's.
fn rank_group<'k, T>(
    group: &str,
    members: &mut [T],
    key: impl Fn(&T) -> Option<&'k SortKey>,
    name: impl Fn(&T) -> &'k str,
) -> Result<(), String> {
    let kinds: std::collections::BTreeSet<&str> = members
        .iter()
        .filter_map(|m| key(m).map(SortKey::kind))
        .collect();
    if kinds.len() > 1 {
        return Err(mixed_keys_message(group, kinds.into_iter()));
    }
    members.sort_by(|a, b| {
        let by_key = match (key(a), key(b)) {
            (Some(x), Some(y)) => y.cmp(x).unwrap_or(Ordering::Equal),
            _ => Ordering::Equal,
        };
        by_key.then_with(|| name(a).cmp(name(b)))
    });
    Ok(())
}

/// Who references one object: the built-in references, then the policy's own.
fn referrers_of(
    kind: TargetKind,
    obj: &Json,
    refs: &RefIndex,
    custom: &CustomRefs,
) -> Vec<Referrer> {
    let mut found = match kind {
        TargetKind::Secret => refs.secret_referrers(
            str_at(obj, "/metadata/namespace").unwrap_or(""),
            str_at(obj, "/metadata/name").unwrap_or(""),
        ),
        TargetKind::OciArtifact => {
            let (repository, digest, tags) = oci_parts(obj);
            refs.image_referrers(
                str_at(obj, "/registry").unwrap_or(""),
                &repository,
                &digest,
                &tags,
            )
        }
        TargetKind::Job => Vec::new(),
    };
    found.extend(custom.referrers_of(kind, obj));
    found.sort();
    found.dedup();
    found
}

/// Guards, then keep, for one governed row whose rank, group size and referrers are known.
/// Guards, then keep, for one placed and ranked object. `bytes` are its artifactBytes and
/// groupBytes when keep reads them (OCI): reasons then show both.
fn decide(
    policy: &CompiledPolicy,
    custom: &CustomRefs,
    now: chrono::DateTime<chrono::FixedOffset>,
    row: &Row<'_>,
    bytes: Option<(u64, u64)>,
) -> (Basis, String) {
    let kind = policy.target;
    if let Some(d) = &row.decided {
        return d.clone();
    }
    if let Some(g) = row.guarded {
        return (Basis::Guard, g.to_string());
    }
    if let Some(who) = &row.in_use {
        return (Basis::Guard, in_use_reason(who));
    }
    let refs_json = serde_json::to_value(&row.referrers).unwrap_or(Json::Null);
    let refs_val = expr::json_to_val(&refs_json);
    let v = Vars {
        object: row.bound.as_ref(),
        now,
        age: row.age,
        group: Some(&row.group),
        rank: Some(row.rank),
        group_size: Some(row.group_size),
        referenced_by: Some(refs_val.as_ref()),
    };
    let with_bytes = bytes.map(|(artifact, group)| WithBytes {
        vars: &v,
        artifact,
        group,
    });
    let resolver: &dyn cel::context::VariableResolver = match &with_bytes {
        Some(w) => w,
        None => &v,
    };
    let shown = |s: String| match bytes {
        Some((artifact, group)) => format!("{s} (artifactBytes {artifact}, groupBytes {group})"),
        None => s,
    };
    match policy.keep.eval_keep(resolver) {
        Ok(Some(term)) => {
            let reason = shown(format!("keep: {term}"));
            (Basis::Term(term), reason)
        }
        Ok(None) => match custom.failure_for(kind, row.obj) {
            Some(m) => (Basis::Error, format!("referenced-by unknown: {m}")),
            None => (Basis::NoTermHeld, shown("no term of keep held".to_string())),
        },
        Err(e) => (Basis::Error, e.to_string()),
    }
}

/// repository, digest and tags of an OCI artifact document.
fn oci_parts(obj: &Json) -> (String, String, Vec<String>) {
    let s = |p: &str| str_at(obj, p).unwrap_or("").to_string();
    let tags = obj
        .get("tags")
        .and_then(Json::as_array)
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    (s("/repository"), s("/digest"), tags)
}

impl ObjectId {
    /// The identity a result about `obj` carries.
    pub fn of(kind: TargetKind, obj: &Json) -> ObjectId {
        object_id(kind, obj)
    }
}

fn object_id(kind: TargetKind, obj: &Json) -> ObjectId {
    let s = |p: &str| Arc::<str>::from(str_at(obj, p).unwrap_or(""));
    match kind {
        TargetKind::OciArtifact => {
            let (repository, digest, tags) = oci_parts(obj);
            ObjectId::Oci {
                repository,
                digest,
                tags,
            }
        }
        _ => ObjectId::Kube {
            namespace: s("/metadata/namespace"),
            name: s("/metadata/name"),
            uid: s("/metadata/uid"),
            resource_version: s("/metadata/resourceVersion"),
        },
    }
}

fn sort_name(obj: &Json) -> &str {
    str_at(obj, "/metadata/name")
        .or_else(|| str_at(obj, "/digest"))
        .unwrap_or("")
}

/// Where the pipeline placed one governed object: the values `keep` saw. `explain-verdict`
/// prints them; the controller has no use for them, so they are not part of `ObjectResult`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Standing {
    /// None when a guard or an error decided before grouping.
    pub group: Option<String>,
    /// None when the object was not ranked (decided earlier, or its group mixes orderBy types).
    pub rank: Option<i64>,
    pub group_size: Option<i64>,
    /// Since creation; None when the creation time is unknown (CEL then sees 0s).
    #[serde(skip)]
    pub age: Option<std::time::Duration>,
}

/// `evaluate`, and for each result (same index) the values that decided it.
pub fn evaluate_explained(
    policy: &CompiledPolicy,
    snap: &Snapshot<'_>,
) -> (Evaluation, Vec<Standing>) {
    // The budget here is never exhausted, so the default is never used.
    evaluate_rows(policy, snap, &|| false).unwrap_or_default()
}

/// Runs the whole pipeline for one policy over one snapshot.
pub fn evaluate(policy: &CompiledPolicy, snap: &Snapshot<'_>) -> Evaluation {
    // The budget here is never exhausted, so the default is never used.
    evaluate_within(policy, snap, &|| false).unwrap_or_default()
}

/// Evaluation stopped because it ran out of its time budget: the expressions are too costly
/// for the number of objects. No verdicts are given, so nothing is deleted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error(
    "evaluating the policy's expressions ran out of its time budget after {evaluated} of {total} objects; make spec.match, spec.keep or spec.referencedBy cheaper (fewer macros over lists), or select fewer objects"
)]
pub struct OverBudget {
    pub evaluated: usize,
    pub total: usize,
}

/// `evaluate`, asking `over_budget` between objects whether to give up. The caller decides
/// what the budget is (a deadline, in the controller), so this stays free of clocks.
pub fn evaluate_within(
    policy: &CompiledPolicy,
    snap: &Snapshot<'_>,
    over_budget: &dyn Fn() -> bool,
) -> Result<Evaluation, OverBudget> {
    evaluate_rows(policy, snap, over_budget).map(|(eval, _)| eval)
}

fn evaluate_rows(
    policy: &CompiledPolicy,
    snap: &Snapshot<'_>,
    over_budget: &dyn Fn() -> bool,
) -> Result<(Evaluation, Vec<Standing>), OverBudget> {
    let kind = policy.target;
    let now = to_chrono(snap.now);
    let total = snap.objects.len();
    let stop = |evaluated: usize| -> Result<(), OverBudget> {
        if over_budget() {
            Err(OverBudget { evaluated, total })
        } else {
            Ok(())
        }
    };

    // select, bind once, match, group, order
    let mut rows: Vec<Row<'_>> = Vec::new();
    // Every selected artifact, matched or not: all of them hold storage.
    let mut selected: Vec<&Json> = Vec::new();
    for (seen, &obj) in snap.objects.iter().enumerate() {
        stop(seen)?;
        if !selects(policy, obj, snap.namespace_labels) {
            continue;
        }
        if kind == TargetKind::OciArtifact {
            selected.push(obj);
        }
        let mut row = Row::new(policy, obj, snap.now);
        if kind == TargetKind::OciArtifact && obj.get("subject").is_some_and(|s| !s.is_null()) {
            // Signatures, SBOMs and attestations are not governed by the expressions: they are
            // never ranked or matched and follow their subject (apply_oci_guards).
            row.decided = Some((Basis::Guard, "guard: follows its subject".into()));
            rows.push(row);
            continue;
        }
        if place(policy, &mut row, now) {
            rows.push(row);
        }
    }

    // rank within groups, newest/highest first
    let mut groups: HashMap<&str, Vec<usize>> = HashMap::new();
    for (i, r) in rows.iter().enumerate() {
        if r.key.is_some() {
            groups.entry(r.group.as_str()).or_default().push(i);
        }
    }
    let mut ranks: Vec<(usize, i64, i64)> = Vec::new();
    let mut mixed: Vec<(usize, String)> = Vec::new();
    // Each group's members, by rank (unranked for a group whose keys do not compare).
    let mut ranked_groups: Vec<Vec<usize>> = Vec::new();
    for (group, mut members) in groups {
        let ranked = rank_group(
            group,
            &mut members,
            |&i| rows[i].key.as_ref(),
            |&i| sort_name(rows[i].obj),
        );
        if let Err(msg) = ranked {
            mixed.extend(members.iter().map(|&i| (i, msg.clone())));
            ranked_groups.push(members);
            continue;
        }
        let size = members.len() as i64;
        for (rank, &i) in members.iter().enumerate() {
            ranks.push((i, rank as i64, size));
        }
        ranked_groups.push(members);
    }
    for (i, rank, size) in ranks {
        rows[i].rank = rank;
        rows[i].group_size = size;
    }
    for (i, msg) in mixed {
        rows[i].decided = Some((Basis::Error, msg));
    }

    // referenced-by: built-in, then custom
    let custom = custom_references(policy, &snap.custom_referrers, now, &|| stop(0))?;
    for row in &mut rows {
        row.referrers = referrers_of(kind, row.obj, snap.refs, &custom);
        if kind == TargetKind::OciArtifact {
            row.in_use = in_use_by(row.obj, snap.refs);
        }
    }

    // Storage: each member's footprint, and per group a ledger of the bytes its members hold.
    let mut footprints: Vec<bytes::Blobs> = vec![bytes::Blobs::new(); rows.len()];
    let mut ledgers: Vec<bytes::Ledger> = Vec::new();
    let mut ledger_of: Vec<Option<usize>> = vec![None; rows.len()];
    // Only keep reads them; the summary's bytes are counted from `selected` below.
    if kind == TargetKind::OciArtifact && policy.keep_reads_bytes {
        let mut repos: HashMap<&str, bytes::Repository<'_>> = HashMap::new();
        for &doc in &selected {
            repos
                .entry(str_at(doc, "/repository").unwrap_or(""))
                .or_default()
                .add(doc);
        }
        for (i, row) in rows.iter().enumerate() {
            if let (Some(repo), Some(digest)) = (
                repos.get(str_at(row.obj, "/repository").unwrap_or("")),
                str_at(row.obj, "/digest"),
            ) {
                footprints[i] = repo.footprint(digest);
            }
        }
        for members in &ranked_groups {
            let mut ledger = bytes::Ledger::default();
            for &i in members {
                ledger.add(&footprints[i]);
                ledger_of[i] = Some(ledgers.len());
            }
            ledgers.push(ledger);
        }
    }

    // guards, then keep. Each group is decided from its lowest rank up (the order a sweep
    // deletes in), so that groupBytes is what the group holds once the deletions already
    // planned in it are done: when that falls under a threshold, the rest are kept.
    let mut order: Vec<usize> = Vec::with_capacity(rows.len());
    for members in &ranked_groups {
        order.extend(members.iter().rev());
    }
    let mut in_order = vec![false; rows.len()];
    for &i in &order {
        in_order[i] = true;
    }
    order.extend((0..rows.len()).filter(|&i| !in_order[i]));
    let mut decided: Vec<Option<(Basis, String)>> = vec![None; rows.len()];
    for (done, &i) in order.iter().enumerate() {
        stop(done)?;
        let row = &rows[i];
        let bytes = (kind == TargetKind::OciArtifact && policy.keep_reads_bytes).then(|| {
            (
                bytes::total(&footprints[i]),
                ledger_of[i].map_or(0, |l| ledgers[l].total()),
            )
        });
        let (basis, mut reason) = decide(policy, &custom, now, row, bytes);
        if basis.verdict() == Verdict::Delete
            && row.decided.is_none()
            && let Some(l) = ledger_of[i]
        {
            ledgers[l].remove(&footprints[i]);
            if policy.keep_reads_bytes {
                reason = format!(
                    "{reason}; the group holds {} bytes after this deletion",
                    ledgers[l].total()
                );
            }
        }
        decided[i] = Some((basis, reason));
    }
    let mut results: Vec<ObjectResult> = Vec::with_capacity(rows.len());
    for (row, d) in rows.iter().zip(decided) {
        // Every row is in `order`, so each was decided just above.
        let (basis, reason) = d.unwrap_or((Basis::Error, "not evaluated".to_string()));
        results.push(ObjectResult {
            kind: kind.as_str(),
            id: object_id(kind, row.obj),
            verdict: basis.verdict(),
            reason,
            basis,
            created: row.created,
            referrers: row.referrers.clone(),
        });
    }
    if kind == TargetKind::OciArtifact {
        apply_oci_guards(&rows, &selected, &mut results);
    }

    let mut summary = Counts::default();
    if kind == TargetKind::OciArtifact {
        let deleted: std::collections::BTreeSet<(String, String)> = results
            .iter()
            .filter(|r| r.verdict == Verdict::Delete)
            .filter_map(|r| match &r.id {
                ObjectId::Oci {
                    repository, digest, ..
                } => Some((repository.clone(), digest.clone())),
                ObjectId::Kube { .. } => None,
            })
            .collect();
        let st = bytes::storage(selected.iter().copied(), &deleted);
        summary.bytes = Some(st.held);
        summary.bytes_freed = Some(st.freed);
    }
    for r in &results {
        summary.governed += 1;
        match r.verdict {
            Verdict::Keep => summary.kept += 1,
            Verdict::Delete => summary.candidates += 1,
            Verdict::Error => summary.errors += 1,
        }
    }
    let standings = rows
        .iter()
        .map(|r| {
            // A row decided before grouping has an empty group and no sort key.
            let grouped = r.key.is_some() || !r.group.is_empty();
            let ranked = r.key.is_some() && r.group_size > 0;
            Standing {
                group: grouped.then(|| r.group.clone()),
                rank: ranked.then_some(r.rank),
                group_size: ranked.then_some(r.group_size),
                age: r.created.map(|_| r.age.to_std().unwrap_or_default()),
            }
        })
        .collect();
    let results = results.into_iter().map(Arc::new).collect();
    Ok((Evaluation { summary, results }, standings))
}

/// The variables of keep for an OCI artifact: the common ones and its storage bytes.
struct WithBytes<'a, 'v> {
    vars: &'a Vars<'v>,
    artifact: u64,
    group: u64,
}

impl cel::context::VariableResolver for WithBytes<'_, '_> {
    fn resolve<'b>(&'b self, variable: &str) -> Option<cel::common::value::CowVal<'b, 'b>> {
        // Sizes beyond i64 (8 EiB) cannot occur; saturate rather than wrap if they did.
        let int = |n: u64| {
            cel::common::value::CowVal::owned(cel::common::types::CelInt::from(
                i64::try_from(n).unwrap_or(i64::MAX),
            ))
        };
        match variable {
            expr::VAR_ARTIFACT_BYTES => Some(int(self.artifact)),
            expr::VAR_GROUP_BYTES => Some(int(self.group)),
            _ => self.vars.resolve(variable),
        }
    }
}

/// The first Pod or workload that runs or names an artifact (by digest, or by one of its tags),
/// wherever it is: the mark of mark-and-sweep, which no expression overrides.
pub fn in_use_by(obj: &Json, refs: &RefIndex) -> Option<Referrer> {
    let (repository, digest, tags) = oci_parts(obj);
    refs.image_referrers(
        str_at(obj, "/registry").unwrap_or(""),
        &repository,
        &digest,
        &tags,
    )
    .into_iter()
    .next()
}

/// How the in-use guard names what uses an artifact.
pub fn in_use_reason(who: &Referrer) -> String {
    if who.namespace.is_empty() {
        format!("guard: in use by {} {}", who.kind, who.name)
    } else {
        format!(
            "guard: in use by {} {}/{}",
            who.kind, who.namespace, who.name
        )
    }
}

/// OCI's structural guards: a manifest that an index which stays lists is kept, whether this
/// policy governs that index or not (every selected artifact that is not a candidate stays,
/// the ones `match` leaves out included); an artifact with a subject (signature, SBOM) is
/// never a candidate itself and follows its subject.
fn apply_oci_guards(rows: &[Row<'_>], selected: &[&Json], results: &mut [ObjectResult]) {
    let digest_of = |i: usize| str_at(rows[i].obj, "/digest").unwrap_or("").to_string();
    let by_digest: HashMap<(String, String), usize> = (0..rows.len())
        .map(|i| {
            (
                (
                    str_at(rows[i].obj, "/repository").unwrap_or("").to_string(),
                    digest_of(i),
                ),
                i,
            )
        })
        .collect();
    let repo_of = |i: usize| str_at(rows[i].obj, "/repository").unwrap_or("").to_string();
    // Index children, to a fixed point (an index may list an index).
    loop {
        let mut changed = false;
        for &doc in selected {
            let repo = str_at(doc, "/repository").unwrap_or("");
            let digest = str_at(doc, "/digest").unwrap_or("");
            let governed = by_digest.get(&(repo.to_string(), digest.to_string()));
            if governed.is_some_and(|&i| results[i].verdict == Verdict::Delete) {
                continue;
            }
            for child in doc
                .get("manifests")
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                let Some(d) = child.as_str().or_else(|| str_at(child, "/digest")) else {
                    continue;
                };
                if let Some(&c) = by_digest.get(&(repo.to_string(), d.to_string()))
                    && results[c].verdict == Verdict::Delete
                {
                    results[c].verdict = Verdict::Keep;
                    results[c].basis = Basis::Guard;
                    results[c].reason = match governed {
                        Some(_) => format!("guard: listed by kept index {digest}"),
                        None => format!(
                            "guard: listed by index {digest}, which this policy does not govern"
                        ),
                    };
                    changed = true;
                }
            }
        }
        if !changed {
            break;
        }
    }
    // Referrers follow their subject, through chains (a signature of an SBOM).
    for i in 0..rows.len() {
        let Some(mut subject) = str_at(rows[i].obj, "/subject").map(String::from) else {
            continue;
        };
        let mut seen = 0;
        let outcome = loop {
            match by_digest.get(&(repo_of(i), subject.clone())) {
                None => break None,
                Some(&s) => match str_at(rows[s].obj, "/subject") {
                    Some(next) if seen < 16 => {
                        subject = next.to_string();
                        seen += 1;
                    }
                    _ => break Some(s),
                },
            }
        };
        let (basis, reason) = match outcome {
            Some(s) if results[s].verdict == Verdict::Delete => (
                Basis::FollowsSubject,
                format!("goes with its subject {}, which is deleted", digest_of(s)),
            ),
            Some(s) => (
                Basis::Guard,
                format!("guard: refers to kept subject {}", digest_of(s)),
            ),
            None => (
                Basis::Guard,
                format!("guard: refers to subject {subject}, which this policy does not govern"),
            ),
        };
        if results[i].verdict != Verdict::Error || basis.verdict() == Verdict::Keep {
            results[i].verdict = basis.verdict();
            results[i].basis = basis;
            results[i].reason = reason;
        }
    }
}

/// References found by the policy's own `referencedBy` expressions.
#[derive(Default)]
struct CustomRefs {
    /// (namespace, name) → referrers, for Jobs and Secrets
    names: HashMap<(String, String), Vec<Referrer>>,
    /// image reference → referrers, for OCI
    images: Vec<(crate::refs::ImageRef, Referrer)>,
    /// (referrer namespace, message) of referrers whose refs expression failed
    failures: Vec<(String, String)>,
}

impl CustomRefs {
    /// A failed referrer that might reference this object: any, for OCI (references cross
    /// namespaces); one of the object's namespace otherwise.
    fn failure_for(&self, kind: TargetKind, obj: &Json) -> Option<&str> {
        let ns = str_at(obj, "/metadata/namespace").unwrap_or("");
        self.failures
            .iter()
            .find(|(fns, _)| kind == TargetKind::OciArtifact || fns == ns)
            .map(|(_, m)| m.as_str())
    }

    fn referrers_of(&self, kind: TargetKind, obj: &Json) -> Vec<Referrer> {
        match kind {
            TargetKind::OciArtifact => {
                let reg = normalize_registry(str_at(obj, "/registry").unwrap_or(""));
                let (repository, digest, tags) = oci_parts(obj);
                self.images
                    .iter()
                    .filter(|(r, _)| {
                        r.registry == reg
                            && r.repository == repository
                            && (r.digest.as_deref() == Some(digest.as_str())
                                || (r.digest.is_none()
                                    && r.tag.as_ref().is_some_and(|t| tags.contains(t))))
                    })
                    .map(|(_, who)| who.clone())
                    .collect()
            }
            _ => self
                .names
                .get(&(
                    str_at(obj, "/metadata/namespace").unwrap_or("").to_string(),
                    str_at(obj, "/metadata/name").unwrap_or("").to_string(),
                ))
                .cloned()
                .unwrap_or_default(),
        }
    }
}

fn custom_references(
    policy: &CompiledPolicy,
    referrers: &[&Json],
    now: chrono::DateTime<chrono::FixedOffset>,
    stop: &dyn Fn() -> Result<(), OverBudget>,
) -> Result<CustomRefs, OverBudget> {
    let mut out = CustomRefs {
        names: HashMap::new(),
        images: Vec::new(),
        failures: Vec::new(),
    };
    for (api_version, kind, refs) in &policy.referrer_sources {
        for &obj in referrers {
            stop()?;
            if str_at(obj, "/apiVersion") != Some(api_version) || str_at(obj, "/kind") != Some(kind)
            {
                continue;
            }
            let bound = expr::project(obj, &refs.fields);
            let v = base_vars(bound.as_ref(), now, chrono::Duration::zero());
            let who = Referrer::of(obj);
            let names = match refs.eval_strings(&v) {
                Ok(n) => n,
                Err(e) => {
                    // What this referrer references is unknown, so nothing it might reference
                    // may be deleted: see `failure_for`.
                    out.failures.push((
                        who.namespace.clone(),
                        format!("{e} (on {} {}/{})", who.kind, who.namespace, who.name),
                    ));
                    continue;
                }
            };
            for n in names {
                if policy.target == TargetKind::OciArtifact {
                    if let Some(r) = crate::refs::ImageRef::parse(&n) {
                        out.images.push((r, who.clone()));
                    }
                } else {
                    out.names
                        .entry((who.namespace.clone(), n))
                        .or_default()
                        .push(who.clone());
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
