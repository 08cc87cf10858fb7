#!/usr/bin/env bash
# Benchmarks the engine commands against the legacy Makefile's way
# (tests/bench/legacy-images.sh), on a generated tree of 100 hermetic images,
# with the real docker engine and a registry on loopback, and prints figures:
#
#   warm load-all-images (everything present): engine invocations and seconds
#   cold load-all-images with an empty registry (everything built): seconds,
#     against the legacy way run with two jobs (make -j2)
#   push-all-images when the registry has everything: engine invocations, and
#     proof that nothing was pulled, built or uploaded
#
# Usage: sudo tests/bench/engine.sh      (starts the test engine and registry
#        with tests/env/up.sh when they are not running)
# Optional environment: BENCH_IMAGES (default 100), BENCH_WARM_RUNS (default 5).
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
n=${BENCH_IMAGES:-100}
warm_runs=${BENCH_WARM_RUNS:-5}

[ -f target/test-env/env.sh ] || tests/env/up.sh
# shellcheck disable=SC1091
. target/test-env/env.sh
cargo build -q -p xtask
xtask=$root/target/debug/xtask

work=$(mktemp -d)
run_id=bench$$
export IMAGES_DIR=$work/images
export LOCAL_IMAGE_PREFIX=xtask-bench.local/$run_id
cleanup() {
	docker images --format '{{.Repository}}:{{.Tag}}' | grep -E "^(xtask-bench.local|$XTASK_TEST_REGISTRY)/.*$run_id" |
		xargs -r docker rmi -f >/dev/null 2>&1 || true
	rm -rf "$work"
}
trap cleanup EXIT

# 100 images in 10 groups, each FROM scratch with a few small files.
for i in $(seq 1 "$n"); do
	d=$IMAGES_DIR/group$((i % 10))/image$i
	mkdir -p "$d/files"
	printf 'FROM scratch\nCOPY files /files\nCOPY Dockerfile /\n' >"$d/Dockerfile"
	for f in 1 2 3; do echo "image $i file $f" >"$d/files/f$f.txt"; done
done

# A docker wrapper that counts engine invocations.
real_docker=$(command -v docker)
mkdir -p "$work/bin"
cat >"$work/bin/docker" <<WRAP
#!/bin/sh
echo "\$*" >>"$work/calls"
exec "$real_docker" "\$@"
WRAP
chmod +x "$work/bin/docker"
calls() { wc -l <"$work/calls" | tr -d ' '; }
count_calls() { : >"$work/calls"; PATH=$work/bin:$PATH "$@"; }

seconds() {
	local t0 t1
	t0=$(date +%s%N)
	if ! "$@" >"$work/last.log" 2>&1; then
		{ echo "FAIL: $*"; tail -n 20 "$work/last.log"; } >&2
		return 1
	fi
	t1=$(date +%s%N)
	echo "scale=3; ($t1 - $t0) / 1000000000" | bc
}
rmi_all() {
	docker images --format '{{.Repository}}:{{.Tag}}' | grep -E "$run_id" | xargs -r docker rmi -f >/dev/null 2>&1 || true
}

echo "== cold load-all-images: $n images, empty registry, everything built"
export REMOTE_IMAGE_PREFIX=$XTASK_TEST_REGISTRY/$run_id-legacy
rmi_all
legacy_cold=$(seconds "$here/legacy-images.sh" load-all 2)
export REMOTE_IMAGE_PREFIX=$XTASK_TEST_REGISTRY/$run_id-xtask
rmi_all
xtask_cold=$(seconds "$xtask" load-all-images --jobs 2)
built=$("$xtask" load-all-images --json 2>/dev/null | grep -c '"action": "present"')
echo "legacy (make -j2 model): ${legacy_cold}s"
echo "xtask --jobs 2:          ${xtask_cold}s  ($built of $n present afterwards)"
echo "ratio legacy/xtask:      $(echo "scale=1; $legacy_cold / $xtask_cold" | bc)x  (target >= 2x)"

echo "== warm load-all-images: everything present"
legacy_warm=0
xtask_warm=0
for _ in $(seq 1 "$warm_runs"); do
	legacy_warm=$(echo "$legacy_warm + $(seconds "$here/legacy-images.sh" load-all 1)" | bc)
	xtask_warm=$(echo "$xtask_warm + $(seconds "$xtask" load-all-images)" | bc)
done
legacy_warm=$(echo "scale=3; $legacy_warm / $warm_runs" | bc)
xtask_warm=$(echo "scale=3; $xtask_warm / $warm_runs" | bc)
count_calls "$xtask" load-all-images >/dev/null 2>&1
xtask_calls=$(calls)
count_calls "$here/legacy-images.sh" load-all 1 >/dev/null 2>&1
legacy_calls=$(calls)
echo "legacy: ${legacy_warm}s, $legacy_calls engine invocations"
echo "xtask:  ${xtask_warm}s, $xtask_calls engine invocations (target <= 2)"
echo "ratio legacy/xtask: $(echo "scale=1; $legacy_warm / $xtask_warm" | bc)x  (target >= 10x)"

echo "== push-all-images when the registry has everything"
"$xtask" push-all-images >/dev/null 2>&1
count_calls "$xtask" push-all-images --json >"$work/push.json" 2>/dev/null
skipped=$(grep -c '"action": "skipped"' "$work/push.json")
heavy=$(grep -cE '^(push|pull|build|load|save) ' "$work/calls" || true)
push_s=$(seconds "$xtask" push-all-images)
echo "xtask: ${push_s}s, $(calls) engine invocations, $skipped of $n skipped, $heavy push/pull/build invocations"
[ "$heavy" = 0 ] && [ "$skipped" = "$n" ] || { echo "FAIL: push-all-images did work it should have skipped" >&2; exit 1; }
