#!/usr/bin/env bash
# Install the Go toolchain and the Go smux/yamux libraries (Debian packages)
# used by the interop peer in interop/go, and kcptun (kcptun-client and
# kcptun-server, for braid-kcp's interop tests). Idempotent and quiet: prints
# nothing when everything is already present.
set -euo pipefail

PKGS=(golang-go golang-github-xtaci-smux-dev golang-github-hashicorp-yamux-dev kcptun)

# True if the Debian package named $1 is fully installed.
pkg_installed() {
    local status
    status=$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)
    [[ "$status" == "install ok installed" ]]
}

missing=0
command -v go >/dev/null 2>&1 || missing=1
for p in "${PKGS[@]}"; do
    pkg_installed "$p" || missing=1
done
[[ $missing -eq 0 ]] && exit 0

# Pick a way to run apt-get with root privileges.
if [[ $(id -u) -eq 0 ]]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    SUDO=(sudo)
else
    echo "install-peers.sh: need root or sudo to install: ${PKGS[*]}" >&2
    exit 1
fi

# Keep apt's chatter (including debconf notices on stderr) in a log that is
# shown only if something fails.
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { "${SUDO[@]}" apt-get update -qq &&
       "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
           apt-get install -y -qq "${PKGS[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "install-peers.sh: failed to install: ${PKGS[*]}" >&2
    exit 1
fi

# golang-go puts `go` in /usr/bin via /usr/lib/go; make sure it resolved.
if ! command -v go >/dev/null 2>&1; then
    echo "install-peers.sh: 'go' still not on PATH after installing golang-go" >&2
    exit 1
fi
