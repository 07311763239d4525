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

# A sleep that forks nothing, for polling in small steps.
mkfifo "$W/tick"
exec {TICK}<>"$W/tick"
tick() { read -r -t 0.002 -u "$TICK" _ || true; }

# The daemon that serves mountpoint $2 and is called $1: the PID it has
# after daemonizing is not one we can know from $!.
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

vm_hwm_kib() {
	awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo -
}

# mount_<target> IMAGE: sets FILE (what fio reads), PID, READY_S; 0 or 1.
FILE='' PID='' READY_S=''

mount_imgfs() {
	local mnt=$W/mnt-imgfs t0 t1
	mkdir -p "$mnt"
	bench_track_mount "$mnt"
	t0=$(bench_now)
	if ! "$IMGFS" -o ro "$1" "$mnt" 2>"$W/imgfs.err"; then
		echo "imgfs: mount failed: $(head -n 3 "$W/imgfs.err")" >&2
		return 1
	fi
	t1=$(bench_now)
	READY_S=$(bench_elapsed "$t0" "$t1")
	FILE=$mnt/disk
	PID=$(find_daemon imgfs "$mnt") || PID=
	[[ -n $PID ]] && bench_track_pid "$PID"
	[[ -r $FILE ]] || { echo "imgfs: $FILE is not readable after the command returned" >&2; return 1; }
}

mount_qsd() {
	local exp=$W/qsd-export t0 t1 deadline
	: >"$exp"
	bench_track_mount "$exp"
	t0=$(bench_now)
	# read-only=on on both nodes: the same promise imgfs -o ro makes.
	qemu-storage-daemon \
		--blockdev "driver=file,node-name=file,filename=$1,read-only=on" \
		--blockdev driver=qcow2,node-name=qcow2,file=file,read-only=on \
		--export "type=fuse,id=exp,node-name=qcow2,mountpoint=$exp,writable=off" \
		</dev/null >"$W/qsd.log" 2>&1 &
	PID=$!
	bench_track_pid "$PID"
	deadline=$(awk -v t="$t0" -v d="$READY_DEADLINE" 'BEGIN { printf "%.0f", t + d }')
	# Before the export is up, the file is our empty one; once mounted it
	# has the virtual size. Then one read proves it serves data.
	until [[ -s $exp ]] && head -c 512 "$exp" >/dev/null 2>&1; do
		if ! bench_pid_alive "$PID"; then
			echo "qsd: exited before the export was ready: $(head -n 3 "$W/qsd.log")" >&2
			return 1
		fi
		if (($(bench_now | cut -d. -f1) >= deadline)); then
			echo "qsd: export not readable after ${READY_DEADLINE}s" >&2
			return 1
		fi
		tick
	done
	t1=$(bench_now)
	READY_S=$(bench_elapsed "$t0" "$t1")
	FILE=$exp
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
	PID=$(find_daemon bindfs "$mnt") || PID=
	[[ -n $PID ]] && bench_track_pid "$PID"
}

unmount_target() {
	local target=$1
	case $target in
	imgfs) bench_unmount "$W/mnt-imgfs" ;;
	bindfs) bench_unmount "$W/mnt-bindfs" ;;
	qsd)
		# qemu-storage-daemon unmounts its export on SIGTERM.
		bench_pid_alive "$PID" && kill -TERM "$PID" 2>/dev/null
		;;
	esac
	[[ -n $PID ]] && bench_reap "$PID" 10
	[[ $target == qsd ]] && bench_unmount "$W/qsd-export"
	PID=
}

# fio over $FILE; prints MB/s (seq, zlib) or IOPS (rand).
run_fio() {
	local wl=$1 out args
	args=(--name="$wl" --filename="$FILE" --ioengine=psync --direct=0
		--invalidate=1 --group_reporting --output-format=terse
		--terse-version=3)
	case $wl in
	seq | zlib) args+=(--rw=read --bs=1M --numjobs=1 --runtime="$SEQ_MAX") ;;
	rand) args+=(--rw=randread --bs=4k --numjobs=4 --size=$((SIZE / 4))
		--offset_increment=$((SIZE / 4)) --runtime="$RAND_MAX") ;;
	esac
	out=$(fio "${args[@]}" 2>"$W/fio.err") || {
		echo "fio $wl on $FILE failed: $(head -n 3 "$W/fio.err")" >&2
		return 1
	}
	# terse v3: 5 error, 6 read KiB, 7 read KiB/s, 8 read IOPS
	awk -F';' -v wl="$wl" 'NR == 1 {
		if ($5 != 0) exit 1
		if (wl == "rand") print $8; else printf "%.1f\n", $7 * 1024 / 1e6 }' <<<"$out"
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
	[[ -n $PID ]] && hwm=$(vm_hwm_kib "$PID")
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
