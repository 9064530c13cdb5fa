//! Each Kubernetes example end to end on the real API server: its objects are created in a
//! fresh namespace (Jobs finished through their status, as the job controller would), its
//! policy is applied there as written (a ClusterRetentionPolicy narrowed to that namespace), and
//! the controller's status and sweep must agree exactly with `retainer check` run on the objects
//! as the server returns them. The API server sets creation times, so every object is new here:
//! age-based examples keep everything, rank-based ones delete. The registry example runs end to
//! end in `make demo` and, rule for rule, in tests/oci.rs.

mod support;

use std::collections::BTreeSet;
use std::time::Duration;

use kube::Api;
use kube::api::{ApiResource, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use retainer::check;
use retainer::engine::{CompiledPolicy, ObjectId, Verdict};
use serde_json::{Value, json};
use support::*;

fn resource(api_version: &str, kind: &str) -> ApiResource {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    let plural = match kind {
        "Ingress" => "ingresses".to_string(),
        other if other.ends_with('y') => format!("{}ies", &other.to_lowercase()[..other.len() - 1]),
        other => format!("{}s", other.to_lowercase()),
    };
    ApiResource {
        group: group.into(),
        version: version.into(),
        api_version: api_version.into(),
        kind: kind.into(),
        plural,
    }
}

/// Creates the example's objects in the bed's namespace; returns the kinds created.
async fn create_objects(bed: &Bed, objects: &[Value]) -> BTreeSet<(String, String)> {
    let mut kinds = BTreeSet::new();
    for o in objects {
        let kind = o["kind"].as_str().unwrap_or("");
        if kind == "Namespace" {
            continue;
        }
        let api_version = o["apiVersion"].as_str().unwrap_or("v1");
        let mut obj = o.clone();
        let meta = obj["metadata"].as_object_mut().expect("metadata");
        for k in ["creationTimestamp", "uid", "resourceVersion", "namespace"] {
            meta.remove(k);
        }
        let status = obj.as_object_mut().and_then(|m| m.remove("status"));
        if kind == "Job" && obj["spec"]["template"].is_null() {
            obj["spec"] = json!({"template": {"spec": {"restartPolicy": "Never",
                "containers": [{"name": "c", "image": "busybox"}]}}});
        }
        let ar = resource(api_version, kind);
        let api: Api<DynamicObject> = Api::namespaced_with(bed.client.clone(), &bed.ns, &ar);
        let dynamic: DynamicObject = serde_json::from_value(obj).expect("object");
        let name = dynamic.metadata.name.clone().expect("name");
        api.create(&PostParams::default(), &dynamic)
            .await
            .unwrap_or_else(|e| panic!("creating {kind} {name}: {e}"));
        kinds.insert((api_version.to_string(), kind.to_string()));
        if kind == "Job" {
            finish(bed, &name, status.unwrap_or(Value::Null)).await;
        }
        // Creation times have one-second resolution and rank ties break by name; a pause keeps
        // the order the file gives.
        tokio::time::sleep(Duration::from_millis(1050)).await;
    }
    kinds
}

/// Gives a Job the terminal status the example describes, the way the job controller writes it.
async fn finish(bed: &Bed, name: &str, status: Value) {
    let condition = status["conditions"].as_array().and_then(|cs| {
        cs.iter()
            .find(|c| c["status"] == "True")
            .and_then(|c| c["type"].as_str())
    });
    if let Some(condition) = condition {
        finish_job(bed, name, condition == "Complete").await;
    }
}

async fn read_back(bed: &Bed, kinds: &BTreeSet<(String, String)>) -> Vec<Value> {
    let mut out = Vec::new();
    for (api_version, kind) in kinds {
        let api: Api<DynamicObject> =
            Api::namespaced_with(bed.client.clone(), &bed.ns, &resource(api_version, kind));
        for mut o in api.list(&ListParams::default()).await.expect("list").items {
            o.types = Some(kube::api::TypeMeta {
                api_version: api_version.clone(),
                kind: kind.clone(),
            });
            out.push(serde_json::to_value(&o).expect("json"));
        }
    }
    let ns: Api<DynamicObject> = Api::all_with(bed.client.clone(), &resource("v1", "Namespace"));
    let mut me = serde_json::to_value(ns.get(&bed.ns).await.expect("namespace")).expect("json");
    me["apiVersion"] = json!("v1");
    me["kind"] = json!("Namespace");
    out.push(me);
    out
}

fn names(policy: &CompiledPolicy, objects: Vec<Value>, verdict: Verdict) -> BTreeSet<String> {
    let eval = check::evaluate_offline(policy, objects, jiff::Timestamp::now());
    eval.results
        .iter()
        .filter(|r| r.verdict == verdict)
        .filter_map(|r| match &r.id {
            ObjectId::Kube { name, .. } => Some(name.to_string()),
            ObjectId::Oci { .. } => None,
        })
        .collect()
}

async fn example(name: &str) {
    let bed = setup(&format!("ex-{}", &name[..name.len().min(8)])).await;
    let dir = format!("{}/examples/{name}", env!("CARGO_MANIFEST_DIR"));
    let read = |f: &str| {
        let path = format!("{dir}/{f}");
        let text = std::fs::read_to_string(&path).expect("example file");
        check::parse_documents(&path, &text).expect("example parses")
    };
    let objects = read("objects.yaml");
    let mut policy = read("policy.yaml").remove(0);
    let cluster = policy["kind"] == "ClusterRetentionPolicy";
    let policy_name = if cluster {
        format!("{}-{name}", bed.ns)
    } else {
        name.to_string()
    };
    policy["metadata"] = if cluster {
        json!({"name": policy_name, "labels": owner_labels()})
    } else {
        json!({"name": policy_name, "namespace": bed.ns, "labels": owner_labels()})
    };
    if cluster {
        policy["spec"]["target"]["namespaceSelector"] =
            json!({"matchLabels": {"kubernetes.io/metadata.name": bed.ns}});
    }

    let kinds = create_objects(&bed, &objects).await;
    let target = policy["spec"]["target"]["kind"]
        .as_str()
        .expect("kind")
        .to_string();
    let plural = resource(if target == "Job" { "batch/v1" } else { "v1" }, &target);
    let api: Api<DynamicObject> = if cluster {
        Api::all_with(
            bed.client.clone(),
            &resource("retainer.dev/v1alpha1", "ClusterRetentionPolicy"),
        )
    } else {
        policies(&bed)
    };
    controller();
    api.patch(
        &policy_name,
        &PatchParams::apply("retainer-tests").force(),
        &Patch::Apply(&policy),
    )
    .await
    .expect("apply the example policy");

    let mut view = check::policy_from_document("policy.yaml", &policy).expect("policy");
    view.namespace = (!cluster).then(|| bed.ns.clone());
    let compiled = CompiledPolicy::compile(view).expect("the example compiles");
    let server_objects = read_back(&bed, &kinds).await;
    let expected_delete = names(&compiled, server_objects.clone(), Verdict::Delete);
    let expected_keep = names(&compiled, server_objects, Verdict::Keep);
    let governed = (expected_delete.len() + expected_keep.len()) as i64;

    let status = wait_for(
        &format!("{name} to govern {governed}"),
        Duration::from_secs(60),
        || async {
            let p = api.get(&policy_name).await.ok()?;
            (p.data["status"]["summary"]["governed"].as_i64() == Some(governed))
                .then(|| p.data["status"].clone())
        },
    )
    .await;
    assert_eq!(
        status["summary"]["candidates"].as_i64(),
        Some(expected_delete.len() as i64),
        "{name}: {status}"
    );

    // Sweep: what is left of the target kind is exactly what check keeps.
    let token = unique("t");
    api.patch(
        &policy_name,
        &PatchParams::default(),
        &Patch::Merge(
            json!({"metadata": {"annotations": {"retainer.dev/sweep-requested": token}}}),
        ),
    )
    .await
    .expect("request a sweep");
    let targets: Api<DynamicObject> = Api::namespaced_with(bed.client.clone(), &bed.ns, &plural);
    let before: BTreeSet<String> = targets
        .list(&ListParams::default())
        .await
        .expect("list")
        .items
        .into_iter()
        .filter_map(|o| o.metadata.name)
        .collect();
    let want: BTreeSet<String> = before.difference(&expected_delete).cloned().collect();
    wait_for(
        &format!("{name}'s sweep to leave {want:?}"),
        Duration::from_secs(60),
        || async {
            let now: BTreeSet<String> = targets
                .list(&ListParams::default())
                .await
                .ok()?
                .items
                .into_iter()
                .filter(|o| o.metadata.deletion_timestamp.is_none())
                .filter_map(|o| o.metadata.name)
                .collect();
            (now == want).then_some(())
        },
    )
    .await;
    eprintln!(
        "{name}: governed {governed}, deleted {:?}, kept {:?}",
        expected_delete, expected_keep
    );
    if cluster {
        let _ = api
            .delete(&policy_name, &kube::api::DeleteParams::default())
            .await;
    }
    bed.cleanup().await;
}

#[tokio::test]
async fn fleet_gitjobs() {
    example("fleet-gitjobs").await;
}

#[tokio::test]
async fn helm_history() {
    example("helm-history").await;
}

#[tokio::test]
async fn finished_jobs() {
    example("finished-jobs").await;
}

#[tokio::test]
async fn unused_secrets() {
    example("unused-secrets").await;
}
