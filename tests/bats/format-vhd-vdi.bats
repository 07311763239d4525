#!/usr/bin/env bats
# format-vhd-vdi.bats: VHD (vpc) and VDI images mount read-only and read
# like qemu-img reads them; a fixed VHD, whose only signature is its
# footer, is probed as VHD; DMG and cloop images are refused by name.
#
# Run: IMGFS_BUILD_DIR=/abs/build bats tests/bats/format-vhd-vdi.bats

bats_require_minimum_version 1.5.0

load helpers
load images

# The message imgfs prints for a format it does not read.
foreign_message() {
	echo "imgfs: $1: $2 images are not supported; imgfs reads raw, qcow2, vmdk, vpc (vhd), vhdx, vdi, ova (convert it with 'qemu-img convert -O qcow2', or give --format=raw to see the file's bytes)"
}

# mounted_reads_like_qemu FORMAT [CREATE OPTIONS]: a GPT disk (ext4, FAT,
# a pattern) converted to FORMAT mounts read-only; disk and every pN equal
# qemu-img convert -O raw of the image, writes fail with EROFS, and info
# names the format and says read-only.
mounted_reads_like_qemu() {
	local fmt=$1 opts=${2:-}
	make_gpt_ext4_fat build/disk.raw raw
	IMG=$PWD/disk.$fmt
	qemu-img convert -f raw -O "$fmt" ${opts:+-o "$opts"} build/disk.raw "$IMG"
	qemu_raw "$IMG" expected.raw -f "$fmt"
	mount_image
	assert_same_bytes "$MNT" expected.raw
	run -0 info_line format
	assert_eq "$output" "$fmt"
	run -0 info_line read-only
	assert_eq "$output" yes
	run -1 as_user dd if=/dev/zero of="$MNT/p1" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/p1': Read-only file system"
	run -1 as_user dd if=/dev/zero of="$MNT/disk" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/disk': Read-only file system"
	unmount_image
	qemu_raw "$IMG" after.raw -f "$fmt"
	cmp expected.raw after.raw
}

@test "a dynamic VHD of a GPT disk mounts read-only: disk and every pN equal qemu-img convert -O raw" {
	mounted_reads_like_qemu vpc subformat=dynamic
}

@test "a fixed VHD (force_size) mounts read-only and reads like qemu-img" {
	mounted_reads_like_qemu vpc subformat=fixed,force_size=on
}

@test "a dynamic VDI of a GPT disk mounts read-only: disk and every pN equal qemu-img convert -O raw" {
	mounted_reads_like_qemu vdi
}

@test "a fixed (static) VDI mounts read-only and reads like qemu-img" {
	mounted_reads_like_qemu vdi static=on
}

@test "a fixed VHD probed without --format is read as VHD: its footer is not the disk, and a write to the last sector cannot reach it" {
	make_gpt_ext4_fat build/disk.raw raw
	IMG=$PWD/fixed.vhd
	qemu-img convert -f raw -O vpc -o subformat=fixed build/disk.raw "$IMG"
	qemu_raw "$IMG" expected.raw -f vpc
	sum=$(sha256sum <"$IMG")
	mount_image
	run -0 info_line format
	assert_eq "$output" vpc
	run -0 as_user stat -c %s "$MNT/disk"
	assert_eq "$output" "$(stat -c %s expected.raw)"
	assert_eq "$output" $(($(stat -c %s "$IMG") - 512))
	as_user cmp "$MNT/disk" expected.raw
	run -1 as_user dd if=/dev/zero of="$MNT/disk" bs=512 count=1 \
		seek=$(($(stat -c %s expected.raw) / 512 - 1)) conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/disk': Read-only file system"
	unmount_image
	assert_eq "$(sha256sum <"$IMG")" "$sum"
	run -0 qemu-img info -f vpc "$IMG"
}

@test "--format vhd and --format vdi force the drivers" {
	make_gpt_ext4_fat build/disk.raw raw
	IMG=$PWD/disk.img
	qemu-img convert -f raw -O vpc build/disk.raw "$IMG"
	qemu_raw "$IMG" expected.raw -f vpc
	mount_image --format=vhd
	as_user cmp "$MNT/disk" expected.raw
	unmount_image
	qemu-img convert -f raw -O vdi build/disk.raw "$IMG"
	qemu_raw "$IMG" expected.raw -f vdi
	mount_image --format vdi
	as_user cmp "$MNT/disk" expected.raw
	run -0 info_line format
	assert_eq "$output" vdi
	unmount_image
}

@test "a DMG image (koly trailer) and a cloop image (shell preamble) are refused by name, and --format=raw shows their bytes" {
	# A UDIF trailer: "koly", version 4, header size 512, at the end.
	truncate -s 1M disk.dmg
	printf 'koly\0\0\0\004\0\0\002\0' |
		dd of=disk.dmg bs=1 seek=$((1024 * 1024 - 512)) conv=notrunc status=none
	give_to_user disk.dmg
	run -1 --separate-stderr as_user "$IMGFS" "$PWD/disk.dmg" "$MNT"
	assert_eq "$stderr" "$(foreign_message "$PWD/disk.dmg" DMG)"
	refute_mounted
	# cloop's preamble, as create_compressed_fs writes it.
	{
		printf '#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0 && mount -r -t iso9660 /dev/cloop $1\n'
		head -c 64K /dev/zero
	} >disk.cloop
	give_to_user disk.cloop
	run -1 --separate-stderr as_user "$IMGFS" "$PWD/disk.cloop" "$MNT"
	assert_eq "$stderr" "$(foreign_message "$PWD/disk.cloop" cloop)"
	refute_mounted
	IMG=$PWD/disk.dmg
	mount_image -o ro --format=raw
	as_user cmp "$MNT/disk" disk.dmg
	unmount_image
}

@test "a probed raw disk refuses a write that would make its last sector a VHD footer" {
	IMG=$PWD/plain.raw
	truncate -s 4M "$IMG"
	mount_image
	run -1 as_user bash -c 'printf conectix | dd of="$1" bs=512 seek=8191 conv=notrunc status=none' bash "$MNT/disk"
	[[ $output == *"Operation not permitted"* ]]
	unmount_image
	cmp "$IMG" <(head -c 4M /dev/zero)
}
