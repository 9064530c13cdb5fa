#!/usr/bin/env bash
# OCI sweep cost (issue #7): a first sweep (cold cache), a repeat sweep (target: tag listings
# only) and a plain parallel DELETE client deleting the same digests (the limit), each in time
# and requests by kind, medians of OCI_RUNS runs. Writes bench/results/oci.md.
#
#   OCI_TAGS=2000 OCI_REPOS=20 OCI_RUNS=3 bench/oci.sh
#
# OCI_KEEP: tags kept per repository (default half); OCI_DELETE_CONCURRENCY (default 10, the
# controller's default) for retainer and the plain client alike; OCI_REGISTRY_CONCURRENCY
# (default 8). The registry is a private olareg started for the run from the test bed's
# binary cache (nothing else writes to it); OCI_REGISTRY=host:port uses a running registry
# with deletes enabled instead. BENCH_QUICK=1: 200 tags in 4 repositories, one run.
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

TAGS=${OCI_TAGS:-$(bench_size 2000 200)}
REPOS=${OCI_REPOS:-$(bench_size 20 4)}
RUNS=${OCI_RUNS:-$(bench_size 3 1)}
CONC=${OCI_DELETE_CONCURRENCY:-10}
REG_CONC=${OCI_REGISTRY_CONCURRENCY:-8}
OLAREG_VERSION=$(sed -n 's/^OLAREG_VERSION=\${OLAREG_VERSION:-\(.*\)}$/\1/p' scripts/testbed.sh)
CACHE=${RETAINER_CACHE:-$HOME/.cache/retainer-testbed}

log() { printf '[bench/oci] %s\n' "$*" >&2; }

cmdline="OCI_TAGS=$TAGS OCI_REPOS=$REPOS OCI_RUNS=$RUNS bench/oci.sh"
[ -n "${OCI_KEEP:-}" ] && cmdline="OCI_KEEP=$OCI_KEEP $cmdline"
[ -n "${OCI_DELETE_CONCURRENCY:-}" ] && cmdline="OCI_DELETE_CONCURRENCY=$CONC $cmdline"
[ -n "${OCI_REGISTRY_CONCURRENCY:-}" ] && cmdline="OCI_REGISTRY_CONCURRENCY=$REG_CONC $cmdline"

if [ -n "${OCI_REGISTRY:-}" ]; then
  REGISTRY=$OCI_REGISTRY
  VERSION="the registry at $REGISTRY"
  cmdline="OCI_REGISTRY=$REGISTRY $cmdline"
  bench_begin oci none "$cmdline"
else
  OLAREG=$CACHE/tools/bin/olareg
  [ -x "$OLAREG" ] || { log "no $OLAREG: run scripts/testbed.sh build first"; exit 1; }
  dir=$(mktemp -d /tmp/retainer-bench-olareg.XXXXXX)
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  # As the test bed runs it: deletes on, no garbage collection during the run.
  "$OLAREG" serve --addr 127.0.0.1 --dir "$dir" --port "$port" --api-delete --gc-frequency 1000h \
    >"$dir.log" 2>&1 &
  pid=$!
  BENCH_CLEANUP+=("kill $pid; wait $pid 2>/dev/null; rm -rf '$dir' '$dir.log'")
  for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$port/v2/" >/dev/null && break
    sleep 0.1
  done
  REGISTRY=127.0.0.1:$port
  VERSION="olareg $OLAREG_VERSION (filesystem storage in /tmp, \`--api-delete --gc-frequency 1000h\`)"
  bench_begin oci none "$cmdline"
fi

cargo build --release --quiet --example bench-oci
target=${CARGO_TARGET_DIR:-$ROOT/target}
# A copy: a rebuild during the run must not swap the binary being measured.
bindir=$(mktemp -d /tmp/retainer-bench-oci.XXXXXX)
BENCH_CLEANUP+=("rm -rf '$bindir'")
cp "$target/release/examples/bench-oci" "$bindir/"
bin=$bindir/bench-oci

log "registry $REGISTRY; $TAGS tags in $REPOS repositories, $RUNS runs"
args=(--registry "$REGISTRY" --tags "$TAGS" --repos "$REPOS" --runs "$RUNS"
  --delete-concurrency "$CONC" --registry-concurrency "$REG_CONC"
  --out "$BENCH_OUT" --tsv "$BENCH_TSV" --command-line "$cmdline" --registry-version "$VERSION"
  --rev "$(bench_rev)")
[ -n "${OCI_KEEP:-}" ] && args+=(--keep "$OCI_KEEP")
"$bin" "${args[@]}"
bench_end "$RUNS"
