//! OCI artifacts behind a token-authenticated registry: CNCF distribution v3 with `auth: token`
//! and the test bed's token issuer (tools/token-issuer), whose grant table has an account for
//! each case: `retainer` may do everything, `partial` may not delete in `*/locked*`
//! repositories, `brief`'s tokens are refused 3 s after they are issued.

mod support;

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use retainer::oci::{Credentials, RegistryClient, RequestKind};
use serde_json::json;
use support::*;

const OLD: &str = "2026-01-01T00:00:00Z";

fn password() -> String {
    std::env::var("RETAINER_REGISTRY_PASSWORD")
        .expect("RETAINER_REGISTRY_PASSWORD is not set: start the test bed (make test)")
}

/// The registry as the all-powerful account reaches it, with a token for `repo`.
async fn admin(reg: &str, repo: &str) -> Direct {
    let token = registry_token(
        "retainer",
        &password(),
        &format!("repository:{repo}:pull,push,delete"),
    )
    .await;
    let mut d = Direct::http(reg);
    d.auth = Some(Auth::Bearer(token));
    d
}

/// Pushes 1.0.0 and 2.0.0 to `repo`; returns their digests.
async fn two_versions(reg: &str, repo: &str) -> (String, String) {
    let to = admin(reg, repo).await;
    let old = push_image_to(&to, repo, "1.0.0", &unique("a"), OLD, None).await;
    let new = push_image_to(&to, repo, "2.0.0", &unique("b"), OLD, None).await;
    (old, new)
}

async fn exists_in(reg: &str, repo: &str, digest: &str) -> bool {
    exists_at(&admin(reg, repo).await, repo, digest).await
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

fn spec(reg: &str, repositories: &[String], secret: &str) -> serde_json::Value {
    json!({"target": {"kind": "OCIArtifact", "registry": {"url": format!("http://{reg}"),
        "repositories": repositories, "credentialsSecretRef": {"name": secret}}},
        "orderBy": "semver(object.tags[0])", "keep": "rank < 1", "schedule": "0 0 29 2 *"})
}

#[tokio::test]
async fn inventory_and_sweep_through_the_token_flow() {
    let bed = setup("oci-token").await;
    let reg = registry("distribution-token");
    let team = unique("tok");
    let repo = format!("{team}/app");
    let (old, new) = two_versions(&reg, &repo).await;
    regcred(&bed, "regcred", &reg, "retainer", &password()).await;
    // `team/*` expands through the catalog, which needs its own scope (registry:catalog:*).
    apply_policy(
        &bed,
        "images",
        spec(&reg, &[format!("{team}/*")], "regcred"),
    )
    .await;
    let st = summary(&bed, "images", 2).await;
    assert_eq!(st["summary"]["candidates"], 1, "{st}");
    let swept = sweep(&bed, "images").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    assert!(!exists_in(&reg, &repo, &old).await, "1.0.0 deleted");
    assert!(exists_in(&reg, &repo, &new).await, "2.0.0 kept");
    bed.cleanup().await;
}

#[tokio::test]
async fn a_token_without_delete_fails_that_repository_only() {
    let bed = setup("oci-scope").await;
    let reg = registry("distribution-token");
    let team = unique("scope");
    let (open, locked) = (format!("{team}/open"), format!("{team}/locked"));
    let (open_old, open_new) = two_versions(&reg, &open).await;
    let (locked_old, locked_new) = two_versions(&reg, &locked).await;
    regcred(&bed, "partial", &reg, "partial", &password()).await;
    apply_policy(
        &bed,
        "images",
        spec(&reg, &[open.clone(), locked.clone()], "partial"),
    )
    .await;
    // Reading needs pull only: the account reads both repositories.
    let st = summary(&bed, "images", 4).await;
    assert_eq!(st["summary"]["candidates"], 2, "{st}");
    let swept = sweep(&bed, "images").await;
    assert_eq!(swept["reason"], "PartiallyFailed", "{swept}");
    let message = swept["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("do not allow deleting in repository {locked}")),
        "{swept}"
    );
    assert!(message.contains("deleted 1, failed 1"), "{swept}");
    assert!(exists_in(&reg, &locked, &locked_old).await, "locked: kept");
    assert!(exists_in(&reg, &locked, &locked_new).await, "locked: kept");
    assert!(!exists_in(&reg, &open, &open_old).await, "open: deleted");
    assert!(exists_in(&reg, &open, &open_new).await, "open: kept");
    bed.cleanup().await;
}

#[tokio::test]
async fn an_expired_token_is_renewed() {
    let reg = registry("distribution-token");
    let repo = unique("brief/app-");
    two_versions(&reg, &repo).await;
    let client = RegistryClient::new(
        &format!("http://{reg}"),
        Some(Credentials {
            username: "brief".into(),
            password: password(),
        }),
        Duration::from_secs(5),
    )
    .unwrap();
    assert_eq!(client.tags(&repo).await.unwrap().len(), 2);
    assert_eq!(client.counts.get(RequestKind::Token), 1);
    assert_eq!(client.tags(&repo).await.unwrap().len(), 2);
    assert_eq!(
        client.counts.get(RequestKind::Token),
        1,
        "a live token is reused"
    );
    // `brief`'s tokens are refused 3 s after they are issued.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(client.tags(&repo).await.unwrap().len(), 2);
    assert_eq!(
        client.counts.get(RequestKind::Token),
        2,
        "the expired token was renewed once"
    );

    // The controller: a sweep reuses the inventory's client, whose tokens have expired by then.
    let bed = setup("oci-renew").await;
    let (old, new) = (
        client.resolve(&repo, "1.0.0").await.unwrap().unwrap(),
        client.resolve(&repo, "2.0.0").await.unwrap().unwrap(),
    );
    regcred(&bed, "brief", &reg, "brief", &password()).await;
    apply_policy(
        &bed,
        "images",
        spec(&reg, std::slice::from_ref(&repo), "brief"),
    )
    .await;
    summary(&bed, "images", 2).await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let swept = sweep(&bed, "images").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    assert!(!exists_in(&reg, &repo, &old).await, "1.0.0 deleted");
    assert!(exists_in(&reg, &repo, &new).await, "2.0.0 kept");
    bed.cleanup().await;
}

#[tokio::test]
async fn a_wrong_password_is_a_credentials_error() {
    let bed = setup("oci-badpw").await;
    let reg = registry("distribution-token");
    let repo = unique("badpw/app-");
    two_versions(&reg, &repo).await;
    regcred(&bed, "wrong", &reg, "retainer", "not-the-password").await;
    apply_policy(
        &bed,
        "images",
        spec(&reg, std::slice::from_ref(&repo), "wrong"),
    )
    .await;
    let c = ready_condition(&bed, "images").await;
    assert_eq!(
        (c["status"].as_str(), c["reason"].as_str()),
        (Some("False"), Some("CredentialsError")),
        "{c}"
    );
    let message = c["message"].as_str().unwrap();
    assert!(
        message.contains("refused the credentials") && message.contains("HTTP 401"),
        "{c}"
    );
    assert!(!message.contains("not-the-password"), "{c}");
    bed.cleanup().await;
}
