#!/usr/bin/env bash
# Kyverno's cleanup controller on the test bed, end to end: 20 finished Jobs and 5 unfinished
# ones, one DeletingPolicy (every minute, CEL condition "finished"), and the proof that Kyverno
# deletes the 20 and keeps the 5. Exits non-zero if it does not.
#
#   bench/kyverno-smoke.sh
#
# Uses the bed named by RETAINER_TESTBED_DIR when it is up; otherwise starts one in
# target/kyverno-testbed and stops it afterwards. Builds Kyverno on first use
# (scripts/testbed.sh build-kyverno).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

FINISHED=${SMOKE_FINISHED:-20}
RUNNING=${SMOKE_RUNNING:-5}
# A fresh namespace per run: the bed runs no namespace controller, so a deleted namespace
# stays Terminating.
NS=kyverno-smoke-$(date +%s)
POLICY=kyverno-smoke-finished-jobs

cleanup=()
on_exit() { local c; for c in "${cleanup[@]}"; do eval "$c" || true; done; }
trap on_exit EXIT

export RETAINER_TESTBED_DIR=${RETAINER_TESTBED_DIR:-$ROOT/target/kyverno-testbed}
if ! scripts/testbed.sh status >/dev/null 2>&1; then
  scripts/testbed.sh up
  cleanup+=("scripts/testbed.sh down")
fi
eval "$(scripts/testbed.sh env)"
# shellcheck source=bench/kyverno.sh
. bench/kyverno.sh

kyverno_build
kyverno_start
cleanup=("kyverno_stop" "${cleanup[@]}")

kubectl delete deletingpolicy "$POLICY" --ignore-not-found >/dev/null
kubectl create namespace "$NS" >/dev/null
kyverno_create_finished_jobs "$NS" finished "$FINISHED"
for i in $(seq 1 "$RUNNING"); do
  kubectl -n "$NS" create job "running-$i" --image busybox >/dev/null
done
count() { kubectl -n "$NS" get jobs -o name | grep -c "/$1-" || true; }
echo "jobs before: finished=$(count finished) running=$(count running)"

condition="has(object.status.completionTime) && object.status.conditions.exists(c, c.type == 'Complete' && c.status == 'True')"
kyverno_deleting_policy "$POLICY" "$NS" "* * * * *" "$condition" | tee /dev/stderr | kubectl apply -f - >/dev/null
created=$(date +%s)
echo "policy created at $(date -u +%T); the first run is at the next minute"

ok=0
for _ in $(seq 1 60); do
  sleep 5
  f=$(count finished); r=$(count running)
  echo "t+$(( $(date +%s) - created ))s finished=$f running=$r"
  if [ "$f" = 0 ]; then ok=1; break; fi
done

log=$(kyverno_state)/cleanup-controller.log
last=$(kubectl get deletingpolicy "$POLICY" -o jsonpath='{.status.lastExecutionTime}')
# At the default log level the deleting controller logs nothing per object; its status has
# only the time of the last run.
echo "policy status: lastExecutionTime=${last:-none}"
kubectl delete deletingpolicy "$POLICY" --ignore-not-found >/dev/null
if [ "$ok" = 1 ] && [ "$(count running)" = "$RUNNING" ]; then
  echo "PASS: Kyverno $KYVERNO_VERSION deleted all $FINISHED finished Jobs and kept the $RUNNING unfinished ones"
  kubectl -n "$NS" delete jobs --all --wait=false >/dev/null
else
  echo "FAIL: finished=$(count finished) running=$(count running) (want 0 and $RUNNING)"
  tail -n 40 "$log"
  exit 1
fi
