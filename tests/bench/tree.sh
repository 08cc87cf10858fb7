# Sourced by the benchmarks that build generated trees (engine.sh, floor.sh).
#
# gen_tree DIR SALT N [OWN_FILE]: DIR/images holds N images in 10 groups,
# each FROM scratch with COPY steps of small files whose contents carry SALT:
# a directory of three files and its own Dockerfile, and with OWN_FILE=1 a
# file of its own first (three COPY steps instead of two).
gen_tree() {
	local i d f steps
	steps='COPY files /files\nCOPY Dockerfile /\n'
	[ "${4:-0}" = 0 ] || steps="COPY f0.txt /\n$steps"
	for i in $(seq 1 "$3"); do
		d=$1/images/group$((i % 10))/image$i
		mkdir -p "$d/files"
		printf "FROM scratch\n$steps" >"$d/Dockerfile"
		[ "${4:-0}" = 0 ] || echo "image $i $2" >"$d/f0.txt"
		for f in 1 2 3; do echo "image $i file $f $2" >"$d/files/f$f.txt"; done
	done
}
