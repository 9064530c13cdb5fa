//! Test support for the real test bed (`scripts/testbed.sh up`). Tests here never pass silently
//! without one: when `RETAINER_E2E` is unset they fail with a message saying how to start it.

#![allow(dead_code)]

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client, Config};
use rand::Rng;
use sha2::{Digest, Sha256};

const HOW: &str = "these tests need the test bed: run `make test`, or `scripts/testbed.sh up && eval \"$(scripts/testbed.sh env)\"` (which sets RETAINER_E2E=1 and KUBECONFIG); to use another cluster, set KUBECONFIG and RETAINER_E2E=1 yourself";

fn require_env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.is_empty() => v,
        _ => panic!("{name} is not set: {HOW}"),
    }
}

/// A client from KUBECONFIG, and a fresh namespace deleted by `cleanup`.
pub struct Bed {
    pub client: Client,
    pub ns: String,
}

impl Bed {
    pub async fn new(prefix: &str) -> Bed {
        require_env("RETAINER_E2E");
        let config = Config::infer()
            .await
            .unwrap_or_else(|e| panic!("no kubeconfig ({e}): {HOW}"));
        let client = Client::try_from(config).expect("client from kubeconfig");
        let suffix: String = rand::rng()
            .sample_iter(rand::distr::Alphanumeric)
            .take(6)
            .map(|c| (c as char).to_ascii_lowercase())
            .collect();
        let ns = format!("{prefix}-{suffix}");
        let nss: Api<Namespace> = Api::all(client.clone());
        let obj: Namespace = serde_json::from_value(serde_json::json!({"metadata": {"name": ns}}))
            .expect("namespace");
        nss.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {ns} failed ({e}): {HOW}"));
        Bed { client, ns }
    }

    pub async fn cleanup(self) {
        let nss: Api<Namespace> = Api::all(self.client.clone());
        let _ = nss.delete(&self.ns, &DeleteParams::background()).await;
    }
}

/// Polls `check` until it returns Some, or fails the test after `timeout` naming `what`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `host:port` of a test-bed registry: "olareg" or "distribution".
pub fn registry(which: &str) -> String {
    require_env(match which {
        "olareg" => "RETAINER_OLAREG",
        "distribution" => "RETAINER_DISTRIBUTION",
        other => panic!("unknown registry {other}"),
    })
}

pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// Pushes a small single-layer image with the OCI distribution API and returns its manifest
/// digest. `seed` makes the content, and so the digest, unique.
pub async fn push_image(
    registry: &str,
    repo: &str,
    tag: &str,
    seed: &str,
    created: &str,
    subject: Option<(&str, usize)>,
) -> String {
    let http = reqwest::Client::new();
    let base = format!("http://{registry}/v2/{repo}");
    let config = serde_json::to_vec(&serde_json::json!({
        "created": created, "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"seed": seed}}, "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .expect("config json");
    let layer = format!("layer {seed}").into_bytes();
    for blob in [&config, &layer] {
        let digest = sha256(blob);
        let resp = http
            .post(format!("{base}/blobs/uploads/"))
            .send()
            .await
            .expect("start upload");
        assert!(
            resp.status().is_success(),
            "start upload: {}",
            resp.status()
        );
        let location = resp
            .headers()
            .get("location")
            .expect("upload location")
            .to_str()
            .expect("ascii")
            .to_string();
        let url = if location.starts_with("http") {
            location
        } else {
            format!("http://{registry}{location}")
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let resp = http
            .put(format!("{url}{sep}digest={digest}"))
            .header("content-type", "application/octet-stream")
            .body(blob.clone())
            .send()
            .await
            .expect("upload blob");
        assert!(
            resp.status().is_success(),
            "upload blob: {} {}",
            resp.status(),
            resp.text().await.unwrap_or_default()
        );
    }
    let mut manifest = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256(&config), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha256(&layer), "size": layer.len()}],
    });
    if let Some((digest, size)) = subject {
        manifest["subject"] = serde_json::json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": digest, "size": size});
        manifest["artifactType"] =
            serde_json::json!("application/vnd.dev.cosign.simplesigning.v1+json");
    }
    let body = serde_json::to_vec(&manifest).expect("manifest json");
    let digest = sha256(&body);
    let reference = if tag.is_empty() {
        digest.clone()
    } else {
        tag.to_string()
    };
    let resp = http
        .put(format!("{base}/manifests/{reference}"))
        .header("content-type", "application/vnd.oci.image.manifest.v1+json")
        .body(body)
        .send()
        .await
        .expect("put manifest");
    assert!(
        resp.status().is_success(),
        "put manifest: {} {}",
        resp.status(),
        resp.text().await.unwrap_or_default()
    );
    digest
}

pub async fn tags(registry: &str, repo: &str) -> Vec<String> {
    let resp = reqwest::get(format!("http://{registry}/v2/{repo}/tags/list"))
        .await
        .expect("tags list");
    if resp.status() == 404 {
        return Vec::new();
    }
    let body: serde_json::Value = resp.json().await.expect("tags json");
    body["tags"]
        .as_array()
        .map(|t| {
            t.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

pub fn unique(prefix: &str) -> String {
    let n: u32 = rand::rng().random();
    format!("{prefix}{n:08x}")
}

pub const SECOND: Duration = Duration::from_secs(1);
