//! Kubernetes' CEL semver library on the `semver` crate: `semver(s[, normalize])`,
//! `isSemver(s[, normalize])`, `.major()`, `.minor()`, `.patch()`, `.compareTo()`,
//! `.isGreaterThan()`, `.isLessThan()`. Precedence ignores build metadata, as SemVer 2.0 says.

use std::cmp::Ordering;

use cel::objects::Opaque;

/// A semantic version as a CEL opaque value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Semver(pub semver::Version);

impl Opaque for Semver {
    fn runtime_type_name(&self) -> &str {
        "kubernetes.Semver"
    }
}

impl Semver {
    /// Parses strictly, or, with `normalize`, the way Kubernetes does: an optional leading `v`,
    /// missing minor and patch filled with 0, and leading zeros dropped.
    pub fn parse(s: &str, normalize: bool) -> Result<Semver, String> {
        let text = if normalize {
            normalize_version(s)
        } else {
            s.to_string()
        };
        semver::Version::parse(&text)
            .map(Semver)
            .map_err(|e| format!("invalid semver '{s}': {e}"))
    }

    pub fn cmp_precedence(&self, other: &Semver) -> Ordering {
        self.0.cmp_precedence(&other.0)
    }
}

fn normalize_version(s: &str) -> String {
    let s = s.strip_prefix('v').unwrap_or(s);
    // Split off pre-release and build suffixes; only the core is normalised.
    let split = s.find(['-', '+']).unwrap_or(s.len());
    let (core, suffix) = s.split_at(split);
    let mut parts: Vec<String> = core
        .split('.')
        .map(|p| {
            let trimmed = p.trim_start_matches('0');
            if trimmed.is_empty() && !p.is_empty() {
                "0".to_string()
            } else {
                trimmed.to_string()
            }
        })
        .collect();
    while parts.len() < 3 {
        parts.push("0".to_string());
    }
    format!("{}{}", parts.join("."), suffix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_like_kubernetes() {
        for (input, want) in [
            ("v1", "1.0.0"),
            ("v1.2", "1.2.0"),
            ("1.02.003", "1.2.3"),
            ("v1.2.3-rc.1+build.5", "1.2.3-rc.1+build.5"),
            ("1.0.0", "1.0.0"),
        ] {
            assert_eq!(Semver::parse(input, true).unwrap().0.to_string(), want);
        }
        assert!(Semver::parse("v1.2.3", false).is_err());
        assert!(Semver::parse("1.2", false).is_err());
    }

    #[test]
    fn precedence_ignores_build_metadata() {
        let a = Semver::parse("1.2.3+a", false).unwrap();
        let b = Semver::parse("1.2.3+b", false).unwrap();
        assert_eq!(a.cmp_precedence(&b), Ordering::Equal);
        let rc = Semver::parse("1.2.3-rc.1", false).unwrap();
        assert_eq!(rc.cmp_precedence(&a), Ordering::Less);
    }
}
