#!/usr/bin/env bats
# vmm.bats: the virtio-blk test VMM (imgvmm) and its vhost-user-blk back end.
#
# Bytes a guest writes through the device model must be what an imgfs mount
# and qemu-img see, and the other way round; a real QEMU (TCG, microvm)
# boots a Debian cloud kernel from a busybox initramfs against
# `imgvmm --vhost-user`, checks the disk against checksums computed here,
# writes a pattern and powers off; the same boot against
# qemu-storage-daemon's vhost-user-blk export must print the same lines.
#
# The kernel (apt-get download + dpkg-deb -x, nothing installed) and the
# initramfs are cached in $IMGFS_BUILD_DIR/vmm-boot, so reruns do not
# download again. Every daemon and QEMU started here is stopped by PID in
# teardown, pass or fail.
bats_require_minimum_version 1.5.0

load helpers
load images

IMGVMM=$IMGFS_BUILD_DIR/vmm/imgvmm
BOOT_CACHE=$IMGFS_BUILD_DIR/vmm-boot
# One TCG boot takes about 5 s here; the bound is for a very busy machine.
BOOT_TIMEOUT=${BOOT_TIMEOUT:-120}

setup() {
	[[ -x $IMGVMM ]] || {
		echo "imgvmm is not built: $IMGVMM" >&2
		return 1
	}
	imgfs_setup
	BG_PIDS=()
}

teardown() {
	local p
	for p in "${BG_PIDS[@]}"; do
		kill -TERM "$p" 2>/dev/null || true
	done
	for p in "${BG_PIDS[@]}"; do
		wait "$p" 2>/dev/null || true
	done
	imgfs_teardown
}

md5_of() {
	md5sum | cut -d' ' -f1
}

# start_bg CMD...: runs CMD in the background and remembers its PID.
start_bg() {
	"$@" &
	BG_PIDS+=($!)
	LAST_PID=$!
}

# ---------------------------------------------------------------------------
# Workloads through the test VMM

# fresh_image FORMAT: $IMG, 64 MiB of a known pattern in FORMAT.
fresh_image() {
	IMG=$PWD/disk.$1
	make_raw base.raw 64M
	qio base.raw "write -P 0x5c 0 8M" "write -P 0xa3 40M 3M" >/dev/null
	to_format base.raw "$IMG" "$1"
	give_to_user "$IMG"
}

vmm_then_mount() {
	fresh_image "$1"
	run -0 "$IMGVMM" --queues 3 --ops 3000 --seed 11 --dump model.raw "$IMG"
	[[ $output == *"MiB read and verified"* ]]
	run -0 qemu-img compare -f "$1" -F raw "$IMG" model.raw
	[[ $1 == raw ]] || run -0 qemu-img check "$IMG"
	mount_image
	as_user cmp "$MNT/disk" model.raw
	unmount_image
}

@test "what a guest writes through the VMM to a raw image, imgfs and qemu-img read back" {
	vmm_then_mount raw
}

@test "what a guest writes through the VMM to a qcow2 image, imgfs and qemu-img read back" {
	vmm_then_mount qcow2
}

mount_then_vmm() {
	fresh_image "$1"
	head -c 5M /dev/urandom >pattern.bin
	mount_image
	as_user dd if=pattern.bin of="$MNT/disk" bs=1M seek=2 conv=notrunc,fsync \
		status=none
	unmount_image
	qemu-img convert -f "$1" -O raw "$IMG" expected.raw
	cmp <(dd if=expected.raw bs=1M skip=2 count=5 status=none) pattern.bin
	# Every byte of the disk, read through the device, random order first.
	run -0 "$IMGVMM" --read --read-only --queues 2 --ops 2000 \
		--expect expected.raw "$IMG"
	[[ $output == *"MiB read and verified"* ]]
}

@test "what a user writes through an imgfs mount of a raw image, a guest reads through the VMM" {
	mount_then_vmm raw
}

@test "what a user writes through an imgfs mount of a qcow2 image, a guest reads through the VMM" {
	mount_then_vmm qcow2
}

@test "the VMM reports a wrong byte instead of passing" {
	fresh_image raw
	qemu-img convert -O raw "$IMG" expected.raw
	printf 'X' | dd of=expected.raw bs=1 seek=12345 conv=notrunc status=none
	run -1 "$IMGVMM" --read -r --queues 1 --ops 10 --expect expected.raw "$IMG"
	[[ $output == *"byte 12345 is 0x5c, want 0x58"* ]]
}

@test "with -r the guest only reads, and the image stays as it was" {
	fresh_image raw
	before=$(md5_of <"$IMG")
	run -0 "$IMGVMM" -r --queues 2 --ops 500 "$IMG"
	[[ $output == *" 0 writes, 0 discards, 0 write-zeroes,"* ]]
	assert_eq "$(md5_of <"$IMG")" "$before"
}

# ---------------------------------------------------------------------------
# Booting QEMU from the vhost-user back end

# boot_assets: $KERNEL and $INITRD, made once and cached.
boot_assets() {
	local deb pkg
	require qemu-system-x86_64 dpkg-deb apt-get cpio busybox modinfo
	mkdir -p "$BOOT_CACHE"
	KERNEL=$(ls "$BOOT_CACHE"/x/boot/vmlinuz-* 2>/dev/null | head -n 1)
	if [[ -z $KERNEL ]]; then
		# linux-image-cloud-amd64 is a metapackage: the kernel is the
		# package it depends on.
		pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null |
			awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
		[[ -n $pkg ]] || skip "apt-cache knows no linux-image-cloud-amd64"
		(cd "$BOOT_CACHE" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
			skip "cannot download $pkg (no network?): no kernel to boot"
		deb=$(ls "$BOOT_CACHE"/"$pkg"_*.deb | head -n 1)
		dpkg-deb -x "$deb" "$BOOT_CACHE/x.tmp"
		rm -rf "$BOOT_CACHE/x"
		mv "$BOOT_CACHE/x.tmp" "$BOOT_CACHE/x"
		rm -f "$deb"
		KERNEL=$(ls "$BOOT_CACHE"/x/boot/vmlinuz-* | head -n 1)
	fi
	INITRD=$BOOT_CACHE/initrd.gz
	if [[ ! -f $INITRD || $BATS_TEST_DIRNAME/../vmm/make-initramfs.sh -nt $INITRD ]]; then
		"$BATS_TEST_DIRNAME/../vmm/make-initramfs.sh" \
			"$(ls -d "$BOOT_CACHE"/x/lib/modules/* | head -n 1)" "$INITRD"
	fi
}

# make_gpt_disk RAW: 16 MiB, GPT with p1 at 1 MiB (14 MiB), random bytes in
# the partition's first 4 MiB.
make_gpt_disk() {
	truncate -s 16M "$1"
	sfdisk -q "$1" <<-EOF
		label: gpt
		start=2048, size=28672, type=$GPT_LINUX_TYPE
	EOF
	dd if=/dev/urandom of="$1" bs=1M seek=1 count=4 conv=notrunc status=none
}

# boot SOCKET OUT: boots the guest against the vhost-user socket; its
# IMGFS lines go to OUT. The guest checks vda and vda1 against the image
# as qemu-img reads it now ($IMG) and writes 64 KiB at 64 KiB into vda1.
boot() {
	local khz vda vda1
	khz=$(awk -F: '/^cpu MHz/ { printf "%d", $2 * 1000; exit }' /proc/cpuinfo)
	# -U: the back end holds the image (and its lock) meanwhile.
	qemu-img convert -U -O raw "$IMG" now.raw
	vda=$(md5_of <now.raw)
	vda1=$(dd if=now.raw bs=512 skip=2048 count=28672 status=none | md5_of)
	rm -f now.raw
	run timeout "$BOOT_TIMEOUT" qemu-system-x86_64 -M microvm -accel tcg \
		-m 256 -smp 2 -nodefaults -display none -serial stdio \
		-no-reboot -object memory-backend-memfd,id=mem,size=256M,share=on \
		-machine memory-backend=mem \
		-global virtio-mmio.force-legacy=false \
		-chardev socket,id=c,path="$1" -device vhost-user-blk,chardev=c \
		-kernel "$KERNEL" -initrd "$INITRD" \
		-append "console=ttyS0 panic=-1 reboot=t quiet tsc_early_khz=$khz imgfs.vda=$vda imgfs.vda1=$vda1 imgfs.seek=16"
	if [[ $status -ne 0 || $output != *"IMGFS done"* ]]; then
		printf 'QEMU exited with %s:\n%s\n' "$status" "$output" >&2
		[[ $output == *"IMGFS"* || $status -eq 124 ]] ||
			skip "QEMU cannot start here"
		return 1
	fi
	grep -a '^IMGFS' <<<"$output" | tr -d '\r' >"$2"
	cat "$2" >&2
}

# serve IMAGE SOCKET: imgvmm --vhost-user in the background, ready once it
# listens (its log says so).
serve() {
	rm -f "$2" vu.log
	start_bg "$IMGVMM" --vhost-user "$2" --serial vhost_user_blk "$1" \
		2>vu.log
	wait_until "$IMGFS_HANG_DEADLINE" grep -q "listening on" vu.log
}

# assert_pattern: the image holds the guest's pattern at vda1 + 64 KiB, as
# an imgfs mount shows it, and qemu-img check is clean.
assert_pattern() {
	local want
	want=$(yes "imgfs guest pattern" | head -c 65536 | md5_of)
	grep -qx "IMGFS wrote $want" "$1"
	mount_image
	assert_eq "$(as_user dd if="$MNT/p1" bs=4096 skip=16 count=16 status=none | md5_of)" "$want"
	unmount_image
	if [[ $(img_format "$IMG") == qcow2 ]]; then
		run -0 qemu-img check "$IMG"
	fi
}

boot_gpt() {
	boot_assets
	make_gpt_disk gpt.raw
	IMG=$PWD/disk.$1
	to_format gpt.raw "$IMG" "$1"
	give_to_user "$IMG"
	serve "$IMG" "$PWD/vu.sock"
	boot "$PWD/vu.sock" out1.txt
	grep -qx "IMGFS vda ok [0-9a-f]*" out1.txt
	grep -qx "IMGFS vda1 ok [0-9a-f]*" out1.txt
	grep -qx "IMGFS ro 0 size 32768 serial vhost_user_blk" out1.txt
	kill -TERM "$LAST_PID"
	wait "$LAST_PID" || true
	assert_pattern out1.txt
}

@test "QEMU boots from imgvmm --vhost-user on a raw image with a GPT, and its writes land in the image" {
	boot_gpt raw
}

@test "QEMU boots from imgvmm --vhost-user on a qcow2 image with a GPT, and its writes land in the image" {
	boot_gpt qcow2
}

@test "QEMU boots from imgvmm --vhost-user on a qcow2 image with a backing file" {
	boot_assets
	make_gpt_disk gpt.raw
	qemu-img convert -f raw -O qcow2 gpt.raw base.qcow2
	make_overlay disk.qcow2 base.qcow2 qcow2
	IMG=$PWD/disk.qcow2
	give_to_user "$IMG" base.qcow2
	cp base.qcow2 base-before.qcow2
	serve "$IMG" "$PWD/vu.sock"
	boot "$PWD/vu.sock" out1.txt
	grep -qx "IMGFS vda ok [0-9a-f]*" out1.txt
	grep -qx "IMGFS vda1 ok [0-9a-f]*" out1.txt
	kill -TERM "$LAST_PID"
	wait "$LAST_PID" || true
	assert_pattern out1.txt
	# The guest's writes went to the overlay, not to its backing file.
	cmp base.qcow2 base-before.qcow2
}

@test "imgvmm --vhost-user survives QEMU going away and serves the next one" {
	boot_assets
	make_gpt_disk gpt.raw
	IMG=$PWD/disk.raw
	cp gpt.raw "$IMG"
	give_to_user "$IMG"
	serve "$IMG" "$PWD/vu.sock"
	boot "$PWD/vu.sock" out1.txt
	# Second guest, same daemon: it sees the first guest's pattern (the
	# checksums are taken from the image as it is now).
	boot "$PWD/vu.sock" out2.txt
	grep -qx "IMGFS vda ok [0-9a-f]*" out2.txt
	grep -qx "IMGFS vda1 ok [0-9a-f]*" out2.txt
	kill -0 "$LAST_PID"
}

@test "the guest prints the same lines booted from imgvmm and from qemu-storage-daemon" {
	require qemu-storage-daemon
	boot_assets
	make_gpt_disk gpt.raw
	cp gpt.raw a.raw
	cp gpt.raw b.raw
	IMG=$PWD/a.raw
	serve "$PWD/a.raw" "$PWD/vu.sock"
	boot "$PWD/vu.sock" imgvmm.txt
	IMG=$PWD/b.raw
	start_bg qemu-storage-daemon \
		--blockdev driver=file,filename="$PWD/b.raw",node-name=file \
		--blockdev driver=raw,file=file,node-name=disk \
		--export type=vhost-user-blk,id=exp,node-name=disk,addr.type=unix,addr.path="$PWD/qsd.sock",writable=on
	wait_until "$IMGFS_HANG_DEADLINE" test -S "$PWD/qsd.sock"
	boot "$PWD/qsd.sock" qsd.txt
	diff imgvmm.txt qsd.txt
	cmp a.raw b.raw
}
