#!/usr/bin/env bash
# Controller memory (issue #7, item 3): VmRSS and peak VmHWM of `retainer run` idle, and with
# MEMORY_SECRETS Secrets of MEMORY_SECRET_BYTES bytes of data and MEMORY_JOBS finished Jobs under
# 10 policies, MEMORY_RUNS fresh processes each. Writes bench/results/memory.md.
#
#   MEMORY_SECRETS=20000 MEMORY_JOBS=20000 MEMORY_RUNS=3 bench/memory.sh
#
# BENCH_QUICK=1: 2,000 of each, one run.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SECRETS=${MEMORY_SECRETS:-$(bench_size 20000 2000)}
JOBS=${MEMORY_JOBS:-$(bench_size 20000 2000)}
BYTES=${MEMORY_SECRET_BYTES:-8192}
RUNS=${MEMORY_RUNS:-$(bench_size 3 1)}
cmdline="MEMORY_SECRETS=$SECRETS MEMORY_JOBS=$JOBS MEMORY_RUNS=$RUNS bench/memory.sh"
[ -n "${MEMORY_SECRET_BYTES:-}" ] && cmdline="MEMORY_SECRET_BYTES=$BYTES $cmdline"

bench_run memory memory "$cmdline" "$RUNS" --secrets "$SECRETS" --jobs "$JOBS" \
  --secret-bytes "$BYTES" --runs "$RUNS"
