//! Smoke tests proving the test bed is real: the API server, kube-controller-manager's TTL
//! controller, and deletes by digest on both registries.

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::json;
use support::*;

#[tokio::test]
async fn finished_job_with_ttl_zero_is_removed_by_kube_controller_manager() {
    let bed = Bed::new("smoke-ttl").await;
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    let job: Job = serde_json::from_value(json!({
        "metadata": {"name": "done"},
        "spec": {"ttlSecondsAfterFinished": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}
    }))
    .unwrap();
    jobs.create(&PostParams::default(), &job)
        .await
        .expect("create job");
    // No job controller runs here: mark the Job finished through the status subresource, in
    // the order the API server's validation demands.
    let now = jiff::Timestamp::now().to_string();
    let pp = PatchParams::default();
    jobs.patch_status(
        "done",
        &pp,
        &Patch::Merge(json!({"status": {"startTime": now}})),
    )
    .await
    .expect("startTime");
    jobs.patch_status(
        "done",
        &pp,
        &Patch::Merge(json!({"status": {
        "completionTime": now, "succeeded": 1,
        "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastTransitionTime": now}]}})),
    )
    .await
    .expect("complete");
    wait_for(
        "the TTL controller to delete the finished Job",
        Duration::from_secs(60),
        || async {
            match jobs.get_opt("done").await.expect("get job") {
                None => Some(()),
                Some(_) => None,
            }
        },
    )
    .await;
    bed.cleanup().await;
}

async fn delete_by_digest_removes_the_tag(which: &str) {
    let reg = registry(which);
    let repo = unique("smoke/app-");
    let digest = push_image(
        &reg,
        &repo,
        "v1",
        &unique("seed"),
        "2026-01-01T00:00:00Z",
        None,
    )
    .await;
    assert_eq!(tags(&reg, &repo).await, vec!["v1"]);
    let resp = reqwest::Client::new()
        .delete(format!("http://{reg}/v2/{repo}/manifests/{digest}"))
        .send()
        .await
        .expect("delete manifest");
    assert_eq!(resp.status().as_u16(), 202, "{which}: DELETE by digest");
    let head = reqwest::Client::new()
        .head(format!("http://{reg}/v2/{repo}/manifests/{digest}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("head manifest");
    assert_eq!(head.status().as_u16(), 404, "{which}: manifest gone");
    assert!(tags(&reg, &repo).await.is_empty(), "{which}: tag gone");
}

#[tokio::test]
async fn olareg_deletes_by_digest() {
    delete_by_digest_removes_the_tag("olareg").await;
}

#[tokio::test]
async fn distribution_deletes_by_digest() {
    delete_by_digest_removes_the_tag("distribution").await;
}
