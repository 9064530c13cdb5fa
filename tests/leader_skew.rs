//! Leader election with clocks that disagree: two replicas of the real binary, one of them
//! writing Lease times ten minutes in the past (`--clock-offset`, a hidden test flag). The other
//! must not read that old renewTime as an expired lease: exactly one replica leads while both
//! live, and the other takes over only once the holder stops renewing.

mod support;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use serde_json::Value;
use support::*;
use tokio::process::{Child, Command};

const LEASE: Duration = Duration::from_secs(6);

struct Replica {
    log: PathBuf,
    child: Child,
}

fn start(identity: &str, clock_offset: &str, ns: &str, lease: &str, dir: &Path) -> Replica {
    let log = dir.join(format!("{identity}.log"));
    let file = std::fs::File::create(&log).expect("log file");
    let child = Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args([
            "run",
            "--leader-elect",
            "--lease-namespace",
            ns,
            "--lease-name",
            lease,
            "--identity",
            identity,
            "--lease-duration",
            &format!("{}s", LEASE.as_secs()),
            &format!("--clock-offset={clock_offset}"),
            "--metrics-addr",
            "127.0.0.1:0",
            // The leader must leave other tests' policies alone.
            "--policy-selector",
            &owner_selector(),
        ])
        .stdout(Stdio::null())
        .stderr(file)
        .kill_on_drop(true)
        .spawn()
        .expect("start retainer run");
    Replica { log, child }
}

fn log_of(r: &Replica) -> String {
    std::fs::read_to_string(&r.log).unwrap_or_default()
}

/// The address the replica serves metrics on, from its start-up log line.
async fn metrics_addr(r: &Replica) -> String {
    wait_for(
        "the metrics address in the log",
        Duration::from_secs(20),
        || async {
            log_of(r).lines().find_map(|l| {
                let v: Value = serde_json::from_str(l).ok()?;
                v["fields"]["addr"].as_str().map(String::from)
            })
        },
    )
    .await
}

/// `retainer_leader` of one replica: whether it says it may act as the leader.
async fn leads(addr: &str) -> Option<bool> {
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("retainer_leader "))
        .map(|v| v.trim() == "1")
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<(String, i32)> {
    let spec = leases.get_opt(name).await.ok()??.spec?;
    Some((spec.holder_identity?, spec.lease_transitions.unwrap_or(0)))
}

#[tokio::test]
async fn skewed_clocks_give_one_leader_and_a_takeover_only_after_expiry() {
    let bed = setup_without_controller("leader-skew").await;
    let dir = std::env::temp_dir().join(unique("retainer-leader-skew-"));
    std::fs::create_dir_all(&dir).unwrap();
    let lease_name = unique("lease-");
    let leases: Api<Lease> = Api::namespaced(bed.client.clone(), &bed.ns);

    let mut behind = start("behind", "-10m", &bed.ns, &lease_name, &dir);
    wait_for(
        "the replica ten minutes behind to lead",
        20 * SECOND,
        || async { (holder(&leases, &lease_name).await?.0 == "behind").then_some(()) },
    )
    .await;
    // The flag took effect: the renewTime it writes is ten minutes old by the test's clock,
    // what the old election read as a lease expired long ago.
    let renewed = leases
        .get(&lease_name)
        .await
        .unwrap()
        .spec
        .unwrap()
        .renew_time
        .unwrap()
        .0;
    let lag = jiff::Timestamp::now().duration_since(renewed);
    assert!(
        lag > jiff::SignedDuration::from_mins(9),
        "renewTime lags {lag:?}"
    );

    let mut on_time = start("on-time", "0s", &bed.ns, &lease_name, &dir);
    let behind_addr = metrics_addr(&behind).await;
    let on_time_addr = metrics_addr(&on_time).await;

    // 20 s, more than three lease durations: the follower has read the old renewTime many
    // times by then.
    let sampling = Instant::now();
    let mut samples = 0;
    while sampling.elapsed() < 20 * SECOND {
        assert!(
            behind.child.try_wait().unwrap().is_none(),
            "the leader exited:\n{}",
            log_of(&behind)
        );
        assert!(
            on_time.child.try_wait().unwrap().is_none(),
            "the follower exited:\n{}",
            log_of(&on_time)
        );
        let a = leads(&behind_addr).await;
        let b = leads(&on_time_addr).await;
        assert_eq!(
            (a, b),
            (Some(true), Some(false)),
            "after {:?}: exactly one leader, the first (retainer_leader of each)",
            sampling.elapsed()
        );
        assert_eq!(
            holder(&leases, &lease_name).await,
            Some(("behind".to_string(), 0)),
            "the lease changed hands while its holder was alive"
        );
        samples += 1;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(samples >= 10, "only {samples} samples in 20 s");

    // The holder dies without giving the lease up: the other waits until it has seen the
    // record unchanged for a lease duration, then takes it.
    behind.child.kill().await.unwrap();
    let killed = Instant::now();
    wait_for(
        "the on-time replica to take the lease",
        LEASE + 10 * SECOND,
        || async {
            (holder(&leases, &lease_name).await? == ("on-time".to_string(), 1)).then_some(())
        },
    )
    .await;
    let took = killed.elapsed();
    // The last renewal came at most a retry period (a sixth of the lease) before the kill.
    assert!(
        took >= LEASE - 2 * SECOND,
        "taken {took:?} after the kill, before the lease ran out"
    );
    assert!(
        took <= LEASE + 4 * SECOND,
        "taken {took:?} after the kill, well after the lease ran out"
    );
    wait_for("the new leader's retainer_leader", 5 * SECOND, || async {
        leads(&on_time_addr).await?.then_some(())
    })
    .await;

    let _ = on_time.child.kill().await;
    bed.cleanup().await;
    let _ = std::fs::remove_dir_all(&dir);
}
