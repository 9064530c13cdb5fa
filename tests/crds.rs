//! The CRDs apply to a real API server by server-side apply, and its schema rejects mistakes at
//! apply time.

mod support;

use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::json;
use support::*;

fn rp_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("retainer.dev", "v1alpha1", "RetentionPolicy");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

#[tokio::test]
async fn crds_apply_and_reject_mistakes() {
    let bed = Bed::new("crds").await;
    install_crds(&bed.client).await;
    let api = rp_api(&bed.client, &bed.ns);
    let pp = PatchParams::apply("retainer-tests");
    let base = json!({"apiVersion": "retainer.dev/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": "ok"},
        "spec": {"target": {"kind": "Job"}, "keep": "rank < 1", "schedule": "@daily"}});
    api.patch("ok", &pp, &Patch::Apply(&base))
        .await
        .expect("a valid policy applies");

    let mistakes: Vec<(&str, serde_json::Value, &str)> = vec![
        (
            "namespace-selector",
            json!({"target": {"kind": "Job", "namespaceSelector": {}}, "keep": "true", "schedule": "@daily"}),
            "only allowed on a ClusterRetentionPolicy",
        ),
        (
            "percent",
            json!({"target": {"kind": "Job"}, "keep": "true", "schedule": "@daily", "deletion": {"abortAbovePercent": 150}}),
            "abortAbovePercent",
        ),
        (
            "negative-max",
            json!({"target": {"kind": "Job"}, "keep": "true", "schedule": "@daily", "deletion": {"maxPerSweep": -1}}),
            "maxPerSweep",
        ),
        (
            "registry-on-job",
            json!({"target": {"kind": "Job", "registry": {"url": "http://x", "repositories": ["a"]}}, "keep": "true", "schedule": "@daily"}),
            "registry is required for kind OCIArtifact and not allowed otherwise",
        ),
        (
            "oci-no-registry",
            json!({"target": {"kind": "OCIArtifact"}, "keep": "true", "schedule": "@daily"}),
            "registry is required",
        ),
        (
            "unknown-kind",
            json!({"target": {"kind": "ConfigMap"}, "keep": "true", "schedule": "@daily"}),
            "Unsupported value",
        ),
        (
            "empty-keep",
            json!({"target": {"kind": "Job"}, "keep": "", "schedule": "@daily"}),
            "keep",
        ),
        (
            "long-keep",
            json!({"target": {"kind": "Job"}, "keep": "x".repeat(5000), "schedule": "@daily"}),
            "keep",
        ),
        (
            "bad-url",
            json!({"target": {"kind": "OCIArtifact", "registry": {"url": "ftp://x", "repositories": ["a"]}}, "keep": "true", "schedule": "@daily"}),
            "url",
        ),
        (
            "bad-grace",
            json!({"target": {"kind": "Job"}, "keep": "true", "schedule": "@daily", "deletion": {"gracePeriod": "1d"}}),
            "gracePeriod",
        ),
        (
            "cred-namespace",
            json!({"target": {"kind": "OCIArtifact", "registry": {"url": "http://x", "repositories": ["a"], "credentialsSecretRef": {"name": "c", "namespace": "other"}}}, "keep": "true", "schedule": "@daily"}),
            "credentialsSecretRef.namespace is only allowed",
        ),
    ];
    for (name, spec, want) in mistakes {
        let mut obj = base.clone();
        obj["metadata"]["name"] = json!(name);
        obj["spec"] = spec;
        let err = api
            .patch(name, &pp, &Patch::Apply(&obj))
            .await
            .expect_err(name)
            .to_string();
        assert!(err.contains(want), "{name}: {err}");
    }
    bed.cleanup().await;
}
