# Shared by bench/sweep.sh, bench/memory.sh and bench/reaction.sh: the test bed, a release
# build of the controller and of the driver (bench/driver.rs), and running the driver.
#
# The benchmarks run on a test bed of their own (state in target/bench-testbed, or
# BENCH_TESTBED_DIR), started for the run and stopped after it unless it is already up: a
# controller without leader election acts on every policy in the cluster, so one sharing a bed
# with `make test` would sweep the tests' policies, and their policies (slow registries, runaway
# expressions) would be measured as part of retainer's reaction. BENCH_KUBECONFIG names another
# cluster instead (the TTL comparison at other client limits is then skipped). BENCH_BIN_DIR
# names prebuilt `retainer` and `bench-driver` binaries instead of building (BENCH_REV then says
# what they were built from); BENCH_LOG_DIR keeps the controller logs (default: a new /tmp
# directory).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

BENCH_CLEANUP=()
bench_cleanup() {
  local c
  for c in "${BENCH_CLEANUP[@]}"; do eval "$c" || true; done
}
trap bench_cleanup EXIT

bench_log() { printf '[bench] %s\n' "$*" >&2; }

bench_bed() {
  if [ -n "${BENCH_KUBECONFIG:-}" ]; then
    export KUBECONFIG=$BENCH_KUBECONFIG
    TESTBED_ARGS=()
    return
  fi
  local bed=${BENCH_TESTBED_DIR:-$ROOT/target/bench-testbed}
  export RETAINER_TESTBED_DIR=$bed
  if ! scripts/testbed.sh status >/dev/null 2>&1; then
    scripts/testbed.sh up
    BENCH_CLEANUP+=("RETAINER_TESTBED_DIR='$bed' scripts/testbed.sh down")
  fi
  eval "$(scripts/testbed.sh env)"
  TESTBED_ARGS=(--testbed "$ROOT/scripts/testbed.sh")
}

bench_build() {
  if [ -n "${BENCH_BIN_DIR:-}" ]; then
    BIN=$BENCH_BIN_DIR
    BENCH_REV=${BENCH_REV:-prebuilt}
    return
  fi
  BENCH_REV=${BENCH_REV:-$(git describe --always --dirty 2>/dev/null || echo unknown)}
  cargo build --release --quiet --bin retainer --example bench-driver
  local target=${CARGO_TARGET_DIR:-$ROOT/target}
  # Copies: a rebuild during a long run must not swap the binary being measured.
  BIN=$(mktemp -d /tmp/retainer-bench-bin.XXXXXX)
  BENCH_CLEANUP+=("rm -rf '$BIN'")
  cp "$target/release/retainer" "$target/release/examples/bench-driver" "$BIN/"
}

# bench_run NAME SUBCOMMAND COMMAND-LINE [DRIVER ARGS...]: writes bench/results/NAME.md.
bench_run() {
  local name=$1 sub=$2 cmdline=$3
  shift 3
  bench_bed
  bench_build
  local logs=${BENCH_LOG_DIR:-$(mktemp -d /tmp/retainer-bench-logs.XXXXXX)}
  mkdir -p "$logs" bench/results
  bench_log "controller logs: $logs"
  "$BIN/bench-driver" "$sub" \
    --retainer "$BIN/retainer" \
    --out "bench/results/$name.md" \
    --command-line "$cmdline" \
    --rev "$BENCH_REV" \
    --log-dir "$logs" \
    ${TESTBED_ARGS[@]+"${TESTBED_ARGS[@]}"} \
    "$@"
}
