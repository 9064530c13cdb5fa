//! The validating admission webhook: `kubectl apply` of a policy the controller could not use
//! fails at once, with the message the controller would write as `Ready=False`.
//!
//! The judgement is [`Readiness::judge`], the function the controller's workers use, so the
//! webhook can never refuse what the controller accepts or accept what it refuses. It is
//! optional: with it off, an invalid policy is stored and reported `Ready=False` (and
//! `Stalled=True`) as before, and nothing of it is swept.
//!
//! Every replica serves it, leader or not: judging a policy reads nothing but the policy.
//! The serving certificate is read from a directory holding `tls.crt` and `tls.key` (a
//! `kubernetes.io/tls` Secret mounted as a volume) and read again when either file changes,
//! so that a certificate rotated by cert-manager is served without a restart.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::Router;
use axum::body::Bytes;
use axum::extract::DefaultBodyLimit;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use serde_json::{Value as Json, json};
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::status::Readiness;

/// Where the API server posts AdmissionReviews.
pub const PATH: &str = "/validate";
/// The file names of a `kubernetes.io/tls` Secret's keys.
pub const CERT_FILE: &str = "tls.crt";
pub const KEY_FILE: &str = "tls.key";

/// An AdmissionReview holds the object and, on update, the old one: two policies at most the
/// API server's 1.5 MiB object limit each, with room for the envelope.
const MAX_BODY: usize = 4 << 20;
/// A client that has not finished its TLS handshake by then is dropped, so that connections
/// that never speak cannot hold the server.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; the API server needs a few.
const MAX_HANDSHAKES: usize = 64;

/// Settings of the webhook server.
#[derive(Clone, Debug)]
pub struct WebhookOptions {
    pub addr: SocketAddr,
    /// Holds `tls.crt` (the chain, leaf first) and `tls.key`, both PEM.
    pub cert_dir: PathBuf,
}

#[derive(Debug, Error)]
pub enum WebhookError {
    #[error("binding the admission webhook to {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("loading the admission webhook's serving certificate from {dir}: {message}")]
    LoadCertificate { dir: PathBuf, message: String },
    #[error("building the admission webhook's TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

// ---------------------------------------------------------------------------------------------
// The decision, pure.

/// What the webhook answers for one request: `None` admits, `Some(message)` refuses.
///
/// Only a new or changed `spec` is judged: an update that leaves the spec as it was (labels,
/// annotations such as a sweep request, finalizers) is admitted even if the stored policy is
/// invalid, so that a policy made invalid by a stricter controller release can still be
/// labelled, annotated and cleaned up; its status says what is wrong with it.
pub fn refusal(
    kind: &str,
    operation: &str,
    object: Option<&Json>,
    old: Option<&Json>,
) -> Option<String> {
    if kind != "RetentionPolicy" && kind != "ClusterRetentionPolicy" {
        // A webhook configuration that sends other kinds is a mistake in the configuration,
        // not in what is sent: never block an unrelated object.
        return None;
    }
    let object = match operation {
        "CREATE" | "UPDATE" => object?,
        _ => return None,
    };
    if operation == "UPDATE" && old.is_some_and(|old| old.get("spec") == object.get("spec")) {
        return None;
    }
    Readiness::judge(kind, object)
        .err()
        .map(|r| format!("{}: {}", r.reason, r.message))
}

#[derive(Deserialize)]
struct Review {
    request: Option<Request>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    uid: String,
    kind: RequestKind,
    operation: String,
    #[serde(default)]
    object: Option<Json>,
    #[serde(default)]
    old_object: Option<Json>,
}

#[derive(Deserialize)]
struct RequestKind {
    kind: String,
}

/// The AdmissionReview to answer with, or why the body is not one.
pub fn answer(body: &[u8]) -> Result<Json, String> {
    let review: Review =
        serde_json::from_slice(body).map_err(|e| format!("not an AdmissionReview: {e}"))?;
    let request = review
        .request
        .ok_or_else(|| "an AdmissionReview without a request".to_string())?;
    let refused = refusal(
        &request.kind.kind,
        &request.operation,
        request.object.as_ref(),
        request.old_object.as_ref(),
    );
    let response = match &refused {
        None => json!({"uid": request.uid, "allowed": true}),
        // 422 and Invalid, as the API server answers an object its schema refuses.
        Some(message) => json!({
            "uid": request.uid,
            "allowed": false,
            "status": {"status": "Failure", "code": 422, "reason": "Invalid", "message": message},
        }),
    };
    if let Some(message) = &refused {
        let name = request
            .object
            .as_ref()
            .and_then(|o| o.pointer("/metadata/name"))
            .and_then(Json::as_str)
            .unwrap_or("");
        tracing::info!(kind = %request.kind.kind, name, %message, "admission refused");
    }
    Ok(json!({
        "apiVersion": "admission.k8s.io/v1",
        "kind": "AdmissionReview",
        "response": response,
    }))
}

// ---------------------------------------------------------------------------------------------
// Serving it.

async fn validate(body: Bytes) -> Response {
    match answer(&body) {
        Ok(review) => (
            [(header::CONTENT_TYPE, "application/json")],
            review.to_string(),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, e).into_response(),
    }
}

/// Starts the webhook server; returns the address it listens on.
pub async fn serve(opts: &WebhookOptions) -> Result<SocketAddr, WebhookError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let certificates = Certificates::load(&opts.cert_dir, provider.clone())?;
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(certificates));
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let tcp = TcpListener::bind(opts.addr)
        .await
        .map_err(|source| WebhookError::Bind {
            addr: opts.addr,
            source,
        })?;
    let local = tcp.local_addr().map_err(|source| WebhookError::Bind {
        addr: opts.addr,
        source,
    })?;
    let (tx, rx) = mpsc::channel(MAX_HANDSHAKES);
    tokio::spawn(accept(tcp, acceptor, tx));
    let router = Router::new()
        .route(PATH, post(validate))
        .layer(DefaultBodyLimit::max(MAX_BODY));
    tokio::spawn(async move {
        if let Err(e) = axum::serve(TlsListener { rx, local }, router).await {
            tracing::error!(error = %e, "admission webhook server stopped");
        }
    });
    Ok(local)
}

/// Accepts connections and runs each TLS handshake on its own task, so that a slow or silent
/// client delays nobody else; finished handshakes go to the HTTP server.
async fn accept(
    tcp: TcpListener,
    acceptor: TlsAcceptor,
    done: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let handshakes = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let (stream, peer) = match tcp.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(error = %e, "admission webhook: accepting a connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = handshakes.clone().acquire_owned().await else {
            return;
        };
        let (acceptor, done) = (acceptor.clone(), done.clone());
        tokio::spawn(async move {
            let _permit = permit;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => {
                    let _ = done.send((tls, peer)).await;
                }
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "admission webhook: TLS handshake failed")
                }
                Err(_) => tracing::debug!(%peer, "admission webhook: TLS handshake timed out"),
            }
        });
    }
}

struct TlsListener {
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    local: SocketAddr,
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(connection) => connection,
            // The accepting task ended: there will be no more connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(self.local)
    }
}

/// The serving certificate, read again when its files change.
#[derive(Debug)]
struct Certificates {
    dir: PathBuf,
    provider: Arc<CryptoProvider>,
    current: Mutex<Loaded>,
}

#[derive(Debug)]
struct Loaded {
    stamp: Option<(SystemTime, SystemTime)>,
    key: Arc<CertifiedKey>,
}

fn stamp(dir: &Path) -> Option<(SystemTime, SystemTime)> {
    let modified = |f: &str| {
        std::fs::metadata(dir.join(f))
            .and_then(|m| m.modified())
            .ok()
    };
    Some((modified(CERT_FILE)?, modified(KEY_FILE)?))
}

fn read_key(dir: &Path, provider: &CryptoProvider) -> Result<CertifiedKey, String> {
    let chain = CertificateDer::pem_file_iter(dir.join(CERT_FILE))
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{CERT_FILE}: {e}"))?;
    if chain.is_empty() {
        return Err(format!("{CERT_FILE} holds no certificate"));
    }
    let key =
        PrivateKeyDer::from_pem_file(dir.join(KEY_FILE)).map_err(|e| format!("{KEY_FILE}: {e}"))?;
    let key = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("{KEY_FILE}: {e}"))?;
    let certified = CertifiedKey::new(chain, key);
    certified
        .keys_match()
        .map_err(|e| format!("{CERT_FILE} and {KEY_FILE} do not belong together: {e}"))?;
    Ok(certified)
}

impl Certificates {
    fn load(dir: &Path, provider: Arc<CryptoProvider>) -> Result<Certificates, WebhookError> {
        let stamp = stamp(dir);
        let key = read_key(dir, &provider).map_err(|message| WebhookError::LoadCertificate {
            dir: dir.to_path_buf(),
            message,
        })?;
        Ok(Certificates {
            dir: dir.to_path_buf(),
            provider,
            current: Mutex::new(Loaded {
                stamp,
                key: Arc::new(key),
            }),
        })
    }
}

impl ResolvesServerCert for Certificates {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        // A poisoned lock only means a panic elsewhere mid-update; the value is still whole.
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        let now = stamp(&self.dir);
        if now.is_some() && now != current.stamp {
            // A Secret volume swaps both files at once; a half-written pair fails to load and
            // the old certificate is served until the next handshake tries again.
            match read_key(&self.dir, &self.provider) {
                Ok(key) => {
                    tracing::info!(dir = %self.dir.display(), "admission webhook: serving certificate reloaded");
                    *current = Loaded {
                        stamp: now,
                        key: Arc::new(key),
                    };
                }
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "admission webhook: keeping the previous serving certificate");
                }
            }
        }
        Some(current.key.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(kind: &str, spec: Json) -> Json {
        let mut metadata = json!({"name": "p"});
        if kind == "RetentionPolicy" {
            metadata["namespace"] = json!("ns");
        }
        json!({"apiVersion": "retainer.dev/v1alpha1", "kind": kind, "metadata": metadata, "spec": spec})
    }

    fn jobs(keep: &str) -> Json {
        json!({"target": {"kind": "Job"}, "schedule": "@hourly", "keep": keep})
    }

    #[test]
    fn refuses_what_the_controller_reports_not_ready() {
        let valid = policy("RetentionPolicy", jobs("age < duration('24h')"));
        let type_error = policy("RetentionPolicy", jobs("'a' + true"));
        let bad_cron = policy(
            "RetentionPolicy",
            json!({"target": {"kind": "Job"}, "schedule": "@fortnightly", "keep": "true"}),
        );
        let oci_without_registry = policy(
            "ClusterRetentionPolicy",
            json!({"target": {"kind": "OCIArtifact"}, "schedule": "@daily", "keep": "true"}),
        );
        // (kind, operation, object, old object, the refusal's start or None to admit)
        type Case<'a> = (
            &'a str,
            &'a str,
            Option<&'a Json>,
            Option<&'a Json>,
            Option<&'a str>,
        );
        let cases: &[Case] = &[
            ("RetentionPolicy", "CREATE", Some(&valid), None, None),
            (
                "RetentionPolicy",
                "CREATE",
                Some(&type_error),
                None,
                Some("InvalidExpression: "),
            ),
            (
                "RetentionPolicy",
                "CREATE",
                Some(&bad_cron),
                None,
                Some("InvalidSchedule: "),
            ),
            (
                "ClusterRetentionPolicy",
                "CREATE",
                Some(&oci_without_registry),
                None,
                Some("InvalidTarget: spec.target.registry is required"),
            ),
            // An edit that makes a valid policy invalid is refused.
            (
                "RetentionPolicy",
                "UPDATE",
                Some(&type_error),
                Some(&valid),
                Some("InvalidExpression: "),
            ),
            // An edit that leaves an invalid spec as it is (labels, a sweep request) is not.
            (
                "RetentionPolicy",
                "UPDATE",
                Some(&type_error),
                Some(&type_error),
                None,
            ),
            ("RetentionPolicy", "DELETE", None, Some(&type_error), None),
            // Not ours: never blocked.
            ("ConfigMap", "CREATE", Some(&type_error), None, None),
        ];
        for (kind, op, object, old, want) in cases {
            let got = refusal(kind, op, *object, *old);
            match (want, &got) {
                (None, None) => {}
                (Some(prefix), Some(message)) if message.starts_with(prefix) => {}
                _ => panic!("{kind} {op}: want {want:?}, got {got:?}"),
            }
        }
    }

    #[test]
    fn the_message_is_the_ready_condition_s() {
        let object = policy("RetentionPolicy", jobs("'a' + true"));
        let ready = Readiness::judge("RetentionPolicy", &object).unwrap_err();
        let message = refusal("RetentionPolicy", "CREATE", Some(&object), None).unwrap();
        assert_eq!(message, format!("{}: {}", ready.reason, ready.message));
    }

    #[test]
    fn answers_with_the_request_uid() {
        let body = json!({
            "apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": "u-1", "kind": {"group": "retainer.dev", "version": "v1alpha1", "kind": "RetentionPolicy"},
                        "operation": "CREATE", "object": policy("RetentionPolicy", jobs("[1, 'a'].size() > 0"))},
        });
        let review = answer(body.to_string().as_bytes()).unwrap();
        assert_eq!(review["response"]["uid"], "u-1");
        assert_eq!(review["response"]["allowed"], false);
        assert_eq!(review["response"]["status"]["code"], 422);
        assert!(answer(b"{").is_err());
        assert!(answer(b"{}").is_err());
    }
}
