#!/usr/bin/env bats
# imgfs-open.bats: "Open disk image" from a file manager
# (packaging/desktop/imgfs-open), run by the unprivileged test user with
# the imgfs of the build: a read-only mount in a private folder under
# $XDG_RUNTIME_DIR/imgfs, reuse of that mount, the folder it would open,
# and the idle watcher that unmounts it. --print stands in for xdg-open.

bats_require_minimum_version 1.5.0

load helpers

OPEN=$BATS_TEST_DIRNAME/../../packaging/desktop/imgfs-open

setup() {
	imgfs_setup
	RUN=$PWD/run
	as_user mkdir -m 0700 "$RUN"
	BASE=$RUN/imgfs
}

teardown() {
	local p
	# The watchers imgfs-open left behind (bash, not imgfs: the helpers'
	# teardown does not know them).
	for p in /proc/[0-9]*; do
		tr '\0' ' ' 2>/dev/null <"$p/cmdline" |
			grep -qF -- "--watch $BATS_TEST_TMPDIR/" &&
			kill "${p#/proc/}" 2>/dev/null
	done
	imgfs_teardown
}

# open_image [ARGS...]: imgfs-open as the test user, with a watcher that
# looks every second and unmounts after IDLE seconds (default: an hour).
open_image() {
	as_user env XDG_RUNTIME_DIR="$RUN" IMGFS="$IMGFS" \
		IMGFS_OPEN_POLL=1 IMGFS_OPEN_IDLE="${IDLE:-3600}" "$OPEN" "$@"
}

nb_mounts_of() {
	awk -v s="$1" '{ for (i = 1; i < NF; i++) if ($i == "-") break }
		$(i + 1) == "fuse.imgfs" && $(i + 2) == s { n++ }
		END { print n + 0 }' /proc/self/mountinfo
}

# The FAT disk: a GPT with one partition, FAT32, holding hello.txt.
make_fat_disk() {
	require mkfs.vfat mcopy
	mkdir -p build
	echo "hello from imgfs-open" >build/hello.txt
	truncate -s 40M build/fat.img
	mkfs.vfat -F 32 -n OPENTEST build/fat.img >/dev/null
	mcopy -i build/fat.img build/hello.txt ::hello.txt
	truncate -s 48M build/fat.raw
	sfdisk -q build/fat.raw <<-EOF
		label: gpt
		start=2048, size=81920, type=$GPT_BASIC_DATA_TYPE
	EOF
	put_file build/fat.raw $((2048 * 512)) build/fat.img
	qemu-img convert -f raw -O qcow2 build/fat.raw "$1"
}

@test "imgfs-open mounts an image read-only in a private folder under XDG_RUNTIME_DIR" {
	make_gpt_ext4_fat "$IMG"
	give_to_user "$IMG"
	run -0 open_image --print "$IMG"
	assert_eq "$output" "$BASE/disk.qcow2"
	run -0 stat -c %a "$BASE"
	assert_eq "$output" 700
	run -0 awk -v m="$BASE/disk.qcow2" '$5 == m { print $6 }' /proc/self/mountinfo
	[[ ,$output, == *,ro,* ]]
	run -0 grep -F " $BASE/disk.qcow2 " /proc/self/mountinfo
	[[ $output == *" - fuse.imgfs $IMG "* ]]
	qemu-img convert -O raw "$IMG" expected.raw
	as_user cmp "$BASE/disk.qcow2/disk" expected.raw
	run -1 as_user touch "$BASE/disk.qcow2/p1"
	[[ $output == *"Read-only file system"* ]]
}

@test "with one filesystem it names that filesystem's folder under files/" {
	make_fat_disk "$IMG"
	run -0 open_image --print "$IMG"
	if [[ $output == "$BASE/disk.qcow2" ]]; then
		run -0 as_user ls "$BASE/disk.qcow2"
		[[ $output != *files* ]] || {
			echo "files/ is there but imgfs-open did not open it" >&2
			return 1
		}
		skip "this imgfs shows no files/ folder yet"
	fi
	assert_eq "$output" "$BASE/disk.qcow2/files/p1"
	run -0 as_user cat "$BASE/disk.qcow2/files/p1/hello.txt"
	assert_eq "$output" "hello from imgfs-open"
}

@test "a second open of the same image reuses its mount, also by another path" {
	make_gpt_ext4_fat "$IMG"
	ln -s disk.qcow2 link.qcow2
	run -0 open_image --print "$IMG"
	first=$output
	run -0 open_image --print "$PWD/link.qcow2"
	assert_eq "$output" "$first"
	run -0 nb_mounts_of "$IMG"
	assert_eq "$output" 1
}

@test "two images with the same file name get two folders" {
	mkdir a b
	make_gpt_ext4_fat a/vm.qcow2
	cp a/vm.qcow2 b/vm.qcow2
	run -0 open_image --print a/vm.qcow2
	assert_eq "$output" "$BASE/vm.qcow2"
	run -0 open_image --print b/vm.qcow2
	assert_eq "$output" "$BASE/vm.qcow2-2"
	run -0 open_image --print a/vm.qcow2
	assert_eq "$output" "$BASE/vm.qcow2"
}

@test "the mount stays while it is used, even with nothing kept open, and goes away once unused for the idle time" {
	make_gpt_ext4_fat "$IMG"
	mnt=$BASE/disk.qcow2
	# A file manager lists the folder now and then and holds nothing
	# open: from the moment the mount is there, 8 s of listings (more
	# than twice the idle time), each of which must still find it.
	as_user sh -c 'until ls "$1" 2>/dev/null | grep -qx p1; do sleep 0.05; done
		end=$(($(date +%s) + 8)) n=0
		while [ "$(date +%s)" -lt "$end" ]; do
			ls "$1" | grep -qx p1 ||
				{ echo "listing $n found no p1" >&2; exit 1; }
			n=$((n + 1))
			sleep 0.3
		done' sh "$mnt" 3>&- &
	BG_PID=$!
	IDLE=3 run -0 open_image --print "$IMG"
	assert_eq "$output" "$mnt"
	pid=$(daemon_pid "$mnt")
	wait "$BG_PID"
	is_mounted "$mnt"
	wait_until "$IMGFS_HANG_DEADLINE" refute_mounted "$mnt"
	wait_until "$IMGFS_EXIT_DEADLINE" pids_gone "$pid"
	[[ ! -e $mnt ]]
}

@test "a process working in the mount keeps it, however long" {
	make_gpt_ext4_fat "$IMG"
	mnt=$BASE/disk.qcow2
	as_user sh -c 'until [ -e "$1/p1" ]; do sleep 0.05; done
		cd "$1" && exec sleep 6' sh "$mnt" 3>&- &
	BG_PID=$!
	IDLE=1 run -0 open_image --print "$IMG"
	assert_eq "$output" "$mnt"
	wait "$BG_PID"
	is_mounted "$mnt"
	wait_until "$IMGFS_HANG_DEADLINE" refute_mounted "$mnt"
}

@test "imgfs-open --unmount unmounts at once and removes the folder" {
	make_gpt_ext4_fat "$IMG"
	run -0 open_image --print "$IMG"
	mnt=$output
	run -0 open_image --unmount "$IMG"
	refute_mounted "$mnt"
	[[ ! -e $mnt ]]
	run -1 open_image --unmount "$IMG"
	assert_eq "$output" "imgfs-open: $IMG is not mounted by imgfs-open"
}

@test "a mount whose daemon was killed is replaced by a working one" {
	make_gpt_ext4_fat "$IMG"
	run -0 open_image --print "$IMG"
	mnt=$output
	pid=$(daemon_pid "$mnt")
	kill -KILL "$pid"
	wait_until "$IMGFS_EXIT_DEADLINE" pids_gone "$pid"
	run -0 open_image --print "$IMG"
	assert_eq "$output" "$mnt"
	as_user test -f "$mnt/p1"
	run -0 nb_mounts_of "$IMG"
	assert_eq "$output" 1
}

@test "an image that cannot be opened gives one line and leaves nothing behind" {
	run -1 open_image --print missing.qcow2
	assert_eq "$output" "imgfs-open: missing.qcow2: No such file or directory"
	qemu-img create -q -f qcow2 "$IMG" 64M
	# A qcow2 header whose L1 table lies far past the end of the file.
	printf '\x00\x00\x00\x00\x7f\x00\x00\x00' |
		dd of="$IMG" bs=1 seek=40 conv=notrunc status=none
	run -1 open_image --print "$IMG"
	[[ $output == "imgfs-open: imgfs: "* && $output != *$'\n'* ]]
	run -0 ls -A "$BASE"
	assert_eq "$output" ""
	run -0 nb_mounts_of "$IMG"
	assert_eq "$output" 0
	run -2 open_image --bogus "$IMG"
	assert_eq "$output" "imgfs-open: unknown option '--bogus' (see imgfs-open --help)"
}
