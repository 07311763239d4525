#!/usr/bin/env bats
# write-snapshots.bats: a user takes and deletes internal snapshots with
# mkdir and rmdir in MNT/snapshots, and qemu-img agrees afterwards; what may
# not change (read-only mounts, read-only images, snapshot files) fails with
# EROFS and stays as it was.

bats_require_minimum_version 1.5.0

load helpers
load images

@test "mkdir snapshots/NAME takes a snapshot that keeps the disk as it was while disk is rewritten, and qemu-img lists it" {
	make_gpt_ext4_fat "$IMG"
	mount_image
	pattern_bytes "before the snapshot" 4M | as_user dd of="$MNT/p3" conv=notrunc,fsync status=none
	as_user cat "$MNT/disk" >at-mkdir.raw
	run -0 as_user mkdir "$MNT/snapshots/installed"
	run -0 as_user ls "$MNT/snapshots" "$MNT/snapshots/installed"
	assert_eq "$output" "$(printf '%s\n' "$MNT/snapshots:" installed "" \
		"$MNT/snapshots/installed:" disk files p1 p2 p3)"
	make_workload workload.sh "$GPT_DISK_BYTES" 99 200
	run -0 as_user bash workload.sh "$MNT/disk"
	pattern_bytes "after the snapshot" 4M | as_user dd of="$MNT/p3" conv=notrunc,fsync status=none
	as_user cmp "$MNT/snapshots/installed/disk" at-mkdir.raw
	run -0 as_user head -c 19 "$MNT/snapshots/installed/p3"
	assert_eq "$output" "before the snapshot"
	run -0 as_user head -c 18 "$MNT/p3"
	assert_eq "$output" "after the snapshot"
	as_user cat "$MNT/disk" >after.raw
	unmount_image
	run -0 qemu-img snapshot -l "$IMG"
	assert_eq "${#lines[@]}" 3
	[[ ${lines[2]} == *" installed "* ]]
	qemu_raw "$IMG" snapshot.raw -l snapshot.name=installed
	cmp snapshot.raw at-mkdir.raw
	qemu_raw "$IMG" active.raw
	cmp active.raw after.raw
	run -0 qemu-img check "$IMG"
}

@test "snapshots taken one after another with mkdir each keep their own content" {
	make_gpt_ext4_fat "$IMG"
	mount_image
	for n in 1 2 3; do
		pattern_bytes "generation $n" 4M | as_user dd of="$MNT/p3" conv=notrunc status=none
		as_user mkdir "$MNT/snapshots/gen$n"
	done
	pattern_bytes "generation 4" 4M | as_user dd of="$MNT/p3" conv=notrunc status=none
	for n in 1 2 3; do
		pattern_bytes "generation $n" 4M | as_user cmp - "$MNT/snapshots/gen$n/p3"
	done
	remount_image
	for n in 1 2 3 4; do
		[[ $n == 4 ]] && f=$MNT/p3 || f=$MNT/snapshots/gen$n/p3
		pattern_bytes "generation $n" 4M | as_user cmp - "$f"
	done
	unmount_image
	run -0 qemu-img snapshot -l "$IMG"
	[[ ${lines[2]} == *" gen1 "* && ${lines[3]} == *" gen2 "* && ${lines[4]} == *" gen3 "* ]]
	for n in 1 2 3; do
		qemu_raw "$IMG" "gen$n.raw" -l "snapshot.name=gen$n"
		pattern_bytes "generation $n" 4M |
			cmp - <(tail -c +$((133120 * 512 + 1)) "gen$n.raw" | head -c 4M)
	done
	run -0 qemu-img check "$IMG"
}

@test "rmdir snapshots/NAME deletes the snapshot, also one qemu-img made, and the others stay intact" {
	make_gpt_ext4_fat "$IMG"
	qemu-img snapshot -c old "$IMG"
	qemu_raw "$IMG" old.raw
	qio "$IMG" "write -P 0x33 $((133120 * 512)) 1M"
	qemu-img snapshot -c keep "$IMG"
	qemu_raw "$IMG" keep.raw
	mount_image
	as_user mkdir "$MNT/snapshots/mine"
	run -0 bounded 20 as_user rmdir "$MNT/snapshots/old"
	run -0 bounded 20 as_user rmdir "$MNT/snapshots/mine"
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" keep
	run -2 as_user ls "$MNT/snapshots/old"
	assert_eq "$output" "ls: cannot access '$MNT/snapshots/old': No such file or directory"
	as_user dd if=/dev/zero of="$MNT/disk" bs=1M seek=1 count=8 conv=notrunc status=none
	as_user cmp "$MNT/snapshots/keep/disk" keep.raw
	unmount_image
	run -0 qemu-img snapshot -l "$IMG"
	assert_eq "${#lines[@]}" 3
	[[ ${lines[2]} == *" keep "* ]]
	qemu_raw "$IMG" keep-after.raw -l snapshot.name=keep
	cmp keep.raw keep-after.raw
	run -0 qemu-img check "$IMG"
}

@test "rmdir of a snapshot while one of its files is open fails with 'Device or resource busy', and works once it is closed" {
	make_gpt_ext4_fat "$IMG"
	mount_image
	as_user mkdir "$MNT/snapshots/busy"
	run -1 bounded 20 as_user bash -c 'exec 8<"$1/p1"; rmdir "$1"' bash "$MNT/snapshots/busy"
	assert_eq "$output" "rmdir: failed to remove '$MNT/snapshots/busy': Device or resource busy"
	run -1 bounded 20 as_user bash -c 'exec 8<"$1/disk"; rmdir "$1"' bash "$MNT/snapshots/busy"
	assert_eq "$output" "rmdir: failed to remove '$MNT/snapshots/busy': Device or resource busy"
	# A file of the snapshot's own filesystems counts as one of its files.
	run -1 bounded 20 as_user bash -c 'exec 8<"$1/files/p1/hello.txt"; rmdir "$1"' bash "$MNT/snapshots/busy"
	assert_eq "$output" "rmdir: failed to remove '$MNT/snapshots/busy': Device or resource busy"
	run -1 bounded 20 as_user bash -c 'exec 8<"$1/files/p2/docs/readme.txt"; rmdir "$1"' bash "$MNT/snapshots/busy"
	assert_eq "$output" "rmdir: failed to remove '$MNT/snapshots/busy': Device or resource busy"
	run -0 as_user cat "$MNT/snapshots/busy/files/p1/hello.txt"
	assert_eq "$output" "$(cat src/hello.txt)"
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" busy
	run -0 bounded 20 as_user rmdir "$MNT/snapshots/busy"
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" ""
	unmount_image
	run -0 qemu-img snapshot -l "$IMG"
	assert_eq "$output" ""
	run -0 qemu-img check "$IMG"
}

@test "mkdir of a snapshot name already in use fails with 'File exists' and leaves that snapshot alone" {
	make_gpt_ext4_fat "$IMG"
	qemu-img snapshot -c taken "$IMG"
	qemu_raw "$IMG" taken.raw
	mount_image
	as_user dd if=/dev/zero of="$MNT/p3" bs=1M count=4 conv=notrunc status=none
	run -1 as_user mkdir "$MNT/snapshots/taken"
	assert_eq "$output" "mkdir: cannot create directory '$MNT/snapshots/taken': File exists"
	as_user mkdir "$MNT/snapshots/second"
	run -1 as_user mkdir "$MNT/snapshots/second"
	assert_eq "$output" "mkdir: cannot create directory '$MNT/snapshots/second': File exists"
	as_user cmp "$MNT/snapshots/taken/disk" taken.raw
	unmount_image
	run -0 qemu-img snapshot -l "$IMG"
	assert_eq "${#lines[@]}" 4
	qemu_raw "$IMG" taken-after.raw -l snapshot.name=taken
	cmp taken.raw taken-after.raw
	run -0 qemu-img check "$IMG"
}

@test "snapshot files refuse writes, fallocate and truncation with 'Read-only file system' on a read-write mount" {
	make_gpt_ext4_fat "$IMG"
	qemu-img snapshot -c frozen "$IMG"
	qemu_raw "$IMG" frozen.raw
	mount_image
	run -1 as_user dd if=/dev/zero of="$MNT/snapshots/frozen/disk" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/snapshots/frozen/disk': Read-only file system"
	run -1 as_user fallocate -p -o 0 -l 1M "$MNT/snapshots/frozen/p1"
	assert_eq "$output" "fallocate: cannot open $MNT/snapshots/frozen/p1: Read-only file system"
	run -1 as_user truncate -s 0 "$MNT/snapshots/frozen/p3"
	assert_eq "$output" "truncate: cannot open '$MNT/snapshots/frozen/p3' for writing: Read-only file system"
	as_user cmp "$MNT/snapshots/frozen/disk" frozen.raw
	unmount_image
	qemu_raw "$IMG" frozen-after.raw -l snapshot.name=frozen
	cmp frozen.raw frozen-after.raw
}

# refuses_every_change: as the user, on $MNT: writes to disk and p1,
# fallocate punch-hole and zero-range, truncate, mkdir and rmdir in
# snapshots/ (which has a snapshot "kept") each fail with EROFS.
refuses_every_change() {
	run -1 as_user dd if=/dev/zero of="$MNT/disk" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/disk': Read-only file system"
	run -1 as_user dd if=/dev/zero of="$MNT/p1" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/p1': Read-only file system"
	run -1 as_user fallocate -p -o 0 -l 1M "$MNT/p1"
	assert_eq "$output" "fallocate: cannot open $MNT/p1: Read-only file system"
	run -1 as_user fallocate -z -o 0 -l 1M "$MNT/disk"
	assert_eq "$output" "fallocate: cannot open $MNT/disk: Read-only file system"
	run -1 as_user truncate -s 0 "$MNT/p2"
	assert_eq "$output" "truncate: cannot open '$MNT/p2' for writing: Read-only file system"
	run -1 as_user mkdir "$MNT/snapshots/new"
	assert_eq "$output" "mkdir: cannot create directory '$MNT/snapshots/new': Read-only file system"
	run -1 bounded 20 as_user rmdir "$MNT/snapshots/kept"
	assert_eq "$output" "rmdir: failed to remove '$MNT/snapshots/kept': Read-only file system"
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" kept
}

@test "with -o ro every change fails with 'Read-only file system' and the image stays byte for byte the same" {
	make_gpt_ext4_fat "$IMG"
	qemu-img snapshot -c kept "$IMG"
	cp "$IMG" before.qcow2
	mount_image -o ro
	refuses_every_change
	unmount_image
	cmp before.qcow2 "$IMG"
}

@test "an image file the user may only read gives 'Read-only file system' on every change and stays the same" {
	make_gpt_ext4_fat "$IMG"
	qemu-img snapshot -c kept "$IMG"
	cp "$IMG" before.qcow2
	give_to_user "$IMG"
	chmod 0444 "$IMG"
	run -0 --separate-stderr as_user "$IMGFS" "$IMG" "$MNT"
	assert_eq "$stderr" "imgfs: $IMG is not writable; mounting read-only"
	refuses_every_change
	unmount_image
	cmp before.qcow2 "$IMG"
}

@test "a raw image mounted with -o ro refuses writes and fallocate with 'Read-only file system'" {
	det_random 8M >disk.raw
	IMG=$PWD/disk.raw
	cp disk.raw before.raw
	mount_image -o ro
	run -1 as_user dd if=/dev/zero of="$MNT/disk" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/disk': Read-only file system"
	run -1 as_user fallocate -p -o 0 -l 1M "$MNT/disk"
	assert_eq "$output" "fallocate: cannot open $MNT/disk: Read-only file system"
	run -1 as_user fallocate -z -o 0 -l 1M "$MNT/disk"
	assert_eq "$output" "fallocate: cannot open $MNT/disk: Read-only file system"
	unmount_image
	cmp before.raw disk.raw
}
