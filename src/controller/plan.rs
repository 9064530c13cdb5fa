//! `retainer plan`: the verdicts a policy gives against the live cluster, read-only.

use kube::api::{DynamicObject, ListParams};
use kube::{Api, Client};
use serde_json::Value as Json;
use thiserror::Error;

use super::caches::{Kind, prune};
use super::inputs::{self, Scope};
use crate::api::{ClusterRetentionPolicy, PolicyView, RetentionPolicy};
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
    /// What the controller's Ready condition would say: a registry or a referrer kind that
    /// cannot be read.
    #[error("{reason}: {message}")]
    NotReady {
        reason: crate::status::ReadyReason,
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
    let (policy, objects) = gather(client, view).await?;
    let eval = check::evaluate_offline(&policy, objects, jiff::Timestamp::now());
    Ok((policy, eval))
}

/// The compiled policy and every object its evaluation reads, as the cluster (and, for OCI, the
/// registry) holds them now: what `plan` evaluates and `explain-verdict` explains.
pub async fn gather(
    client: &Client,
    view: PolicyView,
) -> Result<(CompiledPolicy, Vec<Json>), PlanError> {
    let policy = CompiledPolicy::compile(view)?;
    let needs = inputs::needs(&policy);
    let mut discovered = std::collections::BTreeMap::new();
    for c in &needs.custom {
        discovered.insert(
            c.clone(),
            inputs::discover(client, &c.api_version, &c.kind).await,
        );
    }
    let reads = inputs::resolve(&needs, |c| discovered.get(c).cloned().flatten()).map_err(|r| {
        PlanError::NotReady {
            reason: r.reason,
            message: r.message,
        }
    })?;
    let mut objects = Vec::new();
    if needs.registry {
        let opts = crate::oci::RegistryOptions::default();
        let cache = crate::oci::ManifestCache::default();
        let (_, docs) = crate::oci::fetch_inventory(client, &opts, &cache, &policy)
            .await
            .map_err(|r| PlanError::NotReady {
                reason: r.reason,
                message: r.message,
            })?;
        objects.extend(docs);
    }
    for r in &reads {
        let namespace = match &r.scope {
            Scope::All => None,
            Scope::Namespace(ns) => Some(ns.as_str()),
        };
        objects.extend(list(client, &r.kind, namespace).await?);
    }
    Ok((policy, objects))
}
