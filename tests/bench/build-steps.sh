#!/usr/bin/env bash
# What the tool adds to each build, step by step: a cold `load-all-images
# --jobs 1 -v` of N generated `FROM scratch` images (three COPY steps each),
# every line of its output time-stamped as it comes, and per image the
# median milliseconds of: the build up to the tool's provenance `LABEL` step
# (what the engine alone would also spend), the `LABEL` step, the inspect
# that checks the image is for ARCH, and the naming until the next build
# starts; and the time before the first build (engine check, listing,
# registry look-ups).
#
# Usage (as root, after tests/env/up.sh): tests/bench/build-steps.sh XTASK ENGINE [N]
#   XTASK   a build of the tool (e.g. target/debug/xtask)
#   ENGINE  docker or podman
#   N       images (default 20)
# Removes its images by name at the end.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
[ $# -ge 2 ] || { echo "usage: $0 XTASK docker|podman [N]" >&2; exit 2; }
bin=$(realpath "$1") engine=$2 n=${3:-20}
# shellcheck disable=SC1091
. "$root/target/test-env/env.sh"
work=$(mktemp -d "${TMPDIR:-/tmp}/build-steps.XXXXXX")
salt=$RANDOM$RANDOM
cleanup() {
	for program in docker podman; do
		"$program" images --format '{{.Repository}}:{{.Tag}}' 2>/dev/null | grep -F "steps$salt" |
			xargs -r "$program" rmi -f >/dev/null 2>&1 || true
	done
	rm -rf "$work"
}
trap cleanup EXIT
for i in $(seq 1 "$n"); do
	mkdir -p "$work/images/img$i"
	for f in a b c; do echo "$f $i $salt" >"$work/images/img$i/$f.txt"; done
	printf 'FROM scratch\nCOPY a.txt /a.txt\nCOPY b.txt /b.txt\nCOPY c.txt /c.txt\n' >"$work/images/img$i/Dockerfile"
done
: >"$work/empty.toml"
start=$(date +%s.%N)
IMAGES_DIR=$work/images IMAGES_CONFIG=$work/empty.toml IMAGES_ENGINE=$engine \
	REMOTE_IMAGE_PREFIX=$XTASK_TEST_REGISTRY/steps$salt LOCAL_IMAGE_PREFIX=steps.local/steps$salt \
	"$bin" load-all-images -v --jobs 1 2>&1 | perl -MTime::HiRes=time -ne 'printf "%.4f %s", time, $_' >"$work/trace"
end=$(date +%s.%N)
perl -e '
	my ($trace, $start, $end, $n) = @ARGV;
	my (%at, @order, $first);
	open my $t, "<", $trace or die;
	while (<$t>) {
		my ($when, $line) = split / /, $_, 2;
		chomp $line;
		next unless $line =~ /^(img\d+) \| (.*)$/;
		my ($img, $x) = ($1, $2);
		if ($x =~ /^\$ \S+ build /) { $at{$img}{build} = $when; push @order, $img; $first //= $when }
		elsif ($x =~ /^(Step \d+\/\d+ : LABEL|STEP \d+\/\d+: LABEL)/) { $at{$img}{label} = $when }
		elsif ($x =~ /^\$ \S+ (image )?inspect/ && !$at{$img}{inspect}) { $at{$img}{inspect} = $when }
		elsif ($x =~ /^\$ \S+ tag / && !$at{$img}{tag}) { $at{$img}{tag} = $when }
	}
	my (@build, @label, @inspect, @tags);
	for my $k (0 .. $#order - 1) {
		my ($h, $next) = ($at{$order[$k]}, $at{$order[$k + 1]}{build});
		next unless $h->{label} && $h->{inspect} && $h->{tag};
		push @build, $h->{label} - $h->{build};
		push @label, $h->{inspect} - $h->{label};
		push @inspect, $h->{tag} - $h->{inspect};
		push @tags, $next - $h->{tag};
	}
	die "no complete build in the trace\n" unless @build;
	sub median { my @x = sort { $a <=> $b } @_; 1000 * $x[int(@x / 2)] }
	printf "%d images, %.2f s, %.0f ms before the first build\n", $n, $end - $start, 1000 * ($first - $start);
	printf "per image, median ms: build up to its LABEL step %.0f | LABEL step %.0f | inspect %.0f | naming, until the next build %.0f\n",
		median(@build), median(@label), median(@inspect), median(@tags);
' "$work/trace" "$start" "$end" "$n"
