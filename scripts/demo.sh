#!/usr/bin/env bash
# The demo: a real API server and registries on this machine, the CRDs, a sample workload
# (Fleet-style Jobs, Helm release Secrets, images in an OCI registry and a Pod that uses one),
# the container image built and pushed, the example policies, and the controller running until
# Ctrl-C, after which everything is stopped.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
retainer_prereqs demo || exit 1
scripts/testbed.sh up
eval "$(scripts/testbed.sh env)"
cargo build --quiet --release
BIN=$ROOT/target/release/retainer
REG=$RETAINER_OLAREG

echo "== the container image, built without a container engine and pushed to $REG"
IMAGE=$(scripts/image.sh "$REG/retainer/retainer")
echo "$IMAGE"
echo "(in a cluster that can pull it: helm install retainer charts/retainer --set image.repository=$REG/retainer/retainer)"

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
echo "== images: team/app 1.0.0 to 1.7.0 in $REG; a Pod in ci runs 1.1.0"
LAYERS=$(mktemp -d)
for i in 0 1 2 3 4 5 6 7; do
  mkdir -p "$LAYERS/$i" && echo "app 1.$i.0" >"$LAYERS/$i/version"
  tar -C "$LAYERS/$i" -cf "$LAYERS/$i.tar" version
  crane append --insecure -f "$LAYERS/$i.tar" -t "$REG/team/app:1.$i.0" >/dev/null 2>&1 \
    || { echo "pushing team/app:1.$i.0 to $REG failed" >&2; exit 1; }
done
rm -rf "$LAYERS"
kubectl -n ci apply -f - >/dev/null <<YAML
apiVersion: v1
kind: Pod
metadata: {name: app}
spec:
  containers: [{name: app, image: "$REG/team/app:1.1.0"}]
YAML
for ex in fleet-gitjobs helm-history finished-jobs unused-secrets; do
  kubectl apply --server-side -f "examples/$ex/policy.yaml" >/dev/null
done
# The registry example as it is, but pointed at the local registry, which needs no credentials
# and has no catalog, and without the grace period so that the first sweep deletes.
sed -e "s#url: http://127.0.0.1:5000#url: http://$REG#" \
    -e 's#repositories: \["team/\*"\]#repositories: [team/app]#' \
    -e '/credentialsSecretRef/d' -e '/gracePeriod/d' examples/registry-images/policy.yaml \
  | kubectl apply --server-side -f - >/dev/null

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
kubectl -n ci wait --for=condition=Ready rp/registry-images --timeout=60s >/dev/null
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
kubectl -n ci annotate rp registry-images retainer.dev/sweep-requested="$(date +%s)" --overwrite >/dev/null
for p in fleet-local/gitjobs apps/helm-history ci/registry-images; do
  kubectl -n "${p%/*}" wait --for=jsonpath='{.status.lastSweep.completionTime}' "rp/${p#*/}" --timeout=60s >/dev/null 2>&1 \
    || kubectl -n "${p%/*}" wait --for=condition=Swept "rp/${p#*/}" --timeout=30s >/dev/null 2>&1 || true
done
kubectl get retainer -A
echo
echo "== the first sweep of ci/registry-images (status.lastSweep)"
kubectl -n ci get rp registry-images -o jsonpath='{.status.lastSweep}' | python3 -m json.tool
echo
echo "== what is left"
kubectl -n fleet-local get jobs
echo "team/app tags: $(crane ls --insecure "$REG/team/app" | sort -V | tr '\n' ' ')"
echo
echo "The controller runs until Ctrl-C (log: $RETAINER_TESTBED_DIR/logs/retainer.log);"
echo "in another shell: eval \"\$(scripts/testbed.sh env)\" and use kubectl."
wait "$CONTROLLER"
