#!/usr/bin/env bats
# lvm.bats: a user mounts a disk whose root filesystem lives in an LVM2
# logical volume (as Ubuntu Server and RHEL-family installs have it) and
# reads the volume and its files, with no root and no device-mapper.
#
# The images are made by root with the real lvm2 tools on loop devices,
# never activated (this kernel has no device-mapper): lvm2 writes the
# metadata, and the volume's bytes are written at the physical extents
# lvm2 itself reports. lvm2 runs with a private configuration
# (LVM_SYSTEM_DIR) that sees only loop devices, so the host's volumes
# are never touched.

bats_require_minimum_version 1.5.0

load helpers

setup_file() {
	export LVM_SUPPRESS_FD_WARNINGS=1
}

teardown() {
	local d
	for d in $(losetup -j "$PWD/lvm.raw" -O NAME -n 2>/dev/null); do
		losetup -d "$d"
	done
	imgfs_teardown
}

# lv_disk_offset LOOP_START VG/LV: the byte offset in the disk of the
# volume's first extent (one linear segment), from what lvm2 reports.
lv_disk_offset() {
	local part=$1 lv=$2 pe_start ext range first
	pe_start=$(pvs --noheadings --units b --nosuffix -o pe_start "$LOOP" | tr -d ' ')
	ext=$(vgs --noheadings --units b --nosuffix -o vg_extent_size "${lv%/*}" | tr -d ' ')
	range=$(lvs --noheadings -o seg_pe_ranges "$lv" | tr -d ' ')
	first=${range##*:}
	first=${first%-*}
	echo $((part + pe_start + first * ext))
}

# make_lvm_disk IMG: a 64 MiB GPT disk; p1 a small FAT, p2 an LVM PV
# holding vg0 with root (12 MiB, ext4 from ./src) and swap-vol (4 MiB of
# a pattern); converted to qcow2.
make_lvm_disk() {
	require_root
	require pvcreate vgcreate lvcreate losetup mkfs.ext4
	make_src_tree src
	truncate -s 64M lvm.raw
	sfdisk -q lvm.raw <<-EOF2
		label: gpt
		start=2048, size=8192
		start=10240, size=110000, type=E6D6D379-F507-44C2-A23C-238F2A3DF928
	EOF2
	P2=$((10240 * 512))
	LOOP=$(losetup -f --show -o "$P2" --sizelimit $((110000 * 512)) lvm.raw)
	lvm_conf "$LOOP"
	pvcreate -q -y "$LOOP" >/dev/null 2>&1
	vgcreate -q -s 1m vg0 "$LOOP" >/dev/null 2>&1
	lvcreate --driverloaded n -an -Zn -y -q -n root -L 12m vg0 >/dev/null 2>&1
	lvcreate --driverloaded n -an -Zn -y -q -n swap-vol -L 4m vg0 >/dev/null 2>&1
	ROOT_OFF=$(lv_disk_offset "$P2" vg0/root)
	SWAP_OFF=$(lv_disk_offset "$P2" vg0/swap-vol)
	losetup -d "$LOOP"
	truncate -s 12M root.img
	mkfs.ext4 -q -F -d src -E root_owner=0:0 root.img
	pattern_bytes "swap volume" 4M >swap.img
	put_file lvm.raw "$ROOT_OFF" root.img
	put_file lvm.raw "$SWAP_OFF" swap.img
	qemu-img convert -f raw -O qcow2 lvm.raw "$IMG"
}

@test "a logical volume in p2 shows as lvm/vg0/root with the bytes lvm2 placed, and its files under files/lvm/vg0/root" {
	make_lvm_disk
	mount_image
	run -0 as_user ls "$MNT/lvm" "$MNT/lvm/vg0"
	assert_eq "$output" "$(printf '%s\n' "$MNT/lvm:" vg0 "" "$MNT/lvm/vg0:" root swap-vol)"
	assert_eq "$(as_user stat -c %s "$MNT/lvm/vg0/root")" $((12 << 20))
	as_user cmp "$MNT/lvm/vg0/root" root.img
	as_user cmp "$MNT/lvm/vg0/swap-vol" swap.img
	run -0 as_user cat "$MNT/files/lvm/vg0/root/hello.txt"
	assert_eq "$output" "hello from imgfs"
	as_user diff -r src "$MNT/files/lvm/vg0/root" -x lost+found
	run -0 as_user getfattr --absolute-names -n user.imgfs.vg --only-values "$MNT/lvm/vg0/root"
	assert_eq "$output" vg0
	unmount_image
}

@test "a write through lvm/vg0/swap-vol lands at the extents lvm2 reports and nowhere else" {
	make_lvm_disk
	mount_image
	pattern_bytes "written through the volume" 1M >new.bin
	as_user dd if=new.bin of="$MNT/lvm/vg0/swap-vol" bs=1M seek=1 conv=notrunc,fsync status=none
	as_user dd if="$MNT/disk" of=back.bin bs=1M skip=$(( SWAP_OFF + (1 << 20) )) count=1 iflag=skip_bytes status=none
	cmp back.bin new.bin
	unmount_image
	run -0 qemu-img check "$IMG"
	qemu-img convert -O raw "$IMG" after.raw
	put_file lvm.raw $((SWAP_OFF + (1 << 20))) new.bin
	cmp lvm.raw after.raw
}

@test "damaged LVM metadata hides the volumes and the mount still shows the partitions" {
	make_lvm_disk
	# The text metadata lies in the first MiB of the PV, after the label
	# sector and the metadata area header: wipe it.
	dd if=/dev/zero of=lvm.raw bs=1 seek=$((P2 + 4096)) count=$(( (1 << 20) - 4096 )) conv=notrunc status=none
	qemu-img convert -f raw -O qcow2 lvm.raw "$IMG"
	mount_image
	run -1 as_user test -e "$MNT/lvm/vg0/root"
	as_user test -f "$MNT/p2"
	unmount_image
}

@test "the logical volumes and their files show the same through a VMDK, VHD, VHDX and VDI of the disk" {
	make_lvm_disk
	for fmt in vmdk vpc vhdx vdi; do
		IMG=$PWD/lvm.$fmt
		opts=
		[[ $fmt == vpc ]] && opts=-oforce_size=on
		qemu-img convert -f raw -O "$fmt" $opts lvm.raw "$IMG"
		mount_image
		as_user cmp "$MNT/lvm/vg0/root" root.img
		as_user cmp "$MNT/lvm/vg0/swap-vol" swap.img
		run -0 as_user cat "$MNT/files/lvm/vg0/root/hello.txt"
		assert_eq "$output" "hello from imgfs"
		unmount_image
		run -0 "$IMGFS" cat "$IMG" lvm/vg0/root:/hello.txt
		assert_eq "$output" "hello from imgfs"
	done
}
