//! Who references what: the built-in referrers of Secrets and images, and image-reference
//! normalisation with Docker Hub's defaults. Pure: input is plain JSON objects.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::Value as Json;

/// One referrer as CEL's `referencedBy` and status show it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl Referrer {
    pub fn of(obj: &Json) -> Referrer {
        let s = |p: &str| {
            crate::json::at(obj, p)
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string()
        };
        Referrer {
            api_version: s("/apiVersion"),
            kind: s("/kind"),
            namespace: s("/metadata/namespace"),
            name: s("/metadata/name"),
        }
    }
}

/// A normalised image reference: `nginx` is `docker.io/library/nginx:latest`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct ImageRef {
    pub registry: String,
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

pub const DOCKER_HUB: &str = "docker.io";

/// The canonical host of a registry: Docker Hub's aliases fold to docker.io; hosts are
/// case-insensitive.
pub fn normalize_registry(host: &str) -> String {
    let h = host.trim_end_matches('/').to_ascii_lowercase();
    match h.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            DOCKER_HUB.to_string()
        }
        _ => h,
    }
}

/// A registry and repository as references are matched by, the way the kubelet's image
/// references resolve: the canonical host (Docker Hub's aliases folded) without a default port
/// (`:443`, `:80`), and Docker Hub's one-word repositories under `library/`. Folding can only
/// make more references match, so it can only keep more.
pub fn match_key(registry: &str, repository: &str) -> (String, String) {
    let h = registry.trim_end_matches('/').to_ascii_lowercase();
    let h = h
        .strip_suffix(":443")
        .or_else(|| h.strip_suffix(":80"))
        .unwrap_or(&h);
    let host = normalize_registry(h);
    let repository = repository.trim_matches('/');
    let repository = if host == DOCKER_HUB && !repository.contains('/') {
        format!("library/{repository}")
    } else {
        repository.to_string()
    };
    (host, repository)
}

impl ImageRef {
    /// Parses what a Pod spec or a container status says. Returns None for what names no
    /// repository (a bare digest) or is not a reference at all.
    pub fn parse(s: &str) -> Option<ImageRef> {
        let s = s.trim();
        // Container statuses prefix the runtime's scheme.
        let s = s
            .strip_prefix("docker-pullable://")
            .or_else(|| s.strip_prefix("docker://"))
            .unwrap_or(s);
        if s.is_empty() || s.starts_with("sha256:") || s.contains("://") {
            return None;
        }
        let (name, digest) = match s.split_once('@') {
            Some((n, d)) if d.contains(':') => (n, Some(d.to_ascii_lowercase())),
            Some(_) => return None,
            None => (s, None),
        };
        // A tag follows the last ':' after the last '/': a registry port comes before a '/'.
        let last_slash = name.rfind('/').map(|i| i + 1).unwrap_or(0);
        let (name, tag) = match name[last_slash..].rfind(':') {
            Some(i) => (
                &name[..last_slash + i],
                Some(name[last_slash + i + 1..].to_string()),
            ),
            None => (name, None),
        };
        if name.is_empty() || tag.as_deref() == Some("") {
            return None;
        }
        let (registry, repository) = match name.split_once('/') {
            Some((first, rest))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (normalize_registry(first), rest.to_string())
            }
            _ => (DOCKER_HUB.to_string(), name.to_string()),
        };
        let repository = if registry == DOCKER_HUB && !repository.contains('/') {
            format!("library/{repository}")
        } else {
            repository
        };
        let tag = match (&tag, &digest) {
            (None, None) => Some("latest".to_string()),
            _ => tag,
        };
        Some(ImageRef {
            registry,
            repository,
            tag,
            digest,
        })
    }
}

/// The pod specs an object carries: its own, or its template's.
pub fn pod_specs(obj: &Json) -> Vec<&Json> {
    let kind = obj.get("kind").and_then(Json::as_str).unwrap_or("");
    let spec = match kind {
        "Pod" => obj.get("spec"),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "Job"
        | "ReplicationController" => crate::json::at(obj, "/spec/template/spec"),
        "CronJob" => crate::json::at(obj, "/spec/jobTemplate/spec/template/spec"),
        "PodTemplate" => crate::json::at(obj, "/template/spec"),
        _ => None,
    };
    spec.into_iter().collect()
}

const CONTAINER_LISTS: [&str; 3] = ["containers", "initContainers", "ephemeralContainers"];
const STATUS_LISTS: [&str; 3] = [
    "containerStatuses",
    "initContainerStatuses",
    "ephemeralContainerStatuses",
];

fn items(v: Option<&Json>) -> impl Iterator<Item = &Json> {
    v.and_then(Json::as_array).into_iter().flatten()
}

fn str_at<'a>(v: &'a Json, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Json::as_str).filter(|s| !s.is_empty())
}

/// Every image an object runs or will run: container images of its pod spec, and for Pods the
/// digests their container statuses report.
pub fn images_of(obj: &Json) -> Vec<ImageRef> {
    let mut out = BTreeSet::new();
    for spec in pod_specs(obj) {
        for list in CONTAINER_LISTS {
            for c in items(spec.get(list)) {
                if let Some(r) = str_at(c, "image").and_then(ImageRef::parse) {
                    out.insert(r);
                }
            }
        }
    }
    if obj.get("kind").and_then(Json::as_str) == Some("Pod") {
        for list in STATUS_LISTS {
            for c in items(crate::json::at(obj, "/status").and_then(|s| s.get(list))) {
                if let Some(r) = str_at(c, "imageID").and_then(ImageRef::parse) {
                    out.insert(r);
                }
            }
        }
    }
    out.into_iter().collect()
}

/// The names of the Secrets an object references, by the built-in paths.
pub fn secrets_of(obj: &Json) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut add = |v: Option<&str>| {
        if let Some(n) = v.filter(|n| !n.is_empty()) {
            out.insert(n.to_string());
        }
    };
    match obj.get("kind").and_then(Json::as_str) {
        Some("ServiceAccount") => {
            for s in items(obj.get("secrets")).chain(items(obj.get("imagePullSecrets"))) {
                add(str_at(s, "name"));
            }
        }
        Some("Ingress") => {
            for t in items(crate::json::at(obj, "/spec/tls")) {
                add(str_at(t, "secretName"));
            }
        }
        _ => {}
    }
    for spec in pod_specs(obj) {
        for s in items(spec.get("imagePullSecrets")) {
            add(str_at(s, "name"));
        }
        for v in items(spec.get("volumes")) {
            add(crate::json::at(v, "/secret/secretName").and_then(Json::as_str));
            for src in items(crate::json::at(v, "/projected/sources")) {
                add(crate::json::at(src, "/secret/name").and_then(Json::as_str));
            }
        }
        for list in CONTAINER_LISTS {
            for c in items(spec.get(list)) {
                for e in items(c.get("env")) {
                    add(crate::json::at(e, "/valueFrom/secretKeyRef/name").and_then(Json::as_str));
                }
                for e in items(c.get("envFrom")) {
                    add(crate::json::at(e, "/secretRef/name").and_then(Json::as_str));
                }
            }
        }
    }
    out
}

/// The kinds whose objects can reference Secrets or images through the built-in paths.
pub const BUILTIN_REFERRER_KINDS: &[&str] = &[
    "Pod",
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "ServiceAccount",
    "Ingress",
];

/// What one object references by the built-in paths: all the index needs of it. The
/// controller keeps this instead of the pod templates it was read from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ObjectRefs {
    pub who: Referrer,
    pub secrets: Vec<String>,
    pub images: Vec<ImageRef>,
}

impl ObjectRefs {
    /// None when the object is not of a built-in referrer kind or references nothing.
    pub fn of(obj: &Json) -> Option<ObjectRefs> {
        let kind = obj.get("kind").and_then(Json::as_str).unwrap_or("");
        if !BUILTIN_REFERRER_KINDS.contains(&kind) {
            return None;
        }
        let secrets: Vec<String> = secrets_of(obj).into_iter().collect();
        let images = images_of(obj);
        (!secrets.is_empty() || !images.is_empty()).then(|| ObjectRefs {
            who: Referrer::of(obj),
            secrets,
            images,
        })
    }
}

/// Built-in references, indexed once per snapshot and shared by every policy.
#[derive(Default, Debug)]
pub struct RefIndex {
    /// (namespace, secret name) → referrers; empty in an index of `RefPart::Images`.
    pub secrets: BTreeMap<(String, String), BTreeSet<Referrer>>,
    /// (registry, repository) → references with their referrers; empty in an index of
    /// `RefPart::Secrets`.
    pub images: BTreeMap<(String, String), Vec<(ImageRef, Referrer)>>,
}

/// Which references an index holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefPart {
    Secrets,
    Images,
}

impl RefIndex {
    pub fn build<'a>(referrers: impl IntoIterator<Item = &'a Json>) -> RefIndex {
        let mut idx = RefIndex::default();
        for obj in referrers {
            idx.add(obj);
        }
        idx
    }

    pub fn add(&mut self, obj: &Json) {
        if let Some(r) = ObjectRefs::of(obj) {
            self.add_refs(&r);
        }
    }

    /// Adds what one object references, as extracted when it arrived.
    pub fn add_refs(&mut self, r: &ObjectRefs) {
        self.add_part(RefPart::Secrets, r);
        self.add_part(RefPart::Images, r);
    }

    /// Adds one part of what an object references: Secret policies read only the Secret
    /// references, OCI policies only the image references, and an index of every Job's images
    /// costs megabytes a Secret policy never reads.
    pub fn add_part(&mut self, part: RefPart, r: &ObjectRefs) {
        if part == RefPart::Secrets {
            for name in &r.secrets {
                self.secrets
                    .entry((r.who.namespace.clone(), name.clone()))
                    .or_default()
                    .insert(r.who.clone());
            }
            return;
        }
        for image in &r.images {
            self.images
                .entry(match_key(&image.registry, &image.repository))
                .or_default()
                .push((image.clone(), r.who.clone()));
        }
    }

    /// Adds what another index holds: the index of two sets of objects is the merge of theirs.
    pub fn merge(&mut self, other: RefIndex) {
        for (k, v) in other.secrets {
            self.secrets.entry(k).or_default().extend(v);
        }
        for (k, v) in other.images {
            self.images.entry(k).or_default().extend(v);
        }
    }

    pub fn secret_referrers(&self, namespace: &str, name: &str) -> Vec<Referrer> {
        self.secrets
            .get(&(namespace.to_string(), name.to_string()))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Referrers of an artifact: a reference by one of its tags or by its digest.
    pub fn image_referrers(
        &self,
        registry: &str,
        repository: &str,
        digest: &str,
        tags: &[String],
    ) -> Vec<Referrer> {
        let mut out = BTreeSet::new();
        if let Some(refs) = self.images.get(&match_key(registry, repository)) {
            for (r, who) in refs {
                let by_digest = r.digest.as_deref() == Some(digest);
                let by_tag = r.digest.is_none() && r.tag.as_ref().is_some_and(|t| tags.contains(t));
                if by_digest || by_tag {
                    out.insert(who.clone());
                }
            }
        }
        out.into_iter().collect()
    }
}

#[cfg(test)]
mod tests;
