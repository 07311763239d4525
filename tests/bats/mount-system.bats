#!/usr/bin/env bats
# mount-system.bats: root mounts through mount(8) and mount.fuse3, with
# `mount -t fuse.imgfs` and an fstab line, and shares a mount with
# allow_other. The fstab is a file of the test's own (mount -T), never
# /etc/fstab. mount(8) drops PATH before it runs mount.fuse3, so those
# tests run their mount commands with `in_ns`, in a mount namespace where
# imgfs is "installed" in /usr/local/sbin (see start_mount_ns).

bats_require_minimum_version 1.5.0

load helpers

setup() {
	imgfs_setup
	require_root
	require mount umount mount.fuse3 unshare nsenter findmnt
}

@test "as root, mount -t fuse.imgfs IMAGE MOUNTPOINT -o ro mounts read-only and umount unmounts" {
	make_gpt_ext4_fat "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	start_mount_ns
	run -0 in_ns mount -t fuse.imgfs "$IMG" "$MNT" -o ro
	assert_eq "$output" ""
	run -0 in_ns findmnt -n -o FSTYPE,SOURCE "$MNT"
	assert_eq "$output" "fuse.imgfs $IMG"
	run -0 in_ns stat -c '%U %a %n' "$MNT/disk" "$MNT/p1"
	assert_eq "$output" "root 444 $MNT/disk
root 444 $MNT/p1"
	in_ns cmp "$MNT/disk" expected.raw
	run -0 in_ns ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\np3\nsnapshots'
	pid=$(daemon_pid)
	run -0 in_ns umount "$MNT"
	wait_until "$IMGFS_EXIT_DEADLINE" pids_gone "$pid"
	refute_mounted
}

@test "as root, an fstab line with generic options mounts with mount MOUNTPOINT" {
	make_gpt_ext4_fat "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	echo "$IMG $MNT fuse.imgfs ro,noauto,nofail,_netdev,nodev,nosuid,noatime 0 0" >fstab
	start_mount_ns
	run -0 in_ns mount -T "$PWD/fstab" "$MNT"
	assert_eq "$output" ""
	is_mounted "$MNT"
	run -0 in_ns findmnt -n -o FSTYPE,VFS-OPTIONS "$MNT"
	assert_eq "$output" "fuse.imgfs ro,nosuid,nodev,noatime"
	in_ns cmp "$MNT/p2" <(tail -c +$((51200 * 512 + 1)) expected.raw | head -c 40M)
	run -0 in_ns umount "$MNT"
	refute_mounted
}

@test "as root, fstab options reach imgfs: backing=follow lets an overlay read its base" {
	mkdir base vm
	qemu-img create -q -f qcow2 base/base.qcow2 16M
	qemu-io -c "write -P 0xba 0 1M" base/base.qcow2 >/dev/null
	qemu-img create -q -f qcow2 -b ../base/base.qcow2 -F qcow2 vm/overlay.qcow2
	qemu-img convert -O raw vm/overlay.qcow2 expected.raw
	echo "$PWD/vm/overlay.qcow2 $MNT fuse.imgfs ro,backing=follow 0 0" >fstab
	echo "$PWD/vm/overlay.qcow2 $MNT fuse.imgfs ro 0 0" >fstab-local
	start_mount_ns
	run -0 in_ns mount -T "$PWD/fstab" "$MNT"
	in_ns cmp "$MNT/disk" expected.raw
	in_ns umount "$MNT"
	run -1 in_ns mount -T "$PWD/fstab-local" "$MNT"
	assert_eq "$output" "imgfs: $PWD/vm/overlay.qcow2: backing file $PWD/base/base.qcow2 lies outside $PWD/vm (symbolic links resolved); mount with -o backing=follow to allow it"
	refute_mounted
}

@test "a mount made without allow_other is the mounting user's alone; with -o allow_other another user reads it" {
	make_gpt_ext4_fat "$IMG"
	"$IMGFS" -o ro "$IMG" "$MNT"
	run -2 as_user ls "$MNT"
	assert_eq "$output" "ls: cannot access '$MNT': Permission denied"
	umount "$MNT"
	"$IMGFS" -o ro,allow_other "$IMG" "$MNT"
	run -0 as_user head -c 16 "$MNT/p3"
	assert_eq "$output" "imgfs p3 pattern"
}

@test "as root, umount unmounts a mount a user made, and its daemon exits" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	mount_image
	pid=$(daemon_pid)
	umount "$MNT"
	wait_until "$IMGFS_EXIT_DEADLINE" pids_gone "$pid"
	refute_mounted
}
