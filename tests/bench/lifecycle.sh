#!/usr/bin/env bash
# Measures `prune` and `gc` at scale: a generated images root of 10,000
# images and 1,000,000 files (the tree of tests/bench/scale.sh), in a git
# repository of 50 commits (the first adds the tree; each later one changes a
# file in 20 images, and every tenth also a Dockerfile, adds an image and
# removes one), made with `git fast-import`; the work tree is written to
# match the last commit.
#
#   gc --keep-since 3650d   tags at every one of the 50 commits, from git
#                           objects, against a registry of the bench's own
#                           (docker-registry, deletes enabled) holding each
#                           image's current tag and one stale tag: a dry run,
#                           which must list exactly the 10,000 stale tags
#   prune --dry-run, prune  current tags of every image for both
#                           architectures (the tree in the page cache),
#                           against the engine holding 500 stale names under
#                           the bench's prefixes
#
# Each is timed once with GNU time (wall time and peak resident memory of the
# xtask; when /usr/bin/time is missing, a wrapper reads VmHWM from
# /proc/<pid>/status). gc must leave the work tree and the repository's refs,
# index and worktrees as they were: nothing is checked out.
#
# Usage: tests/bench/lifecycle.sh      (as root, or a user of the engine)
#
# Needs python3, git, docker-registry and a docker daemon (tests/env/up.sh
# installs them). The xtask is built first (the dev profile `cargo xtask`
# runs), so that build time is not measured.
#
# Optional environment:
#   BENCH_TMPDIR   where the tree and the registry go (default: $TMPDIR or /tmp)
#   BENCH_IMAGES   number of images (default 10000)
#   BENCH_KEEP=1   keep the tree and print where it is
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)
CARGO=${CARGO:-cargo}

IMAGES=${BENCH_IMAGES:-10000}
COMMITS=50
STALE_LOCAL=500
FILES=$((IMAGES * 100))

die() {
	echo "lifecycle.sh: $*" >&2
	exit 1
}
log() { echo "-- $*" >&2; }

for tool in python3 git docker docker-registry df "$CARGO"; do
	command -v "$tool" >/dev/null || die "$tool is required: install it (tests/env/up.sh does) and run again"
done
docker version >/dev/null 2>&1 || die "the docker daemon does not answer: start it"

parent=${BENCH_TMPDIR:-${TMPDIR:-/tmp}}
need_kib=$(((FILES + FILES / 20) * 4 * 2))
free_kib=$(df -Pk "$parent" | awk 'NR == 2 { print $4 }')
((free_kib >= need_kib)) || die "$parent has $((free_kib / 1024)) MiB free, the bench needs about $((need_kib / 1024)) MiB: set BENCH_TMPDIR"

tmp=$(mktemp -d "$parent/xtask-lifecycle.XXXXXX")
prefix_id="xtask-bench-lifecycle-$$"
registry_pid=
cleanup() {
	if [[ -n $registry_pid ]]; then
		kill "$registry_pid" 2>/dev/null || true
		wait "$registry_pid" 2>/dev/null || true
	fi
	# Only this bench's own names.
	docker images --format '{{.Repository}}:{{.Tag}}' | grep -F "/$prefix_id/" | xargs -r docker rmi >/dev/null 2>&1 || true
	if [[ ${BENCH_KEEP:-} == 1 ]]; then
		log "kept everything in $tmp"
	else
		rm -rf "$tmp"
	fi
}
trap cleanup EXIT

unset IMAGES_CONFIG NON_TEST_IMAGES DOCKER_BUILD_ARGS LOCAL_IMAGE_PREFIX REMOTE_IMAGE_PREFIX TAG_SCHEME ARCH RAYON_NUM_THREADS
export LC_ALL=C

log "building the xtask (not timed)"
(cd "$REPO_ROOT" && "$CARGO" build --quiet -p xtask) || die "cargo build -p xtask failed"
target_dir=$(cd "$REPO_ROOT" && "$CARGO" metadata --format-version 1 --no-deps |
	python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')
xtask_bin=$target_dir/debug/xtask
[[ -x $xtask_bin ]] || die "no xtask binary at $xtask_bin"

# ---- the repository: history by fast-import, the work tree as the last commit
repo=$tmp/repo
export IMAGES_DIR=$repo/images
log "writing $COMMITS commits of $IMAGES images ($FILES files) and the work tree under $repo"
gen_start=$(date +%s%N)
git init -q "$repo"
python3 - "$repo" "$IMAGES" "$COMMITS" <<'EOF' | git -C "$repo" fast-import --quiet
import os, sys
repo, images, commits = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
LAYOUT = [("src", 40), ("data", 30), ("data/more", 29)]
out = sys.stdout.buffer

def path(i):
    return f"images/g{i // 100:03d}/i{i:05d}"

def dockerfile(i, rev):
    return f"FROM scratch\nLABEL n={i} r={rev}\nCOPY . /\n".encode()

def files(i):
    for sub, count in LAYOUT:
        for k in range(count):
            yield f"{sub}/f{k:02d}.txt", b"%d %s %d\n" % (i, sub.encode(), k)

tree = {}  # path -> bytes, the state after the last commit
def put(p, data):
    tree[p] = data
    out.write(b"M 100644 inline %s\ndata %d\n" % (p.encode(), len(data)))
    out.write(data)
    out.write(b"\n")

def delete(p):
    for q in [q for q in tree if q == p or q.startswith(p + "/")]:
        del tree[q]
    out.write(b"D %s\n" % p.encode())

alive = list(range(images))
next_image = images
for rev in range(commits):
    when = 1700000000 + rev * 3600
    out.write(b"commit refs/heads/main\n")
    out.write(b"committer bench <bench@example.com> %d +0000\n" % when)
    message = b"revision %d\n" % rev
    out.write(b"data %d\n%s\n" % (len(message), message))
    if rev == 0:
        for i in alive:
            put(f"{path(i)}/Dockerfile", dockerfile(i, 0))
            for name, data in files(i):
                put(f"{path(i)}/{name}", data)
    else:
        for j in range(20):
            i = alive[(rev * 97 + j * 499) % len(alive)]
            put(f"{path(i)}/src/f00.txt", b"%d src 0 changed at %d\n" % (i, rev))
        if rev % 10 == 0:
            i = alive[(rev * 31) % len(alive)]
            put(f"{path(i)}/Dockerfile", dockerfile(i, rev))
            gone = alive.pop((rev * 53) % len(alive))
            delete(path(gone))
            i = next_image
            next_image += 1
            alive.append(i)
            put(f"{path(i)}/Dockerfile", dockerfile(i, rev))
            for name, data in files(i):
                put(f"{path(i)}/{name}", data)
    out.write(b"\n")
out.flush()

# The work tree: the last commit's files.
for p, data in tree.items():
    full = os.path.join(repo, p)
    os.makedirs(os.path.dirname(full), exist_ok=True)
    with open(full, "wb") as f:
        f.write(data)
EOF
git -C "$repo" symbolic-ref HEAD refs/heads/main
gen_secs=$(python3 -c "print(f'{($(date +%s%N) - $gen_start) / 1e9:.1f}')")
commits=$(git -C "$repo" rev-list --count HEAD)
((commits == COMMITS)) || die "made $commits commits, not $COMMITS"
pack_mib=$(du -sk "$repo/.git" | awk '{ printf "%d", $1 / 1024 }')
log "wrote the history ($pack_mib MiB of git objects) and the work tree in ${gen_secs}s"

# ---- measuring ----------------------------------------------------------------
# Runs the xtask; sets secs and rss_kib; its stdout goes to $tmp/out, its
# stderr to $tmp/err.
measure() {
	if [[ -x /usr/bin/time ]]; then
		/usr/bin/time -f '%e %M' -o "$tmp/time" "$xtask_bin" "$@" >"$tmp/out" 2>"$tmp/err" || {
			cat "$tmp/err" >&2
			die "xtask $* failed"
		}
		read -r secs rss_kib <"$tmp/time"
	else
		local start peak=0 now pid
		start=$(date +%s%N)
		"$xtask_bin" "$@" >"$tmp/out" 2>"$tmp/err" &
		pid=$!
		while kill -0 "$pid" 2>/dev/null; do
			now=$(awk '/^VmHWM:/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
			((${now:-0} > peak)) && peak=$now
			sleep 0.05
		done
		wait "$pid" || {
			cat "$tmp/err" >&2
			die "xtask $* failed"
		}
		secs=$(python3 -c "print(f'{($(date +%s%N) - $start) / 1e9:.2f}')")
		rss_kib=$peak
	fi
}

results=()
record() {
	results+=("$(printf '%-34s %9.2f %9d' "$1" "$secs" "$((rss_kib / 1024))")")
}

# ---- gc ------------------------------------------------------------------------
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$tmp/registry"
cat >"$tmp/registry/config.yml" <<EOF
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $tmp/registry/data
  delete:
    enabled: true
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$tmp/registry/config.yml" >"$tmp/registry/log" 2>&1 &
registry_pid=$!
for _ in $(seq 100); do
	python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v2/')" 2>/dev/null && break
	sleep 0.1
done
export REMOTE_IMAGE_PREFIX=127.0.0.1:$port/$prefix_id
export LOCAL_IMAGE_PREFIX=xtask-bench.local/$prefix_id

log "current tags (not timed), to fill the registry"
"$xtask_bin" list-all-images --json >"$tmp/current.json" || die "list-all-images --json failed"
log "filling the registry: each image's current tag and one stale tag"
python3 - "$port" "$prefix_id" "$tmp/current.json" <<'EOF'
import hashlib, http.client, json, sys, threading
port, prefix, current = int(sys.argv[1]), sys.argv[2], sys.argv[3]
rows = json.load(open(current))
config = json.dumps({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}).encode()
layer = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00"
digest = lambda b: "sha256:" + hashlib.sha256(b).hexdigest()

def request(conn, method, path, body=b"", headers=None):
    conn.request(method, path, body=body, headers=headers or {})
    r = conn.getresponse()
    data = r.read()
    if r.status >= 300:
        sys.exit(f"{method} {path}: {r.status} {data[:200]!r}")
    return r

seed = http.client.HTTPConnection("127.0.0.1", port)
for blob in (config, layer):
    r = request(seed, "POST", f"/v2/{prefix}/seed/blobs/uploads/")
    loc = r.getheader("Location")
    loc = loc[loc.index("/v2/"):]
    request(seed, "PUT", f"{loc}{'&' if '?' in loc else '?'}digest={digest(blob)}", blob,
            {"Content-Type": "application/octet-stream"})

def fill(part):
    conn = http.client.HTTPConnection("127.0.0.1", port)
    for row in part:
        repo = f"{prefix}/{row['path']}_{row['arch']}"
        for blob in (config, layer):
            request(conn, "POST", f"/v2/{repo}/blobs/uploads/?mount={digest(blob)}&from={prefix}/seed")
        stale = hashlib.sha256(row["name"].encode()).hexdigest()[:16]
        for tag in (row["tag"], stale):
            manifest = json.dumps({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": digest(config), "size": len(config)},
                "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest(layer), "size": len(layer)}],
                "annotations": {"tag": tag},
            }).encode()
            request(conn, "PUT", f"/v2/{repo}/manifests/{tag}", manifest,
                    {"Content-Type": "application/vnd.oci.image.manifest.v1+json"})

threads = [threading.Thread(target=fill, args=(rows[k::4],)) for k in range(4)]
for t in threads: t.start()
for t in threads: t.join()
EOF

before=$tmp/before
(cd "$repo" && git rev-parse HEAD && git for-each-ref && git worktree list --porcelain && ls -la .git) >"$before"
touch "$tmp/marker"
sleep 1
log "timing: gc --keep-since 3650d (dry run)"
measure gc --keep-since 3650d
grep -q "^keeping the tags of $COMMITS commits$" "$tmp/err" || die "gc did not keep $COMMITS commits: $(head -1 "$tmp/err")"
would=$(grep -c '^would delete ' "$tmp/out" || true)
((would == IMAGES)) || die "gc would delete $would tags, not $IMAGES"
grep -q '^total: '"$IMAGES"' tags would be deleted, 0 kept; ' "$tmp/out" || die "gc's total: $(tail -1 "$tmp/out")"
record "gc dry run, $COMMITS revisions"
gc_secs=$secs
gc_rss=$rss_kib
changed=$(find "$repo" -newer "$tmp/marker" -not -path "$repo/.git/objects/*" | wc -l)
after=$tmp/after
(cd "$repo" && git rev-parse HEAD && git for-each-ref && git worktree list --porcelain && ls -la .git) >"$after"
cmp -s "$before" "$after" || die "gc changed the repository: $(diff "$before" "$after")"
((changed == 0)) || die "gc changed $changed paths in the work tree or repository"
[[ ! -e $repo/.git/index ]] || die "gc wrote an index"

# ---- prune ---------------------------------------------------------------------
log "making $STALE_LOCAL stale local names"
mkdir -p "$tmp/tiny"
echo "$prefix_id" >"$tmp/tiny/f"
printf 'FROM scratch\nCOPY f /f\n' >"$tmp/tiny/Dockerfile"
tiny=$(DOCKER_BUILDKIT=0 docker build -q "$tmp/tiny" 2>/dev/null || docker build -q "$tmp/tiny")
python3 - "$tmp/current.json" "$STALE_LOCAL" "$LOCAL_IMAGE_PREFIX" "$REMOTE_IMAGE_PREFIX" >"$tmp/stale-names" <<'EOF'
import json, sys
rows, n, local, remote = json.load(open(sys.argv[1])), int(sys.argv[2]), sys.argv[3], sys.argv[4]
for k, row in enumerate(rows[:n]):
    prefix = f"{local}/{row['path']}" if k % 2 else f"{remote}/{row['path']}_{row['arch']}"
    print(f"{prefix}:{'%016x' % k}")
EOF
xargs -n 1 docker tag "$tiny" <"$tmp/stale-names"
# A stale-looking name outside the prefixes, on an image of its own: it stays.
echo "$prefix_id other" >"$tmp/tiny/f"
other=$(DOCKER_BUILDKIT=0 docker build -q "$tmp/tiny" 2>/dev/null || docker build -q "$tmp/tiny")
docker tag "$other" "xtask-bench.other/$prefix_id/untouched:0000000000000000"

# As scale.sh's listings: the tree is read from the page cache, so that the
# figures are the tool's, not the disk's.
log "reading the tree once (not timed)"
"$xtask_bin" list-all-images --json >/dev/null
log "timing: prune --dry-run"
measure prune --dry-run
lines=$(grep -c '^would remove' "$tmp/out" || true)
((lines == STALE_LOCAL)) || die "prune --dry-run lists $lines names, not $STALE_LOCAL"
record "prune --dry-run, $STALE_LOCAL stale"
log "timing: prune"
measure prune
lines=$(grep -c '^removed' "$tmp/out" || true)
((lines == STALE_LOCAL)) || die "prune removed $lines names, not $STALE_LOCAL"
prune_total=$(tail -1 "$tmp/out")
record "prune, $STALE_LOCAL stale"
left=$(docker images --format '{{.Repository}}:{{.Tag}}' | grep -cF "/$prefix_id/" || true)
((left == 1)) || die "$left names of the bench are left, not the one outside the prefixes"
docker rmi "xtask-bench.other/$prefix_id/untouched:0000000000000000" >/dev/null

echo
echo "xtask gc and prune on $IMAGES images, $FILES files, $COMMITS commits; $(nproc) cores, debug build"
printf '%-34s %9s %9s\n' run seconds "RSS MiB"
printf '%s\n' "${results[@]}"
echo "gc: $IMAGES stale tags listed of $((IMAGES * 2)) in $IMAGES repositories; work tree, refs, index and worktrees unchanged (nothing checked out)"
echo "prune: $prune_total"
