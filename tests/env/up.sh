#!/usr/bin/env bash
# Bring up the container test environment (idempotent):
#   * installs the needed Debian packages when missing,
#   * starts dockerd when no daemon answers,
#   * starts a plain-HTTP registry on a free 127.0.0.1 port and checks that
#     skopeo can read manifests from it,
#   * starts a second, independent dockerd ("remote daemon") reachable only
#     at tcp://127.0.0.1:<free port>, with its own data/exec roots,
#     containerd and network namespace, and no network setup (no bridge,
#     no iptables),
#   * builds the hermetic base image xtask-test/busybox:latest (host arch)
#     into docker (main and remote daemon) and, unless XTASK_TEST_PODMAN=0,
#     into podman,
#   * unless XTASK_TEST_ARM64=0, builds xtask-test/busybox-arm64:latest
#     (linux/arm64, from Debian's busybox-static:arm64) into docker and
#     podman and checks that it runs under qemu; the qemu-aarch64 binfmt_misc
#     handler is registered for that when missing, and left registered,
#   * puts docker's buildx plugin (Debian trixie's docker-buildx, fetched with
#     a source list of its own so that nothing else is upgraded) in a docker
#     config directory of its own, target/test-env/buildx, and checks that
#     the CLI builds with it there (and only there),
#   * writes target/test-env/env.sh, to be sourced by tests and read by down.sh.
#
# Usage: tests/env/up.sh            (must run as root)
#        . target/test-env/env.sh
#
# Optional environment:
#   XTASK_TEST_ENV_DIR       state dir (default: <repo>/target/test-env)
#   XTASK_TEST_DOCKERD_ARGS  extra arguments for dockerd when it is started here
#   XTASK_TEST_PODMAN=0      skip podman setup/verification
#   XTASK_TEST_ARM64=0       skip the arm64 base image (no qemu, no arm64 .deb)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
STATE_DIR=${XTASK_TEST_ENV_DIR:-$REPO_ROOT/target/test-env}
ENV_FILE=$STATE_DIR/env.sh
BASE_IMAGE=xtask-test/busybox:latest
BASE_IMAGE_ARM64=xtask-test/busybox-arm64:latest
PACKAGES=(docker.io docker-registry podman skopeo socat qemu-user-static busybox-static apache2-utils)
DOCKERD_PIDFILE=/var/run/docker.pid
DOCKERD_TIMEOUT=60
REGISTRY_TIMEOUT=30
WANT_PODMAN=${XTASK_TEST_PODMAN:-1}
WANT_ARM64=${XTASK_TEST_ARM64:-1}
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
PREV_REMOTE_PID="" PREV_REMOTE_DIR="" PREV_REMOTE_HOST="" PREV_REMOTE_PROXY_PID=""
PREV_REMOTE_REGISTRY_PROXY_PIDS="" PREV_REMOTE_REGISTRY_PROXY_TARGET=""
# prev VAR [DEFAULT]: VAR as set by $ENV_FILE alone. XTASK_TEST_* variables
# exported by the caller (e.g. from sourcing an env.sh) must not leak in
# for ones the file does not set.
prev() {
    # shellcheck disable=SC1090
    (unset "${!XTASK_TEST_@}"; . "$ENV_FILE"; printf '%s' "${!1:-${2:-}}")
}
if [ -f "$ENV_FILE" ]; then
    PREV_STARTED_DOCKERD=$(prev XTASK_TEST_ENV_STARTED_DOCKERD 0)
    PREV_DOCKERD_PID=$(prev XTASK_TEST_DOCKERD_PID)
    PREV_REGISTRY_PID=$(prev XTASK_TEST_REGISTRY_PID)
    PREV_REGISTRY_DIR=$(prev XTASK_TEST_REGISTRY_DIR)
    PREV_REGISTRY=$(prev XTASK_TEST_REGISTRY)
    PREV_REMOTE_PID=$(prev XTASK_TEST_REMOTE_DOCKERD_PID)
    PREV_REMOTE_DIR=$(prev XTASK_TEST_REMOTE_DOCKERD_DIR)
    PREV_REMOTE_HOST=$(prev XTASK_TEST_REMOTE_DOCKER_HOST)
    PREV_REMOTE_PROXY_PID=$(prev XTASK_TEST_REMOTE_PROXY_PID)
    PREV_REMOTE_REGISTRY_PROXY_PIDS=$(prev XTASK_TEST_REMOTE_REGISTRY_PROXY_PIDS)
    PREV_REMOTE_REGISTRY_PROXY_TARGET=$(prev XTASK_TEST_REMOTE_REGISTRY_PROXY_TARGET)
fi

# Current state, written to $ENV_FILE at the end (or by on_exit on failure).
LAUNCHED=0   # set once this run has started a daemon
STARTED_DOCKERD=0 DOCKERD_PID="" PLATFORM=""
REGISTRY_PID="" REGISTRY_DIR="" REGISTRY=""
REMOTE_PID="" REMOTE_DIR="" REMOTE_HOST="" REMOTE_PROXY_PID=""
REMOTE_REGISTRY_PROXY_PIDS="" REMOTE_REGISTRY_PROXY_TARGET=""
PODMAN_OK=0 ARM64_OK=0 BUILDX_CONFIG=""
DOCKERD_LOG=$STATE_DIR/dockerd.log
REGISTRY_LOG=$STATE_DIR/registry.log
REMOTE_LOG=$STATE_DIR/remote-dockerd.log

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

# stop_pid PID NAME TIMEOUT_S: SIGTERM, wait, then SIGKILL (only if PID is NAME).
stop_pid() {
    local pid=$1 name=$2 timeout=$3 i
    pid_is "$pid" "$name" || return 0
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
    die "$name (pid $pid) did not exit"
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

# write_env FILE [NOTE]: the state file that tests source and down.sh reads.
write_env() {
    local file=$1 note=${2:-} tmp kv
    tmp=$(mktemp "$STATE_DIR/.env.sh.XXXXXX")
    {
        echo "# Generated by tests/env/up.sh; source it. Removed by tests/env/down.sh."
        [ -z "$note" ] || echo "# $note"
        for kv in \
            "XTASK_TEST_REGISTRY=$REGISTRY" \
            "XTASK_TEST_BASE_IMAGE=$BASE_IMAGE" \
            "XTASK_TEST_BASE_IMAGE_ARM64=$([ "$ARM64_OK" = 1 ] && echo "$BASE_IMAGE_ARM64")" \
            "XTASK_TEST_REMOTE_DOCKER_HOST=$REMOTE_HOST" \
            "XTASK_TEST_PLATFORM=$PLATFORM" \
            "XTASK_TEST_PODMAN=$PODMAN_OK" \
            "XTASK_TEST_ENV_STARTED_DOCKERD=$STARTED_DOCKERD" \
            "XTASK_TEST_DOCKERD_PID=$DOCKERD_PID" \
            "XTASK_TEST_DOCKERD_LOG=$DOCKERD_LOG" \
            "XTASK_TEST_REGISTRY_PID=$REGISTRY_PID" \
            "XTASK_TEST_REGISTRY_DIR=$REGISTRY_DIR" \
            "XTASK_TEST_REGISTRY_LOG=$REGISTRY_LOG" \
            "XTASK_TEST_REMOTE_DOCKERD_PID=$REMOTE_PID" \
            "XTASK_TEST_REMOTE_DOCKERD_DIR=$REMOTE_DIR" \
            "XTASK_TEST_REMOTE_DOCKERD_LOG=$REMOTE_LOG" \
            "XTASK_TEST_REMOTE_PROXY_PID=$REMOTE_PROXY_PID" \
            "XTASK_TEST_REMOTE_REGISTRY_PROXY_PIDS=$REMOTE_REGISTRY_PROXY_PIDS" \
            "XTASK_TEST_REMOTE_REGISTRY_PROXY_TARGET=$REMOTE_REGISTRY_PROXY_TARGET" \
            "XTASK_TEST_BUILDX_CONFIG=$BUILDX_CONFIG"; do
            printf 'export %s=%q\n' "${kv%%=*}" "${kv#*=}"
        done
    } >"$tmp"
    chmod 644 "$tmp"
    mv -f "$tmp" "$file"
}

# on_exit: when up.sh fails after starting a daemon, still record what runs
# (falling back to the previous state for parts not reached), so that
# down.sh or the next up.sh can stop it.
on_exit() {
    local rc=$?
    [ "$rc" != 0 ] && [ "$LAUNCHED" = 1 ] || return 0
    if [ -z "$DOCKERD_PID" ] && [ "$PREV_STARTED_DOCKERD" = 1 ]; then
        STARTED_DOCKERD=1 DOCKERD_PID=$PREV_DOCKERD_PID
    fi
    [ -n "$REGISTRY_PID" ] || REGISTRY_PID=$PREV_REGISTRY_PID REGISTRY_DIR=$PREV_REGISTRY_DIR REGISTRY=$PREV_REGISTRY
    if [ -z "$REMOTE_PID" ]; then
        REMOTE_PID=$PREV_REMOTE_PID REMOTE_DIR=$PREV_REMOTE_DIR REMOTE_HOST=$PREV_REMOTE_HOST
        REMOTE_PROXY_PID=$PREV_REMOTE_PROXY_PID REMOTE_REGISTRY_PROXY_PIDS=$PREV_REMOTE_REGISTRY_PROXY_PIDS
    fi
    PODMAN_OK=0 ARM64_OK=0
    write_env "$ENV_FILE" "up.sh failed (exit $rc); only the daemons below are meaningful." || true
    log "recorded the started daemons in $ENV_FILE for down.sh"
}

trap on_exit EXIT

# ---------------------------------------------------------------- packages
pkg_installed() {
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null)" = installed ]
}
missing=()
for p in "${PACKAGES[@]}"; do pkg_installed "$p" || missing+=("$p"); done
command -v curl >/dev/null || missing+=(curl)
command -v flock >/dev/null || missing+=(util-linux)
command -v unshare >/dev/null || missing+=(util-linux)
command -v ip >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2
    apt-get install -y "${missing[@]}" >&2
else
    log "packages present"
fi
command -v docker >/dev/null || die "no docker client on PATH"
command -v skopeo >/dev/null || die "no skopeo on PATH"
command -v socat >/dev/null || die "no socat on PATH"
BUSYBOX=/bin/busybox
[ -x "$BUSYBOX" ] || die "$BUSYBOX missing (package busybox-static)"
if ldd "$BUSYBOX" >/dev/null 2>&1; then
    die "$BUSYBOX is dynamically linked; the busybox-static package must provide it"
fi

# ---------------------------------------------------------------- dockerd

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
    STARTED_DOCKERD=1 DOCKERD_PID=$launched LAUNCHED=1
    wait_docker "$launched"
    DOCKERD_PID=$(cat "$DOCKERD_PIDFILE" 2>/dev/null || echo "$launched")
    pid_is "$DOCKERD_PID" dockerd || die "cannot determine pid of started dockerd"
    STARTED_DOCKERD=1
    log "dockerd ready (pid $DOCKERD_PID)"
fi
PLATFORM=$(docker version -f '{{.Server.Os}}/{{.Server.Arch}}')

# ---------------------------------------------------------------- registry

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
            REGISTRY_PID=$pid REGISTRY=127.0.0.1:$port LAUNCHED=1
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

# ---------------------------------------------------------------- base images
# Reproducible rootfs: fixed mtimes/owners/order, so rebuilds hit the cache.
# A context is regenerated only when its busybox or this recipe changes.
ROOTFS_RECIPE=1

# make_base_ctx CTX BUSYBOX [RUNNER...]: (re)create the build context of a
# busybox-only image. RUNNER, if given, runs BUSYBOX to list its applets
# (qemu for a foreign binary).
make_base_ctx() {
    local ctx=$1 bb=$2 stamp applets a
    shift 2
    stamp="recipe=$ROOTFS_RECIPE busybox=$(sha256sum "$bb" | cut -d' ' -f1)"
    if [ "$(cat "$ctx/stamp" 2>/dev/null)" = "$stamp" ] && [ -f "$ctx/rootfs.tar" ] && [ -f "$ctx/Dockerfile" ]; then
        return 0
    fi
    log "creating base image rootfs from $bb"
    if applets=$("$@" "$bb" --list-full 2>/dev/null); then :; else
        applets=$("$@" "$bb" --list | sed 's|^|bin/|') || die "cannot list the applets of $bb"
    fi
    [ -n "$applets" ] || die "no applets listed by $bb"
    rm -rf "$ctx"
    mkdir -p "$ctx/rootfs"
    (
        cd "$ctx/rootfs"
        mkdir -p bin sbin usr/bin usr/sbin etc root tmp
        chmod 1777 tmp
        chmod 700 root
        cp "$bb" bin/busybox
        chmod 755 bin/busybox
        while IFS= read -r a; do
            case $a in ""|*/busybox|linuxrc) continue ;; esac
            [ -d "${a%/*}" ] || mkdir -p "${a%/*}"
            [ -e "$a" ] || ln -s /bin/busybox "$a"
        done <<<"$applets"
        printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >etc/passwd
        printf 'root:x:0:\nnogroup:x:65534:\n' >etc/group
    )
    tar -C "$ctx/rootfs" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$ctx/rootfs.tar" .
    rm -rf "$ctx/rootfs"
    cat >"$ctx/Dockerfile" <<'EOF'
FROM scratch
ADD rootfs.tar /
ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin
CMD ["sh"]
EOF
    printf 'stamp\n' >"$ctx/.dockerignore"
    printf '%s\n' "$stamp" >"$ctx/stamp"
}

CTX=$STATE_DIR/base-image
make_base_ctx "$CTX" "$BUSYBOX"

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

# ---------------------------------------------------------------- remote dockerd
# A second daemon that shares no state with the main one: own data root,
# exec root (hence its own containerd, started by it), pid file, daemon
# config and key, containerd namespace and cgroup parent.
#
# It runs in its own network namespace: with --bridge=none dockerd deletes
# any interface named docker0 at startup, which in the host namespace would
# be the main daemon's bridge. There it listens on a unix socket in its own
# dir only; socat makes that available as tcp://127.0.0.1:<free port>, and
# forwards the registry's loopback port into the namespace, so that the
# remote daemon reaches the registry at the same address as everything else.
REMOTE_PREFIX=/tmp/xtask-test-remote-docker.
REMOTE_PROXY_LOG=$STATE_DIR/remote-proxy.log

# rdocker ARGS...: the docker CLI talking to the remote daemon only.
rdocker() {
    env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH DOCKER_HOST="$REMOTE_HOST" "${build_env[@]}" docker "$@"
}
remote_ok() { # remote_ok DOCKER_HOST
    env -u DOCKER_CONTEXT -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH DOCKER_HOST="$1" \
        timeout 10 docker version -f '{{.Server.Version}}' >/dev/null 2>&1
}
# stop_remote DOCKERD_PID DIR PROXY_PIDS: stop the proxies, the remote
# dockerd and its containerd, and remove DIR.
stop_remote() {
    local pid=$1 dir=$2 proxies=$3 cpid="" p
    case $dir in "$REMOTE_PREFIX"*) ;; *) dir="" ;; esac
    for p in $proxies; do stop_pid "$p" socat 5; done
    [ -z "$dir" ] || cpid=$(cat "$dir/exec/containerd/containerd.pid" 2>/dev/null || true)
    if pid_is "$pid" dockerd; then
        log "stopping remote dockerd (pid $pid)"
        stop_pid "$pid" dockerd 30
    fi
    stop_pid "$cpid" containerd 15
    if [ -n "$dir" ] && [ -d "$dir" ]; then
        umount_under "$dir"
        rm -rf "$dir"
    fi
}
# start_socat NS_PID ARGS...: start socat (in the network namespace of
# NS_PID if given), print its pid. -t: after EOF in one direction, keep
# relaying the other one (socat's default gives up after 0.5s). Listeners
# use backlog=128 (socat's default is 5) for parallel test clients.
start_socat() {
    local ns=$1 pid
    shift
    if [ -n "$ns" ]; then
        setsid nsenter "--net=/proc/$ns/ns/net" socat -t 3600 "$@" </dev/null >>"$REMOTE_PROXY_LOG" 2>&1 9>&- &
    else
        setsid socat -t 3600 "$@" </dev/null >>"$REMOTE_PROXY_LOG" 2>&1 9>&- &
    fi
    pid=$!
    echo "$pid"
}
# start_registry_proxy: make $REGISTRY reachable inside the remote daemon's
# network namespace; sets REMOTE_REGISTRY_PROXY_PIDS and _TARGET.
start_registry_proxy() {
    local sock=$REMOTE_DIR/registry.sock host_pid ns_pid i
    host_pid=$(start_socat "" "UNIX-LISTEN:$sock,fork,unlink-early,mode=600,backlog=128" "TCP:$REGISTRY")
    for (( i = 0; i < 50; i++ )); do [ -S "$sock" ] && break; alive "$host_pid" || break; sleep 0.1; done
    ns_pid=$(start_socat "$REMOTE_PID" "TCP-LISTEN:${REGISTRY##*:},bind=127.0.0.1,reuseaddr,fork,backlog=128" "UNIX-CONNECT:$sock")
    REMOTE_REGISTRY_PROXY_PIDS="$host_pid $ns_pid" REMOTE_REGISTRY_PROXY_TARGET=$REGISTRY
    for (( i = 0; i < 50; i++ )); do
        if nsenter "--net=/proc/$REMOTE_PID/ns/net" curl -fsS -o /dev/null --max-time 2 "http://$REGISTRY/v2/" 2>/dev/null; then
            return 0
        fi
        if ! alive "$host_pid" || ! alive "$ns_pid"; then break; fi
        sleep 0.1
    done
    tail -n 5 "$REMOTE_PROXY_LOG" >&2 || true
    die "registry $REGISTRY not reachable from the remote dockerd's network namespace"
}

if pid_is "$PREV_REMOTE_PID" dockerd && pid_is "$PREV_REMOTE_PROXY_PID" socat &&
    [ -n "$PREV_REMOTE_HOST" ] && remote_ok "$PREV_REMOTE_HOST"; then
    REMOTE_PID=$PREV_REMOTE_PID REMOTE_DIR=$PREV_REMOTE_DIR REMOTE_HOST=$PREV_REMOTE_HOST
    REMOTE_PROXY_PID=$PREV_REMOTE_PROXY_PID
    REMOTE_REGISTRY_PROXY_PIDS=$PREV_REMOTE_REGISTRY_PROXY_PIDS REMOTE_REGISTRY_PROXY_TARGET=$PREV_REMOTE_REGISTRY_PROXY_TARGET
    log "remote dockerd already running at $REMOTE_HOST (pid $REMOTE_PID)"
    ok=1
    for p in $REMOTE_REGISTRY_PROXY_PIDS; do pid_is "$p" socat || ok=0; done
    if [ "$ok" != 1 ] || [ -z "$REMOTE_REGISTRY_PROXY_PIDS" ] || [ "$REMOTE_REGISTRY_PROXY_TARGET" != "$REGISTRY" ]; then
        log "restarting the registry proxy for the remote dockerd"
        for p in $REMOTE_REGISTRY_PROXY_PIDS; do stop_pid "$p" socat 5; done
        REMOTE_REGISTRY_PROXY_PIDS="" REMOTE_REGISTRY_PROXY_TARGET=""
        start_registry_proxy
    fi
else
    stop_remote "$PREV_REMOTE_PID" "$PREV_REMOTE_DIR" "$PREV_REMOTE_PROXY_PID $PREV_REMOTE_REGISTRY_PROXY_PIDS"
    REMOTE_DIR=$(mktemp -d "${REMOTE_PREFIX}XXXXXX")
    mkdir -p "$REMOTE_DIR/data" "$REMOTE_DIR/exec"
    # Own config file, so that /etc/docker/daemon.json is not read; the key
    # (daemon ID) otherwise defaults to /etc/docker/key.json.
    printf '{\n  "deprecated-key-path": "%s/key.json"\n}\n' "$REMOTE_DIR" >"$REMOTE_DIR/daemon.json"
    sock=unix://$REMOTE_DIR/docker.sock
    log "starting remote dockerd (dir: $REMOTE_DIR, log: $REMOTE_LOG)"
    : >"$REMOTE_PROXY_LOG"
    env -u DOCKER_HOST -u DOCKER_TLS_VERIFY -u DOCKER_CERT_PATH \
        setsid unshare --net -- sh -c '{ ip link set lo up; } 2>/dev/null; exec "$@"' sh \
        dockerd \
        --host "$sock" \
        --config-file "$REMOTE_DIR/daemon.json" \
        --data-root "$REMOTE_DIR/data" \
        --exec-root "$REMOTE_DIR/exec" \
        --pidfile "$REMOTE_DIR/docker.pid" \
        --containerd-namespace xtask-test-remote \
        --containerd-plugins-namespace xtask-test-remote-plugins \
        --cgroup-parent /xtask-test-remote-docker \
        --bridge=none --iptables=false --ip-masq=false --ip-forward=false \
        </dev/null >"$REMOTE_LOG" 2>&1 9>&- &
    REMOTE_PID=$! LAUNCHED=1
    deadline=$(( $(date +%s) + DOCKERD_TIMEOUT ))
    until remote_ok "$sock"; do
        if ! alive "$REMOTE_PID" || [ "$(date +%s)" -ge "$deadline" ]; then
            log "remote dockerd (pid $REMOTE_PID) did not come up; last lines of $REMOTE_LOG:"
            tail -n 20 "$REMOTE_LOG" >&2 || true
            die "could not start the remote dockerd"
        fi
        sleep 0.2
    done
    pid_is "$REMOTE_PID" dockerd || die "unexpected remote dockerd process (pid $REMOTE_PID)"
    [ "$(readlink "/proc/$REMOTE_PID/ns/net")" != "$(readlink /proc/self/ns/net)" ] ||
        die "remote dockerd runs in the host network namespace"

    for attempt in 1 2 3 4 5; do
        port=$(free_port)
        pid=$(start_socat "" "TCP-LISTEN:$port,bind=127.0.0.1,reuseaddr,fork,backlog=128" "UNIX-CONNECT:$REMOTE_DIR/docker.sock")
        for (( i = 0; i < 50; i++ )); do
            remote_ok "tcp://127.0.0.1:$port" && break
            alive "$pid" || break
            sleep 0.1
        done
        if alive "$pid" && remote_ok "tcp://127.0.0.1:$port"; then
            REMOTE_PROXY_PID=$pid REMOTE_HOST=tcp://127.0.0.1:$port
            break
        fi
        stop_pid "$pid" socat 5
        log "remote dockerd proxy attempt $attempt on port $port failed"
    done
    [ -n "$REMOTE_PROXY_PID" ] || { tail -n 5 "$REMOTE_PROXY_LOG" >&2 || true; die "could not start the remote dockerd proxy"; }
    start_registry_proxy
    log "remote dockerd ready at $REMOTE_HOST (pid $REMOTE_PID)"

    # Check that it is a separate daemon: an image built there must not
    # show up in the main daemon.
    probe_ctx=$STATE_DIR/remote-probe
    probe_image=xtask-test/remote-probe:$REMOTE_PID
    rm -rf "$probe_ctx"
    mkdir -p "$probe_ctx"
    printf 'FROM scratch\nCOPY probe /probe\n' >"$probe_ctx/Dockerfile"
    printf '%s\n' "$REMOTE_HOST" >"$probe_ctx/probe"
    if ! out=$(rdocker build -q -t "$probe_image" "$probe_ctx" 2>&1); then
        printf '%s\n' "$out" >&2
        die "docker build on the remote dockerd failed"
    fi
    rm -rf "$probe_ctx"
    rdocker image inspect "$probe_image" >/dev/null 2>&1 || die "remote dockerd does not list $probe_image"
    if docker image inspect "$probe_image" >/dev/null 2>&1; then
        die "$probe_image built on the remote dockerd is visible in the main daemon"
    fi
    rdocker rmi "$probe_image" >/dev/null
    log "remote dockerd: FROM scratch build ok, image not visible in the main daemon"

    log "building $BASE_IMAGE on the remote dockerd"
    if ! out=$(rdocker build -q -t "$BASE_IMAGE" "$CTX" 2>&1); then
        printf '%s\n' "$out" >&2
        die "docker build of $BASE_IMAGE on the remote dockerd failed"
    fi
    out=$(rdocker run --rm "$BASE_IMAGE" sh -c 'echo ok' 2>&1) || true
    [ "$out" = ok ] || { printf '%s\n' "$out" >&2; die "docker run of $BASE_IMAGE on the remote dockerd failed"; }
    log "remote docker run $BASE_IMAGE: ok"
fi

# ---------------------------------------------------------------- arm64 base image
BINFMT=/proc/sys/fs/binfmt_misc
QEMU_AARCH64_CONF=/usr/lib/binfmt.d/qemu-aarch64.conf

# Register the qemu-aarch64 binfmt_misc handler (qemu-user-static's, with
# the F flag so that it also works inside containers) unless present.
ensure_binfmt_aarch64() {
    local line
    [ -e "$BINFMT/qemu-aarch64" ] && return 0
    if [ ! -e "$BINFMT/register" ]; then
        mount -t binfmt_misc binfmt_misc "$BINFMT" || die "cannot mount binfmt_misc on $BINFMT"
        [ -e "$BINFMT/qemu-aarch64" ] && return 0
    fi
    [ -f "$QEMU_AARCH64_CONF" ] || die "$QEMU_AARCH64_CONF missing (package qemu-user-static)"
    log "registering the qemu-aarch64 binfmt_misc handler"
    while IFS= read -r line; do
        case $line in ""|"#"*|";"*) continue ;; esac
        printf '%s' "$line" >"$BINFMT/register" || die "cannot register $line"
    done <"$QEMU_AARCH64_CONF"
    [ -e "$BINFMT/qemu-aarch64" ] || die "qemu-aarch64 binfmt_misc handler not registered"
}

ARM64_DIR=$STATE_DIR/arm64          # cached .deb, extracted busybox, verification stamps
ARM64_CTX=$STATE_DIR/base-image-arm64
if [ "$WANT_ARM64" != 0 ]; then
    command -v qemu-aarch64-static >/dev/null || die "qemu-aarch64-static not found (package qemu-user-static)"
    mkdir -p "$ARM64_DIR"
    deb=$(find "$ARM64_DIR" -maxdepth 1 -name 'busybox-static_*_arm64.deb' | sort | tail -n 1)
    if [ -z "$deb" ]; then
        log "downloading busybox-static:arm64"
        dl=$(mktemp -d /tmp/xtask-test-arm64-deb.XXXXXX)
        # Let apt download as its unprivileged user (no "unsandboxed" warning).
        if id _apt >/dev/null 2>&1; then chown _apt "$dl"; fi
        if ! (cd "$dl" && apt-get download busybox-static:arm64) >&2; then
            if ! dpkg --print-foreign-architectures | grep -qx arm64; then
                log "adding dpkg architecture arm64"
                dpkg --add-architecture arm64
            fi
            apt-get update >&2
            (cd "$dl" && apt-get download busybox-static:arm64) >&2 || { rm -rf "$dl"; die "cannot download busybox-static:arm64"; }
        fi
        deb=$(find "$dl" -maxdepth 1 -name 'busybox-static_*_arm64.deb' | head -n 1)
        [ -n "$deb" ] || { rm -rf "$dl"; die "apt-get download left no busybox-static arm64 .deb"; }
        mv "$deb" "$ARM64_DIR/"
        deb=$ARM64_DIR/${deb##*/}
        chown 0:0 "$deb"
        rm -rf "$dl"
    fi
    ARM64_BUSYBOX=$ARM64_DIR/busybox
    if [ ! -x "$ARM64_BUSYBOX" ] || [ "$deb" -nt "$ARM64_BUSYBOX" ]; then
        x=$(mktemp -d "$ARM64_DIR/.extract.XXXXXX")
        dpkg-deb -x "$deb" "$x"
        [ -f "$x/bin/busybox" ] || { rm -rf "$x"; die "$deb has no bin/busybox"; }
        # ELF e_machine 0xb7 = AArch64
        [ "$(od -An -tx1 -j18 -N2 "$x/bin/busybox" | tr -d ' \n')" = b700 ] || { rm -rf "$x"; die "$deb: bin/busybox is not an AArch64 ELF"; }
        mv -f "$x/bin/busybox" "$ARM64_BUSYBOX"
        touch "$ARM64_BUSYBOX"
        rm -rf "$x"
    fi
    make_base_ctx "$ARM64_CTX" "$ARM64_BUSYBOX" qemu-aarch64-static
    arm64_stamp=$(cat "$ARM64_CTX/stamp")

    # Built and run-checked once per image ID and context: the check needs
    # qemu and is slow, so it is skipped while both stay the same.
    id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE_ARM64" 2>/dev/null || true)
    if [ -z "$id" ] || [ "$(cat "$ARM64_DIR/verified-docker" 2>/dev/null)" != "$id $arm64_stamp" ]; then
        log "building $BASE_IMAGE_ARM64 (linux/arm64) with docker"
        if ! out=$(env "${build_env[@]}" docker build -q --platform linux/arm64 -t "$BASE_IMAGE_ARM64" "$ARM64_CTX" 2>&1); then
            printf '%s\n' "$out" >&2
            die "docker build of $BASE_IMAGE_ARM64 failed"
        fi
        arch=$(docker image inspect -f '{{.Os}}/{{.Architecture}}' "$BASE_IMAGE_ARM64")
        [ "$arch" = linux/arm64 ] || die "docker: $BASE_IMAGE_ARM64 is $arch, not linux/arm64"
        ensure_binfmt_aarch64
        out=$(docker run --rm --platform linux/arm64 "$BASE_IMAGE_ARM64" uname -m 2>&1) || true
        [ "$out" = aarch64 ] || { printf '%s\n' "$out" >&2; die "docker run of $BASE_IMAGE_ARM64 failed"; }
        id=$(docker image inspect -f '{{.Id}}' "$BASE_IMAGE_ARM64")
        printf '%s %s\n' "$id" "$arm64_stamp" >"$ARM64_DIR/verified-docker"
        log "docker run $BASE_IMAGE_ARM64 uname -m: aarch64"
    else
        log "$BASE_IMAGE_ARM64 present in docker"
    fi
    ARM64_OK=1
fi

# ---------------------------------------------------------------- podman
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

    if [ "$ARM64_OK" = 1 ]; then
        id=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE_ARM64" 2>/dev/null || true)
        if [ -z "$id" ] || [ "$(cat "$ARM64_DIR/verified-podman" 2>/dev/null)" != "$id $arm64_stamp" ]; then
            log "building $BASE_IMAGE_ARM64 (linux/arm64) with podman"
            if ! out=$(podman build -q --platform linux/arm64 -t "$BASE_IMAGE_ARM64" "$ARM64_CTX" 2>&1); then
                printf '%s\n' "$out" >&2
                die "podman build of $BASE_IMAGE_ARM64 failed"
            fi
            arch=$(podman image inspect --format '{{.Os}}/{{.Architecture}}' "$BASE_IMAGE_ARM64")
            [ "$arch" = linux/arm64 ] || die "podman: $BASE_IMAGE_ARM64 is $arch, not linux/arm64"
            ensure_binfmt_aarch64
            out=$(podman run --rm --platform linux/arm64 "$BASE_IMAGE_ARM64" uname -m 2>&1) || true
            [ "$out" = aarch64 ] || { printf '%s\n' "$out" >&2; die "podman run of $BASE_IMAGE_ARM64 failed"; }
            id=$(podman image inspect --format '{{.Id}}' "$BASE_IMAGE_ARM64")
            printf '%s %s\n' "$id" "$arm64_stamp" >"$ARM64_DIR/verified-podman"
            log "podman run $BASE_IMAGE_ARM64 uname -m: aarch64"
        else
            log "$BASE_IMAGE_ARM64 present in podman"
        fi
    fi
fi

# ---------------------------------------------------------------- skopeo
# Once per registry instance: skopeo reads a pushed manifest, and fails
# with "manifest unknown" for a missing tag.
SKOPEO_STAMP=$STATE_DIR/skopeo-verified
if [ "$(cat "$SKOPEO_STAMP" 2>/dev/null)" != "$REGISTRY_PID $REGISTRY" ]; then
    probe=$REGISTRY/xtask-test-env/skopeo-probe:1
    docker tag "$BASE_IMAGE" "$probe"
    if ! out=$(docker push "$probe" 2>&1); then
        docker rmi "$probe" >/dev/null 2>&1 || true
        printf '%s\n' "$out" >&2
        die "docker push $probe failed"
    fi
    docker rmi "$probe" >/dev/null
    out=$(skopeo inspect --raw --tls-verify=false "docker://$probe" 2>&1) ||
        { printf '%s\n' "$out" >&2; die "skopeo inspect docker://$probe failed"; }
    grep -q '"schemaVersion"' <<<"$out" || { printf '%s\n' "$out" >&2; die "skopeo inspect docker://$probe: no manifest"; }
    if out=$(skopeo inspect --raw --tls-verify=false "docker://${probe%:*}:missing" 2>&1); then
        die "skopeo inspect of a missing tag succeeded"
    fi
    grep -q 'manifest unknown' <<<"$out" || { printf '%s\n' "$out" >&2; die "skopeo inspect of a missing tag: unexpected error"; }
    printf '%s\n' "$REGISTRY_PID $REGISTRY" >"$SKOPEO_STAMP"
    log "skopeo inspect against $REGISTRY: ok"
fi

# ---------------------------------------------------------------- buildx
# docker 23+ builds with BuildKit through the buildx plugin. bookworm has no
# docker-buildx; trixie's 0.13 needs only libc6 (>= 2.34). It is fetched with
# apt state of its own (a trixie-only source list, lists and cache under
# $BUILDX_DIR), so the system's sources and packages stay as they are, and
# installed in a docker config directory of its own: the plain `docker`
# keeps the classic builder for the suites that test it.
BUILDX_DIR=$STATE_DIR/buildx-apt
BUILDX_CONFIG=$STATE_DIR/buildx
if ! DOCKER_CONFIG=$BUILDX_CONFIG docker buildx version >/dev/null 2>&1; then
    log "fetching docker-buildx from Debian trixie"
    rm -rf "$BUILDX_DIR"
    mkdir -p "$BUILDX_DIR/lists/partial" "$BUILDX_DIR/cache/archives/partial" "$BUILDX_DIR/deb"
    echo 'deb http://deb.debian.org/debian trixie main' >"$BUILDX_DIR/sources.list"
    apt_opts=(-o "Dir::Etc::sourcelist=$BUILDX_DIR/sources.list" -o Dir::Etc::sourceparts=-
        -o "Dir::State::Lists=$BUILDX_DIR/lists" -o "Dir::Cache=$BUILDX_DIR/cache"
        -o APT::Get::List-Cleanup=0 -o APT::Sandbox::User=root)
    apt-get "${apt_opts[@]}" update >&2 || die "apt-get update for trixie's docker-buildx failed"
    (cd "$BUILDX_DIR/deb" && apt-get "${apt_opts[@]}" download docker-buildx) >&2 ||
        die "cannot download trixie's docker-buildx"
    deb=$(find "$BUILDX_DIR/deb" -maxdepth 1 -name 'docker-buildx_*.deb' | head -n 1)
    [ -n "$deb" ] || die "apt-get download left no docker-buildx .deb"
    dpkg-deb -x "$deb" "$BUILDX_DIR/x"
    mkdir -p "$BUILDX_CONFIG/cli-plugins"
    install -m 755 "$BUILDX_DIR/x/usr/libexec/docker/cli-plugins/docker-buildx" "$BUILDX_CONFIG/cli-plugins/"
    rm -rf "$BUILDX_DIR/x" "$BUILDX_DIR/lists" "$BUILDX_DIR/cache"
fi
version=$(DOCKER_CONFIG=$BUILDX_CONFIG docker buildx version) || die "docker buildx does not run from $BUILDX_CONFIG"
driver=$(DOCKER_CONFIG=$BUILDX_CONFIG docker buildx inspect | awk '$1 == "Driver:" { print $2; exit }')
[ "$driver" = docker ] || die "the default buildx builder uses driver '$driver', not docker"
if docker buildx version >/dev/null 2>&1; then
    log "note: docker buildx also works outside $BUILDX_CONFIG; the classic-builder suites then use BuildKit"
fi
log "buildx: $version (driver docker) in $BUILDX_CONFIG"

# ---------------------------------------------------------------- state file
write_env "$ENV_FILE"
trap - EXIT
log "wrote $ENV_FILE (up in $(( $(now_ms) - T0 )) ms)"
