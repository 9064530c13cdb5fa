//! `retainer plan` and the controller decide from the same inputs: the same kinds, read in the
//! same namespaces, the same refusal when a referrer kind is not served. Each test runs both on
//! one policy and compares them object by object.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::*;

const GROUP: &str = "parity.retainer.dev";

/// A small namespaced kind that names an image or a Job, as Fleet's Bundles or Flux's
/// HelmReleases do.
async fn install_bundle_crd(bed: &Bed) -> ApiResource {
    let crds: Api<CustomResourceDefinition> = Api::all(bed.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": {"name": format!("bundles.{GROUP}")},
        "spec": {"group": GROUP, "scope": "Namespaced",
            "names": {"plural": "bundles", "singular": "bundle", "kind": "Bundle"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))
    .unwrap();
    crds.patch(
        &format!("bundles.{GROUP}"),
        &PatchParams::apply("retainer-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .unwrap();
    let ar =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(GROUP, "v1", "Bundle"), "bundles");
    let probe: Api<DynamicObject> = Api::all_with(bed.client.clone(), &ar);
    wait_for(
        "the Bundle CRD to be served",
        Duration::from_secs(30),
        || async { probe.list(&Default::default()).await.ok().map(|_| ()) },
    )
    .await;
    ar
}

async fn bundle(bed: &Bed, ar: &ApiResource, name: &str, spec: Value) {
    let api: Api<DynamicObject> = Api::namespaced_with(bed.client.clone(), &bed.ns, ar);
    let obj: DynamicObject = serde_json::from_value(json!({"apiVersion": format!("{GROUP}/v1"),
        "kind": "Bundle", "metadata": {"name": name}, "spec": spec}))
    .unwrap();
    api.create(&PostParams::default(), &obj).await.unwrap();
}

/// What the controller's status says once it describes the current generation and stops moving.
async fn settled_status(bed: &Bed, name: &str) -> Value {
    ready(bed, name).await;
    let api = policies(bed);
    wait_for("status to settle", Duration::from_secs(60), || async {
        let before = api.get(name).await.ok()?;
        before.data["status"]["summary"].as_object()?;
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let after = api.get(name).await.ok()?;
        (before.metadata.resource_version == after.metadata.resource_version)
            .then(|| after.data["status"].clone())
    })
    .await
}

/// The objects each side would delete (status lists up to 20; these tests stay below).
fn plan_deletes(plan: &Value) -> BTreeSet<String> {
    plan["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["verdict"] == "delete")
        .map(|r| {
            r["name"]
                .as_str()
                .or(r["digest"].as_str())
                .unwrap()
                .to_string()
        })
        .collect()
}

fn status_deletes(st: &Value) -> BTreeSet<String> {
    st["candidates"]
        .as_array()
        .map(|cs| {
            cs.iter()
                .map(|c| {
                    c["name"]
                        .as_str()
                        .or(c["digest"].as_str())
                        .unwrap()
                        .to_string()
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_referrer_kind_the_server_lacks_stops_both_alike() {
    let bed = setup("parity-missing").await;
    job(&bed, "j1", json!({}), "succeeded").await;
    apply_policy(
        &bed,
        "missing-kind",
        json!({"target": {"kind": "Job"}, "keep": "referencedBy.size() > 0", "schedule": "0 0 1 1 *",
               "referencedBy": [{"apiVersion": format!("{GROUP}/v1"), "kind": "NoSuchKind", "refs": "[object.spec.job]"}]}),
    )
    .await;
    let ready = ready_condition(&bed, "missing-kind").await;
    assert_eq!(ready["status"], "False", "{ready}");
    assert_eq!(ready["reason"], "TargetUnavailable", "{ready}");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args(["plan", "missing-kind", "-n", &bed.ns, "-o", "json"])
        .output()
        .await
        .unwrap();
    assert!(
        !out.status.success(),
        "plan must refuse as the controller does"
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    let want = format!(
        "{}: {}",
        ready["reason"].as_str().unwrap(),
        ready["message"].as_str().unwrap()
    );
    assert!(
        stderr.contains(&want),
        "plan said {stderr:?}, the controller {want:?}"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn jobs_with_custom_referrers_decide_alike() {
    let bed = setup("parity-jobs").await;
    let ar = install_bundle_crd(&bed).await;
    let l = |r: &str| json!({"app": r});
    for (name, app) in [
        ("a-1", "a"),
        ("a-2", "a"),
        ("b-1", "b"),
        ("b-2", "b"),
        ("c-1", "c"),
    ] {
        job(&bed, name, l(app), "succeeded").await;
    }
    job(&bed, "a-failed", l("a"), "failed").await;
    bundle(&bed, &ar, "uses-b-1", json!({"job": "b-1"})).await;
    apply_policy(
        &bed,
        "jobs",
        json!({"target": {"kind": "Job"},
               "match": "object.status.?succeeded.orValue(0) > 0",
               "groupBy": "object.metadata.labels['app']",
               "orderBy": "object.metadata.name",
               "keep": "rank < 1 || referencedBy.size() > 0",
               "referencedBy": [{"apiVersion": format!("{GROUP}/v1"), "kind": "Bundle", "refs": "has(object.spec.job) ? [object.spec.job] : []"}],
               "schedule": "0 0 1 1 *"}),
    )
    .await;
    let st = settled_status(&bed, "jobs").await;
    let plan = plan_json(&["jobs", "-n", &bed.ns]).await;
    assert_eq!(plan["summary"], st["summary"], "{plan} {st}");
    assert_eq!(plan_deletes(&plan), status_deletes(&st), "{plan} {st}");
    assert_eq!(
        status_deletes(&st),
        BTreeSet::from(["a-1".to_string()]),
        "a-2 ranks first, b-1 is referenced, b-2 ranks first, c-1 is alone: {st}"
    );
    let reason = |name: &str| {
        plan["results"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .map(|r| r["reason"].as_str().unwrap_or("").to_string())
    };
    assert_eq!(
        reason("b-1").as_deref(),
        Some("keep: referencedBy.size() > 0"),
        "{plan}"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn namespaced_oci_policy_reads_custom_referrers_in_every_namespace() {
    let bed = setup("parity-oci").await;
    let other = Bed::new("parity-oci-refs").await;
    let ar = install_bundle_crd(&bed).await;
    let reg = registry("olareg");
    let repo = format!("{}/app", unique("parity"));
    let mut digests = std::collections::BTreeMap::new();
    for tag in ["1.0.0", "1.1.0", "1.2.0"] {
        let d = push_image(&reg, &repo, tag, &unique(tag), "2026-01-01T00:00:00Z", None).await;
        digests.insert(tag, d);
    }
    // Referenced from another namespace than the policy's: the mark counts it all the same.
    // (Bundles of other tests name Jobs, not images: the refs expressions allow for both.)
    bundle(
        &other,
        &ar,
        "pins-1-0-0",
        json!({"image": format!("{reg}/{repo}:1.0.0")}),
    )
    .await;
    apply_policy(
        &bed,
        "images",
        json!({"target": {"kind": "OCIArtifact", "registry": {"url": format!("http://{reg}"), "repositories": [repo]}},
               "orderBy": "semver(object.tags[0])",
               "keep": "rank < 1 || referencedBy.size() > 0",
               "referencedBy": [{"apiVersion": format!("{GROUP}/v1"), "kind": "Bundle", "refs": "has(object.spec.image) ? [object.spec.image] : []"}],
               "schedule": "0 0 1 1 *"}),
    )
    .await;
    let st = settled_status(&bed, "images").await;
    let plan = plan_json(&["images", "-n", &bed.ns]).await;
    assert_eq!(plan["summary"], st["summary"], "{plan} {st}");
    assert_eq!(plan_deletes(&plan), status_deletes(&st), "{plan} {st}");
    assert_eq!(
        status_deletes(&st),
        BTreeSet::from([digests["1.1.0"].clone()]),
        "1.2.0 ranks first, 1.0.0 is referenced from {}: {st}",
        other.ns
    );
    other.cleanup().await;
    bed.cleanup().await;
}
