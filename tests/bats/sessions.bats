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
