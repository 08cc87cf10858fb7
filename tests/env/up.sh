#!/usr/bin/env bash
# Bring up the container test environment (idempotent):
#   * installs the needed Debian packages when missing,
#   * starts dockerd when no daemon answers,
#   * starts a plain-HTTP registry on a free 127.0.0.1 port,
#   * builds the hermetic base image xtask-test/busybox:latest (host arch)
#     into docker and, unless XTASK_TEST_PODMAN=0, into podman,
#   * writes target/test-env/env.sh, to be sourced by tests and read by down.sh.
#
# Usage: tests/env/up.sh            (must run as root)
#        . target/test-env/env.sh
#
# Optional environment:
#   XTASK_TEST_ENV_DIR       state dir (default: <repo>/target/test-env)
#   XTASK_TEST_DOCKERD_ARGS  extra arguments for dockerd when it is started here
#   XTASK_TEST_PODMAN=0      skip podman setup/verification
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE_DIR=${XTASK_TEST_ENV_DIR:-$REPO_ROOT/target/test-env}
ENV_FILE=$STATE_DIR/env.sh
BASE_IMAGE=xtask-test/busybox:latest
PACKAGES=(docker.io docker-registry podman qemu-user-static busybox-static)
DOCKERD_PIDFILE=/var/run/docker.pid
DOCKERD_TIMEOUT=60
REGISTRY_TIMEOUT=30
WANT_PODMAN=${XTASK_TEST_PODMAN:-1}
PODMAN_CONF_DROPIN=/etc/containers/containers.conf.d/50-xtask-test-ulimits.conf

log() { printf '[test-env] %s\n' "$*" >&2; }
die() { printf '[test-env] ERROR: %s\n' "$*" >&2; exit 1; }
now_ms() { date +%s%3N; }
T0=$(now_ms)

[ "$(id -u)" = 0 ] || die "must run as root (installs packages, starts dockerd)"

mkdir -p "$STATE_DIR"
# Serialise concurrent up/down calls. Daemons started below get fd 9 closed
# so that they do not keep holding the lock.
exec 9>"$STATE_DIR/.lock"
flock 9

# ---------------------------------------------------------------- previous state
PREV_STARTED_DOCKERD=0 PREV_DOCKERD_PID="" PREV_REGISTRY_PID="" PREV_REGISTRY_DIR="" PREV_REGISTRY=""
# shellcheck disable=SC1090
if [ -f "$ENV_FILE" ]; then
    PREV_STARTED_DOCKERD=$(. "$ENV_FILE"; echo "${XTASK_TEST_ENV_STARTED_DOCKERD:-0}")
    PREV_DOCKERD_PID=$(. "$ENV_FILE"; echo "${XTASK_TEST_DOCKERD_PID:-}")
    PREV_REGISTRY_PID=$(. "$ENV_FILE"; echo "${XTASK_TEST_REGISTRY_PID:-}")
    PREV_REGISTRY_DIR=$(. "$ENV_FILE"; echo "${XTASK_TEST_REGISTRY_DIR:-}")
    PREV_REGISTRY=$(. "$ENV_FILE"; echo "${XTASK_TEST_REGISTRY:-}")
fi

# alive PID: process exists and is not a zombie.
alive() {
    local stat
    kill -0 "$1" 2>/dev/null || return 1
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    stat=${stat##*) }
    [ "${stat%% *}" != Z ]
}

# pid_is PID NAME: PID is alive and its executable's basename is NAME.
pid_is() {
    local pid=$1 name=$2 exe
    [ -n "$pid" ] && alive "$pid" || return 1
    exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
    [ "${exe##*/}" = "$name" ]
}

# ---------------------------------------------------------------- packages
pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}
missing=()
for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
command -v curl >/dev/null || missing+=(curl)
command -v flock >/dev/null || missing+=(util-linux)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y "${missing[@]}" >&2
else
    log "packages present"
fi
command -v docker >/dev/null || die "no docker client on PATH"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (package busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; the busybox-static package must provide it"
fi

# ---------------------------------------------------------------- dockerd
STARTED_DOCKERD=0
DOCKERD_PID=""
DOCKERD_LOG=$STATE_DIR/dockerd.log

wait_docker() { # wait_docker PID: wait until `docker info` answers while PID lives
    local pid=$1 deadline=$(( $(date +%s) + DOCKERD_TIMEOUT ))
    while ! docker info >/dev/null 2>&1; do
        if ! alive "$pid"; then
            log "dockerd (pid $pid) exited; last lines of $DOCKERD_LOG:"
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "dockerd failed to start"
        fi
        if [ "$(date +%s)" -ge "$deadline" ]; then
            log "dockerd (pid $pid) not answering after ${DOCKERD_TIMEOUT}s; last lines of $DOCKERD_LOG:"
            tail -n 30 "$DOCKERD_LOG" >&2 || true
            die "dockerd did not become ready"
        fi
        sleep 0.2
    done
}

running_pid=$(cat "$DOCKERD_PIDFILE" 2>/dev/null || true)
if [ "$PREV_STARTED_DOCKERD" = 1 ] && pid_is "$PREV_DOCKERD_PID" dockerd; then
    # Started by an earlier up.sh and still alive: keep ownership.
    STARTED_DOCKERD=1
    DOCKERD_PID=$PREV_DOCKERD_PID
    wait_docker "$DOCKERD_PID"
    log "dockerd already running (pid $DOCKERD_PID, started by up.sh)"
elif docker info >/dev/null 2>&1; then
    log "using already running docker daemon"
elif pid_is "$running_pid" dockerd; then
    # A daemon not started by us is still coming up.
    log "waiting for already running dockerd (pid $running_pid)"
    wait_docker "$running_pid"
else
    log "starting dockerd (log: $DOCKERD_LOG)"
    # shellcheck disable=SC2086
    setsid dockerd --pidfile "$DOCKERD_PIDFILE" ${XTASK_TEST_DOCKERD_ARGS:-} \
        </dev/null >"$DOCKERD_LOG" 2>&1 9>&- &
    launched=$!
    wait_docker "$launched"
    DOCKERD_PID=$(cat "$DOCKERD_PIDFILE" 2>/dev/null || echo "$launched")
    pid_is "$DOCKERD_PID" dockerd || die "cannot determine pid of started dockerd"
    STARTED_DOCKERD=1
    log "dockerd ready (pid $DOCKERD_PID)"
fi
PLATFORM=$(docker version -f '{{.Server.Os}}/{{.Server.Arch}}')

# ---------------------------------------------------------------- registry
REGISTRY_PID="" REGISTRY_DIR="" REGISTRY=""
REGISTRY_LOG=$STATE_DIR/registry.log

registry_ok() { curl -fsS -o /dev/null --max-time 2 "http://$1/v2/" 2>/dev/null; }

if pid_is "$PREV_REGISTRY_PID" docker-registry && registry_ok "$PREV_REGISTRY"; then
    REGISTRY_PID=$PREV_REGISTRY_PID REGISTRY_DIR=$PREV_REGISTRY_DIR REGISTRY=$PREV_REGISTRY
    log "registry already running at $REGISTRY (pid $REGISTRY_PID)"
else
    # Leftovers of a registry started by an earlier up.sh.
    if pid_is "$PREV_REGISTRY_PID" docker-registry; then
        kill "$PREV_REGISTRY_PID" 2>/dev/null || true
        for _ in $(seq 50); do alive "$PREV_REGISTRY_PID" || break; sleep 0.1; done
        kill -9 "$PREV_REGISTRY_PID" 2>/dev/null || true
    fi
    case $PREV_REGISTRY_DIR in /tmp/xtask-test-registry.*) rm -rf "$PREV_REGISTRY_DIR" ;; esac

    free_port() {
        if command -v python3 >/dev/null; then
            python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
        else
            local p
            while :; do
                p=$(( 20000 + RANDOM % 20000 ))
                (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null || { echo "$p"; return; }
            done
        fi
    }

    REGISTRY_DIR=$(mktemp -d /tmp/xtask-test-registry.XXXXXX)
    mkdir -p "$REGISTRY_DIR/data"
    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        cat >"$REGISTRY_DIR/config.yml" <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: false
storage:
  filesystem:
    rootdirectory: $REGISTRY_DIR/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
        log "starting registry on 127.0.0.1:$port (storage: $REGISTRY_DIR/data)"
        setsid docker-registry serve "$REGISTRY_DIR/config.yml" </dev/null >"$REGISTRY_LOG" 2>&1 9>&- &
        pid=$!
        deadline=$(( $(date +%s) + REGISTRY_TIMEOUT ))
        while alive "$pid" && ! registry_ok "127.0.0.1:$port"; do
            [ "$(date +%s)" -lt "$deadline" ] || break
            sleep 0.1
        done
        if alive "$pid" && registry_ok "127.0.0.1:$port"; then
            pid_is "$pid" docker-registry || die "unexpected registry process (pid $pid)"
            REGISTRY_PID=$pid REGISTRY=127.0.0.1:$port
            break
        fi
        kill "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
        log "registry attempt $attempt failed; last lines of $REGISTRY_LOG:"
        tail -n 10 "$REGISTRY_LOG" >&2 || true
    done
    if [ -z "$REGISTRY_PID" ]; then
        rm -rf "$REGISTRY_DIR"
        die "could not start docker-registry"
    fi
    log "registry ready at $REGISTRY (pid $REGISTRY_PID)"
fi

# ---------------------------------------------------------------- base image
# Reproducible rootfs: fixed mtimes/owners/order, so rebuilds hit the cache.
# The context is regenerated only when busybox or this recipe changes.
CTX=$STATE_DIR/base-image
ROOTFS_RECIPE=1
stamp="recipe=$ROOTFS_RECIPE busybox=$(sha256sum "$BUSYBOX" | cut -d' ' -f1)"
if [ "$(cat "$CTX/stamp" 2>/dev/null)" != "$stamp" ] || [ ! -f "$CTX/rootfs.tar" ] || [ ! -f "$CTX/Dockerfile" ]; then
    log "creating base image rootfs from $BUSYBOX"
    rm -rf "$CTX"
    mkdir -p "$CTX/rootfs"
    (
        cd "$CTX/rootfs"
        mkdir -p bin sbin usr/bin usr/sbin etc root tmp
        chmod 1777 tmp
        chmod 700 root
        cp "$BUSYBOX" bin/busybox
        chmod 755 bin/busybox
        if applets=$("$BUSYBOX" --list-full 2>/dev/null); then :; else
            applets=$("$BUSYBOX" --list | sed 's|^|bin/|')
        fi
        while IFS= read -r a; do
            case $a in ""|*/busybox|linuxrc) continue ;; esac
            [ -d "${a%/*}" ] || mkdir -p "${a%/*}"
            [ -e "$a" ] || ln -s /bin/busybox "$a"
        done <<<"$applets"
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >etc/passwd
        printf 'root:x:0:\nnogroup:x:65534:\n' >etc/group
    )
    tar -C "$CTX/rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$CTX/rootfs.tar" .
    rm -rf "$CTX/rootfs"
    cat >"$CTX/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
CMD ["sh"]
EOF
    printf 'stamp\n' >"$CTX/.dockerignore"
    printf '%s\n' "$stamp" >"$CTX/stamp"
fi

# Without buildx the docker CLI falls back to the legacy builder, but only
# if DOCKER_BUILDKIT does not ask for BuildKit.
if docker buildx version >/dev/null 2>&1; then build_env=(); else build_env=(DOCKER_BUILDKIT=0); fi
log "building $BASE_IMAGE ($PLATFORM) with docker"
if ! out=$(env "${build_env[@]}" docker build -q -t "$BASE_IMAGE" "$CTX" 2>&1); then
    printf '%s\n' "$out" >&2
    die "docker build of $BASE_IMAGE failed"
fi
out=$(docker run --rm "$BASE_IMAGE" sh -c 'echo ok' 2>&1) || true
[ "$out" = ok ] || { printf '%s\n' "$out" >&2; die "docker run of $BASE_IMAGE failed"; }
log "docker run $BASE_IMAGE: ok"

# ---------------------------------------------------------------- podman
PODMAN_OK=0
if [ "$WANT_PODMAN" != 0 ]; then
    command -v podman >/dev/null || die "podman not found (set XTASK_TEST_PODMAN=0 to skip)"
    log "building $BASE_IMAGE with podman"
    if ! out=$(podman build -q -t "$BASE_IMAGE" "$CTX" 2>&1); then
        printf '%s\n' "$out" >&2
        die "podman build of $BASE_IMAGE failed"
    fi
    out=$(podman run --rm "$BASE_IMAGE" sh -c 'echo ok' 2>&1) || true
    if [ "$out" != ok ] && [ ! -e "$PODMAN_CONF_DROPIN" ] && grep -q 'error setting rlimit' <<<"$out"; then
        # Podman (rootful) asks for nofile/nproc = 1048576 in every container,
        # which fails without CAP_SYS_RESOURCE (e.g. inside a VM sandbox or a
        # container). Podman also caps its own nproc at 32768. Use limits the
        # OCI runtime can actually set.
        nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] && nofile=1048576
        [ "$nofile" -gt 1048576 ] && nofile=1048576
        nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] && nproc=32768
        [ "$nproc" -gt 32768 ] && nproc=32768
        log "podman cannot raise rlimits here; writing $PODMAN_CONF_DROPIN (nofile=$nofile nproc=$nproc)"
        mkdir -p "$(dirname "$PODMAN_CONF_DROPIN")"
        cat >"$PODMAN_CONF_DROPIN" <<EOF
# Written by tests/env/up.sh: rootful podman defaults to nofile/nproc=1048576
# for containers, which the OCI runtime may not set without CAP_SYS_RESOURCE.
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
EOF
        out=$(podman run --rm "$BASE_IMAGE" sh -c 'echo ok' 2>&1) || true
    fi
    [ "$out" = ok ] || { printf '%s\n' "$out" >&2; die "podman run of $BASE_IMAGE failed (set XTASK_TEST_PODMAN=0 to skip)"; }
    PODMAN_OK=1
    log "podman run $BASE_IMAGE: ok"
fi

# ---------------------------------------------------------------- state file
tmp=$(mktemp "$STATE_DIR/.env.sh.XXXXXX")
{
    echo "# Generated by tests/env/up.sh; source it. Removed by tests/env/down.sh."
    for kv in \
        "XTASK_TEST_REGISTRY=$REGISTRY" \
        "XTASK_TEST_BASE_IMAGE=$BASE_IMAGE" \
        "XTASK_TEST_PLATFORM=$PLATFORM" \
        "XTASK_TEST_PODMAN=$PODMAN_OK" \
        "XTASK_TEST_ENV_STARTED_DOCKERD=$STARTED_DOCKERD" \
        "XTASK_TEST_DOCKERD_PID=$DOCKERD_PID" \
        "XTASK_TEST_DOCKERD_LOG=$DOCKERD_LOG" \
        "XTASK_TEST_REGISTRY_PID=$REGISTRY_PID" \
        "XTASK_TEST_REGISTRY_DIR=$REGISTRY_DIR" \
        "XTASK_TEST_REGISTRY_LOG=$REGISTRY_LOG"; do
        printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
    done
} >"$tmp"
chmod 644 "$tmp"
mv -f "$tmp" "$ENV_FILE"
log "wrote $ENV_FILE (up in $(( $(now_ms) - T0 )) ms)"
