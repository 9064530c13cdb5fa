//! The chart's Grafana dashboard and PrometheusRule ask only for what the controller exports:
//! every metric their PromQL names is in a real controller's `/metrics`, and every label they
//! match on is one that metric carries. The controller runs against the test bed with a policy
//! whose sweep is blocked by abortAbovePercent, one whose sweep deletes and one reading a
//! registry: a family has no series, and is not in the exposition, until first used.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use support::*;
use tokio::process::Command;

/// Every PromQL expression of the rendered dashboard and rules, with where it came from.
fn expressions(docs: &[Value]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap" && d["metadata"]["labels"]["grafana_dashboard"] == "1")
        .expect("the dashboard ConfigMap, with the sidecar's label");
    let dashboard: Value = serde_json::from_str(
        cm["data"]["retainer.json"]
            .as_str()
            .expect("data.retainer.json"),
    )
    .expect("the dashboard is JSON");
    for p in dashboard["panels"].as_array().expect("panels") {
        for t in p["targets"].as_array().expect("targets") {
            out.push((
                format!("panel {:?}", p["title"]),
                t["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    for v in dashboard["templating"]["list"]
        .as_array()
        .expect("variables")
    {
        if v["type"] == "query" {
            out.push((
                format!("variable {:?}", v["name"]),
                v["query"]["query"].as_str().expect("query").to_string(),
            ));
        }
    }
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("the PrometheusRule");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    for g in rule["spec"]["groups"].as_array().expect("groups") {
        for r in g["rules"].as_array().expect("rules") {
            out.push((
                format!("alert {:?}", r["alert"]),
                r["expr"].as_str().expect("expr").to_string(),
            ));
        }
    }
    out
}

/// The exposition's series names (`name_total`, `name_bucket`, ... as PromQL sees them) and
/// the label names seen on each.
fn exported(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut names: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
                continue;
            };
            let suffixes: &[&str] = match kind {
                "counter" => &["_total"],
                "histogram" => &["_bucket", "_sum", "_count"],
                _ => &[""],
            };
            for s in suffixes {
                names.entry(format!("{name}{s}")).or_default();
            }
        } else if !line.starts_with('#') && !line.is_empty() {
            let name_end = line.find(['{', ' ']).unwrap_or(line.len());
            let labels = names.entry(line[..name_end].to_string()).or_default();
            if let Some(set) = line[name_end..]
                .strip_prefix('{')
                .and_then(|l| l.split_once('}'))
            {
                for pair in set.0.split(',') {
                    if let Some((k, _)) = pair.split_once('=') {
                        labels.insert(k.trim().to_string());
                    }
                }
            }
        }
    }
    names
}

#[tokio::test]
async fn dashboard_and_alerts_name_only_exported_metrics() {
    let docs = helm_template(
        "rel",
        "monitoring",
        &[
            "--set",
            "grafanaDashboard.enabled=true,prometheusRule.enabled=true",
        ],
    );
    let exprs = expressions(&docs);
    assert!(exprs.len() >= 10, "{exprs:#?}");
    // Off by default.
    let plain = helm_template("rel", "monitoring", &[]);
    assert!(
        !plain
            .iter()
            .any(|d| d["kind"] == "PrometheusRule" || d["kind"] == "ConfigMap"),
        "dashboard and rules are opt-in"
    );

    let bed = Bed::new("monitoring").await;
    install_crds(&bed.client).await;
    for name in ["a", "b", "c"] {
        job(&bed, name, json!({"app": "m"}), "succeeded").await;
    }
    let dir = std::env::temp_dir().join(unique("retainer-monitoring-"));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let log = dir.join("retainer.log");
    let _child = Command::new(env!("CARGO_BIN_EXE_retainer"))
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
        .stderr(std::fs::File::create(&log).expect("log file"))
        .kill_on_drop(true)
        .spawn()
        .expect("start retainer run");
    // Everything is a candidate, so abortAbovePercent refuses the sweep.
    apply_policy(
        &bed,
        "blocked",
        json!({"target": {"kind": "Job", "selector": {"matchLabels": {"app": "m"}}},
               "keep": "false", "schedule": "0 0 29 2 *",
               "deletion": {"abortAbovePercent": 50}}),
    )
    .await;
    summary(&bed, "blocked", 3).await;
    let swept = sweep(&bed, "blocked").await;
    assert_eq!(swept["reason"], "Blocked", "{swept}");
    // A sweep that deletes: the deletion, failure and sweep-duration series.
    job(&bed, "d", json!({"app": "del"}), "succeeded").await;
    apply_policy(
        &bed,
        "deletes",
        json!({"target": {"kind": "Job", "selector": {"matchLabels": {"app": "del"}}},
               "keep": "false", "schedule": "0 0 29 2 *"}),
    )
    .await;
    summary(&bed, "deletes", 1).await;
    let swept = sweep(&bed, "deletes").await;
    assert_eq!(swept["reason"], "Completed", "{swept}");
    // An OCI policy: the registry request series.
    let reg = registry("olareg");
    let repo = unique("monitoring/app");
    push_image(
        &reg,
        &repo,
        "1.0.0",
        &unique("seed"),
        "2026-01-01T00:00:00Z",
        None,
    )
    .await;
    apply_policy(
        &bed,
        "images",
        json!({"target": {"kind": "OCIArtifact",
                          "registry": {"url": format!("http://{reg}"), "repositories": [repo]}},
               "keep": "true", "schedule": "0 0 29 2 *"}),
    )
    .await;
    summary(&bed, "images", 1).await;

    let addr = wait_for("the metrics address", Duration::from_secs(20), || async {
        std::fs::read_to_string(&log).ok()?.lines().find_map(|l| {
            let v: Value = serde_json::from_str(l).ok()?;
            (v["fields"]["message"] == "serving /metrics, /healthz and /readyz")
                .then(|| v["fields"]["addr"].as_str().map(String::from))
                .flatten()
        })
    })
    .await;
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .expect("GET /metrics")
        .text()
        .await
        .expect("metrics body");
    let series = exported(&text);
    let ns = bed.ns.as_str();
    for want in [
        format!("retainer_policy_ready{{policy=\"blocked\",namespace=\"{ns}\"}} 1"),
        format!("retainer_last_sweep_blocked{{policy=\"blocked\",namespace=\"{ns}\"}} 1"),
        format!("retainer_last_sweep_failed{{policy=\"blocked\",namespace=\"{ns}\"}} 0"),
        format!("retainer_candidates{{policy=\"blocked\",namespace=\"{ns}\"}} 3"),
    ] {
        assert!(text.contains(&want), "missing {want} in\n{text}");
    }

    let metric = regex::Regex::new(r"\b(retainer_[a-z0-9_]+)(\{([^}]*)\})?").expect("regex");
    let label = regex::Regex::new(r"([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)").expect("regex");
    for (what, expr) in &exprs {
        let mut named = 0;
        for m in metric.captures_iter(expr) {
            named += 1;
            let name = &m[1];
            let labels = series
                .get(name)
                .unwrap_or_else(|| panic!("{what}: {name} is not exported ({expr})\n{text}"));
            if let Some(sel) = m.get(3) {
                for l in label.captures_iter(sel.as_str()) {
                    assert!(
                        labels.contains(&l[1]),
                        "{what}: {name} has no label {} ({expr}); it has {labels:?}",
                        &l[1]
                    );
                }
            }
        }
        assert!(named > 0, "{what} names no retainer metric: {expr}");
    }
    let _ = std::fs::remove_dir_all(dir);
    bed.cleanup().await;
}
