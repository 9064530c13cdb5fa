#!/usr/bin/env bash
# Builds the container image without a container engine and pushes it to a registry:
#   scripts/image.sh REGISTRY[/REPOSITORY] [TAG]      e.g. scripts/image.sh 127.0.0.1:5000/retainer/retainer
#
# The binary is linked statically against musl, so the image needs nothing else: one layer with
# /usr/local/bin/retainer, /etc/passwd naming the unprivileged user 65532, and the image config
# (entrypoint, user, labels) set with crane. crane pushes straight to the registry; there is no
# local image store. Plain-HTTP registries on loopback are allowed (--insecure).
#
# Needs: rustup's x86_64-unknown-linux-musl target and musl-gcc (Debian: musl-tools), crane.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

REF=${1:?usage: scripts/image.sh REGISTRY/REPOSITORY [TAG]}
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)
TAG=${2:-$VERSION}
TARGET=x86_64-unknown-linux-musl
# A target directory of its own, so that the static build never waits on (or invalidates) the
# development build.
export CARGO_TARGET_DIR=${RETAINER_IMAGE_TARGET_DIR:-$HOME/.cache/retainer-image/target}

command -v crane >/dev/null || { echo "image: crane not found (scripts/testbed.sh build installs it; eval \"\$(scripts/testbed.sh env)\" puts it on PATH)" >&2; exit 1; }
if ! rustup target list --installed 2>/dev/null | grep -qx "$TARGET"; then
  rustup target add "$TARGET"
fi
# musl-gcc compiles the C parts of the TLS library for musl.
# shellcheck source=scripts/prereqs.sh
. scripts/prereqs.sh
retainer_prereqs image || exit 1

echo "[image] building a static binary for $TARGET" >&2
CC_x86_64_unknown_linux_musl=musl-gcc cargo build --quiet --release --locked --target "$TARGET" --bin retainer
BIN=$CARGO_TARGET_DIR/$TARGET/release/retainer
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
mkdir -p "$STAGE/root/usr/local/bin" "$STAGE/root/etc" "$STAGE/root/tmp"
# Debug info only makes the image larger; the symbol table stays, for backtraces.
objcopy --strip-debug "$BIN" "$STAGE/root/usr/local/bin/retainer"
printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >"$STAGE/root/etc/passwd"
printf 'root:x:0:\nnonroot:x:65532:\n' >"$STAGE/root/etc/group"
chmod 1777 "$STAGE/root/tmp"
# Fixed owners and times: the same binary gives the same layer digest.
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime='@0' -C "$STAGE/root" -cf "$STAGE/layer.tar" .

echo "[image] pushing $REF:$TAG" >&2
# crane logs every blob it pushes; show that only when something fails.
quiet() { local out; out=$("$@" 2>&1) || { echo "$out" >&2; return 1; }; }
quiet crane append --insecure --oci-empty-base -f "$STAGE/layer.tar" -t "$REF:$TAG-base"
quiet crane mutate --insecure "$REF:$TAG-base" -t "$REF:$TAG" \
  --set-platform linux/amd64 \
  --entrypoint /usr/local/bin/retainer --cmd run --user 65532:65532 --workdir / \
  -l org.opencontainers.image.title=retainer \
  -l org.opencontainers.image.version="$VERSION" \
  -a org.opencontainers.image.created="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
# The intermediate manifest is of no use; registries without deletes keep it, harmlessly.
crane delete --insecure "$REF:$TAG-base" >/dev/null 2>&1 || true
DIGEST=$(crane digest --insecure "$REF:$TAG")
echo "$REF:$TAG@$DIGEST"
