#!/usr/bin/env bash
# Measures the tool's cold `load-all-images` against the engine's floor: the
# engine alone building the same images, with nothing in between. On a
# generated tree of N hermetic images (each `FROM scratch` with three COPY
# steps of small files), for each engine:
#
#   docker  docker 20.10's classic builder. Floor: `docker build -q -t NAME
#           DIR` for every image, JOBS at a time (`xargs -P JOBS`). Tool:
#           `xtask load-all-images --jobs JOBS`.
#   podman  the same with `podman build -q -t NAME DIR`, and the tool with
#           IMAGES_ENGINE=podman.
#
#   On docker and podman a third side, "labelled", is the floor building a
#   copy of each Dockerfile with one `LABEL` line at its end, as the tool
#   records provenance (its path, tag, tag scheme and bases labels): both
#   builders commit that line as a step of its own, a cost of the engine's
#   that no caller recording labels avoids. Its ratio to the tool is the
#   tool's own cost: 1.0 is nothing on top of the engine.
#   buildx  BuildKit through the buildx plugin (the docker config in
#           XTASK_TEST_BUILDX_CONFIG, as `XTASK_TEST_BUILDER=buildx` tests
#           run). Floor: one `docker buildx bake` of every image, its
#           targets generated from `xtask list-all-images --json` as
#           tests/bench/bake.sh does, each loaded into the daemon under its
#           local name (bake starts every target at once: JOBS does not
#           apply). Tool: `xtask load-all-images --jobs JOBS`, which bakes
#           the builds that are ready at once itself (up to 64 a bake).
#
# Cold means cold for every side: every run, floor or tool, gets a tree of its
# own whose file contents are salted by engine, jobs, side and run, and name
# prefixes of its own, so no build finds a layer of another in any cache and
# the registry holds nothing under the tool's remote prefix (the tool asks it
# for every image, finds nothing, and builds). Runs alternate, floor then
# tool, BENCH_RUNS times. After each run, every image must be present under
# its local `<prefix>/<path>:latest` name (and the tool must say it built
# all N, with the builder the engine stands for); a run that fails, or
# leaves an image out, ends the script with a non-zero status. Its images are
# then removed by name and its tree deleted.
#
# Every engine invocation (docker, podman, and skopeo, which reads registries
# for podman) goes through a recording wrapper first on PATH for both sides;
# each run's line gives its count. The table gives, per engine and jobs,
# seconds as median (min–max) and the ratio floor/tool of the medians: 1.0 is
# the tool as fast as the engine alone, higher is better.
#
# Usage: tests/bench/floor.sh   (as root, like tests/bench/engine.sh)
#   When XTASK_TEST_REGISTRY is not set, target/test-env/env.sh is sourced
#   (tests/env/up.sh starts the test engine and registry when it is missing).
#   The xtask is built first (`cargo build -p xtask`, the dev profile `cargo
#   xtask` runs, into CARGO_TARGET_DIR or target/), unless BENCH_XTASK names
#   a binary.
#
# Optional environment:
#   N                 images in the tree (default 100; BENCH_IMAGES also works)
#   JOBS              images at once on both sides (default 2)
#   BENCH_RUNS        runs per side; the table has their medians (default 3)
#   ENGINES           engines to measure, of docker, podman and buildx
#                     (default all three)
#   FLOOR_JOBS_SWEEP  several jobs values ("1 2 3 4") measured in turn on
#                     each engine, in place of JOBS, to choose --jobs from
#   BENCH_NO_CACHE=1  `--no-cache` on both sides (docker's classic builder and
#                     podman's, looking for a cache match, fail a build when
#                     other work on the engine removes an image they look at)
#   FLOOR_BAKE_MAX    at most this many targets a bake on the floor's buildx
#                     side, the bakes run one after another (default: all in
#                     one); docker 20.10's BuildKit has failed bakes of about
#                     100 targets ("no such job", DeadlineExceeded; see
#                     tests/bench/bake.sh), the tool's bakes hold up to 64
#
# Removes only the images of its own prefixes, by name, in docker and podman,
# and its generated trees, at the end and on Ctrl-C. The records the buildx
# runs leave in the daemon's BuildKit cache stay (pruning would empty the
# whole cache, everyone's: see tests/bench/bake.sh); every tree being salted,
# no later run can match them.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
n=${N:-${BENCH_IMAGES:-100}}
jobs_default=${JOBS:-2}
runs=${BENCH_RUNS:-3}
engines=${ENGINES:-docker podman buildx}
jobs_list=${FLOOR_JOBS_SWEEP:-$jobs_default}
bake_max=${FLOOR_BAKE_MAX:-0}

die() {
	echo "floor.sh: $*" >&2
	exit 1
}
positive() { [[ $2 =~ ^[0-9]+$ && $2 -ge 1 ]] || die "$1 must be a positive number, not '$2'"; }
positive N "$n"
positive BENCH_RUNS "$runs"
for j in $jobs_list; do positive "JOBS (or a FLOOR_JOBS_SWEEP value)" "$j"; done
[ -n "${jobs_list// /}" ] || die "FLOOR_JOBS_SWEEP holds no jobs value"
[ "$bake_max" = 0 ] || positive FLOOR_BAKE_MAX "$bake_max"
for e in $engines; do
	case $e in docker | podman | buildx) ;; *) die "ENGINES holds '$e': use docker, podman or buildx" ;; esac
done
for tool in docker jq bc awk xargs cargo; do
	command -v "$tool" >/dev/null || die "$tool is required"
done

if [ -z "${XTASK_TEST_REGISTRY:-}" ]; then
	[ -f "$root/target/test-env/env.sh" ] || "$root/tests/env/up.sh"
	# shellcheck disable=SC1091
	. "$root/target/test-env/env.sh"
fi
registry=${XTASK_TEST_REGISTRY:?}
unset ARCH TAG_SCHEME DOCKER_BUILD_ARGS IMAGES_ENGINE DOCKER_BUILDKIT BUILDX_BUILDER NON_TEST_IMAGES \
	LOCAL_IMAGE_PREFIX REMOTE_IMAGE_PREFIX IMAGES_DIR IMAGES_CONFIG

# Each engine's requirements, checked before anything is measured.
classic_env=()
for e in $engines; do
	case $e in
	docker)
		docker version --format '{{.Server.Version}}' >/dev/null 2>&1 ||
			die "the docker daemon is not reachable: start it (tests/env/up.sh does)"
		# A docker client with buildx builds with BuildKit unless told not to.
		if docker buildx version >/dev/null 2>&1; then classic_env=(DOCKER_BUILDKIT=0); fi
		;;
	podman)
		[ "${XTASK_TEST_PODMAN:-1}" != 0 ] || die "the test env has no podman (XTASK_TEST_PODMAN=0): leave podman out of ENGINES"
		command -v podman >/dev/null || die "podman is not installed: apt-get install podman, or leave it out of ENGINES"
		command -v skopeo >/dev/null || die "skopeo is not installed: apt-get install skopeo, or leave podman out of ENGINES"
		;;
	buildx)
		buildx_config=${XTASK_TEST_BUILDX_CONFIG:-}
		[ -n "$buildx_config" ] ||
			die "XTASK_TEST_BUILDX_CONFIG is not set: no docker config with the buildx plugin (tests/env/up.sh installs one)"
		buildx_version=$(DOCKER_CONFIG=$buildx_config docker buildx version 2>&1) ||
			die "docker buildx does not run with DOCKER_CONFIG=$buildx_config: $buildx_version"
		DOCKER_CONFIG=$buildx_config docker buildx bake --help >/dev/null 2>&1 || die "this docker buildx has no bake command"
		driver=$(DOCKER_CONFIG=$buildx_config docker buildx inspect | awk '$1 == "Driver:" { print $2; exit }')
		[ -n "$driver" ] || die "docker buildx inspect names no driver"
		# The docker driver builds into the daemon's image store; others need --load.
		load_flag=()
		[ "$driver" = docker ] || load_flag=(--load)
		;;
	esac
done

if [ -n "${BENCH_XTASK:-}" ]; then
	xtask=$BENCH_XTASK
else
	build_dir=${CARGO_TARGET_DIR:-$root/target}
	(cd "$root" && CARGO_TARGET_DIR=$build_dir cargo build -q -p xtask)
	xtask=$build_dir/debug/xtask
fi
[ -x "$xtask" ] || die "no xtask binary at $xtask"

work=$(mktemp -d "${TMPDIR:-/tmp}/floor-bench.XXXXXX")
run_id=floor$$x$(date +%s)
# Removes, by name, the images of this run (or of one of its runs: "/$run_id/<run>/")
# from docker and podman. podman's listing fails when an image vanishes
# under it (other work on the engine): it is asked again then.
remove_images() {
	local program names
	for program in docker podman; do
		[[ " $engines " == *" $program "* || ($program = docker && " $engines " == *" buildx "*) ]] || continue
		for _ in 1 2 3 4 5; do
			names=$("$program" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null) && break
		done
		grep -F -- "$1" <<<"$names" | xargs -r "$program" rmi >/dev/null 2>&1 || true
	done
}
cleanup() {
	remove_images "/$run_id/"
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
: >"$work/empty.toml"

# The recording wrappers, first on PATH for both sides.
mkdir -p "$work/bin"
for program in docker podman skopeo; do
	real=$(command -v "$program") || continue
	cat >"$work/bin/$program" <<WRAP
#!/bin/sh
echo "$program \$*" >>"$work/calls"
exec "$real" "\$@"
WRAP
	chmod +x "$work/bin/$program"
done

# gen_tree (tree.sh): each image FROM scratch with three COPY steps.
# shellcheck source=tree.sh
. "$here/tree.sh"

# A run's name, tree and prefixes: RUN is <engine>-j<jobs>-<side>-<rep>.
tree() { echo "$work/$1"; }
local_prefix() { echo "xtask-bench.local/$run_id/$1"; }
remote_prefix() { echo "$registry/$run_id/$1"; }

# xtask_env ENGINE RUN: sets xenv, the xtask's environment on RUN's tree and
# prefixes with ENGINE's settings.
xenv=()
xtask_env() {
	local e=$1 run=$2
	xenv=(IMAGES_DIR="$(tree "$run")/images" IMAGES_CONFIG="$work/empty.toml"
		CARGO_TARGET_DIR="$(tree "$run")/target"
		LOCAL_IMAGE_PREFIX="$(local_prefix "$run")" REMOTE_IMAGE_PREFIX="$(remote_prefix "$run")")
	case $e in
	docker) xenv+=(IMAGES_ENGINE=docker "${classic_env[@]}") ;;
	podman) xenv+=(IMAGES_ENGINE=podman) ;;
	buildx) xenv+=(IMAGES_ENGINE=docker DOCKER_CONFIG="$buildx_config") ;;
	esac
}
no_cache=()
[ "${BENCH_NO_CACHE:-0}" = 0 ] || no_cache=(--no-cache)

# What each side runs, its output going to $work/last.log.
tool_side() { # ENGINE JOBS RUN
	xtask_env "$1" "$3"
	env "${xenv[@]}" "$xtask" load-all-images --jobs "$2" "${no_cache[@]}"
}
floor_side() { # ENGINE JOBS RUN
	local e=$1 jobs=$2 run=$3 program=docker env_=()
	case $e in
	podman) program=podman ;;
	docker) env_=("${classic_env[@]}") ;;
	buildx)
		local group groups
		read -ra groups <"$work/bake-groups"
		for group in "${groups[@]}"; do
			DOCKER_CONFIG=$buildx_config docker buildx bake -f "$work/docker-bake.hcl" --progress=plain \
				"${load_flag[@]}" "${no_cache[@]}" "$group" || return 1
		done
		return 0
		;;
	esac
	# "NAME -f DOCKERFILE DIR" lines.
	xargs -P "$jobs" -n 4 env "${env_[@]}" "$program" build -q "${no_cache[@]}" -t <"$work/floor-list"
}
labelled_side() { floor_side "$@"; }

# prepare_floor ENGINE RUN SIDE: what the floor builds, read from the xtask's
# listing of the tree (not timed): "NAME -f DOCKERFILE DIR" lines for xargs
# (for the labelled side, DOCKERFILE is a copy with the labels' line), or
# for buildx docker-bake.hcl, one target per image, in groups of at most
# FLOOR_BAKE_MAX.
prepare_floor() {
	local e=$1 run=$2 side=$3 prefix listing chunk_size keys
	prefix=$(local_prefix "$run")
	xtask_env "$e" "$run"
	listing=$(env "${xenv[@]}" "$xtask" list-all-images --json | jq -r '.images[] | [.name, .path, .dockerfile, .arch] | @tsv') ||
		die "$e: xtask list-all-images --json failed on $(tree "$run")"
	[ "$(grep -c . <<<"$listing")" = "$n" ] || die "the xtask lists $(grep -c . <<<"$listing") images, not $n"
	if [ "$e" != buildx ]; then
		awk -F '\t' -v p="$prefix" -v d="$(tree "$run")/images" '{ print p "/" $2 ":latest", "-f", d "/" $2 "/" $3, d "/" $2 }' \
			<<<"$listing" >"$work/floor-list"
		[ "$side" = labelled ] || return 0
		# The tool's label keys: its prefix's, from the local name prefix.
		keys=$(tr '/' '.' <<<"$prefix")
		mkdir -p "$work/labelled-$run"
		awk -F '\t' -v p="$prefix" -v d="$(tree "$run")/images" -v k="$keys" -v out="$work/labelled-$run" '{
			copy = out "/" NR ".Dockerfile"
			while ((getline line < (d "/" $2 "/" $3)) > 0) print line > copy
			close(d "/" $2 "/" $3)
			printf "LABEL \"%s.path\"=\"%s\" \"%s.tag\"=\"%016x\" \"%s.tag-scheme\"=\"content\" \"%s.bases\"=\"\"\n", k, $2, k, NR, k, k > copy
			close(copy)
			print p "/" $2 ":latest", "-f", copy, d "/" $2
		}' <<<"$listing" >"$work/floor-list"
		return
	fi
	chunk_size=$bake_max
	[ "$chunk_size" != 0 ] || chunk_size=$n
	awk -F '\t' -v p="$prefix" -v d="$(tree "$run")/images" -v size="$chunk_size" -v groups="$work/bake-groups" '
		BEGIN { print "# Generated by tests/bench/floor.sh from `xtask list-all-images --json`." }
		{
			arch = $4; if (arch == "x86_64") arch = "amd64"; else if (arch == "aarch64") arch = "arm64"
			printf "target \"%s\" {\n  context    = \"%s/%s\"\n  dockerfile = \"%s\"\n", $1, d, $2, $3
			printf "  platforms  = [\"linux/%s\"]\n  tags       = [\"%s/%s:latest\"]\n}\n", arch, p, $2
			c = int((NR - 1) / size); member[c] = member[c] sep[c] "\"" $1 "\""; sep[c] = ", "; last = c
		}
		END {
			for (c = 0; c <= last; c++) {
				printf "group \"part%d\" {\n  targets = [%s]\n}\n", c, member[c]
				printf "part%d ", c >groups
			}
			print "" >groups
		}' <<<"$listing" >"$work/docker-bake.hcl"
}

# measure ENGINE JOBS SIDE REP: one run (SIDE floor, labelled or tool) on a
# fresh tree, timed, checked, and cleaned; appends its seconds to
# $work/<engine>-<jobs>.<side>.
measure() {
	local e=$1 jobs=$2 side=$3 rep=$4 run t0 t1 s c got note status=0
	run=$e-j$jobs-$side-$rep
	gen_tree "$(tree "$run")" "$run_id $run" "$n" 1
	[ "$side" = tool ] || prepare_floor "$e" "$run" "$side"
	: >"$work/calls"
	t0=$(date +%s%N)
	PATH=$work/bin:$PATH "${side}_side" "$e" "$jobs" "$run" >"$work/last.log" 2>&1 || status=$?
	# The xtask stops on Ctrl-C with 130 of its own, so bash does not act on it.
	[ "$status" != 130 ] || exit 130
	if [ "$status" != 0 ]; then
		tail -n 30 "$work/last.log" >&2
		if grep -qE 'unable to find image "sha256:|checking if cached image exists' "$work/last.log"; then
			echo "(an image the builder looked at for its cache was removed meanwhile: BENCH_NO_CACHE=1 avoids the look-up)" >&2
		fi
		if grep -qE 'no such job|DeadlineExceeded' "$work/last.log"; then
			echo "(BuildKit lost track of a bake this large: FLOOR_BAKE_MAX=64 splits the floor's bake)" >&2
		fi
		die "$e, jobs $jobs: $side run $rep failed"
	fi
	t1=$(date +%s%N)
	s=$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc | sed 's/^\./0./')
	c=$(grep -c . "$work/calls" || true)
	if [ "$side" = tool ]; then
		grep -qE "^$n images?: $n built\$" "$work/last.log" || {
			tail -n 30 "$work/last.log" >&2
			die "$e, jobs $jobs: tool run $rep did not build all $n images"
		}
		case $e in
		docker) note="building with docker's classic builder" ;;
		podman) note="building with podman" ;;
		buildx) note="building with BuildKit (buildx" ;;
		esac
		grep -qF "$note" "$work/last.log" || die "$e, jobs $jobs: tool run $rep did not say '$note': $(grep -m 1 'building with' "$work/last.log")"
	fi
	got=$(local_names "$e" | grep -c "^$(local_prefix "$run")/.*:latest\$" || true)
	[ "$got" = "$n" ] || die "$e, jobs $jobs: $side run $rep: $got of $n images present under their local names"
	echo "$s" >>"$work/$e-$jobs.$side"
	printf '  %-6s jobs %-2s %-8s run %s: %8.3f s, %4d engine calls\n' "$e" "$jobs" "$side" "$rep" "$s" "$c"
	remove_images "/$run_id/$run/"
	rm -rf "$(tree "$run")" "$work/labelled-$run"
}
local_names() { # ENGINE: every local repository:tag, asked again if podman's listing fails
	local program=docker
	[ "$1" != podman ] || program=podman
	for _ in 1 2 3 4 5; do
		"$program" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null && return
	done
	die "$program images failed 5 times"
}

# stats FILE: "median min max" of its seconds.
stats() {
	sort -n "$1" | awk '{ v[NR] = $1 } END {
		m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
		printf "%.3f %.3f %.3f\n", m, v[1], v[NR] }'
}

describe() { # ENGINE: what each side is
	case $1 in
	docker) echo "docker $(docker version --format '{{.Server.Version}}'), classic builder${classic_env[*]:+ (${classic_env[*]})}: floor \`docker build -q -t NAME DIR\` via xargs -P JOBS" ;;
	podman) echo "podman $(podman version --format '{{.Client.Version}}'): floor \`podman build -q -t NAME DIR\` via xargs -P JOBS" ;;
	buildx) echo "docker $(docker version --format '{{.Server.Version}}') with $buildx_version, driver $driver: floor $([ "$bake_max" = 0 ] && echo "one \`docker buildx bake\` of all $n" || echo "\`docker buildx bake\`s of up to $bake_max") (JOBS does not apply)" ;;
	esac
}

echo "$n images, $runs runs per side, floor, labelled (not under buildx) then tool; jobs: $jobs_list; tool: $xtask$([ -n "${BENCH_XTASK:-}" ] || echo " (debug build)")"
[ ${#no_cache[@]} = 0 ] || echo "both sides build with --no-cache (BENCH_NO_CACHE)"
for e in $engines; do
	echo "== $(describe "$e")"
	for jobs in $jobs_list; do
		for r in $(seq 1 "$runs"); do
			measure "$e" "$jobs" floor "$r"
			[ "$e" = buildx ] || measure "$e" "$jobs" labelled "$r"
			measure "$e" "$jobs" tool "$r"
		done
	done
done

echo
echo "medians of $runs runs, $n images, cold (seconds; floor/tool: 1.0 is the tool as fast as the engine alone;"
echo "labelled/tool: the same against the engine building the tool's LABEL line too, – under BuildKit, where labels are no step)"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
echo
echo "| engine | jobs | floor s (median, min–max) | labelled s (median, min–max) | tool s (median, min–max) | floor/tool | labelled/tool |"
echo "|---|---|---|---|---|---|---|"
for e in $engines; do
	for jobs in $jobs_list; do
		read -r fm fmin fmax < <(stats "$work/$e-$jobs.floor")
		read -r tm tmin tmax < <(stats "$work/$e-$jobs.tool")
		labelled="–" labelled_ratio="–"
		if [ -f "$work/$e-$jobs.labelled" ]; then
			read -r lm lmin lmax < <(stats "$work/$e-$jobs.labelled")
			labelled="$lm ($lmin–$lmax)" labelled_ratio=$(ratio "$lm" "$tm")
		fi
		printf '| %s | %s | %s (%s–%s) | %s | %s (%s–%s) | %s | %s |\n' "$e" "$jobs" "$fm" "$fmin" "$fmax" "$labelled" \
			"$tm" "$tmin" "$tmax" "$(ratio "$fm" "$tm")" "$labelled_ratio"
	done
done
