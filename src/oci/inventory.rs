//! What a policy governs in a registry: every digest of its repositories with all its tags, the
//! artifacts that refer to them, and the manifests indexes list, as the engine's OCIArtifact
//! documents. Manifests are immutable by digest, so they are cached across sweeps: a repeat
//! inventory costs tag listings, tag resolutions and referrer listings, not manifest fetches.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;

use futures::{StreamExt, TryStreamExt};
use serde_json::{Value as Json, json};

use super::client::{RegistryClient, RegistryError};
use crate::engine::repository_matches;

/// What a manifest says about itself.
#[derive(Clone, Debug, PartialEq)]
pub struct ManifestInfo {
    pub media_type: String,
    pub artifact_type: Option<String>,
    pub annotations: serde_json::Map<String, Json>,
    pub size: u64,
    pub subject: Option<String>,
    pub created: Option<String>,
    pub children: Vec<String>,
}

/// Manifests by digest; shared across sweeps and policies.
#[derive(Default)]
pub struct ManifestCache(Mutex<HashMap<String, ManifestInfo>>);

impl ManifestCache {
    fn get(&self, digest: &str) -> Option<ManifestInfo> {
        self.0.lock().ok().and_then(|m| m.get(digest).cloned())
    }

    fn put(&self, digest: &str, info: ManifestInfo) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(digest.to_string(), info);
        }
    }

    pub fn len(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `sha256-<hex>` and `sha256-<hex>.sig` (cosign's tag schema, and OCI's referrers fallback
/// index) name the digest they belong to.
pub fn subject_of_tag(tag: &str) -> Option<String> {
    let rest = tag.strip_prefix("sha256-")?;
    let hex = rest.split('.').next()?;
    (hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit())).then(|| format!("sha256:{hex}"))
}

fn parse_manifest(body: &[u8], media_type_header: &str) -> ManifestInfo {
    let m: Json = serde_json::from_slice(body).unwrap_or(Json::Null);
    let media_type = m
        .get("mediaType")
        .and_then(Json::as_str)
        .unwrap_or(media_type_header)
        .to_string();
    let annotations = m
        .get("annotations")
        .and_then(Json::as_object)
        .cloned()
        .unwrap_or_default();
    let created = annotations
        .get("org.opencontainers.image.created")
        .and_then(Json::as_str)
        .map(String::from);
    ManifestInfo {
        artifact_type: m
            .get("artifactType")
            .or_else(|| {
                m.pointer("/config/mediaType").filter(|t| {
                    t.as_str().is_some_and(|t| {
                        !t.contains("image.config") && !t.contains("container.image")
                    })
                })
            })
            .and_then(Json::as_str)
            .map(String::from),
        annotations,
        size: body.len() as u64,
        subject: m
            .pointer("/subject/digest")
            .and_then(Json::as_str)
            .map(String::from),
        created,
        children: m
            .get("manifests")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.get("digest").and_then(Json::as_str).map(String::from))
            .collect(),
        media_type,
    }
}

async fn info(
    client: &RegistryClient,
    cache: &ManifestCache,
    repo: &str,
    digest: &str,
) -> Result<Option<ManifestInfo>, RegistryError> {
    if let Some(i) = cache.get(digest) {
        return Ok(Some(i));
    }
    let Some(f) = client.manifest(repo, digest).await? else {
        return Ok(None);
    };
    let mut i = parse_manifest(&f.body, &f.media_type);
    if i.created.is_none() {
        // An image's config records when it was built.
        let m: Json = serde_json::from_slice(&f.body).unwrap_or(Json::Null);
        let config_type = m
            .pointer("/config/mediaType")
            .and_then(Json::as_str)
            .unwrap_or("");
        if (config_type.contains("image.config") || config_type.contains("container.image"))
            && let Some(d) = m.pointer("/config/digest").and_then(Json::as_str)
            && let Some(cfg) = client.blob_json(repo, d).await?
        {
            i.created = cfg.get("created").and_then(Json::as_str).map(String::from);
        }
    }
    cache.put(digest, i.clone());
    Ok(Some(i))
}

/// The repositories `patterns` name; `prefix/*` and `*` expand through the catalog.
pub async fn repositories(
    client: &RegistryClient,
    patterns: &[String],
) -> Result<Vec<String>, RegistryError> {
    let mut out = BTreeSet::new();
    let mut catalog: Option<Vec<String>> = None;
    for p in patterns {
        if p == "*" || p.ends_with("/*") {
            if catalog.is_none() {
                catalog = Some(client.catalog().await?);
            }
            out.extend(
                catalog
                    .iter()
                    .flatten()
                    .filter(|r| repository_matches(p, r))
                    .cloned(),
            );
        } else {
            out.insert(p.clone());
        }
    }
    Ok(out.into_iter().collect())
}

/// Every artifact of the repositories, as OCIArtifact documents.
pub async fn inventory(
    client: &RegistryClient,
    cache: &ManifestCache,
    patterns: &[String],
    concurrency: usize,
) -> Result<Vec<Json>, RegistryError> {
    let mut docs = Vec::new();
    for repo in repositories(client, patterns).await? {
        docs.extend(repository_inventory(client, cache, &repo, concurrency).await?);
    }
    Ok(docs)
}

async fn repository_inventory(
    client: &RegistryClient,
    cache: &ManifestCache,
    repo: &str,
    concurrency: usize,
) -> Result<Vec<Json>, RegistryError> {
    let tags = client.tags(repo).await?;
    let resolved: Vec<(String, Option<String>)> = futures::stream::iter(tags)
        .map(|t| async move { client.resolve(repo, &t).await.map(|d| (t, d)) })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let mut tags_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (tag, digest) in resolved {
        if let Some(d) = digest {
            tags_of.entry(d).or_default().insert(tag);
        }
    }
    let mut infos: BTreeMap<String, ManifestInfo> = BTreeMap::new();
    let mut subjects: BTreeMap<String, String> = BTreeMap::new();
    let mut listed: BTreeSet<String> = BTreeSet::new();
    let mut pending: Vec<String> = tags_of.keys().cloned().collect();
    // Tagged digests, then what refers to them and what indexes list, to a fixed point.
    while !pending.is_empty() {
        let fetched: Vec<(String, Option<ManifestInfo>)> = futures::stream::iter(pending.drain(..))
            .map(|d| async move { info(client, cache, repo, &d).await.map(|i| (d, i)) })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        let mut next = Vec::new();
        for (d, i) in fetched {
            let Some(i) = i else { continue };
            for c in &i.children {
                if !infos.contains_key(c) && !tags_of.contains_key(c) {
                    next.push(c.clone());
                }
            }
            infos.insert(d, i);
        }
        // Referrers of tagged artifacts that are not referrers themselves.
        let referrable: Vec<String> = infos
            .iter()
            .filter(|(d, i)| {
                i.subject.is_none()
                    && !subjects.contains_key(*d)
                    && tags_of.contains_key(*d)
                    && !listed.contains(*d)
            })
            .map(|(d, _)| d.clone())
            .collect();
        listed.extend(referrable.iter().cloned());
        let listed: Vec<(String, Vec<String>)> = futures::stream::iter(referrable)
            .map(|d| async move { client.referrers(repo, &d).await.map(|r| (d, r)) })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        for (subject, refs) in listed {
            for r in refs {
                subjects.entry(r.clone()).or_insert_with(|| subject.clone());
                if !infos.contains_key(&r) && !next.contains(&r) {
                    next.push(r);
                }
            }
        }
        pending = next;
    }
    let host = client.host().to_string();
    Ok(infos
        .into_iter()
        .map(|(digest, i)| {
            let tags: Vec<String> = tags_of
                .get(&digest)
                .map(|t| t.iter().cloned().collect())
                .unwrap_or_default();
            let subject = i
                .subject
                .clone()
                .or_else(|| subjects.get(&digest).cloned())
                .or_else(|| tags.iter().find_map(|t| subject_of_tag(t)));
            let mut doc = json!({
                "kind": "OCIArtifact",
                "registry": host,
                "repository": repo,
                "digest": digest,
                "tags": tags,
                "mediaType": i.media_type,
                "annotations": i.annotations,
                "size": i.size,
            });
            if let Some(t) = &i.artifact_type {
                doc["artifactType"] = json!(t);
            }
            if let Some(c) = &i.created {
                doc["created"] = json!(c);
            }
            if let Some(s) = subject {
                doc["subject"] = json!(s);
            }
            if !i.children.is_empty() {
                doc["manifests"] = json!(i.children);
            }
            doc
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_schema_names_its_subject() {
        let hex = "a".repeat(64);
        assert_eq!(
            subject_of_tag(&format!("sha256-{hex}")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(
            subject_of_tag(&format!("sha256-{hex}.sig")),
            Some(format!("sha256:{hex}"))
        );
        assert_eq!(subject_of_tag("sha256-abc.sig"), None);
        assert_eq!(subject_of_tag("v1.0.0"), None);
    }

    #[test]
    fn manifests_describe_themselves() {
        let body = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",
            "artifactType":"application/vnd.dev.sigstore.bundle.v0.3+json",
            "config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44","size":2},
            "subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:abc","size":1},
            "annotations":{"org.opencontainers.image.created":"2026-01-01T00:00:00Z"}}"#;
        let i = parse_manifest(body, "");
        assert_eq!(i.subject.as_deref(), Some("sha256:abc"));
        assert_eq!(
            i.artifact_type.as_deref(),
            Some("application/vnd.dev.sigstore.bundle.v0.3+json")
        );
        assert_eq!(i.created.as_deref(), Some("2026-01-01T00:00:00Z"));
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
            "manifests":[{"digest":"sha256:a1"},{"digest":"sha256:a2"}]}"#;
        assert_eq!(
            parse_manifest(index, "").children,
            vec!["sha256:a1", "sha256:a2"]
        );
    }
}
