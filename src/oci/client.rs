//! A small OCI distribution client on reqwest: catalog, tags with `Link` paging, manifests by
//! digest, image config, referrers (OCI 1.1 API with the tag-schema fallback), and DELETE of a
//! manifest by digest. Auth: anonymous, basic, and the bearer-token flow with per-scope tokens.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderMap, LINK, WWW_AUTHENTICATE};
use reqwest::{Method, Response, StatusCode};
use serde_json::Value as Json;
use sha2::{Digest, Sha256};
use thiserror::Error;

use super::auth::Credentials;

pub const MANIFEST_TYPES: &str = "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json";
/// The most a manifest or config may weigh before we refuse to read it.
const MAX_DOCUMENT: usize = 4 << 20;
/// A registry that ignores paging would loop forever: stop after this many pages.
const MAX_PAGES: usize = 10_000;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum RegistryError {
    #[error("{action}: registry {registry} is unreachable: {message}")]
    Unreachable {
        action: String,
        registry: String,
        message: String,
    },
    #[error("{action}: HTTP {status} {code}: {message}")]
    Http {
        action: String,
        status: u16,
        code: String,
        message: String,
    },
    #[error(
        "{action}: the registry does not allow deleting manifests (HTTP {status} {code}); enable deletes in its configuration"
    )]
    DeleteUnsupported {
        action: String,
        status: u16,
        code: String,
    },
    #[error("{action}: {message}")]
    Protocol { action: String, message: String },
}

impl RegistryError {
    /// Whether the registry refused our credentials (or their absence).
    pub fn is_auth(&self) -> bool {
        matches!(
            self,
            RegistryError::Http {
                status: 401 | 403,
                ..
            }
        )
    }
}

/// Requests made, by kind: what a sweep costs.
#[derive(Debug, Default)]
pub struct RequestCounts {
    pub catalog: AtomicU64,
    pub tag_lists: AtomicU64,
    pub manifest_heads: AtomicU64,
    pub manifest_gets: AtomicU64,
    pub blob_gets: AtomicU64,
    pub referrers: AtomicU64,
    pub deletes: AtomicU64,
    pub tokens: AtomicU64,
}

impl RequestCounts {
    pub fn manifest_requests(&self) -> u64 {
        self.manifest_heads.load(Ordering::Relaxed) + self.manifest_gets.load(Ordering::Relaxed)
    }
}

pub struct RegistryClient {
    base: String,
    host: String,
    http: reqwest::Client,
    creds: Option<Credentials>,
    tokens: Mutex<HashMap<String, String>>,
    pub counts: RequestCounts,
}

/// A manifest as fetched: its digest, media type and bytes.
pub struct Fetched {
    pub digest: String,
    pub media_type: String,
    pub body: Vec<u8>,
}

fn sha256_digest(bytes: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(bytes))
}

/// The next page from a `Link: <url>; rel="next"` header.
fn next_link(headers: &HeaderMap) -> Option<String> {
    let link = headers.get(LINK)?.to_str().ok()?;
    link.split(',')
        .find(|l| l.contains("rel=\"next\""))
        .and_then(|l| {
            let start = l.find('<')? + 1;
            let end = l.find('>')?;
            Some(l[start..end].to_string())
        })
}

/// `Bearer realm="..",service="..",scope=".."` → its parameters.
fn challenge_params(header: &str) -> (String, HashMap<String, String>) {
    let (scheme, rest) = header.split_once(' ').unwrap_or((header, ""));
    let mut params = HashMap::new();
    let mut rest = rest.trim();
    while !rest.is_empty() {
        let Some((k, after)) = rest.split_once('=') else {
            break;
        };
        let k = k.trim().trim_start_matches(',').trim().to_ascii_lowercase();
        let (v, remaining) = if let Some(stripped) = after.strip_prefix('"') {
            match stripped.find('"') {
                Some(end) => (stripped[..end].to_string(), &stripped[end + 1..]),
                None => (stripped.to_string(), ""),
            }
        } else {
            match after.find(',') {
                Some(end) => (after[..end].to_string(), &after[end..]),
                None => (after.to_string(), ""),
            }
        };
        params.insert(k, v);
        rest = remaining.trim_start_matches(',').trim();
    }
    (scheme.to_ascii_lowercase(), params)
}

impl RegistryClient {
    /// `url` is the registry's base URL, http:// or https://.
    pub fn new(
        url: &str,
        creds: Option<Credentials>,
        timeout: Duration,
    ) -> Result<RegistryClient, RegistryError> {
        let base = url.trim_end_matches('/').to_string();
        let host =
            crate::engine::registry_host(&base).map_err(|message| RegistryError::Protocol {
                action: "configuring the registry client".into(),
                message,
            })?;
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("retainer/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| RegistryError::Protocol {
                action: "configuring the registry client".into(),
                message: e.to_string(),
            })?;
        Ok(RegistryClient {
            base,
            host,
            http,
            creds,
            tokens: Mutex::new(HashMap::new()),
            counts: RequestCounts::default(),
        })
    }

    pub fn host(&self) -> &str {
        &self.host
    }

    fn unreachable(&self, action: &str, e: reqwest::Error) -> RegistryError {
        let message = if e.is_timeout() {
            "timed out".to_string()
        } else {
            e.to_string()
        };
        RegistryError::Unreachable {
            action: action.into(),
            registry: self.host.clone(),
            message,
        }
    }

    async fn http_error(action: &str, resp: Response) -> RegistryError {
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap_or_default();
        let parsed: Option<Json> = serde_json::from_str(&body).ok();
        let first = parsed
            .as_ref()
            .and_then(|j| j.pointer("/errors/0").cloned());
        let code = first
            .as_ref()
            .and_then(|e| e.get("code"))
            .and_then(Json::as_str)
            .unwrap_or("")
            .to_string();
        let message = first
            .as_ref()
            .and_then(|e| e.get("message"))
            .and_then(Json::as_str)
            .map(String::from)
            .unwrap_or_else(|| body.chars().take(200).collect());
        RegistryError::Http {
            action: action.into(),
            status,
            code,
            message,
        }
    }

    /// Sends a request, answering an auth challenge once: basic credentials, or a bearer token
    /// for `scope` (`repository:<name>:<actions>`).
    async fn send(
        &self,
        action: &str,
        method: Method,
        url: &str,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<Response, RegistryError> {
        let build = |auth: Option<String>| {
            let mut rb = self.http.request(method.clone(), url);
            if let Some(a) = accept {
                rb = rb.header(ACCEPT, a);
            }
            if let Some(a) = auth {
                rb = rb.header(AUTHORIZATION, a);
            }
            rb
        };
        let cached = self.tokens.lock().ok().and_then(|t| t.get(scope).cloned());
        let first = build(cached.map(|t| format!("Bearer {t}")))
            .send()
            .await
            .map_err(|e| self.unreachable(action, e))?;
        if first.status() != StatusCode::UNAUTHORIZED {
            return Ok(first);
        }
        let challenge = first
            .headers()
            .get(WWW_AUTHENTICATE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let (scheme, params) = challenge_params(&challenge);
        let auth = match scheme.as_str() {
            "basic" => match &self.creds {
                Some(c) => basic(c),
                None => return Err(Self::http_error(action, first).await),
            },
            "bearer" => {
                let token = self.token(action, &params, scope).await?;
                if let Ok(mut t) = self.tokens.lock() {
                    t.insert(scope.to_string(), token.clone());
                }
                format!("Bearer {token}")
            }
            _ => return Err(Self::http_error(action, first).await),
        };
        build(Some(auth))
            .send()
            .await
            .map_err(|e| self.unreachable(action, e))
    }

    async fn token(
        &self,
        action: &str,
        params: &HashMap<String, String>,
        scope: &str,
    ) -> Result<String, RegistryError> {
        let realm = params.get("realm").ok_or_else(|| RegistryError::Protocol {
            action: action.into(),
            message: "bearer challenge without a realm".into(),
        })?;
        let mut query: Vec<(&str, &str)> = vec![("scope", scope)];
        if let Some(s) = params.get("service") {
            query.push(("service", s));
        }
        let mut rb = self.http.get(realm).query(&query);
        if let Some(c) = &self.creds {
            rb = rb.header(AUTHORIZATION, basic(c));
        }
        self.counts.tokens.fetch_add(1, Ordering::Relaxed);
        let resp = rb.send().await.map_err(|e| self.unreachable(action, e))?;
        if !resp.status().is_success() {
            return Err(Self::http_error(&format!("{action} (token)"), resp).await);
        }
        let body: Json = resp.json().await.map_err(|e| RegistryError::Protocol {
            action: action.into(),
            message: e.to_string(),
        })?;
        body.get("token")
            .or_else(|| body.get("access_token"))
            .and_then(Json::as_str)
            .map(String::from)
            .ok_or_else(|| RegistryError::Protocol {
                action: action.into(),
                message: "token response without a token".into(),
            })
    }

    fn url(&self, path_or_url: &str) -> String {
        if path_or_url.starts_with("http://") || path_or_url.starts_with("https://") {
            path_or_url.to_string()
        } else {
            format!("{}{}", self.base, path_or_url)
        }
    }

    /// Follows `Link` pages of a list endpoint, collecting `field` arrays.
    async fn paged(
        &self,
        action: &str,
        first: &str,
        field: &str,
        scope: &str,
        counter: &AtomicU64,
    ) -> Result<Vec<String>, RegistryError> {
        let mut out: Vec<String> = Vec::new();
        let mut seen_urls = BTreeSet::new();
        let mut seen_items = BTreeSet::new();
        let mut url = self.url(first);
        for _ in 0..MAX_PAGES {
            counter.fetch_add(1, Ordering::Relaxed);
            let resp = self.send(action, Method::GET, &url, None, scope).await?;
            if resp.status() == StatusCode::NOT_FOUND && field == "tags" {
                return Ok(out);
            }
            if !resp.status().is_success() {
                return Err(Self::http_error(action, resp).await);
            }
            let next = next_link(resp.headers());
            let body: Json = resp.json().await.map_err(|e| RegistryError::Protocol {
                action: action.into(),
                message: e.to_string(),
            })?;
            let mut added = 0;
            for v in body
                .get(field)
                .and_then(Json::as_array)
                .into_iter()
                .flatten()
            {
                if let Some(s) = v.as_str()
                    && seen_items.insert(s.to_string())
                {
                    out.push(s.to_string());
                    added += 1;
                }
            }
            seen_urls.insert(url.clone());
            match next {
                // A registry that ignores `n`/`last` repeats itself: stop when a page adds
                // nothing or a link comes round again.
                Some(n) if added > 0 && !seen_urls.contains(&self.url(&n)) => url = self.url(&n),
                _ => return Ok(out),
            }
        }
        Ok(out)
    }

    pub async fn catalog(&self) -> Result<Vec<String>, RegistryError> {
        self.paged(
            "listing the catalog",
            "/v2/_catalog?n=1000",
            "repositories",
            "registry:catalog:*",
            &self.counts.catalog,
        )
        .await
    }

    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        self.paged(
            &format!("listing tags of {repo}"),
            &format!("/v2/{repo}/tags/list?n=1000"),
            "tags",
            &pull(repo),
            &self.counts.tag_lists,
        )
        .await
    }

    /// Sends a request for which 404 means "not there": None.
    async fn optional(
        &self,
        action: &str,
        method: Method,
        path: &str,
        accept: Option<&str>,
        scope: &str,
    ) -> Result<Option<Response>, RegistryError> {
        let url = self.url(path);
        let resp = self.send(action, method, &url, accept, scope).await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(Self::http_error(action, resp).await);
        }
        Ok(Some(resp))
    }

    /// The digest a tag (or digest) points at, by HEAD; None when it does not exist.
    pub async fn resolve(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<String>, RegistryError> {
        let action = format!("resolving {repo}:{reference}");
        self.counts.manifest_heads.fetch_add(1, Ordering::Relaxed);
        let path = format!("/v2/{repo}/manifests/{reference}");
        let Some(resp) = self
            .optional(
                &action,
                Method::HEAD,
                &path,
                Some(MANIFEST_TYPES),
                &pull(repo),
            )
            .await?
        else {
            return Ok(None);
        };
        match resp
            .headers()
            .get("docker-content-digest")
            .and_then(|v| v.to_str().ok())
        {
            Some(d) => Ok(Some(d.to_string())),
            // Without the header the body tells: fetch it.
            None => Ok(self.manifest(repo, reference).await?.map(|m| m.digest)),
        }
    }

    pub async fn manifest(
        &self,
        repo: &str,
        reference: &str,
    ) -> Result<Option<Fetched>, RegistryError> {
        let action = format!("fetching manifest {repo}@{reference}");
        self.counts.manifest_gets.fetch_add(1, Ordering::Relaxed);
        let path = format!("/v2/{repo}/manifests/{reference}");
        let Some(resp) = self
            .optional(
                &action,
                Method::GET,
                &path,
                Some(MANIFEST_TYPES),
                &pull(repo),
            )
            .await?
        else {
            return Ok(None);
        };
        let media_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(&action, e))?
            .to_vec();
        if body.len() > MAX_DOCUMENT {
            return Err(RegistryError::Protocol {
                action,
                message: format!("manifest of {} bytes is too large", body.len()),
            });
        }
        let digest = sha256_digest(&body);
        if reference.starts_with("sha256:") && digest != reference {
            return Err(RegistryError::Protocol {
                action,
                message: format!("content digest {digest} does not match"),
            });
        }
        Ok(Some(Fetched {
            digest,
            media_type,
            body,
        }))
    }

    pub async fn blob_json(&self, repo: &str, digest: &str) -> Result<Option<Json>, RegistryError> {
        let action = format!("fetching blob {repo}@{digest}");
        self.counts.blob_gets.fetch_add(1, Ordering::Relaxed);
        let path = format!("/v2/{repo}/blobs/{digest}");
        let Some(resp) = self
            .optional(&action, Method::GET, &path, None, &pull(repo))
            .await?
        else {
            return Ok(None);
        };
        let body = resp
            .bytes()
            .await
            .map_err(|e| self.unreachable(&action, e))?;
        if body.len() > MAX_DOCUMENT {
            return Ok(None);
        }
        Ok(serde_json::from_slice(&body).ok())
    }

    /// Digests of the artifacts that refer to `digest`: the referrers API, else the
    /// `sha256-<hex>` tag-schema index.
    pub async fn referrers(&self, repo: &str, digest: &str) -> Result<Vec<String>, RegistryError> {
        let action = format!("listing referrers of {repo}@{digest}");
        self.counts.referrers.fetch_add(1, Ordering::Relaxed);
        let url = self.url(&format!("/v2/{repo}/referrers/{digest}"));
        let resp = self
            .send(
                &action,
                Method::GET,
                &url,
                Some("application/vnd.oci.image.index.v1+json"),
                &pull(repo),
            )
            .await?;
        let index: Json = if resp.status().is_success() {
            resp.json().await.map_err(|e| RegistryError::Protocol {
                action: action.clone(),
                message: e.to_string(),
            })?
        } else if resp.status() == StatusCode::NOT_FOUND {
            let tag = digest.replacen(':', "-", 1);
            match self.manifest(repo, &tag).await? {
                Some(f) => serde_json::from_slice(&f.body).unwrap_or(Json::Null),
                None => return Ok(Vec::new()),
            }
        } else {
            return Err(Self::http_error(&action, resp).await);
        };
        Ok(index
            .get("manifests")
            .and_then(Json::as_array)
            .into_iter()
            .flatten()
            .filter_map(|m| m.get("digest").and_then(Json::as_str).map(String::from))
            .collect())
    }

    /// Deletes a manifest by digest. Gone already is success.
    pub async fn delete(&self, repo: &str, digest: &str) -> Result<(), RegistryError> {
        let action = format!("deleting {repo}@{digest}");
        self.counts.deletes.fetch_add(1, Ordering::Relaxed);
        let url = self.url(&format!("/v2/{repo}/manifests/{digest}"));
        let scope = format!("repository:{repo}:pull,delete");
        let resp = self
            .send(&action, Method::DELETE, &url, None, &scope)
            .await?;
        let status = resp.status();
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        let err = Self::http_error(&action, resp).await;
        match err {
            RegistryError::Http {
                status: 405, code, ..
            } => Err(RegistryError::DeleteUnsupported {
                action,
                status: 405,
                code,
            }),
            RegistryError::Http { status, code, .. } if code == "UNSUPPORTED" => {
                Err(RegistryError::DeleteUnsupported {
                    action,
                    status,
                    code,
                })
            }
            other => Err(other),
        }
    }
}

fn pull(repo: &str) -> String {
    format!("repository:{repo}:pull")
}

fn basic(c: &Credentials) -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password))
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_challenges_and_links() {
        let (scheme, p) = challenge_params(
            r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:a/b:pull""#,
        );
        assert_eq!(scheme, "bearer");
        assert_eq!(p["realm"], "https://auth.example.com/token");
        assert_eq!(p["service"], "registry.example.com");
        assert_eq!(p["scope"], "repository:a/b:pull");
        let (scheme, p) = challenge_params(r#"Basic realm="Registry Realm""#);
        assert_eq!(
            (scheme.as_str(), p["realm"].as_str()),
            ("basic", "Registry Realm")
        );
        let mut h = HeaderMap::new();
        h.insert(
            LINK,
            r#"</v2/app/tags/list?last=v9&n=2>; rel="next""#.parse().unwrap(),
        );
        assert_eq!(
            next_link(&h).as_deref(),
            Some("/v2/app/tags/list?last=v9&n=2")
        );
    }
}
