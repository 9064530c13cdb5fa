#!/usr/bin/env bash
# Reaction under load (issue #12, item 8): from applying a new RetentionPolicy to its Ready
# condition, on a quiet controller and on one with RL_OTHERS other policies, a registry that
# never answers and a sweep of RL_SWEEP_JOBS Jobs at --delete-qps RL_DELETE_QPS, the two kinds
# of applies interleaved in one run (bench/reaction_load.rs says how). p50, p99 and max of
# RL_APPLIES applies each, their ratio, and the verdict on issue #12's target (Ready within 2 s
# under this load: p99 ≤ 2 s). Writes bench/results/reaction-load.md.
#
#   RL_APPLIES=50 RL_OTHERS=50 RL_SWEEP_JOBS=1000 RL_DELETE_QPS=10 RL_RUNS=1 bench/reaction-load.sh
#
# BENCH_QUICK=1: 20 applies, a sweep of 300 Jobs.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

APPLIES=${RL_APPLIES:-$(bench_size 50 20)}
OTHERS=${RL_OTHERS:-50}
SWEEP_JOBS=${RL_SWEEP_JOBS:-$(bench_size 1000 300)}
DELETE_QPS=${RL_DELETE_QPS:-10}
JOBS=${RL_JOBS:-100}
RUNS=${RL_RUNS:-1}
GAP_MS=${RL_GAP_MS:-300}
cmdline="RL_APPLIES=$APPLIES RL_OTHERS=$OTHERS RL_SWEEP_JOBS=$SWEEP_JOBS RL_DELETE_QPS=$DELETE_QPS RL_JOBS=$JOBS RL_RUNS=$RUNS RL_GAP_MS=$GAP_MS bench/reaction-load.sh"

bench_run reaction-load reaction-load "$cmdline" "$RUNS" --applies "$APPLIES" --others "$OTHERS" \
  --sweep-jobs "$SWEEP_JOBS" --delete-qps "$DELETE_QPS" --jobs "$JOBS" --runs "$RUNS" \
  --gap-ms "$GAP_MS"
