#!/bin/sh
# make-corpus.sh OUTDIR [KIND]: seed corpus for the fuzz targets.
#
# KIND qcow2 (the default; fuzz-qcow2, fuzz-probe, fuzz-virtq): small
# qcow2 images from qemu-img and qemu-io across the format's options
# (cluster sizes, refcount widths, compat levels, extended L2, zlib and
# zstd compression, zero clusters, internal snapshots, a backing name and
# format, lazy refcounts, a dirty bit), each with a little data written so
# the L2 tables, refcount blocks and compressed clusters are populated.
# Images are kept small (mostly 512 B to 4 KiB clusters, 1-8 MiB virtual)
# because libFuzzer mutates whole files: big seeds mean slow executions.
# The backing file named in the header need not exist: the targets open
# with backing=deny, which refuses it before looking.
#
# KIND qcow2-write (fuzz-qcow2-write): the qcow2 seeds, each followed by
# a few op scripts (seed-tool.py write-ops): mixed odd and whole-cluster
# writes with snapshots, 1 MiB runs, and writes across cluster edges.
# Images over 512 KiB are left out (run.sh's -max_len).
#
# KIND partition (fuzz-partition): disks partitioned by sfdisk (fdisk -b
# 4096 for a 4Kn GPT, which sfdisk cannot make on a file), a few then
# broken on purpose (an EBR chain that loops, GPT headers with a bad CRC
# or claiming huge entry arrays, a missing backup), packed by
# seed-tool.py into the target's sparse-disk form.
#
# KIND vhost-user (fuzz-vhost-user): the message sequences a front end
# sends to bring a vhost-user-blk device up, written by seed-tool.py.
#
# KIND vhdx (fuzz-vhdx): small qemu-img VHDX images (dynamic with 1, 8
# and 32 MiB blocks, log sizes, block_state_zero off, fixed, an odd
# size), a few sectors of data each, plus a log to replay and a
# differencing child (vhdx-seeds.py); packed by seed-tool.py into the
# target's sparse-file form (a VHDX is MiBs of mostly zeroes), with the
# target's CRC-fixing flag and without.
#
# KIND fat (fuzz-fsys-fat): FAT12, FAT16 and FAT32 filesystems from
# mkfs.fat with a few files (long, unicode and 8.3 lowercase names, a
# subdirectory, a multi-cluster file) copied in by mcopy; FAT16 and FAT32
# need thousands of clusters, so those images are cut after their first
# files (the target pads an input with zeroes to the size it claims).
#
# KIND vpc (fuzz-vpc) and vdi (fuzz-vdi): small VHD and VDI images from
# qemu-img and qemu-io (fixed, dynamic, force_size; dynamic and static
# VDI), and, since qemu-img's 2 MiB VHD and 1 MiB VDI blocks make files
# too large for libFuzzer, the same images with their block size cut to
# 4 KiB (tables rewritten to match), plus differencing VHDs with W2ru,
# W2ku and MacX locators (vpc-vdi-seeds.py).
#
# KIND vmdk (fuzz-vmdk, fuzz-ova): small qemu-img VMDKs (sparse, zeroed
# grains, compat6, a child naming a parent, descriptors of flat and 2 GB
# extent sets, streamOptimized with the directory in the header or in a
# footer), an ESX sparse (COWD) extent and OVA archives holding a stream
# disk.
set -eu

out=${1:?usage: make-corpus.sh OUTDIR [qcow2|qcow2-write|partition|vhost-user|vpc|vdi|vmdk]}
kind=${2:-qcow2}
src=$(cd "$(dirname "$0")/../.." && pwd)
tool="python3 $src/tests/fuzz/seed-tool.py"
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case $kind in
qcow2) ;;
qcow2-write)
	rc=0
	"$0" "$tmp/qcow2" qcow2 >/dev/null || rc=$?
	[ $rc = 0 ] || exit $rc
	find "$tmp/qcow2" -type f -size +512k -delete
	$tool write-ops "$tmp/qcow2" "$out"
	echo "make-corpus.sh: $(ls "$out" | wc -l) seeds in $out"
	exit 0 ;;
vmdk)
	command -v qemu-img >/dev/null || { echo "make-corpus.sh: qemu-img missing" >&2; exit 77; }
	# vseed NAME SIZE OPTIONS [QEMU_IO_COMMANDS...]: a qemu-img vmdk.
	vseed() {
		n=$1 sz=$2 o=$3
		shift 3
		qemu-img create -q -f vmdk ${o:+-o "$o"} "$tmp/$n.vmdk" "$sz"
		for c in "$@"; do
			qemu-io -f vmdk -c "$c" "$tmp/$n.vmdk" >/dev/null
		done
		cp "$tmp/$n.vmdk" "$out/$n"
	}
	w1='write -P 0x5a 0 3k'
	w2='write -P 0xa5 1M 64k'
	vseed sparse 2M "" "$w1" "$w2"
	vseed sparse-zero 2M zeroed_grain=on "$w1" 'write -z 512k 128k'
	vseed sparse-compat6 1M compat6=on,adapter_type=lsilogic "$w1"
	vseed sparse-parent 1M "" "$w1"
	qemu-img create -q -f vmdk -b sparse.vmdk -F vmdk "$tmp/child.vmdk" 2M
	cp "$tmp/child.vmdk" "$out/child"
	# Descriptors (their extent files are refused by backing=deny).
	qemu-img create -q -f vmdk -o subformat=monolithicFlat "$tmp/flat.vmdk" 1M
	cp "$tmp/flat.vmdk" "$out/desc-flat"
	qemu-img create -q -f vmdk -o subformat=twoGbMaxExtentSparse "$tmp/two.vmdk" 5G
	cp "$tmp/two.vmdk" "$out/desc-two-gb"
	printf '# Disk DescriptorFile\r\nversion=1\r\nRW 8 ZERO\r\nRDONLY 8 FLAT "a" 2\r\nNOACCESS 1 ZERO\r\n' >"$out/desc-mixed"
	# streamOptimized from mixed content; the same with the grain
	# directory moved to a footer as VMware writes it.
	seq 1 30000 >"$tmp/mix.raw"
	head -c 20k /dev/urandom >>"$tmp/mix.raw"
	truncate -s 1M "$tmp/mix.raw"
	qemu-img convert -q -f raw -O vmdk -o subformat=streamOptimized \
		"$tmp/mix.raw" "$tmp/so.vmdk"
	cp "$tmp/so.vmdk" "$out/stream"
	python3 - "$tmp/so.vmdk" "$out/stream-footer" <<'PY'
import struct, sys
b = bytearray(open(sys.argv[1], 'rb').read())
b += bytes(-len(b) % 512)
hdr = bytearray(b[:512])
b[56:64] = struct.pack('<Q', 0xffffffffffffffff)
b += struct.pack('<QII', 1, 0, 3) + bytes(496) + hdr + bytes(512)
open(sys.argv[2], 'wb').write(b)
PY
	# An ESX sparse (COWD) extent: 8 KiB grains, one 4096-entry table.
	python3 - "$out/cowd" <<'PY'
import struct, sys
f = bytearray(60 * 512)
f[0:28] = b'COWD' + struct.pack('<6I', 1, 3, 2048, 16, 4, 1)
f[4 * 512:4 * 512 + 4] = struct.pack('<I', 8)
for i, g in enumerate((0, 7, 100)):
    f[8 * 512 + 4 * g:8 * 512 + 4 * g + 4] = struct.pack('<I', 40 + 16 * i)
    f += bytes([0x40 + i]) * 8192
open(sys.argv[1], 'wb').write(f)
PY
	# An OVA holding the stream disk twice.
	printf '<Envelope><References><File ovf:href="d.vmdk"/></References></Envelope>' >"$tmp/a.ovf"
	cp "$tmp/so.vmdk" "$tmp/d.vmdk"
	cp "$tmp/so.vmdk" "$tmp/e.vmdk"
	abs_out=$(cd "$out" && pwd)
	(cd "$tmp" && tar --format=ustar -cf "$abs_out/ova-ustar" a.ovf d.vmdk e.vmdk)
	(cd "$tmp" && tar --format=pax -cf "$abs_out/ova-pax" a.ovf e.vmdk)
	echo "make-corpus.sh: $(ls "$out" | wc -l) seeds in $out"
	exit 0 ;;
vpc|vdi)
	command -v qemu-img >/dev/null || { echo "make-corpus.sh: qemu-img missing" >&2; exit 77; }
	python3 "$src/tests/fuzz/vpc-vdi-seeds.py" "$kind" "$tmp" "$out"
	echo "make-corpus.sh: $(ls "$out" | wc -l) seeds in $out"
	exit 0 ;;
fat)
	PATH=$PATH:/sbin:/usr/sbin
	command -v mkfs.fat >/dev/null && command -v mcopy >/dev/null ||
		{ echo "make-corpus.sh: mkfs.fat or mtools missing" >&2; exit 77; }
	mkdir -p "$tmp/src/Sub dir/deeper"
	echo readme >"$tmp/src/readme.txt"
	echo long >"$tmp/src/A long name with spaces.text"
	printf 'x' >"$tmp/src/Ünïcødé.txt"
	head -c 5000 /dev/zero | tr '\0' z >"$tmp/src/Sub dir/multi.bin"
	echo deep >"$tmp/src/Sub dir/deeper/LEAF.TXT"
	: >"$tmp/src/empty"
	# fatseed NAME KIB CUT_KIB MKFS_OPTIONS...
	fatseed() {
		name=$1 kib=$2 cut=$3
		shift 3
		mkfs.fat -C "$@" "$tmp/$name" "$kib" >/dev/null
		(cd "$tmp/src" && MTOOLS_SKIP_CHECK=1 mcopy -s -m -i "$tmp/$name" ./* ::/ </dev/null)
		MTOOLS_SKIP_CHECK=1 mattrib -i "$tmp/$name" +h +r ::/readme.txt
		truncate -s "${cut}K" "$tmp/$name"
		cp "$tmp/$name" "$out/$name"
	}
	fatseed fat12-tiny 64 64 -F 12 -s 1 -r 32 -f 1
	fatseed fat12 160 160 -F 12 -n SEED12
	fatseed fat12-s4k 256 256 -F 12 -S 4096 -s 1
	fatseed fat12-c4k 360 360 -F 12 -s 8 -f 1
	fatseed fat16 2200 100 -F 16 -s 1 -r 16 -f 1
	fatseed fat32 33300 300 -F 32 -s 1 -f 1 -R 2
	echo "make-corpus.sh: $(ls "$out" | wc -l) seeds in $out"
	exit 0 ;;
ext)
	# KIND ext (fuzz-fsys-ext): small mkfs.ext2/3/4 images of a little
	# tree (files, holes, links, a device node, xattrs, a directory of
	# 100 entries), flavours: 1K/4K blocks, inline_data, ext2, 128-byte
	# inodes, no csum; two with journal transactions that need recovery
	# (debugfs jo/jw/jc), all in the target's sparse EXTZ form.
	PATH=$PATH:/sbin:/usr/sbin
	command -v mkfs.ext4 >/dev/null && command -v debugfs >/dev/null ||
		{ echo "make-corpus.sh: mkfs.ext4 or debugfs missing" >&2; exit 77; }
	mkdir -p "$tmp/src/d/e" "$tmp/src/many"
	echo hello >"$tmp/src/small"
	head -c 5000 /dev/urandom >"$tmp/src/d/data"
	truncate -s 300K "$tmp/src/sparse"
	printf x | dd of="$tmp/src/sparse" bs=1 seek=200000 conv=notrunc status=none
	ln "$tmp/src/small" "$tmp/src/d/hard"
	ln -s small "$tmp/src/fast"
	ln -s "$(printf '%0100d' 1)" "$tmp/src/slow"
	for i in $(seq 1 100); do : >"$tmp/src/many/f$i"; done
	setfattr -n user.x -v y "$tmp/src/small" 2>/dev/null || true
	[ "$(id -u)" = 0 ] && mknod "$tmp/src/dev" c 1 3
	# extseed NAME KIB MKFS [OPTIONS...]
	extseed() {
		n=$1 kib=$2 m=$3
		shift 3
		$m -q -F "$@" -d "$tmp/src" "$tmp/$n.img" "${kib}K" >/dev/null 2>&1 || return 0
		cp "$tmp/$n.img" "$tmp/$n.raw"
	}
	extseed ext4-1k 2048 mkfs.ext4 -b 1024 -O ^has_journal -N 200
	extseed ext4-4k 4096 mkfs.ext4 -b 4096 -O ^has_journal -N 200
	extseed ext4-inline 2048 mkfs.ext4 -b 1024 -O ^has_journal,inline_data -I 256 -N 200
	extseed ext4-nocsum 2048 mkfs.ext4 -b 1024 -O ^has_journal,^metadata_csum -N 200
	extseed ext2 2048 mkfs.ext2 -b 1024 -N 200
	extseed ext3-128 3072 mkfs.ext3 -b 1024 -I 128 -N 200
	extseed ext4-journal 3072 mkfs.ext4 -b 1024 -N 200
	head -c 1024 /dev/urandom >"$tmp/blk"
	for n in ext3-128 ext4-journal; do
		[ -f "$tmp/$n.raw" ] || continue
		printf 'jo\njw -b 300,301 %s\njw -r 302\njc\njo\njw -b 303 %s\njc\n' \
			"$tmp/blk" "$tmp/blk" >"$tmp/cmds"
		cp "$tmp/$n.raw" "$tmp/$n-recover.raw"
		debugfs -w -f "$tmp/cmds" "$tmp/$n-recover.raw" >/dev/null 2>&1 || true
	done
	python3 - "$tmp" "$out" <<'PY'
import glob, os, struct, sys
tmp, out = sys.argv[1], sys.argv[2]
for path in sorted(glob.glob(os.path.join(tmp, '*.raw'))):
    b = open(path, 'rb').read()
    rec = bytearray(b'EXTZ')
    k, n = 0, len(b) // 1024
    while k < n:
        if not any(b[k * 1024:(k + 1) * 1024]):
            k += 1
            continue
        s = k
        while k < n and k - s < 64 and any(b[k * 1024:(k + 1) * 1024]):
            k += 1
        rec += struct.pack('<IH', s, k - s) + b[s * 1024:k * 1024]
    name = os.path.basename(path)[:-4]
    open(os.path.join(out, name), 'wb').write(rec)
PY
	echo "make-corpus.sh: $(ls "$out" | wc -l) seeds in $out"
	exit 0 ;;
lvm)
	# KIND lvm (fuzz-lvm): PVs made by lvm2 on loop devices, packed
	# into the target's form (lvm-seeds.sh; needs root and lvm2).
	rc=0
	sh "$src/tests/fuzz/lvm-seeds.sh" "$out" || rc=$?
	exit $rc ;;
vhost-user)
	$tool vhost-user "$out"
	echo "make-corpus.sh: $(ls "$out" | wc -l) seeds in $out"
	exit 0 ;;
vhdx)
	command -v qemu-img >/dev/null || { echo "make-corpus.sh: qemu-img missing" >&2; exit 77; }
	# xseed NAME SIZE OPTIONS [QEMU_IO_COMMANDS...]: a qemu-img VHDX.
	xseed() {
		n=$1 sz=$2 o=$3
		shift 3
		qemu-img create -q -f vhdx ${o:+-o "$o"} "$tmp/$n.vhdx" "$sz"
		for c in "$@"; do
			qemu-io -f vhdx -c "$c" "$tmp/$n.vhdx" >/dev/null
		done
		$tool pack 1 "$tmp/$n.vhdx" "$out/$n"
		$tool pack 0 "$tmp/$n.vhdx" "$out/$n-nofix"
	}
	xseed dyn-1m 8M block_size=1M 'write -P 0x5a 0 3k' 'write -P 0xa5 1M 64k'
	xseed dyn-8m 20M block_size=8M,log_size=2M 'write -P 0x11 9M 4k'
	xseed dyn-32m 70M block_size=32M,block_state_zero=off 'write -P 0x22 33M 512'
	xseed fixed 3M subformat=fixed 'write -P 0x33 1M 4k'
	xseed odd 5000k block_size=1M 'write -P 0x44 4999k 1k'
	# Seeds qemu-img cannot make (vhdx-seeds.py): a log to replay, a
	# differencing child (its parent is refused by backing=deny).
	xseed base 4M block_size=1M 'write -P 0x5a 0 8k' 'write -P 0xa5 1M 8k'
	for k in log diff; do
		python3 "$src/tests/fuzz/vhdx-seeds.py" $k "$tmp/base.vhdx" "$tmp/$k.vhdx"
		$tool pack 1 "$tmp/$k.vhdx" "$out/$k"
	done
	echo "make-corpus.sh: $(ls "$out" | wc -l) seeds in $out"
	exit 0 ;;
partition)
	PATH=$PATH:/sbin:/usr/sbin
	command -v sfdisk >/dev/null || { echo "make-corpus.sh: sfdisk missing" >&2; exit 77; }
	# disk NAME SIZE SCRIPT: a file of SIZE partitioned by sfdisk.
	disk() {
		truncate -s "$2" "$tmp/$1"
		printf "$3" | sfdisk -q --no-reread --no-tell-kernel "$tmp/$1" >/dev/null
	}
	# pack NAME [FLAGS [SEED]]: FLAGS 1/3 have the target fix GPT CRCs.
	pack() { $tool pack "${2:-0}" "$tmp/$1" "$out/${3:-$1}"; }

	disk mbr-primaries 256K 'label: dos\nstart=1,size=63\nstart=64,size=64,type=7\nstart=128,size=100,type=c,bootable\nstart=300,size=200,type=82\n'
	pack mbr-primaries
	disk mbr-logicals 256K 'label: dos\nstart=1,size=10\nstart=20,size=400,type=5\nstart=22,size=5\nstart=30,size=50\nstart=90,size=300,type=b\n'
	pack mbr-logicals
	cp "$tmp/mbr-logicals" "$tmp/mbr-ebr-loop"
	$tool ebr-loop "$tmp/mbr-ebr-loop"
	pack mbr-ebr-loop
	disk mbr-tiny 4K 'label: dos\nstart=1,size=4\n'
	pack mbr-tiny
	# Partitions past the end: made on 256K, then the disk shrinks.
	disk mbr-past-end 256K 'label: dos\nstart=1,size=100\nstart=200,size=300\n'
	truncate -s 120K "$tmp/mbr-past-end"
	pack mbr-past-end

	disk gpt 256K 'label: gpt\nfirst-lba: 34\nstart=34,size=100,name=one\nstart=200,size=50,type=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\nstart=300,size=100,type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B,name=esp\n'
	pack gpt
	pack gpt 3 gpt-fixcrc
	# A primary header with a wrong CRC: the backup is used.
	cp "$tmp/gpt" "$tmp/gpt-bad-primary"
	printf 'X' | dd of="$tmp/gpt-bad-primary" bs=1 seek=$((512 + 60)) conv=notrunc 2>/dev/null
	pack gpt-bad-primary
	# No backup (the disk lost its end) and a huge disk claimed.
	cp "$tmp/gpt" "$tmp/gpt-no-backup"
	truncate -s 128K "$tmp/gpt-no-backup"
	pack gpt-no-backup
	# Header fields a careful reader must bound; the target fixes the
	# header CRC (flags 1) so that libfdisk believes them.
	for f in num-entries:0xffffffff num-entries:0x100000 \
		entry-size:0x80000000 entry-size:0x100 entry-size:1 \
		entries-lba:0xffffffffffff first-lba:0 last-lba:0xffffffffffffffff \
		header-size:0xffff alt-lba:1; do
		cp "$tmp/gpt" "$tmp/gpt-$f"
		$tool gpt-set "$tmp/gpt-$f" 512 "${f%%:*}" "${f#*:}"
		pack "gpt-$f" 1 "gpt-${f%%:*}-${f#*:}"
	done
	disk gpt-many-entries 1M 'label: gpt\nfirst-lba: 258\ntable-length: 1024\nstart=300,size=100\nstart=1000,size=8\n'
	pack gpt-many-entries
	# A hybrid MBR: GPT plus an MBR listing one of its partitions.
	cp "$tmp/gpt" "$tmp/gpt-hybrid"
	printf 'start=1,size=33,type=ee\nstart=34,size=100,type=83\n' |
		sfdisk -q --no-reread --no-tell-kernel --label-nested dos "$tmp/gpt-hybrid" >/dev/null
	pack gpt-hybrid
	# 4Kn: GPT header at 4096, LBAs in 4 KiB sectors.
	truncate -s 1M "$tmp/gpt-4k"
	printf 'g\nn\n1\n\n+16K\nn\n2\n\n\nw\n' | fdisk -b 4096 "$tmp/gpt-4k" >/dev/null 2>&1
	pack gpt-4k
	pack gpt-4k 3 gpt-4k-fixcrc
	disk sun 256K 'label: sun\n'
	pack sun
	disk sgi 256K 'label: sgi\n'
	pack sgi
	# Filesystems: a FAT superfloppy (MBR signature, no table) and a
	# FAT filesystem inside an MBR partition.
	if command -v mkfs.vfat >/dev/null; then
		truncate -s 300K "$tmp/superfloppy"
		mkfs.vfat -n FUZZ "$tmp/superfloppy" >/dev/null
		pack superfloppy
		disk mbr-fat 512K 'label: dos\nstart=64,size=800,type=c\n'
		truncate -s 400K "$tmp/fat"
		mkfs.vfat -n INSIDE "$tmp/fat" >/dev/null
		dd if="$tmp/fat" of="$tmp/mbr-fat" bs=512 seek=64 conv=notrunc 2>/dev/null
		pack mbr-fat
	fi
	: >"$tmp/empty"
	pack empty
	echo "make-corpus.sh: $(ls "$out" | wc -l) seeds in $out"
	exit 0 ;;
*)
	echo "make-corpus.sh: unknown kind $kind" >&2
	exit 2 ;;
esac
command -v qemu-img >/dev/null || { echo "make-corpus.sh: qemu-img missing" >&2; exit 77; }

# seed NAME SIZE CREATE_OPTIONS [QEMU_IO_COMMANDS...]
seed() {
	name=$1 size=$2 opts=$3
	shift 3
	img=$tmp/$name.qcow2
	qemu-img create -q -f qcow2 -o "$opts" "$img" "$size"
	for c in "$@"; do
		qemu-io -f qcow2 -c "$c" "$img" >/dev/null
	done
	cp "$img" "$out/$name"
}

pattern='write -P 0x5a 0 3k'
tail_w='write -P 0xa5 1M 8k'
zero='write -z 64k 64k'
comp='write -c -P 0x33 1536k 64k'

seed c512-v3       2M cluster_size=512            "$pattern" "$tail_w" "$zero"
seed c1k-v3-comp   2M cluster_size=1k             "$pattern" "$comp"
seed c4k-v2        4M cluster_size=4k,compat=0.10 "$pattern" "$tail_w" "$comp"
seed c4k-v3-zero   4M cluster_size=4k             "$pattern" "$zero" 'write -z -u 2M 64k'
seed c4k-zstd      4M cluster_size=4k,compression_type=zstd "$pattern" "$comp"
seed c16k-el2      4M cluster_size=16k,extended_l2=on 'write -P 0x11 0 512' \
	'write -P 0x22 4k 1k' 'write -z 8k 512' "$tail_w" "$comp"
seed c32k-el2-zstd 2M cluster_size=32k,extended_l2=on,compression_type=zstd \
	'write -P 0x11 1k 2k' "$comp"
seed c64k          8M cluster_size=64k            "$pattern" "$tail_w"
# 512-byte clusters and 64-bit refcounts: a refcount block covers 32 KiB
# and the one-cluster table 2 MiB, so writes soon need new blocks and a
# larger table.
seed c512-rb64     4M cluster_size=512,refcount_bits=64 "$pattern" "$tail_w"
for rb in 1 2 8 32 64; do
	seed c4k-rb$rb 2M cluster_size=4k,refcount_bits=$rb "$pattern" "$tail_w"
done
seed c4k-lazy      2M cluster_size=4k,lazy_refcounts=on "$pattern"
seed c4k-prealloc  256k cluster_size=4k,preallocation=metadata

# Internal snapshots: data before and after each.
img=$tmp/snap.qcow2
qemu-img create -q -f qcow2 -o cluster_size=4k "$img" 4M
qemu-io -f qcow2 -c 'write -P 0x01 0 8k' "$img" >/dev/null
qemu-img snapshot -c first "$img"
qemu-io -f qcow2 -c 'write -P 0x02 4k 8k' -c "$comp" "$img" >/dev/null
qemu-img snapshot -c second "$img"
qemu-io -f qcow2 -c 'write -z 0 4k' "$img" >/dev/null
cp "$img" "$out/c4k-snapshots"

img=$tmp/snap2.qcow2
qemu-img create -q -f qcow2 -o cluster_size=512,compat=0.10 "$img" 1M
qemu-io -f qcow2 -c 'write -P 0x03 0 2k' "$img" >/dev/null
qemu-img snapshot -c v2snap "$img"
cp "$img" "$out/c512-v2-snapshot"

# Backing names and formats (the backing file itself is not in the seed).
qemu-img create -q -f raw "$tmp/base.raw" 2M
qemu-img create -q -f qcow2 -o cluster_size=4k -b base.raw -F raw \
	"$tmp/overlay.qcow2" 2M
qemu-io -f qcow2 -c 'write -P 0x44 1k 2k' "$tmp/overlay.qcow2" >/dev/null
cp "$tmp/overlay.qcow2" "$out/c4k-backing-raw"
qemu-img create -q -f qcow2 -o cluster_size=4k -b "$tmp/base.raw" \
	-F raw "$tmp/overlay2.qcow2" 2M
cp "$tmp/overlay2.qcow2" "$out/c4k-backing-abs"

# External data file: the name is refused like a backing file.
qemu-img create -q -f qcow2 -o cluster_size=4k,data_file="$tmp/data.raw" \
	"$tmp/ext.qcow2" 1M
cp "$tmp/ext.qcow2" "$out/c4k-data-file"

# Converted from a raw image with mixed content (text that compresses,
# random bytes that do not, zeroes), compressed.
seq 1 30000 >"$tmp/mix.raw"
head -c 20k /dev/urandom >>"$tmp/mix.raw"
dd if=/dev/zero bs=1k count=100 >>"$tmp/mix.raw" 2>/dev/null
qemu-img convert -q -c -O qcow2 -o cluster_size=4k "$tmp/mix.raw" \
	"$out/c4k-convert-comp"
qemu-img convert -q -c -O qcow2 -o cluster_size=4k,compression_type=zstd \
	"$tmp/mix.raw" "$out/c4k-convert-zstd"

# A dirty image: the incompatible bit 0 set by hand.
cp "$out/c4k-v3-zero" "$out/c4k-dirty"
printf '\001' | dd of="$out/c4k-dirty" bs=1 seek=79 conv=notrunc 2>/dev/null

# A few non-qcow2 inputs for the probe target.
printf 'QFI\373' >"$out/magic-only"
: >"$out/empty"
head -c 4096 /dev/zero >"$out/zeros-4k"

echo "make-corpus.sh: $(ls "$out" | wc -l) seeds in $out"
