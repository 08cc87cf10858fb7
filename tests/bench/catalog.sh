#!/usr/bin/env bash
# Benchmarks `cargo xtask list-all-images --json` against the legacy Makefile's
# way of computing the same listing, and prints the figures.
#
#   Part 1, listing: a generated tree of 100 images (~2,000 small files, a few
#   MB). The legacy pipeline (tests/bench/legacy-list.sh) hashes every image
#   with one process chain per image, as every `make` run did; the xtask lists
#   them with the `content` and with the `gvisor` tag scheme. The gvisor tags
#   must equal the legacy pipeline's for every image, or the benchmark fails.
#
#   Part 2, hashing throughput: two generated trees of random data, 1 GiB each
#   (64 files of 16 MiB; 4096 files of 256 KiB), read from the page cache.
#   The xtask (content scheme, which hashes every file) against coreutils
#   `sha256sum` over the same files, `openssl dgst -sha256` over the same files
#   (one thread), and `openssl speed -evp sha256` (the per-core SHA-256 rate).
#
# Usage: tests/bench/catalog.sh
#
# The xtask is built first (`cargo build -p xtask`) so that build time is not
# measured. Uses hyperfine when installed, else a `date +%s%N` loop. Needs jq.
# Rates are in MB/s, MB = 10^6 bytes.
#
# Optional environment:
#   BENCH_TMPDIR         where the generated trees go (default: $TMPDIR or /tmp);
#                        they are removed on exit
#   BENCH_HASH_MIB       size of each part 2 tree in MiB (default 1024)
#   BENCH_LEGACY_RUNS    timed runs of the legacy pipeline (default 5)
#   BENCH_LIST_RUNS      timed runs of each xtask listing (default 20)
#   BENCH_HASH_RUNS      timed runs of each part 2 command (default 3)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
CARGO=${CARGO:-cargo}

HASH_MIB=${BENCH_HASH_MIB:-1024}
LEGACY_RUNS=${BENCH_LEGACY_RUNS:-5}
LIST_RUNS=${BENCH_LIST_RUNS:-20}
HASH_RUNS=${BENCH_HASH_RUNS:-3}

IMAGE_COUNT=100
LIST_TARGET=25 # legacy seconds / xtask seconds
HASH_TARGET=5  # xtask MB/s / sha256sum MB/s

die() {
	echo "catalog.sh: $*" >&2
	exit 1
}
log() { echo "-- $*" >&2; }

for tool in jq sha256sum find xargs sort awk "$CARGO"; do
	command -v "$tool" >/dev/null || die "$tool is required: install it and run again"
done
have_hyperfine=0
command -v hyperfine >/dev/null && have_hyperfine=1
have_openssl=0
command -v openssl >/dev/null && have_openssl=1

started=$SECONDS
tmp=$(mktemp -d "${BENCH_TMPDIR:-${TMPDIR:-/tmp}}/xtask-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

arch=$(uname -m)
case "$arch" in
x86_64) other_arch=aarch64 ;;
aarch64) other_arch=x86_64 ;;
*) die "unsupported host architecture $arch" ;;
esac
cores=$(nproc)
load() { cut -d' ' -f1-3 /proc/loadavg; }
load_start=$(load)

# Only the settings the benchmark chooses reach the xtask and the legacy script.
unset IMAGES_CONFIG NON_TEST_IMAGES DOCKER_BUILD_ARGS LOCAL_IMAGE_PREFIX REMOTE_IMAGE_PREFIX RAYON_NUM_THREADS
export LC_ALL=C ARCH=$arch

log "building the xtask (not timed)"
(cd "$REPO_ROOT" && "$CARGO" build --quiet -p xtask) || die "cargo build -p xtask failed"
target_dir=$(cd "$REPO_ROOT" && "$CARGO" metadata --format-version 1 --no-deps | jq -r .target_directory)
xtask_bin=$target_dir/debug/xtask
[[ -x $xtask_bin ]] || die "$xtask_bin was not built"

q() { printf '%q' "$1"; }

# measure RUNS WARMUP COMMAND [PREPARE]: runs COMMAND (a bash command line,
# in the repository root, output discarded) and sets MEAN and MEDIAN in
# seconds. PREPARE, if given, runs untimed before every run.
measure() {
	local runs=$1 warmup=$2 cmd=$3 prepare=${4:-true}
	if ((have_hyperfine)); then
		local json=$tmp/hyperfine.json
		(cd "$REPO_ROOT" && hyperfine --shell=bash --style=none --warmup "$warmup" --runs "$runs" \
			--prepare "$prepare" --export-json "$json" "$cmd" >"$tmp/hyperfine.log" 2>&1) ||
			{ cat "$tmp/hyperfine.log" >&2; die "failed: $cmd"; }
		MEAN=$(jq -r '.results[0].mean' "$json")
		MEDIAN=$(jq -r '.results[0].median' "$json")
	else
		local i start end times=()
		for ((i = 0; i < warmup + runs; i++)); do
			(cd "$REPO_ROOT" && bash -c "$prepare" >/dev/null) || die "failed: $prepare"
			start=$(date +%s%N)
			(cd "$REPO_ROOT" && bash -c "$cmd" >/dev/null) || die "failed: $cmd"
			end=$(date +%s%N)
			((i < warmup)) || times+=("$(((end - start) / 1000))")
		done
		MEAN=$(printf '%s\n' "${times[@]}" | awk '{ s += $1 } END { printf "%.6f", s / NR / 1e6 }')
		MEDIAN=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 }
			END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.6f", m / 1e6 }')
	fi
}

# Before each timed `cargo xtask` run: make sure it will not rebuild, so that
# only running it is measured even if the sources change meanwhile.
build_cmd="$(q "$CARGO") build --quiet -p xtask"

calc() { awk "BEGIN { printf \"$1\", $2 }"; }

# ---- part 1: listing ----------------------------------------------------------

# write_random FILE BYTES
write_random() { head -c "$2" /dev/urandom >"$1"; }

# make_image DIR DOCKERFILE FROM: an image directory with a Dockerfile and a
# handful of small files whose names exercise `sort -f -d` (case, `_`, `-`,
# dots), a dotfile, an executable, a subdirectory and a symlink.
make_image() {
	local dir=$1 dockerfile=$2 from=$3 n f
	mkdir -p "$dir/data/sub" "$dir/conf"
	printf 'FROM %s\nCOPY . /app\nRUN /app/run_test.sh\n' "$from" >"$dir/$dockerfile"
	printf '#!/bin/sh\nexec true\n' >"$dir/run_test.sh"
	chmod +x "$dir/run_test.sh"
	for f in README.md Run-Test.sh .env conf/A.cfg conf/b.cfg conf/_c.cfg data/sub/x_y.conf data/sub/X-Y.conf; do
		write_random "$dir/$f" $((500 + RANDOM % 2500))
	done
	for n in 01 02 03 04 05 06 07 08 09 10; do
		write_random "$dir/data/file-$n.txt" $((500 + RANDOM % 2500))
	done
	ln -s data/file-01.txt "$dir/latest"
}

list_tree=$tmp/list/images
log "generating $IMAGE_COUNT images in $list_tree"
groups=(basic net gpu storage runtime lang tools misc)
for g in "${groups[@]}"; do
	make_image "$list_tree/$g/img-1" Dockerfile alpine:3.19
	for i in $(seq 2 12); do
		dockerfile=Dockerfile
		((i == 12)) && dockerfile=Dockerfile.$arch # only for this architecture
		make_image "$list_tree/$g/img-$i" "$dockerfile" "gvisor.dev/images/$g/img-1:latest"
	done
done
for g in "${groups[@]:0:4}"; do # nested: the parent's context holds the child
	make_image "$list_tree/$g/img-2/bench" Dockerfile "gvisor.dev/images/$g/img-2"
done
make_image "$list_tree/misc/foreign" "Dockerfile.$other_arch" scratch # not an image here

list_files=$(find "$list_tree" -type f | wc -l)
list_bytes=$(find "$list_tree" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')

# Correctness first: a fast listing that disagrees with the legacy tags is worthless.
log "checking the gvisor tags against the legacy pipeline"
legacy_out=$tmp/legacy.txt
xtask_out=$tmp/xtask-gvisor.txt
bash "$SCRIPT_DIR/legacy-list.sh" "$list_tree" | sort >"$legacy_out"
(cd "$REPO_ROOT" && IMAGES_DIR=$list_tree TAG_SCHEME=gvisor "$xtask_bin" list-all-images --json) |
	jq -r '.[] | "\(.name) \(.tag)"' | sort >"$xtask_out"
legacy_count=$(wc -l <"$legacy_out")
xtask_count=$(wc -l <"$xtask_out")
if ((legacy_count != IMAGE_COUNT)); then
	die "the legacy pipeline found $legacy_count images in $list_tree, expected $IMAGE_COUNT"
fi
if ((xtask_count != IMAGE_COUNT)); then
	echo "FAIL: the xtask listed $xtask_count images in $list_tree, the legacy pipeline $IMAGE_COUNT" >&2
fi
if ! diff -u "$legacy_out" "$xtask_out" >"$tmp/tags.diff"; then
	cat "$tmp/tags.diff" >&2
	echo >&2
	echo "FAIL: TAG_SCHEME=gvisor tags differ from the legacy Makefile pipeline (- legacy, + xtask)" >&2
	exit 1
fi
gvisor_equal=$(comm -12 "$legacy_out" "$xtask_out" | wc -l)

xtask_cmd() { # SCHEME [bin]
	local env
	env="IMAGES_DIR=$(q "$list_tree") TAG_SCHEME=$1"
	if [[ ${2:-} == bin ]]; then
		echo "$env $(q "$xtask_bin") list-all-images --json"
	else
		echo "$env $(q "$CARGO") xtask list-all-images --json"
	fi
}

log "timing the legacy pipeline ($LEGACY_RUNS runs)"
measure "$LEGACY_RUNS" 1 "bash $(q "$SCRIPT_DIR/legacy-list.sh") $(q "$list_tree")"
legacy_mean=$MEAN legacy_median=$MEDIAN

declare -A list_mean list_median
for scheme in content gvisor; do
	for how in cargo bin; do
		log "timing the xtask listing, $scheme scheme, $how ($LIST_RUNS runs)"
		measure "$LIST_RUNS" 3 "$(xtask_cmd "$scheme" "$how")" "$build_cmd"
		list_mean[$scheme-$how]=$MEAN
		list_median[$scheme-$how]=$MEDIAN
	done
done

target_note() { # RATIO TARGET
	awk -v r="$1" -v t="$2" 'BEGIN { print (r >= t) ? "target >= " t "x met" : "target >= " t "x NOT met" }'
}

echo
echo "== Part 1: list-all-images --json over $IMAGE_COUNT images ($list_files files, $(calc %.1f "$list_bytes / 1e6") MB, ${#groups[@]} groups, 4 nested) =="
echo "   timed with $( ((have_hyperfine)) && echo hyperfine || echo 'a date +%s%N loop'), build excluded; mean (median) of the runs"
printf '%-52s %8s s (%s)  runs %s\n' "legacy pipeline (tests/bench/legacy-list.sh)" \
	"$(calc %.3f "$legacy_mean")" "$(calc %.3f "$legacy_median")" "$LEGACY_RUNS"
for scheme in content gvisor; do
	for how in cargo bin; do
		if [[ $how == cargo ]]; then
			what="cargo xtask list-all-images --json"
		else
			what="target/debug/xtask list-all-images --json"
		fi
		m=${list_mean[$scheme-$how]}
		ratio=$(calc %.1f "$legacy_mean / $m")
		printf '%-52s %8s s (%s)  runs %s  legacy/xtask %sx  %s\n' "$what [$scheme]" \
			"$(calc %.3f "$m")" "$(calc %.3f "${list_median[$scheme-$how]}")" "$LIST_RUNS" \
			"$ratio" "$(target_note "$ratio" "$LIST_TARGET")"
	done
done
echo "gvisor tags equal to the legacy pipeline's: $gvisor_equal/$IMAGE_COUNT images"

# ---- part 2: hashing throughput -----------------------------------------------

# make_blob_tree DIR FILE_SIZE: one image of HASH_MIB MiB of random data, cut
# into files of FILE_SIZE (a `split -b` size).
make_blob_tree() {
	local dir=$1/images/blob
	mkdir -p "$dir"
	printf 'FROM scratch\nCOPY . /\n' >"$dir/Dockerfile"
	head -c "$((HASH_MIB * 1024 * 1024))" /dev/urandom | split -b "$2" -d -a 4 - "$dir/part-"
}

openssl_speed=""
if ((have_openssl)); then
	log "measuring openssl speed -evp sha256 (one thread)"
	openssl_speed=$(openssl speed -mr -seconds 3 -bytes 16384 -evp sha256 2>/dev/null |
		awk -F: '/^\+F:/ { print $4 }')
fi

echo
echo "== Part 2: hashing throughput, ${HASH_MIB} MiB trees read from the page cache, $cores cores =="
if [[ -n $openssl_speed ]]; then
	printf '%-52s %8s MB/s per core (16 KiB blocks); x%s cores = %s MB/s\n' "openssl speed -evp sha256" \
		"$(calc %.0f "$openssl_speed / 1e6")" "$cores" "$(calc %.0f "$openssl_speed * $cores / 1e6")"
fi
if grep -qw sha_ni /proc/cpuinfo 2>/dev/null; then
	echo "cpu: sha_ni present"
else
	echo "cpu: no sha_ni"
fi
sha256sum_bin=$(command -v sha256sum)
if ldd "$sha256sum_bin" 2>/dev/null | grep -q libcrypto; then
	echo "coreutils $sha256sum_bin links libcrypto (OpenSSL): it may use the SHA extensions itself"
else
	echo "coreutils $sha256sum_bin does not link libcrypto: it uses its own portable SHA-256"
fi

for count in 64 4096; do
	kib=$((HASH_MIB * 1024 / count))
	size=${kib}K
	if ((kib % 1024 == 0)); then label=${count}x$((kib / 1024))MiB; else label=${count}x${kib}KiB; fi
	root=$tmp/hash-$label
	log "generating $label ($HASH_MIB MiB) in $root"
	make_blob_tree "$root" "$size"
	dir=$root/images
	files=$(find "$dir" -type f | wc -l)
	bytes=$(find "$dir" -type f -printf '%s\n' | awk '{ s += $1 } END { print s }')
	log "warming the page cache"
	find "$dir" -type f -print0 | xargs -0 cat >/dev/null

	qdir=$(q "$dir")
	declare -A cmds=(
		[cargo]="IMAGES_DIR=$qdir TAG_SCHEME=content $(q "$CARGO") xtask list-all-images --json"
		[bin]="IMAGES_DIR=$qdir TAG_SCHEME=content $(q "$xtask_bin") list-all-images --json"
		[bin1]="RAYON_NUM_THREADS=1 IMAGES_DIR=$qdir TAG_SCHEME=content $(q "$xtask_bin") list-all-images --json"
		[sha256sum]="find $qdir -type f -print0 | xargs -0 sha256sum"
		[dgst]="find $qdir -type f -print0 | xargs -0 openssl dgst -sha256"
	)
	declare -A names=(
		[cargo]="cargo xtask list-all-images --json"
		[bin]="target/debug/xtask list-all-images --json"
		[bin1]="  same, RAYON_NUM_THREADS=1"
		[sha256sum]="xargs -0 sha256sum (coreutils, one process)"
		[dgst]="xargs -0 openssl dgst -sha256 (one thread)"
	)
	order=(cargo bin bin1 sha256sum)
	((have_openssl)) && order+=(dgst)
	declare -A rate=()
	echo "-- $label: $files files, $(calc %.0f "$bytes / 1e6") MB"
	for k in "${order[@]}"; do
		log "timing $k on $label ($HASH_RUNS runs)"
		prepare=true
		[[ $k == cargo ]] && prepare=$build_cmd
		measure "$HASH_RUNS" 1 "${cmds[$k]}" "$prepare"
		rate[$k]=$(calc %.1f "$bytes / $MEAN / 1e6")
		printf '%-52s %8s s (%s)  %7s MB/s\n' "${names[$k]}" \
			"$(calc %.3f "$MEAN")" "$(calc %.3f "$MEDIAN")" "$(calc %.0f "${rate[$k]}")"
	done
	for k in cargo bin; do
		ratio=$(calc %.1f "${rate[$k]} / ${rate[sha256sum]}")
		printf '%-52s %8sx  %s\n' "ratio xtask/sha256sum (${names[$k]%% *})" "$ratio" \
			"$(target_note "$ratio" "$HASH_TARGET")"
	done
	printf '%-52s %8sx  (all cores / RAYON_NUM_THREADS=1)\n' "xtask parallel gain" \
		"$(calc %.2f "${rate[bin]} / ${rate[bin1]}")"
	if [[ -n $openssl_speed ]]; then
		printf '%-52s %7s%%  of %s cores x openssl speed\n' "xtask (target/debug/xtask) vs hardware ceiling" \
			"$(calc %.0f "${rate[bin]} * 1e8 / ($openssl_speed * $cores)")" "$cores"
		printf '%-52s %8sx  (%s cores x openssl speed / sha256sum)\n' "best ratio xtask/sha256sum possible here" \
			"$(calc %.1f "$openssl_speed * $cores / 1e6 / ${rate[sha256sum]}")" "$cores"
	fi
	rm -rf "$root"
	unset cmds names rate
done

echo
echo "load average (1, 5, 15 min) at start: $load_start; at end: $(load); $cores cores"
echo "   (a load well above 0 means other work shared the machine and the figures are pessimistic)"
echo "total benchmark time: $((SECONDS - started)) s"
