#!/usr/bin/env bats
# concurrent.bats: several things at once against one mount, each checked
# for exact bytes: snapshots taken and deleted while the disk is written,
# partition readers while the table is rewritten (a rescan on every close),
# and many readers of files/ at once. scripts/test.sh also runs this file
# against a ThreadSanitizer build of the daemon, which must report nothing
# (fio --verify on several partitions at once is in write-faults.bats).

bats_require_minimum_version 1.5.0

load helpers
load images

# snapshot_marker N: the bytes at the start of p3 when snapshot sN is taken.
snapshot_marker() {
	printf 'p3 when s%02d was taken\n' "$1"
}

@test "mkdir and rmdir of snapshots while fio rewrites p1 and p2: each snapshot keeps the p3 it was taken with, fio verifies, and qemu-img agrees" {
	require fio
	make_gpt_ext4_fat "$IMG"
	mount_image
	pids=()
	for p in p1 p2; do
		as_user fio --name="$p" --filename="$MNT/$p" --randseed=7 \
			--ioengine=psync --rw=randwrite --bsrange=4k-32k \
			--size=8M --loops=2 --fsync=16 --verify=crc32c \
			--verify_fatal=1 --output="$PWD/fio-$p.out" \
			</dev/null >/dev/null 2>&1 3>&- &
		pids+=($!)
	done
	for n in $(seq 1 8); do
		snapshot_marker "$n" | as_user dd of="$MNT/p3" conv=notrunc,fsync status=none
		as_user mkdir "$MNT/snapshots/s$(printf %02d "$n")"
		if ((n > 2)); then
			as_user rmdir "$MNT/snapshots/s$(printf %02d $((n - 2)))"
		fi
	done
	for i in "${!pids[@]}"; do
		wait "${pids[i]}" || { cat "fio-p$((i + 1)).out" >&2; false; }
	done
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" "$(printf 's07\ns08')"
	for n in 7 8; do
		run -0 as_user head -n 1 "$MNT/snapshots/s0$n/p3"
		assert_eq "$output" "$(snapshot_marker $n)"
	done
	as_user cat "$MNT/disk" >seen.raw
	unmount_image
	run -0 qemu-img check "$IMG"
	run -0 qemu-img snapshot -l "$IMG"
	assert_eq "${#lines[@]}" 4
	[[ ${lines[2]} == *" s07 "* && ${lines[3]} == *" s08 "* ]]
	qemu_raw "$IMG" after.raw
	cmp seen.raw after.raw
	qemu_raw "$IMG" s07.raw -l snapshot.name=s07
	assert_eq "$(tail -c +$((65 * 1048576 + 1)) s07.raw | head -n 1)" \
		"$(snapshot_marker 7)"
}

# read_until_stopped FILE BYTES SUM TAG: reads the first BYTES of FILE
# until ./stop exists, and counts in ./TAG.ok and ./TAG.bad the reads whose
# sha256 was SUM and the ones whose was not.
read_until_stopped() {
	as_user sh -c '
		ok=0 bad=0
		while [ ! -e stop ]; do
			if [ "$(head -c "$2" "$1" | sha256sum)" = "$3" ]; then
				ok=$((ok + 1))
			else
				bad=$((bad + 1))
			fi
		done
		echo $ok >"$4.ok"; echo $bad >"$4.bad"' sh "$@"
}

# GPT of make_gpt_ext4_fat with p3 SECTORS long.
gpt_with_p3() {
	cat <<-EOF
		label: gpt
		label-id: $GPT_DISK_UUID
		unit: sectors
		start=2048, size=49152, type=$GPT_LINUX_TYPE, uuid=$GPT_P1_UUID, name=root
		start=51200, size=81920, type=$GPT_BASIC_DATA_TYPE, uuid=$GPT_P2_UUID, name=data
		start=133120, size=$1, type=$GPT_LINUX_TYPE, uuid=$GPT_P3_UUID
	EOF
}

@test "readers of p1, p2 and info get the same bytes while sfdisk rewrites the table through disk ten times" {
	make_gpt_ext4_fat "$IMG"
	qemu_raw "$IMG" expected.raw
	p1_sum=$(extract expected.raw 1048576 4194304 /dev/stdout | sha256sum)
	p2_sum=$(extract expected.raw $((25 * 1048576)) 4194304 /dev/stdout | sha256sum)
	mount_image
	read_until_stopped "$MNT/p1" 4194304 "$p1_sum" p1 3>&- &
	r1=$!
	read_until_stopped "$MNT/p2" 4194304 "$p2_sum" p2 3>&- &
	r2=$!
	as_user sh -c 'while [ ! -e stop ]; do cat "$1" >/dev/null || exit 1; done' \
		sh "$MNT/info" 3>&- &
	r3=$!
	for i in $(seq 1 10); do
		sectors=$((i % 2 ? 4096 : 8192))
		gpt_with_p3 "$sectors" |
			as_user sfdisk -q --no-reread --no-tell-kernel "$MNT/disk"
		run -0 as_user stat -c %s "$MNT/p3"
		assert_eq "$output" $((sectors * 512))
	done
	touch stop
	wait "$r1" "$r2" "$r3"
	for p in p1 p2; do
		assert_eq "$(cat $p.bad)" 0
		(($(cat $p.ok) > 0))
	done
	unmount_image
	run -0 qemu-img check "$IMG"
}

# sums_of DIR FILE...: "sha256  name" of each FILE below DIR, as the user.
sums_of() {
	as_user sh -c 'cd "$1" && shift && sha256sum "$@"' sh "$@"
}

@test "six readers of files/p1 and files/p2 at once each get every file's bytes" {
	make_gpt_ext4_fat "$IMG"
	ext_files=(hello.txt docs/readme.txt docs/link-to-hello data/random.bin data/empty)
	fat_files=(hello.txt docs/readme.txt docs/random.bin)
	want_ext=$(cd src && sha256sum "${ext_files[@]}")
	want_fat=$(cd src && sha256sum hello.txt docs/readme.txt data/random.bin |
		sed 's|data/random.bin|docs/random.bin|')
	mount_image -o ro
	pids=()
	for i in 1 2 3 4; do
		sums_of "$MNT/files/p1" "${ext_files[@]}" >ext.$i 3>&- &
		pids+=($!)
	done
	for i in 1 2; do
		sums_of "$MNT/files/p2" "${fat_files[@]}" >fat.$i 3>&- &
		pids+=($!)
	done
	wait "${pids[@]}"
	for i in 1 2 3 4; do assert_eq "$(cat ext.$i)" "$want_ext"; done
	for i in 1 2; do assert_eq "$(cat fat.$i)" "$want_fat"; done
	unmount_image
}
