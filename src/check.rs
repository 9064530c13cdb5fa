//! `retainer check`: offline evaluation of a policy over objects from files, for GitOps
//! pipelines and for trying a policy out before it is applied.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value as Json;
use thiserror::Error;

use crate::api::{ClusterRetentionPolicy, PolicyView, RetentionPolicy, TargetKind};
use crate::engine::{
    CompiledPolicy, Counts, Evaluation, ObjectId, PolicyError, Snapshot, evaluate, labels_of,
};
use crate::refs::RefIndex;

#[derive(Debug, Error)]
pub enum CheckError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parsing {path}: {message}")]
    Parse { path: String, message: String },
    #[error(
        "{path}: want kind RetentionPolicy or ClusterRetentionPolicy in apiVersion retainer.dev/v1alpha1, got {got}"
    )]
    NotAPolicy { path: String, got: String },
    #[error("the policy is not valid: {0}")]
    Invalid(#[from] PolicyError),
}

/// Parses YAML or JSON documents; `List` documents are flattened into their items.
pub fn parse_documents(path: &str, text: &str) -> Result<Vec<Json>, CheckError> {
    let parse_error = |message: String| CheckError::Parse {
        path: path.to_string(),
        message,
    };
    // JSON (`kubectl get -o json`) is read as JSON: an order of magnitude faster than a YAML
    // parser, and without the node budget that guards YAML against alias bombs, so that a
    // cluster's worth of objects fits.
    let docs: Vec<Json> = if text.trim_start().starts_with(['{', '[']) {
        serde_json::Deserializer::from_str(text)
            .into_iter::<Json>()
            .collect::<Result<_, _>>()
            .map_err(|e| parse_error(e.to_string()))?
    } else {
        serde_saphyr::from_multiple(text).map_err(|e| {
            let mut m = e.to_string();
            if m.contains("budget breached") {
                m.push_str(
                    " (the YAML reader's limit for untrusted input; give large inputs as JSON, e.g. kubectl get -o json)",
                );
            }
            parse_error(m)
        })?
    };
    let mut out = Vec::new();
    let docs = docs.into_iter().flat_map(|d| match d {
        // A bare array of objects, as `jq` and scripts write them.
        Json::Array(items) => items,
        other => vec![other],
    });
    for d in docs {
        if d.is_null() {
            continue;
        }
        let is_list = d
            .get("kind")
            .and_then(Json::as_str)
            .is_some_and(|k| k == "List" || k.ends_with("List"))
            && d.get("items").is_some_and(Json::is_array);
        if is_list {
            let api_version = d.get("apiVersion").cloned();
            // Moved out, not copied: a List of a whole cluster is most of the memory `check`
            // uses.
            let items = match d {
                Json::Object(mut m) => match m.remove("items") {
                    Some(Json::Array(items)) => items,
                    _ => Vec::new(),
                },
                _ => Vec::new(),
            };
            for mut item in items {
                // `kubectl get -o yaml` of a single kind may omit apiVersion and kind on items.
                if item.get("apiVersion").is_none()
                    && let Some(av) = &api_version
                {
                    item["apiVersion"] = av.clone();
                }
                out.push(item);
            }
        } else {
            out.push(d);
        }
    }
    Ok(out)
}

pub fn policy_from_document(path: &str, doc: &Json) -> Result<PolicyView, CheckError> {
    let kind = doc.get("kind").and_then(Json::as_str).unwrap_or("");
    let parse_err = |e: serde_json::Error| CheckError::Parse {
        path: path.to_string(),
        message: e.to_string(),
    };
    match kind {
        "RetentionPolicy" => {
            let mut p: RetentionPolicy = serde_json::from_value(doc.clone()).map_err(parse_err)?;
            if p.metadata.namespace.is_none() {
                p.metadata.namespace = Some("default".into());
            }
            Ok(PolicyView::from(&p))
        }
        "ClusterRetentionPolicy" => {
            let p: ClusterRetentionPolicy =
                serde_json::from_value(doc.clone()).map_err(parse_err)?;
            Ok(PolicyView::from(&p))
        }
        other => Err(CheckError::NotAPolicy {
            path: path.to_string(),
            got: if other.is_empty() {
                "no kind".into()
            } else {
                other.to_string()
            },
        }),
    }
}

/// Secret data never enters evaluation, output, or logs.
pub fn strip_secret_data(obj: &mut Json) {
    if obj.get("kind").and_then(Json::as_str) == Some("Secret")
        && let Some(m) = obj.as_object_mut()
    {
        m.remove("data");
        m.remove("stringData");
        if let Some(meta) = m.get_mut("metadata").and_then(Json::as_object_mut)
            && let Some(ann) = meta.get_mut("annotations").and_then(Json::as_object_mut)
        {
            // kubectl's last-applied annotation carries the whole Secret, data included.
            ann.remove("kubectl.kubernetes.io/last-applied-configuration");
        }
    }
}

/// Evaluates a policy over objects given in memory: the shared core of `check` and `plan`.
pub fn evaluate_offline(
    policy: &CompiledPolicy,
    mut objects: Vec<Json>,
    now: Timestamp,
) -> Evaluation {
    for o in &mut objects {
        strip_secret_data(o);
    }
    let target = policy.target.as_str();
    let (targets, others): (Vec<&Json>, Vec<&Json>) = objects
        .iter()
        .partition(|o| o.get("kind").and_then(Json::as_str) == Some(target));
    let refs = RefIndex::build(others.iter().copied());
    let namespace_labels: BTreeMap<String, BTreeMap<String, String>> = others
        .iter()
        .filter(|o| o.get("kind").and_then(Json::as_str) == Some("Namespace"))
        .map(|o| {
            let name = o
                .pointer("/metadata/name")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string();
            (name, labels_of(o))
        })
        .collect();
    let snap = Snapshot {
        objects: targets,
        refs: &refs,
        custom_referrers: others,
        namespace_labels: &namespace_labels,
        now,
    };
    evaluate(policy, &snap)
}

#[derive(Serialize)]
struct Report<'a> {
    policy: String,
    summary: Counts,
    results: &'a [crate::engine::ObjectResult],
}

pub fn render_json(policy: &CompiledPolicy, eval: &Evaluation) -> String {
    let report = Report {
        policy: policy.view.key(),
        summary: eval.summary,
        results: &eval.results,
    };
    // Serialising plain structs of strings and numbers cannot fail.
    serde_json::to_string_pretty(&report).expect("report serialises")
}

pub fn render_table(policy: &CompiledPolicy, eval: &Evaluation) -> String {
    let oci = policy.target == TargetKind::OciArtifact;
    let header: Vec<&str> = if oci {
        vec!["REPOSITORY", "DIGEST", "TAGS", "VERDICT", "REASON"]
    } else {
        vec!["NAMESPACE", "NAME", "VERDICT", "REASON"]
    };
    let mut rows: Vec<Vec<String>> = vec![header.iter().map(|s| s.to_string()).collect()];
    for r in &eval.results {
        let verdict = format!("{:?}", r.verdict).to_lowercase();
        rows.push(match &r.id {
            ObjectId::Kube {
                namespace, name, ..
            } => vec![namespace.clone(), name.clone(), verdict, r.reason.clone()],
            ObjectId::Oci {
                repository,
                digest,
                tags,
            } => {
                let short = digest.get(..19).unwrap_or(digest).to_string();
                let tags = if tags.is_empty() {
                    "<none>".to_string()
                } else {
                    tags.join(",")
                };
                vec![repository.clone(), short, tags, verdict, r.reason.clone()]
            }
        });
    }
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let last = row.len() - 1;
        for (c, cell) in row.iter().enumerate() {
            if c == last {
                out.push_str(cell);
            } else {
                let _ = write!(out, "{cell:<w$}   ", w = widths[c]);
            }
        }
        out.push('\n');
    }
    let s = eval.summary;
    let _ = writeln!(
        out,
        "\npolicy {}: governed {}, kept {}, candidates {}, errors {}",
        policy.view.key(),
        s.governed,
        s.kept,
        s.candidates,
        s.errors
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_flattened_and_secret_data_dropped() {
        let text = "apiVersion: v1\nkind: List\nitems:\n- kind: Secret\n  metadata: {name: a, namespace: n, annotations: {kubectl.kubernetes.io/last-applied-configuration: '{\"data\":{\"k\":\"c2VjcmV0\"}}'}}\n  data: {k: c2VjcmV0}\n---\nkind: Pod\napiVersion: v1\nmetadata: {name: p}\n";
        let mut docs = parse_documents("x", text).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(docs[0]["apiVersion"], "v1");
        strip_secret_data(&mut docs[0]);
        let s = docs[0].to_string();
        assert!(!s.contains("c2VjcmV0"), "{s}");
    }

    #[test]
    fn json_inputs_are_read_as_json_in_every_shape() {
        let cases: &[(&str, usize)] = &[
            (
                r#"{"kind": "List", "apiVersion": "v1", "items": [{"kind": "Pod"}, {"kind": "Pod"}]}"#,
                2,
            ),
            (
                r#"[{"kind": "Pod"}, {"kind": "Job"}, {"kind": "Secret"}]"#,
                3,
            ),
            ("{\"kind\": \"Pod\"}\n{\"kind\": \"Job\"}\n", 2),
            ("  \n{\"kind\": \"Pod\"}", 1),
        ];
        for (text, n) in cases {
            let docs = parse_documents("x.json", text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(docs.len(), *n, "{text}");
            assert_eq!(
                docs[0]["apiVersion"].as_str().unwrap_or("v1"),
                "v1",
                "{text}"
            );
        }
        let err = parse_documents("x.json", "{\"kind\": ")
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("parsing x.json:"), "{err}");
    }
}
