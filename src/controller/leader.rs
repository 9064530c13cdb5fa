//! Leader election on a coordination.k8s.io Lease, the way client-go's leaderelection does it:
//! acquire when the lease is free or expired, renew well within its duration, and treat a
//! renewal that cannot succeed before expiry as lost leadership.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum LeaseError {
    #[error("reading lease {name}: {source}")]
    Read { name: String, source: kube::Error },
    #[error("writing lease {name}: {source}")]
    Write { name: String, source: kube::Error },
}

/// Until when this process may act as the leader: the start of its last successful acquisition
/// or renewal plus the lease duration, the earliest another replica may see the lease expired.
/// Shared by the elector, which sets it, and the sweep executors, which ask it before every
/// delete. Without leader election it is never set, and the process always leads.
#[derive(Debug, Default)]
pub struct Leadership {
    until: Mutex<Option<Instant>>,
}

impl Leadership {
    fn set_until(&self, until: Instant) {
        *self.until.lock().unwrap_or_else(|p| p.into_inner()) = Some(until);
    }

    /// Whether this process may still act as the leader: always without leader election; with
    /// it, only while the lease it last wrote has not run out. A sweep checks it before every
    /// delete: a leader cut off from the API server for longer than its lease (another replica
    /// may lead by then) must not go on deleting once the server answers again, before the
    /// lost lease is noticed and the process exits.
    pub fn still_leading(&self) -> bool {
        match *self.until.lock().unwrap_or_else(|p| p.into_inner()) {
            None => true,
            Some(until) => Instant::now() < until,
        }
    }
}

pub struct LeaderElector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    leadership: Arc<Leadership>,
}

impl LeaderElector {
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
        leadership: Arc<Leadership>,
    ) -> Self {
        LeaderElector {
            api: Api::namespaced(client, namespace),
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            leadership,
        }
    }

    pub fn renew_interval(&self) -> Duration {
        self.duration / 3
    }

    /// One attempt to acquire or renew. Ok(true) while this instance holds the lease.
    pub async fn try_acquire_or_renew(&self) -> Result<bool, LeaseError> {
        // Taken before any request: the renewTime written is `now`, so the lease cannot run
        // out, in anyone's eyes, before `started + duration`.
        let started = Instant::now();
        let held = self.acquire_or_renew().await;
        match held {
            Ok(true) => self.leadership.set_until(started + self.duration),
            Ok(false) => self.leadership.set_until(started),
            // A failed renewal leaves the deadline as it was: it runs out on its own.
            Err(_) => {}
        }
        held
    }

    async fn acquire_or_renew(&self) -> Result<bool, LeaseError> {
        let now = Timestamp::now();
        let secs = i32::try_from(self.duration.as_secs()).unwrap_or(i32::MAX);
        let existing = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|source| LeaseError::Read {
                name: self.name.clone(),
                source,
            })?;
        let write_err = |source| LeaseError::Write {
            name: self.name.clone(),
            source,
        };
        match existing {
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..Default::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(secs),
                        acquire_time: Some(MicroTime(now)),
                        renew_time: Some(MicroTime(now)),
                        lease_transitions: Some(0),
                        ..Default::default()
                    }),
                };
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    // Someone else created it first.
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(write_err(e)),
                }
            }
            Some(mut lease) => {
                let spec = lease.spec.clone().unwrap_or_default();
                let holder = spec.holder_identity.clone().unwrap_or_default();
                let ours = holder == self.identity;
                let expired = match (spec.renew_time.as_ref(), spec.lease_duration_seconds) {
                    (Some(t), Some(d)) => t.0 + jiff::SignedDuration::from_secs(d.into()) < now,
                    _ => true,
                };
                if !ours && !holder.is_empty() && !expired {
                    return Ok(false);
                }
                let mut new_spec = spec.clone();
                new_spec.holder_identity = Some(self.identity.clone());
                new_spec.lease_duration_seconds = Some(secs);
                new_spec.renew_time = Some(MicroTime(now));
                if !ours {
                    new_spec.acquire_time = Some(MicroTime(now));
                    new_spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
                }
                lease.spec = Some(new_spec);
                // replace carries the resourceVersion we read: a concurrent writer makes this
                // fail with 409 instead of both believing they lead.
                match self
                    .api
                    .replace(&self.name, &PostParams::default(), &lease)
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(write_err(e)),
                }
            }
        }
    }

    /// Gives the lease up so another instance can take over at once.
    pub async fn release(&self) {
        self.leadership.set_until(Instant::now());
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(&self.identity)
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            let _ = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await;
        }
    }
}
