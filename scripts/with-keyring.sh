#!/usr/bin/env bash
# Run a command with a working, unlocked Secret Service (gnome-keyring) on a private D-Bus
# session, so `airlock keys …` can store provider keys headless.
#
#   scripts/with-keyring.sh CMD [ARGS…]
#
# - If AIRLOCK_KEYRING_READY=1, a working Secret Service is assumed and CMD just runs.
# - Otherwise CMD runs inside `dbus-run-session`, with gnome-keyring-daemon started with
#   `--unlock --components=secrets` and a throwaway password. The daemon alone gets a throwaway
#   HOME, so it creates and unlocks a fresh `login` collection; CMD keeps the real HOME (cargo,
#   rustup, pyenv and npm live there). The daemon dies with the bus when CMD exits.
set -euo pipefail

if [ "$#" -eq 0 ]; then
    echo "usage: $0 CMD [ARGS...]" >&2
    exit 2
fi

if [ "${AIRLOCK_KEYRING_READY:-}" = "1" ]; then
    exec "$@"
fi

if [ "${_AIRLOCK_KEYRING_INNER:-}" != "1" ]; then
    for tool in dbus-run-session gnome-keyring-daemon secret-tool; do
        if ! command -v "$tool" >/dev/null 2>&1; then
            echo "with-keyring: '$tool' not found; run scripts/setup.sh (apt: dbus-daemon gnome-keyring libsecret-tools)" >&2
            exit 127
        fi
    done
    export _AIRLOCK_KEYRING_INNER=1
    exec dbus-run-session -- bash "$0" "$@"
fi
unset _AIRLOCK_KEYRING_INNER

keyring_home="$(mktemp -d "${TMPDIR:-/tmp}/airlock-keyring.XXXXXX")"
cleanup() { rm -rf "$keyring_home"; }
trap cleanup EXIT

# The daemon prints GNOME_KEYRING_CONTROL=… lines; export them for CMD.
daemon_env="$(printf 'throwaway' | env HOME="$keyring_home" \
    XDG_DATA_HOME="$keyring_home/.local/share" \
    XDG_CONFIG_HOME="$keyring_home/.config" \
    XDG_CACHE_HOME="$keyring_home/.cache" \
    gnome-keyring-daemon --unlock --components=secrets)"
while IFS= read -r line; do
    case "$line" in
        *=*) export "${line?}" ;;
    esac
done <<< "$daemon_env"

# Wait until the Secret Service answers: store and read back a probe secret.
probe_attr="airlock-keyring-probe-$$"
ok=0
for _ in $(seq 1 50); do
    if printf 'probe' | secret-tool store --label="airlock keyring probe" "$probe_attr" 1 2>/dev/null \
        && [ "$(secret-tool lookup "$probe_attr" 1 2>/dev/null)" = "probe" ]; then
        ok=1
        break
    fi
    sleep 0.1
done
if [ "$ok" != 1 ]; then
    echo "with-keyring: the Secret Service did not come up (gnome-keyring-daemon output: $daemon_env)" >&2
    exit 1
fi
secret-tool clear "$probe_attr" 1 || true

export AIRLOCK_KEYRING_READY=1
set +e
"$@"
status=$?
exit "$status"
