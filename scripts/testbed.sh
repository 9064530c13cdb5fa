#!/usr/bin/env bash
# A real, local test bed: etcd, kube-apiserver, kube-controller-manager (TTL-after-finished and
# garbage collector only), and OCI registries: olareg (the OCI 1.1 referrers API); Debian's
# docker-registry (CNCF distribution 2.8), anonymous and with basic auth; CNCF distribution v3
# with token auth, beside the project's own token issuer (tools/token-issuer); and distribution
# v3 over TLS with a certificate from a throw-away private CA. Everything listens on 127.0.0.1 on
# ports picked free at `up`, so two test beds (two state directories) never collide.
#
#   scripts/testbed.sh build   build or reuse the cached binaries
#   scripts/testbed.sh build-kstatus
#                              only (re)build tools/kstatus, a step of `build`
#   scripts/testbed.sh build-cel-oracle
#                              only (re)build tools/k8s-cel-library, a step of `build`, and
#                              print the binary's path (tests/cel_differential.rs runs it)
#   scripts/testbed.sh build-kyverno
#                              build or reuse Kyverno's cleanup controller (benchmarks only)
#   scripts/testbed.sh up      build if needed, start everything, wait until it answers
#   RETAINER_TESTBED_FSYNC=1 scripts/testbed.sh up
#                              the same, but etcd syncs every commit to disk (no
#                              --unsafe-no-fsync) and the API server runs API priority and
#                              fairness, as a real cluster does; the benchmarks' fsync mode
#   scripts/testbed.sh down    stop everything this state directory started
#   scripts/testbed.sh env     print the shell exports tests and tools use
#   scripts/testbed.sh status  say what runs
#   scripts/testbed.sh kcm [FLAGS...]
#                              restart kube-controller-manager with these extra flags (none: as
#                              `up` starts it); the benchmarks use it for --kube-api-qps
#   scripts/testbed.sh kill COMPONENT [SIGNAL]
#                              stop one component (default SIGKILL), e.g. kube-apiserver, etcd
#   scripts/testbed.sh start COMPONENT
#                              start it again with the same flags, wait until it and the API
#                              server answer (kill, start and restart are for fault tests)
#   scripts/testbed.sh restart COMPONENT [SIGNAL]
#                              kill, then start
#
# Binaries are cached by version under $RETAINER_CACHE (default ~/.cache/retainer-testbed);
# state (certificates, data, logs, pids) lives in $RETAINER_TESTBED_DIR (default ./.testbed).
#
# Mode: by default etcd runs with --unsafe-no-fsync and the API server without API priority and
# fairness, so that tests do not wait on the disk or on request queues ("fast"). With
# RETAINER_TESTBED_FSYNC=1, `up` starts the bed as a real cluster runs ("fsync"); the mode is
# recorded in the state directory (TESTBED_MODE in ports) and exported by `env` as
# RETAINER_TESTBED_MODE, so a benchmark states which bed it measured.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.36.3}
ETCD_VERSION=${ETCD_VERSION:-v3.6.16}
# zot's module host is not reachable through the Go module proxy available here, so the
# referrers-API registry is olareg (also a `go install`able OCI 1.1 registry with referrers).
OLAREG_VERSION=${OLAREG_VERSION:-v0.1.2}
CRANE_VERSION=${CRANE_VERSION:-v0.22.1}
HELM_VERSION=${HELM_VERSION:-v3.22.0}
# tools/kstatus (kstatus of an object, as GitOps tools compute it) pins this in its go.mod.
CLI_UTILS_VERSION=v0.37.2
DISTRIBUTION_DEB=${DISTRIBUTION_DEB:-docker-registry}
DISTRIBUTION_V3_VERSION=${DISTRIBUTION_V3_VERSION:-v3.1.2}
# The throw-away account of the test bed's authenticated registries.
REGISTRY_USER=retainer
REGISTRY_PASSWORD=testbed-only-password
# The token registry's `service` and the issuer's name, which its tokens must carry.
TOKEN_SERVICE=retainer-testbed-registry
TOKEN_ISSUER=retainer-testbed-issuer

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${RETAINER_CACHE:-$HOME/.cache/retainer-testbed}
STATE=${RETAINER_TESTBED_DIR:-$ROOT/.testbed}
K8S_BIN=$CACHE/kubernetes-$K8S_VERSION/bin
ETCD_BIN=$CACHE/etcd-$ETCD_VERSION/bin
TOOLS_BIN=$CACHE/tools/bin

export GOWORK=off GOFLAGS=-mod=mod CGO_ENABLED=0

log() { printf '[testbed] %s\n' "$*" >&2; }
die() { printf '[testbed] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------------
# build

build_kubernetes() {
  local want=(kube-apiserver kube-controller-manager kubectl) missing=0 b
  for b in "${want[@]}"; do [ -x "$K8S_BIN/$b" ] || missing=1; done
  [ $missing = 0 ] && return 0
  log "building Kubernetes $K8S_VERSION from its Go modules (first time: 15-30 minutes on 2 cores)"
  local src=$CACHE/src/kubernetes-$K8S_VERSION
  rm -rf "$src" && mkdir -p "$src" "$K8S_BIN"
  (
    cd "$src"
    go mod init retainer.dev/testbed/kubernetes >/dev/null 2>&1
    # k8s.io/kubernetes requires its staging modules at v0.0.0 and replaces them with
    # ./staging paths that do not exist outside its repository. Read the list from its own go.mod
    # (it changes between minors) and point each one at the published v0.<minor>.<patch>.
    local gomod
    gomod=$(go mod download -json "k8s.io/kubernetes@$K8S_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    [ -f "$gomod" ] || die "could not download k8s.io/kubernetes@$K8S_VERSION"
    local staging_version="v0.${K8S_VERSION#v1.}"
    local mods
    mods=$(awk '/=> \.\/staging\/src\// {print $1}' "$gomod" | sort -u)
    [ -n "$mods" ] || die "no staging replace lines found in $gomod"
    {
      echo
      echo "replace ("
      for m in $mods; do echo "	$m => $m $staging_version"; done
      echo ")"
    } >>go.mod
    log "replaced $(echo "$mods" | wc -w) staging modules with $staging_version"
    go get "k8s.io/kubernetes@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-apiserver@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kube-controller-manager@$K8S_VERSION" \
      "k8s.io/kubernetes/cmd/kubectl@$K8S_VERSION"
    local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
    local ld="" pkg
    for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
      ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
      ld+=" -X $pkg.gitCommit=module-build -X $pkg.gitTreeState=clean"
      ld+=" -X $pkg.buildDate=1970-01-01T00:00:00Z"
    done
    for b in "${want[@]}"; do
      log "go build $b"
      go build -trimpath -ldflags "-s -w $ld" -o "$K8S_BIN/$b.tmp" "k8s.io/kubernetes/cmd/$b"
      mv "$K8S_BIN/$b.tmp" "$K8S_BIN/$b"
    done
  )
}

build_etcd() {
  [ -x "$ETCD_BIN/etcd" ] && return 0
  log "building etcd $ETCD_VERSION from go.etcd.io/etcd/server/v3"
  local src=$CACHE/src/etcd-$ETCD_VERSION
  rm -rf "$src" && mkdir -p "$src" "$ETCD_BIN"
  (
    cd "$src"
    go mod init retainer.dev/testbed/etcd >/dev/null 2>&1
    go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
    go build -trimpath -ldflags "-s -w" -o "$ETCD_BIN/etcd.tmp" go.etcd.io/etcd/server/v3
    mv "$ETCD_BIN/etcd.tmp" "$ETCD_BIN/etcd"
  )
}

go_install_tool() { # name module@version
  local name=$1 spec=$2 stamp=$TOOLS_BIN/.$1.version
  if [ -x "$TOOLS_BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$spec" ]; then return 0; fi
  log "go install $spec"
  mkdir -p "$TOOLS_BIN"
  GOBIN=$TOOLS_BIN go install -trimpath -ldflags "-s -w" "$spec"
  echo "$spec" >"$stamp"
}

# `go install pkg@version` also reads the module's version list to check for deprecations; the
# proxy here refuses that list for some modules (olareg). Building from the downloaded module
# directory with its own go.sum needs only the version itself.
go_build_module_tool() { # name module version package-dir
  local name=$1 mod=$2 ver=$3 pkg=$4 stamp=$TOOLS_BIN/.$1.version
  if [ -x "$TOOLS_BIN/$name" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$mod@$ver" ]; then return 0; fi
  log "building $mod@$ver"
  mkdir -p "$TOOLS_BIN"
  local dir
  dir=$(go mod download -json "$mod@$ver" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$dir" ] || die "could not download $mod@$ver"
  (cd "$dir" && GOFLAGS=-mod=readonly go build -trimpath -ldflags "-s -w" -o "$TOOLS_BIN/$name" "$pkg")
  echo "$mod@$ver" >"$stamp"
}

# tools/kstatus is this repository's own program; it is rebuilt when its sources change.
build_kstatus() {
  local dir=$ROOT/tools/kstatus stamp=$TOOLS_BIN/.kstatus.version key
  key="sigs.k8s.io/cli-utils@$CLI_UTILS_VERSION $(cat "$dir/go.mod" "$dir/go.sum" "$dir"/*.go | sha256sum | cut -c1-16)"
  if [ -x "$TOOLS_BIN/kstatus" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then return 0; fi
  log "building tools/kstatus (sigs.k8s.io/cli-utils $CLI_UTILS_VERSION)"
  mkdir -p "$TOOLS_BIN"
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$TOOLS_BIN/kstatus" .)
  echo "$key" >"$stamp"
}

build_distribution() {
  local stamp=$TOOLS_BIN/.docker-registry.version
  [ -x "$TOOLS_BIN/docker-registry" ] && [ -f "$stamp" ] && return 0
  log "extracting Debian's $DISTRIBUTION_DEB (no service is started)"
  local tmp
  tmp=$(mktemp -d)
  (
    cd "$tmp"
    if ! apt-get download "$DISTRIBUTION_DEB" >/dev/null 2>&1; then
      apt-get update -qq >/dev/null 2>&1 || true
      apt-get download "$DISTRIBUTION_DEB" >/dev/null || die "apt-get download $DISTRIBUTION_DEB failed"
    fi
    dpkg-deb -x ./*.deb root
    mkdir -p "$TOOLS_BIN"
    cp root/usr/bin/docker-registry "$TOOLS_BIN/docker-registry"
    dpkg-deb -f ./*.deb Version >"$stamp"
  )
  rm -rf "$tmp"
}

# The token issuer is the project's own source: cached by a hash of it, so an edit rebuilds it.
build_token_issuer() {
  local src=$ROOT/tools/token-issuer stamp=$TOOLS_BIN/.token-issuer.version hash
  hash=$(cat "$src/go.mod" "$src/main.go" | sha256sum | cut -c1-16)
  if [ -x "$TOOLS_BIN/token-issuer" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$hash" ]; then return 0; fi
  log "building tools/token-issuer"
  mkdir -p "$TOOLS_BIN"
  (cd "$src" && go build -trimpath -ldflags "-s -w" -o "$TOOLS_BIN/token-issuer" .)
  echo "$hash" >"$stamp"
}

# tools/k8s-cel-library is this repository's own program (kube-apiserver's CEL environment, the
# oracle of tests/cel_differential.rs): rebuilt when its sources or module pins change. Its
# module cache is the existing tool's (k8s.io/apiserver and cel-go, no Kubernetes binaries).
build_cel_oracle() {
  local dir=$ROOT/tools/k8s-cel-library stamp=$TOOLS_BIN/.k8s-cel-library.version key
  key="$(go env GOVERSION) $(cat "$dir/go.mod" "$dir/go.sum" "$dir"/*.go | sha256sum | cut -c1-16)"
  if [ -x "$TOOLS_BIN/k8s-cel-library" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$key" ]; then return 0; fi
  log "building tools/k8s-cel-library (k8s.io/apiserver's CEL environment)"
  mkdir -p "$TOOLS_BIN"
  # Built aside and renamed: a test may run the cached binary while another checkout rebuilds.
  (cd "$dir" && go build -trimpath -ldflags "-s -w" -o "$TOOLS_BIN/k8s-cel-library.$$" .)
  mv "$TOOLS_BIN/k8s-cel-library.$$" "$TOOLS_BIN/k8s-cel-library"
  echo "$key" >"$stamp"
}

cmd_build() {
  # shellcheck source=scripts/prereqs.sh
  . "$ROOT/scripts/prereqs.sh"
  retainer_prereqs testbed || exit 1
  build_etcd
  go_build_module_tool olareg github.com/olareg/olareg "$OLAREG_VERSION" ./cmd/olareg
  go_install_tool crane "github.com/google/go-containerregistry/cmd/crane@$CRANE_VERSION"
  go_install_tool helm "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  build_kstatus
  build_cel_oracle
  build_distribution
  go_build_module_tool distribution-v3 github.com/distribution/distribution/v3 "$DISTRIBUTION_V3_VERSION" ./cmd/registry
  build_token_issuer
  build_kubernetes
  log "binaries ready under $CACHE"
}

# ---------------------------------------------------------------------------------------------
# up / down

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

start() { # name cmd...
  local name=$1; shift
  "$@" >"$STATE/logs/$name.log" 2>&1 &
  echo $! >"$STATE/pids/$name"
  mkdir -p "$STATE/cmds" && printf '%q ' "$@" >"$STATE/cmds/$name"
}

wait_for() { # what seconds cmd...
  local what=$1 secs=$2; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$(cat "$STATE/pids/$what")" 2>/dev/null; then
      log "$what exited; last log lines:"
      tail -n 30 "$STATE/logs/$what.log" >&2 || true
      return 1
    fi
    if [ $SECONDS -ge $deadline ]; then
      log "$what did not come up within ${secs}s; last log lines:"
      tail -n 30 "$STATE/logs/$what.log" >&2 || true
      return 1
    fi
    sleep 0.3
  done
}

make_certs() {
  local d=$STATE/pki
  mkdir -p "$d"
  (
    cd "$d"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.crt -days 30 \
      -subj "/CN=retainer-testbed-ca" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout serving.key -out serving.csr \
      -subj "/CN=kube-apiserver" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost,IP:10.0.0.1,DNS:kubernetes.default.svc\nextendedKeyUsage=serverAuth\n' >serving.ext
    openssl x509 -req -in serving.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out serving.crt \
      -days 30 -extfile serving.ext >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout admin.key -out admin.csr \
      -subj "/O=system:masters/CN=retainer-admin" >/dev/null 2>&1
    printf 'extendedKeyUsage=clientAuth\n' >client.ext
    openssl x509 -req -in admin.csr -CA ca.crt -CAkey ca.key -CAcreateserial -out admin.crt \
      -days 30 -extfile client.ext >/dev/null 2>&1
    openssl genrsa -out sa.key 2048 >/dev/null 2>&1
    openssl rsa -in sa.key -pubout -out sa.pub >/dev/null 2>&1
    # The token issuer's signing key; its self-signed certificate is the token registry's
    # rootcertbundle.
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
      -keyout token-signer.key -out token-signer.crt -days 30 -subj "/CN=$TOKEN_ISSUER" >/dev/null 2>&1
    # A private CA, unrelated to the cluster's, for the TLS registry: tests hand it to policies
    # through caBundleRef.
    openssl req -x509 -newkey rsa:2048 -nodes -keyout registry-ca.key -out registry-ca.crt -days 30 \
      -subj "/CN=retainer-testbed-registry-ca" >/dev/null 2>&1
    openssl req -newkey rsa:2048 -nodes -keyout registry-tls.key -out registry-tls.csr \
      -subj "/CN=127.0.0.1" >/dev/null 2>&1
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n' >registry-tls.ext
    openssl x509 -req -in registry-tls.csr -CA registry-ca.crt -CAkey registry-ca.key -CAcreateserial \
      -out registry-tls.crt -days 30 -extfile registry-tls.ext >/dev/null 2>&1
  )
}

# Accounts and grants of the token issuer (format: tools/token-issuer/main.go). `retainer` may do
# everything; `reader` only pull; `partial` may not delete in repositories named */locked*;
# `brief`'s tokens are refused 3 s after they are issued, for renewal tests.
write_token_grants() { # file
  cat >"$1" <<EOF
account $REGISTRY_USER $REGISTRY_PASSWORD 300s
account reader $REGISTRY_PASSWORD 300s
account partial $REGISTRY_PASSWORD 300s
account brief $REGISTRY_PASSWORD 3s
grant $REGISTRY_USER repository * pull,push,delete
grant $REGISTRY_USER registry catalog *
grant reader repository * pull
grant reader registry catalog *
grant partial repository */locked* pull,push
grant partial repository * pull,push,delete
grant partial registry catalog *
grant brief repository * pull,push,delete
grant brief registry catalog *
EOF
}

# Distribution v3: `token ISSUER_PORT` puts it behind the token issuer; `tls` serves HTTPS with
# the private CA's certificate.
write_registry_v3_config() { # port dir file token|tls [issuer-port]
  local extra="" tls=""
  case "$4" in
    token) extra="auth:
  token:
    realm: http://127.0.0.1:$5/token
    service: $TOKEN_SERVICE
    issuer: $TOKEN_ISSUER
    rootcertbundle: $STATE/pki/token-signer.crt" ;;
    tls) tls="  tls:
    certificate: $STATE/pki/registry-tls.crt
    key: $STATE/pki/registry-tls.key" ;;
  esac
  cat >"$3" <<EOF
version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $2
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$1
  secret: retainer-testbed-upload-secret
$tls
$extra
EOF
}

write_kubeconfig() { # port
  local d=$STATE/pki
  cat >"$STATE/kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: testbed
  cluster:
    server: https://127.0.0.1:$1
    certificate-authority-data: $(base64 -w0 <"$d/ca.crt")
users:
- name: admin
  user:
    client-certificate-data: $(base64 -w0 <"$d/admin.crt")
    client-key-data: $(base64 -w0 <"$d/admin.key")
contexts:
- name: testbed
  context: {cluster: testbed, user: admin}
current-context: testbed
EOF
}

write_registry_config() { # port dir file [htpasswd]
  local auth=""
  if [ -n "${4:-}" ]; then
    auth="auth:
  htpasswd:
    realm: retainer-testbed
    path: $4"
  fi
  cat >"$3" <<EOF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $2
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: 127.0.0.1:$1
$auth
EOF
}

start_kcm() { # port [extra flags...]
  local port=$1; shift
  start kube-controller-manager "$K8S_BIN/kube-controller-manager" \
    --kubeconfig "$STATE/kubeconfig" --authentication-kubeconfig "$STATE/kubeconfig" \
    --authorization-kubeconfig "$STATE/kubeconfig" --leader-elect=false \
    --bind-address 127.0.0.1 --secure-port "$port" \
    --controllers ttl-after-finished-controller,garbage-collector-controller "$@"
  wait_for kube-controller-manager 60 curl -skf "https://127.0.0.1:$port/healthz"
}

# Benchmarks compare retainer with the TTL controller at several client rate limits
# (--kube-api-qps, --kube-api-burst); two TTL controllers at once would race for the same Jobs,
# so the bed's own one is restarted with the flags instead.
cmd_kcm() { # [extra flags...]
  [ -f "$STATE/ports" ] || die "not up: run scripts/testbed.sh up"
  # shellcheck disable=SC1091
  . "$STATE/ports"
  local f=$STATE/pids/kube-controller-manager pid
  if [ -f "$f" ]; then
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  fi
  start_kcm "$KCM_PORT" "$@"
  log "kube-controller-manager restarted${*:+ with $*}"
}

cmd_up() {
  local mode=fast
  [ "${RETAINER_TESTBED_FSYNC:-}" = 1 ] && mode=fsync
  if [ -f "$STATE/ports" ] && cmd_status >/dev/null 2>&1; then
    if grep -q '^DISTRIBUTION_TLS_PORT=' "$STATE/ports"; then
      local running_mode
      running_mode=$(sed -n 's/^TESTBED_MODE=//p' "$STATE/ports")
      running_mode=${running_mode:-fast}
      # Restarting would pull the bed from under whoever uses it; a bed in the other mode needs
      # its own state directory.
      [ "$running_mode" = "$mode" ] \
        || die "already up in $running_mode mode ($STATE); asked for $mode: use another RETAINER_TESTBED_DIR or run down first"
      log "already up ($STATE, $mode mode)"; return 0
    fi
    log "the running test bed predates the token and TLS registries: restarting it"
  fi
  cmd_down >/dev/null 2>&1 || true
  cmd_build
  rm -rf "$STATE" && mkdir -p "$STATE/logs" "$STATE/pids" "$STATE/etcd" "$STATE/olareg" "$STATE/distribution" "$STATE/distribution-auth" \
    "$STATE/distribution-token" "$STATE/distribution-tls"
  trap 'log "start-up failed; stopping what started"; cmd_down; exit 1' ERR
  make_certs
  local etcd_port etcd_peer api_port kcm_port olareg_port dist_port auth_port issuer_port token_port tls_port
  etcd_port=$(free_port); etcd_peer=$(free_port); api_port=$(free_port); kcm_port=$(free_port)
  olareg_port=$(free_port); dist_port=$(free_port); auth_port=$(free_port)
  issuer_port=$(free_port); token_port=$(free_port); tls_port=$(free_port)
  cat >"$STATE/ports" <<EOF
ETCD_PORT=$etcd_port
API_PORT=$api_port
KCM_PORT=$kcm_port
OLAREG_PORT=$olareg_port
DISTRIBUTION_PORT=$dist_port
DISTRIBUTION_AUTH_PORT=$auth_port
TOKEN_ISSUER_PORT=$issuer_port
DISTRIBUTION_TOKEN_PORT=$token_port
DISTRIBUTION_TLS_PORT=$tls_port
TESTBED_MODE=$mode
EOF
  # fast: no fsync, no request queues (tests); fsync: both as a real cluster runs them.
  local etcd_mode=(--unsafe-no-fsync) apf=false
  if [ "$mode" = fsync ]; then etcd_mode=(); apf=true; fi

  start etcd "$ETCD_BIN/etcd" --name testbed --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
    --listen-peer-urls "http://127.0.0.1:$etcd_peer" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer" \
    --initial-cluster "testbed=http://127.0.0.1:$etcd_peer" ${etcd_mode[@]+"${etcd_mode[@]}"} \
    --quota-backend-bytes 8589934592 --log-level warn
  wait_for etcd 30 curl -sf "http://127.0.0.1:$etcd_port/health"

  local pki=$STATE/pki
  start kube-apiserver "$K8S_BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$etcd_port" --bind-address 127.0.0.1 --secure-port "$api_port" \
    --cert-dir "$STATE/apiserver-certs" \
    --tls-cert-file "$pki/serving.crt" --tls-private-key-file "$pki/serving.key" \
    --client-ca-file "$pki/ca.crt" \
    --service-account-issuer https://localhost --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" --api-audiences https://localhost \
    --service-cluster-ip-range 10.0.0.0/24 --authorization-mode RBAC --allow-privileged=true \
    --disable-admission-plugins ServiceAccount --enable-priority-and-fairness="$apf"
  write_kubeconfig "$api_port"
  wait_for kube-apiserver 120 "$K8S_BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get --raw /readyz

  if [ "${TESTBED_NO_KCM:-}" != 1 ]; then
    start_kcm "$kcm_port"
  fi

  start olareg "$TOOLS_BIN/olareg" serve --addr 127.0.0.1 --dir "$STATE/olareg" --port "$olareg_port" \
    --api-delete --gc-frequency 1000h
  wait_for olareg 30 curl -sf "http://127.0.0.1:$olareg_port/v2/"

  write_registry_config "$dist_port" "$STATE/distribution" "$STATE/docker-registry.yml"
  start docker-registry "$TOOLS_BIN/docker-registry" serve "$STATE/docker-registry.yml"
  wait_for docker-registry 30 curl -sf "http://127.0.0.1:$dist_port/v2/"

  # A second distribution with basic auth (htpasswd, bcrypt), for credential tests.
  htpasswd -Bbn "$REGISTRY_USER" "$REGISTRY_PASSWORD" >"$STATE/htpasswd"
  write_registry_config "$auth_port" "$STATE/distribution-auth" "$STATE/docker-registry-auth.yml" "$STATE/htpasswd"
  start docker-registry-auth "$TOOLS_BIN/docker-registry" serve "$STATE/docker-registry-auth.yml"
  wait_for docker-registry-auth 30 sh -c "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$auth_port/v2/ | grep -q 401"

  # Distribution v3 behind the token issuer, for the bearer-token flow and token scopes.
  write_token_grants "$STATE/token-grants"
  start token-issuer "$TOOLS_BIN/token-issuer" --addr "127.0.0.1:$issuer_port" \
    --grants "$STATE/token-grants" --key "$STATE/pki/token-signer.key" \
    --cert "$STATE/pki/token-signer.crt" --issuer "$TOKEN_ISSUER" --service "$TOKEN_SERVICE"
  wait_for token-issuer 30 curl -sf "http://127.0.0.1:$issuer_port/healthz"
  write_registry_v3_config "$token_port" "$STATE/distribution-token" "$STATE/distribution-token.yml" token "$issuer_port"
  start distribution-token "$TOOLS_BIN/distribution-v3" serve "$STATE/distribution-token.yml"
  wait_for distribution-token 30 sh -c "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:$token_port/v2/ | grep -q 401"

  # Distribution v3 over TLS, its certificate from the private CA.
  write_registry_v3_config "$tls_port" "$STATE/distribution-tls" "$STATE/distribution-tls.yml" tls
  start distribution-tls "$TOOLS_BIN/distribution-v3" serve "$STATE/distribution-tls.yml"
  wait_for distribution-tls 30 curl -sf --cacert "$STATE/pki/registry-ca.crt" "https://127.0.0.1:$tls_port/v2/"
  trap - ERR
  log "up: $STATE ($mode mode)"
}

cmd_down() {
  [ -d "$STATE/pids" ] || return 0
  local f pid
  for f in "$STATE"/pids/*; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    kill "$pid" 2>/dev/null || true
  done
  for f in "$STATE"/pids/*; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    rm -f "$f"
  done
  log "down"
}

cmd_env() {
  [ -f "$STATE/ports" ] || die "not up: run scripts/testbed.sh up"
  # shellcheck disable=SC1091
  . "$STATE/ports"
  cat <<EOF
export KUBECONFIG=$STATE/kubeconfig
export RETAINER_E2E=1
export RETAINER_TESTBED_DIR=$STATE
export RETAINER_OLAREG=127.0.0.1:$OLAREG_PORT
export RETAINER_DISTRIBUTION=127.0.0.1:$DISTRIBUTION_PORT
export RETAINER_DISTRIBUTION_AUTH=127.0.0.1:$DISTRIBUTION_AUTH_PORT
export RETAINER_REGISTRY_USER=$REGISTRY_USER
export RETAINER_REGISTRY_PASSWORD=$REGISTRY_PASSWORD
export RETAINER_TESTBED_MODE=${TESTBED_MODE:-fast}
export PATH=$K8S_BIN:$TOOLS_BIN:\$PATH
EOF
  # A bed an older script started has no token or TLS registry: tests that need them then say
  # which variable is missing rather than dial an empty port.
  if [ -n "${DISTRIBUTION_TLS_PORT:-}" ]; then
    cat <<EOF
export RETAINER_DISTRIBUTION_TOKEN=127.0.0.1:$DISTRIBUTION_TOKEN_PORT
export RETAINER_TOKEN_ISSUER=http://127.0.0.1:$TOKEN_ISSUER_PORT
export RETAINER_TOKEN_GRANTS=$STATE/token-grants
export RETAINER_DISTRIBUTION_TLS=127.0.0.1:$DISTRIBUTION_TLS_PORT
export RETAINER_REGISTRY_CA=$STATE/pki/registry-ca.crt
EOF
  fi
}

cmd_status() {
  [ -d "$STATE/pids" ] || { echo "not up"; return 1; }
  local f rc=0
  ls "$STATE"/pids/* >/dev/null 2>&1 || { echo "not up"; return 1; }
  for f in "$STATE"/pids/*; do
    [ -f "$f" ] || continue
    if kill -0 "$(cat "$f")" 2>/dev/null; then echo "$(basename "$f"): running"; else echo "$(basename "$f"): stopped"; rc=1; fi
  done
  return $rc
}

# ---------------------------------------------------------------------------------------------
# kill / start / restart one component, for fault tests. `start` relaunches a component with
# the command line it last ran with (recorded by `start` above, or read from /proc by `kill` for
# a bed an older script started): same flags, ports, certificates and data directory. It runs in
# its own session, so a signal to the test that called it (Ctrl-C) does not reach it.

components() { local f; for f in "$STATE"/pids/*; do [ -f "$f" ] && basename "$f"; done; }

pid_of() { # component
  [ -f "$STATE/pids/$1" ] || die "no component '$1' in $STATE (have: $(components | tr '\n' ' '))"
  cat "$STATE/pids/$1"
}

running() { kill -0 "$1" 2>/dev/null; }

# The check `start` waits for, per component.
healthy() { # component
  # shellcheck disable=SC1091
  . "$STATE/ports"
  case "$1" in
    etcd) curl -sf "http://127.0.0.1:$ETCD_PORT/health" ;;
    kube-apiserver) "$K8S_BIN/kubectl" --kubeconfig "$STATE/kubeconfig" get --raw /readyz ;;
    kube-controller-manager) curl -skf "https://127.0.0.1:$KCM_PORT/healthz" ;;
    olareg) curl -sf "http://127.0.0.1:$OLAREG_PORT/v2/" ;;
    docker-registry) curl -sf "http://127.0.0.1:$DISTRIBUTION_PORT/v2/" ;;
    docker-registry-auth)
      curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DISTRIBUTION_AUTH_PORT/v2/" | grep -q 401 ;;
    token-issuer) curl -sf "http://127.0.0.1:$TOKEN_ISSUER_PORT/healthz" ;;
    distribution-token)
      curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$DISTRIBUTION_TOKEN_PORT/v2/" | grep -q 401 ;;
    distribution-tls) curl -sf --cacert "$STATE/pki/registry-ca.crt" "https://127.0.0.1:$DISTRIBUTION_TLS_PORT/v2/" ;;
    *) return 0 ;;
  esac
}

cmd_kill() { # component [signal]
  local name=${1:?usage: $0 kill COMPONENT [SIGNAL]} sig=${2:-KILL} pid
  [ -f "$STATE/ports" ] || die "not up: run scripts/testbed.sh up"
  pid=$(pid_of "$name")
  if ! running "$pid"; then log "$name is not running"; return 0; fi
  mkdir -p "$STATE/cmds"
  if [ ! -s "$STATE/cmds/$name" ]; then
    local args=()
    mapfile -d '' -t args <"/proc/$pid/cmdline"
    printf '%q ' "${args[@]}" >"$STATE/cmds/$name"
  fi
  kill -s "$sig" "$pid"
  for _ in $(seq 100); do running "$pid" || break; sleep 0.1; done
  if running "$pid"; then log "$name ignored SIG$sig for 10s; killing it"; kill -9 "$pid" 2>/dev/null || true; fi
  for _ in $(seq 50); do running "$pid" || break; sleep 0.1; done
  log "killed $name (pid $pid, SIG$sig)"
}

cmd_start() { # component
  local name=${1:?usage: $0 start COMPONENT} pid
  [ -f "$STATE/ports" ] || die "not up: run scripts/testbed.sh up"
  pid=$(pid_of "$name")
  if running "$pid"; then
    log "$name is already running (pid $pid)"
  else
    [ -s "$STATE/cmds/$name" ] || die "no recorded command line for $name"
    local args
    eval "args=($(cat "$STATE/cmds/$name"))"
    echo "--- restarted $(date -u +%FT%TZ) ---" >>"$STATE/logs/$name.log"
    setsid "${args[@]}" </dev/null >>"$STATE/logs/$name.log" 2>&1 &
    echo $! >"$STATE/pids/$name"
    wait_for "$name" 120 healthy "$name"
    log "started $name (pid $(cat "$STATE/pids/$name"))"
  fi
  # etcd back is not the bed back: wait until the API server says it is ready again.
  if [ "$name" != kube-apiserver ] && [ -f "$STATE/pids/kube-apiserver" ] \
    && running "$(cat "$STATE/pids/kube-apiserver")"; then
    wait_for kube-apiserver 120 healthy kube-apiserver
  fi
}

cmd_restart() { # component [signal]
  cmd_kill "$@"
  cmd_start "$1"
}

# ---------------------------------------------------------------------------------------------
# Kyverno (benchmarks only; not part of `build`, so CI never builds it): its cleanup controller,
# which reconciles DeletingPolicy, built from its Go module, and the CRDs it reads.
#
#   scripts/testbed.sh build-kyverno   build or reuse $CACHE/kyverno-$KYVERNO_VERSION/{bin,crds}
#
# bench/kyverno.sh starts and stops it against a running bed.

KYVERNO_VERSION=${KYVERNO_VERSION:-v1.19.1}
KYVERNO_DIR=$CACHE/kyverno-$KYVERNO_VERSION

build_kyverno() {
  local stamp=$KYVERNO_DIR/bin/.version
  if [ -x "$KYVERNO_DIR/bin/cleanup-controller" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$KYVERNO_VERSION" ] \
    && [ -d "$KYVERNO_DIR/crds" ]; then
    return 0
  fi
  log "building Kyverno's cleanup controller $KYVERNO_VERSION from its Go module (first time: 10-30 minutes)"
  local src=$CACHE/src/kyverno-$KYVERNO_VERSION mod=github.com/kyverno/kyverno
  rm -rf "$src" && mkdir -p "$src" "$KYVERNO_DIR/bin"
  (
    cd "$src"
    go mod init retainer.dev/testbed/kyverno >/dev/null 2>&1
    local json gomod dir
    json=$(go mod download -json "$mod@$KYVERNO_VERSION")
    gomod=$(printf '%s\n' "$json" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
    dir=$(printf '%s\n' "$json" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
    [ -f "$gomod" ] && [ -d "$dir" ] || die "could not download $mod@$KYVERNO_VERSION"
    # Replace directives apply only in the main module: carry Kyverno's own (a fork of
    # k8s.io/pod-security-admission) into the wrapper, read from its go.mod.
    local reps
    reps=$(awk '/^replace \(/ {b=1; next} b && /^\)/ {b=0; next} b {print; next} /^replace / {sub(/^replace /, ""); print}' "$gomod")
    if [ -n "$reps" ]; then
      { echo; echo "replace ("; printf '\t%s\n' "$reps" | sed 's/^\t\t*/\t/'; echo ")"; } >>go.mod
      log "carried $(printf '%s\n' "$reps" | grep -c '=>') replace line(s) from Kyverno's go.mod"
    fi
    go get "$mod@$KYVERNO_VERSION" "$mod/cmd/cleanup-controller@$KYVERNO_VERSION"
    go build -trimpath -ldflags "-s -w -X $mod/pkg/version.BuildVersion=$KYVERNO_VERSION" \
      -o "$KYVERNO_DIR/bin/cleanup-controller.tmp" "$mod/cmd/cleanup-controller"
    mv "$KYVERNO_DIR/bin/cleanup-controller.tmp" "$KYVERNO_DIR/bin/cleanup-controller"
    rm -rf "$KYVERNO_DIR/crds" && mkdir -p "$KYVERNO_DIR/crds"
    cp -r "$dir"/config/crds/. "$KYVERNO_DIR/crds/"
    chmod -R u+w "$KYVERNO_DIR/crds"
  )
  echo "$KYVERNO_VERSION" >"$stamp"
  log "Kyverno $KYVERNO_VERSION ready under $KYVERNO_DIR"
}

case "${1:-}" in
  build) cmd_build ;;
  build-kstatus) build_kstatus ;;
  build-kyverno) build_kyverno ;;
  up) cmd_up ;;
  down) cmd_down ;;
  build-cel-oracle) command -v go >/dev/null || die "Go is needed to build tools/k8s-cel-library"
    build_cel_oracle && echo "$TOOLS_BIN/k8s-cel-library" ;;
  env) cmd_env ;;
  status) cmd_status ;;
  kcm) shift; cmd_kcm "$@" ;;
  kill) shift; cmd_kill "$@" ;;
  start) shift; cmd_start "$@" ;;
  restart) shift; cmd_restart "$@" ;;
  *) echo "usage: $0 build|build-kstatus|build-cel-oracle|build-kyverno|up|down|env|status|kcm [FLAGS...]|kill|start|restart COMPONENT" >&2; exit 2 ;;
esac
