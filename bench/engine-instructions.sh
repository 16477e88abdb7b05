#!/usr/bin/env bash
# Instructions per warm engine scan, counted by callgrind: steady however busy the host is,
# unlike wall time. For each input, the driver runs once with 1 scan and once with 3 scans;
# half the difference is one warm scan (engine build, file read and the first scan's lazy DFA
# warm-up cancel out).
#
#   bench/engine-instructions.sh                 # the four criterion inputs
#   bench/engine-instructions.sh FILE...         # any UTF-8 files
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
command -v valgrind >/dev/null 2>&1 || {
    SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
    $SUDO apt-get install -y -qq valgrind >/dev/null
}
cargo build --release -q -p airlock --example scan_files
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/examples/scan_files"
if [ $# -eq 0 ]; then
    DIR=$(mktemp -d)
    trap 'rm -rf "$DIR"' EXIT
    # The bench writes its inputs out and exits without measuring (`--test`).
    AIRLOCK_BENCH_DUMP="$DIR" cargo bench -q -p airlock --bench engine -- --test >/dev/null 2>&1
    set -- "$DIR/clean_prose.txt" "$DIR/source_code.txt" "$DIR/dense_findings.txt" "$DIR/number_table.txt"
fi
count() { # count ITERS FILE -> instructions
    valgrind --tool=callgrind --callgrind-out-file=/dev/null "$BIN" --iters "$1" "$2" 2>&1 |
        awk '/Collected/ {print $4}'
}
for f in "$@"; do
    one=$(count 1 "$f")
    three=$(count 3 "$f")
    echo "$(basename "$f"): $(( (three - one) / 2 / 1000000 ))M instructions per scan"
done
