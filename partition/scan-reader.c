/* scan-reader.c: part_scan without a descriptor whose bytes are the disk.
 *
 * libfdisk and libblkid read from a file descriptor; an image that is not
 * raw (qcow2, ...) has none outside the mount. part_scan_reader builds
 * one: a sparse memory file (memfd, else an O_TMPFILE in /tmp) as large
 * as the disk, into which it copies only the regions a scan reads, and
 * runs the ordinary part_scan on it. partition/ stays ignorant of image
 * formats: the caller hands a read callback (and, optionally, one that
 * says where the disk is a hole or reads as zeroes, so those regions are
 * never written and the file stays sparse).
 *
 * Which regions: a fixpoint. Start with the first and the last 2 MiB of
 * the disk (MBR, GPT headers at LBA 1 for 512 and 4096-byte sectors and
 * at the last LBA with the usual entry arrays, BSD/SGI/Sun labels,
 * superblocks of a filesystem on the whole disk, RAID/ZFS labels at the
 * end). Before each scan, follow what the on-disk headers say must be
 * read next (picking what to copy, not parsing a table): the entry array
 * and AlternateLBA of every valid-looking GPT header (both sector sizes),
 * and the chain of EBRs behind each extended partition of the MBR. After
 * each scan, add for every partition found its first 2 MiB and last
 * 1 MiB (libblkid's superblock probes; md and ZFS labels at the end), and
 * for logical partitions the 2 MiB before their start (their EBR). Scan
 * again until no new region is added: then the last scan saw the same
 * bytes as a scan of the whole disk would have (docs/DESIGN.md,
 * "Scanning without a descriptor", argues it for each label type). The loop is bounded (SCAN_MAX_ROUNDS);
 * a disk that keeps asking for more gets the last table.
 *
 * A region that cannot be read (the callback fails) is left as zeroes:
 * the scan then sees no label or filesystem there, as part_scan sees none
 * where libblkid's read fails.
 *
 * Memory: the memory file holds at most the regions copied; each
 * partition adds 3 MiB, and the partition layer shows at most 256 of
 * them.
 */
#include "partition.h"

#include "checked.h"
#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define MiB (UINT64_C(1) << 20)
#define SCAN_HEAD_BYTES (2 * MiB)
#define SCAN_TAIL_BYTES (2 * MiB)
#define SCAN_PART_HEAD_BYTES (2 * MiB)
#define SCAN_PART_TAIL_BYTES (1 * MiB)
#define SCAN_EBR_LEAD_BYTES (2 * MiB)
#define SCAN_MAX_ROUNDS 64
#define SCAN_ALIGN (64 * 1024)
#define SCAN_COPY_CHUNK (1 * MiB)
/* gpt-guard.c refuses larger arrays before libfdisk reads them. */
#define SCAN_GPT_MAX_ARRAY (4 * MiB)
/* libfdisk stops the EBR chain after about 60 links; the kernel at 256. */
#define SCAN_MAX_EBRS 256

struct range {
	uint64_t start, end;
};

/* The regions copied so far, sorted and merged. */
struct range_set {
	struct range *r;
	size_t nb, cap;
};

struct scan_state {
	const struct part_reader *rd;
	uint64_t size;
	int fd;
	struct range_set done;   /* copied into fd */
	struct range_set want;   /* asked for this round */
	uint8_t *buf;            /* SCAN_COPY_CHUNK bytes */
};

/* Adds [start, start + len), clipped to size and widened to SCAN_ALIGN.
 * 0 or -ENOMEM. */
static int set_add(struct range_set *s, uint64_t size, uint64_t start,
		   uint64_t len)
{
	uint64_t end;

	if (start >= size || len == 0)
		return 0;
	if (ADD_OVERFLOW(start, len, &end) || end > size)
		end = size;
	start = align_down(start, SCAN_ALIGN);
	end = size - end < SCAN_ALIGN ? size : align_up(end, SCAN_ALIGN);
	if (s->nb == s->cap) {
		size_t cap = s->cap ? s->cap * 2 : 16;
		struct range *grown = realloc(s->r, cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		s->r = grown;
		s->cap = cap;
	}
	s->r[s->nb++] = (struct range){ start, end };
	return 0;
}

static int range_cmp(const void *a, const void *b)
{
	const struct range *x = a, *y = b;

	return (x->start > y->start) - (x->start < y->start);
}

static void set_normalize(struct range_set *s)
{
	size_t out = 0;

	if (s->nb < 2)
		return;
	qsort(s->r, s->nb, sizeof(*s->r), range_cmp);
	for (size_t i = 1; i < s->nb; i++) {
		if (s->r[i].start <= s->r[out].end) {
			s->r[out].end = MAX(s->r[out].end, s->r[i].end);
		} else {
			s->r[++out] = s->r[i];
		}
	}
	s->nb = out + 1;
}

static bool buf_is_zero(const uint8_t *p, size_t len)
{
	return len == 0 || (p[0] == 0 && memcmp(p, p + 1, len - 1) == 0);
}

/* Copies [start, end) of the disk into the memory file, skipping holes
 * and zeroes. 0 or -errno from the memory file (read failures leave
 * zeroes, see the top). */
static int copy_range(struct scan_state *st, uint64_t start, uint64_t end)
{
	uint64_t off = start;

	while (off < end) {
		uint64_t run = MIN(end - off, SCAN_COPY_CHUNK);
		int zero = 0;

		if (st->rd->cancelled && st->rd->cancelled(st->rd->ctx))
			return -ECANCELED;
		if (st->rd->is_zero_or_hole) {
			uint64_t r = 0;

			zero = st->rd->is_zero_or_hole(st->rd->ctx, off, run,
						       &r);
			if (zero < 0 || r == 0) {
				zero = 0;
			} else {
				run = MIN(run, r);
			}
		}
		if (!zero && st->rd->read(st->rd->ctx, st->buf, (size_t)run,
					  off) == 0 &&
		    !buf_is_zero(st->buf, (size_t)run)) {
			ssize_t n = pwrite(st->fd, st->buf, (size_t)run,
					   (off_t)off);
			if (n < 0)
				return -errno;
			if ((uint64_t)n != run)
				return -ENOSPC;
		}
		off += run;
	}
	return 0;
}

/* Copies what is wanted and not done yet; *added_r says whether any new
 * byte range was asked for. */
static int copy_wanted(struct scan_state *st, bool *added_r)
{
	size_t j = 0;
	int ret;

	*added_r = false;
	set_normalize(&st->want);
	for (size_t i = 0; i < st->want.nb; i++) {
		uint64_t off = st->want.r[i].start, end = st->want.r[i].end;

		/* Walk the done ranges that overlap and copy the gaps. */
		while (off < end) {
			while (j < st->done.nb && st->done.r[j].end <= off)
				j++;
			if (j < st->done.nb && st->done.r[j].start <= off) {
				off = st->done.r[j].end;
				continue;
			}
			uint64_t gap_end = end;
			if (j < st->done.nb && st->done.r[j].start < end)
				gap_end = st->done.r[j].start;
			ret = copy_range(st, off, gap_end);
			if (ret < 0)
				return ret;
			*added_r = true;
			off = gap_end;
		}
	}
	for (size_t i = 0; i < st->want.nb; i++) {
		ret = set_add(&st->done, st->size, st->want.r[i].start,
			      st->want.r[i].end - st->want.r[i].start);
		if (ret < 0)
			return ret;
	}
	set_normalize(&st->done);
	st->want.nb = 0;
	return 0;
}

static uint32_t le32_at(const uint8_t *p)
{
	return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static uint64_t le64_at(const uint8_t *p)
{
	return le32_at(p) | (uint64_t)le32_at(p + 4) << 32;
}

/* Reads len bytes at off straight from the disk; false when that fails
 * or lies outside it. */
static bool peek(struct scan_state *st, void *buf, size_t len, uint64_t off)
{
	return range_within(off, len, st->size) &&
	       st->rd->read(st->rd->ctx, buf, len, off) == 0;
}

/* The GPT header at lba (if it has the signature): asks for its entry
 * array, and returns its AlternateLBA in *alt_r (0 when none). The CRC is
 * not checked: copying the array of a header the libraries will refuse
 * costs a little memory, missing one they accept costs a wrong table. */
static int want_gpt_header(struct scan_state *st, unsigned ss, uint64_t lba,
			   uint64_t *alt_r)
{
	uint8_t h[92];
	uint64_t off, arr_off, arr_len;
	int ret;

	*alt_r = 0;
	if (MUL_OVERFLOW(lba, ss, &off) || !peek(st, h, sizeof(h), off) ||
	    memcmp(h, "EFI PART", 8) != 0)
		return 0;
	ret = set_add(&st->want, st->size, off, ss);
	if (ret < 0)
		return ret;
	*alt_r = le64_at(h + 32);
	arr_len = (uint64_t)le32_at(h + 80) * le32_at(h + 84);
	if (MUL_OVERFLOW(le64_at(h + 72), ss, &arr_off) ||
	    arr_len > SCAN_GPT_MAX_ARRAY)
		return 0;
	return set_add(&st->want, st->size, arr_off, arr_len);
}

static int want_gpt(struct scan_state *st)
{
	static const unsigned sector_sizes[] = { 512, 4096 };
	int ret;

	for (size_t i = 0; i < 2; i++) {
		unsigned ss = sector_sizes[i];
		uint64_t alt = 0, ignored;

		if (st->size / ss < 2)
			continue;
		ret = want_gpt_header(st, ss, 1, &alt);
		if (!ret && alt > 1)
			ret = want_gpt_header(st, ss, alt, &ignored);
		if (!ret)
			ret = want_gpt_header(st, ss, st->size / ss - 1,
					      &ignored);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static bool mbr_type_extended(uint8_t t)
{
	return t == 0x05 || t == 0x0f || t == 0x85;
}

/* Follows the EBR chain of every extended partition in the MBR (512-byte
 * sectors, as libfdisk reads an MBR in a file), asking for each EBR.
 * Links are relative to the extended partition's start (the MBR layout:
 * entry 2 of an EBR points to the next EBR). */
static int want_ebrs(struct scan_state *st)
{
	uint8_t mbr[512], ebr[512];
	int ret;

	if (!peek(st, mbr, sizeof(mbr), 0) || mbr[510] != 0x55 ||
	    mbr[511] != 0xaa)
		return 0;
	for (unsigned i = 0; i < 4; i++) {
		const uint8_t *e = mbr + 446 + 16 * i;
		uint64_t ext = (uint64_t)le32_at(e + 8) * 512, link = 0;

		if (!mbr_type_extended(e[4]) || ext == 0)
			continue;
		for (unsigned n = 0; n < SCAN_MAX_EBRS; n++) {
			uint64_t at = ext + link, next;

			ret = set_add(&st->want, st->size, at, 512);
			if (ret < 0)
				return ret;
			if (!peek(st, ebr, sizeof(ebr), at) ||
			    ebr[510] != 0x55 || ebr[511] != 0xaa)
				break;
			/* The logical partition, relative to this EBR. */
			ret = set_add(&st->want, st->size,
				      at + (uint64_t)le32_at(ebr + 446 + 8) *
						   512,
				      SCAN_PART_HEAD_BYTES);
			if (ret < 0)
				return ret;
			next = (uint64_t)le32_at(ebr + 446 + 16 + 8) * 512;
			/* No link, or one that does not move forward (a
			 * loop: libfdisk stops on its own). */
			if (!mbr_type_extended(ebr[446 + 16 + 4]) ||
			    next == 0 || next <= link)
				break;
			link = next;
		}
	}
	return 0;
}

/* The regions the partitions of table t ask for. */
static int want_parts(struct scan_state *st, const struct part_table *t)
{
	int ret = 0;

	for (size_t i = 0; i < t->nb_parts && !ret; i++) {
		const struct part_entry *e = &t->parts[i];
		uint64_t end = e->start_bytes + e->size_bytes;

		ret = set_add(&st->want, st->size, e->start_bytes,
			      SCAN_PART_HEAD_BYTES);
		if (!ret && e->size_bytes > SCAN_PART_TAIL_BYTES)
			ret = set_add(&st->want, st->size,
				      end - SCAN_PART_TAIL_BYTES,
				      SCAN_PART_TAIL_BYTES);
		else if (!ret)
			ret = set_add(&st->want, st->size, e->start_bytes,
				      e->size_bytes);
		if (!ret && e->number > 4 && t->label &&
		    strcmp(t->label, "dos") == 0)
			ret = set_add(&st->want, st->size,
				      e->start_bytes > SCAN_EBR_LEAD_BYTES ?
					      e->start_bytes -
						      SCAN_EBR_LEAD_BYTES :
					      0,
				      SCAN_EBR_LEAD_BYTES);
	}
	return ret;
}

/* A memory file of size bytes, all holes. */
static int open_scratch(uint64_t size)
{
	int fd = memfd_create("imgfs-scan", MFD_CLOEXEC);

	if (fd < 0)
		fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0)
		return -errno;
	if (size > INT64_MAX || ftruncate(fd, (off_t)size) < 0) {
		int e = size > INT64_MAX ? EFBIG : errno;
		close(fd);
		return -e;
	}
	return fd;
}

int part_scan_reader(const struct part_reader *rd, uint64_t size,
		     struct part_table **table_r)
{
	struct scan_state st = { .rd = rd, .size = size, .fd = -1 };
	struct part_table *table = NULL;
	bool added = true;
	int ret;

	*table_r = NULL;
	if (!rd || !rd->read)
		return -EINVAL;
	st.buf = malloc(SCAN_COPY_CHUNK);
	if (!st.buf)
		return -ENOMEM;
	ret = open_scratch(size);
	if (ret < 0)
		goto out;
	st.fd = ret;

	ret = set_add(&st.want, size, 0, SCAN_HEAD_BYTES);
	if (!ret && size > SCAN_TAIL_BYTES)
		ret = set_add(&st.want, size, size - SCAN_TAIL_BYTES,
			      SCAN_TAIL_BYTES);
	for (unsigned round = 0; !ret && round < SCAN_MAX_ROUNDS; round++) {
		ret = want_gpt(&st);
		if (!ret)
			ret = want_ebrs(&st);
		if (!ret && table)
			ret = want_parts(&st, table);
		if (!ret)
			ret = copy_wanted(&st, &added);
		if (ret < 0 || (!added && table))
			break;
		if (rd->cancelled && rd->cancelled(rd->ctx)) {
			ret = -ECANCELED;
			break;
		}
		part_table_free(table);
		table = NULL;
		ret = part_scan(st.fd, size, &table);
	}
	if (ret < 0)
		goto out;
	*table_r = TAKE_PTR(table);
	ret = 0;
out:
	part_table_free(table);
	if (st.fd >= 0)
		close(st.fd);
	free(st.done.r);
	free(st.want.r);
	free(st.buf);
	return ret;
}
