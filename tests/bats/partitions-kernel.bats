#!/usr/bin/env bats
# partitions-kernel.bats: tables libfdisk does not read and the kernel does
# (an Atari root sector, BSD slices nested in an MBR partition) show the
# partitions partx lists, with partx's numbers and bytes.

bats_require_minimum_version 1.5.0

load helpers

# assert_partx_bytes DIR RAW: every partition partx lists for RAW is DIR/pN
# with RAW's bytes of that range, and DIR has no other pN.
assert_partx_bytes() {
	local dir=$1 raw=$2 n start sectors want= have

	while read -r n start sectors; do
		want+="p$n "
		extract "$raw" $((start * 512)) $((sectors * 512)) want.raw
		assert_eq "$(as_user stat -c %s "$dir/p$n")" $((sectors * 512))
		as_user cmp "$dir/p$n" want.raw
		rm -f want.raw
	done < <(partx --show --noheadings --output NR,START,SECTORS "$raw")
	have=$(as_user ls "$dir" | grep -x 'p[0-9]*' | sort -V | tr '\n' ' ')
	assert_eq "$have" "$want"
}

# A 16 MiB Atari disk: BGM 64+8192 and LNX 8256+16384 (ext4), each
# partition's first bytes marked.
make_atari() {
	truncate -s 16M "$1"
	python3 - "$1" <<'PY'
import struct, sys
r = bytearray(4 + 12 * 4)
struct.pack_into('>I', r, 0, 32768)
struct.pack_into('>B3sII', r, 4, 1, b'BGM', 64, 8192)
struct.pack_into('>B3sII', r, 16, 1, b'LNX', 8256, 16384)
with open(sys.argv[1], 'r+b') as f:
    f.seek(0x1C2); f.write(r)
    f.seek(64 * 512); f.write(b'imgfs atari p1')
PY
	mkfs.ext4 -q -F -E offset=$((8256 * 512)) -L atari2 "$1" 8M
}

# A 32 MiB MBR disk: p1 (0x83) and p2 (0xa5) holding a BSD disklabel at
# its sector 1 with slices 8192+4096 and 12288+16384 (absolute sectors).
make_mbr_bsd() {
	truncate -s 32M "$1"
	printf 'label: dos\nstart=2048, size=2048, type=83\nstart=8192, size=24576, type=a5\n' |
		sfdisk -q "$1"
	python3 - "$1" <<'PY'
import struct, sys
l = bytearray(148 + 16 * 2)
struct.pack_into('<I', l, 0, 0x82564557)
struct.pack_into('<I', l, 132, 0x82564557)
struct.pack_into('<H', l, 138, 2)
struct.pack_into('<IIIBBH', l, 148, 4096, 8192, 0, 7, 0, 0)
struct.pack_into('<IIIBBH', l, 164, 16384, 12288, 0, 7, 0, 0)
c = 0
for i in range(0, len(l), 2):
    c ^= struct.unpack_from('<H', l, i)[0]
struct.pack_into('<H', l, 136, c)
with open(sys.argv[1], 'r+b') as f:
    f.seek(8193 * 512); f.write(l)
    f.seek(8192 * 512 + 4096); f.write(b'imgfs bsd p5')
PY
	mkfs.ext4 -q -F -E offset=$((12288 * 512)) -L bsd6 "$1" 8M
}

@test "an Atari disk in a qcow2 shows p1 and p2 with the bytes partx gives, in the mount and in imgfs ls" {
	require partx python3 mkfs.ext4
	make_atari atari.raw
	run -0 partx --show --noheadings --output NR,START,SECTORS atari.raw
	assert_eq "$(echo $output)" "1 64 8192 2 8256 16384"
	qemu-img convert -f raw -O qcow2 atari.raw "$IMG"
	run -0 "$IMGFS" ls "$IMG"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\nsnapshots'
	mount_image
	assert_partx_bytes "$MNT" atari.raw
	run -0 as_user head -c 14 "$MNT/p1"
	assert_eq "$output" "imgfs atari p1"
	run -0 as_user grep -c 'atari' "$MNT/info"
	unmount_image
}

@test "BSD slices inside an MBR partition show as p5 and p6 with the bytes partx gives, in the mount and in imgfs ls" {
	require partx python3 mkfs.ext4
	make_mbr_bsd bsd.raw
	run -0 partx --show --noheadings --output NR,START,SECTORS bsd.raw
	assert_eq "$(echo $output)" "1 2048 2048 2 8192 24576 5 8192 4096 6 12288 16384"
	qemu-img convert -f raw -O qcow2 bsd.raw "$IMG"
	run -0 "$IMGFS" ls "$IMG"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\np5\np6\nsnapshots'
	mount_image
	assert_partx_bytes "$MNT" bsd.raw
	run -0 as_user dd if="$MNT/p5" bs=1 skip=4096 count=12 status=none
	assert_eq "$output" "imgfs bsd p5"
	run -0 as_user blkid -p -o export "$MNT/p6"
	[[ $output == *$'\nLABEL=bsd6\n'* ]]
	unmount_image
}
