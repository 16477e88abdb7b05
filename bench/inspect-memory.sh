#!/usr/bin/env bash
# What inspecting number-heavy prompts leaves in Airlock's resident set. The regex engines keep
# the lazy-DFA states they build (per rule, and up to 16 MB for the digit rules' shared
# automaton), one cache per thread that scanned at the same time as another, for the server's
# life. Three kinds of 200 KB prompt, in turn: prose, a CSV table of numbers, and random digit
# groups with separators (the worst case found for that automaton).
#
#   scripts/with-keyring.sh bench/inspect-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
. bench/lib.sh
start_nginx
start_airlock "http://127.0.0.1:$UP_PORT"
rss() { awk '/VmRSS/ {print $2}' "/proc/$AIRLOCK_PID/status"; }
make_body "$WORK/body-prose.json" 200000 0
python3 - "$WORK" <<'PY'
import json, random, sys
work = sys.argv[1]
rng = random.Random(3)
def body(name, text):
    msg = {"role": "user", "content": "Summarise this:\n" + text[:200_000]}
    json.dump({"model": "gpt-4o-mini", "messages": [msg]}, open(f"{work}/body-{name}.json", "w"))
rows = ["date,time,order_id,customer_id,amount,qty,lat,lon,latency_ms,status"]
while sum(map(len, rows)) < 210_000:
    rows.append(f"2025-{rng.randint(1,12):02}-{rng.randint(1,28):02},{rng.randint(0,23):02}:{rng.randint(0,59):02}:"
                f"{rng.randint(0,59):02},{rng.randint(10**7,10**9)},{rng.randint(1000,99999)},{rng.uniform(1,5000):.2f},"
                f"{rng.randint(1,20)},{rng.uniform(-90,90):.6f},{rng.uniform(-180,180):.6f},{rng.uniform(0.1,900):.1f},ok")
body("table", "\n".join(rows))
words = "the model ip host call phone card iban ssn id version at port tel no date".split()
seps = [" ", "-", ".", "/", " ", ":", "", "(", ")", ", "]
out = []
while sum(map(len, out)) < 210_000:
    parts = []
    for _ in range(rng.randint(3, 12)):
        if rng.random() < 0.4:
            parts.append(rng.choice(words))
        else:
            groups = ["".join(rng.choice("0123456789") for _ in range(rng.randint(1, 5))) for _ in range(rng.randint(1, 6))]
            parts.append(rng.choice(seps).join(groups))
    out.append(" ".join(parts))
body("digits", "\n".join(out))
PY
url="http://127.0.0.1:$AL_PORT/openai/v1/chat/completions"
sleep 1
echo "idle RSS: $(rss) kB"
for kind in prose table digits; do
  run "$kind-4" "$url" "$WORK/body-$kind.json" -n 200 -c 4
  run "$kind-16" "$url" "$WORK/body-$kind.json" -n 400 -c 16
  p50=$(python3 -c 'import json,sys; x=json.load(open(sys.argv[1])); assert list(x["statusCodeDistribution"]) == ["200"], x["statusCodeDistribution"]; print(round(x["latencyPercentiles"]["p50"]*1000, 1))' "$WORK/$kind-16.json")
  echo "after 600 $kind prompts (200 at c=4, 400 at c=16; p50 at c=16 $p50 ms): $(rss) kB"
done
