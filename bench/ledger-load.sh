#!/usr/bin/env bash
# The ledger's cost on the request path: the same build run twice side by side, once with the
# ledger on (the default) and once with `[ledger] enabled = false`, under the same load, in
# interleaved rounds (in alternating order) so drift on a shared machine hits both alike.
#
#   scripts/with-keyring.sh bench/ledger-load.sh            # 5 rounds (about 3 minutes)
#   ROUNDS=2 DUR=5s scripts/with-keyring.sh bench/ledger-load.sh
#   BEFORE=<another airlock binary> scripts/with-keyring.sh bench/ledger-load.sh
#
# Each round: concurrency 1 (N1 requests) and an open-loop 2,000 requests/s run (oha -q with
# latency correction, DUR long), against nginx returning a fixed chat completion. All
# instances meter every response (usage, prices, budgets); only the ledger differs. BEFORE adds
# a third instance, ledger on, running that binary (an older commit's build, say), in the same
# rounds, so a change to the ledger is measured against what it replaces and against off at once.
set -euo pipefail
[ -n "${BEFORE:-}" ] && BEFORE=$(realpath "$BEFORE")
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. bench/lib.sh
ROUNDS=${ROUNDS:-5}
N1=${N1:-5000}
DUR=${DUR:-15s}

start_nginx
make_body "$WORK/body.json" 4096 0
MODES=(on off)
[ -n "${BEFORE:-}" ] && MODES=(before on off)
declare -A PORT KEYS SERVER TOKEN
for mode in "${MODES[@]}"; do
  extra=""
  [ "$mode" = off ] && extra=$'[ledger]\nenabled = false'
  bin=$AIRLOCK
  [ "$mode" = before ] && bin=$BEFORE
  AIRLOCK=$bin AL_NAME="ledger-$mode" start_airlock "http://127.0.0.1:$UP_PORT" "$extra"
  PORT[$mode]=$AL_PORT
  KEYS[$mode]=$KEY
  SERVER[$mode]=$AIRLOCK_PID
  TOKEN[$mode]=$("$bin" admin-token)
done
# An admin read commits the ledger's backlog before it answers: each instance's turn ends with
# one, so rows the writer left for a quiet spell are not committed during the next instance's
# turn, at its expense.
commit_backlog() {
  curl -sf -o /dev/null -H "authorization: Bearer ${TOKEN[$1]}" \
    "http://127.0.0.1:${PORT[$1]}/_airlock/requests?limit=1"
}
# The ledger writer threads' CPU time (utime + stime, in clock ticks) over the whole run.
writer_tid() { for t in /proc/"$1"/task/*; do if grep -q '^airlock-ledger' "$t/comm"; then basename "$t"; fi; done; }
writer_ticks() { awk '{print $14 + $15}' "/proc/$1/task/$2/stat"; }
declare -A WRITER TICKS0
for mode in "${MODES[@]}"; do
  [ "$mode" = off ] && continue
  WRITER[$mode]=$(writer_tid "${SERVER[$mode]}")
  if [ -z "${WRITER[$mode]}" ]; then
    echo "no ledger writer thread in the '$mode' instance (pid ${SERVER[$mode]}); its log:" >&2
    cat "$WORK/ledger-$mode.err" >&2
    exit 1
  fi
  TICKS0[$mode]=$(writer_ticks "${SERVER[$mode]}" "${WRITER[$mode]}")
done
for r in $(seq "$ROUNDS"); do
  # The instances take turns in one order in odd rounds and the reverse in even ones, so
  # whatever drifts within a round (the host, the first instance's warm caches) does not
  # always favour the same one.
  order=("${MODES[@]}")
  if (( r % 2 == 0 )); then
    order=(); for (( i=${#MODES[@]}-1; i>=0; i-- )); do order+=("${MODES[$i]}"); done
  fi
  for mode in "${order[@]}"; do
    KEY=${KEYS[$mode]}
    url="http://127.0.0.1:${PORT[$mode]}/openai/v1/chat/completions"
    run "warm-$mode" "$url" "$WORK/body.json" -n 500 -c 4
    run "c1-$mode-$r" "$url" "$WORK/body.json" -n "$N1" -c 1
    run "q-$mode-$r" "$url" "$WORK/body.json" -z "$DUR" -q 2000 -c 64 --latency-correction
    commit_backlog "$mode"
  done
done
sleep 1
: > "$WORK/writers"
for mode in "${MODES[@]}"; do
  [ "$mode" = off ] && continue
  ticks=$(( $(writer_ticks "${SERVER[$mode]}" "${WRITER[$mode]}") - TICKS0[$mode] ))
  rows=$(python3 -c 'import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute("select count(*) from requests").fetchone()[0])' "$WORK/ledger-$mode/airlock.db")
  echo "$mode $ticks $rows" >> "$WORK/writers"
done
python3 - "$WORK" "$ROUNDS" "$(getconf CLK_TCK)" "${MODES[@]}" <<'PY'
import json, statistics, sys
w, rounds, hz, modes = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
def load(kind, mode):
    xs = [json.load(open(f"{w}/{kind}-{mode}-{r}.json")) for r in range(1, rounds + 1)]
    for x in xs:
        bad = {k: n for k, n in x.get("statusCodeDistribution", {}).items() if k != "200"}
        assert not bad, f"non-200 answers in {kind}-{mode}: {bad}"
    return [x["latencyPercentiles"]["p50"] * 1000 for x in xs], [x["latencyPercentiles"]["p99"] * 1000 for x in xs]
print(f"rounds: {rounds}")
for line in open(f"{w}/writers"):
    mode, ticks, rows = line.split()
    secs = int(ticks) / hz
    per_row = f"{secs * 1e6 / int(rows):.1f} us a row" if int(rows) else "no rows"
    print(f"ledger {mode}: {rows} rows in the database; writer thread CPU {secs:.2f} s, {per_row}")
print()
print("| load | ledger | p50 ms (median of rounds) | p99 ms (median of rounds) | p99 per round |")
print("|---|---|---|---|---|")
diff = {}
for kind, label in (("c1", "concurrency 1"), ("q", "open loop 2,000 req/s")):
    med = {}
    for mode in modes:
        p50, p99 = load(kind, mode)
        med[mode] = statistics.median(p99)
        print(f"| {label} | {mode} | {statistics.median(p50):.3f} | {med[mode]:.3f} | {' '.join(f'{v:.3f}' for v in p99)} |")
    diff[label] = {m: med[m] - med["off"] for m in modes if m != "off"}
print()
for label, d in diff.items():
    for m, v in d.items():
        print(f"{label}: p99 with the ledger {m} minus off = {v:+.3f} ms")
# Paired by round (the instances take turns within a round, so a slow spell of the host
# hits both): how often the ledger's p99 was the higher one, and the one-sided sign-test
# p-value of that count under "the ledger makes no difference" (each round a coin toss;
# rounds with no difference are left out, as the sign test does).
from math import comb
print()
for kind, label in (("c1", "concurrency 1"), ("q", "open loop 2,000 req/s")):
    off = load(kind, "off")[1]
    for m in modes:
        if m == "off":
            continue
        d = [a - b for a, b in zip(load(kind, m)[1], off)]
        higher = sum(x > 0 for x in d)
        n = sum(x != 0 for x in d)
        p = sum(comb(n, k) for k in range(higher, n + 1)) / 2 ** n
        print(f"{label}: {m} minus off per round {' '.join(f'{x:+.3f}' for x in d)}; "
              f"higher in {higher} of {n} that differ (sign test p = {p:.3f})")
PY
