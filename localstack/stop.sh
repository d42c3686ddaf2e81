#!/usr/bin/env bash
# Stop the LocalStack started by start.sh (found through .state/localstack.pid).
# Idempotent: exits 0 when nothing is running. Does not touch a LocalStack it did
# not start (e.g. one from docker compose).
#
# Env:
#   MAIF_LOCALSTACK_STOP_TIMEOUT  seconds to wait after SIGTERM before SIGKILL (default 20)
set -euo pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
PIDFILE="$HERE/.state/localstack.pid"
GRACE="${MAIF_LOCALSTACK_STOP_TIMEOUT:-20}"

log() { printf 'localstack/stop.sh: %s\n' "$*" >&2; }

case "$GRACE" in ''|*[!0-9]*) GRACE=20;; esac

if [[ ! -f "$PIDFILE" ]]; then
    log "not running (no pid file)"
    exit 0
fi

pid="$(cat "$PIDFILE" 2>/dev/null || true)"
if ! [[ "$pid" =~ ^[0-9]+$ ]] || ! kill -0 "$pid" 2>/dev/null; then
    log "not running (stale pid file removed)"
    rm -f "$PIDFILE" "$HERE/.state/localstack.port"
    exit 0
fi
# Guard against a recycled pid belonging to some unrelated process.
if ! tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'localstack.runtime.main'; then
    log "pid $pid is not LocalStack (stale pid file removed)"
    rm -f "$PIDFILE" "$HERE/.state/localstack.port"
    exit 0
fi

# start.sh launches via setsid, so the pid is also the process-group id:
# signal the group to reach any helper processes too.
signal() {
    kill "-$1" -- "-$pid" 2>/dev/null || kill "-$1" "$pid" 2>/dev/null || true
}

# Alive and not a zombie (a zombie only waits for its parent to reap it).
alive() {
    kill -0 "$pid" 2>/dev/null || return 1
    local state
    state="$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$pid/status" 2>/dev/null || true)"
    [[ "$state" != "Z" && -n "$state" ]]
}

log "stopping LocalStack (pid $pid)"
signal TERM
deadline=$((SECONDS + GRACE))
while alive && ((SECONDS < deadline)); do
    sleep 0.2
done
if alive; then
    log "still alive after ${GRACE}s, sending SIGKILL"
    signal KILL
    for _ in $(seq 1 50); do
        alive || break
        sleep 0.1
    done
fi
# Leftover group members (if any) get a final SIGKILL.
kill -0 -- "-$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null || true

rm -f "$PIDFILE" "$HERE/.state/localstack.port"
if alive; then
    log "error: pid $pid still alive"
    exit 1
fi

# LocalStack's S3 provider hardcodes /tmp/localstack-s3-storage/<bucket>/ for its
# spill files (which are unlinked right away, so only empty dirs remain). Remove
# the empty dirs, but only when no other LocalStack on this machine may use them.
S3_TMP=/tmp/localstack-s3-storage
if [[ -d "$S3_TMP" ]]; then
    other=0
    for f in /proc/[0-9]*/cmdline; do
        if tr '\0' ' ' <"$f" 2>/dev/null | grep -q 'localstack.runtime.main'; then
            other=1
            break
        fi
    done
    if ((other == 0)); then
        find "$S3_TMP" -depth -type d -empty -delete 2>/dev/null || true
    fi
fi
log "stopped"
