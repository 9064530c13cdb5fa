//! The controller against the real API server: status, sweeps and their safety rails.
//!
//! One controller runs in-process for all tests of this file (each test works in its own
//! namespace); sweeps are triggered with the `retainer.dev/sweep-requested` annotation instead of
//! waiting for a cron minute.

mod support;

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use retainer::api::TargetKind;
use retainer::controller::sweep::{Executor, Outcome, RateLimiter, Target, TargetId};
use serde_json::{Value, json};
use support::*;

async fn job_names(bed: &Bed) -> Vec<String> {
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    let mut names: Vec<String> = jobs
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .filter_map(|j| j.metadata.name)
        .collect();
    names.sort();
    names
}

async fn many_jobs(bed: &Bed, n: usize) {
    for i in 0..n {
        job(bed, &format!("j{i}"), json!({}), "succeeded").await;
    }
}

#[tokio::test]
async fn fleet_keeps_newest_succeeded_per_gitrepo_and_running_and_failed() {
    let bed = setup("fleet").await;
    let l = |r: &str| json!({"gitjob.fleet.cattle.io/name": r});
    // creationTimestamp has one-second resolution: space the Jobs of one GitRepo apart.
    job(&bed, "a-1", l("a"), "succeeded").await;
    job(&bed, "b-1", l("b"), "succeeded").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    job(&bed, "a-2", l("a"), "succeeded").await;
    job(&bed, "a-failed", l("a"), "failed").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    job(&bed, "a-3", l("a"), "succeeded").await;
    job(&bed, "a-running", l("a"), "running").await;
    apply_policy(
        &bed,
        "gitjobs",
        json!({"target": {"kind": "Job"},
        "match": "object.status.?succeeded.orValue(0) > 0",
        "groupBy": "object.metadata.labels['gitjob.fleet.cattle.io/name']",
        "keep": "rank < 1", "schedule": "0 0 1 1 *"}),
    )
    .await;
    let st = summary(&bed, "gitjobs", 4).await;
    assert_eq!(
        st["summary"],
        json!({"governed": 4, "kept": 2, "candidates": 2, "errors": 0})
    );
    let listed: Vec<&str> = st["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(listed, vec!["a-1", "a-2"], "oldest first");
    assert!(st["nextSweepTime"].as_str().is_some());
    let swept = sweep(&bed, "gitjobs").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    assert_eq!(
        job_names(&bed).await,
        vec!["a-3", "a-failed", "a-running", "b-1"]
    );
    let p = policies(&bed).get("gitjobs").await.unwrap();
    assert_eq!(p.data["status"]["lastSweep"]["deleted"], 2);
    bed.cleanup().await;
}

#[tokio::test]
async fn dry_run_and_suspend_delete_nothing() {
    let bed = setup("dry").await;
    many_jobs(&bed, 3).await;
    apply_policy(
        &bed,
        "dry",
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "0 0 29 2 *", "dryRun": true}),
    )
    .await;
    summary(&bed, "dry", 3).await;
    let swept = sweep(&bed, "dry").await;
    assert_eq!(swept["reason"], "DryRun");
    assert!(
        swept["message"]
            .as_str()
            .unwrap()
            .contains("would delete 3 of 3"),
        "{swept}"
    );
    apply_policy(
        &bed,
        "suspended",
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "0 0 29 2 *", "suspend": true}),
    )
    .await;
    summary(&bed, "suspended", 3).await;
    let swept = sweep(&bed, "suspended").await;
    assert_eq!(swept["reason"], "Suspended");
    assert_eq!(job_names(&bed).await.len(), 3);
    bed.cleanup().await;
}

#[tokio::test]
async fn max_per_sweep_and_abort_above_percent() {
    let bed = setup("caps").await;
    many_jobs(&bed, 5).await;
    apply_policy(
        &bed,
        "blocked",
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "0 0 29 2 *",
        "deletion": {"abortAbovePercent": 80}}),
    )
    .await;
    summary(&bed, "blocked", 5).await;
    let swept = sweep(&bed, "blocked").await;
    assert_eq!(swept["reason"], "Blocked", "{swept}");
    assert!(
        swept["message"]
            .as_str()
            .unwrap()
            .contains("5 of 5 governed objects (100%)")
    );
    assert_eq!(job_names(&bed).await.len(), 5);
    // Out of the way, so the next policy's sweep is the only one.
    policies(&bed)
        .delete("blocked", &Default::default())
        .await
        .unwrap();
    apply_policy(
        &bed,
        "capped",
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "0 0 29 2 *",
        "deletion": {"maxPerSweep": 2}}),
    )
    .await;
    summary(&bed, "capped", 5).await;
    let swept = sweep(&bed, "capped").await;
    assert_eq!(swept["reason"], "Completed");
    assert!(
        swept["message"]
            .as_str()
            .unwrap()
            .contains("3 left for the next sweep by maxPerSweep"),
        "{swept}"
    );
    assert_eq!(job_names(&bed).await.len(), 3);
    bed.cleanup().await;
}

#[tokio::test]
async fn grace_period_marks_first_and_deletes_later() {
    let bed = setup("grace").await;
    many_jobs(&bed, 2).await;
    apply_policy(
        &bed,
        "grace",
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "0 0 29 2 *",
        "deletion": {"gracePeriod": "3s"}}),
    )
    .await;
    summary(&bed, "grace", 2).await;
    let swept = sweep(&bed, "grace").await;
    assert!(
        swept["message"]
            .as_str()
            .unwrap()
            .contains("2 marked, waiting for their grace period"),
        "{swept}"
    );
    assert_eq!(job_names(&bed).await.len(), 2);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let swept = sweep(&bed, "grace").await;
    assert!(
        swept["message"].as_str().unwrap().starts_with("deleted 2"),
        "{swept}"
    );
    assert!(job_names(&bed).await.is_empty());
    bed.cleanup().await;
}

#[tokio::test]
async fn invalid_expression_is_ready_false_and_deletes_nothing() {
    let bed = setup("invalid").await;
    many_jobs(&bed, 1).await;
    apply_policy(
        &bed,
        "bad",
        json!({"target": {"kind": "Job"}, "keep": "rank < ", "schedule": "0 0 29 2 *"}),
    )
    .await;
    let c = ready_condition(&bed, "bad").await;
    assert_eq!(c["status"], "False");
    assert_eq!(c["reason"], "InvalidExpression");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .starts_with("spec.keep: syntax error at line 1"),
        "{c}"
    );
    apply_policy(
        &bed,
        "bad-cron",
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "61 * * * *"}),
    )
    .await;
    let c = ready_condition(&bed, "bad-cron").await;
    assert_eq!(c["reason"], "InvalidSchedule");
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(job_names(&bed).await.len(), 1);
    bed.cleanup().await;
}

#[tokio::test]
async fn status_stays_quiet_when_nothing_changes() {
    let bed = setup("quiet").await;
    many_jobs(&bed, 2).await;
    apply_policy(
        &bed,
        "quiet",
        json!({"target": {"kind": "Job"}, "keep": "rank < 1", "schedule": "0 0 29 2 *"}),
    )
    .await;
    summary(&bed, "quiet", 2).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = policies(&bed)
        .get("quiet")
        .await
        .unwrap()
        .metadata
        .resource_version;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = policies(&bed)
        .get("quiet")
        .await
        .unwrap()
        .metadata
        .resource_version;
    assert_eq!(
        before, after,
        "the policy was written during 10 idle seconds"
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn policies_stay_in_their_namespace() {
    let a = setup("iso-a").await;
    let b = Bed::new("iso-b").await;
    many_jobs(&a, 1).await;
    many_jobs(&b, 2).await;
    apply_policy(
        &a,
        "all",
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "0 0 29 2 *"}),
    )
    .await;
    summary(&a, "all", 1).await;
    sweep(&a, "all").await;
    assert!(job_names(&a).await.is_empty());
    assert_eq!(
        job_names(&b).await.len(),
        2,
        "another namespace's Jobs are untouched"
    );
    a.cleanup().await;
    b.cleanup().await;
}

/// The cache keeps only the fields policies read; a policy reading more makes it list again,
/// and is evaluated only on objects that hold them.
#[tokio::test]
async fn a_policy_reading_new_fields_sees_them() {
    let bed = setup("fields").await;
    many_jobs(&bed, 2).await;
    apply_policy(
        &bed,
        "plain",
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "0 0 29 2 *"}),
    )
    .await;
    let s = summary(&bed, "plain", 2).await;
    assert_eq!(s["summary"]["candidates"], 2, "{s}");
    // Pruned objects would read as having no containers, and be candidates.
    apply_policy(
        &bed,
        "by-image",
        json!({"target": {"kind": "Job"}, "schedule": "0 0 29 2 *",
            "keep": "object.spec.?template.?spec.?containers.orValue([]).exists(c, c.image == 'busybox')"}),
    )
    .await;
    let s = summary(&bed, "by-image", 2).await;
    assert_eq!(s["summary"]["candidates"], 0, "{s}");
    assert_eq!(s["summary"]["errors"].as_i64().unwrap_or(0), 0, "{s}");
    bed.cleanup().await;
}

#[tokio::test]
async fn helm_history_and_unused_secrets() {
    let bed = setup("secrets").await;
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    for v in 1..=5 {
        let status = if v == 2 { "deployed" } else { "superseded" };
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": format!("sh.helm.release.v1.web.v{v}"),
            "labels": {"owner": "helm", "name": "web", "version": v.to_string(), "status": status}},
            "type": "helm.sh/release.v1", "data": {"release": "c2VjcmV0LXZhbHVl"}}),
        )
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    apply_policy(
        &bed,
        "helm",
        json!({"target": {"kind": "Secret", "fieldSelector": "type=helm.sh/release.v1",
        "selector": {"matchLabels": {"owner": "helm"}}},
        "groupBy": "object.metadata.labels.name", "orderBy": "int(object.metadata.labels.version)",
        "keep": "rank < 2 || object.metadata.labels.status == 'deployed'", "schedule": "0 0 29 2 *"}),
    )
    .await;
    summary(&bed, "helm", 5).await;
    sweep(&bed, "helm").await;
    let mut left: Vec<String> = secrets
        .list(&ListParams::default().labels("owner=helm"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec![
            "sh.helm.release.v1.web.v2",
            "sh.helm.release.v1.web.v4",
            "sh.helm.release.v1.web.v5"
        ]
    );

    // Unused secrets: references from a Pod, a ServiceAccount, an Ingress, a Deployment and a
    // CronJob template keep theirs.
    for n in [
        "by-pod",
        "by-sa",
        "by-ingress",
        "by-deploy",
        "by-cron",
        "unused",
    ] {
        let s: Secret = serde_json::from_value(
            json!({"metadata": {"name": n, "labels": {"cleanup": "true"}}, "data": {"k": "dg=="}}),
        )
        .unwrap();
        secrets.create(&PostParams::default(), &s).await.unwrap();
    }
    let create = |kind: &str, api_version: &str, plural: &str, body: Value| {
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let ar =
            ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(group, version, kind), plural);
        let api: Api<DynamicObject> = Api::namespaced_with(bed.client.clone(), &bed.ns, &ar);
        let mut obj = body;
        obj["apiVersion"] = json!(api_version);
        obj["kind"] = json!(kind);
        async move {
            api.create(
                &PostParams::default(),
                &serde_json::from_value(obj).unwrap(),
            )
            .await
            .unwrap();
        }
    };
    let pod_spec = |secret: &str| json!({"containers": [{"name": "c", "image": "busybox", "envFrom": [{"secretRef": {"name": secret}}]}]});
    create(
        "Pod",
        "v1",
        "pods",
        json!({"metadata": {"name": "p"}, "spec": pod_spec("by-pod")}),
    )
    .await;
    create(
        "ServiceAccount",
        "v1",
        "serviceaccounts",
        json!({"metadata": {"name": "sa"}, "imagePullSecrets": [{"name": "by-sa"}]}),
    )
    .await;
    create(
        "Ingress",
        "networking.k8s.io/v1",
        "ingresses",
        json!({"metadata": {"name": "i"}, "spec": {"tls": [{"secretName": "by-ingress"}],
        "defaultBackend": {"service": {"name": "x", "port": {"number": 80}}}}}),
    )
    .await;
    create(
        "Deployment",
        "apps/v1",
        "deployments",
        json!({"metadata": {"name": "d"}, "spec": {"selector": {"matchLabels": {"a": "b"}},
        "template": {"metadata": {"labels": {"a": "b"}}, "spec": pod_spec("by-deploy")}}}),
    )
    .await;
    create("CronJob", "batch/v1", "cronjobs", json!({"metadata": {"name": "c"}, "spec": {"schedule": "0 0 29 2 *",
        "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox",
            "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "by-cron", "key": "k"}}}]}]}}}}}})).await;
    apply_policy(
        &bed,
        "unused",
        json!({"target": {"kind": "Secret", "selector": {"matchLabels": {"cleanup": "true"}}},
        "keep": "referencedBy.size() > 0", "schedule": "0 0 29 2 *"}),
    )
    .await;
    let st = summary(&bed, "unused", 6).await;
    assert_eq!(st["summary"]["candidates"], 1, "{st}");
    sweep(&bed, "unused").await;
    let mut left: Vec<String> = secrets
        .list(&ListParams::default().labels("cleanup=true"))
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|s| s.metadata.name)
        .collect();
    left.sort();
    assert_eq!(
        left,
        vec!["by-cron", "by-deploy", "by-ingress", "by-pod", "by-sa"]
    );
    bed.cleanup().await;
}

#[tokio::test]
async fn a_candidate_changed_after_evaluation_survives() {
    let bed = Bed::new("changed").await;
    many_jobs(&bed, 1).await;
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    let evaluated = jobs.get("j0").await.unwrap();
    // The object changes after it was evaluated: a new label, a new resourceVersion.
    jobs.patch(
        "j0",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
    )
    .await
    .unwrap();
    let exec = Executor {
        client: bed.client.clone(),
        concurrency: 1,
        limiter: std::sync::Arc::new(RateLimiter::new(0.0)),
        leadership: std::sync::Arc::default(),
    };
    let target = |resource_version: String| Target {
        id: TargetId::Kube {
            namespace: bed.ns.clone(),
            name: "j0".into(),
            uid: evaluated.metadata.uid.clone().unwrap(),
            resource_version,
        },
        why: "test".into(),
        is_referrer: false,
    };
    let stale = target(evaluated.metadata.resource_version.clone().unwrap());
    let out = exec
        .delete_all(
            TargetKind::Job,
            vec![stale],
            None,
            "test",
            None,
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(
        out[0].1,
        Outcome::Skipped("changed since it was evaluated".into())
    );
    assert_eq!(job_names(&bed).await, vec!["j0"]);
    // With the current resourceVersion it goes.
    let fresh = jobs.get("j0").await.unwrap();
    let current = target(fresh.metadata.resource_version.unwrap());
    let out = exec
        .delete_all(
            TargetKind::Job,
            vec![current],
            None,
            "test",
            None,
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(out[0].1, Outcome::Deleted);
    bed.cleanup().await;
}

/// A CRD for a custom `referencedBy` kind installed after the policy: the policy says the kind
/// is not served, then picks it up within 30 s, without a restart.
#[tokio::test]
async fn a_referrer_kind_installed_later_is_picked_up() {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let bed = setup("later").await;
    let group = format!("{}.example.dev", unique("w"));
    apply_policy(
        &bed,
        "later",
        json!({"target": {"kind": "Secret", "selector": {"matchLabels": {"app": "later"}}},
            "referencedBy": [{"apiVersion": format!("{group}/v1"), "kind": "Widget", "refs": "[object.spec.secret]"}],
            "keep": "referencedBy.size() > 0", "schedule": "0 0 29 2 *"}),
    )
    .await;
    let c = ready_condition(&bed, "later").await;
    assert_eq!(c["reason"], "TargetUnavailable", "{c}");
    assert!(
        c["message"]
            .as_str()
            .unwrap()
            .contains("does not serve kind Widget"),
        "{c}"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(bed.client.clone());
    let crd: CustomResourceDefinition = serde_json::from_value(json!({
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}}))
    .unwrap();
    crds.create(&PostParams::default(), &crd).await.unwrap();
    let installed = std::time::Instant::now();
    let api = policies(&bed);
    wait_for(
        "the policy to pick up the new kind",
        Duration::from_secs(30),
        || async {
            let p = api.get("later").await.ok()?;
            let ready = p.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (ready["status"] == "True").then_some(())
        },
    )
    .await;
    eprintln!(
        "a referrer kind installed later was picked up after {:?}",
        installed.elapsed()
    );
    let _ = crds
        .delete(&format!("widgets.{group}"), &Default::default())
        .await;
    bed.cleanup().await;
}

/// Status follows the clock: Jobs whose age passes keep's threshold become candidates in
/// status with nothing else changing, because the worker wakes when the next age crosses a
/// threshold (at most every 5 s). On a bed where other tests change Jobs at the same time,
/// their changes wake the worker too; on a quiet bed this needs the crossing wake.
#[tokio::test]
async fn status_shows_jobs_becoming_candidates_as_they_age() {
    let bed = setup("aging").await;
    for i in 0..3 {
        job(
            &bed,
            &format!("aging-{i}"),
            json!({"app": "aging"}),
            "succeeded",
        )
        .await;
    }
    apply_policy(
        &bed,
        "aging",
        json!({"target": {"kind": "Job", "selector": {"matchLabels": {"app": "aging"}}},
               "keep": "age < duration('12s')", "schedule": "0 0 29 2 *"}),
    )
    .await;
    let status = summary(&bed, "aging", 3).await;
    assert_eq!(status["summary"]["candidates"], 0, "{status}");
    let api = policies(&bed);
    let status = wait_for(
        "the aged Jobs to show as candidates",
        Duration::from_secs(40),
        || async {
            let p = api.get("aging").await.ok()?;
            (p.data["status"]["summary"]["candidates"] == 3).then_some(p.data["status"].clone())
        },
    )
    .await;
    assert_eq!(status["summary"]["kept"], 0, "{status}");
    assert_eq!(
        job_names(&bed).await.len(),
        3,
        "status only: nothing is swept"
    );
    bed.cleanup().await;
}
