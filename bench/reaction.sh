#!/usr/bin/env bash
# Reaction (issue #7, item 4): from a server-side apply of a policy to its Ready condition and
# summary in status, p50 and p99 over REACTION_APPLIES applies, with REACTION_JOBS Jobs
# governed, for each --debounce in REACTION_DEBOUNCES (default 500ms, the default, and 50ms),
# REACTION_RUNS fresh controllers each. Writes bench/results/reaction.md.
#
#   REACTION_JOBS=1000 REACTION_APPLIES=50 REACTION_RUNS=3 bench/reaction.sh
#
# BENCH_QUICK=1: 200 Jobs, 10 applies, one run.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

JOBS=${REACTION_JOBS:-$(bench_size 1000 200)}
APPLIES=${REACTION_APPLIES:-$(bench_size 50 10)}
RUNS=${REACTION_RUNS:-$(bench_size 3 1)}
DEBOUNCES=${REACTION_DEBOUNCES:-500ms,50ms}
GAP_MS=${REACTION_GAP_MS:-1000}
cmdline="REACTION_JOBS=$JOBS REACTION_APPLIES=$APPLIES REACTION_RUNS=$RUNS bench/reaction.sh"
[ -n "${REACTION_DEBOUNCES:-}" ] && cmdline="REACTION_DEBOUNCES=$DEBOUNCES $cmdline"
[ -n "${REACTION_GAP_MS:-}" ] && cmdline="REACTION_GAP_MS=$GAP_MS $cmdline"

bench_run reaction reaction "$cmdline" "$RUNS" --jobs "$JOBS" --applies "$APPLIES" --runs "$RUNS" \
  --debounces "$DEBOUNCES" --gap-ms "$GAP_MS"
