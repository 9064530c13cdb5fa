#!/usr/bin/env bash
# `make bench`: every benchmark, one after the other, then BENCHMARKS.md from their sections.
#
#   bench/run.sh                 all of them, at the sizes the project reports
#   BENCH_ONLY="eval oci" bench/run.sh
#   BENCH_ONLY=- bench/run.sh    only stitch BENCHMARKS.md from bench/results/
#
# Each bench/<name>.sh runs its contenders side by side in one run and writes
# bench/results/<name>.md; this script adds the machine and versions and stitches the sections
# together. Sections of benchmarks not run this time are kept from their last run, and say when
# that was. Benchmarks, not tests: nothing here gates CI.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# kyverno-sweep builds Kyverno's cleanup controller on first use (scripts/testbed.sh
# build-kyverno); nothing else builds it, so CI never does. It writes results/kyverno.md.
ALL="eval incremental check sweep memory reaction reaction-load oci kyverno-sweep"
ONLY=${BENCH_ONLY:-$ALL}
# BENCH_ONLY=- runs nothing and only stitches the sections.
[ "$ONLY" = - ] && ONLY=
for b in $ONLY; do
  echo "[bench] $b" >&2
  "bench/$b.sh"
done

out=BENCHMARKS.md
{
  echo "# Benchmarks"
  echo
  echo "Written by \`make bench\` (\`bench/run.sh\`); each section names its own command, sizes and"
  echo "versions, and is a median of at least three runs with the contenders side by side in one"
  echo "run on one test bed. The summary against the project's targets is in"
  echo "[bench/targets.md](bench/targets.md)."
  echo
  echo "Machine: $(nproc) vCPU ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)),"
  echo "$(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo) RAM, $(uname -sr)."
  echo "Toolchain: $(rustc --version), $(go version 2>/dev/null | sed 's/^go version //')."
  echo "Stitched: $(date -u +%Y-%m-%dT%H:%M:%SZ)."
  echo
  cat bench/targets.md
  # sweep-ttl: the TTL controller at its defaults at full size, run once on its own (see
  # bench/targets.md); stitched after the sweep section when present.
  for b in eval incremental check sweep sweep-ttl memory reaction reaction-load oci kyverno; do
    f=bench/results/$b.md
    [ -f "$f" ] || continue
    echo
    cat "$f"
  done
} >"$out"
echo "[bench] wrote $out" >&2
