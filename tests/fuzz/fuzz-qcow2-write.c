/* fuzz-qcow2-write.c: libFuzzer target that opens arbitrary bytes as a
 * qcow2 image read-write, runs a short script of writes, discards,
 * write-zeroes, flushes, snapshot operations and reads on it, closes it,
 * and checks what it can.
 *
 * Input: IMAGE || OPS || N, where the last byte N is the number of 8-byte
 * op records before it (at most FW_MAX_OPS are run; N larger than the
 * input allows is cut down, so any bytes are a valid input). Fixed-size
 * records keep a mutation of one op from shifting the others. Record:
 *   byte 0 kind, byte 1 aux, bytes 2-3 len16, bytes 4-7 off32 (LE).
 * Kinds: writes of odd sizes at odd offsets (pattern or all-zero
 * buffers, the latter reaching the "fill would be all zeroes" path),
 * whole-cluster runs of up to FW_MAX_RUN bytes, discard and write-zeroes
 * (odd or cluster-aligned), flush, snapshot create and delete, reads,
 * and a close and read-write reopen in the middle of the script.
 *
 * The image is written to one file in /dev/shm (as fuzz-qcow2.c does)
 * and opened with backing=deny and a small metadata cache, so eviction
 * and write-back happen mid-script.
 *
 * Bounds per input, whatever the image claims: at most FW_MAX_OPS ops;
 * every offset lies in the first FW_SPAN_BYTES of the virtual disk; at
 * most FW_WRITE_BUDGET bytes are handed to writes; once the image file
 * grows past FW_FILE_CAP no more writes, discards, zeroes or snapshots
 * are issued (the script goes on with flushes and reads). The checker
 * below visits at most FW_CHECK_WORK table entries.
 *
 * Oracle, beyond crashes, sanitizer reports, leaks and timeouts:
 *   - A model records what the script made each byte of the span: data
 *     (the bytes of a write that returned 0), zero (write-zeroes that
 *     returned 0) or unknown (never touched, discarded, or touched by an
 *     op that failed). Discarded bytes may read as anything.
 *   - Before any op, fw_check_image() decides whether the input image is
 *     sound: every cluster's stored refcount covers the references the
 *     metadata makes to it, metadata written in place (header, active L1,
 *     refcount table and blocks, snapshot table) is referenced once, and
 *     every COPIED flag of the active tables sits on a refcount of 1, and
 *     no L2 entry is one the shared verdict calls damaged (a write there
 *     rightly marks the image corrupt). Only then can a write to one
 *     guest range not legitimately change another
 *     (a hostile image whose refcounts lie lets the allocator hand out a
 *     cluster that is still in use: QEMU would do the same), so the
 *     checks below run only for sound images.
 *   - For a sound image: being marked corrupt aborts (the overlap check
 *     fires only when refcounts lie). While every op so far returned 0
 *     (snapshot creates refused with -EEXIST/-ENOTSUP/-EMLINK aside),
 *     every read is compared with the model; after close the file must
 *     still be sound (leaks allowed, missing references not), reopen
 *     read-only, read back the model over the span, and snapshots the
 *     script created must read as the model did when they were taken.
 *     If the input was also clean as qemu-img check sees it (no leaked
 *     cluster, COPIED wherever an active refcount is 1), so must the
 *     file be after every close.
 * Any mismatch aborts with a line saying where. With FW_DEBUG set in
 * the environment, each input says whether it was found sound, and why
 * not.
 *
 * FUZZ_NO_MAIN_ENTRY lets a unit test include this file and call
 * fuzz_qcow2_write_one() itself (tests/unit/test-qcow2-write-replay.c
 * replays the seeds and tests/fuzz/regress/fuzz-qcow2-write/).
 *
 * Not covered: concurrency (one thread), backing files and external data
 * files (denied), compressed writes (imgfmt has none), crash consistency.
 */
#include "imgfmt.h"
#include "scratch-file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define FW_SPAN_BYTES (8u << 20)
#define FW_MAX_OPS 48
#define FW_OP_BYTES 8
#define FW_WRITE_BUDGET (16u << 20)
#define FW_FILE_CAP (64ull << 20)
#define FW_MAX_RUN (1u << 20)
#define FW_BUF_BYTES (2u << 20) /* a run of one 2 MiB cluster */
#define FW_MAX_ODD (256u << 10)
#define FW_CACHE_BYTES (64u << 10)
#define FW_MAX_TRACKED_SNAPS 2
#define FW_CHECK_WORK (1u << 22)
#define FW_VERIFY_CHUNK (256u << 10)

enum fw_kind { K_UNKNOWN = 0, K_DATA, K_ZERO };

enum fw_opcode {
	OP_WRITE_ODD,
	OP_WRITE_ODD2, /* twice as likely as the others */
	OP_WRITE_RUN,
	OP_WRITE_ZERO_BUF,
	OP_DISCARD,
	OP_ZEROES,
	OP_FLUSH,
	OP_SNAP_CREATE,
	OP_SNAP_DELETE,
	OP_READ,
	OP_REOPEN, /* close (flushes), check, open read-write again */
	OP_NB,
};

struct fw_snap {
	char name[32];
	uint64_t hwm;    /* the model's high-water mark when taken */
	uint8_t *kind;   /* copies of the model's [0, hwm) */
	uint8_t *data;
};

struct fw {
	struct img *img;
	uint64_t span;    /* min(virtual size, FW_SPAN_BYTES) */
	uint64_t cluster; /* bytes */
	bool sound;       /* fw_check_image() accepted the input */
	bool strict;      /* and found it clean (no leaks, COPIED right) */
	bool all_ok;      /* every op so far returned 0 */
	bool writes_stopped;
	uint64_t written;
	unsigned nb_created;
	struct fw_snap snaps[FW_MAX_TRACKED_SNAPS];
	unsigned nb_tracked;
};

/* The model of the span; bytes at or past model_hwm are all unknown, so
 * resetting costs what the previous input touched. */
static uint8_t model_kind[FW_SPAN_BYTES];
static uint8_t model_data[FW_SPAN_BYTES];
static uint64_t model_hwm;
static uint8_t fw_buf[FW_BUF_BYTES];
static uint8_t fw_rbuf[FW_BUF_BYTES];

/* Inputs found sound, and inputs checked after close: a replaying unit
 * test asserts the seeds reach the oracle. */
static unsigned long fw_nb_sound, fw_nb_verified;

#define fw_fail(...)                                                      \
	do {                                                              \
		fprintf(stderr, "fuzz-qcow2-write: " __VA_ARGS__);        \
		fputc('\n', stderr);                                      \
		abort();                                                  \
	} while (0)

static uint64_t be64(const uint8_t *p)
{
	uint64_t v = 0;

	for (int i = 0; i < 8; i++)
		v = v << 8 | p[i];
	return v;
}

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static uint16_t be16(const uint8_t *p)
{
	return (uint16_t)(p[0] << 8 | p[1]);
}

/* ---- the consistency checker ---------------------------------------
 * A small qemu-img check over the file's bytes (docs/interop/qcow2.txt):
 * counts the references of the header, refcount table and blocks, active
 * and snapshot L1 tables, the L2 tables they reach (once per L1 entry, as
 * a snapshot raises the refcount of every cluster it reaches) and the
 * data and compressed clusters those reach, then compares them with the
 * stored refcounts. Anything out of bounds or misaligned is unsound. */

#define L1E_OFFSET_MASK 0x00fffffffffffe00ULL
#define L2E_OFFSET_MASK 0x00fffffffffffe00ULL
#define RTE_OFFSET_MASK 0xfffffffffffffe00ULL
#define QCOW_OFLAG_COPIED (1ULL << 63)
#define QCOW_OFLAG_COMPRESSED (1ULL << 62)
#define QCOW_OFLAG_ZERO 1ULL
#define INCOMPAT_DATA_FILE (1ULL << 2)
#define INCOMPAT_EXTL2 (1ULL << 4)

/* Per-cluster marks: referenced at most once (metadata written in
 * place), refcount 1 required (an active COPIED entry), refcount 1 would
 * want COPIED (an active entry without it; qemu-img check: "OFLAG_COPIED
 * ... refcount=1" is an error there). */
enum { REQ_REF1 = 1, REQ_RC1 = 2, NO_COPIED = 4 };

struct chk {
	const uint8_t *p;
	uint64_t len;
	unsigned cb;          /* cluster_bits */
	uint64_t cs;          /* cluster bytes */
	bool extl2;
	bool v2;
	uint64_t nb_clusters; /* of the file, the last one maybe partial */
	uint32_t *refs;
	uint8_t *req;
	uint64_t work;
	const char *why;      /* first reason found, NULL while sound */
};

static bool chk_bad(struct chk *c, const char *why)
{
	if (!c->why)
		c->why = why;
	return false;
}

/* Whether [off, off + bytes) lies in the file. */
static bool chk_in_file(const struct chk *c, uint64_t off, uint64_t bytes)
{
	return off <= c->len && bytes <= c->len - off;
}

/* One reference to every cluster [off, off + bytes) touches. Tables the
 * checker reads lie wholly in the file; compressed data and the snapshot
 * table's last padding may end past it (QEMU does not pad the file), as
 * long as every cluster they touch starts inside it. */
static bool chk_ref(struct chk *c, uint64_t off, uint64_t bytes, uint8_t req)
{
	if (!bytes)
		return true;
	if (off >= c->len || bytes > UINT64_MAX - off ||
	    (off + bytes - 1) >> c->cb >= c->nb_clusters)
		return chk_bad(c, "a referenced range lies past the end");
	for (uint64_t i = off >> c->cb; i <= (off + bytes - 1) >> c->cb; i++) {
		if (++c->work > FW_CHECK_WORK)
			return chk_bad(c, "too much to check");
		c->refs[i]++;
		c->req[i] |= req;
	}
	return true;
}

static bool chk_l2(struct chk *c, uint64_t l2_off, bool active)
{
	unsigned esz = c->extl2 ? 16 : 8;
	uint64_t nb = c->cs / esz;
	unsigned csize_shift = 62 - (c->cb - 8);
	uint64_t coff_mask = (1ULL << csize_shift) - 1;
	uint64_t csize_mask = (1ULL << (c->cb - 8)) - 1;

	for (uint64_t i = 0; i < nb; i++) {
		uint64_t e = be64(c->p + l2_off + i * esz), off;

		if (++c->work > FW_CHECK_WORK)
			return chk_bad(c, "too much to check");
		if (e & QCOW_OFLAG_COMPRESSED) {
			uint64_t coff = e & coff_mask;
			uint64_t nb_sectors =
				((e >> csize_shift) & csize_mask) + 1;
			uint64_t bytes = nb_sectors * 512 - (coff & 511);

			if (e & QCOW_OFLAG_COPIED)
				return chk_bad(c, "a COPIED compressed entry");
			if (!coff)
				return chk_bad(c, "compressed data at 0");
			if (!chk_ref(c, coff, bytes, 0))
				return false;
			continue;
		}
		off = e & L2E_OFFSET_MASK;
		/* Entries imgfmt's one verdict calls damaged (reads fail,
		 * writes mark the image corrupt): a v2 zero flag; with
		 * extended L2, subclusters both allocated and zero, or
		 * allocated with no host cluster. */
		if (c->v2 && (e & QCOW_OFLAG_ZERO))
			return chk_bad(c, "a zero flag in a v2 image");
		if (c->extl2) {
			uint64_t bm = be64(c->p + l2_off + i * esz + 8);
			uint32_t alloc = (uint32_t)bm, zero = (uint32_t)(bm >> 32);

			if ((alloc & zero) || (alloc && !off))
				return chk_bad(c, "an inconsistent subcluster "
						  "bitmap");
		}
		if (!off)
			continue;
		if (off & (c->cs - 1))
			return chk_bad(c, "an unaligned data cluster");
		if (!chk_ref(c, off, c->cs,
			     !active ? 0
			     : e & QCOW_OFLAG_COPIED ? REQ_RC1 : NO_COPIED))
			return false;
	}
	return true;
}

static bool chk_l1(struct chk *c, uint64_t l1_off, uint64_t l1_size,
		   bool active)
{
	if (l1_size && (l1_off & (c->cs - 1)))
		return chk_bad(c, "an unaligned L1 table");
	if (l1_size > c->len / 8 || !chk_in_file(c, l1_off, l1_size * 8))
		return chk_bad(c, "an L1 table past the end");
	if (!chk_ref(c, l1_off, l1_size * 8, active ? REQ_REF1 : 0))
		return false;
	for (uint64_t i = 0; i < l1_size; i++) {
		uint64_t e = be64(c->p + l1_off + i * 8);
		uint64_t off = e & L1E_OFFSET_MASK;

		if (!off)
			continue;
		if ((off & (c->cs - 1)) || !chk_in_file(c, off, c->cs))
			return chk_bad(c, "a bad L2 table offset");
		if (!chk_ref(c, off, c->cs,
			     !active ? 0
			     : e & QCOW_OFLAG_COPIED ? REQ_RC1 : NO_COPIED))
			return false;
		if (!chk_l2(c, off, active))
			return false;
	}
	return true;
}

/* Stored refcount of cluster idx (0 where no block covers it). */
static uint64_t chk_refcount(const struct chk *c, uint64_t rt_off,
			     uint64_t rt_entries, unsigned order, uint64_t idx)
{
	unsigned bits = 1u << order;
	uint64_t per_block = c->cs * 8 / bits;
	uint64_t blk = idx / per_block, i = idx % per_block, rb;
	const uint8_t *q;

	if (blk >= rt_entries)
		return 0;
	rb = be64(c->p + rt_off + blk * 8) & RTE_OFFSET_MASK;
	if (!rb)
		return 0;
	q = c->p + rb;
	switch (bits) {
	case 1:
	case 2:
	case 4:
		return (q[i * bits / 8] >> (i * bits % 8)) & ((1u << bits) - 1);
	case 8:
		return q[i];
	case 16:
		return be16(q + i * 2);
	case 32:
		return be32(q + i * 4);
	default:
		return be64(q + i * 8);
	}
}

static bool chk_snapshots(struct chk *c, uint32_t nb, uint64_t off)
{
	uint64_t pos = off;

	if (!nb)
		return true;
	if (off & (c->cs - 1))
		return chk_bad(c, "an unaligned snapshot table");
	for (uint32_t i = 0; i < nb; i++) {
		uint64_t l1_off, l1_size, entry;

		if (!chk_in_file(c, pos, 40))
			return chk_bad(c, "a snapshot entry past the end");
		l1_off = be64(c->p + pos);
		l1_size = be32(c->p + pos + 8);
		entry = 40 + (uint64_t)be32(c->p + pos + 36) +
			be16(c->p + pos + 12) + be16(c->p + pos + 14);
		if (!chk_in_file(c, pos, entry))
			return chk_bad(c, "a snapshot entry past the end");
		entry = (entry + 7) & ~7ULL;
		if (!chk_l1(c, l1_off, l1_size, false))
			return false;
		pos += entry;
	}
	return chk_ref(c, off, pos - off, REQ_REF1);
}

/* Whether the qcow2 image in p[0, len) is sound (see the top); *why_r
 * gets the first reason it is not. *strict_r tells whether it is also
 * clean as qemu-img check sees it: no leaked cluster, and COPIED on every
 * active entry whose refcount is 1. With want_strict, an image that is
 * not strict is not sound either (an image that was clean must stay so). */
static bool fw_check_image(const uint8_t *p, uint64_t len, bool want_strict,
			   bool *strict_r, const char **why_r)
{
	bool strict = true;
	struct chk c = { .p = p, .len = len };
	uint32_t version, rt_clusters;
	uint64_t incompat = 0, rt_off, rt_entries;
	unsigned order = 4;
	bool ok = false;

	*why_r = "not a qcow2 header";
	if (len < 72 || memcmp(p, "QFI\xfb", 4))
		return false;
	version = be32(p + 4);
	c.cb = be32(p + 20);
	if ((version != 2 && version != 3) || c.cb < 9 || c.cb > 21)
		return false;
	if (version == 3) {
		if (len < 104)
			return false;
		incompat = be64(p + 72);
		order = be32(p + 96);
		if (order > 6)
			return false;
	}
	*why_r = "encrypted, external data or a backing file";
	if (be32(p + 32) || (incompat & INCOMPAT_DATA_FILE) || be64(p + 8))
		return false;
	c.cs = 1ULL << c.cb;
	c.extl2 = incompat & INCOMPAT_EXTL2;
	c.v2 = version == 2;
	c.nb_clusters = (len + c.cs - 1) >> c.cb;
	c.refs = calloc(c.nb_clusters, sizeof(*c.refs));
	c.req = calloc(c.nb_clusters, 1);
	if (!c.refs || !c.req)
		abort();

	rt_off = be64(p + 48);
	rt_clusters = be32(p + 56);
	rt_entries = (uint64_t)rt_clusters * c.cs / 8;
	if ((rt_off & (c.cs - 1)) || !rt_clusters ||
	    rt_clusters > len >> c.cb ||
	    !chk_in_file(&c, rt_off, rt_entries * 8)) {
		chk_bad(&c, "a bad refcount table");
		goto out;
	}
	if (!chk_ref(&c, 0, c.cs < len ? c.cs : len, REQ_REF1) ||
	    !chk_ref(&c, rt_off, rt_entries * 8, REQ_REF1))
		goto out;
	for (uint64_t i = 0; i < rt_entries; i++) {
		uint64_t rb = be64(p + rt_off + i * 8) & RTE_OFFSET_MASK;

		if (!rb)
			continue;
		if ((rb & (c.cs - 1)) || !chk_in_file(&c, rb, c.cs) ||
		    !chk_ref(&c, rb, c.cs, REQ_REF1)) {
			chk_bad(&c, "a bad refcount block");
			goto out;
		}
	}
	if (!chk_l1(&c, be64(p + 40), be32(p + 36), true) ||
	    !chk_snapshots(&c, be32(p + 60), be64(p + 64)))
		goto out;
	for (uint64_t i = 0; i < c.nb_clusters; i++) {
		uint64_t rc = chk_refcount(&c, rt_off, rt_entries, order, i);

		if (rc != c.refs[i] ||
		    ((c.req[i] & NO_COPIED) && rc == 1)) {
			if (strict && want_strict) {
				static char msg[128];

				snprintf(msg, sizeof(msg),
					 "%s: cluster 0x%" PRIx64 " has "
					 "refcount %" PRIu64 ", %" PRIu32
					 " references",
					 rc > c.refs[i] ? "a leak"
					 : "COPIED missing", i << c.cb, rc,
					 c.refs[i]);
				chk_bad(&c, msg);
			}
			strict = false;
		}
		if (c.refs[i] > rc) {
			chk_bad(&c, "a refcount lower than its references");
			goto out;
		}
		if (((c.req[i] & REQ_REF1) && c.refs[i] != 1) ||
		    ((c.req[i] & REQ_RC1) && rc != 1)) {
			chk_bad(&c, "shared metadata or a COPIED flag on a "
				    "shared cluster");
			goto out;
		}
	}
	/* Refcounts past the end of the file count as leaks too: the file
	 * grows over them. Checked one by one, within the work bound (past
	 * it, the image is not called clean). */
	for (uint64_t blk = 0; strict && blk < rt_entries; blk++) {
		uint64_t per_block = c.cs * 8 >> order;
		uint64_t lo = blk * per_block, hi = lo + per_block;

		if (hi <= c.nb_clusters ||
		    !(be64(p + rt_off + blk * 8) & RTE_OFFSET_MASK))
			continue;
		for (uint64_t i = lo > c.nb_clusters ? lo : c.nb_clusters;
		     strict && i < hi; i++) {
			if (++c.work > FW_CHECK_WORK ||
			    chk_refcount(&c, rt_off, rt_entries, order, i)) {
				if (want_strict)
					chk_bad(&c, "a leak past the end of "
						    "the file");
				strict = false;
			}
		}
	}
	ok = !(want_strict && !strict);
out:
	*strict_r = ok && strict;
	*why_r = c.why;
	free(c.refs);
	free(c.req);
	return ok;
}

/* ---- the model ------------------------------------------------------ */

/* The byte a pattern write with this tag puts at guest offset off: it
 * depends on the offset, so data landing in the wrong place shows. */
static uint8_t fw_pattern(uint64_t off, uint8_t tag)
{
	return (uint8_t)(off ^ (off >> 8) ^ (off >> 16) ^ (tag * 0x9du));
}

static void model_reset(void)
{
	memset(model_kind, K_UNKNOWN, model_hwm);
	model_hwm = 0;
}

/* Sets [off, off + len) to kind; data (for K_DATA) holds its bytes. */
static void model_set(uint64_t off, uint64_t len, enum fw_kind kind,
		      const uint8_t *data)
{
	if (off >= FW_SPAN_BYTES)
		return;
	if (len > FW_SPAN_BYTES - off)
		len = FW_SPAN_BYTES - off;
	memset(model_kind + off, kind, len);
	if (kind == K_DATA)
		memcpy(model_data + off, data, len);
	if (kind != K_UNKNOWN && off + len > model_hwm)
		model_hwm = off + len;
}

/* Compares buf, read from [off, off + len), with the model (or with a
 * snapshot's copy of it); aborts at the first difference. */
static void model_compare(const char *what, const uint8_t *kind,
			  const uint8_t *data, uint64_t hwm,
			  const uint8_t *buf, uint64_t off, uint64_t len)
{
	uint64_t end = off + len < hwm ? off + len : hwm;

	for (uint64_t o = off; o < end; o++) {
		uint8_t want;

		if (kind[o] == K_UNKNOWN)
			continue;
		want = kind[o] == K_ZERO ? 0 : data[o];
		if (buf[o - off] != want)
			fw_fail("%s: byte at 0x%" PRIx64 " reads 0x%02x, "
				"%s 0x%02x was written", what, o,
				buf[o - off],
				kind[o] == K_ZERO ? "zero" : "data",
				want);
	}
}

static bool fw_oracle(const struct fw *fw)
{
	return fw->sound && fw->all_ok;
}

/* A sound image marked corrupt means imgfmt believed refcounts lied. */
static void fw_check_corrupt(const struct fw *fw)
{
	const char *why = img_corrupt_reason(fw->img);

	if (fw->sound && why)
		fw_fail("a sound image was marked corrupt: %s", why);
}

/* Stops writes once the file passed FW_FILE_CAP. */
static void fw_check_growth(struct fw *fw)
{
	struct stat st;

	if (fstat(img_fd(fw->img), &st) < 0 ||
	    (uint64_t)st.st_size > FW_FILE_CAP)
		fw->writes_stopped = true;
}

/* ---- ops ------------------------------------------------------------ */

struct fw_op {
	uint8_t kind, aux;
	uint16_t len16;
	uint32_t off32;
};

static struct fw_op fw_decode(const uint8_t *p)
{
	struct fw_op op = {
		.kind = p[0],
		.aux = p[1],
		.len16 = (uint16_t)(p[2] | p[3] << 8),
		.off32 = (uint32_t)p[4] | (uint32_t)p[5] << 8 |
			 (uint32_t)p[6] << 16 | (uint32_t)p[7] << 24,
	};
	return op;
}

/* An odd range in the span: any offset, 1 .. FW_MAX_ODD bytes. */
static void fw_odd_range(const struct fw *fw, const struct fw_op *op,
			 uint64_t *off_r, uint64_t *len_r)
{
	uint64_t off = op->off32 % fw->span;
	uint64_t len = 1 + (((uint64_t)(op->aux & 3) << 16 | op->len16) %
			    FW_MAX_ODD);

	*off_r = off;
	*len_r = len < fw->span - off ? len : fw->span - off;
}

/* A cluster-aligned range in the span of 1 .. max_bytes / cluster
 * clusters (at least one), cut at the span's end; false if empty. */
static bool fw_cluster_range(const struct fw *fw, const struct fw_op *op,
			     uint64_t max_bytes, uint64_t *off_r,
			     uint64_t *len_r)
{
	uint64_t max_nb = max_bytes / fw->cluster ? max_bytes / fw->cluster : 1;
	uint64_t off = op->off32 % fw->span / fw->cluster * fw->cluster;
	uint64_t len = (1 + op->len16 % max_nb) * fw->cluster;

	if (len > fw->span - off)
		len = (fw->span - off) / fw->cluster * fw->cluster;
	*off_r = off;
	*len_r = len;
	return len > 0;
}

static void fw_write(struct fw *fw, uint64_t off, uint64_t len, bool zero_buf,
		     uint8_t tag)
{
	int ret;

	if (fw->writes_stopped || !len || len > FW_BUF_BYTES ||
	    fw->written + len > FW_WRITE_BUDGET)
		return;
	if (zero_buf)
		memset(fw_buf, 0, len);
	else
		for (uint64_t i = 0; i < len; i++)
			fw_buf[i] = fw_pattern(off + i, tag);
	ret = img_pwrite(fw->img, fw_buf, len, off);
	fw->written += len;
	if (ret == 0) {
		model_set(off, len, K_DATA, fw_buf);
	} else {
		fw->all_ok = false;
		model_set(off, len, K_UNKNOWN, NULL);
	}
	fw_check_growth(fw);
}

static void fw_discard_or_zero(struct fw *fw, const struct fw_op *op,
			       bool zero)
{
	uint64_t off, len;
	int ret;

	if (fw->writes_stopped)
		return;
	if (op->aux & 1) {
		if (!fw_cluster_range(fw, op, 16 * fw->cluster, &off, &len))
			return;
	} else {
		fw_odd_range(fw, op, &off, &len);
	}
	ret = zero ? img_write_zeroes(fw->img, off, len)
		   : img_discard(fw->img, off, len);
	if (ret == 0 && zero) {
		model_set(off, len, K_ZERO, NULL);
	} else {
		/* Discarded bytes may read as anything. */
		model_set(off, len, K_UNKNOWN, NULL);
		if (ret)
			fw->all_ok = false;
	}
	fw_check_growth(fw);
}

static void fw_snap_create(struct fw *fw)
{
	struct img_err err;
	char name[32];
	int ret;

	if (fw->writes_stopped)
		return;
	snprintf(name, sizeof(name), "fw-%u", fw->nb_created++);
	ret = img_snapshot_create(fw->img, name, &err);
	fw_check_growth(fw);
	if (ret == -EEXIST || ret == -ENOTSUP || ret == -EMLINK)
		return; /* refused, the image unchanged (imgfmt.h) */
	if (ret) {
		fw->all_ok = false;
		return;
	}
	if (fw->nb_tracked < FW_MAX_TRACKED_SNAPS) {
		struct fw_snap *sn = &fw->snaps[fw->nb_tracked++];

		snprintf(sn->name, sizeof(sn->name), "%s", name);
		sn->hwm = model_hwm;
		sn->kind = malloc(model_hwm + 1);
		sn->data = malloc(model_hwm + 1);
		if (!sn->kind || !sn->data)
			abort();
		memcpy(sn->kind, model_kind, model_hwm);
		memcpy(sn->data, model_data, model_hwm);
	}
}

static void fw_snap_untrack(struct fw *fw, unsigned i)
{
	free(fw->snaps[i].kind);
	free(fw->snaps[i].data);
	fw->snaps[i] = fw->snaps[--fw->nb_tracked];
}

static void fw_snap_delete(struct fw *fw, uint32_t pick)
{
	struct img_snapshot *list = NULL;
	struct img_err err;
	size_t nb = 0;
	int ret;

	if (fw->writes_stopped || img_snapshot_list(fw->img, &list, &nb) < 0)
		return;
	if (!nb) {
		img_snapshot_list_free(list, nb);
		return;
	}
	pick %= nb;
	ret = img_snapshot_delete(fw->img, list[pick].id, &err);
	if (ret) {
		fw->all_ok = false;
	} else {
		for (unsigned i = 0; i < fw->nb_tracked; i++) {
			if (!strcmp(fw->snaps[i].name, list[pick].name)) {
				fw_snap_untrack(fw, i);
				break;
			}
		}
	}
	img_snapshot_list_free(list, nb);
	fw_check_growth(fw);
}

/* Checks the closed image file is sound (see the top), and clean if the
 * input image was. */
static void fw_check_file(const struct fw *fw, const char *when)
{
	const char *why;
	bool strict;
	struct stat st;
	void *map;

	if (fstat(scratch_fd, &st) < 0 || st.st_size <= 0)
		fw_fail("the image file is gone %s", when);
	map = mmap(NULL, st.st_size, PROT_READ, MAP_SHARED, scratch_fd, 0);
	if (map == MAP_FAILED)
		abort();
	/* Lazy refcounts set the dirty bit; a clean close clears it. */
	if (st.st_size >= 80 && be32((uint8_t *)map + 4) >= 3 &&
	    (((uint8_t *)map)[79] & 1))
		fw_fail("the dirty bit is still set %s", when);
	if (!fw_check_image(map, st.st_size, fw->strict, &strict, &why))
		fw_fail("the image is no longer sound %s: %s", when, why);
	munmap(map, st.st_size);
}

/* Closes the image and opens it read-write again; for a sound image
 * whose script has succeeded so far, the closed file must be sound and
 * the open must work. Leaves fw->img NULL when the open fails. */
static void fw_reopen(struct fw *fw)
{
	struct img_open_opts opts = {
		.format = IMG_FORMAT_QCOW2,
		.read_only = false,
		.backing = IMG_BACKING_DENY,
		.cache_bytes = FW_CACHE_BYTES,
	};
	bool check;
	struct img_err err;

	fw_check_corrupt(fw);
	check = fw_oracle(fw) && !img_corrupt_reason(fw->img);
	img_close(fw->img);
	fw->img = NULL;
	if (check)
		fw_check_file(fw, "after a close in the script");
	if (img_open(scratch_path, &opts, &fw->img, &err) < 0) {
		if (check)
			fw_fail("reopen read-write failed: %s", err.msg);
		fw->img = NULL;
	}
}

static void fw_run_op(struct fw *fw, const struct fw_op *op, unsigned idx)
{
	uint64_t off, len;

	switch (op->kind % OP_NB) {
	case OP_WRITE_ODD:
	case OP_WRITE_ODD2:
		fw_odd_range(fw, op, &off, &len);
		fw_write(fw, off, len, false, (uint8_t)(idx + op->aux));
		break;
	case OP_WRITE_RUN:
		/* Up to FW_MAX_RUN, or one cluster when clusters are larger. */
		if (fw_cluster_range(fw, op,
				     fw->cluster > FW_MAX_RUN ? fw->cluster
							      : FW_MAX_RUN,
				     &off, &len))
			fw_write(fw, off, len, op->aux & 0x80,
				 (uint8_t)(idx + op->aux));
		break;
	case OP_WRITE_ZERO_BUF:
		fw_odd_range(fw, op, &off, &len);
		fw_write(fw, off, len, true, 0);
		break;
	case OP_DISCARD:
		fw_discard_or_zero(fw, op, false);
		break;
	case OP_ZEROES:
		fw_discard_or_zero(fw, op, true);
		break;
	case OP_FLUSH:
		if (img_flush(fw->img))
			fw->all_ok = false;
		break;
	case OP_SNAP_CREATE:
		fw_snap_create(fw);
		break;
	case OP_SNAP_DELETE:
		fw_snap_delete(fw, op->off32);
		break;
	case OP_REOPEN:
		fw_reopen(fw);
		return;
	case OP_READ:
		fw_odd_range(fw, op, &off, &len);
		if (img_pread(fw->img, fw_rbuf, len, off) == 0 && fw_oracle(fw))
			model_compare("read", model_kind, model_data, model_hwm,
				      fw_rbuf, off, len);
		break;
	}
	fw_check_corrupt(fw);
}

/* ---- after close ---------------------------------------------------- */

/* Reads back every chunk of img holding known bytes of the model (or a
 * snapshot's copy of it). A chunk whose read fails is retried cluster
 * by cluster over the known bytes only: those must read. */
static void fw_verify(const char *what, struct img *img, uint64_t cluster,
		      const uint8_t *kind, const uint8_t *data, uint64_t hwm)
{
	uint64_t end = hwm < img_size(img) ? hwm : img_size(img);

	for (uint64_t off = 0; off < end; off += FW_VERIFY_CHUNK) {
		uint64_t len = end - off < FW_VERIFY_CHUNK ? end - off
							     : FW_VERIFY_CHUNK;

		if (!memchr(kind + off, K_DATA, len) &&
		    !memchr(kind + off, K_ZERO, len))
			continue;
		if (img_pread(img, fw_rbuf, len, off) == 0) {
			model_compare(what, kind, data, hwm, fw_rbuf, off, len);
			continue;
		}
		for (uint64_t c = off; c < off + len; c += cluster) {
			uint64_t n = off + len - c < cluster ? off + len - c
							       : cluster;
			uint64_t a = 0, b = n;

			while (a < n && kind[c + a] == K_UNKNOWN)
				a++;
			while (b > a && kind[c + b - 1] == K_UNKNOWN)
				b--;
			if (a == b)
				continue;
			if (img_pread(img, fw_rbuf, b - a, c + a))
				fw_fail("%s: reading back [0x%" PRIx64
					", +0x%" PRIx64 ") failed", what,
					c + a, b - a);
			model_compare(what, kind, data, hwm, fw_rbuf, c + a,
				      b - a);
		}
	}
}

static void fw_verify_snapshots(struct fw *fw, struct img *img)
{
	struct img_snapshot *list = NULL;
	size_t nb = 0;

	if (!fw->nb_tracked)
		return;
	if (img_snapshot_list(img, &list, &nb) < 0)
		fw_fail("listing snapshots after reopen failed");
	for (unsigned t = 0; t < fw->nb_tracked; t++) {
		const struct fw_snap *sn = &fw->snaps[t];
		struct img *snap = NULL;
		struct img_err err;
		size_t found = nb;

		for (size_t i = 0; i < nb; i++) {
			if (!strcmp(list[i].name, sn->name)) {
				if (found != nb)
					fw_fail("two snapshots named %s",
						sn->name);
				found = i;
			}
		}
		if (found == nb)
			fw_fail("snapshot %s is gone", sn->name);
		if (img_snapshot_open(img, list[found].id, &snap, &err))
			fw_fail("snapshot %s does not open: %s", sn->name,
				err.msg);
		fw_verify(sn->name, snap, fw->cluster, sn->kind, sn->data,
			  sn->hwm);
		img_close(snap);
	}
	img_snapshot_list_free(list, nb);
}

/* The file after close must still be sound, and read back as modelled. */
static void fw_after_close(struct fw *fw, uint64_t size)
{
	struct img_open_opts opts = {
		.format = IMG_FORMAT_QCOW2,
		.read_only = true,
		.backing = IMG_BACKING_DENY,
		.cache_bytes = FW_CACHE_BYTES,
	};
	struct img *img = NULL;
	struct img_err err;

	fw_check_file(fw, "after close");
	fw_nb_verified++;

	if (img_open(scratch_path, &opts, &img, &err))
		fw_fail("reopen failed: %s", err.msg);
	if (img_size(img) != size)
		fw_fail("size changed from %" PRIu64 " to %" PRIu64, size,
			img_size(img));
	fw_verify("image", img, fw->cluster, model_kind, model_data,
		  model_hwm);
	fw_verify_snapshots(fw, img);
	img_close(img);
}

int fuzz_qcow2_write_one(const uint8_t *data, size_t size);
int fuzz_qcow2_write_one(const uint8_t *data, size_t size)
{
	struct img_open_opts opts = {
		.format = IMG_FORMAT_QCOW2,
		.read_only = false,
		.backing = IMG_BACKING_DENY,
		.cache_bytes = FW_CACHE_BYTES,
	};
	int fd = scratch_open("fuzz-qcow2-write");
	struct fw fw = { .all_ok = true };
	size_t nb_ops = 0, img_bytes;
	const uint8_t *ops;
	struct img_info info;
	struct img_err err;
	const char *why;
	uint64_t disk_bytes;
	bool check;

	if (size) {
		nb_ops = data[size - 1];
		if (nb_ops > (size - 1) / FW_OP_BYTES)
			nb_ops = (size - 1) / FW_OP_BYTES;
		img_bytes = size - 1 - nb_ops * FW_OP_BYTES;
	} else {
		img_bytes = 0;
	}
	ops = data + img_bytes;
	if (nb_ops > FW_MAX_OPS)
		nb_ops = FW_MAX_OPS;

	model_reset();
	if (ftruncate(fd, 0) < 0 ||
	    (img_bytes &&
	     pwrite(fd, data, img_bytes, 0) != (ssize_t)img_bytes)) {
		perror(scratch_path);
		abort();
	}
	fw.sound = fw_check_image(data, img_bytes, false, &fw.strict, &why);
	fw_nb_sound += fw.sound;
	if (getenv("FW_DEBUG"))
		fprintf(stderr, "fuzz-qcow2-write: %s%s\n",
			fw.strict  ? "sound and clean"
			: fw.sound ? "sound"
				   : "not sound: ",
			fw.sound ? "" : why);
	if (img_open(scratch_path, &opts, &fw.img, &err) < 0) {
		if (err.errnum >= 0 || !memchr(err.msg, '\0', sizeof(err.msg)))
			abort(); /* a failed open must say why */
		return 0;
	}
	img_get_info(fw.img, &info);
	disk_bytes = img_size(fw.img);
	fw.span = disk_bytes < FW_SPAN_BYTES ? disk_bytes : FW_SPAN_BYTES;
	fw.cluster = info.cluster_size;
	if (fw.span && fw.cluster) {
		for (size_t i = 0; i < nb_ops && fw.img; i++) {
			struct fw_op op = fw_decode(ops + i * FW_OP_BYTES);

			fw_run_op(&fw, &op, (unsigned)i);
		}
	}
	if (!fw.img)
		goto out; /* a reopen in the script failed */
	fw_check_corrupt(&fw);
	/* Whether to check after close: decided now, while the handle can
	 * still say whether it was marked corrupt. */
	check = fw_oracle(&fw) && !img_corrupt_reason(fw.img);
	img_close(fw.img);
	if (check)
		fw_after_close(&fw, disk_bytes);
out:
	while (fw.nb_tracked)
		fw_snap_untrack(&fw, 0);
	return 0;
}

#ifndef FUZZ_NO_MAIN_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_qcow2_write_one(data, size);
}
#endif
