#!/usr/bin/env bats
# cli.bats: imgfs info|ls|cat|cp|tar, the commands that read an image
# without FUSE, used as a container or CI job would use them: as an
# unprivileged user, with /dev/fuse out of reach.
#
# `nofuse CMD...` runs CMD as the test user in a private mount namespace
# where an empty regular file is bind-mounted over /dev/fuse, so nothing
# in it can mount a FUSE filesystem (the first test proves it). The disk
# is the GPT qcow2 of helpers.bash (p1 ext4 from a tree made here, p2
# FAT32, p3 no filesystem) with an internal snapshot; the expected bytes
# come from qemu-img convert, the expected files from the source tree.

bats_require_minimum_version 1.5.0

load helpers

# make_cli_tree DIR: what a root filesystem has and copies get wrong:
# long and odd names (a path over 100 bytes, UTF-8, spaces), relative,
# absolute and dangling symlinks, three names of one inode, a sparse file
# with islands, a 3 MiB file, a FIFO, an empty folder, user xattrs, a
# POSIX ACL, modes from 0400 to 4755 and times with nanoseconds.
make_cli_tree() {
	local d=$1 long
	long=$(printf 'very-long-folder-name-%.0s' 1 2 3 4 5)
	mkdir -p "$d/etc" "$d/usr/lib" "$d/var/empty" "$d/$long/$long" \
		"$d/odd names"
	printf 'NAME="imgfs cli"\nVERSION_ID=3\n' >"$d/usr/lib/os-release"
	ln -s ../usr/lib/os-release "$d/etc/os-release"
	ln -s /usr/lib "$d/etc/lib-absolute"
	ln -s ../gone/away "$d/etc/dangling"
	echo "one inode" >"$d/etc/hard-a"
	ln "$d/etc/hard-a" "$d/etc/hard-b"
	ln "$d/etc/hard-a" "$d/usr/hard-c"
	det_random 3M >"$d/usr/lib/big.bin"
	truncate -s 20M "$d/usr/lib/sparse.img"
	printf 'island' | dd of="$d/usr/lib/sparse.img" bs=1 seek=8192 \
		conv=notrunc status=none
	det_random 100K | dd of="$d/usr/lib/sparse.img" bs=1M seek=9 \
		conv=notrunc status=none
	echo deep >"$d/$long/$long/file-with-a-path-over-100-bytes.txt"
	echo utf8 >"$d/odd names/ünïcødé 名前.txt"
	echo space >"$d/odd names/with space"
	: >"$d/etc/empty"
	mkfifo "$d/etc/fifo"
	setfattr -n user.comment -v "kept by imgfs" "$d/usr/lib/os-release"
	setfattr -n user.folder -v "a folder's attribute" "$d/odd names"
	setfacl -m u:1234:r-x,g:2345:rw- "$d/usr/lib/big.bin"
	chmod 0400 "$d/etc/hard-a"
	chmod 4755 "$d/usr/lib/big.bin"
	chmod 0700 "$d/var/empty"
	find "$d" -exec touch -h -d "2023-06-07 08:09:10.123456789" {} +
	touch -d "2001-02-03 04:05:06.5" "$d/usr/lib/big.bin"
}

# make_cli_disk: $IMG as make_gpt_ext4_fat builds it, p1 holding ./src
# (make_src_tree plus make_cli_tree, 256-byte inodes: nanosecond times), with a snapshot
# "installed"; then p3 changes on the active disk. Keeps build/gpt.raw
# (the disk at snapshot time).
make_cli_disk() {
	require setfacl getfacl setfattr debugfs
	make_src_tree src
	make_cli_tree src
	make_gpt_ext4_fat "$IMG.tmp" raw
	truncate -s 24M build/p1.img
	mkfs.ext4 -q -F -I 256 -d src -L "$EXT4_LABEL" -U "$EXT4_UUID" \
		build/p1.img
	# mkfs.ext4 -d (1.47) drops nanoseconds: put them in with debugfs.
	find src -mindepth 1 -printf '%T@ %P\n' | while read -r t p; do
		f=${t#*.}000000000
		echo "sif \"/$p\" mtime_extra $((10#${f:0:9} << 2))"
	done >build/times.debugfs
	debugfs -w -f build/times.debugfs build/p1.img >/dev/null 2>&1
	put_file build/gpt.raw $((2048 * 512)) build/p1.img
	rm -f "$IMG.tmp"
	qemu-img convert -f raw -O qcow2 -c build/gpt.raw "$IMG"
	qemu-img snapshot -c installed "$IMG"
	qemu-io -f qcow2 -c "write -P 0x5a 65M 1M" "$IMG" >/dev/null
}

# manifest DIR: type, mode, size (files), links, mtime with ns, name and
# link target of every entry below DIR, then file checksums, user xattrs
# and ACLs; lost+found (mkfs's own) and DIR itself left out. Runs as the
# user (MANIFEST_AS=env: as is).
manifest() {
	${MANIFEST_AS:-as_user} sh -c '
		cd "$1" || exit 1
		find . -mindepth 1 -path ./lost+found -prune -o ! -type d -printf "%y %m %s %n %T@ %P -> %l\n" -o -printf "%y %m - %n %T@ %P\n" | sort
		find . -path ./lost+found -prune -o -type f -print0 | sort -z | xargs -0 sha256sum
		find . -mindepth 1 -path ./lost+found -prune -o -print0 | sort -z |
			xargs -0 getfattr -h -d -m "^user\." 2>&1 | grep -v "^$"
		find . -mindepth 1 -path ./lost+found -prune -o ! -type l -print0 | sort -z |
			xargs -0 getfacl -s -n -p 2>/dev/null | grep -v "^$\|^# owner\|^# group"
	' manifest "$1"
}

@test "with /dev/fuse hidden, as a user, imgfs ls shows the block files the mount shows and imgfs cannot mount" {
	make_cli_disk
	if [[ $EUID -eq 0 ]]; then
		run -0 nofuse sh -c 'test ! -c /dev/fuse && id -u'
		assert_eq "$output" "$(id -u "$IMGFS_TEST_USER")"
		as_user mkdir mnt2
		run -1 nofuse "$IMGFS" "$IMG" "$PWD/mnt2"
		refute_mounted "$PWD/mnt2"
	fi
	run -0 nofuse "$IMGFS" ls "$IMG"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\np3\nsnapshots'
	run -0 nofuse "$IMGFS" ls "$IMG" snapshots
	assert_eq "$output" installed
	run -0 nofuse "$IMGFS" ls "$IMG" snapshots/installed
	assert_eq "$output" $'disk\nfiles\np1\np2\np3'
	run -0 nofuse "$IMGFS" ls "$IMG" files
	assert_eq "$output" $'p1\np2'
	if [[ -c /dev/fuse ]]; then
		mount_image -o ro
		run -0 as_user ls "$MNT"
		assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\np3\nsnapshots'
		run -0 as_user ls "$MNT/files"
		assert_eq "$output" $'p1\np2'
		unmount_image
	fi
}

@test "imgfs tar | tar -x gives back the ext4 tree byte for byte with modes, times, links, holes, xattrs and ACLs, and bsdtar extracts the same" {
	require bsdtar
	make_cli_disk
	MANIFEST_AS=env manifest src >want.manifest
	as_user mkdir gnu bsd
	nofuse sh -c '"$1" tar "$2" p1:/ >p1.tar' tar "$IMGFS" "$IMG"
	as_user tar -C gnu --xattrs --xattrs-include='user.*' --acls -xpf p1.tar
	as_user bsdtar -C bsd -xpf p1.tar
	manifest gnu >gnu.manifest
	manifest bsd >bsd.manifest
	diff -u want.manifest gnu.manifest
	# bsdtar run by a user drops set-ID bits (libarchive keeps them only
	# when it restores the owner too); GNU tar keeps them.
	sed -e 's/^f 4755 /f 755 /' -e '/^# flags: s--$/d' want.manifest |
		sort >want-bsd.manifest
	sort bsd.manifest | diff -u want-bsd.manifest -
	run -0 stat -c %i gnu/etc/hard-a gnu/etc/hard-b gnu/usr/hard-c
	assert_eq "$(sort -u <<<"$output" | wc -l)" 1
	# The sparse file stays sparse in the archive and after extraction.
	(($(stat -c %s p1.tar) < 8 * 1024 * 1024))
	(($(stat -c %b gnu/usr/lib/sparse.img) * 512 < 1024 * 1024))
	run -0 as_user tar -tf p1.tar
	assert_eq "${lines[0]}" ./
}

@test "imgfs cp copies the ext4 tree like cp -a, and a single folder or file into an existing folder" {
	make_cli_disk
	MANIFEST_AS=env manifest src >want.manifest
	run -0 nofuse "$IMGFS" cp "$IMG" p1:/ "$PWD/copy"
	assert_eq "$output" ""
	rm -rf copy/lost+found
	manifest copy >cp.manifest
	diff -u want.manifest cp.manifest
	run -0 stat -c %i copy/etc/hard-a copy/etc/hard-b copy/usr/hard-c
	assert_eq "$(sort -u <<<"$output" | wc -l)" 1
	(($(stat -c %b copy/usr/lib/sparse.img) * 512 < 1024 * 1024))
	as_user mkdir into
	run -0 nofuse "$IMGFS" cp "$IMG" p1:/usr/lib "$PWD/into"
	run -0 as_user cmp into/lib/big.bin src/usr/lib/big.bin
	run -0 nofuse "$IMGFS" cp "$IMG" p1:/etc/os-release "$PWD/into"
	run -0 as_user readlink into/os-release
	assert_eq "$output" ../usr/lib/os-release
}

@test "imgfs tar and cp of the FAT partition give back its files" {
	make_cli_disk
	as_user mkdir fat
	nofuse sh -c '"$1" tar "$2" p2:/ | tar -C fat -xf -' tar "$IMGFS" "$IMG"
	run -0 nofuse "$IMGFS" cp "$IMG" p2:/docs "$PWD/fatcp"
	cmp fat/hello.txt src/hello.txt
	cmp fat/docs/readme.txt src/docs/readme.txt
	cmp fat/docs/random.bin src/data/random.bin
	cmp fatcp/random.bin src/data/random.bin
	run -0 nofuse "$IMGFS" cat "$IMG" p2:/docs/readme.txt
	assert_eq "$output" "$(cat src/docs/readme.txt)"
}

@test "imgfs cat follows the guest's symlinks inside its root and reads a snapshot's and the active disk's bytes" {
	make_cli_disk
	run -0 nofuse "$IMGFS" cat "$IMG" p1:/etc/os-release
	assert_eq "$output" $'NAME="imgfs cli"\nVERSION_ID=3'
	run -0 nofuse "$IMGFS" cat "$IMG" p1:/etc/lib-absolute/os-release
	assert_eq "$output" $'NAME="imgfs cli"\nVERSION_ID=3'
	run -0 nofuse "$IMGFS" cat "$IMG" snapshots/installed/p1:/etc/os-release
	assert_eq "$output" $'NAME="imgfs cli"\nVERSION_ID=3'
	qemu-img convert -O raw "$IMG" now.raw
	extract now.raw $((1024 * 1024)) $((24 * 1024 * 1024)) want-p1.raw
	nofuse sh -c '"$1" cat "$2" p1 >p1.raw' cat "$IMGFS" "$IMG"
	cmp p1.raw want-p1.raw
	# Written sparse: about as much as the image holds for p1.
	(($(stat -c %b p1.raw) * 512 < 16 * 1024 * 1024))
	extract now.raw $((65 * 1024 * 1024)) $((4 * 1024 * 1024)) want-p3.raw
	nofuse sh -c '"$1" cat "$2" p3 >p3.raw' cat "$IMGFS" "$IMG"
	cmp p3.raw want-p3.raw
	extract build/gpt.raw $((65 * 1024 * 1024)) $((4 * 1024 * 1024)) old-p3.raw
	nofuse sh -c '"$1" cat "$2" snapshots/installed/p3 >snap-p3.raw' cat "$IMGFS" "$IMG"
	cmp snap-p3.raw old-p3.raw
	nofuse sh -c '"$1" cat "$2" disk >disk.raw' cat "$IMGFS" "$IMG"
	cmp disk.raw now.raw
}

@test "imgfs ls -l prints ls -l's columns and ls -R walks the folders" {
	make_cli_disk
	run -0 nofuse "$IMGFS" ls -l "$IMG" p1:/etc
	assert_eq "$output" "$(ls -ln --time-style=long-iso src/etc | tail -n +2)"
	run -0 nofuse "$IMGFS" ls "$IMG" p1:/usr/lib/big.bin
	assert_eq "$output" big.bin
	run -0 nofuse "$IMGFS" ls -R "$IMG" p1:/usr
	assert_eq "$output" "p1:/usr:
hard-c
lib

p1:/usr/lib:
big.bin
os-release
sparse.img"
	run -0 nofuse "$IMGFS" ls "$IMG" files/p1/usr
	assert_eq "$output" $'hard-c\nlib'
}

@test "imgfs info --json parses, and the text agrees with the mount's info" {
	make_cli_disk
	run -0 nofuse "$IMGFS" info --json "$IMG"
	echo "$output" >info.json
	python3 -m json.tool info.json >/dev/null
	run -0 jq -r '[.format, .virtual_size, .cluster_size, .allocated,
		.snapshots[0].dir, .snapshots[0].name, .partition_table.label,
		(.partitions[] | "\(.number):\(.fs_type):\(.files)")] | join(" ")' info.json
	assert_eq "$output" "qcow2 $GPT_DISK_BYTES 65536 $(allocated_bytes "$IMG") installed installed gpt 1:ext4:true 2:vfat:true 3:null:false"
	run -0 jq -r '.partitions[2].files_reason' info.json
	assert_eq "$output" "no filesystem found"
	run -0 nofuse "$IMGFS" info "$IMG"
	echo "$output" >cli.info
	run -0 awk '$1 == "files", NF == 0' cli.info
	assert_eq "$output" "files 3
FOLDER SHOWN REASON
files/p1 yes -
files/p2 yes -
files/p3 no no filesystem found"
	if [[ -c /dev/fuse ]]; then
		mount_image -o ro
		as_user cat "$MNT/info" >mount.info
		unmount_image
		diff -u mount.info cli.info
	fi
}

@test "every bad place gets its own one-line message naming the image and the place, and status 1; bad command lines status 2" {
	make_cli_disk
	run -1 nofuse "$IMGFS" ls "$PWD/missing.qcow2"
	assert_eq "$output" "imgfs: $PWD/missing.qcow2: No such file or directory"
	run -1 nofuse "$IMGFS" ls "$IMG" p9:/
	assert_eq "$output" "imgfs: $IMG: p9: no such partition (the disk has p1, p2, p3)"
	run -1 nofuse "$IMGFS" cat "$IMG" p1:/etc/nothing-here
	assert_eq "$output" "imgfs: $IMG: p1:/etc/nothing-here: No such file or directory"
	run -1 nofuse "$IMGFS" ls "$IMG" p1:/etc/hard-a/inside
	assert_eq "$output" "imgfs: $IMG: p1:/etc/hard-a/inside: Not a directory"
	run -1 nofuse "$IMGFS" cat "$IMG" p1:/etc
	assert_eq "$output" "imgfs: $IMG: p1:/etc: Is a directory"
	run -1 nofuse "$IMGFS" ls "$IMG" p3:/
	assert_eq "$output" "imgfs: $IMG: p3: no filesystem found"
	run -1 nofuse "$IMGFS" cat "$IMG" snapshots/nope/p1:/etc/os-release
	assert_eq "$output" "imgfs: $IMG: snapshots/nope/p1: no such snapshot (1 snapshot: imgfs ls $IMG snapshots)"
	run -1 nofuse "$IMGFS" cat "$IMG" lvm/vg0/root
	assert_eq "$output" "imgfs: $IMG: lvm/vg0/root: no such logical volume (0 found)"
	run -1 nofuse "$IMGFS" ls "$IMG" nothing
	assert_eq "$output" "imgfs: $IMG: nothing: no such block file (use disk, pN, lvm/VG/LV or snapshots/NAME/...)"
	run -1 nofuse "$IMGFS" tar "$IMG" p1
	assert_eq "$output" "imgfs: $IMG: p1: a block file, not a folder of files (use p1:/ for its files, or imgfs cat for its bytes)"
	run -2 nofuse "$IMGFS" cat "$IMG"
	assert_eq "$output" "imgfs cat: missing argument (usage: imgfs cat [OPTIONS] IMAGE PLACE)"
	run -2 nofuse "$IMGFS" ls --bogus "$IMG"
	assert_eq "$output" "imgfs ls: unknown option '--bogus' (usage: imgfs ls [-l] [-R] [OPTIONS] IMAGE [PLACE])"
	run -2 nofuse "$IMGFS" info -o backing=sometimes "$IMG"
	assert_eq "$output" "imgfs: unknown backing policy 'sometimes' (use local, follow or deny)"
	run -0 nofuse "$IMGFS" tar --help
	[[ ${lines[0]} == "Usage: imgfs tar [OPTIONS] IMAGE PLACE (a pax archive on stdout)" ]]
	# The image was only read.
	run -0 qemu-img check "$IMG"
}

@test "a ':' in a snapshot's name or in a guest file's name under files/ is part of the name, not a place's BLOCKFILE: end" {
	# Perl's man pages are named like File::Temp.3perl, and qemu-img
	# snapshot -c takes any name.
	mkdir -p colon/man3
	echo perl >'colon/man3/File::Temp.3perl'
	truncate -s 16M colon.img
	mkfs.ext4 -q -F -d colon colon.img
	qemu-img convert -f raw -O qcow2 colon.img "$IMG"
	qemu-img snapshot -c 'pre:update' "$IMG"
	run -0 nofuse "$IMGFS" cat "$IMG" 'files/disk/man3/File::Temp.3perl'
	assert_eq "$output" perl
	run -0 nofuse "$IMGFS" ls "$IMG" 'files/disk/man3/File::Temp.3perl'
	assert_eq "$output" 'File::Temp.3perl'
	run -0 nofuse "$IMGFS" ls "$IMG" 'snapshots/pre:update'
	assert_eq "$output" $'disk\nfiles'
	run -0 nofuse "$IMGFS" ls "$IMG" 'snapshots/pre:update/files'
	assert_eq "$output" disk
	run -0 nofuse "$IMGFS" ls "$IMG" 'snapshots/pre:update/files/disk/man3'
	assert_eq "$output" 'File::Temp.3perl'
	run -0 nofuse "$IMGFS" cat "$IMG" \
		'snapshots/pre:update/files/disk/man3/File::Temp.3perl'
	assert_eq "$output" perl
	run -0 nofuse "$IMGFS" cat "$IMG" 'snapshots/pre:update/disk:/man3/File::Temp.3perl'
	assert_eq "$output" perl
	run -1 nofuse "$IMGFS" cat "$IMG" 'snapshots/pre:update'
	assert_eq "$output" "imgfs: $IMG: snapshots/pre:update: a snapshot folder, not a block file (use snapshots/pre:update/disk or snapshots/pre:update/pN)"
}

@test "a closed stdout ends cat and tar quietly with a non-zero status" {
	make_cli_disk
	run -0 nofuse bash -c '"$1" cat "$2" p1 | head -c 10 >/dev/null; echo "${PIPESTATUS[0]}"' cat "$IMGFS" "$IMG"
	assert_eq "$output" 141
	run -0 nofuse bash -c '"$1" tar "$2" p1:/ 2>err | head -c 10 >/dev/null; echo "${PIPESTATUS[0]} $(cat err)"' tar "$IMGFS" "$IMG"
	assert_eq "$output" "141 "
}

@test "a damaged file in the middle of tar and cp is reported, the rest still comes out, and the status is 1" {
	require debugfs
	make_cli_disk
	# Corrupt the inode of usr/hard-c's neighbour big.bin: with
	# metadata_csum its checksum no longer matches.
	read -r blk off < <(debugfs -R "imap /usr/lib/big.bin" build/p1.img 2>/dev/null |
		awk '/located at block/ { gsub(",", ""); print $4, $6 }')
	bsize=$(debugfs -R stats build/p1.img 2>/dev/null | awk '/^Block size:/ { print $3 }')
	[[ -n $blk && -n $off && -n $bsize ]]
	printf '\xff' | dd of=build/gpt.raw bs=1 conv=notrunc status=none \
		seek=$((1024 * 1024 + blk * bsize + off + 4))
	qemu-img convert -f raw -O qcow2 build/gpt.raw "$IMG"
	as_user mkdir x
	run -1 nofuse bash -c 'set -o pipefail; "$1" tar "$2" p1:/ | tar -C x -xf -' tar "$IMGFS" "$IMG"
	[[ $output == "imgfs: $IMG: p1:/usr/lib/big.bin: "* ]]
	assert_eq "${#lines[@]}" 1
	cmp x/usr/lib/os-release src/usr/lib/os-release
	[[ ! -e x/usr/lib/big.bin ]]
	run -1 nofuse "$IMGFS" cp "$IMG" p1:/ "$PWD/y"
	[[ $output == "imgfs: $IMG: p1:/usr/lib/big.bin: "* ]]
	cmp y/usr/lib/os-release src/usr/lib/os-release
	cmp y/usr/lib/sparse.img src/usr/lib/sparse.img
}

@test "a full or read-only destination ends imgfs cp with one message and status 1" {
	require_root
	make_cli_disk
	as_user mkdir small ro
	run -1 unshare --mount --propagation private -- sh -c '
		mount -t tmpfs -o size=1M tmpfs small && chmod 777 small &&
		mount -t tmpfs -o ro tmpfs ro &&
		exec setpriv --reuid="$1" --regid="$1" --init-groups -- "$2" cp "$3" p1:/ small/copy' \
		cp "$IMGFS_TEST_USER" "$IMGFS" "$IMG"
	[[ $output == "imgfs: $IMG: p1:"*" -> small/copy/"*": No space left on device" ]]
	assert_eq "${#lines[@]}" 1
	run -1 unshare --mount --propagation private -- sh -c '
		mount -t tmpfs -o ro tmpfs ro &&
		exec setpriv --reuid="$1" --regid="$1" --init-groups -- "$2" cp "$3" p1:/ ro/copy' \
		cp "$IMGFS_TEST_USER" "$IMGFS" "$IMG"
	assert_eq "$output" "imgfs: $IMG: p1: -> ro/copy: Read-only file system"
}

@test "cp, tar and cat of a block file show a progress line when stderr is a terminal, and nothing otherwise" {
	require script
	make_cli_disk
	run -0 nofuse script -qec "$IMGFS cat $IMG p1 >p1.raw" /dev/null
	[[ $output == *"p1: 100% 24.0 MiB, "*"/s, 0:00 left"* ]]
	run -0 nofuse script -qec "$IMGFS cp $IMG p1:/usr $PWD/usr-copy" /dev/null
	[[ $output == *"p1:/usr: "*"MiB, "*"/s"* ]]
	run -0 nofuse script -qec "$IMGFS tar $IMG p1:/ >p1.tar" /dev/null
	[[ $output == *"p1:/: 100% "* ]]
	run -0 nofuse sh -c '"$1" cat "$2" p1 2>&1 >/dev/null' cat "$IMGFS" "$IMG"
	assert_eq "$output" ""
}

@test "run as root, cp and tar keep owners and device nodes; run as a user, cp reports each device node and leaves it out" {
	require_root
	mkdir -p dev-tree/dev dev-tree/home/user
	mknod dev-tree/dev/null c 1 3
	mknod dev-tree/dev/loop9 b 7 9
	echo "user's file" >dev-tree/home/user/notes
	chown -R 1234:2345 dev-tree/home/user
	mkfs_args=(-q -F -I 256 -d dev-tree)
	truncate -s 8M devfs.img
	mkfs.ext4 "${mkfs_args[@]}" devfs.img
	qemu-img convert -f raw -O qcow2 devfs.img "$IMG"

	run -0 "$IMGFS" cp "$IMG" disk:/ "$PWD/as-root"
	run -0 stat -c '%F %t:%T %u:%g %n' as-root/dev/null as-root/dev/loop9 as-root/home/user/notes
	assert_eq "$output" "character special file 1:3 0:0 as-root/dev/null
block special file 7:9 0:0 as-root/dev/loop9
regular file 0:0 1234:2345 as-root/home/user/notes"
	mkdir from-tar
	"$IMGFS" tar "$IMG" disk:/ | tar -C from-tar -xpf -
	run -0 stat -c '%F %t:%T %u:%g' from-tar/dev/null from-tar/home/user/notes
	assert_eq "$output" "character special file 1:3 0:0
regular file 0:0 1234:2345"

	run -1 nofuse "$IMGFS" cp "$IMG" disk:/ "$PWD/as-user"
	assert_eq "$output" "imgfs: $IMG: disk:/dev/loop9: device node 7:9 not copied (needs root)
imgfs: $IMG: disk:/dev/null: device node 1:3 not copied (needs root)"
	cmp as-user/home/user/notes dev-tree/home/user/notes
}
