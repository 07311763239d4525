#!/bin/bash
# demo.sh: the main job on a built-in example. Builds imgfs, makes a small
# qcow2 disk image (GPT: an ext4 and a FAT32 partition, one internal
# snapshot), mounts it with imgfs and reads the guests' files from
# files/, then reads the same without FUSE (imgfs ls/cat/tar), and
# unmounts.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

bash scripts/deps.sh
bash scripts/build.sh build
imgfs=$root/build/fuse/imgfs

work=$(mktemp -d /tmp/imgfs-demo.XXXXXX)
mnt=$work/mnt
cleanup() {
	mountpoint -q "$mnt" 2>/dev/null && fusermount3 -u "$mnt"
	rm -rf "$work"
}
trap cleanup EXIT

echo "== building an example image in $work"
mkdir -p "$work/tree/docs" "$mnt"
echo "hello from the ext4 partition" > "$work/tree/hello.txt"
seq 1 1000 > "$work/tree/docs/numbers.txt"
truncate -s 96M "$work/disk.raw"
printf 'label: gpt\nstart=2048, size=40M, name=root\nsize=48M, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7, name=data\n' |
	sfdisk -q "$work/disk.raw"
truncate -s 40M "$work/p1.img"
mkfs.ext4 -q -L rootfs -d "$work/tree" "$work/p1.img"
dd if="$work/p1.img" of="$work/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
truncate -s 48M "$work/p2.img"
mkfs.vfat -F 32 -s 1 -n DATA "$work/p2.img" >/dev/null
echo "hello from the FAT partition" > "$work/readme.txt"
mcopy -i "$work/p2.img" "$work/readme.txt" ::README.TXT
dd if="$work/p2.img" of="$work/disk.raw" bs=1M seek=41 conv=notrunc,sparse status=none
qemu-img convert -f raw -O qcow2 "$work/disk.raw" "$work/example.qcow2"
qemu-img snapshot -c before-update "$work/example.qcow2"
qemu-io -f qcow2 -c 'write -P 0x55 90M 1M' "$work/example.qcow2" >/dev/null

echo "== imgfs example.qcow2 mnt"
"$imgfs" -o ro "$work/example.qcow2" "$mnt"
(cd "$mnt" && ls -l . snapshots snapshots/*)
echo
echo "== cat mnt/info"
cat "$mnt/info"
echo
echo "== the guests' own files, read by imgfs (no kernel mount, no fuse2fs):"
ls -l "$mnt/files" "$mnt/files/p1" "$mnt/files/p1/docs"
cat "$mnt/files/p1/hello.txt" "$mnt/files/p2/README.TXT"
echo "== partition attributes:"
getfattr -d "$mnt/p1" "$mnt/p2"
echo "== the snapshot differs from the active disk where qemu-io wrote:"
cmp "$mnt/disk" "$mnt/snapshots/before-update/disk" || true
fusermount3 -u "$mnt"
echo "== unmounted"
echo
echo "== the same without FUSE (for containers and CI jobs):"
echo "\$ imgfs ls -l example.qcow2 p1:/"
"$imgfs" ls -l "$work/example.qcow2" p1:/
echo "\$ imgfs cat example.qcow2 p2:/README.TXT"
"$imgfs" cat "$work/example.qcow2" p2:/README.TXT
echo "\$ imgfs tar example.qcow2 p1:/docs | tar -tvf -"
"$imgfs" tar "$work/example.qcow2" p1:/docs | tar -tvf -
echo "== done"
