#!/bin/sh
# make-corpus.sh OUTDIR: seed corpus for the qcow2 fuzz targets.
#
# Small qcow2 images from qemu-img and qemu-io across the format's options
# (cluster sizes, refcount widths, compat levels, extended L2, zlib and
# zstd compression, zero clusters, internal snapshots, a backing name and
# format, lazy refcounts, a dirty bit), each with a little data written so
# the L2 tables, refcount blocks and compressed clusters are populated.
# Images are kept small (mostly 512 B to 4 KiB clusters, 1-8 MiB virtual)
# because libFuzzer mutates whole files: big seeds mean slow executions.
# The backing file named in the header need not exist: the targets open
# with backing=deny, which refuses it before looking.
set -eu

out=${1:?usage: make-corpus.sh OUTDIR}
command -v qemu-img >/dev/null || { echo "make-corpus.sh: qemu-img missing" >&2; exit 77; }
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

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
