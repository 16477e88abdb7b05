# Shared setup for the proxy benchmarks: a zero-delay nginx upstream, the mock upstream (for
# streams), `airlock serve` (release) pointed at them, and oha runs with JSON output.
# Source it from a script running under scripts/with-keyring.sh.

need() { command -v "$1" >/dev/null 2>&1; }
SUDO=""; [ "$(id -u)" = 0 ] || SUDO=sudo
if ! need nginx && [ ! -x /usr/sbin/nginx ]; then $SUDO apt-get install -y -qq nginx-light >/dev/null; fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
OHA=$(command -v oha || echo "${CARGO_HOME:-$HOME/.cargo}/bin/oha")
[ -x "$OHA" ] || cargo install oha --locked

cargo build --release -q -p airlock -p airlock-e2e
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}/release"
# AIRLOCK_BENCH_BIN measures another build (e.g. an older commit) under the same load.
AIRLOCK="${AIRLOCK_BENCH_BIN:-$TARGET/airlock}"
MOCK="$TARGET/mock-upstream"

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_nginx: a fixed chat completion on $UP_PORT.
start_nginx() {
  UP_PORT=$(free_port)
  local response='{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1000,"completion_tokens":1,"total_tokens":1001}}'
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
  client_body_buffer_size 256k;
  client_max_body_size 4m;
  server {
    listen 127.0.0.1:$UP_PORT;
    location / { default_type application/json; return 200 '$response'; }
  }
}
CONF
  "$NGINX" -c "$WORK/nginx.conf" -p "$WORK"
}

# start_mock: the mock upstream (streams with real gaps) on $MOCK_PORT.
start_mock() {
  "$MOCK" --listen 127.0.0.1:0 > "$WORK/mock.out" 2>/dev/null &
  PIDS+=($!)
  for _ in $(seq 50); do grep -q "listening on" "$WORK/mock.out" 2>/dev/null && break; sleep 0.1; done
  MOCK_PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/mock.out" | head -1)
}

# start_airlock UPSTREAM_URL [extra TOML]: sets $AL_PORT, $KEY, $AIRLOCK_PID. Set AL_NAME to run
# more than one instance (each gets its own data dir and config).
start_airlock() {
  local name=${AL_NAME:-data}
  export AIRLOCK_DATA_DIR="$WORK/$name" AIRLOCK_CONFIG="$WORK/$name.toml" AIRLOCK_LOG=warn
  printf 'listen = "127.0.0.1:0"\nkeyring_service = "airlock-bench-%s"\n%s\n[providers.openai]\nupstream = "%s"\n' \
    "$$" "${2:-}" "$1" > "$AIRLOCK_CONFIG"
  echo "sk-bench-not-a-real-key-000000000000" | "$AIRLOCK" keys set openai >/dev/null
  KEY=$("$AIRLOCK" keys issue "bench-$RANDOM" 2>/dev/null)
  "$AIRLOCK" serve > "$WORK/$name.out" 2> "$WORK/$name.err" &
  AIRLOCK_PID=$!
  PIDS+=("$AIRLOCK_PID")
  for _ in $(seq 50); do grep -q "listening on" "$WORK/$name.out" 2>/dev/null && break; sleep 0.1; done
  AL_PORT=$(sed -n 's/.*listening on http:\/\/127.0.0.1:\([0-9]*\).*/\1/p' "$WORK/$name.out" | head -1)
}

# run NAME URL BODYFILE oha-args...: writes $WORK/NAME.json
run() {
  local name=$1 url=$2 body=$3; shift 3
  "$OHA" --no-tui --output-format json -m POST -H "content-type: application/json" \
    -H "authorization: Bearer $KEY" -D "$body" "$@" "$url" > "$WORK/$name.json"
}

# compare LABEL DIRECT VIA: one markdown row of p50/p99 and the added latency.
compare() {
  python3 - "$WORK/$2.json" "$WORK/$3.json" "$1" <<'PY'
import json, sys
d, v, label = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3]
ms = lambda x, p: x["latencyPercentiles"][p] * 1000
bad = {k: n for x in (d, v) for k, n in x.get("statusCodeDistribution", {}).items() if k != "200"}
r = [ms(d, "p50"), ms(d, "p99"), ms(v, "p50"), ms(v, "p99")]
note = f" ⚠ non-200: {bad}" if bad else ""
print(f"| {label} | {r[0]:.3f} | {r[1]:.3f} | {r[2]:.3f} | {r[3]:.3f} | {r[2]-r[0]:+.3f} | {r[3]-r[1]:+.3f} |{note}")
PY
}

table_header() {
  echo "| scenario | direct p50 ms | direct p99 ms | via Airlock p50 ms | via Airlock p99 ms | added p50 ms | added p99 ms |"
  echo "|---|---|---|---|---|---|---|"
}

# make_body FILE BYTES WITH_FINDINGS: a chat request of about BYTES, optionally holding an email,
# a card number and an AWS key id, built at run time (no credential is committed).
make_body() {
  python3 - "$1" "$2" "$3" <<'PY'
import json, random, sys
path, size, findings = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "1"
words = "please review this function and suggest clearer names better error handling and tests".split()
rng = random.Random(7)
text = ""
while len(text) < size - 200:
    text += rng.choice(words) + " "
if findings:
    def luhn_complete(prefix):
        digits = [int(c) for c in prefix]
        for check in range(10):
            s, alt = 0, False
            for d in reversed(digits + [check]):
                if alt:
                    d = d * 2 - 9 if d * 2 > 9 else d * 2
                s += d; alt = not alt
            if s % 10 == 0:
                return prefix + str(check)
    card = luhn_complete("4111" + "".join(rng.choice("0123456789") for _ in range(11)))
    key = "AKIA" + "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567") for _ in range(16))
    mail = "@".join(["grace.hopper", "navy-example.org"])  # joined at run time: no address in the file
    text = f"mail {mail} card {card} key {key} " + text
body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}]}
open(path, "w").write(json.dumps(body))
PY
}
