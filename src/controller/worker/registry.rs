//! The policy's registry: reading its artifacts on a task of their own, and the cluster's
//! images in use that guard them.

use super::*;
use std::sync::Arc;

use jiff::Timestamp;
use serde_json::Value as Json;

use crate::controller::caches::{Cache, Kind};
use crate::controller::sweep::{InUse, PAUSE_LIMIT};
use crate::engine::CompiledPolicy;
use crate::oci::{RegistryClient, RequestTally, fetch_inventory_counted};
use crate::status::{self, Readiness};

impl Worker {
    pub(super) fn inventory_read(&mut self, (started, result): InventoryRead) {
        let s = &mut self.state;
        match result {
            Ok((client, docs)) => {
                s.inventory = Some((started, Arc::new(docs)));
                s.registry = Some(client);
                s.registry_error = None;
                s.registry_backoff.reset();
                s.seen.clear();
            }
            Err(r) => {
                tracing::warn!(policy = %self.key, reason = %r.reason, error = %r.message, "reading the registry failed");
                s.registry_error = Some((started, r));
                s.registry_backoff.failed(REGISTRY_RETRY);
            }
        }
    }

    /// Starts reading the registry on a task of its own, bounded by the registry deadline.
    pub(super) fn start_read(&mut self, compiled: Arc<CompiledPolicy>) {
        let shared = self.shared.clone();
        let deadline = shared.registry.deadline;
        self.state.reading = Some(tokio::spawn(async move {
            // Precise: compared with when a sweep started to wait for a fresh read.
            let started = Timestamp::now();
            let metrics = &shared.metrics;
            let count = |host: &str, t: &RequestTally| metrics.registry_requests(host, t);
            let read = fetch_inventory_counted(
                &shared.client,
                &shared.registry,
                &shared.manifests,
                &compiled,
                Some(&count),
            );
            let result = match tokio::time::timeout(deadline, read).await {
                Ok(r) => r,
                Err(_) => Err(Readiness {
                    ready: false,
                    reason: status::ready::TARGET_UNAVAILABLE,
                    message: format!(
                        "reading the registry took longer than {}s (--registry-deadline)",
                        deadline.as_secs()
                    ),
                }),
            };
            (started, result)
        }));
    }

    /// What an OCI sweep asks of the cluster right before each delete: the Pods and workloads
    /// that use an artifact of `host` now, from the built-in referrer caches.
    pub(super) fn in_use(&self, host: &str) -> InUse {
        let host = host.to_string();
        let shared = self.shared.clone();
        let caches: Vec<Arc<Cache>> = Kind::builtin_referrers()
            .iter()
            .map(|k| self.shared.caches.get(k))
            .collect();
        InUse {
            unhealthy: Box::new(move || caches.iter().find_map(|c| c.unhealthy())),
            user: Box::new(move |repo, digest, tags| {
                shared
                    .ref_index(TargetKind::OciArtifact)
                    .image_referrers(&host, repo, digest, tags)
                    .first()
                    .map(crate::engine::in_use_reason)
            }),
            pause_limit: PAUSE_LIMIT,
        }
    }
}

/// A registry read: when it started, and the client and artifacts, or why not.
pub(super) type InventoryRead = (
    Timestamp,
    Result<(Arc<RegistryClient>, Vec<Json>), Readiness>,
);
