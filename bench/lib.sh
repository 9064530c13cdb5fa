# Shared by every bench/*.sh: where results go, quick sizes, the provenance header and figures
# file every results file carries, the test bed, a release build of the controller and of the
# driver (bench/driver.rs), and running the driver. bench/README.md describes the contract.
#
# Results: bench/results/NAME.md (the Markdown section) and bench/results/NAME.tsv (its figures,
# `key<TAB>value<TAB>unit`, plus `meta.*` rows: commit, quotable, runs, mode, ...). With
# BENCH_QUICK=1 they go to bench/results/quick/ instead (BENCH_RESULTS overrides either), so a
# quick run never overwrites the full results.
#
# The benchmarks that need an API server run on a test bed of their own (state in
# target/bench-testbed, or BENCH_TESTBED_DIR), started for the run and stopped after it unless it
# is already up: a controller without leader election acts on every policy in the cluster, so one
# sharing a bed with `make test` would sweep the tests' policies, and their policies (slow
# registries, runaway expressions) would be measured as part of retainer's reaction.
# BENCH_FSYNC=1 runs them on a bed whose etcd syncs to disk and whose API server runs API
# priority and fairness (target/bench-testbed-fsync; scripts/testbed.sh, RETAINER_TESTBED_FSYNC),
# and their results are named NAME-fsync. BENCH_KUBECONFIG names another cluster instead (the TTL
# comparison at other client limits is then skipped). BENCH_BIN_DIR names prebuilt `retainer` and
# `bench-driver` binaries instead of building (BENCH_REV then says what they were built from; a
# result is quotable only if that is the checked-out commit); BENCH_LOG_DIR keeps the controller
# logs (default: a new /tmp directory).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

if [ "${BENCH_QUICK:-}" = 1 ]; then
  BENCH_RESULTS=${BENCH_RESULTS:-bench/results/quick}
else
  BENCH_RESULTS=${BENCH_RESULTS:-bench/results}
fi

BENCH_CLEANUP=()
# Last in, first out: what was started last (a controller) stops before what it runs on (the bed).
bench_cleanup() {
  local i
  for ((i = ${#BENCH_CLEANUP[@]} - 1; i >= 0; i--)); do eval "${BENCH_CLEANUP[i]}" || true; done
}
trap bench_cleanup EXIT

bench_log() { printf '[bench] %s\n' "$*" >&2; }

# bench_size FULL QUICK: the size (or run count) to use, by BENCH_QUICK.
# bench_copy_bench NAME DEST: builds the `cargo bench` target NAME and copies its executable to
# DEST, so that a rebuild during a long run cannot swap the program being measured.
bench_copy_bench() {
  local exe
  exe=$(cargo bench --bench "$1" --no-run --quiet --message-format=json | python3 -c '
import json, sys
name = sys.argv[1]
exes = [m["executable"] for m in map(json.loads, sys.stdin)
        if m.get("reason") == "compiler-artifact" and m["target"]["name"] == name and m.get("executable")]
print(exes[-1])' "$1")
  cp "$exe" "$2"
}

bench_size() {
  if [ "${BENCH_QUICK:-}" = 1 ]; then echo "$2"; else echo "$1"; fi
}

# What the tree holds beyond its commit, leaving out what the benchmarks themselves write.
bench_tree_changes() {
  git status --porcelain -- . ':(exclude)bench/results' ':(exclude)BENCHMARKS.md' \
    ':(exclude)bench/targets.md' 2>/dev/null | head -5
}

# The commit, with -dirty when the tree has changes that are not the benchmarks' own output (a
# plain `git describe --dirty` would call every run after the first of `make bench` dirty).
bench_rev() {
  local rev
  rev=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  if [ -n "$(bench_tree_changes)" ]; then rev=$rev-dirty; fi
  echo "$rev"
}

# bench_begin NAME KIND COMMAND: start of a benchmark's results. KIND is `bed` when it runs on
# the test bed (the name then gets -fsync in fsync mode) and `none` otherwise. Sets BENCH_NAME,
# BENCH_OUT (the Markdown file to write) and BENCH_TSV (where to write figures: one
# `key<TAB>value<TAB>unit` line each, by bench_tsv or by the script's own code), and records the
# commit, the tree's state and the load average before the run. bench_end finishes both files.
bench_begin() {
  local name=$1 kind=$2
  BENCH_COMMAND=$3
  BENCH_KIND=$kind
  if [ "$kind" = bed ] && [ "${BENCH_FSYNC:-}" = 1 ]; then name=$name-fsync; fi
  BENCH_NAME=$name
  mkdir -p "$BENCH_RESULTS"
  BENCH_OUT=$BENCH_RESULTS/$name.md
  # Figures go to a new file that replaces the old one only when the run ends: a run that fails
  # halfway leaves the last complete results as they were.
  BENCH_TSV=$BENCH_RESULTS/.$name.tsv.new
  : >"$BENCH_TSV"
  BENCH_CLEANUP+=("rm -f '$BENCH_TSV'")
  BENCH_COMMIT0=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  BENCH_CHANGES0=$(bench_tree_changes)
  BENCH_LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
  BENCH_START=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  bench_log "$name: results in $BENCH_OUT (${BENCH_QUICK:+quick, }commit $BENCH_COMMIT0${BENCH_CHANGES0:+ with uncommitted changes})"
}

# bench_tsv KEY VALUE UNIT: one figure. Values come from what the script measured.
bench_tsv() {
  printf '%s\t%s\t%s\n' "$1" "$2" "$3" >>"$BENCH_TSV"
}

# The test bed's mode as the header states it.
bench_mode() {
  if [ "$BENCH_KIND" != bed ]; then
    echo none
  elif [ -n "${BENCH_KUBECONFIG:-}" ]; then
    echo external
  else
    echo "${RETAINER_TESTBED_MODE:-fast}"
  fi
}

# bench_end RUNS: writes the provenance header into BENCH_OUT (after its first heading; again
# in place if the section is rewritten) and BENCH_RESULTS/NAME.tsv (the figures with the same
# provenance as meta.* rows). Safe to call after every partial report.
bench_end() {
  local runs=$1 commit1 changes1 quotable=yes reason=""
  commit1=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
  changes1=$(bench_tree_changes)
  if [ -n "$BENCH_CHANGES0$changes1" ]; then
    quotable=no
    reason="the working tree had uncommitted changes ($(printf '%s\n%s\n' "$BENCH_CHANGES0" "$changes1" | awk 'NF {print $2}' | sort -u | head -3 | paste -sd, -))"
  elif [ "$BENCH_COMMIT0" != "$commit1" ]; then
    quotable=no
    reason="the checked-out commit changed during the run ($BENCH_COMMIT0 to $commit1)"
  elif [ -n "${BENCH_BIN_DIR:-}" ]; then
    local built
    built=$(git rev-parse --short "${BENCH_REV:-none}^{commit}" 2>/dev/null || echo "")
    if [ "$built" != "$commit1" ]; then
      quotable=no
      reason="the binaries were prebuilt (BENCH_BIN_DIR) from ${BENCH_REV:-an unnamed revision}, not from $commit1"
    fi
  fi
  python3 - "$BENCH_OUT" "$BENCH_TSV" "$BENCH_RESULTS/$BENCH_NAME.tsv" "$commit1" "$quotable" \
    "$reason" "$runs" "$(bench_mode)" "${BENCH_QUICK:-0}" "$BENCH_LOAD0" \
    "$(cut -d' ' -f1-3 /proc/loadavg)" "$BENCH_START" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$BENCH_COMMAND" <<'PY'
import os, platform, re, sys

(out, new_tsv, tsv, commit, quotable, reason, runs, mode, quick, load0, load1, start, end,
 command) = sys.argv[1:]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "unknown CPU")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")) / 2**20
machine = f"{os.cpu_count()} vCPU ({cpu}), {mem:.0f} GiB RAM, {platform.system()} {platform.release()}"
modes = {
    "none": "none (no API server: files and processes only, or a private registry)",
    "fast": "fast: etcd without fsync (`--unsafe-no-fsync`), API priority and fairness off",
    "fsync": "fsync: etcd syncing every commit to disk, API priority and fairness on (as a real cluster runs)",
    "external": "the cluster named by BENCH_KUBECONFIG",
}
lines = ["<!-- provenance: written by bench/lib.sh -->"]
if quotable != "yes":
    lines += [f"**Not a result to quote**: {reason}.", ""]
if quick == "1":
    lines += ["Quick run (`BENCH_QUICK=1`, reduced sizes): a check that the harness works, not the "
              "project's figures.", ""]
lines += [
    f"- Commit: `{commit}`" + (", clean tree, binaries built from it" if quotable == "yes" else ""),
    f"- Machine: {machine}",
    f"- Load average: {load0} before, {load1} after",
    f"- Command: `{command}`",
    f"- Runs: {runs}",
    f"- Test bed: {modes.get(mode, mode)}",
    f"- Run: {start} to {end}",
    "<!-- /provenance -->",
]
block = "\n".join(lines)
if os.path.exists(out):
    text = open(out).read()
    text = re.sub(r"<!-- provenance: .*?<!-- /provenance -->\n\n?", "", text, flags=re.S)
    head, sep, rest = text.partition("\n")
    if head.startswith("## "):
        text = f"{head}\n\n{block}\n{rest}" if rest.startswith("\n") else f"{head}\n\n{block}\n\n{rest}"
    else:
        text = f"{block}\n\n{text}"
    open(out, "w").write(text)
meta = [("commit", commit, ""), ("quotable", quotable, ""), ("reason", reason, ""),
        ("runs", runs, "runs"), ("mode", mode, ""), ("quick", quick, ""), ("start", start, ""),
        ("end", end, ""), ("load_before", load0, ""), ("load_after", load1, ""),
        ("machine", machine, ""), ("command", command, "")]
figures = [l for l in open(new_tsv) if l.strip()] if os.path.exists(new_tsv) else []
with open(tsv + ".tmp", "w") as f:
    for k, v, u in meta:
        f.write(f"meta.{k}\t{v.replace(chr(9), ' ')}\t{u}\n")
    f.writelines(figures)
os.replace(tsv + ".tmp", tsv)
PY
  bench_log "$BENCH_NAME: wrote $BENCH_OUT and $BENCH_RESULTS/$BENCH_NAME.tsv${reason:+ (not a result to quote: $reason)}"
}

bench_bed() {
  if [ -n "${BENCH_KUBECONFIG:-}" ]; then
    export KUBECONFIG=$BENCH_KUBECONFIG
    TESTBED_ARGS=()
    return
  fi
  local bed
  if [ "${BENCH_FSYNC:-}" = 1 ]; then
    bed=${BENCH_TESTBED_DIR:-$ROOT/target/bench-testbed-fsync}
    export RETAINER_TESTBED_FSYNC=1
  else
    bed=${BENCH_TESTBED_DIR:-$ROOT/target/bench-testbed}
    unset RETAINER_TESTBED_FSYNC
  fi
  export RETAINER_TESTBED_DIR=$bed
  if ! scripts/testbed.sh status >/dev/null 2>&1; then
    scripts/testbed.sh up
    BENCH_CLEANUP+=("RETAINER_TESTBED_DIR='$bed' scripts/testbed.sh down")
  else
    # `up` on a running bed only checks that its mode is the one asked for.
    scripts/testbed.sh up
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
  BENCH_REV=${BENCH_REV:-$(bench_rev)}
  cargo build --release --quiet --bin retainer --example bench-driver
  local target=${CARGO_TARGET_DIR:-$ROOT/target}
  # Copies: a rebuild during a long run must not swap the binary being measured.
  BIN=$(mktemp -d /tmp/retainer-bench-bin.XXXXXX)
  BENCH_CLEANUP+=("rm -rf '$BIN'")
  cp "$target/release/retainer" "$target/release/examples/bench-driver" "$BIN/"
}

# bench_run NAME SUBCOMMAND COMMAND-LINE RUNS [DRIVER ARGS...]: writes BENCH_RESULTS/NAME.md and
# NAME.tsv (NAME-fsync in fsync mode).
bench_run() {
  local name=$1 sub=$2 cmdline=$3 runs=$4
  shift 4
  bench_begin "$name" bed "$cmdline"
  bench_bed
  bench_build
  local logs=${BENCH_LOG_DIR:-$(mktemp -d /tmp/retainer-bench-logs.XXXXXX)}
  mkdir -p "$logs"
  bench_log "controller logs: $logs"
  "$BIN/bench-driver" "$sub" \
    --retainer "$BIN/retainer" \
    --out "$BENCH_OUT" \
    --tsv "$BENCH_TSV" \
    --command-line "$cmdline" \
    --rev "$BENCH_REV" \
    --log-dir "$logs" \
    ${TESTBED_ARGS[@]+"${TESTBED_ARGS[@]}"} \
    "$@"
  bench_end "$runs"
}
