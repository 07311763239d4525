/* fuzz-partition.c: libFuzzer target for part_scan (partition/), which
 * hands arbitrary disk bytes to libfdisk and libblkid.
 *
 * The input describes a sparse disk, so that a 2 TiB disk with a GPT at
 * both ends fits in a few hundred bytes and mutations land on table bytes
 * rather than on zeroes:
 *
 *   u8  flags: bit 0 recomputes the header CRC of every GPT header found
 *       (LBA 1 and the last LBA, for 512- and 4096-byte sectors) after the
 *       chunks are written, bit 1 the entry-array CRC first, so mutated
 *       header fields (entry count and size, LBAs) get past libfdisk's
 *       checksum test; without them the CRCs stay as the input has them
 *   u32 disk size in 512-byte units (LE), u16 extra bytes (LE, mod 512):
 *       tiny disks, odd sizes and 4Kn-sized ones alike
 *   chunks to the end of the input, each: u32 sector (LE; with bit 31 set
 *   counted back from the end of the disk, where backup GPTs live), u16
 *   length (LE), then that many bytes (fewer at the end of the input),
 *   clipped to the disk
 *
 * make-corpus.sh packs disks made by sfdisk into this form (seed-tool.py
 * pack). The disk is a memfd, so holes cost nothing. Checked after each
 * scan: the table is well-formed (numbers 1-256 in increasing order,
 * ranges clipped to the disk unless flagged past_end, containers only on
 * "dos"), and part_table_dup copies it. Memory and time are bounded by
 * libFuzzer's limits (run.sh: 512 MiB RSS, 10 s per input); the point is
 * that no disk makes the scan exceed them.
 *
 * FUZZ_NO_MAIN_ENTRY lets a unit test include this file and call
 * fuzz_partition_one() itself (tests/unit/test-partition.c replays
 * tests/fuzz/regress/fuzz-partition through it).
 */
#include "partition.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Entry arrays larger than this are not checksummed by the harness
 * (libfdisk will read them, or refuse, on its own). */
#define FUZZ_CRC_MAX_BYTES (8u << 20)

static int fuzz_fd = -1;

static uint32_t fuzz_crc32(const uint8_t *p, size_t len)
{
	uint32_t c = 0xffffffffu;

	while (len--) {
		c ^= *p++;
		for (int k = 0; k < 8; k++)
			c = (c >> 1) ^ (0xedb88320u & (0u - (c & 1)));
	}
	return ~c;
}

static uint32_t rd32(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t rd64(const uint8_t *p)
{
	return rd32(p) | (uint64_t)rd32(p + 4) << 32;
}

static void wr32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

/* Recomputes the CRCs of the GPT header at byte hoff (sector size ss),
 * if there is one (UEFI 2.x 5.3.2: header CRC over HeaderSize bytes
 * with the field zeroed; entry CRC over NumberOfPartitionEntries *
 * SizeOfPartitionEntry bytes at PartitionEntryLBA). */
static void fix_gpt(int fd, uint64_t disk, uint64_t hoff, unsigned ss,
		    bool entries)
{
	uint8_t h[4096];
	uint32_t hsz;

	if (hoff > disk || disk - hoff < ss ||
	    pread(fd, h, ss, (off_t)hoff) != (ssize_t)ss ||
	    memcmp(h, "EFI PART", 8) != 0)
		return;
	if (entries) {
		uint64_t n = (uint64_t)rd32(h + 80) * rd32(h + 84);
		uint64_t at = rd64(h + 72);

		if (n && n <= FUZZ_CRC_MAX_BYTES && at < disk / ss &&
		    n <= disk - at * ss) {
			uint8_t *buf = malloc(n);

			if (!buf)
				abort();
			if (pread(fd, buf, n, (off_t)(at * ss)) == (ssize_t)n)
				wr32(h + 88, fuzz_crc32(buf, n));
			free(buf);
		}
	}
	hsz = rd32(h + 12);
	if (hsz < 92 || hsz > ss)
		hsz = 92;
	wr32(h + 16, 0);
	wr32(h + 16, fuzz_crc32(h, hsz));
	if (pwrite(fd, h, ss, (off_t)hoff) != (ssize_t)ss)
		abort();
}

static bool opt_eq(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* Aborts unless t keeps partition.h's promises for a disk of size. */
static void check_table(const struct part_table *t, uint64_t size)
{
	struct part_table *c = part_table_dup(t);

	if (!c)
		abort();
	if (!t->label && t->nb_parts)
		abort();
	for (size_t i = 0; i < t->nb_parts; i++) {
		const struct part_entry *e = &t->parts[i];

		if (e->number < 1 || e->number > 256 ||
		    (i && e->number <= t->parts[i - 1].number))
			abort();
		if (e->start_bytes < size &&
		    e->size_bytes > size - e->start_bytes)
			abort();
		if (e->start_bytes >= size && e->size_bytes)
			abort();
		if (e->container && strcmp(t->label, "dos") != 0)
			abort();
		if (c->parts[i].number != e->number ||
		    !opt_eq(c->parts[i].type, e->type) ||
		    !opt_eq(c->parts[i].fs_type, e->fs_type))
			abort();
	}
	if (c->nb_parts != t->nb_parts || !opt_eq(c->label, t->label) ||
	    !opt_eq(c->error, t->error) || !opt_eq(c->warning, t->warning))
		abort();
	part_table_free(c);
}

int fuzz_partition_one(const uint8_t *data, size_t size);
int fuzz_partition_one(const uint8_t *data, size_t size)
{
	struct part_table *t = NULL;
	uint64_t disk, nb_sectors;
	unsigned flags;
	size_t off;
	int ret;

	if (fuzz_fd < 0) {
		fuzz_fd = memfd_create("fuzz-partition", MFD_CLOEXEC);
		if (fuzz_fd < 0)
			abort();
	}
	if (size < 7)
		return 0;
	flags = data[0];
	nb_sectors = rd32(data + 1);
	disk = nb_sectors * 512 + (data[5] | (unsigned)data[6] << 8) % 512;
	/* Drop the last input's bytes: truncating to 0 frees its pages. */
	if (ftruncate(fuzz_fd, 0) < 0 || ftruncate(fuzz_fd, (off_t)disk) < 0)
		abort();
	for (off = 7; size - off >= 6;) {
		uint32_t at = rd32(data + off);
		size_t len = data[off + 4] | (size_t)data[off + 5] << 8;
		uint64_t sector = at & 0x7fffffffu, byte;

		off += 6;
		if (len > size - off)
			len = size - off;
		if (at & 0x80000000u)
			sector = sector <= nb_sectors ? nb_sectors - sector :
							disk; /* nowhere */
		byte = sector * 512;
		if (byte < disk) {
			size_t n = len < disk - byte ? len : disk - byte;

			if (pwrite(fuzz_fd, data + off, n, (off_t)byte) !=
			    (ssize_t)n)
				abort();
		}
		off += len;
	}
	if (flags & 1) {
		for (unsigned ss = 512; ss <= 4096; ss *= 8) {
			fix_gpt(fuzz_fd, disk, ss, ss, flags & 2);
			if (disk / ss >= 2)
				fix_gpt(fuzz_fd, disk, (disk / ss - 1) * ss,
					ss, flags & 2);
		}
	}

	ret = part_scan(fuzz_fd, disk, &t);
	/* A memfd always reads: the scan may only run out of memory. */
	if (ret < 0 && (t || ret != -ENOMEM))
		abort();
	if (ret < 0)
		return 0;
	check_table(t, disk);
	part_table_free(t);
	return 0;
}

#ifndef FUZZ_NO_MAIN_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_partition_one(data, size);
}
#endif
