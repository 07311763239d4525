/* gpt-guard.c: refuse GPT headers whose entry array libfdisk or libblkid
 * would allocate or index without bound.
 *
 * Both libraries believe a GPT header once its CRC matches, and a CRC is
 * no protection against a hostile image: anyone can compute it. Then
 * libfdisk (2.38, gpt_read_entries) callocs NumberOfPartitionEntries *
 * SizeOfPartitionEntry bytes, up to 2^64, before it checks anything else
 * (fuzz-partition found a 512 GiB request), and walks the array in steps
 * of its own 128-byte struct whatever the header's entry size says, so a
 * smaller entry size makes it read past the array; libblkid's GPT prober
 * (run by the whole-disk probe) allocates up to 4 GiB of entries.
 *
 * libblkid runs that prober not only when asked for partition tables:
 * some filesystem probers look for a table covering their superblock,
 * so any probe of a byte range may read a GPT at that range's LBA 1.
 *
 * So before either library sees a disk, or libblkid a partition of it,
 * part_gpt_guard reads every header they would read there (LBA 1; the
 * AlternateLBA that a valid primary names; the last LBA) and reports one
 * with a valid CRC whose entry size is not 128 * 2^n (UEFI 2.x 5.3.2
 * requires that) or whose array exceeds PART_GPT_MAX_ARRAY_BYTES. The
 * caller then keeps both libraries away from those bytes. A header with
 * a bad CRC is left alone: the libraries skip it themselves (and use the
 * other copy).
 *
 * Not checked: anything the libraries bound on their own (LBA ranges,
 * entry CRCs, the EBR chain).
 */
#include "partition-int.h"

#include "checked.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

/* 32768 entries of 128 bytes: 256 times the usual table, and far more
 * than the 256 partitions we show. */
#define PART_GPT_MAX_ARRAY_BYTES (4u << 20)
#define GPT_HEADER_MIN_BYTES 92

static uint32_t le32_at(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t le64_at(const uint8_t *p)
{
	return le32_at(p) | (uint64_t)le32_at(p + 4) << 32;
}

/* Reads the header at lba. 1 when it is a GPT header with a valid CRC
 * (the only kind the libraries use), else 0. */
static int read_valid_header(int fd, uint64_t base, uint64_t size,
			     unsigned sector_bytes, uint64_t lba, uint8_t *h)
{
	uint64_t off;
	uint32_t hsz, crc;

	if (MUL_OVERFLOW(lba, sector_bytes, &off) ||
	    !range_within(off, sector_bytes, size) ||
	    ADD_OVERFLOW(off, base, &off) || off > INT64_MAX ||
	    pread(fd, h, sector_bytes, (off_t)off) != (ssize_t)sector_bytes ||
	    memcmp(h, "EFI PART", 8) != 0)
		return 0;
	hsz = le32_at(h + 12);
	if (hsz < GPT_HEADER_MIN_BYTES || hsz > sector_bytes)
		return 0;
	crc = le32_at(h + 16);
	memset(h + 16, 0, 4);
	return crc32(0, h, hsz) == crc;
}

int part_gpt_guard(int fd, uint64_t base, uint64_t size,
		   unsigned sector_bytes, char *why, size_t why_len)
{
	uint8_t h[4096];
	uint64_t lbas[3], nb_lbas = 0;

	if (sector_bytes > sizeof(h) || size / sector_bytes < 2)
		return 0;
	lbas[nb_lbas++] = 1;
	if (read_valid_header(fd, base, size, sector_bytes, 1, h))
		lbas[nb_lbas++] = le64_at(h + 32); /* AlternateLBA */
	lbas[nb_lbas++] = size / sector_bytes - 1;

	for (unsigned i = 0; i < nb_lbas; i++) {
		uint32_t nb, esz;

		if (!read_valid_header(fd, base, size, sector_bytes, lbas[i],
				       h))
			continue;
		nb = le32_at(h + 80);
		esz = le32_at(h + 84);
		/* 128 * 2^n: a power of two of at least 128. */
		if (esz >= 128 && !(esz & (esz - 1)) &&
		    (uint64_t)nb * esz <= PART_GPT_MAX_ARRAY_BYTES)
			continue;
		snprintf(why, why_len,
			 "GPT header at LBA %" PRIu64 " (%u-byte sectors) "
			 "claims %" PRIu32 " entries of %" PRIu32 " bytes; "
			 "refused (entries are 128 * 2^n bytes, at most %u "
			 "KiB in all)",
			 lbas[i], sector_bytes, nb, esz,
			 PART_GPT_MAX_ARRAY_BYTES >> 10);
		return 1;
	}
	return 0;
}
