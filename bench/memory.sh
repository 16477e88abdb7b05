#!/usr/bin/env bash
# Airlock's memory: resident set idle, and with N (default 1,000) concurrent open streams
# (mock upstream, one event a second, so every stream stays open while it is measured).
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
python3 bench/stream_client.py hold "$MOCK_PORT" "$AL_PORT" "$KEY" "${STREAMS:-1000}" "$AIRLOCK_PID"
sleep 1
echo "RSS after the streams closed: $(rss) kB"
