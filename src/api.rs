//! The `retainer.dev/v1alpha1` API: `RetentionPolicy` (namespaced) and `ClusterRetentionPolicy`
//! (cluster-scoped) share one spec and one status type. Doc comments here become the
//! `kubectl explain` text, so they are written for users.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

pub const GROUP: &str = "retainer.dev";
pub const VERSION: &str = "v1alpha1";
/// The label or annotation that keeps an object whatever a policy says.
pub const KEEP_LABEL: &str = "retainer.dev/keep";
/// Longest CEL expression accepted by the schema; longer ones are rejected at apply time.
pub const MAX_EXPRESSION_LENGTH: u32 = 4096;

/// States which Jobs, Secrets or OCI artifacts to keep; everything the policy governs and does not keep is a candidate, deleted by sweeps on the policy's schedule. A RetentionPolicy governs objects of its own namespace only.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "retainer.dev",
    version = "v1alpha1",
    kind = "RetentionPolicy",
    plural = "retentionpolicies",
    shortname = "rp",
    category = "retainer",
    namespaced,
    status = "RetentionPolicyStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "Keeps the Jobs, Secrets or OCI artifacts its CEL expressions name and sweeps the rest of its namespace on a schedule.",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.kind"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Candidates","type":"integer","jsonPath":".status.summary.candidates"}"#,
    printcolumn = r#"{"name":"Deleted","type":"integer","jsonPath":".status.lastSweep.deleted"}"#,
    printcolumn = r#"{"name":"Last Sweep","type":"date","jsonPath":".status.lastSweep.completionTime"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Bytes Freed","type":"integer","priority":1,"jsonPath":".status.lastSweep.bytesFreed"}"#,
    validation = Rule::new("!has(self.spec.target.namespaceSelector)").message("spec.target.namespaceSelector is only allowed on a ClusterRetentionPolicy").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.spec.target.registry) || !has(self.spec.target.registry.credentialsSecretRef) || !has(self.spec.target.registry.credentialsSecretRef.namespace)").message("spec.target.registry.credentialsSecretRef.namespace is only allowed on a ClusterRetentionPolicy: a RetentionPolicy uses Secrets of its own namespace").reason(Reason::FieldValueForbidden),
    validation = Rule::new("!has(self.spec.target.registry) || !has(self.spec.target.registry.caBundleRef) || !has(self.spec.target.registry.caBundleRef.namespace)").message("spec.target.registry.caBundleRef.namespace is only allowed on a ClusterRetentionPolicy: a RetentionPolicy reads its own namespace").reason(Reason::FieldValueForbidden)
)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicySpec {
    /// What the policy governs.
    pub target: Target,
    /// CEL bool: which selected objects the policy governs. Default true. Variables: object, now, age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub r#match: Option<String>,
    /// CEL string: the group an object is ranked in. Default: the namespace for Jobs and Secrets, the repository for OCI artifacts. Variables: object, now, age.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub group_by: Option<String>,
    /// CEL: the sort key within a group, newest or highest first (rank 0). Timestamp, int, double, string or semver (semver(...) sorts by semantic version). Default: creation time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 4096))]
    pub order_by: Option<String>,
    /// CEL bool, required: true keeps the object. Variables: object, now, age, group, rank (0-based position in its group), groupSize, referencedBy (list of {apiVersion, kind, namespace, name}); for OCI artifacts also artifactBytes (the artifact's manifest, config, layers and referrers, each blob once) and groupBytes (the group's unique blobs left once the deletions planned for lower-ranked members are done; members are decided from the highest rank down). Example: "rank < 5 || age < duration('720h') || referencedBy.size() > 0". Durations are Go-style: there is no 'd' unit.
    #[schemars(length(min = 1, max = 4096))]
    pub keep: String,
    /// Extra referrers of any resource: each listed object's refs expression yields the names (Jobs, Secrets: same namespace) or image references (OCI) it references.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 16))]
    pub referenced_by: Vec<ReferrerSource>,
    /// When sweeps run: a five-field cron expression, or @yearly (@annually), @monthly, @weekly, @daily (@midnight), @hourly.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// IANA time zone the schedule is read in, e.g. Europe/Berlin. Default UTC.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub time_zone: Option<String>,
    /// True: evaluate and report, never sweep.
    #[serde(default, skip_serializing_if = "is_false")]
    pub suspend: bool,
    /// True: sweeps report what they would delete and delete nothing.
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// How sweeps delete.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<Deletion>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Cluster-scoped twin of RetentionPolicy: governs Jobs and Secrets in the namespaces target.namespaceSelector picks (all when absent), and may govern OCI artifacts.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "retainer.dev",
    version = "v1alpha1",
    kind = "ClusterRetentionPolicy",
    plural = "clusterretentionpolicies",
    shortname = "crp",
    category = "retainer",
    status = "RetentionPolicyStatus",
    derive = "Default",
    derive = "PartialEq",
    doc = "Keeps the Jobs, Secrets or OCI artifacts its CEL expressions name, across the namespaces it selects, and sweeps the rest on a schedule.",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.target.kind"}"#,
    printcolumn = r#"{"name":"Schedule","type":"string","jsonPath":".spec.schedule"}"#,
    printcolumn = r#"{"name":"Candidates","type":"integer","jsonPath":".status.summary.candidates"}"#,
    printcolumn = r#"{"name":"Deleted","type":"integer","jsonPath":".status.lastSweep.deleted"}"#,
    printcolumn = r#"{"name":"Last Sweep","type":"date","jsonPath":".status.lastSweep.completionTime"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    printcolumn = r#"{"name":"Bytes Freed","type":"integer","priority":1,"jsonPath":".status.lastSweep.bytesFreed"}"#,
    validation = Rule::new("!has(self.spec.target.registry) || !has(self.spec.target.registry.credentialsSecretRef) || has(self.spec.target.registry.credentialsSecretRef.namespace)").message("a ClusterRetentionPolicy must name the namespace of its credentials Secret").reason(Reason::FieldValueRequired),
    validation = Rule::new("!has(self.spec.target.registry) || !has(self.spec.target.registry.caBundleRef) || has(self.spec.target.registry.caBundleRef.namespace)").message("a ClusterRetentionPolicy must name the namespace of its CA bundle").reason(Reason::FieldValueRequired)
)]
pub struct ClusterRetentionPolicySpec {
    #[serde(flatten)]
    pub spec: RetentionPolicySpec,
}

/// The kinds of object a policy can govern.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, Hash, JsonSchema)]
pub enum TargetKind {
    #[default]
    Job,
    Secret,
    #[serde(rename = "OCIArtifact")]
    OciArtifact,
}

impl TargetKind {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::Job => "Job",
            TargetKind::Secret => "Secret",
            TargetKind::OciArtifact => "OCIArtifact",
        }
    }
}

/// What a policy governs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.kind == 'OCIArtifact' ? has(self.registry) : !has(self.registry)",
     "message": "registry is required for kind OCIArtifact and not allowed otherwise"},
    {"rule": "self.kind != 'OCIArtifact' || (!has(self.selector) && !has(self.fieldSelector) && !has(self.namespaceSelector))",
     "message": "selector, fieldSelector and namespaceSelector apply to Jobs and Secrets only"}
]))]
pub struct Target {
    /// Job, Secret or OCIArtifact.
    pub kind: TargetKind,
    /// Jobs and Secrets: a label selector, matched as the API server matches one, by the
    /// controller against the objects of the kind it watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
    /// Jobs and Secrets: a field selector, e.g. "type=helm.sh/release.v1", matched as the API
    /// server matches one (fields of metadata, status and a Secret's type), by the controller
    /// against the objects of the kind it watches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub field_selector: Option<String>,
    /// ClusterRetentionPolicy only: the namespaces governed (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_selector: Option<LabelSelector>,
    /// OCIArtifact only: the registry and repositories governed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub registry: Option<Registry>,
}

/// An OCI registry and the repositories a policy governs in it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Registry {
    /// Base URL, https:// or http:// (for local registries), e.g. https://registry.example.com.
    #[schemars(length(min = 1, max = 512), regex(pattern = r"^https?://[^/?#\s]+/?$"))]
    pub url: String,
    /// Repositories, e.g. team/app; "team/*" expands through the catalog API.
    #[schemars(length(min = 1, max = 256))]
    pub repositories: Vec<String>,
    /// A kubernetes.io/dockerconfigjson Secret with credentials for the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
    /// A key of a Secret or ConfigMap, in the policy's namespace, holding the PEM certificates of the private CA that signs the registry's certificate: trusted for this registry in addition to the bundled public roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_bundle_ref: Option<CaBundleRef>,
}

/// A key of a Secret or ConfigMap holding PEM CA certificates.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct CaBundleRef {
    /// Secret or ConfigMap.
    pub kind: CaBundleKind,
    /// The Secret's or ConfigMap's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key whose value is the PEM bundle, e.g. ca.crt.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// The object's namespace: the policy's own for a RetentionPolicy; required on a ClusterRetentionPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// The kinds of object a CA bundle is read from.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CaBundleKind {
    #[default]
    Secret,
    ConfigMap,
}

impl CaBundleKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CaBundleKind::Secret => "Secret",
            CaBundleKind::ConfigMap => "ConfigMap",
        }
    }
}

/// A reference to a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct SecretRef {
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The Secret's namespace: the policy's own for a RetentionPolicy; required on a ClusterRetentionPolicy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
}

/// A kind of object that references what the policy governs.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferrerSource {
    /// e.g. fleet.cattle.io/v1alpha1
    #[schemars(length(min = 1, max = 253))]
    pub api_version: String,
    /// e.g. Bundle
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// CEL list of strings over `object` (the referrer): names (Jobs, Secrets: same namespace) or image references (OCI).
    #[schemars(length(min = 1, max = 4096))]
    pub refs: String,
}

/// How sweeps delete.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deletion {
    /// Background (default), Foreground or Orphan.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub propagation_policy: Option<PropagationPolicy>,
    /// At most this many deletions a sweep; the rest wait for the next one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000000))]
    pub max_per_sweep: Option<i64>,
    /// Refuse the whole sweep (reason Blocked) when candidates/governed, in percent, exceeds this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 100))]
    pub abort_above_percent: Option<i32>,
    /// Two-phase deletion: a candidate is marked first and deleted only if it is still a candidate this long after, e.g. 1h. Go duration syntax.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(max = 32),
        regex(pattern = r"^([0-9]+(\.[0-9]+)?(ns|us|µs|ms|s|m|h))+$")
    )]
    pub grace_period: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PropagationPolicy {
    #[default]
    Background,
    Foreground,
    Orphan,
}

/// What the controller observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionPolicyStatus {
    /// The generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Ready and Swept; Stalled, only while True, for a policy that needs editing (kstatus).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<Summary>,
    /// The first candidates, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub candidates: Vec<CandidateRef>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sweep: Option<SweepRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_sweep_time: Option<Time>,
    /// Grace-period marks (`spec.deletion.gracePeriod`): when each candidate was first marked,
    /// so that the next controller, or the next leader, keeps counting from the same moment.
    /// Grouped by the second of marking, oldest first; at most 10,000 marks are kept here, and
    /// a candidate whose mark did not fit starts its grace period over after a restart (deleted
    /// later, never earlier).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub grace_period_marks: Vec<GraceMarks>,
}

/// Candidates marked in one second.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GraceMarks {
    pub marked_at: Time,
    /// Space-separated 12-hex-digit hashes of the marked candidates (uid, or
    /// repository@digest): a compact form that fits 100,000s of marks in a status.
    pub keys: String,
}

/// Counts of the last evaluation.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub governed: i64,
    pub kept: i64,
    pub candidates: i64,
    pub errors: i64,
    /// OCI only: bytes the policy's repositories hold, counting each blob (manifest, config, layer) once per repository.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<i64>,
    /// OCI only: bytes a sweep deleting every candidate now would leave unreferenced (what registry garbage collection can then reclaim).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_freed: Option<i64>,
}

/// One candidate: namespace and name, or repository, digest and tags.
#[derive(
    Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, JsonSchema,
)]
pub struct CandidateRef {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// The outcome of the last sweep. A record with a `startTime` and no `completionTime` is a
/// sweep in progress, or one that was interrupted: the next leader, or the next evaluation,
/// finishes it.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SweepRecord {
    pub start_time: Option<Time>,
    pub completion_time: Option<Time>,
    pub deleted: i64,
    pub failed: i64,
    pub skipped: i64,
    /// OCI only: bytes the deleted artifacts left unreferenced, counting each blob once per repository, as the evaluation before the sweep saw the repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes_freed: Option<i64>,
}

/// Both kinds seen through one lens: the engine and the controller only need the spec, where the policy lives, and whether it is cluster-scoped.
#[derive(Clone, Debug, PartialEq)]
pub struct PolicyView {
    pub namespace: Option<String>,
    pub name: String,
    pub generation: Option<i64>,
    pub spec: RetentionPolicySpec,
}

impl PolicyView {
    pub fn is_cluster(&self) -> bool {
        self.namespace.is_none()
    }

    /// `ns/name` for namespaced policies, `name` for cluster policies.
    pub fn key(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{ns}/{}", self.name),
            None => self.name.clone(),
        }
    }
}

impl PolicyView {
    /// A stored or submitted policy object of `kind` (`RetentionPolicy` or
    /// `ClusterRetentionPolicy`), as the controller and the admission webhook read it; the error
    /// says what of the object does not fit the schema.
    pub fn from_object(kind: &str, obj: &serde_json::Value) -> Result<PolicyView, String> {
        if kind == "ClusterRetentionPolicy" {
            serde_json::from_value::<ClusterRetentionPolicy>(obj.clone())
                .map(|p| PolicyView::from(&p))
                .map_err(|e| e.to_string())
        } else {
            serde_json::from_value::<RetentionPolicy>(obj.clone())
                .map(|p| PolicyView::from(&p))
                .map_err(|e| e.to_string())
        }
    }
}

impl From<&RetentionPolicy> for PolicyView {
    fn from(p: &RetentionPolicy) -> Self {
        PolicyView {
            namespace: Some(p.metadata.namespace.clone().unwrap_or_default()),
            name: p.metadata.name.clone().unwrap_or_default(),
            generation: p.metadata.generation,
            spec: p.spec.clone(),
        }
    }
}

impl From<&ClusterRetentionPolicy> for PolicyView {
    fn from(p: &ClusterRetentionPolicy) -> Self {
        PolicyView {
            namespace: None,
            name: p.metadata.name.clone().unwrap_or_default(),
            generation: p.metadata.generation,
            spec: p.spec.spec.clone(),
        }
    }
}

/// Both CRDs as multi-document YAML: what `retainer crds` prints and `crds/` holds.
pub fn crds_yaml() -> String {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [RetentionPolicy::crd(), ClusterRetentionPolicy::crd()] {
        out.push_str("---\n");
        // A CRD is plain data of strings, maps and lists; serialising it cannot fail.
        out.push_str(&serde_saphyr::to_string(&crd).expect("CRD serialises to YAML"));
    }
    out
}
