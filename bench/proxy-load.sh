#!/usr/bin/env bash
# Proxy overhead benchmark: the same 4 KB chat request against a zero-delay upstream (nginx
# returning a fixed chat completion), called directly and through Airlock, in one run.
#
#   scripts/with-keyring.sh bench/proxy-load.sh            # full run (about 2 minutes)
#   QUICK=1 scripts/with-keyring.sh bench/proxy-load.sh    # short smoke run
#
# Reports added latency (p50, p99) at concurrency 1, at a fixed open-loop 2,000 requests/s
# (oha -q with latency correction, so queueing does not hide the cost), and the highest rate
# each sustains. Needs nginx and oha (`cargo install oha`); installs them if missing.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

need() { command -v "$1" >/dev/null 2>&1; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! need nginx; then $SUDO apt-get install -y -qq nginx-light >/dev/null; fi
OHA=$(command -v oha || echo "${CARGO_HOME:-$HOME/.cargo}/bin/oha")
[ -x "$OHA" ] || cargo install oha --locked
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

if [ -n "${QUICK:-}" ]; then N1=2000; DUR=4s; else N1=20000; DUR=15s; fi

cargo build --release -q -p airlock
AIRLOCK="${CARGO_TARGET_DIR:-$ROOT/target}/release/airlock"

WORK=$(mktemp -d)
cleanup() {
  [ -n "${AIRLOCK_PID:-}" ] && kill "$AIRLOCK_PID" 2>/dev/null || true
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port)

# --- zero-delay upstream
RESPONSE='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":1,"total_tokens":1001}}'
mkdir -p "$WORK/nginx"
cat > "$WORK/nginx.conf" <<CONF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
daemon on;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $WORK/nginx;
  proxy_temp_path $WORK/nginx;
  fastcgi_temp_path $WORK/nginx;
  uwsgi_temp_path $WORK/nginx;
  scgi_temp_path $WORK/nginx;
  keepalive_requests 1000000;
  client_body_buffer_size 128k;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { default_type application/json; return 200 '$RESPONSE'; }
  }
}
CONF
"$NGINX" -c "$WORK/nginx.conf" -p "$WORK"

# --- airlock pointed at it
export AIRLOCK_DATA_DIR="$WORK/data" AIRLOCK_CONFIG="$WORK/airlock.toml" AIRLOCK_LOG=warn
cat > "$AIRLOCK_CONFIG" <<CONF
listen = "127.0.0.1:0"
keyring_service = "airlock-bench-$$"
[providers.openai]
upstream = "http://127.0.0.1:$UP_PORT"
CONF
echo "sk-bench-not-a-real-key-000000000000" | "$AIRLOCK" keys set openai >/dev/null
KEY=$("$AIRLOCK" keys issue bench 2>/dev/null)
"$AIRLOCK" serve > "$WORK/serve.out" 2> "$WORK/serve.err" &
AIRLOCK_PID=$!
for _ in $(seq 50); do grep -q "listening on" "$WORK/serve.out" 2>/dev/null && break; sleep 0.1; done
AL_PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/serve.out" | head -1)

# --- a 4 KB chat request
python3 - "$WORK/body.json" <<'PY'
import json, sys
text = ("Please review this function and suggest improvements to naming and error handling. " * 60)[:3900]
body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
open(sys.argv[1], "w").write(json.dumps(body))
PY
BODY_BYTES=$(wc -c < "$WORK/body.json")

DIRECT="http://127.0.0.1:$UP_PORT/v1/chat/completions"
VIA="http://127.0.0.1:$AL_PORT/openai/v1/chat/completions"
run() { # name url extra-args...
  local name=$1 url=$2; shift 2
  "$OHA" --no-tui --output-format json -m POST -H "content-type: application/json" \
    -H "authorization: Bearer $KEY" -D "$WORK/body.json" "$@" "$url" > "$WORK/$name.json"
}
# Warm both paths (connection pools, page cache) before measuring.
run warm-direct "$DIRECT" -n 500 -c 4
run warm-via "$VIA" -n 500 -c 4

run c1-direct "$DIRECT" -n "$N1" -c 1
run c1-via "$VIA" -n "$N1" -c 1
run q2000-direct "$DIRECT" -z "$DUR" -q 2000 -c 64 --latency-correction
run q2000-via "$VIA" -z "$DUR" -q 2000 -c 64 --latency-correction
run max-direct "$DIRECT" -z "$DUR" -c 32
run max-via "$VIA" -z "$DUR" -c 32

python3 - "$WORK" "$BODY_BYTES" <<'PY'
import json, sys
work, body = sys.argv[1], sys.argv[2]
def load(n):
    return json.load(open(f"{work}/{n}.json"))
def ms(d, p):
    return d["latencyPercentiles"][p] * 1000
def codes(d):
    return d.get("statusCodeDistribution", {})
print(f"request body: {body} bytes; upstream: nginx fixed chat completion; client: oha")
print()
print("| scenario | direct p50 | direct p99 | via Airlock p50 | via Airlock p99 | added p50 | added p99 |")
print("|---|---|---|---|---|---|---|")
for name, label in [("c1", "concurrency 1"), ("q2000", "open loop 2,000 req/s")]:
    d, v = load(f"{name}-direct"), load(f"{name}-via")
    row = [ms(d, "p50"), ms(d, "p99"), ms(v, "p50"), ms(v, "p99")]
    print(f"| {label} | {row[0]:.3f} ms | {row[1]:.3f} ms | {row[2]:.3f} ms | {row[3]:.3f} ms | {row[2]-row[0]:+.3f} ms | {row[3]-row[1]:+.3f} ms |")
    for side, data in (("direct", d), ("via", v)):
        non200 = {k: n for k, n in codes(data).items() if k != "200"}
        if non200:
            print(f"|  ⚠ {label} {side}: non-200 responses {non200} | | | | | | |")
d, v = load("max-direct"), load("max-via")
rd, rv = d["summary"]["requestsPerSec"], v["summary"]["requestsPerSec"]
print()
print(f"| highest sustained rate (c=32) | direct | via Airlock | ratio |")
print(f"|---|---|---|---|")
print(f"| requests/s | {rd:,.0f} | {rv:,.0f} | {rv/rd:.2f} |")
for name in ("q2000-direct", "q2000-via"):
    s = load(name)["summary"]
    print(f"\n{name}: achieved {s['requestsPerSec']:,.0f} req/s, success rate {s['successRate']:.4f}")
PY
