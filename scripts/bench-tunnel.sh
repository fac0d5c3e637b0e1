#!/usr/bin/env bash
# Tunnel throughput with a real load client: iperf3 directly, through `braid client` ->
# `braid server`, and through the Go tunnel (interop/go's tunnel-client/-server modes),
# for smux1, smux2 and yamux, interleaved round by round. Prints MB/s per run and the
# median per mode. `braid bench --workload tunnel` is the main measurement (its own load,
# CPU of the tunnel processes, auth rows); this is the cross-check with a real client.
#
#   scripts/bench-tunnel.sh [ROUNDS] [PARALLEL] [SECONDS]     (defaults 3 1 3)
#
# Needs iperf3, a release `braid` (cargo build --release -p braid-cli) and, for the Go
# rows, the Go peer (built as scripts/test.sh does, in target/go/braid-peer).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3} parallel=${2:-1} secs=${3:-3}
braid=target/release/braid
go_peer=target/go/braid-peer
command -v iperf3 >/dev/null || { echo "bench-tunnel.sh: iperf3 missing (apt-get install iperf3)" >&2; exit 1; }
[[ -x $braid ]] || { echo "bench-tunnel.sh: build $braid first" >&2; exit 1; }

# Waits until something listens on the port. Looks with ss instead of connecting: a test
# connection through a tunnel becomes a connection to iperf3's server, which then fails
# the next test ("control socket has closed unexpectedly").
wait_port() { for _ in $(seq 100); do ss -Hltn "sport = :$1" | grep -q . && return; sleep 0.05; done; echo "port $1 never opened" >&2; exit 1; }
mbps() {
    iperf3 -c 127.0.0.1 -p "$1" -t "$secs" -P "$parallel" -J |
        python3 -c 'import json,sys; d=json.load(sys.stdin); e=d["end"]; print(round(e["sum_received"]["bits_per_second"]/8e6) if "sum_received" in e else "", d.get("error", ""))'
}
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; }
trap cleanup EXIT
iperf3 -s -p 5201 >/dev/null 2>&1 & pids+=($!)
wait_port 5201
results=$(mktemp)
for round in $(seq "$rounds"); do
    echo "direct $(mbps 5201)" | tee -a "$results"
    for p in smux1 smux2 yamux; do
        "$braid" server --listen 127.0.0.1:7100 --target 127.0.0.1:5201 --proto "$p" >/dev/null 2>&1 & s=$!
        wait_port 7100
        "$braid" client --listen 127.0.0.1:7101 --server 127.0.0.1:7100 --proto "$p" >/dev/null 2>&1 & c=$!
        wait_port 7101
        echo "braid-$p $(mbps 7101)" | tee -a "$results"
        kill "$c" "$s"; wait "$c" "$s" 2>/dev/null || true
        if [[ -x $go_peer ]]; then
            "$go_peer" -mode tunnel-server -proto "$p" -addr 127.0.0.1:7200 -target 127.0.0.1:5201 -timeout 600s >/dev/null 2>&1 & s=$!
            wait_port 7200
            "$go_peer" -mode tunnel-client -proto "$p" -addr 127.0.0.1:7200 -listen 127.0.0.1:7201 -timeout 600s >/dev/null 2>&1 & c=$!
            wait_port 7201
            echo "go-$p $(mbps 7201)" | tee -a "$results"
            kill "$c" "$s"; wait "$c" "$s" 2>/dev/null || true
        fi
    done
done
echo "medians (MB/s), $rounds rounds, $parallel parallel connection(s), ${secs} s each:"
python3 - "$results" <<'PY'
import sys, statistics, collections
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    fields = line.split()
    if len(fields) == 2:
        runs[fields[0]].append(int(fields[1]))
    elif fields:
        runs.setdefault(fields[0], [])
        print(f"{fields[0]}: a run failed", file=sys.stderr)
for mode, vs in runs.items():
    med = f"{statistics.median(vs):8.0f}" if vs else "  failed"
    print(f"{mode:12} {med}   runs {vs}")
PY
rm -f "$results"
