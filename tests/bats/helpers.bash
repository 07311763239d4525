# helpers.bash: what every imgfs integration test shares.
#
# Each test works in its own folder, $BATS_TEST_TMPDIR, which setup makes
# the current directory: images, source trees, expected bytes and
# mountpoints all live there. `teardown` unmounts everything mounted below
# it (innermost first) and ends, by PID, the processes started from it,
# whether the test passed or not.
#
# The mounts are made by an unprivileged user, as the contract promises.
# When the suite runs as root, `as_user` runs a command as $IMGFS_TEST_USER
# (created once) with /dev/fuse at 0666, as distributions ship it. Anything
# that touches a mount that user made must go through `as_user` as well: the
# kernel refuses every other user, root included, without allow_other. Files
# that root creates here are 0644, so the user can read them; the mountpoint
# and the image belong to the user.
#
# These helpers deliberately don't poll with fixed sleeps: a mount is ready
# when imgfs returns (that is the promise under test); everything else waits
# with `wait_until` and a deadline.

# Messages are asserted exactly: no translations, ASCII quotes.
export LC_ALL=C

IMGFS_BUILD_DIR=${IMGFS_BUILD_DIR:-$BATS_TEST_DIRNAME/../../build}
IMGFS_BUILD_DIR=$(cd "$IMGFS_BUILD_DIR" 2>/dev/null && pwd -P ||
	echo "$IMGFS_BUILD_DIR")
IMGFS=$IMGFS_BUILD_DIR/fuse/imgfs
IMGFS_TEST_USER=${IMGFS_TEST_USER:-imgfs-test}

# Deadlines of waits that only guard against a hang. A passing case never
# waits this long, so they cost nothing; they are generous because a
# loaded 2-core machine (CI, or the TSan build) runs everything several
# times slower. Speed is for the benchmarks to judge, not for the tests.
# IMGFS_EXIT_DEADLINE: seconds for a daemon to go away after an unmount or
# a kill; IMGFS_HANG_DEADLINE: seconds for anything else to happen.
IMGFS_EXIT_DEADLINE=${IMGFS_EXIT_DEADLINE:-30}
IMGFS_HANG_DEADLINE=${IMGFS_HANG_DEADLINE:-60}

# ---------------------------------------------------------------------------
# Tools, users, assertions

# require TOOL...: skips the test unless every TOOL is installed.
require() {
	local tool
	for tool; do
		command -v "$tool" >/dev/null 2>&1 ||
			skip "$tool is not installed"
	done
}

require_root() {
	[[ $EUID -eq 0 ]] || skip "needs root"
}

# Creates the test user once, opens /dev/fuse to everyone and lets the user
# reach and write the test folder (bats makes its run folder 0700).
prepare_user() {
	local d

	[[ $EUID -eq 0 ]] || return 0
	require setpriv useradd
	if ! id -u "$IMGFS_TEST_USER" >/dev/null 2>&1; then
		# Two suites may race to create it; either way it must exist.
		useradd --system --user-group --no-create-home \
			--home-dir /nonexistent --shell /usr/sbin/nologin \
			"$IMGFS_TEST_USER" 2>/dev/null ||
			id -u "$IMGFS_TEST_USER" >/dev/null || return 1
	fi
	chmod 0666 /dev/fuse
	d=$BATS_TEST_TMPDIR
	while [[ $d == "$BATS_RUN_TMPDIR"* && $d != / ]]; do
		chmod o+x "$d"
		d=$(dirname "$d")
	done
	chown "$IMGFS_TEST_USER:" "$BATS_TEST_TMPDIR"
}

# as_user CMD...: runs CMD as the unprivileged test user (as is, when the
# suite itself runs unprivileged). CMD is a program, not a shell function;
# use `as_user sh -c '...'` for pipelines. Process substitution does not
# cross the user change (the pipe belongs to root): pipe into stdin instead.
as_user() {
	if [[ $EUID -ne 0 ]]; then
		"$@"
		return
	fi
	setpriv --reuid="$IMGFS_TEST_USER" --regid="$IMGFS_TEST_USER" \
		--init-groups -- env HOME="$BATS_TEST_TMPDIR" \
		USER="$IMGFS_TEST_USER" LOGNAME="$IMGFS_TEST_USER" "$@"
}

# The name `stat` shows for the owner of the user's files.
test_user_name() {
	if [[ $EUID -eq 0 ]]; then echo "$IMGFS_TEST_USER"; else id -un; fi
}

# give_to_user PATH...: the user owns PATH (an image it mounts read-write).
give_to_user() {
	[[ $EUID -eq 0 ]] || return 0
	chown "$IMGFS_TEST_USER:" "$@"
}

# assert_eq ACTUAL EXPECTED: fails showing both when they differ.
assert_eq() {
	if [[ $1 != "$2" ]]; then
		printf 'expected: %q\nactual:   %q\n' "$2" "$1" >&2
		return 1
	fi
}

# wait_until SECONDS CMD...: runs CMD until it succeeds, at most SECONDS.
wait_until() {
	local deadline=$((SECONDS + $1 + 1))
	shift
	until "$@"; do
		((SECONDS < deadline)) || return 1
		sleep 0.02
	done
}

# ---------------------------------------------------------------------------
# Mounts and processes

# is_mounted PATH: PATH is a mountpoint right now (as /proc says: a stat on a
# FUSE mount of another user would fail with EACCES).
is_mounted() {
	awk -v m="$1" '$5 == m { found = 1 } END { exit !found }' \
		"${MOUNTINFO:-/proc/self/mountinfo}"
}

# Mountpoints below DIR, most recent first (so inner mounts come first).
mounts_below() {
	awk -v d="$1/" 'index($5, d) == 1 { print $5 }' \
		"${MOUNTINFO:-/proc/self/mountinfo}" | tac
}

# pids_naming ARG: processes of imgfs or fuse2fs with ARG among their
# arguments (exactly as given: tests pass absolute paths).
pids_naming() {
	local p exe arg

	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		exe=${exe##*/}
		[[ $exe == imgfs* || $exe == fuse2fs* ]] || continue
		while IFS= read -r -d '' arg; do
			if [[ $arg == "$1" ]]; then
				echo "${p#/proc/}"
				break
			fi
		done <"$p/cmdline" 2>/dev/null
	done
}

# Processes this test started: imgfs or fuse2fs naming a path in its folder.
test_pids() {
	local p exe arg

	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		exe=${exe##*/}
		[[ $exe == imgfs* || $exe == fuse2fs* ]] || continue
		while IFS= read -r -d '' arg; do
			if [[ $arg == *"$BATS_TEST_TMPDIR"/* ]]; then
				echo "${p#/proc/}"
				break
			fi
		done <"$p/cmdline" 2>/dev/null
	done
}

# pids_gone PID...: none of them is alive any more.
pids_gone() {
	local pid
	for pid; do
		[[ ! -e /proc/$pid ]] && continue
		# A zombie has exited; its parent (init, for a daemon) reaps it.
		[[ $(awk '{ print $3 }' "/proc/$pid/stat" 2>/dev/null) == Z ]] ||
			return 1
	done
}

# The PID of the imgfs daemon serving MOUNTPOINT (default $MNT).
daemon_pid() {
	local pids
	pids=$(pids_naming "${1:-$MNT}")
	[[ -n $pids && $pids != *$'\n'* ]] || {
		echo "daemon_pid: want one daemon for ${1:-$MNT}, have: $pids" >&2
		return 1
	}
	echo "$pids"
}

# mount_image [OPTIONS...]: the user mounts $IMG on $MNT with imgfs; the
# tree must be complete when this returns.
mount_image() {
	# The user mounts an image of its own (else imgfs mounts read-only).
	[[ ! -e $IMG ]] || give_to_user "$IMG"
	if ! as_user "$IMGFS" "$@" "$IMG" "$MNT"; then
		echo "mount_image: imgfs $* $IMG $MNT failed" >&2
		return 1
	fi
	if ! is_mounted "$MNT"; then
		echo "mount_image: imgfs returned 0 but $MNT is not mounted" >&2
		return 1
	fi
}

# unmount_fuse DIR: the user unmounts DIR, and the program that served it
# exits.
unmount_fuse() {
	local pids
	pids=$(pids_naming "$1")
	as_user fusermount3 -u "$1" || return 1
	if ! wait_until "$IMGFS_EXIT_DEADLINE" pids_gone $pids; then
		echo "unmount_fuse: $1 unmounted but PID $pids still runs" >&2
		return 1
	fi
}

unmount_image() {
	unmount_fuse "$MNT"
}

remount_image() {
	unmount_image && mount_image "$@"
}

# refute_mounted [DIR]: nothing is mounted on DIR (default $MNT) and no
# daemon for it is left running.
refute_mounted() {
	local dir=${1:-$MNT}
	if is_mounted "$dir"; then
		echo "refute_mounted: $dir is mounted:" >&2
		grep -F " $dir " /proc/self/mountinfo >&2
		return 1
	fi
	if ! wait_until "$IMGFS_EXIT_DEADLINE" no_pids_naming "$dir"; then
		echo "refute_mounted: processes left for $dir:" \
			$(pids_naming "$dir") >&2
		return 1
	fi
}

no_pids_naming() {
	[[ -z $(pids_naming "$1") ]]
}

no_test_pids() {
	[[ -z $(test_pids) ]]
}

# ---------------------------------------------------------------------------
# mount(8) as root, with imgfs "installed"
#
# mount -t fuse.imgfs runs /sbin/mount.fuse3, which runs `sh -c imgfs ...`;
# mount(8) drops PATH from the helper's environment, so the shell looks in
# its default PATH (/usr/local/sbin:/usr/local/bin:/usr/sbin:...). Rather
# than install anything, such tests run their mount commands in a private
# mount namespace where /usr/local/sbin is a folder holding only a link to
# the imgfs under test. Mounts made there are seen only there.

# start_mount_ns: starts the namespace (held by a process of its own) and
# points MOUNTINFO, which is_mounted reads, at it.
start_mount_ns() {
	mkdir -p sbin
	ln -sf "$IMGFS" sbin/imgfs
	unshare --mount --propagation private sleep infinity \
		</dev/null >/dev/null 2>&1 3>&- &
	NS_PID=$!
	# Until unshare has run, $NS_PID still shares our namespace: a bind
	# mount made then would cover the host's /usr/local/sbin.
	wait_until "$IMGFS_HANG_DEADLINE" mount_ns_ready || return 1
	in_ns mount --bind "$PWD/sbin" /usr/local/sbin
	MOUNTINFO=/proc/$NS_PID/mountinfo
}

mount_ns_ready() {
	[[ $(readlink "/proc/$NS_PID/ns/mnt") != "$(readlink /proc/self/ns/mnt)" &&
		$(readlink "/proc/$NS_PID/exe") == */sleep ]]
}

# in_ns CMD...: runs CMD in the namespace of start_mount_ns.
in_ns() {
	nsenter -t "$NS_PID" -m --wd="$PWD" -- "$@"
}

# ---------------------------------------------------------------------------
# setup / teardown

imgfs_setup() {
	if [[ ! -x $IMGFS ]]; then
		echo "imgfs is not built: $IMGFS (set IMGFS_BUILD_DIR)" >&2
		return 1
	fi
	require qemu-img qemu-io fusermount3 sfdisk jq
	prepare_user
	cd -P "$BATS_TEST_TMPDIR"
	IMG=$PWD/disk.qcow2
	MNT=$PWD/mnt
	as_user mkdir "$MNT"
}

imgfs_teardown() {
	local m pid pids

	cd /
	if [[ -n ${NS_PID:-} ]]; then
		for m in $(mounts_below "$BATS_TEST_TMPDIR"); do
			in_ns umount "$m" 2>/dev/null ||
				in_ns umount -l "$m" 2>/dev/null || true
		done
		kill -KILL "$NS_PID" 2>/dev/null || true
		wait "$NS_PID" 2>/dev/null || true
		unset MOUNTINFO
	fi
	for m in $(mounts_below "$BATS_TEST_TMPDIR"); do
		fusermount3 -u "$m" 2>/dev/null ||
			fusermount3 -uz "$m" 2>/dev/null ||
			umount -l "$m" 2>/dev/null ||
			echo "teardown: cannot unmount $m" >&2
	done
	if ! wait_until "$IMGFS_EXIT_DEADLINE" no_test_pids; then
		pids=$(test_pids)
		echo "teardown: killing leftover processes:" $pids >&2
		[[ -z $pids ]] || kill -KILL $pids 2>/dev/null || true
	fi
	# A test may have started a foreground daemon or a qemu-io with `&`.
	for pid in ${BG_PID:-} ${QEMU_IO_PID:-}; do
		kill -KILL "$pid" 2>/dev/null || true
		wait "$pid" 2>/dev/null || true
	done
}

setup() {
	imgfs_setup
}

teardown() {
	imgfs_teardown
}

# nofuse CMD...: CMD as the test user (as is, when the suite runs
# unprivileged) in a private mount namespace where an empty regular file is
# bind-mounted over /dev/fuse, so nothing in it can mount a FUSE
# filesystem: what the commands without FUSE read, they read themselves.
nofuse() {
	if [[ $EUID -ne 0 ]]; then
		"$@"
		return
	fi
	: >"$BATS_TEST_TMPDIR/no-fuse"
	unshare --mount --propagation private -- sh -c '
		if [ -e /dev/fuse ]; then mount --bind "$1" /dev/fuse || exit 99; fi
		shift
		exec "$@"' nofuse "$BATS_TEST_TMPDIR/no-fuse" \
		setpriv --reuid="$IMGFS_TEST_USER" --regid="$IMGFS_TEST_USER" \
		--init-groups -- env HOME="$BATS_TEST_TMPDIR" \
		USER="$IMGFS_TEST_USER" LOGNAME="$IMGFS_TEST_USER" "$@"
}

# lvm_conf DEV...: a private lvm2 configuration (LVM_SYSTEM_DIR=./lvmetc)
# that sees the loop devices DEV... only: not the host's disks, nor loop
# devices other tests use at the same time; nothing is activated, backed
# up or archived.
lvm_conf() {
	local d filter=""
	for d; do filter+="\"a|^$d\$|\", "; done
	mkdir -p lvmetc
	cat >lvmetc/lvm.conf <<-EOF2
		devices { obtain_device_list_from_udev = 0 scan_lvs = 0 use_devicesfile = 0 global_filter = [ $filter"r|.*|" ] }
		activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
		global { use_lvmlockd = 0 }
		backup { backup = 0 archive = 0 }
	EOF2
	export LVM_SYSTEM_DIR=$PWD/lvmetc
}

# ---------------------------------------------------------------------------
# Building disks (in the current folder, the test's)

# pattern_bytes TEXT LEN: LEN bytes of TEXT repeated. Recognisable in a hex
# dump, different for each partition, and no filesystem's magic.
pattern_bytes() {
	yes "$1" | head -c "$2"
}

# put_file RAW OFFSET_BYTES FILE: writes FILE into RAW at OFFSET_BYTES.
put_file() {
	dd if="$3" of="$1" bs=1M seek="$2" oflag=seek_bytes conv=notrunc \
		status=none
}

# make_src_tree DIR: a small tree of files to copy into filesystems.
make_src_tree() {
	mkdir -p "$1/docs" "$1/data"
	echo "hello from imgfs" >"$1/hello.txt"
	printf 'line %d\n' $(seq 1 2000) >"$1/docs/readme.txt"
	head -c 300K /dev/urandom >"$1/data/random.bin"
	: >"$1/data/empty"
	ln -s ../hello.txt "$1/docs/link-to-hello"
}

# Identities of the disk make_gpt_ext4_fat builds, for the assertions.
GPT_DISK_UUID=5E1C8A2B-0D43-4C55-9B0A-2E6D9E3A1F00
GPT_P1_UUID=5E1C8A2B-0D43-4C55-9B0A-2E6D9E3A1F01
GPT_P2_UUID=5E1C8A2B-0D43-4C55-9B0A-2E6D9E3A1F02
GPT_P3_UUID=5E1C8A2B-0D43-4C55-9B0A-2E6D9E3A1F03
GPT_LINUX_TYPE=0FC63DAF-8483-4772-8E79-3D69D8477DE4
GPT_BASIC_DATA_TYPE=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7
EXT4_UUID=0b7d2c6e-3f1a-4e8b-9c5d-7a6b5c4d3e2f
EXT4_LABEL=imgfs-root
FAT_ID=1234ABCD
FAT_UUID=1234-ABCD
FAT_LABEL=IMGFSDATA
GPT_DISK_BYTES=$((72 * 1024 * 1024))

# make_gpt_ext4_fat IMG [FORMAT]: a 72 MiB disk with a GPT:
#   p1  1 MiB + 24 MiB  ext4 (label imgfs-root) holding ./src, name "root"
#   p2 25 MiB + 40 MiB  FAT32 (label IMGSFDATA) with hello.txt, docs/,
#                       name "data"
#   p3 65 MiB +  4 MiB  no filesystem, a text pattern, no name
# built from parts with mkfs.ext4 -d, mkfs.vfat + mcopy, sfdisk and dd, and
# converted to FORMAT (default qcow2). Leaves the tree in ./src.
make_gpt_ext4_fat() {
	local img=$1 fmt=${2:-qcow2}

	require mkfs.ext4 mkfs.vfat mcopy mmd
	[[ -d src ]] || make_src_tree src
	mkdir -p build
	rm -f build/gpt.raw build/p1.img build/p2.img build/p3.img

	truncate -s 24M build/p1.img
	mkfs.ext4 -q -F -d src -L "$EXT4_LABEL" -U "$EXT4_UUID" \
		build/p1.img
	truncate -s 40M build/p2.img
	mkfs.vfat -F 32 -n "$FAT_LABEL" -i "$FAT_ID" build/p2.img >/dev/null
	mcopy -i build/p2.img src/hello.txt ::hello.txt
	mmd -i build/p2.img ::docs
	mcopy -i build/p2.img src/docs/readme.txt src/data/random.bin ::docs/
	pattern_bytes "imgfs p3 pattern" 4M >build/p3.img

	truncate -s "$GPT_DISK_BYTES" build/gpt.raw
	sfdisk -q build/gpt.raw <<-EOF
		label: gpt
		label-id: $GPT_DISK_UUID
		unit: sectors
		start=2048, size=49152, type=$GPT_LINUX_TYPE, uuid=$GPT_P1_UUID, name=root
		start=51200, size=81920, type=$GPT_BASIC_DATA_TYPE, uuid=$GPT_P2_UUID, name=data
		start=133120, size=8192, type=$GPT_LINUX_TYPE, uuid=$GPT_P3_UUID
	EOF
	put_file build/gpt.raw $((2048 * 512)) build/p1.img
	put_file build/gpt.raw $((51200 * 512)) build/p2.img
	put_file build/gpt.raw $((133120 * 512)) build/p3.img
	to_format build/gpt.raw "$img" "$fmt"
}

# to_format RAW IMG FORMAT: IMG holds RAW's bytes in FORMAT.
to_format() {
	if [[ $3 == raw ]]; then
		cp --sparse=always "$1" "$2"
	else
		qemu-img convert -f raw -O "$3" "$1" "$2"
	fi
}

MBR_DISK_ID=0x1234abcd
MBR_DISK_BYTES=$((40 * 1024 * 1024))
MBR_P1_LABEL=mbr-boot
MBR_P1_UUID=6f1d4c2a-9b3e-4d5f-8a7b-1c2d3e4f5a6b

# make_mbr_logical IMG [FORMAT]: a 40 MiB disk with an MBR (disk id
# 0x1234abcd):
#   p1 primary   1 MiB +  8 MiB, type 83, ext4 labelled mbr-boot
#   p2 extended 10 MiB + 30 MiB, type 5
#   p5 logical  11 MiB +  8 MiB, type 83, a text pattern
#   p6 logical  20 MiB + 10 MiB, type 82, another pattern
make_mbr_logical() {
	local img=$1 fmt=${2:-qcow2}

	require mkfs.ext4
	mkdir -p build
	rm -f build/mbr.raw build/m1.img
	truncate -s 8M build/m1.img
	mkfs.ext4 -q -F -L "$MBR_P1_LABEL" -U "$MBR_P1_UUID" build/m1.img
	truncate -s "$MBR_DISK_BYTES" build/mbr.raw
	sfdisk -q build/mbr.raw <<-EOF
		label: dos
		label-id: $MBR_DISK_ID
		unit: sectors
		start=2048, size=16384, type=83
		start=20480, size=61440, type=5
		start=22528, size=16384, type=83
		start=40960, size=20480, type=82
	EOF
	put_file build/mbr.raw $((2048 * 512)) build/m1.img
	pattern_bytes "imgfs logical p5" 8M >build/m5.img
	put_file build/mbr.raw $((22528 * 512)) build/m5.img
	pattern_bytes "imgfs logical p6" 10M >build/m6.img
	put_file build/mbr.raw $((40960 * 512)) build/m6.img
	to_format build/mbr.raw "$img" "$fmt"
}

# ---------------------------------------------------------------------------
# Expected bytes (qemu-img is the oracle)

# partitions_of RAW: "NUMBER START_BYTES SIZE_BYTES TYPE" for each partition
# sfdisk finds in RAW, extended containers included (imgfs shows an
# extended partition with the whole range the table gives it).
partitions_of() {
	sfdisk -J "$1" | jq -r --arg dev "$1" '
		.partitiontable as $t | ($t.sectorsize // 512) as $ss |
		$t.partitions[] |
		"\(.node | ltrimstr($dev) | ltrimstr("p")) \(.start * $ss) \(.size * $ss) \(.type)"'
}

# extract RAW START SIZE OUT: OUT holds RAW's bytes [START, START + SIZE).
extract() {
	dd if="$1" of="$4" bs=1M skip="$2" count="$3" \
		iflag=skip_bytes,count_bytes status=none
}

# assert_same_bytes DIR RAW: DIR/disk holds RAW's bytes, and every pN in DIR
# holds the byte range that sfdisk gives for partition N of RAW. Also
# checks that DIR has a pN for each partition and no other pN.
assert_same_bytes() {
	local dir=$1 raw=$2 n start size type want have

	as_user cmp "$dir/disk" "$raw"
	want=
	while read -r n start size type; do
		want+="p$n "
		extract "$raw" "$start" "$size" "expected-p$n.raw"
		assert_eq "$(as_user stat -c %s "$dir/p$n")" "$size"
		as_user cmp "$dir/p$n" "expected-p$n.raw"
		rm -f "expected-p$n.raw"
	done < <(partitions_of "$raw")
	have=$(as_user ls "$dir" | grep -x 'p[0-9]*' | sort -V | tr '\n' ' ')
	assert_eq "$have" "$want"
}

# allocated_bytes IMG [START SIZE]: bytes qemu-img map reports as data
# stored in IMG itself (depth 0) within [START, START + SIZE) (default: the
# whole disk). -U: imgfs holds QEMU's locks while it is mounted.
allocated_bytes() {
	local s=${2:-0} e

	if [[ -n ${3:-} ]]; then
		e=$(($2 + $3))
	else
		e=$(qemu-img info -U --output=json "$1" | jq '."virtual-size"')
	fi
	qemu-img map -U --output=json "$1" | jq --argjson s "$s" --argjson e "$e" '
		[ .[] | select(.data and .depth == 0) |
		  [ ([.start, $s] | max), ([.start + .length, $e] | min) ] |
		  select(.[1] > .[0]) | .[1] - .[0] ] | add // 0'
}

# A hung FUSE request or a daemon that keeps the test's stdout open would
# otherwise stall the whole suite.
BATS_TEST_TIMEOUT=${BATS_TEST_TIMEOUT:-300}

# info_line KEY [DIR]: the value(s) after KEY on the `KEY value...` line of
# DIR/info (default $MNT), as the user reads it.
info_line() {
	as_user cat "${2:-$MNT}/info" |
		awk -v k="$1" '$1 == k { sub(/^[^ ]+ /, ""); print }'
}

# snapshot_date_utc IMG ID: the snapshot's date as info shows it.
snapshot_date_utc() {
	local sec
	sec=$(qemu-img info -U --output=json "$1" |
		jq --arg id "$2" '.snapshots[] | select(.id == $id) | ."date-sec"')
	date -u -d "@$sec" +%Y-%m-%dT%H:%M:%SZ
}

# be64 FILE OFFSET: the big-endian 64-bit number at OFFSET of FILE.
be64() {
	echo $((16#$(od -A n -t x1 -j "$2" -N 8 "$1" | tr -d ' \n')))
}

# put_be64 FILE OFFSET VALUE: writes VALUE there, big-endian.
put_be64() {
	local hex i bytes=
	hex=$(printf '%016x' "$3")
	for ((i = 0; i < 16; i += 2)); do
		bytes+="\\x${hex:i:2}"
	done
	printf "$bytes" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# put_be32 FILE OFFSET VALUE: writes VALUE there, big-endian, 4 bytes.
put_be32() {
	local hex i bytes=
	hex=$(printf '%08x' "$3")
	for ((i = 0; i < 8; i += 2)); do
		bytes+="\\x${hex:i:2}"
	done
	printf "$bytes" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# l2_entry_offset IMG GUEST_OFF: where in the qcow2 file the L2 entry that
# maps GUEST_OFF lives (standard L2 entries, an allocated L2 table).
l2_entry_offset() {
	local img=$1 off=$2 cluster_bits cluster l1_off l2_entries l2_off
	cluster_bits=$((16#$(od -A n -t x1 -j 20 -N 4 "$img" | tr -d ' \n')))
	cluster=$((1 << cluster_bits))
	l2_entries=$((cluster / 8))
	l1_off=$(be64 "$img" 40)
	l2_off=$(($(be64 "$img" $((l1_off + off / cluster / l2_entries * 8))) &
		0x00fffffffffffe00))
	((l2_off != 0)) || return 1
	echo $((l2_off + off / cluster % l2_entries * 8))
}

# ---------------------------------------------------------------------------
# Writing (write*.bats)

# det_random SIZE: SIZE bytes that look random and are the same every run
# (AES-CTR over zeroes), for reproducible workloads.
det_random() {
	head -c "$1" /dev/zero | openssl enc -aes-128-ctr -nosalt \
		-K 696d6766732d7772697465732d746573 -iv 0 2>/dev/null
}

# make_workload OUT SIZE SEED [COUNT]: writes to OUT a bash script that
# changes the file named by its first argument ($T) with COUNT (default 300)
# operations drawn from SEED, all inside [0, SIZE): writes of pieces of
# ./workload-data.bin (4 MiB of det_random, made here once) at random offsets and lengths
# (unaligned, sector-aligned and 64 KiB-aligned), overwrites of earlier
# writes, `fallocate -p` (punch hole), `fallocate -z` (zero range) and
# `sync FILE` (fsync). The same SEED gives the same script, so it can be
# applied to a mounted image and to a raw reference file alike.
make_workload() {
	local out=$1 size=$2 count=${4:-300} i r off len skip R prev=()

	[[ -e workload-data.bin ]] || det_random 4M >workload-data.bin
	RANDOM=$3
	# R = a number in [0, $1). No $( ): a subshell would reseed RANDOM.
	_rnd() { R=$(((RANDOM << 15 | RANDOM) % $1)); }
	{
		echo 'T=$1; set -e'
		for ((i = 0; i < count; i++)); do
			_rnd 100
			r=$R
			_rnd 3
			case $R in
			0) _rnd 262144; len=$((R + 1)) ;;
			1) _rnd 256; len=$(((R + 1) * 512)) ;;
			2) _rnd 4; len=$(((R + 1) * 65536)) ;;
			esac
			_rnd $((size - len))
			off=$R
			_rnd 3
			case $R in
			1) off=$((off / 512 * 512)) ;;
			2) off=$((off / 65536 * 65536)) ;;
			esac
			if ((r < 15 && ${#prev[@]})); then
				# Overwrite an earlier write, shifted a little.
				_rnd ${#prev[@]}
				off=${prev[R]}
				_rnd 4096
				off=$((off + R))
				((off + len <= size)) || off=$((size - len))
			fi
			if ((r < 65)); then
				prev+=("$off")
				_rnd $((4194304 - len))
				skip=$R
				echo "dd if=workload-data.bin of=\"\$T\" bs=64K skip=$skip seek=$off count=$len iflag=skip_bytes,count_bytes oflag=seek_bytes conv=notrunc status=none"
			elif ((r < 77)); then
				echo "fallocate -p -o $off -l $len \"\$T\""
			elif ((r < 89)); then
				echo "fallocate -z -o $off -l $len \"\$T\""
			else
				echo "sync \"\$T\""
			fi
		done
		echo 'sync "$T"'
	} >"$out"
	unset -f _rnd
}

# check_no_corruption IMG: qemu-img check finds no corruption in IMG
# (leaked clusters allowed: status 0 or 3), as after a crash.
check_no_corruption() {
	local out rc=0
	out=$(qemu-img check "$1" 2>&1) || rc=$?
	if [[ $rc != 0 && $rc != 3 ]] || grep -q '^ERROR' <<<"$out"; then
		echo "qemu-img check $1: status $rc" >&2
		echo "$out" >&2
		return 1
	fi
}

# fuse_conn MOUNTPOINT: the number of MOUNTPOINT's FUSE connection (its
# entry in /sys/fs/fuse/connections), from the mount's device minor.
fuse_conn() {
	# /proc says: a stat on another user's FUSE mount fails with EACCES.
	awk -v m="$1" '$5 == m { split($3, d, ":"); c = d[2] } END { if (c == "") exit 1; print c }' \
		"${MOUNTINFO:-/proc/self/mountinfo}"
}

# abort_fuse_conn N: when connection N outlived its daemon (a request can
# then wait for ever, unkillable), aborts it so that the processes waiting
# on it and the test run can go on. Needs root and fusectl; else a no-op.
abort_fuse_conn() {
	local c=/sys/fs/fuse/connections/$1
	[[ -n $1 && $EUID -eq 0 ]] || return 0
	if ! mountpoint -q /sys/fs/fuse/connections; then
		mount -t fusectl fusectl /sys/fs/fuse/connections 2>/dev/null ||
			return 0
	fi
	[[ -e $c/abort ]] || return 0
	echo "abort_fuse_conn: aborting FUSE connection $1 ($(cat "$c/waiting") requests waiting)" >&2
	echo 1 >"$c/abort"
}

# process_gone PID: PID has exited completely (not even a zombie is left,
# nor a thread stuck in the kernel that keeps the process from exiting).
process_gone() {
	[[ ! -e /proc/$1 ]]
}

# stuck_threads PID: where PID's threads wait in the kernel, for messages.
stuck_threads() {
	local t
	for t in /proc/"$1"/task/*; do
		echo "  thread ${t##*/}: $(awk '{ print $3 }' "$t/stat" 2>/dev/null) $(cat "$t/wchan" 2>/dev/null)" \
			"$(awk '{ sub(/\+.*/, "", $2); printf "%s<", $2 }' "$t/stack" 2>/dev/null)"
	done
}

# bounded SECONDS CMD...: runs CMD; if it has not finished after SECONDS
# (a request the daemon of $MNT never answers), shows where that daemon's
# threads wait, aborts $MNT's FUSE connection so that CMD ends, and fails
# with status 124. For operations that could deadlock the daemon.
bounded() {
	local secs=$1 pid dpid conn
	shift
	"$@" &
	pid=$!
	if ! wait_until "$secs" pids_gone "$pid"; then
		echo "bounded: '$*' still waits after ${secs}s; the daemon's threads:" >&2
		dpid=$(daemon_pid) && stuck_threads "$dpid" >&2
		conn=$(fuse_conn "$MNT") && abort_fuse_conn "$conn"
		wait "$pid" 2>/dev/null
		return 124
	fi
	wait "$pid"
}
