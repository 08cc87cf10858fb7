#!/usr/bin/env bash
# Measures the listing at scale: a generated images root of 10,000 images and
# 1,000,000 files (each image a Dockerfile and 99 files of a few bytes in
# three subdirectories, grouped 100 images to a top-level directory), listed
# by `xtask list-all-images` three ways:
#
#   plain            names only, nothing hashed
#   --json content   every file of every build context hashed (TAG_SCHEME=content)
#   --json gvisor    the legacy tag (TAG_SCHEME=gvisor)
#
# Each is timed once with `/usr/bin/time -v` for wall time and peak resident
# memory; each JSON listing must have 10,000 entries, with a 16-hex-digit tag
# each, all distinct. The files were just written, so they are read from the
# page cache.
#
# Usage: tests/bench/scale.sh
#
# The xtask is built first (`cargo build -p xtask`, the dev profile that
# `cargo xtask` runs) so that build time is not measured. Needs python3 and
# GNU time (installed with apt-get when missing and running as root).
#
# Optional environment:
#   BENCH_TMPDIR   where the tree goes (default: $TMPDIR or /tmp)
#   BENCH_IMAGES   number of images (default 10000)
#   BENCH_KEEP=1   keep the tree and print where it is
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
CARGO=${CARGO:-cargo}

IMAGES=${BENCH_IMAGES:-10000}
FILES_PER_IMAGE=100 # the Dockerfile and 99 others
FILES=$((IMAGES * FILES_PER_IMAGE))
MEMORY_LIMIT_MIB=1024 # peak RSS above this is reported as a fault

die() {
	echo "scale.sh: $*" >&2
	exit 1
}
log() { echo "-- $*" >&2; }

for tool in python3 df "$CARGO"; do
	command -v "$tool" >/dev/null || die "$tool is required: install it and run again"
done
if [[ ! -x /usr/bin/time ]]; then
	if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
		log "installing GNU time"
		apt-get install -y -qq time >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq time >/dev/null; }
	fi
	[[ -x /usr/bin/time ]] || die "GNU time (/usr/bin/time) is required: install the time package"
fi

parent=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
# 4 KiB blocks per file and directory, with room to spare.
need_kib=$(((FILES + FILES / 20) * 4 * 3 / 2))
need_inodes=$((FILES + FILES / 10))
free_kib=$(df -Pk "$parent" | awk 'NR == 2 { print $4 }')
free_inodes=$(df -Pi "$parent" | awk 'NR == 2 { print $4 }')
((free_kib >= need_kib)) || die "$parent has $((free_kib / 1024)) MiB free, the tree needs about $((need_kib / 1024)) MiB: set BENCH_TMPDIR"
# Some file systems report no inode count (-); they have no fixed limit.
if [[ $free_inodes =~ ^[0-9]+$ ]] && ((free_inodes < need_inodes)); then
	die "$parent has $free_inodes free inodes, the tree needs $need_inodes: set BENCH_TMPDIR"
fi

tmp=$(mktemp -d "$parent/xtask-scale.XXXXXX")
cleanup() {
	if [[ ${BENCH_KEEP:-} == 1 ]]; then
		log "kept the tree in $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT

# Only the settings the benchmark chooses reach the xtask.
unset IMAGES_CONFIG NON_TEST_IMAGES DOCKER_BUILD_ARGS LOCAL_IMAGE_PREFIX REMOTE_IMAGE_PREFIX RAYON_NUM_THREADS TAG_SCHEME
export LC_ALL=C IMAGES_DIR=$tmp/images

log "building the xtask (not timed)"
(cd "$REPO_ROOT" && "$CARGO" build --quiet -p xtask) || die "cargo build -p xtask failed"
target_dir=$(cd "$REPO_ROOT" && "$CARGO" metadata --format-version 1 --no-deps |
	python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
xtask_bin=$target_dir/debug/xtask
[[ -x $xtask_bin ]] || die "no xtask binary at $xtask_bin"

log "writing $IMAGES images, $FILES files under $tmp"
gen_start=$(date +%s%N)
python3 - "$IMAGES_DIR" "$IMAGES" <<'EOF'
import os, sys
from multiprocessing import Pool

root, images = sys.argv[1], int(sys.argv[2])
# 99 files besides the Dockerfile: 40 in src/, 30 in data/, 29 in data/more/.
LAYOUT = [("src", 40), ("data", 30), ("data/more", 29)]

def write(path, data):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    os.write(fd, data)
    os.close(fd)

def image(i):
    d = os.path.join(root, f"g{i // 100:03d}", f"i{i:05d}")
    os.makedirs(d)
    write(os.path.join(d, "Dockerfile"), f"FROM scratch\nLABEL n={i}\nCOPY . /\n".encode())
    for sub, count in LAYOUT:
        sd = os.path.join(d, sub)
        os.makedirs(sd, exist_ok=True)
        for k in range(count):
            write(os.path.join(sd, f"f{k:02d}.txt"), b"%d %s %d\n" % (i, sub.encode(), k))

os.makedirs(root)
with Pool(os.cpu_count()) as pool:
    for _ in pool.imap_unordered(image, range(images), chunksize=50):
        pass
EOF
gen_secs=$(python3 -c "print(f'{($(date +%s%N) - $gen_start) / 1e9:.1f}')")
written=$(find "$IMAGES_DIR" -type f | wc -l)
((written == FILES)) || die "wrote $written files, not $FILES"
tree_mib=$(du -sk "$tmp" | awk '{ printf "%d", $1 / 1024 }')
log "wrote $written files ($tree_mib MiB on disk) in ${gen_secs}s"

# Runs the xtask under GNU time; sets secs and rss_kib, and leaves its stdout
# in $tmp/out.
measure() {
	/usr/bin/time -v -o "$tmp/time" "$xtask_bin" "$@" >"$tmp/out" || {
		cat "$tmp/time" >&2
		die "xtask $* failed"
	}
	awk -F': ' '
		/Elapsed \(wall clock\)/ {
			n = split($2, t, ":"); s = 0
			for (i = 1; i <= n; i++) s = s * 60 + t[i]
		}
		/Maximum resident set size/ { rss = $2 }
		END { print s, rss }' "$tmp/time" >"$tmp/figures"
	read -r secs rss_kib <"$tmp/figures"
}

check_json() {
	python3 - "$tmp/out" "$IMAGES" "$1" <<'EOF'
import json, re, sys
path, want, scheme = sys.argv[1], int(sys.argv[2]), sys.argv[3]
rows = json.load(open(path))
if len(rows) != want:
    sys.exit(f"{scheme}: {len(rows)} entries in the JSON listing, not {want}")
bad = [r["name"] for r in rows if not re.fullmatch(r"[0-9a-f]{16}", r["tag"])]
if bad:
    sys.exit(f"{scheme}: malformed tags for {bad[:3]}")
tags = {r["tag"] for r in rows}
if len(tags) != want:
    sys.exit(f"{scheme}: {want - len(tags)} images share a tag with another")
EOF
}

results=()
over_limit=()
run_case() {
	local label=$1
	shift
	log "timing: $label"
	measure "$@"
	case $label in
	plain) (($(wc -l <"$tmp/out") == IMAGES)) || die "plain listing has $(wc -l <"$tmp/out") names, not $IMAGES" ;;
	*) check_json "${label#json }" ;;
	esac
	local rss_mib=$((rss_kib / 1024))
	((rss_mib <= MEMORY_LIMIT_MIB)) || over_limit+=("$label: $rss_mib MiB")
	results+=("$(printf '%-14s %10d %8d %9.2f %9d %12.0f' "$label" "$FILES" "$IMAGES" "$secs" "$rss_mib" \
		"$(python3 -c "print($FILES / max($secs, 0.01))")")")
}

run_case plain list-all-images
TAG_SCHEME=content run_case "json content" list-all-images --json
TAG_SCHEME=gvisor run_case "json gvisor" list-all-images --json

echo
echo "xtask list-all-images on $IMAGES images, $FILES files ($tree_mib MiB), $(nproc) cores, debug build"
printf '%-14s %10s %8s %9s %9s %12s\n' listing files images seconds "RSS MiB" "files/s"
printf '%s\n' "${results[@]}"
if ((${#over_limit[@]})); then
	printf 'peak memory over %d MiB: %s\n' "$MEMORY_LIMIT_MIB" "${over_limit[*]}" >&2
	exit 1
fi
