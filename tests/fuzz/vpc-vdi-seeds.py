#!/usr/bin/env python3
"""vpc-vdi-seeds.py KIND TMPDIR OUTDIR: seed images for fuzz-vpc / fuzz-vdi.

KIND vpc: VHDs from qemu-img (fixed; dynamic with force_size on and off,
empty and written with qemu-io, the written one truncated to 64 KiB), and
VHDs built here with 4 KiB blocks (dynamic, and differencing with W2ru,
W2ku and MacX parent locators and half-set sector bitmaps), so that a
seed holds many stored blocks in a few KiB.
KIND vdi: VDIs from qemu-img (dynamic and static, empty and written), and
VDIs built here with 4 KiB blocks (stored, unallocated and discarded
entries, blocks out of order).
Every seed stays under 512 KiB (run.sh's -max_len).
"""
import os
import shutil
import struct
import subprocess
import sys
import uuid


def sh(*args):
    subprocess.run(args, check=True, stdout=subprocess.DEVNULL)


def vhd_checksum(buf, ck):
    b = bytearray(buf)
    b[ck:ck + 4] = b"\0\0\0\0"
    return (~sum(b)) & 0xFFFFFFFF


def vhd_footer(size, disk_type, data_offset, uid):
    f = bytearray(512)
    f[0:8] = b"conectix"
    struct.pack_into(">II", f, 8, 2, 0x00010000)
    struct.pack_into(">Q", f, 16, data_offset)
    f[28:32] = b"qem2"
    struct.pack_into(">I", f, 32, 0x00050003)
    f[36:40] = b"Wi2k"
    struct.pack_into(">QQ", f, 40, size, size)
    struct.pack_into(">HBB", f, 56, 65535, 16, 255)
    struct.pack_into(">I", f, 60, disk_type)
    f[68:84] = uid
    struct.pack_into(">I", f, 64, vhd_checksum(f, 64))
    return bytes(f)


def utf16le(s):
    return s.encode("utf-16-le")


def vhd_build(size, block, stored, disk_type=3, locators=(), bitmap=b"\xff",
              parent_uuid=b"\0" * 16, parent_name=""):
    """stored: {block index: fill byte}."""
    uid = uuid.uuid4().bytes
    nb = (size + block - 1) // block
    bat_off = 1536
    bat_len = (nb * 4 + 511) // 512 * 512
    pos = bat_off + bat_len
    loc_entries = []
    loc_data = b""
    for code, data in locators:
        space = (len(data) + 511) // 512 * 512
        loc_entries.append((code, space, len(data), pos + len(loc_data)))
        loc_data += data + b"\0" * (space - len(data))
    pos += len(loc_data)
    bitmap_bytes = ((block // 512 // 8) + 511) // 512 * 512
    bat = [0xFFFFFFFF] * nb
    blocks = b""
    for i in sorted(stored, reverse=True):  # out of order on purpose
        bat[i] = (pos + len(blocks)) // 512
        bm = (bitmap * bitmap_bytes)[:bitmap_bytes]
        blocks += bm + bytes([stored[i]]) * block
    dyn = bytearray(1024)
    dyn[0:8] = b"cxsparse"
    struct.pack_into(">QQIII", dyn, 8, 0xFFFFFFFFFFFFFFFF, bat_off,
                     0x00010000, nb, block)
    dyn[40:56] = parent_uuid
    name = parent_name.encode("utf-16-be")[:512]
    dyn[64:64 + len(name)] = name
    for i, (code, space, length, off) in enumerate(loc_entries):
        struct.pack_into(">4sIIIQ", dyn, 576 + 24 * i, code, space, length,
                         0, off)
    struct.pack_into(">I", dyn, 36, vhd_checksum(dyn, 36))
    foot = vhd_footer(size, disk_type, 512, uid)
    batb = b"".join(struct.pack(">I", e) for e in bat)
    batb += b"\xff" * (bat_len - len(batb))
    return foot + bytes(dyn) + batb + loc_data + blocks + foot, uid


def vdi_build(size, block, entries, static=False):
    """entries: list of map entries; stored ones get data blocks."""
    h = bytearray(512)
    h[0:40] = b"<<< QEMU VM Virtual Disk Image >>>\n".ljust(40, b"\0")
    nb = len(entries)
    bmap_off = 512
    data_off = (bmap_off + nb * 4 + 511) // 512 * 512
    nstored = sum(1 for e in entries if e < 0xFFFFFFFE)
    struct.pack_into("<IIII", h, 0x40, 0xBEDA107F, 0x00010001, 0x180,
                     2 if static else 1)
    struct.pack_into("<II", h, 0x154, bmap_off, data_off)
    struct.pack_into("<IIII", h, 0x15C, 0, 0, 0, 512)
    struct.pack_into("<QIIII", h, 0x170, size, block, 0, nb, nstored)
    h[0x188:0x198] = uuid.uuid4().bytes
    m = b"".join(struct.pack("<I", e) for e in entries)
    m += b"\0" * (data_off - bmap_off - len(m))
    data = bytearray(nstored * block)
    for i, e in enumerate(entries):
        if e < 0xFFFFFFFE:
            data[e * block:(e + 1) * block] = bytes([0x30 + i % 64]) * block
    return bytes(h) + m + bytes(data)


def write(out, name, data):
    with open(os.path.join(out, name), "wb") as f:
        f.write(data)


def vpc_seeds(tmp, out):
    for sub, force in (("fixed", "off"), ("dynamic", "off"),
                       ("dynamic", "on")):
        img = os.path.join(tmp, "q.vhd")
        size = "256k" if sub == "fixed" else "8M"
        sh("qemu-img", "create", "-q", "-f", "vpc", "-o",
           f"subformat={sub},force_size={force}", img, size)
        shutil.copy(img, os.path.join(out, f"q-{sub}-{force}"))
    img = os.path.join(tmp, "w.vhd")
    sh("qemu-img", "create", "-q", "-f", "vpc", img, "8M")
    sh("qemu-io", "-f", "vpc", "-c", "write -P 0x5a 0 3k", img)
    with open(img, "rb") as f:
        write(out, "q-dynamic-written-cut", f.read(64 << 10))

    data, _ = vhd_build(64 << 10, 4096, {0: 0x11, 3: 0x22, 15: 0x33})
    write(out, "b4k-dynamic", data)
    # fuzz-vpc writes a parent.vhd next to each input, with this UUID.
    parent_uuid = b"\x11" * 16
    locs = [(b"W2ru", utf16le(".\\parent.vhd")),
            (b"W2ku", utf16le("C:\\vms\\parent.vhd")),
            (b"W2ku", utf16le("/var/lib/parent.vhd")),
            (b"MacX", b"file:///var/lib/par%20ent.vhd")]
    data, _ = vhd_build(64 << 10, 4096, {1: 0x44, 3: 0x55}, disk_type=4,
                        locators=locs, bitmap=b"\xaa",
                        parent_uuid=parent_uuid, parent_name="parent.vhd")
    write(out, "b4k-differencing", data)
    data, _ = vhd_build(16 << 10, 512, {0: 1, 5: 2, 31: 3})
    write(out, "b512-dynamic", data)


def vdi_seeds(tmp, out):
    for static in ("off", "on"):
        img = os.path.join(tmp, "q.vdi")
        sh("qemu-img", "create", "-q", "-f", "vdi", "-o", f"static={static}",
           img, "256k")
        with open(img, "rb") as f:  # static: one whole 1 MiB block
            write(out, f"q-static-{static}", f.read(64 << 10))
    img = os.path.join(tmp, "w.vdi")
    sh("qemu-img", "create", "-q", "-f", "vdi", img, "4M")
    sh("qemu-io", "-f", "vdi", "-c", "write -P 0x5a 0 3k", img)
    with open(img, "rb") as f:
        write(out, "q-dynamic-written-cut", f.read(64 << 10))
    U, D = 0xFFFFFFFF, 0xFFFFFFFE
    write(out, "b4k-dynamic", vdi_build(64 << 10, 4096,
                                        [2, U, 0, D, 1] + [U] * 11))
    write(out, "b4k-static", vdi_build(32 << 10, 4096, list(range(8)),
                                       static=True))
    write(out, "b512-odd", vdi_build(4000, 512, [0, U, 1, D, 2, U, 3, 4]))


def main():
    kind, tmp, out = sys.argv[1:4]
    os.makedirs(out, exist_ok=True)
    {"vpc": vpc_seeds, "vdi": vdi_seeds}[kind](tmp, out)


if __name__ == "__main__":
    main()
