#!/usr/bin/env bash
# Runs every test braid has, installing what they need first.
#
#   scripts/test.sh
#
# The Go peers (Debian's golang-go, smux and yamux packages) and kcptun are installed
# with scripts/install-peers.sh when this user can (root or sudo). Without them the Go
# and kcptun checks are skipped with a reason, unless BRAID_REQUIRE_INTEROP=1 (as in
# CI), which makes a missing peer a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

require_interop=${BRAID_REQUIRE_INTEROP:-0}
have_go=0
if [[ $(id -u) -eq 0 ]] || command -v sudo >/dev/null 2>&1; then
    scripts/install-peers.sh
fi
if command -v go >/dev/null 2>&1 && [[ -d /usr/share/gocode/src/github.com/xtaci/smux ]]; then
    have_go=1
elif [[ $require_interop == 1 ]]; then
    echo "test.sh: BRAID_REQUIRE_INTEROP=1 but the Go peers are missing (run scripts/install-peers.sh as root)" >&2
    exit 1
else
    echo "test.sh: skipping Go interop checks: Go toolchain or Debian smux/yamux packages missing (run scripts/install-peers.sh as root)"
fi

target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')

if [[ $have_go == 1 ]]; then
    echo "== Go peer: build, and check the golden vectors against what Go sends now"
    mkdir -p "$target_dir/go"
    (cd interop/go && GO111MODULE=off GOPATH=/usr/share/gocode go build -o "$target_dir/go/braid-peer" .)
    "$target_dir/go/braid-peer" -mode golden > "$target_dir/go/go_frames.jsonl"
    if ! diff -u crates/braid-proto/tests/golden/go_frames.jsonl "$target_dir/go/go_frames.jsonl"; then
        echo "test.sh: Go sends different bytes than the golden vectors record" >&2
        exit 1
    fi
    export BRAID_GO_PEER="$target_dir/go/braid-peer"
fi

echo "== cargo test (all crates, unit, integration and doc tests)"
# soak/tests/attack_short.rs attacks the `braid` binary this build makes for
# braid-cli's tests (without it, that test builds one itself).
export BRAID_BIN="$target_dir/debug/braid"
cargo test --workspace --quiet
echo "== cargo test, optional features"
cargo test -p braid --features futures-io --test futures_io --quiet
