#!/usr/bin/env python3
"""vhdx-seeds.py KIND IN OUT: turns a qemu-img VHDX (1 MiB blocks, blocks 0
and 1 written) into a seed qemu-img cannot make, for fuzz-vhdx
(make-corpus.sh packs OUT afterwards):

  log   a log sequence of two entries (sequence numbers 5 and 6) the
        reader must replay: entry 5 swaps the BAT entries of blocks 0 and
        1 and zeroes 8 KiB of data, entry 6 rewrites one data sector; both
        headers name the log GUID (CRCs recomputed)
  diff  a differencing image: has_parent set, a parent locator item
        (parent_linkage, relative_path), block 1 PARTIALLY_PRESENT with a
        sector bitmap block appended at the end of the file

The layouts follow MS-VHDX; CRC-32C is computed here bit by bit.
"""
import struct
import sys

KIB, MIB = 1024, 1024 * 1024


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def set_crc(buf, off, length):
    buf[off + 4:off + 8] = b'\0' * 4
    buf[off + 4:off + 8] = struct.pack('<I', crc32c(buf[off:off + length]))


def layout(b):
    rt = 192 * KIB
    bat = meta = None
    for i in range(struct.unpack_from('<I', b, rt + 8)[0]):
        e = rt + 16 + 32 * i
        g = struct.unpack_from('<I', b, e)[0]
        if g == 0x2DC27766:
            bat = struct.unpack_from('<Q', b, e + 16)[0]
        elif g == 0x8B7CA206:
            meta = struct.unpack_from('<Q', b, e + 16)[0]
    items = {}
    for i in range(struct.unpack_from('<H', b, meta + 10)[0]):
        e = meta + 32 + 32 * i
        items[struct.unpack_from('<I', b, e)[0]] = (
            meta + struct.unpack_from('<I', b, e + 16)[0])
    s1 = struct.unpack_from('<Q', b, 64 * KIB + 8)[0]
    s2 = struct.unpack_from('<Q', b, 128 * KIB + 8)[0]
    active = 128 * KIB if s2 > s1 else 64 * KIB
    return bat, meta, items, active


def entry(seq, guid, descs, file_len):
    """descs: ('zero', off, len) or ('data', off, 4096 bytes)."""
    data = [d for d in descs if d[0] == 'data']
    sectors = 1 + len(data)
    e = bytearray(4096 * sectors)
    struct.pack_into('<4sIIIQII16sQQ', e, 0, b'loge', 0, 4096 * sectors, 0,
                     seq, len(descs), 0, guid, file_len, file_len)
    k = 0
    for i, d in enumerate(descs):
        o = 64 + 32 * i
        if d[0] == 'zero':
            struct.pack_into('<4sIQQQ', e, o, b'zero', 0, d[2], d[1], seq)
        else:
            sec = d[2]
            e[o:o + 4] = b'desc'
            e[o + 4:o + 8] = sec[4092:4096]
            e[o + 8:o + 16] = sec[0:8]
            struct.pack_into('<QQ', e, o + 16, d[1], seq)
            k += 1
            ds = 4096 * k
            struct.pack_into('<4sI', e, ds, b'data', seq >> 32)
            e[ds + 8:ds + 4092] = sec[8:4092]
            struct.pack_into('<I', e, ds + 4092, seq & 0xFFFFFFFF)
    set_crc(e, 0, len(e))
    return e


def make_log(b):
    bat, _, _, active = layout(b)
    log_off = struct.unpack_from('<Q', b, active + 72)[0]
    guid = bytes(range(0x40, 0x50))
    e0, e1 = struct.unpack_from('<QQ', b, bat)
    sec = bytearray(b[bat:bat + 4096])
    struct.pack_into('<QQ', sec, 0, e1, e0)
    h0 = e0 & ~0xFFFFF
    h1 = e1 & ~0xFFFFF
    ent5 = entry(5, guid, [('data', bat, sec), ('zero', h0 + 64 * KIB, 8 * KIB)],
                 len(b))
    ent6 = entry(6, guid, [('data', h1, b'\x77' * 4096)], len(b))
    b[log_off:log_off + len(ent5)] = ent5
    b[log_off + len(ent5):log_off + len(ent5) + len(ent6)] = ent6
    for h in (64 * KIB, 128 * KIB):
        b[h + 48:h + 64] = guid
        set_crc(b, h, 4 * KIB)


def utf16(s):
    return s.encode('utf-16-le')


def make_diff(b):
    bat, meta, items, _ = layout(b)
    b[items[0xCAA16737] + 4] |= 2  # has_parent
    sb_off = (len(b) + MIB - 1) // MIB * MIB
    b.extend(bytes(sb_off + MIB - len(b)))
    e1 = struct.unpack_from('<Q', b, bat + 8)[0]
    struct.pack_into('<Q', b, bat + 8, (e1 & ~7) | 7)
    struct.pack_into('<Q', b, bat, 0)
    struct.pack_into('<Q', b, bat + 4096 * 8, sb_off | 6)
    for sec in range(2048, 2048 + 64):  # block 1's first 32 KiB
        b[sb_off + sec // 8] |= 1 << (sec % 8)
    n = struct.unpack_from('<H', b, meta + 10)[0]
    e = meta + 32 + 32 * n
    b[e:e + 16] = bytes.fromhex('2d5fd3a80bb34d45abf7d3d84834ab0c')
    struct.pack_into('<III', b, e + 16, 128 * KIB, 4096, 6)
    struct.pack_into('<H', b, meta + 10, n + 1)
    item = meta + 128 * KIB
    b[item:item + 16] = bytes.fromhex('b7ef4ab09ed1814ab78925b8e9445913')
    pairs = [('parent_linkage', '{00000000-0000-0000-0000-000000000000}'),
             ('relative_path', '.\\parent.vhdx')]
    struct.pack_into('<H', b, item + 18, len(pairs))
    end = 20 + 12 * len(pairs)
    for i, (k, v) in enumerate(pairs):
        kb, vb = utf16(k), utf16(v)
        struct.pack_into('<IIHH', b, item + 20 + 12 * i, end, end + len(kb),
                         len(kb), len(vb))
        b[item + end:item + end + len(kb) + len(vb)] = kb + vb
        end += len(kb) + len(vb)


def main():
    kind, src, dst = sys.argv[1:4]
    b = bytearray(open(src, 'rb').read())
    {'log': make_log, 'diff': make_diff}[kind](b)
    open(dst, 'wb').write(b)


if __name__ == '__main__':
    main()
