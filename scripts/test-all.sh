#!/usr/bin/env bash
# Run every test suite (Rust workspace, Python SDK tests, Node SDK tests), even after one fails,
# and exit non-zero if any failed. Expects a working Secret Service: run it through
# scripts/with-keyring.sh (`make test` does).
set -uo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

declare -A result
run() {
    local name="$1"
    shift
    printf '\n==== %s: %s\n' "$name" "$*"
    if "$@"; then result[$name]=ok; else result[$name]="FAILED (exit $?)"; fi
}

run rust cargo test --workspace --no-fail-fast
# pytest exits 5 when it collects no test: that counts as a failure here, like any non-zero.
run python .venv/bin/python -m pytest tests/py
run node node --test tests/node

status=0
printf '\n==== summary\n'
for name in rust python node; do
    printf '[test-all] %-7s %s\n' "$name" "${result[$name]}"
    [ "${result[$name]}" = ok ] || status=1
done
exit "$status"
