#!/usr/bin/env bats
# imgfmt-read.bats: the differential suite of the image-format layer.
#
# Builds a matrix of images with qemu-img and qemu-io covering the reading
# list of the format (cluster sizes, compression, L2 kinds...), then compares what imgfmt reads (through the imgread
# tool) with what qemu-img reads: the bytes of the whole disk and of every
# snapshot (qemu-img convert -O raw), the same bytes read by 4 threads,
# and block status (qemu-img map --output=json, normalised: see
# map_matches_qemu).
#
# Run: IMGFS_BUILD_DIR=/abs/build bats tests/bats/imgfmt-read.bats

bats_require_minimum_version 1.5.0

load images

require() {
	local tool
	for tool in "$@"; do
		command -v "$tool" >/dev/null 2>&1 ||
			skip "$tool is not installed"
	done
}

setup() {
	require qemu-img qemu-io
	IMGFS_BUILD_DIR=${IMGFS_BUILD_DIR:-$BATS_TEST_DIRNAME/../../build}
	IMGREAD=$IMGFS_BUILD_DIR/tests/tools/imgread
	if [[ ! -x $IMGREAD ]]; then
		echo "imgread is not built: $IMGREAD (set IMGFS_BUILD_DIR)" >&2
		return 1
	fi
	cd "$BATS_TEST_TMPDIR"
	# The real path, as imgfmt names files in its messages.
	T=$(realpath "$BATS_TEST_TMPDIR")
}

imgread() {
	"$IMGREAD" "$@"
}

# expected_bytes IMG OUT [CONVERT ARGS...]: what qemu-img reads. qemu
# rounds a raw file up to a multiple of 512 bytes; imgfmt keeps the exact
# size, so the padding (which must be zeroes) is cut off again.
expected_bytes() {
	local img=$1 out=$2 file_size out_size
	shift 2
	qemu_raw "$img" "$out" "$@"
	if [[ $(img_format "$img") == raw ]]; then
		file_size=$(stat -c %s "$img")
		out_size=$(stat -c %s "$out")
		if ((out_size > file_size)); then
			cmp -i "$file_size:0" -n $((out_size - file_size)) \
				"$out" /dev/zero
			truncate -s "$file_size" "$out"
		fi
	fi
}

# map_matches_qemu IMG [IMGREAD OPTS...]: block status of imgread --map
# agrees with qemu-img map --output=json over the whole disk.
#
# Both outputs are cut into byte ranges at every boundary either side
# reports (which makes the comparison independent of how each side merges
# adjacent extents) and each range is classified as data, zero, hole
# (present: false) or zero+data (qemu's "allocated, known to read as
# zeroes", e.g. preallocated clusters; imgfmt may call that data or zero).
# For data and zero the depth must agree; for data the host offset must
# agree exactly, including its absence (compressed clusters have none).
#
# QEMU_ROUNDED_TAIL=START:END names the one range where qemu's view may
# differ: qemu rounds a raw backing file up to a multiple of 512 bytes and
# calls the padding zero at its depth, where imgfmt, which keeps the exact
# size, sees past the backing file's end (a hole). Both read zeroes.
map_matches_qemu() {
	local img=$1 size
	shift
	size=$(imgread "$@" --info "$img" | sed -n 's/^virtual_size: //p')
	qemu-img map -U --output=json "$img" >"$img.qemu-map"
	imgread "$@" --map "$img" >"$img.imgread-map"
	maps_agree "$img.qemu-map" "$img.imgread-map" "$size"
}

# maps_agree QEMU_MAP IMGREAD_MAP SIZE: the comparison of map_matches_qemu
# on two saved outputs.
maps_agree() {
	local tail=${QEMU_ROUNDED_TAIL:-0:0}
	awk -v size="$3" -v tail_lo="${tail%:*}" -v tail_hi="${tail#*:}" \
		-f - "$1" "$2" <<'EOF'
function field(line, key,    i, rest) {
	i = index(line, "\"" key "\": ")
	if (!i)
		return ""
	rest = substr(line, i + length(key) + 4)
	match(rest, /^[a-z0-9]+/)
	return substr(rest, 1, RLENGTH)
}
function load(line, side,    s, l, p, z, d, cls, k) {
	if (line !~ /"start"/)
		return
	s = field(line, "start") + 0
	l = field(line, "length") + 0
	if (s >= size + 0)
		return
	if (s + l > size + 0)
		l = size - s
	p = field(line, "present"); z = field(line, "zero")
	d = field(line, "data")
	if (p == "false") cls = "hole"
	else if (z == "true" && d == "true") cls = "zero+data"
	else if (z == "true") cls = "zero"
	else if (d == "true") cls = "data"
	else cls = "present-only"
	k = ++n[side]
	S[side, k] = s; L[side, k] = l; C[side, k] = cls
	D[side, k] = field(line, "depth"); O[side, k] = field(line, "offset")
}
function off_at(side, k, pos) {
	return O[side, k] == "" ? "none" : O[side, k] + (pos - S[side, k])
}
function desc(side, k, pos) {
	return sprintf("%s depth %s offset %s", C[side, k], D[side, k],
		       off_at(side, k, pos))
}
FNR == NR { load($0, "q"); next }
{ load($0, "i") }
END {
	q = 1; i = 1; pos = 0; bad = 0
	while (pos < size + 0) {
		if (q > n["q"] || S["q", q] > pos) {
			printf "qemu-img map has a gap at %d\n", pos; exit 1
		}
		if (i > n["i"] || S["i", i] > pos) {
			printf "imgread --map has a gap at %d\n", pos; exit 1
		}
		qend = S["q", q] + L["q", q]; iend = S["i", i] + L["i", i]
		end = qend < iend ? qend : iend
		cq = C["q", q]; ci = C["i", i]
		ok = cq == ci || (cq == "zero+data" && (ci == "zero" || ci == "data"))
		if (cq == "zero" && ci == "hole" && pos >= tail_lo + 0 &&
		    end <= tail_hi + 0)
			ok = 1
		if (ok && (ci == "data" || ci == "zero") && D["q", q] != D["i", i])
			ok = 0
		if (ok && ci == "data" && cq == "data" &&
		    off_at("q", q, pos) != off_at("i", i, pos))
			ok = 0
		if (ok && ci == "data" && cq == "zero+data" && O["q", q] != "" &&
		    off_at("q", q, pos) != off_at("i", i, pos))
			ok = 0
		if (!ok && bad++ < 10)
			printf "[%d, %d): qemu-img: %s; imgread: %s\n", pos, end,
			       desc("q", q, pos), desc("i", i, pos)
		pos = end
		if (pos >= qend) q++
		if (pos >= iend) {
			i++
			if (i <= n["i"] && S["i", i] != pos) {
				printf "imgread --map: extent %d starts at %d, " \
				       "expected %d\n", i, S["i", i], pos
				exit 1
			}
		}
	}
	if (i <= n["i"]) {
		printf "imgread --map goes past the end (%d)\n", size; exit 1
	}
	exit bad > 0
}
EOF
}

# map_agrees_with_bytes MAP RAW: every range that MAP (imgread --map
# output) calls zero or hole reads as zeroes in RAW.
map_agrees_with_bytes() {
	local map=$1 raw=$2 start len
	while read -r start len; do
		cmp -i "$start:0" -n "$len" "$raw" /dev/zero
	done < <(sed -n '/"zero": true/s/.*"start": \([0-9]*\), "length": \([0-9]*\),.*/\1 \2/p' "$map")
}

# reads_like_qemu IMG [IMGREAD OPTS...]: the claim of most tests here.
# imgread gives the bytes qemu-img convert gives, also with 4 threads, and
# the block status qemu-img map gives.
reads_like_qemu() {
	local img=$1
	shift
	expected_bytes "$img" "$img.expected"
	imgread "$@" "$img" >"$img.got"
	cmp "$img.expected" "$img.got"
	imgread "$@" --threads 4 "$img" >"$img.got4"
	cmp "$img.expected" "$img.got4"
	map_matches_qemu "$img" "$@"
	map_agrees_with_bytes "$img.imgread-map" "$img.got"
	rm -f "$img.got4"
}

# snapshot_id IMG NAME: the ID qemu-img lists for the snapshot NAME.
snapshot_id() {
	qemu-img snapshot -U -l "$1" | awk -v name="$2" '$2 == name { print $1 }'
}

# snapshot_reads_like_qemu IMG NAME: imgread --snapshot ID gives the bytes
# of the snapshot, alone and with 4 threads, and its block status agrees
# with its bytes and with qemu's.
#
# Two oracles: qemu-img convert -l snapshot.name=NAME (and snapshot.id=ID),
# and qemu-img snapshot -a NAME on a copy, then convert. They differ in
# size when the disk was resized after the snapshot: convert -l keeps the
# current size and pads with zeroes, while applying the snapshot restores
# its own disk size, which is the size imgfmt gives a snapshot. Applying
# installs the snapshot's L1 table and leaves every cluster where it is,
# so qemu-img map of the copy is the snapshot's block status, host
# offsets included.
snapshot_reads_like_qemu() {
	local img=$1 name=$2 id size padded
	id=$(snapshot_id "$img" "$name")
	[[ -n $id ]]
	cp "$img" "$img.$name.applied"
	qemu-img snapshot -a "$name" "$img.$name.applied"
	qemu_raw "$img.$name.applied" "$img.$name.expected"
	size=$(stat -c %s "$img.$name.expected")
	qemu_raw "$img" "$img.$name.by-name" -l "snapshot.name=$name"
	qemu_raw "$img" "$img.$name.by-id" -l "snapshot.id=$id"
	cmp "$img.$name.by-name" "$img.$name.by-id"
	padded=$(stat -c %s "$img.$name.by-name")
	((padded >= size))
	cmp -n "$size" "$img.$name.expected" "$img.$name.by-name"
	cmp -i "$size:0" -n $((padded - size)) "$img.$name.by-name" /dev/zero
	imgread --snapshot "$id" "$img" >"$img.$name.got"
	cmp "$img.$name.expected" "$img.$name.got"
	imgread --snapshot "$id" --threads 4 "$img" >"$img.$name.got4"
	cmp "$img.$name.expected" "$img.$name.got4"
	imgread --snapshot "$id" --map "$img" >"$img.$name.map"
	map_agrees_with_bytes "$img.$name.map" "$img.$name.got"
	qemu-img map -U --output=json "$img.$name.applied" \
		>"$img.$name.qemu-map"
	maps_agree "$img.$name.qemu-map" "$img.$name.map" "$size"
	run -0 imgread --snapshot "$id" --info "$img"
	[[ $output == *"virtual_size: $(stat -c %s "$img.$name.got")"* ]]
}

# qcow2_matrix_case SIZE OPTS: a qcow2 created with -o OPTS and filled
# with the full pattern mix reads as qemu-img reads it.
qcow2_matrix_case() {
	make_qcow2 img.qcow2 "$1" "$2"
	fill_pattern img.qcow2 7
	reads_like_qemu img.qcow2
}

# ---------------------------------------------------------------- raw

@test "a sparse raw image reads exactly as qemu-img converts it" {
	make_raw disk.raw 5M
	fill_pattern disk.raw
	reads_like_qemu disk.raw
}

@test "a raw image of 1000 bytes reads back to the byte" {
	head -c 1000 /dev/urandom >disk.raw
	reads_like_qemu disk.raw
	cmp disk.raw disk.raw.got
	run -0 imgread --info disk.raw
	[[ $output == *"format: raw"* ]]
	[[ $output == *"virtual_size: 1000"* ]]
}

@test "a raw image of 5 MiB + 3 bytes reads back to the byte" {
	make_raw disk.raw 5M
	fill_pattern disk.raw 3
	printf 'end' >>disk.raw
	reads_like_qemu disk.raw
	cmp disk.raw disk.raw.got
	[[ $(stat -c %s disk.raw.got) == $((5 * 1024 * 1024 + 3)) ]]
}

@test "an empty raw image reads as nothing" {
	: >empty.raw
	run -0 imgread empty.raw
	[[ -z $output ]]
	run -0 imgread --map empty.raw
	[[ -z $output ]]
}

@test "--format raw reads a qcow2 file as its plain bytes" {
	make_qcow2 img.qcow2 1M
	imgread --format raw img.qcow2 >got.raw
	cmp img.qcow2 got.raw
}

@test "a missing image fails with one line naming it" {
	run -1 imgread nothere.qcow2
	[[ $output == "imgread: nothere.qcow2: No such file or directory" ]]
}

# ------------------------------------------------- qcow2: the format matrix

@test "a v2 (compat 0.10) qcow2 with 512-byte clusters reads as qemu-img reads it" {
	qcow2_matrix_case 2M compat=0.10,cluster_size=512
}

@test "a v2 qcow2 with 4 KiB clusters reads as qemu-img reads it" {
	qcow2_matrix_case 4M compat=0.10,cluster_size=4096
}

@test "a v2 qcow2 with 64 KiB clusters reads as qemu-img reads it" {
	qcow2_matrix_case 4M compat=0.10,cluster_size=65536
}

@test "a v2 qcow2 with 2 MiB clusters reads as qemu-img reads it" {
	qcow2_matrix_case 32M compat=0.10,cluster_size=2M
}

@test "a v3 (compat 1.1) qcow2 with 512-byte clusters reads as qemu-img reads it" {
	qcow2_matrix_case 2M compat=1.1,cluster_size=512
}

@test "a v3 qcow2 with 4 KiB clusters reads as qemu-img reads it" {
	qcow2_matrix_case 4M compat=1.1,cluster_size=4096
}

@test "a v3 qcow2 with 64 KiB clusters reads as qemu-img reads it" {
	qcow2_matrix_case 4M compat=1.1,cluster_size=65536
}

@test "a v3 qcow2 with 2 MiB clusters reads as qemu-img reads it" {
	qcow2_matrix_case 32M compat=1.1,cluster_size=2M
}

@test "a qcow2 with 1-bit refcounts reads as qemu-img reads it" {
	qcow2_matrix_case 2M refcount_bits=1,cluster_size=4096
}

@test "a qcow2 with 2-bit refcounts reads as qemu-img reads it" {
	qcow2_matrix_case 2M refcount_bits=2,cluster_size=4096
}

@test "a qcow2 with 4-bit refcounts reads as qemu-img reads it" {
	qcow2_matrix_case 2M refcount_bits=4,cluster_size=4096
}

@test "a qcow2 with 8-bit refcounts reads as qemu-img reads it" {
	qcow2_matrix_case 2M refcount_bits=8,cluster_size=4096
}

@test "a qcow2 with 16-bit refcounts reads as qemu-img reads it" {
	qcow2_matrix_case 2M refcount_bits=16,cluster_size=512
}

@test "a qcow2 with 32-bit refcounts reads as qemu-img reads it" {
	qcow2_matrix_case 2M refcount_bits=32,cluster_size=4096
}

@test "a qcow2 with 64-bit refcounts reads as qemu-img reads it" {
	qcow2_matrix_case 2M refcount_bits=64,cluster_size=512
}

@test "a qcow2 larger than 4 GiB reads correctly on both sides of 4 GiB" {
	local four_g=$((4 * 1024 * 1024 * 1024)) win
	win=$((four_g - 4194304))
	make_qcow2 big.qcow2 4100M
	qio big.qcow2 "write -P 0x11 $((four_g - 65536 - 3000)) 140000" \
		"write -c -P 0x12 $((four_g + 1048576)) 65536" \
		"write -z $((four_g + 2097152)) 65536" \
		"write -P 0x13 $((four_g + 4194304 - 512)) 512"
	# Reading all 4 GiB takes too long for this suite: compare the last
	# 8 MiB (they straddle the mark), the last 4 KiB alone, and block
	# status over the whole disk.
	qemu_raw big.qcow2 big.raw
	imgread --offset "$win" --length 8388608 big.qcow2 >win.got
	cmp -i "$win:0" -n 8388608 big.raw win.got
	[[ $(stat -c %s win.got) == 8388608 ]]
	imgread --threads 4 --offset "$win" --length 8388608 big.qcow2 >win4.got
	cmp win.got win4.got
	imgread --offset $((four_g + 4194304 - 4096)) big.qcow2 >end.got
	cmp -i $((four_g + 4194304 - 4096)):0 big.raw end.got
	[[ $(stat -c %s end.got) == 4096 ]]
	map_matches_qemu big.qcow2
}

@test "imgread --info reports what the qcow2 header says" {
	make_qcow2 img.qcow2 3M compat=1.1,cluster_size=4096,refcount_bits=8,lazy_refcounts=on,compression_type=zstd
	run -0 imgread --info img.qcow2
	[[ $output == *"format: qcow2"* ]]
	[[ $output == *"virtual_size: 3145728"* ]]
	[[ $output == *"cluster_size: 4096"* ]]
	[[ $output == *"qcow2_version: 3"* ]]
	[[ $output == *"refcount_bits: 8"* ]]
	[[ $output == *"compression: zstd"* ]]
	[[ $output == *"lazy_refcounts: true"* ]]
	[[ $output == *"dirty: false"* ]]
	[[ $output == *"nb_snapshots: 0"* ]]
	make_qcow2 v2.qcow2 1M compat=0.10
	run -0 imgread --info v2.qcow2
	[[ $output == *"qcow2_version: 2"* ]]
	[[ $output == *"refcount_bits: 16"* ]]
	[[ $output == *"compression: zlib"* ]]
}

@test "a freshly created qcow2 reads as zeroes and maps as unallocated" {
	make_qcow2 img.qcow2 3M
	reads_like_qemu img.qcow2
	run -0 imgread --map img.qcow2
	[[ $output == '{ "start": 0, "length": 3145728, "depth": 0, "present": false, "zero": true, "data": false}' ]]
}

@test "a tiny metadata cache still reads the same bytes" {
	make_qcow2 img.qcow2 8M cluster_size=512
	fill_pattern img.qcow2 5
	reads_like_qemu img.qcow2 --cache 4096
}

@test "reads at odd offsets and lengths give qemu's bytes" {
	# A chain whose layers hold every kind of cluster, so that unaligned
	# reads start and end inside compressed clusters, subclusters, zero
	# clusters and past the end of a short raw backing file.
	head -c 1500001 /dev/urandom >base.raw
	make_overlay mid.qcow2 base.raw raw 3M extended_l2=on,cluster_size=64k
	subcluster_writes mid.qcow2
	make_overlay img.qcow2 mid.qcow2 qcow2 "" cluster_size=4096
	fill_pattern img.qcow2 3
	qemu_raw img.qcow2 img.raw
	local off len i
	for ((i = 0; i < 40; i++)); do
		off=$(((i * 7919 * 13 + i * i * 104729) % 3145728))
		len=$(((i * 3571 + 1) * (i % 5 + 1) % 300000 + 1))
		((off + len <= 3145728)) || len=$((3145728 - off))
		imgread --offset "$off" --length "$len" img.qcow2 >win.got
		[[ $(stat -c %s win.got) == "$len" ]]
		cmp -i "$off:0" -n "$len" img.raw win.got
	done
}

# ------------------------------------------------------ qcow2: zero clusters

@test "v3 zero clusters read as zeroes with and without a host cluster" {
	make_qcow2 img.qcow2 1M compat=1.1
	qio img.qcow2 "write -P 0x11 0 1M" \
		"write -z 0 64k" "write -z -u 128k 64k" "write -z 256k 4k" \
		"write -z 512k 64k"
	# The recipe: 0 keeps its host cluster (qemu shows an offset),
	# 128k dropped it.
	run -0 qemu-img map --output=json img.qcow2
	[[ $output == *'"start": 0, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false, "offset": '* ]]
	[[ $output == *'"start": 131072, "length": 65536, "depth": 0, "present": true, "zero": true, "data": false}'* ]]
	reads_like_qemu img.qcow2
}

@test "zero writes to a v2 qcow2 read as zeroes" {
	make_qcow2 img.qcow2 1M compat=0.10
	qio img.qcow2 "write -P 0x22 0 1M" "write -z 64k 128k" \
		"discard 512k 64k"
	reads_like_qemu img.qcow2
}

@test "a qcow2 created with preallocation=metadata reads as qemu-img reads it" {
	make_qcow2 img.qcow2 2M preallocation=metadata
	reads_like_qemu img.qcow2
	fill_pattern img.qcow2 4
	reads_like_qemu img.qcow2
}

@test "a v2 qcow2 created with preallocation=metadata reads as qemu-img reads it" {
	make_qcow2 img.qcow2 2M compat=0.10,preallocation=metadata
	fill_pattern img.qcow2 4
	reads_like_qemu img.qcow2
}

@test "a qcow2 created with preallocation=falloc reads as qemu-img reads it" {
	make_qcow2 img.qcow2 2M preallocation=falloc
	reads_like_qemu img.qcow2
	fill_pattern img.qcow2 5
	reads_like_qemu img.qcow2
}

@test "a qcow2 created with preallocation=full reads as qemu-img reads it" {
	make_qcow2 img.qcow2 2M preallocation=full
	reads_like_qemu img.qcow2
	fill_pattern img.qcow2 6
	reads_like_qemu img.qcow2
}

# ------------------------------------------------ qcow2: compressed clusters

# A source disk whose clusters compress well, badly (random bytes, which
# qemu stores uncompressed) and not at all (zeroes).
make_compressible_source() {
	make_raw src.raw 4M
	fill_pattern src.raw 9
	head -c 200000 /dev/urandom |
		dd of=src.raw bs=1 seek=1000000 conv=notrunc status=none
}

@test "a zlib-compressed qcow2 reads exactly as qemu-img converts it" {
	make_compressible_source
	qemu-img convert -c -O qcow2 src.raw img.qcow2
	run -0 qemu-img check img.qcow2
	[[ $output == *"compressed clusters"* ]]
	reads_like_qemu img.qcow2
	imgread img.qcow2 | cmp src.raw -
}

@test "a zstd-compressed qcow2 reads exactly as qemu-img converts it" {
	make_compressible_source
	qemu-img convert -c -O qcow2 -o compression_type=zstd src.raw img.qcow2
	run -0 imgread --info img.qcow2
	[[ $output == *"compression: zstd"* ]]
	reads_like_qemu img.qcow2
	imgread img.qcow2 | cmp src.raw -
}

@test "zstd clusters written by qemu-io write -c read as qemu-img reads them" {
	qcow2_matrix_case 4M compression_type=zstd
}

@test "compressed clusters with 512-byte and 2 MiB clusters read as qemu-img reads them" {
	make_compressible_source
	qemu-img convert -c -O qcow2 -o cluster_size=512 src.raw small.qcow2
	reads_like_qemu small.qcow2
	qemu-img convert -c -O qcow2 -o cluster_size=2M,compression_type=zstd \
		src.raw big.qcow2
	reads_like_qemu big.qcow2
}

@test "a v2 qcow2 with compressed clusters reads as qemu-img reads it" {
	make_compressible_source
	qemu-img convert -c -O qcow2 -o compat=0.10 src.raw img.qcow2
	reads_like_qemu img.qcow2
}

# --------------------------------------------------- qcow2: extended L2

# Sub-cluster writes into a 64 KiB-cluster image (2 KiB subclusters):
# 4 KiB pieces at odd offsets, zeroed and discarded subclusters, and
# pieces that do not start or end on a subcluster boundary.
subcluster_writes() {
	qio "$1" "write -P 0x31 4096 4096" "write -P 0x32 73728 4096" \
		"write -P 0x33 $((3 * 65536 + 30000)) 5000" \
		"write -P 0x34 $((4 * 65536 - 2048)) 4096" \
		"write -P 0x35 $((5 * 65536)) 65536" \
		"write -z $((5 * 65536 + 2048)) 6144" \
		"discard $((5 * 65536 + 32768)) 8192" \
		"write -z $((7 * 65536 + 10240)) 2048" \
		"write -P 0x36 $((8 * 65536 + 1)) 100" \
		"write -z $((9 * 65536 + 4096)) 4095"
}

@test "an extended-L2 qcow2 with sub-cluster writes reads as qemu-img reads it" {
	make_qcow2 img.qcow2 2M extended_l2=on,cluster_size=64k
	subcluster_writes img.qcow2
	reads_like_qemu img.qcow2
	run -0 imgread --info img.qcow2
	[[ $output == *"extended_l2: true"* ]]
}

@test "an extended-L2 overlay shows its backing file through unallocated subclusters" {
	make_qcow2 base.qcow2 2M
	qio base.qcow2 "write -P 0xb0 0 2M"
	make_overlay img.qcow2 base.qcow2 qcow2 "" extended_l2=on,cluster_size=64k
	subcluster_writes img.qcow2
	reads_like_qemu img.qcow2
}

@test "extended-L2 images with 32 KiB and 2 MiB clusters read as qemu-img reads them" {
	qcow2_matrix_case 4M extended_l2=on,cluster_size=32k
	rm -f img.qcow2*
	qcow2_matrix_case 32M extended_l2=on,cluster_size=2M
}

# ------------------------------------------------------ qcow2: backing files

@test "a qcow2 with a relative backing file name reads through to it" {
	make_qcow2 base.qcow2 4M
	fill_pattern base.qcow2 1
	make_overlay img.qcow2 base.qcow2 qcow2
	fill_pattern img.qcow2 2 131072
	reads_like_qemu img.qcow2
	run -0 imgread --info img.qcow2
	[[ $output == *"backing_file: base.qcow2"* ]]
	[[ $output == *"backing_format: qcow2"* ]]
}

@test "a qcow2 with an absolute backing file name reads through to it" {
	mkdir sub
	make_qcow2 sub/base.qcow2 4M
	fill_pattern sub/base.qcow2 1
	make_overlay img.qcow2 "$T/sub/base.qcow2" qcow2
	fill_pattern img.qcow2 2 196608
	reads_like_qemu img.qcow2
}

@test "a backing file in a folder below the image's folder is followed by default" {
	mkdir -p deep/er
	make_qcow2 deep/er/base.qcow2 2M
	fill_pattern deep/er/base.qcow2 1
	make_overlay img.qcow2 deep/er/base.qcow2 qcow2
	qio img.qcow2 "write -P 0x44 100000 5000"
	reads_like_qemu img.qcow2
}

@test "a qcow2 backing file without a backing format is probed" {
	make_qcow2 base.qcow2 2M
	fill_pattern base.qcow2 1
	make_overlay img.qcow2 base.qcow2 ""
	qio img.qcow2 "write -P 0x45 65536 70000"
	run -0 imgread --info img.qcow2
	[[ $output != *"backing_format:"* ]]
	reads_like_qemu img.qcow2
}

@test "a raw backing file, named or probed, reads through to it" {
	make_raw base.raw 2M
	fill_pattern base.raw 1
	make_overlay named.qcow2 base.raw raw
	qio named.qcow2 "write -P 0x46 300000 70000" "write -z 0 4096"
	reads_like_qemu named.qcow2
	make_overlay probed.qcow2 base.raw ""
	qio probed.qcow2 "write -P 0x47 300000 70000"
	reads_like_qemu probed.qcow2
}

@test "a backing chain of depth 3 reads as qemu-img reads it" {
	make_chain chain 3 2M
	reads_like_qemu chain/layer2.qcow2
}

@test "a backing chain of depth 20 reads as qemu-img reads it" {
	make_chain chain 20 2M
	reads_like_qemu chain/layer19.qcow2
}

@test "a v2 backing chain of depth 4 reads as qemu-img reads it" {
	make_chain chain 4 2M compat=0.10,cluster_size=4096
	reads_like_qemu chain/layer3.qcow2
}

@test "a backing file smaller than its overlay reads as zeroes past its end" {
	make_qcow2 base.qcow2 2M
	qio base.qcow2 "write -P 0x51 0 2M"
	make_overlay img.qcow2 base.qcow2 qcow2
	qemu-img resize -q img.qcow2 5M
	qio img.qcow2 "write -P 0x52 $((2 * 1024 * 1024 - 4096)) 8192" \
		"write -P 0x53 $((4 * 1024 * 1024)) 4096"
	reads_like_qemu img.qcow2
}

@test "a backing file larger than its overlay is cut at the overlay's size" {
	make_qcow2 base.qcow2 6M
	qio base.qcow2 "write -P 0x54 0 6M"
	make_overlay img.qcow2 base.qcow2 qcow2 3M
	qio img.qcow2 "write -P 0x55 1M 4096"
	reads_like_qemu img.qcow2
	[[ $(stat -c %s img.qcow2.got) == $((3 * 1024 * 1024)) ]]
}

@test "a raw backing file of an odd size reads as zeroes past its end" {
	head -c 1000003 /dev/urandom >base.raw
	make_overlay img.qcow2 base.raw raw 2M
	qio img.qcow2 "write -P 0x56 4096 4096"
	QEMU_ROUNDED_TAIL=1000003:1000448 reads_like_qemu img.qcow2
}

@test "a backing chain that loops is refused" {
	make_qcow2 b.qcow2 1M
	make_overlay a.qcow2 b.qcow2 qcow2
	qemu-img rebase -u -b a.qcow2 -F qcow2 b.qcow2
	run -1 imgread "$T/a.qcow2"
	[[ $output == "imgread: $T/b.qcow2: backing chain loops: $T/a.qcow2 is already in the chain" ]]
}

@test "an image that names itself as its backing file is refused" {
	make_qcow2 a.qcow2 1M
	qemu-img rebase -u -b a.qcow2 -F qcow2 a.qcow2
	run -1 imgread "$T/a.qcow2"
	[[ $output == *loops* ]]
	[[ $output == "imgread: $T/a.qcow2: backing chain loops: $T/a.qcow2 is already in the chain" ]]
}

@test "layers with different cluster sizes read through each other" {
	make_qcow2 base.qcow2 4M cluster_size=4096
	fill_pattern base.qcow2 1
	make_overlay mid.qcow2 base.qcow2 qcow2 "" extended_l2=on,cluster_size=64k
	subcluster_writes mid.qcow2
	make_overlay top.qcow2 mid.qcow2 qcow2 "" cluster_size=512
	fill_pattern top.qcow2 2 262144
	reads_like_qemu top.qcow2
}

@test "compressed and zero clusters in a backing file show through an overlay" {
	make_qcow2 base.qcow2 4M compression_type=zstd
	fill_pattern base.qcow2 1
	make_overlay img.qcow2 base.qcow2 qcow2 "" cluster_size=4096
	qio img.qcow2 "write -P 0x57 $((3 * 65536 + 1000)) 2000" \
		"write -z $((16 * 65536)) 65536" "discard $((24 * 65536)) 65536"
	reads_like_qemu img.qcow2
}

@test "a missing backing file is refused with its name" {
	make_qcow2 base.qcow2 1M
	make_overlay img.qcow2 base.qcow2 qcow2
	rm base.qcow2
	run -1 imgread "$T/img.qcow2"
	[[ $output == "imgread: $T/img.qcow2: backing file $T/base.qcow2: No such file or directory" ]]
}

# ---------------------------------------------- the backing-file path policy

# outside/base.qcow2 and img/top.qcow2 backed by it by absolute path.
make_outside_backing() {
	mkdir -p outside img
	make_qcow2 outside/base.qcow2 2M
	fill_pattern outside/base.qcow2 1
	make_overlay img/top.qcow2 "$T/outside/base.qcow2" qcow2
	qio img/top.qcow2 "write -P 0x61 65536 4096"
}

@test "a backing file outside the image's folder is refused by default" {
	make_outside_backing
	run -1 imgread "$T/img/top.qcow2"
	[[ $output == "imgread: $T/img/top.qcow2: backing file $T/outside/base.qcow2 lies outside $T/img (symbolic links resolved); mount with -o backing=follow to allow it" ]]
	run -1 imgread --backing local --map "$T/img/top.qcow2"
	[[ $output == *"backing=follow"* ]]
}

@test "a backing file outside the image's folder is read with --backing follow" {
	make_outside_backing
	reads_like_qemu img/top.qcow2 --backing follow
}

@test "--backing deny refuses any backing file, even next to the image" {
	make_qcow2 base.qcow2 1M
	make_overlay top.qcow2 base.qcow2 qcow2
	run -1 imgread --backing deny "$T/top.qcow2"
	[[ $output == "imgread: $T/top.qcow2: backing file 'base.qcow2' refused by -o backing=deny; -o backing=local or backing=follow would allow it" ]]
	# An image without a backing file opens as usual.
	run -0 imgread --backing deny --info base.qcow2
}

@test "a symbolic link inside the folder that points outside is refused by default" {
	make_outside_backing
	ln -s ../outside/base.qcow2 img/link.qcow2
	make_overlay img/top2.qcow2 link.qcow2 qcow2
	run -1 imgread "$T/img/top2.qcow2"
	[[ $output == "imgread: $T/img/top2.qcow2: backing file $T/outside/base.qcow2 lies outside $T/img (symbolic links resolved); mount with -o backing=follow to allow it" ]]
	reads_like_qemu img/top2.qcow2 --backing follow
}

@test "a backing file outside the top image's folder is refused at any depth" {
	make_outside_backing
	# top.qcow2 lies inside img/, but its backing file does not: opening
	# mid.qcow2 (also inside img/) must refuse the chain.
	make_overlay img/mid.qcow2 top.qcow2 qcow2
	run -1 imgread "$T/img/mid.qcow2"
	[[ $output == "imgread: $T/img/top.qcow2: backing file $T/outside/base.qcow2 lies outside $T/img (symbolic links resolved); mount with -o backing=follow to allow it" ]]
	reads_like_qemu img/mid.qcow2 --backing follow
}

# ----------------------------------------------------- external data files

@test "a qcow2 with an external data file reads as qemu-img reads it" {
	make_qcow2 img.qcow2 4M data_file=img.data
	fill_pattern img.qcow2 3
	run -0 imgread --info img.qcow2
	[[ $output == *"data_file: img.data"* ]]
	[[ $output == *"data_file_raw: false"* ]]
	reads_like_qemu img.qcow2
}

@test "a qcow2 with a raw external data file (data_file_raw) reads as qemu-img reads it" {
	make_qcow2 img.qcow2 4M data_file=img.data,data_file_raw=on
	fill_pattern img.qcow2 4
	run -0 imgread --info img.qcow2
	[[ $output == *"data_file_raw: true"* ]]
	reads_like_qemu img.qcow2
}

@test "an external data file outside the image's folder needs --backing follow" {
	mkdir -p outside img
	make_qcow2 img/img.qcow2 2M "data_file=$T/outside/img.data"
	qio img/img.qcow2 "write -P 0x71 0 100000"
	run -1 imgread "$T/img/img.qcow2"
	[[ $output == "imgread: $T/img/img.qcow2: data file $T/outside/img.data lies outside $T/img (symbolic links resolved); mount with -o backing=follow to allow it" ]]
	run -1 imgread --backing deny "$T/img/img.qcow2"
	[[ $output == "imgread: $T/img/img.qcow2: data file '$T/outside/img.data' refused by -o backing=deny; -o backing=local or backing=follow would allow it" ]]
	reads_like_qemu img/img.qcow2 --backing follow
}

@test "an external data file that is a FIFO is refused at once, not waited on" {
	make_qcow2 img.qcow2 2M data_file=img.data
	rm img.data
	mkfifo img.data
	# Opening a FIFO for reading waits for a writer: timeout's 124 would
	# say the open blocked.
	run -1 timeout 20 "$IMGREAD" "$T/img.qcow2"
	[[ $output == "imgread: $T/img.qcow2: data file $T/img.data: not a regular file or block device" ]]
}

# -------------------------------------------------------- internal snapshots

# img.qcow2 with snapshots small, one and two (different contents) and
# then changed again. On v3, small is taken before the disk grows from
# 2 MiB to 4 MiB (qemu cannot resize a v2 image that has snapshots).
make_snapshotted_image() {
	if [[ $1 == *compat=0.10* ]]; then
		make_qcow2 img.qcow2 4M "$1"
	else
		make_qcow2 img.qcow2 2M "$1"
	fi
	fill_pattern img.qcow2 1
	qemu-img snapshot -c small img.qcow2
	if [[ $1 != *compat=0.10* ]]; then
		qemu-img resize -q img.qcow2 4M
	fi
	fill_pattern img.qcow2 2
	qemu-img snapshot -c one img.qcow2
	qio img.qcow2 "write -P 0x81 0 1M" "write -z 1M 512k" \
		"discard 3M 1M"
	qemu-img snapshot -c two img.qcow2
	qio img.qcow2 "write -P 0x82 512k 1M"
}

@test "every internal snapshot reads as qemu-img converts it" {
	make_snapshotted_image compat=1.1
	reads_like_qemu img.qcow2
	snapshot_reads_like_qemu img.qcow2 small
	snapshot_reads_like_qemu img.qcow2 one
	snapshot_reads_like_qemu img.qcow2 two
	[[ $(stat -c %s img.qcow2.small.got) == $((2 * 1024 * 1024)) ]]
	[[ $(stat -c %s img.qcow2.one.got) == $((4 * 1024 * 1024)) ]]
}

@test "internal snapshots of a v2 qcow2 read as qemu-img converts them" {
	make_snapshotted_image compat=0.10
	reads_like_qemu img.qcow2
	snapshot_reads_like_qemu img.qcow2 small
	snapshot_reads_like_qemu img.qcow2 one
	snapshot_reads_like_qemu img.qcow2 two
}

@test "internal snapshots of an extended-L2 qcow2 read as qemu-img converts them" {
	make_snapshotted_image extended_l2=on,cluster_size=64k
	snapshot_reads_like_qemu img.qcow2 small
	snapshot_reads_like_qemu img.qcow2 one
	snapshot_reads_like_qemu img.qcow2 two
}

@test "a snapshot of an overlay reads through to the backing file" {
	make_qcow2 base.qcow2 4M
	fill_pattern base.qcow2 1
	make_overlay img.qcow2 base.qcow2 qcow2
	fill_pattern img.qcow2 2 262144
	qemu-img snapshot -c before img.qcow2
	qio img.qcow2 "write -P 0x83 0 4M"
	snapshot_reads_like_qemu img.qcow2 before
	reads_like_qemu img.qcow2
}

@test "the snapshot list matches qemu-img's" {
	require jq
	make_snapshotted_image compat=1.1
	qemu-img info -U --output=json img.qcow2 |
		jq -r '.snapshots[] | [.id, .name, .["date-sec"],
		       (.["vm-clock-sec"] * 1000000000 + .["vm-clock-nsec"])]
		       | @tsv' >expected.list
	run -0 imgread --snapshots img.qcow2
	# Our list has disk_size as a third column; qemu's JSON has none.
	cut -f 1,2,4,5 <<<"$output" >got.list
	diff expected.list got.list
	[[ $(cut -f 3 <<<"$output" | tr '\n' ' ') == "2097152 4194304 4194304 " ]]
	run -0 imgread --info img.qcow2
	[[ $output == *"nb_snapshots: 3"* ]]
}

@test "an unknown snapshot ID is refused" {
	make_qcow2 img.qcow2 1M
	qemu-img snapshot -c one img.qcow2
	run -1 imgread --snapshot 42 img.qcow2
	[[ $output == "imgread: img.qcow2: no snapshot with ID '42'" ]]
}

# ---------------------------------------------- header bits and extensions

@test "an image left dirty by a crash with lazy refcounts is readable" {
	make_qcow2 img.qcow2 2M lazy_refcounts=on
	fill_pattern img.qcow2 1
	# qemu-io's abort command kills qemu-io mid-session (as a crash would)
	# after the write, leaving the dirty bit set.
	run -134 bash -c 'ulimit -c 0; qemu-io -c "write -P 0x91 64k 256k" -c abort img.qcow2'
	run -0 imgread --info img.qcow2
	[[ $output == *"dirty: true"* ]]
	reads_like_qemu img.qcow2
}

@test "an image with the corrupt bit set reads (read-only)" {
	make_qcow2 img.qcow2 2M
	fill_pattern img.qcow2 1
	set_incompatible_bit img.qcow2 1
	run -0 imgread --info img.qcow2
	[[ $output == *"corrupt: true"* ]]
	reads_like_qemu img.qcow2
}

@test "an image with a persistent bitmap reads as qemu-img reads it" {
	make_qcow2 img.qcow2 2M
	fill_pattern img.qcow2 1
	qemu-img bitmap --add img.qcow2 b0
	qio img.qcow2 "write -P 0x92 0 64k"
	run -0 qemu-img info img.qcow2
	[[ $output == *"name: b0"* ]]
	reads_like_qemu img.qcow2
}

@test "an encrypted qcow2 is refused with a clear message" {
	# qemu-img times PBKDF2 to pick an iteration count and, on a busy
	# machine, sometimes gives up ("Unable to get accurate CPU usage"):
	# try again a few times.
	# If it never manages, the header's encryption method field (bytes
	# 32-35, 2 = LUKS) is set on a plain image instead: imgfs must refuse
	# on that field alone.
	local try
	for try in 1 2 3 4 5; do
		make_qcow2 luks.qcow2 1M encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10 \
			--object secret,id=s0,data=imgfs && break
		rm -f luks.qcow2
		sleep 1
	done
	if [[ ! -f luks.qcow2 ]]; then
		make_qcow2 luks.qcow2 1M
		printf '\x00\x00\x00\x02' | dd of=luks.qcow2 bs=1 seek=32 conv=notrunc status=none
	fi
	run -1 imgread luks.qcow2
	[[ $output == "imgread: luks.qcow2: image is encrypted (LUKS); encrypted images are not supported" ]]
	make_qcow2 aes.qcow2 1M encrypt.format=aes,encrypt.key-secret=s0 \
		--object secret,id=s0,data=imgfs
	run -1 imgread aes.qcow2
	[[ $output == "imgread: aes.qcow2: image is encrypted (AES); encrypted images are not supported" ]]
}

@test "an unknown incompatible feature is refused, named from the feature-name table" {
	make_qcow2 img.qcow2 1M
	set_incompatible_bit img.qcow2 40
	set_feature_name img.qcow2 0 40 "imgfs test feature"
	set_incompatible_bit img.qcow2 41
	run -1 imgread img.qcow2
	[[ $output == "imgread: img.qcow2: unsupported incompatible qcow2 features: bit 40 (imgfs test feature), bit 41" ]]
}
