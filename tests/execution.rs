//! The execution model (docs/execution.md) against the test bed, with the controller as the real
//! binary: no policy waits for another (a registry that never answers, a sweep held to
//! `--delete-qps 10`), SIGTERM ends the process within 5 s whatever it is doing, a sweep cut
//! short is finished by the next controller without a request, and grace-period marks survive
//! a restart.
//!
//! Every test here starts its own controllers for this process's policies, so they run one at
//! a time.

mod fault;
mod support;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};
use tokio::process::{Child, Command};

use fault::{Scenario, survivors};
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How soon a policy must be Ready, whatever else the controller is busy with.
const REACTION: Duration = Duration::from_secs(2);
/// How soon the process must be gone after SIGTERM.
const EXIT: Duration = Duration::from_secs(5);

/// `retainer run` for this process's policies, logging to a fresh file.
fn spawn(name: &str, extra: &[&str]) -> (Child, PathBuf) {
    let log = std::env::temp_dir().join(unique(&format!("retainer-exec-{name}-")));
    let selector = owner_selector();
    let child = Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args([
            "run",
            "--policy-selector",
            &selector,
            "--metrics-addr",
            "127.0.0.1:0",
            "--debounce",
            "200ms",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start retainer run");
    (child, log)
}

/// SIGTERM, then how long the process took to exit; fails the test after `EXIT`.
async fn terminate(child: &mut Child) -> Duration {
    let pid = child.id().expect("running").to_string();
    let t = Instant::now();
    let status = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .expect("run kill");
    assert!(status.success());
    tokio::time::timeout(EXIT, child.wait())
        .await
        .unwrap_or_else(|_| panic!("the controller did not exit within {EXIT:?} of SIGTERM"))
        .expect("wait for the controller");
    t.elapsed()
}

/// Waits until the policy's Ready condition describes its current generation; returns how
/// long that took.
async fn ready_within(bed: &Bed, name: &str, limit: Duration) -> Duration {
    let api = policies(bed);
    let t = Instant::now();
    wait_for(&format!("{name} Ready"), limit, || async {
        let p = api.get(name).await.ok()?;
        let c = p.data["status"]["conditions"]
            .as_array()?
            .iter()
            .find(|c| c["type"] == "Ready")?
            .clone();
        (c["observedGeneration"].as_i64() == p.metadata.generation).then_some(())
    })
    .await;
    t.elapsed()
}

fn jobs_spec(keep: &str) -> Value {
    json!({"target": {"kind": "Job"}, "keep": keep, "schedule": "0 0 29 2 *"})
}

/// Accepts connections and never answers them: a registry that hangs.
fn hanging_registry() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    addr
}

#[tokio::test]
async fn a_hanging_registry_holds_no_other_policy_and_sigterm_is_prompt() {
    let _serial = SERIAL.lock().await;
    let bed = setup_without_controller("exec-hang").await;
    let (mut child, _log) = spawn("hang", &["--registry-timeout", "30s"]);
    let registry = hanging_registry();
    apply_policy(
        &bed,
        "hanging",
        json!({"target": {"kind": "OCIArtifact",
                          "registry": {"url": format!("http://{registry}"), "repositories": ["team/app"]}},
               "keep": "false", "schedule": "0 0 29 2 *"}),
    )
    .await;
    apply_policy(&bed, "third", jobs_spec("true")).await;
    // Before the first reaction is measured, the controller has listed and the registry read
    // is hanging.
    ready_within(&bed, "third", Duration::from_secs(30)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    apply_policy(&bed, "other", jobs_spec("true")).await;
    let took = ready_within(&bed, "other", REACTION).await;
    eprintln!("a new policy was Ready {took:?} after apply, with a registry hanging");
    apply_policy(&bed, "third", jobs_spec("false")).await;
    let took = ready_within(&bed, "third", REACTION).await;
    eprintln!("an edit was observed {took:?} after apply, with a registry hanging");

    let p = policies(&bed).get("hanging").await.expect("policy");
    assert!(
        p.data["status"]["summary"].is_null(),
        "nothing read, nothing evaluated: {}",
        p.data["status"]
    );
    let took = terminate(&mut child).await;
    eprintln!("exited {took:?} after SIGTERM with a registry read hanging");
    bed.cleanup().await;
}

#[tokio::test]
async fn a_long_sweep_holds_no_other_policy_sigterm_stops_it_and_the_next_controller_resumes() {
    let _serial = SERIAL.lock().await;
    let mut s = Scenario::new("exec-sweep", 1_000, 10).await;
    let mut first = s.spawn("first", None);
    s.wait_governed(1_000, Duration::from_secs(120)).await;
    s.request_sweep().await;
    s.wait_audit("the sweep to be under way", Duration::from_secs(60), |a| {
        a.deleted.len() >= 20
    })
    .await;

    apply_policy(&s.bed, "other", jobs_spec("true")).await;
    let took = ready_within(&s.bed, "other", REACTION).await;
    eprintln!("a new policy was Ready {took:?} after apply, during a sweep at 10 deletes/s");

    let took = terminate(&mut first.child).await;
    let at_exit = s.audit().deleted.len();
    eprintln!("exited {took:?} after SIGTERM, {at_exit} deleted");
    assert!(
        at_exit < s.candidates(),
        "the sweep was cut short: {at_exit} of {}",
        s.candidates()
    );
    let status = policies(&s.bed)
        .get(fault::POLICY)
        .await
        .expect("policy")
        .data["status"]
        .clone();
    let swept = swept_condition(&json!({"status": status})).expect("a Swept condition");
    assert_eq!(swept["reason"], "Interrupted", "{swept}");
    let message = swept["message"].as_str().unwrap_or("");
    assert!(
        message.contains("shutting down") && message.contains("resumes"),
        "{message}"
    );
    assert!(
        status["lastSweep"]["completionTime"].is_null(),
        "{}",
        status["lastSweep"]
    );

    // Unasked, the next controller finishes the sweep, with fresh verdicts.
    let mut second = s.spawn_with_qps("second", None, 500);
    s.wait_done("the next controller to finish the interrupted sweep")
        .await;
    let figures = s.verify(0, 1).await;
    eprintln!("{figures}");
    let swept = wait_for(
        "the resumed sweep in status",
        Duration::from_secs(30),
        || async {
            let p = policies(&s.bed).get(fault::POLICY).await.ok()?;
            let c = swept_condition(&p.data)?;
            (c["reason"] == "Completed").then_some(c)
        },
    )
    .await;
    assert!(
        swept["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("resumed an interrupted sweep"),
        "{swept}"
    );
    second.sigkill().await;
    s.cleanup().await;
}

#[tokio::test]
async fn grace_marks_survive_a_restart() {
    let _serial = SERIAL.lock().await;
    let bed = setup_without_controller("exec-grace").await;
    job(&bed, "j1", json!({}), "succeeded").await;
    job(&bed, "j2", json!({}), "succeeded").await;
    let (mut a, _log) = spawn("grace-a", &[]);
    apply_policy(
        &bed,
        "grace",
        json!({"target": {"kind": "Job"}, "keep": "'stay' in object.metadata.labels",
               "schedule": "0 0 29 2 *", "deletion": {"gracePeriod": "20s"}}),
    )
    .await;
    summary(&bed, "grace", 2).await;
    let swept = sweep(&bed, "grace").await;
    assert!(
        swept["message"]
            .as_str()
            .unwrap_or("")
            .contains("2 marked, waiting for their grace period"),
        "{swept}"
    );
    let p = policies(&bed).get("grace").await.expect("policy");
    let marked: jiff::Timestamp = p.data["status"]["gracePeriodMarks"][0]["markedAt"]
        .as_str()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("marks in status: {}", p.data["status"]));
    terminate(&mut a).await;

    // j2 stops being a candidate while no controller runs: its mark must not count.
    let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> =
        kube::Api::namespaced(bed.client.clone(), &bed.ns);
    jobs.patch(
        "j2",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"stay": "yes"}}})),
    )
    .await
    .expect("label j2");
    let (mut b, _log) = spawn("grace-b", &[]);
    wait_for(
        "the new controller's evaluation",
        Duration::from_secs(30),
        || async {
            let p = policies(&bed).get("grace").await.ok()?;
            (p.data["status"]["summary"]["candidates"] == 1).then_some(())
        },
    )
    .await;
    let due = marked + jiff::SignedDuration::from_secs(21);
    let wait = due.duration_since(jiff::Timestamp::now());
    if wait.is_positive() {
        tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    }
    // Counted from the mark made before the restart: deleted now, not 20 s from now.
    let swept = sweep(&bed, "grace").await;
    assert!(
        swept["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("deleted 1,"),
        "{swept}"
    );
    let left: Vec<String> = survivors(&bed.client, &bed.ns).await.into_keys().collect();
    assert_eq!(left, vec!["j2".to_string()]);
    terminate(&mut b).await;
    bed.cleanup().await;
}

#[tokio::test]
async fn an_edit_stops_a_running_sweep_which_resumes_with_the_new_spec() {
    let _serial = SERIAL.lock().await;
    let mut s = Scenario::new("exec-edit", 600, 10).await;
    let mut c = s.spawn("edit", None);
    s.wait_governed(600, Duration::from_secs(120)).await;
    s.request_sweep().await;
    s.wait_audit("the sweep to be under way", Duration::from_secs(60), |a| {
        a.deleted.len() >= 10
    })
    .await;
    // A new generation with the same verdicts: the sweep stops, then resumes from a fresh
    // evaluation of the new spec.
    let mut spec = fault::policy_spec();
    spec["timeZone"] = json!("UTC");
    apply_policy(&s.bed, fault::POLICY, spec).await;
    let swept = wait_for("the sweep to stop", Duration::from_secs(10), || async {
        let p = policies(&s.bed).get(fault::POLICY).await.ok()?;
        let c = swept_condition(&p.data)?;
        (c["reason"] == "Interrupted").then_some(c)
    })
    .await;
    assert!(
        swept["message"]
            .as_str()
            .unwrap_or("")
            .contains("interrupted by an edit of the policy"),
        "{swept}"
    );
    s.wait_done("the resumed sweep to finish").await;
    let figures = s.verify(0, 0).await;
    eprintln!("{figures}");
    let swept = wait_for(
        "the resumed sweep in status",
        Duration::from_secs(30),
        || async {
            let p = policies(&s.bed).get(fault::POLICY).await.ok()?;
            let c = swept_condition(&p.data)?;
            (c["reason"] == "Completed").then_some(c)
        },
    )
    .await;
    assert!(
        swept["message"]
            .as_str()
            .unwrap_or("")
            .starts_with("resumed an interrupted sweep"),
        "{swept}"
    );
    c.sigkill().await;
    s.cleanup().await;
}
