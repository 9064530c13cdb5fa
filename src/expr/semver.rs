//! Kubernetes' CEL semver library on the `semver` crate: `semver(s[, normalize])`,
//! `isSemver(s[, normalize])`, `.major()`, `.minor()`, `.patch()`, `.compareTo()`,
//! `.isGreaterThan()`, `.isLessThan()`. Precedence ignores build metadata, as SemVer 2.0 says.

use std::cmp::Ordering;

use cel::objects::Opaque;

/// A semantic version as a CEL opaque value.
#[derive(Clone, Debug)]
pub struct Semver(pub semver::Version);

/// CEL's `==` on semvers is precedence, as in Kubernetes: `1.0.0+a == 1.0.0+b`, since build
/// metadata does not order versions and `compareTo` says 0.
impl PartialEq for Semver {
    fn eq(&self, other: &Semver) -> bool {
        self.cmp_precedence(other) == Ordering::Equal
    }
}

impl Eq for Semver {}

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
            normalize_version(s).map_err(|e| format!("invalid semver '{s}': {e}"))?
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

/// Kubernetes' normalization, step for step, because a policy must accept exactly the versions
/// it accepts there: only the first two dots split (so the third part keeps its pre-release and
/// build suffix and loses leading zeros with them: `1.2.03-rc` is `1.2.3-rc`), and a version
/// shortened to one or two parts may not carry a suffix at all (`1.2-rc` is refused).
fn normalize_version(s: &str) -> Result<String, &'static str> {
    let s = s.strip_prefix('v').unwrap_or(s);
    let mut parts: Vec<String> = s
        .splitn(3, '.')
        .map(|p| {
            if p.len() < 2 {
                return p.to_string();
            }
            let trimmed = p.trim_start_matches('0');
            if trimmed.starts_with(|c: char| c.is_ascii_digit()) {
                trimmed.to_string()
            } else {
                format!("0{trimmed}")
            }
        })
        .collect();
    if parts.len() < 3 {
        if parts.last().is_some_and(|p| p.contains(['+', '-'])) {
            return Err("short version cannot contain pre-release or build metadata");
        }
        parts.resize(3, "0".to_string());
    }
    Ok(parts.join("."))
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
            ("1.2.03-rc", "1.2.3-rc"),
        ] {
            assert_eq!(Semver::parse(input, true).unwrap().0.to_string(), want);
        }
        assert!(Semver::parse("v1.2.3", false).is_err());
        assert!(Semver::parse("1.2", false).is_err());
        assert!(Semver::parse("1.2-rc.1", true).is_err());
        assert!(Semver::parse("1+build", true).is_err());
        // Only the leading zeros of the patch number go, not those of a numeric pre-release.
        assert!(Semver::parse("1.2.0-01", true).is_err());
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
