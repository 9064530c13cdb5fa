#!/usr/bin/env bash
# Job sweep (issue #7, item 1): N finished Jobs deleted by a plain client (the limit), by
# retainer, and by kube-controller-manager's TTL-after-finished controller, each in a fresh
# namespace, interleaved over SWEEP_RUNS rounds. Writes bench/results/sweep.md.
#
#   SWEEP_N=10000 SWEEP_RUNS=3 bench/sweep.sh
#
# SWEEP_CONTENDERS (default: all) picks from plain, plain-get, retainer, retainer-default, ttl,
# ttl-equal; SWEEP_FAST_QPS is retainer's --delete-qps in `retainer` (default 0, no limit, as
# the plain client has none: at 1000 the limit binds, since a sweep sends two requests per Job);
# SWEEP_TIMEOUT caps one contender's seconds (default 180 + N/4). The TTL controller at its
# defaults deletes about 10 Jobs/s, so N=10000 takes over an hour in all. BENCH_QUICK=1: N=300,
# one run; BENCH_FSYNC=1: on a bed with etcd fsync and API priority and fairness (sweep-fsync).
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${SWEEP_N:-$(bench_size 10000 300)}
RUNS=${SWEEP_RUNS:-$(bench_size 3 1)}
CONTENDERS=${SWEEP_CONTENDERS:-plain,plain-get,retainer,retainer-default,ttl,ttl-equal}
FAST_QPS=${SWEEP_FAST_QPS:-0}
cmdline="SWEEP_N=$N SWEEP_RUNS=$RUNS bench/sweep.sh"
[ "${BENCH_FSYNC:-}" = 1 ] && cmdline="BENCH_FSYNC=1 $cmdline"
[ -n "${SWEEP_CONTENDERS:-}" ] && cmdline="SWEEP_CONTENDERS=$CONTENDERS $cmdline"
[ -n "${SWEEP_FAST_QPS:-}" ] && cmdline="SWEEP_FAST_QPS=$FAST_QPS $cmdline"
extra=()
[ -n "${SWEEP_TIMEOUT:-}" ] && extra+=(--timeout "$SWEEP_TIMEOUT")

bench_run sweep sweep "$cmdline" "$RUNS" --n "$N" --runs "$RUNS" --contenders "$CONTENDERS" \
  --fast-qps "$FAST_QPS" ${extra[@]+"${extra[@]}"}
