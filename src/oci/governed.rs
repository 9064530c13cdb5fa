//! The registry inventory a policy governs, read as the controller, `plan` and `check` read
//! it: the policy's credentials Secret and CA bundle first, then every selected repository.
//! Each failure is the Ready condition the policy shows for it.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use serde_json::Value as Json;

use super::auth::{CredentialsError, credentials_for};
use super::ca::extra_roots;
use super::client::{RegistryClient, RequestTally};
use super::inventory::{ManifestCache, inventory};
use crate::engine::CompiledPolicy;
use crate::status::{self, Readiness};

/// Takes the registry requests an inventory made, by registry host.
pub type CountRequests<'a> = dyn Fn(&str, &RequestTally) + Sync + 'a;

/// How the controller reads and deletes from registries.
#[derive(Clone, Debug)]
pub struct RegistryOptions {
    /// Connect and whole-request timeout of each registry request.
    pub timeout: Duration,
    pub concurrency: usize,
    /// How often a registry's inventory is read again between sweeps.
    pub refresh: Duration,
    /// How long one whole inventory read (every repository, retries included) may take.
    pub deadline: Duration,
}

impl Default for RegistryOptions {
    fn default() -> Self {
        RegistryOptions {
            timeout: Duration::from_secs(10),
            concurrency: 8,
            refresh: Duration::from_secs(300),
            deadline: Duration::from_secs(300),
        }
    }
}

/// Reads the credentials and the registry's inventory; a failure is the Ready condition to show.
pub async fn fetch_inventory(
    kube: &Client,
    opts: &RegistryOptions,
    manifests: &ManifestCache,
    policy: &CompiledPolicy,
) -> Result<(Arc<RegistryClient>, Vec<Json>), Readiness> {
    fetch_inventory_counted(kube, opts, manifests, policy, None).await
}

/// `fetch_inventory`, handing the registry requests it made (by host) to `count`: the
/// controller adds them to its metrics.
pub async fn fetch_inventory_counted(
    kube: &Client,
    opts: &RegistryOptions,
    manifests: &ManifestCache,
    policy: &CompiledPolicy,
    count: Option<&CountRequests<'_>>,
) -> Result<(Arc<RegistryClient>, Vec<Json>), Readiness> {
    let Some(reg) = policy.view.spec.target.registry.as_ref() else {
        return Err(Readiness {
            ready: false,
            reason: status::ready::INVALID_TARGET,
            message: "spec.target.registry is required for kind OCIArtifact".into(),
        });
    };
    let host = policy.registry_host.clone().unwrap_or_default();
    let cred_error = |message: String| Readiness {
        ready: false,
        reason: status::ready::CREDENTIALS_ERROR,
        message,
    };
    let creds = match &reg.credentials_secret_ref {
        None => None,
        Some(r) => {
            // A namespaced policy may only use a Secret of its own namespace (the schema forbids
            // naming another); a cluster policy must name one.
            let ns = match (&policy.view.namespace, &r.namespace) {
                (Some(own), _) => own.clone(),
                (None, Some(ns)) => ns.clone(),
                (None, None) => {
                    return Err(cred_error(
                        "spec.target.registry.credentialsSecretRef.namespace is required on a ClusterRetentionPolicy".into(),
                    ));
                }
            };
            let secrets: Api<Secret> = Api::namespaced(kube.clone(), &ns);
            let secret = match secrets.get_opt(&r.name).await {
                Ok(Some(s)) => s,
                Ok(None) => {
                    return Err(cred_error(format!(
                        "credentials Secret {ns}/{} not found",
                        r.name
                    )));
                }
                Err(e) => {
                    return Err(cred_error(format!(
                        "reading credentials Secret {ns}/{}: {e}",
                        r.name
                    )));
                }
            };
            let bytes = secret
                .data
                .as_ref()
                .and_then(|d| d.get(".dockerconfigjson"))
                .map(|b| b.0.clone())
                .ok_or_else(|| {
                    cred_error(format!(
                        "credentials Secret {ns}/{}: {}",
                        r.name,
                        CredentialsError::MissingKey
                    ))
                })?;
            Some(
                credentials_for(&bytes, &host)
                    .map_err(|e| cred_error(format!("credentials Secret {ns}/{}: {e}", r.name)))?,
            )
        }
    };
    let roots = extra_roots(kube, policy.view.namespace.as_deref(), reg)
        .await
        .map_err(|e| Readiness {
            ready: false,
            reason: e.reason(),
            message: e.to_string(),
        })?;
    let client =
        RegistryClient::with_roots(&reg.url, creds, opts.timeout, &roots).map_err(|e| {
            Readiness {
                ready: false,
                reason: status::ready::INVALID_TARGET,
                message: e.to_string(),
            }
        })?;
    // Tag resolutions and referrer listings are reused for one refresh period: a sweep checks
    // them afresh before it deletes anything.
    let read = inventory(
        &client,
        manifests,
        &reg.repositories,
        opts.concurrency,
        opts.refresh,
    )
    .await;
    if let Some(count) = count {
        count(client.host(), &client.counts.take());
    }
    match read {
        Ok(docs) => Ok((Arc::new(client), docs)),
        Err(e) if e.is_auth() => Err(cred_error(format!(
            "registry {host} refused the credentials: {e}"
        ))),
        Err(e) => Err(Readiness {
            ready: false,
            reason: status::ready::TARGET_UNAVAILABLE,
            message: e.to_string(),
        }),
    }
}
