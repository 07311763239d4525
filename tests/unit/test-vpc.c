/* test-vpc.c: the VHD driver reads what qemu-img writes, follows
 * differencing parents, and refuses or contains corrupt images.
 *
 * Differential: each case builds an image with qemu-img create -f vpc
 * (fixed and dynamic, force_size on and off, odd sizes) and qemu-io
 * writes (patterns, holes, the last sector), then compares img_pread of
 * the whole disk with `qemu-img convert -O raw`, img_size with what
 * convert produced, and block status with `qemu-img map --output=json`.
 * Differencing disks (which qemu-img cannot make) are made by patching a
 * dynamic VHD's type, parent UUID, locators and sector bitmaps; their
 * expected bytes are computed sector by sector from the parent's and the
 * child's raw conversions. Then hand-made corruptions, each asserting its
 * error and message, several threads reading at once, and the fuzz
 * regress inputs. Skips (77) when qemu-img or qemu-io is missing.
 */
#undef NDEBUG
#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-vpc.c"
#include "regress.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char dir[] = "/tmp/test-vpc-XXXXXX";
#include "workdir.h"

static uint64_t file_size(const char *name)
{
	char *p = path_of(name);
	struct stat st;

	assert(stat(p, &st) == 0);
	free(p);
	return (uint64_t)st.st_size;
}

static void patch(const char *name, uint64_t off, const void *buf, size_t len)
{
	char *p = path_of(name);
	int fd = open(p, O_WRONLY);

	assert(fd >= 0);
	assert(pwrite(fd, buf, len, (off_t)off) == (ssize_t)len);
	close(fd);
	free(p);
}

static void peek(const char *name, uint64_t off, void *buf, size_t len)
{
	char *p = path_of(name);
	int fd = open(p, O_RDONLY);

	assert(fd >= 0);
	assert(pread(fd, buf, len, (off_t)off) == (ssize_t)len);
	close(fd);
	free(p);
}

static void patch_be32(const char *name, uint64_t off, uint32_t v)
{
	uint8_t b[4] = { v >> 24, v >> 16, v >> 8, v };
	patch(name, off, b, 4);
}

static void patch_be64(const char *name, uint64_t off, uint64_t v)
{
	patch_be32(name, off, (uint32_t)(v >> 32));
	patch_be32(name, off + 4, (uint32_t)v);
}

static uint32_t peek_be32(const char *name, uint64_t off)
{
	uint8_t b[4];
	peek(name, off, b, 4);
	return (uint32_t)b[0] << 24 | b[1] << 16 | b[2] << 8 | b[3];
}

/* Recomputes the checksum of the structure of len bytes at off whose
 * checksum field is at ck. */
static void fix_checksum(const char *name, uint64_t off, size_t len, size_t ck)
{
	uint8_t b[1024];
	uint32_t sum = 0;

	peek(name, off, b, len);
	for (size_t i = 0; i < len; i++)
		if (i < ck || i >= ck + 4)
			sum += b[i];
	patch_be32(name, off + ck, ~sum);
}

static void fix_footers(const char *name)
{
	uint8_t head[512];

	fix_checksum(name, 0, 512, 64);
	peek(name, 0, head, 512);
	patch(name, file_size(name) - 512, head, 512);
}

static struct img *open_fmt(const char *name, enum img_format fmt,
			    enum img_backing_policy pol, int *ret_r,
			    struct img_err *err)
{
	struct img_open_opts opts = { .format = fmt, .read_only = true,
				      .backing = pol };
	char *p = path_of(name);
	struct img *img = NULL;

	*ret_r = img_open(p, &opts, &img, err);
	free(p);
	return *ret_r == 0 ? img : NULL;
}

static struct img *open_ok(const char *name, enum img_format fmt)
{
	struct img_err err;
	int ret;
	struct img *img = open_fmt(name, fmt, IMG_BACKING_LOCAL, &ret, &err);

	if (!img) {
		fprintf(stderr, "open %s: %s\n", name, err.msg);
		abort();
	}
	return img;
}

/* Opening name fails with errnum and a message containing what. */
static void expect_refused(const char *name, int errnum, const char *what)
{
	struct img_err err;
	int ret;
	struct img *img = open_fmt(name, IMG_FORMAT_VPC, IMG_BACKING_LOCAL,
				   &ret, &err);

	if (img || ret != errnum || !strstr(err.msg, what) ||
	    !strstr(err.msg, name) || strchr(err.msg, '\n')) {
		fprintf(stderr, "%s: want %d '%s', got %d '%s'\n", name,
			errnum, what, ret, img ? "(opened)" : err.msg);
		abort();
	}
}

static void compare_with(struct img *img, const uint8_t *want, size_t len)
{
	uint8_t *got = malloc(len + 1);

	assert(img_size(img) == len);
	assert(img_pread(img, got, len, 0) == 0);
	for (size_t i = 0; i < len; i++)
		if (got[i] != want[i]) {
			fprintf(stderr, "%s: byte %zu is 0x%02x, want 0x%02x\n",
				img_path(img), i, got[i], want[i]);
			abort();
		}
	/* Odd pieces across block and sector edges. */
	for (uint64_t off = 1; off < len; off += 999983) {
		size_t n = (size_t)MIN((uint64_t)300007, len - off);
		assert(img_pread(img, got, n, off) == 0);
		assert(memcmp(got, want + off, n) == 0);
	}
	free(got);
}

/* Whole-disk img_pread of name (as fmt) equals qemu-img convert -O raw. */
static void compare_raw(const char *name, enum img_format fmt)
{
	struct img *img = open_ok(name, fmt);
	uint8_t *want;
	size_t len;
	char raw[128];

	snprintf(raw, sizeof(raw), "%s.raw", name);
	sh("qemu-img convert -f vpc -O raw %s %s", name, raw);
	want = slurp(raw, &len);
	compare_with(img, want, len);
	img_close(img);
	free(want);
}

/* Block status agrees with qemu-img map --output=json, entry by entry. */
static void compare_map(const char *name)
{
	char *cmd, line[512];
	struct img *img = open_ok(name, IMG_FORMAT_VPC);
	FILE *f;
	int nb = 0;

	assert(asprintf(&cmd, "cd %s && qemu-img map -f vpc --output=json %s",
			dir, name) > 0);
	f = popen(cmd, "r");
	assert(f);
	while (fgets(line, sizeof(line), f)) {
		uint64_t start, length, qoff = 0, pos;
		char *p = strstr(line, "\"start\": ");
		bool data;

		(void)data;
		if (!p)
			continue;
		start = strtoull(p + 9, NULL, 10);
		length = strtoull(strstr(line, "\"length\": ") + 10, NULL, 10);
		data = strstr(line, "\"data\": true") != NULL;
		if ((p = strstr(line, "\"offset\": ")))
			qoff = strtoull(p + 10, NULL, 10);
		for (pos = start; pos < start + length;) {
			struct img_extent ext;

			assert(img_block_status(img, pos, start + length - pos,
						&ext) == 0);
			assert(ext.len > 0 && ext.len <= start + length - pos);
			/* qemu passes a fixed disk's file holes through as
			 * zero, with their offset: data stored in the file. */
			if (data || strstr(line, "\"offset\": ")) {
				assert(ext.kind == IMG_EXTENT_DATA);
				assert(ext.host_fd == img_fd(img));
				assert(ext.host_off == qoff + (pos - start));
			} else {
				assert(ext.kind == IMG_EXTENT_ZERO);
			}
			pos += ext.len;
		}
		nb++;
	}
	assert(pclose(f) == 0);
	assert(nb > 0);
	free(cmd);
	img_close(img);
}

static void test_qemu_images(void)
{
	static const char *const subformats[] = { "fixed", "dynamic" };
	static const char *const force[] = { "off", "on" };
	static const uint64_t sizes[] = { 10000000, 5 * 1048576 + 512 * 3,
					  33554432 + 7 * 512, 123456789 };

	for (size_t f = 0; f < 2; f++)
		for (size_t o = 0; o < 2; o++)
			for (size_t z = 0; z < 4; z++) {
				char name[64];
				uint64_t vsize;
				struct img *img;

				snprintf(name, sizeof(name), "q-%s-%s-%zu.vhd",
					 subformats[f], force[o], z);
				sh("qemu-img create -q -f vpc -o subformat=%s,"
				   "force_size=%s %s %" PRIu64, subformats[f],
				   force[o], name, sizes[z]);
				sh("qemu-img info -f vpc --output=json %s | "
				   "grep -o '\"virtual-size\": [0-9]*' | "
				   "grep -o '[0-9]*$' > %s.size", name, name);
				{
					size_t n;
					char sz[80];
					uint8_t *t;

					snprintf(sz, sizeof(sz), "%s.size", name);
					t = slurp(sz, &n);
					t[n] = 0;
					vsize = strtoull((char *)t, NULL, 10);
					free(t);
				}
				sh("qemu-io -f vpc -c 'write -P 0x5a 0 5k' "
				   "-c 'write -P 0xa5 3000k 2100k' "
				   "-c 'write -P 0x33 %" PRIu64 " 512' %s",
				   vsize - 512, name);
				compare_raw(name, IMG_FORMAT_VPC);
				img = open_ok(name, IMG_FORMAT_VPC);
				assert(img_size(img) == vsize);
				img_close(img);
				compare_map(name);
				/* Dynamic VHDs start with "conectix" and probe
				 * like fixed ones, which only end with it. */
				img = open_ok(name, IMG_FORMAT_PROBE);
				{
					struct img_info info;
					assert(img_get_info(img, &info) == 0);
					assert(strcmp(info.format, "vpc") == 0);
					assert(img_is_read_only(img));
				}
				img_close(img);
			}
}

static uint64_t qemu_virtual_size(const char *name)
{
	char sz[80];
	size_t n;
	uint8_t *t;
	uint64_t v;

	snprintf(sz, sizeof(sz), "%s.size", name);
	sh("qemu-img info -f vpc --output=json %s | grep -o "
	   "'\"virtual-size\": [0-9]*' | grep -o '[0-9]*$' > %s", name, sz);
	t = slurp(sz, &n);
	t[n] = 0;
	v = strtoull((char *)t, NULL, 10);
	free(t);
	return v;
}

/* QEMU's size rule: current_size for the creators that size by it and
 * for the maximum geometry, CHS otherwise. Each creator app, with a
 * current_size that differs from the geometry, against qemu-img info. */
static void test_size_rule(void)
{
	static const char *const apps[] = { "win ", "d2v ", "CTXS", "qem2",
					    "vpc ", "qemu", "vbox" };
	static const uint8_t max_geo[4] = { 0xff, 0xff, 16, 255 };

	for (size_t i = 0; i < sizeof(apps) / sizeof(apps[0]) + 2; i++) {
		char name[32];
		struct img *img;

		snprintf(name, sizeof(name), "size-%zu.vhd", i);
		sh("cp q-dynamic-off-0.vhd %s", name);
		patch_be64(name, 48, 9999872); /* CHS says 10027008 */
		if (i < sizeof(apps) / sizeof(apps[0]))
			patch(name, 28, apps[i], 4);
		else if (i == sizeof(apps) / sizeof(apps[0]))
			patch(name, 28, "tap\0", 4);
		else
			patch(name, 56, max_geo, 4);
		fix_footers(name);
		img = open_ok(name, IMG_FORMAT_VPC);
		assert(img_size(img) == qemu_virtual_size(name));
		assert(img_size(img) == (i < 4 || i >= 7 ? 9999872u : 10027008u));
		img_close(img);
	}
}

/* An image opened read-write still refuses writes: the driver reads. */
static void test_read_only(void)
{
	struct img_open_opts opts = { .format = IMG_FORMAT_PROBE };
	char *p = path_of("q-fixed-off-0.vhd");
	struct img_err err;
	struct img *img;
	uint8_t buf[512] = { 0 };

	assert(img_open(p, &opts, &img, &err) == 0);
	assert(img_is_read_only(img));
	assert(img_pwrite(img, buf, 512, img_size(img) - 512) == -EROFS);
	img_close(img);
	free(p);
}

/* Differencing: child.vhd over parent.vhd. Makes both from qemu-img, then
 * patches the child into a differencing disk whose locator is written by
 * add_locator. Bitmaps: the first stored block keeps only its even
 * sectors; the others stay all-ones. */
#define DIFF_SIZE (8u << 20)

static void make_parent(const char *parent)
{
	sh("qemu-img create -q -f vpc -o subformat=dynamic,force_size=on '%s' %u", parent,
	   DIFF_SIZE);
	sh("qemu-io -f vpc -c 'write -P 0x11 0 8M' '%s'", parent);
	sh("qemu-io -f vpc -c 'write -z 1M 64k' '%s'", parent);
}

static void make_pair(const char *parent, const char *child)
{
	uint8_t uuid[16];
	uint32_t bat0;

	sh("qemu-img create -q -f vpc -o subformat=dynamic,force_size=on %s %u", child,
	   DIFF_SIZE);
	sh("qemu-io -f vpc -c 'write -P 0x22 4k 64k' -c 'write -P 0x33 5M 1k'"
	   " %s", child);
	sh("qemu-img convert -f vpc -O raw %s %s.raw", child, child);
	/* type 4, parent UUID = the parent's footer UUID */
	patch_be32(child, 60, 4);
	peek(parent, 68, uuid, 16);
	patch(child, 512 + 40, uuid, 16);
	/* first block: sectors 1, 3, 5, ... fall to the parent */
	bat0 = peek_be32(child, 3 * 512);
	assert(bat0 != 0xFFFFFFFFu);
	{
		uint8_t bits[512];
		memset(bits, 0xaa, sizeof(bits));
		patch(child, (uint64_t)bat0 * 512, bits, sizeof(bits));
	}
	fix_checksum(child, 512, 1024, 36);
	fix_footers(child);
}

/* Writes data as locator slot i of name (code, data at the end of the
 * file, then the footer again after it). */
static void add_locator(const char *name, unsigned i, const char *code,
			const void *data, uint32_t len)
{
	uint64_t end = file_size(name) - 512;
	uint8_t foot[512], loc[24] = { 0 };
	uint32_t space = (len + 511) / 512 * 512;
	uint8_t *pad = calloc(1, space);

	peek(name, 0, foot, 512);
	memcpy(pad, data, len);
	patch(name, end, pad, space);
	patch(name, end + space, foot, 512);
	memcpy(loc, code, 4);
	loc[4] = space >> 24; loc[5] = space >> 16; loc[6] = space >> 8;
	loc[7] = (uint8_t)space;
	loc[8] = len >> 24; loc[9] = len >> 16; loc[10] = len >> 8;
	loc[11] = (uint8_t)len;
	for (int b = 0; b < 8; b++)
		loc[16 + b] = (uint8_t)(end >> (56 - 8 * b));
	patch(name, 512 + 576 + 24 * i, loc, 24);
	fix_checksum(name, 512, 1024, 36);
	free(pad);
}

static uint32_t utf16le(const char *s, uint8_t *out)
{
	uint32_t n = 0;

	for (; *s; s++) {
		out[n++] = (uint8_t)*s;
		out[n++] = 0;
	}
	return n;
}

/* The bytes child (over parent) must read, computed sector by sector. */
static uint8_t *expected_diff(const char *parent, const char *child)
{
	size_t plen, clen;
	char pr[128], cr[128];
	uint8_t *praw, *craw, *want = malloc(DIFF_SIZE);
	uint32_t bat0 = peek_be32(child, 3 * 512);

	snprintf(pr, sizeof(pr), "%s.raw", parent);
	snprintf(cr, sizeof(cr), "%s.raw", child);
	sh("qemu-img convert -f vpc -O raw '%s' '%s'", parent, pr);
	praw = slurp(pr, &plen);
	craw = slurp(cr, &clen);
	assert(plen == DIFF_SIZE && clen == DIFF_SIZE);
	for (uint64_t sec = 0; sec < DIFF_SIZE / 512; sec++) {
		uint64_t blk = sec * 512 / (2u << 20);
		uint32_t e = peek_be32(child, 3 * 512 + 4 * blk);
		bool own = e != 0xFFFFFFFFu;

		if (own && e == bat0)
			own = sec % 2 == 0;
		memcpy(want + sec * 512, (own ? craw : praw) + sec * 512, 512);
	}
	free(praw);
	free(craw);
	return want;
}

static void check_diff(const char *parent, const char *child,
		       enum img_backing_policy pol)
{
	uint8_t *want = expected_diff(parent, child);
	struct img_err err;
	int ret;
	struct img *img = open_fmt(child, IMG_FORMAT_PROBE, pol, &ret, &err);
	struct img_extent ext;

	if (!img) {
		fprintf(stderr, "open %s: %s\n", child, err.msg);
		abort();
	}
	assert(img_backing(img));
	compare_with(img, want, DIFF_SIZE);
	/* sector 0: own data; sector 1: the parent's, data at depth 1 */
	assert(img_block_status(img, 0, DIFF_SIZE, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.depth == 0 && ext.len == 512);
	assert(img_block_status(img, 512, DIFF_SIZE - 512, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.depth == 1 && ext.len == 512);
	/* block 1 is not stored in the child: the parent's */
	assert(img_block_status(img, 2u << 20, 4096, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.depth == 1);
	{
		struct img_info info;
		assert(img_get_info(img, &info) == 0);
		assert(info.backing_file);
	}
	img_close(img);
	free(want);
}

static void test_differencing(void)
{
	uint8_t buf[2048];
	uint32_t n;
	char *abs_parent = path_of("parent.vhd"), *url;

	make_parent("parent.vhd");
	make_parent("par ent.vhd");
	/* W2ru, relative, as Hyper-V writes it */
	make_pair("parent.vhd", "child-w2ru.vhd");
	n = utf16le(".\\parent.vhd", buf);
	add_locator("child-w2ru.vhd", 0, "W2ru", buf, n);
	check_diff("parent.vhd", "child-w2ru.vhd", IMG_BACKING_LOCAL);

	/* W2ku with a drive letter is skipped, W2ku absolute is used */
	make_pair("parent.vhd", "child-w2ku.vhd");
	n = utf16le("C:\\vms\\parent.vhd", buf);
	add_locator("child-w2ku.vhd", 0, "W2ku", buf, n);
	n = utf16le(abs_parent, buf);
	add_locator("child-w2ku.vhd", 1, "W2ku", buf, n);
	check_diff("parent.vhd", "child-w2ku.vhd", IMG_BACKING_LOCAL);

	/* MacX: a file URL, percent-encoded */
	make_pair("par ent.vhd", "child-macx.vhd");
	assert(asprintf(&url, "file://%s/par%%20ent.vhd", dir) > 0);
	add_locator("child-macx.vhd", 0, "MacX", url, (uint32_t)strlen(url));
	check_diff("par ent.vhd", "child-macx.vhd", IMG_BACKING_LOCAL);
	free(url);

	/* A relative W2ru that does not exist falls to the next locator. */
	make_pair("parent.vhd", "child-two.vhd");
	n = utf16le("missing.vhd", buf);
	add_locator("child-two.vhd", 0, "W2ru", buf, n);
	n = utf16le(abs_parent, buf);
	add_locator("child-two.vhd", 1, "W2ku", buf, n);
	check_diff("parent.vhd", "child-two.vhd", IMG_BACKING_LOCAL);

	/* Policy: backing=deny refuses the parent, naming the option. */
	{
		struct img_err err;
		int ret;
		assert(!open_fmt("child-w2ru.vhd", IMG_FORMAT_VPC,
				 IMG_BACKING_DENY, &ret, &err));
		assert(ret == -EPERM && strstr(err.msg, "backing="));
	}
	/* A parent outside the folder needs backing=follow. */
	sh("mkdir -p sub && cp child-w2ku.vhd sub/child.vhd");
	{
		struct img_err err;
		int ret;
		struct img *img;
		assert(!open_fmt("sub/child.vhd", IMG_FORMAT_VPC,
				 IMG_BACKING_LOCAL, &ret, &err));
		assert(ret == -EPERM && strstr(err.msg, "backing=follow"));
		img = open_fmt("sub/child.vhd", IMG_FORMAT_VPC,
			       IMG_BACKING_FOLLOW, &ret, &err);
		assert(img);
		img_close(img);
	}
	/* A parent that is not there. */
	make_pair("parent.vhd", "child-gone.vhd");
	n = utf16le("gone.vhd", buf);
	add_locator("child-gone.vhd", 0, "W2ru", buf, n);
	expect_refused("child-gone.vhd", -ENOENT, "not found");
	/* A parent whose UUID differs. */
	make_pair("parent.vhd", "child-uuid.vhd");
	n = utf16le("parent.vhd", buf);
	add_locator("child-uuid.vhd", 0, "W2ru", buf, n);
	patch("child-uuid.vhd", 512 + 40, "0123456789abcdef", 16);
	fix_checksum("child-uuid.vhd", 512, 1024, 36);
	expect_refused("child-uuid.vhd", -EINVAL, "UUID");
	/* A child naming itself, and two naming each other: loops. */
	make_pair("parent.vhd", "loop.vhd");
	n = utf16le("loop.vhd", buf);
	add_locator("loop.vhd", 0, "W2ru", buf, n);
	expect_refused("loop.vhd", -ELOOP, "loop");
	make_pair("parent.vhd", "loop-a.vhd");
	make_pair("parent.vhd", "loop-b.vhd");
	n = utf16le("loop-b.vhd", buf);
	add_locator("loop-a.vhd", 0, "W2ru", buf, n);
	n = utf16le("loop-a.vhd", buf);
	add_locator("loop-b.vhd", 0, "W2ru", buf, n);
	/* loop-b is itself differencing, so its parent check runs too; the
	 * chain check stops the walk. */
	{
		struct img_err err;
		int ret;
		assert(!open_fmt("loop-a.vhd", IMG_FORMAT_VPC,
				 IMG_BACKING_LOCAL, &ret, &err));
		assert(ret == -ELOOP || ret == -EINVAL);
	}
	/* Locator lengths and offsets. */
	make_pair("parent.vhd", "loc-long.vhd");
	n = utf16le("parent.vhd", buf);
	add_locator("loc-long.vhd", 0, "W2ru", buf, n);
	patch_be32("loc-long.vhd", 512 + 576 + 8, 0x7fffffff);
	fix_checksum("loc-long.vhd", 512, 1024, 36);
	expect_refused("loc-long.vhd", -EINVAL, "bytes long");
	make_pair("parent.vhd", "loc-past.vhd");
	add_locator("loc-past.vhd", 0, "W2ru", buf, n);
	patch_be64("loc-past.vhd", 512 + 576 + 16, 0xfffffffffffffe00ull);
	fix_checksum("loc-past.vhd", 512, 1024, 36);
	expect_refused("loc-past.vhd", -EINVAL, "past the end");
	free(abs_parent);
}

/* Copies src to dst and applies a corruption. */
static void copy(const char *src, const char *dst)
{
	sh("cp %s %s", src, dst);
}

static void test_corruptions(void)
{
	const char *dyn = "c-base.vhd", *fix = "c-fixed.vhd";
	uint8_t buf[4096];

	sh("qemu-img create -q -f vpc -o subformat=dynamic %s 10M", dyn);
	sh("qemu-io -f vpc -c 'write -P 0x44 0 6M' %s", dyn);
	sh("qemu-img create -q -f vpc -o subformat=fixed %s 3M", fix);

	/* 1. footer checksum wrong (QEMU refuses too) */
	copy(dyn, "c1.vhd");
	patch_be32("c1.vhd", 64, 0x12345678);
	expect_refused("c1.vhd", -EINVAL, "footer checksum");
	/* 2. fixed footer checksum wrong */
	copy(fix, "c2.vhd");
	patch_be32("c2.vhd", file_size("c2.vhd") - 512 + 64, 1);
	expect_refused("c2.vhd", -EINVAL, "footer checksum");
	/* 3. no footer anywhere */
	sh("head -c 8192 /dev/zero > c3.vhd");
	expect_refused("c3.vhd", -EINVAL, "not a VHD");
	/* 4. too small */
	sh("printf conectix > c4.vhd");
	expect_refused("c4.vhd", -EINVAL, "too small");
	/* 5. the start copy is gone, the end says dynamic */
	copy(dyn, "c5.vhd");
	patch("c5.vhd", 0, "XXXXXXXX", 8);
	expect_refused("c5.vhd", -EINVAL, "missing");
	/* 6. unknown disk type */
	copy(dyn, "c6.vhd");
	patch_be32("c6.vhd", 60, 7);
	fix_footers("c6.vhd");
	expect_refused("c6.vhd", -EINVAL, "disk type 7");
	/* 7. size of 2^63 (creator that sizes by current_size) */
	copy(dyn, "c7.vhd");
	patch("c7.vhd", 28, "qem2", 4);
	patch_be64("c7.vhd", 48, 1ull << 63);
	fix_footers("c7.vhd");
	expect_refused("c7.vhd", -EFBIG, "2040 GiB");
	/* 8. dynamic header past the end */
	copy(dyn, "c8.vhd");
	patch_be64("c8.vhd", 16, 1ull << 40);
	fix_footers("c8.vhd");
	expect_refused("c8.vhd", -EINVAL, "dynamic header");
	/* 9. dynamic header offset overflowing */
	copy(dyn, "c9.vhd");
	patch_be64("c9.vhd", 16, 0xfffffffffffffe00ull);
	fix_footers("c9.vhd");
	expect_refused("c9.vhd", -EINVAL, "past the end");
	/* 10. no cxsparse */
	copy(dyn, "c10.vhd");
	patch("c10.vhd", 512, "cxspars!", 8);
	expect_refused("c10.vhd", -EINVAL, "cxsparse");
	/* 11. dynamic header checksum wrong */
	copy(dyn, "c11.vhd");
	patch_be32("c11.vhd", 512 + 36, 0);
	expect_refused("c11.vhd", -EINVAL, "header checksum");
	/* 12-14. block size 0, not a power of two, huge */
	{
		static const uint32_t bad[] = { 0, 3u << 20, 1u << 31 };
		for (int i = 0; i < 3; i++) {
			char name[32];
			snprintf(name, sizeof(name), "c12-%d.vhd", i);
			copy(dyn, name);
			patch_be32(name, 512 + 32, bad[i]);
			fix_checksum(name, 512, 1024, 36);
			expect_refused(name, -EINVAL, "block size");
		}
	}
	/* 15. BAT with fewer entries than the disk needs */
	copy(dyn, "c15.vhd");
	patch_be32("c15.vhd", 512 + 28, 2);
	fix_checksum("c15.vhd", 512, 1024, 36);
	expect_refused("c15.vhd", -EINVAL, "entries");
	/* 16. BAT past the end */
	copy(dyn, "c16.vhd");
	patch_be64("c16.vhd", 512 + 16, 1ull << 50);
	fix_checksum("c16.vhd", 512, 1024, 36);
	expect_refused("c16.vhd", -EINVAL, "BAT at");
	/* 17. a BAT larger than the limit (512-byte blocks over 2040 GiB) */
	copy(dyn, "c17.vhd");
	patch("c17.vhd", 28, "qem2", 4);
	patch_be64("c17.vhd", 48, 2000ull << 30);
	fix_footers("c17.vhd");
	patch_be32("c17.vhd", 512 + 32, 512);
	patch_be32("c17.vhd", 512 + 28, 0xffffffffu);
	fix_checksum("c17.vhd", 512, 1024, 36);
	expect_refused("c17.vhd", -EINVAL, "larger than");
	/* 18. fixed disk whose geometry claims more than the file holds */
	copy(fix, "c18.vhd");
	{
		uint64_t foot = file_size("c18.vhd") - 512;
		uint8_t geo[4] = { 0x10, 0, 16, 63 };
		patch("c18.vhd", foot + 56, geo, 4);
		fix_checksum("c18.vhd", foot, 512, 64);
	}
	expect_refused("c18.vhd", -EINVAL, "longer than its file");
	/* 19. a BAT entry past the end: that block alone gives EIO */
	copy(dyn, "c19.vhd");
	patch_be32("c19.vhd", 3 * 512 + 4, 0x7fffffff);
	{
		struct img *img = open_ok("c19.vhd", IMG_FORMAT_VPC);
		struct img_extent ext;
		assert(img_pread(img, buf, 4096, 0) == 0);
		assert(buf[0] == 0x44);
		assert(img_pread(img, buf, 4096, 2u << 20) == -EIO);
		assert(img_pread(img, buf, 4096, (4u << 20) + 1) == 0);
		assert(img_block_status(img, 2u << 20, 4096, &ext) == -EIO);
		assert(img_block_status(img, 4u << 20, 4096, &ext) == 0);
		img_close(img);
	}
	/* 20. a BAT entry pointing into the footer at 0 */
	copy(dyn, "c20.vhd");
	patch_be32("c20.vhd", 3 * 512, 0);
	{
		struct img *img = open_ok("c20.vhd", IMG_FORMAT_VPC);
		assert(img_pread(img, buf, 512, 0) == -EIO);
		img_close(img);
	}
	/* 21. truncated file: the last blocks are gone */
	copy(dyn, "c21.vhd");
	sh("truncate -s 3M c21.vhd");
	{
		struct img *img = open_ok("c21.vhd", IMG_FORMAT_VPC);
		assert(img_pread(img, buf, 512, 0) == 0);
		assert(img_pread(img, buf, 512, 5u << 20) == -EIO);
		img_close(img);
	}
}

struct reader {
	struct img *img;
	const uint8_t *want;
	size_t len;
	unsigned seed;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint8_t *buf = malloc(1 << 20);

	for (int i = 0; i < 200; i++) {
		uint64_t off = (uint64_t)rand_r(&r->seed) % r->len;
		uint64_t want_n = (uint64_t)(rand_r(&r->seed) % (1 << 20)) + 1;
		size_t n = (size_t)MIN(want_n, r->len - off);
		int ret = img_pread(r->img, buf, n, off);

		if (ret != 0)
			fprintf(stderr, "read %zu at %" PRIu64 ": %d\n", n,
				off, ret);
		assert(ret == 0);
		assert(memcmp(buf, r->want + off, n) == 0);
	}
	free(buf);
	return NULL;
}

static void test_threads(void)
{
	struct img *img = open_ok("child-w2ru.vhd", IMG_FORMAT_VPC);
	uint8_t *want = expected_diff("parent.vhd", "child-w2ru.vhd");
	pthread_t t[4];
	struct reader r[4];

	for (int i = 0; i < 4; i++) {
		r[i] = (struct reader){ img, want, DIFF_SIZE, (unsigned)i + 1 };
		assert(pthread_create(&t[i], NULL, reader_main, &r[i]) == 0);
	}
	for (int i = 0; i < 4; i++)
		pthread_join(t[i], NULL);
	img_close(img);
	free(want);
}

static void replay(const char *path)
{
	static uint8_t data[16 << 20];
	size_t n = regress_read(path, data, sizeof(data));

	fuzz_fmt_one(data, n);
}

/* The fuzz target's seeds (vpc-vdi-seeds.py) go through it once here, so
 * a normal build runs the target's code paths too. */
static size_t replay_seeds(void)
{
	const char *src = getenv("SRCDIR");
	char path[4200];
	struct dirent *de;
	size_t nb = 0;
	DIR *d;

	if (!src)
		return 0;
	sh("mkdir -p seeds && python3 %s/tests/fuzz/vpc-vdi-seeds.py %s . seeds",
	   src, "vpc");
	snprintf(path, sizeof(path), "%s/seeds", dir);
	d = opendir(path);
	assert(d);
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/seeds/%s", dir, de->d_name);
		replay(path);
		nb++;
	}
	closedir(d);
	return nb;
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1") != 0 ||
	    system("qemu-io --version >/dev/null 2>&1") != 0)
		return 77;
	assert(mkdtemp(dir));
	test_qemu_images();
	test_read_only();
	test_size_rule();
	test_differencing();
	test_corruptions();
	test_threads();
	{
		size_t nb_seeds = replay_seeds();
		assert(!getenv("SRCDIR") || nb_seeds >= 6);
	}
	printf("replayed %zu regress inputs\n",
	       for_each_regress_file("fuzz-vpc", replay));
	sh("rm -rf %s", dir);
	return 0;
}
