#!/usr/bin/env bats
# format-vmdk.bats: VMDK images and OVA archives mount read-only, as a
# user would: the disk and every partition hold what `qemu-img convert -O
# raw` gives, writes fail with EROFS, `info` names the format, and an
# extent file outside the image's folder is refused unless backing=follow.
bats_require_minimum_version 1.5.0
load helpers

# gpt_vmdk SUBFORMAT: a GPT disk (ext4, FAT, a pattern) as $IMG in that
# VMDK subformat, and its expected bytes in expected.raw.
gpt_vmdk() {
	[[ -f gpt.raw ]] || make_gpt_ext4_fat gpt.raw raw
	IMG=$PWD/disk.vmdk
	qemu-img convert -f raw -O vmdk -o subformat="$1" gpt.raw "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	give_to_user "$PWD"/disk*.vmdk
}

@test "a monolithicSparse VMDK shows disk and partitions byte-equal to qemu-img convert" {
	gpt_vmdk monolithicSparse
	mount_image
	assert_same_bytes "$MNT" expected.raw
	assert_eq "$(info_line format)" "vmdk"
}

@test "a streamOptimized VMDK and a twoGbMaxExtentFlat set read the same bytes" {
	gpt_vmdk streamOptimized
	mount_image
	assert_same_bytes "$MNT" expected.raw
	unmount_image
	rm -f disk*.vmdk
	gpt_vmdk twoGbMaxExtentFlat
	mount_image
	assert_same_bytes "$MNT" expected.raw
}

@test "writing to a mounted VMDK fails with EROFS and leaves the image as it was" {
	gpt_vmdk monolithicSparse
	cp "$IMG" before.vmdk
	mount_image
	run ! as_user dd if=/dev/zero of="$MNT/p1" bs=4k count=1 conv=notrunc status=none
	[[ $output == *"Read-only file system"* ]]
	run ! as_user dd if=/dev/zero of="$MNT/disk" bs=4k count=1 conv=notrunc status=none
	[[ $output == *"Read-only file system"* ]]
	unmount_image
	cmp "$IMG" before.vmdk
}

@test "an OVA mounts its first disk, and -o disk=2 the second" {
	local raw2=second.raw
	gpt_vmdk streamOptimized
	mv "$IMG" one.vmdk
	pattern_bytes "imgfs ova disk two" 3M >"$raw2"
	qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$raw2" two.vmdk
	cat >app.ovf <<-'EOF'
		<?xml version="1.0"?>
		<Envelope xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1">
		  <References>
		    <File ovf:href="one.vmdk" ovf:id="file1"/>
		    <File ovf:href="two.vmdk" ovf:id="file2"/>
		  </References>
		</Envelope>
	EOF
	tar -cf app.ova app.ovf one.vmdk two.vmdk
	IMG=$PWD/app.ova
	mount_image
	assert_same_bytes "$MNT" expected.raw
	assert_eq "$(info_line format)" "ova"
	unmount_image
	mount_image -o disk=2
	as_user cmp "$MNT/disk" "$raw2"
}

@test "an extent file outside the image's folder is refused, naming the option" {
	mkdir -p outside images
	truncate -s 1M outside/data.raw
	cat >images/disk.vmdk <<-'EOF'
		# Disk DescriptorFile
		version=1
		CID=fffffffe
		parentCID=ffffffff
		createType="monolithicFlat"
		RW 2048 FLAT "../outside/data.raw" 0
	EOF
	give_to_user images/disk.vmdk outside/data.raw
	IMG=$PWD/images/disk.vmdk
	run -1 --separate-stderr as_user "$IMGFS" "$IMG" "$MNT"
	assert_eq "$stderr" "imgfs: $IMG: data file $PWD/outside/data.raw lies outside $PWD/images (symbolic links resolved); mount with -o backing=follow to allow it"
	refute_mounted
	mount_image -o backing=follow
	assert_eq "$(as_user stat -c %s "$MNT/disk")" $((1024 * 1024))
}
