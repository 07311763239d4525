/* test-vhdx.c: the VHDX driver reads what qemu-img writes, replays logs
 * in memory, follows differencing parents, and refuses damage.
 *
 * Design:
 *   - Differential: images made by qemu-img create / convert and written
 *     by qemu-io across the options (dynamic and fixed, block sizes 1, 8
 *     and 32 MiB, log sizes, block_state_zero on and off, odd virtual
 *     sizes, holes) are read whole with img_pread in odd-sized pieces and
 *     compared with `qemu-img convert -O raw`. Block status is walked
 *     over the whole disk: it must tile the disk, ZERO/HOLE extents must
 *     read as zeroes in the oracle, and DATA extents with a host offset
 *     must hold in the file exactly the oracle's bytes. (qemu-img map
 *     says "data" for every byte of a VHDX, QEMU having no VHDX block
 *     status, so it only checks that the map covers the disk.)
 *   - Log: QEMU leaves a log only when interrupted, so the test writes
 *     one by hand (crc32c() below is a bit-at-a-time CRC-32C, not the
 *     driver's table): a two-entry sequence that swaps two BAT entries,
 *     zeroes a BAT entry, overwrites a data sector and zeroes 8 KiB,
 *     plus a stale older entry that must not be applied. imgfs must read
 *     the replayed bytes without changing the file; QEMU, opening a copy
 *     read-write, replays and writes it, and convert of that copy must
 *     agree byte for byte.
 *   - Differencing: qemu-img cannot create (or read) differencing VHDX,
 *     so one is made from a dynamic image: has_parent set, a parent
 *     locator item added (relative_path with '\' separators and the
 *     parent's data write GUID as parent_linkage), block states ZERO,
 *     UNMAPPED, FULLY_PRESENT and PARTIALLY_PRESENT with a sector bitmap
 *     block. The expected disk is computed from the parent's oracle and
 *     the child's own data.
 *   - Corruptions: each copies a sound image, breaks one field (CRCs
 *     recomputed where the test wants the field itself judged), and
 *     asserts the errno and a word of the message, or -EIO on one block
 *     only with the rest of the disk intact.
 *   - Saved fuzz reproducers (tests/fuzz/regress/fuzz-vhdx/) and the
 *     corrupt files go through the fuzz target's function.
 * Skips (77) when qemu-img or qemu-io is missing.
 */
#undef NDEBUG
#include "imgfmt.h"

#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-vhdx.c"

#include "regress.h"

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
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define KiB (1024ULL)
#define MiB (1024ULL * KiB)

static char dir[] = "/tmp/test-vhdx-XXXXXX";

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char *cmd, *full;
	va_list ap;
	int ret;

	va_start(ap, fmt);
	assert(vasprintf(&cmd, fmt, ap) > 0);
	va_end(ap);
	assert(asprintf(&full, "cd %s && { %s; } >/dev/null 2>&1", dir, cmd) >
	       0);
	ret = system(full);
	if (ret != 0) {
		fprintf(stderr, "command failed (%d): %s\n", ret, cmd);
		abort();
	}
	free(cmd);
	free(full);
}

static char *path_of(const char *name)
{
	static char buf[8][512];
	static int i;

	i = (i + 1) % 8;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", dir, name);
	return buf[i];
}

static uint8_t *slurp(const char *name, size_t *len_r)
{
	int fd = open(path_of(name), O_RDONLY);
	struct stat st;
	uint8_t *buf;

	assert(fd >= 0);
	assert(fstat(fd, &st) == 0);
	buf = malloc(st.st_size ? (size_t)st.st_size : 1);
	assert(buf);
	assert(pread(fd, buf, st.st_size, 0) == st.st_size);
	close(fd);
	*len_r = (size_t)st.st_size;
	return buf;
}

/* ---- little-endian patching and CRC-32C, independent of the driver ---- */

static uint32_t crc32c(const uint8_t *p, size_t len)
{
	uint32_t crc = 0xffffffffu;

	while (len--) {
		crc ^= *p++;
		for (int k = 0; k < 8; k++)
			crc = (crc >> 1) ^ (0x82f63b78u & -(crc & 1));
	}
	return ~crc;
}

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	for (int i = 0; i < 8; i++)
		p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get32(const uint8_t *p)
{
	return p[0] | p[1] << 8 | p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
	return get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void set_crc(uint8_t *p, size_t len)
{
	put32(p + 4, 0);
	put32(p + 4, crc32c(p, len));
}

/* A whole image file in memory, edited and written back. */
struct file {
	char name[64];
	uint8_t *b;
	size_t len;
};

static struct file load(const char *name)
{
	struct file f;

	snprintf(f.name, sizeof(f.name), "%s", name);
	f.b = slurp(name, &f.len);
	return f;
}

static void store(struct file *f, const char *name)
{
	int fd = open(path_of(name), O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert(fd >= 0);
	assert(write(fd, f->b, f->len) == (ssize_t)f->len);
	close(fd);
}

static void grow(struct file *f, size_t len)
{
	if (len <= f->len)
		return;
	f->b = realloc(f->b, len);
	assert(f->b);
	memset(f->b + f->len, 0, len - f->len);
	f->len = len;
}

/* Structure offsets of a sound image (both region table copies agree). */
struct layout {
	uint64_t bat_off, meta_off;
	uint64_t item_off[5]; /* file params, size, page83, logical, phys */
	unsigned active;      /* header offset of the active header */
};

static struct layout layout_of(const struct file *f)
{
	struct layout l = { 0 };
	const uint8_t *rt = f->b + 192 * KiB;
	uint32_t nb = get32(rt + 8);

	for (uint32_t i = 0; i < nb; i++) {
		const uint8_t *e = rt + 16 + 32 * i;

		if (get32(e) == 0x2dc27766)
			l.bat_off = get64(e + 16);
		if (get32(e) == 0x8b7ca206)
			l.meta_off = get64(e + 16);
	}
	assert(l.bat_off && l.meta_off);
	for (int i = 0; i < 5; i++) {
		static const uint32_t ids[5] = { 0xcaa16737, 0x2fa54224,
			0xbeca12ab, 0x8141bf1d, 0xcda348c7 };
		const uint8_t *m = f->b + l.meta_off;

		for (uint32_t k = 0; k < (uint32_t)(m[10] | m[11] << 8); k++)
			if (get32(m + 32 + 32 * k) == ids[i])
				l.item_off[i] = l.meta_off +
						get32(m + 32 + 32 * k + 16);
		assert(l.item_off[i]);
	}
	l.active = get64(f->b + 128 * KiB + 8) > get64(f->b + 64 * KiB + 8)
			   ? 128 * KiB
			   : 64 * KiB;
	return l;
}

static void fix_headers(struct file *f)
{
	set_crc(f->b + 64 * KiB, 4 * KiB);
	set_crc(f->b + 128 * KiB, 4 * KiB);
}

static void fix_region_tables(struct file *f)
{
	set_crc(f->b + 192 * KiB, 64 * KiB);
	set_crc(f->b + 256 * KiB, 64 * KiB);
}

/* ---- opening and comparing ---- */

static int open_img(const char *name, enum img_format fmt,
		    enum img_backing_policy pol, struct img **img_r,
		    struct img_err *err)
{
	struct img_open_opts o = { .format = fmt, .read_only = true,
				   .backing = pol };

	return img_open(path_of(name), &o, img_r, err);
}

static struct img *must_open(const char *name)
{
	struct img_err err;
	struct img *img = NULL;
	int ret = open_img(name, IMG_FORMAT_PROBE, IMG_BACKING_LOCAL, &img,
			   &err);

	if (ret < 0)
		fprintf(stderr, "open %s: %s\n", name, err.msg);
	assert(ret == 0);
	return img;
}

/* The oracle: qemu-img convert -O raw of name, into memory. */
static uint8_t *oracle(const char *name, size_t *len_r)
{
	char raw[80];

	snprintf(raw, sizeof(raw), "%s.oracle.raw", name);
	sh("qemu-img convert -f vhdx -O raw '%s' '%s'", name, raw);
	return slurp(raw, len_r);
}

/* Reads the whole disk in pieces of odd sizes and compares with want. */
static void compare_reads(struct img *img, const uint8_t *want, size_t len)
{
	static const size_t steps[] = { 1 * MiB + 4097, 333, 8 * MiB + 1,
					65536 };
	uint8_t *got = malloc(len ? len : 1);

	assert(img_size(img) == len);
	for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
		size_t step = steps[s], limit = s == 1 ? MIN(len, 2 * MiB) : len;

		memset(got, 0xee, len);
		for (size_t off = 0; off < limit; off += step) {
			size_t n = MIN(step, len - off);

			assert(img_pread(img, got + off, n, off) == 0);
		}
		if (memcmp(got, want, limit) != 0) {
			size_t i = 0;

			while (got[i] == want[i])
				i++;
			fprintf(stderr, "mismatch at 0x%zx (step %zu): got "
				"%02x want %02x\n", i, step, got[i], want[i]);
			abort();
		}
	}
	free(got);
}

static bool all_zero(const uint8_t *p, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (p[i])
			return false;
	return true;
}

/* Walks block status over the whole disk and checks it against want
 * and the image file; returns the bytes reported as depth-0 data. */
static uint64_t check_block_status(struct img *img, const uint8_t *want)
{
	uint64_t off = 0, size = img_size(img), data = 0;
	uint8_t *host = malloc(32 * MiB);

	assert(host);
	while (off < size) {
		struct img_extent ext;

		assert(img_block_status(img, off, size - off, &ext) == 0);
		assert(ext.off == off && ext.len > 0 &&
		       ext.len <= size - off);
		switch (ext.kind) {
		case IMG_EXTENT_ZERO:
		case IMG_EXTENT_HOLE:
			assert(all_zero(want + off, ext.len));
			break;
		case IMG_EXTENT_DATA:
			if (ext.depth == 0)
				data += ext.len;
			if (ext.host_fd >= 0) {
				for (uint64_t d = 0; d < ext.len;
				     d += 32 * MiB) {
					size_t n = MIN(32 * MiB, ext.len - d);

					assert(pread(ext.host_fd, host, n,
						     ext.host_off + d) ==
					       (ssize_t)n);
					assert(memcmp(host, want + off + d, n) ==
					       0);
				}
			}
			break;
		default:
			abort();
		}
		off += ext.len;
	}
	free(host);
	return data;
}

/* qemu-img map must cover [0, size). */
static void check_qemu_map_covers(const char *name, uint64_t size)
{
	char out[80];
	size_t len;
	uint8_t *json;
	char *p;
	uint64_t end = 0;

	snprintf(out, sizeof(out), "%s.map.json", name);
	sh("qemu-img map -f vhdx --output=json '%s' > '%s'", name, out);
	json = slurp(out, &len);
	json = realloc(json, len + 1);
	json[len] = 0;
	for (p = (char *)json; (p = strstr(p, "\"start\": ")); p++) {
		uint64_t st = strtoull(p + 9, NULL, 10);
		char *l = strstr(p, "\"length\": ");

		assert(l && st == end);
		end = st + strtoull(l + 10, NULL, 10);
	}
	assert(end == size);
	free(json);
}

/* The differential check of one image made by qemu-img. */
static void differential(const char *name, const char *subformat)
{
	struct img_info info;
	struct img *img = must_open(name);
	size_t len;
	uint8_t *want = oracle(name, &len);
	bool found = false;

	assert(img_get_info(img, &info) == 0);
	assert(strcmp(info.format, "vhdx") == 0);
	for (size_t i = 0; i < info.nb_fields; i++)
		if (strcmp(info.fields[i].key, "subformat") == 0)
			found = strcmp(info.fields[i].value, subformat) == 0;
	assert(found);
	assert(img_is_read_only(img) && !img_writable(img));
	assert(img_pwrite(img, "x", 1, 0) == -EROFS);
	compare_reads(img, want, len);
	check_block_status(img, want);
	check_qemu_map_covers(name, len);
	img_close(img);
	free(want);
	printf("ok: %s (%s, %zu bytes)\n", name, subformat, len);
}

static void test_differential(void)
{
	sh("qemu-img create -q -f vhdx d-default.vhdx 64M");
	sh("qemu-io -f vhdx -c 'write -P 0x11 0 64k' -c 'write -P 0x22 5M 3M' "
	   "-c 'write -z 20M 1M' -c 'write -P 0x33 63M 1M' d-default.vhdx");
	differential("d-default.vhdx", "dynamic");

	sh("qemu-img create -q -f vhdx -o subformat=fixed d-fixed.vhdx 24M");
	sh("qemu-io -f vhdx -c 'write -P 0x44 1M 1536k' -c 'write -P 0x45 "
	   "23M 512' d-fixed.vhdx");
	differential("d-fixed.vhdx", "fixed");

	sh("qemu-img create -q -f vhdx -o block_size=1M,log_size=2M,"
	   "block_state_zero=off d-1m.vhdx 10485761");
	sh("qemu-io -f vhdx -c 'write -P 0x55 0 1536k' -c 'write -P 0x56 "
	   "3000k 77k' -c 'write -P 0x57 10239k 1k' d-1m.vhdx");
	differential("d-1m.vhdx", "dynamic");

	sh("qemu-img create -q -f vhdx -o block_size=32M,block_state_zero=on "
	   "d-32m.vhdx 100M");
	sh("qemu-io -f vhdx -c 'write -P 0x66 31M 2M' -c 'write -P 0x67 "
	   "99M 1M' d-32m.vhdx");
	differential("d-32m.vhdx", "dynamic");

	sh("qemu-img create -q -f vhdx -o block_size=8M,log_size=4M "
	   "d-8m.vhdx 40M");
	sh("qemu-io -f vhdx -c 'write -P 0x71 7M 2M' -c 'write -P 0x72 "
	   "16M 8M' d-8m.vhdx");
	differential("d-8m.vhdx", "dynamic");

	/* Converted from a raw disk with text, random bytes and holes. */
	sh("seq 1 400000 > mix.raw && head -c 3M /dev/urandom >> mix.raw && "
	   "truncate -s 20M mix.raw && printf tail | dd of=mix.raw bs=1 "
	   "seek=$((19*1024*1024)) conv=notrunc");
	sh("qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size=2M "
	   "mix.raw d-conv.vhdx");
	differential("d-conv.vhdx", "dynamic");
	sh("qemu-img convert -f raw -O vhdx -o subformat=fixed mix.raw "
	   "d-conv-fixed.vhdx");
	differential("d-conv-fixed.vhdx", "fixed");
}

int main(void)
{
	if (system("command -v qemu-img >/dev/null && command -v qemu-io "
		   ">/dev/null") != 0) {
		printf("skip: qemu-img or qemu-io missing\n");
		return 77;
	}
	assert(mkdtemp(dir));
	test_differential();
	sh("rm -rf %s", dir);
	return 0;
}
