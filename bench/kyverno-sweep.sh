#!/usr/bin/env bash
# Job sweep, Kyverno beside retainer (issue #15, item 2): N finished Jobs in a fresh namespace,
# deleted once by Kyverno's cleanup controller (a DeletingPolicy, CEL condition "finished",
# schedule every minute) and once by retainer (a RetentionPolicy with keep "false", sweep
# requested by annotation), each at its defaults, interleaved over KYVERNO_SWEEP_RUNS rounds.
# Reads the API server's own /metrics (apiserver_request_total) before and after each run and
# reports the requests by verb and resource. Writes bench/results/kyverno.md.
#
#   KYVERNO_SWEEP_N=10000 KYVERNO_SWEEP_RUNS=3 bench/kyverno-sweep.sh
#
# KYVERNO_SWEEP_CONTENDERS (default kyverno,retainer); KYVERNO_PROPAGATION sets the
# DeletingPolicy's deletionPropagationPolicy (default: unset, Kyverno's default, which leaves
# the API server's default for batch/v1 Jobs, Orphan); KYVERNO_SWEEP_TIMEOUT caps one run's
# seconds (default 300 + N/10). BENCH_BIN_DIR names a prebuilt `retainer` (otherwise
# `cargo build --release --bin retainer`). Runs on the benchmarks' bed (bench/lib.sh:
# target/bench-testbed, or target/bench-testbed-fsync with BENCH_FSYNC=1, which writes
# kyverno-fsync.md). BENCH_QUICK=1: 300 Jobs, one round, and skipped (saying so) when Kyverno's
# binary is not in the cache, rather than building it.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

N=${KYVERNO_SWEEP_N:-$(bench_size 10000 300)}
RUNS=${KYVERNO_SWEEP_RUNS:-$(bench_size 3 1)}
CONTENDERS=${KYVERNO_SWEEP_CONTENDERS:-kyverno,retainer}
PROPAGATION=${KYVERNO_PROPAGATION:-}
TIMEOUT=${KYVERNO_SWEEP_TIMEOUT:-$((300 + N / 10))}
cmdline="KYVERNO_SWEEP_N=$N KYVERNO_SWEEP_RUNS=$RUNS bench/kyverno-sweep.sh"
[ "${BENCH_FSYNC:-}" = 1 ] && cmdline="BENCH_FSYNC=1 $cmdline"
[ -n "${KYVERNO_SWEEP_CONTENDERS:-}" ] && cmdline="KYVERNO_SWEEP_CONTENDERS=$CONTENDERS $cmdline"
[ -n "$PROPAGATION" ] && cmdline="KYVERNO_PROPAGATION=$PROPAGATION $cmdline"

say() { printf '[kyverno-sweep] %s\n' "$*" >&2; }

# shellcheck source=bench/kyverno.sh
. bench/kyverno.sh
if [ "${BENCH_QUICK:-}" = 1 ] && [ ! -x "$KYVERNO_HOME/bin/cleanup-controller" ]; then
  say "SKIPPED in quick mode: Kyverno $KYVERNO_VERSION is not in the cache ($KYVERNO_HOME); scripts/testbed.sh build-kyverno builds it"
  exit 0
fi
bench_begin kyverno bed "$cmdline"
bench_bed
kyverno_build

if [ -n "${BENCH_BIN_DIR:-}" ]; then
  RETAINER_BIN=$BENCH_BIN_DIR/retainer
  REV=${BENCH_REV:-prebuilt}
else
  REV=$(bench_rev)
  cargo build --release --quiet --bin retainer
  tmpbin=$(mktemp -d /tmp/kyverno-sweep-bin.XXXXXX)
  BENCH_CLEANUP+=("rm -rf '$tmpbin'")
  # A copy: a rebuild during the run must not swap the binary being measured.
  cp "${CARGO_TARGET_DIR:-$ROOT/target}/release/retainer" "$tmpbin/"
  RETAINER_BIN=$tmpbin/retainer
fi
kubectl apply --server-side --force-conflicts -f crds/retainer.dev.yaml >/dev/null
kubectl wait --for condition=Established --timeout 60s crd/retentionpolicies.retainer.dev >/dev/null
kyverno_apply_crds

WORK=$(mktemp -d /tmp/kyverno-sweep.XXXXXX)
BENCH_CLEANUP+=("rm -rf '$WORK'")
# A run stopped halfway must not leave Kyverno's controller running against the bed.
BENCH_CLEANUP+=("kyverno_stop >/dev/null 2>&1")
LOGS=${BENCH_LOG_DIR:-$WORK/logs}
mkdir -p "$LOGS"
RESULTS=$WORK/runs.jsonl
: >"$RESULTS"
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

# py SUBCOMMAND ARGS...: the helpers that talk to the API server directly (admin certificate).
py() {
  python3 - "$RETAINER_TESTBED_DIR" "$@" <<'PY'
import json, re, ssl, sys, time, http.client, urllib.parse
bed, cmd, args = sys.argv[1], sys.argv[2], sys.argv[3:]
port = int([l.split("=")[1] for l in open(f"{bed}/ports") if l.startswith("API_PORT=")][0])
ctx = ssl.create_default_context(cafile=f"{bed}/pki/ca.crt")
ctx.load_cert_chain(f"{bed}/pki/admin.crt", f"{bed}/pki/admin.key")
conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)

def get(path):
    global conn
    for attempt in range(5):
        try:
            conn.request("GET", path); r = conn.getresponse(); body = r.read()
            if r.status != 200:
                raise RuntimeError(f"GET {path}: {r.status}")
            return body
        except (http.client.HTTPException, OSError):
            conn = http.client.HTTPSConnection("127.0.0.1", port, context=ctx)
            if attempt == 4: raise
            time.sleep(0.5)

def count(ns):
    # One object and the server's count of the rest: cheap enough to ask every half second.
    d = json.loads(get(f"/apis/batch/v1/namespaces/{ns}/jobs?limit=1"))
    return len(d["items"]) + (d["metadata"].get("remainingItemCount") or 0)

if cmd == "scrape":  # file: apiserver_request_total summed by verb and resource[/subresource]
    out = {}
    for line in get("/metrics").decode().splitlines():
        if not line.startswith("apiserver_request_total{"):
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', line[:line.rindex("}")]))
        if not labels.get("resource"):
            continue
        res = labels["resource"] + ("/" + labels["subresource"] if labels.get("subresource") else "")
        key = f'{labels["verb"]} {res}'
        out[key] = out.get(key, 0) + float(line.rsplit(" ", 1)[1])
    json.dump(out, open(args[0], "w"))
elif cmd == "wait-gone":  # ns n t0 timeout -> JSON {first, total, polls}
    ns, n, t0, timeout = args[0], int(args[1]), float(args[2]), float(args[3])
    first = None; polls = 0
    while True:
        left = count(ns); polls += 1; now = time.time()
        if first is None and left < n: first = now - t0
        if left == 0:
            print(json.dumps({"first": first, "total": now - t0, "polls": polls})); break
        if now - t0 > timeout:
            print(json.dumps({"first": first, "total": None, "left": left, "polls": polls})); break
        time.sleep(0.5)
elif cmd == "count":
    print(count(args[0]))
PY
}

# retainer at its defaults: no flags but where to serve metrics.
run_retainer() { # ns log
  local ns=$1 log=$2 pid
  "$RETAINER_BIN" run --metrics-addr 127.0.0.1:0 </dev/null >/dev/null 2>"$log" &
  pid=$!
  cat <<EOF | kubectl apply -f - >/dev/null
apiVersion: retainer.dev/v1alpha1
kind: RetentionPolicy
metadata: {name: sweep, namespace: $ns}
spec:
  target: {kind: Job, selector: {matchLabels: {bench: job}}}
  keep: "false"
  schedule: "0 0 29 2 *"
  deletion: {abortAbovePercent: 100, maxPerSweep: 1000000}
EOF
  local deadline=$((SECONDS + 300))
  until [ "$(kubectl -n "$ns" get retentionpolicy sweep -o jsonpath='{.status.summary.governed}' 2>/dev/null)" = "$N" ]; do
    kill -0 "$pid" 2>/dev/null || { say "retainer exited; see $log"; return 1; }
    [ $SECONDS -lt $deadline ] || { say "retainer did not govern $N Jobs in 300s"; kill "$pid"; return 1; }
    sleep 1
  done
  echo "$pid"
}

# peak_kib PID: the process's peak resident memory (VmHWM), read before it is stopped.
peak_kib() {
  awk '/^VmHWM:/ {print $2}' "/proc/$1/status" 2>/dev/null || true
}

one_run() { # contender round
  local c=$1 round=$2 ns="ksweep-$1-$2-$(date +%s)"
  kubectl create namespace "$ns" >/dev/null
  local t=$SECONDS
  kyverno_create_finished_jobs "$ns" job "$N"
  local create=$((SECONDS - t)) t0 pid="" res applied="" hwm=""
  say "$c round $round: $N finished Jobs in $ns (${create}s)"
  case $c in
    kyverno)
      kyverno_start >/dev/null
      # At least 10 s before the minute, so that "before" is read before the first execution.
      [ "$(date +%-S)" -lt 48 ] || sleep $((62 - $(date +%-S)))
      local extra=""
      [ -n "$PROPAGATION" ] && extra="  deletionPropagationPolicy: $PROPAGATION"
      { kyverno_deleting_policy "ksweep" "$ns" "* * * * *" "has(object.status.completionTime)"
        [ -n "$extra" ] && echo "$extra"; } >"$WORK/policy.yaml"
      # The spec's last key is `conditions`; the optional field goes under spec, not under it.
      python3 - "$WORK/policy.yaml" <<'PY'
import sys
p = sys.argv[1]; s = open(p).read().splitlines()
extra = [l for l in s if l.startswith("  deletionPropagationPolicy:")]
s = [l for l in s if not l.startswith("  deletionPropagationPolicy:")]
i = s.index("spec:") + 1
open(p, "w").write("\n".join(s[:i] + extra + s[i:]) + "\n")
PY
      applied=$(date +%s.%N)
      kubectl apply -f "$WORK/policy.yaml" >/dev/null
      local created
      created=$(kubectl get deletingpolicy ksweep -o jsonpath='{.metadata.creationTimestamp}')
      # cron "* * * * *" runs at the first minute boundary after creation.
      t0=$(( ($(date -d "$created" +%s) / 60 + 1) * 60 ))
      # Read "before" just ahead of the first execution, so both contenders' windows start at
      # their trigger (the wait for the minute is not counted in Kyverno's requests).
      sleep "$(python3 -c "import time; print(max(0, $t0 - 2 - time.time()))")"
      py scrape "$WORK/before.json"
      res=$(py wait-gone "$ns" "$N" "$t0" "$TIMEOUT")
      py scrape "$WORK/after.json"
      hwm=$(peak_kib "$(cat "$(kyverno_state)/pid")")
      kubectl delete deletingpolicy ksweep >/dev/null
      cp "$(kyverno_state)/cleanup-controller.log" "$LOGS/kyverno-$ns.log"
      kyverno_stop >/dev/null
      ;;
    retainer)
      pid=$(run_retainer "$ns" "$LOGS/retainer-$ns.log")
      py scrape "$WORK/before.json"
      t0=$(date +%s.%N)
      kubectl -n "$ns" annotate retentionpolicy sweep "retainer.dev/sweep-requested=$(date +%s%N)" >/dev/null
      res=$(py wait-gone "$ns" "$N" "$t0" "$TIMEOUT")
      py scrape "$WORK/after.json"
      hwm=$(peak_kib "$pid")
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
      ;;
  esac
  python3 - "$c" "$round" "$create" "$res" "$WORK/before.json" "$WORK/after.json" "$t0" \
    "$applied" "$hwm" >>"$RESULTS" <<'PY'
import json, sys
c, rnd, create, res, b, a, t0, applied, hwm = sys.argv[1:]
res = json.loads(res); before = json.load(open(b)); after = json.load(open(a))
# Kyverno's first deletion counted from the policy's apply, its cron wait included.
res["apply_first"] = (float(t0) + res["first"] - float(applied)
                      if applied and res.get("first") is not None else None)
res["peak_mib"] = int(hwm) / 1024 if hwm else None
delta = {k: after.get(k, 0) - before.get(k, 0) for k in after}
# The script's own requests in the window: its polls (LIST jobs) and retainer's trigger (PATCH).
delta["LIST jobs"] = delta.get("LIST jobs", 0) - res["polls"]
if c == "retainer":
    delta["PATCH retentionpolicies"] = delta.get("PATCH retentionpolicies", 0) - 1
delta = {k: int(round(v)) for k, v in delta.items() if round(v) > 0}
print(json.dumps({"contender": c, "round": int(rnd), "create": int(create), **res, "requests": delta}))
PY
  say "$c round $round: $(tail -n 1 "$RESULTS")"
}

# The section is rewritten after every run, so an interrupted benchmark still reports the runs
# it finished (and says so).
report() {
  local load_end
  load_end=$(cut -d' ' -f1-3 /proc/loadavg)
  python3 - "$RESULTS" "$BENCH_OUT" "$N" "$RUNS" "$cmdline" "$REV" "$KYVERNO_VERSION" "$LOAD_START" "$load_end" \
    "${PROPAGATION:-unset}" "$("$RETAINER_BIN" --version 2>/dev/null | head -1)" "$CONTENDERS" \
    "$BENCH_TSV" <<'PY'
import json, os, platform, statistics, sys
res_f, out, n, runs, cmdline, rev, kver, load0, load1, prop, rver, cont, tsv = sys.argv[1:]
rows = [json.loads(l) for l in open(res_f) if l.strip()]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal")) / 1048576
names = {"kyverno": f"Kyverno {kver} cleanup controller, defaults (DeletingPolicy, schedule `* * * * *`, deletionPropagationPolicy {prop})",
         "retainer": "retainer at its defaults (`--delete-concurrency 10 --delete-qps 50`), sweep requested by annotation"}
def med(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None
def fmt(x, d=1):
    return "—" if x is None else f"{x:.{d}f}"
L = []
L.append("## Job sweep: Kyverno DeletingPolicy beside retainer")
L.append("")
L.append(f"`{cmdline}` at `{rev}`; written by the script. {n} finished Jobs per run in a fresh")
L.append("namespace, each contender alone on the test bed (the other not running). Time from the")
L.append("trigger (Kyverno: the cron minute its policy first fires; retainer: the sweep annotation)")
L.append("to the last Job gone from the API server; requests are the API server's own")
L.append("`apiserver_request_total` delta over the run (all clients, including kube-controller-manager's")
L.append("garbage collector; the script's own polls and trigger subtracted).")
L.append("")
L.append(f"retainer: {rver or '?'}.")
L.append("")
done = len(rows); planned = int(runs) * len(cont.split(","))
if done < planned:
    L.append(f"Partial: {done} of {planned} runs finished (the benchmark was stopped).")
    L.append("")
L.append("| contender | runs | first deletion (s) | all gone (s) | Jobs/s | requests (median total) | peak RSS (MiB) | policy applied to first deletion (s) |")
L.append("|---|---|---|---|---|---|---|---|")
figures = [("n", int(n), "Jobs")]
for c in ["kyverno", "retainer"]:
    rs = [r for r in rows if r["contender"] == c]
    if not rs: continue
    tot = med([r["total"] for r in rs]); first = med([r["first"] for r in rs])
    reqs = med([sum(r["requests"].values()) for r in rs])
    peak = med([r.get("peak_mib") for r in rs]); applied = med([r.get("apply_first") for r in rs])
    rate = None if not tot else int(n) / tot
    failed = sum(1 for r in rs if r["total"] is None)
    L.append(f"| {names[c]} | {len(rs)}{f' ({failed} timed out)' if failed else ''} | {fmt(first)} | {fmt(tot)} | {fmt(rate)} | {fmt(reqs, 0)} | {fmt(peak)} | {fmt(applied)} |")
    # A contender that timed out in any run has no total to compare.
    figures += [(f"runs_{c}", len(rs), "runs"), (f"first_s_{c}", first, "s"),
                (f"total_s_{c}", None if failed else tot, "s"), (f"requests_{c}", reqs, "requests"),
                (f"peak_mib_{c}", peak, "MiB"), (f"apply_first_s_{c}", applied, "s")]
tk, tr = dict((k, v) for k, v, _ in figures).get("total_s_kyverno"), dict((k, v) for k, v, _ in figures).get("total_s_retainer")
if tk and tr:
    figures.append(("ratio_kyverno_retainer", tk / tr, "x"))
with open(tsv, "w") as f:
    for k, v, u in figures:
        if v is not None:
            f.write(f"{k}\t{v}\t{u}\n")
L.append("")
L.append("Peak RSS: the controller process's `VmHWM` when the last Job is gone. Policy applied to "
         "first deletion: Kyverno's includes the wait for its cron minute (`* * * * *`); retainer's "
         "sweep is requested by annotation once it governs every Job, so it has none.")
L.append("")
L.append("Requests by verb and resource (median over runs):")
L.append("")
keys = sorted({k for r in rows for k in r["requests"]}, key=lambda k: (k.split(" ", 1)[1], k))
cs = [c for c in ["kyverno", "retainer"] if any(r["contender"] == c for r in rows)]
L.append("| verb resource | " + " | ".join(cs) + " |")
L.append("|---|" + "---|" * len(cs))
for k in keys:
    vals = [med([r["requests"].get(k, 0) for r in rows if r["contender"] == c]) for c in cs]
    L.append(f"| {k} | " + " | ".join(fmt(v, 0) for v in vals) + " |")
L.append("")
L.append("Runs:")
L.append("")
L.append("| round | contender | create (s) | first (s) | all gone (s) | polls | requests |")
L.append("|---|---|---|---|---|---|---|")
for r in rows:
    L.append(f"| {r['round']} | {r['contender']} | {r['create']} | {fmt(r['first'])} | {fmt(r['total']) if r['total'] is not None else 'timed out, ' + str(r.get('left')) + ' left'} | {r['polls']} | {sum(r['requests'].values())} |")
open(out, "w").write("\n".join(L) + "\n")
PY
  bench_end "$RUNS"
}

IFS=, read -r -a contenders <<<"$CONTENDERS"
for round in $(seq 1 "$RUNS"); do
  for c in "${contenders[@]}"; do one_run "$c" "$round"; report; done
done

