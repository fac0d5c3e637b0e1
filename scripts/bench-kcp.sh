#!/usr/bin/env bash
# braid over KCP against kcptun on loopback: iperf3 through each client/server pair, with
# and without loss (a UDP relay dropping a share of the datagrams each way), kcptun's
# default configuration on both (aes, FEC 10/3, snappy, mode fast, smux v1).
#
#   scripts/bench-kcp.sh [ROUNDS] [SECONDS] [LOSS]     (defaults: 3 rounds, 8 s, 0.02)
#   KCP_FLAGS="--sndwnd 1024 --rcvwnd 1024" scripts/bench-kcp.sh
#                                  flags given to all four programs (same names on both)
#
# Each round runs every pair in fresh processes, interleaved (kcptun, braid, kcptun, ...),
# and prints one line per run: Mbit/s received by iperf3, and the CPU time (user + system)
# the tunnel's client and server processes used, per MB carried. The summary gives
# medians and braid/kcptun ratios. Needs iperf3 and kcptun (scripts/install-peers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."

rounds=${1:-3}
secs=${2:-8}
loss=${3:-0.02}
flags=${KCP_FLAGS:-} # word-split on purpose: several flags
cargo build --release -q -p braid-cli --bin braid
cargo build --release -q -p braid-kcp --example lossy_relay
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
braid=$target_dir/release/braid
relay=$target_dir/release/examples/lossy_relay
tick=$(getconf CLK_TCK)
work=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$work"
}
trap cleanup EXIT


# Waits (at most 5 s) until something listens on TCP port $1.
listening() {
    for _ in $(seq 100); do
        ss -ltnH "sport = :$1" | grep -q . && return
        sleep 0.05
    done
}

# CPU ticks (user + system) of a process so far.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# run IMPL LOSS N: one iperf3 run through a fresh pair; prints "mbps cpu_ms_per_mb".
run() {
    # Fresh ports for each run ($3: run number): a port just closed may still get the
    # last run's datagrams.
    local impl=$1 loss=$2 port_srv=$((29900 + $3 * 3)) port_cli=$((29901 + $3 * 3)) port_relay=$((29902 + $3 * 3))
    local to=127.0.0.1:$port_srv iperf=$((25200 + $3))
    local spid cpid rpid= ipid
    # A one-test iperf3 server per run: one left busy by a cut test cannot spoil the next.
    iperf3 -s -1 -p "$iperf" >/dev/null 2>&1 &
    ipid=$!
    listening "$iperf"
    if [[ $impl == kcptun ]]; then
        kcptun-server -l "127.0.0.1:$port_srv" -t 127.0.0.1:$iperf --quiet $flags >/dev/null 2>&1 &
        spid=$!
    else
        "$braid" server --transport kcp --listen "127.0.0.1:$port_srv" --target 127.0.0.1:$iperf $flags >/dev/null 2>&1 &
        spid=$!
    fi
    if [[ $loss != 0 ]]; then
        "$relay" "127.0.0.1:$port_relay" "$to" "$loss" 7 &
        rpid=$!
        to=127.0.0.1:$port_relay
    fi
    if [[ $impl == kcptun ]]; then
        kcptun-client -l "127.0.0.1:$port_cli" -r "$to" --quiet $flags >/dev/null 2>&1 &
        cpid=$!
    else
        "$braid" client --transport kcp --listen "127.0.0.1:$port_cli" --server "$to" $flags >/dev/null 2>&1 &
        cpid=$!
    fi
    # Wait for the client's TCP port (bounded; not by connecting, which would be
    # tunnelled to the one-test iperf3 server).
    listening "$port_cli"
    local c0 s0 c1 s1
    c0=$(ticks "$cpid"); s0=$(ticks "$spid")
    iperf3 -c 127.0.0.1 -p "$port_cli" -t "$secs" -J >"$work/out.json" 2>/dev/null || true
    c1=$(ticks "$cpid"); s1=$(ticks "$spid")
    kill "$cpid" "$spid" "$ipid" ${rpid:+"$rpid"} 2>/dev/null || true
    wait "$cpid" "$spid" "$ipid" ${rpid:+"$rpid"} 2>/dev/null || true
    python3 - "$work/out.json" $((c1 - c0 + s1 - s0)) "$tick" <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
if "sum_received" not in d.get("end", {}):
    sys.exit("iperf3 failed: " + str(d.get("error")))
rx = d["end"]["sum_received"]
mb = rx["bytes"] / 1e6
cpu_ms = int(sys.argv[2]) * 1000 / int(sys.argv[3])
print(f"{rx['bits_per_second'] / 1e6:.1f} {cpu_ms / mb if mb else float('nan'):.2f}")
EOF
}

runs=0
declare -A results
for l in 0 "$loss"; do
    for r in $(seq "$rounds"); do
        for impl in kcptun braid; do
            runs=$((runs + 1))
            line=$(run "$impl" "$l" "$runs")
            echo "loss=$l round=$r $impl: $line (Mbit/s, CPU ms per MB)"
            results[$impl-$l]+="$line;"
        done
    done
done

echo
echo "| loss | kcptun Mbit/s | braid Mbit/s | ratio | kcptun CPU ms/MB | braid CPU ms/MB | ratio |"
echo "|---|---|---|---|---|---|---|"
for l in 0 "$loss"; do
    python3 - "${results[kcptun-$l]}" "${results[braid-$l]}" "$l" <<'EOF'
import statistics, sys
def med(s, i):
    return statistics.median(float(x.split()[i]) for x in s.split(";") if x)
k, b, l = sys.argv[1], sys.argv[2], sys.argv[3]
kt, bt, kc, bc = med(k, 0), med(b, 0), med(k, 1), med(b, 1)
print(f"| {float(l) * 100:g} % | {kt:.0f} | {bt:.0f} | {bt / kt:.2f} | {kc:.1f} | {bc:.1f} | {bc / kc:.2f} |")
EOF
done
