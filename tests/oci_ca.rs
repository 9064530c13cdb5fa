//! A registry whose certificate a private CA signed: CNCF distribution v3 over HTTPS with a
//! certificate from the test bed's throw-away CA (`RETAINER_REGISTRY_CA`), trusted only through
//! `spec.target.registry.caBundleRef`.

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::*;

const OLD: &str = "2026-01-01T00:00:00Z";

fn ca_pem() -> String {
    let path = std::env::var("RETAINER_REGISTRY_CA")
        .expect("RETAINER_REGISTRY_CA is not set: start the test bed (make test)");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

/// The TLS registry as a test reaches it: trusting the private CA.
fn direct(reg: &str) -> Direct {
    let ca = reqwest::Certificate::from_pem(ca_pem().as_bytes()).expect("the CA parses");
    Direct {
        base: format!("https://{reg}"),
        http: reqwest::Client::builder()
            .add_root_certificate(ca)
            .build()
            .expect("client"),
        auth: None,
    }
}

async fn config_map(bed: &Bed, name: &str, data: Value) {
    let cm: ConfigMap =
        serde_json::from_value(json!({"metadata": {"name": name}, "data": data})).unwrap();
    Api::<ConfigMap>::namespaced(bed.client.clone(), &bed.ns)
        .create(&PostParams::default(), &cm)
        .await
        .unwrap();
}

fn spec(reg: &str, repo: &str, ca: Option<Value>) -> Value {
    let mut registry = json!({"url": format!("https://{reg}"), "repositories": [repo]});
    if let Some(ca) = ca {
        registry["caBundleRef"] = ca;
    }
    json!({"target": {"kind": "OCIArtifact", "registry": registry},
        "orderBy": "semver(object.tags[0])", "keep": "rank < 1", "schedule": "0 0 29 2 *"})
}

async fn not_ready(bed: &Bed, name: &str, reason: &str, needle: &str) {
    let c = ready_condition(bed, name).await;
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some(reason)),
        "{name}: {c}"
    );
    assert!(
        c["message"].as_str().unwrap_or_default().contains(needle),
        "{name}: want {needle:?} in {c}"
    );
}

#[tokio::test]
async fn a_private_ca_is_trusted_only_through_its_bundle() {
    let bed = setup("oci-ca").await;
    let reg = registry("distribution-tls");
    let repo = unique("ca/app-");
    let to = direct(&reg);
    let old = push_image_to(&to, &repo, "1.0.0", &unique("a"), OLD, None).await;
    let new = push_image_to(&to, &repo, "2.0.0", &unique("b"), OLD, None).await;

    apply_policy(&bed, "untrusted", spec(&reg, &repo, None)).await;
    not_ready(
        &bed,
        "untrusted",
        "TargetUnavailable",
        "registry certificate is not trusted (unknown issuer): set target.registry.caBundleRef",
    )
    .await;

    config_map(&bed, "registry-ca", json!({"ca.crt": ca_pem()})).await;
    let with_ca = json!({"kind": "ConfigMap", "name": "registry-ca", "key": "ca.crt"});
    apply_policy(&bed, "trusted", spec(&reg, &repo, Some(with_ca))).await;
    let st = summary(&bed, "trusted", 2).await;
    assert_eq!(st["summary"]["candidates"], 1, "{st}");
    // `plan` reads the same bundle.
    let plan = plan_json(&["trusted", "-n", &bed.ns]).await;
    assert_eq!(plan["summary"]["candidates"], 1, "{plan}");
    let swept = sweep(&bed, "trusted").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    assert!(!exists_at(&to, &repo, &old).await, "1.0.0 deleted");
    assert!(exists_at(&to, &repo, &new).await, "2.0.0 kept");

    // The same bundle from a Secret.
    let secret: Secret = serde_json::from_value(json!({"metadata": {"name": "registry-ca"},
        "stringData": {"bundle.pem": ca_pem()}}))
    .unwrap();
    Api::<Secret>::namespaced(bed.client.clone(), &bed.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
    let from_secret = json!({"kind": "Secret", "name": "registry-ca", "key": "bundle.pem"});
    apply_policy(&bed, "from-secret", spec(&reg, &repo, Some(from_secret))).await;
    summary(&bed, "from-secret", 1).await;
    bed.cleanup().await;
}

#[tokio::test]
async fn a_bad_bundle_is_an_invalid_target() {
    let bed = setup("oci-badca").await;
    let reg = registry("distribution-tls");
    config_map(
        &bed,
        "bundles",
        json!({"garbage": "not a certificate", "truncated": "-----BEGIN CERTIFICATE-----\nMIIB\n"}),
    )
    .await;
    let cases = [
        (
            "missing-object",
            json!({"kind": "ConfigMap", "name": "no-such-map", "key": "ca.crt"}),
            "ConfigMap",
        ),
        (
            "missing-key",
            json!({"kind": "ConfigMap", "name": "bundles", "key": "ca.crt"}),
            "has no key \"ca.crt\"",
        ),
        (
            "garbage",
            json!({"kind": "ConfigMap", "name": "bundles", "key": "garbage"}),
            "no PEM certificate",
        ),
        (
            "truncated",
            json!({"kind": "ConfigMap", "name": "bundles", "key": "truncated"}),
            "certificate 1: not valid PEM",
        ),
    ];
    for (name, ca, needle) in cases {
        apply_policy(&bed, name, spec(&reg, "any/app", Some(ca))).await;
        not_ready(&bed, name, "InvalidTarget", needle).await;
    }
    let c = ready_condition(&bed, "missing-object").await;
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains(&format!("ConfigMap {}/no-such-map not found", bed.ns)),
        "{c}"
    );

    // A RetentionPolicy reads its own namespace only: the API refuses another.
    let obj = json!({"apiVersion": "retainer.dev/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": "elsewhere", "labels": owner_labels()},
        "spec": spec(&reg, "any/app", Some(json!({"kind": "ConfigMap", "name": "ca", "key": "ca.crt", "namespace": "kube-system"})))});
    let err = policies(&bed)
        .patch(
            "elsewhere",
            &PatchParams::apply("retainer-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect_err("caBundleRef.namespace on a RetentionPolicy");
    assert!(
        err.to_string()
            .contains("caBundleRef.namespace is only allowed on a ClusterRetentionPolicy"),
        "{err}"
    );
    // A ClusterRetentionPolicy must name it.
    let gvk =
        kube::api::GroupVersionKind::gvk("retainer.dev", "v1alpha1", "ClusterRetentionPolicy");
    let cluster: Api<DynamicObject> =
        Api::all_with(bed.client.clone(), &kube::api::ApiResource::from_gvk(&gvk));
    let name = unique("ca-no-ns-");
    let obj = json!({"apiVersion": "retainer.dev/v1alpha1", "kind": "ClusterRetentionPolicy",
        "metadata": {"name": name, "labels": owner_labels()},
        "spec": spec(&reg, "any/app", Some(json!({"kind": "ConfigMap", "name": "ca", "key": "ca.crt"})))});
    let err = cluster
        .patch(
            &name,
            &PatchParams::apply("retainer-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect_err("a ClusterRetentionPolicy without caBundleRef.namespace");
    assert!(
        err.to_string()
            .contains("must name the namespace of its CA bundle"),
        "{err}"
    );
    bed.cleanup().await;
}
