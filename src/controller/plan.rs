//! `retainer plan`: the verdicts a policy gives against the live cluster, read-only.

use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value as Json;
use thiserror::Error;

use super::caches::{Kind, prune};
use crate::api::{ClusterRetentionPolicy, PolicyView, RetentionPolicy, TargetKind};
use crate::check;
use crate::engine::{CompiledPolicy, Evaluation, PolicyError};

#[derive(Debug, Error)]
pub enum PlanError {
    #[error("reading policy {name}: {source}")]
    ReadPolicy { name: String, source: kube::Error },
    #[error("listing {plural}: {source}")]
    List { plural: String, source: kube::Error },
    #[error("the policy is not valid: {0}")]
    Invalid(#[from] PolicyError),
    #[error("{reason}: {message}")]
    Registry {
        reason: &'static str,
        message: String,
    },
}

/// Reads a policy by name: a RetentionPolicy in `namespace`, or a ClusterRetentionPolicy when
/// no namespace is given.
pub async fn fetch_policy(
    client: &Client,
    name: &str,
    namespace: Option<&str>,
) -> Result<PolicyView, PlanError> {
    let err = |source| PlanError::ReadPolicy {
        name: name.to_string(),
        source,
    };
    match namespace {
        Some(ns) => {
            let api: Api<RetentionPolicy> = Api::namespaced(client.clone(), ns);
            Ok(PolicyView::from(&api.get(name).await.map_err(err)?))
        }
        None => {
            let api: Api<ClusterRetentionPolicy> = Api::all(client.clone());
            Ok(PolicyView::from(&api.get(name).await.map_err(err)?))
        }
    }
}

async fn list(
    client: &Client,
    kind: &Kind,
    namespace: Option<&str>,
) -> Result<Vec<Json>, PlanError> {
    let ar = kind.resource();
    let api: Api<DynamicObject> = match namespace {
        Some(ns) => Api::namespaced_with(client.clone(), ns, &ar),
        None => Api::all_with(client.clone(), &ar),
    };
    let mut out = Vec::new();
    let mut lp = ListParams::default().limit(500);
    loop {
        let page = api.list(&lp).await.map_err(|source| PlanError::List {
            plural: kind.plural.clone(),
            source,
        })?;
        for o in page.items {
            let mut j = serde_json::to_value(&o).unwrap_or(Json::Null);
            j["apiVersion"] = Json::String(kind.api_version());
            j["kind"] = Json::String(kind.kind.clone());
            prune(&kind.kind, &mut j);
            out.push(j);
        }
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => lp = lp.continue_token(&c),
            _ => break,
        }
    }
    Ok(out)
}

/// Evaluates against what the cluster holds now. Reads only.
pub async fn plan(
    client: &Client,
    view: PolicyView,
) -> Result<(CompiledPolicy, Evaluation), PlanError> {
    let policy = CompiledPolicy::compile(view)?;
    let scope = policy.view.namespace.clone();
    let mut objects = match policy.target {
        TargetKind::Job => list(client, &Kind::jobs(), scope.as_deref()).await?,
        TargetKind::Secret => list(client, &Kind::secrets(), scope.as_deref()).await?,
        TargetKind::OciArtifact => {
            let opts = super::RegistryOptions::default();
            let cache = crate::oci::ManifestCache::default();
            super::fetch_inventory(client, &opts, &cache, &policy)
                .await
                .map(|(_, docs)| docs)
                .map_err(|r| PlanError::Registry {
                    reason: r.reason,
                    message: r.message,
                })?
        }
    };
    if policy.target == TargetKind::OciArtifact {
        // The mark uses references from every namespace.
        for k in Kind::builtin_referrers() {
            objects.extend(list(client, &k, None).await?);
        }
    }
    if policy.target == TargetKind::Secret {
        for k in Kind::builtin_referrers() {
            objects.extend(list(client, &k, scope.as_deref()).await?);
        }
    }
    if policy.view.is_cluster() {
        objects.extend(list(client, &Kind::namespaces(), None).await?);
    }
    for (api_version, kind, _) in &policy.referrer_sources {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = kube::api::GroupVersionKind::gvk(group, version, kind);
        if let Ok((ar, _)) = kube::discovery::pinned_kind(client, &gvk).await {
            let k = Kind::new(&ar.group, &ar.version, &ar.kind, &ar.plural);
            objects.extend(list(client, &k, scope.as_deref()).await?);
        }
    }
    let eval = check::evaluate_offline(&policy, objects, jiff::Timestamp::now());
    Ok((policy, eval))
}
