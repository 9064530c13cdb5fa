#!/usr/bin/env bash
# `retainer check` against the cel-go program over growing Lists of Jobs: wall time and peak
# memory of each whole process, side by side, interleaved, in one run (issue #14, items 4 and 5).
#
#   bench/check.sh                SIZES="10000 100000 1000000" RUNS=3; the million-Job file
#                                 (2.4 GB) is generated for the run and deleted after it, as disk
#                                 is limited; cel-go need not fit it (retainer's figures stand)
#   SIZES="10000 100000" RUNS=5 bench/check.sh
#
# Writes bench/results/check.md: per size the medians, the ratios (retainer / cel-go) and the
# targets' verdicts, all computed here from the runs it made: peak memory at most 4x the input
# file's size, wall time at or below cel-go's, and the same verdicts object by object; and the
# figures file the harness reads (keys in bench/README.md). cel-go is bench/celgo: cel-go in
# kube-apiserver's CEL environment.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

# BENCH_QUICK=1: 10,000 Jobs, one run.
SIZES=${SIZES:-$(bench_size "10000 100000 1000000" 10000)}
RUNS=${RUNS:-$(bench_size 3 1)}
bench_begin check none "SIZES=\"$SIZES\" RUNS=$RUNS bench/check.sh"
export BENCH_OUT BENCH_TSV
DATA=bench/data
NOW=2026-11-22T12:00:00Z
mkdir -p "$DATA/bin" bench/results
# Files of a million objects and more are made for the run and removed after it.
generated=()
trap 'for f in "${generated[@]}"; do rm -f "$f" "${f/jobs-/secrets-}"; done' EXIT
for n in $SIZES; do
  if [ ! -s "$DATA/jobs-$n.json" ]; then
    python3 bench/gen_objects.py --n "$n" --out "$DATA"
    [ "$n" -lt 1000000 ] || generated+=("$DATA/jobs-$n.json")
  fi
done
cargo build --release --quiet --bin retainer
cp "${CARGO_TARGET_DIR:-target}/release/retainer" "$DATA/bin/retainer"
(cd bench/celgo && GOFLAGS=-mod=mod go build -o "../../$DATA/bin/celgo" .)

python3 - "$RUNS" "$DATA" "$NOW" "$(bench_rev)" $SIZES <<'PY'
import json, os, statistics, subprocess, sys, time

runs, data, now, rev, sizes = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], sys.argv[5:]
policy = "bench/check-policy.yaml"

# A process that does not fit must fail, not push the machine into swap for an hour (cel-go
# at a million Jobs did): each gets at most two thirds of the machine's memory as address
# space, and allocating beyond that fails it.
mem_total = int(open("/proc/meminfo").read().split()[1]) * 1024
def bounded():
    import resource
    limit = mem_total * 2 // 3
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

def timed(cmd, out_path):
    with open(out_path, "w") as out, open(out_path + ".err", "w") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, preexec_fn=bounded)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss": ru.ru_maxrss * 1024,
            "ok": os.waitstatus_to_exitcode(status) == 0}

def verdicts(path):
    with open(path) as f:
        return [(r.get("namespace"), r.get("name"), r["verdict"]) for r in json.load(f)["results"]]

load_before = open("/proc/loadavg").read().split()[:3]
rows = []
for n in sizes:
    objects = f"{data}/jobs-{n}.json"
    size = os.path.getsize(objects)
    cmds = {
        "retainer": [f"{data}/bin/retainer", "check", "-f", policy, "--objects", objects,
                     "--now", now, "-o", "json"],
        "cel-go": [f"{data}/bin/celgo", "-policy", policy, "-objects", objects, "-now", now],
    }
    res = {k: [] for k in cmds}
    for i in range(runs):
        # Interleaved, so that a drift in the machine's speed falls on both alike.
        for k, cmd in cmds.items():
            r = timed(cmd, f"{data}/check-{k}-{n}.json")
            res[k].append(r)
            print(f"  N={n} {k:8} run {i + 1}: {r['wall']:.2f} s, {r['rss'] / 2**20:.0f} MiB"
                  + ("" if r["ok"] else " FAILED"), file=sys.stderr)
    # cel-go need not fit a size (a million Jobs may not): retainer's own figures stand
    # without it, the comparisons do not.
    ok = {k: all(r["ok"] for r in rs) for k, rs in res.items()}
    both = ok["retainer"] and ok["cel-go"]
    same = both and verdicts(f"{data}/check-retainer-{n}.json") == verdicts(f"{data}/check-cel-go-{n}.json")
    med = {k: {m: statistics.median(r[m] for r in rs) for m in ("wall", "cpu", "rss")}
           for k, rs in res.items()}
    ratios = [a["wall"] / b["wall"] for a, b in zip(res["retainer"], res["cel-go"])]
    rows.append((n, size, med, statistics.median(ratios), same, ok))
    # Each size's outputs are large at a million objects; only the verdicts were needed.
    for k in cmds:
        os.remove(f"{data}/check-{k}-{n}.json")

mib = lambda b: f"{b / 2**20:,.0f} MiB"
# Commit, machine, load and command are in the provenance header bench_end writes.
out = ["## `retainer check` against cel-go, by size", "",
       f"{runs} runs of each, interleaved. Policy "
       "`bench/check-policy.yaml` (keep = `object.status.?succeeded.orValue(0) == 0 || "
       "age < duration('240h') || object.metadata.labels['app'] == 'web'`) over "
       "`bench/gen_objects.py` Jobs; cel-go: `bench/celgo` (Go `encoding/json`, cel-go in "
       "kube-apiserver's CEL environment, keep run whole) at Go's default GOMAXPROCS, as "
       "`retainer check` uses every core. Whole processes: wall seconds and peak RSS, medians. "
       "Ratios and verdicts are computed by the script.", ""]
if "dirty" in rev:
    out += ["**Measured on a build with uncommitted changes: not a result to quote.**", ""]
out += ["| Jobs | file | retainer wall | cel-go wall | wall ratio (paired median) | retainer peak | "
        "peak / file | cel-go peak | same verdicts | peak ≤ 4x file | wall ≤ cel-go |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|---|---|"]
failed = []
for n, size, med, ratio, same, ok in rows:
    r, g = med["retainer"], med["cel-go"]
    if not ok["retainer"]:
        out.append(f"| {int(n):,} | {mib(size)} | failed | | | | | | | | |")
        failed.append(f"retainer failed at {int(n):,} Jobs (see {data}/check-retainer-{n}.json.err)")
        continue
    if not ok["cel-go"]:
        out.append(f"| {int(n):,} | {mib(size)} | {r['wall']:.2f} s | failed | — | "
                   f"{mib(r['rss'])} | {r['rss'] / size:.2f}x | failed at {mib(g['rss'])} | — | "
                   f"{'met' if r['rss'] <= 4 * size else 'missed'} | — |")
        failed.append(f"cel-go did not complete at {int(n):,} Jobs (peak {mib(g['rss'])} when it "
                      "stopped; its stderr was kept only for the run): retainer's figures stand "
                      "alone for that size")
        continue
    out.append(f"| {int(n):,} | {mib(size)} | {r['wall']:.2f} s | {g['wall']:.2f} s | {ratio:.2f} | "
               f"{mib(r['rss'])} | {r['rss'] / size:.2f}x | {mib(g['rss'])} | "
               f"{'yes' if same else 'NO'} | {'met' if r['rss'] <= 4 * size else 'missed'} | "
               f"{'met' if ratio <= 1 else 'missed'} |")
if failed:
    out += [""] + [f"- {f}." for f in failed]
with open(os.environ["BENCH_OUT"], "w") as f:
    f.write("\n".join(out) + "\n")
print("\n".join(out))
# Figures for bench/targets.sh (keys in bench/README.md).
with open(os.environ["BENCH_TSV"], "a") as f:
    for n, size, med, ratio, same, ok in rows:
        if not ok["retainer"]:
            continue
        f.write(f"peak_file_ratio_{n}\t{med['retainer']['rss'] / size:.4f}\tx\n")
        f.write(f"wall_s_retainer_{n}\t{med['retainer']['wall']:.4f}\ts\n")
        f.write(f"peak_mib_retainer_{n}\t{med['retainer']['rss'] / 2**20:.1f}\tMiB\n")
        if not ok["cel-go"]:
            continue
        f.write(f"wall_ratio_{n}\t{ratio:.4f}\tx\n")
        f.write(f"same_verdicts_{n}\t{1 if same else 0}\tbool\n")
        f.write(f"wall_s_celgo_{n}\t{med['cel-go']['wall']:.4f}\ts\n")
PY
bench_end "$RUNS"
