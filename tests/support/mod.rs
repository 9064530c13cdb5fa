//! Test support for the real test bed (`scripts/testbed.sh up`). Tests here never pass silently
//! without one: when `RETAINER_E2E` is unset they fail with a message saying how to start it.

#![allow(dead_code)]

use std::future::Future;
use std::sync::OnceLock;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{
    ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::{Api, Client, Config};
use rand::Rng;
use serde_json::{Value, json};
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

/// `host:port` of a test-bed registry: "olareg", "distribution", "distribution-token" (CNCF
/// distribution v3 behind the token issuer) or "distribution-tls" (v3 over HTTPS, private CA).
pub fn registry(which: &str) -> String {
    require_env(match which {
        "olareg" => "RETAINER_OLAREG",
        "distribution" => "RETAINER_DISTRIBUTION",
        "distribution-token" => "RETAINER_DISTRIBUTION_TOKEN",
        "distribution-tls" => "RETAINER_DISTRIBUTION_TLS",
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
    push_image_as(registry, None, repo, tag, seed, created, subject).await
}

/// A reqwest request with basic auth when credentials are given.
fn authed(rb: reqwest::RequestBuilder, auth: Option<(&str, &str)>) -> reqwest::RequestBuilder {
    with_auth(
        rb,
        auth.map(|(u, p)| Auth::Basic(u.into(), p.into())).as_ref(),
    )
}

/// How a test authenticates to a registry directly.
#[derive(Clone, Debug)]
pub enum Auth {
    Basic(String, String),
    Bearer(String),
}

fn with_auth(rb: reqwest::RequestBuilder, auth: Option<&Auth>) -> reqwest::RequestBuilder {
    match auth {
        Some(Auth::Basic(u, p)) => rb.basic_auth(u, Some(p)),
        Some(Auth::Bearer(t)) => rb.bearer_auth(t),
        None => rb,
    }
}

/// A registry as a test reaches it: base URL (http:// or https://), the HTTP client (with the
/// private CA for the TLS registry) and how to authenticate.
pub struct Direct {
    pub base: String,
    pub http: reqwest::Client,
    pub auth: Option<Auth>,
}

impl Direct {
    /// Plain HTTP to `registry` (host:port).
    pub fn http(registry: &str) -> Direct {
        Direct {
            base: format!("http://{registry}"),
            http: reqwest::Client::new(),
            auth: None,
        }
    }
}

/// `push_image` with optional basic auth.
pub async fn push_image_as(
    registry: &str,
    auth: Option<(&str, &str)>,
    repo: &str,
    tag: &str,
    seed: &str,
    created: &str,
    subject: Option<(&str, usize)>,
) -> String {
    let mut to = Direct::http(registry);
    to.auth = auth.map(|(u, p)| Auth::Basic(u.into(), p.into()));
    push_image_to(&to, repo, tag, seed, created, subject).await
}

/// `push_image` to any registry, over HTTP or HTTPS, with any auth.
pub async fn push_image_to(
    to: &Direct,
    repo: &str,
    tag: &str,
    seed: &str,
    created: &str,
    subject: Option<(&str, usize)>,
) -> String {
    let http = &to.http;
    let auth = to.auth.as_ref();
    let base = format!("{}/v2/{repo}", to.base);
    let config = serde_json::to_vec(&serde_json::json!({
        "created": created, "architecture": "amd64", "os": "linux",
        "config": {"Labels": {"seed": seed}}, "rootfs": {"type": "layers", "diff_ids": []}
    }))
    .expect("config json");
    let layer = format!("layer {seed}").into_bytes();
    for blob in [&config, &layer] {
        let digest = sha256(blob);
        let resp = with_auth(http.post(format!("{base}/blobs/uploads/")), auth)
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
            format!("{}{location}", to.base)
        };
        let sep = if url.contains('?') { '&' } else { '?' };
        let resp = with_auth(http.put(format!("{url}{sep}digest={digest}")), auth)
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
    put_manifest_to(
        to,
        repo,
        &reference,
        "application/vnd.oci.image.manifest.v1+json",
        body,
    )
    .await;
    digest
}

/// PUTs manifest bytes under a tag or digest.
async fn put_manifest(
    registry: &str,
    auth: Option<(&str, &str)>,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: Vec<u8>,
) {
    let mut to = Direct::http(registry);
    to.auth = auth.map(|(u, p)| Auth::Basic(u.into(), p.into()));
    put_manifest_to(&to, repo, reference, media_type, body).await
}

async fn put_manifest_to(
    to: &Direct,
    repo: &str,
    reference: &str,
    media_type: &str,
    body: Vec<u8>,
) {
    let url = format!("{}/v2/{repo}/manifests/{reference}", to.base);
    let resp = with_auth(to.http.put(url), to.auth.as_ref())
        .header("content-type", media_type)
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

// ---------------------------------------------------------------------------------------------
// A controller shared by the tests of one test binary, and policy helpers.

static CONTROLLER: OnceLock<()> = OnceLock::new();

/// The label that routes a policy to the controllers of this test process only: test binaries
/// may run at the same time against one cluster, and each controller must leave the others'
/// policies alone.
pub const OWNER_LABEL: &str = "retainer.dev/test-owner";

pub fn owner() -> String {
    format!("p{}", std::process::id())
}

/// `--policy-selector` for controllers of this test process.
pub fn owner_selector() -> String {
    format!("{OWNER_LABEL}={}", owner())
}

/// Metadata labels that route a policy to this process's controllers.
pub fn owner_labels() -> Value {
    json!({ OWNER_LABEL: owner() })
}

/// Starts the shared controller once, on its own thread and runtime.
pub fn controller() {
    CONTROLLER.get_or_init(|| {
        std::thread::spawn(|| {
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async {
                let config = kube::Config::infer().await.expect("kubeconfig");
                let opts = retainer::controller::Options {
                    identity: "tests".into(),
                    lease_duration: Duration::from_secs(15),
                    delete_concurrency: 4,
                    delete_qps: 0.0,
                    metrics_addr: "127.0.0.1:0".parse().unwrap(),
                    debounce: Duration::from_millis(200),
                    page_size: 100,
                    // Short, so that the unreachable-registry tests finish quickly.
                    registry: retainer::controller::RegistryOptions {
                        timeout: Duration::from_secs(2),
                        ..Default::default()
                    },
                    // Short, so that the runaway-expression test finishes quickly.
                    eval_budget: Duration::from_secs(2),
                    policy_selector: Some(owner_selector()),
                    ..Default::default()
                };
                if let Err(e) = retainer::controller::run(config, opts).await {
                    panic!("controller stopped: {e}");
                }
            });
        });
    });
}

pub async fn install_crds(client: &kube::Client) {
    use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let docs: Vec<CustomResourceDefinition> =
        serde_saphyr::from_multiple(&retainer::api::crds_yaml()).unwrap();
    for crd in docs {
        let name = crd.metadata.name.clone().unwrap();
        crds.patch(
            &name,
            &PatchParams::apply("retainer-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .unwrap();
        wait_for("CRD established", Duration::from_secs(30), || async {
            let c = crds.get(&name).await.ok()?;
            c.status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        })
        .await;
    }
}

/// A namespace and the CRDs, for tests that run their own controllers.
pub async fn setup_without_controller(prefix: &str) -> Bed {
    let bed = Bed::new(prefix).await;
    install_crds(&bed.client).await;
    bed
}

pub async fn setup(prefix: &str) -> Bed {
    let bed = Bed::new(prefix).await;
    install_crds(&bed.client).await;
    controller();
    bed
}

pub fn policies(bed: &Bed) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("retainer.dev", "v1alpha1", "RetentionPolicy");
    Api::namespaced_with(bed.client.clone(), &bed.ns, &ApiResource::from_gvk(&gvk))
}

pub async fn apply_policy(bed: &Bed, name: &str, spec: Value) {
    let obj = json!({"apiVersion": "retainer.dev/v1alpha1", "kind": "RetentionPolicy",
                     "metadata": {"name": name, "labels": owner_labels()}, "spec": spec});
    policies(bed)
        .patch(
            name,
            &PatchParams::apply("retainer-tests").force(),
            &Patch::Apply(&obj),
        )
        .await
        .expect("apply policy");
}

/// Asks for a sweep and waits for its outcome in status; returns the Swept condition.
pub async fn sweep(bed: &Bed, name: &str) -> Value {
    let api = policies(bed);
    let before = api.get(name).await.unwrap().data["status"]["lastSweep"]["completionTime"].clone();
    let before_swept = swept_condition(&api.get(name).await.unwrap().data);
    let token = unique("t");
    let patch = json!({"metadata": {"annotations": {"retainer.dev/sweep-requested": token}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .unwrap();
    wait_for(
        &format!("a sweep of {name}"),
        Duration::from_secs(30),
        || async {
            let p = api.get(name).await.ok()?;
            let swept = swept_condition(&p.data);
            // A lastSweep without completionTime is a sweep in progress.
            let completion = &p.data["status"]["lastSweep"]["completionTime"];
            let done = (!completion.is_null() && *completion != before)
                || (swept.is_some() && swept != before_swept);
            // Suspended sweeps leave no record: the condition says it.
            let suspended = swept.as_ref().is_some_and(|c| c["reason"] == "Suspended");
            (done || suspended).then(|| swept.unwrap_or(Value::Null))
        },
    )
    .await
}

pub fn swept_condition(p: &Value) -> Option<Value> {
    p["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == "Swept")
        .cloned()
}

pub async fn ready(bed: &Bed, name: &str) -> Value {
    let api = policies(bed);
    wait_for(
        &format!("{name} to report Ready"),
        Duration::from_secs(30),
        || async {
            let p = api.get(name).await.ok()?;
            let generation = p.metadata.generation;
            let c = p.data["status"]["conditions"]
                .as_array()?
                .iter()
                .find(|c| c["type"] == "Ready")?
                .clone();
            (c["observedGeneration"].as_i64() == generation).then_some(p.data)
        },
    )
    .await
}

/// Waits until the policy's summary shows `governed` objects, then returns status.
pub async fn summary(bed: &Bed, name: &str, governed: i64) -> Value {
    let api = policies(bed);
    wait_for(
        &format!("{name} to govern {governed}"),
        Duration::from_secs(30),
        || async {
            let p = api.get(name).await.ok()?;
            (p.data["status"]["summary"]["governed"].as_i64() == Some(governed))
                .then(|| p.data["status"].clone())
        },
    )
    .await
}

/// Pushes a manifest document as is (an index, say) under `tag`; returns its digest.
pub async fn push_manifest(
    registry: &str,
    repo: &str,
    tag: &str,
    media_type: &str,
    body: &serde_json::Value,
) -> String {
    let bytes = serde_json::to_vec(body).expect("json");
    let digest = sha256(&bytes);
    put_manifest(registry, None, repo, tag, media_type, bytes).await;
    digest
}

/// Runs `retainer plan` with `args` and `-o json`; fails the test if it fails.
pub async fn plan_json(args: &[&str]) -> Value {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_retainer"))
        .arg("plan")
        .args(args)
        .args(["-o", "json"])
        .output()
        .await
        .expect("run retainer plan");
    assert!(
        out.status.success(),
        "retainer plan: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("plan prints JSON")
}

/// Whether a manifest digest still exists, asked as `from` says.
pub async fn exists_at(from: &Direct, repo: &str, digest: &str) -> bool {
    let rb = from
        .http
        .head(format!("{}/v2/{repo}/manifests/{digest}", from.base))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        );
    with_auth(rb, from.auth.as_ref())
        .send()
        .await
        .expect("head")
        .status()
        .is_success()
}

/// A bearer token from the test bed's token issuer for `scope` (e.g. repository:a/b:pull,push).
pub async fn registry_token(user: &str, password: &str, scope: &str) -> String {
    let issuer = require_env("RETAINER_TOKEN_ISSUER");
    let resp = reqwest::Client::new()
        .get(format!("{issuer}/token"))
        .query(&[("service", "retainer-testbed-registry"), ("scope", scope)])
        .basic_auth(user, Some(password))
        .send()
        .await
        .expect("token request");
    assert!(resp.status().is_success(), "token: {}", resp.status());
    let body: Value = resp.json().await.expect("token json");
    body["token"].as_str().expect("a token").to_string()
}

/// Whether a manifest digest still exists.
pub async fn exists(registry: &str, repo: &str, digest: &str, auth: Option<(&str, &str)>) -> bool {
    let rb = reqwest::Client::new()
        .head(format!("http://{registry}/v2/{repo}/manifests/{digest}"))
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        );
    authed(rb, auth)
        .send()
        .await
        .expect("head")
        .status()
        .is_success()
}

/// Creates a Job and, unless `state` is "running", marks it succeeded or failed through the
/// status subresource in the order the API server's validation demands (no job controller runs).
pub async fn job(bed: &Bed, name: &str, labels: Value, state: &str) {
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    let j: Job = serde_json::from_value(json!({"metadata": {"name": name, "labels": labels},
        "spec": {"template": {"spec": {"restartPolicy": "Never", "containers": [{"name": "c", "image": "busybox"}]}}}})).unwrap();
    jobs.create(&PostParams::default(), &j).await.unwrap();
    if state != "running" {
        finish_job(bed, name, state == "succeeded").await;
    }
}

/// Marks a Job succeeded or failed through the status subresource, as the job controller would
/// and in the order the API server's validation demands.
pub async fn finish_job(bed: &Bed, name: &str, succeeded: bool) {
    let jobs: Api<Job> = Api::namespaced(bed.client.clone(), &bed.ns);
    let now = jiff::Timestamp::now().to_string();
    let pp = PatchParams::default();
    jobs.patch_status(
        name,
        &pp,
        &Patch::Merge(json!({"status": {"startTime": now}})),
    )
    .await
    .unwrap();
    let status = if succeeded {
        json!({"status": {"completionTime": now, "succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastTransitionTime": now}]}})
    } else {
        json!({"status": {"failed": 1, "conditions": [
            {"type": "FailureTarget", "status": "True", "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "lastTransitionTime": now}]}})
    };
    jobs.patch_status(name, &pp, &Patch::Merge(status))
        .await
        .unwrap();
}

/// The Ready condition of a policy, once it describes the current generation.
pub async fn ready_condition(bed: &Bed, name: &str) -> Value {
    let p = ready(bed, name).await;
    p["status"]["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .cloned()
        .expect("ready() waited for a Ready condition")
}

// ---------------------------------------------------------------------------------------------
// The Helm chart.

/// The chart's directory.
pub fn chart_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("charts/retainer")
}

/// Runs helm; a missing helm fails the test, saying where to get it.
pub fn helm(args: &[&str]) -> std::process::Output {
    std::process::Command::new("helm")
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run helm ({e}): these tests need helm v3 on PATH; `eval \"$(scripts/testbed.sh env)\"` puts the test bed's on it"
            )
        })
}

/// `helm template` of the chart as `release` in `namespace` with extra `args`: every rendered
/// document, parsed.
pub fn helm_template(release: &str, namespace: &str, args: &[&str]) -> Vec<Value> {
    let chart = chart_dir();
    let mut all = vec![
        "template",
        release,
        chart.to_str().expect("utf-8 path"),
        "--namespace",
        namespace,
    ];
    all.extend_from_slice(args);
    let out = helm(&all);
    assert!(
        out.status.success(),
        "helm {all:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).expect("helm prints UTF-8");
    let docs: Vec<Value> = serde_saphyr::from_multiple(&text)
        .unwrap_or_else(|e| panic!("rendered YAML does not parse: {e}\n{text}"));
    docs.into_iter().filter(|d| !d.is_null()).collect()
}

/// Every tag of a repository and the digest it points at now (HEAD per tag): what a test
/// compares with the set it expects to survive a sweep.
pub async fn tag_digests(registry: &str, repo: &str) -> std::collections::BTreeMap<String, String> {
    let mut out = std::collections::BTreeMap::new();
    for t in tags(registry, repo).await {
        let resp = reqwest::Client::new()
            .head(format!("http://{registry}/v2/{repo}/manifests/{t}"))
            .header(
                "accept",
                "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
            )
            .send()
            .await
            .expect("head");
        if let Some(d) = resp.headers().get("docker-content-digest") {
            out.insert(t, d.to_str().expect("ascii digest").to_string());
        }
    }
    out
}

/// Tags an existing manifest again, as `crane tag` does: its bytes fetched by digest and PUT
/// under the new tag.
pub async fn retag(registry: &str, repo: &str, digest: &str, tag: &str) {
    let media = "application/vnd.oci.image.manifest.v1+json";
    let resp = reqwest::Client::new()
        .get(format!("http://{registry}/v2/{repo}/manifests/{digest}"))
        .header("accept", media)
        .send()
        .await
        .expect("get manifest");
    assert!(
        resp.status().is_success(),
        "get manifest: {}",
        resp.status()
    );
    let body = resp.bytes().await.expect("manifest body").to_vec();
    put_manifest(registry, None, repo, tag, media, body).await;
}
