#!/usr/bin/env bash
# Start a LocalStack S3 on this machine without Docker (host mode, from PyPI).
#
# Idempotent: if S3 already answers healthy on the port, only prints the endpoint.
# On success prints exactly one line on stdout: the endpoint URL, e.g.
#   http://127.0.0.1:4566
# Everything else (pip output, progress, errors) goes to stderr.
#
# Env:
#   MAIF_LOCALSTACK_PORT     port to listen on (default 4566, bound to 127.0.0.1)
#   MAIF_LOCALSTACK_TIMEOUT  seconds to wait for health after launch (default 120;
#                            does not include the one-time venv install)
#   MAIF_LOCALSTACK_PYTHON   interpreter used to create the venv (default python3)
set -euo pipefail

HERE="$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd -P)"
VENV="$HERE/.venv"
STATE="$HERE/.state"
REQS="$HERE/requirements.txt"
STAMP="$VENV/.requirements.sha256"
LOG="$STATE/localstack.log"
PIDFILE="$STATE/localstack.pid"
PORTFILE="$STATE/localstack.port"
LOCK="$STATE/start.lock"

PORT="${MAIF_LOCALSTACK_PORT:-4566}"
TIMEOUT="${MAIF_LOCALSTACK_TIMEOUT:-120}"
BASE_PYTHON="${MAIF_LOCALSTACK_PYTHON:-python3}"
HOST=127.0.0.1
ENDPOINT="http://$HOST:$PORT"

log() { printf 'localstack/start.sh: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case "$PORT" in ''|*[!0-9]*) die "MAIF_LOCALSTACK_PORT must be a number, got '$PORT'";; esac
case "$TIMEOUT" in ''|*[!0-9]*) die "MAIF_LOCALSTACK_TIMEOUT must be whole seconds, got '$TIMEOUT'";; esac

# Exit 0 iff the LocalStack health endpoint reports s3 as available/running.
# Uses only the Python standard library, so it works before the venv exists.
s3_healthy() {
    "$BASE_PYTHON" - "$ENDPOINT/_localstack/health" <<'PY' >/dev/null 2>&1
import json, sys, urllib.request
try:
    with urllib.request.urlopen(sys.argv[1], timeout=2) as r:
        status = json.load(r).get("services", {}).get("s3")
except Exception:
    sys.exit(1)
sys.exit(0 if status in ("available", "running") else 1)
PY
}

# Pid from the pid file if that process is alive and is our LocalStack.
running_pid() {
    local pid
    [[ -f "$PIDFILE" ]] || return 1
    pid="$(cat "$PIDFILE" 2>/dev/null || true)"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'localstack.runtime.main' || return 1
    printf '%s\n' "$pid"
}

# Exit 0 iff something accepts TCP connections on $HOST:$PORT.
port_in_use() {
    "$BASE_PYTHON" - "$HOST" "$PORT" <<'PY' >/dev/null 2>&1
import socket, sys
s = socket.socket()
s.settimeout(1)
sys.exit(0 if s.connect_ex((sys.argv[1], int(sys.argv[2]))) == 0 else 1)
PY
}

log_tail() {
    if [[ -f "$LOG" ]]; then
        log "last 50 lines of $LOG:"
        tail -n 50 "$LOG" >&2 || true
    else
        log "no log file at $LOG"
    fi
}

# Fast path: already healthy (started by us or by anyone else, e.g. docker compose).
if s3_healthy; then
    echo "$ENDPOINT"
    exit 0
fi

mkdir -p "$STATE"

# Serialize concurrent callers (e.g. several test processes at once).
exec 9>"$LOCK"
if ! flock -w "$((TIMEOUT + 1800))" 9; then
    die "could not acquire $LOCK"
fi
# Someone may have finished starting it while we waited for the lock.
if s3_healthy; then
    echo "$ENDPOINT"
    exit 0
fi

# --- venv (created once; reinstalled when requirements.txt changes) ---
want_sum="$(sha256sum "$REQS" | cut -d' ' -f1)"
have_sum="$(cat "$STAMP" 2>/dev/null || true)"
if [[ ! -x "$VENV/bin/python" || "$want_sum" != "$have_sum" ]]; then
    if [[ ! -x "$VENV/bin/python" ]]; then
        log "creating venv at $VENV"
        "$BASE_PYTHON" -m venv "$VENV" >&2 || die "python -m venv failed"
    fi
    log "installing pinned packages from $REQS (first run: about a minute)"
    rm -f "$STAMP"
    "$VENV/bin/python" -m pip install --no-input --disable-pip-version-check \
        -r "$REQS" >&2 || die "pip install failed"
    printf '%s\n' "$want_sum" >"$STAMP"
    log "venv ready"
fi

# --- launch (unless our process is already up and just not healthy yet) ---
if pid="$(running_pid)"; then
    old_port="$(cat "$PORTFILE" 2>/dev/null || true)"
    if [[ -n "$old_port" && "$old_port" != "$PORT" ]]; then
        die "the LocalStack of this checkout (pid $pid) listens on port $old_port, not $PORT; run $HERE/stop.sh first"
    fi
    log "LocalStack already running (pid $pid), waiting for health"
else
    if port_in_use; then
        die "port $PORT on $HOST is taken by something that is not a healthy LocalStack S3 (set MAIF_LOCALSTACK_PORT to use another port)"
    fi
    rm -f "$PIDFILE"
    printf '%s\n' "$PORT" >"$PORTFILE"
    mkdir -p "$STATE/fs" "$STATE/tmp" "$STATE/home" "$STATE/config"
    log "starting LocalStack S3 on $ENDPOINT (log: $LOG)"
    # Keep the previous run's log as localstack.log.1; start a fresh one.
    [[ -f "$LOG" ]] && mv -f "$LOG" "$LOG.1"
    printf '===== %s start.sh: launching LocalStack on %s =====\n' "$(date -Is)" "$ENDPOINT" >"$LOG"
    # Keep every file LocalStack writes under .state:
    #  - OVERRIDE_IN_DOCKER=0: this machine has /.dockerenv, which would make LocalStack
    #    use container paths (/var/lib/localstack, /usr/lib/localstack, /etc/localstack);
    #    in host mode all its directories live under FILESYSTEM_ROOT instead.
    #  - TMPDIR: S3 objects > 512 KiB spill into mkdtemp() dirs (LocalStack logs a
    #    harmless "TMPDIR is deprecated" warning for this).
    #  - HOME: plux caches entry points in ~/.cache/plux.
    #  - CONFIG_DIR: no ~/.localstack/*.env profile of the user gets loaded.
    # setsid: own session/process group, so stop.sh can signal the whole group
    # and the server survives the caller's terminal/test harness exiting.
    # The inner shell writes its own pid, then execs python (same pid).
    # 9>&-: the server must not inherit (and so keep holding) the start lock.
    env \
        RUNTIME_COMPONENTS=aws \
        SERVICES=s3 \
        GATEWAY_LISTEN="$HOST:$PORT" \
        LOCALSTACK_HOST="$HOST:$PORT" \
        PERSISTENCE=0 \
        DNS_ADDRESS=0 \
        DISABLE_EVENTS=1 \
        SKIP_SSL_CERT_DOWNLOAD=1 \
        OVERRIDE_IN_DOCKER=0 \
        FILESYSTEM_ROOT="$STATE/fs" \
        TMPDIR="$STATE/tmp" \
        HOME="$STATE/home" \
        CONFIG_DIR="$STATE/config" \
        PIDFILE="$PIDFILE" \
        PY="$VENV/bin/python" \
        nohup setsid bash -c 'echo $$ >"$PIDFILE"; unset PIDFILE; exec "$PY" -m localstack.runtime.main' \
        </dev/null >>"$LOG" 2>&1 9>&- &
    disown "$!" 2>/dev/null || true
    # Wait briefly for the pid file to appear.
    for _ in $(seq 1 50); do
        [[ -s "$PIDFILE" ]] && break
        sleep 0.1
    done
fi

# --- wait for health ---
deadline=$((SECONDS + TIMEOUT))
while :; do
    if s3_healthy; then
        log "S3 healthy at $ENDPOINT (pid $(cat "$PIDFILE" 2>/dev/null || echo '?'))"
        echo "$ENDPOINT"
        exit 0
    fi
    if ! running_pid >/dev/null; then
        log "LocalStack process exited before becoming healthy"
        log_tail
        rm -f "$PIDFILE"
        exit 1
    fi
    # LocalStack does not exit when it cannot bind the port; it just never gets healthy.
    if grep -q -e 'CannotListenError' -e 'Address already in use' "$LOG" 2>/dev/null; then
        log "LocalStack could not listen on $HOST:$PORT"
        log_tail
        MAIF_LOCALSTACK_STOP_TIMEOUT=3 "$HERE/stop.sh" || true
        exit 1
    fi
    if ((SECONDS >= deadline)); then
        log "timed out after ${TIMEOUT}s waiting for $ENDPOINT/_localstack/health (process left running; run stop.sh)"
        log_tail
        exit 1
    fi
    sleep 0.5
done
