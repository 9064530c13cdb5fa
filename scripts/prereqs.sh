# Prerequisites of `make test`, `make demo`, scripts/image.sh and .ci/run, checked in one place.
# Sourced, not run:
#
#   . scripts/prereqs.sh
#   retainer_prereqs test      # or: demo, image, testbed, ci
#
# What a Debian package provides is installed with apt-get when this machine can (root or
# passwordless sudo, and apt-get present); `apt-get update` runs at most once per process tree.
# Whatever is still missing is reported in one message, every item with how to get it, and the
# function returns 1. RETAINER_NO_INSTALL=1 turns installing off (report only).
#
# Finding what is missing takes only shell builtins (cargo, when present, is asked about its
# components), so that the check works on a machine that lacks most tools: tests/prereqs.rs runs
# it with a PATH of a few stand-ins.

# tool|Debian package ("" when apt cannot provide it)|what it is for and how to get it otherwise
_retainer_prereq_table() {
  case "$1" in
    cargo) echo "|Rust (cargo, rustc), from https://rustup.rs" ;;
    go) echo "|Go 1.26 or newer, from https://go.dev/dl (builds the test bed's Kubernetes, etcd and registries)" ;;
    python3) echo "python3|Python 3 (picks free ports for the test bed, formats demo output)" ;;
    openssl) echo "openssl|OpenSSL (the test bed's throw-away certificates)" ;;
    curl) echo "curl|curl (health checks of the test bed)" ;;
    htpasswd) echo "apache2-utils|htpasswd, Debian package apache2-utils (the test bed's password-protected registry)" ;;
    dpkg-deb) echo "dpkg|dpkg-deb (unpacks Debian's docker-registry for the test bed)" ;;
    musl-gcc) echo "musl-tools|musl-gcc, Debian package musl-tools (the static binary of the container image)" ;;
    *) echo "|$1" ;;
  esac
}

_retainer_prereq_tools() {
  case "$1" in
    testbed) echo "go python3 openssl curl htpasswd dpkg-deb" ;;
    test | ci) echo "cargo go python3 openssl curl htpasswd dpkg-deb" ;;
    demo) echo "cargo go python3 openssl curl htpasswd dpkg-deb musl-gcc" ;;
    image) echo "cargo musl-gcc" ;;
    *) echo "$1" ;;
  esac
}

# How to run apt-get here ("" when root, "sudo -n" with passwordless sudo), or fails.
_retainer_apt_runner() {
  [ -n "${RETAINER_NO_INSTALL:-}" ] && return 1
  command -v apt-get >/dev/null 2>&1 || return 1
  if [ "${EUID:-$(id -u)}" = 0 ]; then
    echo ""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then
    echo "sudo -n"
  else
    return 1
  fi
}

# The lints need rustfmt and clippy; a rustup toolchain may lack them, and rustup can add them.
_retainer_rust_components() { # purpose...
  case " $* " in *" test "* | *" ci "*) ;; *) return 0 ;; esac
  command -v cargo >/dev/null 2>&1 && command -v rustup >/dev/null 2>&1 || return 0
  if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
    printf '[prereqs] rustup component add rustfmt clippy\n' >&2
    rustup component add rustfmt clippy >&2 || true
  fi
}

retainer_prereqs() { # purpose...
  local purpose tool row pkg missing=() pkgs=() runner
  for purpose in "$@"; do
    for tool in $(_retainer_prereq_tools "$purpose"); do
      command -v "$tool" >/dev/null 2>&1 && continue
      case " ${missing[*]} " in *" $tool "*) continue ;; esac
      missing+=("$tool")
      row=$(_retainer_prereq_table "$tool")
      pkg=${row%%|*}
      [ -n "$pkg" ] && pkgs+=("$pkg")
    done
  done
  _retainer_rust_components "$@"
  [ ${#missing[@]} -eq 0 ] && return 0

  if [ ${#pkgs[@]} -gt 0 ] && runner=$(_retainer_apt_runner); then
    printf '[prereqs] installing %s\n' "${pkgs[*]}" >&2
    if [ -z "${RETAINER_APT_UPDATED:-}" ]; then
      # shellcheck disable=SC2086 # $runner is empty or "sudo -n": word splitting intended
      $runner apt-get update -qq >/dev/null || printf '[prereqs] apt-get update failed\n' >&2
      export RETAINER_APT_UPDATED=1
    fi
    # shellcheck disable=SC2086
    local out
    # shellcheck disable=SC2086
    out=$($runner env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${pkgs[@]}" 2>&1) \
      || printf '[prereqs] apt-get install %s failed:\n%s\n' "${pkgs[*]}" "$out" >&2
    local still=()
    for tool in "${missing[@]}"; do
      command -v "$tool" >/dev/null 2>&1 || still+=("$tool")
    done
    missing=("${still[@]}")
    [ ${#missing[@]} -eq 0 ] && return 0
  fi

  {
    printf 'missing prerequisites (%s):\n' "$*"
    for tool in "${missing[@]}"; do
      row=$(_retainer_prereq_table "$tool")
      printf '  %-9s %s\n' "$tool" "${row#*|}"
    done
    pkgs=()
    for tool in "${missing[@]}"; do
      row=$(_retainer_prereq_table "$tool")
      [ -n "${row%%|*}" ] && pkgs+=("${row%%|*}")
    done
    if [ ${#pkgs[@]} -gt 0 ]; then
      printf 'On Debian or Ubuntu, as root: apt-get update && apt-get install -y %s\n' "${pkgs[*]}"
      printf '(make test and make demo do this themselves when run as root or with passwordless sudo)\n'
    fi
  } >&2
  return 1
}
