#!/usr/bin/env bash
# CEL alone, expression by expression: retainer against cel-go as kube-apiserver configures it
# (issue #14 item 3, issue #15's cel-go anchor).
#
#   bench/cel.sh [N]        N Jobs and N Secrets (default 100000); RUNS=3 rounds, INNER=3 passes
#
# Each line of bench/cel-exprs.tsv (the four example policies, and expressions with optional
# chaining, duration and timestamp literals, label indexing, exists/all over containers,
# matches and semver ordering) is timed in process by both programs over the same objects:
# retainer's eval bench (`--cel-exprs`, bench/eval.rs) and bench/celgo (`-mode exprs`). The
# rounds alternate the two programs (retainer, cel-go, retainer, ...), each program timing one
# untimed pass and then INNER passes per line, and printing the median CPU time. The script
# takes the median over rounds, and writes:
#   bench/results/cel.md   (OUT=...)  the table: ns/object, ratio cel-go/retainer, met if >= 1
#   bench/results/cel.tsv  the figures for bench/targets.sh: cel_ratio_<name>, cel_ratio_all
#                          (summed times) and cel_ratio_min (the lowest line)
# BENCH_QUICK=1: 2,000 objects, one round.
#
# BASE_BIN=<eval bench binary built at another commit> BASE_REV=<that commit> adds it as a
# third program in the same rounds (retainer, base, cel-go, ...): the before/after of a change,
# measured in one run. Build one with `git worktree add /tmp/base <commit>` and
# `cargo bench --bench eval --no-run` there.
# shellcheck source=bench/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${1:-${N:-$(bench_size 100000 2000)}}
RUNS=${RUNS:-$(bench_size 3 1)}
INNER=${INNER:-3}
DATA=bench/data
EXPRS=bench/cel-exprs.tsv
NOW=2026-11-22T12:00:00Z
COMMAND="RUNS=$RUNS INNER=$INNER${BASE_REV:+ BASE_REV=$BASE_REV} bench/cel.sh $N"
bench_begin cel none "$COMMAND"
OUT=$BENCH_OUT
TSV=$BENCH_TSV
mkdir -p "$DATA/bin" bench/results

if [ ! -s "$DATA/jobs-$N.json" ] || [ ! -s "$DATA/secrets-$N.json" ]; then
  python3 bench/gen_objects.py --n "$N" --out "$DATA"
fi

REV=$(bench_rev)
# Copies of the binaries: a rebuild elsewhere during the run must not swap what is measured.
bench_copy_bench eval "$DATA/bin/eval-bench-cel"
(cd bench/celgo && GOFLAGS=-mod=mod go build -o "../../$DATA/bin/celgo-cel" .)

load_before=$(cut -d' ' -f1-3 /proc/loadavg)
for r in $(seq 1 "$RUNS"); do
  echo "round $r/$RUNS: retainer" >&2
  "$DATA/bin/eval-bench-cel" --bench --data "$DATA" --n "$N" --runs "$INNER" --cel-exprs "$EXPRS" \
    >"$DATA/cel-retainer-$r.tsv"
  if [ -n "${BASE_BIN:-}" ]; then
    echo "round $r/$RUNS: retainer at ${BASE_REV:?BASE_REV must name the commit of BASE_BIN}" >&2
    "$BASE_BIN" --bench --data "$DATA" --n "$N" --runs "$INNER" --cel-exprs "$EXPRS" \
      >"$DATA/cel-base-$r.tsv"
  fi
  echo "round $r/$RUNS: cel-go" >&2
  GOMAXPROCS=1 "$DATA/bin/celgo-cel" -mode exprs -exprs "$EXPRS" -data "$DATA" -n "$N" \
    -runs "$INNER" -now "$NOW" >"$DATA/cel-celgo-$r.tsv"
done
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

celgo_version=$(cd bench/celgo && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' github.com/google/cel-go)
apiserver_version=$(cd bench/celgo && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' k8s.io/apiserver)
cel_rust_version=$(awk '/^name = "cel"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)

python3 - "$RUNS" "$INNER" "$DATA" "$EXPRS" "$OUT" "$TSV" "$N" "$REV" "$COMMAND" "$load_before" \
  "$load_after" "$celgo_version" "$apiserver_version" "$cel_rust_version" "$(rustc --version)" \
  "$(go version)" "${BASE_REV:-}" <<'PY'
import datetime, os, platform, statistics, sys

(runs, inner, data, exprs, out, tsv, n, rev, command, load_before, load_after, celgo_v,
 apiserver_v, celrs_v, rustc_v, go_v, base_rev) = sys.argv[1:]
runs = int(runs)

def read(path):
    rows = {}
    for line in open(path):
        p = line.rstrip("\n").split("\t")
        if p[0] == "EXPR":
            rows[p[1]] = {"cpu": float(p[3]), "objects": int(p[4]), "held": int(p[5]),
                          "errors": int(p[6])}
    return rows

lines = []
for line in open(exprs):
    if line.strip() and not line.startswith("#"):
        lines.append(line.rstrip("\n").split("\t", 2))
rs = [read(f"{data}/cel-retainer-{r}.tsv") for r in range(1, runs + 1)]
go = [read(f"{data}/cel-celgo-{r}.tsv") for r in range(1, runs + 1)]
base = [read(f"{data}/cel-base-{r}.tsv") for r in range(1, runs + 1)] if base_rev else None

cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo")
            if l.startswith("model name")), "?")
mem = next((int(l.split()[1]) / 2**20 for l in open("/proc/meminfo")
            if l.startswith("MemTotal")), 0)
clean = "dirty" not in rev and rev != "unknown"

L = ["## CEL alone, expression by expression: retainer vs cel-go as kube-apiserver builds it", ""]
if not clean:
    L += ["**Measured on a build with uncommitted changes: not a result to quote.**", ""]
L += [f"Written by `{command}` at `{rev}` on {datetime.date.today().isoformat()}; "
      f"{runs} rounds, alternating the two programs, each timing {inner} passes per line after "
      f"an untimed one (figures: median over rounds of each round's median). Machine: "
      f"{os.cpu_count()} vCPU ({cpu}), {mem:.0f} GiB RAM, {platform.system()} "
      f"{platform.release()}; load average {load_before} before, {load_after} after. "
      f"retainer: crate `cel` {celrs_v}, {rustc_v}; cel-go: `github.com/google/cel-go` "
      f"{celgo_v} in the environment of `k8s.io/apiserver` {apiserver_v} "
      f"(`environment.MustBaseEnvSet(1.36).NewExpressionsEnv()`, programs as the admission "
      f"plugin builds them: OptOptimize, cost tracking and limit), {go_v}, `GOMAXPROCS=1`.", "",
      "Time is the process's CPU time per object of the data (all Jobs or Secrets of "
      f"`bench/data/<data>-{n}.json`, {n} of each), binding included: retainer converts the "
      "fields an expression reads (`expr::project`), cel-go wraps the Go map. A policy line "
      "runs the example policy's match, groupBy, orderBy and keep over the objects it selects "
      "(ranks computed outside the timing); an expression line runs the expression as a keep "
      "over every object. Ratio: cel-go's time over retainer's; at or above 1.00 retainer is "
      "at least as fast (target met). `same` compares the number of objects each side found "
      "true and failing (for a policy, the number of evaluations).", "",
      "| expression | data | retainer ns/object | cel-go ns/object | ratio cel-go/retainer | target ≥ 1.00 | same |"
      + (f" retainer at `{base_rev}` ns/object | speed-up over `{base_rev}` |" if base else ""),
      "|---|---|---:|---:|---:|---|---|" + ("---:|---:|" if base else "")]
def base_cells(name, rn):
    b = [x[name] for x in base if name in x]
    if len(b) != runs:
        return " - | - |"
    bn = statistics.median(x["cpu"] for x in b) / b[0]["objects"] * 1e9
    return f" {bn:,.0f} | {bn / rn:.2f} |"

keys = []
tot_r = tot_g = 0.0
ratios = []
for name, data_kind, source in lines:
    r = [x[name] for x in rs if name in x]
    g = [x[name] for x in go if name in x]
    if len(r) != runs or len(g) != runs:
        L.append(f"| {name} | {data_kind} | - | - | - | missed (no figure) | - |")
        continue
    objects = r[0]["objects"]
    rn = statistics.median(x["cpu"] for x in r) / objects * 1e9
    gn = statistics.median(x["cpu"] for x in g) / g[0]["objects"] * 1e9
    ratio = gn / rn
    ratios.append(ratio)
    tot_r += rn
    tot_g += gn
    same = (r[0]["objects"], r[0]["held"], r[0]["errors"]) == (g[0]["objects"], g[0]["held"], g[0]["errors"])
    what = f"`{source}`" if data_kind != "policy" else f"policy `{source}`"
    L.append(f"| {name}: {what} | {data_kind} | {rn:,.0f} | {gn:,.0f} | {ratio:.2f} | "
             f"{'met' if ratio >= 1.0 else 'missed'} | "
             f"{'yes' if same else 'NO: %d/%d/%d vs %d/%d/%d' % (r[0]['objects'], r[0]['held'], r[0]['errors'], g[0]['objects'], g[0]['held'], g[0]['errors'])} |"
             + (base_cells(name, rn) if base else ""))
    keys.append((f"cel_ratio_{name}", ratio))
if ratios:
    keys.append(("cel_ratio_all", tot_g / tot_r))
    keys.append(("cel_ratio_min", min(ratios)))
    L += ["", f"All lines together (sums of ns/object): ratio {tot_g / tot_r:.2f}; lowest line "
          f"{min(ratios):.2f}; {sum(1 for x in ratios if x >= 1.0)} of {len(ratios)} lines met."]
L += ["", "Reproduce: `" + command.split(" (")[0] + "` (builds `cargo bench --bench eval` and "
      "`bench/celgo`, generates the data with `bench/gen_objects.py` if missing)."]
with open(out, "w") as f:
    f.write("\n".join(L) + "\n")
print("\n".join(L))
if tsv != "none":
    old = []
    if os.path.exists(tsv):
        old = [l for l in open(tsv) if not l.startswith(("cel_ratio_", "# cel.sh"))]
    with open(tsv, "w") as f:
        f.writelines(old)
        # Provenance is the harness's (bench_end writes it as meta.* rows).
        for k, v in keys:
            f.write(f"{k}\t{v:.3f}\tx\n")
print(f"wrote {out}" + ("" if tsv == "none" else f" and {tsv}"), file=sys.stderr)
PY
bench_end "$RUNS"
