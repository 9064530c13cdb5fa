#!/usr/bin/env bash
# Evaluation throughput, retainer vs cel-go, same expressions, same data (issue #7, item 2).
#
#   bench/eval.sh [N]     N Jobs and N Secrets (default 100000); RUNS=3 runs of each figure;
#                         SMALL_N=1000 adds an end-to-end run on that many objects
#
# Generates the objects if bench/data lacks them, builds retainer, its eval bench and the cel-go
# program (bench/celgo), runs each contender RUNS times, checks that both decide every object
# alike, and writes the Markdown section bench/results/eval.md (medians, objects/s, ratios,
# versions, commands). A benchmark, not a test: nothing here gates CI.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck source=bench/lib.sh
source bench/lib.sh

# BENCH_QUICK=1: 2,000 objects, one run.
N=${1:-${N:-$(bench_size 100000 2000)}}
SMALL_N=${SMALL_N:-$N}
RUNS=${RUNS:-$(bench_size 3 1)}
DATA=bench/data
bench_begin eval none "RUNS=$RUNS SMALL_N=$SMALL_N bench/eval.sh $N"
OUT=$BENCH_OUT
NOW=2026-11-22T12:00:00Z
mkdir -p "$DATA" bench/results

for n in "$N" "$SMALL_N"; do
  if [ ! -s "$DATA/jobs-$n.json" ] || [ ! -s "$DATA/secrets-$n.json" ]; then
    python3 bench/gen_objects.py --n "$n" --out "$DATA"
  fi
done

# Copies of the binaries: others rebuilding target/ during a long run must not swap the program
# being measured.
BIN=$DATA/bin
mkdir -p "$BIN"
cargo build --release --quiet --bin retainer
cp "${CARGO_TARGET_DIR:-target}/release/retainer" "$BIN/retainer"
bench_copy_bench eval "$BIN/eval-bench"
(cd bench/celgo && GOFLAGS=-mod=mod go build -o "../../$BIN/celgo" .)

load_before=$(cut -d' ' -f1-3 /proc/loadavg)

# End to end: each process timed from start to exit, its report kept for the comparison.
python3 - "$RUNS" "$DATA" "$NOW" "$N" "$SMALL_N" <<'PY'
import json, os, statistics, subprocess, sys, time

runs, data, now, sizes = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4:]
scenarios = [("fleet-gitjobs", "jobs"), ("finished-jobs", "jobs"),
             ("helm-history", "secrets"), ("unused-secrets", "secrets")]

def timed(cmd, out_path, env):
    """Wall time, user+sys CPU time and peak RSS of one process (wait4)."""
    with open(out_path, "w") as out, open(out_path + ".err", "w") as err:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=out, stderr=err, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
    with open(out_path + ".err") as e:
        message = e.read().strip()
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024,
            "ok": os.waitstatus_to_exitcode(status) == 0,
            "error": message.splitlines()[0] if message else ""}

for n in dict.fromkeys(sizes):
    results = []
    for name, kind in scenarios:
        policy = f"examples/{name}/policy.yaml"
        objects = f"{data}/{kind}-{n}.json"
        go = [f"{data}/bin/celgo", "-policy", policy, "-objects", objects, "-now", now]
        contenders = [
            ("retainer check", "retainer", {},
             [f"{data}/bin/retainer", "check", "-f", policy, "--objects", objects, "--now", now, "-o", "json"]),
            ("cel-go, GOMAXPROCS=1", "celgo", {"GOMAXPROCS": "1"}, go),
            ("cel-go, GOMAXPROCS=2", "celgo2", {"GOMAXPROCS": "2"}, go),
        ]
        for label, tag, extra, cmd in contenders:
            out = f"{data}/out-{tag}-{name}-{n}.json"
            rs = []
            for _ in range(runs):
                r = timed(cmd, out, dict(os.environ, **extra))
                rs.append(r)
                print(f"  N={n} {name:15} {label:21} {r['wall']:7.2f} s wall {r['cpu']:7.2f} s CPU"
                      + ("" if r["ok"] else f"  FAILED: {r['error'][:90]}"), file=sys.stderr)
                if not r["ok"]:
                    break  # a refusal is not timed again
            results.append({"scenario": name, "contender": label, "tag": tag,
                            "ok": all(r["ok"] for r in rs),
                            "error": next((r["error"] for r in rs if not r["ok"]), ""),
                            "wall": statistics.median(r["wall"] for r in rs),
                            "cpu": statistics.median(r["cpu"] for r in rs),
                            "rss_mb": max(r["rss_mb"] for r in rs), "runs": len(rs)})
    with open(f"{data}/e2e-{n}.json", "w") as f:
        json.dump(results, f, indent=1)
PY

# In process: the same phases timed inside each program, on the same files. The bench binary
# is what `cargo bench --bench eval -- ...` runs; cargo adds `--bench`.
"$BIN/eval-bench" --data "$DATA" --n "$N" --runs "$RUNS" --reports "$DATA" --bench \
  | tee "$DATA/inproc-retainer-$N.tsv"
: > "$DATA/inproc-celgo-$N.tsv"
for s in fleet-gitjobs:jobs finished-jobs:jobs helm-history:secrets unused-secrets:secrets; do
  GOMAXPROCS=1 "$BIN/celgo" -mode bench -runs "$RUNS" -scenario "${s%%:*}" \
    -policy "examples/${s%%:*}/policy.yaml" -objects "$DATA/${s##*:}-$N.json" -now "$NOW" \
    | tee -a "$DATA/inproc-celgo-$N.tsv"
done

load_after=$(cut -d' ' -f1-3 /proc/loadavg)
celgo_version=$(cd bench/celgo && GOFLAGS=-mod=mod go list -m -f '{{.Version}}' github.com/google/cel-go)
cel_rust_version=$(awk '/^name = "cel"$/ {getline; gsub(/[^0-9.]/, ""); print; exit}' Cargo.lock)

python3 - "$N" "$SMALL_N" "$RUNS" "$DATA" "$OUT" "$NOW" "$load_before" "$load_after" \
  "$celgo_version" "$cel_rust_version" "$(rustc --version)" "$(go version)" \
  "$(bench_rev)" <<'PY'
import datetime, json, os, sys

(n, small_n, runs, data, out, now, load_before, load_after, celgo_v, celrs_v, rustc_v, go_v,
 rev) = sys.argv[1:]
N = int(n)
scenarios = ["fleet-gitjobs", "finished-jobs", "helm-history", "unused-secrets"]

def tsv(path):
    rows = {}
    for line in open(path):
        p = line.rstrip("\n").split("\t")
        if p[0] == "RESULT":
            rows[(p[1], p[2])] = {"wall": float(p[3]), "cpu": float(p[4]), "objects": int(p[5]),
                                  "evals": int(p[6])}
    return rows

rs, go = tsv(f"{data}/inproc-retainer-{n}.tsv"), tsv(f"{data}/inproc-celgo-{n}.tsv")
e2e = {size: json.load(open(f"{data}/e2e-{size}.json")) for size in dict.fromkeys([n, small_n])}

def rate(objects, secs):
    return f"{objects / secs:,.0f}" if secs > 0 else "-"

def ratio(cel_go_secs, retainer_secs):
    return f"{cel_go_secs / retainer_secs:.2f}" if retainer_secs > 0 else "-"

def report(path):
    try:
        return json.load(open(path))
    except (OSError, ValueError):
        return None

def compare(name, size):
    """The retainer report to hold against cel-go's, and what the comparison found."""
    binary = next(r for r in e2e[size] if r["scenario"] == name and r["tag"] == "retainer")
    if binary["ok"]:
        src, a_path = "`retainer check`", f"{data}/out-retainer-{name}-{size}.json"
    elif size == n:
        src, a_path = "in-process `check`", f"{data}/report-retainer-{name}-{size}.json"
    else:
        return "`retainer check` failed", "not compared", None
    b_path = f"{data}/out-celgo-{name}-{size}.json"
    a, b = report(a_path), report(b_path)
    if a is None or b is None:
        return src, "no report to compare", None
    # Verdicts, not reasons: cel-go runs keep whole, retainer also names the term that held.
    va = {(r["namespace"], r["name"]): r["verdict"] for r in a["results"]}
    vb = {(r["namespace"], r["name"]): r["verdict"] for r in b["results"]}
    diff = sum(1 for k in va.keys() | vb.keys() if va.get(k) != vb.get(k))
    if diff == 0 and a["summary"] == b["summary"]:
        return src, "same verdict for every object", a["summary"]
    return src, f"**{diff} objects decided differently**", a["summary"]

L = []
w = L.append
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
w("## Evaluation: retainer vs cel-go")
w("")
w(f"The example policies' own CEL expressions over the same generated objects, evaluated by "
  f"retainer (cel-rust: crate `cel` {celrs_v}) and by a Go program on cel-go (`github.com/google/cel-go` "
  f"{celgo_v} in kube-apiserver's CEL environment, `bench/celgo`). Medians of {runs} runs. Objects/s counts all objects of the "
  f"policy's target kind in the file, selected by the policy or not, per second of **CPU time** "
  f"of the process: the machine is shared, and CPU time moves far less than wall time under "
  f"load. Speed ratios are cel-go's seconds over retainer's: above 1, retainer is faster.")
w("")
w(f"Run on {datetime.date.today().isoformat()}: retainer `{rev}` ("
  f"see the provenance above), {rustc_v}, {go_v}; {os.cpu_count()} vCPUs ({cpu}); load average {load_before} "
  f"before and {load_after} after: other work shared the machine, so wall times are inflated "
  f"and noisy.")
w("")
w("### What is measured")
w("")
w("- **End to end**: one process from start to exit, writing the JSON report to a file. "
  "retainer: `retainer check -o json` (reads the file, JSON with serde_json, drops Secret data, "
  "indexes referrers, evaluates, prints). cel-go: `celgo` (reads the file with `encoding/json`, "
  "integral numbers as int64 as Kubernetes does, then the same pipeline and the same report). "
  "cel-go runs on one core (`GOMAXPROCS=1`, like retainer's single-threaded evaluation) and with "
  "Go's default here (2), where the garbage collector also uses the second core.")
w("- **In process**, each program timing its own phases: `parse` (read and parse the file), "
  "`check` (parse, pipeline and rendering the report in memory: `retainer check` without "
  "start-up and printing), `pipeline` (select, match, group, order, rank, referrers, guards, "
  "keep, over parsed objects), and `cel`: CEL alone, i.e. for each object the policy selects, "
  "bind the variables and run match, groupBy, orderBy and keep, with ranks, ages and referrers "
  "computed outside the timing; `cel: of which binding` times the binding alone. retainer: "
  "`cargo bench --bench eval -- --data ...` (`bench/eval.rs`); cel-go: `celgo -mode bench`, "
  "`GOMAXPROCS=1`.")
w("- **The same CEL**: both programs read the policies' files. cel-go compiles them in the "
  "environment kube-apiserver builds for new expressions (`k8s.io/apiserver` "
  "`environment.MustBaseEnvSet(1.36).NewExpressionsEnv()`: the Kubernetes libraries, cel-go's "
  "extensions at Kubernetes' versions, optional types) with `object` declared `dyn` (retainer "
  "has no schema either) and retainer's variables; programs are built as the admission plugin "
  "builds them (OptOptimize, i.e. constant folding, and cost tracking with its limit). cel-go "
  "runs `keep` whole, as Kubernetes runs an expression; retainer runs it term by term over the "
  "parsed expression to report which top-level `||` term held.")
w("- **Binding differs by design**: cel-go reads Go maps lazily through its type adapter, so "
  "binding an object costs nothing up front; retainer first converts the fields the expressions "
  "read into cel-rust values (`expr::project`), and that conversion is part of its `cel` figure.")
w("- **The same verdicts**: both programs' reports are compared object by object (below).")
w("")

def e2e_table(size):
    rows_by = e2e[size]
    w("| policy | contender | wall s | CPU s | objects/CPU-s | peak RSS MB | speed vs cel-go, 1 core (CPU) |")
    w("|---|---|---:|---:|---:|---:|---:|")
    refused = []
    for name in scenarios:
        rows = [r for r in rows_by if r["scenario"] == name]
        go1 = next(r for r in rows if r["tag"] == "celgo")
        for r in rows:
            if not r["ok"]:
                refused.append(r["error"])
                w(f"| {name} | {r['contender']} | refuses the file | - | - | - | - |")
                continue
            rt = ratio(go1["cpu"], r["cpu"]) if r["tag"] == "retainer" and go1["ok"] else ""
            w(f"| {name} | {r['contender']} | {r['wall']:.2f} | {r['cpu']:.2f} | "
              f"{rate(int(size), r['cpu'])} | {r['rss_mb']:,.0f} | {rt} |")
    w("")
    return refused

w(f"### End to end, N = {N:,}")
w("")
refused = e2e_table(n)
if refused:
    w(f"`retainer check` refuses these files: `{refused[0]}`. `check::parse_documents` "
      "(`src/check.rs`) parses with serde-saphyr's default budget, at most 1,024 documents, "
      "250,000 YAML nodes and 1,000,000 parser events, so `check` stops at a List of about "
      "2,000 such Jobs, or at 1,025 separate documents. The in-process `check` figure below is "
      "the same work with the budget lifted (`Options { budget: None, .. }`) and stands in for "
      "the end-to-end one.")
    w("")
if small_n != n:
    w(f"### End to end, N = {int(small_n):,}")
    w("")
    e2e_table(small_n)
    w("")

w(f"### In process, N = {N:,}")
w("")
w("| policy | phase | retainer CPU s | cel-go CPU s | retainer objects/CPU-s | cel-go objects/CPU-s | speed vs cel-go | wall s, retainer / cel-go |")
w("|---|---|---:|---:|---:|---:|---:|---:|")
labels = {"cel-bind": "cel: of which binding"}
for name in scenarios:
    for phase in ["parse", "check", "pipeline", "cel", "cel-bind"]:
        r, g = rs.get((name, phase)), go.get((name, phase))
        if r is None and g is None:
            continue
        cell = lambda x, k: f"{x[k]:.3f}" if x else "-"
        w(f"| {name} | {labels.get(phase, phase)} | {cell(r, 'cpu')} | {cell(g, 'cpu')} | "
          f"{rate(r['objects'], r['cpu']) if r else '-'} | {rate(g['objects'], g['cpu']) if g else '-'} | "
          f"{ratio(g['cpu'], r['cpu']) if r and g and phase != 'cel-bind' else ''} | "
          f"{cell(r, 'wall')} / {cell(g, 'wall')} |")
w("")
def total(rows, phase, k="cpu"):
    return sum(rows[(s, phase)][k] for s in scenarios if (s, phase) in rows)
if all((s, "cel") in rs and (s, "cel") in go for s in scenarios):
    evals = sum(rs[(s, "cel")]["evals"] for s in scenarios)
    w(f"Over the four policies, CEL alone: retainer {total(rs, 'cel'):.3f} CPU s, cel-go "
      f"{total(go, 'cel'):.3f} CPU s for the same {evals:,} evaluations (speed "
      f"{ratio(total(go, 'cel'), total(rs, 'cel'))}); retainer's binding is "
      f"{100 * total(rs, 'cel-bind') / total(rs, 'cel'):.0f}% of its `cel` time. In retainer's "
      f"in-process `check`, parsing is {100 * total(rs, 'parse') / total(rs, 'check'):.0f}% of "
      f"the time (cel-go's: {100 * total(go, 'parse') / total(go, 'check'):.0f}%).")
    w("")

w("### Where retainer's time goes")
w("")
if all((s, ph) in rs for s in scenarios for ph in ("pipeline", "cel")):
    spans = [rs[(s, "pipeline")]["cpu"] / rs[(s, "cel")]["cpu"] for s in scenarios if rs[(s, "cel")]["cpu"] > 0]
    outside = f" (here `pipeline` takes {min(spans):.0f} to {max(spans):.0f} times the `cel` time)"
else:
    outside = ""
w("From callgrind instruction profiles of `eval-bench` on 4,000-object files (`valgrind "
  "--tool=callgrind --toggle-collect=...`; `cel` 0.15.0, 2026-11-22), in order of weight:")
w("")
w("1. **Parsing**, the larger part of `check`. `check::parse_documents` (`src/check.rs`) "
  "reads JSON with serde_json: serde-saphyr, which it used before for JSON too, was 16 times "
  "slower on these files and refused them outright (its default budget stops at 250,000 YAML "
  "nodes, about 2,000 such Jobs; YAML input still has that limit). It also deep-copied a "
  "List's items, holding the parsed objects twice; they are moved out of the List now.")
w(f"2. **The pipeline outside CEL**{outside}: in `engine::evaluate` over fleet-gitjobs, 57% of "
  "the instructions were in `serde_json::Value::pointer`, which allocates two Strings per path "
  "segment (`~1`/`~0` unescaping) on every call; `engine::guard` also built its pointers with "
  "`format!` and `replace` for every object, and `engine::selects` copied every label into a "
  "BTreeMap just to test the label selector. Fixed (commit \"Evaluation without allocating "
  "paths\"): `json::at` walks a pointer without allocating, guards use constant keys, and "
  "selectors read the object's label map in place. The figures above are after the fix.")
w("3. **Binding**, about a third of `cel`: `expr::project` builds a cel-rust `HashMap` (SipHash) "
  "and a `Box` per node, where cel-go wraps Go maps lazily. A lazy, JSON-backed map value would "
  "remove it, but cel 0.15 converts values to `Value` for library functions and results, and "
  "compares maps, only through its own `DefaultMap`: such a type would break map equality and "
  "conversions until the cel crate supports foreign maps.")
w("4. **Interpretation**, the rest of `cel`, inside the cel crate: per `Compiled::run`, "
  "`Context::resolve_qualified` (about 25% for helm-history) joins `object.metadata.labels.name` "
  "into a new String and asks the resolver for every prefix of it on every evaluation, where "
  "cel-go resolves the name once when planning; map lookups hash with SipHash "
  "(`DefaultMap::find`, about 20%); calls collect their arguments into `Vec`s (about 25%); and "
  "nothing is folded, so `duration('24h')` is parsed on every evaluation (finished-jobs), which "
  "cel-go's `OptOptimize` does once. `src/expr` offers no cheap, safe gain against these: "
  "running `keep` whole before its terms would save a run per candidate but cost one per kept "
  "object.")
w("")
w("### Same verdicts")
w("")
w("| N | policy | governed | kept | candidates | errors | retainer's report | against cel-go's (verdicts) |")
w("|---:|---|---:|---:|---:|---:|---|---|")
for size in dict.fromkeys([n, small_n]):
    for name in scenarios:
        src, verdict, summary = compare(name, size)
        s = summary or {}
        w(f"| {int(size):,} | {name} | {s.get('governed', '-')} | {s.get('kept', '-')} | "
          f"{s.get('candidates', '-')} | {s.get('errors', '-')} | {src} | {verdict} |")
w("")

w("### Data")
w("")
w(f"`bench/gen_objects.py --n {n}` (cached in `{data}/`, not committed) is deterministic: "
  "choices are hashes of the object's index, so every machine gets the same bytes. "
  f"`jobs-{n}.json` is a `List` of {N:,} Jobs of about 2.5 kB each (labels, owner references, "
  "pod template, conditions) and 6 Namespaces: 60% Fleet GitRepo Jobs in fleet-local (400 "
  "GitRepos), 10% in fleet-default, the rest CronJob and migration Jobs in other namespaces and "
  "kube-system; 88% succeeded, 7% failed, 5% running; created over the 20 days before "
  f"`--now {now}`. `secrets-{n}.json` holds {N:,} Secrets: 60% Helm release revisions in apps "
  "(releases of 5 to 240 revisions, 1 kB of release data each), 5% in team-b, 20% labelled "
  "`retainer.dev/cleanup` in team-a, 15% service-account tokens, TLS, pull and config Secrets; "
  "and one Pod for every 10 clean-up Secrets, mounting one and reading another.")
w("")

w("### Commands")
w("")
w("```sh")
w(f"bench/eval.sh {n}     # everything below, RUNS={runs}" + (f", SMALL_N={small_n}" if small_n != n else ""))
w(f"python3 bench/gen_objects.py --n {n} --out {data}")
w(f"retainer check -f examples/POLICY/policy.yaml --objects {data}/KIND-{n}.json --now {now} -o json")
w(f"(cd bench/celgo && go build -o ../../{data}/bin/celgo .)")
w(f"GOMAXPROCS=1 {data}/bin/celgo -policy examples/POLICY/policy.yaml -objects {data}/KIND-{n}.json -now {now}")
w(f"cargo bench --bench eval -- --data {data} --n {n} --runs {runs} --reports {data}")
w(f"GOMAXPROCS=1 {data}/bin/celgo -mode bench -runs {runs} -scenario POLICY -policy examples/POLICY/policy.yaml -objects {data}/KIND-{n}.json -now {now}")
w("```")
w("")
w("POLICY/KIND: fleet-gitjobs/jobs, finished-jobs/jobs, helm-history/secrets, unused-secrets/secrets.")

with open(out, "w") as f:
    f.write("\n".join(L) + "\n")
print(f"wrote {out}", file=sys.stderr)
PY

# Figures for bench/targets.sh (keys in bench/README.md): CEL alone and end to end, cel-go's CPU
# seconds over retainer's, per policy and over all four.
python3 - "$DATA" "$N" "$BENCH_TSV" <<'PY'
import json, sys
data, n, tsv = sys.argv[1:]
scenarios = ["fleet-gitjobs", "finished-jobs", "helm-history", "unused-secrets"]
def rows(path):
    out = {}
    for line in open(path):
        p = line.rstrip("\n").split("\t")
        if p[0] == "RESULT":
            out[(p[1], p[2])] = float(p[4])
    return out
rs, go = rows(f"{data}/inproc-retainer-{n}.tsv"), rows(f"{data}/inproc-celgo-{n}.tsv")
e2e = json.load(open(f"{data}/e2e-{n}.json"))
with open(tsv, "a") as f:
    f.write(f"n\t{n}\tobjects\n")
    for s in scenarios:
        if rs.get((s, "cel")) and (s, "cel") in go:
            f.write(f"policy_cel_ratio_{s}\t{go[(s, 'cel')] / rs[(s, 'cel')]:.4f}\tx\n")
        r = next((x for x in e2e if x["scenario"] == s and x["tag"] == "retainer" and x["ok"]), None)
        g = next((x for x in e2e if x["scenario"] == s and x["tag"] == "celgo" and x["ok"]), None)
        if r and g and r["cpu"] > 0:
            f.write(f"e2e_ratio_{s}\t{g['cpu'] / r['cpu']:.4f}\tx\n")
    if all((s, "cel") in rs and (s, "cel") in go for s in scenarios):
        total_rs = sum(rs[(s, "cel")] for s in scenarios)
        total_go = sum(go[(s, "cel")] for s in scenarios)
        if total_rs > 0:
            f.write(f"cel_total_ratio\t{total_go / total_rs:.4f}\tx\n")
PY
bench_end "$RUNS"
