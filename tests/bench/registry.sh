#!/usr/bin/env bash
# A no-op `push-all-images` (the registry holds every tag) over N generated
# images, for the tool built here against another build of it (OLD_XTASK,
# e.g. one built from an earlier commit), each run RUNS times; prints the
# median wall time and the tool's own CPU time, and the engine calls made.
#
# Usage (as root, after tests/env/up.sh): tests/bench/registry.sh [N...]
#   OLD_XTASK=/path/to/xtask  the other build (optional)
#   RUNS=5
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. target/test-env/env.sh
RUNS=${RUNS:-5}
SIZES=("$@")
[ ${#SIZES[@]} -gt 0 ] || SIZES=(100 1000)
cargo build -q -p xtask
NEW=$PWD/target/debug/xtask
work=$(mktemp -d /tmp/xtask-bench-registry.XXXXXX)
trap 'rm -rf "$work"' EXIT

# median of the numbers on stdin
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

# measure BIN LABEL: median wall and user+sys seconds of a no-op push-all-images
measure() {
    local bin=$1 label=$2 walls=() cpus=() i out calls
    for (( i = 0; i < RUNS; i++ )); do
        : >"$work/calls"
        out=$( { TIMEFORMAT='%R %U %S'; time env PATH="$work/bin:$PATH" "$bin" push-all-images >/dev/null 2>"$work/err"; } 2>&1 | tail -n 1)
        grep -q "skipped" "$work/err" || { cat "$work/err" >&2; echo "not a no-op run" >&2; exit 1; }
        walls+=("$(awk '{ print $1 }' <<<"$out")")
        cpus+=("$(awk '{ printf "%.2f", $2 + $3 }' <<<"$out")")
    done
    calls=$(wc -l <"$work/calls")
    printf '%-8s %-6s %8s s %8s s %6s\n' "$N" "$label" "$(printf '%s\n' "${walls[@]}" | median)" \
        "$(printf '%s\n' "${cpus[@]}" | median)" "$calls"
}

# A recording docker first on PATH, to count engine calls.
mkdir -p "$work/bin"
real=$(command -v docker)
printf '#!/bin/sh\necho "$*" >> %s/calls\nexec %s "$@"\n' "$work" "$real" >"$work/bin/docker"
chmod +x "$work/bin/docker"

printf '%-8s %-6s %10s %10s %6s\n' images build wall cpu calls
for N in "${SIZES[@]}"; do
    tree=$work/tree-$N
    mkdir -p "$tree/images"
    for (( i = 0; i < N; i++ )); do
        mkdir -p "$tree/images/img$i"
        printf 'FROM scratch\nCOPY f /f\n' >"$tree/images/img$i/Dockerfile"
        printf '%s %s\n' "$i" "$RANDOM" >"$tree/images/img$i/f"
    done
    : >"$tree/empty.toml"
    export IMAGES_DIR=$tree/images IMAGES_CONFIG=$tree/empty.toml CARGO_TARGET_DIR=$work/target
    export REMOTE_IMAGE_PREFIX=$XTASK_TEST_REGISTRY/bench-registry-$$-$N LOCAL_IMAGE_PREFIX=bench.local/registry-$$-$N
    "$NEW" push-all-images >/dev/null 2>&1 || { echo "the first push of $N images failed" >&2; exit 1; }
    measure "$NEW" new
    if [ -n "${OLD_XTASK:-}" ]; then measure "$OLD_XTASK" old; fi
    docker images --format '{{.Repository}}:{{.Tag}}' | grep -E "^(bench.local/registry-$$-$N|$REMOTE_IMAGE_PREFIX)/" |
        xargs -r docker rmi >/dev/null
done
