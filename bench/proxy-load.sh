#!/usr/bin/env bash
# Proxy overhead: the same 4 KB chat request against a zero-delay upstream (nginx returning a
# fixed chat completion), directly and through Airlock, in one run.
#
#   scripts/with-keyring.sh bench/proxy-load.sh            # full run (about 2 minutes)
#   QUICK=1 scripts/with-keyring.sh bench/proxy-load.sh    # short smoke run
#
# Added latency (p50, p99) at concurrency 1 and at a fixed open-loop 2,000 requests/s (oha -q
# with latency correction, so queueing does not hide the cost), and the highest rate each side
# sustains. Needs nginx and oha (`cargo install oha`); installs them if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. bench/lib.sh
if [ -n "${QUICK:-}" ]; then N1=2000; DUR=4s; else N1=20000; DUR=15s; fi

start_nginx
start_airlock "http://127.0.0.1:$UP_PORT"
make_body "$WORK/body.json" 4096 0
DIRECT="http://127.0.0.1:$UP_PORT/v1/chat/completions"
VIA="http://127.0.0.1:$AL_PORT/openai/v1/chat/completions"

run warm-direct "$DIRECT" "$WORK/body.json" -n 500 -c 4
run warm-via "$VIA" "$WORK/body.json" -n 500 -c 4
run c1-direct "$DIRECT" "$WORK/body.json" -n "$N1" -c 1
run c1-via "$VIA" "$WORK/body.json" -n "$N1" -c 1
run q2000-direct "$DIRECT" "$WORK/body.json" -z "$DUR" -q 2000 -c 64 --latency-correction
run q2000-via "$VIA" "$WORK/body.json" -z "$DUR" -q 2000 -c 64 --latency-correction
run max-direct "$DIRECT" "$WORK/body.json" -z "$DUR" -c 32
run max-via "$VIA" "$WORK/body.json" -z "$DUR" -c 32

echo "request body: $(wc -c < "$WORK/body.json") bytes; upstream: nginx fixed chat completion; client: oha"
echo
table_header
compare "concurrency 1" c1-direct c1-via
compare "open loop 2,000 req/s" q2000-direct q2000-via
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
rd = json.load(open(f"{w}/max-direct.json"))["summary"]["requestsPerSec"]
rv = json.load(open(f"{w}/max-via.json"))["summary"]["requestsPerSec"]
print(f"\n| highest sustained rate (c=32) | direct | via Airlock | ratio |\n|---|---|---|---|\n| requests/s | {rd:,.0f} | {rv:,.0f} | {rv/rd:.2f} |")
for n in ("q2000-direct", "q2000-via"):
    s = json.load(open(f"{w}/{n}.json"))["summary"]
    print(f"\n{n}: achieved {s['requestsPerSec']:,.0f} req/s, success rate {s['successRate']:.4f}")
PY
