#!/usr/bin/env bash
# Streaming through Airlock: time to first byte and the gap between chunks, against the mock
# upstream sending SSE events with a fixed gap, called directly and through Airlock.
#
#   scripts/with-keyring.sh bench/stream-latency.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. bench/lib.sh
start_mock
start_airlock "http://127.0.0.1:$MOCK_PORT"
python3 bench/stream_client.py latency "$MOCK_PORT" "$AL_PORT" "$KEY" "${STREAMS:-60}"
