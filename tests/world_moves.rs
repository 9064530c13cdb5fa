//! What happens if the world changes during a sweep. Each scenario runs the real controller
//! binary, paced with `--delete-qps` so that its sweep takes seconds, and changes the world
//! while it runs: a Pod starts mounting Secrets the sweep was about to delete, images are
//! tagged again, Pods and workloads use images a policy would delete, an index lists manifests
//! a policy governs. Nothing in use may be deleted. docs/reliability.md lists each case with
//! its window.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::*;
use tokio::process::{Child, Command};

/// A controller binary of its own: only policies labelled with its owner value are its.
struct Controller {
    owner: String,
    _child: Child,
}

async fn controller(delete_qps: &str) -> Controller {
    let owner = unique("wm");
    let log = std::env::temp_dir().join(format!("retainer-{owner}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--debounce",
            "100ms",
            "--delete-qps",
            delete_qps,
            "--policy-selector",
            &format!("{OWNER_LABEL}={owner}"),
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start retainer run");
    Controller {
        owner,
        _child: child,
    }
}

async fn apply(bed: &Bed, c: &Controller, name: &str, spec: Value) {
    let obj = json!({"apiVersion": "retainer.dev/v1alpha1", "kind": "RetentionPolicy",
        "metadata": {"name": name, "labels": {OWNER_LABEL: c.owner}}, "spec": spec});
    policies(bed)
        .patch(
            name,
            &PatchParams::apply("retainer-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply policy");
}

/// Asks for a sweep; returns once its start is recorded in status.
async fn start_sweep(bed: &Bed, name: &str) {
    let api = policies(bed);
    let patch = json!({"metadata": {"annotations": {"retainer.dev/sweep-requested": unique("t")}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("request a sweep");
    wait_for("the sweep to start", Duration::from_secs(30), || async {
        let p = api.get(name).await.ok()?;
        let last = &p.data["status"]["lastSweep"];
        (!last["startTime"].is_null() && last["completionTime"].is_null()).then_some(())
    })
    .await;
}

/// Waits for the sweep in progress to end; returns its Swept condition and record.
async fn sweep_done(bed: &Bed, name: &str, timeout: Duration) -> (Value, Value) {
    let api = policies(bed);
    wait_for("the sweep to end", timeout, || async {
        let p = api.get(name).await.ok()?;
        let last = p.data["status"]["lastSweep"].clone();
        (!last["completionTime"].is_null())
            .then(|| (swept_condition(&p.data).unwrap_or(Value::Null), last))
    })
    .await
}

fn secret(name: &str, group: &str) -> Secret {
    serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"app": "wm", "batch": group}},
        "type": "Opaque", "stringData": {"k": "v"}}),
    )
    .expect("secret")
}

/// A Pod that references `secret` one of the five ways a Pod can.
fn pod_using(name: &str, secret: &str, how: usize) -> Pod {
    let mut container = json!({"name": "c", "image": "127.0.0.1:1/none:1"});
    let mut spec = json!({"containers": []});
    match how % 5 {
        0 => {
            spec["volumes"] = json!([{"name": "s", "secret": {"secretName": secret}}]);
        }
        1 => {
            container["env"] =
                json!([{"name": "X", "valueFrom": {"secretKeyRef": {"name": secret, "key": "k"}}}]);
        }
        2 => {
            container["envFrom"] = json!([{"secretRef": {"name": secret}}]);
        }
        3 => {
            spec["imagePullSecrets"] = json!([{"name": secret}]);
        }
        _ => {
            spec["volumes"] =
                json!([{"name": "p", "projected": {"sources": [{"secret": {"name": secret}}]}}]);
        }
    }
    spec["containers"] = json!([container]);
    serde_json::from_value(json!({"metadata": {"name": name}, "spec": spec})).expect("pod")
}

#[tokio::test]
async fn a_secret_a_pod_starts_using_mid_sweep_is_not_deleted() {
    let bed = setup_without_controller("wm-secrets").await;
    let c = controller("10").await;
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    // Two generations a second apart: a sweep deletes oldest first, so the late ones are
    // still there seconds into the sweep, when Pods start using some of them.
    for i in 0..50 {
        secrets
            .create(
                &PostParams::default(),
                &secret(&format!("early-{i:02}"), "early"),
            )
            .await
            .expect("create secret");
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for i in 0..30 {
        secrets
            .create(
                &PostParams::default(),
                &secret(&format!("late-{i:02}"), "late"),
            )
            .await
            .expect("create secret");
    }
    apply(
        &bed,
        &c,
        "unused",
        json!({"target": {"kind": "Secret", "selector": {"matchLabels": {"app": "wm"}}},
            "keep": "referencedBy.size() > 0", "schedule": "0 0 29 2 *"}),
    )
    .await;
    summary(&bed, "unused", 80).await;

    // The test's own watch of Pods, to measure how long a new Pod takes to reach a watcher.
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &bed.ns);
    let (seen_tx, mut seen_rx) = tokio::sync::mpsc::unbounded_channel::<(String, Instant)>();
    let watch = watcher(pods.clone(), watcher::Config::default())
        .applied_objects()
        .for_each(move |p| {
            if let Ok(p) = p {
                let _ = seen_tx.send((p.name_any(), Instant::now()));
            }
            futures::future::ready(())
        });
    let watch = tokio::spawn(watch);

    start_sweep(&bed, "unused").await;
    wait_for(
        "the sweep to delete early Secrets",
        Duration::from_secs(30),
        || async {
            let left = secrets.list(&Default::default()).await.ok()?.items.len();
            (left <= 70).then_some(())
        },
    )
    .await;
    let mut used = Vec::new();
    let mut created_at = Vec::new();
    for i in 0..10 {
        let name = format!("late-{i:02}");
        pods.create(
            &PostParams::default(),
            &pod_using(&format!("user-{i}"), &name, i),
        )
        .await
        .expect("create pod");
        created_at.push((format!("user-{i}"), Instant::now()));
        used.push(name);
    }
    let (swept, record) = sweep_done(&bed, "unused", Duration::from_secs(60)).await;
    let left: Vec<String> = secrets
        .list(&Default::default())
        .await
        .expect("list")
        .items
        .iter()
        .filter(|s| s.labels().get("app").map(String::as_str) == Some("wm"))
        .map(|s| s.name_any())
        .collect();
    for name in &used {
        assert!(
            left.contains(name),
            "{name} was deleted after a Pod started using it: {swept} {record}"
        );
    }
    assert_eq!(
        left.len(),
        used.len(),
        "only the used Secrets are left: {left:?}"
    );
    assert_eq!(record["deleted"], 70, "{record}");
    assert_eq!(record["skipped"], 10, "{record}");

    let mut lags = Vec::new();
    while let Ok((name, at)) = seen_rx.try_recv() {
        if let Some((_, created)) = created_at.iter().find(|(n, _)| *n == name) {
            lags.push(at.saturating_duration_since(*created).as_secs_f64() * 1000.0);
        }
    }
    watch.abort();
    lags.sort_by(f64::total_cmp);
    if let (Some(first), Some(last)) = (lags.first(), lags.last()) {
        eprintln!(
            "window: a new Pod reached a watcher {first:.1} to {last:.1} ms after its create returned ({} Pods)",
            lags.len()
        );
    }
    bed.cleanup().await;
}

/// The images pushed for a sweep: `n` tags `1.0.<i>`, oldest first.
async fn images(reg: &str, repo: &str, n: usize) -> Vec<String> {
    let mut digests = Vec::new();
    for i in 0..n {
        let created = format!("2026-01-01T00:{:02}:00Z", i);
        digests
            .push(push_image(reg, repo, &format!("1.0.{i}"), &unique("s"), &created, None).await);
    }
    digests
}

async fn retagged_mid_sweep_are_kept(which: &str) {
    let bed = setup_without_controller(&format!("wm-tags-{which}")).await;
    let reg = registry(which);
    let c = controller("4").await;
    let repo = unique("wm/retag-");
    let digests = images(&reg, &repo, 20).await;
    apply(
        &bed,
        &c,
        "tags",
        json!({"target": {"kind": "OCIArtifact", "registry": {"url": format!("http://{reg}"), "repositories": [repo]}},
            "orderBy": "semver(object.tags[0], true)", "keep": "rank < 1", "schedule": "0 0 29 2 *"}),
    )
    .await;
    summary(&bed, "tags", 20).await;
    start_sweep(&bed, "tags").await;
    wait_for("the first deletes", Duration::from_secs(30), || async {
        (!exists(&reg, &repo, &digests[1], None).await).then_some(())
    })
    .await;
    // The three newest candidates, deleted last, get a new tag each, as `crane tag` does.
    for (n, d) in digests[16..19].iter().enumerate() {
        retag(&reg, &repo, d, &format!("prod-{n}")).await;
    }
    let (swept, record) = sweep_done(&bed, "tags", Duration::from_secs(60)).await;
    for (n, d) in digests[16..19].iter().enumerate() {
        assert!(
            exists(&reg, &repo, d, None).await,
            "{which}: {d} was deleted after it was tagged prod-{n}: {swept} {record}"
        );
        let tags = tag_digests(&reg, &repo).await;
        assert_eq!(tags.get(&format!("prod-{n}")), Some(d), "{which}: {tags:?}");
    }
    assert!(
        exists(&reg, &repo, &digests[19], None).await,
        "rank 0 is kept"
    );
    let message = swept["message"].as_str().unwrap_or_default();
    assert!(
        record["skipped"].as_i64() >= Some(3),
        "{which}: {swept} {record}"
    );
    assert!(message.contains("deleted"), "{message}");
    bed.cleanup().await;
}

#[tokio::test]
async fn images_tagged_again_mid_sweep_are_not_deleted_olareg() {
    retagged_mid_sweep_are_kept("olareg").await;
}

#[tokio::test]
async fn images_tagged_again_mid_sweep_are_not_deleted_distribution() {
    retagged_mid_sweep_are_kept("distribution").await;
}

#[tokio::test]
async fn images_in_use_and_manifests_an_index_lists_are_kept_whatever_keep_says() {
    let bed = setup_without_controller("wm-inuse").await;
    let reg = registry("olareg");
    let c = controller("0").await;
    let old = "2026-01-01T00:00:00Z";

    // A Pod runs one image by digest (its spec names a tag that no longer points there), a
    // CronJob names another by tag; a third is unused.
    let used = unique("wm/used-");
    let running = push_image(&reg, &used, "old", &unique("r"), old, None).await;
    let named = push_image(&reg, &used, "cron", &unique("n"), old, None).await;
    let unused = push_image(&reg, &used, "stale", &unique("u"), old, None).await;
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &bed.ns);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "runner"},
        "spec": {"containers": [{"name": "c", "image": format!("{reg}/{used}:moved")}]}}))
    .expect("pod");
    pods.create(&PostParams::default(), &pod)
        .await
        .expect("pod");
    let status = json!({"status": {"containerStatuses": [{"name": "c", "image": format!("{reg}/{used}:moved"),
        "imageID": format!("{reg}/{used}@{running}"), "ready": true, "restartCount": 0,
        "state": {"running": {"startedAt": old}}}]}});
    pods.patch_status("runner", &PatchParams::default(), &Patch::Merge(&status))
        .await
        .expect("pod status");
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"name": "nightly", "namespace": bed.ns},
        "spec": {"schedule": "0 0 * * *", "jobTemplate": {"spec": {"template": {"spec": {
            "restartPolicy": "Never", "containers": [{"name": "c", "image": format!("{reg}/{used}:cron")}]}}}}}});
    let cronjobs: Api<kube::api::DynamicObject> = Api::namespaced_with(
        bed.client.clone(),
        &bed.ns,
        &kube::api::ApiResource::erase::<k8s_openapi::api::batch::v1::CronJob>(&()),
    );
    cronjobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(cron).expect("cronjob"),
        )
        .await
        .expect("cronjob");

    // An index tagged v1 lists two untagged platform manifests; a loose untagged one too.
    let multi = unique("wm/multi-");
    let amd = push_image(&reg, &multi, "", &unique("amd"), old, None).await;
    let arm = push_image(&reg, &multi, "", &unique("arm"), old, None).await;
    let index_body = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": amd, "size": 1,
             "platform": {"architecture": "amd64", "os": "linux"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": arm, "size": 1,
             "platform": {"architecture": "arm64", "os": "linux"}}]});
    let index = push_manifest(
        &reg,
        &multi,
        "v1",
        "application/vnd.oci.image.index.v1+json",
        &index_body,
    )
    .await;

    apply(
        &bed,
        &c,
        "used",
        json!({"target": {"kind": "OCIArtifact", "registry": {"url": format!("http://{reg}"), "repositories": [used]}},
            "keep": "false", "schedule": "0 0 29 2 *"}),
    )
    .await;
    apply(
        &bed,
        &c,
        "untagged",
        json!({"target": {"kind": "OCIArtifact", "registry": {"url": format!("http://{reg}"), "repositories": [multi]}},
            "match": "object.tags.size() == 0", "keep": "false", "schedule": "0 0 29 2 *"}),
    )
    .await;
    summary(&bed, "used", 3).await;
    summary(&bed, "untagged", 2).await;
    for name in ["used", "untagged"] {
        let swept = sweep(&bed, name).await;
        assert_eq!(swept["reason"], "Completed", "{name}: {swept}");
    }
    assert!(
        exists(&reg, &used, &running, None).await,
        "the image a Pod runs"
    );
    assert!(
        exists(&reg, &used, &named, None).await,
        "the image a CronJob names"
    );
    assert!(
        !exists(&reg, &used, &unused, None).await,
        "the unused image goes"
    );
    for (what, d) in [("index", &index), ("amd64", &amd), ("arm64", &arm)] {
        assert!(exists(&reg, &multi, d, None).await, "{what} of v1 is left");
    }
    assert_eq!(tag_digests(&reg, &multi).await.get("v1"), Some(&index));
    bed.cleanup().await;
}

#[tokio::test]
async fn a_dry_run_writes_no_grace_marks() {
    let bed = setup_without_controller("wm-dry").await;
    let c = controller("0").await;
    for i in 0..3 {
        job(
            &bed,
            &format!("done-{i}"),
            json!({"app": "dry"}),
            "succeeded",
        )
        .await;
    }
    let spec = |dry: bool| {
        json!({"target": {"kind": "Job", "selector": {"matchLabels": {"app": "dry"}}},
            "keep": "false", "schedule": "0 0 29 2 *", "dryRun": dry,
            "deletion": {"gracePeriod": "1h"}})
    };
    apply(&bed, &c, "dry", spec(true)).await;
    summary(&bed, "dry", 3).await;
    start_or_finish(&bed, "dry").await;
    let p = policies(&bed).get("dry").await.expect("policy");
    let swept = swept_condition(&p.data).expect("swept");
    assert_eq!(swept["reason"], "DryRun", "{swept}");
    assert!(
        p.data["status"]["gracePeriodMarks"].is_null(),
        "a dry run marked: {}",
        p.data["status"]
    );
    // Turned off, the grace period starts now: nothing is deleted at once.
    apply(&bed, &c, "dry", spec(false)).await;
    ready(&bed, "dry").await;
    start_or_finish(&bed, "dry").await;
    let p = policies(&bed).get("dry").await.expect("policy");
    let swept = swept_condition(&p.data).expect("swept");
    assert_eq!(
        p.data["status"]["lastSweep"]["deleted"], 0,
        "{}",
        p.data["status"]
    );
    assert!(
        swept["message"]
            .as_str()
            .unwrap_or_default()
            .contains("3 marked"),
        "{swept}"
    );
    assert!(!p.data["status"]["gracePeriodMarks"].is_null());
    bed.cleanup().await;
}

/// Requests a sweep and waits for its condition, for sweeps that may end before their start
/// could be seen (dry runs, and sweeps with nothing to delete).
async fn start_or_finish(bed: &Bed, name: &str) {
    sweep(bed, name).await;
}
