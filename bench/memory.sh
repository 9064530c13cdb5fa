#!/usr/bin/env bash
# Controller memory: VmRSS and peak VmHWM of `retainer run` idle, and with MEMORY_SECRETS
# Secrets of MEMORY_SECRET_BYTES bytes of data and MEMORY_JOBS finished Jobs under 10 policies,
# times each multiple in MEMORY_SCALES (objects added to the last step's), with MEMORY_RUNS
# fresh processes each. The defaults give 1,000, 10,000, 40,000 (the target's 20,000 Secrets
# and 20,000 Jobs, MEMORY_TARGET_SCALE) and 100,000 objects. Measures the glibc release binary
# and, in the same runs, the container image's static musl binary (musl's allocator is not
# glibc's), unless MEMORY_MUSL=0. Writes bench/results/memory.md.
#
#   MEMORY_SECRETS=500 MEMORY_JOBS=500 MEMORY_SCALES=1,10,40,100 MEMORY_RUNS=3 bench/memory.sh
#
# MEMORY_MIMALLOC=1 (the default in full runs) also measures a build with mimalloc as the
# allocator (`--features mimalloc`), and MEMORY_FULL_EVAL=1 (the default in full runs) the
# glibc build with `--incremental-evaluation=false`, in the same runs.
#
# BENCH_QUICK=1: 1,000 and 4,000 objects, one run, glibc only (no target verdict).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECRETS=${MEMORY_SECRETS:-500}
JOBS=${MEMORY_JOBS:-500}
BYTES=${MEMORY_SECRET_BYTES:-8192}
RUNS=${MEMORY_RUNS:-$(bench_size 3 1)}
SCALES=${MEMORY_SCALES:-$(bench_size 1,10,40,100 1,4)}
TARGET_SCALE=${MEMORY_TARGET_SCALE:-40}
MUSL=${MEMORY_MUSL:-$(bench_size 1 0)}
MIMALLOC=${MEMORY_MIMALLOC:-$(bench_size 1 0)}
FULL_EVAL=${MEMORY_FULL_EVAL:-$(bench_size 1 0)}
cmdline="MEMORY_SECRETS=$SECRETS MEMORY_JOBS=$JOBS MEMORY_SCALES=$SCALES MEMORY_TARGET_SCALE=$TARGET_SCALE MEMORY_RUNS=$RUNS bench/memory.sh"
[ -n "${MEMORY_SECRET_BYTES:-}" ] && cmdline="MEMORY_SECRET_BYTES=$BYTES $cmdline"
[ "$MUSL" = 0 ] && cmdline="MEMORY_MUSL=0 $cmdline"
[ "$MIMALLOC" = 0 ] && cmdline="MEMORY_MIMALLOC=0 $cmdline"
[ "$FULL_EVAL" = 0 ] && cmdline="MEMORY_FULL_EVAL=0 $cmdline"

alt=()
if [ "$MUSL" != 0 ]; then
  # The image's build (scripts/image.sh): static, against musl; musl-gcc compiles the C
  # parts of the TLS library.
  # shellcheck source=scripts/prereqs.sh
  . scripts/prereqs.sh
  retainer_prereqs image || exit 1
  rustup target add x86_64-unknown-linux-musl >/dev/null
  CC_x86_64_unknown_linux_musl=musl-gcc cargo build --quiet --release --locked \
    --target x86_64-unknown-linux-musl --bin retainer
  musl_dir=$(mktemp -d /tmp/retainer-bench-musl.XXXXXX)
  BENCH_CLEANUP+=("rm -rf '$musl_dir'")
  cp "${CARGO_TARGET_DIR:-$ROOT/target}/x86_64-unknown-linux-musl/release/retainer" "$musl_dir/retainer-musl"
  alt=(--alt-retainer "$musl_dir/retainer-musl" --alt-name "musl (container image)")
fi
if [ "$MIMALLOC" != 0 ]; then
  # Built before bench_run's own release build, which then rebuilds the default binary.
  cargo build --quiet --release --locked --features mimalloc --bin retainer
  mi_dir=$(mktemp -d /tmp/retainer-bench-mimalloc.XXXXXX)
  BENCH_CLEANUP+=("rm -rf '$mi_dir'")
  cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/retainer" "$mi_dir/retainer-mimalloc"
  alt+=(--alt-retainer "$mi_dir/retainer-mimalloc" --alt-name "glibc with mimalloc (--features mimalloc)")
fi
[ "$FULL_EVAL" != 0 ] && alt+=(--full-evaluation-too)

bench_run memory memory "$cmdline" "$RUNS" --secrets "$SECRETS" --jobs "$JOBS" \
  --secret-bytes "$BYTES" --runs "$RUNS" --scales "$SCALES" --target-scale "$TARGET_SCALE" \
  ${alt[@]+"${alt[@]}"}
