#!/usr/bin/env bash
# Benchmarks the engine commands against gVisor's real legacy images Makefile
# (tools/images.mk, copied out of a gVisor git directory at run time; none of
# its lines are kept here), on generated trees of 100 hermetic images, with
# the real docker engine and the test registry on loopback (reached as
# 127.0.0.1, port 80, through a forwarder of the run's own: see below):
#
#   cold load-all-images  nothing of the run's prefixes present locally, and
#                         their repositories empty in the registry, so every
#                         image is built: `make -j2 load-all-images` against
#                         `xtask load-all-images` (its default jobs)
#   warm load-all-images  every image present (both sides' images at once)
#   no-op push-all-images the registry holds every tag; the legacy side runs
#                         only when its push recipe can ask the loopback
#                         registry here (see below)
#
# Each case runs BENCH_RUNS times per side, the two sides alternating, each
# run from the same state; the table gives medians of seconds and of engine
# invocations (every `docker` call, counted by a recording wrapper first on
# PATH for both sides). Every load is checked afterwards: all images present
# under their local `:latest` name.
#
# The legacy side is the Makefile itself, included by a small Makefile that
# defines `SHELL` and `header` as gVisor's root Makefile does; make runs in
# the generated tree, whose images/ is the legacy images root. Each cold run
# gets a tree of its own (file contents salted by side and run) and prefixes
# of its own, so no run takes layers from the build cache of another, and
# the registry holds nothing under them.
#
# Usage: tests/bench/engine.sh GVISOR_GIT_DIR
#        (or GVISOR_GIT_DIR=... tests/bench/engine.sh)
#   GVISOR_GIT_DIR is a git directory of github.com/google/gvisor (a bare
#   clone, or a checkout's .git); tools/images.mk is read from its HEAD.
#   Run as root (the forwarder binds port 80; it needs socat and curl).
#   When XTASK_TEST_REGISTRY is not set, target/test-env/env.sh is sourced
#   (tests/env/up.sh starts the test engine and registry when it is missing).
#
# The xtask is built first (`cargo build -p xtask`, the dev profile `cargo
# xtask` runs, into CARGO_TARGET_DIR or target/), and its binary is run with
# IMAGES_DIR, an empty IMAGES_CONFIG and the prefixes in its environment.
#
# Optional environment: BENCH_IMAGES (default 100), BENCH_RUNS (default 3).
# Removes only the images of its own prefixes, by name, on exit.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${BENCH_IMAGES:-100}
runs=${BENCH_RUNS:-3}

die() {
	echo "engine.sh: $*" >&2
	exit 1
}
gvisor_git=${1:-${GVISOR_GIT_DIR:-}}
[ -n "$gvisor_git" ] || die "usage: $0 GVISOR_GIT_DIR (a git directory of github.com/google/gvisor)"
for tool in git make docker bc awk cargo; do
	command -v "$tool" >/dev/null || die "$tool is required"
done

if [ -z "${XTASK_TEST_REGISTRY:-}" ]; then
	[ -f "$root/target/test-env/env.sh" ] || "$root/tests/env/up.sh"
	# shellcheck disable=SC1091
	. "$root/target/test-env/env.sh"
fi
registry=${XTASK_TEST_REGISTRY:?}

build_dir=${CARGO_TARGET_DIR:-$root/target}
(cd "$root" && CARGO_TARGET_DIR=$build_dir cargo build -q -p xtask)
xtask=$build_dir/debug/xtask

work=$(mktemp -d "${TMPDIR:-/tmp}/engine-bench.XXXXXX")
run_id=engbench$$x$(date +%s)
cleanup() {
	remove_images "/$run_id/"
	rm -rf "$work"
	if [ -n "${fwd_pid:-}" ]; then
		pkill -P "$fwd_pid" 2>/dev/null || true
		kill "$fwd_pid" 2>/dev/null || true
	fi
}
# Removes, by name, the local images whose name holds $1.
remove_images() {
	docker images --format '{{.Repository}}:{{.Tag}}' | grep -F -- "$1" |
		xargs -r docker rmi -f >/dev/null 2>&1 || true
}
trap cleanup EXIT

# The legacy Makefile names every local image it finds by
# `loaded0_<repository>_<tag>` in a make assignment; with a registry port in
# the repository, that line's `:` makes it a target-specific variable
# instead, so the legacy load never sees an image as present and pulls or
# rebuilds all of them again. gVisor's own registry has no port. So that
# the legacy side takes the path it takes there, both sides reach the test
# registry as 127.0.0.1 (port 80, plain HTTP, as for any loopback registry)
# through a TCP forwarder of this run's own. Where port 80 cannot be had,
# the registry's own address is used and the warm legacy figures include
# those pulls and rebuilds (the output says so).
registry_note=
fwd_pid=
if command -v socat >/dev/null && command -v curl >/dev/null; then
	socat TCP-LISTEN:80,bind=127.0.0.1,reuseaddr,fork "TCP:$registry" 2>/dev/null &
	fwd_pid=$!
	sleep 0.5
	if kill -0 "$fwd_pid" 2>/dev/null && curl -sf -o /dev/null "http://127.0.0.1/v2/"; then
		registry_note="127.0.0.1 (port 80, forwarded to $registry)"
		registry=127.0.0.1
	else
		kill "$fwd_pid" 2>/dev/null || true
		fwd_pid=
	fi
fi
if [ -z "$registry_note" ]; then
	registry_note="$registry: port 80 unavailable, so the legacy Makefile sees no image as present (warm legacy runs pull or rebuild)"
fi

# The legacy Makefile, and the root Makefile's part it relies on.
legacy_rev=$(git --git-dir="$gvisor_git" rev-parse HEAD) || die "$gvisor_git is not a git directory"
git --git-dir="$gvisor_git" show HEAD:tools/images.mk >"$work/images.mk" ||
	die "$gvisor_git has no tools/images.mk at HEAD"
cat >"$work/Makefile" <<EOF
SHELL := /bin/bash
header = echo --- \$(1) >&2
include $work/images.mk

# Every legacy pull, rebuild and load target depends on register-cross. For a
# foreign ARCH it runs a privileged multiarch/qemu-user-static container from
# Docker Hub, which cannot be reached here; for the host's own architecture,
# as in this benchmark, it runs nothing. It is replaced by an empty recipe so
# that no run can reach out (make warns that the recipe is overridden).
register-cross:
	@:
EOF
: >"$work/empty.toml"

# A docker that records every invocation, first on PATH for both sides.
real_docker=$(command -v docker)
mkdir -p "$work/bin"
cat >"$work/bin/docker" <<WRAP
#!/bin/sh
echo "\$*" >>"$work/calls"
exec "$real_docker" "\$@"
WRAP
chmod +x "$work/bin/docker"

# gen_tree (tree.sh): each image FROM scratch with two COPY steps.
# shellcheck source=tree.sh
. "$here/tree.sh"

# Per side and run: the tree, and the prefixes.
tree() { echo "$work/$1$2"; }
local_prefix() { echo "xtask-bench.local/$run_id/$1$2"; }
remote_prefix() { echo "$registry/$run_id/$1$2"; }

# legacy RUN TARGET, tool RUN COMMAND: one side on the tree and prefixes of
# RUN. Both build with DOCKER_BUILD_ARGS=--no-cache, which both pass to
# `docker build`: every tree is unique, so no step could come from the cache
# anyway, and without it docker's classic builder looks through every
# `FROM scratch` image on the engine for one, and fails the build when other
# work on the engine removes one of them meanwhile.
legacy() {
	make -C "$(tree legacy "$1")" -f "$work/Makefile" -j2 "$2" DOCKER_BUILD_ARGS=--no-cache \
		REMOTE_IMAGE_PREFIX="$(remote_prefix legacy "$1")" LOCAL_IMAGE_PREFIX="$(local_prefix legacy "$1")"
}
tool() {
	IMAGES_DIR="$(tree tool "$1")/images" IMAGES_CONFIG=$work/empty.toml CARGO_TARGET_DIR=$work/target \
		DOCKER_BUILD_ARGS=--no-cache \
		REMOTE_IMAGE_PREFIX="$(remote_prefix tool "$1")" LOCAL_IMAGE_PREFIX="$(local_prefix tool "$1")" \
		"$xtask" "$2"
}

# measure NAME SIDE RUN WHAT REP: runs WHAT on the tree and prefixes of RUN
# with the recording docker, appends "seconds calls" to $work/NAME.SIDE, and
# prints the figures of repetition REP. When the run fails, prints why and
# returns 1, leaving $work/last.log.
measure() {
	local name=$1 side=$2 run=$3 what=$4 rep=$5 t0 t1 s c
	: >"$work/calls"
	t0=$(date +%s%N)
	if ! PATH=$work/bin:$PATH "$side" "$run" "$what" >"$work/last.log" 2>&1; then
		printf '  %-6s run %s: failed: %s\n' "$side" "$rep" \
			"$(grep -iE 'error|unable' "$work/last.log" | grep -v '^make' | head -n 1)"
		return 1
	fi
	t1=$(date +%s%N)
	s=$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc)
	c=$(wc -l <"$work/calls" | tr -d ' ')
	echo "$s $c" >>"$work/$name.$side"
	printf '  %-6s run %s: %8.3f s, %4d engine calls\n' "$side" "$rep" "$s" "$c"
}

# check_loaded SIDE RUN: every image present under its local :latest name.
check_loaded() {
	local got
	got=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep -c "^$(local_prefix "$1" "$2")/.*:latest$" || true)
	[ "$got" = "$n" ] || die "$1 run $2: $got of $n images present under their local names"
}

# median NAME SIDE FIELD (1 = seconds, 2 = calls)
median() {
	awk -v f="$3" '{ print $f }' "$work/$1.$2" | sort -n |
		awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1fx", a / b }'; }

echo "legacy: github.com/google/gvisor tools/images.mk at $legacy_rev, make -j2"
echo "tool:   $xtask (debug build), default jobs ($(nproc) cores)"
echo "$n images, $runs runs per case and side, engine $(docker version --format '{{.Server.Version}}')"
echo "registry: $registry_note"

echo "== cold load-all-images: nothing present, registry empty for the prefixes"
# A cold run that fails (other work on the engine can still break a build)
# is not counted: its images are removed and it runs again, on a fresh tree
# and prefixes, up to 3 times. The output shows each failure.
for r in $(seq 1 "$runs"); do
	for side in legacy tool; do
		for attempt in 1 2 3; do
			run=c$r-$attempt
			gen_tree "$(tree $side "$run")" "$side-cold-$run" "$n"
			ok=0
			if measure cold $side "$run" load-all-images "$r"; then
				check_loaded $side "$run"
				ok=1
			fi
			remove_images "/$run_id/$side$run/"
			rm -rf "$(tree $side "$run")"
			[ "$ok" = 0 ] || break
			[ "$attempt" -lt 3 ] || {
				tail -n 30 "$work/last.log" >&2
				die "$side: cold run $r failed 3 times"
			}
		done
	done
done

echo "== warm load-all-images: everything present"
for side in legacy tool; do
	gen_tree "$(tree $side w)" "$side-warm" "$n"
	"$side" w load-all-images >"$work/last.log" 2>&1 || {
		tail -n 30 "$work/last.log" >&2
		die "$side: the load before the warm runs failed"
	}
	check_loaded $side w
done
for r in $(seq 1 "$runs"); do
	for side in legacy tool; do
		measure warm $side w load-all-images "$r" || die "$side: warm run $r failed"
		check_loaded $side w
	done
done

echo "== no-op push-all-images: the registry holds every tag"
# The legacy push-% asks the registry with `docker run gcr.io/go-containerregistry/crane
# manifest`: an image from a public registry, which cannot be reached here,
# run in a container, whose loopback is not the registry's. Every check
# would fail and every image be rebuilt and pushed again, so the legacy
# side is not run when its push recipe asks through crane.
push_sides="legacy tool"
legacy_push_note=
if grep -q 'docker run .*crane' "$work/images.mk"; then
	push_sides=tool
	legacy_push_note="cannot run here"
	echo "  legacy: cannot run here: push-% checks the registry with \`docker run gcr.io/go-containerregistry/crane\`"
	echo "          (a public registry, unreachable here; and the container cannot reach a loopback registry)"
fi
for side in $push_sides; do
	"$side" w push-all-images >"$work/last.log" 2>&1 || {
		tail -n 30 "$work/last.log" >&2
		die "$side: the push that fills the registry failed"
	}
done
for r in $(seq 1 "$runs"); do
	for side in $push_sides; do
		measure push $side w push-all-images "$r" || die "$side: push run $r failed"
		! grep -qE '^(image )?(push|pull|build|buildx|tag) ' "$work/calls" ||
			die "$side: a no-op push-all-images pulled, built, tagged or pushed: $(grep -E '^(image )?(push|pull|build|buildx|tag) ' "$work/calls" | head -3)"
	done
done

echo
echo "medians of $runs runs, $n images (seconds; engine invocations)"
printf '%-24s %-21s  %-21s  %s\n' case legacy tool "ratio legacy/tool"
row() { # LABEL NAME
	local ls lc ts tc
	ts=$(median "$2" tool 1)
	tc=$(median "$2" tool 2)
	if [ -f "$work/$2.legacy" ]; then
		ls=$(median "$2" legacy 1)
		lc=$(median "$2" legacy 2)
		printf '%-24s %7.3f s, %4d calls  %7.3f s, %4d calls  %s time, %s calls\n' "$1" "$ls" "$lc" "$ts" "$tc" \
			"$(ratio "$ls" "$ts")" "$(ratio "$lc" "$tc")"
	else
		printf '%-24s %-21s  %7.3f s, %4d calls  %s\n' "$1" "$legacy_push_note" "$ts" "$tc" -
	fi
}
row "cold load-all-images" cold
row "warm load-all-images" warm
row "no-op push-all-images" push
