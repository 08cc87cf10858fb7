#!/usr/bin/env bash
# `verify` of one image against one cold build of it (`docker build
# --no-cache`), for three images built on the test environment's busybox
# base: `small` (one RUN writing a line), `cpu` (a RUN that counts for a
# few seconds) and `io` (a 20 MB file copied in, 50 MB and 2,000 files
# written by a RUN). Each pair is run RUNS times, alternating; prints the
# median of each side and their ratio. Two builds are the floor: the goal is
# at most 2.2 times one cold build.
#
# Usage (as root, after tests/env/up.sh): tests/bench/verify.sh [IMAGE...]
#   RUNS=5
#   XTASK_TEST_BUILDER, XTASK_TEST_ENGINE as for the tests (default: docker's
#   classic builder; buildx: DOCKER_CONFIG set to the buildx plugin's)
#   BENCH_XTASK=PATH   the xtask binary to measure (default: a debug build
#                      of this checkout)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
. target/test-env/env.sh
RUNS=${RUNS:-5}
IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(small cpu io)
engine=${XTASK_TEST_ENGINE:-docker}
if [ "${XTASK_TEST_BUILDER:-}" = buildx ]; then export DOCKER_CONFIG=$XTASK_TEST_BUILDX_CONFIG; fi
if [ -n "${BENCH_XTASK:-}" ]; then
    XTASK=$BENCH_XTASK
else
    cargo build -q -p xtask
    XTASK=$PWD/target/debug/xtask
fi
work=$(mktemp -d /tmp/xtask-bench-verify.XXXXXX)
trap 'rm -rf "$work"' EXIT

mkdir -p "$work/images/small" "$work/images/cpu" "$work/images/io"
base=$XTASK_TEST_BASE_IMAGE
printf 'FROM %s\nRUN echo hello > /greeting\n' "$base" >"$work/images/small/Dockerfile"
printf 'FROM %s\nRUN i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done; echo $i > /count\n' "$base" \
    >"$work/images/cpu/Dockerfile"
head -c 20000000 /dev/urandom >"$work/images/io/blob"
printf 'FROM %s\nCOPY blob /blob\nRUN dd if=/dev/zero of=/zeros bs=1M count=50 2>/dev/null && mkdir /many && for i in $(seq 1 2000); do echo $i > /many/$i; done\n' \
    "$base" >"$work/images/io/Dockerfile"
: >"$work/empty.toml"
export IMAGES_DIR=$work/images IMAGES_CONFIG=$work/empty.toml CARGO_TARGET_DIR=$work/target
export IMAGES_ENGINE=$engine LOCAL_IMAGE_PREFIX=bench.local/verify-$$

# median of the numbers on stdin
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
seconds() { TIMEFORMAT='%R'; { time "$@" >/dev/null 2>"$work/err"; } 2>&1 | tail -n 1; }

printf '%-6s %10s %10s %7s\n' image build verify ratio
for image in "${IMAGES[@]}"; do
    builds=() verifies=()
    for (( i = 0; i < RUNS; i++ )); do
        builds+=("$(seconds "$engine" build -q --no-cache --iidfile "$work/iid" "$work/images/$image")")
        "$engine" rmi "$(cat "$work/iid")" >/dev/null
        verifies+=("$(seconds "$XTASK" verify "$image")")
        grep -q '^1 image: 1 reproducible' "$work/err" || { cat "$work/err" >&2; exit 1; }
    done
    b=$(printf '%s\n' "${builds[@]}" | median)
    v=$(printf '%s\n' "${verifies[@]}" | median)
    printf '%-6s %8s s %8s s %6.2fx\n' "$image" "$b" "$v" "$(echo "$v / $b" | bc -l)"
done
