#!/usr/bin/env bash
# The legacy Makefile's load, as a stand-alone script, for benchmarks: the
# same engine calls in the same order, and the same parse cost (every `make`
# invocation, the recursive ones included, hashed every image and listed every
# local image before running a target).
#
# Usage: tests/bench/legacy-images.sh load-all [JOBS]   like `make -jJOBS load-all-images`
#        tests/bench/legacy-images.sh load IMAGE         one `load-IMAGE` recipe
# Environment: IMAGES_DIR, ARCH, REMOTE_IMAGE_PREFIX, LOCAL_IMAGE_PREFIX.
set -euo pipefail
export LC_ALL=C
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
images=${IMAGES_DIR:?set IMAGES_DIR}
arch=${ARCH:-$(uname -m)}
local_prefix=${LOCAL_IMAGE_PREFIX:-gvisor.dev/images}
remote_prefix=${REMOTE_IMAGE_PREFIX:?set REMOTE_IMAGE_PREFIX}

# What each make invocation did while parsing: every tag, every local image.
parse() {
	"$here/legacy-list.sh" "$images" >"$state/tags"
	docker images --format '{{.Repository}}:{{.Tag}}' >"$state/local"
}

tag_of() { awk -v n="$1" '$1 == n { print $2 }' "$state/tags"; }

load() {
	local name=$1 path=${1//_//} tag
	# The "already loaded" check reads the list the top-level make parsed.
	tag=$(tag_of "$name")
	local local_ref=$local_prefix/$path:$tag remote_ref=$remote_prefix/${path}_$arch:$tag
	if ! grep -qxF "$local_ref" "$state/local"; then
		if ! docker pull -q "$remote_ref" >/dev/null 2>&1; then
			(state=$(mktemp -d) && parse && rm -rf "$state") # `$(MAKE) rebuild-$*` parses again
			local ctx
			ctx=$(mktemp -d)
			local dockerfile=Dockerfile
			[ -f "$images/$path/Dockerfile.$arch" ] && dockerfile=Dockerfile.$arch
			cp -a "$images/$path"/* "$ctx"/
			docker build -q -f "$ctx/$dockerfile" -t "$remote_ref" "$ctx" >/dev/null 2>&1
			rm -rf "$ctx"
		fi
	fi
	docker tag "$remote_ref" "$local_ref" 2>/dev/null || docker tag "$local_ref" "$local_ref"
	docker tag "$local_ref" "$local_prefix/$path:latest"
}

case ${1:-} in
load)
	state=${LEGACY_STATE:?}
	load "$2"
	;;
load-all)
	jobs=${2:-1}
	state=$(mktemp -d)
	trap 'rm -rf "$state"' EXIT
	parse # the top-level make
	awk '{ print $1 }' "$state/tags" | LEGACY_STATE=$state xargs -P "$jobs" -n 1 "$0" load
	;;
*)
	echo "usage: $0 load-all [JOBS] | load IMAGE" >&2
	exit 2
	;;
esac
