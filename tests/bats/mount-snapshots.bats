#!/usr/bin/env bats
# mount-snapshots.bats: internal qcow2 snapshots under MOUNTPOINT/snapshots,
# checked against qemu-img convert -l snapshot.id=... (QEMU iotests style).

bats_require_minimum_version 1.5.0

load helpers
load images

@test "every snapshot folder holds the bytes of qemu-img convert -l snapshot.name=NAME, partitions included" {
	make_gpt_ext4_fat "$IMG"
	qemu-img snapshot -c installed "$IMG"
	qemu-io -c "write -P 0x11 3M 1M" "$IMG" >/dev/null
	qemu-img snapshot -c updated "$IMG"
	qemu-io -c "write -P 0x22 30M 64k" -c "write -P 0x33 66M 4k" \
		"$IMG" >/dev/null
	for name in installed updated; do
		qemu-img convert -l "snapshot.name=$name" -O raw "$IMG" "$name.raw"
	done
	qemu-img convert -O raw "$IMG" active.raw
	mount_image
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" $'installed\nupdated'
	assert_same_bytes "$MNT/snapshots/installed" installed.raw
	assert_same_bytes "$MNT/snapshots/updated" updated.raw
	assert_same_bytes "$MNT" active.raw
	run -1 cmp -s installed.raw updated.raw
	run -1 cmp -s updated.raw active.raw
}

@test "a snapshot taken before repartitioning shows the partitions of its own table" {
	make_mbr_logical "$IMG"
	qemu-img snapshot -c mbr-layout "$IMG"
	# Now the active disk gets a GPT with two partitions: its first and
	# last MiB (primary and backup GPT) are written over the MBR layout.
	truncate -s "$MBR_DISK_BYTES" gpt.raw
	sfdisk -q gpt.raw <<-EOF
		label: gpt
		unit: sectors
		start=2048, size=32768, type=$GPT_LINUX_TYPE
		start=40960, size=32768, type=$GPT_LINUX_TYPE
	EOF
	head -c 1M gpt.raw >gpt-head.bin
	tail -c 1M gpt.raw >gpt-tail.bin
	qemu-io -c "write -s gpt-head.bin 0 1M" \
		-c "write -s gpt-tail.bin $((MBR_DISK_BYTES - 1048576)) 1M" \
		"$IMG" >/dev/null
	qemu-img convert -l snapshot.name=mbr-layout -O raw "$IMG" mbr.raw
	qemu-img convert -O raw "$IMG" active.raw
	mount_image
	run -0 as_user ls "$MNT/snapshots/mbr-layout"
	assert_eq "$output" $'disk\nfiles\np1\np2\np5\np6'
	assert_same_bytes "$MNT/snapshots/mbr-layout" mbr.raw
	run -0 as_user ls "$MNT"
	assert_eq "$output" $'disk\nfiles\ninfo\np1\np2\nsnapshots'
	assert_same_bytes "$MNT" active.raw
}

@test "a snapshot keeps the size the disk had when it was taken" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	qemu-io -c "write -P 0x41 0 1M" -c "write -P 0x42 15M 1M" "$IMG" >/dev/null
	qemu-img snapshot -c small "$IMG"
	qemu-img resize -q "$IMG" 32M
	qemu-io -c "write -P 0x43 20M 1M" "$IMG" >/dev/null
	# convert -l reads the snapshot at the active disk's size; applying
	# it to a copy gives the disk as it was.
	qemu-img convert -O raw "$IMG" active.raw
	cp "$IMG" reverted.qcow2
	qemu-img snapshot -a small reverted.qcow2
	qemu-img convert -O raw reverted.qcow2 small.raw
	assert_eq "$(stat -c %s small.raw)" 16777216
	mount_image
	run -0 as_user stat -c %s "$MNT/disk" "$MNT/snapshots/small/disk"
	assert_eq "$output" $'33554432\n16777216'
	as_user cmp "$MNT/snapshots/small/disk" small.raw
	as_user cmp "$MNT/disk" active.raw
}

@test "snapshots whose names cannot be folder names appear under their IDs, and info says so" {
	qemu-img create -q -f qcow2 "$IMG" 4M
	# IDs 1..7, each over different bytes.
	names=("a/b" "." ".." "dup" "dup" "" "clean")
	for i in "${!names[@]}"; do
		qemu-io -c "write -P $((i + 1)) 0 64k" "$IMG" >/dev/null
		qemu-img snapshot -c "${names[$i]}" "$IMG"
	done
	run -0 qemu-img snapshot -l "$IMG"
	[[ ${#lines[@]} -eq 9 ]]
	for id in 1 2 3 4 5 6 7; do
		qemu-img convert -l "snapshot.id=$id" -O raw "$IMG" "snap-$id.raw"
	done
	mount_image
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" $'1\n2\n3\n4\n5\n6\nclean'
	for id in 1 2 3 4 5 6 7; do
		dir=$id
		[[ $id == 7 ]] && dir=clean
		as_user cmp "$MNT/snapshots/$dir/disk" "snap-$id.raw"
		run -0 as_user head -c 1 "$MNT/snapshots/$dir/disk"
		assert_eq "$output" "$(printf "\\x0$id")"
	done
	run -0 info_line snapshots
	assert_eq "${lines[0]}" 7
	run -0 as_user awk '$1 == "DIR" { on = 1; next } on && NF == 0 { on = 0 } on { print $1, $2, $3, $7 }' "$MNT/info"
	assert_eq "$output" "$(printf '%s\n' "1 1 a/b named-by-id" \
		"2 2 . named-by-id" "3 3 .. named-by-id" "4 4 dup named-by-id" \
		"5 5 dup named-by-id" "6 6 - named-by-id" "clean 7 clean -")"
}

@test "snapshot files are read-only: mode 0444, a write fails with EROFS, nothing can be created in a snapshot folder" {
	make_gpt_ext4_fat "$IMG"
	qemu-img snapshot -c installed "$IMG"
	qemu-img convert -l snapshot.name=installed -O raw "$IMG" installed.raw
	mount_image
	run -0 as_user stat -c '%a %n' "$MNT/snapshots/installed/disk" "$MNT/snapshots/installed/p1"
	assert_eq "$output" "444 $MNT/snapshots/installed/disk
444 $MNT/snapshots/installed/p1"
	run -1 as_user dd if=/dev/zero of="$MNT/snapshots/installed/p1" bs=512 count=1 conv=notrunc status=none
	assert_eq "$output" "dd: failed to open '$MNT/snapshots/installed/p1': Read-only file system"
	run -1 as_user mkdir "$MNT/snapshots/installed/new"
	assert_eq "$output" "mkdir: cannot create directory '$MNT/snapshots/installed/new': Read-only file system"
	run -1 as_user touch "$MNT/snapshots/installed/new"
	assert_eq "$output" "touch: cannot touch '$MNT/snapshots/installed/new': Read-only file system"
	assert_same_bytes "$MNT/snapshots/installed" installed.raw
}

@test "info lists each snapshot with its ID, name, date and disk size" {
	qemu-img create -q -f qcow2 "$IMG" 16M
	qemu-img snapshot -c first "$IMG"
	qemu-img resize -q "$IMG" 32M
	qemu-img snapshot -c second "$IMG"
	mount_image
	run -0 info_line snapshots
	assert_eq "$output" 2
	run -0 as_user awk '$1 == "DIR" { on = 1; print; next } on && NF == 0 { on = 0 } on' "$MNT/info"
	assert_eq "$output" "DIR ID NAME DATE VM-CLOCK-NS DISK-SIZE NOTE UNREADABLE
first 1 first $(snapshot_date_utc "$IMG" 1) 0 16777216 - -
second 2 second $(snapshot_date_utc "$IMG" 2) 0 33554432 - -"
}

# Four snapshots; the second's L1 table lies past the end of the file, the
# third's is larger than any image may have.
make_broken_snapshots() {
	local e
	qemu-img create -q -f qcow2 "$IMG" 16M
	for n in good broken huge last; do
		qemu-img snapshot -c "$n" "$IMG"
	done
	e=$(snapshot_entry_offset "$IMG" 1)
	put_be64 "$IMG" "$e" $((1 << 32))
	e=$(snapshot_entry_offset "$IMG" 2)
	put_be32 "$IMG" $((e + 8)) $((1 << 28))
	BROKEN_ROWS="DIR ID NAME DATE VM-CLOCK-NS DISK-SIZE NOTE UNREADABLE
good 1 good $(snapshot_date_utc "$IMG" 1) 0 16777216 - -
broken 2 broken $(snapshot_date_utc "$IMG" 2) 0 16777216 - snapshot L1 table at 0x100000000 (8 bytes) lies past the end of the file ($(stat -c %s "$IMG") bytes)
huge 3 huge $(snapshot_date_utc "$IMG" 3) 0 16777216 - snapshot L1 table of 268435456 entries is too large (limit 33554432 bytes)
last 4 last $(snapshot_date_utc "$IMG" 4) 0 16777216 - -"
}

@test "info lists every snapshot of the table from the start, the unreadable ones with the reason; snapshots/ holds the readable ones; the launcher prints nothing" {
	make_broken_snapshots
	give_to_user "$IMG"
	run -0 --separate-stderr as_user "$IMGFS" "$IMG" "$MNT"
	assert_eq "$output" ""
	assert_eq "$stderr" ""
	run -0 info_line snapshots
	assert_eq "$output" 4
	run -0 as_user awk '$1 == "DIR" { on = 1; print; next } on && NF == 0 { on = 0 } on' "$MNT/info"
	assert_eq "$output" "$BROKEN_ROWS"
	run -0 as_user ls "$MNT/snapshots"
	assert_eq "$output" $'good\nlast'
	run -0 as_user stat -c %h "$MNT/snapshots"
	assert_eq "$output" 4
	run -2 as_user ls "$MNT/snapshots/broken"
	assert_eq "$output" "ls: cannot access '$MNT/snapshots/broken': No such file or directory"
	qemu_raw "$IMG" good.raw -l snapshot.name=good
	assert_same_bytes "$MNT/snapshots/good" good.raw
	# Browsing changes nothing in the list.
	run -0 as_user awk '$1 == "DIR" { on = 1; print; next } on && NF == 0 { on = 0 } on' "$MNT/info"
	assert_eq "$output" "$BROKEN_ROWS"
}

@test "imgfs info lists the same snapshot rows as the mount; imgfs ls snapshots the same folders; naming an unreadable one says why" {
	make_broken_snapshots
	run -0 --separate-stderr "$IMGFS" info "$IMG"
	assert_eq "$stderr" ""
	run -0 awk '$1 == "DIR" { on = 1; print; next } on && NF == 0 { on = 0 } on' <<<"$output"
	assert_eq "$output" "$BROKEN_ROWS"
	run -0 "$IMGFS" info --json "$IMG"
	run -0 jq -r '.snapshots[] | "\(.dir) \(.unreadable)"' <<<"$output"
	assert_eq "$output" "good null
broken snapshot L1 table at 0x100000000 (8 bytes) lies past the end of the file ($(stat -c %s "$IMG") bytes)
huge snapshot L1 table of 268435456 entries is too large (limit 33554432 bytes)
last null"
	run -0 "$IMGFS" ls "$IMG" snapshots
	assert_eq "$output" $'good\nlast'
	run -1 --separate-stderr "$IMGFS" ls "$IMG" snapshots/broken
	assert_eq "$stderr" "imgfs: $IMG: snapshots/broken/: cannot open the snapshot: snapshot L1 table at 0x100000000 (8 bytes) lies past the end of the file ($(stat -c %s "$IMG") bytes)"
}
