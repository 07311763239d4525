#!/usr/bin/env bats
# write.bats: a user changes a mounted image through disk and pN (dd,
# fallocate, mkfs, sfdisk, fuse2fs) and qemu-img, after unmounting, finds
# the bytes it expects and nothing wrong with the image.

bats_require_minimum_version 1.5.0

load helpers
load images

DISK_BYTES=$((64 << 20))

# The tests that start from a partitioned disk use qcow2, as most users have;
# IMGFS_TEST_WRITE_FORMAT=raw runs them on raw images instead.
FMT=${IMGFS_TEST_WRITE_FORMAT:-qcow2}

# gpt_disk: $IMG is make_gpt_ext4_fat's disk, in $FMT.
gpt_disk() {
	IMG=$PWD/disk.$FMT
	make_gpt_ext4_fat "$IMG" "$FMT"
}

# image_check: qemu-img check "$IMG" is clean (raw images have nothing to
# check).
image_check() {
	[[ $(img_format "$IMG") == raw ]] && return 0
	run -0 qemu-img check "$IMG"
}

# write_suite_on IMG: the user mounts IMG read-write and runs the same
# deterministic workload on MNT/disk as root runs on a raw copy of IMG's
# bytes (the reference); the mount shows the reference's bytes before and
# after a remount, and after unmounting qemu-img compare finds IMG equal to
# the reference and qemu-img check finds nothing wrong.
write_suite_on() {
	local img=$1 size
	IMG=$PWD/$img
	size=$(img_virtual_size "$IMG")
	qemu_raw "$IMG" reference.raw
	make_workload workload.sh "$size" 4242
	bash workload.sh reference.raw
	mount_image
	run -0 as_user bash workload.sh "$MNT/disk"
	as_user cmp "$MNT/disk" reference.raw
	remount_image
	as_user cmp "$MNT/disk" reference.raw
	unmount_image
	run -0 qemu-img compare -f raw reference.raw "$IMG"
	image_check
}

@test "the write workload on a qcow2 with 64 KiB clusters gives the bytes it gives a raw file" {
	make_qcow2 disk.qcow2 "$DISK_BYTES"
	fill_pattern disk.qcow2 3
	write_suite_on disk.qcow2
}

@test "the write workload on a qcow2 with 512-byte clusters gives the bytes it gives a raw file" {
	make_qcow2 small.qcow2 16M cluster_size=512
	fill_pattern small.qcow2 5
	write_suite_on small.qcow2
}

@test "the write workload on a qcow2 with refcount_bits=1 gives the bytes it gives a raw file" {
	make_qcow2 rc1.qcow2 "$DISK_BYTES" refcount_bits=1
	fill_pattern rc1.qcow2 7
	write_suite_on rc1.qcow2
}

@test "the write workload on a qcow2 with refcount_bits=64 gives the bytes it gives a raw file" {
	make_qcow2 rc64.qcow2 "$DISK_BYTES" refcount_bits=64
	fill_pattern rc64.qcow2 9
	write_suite_on rc64.qcow2
}

@test "the write workload on a qcow2 with extended L2 entries gives the bytes it gives a raw file" {
	make_qcow2 ext.qcow2 "$DISK_BYTES" extended_l2=on,cluster_size=64k
	fill_pattern ext.qcow2 11
	write_suite_on ext.qcow2
}

@test "the write workload on a compressed qcow2 (qemu-img convert -c) gives the bytes it gives a raw file" {
	# base64 text: deflates to about 3/4, so every cluster is compressed.
	det_random 36M | base64 -w 0 >data.raw
	truncate -s "$DISK_BYTES" data.raw
	qemu-img convert -c -f raw -O qcow2 data.raw comp.qcow2
	# 48 MiB of data stored in less: compressed (qemu-img map of 7.2 does
	# not say so).
	(($(stat -c %s comp.qcow2) < 40 << 20))
	write_suite_on comp.qcow2
}

@test "the write workload on a qcow2 over a backing file gives the bytes it gives a raw file and leaves the backing file alone" {
	make_qcow2 base.qcow2 "$DISK_BYTES"
	fill_pattern base.qcow2 13
	cp base.qcow2 base-before.qcow2
	make_overlay overlay.qcow2 base.qcow2
	qio overlay.qcow2 "write -P 0x77 1M 3M" "write -z 10M 1M"
	write_suite_on overlay.qcow2
	cmp base.qcow2 base-before.qcow2
}

@test "the write workload on a qcow2 with snapshots gives the bytes it gives a raw file and the snapshots keep theirs" {
	make_qcow2 snap.qcow2 "$DISK_BYTES"
	fill_pattern snap.qcow2 15
	qemu-img snapshot -c first snap.qcow2
	fill_pattern snap.qcow2 16
	qemu-img snapshot -c second snap.qcow2
	qio snap.qcow2 "write -P 0x42 2M 5M"
	qemu_raw snap.qcow2 first.raw -l snapshot.name=first
	qemu_raw snap.qcow2 second.raw -l snapshot.name=second
	write_suite_on snap.qcow2
	qemu_raw snap.qcow2 first-after.raw -l snapshot.name=first
	qemu_raw snap.qcow2 second-after.raw -l snapshot.name=second
	cmp first.raw first-after.raw
	cmp second.raw second-after.raw
	run -0 qemu-img snapshot -l snap.qcow2
	[[ ${lines[2]} == *" first "* && ${lines[3]} == *" second "* ]]
}

@test "the write workload on a compat=0.10 qcow2 gives the bytes it gives a raw file" {
	make_qcow2 old.qcow2 "$DISK_BYTES" compat=0.10
	fill_pattern old.qcow2 17
	write_suite_on old.qcow2
	run -0 qemu-img info --output=json old.qcow2
	[[ $output == *'"compat": "0.10"'* ]]
}

@test "the write workload on a raw image gives the bytes it gives a raw file" {
	det_random 20M >disk.raw
	truncate -s "$DISK_BYTES" disk.raw
	write_suite_on disk.raw
}

@test "without root, mkfs.ext4 on p1 and files written with fuse2fs are there after a remount, and qemu-img check is clean" {
	require fuse2fs mkfs.ext4 e2fsck
	gpt_disk
	mount_image
	# The user owns the new filesystem's root folder, as with mke2fs run
	# by that user on a device of its own.
	run -0 as_user mkfs.ext4 -q -F -L fresh \
		-E root_owner="$(as_user id -u):$(as_user id -g)" "$MNT/p1"
	as_user mkdir ext4
	run -0 as_user fuse2fs "$MNT/p1" "$PWD/ext4"
	run -0 as_user cp -r src/. ext4/
	as_user mkdir ext4/more
	det_random 3M | as_user dd of=ext4/more/big.bin status=none
	unmount_fuse "$PWD/ext4"
	remount_image
	run -0 as_user fuse2fs -o ro "$MNT/p1" "$PWD/ext4"
	run -0 as_user diff -r --exclude=lost+found --exclude=more src ext4
	det_random 3M | as_user cmp - ext4/more/big.bin
	unmount_fuse "$PWD/ext4"
	run -0 as_user e2fsck -fn "$MNT/p1"
	run -0 info_line p1
	[[ $output == *"ext4"*"fresh"* ]]
	unmount_image
	image_check
	qemu-img convert -O raw "$IMG" after.raw
	extract after.raw $((2048 * 512)) $((49152 * 512)) p1.raw
	run -0 debugfs -R "cat /more/big.bin" p1.raw
	det_random 3M | cmp - <(debugfs -R "cat /more/big.bin" p1.raw 2>/dev/null)
}

@test "sfdisk on disk makes the new partition files appear as soon as it returns, and go when the table shrinks" {
	IMG=$PWD/disk.$FMT
	qemu-img create -q -f "$FMT" "$IMG" "$DISK_BYTES"
	mount_image
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\nsnapshots'
	as_user sfdisk -q "$MNT/disk" <<-EOF
		label: gpt
		unit: sectors
		start=2048, size=8192
		start=10240, size=16384
		start=26624, size=20480
	EOF
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\np3\nsnapshots'
	run -0 as_user stat -c %s "$MNT/p1" "$MNT/p2" "$MNT/p3"
	assert_eq "$output" $'4194304\n8388608\n10485760'
	pattern_bytes "written via p2" 8M | as_user dd of="$MNT/p2" conv=notrunc status=none
	as_user sfdisk -q --delete "$MNT/disk" 3
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\nsnapshots'
	as_user sfdisk -q "$MNT/disk" <<-EOF
		label: dos
		unit: sectors
		start=2048, size=4096, type=83
	EOF
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\nsnapshots'
	assert_eq "$(as_user stat -c %s "$MNT/p1")" 2097152
	unmount_image
	image_check
	qemu-img convert -O raw "$IMG" after.raw
	run -0 partitions_of after.raw
	assert_eq "$output" "1 1048576 2097152 83"
	extract after.raw $((10240 * 512)) $((16384 * 512)) p2.raw
	pattern_bytes "written via p2" 8M | cmp - p2.raw
}

# The lines p2 is filled with: 20 bytes each, so that a read of 20 bytes
# at any multiple of 20 is one whole line.
P2_FIRST="first home of p2 .."
P2_SECOND="second home of p2 ."

@test "a p2 kept open while sfdisk moves it reads p2's new bytes through the same descriptor, and 'No such file or directory' once p2 is deleted" {
	IMG=$PWD/disk.$FMT
	qemu-img create -q -f "$FMT" "$IMG" "$DISK_BYTES"
	mount_image
	as_user sfdisk -q "$MNT/disk" <<-EOF
		label: gpt
		unit: sectors
		start=2048, size=8192
		start=10240, size=8192
	EOF
	pattern_bytes "$P2_FIRST" 4M | as_user dd of="$MNT/p2" conv=notrunc status=none
	pattern_bytes "$P2_SECOND" 4M | as_user dd of="$MNT/disk" bs=1M \
		seek=$((30720 * 512)) oflag=seek_bytes conv=notrunc status=none
	# One descriptor of p2, read 20 bytes at a time while the table
	# changes under it.
	as_user bash -c '
		exec 4<"$1"
		dd bs=20 count=1 status=none <&4 >read1
		touch opened
		while [ ! -e moved ]; do sleep 0.1; done
		dd bs=20 count=1 status=none <&4 >read2
		touch read
		while [ ! -e deleted ]; do sleep 0.1; done
		dd bs=20 count=1 status=none <&4 >read3 2>err3
		echo $? >rc3' bash "$MNT/p2" 3>&- &
	holder=$!
	wait_until 10 test -e opened
	as_user sfdisk -q "$MNT/disk" <<-EOF
		label: gpt
		unit: sectors
		start=2048, size=8192
		start=30720, size=8192
	EOF
	touch moved
	wait_until 10 test -e read
	as_user sfdisk -q --delete "$MNT/disk" 2
	touch deleted
	wait "$holder"
	assert_eq "$(cat read1)" "$P2_FIRST"
	assert_eq "$(cat read2)" "$P2_SECOND"
	assert_eq "$(cat rc3)" 1
	[[ $(cat err3) == *"No such file or directory"* ]]
	assert_eq "$(stat -c %s read3)" 0
	unmount_image
	image_check
}

# alias_rounds FROM TO ROUNDS: as the user, ROUNDS times: read the
# 8 KiB at a random offset of TO through the page cache, write new bytes
# there through FROM, and read them back through TO at once (plain dd,
# buffered). $1/$2 are "FILE:BASE" with BASE the byte where FILE starts
# within disk.
alias_rounds() {
	as_user bash -c '
		from=${1%:*} from_base=${1##*:} to=${2%:*} to_base=${2##*:}
		span=$3 rounds=$4
		for ((i = 0; i < rounds; i++)); do
			off=$(( (RANDOM * 32768 + RANDOM) % (span - 8192) ))
			dd if="$to" bs=8192 skip=$((off + to_base)) count=1 \
				iflag=skip_bytes status=none >/dev/null
			printf "round %06d %s " "$i" "$RANDOM" | head -c 20 >want
			yes "$(cat want)" | head -c 8192 >want
			dd if=want of="$from" bs=8192 seek=$((off + from_base)) \
				oflag=seek_bytes conv=notrunc status=none
			if ! dd if="$to" bs=8192 skip=$((off + to_base)) count=1 \
				iflag=skip_bytes status=none | cmp -s - want; then
				echo "round $i: $to at $((off + to_base)) is stale" >&2
				exit 1
			fi
		done' bash "$1" "$2" "$3" "$4"
}

@test "a write through p1 is seen at once through disk at the same bytes, and the other way round, with the page cache on" {
	gpt_disk
	mount_image
	p1_base=$((2048 * 512)) p1_size=$((49152 * 512))
	run -0 alias_rounds "$MNT/p1:0" "$MNT/disk:$p1_base" "$p1_size" 300
	run -0 alias_rounds "$MNT/disk:$p1_base" "$MNT/p1:0" "$p1_size" 300
	# p3 and its range of disk, both directions in one run.
	p3_base=$((133120 * 512))
	run -0 alias_rounds "$MNT/p3:0" "$MNT/disk:$p3_base" $((4 << 20)) 100
	run -0 alias_rounds "$MNT/disk:$p3_base" "$MNT/p3:0" $((4 << 20)) 100
	unmount_image
	image_check
}

@test "on a GPT disk with 128 partitions, writes through disk show at once in p5, p70 and p128, and writes through p90 in disk" {
	# 128 partitions of 256 KiB from sector 2048 (the table's own 128
	# entries fill sectors 2..33).
	IMG=$PWD/many.qcow2
	truncate -s 40M many.raw
	{
		echo "label: gpt"
		for i in $(seq 1 128); do
			echo "start=$((2048 + (i - 1) * 512)), size=512"
		done
	} | sfdisk -q many.raw
	qemu-img convert -f raw -O qcow2 many.raw "$IMG"
	mount_image
	run -0 as_user ls "$MNT/p128"
	for n in 5 70 128; do
		base=$(( (2048 + (n - 1) * 512) * 512 ))
		run -0 alias_rounds "$MNT/disk:$base" "$MNT/p$n:0" $((256 << 10)) 20
	done
	base=$(( (2048 + 89 * 512) * 512 ))
	run -0 alias_rounds "$MNT/p90:0" "$MNT/disk:$base" $((256 << 10)) 20
	unmount_image
	image_check
}

@test "a write past the end of p3 fails with 'No space left on device' and changes nothing after it" {
	gpt_disk
	qemu-img convert -O raw "$IMG" before.raw
	mount_image
	p3_size=$((8192 * 512))
	run -1 as_user dd if=/dev/zero of="$MNT/p3" bs=4096 seek=$((p3_size / 4096)) count=1 conv=notrunc status=none
	assert_eq "$output" "dd: error writing '$MNT/p3': No space left on device"
	# Straddling the end: what fits is written, then ENOSPC.
	run -1 as_user dd if=/dev/zero of="$MNT/p3" bs=8192 seek=$((p3_size - 4096)) count=1 oflag=seek_bytes conv=notrunc status=none
	assert_eq "${lines[0]}" "dd: error writing '$MNT/p3': No space left on device"
	assert_eq "$(as_user stat -c %s "$MNT/p3")" "$p3_size"
	run -1 as_user dd if=/dev/zero of="$MNT/disk" bs=512 seek=$((GPT_DISK_BYTES / 512)) count=1 conv=notrunc status=none
	assert_eq "$output" "dd: error writing '$MNT/disk': No space left on device"
	unmount_image
	image_check
	qemu-img convert -O raw "$IMG" after.raw
	p3_end=$(((133120 + 8192) * 512))
	cmp <(head -c $((p3_end - 4096)) before.raw) <(head -c $((p3_end - 4096)) after.raw)
	cmp <(tail -c +$((p3_end + 1)) before.raw) <(tail -c +$((p3_end + 1)) after.raw)
	cmp <(dd if=after.raw bs=4096 skip=$(((p3_end - 4096) / 4096)) count=1 status=none) <(head -c 4096 /dev/zero)
}

@test "a probed raw image refuses a write that would make it look like a qcow2: 'Operation not permitted'" {
	det_random 8M >disk.raw
	IMG=$PWD/disk.raw
	cp disk.raw before.raw
	mount_image
	run -1 as_user bash -c 'printf "QFI\xfb\0\0\0\3" | dd of="$1" conv=notrunc status=none' bash "$MNT/disk"
	assert_eq "$output" "dd: error writing '$MNT/disk': Operation not permitted"
	run -0 as_user bash -c 'printf "not an image" | dd of="$1" conv=notrunc status=none' bash "$MNT/disk"
	unmount_image
	cmp <(tail -c +13 before.raw) <(tail -c +13 disk.raw)
	assert_eq "$(head -c 12 disk.raw)" "not an image"
}

@test "writing and punching the same 8 MiB twenty times does not grow the qcow2 file beyond the first round" {
	make_qcow2 "$IMG" "$DISK_BYTES"
	det_random 8M >chunk.bin
	mount_image
	for round in $(seq 1 20); do
		as_user dd if=chunk.bin of="$MNT/disk" bs=1M seek=$((round % 4 * 8)) conv=notrunc,fsync status=none
		if ((round == 1)); then
			first=$(stat -c %s "$IMG")
		fi
		as_user fallocate -p -o $((round % 4 * 8))M -l 8M "$MNT/disk"
	done
	as_user dd if=chunk.bin of="$MNT/disk" bs=1M seek=40 conv=notrunc,fsync status=none
	(($(stat -c %s "$IMG") <= first + (1 << 20)))
	unmount_image
	run -0 qemu-img check "$IMG"
	qemu_raw "$IMG" after.raw
	cmp <(tail -c +$((40 * 1048576 + 1)) after.raw | head -c 8M) chunk.bin
	cmp -n $((40 << 20)) after.raw /dev/zero
}
