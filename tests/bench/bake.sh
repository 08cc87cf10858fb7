#!/usr/bin/env bash
# Races `docker buildx bake` against the xtask on one generated tree of images
# (100 by default, some built FROM others of the tree by their local name
# <LOCAL_IMAGE_PREFIX>/<path>:latest), both building with buildx's BuildKit,
# each from the same starting state, and prints a table of figures:
#
#   cold     nothing local (every image of the tree removed by name, the
#            BuildKit cache pruned), the registry empty for the tree
#            (a fresh remote prefix): `bake` against `load-all-images`
#   warm     the same command run a second time, everything present
#   CI       the registry already holds every tag, a fresh runner (nothing
#            local, cache pruned): `bake --push` against `push-all-images`
#   CI again the same on the same runner, a second time
#   changed  everything present, one file of one image changed (an image
#            others are built FROM): `bake` against `load-all-images`
#
# docker-bake.hcl is generated from `xtask list-all-images --json`: one target
# per image, with the tags the xtask gives (`local`, its `:latest`, `remote`;
# only `remote` when pushing, since a push pushes every tag), the platform of
# the image's architecture, and each FROM of another image of the tree as a
# `contexts` entry linking to that image's target (`target:<name>`).
#
# What bake does that the xtask does not:
#   - it starts every target at once (one BuildKit solve per target, all in
#     flight together); the xtask hands the builds that are ready at once to
#     one `docker buildx bake` of its own (up to 64 targets, no tags), then
#     checks each image's platform and names it, and builds an image whose
#     base is built in the same run once that base is named;
#   - with `target:` contexts, a dependent image is built on its base's build
#     result directly, without the base being named in an image store first;
#   - on a builder with its own store (docker-container, remote) it can push
#     straight from BuildKit, and reuse a build cache kept in a registry
#     (`cache-from`/`cache-to`, not set here); it builds several platforms
#     in one run.
# What the xtask does that bake does not:
#   - it asks before it builds: an image whose tag is present locally (for the
#     right architecture) is left alone, one the registry holds is pulled
#     (load) or skipped (push) without being built; bake sends every target
#     through BuildKit every time and, without a warm BuildKit cache, builds
#     everything again, even images the registry already holds;
#   - its tags are hashes of the inputs, so "the registry has it" means "it is
#     up to date"; bake has no tags of its own (here the hcl is generated from
#     the xtask's listing to get the same ones);
#   - it checks each built or pulled image's platform before naming or pushing
#     it, and orders FROM dependencies on any builder (classic, a BuildKit
#     without named contexts, podman).
#
# Named contexts (`target:` links) need a Dockerfile frontend that has them
# (BuildKit 0.10 / dockerfile 1.4 and later). The daemon's own BuildKit in
# docker 20.10 (buildx's `docker` driver there) refuses them ("unsupported
# frontend capability moby.buildkit.frontend.contexts"), and a newer frontend
# (`# syntax=docker/dockerfile:1.4`) would be pulled from Docker Hub. A probe
# build finds out; where links are refused, bake runs the way one must run it
# there: one `bake` per dependency level (level0: images FROM no image of the
# tree, level1: images FROM level0 images, ...), each FROM resolved from the
# local image store by the `:latest` name the previous level wrote; to push,
# each level's run (which names images locally) is followed by a
# `bake --push` of that level with only the remote tags (cached, so it only
# exports and pushes). The table says which way bake ran.
# BENCH_BAKE_MODE=linked|levels forces one.
#
# Size of one bake run: on docker 20.10's BuildKit (2 cores, other work
# running) a bake of all 100 targets at once, even fully cached, failed every
# time tried ("failed to receive status: ... no such job <id>", or
# "DeadlineExceeded: context deadline exceeded"), while runs of up to 84
# targets (the largest level here) went through. Levels keep each run below
# that; a run that fails so is tried again, up to twice, and counted.
#
# Caution: the cold resets run `docker buildx prune -af`, which empties the
# daemon's whole BuildKit cache, not only this tree's.
#
# Usage: tests/bench/bake.sh   (as root, like tests/bench/engine.sh; starts the
#        test engine and registry with tests/env/up.sh when they are not running)
# Needs: docker buildx (docker config in XTASK_TEST_BUILDX_CONFIG, set by
#        tests/env/up.sh; a value set by the caller wins), jq, bc.
# Optional environment:
#   BENCH_IMAGES     images in the tree (default 100)
#   BENCH_RUNS       runs of each scenario; the median is printed (default 3)
#   BENCH_XTASK      an xtask binary already built (default: `cargo build -p
#                    xtask`, then $CARGO_TARGET_DIR/debug/xtask)
#   BENCH_BAKE_MODE  auto (default), linked or levels
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cd "$root"
n=${BENCH_IMAGES:-100}
runs=${BENCH_RUNS:-3}
mode=${BENCH_BAKE_MODE:-auto}

die() { echo "bake.sh: $*" >&2; exit 1; }
case $mode in auto | linked | levels) ;; *) die "BENCH_BAKE_MODE must be auto, linked or levels, not '$mode'" ;; esac
[[ $n =~ ^[0-9]+$ && $n -ge 1 ]] || die "BENCH_IMAGES must be a positive number"
[[ $runs =~ ^[0-9]+$ && $runs -ge 1 ]] || die "BENCH_RUNS must be a positive number"
for tool in docker jq bc; do
	command -v "$tool" >/dev/null || die "$tool is not installed"
done

# The test environment; a buildx config given by the caller wins over it.
caller_buildx=${XTASK_TEST_BUILDX_CONFIG:-}
[ -f target/test-env/env.sh ] || tests/env/up.sh
# shellcheck disable=SC1091
. target/test-env/env.sh
buildx_config=${caller_buildx:-${XTASK_TEST_BUILDX_CONFIG:-}}
[ -n "$buildx_config" ] ||
	die "XTASK_TEST_BUILDX_CONFIG is not set: no docker config with the buildx plugin (tests/env/up.sh installs one)"
export DOCKER_CONFIG=$buildx_config
buildx_version=$(docker buildx version 2>&1) ||
	die "docker buildx does not run with DOCKER_CONFIG=$buildx_config: $buildx_version"
docker buildx bake --help >/dev/null 2>&1 || die "this docker buildx has no bake command"
driver=$(docker buildx inspect | awk '$1 == "Driver:" { print $2; exit }')
[ -n "$driver" ] || die "docker buildx inspect names no driver"
# The docker driver builds into the daemon's image store; others need --load.
load_flag=()
[ "$driver" = docker ] || load_flag=(--load)

if [ -n "${BENCH_XTASK:-}" ]; then
	xtask=$BENCH_XTASK
else
	cargo build -q -p xtask
	xtask=${CARGO_TARGET_DIR:-$root/target}/debug/xtask
fi
[ -x "$xtask" ] || die "no xtask binary at $xtask"

work=$(mktemp -d "${TMPDIR:-/tmp}/bake-bench.XXXXXX")
run_id=bake$$
local_root=xtask-bench.local/$run_id
remote_root=$XTASK_TEST_REGISTRY/$run_id
export IMAGES_DIR=$work/images
export IMAGES_CONFIG=$work/images.toml
export LOCAL_IMAGE_PREFIX=$local_root/img
export CARGO_TARGET_DIR=$work/target # the xtask's logs
: >"$IMAGES_CONFIG"
unset ARCH TAG_SCHEME DOCKER_BUILD_ARGS IMAGES_ENGINE DOCKER_BUILDKIT BUILDX_BUILDER NON_TEST_IMAGES

our_images() {
	docker images --format '{{.Repository}}:{{.Tag}}' |
		grep -E "^($local_root|$remote_root)[-/]" || true
}
rmi_all() { our_images | xargs -r docker rmi -f >/dev/null 2>&1 || true; }
cleanup() {
	rmi_all
	rm -rf "$work"
}
trap cleanup EXIT

# The tree: images in 10 groups, each a few small files; every 5th image from
# the 25th on is built FROM the image 20 before it (chains of up to 5).
base_of() { # index -> index of its base, or 0
	local i=$1
	if ((i % 5 == 0 && i > 20)); then echo $((i - 20)); else echo 0; fi
}
image_path() { echo "group$(($1 % 10))/image$1"; }
for i in $(seq 1 "$n"); do
	d=$IMAGES_DIR/$(image_path "$i")
	mkdir -p "$d/files"
	b=$(base_of "$i")
	if ((b > 0 && b <= n)); then
		from=$LOCAL_IMAGE_PREFIX/$(image_path "$b"):latest
	else
		from=scratch
	fi
	printf 'FROM %s\nCOPY files /files\nCOPY Dockerfile /\n' "$from" >"$d/Dockerfile"
	for f in 1 2 3; do echo "image $i file $f" >"$d/files/f$f.txt"; done
done
# The image changed in the last scenario: the root of a chain when there is one.
changed=1
if ((n >= 40)); then changed=20; fi
changed_file=$IMAGES_DIR/$(image_path "$changed")/files/f1.txt

# Dependencies and levels, from the Dockerfiles (the tree's shape never changes).
declare -A dep_refs level
names=()
while IFS=$'\t' read -r name path dockerfile; do
	names+=("$name")
	refs=""
	while read -r ref; do
		case $ref in "$LOCAL_IMAGE_PREFIX"/*)
			refs+="$ref " ;;
		esac
	done < <(awk 'toupper($1) == "FROM" { for (i = 2; i <= NF; i++) if ($i !~ /^--/) { print $i; break } }' \
		"$IMAGES_DIR/$path/$dockerfile")
	dep_refs[$name]=$refs
done < <("$xtask" list-all-images --json | jq -r '.images[] | [.name, .path, .dockerfile] | @tsv')
[ "${#names[@]}" = "$n" ] || die "the xtask lists ${#names[@]} images, not $n"
ref_target() { # <prefix>/<path>:<tag> -> image name
	local p=${1#"$LOCAL_IMAGE_PREFIX"/}
	p=${p%:*}
	echo "${p//\//_}"
}
max_level=0
pending=1
while ((pending)); do
	pending=0
	for name in "${names[@]}"; do
		[ -z "${level[$name]:-}" ] || continue
		l=0 ok=1
		for ref in ${dep_refs[$name]}; do
			t=$(ref_target "$ref")
			if [ -z "${level[$t]:-}" ]; then ok=0; break; fi
			if ((level[$t] + 1 > l)); then l=$((level[$t] + 1)); fi
		done
		if ((ok)); then
			level[$name]=$l
			if ((l > max_level)); then max_level=$l; fi
			pending=1
		fi
	done
done
for name in "${names[@]}"; do [ -n "${level[$name]:-}" ] || die "cannot order $name (FROM cycle?)"; done

# gen_hcl FILE LINKED: docker-bake.hcl for the current tags and remote prefix;
# LINKED=1 writes the `target:` contexts. PUSH=1 in the environment of bake
# selects the remote tags only.
gen_hcl() {
	local file=$1 linked=$2 name path dockerfile arch local_ref remote l ref sep
	{
		echo "# Generated by tests/bench/bake.sh from \`xtask list-all-images --json\`."
		echo 'variable "PUSH" { default = "" }'
		printf 'group "default" {\n  targets = ['
		sep=""
		for name in "${names[@]}"; do printf '%s"%s"' "$sep" "$name"; sep=", "; done
		printf ']\n}\n'
		for l in $(seq 0 "$max_level"); do
			printf 'group "level%s" {\n  targets = [' "$l"
			sep=""
			for name in "${names[@]}"; do
				[ "${level[$name]}" = "$l" ] || continue
				printf '%s"%s"' "$sep" "$name"
				sep=", "
			done
			printf ']\n}\n'
		done
		while IFS=$'\t' read -r name path dockerfile arch local_ref remote; do
			case $arch in x86_64) arch=amd64 ;; aarch64) arch=arm64 ;; esac
			printf 'target "%s" {\n' "$name"
			printf '  context    = "%s"\n' "$IMAGES_DIR/$path"
			printf '  dockerfile = "%s"\n' "$dockerfile"
			printf '  platforms  = ["linux/%s"]\n' "$arch"
			if [ "$linked" = 1 ] && [ -n "${dep_refs[$name]}" ]; then
				printf '  contexts   = {\n'
				for ref in ${dep_refs[$name]}; do
					printf '    "%s" = "target:%s"\n' "$ref" "$(ref_target "$ref")"
				done
				printf '  }\n'
			fi
			printf '  tags       = PUSH != "" ? ["%s"] : ["%s", "%s", "%s"]\n' \
				"$remote" "$local_ref" "${local_ref%:*}:latest" "$remote"
			printf '}\n'
		done < <("$xtask" list-all-images --json | jq -r '.images[] | [.name, .path, .dockerfile, .arch, .local, .remote] | @tsv')
	} >"$file.tmp"
	mv "$file.tmp" "$file"
}

# Runs a command, appending its output to $log; fails loudly.
log=$work/last.log
run_logged() {
	echo "=== $*" >>"$log"
	if ! "$@" >>"$log" 2>&1; then
		{ echo "FAIL: $*"; tail -n 30 "$log"; } >&2
		exit 1
	fi
}
now_ns() { date +%s%N; }

# bake ARGS...: one `docker buildx bake` run, logged. With many targets on a
# loaded daemon, the docker driver of docker 20.10 may fail a run with
# "failed to receive status: ... no such job <id>" (a target's status was
# asked for before the daemon had started its build) or "DeadlineExceeded";
# such a run is tried again, up to twice, within the time measured, and the
# retries are counted.
bake_retries=0 total_retries=0
bake() {
	local attempt mark
	for attempt in 1 2 3; do
		mark=$(wc -l <"$log")
		echo "=== docker buildx bake $*" >>"$log"
		if docker buildx bake "$@" >>"$log" 2>&1; then
			return 0
		fi
		if [ "$attempt" -lt 3 ] && tail -n +"$((mark + 1))" "$log" | grep -qE 'no such job|DeadlineExceeded'; then
			bake_retries=$((bake_retries + 1))
			continue
		fi
		{ echo "FAIL: docker buildx bake $*"; tail -n 30 "$log"; } >&2
		exit 1
	done
}

# bake_run load|push: the whole tree the way this builder allows.
bake_run() {
	local what=$1 l
	if [ "$bake_mode" = linked ]; then
		if [ "$what" = push ]; then
			PUSH=1 bake -f "$work/docker-bake.hcl" --progress=plain --push
		else
			bake -f "$work/docker-bake.hcl" --progress=plain "${load_flag[@]}"
		fi
	else
		for l in $(seq 0 "$max_level"); do
			bake -f "$work/docker-bake.levels.hcl" --progress=plain "${load_flag[@]}" "level$l"
			if [ "$what" = push ]; then
				PUSH=1 bake -f "$work/docker-bake.levels.hcl" --progress=plain --push "level$l"
			fi
		done
	fi
}
# What bake did, from its plain progress output in $log. Step vertices have
# ids of their own within one bake run; the export and push vertices of all
# targets share one id, so those are counted by the names they write.
bake_did() {
	awk '
		/^=== / { run++ }
		/^#[0-9]+ \[[^]]*[0-9]+\/[0-9]+\] / && !/\] FROM / { step[run ":" $1] = 1 }
		/^#[0-9]+ CACHED$/ { cached[run ":" $1] = 1 }
		/^#[0-9]+ naming to [^ ]+/ { named[$4] = 1 }
		/^#[0-9]+ (\[[^]]*\] )?pushing [^ ]+ with docker/ { for (i = 2; i <= NF; i++) if ($i == "pushing") pushed[$(i + 1)] = 1 }
		END {
			for (k in step) { s++; if (k in cached) c++ }
			for (k in named) m++
			for (k in pushed) p++
			printf "%d bake run%s: %d steps run, %d cached, %d tags written", run, run == 1 ? "" : "s", s - c, c, m
			if (p) printf ", %d pushed", p
			print ""
		}' "$log"
}
# What the xtask did: its summary line ("N images: ...", "N images present").
xtask_did() {
	local line
	line=$(grep -E '^[0-9]+ images?(:| )' "$log" | tail -n 1) || true
	[ -n "$line" ] || { cat "$log" >&2; die "no summary line from the xtask"; }
	echo "$line"
}

# time_side bake|xtask load|push: sets $secs; what it did goes to $work/did.
secs=""
time_side() {
	local side=$1 what=$2 t0 t1
	: >"$log"
	bake_retries=0
	t0=$(now_ns)
	if [ "$side" = bake ]; then
		bake_run "$what"
	elif [ "$what" = push ]; then
		run_logged "$xtask" push-all-images
	else
		run_logged "$xtask" load-all-images
	fi
	t1=$(now_ns)
	if [ "$side" = bake ]; then
		echo "$(bake_did)$([ "$bake_retries" = 0 ] || echo ", $bake_retries run(s) retried after 'no such job' or DeadlineExceeded")" >"$work/did"
		total_retries=$((total_retries + bake_retries))
	else
		xtask_did >"$work/did"
	fi
	secs=$(echo "scale=3; ($t1 - $t0) / 1000000000" | bc | sed 's/^\./0./')
}

# set_remote SUFFIX: a fresh remote prefix (its repositories are empty), and
# the hcl files for it.
set_remote() {
	export REMOTE_IMAGE_PREFIX=$remote_root-$1
	regen
}
regen() {
	gen_hcl "$work/docker-bake.hcl" 1
	gen_hcl "$work/docker-bake.levels.hcl" 0
}
cold_reset() {
	rmi_all
	docker buildx prune -af >/dev/null
}

# Results: times[scenario,side] is a space-separated list of seconds,
# did[scenario,side] the last run's summary.
declare -A times did
record() { # scenario side, after time_side
	times[$1,$2]+="$secs "
	did[$1,$2]=$(cat "$work/did")
}
median() {
	tr ' ' '\n' <<<"$1" | grep . | sort -n |
		awk '{ v[NR] = $1 } END { if (NR % 2) print v[(NR + 1) / 2]; else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

echo "== $n images (levels 0..$max_level), $runs runs per scenario, medians"
echo "xtask: $xtask"
echo "buildx: $buildx_version, driver $driver"
echo "engine: docker $(docker version --format '{{.Server.Version}}')"

# Can this builder link targets through named contexts?
if [ "$mode" = auto ]; then
	probe=$work/probe
	mkdir -p "$probe/a" "$probe/b"
	printf 'FROM scratch\nCOPY Dockerfile /a\n' >"$probe/a/Dockerfile"
	printf 'FROM %s/probe/a:latest\nCOPY Dockerfile /b\n' "$local_root" >"$probe/b/Dockerfile"
	cat >"$probe/docker-bake.hcl" <<EOF
group "default" { targets = ["a", "b"] }
target "a" {
  context = "$probe/a"
  tags    = ["$local_root/probe/a:probe"]
}
target "b" {
  context  = "$probe/b"
  contexts = { "$local_root/probe/a:latest" = "target:a" }
  tags     = ["$local_root/probe/b:probe"]
}
EOF
	if docker buildx bake -f "$probe/docker-bake.hcl" --progress=plain "${load_flag[@]}" >"$probe/log" 2>&1; then
		bake_mode=linked
	elif grep -q 'moby.buildkit.frontend.contexts' "$probe/log"; then
		bake_mode=levels
		echo "note: this builder refuses named contexts ($(grep -o 'unsupported frontend capability [^ ]*' "$probe/log" | head -n 1));"
		echo "      bake runs one level at a time, $((max_level + 1)) bake runs per build (see the comments in $0)"
	else
		cat "$probe/log" >&2
		die "the probe bake failed for another reason"
	fi
else
	bake_mode=$mode
fi
echo "bake mode: $bake_mode"
# One target of the generated docker-bake.hcl, a dependent one where there is.
set_remote sample
echo "a target of the generated docker-bake.hcl:"
awk '/^target / { block = ""; inside = 1 } inside { block = block "  " $0 "\n" }
	inside && /^}/ { inside = 0; if (!first) first = block; if (block ~ /contexts/) { printf "%s", block; done = 1; exit } }
	END { if (!done) printf "%s", first }' "$work/docker-bake.hcl"

t0=$(now_ns)
"$xtask" list-all-images --json >/dev/null
list_s=$(echo "scale=3; ($(now_ns) - $t0) / 1000000000" | bc | sed 's/^\./0./')

for r in $(seq 1 "$runs"); do
	echo "-- run $r of $runs" >&2
	# 1, 2: cold then warm, each side from a clean slate.
	for side in bake xtask; do
		set_remote "$r-$side-load"
		cold_reset
		time_side $side load
		record cold $side
		time_side $side load
		record warm $side
	done
	# 3: CI, registry full: filled by the xtask under a fresh prefix, then
	# each side on a fresh runner, and again on the same runner.
	set_remote "$r-ci"
	"$xtask" push-all-images >/dev/null 2>&1 || die "filling the registry failed"
	for side in bake xtask; do
		cold_reset
		time_side $side push
		record ci $side
		time_side $side push
		record ci2 $side
	done
	# 4: everything present for both (bake's cache and the named images),
	# then one file changed, with a new content for each side and run, so
	# neither finds the other's build in the cache.
	set_remote "$r-changed"
	time_side bake load
	time_side xtask load
	for side in xtask bake; do
		echo "changed for $side, run $r, $(now_ns)" >"$changed_file"
		regen # bake needs the new tags; not timed (a list-all-images, ${list_s}s)
		time_side $side load
		record changed $side
	done
done

label() {
	case $1 in
	cold) echo "1 cold (nothing local, registry empty)" ;;
	warm) echo "2 warm (everything present)" ;;
	ci) echo "3 CI push, registry full, fresh runner" ;;
	ci2) echo "3b CI push again, same runner" ;;
	changed) echo "4 one file of one image changed" ;;
	esac
}
echo
printf '%-42s %9s %9s %10s\n' scenario "bake s" "xtask s" bake/xtask
for s in cold warm ci ci2 changed; do
	b=$(median "${times[$s,bake]}")
	x=$(median "${times[$s,xtask]}")
	ratio=$(echo "scale=2; $b / $x" | bc | sed 's/^\./0./')
	printf '%-42s %9s %9s %9sx\n' "$(label $s)" "$b" "$x" "$ratio"
done
echo
echo "what each did (last run):"
for s in cold warm ci ci2 changed; do
	echo "$(label $s)"
	echo "    bake:  ${did[$s,bake]}"
	echo "    xtask: ${did[$s,xtask]}"
done
echo
echo "all runs (s):"
for s in cold warm ci ci2 changed; do
	printf '%-8s bake: %s| xtask: %s\n' "$s" "${times[$s,bake]}" "${times[$s,xtask]}"
done
echo
echo "bake ran as: $bake_mode$([ "$bake_mode" = levels ] && echo " ($((max_level + 1)) bake runs per build, each followed by a --push run of its level for CI)")"
echo "bake runs retried (no such job, DeadlineExceeded), all runs and scenarios: $total_retries"
echo "image changed in 4: $(image_path "$changed") (images built FROM it are rebuilt too)"
echo "not timed: writing docker-bake.hcl from list-all-images --json (${list_s}s for the listing)"
