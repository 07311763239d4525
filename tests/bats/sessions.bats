#!/usr/bin/env bats
# sessions.bats: whole sessions of an unprivileged user, start to finish.
#
# The other files check one promise each; here a user does a whole job the
# way it is done in CI or at a desk: pull every file out of a VM image with
# fuse2fs, tar and mtools and check it against what went in, pull the same
# from a snapshot after the disk moved on, browse the tree with the usual
# tools, read an MBR disk with logical partitions that qemu-img converted,
# and live through a daemon that dies under a reader. Every mount is the
# user's; teardown (helpers.bash) unmounts them innermost first.

bats_require_minimum_version 1.5.0

load helpers

# ---------------------------------------------------------------------------
# The CI image: GPT, p1 ext4 with awkward files, p2 FAT32 with a tree.

SESSION_EXT4_UUID=3c9e6a41-7d2b-4f8e-a1c5-9b0d2e4f6a18
SESSION_P1_BYTES=$((64 * 1024 * 1024))
SESSION_P2_BYTES=$((40 * 1024 * 1024))
SESSION_DISK_BYTES=$((106 * 1024 * 1024))

# make_ext4_tree DIR: files a real root filesystem has and naive copies
# get wrong: names with spaces, a newline, a tab, quotes, a backslash,
# UTF-8 and 255 bytes; a relative, an absolute and a dangling symlink; a
# file with three hard links; a 48 MiB sparse file with three islands of
# data; a 20 MiB file; user xattrs on a file and a folder; an empty file;
# a deep folder and a folder of 300 files (an indexed ext4 folder).
make_ext4_tree() {
	local d=$1 i
	mkdir -p "$d/etc" "$d/var/lib/big" "$d/deep/a/b/c/d/e/f/g/h" \
		"$d/many" "$d/odd names"
	printf 'NAME="imgfs test"\nVERSION_ID=1\n' >"$d/etc/os-release"
	det_random 20M >"$d/var/lib/big/twenty.bin"
	truncate -s 48M "$d/var/lib/sparse.img"
	printf 'island one' | dd of="$d/var/lib/sparse.img" bs=1 seek=4096 \
		conv=notrunc status=none
	det_random 300K | dd of="$d/var/lib/sparse.img" bs=1M seek=17 \
		conv=notrunc status=none
	printf 'the end' | dd of="$d/var/lib/sparse.img" bs=1 \
		seek=$((48 * 1024 * 1024 - 7)) conv=notrunc status=none
	echo "three names, one inode" >"$d/etc/hard-a"
	ln "$d/etc/hard-a" "$d/etc/hard-b"
	ln "$d/etc/hard-a" "$d/deep/hard-c"
	ln -s os-release "$d/etc/link-relative"
	ln -s /etc/os-release "$d/etc/link-absolute"
	ln -s ../nowhere/at/all "$d/etc/link-dangling"
	: >"$d/etc/empty"
	echo deep >"$d/deep/a/b/c/d/e/f/g/h/bottom.txt"
	for ((i = 0; i < 300; i++)); do
		echo "file $i" >"$d/many/entry-$i.conf"
	done
	echo space >"$d/odd names/with space.txt"
	echo newline >"$d/odd names/new"$'\n'"line"
	echo tab >"$d/odd names/tab"$'\t'"here"
	echo quotes >"$d/odd names/it's \"quoted\""
	echo backslash >"$d/odd names/back\\slash"
	echo utf8 >"$d/odd names/ünïcødé-名前-🙂.txt"
	echo dash >"$d/odd names/-starts-with-dash"
	echo dot >"$d/odd names/.hidden"
	echo glob >"$d/odd names/*?[glob]"
	echo long >"$d/odd names/$(printf 'L%.0s' {1..251}).txt"
	setfattr -n user.comment -v "kept by imgfs" "$d/etc/os-release"
	setfattr -n user.checksum -v 0x00ff10 "$d/var/lib/big/twenty.bin"
	setfattr -n user.folder -v "a folder's attribute" "$d/odd names"
	chmod 0755 "$d/deep/a/b/c/d/e/f/g/h/bottom.txt"
	chmod 0444 "$d/etc/hard-a"
	chmod 0750 "$d/many"
	# Fixed times: the copies must keep them.
	find "$d" -exec touch -h -d "2023-06-07 08:09:10" {} +
	touch -d "2001-02-03 04:05:06" "$d/var/lib/big/twenty.bin"
}

# make_fat_tree DIR: what mcopy gets back from the FAT32 partition.
make_fat_tree() {
	local d=$1
	mkdir -p "$d/EFI/BOOT" "$d/Long Folder Name/sub folder"
	det_random 3M >"$d/EFI/BOOT/BOOTX64.EFI"
	printf 'timeout 3\n' >"$d/EFI/BOOT/grub.cfg"
	echo "a long file name with spaces" >"$d/Long Folder Name/A Long File Name.txt"
	det_random 1100K | tail -c 777777 >"$d/Long Folder Name/sub folder/odd-size.bin"
	: >"$d/empty.txt"
}

# make_session_disk IMG [FORMAT]: a 106 MiB GPT disk, p1 (1 MiB + 64 MiB)
# ext4 from ./tree, p2 (65 MiB + 40 MiB) FAT32 from ./fat, as FORMAT
# (default qcow2, 64 KiB clusters). Keeps ./build/session.raw.
make_session_disk() {
	local img=$1 fmt=${2:-qcow2}

	require mkfs.ext4 mkfs.vfat mcopy setfattr
	make_ext4_tree tree
	make_fat_tree fat
	mkdir -p build
	truncate -s "$SESSION_P1_BYTES" build/p1.img
	mkfs.ext4 -q -F -d tree -L session-root -U "$SESSION_EXT4_UUID" \
		-E root_owner=0:0 build/p1.img
	truncate -s "$SESSION_P2_BYTES" build/p2.img
	mkfs.vfat -F 32 -n SESSIONFAT -i 5E55A0F1 build/p2.img >/dev/null
	mcopy -s -m -i build/p2.img fat/EFI "fat/Long Folder Name" \
		fat/empty.txt ::/
	truncate -s "$SESSION_DISK_BYTES" build/session.raw
	sfdisk -q build/session.raw <<-EOF
		label: gpt
		label-id: $GPT_DISK_UUID
		unit: sectors
		start=2048, size=131072, type=$GPT_LINUX_TYPE, uuid=$GPT_P1_UUID, name=root
		start=133120, size=81920, type=$GPT_BASIC_DATA_TYPE, uuid=$GPT_P2_UUID, name=esp
	EOF
	put_file build/session.raw $((2048 * 512)) build/p1.img
	put_file build/session.raw $((133120 * 512)) build/p2.img
	to_format build/session.raw "$img" "$fmt"
}

# manifest DIR: everything a faithful copy keeps, one NUL-free record per
# line where names allow (a name with a newline spans two lines, alike on
# both sides): type, mode, size (not of folders), links, mtime and name of
# every entry and the target of every symlink; then the SHA-256 of every
# file; then every user xattr. lost+found is ext4's own and the top folder
# is mkfs's (its time and link count), so both are left out.
# Runs as the user (MANIFEST_AS=env: as root, for the source tree).
manifest() {
	${MANIFEST_AS:-as_user} sh -c '
		cd "$1" || exit 1
		find . -mindepth 1 -path ./lost+found -prune -o ! -type d -printf "%y %m %s %n %TY-%Tm-%Td %TT %P -> %l\0" -o -printf "%y %m - %n %TY-%Tm-%Td %TT %P\0" |
			sort -z | tr "\0" "\n"
		find . -path ./lost+found -prune -o -type f -print0 | sort -z |
			xargs -0 sha256sum
		find . -mindepth 1 -path ./lost+found -prune -o -print0 | sort -z |
			xargs -0 getfattr -h -d -m "^user\." 2>&1 | grep -v "^$"
	' manifest "$1"
}

# ---------------------------------------------------------------------------
# (a) Rootless extraction

@test "in CI without root: cp -a and tar through fuse2fs, and mcopy, give back every file of a qcow2 with their names, links, holes, times, xattrs and checksums" {
	require fuse2fs mcopy getfattr
	make_session_disk "$IMG"
	MANIFEST_AS=env manifest tree >want.manifest
	mount_image -o ro
	as_user mkdir ext4 copy-cp copy-tar copy-fat
	# The files belong to root in the image: fakeroot lets the user read
	# them all, as in a CI job that unpacks a root filesystem.
	as_user fuse2fs -o ro,fakeroot "$MNT/p1" "$PWD/ext4"

	as_user cp -a ext4/. copy-cp/
	as_user sh -c 'tar -C ext4 --xattrs --xattrs-include="user.*" -cf - . | tar -C copy-tar --xattrs --xattrs-include="user.*" -xpf -'
	rm -rf copy-cp/lost+found copy-tar/lost+found
	manifest ext4 >ext4.manifest
	manifest copy-cp >cp.manifest
	manifest copy-tar >tar.manifest
	diff -u want.manifest ext4.manifest
	diff -u want.manifest cp.manifest
	diff -u want.manifest tar.manifest
	# The three names of one inode are still one inode in the copy.
	run -0 stat -c %i copy-cp/etc/hard-a copy-cp/etc/hard-b copy-cp/deep/hard-c
	assert_eq "$(sort -u <<<"$output" | wc -l)" 1
	run -0 as_user cat copy-cp/etc/link-relative
	assert_eq "$output" $'NAME="imgfs test"\nVERSION_ID=1'

	as_user mcopy -s -n -m -i "$MNT/p2" ::/EFI "::/Long Folder Name" \
		::/empty.txt copy-fat/
	(cd fat && find . -type f -print0 | sort -z | xargs -0 sha256sum) >fat.sums
	run -0 as_user sh -c 'cd copy-fat && find . -type f -print0 | sort -z | xargs -0 sha256sum'
	assert_eq "$output" "$(cat fat.sums)"

	# Innermost first: fuse2fs holds p1 open.
	unmount_fuse "$PWD/ext4"
	unmount_image
	refute_mounted
}

# change_tree DIR: what the user does to the ext4 of the running disk (and,
# as root, to a copy of the tree for the expected result).
change_tree() {
	rm "$1/etc/hard-b"
	printf 'VERSION_ID=2\n' >>"$1/etc/os-release"
	det_random 1M | dd of="$1/var/lib/big/twenty.bin" bs=1M seek=7 \
		conv=notrunc status=none
	mv "$1/odd names" "$1/renamed"
	echo "added after the snapshot" >"$1/etc/added"
	rm -r "$1/many"
	touch -h -d "2024-01-02 03:04:05" "$1/etc" "$1/etc/os-release" \
		"$1/etc/added" "$1/var/lib/big/twenty.bin" "$1/var/lib/big" "$1"/renamed "$1"
}

@test "a snapshot taken before the disk changed gives back the old files through snapshots/NAME/p1 and p2, and p1 the new ones" {
	require fuse2fs mcopy mdel getfattr
	make_session_disk "$IMG"
	MANIFEST_AS=env manifest tree >old.manifest
	(cd fat && find . -type f -print0 | sort -z | xargs -0 sha256sum) >old-fat.sums
	qemu-img snapshot -c release-1 "$IMG"

	# The VM moves on: the user changes the running disk through imgfs.
	mount_image
	as_user mkdir ext4 old-ext4 new-ext4
	as_user fuse2fs -o fakeroot "$MNT/p1" "$PWD/ext4"
	as_user bash -c "$(declare -f change_tree det_random); change_tree ext4"
	unmount_fuse "$PWD/ext4"
	as_user mdel -i "$MNT/p2" ::/EFI/BOOT/grub.cfg
	echo "new loader config" | as_user mcopy -i "$MNT/p2" - ::/EFI/BOOT/new.cfg
	unmount_image
	run -0 qemu-img check "$IMG"
	cp -a tree new-tree
	change_tree new-tree
	MANIFEST_AS=env manifest new-tree >new.manifest

	mount_image -o ro
	as_user fuse2fs -o ro,fakeroot "$MNT/snapshots/release-1/p1" "$PWD/old-ext4"
	as_user fuse2fs -o ro,fakeroot "$MNT/p1" "$PWD/new-ext4"
	as_user mkdir old-copy new-copy old-fat
	as_user sh -c 'tar -C old-ext4 --xattrs --xattrs-include="user.*" -cf - . | tar -C old-copy --xattrs --xattrs-include="user.*" -xpf -'
	as_user cp -a new-ext4/. new-copy/
	manifest old-copy >old-copy.manifest
	manifest new-copy >new-copy.manifest
	diff -u old.manifest old-copy.manifest
	diff -u new.manifest new-copy.manifest
	as_user mcopy -s -n -m -i "$MNT/snapshots/release-1/p2" ::/EFI \
		"::/Long Folder Name" ::/empty.txt old-fat/
	run -0 as_user sh -c 'cd old-fat && find . -type f -print0 | sort -z | xargs -0 sha256sum'
	assert_eq "$output" "$(cat old-fat.sums)"
	run -0 as_user mdir -b -i "$MNT/p2" ::/EFI/BOOT
	assert_eq "$output" $'::/EFI/BOOT/new.cfg\n::/EFI/BOOT/BOOTX64.EFI'
	run -0 as_user mtype -i "$MNT/p2" ::/EFI/BOOT/new.cfg
	assert_eq "$output" "new loader config"

	unmount_fuse "$PWD/new-ext4"
	unmount_fuse "$PWD/old-ext4"
	unmount_image
	refute_mounted
}

# ---------------------------------------------------------------------------
# (b) Browsing

@test "browsing: find, ls -lA, stat, du, getfattr, file -s and blkid tell what the image holds, down to the snapshot folders" {
	require getfattr file blkid
	make_session_disk "$IMG"
	qemu-img snapshot -c release-1 "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	user=$(test_user_name)
	mount_image -o ro

	# A walk of the whole tree; a folder counts 2 links plus its
	# subfolders, as find and fts expect.
	# (The files/ folders, whose walk the files/ tests check, are not
	# entered here.)
	run -0 as_user find "$MNT" -name files -prune -printf '%y %M %n %s %P\n' -o -printf '%y %M %n %s %P\n'
	assert_eq "$(sort -k 5 <<<"$output")" "d dr-xr-xr-x 4 0 
f -r--r--r-- 1 $SESSION_DISK_BYTES disk
d dr-xr-xr-x 4 0 files
f -r--r--r-- 1 $(as_user cat "$MNT/info" | wc -c) info
f -r--r--r-- 1 $SESSION_P1_BYTES p1
f -r--r--r-- 1 $SESSION_P2_BYTES p2
d dr-xr-xr-x 3 0 snapshots
d dr-xr-xr-x 3 0 snapshots/release-1
f -r--r--r-- 1 $SESSION_DISK_BYTES snapshots/release-1/disk
d dr-xr-xr-x 4 0 snapshots/release-1/files
f -r--r--r-- 1 $SESSION_P1_BYTES snapshots/release-1/p1
f -r--r--r-- 1 $SESSION_P2_BYTES snapshots/release-1/p2"
	run -0 as_user ls -lA --time-style=+%s "$MNT/snapshots/release-1"
	mtime=$(stat -c %Y "$IMG")
	assert_eq "$output" "total $((($(allocated_bytes "$IMG") + $(allocated_bytes "$IMG" 1048576 "$SESSION_P1_BYTES") + $(allocated_bytes "$IMG" 68157440 "$SESSION_P2_BYTES")) / 1024))
-r--r--r-- 1 $user $user $SESSION_DISK_BYTES $mtime disk
dr-xr-xr-x 4 $user $user         0 $mtime files
-r--r--r-- 1 $user $user  $SESSION_P1_BYTES $mtime p1
-r--r--r-- 1 $user $user  $SESSION_P2_BYTES $mtime p2"
	# .. of a snapshot's folder is snapshots/, in readdir as in lookup.
	run -0 as_user ls -ai "$MNT/snapshots/release-1"
	assert_eq "$(awk '$2 == ".." { print $1 }' <<<"$output")" \
		"$(as_user stat -c %i "$MNT/snapshots")"
	run -0 as_user du -B1 "$MNT/p1" "$MNT/snapshots/release-1/p2"
	assert_eq "$output" "$(allocated_bytes "$IMG" 1048576 "$SESSION_P1_BYTES")	$MNT/p1
$(allocated_bytes "$IMG" 68157440 "$SESSION_P2_BYTES")	$MNT/snapshots/release-1/p2"

	# What the usual tools say about the partition files is what they say
	# about the filesystems they were made from.
	run -0 as_user file -b -s "$MNT/p1" "$MNT/p2" "$MNT/disk" "$MNT/snapshots/release-1/p1"
	assert_eq "$output" "$(file -b -s build/p1.img build/p2.img build/session.raw build/p1.img)"
	for p in p1 p2; do
		run -0 as_user blkid -p -o export "$MNT/$p"
		assert_eq "$output" "$(blkid -p -o export "build/$p.img" | sed "s|^DEVNAME=.*|DEVNAME=$MNT/$p|")"
	done
	run -0 as_user blkid -p -o export "$MNT/snapshots/release-1/disk"
	assert_eq "$output" "DEVNAME=$MNT/snapshots/release-1/disk
PTUUID=${GPT_DISK_UUID,,}
PTTYPE=gpt"
	run -0 as_user getfattr -d --absolute-names "$MNT/p1" "$MNT/snapshots/release-1/p2"
	assert_eq "$output" "# file: $MNT/p1
user.imgfs.fstype=\"ext4\"
user.imgfs.label=\"session-root\"
user.imgfs.partname=\"root\"
user.imgfs.parttype=\"${GPT_LINUX_TYPE,,}\"
user.imgfs.partuuid=\"${GPT_P1_UUID,,}\"
user.imgfs.uuid=\"$SESSION_EXT4_UUID\"

# file: $MNT/snapshots/release-1/p2
user.imgfs.fstype=\"vfat\"
user.imgfs.label=\"SESSIONFAT\"
user.imgfs.partname=\"esp\"
user.imgfs.parttype=\"${GPT_BASIC_DATA_TYPE,,}\"
user.imgfs.partuuid=\"${GPT_P2_UUID,,}\"
user.imgfs.uuid=\"5E55-A0F1\""
	run -0 as_user awk '$1 == "FILE", 0' "$MNT/info"
	assert_eq "$output" "FILE START SIZE TYPE FSTYPE LABEL UUID PARTUUID NAME NOTE
p1 1048576 $SESSION_P1_BYTES ${GPT_LINUX_TYPE,,} ext4 session-root $SESSION_EXT4_UUID ${GPT_P1_UUID,,} root -
p2 68157440 $SESSION_P2_BYTES ${GPT_BASIC_DATA_TYPE,,} vfat SESSIONFAT 5E55-A0F1 ${GPT_P2_UUID,,} esp -"

	# Names that are not there, and what cannot be done in a read-only tree.
	run -1 as_user stat -c %n "$MNT/p3"
	assert_eq "$output" "stat: cannot statx '$MNT/p3': No such file or directory"
	run -1 as_user cat "$MNT/snapshots/no-such-snapshot/disk"
	assert_eq "$output" "cat: $MNT/snapshots/no-such-snapshot/disk: No such file or directory"
	run -1 as_user cat "$MNT/snapshots"
	assert_eq "$output" "cat: $MNT/snapshots: Is a directory"
	run -1 as_user touch "$MNT/new-file"
	assert_eq "$output" "touch: cannot touch '$MNT/new-file': Read-only file system"
	cmp expected.raw <(as_user cat "$MNT/disk")
}

# Eight processes read at once, each its own way: whole files, odd block
# sizes, O_DIRECT, mmap, and through fuse2fs and mtools.
@test "eight readers at once (cat, dd with odd block sizes, O_DIRECT, mmap, fuse2fs, mcopy) each get the bytes qemu-img gives" {
	require fuse2fs mcopy python3
	make_session_disk "$IMG"
	qemu-img snapshot -c release-1 "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	extract expected.raw 1048576 "$SESSION_P1_BYTES" expected-p1.raw
	extract expected.raw 68157440 "$SESSION_P2_BYTES" expected-p2.raw
	disk_sum=$(sha256sum <expected.raw)
	p1_sum=$(sha256sum <expected-p1.raw)
	p2_sum=$(sha256sum <expected-p2.raw)
	mount_image -o ro
	as_user mkdir ext4
	as_user fuse2fs -o ro,fakeroot "$MNT/snapshots/release-1/p1" "$PWD/ext4"
	twenty_sum=$(sha256sum <tree/var/lib/big/twenty.bin)
	bin_sum=$(sha256sum <fat/EFI/BOOT/BOOTX64.EFI)

	pids=()
	for job in \
		"cat $MNT/disk" \
		"dd if=$MNT/p1 bs=7777 status=none" \
		"dd if=$MNT/snapshots/release-1/disk bs=1M iflag=direct status=none" \
		"python3 -c 'import mmap,sys; f=open(sys.argv[1],\"rb\"); sys.stdout.buffer.write(mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ))' $MNT/p2" \
		"tail -c +1 $MNT/snapshots/release-1/p2" \
		"cat ext4/var/lib/big/twenty.bin" \
		"mcopy -n -i $MNT/p2 ::/EFI/BOOT/BOOTX64.EFI -" \
		"dd if=$MNT/snapshots/release-1/p1 bs=4k iflag=direct status=none"; do
		as_user sh -c "$job | sha256sum >sum.\$\$; mv sum.\$\$ \"sum.$((${#pids[@]} + 1))\"" &
		pids+=($!)
	done
	wait "${pids[@]}"
	run -0 cat sum.1 sum.2 sum.3 sum.4 sum.5 sum.6 sum.7 sum.8
	assert_eq "$output" "$disk_sum
$p1_sum
$disk_sum
$p2_sum
$p2_sum
$twenty_sum
$bin_sum
$p1_sum"
	unmount_fuse "$PWD/ext4"
	unmount_image
	refute_mounted
}

# ---------------------------------------------------------------------------
# (c) An MBR disk with logical partitions, converted by qemu-img

# make_mbr_session_disk IMG: a 128 MiB raw disk with an MBR (id 0x5e551011)
# converted by qemu-img to a compressed qcow2 with 16 KiB clusters:
#   p1 primary, bootable,  1 MiB + 16 MiB, type 06, FAT16 "BOOT16"
#   p2 extended (LBA),    17 MiB + 111 MiB, type 0f
#   p5 logical            68 MiB + 32 MiB, type 83, ext4 from ./src
#   p6 logical            18 MiB + 40 MiB, type 0c, FAT32 "DATA32"
#   p7 logical            59 MiB +  8 MiB, type 82, swap
#   p8 logical           101 MiB +  1 MiB, type da, a text pattern
# The logical partitions are not in disk order: p5 lies after p6 and p7,
# as on a disk whose first logical partition was made last.
make_mbr_session_disk() {
	require mkfs.ext4 mkfs.vfat mkswap mcopy
	make_src_tree src
	mkdir -p build
	truncate -s 128M build/mbr.raw
	sfdisk -q build/mbr.raw <<-EOF
		label: dos
		label-id: 0x5e551011
		unit: sectors
		start=2048, size=32768, type=6, bootable
		start=34816, size=227328, type=f
		start=139264, size=65536, type=83
		start=36864, size=81920, type=c
		start=120832, size=16384, type=82
		start=206848, size=2048, type=da
	EOF
	truncate -s 16M build/m1.img
	mkfs.vfat -F 16 -n BOOT16 -i 0B0071E5 build/m1.img >/dev/null
	mcopy -i build/m1.img src/hello.txt ::HELLO.TXT
	truncate -s 32M build/m5.img
	mkfs.ext4 -q -F -d src -L logical-root -U "$EXT4_UUID" \
		-E root_owner=0:0 build/m5.img
	truncate -s 40M build/m6.img
	mkfs.vfat -F 32 -n DATA32 -i 0DA7A032 build/m6.img >/dev/null
	mcopy -s -i build/m6.img src/docs src/data ::/
	head -c 8M /dev/zero >build/m7.img
	chmod 0600 build/m7.img
	mkswap -L logical-swap -U 7e5a9c1b-2d3f-4e5a-8b6c-9d0e1f2a3b4c \
		build/m7.img >/dev/null
	pattern_bytes "imgfs logical p8" 1M >build/m8.img
	put_file build/mbr.raw $((2048 * 512)) build/m1.img
	put_file build/mbr.raw $((139264 * 512)) build/m5.img
	put_file build/mbr.raw $((36864 * 512)) build/m6.img
	put_file build/mbr.raw $((120832 * 512)) build/m7.img
	put_file build/mbr.raw $((206848 * 512)) build/m8.img
	qemu-img convert -f raw -O qcow2 -c -o cluster_size=16k build/mbr.raw "$1"
}

@test "an MBR disk with four logical partitions out of disk order, converted by qemu-img, gives up its FAT16, FAT32, ext4, swap and raw partitions" {
	require fuse2fs mcopy mdir getfattr blkid
	make_mbr_session_disk "$IMG"
	mount_image -o ro
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\np5\np6\np7\np8\nsnapshots'
	assert_same_bytes "$MNT" build/mbr.raw
	run -0 as_user awk '$1 == "FILE", 0' "$MNT/info"
	assert_eq "$output" "FILE START SIZE TYPE FSTYPE LABEL UUID PARTUUID NAME NOTE
p1 1048576 16777216 0x6 vfat BOOT16 0B00-71E5 5e551011-01 - -
p2 17825792 116391936 0xf - - - 5e551011-02 - extended
p5 71303168 33554432 0x83 ext4 logical-root $EXT4_UUID 5e551011-05 - -
p6 18874368 41943040 0xc vfat DATA32 0DA7-A032 5e551011-06 - -
p7 61865984 8388608 0x82 swap logical-swap 7e5a9c1b-2d3f-4e5a-8b6c-9d0e1f2a3b4c 5e551011-07 - -
p8 105906176 1048576 0xda - - - 5e551011-08 - -"
	run -0 as_user getfattr --absolute-names -n user.imgfs.fstype --only-values "$MNT/p7"
	assert_eq "$output" swap
	run -0 as_user blkid -p -o value -s TYPE "$MNT/p1" "$MNT/p5" "$MNT/p6" "$MNT/p7"
	assert_eq "$output" $'vfat\next4\nvfat\nswap'

	as_user mkdir ext4 copy
	as_user fuse2fs -o ro,fakeroot "$MNT/p5" "$PWD/ext4"
	as_user cp -a ext4/. copy/
	run -0 as_user diff -r --no-dereference --exclude=lost+found src copy
	run -0 as_user mtype -i "$MNT/p1" ::HELLO.TXT
	assert_eq "$output" "hello from imgfs"
	run -0 as_user mdir -b -i "$MNT/p6" ::/docs
	assert_eq "$output" $'::/docs/readme.txt\n::/docs/link-to-hello'
	as_user mcopy -n -i "$MNT/p6" ::/data/random.bin - | cmp - src/data/random.bin
	run -0 as_user head -c 16 "$MNT/p8"
	assert_eq "$output" "imgfs logical p8"
	unmount_fuse "$PWD/ext4"
	unmount_image
	refute_mounted
}

# ---------------------------------------------------------------------------
# (d) The daemon dies under its readers

# reader.py PATH buffered|direct GATE: opens PATH, writes its PID to
# GATE.MODE, waits for GATE to exist, then reads PATH to the end in 1 MiB
# reads and prints how far it got and why it stopped.
write_reader() {
	cat >reader.py <<-'PY'
		import mmap, os, sys
		path, mode, gate = sys.argv[1:4]
		flags = os.O_RDONLY | (os.O_DIRECT if mode == "direct" else 0)
		fd = os.open(path, flags)
		with open(gate + "." + mode, "w") as f:
		    f.write(str(os.getpid()))
		while not os.path.exists(gate):
		    pass
		buf = mmap.mmap(-1, 1 << 20)
		off = 0
		try:
		    while True:
		        n = os.preadv(fd, [buf], off)
		        if n == 0:
		            break
		        off += n
		except OSError as e:
		    print(f"{os.path.basename(path)}: {e.strerror}")
		    sys.exit(1)
		print(f"{os.path.basename(path)}: read {off} bytes")
	PY
}

# blocked PIDFILE...: each process named by a PIDFILE sleeps in the kernel
# (state S or D): its read waits for the stopped daemon.
blocked() {
	local f state
	for f; do
		state=$(awk '{ print $3 }' "/proc/$(cat "$f")/stat" 2>/dev/null)
		[[ $state == S || $state == D ]] || return 1
	done
}

@test "kill -9 of the daemon while readers wait on it: each read fails at once with an error, fuse2fs on p1 fails its reads, and after fusermount3 -u the image mounts again" {
	require fuse2fs python3
	make_gpt_ext4_fat "$IMG"
	qemu-img convert -O raw "$IMG" expected.raw
	write_reader
	mount_image -o ro
	as_user mkdir ext4
	as_user fuse2fs -o ro,fakeroot "$MNT/p1" "$PWD/ext4"
	pid=$(daemon_pid)

	# Both readers have the file open; then the daemon stops answering
	# and they start reading, so their requests are in flight when it dies.
	as_user python3 reader.py "$MNT/disk" buffered gate >buffered.out &
	BG_PID=$!
	as_user python3 reader.py "$MNT/p2" direct gate >direct.out &
	direct_pid=$!
	wait_until "$IMGFS_HANG_DEADLINE" test -s gate.buffered -a -s gate.direct
	kill -STOP "$pid"
	as_user touch gate
	wait_until "$IMGFS_HANG_DEADLINE" blocked gate.buffered gate.direct
	kill -KILL "$pid"
	if ! wait_until "$IMGFS_HANG_DEADLINE" pids_gone "$BG_PID" "$direct_pid"; then
		echo "a reader still waits 10 s after the daemon died" >&2
		return 1
	fi
	run -1 wait "$BG_PID"
	run -1 wait "$direct_pid"
	run -0 cat buffered.out direct.out
	# A cached read request fails as the connection goes away (the
	# kernel then refuses the retry); the direct one is aborted in flight.
	assert_eq "$output" "disk: Transport endpoint is not connected
p2: Software caused connection abort"
	wait_until "$IMGFS_EXIT_DEADLINE" pids_gone "$pid"

	# Whatever comes later fails too, and nothing waits.
	run -1 as_user cat "$MNT/p3"
	assert_eq "$output" "cat: $MNT/p3: Transport endpoint is not connected"
	run -2 as_user ls "$MNT"
	assert_eq "$output" "ls: cannot access '$MNT': Transport endpoint is not connected"
	# fuse2fs still serves what it has cached, and fails what it must read.
	run -1 as_user cat ext4/data/random.bin
	[[ $output == "cat: ext4/data/random.bin: "* ]]

	unmount_fuse "$PWD/ext4"
	run -0 as_user fusermount3 -u "$MNT"
	refute_mounted
	no_test_pids
	mount_image -o ro
	as_user cmp "$MNT/disk" expected.raw
	as_user fuse2fs -o ro,fakeroot "$MNT/p1" "$PWD/ext4"
	as_user cmp ext4/data/random.bin src/data/random.bin
	unmount_fuse "$PWD/ext4"
	unmount_image
}

@test "an MBR whose last EBR links back into the chain shows each logical partition once, and info says the chain loops" {
	make_mbr_logical build.raw raw
	# The EBR of p6 (sector 38912) gets the link the EBR of p5 has: to
	# itself, 18432 sectors into the extended partition.
	printf '\x00\x00\x00\x00\x05\x00\x00\x00\x00\x48\x00\x00\x00\x58\x00\x00' |
		dd of=build.raw bs=1 seek=$((38912 * 512 + 446 + 16)) conv=notrunc status=none
	run -0 sfdisk -l build.raw
	[[ $output == *"build.raw60 "* ]]
	qemu-img convert -f raw -O qcow2 build.raw "$IMG"
	mount_image -o ro
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\np5\np6\nsnapshots'
	run -0 info_line partition-warning
	assert_eq "$output" "Omitting partitions after #60. They will be deleted if you save this partition table.; the EBR chain loops: 54 repeated logical partitions ignored"
	run -0 as_user head -c 16 "$MNT/p6"
	assert_eq "$output" "imgfs logical p6"
}

# ---------------------------------------------------------------------------
# (f) files/: imgfs reads the guest filesystems itself

@test "without fuse2fs: cp -a and tar of files/p1 give back every file of the ext4 with names, links, holes, times, xattrs and checksums; files/p2 gives the FAT tree" {
	require getfattr
	make_session_disk "$IMG"
	MANIFEST_AS=env manifest tree >want.manifest
	mount_image -o ro
	run -0 as_user ls "$MNT/files"
	assert_eq "$output" $'p1\np2'
	as_user mkdir copy-cp copy-tar
	as_user cp -a "$MNT/files/p1/." copy-cp/
	as_user sh -c 'tar -C "$1" --xattrs --xattrs-include="user.*" -cf - . | tar -C copy-tar --xattrs --xattrs-include="user.*" -xpf -' sh "$MNT/files/p1"
	rm -rf copy-cp/lost+found copy-tar/lost+found
	manifest "$MNT/files/p1" >files.manifest
	manifest copy-cp >cp.manifest
	manifest copy-tar >tar.manifest
	diff -u want.manifest files.manifest
	diff -u want.manifest cp.manifest
	diff -u want.manifest tar.manifest
	# Hard links: one inode number through the mount and in the copy.
	run -0 as_user stat -c %i "$MNT/files/p1/etc/hard-a" \
		"$MNT/files/p1/etc/hard-b" "$MNT/files/p1/deep/hard-c"
	assert_eq "$(sort -u <<<"$output" | wc -l)" 1
	run -0 stat -c %i copy-cp/etc/hard-a copy-cp/etc/hard-b copy-cp/deep/hard-c
	assert_eq "$(sort -u <<<"$output" | wc -l)" 1
	# Holes: the 48 MiB sparse file stores a few blocks, and the copy
	# made with cp --sparse stays sparse.
	run -0 as_user stat -c %b "$MNT/files/p1/var/lib/sparse.img"
	(( output * 512 < 2 * 1024 * 1024 ))
	(cd fat && find . -type f -print0 | sort -z | xargs -0 sha256sum) >fat.sums
	run -0 as_user sh -c 'cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum' sh "$MNT/files/p2"
	assert_eq "$output" "$(cat fat.sums)"
	unmount_image
	refute_mounted
}

@test "files/p1 shows what the kernel's own read-only mount of the same ext4 shows, attribute for attribute" {
	require_root
	require getfattr
	make_session_disk "$IMG"
	mkdir kernel
	mount -o ro,loop build/p1.img kernel || skip "no loop mount here"
	MANIFEST_AS=env manifest kernel >kernel.manifest
	run -0 stat -c '%i %h %u %g %a %s %Y %X %Z' kernel/etc/os-release kernel/var/lib/big/twenty.bin kernel/many
	kernel_stat=$output
	umount kernel
	mount_image -o ro
	manifest "$MNT/files/p1" >files.manifest
	diff -u kernel.manifest files.manifest
	# imgfs numbers inodes per opened filesystem: the guest's number is
	# the low 40 bits.
	run -0 as_user stat -c '%i %h %u %g %a %s %Y %X %Z' "$MNT/files/p1/etc/os-release" "$MNT/files/p1/var/lib/big/twenty.bin" "$MNT/files/p1/many"
	assert_eq "$(while read -r ino rest; do echo "$((ino & ((1 << 40) - 1))) $rest"; done <<<"$output")" "$kernel_stat"
	unmount_image
}

@test "files/ is read-only: writes, new files, renames and removals fail with 'Read-only file system'" {
	make_session_disk "$IMG"
	mount_image
	run -2 as_user sh -c 'echo x >>"$1/files/p1/etc/os-release"' sh "$MNT"
	[[ $output == *"Read-only file system"* ]]
	run -1 as_user touch "$MNT/files/p1/etc/new"
	[[ $output == *"Read-only file system"* ]]
	run -1 as_user mkdir "$MNT/files/p2/NEW"
	[[ $output == *"Read-only file system"* ]]
	run -1 as_user rm "$MNT/files/p1/etc/empty"
	[[ $output == *"Read-only file system"* ]]
	run -1 as_user mv "$MNT/files/p1/etc/empty" "$MNT/files/p1/etc/moved"
	[[ $output == *"Read-only file system"* ]]
	unmount_image
	run -0 qemu-img check "$IMG"
}

@test "a snapshot's files/ shows the files as they were, and files/p1 the ones written since" {
	require fuse2fs
	make_session_disk "$IMG"
	qemu-img snapshot -c release-1 "$IMG"
	MANIFEST_AS=env manifest tree >old.manifest
	mount_image
	as_user mkdir ext4
	as_user fuse2fs -o fakeroot "$MNT/p1" "$PWD/ext4"
	as_user bash -c "$(declare -f change_tree det_random); change_tree ext4"
	unmount_fuse "$PWD/ext4"
	cp -a tree new-tree
	change_tree new-tree
	MANIFEST_AS=env manifest new-tree >new.manifest
	manifest "$MNT/snapshots/release-1/files/p1" >snap.manifest
	diff -u old.manifest snap.manifest
	manifest "$MNT/files/p1" >now.manifest
	diff -u new.manifest now.manifest
	unmount_image
	run -0 qemu-img check "$IMG"
}

@test "after mkfs over p2 through the mount, files/p2 shows the new filesystem, not a mix of old and new" {
	require mkfs.ext4
	make_session_disk "$IMG"
	mount_image
	run -0 as_user ls "$MNT/files/p2"
	[[ $output == *EFI* ]]
	as_user mkdir newsrc
	as_user sh -c 'echo fresh >newsrc/fresh.txt'
	as_user mkfs.ext4 -q -F -d newsrc "$MNT/p2"
	run -0 as_user cat "$MNT/files/p2/fresh.txt"
	assert_eq "$output" fresh
	run -2 as_user ls "$MNT/files/p2/EFI"
	unmount_image
	run -0 qemu-img check "$IMG"
}

@test "an image copied from a running guest: files/p1 replays the ext4 journal in memory as the kernel's read-only mount does, and the image is not written" {
	require_root
	require setfattr
	make_src_tree src
	setfattr -n user.note -v "kept through the crash" src/docs/readme.txt
	truncate -s 32M live.img
	mkfs.ext4 -q -F -d src live.img
	mkdir live
	mount -o loop,commit=600 live.img live || skip "no loop mount here"
	# The guest writes, its journal commits, and the image is copied
	# before the journal is checkpointed or the filesystem unmounted: a
	# crash as the copy sees it (needs_recovery set).
	mkdir live/after-copy
	printf 'written while running\n' >live/after-copy/new.txt
	det_random 200K >live/after-copy/blob.bin
	rm live/hello.txt
	sync -f live/after-copy/new.txt
	cp --sparse=always live.img crashed.img
	umount live
	run -0 dumpe2fs -h crashed.img
	[[ $output == *needs_recovery* ]]
	# The oracle: the kernel's read-only mount of a second copy (the
	# kernel replays into the device it mounts, so the loop device must
	# be writable).
	cp --sparse=always crashed.img oracle.img
	mkdir kernel
	loop=$(losetup -f --show oracle.img)
	mount -o ro "$loop" kernel || { losetup -d "$loop"; false; }
	MANIFEST_AS=env manifest kernel >kernel.manifest
	umount kernel
	losetup -d "$loop"
	truncate -s 40M disk.raw
	printf 'label: gpt\nstart=2048, size=65536\n' | sfdisk -q disk.raw
	put_file disk.raw $((2048 * 512)) crashed.img
	qemu-img convert -f raw -O qcow2 disk.raw "$IMG"
	before=$(sha256sum "$IMG" | cut -d' ' -f1)
	mount_image
	manifest "$MNT/files/p1" >files.manifest
	diff -u kernel.manifest files.manifest
	run -0 as_user cat "$MNT/files/p1/after-copy/new.txt"
	assert_eq "$output" "written while running"
	unmount_image
	assert_eq "$(sha256sum "$IMG" | cut -d' ' -f1)" "$before"
}

# le16_at FILE OFFSET VALUE: writes VALUE as two little-endian bytes.
le16_at() {
	printf "\\x$(printf %02x $(($3 & 255)))\\x$(printf %02x $(($3 >> 8)))" |
		dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

@test "a FAT folder whose entry leads back to an ancestor three levels up: find of files/p1 ends, naming that entry alone with 'Input/output error'" {
	require mkfs.vfat mcopy mshowfat
	mkdir -p src/A/B/C
	echo ok >src/OK.TXT
	echo deep >src/A/B/C/LOOP
	echo beside >src/A/B/C/NEXT.TXT
	truncate -s 20M p1.img
	mkfs.vfat -F 16 -s 1 -S 512 -n LOOPFAT p1.img >/dev/null
	mcopy -s -m -i p1.img src/A src/OK.TXT ::/
	# C/LOOP becomes a folder whose first cluster is A's.
	a_cluster=$(mshowfat -i p1.img ::/A | sed -n 's/.*<\([0-9]*\)[->].*/\1/p')
	[[ $a_cluster =~ ^[0-9]+$ ]]
	loop_at=$(grep -obUaF 'LOOP       ' p1.img | cut -d: -f1)
	[[ $loop_at =~ ^[0-9]+$ ]]
	printf '\x10' | dd of=p1.img bs=1 seek=$((loop_at + 11)) conv=notrunc status=none
	le16_at p1.img $((loop_at + 26)) "$a_cluster"
	truncate -s 24M disk.raw
	printf 'label: gpt\nstart=2048, size=40960\n' | sfdisk -q disk.raw
	put_file disk.raw $((2048 * 512)) p1.img
	qemu-img convert -f raw -O qcow2 disk.raw "$IMG"
	mount_image -o ro
	run -1 --separate-stderr bounded 60 as_user find "$MNT/files/p1"
	assert_eq "$output" "$MNT/files/p1
$MNT/files/p1/A
$MNT/files/p1/A/B
$MNT/files/p1/A/B/C
$MNT/files/p1/A/B/C/LOOP
$MNT/files/p1/A/B/C/NEXT.TXT
$MNT/files/p1/OK.TXT"
	assert_eq "$stderr" "find: '$MNT/files/p1/A/B/C/LOOP': Input/output error"
	run -0 as_user cat "$MNT/files/p1/A/B/C/NEXT.TXT"
	assert_eq "$output" beside
	run -1 as_user stat -c %F "$MNT/files/p1/A/B/C/LOOP"
	assert_eq "$output" "stat: cannot statx '$MNT/files/p1/A/B/C/LOOP': Input/output error"
	unmount_image
}

# rss_kib PID: the resident memory of a process.
rss_kib() {
	awk '$1 == "VmRSS:" { print $2 }' "/proc/$1/status"
}

# closed_count NAME: how often the daemon's log says files/NAME closed.
closed_count() {
	grep -c "files/$1: closed, unused for 2 s" daemon.log || true
}

# closed_times NAME N: the log says files/NAME closed N times.
closed_times() {
	[[ $(closed_count "$1") == "$2" ]]
}

@test "files/ closes a filesystem left unused for files_idle seconds, keeps one with an open file, and reopens it with the same inode numbers and contents" {
	make_session_disk "$IMG"
	give_to_user "$IMG"
	as_user "$IMGFS" -f -o ro,files_idle=2 "$IMG" "$MNT" </dev/null >daemon.log 2>&1 3>&- &
	BG_PID=$!
	wait_until 10 is_mounted "$MNT"
	wait_until 10 as_user test -e "$MNT/p2"
	# Browse both: every name looked up, every file of p1 read; a file
	# of p2 stays open meanwhile, until ./let-go appears.
	as_user ls -lR "$MNT/files/p1" "$MNT/files/p2" >/dev/null
	as_user sh -c 'exec 4<"$1"; while [ ! -e let-go ]; do sleep 0.2; done' sh "$MNT/files/p2/empty.txt" &
	holder=$!
	run -0 as_user sh -c 'cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum' sh "$MNT/files/p1"
	sums=$output
	run -0 as_user stat -c '%i %n' "$MNT/files/p1/etc/hard-a" \
		"$MNT/files/p1/deep/a/b/c/d/e/f/g/h/bottom.txt" \
		"$MNT/files/p2/EFI/BOOT/BOOTX64.EFI" "$MNT/files/p2/empty.txt"
	inodes=$output
	pid=$(daemon_pid)
	rss_open=$(rss_kib "$pid")
	wait_until 10 closed_times p1 1
	sleep 3
	assert_eq "$(closed_count p2)" 0
	rss_closed=$(rss_kib "$pid")
	echo "# daemon RSS: $rss_open KiB browsed, $rss_closed KiB with p1 closed" >&3
	touch let-go
	wait "$holder"
	wait_until 10 closed_times p2 1
	# The kernel still holds the old nodes: reading a file p2 never
	# read, and listing folders, go to the closed filesystems and reopen
	# them, under the same inode numbers.
	run -0 as_user cat "$MNT/files/p2/EFI/BOOT/BOOTX64.EFI"
	run -0 as_user sh -c 'cd "$1" && find . -type f -print0 | sort -z | xargs -0 sha256sum' sh "$MNT/files/p1"
	assert_eq "$output" "$sums"
	run -0 as_user stat -c '%i %n' "$MNT/files/p1/etc/hard-a" \
		"$MNT/files/p1/deep/a/b/c/d/e/f/g/h/bottom.txt" \
		"$MNT/files/p2/EFI/BOOT/BOOTX64.EFI" "$MNT/files/p2/empty.txt"
	assert_eq "$output" "$inodes"
	# Drop the kernel's caches of the mount, so that the next stat asks
	# the daemon again after another idle close.
	wait_until 10 closed_times p1 2
	sync; echo 2 >/proc/sys/vm/drop_caches
	run -0 as_user stat -c '%i %n' "$MNT/files/p1/etc/hard-a" \
		"$MNT/files/p1/deep/a/b/c/d/e/f/g/h/bottom.txt" \
		"$MNT/files/p2/EFI/BOOT/BOOTX64.EFI" "$MNT/files/p2/empty.txt"
	assert_eq "$output" "$inodes"
	run -0 as_user cat "$MNT/files/p1/etc/os-release"
	assert_eq "${lines[0]}" 'NAME="imgfs test"'
	run -1 grep -c "cannot reopen" daemon.log
	as_user fusermount3 -u "$MNT"
	wait "$BG_PID"
	BG_PID=
	refute_mounted
}
