#!/bin/sh
# make-initramfs.sh MODULES_DIR OUT: a busybox-static initramfs for the
# vhost-user boot test (tests/bats/vmm.bats).
#
# MODULES_DIR is lib/modules/VERSION of an unpacked Debian kernel package.
# The package ships no modules.dep, so the load order comes from each
# module's own "depends=" field (modinfo -F depends), depth first. The
# guest's /init loads the virtio modules, waits for /dev/vda, prints one
# "IMGFS ..." line per check (the host compares them), writes a pattern
# into /dev/vda1, syncs, reads it back past the page cache, and reboots,
# which with QEMU's -no-reboot ends QEMU.
#
# Kernel command line parameters read by /init:
#   imgfs.vda=MD5 imgfs.vda1=MD5   checksums the host computed
#   imgfs.seek=N                    where in vda1 to write, in 4 KiB blocks
set -eu

mods=$1
out=$2
busybox=$(command -v busybox)
case $(file -b "$busybox" 2>/dev/null || echo static) in
*dynamic*) echo "make-initramfs.sh: $busybox is not static (install busybox-static)" >&2
	exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/lib" "$work/dev" "$work/proc" "$work/sys"
cp "$busybox" "$work/bin/busybox"

order=
# add NAME: appends NAME after everything it depends on.
add() {
	case " $order " in *" $1 "*) return ;; esac
	ko=$(find "$mods" -name "$1.ko" -o -name "$1.ko.xz" | head -n 1)
	[ -n "$ko" ] || { echo "make-initramfs.sh: no module $1 in $mods" >&2; exit 1; }
	for dep in $(modinfo -F depends "$ko" | tr ',' ' '); do
		add "$dep"
	done
	case " $order " in *" $1 "*) return ;; esac
	case $ko in
	*.xz) xz -dc "$ko" >"$work/lib/$1.ko" ;;
	*) cp "$ko" "$work/lib/$1.ko" ;;
	esac
	order="$order $1"
}
for m in virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev \
	virtio_pci virtio_mmio virtio_blk; do
	add "$m"
done
echo "$order" >"$work/modules"

cat >"$work/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /modules); do
	insmod /lib/$m.ko 2>/dev/null || echo "IMGFS insmod $m failed"
done
arg() { tr ' ' '\n' </proc/cmdline | sed -n "s/^imgfs\.$1=//p"; }
i=0
while [ ! -b /dev/vda1 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
check() {
	sum=$(md5sum "/dev/$1" | cut -d' ' -f1)
	if [ "$sum" = "$(arg $1)" ]; then
		echo "IMGFS $1 ok $sum"
	else
		echo "IMGFS $1 MISMATCH $sum want $(arg $1)"
	fi
}
check vda
check vda1
echo "IMGFS ro $(cat /sys/block/vda/ro) size $(cat /sys/block/vda/size) serial $(cat /sys/block/vda/serial 2>/dev/null)"
seek=$(arg seek)
if yes "imgfs guest pattern" | head -c 65536 |
	dd of=/dev/vda1 bs=4096 seek="$seek" conv=fsync 2>/dev/null; then
	sync
	echo 3 >/proc/sys/vm/drop_caches
	echo "IMGFS wrote $(dd if=/dev/vda1 bs=4096 skip="$seek" count=16 2>/dev/null | md5sum | cut -d' ' -f1)"
else
	echo "IMGFS write failed"
fi
echo "IMGFS done"
reboot -f
INIT
chmod +x "$work/init"
(cd "$work" && find . | cpio -o -H newc --quiet) | gzip -1 >"$out.tmp"
mv "$out.tmp" "$out"
