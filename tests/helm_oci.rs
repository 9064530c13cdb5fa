//! Helm charts pushed with `helm push` to real registries: olareg (referrers API) and CNCF
//! distribution 2.8 (tag-schema fallback). The example's policy (examples/helm-charts-oci)
//! keeps the newest versions by semver, what a custom resource deploys and what is young, and
//! its storage-pressure variant deletes from the oldest version up until the chart fits.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use support::*;

const DAY: u64 = 86_400;

/// Writes a small chart, packages it with `helm package`, dates the archive `age_days` back
/// (`helm push` records the archive's modification time as the chart's creation time) and
/// pushes it; returns the manifest digest.
fn push_chart(
    work: &Path,
    reg: &str,
    path: &str,
    name: &str,
    version: &str,
    age_days: u64,
) -> String {
    let dir = work.join(format!("{name}-{version}-src")).join(name);
    std::fs::create_dir_all(dir.join("templates")).expect("chart dir");
    std::fs::write(
        dir.join("Chart.yaml"),
        format!("apiVersion: v2\nname: {name}\nversion: {version}\nappVersion: \"app-{version}\"\ntype: application\n"),
    )
    .expect("Chart.yaml");
    std::fs::write(
        dir.join("templates/configmap.yaml"),
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\ndata:\n  version: \"{version}\"\n"),
    )
    .expect("template");
    let out_dir = work.join("packages");
    std::fs::create_dir_all(&out_dir).expect("package dir");
    let out = helm(&[
        "package",
        dir.to_str().expect("utf-8"),
        "-d",
        out_dir.to_str().expect("utf-8"),
    ]);
    assert!(
        out.status.success(),
        "helm package: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tgz = out_dir.join(format!("{name}-{version}.tgz"));
    let created = SystemTime::now() - Duration::from_secs(age_days * DAY);
    std::fs::File::options()
        .write(true)
        .open(&tgz)
        .and_then(|f| f.set_modified(created))
        .expect("date the chart archive");
    let out = helm(&[
        "push",
        tgz.to_str().expect("utf-8"),
        &format!("oci://{reg}/{path}"),
        "--plain-http",
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "helm push: {text}");
    text.lines()
        .find_map(|l| l.strip_prefix("Digest: "))
        .unwrap_or_else(|| panic!("helm push printed no digest: {text}"))
        .trim()
        .to_string()
}

fn workdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(prefix));
    std::fs::create_dir_all(&dir).expect("work dir");
    dir
}

/// A signature of `subject`, as a referrer; without the referrers API also the fallback
/// index a client maintains. Returns the signature's digest.
async fn sign(reg: &str, repo: &str, subject: &str, fallback_index: bool) -> String {
    let sig = push_image(
        reg,
        repo,
        "",
        &unique("sig"),
        "2026-01-01T00:00:00Z",
        Some((subject, 100)),
    )
    .await;
    if fallback_index {
        let index = json!({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sig, "size": 100,
                           "artifactType": "application/vnd.dev.cosign.simplesigning.v1+json"}]});
        push_manifest(
            reg,
            repo,
            &subject.replacen(':', "-", 1),
            "application/vnd.oci.image.index.v1+json",
            &index,
        )
        .await;
    }
    sig
}

/// The example's CRD, installed once per cluster.
async fn install_example_crd(client: &kube::Client) {
    let path = format!(
        "{}/examples/helm-charts-oci/crd.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let crd: CustomResourceDefinition =
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("crd.yaml")).expect("CRD");
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let name = crd.metadata.name.clone().expect("named");
    api.patch(
        &name,
        &PatchParams::apply("retainer-tests").force(),
        &Patch::Apply(&crd),
    )
    .await
    .expect("apply the example CRD");
    wait_for(
        "ChartDeployment established",
        Duration::from_secs(30),
        || async {
            api.get(&name)
                .await
                .ok()?
                .status?
                .conditions?
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
                .then_some(())
        },
    )
    .await;
}

async fn deploy(bed: &Bed, name: &str, chart: &str, version: &str) {
    let gvk = GroupVersionKind::gvk("deploy.example.com", "v1alpha1", "ChartDeployment");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "chartdeployments");
    let api: Api<DynamicObject> = Api::namespaced_with(bed.client.clone(), &bed.ns, &ar);
    let obj = json!({"apiVersion": "deploy.example.com/v1alpha1", "kind": "ChartDeployment",
        "metadata": {"name": name}, "spec": {"chart": chart, "version": version}});
    api.patch(
        name,
        &PatchParams::apply("retainer-tests").force(),
        &Patch::Apply(&obj),
    )
    .await
    .expect("create ChartDeployment");
}

/// An example policy's spec, pointed at this test's registry and repositories.
fn example_spec(file: &str, reg: &str, repositories: &[String]) -> Value {
    let path = format!(
        "{}/examples/helm-charts-oci/{file}",
        env!("CARGO_MANIFEST_DIR")
    );
    let doc: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(path).expect("policy")).expect("YAML");
    let mut spec = doc["spec"].clone();
    spec["target"]["registry"] =
        json!({"url": format!("http://{reg}"), "repositories": repositories});
    spec
}

/// Waits for a summary with `candidates` candidates; fails on Ready=False.
async fn settled(bed: &Bed, name: &str, candidates: i64) -> Value {
    wait_for(
        &format!("{name} to report {candidates} candidates"),
        Duration::from_secs(60),
        || async {
            let p = policies(bed).get(name).await.ok()?;
            let st = &p.data["status"];
            if let Some(c) = st["conditions"]
                .as_array()
                .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
                && c["status"] == "False"
            {
                panic!("Ready=False: {c}");
            }
            (st["summary"]["candidates"].as_i64() == Some(candidates)).then(|| st.clone())
        },
    )
    .await
}

fn chart_tags(all: &BTreeMap<String, String>) -> Vec<String> {
    all.keys()
        .filter(|t| !t.starts_with("sha256-"))
        .cloned()
        .collect()
}

async fn charts_keep_newest_deployed_and_young(which: &str) {
    let bed = setup(&format!("helm-{which}")).await;
    install_example_crd(&bed.client).await;
    let reg = registry(which);
    let path = unique("charts");
    let repo = format!("{path}/web");
    let work = workdir("helm-charts");
    let fallback = which == "distribution";
    let mut digest = BTreeMap::new();
    // 1.3.1 is a young backport: kept by age, though three versions rank above it.
    for (version, age) in [
        ("1.0.0", 60),
        ("1.1.0", 50),
        ("1.2.0", 40),
        ("1.3.0", 30),
        ("1.10.0", 20),
        ("2.0.0", 10),
        ("2.1.0", 9),
        ("1.3.1", 1),
    ] {
        digest.insert(version, push_chart(&work, &reg, &path, "web", version, age));
    }
    // A container image next to the charts: it has no chart metadata and is not governed.
    let image = push_image(
        &reg,
        &repo,
        "tools",
        &unique("img"),
        "2026-01-01T00:00:00Z",
        None,
    )
    .await;
    let doomed_sig = sign(&reg, &repo, &digest["1.2.0"], fallback).await;
    let kept_sig = sign(&reg, &repo, &digest["2.0.0"], fallback).await;
    deploy(&bed, "web", &format!("oci://{reg}/{repo}"), "1.1.0").await;

    // olareg serves no catalog: name the repository there; expand `path/*` elsewhere.
    let pattern = if which == "olareg" {
        repo.clone()
    } else {
        format!("{path}/*")
    };
    apply_policy(
        &bed,
        "charts",
        example_spec("policy.yaml", &reg, &[pattern]),
    )
    .await;
    // 1.0.0, 1.2.0 and 1.3.0, and 1.2.0's signature (and its fallback index).
    let st = settled(&bed, "charts", 4 + i64::from(fallback)).await;
    assert_eq!(
        st["summary"]["governed"],
        8 + 2 * (1 + i64::from(fallback)),
        "{st}"
    );
    let would_free = st["summary"]["bytesFreed"].as_i64().expect("bytesFreed");
    assert!(would_free > 0, "{st}");

    let swept = sweep(&bed, "charts").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    let p = policies(&bed).get("charts").await.unwrap();
    assert_eq!(
        p.data["status"]["lastSweep"]["bytesFreed"].as_i64(),
        Some(would_free),
        "the sweep frees what status said it would: {}",
        p.data["status"]
    );
    assert!(
        swept["message"]
            .as_str()
            .is_some_and(|m| m.contains(&format!("freed {would_free} bytes"))),
        "{swept}"
    );
    let left = tag_digests(&reg, &repo).await;
    assert_eq!(
        chart_tags(&left),
        vec!["1.1.0", "1.10.0", "1.3.1", "2.0.0", "2.1.0", "tools"],
        "exactly 1.0.0, 1.2.0 and 1.3.0 are gone"
    );
    for gone in ["1.0.0", "1.2.0", "1.3.0"] {
        assert!(!exists(&reg, &repo, &digest[gone], None).await, "{gone}");
    }
    assert!(
        !exists(&reg, &repo, &doomed_sig, None).await,
        "a signature goes with its chart version"
    );
    assert!(exists(&reg, &repo, &kept_sig, None).await);
    assert!(exists(&reg, &repo, &image, None).await);
    bed.cleanup().await;
    let _ = std::fs::remove_dir_all(work);
}

#[tokio::test]
async fn olareg_charts_keep_newest_deployed_and_young() {
    charts_keep_newest_deployed_and_young("olareg").await;
}

#[tokio::test]
async fn distribution_charts_keep_newest_deployed_and_young() {
    charts_keep_newest_deployed_and_young("distribution").await;
}

/// Manifest, config and layers of a manifest, as the registry serves them.
async fn artifact_bytes(reg: &str, repo: &str, digest: &str) -> i64 {
    let resp = reqwest::Client::new()
        .get(format!("http://{reg}/v2/{repo}/manifests/{digest}"))
        .header("accept", "application/vnd.oci.image.manifest.v1+json")
        .send()
        .await
        .expect("manifest");
    let body = resp.bytes().await.expect("body");
    let m: Value = serde_json::from_slice(&body).expect("manifest JSON");
    let layers: i64 = m["layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l["size"].as_i64().expect("size"))
        .sum();
    body.len() as i64 + m["config"]["size"].as_i64().expect("config size") + layers
}

async fn storage_pressure(which: &str) {
    let bed = setup(&format!("helm-bytes-{which}")).await;
    install_example_crd(&bed.client).await;
    let reg = registry(which);
    let path = unique("charts");
    let repo = format!("{path}/api");
    let work = workdir("helm-bytes");
    let versions = ["0.1.0", "0.2.0", "0.3.0", "0.4.0", "0.5.0", "0.6.0"];
    let mut sizes = Vec::new();
    let mut digests = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let d = push_chart(&work, &reg, &path, "api", v, 30 - i as u64);
        sizes.push(artifact_bytes(&reg, &repo, &d).await);
        digests.push(d);
    }
    let total: i64 = sizes.iter().sum();
    // Under the threshold once the three oldest are gone, not before: exactly those go.
    let threshold = total - sizes[0] - sizes[1] - sizes[2] + 1;
    let mut spec = example_spec("storage-pressure.yaml", &reg, std::slice::from_ref(&repo));
    spec["keep"] = json!(format!(
        "rank < 1 || referencedBy.size() > 0 || (groupBytes < {threshold} && rank < 20)"
    ));
    apply_policy(&bed, "pressure", spec).await;
    let st = settled(&bed, "pressure", 3).await;
    let freed = sizes[0] + sizes[1] + sizes[2];
    assert_eq!(st["summary"]["bytes"].as_i64(), Some(total), "{st}");
    assert_eq!(st["summary"]["bytesFreed"].as_i64(), Some(freed), "{st}");
    let plan = plan_json(&["pressure", "-n", &bed.ns]).await;
    assert_eq!(
        plan["summary"]["bytesFreed"].as_i64(),
        Some(freed),
        "{plan}"
    );
    let reasons: Vec<&str> = plan["results"]
        .as_array()
        .expect("results")
        .iter()
        .filter(|r| r["verdict"] == "delete")
        .filter_map(|r| r["reason"].as_str())
        .collect();
    assert!(
        reasons
            .iter()
            .any(|r| r.contains(&format!("groupBytes {total})"))),
        "the oldest is decided with the whole group: {reasons:?}"
    );

    let swept = sweep(&bed, "pressure").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    let left = tag_digests(&reg, &repo).await;
    assert_eq!(chart_tags(&left), vec!["0.4.0", "0.5.0", "0.6.0"]);
    let p = policies(&bed).get("pressure").await.unwrap();
    assert_eq!(
        p.data["status"]["lastSweep"]["bytesFreed"].as_i64(),
        Some(freed),
        "{}",
        p.data["status"]
    );
    // Re-evaluated after the sweep: the chart fits, nothing more is a candidate.
    let st = settled(&bed, "pressure", 0).await;
    assert_eq!(st["summary"]["bytes"].as_i64(), Some(total - freed), "{st}");
    bed.cleanup().await;
    let _ = std::fs::remove_dir_all(work);
}

#[tokio::test]
async fn olareg_storage_pressure_deletes_oldest_until_the_chart_fits() {
    storage_pressure("olareg").await;
}

#[tokio::test]
async fn distribution_storage_pressure_deletes_oldest_until_the_chart_fits() {
    storage_pressure("distribution").await;
}
