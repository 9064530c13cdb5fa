//! Prometheus metrics, `/healthz` and `/readyz`. Labels are bounded: policy, namespace, kind,
//! result.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::get;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use super::ControllerError;
use crate::api::{PolicyView, TargetKind};
use crate::engine::Counts;
use crate::oci::{RequestKind, RequestTally};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PolicyLabels {
    pub policy: String,
    pub namespace: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub policy: String,
    pub namespace: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabels {
    pub policy: String,
    pub namespace: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RegistryLabels {
    pub host: String,
    pub kind: String,
}

/// The `result` label of `retainer_sweeps`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SweepResult {
    Completed,
    PartiallyFailed,
    Failed,
    Blocked,
    DryRun,
    Interrupted,
}

impl SweepResult {
    pub const ALL: [SweepResult; 6] = [
        SweepResult::Completed,
        SweepResult::PartiallyFailed,
        SweepResult::Failed,
        SweepResult::Blocked,
        SweepResult::DryRun,
        SweepResult::Interrupted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            SweepResult::Completed => "completed",
            SweepResult::PartiallyFailed => "partially_failed",
            SweepResult::Failed => "failed",
            SweepResult::Blocked => "blocked",
            SweepResult::DryRun => "dry_run",
            SweepResult::Interrupted => "interrupted",
        }
    }
}

pub struct Metrics {
    registry: Mutex<Registry>,
    sweeps: Family<ResultLabels, Counter>,
    deletions: Family<KindLabels, Counter>,
    failures: Family<KindLabels, Counter>,
    candidates: Family<PolicyLabels, Gauge>,
    governed: Family<PolicyLabels, Gauge>,
    errors: Family<PolicyLabels, Gauge>,
    sweep_seconds: Family<PolicyLabels, Histogram>,
    evaluation_seconds: Family<PolicyLabels, Histogram>,
    status_writes: Counter,
    registry_requests: Family<RegistryLabels, Counter>,
    registry_retries: Family<RegistryLabels, Counter>,
}

fn labels(p: &PolicyView) -> PolicyLabels {
    PolicyLabels {
        policy: p.name.clone(),
        namespace: p.namespace.clone().unwrap_or_default(),
    }
}

fn seconds_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 10))
}

impl Metrics {
    pub fn new() -> Metrics {
        let m = Metrics {
            registry: Mutex::new(Registry::with_prefix("retainer")),
            sweeps: Family::default(),
            deletions: Family::default(),
            failures: Family::default(),
            candidates: Family::default(),
            governed: Family::default(),
            errors: Family::default(),
            sweep_seconds: Family::new_with_constructor(seconds_histogram),
            evaluation_seconds: Family::new_with_constructor(seconds_histogram),
            status_writes: Counter::default(),
            registry_requests: Family::default(),
            registry_retries: Family::default(),
        };
        if let Ok(mut r) = m.registry.lock() {
            r.register("sweeps", "Sweeps by result", m.sweeps.clone());
            r.register(
                "deletions",
                "Objects deleted by sweeps",
                m.deletions.clone(),
            );
            r.register(
                "deletion_failures",
                "Deletes that failed",
                m.failures.clone(),
            );
            r.register(
                "candidates",
                "Candidates at the last evaluation",
                m.candidates.clone(),
            );
            r.register(
                "governed",
                "Objects governed at the last evaluation",
                m.governed.clone(),
            );
            r.register(
                "evaluation_errors",
                "Objects whose evaluation failed (kept)",
                m.errors.clone(),
            );
            r.register(
                "sweep_duration_seconds",
                "Duration of sweeps",
                m.sweep_seconds.clone(),
            );
            r.register(
                "evaluation_duration_seconds",
                "Duration of evaluations",
                m.evaluation_seconds.clone(),
            );
            r.register("status_writes", "Status writes", m.status_writes.clone());
            r.register(
                "registry_requests",
                "Registry HTTP requests by host and kind, retries included",
                m.registry_requests.clone(),
            );
            r.register(
                "registry_retries",
                "Registry requests that were retries of a failed one",
                m.registry_retries.clone(),
            );
        }
        m
    }

    pub fn sweep(&self, p: &PolicyView, result: SweepResult) {
        let l = labels(p);
        self.sweeps
            .get_or_create(&ResultLabels {
                policy: l.policy,
                namespace: l.namespace,
                result: result.as_str().into(),
            })
            .inc();
    }

    pub fn deletions(&self, p: &PolicyView, kind: TargetKind, deleted: i64, failed: i64) {
        let l = labels(p);
        let k = KindLabels {
            policy: l.policy,
            namespace: l.namespace,
            kind: kind.as_str().into(),
        };
        self.deletions
            .get_or_create(&k)
            .inc_by(deleted.max(0) as u64);
        self.failures.get_or_create(&k).inc_by(failed.max(0) as u64);
    }

    pub fn set_counts(&self, p: &PolicyView, c: Counts) {
        let l = labels(p);
        self.candidates.get_or_create(&l).set(c.candidates);
        self.governed.get_or_create(&l).set(c.governed);
        self.errors.get_or_create(&l).set(c.errors);
    }

    pub fn observe_sweep(&self, p: &PolicyView, d: Duration) {
        self.sweep_seconds
            .get_or_create(&labels(p))
            .observe(d.as_secs_f64());
    }

    pub fn observe_evaluation(&self, p: &PolicyView, d: Duration) {
        self.evaluation_seconds
            .get_or_create(&labels(p))
            .observe(d.as_secs_f64());
    }

    /// Drops every series of a deleted policy, so that its last values do not linger and the
    /// label set stays bounded by the policies that exist.
    pub fn forget(&self, policy: &str, namespace: &str) {
        let l = PolicyLabels {
            policy: policy.into(),
            namespace: namespace.into(),
        };
        for r in SweepResult::ALL {
            self.sweeps.remove(&ResultLabels {
                policy: l.policy.clone(),
                namespace: l.namespace.clone(),
                result: r.as_str().into(),
            });
        }
        for kind in [TargetKind::Job, TargetKind::Secret, TargetKind::OciArtifact] {
            let k = KindLabels {
                policy: l.policy.clone(),
                namespace: l.namespace.clone(),
                kind: kind.as_str().into(),
            };
            self.deletions.remove(&k);
            self.failures.remove(&k);
        }
        for f in [&self.candidates, &self.governed, &self.errors] {
            f.remove(&l);
        }
        self.sweep_seconds.remove(&l);
        self.evaluation_seconds.remove(&l);
    }

    pub fn status_write(&self) {
        self.status_writes.inc();
    }

    /// Adds a registry client's requests (`RequestCounts::take`, so none is counted twice).
    pub fn registry_requests(&self, host: &str, t: &RequestTally) {
        for kind in RequestKind::ALL {
            let l = RegistryLabels {
                host: host.into(),
                kind: kind.as_str().into(),
            };
            if t.get(kind) > 0 {
                self.registry_requests.get_or_create(&l).inc_by(t.get(kind));
            }
            if t.retries(kind) > 0 {
                self.registry_retries
                    .get_or_create(&l)
                    .inc_by(t.retries(kind));
            }
        }
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        if let Ok(r) = self.registry.lock() {
            let _ = prometheus_client::encoding::text::encode(&mut out, &r);
        }
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Whether `/readyz` says ready: caches synced (or waiting for the lease).
#[derive(Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }
}

/// Serves in the background; returns the bound address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Readiness,
) -> Result<SocketAddr, ControllerError> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ControllerError::Serve { addr, source })?;
    let bound = listener
        .local_addr()
        .map_err(|source| ControllerError::Serve { addr, source })?;
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let m = metrics.clone();
                async move { m.encode() }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let r = ready.clone();
                async move {
                    if r.0.load(Ordering::Acquire) {
                        (StatusCode::OK, "ok")
                    } else {
                        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced")
                    }
                }
            }),
        );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "metrics server stopped");
        }
    });
    Ok(bound)
}
