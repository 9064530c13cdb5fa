//! GitOps tools (Flux, Argo CD's kstatus checks, kpt, cli-utils' applier) judge health with
//! kstatus. tools/kstatus runs sigs.k8s.io/cli-utils' own `status.Compute` on policies read
//! from a real API server, with a real controller: a Ready policy whose generation was observed
//! is Current, a policy edited while no controller runs is InProgress, an invalid one is Failed
//! (through its Stalled condition), and fixing it makes it Current again.

mod support;

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};

/// kstatus of the policy as the API server returns it now: (status, message).
async fn kstatus(bed: &Bed, name: &str) -> (String, String) {
    let obj = policies(bed).get(name).await.expect("get policy");
    let text = serde_json::to_vec(&obj).expect("json");
    let mut child = Command::new("kstatus")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kstatus on PATH: scripts/testbed.sh build builds it; eval \"$(scripts/testbed.sh env)\" puts it on PATH");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(&text).await.expect("write stdin");
    drop(stdin);
    let out = child.wait_with_output().await.expect("kstatus");
    assert!(
        out.status.success(),
        "kstatus: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("kstatus prints JSON");
    (
        v["status"].as_str().unwrap_or_default().to_string(),
        v["message"].as_str().unwrap_or_default().to_string(),
    )
}

async fn wait_kstatus(bed: &Bed, name: &str, want: &str) -> String {
    wait_for(
        &format!("kstatus {want} for {name}"),
        Duration::from_secs(30),
        || async {
            let (status, message) = kstatus(bed, name).await;
            (status == want).then_some(message)
        },
    )
    .await
}

fn start_controller() -> Child {
    Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--debounce",
            "200ms",
            "--policy-selector",
            &owner_selector(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start retainer run")
}

fn spec(schedule: &str) -> Value {
    json!({"target": {"kind": "Job", "selector": {"matchLabels": {"app": "k"}}},
           "keep": "rank < 1", "schedule": schedule})
}

#[tokio::test]
async fn policies_read_as_gitops_tools_expect() {
    let bed = Bed::new("kstatus").await;
    install_crds(&bed.client).await;
    job(&bed, "j1", json!({"app": "k"}), "succeeded").await;

    let mut controller = start_controller();
    apply_policy(&bed, "good", spec("@daily")).await;
    ready(&bed, "good").await;
    let message = wait_kstatus(&bed, "good", "Current").await;
    assert_eq!(message, "Resource is Ready");

    // Edited while no controller runs: the new generation is not observed yet.
    controller.kill().await.expect("stop the controller");
    apply_policy(&bed, "good", spec("@hourly")).await;
    let (status, message) = kstatus(&bed, "good").await;
    assert_eq!(status, "InProgress", "{message}");
    assert!(
        message.contains("generation is 2, but latest observed generation is 1"),
        "{message}"
    );

    // An invalid schedule: Ready=False with Stalled=True, which kstatus calls Failed. Applied
    // while the controller is down, so the first status it writes is the stalled one.
    apply_policy(&bed, "broken", spec("@fortnightly")).await;
    let _controller = start_controller();
    let message = wait_kstatus(&bed, "good", "Current").await;
    assert_eq!(message, "Resource is Ready");
    let message = wait_kstatus(&bed, "broken", "Failed").await;
    assert!(message.contains("spec.schedule"), "{message}");
    let p = policies(&bed).get("broken").await.expect("get");
    let conditions = p.data["status"]["conditions"]
        .as_array()
        .expect("conditions");
    let of = |t: &str| conditions.iter().find(|c| c["type"] == t).cloned();
    let (ready_c, stalled) = (of("Ready").expect("Ready"), of("Stalled").expect("Stalled"));
    assert_eq!(
        (&ready_c["status"], &stalled["status"]),
        (&json!("False"), &json!("True"))
    );
    assert_eq!(stalled["reason"], "InvalidSchedule");

    // Fixed: Current, and the Stalled condition is gone.
    apply_policy(&bed, "broken", spec("@daily")).await;
    wait_kstatus(&bed, "broken", "Current").await;
    let p = policies(&bed).get("broken").await.expect("get");
    assert!(
        !p.data["status"]["conditions"]
            .as_array()
            .expect("conditions")
            .iter()
            .any(|c| c["type"] == "Stalled"),
        "{:#}",
        p.data["status"]
    );
    bed.cleanup().await;
}
