# Kyverno's cleanup controller (the one that runs DeletingPolicy) on a running test bed. Sourced
# by bench/kyverno-smoke.sh and bench/kyverno-sweep.sh; see docs/kyverno.md for why each flag,
# variable and object below is needed.
#
#   kyverno_build           scripts/testbed.sh build-kyverno (cached by version)
#   kyverno_start [FLAGS]   apply its CRDs, create its namespace, start it with its defaults plus
#                           the out-of-cluster flags and FLAGS, wait until it leads and serves
#   kyverno_stop            stop the process kyverno_start started (by its pid) and remove the
#                           webhook configurations it registered
#   kyverno_deleting_policy NAME NAMESPACE SCHEDULE CONDITION
#                           print a DeletingPolicy for Jobs in NAMESPACE whose CEL CONDITION holds
#   kyverno_create_finished_jobs NAMESPACE PREFIX N
#                           create N Jobs and mark them finished through the status subresource
#
# Needs KUBECONFIG and RETAINER_TESTBED_DIR of a bed that is up (`eval "$(scripts/testbed.sh env)"`).

KYVERNO_VERSION=${KYVERNO_VERSION:-v1.19.1}
KYVERNO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
KYVERNO_HOME=${RETAINER_CACHE:-$HOME/.cache/retainer-testbed}/kyverno-$KYVERNO_VERSION
KYVERNO_NS=kyverno
# Names as Kyverno's Helm chart gives them to the cleanup controller.
KYVERNO_NAME=kyverno-cleanup-controller
KYVERNO_CA_SECRET=$KYVERNO_NAME.$KYVERNO_NS.svc.kyverno-tls-ca
KYVERNO_TLS_SECRET=$KYVERNO_NAME.$KYVERNO_NS.svc.kyverno-tls-pair
# The CRDs it needs to start (a sanity check and its informers) and to run DeletingPolicy.
KYVERNO_CRDS=(
  kyverno/kyverno.io_cleanuppolicies.yaml
  kyverno/kyverno.io_clustercleanuppolicies.yaml
  kyverno/kyverno.io_globalcontextentries.yaml
  policies.kyverno.io/policies.kyverno.io_deletingpolicies.yaml
  policies.kyverno.io/policies.kyverno.io_namespaceddeletingpolicies.yaml
  policies.kyverno.io/policies.kyverno.io_policyexceptions.yaml
)

kyverno_log() { printf '[kyverno] %s\n' "$*" >&2; }

kyverno_build() {
  "$KYVERNO_ROOT/scripts/testbed.sh" build-kyverno
}

kyverno_state() {
  : "${RETAINER_TESTBED_DIR:?run eval \"\$(scripts/testbed.sh env)\" first}"
  echo "$RETAINER_TESTBED_DIR/kyverno"
}

kyverno_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

kyverno_apply_crds() {
  local f args=()
  for f in "${KYVERNO_CRDS[@]}"; do args+=(-f "$KYVERNO_HOME/crds/$f"); done
  # Server-side: the policy CRDs are too large for client-side apply's annotation.
  kubectl apply --server-side --force-conflicts "${args[@]}" >/dev/null
  kubectl wait --for condition=Established --timeout 60s \
    crd/cleanuppolicies.kyverno.io crd/clustercleanuppolicies.kyverno.io \
    crd/globalcontextentries.kyverno.io crd/deletingpolicies.policies.kyverno.io \
    crd/namespaceddeletingpolicies.policies.kyverno.io crd/policyexceptions.policies.kyverno.io >/dev/null
}

# kyverno_start [EXTRA FLAGS...]
kyverno_start() {
  local st
  st=$(kyverno_state)
  if [ -f "$st/pid" ] && kill -0 "$(cat "$st/pid")" 2>/dev/null; then
    kyverno_log "already running (pid $(cat "$st/pid"))"; return 0
  fi
  [ -x "$KYVERNO_HOME/bin/cleanup-controller" ] || kyverno_build
  mkdir -p "$st"
  kyverno_apply_crds
  kubectl create namespace "$KYVERNO_NS" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
  local port mport
  port=$(kyverno_free_port); mport=$(kyverno_free_port)
  echo "KYVERNO_SERVER_PORT=$port" >"$st/ports"
  echo "KYVERNO_METRICS_PORT=$mport" >>"$st/ports"
  # Out of a cluster: the Downward-API variables the chart sets, the two certificate Secrets by
  # name (it creates and renews them itself), the webhook server on loopback with --serverIP
  # so the webhook configurations it registers use a URL the API server can reach, metrics
  # on a free loopback port. Everything else is left at the binary's defaults.
  KYVERNO_NAMESPACE=$KYVERNO_NS \
  KYVERNO_SERVICEACCOUNT_NAME=$KYVERNO_NAME \
  KYVERNO_DEPLOYMENT=$KYVERNO_NAME \
  KYVERNO_POD_NAME=$KYVERNO_NAME-testbed \
  KYVERNO_SVC=$KYVERNO_NAME \
  INIT_CONFIG=kyverno \
  METRICS_CONFIG=kyverno-metrics \
  setsid "$KYVERNO_HOME/bin/cleanup-controller" \
    --kubeconfig "$KUBECONFIG" \
    --caSecretName "$KYVERNO_CA_SECRET" --tlsSecretName "$KYVERNO_TLS_SECRET" \
    --serverIP 127.0.0.1 --servicePort "$port" \
    --cleanupServerHost 127.0.0.1 --cleanupServerPort "$port" \
    --metricsHost 127.0.0.1 --metricsPort "$mport" \
    --disableLogColor \
    "$@" </dev/null >"$st/cleanup-controller.log" 2>&1 &
  echo $! >"$st/pid"
  kyverno_log "cleanup-controller $KYVERNO_VERSION started (pid $!, log $st/cleanup-controller.log)"
  kyverno_wait_ready 180
}

# Ready: it holds its Lease (only the leader runs the deleting controller) and its webhook
# server answers with the certificate its certificate controller wrote.
kyverno_wait_ready() { # seconds
  local st deadline holder
  st=$(kyverno_state)
  deadline=$((SECONDS + ${1:-180}))
  # shellcheck disable=SC1091
  . "$st/ports"
  while :; do
    if ! kill -0 "$(cat "$st/pid")" 2>/dev/null; then
      kyverno_log "cleanup-controller exited; last log lines:"; tail -n 30 "$st/cleanup-controller.log" >&2
      return 1
    fi
    holder=$(kubectl -n "$KYVERNO_NS" get lease kyverno-cleanup-controller \
      -o jsonpath='{.spec.holderIdentity}' 2>/dev/null || true)
    if [ "$holder" = "$KYVERNO_NAME-testbed" ] \
      && curl -skf "https://127.0.0.1:$KYVERNO_SERVER_PORT/health/readiness" >/dev/null 2>&1; then
      # The leader's informers sync after it takes the Lease; the log says when its controllers run.
      if grep -q 'deleting-controller' "$st/cleanup-controller.log"; then
        kyverno_log "ready (leader, webhook server on 127.0.0.1:$KYVERNO_SERVER_PORT)"
        return 0
      fi
    fi
    if [ $SECONDS -ge "$deadline" ]; then
      kyverno_log "not ready after ${1:-180}s; last log lines:"; tail -n 30 "$st/cleanup-controller.log" >&2
      return 1
    fi
    sleep 1
  done
}

kyverno_stop() {
  local st pid
  st=$(kyverno_state)
  [ -f "$st/pid" ] || return 0
  pid=$(cat "$st/pid")
  if kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$st/pid"
  # Its webhook configurations would point at a server that is gone.
  kubectl delete validatingwebhookconfiguration kyverno-cleanup-validating-webhook-cfg \
    kyverno-ttl-validating-webhook-cfg --ignore-not-found >/dev/null 2>&1 || true
  kyverno_log "stopped (pid $pid)"
}

# kyverno_deleting_policy NAME NAMESPACE SCHEDULE CONDITION: a cluster DeletingPolicy that
# matches batch/v1 Jobs in NAMESPACE and deletes those for which CONDITION (CEL) is true.
kyverno_deleting_policy() {
  cat <<EOF
apiVersion: policies.kyverno.io/v1beta1
kind: DeletingPolicy
metadata:
  name: $1
spec:
  schedule: "$3"
  matchConstraints:
    namespaceSelector:
      matchLabels:
        kubernetes.io/metadata.name: $2
    resourceRules:
    - apiGroups: [batch]
      apiVersions: [v1]
      resources: [jobs]
      operations: ["*"]
  conditions:
  - name: selected
    expression: >-
      $4
EOF
}

# kyverno_create_finished_jobs NAMESPACE PREFIX N: N Jobs, each then marked finished
# as the job controller would (startTime; then completionTime with SuccessCriteriaMet and
# Complete), through the status subresource, with the admin client certificate, 16 at a time.
kyverno_create_finished_jobs() {
  python3 - "$1" "$2" "$3" "$RETAINER_TESTBED_DIR" <<'PY'
import concurrent.futures, datetime, http.client, json, ssl, sys, threading
ns, prefix, n, bed = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
port = [l.split("=")[1].strip() for l in open(f"{bed}/ports") if l.startswith("API_PORT=")][0]
ctx = ssl.create_default_context(cafile=f"{bed}/pki/ca.crt")
ctx.load_cert_chain(f"{bed}/pki/admin.crt", f"{bed}/pki/admin.key")
local = threading.local()

def req(method, path, body, ctype="application/json"):
    if not hasattr(local, "c"):
        local.c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
    for attempt in range(5):
        try:
            local.c.request(method, path, json.dumps(body), {"Content-Type": ctype})
            r = local.c.getresponse(); data = r.read()
            if r.status >= 300:
                raise RuntimeError(f"{method} {path}: {r.status} {data[:300]!r}")
            return
        except (http.client.HTTPException, OSError):
            local.c = http.client.HTTPSConnection("127.0.0.1", int(port), context=ctx)
            if attempt == 4:
                raise

def one(i):
    name = f"{prefix}-{i:05d}"
    req("POST", f"/apis/batch/v1/namespaces/{ns}/jobs", {
        "apiVersion": "batch/v1", "kind": "Job",
        "metadata": {"name": name, "labels": {"bench": prefix}},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
                 "containers": [{"name": "c", "image": "busybox"}]}}}})
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    st = f"/apis/batch/v1/namespaces/{ns}/jobs/{name}/status"
    mp = "application/merge-patch+json"
    req("PATCH", st, {"status": {"startTime": now}}, mp)
    req("PATCH", st, {"status": {"completionTime": now, "succeeded": 1, "conditions": [
        {"type": "SuccessCriteriaMet", "status": "True", "lastTransitionTime": now},
        {"type": "Complete", "status": "True", "lastTransitionTime": now}]}}, mp)

with concurrent.futures.ThreadPoolExecutor(16) as ex:
    list(ex.map(one, range(n)))
PY
}
