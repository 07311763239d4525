#!/bin/bash
# formats.sh: reading the formats imgfs reads but does not write (VHDX,
# VDI, VMDK, VHD), side by side in one run with a qcow2 of the same data,
# and a streamOptimized VMDK against qemu-storage-daemon's FUSE export.
# A benchmark, not a test: it prints medians and ratios against the
# targets and exits 0 whether or not they are met; it fails only when an
# image cannot be made, opened, mounted or read byte-exact.
#
#   tests/bench/formats.sh [--quick] [--reps N]
#
# Images, made by qemu-img convert in a work dir on the disk (not tmpfs:
# dropping the page cache must reach them):
#   disk.raw      SIZE of pseudo-random data: every cluster, block and
#                 grain of the images below is allocated
#   disk.qcow2    qcow2 v3, 64 KiB clusters           (the reference)
#   disk.vhdx     dynamic VHDX, qemu-img's 32 MiB blocks
#   disk.vdi      dynamic VDI, 1 MiB blocks
#   disk.vmdk     monolithicSparse VMDK, 64 KiB grains
#   disk.vhd      dynamic VHD, force_size=on (no target, for scale)
#   stream.vmdk   streamOptimized VMDK of SIZE that deflates about 2:1
#                 (each 4 KiB: 2 KiB random, 2 KiB zeroes)
# Before anything is timed, every image is read whole through img_pread
# and compared with its source.
#
# Each repetition runs every measurement once, in an order that rotates:
#   img_pread  imgfmt-bench seq IMAGE: 1 MiB img_pread, image in the page
#              cache (the driver alone, no FUSE)
#   cold       the page cache dropped (as root), a fresh imgfs -o ro
#              IMAGE MNT, fio 1 MiB sequential reads of MNT/disk
#              (psync, --direct=0 --invalidate=1, as mount.sh)
#   warm       the same with the image file in the page cache
#   qsd        stream.vmdk through qemu-storage-daemon (--blockdev
#              driver=file, driver=vmdk, --export type=fuse), cold and
#              warm alike; a fresh daemon for every run
# Every mount starts with an empty page cache for its disk file, so every
# read reaches the daemon.
#
# Targets (issue: more image formats), as ratios of medians, cold and
# warm: mount seq of VHDX, VDI, VMDK >= 0.9x the qcow2; stream.vmdk
# through imgfs >= 2x through qsd.
#
# --quick: 64 MiB images, one repetition, cold runs only (CI: proves it
# works, figures mean little). BUILD=${IMGFS_BUILD_DIR:-<repo>/build}.
set -euo pipefail
# shellcheck source=tests/bench/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

bench_parse_args 3 "$@"
if ((QUICK)); then
	SIZE=$((64 << 20)) SEQ_MAX=10 PHASES=(cold)
	((REPS_GIVEN)) || REPS=1
else
	SIZE=$((1 << 30)) SEQ_MAX=60 PHASES=(cold warm)
fi
READY_DEADLINE=30 # seconds qsd may take to make its export readable

IMGFS=$BUILD/fuse/imgfs
bench_require qemu-img fio fusermount3 awk
bench_need_program
[[ -x $IMGFS ]] || bench_die "$IMGFS is missing (build first)"
bench_need_fuse
HAVE_QSD=0
command -v qemu-storage-daemon >/dev/null && HAVE_QSD=1

# On disk: an impossible size makes bench_workdir skip /dev/shm.
bench_workdir $((1 << 50))
RAW=$W/disk.raw COMP=$W/comp.raw
"$BENCH" gen "$RAW" "$SIZE" --seed 1 >/dev/null
"$BENCH" gen "$COMP" "$SIZE" --compressible --seed 2 >/dev/null
qemu-img convert -f raw -O qcow2 -o cluster_size=65536 "$RAW" "$W/disk.qcow2"
qemu-img convert -f raw -O vhdx -o subformat=dynamic "$RAW" "$W/disk.vhdx"
qemu-img convert -f raw -O vdi "$RAW" "$W/disk.vdi"
qemu-img convert -f raw -O vmdk -o subformat=monolithicSparse "$RAW" "$W/disk.vmdk"
qemu-img convert -f raw -O vpc -o subformat=dynamic,force_size=on "$RAW" "$W/disk.vhd"
qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "$COMP" "$W/stream.vmdk"
bench_log "images: $((SIZE >> 20)) MiB each; stream.vmdk $(($(stat -c %s "$W/stream.vmdk") >> 20)) MiB"

IMAGES=(qcow2 vhdx vdi vmdk vhd stream)
file_of() { [[ $1 == stream ]] && echo "$W/stream.vmdk" || echo "$W/disk.$1"; }
source_of() { [[ $1 == stream ]] && echo "$COMP" || echo "$RAW"; }

# Correctness first (untimed).
for f in "${IMAGES[@]}"; do
	"$BENCH" seq "$(file_of "$f")" "$(source_of "$f")" --verify >/dev/null ||
		bench_die "$(file_of "$f") does not read as its source"
done
bench_log "every image reads through img_pread byte for byte as its source"
rm -f "$RAW" "$COMP" # only the verification reads them

declare -A RES=()

m_pread() { # image
	local r
	bench_warm "$(file_of "$1")"
	r=$("$BENCH" seq "$(file_of "$1")")
	RES[pread $1]+=" $(bench_field img_mbps <<<"$r")"
}

# Brings the image's page cache to the state the phase wants.
prepare() { # phase image
	if [[ $1 == cold ]]; then
		bench_drop_caches
	else
		bench_warm "$(file_of "$2")"
	fi
}

seq_fio() { # file
	bench_fio mbps "$1" --name=seq --rw=read --bs=1M --numjobs=1 \
		--runtime="$SEQ_MAX"
}

m_imgfs() { # phase image
	local mnt=$W/mnt v=-
	prepare "$1" "$2"
	if bench_mount_imgfs "$IMGFS" "$(file_of "$2")" "$mnt"; then
		v=$(seq_fio "$mnt/disk") || v=-
	fi
	bench_unmount "$mnt"
	[[ -n $BENCH_IMGFS_PID ]] && bench_reap "$BENCH_IMGFS_PID" 10
	[[ $v == - ]] && bench_die "imgfs: no figure for $2 ($1)"
	RES[$1 $2]+=" $v"
}

m_qsd() { # phase
	local exp=$W/qsd-export v=-
	prepare "$1" stream
	if bench_start_qsd vmdk "$W/stream.vmdk" "$exp" "$READY_DEADLINE"; then
		v=$(seq_fio "$exp") || v=-
	fi
	bench_stop_qsd "$exp"
	[[ $v == - ]] && bench_die "qsd: no figure for stream.vmdk ($1)"
	RES[$1 qsd]+=" $v"
}

((EUID == 0)) || bench_log "not root: the page cache cannot be dropped, cold runs are warm"
((HAVE_QSD)) || bench_log "qemu-storage-daemon is not installed: no qsd figures"
RUNS=()
for f in "${IMAGES[@]}"; do RUNS+=("imgfs $f"); done
((HAVE_QSD)) && RUNS+=("qsd")
for ((rep = 0; rep < REPS; rep++)); do
	bench_log "repetition $((rep + 1))/$REPS"
	for ((i = 0; i < ${#IMAGES[@]}; i++)); do
		m_pread "${IMAGES[(rep + i) % ${#IMAGES[@]}]}"
	done
	for phase in "${PHASES[@]}"; do
		for ((i = 0; i < ${#RUNS[@]}; i++)); do
			read -r who img <<<"${RUNS[(rep + i) % ${#RUNS[@]}]}"
			if [[ $who == qsd ]]; then
				m_qsd "$phase"
			else
				m_imgfs "$phase" "$img"
			fi
		done
	done
done

# ---- report -------------------------------------------------------------

med() { # key
	# shellcheck disable=SC2086
	bench_median ${RES[$1]:-}
}

echo
echo "sequential 1 MiB reads, $((SIZE >> 20)) MiB images fully allocated, $REPS repetition(s), medians"
echo "(MB/s; a shared 2-core machine is noisy: compare ratios from one run only)"
echo
printf '%-34s %10s %10s %10s\n' image img_pread "mount cold" "mount warm"
for f in "${IMAGES[@]}"; do
	printf '%-34s %10s %10s %10s\n' "${f/#stream/stream.vmdk (streamOptimized)}" \
		"$(med "pread $f")" "$(med "cold $f")" "$(med "warm $f")"
done
if ((HAVE_QSD)); then
	printf '%-34s %10s %10s %10s\n' "stream.vmdk through qsd" - \
		"$(med "cold qsd")" "$(med "warm qsd")"
fi

echo
printf '%-36s %7s %9s  %s\n' ratio value target verdict
ratio_line() { # label a b threshold
	local r
	r=$(bench_ratio "$2" "$3")
	printf '%-36s %7s %9s  %s\n' "$1" "$r" ">= $4" "$(bench_verdict "$r" ge "$4")"
}
for phase in "${PHASES[@]}"; do
	for f in vhdx vdi vmdk; do
		ratio_line "$phase: $f / qcow2" "$(med "$phase $f")" \
			"$(med "$phase qcow2")" 0.9
	done
	printf '%-36s %7s %9s  %s\n' "$phase: vhd / qcow2" \
		"$(bench_ratio "$(med "$phase vhd")" "$(med "$phase qcow2")")" - "(for scale)"
	if ((HAVE_QSD)); then
		ratio_line "$phase: stream.vmdk imgfs / qsd" \
			"$(med "$phase stream")" "$(med "$phase qsd")" 2
	fi
done
