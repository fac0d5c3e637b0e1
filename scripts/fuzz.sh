#!/usr/bin/env bash
# Fuzzing braid-proto and braid-kcp with cargo-fuzz (libFuzzer). See docs/security.md.
#
#   scripts/fuzz.sh install            cargo install cargo-fuzz (once per machine)
#   scripts/fuzz.sh seed               regenerate fuzz/corpus/<target>/ (committed seeds)
#   scripts/fuzz.sh build              build every target
#   scripts/fuzz.sh run [TARGET] [SECONDS]
#                                      run one target (default: all, one after another)
#                                      for SECONDS each (default 180)
#   scripts/fuzz.sh tmin TARGET FILE   minimise a crashing input
#
# cargo-fuzz needs nightly-only compiler flags (-Zsanitizer=address). On a machine with
# only stable Rust, RUSTC_BOOTSTRAP=1 lets the stable compiler accept them; this script
# sets it. Targets are built with debug assertions on, so integer overflow panics.
#
# The working corpus grows in fuzz/corpus-work/<target>/ (not committed; seeded from
# fuzz/corpus/<target>/); crashes land in fuzz/artifacts/<target>/. Keep each crash as a
# regression test in crates/braid-fuzz-harness/tests/model.rs (as a byte array).
# Runs are sequential on purpose: the machine has 2 cores shared with other work.
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
export RUSTC_BOOTSTRAP=1
targets=(smux_decode yamux_decode session_input session_ops kcp_datagram)

need_cargo_fuzz() {
    if ! cargo fuzz --version >/dev/null 2>&1; then
        echo "cargo-fuzz missing: run scripts/fuzz.sh install" >&2
        exit 1
    fi
}

# Writes the bytes of a hex string to a file.
unhex() {
    local hex=$1 out=$2
    # shellcheck disable=SC2059 # the format is the point: \xHH escapes
    printf "$(sed 's/../\\x&/g' <<<"$hex")" >"$out"
}

# Field $2 of the JSON line $1 (strings and numbers only; enough for go_frames.jsonl).
field() {
    sed -n "s/.*\"$2\":\"\{0,1\}\([^\",}]*\).*/\1/p" <<<"$1"
}

seed() {
    local golden=crates/braid-proto/tests/golden/go_frames.jsonl
    local c=fuzz/corpus
    rm -rf "$c"
    mkdir -p "$c"/{smux_decode,yamux_decode,session_input,session_ops}
    local i=0 line proto side kind hex truncated ver
    declare -A conv # concatenated frames per proto and sender
    while IFS= read -r line; do
        proto=$(field "$line" proto)
        side=$(field "$line" side)
        kind=$(field "$line" kind)
        hex=$(field "$line" hex)
        truncated=$(field "$line" payload_truncated)
        i=$((i + 1))
        local name
        name=$(printf 'golden-%02d-%s-%s-%s' "$i" "$proto" "$side" "$kind")
        case $proto in
        smux1 | smux2)
            ver=$([ "$proto" = smux1 ] && echo 00 || echo 01)
            unhex "$ver$hex" "$c/smux_decode/$name"
            ;;
        yamux)
            # 05: data frames up to 256 KiB, whole-input chunks of 1 byte.
            unhex "05$hex" "$c/yamux_decode/$name"
            ;;
        esac
        if [ "$truncated" != true ]; then
            conv[$proto-$side]+=$hex
        fi
    done <"$golden"
    # Whole conversations: the codecs in chunks, and sessions fed what Go's peer sent.
    unhex "04${conv[smux1-client]}" "$c/smux_decode/conv-smux1-client"
    unhex "05${conv[smux2-client]}${conv[smux2-server]}" "$c/smux_decode/conv-smux2"
    unhex "2d${conv[yamux-client]}${conv[yamux-server]}" "$c/yamux_decode/conv-yamux"
    # session_input control byte: bits 0-2 setup (see input_setup), 8: the app reads.
    unhex "09${conv[smux1-client]}" "$c/session_input/smux1-server-reads"
    unhex "01${conv[smux1-client]}" "$c/session_input/smux1-server-idle"
    unhex "08${conv[smux1-server]}" "$c/session_input/smux1-client"
    unhex "0b${conv[smux2-client]}" "$c/session_input/smux2-server-reads"
    unhex "0a${conv[smux2-server]}" "$c/session_input/smux2-client"
    unhex "0d${conv[yamux-client]}" "$c/session_input/yamux-server-reads"
    unhex "0c${conv[yamux-server]}" "$c/session_input/yamux-client"
    unhex "0e${conv[yamux-client]}" "$c/session_input/auto-yamux"
    unhex "4e${conv[smux2-client]}" "$c/session_input/auto-smux2"
    # gmux names: SYN with the 4-byte name "abcd" on stream 3, then PSH "hi".
    unhex "03020004000300000061626364" "$c/smux_decode/named-syn"
    unhex "0f020004000300000061626364020202000300000068690201000003000000" \
        "$c/session_input/smux2-named"
    # session_ops: 3 setup bytes, then ops (see parse_ops): 00 open, 0a accept,
    # 14 write s len, 2e read s max, 2d read_chunk, 46 close_write s, 4d close_stream s,
    # 54 reset s, 58 transmit max, 64 deliver max, 70 advance ms/8, 78 drive; |80 server.
    local basic="000000 78 8a 14008813 78 ae00ffff 9400b80b d8ffff 64ffff 2d00ffff 4600 cd00 70c409 78"
    local two="000000 000000 78 8a 1400ffff 1401ffff 940050c3 58ffff e4ffff 2e00ff00 ae01ff00 d400 70ffff 78"
    local flood="000000 000000 000000 000000 000000 000000 78 1400ffff 1401ffff 1402ffff 1403ffff 70ffff 8a 70ffff 78"
    local a
    for a in 00 01 02; do
        unhex "${a}3a00${basic// /}" "$c/session_ops/basic-$a"
        unhex "${a}0000${two// /}" "$c/session_ops/two-streams-$a"
        unhex "${a}0500${flood// /}" "$c/session_ops/backlog-$a"
    done
    # smux v2 with gmux names: open with a 10-byte name.
    local named="403a00 000a00 78 8a 14000010 78 ae00ffff 78"
    unhex "${named// /}" "$c/session_ops/named-smux2"
    # kcp_datagram: real KCP sessions' traffic, written by braid-kcp's corpus test, and
    # a regression input (hostile sequence numbers: ikcp's wrapping arithmetic).
    cargo test -q -p braid-kcp --test fuzz_corpus -- --ignored write_seeds >/dev/null
    cp crates/braid-kcp/tests/kcp-timediff-overflow "$c/kcp_datagram/regression-kcp-timediff-overflow"
    echo "corpus: $(find "$c" -type f | wc -l) files, $(cat "$c"/*/* | wc -c) bytes"
}

build() {
    need_cargo_fuzz
    cargo fuzz build --debug-assertions
}

run() {
    need_cargo_fuzz
    local which=${1:-all} secs=${2:-180}
    local list=("${targets[@]}")
    if [ "$which" != all ]; then
        list=("$which")
    fi
    for t in "${list[@]}"; do
        mkdir -p "fuzz/corpus-work/$t" "fuzz/artifacts/$t"
        # Operation sequences are worth their length from the start; libFuzzer's
        # default would grow inputs slowly (about 50 bytes after 3 minutes).
        local extra=()
        if [ "$t" = session_ops ]; then
            extra=(-len_control=0 -max_len=1024)
        fi
        # kcp_datagram without debug assertions: the kcp crate (C's ikcp ported) relies on
        # wrapping i32 arithmetic, and cargo-fuzz's overflow checks cannot be turned off for
        # one crate. braid-kcp's own code gets them in `cargo test` (fuzz_corpus.rs).
        local checks=(--debug-assertions)
        if [ "$t" = kcp_datagram ]; then
            checks=(--release)
        fi
        echo "== $t for ${secs}s"
        cargo fuzz run "${checks[@]}" "$t" "fuzz/corpus-work/$t" "fuzz/corpus/$t" -- \
            -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -max_len=16384 \
            -print_final_stats=1 "${extra[@]}"
    done
}

case ${1:-} in
install) cargo install cargo-fuzz ;;
seed) seed ;;
build) build ;;
run) run "${2:-all}" "${3:-180}" ;;
tmin)
    need_cargo_fuzz
    cargo fuzz tmin --debug-assertions "$2" "$3"
    ;;
*)
    sed -n '2,19p' "$0"
    exit 2
    ;;
esac
