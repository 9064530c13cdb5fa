//! A registry that fails on purpose: a scriptable fault-injecting HTTP proxy in front of olareg
//! answers 500s, 429s with Retry-After, or answers too late (beyond the controller's 2 s
//! registry timeout) for the first k requests of a kind, then passes requests through. Sweeps
//! must succeed through transient faults, deleting exactly the candidates, and must delete
//! nothing and say why through persistent ones. Every scenario ends by comparing the exact
//! surviving tags and digests with the expected kept set.

mod support;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use support::*;

const OLD: &str = "2026-01-01T00:00:00Z";

/// The requests a registry client makes, as the proxy tells them apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Kind {
    TagList,
    ManifestHead,
    ManifestGet,
    BlobGet,
    Referrers,
    Delete,
    Other,
}

fn kind_of(method: &Method, path: &str) -> Kind {
    if path.ends_with("/tags/list") {
        Kind::TagList
    } else if path.contains("/referrers/") {
        Kind::Referrers
    } else if path.contains("/blobs/") {
        Kind::BlobGet
    } else if path.contains("/manifests/") {
        match *method {
            Method::HEAD => Kind::ManifestHead,
            Method::DELETE => Kind::Delete,
            Method::GET => Kind::ManifestGet,
            _ => Kind::Other,
        }
    } else {
        Kind::Other
    }
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Answer this status with a registry error body.
    Status(u16),
    /// 429 with `Retry-After: <seconds>`.
    TooMany(u64),
    /// Pass through, but only after this long.
    Delay(Duration),
}

#[derive(Default)]
struct Script {
    /// (kind, fault, how many more requests it applies to)
    rules: Vec<(Kind, Fault, usize)>,
    seen: HashMap<Kind, usize>,
    faulted: HashMap<Kind, usize>,
}

struct Shared {
    upstream: String,
    http: reqwest::Client,
    script: Mutex<Script>,
}

struct Proxy {
    addr: String,
    shared: Arc<Shared>,
}

const ALWAYS: usize = usize::MAX;

impl Proxy {
    async fn start(upstream: &str) -> Proxy {
        let shared = Arc::new(Shared {
            upstream: upstream.to_string(),
            http: reqwest::Client::new(),
            script: Mutex::new(Script::default()),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new()
            .fallback(handle)
            .with_state(shared.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Proxy { addr, shared }
    }

    /// The next `times` requests of `kind` get `fault` (after earlier rules for the kind).
    fn script(&self, kind: Kind, fault: Fault, times: usize) {
        self.shared
            .script
            .lock()
            .unwrap()
            .rules
            .push((kind, fault, times));
    }

    fn seen(&self, kind: Kind) -> usize {
        *self
            .shared
            .script
            .lock()
            .unwrap()
            .seen
            .get(&kind)
            .unwrap_or(&0)
    }

    fn faulted(&self, kind: Kind) -> usize {
        *self
            .shared
            .script
            .lock()
            .unwrap()
            .faulted
            .get(&kind)
            .unwrap_or(&0)
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let kind = kind_of(req.method(), req.uri().path());
    let fault = {
        let mut s = shared.script.lock().unwrap();
        *s.seen.entry(kind).or_default() += 1;
        let rule = s
            .rules
            .iter_mut()
            .find(|(k, _, left)| *k == kind && *left > 0);
        let fault = rule.map(|(_, f, left)| {
            if *left != ALWAYS {
                *left -= 1;
            }
            *f
        });
        if fault.is_some() {
            *s.faulted.entry(kind).or_default() += 1;
        }
        fault
    };
    match fault {
        Some(Fault::Status(code)) => return error(code, None),
        Some(Fault::TooMany(secs)) => return error(429, Some(secs)),
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    // On its own task: a slow registry still does what it was asked after the client gave up
    // (a late DELETE deletes), whether or not anyone waits for the answer.
    let forwarded = tokio::spawn(forward(shared.clone(), req));
    match forwarded.await {
        Ok(resp) => resp,
        Err(e) => error(502, None).map(|_| Body::from(e.to_string())),
    }
}

fn error(code: u16, retry_after: Option<u64>) -> Response {
    let body =
        json!({"errors": [{"code": "INJECTED", "message": format!("injected fault {code}")}]});
    let mut resp = Response::new(Body::from(body.to_string()));
    *resp.status_mut() = StatusCode::from_u16(code).unwrap();
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    if let Some(s) = retry_after {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from(s));
    }
    resp
}

async fn forward(shared: Arc<Shared>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let body = axum::body::to_bytes(body, 16 << 20)
        .await
        .unwrap_or_default();
    let mut rb = shared.http.request(
        parts.method.clone(),
        format!("http://{}{path}", shared.upstream),
    );
    for (name, value) in &parts.headers {
        if !matches!(name.as_str(), "host" | "content-length" | "connection") {
            rb = rb.header(name, value);
        }
    }
    let upstream = match rb.body(body).send().await {
        Ok(r) => r,
        Err(e) => return error(502, None).map(|_| Body::from(e.to_string())),
    };
    let status = upstream.status();
    let headers = upstream.headers().clone();
    let bytes = upstream.bytes().await.unwrap_or_default();
    let mut resp = Response::new(Body::from(bytes));
    *resp.status_mut() = status;
    for (name, value) in &headers {
        let hop = matches!(
            name.as_str(),
            "transfer-encoding" | "connection" | "content-length"
        );
        if !hop || (name == "content-length" && parts.method == Method::HEAD) {
            resp.headers_mut().insert(name, value.clone());
        }
    }
    resp
}

// ---------------------------------------------------------------------------------------------

/// A repository of four semver tags and a signature of the oldest; the policy keeps the two
/// highest. Returns (digest by tag, signature digest).
async fn repo_with_candidates(reg: &str, repo: &str) -> (BTreeMap<String, String>, String) {
    let mut d = BTreeMap::new();
    for tag in ["1.0.0", "1.1.0", "2.0.0", "2.1.0"] {
        d.insert(
            tag.to_string(),
            push_image(reg, repo, tag, &unique(tag), OLD, None).await,
        );
    }
    let sig = push_image(reg, repo, "", &unique("sig"), OLD, Some((&d["1.0.0"], 100))).await;
    (d, sig)
}

fn spec(proxy: &Proxy, repo: &str) -> Value {
    json!({"target": {"kind": "OCIArtifact", "registry": {"url": format!("http://{}", proxy.addr), "repositories": [repo]}},
        "orderBy": "semver(object.tags[0])", "keep": "rank < 2", "schedule": "0 0 29 2 *"})
}

fn kept_only(d: &BTreeMap<String, String>, tags: &[&str]) -> BTreeMap<String, String> {
    tags.iter()
        .map(|t| (t.to_string(), d[*t].clone()))
        .collect()
}

/// Sweeps through `faults` (scripted after the policy was first read, so the sweep meets
/// them) and checks that exactly the candidates went; returns how long the sweep took.
async fn sweep_through(name: &str, faults: &[(Kind, Fault, usize)]) -> Duration {
    let bed = setup(&format!("faults-{name}")).await;
    let reg = registry("olareg");
    let proxy = Proxy::start(&reg).await;
    let repo = unique(&format!("faults/{name}-"));
    let (d, sig) = repo_with_candidates(&reg, &repo).await;
    apply_policy(&bed, name, spec(&proxy, &repo)).await;
    let st = summary(&bed, name, 5).await;
    assert_eq!(
        st["summary"]["candidates"], 3,
        "1.0.0, its signature and 1.1.0: {st}"
    );
    for (kind, fault, times) in faults {
        proxy.script(*kind, *fault, *times);
    }
    let started = std::time::Instant::now();
    let swept = sweep(&bed, name).await;
    let took = started.elapsed();
    assert_eq!(swept["reason"], "Completed", "{swept}");
    assert!(
        swept["message"]
            .as_str()
            .unwrap()
            .starts_with("deleted 3, failed 0, skipped 0"),
        "{swept}"
    );
    for (kind, _, times) in faults {
        assert_eq!(
            proxy.faulted(*kind),
            *times,
            "every scripted {kind:?} fault was met and retried"
        );
    }
    assert_eq!(
        tag_digests(&reg, &repo).await,
        kept_only(&d, &["2.0.0", "2.1.0"])
    );
    for gone in [&d["1.0.0"], &d["1.1.0"], &sig] {
        assert!(!exists(&reg, &repo, gone, None).await, "{gone} deleted");
    }
    let c = ready_condition(&bed, name).await;
    assert_eq!(c["status"], "True", "{c}");
    bed.cleanup().await;
    took
}

#[tokio::test]
async fn transient_server_errors_are_retried() {
    sweep_through(
        "errors",
        &[
            (Kind::TagList, Fault::Status(500), 2),
            (Kind::ManifestHead, Fault::Status(503), 3),
            (Kind::Referrers, Fault::Status(502), 1),
            (Kind::Delete, Fault::Status(500), 2),
        ],
    )
    .await;
}

#[tokio::test]
async fn too_many_requests_waits_as_asked() {
    let took = sweep_through(
        "throttled",
        &[
            (Kind::TagList, Fault::TooMany(1), 1),
            (Kind::ManifestHead, Fault::TooMany(1), 2),
            (Kind::Delete, Fault::TooMany(2), 1),
        ],
    )
    .await;
    // Retry-After was honoured, not cut short by the backoff: the sweep's steps come one after
    // another (tags listed, every tag resolved afresh, deletes), so 1 s + 1 s + 2 s at least.
    assert!(took >= Duration::from_secs(4), "{took:?}");
}

#[tokio::test]
async fn timeouts_are_retried_and_a_late_delete_counts_as_done() {
    // 3 s is beyond the controller's 2 s registry timeout. The delayed DELETEs still reach the
    // registry: a retry then finds the manifest gone, which a retried DELETE counts as done.
    let late = Fault::Delay(Duration::from_secs(3));
    sweep_through(
        "slow",
        &[
            (Kind::TagList, late, 1),
            (Kind::ManifestHead, late, 1),
            (Kind::Referrers, late, 1),
            (Kind::Delete, late, 2),
        ],
    )
    .await;
}

#[tokio::test]
async fn persistent_delete_failures_delete_nothing_and_say_why() {
    let bed = setup("faults-deletes").await;
    let reg = registry("olareg");
    let proxy = Proxy::start(&reg).await;
    let repo = unique("faults/deletes-");
    let (d, sig) = repo_with_candidates(&reg, &repo).await;
    apply_policy(&bed, "deletes", spec(&proxy, &repo)).await;
    summary(&bed, "deletes", 5).await;
    proxy.script(Kind::Delete, Fault::Status(500), ALWAYS);
    let swept = sweep(&bed, "deletes").await;
    assert_eq!(
        (swept["status"].as_str(), swept["reason"].as_str()),
        (Some("False"), Some("Failed")),
        "{swept}"
    );
    let msg = swept["message"].as_str().unwrap();
    for want in [
        "deleted 0, failed 2, skipped 1".to_string(),
        format!("deleting {repo}@sha256:"),
        format!("at {}", proxy.addr),
        "HTTP 500 INJECTED: injected fault 500".to_string(),
        "gave up after 4 attempts".to_string(),
    ] {
        assert!(msg.contains(&want), "{want:?} in {msg}");
    }
    assert_eq!(
        proxy.seen(Kind::Delete),
        8,
        "two deletes, four attempts each"
    );
    // The signature's delete failed, so its subject was not even tried: nothing is orphaned.
    assert_eq!(
        tag_digests(&reg, &repo).await,
        kept_only(&d, &["1.0.0", "1.1.0", "2.0.0", "2.1.0"])
    );
    assert!(exists(&reg, &repo, &sig, None).await);
    let c = ready_condition(&bed, "deletes").await;
    assert_eq!(c["status"], "True", "the registry answers reads: {c}");
    bed.cleanup().await;
}

#[tokio::test]
async fn a_registry_down_at_sweep_time_deletes_nothing_and_says_why() {
    let bed = setup("faults-down").await;
    let reg = registry("olareg");
    let proxy = Proxy::start(&reg).await;
    let repo = unique("faults/down-");
    let (d, sig) = repo_with_candidates(&reg, &repo).await;
    apply_policy(&bed, "down", spec(&proxy, &repo)).await;
    summary(&bed, "down", 5).await;
    for kind in [
        Kind::TagList,
        Kind::ManifestHead,
        Kind::ManifestGet,
        Kind::Referrers,
        Kind::Delete,
    ] {
        proxy.script(kind, Fault::Status(500), ALWAYS);
    }
    let swept = sweep(&bed, "down").await;
    assert_eq!(
        (swept["status"].as_str(), swept["reason"].as_str()),
        (Some("False"), Some("Failed")),
        "{swept}"
    );
    let p = policies(&bed).get("down").await.unwrap();
    let ready = p.data["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Ready")
        .unwrap()
        .clone();
    assert_eq!(
        (ready["status"].as_str(), ready["reason"].as_str()),
        (Some("False"), Some("TargetUnavailable")),
        "{ready}"
    );
    let why = format!(
        "listing tags of {repo} at {}: HTTP 500 INJECTED: injected fault 500 (gave up after 4 attempts)",
        proxy.addr
    );
    assert!(ready["message"].as_str().unwrap().contains(&why), "{ready}");
    assert!(swept["message"].as_str().unwrap().contains(&why), "{swept}");
    assert_eq!(proxy.seen(Kind::Delete), 0);
    assert_eq!(
        tag_digests(&reg, &repo).await,
        kept_only(&d, &["1.0.0", "1.1.0", "2.0.0", "2.1.0"])
    );
    assert!(exists(&reg, &repo, &sig, None).await);
    bed.cleanup().await;
}

/// Subject before referrers: when the subject's DELETE fails, its signature stays with it, so
/// that a kept image never loses its signature; the next sweep deletes both, signature last.
#[tokio::test]
async fn a_signature_stays_when_its_subjects_delete_fails() {
    let bed = setup("faults-subject").await;
    let reg = registry("olareg");
    let proxy = Proxy::start(&reg).await;
    let repo = unique("faults/subject-");
    let mut d = BTreeMap::new();
    for tag in ["1.0.0", "2.0.0", "2.1.0"] {
        d.insert(
            tag.to_string(),
            push_image(&reg, &repo, tag, &unique(tag), OLD, None).await,
        );
    }
    let sig = push_image(
        &reg,
        &repo,
        "",
        &unique("sig"),
        OLD,
        Some((&d["1.0.0"], 100)),
    )
    .await;
    apply_policy(&bed, "subject", spec(&proxy, &repo)).await;
    let st = summary(&bed, "subject", 4).await;
    assert_eq!(
        st["summary"]["candidates"], 2,
        "1.0.0 and its signature: {st}"
    );
    // Not a transient status: the subject's delete fails for good in this sweep.
    proxy.script(Kind::Delete, Fault::Status(403), 1);
    let swept = sweep(&bed, "subject").await;
    assert_eq!(swept["reason"], "Failed", "{swept}");
    assert!(
        swept["message"]
            .as_str()
            .unwrap()
            .starts_with("deleted 0, failed 1, skipped 1"),
        "{swept}"
    );
    assert_eq!(
        proxy.seen(Kind::Delete),
        1,
        "only the subject's DELETE was sent"
    );
    assert!(exists(&reg, &repo, &d["1.0.0"], None).await);
    assert!(
        exists(&reg, &repo, &sig, None).await,
        "the signature stays with its subject"
    );

    let swept = sweep(&bed, "subject").await;
    assert!(
        swept["message"]
            .as_str()
            .unwrap()
            .starts_with("deleted 2, failed 0, skipped 0"),
        "{swept}"
    );
    for gone in [&d["1.0.0"], &sig] {
        assert!(!exists(&reg, &repo, gone, None).await, "{gone} deleted");
    }
    bed.cleanup().await;
}
