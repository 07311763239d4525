#!/usr/bin/env bats
# write-faults.bats: writing when things go wrong. The daemon is killed in
# the middle of heavy writes, the image's filesystem fills up, QEMU holds
# the image, many writers run at once: the image never ends up corrupt,
# what an fsync acknowledged is never lost, and imgfs and QEMU never write
# one image at the same time.

bats_require_minimum_version 1.5.0

load helpers
load images

teardown() {
	local pid
	for pid in ${FIO_PID:-} ${ACK_PID:-} ${FIO_PIDS:-}; do
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
	if [[ -n ${QSD_PID:-} ]]; then
		# SIGTERM: qemu-storage-daemon unmounts its FUSE export itself.
		kill -TERM "$QSD_PID" 2>/dev/null || true
		wait_until "$IMGFS_HANG_DEADLINE" pids_gone "$QSD_PID" || kill -KILL "$QSD_PID" 2>/dev/null || true
		wait "$QSD_PID" 2>/dev/null || true
	fi
	# A daemon that was killed must take its connection with it; if it
	# did not (a bug the kill tests catch), end it so nothing waits on it.
	[[ -z ${FUSE_CONN:-} ]] || abort_fuse_conn "$FUSE_CONN"
	imgfs_teardown
	if [[ -n ${SMALL_FS:-} ]] && mountpoint -q "$SMALL_FS"; then
		umount "$SMALL_FS" || umount -l "$SMALL_FS"
	fi
}

# The OFD locks QEMU takes on an image (and imgfs too) show in /proc/locks.
image_locked() {
	grep -q "OFDLCK.*:$(stat -c %i "$1") " /proc/locks
}

# ---------------------------------------------------------------------------
# kill -9 in the middle of writes

# Blocks the acknowledged writer puts at 32 MiB + 512 + SLOT * 4 KiB: 4 KiB
# each, off the cluster grid, slot = cycle * 200 + k, so no two writes of
# any cycle share a block. fio writes only below 32 MiB.
ACK_BASE=$(((32 << 20) + 512))

# start_acked_writer CYCLE: as the user, in the background, writes block
# after block of its own byte pattern to MNT/disk with dd conv=fsync, and
# appends "OFFSET BYTE" to acked.log only after dd (and its fsync) returned
# 0: what the log lists was acknowledged as durable.
start_acked_writer() {
	as_user bash -c '
		cycle=$1 disk=$2 base=$3
		for ((k = 0; k < 200; k++)); do
			slot=$((cycle * 200 + k))
			off=$((base + slot * 4096))
			b=$((slot * 7 % 255 + 1))
			head -c 4096 /dev/zero | tr "\0" "\\$(printf %03o "$b")" |
				dd of="$disk" bs=4096 seek="$off" oflag=seek_bytes \
					conv=notrunc,fsync status=none 2>/dev/null || exit 0
			echo "$off $b" >>acked.log
		done' bash "$1" "$MNT/disk" "$ACK_BASE" </dev/null 3>&- &
	ACK_PID=$!
}

acked_at_least() {
	(($(wc -l <acked.log) >= $1))
}

# assert_acked_intact IMG: every block acked.log lists reads back from IMG
# (qemu-io, after unmount) with its pattern.
assert_acked_intact() {
	local off b cmds=() n
	while read -r off b; do
		cmds+=(-c "read -P $b $off 4096")
	done <acked.log
	n=${#cmds[@]}
	((n)) || return 0
	run -0 qemu-io -f "$(img_format "$1")" -r "${cmds[@]}" "$1"
	if [[ $output == *"verification failed"* || $output == *"error"* ]]; then
		echo "$output" | grep -B1 -A1 -i 'failed\|error' | head -n 20 >&2
		return 1
	fi
	assert_eq "$(grep -c '^read 4096/4096 bytes' <<<"$output")" $((n / 2))
}

# kill_cycles CYCLES: CYCLES times: mount, start heavy random writes (fio,
# two threads, 512 B..128 KiB unaligned blocks) and the acknowledged
# writer, kill -9 the daemon once a random number of blocks was acked,
# clean up the dead mount, and check the image.
kill_cycles() {
	local cycle pid want
	: >acked.log
	give_to_user acked.log
	for ((cycle = 0; cycle < $1; cycle++)); do
		mount_image
		pid=$(daemon_pid)
		FUSE_CONN=$(fuse_conn "$MNT")
		as_user fio --name=crash --filename="$MNT/disk" --rw=randwrite \
			--bsrange=512-128k --blockalign=512 --size=32M \
			--ioengine=psync --thread --numjobs=2 --time_based \
			--runtime=30 --randseed=$((cycle + 1)) \
			--output=/dev/null </dev/null >/dev/null 2>&1 3>&- &
		FIO_PID=$!
		start_acked_writer "$cycle"
		# A random moment: after 1 to 12 acknowledged blocks, with fio
		# writing all along.
		want=$(($(wc -l <acked.log) + RANDOM % 12 + 1))
		wait_until "$IMGFS_HANG_DEADLINE" acked_at_least "$want"
		echo "cycle $cycle: kill -9 after $want acknowledged blocks" >&2
		kill -KILL "$pid"
		if ! wait_until "$IMGFS_EXIT_DEADLINE" process_gone "$pid"; then
			echo "cycle $cycle: imgfs PID $pid did not exit after kill -9:" >&2
			stuck_threads "$pid" >&2
			return 1
		fi
		# The writers see the dead mount and stop.
		wait_until "$IMGFS_HANG_DEADLINE" pids_gone "$FIO_PID" "$ACK_PID"
		wait "$FIO_PID" "$ACK_PID" || true
		FIO_PID= ACK_PID=
		as_user fusermount3 -u "$MNT"
		refute_mounted
		FUSE_CONN=
		check_no_corruption "$IMG"
		assert_acked_intact "$IMG"
	done
	if [[ $(img_format "$IMG") == qcow2 ]]; then
		# Leaks are all a crash may leave; repaired, the image is clean.
		run -0 qemu-img check -r leaks "$IMG"
		run -0 qemu-img check "$IMG"
		assert_acked_intact "$IMG"
	fi
}

@test "kill -9 of the daemon during heavy random writes, 20 times: qemu-img check finds no corruption and every fsync'd block is intact" {
	require fio
	make_qcow2 "$IMG" 64M cluster_size=4096
	kill_cycles 20
}

@test "kill -9 during random writes to a qcow2 with 64 KiB clusters and a snapshot: no corruption, fsync'd blocks intact, the snapshot unchanged" {
	require fio
	make_qcow2 "$IMG" 64M
	fill_pattern "$IMG" 21
	qemu-img snapshot -c before "$IMG"
	qemu_raw "$IMG" before.raw -l snapshot.name=before
	kill_cycles 5
	qemu_raw "$IMG" before-after.raw -l snapshot.name=before
	cmp before.raw before-after.raw
}

@test "kill -9 during random writes to a raw image: every fsync'd block is intact" {
	require fio
	IMG=$PWD/disk.raw
	truncate -s 64M "$IMG"
	# A raw image has no metadata for qemu-img check: only the blocks count.
	check_no_corruption() { :; }
	kill_cycles 5
}

@test "kill -TERM (or -INT) of the daemon unmounts cleanly: what was written is in the image, lazy refcounts left clean, qemu-img check clean" {
	local sig
	det_random 3M >data.bin
	for sig in TERM INT; do
		rm -f "$IMG"
		make_qcow2 "$IMG" 32M lazy_refcounts=on
		mount_image
		pid=$(daemon_pid)
		# Written without fsync: the daemon must flush on its way out.
		as_user dd if=data.bin of="$MNT/disk" bs=64k seek=3 conv=notrunc status=none
		kill "-$sig" "$pid"
		wait_until "$IMGFS_EXIT_DEADLINE" process_gone "$pid"
		refute_mounted
		run -0 qemu-img check "$IMG"
		run -0 qemu-img info --output=json "$IMG"
		[[ $output == *'"dirty-flag": false'* ]]
		qemu_raw "$IMG" after.raw
		cmp <(tail -c +$((3 * 65536 + 1)) after.raw | head -c 3M) data.bin
	done
}

# be64_at FILE OFFSET: the big-endian 64-bit number at OFFSET.
be64_at() {
	od -An -tx1 -j "$2" -N 8 "$1" | tr -d ' \n' | { read -r h; echo $((16#$h)); }
}

@test "a damaged qcow2 whose L2 entry points at its own L1 table: the write fails with 'Input/output error', the image is marked corrupt, the mount turns read-only and the L1 table is left as it was" {
	make_qcow2 "$IMG" 16M cluster_size=4096
	qemu-io -f qcow2 -c 'write -P 7 0 8k' "$IMG" >/dev/null
	l1=$(be64_at "$IMG" 40)
	l2=$(($(be64_at "$IMG" "$l1") & 0x00fffffffffffe00))
	# Guest cluster 1 (COPIED) now claims the L1 table's cluster.
	put_be64 "$IMG" $((l2 + 8)) $((l1 | (1 << 63)))
	dd if="$IMG" of=l1.before bs=4096 skip=$((l1 / 4096)) count=1 status=none
	mount_image
	det_random 4k >data.bin
	run -1 as_user dd if=data.bin of="$MNT/disk" bs=4k seek=1 conv=notrunc,fsync status=none
	assert_eq "$output" "dd: error writing '$MNT/disk': Input/output error"
	run -0 info_line corrupt
	[[ $output == yes* ]]
	run -1 as_user dd if=data.bin of="$MNT/disk" bs=4k seek=3 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/disk': Read-only file system"
	# Reads go on.
	as_user head -c 4096 "$MNT/disk" | cmp - <(head -c 4096 /dev/zero | tr '\0' '\7')
	unmount_image
	cmp l1.before <(dd if="$IMG" bs=4096 skip=$((l1 / 4096)) count=1 status=none)
	run -0 qemu-img info --output=json "$IMG"
	[[ $output == *'"corrupt": true'* ]]
}

# ---------------------------------------------------------------------------
# The image's filesystem fills up

# small_fs SIZE: a tmpfs of SIZE at ./small that the user may write to.
small_fs() {
	require_root
	mkdir small
	mount -t tmpfs -o "size=$1,mode=0777" imgfs-test-small "$PWD/small"
	SMALL_FS=$PWD/small
}

@test "when the image's filesystem is full, the writer gets 'No space left on device', reads go on, and qemu-img check finds no corruption" {
	small_fs 12M
	IMG=$SMALL_FS/disk.qcow2
	make_qcow2 "$IMG" 64M
	det_random 1M >first.bin
	det_random 40M >big.bin
	mount_image
	as_user dd if=first.bin of="$MNT/disk" conv=notrunc,fsync status=none
	run -1 as_user dd if=big.bin of="$MNT/disk" bs=1M seek=2 conv=notrunc status=none
	assert_eq "$output" "dd: error writing '$MNT/disk': No space left on device"
	# Less than a cluster (64 KiB) is left: the filesystem is full for it.
	run -0 df --output=avail -k "$SMALL_FS"
	((${lines[1]} < 64))
	# The daemon still serves: the data written before, and info.
	as_user head -c 1M "$MNT/disk" | cmp - first.bin
	run -0 info_line format
	assert_eq "$output" qcow2
	run -0 as_user dd if="$MNT/disk" of=/dev/null bs=1M status=none
	unmount_image
	check_no_corruption "$IMG"
	qemu_raw "$IMG" after.raw
	cmp <(head -c 1M after.raw) first.bin
	# What the failed dd did write reads back as it was sent.
	cmp -n $((1 << 20)) <(tail -c +$((2 * 1048576 + 1)) after.raw) big.bin ||
		cmp -n $((1 << 20)) <(tail -c +$((2 * 1048576 + 1)) after.raw) /dev/zero
}

@test "when a raw image's filesystem is full, the writer gets 'No space left on device' and reads go on" {
	small_fs 4M
	IMG=$SMALL_FS/disk.raw
	truncate -s 64M "$IMG"
	det_random 8M >big.bin
	mount_image
	run -1 as_user dd if=big.bin of="$MNT/disk" bs=1M conv=notrunc status=none
	assert_eq "$output" "dd: error writing '$MNT/disk': No space left on device"
	run -0 as_user dd if="$MNT/disk" of=/dev/null bs=1M status=none
	as_user head -c 1M "$MNT/disk" | cmp - <(head -c 1M big.bin)
	unmount_image
}

# ---------------------------------------------------------------------------
# QEMU and imgfs never write one image at once

@test "an image qemu-io has open for writing is refused for a read-write mount, with one line and status 1" {
	make_gpt_ext4_fat "$IMG"
	give_to_user "$IMG"
	mkfifo qemu-io.in
	qemu-io "$IMG" <qemu-io.in >qemu-io.out 2>&1 3>&- &
	QEMU_IO_PID=$!
	exec 7>qemu-io.in
	wait_until "$IMGFS_HANG_DEADLINE" image_locked "$IMG"
	run -1 --separate-stderr as_user "$IMGFS" "$IMG" "$MNT"
	assert_eq "$output" ""
	assert_eq "$stderr" "imgfs: $IMG: in use by another process that does not allow write access (a running QEMU or qemu-img?)"
	refute_mounted
	exec 7>&-
	wait "$QEMU_IO_PID"
	QEMU_IO_PID=
	mount_image
	as_user dd if=/dev/zero of="$MNT/p3" bs=4k count=1 conv=notrunc status=none
}

@test "an image qemu-storage-daemon exports writable is refused for a read-write mount, with one line and status 1" {
	require qemu-storage-daemon
	make_gpt_ext4_fat "$IMG"
	give_to_user "$IMG"
	: >export
	qemu-storage-daemon \
		--blockdev "driver=file,node-name=file,filename=$IMG" \
		--blockdev driver=qcow2,node-name=fmt,file=file \
		--export "type=fuse,id=exp,node-name=fmt,mountpoint=$PWD/export,writable=on" \
		</dev/null >qsd.log 2>&1 3>&- &
	QSD_PID=$!
	wait_until "$IMGFS_HANG_DEADLINE" image_locked "$IMG"
	wait_until "$IMGFS_HANG_DEADLINE" is_mounted "$PWD/export"
	run -1 --separate-stderr as_user "$IMGFS" "$IMG" "$MNT"
	assert_eq "$output" ""
	assert_eq "$stderr" "imgfs: $IMG: in use by another process that does not allow write access (a running QEMU or qemu-img?)"
	refute_mounted
	# What qemu-storage-daemon writes is unaffected.
	head -c 4096 /dev/zero | tr '\0' 'q' | dd of=export bs=4096 seek=100 conv=notrunc,fsync status=none
	kill -TERM "$QSD_PID"
	wait "$QSD_PID" || true
	QSD_PID=
	run -0 qemu-img check "$IMG"
	run -0 qemu-io -r -c "read -P 0x71 409600 4096" "$IMG"
	[[ $output != *"verification failed"* ]]
}

@test "while imgfs has an image mounted read-write, qemu-io and qemu-img refuse to open it, and -U reads it" {
	make_gpt_ext4_fat "$IMG"
	mount_image
	run -1 qemu-io -c "write 0 4k" "$IMG"
	assert_eq "$output" "qemu-io: can't open device $IMG: Failed to get \"write\" lock
Is another process using the image [$IMG]?"
	run -1 qemu-io -r -c "read 0 4k" "$IMG"
	assert_eq "$output" "qemu-io: can't open device $IMG: Failed to get shared \"write\" lock
Is another process using the image [$IMG]?"
	run -1 qemu-img info "$IMG"
	assert_eq "$output" "qemu-img: Could not open '$IMG': Failed to get shared \"write\" lock
Is another process using the image [$IMG]?"
	run -1 qemu-img check "$IMG"
	[[ ${lines[0]} == "qemu-img: Could not open '$IMG': Failed to get shared \"write\" lock" ]]
	run -0 qemu-img info -U "$IMG"
	as_user dd if=/dev/zero of="$MNT/p3" bs=4k count=1 conv=notrunc status=none
	unmount_image
	run -0 qemu-io -c "write 0 4k" "$IMG"
	run -0 qemu-img check "$IMG"
}

# ---------------------------------------------------------------------------
# Many writers at once

# fio_job FILE NAME SEED [FIO-ARGS...]: a verifying fio job as the user
# (crc32c in every block, read back after writing).
fio_job() {
	as_user fio --name="$2" --filename="$1" --randseed="$3" \
		--ioengine=psync --direct=0 --verify=crc32c --verify_fatal=1 \
		--output="$PWD/fio-$2.out" "${@:4}" </dev/null >/dev/null 2>&1
}

# Disk layout of concurrent_writers: p1 1 MiB + 12, gap 13..16 MiB, p2
# 16 MiB + 12, p3 28 MiB + 12, gap 40..46 MiB, the rest unused.
CW_JOBS=(
	"p1 0 --rw=randwrite --bs=4k --size=12M"
	"p2 0 --rw=randwrite --bsrange=4k-64k --size=12M"
	"p3 0 --rw=write --bs=128k --size=12M"
	"disk 13631488 --rw=randwrite --bs=4k --size=3M"
	"disk 41943040 --rw=randwrite --bs=16k --size=6M"
)

# run_jobs MODE: the five jobs of CW_JOBS at once, MODE "" (write and
# verify) or "--verify_only" (read back what the same jobs wrote).
run_jobs() {
	local i file off args pids=() rc=0
	for i in "${!CW_JOBS[@]}"; do
		read -r file off args <<<"${CW_JOBS[i]}"
		# shellcheck disable=SC2086
		fio_job "$MNT/$file" "job$i" $((i + 100)) --offset="$off" $args $1 3>&- &
		pids+=($!)
	done
	FIO_PIDS=${pids[*]}
	for i in "${!pids[@]}"; do
		if ! wait "${pids[i]}"; then
			echo "fio job$i (${CW_JOBS[i]}) $1 failed:" >&2
			cat "fio-job$i.out" >&2
			rc=1
		fi
	done
	FIO_PIDS=
	return "$rc"
}

concurrent_writers() {
	local fmt=$1
	require fio
	IMG=$PWD/disk.$fmt
	truncate -s 64M build.raw
	sfdisk -q build.raw <<-EOF
		label: gpt
		unit: sectors
		start=2048, size=24576
		start=32768, size=24576
		start=57344, size=24576
	EOF
	pattern_bytes "imgfs untouched" 64M | dd of=build.raw bs=1M seek=46 count=17 conv=notrunc iflag=fullblock status=none
	to_format build.raw "$IMG" "$fmt"
	mount_image
	run -0 run_jobs ""
	remount_image
	run -0 run_jobs --verify_only
	as_user cat "$MNT/disk" >seen.raw
	unmount_image
	[[ $fmt == raw ]] || run -0 qemu-img check "$IMG"
	qemu_raw "$IMG" after.raw
	cmp seen.raw after.raw
	# The partition table and the bytes no job wrote are as they were.
	assert_eq "$(partitions_of after.raw)" "$(partitions_of build.raw)"
	cmp <(tail -c +$((46 * 1048576 + 1)) build.raw | head -c 17M) \
		<(tail -c +$((46 * 1048576 + 1)) after.raw | head -c 17M)
	cmp -n 1048576 build.raw after.raw
}

@test "fio --verify on p1, p2, p3 and two free ranges of disk at once: every job reads back what it wrote, also after a remount" {
	concurrent_writers qcow2
}

@test "fio --verify on the partitions and free ranges of a raw disk at once reads back what it wrote" {
	concurrent_writers raw
}
