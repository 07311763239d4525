/* test-qcow2-hostile.c: hostile and corrupt images against img_open and
 * img_pread.
 *
 * Design: qemu-img and qemu-io build a few valid base images once (a 1 GiB
 * v3 image with 64 KiB clusters holding plain, compressed and far-away
 * data; the same with zstd; one with an internal snapshot; an overlay on
 * a backing file). Each row of the table copies one base image and breaks
 * it in exactly one way through a small patch helper (a header field, an
 * L1/L2 entry, a snapshot table entry, a header extension, the file's
 * length...), then states what a careful driver must do:
 *   - refuse the open with an exact negative errno and a message that
 *     names the image path and, case-insensitively, one of a few words
 *     naming the problem ('|' separates the alternatives: the driver is
 *     free in its wording, not in its meaning);
 *   - or open, and fail reads of the damaged range with -EIO while every
 *     other range still reads its pattern (corrupt metadata met later).
 * The contract where QEMU's errno is arguable: -EINVAL for corrupt or
 * unsupported metadata at open, -EIO at read time.
 *
 * Each case runs in a forked child under alarm() so that a crash or a hang
 * fails that case only and the table keeps going; outside ASan the child
 * also runs under an RLIMIT_AS of its current size plus 512 MiB, which
 * proves that headers claiming 2^31 L1 entries or 2^20 snapshots are
 * refused without allocating what they claim. ASan reserves terabytes of
 * shadow, so there only the time bound applies.
 *
 * Then every case file, the fuzz seed corpus (tests/fuzz/make-corpus.sh)
 * and the saved fuzz regressions (tests/fuzz/regress/) go through the
 * fuzz target's own function (tests/fuzz/fuzz-qcow2.c, included below),
 * as qcow2 and probed, so this build's sanitizers see what the fuzzer
 * sees without needing clang.
 *
 * Not covered here: byte-for-byte reading of valid images (the
 * differential suite does that), and writing.
 */
#undef NDEBUG
#include "imgfmt.h"

#include <assert.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <dirent.h>
#include <unistd.h>

#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-qcow2.c"

#include "regress.h"

#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#define CLUSTER (64 * KiB)

/* Header fields (docs/interop/qcow2.txt, "Header"). */
enum {
	H_MAGIC = 0,
	H_VERSION = 4,
	H_BACKING_OFF = 8,
	H_BACKING_SIZE = 16,
	H_CLUSTER_BITS = 20,
	H_SIZE = 24,
	H_CRYPT = 32,
	H_L1_SIZE = 36,
	H_L1_OFF = 40,
	H_RT_OFF = 48,
	H_RT_CLUSTERS = 56,
	H_NB_SNAP = 60,
	H_SNAP_OFF = 64,
	H_INCOMPAT = 72,
	H_REFCOUNT_ORDER = 96,
	H_HDR_LEN = 100,
	H_COMP_TYPE = 104,
};

/* Snapshot table entry fields ("Snapshot table"). */
enum {
	S_L1_OFF = 0,
	S_L1_SIZE = 8,
	S_ID_SIZE = 12,
	S_NAME_SIZE = 14,
	S_EXTRA_SIZE = 36,
	S_DISK_SIZE = 48, /* extra data: vm_state_size_large, disk_size */
};

#define EXT_FEATURES 0x6803f857u
#define EXT_FDE 0x0537be77u
#define EXT_DATA_FILE 0x44415441u
#define L1_OFF_MASK 0x00fffffffffffe00ULL
#define L2_OFF_MASK 0x00fffffffffffe00ULL
#define L2_COMPRESSED (1ULL << 62)
#define L2_COPIED (1ULL << 63)

/* Where the base images keep their data: the pattern byte of each 64 KiB
 * chunk. 2 MiB is a compressed cluster; 600 MiB lies under the second L1
 * entry, so damage to the first L2 table leaves it readable. */
static const struct chunk {
	uint64_t off;
	uint8_t byte;
} chunks[] = {
	{ 0, 0xaa },
	{ 1 * MiB, 0xbb },
	{ 2 * MiB, 0xcc },
	{ 100 * MiB, 0x00 }, /* unallocated */
	{ 600 * MiB, 0xdd },
};

static char dir[] = "/tmp/test-qcow2-hostile-XXXXXX";

struct hcase;
typedef void make_fn(const char *path, const struct hcase *hc);
typedef void after_fn(struct img *img, const struct hcase *hc);

struct hcase {
	const char *name;
	const char *base;  /* base image copied to the case's path first */
	make_fn *make;     /* then this breaks it (NULL: unchanged) */
	uint64_t a, b;     /* parameters of make */
	int w;             /* field width in bytes for the field helpers */
	enum img_format fmt;
	enum img_backing_policy pol;
	bool rw;
	int want;          /* img_open's result */
	const char *msg;   /* '|'-separated words, one must be in the message */
	bool chain_msg;    /* the message may name any image of the chain
			    * (all in the case's folder) instead of this one */
	after_fn *after;   /* checks on the open image when want == 0 */
	uint64_t bad_off;  /* check_eio: reads here fail ... */
	uint64_t bad_span; /* ... and in the rest of this aligned span */
};

/* ---- small file helpers ------------------------------------------- */

static char *xasprintf(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static char *xasprintf(const char *fmt, ...)
{
	va_list ap;
	char *s;

	va_start(ap, fmt);
	assert(vasprintf(&s, fmt, ap) >= 0);
	va_end(ap);
	return s;
}

static void run(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void run(const char *fmt, ...)
{
	va_list ap;
	char *cmd;
	int st;

	va_start(ap, fmt);
	assert(vasprintf(&cmd, fmt, ap) >= 0);
	va_end(ap);
	st = system(cmd);
	if (st != 0) {
		fprintf(stderr, "command failed (%d): %s\n", st, cmd);
		exit(1);
	}
	free(cmd);
}

static int open_rw(const char *path)
{
	int fd = open(path, O_RDWR);

	assert(fd >= 0);
	return fd;
}

static uint64_t get_be(int fd, uint64_t off, int w)
{
	uint8_t b[8];
	uint64_t v = 0;

	assert(pread(fd, b, w, off) == w);
	for (int i = 0; i < w; i++)
		v = v << 8 | b[i];
	return v;
}

static void put_be(int fd, uint64_t off, int w, uint64_t v)
{
	uint8_t b[8];

	for (int i = w - 1; i >= 0; i--, v >>= 8)
		b[i] = (uint8_t)v;
	assert(pwrite(fd, b, w, off) == w);
}

static void copy_file(const char *from, const char *to)
{
	char buf[65536];
	int in = open(from, O_RDONLY);
	int out = open(to, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	ssize_t n;

	assert(in >= 0 && out >= 0);
	while ((n = read(in, buf, sizeof(buf))) > 0)
		assert(write(out, buf, n) == n);
	assert(n == 0);
	close(in);
	close(out);
}

/* File offset of the L2 entry that maps guest offset g (the L2 table
 * must exist). */
static uint64_t l2_entry_pos(int fd, uint64_t g)
{
	unsigned cb = get_be(fd, H_CLUSTER_BITS, 4);
	uint64_t l1_off = get_be(fd, H_L1_OFF, 8);
	uint64_t l1_idx = g >> (cb + cb - 3);
	uint64_t l2_idx = (g >> cb) & ((1ULL << (cb - 3)) - 1);
	uint64_t l2_off = get_be(fd, l1_off + 8 * l1_idx, 8) & L1_OFF_MASK;

	assert(l2_off != 0);
	return l2_off + 8 * l2_idx;
}

/* ---- patch helpers: one per kind of damage ------------------------- */

/* Header field at a, width w, becomes b. */
static void set_hdr(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);

	put_be(fd, hc->a, hc->w, hc->b);
	close(fd);
}

/* Header field at a, width w, gets b added (unaligned table offsets). */
static void add_hdr(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);

	put_be(fd, hc->a, hc->w, get_be(fd, hc->a, hc->w) + hc->b);
	close(fd);
}

/* Incompatible feature bits b are ORed in. */
static void or_incompat(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);

	put_be(fd, H_INCOMPAT, 8, get_be(fd, H_INCOMPAT, 8) | hc->b);
	close(fd);
}

/* Field at a (width w) of the first snapshot table entry becomes b. */
static void set_snap(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);
	uint64_t sn = get_be(fd, H_SNAP_OFF, 8);

	assert(get_be(fd, H_NB_SNAP, 4) >= 1);
	put_be(fd, sn + hc->a, hc->w, hc->b);
	close(fd);
}

/* L1 entry a becomes b, or gets b added when w == 1. */
static void set_l1(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);
	uint64_t pos = get_be(fd, H_L1_OFF, 8) + 8 * hc->a;

	put_be(fd, pos, 8, hc->w == 1 ? get_be(fd, pos, 8) + hc->b : hc->b);
	close(fd);
}

/* The L2 entry of guest offset a becomes b, or gets b added when w == 1. */
static void set_l2(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);
	uint64_t pos = l2_entry_pos(fd, hc->a);

	put_be(fd, pos, 8, hc->w == 1 ? get_be(fd, pos, 8) + hc->b : hc->b);
	close(fd);
}

/* The compressed descriptor of guest offset a: its host offset becomes b
 * (b != 0), or, with b == 0, the compressed bytes become garbage. */
static void break_compressed(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);
	unsigned cb = get_be(fd, H_CLUSTER_BITS, 4);
	uint64_t pos = l2_entry_pos(fd, hc->a);
	uint64_t e = get_be(fd, pos, 8);
	unsigned x = 62 - (cb - 8);
	uint64_t off_mask = (1ULL << x) - 1;
	uint8_t junk[256];

	assert(e & L2_COMPRESSED);
	if (hc->b) {
		put_be(fd, pos, 8, (e & ~off_mask) | hc->b);
	} else {
		/* 0xff starts a deflate block of reserved type 3 and is no
		 * zstd frame magic: both decoders must reject it. */
		memset(junk, 0xff, sizeof(junk));
		assert(pwrite(fd, junk, sizeof(junk), e & off_mask) ==
		       sizeof(junk));
	}
	close(fd);
}

/* Rewrites the header extension area with extension type a replaced by
 * (or, if absent, followed by) data/len. */
static void put_ext(const char *path, uint32_t type, const void *data,
		    uint32_t len)
{
	int fd = open_rw(path);
	uint64_t pos = get_be(fd, H_HDR_LEN, 4);
	uint8_t *area = calloc(1, CLUSTER), *out = calloc(1, CLUSTER);
	size_t n = 0, o = 0;
	bool done = false;

	assert(area && out);
	assert(pread(fd, area, CLUSTER - pos, pos) == (ssize_t)(CLUSTER - pos));
	for (;;) {
		uint32_t t = (uint32_t)area[n] << 24 | area[n + 1] << 16 |
			     area[n + 2] << 8 | area[n + 3];
		uint32_t l = (uint32_t)area[n + 4] << 24 |
			     area[n + 5] << 16 | area[n + 6] << 8 | area[n + 7];
		uint32_t padded = (l + 7) & ~7u;

		if (t == 0 || t == type) {
			if (!done) {
				memcpy(out + o, area + n, 8);
				out[o] = type >> 24, out[o + 1] = type >> 16;
				out[o + 2] = type >> 8, out[o + 3] = type;
				out[o + 4] = len >> 24, out[o + 5] = len >> 16;
				out[o + 6] = len >> 8, out[o + 7] = len;
				memcpy(out + o + 8, data, len);
				o += 8 + ((len + 7) & ~7u);
				done = true;
			}
			if (t == 0)
				break;
		} else {
			memcpy(out + o, area + n, 8 + padded);
			o += 8 + padded;
		}
		n += 8 + padded;
		assert(n + 8 <= CLUSTER - pos);
	}
	assert(o + 8 <= CLUSTER - pos);
	memset(out + o, 0, 8); /* end of the extension area */
	assert(pwrite(fd, out, o + 8, pos) == (ssize_t)(o + 8));
	free(area);
	free(out);
	close(fd);
}

/* Adds an incompatible-feature name for bit a to the feature name table
 * and sets that bit: the refusal must use the name. */
static void named_feature(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);
	uint64_t pos = get_be(fd, H_HDR_LEN, 4);
	uint8_t tab[48 * 32];
	uint32_t len;

	/* The table qemu-img writes is the first extension. */
	assert(get_be(fd, pos, 4) == EXT_FEATURES);
	len = get_be(fd, pos + 4, 4);
	assert(len % 48 == 0 && len + 48 <= sizeof(tab));
	assert(pread(fd, tab, len, pos + 8) == len);
	memset(tab + len, 0, 48);
	tab[len] = 0; /* incompatible */
	tab[len + 1] = (uint8_t)hc->a;
	memcpy(tab + len + 2, "frobnicated clusters", 20);
	put_be(fd, H_INCOMPAT, 8, get_be(fd, H_INCOMPAT, 8) | 1ULL << hc->a);
	close(fd);
	put_ext(path, EXT_FEATURES, tab, len + 48);
}

/* The external data file name becomes the string at (char *)a. */
static void data_file_name(const char *path, const struct hcase *hc)
{
	const char *name = (const char *)(uintptr_t)hc->a;

	put_ext(path, EXT_DATA_FILE, name, strlen(name));
}

/* Entry 0 of the first snapshot's L1 table becomes b. */
static void set_snap_l1(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);
	uint64_t sn = get_be(fd, H_SNAP_OFF, 8);

	put_be(fd, get_be(fd, sn + S_L1_OFF, 8), 8, hc->b);
	close(fd);
}

/* Adds a full-disk-encryption header pointer extension; with b, also
 * sets crypt_method b. */
static void fde_ext(const char *path, const struct hcase *hc)
{
	uint8_t d[16] = { 0 };
	int fd;

	d[5] = 0x08; /* offset 0x80000: cluster aligned, where LUKS lives */
	d[14] = 0x02; /* 512 bytes */
	put_ext(path, EXT_FDE, d, sizeof(d));
	if (hc->b) {
		fd = open_rw(path);
		put_be(fd, H_CRYPT, 4, hc->b);
		close(fd);
	}
}

/* The length field of the first header extension becomes b. */
static void ext_len(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);

	put_be(fd, get_be(fd, H_HDR_LEN, 4) + 4, 4, hc->b);
	close(fd);
}

/* The file is cut to b bytes. */
static void cut(const char *path, const struct hcase *hc)
{
	assert(truncate(path, (off_t)hc->b) == 0);
}

/* header_length becomes a, and the file is cut to b bytes, before the
 * end of the header it claims. */
static void short_header(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);

	put_be(fd, H_HDR_LEN, 4, hc->a);
	close(fd);
	assert(truncate(path, (off_t)hc->b) == 0);
}

/* compression_type becomes b; with a, the compression type incompatible
 * bit (3) is set as well. */
static void comp_type(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);

	put_be(fd, H_COMP_TYPE, 1, hc->b);
	if (hc->a)
		put_be(fd, H_INCOMPAT, 8, get_be(fd, H_INCOMPAT, 8) | 1 << 3);
	close(fd);
}

/* Replaces the backing file name with the string at (char *)a. */
static void backing_name(const char *path, const struct hcase *hc)
{
	const char *name = (const char *)(uintptr_t)hc->a;
	char *abs = NULL;
	int fd = open_rw(path);
	uint64_t off = get_be(fd, H_BACKING_OFF, 8);

	if (strncmp(name, "ABS:", 4) == 0)
		name = abs = xasprintf("%s/%s", dir, name + 4);
	assert(off != 0 && off + strlen(name) <= CLUSTER);
	assert(pwrite(fd, name, strlen(name), off) == (ssize_t)strlen(name));
	put_be(fd, H_BACKING_SIZE, 4, strlen(name));
	close(fd);
	free(abs);
}

/* path backs onto b.qcow2, which backs onto path (a == 1: path backs
 * onto itself). */
static void backing_loop(const char *path, const struct hcase *hc)
{
	const char *slash = strrchr(path, '/');
	int dlen = (int)(slash - path);

	unlink(path);
	if (hc->a) {
		run("qemu-img create -q -f qcow2 -u -b '%s' -F qcow2 '%s' 1G",
		    slash + 1, path);
		return;
	}
	run("cd '%.*s' && qemu-img create -q -f qcow2 -u -b '%s' -F qcow2 "
	    "loop-b.qcow2 1G && qemu-img create -q -f qcow2 -u "
	    "-b loop-b.qcow2 -F qcow2 '%s' 1G",
	    dlen, path, slash + 1, slash + 1);
}

/* path heads a chain of a + 1 backing files (each names the next). */
static void deep_chain(const char *path, const struct hcase *hc)
{
	const char *slash = strrchr(path, '/');
	int dlen = (int)(slash - path);

	unlink(path);
	run("cd '%.*s' && qemu-img create -q -f qcow2 deep%" PRIu64 ".qcow2 1M"
	    " && for i in $(seq %" PRIu64 " -1 1); do qemu-img create -q "
	    "-f qcow2 -u -b deep$i.qcow2 -F qcow2 deep$((i - 1)).qcow2 1M; "
	    "done && mv deep0.qcow2 '%s'",
	    dlen, path, hc->a, hc->a, slash + 1);
}

/* The extended L2 bitmap (second half of the entry) of guest offset a
 * becomes b; with w == 1 the first half (the descriptor) is zeroed too. */
static void set_l2_bitmap(const char *path, const struct hcase *hc)
{
	int fd = open_rw(path);
	unsigned cb = get_be(fd, H_CLUSTER_BITS, 4);
	uint64_t l1_off = get_be(fd, H_L1_OFF, 8);
	uint64_t g = hc->a;
	/* Extended entries are 16 bytes: an L2 table holds 2^(cb - 4). */
	uint64_t l1_idx = g >> (cb + cb - 4);
	uint64_t l2_idx = (g >> cb) & ((1ULL << (cb - 4)) - 1);
	uint64_t l2_off = get_be(fd, l1_off + 8 * l1_idx, 8) & L1_OFF_MASK;
	uint64_t pos = l2_off + 16 * l2_idx;

	assert(l2_off != 0);
	assert(get_be(fd, H_INCOMPAT, 8) & (1 << 4));
	if (hc->w == 1)
		put_be(fd, pos, 8, 0);
	put_be(fd, pos + 8, 8, hc->b);
	close(fd);
}

static void make_dir(const char *path, const struct hcase *hc)
{
	unlink(path);
	assert(mkdir(path, 0755) == 0);
}

static void make_fifo(const char *path, const struct hcase *hc)
{
	unlink(path);
	assert(mkfifo(path, 0644) == 0);
}

static void make_unreadable(const char *path, const struct hcase *hc)
{
	assert(chmod(path, 0) == 0);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* ---- checks on images that open --------------------------------------- */

static void expect_chunk(struct img *img, const struct chunk *c, bool bad,
			 const char *name)
{
	static uint8_t buf[CLUSTER];
	int ret = img_pread(img, buf, sizeof(buf), c->off);

	if (bad) {
		if (ret != -EIO) {
			fprintf(stderr, "%s: read at 0x%" PRIx64 ": want -EIO, "
				"got %d\n", name, c->off, ret);
			exit(1);
		}
		return;
	}
	if (ret != 0) {
		fprintf(stderr, "%s: read at 0x%" PRIx64 ": want 0, got %d\n",
			name, c->off, ret);
		exit(1);
	}
	for (size_t i = 0; i < sizeof(buf); i++) {
		if (buf[i] != c->byte) {
			fprintf(stderr, "%s: byte 0x%" PRIx64 " is 0x%02x, "
				"want 0x%02x\n", name, c->off + i, buf[i],
				c->byte);
			exit(1);
		}
	}
}

/* The chunks inside the damaged span fail with -EIO (twice: an error is
 * not cached as data), and all others still read their pattern. */
static void check_eio(struct img *img, const struct hcase *hc)
{
	uint64_t start = hc->bad_off & ~(hc->bad_span - 1);

	for (int pass = 0; pass < 2; pass++) {
		for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++) {
			const struct chunk *c = &chunks[i];
			bool bad = c->off >= start &&
				   c->off < start + hc->bad_span;

			expect_chunk(img, c, bad, hc->name);
		}
	}
}

/* Every chunk reads its pattern (through the backing file, too). */
static void check_reads(struct img *img, const struct hcase *hc)
{
	for (size_t i = 0; i < sizeof(chunks) / sizeof(chunks[0]); i++)
		expect_chunk(img, &chunks[i], false, hc->name);
}

/* Probed as raw: the whole file is the disk. */
static void check_raw(struct img *img, const struct hcase *hc)
{
	struct img_info info;
	struct stat st;

	assert(stat(img_path(img), &st) == 0);
	assert(img_get_info(img, &info) == 0);
	assert(strcmp(info.format, "raw") == 0);
	assert(img_size(img) == (uint64_t)st.st_size);
}

/* The snapshot opens; where its own L1 is broken reads fail with -EIO,
 * and the active layer still reads everything. */
static void check_snap_eio(struct img *img, const struct hcase *hc)
{
	struct img_snapshot *list = NULL;
	struct img_err err = { 0 };
	struct img *snap = NULL;
	size_t nb = 0;

	assert(img_snapshot_list(img, &list, &nb) == 0 && nb == 1);
	if (img_snapshot_open(img, list[0].id, &snap, &err) != 0) {
		fprintf(stderr, "%s: snapshot open: \"%s\"\n", hc->name,
			err.msg);
		exit(1);
	}
	check_eio(snap, hc);
	img_close(snap);
	img_snapshot_list_free(list, nb);
	check_reads(img, hc);
}

static void check_corrupt_ro(struct img *img, const struct hcase *hc)
{
	struct img_info info;

	assert(img_is_read_only(img));
	assert(img_get_info(img, &info) == 0);
	assert(strcmp(info.format, "qcow2") == 0);
	assert(info.qcow2.corrupt);
	check_reads(img, hc);
}

/* A write into a cluster whose damaged entry reads as EIO fails with EIO
 * too, marks the image corrupt (the handle turns read-only), and reads
 * of the range still fail: the write path gives the read path's verdict
 * and never fills the cluster from the image file's first bytes. */
static void check_write_eio(struct img *img, const struct hcase *hc)
{
	uint8_t buf[512];

	memset(buf, 0x5a, sizeof(buf));
	assert(img_pwrite(img, buf, sizeof(buf), hc->bad_off + 512) == -EIO);
	assert(img_corrupt_reason(img) != NULL);
	assert(img_pwrite(img, buf, sizeof(buf), 0) == -EROFS);
	assert(img_pread(img, buf, sizeof(buf), hc->bad_off) == -EIO);
	assert(img_pread(img, buf, sizeof(buf), hc->bad_off + 512) == -EIO);
}

static void check_dirty(struct img *img, const struct hcase *hc)
{
	struct img_info info;

	assert(img_get_info(img, &info) == 0);
	assert(info.qcow2.dirty && !info.qcow2.corrupt);
	check_reads(img, hc);
}

static bool msg_names(const char *msg, const char *path, const char *words)
{
	char lmsg[IMG_ERR_MSG_MAX], word[64];
	const char *p = words;

	if (path && !strstr(msg, path))
		return false;
	for (size_t i = 0; i < sizeof(lmsg); i++) {
		lmsg[i] = (char)tolower((unsigned char)msg[i]);
		if (!msg[i])
			break;
	}
	lmsg[sizeof(lmsg) - 1] = '\0';
	while (*p) {
		size_t n = strcspn(p, "|");

		assert(n < sizeof(word));
		for (size_t i = 0; i < n; i++)
			word[i] = (char)tolower((unsigned char)p[i]);
		word[n] = '\0';
		if (strstr(lmsg, word))
			return true;
		p += n + (p[n] == '|');
	}
	return false;
}

/* A snapshot whose disk size (2^62) is far beyond what its L1 table
 * maps: the driver may refuse it (-EINVAL), or open it and then answer
 * block status for the unmapped rest in a few extents and read it as
 * zeroes, in bounded time. Found by fuzz-qcow2 (tests/fuzz/regress/
 * timeout-snapshot-disk-size-huge-*): block status stepped one L2 range
 * at a time past the end of the L1 table, ~2^33 steps here. */
static void check_snap_bounded(struct img *img, const struct hcase *hc)
{
	struct img_snapshot *list = NULL;
	struct img_err err = { 0 };
	struct img *snap = NULL;
	struct img_extent ext;
	uint64_t off = 0, size;
	static uint8_t buf[4096];
	double t0 = now();
	size_t nb = 0;
	int ret, steps = 0;

	assert(img_snapshot_list(img, &list, &nb) == 0 && nb == 1);
	ret = img_snapshot_open(img, list[0].id, &snap, &err);
	img_snapshot_list_free(list, nb);
	if (ret == -EINVAL && msg_names(err.msg, img_path(img), hc->msg))
		return;
	if (ret != 0) {
		fprintf(stderr, "%s: snapshot open: %d \"%s\"\n", hc->name,
			ret, err.msg);
		exit(1);
	}
	size = img_size(snap);
	while (off < size && steps++ < 64) {
		assert(img_block_status(snap, off, size - off, &ext) == 0);
		off += ext.len;
	}
	if (off < size || now() - t0 > 2.0) {
		fprintf(stderr, "%s: block status reached 0x%" PRIx64 " of 0x%"
			PRIx64 " in %d extents, %.1f s\n", hc->name, off, size,
			steps, now() - t0);
		exit(1);
	}
	assert(img_pread(snap, buf, sizeof(buf), size - sizeof(buf)) == 0);
	for (size_t i = 0; i < sizeof(buf); i++)
		assert(buf[i] == 0);
	img_close(snap);
}

/* A snapshot whose own metadata is broken: the image may refuse at open
 * (a driver that validates snapshots eagerly) or when the snapshot is
 * opened, both with -EINVAL; reading the active layer is unaffected. The
 * listing already says why (unreadable: the open's message without the
 * image path), so info can show it before anything opens the snapshot. */
static void check_snap_open_fails(struct img *img, const struct hcase *hc)
{
	struct img_snapshot *list = NULL;
	struct img_err err = { 0 };
	struct img *snap = NULL;
	size_t nb = 0;
	int ret;

	check_reads(img, hc);
	assert(img_snapshot_list(img, &list, &nb) == 0);
	assert(nb == 1);
	ret = img_snapshot_open(img, list[0].id, &snap, &err);
	if (ret != -EINVAL || !msg_names(err.msg, img_path(img), hc->msg)) {
		fprintf(stderr, "%s: snapshot open: want -EINVAL naming '%s', "
			"got %d \"%s\"\n", hc->name, hc->msg, ret, err.msg);
		exit(1);
	}
	if (!list[0].unreadable ||
	    strcmp(list[0].unreadable, img_err_reason(&err, img)) != 0) {
		fprintf(stderr, "%s: listing says \"%s\", open says \"%s\"\n",
			hc->name, list[0].unreadable ? list[0].unreadable : "",
			err.msg);
		exit(1);
	}
	img_snapshot_list_free(list, nb);
}

/* ---- the table ------------------------------------------------------ */

#define Q IMG_FORMAT_QCOW2
#define HDR(off, width, val) .make = set_hdr, .a = (off), .w = (width), \
	.b = (val)
#define BAD(errno_, words) .want = (errno_), .msg = (words)
#define EIO_AT(off, span) .after = check_eio, .bad_off = (off), \
	.bad_span = (span)

static const struct hcase cases[] = {
	/* Magic and version. */
	{ "bad magic, probed: opens as raw", "plain", HDR(H_MAGIC, 4, 0x514649fa),
	  .after = check_raw },
	{ "bad magic, explicit qcow2", "plain", HDR(H_MAGIC, 4, 0x514649fa),
	  .fmt = Q, BAD(-EINVAL, "magic|not a qcow2") },
	{ "version 1", "plain", HDR(H_VERSION, 4, 1), .fmt = Q,
	  BAD(-EINVAL, "version") },
	{ "version 4", "plain", HDR(H_VERSION, 4, 4), .fmt = Q,
	  BAD(-EINVAL, "version") },
	/* Cluster size: 512 B .. 2 MiB. */
	{ "cluster_bits 8", "plain", HDR(H_CLUSTER_BITS, 4, 8), .fmt = Q,
	  BAD(-EINVAL, "cluster") },
	{ "cluster_bits 22", "plain", HDR(H_CLUSTER_BITS, 4, 22), .fmt = Q,
	  BAD(-EINVAL, "cluster") },
	{ "cluster_bits 63", "plain", HDR(H_CLUSTER_BITS, 4, 63), .fmt = Q,
	  BAD(-EINVAL, "cluster") },
	/* Virtual size the L1 table cannot cover. */
	{ "size 2^63", "plain", HDR(H_SIZE, 8, 1ULL << 63), .fmt = Q,
	  BAD(-EINVAL, "size|too big|too large|L1") },
	{ "size 2^64-1", "plain", HDR(H_SIZE, 8, UINT64_MAX), .fmt = Q,
	  BAD(-EINVAL, "size|too big|too large|L1") },
	{ "size 1 TiB with a 2-entry L1", "plain", HDR(H_SIZE, 8, 1ULL << 40),
	  .fmt = Q, BAD(-EINVAL, "L1|size") },
	/* header_length. */
	{ "header_length 100 (< 104)", "plain", HDR(H_HDR_LEN, 4, 100),
	  .fmt = Q, BAD(-EINVAL, "header") },
	{ "header_length 108 (not a multiple of 8)", "plain",
	  HDR(H_HDR_LEN, 4, 108), .fmt = Q, BAD(-EINVAL, "header") },
	{ "header_length past the cluster", "plain",
	  HDR(H_HDR_LEN, 4, CLUSTER + 8), .fmt = Q, BAD(-EINVAL, "header") },
	{ "header_length past end of file", "plain", .make = short_header,
	  .a = 4096, .b = 2048, .fmt = Q,
	  BAD(-EINVAL, "header|end of|past|short|truncat|beyond") },
	/* L1 table. */
	{ "l1_size 2^31", "plain", HDR(H_L1_SIZE, 4, 1ULL << 31), .fmt = Q,
	  BAD(-EINVAL, "L1") },
	{ "L1 table past end of file", "plain", HDR(H_L1_OFF, 8, 1ULL << 40),
	  .fmt = Q, BAD(-EINVAL, "L1") },
	{ "L1 table unaligned", "plain", .make = add_hdr, .a = H_L1_OFF,
	  .w = 8, .b = 512, .fmt = Q, BAD(-EINVAL, "L1") },
	{ "L1 table overlapping the header", "plain", HDR(H_L1_OFF, 8, 0),
	  .fmt = Q, BAD(-EINVAL, "L1") },
	{ "l1_size 0 for a 1 GiB disk", "plain", HDR(H_L1_SIZE, 4, 0),
	  .fmt = Q, BAD(-EINVAL, "L1") },
	/* Refcount table and width. */
	{ "refcount table past end of file", "plain",
	  HDR(H_RT_OFF, 8, 1ULL << 40), .fmt = Q, BAD(-EINVAL, "refcount") },
	{ "refcount table unaligned", "plain", .make = add_hdr, .a = H_RT_OFF,
	  .w = 8, .b = 512, .fmt = Q, BAD(-EINVAL, "refcount") },
	{ "refcount table of 2^32-1 clusters", "plain",
	  HDR(H_RT_CLUSTERS, 4, 0xffffffff), .fmt = Q,
	  BAD(-EINVAL, "refcount") },
	{ "refcount_order 7", "plain", HDR(H_REFCOUNT_ORDER, 4, 7), .fmt = Q,
	  BAD(-EINVAL, "refcount") },
	/* Snapshot table. */
	{ "2^20 snapshots", "snap", HDR(H_NB_SNAP, 4, 1 << 20), .fmt = Q,
	  BAD(-EINVAL, "snapshot") },
	{ "snapshot table past end of file", "snap",
	  HDR(H_SNAP_OFF, 8, 1ULL << 40), .fmt = Q, BAD(-EINVAL, "snapshot") },
	{ "snapshot table unaligned", "snap", .make = add_hdr,
	  .a = H_SNAP_OFF, .w = 8, .b = 8, .fmt = Q,
	  BAD(-EINVAL, "snapshot") },
	{ "snapshot extra data size 2^32-1", "snap", .make = set_snap,
	  .a = S_EXTRA_SIZE, .w = 4, .b = 0xffffffff, .fmt = Q,
	  BAD(-EINVAL, "snapshot") },
	{ "snapshot id and name 64 KiB each", "snap", .make = set_snap,
	  .a = S_ID_SIZE, .w = 4, .b = 0xffffffff, .fmt = Q,
	  BAD(-EINVAL, "snapshot") },
	{ "snapshot L1 table past end of file", "snap", .make = set_snap,
	  .a = S_L1_OFF, .w = 8, .b = 1ULL << 40, .fmt = Q,
	  .msg = "L1|snapshot", .after = check_snap_open_fails },
	{ "snapshot L1 table unaligned", "snap", .make = set_snap,
	  .a = S_L1_OFF, .w = 8, .b = 0x30200, .fmt = Q,
	  .msg = "L1|snapshot", .after = check_snap_open_fails },
	{ "snapshot disk size 2^63", "snap", .make = set_snap,
	  .a = S_DISK_SIZE, .w = 8, .b = 1ULL << 63, .fmt = Q,
	  .msg = "L1|snapshot|size", .after = check_snap_open_fails },
	{ "snapshot disk size 2^62 (fuzz: block status hang)", "snap",
	  .make = set_snap, .a = S_DISK_SIZE, .w = 8, .b = 1ULL << 62,
	  .fmt = Q, .msg = "L1|snapshot|size",
	  .after = check_snap_bounded },
	{ "snapshot l1_size 2^31", "snap", .make = set_snap, .a = S_L1_SIZE,
	  .w = 4, .b = 1ULL << 31, .fmt = Q, .msg = "L1|snapshot",
	  .after = check_snap_open_fails },
	{ "snapshot L1 entry: L2 table past end of file", "snap",
	  .make = set_snap_l1, .b = 1ULL << 40, .fmt = Q,
	  .after = check_snap_eio, .bad_off = 0, .bad_span = 512 * MiB },
	/* Header extensions. */
	{ "extension length 2^32-8", "plain", .make = ext_len,
	  .b = 0xfffffff8, .fmt = Q, BAD(-EINVAL, "extension") },
	{ "extension running past the cluster", "plain", .make = ext_len,
	  .b = CLUSTER - 112, .fmt = Q, BAD(-EINVAL, "extension") },
	{ "unknown incompatible bit 40, named", "plain",
	  .make = named_feature, .a = 40, .fmt = Q,
	  BAD(-EINVAL, "frobnicated clusters") },
	{ "unknown incompatible bit 40, unnamed", "plain",
	  .make = or_incompat, .b = 1ULL << 40, .fmt = Q,
	  BAD(-EINVAL, "feature") },
	{ "external data file bit without a name", "plain",
	  .make = or_incompat, .b = 1 << 2, .fmt = Q,
	  BAD(-EINVAL, "data file|data-file|data_file") },
	{ "extended L2 bit with 512 B clusters", "c512",
	  .make = or_incompat, .b = 1 << 4, .fmt = Q,
	  BAD(-EINVAL, "extended|subcluster|cluster") },
	{ "external data file, backing=deny", "datafile", .fmt = Q,
	  .pol = IMG_BACKING_DENY, BAD(-EPERM, "backing=follow") },
	{ "external data file outside the folder", "datafile",
	  .make = data_file_name, .a = (uintptr_t)"../outside.qcow2",
	  .fmt = Q, BAD(-EPERM, "backing=follow") },
	{ "external data file inside the folder", "datafile", .fmt = Q },
	{ "compression type 2", "plain", .make = comp_type, .a = 1, .b = 2,
	  .fmt = Q, BAD(-EINVAL, "compression") },
	{ "zstd compression type without its incompatible bit", "plain",
	  .make = comp_type, .b = 1, .fmt = Q,
	  BAD(-EINVAL, "compression") },
	/* Encryption is refused however it is announced. */
	{ "AES encryption (crypt_method 1)", "plain", HDR(H_CRYPT, 4, 1),
	  .fmt = Q, BAD(-EINVAL, "encrypt") },
	{ "LUKS encryption (crypt_method 2)", "plain", HDR(H_CRYPT, 4, 2),
	  .fmt = Q, BAD(-EINVAL, "encrypt") },
	{ "LUKS with its FDE header extension", "plain", .make = fde_ext,
	  .b = 2, .fmt = Q, BAD(-EINVAL, "encrypt") },
	{ "FDE header extension, crypt_method 0", "plain", .make = fde_ext,
	  .fmt = Q, BAD(-EINVAL, "encrypt") },
	/* Backing file name and policy. */
	{ "backing name offset past the cluster", "over",
	  HDR(H_BACKING_OFF, 8, 2 * CLUSTER), .fmt = Q,
	  BAD(-EINVAL, "backing") },
	{ "backing name offset 2^63", "over",
	  HDR(H_BACKING_OFF, 8, 1ULL << 63), .fmt = Q,
	  BAD(-EINVAL, "backing") },
	{ "backing name of 1024 bytes", "over", HDR(H_BACKING_SIZE, 4, 1024),
	  .fmt = Q, BAD(-EINVAL, "backing") },
	{ "backing name of 2^32-1 bytes", "over",
	  HDR(H_BACKING_SIZE, 4, 0xffffffff), .fmt = Q,
	  BAD(-EINVAL, "backing") },
	{ "backing file missing", "over", .make = backing_name,
	  .a = (uintptr_t)"nonexistent.qcow2", .fmt = Q,
	  BAD(-ENOENT, "nonexistent.qcow2") },
	{ "backing a -> b -> a", "plain", .make = backing_loop, .fmt = Q,
	  BAD(-ELOOP, "loop") },
	{ "backing a -> a", "plain", .make = backing_loop, .a = 1, .fmt = Q,
	  BAD(-ELOOP, "loop") },
	{ "backing=deny", "over", .fmt = Q, .pol = IMG_BACKING_DENY,
	  BAD(-EPERM, "backing=follow") },
	{ "backing outside the folder, backing=local", "over",
	  .make = backing_name, .a = (uintptr_t)"../outside.qcow2",
	  .fmt = Q, BAD(-EPERM, "backing=follow") },
	{ "backing outside the folder, backing=follow", "over",
	  .make = backing_name, .a = (uintptr_t)"ABS:outside.qcow2",
	  .fmt = Q, .pol = IMG_BACKING_FOLLOW, .after = check_reads },
	{ "backing chain 70 deep", "plain", .make = deep_chain, .a = 70,
	  .fmt = Q, BAD(-ELOOP, "deep|depth|chain"), .chain_msg = true },
	/* Corrupt metadata met while reading: -EIO there, data elsewhere. */
	{ "L2 entry past end of file", "plain", .make = set_l2, .a = 0,
	  .b = L2_COPIED | 1ULL << 40, .fmt = Q, EIO_AT(0, CLUSTER) },
	{ "L2 entry unaligned", "plain", .make = set_l2, .a = 1 * MiB,
	  .w = 1, .b = 512, .fmt = Q, EIO_AT(1 * MiB, CLUSTER) },
	{ "L1 entry: L2 table unaligned", "plain", .make = set_l1, .a = 0,
	  .w = 1, .b = 512, .fmt = Q, EIO_AT(0, 512 * MiB) },
	{ "L1 entry: L2 table past end of file", "plain", .make = set_l1,
	  .a = 0, .b = L2_COPIED | 1ULL << 40, .fmt = Q,
	  EIO_AT(0, 512 * MiB) },
	{ "compressed descriptor past end of file", "plain",
	  .make = break_compressed, .a = 2 * MiB, .b = 1ULL << 40, .fmt = Q,
	  EIO_AT(2 * MiB, CLUSTER) },
	{ "garbage deflate data", "plain", .make = break_compressed,
	  .a = 2 * MiB, .fmt = Q, EIO_AT(2 * MiB, CLUSTER) },
	{ "v2 image with a zero flag in L2", "v2", .make = set_l2, .a = 0,
	  .w = 1, .b = 1, .fmt = Q, EIO_AT(0, CLUSTER) },
	{ "extended L2: subcluster both allocated and zero", "el2",
	  .make = set_l2_bitmap, .a = 1 * MiB, .b = UINT64_MAX, .fmt = Q,
	  EIO_AT(1 * MiB, CLUSTER) },
	{ "extended L2: allocated subclusters without a cluster", "el2",
	  .make = set_l2_bitmap, .a = 1 * MiB, .w = 1, .b = 0xffffffff,
	  .fmt = Q, EIO_AT(1 * MiB, CLUSTER) },
	{ "extended L2: a write into allocated subclusters without a cluster",
	  "el2", .make = set_l2_bitmap, .a = 1 * MiB, .w = 1, .b = 0xffffffff,
	  .fmt = Q, .rw = true, .after = check_write_eio, .bad_off = 1 * MiB },
	{ "extended L2: a write into a subcluster both allocated and zero",
	  "el2", .make = set_l2_bitmap, .a = 1 * MiB, .b = UINT64_MAX,
	  .fmt = Q, .rw = true, .after = check_write_eio, .bad_off = 1 * MiB },
	{ "garbage zstd data", "zstd", .make = break_compressed, .a = 2 * MiB,
	  .fmt = Q, EIO_AT(2 * MiB, CLUSTER) },
	/* The file itself. */
	{ "truncated to its header cluster", "plain", .make = cut,
	  .b = CLUSTER, .fmt = Q,
	  BAD(-EINVAL, "L1|refcount|end of|past|truncat|short|beyond") },
	{ "truncated inside the header", "plain", .make = cut, .b = 50,
	  BAD(-EINVAL, "header|end of|short|truncat|small") },
	{ "zero-length file, probed: raw of size 0", "plain", .make = cut,
	  .b = 0, .after = check_raw },
	{ "zero-length file, explicit qcow2", "plain", .make = cut, .b = 0,
	  .fmt = Q, BAD(-EINVAL, "header|end of|short|truncat|small|magic|empty") },
	{ "a directory", NULL, .make = make_dir, BAD(-EISDIR, "directory") },
	{ "a FIFO", NULL, .make = make_fifo,
	  BAD(-EINVAL, "regular file|not a") },
	{ "an unreadable file", "plain", .make = make_unreadable,
	  BAD(-EACCES, "permission") },
	/* Header bits. */
	{ "corrupt bit, read-write", "plain", .make = or_incompat, .b = 2,
	  .fmt = Q, .rw = true, BAD(-EROFS, "corrupt") },
	{ "corrupt bit, read-only", "plain", .make = or_incompat, .b = 2,
	  .fmt = Q, .after = check_corrupt_ro },
	{ "dirty bit, read-only", "plain", .make = or_incompat, .b = 1,
	  .fmt = Q, .after = check_dirty },
};

/* ---- running a case ---------------------------------------------------- */

/* Caps the address space at what the process uses now plus 512 MiB. */
static void limit_memory(void)
{
	unsigned long pages;
	struct rlimit rl;
	FILE *f;

	if (UNDER_ASAN)
		return;
	f = fopen("/proc/self/statm", "r");
	assert(f && fscanf(f, "%lu", &pages) == 1);
	fclose(f);
	rl.rlim_cur = rl.rlim_max =
		(rlim_t)pages * sysconf(_SC_PAGESIZE) + 512 * MiB;
	assert(setrlimit(RLIMIT_AS, &rl) == 0);
}

/* Runs in the child: exit 0 on pass, 1 with a line on stderr on failure. */
static void run_case(const struct hcase *hc, const char *path)
{
	struct img_open_opts opts = {
		.format = hc->fmt,
		.read_only = !hc->rw,
		.backing = hc->pol,
		.cache_bytes = 256 * KiB,
	};
	struct img_err err = { 0 };
	struct img *img = NULL;
	double t0;
	int ret;

	if (hc->make == make_unreadable && getuid() == 0) {
		/* root reads mode-000 files; drop to nobody for this one. */
		if (setgid(65534) != 0 || setuid(65534) != 0) {
			fprintf(stderr, "%s: cannot drop root\n", hc->name);
			exit(1);
		}
	}
	limit_memory();
	alarm(UNDER_ASAN ? 180 : 90);
	t0 = now();
	ret = img_open(path, &opts, &img, &err);
	if (now() - t0 > 2.0) {
		fprintf(stderr, "%s: img_open took %.1f s\n", hc->name,
			now() - t0);
		exit(1);
	}
	if (ret == -EINVAL && hc->after == check_snap_open_fails &&
	    msg_names(err.msg, path, hc->msg))
		exit(3); /* refused at open: allowed, see there */
	if (ret != hc->want) {
		fprintf(stderr, "%s: img_open: want %d (%s), got %d \"%s\"\n",
			hc->name, hc->want, strerror(-hc->want), ret, err.msg);
		exit(1);
	}
	if (ret < 0) {
		char *folder = strndup(path, strrchr(path, '/') - path);

		if (err.errnum != ret ||
		    !msg_names(err.msg, hc->chain_msg ? folder : path,
			       hc->msg)) {
			fprintf(stderr, "%s: message \"%s\" (errnum %d) must "
				"name %s and one of '%s'\n", hc->name, err.msg,
				err.errnum, path, hc->msg);
			exit(1);
		}
		printf("          %s: %d \"%s\"\n", hc->name, ret, err.msg);
		free(folder);
		exit(0);
	}
	if (hc->after)
		hc->after(img, hc);
	img_close(img);
	exit(0);
}

static void make_bases(void)
{
	static const char *const writes =
		"-c 'write -q -P 0xaa 0 64k' -c 'write -q -P 0xbb 1M 64k' "
		"-c 'write -q -c -P 0xcc 2M 64k' -c 'write -q -P 0xdd 600M 64k'";

	run("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=64k "
	    "base-plain.qcow2 1G && qemu-io -f qcow2 %s base-plain.qcow2",
	    dir, writes);
	run("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=64k,"
	    "compression_type=zstd base-zstd.qcow2 1G && "
	    "qemu-io -f qcow2 %s base-zstd.qcow2", dir, writes);
	run("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=64k,"
	    "compat=0.10 base-v2.qcow2 1G && "
	    "qemu-io -f qcow2 %s base-v2.qcow2", dir, writes);
	run("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=64k,"
	    "extended_l2=on base-el2.qcow2 1G && "
	    "qemu-io -f qcow2 %s base-el2.qcow2", dir, writes);
	run("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=512 "
	    "base-c512.qcow2 1G && qemu-io -f qcow2 %s base-c512.qcow2",
	    dir, writes);
	/* The data file is named relative to the image: one copy next to
	 * the base, one next to the cases. Compressed writes are not
	 * allowed there. */
	run("cd '%s' && qemu-img create -q -f qcow2 -o cluster_size=64k,"
	    "data_file=data.raw base-datafile.qcow2 1G && qemu-io -f qcow2 "
	    "-c 'write -q -P 0xaa 0 64k' base-datafile.qcow2 && "
	    "mkdir -p c && cp data.raw c/", dir);
	run("cd '%s' && cp base-plain.qcow2 base-snap.qcow2 && "
	    "qemu-img snapshot -c s1 base-snap.qcow2", dir);
	/* The overlay backs onto lower.qcow2 in the same folder and holds
	 * nothing itself, so reads show the backing file's chunks. */
	run("cd '%s' && cp base-plain.qcow2 lower.qcow2 && "
	    "cp base-plain.qcow2 outside.qcow2 && "
	    "qemu-img create -q -f qcow2 -o cluster_size=64k -b lower.qcow2 "
	    "-F qcow2 base-over.qcow2 1G", dir);
	/* Cases live one folder down, so that ../outside.qcow2 is outside
	 * the folder of the opened image. */
	run("mkdir -p '%s/c' && cp '%s/lower.qcow2' '%s/c/'", dir, dir, dir);
	/* The unreadable case runs as nobody, who must reach the file. */
	run("chmod 0755 '%s' '%s/c'", dir, dir);
}

/* The most of a file the replay feeds to the fuzz target: far more than
 * any fuzz input (run.sh caps them at 512 KiB) or hostile case, and far
 * less than the 1 GiB data file of the data_file case, whose replay in
 * full spent a minute hashing and copying zeroes (the fuzz target's
 * work grows with the input's length, not imgfmt's). */
#define REPLAY_MAX_BYTES (8u << 20)

/* Runs the fuzz target's function on file (at most its first
 * REPLAY_MAX_BYTES), as qcow2 and probed, in a child. Returns false (and
 * says why) if it crashed or hung. */
static bool replay_one(const char *file)
{
	struct stat st;
	int status;
	pid_t pid;

	if (stat(file, &st) != 0 || !S_ISREG(st.st_mode))
		return true;
	fflush(stdout);
	pid = fork();
	assert(pid >= 0);
	if (pid == 0) {
		size_t len = st.st_size < REPLAY_MAX_BYTES
				     ? (size_t)st.st_size
				     : REPLAY_MAX_BYTES;
		uint8_t *data = malloc(len ? len : 1);
		int fd = open(file, O_RDONLY);

		assert(data && fd >= 0);
		assert(read(fd, data, len) == (ssize_t)len);
		close(fd);
		/* Generous: this guards a hang, and a loaded machine runs
		 * the cases several times slower than an idle one. */
		alarm(UNDER_ASAN ? 120 : 60);
		fuzz_format = IMG_FORMAT_QCOW2;
		fuzz_qcow2_one(data, len);
		fuzz_format = IMG_FORMAT_PROBE;
		fuzz_qcow2_one(data, len);
		free(data);
		scratch_cleanup();
		exit(0);
	}
	assert(waitpid(pid, &status, 0) == pid);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return true;
	printf("FAIL fuzz replay of %s: %s %d\n", file,
	       WIFSIGNALED(status) ? "signal" : "exit status",
	       WIFSIGNALED(status) ? WTERMSIG(status) : WEXITSTATUS(status));
	return false;
}

/* Replays every regular file in folder; returns the number of failures. */
static size_t replay_dir(const char *folder, size_t *nb_r)
{
	struct dirent **names;
	size_t failed = 0;
	int n = scandir(folder, &names, NULL, alphasort);

	for (int i = 0; i < n; i++) {
		char *file = xasprintf("%s/%s", folder, names[i]->d_name);

		if (names[i]->d_name[0] != '.') {
			failed += !replay_one(file);
			++*nb_r;
		}
		free(file);
		free(names[i]);
	}
	if (n >= 0)
		free(names);
	return failed;
}

int main(void)
{
	size_t nb = sizeof(cases) / sizeof(cases[0]), failed = 0;

	if (system("qemu-img --version >/dev/null 2>&1 && "
		   "qemu-io --version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "qemu-img or qemu-io missing: skipped\n");
		return 77;
	}
	assert(mkdtemp(dir));
	make_bases();

	for (size_t i = 0; i < nb; i++) {
		const struct hcase *hc = &cases[i];
		char *path = xasprintf("%s/c/case%02zu.qcow2", dir, i);
		char *from = xasprintf("%s/base-%s.qcow2", dir,
				       hc->base ? hc->base : "plain");
		int st;
		pid_t pid;

		copy_file(from, path);
		if (hc->make)
			hc->make(path, hc);
		fflush(stdout);
		fflush(stderr);
		pid = fork();
		assert(pid >= 0);
		if (pid == 0)
			run_case(hc, path);
		assert(waitpid(pid, &st, 0) == pid);
		if (WIFEXITED(st) && WEXITSTATUS(st) == 0) {
			printf("ok   %2zu %s\n", i, hc->name);
		} else if (WIFEXITED(st) && WEXITSTATUS(st) == 3) {
			printf("ok   %2zu %s (refused at open)\n", i, hc->name);
		} else {
			failed++;
			if (WIFSIGNALED(st))
				printf("FAIL %2zu %s: killed by signal %d%s\n",
				       i, hc->name, WTERMSIG(st),
				       WTERMSIG(st) == SIGALRM ? " (hang)"
							       : "");
			else
				printf("FAIL %2zu %s\n", i, hc->name);
		}
		free(path);
		free(from);
	}
	printf("%zu of %zu hostile cases passed\n", nb - failed, nb);

	{
		const char *src = getenv("SRCDIR");
		size_t nb_files = 0, replay_failed;
		char *folder = xasprintf("%s/c", dir);

		replay_failed = replay_dir(folder, &nb_files);
		free(folder);
		if (src) {
			folder = xasprintf("%s/corpus", dir);
			run("'%s/tests/fuzz/make-corpus.sh' '%s' >/dev/null",
			    src, folder);
			replay_failed += replay_dir(folder, &nb_files);
			free(folder);
			folder = xasprintf("%s/tests/fuzz/regress", src);
			replay_failed += replay_dir(folder, &nb_files);
			free(folder);
		}
		printf("%zu of %zu files replayed through the fuzz target "
		       "cleanly%s\n", nb_files - replay_failed, nb_files,
		       src ? "" : " (SRCDIR unset: no corpus)");
		failed += replay_failed;
	}
	if (!failed)
		run("rm -rf '%s'", dir);
	return failed ? 1 : 0;
}
