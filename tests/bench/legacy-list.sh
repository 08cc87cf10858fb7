#!/usr/bin/env bash
# The legacy Makefile's image listing, as a stand-alone script: what every
# `make` invocation computed while parsing, before running any target.
#
#   discovery: cd images && find . -name Dockerfile -o -name Dockerfile.$ARCH | xargs -n 1 dirname | uniq
#   each tag:  cd images && find <path> -type f | sort -f -d | xargs -n 1 sha256sum | sha256sum - | cut -c 1-16
#
# The pipelines are kept as the Makefile wrote them (one process chain per
# image, `xargs -n 1`), including their limits: file names with blanks break
# `xargs`, and `uniq` only folds adjacent duplicates. The Makefile also ran
# `docker images` once per invocation; no engine is involved here.
#
# Usage: tests/bench/legacy-list.sh [IMAGES_DIR]   (default: $IMAGES_DIR, else ./images)
# Prints `<name> <tag>` per image, in discovery order.
# Honours ARCH (default: uname -m).
set -euo pipefail
export LC_ALL=C

images=${1:-${IMAGES_DIR:-images}}
arch=${ARCH:-$(uname -m)}
cd "$images"

# shellcheck disable=SC2038 # the Makefile's pipeline, blanks and all
for dir in $(find . -name Dockerfile -o -name "Dockerfile.$arch" | xargs -n 1 dirname | uniq); do
	path=${dir#./}
	# shellcheck disable=SC2038
	tag=$(find "$path" -type f | sort -f -d | xargs -n 1 sha256sum | sha256sum - | cut -c 1-16)
	printf '%s %s\n' "${path//\//_}" "$tag"
done
