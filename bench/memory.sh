#!/usr/bin/env bash
# Airlock's memory: resident set idle, and with N (default 1,000) concurrent open streams
# (mock upstream, one event a second, so every stream stays open while it is measured), twice.
#
#   scripts/with-keyring.sh bench/memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
# 1,000 streams need 2,000 sockets in Airlock and 1,000 in each of the client and the mock.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
. bench/lib.sh
start_mock
start_airlock "http://127.0.0.1:$MOCK_PORT"
rss() { awk '/VmRSS/ {print $2}' "/proc/$AIRLOCK_PID/status"; }
sleep 1
echo "idle RSS: $(rss) kB"
# Twice: the client cuts every stream at the end of a round, so the second round runs after 1,000
# cut-stream estimates (counted in the token-counter child, not in the server).
for round in $(seq "${ROUNDS:-2}"); do
  echo "round $round:"
  python3 bench/stream_client.py hold "$MOCK_PORT" "$AL_PORT" "$KEY" "${STREAMS:-1000}" "$AIRLOCK_PID"
  sleep 2
  echo "RSS after the streams were cut: $(rss) kB"
done
helper=$(pgrep -P "$AIRLOCK_PID" -f __count-tokens || true)
[ -n "$helper" ] && echo "token-counter child RSS (exits after 30 s idle): $(awk '/VmRSS/ {print $2}' "/proc/$helper/status") kB"
