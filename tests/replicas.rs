//! The controller as users run it: the real binary, two replicas with leader election, the
//! leader killed. Also /metrics, /readyz, Events, the audit log line per deletion, and `plan`.

mod support;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use serde_json::{Value, json};
use support::*;
use tokio::process::{Child, Command};

struct Replica {
    identity: String,
    log: PathBuf,
    child: Child,
}

fn start(identity: &str, ns: &str, lease: &str, dir: &std::path::Path) -> Replica {
    let log = dir.join(format!("{identity}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args([
            "run",
            "--leader-elect",
            "--lease-namespace",
            ns,
            "--lease-name",
            lease,
            "--identity",
            identity,
            "--lease-duration",
            "3s",
            "--metrics-addr",
            "127.0.0.1:0",
            "--debounce",
            "200ms",
            "--policy-selector",
            &owner_selector(),
            // The follower, which takes over below, evaluates every object each time: both
            // evaluation modes sweep the same Jobs.
            "--incremental-evaluation",
            if identity == "replica-b" {
                "false"
            } else {
                "true"
            },
        ])
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start retainer run");
    Replica {
        identity: identity.into(),
        log,
        child,
    }
}

fn log_of(r: &Replica) -> String {
    std::fs::read_to_string(&r.log).unwrap_or_default()
}

/// The address the replica serves metrics on, from its start-up log line.
async fn metrics_addr(r: &Replica) -> String {
    wait_for(
        "the metrics address in the log",
        Duration::from_secs(20),
        || async {
            log_of(r).lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                v["fields"]["addr"].as_str().map(String::from)
            })
        },
    )
    .await
}

async fn remaining(jobs: &Api<Job>) -> usize {
    jobs.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .filter(|j| j.metadata.deletion_timestamp.is_none())
        .count()
}

async fn request_sweep(api: &Api<DynamicObject>, name: &str) {
    let patch = json!({"metadata": {"annotations": {"retainer.dev/sweep-requested": unique("t")}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
}

#[tokio::test]
async fn two_replicas_one_sweeps_and_the_other_takes_over() {
    let bed = Bed::new("replicas").await;
    install_crds(&bed.client).await;
    let dir = std::env::temp_dir().join(unique("retainer-replicas-"));
    std::fs::create_dir_all(&dir).unwrap();
    let lease_name = unique("lease-");
    let mut a = start("replica-a", &bed.ns, &lease_name, &dir);
    let leases: Api<Lease> = Api::namespaced(bed.client.clone(), &bed.ns);
    wait_for("replica-a to lead", Duration::from_secs(20), || async {
        let l = leases.get_opt(&lease_name).await.ok()??;
        (l.spec?.holder_identity.as_deref() == Some("replica-a")).then_some(())
    })
    .await;
    let mut b = start("replica-b", &bed.ns, &lease_name, &dir);

    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    for i in 0..3 {
        job(&bed, &format!("first-{i}"), json!({}), "succeeded").await;
    }
    let gvk = GroupVersionKind::gvk("retainer.dev", "v1alpha1", "RetentionPolicy");
    let policies: Api<DynamicObject> =
        Api::namespaced_with(bed.client.clone(), &bed.ns, &ApiResource::from_gvk(&gvk));
    let policy = json!({"apiVersion": "retainer.dev/v1alpha1", "kind": "RetentionPolicy", "metadata": {"name": "all", "labels": owner_labels()},
        "spec": {"target": {"kind": "Job"}, "keep": "false", "schedule": "0 0 29 2 *"}});
    policies
        .patch(
            "all",
            &PatchParams::apply("retainer-tests"),
            &Patch::Apply(&policy),
        )
        .await
        .unwrap();
    wait_for(
        "status from the leader",
        Duration::from_secs(30),
        || async {
            let p = policies.get("all").await.ok()?;
            (p.data["status"]["summary"]["governed"] == 3).then_some(())
        },
    )
    .await;

    // /readyz and /metrics of the leader.
    let addr = metrics_addr(&a).await;
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status().as_u16(), 200);

    request_sweep(&policies, "all").await;
    wait_for("the leader to sweep", Duration::from_secs(30), || async {
        (remaining(&jobs).await == 0).then_some(())
    })
    .await;
    let deletions_by = |r: &Replica| {
        log_of(r)
            .lines()
            .filter(|l| l.contains("\"message\":\"deleted\""))
            .count()
    };
    // The API server marks a Job deleted before the delete's response
    // reaches the controller, which logs only then: wait for the lines.
    wait_for(
        "the leader's audit lines",
        Duration::from_secs(10),
        || async { (deletions_by(&a) >= 3).then_some(()) },
    )
    .await;
    assert_eq!(deletions_by(&a), 3, "the leader logs one line per deletion");
    assert_eq!(deletions_by(&b), 0, "the follower deletes nothing");
    let line = log_of(&a)
        .lines()
        .find(|l| l.contains("\"message\":\"deleted\""))
        .unwrap()
        .to_string();
    let v: Value = serde_json::from_str(&line).unwrap();
    for field in ["policy", "kind", "namespace", "name", "uid", "why"] {
        assert!(
            v["fields"][field].is_string(),
            "audit line lacks {field}: {line}"
        );
    }
    // The sweep is counted when it ends, after its last deletion.
    let metrics = wait_for("the sweep in /metrics", Duration::from_secs(10), || async {
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        text.contains("retainer_sweeps_total{policy=\"all\"")
            .then_some(text)
    })
    .await;
    assert!(
        metrics.contains("retainer_deletions_total{policy=\"all\""),
        "{metrics}"
    );
    let events: Api<Event> = Api::namespaced(bed.client.clone(), &bed.ns);
    let evs = wait_for("a sweep Event", Duration::from_secs(10), || async {
        let list = events.list(&ListParams::default()).await.ok()?;
        let found: Vec<Event> = list
            .items
            .into_iter()
            .filter(|e| e.reason.as_deref() == Some("Swept"))
            .collect();
        (!found.is_empty()).then_some(found)
    })
    .await;
    assert!(
        evs[0]
            .note
            .as_deref()
            .unwrap_or("")
            .starts_with("deleted 3"),
        "{:?}",
        evs[0].note
    );

    // The leader dies without releasing the lease; the other takes over after it expires.
    a.child.kill().await.unwrap();
    let killed_at = std::time::Instant::now();
    wait_for(
        "replica-b to take the lease",
        Duration::from_secs(20),
        || async {
            let l = leases.get_opt(&lease_name).await.ok()??;
            (l.spec?.holder_identity.as_deref() == Some("replica-b")).then_some(())
        },
    )
    .await;
    assert!(
        killed_at.elapsed() < Duration::from_secs(10),
        "took {:?}",
        killed_at.elapsed()
    );
    for i in 0..2 {
        job(&bed, &format!("second-{i}"), json!({}), "succeeded").await;
    }
    wait_for(
        "the new leader's status",
        Duration::from_secs(30),
        || async {
            let p = policies.get("all").await.ok()?;
            (p.data["status"]["summary"]["governed"] == 2).then_some(())
        },
    )
    .await;
    request_sweep(&policies, "all").await;
    wait_for(
        "the new leader to sweep",
        Duration::from_secs(30),
        || async { (remaining(&jobs).await == 0).then_some(()) },
    )
    .await;
    assert_eq!(deletions_by(&b), 2);
    let _ = b.child.kill().await;
    let _ = b.identity;
    bed.cleanup().await;
}

#[tokio::test]
async fn plan_shows_verdicts_without_changing_anything() {
    let bed = Bed::new("plan").await;
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    job(&bed, "done", json!({}), "succeeded").await;
    let running: Job = serde_json::from_value(json!({"metadata": {"name": "running"},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})).unwrap();
    jobs.create(&PostParams::default(), &running).await.unwrap();
    let dir = std::env::temp_dir().join(unique("retainer-plan-"));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("policy.yaml");
    std::fs::write(&file, format!("apiVersion: retainer.dev/v1alpha1\nkind: RetentionPolicy\nmetadata: {{name: p, namespace: {}}}\nspec:\n  target: {{kind: Job}}\n  keep: \"false\"\n  schedule: \"@daily\"\n", bed.ns)).unwrap();
    let v = plan_json(&["-f", file.to_str().unwrap()]).await;
    assert_eq!(
        v["summary"],
        json!({"governed": 2, "kept": 1, "candidates": 1, "errors": 0})
    );
    let verdicts: Vec<(String, String)> = v["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["verdict"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert!(verdicts.contains(&("done".into(), "delete".into())));
    assert!(verdicts.contains(&("running".into(), "keep".into())));
    assert_eq!(remaining(&jobs).await, 2, "plan deletes nothing");
    bed.cleanup().await;
}
