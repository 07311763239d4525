/* test-vdi.c: the VDI driver reads what qemu-img writes and refuses or
 * contains corrupt images.
 *
 * Differential: dynamic and static (static=on) images of odd sizes from
 * qemu-img create -f vdi, written with qemu-io (patterns, holes, the last
 * sector), compared with `qemu-img convert -O raw` over the whole disk
 * and in odd pieces, with img_size equal to qemu-img's virtual size and
 * block status equal to `qemu-img map --output=json`. Then hand-made
 * corruptions of the header and the block map, each asserting its error
 * and message (or -EIO on the damaged block alone), several threads
 * reading at once, and the fuzz-vdi regress inputs. Skips (77) without
 * qemu-img or qemu-io.
 */
#undef NDEBUG
#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-vdi.c"
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

static char dir[] = "/tmp/test-vdi-XXXXXX";
#include "workdir.h"

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

static void patch_le32(const char *name, uint64_t off, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, v >> 8, v >> 16, v >> 24 };
	patch(name, off, b, 4);
}

static void patch_le64(const char *name, uint64_t off, uint64_t v)
{
	patch_le32(name, off, (uint32_t)v);
	patch_le32(name, off + 4, (uint32_t)(v >> 32));
}

static uint32_t peek_le32(const char *name, uint64_t off)
{
	uint8_t b[4];
	peek(name, off, b, 4);
	return (uint32_t)b[3] << 24 | b[2] << 16 | b[1] << 8 | b[0];
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
	struct img *img = open_fmt(name, IMG_FORMAT_VDI, IMG_BACKING_LOCAL,
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

static void compare_raw(const char *name)
{
	struct img *img = open_ok(name, IMG_FORMAT_VDI);
	uint8_t *want;
	size_t len;
	char raw[128];

	snprintf(raw, sizeof(raw), "%s.raw", name);
	sh("qemu-img convert -f vdi -O raw %s %s", name, raw);
	want = slurp(raw, &len);
	compare_with(img, want, len);
	img_close(img);
	free(want);
}

/* Block status agrees with qemu-img map --output=json: an entry with an
 * offset is data stored there, one without reads as zeroes. */
static void compare_map(const char *name)
{
	char *cmd, line[512];
	struct img *img = open_ok(name, IMG_FORMAT_VDI);
	FILE *f;
	int nb = 0;

	assert(asprintf(&cmd, "cd %s && qemu-img map -f vdi --output=json %s",
			dir, name) > 0);
	f = popen(cmd, "r");
	assert(f);
	while (fgets(line, sizeof(line), f)) {
		uint64_t start, length, qoff = 0, pos;
		char *p = strstr(line, "\"start\": ");
		bool stored;

		if (!p)
			continue;
		start = strtoull(p + 9, NULL, 10);
		length = strtoull(strstr(line, "\"length\": ") + 10, NULL, 10);
		stored = (p = strstr(line, "\"offset\": ")) != NULL;
		if (stored)
			qoff = strtoull(p + 10, NULL, 10);
		for (pos = start; pos < start + length;) {
			struct img_extent ext;

			assert(img_block_status(img, pos, start + length - pos,
						&ext) == 0);
			assert(ext.len > 0 && ext.len <= start + length - pos);
			if (stored) {
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

static uint64_t qemu_size(const char *name)
{
	size_t n;
	uint8_t *t;
	uint64_t v;
	char sz[128];

	snprintf(sz, sizeof(sz), "%s.size", name);
	sh("qemu-img info -f vdi --output=json %s | grep -o "
	   "'\"virtual-size\": [0-9]*' | grep -o '[0-9]*$' > %s", name, sz);
	t = slurp(sz, &n);
	t[n] = 0;
	v = strtoull((char *)t, NULL, 10);
	free(t);
	return v;
}

static void test_qemu_images(void)
{
	static const uint64_t sizes[] = { 10000000, 5 * 1048576 + 3 * 512,
					  33554432 + 7 * 512, 67108864 };

	for (int st = 0; st < 2; st++)
		for (size_t z = 0; z < 4; z++) {
			char name[64];
			uint64_t vsize;
			struct img *img;
			struct img_info info;

			snprintf(name, sizeof(name), "q-%s-%zu.vdi",
				 st ? "static" : "dynamic", z);
			sh("qemu-img create -q -f vdi -o static=%s %s %" PRIu64,
			   st ? "on" : "off", name, sizes[z]);
			vsize = qemu_size(name);
			/* out of order: block 3 is stored before block 0 */
			sh("qemu-io -f vdi -c 'write -P 0xa5 3000k 2100k' "
			   "-c 'write -P 0x5a 0 5k' "
			   "-c 'write -P 0x33 %" PRIu64 " 512' %s",
			   vsize - 512, name);
			compare_raw(name);
			compare_map(name);
			img = open_ok(name, IMG_FORMAT_PROBE);
			assert(img_size(img) == vsize);
			assert(img_get_info(img, &info) == 0);
			assert(strcmp(info.format, "vdi") == 0);
			assert(img_is_read_only(img));
			img_close(img);
		}
	/* Every block written: reads coalesce consecutive blocks. */
	sh("qemu-img create -q -f vdi full.vdi 8M");
	sh("qemu-io -f vdi -c 'write -P 0x77 0 8M' full.vdi");
	compare_raw("full.vdi");
	compare_map("full.vdi");
}

static void test_read_only(void)
{
	struct img_open_opts opts = { .format = IMG_FORMAT_PROBE };
	char *p = path_of("q-dynamic-0.vdi");
	struct img_err err;
	struct img *img;
	uint8_t buf[512] = { 0 };

	assert(img_open(p, &opts, &img, &err) == 0);
	assert(img_is_read_only(img));
	assert(img_pwrite(img, buf, 512, 0) == -EROFS);
	img_close(img);
	free(p);
}

static void copy(const char *src, const char *dst)
{
	sh("cp %s %s", src, dst);
}

static void test_corruptions(void)
{
	const char *base = "c-base.vdi";
	uint8_t buf[4096];
	uint32_t bmap;

	sh("qemu-img create -q -f vdi %s 10M", base);
	sh("qemu-io -f vdi -c 'write -P 0x44 0 3M' %s", base);
	bmap = peek_le32(base, 0x154);

	/* 1. signature wrong */
	copy(base, "c1.vdi");
	patch_le32("c1.vdi", 0x40, 0x12345678);
	expect_refused("c1.vdi", -EINVAL, "not a VDI");
	/* 2. version 1.0 (and probed: refused by name as a VDI) */
	copy(base, "c2.vdi");
	patch_le32("c2.vdi", 0x44, 0x00010000);
	expect_refused("c2.vdi", -EINVAL, "version 1.0");
	{
		struct img_err err;
		int ret;
		assert(!open_fmt("c2.vdi", IMG_FORMAT_PROBE, IMG_BACKING_LOCAL,
				 &ret, &err));
		assert(ret == -EMEDIUMTYPE && strstr(err.msg, "VDI images"));
	}
	/* 3. differencing type */
	copy(base, "c3.vdi");
	patch_le32("c3.vdi", 0x4c, 4);
	expect_refused("c3.vdi", -EINVAL, "image type 4");
	/* 4. a parent UUID */
	copy(base, "c4.vdi");
	patch("c4.vdi", 0x1b8, "0123456789abcdef", 16);
	expect_refused("c4.vdi", -EINVAL, "parent UUID");
	/* 5. sector size */
	copy(base, "c5.vdi");
	patch_le32("c5.vdi", 0x168, 4096);
	expect_refused("c5.vdi", -EINVAL, "sector size 4096");
	/* 6-8. block size 0, not a power of two, huge */
	{
		static const uint32_t bad[] = { 0, 3u << 20, 1u << 31 };
		for (int i = 0; i < 3; i++) {
			char name[32];
			snprintf(name, sizeof(name), "c6-%d.vdi", i);
			copy(base, name);
			patch_le32(name, 0x178, bad[i]);
			expect_refused(name, -EINVAL, "block size");
		}
	}
	/* 9. extra data per block */
	copy(base, "c9.vdi");
	patch_le32("c9.vdi", 0x17c, 512);
	expect_refused("c9.vdi", -EINVAL, "extra data");
	/* 10. block map offset not sector-aligned */
	copy(base, "c10.vdi");
	patch_le32("c10.vdi", 0x154, bmap + 1);
	expect_refused("c10.vdi", -EINVAL, "sector-aligned");
	/* 11. block map past the end */
	copy(base, "c11.vdi");
	patch_le32("c11.vdi", 0x154, 0xfffffe00u);
	expect_refused("c11.vdi", -EINVAL, "block map at");
	/* 12. a block map larger than the limit */
	copy(base, "c12.vdi");
	patch_le32("c12.vdi", 0x180, 0xffffffffu);
	expect_refused("c12.vdi", -EINVAL, "larger than");
	/* 13. disk size of 2^63 */
	copy(base, "c13.vdi");
	patch_le64("c13.vdi", 0x170, 1ull << 63);
	expect_refused("c13.vdi", -EINVAL, "does not fit");
	/* 14. disk size of 2^64 - 1 (rounding up would wrap) */
	copy(base, "c14.vdi");
	patch_le64("c14.vdi", 0x170, ~0ull);
	expect_refused("c14.vdi", -EINVAL, "does not fit");
	/* 15. data offset past the end, and inside the header */
	copy(base, "c15.vdi");
	patch_le32("c15.vdi", 0x158, 0x7ffffe00u);
	expect_refused("c15.vdi", -EINVAL, "data offset");
	copy(base, "c15b.vdi");
	patch_le32("c15b.vdi", 0x158, 0);
	expect_refused("c15b.vdi", -EINVAL, "data offset");
	/* 16. truncated below the header */
	sh("head -c 300 %s > c16.vdi", base);
	expect_refused("c16.vdi", -EINVAL, "too small");
	/* 17. a map entry past the end: that block alone gives EIO */
	copy(base, "c17.vdi");
	patch_le32("c17.vdi", bmap + 4, 0x00ffffff);
	{
		struct img *img = open_ok("c17.vdi", IMG_FORMAT_VDI);
		struct img_extent ext;
		assert(img_pread(img, buf, 4096, 0) == 0 && buf[0] == 0x44);
		assert(img_pread(img, buf, 4096, 1u << 20) == -EIO);
		assert(img_pread(img, buf, 4096, 2u << 20) == 0);
		assert(buf[0] == 0x44);
		assert(img_pread(img, buf, 4096, 5u << 20) == 0 && !buf[0]);
		assert(img_block_status(img, 1u << 20, 4096, &ext) == -EIO);
		assert(img_block_status(img, 0, 10u << 20, &ext) == 0);
		assert(ext.kind == IMG_EXTENT_DATA && ext.len == 1u << 20);
		img_close(img);
	}
	/* 18. a discarded entry reads as zeroes, status zero */
	copy(base, "c18.vdi");
	patch_le32("c18.vdi", bmap, 0xfffffffeu);
	{
		struct img *img = open_ok("c18.vdi", IMG_FORMAT_VDI);
		struct img_extent ext;
		assert(img_pread(img, buf, 4096, 0) == 0);
		for (int i = 0; i < 4096; i++)
			assert(buf[i] == 0);
		assert(img_block_status(img, 0, 4096, &ext) == 0);
		assert(ext.kind == IMG_EXTENT_ZERO);
		img_close(img);
	}
	/* 19. truncated data: stored blocks past the new end give EIO */
	copy(base, "c19.vdi");
	sh("truncate -s 1500000 c19.vdi");
	{
		struct img *img = open_ok("c19.vdi", IMG_FORMAT_VDI);
		assert(img_pread(img, buf, 512, 0) == 0);
		assert(img_pread(img, buf, 512, 2u << 20) == -EIO);
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

		assert(img_pread(r->img, buf, n, off) == 0);
		assert(memcmp(buf, r->want + off, n) == 0);
	}
	free(buf);
	return NULL;
}

static void test_threads(void)
{
	struct img *img = open_ok("q-dynamic-2.vdi", IMG_FORMAT_VDI);
	size_t len;
	uint8_t *want = slurp("q-dynamic-2.vdi.raw", &len);
	pthread_t t[4];
	struct reader r[4];

	for (int i = 0; i < 4; i++) {
		r[i] = (struct reader){ img, want, len, (unsigned)i + 7 };
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
	   src, "vdi");
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
	test_corruptions();
	test_threads();
	{
		size_t nb_seeds = replay_seeds();
		assert(!getenv("SRCDIR") || nb_seeds >= 6);
	}
	printf("replayed %zu regress inputs\n",
	       for_each_regress_file("fuzz-vdi", replay));
	sh("rm -rf %s", dir);
	return 0;
}
