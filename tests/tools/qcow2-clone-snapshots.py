#!/usr/bin/env python3
"""qcow2-clone-snapshots.py: gives a qcow2 image thousands of internal
snapshots in seconds, for the scale benchmarks.

    qcow2-clone-snapshots.py IMAGE COUNT

IMAGE must hold exactly one internal snapshot, made by qemu-img (so its
L1 copy, refcounts and COPIED flags are QEMU's own). The tool rewrites the
snapshot table with COUNT entries that are copies of that one (IDs 1..COUNT,
names s1..sCOUNT; the first keeps its name), all sharing its L1 table copy,
and adds COUNT - 1 to the refcount of every cluster that snapshot references
(the L1 copy, its L2 tables, their data clusters), so `qemu-img check` finds
a consistent image. `qemu-img snapshot -c` takes a flush and a rewrite of
the whole table per snapshot: minutes for 20,000; this takes seconds.

Limits, checked (the tool stops with one line on stderr, image unchanged):
  - every cluster touched lies under the first refcount block (an image
    file of at most 2 GiB with 64 KiB clusters and 16-bit refcounts);
  - refcounts must stay below 2^refcount_bits;
  - the new table is appended at the end of the file; the old table's
    clusters are freed (refcount 0), as QEMU does when it rewrites it.
It does not handle external data files, extended L2 or images with a
backing-file chain of snapshots: the benchmarks need none of these.
"""
import os
import struct
import sys

SNAP_FIXED = struct.Struct('>QIHHIIQII')  # 40 bytes


def die(msg):
    sys.stderr.write('qcow2-clone-snapshots: %s\n' % msg)
    sys.exit(1)


def main():
    if len(sys.argv) != 3:
        die('usage: qcow2-clone-snapshots.py IMAGE COUNT')
    path, count = sys.argv[1], int(sys.argv[2])
    if not 1 <= count <= 65536:
        die('COUNT must be 1..65536 (QEMU\'s limit)')
    fd = os.open(path, os.O_RDWR)
    hdr = os.pread(fd, 112, 0)
    (magic, version, _bo, _bs, cluster_bits, _size, crypt, l1_size, l1_off,
     rt_off, rt_clusters, nb_snap, snap_off) = struct.unpack('>IIQIIQIIQQIIQ', hdr[:72])
    if magic != 0x514649fb or version != 3:
        die('%s: not a qcow2 v3 image' % path)
    incompat, = struct.unpack('>Q', hdr[72:80])
    refcount_order, = struct.unpack('>I', hdr[96:100])
    if incompat & 1:
        die('%s: dirty bit set; run qemu-img check -r all first' % path)
    if incompat or crypt:
        die('%s: incompatible features 0x%x are not handled' % (path, incompat))
    if nb_snap != 1:
        die('%s: needs exactly one snapshot, has %d' % (path, nb_snap))
    cb = 1 << cluster_bits
    rbits = 1 << refcount_order
    if rbits != 16:
        die('%s: only 16-bit refcounts are handled, not %d' % (path, rbits))

    # The one snapshot entry, whole.
    raw = os.pread(fd, 4096, snap_off)
    (s_l1_off, s_l1_size, id_len, name_len, dsec, dnsec, vmclk, vmst,
     extra_len) = SNAP_FIXED.unpack(raw[:40])
    extra = raw[40:40 + extra_len]
    old_table_bytes = (40 + extra_len + id_len + name_len + 7) & ~7

    # Every cluster the snapshot references, with multiplicity.
    refs = {}

    def ref(host):
        c = host >> cluster_bits
        refs[c] = refs.get(c, 0) + 1

    l1 = struct.unpack('>%dQ' % s_l1_size, os.pread(fd, 8 * s_l1_size, s_l1_off))
    for i in range(0, (8 * s_l1_size + cb - 1) // cb or 1):
        ref(s_l1_off + i * cb)
    l2_entries = cb // 8
    x = 62 - (cluster_bits - 8)
    for e in l1:
        l2_off = e & 0x00fffffffffffe00
        if not l2_off:
            continue
        ref(l2_off)
        l2 = struct.unpack('>%dQ' % l2_entries, os.pread(fd, cb, l2_off))
        for ent in l2:
            if ent & (1 << 62):  # compressed: every cluster its span touches
                host = ent & ((1 << x) - 1)
                sectors = ((ent >> x) & ((1 << (cluster_bits - 8)) - 1)) + 1
                end = (host & ~511) + sectors * 512
                for c in range(host >> cluster_bits, (end - 1 >> cluster_bits) + 1):
                    refs[c] = refs.get(c, 0) + 1
            elif ent & 0x00fffffffffffe00:
                ref(ent & 0x00fffffffffffe00)

    # The new table, appended cluster-aligned at the end of the file.
    entries = []
    for i in range(1, count + 1):
        ident = str(i).encode()
        name = raw[40 + extra_len + id_len:40 + extra_len + id_len + name_len] \
            if i == 1 else ('s%d' % i).encode()
        e = SNAP_FIXED.pack(s_l1_off, s_l1_size, len(ident), len(name), dsec,
                            dnsec, vmclk, vmst, extra_len) + extra + ident + name
        entries.append(e + b'\0' * (-len(e) % 8))
    table = b''.join(entries)
    file_end = os.fstat(fd).st_size
    new_off = (file_end + cb - 1) & ~(cb - 1)
    new_clusters = (len(table) + cb - 1) // cb
    old_first = snap_off >> cluster_bits
    old_last = (snap_off + old_table_bytes - 1) >> cluster_bits

    # Refcount changes, all inside the first refcount block.
    rb_entries = cb * 8 // rbits
    rt0, = struct.unpack('>Q', os.pread(fd, 8, rt_off))
    rb_off = rt0 & ~(cb - 1)
    if not rb_off:
        die('%s: no first refcount block' % path)
    if new_off // cb + new_clusters > rb_entries:
        die('%s: file too large (%d bytes) for one refcount block' % (path, file_end))
    rb = bytearray(os.pread(fd, cb, rb_off))

    def add(c, delta):
        if c >= rb_entries:
            die('%s: cluster %d lies beyond the first refcount block' % (path, c))
        v = struct.unpack_from('>H', rb, 2 * c)[0] + delta
        if not 0 <= v < 1 << rbits:
            die('%s: refcount of cluster %d would be %d' % (path, c, v))
        struct.pack_into('>H', rb, 2 * c, v)

    for c, n in refs.items():
        add(c, n * (count - 1))
    for c in range(old_first, old_last + 1):
        add(c, -1)
    for c in range(new_off // cb, new_off // cb + new_clusters):
        add(c, 1)

    # Table first, then refcounts, then the header points at it.
    os.pwrite(fd, table + b'\0' * (new_clusters * cb - len(table)), new_off)
    os.pwrite(fd, bytes(rb), rb_off)
    os.pwrite(fd, struct.pack('>IQ', count, new_off), 60)
    os.fsync(fd)
    os.close(fd)


if __name__ == '__main__':
    main()
