use super::*;
use crate::api::RetentionPolicySpec;
use serde_json::json;

const NOW: &str = "2026-06-01T12:00:00Z";

fn policy(ns: Option<&str>, spec: serde_json::Value) -> CompiledPolicy {
    let spec: RetentionPolicySpec = serde_json::from_value(spec).unwrap();
    CompiledPolicy::compile(PolicyView {
        namespace: ns.map(String::from),
        name: "p".into(),
        generation: Some(1),
        spec,
    })
    .unwrap()
}

fn run(p: &CompiledPolicy, objects: &[Json], referrers: &[Json]) -> Vec<(String, Verdict, String)> {
    let refs = RefIndex::build(referrers);
    let ns = BTreeMap::from([
        (
            "prod".to_string(),
            BTreeMap::from([("env".to_string(), "prod".to_string())]),
        ),
        ("dev".to_string(), BTreeMap::new()),
    ]);
    let snap = Snapshot {
        objects: objects.iter().collect(),
        refs: &refs,
        custom_referrers: referrers.iter().collect(),
        namespace_labels: &ns,
        now: NOW.parse().unwrap(),
    };
    let mut out: Vec<_> = evaluate(p, &snap)
        .results
        .into_iter()
        .map(std::sync::Arc::unwrap_or_clone)
        .map(|r| {
            let id = match r.id {
                ObjectId::Kube {
                    namespace, name, ..
                } => format!("{namespace}/{name}"),
                ObjectId::Oci {
                    repository,
                    tags,
                    digest,
                } => format!("{repository}:{}@{digest}", tags.join(",")),
            };
            (id, r.verdict, r.reason)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn verdicts(results: &[(String, Verdict, String)]) -> Vec<(&str, Verdict)> {
    results.iter().map(|(id, v, _)| (id.as_str(), *v)).collect()
}

fn job(ns: &str, name: &str, created: &str, labels: serde_json::Value, state: &str) -> Json {
    let conditions = match state {
        "succeeded" => {
            json!([{"type": "SuccessCriteriaMet", "status": "True"}, {"type": "Complete", "status": "True"}])
        }
        "failed" => {
            json!([{"type": "FailureTarget", "status": "True"}, {"type": "Failed", "status": "True"}])
        }
        _ => json!([]),
    };
    let (succeeded, failed) = match state {
        "succeeded" => (1, 0),
        "failed" => (0, 1),
        _ => (0, 0),
    };
    json!({"apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"namespace": ns, "name": name, "uid": format!("uid-{name}"), "resourceVersion": "1",
                     "creationTimestamp": created, "labels": labels},
        "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "busybox"}]}}},
        "status": {"succeeded": succeeded, "failed": failed, "conditions": conditions}})
}

#[test]
fn fleet_keeps_the_newest_succeeded_job_per_gitrepo() {
    let p = policy(
        Some("fleet-local"),
        json!({
        "target": {"kind": "Job"},
        "match": "object.status.?succeeded.orValue(0) > 0",
        "groupBy": "object.metadata.labels['gitjob.fleet.cattle.io/name']",
        "keep": "rank < 1",
        "schedule": "@hourly"}),
    );
    let l = |repo: &str| json!({"gitjob.fleet.cattle.io/name": repo});
    let jobs = vec![
        job(
            "fleet-local",
            "a-1",
            "2026-06-01T01:00:00Z",
            l("a"),
            "succeeded",
        ),
        job(
            "fleet-local",
            "a-2",
            "2026-06-01T02:00:00Z",
            l("a"),
            "succeeded",
        ),
        job(
            "fleet-local",
            "a-3",
            "2026-06-01T03:00:00Z",
            l("a"),
            "succeeded",
        ),
        job(
            "fleet-local",
            "a-4",
            "2026-06-01T04:00:00Z",
            l("a"),
            "running",
        ),
        job(
            "fleet-local",
            "a-5",
            "2026-06-01T05:00:00Z",
            l("a"),
            "failed",
        ),
        job(
            "fleet-local",
            "b-1",
            "2026-06-01T01:00:00Z",
            l("b"),
            "succeeded",
        ),
        job("other", "a-0", "2026-05-01T01:00:00Z", l("a"), "succeeded"),
    ];
    let r = run(&p, &jobs, &[]);
    assert_eq!(
        verdicts(&r),
        vec![
            ("fleet-local/a-1", Verdict::Delete),
            ("fleet-local/a-2", Verdict::Delete),
            ("fleet-local/a-3", Verdict::Keep),
            ("fleet-local/b-1", Verdict::Keep),
        ]
    );
    assert_eq!(r[2].2, "keep: rank < 1");
    assert_eq!(r[0].2, "no term of keep held");
}

fn release(ns: &str, name: &str, version: &str, status: &str, created: &str) -> Json {
    json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"namespace": ns, "name": format!("sh.helm.release.v1.{name}.v{version}"),
                     "creationTimestamp": created,
                     "labels": {"owner": "helm", "name": name, "version": version, "status": status}}})
}

#[test]
fn helm_history_keeps_newest_by_version_and_the_deployed_one() {
    let p = policy(
        Some("apps"),
        json!({
        "target": {"kind": "Secret", "fieldSelector": "type=helm.sh/release.v1", "selector": {"matchLabels": {"owner": "helm"}}},
        "groupBy": "object.metadata.labels.name",
        "orderBy": "int(object.metadata.labels.version)",
        "keep": "rank < 2 || object.metadata.labels.status == 'deployed'",
        "schedule": "@daily"}),
    );
    // Creation order deliberately disagrees with version order: version decides.
    let secrets = vec![
        release("apps", "web", "1", "superseded", "2026-05-05T00:00:00Z"),
        release("apps", "web", "2", "deployed", "2026-05-04T00:00:00Z"),
        release("apps", "web", "9", "superseded", "2026-05-03T00:00:00Z"),
        release("apps", "web", "10", "superseded", "2026-05-02T00:00:00Z"),
        release("apps", "web", "11", "failed", "2026-05-01T00:00:00Z"),
        release("apps", "db", "1", "deployed", "2026-05-01T00:00:00Z"),
    ];
    let r = run(&p, &secrets, &[]);
    let v: BTreeMap<_, _> = r
        .iter()
        .map(|(id, v, why)| (id.clone(), (*v, why.clone())))
        .collect();
    assert_eq!(v["apps/sh.helm.release.v1.web.v11"].0, Verdict::Keep);
    assert_eq!(v["apps/sh.helm.release.v1.web.v10"].0, Verdict::Keep);
    assert_eq!(v["apps/sh.helm.release.v1.web.v9"].0, Verdict::Delete);
    assert_eq!(
        v["apps/sh.helm.release.v1.web.v2"],
        (
            Verdict::Keep,
            "keep: object.metadata.labels.status == 'deployed'".into()
        )
    );
    assert_eq!(v["apps/sh.helm.release.v1.web.v1"].0, Verdict::Delete);
    assert_eq!(v["apps/sh.helm.release.v1.db.v1"].0, Verdict::Keep);
}

#[test]
fn semver_orders_above_string_order() {
    let mk = |v: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": "ns", "name": format!("s-{v}"),
        "creationTimestamp": "2026-05-01T00:00:00Z", "labels": {"v": v}}})
    };
    let objs = vec![mk("1.9.1"), mk("1.10.0"), mk("1.2.0")];
    let by_semver = policy(
        Some("ns"),
        json!({"target": {"kind": "Secret"},
        "orderBy": "semver(object.metadata.labels.v)", "keep": "rank < 1", "schedule": "@daily"}),
    );
    let by_string = policy(
        Some("ns"),
        json!({"target": {"kind": "Secret"},
        "orderBy": "object.metadata.labels.v", "keep": "rank < 1", "schedule": "@daily"}),
    );
    let kept = |p: &CompiledPolicy| {
        run(p, &objs, &[])
            .into_iter()
            .filter(|r| r.1 == Verdict::Keep)
            .map(|r| r.0)
            .collect::<Vec<_>>()
    };
    assert_eq!(kept(&by_semver), vec!["ns/s-1.10.0"]);
    assert_eq!(kept(&by_string), vec!["ns/s-1.9.1"]);
}

#[test]
fn timestamps_order_across_cels_whole_range() {
    // Nanoseconds since the epoch do not fit 64 bits before 1678 or after 2262; such
    // timestamps once all ranked as the epoch, and the tie went to the name.
    let mk = |name: &str, t: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": "ns", "name": name,
        "creationTimestamp": "2026-05-01T00:00:00Z", "annotations": {"t": t}}})
    };
    let objs = vec![
        mk("a", "1500-01-01T00:00:00.5Z"),
        mk("b", "9000-01-01T00:00:00Z"),
        mk("c", "1500-01-01T00:00:00.25Z"),
        mk("d", "1969-12-31T23:59:59.5Z"),
    ];
    let p = policy(
        Some("ns"),
        json!({"target": {"kind": "Secret"},
        "orderBy": "timestamp(object.metadata.annotations.t)", "keep": "rank < 2", "schedule": "@daily"}),
    );
    let kept: Vec<String> = run(&p, &objs, &[])
        .into_iter()
        .filter(|r| r.1 == Verdict::Keep)
        .map(|r| r.0)
        .collect();
    assert_eq!(kept, vec!["ns/b", "ns/d"]);
}

#[test]
fn guards_keep_whatever_keep_says() {
    let p = policy(
        Some("ns"),
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "@daily"}),
    );
    let mut labelled = job(
        "ns",
        "labelled",
        "2026-05-01T00:00:00Z",
        json!({"retainer.dev/keep": "true"}),
        "succeeded",
    );
    let mut annotated = job(
        "ns",
        "annotated",
        "2026-05-01T00:00:00Z",
        json!({}),
        "succeeded",
    );
    annotated["metadata"]["annotations"] = json!({"retainer.dev/keep": "true"});
    let mut deleting = job(
        "ns",
        "deleting",
        "2026-05-01T00:00:00Z",
        json!({}),
        "succeeded",
    );
    deleting["metadata"]["deletionTimestamp"] = json!("2026-06-01T11:00:00Z");
    let running = job(
        "ns",
        "running",
        "2026-05-01T00:00:00Z",
        json!({}),
        "running",
    );
    let failed = job("ns", "failed", "2026-05-01T00:00:00Z", json!({}), "failed");
    labelled["metadata"]["labels"]["x"] = json!("y");
    let r = run(&p, &[labelled, annotated, deleting, running, failed], &[]);
    let reasons: Vec<_> = r
        .iter()
        .map(|(id, v, why)| (id.as_str(), *v, why.as_str()))
        .collect();
    assert_eq!(
        reasons,
        vec![
            (
                "ns/annotated",
                Verdict::Keep,
                "guard: annotation retainer.dev/keep=true"
            ),
            ("ns/deleting", Verdict::Keep, "guard: already being deleted"),
            ("ns/failed", Verdict::Delete, "no term of keep held"),
            (
                "ns/labelled",
                Verdict::Keep,
                "guard: label retainer.dev/keep=true"
            ),
            ("ns/running", Verdict::Keep, "guard: job has not finished"),
        ]
    );
}

#[test]
fn variables_age_group_rank_group_size() {
    let p = policy(
        Some("ns"),
        json!({"target": {"kind": "Job"},
        "groupBy": "object.metadata.labels.app",
        "keep": "age < duration('24h') || (groupSize > 2 && rank == groupSize - 1) || group == 'pinned'",
        "schedule": "@daily"}),
    );
    let jobs = vec![
        job(
            "ns",
            "young",
            "2026-06-01T00:00:00Z",
            json!({"app": "a"}),
            "succeeded",
        ),
        job(
            "ns",
            "old-1",
            "2026-05-01T00:00:00Z",
            json!({"app": "a"}),
            "succeeded",
        ),
        job(
            "ns",
            "old-0",
            "2026-04-01T00:00:00Z",
            json!({"app": "a"}),
            "succeeded",
        ),
        job(
            "ns",
            "pinned",
            "2026-04-01T00:00:00Z",
            json!({"app": "pinned"}),
            "succeeded",
        ),
    ];
    let r = run(&p, &jobs, &[]);
    assert_eq!(
        verdicts(&r),
        vec![
            ("ns/old-0", Verdict::Keep),
            ("ns/old-1", Verdict::Delete),
            ("ns/pinned", Verdict::Keep),
            ("ns/young", Verdict::Keep),
        ]
    );
    assert_eq!(r[0].2, "keep: (groupSize > 2 && rank == groupSize - 1)");
    assert_eq!(r[3].2, "keep: age < duration('24h')");
}

#[test]
fn evaluation_errors_keep_the_object() {
    let p = policy(
        Some("ns"),
        json!({"target": {"kind": "Job"},
        "groupBy": "object.metadata.labels.app", "keep": "false", "schedule": "@daily"}),
    );
    let r = run(
        &p,
        &[job(
            "ns",
            "nolabel",
            "2026-05-01T00:00:00Z",
            json!({}),
            "succeeded",
        )],
        &[],
    );
    assert_eq!(r[0].1, Verdict::Error);
    assert!(r[0].2.starts_with("spec.groupBy: "), "{}", r[0].2);
    // Mixed orderBy types in one group: nobody is ranked, nobody deleted.
    let p = policy(
        Some("ns"),
        json!({"target": {"kind": "Job"},
        "orderBy": "object.metadata.name == 'a' ? dyn(1) : 'x'", "keep": "rank < 1", "schedule": "@daily"}),
    );
    let r = run(
        &p,
        &[
            job("ns", "a", "2026-05-01T00:00:00Z", json!({}), "succeeded"),
            job("ns", "b", "2026-05-01T00:00:00Z", json!({}), "succeeded"),
        ],
        &[],
    );
    assert!(r.iter().all(|x| x.1 == Verdict::Error), "{r:?}");
    assert!(
        r[0].2.contains("values of different types (int, string)"),
        "{}",
        r[0].2
    );
}

#[test]
fn namespaced_policies_see_only_their_namespace_and_cluster_policies_their_selection() {
    let jobs = vec![
        job("prod", "p", "2026-05-01T00:00:00Z", json!({}), "succeeded"),
        job("dev", "d", "2026-05-01T00:00:00Z", json!({}), "succeeded"),
    ];
    let p = policy(
        Some("dev"),
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "@daily"}),
    );
    assert_eq!(
        verdicts(&run(&p, &jobs, &[])),
        vec![("dev/d", Verdict::Delete)]
    );
    let p = policy(
        None,
        json!({"target": {"kind": "Job", "namespaceSelector": {"matchLabels": {"env": "prod"}}}, "keep": "false", "schedule": "@daily"}),
    );
    assert_eq!(
        verdicts(&run(&p, &jobs, &[])),
        vec![("prod/p", Verdict::Delete)]
    );
    let p = policy(
        None,
        json!({"target": {"kind": "Job"}, "keep": "false", "schedule": "@daily"}),
    );
    assert_eq!(run(&p, &jobs, &[]).len(), 2);
    let view = PolicyView { namespace: Some("dev".into()), name: "x".into(), generation: None,
        spec: serde_json::from_value(json!({"target": {"kind": "Job", "namespaceSelector": {}}, "keep": "true", "schedule": "@daily"})).unwrap() };
    assert!(matches!(
        CompiledPolicy::compile(view),
        Err(PolicyError::InvalidTarget(_))
    ));
}

#[test]
fn unused_secrets_are_found_through_every_referrer() {
    let secret = |name: &str| {
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": "ns", "name": name,
        "creationTimestamp": "2026-01-01T00:00:00Z", "labels": {"cleanup": "true"}}})
    };
    let p = policy(
        Some("ns"),
        json!({"target": {"kind": "Secret", "selector": {"matchLabels": {"cleanup": "true"}}},
        "keep": "referencedBy.size() > 0 || age < duration('168h')", "schedule": "@daily"}),
    );
    let secrets: Vec<Json> = [
        "by-pod",
        "by-sa",
        "by-ingress",
        "by-deploy",
        "by-cron",
        "by-other-ns",
        "unused",
    ]
    .iter()
    .map(|n| secret(n))
    .collect();
    let referrers = vec![
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "ns", "name": "p"}, "spec": {"containers": [{"name": "c", "image": "x", "envFrom": [{"secretRef": {"name": "by-pod"}}]}]}}),
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"namespace": "ns", "name": "sa"}, "imagePullSecrets": [{"name": "by-sa"}]}),
        json!({"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"namespace": "ns", "name": "ing"}, "spec": {"tls": [{"secretName": "by-ingress"}]}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"namespace": "ns", "name": "d"}, "spec": {"template": {"spec": {"volumes": [{"name": "v", "secret": {"secretName": "by-deploy"}}], "containers": []}}}}),
        json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"namespace": "ns", "name": "cj"}, "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "x", "env": [{"name": "A", "valueFrom": {"secretKeyRef": {"name": "by-cron", "key": "k"}}}]}]}}}}}}),
        json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "elsewhere", "name": "p"}, "spec": {"containers": [{"name": "c", "image": "x", "envFrom": [{"secretRef": {"name": "by-other-ns"}}]}]}}),
    ];
    let r = run(&p, &secrets, &referrers);
    let deleted: Vec<_> = r
        .iter()
        .filter(|x| x.1 == Verdict::Delete)
        .map(|x| x.0.as_str())
        .collect();
    assert_eq!(deleted, vec!["ns/by-other-ns", "ns/unused"]);
    assert!(
        r.iter()
            .filter(|x| x.1 == Verdict::Keep)
            .all(|x| x.2 == "keep: referencedBy.size() > 0")
    );
}

#[test]
fn custom_referrers_and_their_failures() {
    let p = policy(
        Some("ns"),
        json!({"target": {"kind": "Secret"},
        "keep": "referencedBy.exists(r, r.kind == 'Bundle')",
        "referencedBy": [{"apiVersion": "fleet.cattle.io/v1alpha1", "kind": "Bundle", "refs": "object.spec.secrets"}],
        "schedule": "@daily"}),
    );
    let s = |n: &str| json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"namespace": "ns", "name": n, "creationTimestamp": "2026-01-01T00:00:00Z"}});
    let bundle = json!({"apiVersion": "fleet.cattle.io/v1alpha1", "kind": "Bundle", "metadata": {"namespace": "ns", "name": "b"}, "spec": {"secrets": ["used"]}});
    let r = run(&p, &[s("used"), s("unused")], std::slice::from_ref(&bundle));
    assert_eq!(
        verdicts(&r),
        vec![("ns/unused", Verdict::Delete), ("ns/used", Verdict::Keep)]
    );
    // A Bundle whose refs cannot be read: nothing in its namespace is deleted.
    let broken = json!({"apiVersion": "fleet.cattle.io/v1alpha1", "kind": "Bundle", "metadata": {"namespace": "ns", "name": "broken"}, "spec": {}});
    let r = run(&p, &[s("used"), s("unused")], &[bundle, broken]);
    assert_eq!(
        verdicts(&r),
        vec![("ns/unused", Verdict::Error), ("ns/used", Verdict::Keep)]
    );
    assert!(r[0].2.contains("spec.referencedBy[0].refs"), "{}", r[0].2);
}

fn artifact(repo: &str, digest: &str, tags: &[&str], created: Option<&str>) -> Json {
    let mut a = json!({"kind": "OCIArtifact", "registry": "127.0.0.1:5000", "repository": repo, "digest": digest,
        "tags": tags, "mediaType": "application/vnd.oci.image.manifest.v1+json", "annotations": {}, "size": 100});
    if let Some(c) = created {
        a["created"] = json!(c);
    }
    a
}

#[test]
fn oci_mark_and_sweep() {
    let p = policy(
        Some("ns"),
        json!({"target": {"kind": "OCIArtifact", "registry": {"url": "http://127.0.0.1:5000", "repositories": ["team/*"]}},
        "orderBy": "semver(object.tags[0], true)",
        "match": "object.tags.size() > 0 && isSemver(object.tags[0], true)",
        "keep": "rank < 2 || referencedBy.size() > 0 || age < duration('720h')",
        "schedule": "@daily"}),
    );
    let old = Some("2026-01-01T00:00:00Z");
    let mut arts = vec![
        artifact("team/app", "sha256:a1", &["1.9.1"], old),
        artifact("team/app", "sha256:a2", &["1.10.0"], old),
        artifact("team/app", "sha256:a3", &["1.2.0"], old),
        artifact("team/app", "sha256:a4", &["1.0.0"], old),
        artifact("team/app", "sha256:a5", &["0.9.0"], old),
        artifact(
            "team/app",
            "sha256:a6",
            &["0.1.0"],
            Some("2026-05-30T00:00:00Z"),
        ),
        artifact("other/app", "sha256:o1", &["0.0.1"], old),
    ];
    let mut sig = artifact("team/app", "sha256:s1", &[], old);
    sig["subject"] = json!("sha256:a4");
    arts.push(sig);
    let mut sig2 = artifact("team/app", "sha256:s2", &[], old);
    sig2["subject"] = json!("sha256:a2");
    arts.push(sig2);
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "x", "name": "runs-a5"},
        "spec": {"containers": [{"image": "127.0.0.1:5000/team/app:whatever"}]},
        "status": {"containerStatuses": [{"imageID": "127.0.0.1:5000/team/app@sha256:a5"}]}});
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"namespace": "y", "name": "names-1.2.0"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "127.0.0.1:5000/team/app:1.2.0"}]}}}}}});
    let r = run(&p, &arts, &[pod, cron]);
    // Signatures have no semver tag: match leaves them out unless their subject pulls them in.
    let v: BTreeMap<_, _> = r
        .iter()
        .map(|(id, v, why)| (id.clone(), (*v, why.clone())))
        .collect();
    assert_eq!(v["team/app:1.10.0@sha256:a2"].0, Verdict::Keep);
    assert_eq!(v["team/app:1.9.1@sha256:a1"].0, Verdict::Keep);
    // What the cluster runs or names is kept by the mark, before keep is asked.
    assert_eq!(
        v["team/app:1.2.0@sha256:a3"],
        (
            Verdict::Keep,
            "guard: in use by CronJob y/names-1.2.0".into()
        )
    );
    assert_eq!(
        v["team/app:0.9.0@sha256:a5"],
        (Verdict::Keep, "guard: in use by Pod x/runs-a5".into())
    );
    assert_eq!(
        v["team/app:0.1.0@sha256:a6"],
        (Verdict::Keep, "keep: age < duration('720h')".into())
    );
    assert_eq!(v["team/app:1.0.0@sha256:a4"].0, Verdict::Delete);
    assert!(!v.keys().any(|k| k.starts_with("other/")));
    assert_eq!(
        v["team/app:@sha256:s1"],
        (
            Verdict::Delete,
            "goes with its subject sha256:a4, which is deleted".into()
        )
    );
    assert_eq!(
        v["team/app:@sha256:s2"],
        (
            Verdict::Keep,
            "guard: refers to kept subject sha256:a2".into()
        )
    );
}

#[test]
fn oci_referrers_follow_their_subject_and_index_children_stay() {
    let p = policy(
        Some("ns"),
        json!({"target": {"kind": "OCIArtifact", "registry": {"url": "http://127.0.0.1:5000", "repositories": ["app"]}},
        "keep": "object.tags.exists(t, t == 'keep')", "schedule": "@daily"}),
    );
    let old = Some("2026-01-01T00:00:00Z");
    let mut index = artifact("app", "sha256:idx", &["keep"], old);
    index["manifests"] = json!(["sha256:amd64", "sha256:arm64"]);
    let amd = artifact("app", "sha256:amd64", &[], old);
    let arm = artifact("app", "sha256:arm64", &[], old);
    let gone = artifact("app", "sha256:gone", &["old"], old);
    let mut sig_gone = artifact("app", "sha256:sig-gone", &["sha256-gone.sig"], old);
    sig_gone["subject"] = json!("sha256:gone");
    let mut sig_kept = artifact("app", "sha256:sig-kept", &[], old);
    sig_kept["subject"] = json!("sha256:idx");
    let mut sbom_sig = artifact("app", "sha256:sbom-sig", &[], old);
    sbom_sig["subject"] = json!("sha256:sig-gone");
    let mut orphan = artifact("app", "sha256:orphan", &[], old);
    orphan["subject"] = json!("sha256:elsewhere");
    let r = run(
        &p,
        &[index, amd, arm, gone, sig_gone, sig_kept, sbom_sig, orphan],
        &[],
    );
    let v: BTreeMap<_, _> = r
        .iter()
        .map(|(id, v, _)| (id.split('@').nth(1).unwrap().to_string(), *v))
        .collect();
    let want = [
        ("sha256:idx", Verdict::Keep),
        ("sha256:amd64", Verdict::Keep),
        ("sha256:arm64", Verdict::Keep),
        ("sha256:gone", Verdict::Delete),
        ("sha256:sig-gone", Verdict::Delete),
        ("sha256:sig-kept", Verdict::Keep),
        ("sha256:sbom-sig", Verdict::Delete),
        ("sha256:orphan", Verdict::Keep),
    ];
    for (d, want) in want {
        assert_eq!(v[d], want, "{d}");
    }
}

#[test]
fn go_durations() {
    assert_eq!(parse_go_duration("1h30m").unwrap().as_secs(), 5400);
    assert_eq!(parse_go_duration("90s").unwrap().as_secs(), 90);
    assert!(parse_go_duration("1d").is_err());
    assert!(parse_go_duration("").is_err());
    assert!(parse_go_duration("h").is_err());
}

#[test]
fn repository_patterns() {
    assert!(repository_matches("team/*", "team/app"));
    assert!(repository_matches("team/*", "team/a/b"));
    assert!(!repository_matches("team/*", "teamx/app"));
    assert!(!repository_matches("team/*", "team"));
    assert!(repository_matches("team/app", "team/app"));
    assert!(!repository_matches("team/app", "team/app2"));
}

#[test]
fn evaluation_stops_when_its_budget_runs_out_and_gives_no_verdicts() {
    let p = policy(
        None,
        json!({"target": {"kind": "Job"}, "schedule": "@daily", "keep": "rank < 1"}),
    );
    let objects: Vec<Json> = (0..10)
        .map(|i| {
            job(
                "ns",
                &format!("j{i}"),
                "2026-05-01T00:00:00Z",
                json!({}),
                "succeeded",
            )
        })
        .collect();
    let refs = RefIndex::build(&[]);
    let ns = BTreeMap::new();
    let snap = Snapshot {
        objects: objects.iter().collect(),
        refs: &refs,
        custom_referrers: Vec::new(),
        namespace_labels: &ns,
        now: NOW.parse().unwrap(),
    };
    // (budget in checks, expected outcome): the budget is asked once per object per pass.
    // Ok(candidates) or Err((evaluated, total)).
    type Outcome = Result<i64, (usize, usize)>;
    let cases: &[(usize, Outcome)] = &[
        (0, Err((0, 10))),
        (4, Err((4, 10))),
        (10, Err((0, 10))),
        (15, Err((5, 10))),
        (usize::MAX, Ok(9)),
    ];
    for &(budget, ref want) in cases {
        let asked = std::cell::Cell::new(0usize);
        let over = || {
            asked.set(asked.get() + 1);
            asked.get() > budget
        };
        let got = evaluate_within(&p, &snap, &over)
            .map(|e| e.summary.candidates)
            .map_err(|e| (e.evaluated, e.total));
        assert_eq!(&got, want, "budget {budget}");
    }
    let err = evaluate_within(&p, &snap, &|| true)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ran out of its time budget after 0 of 10 objects"),
        "{err}"
    );
}

#[test]
fn selectors_are_checked_as_the_api_server_checks_them() {
    let cases: &[(serde_json::Value, Option<&str>)] = &[
        (json!({"selector": {"matchLabels": {"app": "web"}}}), None),
        (
            json!({"selector": {"matchLabels": {"example.com/app-name_1.x": "v-1.2_b"}}}),
            None,
        ),
        (json!({"selector": {"matchLabels": {"app": ""}}}), None),
        (
            json!({"selector": {"matchLabels": {"bad key!": "x"}}}),
            Some("spec.target.selector: 'bad key!' is not a valid label key"),
        ),
        (
            json!({"selector": {"matchLabels": {"Example.com/app": "x"}}}),
            Some("'Example.com/app' is not a valid label key"),
        ),
        (
            json!({"selector": {"matchLabels": {"app": "-web"}}}),
            Some("'-web' is not a valid label value"),
        ),
        (
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "In", "values": ["a b"]}]}}),
            Some("'a b' is not a valid label value"),
        ),
        (
            json!({"selector": {"matchExpressions": [{"key": "app", "operator": "Near", "values": ["x"]}]}}),
            Some("unknown operator 'Near'"),
        ),
        (json!({"fieldSelector": "status.successful=1"}), None),
        (
            json!({"fieldSelector": "spec.parallelism=1"}),
            Some(
                "spec.target.fieldSelector: field 'spec.parallelism' is not supported for Job (supported: metadata.name, metadata.namespace, status.successful)",
            ),
        ),
        (
            json!({"fieldSelector": "status.successful"}),
            Some("'status.successful' is not field=value"),
        ),
    ];
    for (target, want) in cases {
        let mut t = json!({"kind": "Job"});
        merge(&mut t, target.clone());
        let spec: RetentionPolicySpec =
            serde_json::from_value(json!({"target": t, "schedule": "@daily", "keep": "true"}))
                .unwrap();
        let got = CompiledPolicy::compile(PolicyView {
            namespace: Some("ns".into()),
            name: "p".into(),
            generation: Some(1),
            spec,
        })
        .err()
        .map(|e| e.to_string());
        match (want, got) {
            (None, None) => {}
            (Some(w), Some(g)) => assert!(g.contains(w), "{target}: got {g:?}, want {w:?}"),
            (w, g) => panic!("{target}: got {g:?}, want {w:?}"),
        }
    }
}

fn merge(base: &mut serde_json::Value, patch: serde_json::Value) {
    if let (Some(b), serde_json::Value::Object(p)) = (base.as_object_mut(), patch) {
        b.extend(p);
    }
}

/// A Helm chart as the inventory describes it: a 100-byte manifest, a 10-byte config and one
/// chart layer of `layer` bytes, plus the `shared` layers.
fn chart(name: &str, version: &str, layer: u64, shared: &[(&str, u64)]) -> Json {
    let digest = format!("sha256:{name}-{version}");
    let mut layers = vec![
        json!({"mediaType": "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
        "digest": format!("sha256:layer-{name}-{version}"), "size": layer}),
    ];
    layers.extend(shared.iter().map(|(d, s)| json!({"digest": d, "size": s})));
    let mut a = artifact("charts", &digest, &[version], Some("2026-01-01T00:00:00Z"));
    a["artifactType"] = json!("application/vnd.cncf.helm.config.v1+json");
    a["config"] = json!({"mediaType": "application/vnd.cncf.helm.config.v1+json",
        "digest": format!("sha256:config-{name}-{version}"), "size": 10});
    a["layers"] = json!(layers);
    a["chart"] = json!({"name": name, "version": version});
    a
}

fn pressure_policy(keep: &str) -> CompiledPolicy {
    policy(
        Some("ns"),
        json!({"target": {"kind": "OCIArtifact", "registry": {"url": "http://127.0.0.1:5000", "repositories": ["charts"]}},
        "match": "has(object.chart)",
        "groupBy": "object.chart.name",
        "orderBy": "semver(object.chart.version)",
        "keep": keep, "schedule": "@daily"}),
    )
}

#[test]
fn storage_pressure_plans_deletions_lowest_rank_first_until_the_group_fits() {
    let versions = ["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0", "1.5.0"];
    // Each chart holds 100 + 10 + 1000 = 1110 bytes of its own.
    let web = |shared: &[(&str, u64)]| -> Vec<Json> {
        versions
            .iter()
            .map(|v| chart("web", v, 1000, shared))
            .collect()
    };
    let mut signed = web(&[]);
    let mut sig = artifact("charts", "sha256:sig", &[], None);
    sig["layers"] = json!([{"digest": "sha256:sigblob", "size": 50}]);
    sig["config"] = json!({"digest": "sha256:sigcfg", "size": 10});
    sig["subject"] = json!("sha256:web-1.0.0");
    signed.push(sig);
    let mut guarded = web(&[]);
    guarded[1]["annotations"] = json!({"retainer.dev/keep": "true"});
    let mut two_groups = web(&[]);
    two_groups.extend(["1.0.0", "2.0.0"].map(|v| chart("api", v, 5000, &[])));

    struct Case {
        name: &'static str,
        keep: &'static str,
        objects: Vec<Json>,
        deleted: &'static [&'static str],
        bytes: u64,
        freed: u64,
    }
    let cases = [
        Case {
            name: "deletes until the group is under the threshold",
            keep: "rank < 1 || groupBytes < 3000",
            objects: web(&[]),
            // 6660 → 5550 → 4440 → 3330 → 2220: 1.4.0 sees 2220 and stays.
            deleted: &["1.0.0", "1.1.0", "1.2.0", "1.3.0"],
            bytes: 6660,
            freed: 4440,
        },
        Case {
            name: "a group exactly at the threshold keeps the rest",
            keep: "rank < 1 || groupBytes <= 3330",
            objects: web(&[]),
            deleted: &["1.0.0", "1.1.0", "1.2.0"],
            bytes: 6660,
            freed: 3330,
        },
        Case {
            name: "under the threshold from the start deletes nothing",
            keep: "rank < 3 || groupBytes < 10000",
            objects: web(&[]),
            deleted: &[],
            bytes: 6660,
            freed: 0,
        },
        Case {
            name: "artifactBytes is the artifact's own footprint",
            keep: "artifactBytes < 1000 || rank < 2",
            objects: web(&[]),
            deleted: &["1.0.0", "1.1.0", "1.2.0", "1.3.0"],
            bytes: 6660,
            freed: 4440,
        },
        Case {
            name: "a layer shared in the group counts once and is freed with the last user",
            keep: "rank < 1 || groupBytes < 8000",
            // 5000 + 6 × 1110 = 11660 → 10550 → 9440 → 8330 → 7220.
            objects: web(&[("sha256:base", 5000)]),
            deleted: &["1.0.0", "1.1.0", "1.2.0", "1.3.0"],
            bytes: 11660,
            freed: 4440,
        },
        Case {
            name: "a signature's bytes go with its subject",
            keep: "rank < 1 || groupBytes < 4500",
            // 6660 + 160 = 6820 → (1.0.0 and its signature) 5550 → 4440: 1.2.0 stays.
            objects: signed,
            deleted: &["1.0.0", "1.1.0", "sig"],
            bytes: 6820,
            freed: 2380,
        },
        Case {
            name: "a guarded artifact keeps holding its bytes",
            keep: "rank < 1 || groupBytes < 3000",
            // 1.1.0 is kept by its annotation: 6660 → 5550 → (1.1.0 stays) → 4440 → 3330 → 2220.
            objects: guarded,
            deleted: &["1.0.0", "1.2.0", "1.3.0", "1.4.0"],
            bytes: 6660,
            freed: 4440,
        },
        Case {
            name: "each group has its own bytes",
            keep: "rank < 1 || groupBytes < 6000",
            // web 6660 → 5550; api 2 × 5110 = 10220 → 5110.
            objects: two_groups,
            deleted: &["1.0.0", "1.0.0"],
            bytes: 6660 + 10220,
            freed: 1110 + 5110,
        },
    ];
    for c in cases {
        let p = pressure_policy(c.keep);
        let refs = RefIndex::build(std::iter::empty::<&Json>());
        let ns = BTreeMap::new();
        let snap = Snapshot {
            objects: c.objects.iter().collect(),
            refs: &refs,
            custom_referrers: Vec::new(),
            namespace_labels: &ns,
            now: NOW.parse().unwrap(),
        };
        let eval = evaluate(&p, &snap);
        let mut deleted: Vec<String> = eval
            .candidates()
            .map(|r| match &r.id {
                ObjectId::Oci { digest, .. } => digest
                    .trim_start_matches("sha256:")
                    .trim_start_matches("web-")
                    .trim_start_matches("api-")
                    .to_string(),
                ObjectId::Kube { name, .. } => name.to_string(),
            })
            .collect();
        deleted.sort();
        let mut want: Vec<String> = c.deleted.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(deleted, want, "{}", c.name);
        assert_eq!(
            (eval.summary.bytes, eval.summary.bytes_freed),
            (Some(c.bytes), Some(c.freed)),
            "{}",
            c.name
        );
        assert_eq!(eval.summary.errors, 0, "{}", c.name);
    }
}

#[test]
fn storage_verdicts_say_the_bytes_before_and_after() {
    let objects: Vec<Json> = ["1.0.0", "2.0.0"]
        .iter()
        .map(|v| chart("web", v, 1000, &[]))
        .collect();
    let r = run(
        &pressure_policy("rank < 1 || groupBytes < 1000"),
        &objects,
        &[],
    );
    assert_eq!(
        r[0].2,
        "no term of keep held (artifactBytes 1110, groupBytes 2220); the group holds 1110 bytes after this deletion"
    );
    assert_eq!(
        r[1].2,
        "keep: rank < 1 (artifactBytes 1110, groupBytes 1110)"
    );
    // A policy that does not read bytes gives the reasons it always gave.
    let r = run(&pressure_policy("rank < 1"), &objects, &[]);
    assert_eq!(r[0].2, "no term of keep held");
}

#[test]
fn storage_variables_exist_for_oci_keep_only() {
    let compile = |kind: &str, field: &str, expr: &str| {
        let mut spec = json!({"target": {"kind": kind}, "keep": "true", "schedule": "@daily"});
        if kind == "OCIArtifact" {
            spec["target"]["registry"] =
                json!({"url": "http://127.0.0.1:5000", "repositories": ["charts"]});
        }
        spec[field] = json!(expr);
        let spec: RetentionPolicySpec = serde_json::from_value(spec).unwrap();
        CompiledPolicy::compile(PolicyView {
            namespace: Some("ns".into()),
            name: "p".into(),
            generation: Some(1),
            spec,
        })
        .err()
        .map(|e| e.to_string())
    };
    let cases: &[(&str, &str, &str, Option<&str>)] = &[
        (
            "OCIArtifact",
            "keep",
            "groupBytes < 5 * 1024 * 1024 * 1024 && artifactBytes > 0",
            None,
        ),
        (
            "Job",
            "keep",
            "groupBytes < 1024",
            Some(
                "spec.keep: undeclared reference to 'groupBytes' at line 1, column 1 (variables here: object, now, age, group, rank, groupSize, referencedBy)",
            ),
        ),
        (
            "Secret",
            "keep",
            "rank < 1 || artifactBytes > 0",
            Some(
                "spec.keep: undeclared reference to 'artifactBytes' at line 1, column 13 (variables here: object, now, age, group, rank, groupSize, referencedBy)",
            ),
        ),
        (
            "OCIArtifact",
            "match",
            "groupBytes > 0",
            Some(
                "spec.match: 'groupBytes' at line 1, column 1 is only available in spec.keep, where all objects have been grouped and ranked",
            ),
        ),
    ];
    for (kind, field, expr, want) in cases {
        assert_eq!(
            compile(kind, field, expr).as_deref(),
            *want,
            "{kind} {field}: {expr}"
        );
    }
}

#[test]
fn an_index_holds_its_childrens_bytes_while_it_is_kept() {
    let layered = |digest: &str, tags: &[&str], created: &str, layer: &str| {
        let mut a = artifact("app", digest, tags, Some(created));
        a["layers"] = json!([{"digest": layer, "size": 1000}]);
        a
    };
    let mut index = artifact("app", "sha256:idx", &["2.0"], Some("2026-05-01T00:00:00Z"));
    index["size"] = json!(40);
    index["manifests"] = json!(["sha256:c1", "sha256:c2"]);
    let objects = vec![
        index,
        layered("sha256:c1", &[], "2026-04-01T00:00:00Z", "sha256:l1"),
        layered("sha256:c2", &[], "2026-04-01T00:00:00Z", "sha256:l2"),
        layered("sha256:old", &["1.0"], "2026-01-01T00:00:00Z", "sha256:l0"),
    ];
    let p = policy(
        Some("ns"),
        json!({"target": {"kind": "OCIArtifact", "registry": {"url": "http://127.0.0.1:5000", "repositories": ["app"]}},
        "keep": "rank < 1 || groupBytes < 2000", "schedule": "@daily"}),
    );
    let r = run(&p, &objects, &[]);
    let v: BTreeMap<_, _> = r
        .iter()
        .map(|(id, v, why)| (id.split('@').nth(1).unwrap().to_string(), (*v, why.clone())))
        .collect();
    // 40 + 2 × 1100 + 1100 = 3340; the old image leaves 2240, which the kept index holds: the
    // children keep says delete free nothing, and the index guard keeps them.
    assert_eq!(
        v["sha256:old"],
        (
            Verdict::Delete,
            "no term of keep held (artifactBytes 1100, groupBytes 3340); the group holds 2240 bytes after this deletion".into()
        )
    );
    for child in ["sha256:c1", "sha256:c2"] {
        assert_eq!(
            v[child],
            (
                Verdict::Keep,
                "guard: listed by kept index sha256:idx".into()
            ),
            "{child}"
        );
    }
    assert_eq!(
        v["sha256:idx"],
        (
            Verdict::Keep,
            "keep: rank < 1 (artifactBytes 2240, groupBytes 2240)".into()
        )
    );
}

#[test]
fn images_in_use_and_children_of_indexes_that_stay_are_kept_whatever_keep_says() {
    let old = Some("2026-01-01T00:00:00Z");
    // An index tagged v1 lists two untagged platform manifests; match governs only untagged
    // artifacts, so the index itself is not governed, and stays.
    let mut index = artifact("app", "sha256:idx", &["v1"], old);
    index["manifests"] = json!(["sha256:amd64", "sha256:arm64"]);
    let amd = artifact("app", "sha256:amd64", &[], old);
    let arm = artifact("app", "sha256:arm64", &[], old);
    let loose = artifact("app", "sha256:loose", &[], old);
    let running = artifact("app", "sha256:running", &["old"], old);
    let named = artifact("app", "sha256:named", &["cron"], old);
    let unused = artifact("app", "sha256:unused", &["stale"], old);
    let arts = [index, amd, arm, loose, running, named, unused];
    // The Pod runs `running` by digest (status imageID), under another name in its spec; the
    // CronJob names `named` by tag, through Docker-style aliases of the same host.
    let pod = json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"namespace": "x", "name": "p"},
        "spec": {"containers": [{"image": "127.0.0.1:5000/app:moved"}]},
        "status": {"containerStatuses": [{"imageID": "127.0.0.1:5000/app@sha256:running"}]}});
    let cron = json!({"apiVersion": "batch/v1", "kind": "CronJob", "metadata": {"namespace": "y", "name": "c"},
        "spec": {"jobTemplate": {"spec": {"template": {"spec": {"containers": [{"image": "127.0.0.1:5000/app:cron"}]}}}}}});
    let table = [
        (
            "untagged only",
            "object.tags.size() == 0",
            vec![
                (
                    "app:@sha256:amd64",
                    Verdict::Keep,
                    "guard: listed by index sha256:idx, which this policy does not govern",
                ),
                (
                    "app:@sha256:arm64",
                    Verdict::Keep,
                    "guard: listed by index sha256:idx, which this policy does not govern",
                ),
                ("app:@sha256:loose", Verdict::Delete, "no term of keep held"),
            ],
        ),
        (
            "everything",
            "true",
            vec![
                ("app:v1@sha256:idx", Verdict::Delete, "no term of keep held"),
                ("app:@sha256:amd64", Verdict::Delete, "no term of keep held"),
                (
                    "app:old@sha256:running",
                    Verdict::Keep,
                    "guard: in use by Pod x/p",
                ),
                (
                    "app:cron@sha256:named",
                    Verdict::Keep,
                    "guard: in use by CronJob y/c",
                ),
                (
                    "app:stale@sha256:unused",
                    Verdict::Delete,
                    "no term of keep held",
                ),
            ],
        ),
    ];
    for (name, matches, want) in table {
        let p = policy(
            Some("ns"),
            json!({"target": {"kind": "OCIArtifact", "registry": {"url": "http://127.0.0.1:5000", "repositories": ["app"]}},
            "match": matches, "keep": "false", "schedule": "@daily"}),
        );
        let r = run(&p, &arts, &[pod.clone(), cron.clone()]);
        let v: BTreeMap<_, _> = r
            .iter()
            .map(|(id, v, why)| (id.clone(), (*v, why.clone())))
            .collect();
        for (id, verdict, why) in want {
            assert_eq!(
                v.get(id),
                Some(&(verdict, why.to_string())),
                "{name}: {id} in {v:?}"
            );
        }
    }
}

/// An expression kube-apiserver's type checker refuses makes the policy invalid, with the
/// reason the controller reports as Ready=False InvalidExpression.
#[test]
fn ill_typed_expressions_make_the_policy_invalid() {
    for (spec, says) in [
        (
            json!({"target": {"kind": "Job"}, "keep": "rank < 1 || 'a' + true", "schedule": "@daily"}),
            "spec.keep: found no matching overload for '_+_' applied to '(string, bool)' at line 1, column 17",
        ),
        (
            json!({"target": {"kind": "Job"}, "keep": "false", "match": "object.metadata.name.startsWith(1)", "schedule": "@daily"}),
            "spec.match: found no matching overload for 'startsWith' applied to 'dyn.(int)'",
        ),
        (
            json!({"target": {"kind": "Job"}, "keep": "false", "groupBy": "[1, 'a'][0]", "schedule": "@daily"}),
            "spec.groupBy: expected type 'int' but found 'string' at line 1, column 5",
        ),
    ] {
        let spec: RetentionPolicySpec = serde_json::from_value(spec).unwrap();
        let err = CompiledPolicy::compile(PolicyView {
            namespace: Some("ns".into()),
            name: "p".into(),
            generation: Some(1),
            spec,
        })
        .unwrap_err();
        assert!(
            matches!(
                &err,
                PolicyError::InvalidExpression(crate::expr::CompileError::TypeCheck { .. })
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains(says), "{err}");
        assert_eq!(
            crate::status::policy_error_reason(&err),
            crate::status::ready::INVALID_EXPRESSION
        );
    }
}

#[test]
fn a_jobs_successful_field_is_its_succeeded_count() {
    // The API server selects `status.successful` from `status.succeeded`, 0 when unset.
    let done = json!({"kind": "Job", "status": {"succeeded": 1}});
    let fresh = json!({"kind": "Job", "status": {}});
    assert!(matches_field_selector("status.successful=1", &done));
    assert!(!matches_field_selector("status.successful=0", &done));
    assert!(matches_field_selector("status.successful=0", &fresh));
    assert!(matches_field_selector("status.successful!=1", &fresh));
}
