#!/usr/bin/env bash
# Inspection overhead: 4 KB and 64 KB chat prompts, with and without findings (an email, a card
# number and an AWS key id, generated at run time), directly against nginx and through Airlock,
# at concurrency 1 and at a fixed open-loop 2,000 requests/s.
#
#   scripts/with-keyring.sh bench/inspect-load.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. bench/lib.sh
if [ -n "${QUICK:-}" ]; then N1=1000; DUR=4s; else N1=5000; DUR=10s; fi

start_nginx
start_airlock "http://127.0.0.1:$UP_PORT"
DIRECT="http://127.0.0.1:$UP_PORT/v1/chat/completions"
VIA="http://127.0.0.1:$AL_PORT/openai/v1/chat/completions"
for size in 4096 65536; do
  for f in 0 1; do make_body "$WORK/b-$size-$f.json" "$size" "$f"; done
done
run warm "$VIA" "$WORK/b-4096-1.json" -n 500 -c 4

table_header
for size in 4096 65536; do
  for f in 0 1; do
    label="$((size / 1024)) KB, $([ "$f" = 1 ] && echo "3 findings" || echo "clean")"
    run "d-$size-$f" "$DIRECT" "$WORK/b-$size-$f.json" -n "$N1" -c 1
    run "v-$size-$f" "$VIA" "$WORK/b-$size-$f.json" -n "$N1" -c 1
    compare "$label, c=1" "d-$size-$f" "v-$size-$f"
  done
done
for f in 0 1; do
  run "qd-$f" "$DIRECT" "$WORK/b-4096-$f.json" -z "$DUR" -q 2000 -c 64 --latency-correction
  run "qv-$f" "$VIA" "$WORK/b-4096-$f.json" -z "$DUR" -q 2000 -c 64 --latency-correction
  compare "4 KB, $([ "$f" = 1 ] && echo "3 findings" || echo "clean"), 2,000 req/s" "qd-$f" "qv-$f"
done
