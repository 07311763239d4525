# bench-lib.sh: what the benchmark scripts share. Sourced, not run.
# shellcheck shell=bash
#
# Sets REPO, BUILD, BENCH (the imgfmt-bench program); offers a work
# directory with cleanup on any exit, the test images, timing, medians and
# ratios, and the FUSE peers: finding a daemon by its mountpoint, starting
# qemu-storage-daemon's export, fio. Everything the scripts start or mount
# is recorded here
# (bench_track_pid, bench_track_mount) and undone by bench_cleanup: only
# those processes are killed, only those mounts unmounted.

BENCH_HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd "$BENCH_HERE/../.." && pwd)
BUILD=${IMGFS_BUILD_DIR:-$REPO/build}
BENCH=$BUILD/tests/bench/imgfmt-bench

W=                      # the work directory
declare -a BENCH_PIDS=() BENCH_MOUNTS=()

bench_die() {
	echo "${0##*/}: $*" >&2
	exit 1
}

bench_log() {
	echo "# $*" >&2
}

# The imgfmt-bench program; built on demand when the build dir exists.
bench_need_program() {
	if [[ ! -x $BENCH && -f $BUILD/build.ninja ]]; then
		ninja -C "$BUILD" tests/bench/imgfmt-bench >/dev/null ||
			bench_die "cannot build $BENCH"
	fi
	[[ -x $BENCH ]] ||
		bench_die "$BENCH is missing: meson setup $BUILD && ninja -C $BUILD (or set IMGFS_BUILD_DIR)"
}

bench_require() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null || bench_die "$t is not installed"
	done
}

# Parses the common command line: --quick, --reps N, --help (prints the
# script's header comment). Sets QUICK (0/1), REPS (default $1) and
# REPS_GIVEN (1 when --reps was given).
bench_parse_args() {
	QUICK=0 REPS=$1 REPS_GIVEN=0
	shift
	while (($#)); do
		case $1 in
		--quick) QUICK=1 ;;
		--reps) REPS=${2:?--reps needs a number} REPS_GIVEN=1; shift ;;
		-h | --help)
			sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
			exit 0 ;;
		*) bench_die "unknown argument $1 (try --help)" ;;
		esac
		shift
	done
}

# FUSE needs /dev/fuse; distributions ship it 0666, the test setup makes
# it so, and root can do it here.
bench_need_fuse() {
	if [[ ! -r /dev/fuse || ! -w /dev/fuse ]]; then
		if ((EUID == 0)); then
			chmod 0666 /dev/fuse
		else
			bench_die "/dev/fuse is not accessible (chmod 0666 /dev/fuse as root)"
		fi
	fi
}

# Sets TARGETS to those of imgfs, qsd and bindfs that can run, and
# STATUS[name] to "ok" or why not. $1 is the imgfs binary.
bench_pick_targets() {
	TARGETS=()
	declare -gA STATUS=()
	if [[ -x $1 ]]; then
		TARGETS+=(imgfs) STATUS[imgfs]=ok
	else
		STATUS[imgfs]="not built"
	fi
	if command -v qemu-storage-daemon >/dev/null; then
		TARGETS+=(qsd) STATUS[qsd]=ok
	else
		STATUS[qsd]="not installed"
	fi
	if command -v bindfs >/dev/null; then
		TARGETS+=(bindfs) STATUS[bindfs]=ok
	else
		STATUS[bindfs]="not installed"
	fi
	((${#TARGETS[@]})) || bench_die "nothing to measure"
}

bench_track_pid() { BENCH_PIDS+=("$1"); }
bench_track_mount() { BENCH_MOUNTS+=("$1"); }

bench_is_mounted() {
	# /proc/self/mounts escapes blanks as \040; our paths have none.
	awk -v p="$1" '$2 == p { found = 1 } END { exit !found }' /proc/self/mounts
}

bench_unmount() {
	local m=$1 i
	bench_is_mounted "$m" || return 0
	fusermount3 -u "$m" 2>/dev/null || umount "$m" 2>/dev/null || true
	for ((i = 0; i < 100; i++)); do
		bench_is_mounted "$m" || return 0
		sleep 0.05
	done
	fusermount3 -u -z "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
}

bench_pid_alive() {
	[[ -n $1 ]] && kill -0 "$1" 2>/dev/null
}

# Waits up to $2 seconds (default 10) for pid $1 to go; then SIGKILL.
bench_reap() {
	local pid=$1 limit=${2:-10} i
	for ((i = 0; i < limit * 20; i++)); do
		bench_pid_alive "$pid" || break
		sleep 0.05
	done
	if bench_pid_alive "$pid"; then
		kill -KILL "$pid" 2>/dev/null || true
	fi
	wait "$pid" 2>/dev/null || true
}

bench_cleanup() {
	local rc=$? m p
	trap - EXIT INT TERM
	for m in "${BENCH_MOUNTS[@]}"; do
		bench_unmount "$m"
	done
	for p in "${BENCH_PIDS[@]}"; do
		if bench_pid_alive "$p"; then
			kill -TERM "$p" 2>/dev/null || true
			bench_reap "$p" 5
		fi
	done
	if [[ -n $W && -d $W ]]; then
		if grep -qF " $W/" /proc/self/mounts; then
			echo "${0##*/}: something is still mounted under $W; left in place" >&2
		else
			rm -rf --one-file-system "$W"
		fi
	fi
	exit "$rc"
}

# Creates the work directory on tmpfs when memory allows ($1: bytes the
# images need), else under ${TMPDIR:-/var/tmp}, and arms the cleanup.
bench_workdir() {
	local need=$1 avail_kb base
	avail_kb=$(awk '/^MemAvailable:/ { print $2 }' /proc/meminfo)
	base=${TMPDIR:-/var/tmp}
	# Leave half of what is free to everyone else on the machine.
	if [[ -d /dev/shm && -w /dev/shm ]] &&
		((need / 1024 < avail_kb / 2)); then
		base=/dev/shm
	fi
	W=$(mktemp -d "$base/imgfs-bench.XXXXXX") || bench_die "mktemp failed"
	chmod 0755 "$W"
	trap bench_cleanup EXIT
	trap 'exit 130' INT
	trap 'exit 143' TERM
	bench_log "work dir $W"
}

# Builds the images in $W ($1: size in bytes):
#   $W/raw/disk.raw     pseudo-random data (the raw twin), alone in its folder
#   $W/disk.qcow2       the same bytes, qcow2 v3, 64 KiB clusters, all allocated
#   $W/comp.raw         data that deflates about 2:1 (half random, half zero)
#   $W/comp.qcow2       that data as a zlib-compressed qcow2 (qemu-img -c)
bench_make_images() {
	local size=$1
	mkdir -p "$W/raw"
	"$BENCH" gen "$W/raw/disk.raw" "$size" --seed 1 >/dev/null
	qemu-img convert -f raw -O qcow2 -o cluster_size=65536 \
		"$W/raw/disk.raw" "$W/disk.qcow2"
	"$BENCH" gen "$W/comp.raw" "$size" --compressible --seed 2 >/dev/null
	qemu-img convert -c -f raw -O qcow2 \
		-o cluster_size=65536,compression_type=zlib \
		"$W/comp.raw" "$W/comp.qcow2"
	local comp_bytes
	comp_bytes=$(stat -c %s "$W/comp.qcow2")
	bench_log "images: $((size >> 20)) MiB raw and qcow2; compressed qcow2 $((comp_bytes >> 20)) MiB ($(bench_ratio "$size" "$comp_bytes"):1)"
}

# Reads the images once so that they are in the page cache (a no-op on
# tmpfs, needed elsewhere).
bench_warm() {
	cat "$@" >/dev/null
}

# ---- FUSE daemons and fio (mount.sh, formats.sh) --------------------------

# A sleep that forks nothing, for polling in small steps (a FIFO in $W
# that nobody writes: the read times out after 2 ms).
bench_tick() {
	if [[ -z ${BENCH_TICK_FD:-} ]]; then
		mkfifo "$W/tick"
		exec {BENCH_TICK_FD}<>"$W/tick"
	fi
	read -r -t 0.002 -u "$BENCH_TICK_FD" _ || true
}

# The PID of the daemon called $1 that serves mountpoint $2: the PID it
# has after daemonizing is not one we can know from $!.
bench_find_daemon() {
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

# Mounts image $2 read-only with the imgfs binary $1 on $3 (made if
# missing); returns when imgfs does, that is when MNT/disk can be read.
# Sets BENCH_IMGFS_PID (tracked; empty if not found) and BENCH_MOUNT_S
# (seconds the command took); 1 after one line on stderr when the mount
# fails. Unmount with bench_unmount.
bench_mount_imgfs() {
	local imgfs=$1 image=$2 mnt=$3 t0
	mkdir -p "$mnt"
	bench_track_mount "$mnt"
	BENCH_IMGFS_PID='' BENCH_MOUNT_S=''
	t0=$(bench_now)
	if ! "$imgfs" -o ro "$image" "$mnt" 2>"$mnt.err"; then
		echo "imgfs: mount of $image failed: $(head -n 3 "$mnt.err")" >&2
		return 1
	fi
	BENCH_MOUNT_S=$(bench_elapsed "$t0" "$(bench_now)")
	BENCH_IMGFS_PID=$(bench_find_daemon imgfs "$mnt") || BENCH_IMGFS_PID=
	[[ -n $BENCH_IMGFS_PID ]] && bench_track_pid "$BENCH_IMGFS_PID"
	[[ -r $mnt/disk ]] || {
		echo "imgfs: $mnt/disk is not readable after the command returned" >&2
		return 1
	}
}

bench_vm_hwm_kib() {
	awk '/^VmHWM:/ { print $2 }' "/proc/$1/status" 2>/dev/null || echo -
}

# Exports image $2 (qemu block driver $1: qcow2, vmdk, ...) read-only with
# qemu-storage-daemon's FUSE export on the file $3, and waits until the
# export serves data, at most $4 seconds. Sets BENCH_QSD_PID (tracked,
# also on failure, so that it is stopped); 1 after one line on stderr
# when it fails. Stop it with bench_stop_qsd.
bench_start_qsd() {
	local driver=$1 image=$2 exp=$3 limit=$4 deadline log
	log=$exp.log
	: >"$exp"
	bench_track_mount "$exp"
	deadline=$(($(bench_now | cut -d. -f1) + limit))
	# read-only=on on both nodes: the same promise imgfs -o ro makes.
	qemu-storage-daemon \
		--blockdev "driver=file,node-name=file,filename=$image,read-only=on" \
		--blockdev "driver=$driver,node-name=fmt,file=file,read-only=on" \
		--export "type=fuse,id=exp,node-name=fmt,mountpoint=$exp,writable=off" \
		</dev/null >"$log" 2>&1 &
	BENCH_QSD_PID=$!
	bench_track_pid "$BENCH_QSD_PID"
	# Before the export is up, the file is our empty one; once mounted it
	# has the virtual size. Then one read proves it serves data.
	until [[ -s $exp ]] && head -c 512 "$exp" >/dev/null 2>&1; do
		if ! bench_pid_alive "$BENCH_QSD_PID"; then
			echo "qsd: exited before the export was ready: $(head -n 3 "$log")" >&2
			return 1
		fi
		if (($(bench_now | cut -d. -f1) >= deadline)); then
			echo "qsd: export not readable after ${limit}s" >&2
			return 1
		fi
		bench_tick
	done
}

# Stops the qemu-storage-daemon started by bench_start_qsd on export $1;
# it unmounts its export on SIGTERM.
bench_stop_qsd() {
	if bench_pid_alive "${BENCH_QSD_PID:-}"; then
		kill -TERM "$BENCH_QSD_PID" 2>/dev/null || true
		bench_reap "$BENCH_QSD_PID" 10
	fi
	bench_unmount "$1"
	BENCH_QSD_PID=
}

# fio over file $2 with the options every script uses (psync, buffered
# reads with the file's cached pages dropped first: --direct=0
# --invalidate=1) and the workload's own options after it ($3...).
# Prints the read MB/s ($1 = mbps) or IOPS ($1 = iops); 1 after one line
# on stderr when fio fails or reports an error.
bench_fio() {
	local field=$1 file=$2 out err
	shift 2
	err=$(mktemp "$W/fio.err.XXXXXX")
	out=$(fio --filename="$file" --ioengine=psync --direct=0 \
		--invalidate=1 --group_reporting --output-format=terse \
		--terse-version=3 "$@" 2>"$err") || {
		echo "fio on $file failed: $(head -n 3 "$err")" >&2
		rm -f "$err"
		return 1
	}
	rm -f "$err"
	# terse v3: 5 error, 6 read KiB, 7 read KiB/s, 8 read IOPS
	awk -F';' -v f="$field" 'NR == 1 {
		if ($5 != 0) exit 1
		if (f == "iops") print $8; else printf "%.1f\n", $7 * 1024 / 1e6 }' <<<"$out"
}

# Empties the page cache, so that the next run reads the image from the
# disk. Only root can: for others it only syncs (the scripts say so).
bench_drop_caches() {
	sync
	if ((EUID == 0)); then
		echo 3 >/proc/sys/vm/drop_caches
	fi
}

bench_now() { echo "$EPOCHREALTIME"; }

bench_elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f", b - a }'; }

# Median of the arguments; "-" ignored; "-" if none.
bench_median() {
	printf '%s\n' "$@" | awk '$1 != "-" && $1 != "" { v[n++] = $1 + 0 }
		END {
			if (!n) { print "-"; exit }
			for (i = 1; i < n; i++)
				for (j = i; j > 0 && v[j-1] > v[j]; j--) { t = v[j]; v[j] = v[j-1]; v[j-1] = t }
			m = n % 2 ? v[(n-1)/2] : (v[n/2-1] + v[n/2]) / 2
			if (m >= 1000 || m <= -1000) printf "%.0f\n", m
			else printf "%.4g\n", m
		}'
}

bench_max() {
	printf '%s\n' "$@" | awk '$1 != "-" && $1 != "" { if (!n++ || $1 + 0 > m) m = $1 + 0 }
		END { if (!n) print "-"; else if (m >= 1000) printf "%.0f\n", m; else printf "%.4g\n", m }'
}

# $1 / $2 to 2 decimals, "-" if either is missing or $2 is 0.
bench_ratio() {
	awk -v a="$1" -v b="$2" 'BEGIN {
		if (a == "-" || b == "-" || a == "" || b == "" || b + 0 == 0) print "-"
		else printf "%.2f\n", a / b }'
}

# "met" / "MISSED" / "n/a" for value $1 against $2 ("ge" or "le") $3.
bench_verdict() {
	awk -v v="$1" -v op="$2" -v t="$3" 'BEGIN {
		if (v == "-" || v == "") { print "n/a"; exit }
		ok = op == "ge" ? v + 0 >= t + 0 : v + 0 <= t + 0
		print ok ? "met" : "MISSED" }'
}

# The value of key $1 in a "RESULT mode=... key=value" line on stdin.
bench_field() {
	awk -v k="$1" '/^RESULT / { for (i = 2; i <= NF; i++) { split($i, kv, "="); if (kv[1] == k) print kv[2] } }'
}
