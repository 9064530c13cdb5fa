//! `explain-verdict`: one object's verdict with the values that decided it (group, rank,
//! groupSize, age, referrers, the keep term that held, the guard). Pure: `plan` gathers the
//! objects from the cluster and `check` reads them from a file; both end here, through the
//! same evaluation that gives their verdicts, so an explanation never disagrees with them.

use std::fmt::Write as _;
use std::sync::Arc;

use jiff::Timestamp;
use serde::Serialize;
use serde_json::Value as Json;
use thiserror::Error;

use crate::api::TargetKind;
use crate::check::Inputs;
use crate::engine::{
    Basis, CompiledPolicy, ObjectId, ObjectResult, Standing, evaluate_explained, selects,
};
use crate::refs::Referrer;

/// Which object to explain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Wanted {
    /// A Job or Secret by name; the namespace narrows it down under a ClusterRetentionPolicy.
    Object {
        kind: Option<String>,
        namespace: Option<String>,
        name: String,
    },
    /// An OCI artifact by digest or by tag, optionally in one repository.
    Artifact {
        repository: Option<String>,
        digest: Option<String>,
        tag: Option<String>,
    },
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ExplainError {
    #[error("--object names a {given}, but the policy governs {target}s")]
    WrongKind { given: String, target: &'static str },
    #[error("the policy governs OCI artifacts: name one with --digest or --tag")]
    WantArtifact,
    #[error("the policy governs {0}s: name one with --object KIND/NAME")]
    WantObject(&'static str),
    #[error("no {what} among the objects the policy reads")]
    NotFound { what: String },
    #[error("{what} matches {count} objects ({names}); narrow it down")]
    Ambiguous {
        what: String,
        count: usize,
        names: String,
    },
}

/// Why an object present in the inputs has no verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum NotGoverned {
    /// Outside the policy's namespace, selectors, field selector or repositories.
    NotSelected,
    /// Selected, but spec.match is false for it.
    MatchFalse,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Explanation {
    pub policy: String,
    /// The object's verdict, reason and identity, exactly as `plan` and `check` print them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<ObjectResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub not_governed: Option<NotGoverned>,
    #[serde(flatten)]
    pub standing: Standing,
    /// Seconds since creation; absent when the creation time is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub age_seconds: Option<u64>,
    pub referenced_by: Vec<Referrer>,
    /// The keep term that held, when the verdict came from keep.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub held_term: Option<String>,
    /// The guard that decided, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub guard: Option<String>,
    /// The expressions, for reading the values against.
    pub expressions: Expressions,
    #[serde(skip)]
    label: String,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Expressions {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub r#match: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order_by: Option<String>,
    pub keep: String,
}

fn str_at<'a>(obj: &'a Json, pointer: &str) -> Option<&'a str> {
    obj.pointer(pointer).and_then(Json::as_str)
}

/// Whether `obj` (a target document) is the one wanted.
fn is_wanted(target: TargetKind, wanted: &Wanted, obj: &Json) -> bool {
    match (target, wanted) {
        (
            TargetKind::OciArtifact,
            Wanted::Artifact {
                repository,
                digest,
                tag,
            },
        ) => {
            repository
                .as_deref()
                .is_none_or(|r| str_at(obj, "/repository") == Some(r))
                && digest
                    .as_deref()
                    .is_none_or(|d| str_at(obj, "/digest") == Some(d))
                && tag.as_deref().is_none_or(|t| {
                    obj.get("tags")
                        .and_then(Json::as_array)
                        .is_some_and(|ts| ts.iter().any(|x| x.as_str() == Some(t)))
                })
        }
        (
            _,
            Wanted::Object {
                namespace, name, ..
            },
        ) => {
            str_at(obj, "/metadata/name") == Some(name)
                && namespace
                    .as_deref()
                    .is_none_or(|ns| str_at(obj, "/metadata/namespace") == Some(ns))
        }
        _ => false,
    }
}

fn describe(wanted: &Wanted, target: TargetKind) -> String {
    match wanted {
        Wanted::Object {
            namespace: Some(ns),
            name,
            ..
        } => format!("{} {ns}/{name}", target.as_str()),
        Wanted::Object { name, .. } => format!("{} {name}", target.as_str()),
        Wanted::Artifact {
            repository,
            digest,
            tag,
        } => {
            let mut s = String::from("artifact");
            if let Some(r) = repository {
                let _ = write!(s, " in {r}");
            }
            if let Some(d) = digest {
                let _ = write!(s, " {d}");
            }
            if let Some(t) = tag {
                let _ = write!(s, " tagged {t}");
            }
            s
        }
    }
}

fn label_of(target: TargetKind, obj: &Json) -> String {
    match target {
        TargetKind::OciArtifact => format!(
            "{}@{}",
            str_at(obj, "/repository").unwrap_or(""),
            str_at(obj, "/digest").unwrap_or("")
        ),
        _ => format!(
            "{}/{}",
            str_at(obj, "/metadata/namespace").unwrap_or(""),
            str_at(obj, "/metadata/name").unwrap_or("")
        ),
    }
}

/// Checks that `wanted` fits the policy's target kind.
fn validate(target: TargetKind, wanted: &Wanted) -> Result<(), ExplainError> {
    match (target, wanted) {
        (TargetKind::OciArtifact, Wanted::Artifact { .. }) => Ok(()),
        (TargetKind::OciArtifact, Wanted::Object { .. }) => Err(ExplainError::WantArtifact),
        (t, Wanted::Artifact { .. }) => Err(ExplainError::WantObject(t.as_str())),
        (t, Wanted::Object { kind: Some(k), .. }) => {
            // kubectl's spellings: job, jobs, Job, jobs.batch, secret, secrets.
            let k = k.split('.').next().unwrap_or(k).to_ascii_lowercase();
            let want = t.as_str().to_ascii_lowercase();
            if k == want || k == format!("{want}s") {
                Ok(())
            } else {
                Err(ExplainError::WrongKind {
                    given: k,
                    target: t.as_str(),
                })
            }
        }
        (_, Wanted::Object { kind: None, .. }) => Ok(()),
    }
}

/// Explains the verdict `policy` gives `wanted` over `inputs` at `now`.
pub fn explain(
    policy: &CompiledPolicy,
    inputs: &Inputs,
    now: Timestamp,
    wanted: &Wanted,
) -> Result<Explanation, ExplainError> {
    let target = policy.target;
    validate(target, wanted)?;
    let snap = inputs.snapshot(now);
    let what = describe(wanted, target);
    let found: Vec<&Json> = snap
        .objects
        .iter()
        .copied()
        .filter(|o| is_wanted(target, wanted, o))
        .collect();
    let obj = match found.as_slice() {
        [] => return Err(ExplainError::NotFound { what }),
        [one] => *one,
        many => {
            return Err(ExplainError::Ambiguous {
                what,
                count: many.len(),
                names: many
                    .iter()
                    .map(|o| label_of(target, o))
                    .collect::<Vec<_>>()
                    .join(", "),
            });
        }
    };
    let spec = &policy.view.spec;
    let expressions = Expressions {
        r#match: spec.r#match.clone(),
        group_by: spec.group_by.clone(),
        order_by: spec.order_by.clone(),
        keep: spec.keep.clone(),
    };
    let mut out = Explanation {
        policy: policy.view.key(),
        result: None,
        not_governed: None,
        standing: Standing::default(),
        age_seconds: None,
        referenced_by: Vec::new(),
        held_term: None,
        guard: None,
        expressions,
        label: format!("{} {}", target.as_str(), label_of(target, obj)),
    };
    let (eval, standings) = evaluate_explained(policy, &snap);
    // Results are in the order of the objects governed; find ours by identity.
    let id = crate::engine::ObjectId::of(target, obj);
    let Some(i) = eval.results.iter().position(|r| r.id == id) else {
        out.not_governed = Some(if selects(policy, obj, snap.namespace_labels) {
            NotGoverned::MatchFalse
        } else {
            NotGoverned::NotSelected
        });
        return Ok(out);
    };
    let result = eval.results[i].clone();
    out.standing = standings.get(i).cloned().unwrap_or_default();
    out.age_seconds = out.standing.age.map(|a| a.as_secs());
    out.referenced_by = result.referrers.clone();
    match &result.basis {
        Basis::Term(term) => out.held_term = Some(term.clone()),
        Basis::Guard | Basis::FollowsSubject => out.guard = Some(result.reason.clone()),
        Basis::NoTermHeld | Basis::Error => {}
    }
    out.result = Some(Arc::unwrap_or_clone(result));
    Ok(out)
}

/// Go-style, as `age` is written in policies: `26h3m4s`, `45s`, `0s`.
fn go_duration(secs: u64) -> String {
    let (h, m, s) = (secs / 3600, secs / 60 % 60, secs % 60);
    match (h, m) {
        (0, 0) => format!("{s}s"),
        (0, _) => format!("{m}m{s}s"),
        _ => format!("{h}h{m}m{s}s"),
    }
}

pub fn render_text(e: &Explanation) -> String {
    let mut out = String::new();
    let mut line = |k: &str, v: &str| {
        let _ = writeln!(out, "{k:<14}{v}");
    };
    line("policy:", &e.policy);
    line("object:", &e.label);
    let Some(r) = &e.result else {
        line("verdict:", "not governed");
        line(
            "reason:",
            match e.not_governed {
                Some(NotGoverned::MatchFalse) => "spec.match is false for it",
                _ => "outside spec.target (namespace, selectors, field selector or repositories)",
            },
        );
        if let Some(m) = &e.expressions.r#match {
            line("match:", m);
        }
        return out;
    };
    if let ObjectId::Oci { tags, .. } = &r.id {
        line(
            "tags:",
            &if tags.is_empty() {
                "<none>".to_string()
            } else {
                tags.join(",")
            },
        );
    }
    line("verdict:", &format!("{:?}", r.verdict).to_lowercase());
    line("reason:", &r.reason);
    let s = &e.standing;
    line(
        "group:",
        &match &s.group {
            Some(g) => format!("{g:?}"),
            None => "not grouped (decided before grouping)".into(),
        },
    );
    match (s.rank, s.group_size) {
        (Some(rank), Some(size)) => {
            line("rank:", &format!("{rank} (0 is the newest or highest)"));
            line("groupSize:", &size.to_string());
        }
        _ => line("rank:", "not ranked"),
    }
    line(
        "age:",
        &match e.age_seconds {
            Some(a) => go_duration(a),
            None => "unknown (0s in CEL)".into(),
        },
    );
    line(
        "referencedBy:",
        &if e.referenced_by.is_empty() {
            "none".to_string()
        } else {
            e.referenced_by
                .iter()
                .map(|r| {
                    let ns = if r.namespace.is_empty() {
                        String::new()
                    } else {
                        format!("{}/", r.namespace)
                    };
                    format!("{} {ns}{}", r.kind, r.name)
                })
                .collect::<Vec<_>>()
                .join(", ")
        },
    );
    line("guard:", e.guard.as_deref().unwrap_or("none applies"));
    line("keep:", &e.expressions.keep);
    line(
        "held term:",
        &match &e.held_term {
            Some(t) => t.clone(),
            None if e.guard.is_some() => "not evaluated (a guard decided)".into(),
            None => "none".into(),
        },
    );
    if let Some(m) = &e.expressions.r#match {
        line("match:", m);
    }
    if let Some(g) = &e.expressions.group_by {
        line("groupBy:", g);
    }
    if let Some(o) = &e.expressions.order_by {
        line("orderBy:", o);
    }
    out
}

pub fn render_json(e: &Explanation) -> String {
    // Plain structs of strings and numbers: serialising cannot fail.
    serde_json::to_string_pretty(e).expect("explanation serialises") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{parse_documents, policy_from_document, read_objects};

    const POLICY: &str = "apiVersion: retainer.dev/v1alpha1\nkind: RetentionPolicy\nmetadata: {name: p, namespace: ns}\nspec:\n  target: {kind: Job}\n  groupBy: \"object.metadata.labels['app']\"\n  keep: \"rank < 1 || object.metadata.name == 'pinned'\"\n  schedule: '@daily'\n";

    fn job(name: &str, created: &str, app: &str, finished: bool) -> String {
        let cond = if finished {
            "status: {conditions: [{type: Complete, status: 'True'}]}"
        } else {
            "status: {}"
        };
        format!(
            "---\napiVersion: batch/v1\nkind: Job\nmetadata: {{name: {name}, namespace: ns, creationTimestamp: '{created}', labels: {{app: {app}}}}}\n{cond}\n"
        )
    }

    fn run(wanted: &str) -> Result<Explanation, ExplainError> {
        let docs = parse_documents("p", POLICY).unwrap();
        let policy = CompiledPolicy::compile(policy_from_document("p", &docs[0]).unwrap()).unwrap();
        let objects = [
            job("a1", "2026-01-01T00:00:00Z", "a", true),
            job("a2", "2026-01-01T01:00:00Z", "a", true),
            job("a3", "2026-01-01T02:00:00Z", "a", false),
            job("pinned", "2026-01-01T00:30:00Z", "a", true),
        ]
        .concat();
        let inputs = read_objects(&policy, "objects", &objects).unwrap();
        let now: Timestamp = "2026-01-01T03:00:00Z".parse().unwrap();
        explain(
            &policy,
            &inputs,
            now,
            &Wanted::Object {
                kind: Some("jobs".into()),
                namespace: None,
                name: wanted.into(),
            },
        )
    }

    #[test]
    fn a_candidate_shows_its_group_rank_and_age() {
        let e = run("a1").unwrap();
        let r = e.result.as_ref().unwrap();
        assert_eq!(r.reason, "no term of keep held");
        assert_eq!(e.standing.group.as_deref(), Some("a"));
        // a3, a2, pinned, a1: newest first, all four ranked (the unfinished one too).
        assert_eq!((e.standing.rank, e.standing.group_size), (Some(3), Some(4)));
        assert_eq!(e.age_seconds, Some(3 * 3600));
        assert_eq!(e.held_term, None);
        let text = render_text(&e);
        assert!(text.contains("verdict:      delete\n"), "{text}");
        assert!(text.contains("age:          3h0m0s\n"), "{text}");
        assert!(text.contains("held term:    none\n"), "{text}");
    }

    #[test]
    fn a_kept_object_names_the_term_and_a_guarded_one_the_guard() {
        let e = run("pinned").unwrap();
        assert_eq!(
            e.held_term.as_deref(),
            Some("object.metadata.name == 'pinned'")
        );
        let e = run("a3").unwrap();
        assert_eq!(e.guard.as_deref(), Some("guard: job has not finished"));
        assert!(render_text(&e).contains("held term:    not evaluated (a guard decided)"));
    }

    #[test]
    fn unknown_and_misnamed_objects_are_errors() {
        assert!(matches!(run("nope"), Err(ExplainError::NotFound { .. })));
        assert_eq!(go_duration(59), "59s");
        assert_eq!(go_duration(61), "1m1s");
        assert_eq!(go_duration(90061), "25h1m1s");
    }

    #[test]
    fn a_cluster_policy_needs_the_namespace_when_a_name_is_in_two() {
        let policy = "apiVersion: retainer.dev/v1alpha1\nkind: ClusterRetentionPolicy\nmetadata: {name: c}\nspec:\n  target: {kind: Secret}\n  keep: 'false'\n  schedule: '@daily'\n";
        let docs = parse_documents("c", policy).unwrap();
        let policy = CompiledPolicy::compile(policy_from_document("c", &docs[0]).unwrap()).unwrap();
        let objects = "---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: a}\n---\napiVersion: v1\nkind: Secret\nmetadata: {name: s, namespace: b}\n";
        let inputs = read_objects(&policy, "objects", objects).unwrap();
        let now: Timestamp = "2026-01-01T00:00:00Z".parse().unwrap();
        let wanted = |namespace: Option<&str>| Wanted::Object {
            kind: Some("secret".into()),
            namespace: namespace.map(String::from),
            name: "s".into(),
        };
        match explain(&policy, &inputs, now, &wanted(None)) {
            Err(ExplainError::Ambiguous { count, names, .. }) => {
                assert_eq!((count, names.as_str()), (2, "a/s, b/s"));
            }
            other => panic!("{other:?}"),
        }
        let e = explain(&policy, &inputs, now, &wanted(Some("b"))).unwrap();
        assert_eq!(e.label, "Secret b/s");
        assert_eq!(e.result.unwrap().reason, "no term of keep held");
        assert_eq!(
            explain(&policy, &inputs, now, &wanted(Some("c"))),
            Err(ExplainError::NotFound {
                what: "Secret c/s".into()
            })
        );
    }

    #[test]
    fn an_object_left_out_says_by_what() {
        let policy = "apiVersion: retainer.dev/v1alpha1\nkind: RetentionPolicy\nmetadata: {name: p, namespace: ns}\nspec:\n  target: {kind: Job, selector: {matchLabels: {app: a}}}\n  match: \"object.metadata.name != 'skip'\"\n  keep: 'false'\n  schedule: '@daily'\n";
        let docs = parse_documents("p", policy).unwrap();
        let policy = CompiledPolicy::compile(policy_from_document("p", &docs[0]).unwrap()).unwrap();
        let objects = [
            job("skip", "2026-01-01T00:00:00Z", "a", true),
            job("other", "2026-01-01T00:00:00Z", "b", true),
        ]
        .concat();
        let inputs = read_objects(&policy, "objects", &objects).unwrap();
        let now: Timestamp = "2026-01-02T00:00:00Z".parse().unwrap();
        let of = |name: &str| {
            explain(
                &policy,
                &inputs,
                now,
                &Wanted::Object {
                    kind: None,
                    namespace: None,
                    name: name.into(),
                },
            )
            .unwrap()
        };
        let skipped = of("skip");
        assert_eq!(skipped.not_governed, Some(NotGoverned::MatchFalse));
        assert!(render_text(&skipped).contains("spec.match is false"));
        assert_eq!(of("other").not_governed, Some(NotGoverned::NotSelected));
    }
}
