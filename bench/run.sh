#!/usr/bin/env bash
# `make bench` and `make bench-quick`: every benchmark, one after the other, then the targets
# table and the stitched file, both generated from what the benchmarks wrote.
#
#   bench/run.sh                       all of them at the sizes the project reports:
#                                      bench/results/, bench/targets.md, BENCHMARKS.md
#   BENCH_QUICK=1 bench/run.sh         all of them at reduced sizes (under 15 minutes on 2
#                                      cores): bench/results/quick/, its targets.md and
#                                      BENCHMARKS.md there; the full results are not touched
#   BENCH_ONLY="eval oci" bench/run.sh only these; NAME:fsync runs NAME on the fsync bed
#   BENCH_ONLY=- bench/run.sh          run nothing, only regenerate the tables and stitch
#
# Each bench/NAME.sh runs its contenders side by side in one run and writes NAME.md (its section,
# with the provenance header of bench/lib.sh) and NAME.tsv (its figures). The sweep comparisons
# run twice: on the test bed as tests use it (etcd without fsync, API priority and fairness off)
# and, as NAME:fsync, with BENCH_FSYNC=1 on a bed whose etcd syncs to disk and whose API server
# runs API priority and fairness (results NAME-fsync). A benchmark that fails is reported and the
# others still run; the exit status says whether all passed. Benchmarks, not tests: nothing here
# gates CI.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# kyverno-sweep builds Kyverno's cleanup controller on first use (scripts/testbed.sh
# build-kyverno); in quick mode it is skipped instead when the binary is not cached.
ALL="eval cel incremental check sweep memory reaction reaction-load oci kyverno-sweep sweep:fsync kyverno-sweep:fsync"
# Those that need the test bed: run.sh starts it once for all of them (a bed already up is
# used as it is, and left up).
BED="sweep memory reaction kyverno-sweep reaction-load"
ONLY=${BENCH_ONLY:-$ALL}
[ "$ONLY" = - ] && ONLY=

if [ "${BENCH_QUICK:-}" = 1 ]; then
  RESULTS=${BENCH_RESULTS:-bench/results/quick}
  STITCHED=$RESULTS/BENCHMARKS.md
  TARGETS=$RESULTS/targets.md
else
  RESULTS=${BENCH_RESULTS:-bench/results}
  STITCHED=BENCHMARKS.md
  TARGETS=bench/targets.md
fi
export BENCH_RESULTS=$RESULTS
mkdir -p "$RESULTS"

say() { printf '[bench] %s\n' "$*" >&2; }

STARTED_BEDS=()
stop_beds() {
  local b
  for b in ${STARTED_BEDS[@]+"${STARTED_BEDS[@]}"}; do
    RETAINER_TESTBED_DIR=$b scripts/testbed.sh down || true
  done
  STARTED_BEDS=()
}
trap stop_beds EXIT

# bed_for MODE: bring up the benchmarks' bed of that mode unless it is up (bench/lib.sh uses
# the same directories), stopping the other mode's bed this script started first: two beds
# would share the two cores.
bed_for() {
  local dir=$ROOT/target/bench-testbed
  [ "$1" = fsync ] && dir=$ROOT/target/bench-testbed-fsync
  [ -n "${BENCH_TESTBED_DIR:-}" ] && dir=$BENCH_TESTBED_DIR
  [ -n "${BENCH_KUBECONFIG:-}" ] && return 0
  if ! RETAINER_TESTBED_DIR=$dir scripts/testbed.sh status >/dev/null 2>&1; then
    stop_beds
    if [ "$1" = fsync ]; then
      RETAINER_TESTBED_DIR=$dir RETAINER_TESTBED_FSYNC=1 scripts/testbed.sh up
    else
      RETAINER_TESTBED_DIR=$dir scripts/testbed.sh up
    fi
    STARTED_BEDS+=("$dir")
  fi
}

failed=()
t_all=$SECONDS
for entry in $ONLY; do
  b=${entry%%:*}
  mode=fast
  [ "$entry" != "$b" ] && mode=${entry#*:}
  if [ ! -x "bench/$b.sh" ]; then
    say "$entry: no bench/$b.sh; skipped"
    failed+=("$entry (no script)")
    continue
  fi
  case " $BED " in *" $b "*) bed_for "$mode" ;; esac
  say "$entry${BENCH_QUICK:+ (quick)}"
  t=$SECONDS
  if [ "$mode" = fsync ]; then
    BENCH_FSYNC=1 "bench/$b.sh" || failed+=("$entry")
  else
    env -u BENCH_FSYNC "bench/$b.sh" || failed+=("$entry")
  fi
  say "$entry: $((SECONDS - t)) s"
done
stop_beds
[ -n "$ONLY" ] && say "all benchmarks: $((SECONDS - t_all)) s"

bench/targets.sh "$RESULTS" "$TARGETS"

rel() { python3 -c 'import os, sys; print(os.path.relpath(sys.argv[1], os.path.dirname(sys.argv[2]) or "."))' "$1" "$STITCHED"; }
{
  if [ "${BENCH_QUICK:-}" = 1 ]; then
    echo "# Benchmarks, quick run"
    echo
    echo "Written by \`make bench-quick\` (\`BENCH_QUICK=1 bench/run.sh\`): every benchmark at reduced"
    echo "sizes, to show the harness works end to end; the project's figures are in"
    echo "[BENCHMARKS.md]($(rel BENCHMARKS.md))."
  else
    echo "# Benchmarks"
    echo
    echo "Written by \`make bench\` (\`bench/run.sh\`). Every figure and every met or missed below was"
    echo "computed by the harness from the results files it wrote; each section opens with its"
    echo "provenance (commit, machine, load average, command, number of runs, test bed mode) and"
    echo "says how many runs its figures are medians of. Sections of benchmarks not run this time"
    echo "are kept from their last run. \`make bench-quick\` writes a quick run to"
    echo "[bench/results/quick/](bench/results/quick/BENCHMARKS.md) instead."
  fi
  echo
  echo "Toolchain when stitched: $(rustc --version 2>/dev/null), $(go version 2>/dev/null | sed 's/^go version //')."
  echo "Stitched: $(date -u +%Y-%m-%dT%H:%M:%SZ)."
  echo
  echo "## At a glance"
  echo
  echo "For deciding whether to adopt: per question, retainer's figure, the peer it is measured"
  echo "beside (configured as its section says), the ratio and whether the target is met. Every"
  echo "cell links its section; \"(stale)\" marks a figure whose code changed since it was"
  echo "measured, \"not measured\" one with no result."
  echo
  python3 bench/report.py glance "$RESULTS" "$(rel "$RESULTS")"
  echo
  echo "## retainer beside Kyverno, the TTL controller and a plain client"
  echo
  echo "Generated from the sweep, Kyverno sweep, memory and reaction results (each figure links"
  echo "its section; \"not measured\" where no result exists, \"—\" where it does not apply)."
  echo
  python3 bench/report.py summary "$RESULTS" "$(rel "$RESULTS")"
  echo
  # The targets table again, with links relative to this file.
  echo "## Targets"
  echo
  echo "Generated by \`bench/targets.sh\` from [bench/targets.def]($(rel bench/targets.def)); also in"
  echo "[$(basename "$TARGETS")]($(rel "$TARGETS"))."
  echo
  python3 bench/report.py targets "$RESULTS" "$(rel "$RESULTS")"
  # Sections in a fixed order, then any other results (other benchmarks' sections).
  seen=""
  order="eval cel check sweep sweep-fsync sweep-ttl memory reaction reaction-load incremental oci kyverno kyverno-fsync"
  others=$(cd "$RESULTS" && ls ./*.md 2>/dev/null | sed 's#^\./##; s#\.md$##' | grep -vxE 'targets|BENCHMARKS' || true)
  for b in $order $others; do
    case " $seen " in *" $b "*) continue ;; esac
    seen="$seen $b"
    f=$RESULTS/$b.md
    [ -f "$f" ] || continue
    echo
    if grep -q '^<!-- provenance' "$f"; then
      # A section whose code changed since it was measured says so under its title.
      note=$(python3 bench/report.py stale "$RESULTS" "$b")
      head -n 1 "$f"
      if [ -n "$note" ]; then
        echo
        echo "$note"
      fi
      tail -n +2 "$f"
    else
      # Written before the harness recorded provenance: shown, but feeds no table above.
      head -n 1 "$f"
      echo
      echo "*Written before the harness recorded provenance (commit, load, runs) and figures files:"
      echo "kept as it was measured; none of its figures feeds the tables above.*"
      tail -n +2 "$f"
    fi
  done
} >"$STITCHED"
say "wrote $STITCHED and $TARGETS"
if [ ${#failed[@]} -gt 0 ]; then
  say "FAILED: ${failed[*]}"
  exit 1
fi
