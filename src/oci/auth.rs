//! Registry credentials from a `kubernetes.io/dockerconfigjson` Secret, matched to a registry
//! the way the kubelet matches them. Credential helpers named in such a config are never run:
//! a user's Secret must not make the controller execute programs.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::Deserialize;
use thiserror::Error;

#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Credentials {
    // Never print the password.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum CredentialsError {
    #[error("the Secret has no .dockerconfigjson key; want type kubernetes.io/dockerconfigjson")]
    MissingKey,
    #[error("the Secret's .dockerconfigjson is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("the Secret's entry for {0} has an auth field that is not base64 of user:password")]
    InvalidAuth(String),
    #[error("the Secret has no credentials for registry {0}")]
    NoMatch(String),
}

#[derive(Deserialize)]
struct DockerConfig {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// `https://host:port/v1/` → `host:port`, lowercased.
fn key_host(key: &str) -> String {
    let k = key.trim();
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    let k = k.split('/').next().unwrap_or(k);
    crate::refs::normalize_registry(k)
}

/// Kubelet-style: the hosts must match, `*` matching one DNS label; a key without a port matches
/// only a registry without one.
fn host_matches(pattern: &str, host: &str) -> bool {
    let (p_host, p_port) = pattern
        .split_once(':')
        .map(|(h, p)| (h, Some(p)))
        .unwrap_or((pattern, None));
    let (h_host, h_port) = host
        .split_once(':')
        .map(|(h, p)| (h, Some(p)))
        .unwrap_or((host, None));
    if p_port != h_port {
        return false;
    }
    let p_labels: Vec<&str> = p_host.split('.').collect();
    let h_labels: Vec<&str> = h_host.split('.').collect();
    p_labels.len() == h_labels.len()
        && p_labels
            .iter()
            .zip(&h_labels)
            .all(|(p, h)| *p == "*" || p == h)
}

/// Credentials for `registry` (host[:port]) from the Secret's `.dockerconfigjson` bytes.
pub fn credentials_for(
    dockerconfigjson: &[u8],
    registry: &str,
) -> Result<Credentials, CredentialsError> {
    let cfg: DockerConfig = serde_json::from_slice(dockerconfigjson)
        .map_err(|e| CredentialsError::InvalidJson(e.to_string()))?;
    let host = crate::refs::normalize_registry(registry);
    // An exact key wins over a wildcard one.
    let mut matches: Vec<(&String, &Entry)> = cfg
        .auths
        .iter()
        .filter(|(k, _)| host_matches(&key_host(k), &host))
        .collect();
    matches.sort_by_key(|(k, _)| key_host(k).contains('*'));
    let (key, entry) = matches
        .into_iter()
        .next()
        .ok_or_else(|| CredentialsError::NoMatch(host.clone()))?;
    if let (Some(u), Some(p)) = (&entry.username, &entry.password) {
        return Ok(Credentials {
            username: u.clone(),
            password: p.clone(),
        });
    }
    let auth = entry
        .auth
        .as_deref()
        .ok_or_else(|| CredentialsError::InvalidAuth(key.clone()))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|_| CredentialsError::InvalidAuth(key.clone()))?;
    let text =
        String::from_utf8(decoded).map_err(|_| CredentialsError::InvalidAuth(key.clone()))?;
    let (u, p) = text
        .split_once(':')
        .ok_or_else(|| CredentialsError::InvalidAuth(key.clone()))?;
    Ok(Credentials {
        username: u.to_string(),
        password: p.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(entries: &[(&str, &str)]) -> Vec<u8> {
        let auths: serde_json::Map<String, serde_json::Value> = entries
            .iter()
            .map(|(k, up)| (k.to_string(), serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode(up)})))
            .collect();
        serde_json::to_vec(&serde_json::json!({"auths": auths})).unwrap()
    }

    #[test]
    fn matching_like_the_kubelet() {
        let c = cfg(&[
            ("https://registry.example.com/v1/", "exact:1"),
            ("*.example.com", "wild:2"),
            ("127.0.0.1:5000", "local:3"),
            ("https://index.docker.io/v1/", "hub:4"),
        ]);
        let user = |r: &str| credentials_for(&c, r).map(|c| c.username);
        assert_eq!(user("registry.example.com").unwrap(), "exact");
        assert_eq!(user("other.example.com").unwrap(), "wild");
        assert_eq!(user("127.0.0.1:5000").unwrap(), "local");
        assert_eq!(user("docker.io").unwrap(), "hub");
        assert_eq!(
            user("127.0.0.1:5001"),
            Err(CredentialsError::NoMatch("127.0.0.1:5001".into()))
        );
        assert_eq!(
            user("a.b.example.com"),
            Err(CredentialsError::NoMatch("a.b.example.com".into()))
        );
        assert!(matches!(
            user("registry.example.com:443"),
            Err(CredentialsError::NoMatch(_))
        ));
    }

    #[test]
    fn explicit_username_and_password_and_errors() {
        let c = br#"{"auths": {"r.io": {"username": "u", "password": "p:with:colons"}}}"#;
        assert_eq!(
            credentials_for(c, "r.io").unwrap(),
            Credentials {
                username: "u".into(),
                password: "p:with:colons".into()
            }
        );
        assert!(matches!(
            credentials_for(b"nope", "r.io"),
            Err(CredentialsError::InvalidJson(_))
        ));
        assert!(matches!(
            credentials_for(br#"{"auths": {"r.io": {"auth": "!!"}}}"#, "r.io"),
            Err(CredentialsError::InvalidAuth(_))
        ));
        let dbg = format!("{:?}", credentials_for(c, "r.io").unwrap());
        assert!(!dbg.contains("colons"), "{dbg}");
    }
}
