//! Prometheus metrics, `/healthz` and `/readyz`. Labels are bounded: policy, namespace, kind,
//! result.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
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

use serde_json::Value as Json;

use super::ControllerError;
use super::leader::Leadership;
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
    /// Steps of a policy's worker: what a change costs the policies it does not concern shows
    /// here as nothing.
    wakes: Family<PolicyLabels, Counter>,
    status_writes: Counter,
    registry_requests: Family<RegistryLabels, Counter>,
    registry_retries: Family<RegistryLabels, Counter>,
    policy_ready: Family<PolicyLabels, Gauge>,
    /// The outcome of each policy's last sweep as gauges, for alerts: a counter series is born
    /// at its first increment, and PromQL's `increase` does not see that first one, so a first
    /// blocked sweep after a restart would go unnoticed.
    last_sweep_blocked: Family<PolicyLabels, Gauge>,
    last_sweep_failed: Family<PolicyLabels, Gauge>,
    /// Policies with per-policy gauges, so that those of a deleted policy can be dropped: a
    /// stale `policy_ready` 0 would keep an alert firing for a policy that no longer exists.
    known: Mutex<HashSet<PolicyLabels>>,
    leader: Gauge,
    /// Read at each scrape, so that the gauge drops the moment the lease runs out rather than
    /// when the elector notices.
    leadership: OnceLock<Arc<Leadership>>,
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
            wakes: Family::default(),
            status_writes: Counter::default(),
            registry_requests: Family::default(),
            registry_retries: Family::default(),
            policy_ready: Family::default(),
            last_sweep_blocked: Family::default(),
            last_sweep_failed: Family::default(),
            known: Mutex::new(HashSet::new()),
            leader: Gauge::default(),
            leadership: OnceLock::new(),
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
            r.register(
                "policy_wakes",
                "Steps of the policy's worker: its edits, changes of the caches it reads, its timers",
                m.wakes.clone(),
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
            r.register(
                "policy_ready",
                "1 when the policy's Ready condition is True, 0 when False (leader only)",
                m.policy_ready.clone(),
            );
            r.register(
                "last_sweep_blocked",
                "1 when the policy's last sweep was refused by abortAbovePercent",
                m.last_sweep_blocked.clone(),
            );
            r.register(
                "last_sweep_failed",
                "1 when the policy's last sweep failed or failed in part",
                m.last_sweep_failed.clone(),
            );
            r.register(
                "leader",
                "1 while this process may act as the leader (always without leader election)",
                m.leader.clone(),
            );
        }
        m
    }

    /// Makes `retainer_leader` follow this process's leadership.
    pub fn track_leadership(&self, leadership: Arc<Leadership>) {
        let _ = self.leadership.set(leadership);
    }

    pub fn sweep(&self, p: &PolicyView, result: SweepResult) {
        let l = labels(p);
        self.last_sweep_blocked
            .get_or_create(&l)
            .set(i64::from(result == SweepResult::Blocked));
        self.last_sweep_failed
            .get_or_create(&l)
            .set(i64::from(matches!(
                result,
                SweepResult::Failed | SweepResult::PartiallyFailed
            )));
        if let Ok(mut known) = self.known.lock() {
            known.insert(l.clone());
        }
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

    /// Sets `policy_ready` from the policy object whose status is being written.
    pub fn set_ready(&self, policy: &Json, ready: bool) {
        let s = |p: &str| {
            policy
                .pointer(p)
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string()
        };
        let l = PolicyLabels {
            policy: s("/metadata/name"),
            namespace: s("/metadata/namespace"),
        };
        self.policy_ready.get_or_create(&l).set(i64::from(ready));
        if let Ok(mut known) = self.known.lock() {
            known.insert(l);
        }
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

    pub fn wake(&self, p: &PolicyView) {
        self.wakes.get_or_create(&labels(p)).inc();
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
        for f in [
            &self.candidates,
            &self.governed,
            &self.errors,
            &self.policy_ready,
            &self.last_sweep_blocked,
            &self.last_sweep_failed,
        ] {
            f.remove(&l);
        }
        if let Ok(mut known) = self.known.lock() {
            known.remove(&l);
        }
        self.sweep_seconds.remove(&l);
        self.evaluation_seconds.remove(&l);
        self.wakes.remove(&l);
    }

    pub fn status_write(&self) {
        self.status_writes.inc();
    }

    /// Adds a registry client's requests (`RequestCounts::take`, so none is counted twice).
    /// Every kind of a host gets its series at once, at 0 if need be: a series that is absent
    /// until its first retry makes `rate()` in dashboards and alerts show nothing, not 0.
    pub fn registry_requests(&self, host: &str, t: &RequestTally) {
        for kind in RequestKind::ALL {
            let l = RegistryLabels {
                host: host.into(),
                kind: kind.as_str().into(),
            };
            self.registry_requests.get_or_create(&l).inc_by(t.get(kind));
            self.registry_retries
                .get_or_create(&l)
                .inc_by(t.retries(kind));
        }
    }

    pub fn encode(&self) -> String {
        if let Some(l) = self.leadership.get() {
            self.leader.set(i64::from(l.still_leading()));
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn view(ns: &str, name: &str) -> PolicyView {
        PolicyView {
            namespace: Some(ns.into()),
            name: name.into(),
            generation: None,
            spec: serde_json::from_value(serde_json::json!({
                "target": {"kind": "Job"}, "keep": "true", "schedule": "@daily"}))
            .expect("spec"),
        }
    }

    #[test]
    fn leader_gauge_follows_leadership_at_each_scrape() {
        let m = Metrics::new();
        m.track_leadership(Arc::new(Leadership::default()));
        assert!(m.encode().contains("retainer_leader 1"));
        let waiting = Metrics::new();
        waiting.track_leadership(Arc::new(Leadership::elected(Arc::new(
            super::super::leader::SystemClock::default(),
        ))));
        assert!(waiting.encode().contains("retainer_leader 0"));
    }

    #[test]
    fn per_policy_gauges_follow_the_last_outcome_and_go_with_the_policy() {
        let m = Metrics::new();
        let obj = serde_json::json!({"metadata": {"name": "p", "namespace": "ns"}});
        m.set_ready(&obj, false);
        m.sweep(&view("ns", "p"), SweepResult::Blocked);
        let text = m.encode();
        assert!(
            text.contains("retainer_policy_ready{policy=\"p\",namespace=\"ns\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("retainer_last_sweep_blocked{policy=\"p\",namespace=\"ns\"} 1"),
            "{text}"
        );
        m.set_ready(&obj, true);
        m.sweep(&view("ns", "p"), SweepResult::PartiallyFailed);
        let text = m.encode();
        assert!(
            text.contains("retainer_policy_ready{policy=\"p\",namespace=\"ns\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("retainer_last_sweep_blocked{policy=\"p\",namespace=\"ns\"} 0"),
            "{text}"
        );
        assert!(
            text.contains("retainer_last_sweep_failed{policy=\"p\",namespace=\"ns\"} 1"),
            "{text}"
        );
        // A deleted policy leaves no series behind that could keep an alert firing.
        m.forget("p", "ns");
        let text = m.encode();
        assert!(
            !text.contains("retainer_policy_ready{")
                && !text.contains("retainer_last_sweep_failed{")
                && !text.contains("retainer_sweeps_total{"),
            "{text}"
        );
    }
}
