//! The fault scenarios, each from an empty namespace to the exact survivors, parameterised by
//! the number of Jobs and the rate limit so that `make test` runs them once at 2,000 Jobs and
//! `make soak` runs them again and again.

use std::time::{Duration, Instant};

use super::*;

/// What one scenario came to.
#[derive(Debug, Clone)]
pub struct Report {
    pub name: String,
    pub figures: Figures,
    /// Sweeps requested after the first (the one the fault cut).
    pub extra_sweeps: usize,
    /// Faults injected (bed components killed, replicas SIGKILLed).
    pub faults: usize,
    /// How long the bed component was away, or the new leader took to take over.
    pub outage: Option<Duration>,
    pub secs: f64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {}; {} more sweep(s); {}{:.0}s in all",
            self.name,
            self.figures,
            self.extra_sweeps,
            self.outage
                .map(|d| format!("outage/takeover {:.1}s; ", d.as_secs_f64()))
                .unwrap_or_default(),
            self.secs
        )
    }
}

/// Waits until `fraction` of the candidates are logged as deleted.
async fn wait_fraction(s: &Scenario, fraction: f64) -> usize {
    let at = (s.candidates() as f64 * fraction) as usize;
    s.wait_audit(
        &format!("{at} deletions ({:.0}% of the sweep)", fraction * 100.0),
        s.sweep_timeout(),
        |a| a.deleted.len() >= at,
    )
    .await;
    s.audit().deleted.len()
}

/// Kills `component` of the test bed (kube-apiserver or etcd) a quarter into the sweep, starts
/// it again after `down`, and checks that the controller recovers, that the interrupted sweep
/// runs to its end (what it could not delete counted as failed), and that the next sweep leaves
/// exactly the kept set.
pub async fn server_fault(
    tb: &Testbed,
    component: &str,
    jobs: usize,
    qps: u32,
    down: Duration,
) -> Report {
    let started = Instant::now();
    let prefix = if component == "kube-apiserver" {
        "fault-apiserver".to_string()
    } else {
        format!("fault-{component}")
    };
    let mut s = Scenario::new(&prefix, jobs, qps).await;
    let mut c = s.spawn("solo", None);
    let status = s.wait_governed(jobs, Duration::from_secs(180)).await;
    assert_eq!(
        status["summary"]["candidates"].as_u64(),
        Some(s.candidates() as u64),
        "the controller and this test disagree on the candidates: {}",
        status["summary"]
    );
    let before = s.request_sweep().await;
    let at_fault = wait_fraction(&s, 0.25).await;
    let t = Instant::now();
    tb.kill(component).await;
    tokio::time::sleep(down).await;
    tb.start(component).await;
    let outage = t.elapsed();
    log(format!(
        "{component} killed after {at_fault} deletions, ready again after {:.1}s",
        outage.as_secs_f64()
    ));
    // The interrupted sweep goes on to its end: one outcome per candidate.
    let n = s.candidates();
    s.wait_audit("the interrupted sweep to end", s.sweep_timeout(), |a| {
        a.outcomes() >= n
    })
    .await;
    let first = s.audit();
    log(format!(
        "interrupted sweep: {} deleted, {} failed, {} skipped",
        first.deleted.len(),
        first.failed.len(),
        first.skipped.len()
    ));
    // Its record reaches status once the API server answers again.
    let recorded = s
        .wait_sweep_recorded(&before, Duration::from_secs(120))
        .await;
    log(format!("status: {}", recorded["lastSweep"]));
    assert!(
        c.exited().is_none(),
        "the controller exited after the {component} restart"
    );
    let extra_sweeps = s.finish(3).await;
    let figures = s.verify(1, 0).await;
    tb.assert_healthy().await;
    c.sigkill().await;
    let report = Report {
        name: format!("{component} SIGKILLed and restarted mid-sweep"),
        figures,
        extra_sweeps,
        faults: 1,
        outage: Some(outage),
        secs: started.elapsed().as_secs_f64(),
    };
    log(report.to_string());
    s.cleanup().await;
    report
}

/// SIGKILLs the controller (no leader election) a quarter into the sweep and starts a new one.
pub async fn controller_kill(jobs: usize, qps: u32) -> Report {
    let started = Instant::now();
    let mut s = Scenario::new("fault-sigkill", jobs, qps).await;
    let mut first = s.spawn("first", None);
    s.wait_governed(jobs, Duration::from_secs(180)).await;
    s.request_sweep().await;
    wait_fraction(&s, 0.25).await;
    first.sigkill().await;
    let at_kill = s.audit().deleted.len();
    log(format!("controller SIGKILLed after {at_kill} deletions"));
    let mut second = s.spawn("second", None);
    // The killed sweep is in status as started and not completed: the restarted controller
    // finishes it without being asked.
    s.wait_done("the restarted controller to finish the interrupted sweep")
        .await;
    let extra_sweeps = s.finish(3).await;
    assert_eq!(extra_sweeps, 0, "no sweep was needed after the resumed one");
    let figures = s.verify(0, 1).await;
    let by_second = s.audit_of(std::slice::from_ref(&second.log)).deleted.len();
    assert_eq!(
        figures.logged,
        at_kill + by_second,
        "nothing is logged after the kill"
    );
    second.sigkill().await;
    let report = Report {
        name: "controller SIGKILLed mid-sweep and restarted".into(),
        figures,
        extra_sweeps,
        faults: 1,
        outage: None,
        secs: started.elapsed().as_secs_f64(),
    };
    log(format!(
        "{report}; deleted before the kill {at_kill}, by the restarted one {by_second}"
    ));
    s.cleanup().await;
    report
}

/// Two replicas electing a leader with a `lease` lease; the leader SIGKILLed a quarter into the
/// sweep. The other must take over within the lease duration plus one retry interval (a third
/// of it) and a second of slack, and finish; no object may be logged as deleted twice.
pub async fn leader_kill(jobs: usize, qps: u32, lease: Duration) -> Report {
    let started = Instant::now();
    let mut s = Scenario::new("fault-leader", jobs, qps).await;
    let lease_flag = format!("{}s", lease.as_secs());
    let mut a = s.spawn("replica-a", Some(&lease_flag));
    s.wait_holder("replica-a", Duration::from_secs(30)).await;
    let mut b = s.spawn("replica-b", Some(&lease_flag));
    s.wait_governed(jobs, Duration::from_secs(180)).await;
    s.request_sweep().await;
    wait_fraction(&s, 0.25).await;
    a.sigkill().await;
    let killed = Instant::now();
    let by_a = s.audit_of(std::slice::from_ref(&a.log));
    assert_eq!(
        s.audit_of(std::slice::from_ref(&b.log)).outcomes(),
        0,
        "the follower touched nothing while the leader swept"
    );
    // replica-b tries every lease/3; the lease runs out at most `lease` after replica-a's last
    // renewal, which was before the kill.
    s.wait_holder("replica-b", Duration::from_secs(60)).await;
    let takeover = killed.elapsed();
    let slack = lease / 3 + Duration::from_secs(1);
    log(format!(
        "leader SIGKILLed after {} deletions; replica-b took over after {:.2}s",
        by_a.deleted.len(),
        takeover.as_secs_f64()
    ));
    assert!(
        takeover <= lease + slack,
        "takeover took {takeover:?}, more than the lease duration {lease:?} + {slack:?}"
    );
    // The new leader finds the sweep started and not completed in status and finishes it.
    s.wait_done("the new leader to finish the interrupted sweep")
        .await;
    let extra_sweeps = s.finish(3).await;
    assert_eq!(extra_sweeps, 0, "no sweep was needed after the resumed one");
    let figures = s.verify(0, 1).await;
    let by_b = s.audit_of(std::slice::from_ref(&b.log));
    assert!(
        !by_b.deleted.is_empty(),
        "the new leader deleted what was left"
    );
    assert_eq!(
        s.audit_of(std::slice::from_ref(&a.log)).deleted.len(),
        by_a.deleted.len(),
        "the dead leader logged nothing after its death"
    );
    b.sigkill().await;
    let report = Report {
        name: "leader of two replicas SIGKILLed mid-sweep".into(),
        figures,
        extra_sweeps,
        faults: 1,
        outage: Some(takeover),
        secs: started.elapsed().as_secs_f64(),
    };
    log(format!(
        "{report}; replica-a deleted {}, replica-b deleted {} (skipped {}, failed {})",
        by_a.deleted.len(),
        by_b.deleted.len(),
        by_b.skipped.len(),
        by_b.failed.len()
    ));
    s.cleanup().await;
    report
}

/// The leader cut off from the API server for longer than its lease, mid-sweep: once its lease
/// may have run out it deletes nothing more (another replica may lead by then), and it exits;
/// the other replica takes over and the next sweep finishes. Before `leader::still_leading`,
/// the cut-off leader went on with its sweep once the server answered again, deleting for
/// seconds while another replica could lead.
///
/// The lease is short and the outage (the API server takes 5 s or more to start) well beyond
/// it; the sweep is slow, so that much of it is left when the server is back: replica-a fails
/// what it tries while the server is away, at about `qps` a second.
pub async fn leader_cut_off(tb: &Testbed, jobs: usize, qps: u32, lease: Duration) -> Report {
    let started = Instant::now();
    let mut s = Scenario::new("fault-cutoff", jobs, qps).await;
    let lease_flag = format!("{}s", lease.as_secs());
    let mut a = s.spawn("replica-a", Some(&lease_flag));
    s.wait_holder("replica-a", Duration::from_secs(30)).await;
    // The one that finishes need not be slow.
    let mut b = s.spawn_with_qps("replica-b", Some(&lease_flag), qps * 10);
    s.wait_governed(jobs, Duration::from_secs(180)).await;
    s.request_sweep().await;
    wait_fraction(&s, 0.10).await;
    let cut = jiff::Timestamp::now();
    let t = Instant::now();
    tb.kill("kube-apiserver").await;
    tokio::time::sleep(lease).await;
    tb.start("kube-apiserver").await;
    let outage = t.elapsed();
    log(format!("API server away for {:.1}s", outage.as_secs_f64()));
    // replica-a's last renewal was before the cut: its lease ran out by cut + lease.
    let expired = cut + jiff::SignedDuration::try_from(lease).expect("lease");
    let exited = tokio::time::timeout(s.sweep_timeout(), a.child.wait())
        .await
        .expect("replica-a exits once it knows it lost the lease")
        .expect("wait for replica-a");
    log(format!("replica-a exited: {exited}"));
    let by_a = s.audit_of(std::slice::from_ref(&a.log));
    let late: Vec<String> = by_a
        .deleted
        .iter()
        .zip(&by_a.deleted_at)
        .filter(|(_, at)| **at > expired)
        .map(|((name, _), at)| format!("{name} at {at}"))
        .collect();
    log(format!(
        "replica-a: {} deleted, {} after its lease ran out at {expired}, {} failed",
        by_a.deleted.len(),
        late.len(),
        by_a.failed.len()
    ));
    assert!(
        late.is_empty(),
        "replica-a deleted {} Jobs after its lease ran out at {expired}: {:?}",
        late.len(),
        late.iter().take(5).collect::<Vec<_>>()
    );
    s.wait_holder("replica-b", Duration::from_secs(60)).await;
    let extra_sweeps = s.finish(3).await;
    let figures = s.verify(1, 1).await;
    tb.assert_healthy().await;
    b.sigkill().await;
    let report = Report {
        name: "leader cut off from the API server longer than its lease".into(),
        figures,
        extra_sweeps,
        faults: 1,
        outage: Some(outage),
        secs: started.elapsed().as_secs_f64(),
    };
    log(report.to_string());
    s.cleanup().await;
    report
}
