#!/usr/bin/env bash
# Tear down what tests/env/up.sh started: the registry process and its
# storage dir, the remote dockerd (with its containerd and socat proxies)
# and its data/exec dirs, and the main dockerd only if up.sh started it.
# Safe to call repeatedly; does nothing when no state file exists. Kept on
# purpose: the base images, the cached arm64 .deb under the state dir, and
# the qemu-aarch64 binfmt_misc handler.
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

# Only what the state file says counts: drop XTASK_TEST_* variables the
# caller may have exported (e.g. from sourcing an env.sh) before reading it.
unset "${!XTASK_TEST_@}"
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

# umount_under DIR: unmount everything mounted below DIR (and DIR itself),
# deepest first. dockerd leaves its data root bind-mounted onto itself.
umount_under() {
    local m
    awk -v d="$1" '$2 == d || index($2, d "/") == 1 { print $2 }' /proc/self/mounts |
        sort -r | while IFS= read -r m; do
            umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || log "WARNING: cannot unmount $m"
        done
}

rc=0

# Remote dockerd: its containerd is started (and normally stopped) by it;
# look that up first in case dockerd has to be killed.
remote_dir=${XTASK_TEST_REMOTE_DOCKERD_DIR:-}
case $remote_dir in
    /tmp/xtask-test-remote-docker.*) ;;
    "") ;;
    *) log "WARNING: not touching unexpected remote dockerd dir '$remote_dir'"; remote_dir="" ;;
esac
remote_containerd_pid=""
[ -z "$remote_dir" ] || remote_containerd_pid=$(cat "$remote_dir/exec/containerd/containerd.pid" 2>/dev/null || true)
for p in ${XTASK_TEST_REMOTE_PROXY_PID:-} ${XTASK_TEST_REMOTE_REGISTRY_PROXY_PIDS:-}; do
    stop "$p" socat 5 || rc=1
done
if [ -n "${XTASK_TEST_REMOTE_DOCKERD_PID:-}" ]; then
    stop "$XTASK_TEST_REMOTE_DOCKERD_PID" dockerd 60 || rc=1
fi
if pid_is "$remote_containerd_pid" containerd; then
    stop "$remote_containerd_pid" containerd 15 || rc=1
fi
if [ -n "$remote_dir" ] && [ -d "$remote_dir" ]; then
    umount_under "$remote_dir"
    if rm -rf "$remote_dir"; then log "removed $remote_dir"; else rc=1; fi
fi
for d in /sys/fs/cgroup/*/xtask-test-remote-docker /sys/fs/cgroup/xtask-test-remote-docker; do
    if [ -d "$d" ]; then rmdir "$d" 2>/dev/null || true; fi
done

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

rm -f "$ENV_FILE" "$STATE_DIR/skopeo-verified"
log "down"
exit "$rc"
