#!/usr/bin/env bats
# signals.bats: how the daemon ends. kill -TERM or -INT ends it within a
# bound whatever is in flight (writes, reads, the rescan a closed disk
# asks for, a snapshot scanned on first use), on a loaded machine too; it
# unmounts and leaves a clean image.

bats_require_minimum_version 1.5.0

# Twenty cycles of mount, load, kill and check on a loaded machine: more
# than the suite's default per test (helpers.bash).
BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-1200}

load helpers
load images

# Seconds from the signal to the daemon's exit that the test accepts. The
# daemon's own bound is far lower; this one leaves room for a loaded
# machine (it guards a hang, it is not a benchmark).
EXIT_BOUND=30

teardown() {
	local pid
	for pid in ${BUSY_PIDS:-} ${LOAD_PIDS:-}; do
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	imgfs_teardown
}

# busy_cpus N: N shell loops that keep N cores busy until teardown.
busy_cpus() {
	local i
	for ((i = 0; i < $1; i++)); do
		(while :; do :; done) </dev/null >/dev/null 2>&1 3>&- &
		BUSY_PIDS+=" $!"
	done
}

# start_load: as the user, a writer of disk (each close asks for a
# rescan and waits for it), a reader of p1 and a lister of the snapshot's
# folder, each looping until the mount goes away. nocreat: once the mount
# is gone, dd must not create a file in the empty mountpoint.
start_load() {
	as_user bash -c 'while dd if=data.bin of="$1/disk" bs=64k seek=$((RANDOM % 256)) conv=notrunc,nocreat status=none; do echo >>writes.log; done' \
		_ "$MNT" </dev/null >/dev/null 2>&1 3>&- &
	LOAD_PIDS+=" $!"
	as_user bash -c 'while cat "$1/p1" >/dev/null; do :; done' _ "$MNT" \
		</dev/null >/dev/null 2>&1 3>&- &
	LOAD_PIDS+=" $!"
	as_user bash -c 'while ls -R "$1/snapshots" >/dev/null; do :; done' _ "$MNT" \
		</dev/null >/dev/null 2>&1 3>&- &
	LOAD_PIDS+=" $!"
}

writes_at_least() {
	[[ -e writes.log && $(wc -l <writes.log) -ge $1 ]]
}

@test "kill -TERM and -INT under CPU load with writes, reads, rescans and snapshot scans in flight: the daemon exits within the bound, unmounts, and qemu-img check is clean, 10 times each" {
	local sig cycle pid start elapsed max=0
	truncate -s 64M disk.raw
	sfdisk -q disk.raw <<-EOF
		label: gpt
		start=2048, size=16384
		start=18432, size=16384
		start=34816, size=16384
	EOF
	qemu-img convert -f raw -O qcow2 disk.raw "$IMG"
	qemu-img snapshot -c before "$IMG"
	det_random 64k >data.bin
	: >writes.log
	give_to_user writes.log
	busy_cpus 2
	for sig in TERM INT; do
		for ((cycle = 0; cycle < 10; cycle++)); do
			mount_image
			pid=$(daemon_pid)
			start_load
			wait_until 30 writes_at_least $(($(wc -l <writes.log) + 1))
			start=$(date +%s%N)
			kill "-$sig" "$pid"
			if ! wait_until "$EXIT_BOUND" process_gone "$pid"; then
				echo "SIG$sig, cycle $cycle: PID $pid still runs after ${EXIT_BOUND}s:" >&2
				stuck_threads "$pid" >&2
				return 1
			fi
			elapsed=$((($(date +%s%N) - start) / 1000000))
			((elapsed <= max)) || max=$elapsed
			echo "# SIG$sig cycle $cycle: exit ${elapsed} ms after the signal ($(date +%T))" >&3
			run -1 is_mounted "$MNT"
			wait_until 30 pids_gone $LOAD_PIDS
			wait $LOAD_PIDS 2>/dev/null || true
			LOAD_PIDS=
			run -0 qemu-img check "$IMG"
		done
	done
	echo "# slowest exit after the signal: ${max} ms" >&3
	# Nothing wrote into the mount point after the unmount.
	run -0 as_user ls -A "$MNT"
	assert_eq "$output" ""
}

@test "a daemon started with SIGINT and SIGTERM ignored (a script's background job) still ends on kill -INT and -TERM, and a nohup'ed one keeps SIGHUP ignored" {
	local sig pid
	make_qcow2 "$IMG" 16M
	for sig in INT TERM; do
		# What a shell without job control does to its background jobs.
		(trap '' INT TERM HUP; mount_image)
		pid=$(daemon_pid)
		kill -HUP "$pid"
		sleep 1
		run -0 is_mounted "$MNT"
		kill "-$sig" "$pid"
		if ! wait_until "$EXIT_BOUND" process_gone "$pid"; then
			echo "SIG$sig ignored by the daemon: PID $pid still runs after ${EXIT_BOUND}s" >&2
			return 1
		fi
		run -1 is_mounted "$MNT"
	done
	run -0 qemu-img check "$IMG"
}

# ---------------------------------------------------------------------------
# The launcher: its status says whether the mount is there

# A qcow2 that takes a while to become ready: a GPT of 128 partitions
# whose every region the scan copies holds data (a scan copies about
# 3 MiB per partition and reads the table twice).
make_slow_to_ready() {
	yes imgfs-slow-scan | head -c 300M >slow.raw
	{
		printf 'label: gpt\ntable-length: 128\nfirst-lba: 2048\n'
		for ((i = 0; i < 128; i++)); do
			printf 'start=%d, size=2048\n' $((2048 + i * 4096))
		done
	} | sfdisk -q slow.raw
	qemu-img convert -f raw -O qcow2 slow.raw "$IMG"
	rm slow.raw
}

# first_child PID: PID's first child, once it has one.
first_child() {
	local c
	c=$(cat "/proc/$1/task/$1/children" 2>/dev/null) || return 1
	[[ -n $c ]] && echo "${c%% *}"
}

# daemon_of SHELL: the daemon forked by the launcher that the background
# shell SHELL (as_user ... &) runs, once there is one.
daemon_of() {
	local launcher
	launcher=$(first_child "$1") || return 1
	first_child "$launcher"
}

@test "a launcher killed at any moment (timeout imgfs ...) exits 0 only with the mount there and ready; killed before, it leaves nothing mounted and no daemon" {
	local t killed=0 ready=0
	make_slow_to_ready
	give_to_user "$IMG"
	busy_cpus 2
	for t in 0.05 0.1 0.2 0.3 0.4 0.5 0.7 1 2 60; do
		# The mount table is read the moment timeout returns, in the
		# same shell: a daemon that unmounts a little later must not
		# pass. --preserve-status: the launcher's own status. Without
		# it timeout says 124 whenever its alarm fired, also when the
		# launcher had just exited 0 with the mount ready (timeout's
		# alarm and its reaping of the child race; no launcher can
		# close that window), and such a run would look like a leak.
		run --separate-stderr as_user bash -c \
			'timeout --preserve-status "$1" "$2" "$3" "$4"; s=$?
			 if grep -qF " $4 " /proc/self/mountinfo; then echo mounted; fi
			 exit $s' _ "$t" "$IMGFS" "$IMG" "$MNT"
		if ((status == 0)); then
			# Ready means readable at once: every partition is there.
			run -0 is_mounted "$MNT"
			run -0 as_user ls "$MNT/p128"
			ready=$((ready + 1))
			unmount_image
		else
			# Killed by timeout's SIGTERM: the launcher took the
			# mount and the daemon with it, not later.
			assert_eq "$status" 143
			assert_eq "$output" ""
			assert_eq "$(pids_naming "$MNT")" ""
			refute_mounted
			killed=$((killed + 1))
		fi
	done
	echo "# $killed launchers killed before ready, $ready returned ready" >&3
	((killed > 0 && ready > 0))
}

@test "SIGTERM to the daemon before the mount is ready: the launcher exits 1 with one line, nothing stays mounted" {
	local cycle launcher daemon start elapsed hit=0
	make_slow_to_ready
	give_to_user "$IMG"
	busy_cpus 2
	for ((cycle = 0; cycle < 5; cycle++)); do
		as_user "$IMGFS" "$IMG" "$MNT" 2>launcher.err </dev/null 3>&- &
		launcher=$!
		BG_PID=$launcher
		wait_until 30 daemon_of "$launcher"
		daemon=$(daemon_of "$launcher")
		start=$(date +%s%N)
		kill -TERM "$daemon"
		wait_until "$EXIT_BOUND" process_gone "$daemon"
		elapsed=$((($(date +%s%N) - start) / 1000000))
		status=0
		wait "$launcher" || status=$?
		BG_PID=
		if ((status == 0)); then
			# The mount was ready before the signal; it goes away.
			assert_eq "$(cat launcher.err)" ""
		else
			assert_eq "$status" 1
			assert_eq "$(cat launcher.err)" "imgfs: the mount ended before it was ready"
			hit=$((hit + 1))
		fi
		echo "# cycle $cycle: status $status, daemon gone ${elapsed} ms after SIGTERM" >&3
		run -1 is_mounted "$MNT"
	done
	((hit > 0))
}
