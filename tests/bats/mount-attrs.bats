#!/usr/bin/env bats
# mount-attrs.bats: what stat, du, cp --sparse, getfattr and MOUNTPOINT/info
# tell a user about the files.

bats_require_minimum_version 1.5.0

load helpers

# A 64 MiB qcow2 with data at 1 MiB (64 KiB) and 40 MiB (128 KiB) only.
make_two_extents() {
	qemu-img create -q -f qcow2 "$IMG" 64M
	qemu-io -c "write -P 0x61 1M 64k" -c "write -P 0x62 40M 128k" \
		"$IMG" >/dev/null
}

@test "files belong to the user who mounted, carry the image's mtime, and are 0644, or 0444 with -o ro" {
	make_gpt_ext4_fat "$IMG"
	qemu-img snapshot -c installed "$IMG"
	touch -d "2021-03-04 05:06:07" "$IMG"
	user=$(test_user_name)
	mtime=$(stat -c %Y "$IMG")
	mount_image
	run -0 as_user stat -c '%U %a %Y %n' "$MNT"/{disk,p1,p2,p3,info} "$MNT"/snapshots/installed/{disk,p1}
	assert_eq "$output" "$user 644 $mtime $MNT/disk
$user 644 $mtime $MNT/p1
$user 644 $mtime $MNT/p2
$user 644 $mtime $MNT/p3
$user 444 $mtime $MNT/info
$user 444 $mtime $MNT/snapshots/installed/disk
$user 444 $mtime $MNT/snapshots/installed/p1"
	remount_image -o ro
	run -0 as_user stat -c '%U %a %n' "$MNT/disk" "$MNT/p1"
	assert_eq "$output" "$user 444 $MNT/disk
$user 444 $MNT/p1"
}

@test "st_size is exact: disk is the virtual size, pN the partition's size" {
	make_gpt_ext4_fat "$IMG"
	mount_image
	run -0 as_user stat -c '%s %n' "$MNT/disk" "$MNT/p1" "$MNT/p2" "$MNT/p3"
	assert_eq "$output" "$GPT_DISK_BYTES $MNT/disk
25165824 $MNT/p1
41943040 $MNT/p2
4194304 $MNT/p3"
}

@test "du of disk and of each pN tells what the image really stores" {
	make_two_extents
	mount_image
	run -0 as_user du -B1 "$MNT/disk"
	assert_eq "$output" "$(allocated_bytes "$IMG")	$MNT/disk"
	assert_eq "$(allocated_bytes "$IMG")" 196608
	run -0 as_user du -B1 --apparent-size "$MNT/disk"
	assert_eq "$output" "67108864	$MNT/disk"
	unmount_image

	make_gpt_ext4_fat "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	mount_image
	while read -r n start size type; do
		run -0 as_user du -B1 "$MNT/p$n"
		assert_eq "$output" "$(allocated_bytes "$IMG" "$start" "$size")	$MNT/p$n"
	done < <(partitions_of expected.raw)
}

@test "cp --sparse=always of disk gives a sparse copy with the same bytes" {
	make_two_extents
	qemu-img convert -O raw "$IMG" expected.raw
	mount_image
	as_user cp --sparse=always "$MNT/disk" copy.raw
	cmp copy.raw expected.raw
	assert_eq "$(stat -c %s copy.raw)" 67108864
	(( $(du -B1 copy.raw | cut -f1) <= 1048576 ))
}

@test "SEEK_DATA and SEEK_HOLE on disk find exactly the extents qemu-img map calls data" {
	require /usr/bin/python3
	make_two_extents
	mount_image
	run -0 as_user /usr/bin/python3 -c '
import errno, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
off, end = 0, os.fstat(fd).st_size
while off < end:
    try:
        data = os.lseek(fd, off, os.SEEK_DATA)
    except OSError as e:
        if e.errno != errno.ENXIO:
            raise
        break
    off = os.lseek(fd, data, os.SEEK_HOLE)
    print(data, off)
' "$MNT/disk"
	assert_eq "$output" "$(qemu-img map -U --output=json "$IMG" |
		jq -r '.[] | select(.data) | "\(.start) \(.start + .length)"')"
	assert_eq "$output" $'1048576 1114112\n41943040 42074112'
}

@test "getfattr shows filesystem type, label, UUID and partition type, UUID and name of each GPT partition" {
	require getfattr
	make_gpt_ext4_fat "$IMG"
	mount_image
	getfattr=(as_user getfattr --absolute-names)
	run -0 "${getfattr[@]}" -d -m - "$MNT/p1" "$MNT/p2"
	assert_eq "$output" "# file: $MNT/p1
user.imgfs.fstype=\"ext4\"
user.imgfs.label=\"$EXT4_LABEL\"
user.imgfs.partname=\"root\"
user.imgfs.parttype=\"${GPT_LINUX_TYPE,,}\"
user.imgfs.partuuid=\"${GPT_P1_UUID,,}\"
user.imgfs.uuid=\"$EXT4_UUID\"

# file: $MNT/p2
user.imgfs.fstype=\"vfat\"
user.imgfs.label=\"$FAT_LABEL\"
user.imgfs.partname=\"data\"
user.imgfs.parttype=\"${GPT_BASIC_DATA_TYPE,,}\"
user.imgfs.partuuid=\"${GPT_P2_UUID,,}\"
user.imgfs.uuid=\"$FAT_UUID\""
	run -0 "${getfattr[@]}" --only-values -n user.imgfs.fstype "$MNT/p1"
	assert_eq "$output" ext4
}

@test "getfattr lists only the attributes a partition has" {
	require getfattr
	make_gpt_ext4_fat "$IMG"
	mount_image
	getfattr=(as_user getfattr --absolute-names)
	run -0 "${getfattr[@]}" -m - "$MNT/p3"
	assert_eq "$output" "# file: $MNT/p3
user.imgfs.parttype
user.imgfs.partuuid"
	run -1 "${getfattr[@]}" -n user.imgfs.label "$MNT/p3"
	assert_eq "$output" "$MNT/p3: user.imgfs.label: No such attribute"
	run -0 "${getfattr[@]}" -m - "$MNT/disk" "$MNT/info"
	assert_eq "$output" ""
}

@test "getfattr on MBR partitions shows type codes and blkid-style PARTUUIDs" {
	require getfattr
	make_mbr_logical "$IMG"
	mount_image
	getfattr=(as_user getfattr --absolute-names)
	run -0 "${getfattr[@]}" -d -m - "$MNT/p1" "$MNT/p2" "$MNT/p5" "$MNT/p6"
	assert_eq "$output" "# file: $MNT/p1
user.imgfs.fstype=\"ext4\"
user.imgfs.label=\"$MBR_P1_LABEL\"
user.imgfs.parttype=\"0x83\"
user.imgfs.partuuid=\"1234abcd-01\"
user.imgfs.uuid=\"$MBR_P1_UUID\"

# file: $MNT/p2
user.imgfs.parttype=\"0x5\"
user.imgfs.partuuid=\"1234abcd-02\"

# file: $MNT/p5
user.imgfs.parttype=\"0x83\"
user.imgfs.partuuid=\"1234abcd-05\"

# file: $MNT/p6
user.imgfs.parttype=\"0x82\"
user.imgfs.partuuid=\"1234abcd-06\""
}

@test "a disk that holds a filesystem without a partition table has the filesystem's attributes on disk" {
	require getfattr mkfs.ext4
	truncate -s 16M bare.raw
	mkfs.ext4 -q -F -L bare-disk -U "$EXT4_UUID" bare.raw
	qemu-img convert -f raw -O qcow2 bare.raw "$IMG"
	mount_image
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\nsnapshots'
	run -0 as_user getfattr --absolute-names -d -m - "$MNT/disk"
	assert_eq "$output" "# file: $MNT/disk
user.imgfs.fstype=\"ext4\"
user.imgfs.label=\"bare-disk\"
user.imgfs.uuid=\"$EXT4_UUID\""
	run -0 info_line disk-filesystem
	assert_eq "$output" "ext4 bare-disk $EXT4_UUID"
}

@test "info tells format, sizes, allocation, snapshots and partitions with their filesystems" {
	make_gpt_ext4_fat "$IMG"
	qemu-img snapshot -c installed "$IMG"
	mount_image
	run -0 info_line image
	assert_eq "$output" "$IMG"
	run -0 info_line format
	assert_eq "$output" qcow2
	run -0 info_line virtual-size
	assert_eq "$output" "$GPT_DISK_BYTES"
	run -0 info_line cluster-size
	assert_eq "$output" 65536
	run -0 info_line allocated
	assert_eq "$output" "$(allocated_bytes "$IMG")"
	run -0 info_line snapshots
	assert_eq "$output" 1
	run -0 as_user awk '$1 == "DIR", NF == 0' "$MNT/info"
	assert_eq "$output" "DIR ID NAME DATE VM-CLOCK-NS DISK-SIZE NOTE UNREADABLE
installed 1 installed $(snapshot_date_utc "$IMG" 1) 0 $GPT_DISK_BYTES - -"
	run -0 info_line partition-table
	assert_eq "$output" gpt
	run -0 info_line disk-id
	assert_eq "$output" "${GPT_DISK_UUID,,}"
	run -0 as_user awk '$1 == "FILE", 0' "$MNT/info"
	assert_eq "$output" "FILE START SIZE TYPE FSTYPE LABEL UUID PARTUUID NAME NOTE
p1 1048576 25165824 ${GPT_LINUX_TYPE,,} ext4 $EXT4_LABEL $EXT4_UUID ${GPT_P1_UUID,,} root -
p2 26214400 41943040 ${GPT_BASIC_DATA_TYPE,,} vfat $FAT_LABEL $FAT_UUID ${GPT_P2_UUID,,} data -
p3 68157440 4194304 ${GPT_LINUX_TYPE,,} - - - ${GPT_P3_UUID,,} - -"
}

@test "info of a raw image says raw and has no cluster size" {
	make_mbr_logical disk.raw raw
	IMG=$PWD/disk.raw
	mount_image
	run -0 info_line format
	assert_eq "$output" raw
	run -0 info_line cluster-size
	assert_eq "$output" ""
	run -0 info_line virtual-size
	assert_eq "$output" "$MBR_DISK_BYTES"
	run -0 info_line allocated
	assert_eq "$output" "$(allocated_bytes "$IMG")"
	run -0 info_line partition-table
	assert_eq "$output" dos
	run -0 info_line disk-id
	assert_eq "$output" 1234abcd
	run -0 as_user awk '$1 == "p2" { print $NF }' "$MNT/info"
	assert_eq "$output" extended
}
