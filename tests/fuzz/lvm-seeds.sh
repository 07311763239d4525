#!/bin/sh
# lvm-seeds.sh OUTDIR: seeds for fuzz-lvm (see the top of fuzz-lvm.c),
# called by make-corpus.sh (kind lvm).
#
# PVs made by the real lvm2 tools on loop devices, never activated (no
# device-mapper needed: lvcreate --driverloaded n -an -Zn), with a private
# LVM_SYSTEM_DIR whose filter accepts only these loop devices: a VG on one
# PV with hyphenated names and a volume in two segments; a VG over two PVs
# with a striped volume; a PV with a second metadata area at its end; a
# VG whose metadata was rewritten until its circular buffer wrapped. The
# metadata areas are kept small (40 KiB) so each disk packs into a few
# KiB: its first bytes up to the last non-zero one before the first
# extent, and its last bytes from the first non-zero one in the last
# 128 KiB. Each seed is written with the checksum-fixing flag and without.
# Exits 77 without root, losetup or lvm2.
set -eu
PATH=$PATH:/sbin:/usr/sbin
out=${1:?usage: lvm-seeds.sh OUTDIR}
[ "$(id -u)" = 0 ] || { echo "lvm-seeds.sh: needs root" >&2; exit 77; }
for t in losetup pvcreate vgcreate lvcreate python3; do
	command -v $t >/dev/null || { echo "lvm-seeds.sh: $t missing" >&2; exit 77; }
done
mkdir -p "$out"
tmp=$(mktemp -d)
cleanup() {
	for f in "$tmp"/*.raw; do
		[ -e "$f" ] || continue
		for d in $(losetup -j "$f" -O NAME -n); do losetup -d "$d"; done
	done
	rm -rf "$tmp"
}
trap cleanup EXIT
mkdir "$tmp/etc"
export LVM_SYSTEM_DIR="$tmp/etc" LVM_SUPPRESS_FD_WARNINGS=1
noact="--driverloaded n -an -Zn -y -q"

for n in one a b two wrap; do truncate -s 8M "$tmp/$n.raw"; done
filter=
for n in one a b two wrap; do
	d=$(losetup -f --show "$tmp/$n.raw")
	eval "dev_$n=$d"
	filter="$filter \"a|^$d\$|\","
done
cat >"$tmp/etc/lvm.conf" <<CONF
devices { obtain_device_list_from_udev = 0 scan_lvs = 0 use_devicesfile = 0 global_filter = [ $filter "r|.*|" ] }
activation { udev_sync = 0 udev_rules = 0 monitoring = 0 }
global { use_lvmlockd = 0 }
backup { backup = 0 archive = 0 }
CONF
small="--metadatasize 40k --dataalignment 64k"
{
	pvcreate -q -y $small "$dev_one" "$dev_a" "$dev_b" "$dev_wrap"
	pvcreate -q -y $small --pvmetadatacopies 2 "$dev_two"
	vgcreate -q -s 1m vg-data "$dev_one"
	lvcreate $noact -n lv-1 -L 2m vg-data
	lvcreate $noact -n lv-2 -L 1m vg-data
	lvextend --driverloaded n -q -L +2m vg-data/lv-1
	vgcreate -q -s 1m vg0 "$dev_a" "$dev_b"
	lvcreate $noact -n root -L 2m vg0 "$dev_a"
	lvcreate $noact -n data --type striped -i2 -I64k -L 4m vg0
	vgcreate -q -s 512k vgtwo "$dev_two"
	lvcreate $noact -n lv -L 3m vgtwo
	vgcreate -q -s 1m vgw "$dev_wrap"
	lvcreate $noact -n keep -L 1m vgw
	i=0
	while [ $i -lt 90 ]; do
		lvcreate $noact -n t$i -L 1m vgw
		lvremove --driverloaded n -q -y vgw/t$i
		i=$((i + 1))
	done
} >/dev/null 2>&1

# pack OUT DISK...: the target's form, flags 0 (OUT) and 1 (OUT-fixcrc).
# With LVS=FILE, the text's logical_volumes section is replaced by FILE's
# (the text size in the area header follows; the target's flag 1 fixes
# the checksums, so only OUT-fixcrc is written).
pack() {
	python3 - "$@" <<'PY'
import os, struct, sys
out, disks = sys.argv[1], sys.argv[2:]
lvs = os.environ.get('LVS')
body = b''
for path in disks:
    data = bytearray(open(path, 'rb').read())
    if lvs:
        mda = 4096
        roff, rsize = struct.unpack_from('<QQ', data, mda + 40)
        text = bytes(data[mda + roff:mda + roff + rsize])
        cut = text.index(b'logical_volumes {')
        text = text[:cut] + open(lvs, 'rb').read() + b'\0'
        data[mda + roff:mda + roff + len(text)] = text
        struct.pack_into('<Q', data, mda + 48, len(text))
    data = bytes(data)
    label = next(data[s*512:s*512+512] for s in range(4)
                 if data[s*512:s*512+8] == b'LABELONE')
    hoff = struct.unpack_from('<I', label, 20)[0]
    data_off = struct.unpack_from('<Q', label, hoff + 40)[0]
    head = data[:data_off].rstrip(b'\0')
    last = data[-128 * 1024:]
    tail = last[len(last) - len(last.lstrip(b'\0')):]
    body += struct.pack('<II', len(data) // 1024, len(head)) + head
    body += struct.pack('<I', len(tail)) + tail
for flags, name in ((0, out), (1, out + '-fixcrc'))[1 if lvs else 0:]:
    open(name, 'wb').write(bytes([flags]) + body)
PY
}
sync
pack "$out/vg-data" "$dev_one"
pack "$out/vg0-striped" "$dev_a" "$dev_b"
pack "$out/vg0-missing-pv" "$dev_a"
pack "$out/two-mdas" "$dev_two"
pack "$out/wrapped" "$dev_wrap"
pack "$out/all" "$dev_one" "$dev_a" "$dev_b" "$dev_two"
# Types lvm2 cannot create without device-mapper: mirror and raid1 legs
# (one on an unknown PV), thin, a snapshot and its store.
cat >"$tmp/lvs" <<'LVS'
logical_volumes {
m { id = "m" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1
 segment1 { start_extent = 0 extent_count = 1 type = "mirror" mirror_count = 2
  mirrors = [ "m_mimage_0", 0, "m_mimage_1", 0 ] } }
m_mimage_0 { id = "a" status = ["READ"] segment_count = 1
 segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1
  stripes = [ "pv9", 0 ] } }
m_mimage_1 { id = "b" status = ["READ"] segment_count = 1
 segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1
  stripes = [ "pv0", 1 ] } }
r { id = "r" status = ["READ", "WRITE", "VISIBLE"] segment_count = 1
 segment1 { start_extent = 0 extent_count = 1 type = "raid1" device_count = 2
  raids = [ "r_rmeta_0", "r_rimage_0", "r_rmeta_1", "r_rimage_1" ] } }
r_rimage_0 { id = "c" status = ["READ"] segment_count = 1
 segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1
  stripes = [ "pv0", 0 ] } }
r_rimage_1 { id = "d" status = ["READ"] segment_count = 1
 segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1
  stripes = [ "pv0", 2 ] } }
t { id = "t" status = ["READ", "VISIBLE"] segment_count = 1
 segment1 { start_extent = 0 extent_count = 1 type = "thin" thin_pool = "pool" device_id = 1 } }
s { id = "s" status = ["READ", "VISIBLE"] segment_count = 1
 segment1 { start_extent = 0 extent_count = 1 type = "striped" stripe_count = 1
  stripes = [ "pv0", 3 ] } }
snapshot0 { id = "z" status = ["READ"] segment_count = 1
 segment1 { start_extent = 0 extent_count = 1 type = "snapshot" chunk_size = 8
  origin = "m" cow_store = "s" } }
}
}
LVS
LVS=$tmp/lvs pack "$out/legs" "$dev_one"
echo "lvm-seeds.sh: $(ls "$out" | wc -l) seeds in $out"
