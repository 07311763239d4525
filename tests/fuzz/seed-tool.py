#!/usr/bin/env python3
"""seed-tool.py: helpers for make-corpus.sh (the fuzz seed corpus).

  seed-tool.py pack FLAGS IMAGE OUT
      Packs a disk image (made by sfdisk/fdisk) into fuzz-partition's
      input form: flags, size, and one chunk per run of non-zero sectors;
      runs in the second half of the disk are addressed from its end, so
      a mutated disk size keeps a backup GPT at the end.
  seed-tool.py ebr-loop IMAGE
      Points the link of the second EBR of an MBR back at the first, so
      the logical partition chain loops.
  seed-tool.py gpt-set IMAGE SECTOR_BYTES FIELD VALUE
      Sets one field of the primary GPT header (num-entries, entry-size,
      entries-lba, first-lba, last-lba, my-lba, alt-lba, header-size);
      the CRCs are left stale: pack with flags 1 or 3 to have the fuzz
      target recompute them.
  seed-tool.py vhost-user OUTDIR
      Writes fuzz-vhost-user inputs: the message sequence a front end
      such as QEMU sends to bring a vhost-user-blk device up, and a few
      variants of it.
  seed-tool.py write-ops INDIR OUTDIR
      Appends a few op scripts (fuzz-qcow2-write's input tail: 8-byte
      records and a count byte) to every image in INDIR, one seed per
      image and script in OUTDIR.

Python only because meson already needs it; nothing here is run by the
fuzz targets themselves.
"""
import os
import struct
import sys

SECTOR = 512


def pack(flags, image, out):
    data = open(image, 'rb').read()
    size = len(data)
    nb_sectors, extra = divmod(size, SECTOR)
    blob = bytearray(struct.pack('<BIH', flags, nb_sectors, extra))
    total = (size + SECTOR - 1) // SECTOR
    s = 0
    while s < total:
        if not any(data[s * SECTOR:(s + 1) * SECTOR]):
            s += 1
            continue
        e = s
        # A run of non-zero sectors, at most 127 (a u16 length).
        while (e < total and e - s < 127 and
               any(data[e * SECTOR:(e + 1) * SECTOR])):
            e += 1
        chunk = data[s * SECTOR:e * SECTOR]
        if s >= nb_sectors // 2 and s <= nb_sectors:
            where = 0x80000000 | (nb_sectors - s)
        else:
            where = s
        blob += struct.pack('<IH', where, len(chunk)) + chunk
        s = e
    open(out, 'wb').write(blob)


def ebr_loop(image):
    with open(image, 'r+b') as f:
        mbr = f.read(SECTOR)
        ext = None
        for i in range(4):
            ent = mbr[446 + 16 * i:462 + 16 * i]
            if ent[4] in (0x05, 0x0f, 0x85):
                ext = struct.unpack_from('<I', ent, 8)[0]
        if ext is None:
            sys.exit('ebr-loop: no extended partition in ' + image)
        f.seek(ext * SECTOR)
        first = f.read(SECTOR)
        link = struct.unpack_from('<I', first, 462 + 8)[0]
        if link == 0:
            sys.exit('ebr-loop: only one EBR in ' + image)
        # The second EBR's link: relative to the extended partition, so
        # 0 is the first EBR again.
        f.seek((ext + link) * SECTOR + 462)
        f.write(bytes([0, 0, 0, 0, 0x05, 0, 0, 0]) +
                struct.pack('<II', 0, 8))


GPT_FIELDS = {
    'header-size': (12, '<I'), 'my-lba': (24, '<Q'), 'alt-lba': (32, '<Q'),
    'first-lba': (40, '<Q'), 'last-lba': (48, '<Q'),
    'entries-lba': (72, '<Q'), 'num-entries': (80, '<I'),
    'entry-size': (84, '<I'),
}


def gpt_set(image, sector_bytes, field, value):
    off, fmt = GPT_FIELDS[field]
    with open(image, 'r+b') as f:
        f.seek(sector_bytes + off)
        f.write(struct.pack(fmt, value))


# ---------------------------------------------------------------------------
# vhost-user (request codes: QEMU docs/interop/vhost-user.rst)
GET_FEATURES, SET_FEATURES, SET_OWNER, RESET_OWNER, SET_MEM_TABLE = 1, 2, 3, 4, 5
SET_LOG_BASE, SET_LOG_FD = 6, 7
SET_VRING_NUM, SET_VRING_ADDR, SET_VRING_BASE, GET_VRING_BASE = 8, 9, 10, 11
SET_VRING_KICK, SET_VRING_CALL, SET_VRING_ERR = 12, 13, 14
GET_PROTOCOL_FEATURES, SET_PROTOCOL_FEATURES, GET_QUEUE_NUM = 15, 16, 17
SET_VRING_ENABLE, GET_CONFIG, SET_CONFIG = 18, 24, 25

NEED_REPLY = 8
# Descriptor kinds of fuzz-vhost-user.c make_fd (bits 3-7).
MEMFD_64K_FILLED = 4
MEMFD_64K_ZERO = 12
EVENTFD = 16
UVA = 0x7f0000000000
QSIZE = 8
DESC, AVAIL, USED = 0x0, 0x80, 0xc0
HDR, IDBUF, STATUS, DATA = 0x400, 0x500, 0x600, 0x800


def msg(req, payload=b'', flags=0, nb_fds=0, kind=0):
    return struct.pack('<BBBH', req, flags, nb_fds | kind << 3,
                       len(payload)) + payload


def u64(v):
    return struct.pack('<Q', v)


def state(index, num):
    return struct.pack('<II', index, num)


def template():
    """Ring 0 (size 8) at the start of guest memory with a GET_ID and a
    4 KiB read request available."""
    t = bytearray(0x800 + 16)

    def desc(i, addr, length, fl, nxt):
        struct.pack_into('<QIHH', t, DESC + 16 * i, addr, length, fl, nxt)
    desc(0, HDR, 16, 1, 1)
    desc(1, IDBUF, 20, 3, 2)
    desc(2, STATUS, 1, 2, 0)
    desc(3, HDR + 16, 16, 1, 4)
    desc(4, DATA, 16, 3, 5)       # a 16-byte read: short, refused (IOERR)
    desc(5, STATUS + 1, 1, 2, 0)
    struct.pack_into('<HHHH', t, AVAIL, 0, 2, 0, 3)
    struct.pack_into('<IIQ', t, HDR, 8, 0, 0)        # GET_ID
    struct.pack_into('<IIQ', t, HDR + 16, 0, 0, 3)   # IN, sector 3
    return bytes(t)


def mem_table(regions):
    p = struct.pack('<II', len(regions), 0)
    for gpa, size, uva, moff in regions:
        p += struct.pack('<QQQQ', gpa, size, uva, moff)
    return p


def ring_setup(index, base_uva, ack=0):
    addr = struct.pack('<IIQQQQ', index, 0, base_uva + DESC,
                       base_uva + USED, base_uva + AVAIL, 0)
    return (msg(SET_VRING_NUM, state(index, QSIZE), ack) +
            msg(SET_VRING_BASE, state(index, 0), ack) +
            msg(SET_VRING_ADDR, addr, ack) +
            msg(SET_VRING_KICK, u64(index), ack, 1, EVENTFD) +
            msg(SET_VRING_CALL, u64(index), ack, 1, EVENTFD) +
            msg(SET_VRING_ERR, u64(index), ack, 1, EVENTFD))


def session(nb_queues=1, ack=0, regions=None, extra=b''):
    t = template()
    head = struct.pack('<BH', nb_queues - 1, len(t)) + t
    if regions is None:
        regions = [(0, 0x10000, UVA, 0)]
    features = (1 << 32) | (1 << 30) | (1 << 28) | (1 << 29)
    s = (msg(GET_FEATURES) + msg(GET_PROTOCOL_FEATURES) +
         msg(SET_PROTOCOL_FEATURES, u64((1 << 0) | (1 << 3) | (1 << 9))) +
         msg(GET_QUEUE_NUM) + msg(SET_OWNER) +
         msg(GET_CONFIG, struct.pack('<III', 0, 60, 0) + bytes(60)) +
         msg(SET_FEATURES, u64(features), ack) +
         msg(SET_MEM_TABLE, mem_table(regions), ack | NEED_REPLY,
             len(regions), MEMFD_64K_FILLED))
    for q in range(nb_queues):
        s += ring_setup(q, UVA, ack)
    for q in range(nb_queues):
        s += msg(SET_VRING_ENABLE, state(q, 1), ack)
    s += extra
    for q in range(nb_queues):
        s += msg(GET_VRING_BASE, state(q, 0))
    return head + s


def vhost_user(outdir):
    os.makedirs(outdir, exist_ok=True)
    seeds = {
        'vu-boot': session(),
        'vu-boot-ack': session(ack=NEED_REPLY),
        'vu-boot-2q': session(nb_queues=2),
        # Two regions at offsets in their files, the ring in the second.
        'vu-two-regions': session(regions=[(0, 0x8000, UVA - 0x8000, 0x8000),
                                           (0x100000, 0x8000, UVA, 0)]),
        # Memory replaced while the ring runs, then a reset.
        'vu-remap': session(extra=msg(SET_MEM_TABLE,
                                      mem_table([(0, 0x10000, UVA, 0)]),
                                      NEED_REPLY, 1, MEMFD_64K_ZERO) +
                            msg(RESET_OWNER)),
        'vu-config': struct.pack('<BH', 0, 0) +
        msg(GET_CONFIG, struct.pack('<III', 20, 8, 0) + bytes(8)) +
        msg(SET_CONFIG, struct.pack('<III', 32, 1, 0) + b'\1') +
        msg(SET_LOG_BASE, u64(0), 0, 1, EVENTFD),
    }
    for name, blob in seeds.items():
        open(os.path.join(outdir, name), 'wb').write(blob)


# fuzz-qcow2-write op kinds (enum fw_opcode in fuzz-qcow2-write.c).
(W_ODD, W_RUN, W_ZBUF, DISCARD, ZEROES, FLUSH, SNAP_NEW, SNAP_DEL, READ,
 REOPEN) = 0, 2, 3, 4, 5, 6, 7, 8, 9, 10
ALIGNED = 1  # aux bit 0 of DISCARD/ZEROES: whole clusters


def wop(kind, aux=0, len16=0, off32=0):
    """One record; for odd ranges the length is len16 + 1 (aux bits 0-1
    add bits 16-17), for cluster ranges 1 + len16 clusters."""
    return struct.pack('<BBHI', kind, aux, len16, off32)


WRITE_SCRIPTS = {
    'mixed': [
        wop(W_ODD, 0, 4999, 1000), wop(W_RUN, 0, 2, 0),
        wop(READ, 0, 0xffff, 0), wop(FLUSH),
        wop(DISCARD, 0, 2999, 2000), wop(ZEROES, ALIGNED, 1, 65536),
        wop(READ, 0, 0xffff, 60000), wop(REOPEN), wop(SNAP_NEW),
        wop(W_ODD, 0, 6999, 3000), wop(W_RUN, 0, 15, 1 << 20),
        wop(SNAP_DEL, 0, 0, 0), wop(W_ZBUF, 0, 4095, 300000),
        wop(FLUSH), wop(READ, 1, 0xffff, 0),
    ],
    'big': [
        wop(W_RUN, 0, 0xffff, 0), wop(SNAP_NEW),
        wop(W_RUN, 0, 0xffff, 512 << 10), wop(W_ODD, 3, 0xffff, 777),
        wop(ZEROES, 0, 9999, 100000), wop(READ, 3, 0xffff, 0),
        wop(SNAP_NEW), wop(DISCARD, ALIGNED, 3, 0),
        wop(W_RUN, 0x80, 1, 0), wop(FLUSH), wop(SNAP_DEL, 0, 0, 1),
        wop(REOPEN), wop(W_RUN, 0, 0xffff, 3 << 20), wop(READ, 0, 0xfff, 0),
    ],
    'edges': [
        wop(W_ODD, 0, 1, 511), wop(W_ODD, 0, 1, 4095),
        wop(W_ODD, 0, 1, 65535), wop(W_ODD, 0, 0, 0),
        wop(W_ZBUF, 0, 511, 8192), wop(DISCARD, 0, 100, 4000),
        wop(ZEROES, 0, 600, 500), wop(READ, 0, 9000, 0),
        wop(DISCARD, ALIGNED, 0, 65536), wop(ZEROES, ALIGNED, 0, 4096),
        wop(FLUSH), wop(READ, 1, 0xffff, 0),
    ],
}


def write_ops(indir, outdir):
    os.makedirs(outdir, exist_ok=True)
    for name in sorted(os.listdir(indir)):
        image = open(os.path.join(indir, name), 'rb').read()
        for sname, ops in WRITE_SCRIPTS.items():
            blob = image + b''.join(ops) + bytes([len(ops)])
            open(os.path.join(outdir, name + '-' + sname), 'wb').write(blob)


def main():
    cmd = sys.argv[1] if len(sys.argv) > 1 else ''
    if cmd == 'pack' and len(sys.argv) == 5:
        pack(int(sys.argv[2], 0), sys.argv[3], sys.argv[4])
    elif cmd == 'ebr-loop' and len(sys.argv) == 3:
        ebr_loop(sys.argv[2])
    elif cmd == 'gpt-set' and len(sys.argv) == 6:
        gpt_set(sys.argv[2], int(sys.argv[3]), sys.argv[4],
                int(sys.argv[5], 0))
    elif cmd == 'vhost-user' and len(sys.argv) == 3:
        vhost_user(sys.argv[2])
    elif cmd == 'write-ops' and len(sys.argv) == 4:
        write_ops(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)


if __name__ == '__main__':
    main()
