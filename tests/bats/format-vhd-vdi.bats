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
	run -0 info_line writes
	assert_eq "$output" "not supported (convert to qcow2 to write)"
	run -1 as_user dd if=/dev/zero of="$MNT/p1" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/p1': Read-only file system"
	run -1 as_user dd if=/dev/zero of="$MNT/disk" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/disk': Read-only file system"
	unmount_image
	qemu_raw "$IMG" after.raw -f "$fmt"
	cmp expected.raw after.raw
}

# make_differencing CHILD PARENT CODE NAME: turns the dynamic VHD CHILD
# (same size as the VHD PARENT) into a differencing disk over PARENT, as
# Hyper-V writes one: disk type 4, the parent's UUID, one parent locator
# CODE (W2ru or W2ku) holding NAME in UTF-16LE, stored after the blocks
# and followed by the footer again, and sector bitmaps that mark only the
# sectors written (qemu-io wrote non-zero ones; qemu marks whole blocks).
# qemu-img cannot make these.
make_differencing() {
	python3 - "$@" <<-'EOF'
		import struct, sys
		child, parent, code, name = sys.argv[1:5]
		def fix(b, ck):
		    b[ck:ck + 4] = bytes(4)
		    b[ck:ck + 4] = struct.pack(">I", ~sum(b) & 0xFFFFFFFF)
		with open(parent, "rb") as f:
		    puuid = f.read(512)[68:84]
		with open(child, "r+b") as f:
		    data = bytearray(f.read())
		    foot = bytearray(data[:512])
		    dyn = bytearray(data[512:1536])
		    struct.pack_into(">I", foot, 60, 4)
		    fix(foot, 64)
		    loc = name.encode("utf-16-le")
		    end = len(data) - 512
		    space = (len(loc) + 511) // 512 * 512
		    dyn[40:56] = puuid
		    struct.pack_into(">4sIIIQ", dyn, 576, code.encode(), space,
		                     len(loc), 0, end)
		    fix(dyn, 36)
		    bat_off, = struct.unpack_from(">Q", dyn, 16)
		    nb, block = struct.unpack_from(">II", dyn, 28)
		    bm_bytes = (block // 512 // 8 + 511) // 512 * 512
		    for i in range(nb):
		        e, = struct.unpack_from(">I", data, bat_off + 4 * i)
		        if e == 0xFFFFFFFF:
		            continue
		        bm = bytearray(bm_bytes)
		        at = e * 512 + bm_bytes
		        for sec in range(block // 512):
		            if any(data[at + sec * 512:at + sec * 512 + 512]):
		                bm[sec // 8] |= 0x80 >> (sec % 8)
		        data[e * 512:e * 512 + bm_bytes] = bm
		    data[:512] = foot
		    data[512:1536] = dyn
		    data[end:] = loc + bytes(space - len(loc)) + foot
		    f.seek(0)
		    f.write(data)
	EOF
}

# A GPT disk as a dynamic VHD parent.vhd, and child.vhd over it holding
# a pattern over p3; expected.raw is what child.vhd must read.
make_vhd_chain() {
	make_gpt_ext4_fat build/disk.raw raw
	qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on build/disk.raw parent.vhd
	qemu-img create -q -f vpc -o subformat=dynamic,force_size=on child.vhd "$(stat -c %s build/disk.raw)"
	pattern_bytes "child of parent" 64K >build/child.bin
	qemu-io -f vpc -c "write -s build/child.bin $((133120 * 512 + 4096)) 64k" child.vhd >/dev/null
	qemu_raw parent.vhd expected.raw -f vpc
	put_file expected.raw $((133120 * 512 + 4096)) build/child.bin
}

@test "a differencing VHD (a W2ru locator, as Hyper-V writes it) mounts over its parent: disk and pN are the parent with the child's sectors" {
	make_vhd_chain
	make_differencing child.vhd parent.vhd W2ru '.\parent.vhd'
	IMG=$PWD/child.vhd
	give_to_user parent.vhd
	mount_image
	assert_same_bytes "$MNT" expected.raw
	run -0 info_line backing-1
	assert_eq "$output" "$PWD/./parent.vhd vpc"
	unmount_image
}

@test "a differencing VHD whose parent lies outside its folder is refused, naming -o backing=follow, which mounts it" {
	make_vhd_chain
	mkdir vm
	mv child.vhd vm/child.vhd
	make_differencing vm/child.vhd parent.vhd W2ku "$PWD/parent.vhd"
	IMG=$PWD/vm/child.vhd
	give_to_user "$IMG" parent.vhd
	run -1 --separate-stderr as_user "$IMGFS" "$IMG" "$MNT"
	assert_eq "$stderr" "imgfs: $IMG: backing file $PWD/parent.vhd lies outside $PWD/vm (symbolic links resolved); mount with -o backing=follow to allow it"
	refute_mounted
	mount_image -o backing=follow
	as_user cmp "$MNT/disk" expected.raw
	unmount_image
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

@test "files/ and imgfs ls, cat and tar read the ext4 and FAT partitions of a GPT disk as VMDK, VHD, VHDX and VDI" {
	make_gpt_ext4_fat build/disk.raw raw
	for fmt in vmdk vpc vhdx vdi; do
		IMG=$PWD/disk.$fmt
		opts=
		[[ $fmt == vpc ]] && opts=-oforce_size=on
		qemu-img convert -f raw -O "$fmt" $opts build/disk.raw "$IMG"
		mount_image
		as_user cmp "$MNT/files/p1/hello.txt" src/hello.txt
		as_user cmp "$MNT/files/p1/data/random.bin" src/data/random.bin
		as_user cmp "$MNT/files/p2/docs/readme.txt" src/docs/readme.txt
		as_user cmp "$MNT/files/p2/docs/random.bin" src/data/random.bin
		unmount_image
		run -0 "$IMGFS" ls "$IMG" p2:/docs
		assert_eq "$output" $'random.bin\nreadme.txt'
		"$IMGFS" cat "$IMG" p1:/data/random.bin >"cat-$fmt.bin"
		cmp "cat-$fmt.bin" src/data/random.bin
		mkdir "tar-$fmt"
		"$IMGFS" tar "$IMG" p2:/ | tar -C "tar-$fmt" -xf -
		cmp "tar-$fmt/docs/readme.txt" src/docs/readme.txt
		cmp "tar-$fmt/hello.txt" src/hello.txt
	done
}
