#!/usr/bin/env bash
# Tear down what tests/env/up.sh started: the registry process and its
# storage dir, and dockerd only if up.sh started it. Safe to call repeatedly;
# does nothing when no state file exists.
#
# Usage: tests/env/down.sh
# Optional environment: XTASK_TEST_ENV_DIR (must match the one given to up.sh)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE_DIR=${XTASK_TEST_ENV_DIR:-$REPO_ROOT/target/test-env}
ENV_FILE=$STATE_DIR/env.sh

log() { printf '[test-env] %s\n' "$*" >&2; }

if [ ! -f "$ENV_FILE" ]; then
    log "nothing to stop ($ENV_FILE not found)"
    exit 0
fi

exec 9>"$STATE_DIR/.lock"
flock 9
[ -f "$ENV_FILE" ] || { log "nothing to stop"; exit 0; }

# shellcheck disable=SC1090
. "$ENV_FILE"

pid_is() {
    local pid=$1 name=$2 exe
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    [ "${exe##*/}" = "$name" ]
}

# alive PID: process exists and is not a zombie (an exited daemon stays a
# zombie until init reaps it, which can take a while).
alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# stop PID NAME TIMEOUT_S: SIGTERM, wait, then SIGKILL.
stop() {
    local pid=$1 name=$2 timeout=$3 i
    pid_is "$pid" "$name" || { log "$name (pid ${pid:-?}) not running"; return 0; }
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for (( i = 0; i < timeout * 10; i++ )); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "$name (pid $pid) still running after ${timeout}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    for (( i = 0; i < 50; i++ )); do
        alive "$pid" || return 0
        sleep 0.1
    done
    log "WARNING: $name (pid $pid) did not exit"
    return 1
}

rc=0
stop "${XTASK_TEST_REGISTRY_PID:-}" docker-registry 15 || rc=1
case ${XTASK_TEST_REGISTRY_DIR:-} in
    /tmp/xtask-test-registry.*) rm -rf "$XTASK_TEST_REGISTRY_DIR"; log "removed $XTASK_TEST_REGISTRY_DIR" ;;
    "") ;;
    *) log "WARNING: not removing unexpected registry dir '$XTASK_TEST_REGISTRY_DIR'" ;;
esac

if [ "${XTASK_TEST_ENV_STARTED_DOCKERD:-0}" = 1 ]; then
    # The containerd that dockerd spawned is stopped by dockerd itself;
    # look it up first in case dockerd has to be killed.
    containerd_pid=$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null || true)
    stop "${XTASK_TEST_DOCKERD_PID:-}" dockerd 60 || rc=1
    if pid_is "$containerd_pid" containerd; then
        stop "$containerd_pid" containerd 15 || rc=1
    fi
else
    log "leaving docker daemon alone (not started by up.sh)"
fi

rm -f "$ENV_FILE"
log "down"
exit "$rc"
