#!/usr/bin/env bats
# imgfmt-matrix.bats: images that qemu-img has worked on, read through the
# mount.
#
# imgfmt-read.bats compares the image layer (imgread) with qemu-img over
# images as qemu-img creates them. Here the images have a history: grown
# and shrunk, amended from v3 to v2 and back, committed into and rebased
# onto other files, given bitmaps, preallocated, compressed with zstd,
# split from their data, made with every cluster size from 512 bytes to
# 2 MiB with and without extended L2 entries, snapshotted at several
# sizes, and stacked on raw and v2 backing files. A user mounts each one,
# and `disk` and every `snapshots/NAME/disk` must hold exactly the bytes
# qemu-img convert gives.

bats_require_minimum_version 1.5.0

load helpers
load images

# snapshot_names IMG: the names of IMG's internal snapshots, one a line.
snapshot_names() {
	qemu-img info -U --output=json "$1" | jq -r '.snapshots[]?.name'
}

# mount_reads_like_qemu IMG [IMGFS OPTIONS...]: the user mounts IMG
# read-only; disk holds the bytes of qemu-img convert, and every
# snapshots/NAME/disk the bytes and the size of snapshot NAME (qemu-img
# snapshot -a on a copy, then convert: a snapshot keeps the disk size it
# was taken at). snapshots/ lists exactly the image's snapshots. Unmounts.
mount_reads_like_qemu() {
	local img=$1 name names
	shift
	IMG=$(realpath "$img")
	qemu_raw "$IMG" want.raw
	names=$(snapshot_names "$IMG")
	for name in $names; do
		cp "$IMG" applied.qcow2
		qemu-img snapshot -a "$name" applied.qcow2
		qemu_raw applied.qcow2 "want-$name.raw"
		rm applied.qcow2
	done
	mount_image -o ro "$@"
	assert_eq "$(as_user stat -c %s "$MNT/disk")" "$(stat -c %s want.raw)"
	as_user cmp "$MNT/disk" want.raw
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" "$(sort <<<"$names")"
	for name in $names; do
		assert_eq "$(as_user stat -c %s "$MNT/snapshots/$name/disk")" \
			"$(stat -c %s "want-$name.raw")"
		as_user cmp "$MNT/snapshots/$name/disk" "want-$name.raw"
	done
	unmount_image
	rm -f want*.raw
}

# ------------------------------------------------------------ qemu-img resize

@test "a qcow2 grown by qemu-img resize until its L1 table moved reads as qemu-img reads it, snapshots taken at each size too" {
	make_qcow2 img.qcow2 1M cluster_size=512
	l1_before=$(be64 img.qcow2 40)
	fill_pattern img.qcow2 1
	qemu-img snapshot -c at-1M img.qcow2
	# 512-byte clusters: one L2 table maps 32 KiB, so 40 MiB needs an L1
	# table of 1280 entries where 1 MiB needed 32.
	qemu-img resize -q img.qcow2 40M
	[[ $(be64 img.qcow2 40) != "$l1_before" ]]
	qio img.qcow2 "write -P 0x21 $((1024 * 1024 - 300)) 700" \
		"write -P 0x22 20M 64k" "write -P 0x23 $((40 * 1024 * 1024 - 512)) 512"
	qemu-img snapshot -c at-40M img.qcow2
	qemu-img resize -q img.qcow2 $((40 * 1024 * 1024 + 7 * 512))
	qio img.qcow2 "write -P 0x24 $((40 * 1024 * 1024)) 3584"
	run -0 qemu-img check img.qcow2
	mount_reads_like_qemu img.qcow2
}

@test "a qcow2 shrunk by qemu-img resize --shrink to a size that is no multiple of the cluster reads as qemu-img reads it" {
	make_qcow2 img.qcow2 8M
	fill_pattern img.qcow2 2
	qemu-img snapshot -c before-shrink img.qcow2
	qemu-img resize -q --shrink img.qcow2 $((3 * 1024 * 1024 + 1536))
	run -0 qemu-img check img.qcow2
	mount_reads_like_qemu img.qcow2
	mount_image -o ro
	run -0 as_user stat -c '%s %n' "$MNT/disk" "$MNT/snapshots/before-shrink/disk"
	assert_eq "$output" "$((3 * 1024 * 1024 + 1536)) $MNT/disk
8388608 $MNT/snapshots/before-shrink/disk"
}

# ------------------------------------------------------------- qemu-img amend

@test "a qcow2 amended to compat=0.10 and back to 1.1 reads as qemu-img reads it at each step" {
	make_qcow2 img.qcow2 4M compat=1.1,lazy_refcounts=on
	fill_pattern img.qcow2 3
	qio img.qcow2 "write -z 0 192k" "write -P 0x31 1M 64k"
	mount_reads_like_qemu img.qcow2
	# The downgrade turns zero clusters into data or holes.
	qemu-img amend -o compat=0.10 img.qcow2
	assert_eq "$(qemu-img info --output=json img.qcow2 | jq -r '."format-specific".data.compat')" 0.10
	mount_reads_like_qemu img.qcow2
	# (qemu 7.2's amend leaves OFLAG_COPIED errors when a snapshot
	# exists while it expands zero clusters; so the snapshot comes now.)
	qemu-img snapshot -c v2 img.qcow2
	qio img.qcow2 "write -P 0x32 1M 64k"
	qemu-img amend -o compat=1.1 img.qcow2
	qio img.qcow2 "write -z 2M 64k"
	run -0 qemu-img check img.qcow2
	mount_reads_like_qemu img.qcow2
}

# ------------------------------------------------- qemu-img commit and rebase

@test "after qemu-img commit, the base and the emptied overlay read as qemu-img reads them" {
	make_chain chain 3 4M
	qemu-img commit -q chain/layer2.qcow2
	mount_reads_like_qemu chain/layer1.qcow2
	mount_reads_like_qemu chain/layer2.qcow2
	# Past the middle, into the base (-b names it as the chain does).
	qemu-img commit -q -b layer0.qcow2 chain/layer2.qcow2
	mount_reads_like_qemu chain/layer0.qcow2
	mount_reads_like_qemu chain/layer2.qcow2
}

@test "after qemu-img rebase (safe onto the base, unsafe, and to no backing file) the top reads as qemu-img reads it" {
	make_chain chain 3 4M
	mount_reads_like_qemu chain/layer2.qcow2
	qemu-img rebase -q -b layer0.qcow2 -F qcow2 chain/layer2.qcow2
	assert_eq "$(qemu-img info --output=json chain/layer2.qcow2 | jq -r '."backing-filename"')" layer0.qcow2
	mount_reads_like_qemu chain/layer2.qcow2
	# An unsafe rebase changes only the name: the top now shows layer1's
	# bytes where it has none of its own.
	qemu-img rebase -q -u -b layer1.qcow2 -F qcow2 chain/layer2.qcow2
	mount_reads_like_qemu chain/layer2.qcow2
	qemu-img rebase -q -b "" chain/layer2.qcow2
	mount_reads_like_qemu chain/layer2.qcow2
}

# ------------------------------------------------------------ qemu-img bitmap

@test "a qcow2 with persistent bitmaps (autoclear bit 0 set) reads as qemu-img reads it, and a write through imgfs clears the bit" {
	make_qcow2 img.qcow2 4M
	fill_pattern img.qcow2 4
	qemu-img bitmap --add img.qcow2 b0
	qemu-img bitmap --add -g 512k img.qcow2 b1
	qio img.qcow2 "write -P 0x41 0 64k"
	# autoclear_features (header bytes 88..95) has bit 0: bitmaps.
	assert_eq "$(($(be64 img.qcow2 88) & 1))" 1
	run -0 qemu-img info --output=json img.qcow2
	assert_eq "$(jq -r '[."format-specific".data.bitmaps[].name] | join(" ")' <<<"$output")" "b0 b1"
	mount_reads_like_qemu img.qcow2
	# A read-only mount leaves the bitmaps as they were.
	run -0 qemu-img info --output=json img.qcow2
	assert_eq "$(jq -c '[."format-specific".data.bitmaps[].flags]' <<<"$output")" '[["auto"],["auto"]]'
	assert_eq "$(($(be64 img.qcow2 88) & 1))" 1
	# A write through imgfs, which keeps no bitmaps, clears the bit (the
	# spec's rule for unknown autoclear features), so QEMU no longer
	# trusts bitmaps that missed the write.
	mount_image
	echo changed | as_user dd of="$MNT/disk" bs=512 seek=3000 conv=notrunc status=none
	unmount_image
	assert_eq "$(($(be64 img.qcow2 88) & 1))" 0
	run -0 --separate-stderr qemu-img info img.qcow2
	assert_eq "$stderr" "qemu-img: warning: a program lacking bitmap support modified this file, so all bitmaps are now considered inconsistent
Some clusters may be leaked, run 'qemu-img check -r' on the image file to fix."
}

# ------------------------------------------------------------- preallocation

@test "qcow2 images created with preallocation=metadata, falloc and full read through the mount as qemu-img reads them, before and after writes" {
	for prealloc in metadata falloc full; do
		make_qcow2 "img-$prealloc.qcow2" 3M "preallocation=$prealloc"
		mount_reads_like_qemu "img-$prealloc.qcow2"
		fill_pattern "img-$prealloc.qcow2" 5
		mount_reads_like_qemu "img-$prealloc.qcow2"
	done
}

# --------------------------------------------------------------- compression

@test "a qcow2 from qemu-img convert -c -o compression_type=zstd reads as qemu-img reads it" {
	make_raw src.raw 6M
	fill_pattern src.raw 6
	det_random 300K | dd of=src.raw bs=1 seek=1000000 conv=notrunc status=none
	qemu-img convert -c -O qcow2 -o compression_type=zstd,cluster_size=16k src.raw img.qcow2
	assert_eq "$(qemu-img info --output=json img.qcow2 | jq -r '."format-specific".data."compression-type"')" zstd
	qemu-img snapshot -c converted img.qcow2
	qio img.qcow2 "discard $((5 * 1024 * 1024)) 64k" \
		"write -c -P 0x61 $((5 * 1024 * 1024)) 64k"
	mount_reads_like_qemu img.qcow2
	IMG=$PWD/img.qcow2
	mount_image -o ro
	as_user cmp -n $((5 * 1024 * 1024)) "$MNT/snapshots/converted/disk" src.raw
}

# ------------------------------------------------------ external data files

@test "a qcow2 with an external data file, plain and data_file_raw=on, reads through the mount as qemu-img reads it" {
	make_qcow2 img.qcow2 4M data_file=img.data
	fill_pattern img.qcow2 7
	mount_reads_like_qemu img.qcow2
	make_qcow2 raw-data.qcow2 4M data_file=raw-data.data,data_file_raw=on
	fill_pattern raw-data.qcow2 8
	mount_reads_like_qemu raw-data.qcow2
	# With data_file_raw the data file is the disk, byte for byte.
	IMG=$PWD/raw-data.qcow2
	mount_image -o ro
	as_user cmp "$MNT/disk" raw-data.data
}

# -------------------------------------------------------------- cluster sizes

@test "every cluster size from 512 bytes to 2 MiB, and extended L2 from 16 KiB up, reads as qemu-img reads it" {
	local bits size opts
	for ((bits = 9; bits <= 21; bits++)); do
		size=$((1 << bits))
		opts=("cluster_size=$size")
		((bits >= 14)) && opts+=("cluster_size=$size,extended_l2=on")
		for o in "${opts[@]}"; do
			rm -f img.qcow2
			make_qcow2 img.qcow2 $((4 * 1024 * 1024 + 512)) "$o"
			fill_pattern img.qcow2 $bits
			mount_reads_like_qemu img.qcow2
		done
	done
}

# ------------------------------------------------------ internal snapshots

@test "snapshots taken at 2, 5 and 3 MiB by qemu-img snapshot -c each read at their own size and bytes" {
	make_qcow2 img.qcow2 2M
	fill_pattern img.qcow2 1
	qemu-img snapshot -c small img.qcow2
	qemu-img resize -q img.qcow2 5M
	fill_pattern img.qcow2 2
	qemu-img snapshot -c large img.qcow2
	qemu-img resize -q --shrink img.qcow2 3M
	qio img.qcow2 "write -P 0x71 $((3 * 1024 * 1024 - 4096)) 4096"
	qemu-img snapshot -c medium img.qcow2
	qio img.qcow2 "write -P 0x72 0 1M"
	mount_reads_like_qemu img.qcow2
	IMG=$PWD/img.qcow2
	mount_image -o ro
	run -0 as_user stat -c '%s %n' "$MNT"/snapshots/{small,large,medium}/disk "$MNT/disk"
	assert_eq "$output" "2097152 $MNT/snapshots/small/disk
5242880 $MNT/snapshots/large/disk
3145728 $MNT/snapshots/medium/disk
3145728 $MNT/disk"
}

# ---------------------------------------------------------- backing chains

@test "a chain of a raw base, a v2 qcow2 with 4 KiB clusters and a v3 extended-L2 top, with named and probed formats, reads as qemu-img reads it" {
	make_raw base.raw $((6 * 1024 * 1024 + 1024))
	fill_pattern base.raw 1
	make_overlay mid.qcow2 base.raw raw "" compat=0.10,cluster_size=4096
	fill_pattern mid.qcow2 2
	qemu-img snapshot -c mid-snap mid.qcow2
	make_overlay top.qcow2 mid.qcow2 "" 8M cluster_size=64k,extended_l2=on
	fill_pattern top.qcow2 3
	qio top.qcow2 "write -z -u 64k 32k" "discard 1M 128k"
	qemu-img snapshot -c top-snap top.qcow2
	qio top.qcow2 "write -P 0x81 7M 1M"
	mount_reads_like_qemu top.qcow2
	mount_reads_like_qemu mid.qcow2
	# The same chain with the raw base's format left to probing.
	strip_backing_format mid.qcow2
	mount_reads_like_qemu top.qcow2
}

# ------------------------------------------------- hostile snapshot tables

# rename_snapshots IMG ID NAME [ID NAME...]: rewrites IMG's snapshot table
# at the end of the file, entry i (in table order) keeping its L1 table,
# sizes and dates but taking the i-th ID and NAME, which may be empty,
# repeated or anything a crafted image holds. The old table's clusters
# leak; qemu-img still reads every snapshot.
rename_snapshots() {
	python3 - "$@" <<-'PY'
		import struct, sys
		img, pairs = sys.argv[1], sys.argv[2:]
		with open(img, "r+b") as f:
		    h = f.read(72)
		    nb, off = struct.unpack(">IQ", h[60:72])
		    assert nb * 2 == len(pairs), "one ID and NAME per snapshot"
		    out = bytearray()
		    pos = off
		    for i in range(nb):
		        f.seek(pos)
		        e = f.read(40)
		        id_len, name_len = struct.unpack(">HH", e[12:16])
		        extra = struct.unpack(">I", e[36:40])[0]
		        ex = f.read(extra)
		        pos += (40 + extra + id_len + name_len + 7) & ~7
		        sid, name = pairs[2 * i].encode(), pairs[2 * i + 1].encode()
		        ent = e[:12] + struct.pack(">HH", len(sid), len(name)) + e[16:] + ex + sid + name
		        out += ent + b"\0" * (-len(ent) % 8)
		    end = (f.seek(0, 2) + 65535) & ~65535
		    f.seek(end)
		    f.write(out + b"\0" * (-len(out) % 65536))
		    f.seek(64)
		    f.write(struct.pack(">Q", end))
	PY
}

@test "a crafted snapshot table with blank, repeated and clashing IDs and names lists every snapshot once under a valid, unique folder name" {
	make_qcow2 img.qcow2 1M
	for i in 1 2 3 4 5 6 7; do
		qio img.qcow2 "write -P $i 0 64k"
		qemu-img snapshot -c "s$i" img.qcow2
		qemu_raw img.qcow2 "want-$i.raw" -l "snapshot.id=$i"
	done
	# 1: blank ID and name                  -> snapshot-1
	# 2: name "x", shared with 3             -> its ID, "2"
	# 3: name "x", ID "." unusable           -> snapshot-3
	# 4: name "4b", ID "/"                   -> 4b
	# 5: name "2", the folder of 2 above    -> its ID, "5"
	# 6: name "5", so it gives way in turn   -> its ID, "6"
	# 7: name "snapshot-1"                   -> keeps it: a name gives way
	#    only to an ID, so snapshot 1 steps aside to "snapshot-1~"
	rename_snapshots img.qcow2 "" "" 2 x . x / 4b 5 2 6 5 7 snapshot-1
	IMG=$PWD/img.qcow2
	mount_image -o ro
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" "2
4b
5
6
snapshot-1
snapshot-1~
snapshot-3"
	for d in snapshot-1~:1 2:2 snapshot-3:3 4b:4 5:5 6:6 snapshot-1:7; do
		as_user cmp "$MNT/snapshots/${d%:*}/disk" "want-${d#*:}.raw"
	done
	run -0 as_user awk '$1 == "DIR" { on = 1; next } on && NF == 0 { on = 0 } on { print $1, $2, $3, $7 }' "$MNT/info"
	assert_eq "$output" "snapshot-1~ - - named-by-position
2 2 x named-by-id
snapshot-3 . x named-by-position
4b / 4b -
5 5 2 named-by-id
6 6 5 named-by-id
snapshot-1 7 snapshot-1 -"
}
