#!/usr/bin/env bash
# What `make soak` runs: the fault soak of tests/soak.rs (10,000 Jobs under repeated faults, then
# rounds of every fault scenario of tests/faults.rs), in release mode, against the test bed, which
# it starts if it is not running and stops again afterwards; then ten minutes of fuzzing
# (RETAINER_FUZZ_SECS). Takes half an hour or more.
#
#   RETAINER_SOAK_JOBS    Jobs of the long sweep (10000)
#   RETAINER_SOAK_QPS     its --delete-qps (50, the default)
#   RETAINER_SOAK_FAULTS  faults injected during it (12)
#   RETAINER_SOAK_ROUNDS  rounds of every scenario (2)
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

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

time cargo test --release --locked --test soak -- --ignored --nocapture --test-threads 1
# Ten minutes of fuzzing policies, expressions, objects and input files (docs/reliability.md).
time RETAINER_FUZZ_SECS=${RETAINER_FUZZ_SECS:-600} cargo test --release --locked --test fuzz -- --nocapture
