//! `retainer check`: offline evaluation of a policy over objects from files, for GitOps
//! pipelines and for trying a policy out before it is applied.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt::Write as _;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use serde_json::value::RawValue;
use thiserror::Error;

use crate::api::{ClusterRetentionPolicy, PolicyView, RetentionPolicy, TargetKind};
use crate::engine::{
    CompiledPolicy, Counts, Evaluation, ObjectId, PolicyError, Snapshot, evaluate, labels_of,
};
use crate::expr::FieldTree;
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
pub fn evaluate_offline(policy: &CompiledPolicy, objects: Vec<Json>, now: Timestamp) -> Evaluation {
    let mut inputs = Inputs::default();
    for o in objects {
        inputs.add(policy, o);
    }
    inputs.evaluate(policy, now)
}

/// What an offline evaluation reads, gathered one object at a time so that an object is held
/// only in the form evaluation needs: a target pruned to the fields the policy reads, a built-in
/// referrer as the references it makes, a Namespace as its labels. Only custom referrers are
/// kept whole (their `refs` expressions may read anything).
#[derive(Default)]
pub struct Inputs {
    targets: Vec<Json>,
    refs: RefIndex,
    custom: Vec<Json>,
    namespace_labels: BTreeMap<String, BTreeMap<String, String>>,
}

impl Inputs {
    /// Adds one whole object.
    pub fn add(&mut self, policy: &CompiledPolicy, mut obj: Json) {
        strip_secret_data(&mut obj);
        let kind = obj.get("kind").and_then(Json::as_str).unwrap_or("");
        if kind == policy.target.as_str() {
            self.targets.push(obj);
            return;
        }
        self.add_other(policy, obj);
    }

    fn add_other(&mut self, policy: &CompiledPolicy, obj: Json) {
        let kind = obj.get("kind").and_then(Json::as_str).unwrap_or("");
        if kind == "Namespace" {
            let name = obj
                .pointer("/metadata/name")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string();
            self.namespace_labels.insert(name, labels_of(&obj));
        }
        self.refs.add(&obj);
        let api_version = obj.get("apiVersion").and_then(Json::as_str).unwrap_or("");
        if policy
            .referrer_sources
            .iter()
            .any(|(av, k, _)| av == api_version && k == kind)
        {
            self.custom.push(obj);
        }
    }

    /// Adds one object given as JSON text, parsing a target only as far as the policy reads it.
    /// `api_version` is the List's, for items that leave theirs out.
    fn add_text(
        &mut self,
        policy: &CompiledPolicy,
        retained: &FieldTree,
        text: &str,
        api_version: Option<&str>,
    ) -> serde_json::Result<()> {
        #[derive(Deserialize)]
        struct Head<'a> {
            #[serde(borrow)]
            kind: Option<Cow<'a, str>>,
        }
        let head: Head<'_> = serde_json::from_str(text)?;
        let mut obj = if head.kind.as_deref() == Some(policy.target.as_str()) {
            crate::json::parse_pruned(text, retained)?
        } else {
            serde_json::from_str::<Json>(text)?
        };
        if obj.get("apiVersion").is_none()
            && let (Some(av), Some(m)) = (api_version, obj.as_object_mut())
        {
            m.insert("apiVersion".into(), Json::String(av.to_string()));
        }
        self.add(policy, obj);
        Ok(())
    }

    fn extend(&mut self, other: Inputs) {
        self.targets.extend(other.targets);
        self.custom.extend(other.custom);
        self.namespace_labels.extend(other.namespace_labels);
        self.refs.merge(other.refs);
    }

    pub fn evaluate(&self, policy: &CompiledPolicy, now: Timestamp) -> Evaluation {
        evaluate(policy, &self.snapshot(now))
    }

    /// What the evaluation sees; `explain-verdict` also looks up its object here.
    pub fn snapshot(&self, now: Timestamp) -> Snapshot<'_> {
        Snapshot {
            objects: self.targets.iter().collect(),
            refs: &self.refs,
            custom_referrers: self.custom.iter().collect(),
            namespace_labels: &self.namespace_labels,
            now,
        }
    }
}

/// Reads the objects of `check` from a file's text. JSON is read without building the whole
/// document: each object is parsed on its own, in the form `Inputs` keeps, on every core, so
/// that memory is the text plus what evaluation needs. YAML (small inputs: the reader has a node
/// budget) is read whole.
pub fn read_objects(policy: &CompiledPolicy, path: &str, text: &str) -> Result<Inputs, CheckError> {
    let parse_error = |e: serde_json::Error| CheckError::Parse {
        path: path.to_string(),
        message: e.to_string(),
    };
    if !text.trim_start().starts_with(['{', '[']) {
        let mut inputs = Inputs::default();
        for o in parse_documents(path, text)? {
            inputs.add(policy, o);
        }
        return Ok(inputs);
    }
    // Every object of the file, as text borrowed from it, with its List's apiVersion.
    let mut items: Vec<(&RawValue, Option<Cow<'_, str>>)> = Vec::new();
    for doc in serde_json::Deserializer::from_str(text).into_iter::<&RawValue>() {
        let doc = doc.map_err(parse_error)?;
        let body = doc.get().trim_start();
        if body.starts_with('[') {
            // A bare array of objects, as `jq` and scripts write them.
            let array: Vec<&RawValue> = serde_json::from_str(body).map_err(parse_error)?;
            items.extend(array.into_iter().map(|i| (i, None)));
        } else if body.starts_with('{') {
            #[derive(Deserialize)]
            struct ListHead<'a> {
                #[serde(borrow)]
                kind: Option<Cow<'a, str>>,
                #[serde(borrow, rename = "apiVersion")]
                api_version: Option<Cow<'a, str>>,
                #[serde(borrow)]
                items: Option<Vec<&'a RawValue>>,
            }
            // `items` may come before `kind` (kubectl prints them so): read both, then decide.
            let head: ListHead<'_> = serde_json::from_str(body).map_err(parse_error)?;
            let is_list = head
                .kind
                .as_deref()
                .is_some_and(|k| k == "List" || k.ends_with("List"));
            match head.items {
                Some(list) if is_list => {
                    items.extend(list.into_iter().map(|i| (i, head.api_version.clone())));
                }
                _ => items.push((doc, None)),
            }
        }
        // Anything else at the top level (a JSON null, say) holds no object.
    }
    let retained = policy.retained_fields();
    let threads = std::thread::available_parallelism()
        .map_or(1, usize::from)
        .clamp(1, 8);
    let chunk = items.len().div_ceil(threads).max(1);
    let parts: Vec<serde_json::Result<Inputs>> = std::thread::scope(|scope| {
        let handles: Vec<_> = items
            .chunks(chunk)
            .map(|part| {
                let retained = &retained;
                scope.spawn(move || {
                    let mut inputs = Inputs::default();
                    for (raw, av) in part {
                        inputs.add_text(policy, retained, raw.get(), av.as_deref())?;
                    }
                    Ok(inputs)
                })
            })
            .collect();
        handles
            .into_iter()
            // A thread that panicked has a bug to show, not an input error to report.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut inputs = Inputs::default();
    // In the file's order, so that results list objects as the file does.
    for part in parts {
        inputs.extend(part.map_err(parse_error)?);
    }
    Ok(inputs)
}

#[derive(Serialize)]
struct Report<'a> {
    policy: String,
    summary: Counts,
    results: &'a [std::sync::Arc<crate::engine::ObjectResult>],
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
            } => vec![
                namespace.to_string(),
                name.to_string(),
                verdict,
                r.reason.clone(),
            ],
            ObjectId::Oci {
                repository,
                digest,
                tags,
            } => {
                let short = digest.get(..19).unwrap_or(digest.as_str()).to_string();
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
    if let (Some(held), Some(freed)) = (s.bytes, s.bytes_freed) {
        let _ = writeln!(
            out,
            "storage: {} held, a sweep frees {} ({held} and {freed} bytes)",
            human_bytes(held),
            human_bytes(freed)
        );
    }
    out
}

/// Bytes in binary units, as registries and `du -h` show them.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_read_in_binary_units() {
        let cases = [
            (0, "0 B"),
            (1023, "1023 B"),
            (1024, "1.0 KiB"),
            (5 * 1024 * 1024 + 512 * 1024, "5.5 MiB"),
            (5 << 30, "5.0 GiB"),
        ];
        for (n, want) in cases {
            assert_eq!(human_bytes(n), want, "{n}");
        }
    }

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

    fn policy(spec: serde_json::Value) -> CompiledPolicy {
        let view = PolicyView {
            name: "p".into(),
            namespace: Some("n".into()),
            generation: Some(1),
            spec: serde_json::from_value(spec).expect("spec"),
        };
        CompiledPolicy::compile(view).expect("valid")
    }

    /// The streaming reader decides exactly as reading every object whole does, in every shape
    /// of JSON input, for a target with referrers of each sort.
    #[test]
    fn objects_read_one_at_a_time_decide_as_whole_documents() {
        let secrets = policy(serde_json::json!({"target": {"kind": "Secret"},
            "keep": "referencedBy.size() > 0 || object.metadata.labels.?keep.orValue('') == 'yes'",
            "referencedBy": [{"apiVersion": "example.com/v1", "kind": "Bundle", "refs": "[object.spec.secret]"}],
            "schedule": "@daily"}));
        let items = r#"
            {"metadata": {"name": "s1", "namespace": "n", "creationTimestamp": "2026-01-01T00:00:00Z"}, "kind": "Secret", "data": {"k": "c2VjcmV0"}, "type": "Opaque"},
            {"kind": "Secret", "metadata": {"name": "s2", "namespace": "n", "labels": {"keep": "yes"}, "creationTimestamp": "2026-01-02T00:00:00Z"}},
            {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "s3", "namespace": "n", "creationTimestamp": "2026-01-03T00:00:00Z"}},
            {"kind": "Secret", "metadata": {"name": "s4", "namespace": "n", "creationTimestamp": "2026-01-04T00:00:00Z"}},
            {"kind": "Pod", "metadata": {"name": "p", "namespace": "n"}, "spec": {"containers": [{"name": "c", "image": "x", "envFrom": [{"secretRef": {"name": "s3"}}]}]}},
            {"kind": "Bundle", "apiVersion": "example.com/v1", "metadata": {"name": "b", "namespace": "n"}, "spec": {"secret": "s4"}}"#;
        let shapes = [
            format!(
                r#"{{"apiVersion": "v1", "items": [{items}], "kind": "List", "metadata": {{}}}}"#
            ),
            format!(r#"[{items}]"#),
            items
                .split("},\n")
                .map(|l| l.trim().trim_end_matches(','))
                .collect::<Vec<_>>()
                .join("}\n"),
            format!(
                r#"{{"kind": "SecretList", "apiVersion": "v1", "items": [{items}]}} {{"kind": "Secret", "metadata": {{"name": "s5", "namespace": "n"}}}}"#
            ),
        ];
        let now = "2026-02-01T00:00:00Z".parse().unwrap();
        for text in &shapes {
            let whole = evaluate_offline(&secrets, parse_documents("x.json", text).unwrap(), now);
            let streamed = read_objects(&secrets, "x.json", text)
                .unwrap_or_else(|e| panic!("{text}: {e}"))
                .evaluate(&secrets, now);
            let (a, b) = (
                render_json(&secrets, &whole),
                render_json(&secrets, &streamed),
            );
            assert_eq!(a, b, "{text}");
            assert!(!b.contains("c2VjcmV0"));
            assert!(streamed.summary.governed >= 4, "{b}");
            assert_eq!(streamed.summary.kept, 3, "{b}");
        }
        let err = read_objects(
            &secrets,
            "x.json",
            r#"{"kind": "List", "items": [{"kind": }]}"#,
        )
        .err()
        .expect("bad JSON is an error")
        .to_string();
        assert!(err.starts_with("parsing x.json:"), "{err}");
    }
}
