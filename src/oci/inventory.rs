//! What a policy governs in a registry: every digest of its repositories with all its tags, the
//! artifacts that refer to them, and the manifests indexes list, as the engine's OCIArtifact
//! documents.
//!
//! Reads are cached in two ways. Manifests are immutable by digest: cached for the life of the
//! process. Tag resolutions and referrer listings are not immutable (a tag can be re-pointed, a
//! signature added, without the tag list changing), so they are remembered with the time they
//! were read and reused only while younger than the caller's limit: a repeat inventory lists
//! the tags of each repository and resolves only tag names it has not seen. A sweep therefore
//! never trusts them: it checks each repository afresh before deleting from it
//! (`controller::sweep`), and forgets what it remembered when the registry changed.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::{StreamExt, TryStreamExt};
use serde_json::{Value as Json, json};

use super::client::{RegistryClient, RegistryError};
use crate::engine::repository_matches;

/// The config media type `helm push` gives a chart.
pub const HELM_CONFIG_MEDIA_TYPE: &str = "application/vnd.cncf.helm.config.v1+json";

/// A Helm chart config larger than this is not read: Helm writes Chart.yaml's metadata there,
/// a few hundred bytes; anything bigger is not a config Helm wrote.
pub const MAX_HELM_CONFIG: u64 = 64 << 10;

/// The longest chart name, version or appVersion kept from a config blob.
const MAX_CHART_FIELD: usize = 256;

/// A blob a manifest references.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
}

impl Descriptor {
    fn parse(d: &Json) -> Option<Descriptor> {
        Some(Descriptor {
            media_type: d
                .get("mediaType")
                .and_then(Json::as_str)
                .unwrap_or("")
                .to_string(),
            digest: d.get("digest")?.as_str()?.to_string(),
            size: d.get("size")?.as_u64()?,
        })
    }

    fn to_json(&self) -> Json {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.size})
    }
}

/// What a Helm chart's config blob says about the chart.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChartInfo {
    pub name: String,
    pub version: String,
    pub app_version: Option<String>,
}

impl ChartInfo {
    /// From Helm's config JSON (Chart.yaml's metadata); None without a name and a version.
    pub fn from_config(cfg: &Json) -> Option<ChartInfo> {
        let field = |k: &str| {
            cfg.get(k)
                .and_then(Json::as_str)
                .filter(|v| !v.is_empty() && v.len() <= MAX_CHART_FIELD)
                .map(String::from)
        };
        Some(ChartInfo {
            name: field("name")?,
            version: field("version")?,
            app_version: field("appVersion"),
        })
    }

    fn to_json(&self) -> Json {
        let mut c = json!({"name": self.name, "version": self.version});
        if let Some(a) = &self.app_version {
            c["appVersion"] = json!(a);
        }
        c
    }
}

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
    pub config: Option<Descriptor>,
    /// Layers of an image manifest (`blobs` of the former OCI artifact manifest).
    pub layers: Vec<Descriptor>,
    /// Helm charts only, from the config blob.
    pub chart: Option<ChartInfo>,
}

/// What the registry last said about one repository, each fact with when it was read.
#[derive(Clone, Debug, Default)]
struct RepoMemo {
    /// tag → digest
    tags: HashMap<String, (String, Instant)>,
    /// subject digest → the digests its referrers listing named
    referrers: HashMap<String, (Vec<String>, Instant)>,
}

/// Registry reads kept between inventories, shared across sweeps and policies: manifests by
/// digest, and per repository (by registry base URL and name) the last tag resolutions and
/// referrer listings.
#[derive(Default)]
pub struct ManifestCache {
    manifests: Mutex<HashMap<String, ManifestInfo>>,
    repos: Mutex<HashMap<(String, String), RepoMemo>>,
}

impl ManifestCache {
    fn get(&self, digest: &str) -> Option<ManifestInfo> {
        self.manifests
            .lock()
            .ok()
            .and_then(|m| m.get(digest).cloned())
    }

    fn put(&self, digest: &str, info: ManifestInfo) {
        if let Ok(mut m) = self.manifests.lock() {
            m.insert(digest.to_string(), info);
        }
    }

    /// Manifests cached.
    pub fn len(&self) -> usize {
        self.manifests.lock().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn memo(&self, registry: &str, repo: &str) -> RepoMemo {
        self.repos
            .lock()
            .ok()
            .and_then(|r| r.get(&(registry.to_string(), repo.to_string())).cloned())
            .unwrap_or_default()
    }

    fn update(&self, registry: &str, repo: &str, f: impl FnOnce(&mut RepoMemo)) {
        if let Ok(mut r) = self.repos.lock() {
            f(r.entry((registry.to_string(), repo.to_string()))
                .or_default());
        }
    }

    /// Forgets a repository's tags and referrers: the next inventory reads them all again.
    pub fn forget(&self, registry: &str, repo: &str) {
        if let Ok(mut r) = self.repos.lock() {
            r.remove(&(registry.to_string(), repo.to_string()));
        }
    }

    /// Records a repository's tag resolutions, all read just now, in place of the old ones.
    pub fn remember_tags(&self, registry: &str, repo: &str, tags: &BTreeMap<String, String>) {
        let now = Instant::now();
        self.update(registry, repo, |m| {
            m.tags = tags
                .iter()
                .map(|(t, d)| (t.clone(), (d.clone(), now)))
                .collect();
        });
    }

    /// Records a referrers listing read just now.
    pub fn remember_referrers(&self, registry: &str, repo: &str, subject: &str, refs: Vec<String>) {
        let now = Instant::now();
        self.update(registry, repo, |m| {
            m.referrers.insert(subject.to_string(), (refs, now));
        });
    }

    /// Forgets deleted digests: the tags that pointed at them and their referrer listings.
    pub fn forget_digests(&self, registry: &str, repo: &str, deleted: &BTreeSet<String>) {
        self.update(registry, repo, |m| {
            m.tags.retain(|_, (d, _)| !deleted.contains(d));
            m.referrers.retain(|d, _| !deleted.contains(d));
        });
    }
}

/// What an evaluation saw of one repository, from the inventory's documents: what a sweep
/// checks afresh before deleting.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RepoView {
    /// tag → digest
    pub tags: BTreeMap<String, String>,
    /// digest → the digest it refers to (signatures, SBOMs, `sha256-<hex>` indexes)
    pub subject_of: BTreeMap<String, String>,
    /// index digest → the digests it lists
    pub children: BTreeMap<String, Vec<String>>,
}

impl RepoView {
    /// The artifacts known to refer to `digest`.
    pub fn referrers_of(&self, digest: &str) -> BTreeSet<String> {
        self.subject_of
            .iter()
            .filter(|(_, s)| s.as_str() == digest)
            .map(|(r, _)| r.clone())
            .collect()
    }

    /// The artifact a referrer belongs to in the end (a signature of an SBOM belongs to the
    /// SBOM's subject); None for an artifact that refers to nothing.
    pub fn root_subject(&self, digest: &str) -> Option<String> {
        let mut at = self.subject_of.get(digest)?;
        // Bounded like the engine's chains: a cycle cannot hold us.
        for _ in 0..16 {
            match self.subject_of.get(at) {
                Some(next) => at = next,
                None => break,
            }
        }
        Some(at.clone())
    }

    /// The indexes that list `digest`.
    pub fn listed_by(&self, digest: &str) -> Vec<String> {
        self.children
            .iter()
            .filter(|(_, c)| c.iter().any(|d| d == digest))
            .map(|(i, _)| i.clone())
            .collect()
    }
}

/// The views of the repositories that OCIArtifact documents describe.
pub fn views_of(docs: &[Json]) -> BTreeMap<String, RepoView> {
    let mut out: BTreeMap<String, RepoView> = BTreeMap::new();
    for doc in docs {
        let s = |k: &str| doc.get(k).and_then(Json::as_str);
        let (Some(repo), Some(digest)) = (s("repository"), s("digest")) else {
            continue;
        };
        let v = out.entry(repo.to_string()).or_default();
        for t in doc
            .get("tags")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(t) = t.as_str() {
                v.tags.insert(t.to_string(), digest.to_string());
            }
        }
        if let Some(subject) = s("subject") {
            v.subject_of.insert(digest.to_string(), subject.to_string());
        }
        let children: Vec<String> = doc
            .get("manifests")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|c| c.as_str().map(String::from))
            .collect();
        if !children.is_empty() {
            v.children.insert(digest.to_string(), children);
        }
    }
    out
}

/// How a repository's tags moved between two readings, for messages; empty when they did not.
pub fn tag_changes(
    before: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut out = Vec::new();
    for (t, d) in before {
        match now.get(t) {
            None => out.push(format!("tag {t} is gone")),
            Some(n) if n != d => out.push(format!("tag {t} now points at {n}, not {d}")),
            Some(_) => {}
        }
    }
    for (t, d) in now {
        if !before.contains_key(t) {
            out.push(format!("tag {t} is new (at {d})"));
        }
    }
    out
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
        config: m.get("config").and_then(Descriptor::parse),
        layers: m
            .get("layers")
            .or_else(|| m.get("blobs"))
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(Descriptor::parse)
            .collect(),
        chart: None,
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
    // Read only for Helm's config type and a small size: other configs are not charts, and
    // the manifest states the size before anything is fetched.
    if let Some(c) = i
        .config
        .as_ref()
        .filter(|c| c.media_type == HELM_CONFIG_MEDIA_TYPE && c.size <= MAX_HELM_CONFIG)
        && let Some(cfg) = client.blob_json(repo, &c.digest).await?
    {
        i.chart = ChartInfo::from_config(&cfg);
    }
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

/// Every artifact of the repositories, as OCIArtifact documents. Tag resolutions and referrer
/// listings younger than `reuse_for` are taken from `cache` (Duration::ZERO: read everything).
pub async fn inventory(
    client: &RegistryClient,
    cache: &ManifestCache,
    patterns: &[String],
    concurrency: usize,
    reuse_for: Duration,
) -> Result<Vec<Json>, RegistryError> {
    let mut docs = Vec::new();
    for repo in repositories(client, patterns).await? {
        docs.extend(repository_inventory(client, cache, &repo, concurrency, reuse_for).await?);
    }
    Ok(docs)
}

async fn repository_inventory(
    client: &RegistryClient,
    cache: &ManifestCache,
    repo: &str,
    concurrency: usize,
    reuse_for: Duration,
) -> Result<Vec<Json>, RegistryError> {
    let tags = client.tags(repo).await?;
    let memo = cache.memo(client.base(), repo);
    let reusable = |at: &Instant| at.elapsed() < reuse_for;
    let mut remembered = RepoMemo::default();
    let mut tags_of: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut unknown = Vec::new();
    for t in tags {
        match memo.tags.get(&t) {
            Some((d, at)) if reusable(at) => {
                tags_of.entry(d.clone()).or_default().insert(t.clone());
                remembered.tags.insert(t, (d.clone(), *at));
            }
            _ => unknown.push(t),
        }
    }
    let resolved: Vec<(String, Option<String>)> = futures::stream::iter(unknown)
        .map(|t| async move { client.resolve(repo, &t).await.map(|d| (t, d)) })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await?;
    let now = Instant::now();
    for (tag, digest) in resolved {
        if let Some(d) = digest {
            tags_of.entry(d.clone()).or_default().insert(tag.clone());
            remembered.tags.insert(tag, (d, now));
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
        // Referrers of every artifact that is not a referrer itself (index children included:
        // a sweep deletes nothing whose referrers it does not know).
        let referrable: Vec<String> = infos
            .iter()
            .filter(|(d, i)| {
                i.subject.is_none() && !subjects.contains_key(*d) && !listed.contains(*d)
            })
            .map(|(d, _)| d.clone())
            .collect();
        listed.extend(referrable.iter().cloned());
        let mut found: Vec<(String, Vec<String>)> = Vec::new();
        let mut unlisted = Vec::new();
        for d in referrable {
            match memo.referrers.get(&d) {
                Some((refs, at)) if reusable(at) => {
                    found.push((d.clone(), refs.clone()));
                    remembered.referrers.insert(d, (refs.clone(), *at));
                }
                _ => unlisted.push(d),
            }
        }
        let fresh: Vec<(String, Vec<String>)> = futures::stream::iter(unlisted)
            .map(|d| async move { client.referrers(repo, &d).await.map(|r| (d, r)) })
            .buffer_unordered(concurrency.max(1))
            .try_collect()
            .await?;
        let now = Instant::now();
        for (d, refs) in &fresh {
            remembered.referrers.insert(d.clone(), (refs.clone(), now));
        }
        found.extend(fresh);
        for (subject, refs) in found {
            for r in refs {
                subjects.entry(r.clone()).or_insert_with(|| subject.clone());
                if !infos.contains_key(&r) && !next.contains(&r) {
                    next.push(r);
                }
            }
        }
        pending = next;
    }
    // Only now that the whole repository was read: a failure half-way remembers nothing new.
    cache.update(client.base(), repo, |m| *m = remembered);
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
            if let Some(c) = &i.config {
                doc["config"] = c.to_json();
            }
            if !i.layers.is_empty() {
                doc["layers"] = json!(i.layers.iter().map(Descriptor::to_json).collect::<Vec<_>>());
            }
            if let Some(c) = &i.chart {
                doc["chart"] = c.to_json();
            }
            doc
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn views_say_what_an_evaluation_saw() {
        let docs = vec![
            json!({"repository": "app", "digest": "sha256:a", "tags": ["1.0", "latest"]}),
            json!({"repository": "app", "digest": "sha256:i", "tags": ["2.0"], "manifests": ["sha256:c1", "sha256:c2"]}),
            json!({"repository": "app", "digest": "sha256:sig", "tags": [], "subject": "sha256:a"}),
            json!({"repository": "app", "digest": "sha256:sigsig", "tags": [], "subject": "sha256:sig"}),
            json!({"repository": "other", "digest": "sha256:b", "tags": ["1.0"]}),
        ];
        let v = views_of(&docs);
        assert_eq!(v.len(), 2);
        let app = &v["app"];
        assert_eq!(
            app.tags
                .iter()
                .map(|(t, d)| format!("{t}={d}"))
                .collect::<Vec<_>>(),
            vec!["1.0=sha256:a", "2.0=sha256:i", "latest=sha256:a"]
        );
        assert_eq!(
            app.referrers_of("sha256:a"),
            BTreeSet::from(["sha256:sig".to_string()])
        );
        assert_eq!(
            app.root_subject("sha256:sigsig").as_deref(),
            Some("sha256:a")
        );
        assert_eq!(app.root_subject("sha256:a"), None);
        assert_eq!(app.listed_by("sha256:c2"), vec!["sha256:i"]);

        let mut now = app.tags.clone();
        assert!(tag_changes(&app.tags, &now).is_empty());
        now.insert("latest".into(), "sha256:i".into());
        now.remove("1.0");
        now.insert("3.0".into(), "sha256:x".into());
        assert_eq!(
            tag_changes(&app.tags, &now),
            vec![
                "tag 1.0 is gone",
                "tag latest now points at sha256:i, not sha256:a",
                "tag 3.0 is new (at sha256:x)"
            ]
        );
    }

    #[test]
    fn remembered_reads_are_forgotten_when_asked() {
        let c = ManifestCache::default();
        let tags = BTreeMap::from([
            ("1.0".to_string(), "sha256:a".to_string()),
            ("2.0".to_string(), "sha256:b".to_string()),
        ]);
        c.remember_tags("http://r", "app", &tags);
        c.remember_referrers("http://r", "app", "sha256:a", vec!["sha256:s".into()]);
        c.forget_digests("http://r", "app", &BTreeSet::from(["sha256:a".to_string()]));
        let m = c.memo("http://r", "app");
        assert_eq!(m.tags.keys().collect::<Vec<_>>(), vec!["2.0"]);
        assert!(m.referrers.is_empty());
        assert!(c.memo("http://other", "app").tags.is_empty(), "by registry");
        c.forget("http://r", "app");
        assert!(c.memo("http://r", "app").tags.is_empty());
    }

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
        assert_eq!(
            i.config,
            Some(Descriptor {
                media_type: "application/vnd.oci.empty.v1+json".into(),
                digest: "sha256:44".into(),
                size: 2
            })
        );
        assert!(i.layers.is_empty() && i.chart.is_none());
        let index = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
            "manifests":[{"digest":"sha256:a1"},{"digest":"sha256:a2"}]}"#;
        assert_eq!(
            parse_manifest(index, "").children,
            vec!["sha256:a1", "sha256:a2"]
        );
    }

    #[test]
    fn helm_charts_describe_themselves() {
        // What `helm push` writes: no mediaType field, Helm's config type, one chart layer.
        let body = br#"{"schemaVersion":2,
            "config":{"mediaType":"application/vnd.cncf.helm.config.v1+json","digest":"sha256:c0","size":138},
            "layers":[{"mediaType":"application/vnd.cncf.helm.chart.content.v1.tar+gzip","digest":"sha256:l0","size":4914}],
            "annotations":{"org.opencontainers.image.created":"2026-10-01T00:00:00Z","org.opencontainers.image.title":"demo","org.opencontainers.image.version":"1.2.3"}}"#;
        let i = parse_manifest(body, "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(i.media_type, "application/vnd.oci.image.manifest.v1+json");
        assert_eq!(i.artifact_type.as_deref(), Some(HELM_CONFIG_MEDIA_TYPE));
        assert_eq!(i.layers.len(), 1);
        assert_eq!(i.layers[0].size, 4914);
        let cases: &[(Json, Option<Json>)] = &[
            (
                json!({"name": "demo", "version": "1.2.3", "appVersion": "1.16.0", "apiVersion": "v2"}),
                Some(json!({"name": "demo", "version": "1.2.3", "appVersion": "1.16.0"})),
            ),
            (
                json!({"name": "demo", "version": "0.1.0"}),
                Some(json!({"name": "demo", "version": "0.1.0"})),
            ),
            (json!({"name": "demo"}), None),
            (json!({"name": "demo", "version": 3}), None),
            (json!({"name": "x".repeat(300), "version": "1.0.0"}), None),
            (json!([1, 2]), None),
        ];
        for (cfg, want) in cases {
            assert_eq!(
                ChartInfo::from_config(cfg).map(|c| c.to_json()),
                *want,
                "{cfg}"
            );
        }
    }
}
