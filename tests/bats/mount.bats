#!/usr/bin/env bats
# mount.bats: a user mounts an image with imgfs and reads the disk, its
# partitions and the filesystems inside them, without root.

bats_require_minimum_version 1.5.0

load helpers

@test "without root, fuse2fs -o ro on p1 of a mounted qcow2 shows the files the ext4 was made from" {
	require fuse2fs
	make_gpt_ext4_fat "$IMG"
	mount_image
	as_user mkdir ext4
	run -0 as_user fuse2fs -o ro "$MNT/p1" "$PWD/ext4"
	run -0 as_user diff -r --exclude=lost+found src ext4
	run -0 as_user cat ext4/docs/link-to-hello
	assert_eq "$output" "hello from imgfs"
	unmount_fuse "$PWD/ext4"
	unmount_image
}

@test "without root, mcopy -i p2 reads the files of the FAT32 partition" {
	require mcopy mdir
	make_gpt_ext4_fat "$IMG"
	mount_image
	as_user mcopy -n -i "$MNT/p2" ::hello.txt - | cmp - src/hello.txt
	as_user mcopy -n -i "$MNT/p2" ::docs/random.bin - |
		cmp - src/data/random.bin
	as_user mcopy -n -i "$MNT/p2" ::docs/readme.txt - |
		cmp - src/docs/readme.txt
	run -0 as_user mdir -b -i "$MNT/p2" ::docs
	assert_eq "$output" $'::/docs/readme.txt\n::/docs/random.bin'
}

@test "disk and every pN of a GPT qcow2 hold the bytes qemu-img convert gives" {
	make_gpt_ext4_fat "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	mount_image
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\np3\nsnapshots'
	assert_same_bytes "$MNT" expected.raw
}

@test "an MBR with an extended partition shows p1, p2 and the logical p5 and p6 with their bytes" {
	make_mbr_logical "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	mount_image
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\np5\np6\nsnapshots'
	assert_same_bytes "$MNT" expected.raw
	run -0 as_user head -c 16 "$MNT/p5"
	assert_eq "$output" "imgfs logical p5"
}

@test "a raw image with the same GPT mounts too, with the same bytes" {
	make_gpt_ext4_fat disk.raw raw
	IMG=$PWD/disk.raw
	give_to_user "$IMG"
	mount_image
	assert_same_bytes "$MNT" disk.raw
	assert_eq "$(as_user stat -c %s "$MNT/disk")" "$GPT_DISK_BYTES"
}

@test "--format raw shows a qcow2 file as the bytes of the file itself" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	qemu-io -c "write -P 0x5a 1M 64k" "$IMG" >/dev/null
	mount_image --format raw
	as_user cmp "$MNT/disk" "$IMG"
	run -0 as_user head -c 4 "$MNT/disk"
	assert_eq "$output" $'QFI\xfb'
	remount_image -o format=raw
	as_user cmp "$MNT/disk" "$IMG"
}

@test "--format qcow2 reads a qcow2 as its virtual disk" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	qemu-io -c "write -P 0x5a 1M 64k" "$IMG" >/dev/null
	qemu-img convert -O raw "$IMG" expected.raw
	mount_image --format qcow2
	as_user cmp "$MNT/disk" expected.raw
}

@test "a disk without a partition table shows only disk, info and snapshots" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	qemu-io -c "write -P 0x5a 0 64k" "$IMG" >/dev/null
	mount_image
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\nsnapshots'
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" ""
}

@test "the tree is complete the moment imgfs returns: partitions and snapshots are there without waiting" {
	make_gpt_ext4_fat "$IMG"
	qemu-img snapshot -c installed "$IMG"
	for round in 1 2 3 4 5; do
		mount_image
		run -0 as_user ls "$MNT" "$MNT/snapshots" "$MNT/snapshots/installed"
		assert_eq "$output" "$(printf '%s\n' "$MNT:" disk files info p1 p2 p3 \
			snapshots "" "$MNT/snapshots:" installed "" \
			"$MNT/snapshots/installed:" disk files p1 p2 p3)"
		run -0 as_user head -c 16 "$MNT/p3"
		assert_eq "$output" "imgfs p3 pattern"
		unmount_image
	done
}

@test "the image and mountpoint may come before the options, as mount.fuse3 passes them" {
	make_gpt_ext4_fat "$IMG"
	give_to_user "$IMG"
	run -0 as_user "$IMGFS" "$IMG" "$MNT" -o ro,nodev,nosuid,noatime,nofail,_netdev,auto,user
	assert_eq "$output" ""
	is_mounted "$MNT"
	run -0 as_user stat -c %a "$MNT/disk" "$MNT/p1"
	assert_eq "$output" $'444\n444'
	run -0 awk -v m="$MNT" '$5 == m { print $6 }' /proc/self/mountinfo
	[[ ,$output, == *,ro,* && ,$output, == *,nodev,* && ,$output, == *,nosuid,* && ,$output, == *,noatime,* ]]
}

@test "with -f imgfs serves in the foreground and exits 0 once unmounted" {
	make_gpt_ext4_fat "$IMG"
	give_to_user "$IMG"
	as_user "$IMGFS" -f "$IMG" "$MNT" </dev/null >foreground.out 2>&1 3>&- &
	BG_PID=$!
	wait_until "$IMGFS_HANG_DEADLINE" is_mounted "$MNT"
	# In the foreground nothing says when the scan is done: the partitions
	# appear once it is.
	wait_until "$IMGFS_HANG_DEADLINE" as_user test -e "$MNT/p3"
	run -0 as_user head -c 16 "$MNT/p3"
	assert_eq "$output" "imgfs p3 pattern"
	as_user fusermount3 -u "$MNT"
	wait "$BG_PID" # status 0, or the test fails
	BG_PID=
	refute_mounted
}

@test "fusermount3 -u unmounts and the daemon exits" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	mount_image
	pid=$(daemon_pid)
	as_user fusermount3 -u "$MNT"
	wait_until "$IMGFS_EXIT_DEADLINE" pids_gone "$pid"
	refute_mounted
}

@test "--help prints the usage on stdout and exits 0; --version prints the version" {
	run -0 --separate-stderr "$IMGFS" --help
	[[ ${lines[0]} == "Usage: imgfs [OPTIONS] IMAGE MOUNTPOINT" ]]
	# Every option of the mount and every command is named.
	local word
	for word in "--format FORMAT" "-o backing=local|follow|deny" \
		    "-o cache_size=BYTES" "-o files_idle=SECONDS" "--disk N" \
		    "-o ro" "-o allow_other" "imgfs info IMAGE" "imgfs ls " \
		    "imgfs cat IMAGE PLACE" "imgfs cp IMAGE PLACE DEST" \
		    "imgfs tar IMAGE PLACE"; do
		[[ $output == *"$word"* ]] || { echo "--help does not name '$word'" >&2; return 1; }
	done
	assert_eq "$stderr" ""
	run -0 --separate-stderr "$IMGFS" --version
	assert_eq "$output" "imgfs 0.1.0"
	assert_eq "$stderr" ""
}

@test "a partition that runs past the end of the disk is shown up to the end and flagged in info" {
	truncate -s 32M big.raw
	sfdisk -q big.raw <<-EOF
		label: dos
		unit: sectors
		start=2048, size=16384, type=83
		start=20480, size=40960, type=83
	EOF
	# The disk is cut at 16 MiB: p2 (10 MiB + 20 MiB) now ends 14 MiB
	# past the end of the disk.
	pattern_bytes "imgfs clipped p2" 6M >p2.bin
	put_file big.raw $((20480 * 512)) p2.bin
	truncate -s 16M big.raw
	qemu-img convert -f raw -O qcow2 big.raw "$IMG"
	mount_image
	assert_eq "$(as_user stat -c %s "$MNT/p2")" $((6 * 1024 * 1024))
	as_user cmp "$MNT/p2" p2.bin
	run -0 as_user awk '$1 == "p2" { print $2, $3, $4, $NF }' "$MNT/info"
	assert_eq "$output" "10485760 6291456 0x83 past-end-of-disk"
	run -0 as_user awk '$1 == "p1" { print $2, $3, $4, $NF }' "$MNT/info"
	assert_eq "$output" "1048576 8388608 0x83 -"
}

@test "a GPT whose two headers are both corrupt leaves disk alone, and info says why" {
	make_gpt_ext4_fat "$IMG"
	# Break the "EFI PART" signatures of the primary and backup headers.
	qemu-io -c "write -P 0x58 512 8" \
		-c "write -P 0x58 $((GPT_DISK_BYTES - 512)) 8" "$IMG" >/dev/null
	qemu-img convert -O raw "$IMG" expected.raw
	mount_image
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\nsnapshots'
	as_user cmp "$MNT/disk" expected.raw
	run -0 info_line partition-error
	assert_eq "$output" "protective MBR of a GPT disk, but no valid GPT header: the primary (LBA 1) and the backup (last LBA) are corrupt, or the image was truncated"
}

@test "an overlay whose backing file lies in the image's folder or below mounts by default and reads through it" {
	mkdir -p vm/bases
	qemu-img create -q -f qcow2 vm/bases/base.qcow2 16M
	qemu-io -c "write -P 0xba 0 2M" vm/bases/base.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b bases/base.qcow2 -F qcow2 vm/mid.qcow2
	qemu-io -c "write -P 0x3d 1M 64k" vm/mid.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b mid.qcow2 -F qcow2 vm/top.qcow2
	qemu-io -c "write -P 0x70 1536k 4k" vm/top.qcow2 >/dev/null
	IMG=$PWD/vm/top.qcow2
	qemu-img convert -O raw "$IMG" expected.raw
	mount_image
	as_user cmp "$MNT/disk" expected.raw
	run -0 info_line backing-1
	assert_eq "$output" "$PWD/vm/mid.qcow2 qcow2"
	run -0 info_line backing-2
	assert_eq "$output" "$PWD/vm/bases/base.qcow2 qcow2"
	# du counts what the top image itself stores, not its backing files.
	run -0 as_user du -B1 "$MNT/disk"
	assert_eq "$output" "$(allocated_bytes "$IMG")	$MNT/disk"
}
