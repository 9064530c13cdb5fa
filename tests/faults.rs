//! Faults in the middle of a sweep of 2,000 Jobs: the API server SIGKILLed and started again,
//! etcd SIGKILLed and started again, the controller SIGKILLed and started again, the leader of
//! two replicas SIGKILLed, and the leader cut off from the API server for longer than its lease.
//! The controller is the real binary, out of cluster with the admin kubeconfig. Each scenario
//! ends with the exact set of surviving Jobs compared with the set the policy keeps, worked out
//! independently of the engine (tests/fault/mod.rs), and with the audit log lines checked: no
//! object logged as deleted twice, none of them kept.
//!
//! A sweep through an API server or etcd outage runs on with the deletes it cannot make counted
//! as failed; the next sweep, requested here as a user would (or the next on the schedule),
//! deletes what is left. A sweep that dies with its process, or with its leader's lease, is in
//! status as started and never completed: the restarted controller or the new leader finishes
//! it without a request. A controller that starts, or a replica that becomes leader, takes the sweep-request
//! annotation it finds as handled, so the tests request after it has evaluated.
//!
//! These tests kill the test bed's API server and etcd (through `scripts/testbed.sh kill` and
//! `start`), so they run one at a time and leave the bed ready. The longer variants (10,000
//! Jobs, repeated faults, rounds) are `make soak` (tests/soak.rs).

mod fault;
mod support;

use std::time::Duration;

use fault::scenarios::*;
use fault::{SERIAL, Testbed};

/// Jobs per scenario.
const JOBS: usize = 2_000;
/// --delete-qps, the default: one precondition-guarded delete per Job, so about 50 deletions
/// a second; the sweep of some 1,270 candidates takes about 25 s, long enough to be cut in the
/// middle.
const QPS: u32 = 50;
/// --lease-duration of the replicas.
const LEASE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn api_server_killed_and_restarted_mid_sweep() {
    let _serial = SERIAL.lock().await;
    let tb = Testbed::from_env();
    server_fault(&tb, "kube-apiserver", JOBS, QPS, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn etcd_killed_and_restarted_mid_sweep() {
    let _serial = SERIAL.lock().await;
    let tb = Testbed::from_env();
    server_fault(&tb, "etcd", JOBS, QPS, Duration::from_secs(3)).await;
}

#[tokio::test]
async fn controller_sigkilled_mid_sweep_and_restarted() {
    let _serial = SERIAL.lock().await;
    controller_kill(JOBS, QPS).await;
}

#[tokio::test]
async fn leader_sigkilled_mid_sweep_the_other_replica_finishes() {
    let _serial = SERIAL.lock().await;
    leader_kill(JOBS, QPS, LEASE).await;
}

/// A regression test: before `leader::still_leading`, a leader cut off for longer than its
/// lease went on deleting once the API server answered again (644 deletions after its lease had
/// run out, in the run that found it).
#[tokio::test]
async fn leader_cut_off_longer_than_its_lease_stops_deleting() {
    let _serial = SERIAL.lock().await;
    let tb = Testbed::from_env();
    leader_cut_off(&tb, 1_500, 40, Duration::from_secs(3)).await;
}
