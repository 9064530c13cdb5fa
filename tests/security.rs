//! A planted Secret value must never come out of retainer: not in its logs (at trace level),
//! not in Events, not in a policy's status, not in metrics, and not in what `check` and `plan`
//! print. The Secret is governed, planned, swept and deleted by a real controller process, and
//! it carries the value three ways: in `data`, in `stringData` at creation, and in kubectl's
//! last-applied annotation, which holds the whole object.

mod support;

use std::process::Stdio;
use std::time::Duration;

use base64::Engine;
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{DynamicObject, ListParams};
use serde_json::{Value, json};
use support::*;
use tokio::process::Command;

#[tokio::test]
async fn a_planted_secret_value_never_appears_in_any_output() {
    // Not `setup`: that starts this process's shared in-process controller, which would race
    // the binary below for the same policy. Only the binary may govern it, so that its log is
    // the one that names what it deleted.
    let bed = Bed::new("sec").await;
    install_crds(&bed.client).await;
    let canary = format!("canary-{}", unique("v"));
    let b64 = base64::engine::general_purpose::STANDARD.encode(&canary);
    let dir = std::env::temp_dir().join(unique("retainer-security-"));
    std::fs::create_dir_all(&dir).expect("temp dir");

    // kubectl's client-side apply records the whole Secret, value included, in an annotation.
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "type": "helm.sh/release.v1",
        "metadata": {"name": "sh.helm.release.v1.app.v1", "namespace": bed.ns,
                     "labels": {"owner": "helm", "name": "app"}},
        "stringData": {"release": canary}});
    let file = dir.join("secret.json");
    std::fs::write(&file, serde_json::to_vec(&secret).expect("json")).expect("write");
    let out = Command::new("kubectl")
        .args(["apply", "-f", file.to_str().expect("utf-8 path")])
        .output()
        .await
        .expect("kubectl on PATH (eval \"$(scripts/testbed.sh env)\")");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secrets: Api<Secret> = Api::namespaced(bed.client.clone(), &bed.ns);
    let stored = secrets
        .get("sh.helm.release.v1.app.v1")
        .await
        .expect("secret");
    let stored_json = serde_json::to_string(&stored).expect("json");
    assert!(
        stored_json.contains(&b64) && stored_json.contains(&canary),
        "the planted Secret holds the value in data and in the last-applied annotation"
    );

    let spec = json!({"target": {"kind": "Secret", "selector": {"matchLabels": {"owner": "helm"}}},
        "schedule": "0 0 29 2 *", "keep": "false"});
    let policy_file = dir.join("policy.yaml");
    std::fs::write(
        &policy_file,
        format!(
            "apiVersion: retainer.dev/v1alpha1\nkind: RetentionPolicy\nmetadata: {{name: secrets, namespace: {}}}\nspec: {}\n",
            bed.ns, spec
        ),
    )
    .expect("write policy");

    let mut outputs: Vec<(String, String)> = Vec::new();
    // check, from a file holding the whole Secret as `kubectl get -o yaml` prints it.
    let objects = dir.join("objects.json");
    std::fs::write(&objects, &stored_json).expect("write objects");
    for format in ["table", "json"] {
        let out = run_cli(&[
            "check",
            "-f",
            policy_file.to_str().expect("utf-8"),
            "--objects",
            objects.to_str().expect("utf-8"),
            "-o",
            format,
        ])
        .await;
        assert!(out.contains("sh.helm.release.v1.app.v1"), "{out}");
        outputs.push((format!("check -o {format}"), out));
    }
    // plan, live.
    for format in ["table", "json"] {
        let out = run_cli(&[
            "plan",
            "-f",
            policy_file.to_str().expect("utf-8"),
            "-o",
            format,
        ])
        .await;
        assert!(out.contains("sh.helm.release.v1.app.v1"), "{out}");
        outputs.push((format!("plan -o {format}"), out));
    }

    // The controller, logging everything it can, governs and sweeps the Secret.
    let log = dir.join("retainer.log");
    let mut child = Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args([
            "run",
            "--metrics-addr",
            "127.0.0.1:0",
            "--debounce",
            "200ms",
            "--policy-selector",
            &owner_selector(),
        ])
        .env("RUST_LOG", "trace")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start retainer run");
    apply_policy(&bed, "secrets", spec).await;
    let status = summary(&bed, "secrets", 1).await;
    assert_eq!(status["summary"]["candidates"], 1, "{status}");
    let metrics_addr = wait_for("the metrics address", Duration::from_secs(20), || async {
        std::fs::read_to_string(&log).ok()?.lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "serving /metrics, /healthz and /readyz")
                .then(|| v["fields"]["addr"].as_str().map(String::from))
                .flatten()
        })
    })
    .await;
    let swept = sweep(&bed, "secrets").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    wait_for(
        "the Secret to be deleted",
        Duration::from_secs(20),
        || async {
            secrets
                .get_opt("sh.helm.release.v1.app.v1")
                .await
                .ok()
                .flatten()
                .is_none()
                .then_some(())
        },
    )
    .await;
    let metrics = reqwest::get(format!("http://{metrics_addr}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    outputs.push(("metrics".into(), metrics));
    let policy = policies(&bed).get("secrets").await.expect("policy");
    outputs.push((
        "policy status".into(),
        serde_json::to_string(&policy.data["status"]).expect("json"),
    ));
    for (group, version, plural) in [("", "v1", "events"), ("events.k8s.io", "v1", "events")] {
        let ar = kube::api::ApiResource {
            group: group.into(),
            version: version.into(),
            api_version: if group.is_empty() {
                version.into()
            } else {
                format!("{group}/{version}")
            },
            kind: "Event".into(),
            plural: plural.into(),
        };
        let events: Api<DynamicObject> = Api::namespaced_with(bed.client.clone(), &bed.ns, &ar);
        let list = events.list(&ListParams::default()).await.expect("events");
        assert!(
            !list.items.is_empty(),
            "the sweep left Events in {}",
            ar.api_version
        );
        outputs.push((
            format!("events ({})", ar.api_version),
            serde_json::to_string(&list.items).expect("json"),
        ));
    }
    child.kill().await.expect("stop the controller");
    let logs = std::fs::read_to_string(&log).expect("log");
    assert!(
        logs.contains("sh.helm.release.v1.app.v1"),
        "the trace log names the Secret it deleted"
    );
    outputs.push(("controller log at trace level".into(), logs));

    for (what, text) in &outputs {
        assert!(
            !text.contains(&canary) && !text.contains(&b64),
            "the Secret's value leaked into {what}"
        );
    }
    eprintln!(
        "security: the planted value is absent from {} outputs: {}",
        outputs.len(),
        outputs
            .iter()
            .map(|(w, _)| w.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    bed.cleanup().await;
}

async fn run_cli(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args(args)
        .output()
        .await
        .expect("run retainer");
    assert!(
        out.status.success(),
        "retainer {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
