#!/bin/bash
# mount-write.sh: writing through imgfs side by side with its peers, in one
# run. A benchmark, not a test: it prints medians and
# ratios against the targets and exits 0 whether or not they are met; it
# fails only when the images or the peers cannot be set up.
#
#   tests/bench/mount-write.sh [--quick] [--reps N]
#
# Targets, each on a fresh empty image and a fresh mount for every run, in
# an order that rotates with each repetition:
#   imgfs   $BUILD/fuse/imgfs (read-write) on an empty qcow2  (file MNT/disk)
#   qsd     qemu-storage-daemon --export type=fuse,writable=on of an
#           empty qcow2
#   bindfs  bindfs --multithreaded over the folder of an empty (sparse)
#           raw file: FUSE's own cost, no image format
# Workloads (fio, psync, buffered: --direct=0), timed from the start of fio
# until its final fsync returned:
#   seq     1 MiB sequential writes of the whole disk (1 GiB), end_fsync
#   rand    4 KiB random writes for 15 s, 4 jobs each over its own quarter
#           of the disk, end_fsync
# After each run of imgfs and qsd: qemu-img check on the image, and its
# size. For seq the file sizes compare directly; for rand the amount
# written depends on the speed, so what compares is the overhead: image
# file size / bytes qemu-img map reports as data.
#
# --quick: 64 MiB disks, one repetition, 2 s random runs (CI: proves it
# works; figures mean little). BUILD=${IMGFS_BUILD_DIR:-<repo>/build}.
set -euo pipefail
# shellcheck source=tests/bench/bench-lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/bench-lib.sh"

bench_parse_args 3 "$@"

if ((QUICK)); then
	SIZE=$((64 << 20)) RAND_S=2
	((REPS_GIVEN)) || REPS=1
else
	SIZE=$((1 << 30)) RAND_S=15
fi
READY_DEADLINE=30 # seconds a daemon may take to make its file writable

IMGFS=$BUILD/fuse/imgfs
bench_require qemu-img fio fusermount3 awk jq

bench_need_fuse

bench_pick_targets "$IMGFS"

# One image at a time, written in full at most, plus qemu-img's metadata.
bench_workdir $((SIZE * 3))
[[ $W == /dev/shm/* ]] ||
	bench_log "not on tmpfs ($W): figures include the disk; deleting randomly written files may be slow"

mkfifo "$W/tick"
exec {TICK}<>"$W/tick"
tick() { read -r -t 0.002 -u "$TICK" _ || true; }

find_daemon() {
	local comm=$1 path=$2 p c
	for p in /proc/[0-9]*; do
		{ read -r c <"$p/comm"; } 2>/dev/null || continue
		[[ $c == "$comm" ]] || continue
		if tr '\0' '\n' <"$p/cmdline" 2>/dev/null | grep -qxF -- "$path"; then
			echo "${p#/proc/}"
			return 0
		fi
	done
	return 1
}

# mount_<target>: a fresh empty image and mount; sets FILE (what fio
# writes), IMAGE (what qemu-img checks; empty for bindfs) and PID.
FILE='' IMAGE='' PID=''

mount_imgfs() {
	local mnt=$W/mnt-imgfs
	IMAGE=$W/imgfs.qcow2
	rm -f "$IMAGE"
	qemu-img create -q -f qcow2 "$IMAGE" "$SIZE"
	mkdir -p "$mnt"
	bench_track_mount "$mnt"
	if ! "$IMGFS" "$IMAGE" "$mnt" 2>"$W/imgfs.err"; then
		echo "imgfs: mount failed: $(head -n 3 "$W/imgfs.err")" >&2
		return 1
	fi
	FILE=$mnt/disk
	PID=$(find_daemon imgfs "$mnt") || PID=
	[[ -n $PID ]] && bench_track_pid "$PID"
	[[ -w $FILE ]] || { echo "imgfs: $FILE is not writable" >&2; return 1; }
}

mount_qsd() {
	local exp=$W/qsd-export deadline
	IMAGE=$W/qsd.qcow2
	rm -f "$IMAGE"
	qemu-img create -q -f qcow2 "$IMAGE" "$SIZE"
	: >"$exp"
	bench_track_mount "$exp"
	qemu-storage-daemon \
		--blockdev "driver=file,node-name=file,filename=$IMAGE" \
		--blockdev driver=qcow2,node-name=qcow2,file=file \
		--export "type=fuse,id=exp,node-name=qcow2,mountpoint=$exp,writable=on" \
		</dev/null >"$W/qsd.log" 2>&1 &
	PID=$!
	bench_track_pid "$PID"
	deadline=$((SECONDS + READY_DEADLINE))
	until [[ -s $exp ]] && head -c 512 "$exp" >/dev/null 2>&1; do
		if ! bench_pid_alive "$PID"; then
			echo "qsd: exited before the export was ready: $(head -n 3 "$W/qsd.log")" >&2
			return 1
		fi
		((SECONDS < deadline)) || {
			echo "qsd: export not ready after ${READY_DEADLINE}s" >&2
			return 1
		}
		tick
	done
	FILE=$exp
}

mount_bindfs() {
	local mnt=$W/mnt-bindfs
	IMAGE=
	rm -rf "$W/raw"
	mkdir -p "$W/raw" "$mnt"
	truncate -s "$SIZE" "$W/raw/disk.raw"
	bench_track_mount "$mnt"
	if ! bindfs --multithreaded --no-allow-other "$W/raw" "$mnt" 2>"$W/bindfs.err"; then
		echo "bindfs: mount failed: $(head -n 3 "$W/bindfs.err")" >&2
		return 1
	fi
	FILE=$mnt/disk.raw
	PID=$(find_daemon bindfs "$mnt") || PID=
	[[ -n $PID ]] && bench_track_pid "$PID"
}

unmount_target() {
	case $1 in
	imgfs) bench_unmount "$W/mnt-imgfs" ;;
	bindfs) bench_unmount "$W/mnt-bindfs" ;;
	qsd) bench_pid_alive "$PID" && kill -TERM "$PID" 2>/dev/null ;;
	esac
	[[ -n $PID ]] && bench_reap "$PID" 30
	[[ $1 == qsd ]] && bench_unmount "$W/qsd-export"
	PID=
}

# fio over $FILE, timed until the final fsync returned; prints MB/s (seq)
# or IOPS (rand).
run_fio() {
	local wl=$1 out args t0 t1 el
	args=(--name="$wl" --filename="$FILE" --ioengine=psync --direct=0
		--end_fsync=1 --group_reporting --output-format=terse
		--terse-version=3 --randseed=42)
	case $wl in
	seq) args+=(--rw=write --bs=1M --numjobs=1 --size="$SIZE") ;;
	rand) args+=(--rw=randwrite --bs=4k --numjobs=4 --thread
		--size=$((SIZE / 4)) --offset_increment=$((SIZE / 4))
		--time_based --runtime="$RAND_S") ;;
	esac
	t0=$(bench_now)
	out=$(fio "${args[@]}" 2>"$W/fio.err") || {
		echo "fio $wl on $FILE failed: $(head -n 3 "$W/fio.err")" >&2
		return 1
	}
	t1=$(bench_now)
	el=$(bench_elapsed "$t0" "$t1")
	# terse v3: 5 error, 47 write KiB
	awk -F';' -v wl="$wl" -v el="$el" 'NR == 1 {
		if ($5 != 0) exit 1
		if (wl == "rand") printf "%.0f\n", $47 / 4 / el
		else printf "%.1f\n", $47 * 1024 / 1e6 / el }' <<<"$out"
}

# After unmounting: "clean" or "UNCLEAN", the file size, and the overhead
# (file size / guest bytes stored as data).
inspect_image() {
	local img=$1 size data
	if qemu-img check -q "$img" >"$W/check.out" 2>&1; then
		CHECK=clean
	else
		CHECK=UNCLEAN
		echo "qemu-img check $img:" >&2
		head -n 10 "$W/check.out" >&2
	fi
	size=$(stat -c %s "$img")
	data=$(qemu-img map --output=json "$img" |
		jq '[ .[] | select(.data) | .length ] | add // 0')
	IMGSIZE=$size
	OVERHEAD=$(awk -v s="$size" -v d="$data" 'BEGIN { if (d == 0) print "-"; else printf "%.4f\n", s / d }')
}

declare -A RES=() SIZES=() OVER=() CHECKS=()
run_one() {
	local target=$1 wl=$2 v
	if ! "mount_$target"; then
		unmount_target "$target"
		RES[$target $wl]+=" -"
		STATUS[$target]="failed (see above)"
		return 0
	fi
	v=$(run_fio "$wl") || v=-
	unmount_target "$target"
	RES[$target $wl]+=" $v"
	if [[ -n $IMAGE ]]; then
		inspect_image "$IMAGE"
		SIZES[$target $wl]+=" $IMGSIZE"
		OVER[$target $wl]+=" $OVERHEAD"
		CHECKS[$target]+=" $CHECK"
		rm -f "$IMAGE"
	fi
	rm -rf "$W/raw"
}

WORKLOADS=(seq rand)
bench_log "targets: ${TARGETS[*]}; imgfs: ${STATUS[imgfs]}; $((SIZE >> 20)) MiB disks, rand ${RAND_S}s"
for ((rep = 0; rep < REPS; rep++)); do
	bench_log "repetition $((rep + 1))/$REPS"
	for wl in "${WORKLOADS[@]}"; do
		for ((i = 0; i < ${#TARGETS[@]}; i++)); do
			run_one "${TARGETS[(rep + i) % ${#TARGETS[@]}]}" "$wl"
		done
	done
done

# ---- report -------------------------------------------------------------

med() { # ARRAY-NAME target workload
	local -n arr=$1
	case ${STATUS[$2]} in
	"not built" | "not installed") echo - ;;
	*)
		# shellcheck disable=SC2086
		bench_median ${arr[$2 $3]:-}
		;;
	esac
}
col() {
	case ${STATUS[$1]} in
	"not built" | "not installed") echo "${STATUS[$1]}" ;;
	failed*) [[ $2 == - ]] && echo failed || echo "$2" ;;
	*) echo "$2" ;;
	esac
}
mib() { awk -v b="$1" 'BEGIN { if (b == "-") print "-"; else printf "%.1f\n", b / 1048576 }'; }
checks() { # "clean/runs" of a target
	local all=${CHECKS[$1]:-} n c
	n=$(wc -w <<<"$all")
	c=$(grep -o -w clean <<<"$all" | wc -l)
	((n)) && echo "$c/$n" || echo -
}

declare -A M=()
for t in imgfs qsd bindfs; do
	for wl in "${WORKLOADS[@]}"; do
		M[$t $wl]=$(med RES "$t" "$wl")
		M[$t $wl size]=$(med SIZES "$t" "$wl")
		M[$t $wl over]=$(med OVER "$t" "$wl")
	done
done

echo
echo "writing through FUSE: $((SIZE >> 20)) MiB disks, $REPS repetition(s), medians"
echo "(a shared 2-core machine is noisy: compare ratios from one run only)"
echo
row() { printf '%-36s %12s %12s %12s\n' "$@"; }
vrow() { printf '%-40s %7s %9s  %s\n' "$@"; }
row figure imgfs qsd bindfs
row "seq 1 MiB write + fsync (MB/s)" "$(col imgfs "${M[imgfs seq]}")" \
	"$(col qsd "${M[qsd seq]}")" "$(col bindfs "${M[bindfs seq]}")"
row "rand 4 KiB x4, ${RAND_S}s + fsync (IOPS)" "$(col imgfs "${M[imgfs rand]}")" \
	"$(col qsd "${M[qsd rand]}")" "$(col bindfs "${M[bindfs rand]}")"
row "image after seq (MiB)" "$(mib "${M[imgfs seq size]}")" "$(mib "${M[qsd seq size]}")" n/a
row "image / data after rand" "${M[imgfs rand over]}" "${M[qsd rand over]}" n/a
row "qemu-img check clean (runs)" "$(checks imgfs)" "$(checks qsd)" n/a

echo
vrow "ratio" value target verdict
target_line() { vrow "$1" "$2" "$5" "$(bench_verdict "$2" "$3" "$4")"; }
r=$(bench_ratio "${M[imgfs seq]}" "${M[qsd seq]}")
target_line "seq write: imgfs / qsd" "$r" ge 1.2 ">= 1.2"
r=$(bench_ratio "${M[imgfs rand]}" "${M[qsd rand]}")
target_line "rand 4k write: imgfs / qsd" "$r" ge 1.3 ">= 1.3"
r=$(bench_ratio "${M[imgfs seq size]}" "${M[qsd seq size]}")
target_line "image size after seq: imgfs / qsd" "$r" le 1.05 "<= 1.05"
r=$(bench_ratio "${M[imgfs rand over]}" "${M[qsd rand over]}")
target_line "image overhead after rand: imgfs / qsd" "$r" le 1.05 "<= 1.05"
c=$(checks imgfs)
if [[ $c == - ]]; then
	v=n/a
elif [[ ${c%/*} == "${c#*/}" ]]; then
	v=met
else
	v=MISSED
fi
vrow "imgfs images qemu-img check clean" "$c" all "$v"
echo
vrow "for scale (no target)" value "" ""
vrow "seq write: imgfs / bindfs" "$(bench_ratio "${M[imgfs seq]}" "${M[bindfs seq]}")" "" ""
vrow "rand 4k write: imgfs / bindfs" "$(bench_ratio "${M[imgfs rand]}" "${M[bindfs rand]}")" "" ""
if [[ ${STATUS[imgfs]} != ok ]]; then
	echo
	echo "imgfs: ${STATUS[imgfs]} ($IMGFS)"
fi
