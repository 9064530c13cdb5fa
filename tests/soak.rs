//! The soak: `make soak` (ignored by `cargo test`; run with `--ignored`). Two tests, one at a time:
//!
//! - `repeated_faults_during_one_long_sweep`: 10,000 Jobs (RETAINER_SOAK_JOBS), two replicas
//!   electing a leader on the default 15 s lease, the default --delete-qps 50
//!   (RETAINER_SOAK_QPS), and a fault every few percent of the sweep (RETAINER_SOAK_FAULTS,
//!   default 12), in turn: the API server SIGKILLed for a few seconds, the leader SIGKILLed, etcd
//!   SIGKILLed, the follower SIGKILLed, the API server away for longer than the lease, etcd away
//!   for 10 s, both replicas SIGKILLed. Replicas that die or exit are replaced at once by a new
//!   process with a new identity, as a Deployment replaces a Pod. When the sweep has stopped
//!   (no audit line for a while) and Jobs that should go are left, a sweep is requested again.
//!   It ends with the exact survivors, no object logged as deleted twice or by two replicas, and
//!   the replicas' deletions never interleaved (one leader at a time).
//! - `rounds_of_every_fault`: the `make test` scenarios of tests/faults.rs, RETAINER_SOAK_ROUNDS
//!   times (default 2).
//!
//! Each prints its figures; docs/reliability.md has those of a run.

mod fault;
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use fault::scenarios::*;
use fault::*;

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    ApiServer(Duration),
    Etcd(Duration),
    Leader,
    Follower,
    BothReplicas,
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::ApiServer(d) => write!(f, "kube-apiserver SIGKILL, {}s down", d.as_secs()),
            Fault::Etcd(d) => write!(f, "etcd SIGKILL, {}s down", d.as_secs()),
            Fault::Leader => write!(f, "leader SIGKILL"),
            Fault::Follower => write!(f, "follower SIGKILL"),
            Fault::BothReplicas => write!(f, "both replicas SIGKILL"),
        }
    }
}

const LEASE: Duration = Duration::from_secs(15);
/// No audit line for this long: the sweep in progress has ended.
const IDLE: Duration = Duration::from_secs(20);

/// The replicas, replaced when they die.
struct Fleet {
    replicas: Vec<Replica>,
    started: usize,
    exits: Vec<String>,
}

impl Fleet {
    fn spawn(&mut self, s: &mut Scenario) {
        self.started += 1;
        let identity = format!("replica-{}", self.started);
        let lease = format!("{}s", LEASE.as_secs());
        self.replicas.push(s.spawn(&identity, Some(&lease)));
    }

    /// Replaces replicas that exited (a replica that lost its lease exits).
    fn supervise(&mut self, s: &mut Scenario) {
        let mut dead = 0;
        for r in &mut self.replicas {
            if let Some(status) = r.exited() {
                log(format!("{} exited ({status}); replacing it", r.identity));
                self.exits.push(format!("{}: {status}", r.identity));
                dead += 1;
            }
        }
        self.replicas.retain_mut(|r| r.exited().is_none());
        for _ in 0..dead {
            self.spawn(s);
        }
    }

    fn index_of(&self, identity: &str) -> Option<usize> {
        self.replicas.iter().position(|r| r.identity == identity)
    }
}

/// Runs the replicas until `until` holds of the audit, or, once the sweep has stopped with
/// Jobs left that should go, requests another. Returns the sweeps requested; stops early (and
/// says so) when the Jobs left are the kept set.
async fn drive(
    s: &mut Scenario,
    fleet: &mut Fleet,
    until: impl Fn(&Audit) -> bool,
    timeout: Duration,
) -> (usize, bool) {
    let deadline = Instant::now() + timeout;
    let mut last = usize::MAX;
    let mut last_change = Instant::now();
    let mut requested = 0;
    loop {
        fleet.supervise(s);
        let audit = s.audit();
        if until(&audit) {
            return (requested, false);
        }
        if audit.outcomes() != last {
            last = audit.outcomes();
            last_change = Instant::now();
        }
        if last_change.elapsed() > IDLE {
            if s.done().await {
                return (requested, true);
            }
            log("the sweep has stopped with Jobs left to delete: requesting another");
            s.request_sweep().await;
            requested += 1;
            last_change = Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?}: {} deleted so far",
            audit.deleted.len()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test]
#[ignore = "a soak of 10 minutes or more: make soak"]
async fn repeated_faults_during_one_long_sweep() {
    let _serial = SERIAL.lock().await;
    let tb = Testbed::from_env();
    let started = Instant::now();
    let jobs = env_usize("RETAINER_SOAK_JOBS", 10_000);
    let qps = env_usize("RETAINER_SOAK_QPS", 50) as u32;
    let n_faults = env_usize("RETAINER_SOAK_FAULTS", 12);
    let cycle = [
        Fault::ApiServer(Duration::from_secs(3)),
        Fault::Leader,
        Fault::Etcd(Duration::from_secs(3)),
        Fault::Follower,
        Fault::ApiServer(LEASE + Duration::from_secs(5)),
        Fault::Etcd(Duration::from_secs(10)),
        Fault::BothReplicas,
    ];
    let mut s = Scenario::new("soak", jobs, qps).await;
    let mut fleet = Fleet {
        replicas: Vec::new(),
        started: 0,
        exits: Vec::new(),
    };
    fleet.spawn(&mut s);
    fleet.spawn(&mut s);
    s.wait_governed(jobs, Duration::from_secs(600)).await;
    s.request_sweep().await;
    let mut requested = 1;
    let mut rows = Vec::new();
    let mut kills = 0;
    let mut takeovers = Vec::new();
    let timeout = s.sweep_timeout() * 3;
    for i in 0..n_faults {
        let fault = cycle[i % cycle.len()];
        let at = s.candidates() * (i + 1) / (n_faults + 2);
        let (r, done) = drive(&mut s, &mut fleet, |a| a.deleted.len() >= at, timeout).await;
        requested += r;
        if done {
            log("every candidate is gone before all faults were injected");
            break;
        }
        let before = s.audit().deleted.len();
        if matches!(fault, Fault::Leader | Fault::Follower | Fault::BothReplicas) {
            // A leader among the running replicas, so that there is one to kill.
            let deadline = Instant::now() + LEASE * 3;
            while fleet
                .index_of(&s.holder().await.unwrap_or_default())
                .is_none()
            {
                assert!(Instant::now() < deadline, "no replica leads");
                fleet.supervise(&mut s);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        let holder = s.holder().await.unwrap_or_default();
        let t = Instant::now();
        match fault {
            Fault::ApiServer(down) => {
                tb.kill("kube-apiserver").await;
                tokio::time::sleep(down).await;
                tb.start("kube-apiserver").await;
            }
            Fault::Etcd(down) => {
                tb.kill("etcd").await;
                tokio::time::sleep(down).await;
                tb.start("etcd").await;
            }
            Fault::Leader | Fault::Follower | Fault::BothReplicas => {
                let leader = fleet.index_of(&holder);
                let victims: Vec<usize> = (0..fleet.replicas.len())
                    .filter(|&j| match fault {
                        Fault::Leader => Some(j) == leader,
                        Fault::Follower => Some(j) != leader,
                        _ => true,
                    })
                    .collect();
                for j in victims.iter().rev() {
                    let mut r = fleet.replicas.remove(*j);
                    r.sigkill().await;
                    log(format!("SIGKILLed {}", r.identity));
                    kills += 1;
                }
                fleet.supervise(&mut s);
                for _ in &victims {
                    fleet.spawn(&mut s);
                }
            }
        }
        let took = t.elapsed();
        // A leader that was killed (or lost its lease) is followed by another within the lease
        // duration and a retry interval.
        if matches!(fault, Fault::Leader | Fault::BothReplicas) {
            let deadline = Instant::now() + LEASE * 2;
            loop {
                fleet.supervise(&mut s);
                let h = s.holder().await.unwrap_or_default();
                if h != holder && !h.is_empty() {
                    let takeover = t.elapsed();
                    log(format!("{h} took over from {holder} after {takeover:?}"));
                    assert!(
                        takeover <= LEASE + LEASE / 3 + Duration::from_secs(2),
                        "takeover took {takeover:?}"
                    );
                    takeovers.push(takeover);
                    break;
                }
                assert!(Instant::now() < deadline, "nobody took over from {holder}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        log(format!(
            "fault {}: {fault} after {before} deletions ({:.1}s)",
            i + 1,
            took.as_secs_f64()
        ));
        rows.push((fault, before, took));
    }
    let (r, _) = drive(&mut s, &mut fleet, |_| false, timeout).await;
    requested += r;
    let faults = rows.len();
    let figures = s.verify(faults, kills).await;
    tb.assert_healthy().await;

    // One leader at a time: each replica's deletions form one stretch of time, and no two
    // stretches overlap.
    let mut stretches: BTreeMap<String, (jiff::Timestamp, jiff::Timestamp, usize)> =
        BTreeMap::new();
    for path in &s.logs {
        let a = s.audit_of(std::slice::from_ref(path));
        if let (Some(first), Some(last)) = (a.deleted_at.iter().min(), a.deleted_at.iter().max()) {
            stretches.insert(
                path.file_name().unwrap().to_string_lossy().into(),
                (*first, *last, a.deleted.len()),
            );
        }
    }
    let mut sorted: Vec<_> = stretches.iter().collect();
    sorted.sort_by_key(|(_, (first, _, _))| *first);
    for w in sorted.windows(2) {
        assert!(
            w[0].1.1 < w[1].1.0,
            "{} deleted until {} but {} started deleting at {}",
            w[0].0,
            w[0].1.1,
            w[1].0,
            w[1].1.0
        );
    }
    for r in &mut fleet.replicas {
        r.sigkill().await;
    }
    eprintln!("\n=== soak: repeated faults during one long sweep ===");
    eprintln!(
        "{jobs} Jobs, --delete-qps {qps}, lease {}s, {} faults, {} replicas SIGKILLed, {} replica exits (lost lease), {requested} sweeps requested, {:.0}s in all",
        LEASE.as_secs(),
        faults,
        kills,
        fleet.exits.len(),
        started.elapsed().as_secs_f64()
    );
    for (i, (fault, before, took)) in rows.iter().enumerate() {
        eprintln!(
            "  fault {:>2}: {fault:<40} at {before:>5} deletions, {:.1}s",
            i + 1,
            took.as_secs_f64()
        );
    }
    for (log, (first, last, n)) in &sorted {
        eprintln!("  {log}: {n} deletions from {first} to {last}");
    }
    eprintln!("  takeovers: {takeovers:?}");
    eprintln!("  exits: {:?}", fleet.exits);
    eprintln!("  {figures}\n");
    s.cleanup().await;
}

#[tokio::test]
#[ignore = "a soak of 10 minutes or more: make soak"]
async fn rounds_of_every_fault() {
    let _serial = SERIAL.lock().await;
    let tb = Testbed::from_env();
    let rounds = env_usize("RETAINER_SOAK_ROUNDS", 2);
    let jobs = 2_000;
    let mut reports = Vec::new();
    for round in 1..=rounds {
        log(format!("round {round} of {rounds}"));
        reports.push(server_fault(&tb, "kube-apiserver", jobs, 50, Duration::from_secs(3)).await);
        reports.push(server_fault(&tb, "etcd", jobs, 50, Duration::from_secs(3)).await);
        reports.push(controller_kill(jobs, 50).await);
        reports.push(leader_kill(jobs, 50, Duration::from_secs(5)).await);
        reports.push(leader_cut_off(&tb, 1_500, 40, Duration::from_secs(3)).await);
    }
    eprintln!("\n=== soak: {rounds} rounds of every fault ===");
    for r in &reports {
        eprintln!("  {r}");
    }
    let wrong: usize = reports.iter().map(|r| r.figures.wrongly_deleted).sum();
    let twice: usize = reports.iter().map(|r| r.figures.deleted_twice).sum();
    eprintln!(
        "  {} scenarios, {} faults survived, wrongly deleted {wrong}, deleted twice {twice}\n",
        reports.len(),
        reports.iter().map(|r| r.faults).sum::<usize>()
    );
}
