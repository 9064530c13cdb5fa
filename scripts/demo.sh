#!/usr/bin/env bash
# The demo: a real API server and registries on this machine, the CRDs and the example
# policies applied, and what each example policy decides over its sample objects.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
scripts/testbed.sh up
eval "$(scripts/testbed.sh env)"
cargo build --quiet --release
BIN=target/release/retainer
kubectl apply --server-side --force-conflicts -f crds/
kubectl wait --for=condition=Established crd/retentionpolicies.retainer.dev crd/clusterretentionpolicies.retainer.dev --timeout=60s
for ns in fleet-local apps team-a ci; do kubectl create namespace "$ns" --dry-run=client -o yaml | kubectl apply -f - >/dev/null; done
for ex in examples/*/; do
  kubectl apply --server-side -f "$ex/policy.yaml"
done
echo
kubectl get retainer -A
for ex in examples/*/; do
  echo
  echo "== $(basename "$ex"): retainer check -f $ex/policy.yaml --objects $ex/objects.yaml"
  "$BIN" check -f "$ex/policy.yaml" --objects "$ex/objects.yaml"
done
echo
echo "The test bed keeps running: 'eval \"\$(scripts/testbed.sh env)\"' to use kubectl against it, 'make testbed-down' to stop it."
