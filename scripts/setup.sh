#!/usr/bin/env bash
# Install what building, running and testing Airlock needs on Debian 12, and nothing that is
# already there. Idempotent and quick on a machine that has everything.
#
#   scripts/setup.sh run    # toolchain checks + system packages to build and run airlock
#   scripts/setup.sh test   # also the test packages, .venv (tests/py) and tests/node/node_modules
set -euo pipefail

mode="${1:-test}"
repo="$(cd "$(dirname "$0")/.." && pwd)"
cd "$repo"

say() { printf 'setup: %s\n' "$*" >&2; }

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

# --- disk space --------------------------------------------------------------------------
# A full build and test run (target/, .venv, node_modules, the tests' temporary directories)
# takes a few GB; running out part-way fails tests with "No space left on device" far from the
# cause, so say so up front.
want_gib=$([ "$mode" = test ] && echo 4 || echo 2)
seen=""
for dir in "${CARGO_TARGET_DIR:-$repo}" "${TMPDIR:-/tmp}"; do
    # A directory not made yet will be made on its nearest existing parent's filesystem.
    while [ ! -e "$dir" ] && [ "$dir" != / ]; do dir="$(dirname "$dir")"; done
    # df -P: "filesystem blocks used available capacity mountpoint", one line each.
    read -r kib mnt < <(df -Pk "$dir" 2>/dev/null | awk 'NR == 2 { print $4, $6 }') || continue
    case " $seen " in *" $mnt "*) continue ;; esac
    seen="$seen $mnt"
    if [ "$kib" -lt $((want_gib * 1024 * 1024)) ]; then
        say "warning: only $((kib / 1024)) MiB free on $mnt (holding $dir);" \
            "building and testing may need about $want_gib GiB"
    fi
done

# --- apt packages, only the missing ones ---------------------------------------------------
need_pkgs=(build-essential pkg-config libdbus-1-dev ca-certificates git procps
           dbus-daemon gnome-keyring)
if [ "$mode" = test ]; then
    need_pkgs+=(libsecret-tools dbus-x11)
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    [ "$mode" = test ] && need_pkgs+=(nodejs npm)
fi
if [ "$mode" = test ] && ! command -v python3 >/dev/null 2>&1; then
    need_pkgs+=(python3 python3-venv)
fi

missing=()
for p in "${need_pkgs[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$p")
    fi
done
if [ "${#missing[@]}" -gt 0 ]; then
    if ! command -v apt-get >/dev/null 2>&1; then
        say "missing packages (${missing[*]}) and no apt-get: install them by hand"
        exit 1
    fi
    say "installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# --- Rust toolchain (rust-version in Cargo.toml) -------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found: install Rust >= 1.85 with rustup (https://rustup.rs), then rerun"
    exit 1
fi
if [ "$mode" = test ]; then
    for comp in rustfmt clippy; do
        if ! cargo "${comp/rustfmt/fmt}" --version >/dev/null 2>&1; then
            if command -v rustup >/dev/null 2>&1; then
                say "adding rustup component $comp"
                rustup component add "$comp"
            else
                say "cargo $comp is missing and there is no rustup to add it"
                exit 1
            fi
        fi
    done
fi

[ "$mode" = test ] || exit 0

# --- Python venv for tests/py ---------------------------------------------------------------
req="tests/py/requirements.txt"
stamp=".venv/.requirements.sha256"
want="$(sha256sum "$req" | cut -d' ' -f1)"
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    if [ ! -x .venv/bin/python ]; then
        say "creating .venv"
        if ! python3 -m venv .venv; then
            say "python3 -m venv failed; installing python3-venv"
            as_root apt-get update -qq
            as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv
            python3 -m venv .venv
        fi
    fi
    say "installing $req into .venv"
    .venv/bin/python -m pip install -q --disable-pip-version-check -r "$req"
    echo "$want" > "$stamp"
fi

# --- Node modules for tests/node ------------------------------------------------------------
lock="tests/node/package-lock.json"
nstamp="tests/node/node_modules/.package-lock.sha256"
nwant="$(sha256sum "$lock" | cut -d' ' -f1)"
if [ "$(cat "$nstamp" 2>/dev/null)" != "$nwant" ]; then
    say "npm ci in tests/node"
    (cd tests/node && npm ci --no-audit --no-fund --loglevel=error)
    echo "$nwant" > "$nstamp"
fi
say "ok"
