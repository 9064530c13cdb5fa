//! Only the readers wake: a change to a kind wakes the policies that read that kind and no
//! other. A Job policy and a Secret policy (which reads Pods for `referencedBy`) run in a real
//! controller; Pods come and go, and only the Secret policy's worker steps
//! (`retainer_policy_wakes_total`) while the Job policy's count stays where it was.

mod support;

use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, PostParams};
use serde_json::{Value, json};
use support::*;
use tokio::process::Command;

async fn metrics(log: &std::path::Path) -> String {
    let addr = wait_for("the metrics address", Duration::from_secs(20), || async {
        std::fs::read_to_string(log).ok()?.lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "serving /metrics, /healthz and /readyz")
                .then(|| v["fields"]["addr"].as_str().map(String::from))
                .flatten()
        })
    })
    .await;
    reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body")
}

/// `retainer_policy_wakes_total` of one policy.
fn wakes(text: &str, policy: &str, ns: &str) -> u64 {
    let series = format!("retainer_policy_wakes_total{{policy=\"{policy}\",namespace=\"{ns}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_change_wakes_only_the_policies_that_read_its_kind() {
    let bed = Bed::new("wakes").await;
    install_crds(&bed.client).await;
    job(&bed, "j1", json!({"app": "w"}), "succeeded").await;
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "s1", "labels": {"app": "w"}}, "stringData": {"k": "v"}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("create secret");

    let dir = std::env::temp_dir().join(unique("retainer-wakes-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log = dir.join("retainer.log");
    let _child = Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--debounce",
            "50ms",
            "--policy-selector",
            &owner_selector(),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start retainer run");
    apply_policy(
        &bed,
        "jobs",
        json!({"target": {"kind": "Job", "selector": {"matchLabels": {"app": "w"}}},
               "keep": "true", "schedule": "0 0 29 2 *"}),
    )
    .await;
    apply_policy(
        &bed,
        "secrets",
        json!({"target": {"kind": "Secret", "selector": {"matchLabels": {"app": "w"}}},
               "keep": "referencedBy.size() > 0", "schedule": "0 0 29 2 *"}),
    )
    .await;
    summary(&bed, "jobs", 1).await;
    summary(&bed, "secrets", 1).await;
    // Settled: both have written their status and been woken by their own writes.
    let ns = bed.ns.clone();
    let before = wait_for(
        "the wake counts to settle",
        Duration::from_secs(30),
        || async {
            let a = metrics(&log).await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            let b = metrics(&log).await;
            let counts = |t: &str| (wakes(t, "jobs", &ns), wakes(t, "secrets", &ns));
            (counts(&a) == counts(&b) && counts(&b).0 > 0).then(|| counts(&b))
        },
    )
    .await;

    // Pods mounting the Secret, one at a time, then gone again.
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &bed.ns);
    for i in 0..10 {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": format!("p{i}")},
            "spec": {"containers": [{"name": "c", "image": "127.0.0.1:1/none:1"}],
                     "volumes": [{"name": "s", "secret": {"secretName": "s1"}}]}}))
        .expect("pod");
        pods.create(&PostParams::default(), &pod)
            .await
            .expect("create pod");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    wait_for("s1 kept as referenced", Duration::from_secs(20), || async {
        let p = policies(&bed).get("secrets").await.ok()?;
        (p.data["status"]["summary"]["kept"] == 1).then_some(())
    })
    .await;
    for i in 0..10 {
        pods.delete(&format!("p{i}"), &DeleteParams::default().grace_period(0))
            .await
            .expect("delete pod");
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let text = metrics(&log).await;
    let after = (wakes(&text, "jobs", &ns), wakes(&text, "secrets", &ns));
    assert!(
        after.1 > before.1,
        "the Secret policy reads Pods and must have woken: {before:?} -> {after:?}"
    );
    assert_eq!(
        after.0, before.0,
        "the Job policy reads no Pods and must not have woken: {before:?} -> {after:?}"
    );
    bed.cleanup().await;
}
