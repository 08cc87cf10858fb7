#!/usr/bin/env bash
# Incremental rebuilds against the legacy Makefile's `rebuild-<image>`.
#
# One image shaped like the real test images: FROM the hermetic base, a RUN
# that takes BENCH_SLEEP seconds (a sleep, so CPU contention on a busy machine
# does not distort it), then a COPY of a small file. Its previous version is
# pushed by the tool with DOCKER_PUSH_AS_LATEST=true; then the small file
# changes (to a new content on every run, so no tag is ever found ready-made)
# and each case is timed, RUNS times, legacy and tool side by side:
#
#   CI   nothing local (names removed, BuildKit's build cache pruned), the
#        registry holds the previous version's :latest:
#        the tool's `load` and its `push` of the changed image,
#        each against the legacy `rebuild-<image>` of the same change
#   dev  the previous version present locally, pulled (not built here) by
#        the tool's `load` before the change: the tool's `load` after it,
#        against the legacy `rebuild-<image>` from the same local state
#
# on docker's classic builder, on BuildKit (buildx, from
# $XTASK_TEST_BUILDX_CONFIG) and on podman. The legacy Makefile is docker-only:
# the podman rows compare with the legacy rebuild on docker's classic builder.
#
# The legacy side runs gVisor's own tools/images.mk, copied at run time from a
# git directory of github.com/google/gvisor (none of it is kept here), from a
# Makefile that defines what gVisor's root Makefile gives it (SHELL, header).
#
# Usage: tests/bench/incremental.sh GVISOR_GIT_DIR   (or GVISOR_GIT_DIR=...)
# Environment:
#   XTASK_TEST_REGISTRY etc.  the test environment; else sourced from
#                             XTASK_TEST_ENV (default target/test-env/env.sh,
#                             written by tests/env/up.sh)
#   XTASK=/path/to/xtask      a build of the tool (default: cargo build here)
#   GVISOR_REV=HEAD           the revision of tools/images.mk to run
#   RUNS=3                    runs of each case (medians are reported)
#   BENCH_SLEEP=20            seconds of the long RUN step
#   BENCH_BUILDERS="classic buildkit podman"
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

die() { echo "incremental.sh: $*" >&2; exit 1; }

gvisor_git=${1:-${GVISOR_GIT_DIR:-}}
[ -n "$gvisor_git" ] || die "give the git directory of github.com/google/gvisor as the first argument or GVISOR_GIT_DIR"
gvisor_rev=${GVISOR_REV:-HEAD}
git --git-dir="$gvisor_git" cat-file -e "$gvisor_rev:tools/images.mk" 2>/dev/null ||
	die "$gvisor_git has no $gvisor_rev:tools/images.mk (is it a git directory of google/gvisor?)"

RUNS=${RUNS:-3}
BENCH_SLEEP=${BENCH_SLEEP:-20}
read -r -a builders <<<"${BENCH_BUILDERS:-classic buildkit podman}"
[ "$RUNS" -ge 1 ] || die "RUNS must be at least 1"

for tool in docker make git awk; do
	command -v "$tool" >/dev/null || die "$tool is missing"
done
if [ -z "${XTASK_TEST_REGISTRY:-}" ]; then
	envfile=${XTASK_TEST_ENV:-$root/target/test-env/env.sh}
	[ -f "$envfile" ] || die "no test environment: run tests/env/up.sh, or set XTASK_TEST_ENV to its env.sh"
	# shellcheck disable=SC1090
	. "$envfile"
fi
: "${XTASK_TEST_REGISTRY:?the test environment sets no XTASK_TEST_REGISTRY}"
base=${XTASK_TEST_BASE_IMAGE:?the test environment sets no XTASK_TEST_BASE_IMAGE}
docker image inspect "$base" >/dev/null 2>&1 || die "docker lacks the base image $base"
for b in "${builders[@]}"; do
	case $b in
	classic) ;;
	buildkit)
		[ -n "${XTASK_TEST_BUILDX_CONFIG:-}" ] || die "BuildKit needs XTASK_TEST_BUILDX_CONFIG (a docker config dir with buildx)"
		DOCKER_CONFIG=$XTASK_TEST_BUILDX_CONFIG docker buildx version >/dev/null 2>&1 ||
			die "no buildx in $XTASK_TEST_BUILDX_CONFIG"
		;;
	podman)
		command -v podman >/dev/null || die "podman is missing"
		podman image exists "$base" || die "podman lacks the base image $base"
		;;
	*) die "unknown builder '$b' in BENCH_BUILDERS (classic, buildkit, podman)" ;;
	esac
done

if [ -n "${XTASK:-}" ]; then
	xtask=$XTASK
else
	(cd "$root" && cargo build -q -p xtask)
	xtask=${CARGO_TARGET_DIR:-$root/target}/debug/xtask
fi
[ -x "$xtask" ] || die "no xtask binary at $xtask"

run_id=inc$$
work=$(mktemp -d /tmp/xtask-bench-incremental.XXXXXX)
cleaned=()
cleanup() {
	local b
	for b in "${cleaned[@]}"; do clean "$b" || true; done
	rm -rf "$work"
}
trap cleanup EXIT

# The legacy side: gVisor's images.mk, included as gVisor's root Makefile does.
mkdir -p "$work/legacy"
git --git-dir="$gvisor_git" show "$gvisor_rev:tools/images.mk" >"$work/legacy/images.mk"
gvisor_commit=$(git --git-dir="$gvisor_git" rev-parse "$gvisor_rev")
cat >"$work/legacy/Makefile" <<EOF
SHELL := /bin/bash
header = echo --- \$(1) >&2
include $work/legacy/images.mk
EOF
: >"$work/empty.toml"
arch=$(uname -m)

# Per builder: names, and the environment of the tool and of the legacy make
# (the builder is always chosen explicitly).
setup() {
	b=$1
	tree=$work/$b
	image_dir=$tree/images/app
	local_prefix=xtask-bench.local/$run_id-$b
	remote_prefix=$XTASK_TEST_REGISTRY/xtask-bench-$run_id-$b
	label=xtask.bench.incremental=$run_id-$b
	case $b in
	classic)
		tool_set=(IMAGES_ENGINE=docker DOCKER_BUILDKIT=0)
		legacy_set=(DOCKER_BUILDKIT=0)
		builder_says="classic builder"
		engine_label="docker classic"
		;;
	buildkit)
		tool_set=(IMAGES_ENGINE=docker "DOCKER_CONFIG=$XTASK_TEST_BUILDX_CONFIG")
		legacy_set=("DOCKER_CONFIG=$XTASK_TEST_BUILDX_CONFIG")
		builder_says="BuildKit"
		engine_label="docker buildx"
		;;
	podman)
		tool_set=(IMAGES_ENGINE=podman)
		legacy_set=(DOCKER_BUILDKIT=0)
		builder_says="podman"
		engine_label="podman (legacy: docker classic)"
		;;
	esac
	common_set=("IMAGES_DIR=$tree/images" "IMAGES_CONFIG=$work/empty.toml" "CARGO_TARGET_DIR=$work/logs-$b"
		"REMOTE_IMAGE_PREFIX=$remote_prefix" "LOCAL_IMAGE_PREFIX=$local_prefix" "ARCH=$arch")
}
write_tree() {
	mkdir -p "$image_dir"
	cat >"$image_dir/Dockerfile" <<EOF
FROM $base
LABEL $label
RUN sleep $BENCH_SLEEP && echo the long step >/long-step.txt
COPY small.txt /small.txt
EOF
}
unset_all=(-u DOCKER_CONFIG -u DOCKER_BUILDKIT -u IMAGES_ENGINE -u DOCKER_PUSH_AS_LATEST -u SKIP_IMAGE_LOAD
	-u DOCKER_BUILD_ARGS -u TAG_SCHEME -u NON_TEST_IMAGES -u CI)

# Remove what this builder's runs made: its names in docker and podman, then
# any image left with its label (intermediate images of the classic builder
# and podman); for BuildKit, its build cache.
clean() {
	local b=$1 e ids pass
	setup "$b"
	for e in docker podman; do
		[ "$e" = docker ] || [ "$b" = podman ] || continue
		"$e" images --format '{{.Repository}}:{{.Tag}}' |
			awk -v l="$local_prefix/" -v r="$remote_prefix/" -v L="localhost/$local_prefix/" \
				'index($0, l) == 1 || index($0, r) == 1 || index($0, L) == 1' |
			xargs -r "$e" rmi >/dev/null 2>&1 || true
		for pass in 1 2 3; do
			ids=$("$e" images -a -q --filter "label=$label" | sort -u)
			[ -n "$ids" ] || break
			# shellcheck disable=SC2086
			"$e" rmi $ids >/dev/null 2>&1 || true
		done
	done
	if [ "$b" = buildkit ]; then
		DOCKER_CONFIG=$XTASK_TEST_BUILDX_CONFIG docker buildx prune -af >/dev/null
	fi
}

# seconds LOG CMD...: wall seconds of CMD, its output in LOG; fails with the
# log's tail.
seconds() {
	local log=$1 t0 t1
	shift
	t0=$(date +%s%N)
	if ! "$@" >"$log" 2>&1; then
		{ echo "FAILED: $*"; tail -n 30 "$log"; } >&2
		return 1
	fi
	t1=$(date +%s%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'
}
as_latest=false
tool() {
	env "${unset_all[@]}" "${common_set[@]}" "${tool_set[@]}" DOCKER_PUSH_AS_LATEST=$as_latest "$xtask" "$@"
}
# The tool, in the legacy's engine: to give the legacy the same local state.
tool_in_legacy_engine() { env "${unset_all[@]}" "${common_set[@]}" "${legacy_set[@]}" IMAGES_ENGINE=docker "$xtask" "$@"; }
legacy_rebuild() {
	env "${unset_all[@]}" "${legacy_set[@]}" make -C "$tree" -f "$work/legacy/Makefile" rebuild-app \
		REMOTE_IMAGE_PREFIX="$remote_prefix" LOCAL_IMAGE_PREFIX="$local_prefix"
}
# The tool's line for the image (action, tag, seconds, cache source, steps
# reused), from a log; fails unless the action is the one expected.
tool_line() {
	local log=$1 action=$2 line
	line=$({ grep -E "^[a-z-]+ +app " "$log" || true; } | tail -n 1 | tr -s ' ')
	[[ $line == "$action app "* ]] || { echo "expected '$action app' in:" >&2; cat "$log" >&2; return 1; }
	printf '%s' "$line"
}
expect_builder() {
	grep -q "$builder_says" "$1" || { echo "expected the tool to build with $builder_says:" >&2; cat "$1" >&2; return 1; }
}
# Steps the legacy build took from a cache (none expected: it has no source).
legacy_cached() { grep -cE -e '^ *---> Using cache' -e '^#[0-9]+ CACHED$' "$work/legacy.log" || true; }
set_version() { echo "$1" >"$image_dir/small.txt"; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }

rows=()
row() { # case builder legacy-times tool-times line
	local lm tm ratio goal
	lm=$(tr ' ' '\n' <<<"$3" | grep . | median)
	tm=$(tr ' ' '\n' <<<"$4" | grep . | median)
	ratio=$(awk -v l="$lm" -v t="$tm" 'BEGIN { printf "%.1f", l / t }')
	goal=$(awk -v r="$ratio" 'BEGIN { print (r >= 5 ? "met" : "MISSED") }')
	rows+=("$1|$2|$lm|$tm|${ratio}x|$goal|$5")
}

echo "legacy: gVisor tools/images.mk at $gvisor_commit; RUN step: sleep $BENCH_SLEEP; $RUNS runs per case; registry $XTASK_TEST_REGISTRY"
for b in "${builders[@]}"; do
	cleaned+=("$b")
	setup "$b"
	write_tree
	clean "$b"
	echo "== $engine_label: previous version pushed as :latest ($remote_prefix/app_$arch)"
	set_version "version 1"
	as_latest=true
	t=$(seconds "$work/log" tool push app)
	as_latest=false
	expect_builder "$work/log"
	line=$(tool_line "$work/log" pushed)
	echo "   $line; ${t}s in all"

	ci_legacy="" ci_load="" ci_push="" dev_legacy="" dev_load=""
	for r in $(seq 1 "$RUNS"); do
		# CI: nothing local; the registry has the previous :latest.
		set_version "version ci-$r"
		clean "$b"
		l=$(seconds "$work/legacy.log" legacy_rebuild)
		lc=$(legacy_cached)
		clean "$b"
		t=$(seconds "$work/load.log" tool load app)
		ci_load_line=$(tool_line "$work/load.log" built)
		clean "$b"
		p=$(seconds "$work/push.log" tool push app)
		ci_push_line=$(tool_line "$work/push.log" pushed)
		clean "$b"
		ci_legacy+=" $l" ci_load+=" $t" ci_push+=" $p"
		echo "   CI  run $r: legacy rebuild ${l}s ($lc steps cached) | tool load ${t}s: $ci_load_line | tool push ${p}s: $ci_push_line"

		# dev: the previous version pulled, then the change.
		set_version "version 1"
		tool_in_legacy_engine load app >"$work/prep.log" 2>&1 || { cat "$work/prep.log" >&2; exit 1; }
		tool_line "$work/prep.log" pulled >/dev/null
		set_version "version dev-$r"
		l=$(seconds "$work/legacy.log" legacy_rebuild)
		lc=$(legacy_cached)
		clean "$b"
		set_version "version 1"
		tool load app >"$work/prep.log" 2>&1 || { cat "$work/prep.log" >&2; exit 1; }
		tool_line "$work/prep.log" pulled >/dev/null
		set_version "version dev-$r"
		t=$(seconds "$work/load.log" tool load app)
		dev_load_line=$(tool_line "$work/load.log" built)
		clean "$b"
		dev_legacy+=" $l" dev_load+=" $t"
		echo "   dev run $r: legacy rebuild ${l}s ($lc steps cached) | tool load ${t}s: $dev_load_line"
	done
	row "CI: load" "$engine_label" "$ci_legacy" "$ci_load" "$ci_load_line"
	row "CI: push" "$engine_label" "$ci_legacy" "$ci_push" "$ci_push_line"
	row "dev: load" "$engine_label" "$dev_legacy" "$dev_load" "$dev_load_line"
done

echo
echo "Medians of $RUNS runs (seconds); legacy = make rebuild-app; goal: tool at least 5x faster"
{
	echo "case|engine/builder|legacy|tool|ratio|goal|tool's line (last run)"
	printf '%s\n' "${rows[@]}"
} | awk -F'|' '
	{ for (i = 1; i <= NF; i++) { cell[NR, i] = $i; if (length($i) > w[i]) w[i] = length($i) } n = NF }
	END { for (r = 1; r <= NR; r++) { line = ""
		for (i = 1; i <= n; i++) line = line sprintf(i < n ? "%-" w[i] "s  " : "%s", cell[r, i])
		print line } }'
