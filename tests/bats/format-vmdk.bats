#!/usr/bin/env bats
# format-vmdk.bats: VMDK images and OVA archives mount read-only, as a
# user would: the disk and every partition hold what `qemu-img convert -O
# raw` gives, writes fail with EROFS, `info` names the format, an OVA's
# disks are picked with --disk N (the mount and the commands alike), and
# an extent file outside the image's folder is refused unless
# backing=follow.
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
	assert_eq "$(info_line writes)" "not supported (convert to qcow2 to write)"
	run ! as_user dd if=/dev/zero of="$MNT/p1" bs=4k count=1 conv=notrunc status=none
	[[ $output == *"Read-only file system"* ]]
	run ! as_user dd if=/dev/zero of="$MNT/disk" bs=4k count=1 conv=notrunc status=none
	[[ $output == *"Read-only file system"* ]]
	unmount_image
	cmp "$IMG" before.vmdk
}

# two_disk_ova: $IMG=app.ova holding one.vmdk (the GPT disk of gpt_vmdk,
# expected.raw) and two.vmdk (a FAT filesystem on the whole disk with
# two.txt, second.raw), both streamOptimized, in that order.
two_disk_ova() {
	require mkfs.vfat mcopy
	gpt_vmdk streamOptimized
	mv "$IMG" one.vmdk
	truncate -s 8M second.raw
	mkfs.vfat -n TWO second.raw >/dev/null
	echo "the second disk" >two.txt
	mcopy -i second.raw two.txt ::two.txt
	qemu-img convert -f raw -O vmdk -o subformat=streamOptimized second.raw two.vmdk
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
	give_to_user "$IMG"
}

# The disk lines of MNT/info.
info_disks() {
	as_user cat "$MNT/info" | grep -E '^disks? '
}

@test "an OVA mounts its first disk, --disk 2 the second, and info lists both" {
	two_disk_ova
	mount_image
	assert_same_bytes "$MNT" expected.raw
	assert_eq "$(info_line format)" "ova"
	assert_eq "$(info_disks)" "disks 2
disk 1 one.vmdk (shown)
disk 2 two.vmdk"
	unmount_image
	for opt in "--disk 2" "--disk=2" "-o disk=2"; do
		# shellcheck disable=SC2086
		mount_image $opt
		as_user cmp "$MNT/disk" second.raw
		assert_eq "$(info_disks)" "disks 2
disk 1 one.vmdk
disk 2 two.vmdk (shown)"
		as_user cmp "$MNT/files/disk/two.txt" two.txt
		unmount_image
	done
	mount_image --disk 1
	assert_same_bytes "$MNT" expected.raw
}

@test "imgfs info, ls, cat, cp and tar read the OVA disk --disk N picks" {
	two_disk_ova
	run -0 "$IMGFS" info --disk 2 "$IMG"
	assert_eq "$(grep -E '^disks? ' <<<"$output")" "disks 2
disk 1 one.vmdk
disk 2 two.vmdk (shown)"
	run -0 "$IMGFS" ls "$IMG"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\np3\nsnapshots'
	run -0 "$IMGFS" ls --disk 2 "$IMG" disk:/
	assert_eq "$output" "two.txt"
	run -0 "$IMGFS" cat "$IMG" disk:/two.txt --disk=2
	assert_eq "$output" "the second disk"
	"$IMGFS" cat --disk 2 "$IMG" disk >disk2.out
	cmp disk2.out second.raw
	"$IMGFS" cp -o disk=2 "$IMG" disk:/two.txt copied.txt
	cmp copied.txt two.txt
	"$IMGFS" tar --disk 2 "$IMG" disk:/ >two.tar
	run -0 tar -tf two.tar
	assert_eq "$output" $'./\n./two.txt'
	"$IMGFS" cat --disk 1 "$IMG" disk >disk1.out
	cmp disk1.out expected.raw
}

@test "--disk past the OVA's disks, on an image that is not an OVA, or not a number fails with one line" {
	two_disk_ova
	run -1 --separate-stderr as_user "$IMGFS" --disk 3 "$IMG" "$MNT"
	assert_eq "$stderr" "imgfs: $IMG: there is no disk 3: the OVA holds 2 disks"
	refute_mounted
	run -1 --separate-stderr "$IMGFS" ls --disk 3 "$IMG"
	assert_eq "$stderr" "imgfs: $IMG: there is no disk 3: the OVA holds 2 disks"
	local vmdk=$PWD/one.vmdk
	give_to_user "$vmdk"
	run -1 --separate-stderr as_user "$IMGFS" --disk 1 "$vmdk" "$MNT"
	assert_eq "$stderr" "imgfs: $vmdk: --disk picks a disk of an OVA archive; this is a vmdk image, which holds one disk"
	refute_mounted
	run -1 --separate-stderr "$IMGFS" info -o disk=2 "$vmdk"
	assert_eq "$stderr" "imgfs: $vmdk: --disk picks a disk of an OVA archive; this is a vmdk image, which holds one disk"
	run -1 --separate-stderr as_user "$IMGFS" --disk 0 "$IMG" "$MNT"
	assert_eq "$stderr" "imgfs: bad disk '0' (the number of a disk in an OVA, from 1)"
	run -2 --separate-stderr "$IMGFS" cat --disk=-1 "$IMG" disk
	assert_eq "$stderr" "imgfs: bad disk '-1' (the number of a disk in an OVA, from 1)"
	run -1 --separate-stderr as_user "$IMGFS" "$IMG" "$MNT" --disk
	assert_eq "$stderr" "imgfs: option '--disk' needs a value (see imgfs --help)"
	run -2 --separate-stderr "$IMGFS" info "$IMG" --disk
	assert_eq "$stderr" "imgfs info: option '--disk' needs a value"
	refute_mounted
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
