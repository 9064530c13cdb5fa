//! OCI artifacts against real registries: olareg (OCI 1.1 referrers API) and CNCF distribution
//! 2.8 (no referrers API, the tag-schema fallback), with and without basic auth; and registries
//! that fail.

mod support;

use std::time::Duration;
use tokio_util::sync::CancellationToken;

use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{Api, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use support::*;

const OLD: &str = "2026-01-01T00:00:00Z";

fn manifest_size(_: &str) -> usize {
    // Referrers carry the subject's size; registries do not check it.
    100
}

/// Pushes the semver tags and a signature of 1.9.1; returns (digest by tag, signature digest).
async fn semver_repo(
    reg: &str,
    repo: &str,
    fallback_index: bool,
) -> (std::collections::BTreeMap<String, String>, String) {
    let mut digests = std::collections::BTreeMap::new();
    for tag in ["1.0.0", "1.2.0", "1.9.1", "1.10.0", "2.0.0"] {
        let d = push_image(reg, repo, tag, &unique(tag), OLD, None).await;
        digests.insert(tag.to_string(), d);
    }
    let subject = digests["1.9.1"].clone();
    let sig = push_image(
        reg,
        repo,
        "",
        &unique("sig"),
        OLD,
        Some((&subject, manifest_size(&subject))),
    )
    .await;
    if fallback_index {
        // A registry without the referrers API: the client maintains the `sha256-<hex>` index.
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sig, "size": 100,
                           "artifactType": "application/vnd.dev.cosign.simplesigning.v1+json"}]});
        push_manifest(
            reg,
            repo,
            &subject.replacen(':', "-", 1),
            "application/vnd.oci.image.index.v1+json",
            &index,
        )
        .await;
    }
    (digests, sig)
}

async fn workloads(bed: &Bed, reg: &str, repo: &str, running_digest: &str) {
    let pods: Api<Pod> = Api::namespaced(bed.client.clone(), &bed.ns);
    let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "runs-1-0-0"},
        "spec": {"containers": [{"name": "app", "image": format!("{reg}/{repo}:whatever-tag")}]}}))
    .unwrap();
    pods.create(&PostParams::default(), &pod).await.unwrap();
    // No kubelet runs here: report the running image's digest the way it would.
    let status = json!({"status": {"containerStatuses": [{"name": "app", "image": format!("{reg}/{repo}:whatever-tag"),
        "imageID": format!("{reg}/{repo}@{running_digest}"), "ready": true, "restartCount": 0,
        "state": {"running": {"startedAt": "2026-01-01T00:00:00Z"}}}]}});
    pods.patch_status("runs-1-0-0", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    let cron: Api<CronJob> = Api::namespaced(bed.client.clone(), &bed.ns);
    let cj: CronJob = serde_json::from_value(
        json!({"metadata": {"name": "names-1-2-0"}, "spec": {"schedule": "@daily",
        "jobTemplate": {"spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": format!("{reg}/{repo}:1.2.0")}]}}}}}}),
    )
    .unwrap();
    cron.create(&PostParams::default(), &cj).await.unwrap();
}

fn policy_spec(reg: &str, repo_pattern: &str) -> Value {
    json!({"target": {"kind": "OCIArtifact", "registry": {"url": format!("http://{reg}"), "repositories": [repo_pattern]}},
        "match": "object.tags.exists(t, isSemver(t))",
        "orderBy": "semver(object.tags.filter(t, isSemver(t))[0])",
        "keep": "rank < 2 || referencedBy.size() > 0 || age < duration('720h')",
        "schedule": "0 0 29 2 *"})
}

async fn semver_mark_and_sweep(which: &str, fallback_index: bool) {
    let bed = setup(&format!("oci-{which}")).await;
    let reg = registry(which);
    let team = unique("team");
    let repo = format!("{team}/app");
    let (digests, sig) = semver_repo(&reg, &repo, fallback_index).await;
    workloads(&bed, &reg, &repo, &digests["1.0.0"]).await;
    // olareg serves no catalog API: name the repository there; expand `team/*` elsewhere.
    let pattern = if which == "olareg" {
        repo.clone()
    } else {
        format!("{team}/*")
    };
    apply_policy(&bed, "images", policy_spec(&reg, &pattern)).await;
    let st = wait_for(
        "the OCI policy's status",
        Duration::from_secs(60),
        || async {
            let p = policies(&bed).get("images").await.ok()?;
            let ready = p.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            if ready["status"] == "False" {
                panic!("Ready=False: {ready}");
            }
            p.data["status"]["summary"]
                .is_object()
                .then(|| p.data["status"].clone())
        },
    )
    .await;
    // 1.9.1 and its signature are the candidates (and, without the referrers API, the
    // `sha256-<hex>` index that lists the signature): 2.0.0 and 1.10.0 rank first (semver, not
    // string order), a Pod runs 1.0.0 by digest, a CronJob names 1.2.0.
    assert_eq!(
        st["summary"]["candidates"],
        2 + i64::from(fallback_index),
        "{st}"
    );
    let listed: Vec<&str> = st["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["digest"].as_str().unwrap())
        .collect();
    assert!(
        listed.contains(&digests["1.9.1"].as_str()) && listed.contains(&sig.as_str()),
        "{st}"
    );
    // `plan` reads the same registry and agrees, deleting nothing.
    let plan = plan_json(&["images", "-n", &bed.ns]).await;
    assert_eq!(
        plan["summary"]["candidates"], st["summary"]["candidates"],
        "{plan}"
    );
    assert!(exists(&reg, &repo, &digests["1.9.1"], None).await);

    let swept = sweep(&bed, "images").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    let mut left = tags(&reg, &repo).await;
    left.retain(|t| !t.starts_with("sha256-"));
    left.sort();
    assert_eq!(left, vec!["1.0.0", "1.10.0", "1.2.0", "2.0.0"]);
    assert!(
        !exists(&reg, &repo, &digests["1.9.1"], None).await,
        "subject deleted"
    );
    assert!(
        !exists(&reg, &repo, &sig, None).await,
        "signature deleted with its subject"
    );
    for kept in ["1.0.0", "1.2.0", "1.10.0", "2.0.0"] {
        assert!(
            exists(&reg, &repo, &digests[kept], None).await,
            "{kept} kept"
        );
    }
    bed.cleanup().await;
}

#[tokio::test]
async fn olareg_semver_references_and_signatures() {
    semver_mark_and_sweep("olareg", false).await;
}

#[tokio::test]
async fn distribution_semver_references_and_signatures() {
    semver_mark_and_sweep("distribution", true).await;
}

fn auth_env() -> (String, String, String) {
    (
        registry_env("RETAINER_DISTRIBUTION_AUTH"),
        registry_env("RETAINER_REGISTRY_USER"),
        registry_env("RETAINER_REGISTRY_PASSWORD"),
    )
}

fn registry_env(name: &str) -> String {
    std::env::var(name)
        .unwrap_or_else(|_| panic!("{name} is not set: start the test bed (make test)"))
}

async fn regcred(bed: &Bed, name: &str, host: &str, user: &str, password: &str) {
    let cfg = json!({"auths": {host: {"username": user, "password": password}}});
    let secret: Secret = serde_json::from_value(
        json!({"metadata": {"name": name}, "type": "kubernetes.io/dockerconfigjson",
        "stringData": {".dockerconfigjson": cfg.to_string()}}),
    )
    .unwrap();
    Api::<Secret>::namespaced(bed.client.clone(), &bed.ns)
        .create(&PostParams::default(), &secret)
        .await
        .unwrap();
}

#[tokio::test]
async fn basic_auth_with_credentials_from_a_secret() {
    let bed = setup("oci-auth").await;
    let (reg, user, password) = auth_env();
    let repo = unique("auth/app-");
    let creds = Some((user.as_str(), password.as_str()));
    let old = push_image_as(&reg, creds, &repo, "1.0.0", &unique("a"), OLD, None).await;
    let new = push_image_as(&reg, creds, &repo, "2.0.0", &unique("b"), OLD, None).await;
    regcred(&bed, "regcred", &reg, &user, &password).await;
    regcred(&bed, "wrongcred", &reg, &user, "not-the-password").await;
    let spec = |secret: &str| {
        json!({"target": {"kind": "OCIArtifact", "registry": {"url": format!("http://{reg}"),
        "repositories": [repo.clone()], "credentialsSecretRef": {"name": secret}}},
        "orderBy": "semver(object.tags[0])", "keep": "rank < 1", "schedule": "0 0 29 2 *"})
    };
    apply_policy(&bed, "wrong", spec("wrongcred")).await;
    let c = ready_condition(&bed, "wrong").await;
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("CredentialsError")),
        "{c}"
    );
    assert!(c["message"].as_str().unwrap().contains("HTTP 401"), "{c}");
    assert!(
        !c["message"].as_str().unwrap().contains("not-the-password"),
        "{c}"
    );
    apply_policy(&bed, "missing", spec("no-such-secret")).await;
    let c = ready_condition(&bed, "missing").await;
    assert_eq!(c["reason"], "CredentialsError");
    assert!(c["message"].as_str().unwrap().contains("not found"), "{c}");

    apply_policy(&bed, "right", spec("regcred")).await;
    summary(&bed, "right", 2).await;
    let swept = sweep(&bed, "right").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    assert!(!exists(&reg, &repo, &old, creds).await);
    assert!(exists(&reg, &repo, &new, creds).await);
    bed.cleanup().await;
}

/// A registry that answers every request with 500, or never answers in time.
async fn broken_registry(mode: &'static str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                if mode == "slow" {
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    return;
                }
                let body = r#"{"errors":[{"code":"UNKNOWN","message":"storage backend failed"}]}"#;
                let resp = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr
}

#[tokio::test]
async fn failing_registries_delete_nothing_and_say_why() {
    let bed = setup("oci-broken").await;
    for (mode, want) in [
        ("500", "HTTP 500 UNKNOWN: storage backend failed"),
        ("slow", "timed out"),
    ] {
        let reg = broken_registry(mode).await;
        let name = format!("broken-{mode}");
        apply_policy(&bed, &name, json!({"target": {"kind": "OCIArtifact", "registry": {"url": format!("http://{reg}"), "repositories": ["app"]}},
            "keep": "false", "schedule": "0 0 29 2 *"})).await;
        let c = ready_condition(&bed, &name).await;
        assert_eq!(
            (c["status"].as_str(), c["reason"].as_str()),
            (Some("False"), Some("TargetUnavailable")),
            "{c}"
        );
        assert!(c["message"].as_str().unwrap().contains(want), "{mode}: {c}");
        let p = policies(&bed).get(&name).await.unwrap();
        assert!(
            p.data["status"]["lastSweep"].is_null(),
            "no sweep against a failing registry"
        );
    }
    bed.cleanup().await;
}

// ---------------------------------------------------------------------------------------------
// What a repeat inventory costs, and what a sweep checks before it deletes: the library driven
// directly, so that requests can be counted exactly.

use retainer::api::{PolicyView, RetentionPolicySpec};
use retainer::controller::sweep::{
    Executor, InUse, Outcome, RateLimiter, SweepPlan, Target, plan_sweep,
};
use retainer::engine::CompiledPolicy;
use retainer::oci::{ManifestCache, RegistryClient, RequestKind, RequestTally};

fn oci_policy(reg: &str, repos: &[&str], keep: &str) -> CompiledPolicy {
    let spec: RetentionPolicySpec =
        serde_json::from_value(json!({"target": {"kind": "OCIArtifact",
        "registry": {"url": format!("http://{reg}"), "repositories": repos}},
        "keep": keep, "schedule": "0 0 29 2 *"}))
        .unwrap();
    CompiledPolicy::compile(PolicyView {
        namespace: Some("tests".into()),
        name: "library".into(),
        generation: Some(1),
        spec,
    })
    .unwrap()
}

/// One inventory with a new client (as each controller read makes), and its requests.
async fn read(reg: &str, cache: &ManifestCache, patterns: &[&str]) -> (Vec<Value>, RequestTally) {
    let client =
        RegistryClient::new(&format!("http://{reg}"), None, Duration::from_secs(10)).unwrap();
    let patterns: Vec<String> = patterns.iter().map(|p| p.to_string()).collect();
    let docs = retainer::oci::inventory(&client, cache, &patterns, 8, Duration::from_secs(300))
        .await
        .unwrap();
    (docs, client.counts.snapshot())
}

/// What a sweep of these documents would try to delete.
fn targets(policy: &CompiledPolicy, docs: &[Value]) -> Vec<Target> {
    let eval = retainer::check::evaluate_offline(policy, docs.to_vec(), jiff::Timestamp::now());
    let mut marks = std::collections::HashMap::new();
    match plan_sweep(&eval, None, None, &mut marks, jiff::Timestamp::now()) {
        SweepPlan::Proceed { targets, .. } => targets,
        SweepPlan::Blocked { message } => panic!("blocked: {message}"),
    }
}

fn digests_of(targets: &[Target]) -> Vec<String> {
    let mut out: Vec<String> = targets
        .iter()
        .map(|t| match &t.id {
            retainer::controller::sweep::TargetId::Oci { digest, .. } => digest.clone(),
            other => panic!("not OCI: {other:?}"),
        })
        .collect();
    out.sort();
    out
}

fn executor() -> Executor {
    // OCI deletes never talk to the API server: a client that points nowhere will do.
    let config = kube::Config::new("http://127.0.0.1:9".parse().unwrap());
    Executor {
        client: kube::Client::try_from(config).unwrap(),
        concurrency: 4,
        limiter: std::sync::Arc::new(RateLimiter::new(0.0)),
        leadership: std::sync::Arc::default(),
    }
}

/// Points `tag` at the manifest `digest` (re-PUT of its exact bytes).
async fn repoint(reg: &str, repo: &str, tag: &str, digest: &str) {
    let http = reqwest::Client::new();
    let resp = http
        .get(format!("http://{reg}/v2/{repo}/manifests/{digest}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .unwrap();
    let media_type = resp.headers()["content-type"].to_str().unwrap().to_string();
    let body = resp.bytes().await.unwrap();
    assert_eq!(sha256(&body), digest);
    let resp = http
        .put(format!("http://{reg}/v2/{repo}/manifests/{tag}"))
        .header("content-type", media_type)
        .body(body)
        .send()
        .await
        .unwrap();
    assert!(
        resp.status().is_success(),
        "re-pointing {tag}: {}",
        resp.status()
    );
}

fn only(t: &RequestTally, kinds: &[RequestKind]) -> bool {
    t.nonzero().iter().all(|(k, _)| kinds.contains(k))
}

async fn repeat_inventory_lists_tags_only(which: &str) {
    let reg = registry(which);
    let team = unique("cost");
    let repo = format!("{team}/app");
    let (digests, sig) = semver_repo(&reg, &repo, which == "distribution").await;
    // olareg has no catalog: name the repository; distribution expands `team/*`.
    let pattern = if which == "olareg" {
        repo.clone()
    } else {
        format!("{team}/*")
    };
    let cache = ManifestCache::default();
    let (first, cost) = read(&reg, &cache, &[&pattern]).await;
    assert!(
        cost.get(RequestKind::ManifestHead) >= 5 && cost.get(RequestKind::Referrers) >= 5,
        "a first inventory resolves every tag and lists referrers: {cost}"
    );
    let (again, cost) = read(&reg, &cache, &[&pattern]).await;
    assert_eq!(again, first, "the same artifacts");
    assert!(
        only(&cost, &[RequestKind::TagList, RequestKind::Catalog]),
        "a repeat inventory lists tags (and the catalog) only: {cost}"
    );
    assert_eq!(cost.get(RequestKind::TagList), 1, "{cost}");

    // A new tag name is resolved; nothing else is read again.
    let new = push_image(&reg, &repo, "3.0.0", &unique("new"), OLD, None).await;
    let (third, cost) = read(&reg, &cache, &[&pattern]).await;
    assert_eq!(cost.get(RequestKind::ManifestHead), 1, "{cost}");
    assert_eq!(cost.get(RequestKind::Referrers), 1, "{cost}");
    assert_eq!(third.len(), first.len() + 1);
    assert!(third.iter().any(|d| d["digest"] == new.as_str()));
    assert!(
        third
            .iter()
            .any(|d| d["digest"] == sig.as_str() && d["subject"] == digests["1.9.1"].as_str())
    );
}

#[tokio::test]
async fn olareg_repeat_inventory_lists_tags_only() {
    repeat_inventory_lists_tags_only("olareg").await;
}

#[tokio::test]
async fn distribution_repeat_inventory_lists_tags_only() {
    repeat_inventory_lists_tags_only("distribution").await;
}

/// Nothing that should be kept is deleted when the registry changes between the (cached)
/// inventory a sweep plans from and its deletes: a kept tag re-pointed onto a candidate, and a
/// signature pushed for one.
#[tokio::test]
async fn changes_after_planning_keep_the_object() {
    let reg = registry("olareg");
    let repo = unique("repoint/app-");
    let mut d = std::collections::BTreeMap::new();
    for tag in ["1.0.0", "2.0.0", "3.0.0"] {
        d.insert(
            tag,
            push_image(&reg, &repo, tag, &unique(tag), OLD, None).await,
        );
    }
    let policy = oci_policy(
        &reg,
        &[&repo],
        "'2.0.0' in object.tags || '3.0.0' in object.tags",
    );
    let cache = ManifestCache::default();
    read(&reg, &cache, &[&repo]).await;

    // The kept tag 3.0.0 moves onto the candidate; the tag list does not change, so the
    // inventory answers from its cache and still shows the old picture.
    repoint(&reg, &repo, "3.0.0", &d["1.0.0"]).await;
    let (stale, cost) = read(&reg, &cache, &[&repo]).await;
    assert!(only(&cost, &[RequestKind::TagList]), "{cost}");
    let planned = targets(&policy, &stale);
    assert_eq!(digests_of(&planned), vec![d["1.0.0"].clone()]);

    let client =
        RegistryClient::new(&format!("http://{reg}"), None, Duration::from_secs(10)).unwrap();
    let out = executor()
        .delete_oci(
            &client,
            &cache,
            &stale,
            planned,
            false,
            &InUse::nobody(),
            "tests/library",
            &CancellationToken::new(),
        )
        .await;
    assert_eq!(out.len(), 1);
    let Outcome::Skipped(why) = &out[0].1 else {
        panic!("not skipped: {out:?}")
    };
    assert!(why.contains("tag 3.0.0 now points at"), "{why}");
    assert_eq!(client.counts.get(RequestKind::Delete), 0, "no DELETE sent");

    // The cache was forgotten: the next inventory resolves every tag again and sees the move.
    let (fresh, cost) = read(&reg, &cache, &[&repo]).await;
    assert_eq!(cost.get(RequestKind::ManifestHead), 3, "{cost}");
    assert!(
        targets(&policy, &fresh).is_empty(),
        "1.0.0 is kept by 3.0.0 now"
    );
    let want: std::collections::BTreeMap<String, String> = [
        ("1.0.0", &d["1.0.0"]),
        ("2.0.0", &d["2.0.0"]),
        ("3.0.0", &d["1.0.0"]),
    ]
    .into_iter()
    .map(|(t, d)| (t.to_string(), d.clone()))
    .collect();
    assert_eq!(tag_digests(&reg, &repo).await, want);
    assert!(exists(&reg, &repo, &d["1.0.0"], None).await);

    // A signature pushed for a candidate after planning: the candidate is not deleted (the
    // signature would be left without its subject), and neither is the signature.
    let repo = unique("repoint/signed-");
    let old = push_image(&reg, &repo, "1.0.0", &unique("old"), OLD, None).await;
    let kept = push_image(&reg, &repo, "2.0.0", &unique("kept"), OLD, None).await;
    let policy = oci_policy(&reg, &[&repo], "'2.0.0' in object.tags");
    let (docs, _) = read(&reg, &cache, &[&repo]).await;
    let planned = targets(&policy, &docs);
    assert_eq!(digests_of(&planned), vec![old.clone()]);
    let sig = push_image(&reg, &repo, "", &unique("sig"), OLD, Some((&old, 100))).await;
    let out = executor()
        .delete_oci(
            &client,
            &cache,
            &docs,
            planned,
            false,
            &InUse::nobody(),
            "tests/library",
            &CancellationToken::new(),
        )
        .await;
    let Outcome::Skipped(why) = &out[0].1 else {
        panic!("not skipped: {out:?}")
    };
    assert!(why.contains(&format!("referred to by {sig}")), "{why}");
    assert!(exists(&reg, &repo, &old, None).await && exists(&reg, &repo, &sig, None).await);

    // The next sweep knows the signature, and deletes it with its subject.
    let (docs, _) = read(&reg, &cache, &[&repo]).await;
    let planned = targets(&policy, &docs);
    let mut both = vec![old.clone(), sig.clone()];
    both.sort();
    assert_eq!(digests_of(&planned), both);
    let out = executor()
        .delete_oci(
            &client,
            &cache,
            &docs,
            planned,
            false,
            &InUse::nobody(),
            "tests/library",
            &CancellationToken::new(),
        )
        .await;
    assert!(out.iter().all(|(_, o)| *o == Outcome::Deleted), "{out:?}");
    assert_eq!(
        tag_digests(&reg, &repo).await,
        [("2.0.0".to_string(), kept.clone())].into_iter().collect()
    );
    assert!(!exists(&reg, &repo, &old, None).await && !exists(&reg, &repo, &sig, None).await);
}
