//! Label and field selectors, evaluated the way the API server does.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::Value as Json;
use thiserror::Error;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum LabelSelectorError {
    #[error("unknown operator '{0}': use In, NotIn, Exists or DoesNotExist")]
    UnknownOperator(String),
    #[error("operator {0} needs values")]
    MissingValues(String),
    #[error("operator {0} takes no values")]
    UnexpectedValues(String),
    #[error(
        "'{0}' is not a valid label key: an optional DNS subdomain prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    )]
    InvalidKey(String),
    #[error(
        "'{0}' is not a valid label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
    )]
    InvalidValue(String),
}

/// A label name or value: `[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?`.
fn is_label_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
}

/// A DNS-1123 subdomain, the optional prefix of a label key.
fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253
        && s.split('.').all(|part| {
            let b = part.as_bytes();
            !b.is_empty()
                && (b[0].is_ascii_lowercase() || b[0].is_ascii_digit())
                && (b[b.len() - 1].is_ascii_lowercase() || b[b.len() - 1].is_ascii_digit())
                && b.iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        })
}

fn check_key(key: &str) -> Result<(), LabelSelectorError> {
    let ok = match key.split_once('/') {
        Some((prefix, name)) => is_dns_subdomain(prefix) && is_label_name(name),
        None => is_label_name(key),
    };
    if ok {
        Ok(())
    } else {
        Err(LabelSelectorError::InvalidKey(key.to_string()))
    }
}

fn check_value(value: &str) -> Result<(), LabelSelectorError> {
    if value.is_empty() || is_label_name(value) {
        Ok(())
    } else {
        Err(LabelSelectorError::InvalidValue(value.to_string()))
    }
}

pub fn validate_label_selector(sel: &LabelSelector) -> Result<(), LabelSelectorError> {
    for (k, v) in sel.match_labels.iter().flatten() {
        check_key(k)?;
        check_value(v)?;
    }
    for e in sel.match_expressions.iter().flatten() {
        check_key(&e.key)?;
        for v in e.values.iter().flatten() {
            check_value(v)?;
        }
        let has_values = e.values.as_ref().is_some_and(|v| !v.is_empty());
        match e.operator.as_str() {
            "In" | "NotIn" if !has_values => {
                return Err(LabelSelectorError::MissingValues(e.operator.clone()));
            }
            "Exists" | "DoesNotExist" if has_values => {
                return Err(LabelSelectorError::UnexpectedValues(e.operator.clone()));
            }
            "In" | "NotIn" | "Exists" | "DoesNotExist" => {}
            other => return Err(LabelSelectorError::UnknownOperator(other.to_string())),
        }
    }
    Ok(())
}

/// An empty selector matches everything; an invalid one nothing.
pub fn matches_label_selector(sel: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    validate_label_selector(sel).is_ok()
        && matches_validated_selector(sel, |k| labels.get(k).map(String::as_str))
}

/// Matching for a selector already validated (a compiled policy's), against labels looked up
/// in place: no copy of the object's labels per object.
pub fn matches_validated_selector<'a>(
    sel: &LabelSelector,
    label: impl Fn(&str) -> Option<&'a str>,
) -> bool {
    let by_labels = sel
        .match_labels
        .iter()
        .flatten()
        .all(|(k, v)| label(k) == Some(v.as_str()));
    let by_exprs = sel.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or(&[]);
        let value = label(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.iter().any(|x| x == v)),
            "NotIn" => value.is_none_or(|v| !values.iter().any(|x| x == v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    by_labels && by_exprs
}

/// The fields the API server lets a field selector name, by kind (beyond metadata.name and
/// metadata.namespace, which every kind supports).
pub fn selectable_fields(kind: &str) -> &'static [&'static str] {
    match kind {
        "Secret" => &["metadata.name", "metadata.namespace", "type"],
        "Job" => &["metadata.name", "metadata.namespace", "status.successful"],
        _ => &["metadata.name", "metadata.namespace"],
    }
}

/// Parses a field selector and checks that `kind` supports its fields, as the API server would.
pub fn validate_field_selector(kind: &str, s: &str) -> Result<(), String> {
    let supported = selectable_fields(kind);
    for (field, _, _) in parse_field_selector(s)? {
        if !supported.contains(&field.as_str()) {
            return Err(format!(
                "field '{field}' is not supported for {kind} (supported: {})",
                supported.join(", ")
            ));
        }
    }
    Ok(())
}

/// `a=b,c!=d`: (path, value, equal?)
pub fn parse_field_selector(s: &str) -> Result<Vec<(String, String, bool)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v, eq) = if let Some((k, v)) = part.split_once("!=") {
            (k, v, false)
        } else if let Some((k, v)) = part.split_once("==") {
            (k, v, true)
        } else if let Some((k, v)) = part.split_once('=') {
            (k, v, true)
        } else {
            return Err(format!("'{part}' is not field=value or field!=value"));
        };
        if k.trim().is_empty() {
            return Err(format!("'{part}' names no field"));
        }
        out.push((k.trim().to_string(), v.trim().to_string(), eq));
    }
    Ok(out)
}

/// The server applies field selectors on list and watch; this is the same test on an object
/// in hand (offline `check`, and a defensive re-check).
pub fn matches_field_selector(s: &str, obj: &Json) -> bool {
    let Ok(terms) = parse_field_selector(s) else {
        return false;
    };
    terms.iter().all(|(path, want, eq)| {
        // The API server's Job field `status.successful` is the object's `status.succeeded`
        // (pkg/registry/batch/job: JobToSelectableFields); a Job without it selects as 0.
        let (path, default) = match path.as_str() {
            "status.successful" => ("status.succeeded", "0"),
            other => (other, ""),
        };
        let got = path
            .split('.')
            .try_fold(obj, |o, k| o.get(k))
            .map(|v| match v {
                Json::String(s) => s.clone(),
                other => other.to_string(),
            })
            .unwrap_or_else(|| default.to_string());
        (got == *want) == *eq
    })
}
