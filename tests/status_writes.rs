//! Status is written when what it says changes, not when the policy is evaluated again: a
//! policy whose keep fails on a map (an error whose text once printed the map in hash order) is
//! evaluated again on every change of its Jobs and its status stays as written.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use support::*;

#[tokio::test]
async fn evaluations_that_decide_the_same_write_status_once() {
    let bed = setup("writes").await;
    let labels: serde_json::Map<String, serde_json::Value> = (0..12)
        .map(|i| (format!("label-{i:02}"), json!(format!("v{i}"))))
        .collect();
    for name in ["j1", "j2", "j3"] {
        job(&bed, name, json!(labels), "succeeded").await;
    }
    apply_policy(
        &bed,
        "fails-on-a-map",
        json!({"target": {"kind": "Job"},
               "keep": "object.metadata.labels + 1 > 0", "schedule": "0 0 1 1 *"}),
    )
    .await;
    summary(&bed, "fails-on-a-map", 3).await;
    let api = policies(&bed);
    let settled = wait_for("status to settle", Duration::from_secs(30), || async {
        let before = api.get("fails-on-a-map").await.ok()?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let after = api.get("fails-on-a-map").await.ok()?;
        (before.metadata.resource_version == after.metadata.resource_version).then_some(after)
    })
    .await;
    assert_eq!(
        settled.data["status"]["summary"]["errors"], 3,
        "{:?}",
        settled.data
    );

    // Ten changes to governed Jobs, each evaluated again after the debounce.
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    for i in 0..10 {
        let patch = json!({"metadata": {"annotations": {"touched": i.to_string()}}});
        jobs.patch(
            ["j1", "j2", "j3"][i % 3],
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await
        .unwrap();
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = api.get("fails-on-a-map").await.unwrap();
    assert_eq!(
        after.metadata.resource_version, settled.metadata.resource_version,
        "status was written again though nothing it says changed: {:?}",
        after.data["status"]
    );

    // The controller was evaluating all along: a new Job shows at once.
    job(&bed, "j4", json!(labels), "succeeded").await;
    let st = summary(&bed, "fails-on-a-map", 4).await;
    assert_eq!(st["summary"]["errors"], 4);
    bed.cleanup().await;
}
