#!/bin/bash
# scale.sh: imgfs at scale, side by side with its peers, in one run.
# A benchmark, not a test: it prints medians and ratios against the
# targets and exits 0 whether or not they are met; it fails only when
# the images or the peers cannot be set up.
#
#   tests/bench/scale.sh [--quick] [--reps N] [--only SECTION]
#
# compressed  sequential 1 MiB reads (fio, buffered, --invalidate=1) of a
#             zlib and a zstd qcow2 (64 KiB clusters, data that compresses
#             about 2:1) through a fresh imgfs mount, qemu-storage-daemon's
#             FUSE export of the same image, and bindfs over the raw twin;
#             and `imgfs cat IMAGE disk` against `qemu-img convert -O raw`
#             of the same image, both writing a file on the work folder
#             (tmpfs when memory allows): the fairest null-like target both
#             accept.
# snapshots   an image with N internal snapshots (20,000; made with
#             tests/tools/qcow2-clone-snapshots.py, checked by qemu-img
#             check) against the same image with none: mount-to-ready,
#             daemon peak RSS, `ls snapshots`, `imgfs info`, `imgfs ls IMAGE
#             snapshots`.
# huge        a 64 TiB qcow2 (2 MiB clusters, data scattered over the whole
#             range) and a 16 TiB one (64 KiB clusters, one cluster in each
#             of its 32,768 L2 ranges, so every L2 table is allocated):
#             mount-to-ready, stat of disk (st_blocks), SEEK_DATA/SEEK_HOLE
#             over the whole disk, cp --sparse=always of disk, peak RSS.
#             These images live under ${TMPDIR:-/var/tmp} (sparse files);
#             their copies under /dev/shm when it holds them.
#
# --quick: 64 MiB compressed images, 500 snapshots, 1 TiB and 64 TiB
# images with a few dozen clusters, one repetition (CI: proves it works).
# --only compressed|snapshots|huge: that section alone (its images, runs
# and report lines), for work on one of them.
set -euo pipefail
# shellcheck source=tests/bench/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

ONLY='' ARGS=()
while (($#)); do
	case $1 in
	--only)
		ONLY=${2:?--only needs a section}
		[[ $ONLY =~ ^(compressed|snapshots|huge)$ ]] ||
			bench_die "--only: no section '$ONLY' (compressed, snapshots, huge)"
		shift ;;
	*) ARGS+=("$1") ;;
	esac
	shift
done
bench_parse_args 3 ${ARGS[@]+"${ARGS[@]}"}
# want SECTION: true when the run includes it.
want() { [[ -z $ONLY || $ONLY == "$1" ]]; }

if ((QUICK)); then
	SIZE=$((64 << 20)) NB_SNAP=500 HUGE64_WRITES=20 HUGE16_TIB=1
	((REPS_GIVEN)) || REPS=1
else
	SIZE=$((1 << 30)) NB_SNAP=20000 HUGE64_WRITES=200 HUGE16_TIB=16
fi
IMGFS=$BUILD/fuse/imgfs
CLONE=$REPO/tests/tools/qcow2-clone-snapshots.py
bench_require qemu-img qemu-io fio fusermount3 awk python3 sfdisk
bench_need_program
bench_need_fuse
bench_pick_targets "$IMGFS"
[[ ${STATUS[imgfs]} == ok ]] || bench_die "imgfs is not built ($IMGFS)"

bench_workdir $((SIZE * 5))
# Huge sparse images need a filesystem that holds 16 TiB files: not tmpfs
# (its data would be in memory), the disk.
HUGE=$(mktemp -d "${TMPDIR:-/var/tmp}/imgfs-scale.XXXXXX")
trap 'rc=$?; rm -rf --one-file-system "$HUGE"; (exit $rc); bench_cleanup' EXIT

if want compressed; then
	mkdir -p "$W/raw"
	"$BENCH" gen "$W/raw/comp.raw" "$SIZE" --compressible --seed 2 >/dev/null
	for c in zlib zstd; do
		qemu-img convert -c -f raw -O qcow2 \
			-o cluster_size=65536,compression_type=$c \
			"$W/raw/comp.raw" "$W/$c.qcow2"
	done
	bench_log "compressed images: $((SIZE >> 20)) MiB, zlib $(($(stat -c %s "$W/zlib.qcow2") >> 20)) MiB, zstd $(($(stat -c %s "$W/zstd.qcow2") >> 20)) MiB"
fi

# ---- mounting -----------------------------------------------------------

PID='' FILE='' READY_S=''
# mount_imgfs IMAGE MNT: sets PID, READY_S.
mount_imgfs() {
	bench_mount_imgfs "$IMGFS" "$1" "$2" || bench_die "imgfs: mount of $1 failed"
	PID=$BENCH_IMGFS_PID READY_S=$BENCH_MOUNT_S
}

# mount_target TARGET IMAGE: sets FILE (what fio reads) and PID.
mount_target() {
	case $1 in
	imgfs) mount_imgfs "$2" "$W/mnt-imgfs" && FILE=$W/mnt-imgfs/disk ;;
	bindfs)
		mkdir -p "$W/mnt-bindfs"
		bench_track_mount "$W/mnt-bindfs"
		bindfs --multithreaded -r --no-allow-other "$W/raw" "$W/mnt-bindfs"
		PID=$(bench_find_daemon bindfs "$W/mnt-bindfs") || PID=
		FILE=$W/mnt-bindfs/comp.raw
		;;
	qsd)
		bench_start_qsd qcow2 "$2" "$W/qsd-export" 30 || bench_die "qsd failed"
		PID='' FILE=$W/qsd-export
		;;
	esac
}

unmount_target() {
	case $1 in
	imgfs) bench_unmount "$W/mnt-imgfs" ;;
	bindfs) bench_unmount "$W/mnt-bindfs" ;;
	qsd) bench_stop_qsd "$W/qsd-export" ;;
	esac
	[[ -n $PID ]] && bench_reap "$PID" 10
	PID=
}

seq_mbps() { # file
	bench_fio mbps "$1" --name=seq --rw=read --bs=1M --numjobs=1 || echo -
}

# Seconds a command takes, output to $W/out (removed after).
time_cmd() {
	local t0 t1
	t0=$(bench_now)
	"$@" >/dev/null 2>"$W/cmd.err" || bench_die "$* failed: $(head -n 3 "$W/cmd.err")"
	t1=$(bench_now)
	rm -f "$W/out"
	bench_elapsed "$t0" "$t1"
}

cat_to_out() { "$IMGFS" cat "$1" disk >"$W/out"; }

declare -A RES=()

# ---- compressed ---------------------------------------------------------

if want compressed; then
	for ((rep = 0; rep < REPS; rep++)); do
		bench_log "compressed: repetition $((rep + 1))/$REPS"
		for c in zlib zstd; do
			for ((i = 0; i < ${#TARGETS[@]}; i++)); do
				t=${TARGETS[(rep + i) % ${#TARGETS[@]}]}
				mount_target "$t" "$W/$c.qcow2"
				RES[$t $c]+=" $(seq_mbps "$FILE")"
				unmount_target "$t"
			done
			if ((rep % 2)); then
				RES[qemu-img $c]+=" $(time_cmd qemu-img convert -O raw "$W/$c.qcow2" "$W/out")"
				RES[cat $c]+=" $(time_cmd cat_to_out "$W/$c.qcow2")"
			else
				RES[cat $c]+=" $(time_cmd cat_to_out "$W/$c.qcow2")"
				RES[qemu-img $c]+=" $(time_cmd qemu-img convert -O raw "$W/$c.qcow2" "$W/out")"
			fi
		done
	done
	rm -f "$W/raw/comp.raw" "$W"/zlib.qcow2 "$W"/zstd.qcow2
fi

# ---- snapshots ----------------------------------------------------------

if want snapshots; then
	# A 1 GiB disk with a GPT of two partitions and a little data; with nb
	# snapshots of it (all of the same state) when nb > 0.
	make_snap_image() { # path nb
		truncate -s 1G "$W/snap.raw"
		printf 'label: gpt\nsize=256M\nsize=256M\n' | sfdisk -q "$W/snap.raw" >/dev/null
		qemu-img convert -f raw -O qcow2 "$W/snap.raw" "$1"
		rm -f "$W/snap.raw"
		qemu-io -c "write -P 7 2M 4M" "$1" >/dev/null
		if (($2 > 0)); then
			qemu-img snapshot -c base "$1"
			qemu-io -c "write -P 8 2M 64k" "$1" >/dev/null
			python3 "$CLONE" "$1" "$2"
			qemu-img check -q "$1" || bench_die "qemu-img check of $1 failed"
		fi
	}
	make_snap_image "$W/snap0.qcow2" 0
	make_snap_image "$W/snapN.qcow2" "$NB_SNAP"
	bench_log "snapshots: $NB_SNAP made, qemu-img check passed"

	for ((rep = 0; rep < REPS; rep++)); do
		bench_log "snapshots: repetition $((rep + 1))/$REPS"
		for img in snap0 snapN; do
			mount_imgfs "$W/$img.qcow2" "$W/mnt-$img"
			RES[ready $img]+=" $READY_S"
			t0=$(bench_now)
			# shellcheck disable=SC2012 # ls is what is measured
			n=$(ls "$W/mnt-$img/snapshots" | wc -l)
			RES[ls $img]+=" $(bench_elapsed "$t0" "$(bench_now)")"
			[[ $img == snap0 || $n == "$NB_SNAP" ]] ||
				bench_die "ls snapshots listed $n, not $NB_SNAP"
			# One snapshot browsed: its partitions and bytes.
			if [[ $img == snapN ]]; then
				[[ -e $W/mnt-$img/snapshots/s$((NB_SNAP / 2))/p2 ]] ||
					bench_die "snapshot s$((NB_SNAP / 2)) shows no p2"
			fi
			RES[rss $img]+=" $(bench_vm_hwm_kib "$PID")"
			bench_unmount "$W/mnt-$img"
			bench_reap "$PID" 10
			RES[info $img]+=" $(time_cmd "$IMGFS" info "$W/$img.qcow2")"
			RES[cls $img]+=" $(time_cmd "$IMGFS" ls "$W/$img.qcow2" snapshots)"
		done
	done
	rm -f "$W/snap0.qcow2" "$W/snapN.qcow2"
fi

# ---- huge ---------------------------------------------------------------

if want huge; then
	qemu-img create -f qcow2 -o cluster_size=2M "$HUGE/h64.qcow2" 64T >/dev/null
	# (the Python text starts at column 0: its indentation is syntax)
	python3 -c '
import random, sys
r = random.Random(1)
for i in range(int(sys.argv[1])):
    print("write -P %d %d 2M" % (i % 250 + 1, r.randrange(0, 32 << 20) << 21))
' "$HUGE64_WRITES" | qemu-io "$HUGE/h64.qcow2" >/dev/null
	qemu-img create -f qcow2 "$HUGE/h16.qcow2" "${HUGE16_TIB}T" >/dev/null
	python3 -c '
import sys
n = int(sys.argv[1]) >> 29  # one 64 KiB write in every 512 MiB L2 range
for i in range(n):
    print("write -P %d %d 64k" % (i % 250 + 1, (i << 29) + ((i * 7919) % 8192 << 16)))
' $((HUGE16_TIB << 40)) |
		qemu-io "$HUGE/h16.qcow2" >/dev/null
	bench_log "huge images: $(du -h "$HUGE/h64.qcow2" "$HUGE/h16.qcow2" | tr '\n\t' '  ')"

	# SEEK_DATA/SEEK_HOLE over a whole file: prints extents and data bytes.
	seek_walk() {
		python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
size, pos, n, data = os.fstat(fd).st_size, 0, 0, 0
while pos < size:
    try:
        d = os.lseek(fd, pos, os.SEEK_DATA)
    except OSError:
        break
    h = os.lseek(fd, d, os.SEEK_HOLE)
    n, data, pos = n + 1, data + h - d, h
print(n, data)
' "$1"
	}

	# cp --sparse=always needs a target that takes a 64 TiB sparse file.
	COPY_OK=1
	[[ $(stat -f -c %T "$W") == tmpfs ]] || COPY_OK=0
	for ((rep = 0; rep < REPS; rep++)); do
		bench_log "huge: repetition $((rep + 1))/$REPS"
		for img in h64 h16; do
			mount_imgfs "$HUGE/$img.qcow2" "$W/mnt-$img"
			RES[ready $img]+=" $READY_S"
			t0=$(bench_now)
			blocks=$(stat -c %b "$W/mnt-$img/disk")
			RES[stat $img]+=" $(bench_elapsed "$t0" "$(bench_now)")"
			t0=$(bench_now)
			read -r nb_ext data_bytes < <(seek_walk "$W/mnt-$img/disk")
			RES[seek $img]+=" $(bench_elapsed "$t0" "$(bench_now)")"
			((data_bytes == blocks * 512)) ||
				bench_die "$img: SEEK_DATA found $data_bytes bytes, st_blocks says $((blocks * 512))"
			if ((COPY_OK)); then
				t0=$(bench_now)
				cp --sparse=always "$W/mnt-$img/disk" "$W/copy.raw"
				RES[cp $img]+=" $(bench_elapsed "$t0" "$(bench_now)")"
				rm -f "$W/copy.raw"
			fi
			RES[rss $img]+=" $(bench_vm_hwm_kib "$PID")"
			RES[ext $img]=$nb_ext
			bench_unmount "$W/mnt-$img"
			bench_reap "$PID" 10
		done
	done
fi

# ---- report -------------------------------------------------------------

# shellcheck disable=SC2086
med() { bench_median ${RES[$1]:-}; }
ms() { awk -v s="$(med "$1")" 'BEGIN { if (s == "-") print "-"; else printf "%.1f\n", s * 1000 }'; }
# shellcheck disable=SC2086
mib() { awk -v k="$(bench_max ${RES[$1]:-})" 'BEGIN { if (k == "-") print "-"; else printf "%.1f\n", k / 1024 }'; }
vrow() { printf '%-44s %9s %9s  %s\n' "$@"; }
target_line() { vrow "$1" "$2" "$5" "$(bench_verdict "$2" "$3" "$4")"; }

echo
echo "imgfs at scale: $REPS repetition(s), medians (a shared 2-core machine is noisy: ratios from one run only)"
echo
if want compressed; then
	printf '%-30s %10s %10s %10s\n' "compressed seq read (MB/s)" imgfs qsd bindfs
	for c in zlib zstd; do
		printf '%-30s %10s %10s %10s\n' "$c, $((SIZE >> 20)) MiB" "$(med "imgfs $c")" \
			"$(med "qsd $c")" "$(med "bindfs $c")"
	done
	printf '%-30s %10s %10s\n' "whole image to a file (s)" "imgfs cat" "qemu-img convert"
	for c in zlib zstd; do
		printf '%-30s %10s %10s\n' "$c" "$(med "cat $c")" "$(med "qemu-img $c")"
	done
fi
if want snapshots; then
	echo
	printf '%-30s %10s %10s\n' "snapshots" "none" "$NB_SNAP"
	for k in "ready:mount-to-ready (ms)" "ls:ls snapshots (ms)" "info:imgfs info (ms)" "cls:imgfs ls IMAGE snapshots (ms)"; do
		printf '%-30s %10s %10s\n' "${k#*:}" "$(ms "${k%%:*} snap0")" "$(ms "${k%%:*} snapN")"
	done
	printf '%-30s %10s %10s\n' "daemon peak RSS (MiB)" "$(mib "rss snap0")" "$(mib "rss snapN")"
fi
if want huge; then
	echo
	printf '%-30s %12s %12s\n' "huge images" "64 TiB/2M" "$HUGE16_TIB TiB/64k"
	printf '%-30s %12s %12s\n' "data extents" "${RES[ext h64]}" "${RES[ext h16]}"
	for k in "ready:mount-to-ready (ms)" "stat:stat of disk (ms)" "seek:SEEK_DATA walk (ms)" "cp:cp --sparse=always (ms)"; do
		printf '%-30s %12s %12s\n' "${k#*:}" "$(ms "${k%%:*} h64")" "$(ms "${k%%:*} h16")"
	done
	printf '%-30s %12s %12s\n' "daemon peak RSS (MiB)" "$(mib "rss h64")" "$(mib "rss h16")"
fi

echo
vrow "ratio" value target verdict
if want compressed; then
	for c in zlib zstd; do
		target_line "$c seq: imgfs / bindfs" "$(bench_ratio "$(med "imgfs $c")" "$(med "bindfs $c")")" ge 0.7 ">= 0.7"
		target_line "$c seq: imgfs / qsd" "$(bench_ratio "$(med "imgfs $c")" "$(med "qsd $c")")" ge 4 ">= 4"
		target_line "$c: convert time / cat time" "$(bench_ratio "$(med "qemu-img $c")" "$(med "cat $c")")" ge 1.5 ">= 1.5"
	done
fi
if want snapshots; then
	target_line "mount-to-ready: $NB_SNAP snapshots / none" "$(bench_ratio "$(med "ready snapN")" "$(med "ready snap0")")" le 3 "<= 3"
	target_line "RSS with $NB_SNAP snapshots (MiB)" "$(mib "rss snapN")" le 64 "<= 64"
fi
if want huge; then
	target_line "huge: max RSS (MiB)" "$(bench_max "$(mib "rss h64")" "$(mib "rss h16")")" le 64 "< 64"
fi
