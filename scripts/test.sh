#!/usr/bin/env bash
# Everything `make test` runs: lints, unit tests, and the real-server tests against the test
# bed, which it starts if it is not running and stops again afterwards.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
retainer_prereqs test || exit 1

started=0
if [ -z "${RETAINER_E2E:-}" ]; then
  if ! scripts/testbed.sh status >/dev/null 2>&1; then
    scripts/testbed.sh up
    started=1
  fi
  eval "$(scripts/testbed.sh env)"
fi
cleanup() { if [ $started = 1 ]; then scripts/testbed.sh down; fi; }
trap cleanup EXIT

cargo fmt --all --check
cargo clippy --all-targets --locked -- -D warnings
cargo run --quiet --locked -- crds | diff -u crds/retainer.dev.yaml - \
  || { echo "crds/ drifted: run 'cargo run -- crds > crds/retainer.dev.yaml'" >&2; exit 1; }
cargo test --all-targets --locked
