#!/bin/bash
# mount.sh: imgfs side by side with its peers, in one run.
# A benchmark, not a test: it prints medians and ratios against the
# targets and exits 0 whether or not they are met; it fails only when
# the images or the peers cannot be set up.
#
#   tests/bench/mount.sh [--quick] [--reps N]
#
# Targets, each mounted afresh for every run (so no run starts with pages
# another run cached), in an order that rotates with each repetition:
#   imgfs   $BUILD/fuse/imgfs -o ro disk.qcow2 MNT          (file MNT/disk)
#   qsd     qemu-storage-daemon's FUSE export of the same qcow2, read-only
#   bindfs  bindfs --multithreaded -r over the folder holding the raw twin
#           (FUSE's own cost: a plain passthrough, no image format)
# Workloads (fio, psync, buffered: --direct=0, --invalidate=1):
#   seq     1 MiB sequential reads of the whole 1 GiB image (all allocated)
#   rand    4 KiB random reads, 4 jobs, each job over its own quarter of the
#           disk with fio's random map: every page is read once, so every
#           read misses the page cache and reaches the daemon
#   zlib    1 MiB sequential reads of a zlib-compressed qcow2 (~2:1);
#           imgfs and qsd only
# Also: mount-to-ready (from starting the command until the file can be
# read: for imgfs the command returning, for qsd polling the export) and
# each daemon's peak RSS (VmHWM) after its workload, before unmounting.
#
# --quick: 64 MiB images, one repetition, runs capped at 2 s (CI: proves
# it works, figures mean little). BUILD=${IMGFS_BUILD_DIR:-<repo>/build}.
# Until $BUILD/fuse/imgfs exists, imgfs is reported as "not built".
set -euo pipefail
# shellcheck source=tests/bench/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

bench_parse_args 5 "$@"

if ((QUICK)); then
	SIZE=$((64 << 20)) SEQ_MAX=10 RAND_MAX=2
	((REPS_GIVEN)) || REPS=1
else
	SIZE=$((1 << 30)) SEQ_MAX=60 RAND_MAX=10
fi
READY_DEADLINE=30 # seconds a daemon may take to make its file readable

IMGFS=$BUILD/fuse/imgfs
bench_require qemu-img fio fusermount3 awk
bench_need_program

bench_need_fuse

bench_pick_targets "$IMGFS"

bench_workdir $((SIZE * 4))
bench_make_images "$SIZE"
rm -f "$W/comp.raw" # only imgfmt.sh compares against it
bench_warm "$W/disk.qcow2" "$W/raw/disk.raw" "$W/comp.qcow2"

# mount_<target> IMAGE: sets FILE (what fio reads), PID, READY_S; 0 or 1.
FILE='' PID='' READY_S=''

mount_imgfs() {
	local ret=0
	bench_mount_imgfs "$IMGFS" "$1" "$W/mnt-imgfs" || ret=1
	PID=$BENCH_IMGFS_PID
	((ret == 0)) || return 1
	READY_S=$BENCH_MOUNT_S
	FILE=$W/mnt-imgfs/disk
}

mount_qsd() {
	local t0 ret=0
	t0=$(bench_now)
	bench_start_qsd qcow2 "$1" "$W/qsd-export" "$READY_DEADLINE" || ret=1
	PID=$BENCH_QSD_PID
	((ret == 0)) || return 1
	READY_S=$(bench_elapsed "$t0" "$(bench_now)")
	FILE=$W/qsd-export
}

mount_bindfs() {
	local mnt=$W/mnt-bindfs t0 t1
	mkdir -p "$mnt"
	bench_track_mount "$mnt"
	t0=$(bench_now)
	if ! bindfs --multithreaded -r --no-allow-other "$W/raw" "$mnt" 2>"$W/bindfs.err"; then
		echo "bindfs: mount failed: $(head -n 3 "$W/bindfs.err")" >&2
		return 1
	fi
	t1=$(bench_now)
	READY_S=$(bench_elapsed "$t0" "$t1")
	FILE=$mnt/disk.raw
	PID=$(bench_find_daemon bindfs "$mnt") || PID=
	[[ -n $PID ]] && bench_track_pid "$PID"
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

# fio over $FILE; prints MB/s (seq, zlib) or IOPS (rand).
run_fio() {
	case $1 in
	seq | zlib) bench_fio mbps "$FILE" --name="$1" --rw=read --bs=1M \
		--numjobs=1 --runtime="$SEQ_MAX" ;;
	rand) bench_fio iops "$FILE" --name=rand --rw=randread --bs=4k \
		--numjobs=4 --size=$((SIZE / 4)) \
		--offset_increment=$((SIZE / 4)) --runtime="$RAND_MAX" ;;
	esac
}

declare -A RES=() READY=() RSS=()
image_for() { [[ $1 == zlib ]] && echo "$W/comp.qcow2" || echo "$W/disk.qcow2"; }

run_one() {
	local target=$1 wl=$2 v hwm
	[[ $target == bindfs && $wl == zlib ]] && return 0
	if ! "mount_$target" "$(image_for "$wl")"; then
		unmount_target "$target"
		RES[$target $wl]+=" -"
		STATUS[$target]="failed (see above)"
		return 0
	fi
	READY[$target]+=" $READY_S"
	v=$(run_fio "$wl") || v=-
	hwm=-
	[[ -n $PID ]] && hwm=$(bench_vm_hwm_kib "$PID")
	unmount_target "$target"
	RES[$target $wl]+=" $v"
	RSS[$target $wl]+=" $hwm"
}

WORKLOADS=(seq rand zlib)
bench_log "targets: ${TARGETS[*]}; imgfs: ${STATUS[imgfs]}"
for ((rep = 0; rep < REPS; rep++)); do
	bench_log "repetition $((rep + 1))/$REPS"
	for wl in "${WORKLOADS[@]}"; do
		for ((i = 0; i < ${#TARGETS[@]}; i++)); do
			run_one "${TARGETS[(rep + i) % ${#TARGETS[@]}]}" "$wl"
		done
	done
done

# ---- report -------------------------------------------------------------

med() { # target workload
	if [[ ${STATUS[$1]} == "not built" || ${STATUS[$1]} == "not installed" ]]; then
		echo "-"
	else
		# shellcheck disable=SC2086
		bench_median ${RES[$1 $2]:-}
	fi
}
ready_ms() {
	local s
	# shellcheck disable=SC2086
	s=$(bench_median ${READY[$1]:-})
	awk -v s="$s" 'BEGIN { if (s == "-") print "-"; else printf "%.1f\n", s * 1000 }'
}
rss_mib() { # target: max over every run
	local all=() wl kib
	for wl in "${WORKLOADS[@]}"; do
		# shellcheck disable=SC2206
		all+=(${RSS[$1 $wl]:-})
	done
	kib=$(bench_max "${all[@]}")
	awk -v k="$kib" 'BEGIN { if (k == "-") print "-"; else printf "%.1f\n", k / 1024 }'
}
col() { # a figure, or why there is none
	case ${STATUS[$1]} in
	"not built" | "not installed") echo "${STATUS[$1]}" ;;
	failed*) [[ $2 == - ]] && echo failed || echo "$2" ;;
	*) echo "$2" ;;
	esac
}

declare -A M=()
for t in imgfs qsd bindfs; do
	for wl in "${WORKLOADS[@]}"; do
		M[$t $wl]=$(med "$t" "$wl")
	done
	M[$t ready]=$(ready_ms "$t")
	M[$t rss]=$(rss_mib "$t")
done
M[bindfs zlib]=-

echo
echo "imgfs vs peers over FUSE: $((SIZE >> 20)) MiB images, $REPS repetition(s), medians"
echo "(a shared 2-core machine is noisy: compare ratios from one run only)"
echo
row() { printf '%-30s %12s %12s %12s\n' "$@"; }
vrow() { printf '%-36s %7s %9s  %s\n' "$@"; }
row "figure" imgfs qsd bindfs
for row in "seq 1 MiB read (MB/s):seq" "rand 4 KiB, 4 jobs (IOPS):rand" \
	"zlib qcow2 seq read (MB/s):zlib" "mount-to-ready (ms):ready" \
	"peak RSS, VmHWM (MiB):rss"; do
	label=${row%%:*} key=${row##*:}
	if [[ $key == zlib ]]; then
		b=n/a
	else
		b=$(col bindfs "${M[bindfs $key]}")
	fi
	row "$label" "$(col imgfs "${M[imgfs $key]}")" "$(col qsd "${M[qsd $key]}")" "$b"
done

echo
vrow "ratio" value target verdict
target_line() { # label value op threshold shown-target
	vrow "$1" "$2" "$5" "$(bench_verdict "$2" "$3" "$4")"
}
r=$(bench_ratio "${M[imgfs seq]}" "${M[qsd seq]}")
target_line "seq: imgfs / qsd" "$r" ge 4 ">= 4"
r=$(bench_ratio "${M[imgfs seq]}" "${M[bindfs seq]}")
target_line "seq: imgfs / bindfs" "$r" ge 0.7 ">= 0.7"
r=$(bench_ratio "${M[imgfs rand]}" "${M[qsd rand]}")
target_line "rand 4k x4: imgfs / qsd" "$r" ge 3 ">= 3"
r=$(bench_ratio "${M[imgfs rand]}" "${M[bindfs rand]}")
target_line "rand 4k x4: imgfs / bindfs" "$r" ge 0.7 ">= 0.7"
r=$(bench_ratio "${M[imgfs zlib]}" "${M[qsd zlib]}")
target_line "zlib seq: imgfs / qsd" "$r" ge 2 ">= 2"
target_line "imgfs peak RSS (MiB)" "${M[imgfs rss]}" le 32 "<= 32"
r=$(bench_ratio "${M[imgfs ready]}" "${M[qsd ready]}")
target_line "mount-to-ready: imgfs / qsd" "$r" le 1 "<= 1"
if [[ ${STATUS[imgfs]} != ok ]]; then
	echo
	echo "imgfs: ${STATUS[imgfs]} ($IMGFS)"
fi
