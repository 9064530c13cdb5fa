//! scripts/prereqs.sh, which `make test`, `make demo`, scripts/image.sh and .ci/run source: on
//! a machine lacking several tools and unable to install them it stops once, naming every
//! missing tool with how to get it, rather than one per run. Needs no test bed: the script runs
//! with a PATH holding only stand-ins for the tools a case has.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A fresh directory holding an executable stand-in for each of `tools`.
fn path_with(tools: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "retainer-prereqs-{}-{}",
        std::process::id(),
        tools.len()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    for t in tools {
        let p = dir.join(t);
        std::fs::write(&p, "#!/bin/sh\nexit 0\n").expect("write stand-in");
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }
    dir
}

/// Runs `retainer_prereqs PURPOSE` with only `path` on PATH and nothing else inherited, so
/// that apt-get (and sudo) cannot be found and nothing is installed.
fn run(purpose: &str, path: &Path) -> (bool, String) {
    let out = Command::new("/bin/bash")
        .current_dir(root())
        .env_clear()
        .env("PATH", path)
        .args([
            "-c",
            &format!("set -euo pipefail; . scripts/prereqs.sh; retainer_prereqs {purpose}"),
        ])
        .output()
        .expect("/bin/bash");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn every_missing_prerequisite_is_named_in_one_message() {
    let dir = path_with(&["curl", "openssl"]);
    let (ok, err) = run("test", &dir);
    assert!(!ok, "must fail when tools are missing:\n{err}");
    assert_eq!(
        err.matches("missing prerequisites").count(),
        1,
        "one message:\n{err}"
    );
    for (tool, hint) in [
        ("cargo", "rustup.rs"),
        ("go", "go.dev"),
        ("python3", "Python 3"),
        ("htpasswd", "apache2-utils"),
        ("dpkg-deb", "dpkg-deb"),
    ] {
        let line = err
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{tool} ")))
            .unwrap_or_else(|| panic!("{tool} is not named:\n{err}"));
        assert!(line.contains(hint), "{tool} without how to get it: {line}");
    }
    for present in ["curl ", "openssl "] {
        assert!(
            !err.lines().any(|l| l.trim_start().starts_with(present)),
            "{present}is on PATH yet reported:\n{err}"
        );
    }
    assert!(
        err.contains("apt-get install -y python3 apache2-utils dpkg"),
        "the Debian packages, in one command:\n{err}"
    );
    assert!(
        !err.contains("[prereqs] installing"),
        "nothing can be installed here:\n{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn nothing_is_said_when_everything_is_there() {
    let dir = path_with(&[
        "cargo", "go", "python3", "openssl", "curl", "htpasswd", "dpkg-deb", "musl-gcc",
    ]);
    for purpose in ["test", "demo", "image", "testbed", "ci"] {
        let (ok, err) = run(purpose, &dir);
        assert!(ok && err.is_empty(), "{purpose}: {err}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn the_demo_also_needs_musl_gcc() {
    let dir = path_with(&[
        "cargo", "go", "python3", "openssl", "curl", "htpasswd", "dpkg-deb",
    ]);
    let (ok, err) = run("demo", &dir);
    assert!(!ok, "{err}");
    assert!(
        err.contains("musl-gcc") && err.contains("musl-tools"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
