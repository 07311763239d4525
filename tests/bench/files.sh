#!/bin/bash
# files.sh: extracting a guest's root filesystem, imgfs against the ways
# people do it today, in one run.
# A benchmark, not a test: it prints medians and ratios and exits 0
# whether or not a target is met; it fails only when the image or the
# tools cannot be set up.
#
#   tests/bench/files.sh [--quick] [--reps N]
#
# The image: a zlib-compressed qcow2 (qemu-img convert -c) with a GPT, a
# FAT32 ESP (p1) and an ext4 root (p2) of many small config-like files,
# some MiB-size files, a few large files, hard links and symlinks (about
# 20,000 files; --quick: 2,000). Data compresses about 2:1.
# Workloads, page cache dropped before each run when root (else noted):
#   tar       tar -cf - . | tar -xf - of the whole root into a fresh folder
#     convert   qemu-img convert -O raw, then fuse2fs on the raw p2, then tar
#     stacked   imgfs mount, fuse2fs on MNT/p2, tar
#     files     imgfs mount, tar from MNT/files/p2
#     cli       imgfs tar IMAGE p2:/ | tar -x (no FUSE at all)
#   ls-lR     ls -lR of the root: files vs fuse2fs on the raw twin
#   head4k    the first 4 KiB of every file (a thumbnailer): the same two
#   bigread   a sequential read of the largest file: files vs reading the
#             same bytes of MNT/p2
#   parallel  four tars of four subtrees at once vs one after another,
#             from MNT/files/p2 (through cat: tar writing to /dev/null
#             itself skips reading the files' contents)
#   rss       the daemon's resident memory after ls -lR, the first 4 KiB of
#             every file and all four subtrees and the large file read
#   first     time to the first file: imgfs cat IMAGE p2:/etc/os-release
# Targets: files and cli tar <= 0.5x and <= 0.45x the faster of convert and
# stacked; ls-lR and head4k <= 0.5x fuse2fs; bigread >= 0.8x; parallel
# >= 1.5x; first <= 0.2 s; rss < 64 MiB.
# --quick: a small tree and one repetition (CI: proves it runs).
set -euo pipefail
# shellcheck source=tests/bench/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

bench_parse_args 3 "$@"
bench_require qemu-img sfdisk mkfs.ext4 mkfs.vfat mcopy fuse2fs tar
IMGFS=$BUILD/fuse/imgfs
[[ -x $IMGFS ]] || bench_die "$IMGFS is missing (build first)"
bench_need_fuse
# On disk, not tmpfs: dropping the page cache must reach the image.
bench_workdir $((1 << 50))

if ((QUICK)); then
	NB_SMALL=2000 NB_MID=4 BIG_MB=16
	((REPS_GIVEN)) || REPS=1
else
	NB_SMALL=20000 NB_MID=40 BIG_MB=256
fi

# A tree that compresses about 2:1: each file is a prefix of a buffer of
# 256 random bytes and 256 bytes of text, over and over.
make_buffer() {
	python3 -c '
import os, sys
text = (b"config value = 42\n" * 20)[:256]
out = bytearray()
while len(out) < int(sys.argv[2]):
    out += os.urandom(256) + text
open(sys.argv[1], "wb").write(out)' "$W/buf" $((BIG_MB << 20))
}
half_random() {
	head -c "$1" "$W/buf"
}

make_tree() {
	local d=$1 i
	mkdir -p "$d/etc" "$d/usr/lib" "$d/usr/share/doc" "$d/var/big" "$d/srv/a" "$d/srv/b"
	printf 'NAME="bench"\nVERSION_ID=1\n' >"$d/etc/os-release"
	for ((i = 0; i < NB_SMALL; i++)); do
		local sub=$((i % 4)) dir
		case $sub in
		0) dir=$d/etc/conf.d ;;
		1) dir=$d/usr/share/doc/pkg$((i % 97)) ;;
		2) dir=$d/srv/a/s$((i % 53)) ;;
		3) dir=$d/srv/b/s$((i % 61)) ;;
		esac
		mkdir -p "$dir"
		half_random $((200 + (i * 37) % 3000)) >"$dir/file-$i.conf"
	done
	for ((i = 0; i < NB_MID; i++)); do
		half_random $(((1 + i % 4) << 20)) >"$d/usr/lib/lib$i.so"
	done
	half_random $((BIG_MB << 20)) >"$d/var/big/large.bin"
	ln "$d/etc/os-release" "$d/etc/os-release.hard"
	ln -s ../etc/os-release "$d/usr/os-release"
}

bench_log "building the image ($NB_SMALL files)"
make_buffer
make_tree "$W/tree"
tree_mb=$(du -sm "$W/tree" | cut -f1)
p2_mb=$((tree_mb * 2 + 64))
truncate -s 64M "$W/p1.img"
mkfs.vfat -F 32 "$W/p1.img" >/dev/null
echo esp >"$W/esp.txt"
mcopy -i "$W/p1.img" "$W/esp.txt" ::ESP.TXT
truncate -s "${p2_mb}M" "$W/p2.img"
mkfs.ext4 -q -F -d "$W/tree" -E root_owner=0:0 "$W/p2.img"
truncate -s $((p2_mb + 66))M "$W/disk.raw"
printf 'label: gpt\nstart=2048, size=131072, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart=133120, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n' |
	sfdisk -q "$W/disk.raw"
dd if="$W/p1.img" of="$W/disk.raw" bs=1M seek=1 conv=notrunc status=none
dd if="$W/p2.img" of="$W/disk.raw" bs=1M seek=65 conv=notrunc status=none
qemu-img convert -c -f raw -O qcow2 "$W/disk.raw" "$W/disk.qcow2"
rm -f "$W/disk.raw" "$W/p2.img" "$W/p1.img"
IMG=$W/disk.qcow2

M=$W/mnt F=$W/f2fs OUT=$W/out
mkdir -p "$M" "$F"

imgfs_mount() {
	"$IMGFS" -o ro "$IMG" "$M"
	bench_track_mount "$M"
}
f2fs_mount() {
	fuse2fs -o ro,fakeroot "$1" "$F" >/dev/null
	bench_track_mount "$F"
}
unmount_all() {
	bench_unmount "$F"
	bench_unmount "$M"
}
fresh_out() {
	rm -rf "$OUT"
	mkdir -p "$OUT"
}
timed() {
	local t0 t1
	t0=$(bench_now)
	"$@" >/dev/null 2>&1
	t1=$(bench_now)
	bench_elapsed "$t0" "$t1"
}
tar_from() {
	(cd "$1" && tar -cf - .) | tar -C "$OUT" -xf -
}

run_convert() {
	qemu-img convert -O raw "$IMG" "$W/conv.raw"
	local off=$((133120 * 512))
	local loopless=$W/conv-p2.raw
	dd if="$W/conv.raw" of="$loopless" bs=1M skip=$((off >> 20)) status=none conv=sparse
	f2fs_mount "$loopless"
	tar_from "$F"
}
run_stacked() {
	imgfs_mount
	f2fs_mount "$M/p2"
	tar_from "$F"
}
run_files() {
	imgfs_mount
	tar_from "$M/files/p2"
}
run_cli() {
	"$IMGFS" tar "$IMG" p2:/ | tar -C "$OUT" -xf -
}

declare -A T
for ((r = 0; r < REPS; r++)); do
	for w in convert stacked files cli; do
		fresh_out
		bench_drop_caches
		T[$w]+=" $(timed run_$w)"
		unmount_all
		rm -f "$W/conv.raw" "$W/conv-p2.raw"
	done
done

# ls -lR and the first 4 KiB of every file: files/ vs fuse2fs on the raw twin.
qemu-img convert -O raw "$IMG" "$W/conv.raw"
dd if="$W/conv.raw" of="$W/twin-p2.raw" bs=1M skip=65 status=none conv=sparse
rm -f "$W/conv.raw"
head_all() { find "$1" -type f -exec head -c 4096 {} + >/dev/null; }
for ((r = 0; r < REPS; r++)); do
	bench_drop_caches; imgfs_mount
	T[lsR_files]+=" $(timed ls -lR "$M/files/p2")"
	bench_drop_caches
	T[head_files]+=" $(timed head_all "$M/files/p2")"
	big=$M/files/p2/var/big/large.bin
	bench_drop_caches
	T[big_files]+=" $(timed cat "$big")"
	# The same bytes straight from p2: the file's extents, as one read of
	# the partition of the same length (a sequential read at FUSE's speed).
	bench_drop_caches
	T[big_p2]+=" $(timed dd if="$M/p2" of=/dev/null bs=1M count="$BIG_MB" skip=64)"
	bench_drop_caches
	tar_sub() { (cd "$M/files/p2/$1" && tar -cf - .) | cat >/dev/null; }
	one_by_one() { for s in etc usr srv/a srv/b; do tar_sub "$s"; done; }
	T[serial]+=" $(timed one_by_one)"
	bench_drop_caches
	at_once() { for s in etc usr srv/a srv/b; do tar_sub "$s" & done; wait; }
	T[parallel]+=" $(timed at_once)"
	pid=$(bench_find_daemon imgfs "$M") &&
		T[rss]+=" $(awk '/^VmRSS:/ { printf "%.1f", $2 / 1024 }' "/proc/$pid/status")"
	unmount_all
	bench_drop_caches; f2fs_mount "$W/twin-p2.raw"
	T[lsR_f2fs]+=" $(timed ls -lR "$F")"
	bench_drop_caches
	T[head_f2fs]+=" $(timed head_all "$F")"
	unmount_all
	"$IMGFS" cat "$IMG" p2:/etc/os-release >/dev/null
	T[first]+=" $(timed "$IMGFS" cat "$IMG" p2:/etc/os-release)"
done

med() { bench_median ${T[$1]}; }
printf '%-44s %10s\n' "seconds (median of $REPS)" ""
for k in convert stacked files cli lsR_files lsR_f2fs head_files head_f2fs big_files big_p2 serial parallel first; do
	printf '%-44s %10s\n' "$k" "$(med "$k")"
done
best=$(awk -v a="$(med convert)" -v b="$(med stacked)" 'BEGIN { print (a < b ? a : b) }')
echo
printf '%-50s %7s %9s\n' "ratio" "value" "target"
printf '%-50s %7s %9s\n' "files/ tar vs faster of convert, stacked" "$(bench_ratio "$(med files)" "$best")" "<= 0.5"
printf '%-50s %7s %9s\n' "imgfs tar vs faster of convert, stacked" "$(bench_ratio "$(med cli)" "$best")" "<= 0.45"
printf '%-50s %7s %9s\n' "ls -lR files/ vs fuse2fs" "$(bench_ratio "$(med lsR_files)" "$(med lsR_f2fs)")" "<= 0.5"
printf '%-50s %7s %9s\n' "first 4 KiB of every file vs fuse2fs" "$(bench_ratio "$(med head_files)" "$(med head_f2fs)")" "<= 0.5"
printf '%-50s %7s %9s\n' "large file speed vs the same bytes of p2" "$(bench_ratio "$(med big_p2)" "$(med big_files)")" ">= 0.8"
printf '%-50s %7s %9s\n' "four tars at once vs one after another" "$(bench_ratio "$(med serial)" "$(med parallel)")" ">= 1.5"
printf '%-50s %7s %9s\n' "time to the first file (s)" "$(med first)" "<= 0.2"
printf '%-50s %7s %9s\n' "daemon RSS after browsing (MiB, largest)" "$(bench_max ${T[rss]:-})" "< 64"
echo "# load: $(uptime)"
[[ $EUID -eq 0 ]] || echo "# not root: page caches were not dropped"
