#!/usr/bin/env bash
# The ledger's cost on the request path: the same build run twice side by side, once with the
# ledger on (the default) and once with `[ledger] enabled = false`, under the same load, in
# interleaved rounds so drift on a shared machine hits both alike.
#
#   scripts/with-keyring.sh bench/ledger-load.sh            # 5 rounds (about 4 minutes)
#   ROUNDS=2 DUR=5s scripts/with-keyring.sh bench/ledger-load.sh
#
# Each round: concurrency 1 (N1 requests) and an open-loop 2,000 requests/s run (oha -q with
# latency correction, DUR long), against nginx returning a fixed chat completion. Both
# instances meter every response (usage, prices, budgets); only the ledger differs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. bench/lib.sh
ROUNDS=${ROUNDS:-5}
N1=${N1:-5000}
DUR=${DUR:-15s}

start_nginx
make_body "$WORK/body.json" 4096 0
declare -A PORT KEYS
for mode in on off; do
  extra=""
  [ "$mode" = off ] && extra=$'[ledger]\nenabled = false'
  AL_NAME="ledger-$mode" start_airlock "http://127.0.0.1:$UP_PORT" "$extra"
  PORT[$mode]=$AL_PORT
  KEYS[$mode]=$KEY
done
for r in $(seq "$ROUNDS"); do
  for mode in on off; do
    KEY=${KEYS[$mode]}
    url="http://127.0.0.1:${PORT[$mode]}/openai/v1/chat/completions"
    run "warm-$mode" "$url" "$WORK/body.json" -n 500 -c 4
    run "c1-$mode-$r" "$url" "$WORK/body.json" -n "$N1" -c 1
    run "q-$mode-$r" "$url" "$WORK/body.json" -z "$DUR" -q 2000 -c 64 --latency-correction
  done
done
sleep 1
rows=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from requests").fetchone()[0])' "$WORK/ledger-on/airlock.db")
python3 - "$WORK" "$ROUNDS" "$rows" <<'PY'
import json, statistics, sys
w, rounds, rows = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def load(kind, mode):
    xs = [json.load(open(f"{w}/{kind}-{mode}-{r}.json")) for r in range(1, rounds + 1)]
    for x in xs:
        bad = {k: n for k, n in x.get("statusCodeDistribution", {}).items() if k != "200"}
        assert not bad, f"non-200 answers in {kind}-{mode}: {bad}"
    return [x["latencyPercentiles"]["p50"] * 1000 for x in xs], [x["latencyPercentiles"]["p99"] * 1000 for x in xs]
print(f"rounds: {rounds}; rows in the ledger-on instance's database: {rows}\n")
print("| load | ledger | p50 ms (median of rounds) | p99 ms (median of rounds) | p99 per round |")
print("|---|---|---|---|---|")
diff = {}
for kind, label in (("c1", "concurrency 1"), ("q", "open loop 2,000 req/s")):
    med = {}
    for mode in ("on", "off"):
        p50, p99 = load(kind, mode)
        med[mode] = statistics.median(p99)
        print(f"| {label} | {mode} | {statistics.median(p50):.3f} | {med[mode]:.3f} | {' '.join(f'{v:.3f}' for v in p99)} |")
    diff[label] = med["on"] - med["off"]
print()
for label, d in diff.items():
    print(f"{label}: p99 with the ledger on minus off = {d:+.3f} ms")
PY
