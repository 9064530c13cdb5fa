#!/usr/bin/env bash
# The demo: a real API server and registries on this machine, the CRDs, a sample workload
# (Fleet-style Jobs and Helm release Secrets), the example policies, and the controller running
# until Ctrl-C, after which everything is stopped.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/testbed.sh up
eval "$(scripts/testbed.sh env)"
cargo build --quiet --release
BIN=$ROOT/target/release/retainer

kubectl apply --server-side --force-conflicts -f crds/ >/dev/null
kubectl wait --for=condition=Established crd/retentionpolicies.retainer.dev crd/clusterretentionpolicies.retainer.dev --timeout=60s >/dev/null
for ns in fleet-local apps team-a ci; do
  kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
done

echo "== sample workload: Fleet jobs in fleet-local, Helm release Secrets in apps"
finish_job() { # namespace name
  local now
  now=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  kubectl -n "$1" patch job "$2" --subresource=status --type=merge -p "{\"status\":{\"startTime\":\"$now\"}}" >/dev/null
  kubectl -n "$1" patch job "$2" --subresource=status --type=merge -p "{\"status\":{\"completionTime\":\"$now\",\"succeeded\":1,\"conditions\":[{\"type\":\"SuccessCriteriaMet\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"},{\"type\":\"Complete\",\"status\":\"True\",\"lastTransitionTime\":\"$now\"}]}}" >/dev/null
}
for i in 1 2 3 4; do
  name=gitjob-app-$i
  kubectl -n fleet-local get job "$name" >/dev/null 2>&1 && continue
  kubectl -n fleet-local create job "$name" --image=busybox >/dev/null
  kubectl -n fleet-local label job "$name" gitjob.fleet.cattle.io/name=app >/dev/null
  [ "$i" = 4 ] || finish_job fleet-local "$name"
  sleep 1 # creationTimestamp has one-second resolution
done
for v in $(seq 1 13); do
  status=superseded; [ "$v" = 3 ] && status=deployed
  kubectl -n apps create secret generic "sh.helm.release.v1.web.v$v" --type=helm.sh/release.v1 \
    --from-literal=release=demo --dry-run=client -o yaml \
    | kubectl label --local -f - owner=helm name=web version="$v" status="$status" -o yaml \
    | kubectl apply -f - >/dev/null
done
for ex in fleet-gitjobs helm-history finished-jobs unused-secrets; do
  kubectl apply --server-side -f "examples/$ex/policy.yaml" >/dev/null
done

"$BIN" run --metrics-addr 127.0.0.1:0 --debounce 300ms 2>"$RETAINER_TESTBED_DIR/logs/retainer.log" &
CONTROLLER=$!
cleanup() {
  kill "$CONTROLLER" 2>/dev/null || true
  wait "$CONTROLLER" 2>/dev/null || true
  scripts/testbed.sh down
}
trap cleanup EXIT INT TERM

kubectl -n fleet-local wait --for=condition=Ready rp/gitjobs --timeout=60s >/dev/null
kubectl -n apps wait --for=condition=Ready rp/helm-history --timeout=60s >/dev/null
echo
echo "== kubectl get retainer -A"
kubectl get retainer -A
echo
echo "== retainer plan gitjobs -n fleet-local"
"$BIN" plan gitjobs -n fleet-local
echo
echo "== a sweep now (kubectl annotate ... retainer.dev/sweep-requested=...)"
kubectl -n fleet-local annotate rp gitjobs retainer.dev/sweep-requested="$(date +%s)" --overwrite >/dev/null
kubectl -n apps annotate rp helm-history retainer.dev/sweep-requested="$(date +%s)" --overwrite >/dev/null
sleep 3
kubectl get retainer -A
echo
kubectl -n fleet-local get jobs
echo
echo "The controller runs until Ctrl-C (log: $RETAINER_TESTBED_DIR/logs/retainer.log);"
echo "in another shell: eval \"\$(scripts/testbed.sh env)\" and use kubectl."
wait "$CONTROLLER"
