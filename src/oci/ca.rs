//! Private certificate authorities for a registry: `spec.target.registry.caBundleRef` names a
//! key of a Secret or ConfigMap holding PEM certificates, which that registry's client trusts in
//! addition to the bundled public roots. Nothing else is loosened: the certificate must still
//! chain to a root and name the host, and plain HTTP is used only for an http:// URL.
//!
//! Which Ready reason a failure gets: a reference the user must fix (the object or key is
//! missing, the PEM does not parse, a cluster policy names no namespace) is `InvalidTarget`;
//! a read the API server refused or failed (RBAC, an outage) is `TargetUnavailable`, like any
//! other input the controller cannot read.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use thiserror::Error;

use crate::api::{CaBundleKind, CaBundleRef, Registry};
use crate::status::ready;

/// The most a CA bundle may weigh; a public roots file is about 200 KiB.
const MAX_BUNDLE: usize = 1 << 20;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CaBundleError {
    #[error("spec.target.registry.caBundleRef.namespace is required on a ClusterRetentionPolicy")]
    NamespaceRequired,
    #[error("reading the CA bundle: {kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error("reading the CA bundle {kind} {namespace}/{name}: {message}")]
    Unreadable {
        kind: &'static str,
        namespace: String,
        name: String,
        message: String,
    },
    #[error("reading the CA bundle: {kind} {namespace}/{name} has no key {key:?}")]
    MissingKey {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
    },
    #[error("parsing the CA bundle {kind} {namespace}/{name} key {key:?}: {message}")]
    InvalidPem {
        kind: &'static str,
        namespace: String,
        name: String,
        key: String,
        message: String,
    },
}

impl CaBundleError {
    /// The Ready condition's reason for this failure (see the module comment).
    pub fn reason(&self) -> crate::status::ReadyReason {
        match self {
            CaBundleError::Unreadable { .. } => ready::TARGET_UNAVAILABLE,
            _ => ready::INVALID_TARGET,
        }
    }
}

/// CA certificates a registry client trusts beyond the bundled roots; empty for most registries.
#[derive(Clone, Debug, Default)]
pub struct ExtraRoots {
    pub certificates: Vec<reqwest::Certificate>,
}

/// Parses a PEM bundle of one or more CA certificates, each checked as rustls will use it, so
/// that a bad bundle is reported here rather than as a failed connection later.
pub fn parse_pem(bytes: &[u8]) -> Result<Vec<reqwest::Certificate>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject as _;
    let mut store = rustls::RootCertStore::empty();
    let mut out = Vec::new();
    for (i, der) in CertificateDer::pem_slice_iter(bytes).enumerate() {
        let n = i + 1;
        let der = der.map_err(|e| format!("certificate {n}: not valid PEM: {e}"))?;
        store
            .add(der.clone())
            .map_err(|e| format!("certificate {n}: not a usable CA certificate: {e}"))?;
        out.push(
            reqwest::Certificate::from_der(&der).map_err(|e| format!("certificate {n}: {e}"))?,
        );
    }
    if out.is_empty() {
        return Err("no PEM certificate (-----BEGIN CERTIFICATE-----) in it".into());
    }
    Ok(out)
}

/// The namespace a policy's CA bundle is read from: its own for a RetentionPolicy, the named
/// one for a ClusterRetentionPolicy.
fn bundle_namespace(
    policy_namespace: Option<&str>,
    r: &CaBundleRef,
) -> Result<String, CaBundleError> {
    match (policy_namespace, &r.namespace) {
        (Some(own), _) => Ok(own.to_string()),
        (None, Some(ns)) => Ok(ns.clone()),
        (None, None) => Err(CaBundleError::NamespaceRequired),
    }
}

/// Reads the PEM bytes `r` names.
async fn read_bundle(
    kube: &Client,
    namespace: &str,
    r: &CaBundleRef,
) -> Result<Vec<u8>, CaBundleError> {
    let kind = r.kind.as_str();
    let unreadable = |e: kube::Error| CaBundleError::Unreadable {
        kind,
        namespace: namespace.to_string(),
        name: r.name.clone(),
        message: e.to_string(),
    };
    let not_found = || CaBundleError::NotFound {
        kind,
        namespace: namespace.to_string(),
        name: r.name.clone(),
    };
    let value = match r.kind {
        CaBundleKind::Secret => {
            let secret = Api::<Secret>::namespaced(kube.clone(), namespace)
                .get_opt(&r.name)
                .await
                .map_err(unreadable)?
                .ok_or_else(not_found)?;
            // stringData is write-only: a read returns everything under data.
            secret.data.and_then(|mut d| d.remove(&r.key)).map(|b| b.0)
        }
        CaBundleKind::ConfigMap => {
            let cm = Api::<ConfigMap>::namespaced(kube.clone(), namespace)
                .get_opt(&r.name)
                .await
                .map_err(unreadable)?
                .ok_or_else(not_found)?;
            cm.data
                .and_then(|mut d| d.remove(&r.key))
                .map(String::into_bytes)
                .or_else(|| {
                    cm.binary_data
                        .and_then(|mut d| d.remove(&r.key))
                        .map(|b| b.0)
                })
        }
    };
    value.ok_or_else(|| CaBundleError::MissingKey {
        kind,
        namespace: namespace.to_string(),
        name: r.name.clone(),
        key: r.key.clone(),
    })
}

/// The extra roots `registry.caBundleRef` names, read from the cluster; none without one.
pub async fn extra_roots(
    kube: &Client,
    policy_namespace: Option<&str>,
    registry: &Registry,
) -> Result<ExtraRoots, CaBundleError> {
    let Some(r) = &registry.ca_bundle_ref else {
        return Ok(ExtraRoots::default());
    };
    let namespace = bundle_namespace(policy_namespace, r)?;
    let bytes = read_bundle(kube, &namespace, r).await?;
    let invalid = |message: String| CaBundleError::InvalidPem {
        kind: r.kind.as_str(),
        namespace: namespace.clone(),
        name: r.name.clone(),
        key: r.key.clone(),
        message,
    };
    if bytes.len() > MAX_BUNDLE {
        return Err(invalid(format!(
            "{} bytes is more than the {MAX_BUNDLE} a bundle may have",
            bytes.len()
        )));
    }
    let certificates = parse_pem(&bytes).map_err(invalid)?;
    Ok(ExtraRoots { certificates })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_what_is_not_a_pem_ca_bundle() {
        let e = parse_pem(b"hello").unwrap_err();
        assert!(e.contains("no PEM certificate"), "{e}");
        let e = parse_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
            .unwrap_err();
        assert!(
            e.starts_with("certificate 1: not a usable CA certificate"),
            "{e}"
        );
        let e = parse_pem(b"-----BEGIN CERTIFICATE-----\nAAAA\n").unwrap_err();
        assert!(e.starts_with("certificate 1: not valid PEM"), "{e}");
    }

    #[test]
    fn a_cluster_policy_must_name_the_namespace() {
        let r = CaBundleRef {
            kind: CaBundleKind::ConfigMap,
            name: "ca".into(),
            key: "ca.crt".into(),
            namespace: None,
        };
        assert_eq!(
            bundle_namespace(None, &r),
            Err(CaBundleError::NamespaceRequired)
        );
        assert_eq!(bundle_namespace(Some("team"), &r).as_deref(), Ok("team"));
        assert_eq!(
            CaBundleError::NamespaceRequired.reason(),
            ready::INVALID_TARGET
        );
    }
}
