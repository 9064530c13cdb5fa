//! What a policy reads: the one answer `retainer plan` and the controller both act on, so that
//! the two cannot disagree about which kinds, namespaces and referrers a verdict rests on.

use std::collections::BTreeSet;

use super::caches::Kind;
use crate::api::TargetKind;
use crate::engine::CompiledPolicy;
use crate::status::{Readiness, ready};

/// Where a kind is read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    /// Every namespace (and cluster-scoped kinds).
    All,
    /// One namespace.
    Namespace(String),
}

/// A kind to read, and where.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Read {
    pub kind: Kind,
    pub scope: Scope,
}

/// A `referencedBy` kind the API server must be asked about first.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Custom {
    pub api_version: String,
    pub kind: String,
    pub scope: Scope,
}

/// Everything one evaluation of a policy needs besides the policy.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    pub reads: BTreeSet<Read>,
    pub custom: BTreeSet<Custom>,
    /// The policy's registry inventory (OCI policies).
    pub registry: bool,
}

/// The inputs of `policy`. Pure.
///
/// - Jobs and Secrets of a namespaced policy are read in its namespace, of a cluster policy in
///   every namespace (its namespaceSelector picks among them, so namespaces are read too).
/// - Secret references count in the Secret's own namespace; image references count from every
///   namespace, for both kinds of policy (a reference can only keep an artifact).
/// - Custom referrers follow the same rule: the referenced object's namespace for Jobs and
///   Secrets, every namespace for OCI artifacts.
pub fn needs(policy: &CompiledPolicy) -> Needs {
    let own = match &policy.view.namespace {
        Some(ns) => Scope::Namespace(ns.clone()),
        None => Scope::All,
    };
    let refs_scope = match policy.target {
        TargetKind::OciArtifact => Scope::All,
        TargetKind::Job | TargetKind::Secret => own.clone(),
    };
    let mut needs = Needs::default();
    match policy.target {
        TargetKind::Job => {
            needs.reads.insert(Read {
                kind: Kind::jobs(),
                scope: own.clone(),
            });
        }
        TargetKind::Secret => {
            needs.reads.insert(Read {
                kind: Kind::secrets(),
                scope: own.clone(),
            });
        }
        TargetKind::OciArtifact => needs.registry = true,
    }
    if policy.target != TargetKind::Job {
        for kind in Kind::builtin_referrers() {
            needs.reads.insert(Read {
                kind,
                scope: refs_scope.clone(),
            });
        }
    }
    if policy.view.is_cluster() && policy.view.spec.target.namespace_selector.is_some() {
        needs.reads.insert(Read {
            kind: Kind::namespaces(),
            scope: Scope::All,
        });
    }
    for (api_version, kind, _) in &policy.referrer_sources {
        needs.custom.insert(Custom {
            api_version: api_version.clone(),
            kind: kind.clone(),
            scope: refs_scope.clone(),
        });
    }
    needs
}

/// The group and version of an `apiVersion`.
pub fn group_version(api_version: &str) -> (&str, &str) {
    api_version.split_once('/').unwrap_or(("", api_version))
}

/// The kind behind a `referencedBy` entry, from API discovery; `None` when the API server does
/// not serve it (or cannot be asked: the policy then waits as for a kind it lacks).
pub async fn discover(client: &kube::Client, api_version: &str, kind: &str) -> Option<Kind> {
    let (group, version) = group_version(api_version);
    let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
    kube::discovery::pinned_kind(client, &gvk)
        .await
        .ok()
        .map(|(ar, _)| Kind::new(&ar.group, &ar.version, &ar.kind, &ar.plural))
}

/// What Ready says when the API server does not serve a `referencedBy` kind.
pub fn referrer_unavailable(c: &Custom) -> Readiness {
    Readiness {
        ready: false,
        reason: ready::TARGET_UNAVAILABLE,
        message: format!(
            "spec.referencedBy: the API server does not serve kind {} in {}",
            c.kind, c.api_version
        ),
    }
}

/// The reads of `needs` once every custom kind is discovered; the first one the API server does
/// not serve is the Ready condition to show, for plan and controller alike.
pub fn resolve(
    needs: &Needs,
    mut discovered: impl FnMut(&Custom) -> Option<Kind>,
) -> Result<Vec<Read>, Readiness> {
    let mut reads = needs.reads.clone();
    for c in &needs.custom {
        let kind = discovered(c).ok_or_else(|| referrer_unavailable(c))?;
        reads.insert(Read {
            kind,
            scope: c.scope.clone(),
        });
    }
    Ok(reads.into_iter().collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::PolicyView;

    fn compile(namespace: Option<&str>, spec: serde_json::Value) -> CompiledPolicy {
        let view = PolicyView {
            name: "p".into(),
            namespace: namespace.map(str::to_string),
            generation: Some(1),
            spec: serde_json::from_value(spec).expect("spec"),
        };
        CompiledPolicy::compile(view).expect("valid policy")
    }

    fn kinds(reads: &[Read]) -> Vec<(String, Scope)> {
        reads
            .iter()
            .map(|r| (r.kind.plural.clone(), r.scope.clone()))
            .collect()
    }

    #[test]
    fn inputs_by_target_and_scope() {
        let ns = |n: &str| Scope::Namespace(n.to_string());
        let refs = |scope: Scope| {
            Kind::builtin_referrers()
                .into_iter()
                .map(|k| (k.plural, scope.clone()))
                .collect::<Vec<_>>()
        };
        let mut secret_reads = refs(ns("a"));
        secret_reads.push(("secrets".into(), ns("a")));
        let mut oci_reads = refs(Scope::All);
        let mut cluster_secret = refs(Scope::All);
        cluster_secret.push(("secrets".into(), Scope::All));
        cluster_secret.push(("namespaces".into(), Scope::All));
        let job = serde_json::json!({"target": {"kind": "Job"}, "keep": "rank < 1", "schedule": "@daily"});
        let secret = serde_json::json!({"target": {"kind": "Secret"}, "keep": "rank < 1", "schedule": "@daily"});
        let cluster = serde_json::json!({"target": {"kind": "Secret", "namespaceSelector": {"matchLabels": {"a": "b"}}},
            "keep": "rank < 1", "schedule": "@daily"});
        let oci = serde_json::json!({"target": {"kind": "OCIArtifact", "registry": {"url": "http://127.0.0.1:1", "repositories": ["r"]}},
            "keep": "rank < 1", "schedule": "@daily",
            "referencedBy": [{"apiVersion": "example.com/v1", "kind": "Bundle", "refs": "[object.spec.image]"}]});
        for (namespace, spec, want, registry) in [
            (
                Some("a"),
                job.clone(),
                vec![("jobs".to_string(), ns("a"))],
                false,
            ),
            (None, job, vec![("jobs".to_string(), Scope::All)], false),
            (Some("a"), secret, secret_reads, false),
            (None, cluster, cluster_secret, false),
            (
                Some("a"),
                oci,
                {
                    oci_reads.push(("bundles".into(), Scope::All));
                    oci_reads
                },
                true,
            ),
        ] {
            let policy = compile(namespace, spec);
            let needs = needs(&policy);
            assert_eq!(needs.registry, registry);
            let reads = resolve(&needs, |c| {
                let (g, v) = group_version(&c.api_version);
                Some(Kind::new(
                    g,
                    v,
                    &c.kind,
                    &format!("{}s", c.kind.to_lowercase()),
                ))
            })
            .expect("all served");
            let mut got = kinds(&reads);
            let mut want = want;
            got.sort();
            want.sort();
            assert_eq!(got, want, "{namespace:?} {:?}", policy.target);
        }
    }

    #[test]
    fn a_referrer_kind_the_server_lacks_is_target_unavailable() {
        let policy = compile(
            Some("a"),
            serde_json::json!({"target": {"kind": "Job"}, "keep": "referencedBy.size() > 0", "schedule": "@daily",
                "referencedBy": [{"apiVersion": "example.com/v1", "kind": "Missing", "refs": "[object.spec.job]"}]}),
        );
        let err = resolve(&needs(&policy), |_| None).unwrap_err();
        assert_eq!(err.reason, ready::TARGET_UNAVAILABLE);
        assert_eq!(
            err.message,
            "spec.referencedBy: the API server does not serve kind Missing in example.com/v1"
        );
    }
}
