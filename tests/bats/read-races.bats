#!/usr/bin/env bats
# read-races.bats: reads of a mounted qcow2 that race discards, rewrites
# and fsyncs of the same ranges return the range's own bytes (or zeroes
# where it was discarded), never bytes of another range whose write reused
# a freed cluster, for the smallest, a middling and the default cluster
# size. Every sector carries its own offset (tests/tools/blocktag.c), so a
# read that returns another range's bytes names both offsets.

bats_require_minimum_version 1.5.0

load helpers

setup() {
	imgfs_setup
	require taskset
	BLOCKTAG=$IMGFS_BUILD_DIR/tests/tools/blocktag
	if [[ ! -x $BLOCKTAG ]]; then
		echo "blocktag is not built: $BLOCKTAG (set IMGFS_BUILD_DIR)" >&2
		return 1
	fi
	ORIG_CPUS=$(taskset -pc $BASHPID | awk '{ print $NF }')
}

teardown() {
	imgfs_teardown
	[[ -z ${ORIG_CPUS:-} ]] || taskset -pc "$ORIG_CPUS" $BASHPID >/dev/null
	if [[ -n ${RAM_DIR:-} ]] && mountpoint -q "$RAM_DIR"; then
		umount "$RAM_DIR" || umount -l "$RAM_DIR"
	fi
}

# How long each race runs at most (it stops at the first bad read): three
# of them, with their setup and checks, keep the file near 40 s.
RACE_SECONDS=${IMGFS_TEST_RACE_SECONDS:-8}

# The window a wrong read needs is a reader preempted between its map and
# its data read for as long as a writer takes to discard, fsync and
# rewrite. Two things make that window common enough to be seen in
# seconds: the image lives in memory (as root, a tmpfs of the test's own),
# so an fsync costs microseconds instead of a disk flush, and the daemon
# and the race share one CPU, so every switch between them is a
# preemption (with two CPUs the reader mostly runs on through its window).
in_ram_on_one_cpu() {
	if [[ $EUID -eq 0 ]]; then
		RAM_DIR=$PWD/ram
		mkdir "$RAM_DIR"
		mount -t tmpfs -o size=96M,mode=0755 tmpfs "$RAM_DIR"
		give_to_user "$RAM_DIR"
		IMG=$RAM_DIR/disk.qcow2
	fi
	taskset -pc "$(($(nproc) - 1))" $BASHPID >/dev/null
}

# race_with_cluster_size BYTES CHUNK: a qcow2 of tagged sectors with BYTES
# clusters, mounted read-write; four O_DIRECT readers and two writers that
# discard, fsync, rewrite and fsync CHUNK bytes at a time in its first
# MiB. No
# read returns a foreign sector; after unmounting, qemu-img check finds
# neither errors nor leaked clusters, and every sector of the image is
# zero or its own.
race_with_cluster_size() {
	in_ram_on_one_cpu
	"$BLOCKTAG" fill tagged.raw $((4 << 20))
	qemu-img convert -q -f raw -O qcow2 -o cluster_size="$1" tagged.raw \
		"$IMG"
	mount_image
	run -0 as_user "$BLOCKTAG" race "$MNT/disk" --seconds "$RACE_SECONDS" \
		--readers 4 --writers 2 --region $((1 << 20)) --chunk "$2"
	echo "$output"
	[[ $output =~ ^reads\ [1-9][0-9]*\ sectors\ [0-9]+\ discards\ [1-9][0-9]*\ rewrites\ [1-9] ]]
	unmount_image
	run -0 qemu-img check "$IMG"
	assert_eq "${lines[0]}" "No errors were found on the image."
	[[ $output != *leaked* ]]
	qemu-img convert -f qcow2 -O raw "$IMG" after.raw
	run -0 "$BLOCKTAG" check after.raw
}

@test "reads racing discards and rewrites on 512-byte clusters never return another range's bytes" {
	race_with_cluster_size 512 $((16 << 10))
}

@test "reads racing discards and rewrites on 4 KiB clusters never return another range's bytes" {
	race_with_cluster_size 4096 $((64 << 10))
}

@test "reads racing discards and rewrites on 64 KiB clusters never return another range's bytes" {
	race_with_cluster_size 65536 $((64 << 10))
}
