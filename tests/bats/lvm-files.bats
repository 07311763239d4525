#!/usr/bin/env bats
# lvm-files.bats: ext4 filesystems inside LVM2 logical volumes (linear,
# in two segments, striped over three physical volumes), read through the
# mount (lvm/VG/LV, files/lvm/VG/LV/, snapshots/NAME/lvm/...) and through
# the commands without FUSE (imgfs ls|cat|cp|tar IMAGE lvm/VG/LV:PATH),
# and compared with the source tree and with the extents lvm2 reports.
#
# The disk is made once per file by root with the real lvm2 tools on loop
# devices (one per partition), never activated (this kernel has no
# device-mapper), with a private LVM_SYSTEM_DIR that sees only those loop
# devices. Each volume's bytes (an mkfs.ext4 -d image, mkswap, or a
# pattern) are written at the physical extents lvm2 itself reports
# (lvs --segments: seg_start, stripes, stripe_size, seg_pe_ranges; pvs:
# pe_start), by lv_put below. The loop devices are detached before any
# test runs.
#
#   GPT, 1 MiB-aligned: p1 2 MiB (no filesystem), p2 40 MiB, p3 and p4
#   20 MiB, all LVM PVs of vg0 (1 MiB extents):
#     root      16 MiB linear on p2, ext4 from ./src (label lvroot)
#     home       7 MiB on p2 in two segments (tmp lies between), ext4
#     tmp        2 MiB linear, a pattern
#     swap-vol   4 MiB linear, mkswap
#     data3     12 MiB striped over p2, p3, p4 (16 KiB stripes), ext4
#     data2      8 MiB striped over p3, p4 (256 KiB stripes), a pattern
#
# Copies of it get damaged metadata, a PV wiped, or volumes lvm2 cannot
# make without device-mapper (mirror, raid1, thin, cache, snapshot) in
# lvm2's own text format, with the checksums set right (mda_edit). One
# test makes its own whole-disk VG with hyphenated names.

bats_require_minimum_version 1.5.0

load helpers

ROOT_UUID=4f1e2d3c-5b6a-4798-8a9b-0c1d2e3f4a5b

# lv_map VG/LV: where lvm2 put the volume, one line per segment:
# "SEG_START_BYTES SEG_SIZE_BYTES STRIPE_BYTES DEV:FIRST_PE DEV:FIRST_PE..."
# (STRIPE_BYTES 0 for a linear segment). Needs the loop devices.
lv_map() {
	lvs --segments --noheadings --units b --nosuffix --separator '|' \
		-o seg_start,seg_size,stripes,stripe_size,seg_pe_ranges "$1" |
		sed 's/^ *//; s/ *| */|/g' | while IFS='|' read -r start size stripes ssize ranges; do
			((stripes > 1)) || ssize=0
			echo "$start $size $ssize $(sed 's/-[0-9]*//g; s/,/ /g' <<<"$ranges")"
		done
}

# lv_put RAW MAPFILE FILE: writes FILE (the volume's bytes) into RAW at
# the places MAPFILE (lv_map's lines with each DEV replaced by the byte
# offset of that PV's first extent in RAW, "OFFSET:FIRST_PE") says, with
# EXTENT_BYTES extents.
lv_put() {
	python3 - "$@" "$EXTENT_BYTES" <<-'PY'
		import sys
		raw, mapfile, src, ext = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
		data = open(src, "rb").read()
		with open(raw, "r+b") as out:
		    for line in open(mapfile):
		        f = line.split()
		        start, size, ssize = int(f[0]), int(f[1]), int(f[2])
		        legs = [tuple(int(x) for x in a.split(":")) for a in f[3:]]
		        if ssize == 0:
		            ssize = size
		        for o in range(0, size, ssize):
		            chunk = o // ssize
		            base, pe = legs[chunk % len(legs)]
		            row = chunk // len(legs)
		            out.seek(base + pe * ext + row * ssize)
		            out.write(data[start + o:start + o + ssize])
	PY
}

# pv_offsets MAPFILE: lv_map's lines with each loop device replaced by the
# offset in the disk of its PV's first extent (partition start + pe_start).
pv_offsets() {
	local dev pe_start
	cp "$1" "$1.tmp"
	for dev in "${!PART_OF[@]}"; do
		pe_start=$(pvs --noheadings --units b --nosuffix -o pe_start "$dev" | tr -d ' ')
		sed -i "s|$dev:|$((PART_OF[$dev] + pe_start)):|g" "$1.tmp"
	done
	mv "$1.tmp" "$1"
}

build_disk() {
	local d p lv
	declare -gA PART_OF

	make_src_tree src
	mkdir -p src/etc src2
	printf 'NAME="imgfs lvm"\n' >src/etc/os-release
	echo "the home volume" >src2/home.txt
	head -c 2500K /dev/urandom >src2/big.bin
	truncate -s 96M lvm.raw
	sfdisk -q lvm.raw <<-EOF2
		label: gpt
		start=2048, size=4096
		start=6144, size=81920, type=E6D6D379-F507-44C2-A23C-238F2A3DF928
		start=88064, size=40960, type=E6D6D379-F507-44C2-A23C-238F2A3DF928
		start=129024, size=40960, type=E6D6D379-F507-44C2-A23C-238F2A3DF928
	EOF2
	P2=$((6144 * 512))
	P3=$((88064 * 512))
	P4=$((129024 * 512))
	L2=$(losetup -f --show -o $P2 --sizelimit $((81920 * 512)) lvm.raw)
	L3=$(losetup -f --show -o $P3 --sizelimit $((40960 * 512)) lvm.raw)
	L4=$(losetup -f --show -o $P4 --sizelimit $((40960 * 512)) lvm.raw)
	PART_OF=([$L2]=$P2 [$L3]=$P3 [$L4]=$P4)
	lvm_conf "$L2" "$L3" "$L4"
	local q=(--driverloaded n -an -Zn -y -q)
	{
		pvcreate -q -y "$L2" "$L3" "$L4"
		vgcreate -q -s 1m vg0 "$L2"
		lvcreate "${q[@]}" -n root -L 16m vg0 "$L2"
		lvcreate "${q[@]}" -n home -L 3m vg0 "$L2"
		lvcreate "${q[@]}" -n tmp -L 2m vg0 "$L2"
		lvextend --driverloaded n -q -L +4m vg0/home "$L2"
		lvcreate "${q[@]}" -n swap-vol -L 4m vg0 "$L2"
		vgextend -q vg0 "$L3" "$L4"
		lvcreate "${q[@]}" -n data3 --type striped -i3 -I16k -L 12m vg0 "$L2" "$L3" "$L4"
		lvcreate "${q[@]}" -n data2 --type striped -i2 -I256k -L 8m vg0 "$L3" "$L4"
	} >lvm.log 2>&1
	EXTENT_BYTES=$(vgs --noheadings --units b --nosuffix -o vg_extent_size vg0 | tr -d ' ')
	for lv in root home tmp swap-vol data3 data2; do
		lv_map vg0/$lv >map.$lv
		pv_offsets map.$lv
	done
	pvs --noheadings -o pv_uuid "$L2" "$L3" "$L4" | tr -d ' ' >pv-uuids
	vgs --noheadings -o vg_uuid vg0 | tr -d ' ' >vg-uuid
	lvs --noheadings -o lv_uuid vg0/root | tr -d ' ' >root-lv-uuid
	losetup -d "$L2" "$L3" "$L4"
	echo "$EXTENT_BYTES" >extent-bytes

	truncate -s 16M root.img
	mkfs.ext4 -q -F -d src -L lvroot -U "$ROOT_UUID" -E root_owner=0:0 root.img
	truncate -s 7M home.img
	mkfs.ext4 -q -F -d src2 -E root_owner=0:0 home.img
	truncate -s 12M data3.img
	mkfs.ext4 -q -F -d src -E root_owner=0:0 data3.img
	pattern_bytes "the tmp volume" 2M >tmp.img
	truncate -s 4M swap-vol.img
	mkswap -q swap-vol.img >/dev/null
	pattern_bytes "the striped data2 volume" 8M >data2.img
	for lv in root home tmp swap-vol data3 data2; do
		lv_put lvm.raw map.$lv $lv.img
	done
	qemu-img convert -f raw -O qcow2 lvm.raw lvm.qcow2
}

setup_file() {
	[[ $EUID -eq 0 ]] || return 0
	command -v pvcreate >/dev/null || return 0
	export LVM_SUPPRESS_FD_WARNINGS=1
	cd "$BATS_FILE_TMPDIR"
	build_disk
	chmod -R a+rX "$BATS_FILE_TMPDIR"
}

teardown_file() {
	local d
	for d in $(losetup -j "$BATS_FILE_TMPDIR/lvm.raw" -O NAME -n 2>/dev/null); do
		losetup -d "$d"
	done
}

# A test that makes its own disk on a loop device detaches it here, also
# when it failed half-way.
teardown() {
	local d
	for d in $(losetup -j "$BATS_TEST_TMPDIR/whole.raw" -O NAME -n 2>/dev/null); do
		losetup -d "$d"
	done
	imgfs_teardown
}

setup() {
	imgfs_setup
	require_root
	require pvcreate python3 mkswap
	B=$BATS_FILE_TMPDIR
	[[ -f $B/lvm.qcow2 ]] || skip "the LVM disk could not be built"
	cp "$B/lvm.qcow2" "$IMG"
	EXTENT_BYTES=$(cat "$B/extent-bytes")
}

@test "every lvm/vg0/LV (linear, two segments, striped 3x16k and 2x256k) holds the bytes lvm2's extents hold, mounted and with imgfs cat" {
	mount_image -o ro
	run -0 as_user ls "$MNT/lvm/vg0"
	assert_eq "$output" "$(printf '%s\n' data2 data3 home root swap-vol tmp)"
	for lv in root home tmp swap-vol data3 data2; do
		assert_eq "$(as_user stat -c %s "$MNT/lvm/vg0/$lv")" "$(stat -c %s "$B/$lv.img")"
		as_user cmp "$MNT/lvm/vg0/$lv" "$B/$lv.img"
		nofuse sh -c '"$1" cat "$2" "lvm/vg0/$3" >"$3.out"' cat "$IMGFS" "$IMG" "$lv"
		cmp "$lv.out" "$B/$lv.img"
	done
	unmount_image
}

@test "imgfs ls, cat, cp and tar read the ext4 inside lvm/vg0/root, home and the striped data3 exactly as the source trees" {
	run -0 nofuse "$IMGFS" ls "$IMG" lvm/vg0/root:/docs
	assert_eq "$output" $'link-to-hello\nreadme.txt'
	run -0 nofuse "$IMGFS" ls "$IMG" files/lvm/vg0/root/data
	assert_eq "$output" $'empty\nrandom.bin'
	run -0 nofuse "$IMGFS" cat "$IMG" lvm/vg0/root:/docs/link-to-hello
	assert_eq "$output" "hello from imgfs"
	nofuse sh -c '"$1" cat "$2" lvm/vg0/data3:/data/random.bin >random.out' cat "$IMGFS" "$IMG"
	cmp random.out "$B/src/data/random.bin"
	nofuse sh -c '"$1" cat "$2" files/lvm/vg0/home/big.bin >big.out' cat "$IMGFS" "$IMG"
	cmp big.out "$B/src2/big.bin"
	for lv in root data3; do
		run -0 nofuse "$IMGFS" cp "$IMG" lvm/vg0/$lv:/ "$PWD/cp-$lv"
		assert_eq "$output" ""
		diff -r --no-dereference -x lost+found "$B/src" "cp-$lv"
		run -0 readlink "cp-$lv/docs/link-to-hello"
		assert_eq "$output" ../hello.txt
		as_user mkdir "tar-$lv"
		nofuse sh -c '"$1" tar "$2" lvm/vg0/$3:/ | tar -C "tar-$3" -xf -' tar "$IMGFS" "$IMG" "$lv"
		diff -r --no-dereference -x lost+found "$B/src" "tar-$lv"
	done
	run -0 nofuse "$IMGFS" cp "$IMG" files/lvm/vg0/home/ "$PWD/cp-home"
	diff -r -x lost+found "$B/src2" cp-home
	# A volume whose content is no filesystem imgfs reads says so.
	run -1 nofuse "$IMGFS" ls "$IMG" lvm/vg0/swap-vol:/
	assert_eq "$output" "imgfs: $IMG: lvm/vg0/swap-vol: no filesystem imgfs reads (swap)"
	run -1 nofuse "$IMGFS" ls "$IMG" lvm/vg0/data2:/
	assert_eq "$output" "imgfs: $IMG: lvm/vg0/data2: no filesystem found"
}

@test "files/lvm/vg0/ shows the volumes holding ext4 and their files equal the source trees" {
	mount_image -o ro
	run -0 as_user ls "$MNT/files/lvm/vg0"
	assert_eq "$output" "$(printf '%s\n' data3 home root)"
	as_user diff -r --no-dereference -x lost+found "$B/src" "$MNT/files/lvm/vg0/root"
	as_user diff -r --no-dereference -x lost+found "$B/src" "$MNT/files/lvm/vg0/data3"
	as_user diff -r -x lost+found "$B/src2" "$MNT/files/lvm/vg0/home"
	run -2 as_user ls "$MNT/files/lvm/vg0/swap-vol"
	unmount_image
}

@test "lvm/vg0/LV's xattrs name the filesystem inside as a partition's do, and info lists the PVs and each LV's filesystem, the same in the mount and imgfs info" {
	mount_image -o ro
	run -0 as_user getfattr --absolute-names -d -m '^user\.imgfs\.' "$MNT/lvm/vg0/root"
	assert_eq "$output" "# file: $MNT/lvm/vg0/root
user.imgfs.fstype=\"ext4\"
user.imgfs.label=\"lvroot\"
user.imgfs.lvuuid=\"$(cat "$B/root-lv-uuid")\"
user.imgfs.segtype=\"linear\"
user.imgfs.uuid=\"$ROOT_UUID\"
user.imgfs.vg=\"vg0\"
user.imgfs.vguuid=\"$(cat "$B/vg-uuid")\""
	run -0 as_user getfattr --absolute-names -n user.imgfs.fstype --only-values "$MNT/lvm/vg0/swap-vol"
	assert_eq "$output" swap
	run -0 as_user getfattr --absolute-names -n user.imgfs.segtype --only-values "$MNT/lvm/vg0/data3"
	assert_eq "$output" striped
	run -1 as_user getfattr --absolute-names -n user.imgfs.fstype "$MNT/lvm/vg0/data2"
	as_user cat "$MNT/info" >mount.info
	unmount_image
	nofuse "$IMGFS" info "$IMG" >cli.info
	run -0 awk '$1 == "physical-volumes", NF == 0' mount.info
	local uuids=($(cat "$B/pv-uuids"))
	assert_eq "$output" "physical-volumes 3
VG UUID FILE SIZE NOTE
vg0 ${uuids[0]} p2 $((81920 * 512)) -
vg0 ${uuids[1]} p3 $((40960 * 512)) -
vg0 ${uuids[2]} p4 $((40960 * 512)) -"
	# Each volume's row: file, size, segment types, then the filesystem
	# (type, label, UUID) as for a partition.
	run -0 grep -c '^lvm/' mount.info
	assert_eq "$output" 6
	run -0 awk '/^FILE SIZE SEGMENTS / || /^lvm\// { print $1, $2, $3, $5, $6, $7 }' mount.info
	assert_eq "$output" "FILE SIZE SEGMENTS FSTYPE LABEL FSUUID
lvm/vg0/data2 $((8 << 20)) striped - - -
lvm/vg0/data3 $((12 << 20)) striped ext4 - $(blkid -o value -s UUID "$B/data3.img")
lvm/vg0/home $((7 << 20)) linear ext4 - $(blkid -o value -s UUID "$B/home.img")
lvm/vg0/root $((16 << 20)) linear ext4 lvroot $ROOT_UUID
lvm/vg0/swap-vol $((4 << 20)) linear swap - $(blkid -o value -s UUID "$B/swap-vol.img")
lvm/vg0/tmp $((2 << 20)) linear - - -"
	run -0 grep '^lvm/vg0/root ' mount.info
	assert_eq "$output" "lvm/vg0/root $((16 << 20)) linear $(cat "$B/root-lv-uuid") ext4 lvroot $ROOT_UUID -"
	run -0 grep '^files/lvm/' mount.info
	assert_eq "$output" "files/lvm/vg0/data2 no no filesystem found
files/lvm/vg0/data3 yes -
files/lvm/vg0/home yes -
files/lvm/vg0/root yes -
files/lvm/vg0/swap-vol no no filesystem imgfs reads (swap)
files/lvm/vg0/tmp no no filesystem found"
	# The command prints the same rows as the mount (the image lines
	# differ only where a mount and a read-only command do).
	diff <(sed -n '/^files /,$p' mount.info) <(sed -n '/^files /,$p' cli.info)
	nofuse "$IMGFS" info --json "$IMG" >info.json
	run -0 jq -r '(.physical_volumes[] | "\(.file):\(.missing)"),
		(.logical_volumes[] | "\(.name):\(.fs_type):\(.fs_label):\(.files)")' info.json
	assert_eq "$output" "p2:false
p3:false
p4:false
data2:null:null:false
data3:ext4:null:true
home:ext4:null:true
root:ext4:lvroot:true
swap-vol:swap:null:false
tmp:null:null:false"
}

@test "with p4's PV gone, info names its UUID as missing and shows only the volumes wholly on p2 and p3" {
	qemu-img convert -O raw "$IMG" gone.raw
	# p4's label and metadata: blkid no longer calls it LVM2_member.
	dd if=/dev/zero of=gone.raw bs=1M seek=$((129024 * 512 >> 20)) count=1 conv=notrunc status=none
	qemu-img convert -f raw -O qcow2 gone.raw "$IMG"
	mount_image -o ro
	run -0 as_user ls "$MNT/lvm/vg0"
	assert_eq "$output" "$(printf '%s\n' home root swap-vol tmp)"
	as_user cmp "$MNT/lvm/vg0/home" "$B/home.img"
	local uuids=($(cat "$B/pv-uuids"))
	as_user cat "$MNT/info" >mount.info
	run -0 grep "^vg0 ${uuids[2]} " mount.info
	assert_eq "$output" "vg0 ${uuids[2]} - $((40960 * 512)) missing"
	run -0 grep '^lvm/vg0/data[23] ' mount.info
	[[ ${lines[0]} == *" physical volume ${uuids[2]} is missing" ]]
	[[ ${lines[1]} == *" physical volume ${uuids[2]} is missing" ]]
	unmount_image
	run -1 nofuse "$IMGFS" cat "$IMG" lvm/vg0/data3
	assert_eq "$output" "imgfs: $IMG: lvm/vg0/data3: physical volume ${uuids[2]} is missing"
}

# mda_edit RAW PART_OFFSET... -- PYTHON: in every PV at PART_OFFSET of RAW,
# replaces the current metadata text t (bytes, its NUL cut) by the value
# of PYTHON, and sets the checksums lvm2 checks right again (text and
# header) unless BAD_CRC=1, when the text's stays that of the old text.
mda_edit() {
	python3 - "$@" <<-'PY'
		import os, struct, sys, zlib
		args = sys.argv[1:]
		sep = args.index("--")
		raw, offs, expr = args[0], [int(a) for a in args[1:sep]], args[sep + 1]
		def lvm_crc(data):
		    # CRC-32, reflected 0xedb88320, from 0xf597a6cf, no final xor.
		    return ~zlib.crc32(data, ~0xf597a6cf & 0xffffffff) & 0xffffffff
		with open(raw, "r+b") as f:
		    for part in offs:
		        mda = part + 4096
		        f.seek(mda)
		        h = bytearray(f.read(512))
		        assert h[4:20] == b" LVM2 x[5A%r0N*>"
		        size, roff, rsize, rcrc = struct.unpack_from("<QQQI", h, 32)
		        assert roff + rsize <= size, "the test expects an unwrapped text"
		        f.seek(mda + roff)
		        t = f.read(rsize).rstrip(b"\0")
		        new = eval(expr) + b"\0"
		        f.seek(mda + roff)
		        f.write(new)
		        crc = rcrc if os.environ.get("BAD_CRC") == "1" else lvm_crc(new)
		        struct.pack_into("<QI", h, 48, len(new), crc)
		        struct.pack_into("<I", h, 0, lvm_crc(bytes(h[4:])))
		        f.seek(mda)
		        f.write(h)
	PY
}

@test "damaged metadata on every PV (checksum off, garbage text, a segment past the end, overlapping extents) gives one line in info, and nothing crashes" {
	local parts=($((6144 * 512)) $((88064 * 512)) $((129024 * 512)))
	local uuids=($(cat "$B/pv-uuids"))
	qemu-img convert -O raw "$IMG" good.raw
	# One copy damaged: the others (the same seqno on p3 and p4) win.
	cp good.raw bad.raw
	BAD_CRC=1 mda_edit bad.raw "${parts[0]}" -- 't.replace(b"creation_host = \"", b"creation_host = \"x", 1)'
	run -0 nofuse "$IMGFS" info bad.raw
	run -0 grep "^vg0 $(cat "$B/vg-uuid") " <<<"$output"
	[[ $output == *" $((1 << 20)) -" ]]
	nofuse sh -c '"$1" cat "$2" lvm/vg0/root >root.out' cat "$IMGFS" bad.raw
	cmp root.out "$B/root.img"

	cp good.raw bad.raw
	BAD_CRC=1 mda_edit bad.raw "${parts[@]}" -- 't.replace(b"creation_host = \"", b"creation_host = \"x", 1)'
	run -0 nofuse "$IMGFS" info bad.raw
	run -0 grep -A1 '^VG UUID SEQNO' <<<"$output"
	[[ ${lines[1]} =~ ^vg0\ $(cat "$B/vg-uuid")\ 0\ 0\ p[234]:\ metadata\ text\ of\ VG\ vg0\ has\ a\ bad\ checksum\ \(0x[0-9a-f]{8},\ computed\ 0x[0-9a-f]{8}\)$ ]]
	run -1 nofuse "$IMGFS" cat bad.raw lvm/vg0/root
	assert_eq "$output" "imgfs: bad.raw: lvm/vg0/root: no such logical volume (0 found)"

	cp good.raw bad.raw
	mda_edit bad.raw "${parts[@]}" -- 'b"vg0 {\n id = \"x\"\n seqno = ]\n"'
	run -0 nofuse "$IMGFS" info bad.raw
	run -0 grep -A1 '^VG UUID SEQNO' <<<"$output"
	[[ ${lines[1]} == *"line 3: expected a value"* ]]

	# root's first extent moved past p2's last one.
	cp good.raw bad.raw
	mda_edit bad.raw "${parts[@]}" -- 't[:t.index(b"root {")] + t[t.index(b"root {"):].replace(b"\"pv0\", 0", b"\"pv0\", 900", 1)'
	cp bad.raw "$IMG"
	mount_image -o ro
	run -0 as_user ls "$MNT/lvm/vg0"
	assert_eq "$output" "$(printf '%s\n' data2 data3 home swap-vol tmp)"
	as_user cat "$MNT/info" >mount.info
	run -0 grep '^lvm/vg0/root ' mount.info
	[[ $output == *" segment 1 lies past the end of physical volume ${uuids[0]}"* ]]
	unmount_image

	# root moved onto extents 16-31 of p2, which home, tmp, swap-vol and
	# data3 hold: all of them refused, data2 (on p3 and p4) shown.
	cp good.raw bad.raw
	mda_edit bad.raw "${parts[@]}" -- 't[:t.index(b"root {")] + t[t.index(b"root {"):].replace(b"\"pv0\", 0", b"\"pv0\", 16", 1)'
	run -0 nofuse "$IMGFS" info bad.raw
	run -0 grep '^lvm/vg0/\(root\|home\) ' <<<"$output"
	[[ ${lines[0]} == "lvm/vg0/home $((7 << 20)) linear "*" - - - extents 16-18 of physical volume ${uuids[0]} belong to both root and home" ]]
	[[ ${lines[1]} == "lvm/vg0/root $((16 << 20)) linear "*" - - - extents 16-18 of physical volume ${uuids[0]} belong to both root and home" ]]
	run -0 nofuse "$IMGFS" info bad.raw
	run -0 grep '^lvm/vg0/tmp ' <<<"$output"
	[[ $output == *" extents 19-20 of physical volume ${uuids[0]} belong to both root and tmp" ]]
	run -0 nofuse "$IMGFS" ls bad.raw lvm/vg0
	assert_eq "$output" data2
}

@test "a mirror and a raid1 volume read from their first leg; thin, cache and snapshot volumes are listed in info as not supported" {
	local uuids=($(cat "$B/pv-uuids")) p3 leg
	qemu-img convert -O raw "$IMG" hand.raw
	# data2's first stripe is on p3: "OFFSET:PE" of p3's extent 0.
	read -r _ _ _ leg _ <"$B/map.data2"
	p3=${leg%%:*}
	pattern_bytes "mirror leg 0" $((2 * EXTENT_BYTES)) >leg0.bin
	pattern_bytes "raid1 image 0" $((2 * EXTENT_BYTES)) >rimage0.bin
	put_file hand.raw $((p3 + 10 * EXTENT_BYTES)) leg0.bin
	put_file hand.raw $((p3 + 12 * EXTENT_BYTES)) rimage0.bin
	# Volumes lvm2 cannot make without device-mapper, in its text format,
	# on free extents of p3 and p4 (pv1 and pv2 of vg0).
	cat >lvs.txt <<-'EOF2'
		m { id = "mmmmmm-0000-0000-0000-0000-0000-000001" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1
		 segment1 { start_extent = 0 extent_count = 2 type = "mirror" mirror_count = 2 mirrors = [ "m_mimage_0", 0, "m_mimage_1", 0 ] } }
		m_mimage_0 { id = "mmmmmm-0000-0000-0000-0000-0000-000002" status = ["READ", "WRITE"] segment_count = 1
		 segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = [ "pv1", 10 ] } }
		m_mimage_1 { id = "mmmmmm-0000-0000-0000-0000-0000-000003" status = ["READ", "WRITE"] segment_count = 1
		 segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = [ "pv2", 10 ] } }
		r { id = "rrrrrr-0000-0000-0000-0000-0000-000001" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1
		 segment1 { start_extent = 0 extent_count = 2 type = "raid1" device_count = 2 raids = [ "r_rmeta_0", "r_rimage_0", "r_rmeta_1", "r_rimage_1" ] } }
		r_rimage_0 { id = "rrrrrr-0000-0000-0000-0000-0000-000002" status = ["READ", "WRITE"] segment_count = 1
		 segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = [ "pv1", 12 ] } }
		r_rimage_1 { id = "rrrrrr-0000-0000-0000-0000-0000-000003" status = ["READ", "WRITE"] segment_count = 1
		 segment1 { start_extent = 0 extent_count = 2 type = "striped" stripe_count = 1 stripes = [ "pv2", 12 ] } }
		thin1 { id = "tttttt-0000-0000-0000-0000-0000-000001" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1
		 segment1 { start_extent = 0 extent_count = 1 type = "thin" thin_pool = "pool" transaction_id = 0 device_id = 1 } }
		cached { id = "cccccc-0000-0000-0000-0000-0000-000001" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1
		 segment1 { start_extent = 0 extent_count = 1 type = "cache" cache_pool = "cpool" origin = "corig" } }
		snap { id = "ssssss-0000-0000-0000-0000-0000-000001" status = ["READ", "VISIBLE"] segment_count = 1
		 segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1 stripes = [ "pv2", 14 ] } }
		snapshot0 { id = "ssssss-0000-0000-0000-0000-0000-000002" status = ["READ"] segment_count = 1
		 segment1 { start_extent = 0 extent_count = 1 type = "snapshot" chunk_size = 8 origin = "root" cow_store = "snap" } }
	EOF2
	mda_edit hand.raw $((6144 * 512)) $((88064 * 512)) $((129024 * 512)) -- \
		't.replace(b"logical_volumes {", b"logical_volumes {\n" + open("lvs.txt", "rb").read(), 1)'
	cp hand.raw "$IMG"
	mount_image -o ro
	run -0 as_user ls "$MNT/lvm/vg0"
	assert_eq "$output" "$(printf '%s\n' data2 data3 home m r root swap-vol tmp)"
	as_user cmp "$MNT/lvm/vg0/m" leg0.bin
	as_user cmp "$MNT/lvm/vg0/r" rimage0.bin
	as_user cmp "$MNT/lvm/vg0/root" "$B/root.img"
	run -0 as_user getfattr --absolute-names -n user.imgfs.segtype --only-values "$MNT/lvm/vg0/m"
	assert_eq "$output" mirror
	as_user cat "$MNT/info" >mount.info
	unmount_image
	# UNREADABLE is the eighth column, to the end of the row.
	run -0 sh -c "grep -E '^lvm/vg0/(cached|snap|thin1) ' mount.info | cut -d' ' -f1,8-"
	assert_eq "$output" "lvm/vg0/cached cache volumes are not supported
lvm/vg0/snap snapshot volumes are not supported
lvm/vg0/thin1 thin volumes are not supported"
	nofuse sh -c '"$1" cat "$2" lvm/vg0/m >m.out' cat "$IMGFS" "$IMG"
	cmp m.out leg0.bin
	run -1 nofuse "$IMGFS" cat "$IMG" lvm/vg0/thin1
	assert_eq "$output" "imgfs: $IMG: lvm/vg0/thin1: thin volumes are not supported"
}

@test "a write through lvm/vg0/home (two segments) lands at the extents lvm2 reports and nowhere else in the whole image" {
	qemu-img convert -O raw "$IMG" before.raw
	pattern_bytes "rewritten home" 7M >newhome.img
	mount_image
	as_user dd if=newhome.img of="$MNT/lvm/vg0/home" bs=64k conv=notrunc,fsync status=none
	as_user cmp "$MNT/lvm/vg0/home" newhome.img
	as_user cmp "$MNT/lvm/vg0/root" "$B/root.img"
	as_user cmp "$MNT/lvm/vg0/tmp" "$B/tmp.img"
	run -1 as_user dd if=newhome.img of="$MNT/lvm/vg0/home" bs=1 count=1 seek=$((7 << 20)) conv=notrunc,fsync status=none
	unmount_image
	run -0 qemu-img check "$IMG"
	qemu-img convert -O raw "$IMG" after.raw
	lv_put before.raw "$B/map.home" newhome.img
	cmp before.raw after.raw
}

@test "lvm/vg0/LV stays coherent with disk and pN: a write through one is read through the others at once" {
	mount_image
	local home_off tmp_off
	# home's first segment: its first extent, in the disk and in p2.
	read -r _ _ _ first <"$B/map.home"
	home_off=$(( ${first%%:*} + ${first##*:} * EXTENT_BYTES ))
	pattern_bytes "through p2" 64K >via-p2.bin
	as_user dd if=via-p2.bin of="$MNT/p2" bs=64k seek=$((home_off - 6144 * 512)) oflag=seek_bytes conv=notrunc status=none
	as_user dd if="$MNT/lvm/vg0/home" of=back.bin bs=64k count=1 status=none
	cmp back.bin via-p2.bin
	read -r _ _ _ first <"$B/map.tmp"
	tmp_off=$(( ${first%%:*} + ${first##*:} * EXTENT_BYTES ))
	pattern_bytes "through the volume" 64K >via-lv.bin
	as_user dd if=via-lv.bin of="$MNT/lvm/vg0/tmp" bs=64k seek=1 conv=notrunc status=none
	as_user dd if="$MNT/disk" of=back2.bin bs=64k skip=$((tmp_off + 65536)) iflag=skip_bytes count=1 status=none
	cmp back2.bin via-lv.bin
	as_user dd if="$MNT/p2" of=back3.bin bs=64k skip=$((tmp_off + 65536 - 6144 * 512)) iflag=skip_bytes count=1 status=none
	cmp back3.bin via-lv.bin
	unmount_image
}

@test "snapshots/NAME/lvm/vg0/LV and its files show the volumes as they were when the snapshot was taken" {
	local swap_off first
	read -r _ _ _ first <"$B/map.swap-vol"
	swap_off=$(( ${first%%:*} + ${first##*:} * EXTENT_BYTES ))
	qemu-img snapshot -c installed "$IMG"
	qemu-io -f qcow2 -c "write -P 0x5a $swap_off 1M" "$IMG" >/dev/null
	mount_image -o ro
	as_user cmp "$MNT/snapshots/installed/lvm/vg0/swap-vol" "$B/swap-vol.img"
	run -1 as_user cmp -s "$MNT/lvm/vg0/swap-vol" "$B/swap-vol.img"
	as_user cmp "$MNT/snapshots/installed/lvm/vg0/data3" "$B/data3.img"
	as_user diff -r --no-dereference -x lost+found "$B/src" "$MNT/snapshots/installed/files/lvm/vg0/root"
	unmount_image
	nofuse sh -c '"$1" cat "$2" snapshots/installed/lvm/vg0/swap-vol >snap-swap.out' cat "$IMGFS" "$IMG"
	cmp snap-swap.out "$B/swap-vol.img"
	run -0 nofuse "$IMGFS" cat "$IMG" snapshots/installed/lvm/vg0/root:/etc/os-release
	assert_eq "$output" 'NAME="imgfs lvm"'
}

@test "a VG on a whole disk with hyphens in its names shows them as lvm2 names them, not as device-mapper doubles them" {
	local loop map
	truncate -s 16M whole.raw
	loop=$(losetup -f --show whole.raw)
	lvm_conf "$loop"
	{
		pvcreate -q -y "$loop"
		vgcreate -q -s 1m my-vg "$loop"
		lvcreate --driverloaded n -an -Zn -y -q -n data-1 -L 4m my-vg
		lvcreate --driverloaded n -an -Zn -y -q -n a--b -L 2m my-vg
	} >lvm.log 2>&1
	declare -gA PART_OF=([$loop]=0)
	for lv in data-1 a--b; do
		lv_map "my-vg/$lv" >"map.$lv"
		pv_offsets "map.$lv"
	done
	losetup -d "$loop"
	pattern_bytes "hyphenated data-1" 4M >data-1.img
	pattern_bytes "doubled a--b" 2M >a--b.img
	lv_put whole.raw map.data-1 data-1.img
	lv_put whole.raw map.a--b a--b.img
	qemu-img convert -f raw -O qcow2 whole.raw "$IMG"
	mount_image -o ro
	run -0 as_user ls "$MNT/lvm" "$MNT/lvm/my-vg"
	assert_eq "$output" "$(printf '%s\n' "$MNT/lvm:" my-vg "" "$MNT/lvm/my-vg:" a--b data-1)"
	as_user cmp "$MNT/lvm/my-vg/data-1" data-1.img
	as_user cmp "$MNT/lvm/my-vg/a--b" a--b.img
	run -0 as_user getfattr --absolute-names -n user.imgfs.vg --only-values "$MNT/lvm/my-vg/a--b"
	assert_eq "$output" my-vg
	unmount_image
	run -0 nofuse "$IMGFS" ls "$IMG" lvm/my-vg
	assert_eq "$output" $'a--b\ndata-1'
	nofuse sh -c '"$1" cat "$2" lvm/my-vg/a--b >ab.out' cat "$IMGFS" "$IMG"
	cmp ab.out a--b.img
}
