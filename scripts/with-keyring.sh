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
    exec dbus-run-session --config-file="$(dirname "$0")/session-bus.conf" -- bash "$0" "$@"
fi
unset _AIRLOCK_KEYRING_INNER

keyring_home="$(mktemp -d "${TMPDIR:-/tmp}/airlock-keyring.XXXXXX")"

keyring_env=(HOME="$keyring_home" XDG_DATA_HOME="$keyring_home/.local/share"
             XDG_CONFIG_HOME="$keyring_home/.config" XDG_CACHE_HOME="$keyring_home/.cache")
# gnome-keyring-daemon can abort under many short-lived clients (an upstream race in its
# session handling: "gkd_secret_service_get_pkcs11_session: assertion 'client' failed"), which
# a test suite that starts hundreds of processes does now and then. So it runs under a loop that
# starts it again, unlocked, on the same throwaway keyring (the secrets stored so far are kept).
# The bus starts nothing on demand (session-bus.conf), so no locked second daemon gets in first.
(
    while :; do
        status=0
        printf 'throwaway' | env "${keyring_env[@]}" \
            gnome-keyring-daemon --foreground --unlock --components=secrets \
            >>"$keyring_home/daemon.out" 2>>"$keyring_home/daemon.err" || status=$?
        [ -e "$keyring_home/stop" ] && exit 0
        echo "with-keyring: gnome-keyring-daemon exited (status $status); starting it again" >&2
        sleep 0.05
    done
) &
supervisor=$!
cleanup() {
    touch "$keyring_home/stop"
    kill "$supervisor" 2>/dev/null || true
    rm -rf "$keyring_home"
}
trap cleanup EXIT

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
    echo "with-keyring: the Secret Service did not come up; gnome-keyring-daemon said:" >&2
    cat "$keyring_home/daemon.out" "$keyring_home/daemon.err" >&2
    exit 1
fi
secret-tool clear "$probe_attr" 1 || true

export AIRLOCK_KEYRING_READY=1
set +e
"$@"
status=$?
exit "$status"
