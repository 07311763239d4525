#!/usr/bin/env bats
# format-vhdx.bats: VHDX images (Hyper-V) mount read-only and read like
# qemu-img reads them: the whole disk and every partition of a GPT disk
# (ext4, FAT) converted to VHDX, dynamic and fixed, with 1 MiB and 32 MiB
# blocks; writes fail with EROFS; info names the format. Crafted images
# (logs, differencing children) are covered by tests/unit/test-vhdx.c.
#
# Run: IMGFS_BUILD_DIR=/abs/build bats tests/bats/format-vhdx.bats

bats_require_minimum_version 1.5.0

load helpers
load images

# mounted_vhdx_reads_like_qemu [CREATE OPTIONS] [MOUNT OPTIONS...]: a GPT
# disk converted to VHDX with OPTIONS mounts read-only; disk and every pN
# equal qemu-img convert -O raw of the image, writes fail with EROFS, info
# names the format, and the image file is left as it was.
mounted_vhdx_reads_like_qemu() {
	local opts=${1:-} sum
	shift || true
	make_gpt_ext4_fat build/disk.raw raw
	IMG=$PWD/disk.vhdx
	qemu-img convert -f raw -O vhdx ${opts:+-o "$opts"} build/disk.raw "$IMG"
	qemu_raw "$IMG" expected.raw -f vhdx
	sum=$(sha256sum <"$IMG")
	mount_image "$@"
	assert_same_bytes "$MNT" expected.raw
	run -0 info_line format
	assert_eq "$output" vhdx
	run -0 info_line read-only
	assert_eq "$output" yes
	run -0 info_line writes
	assert_eq "$output" "not supported (convert to qcow2 to write)"
	run -1 as_user dd if=/dev/zero of="$MNT/p1" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/p1': Read-only file system"
	run -1 as_user dd if=/dev/zero of="$MNT/disk" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/disk': Read-only file system"
	unmount_image
	assert_eq "$(sha256sum <"$IMG")" "$sum"
}

@test "a dynamic VHDX of a GPT disk mounts read-only: disk and every pN equal qemu-img convert -O raw" {
	mounted_vhdx_reads_like_qemu subformat=dynamic
	mount_image
	run -0 info_line subformat
	assert_eq "$output" dynamic
	unmount_image
}

@test "a dynamic VHDX with 1 MiB blocks and a 2 MiB log reads like qemu-img" {
	mounted_vhdx_reads_like_qemu subformat=dynamic,block_size=1M,log_size=2M
}

@test "a fixed VHDX with 32 MiB blocks reads like qemu-img" {
	mounted_vhdx_reads_like_qemu subformat=fixed,block_size=32M
}

@test "--format vhdx forces the driver and info tells the block size" {
	mounted_vhdx_reads_like_qemu block_size=8M --format=vhdx
	mount_image --format vhdx
	run -0 info_line block-size
	assert_eq "$output" 8388608
	run -0 info_line cluster-size
	assert_eq "$output" 8388608
	unmount_image
}

@test "the holes of a dynamic VHDX are holes in the mounted disk (SEEK_DATA, du)" {
	IMG=$PWD/sparse.vhdx
	qemu-img create -q -f vhdx -o block_size=1M "$IMG" 64M
	qemu-io -f vhdx -c 'write -P 0x5a 10M 1M' -c 'write -P 0xa5 40M 2M' "$IMG" >/dev/null
	qemu_raw "$IMG" expected.raw -f vhdx
	mount_image
	as_user cmp "$MNT/disk" expected.raw
	# Only the three written blocks are stored: du counts 3 MiB.
	run -0 as_user du -k "$MNT/disk"
	assert_eq "${output%%[[:space:]]*}" 3072
	run -0 as_user python3 -c 'import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
print(os.lseek(fd, 0, os.SEEK_DATA), os.lseek(fd, 11 << 20, os.SEEK_DATA))' "$MNT/disk"
	assert_eq "$output" "$((10 << 20)) $((40 << 20))"
	unmount_image
}
