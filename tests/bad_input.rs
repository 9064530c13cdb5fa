//! Bad input against the real API server: every policy below is either refused by the CRD schema
//! with a message naming the field, or accepted and reported Ready=False with a precise reason
//! and message. The controller keeps running, and none of the objects the policies point at is
//! deleted, although every valid part of them says "delete everything".

mod support;

use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use support::*;

enum Want {
    /// The API server refuses the object; its message contains this.
    Refused(&'static str),
    /// Accepted; Ready=False with this reason and a message containing this.
    NotReady(&'static str, &'static str),
}
use Want::*;

const DELETE_ALL: &str = "false";

fn jobs(spec: Value) -> Value {
    let mut base = json!({"target": {"kind": "Job", "selector": {"matchLabels": {"app": "bad"}}},
                          "schedule": "@daily", "keep": DELETE_ALL,
                          "deletion": {"abortAbovePercent": 100}});
    merge(&mut base, spec);
    base
}

fn secrets(spec: Value) -> Value {
    let mut base = json!({"target": {"kind": "Secret", "selector": {"matchLabels": {"owner": "helm"}}},
                          "schedule": "@daily", "keep": DELETE_ALL,
                          "deletion": {"abortAbovePercent": 100}});
    merge(&mut base, spec);
    base
}

fn oci(registry: Value) -> Value {
    json!({"target": {"kind": "OCIArtifact", "registry": registry}, "schedule": "@daily",
           "keep": DELETE_ALL, "deletion": {"abortAbovePercent": 100}})
}

/// JSON merge patch semantics: null removes a field.
fn merge(base: &mut Value, patch: Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    b.remove(&k);
                } else {
                    merge(b.entry(k).or_insert(Value::Null), v);
                }
            }
        }
        (b, p) => *b = p,
    }
}

fn cases(registry: &str) -> Vec<(&'static str, Value, Want)> {
    let http = format!("http://{registry}");
    let long = format!("{} || false", vec!["rank < 1"; 600].join(" || "));
    vec![
        // Refused by the schema.
        (
            "no-keep",
            jobs(json!({"keep": null})),
            Refused("spec.keep: Required value"),
        ),
        (
            "no-schedule",
            jobs(json!({"schedule": null})),
            Refused("spec.schedule: Required value"),
        ),
        (
            "empty-keep",
            jobs(json!({"keep": ""})),
            Refused("spec.keep"),
        ),
        (
            "bad-kind",
            jobs(json!({"target": {"kind": "Pod"}})),
            Refused("spec.target.kind: Unsupported value: \"Pod\""),
        ),
        (
            "keep-too-long",
            jobs(json!({"keep": long})),
            Refused("spec.keep: Too long"),
        ),
        (
            "match-too-long",
            jobs(json!({"match": "true && ".repeat(600) + "true"})),
            Refused("spec.match: Too long"),
        ),
        (
            "max-per-sweep-negative",
            jobs(json!({"deletion": {"maxPerSweep": -1}})),
            Refused("spec.deletion.maxPerSweep"),
        ),
        (
            "max-per-sweep-zero",
            jobs(json!({"deletion": {"maxPerSweep": 0}})),
            Refused("spec.deletion.maxPerSweep"),
        ),
        (
            "max-per-sweep-overflow",
            jobs(json!({"deletion": {"maxPerSweep": 9_223_372_036_854_775_807i64}})),
            Refused("spec.deletion.maxPerSweep"),
        ),
        (
            "max-per-sweep-float",
            jobs(json!({"deletion": {"maxPerSweep": 1.5}})),
            Refused("spec.deletion.maxPerSweep"),
        ),
        (
            "percent-over-100",
            jobs(json!({"deletion": {"abortAbovePercent": 150}})),
            Refused("spec.deletion.abortAbovePercent"),
        ),
        (
            "percent-negative",
            jobs(json!({"deletion": {"abortAbovePercent": -5}})),
            Refused("spec.deletion.abortAbovePercent"),
        ),
        (
            "grace-days",
            jobs(json!({"deletion": {"gracePeriod": "7d"}})),
            Refused("spec.deletion.gracePeriod"),
        ),
        (
            "grace-negative",
            jobs(json!({"deletion": {"gracePeriod": "-1h"}})),
            Refused("spec.deletion.gracePeriod"),
        ),
        (
            "propagation-unknown",
            jobs(json!({"deletion": {"propagationPolicy": "Sometimes"}})),
            Refused("spec.deletion.propagationPolicy: Unsupported value"),
        ),
        (
            "schedule-too-long",
            jobs(json!({"schedule": "0 ".repeat(100)})),
            Refused("spec.schedule: Too long"),
        ),
        (
            "namespace-selector-namespaced",
            jobs(json!({"target": {"namespaceSelector": {"matchLabels": {"a": "b"}}}})),
            Refused("namespaceSelector is only allowed on a ClusterRetentionPolicy"),
        ),
        (
            "registry-on-jobs",
            jobs(json!({"target": {"registry": {"url": http, "repositories": ["x"]}}})),
            Refused("spec.target"),
        ),
        (
            "oci-without-registry",
            json!({"target": {"kind": "OCIArtifact"}, "schedule": "@daily", "keep": "false"}),
            Refused("spec.target"),
        ),
        (
            "oci-with-selector",
            {
                let mut p = oci(json!({"url": http, "repositories": ["x"]}));
                p["target"]["selector"] = json!({"matchLabels": {"a": "b"}});
                p
            },
            Refused("spec.target"),
        ),
        (
            "registry-url-garbage",
            oci(json!({"url": "not a url", "repositories": ["x"]})),
            Refused("spec.target.registry.url"),
        ),
        (
            "registry-url-ftp",
            oci(json!({"url": "ftp://127.0.0.1/", "repositories": ["x"]})),
            Refused("spec.target.registry.url"),
        ),
        (
            "registry-url-path",
            oci(json!({"url": "http://127.0.0.1:5000/v2/x", "repositories": ["x"]})),
            Refused("spec.target.registry.url"),
        ),
        (
            "credentials-other-namespace",
            oci(
                json!({"url": http, "repositories": ["x"], "credentialsSecretRef": {"name": "regcred", "namespace": "kube-system"}}),
            ),
            Refused("credentialsSecretRef.namespace is only allowed on a ClusterRetentionPolicy"),
        ),
        // Accepted by the schema; the controller says precisely what is wrong.
        (
            "keep-syntax",
            jobs(json!({"keep": "rank <"})),
            NotReady("InvalidExpression", "spec.keep: syntax error at line 1"),
        ),
        (
            "keep-int",
            jobs(json!({"keep": "rank + 1"})),
            NotReady(
                "InvalidExpression",
                "spec.keep: must evaluate to bool, but it is int",
            ),
        ),
        (
            "match-int",
            jobs(json!({"match": "object.metadata.name.size()"})),
            NotReady(
                "InvalidExpression",
                "spec.match: must evaluate to bool, but it is int",
            ),
        ),
        (
            "group-by-bool",
            jobs(json!({"groupBy": "true"})),
            NotReady(
                "InvalidExpression",
                "spec.groupBy: must evaluate to string, but it is bool",
            ),
        ),
        (
            "order-by-map",
            jobs(json!({"orderBy": "{'a': 1}"})),
            NotReady(
                "InvalidExpression",
                "spec.orderBy: must evaluate to timestamp, int, double, string or semver",
            ),
        ),
        (
            "unknown-variable",
            jobs(json!({"keep": "rank < 1 || objekt.metadata.name == 'x'"})),
            NotReady(
                "InvalidExpression",
                "spec.keep: undeclared reference to 'objekt' at line 1, column 13",
            ),
        ),
        (
            "type-error",
            jobs(json!({"keep": "rank < 1 || 'a' + true"})),
            NotReady(
                "InvalidExpression",
                "spec.keep: found no matching overload for '_+_' applied to '(string, bool)' at line 1, column 17",
            ),
        ),
        (
            "function-kubernetes-lacks",
            jobs(json!({"keep": "rank < 1 || math.greatest(rank, 1) > 2"})),
            NotReady(
                "InvalidExpression",
                "spec.keep: undeclared reference to 'math.greatest' at line 1, column 26",
            ),
        ),
        (
            "rank-in-match",
            jobs(json!({"match": "rank < 3"})),
            NotReady(
                "InvalidExpression",
                "spec.match: 'rank' at line 1, column 1 is only available in spec.keep",
            ),
        ),
        (
            "nested-macros",
            jobs(
                json!({"keep": "object.metadata.name.split('').all(a, object.metadata.name.split('').all(b, object.metadata.name.split('').exists(c, a + b + c == 'x')))"}),
            ),
            NotReady(
                "InvalidExpression",
                "spec.keep: macros such as all, exists, map and filter are nested 3 deep",
            ),
        ),
        (
            "huge-range",
            jobs(json!({"keep": "lists.range(1000000).exists(i, i == rank)"})),
            NotReady(
                "InvalidExpression",
                "spec.keep: lists.range at line 1, column 12 needs a literal size of at most 1000",
            ),
        ),
        (
            "runaway",
            jobs(
                json!({"keep": "lists.range(1000).all(a, lists.range(1000).all(b, a + b >= 0)) && false"}),
            ),
            NotReady("InvalidExpression", "ran out of its time budget"),
        ),
        (
            "cron-minute-61",
            jobs(json!({"schedule": "61 * * * *"})),
            NotReady("InvalidSchedule", "spec.schedule"),
        ),
        (
            "cron-six-fields",
            jobs(json!({"schedule": "0 0 * * * *"})),
            NotReady("InvalidSchedule", "spec.schedule"),
        ),
        (
            "cron-words",
            jobs(json!({"schedule": "every day"})),
            NotReady("InvalidSchedule", "spec.schedule"),
        ),
        (
            "time-zone",
            jobs(json!({"timeZone": "Mars/Olympus_Mons"})),
            NotReady("InvalidSchedule", "spec.timeZone"),
        ),
        (
            "selector-bad-key",
            jobs(json!({"target": {"selector": {"matchLabels": {"bad key!": "x"}}}})),
            NotReady("InvalidTarget", "spec.target.selector"),
        ),
        (
            "selector-bad-operator",
            jobs(
                json!({"target": {"selector": {"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]}}}),
            ),
            NotReady("InvalidTarget", "spec.target.selector"),
        ),
        (
            "field-selector-garbage",
            secrets(json!({"target": {"fieldSelector": "type"}})),
            NotReady(
                "InvalidTarget",
                "spec.target.fieldSelector: 'type' is not field=value",
            ),
        ),
        (
            "field-selector-unsupported",
            secrets(json!({"target": {"fieldSelector": "data.password=hunter2"}})),
            NotReady(
                "InvalidTarget",
                "spec.target.fieldSelector: field 'data.password' is not supported for Secret",
            ),
        ),
        (
            "referenced-by-type",
            secrets(
                json!({"referencedBy": [{"apiVersion": "v1", "kind": "ConfigMap", "refs": "object.metadata.name.size()"}]}),
            ),
            NotReady(
                "InvalidExpression",
                "spec.referencedBy[0].refs: must evaluate to list",
            ),
        ),
        (
            "referenced-by-unserved",
            secrets(
                json!({"referencedBy": [{"apiVersion": "example.com/v1", "kind": "Widget", "refs": "[object.metadata.name]"}]}),
            ),
            NotReady(
                "TargetUnavailable",
                "does not serve kind Widget in example.com/v1",
            ),
        ),
        (
            "credentials-missing",
            oci(
                json!({"url": http, "repositories": ["x"], "credentialsSecretRef": {"name": "no-such-secret"}}),
            ),
            NotReady("CredentialsError", "no-such-secret"),
        ),
        (
            "credentials-wrong-type",
            oci(
                json!({"url": http, "repositories": ["x"], "credentialsSecretRef": {"name": "opaque"}}),
            ),
            NotReady("CredentialsError", "opaque"),
        ),
        (
            "registry-unreachable",
            oci(json!({"url": "http://127.0.0.1:1", "repositories": ["x"]})),
            NotReady("TargetUnavailable", "127.0.0.1:1"),
        ),
    ]
}

#[tokio::test]
async fn bad_policies_are_refused_or_reported_and_nothing_is_deleted() {
    let bed = setup("bad").await;
    for i in 0..4 {
        job(
            &bed,
            &format!("bad-{i}"),
            json!({"app": "bad"}),
            "succeeded",
        )
        .await;
    }
    let secrets_api: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    for (name, labels, ty) in [
        (
            "sh.helm.release.v1.app.v1",
            json!({"owner": "helm"}),
            "helm.sh/release.v1",
        ),
        (
            "sh.helm.release.v1.app.v2",
            json!({"owner": "helm"}),
            "helm.sh/release.v1",
        ),
        ("opaque", json!({}), "Opaque"),
    ] {
        let s = json!({"apiVersion": "v1", "kind": "Secret", "type": ty,
                       "metadata": {"name": name, "labels": labels}, "stringData": {"k": "v"}});
        secrets_api
            .patch(
                name,
                &PatchParams::apply("retainer-tests"),
                &Patch::Apply(&s),
            )
            .await
            .expect("secret");
    }
    let before = survivors(&bed).await;
    assert_eq!(before.len(), 7, "{before:?}");

    let registry = registry("olareg");
    let all = cases(&registry);
    assert!(all.len() >= 30, "the matrix has {} cases", all.len());
    let api = policies(&bed);
    let mut accepted = Vec::new();
    for (name, spec, want) in &all {
        let obj = json!({"apiVersion": "retainer.dev/v1alpha1", "kind": "RetentionPolicy",
                         "metadata": {"name": name, "labels": owner_labels()}, "spec": spec});
        let result = api
            .patch(
                name,
                &PatchParams::apply("retainer-tests").force(),
                &Patch::Apply(&obj),
            )
            .await;
        match (want, result) {
            (Refused(msg), Err(e)) => {
                let e = e.to_string();
                assert!(e.contains(msg), "{name}: refused with {e:?}, want {msg:?}");
            }
            (Refused(msg), Ok(_)) => panic!("{name}: accepted, want refused with {msg:?}"),
            (NotReady(..), Err(e)) => panic!("{name}: refused ({e}), want accepted"),
            (NotReady(reason, msg), Ok(_)) => accepted.push((*name, *reason, *msg)),
        }
    }
    // Cluster-scoped: a ClusterRetentionPolicy must name its credentials' namespace.
    let crp_gvk = GroupVersionKind::gvk("retainer.dev", "v1alpha1", "ClusterRetentionPolicy");
    let crps: Api<DynamicObject> =
        Api::all_with(bed.client.clone(), &ApiResource::from_gvk(&crp_gvk));
    let crp_name = format!("{}-no-cred-ns", bed.ns);
    let crp = json!({"apiVersion": "retainer.dev/v1alpha1", "kind": "ClusterRetentionPolicy",
                     "metadata": {"name": crp_name, "labels": owner_labels()},
                     "spec": oci(json!({"url": format!("http://{registry}"), "repositories": ["x"],
                                        "credentialsSecretRef": {"name": "regcred"}}))});
    let err = crps
        .patch(
            &crp_name,
            &PatchParams::apply("retainer-tests").force(),
            &Patch::Apply(&crp),
        )
        .await
        .expect_err("a ClusterRetentionPolicy without the credentials' namespace");
    assert!(
        err.to_string()
            .contains("a ClusterRetentionPolicy must name the namespace of its credentials Secret"),
        "{err}"
    );

    controller();
    for (name, reason, msg) in &accepted {
        let c = ready_condition(&bed, name).await;
        assert_eq!(c["status"], "False", "{name}: {c}");
        assert_eq!(c["reason"], *reason, "{name}: {c}");
        let m = c["message"].as_str().unwrap_or("");
        assert!(m.contains(msg), "{name}: message {m:?}, want {msg:?}");
    }
    // Ask every accepted policy for a sweep; none may delete anything.
    for (name, ..) in &accepted {
        let patch =
            json!({"metadata": {"annotations": {"retainer.dev/sweep-requested": unique("t")}}});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("request a sweep");
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    for (name, ..) in &accepted {
        let p = api.get(name).await.expect("policy");
        assert!(
            p.data["status"]["lastSweep"].is_null(),
            "{name} swept: {}",
            p.data["status"]
        );
    }
    assert_eq!(survivors(&bed).await, before, "nothing may be deleted");
    eprintln!(
        "bad input: {} cases, {} refused by the schema, {} reported Ready=False, 0 objects deleted",
        all.len() + 1,
        all.len() + 1 - accepted.len(),
        accepted.len()
    );
    bed.cleanup().await;
}

async fn survivors(bed: &Bed) -> Vec<String> {
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    let mut out: Vec<String> = jobs
        .list(&ListParams::default())
        .await
        .expect("jobs")
        .items
        .iter()
        .map(|j| format!("job/{}", j.name_any()))
        .collect();
    out.extend(
        secrets
            .list(&ListParams::default())
            .await
            .expect("secrets")
            .items
            .iter()
            .filter(|s| s.type_.as_deref() != Some("kubernetes.io/service-account-token"))
            .map(|s| format!("secret/{}", s.name_any())),
    );
    out.sort();
    out
}
