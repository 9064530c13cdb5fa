//! The harness of the fault tests (`tests/faults.rs`) and the soak (`tests/soak.rs`): a fleet of
//! finished Jobs whose kept set is known in advance, the controller as the real binary (one
//! process per replica, out of cluster, the admin kubeconfig), its audit log read back, and the
//! test bed's components killed and started again through `scripts/testbed.sh`.

#![allow(dead_code)]

pub mod scenarios;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::support::{Bed, apply_policy, install_crds, owner_selector, policies, unique};

/// The policy every scenario applies, in its own namespace.
pub const POLICY: &str = "faults";
/// Newest this many per group are kept.
pub const KEEP_NEWEST: usize = 3;
/// The controller's default delete concurrency: at most this many deletes are in flight.
pub const DELETE_CONCURRENCY: usize = 10;

/// Fault tests restart the API server and etcd under every client: one at a time per process.
pub static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn log(msg: impl AsRef<str>) {
    eprintln!(
        "[faults {:>8.1}s] {}",
        started().elapsed().as_secs_f64(),
        msg.as_ref()
    );
}

fn started() -> &'static Instant {
    static T: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    T.get_or_init(Instant::now)
}

// ---------------------------------------------------------------------------------------------
// The fleet: which Jobs exist and which the policy must keep.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Succeeded,
    Failed,
    Running,
}

/// One Job of the fleet.
#[derive(Clone, Debug)]
pub struct Spec {
    pub name: String,
    pub group: usize,
    /// Unique and increasing: the policy's orderBy, so "newest" is the highest seq.
    pub seq: usize,
    pub state: State,
    /// Label keep-me=true: the policy's keep expression holds.
    pub keep_me: bool,
    /// Label retainer.dev/keep=true: a guard keeps it whatever keep says.
    pub guard: bool,
}

/// `n` Jobs in groups of about 100. Kept: the newest KEEP_NEWEST per group, every third
/// (keep-me), every 101st (the guard label) and the few still running (the finished guard).
pub fn fleet(n: usize) -> Vec<Spec> {
    let groups = (n / 100).max(1);
    (0..n)
        .map(|i| Spec {
            name: format!("j-{i:05}"),
            group: i % groups,
            seq: i,
            state: if i % 97 == 5 {
                State::Running
            } else if i % 13 == 0 {
                State::Failed
            } else {
                State::Succeeded
            },
            keep_me: i % 3 == 1,
            guard: i % 101 == 7,
        })
        .collect()
}

/// The policy: groups by label, orders by the zero-padded seq label, keeps the newest
/// KEEP_NEWEST per group and anything labelled keep-me. It never fires on its own (29 February,
/// midnight); sweeps are requested.
pub fn policy_spec() -> Value {
    json!({
        "target": {"kind": "Job"},
        "groupBy": "object.metadata.labels['group']",
        "orderBy": "object.metadata.labels['seq']",
        "keep": format!("rank < {KEEP_NEWEST} || ('keep-me' in object.metadata.labels && object.metadata.labels['keep-me'] == 'true')"),
        "schedule": "0 0 29 2 *",
    })
}

/// The names the policy must keep, worked out independently of the engine: guards apply after
/// ranking, so a running or guarded Job still takes its place in its group's ranking.
pub fn expected_kept(specs: &[Spec]) -> BTreeSet<String> {
    let mut by_group: BTreeMap<usize, Vec<&Spec>> = BTreeMap::new();
    for s in specs {
        by_group.entry(s.group).or_default().push(s);
    }
    let mut kept = BTreeSet::new();
    for members in by_group.values_mut() {
        members.sort_by_key(|s| std::cmp::Reverse(s.seq));
        for (rank, s) in members.iter().enumerate() {
            if rank < KEEP_NEWEST || s.keep_me || s.guard || s.state == State::Running {
                kept.insert(s.name.clone());
            }
        }
    }
    kept
}

/// Creates the fleet with `concurrency` requests in flight; returns each name's uid.
pub async fn create_fleet(
    client: &kube::Client,
    ns: &str,
    specs: &[Spec],
    concurrency: usize,
) -> HashMap<String, String> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let started = Instant::now();
    let uids: HashMap<String, String> = futures::stream::iter(specs.iter().cloned())
        .map(|s| {
            let jobs = jobs.clone();
            async move {
                let uid = create_job(&jobs, &s).await;
                (s.name, uid)
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    log(format!(
        "created {} Jobs in {:.1}s",
        uids.len(),
        started.elapsed().as_secs_f64()
    ));
    uids
}

async fn create_job(jobs: &Api<Job>, s: &Spec) -> String {
    let mut labels = json!({"group": format!("g{:03}", s.group), "seq": format!("{:06}", s.seq)});
    if s.keep_me {
        labels["keep-me"] = json!("true");
    }
    if s.guard {
        labels["retainer.dev/keep"] = json!("true");
    }
    let j: Job = serde_json::from_value(json!({"metadata": {"name": s.name, "labels": labels},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "c", "image": "busybox"}]}}}}))
    .expect("job");
    let post = PostParams::default();
    let created = retry(&format!("create {}", s.name), || jobs.create(&post, &j)).await;
    let uid = created.metadata.uid.expect("uid");
    if s.state == State::Running {
        return uid;
    }
    // No job controller runs in the bed: the status is written here, in one patch that carries
    // what the API server's validation wants together (start time, the criteria condition, then
    // the terminal one).
    let now = jiff::Timestamp::now().to_string();
    let status = if s.state == State::Succeeded {
        json!({"status": {"startTime": now, "completionTime": now, "succeeded": 1, "conditions": [
            {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
            {"type": "Complete", "status": "True", "lastTransitionTime": now}]}})
    } else {
        json!({"status": {"startTime": now, "failed": 1, "conditions": [
            {"type": "FailureTarget", "status": "True", "lastTransitionTime": now},
            {"type": "Failed", "status": "True", "lastTransitionTime": now}]}})
    };
    let pp = PatchParams::default();
    let patch = Patch::Merge(&status);
    retry(&format!("status of {}", s.name), || {
        jobs.patch_status(&s.name, &pp, &patch)
    })
    .await;
    uid
}

/// Retries a request a few times on errors other than a conflict (a busy API server on two
/// cores sometimes answers 429 or times out).
async fn retry<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, kube::Error>>,
{
    let mut last = None;
    for attempt in 0..5u64 {
        match f().await {
            Ok(v) => return v,
            Err(e) => {
                last = Some(e);
                tokio::time::sleep(Duration::from_millis(200 * (attempt + 1))).await;
            }
        }
    }
    panic!("{what}: {:?}", last.expect("an error"));
}

/// The Jobs of the namespace now, by name, with their uids. Objects being deleted are
/// reported as such: a sweep's Background deletion leaves none behind.
pub async fn survivors(client: &kube::Client, ns: &str) -> BTreeMap<String, String> {
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let lp = ListParams::default();
    let list = retry("list jobs", || jobs.list(&lp)).await;
    list.items
        .into_iter()
        .map(|j| {
            let name = j.metadata.name.clone().unwrap_or_default();
            let uid = j.metadata.uid.clone().unwrap_or_default();
            let uid = if j.metadata.deletion_timestamp.is_some() {
                format!("{uid} (being deleted)")
            } else {
                uid
            };
            (name, uid)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The test bed's processes.

/// `scripts/testbed.sh` of the bed the tests run against, found through RETAINER_TESTBED_DIR.
pub struct Testbed {
    pub dir: PathBuf,
}

impl Testbed {
    pub fn from_env() -> Testbed {
        let dir = std::env::var("RETAINER_TESTBED_DIR").unwrap_or_default();
        assert!(
            !dir.is_empty() && Path::new(&dir).join("pids").is_dir(),
            "fault tests kill and restart the test bed's API server and etcd, so they need the \
             local test bed (`make test`, or `scripts/testbed.sh up && eval \"$(scripts/testbed.sh env)\"`, \
             which sets RETAINER_TESTBED_DIR); RETAINER_TESTBED_DIR={dir:?} holds no bed"
        );
        Testbed { dir: dir.into() }
    }

    async fn script(&self, args: &[&str]) {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/testbed.sh");
        let status = Command::new(&script)
            .args(args)
            .env("RETAINER_TESTBED_DIR", &self.dir)
            .stdin(Stdio::null())
            .status()
            .await
            .expect("run scripts/testbed.sh");
        assert!(status.success(), "scripts/testbed.sh {args:?}: {status}");
    }

    /// SIGKILLs a component: etcd, kube-apiserver, kube-controller-manager, ...
    pub async fn kill(&self, component: &str) {
        self.script(&["kill", component]).await;
    }

    /// Starts it again with the same flags and waits until it, and the API server, are ready.
    pub async fn start(&self, component: &str) {
        self.script(&["start", component]).await;
    }

    /// Fails the test unless every component runs and the API server says it is ready.
    pub async fn assert_healthy(&self) {
        self.script(&["status"]).await;
        // kubectl is on PATH in the bed's environment (`scripts/testbed.sh env`).
        let out = Command::new("kubectl")
            .args(["get", "--raw", "/readyz"])
            .output()
            .await
            .expect("run kubectl get --raw /readyz");
        let body = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && body.trim() == "ok",
            "/readyz: {body} {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The controller, as the real binary.

/// One running `retainer run` process.
pub struct Replica {
    pub identity: String,
    pub log: PathBuf,
    pub child: Child,
}

impl Replica {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL, and reap it.
    pub async fn sigkill(&mut self) {
        self.child.kill().await.expect("SIGKILL the controller");
    }

    /// Whether the process has exited (a replica that lost its lease exits).
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

/// A scenario: a namespace with the fleet and the policy, the controllers run for it and every
/// log they wrote.
pub struct Scenario {
    pub bed: Bed,
    pub specs: Vec<Spec>,
    pub uids: HashMap<String, String>,
    pub expected: BTreeSet<String>,
    pub dir: PathBuf,
    /// Every log file of every replica incarnation, for the audit.
    pub logs: Vec<PathBuf>,
    pub qps: u32,
    pub lease: String,
    incarnations: usize,
}

/// What the audit log lines of the scenario's policy say.
#[derive(Debug, Default)]
pub struct Audit {
    /// (name, uid) per `deleted` line.
    pub deleted: Vec<(String, String)>,
    /// When each of `deleted` was logged.
    pub deleted_at: Vec<jiff::Timestamp>,
    pub skipped: Vec<(String, String)>,
    pub failed: Vec<(String, String)>,
}

impl Audit {
    pub fn outcomes(&self) -> usize {
        self.deleted.len() + self.skipped.len() + self.failed.len()
    }
}

impl Scenario {
    /// A namespace, the CRDs, `n` Jobs and the policy. No controller runs yet.
    pub async fn new(prefix: &str, n: usize, qps: u32) -> Scenario {
        let _ = started();
        let bed = Bed::new(prefix).await;
        install_crds(&bed.client).await;
        let specs = fleet(n);
        let expected = expected_kept(&specs);
        let uids = create_fleet(&bed.client, &bed.ns, &specs, 32).await;
        apply_policy(&bed, POLICY, policy_spec()).await;
        let dir = std::env::temp_dir().join(unique(&format!("retainer-{prefix}-")));
        std::fs::create_dir_all(&dir).expect("log dir");
        log(format!(
            "{}: {n} Jobs, {} to keep, {} candidates; logs in {}",
            bed.ns,
            expected.len(),
            n - expected.len(),
            dir.display()
        ));
        Scenario {
            bed,
            specs,
            uids,
            expected,
            dir,
            logs: Vec::new(),
            qps,
            lease: "retainer-faults".into(),
            incarnations: 0,
        }
    }

    pub fn candidates(&self) -> usize {
        self.specs.len() - self.expected.len()
    }

    pub fn key(&self) -> String {
        format!("{}/{POLICY}", self.bed.ns)
    }

    /// Starts `retainer run`; with `lease_duration`, as a replica electing a leader.
    pub fn spawn(&mut self, identity: &str, lease_duration: Option<&str>) -> Replica {
        self.spawn_with_qps(identity, lease_duration, self.qps)
    }

    /// `spawn` with another --delete-qps.
    pub fn spawn_with_qps(
        &mut self,
        identity: &str,
        lease_duration: Option<&str>,
        qps: u32,
    ) -> Replica {
        self.incarnations += 1;
        let log = self
            .dir
            .join(format!("{identity}.{}.log", self.incarnations));
        let file = std::fs::File::create(&log).expect("log file");
        let qps = qps.to_string();
        // Only this test process's policies: a replica that outlived its scenario must never
        // act on another test's objects.
        let selector = owner_selector();
        let mut args = vec![
            "run",
            "--policy-selector",
            &selector,
            "--metrics-addr",
            "127.0.0.1:0",
            "--debounce",
            "200ms",
            "--delete-qps",
            &qps,
            "--identity",
            identity,
        ];
        if let Some(d) = lease_duration {
            args.extend([
                "--leader-elect",
                "--lease-namespace",
                &self.bed.ns,
                "--lease-name",
                &self.lease,
                "--lease-duration",
                d,
            ]);
        }
        let child = Command::new(env!("CARGO_BIN_EXE_retainer"))
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .expect("start retainer run");
        self.logs.push(log.clone());
        Replica {
            identity: identity.into(),
            log,
            child,
        }
    }

    /// The audit of this scenario's policy over every log so far.
    pub fn audit(&self) -> Audit {
        self.audit_of(&self.logs)
    }

    /// The audit of this scenario's policy in some logs (one replica's, say).
    pub fn audit_of(&self, logs: &[PathBuf]) -> Audit {
        let key = self.key();
        let mut a = Audit::default();
        for path in logs {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            for line in text.lines() {
                let Ok(v) = serde_json::from_str::<Value>(line) else {
                    continue;
                };
                let f = &v["fields"];
                if f["policy"].as_str() != Some(&key) {
                    continue;
                }
                let s = |k: &str| f[k].as_str().unwrap_or("").to_string();
                match f["message"].as_str() {
                    Some("deleted") if v["target"] == "retainer::audit" => {
                        a.deleted.push((s("name"), s("uid")));
                        let at = v["timestamp"].as_str().and_then(|t| t.parse().ok());
                        a.deleted_at.push(at.expect("audit line with a timestamp"));
                    }
                    Some("skipped") => a.skipped.push((s("name"), s("reason"))),
                    Some("delete failed") => a.failed.push((s("name"), s("error"))),
                    _ => {}
                }
            }
        }
        a
    }

    /// Waits until `check` holds of the audit, or fails after `timeout`.
    pub async fn wait_audit(&self, what: &str, timeout: Duration, check: impl Fn(&Audit) -> bool) {
        let deadline = Instant::now() + timeout;
        loop {
            if check(&self.audit()) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}; audit so far: {} deleted, {} skipped, {} failed",
                self.audit().deleted.len(),
                self.audit().skipped.len(),
                self.audit().failed.len()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// How long a whole sweep of the candidates may take at the rate limit, with room for a
    /// loaded machine (and for a controller that spends two requests on a deletion).
    pub fn sweep_timeout(&self) -> Duration {
        let per_sec = (f64::from(self.qps) / 2.0).max(1.0);
        Duration::from_secs_f64(self.candidates() as f64 / per_sec * 3.0 + 120.0)
    }

    /// Waits until the policy's status reports `governed` objects: the controller (or the new
    /// leader) has listed and evaluated. A sweep requested before that would be taken for one
    /// already handled.
    pub async fn wait_governed(&self, governed: usize, timeout: Duration) -> Value {
        let api = policies(&self.bed);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(p) = api.get(POLICY).await {
                if p.data["status"]["summary"]["governed"].as_u64() == Some(governed as u64) {
                    return p.data["status"].clone();
                }
                let not_ready = p.data["status"]["conditions"].as_array().and_then(|cs| {
                    cs.iter()
                        .find(|c| c["type"] == "Ready" && c["status"] == "False")
                        .cloned()
                });
                assert!(
                    not_ready.is_none(),
                    "the policy is not Ready: {not_ready:?}"
                );
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for status to show {governed} governed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the policy's status counts as governed exactly the Jobs present now. Both
    /// sides are read again on every round: a new leader resumes a sweep cut short without
    /// being asked, so the Jobs present keep falling while this waits, and a count taken once
    /// would be one the status has already passed.
    pub async fn wait_governed_present(&self, timeout: Duration) {
        let api = policies(&self.bed);
        let deadline = Instant::now() + timeout;
        loop {
            let present = survivors(&self.bed.client, &self.bed.ns).await.len();
            let governed = api
                .get(POLICY)
                .await
                .ok()
                .and_then(|p| p.data["status"]["summary"]["governed"].as_u64());
            if governed == Some(present as u64) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for status to count the Jobs present as governed (last seen: {present} present, status {governed:?})"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Asks for a sweep; returns the lastSweep status before the request.
    pub async fn request_sweep(&self) -> Value {
        let api = policies(&self.bed);
        let before = api.get(POLICY).await.expect("policy").data["status"]["lastSweep"].clone();
        let patch =
            json!({"metadata": {"annotations": {"retainer.dev/sweep-requested": unique("t")}}});
        api.patch(POLICY, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("request a sweep");
        before
    }

    /// Waits for status to record a sweep other than `before`; returns the status.
    pub async fn wait_sweep_recorded(&self, before: &Value, timeout: Duration) -> Value {
        let api = policies(&self.bed);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(p) = api.get(POLICY).await {
                let last = &p.data["status"]["lastSweep"];
                // Without completionTime it is the record of a sweep in progress.
                if !last["completionTime"].is_null() && last != before {
                    return p.data["status"].clone();
                }
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for a sweep to be recorded in status"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    /// Requests a sweep (from a controller that has evaluated the current Jobs) and waits until
    /// status records it. Returns the status.
    pub async fn sweep_to_completion(&self) -> Value {
        self.wait_governed_present(Duration::from_secs(120)).await;
        let before = self.request_sweep().await;
        let status = self
            .wait_sweep_recorded(&before, self.sweep_timeout())
            .await;
        log(format!("sweep recorded: {}", status["lastSweep"]));
        status
    }

    /// Waits until the Jobs left are exactly the expected kept set, without asking for a
    /// sweep; fails after `sweep_timeout`.
    pub async fn wait_done(&self, what: &str) {
        let timeout = self.sweep_timeout();
        let deadline = Instant::now() + timeout;
        while !self.done().await {
            assert!(
                Instant::now() < deadline,
                "timed out after {timeout:?} waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Whether the Jobs left are exactly the expected kept set (by name).
    pub async fn done(&self) -> bool {
        let now = survivors(&self.bed.client, &self.bed.ns).await;
        now.keys().eq(self.expected.iter())
    }

    /// Requests sweeps until the Jobs left are the expected kept set, at most `max` of them;
    /// returns how many it requested. A sweep that a fault made fail in part is complete as
    /// far as the controller knows: the next requested (or scheduled) sweep deletes what it
    /// left. (One cut short, by a kill or a lost lease, is resumed without a request.)
    pub async fn finish(&self, max: usize) -> usize {
        let mut n = 0;
        while n < max && !self.done().await {
            self.sweep_to_completion().await;
            n += 1;
        }
        n
    }

    /// The final check of every scenario: the survivors are exactly the expected kept set (same
    /// uids: nothing recreated), nothing was logged as deleted twice, nothing kept was deleted,
    /// and every deletion the audit logs is one that really happened. Returns the figures.
    pub async fn verify(&self, faults: usize, replicas_killed: usize) -> Figures {
        let now = survivors(&self.bed.client, &self.bed.ns).await;
        let names: BTreeSet<String> = now.keys().cloned().collect();
        let wrongly_deleted: Vec<&String> = self.expected.difference(&names).collect();
        let left_over: Vec<&String> = names.difference(&self.expected).collect();
        assert!(
            wrongly_deleted.is_empty(),
            "{} kept Jobs were deleted: {:?}",
            wrongly_deleted.len(),
            wrongly_deleted.iter().take(20).collect::<Vec<_>>()
        );
        assert!(
            left_over.is_empty(),
            "{} candidates survived: {:?}",
            left_over.len(),
            left_over.iter().take(20).collect::<Vec<_>>()
        );
        for (name, uid) in &now {
            assert_eq!(
                Some(uid),
                self.uids.get(name),
                "{name} is not the Job created"
            );
        }
        let audit = self.audit();
        let mut seen = BTreeSet::new();
        let mut twice = Vec::new();
        for (name, uid) in &audit.deleted {
            if !seen.insert(uid.clone()) {
                twice.push(name.clone());
            }
            assert!(
                !self.expected.contains(name),
                "the audit log says kept Job {name} was deleted"
            );
            assert_eq!(
                self.uids.get(name),
                Some(uid),
                "audit line for {name} names uid {uid}, not the Job created"
            );
        }
        assert!(
            twice.is_empty(),
            "deleted twice by the audit log: {twice:?}"
        );
        let deleted = self.specs.len() - now.len();
        let logged = audit.deleted.len();
        // A deletion the API server carried out but whose answer was lost (the server died
        // after committing it, or the replica was killed before logging it) is in no audit
        // line; there are at most as many as deletes were in flight at each fault.
        let unlogged = deleted - logged;
        assert!(
            unlogged <= DELETE_CONCURRENCY * faults.max(replicas_killed),
            "{unlogged} deletions are in no audit line, more than the {} that could have been in flight",
            DELETE_CONCURRENCY * faults.max(replicas_killed)
        );
        Figures {
            jobs: self.specs.len(),
            kept: self.expected.len(),
            deleted,
            logged,
            unlogged,
            skipped: audit.skipped.len(),
            failed: audit.failed.len(),
            wrongly_deleted: wrongly_deleted.len(),
            deleted_twice: twice.len(),
        }
    }

    /// Deletes what is left of the fleet and the namespace (the bed runs no namespace
    /// controller, so the Jobs would otherwise stay, and every later controller would list them).
    pub async fn cleanup(self) {
        let jobs: Api<Job> = Api::namespaced(self.bed.client.clone(), &self.bed.ns);
        let _ = jobs
            .delete_collection(&DeleteParams::background(), &ListParams::default())
            .await;
        let _ = policies(&self.bed)
            .delete(POLICY, &DeleteParams::default())
            .await;
        self.bed.cleanup().await;
    }

    /// The lease's holder now, if any.
    pub async fn holder(&self) -> Option<String> {
        let leases: Api<Lease> = Api::namespaced(self.bed.client.clone(), &self.bed.ns);
        leases
            .get_opt(&self.lease)
            .await
            .ok()??
            .spec?
            .holder_identity
    }

    /// Waits until `identity` holds the lease; returns how long that took.
    pub async fn wait_holder(&self, identity: &str, timeout: Duration) -> Duration {
        let t = Instant::now();
        loop {
            if self.holder().await.as_deref() == Some(identity) {
                return t.elapsed();
            }
            assert!(
                t.elapsed() < timeout,
                "{identity} did not take the lease within {timeout:?} (holder: {:?})",
                self.holder().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// What a scenario ended with: the figures docs/reliability.md reports.
#[derive(Debug, Default, Clone)]
pub struct Figures {
    pub jobs: usize,
    pub kept: usize,
    /// Jobs gone at the end (all of them candidates).
    pub deleted: usize,
    /// `deleted` audit lines.
    pub logged: usize,
    /// Deleted, but in no audit line (the answer was lost to the fault).
    pub unlogged: usize,
    pub skipped: usize,
    pub failed: usize,
    pub wrongly_deleted: usize,
    pub deleted_twice: usize,
}

impl std::fmt::Display for Figures {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "jobs {} kept {} deleted {} (audit lines {}, answers lost {}), skipped {}, failed {}, wrongly deleted {}, deleted twice {}",
            self.jobs,
            self.kept,
            self.deleted,
            self.logged,
            self.unlogged,
            self.skipped,
            self.failed,
            self.wrongly_deleted,
            self.deleted_twice
        )
    }
}
