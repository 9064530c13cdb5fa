//! Every example gives the verdicts its comment promises, through the same code `retainer
//! check` runs; and `crds/` is exactly what `retainer crds` prints.

use retainer::check;
use retainer::engine::{CompiledPolicy, ObjectId, Verdict};

const NOW: &str = "2026-11-22T12:00:00Z";

fn deleted(example: &str) -> (Vec<String>, retainer::engine::Counts) {
    deleted_by(example, "policy.yaml")
}

fn deleted_by(example: &str, policy_file: &str) -> (Vec<String>, retainer::engine::Counts) {
    let dir = format!("{}/examples/{example}", env!("CARGO_MANIFEST_DIR"));
    let policy_path = format!("{dir}/{policy_file}");
    let objects_path = format!("{dir}/objects.yaml");
    let policy_docs = check::parse_documents(
        &policy_path,
        &std::fs::read_to_string(&policy_path).unwrap(),
    )
    .unwrap();
    let view = check::policy_from_document(&policy_path, &policy_docs[0]).unwrap();
    let policy = CompiledPolicy::compile(view).unwrap_or_else(|e| panic!("{example}: {e}"));
    let objects = check::parse_documents(
        &objects_path,
        &std::fs::read_to_string(&objects_path).unwrap(),
    )
    .unwrap();
    let eval = check::evaluate_offline(&policy, objects, NOW.parse().unwrap());
    let json = check::render_json(&policy, &eval);
    // The same objects as one JSON List, which check reads pruned to what the policy needs.
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": check::parse_documents(
        &objects_path,
        &std::fs::read_to_string(&objects_path).unwrap(),
    )
    .unwrap()});
    let from_json = check::read_objects(&policy, "objects.json", &list.to_string())
        .unwrap()
        .evaluate(&policy, NOW.parse().unwrap());
    assert_eq!(
        from_json, eval,
        "{example}: JSON input evaluates as YAML input"
    );
    assert!(
        !json.contains("aHVudGVyMg=="),
        "{example}: Secret data leaked into output"
    );
    let report: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        report["summary"].get("bytesFreed").is_some(),
        policy.target == retainer::api::TargetKind::OciArtifact,
        "{example}: check -o json gives bytes freed for OCI policies only"
    );
    let names = eval
        .results
        .iter()
        .filter(|r| r.verdict == Verdict::Delete)
        .map(|r| match &r.id {
            ObjectId::Kube {
                namespace, name, ..
            } => format!("{namespace}/{name}"),
            ObjectId::Oci {
                repository, tags, ..
            } => format!("{repository}:{}", tags.join(",")),
        })
        .collect();
    (names, eval.summary)
}

#[test]
fn fleet_gitjobs() {
    let (d, s) = deleted("fleet-gitjobs");
    assert_eq!(
        d,
        vec!["fleet-local/gitjob-app-1", "fleet-local/gitjob-app-2"]
    );
    assert_eq!((s.governed, s.kept, s.errors), (4, 2, 0));
}

#[test]
fn helm_history() {
    let (d, _) = deleted("helm-history");
    assert_eq!(
        d,
        vec![
            "apps/sh.helm.release.v1.web.v1",
            "apps/sh.helm.release.v1.web.v2"
        ]
    );
}

#[test]
fn finished_jobs() {
    let (d, s) = deleted("finished-jobs");
    assert_eq!(d, vec!["team-a/nightly-report"]);
    assert_eq!(s.governed, 4, "kube-system is not selected");
}

#[test]
fn helm_charts_oci() {
    let (d, s) = deleted("helm-charts-oci");
    // 2.1.0-rc.1, 2.0.0 and 1.10.0 are the newest by semver; a ChartDeployment deploys 1.1.0;
    // 1.2.0's provenance goes with it; the image in charts/web-tools is not a chart.
    assert_eq!(
        d,
        vec![
            "charts/web:1.0.0",
            "charts/web:1.2.0",
            "charts/web:1.3.0",
            "charts/web:"
        ]
    );
    assert_eq!((s.governed, s.kept, s.errors), (10, 6, 0));
    assert_eq!(s.bytes_freed, Some(17862));

    let (d, s) = deleted_by("helm-charts-oci", "storage-pressure.yaml");
    assert_eq!(
        d,
        vec![
            "charts/web:1.0.0",
            "charts/web:1.2.0",
            "charts/web:1.3.0",
            "charts/web:1.10.0",
            "charts/web:2.0.0",
            "charts/web:"
        ],
        "charts/web shrinks from 40902 bytes until under 16 KiB; charts/api is under it"
    );
    assert_eq!((s.bytes, s.bytes_freed), (Some(2051042), Some(29482)));
}

#[test]
fn unused_secrets() {
    let (d, _) = deleted("unused-secrets");
    assert_eq!(d, vec!["team-a/old-token"]);
}

#[test]
fn registry_images() {
    let (d, _) = deleted("registry-images");
    let sig = format!("team/app:sha256-{}.sig", "1".repeat(64));
    assert_eq!(
        d,
        vec![
            "team/app:1.0.0".to_string(),
            "team/app:1.2.0".to_string(),
            sig
        ]
    );
}

#[test]
fn crds_directory_matches_generated_output() {
    let path = format!("{}/crds/retainer.dev.yaml", env!("CARGO_MANIFEST_DIR"));
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(
        on_disk == retainer::api::crds_yaml(),
        "crds/ has drifted from the types: run `cargo run -- crds > crds/retainer.dev.yaml`"
    );
}

/// `retainer check` refuses a policy whose expression kube-apiserver's type checker refuses:
/// exit status 1 and the position and cel-go's wording on stderr.
#[test]
fn check_exits_1_on_an_ill_typed_expression() {
    let dir = std::env::temp_dir().join(format!("retainer-types-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let policy = std::fs::read_to_string(format!("{root}/examples/finished-jobs/policy.yaml"))
        .unwrap()
        .replace(
            "keep: \"age < duration('24h')\"",
            "keep: \"age > 5 || rank < 1\"",
        );
    assert!(
        policy.contains("age > 5"),
        "the example's keep line changed"
    );
    let policy_path = dir.join("policy.yaml");
    std::fs::write(&policy_path, policy).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_retainer"))
        .arg("check")
        .arg("-f")
        .arg(&policy_path)
        .arg("--objects")
        .arg(format!("{root}/examples/finished-jobs/objects.yaml"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(
            "spec.keep: found no matching overload for '_>_' applied to '(google.protobuf.Duration, int)' at line 1, column 5"
        ),
        "{stderr}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
