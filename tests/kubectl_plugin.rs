//! The binary installed as `kubectl-retainer` is a kubectl plugin: the test bed's real kubectl
//! finds it on PATH and runs `kubectl retainer check|plan|explain-verdict`, and what it prints
//! is byte for byte what `retainer check|plan` print. Help names the command as typed.

mod support;

use std::path::PathBuf;
use std::process::Output;

use serde_json::{Value, json};
use support::*;
use tokio::process::Command;

/// A directory on PATH holding only `kubectl-retainer`, a link to the binary under test.
fn plugin_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(unique("retainer-plugin-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_retainer"), dir.join("kubectl-retainer"))
        .expect("symlink kubectl-retainer");
    dir
}

fn path_with(dir: &std::path::Path) -> String {
    format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

async fn kubectl_retainer(dir: &std::path::Path, args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("retainer")
        .args(args)
        .env("PATH", path_with(dir))
        .output()
        .await
        .expect("kubectl on PATH (eval \"$(scripts/testbed.sh env)\")")
}

async fn retainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_retainer"))
        .args(args)
        .output()
        .await
        .expect("run retainer")
}

fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("utf-8 output")
}

#[tokio::test]
async fn kubectl_runs_check_and_help_as_a_plugin() {
    // Needs the test bed only for its kubectl.
    let _bed = Bed::new("plugin-check").await;
    let dir = plugin_dir();
    let root = env!("CARGO_MANIFEST_DIR");
    for example in [
        "fleet-gitjobs",
        "helm-history",
        "finished-jobs",
        "unused-secrets",
        "registry-images",
    ] {
        let policy = format!("{root}/examples/{example}/policy.yaml");
        let objects = format!("{root}/examples/{example}/objects.yaml");
        for format in ["table", "json"] {
            let args = [
                "check",
                "-f",
                &policy,
                "--objects",
                &objects,
                "--now",
                "2026-11-22T12:00:00Z",
                "-o",
                format,
            ];
            let via_kubectl = kubectl_retainer(&dir, &args).await;
            let direct = retainer(&args).await;
            assert_eq!(
                ok("kubectl retainer check", &via_kubectl),
                ok("retainer check", &direct),
                "{example} -o {format}"
            );
        }
    }
    let help = ok(
        "kubectl retainer --help",
        &kubectl_retainer(&dir, &["--help"]).await,
    );
    assert!(help.contains("Usage: kubectl retainer"), "{help}");
    assert!(help.contains("explain-verdict"), "{help}");
    let help = ok(
        "kubectl retainer plan --help",
        &kubectl_retainer(&dir, &["plan", "--help"]).await,
    );
    assert!(help.contains("Usage: kubectl retainer plan"), "{help}");
    // The krew manifest installs this binary under the plugin's name.
    let manifest: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(format!("{root}/plugins/krew/retainer.yaml"))
            .expect("plugins/krew/retainer.yaml"),
    )
    .expect("the krew manifest parses");
    assert_eq!(
        manifest["apiVersion"],
        "krew.googlecontainertools.github.com/v1alpha2"
    );
    assert_eq!(manifest["kind"], "Plugin");
    assert_eq!(manifest["metadata"]["name"], "retainer");
    assert_eq!(
        manifest["spec"]["version"],
        format!("v{}", env!("CARGO_PKG_VERSION"))
    );
    for p in manifest["spec"]["platforms"].as_array().expect("platforms") {
        assert_eq!(p["bin"], "kubectl-retainer");
        assert!(
            p["files"]
                .as_array()
                .expect("files")
                .iter()
                .any(|f| f["from"] == "retainer" && f["to"] == "kubectl-retainer"),
            "{p}"
        );
        assert_eq!(p["sha256"].as_str().map(str::len), Some(64), "{p}");
    }
    // Invoked under its own name, the binary still calls itself retainer.
    let help = ok("retainer --help", &retainer(&["--help"]).await);
    assert!(help.contains("Usage: retainer"), "{help}");
    let _ = std::fs::remove_dir_all(dir);
    _bed.cleanup().await;
}

#[tokio::test]
async fn kubectl_retainer_plan_and_explain_verdict_read_the_cluster() {
    let bed = Bed::new("plugin-live").await;
    install_crds(&bed.client).await;
    let app = json!({"app": "web"});
    for name in ["build-1", "build-2", "build-3"] {
        job(&bed, name, app.clone(), "succeeded").await;
        // creationTimestamp has one-second resolution: keep the order unambiguous.
        tokio::time::sleep(SECOND).await;
    }
    job(&bed, "build-4", app.clone(), "running").await;
    // No controller: plan and explain-verdict read the policy and the Jobs themselves.
    apply_policy(
        &bed,
        "builds",
        json!({"target": {"kind": "Job", "selector": {"matchLabels": {"app": "web"}}},
               "groupBy": "object.metadata.labels['app']",
               "keep": "rank < 2 || object.metadata.name == 'build-1'",
               "schedule": "@daily"}),
    )
    .await;
    let dir = plugin_dir();
    let ns = bed.ns.as_str();

    for format in ["table", "json"] {
        let args = ["plan", "builds", "-n", ns, "-o", format];
        assert_eq!(
            ok(
                "kubectl retainer plan",
                &kubectl_retainer(&dir, &args).await
            ),
            ok("retainer plan", &retainer(&args).await),
            "-o {format}"
        );
    }
    let plan: Value = serde_json::from_str(&ok(
        "retainer plan -o json",
        &retainer(&["plan", "builds", "-n", ns, "-o", "json"]).await,
    ))
    .expect("json");

    // Every Job's explanation agrees with plan's verdict and reason.
    for r in plan["results"].as_array().expect("results") {
        let name = r["name"].as_str().expect("name");
        let object = format!("job/{name}");
        let args = [
            "explain-verdict",
            "builds",
            "-n",
            ns,
            "--object",
            &object,
            "-o",
            "json",
        ];
        let e: Value = serde_json::from_str(&ok(
            "kubectl retainer explain-verdict",
            &kubectl_retainer(&dir, &args).await,
        ))
        .expect("explain-verdict prints JSON");
        assert_eq!(e["result"], *r, "{name}: {e:#}");
    }

    // The oldest finished one: kept by its name term, ranked last of the four.
    let text = ok(
        "kubectl retainer explain-verdict",
        &kubectl_retainer(
            &dir,
            &[
                "explain-verdict",
                "builds",
                "-n",
                ns,
                "--object",
                "job/build-1",
            ],
        )
        .await,
    );
    for want in [
        format!("policy:       {ns}/builds\n"),
        format!("object:       Job {ns}/build-1\n"),
        "verdict:      keep\n".into(),
        "reason:       keep: object.metadata.name == 'build-1'\n".into(),
        "group:        \"web\"\n".into(),
        "rank:         3 (0 is the newest or highest)\n".into(),
        "groupSize:    4\n".into(),
        "held term:    object.metadata.name == 'build-1'\n".into(),
        "guard:        none applies\n".into(),
    ] {
        assert!(text.contains(&want), "missing {want:?} in\n{text}");
    }
    // build-2: a candidate, no term held.
    let e: Value = serde_json::from_str(&ok(
        "explain-verdict build-2",
        &kubectl_retainer(
            &dir,
            &[
                "explain-verdict",
                "builds",
                "-n",
                ns,
                "--object",
                "build-2",
                "-o",
                "json",
            ],
        )
        .await,
    ))
    .expect("json");
    assert_eq!(e["result"]["verdict"], "delete", "{e:#}");
    assert_eq!(
        (e["rank"].as_i64(), e["groupSize"].as_i64()),
        (Some(2), Some(4))
    );
    assert!(e["ageSeconds"].as_u64().is_some_and(|a| a < 600), "{e:#}");
    assert!(e.get("heldTerm").is_none(), "{e:#}");
    // The running one: a guard.
    let e: Value = serde_json::from_str(&ok(
        "explain-verdict build-4",
        &retainer(&[
            "explain-verdict",
            "builds",
            "-n",
            ns,
            "--object",
            "job/build-4",
            "-o",
            "json",
        ])
        .await,
    ))
    .expect("json");
    assert_eq!(e["guard"], "guard: job has not finished", "{e:#}");

    // Not there, or the wrong kind: exit 1 with the reason.
    for (object, says) in [("job/nope", "no Job"), ("secret/build-1", "governs Jobs")] {
        let out = kubectl_retainer(
            &dir,
            &["explain-verdict", "builds", "-n", ns, "--object", object],
        )
        .await;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(says),
            "{object}: {err}"
        );
    }
    let _ = std::fs::remove_dir_all(dir);
    bed.cleanup().await;
}

#[tokio::test]
async fn explain_verdict_names_oci_artifacts_by_tag_and_digest() {
    let bed = Bed::new("plugin-oci").await;
    let reg = registry("olareg");
    let repo = unique("plugin/app");
    let old = push_image(
        &reg,
        &repo,
        "1.0.0",
        &unique("a"),
        "2026-01-01T00:00:00Z",
        None,
    )
    .await;
    let new = push_image(
        &reg,
        &repo,
        "2.0.0",
        &unique("b"),
        "2026-02-01T00:00:00Z",
        None,
    )
    .await;
    let dir = plugin_dir();
    let policy = dir.join("policy.yaml");
    std::fs::write(
        &policy,
        format!(
            "apiVersion: retainer.dev/v1alpha1\nkind: RetentionPolicy\nmetadata: {{name: images, namespace: {}}}\nspec:\n  target: {{kind: OCIArtifact, registry: {{url: 'http://{reg}', repositories: ['{repo}']}}}}\n  keep: 'rank < 1'\n  schedule: '@daily'\n",
            bed.ns
        ),
    )
    .expect("write policy");
    let policy = policy.to_str().expect("utf-8 path");
    let plan: Value = serde_json::from_str(&ok(
        "kubectl retainer plan -f",
        &kubectl_retainer(&dir, &["plan", "-f", policy, "-o", "json"]).await,
    ))
    .expect("json");
    let by_digest = |d: &str| {
        plan["results"]
            .as_array()
            .expect("results")
            .iter()
            .find(|r| r["digest"] == d)
            .cloned()
            .unwrap_or_else(|| panic!("{d} not in {plan:#}"))
    };
    for (how, which, digest, verdict, rank) in [
        ("--tag", "1.0.0", &old, "delete", 1),
        ("--digest", new.as_str(), &new, "keep", 0),
    ] {
        let e: Value = serde_json::from_str(&ok(
            "kubectl retainer explain-verdict (OCI)",
            &kubectl_retainer(
                &dir,
                &["explain-verdict", "-f", policy, how, which, "-o", "json"],
            )
            .await,
        ))
        .expect("json");
        assert_eq!(e["result"], by_digest(digest), "{e:#}");
        assert_eq!(e["result"]["verdict"], verdict, "{e:#}");
        assert_eq!(e["group"], json!(repo), "{e:#}");
        assert_eq!(
            (e["rank"].as_i64(), e["groupSize"].as_i64()),
            (Some(rank), Some(2))
        );
    }
    // Naming a Job under an OCI policy is refused with what to use instead.
    let out = kubectl_retainer(&dir, &["explain-verdict", "-f", policy, "--object", "x"]).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--digest or --tag"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
    bed.cleanup().await;
}
