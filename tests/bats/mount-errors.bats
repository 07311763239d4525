#!/usr/bin/env bats
# mount-errors.bats: bad input. Each mistake gives its own one-line message
# on stderr and status 1, and leaves nothing mounted; bad metadata found
# while serving gives EIO and the daemon keeps serving; writes to the
# read-only parts give EROFS; a killed daemon leaves a mountpoint that
# fusermount3 -u cleans up.

bats_require_minimum_version 1.5.0

load helpers

# fails_with MESSAGE IMGFS-ARGS...: the user runs imgfs with ARGS; it exits
# 1 printing exactly MESSAGE on stderr and nothing on stdout, and nothing is
# mounted on $MNT.
fails_with() {
	local msg=$1
	shift
	run -1 --separate-stderr as_user "$IMGFS" "$@"
	assert_eq "$output" ""
	assert_eq "$stderr" "$msg"
	refute_mounted
}

@test "a missing image: 'No such file or directory', with the path as given" {
	fails_with "imgfs: $PWD/missing.qcow2: No such file or directory" \
		"$PWD/missing.qcow2" "$MNT"
	fails_with "imgfs: missing.qcow2: No such file or directory" \
		missing.qcow2 "$MNT"
}

@test "an image the user cannot read: 'Permission denied'" {
	[[ $EUID -eq 0 ]] || [[ ! -r /etc/shadow ]] || skip "user can read anything"
	qemu-img create -q -f qcow2 "$IMG" 16M
	give_to_user "$IMG"
	chmod 0000 "$IMG"
	fails_with "imgfs: $IMG: Permission denied" "$IMG" "$MNT"
}

@test "a folder given as the image is refused" {
	mkdir adir
	fails_with "imgfs: $PWD/adir: is a directory, not a disk image" "$PWD/adir" "$MNT"
}

@test "a corrupt qcow2 header: the image layer's message naming the image" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	put_be64 "$IMG" 40 $((1 << 32))        # L1 table offset: 4 GiB
	size=$(stat -c %s "$IMG")
	fails_with "imgfs: $IMG: L1 table at 0x100000000 (8 bytes) lies past the end of the file ($size bytes)" \
		"$IMG" "$MNT"
}

@test "DMG (a koly trailer in the last 512 bytes) and cloop (its shell-script preamble) images are refused by name" {
	local reads="imgfs reads raw, qcow2, vmdk, vpc (vhd), vhdx, vdi, ova (convert it with 'qemu-img convert -O qcow2', or give --format=raw to see the file's bytes)"
	# UDIF trailer: "koly", version 4, header size 512, big-endian.
	truncate -s 1M img.dmg
	printf 'koly\x00\x00\x00\x04\x00\x00\x02\x00' |
		dd of=img.dmg bs=1 seek=$((1048576 - 512)) conv=notrunc status=none
	printf '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0\n' >img.cloop
	truncate -s 64k img.cloop
	give_to_user img.dmg
	give_to_user img.cloop
	fails_with "imgfs: $PWD/img.dmg: DMG images are not supported; $reads" \
		"$PWD/img.dmg" "$MNT"
	fails_with "imgfs: $PWD/img.cloop: cloop images are not supported; $reads" \
		"$PWD/img.cloop" "$MNT"
	run -1 --separate-stderr "$IMGFS" info "$PWD/img.dmg"
	assert_eq "$stderr" "imgfs: $PWD/img.dmg: DMG images are not supported; $reads"
}

@test "images of formats imgfs does not read are refused by name, not shown as raw; --format=raw shows their bytes" {
	local fmt name
	for fmt in qed:QED parallels:Parallels; do
		name=${fmt#*:} fmt=${fmt%%:*}
		qemu-img create -q -f "$fmt" "img.$fmt" 16M
		give_to_user "img.$fmt"
		fails_with "imgfs: $PWD/img.$fmt: $name images are not supported; imgfs reads raw, qcow2, vmdk, vpc (vhd), vhdx, vdi, ova (convert it with 'qemu-img convert -O qcow2', or give --format=raw to see the file's bytes)" \
			"$PWD/img.$fmt" "$MNT"
	done
	# QEMU's old qcow shares qcow2's magic: named as itself, not as a
	# qcow2 of a strange version.
	qemu-img create -q -f qcow img.qcow 16M
	give_to_user img.qcow
	fails_with "imgfs: $PWD/img.qcow: qcow (version 1) images are not supported; imgfs reads qcow2 (convert it with 'qemu-img convert -O qcow2')" \
		"$PWD/img.qcow" "$MNT"
	IMG=$PWD/img.qed
	mount_image -o ro --format=raw
	as_user cmp "$MNT/disk" img.qed
}

@test "VMDK, VDI, VHD and VHDX images made by qemu-img are probed and mounted read-only" {
	local fmt
	for fmt in vmdk vdi vhdx vpc; do
		qemu-img create -q -f "$fmt" "img.$fmt" 16M
		qemu-io -f "$fmt" -c "write -q -P 0x5a 1M 64k" "img.$fmt"
		qemu-img convert -f "$fmt" -O raw "img.$fmt" "want.$fmt.raw"
		IMG=$PWD/img.$fmt
		mount_image
		as_user cmp "$MNT/disk" "want.$fmt.raw"
		run -1 as_user dd if=/dev/zero of="$MNT/disk" bs=512 count=1 conv=notrunc status=none
		[[ $output == *"Read-only file system"* ]]
		# Read locks only: qemu-img reads it while it is mounted.
		run -0 qemu-img info -f "$fmt" "img.$fmt"
		unmount_image
	done
}

@test "a backing file outside the image's folder is refused by default, naming the file and -o backing=follow" {
	mkdir base vm
	qemu-img create -q -f qcow2 base/base.qcow2 16M
	qemu-img create -q -f qcow2 -b ../base/base.qcow2 -F qcow2 vm/overlay.qcow2
	IMG=$PWD/vm/overlay.qcow2
	fails_with "imgfs: $IMG: backing file $PWD/base/base.qcow2 lies outside $PWD/vm (symbolic links resolved); mount with -o backing=follow to allow it" \
		"$IMG" "$MNT"
}

@test "a backing file inside the folder that is a symbolic link to outside it is refused too" {
	mkdir base vm
	qemu-img create -q -f qcow2 base/base.qcow2 16M
	ln -s ../base/base.qcow2 vm/base.qcow2
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 vm/overlay.qcow2
	IMG=$PWD/vm/overlay.qcow2
	fails_with "imgfs: $IMG: backing file $PWD/base/base.qcow2 lies outside $PWD/vm (symbolic links resolved); mount with -o backing=follow to allow it" \
		"$IMG" "$MNT"
}

@test "-o backing=deny refuses even a backing file next to the image" {
	qemu-img create -q -f qcow2 base.qcow2 16M
	qemu-img create -q -f qcow2 -b base.qcow2 -F qcow2 "$IMG"
	fails_with "imgfs: $IMG: backing file 'base.qcow2' refused by -o backing=deny; -o backing=local or backing=follow would allow it" \
		-o backing=deny "$IMG" "$MNT"
}

@test "-o backing=follow reads through a backing file outside the image's folder, and info names the chain" {
	mkdir base vm
	qemu-img create -q -f qcow2 base/base.qcow2 16M
	qemu-io -c "write -P 0xba 0 1M" base/base.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b ../base/base.qcow2 -F qcow2 vm/overlay.qcow2
	qemu-io -c "write -P 0x0e 512k 64k" vm/overlay.qcow2 >/dev/null
	IMG=$PWD/vm/overlay.qcow2
	give_to_user "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	mount_image -o backing=follow
	as_user cmp "$MNT/disk" expected.raw
	# The backing file's path as QEMU shows it ("actual path").
	run -0 info_line backing-1
	assert_eq "$output" "$PWD/vm/../base/base.qcow2 qcow2"
}

@test "a missing mountpoint: 'No such file or directory'" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	fails_with "imgfs: mountpoint $PWD/nowhere: No such file or directory" \
		"$IMG" "$PWD/nowhere"
	refute_mounted "$PWD/nowhere"
}

@test "a mountpoint that is a file: 'Not a directory'" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	as_user touch afile
	fails_with "imgfs: mountpoint $PWD/afile: Not a directory" "$IMG" "$PWD/afile"
	refute_mounted "$PWD/afile"
}

@test "a second mount on the same mountpoint is refused and the first keeps serving" {
	make_gpt_ext4_fat "$IMG"
	mount_image
	first=$(daemon_pid)
	run -1 --separate-stderr as_user "$IMGFS" "$IMG" "$MNT"
	assert_eq "$stderr" "imgfs: mountpoint $MNT is already a mount point"
	assert_eq "$(grep -c " $MNT " /proc/self/mountinfo)" 1
	assert_eq "$(daemon_pid)" "$first"
	run -0 as_user head -c 16 "$MNT/p3"
	assert_eq "$output" "imgfs p3 pattern"
}

@test "unknown options are refused, each named in the message" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	fails_with "imgfs: unknown option '--bogus' (see imgfs --help)" --bogus "$IMG" "$MNT"
	fails_with "imgfs: unknown option 'bogus' (see imgfs --help)" -o bogus "$IMG" "$MNT"
	fails_with "imgfs: unknown option 'bogus=1' (see imgfs --help)" "$IMG" "$MNT" -o ro,bogus=1
	fails_with "imgfs: unknown format 'vmdx' (use one of: raw, qcow2, vmdk, vpc (vhd), vhdx, vdi, ova)" --format vmdx "$IMG" "$MNT"
	fails_with "imgfs: unknown backing policy 'maybe' (use local, follow or deny)" -o backing=maybe "$IMG" "$MNT"
	fails_with "imgfs: no mountpoint given (usage: imgfs [OPTIONS] IMAGE MOUNTPOINT)" "$IMG"
}

@test "-o allow_other without user_allow_other in /etc/fuse.conf is refused with a clear line" {
	! grep -q '^user_allow_other' /etc/fuse.conf 2>/dev/null ||
		skip "/etc/fuse.conf allows allow_other"
	qemu-img create -q -f qcow2 "$IMG" 16M
	fails_with "imgfs: -o allow_other needs 'user_allow_other' in /etc/fuse.conf (or mount as root)" \
		-o allow_other "$IMG" "$MNT"
}

@test "a read from a cluster whose L2 entry is corrupt fails with EIO and the daemon keeps serving" {
	qemu-img create -q -f qcow2 -o cluster_size=4096 "$IMG" 8M
	qemu-io -c "write -P 0xaa 3M 4k" -c "write -P 0xbb 6M 4k" "$IMG" >/dev/null
	qemu-img convert -O raw "$IMG" expected.raw
	# The entry mapping 3 MiB now points one sector into its cluster:
	# unaligned, which qcow2 forbids.
	entry=$(l2_entry_offset "$IMG" $((3 << 20)))
	put_be64 "$IMG" "$entry" $(($(be64 "$IMG" "$entry") + 512))
	run -2 qemu-img check "$IMG"
	give_to_user "$IMG"
	mount_image -o ro
	run -1 as_user dd if="$MNT/disk" of=/dev/null bs=4k skip=768 count=1 status=none
	assert_eq "$output" "dd: error reading '$MNT/disk': Input/output error"
	run -0 as_user cmp "$MNT/disk" expected.raw --bytes=$((3 << 20))
	as_user dd if="$MNT/disk" bs=1M skip=4 status=none | cmp - <(tail -c 4M expected.raw)
	run -1 as_user dd if="$MNT/disk" of=/dev/null bs=4k skip=768 count=1 status=none
	assert_eq "$output" "dd: error reading '$MNT/disk': Input/output error"
	run -0 info_line format
	assert_eq "$output" qcow2
	unmount_image
}

@test "with -o ro, writes to disk and pN fail with EROFS and nothing can be created" {
	make_gpt_ext4_fat "$IMG"
	mount_image -o ro
	run -1 as_user bash -c 'echo x > "$1"' bash "$MNT/disk"
	assert_eq "$output" "bash: line 1: $MNT/disk: Read-only file system"
	run -1 as_user dd if=/dev/zero of="$MNT/p1" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/p1': Read-only file system"
	run -1 as_user touch "$MNT/new"
	assert_eq "$output" "touch: cannot touch '$MNT/new': Read-only file system"
	run -1 as_user mkdir "$MNT/snapshots/new"
	assert_eq "$output" "mkdir: cannot create directory '$MNT/snapshots/new': Read-only file system"
	run -0 qemu-img snapshot -U -l "$IMG"
	assert_eq "$output" ""
}

@test "on a read-write mount of a qcow2, writes to disk and p2 land in the image and qemu-img check is clean" {
	make_gpt_ext4_fat "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	mount_image
	run -0 as_user stat -c %a "$MNT/disk" "$MNT/p2"
	assert_eq "$output" $'644\n644'
	pattern_bytes "written via disk" 64K | as_user dd of="$MNT/disk" bs=64K seek=$((133120 * 512)) oflag=seek_bytes conv=notrunc status=none
	pattern_bytes "written via p2" 512 | as_user dd of="$MNT/p2" bs=512 seek=7 conv=notrunc,fsync status=none
	unmount_image
	run -0 qemu-img check "$IMG"
	pattern_bytes "written via disk" 64K | put_file expected.raw $((133120 * 512)) /dev/stdin
	pattern_bytes "written via p2" 512 | put_file expected.raw $((51200 * 512 + 7 * 512)) /dev/stdin
	run -0 qemu-img compare -f raw expected.raw "$IMG"
}

@test "an image file the user may only read mounts read-only: mode 0444, EROFS on write" {
	make_gpt_ext4_fat "$IMG"
	give_to_user "$IMG"
	chmod 0444 "$IMG"
	run -0 --separate-stderr as_user "$IMGFS" "$IMG" "$MNT"
	assert_eq "$stderr" "imgfs: $IMG is not writable; mounting read-only"
	run -0 as_user stat -c %a "$MNT/disk" "$MNT/p1"
	assert_eq "$output" $'444\n444'
	run -1 as_user dd if=/dev/zero of="$MNT/disk" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/disk': Read-only file system"
	run -0 info_line read-only
	assert_eq "$output" yes
}

@test "after kill -9 of the daemon, fusermount3 -u frees the mountpoint and no process is left" {
	make_gpt_ext4_fat "$IMG"
	mount_image
	pid=$(daemon_pid)
	kill -KILL "$pid"
	wait_until "$IMGFS_EXIT_DEADLINE" pids_gone "$pid"
	run -1 as_user cat "$MNT/info"
	assert_eq "$output" "cat: $MNT/info: Transport endpoint is not connected"
	run -1 --separate-stderr as_user "$IMGFS" "$IMG" "$MNT"
	assert_eq "$stderr" "imgfs: mountpoint $MNT: Transport endpoint is not connected (a mount whose daemon died; run fusermount3 -u $MNT)"
	run -0 as_user fusermount3 -u "$MNT"
	refute_mounted
	[[ -z $(test_pids) ]]
	mount_image
	run -0 as_user head -c 16 "$MNT/p3"
	assert_eq "$output" "imgfs p3 pattern"
}

# The OFD locks QEMU takes on an image (and imgfs too) show in /proc/locks.
image_locked() {
	grep -q "OFDLCK.*:$(stat -c %i "$1") " /proc/locks
}

@test "an image that a running QEMU has open for writing is refused as busy, even with -o ro" {
	make_gpt_ext4_fat "$IMG"
	give_to_user "$IMG"
	mkfifo qemu-io.in
	qemu-io "$IMG" <qemu-io.in >qemu-io.out 2>&1 3>&- &
	QEMU_IO_PID=$!
	exec 7>qemu-io.in
	wait_until "$IMGFS_HANG_DEADLINE" image_locked "$IMG"
	fails_with "imgfs: $IMG: in use by another process that has it open for write (a running QEMU or qemu-img?); it cannot be read consistently while it changes" \
		-o ro "$IMG" "$MNT"
	exec 7>&-
	wait "$QEMU_IO_PID"
	mount_image -o ro
}

@test "while imgfs has an image mounted, qemu-io cannot write it" {
	make_gpt_ext4_fat "$IMG"
	mount_image -o ro
	run -1 qemu-io -c "write 0 4k" "$IMG"
	assert_eq "$output" "qemu-io: can't open device $IMG: Failed to get \"write\" lock
Is another process using the image [$IMG]?"
	run -0 qemu-img info "$IMG"
}

@test "right after fusermount3 -u, the same image mounts again" {
	make_gpt_ext4_fat "$IMG"
	for round in 1 2 3 4 5 6 7 8 9 10; do
		mount_image
		as_user fusermount3 -u "$MNT"
	done
}
