/* test-virtio-blk.c: virtio-blk requests (vmm/virtio-blk.c) from
 * hand-built rings over a raw image, and over qcow2 images made by
 * qemu-img.
 *
 * Guest memory is two regions that are adjacent in guest-physical space
 * but apart on the host, so buffers that straddle them take the split
 * path. Before each request all of guest memory is poisoned and copied;
 * afterwards only the bytes the request may write (its data buffer and
 * status byte) may differ, and the used ring must hold exactly one entry
 * for it (or none, with the queue broken, when there is no status byte).
 */
#undef NDEBUG
#include "vmm.h"
#include "imgfmt.h"

#include "endian.h"

#include <assert.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define REGION_BYTES (128 * 1024)
#define GPA_A 0x100000ull
#define GPA_B (GPA_A + REGION_BYTES)
#define QSIZE 32
#define AVAIL_OFF 0x1000
#define USED_OFF 0x2000
#define TABLE_OFF 0x3000
#define HDR_OFF 0x4000
#define STATUS_OFF 0x4100
#define DATA_OFF 0x8000
#define DISK_BYTES (1024 * 1024)
#define POISON 0x5a

static uint8_t *reg_a, *reg_b, *before_a, *before_b;
static struct vmm_mem mem;
static struct vq vq;
static struct vblk *blk;
static struct img *img;
static char dir[] = "/tmp/test-virtio-blk-XXXXXX";

static uint8_t *host(uint64_t gpa)
{
	return vmm_mem_gpa(&mem, gpa, 1);
}

static uint8_t pattern(uint64_t off)
{
	return (uint8_t)(off * 13 + off / 512 + 1);
}

/* ------------------------------------------------------------------ */
/* The rig */

static void reset_queue(void)
{
	memset(reg_a, POISON, REGION_BYTES);
	memset(reg_b, POISON, REGION_BYTES);
	memset(reg_a + AVAIL_OFF, 0, vq_avail_bytes(QSIZE));
	memset(reg_a + USED_OFF, 0, vq_used_bytes(QSIZE));
	assert(vq_init(&vq, &mem, QSIZE, reg_a, reg_a + AVAIL_OFF,
		       reg_a + USED_OFF, 0, vblk_driver_features(blk)) == 0);
}

static void open_device(const char *path, bool read_only, uint64_t features)
{
	struct img_open_opts o = { .read_only = read_only };
	struct img_err err;
	struct vblk_opts vo = { .serial = "imgfs-serial-0001", .queue_size = QSIZE };

	vblk_free(blk);
	img_close(img);
	assert(img_open(path, &o, &img, &err) == 0);
	assert(vblk_new(img, &vo, &blk) == 0);
	if (!features)
		features = vblk_features(blk);
	assert(vblk_set_features(blk, features) == 0);
	reset_queue();
}

struct seg {
	uint64_t gpa;
	uint32_t len;
	bool w;
};

static void put_desc(uint64_t table_gpa, unsigned i, const struct seg *s,
		     uint16_t flags, uint16_t next)
{
	uint8_t *p = host(table_gpa) + 16 * i;

	put_le64(p, s->gpa);
	put_le32(p + 8, s->len);
	put_le16(p + 12, flags | (s->w ? VRING_DESC_F_WRITE : 0));
	put_le16(p + 14, next);
}

/* Puts a chain on the ring (directly or through an indirect table). */
static void submit(const struct seg *segs, unsigned nb, bool indirect)
{
	uint16_t idx = get_le16(reg_a + AVAIL_OFF + 2);
	uint16_t head = (uint16_t)((idx * 4) % QSIZE);

	if (indirect) {
		struct seg t = { GPA_A + TABLE_OFF, 16 * nb, false };

		for (unsigned i = 0; i < nb; i++)
			put_desc(GPA_A + TABLE_OFF, i, &segs[i],
				 i + 1 < nb ? VRING_DESC_F_NEXT : 0,
				 (uint16_t)(i + 1));
		put_desc(GPA_A, head, &t, VRING_DESC_F_INDIRECT, 0);
	} else {
		for (unsigned i = 0; i < nb; i++)
			put_desc(GPA_A, (head + i) % QSIZE, &segs[i],
				 i + 1 < nb ? VRING_DESC_F_NEXT : 0,
				 (uint16_t)((head + i + 1) % QSIZE));
	}
	put_le16(reg_a + AVAIL_OFF + 4 + 2 * (idx % QSIZE), head);
	put_le16(reg_a + AVAIL_OFF + 2, (uint16_t)(idx + 1));
}

static void snapshot(void)
{
	memcpy(before_a, reg_a, REGION_BYTES);
	memcpy(before_b, reg_b, REGION_BYTES);
}

struct range {
	uint64_t gpa, len;
};

/* Every byte of guest memory outside the used ring and the allowed
 * ranges is as it was. */
static void assert_unchanged_except(const struct range *allow, unsigned nb)
{
	for (uint64_t off = 0; off < 2 * REGION_BYTES; off++) {
		uint64_t g = GPA_A + off;
		uint8_t now = off < REGION_BYTES ? reg_a[off] :
						   reg_b[off - REGION_BYTES];
		uint8_t was = off < REGION_BYTES ? before_a[off] :
						   before_b[off - REGION_BYTES];
		bool ok = off >= USED_OFF && off < USED_OFF + vq_used_bytes(QSIZE);

		for (unsigned i = 0; i < nb && !ok; i++)
			ok = g >= allow[i].gpa && g - allow[i].gpa < allow[i].len;
		if (!ok && now != was) {
			fprintf(stderr, "byte at gpa 0x%llx changed\n",
				(unsigned long long)g);
			abort();
		}
	}
}

/* Runs the queue; expects one answer with this status and used length. */
static void expect_answer(uint8_t status, uint32_t used_len,
			  const struct range *allow, unsigned nb_allow,
			  const char *what)
{
	uint16_t used_before = get_le16(reg_a + USED_OFF + 2);
	uint64_t status_gpa = GPA_A + STATUS_OFF;
	bool notify;

	assert(vblk_process(blk, &vq, &notify) == 1);
	assert(get_le16(reg_a + USED_OFF + 2) == (uint16_t)(used_before + 1));
	assert(*host(status_gpa) == status);
	assert(get_le32(reg_a + USED_OFF + 8 + 8 * (used_before % QSIZE)) ==
	       used_len);
	assert_unchanged_except(allow, nb_allow);
	printf("ok %s: status %u, used %u\n", what, status, used_len);
}

static void expect_broken(const char *what)
{
	uint16_t used_before = get_le16(reg_a + USED_OFF + 2);
	bool notify;

	assert(vblk_process(blk, &vq, &notify) == -EIO);
	assert(vq.broken);
	assert(get_le16(reg_a + USED_OFF + 2) == used_before);
	assert_unchanged_except(NULL, 0);
	printf("ok broken: %s (%s)\n", what, vq.broken_why);
	reset_queue();
}

static void put_hdr(uint32_t type, uint64_t sector)
{
	uint8_t *h = host(GPA_A + HDR_OFF);

	put_le32(h, type);
	put_le32(h + 4, 0);
	put_le64(h + 8, sector);
}

static const struct seg HDR = { GPA_A + HDR_OFF, 16, false };
static const struct seg STATUS = { GPA_A + STATUS_OFF, 1, true };

static void read_disk(void *buf, size_t len, uint64_t off)
{
	assert(img_pread(img, buf, len, off) == 0);
}

/* ------------------------------------------------------------------ */

static void test_reads(void)
{
	struct seg s[4];
	struct range r[2];
	uint8_t want[8192];

	reset_queue();
	/* 4 KiB from sector 3, in three odd pieces, one straddling the two
	 * regions. */
	put_hdr(VIRTIO_BLK_T_IN, 3);
	s[0] = HDR;
	s[1] = (struct seg){ GPA_B - 1000, 1000 + 1072, true };
	s[2] = (struct seg){ GPA_A + DATA_OFF, 4096 - 2072, true };
	s[3] = STATUS;
	for (int indirect = 0; indirect < 2; indirect++) {
		submit(s, 4, indirect);
		snapshot();
		r[0] = (struct range){ s[1].gpa, s[1].len };
		r[1] = (struct range){ s[2].gpa, s[2].len + 0 };
		struct range all[3] = { r[0], r[1], { STATUS.gpa, 1 } };
		expect_answer(VIRTIO_BLK_S_OK, 4097, all, 3,
			      indirect ? "read, indirect, split over regions" :
					 "read, three pieces, split over regions");
		read_disk(want, 4096, 3 * 512);
		for (unsigned i = 0; i < 2072; i++)
			assert(*host(s[1].gpa + i) == want[i]);
		assert(memcmp(host(s[2].gpa), want + 2072, 4096 - 2072) == 0);
	}

	/* The header itself may come in two pieces. */
	put_le32(host(GPA_A + HDR_OFF + 0x40), VIRTIO_BLK_T_IN);
	put_le32(host(GPA_A + HDR_OFF + 0x44), 0);
	put_le64(host(GPA_A + 0x6000), 2047);
	s[0] = (struct seg){ GPA_A + HDR_OFF + 0x40, 8, false };
	s[1] = (struct seg){ GPA_A + 0x6000, 8, false };
	s[2] = (struct seg){ GPA_A + DATA_OFF, 512, true };
	s[3] = STATUS;
	submit(s, 4, false);
	snapshot();
	struct range rr[2] = { { s[2].gpa, 512 }, { STATUS.gpa, 1 } };
	expect_answer(VIRTIO_BLK_S_OK, 513, rr, 2, "read the last sector, "
						 "header in two pieces");
	read_disk(want, 512, DISK_BYTES - 512);
	assert(memcmp(host(GPA_A + DATA_OFF), want, 512) == 0);
}

/* Reads that must fail without touching their buffer. */
static void test_bad_reads(void)
{
	static const struct {
		uint64_t sector;
		uint64_t gpa;
		uint32_t len;
		const char *what;
	} cases[] = {
		{ 2048, GPA_A + DATA_OFF, 512, "read one sector past the end" },
		{ 2047, GPA_A + DATA_OFF, 1024, "read running past the end" },
		{ UINT64_MAX, GPA_A + DATA_OFF, 512, "read at sector 2^64-1" },
		{ UINT64_MAX / 512 + 1, GPA_A + DATA_OFF, 512,
		  "read whose byte offset overflows" },
		{ 0, GPA_A + DATA_OFF, 511, "read of 511 bytes" },
		{ 0, GPA_B + REGION_BYTES - 512, 1024,
		  "read buffer running off guest memory" },
		{ 0, 0x1000, 512, "read buffer below guest memory" },
		{ 0, UINT64_MAX - 511, 1024, "read buffer address wrapping" },
		{ 0, GPA_A + DATA_OFF, 0xfffffe00u, "read of almost 4 GiB" },
	};
	struct range st = { STATUS.gpa, 1 };

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct seg s[3] = { HDR, { cases[i].gpa, cases[i].len, true },
				    STATUS };

		reset_queue();
		put_hdr(VIRTIO_BLK_T_IN, cases[i].sector);
		submit(s, 3, i % 2);
		snapshot();
		expect_answer(VIRTIO_BLK_S_IOERR, 1, &st, 1, cases[i].what);
	}
}

static void test_bad_headers_and_status(void)
{
	struct range st = { STATUS.gpa, 1 };
	struct seg s[4];

	reset_queue();
	put_hdr(VIRTIO_BLK_T_IN, 0);
	s[0] = (struct seg){ GPA_A + HDR_OFF, 15, false };
	s[1] = (struct seg){ GPA_A + DATA_OFF, 512, true };
	s[2] = STATUS;
	submit(s, 3, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_IOERR, 1, &st, 1, "header of 15 bytes");

	s[0] = STATUS;
	submit(s, 1, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_IOERR, 1, &st, 1, "no header at all");

	s[0] = (struct seg){ 0xdead0000, 16, false };
	s[1] = STATUS;
	submit(s, 2, true);
	snapshot();
	expect_answer(VIRTIO_BLK_S_IOERR, 1, &st, 1, "header outside memory");

	/* A readable segment after a writable one. */
	put_hdr(VIRTIO_BLK_T_IN, 0);
	s[0] = HDR;
	s[1] = (struct seg){ GPA_A + DATA_OFF, 512, true };
	s[2] = (struct seg){ GPA_A + DATA_OFF + 512, 512, false };
	s[3] = STATUS;
	submit(s, 4, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_IOERR, 1, &st, 1,
		      "readable segment after a writable one");

	/* No place for a status: the queue breaks, nothing is written. */
	s[0] = HDR;
	s[1] = (struct seg){ GPA_A + DATA_OFF, 512, true };
	s[2] = (struct seg){ GPA_A + STATUS_OFF, 1, false };
	submit(s, 3, false);
	snapshot();
	expect_broken("status byte not device-writable");

	s[2] = (struct seg){ GPA_A + STATUS_OFF, 0, true };
	submit(s, 3, false);
	snapshot();
	expect_broken("status descriptor of length 0");

	s[2] = (struct seg){ GPA_B + REGION_BYTES, 1, true };
	submit(s, 3, true);
	snapshot();
	expect_broken("status byte outside guest memory");

	s[2] = (struct seg){ UINT64_MAX, 2, true };
	submit(s, 3, false);
	snapshot();
	expect_broken("status byte address wrapping");

	/* Requests before a broken one keep their answers. */
	put_hdr(VIRTIO_BLK_T_FLUSH, 0);
	s[0] = HDR;
	s[1] = STATUS;
	submit(s, 2, false);
	s[1] = (struct seg){ GPA_A + STATUS_OFF, 1, false };
	submit(s, 2, false);
	snapshot();
	{
		bool notify;

		assert(vblk_process(blk, &vq, &notify) == -EIO);
		assert(get_le16(reg_a + USED_OFF + 2) == 1 && notify);
		assert(*host(STATUS.gpa) == VIRTIO_BLK_S_OK);
		printf("ok a good request then a broken one: one answer\n");
	}
	reset_queue();
}

static void test_writes(bool read_only_device)
{
	struct range st = { STATUS.gpa, 1 };
	uint8_t before[4096], after[4096];
	struct seg s[4];

	reset_queue();
	read_disk(before, sizeof(before), 8192);
	for (unsigned i = 0; i < 4096; i++)
		*host(GPA_B - 2048 + i) = (uint8_t)(i ^ 0x3c);
	put_hdr(VIRTIO_BLK_T_OUT, 16);
	s[0] = HDR;
	s[1] = (struct seg){ GPA_B - 2048, 1000, false };
	s[2] = (struct seg){ GPA_B - 1048, 3096, false };
	s[3] = STATUS;
	submit(s, 4, true);
	snapshot();
	if (read_only_device) {
		expect_answer(VIRTIO_BLK_S_IOERR, 1, &st, 1,
			      "write to a read-only device");
		read_disk(after, sizeof(after), 8192);
		assert(memcmp(before, after, sizeof(after)) == 0);
		return;
	}
	expect_answer(VIRTIO_BLK_S_OK, 1, &st, 1, "write in two pieces, "
						  "straddling regions");
	read_disk(after, sizeof(after), 8192);
	for (unsigned i = 0; i < 4096; i++)
		assert(after[i] == (uint8_t)(i ^ 0x3c));

	static const struct {
		uint64_t sector;
		uint32_t len;
		const char *what;
	} bad[] = {
		{ 2048, 512, "write one sector past the end" },
		{ 2040, 8192, "write running past the end" },
		{ UINT64_MAX, 512, "write at sector 2^64-1" },
		{ 0, 100, "write of 100 bytes" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_hdr(VIRTIO_BLK_T_OUT, bad[i].sector);
		s[1] = (struct seg){ GPA_A + DATA_OFF, bad[i].len, false };
		s[2] = STATUS;
		submit(s, 3, false);
		snapshot();
		expect_answer(VIRTIO_BLK_S_IOERR, 1, &st, 1, bad[i].what);
	}
	/* A data buffer outside memory fails before anything is written. */
	read_disk(before, 1024, 0);
	put_hdr(VIRTIO_BLK_T_OUT, 0);
	s[1] = (struct seg){ GPA_A + DATA_OFF, 512, false };
	s[2] = (struct seg){ 0x10, 512, false };
	s[3] = STATUS;
	submit(s, 4, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_IOERR, 1, &st, 1,
		      "write whose second buffer is outside memory");
	read_disk(after, 1024, 0);
	assert(memcmp(before, after, 1024) == 0);
}

static void put_dseg(uint64_t gpa, uint64_t sector, uint32_t nb, uint32_t flags)
{
	put_le64(host(gpa), sector);
	put_le32(host(gpa) + 8, nb);
	put_le32(host(gpa) + 12, flags);
}

static void test_discard_zeroes(void)
{
	struct range st = { STATUS.gpa, 1 };
	uint8_t buf[4096], zero[4096] = { 0 }, before[DISK_BYTES / 8];
	struct seg s[3] = { HDR, { GPA_A + DATA_OFF, 32, false }, STATUS };

	reset_queue();
	put_hdr(VIRTIO_BLK_T_WRITE_ZEROES, 0);
	put_dseg(GPA_A + DATA_OFF, 40, 8, VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP);
	put_dseg(GPA_A + DATA_OFF + 16, 100, 1, 0);
	submit(s, 3, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_OK, 1, &st, 1, "write zeroes, two segments");
	read_disk(buf, 4096, 40 * 512);
	assert(memcmp(buf, zero, 4096) == 0);
	read_disk(buf, 512, 100 * 512);
	assert(memcmp(buf, zero, 512) == 0);

	put_hdr(VIRTIO_BLK_T_DISCARD, 0);
	put_dseg(GPA_A + DATA_OFF, 64, 16, 0);
	s[1].len = 16;
	submit(s, 3, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_OK, 1, &st, 1, "discard 8 KiB");
	read_disk(buf, 4096, 64 * 512);
	assert(memcmp(buf, zero, 4096) == 0); /* raw: punched, no backing */

	static const struct {
		uint32_t type;
		uint64_t sector;
		uint32_t nb, flags, seg_bytes;
		uint8_t status;
		const char *what;
	} bad[] = {
		{ VIRTIO_BLK_T_DISCARD, 0, 8, 1, 16, VIRTIO_BLK_S_UNSUPP,
		  "discard with the UNMAP flag" },
		{ VIRTIO_BLK_T_WRITE_ZEROES, 0, 8, 2, 16, VIRTIO_BLK_S_UNSUPP,
		  "write zeroes with an unknown flag" },
		{ VIRTIO_BLK_T_DISCARD, 2047, 2, 0, 16, VIRTIO_BLK_S_IOERR,
		  "discard running past the end" },
		{ VIRTIO_BLK_T_WRITE_ZEROES, UINT64_MAX, 1, 0, 16,
		  VIRTIO_BLK_S_IOERR, "write zeroes at sector 2^64-1" },
		{ VIRTIO_BLK_T_WRITE_ZEROES, 0, VBLK_MAX_DISCARD_SECTORS + 1, 0,
		  16, VIRTIO_BLK_S_IOERR, "write zeroes over the limit" },
		{ VIRTIO_BLK_T_DISCARD, 0, 8, 0, 15, VIRTIO_BLK_S_IOERR,
		  "discard segment of 15 bytes" },
		{ VIRTIO_BLK_T_DISCARD, 0, 8, 0, 0, VIRTIO_BLK_S_IOERR,
		  "discard without segments" },
		{ VIRTIO_BLK_T_DISCARD, 0, 8, 0,
		  16 * (VBLK_MAX_DISCARD_SEGS + 1), VIRTIO_BLK_S_IOERR,
		  "discard with too many segments" },
	};
	read_disk(before, sizeof(before), 0);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		put_hdr(bad[i].type, 0);
		for (unsigned k = 0; k <= VBLK_MAX_DISCARD_SEGS; k++)
			put_dseg(GPA_A + DATA_OFF + 16 * k, 0, 8, 0);
		/* The bad segment comes last: nothing may run before it. */
		put_dseg(GPA_A + DATA_OFF + (bad[i].seg_bytes > 16 ?
					     bad[i].seg_bytes - 16 : 0),
			 bad[i].sector, bad[i].nb, bad[i].flags);
		s[1].len = bad[i].seg_bytes;
		submit(s, bad[i].seg_bytes ? 3 : 2, false);
		if (!bad[i].seg_bytes) {
			struct seg s2[2] = { HDR, STATUS };
			reset_queue();
			put_hdr(bad[i].type, 0);
			submit(s2, 2, false);
		}
		snapshot();
		expect_answer(bad[i].status, 1, &st, 1, bad[i].what);
	}
	uint8_t *after = malloc(sizeof(before));
	read_disk(after, sizeof(before), 0);
	assert(memcmp(before, after, sizeof(before)) == 0);
	free(after);
}

static void test_flush_getid_unknown(void)
{
	struct range st = { STATUS.gpa, 1 };
	struct range id[2] = { { GPA_A + DATA_OFF, 20 }, { STATUS.gpa, 1 } };
	struct seg s[3] = { HDR, { GPA_A + DATA_OFF, 64, true }, STATUS };

	reset_queue();
	put_hdr(VIRTIO_BLK_T_FLUSH, 12345);
	s[1] = STATUS;
	submit(s, 2, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_OK, 1, &st, 1, "flush");

	put_hdr(VIRTIO_BLK_T_GET_ID, 0);
	s[1] = (struct seg){ GPA_A + DATA_OFF, 64, true };
	s[2] = STATUS;
	submit(s, 3, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_OK, 21, id, 2, "GET_ID, 64-byte buffer");
	assert(memcmp(host(GPA_A + DATA_OFF), "imgfs-serial-0001\0\0\0", 20) == 0);

	s[1].len = 8;
	id[0].len = 8;
	submit(s, 3, true);
	snapshot();
	expect_answer(VIRTIO_BLK_S_OK, 9, id, 2, "GET_ID, 8-byte buffer");

	put_hdr(77, 0);
	submit(s, 3, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_UNSUPP, 1, &st, 1, "unknown request type");
}

/* Discard and write zeroes that were not negotiated are UNSUPP. */
static void test_not_negotiated(const char *path)
{
	struct range st = { STATUS.gpa, 1 };
	struct seg s[3] = { HDR, { GPA_A + DATA_OFF, 16, false }, STATUS };

	open_device(path, false,
		    (1ull << VIRTIO_F_VERSION_1) |
			    (1ull << VIRTIO_BLK_F_FLUSH));
	assert(vblk_set_features(blk, 1ull << 40) == -EINVAL);
	assert(vblk_set_features(blk, 1ull << VIRTIO_BLK_F_FLUSH) == -EINVAL);
	put_hdr(VIRTIO_BLK_T_DISCARD, 0);
	put_dseg(GPA_A + DATA_OFF, 0, 8, 0);
	submit(s, 3, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_UNSUPP, 1, &st, 1,
		      "discard without VIRTIO_BLK_F_DISCARD");
	put_hdr(VIRTIO_BLK_T_WRITE_ZEROES, 0);
	submit(s, 3, false);
	snapshot();
	expect_answer(VIRTIO_BLK_S_UNSUPP, 1, &st, 1,
		      "write zeroes without VIRTIO_BLK_F_WRITE_ZEROES");
	/* Indirect was not negotiated either: that breaks the queue. */
	put_hdr(VIRTIO_BLK_T_FLUSH, 0);
	s[1] = STATUS;
	submit(s, 2, true);
	snapshot();
	expect_broken("indirect table without INDIRECT_DESC");
}

static void test_config(bool ro)
{
	uint8_t cfg[VBLK_CONFIG_BYTES];
	uint64_t f = vblk_features(blk);

	vblk_get_config(blk, cfg);
	assert(get_le64(cfg) == DISK_BYTES / 512);
	assert(get_le32(cfg + 12) == QSIZE - 2);
	assert(get_le32(cfg + 20) == 512);
	assert(!!(f & (1ull << VIRTIO_BLK_F_RO)) == ro);
	assert(!!(f & (1ull << VIRTIO_BLK_F_DISCARD)) == !ro);
	assert(!!(f & (1ull << VIRTIO_BLK_F_WRITE_ZEROES)) == !ro);
	assert(f & (1ull << VIRTIO_F_VERSION_1));
	assert(get_le32(cfg + 40) == VBLK_MAX_DISCARD_SEGS);
}

/* Many requests at once, good and bad mixed: each one answered once. */
static void test_batch(void)
{
	bool seen[QSIZE] = { false };
	bool notify;
	uint16_t idx;

	reset_queue();
	for (unsigned i = 0; i < 8; i++) {
		struct seg s[3] = { HDR,
				    { GPA_A + DATA_OFF + 512 * i, 512, true },
				    STATUS };
		put_hdr(VIRTIO_BLK_T_IN, i % 2 ? 4096 : i);
		submit(s, 3, i % 3 == 0);
	}
	assert(vblk_process(blk, &vq, &notify) == 8 && notify);
	idx = get_le16(reg_a + USED_OFF + 2);
	assert(idx == 8);
	for (unsigned i = 0; i < 8; i++) {
		uint32_t id = get_le32(reg_a + USED_OFF + 4 + 8 * i);

		assert(id < QSIZE && !seen[id]);
		seen[id] = true;
	}
	assert(vblk_process(blk, &vq, &notify) == 0 && !notify);
	printf("ok a batch of 8 requests: 8 answers, distinct ids\n");
}

/* Requests of many data pieces. The device translates up to 64 host
 * pieces in one pass and walks longer requests twice (check, then I/O):
 * both must give the same bytes, and a bad piece anywhere, even the last
 * of hundreds, must fail the request before any byte moves. */
#define MAX_PIECES 200
static struct seg many[MAX_PIECES + 2];

/* Header, nb pieces of 512 bytes from base (reversed: last piece
 * first), status. Returns the number of segments. */
static unsigned many_pieces(uint64_t base, unsigned nb, bool reversed,
			    bool writable)
{
	many[0] = HDR;
	for (unsigned i = 0; i < nb; i++) {
		unsigned k = reversed ? nb - 1 - i : i;

		many[1 + i] = (struct seg){ base + 512ull * k, 512, writable };
	}
	many[1 + nb] = STATUS;
	return nb + 2;
}

static void test_many_pieces(void)
{
	static const struct {
		uint64_t base;
		unsigned nb;
		bool reversed;
		const char *what;
	} cases[] = {
		{ GPA_A + DATA_OFF, 64, false, "64 pieces (one pass)" },
		/* Piece 31 straddles the regions: 65 host pieces. */
		{ GPA_B - 512 * 32 - 256, 64, false,
		  "64 pieces, one straddling (two passes)" },
		{ GPA_A + DATA_OFF, MAX_PIECES, true,
		  "200 pieces in reverse order (two passes)" },
	};
	struct range st = { STATUS.gpa, 1 };
	uint8_t *want = malloc(MAX_PIECES * 512), *got = malloc(MAX_PIECES * 512);
	uint8_t before[8192], after[8192];
	unsigned n;

	assert(want && got);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		uint64_t bytes = 512ull * cases[c].nb;
		struct range r[2] = { { cases[c].base, bytes }, st };

		reset_queue();
		put_hdr(VIRTIO_BLK_T_IN, 5);
		n = many_pieces(cases[c].base, cases[c].nb, cases[c].reversed,
				true);
		submit(many, n, true);
		snapshot();
		expect_answer(VIRTIO_BLK_S_OK, (uint32_t)bytes + 1, r, 2,
			      cases[c].what);
		read_disk(want, bytes, 5 * 512);
		for (unsigned i = 0; i < cases[c].nb; i++)
			for (unsigned b = 0; b < 512; b++)
				assert(*host(many[1 + i].gpa + b) ==
				       want[512 * i + b]);

		/* The same bytes written back through the device, at
		 * another place, then read from the image. */
		put_hdr(VIRTIO_BLK_T_OUT, 1024);
		for (unsigned i = 1; i <= cases[c].nb; i++)
			many[i].w = false;
		submit(many, n, true);
		snapshot();
		expect_answer(VIRTIO_BLK_S_OK, 1, &st, 1, "... written back");
		read_disk(got, bytes, 1024 * 512);
		assert(memcmp(want, got, bytes) == 0);
	}

	/* The last piece is bad: nothing is read, nothing is written. */
	for (unsigned nb = 3; nb <= 130; nb += 127) {
		char what[80];

		reset_queue();
		put_hdr(VIRTIO_BLK_T_IN, 0);
		n = many_pieces(GPA_A + DATA_OFF, nb, false, true);
		many[n - 2].gpa = 0x1000;
		submit(many, n, true);
		snapshot();
		snprintf(what, sizeof(what),
			 "read of %u pieces, the last outside memory", nb);
		expect_answer(VIRTIO_BLK_S_IOERR, 1, &st, 1, what);

		read_disk(before, sizeof(before), 0);
		put_hdr(VIRTIO_BLK_T_OUT, 0);
		for (unsigned i = 1; i <= nb; i++)
			many[i].w = false;
		many[n - 2].gpa = GPA_B + REGION_BYTES - 256;
		submit(many, n, true);
		snapshot();
		snprintf(what, sizeof(what),
			 "write of %u pieces, the last running off memory", nb);
		expect_answer(VIRTIO_BLK_S_IOERR, 1, &st, 1, what);
		read_disk(after, sizeof(after), 0);
		assert(memcmp(before, after, sizeof(after)) == 0);
	}
	free(want);
	free(got);
}

/* A pass with more requests than the device parses ahead (it runs the
 * I/O of up to 32 simple reads and writes together), a FLUSH and a bad
 * request among them, and a read after a write of the same sector: all
 * are answered once, in ring order, and each sees the image as running
 * the requests one by one in ring order would leave it. A queue of 128
 * in region B, so that 40 direct chains fit. */
static void test_long_pass(void)
{
	enum { NB = 40, BQ = 128 };
	const uint64_t ring = GPA_B + 0x10000, hdrs = GPA_B + 0x12000;
	const uint64_t stats = GPA_B + 0x12400, data = GPA_B + 0x13000;
	uint8_t *desc = host(ring), *avail = host(ring + 0x800);
	uint8_t *used = host(ring + 0x1000);
	uint8_t want[512];
	struct vq q;
	bool notify;

	memset(desc, 0, 0x2000);
	assert(vq_init(&q, &mem, BQ, desc, avail, used, 0,
		       vblk_driver_features(blk)) == 0);
	for (unsigned i = 0; i < NB; i++) {
		uint8_t *h = host(hdrs + 16 * i);
		/* 7 writes sector 900 from buffer 7; 8 reads it back. */
		uint32_t type = i == 7 ? VIRTIO_BLK_T_OUT :
				i == 20 ? VIRTIO_BLK_T_FLUSH :
					  VIRTIO_BLK_T_IN;
		uint64_t sector = i == 7 || i == 8 ? 900 :
				  i == 10 ? 2048 : /* past the end */
					    i;
		struct seg s[3] = {
			{ hdrs + 16 * i, 16, false },
			{ data + 512 * i, 512, type == VIRTIO_BLK_T_IN },
			{ stats + i, 1, true },
		};
		unsigned n = type == VIRTIO_BLK_T_FLUSH ? 2 : 3;

		if (n == 2)
			s[1] = s[2];
		put_le32(h, type);
		put_le32(h + 4, 0);
		put_le64(h + 8, sector);
		*host(stats + i) = 0xee;
		memset(host(data + 512 * i), i == 7 ? 0x77 : 0, 512);
		for (unsigned k = 0; k < n; k++)
			put_desc(ring, 3 * i + k, &s[k],
				 k + 1 < n ? VRING_DESC_F_NEXT : 0,
				 (uint16_t)(3 * i + k + 1));
		put_le16(avail + 4 + 2 * i, (uint16_t)(3 * i));
	}
	put_le16(avail + 2, NB);
	assert(vblk_process(blk, &q, &notify) == NB && notify);
	assert(get_le16(used + 2) == NB);
	for (unsigned i = 0; i < NB; i++) {
		uint8_t st = i == 10 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
		bool rd = i != 7 && i != 20 && i != 10;

		assert(get_le32(used + 4 + 8 * i) == 3 * i);
		assert(get_le32(used + 8 + 8 * i) == (rd ? 513u : 1u));
		assert(*host(stats + i) == st);
		if (!rd)
			continue;
		if (i == 8)
			memset(want, 0x77, 512);
		else
			read_disk(want, 512, 512ull * i);
		assert(memcmp(host(data + 512 * i), want, 512) == 0);
	}
	printf("ok a pass of 40 requests: ring order, read after write\n");
}

static char *make_raw(const char *name)
{
	uint8_t *buf = malloc(DISK_BYTES);
	char *path;
	FILE *f;

	for (uint64_t i = 0; i < DISK_BYTES; i++)
		buf[i] = pattern(i);
	assert(asprintf(&path, "%s/%s", dir, name) > 0);
	f = fopen(path, "wb");
	assert(f && fwrite(buf, 1, DISK_BYTES, f) == DISK_BYTES);
	fclose(f);
	free(buf);
	return path;
}

/* qcow2: qemu-img makes the image (skipped only where it is missing);
 * the device must read what qemu-img wrote and write what qemu-img
 * reads back. */
static void test_qcow2(const char *raw)
{
	char *q, *cmd, *out;
	uint8_t a[4096], b[4096];
	FILE *f;

	if (system("qemu-img --version >/dev/null 2>&1") != 0) {
		printf("skip qcow2: qemu-img is not installed\n");
		return;
	}
	assert(asprintf(&q, "%s/disk.qcow2", dir) > 0);
	assert(asprintf(&out, "%s/out.raw", dir) > 0);
	assert(asprintf(&cmd, "qemu-img convert -f raw -O qcow2 -o "
			      "cluster_size=4096 %s %s", raw, q) > 0);
	assert(system(cmd) == 0);
	free(cmd);
	open_device(q, false, 0);
	test_reads();
	test_bad_reads();
	test_bad_headers_and_status();
	printf("qcow2: img_writable %d\n", img_writable(img));
	/* qcow2 writes are real tests: they fail until the driver writes. */
	assert(img_writable(img));
	test_config(false);
	test_writes(false);
	test_discard_zeroes();
	test_flush_getid_unknown();
	vblk_free(blk);
	blk = NULL;
	img_close(img);
	img = NULL;
	assert(asprintf(&cmd, "qemu-img check -q %s && qemu-img convert -O raw "
			      "%s %s", q, q, out) > 0);
	assert(system(cmd) == 0);
	free(cmd);
	f = fopen(out, "rb");
	assert(f);
	assert(fseek(f, 8192, SEEK_SET) == 0 && fread(a, 1, 4096, f) == 4096);
	fclose(f);
	for (unsigned i = 0; i < 4096; i++)
		b[i] = (uint8_t)(i ^ 0x3c);
	assert(memcmp(a, b, 4096) == 0);
	unlink(out);
	unlink(q);
	free(q);
	free(out);
}

int main(void)
{
	char *raw;

	setvbuf(stdout, NULL, _IOLBF, 0);
	assert(mkdtemp(dir));
	reg_a = aligned_alloc(4096, REGION_BYTES);
	reg_b = aligned_alloc(4096, REGION_BYTES);
	before_a = malloc(REGION_BYTES);
	before_b = malloc(REGION_BYTES);
	assert(reg_a && reg_b && before_a && before_b);
	assert(vmm_mem_add(&mem, GPA_A, REGION_BYTES, reg_a, 0) == 0);
	assert(vmm_mem_add(&mem, GPA_B, REGION_BYTES, reg_b, 0) == 0);

	raw = make_raw("disk.raw");
	open_device(raw, false, 0);
	test_config(false);
	test_reads();
	test_bad_reads();
	test_bad_headers_and_status();
	test_writes(false);
	test_discard_zeroes();
	test_flush_getid_unknown();
	test_batch();
	test_many_pieces();
	test_long_pass();
	test_not_negotiated(raw);

	open_device(raw, true, 0);
	test_config(true);
	test_writes(true);
	test_reads();

	vblk_free(blk);
	blk = NULL;
	img_close(img);
	img = NULL;
	unlink(raw);
	free(raw);
	raw = make_raw("disk2.raw");
	test_qcow2(raw);
	unlink(raw);
	free(raw);
	rmdir(dir);
	free(reg_a);
	free(reg_b);
	free(before_a);
	free(before_b);
	printf("test-virtio-blk: all passed\n");
	return 0;
}
