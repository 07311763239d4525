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
 *   - Threads: four readers of one handle at once see the oracle's bytes.
 *   - VHDX_BENCH=1 measures sequential reads of a 1 GiB fully allocated
 *     dynamic VHDX against the same data as qcow2 and raw, and skips the
 *     rest.
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
#include <time.h>
#include <unistd.h>

#define KiB (1024ULL)
#define MiB (1024ULL * KiB)
#ifndef MIN
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#endif

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

static uint8_t *slurp_path(const char *path, size_t *len_r)
{
	int fd = open(path, O_RDONLY);
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

static uint8_t *slurp(const char *name, size_t *len_r)
{
	return slurp_path(path_of(name), len_r);
}

static void fuzz_replay_file(const char *path);
static void read_in_threads(struct img *img, const uint8_t *want,
			    size_t len);

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

/* Walks block status over [lo, size) and checks it against want (the
 * disk's bytes from lo) and the image file; returns the bytes reported
 * as depth-0 data. */
static uint64_t check_block_status_from(struct img *img, const uint8_t *want,
					uint64_t lo, uint64_t size)
{
	uint64_t off = lo, data = 0;
	uint8_t *host = malloc(32 * MiB);

	assert(host);
	want -= lo;
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

/* The same over the whole disk. */
static uint64_t check_block_status(struct img *img, const uint8_t *want)
{
	return check_block_status_from(img, want, 0, img_size(img));
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
	{
		uint64_t alloc;

		assert(img_allocated_bytes(img, &alloc) == 0);
		assert(alloc == check_block_status(img, want));
	}
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

/* ---- the log ---- */

enum log_variant {
	LOG_SOUND,          /* entries 5 and 6, stale entry 3 */
	LOG_BAD_CRC_6,      /* entry 6's CRC broken: only 5 applies */
	LOG_INTO_LOG,       /* entry 6 writes into the log itself */
	LOG_FLUSHED_PAST,   /* entry 5's flushed offset past the end */
	LOG_DATA_SEQ,       /* entry 6's data sector has another sequence */
	LOG_HUGE_ZERO,      /* entry 5 zeroes 2^60 bytes */
	LOG_BAD_LENGTH,     /* the header's log length is 1 MiB + 4 KiB */
	LOG_PAST_EOF,       /* the header's log lies past the end */
	LOG_VERSION,        /* the header's log version is 1 */
};

struct log_desc {
	bool zero;
	uint64_t file_off;
	uint64_t zero_len;
	const uint8_t *sector; /* 4 KiB, data descriptors */
};

/* Writes an entry of nb descriptors at log sector pos; returns the
 * sectors it takes. */
static unsigned put_entry(struct file *f, uint64_t log_off, unsigned pos,
			  uint64_t seq, const uint8_t guid[16],
			  const struct log_desc *d, unsigned nb,
			  uint64_t flushed, uint64_t data_seq)
{
	unsigned nb_data = 0, sectors;
	uint8_t *e = f->b + log_off + 4096ull * pos;

	for (unsigned i = 0; i < nb; i++)
		nb_data += !d[i].zero;
	sectors = 1 + nb_data; /* nb < 127: one descriptor sector */
	memset(e, 0, 4096ull * sectors);
	memcpy(e, "loge", 4);
	put32(e + 8, 4096 * sectors);
	put32(e + 12, 0);
	put64(e + 16, seq);
	put32(e + 24, nb);
	memcpy(e + 32, guid, 16);
	put64(e + 48, flushed);
	put64(e + 56, f->len);
	for (unsigned i = 0, k = 0; i < nb; i++) {
		uint8_t *de = e + 64 + 32 * i;

		put64(de + 16, d[i].file_off);
		put64(de + 24, seq);
		if (d[i].zero) {
			memcpy(de, "zero", 4);
			put64(de + 8, d[i].zero_len);
		} else {
			uint8_t *ds = e + 4096 * (1 + k++);

			memcpy(de, "desc", 4);
			memcpy(de + 4, d[i].sector + 4092, 4);
			memcpy(de + 8, d[i].sector, 8);
			memcpy(ds, "data", 4);
			put32(ds + 4, (uint32_t)(data_seq >> 32));
			memcpy(ds + 8, d[i].sector + 8, 4084);
			put32(ds + 4092, (uint32_t)data_seq);
		}
	}
	set_crc(e, 4096ull * sectors);
	return sectors;
}

/* l.vhdx (three 1 MiB blocks of 0x11, 0x22, 0x33) with a log made by
 * hand, written as name; *want_r gets the disk as the log leaves it. */
static void make_log_image(enum log_variant v, const char *name,
			   uint8_t **want_r)
{
	static const uint8_t guid[16] = { 0x10, 0x32, 0x54, 0x76, 0x98, 0xba,
					  0xdc, 0xfe, 1, 2, 3, 4, 5, 6, 7, 8 };
	struct file f = load("l.vhdx");
	struct layout l = layout_of(&f);
	uint8_t *h = f.b + l.active;
	uint64_t log_off = get64(h + 72), h0, h1, e0, e1;
	uint8_t bat[4096], d77[4096], d99[4096];
	uint8_t *want = calloc(1, 8 * MiB);
	unsigned pos;

	assert(get32(h + 68) == 1 * MiB && log_off >= 1 * MiB);
	e0 = get64(f.b + l.bat_off);
	e1 = get64(f.b + l.bat_off + 8);
	assert((e0 & 7) == 6 && (e1 & 7) == 6);
	h0 = e0 & ~0xfffffULL;
	h1 = e1 & ~0xfffffULL;
	/* Entry 5: swap the BAT entries of blocks 0 and 1, make block 2
	 * ZERO, and zero 8 KiB of h0 (now block 1) at 64 KiB. */
	memcpy(bat, f.b + l.bat_off, 4096);
	put64(bat, e1);
	put64(bat + 8, e0);
	put64(bat + 16, 2);
	memset(d77, 0x77, sizeof(d77));
	memset(d99, 0x99, sizeof(d99));
	{
		struct log_desc d5[2] = {
			{ .file_off = l.bat_off, .sector = bat },
			{ .zero = true, .file_off = h0 + 64 * KiB,
			  .zero_len = v == LOG_HUGE_ZERO ? 1ULL << 60
							  : 8 * KiB },
		};
		struct log_desc d6[1] = {
			{ .file_off = v == LOG_INTO_LOG ? log_off + 512 * KiB
							: h1,
			  .sector = d77 },
		};
		struct log_desc d3[1] = { { .file_off = h1 + 8 * KiB,
					    .sector = d99 } };

		pos = put_entry(&f, log_off, 0, 5, guid, d5, 2,
				v == LOG_FLUSHED_PAST ? f.len + 1 : f.len, 5);
		put_entry(&f, log_off, pos, 6, guid, d6, 1, f.len,
			  v == LOG_DATA_SEQ ? 7 : 6);
		if (v == LOG_BAD_CRC_6)
			f.b[log_off + 4096ull * pos + 5] ^= 1;
		put_entry(&f, log_off, 128, 3, guid, d3, 1, f.len, 3);
	}
	for (int i = 0; i < 2; i++) {
		uint8_t *hd = f.b + (i ? 128 : 64) * KiB;

		memcpy(hd + 48, guid, 16);
		if (v == LOG_BAD_LENGTH)
			put32(hd + 68, 1 * MiB + 4 * KiB);
		if (v == LOG_PAST_EOF)
			put64(hd + 72, (f.len + 1 * MiB) & ~(1 * MiB - 1));
		if (v == LOG_VERSION)
			hd[64] = 1;
	}
	fix_headers(&f);
	store(&f, name);
	free(f.b);

	memset(want, 0x22, 1 * MiB);
	memset(want + 1 * MiB, 0x11, 1 * MiB);
	if (v != LOG_BAD_CRC_6)
		memset(want, 0x77, 4096);
	memset(want + 1 * MiB + 64 * KiB, 0, 8 * KiB);
	*want_r = want;
}

static void expect_open_fails(const char *name, enum img_format fmt,
			      enum img_backing_policy pol, int errnum,
			      const char *words)
{
	struct img_err err = { 0 };
	struct img *img = NULL;
	int ret = open_img(name, fmt, pol, &img, &err);
	char *w = strdup(words), *tok, *save = NULL;
	bool found = false;

	if (ret != errnum) {
		fprintf(stderr, "%s: open gave %d, want %d (%s)\n", name, ret,
			errnum, err.msg);
		abort();
	}
	assert(err.errnum == errnum && strstr(err.msg, name));
	assert(!strchr(err.msg, '\n'));
	for (tok = strtok_r(w, "|", &save); tok;
	     tok = strtok_r(NULL, "|", &save))
		found |= strcasestr(err.msg, tok) != NULL;
	if (!found) {
		fprintf(stderr, "%s: message '%s' lacks '%s'\n", name,
			err.msg, words);
		abort();
	}
	free(w);
	printf("ok: %s refused: %s\n", name, err.msg);
}

static void test_log(void)
{
	uint8_t *want, *got, *before, *after, *qemu;
	size_t blen, alen, qlen;
	struct img_info info;
	struct img_extent ext;
	struct img *img;
	bool found = false;

	sh("qemu-img create -q -f vhdx -o block_size=1M l.vhdx 8M");
	sh("qemu-io -f vhdx -c 'write -P 0x11 0 1M' -c 'write -P 0x22 1M 1M' "
	   "-c 'write -P 0x33 2M 1M' l.vhdx");

	/* The sound log: imgfs shows what it says, leaves the file alone,
	 * and QEMU (replaying into a copy) agrees. */
	make_log_image(LOG_SOUND, "log.vhdx", &want);
	sh("cp log.vhdx log-qemu.vhdx && cp log.vhdx log-orig.vhdx");
	img = must_open("log.vhdx");
	compare_reads(img, want, 8 * MiB);
	read_in_threads(img, want, 8 * MiB);
	check_block_status(img, want);
	assert(img_block_status(img, 0, 8 * MiB, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.len == 1 * MiB &&
	       ext.host_fd == -1);
	assert(img_block_status(img, 2 * MiB, 6 * MiB, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_ZERO && ext.len == 6 * MiB);
	assert(img_get_info(img, &info) == 0);
	for (size_t i = 0; i < info.nb_fields; i++)
		if (strcmp(info.fields[i].key, "log") == 0)
			found = strstr(info.fields[i].value, "2 entries") &&
				strstr(info.fields[i].value, "sequence number 6");
	assert(found);
	img_close(img);
	before = slurp("log-orig.vhdx", &blen);
	after = slurp("log.vhdx", &alen);
	assert(blen == alen && memcmp(before, after, blen) == 0);
	free(before);
	free(after);
	/* qemu-io opens read-write: QEMU replays the log into the file. */
	sh("qemu-io -f vhdx -c 'read 0 512' log-qemu.vhdx");
	qemu = oracle("log-qemu.vhdx", &qlen);
	assert(qlen == 8 * MiB && memcmp(qemu, want, qlen) == 0);
	free(qemu);
	/* And QEMU refuses the unreplayed file read-only, as it says. */
	assert(system("qemu-img convert -f vhdx -O raw log-orig.vhdx x.raw "
		      ">/dev/null 2>&1") != 0);
	free(want);
	printf("ok: log replayed in memory, file unchanged, QEMU agrees\n");

	/* Entry 6 damaged: the sequence is entry 5 alone; QEMU agrees. */
	make_log_image(LOG_BAD_CRC_6, "log-crc.vhdx", &want);
	img = must_open("log-crc.vhdx");
	compare_reads(img, want, 8 * MiB);
	img_close(img);
	sh("qemu-io -f vhdx -c 'read 0 512' log-crc.vhdx");
	qemu = oracle("log-crc.vhdx", &qlen);
	assert(qlen == 8 * MiB && memcmp(qemu, want, qlen) == 0);
	free(qemu);
	free(want);
	printf("ok: a damaged last entry is not replayed, QEMU agrees\n");

	static const struct {
		enum log_variant v;
		const char *name, *words;
	} bad[] = {
		{ LOG_INTO_LOG, "log-into-log.vhdx", "log itself" },
		{ LOG_FLUSHED_PAST, "log-flushed.vhdx", "truncated" },
		{ LOG_DATA_SEQ, "log-dataseq.vhdx", "data sector" },
		{ LOG_HUGE_ZERO, "log-hugezero.vhdx", "past the end" },
		{ LOG_BAD_LENGTH, "log-length.vhdx", "multiple of 1 MiB" },
		{ LOG_PAST_EOF, "log-eof.vhdx", "past the end" },
		{ LOG_VERSION, "log-version.vhdx", "log version" },
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		make_log_image(bad[i].v, bad[i].name, &got);
		free(got);
		expect_open_fails(bad[i].name, IMG_FORMAT_VHDX,
				  IMG_BACKING_LOCAL, -EINVAL, bad[i].words);
	}
}

/* ---- differencing ---- */

enum diff_variant {
	DIFF_SOUND,
	DIFF_ABSOLUTE,    /* relative_path names a missing file */
	DIFF_LINKAGE,     /* parent_linkage is another GUID */
	DIFF_LOCATOR_OOB, /* a key offset past the locator */
	DIFF_LOCATOR_TYPE,/* the locator type is not VHDX */
	DIFF_NO_LOCATOR,  /* has_parent without a locator */
	DIFF_NO_BITMAP,   /* the chunk's sector bitmap is NOT_PRESENT */
	DIFF_PARENT_UP,   /* relative_path ..\\base.vhdx (for sub/) */
};

static const uint8_t guid_locator_item[16] = {
	0x2d, 0x5f, 0xd3, 0xa8, 0x0b, 0xb3, 0x4d, 0x45,
	0xab, 0xf7, 0xd3, 0xd8, 0x48, 0x34, 0xab, 0x0c };
static const uint8_t guid_locator_vhdx[16] = {
	0xb7, 0xef, 0x4a, 0xb0, 0x9e, 0xd1, 0x81, 0x4a,
	0xb7, 0x89, 0x25, 0xb8, 0xe9, 0x44, 0x59, 0x13 };

/* Appends key=value (UTF-16LE) to a locator being built at item. */
static void locator_put(uint8_t *item, unsigned *nb, size_t *end,
			const char *key, const char *value)
{
	uint8_t *e = item + 20 + 12 * *nb;
	size_t kl = strlen(key), vl = strlen(value);

	put32(e, (uint32_t)*end);
	for (size_t i = 0; i < kl; i++)
		item[*end + 2 * i] = (uint8_t)key[i];
	*end += 2 * kl;
	put32(e + 4, (uint32_t)*end);
	for (size_t i = 0; i < vl; i++)
		item[*end + 2 * i] = (uint8_t)value[i];
	*end += 2 * vl;
	e[8] = (uint8_t)(2 * kl);
	e[9] = (uint8_t)(2 * kl >> 8);
	e[10] = (uint8_t)(2 * vl);
	e[11] = (uint8_t)(2 * vl >> 8);
	(*nb)++;
}

#define SB_FIRST (3 * 2048) /* block 3's first sector in chunk 0 */

static bool diff_own_sector(uint64_t sec)
{
	return (sec >= SB_FIRST && sec < SB_FIRST + 8) ||
	       (sec >= SB_FIRST + 100 && sec < SB_FIRST + 1000);
}

/* Makes f (its layout l) a differencing child of parent, a file in dir:
 * has_parent set, and a VHDX parent locator added as a metadata item at
 * 128 KiB whose parent_linkage is the parent's data write GUID. */
static void link_parent(struct file *f, const struct layout *l,
			const char *parent, enum diff_variant v)
{
	struct file b = load(parent);
	struct layout lb = layout_of(&b);
	const uint8_t *g = b.b + lb.active + 32; /* data write GUID */
	uint8_t *meta = f->b + l->meta_off, *item;
	char linkage[64], abs_path[600], rel_path[300];
	unsigned nb = 0;
	size_t end;

	f->b[l->item_off[0] + 4] |= 2; /* has_parent */
	if (v != DIFF_NO_LOCATOR) {
		unsigned n = meta[10] | meta[11] << 8;
		uint8_t *e = meta + 32 + 32 * n;

		memcpy(e, guid_locator_item, 16);
		put32(e + 16, 128 * KiB);
		put32(e + 20, 4096);
		put32(e + 24, 6);
		meta[10] = (uint8_t)(n + 1);
	}
	item = meta + 128 * KiB;
	memcpy(item, v == DIFF_LOCATOR_TYPE ? guid_locator_item
					    : guid_locator_vhdx, 16);
	snprintf(linkage, sizeof(linkage),
		 "{%08X-%04X-%04X-%02X%02X-%02X%02X%02X%02X%02X%02X}",
		 get32(g) ^ (v == DIFF_LINKAGE), g[4] | g[5] << 8,
		 g[6] | g[7] << 8, g[8], g[9], g[10], g[11], g[12], g[13],
		 g[14], g[15]);
	snprintf(abs_path, sizeof(abs_path), "C:%s/%s", dir, parent);
	for (char *p = abs_path; *p; p++)
		if (*p == '/')
			*p = '\\';
	snprintf(rel_path, sizeof(rel_path), "%s%s",
		 v == DIFF_PARENT_UP ? "..\\" : ".\\",
		 v == DIFF_ABSOLUTE ? "missing.vhdx" : parent);
	end = 20 + 12 * 4;
	locator_put(item, &nb, &end, "parent_linkage", linkage);
	locator_put(item, &nb, &end, "relative_path", rel_path);
	locator_put(item, &nb, &end, "volume_path",
		    "\\\\?\\Volume{00000000-0000-0000-0000-000000000000}\\b");
	locator_put(item, &nb, &end, "absolute_win32_path", abs_path);
	item[18] = (uint8_t)nb;
	if (v == DIFF_LOCATOR_OOB)
		put32(item + 20 + 12, 5000);
	free(b.b);
}

/* child0.vhdx turned into a differencing child of base.vhdx. */
static void make_diff_image(enum diff_variant v, const char *name)
{
	struct file f = load("child0.vhdx");
	struct layout l = layout_of(&f);
	uint64_t sb_off = (f.len + MiB - 1) & ~(MiB - 1);
	uint8_t *bat;

	grow(&f, sb_off + MiB);
	bat = f.b + l.bat_off;
	assert((get64(bat + 8) & 7) == 6 && (get64(bat + 24) & 7) == 6);
	/* qemu-img's default block_state_zero=on made the others ZERO. */
	put64(bat + 0 * 8, 0);   /* NOT_PRESENT: the parent */
	put64(bat + 4 * 8, 0);
	put64(bat + 7 * 8, 0);
	put64(bat + 2 * 8, 2);   /* ZERO */
	put64(bat + 5 * 8, 3);   /* UNMAPPED */
	put64(bat + 6 * 8, 1);   /* UNDEFINED: the parent */
	put64(bat + 3 * 8, (get64(bat + 24) & ~7ULL) | 7);
	put64(bat + 4096 * 8, v == DIFF_NO_BITMAP ? 0 : sb_off | 6);
	for (uint64_t sec = 0; sec < 8 * 2048; sec++)
		if (diff_own_sector(sec))
			f.b[sb_off + sec / 8] |= (uint8_t)(1 << (sec % 8));
	link_parent(&f, &l, "base.vhdx", v);
	store(&f, name);
	free(f.b);
}

static void test_differencing(void)
{
	uint8_t *want = malloc(8 * MiB);
	struct img_extent ext;
	struct img_info info;
	struct img *img;

	sh("qemu-img create -q -f vhdx -o block_size=1M base.vhdx 8M");
	sh("qemu-io -f vhdx -c 'write -P 0x11 0 8M' base.vhdx");
	sh("qemu-img create -q -f vhdx -o block_size=1M child0.vhdx 8M");
	sh("qemu-io -f vhdx -c 'write -P 0x22 1M 1M' -c 'write -P 0x33 3M 1M' "
	   "child0.vhdx");
	memset(want, 0x11, 8 * MiB);
	memset(want + 1 * MiB, 0x22, 1 * MiB);
	memset(want + 2 * MiB, 0, 1 * MiB);
	memset(want + 5 * MiB, 0, 1 * MiB);
	for (uint64_t sec = 3 * 2048; sec < 4 * 2048; sec++)
		if (diff_own_sector(sec))
			memset(want + sec * 512, 0x33, 512);

	make_diff_image(DIFF_SOUND, "diff.vhdx");
	img = must_open("diff.vhdx");
	assert(img_backing(img) != NULL);
	compare_reads(img, want, 8 * MiB);
	assert(check_block_status(img, want) == 1 * MiB + 8 * 512 + 900 * 512);
	assert(img_block_status(img, 0, 8 * MiB, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.depth == 1 &&
	       ext.len == 1 * MiB);
	assert(img_block_status(img, 3 * MiB, 1 * MiB, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.depth == 0 &&
	       ext.len == 4096 && ext.host_fd >= 0);
	assert(img_block_status(img, 3 * MiB + 4096, 1 * MiB, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.depth == 1 &&
	       ext.len == 92 * 512);
	assert(img_get_info(img, &info) == 0);
	assert(strcmp(info.backing_file, "./base.vhdx") == 0);
	assert(strcmp(info.fields[0].value, "differencing") == 0);
	img_close(img);
	printf("ok: differencing child over its parent\n");

	make_diff_image(DIFF_ABSOLUTE, "diff-abs.vhdx");
	img = must_open("diff-abs.vhdx");
	compare_reads(img, want, 8 * MiB);
	img_close(img);
	printf("ok: absolute_win32_path when relative_path is missing\n");

	make_diff_image(DIFF_SOUND, "diff-deny.vhdx");
	expect_open_fails("diff-deny.vhdx", IMG_FORMAT_PROBE, IMG_BACKING_DENY,
			  -EPERM, "backing=deny");
	make_diff_image(DIFF_LINKAGE, "diff-linkage.vhdx");
	expect_open_fails("diff-linkage.vhdx", IMG_FORMAT_PROBE,
			  IMG_BACKING_LOCAL, -EINVAL, "parent_linkage");
	make_diff_image(DIFF_LOCATOR_OOB, "diff-oob.vhdx");
	expect_open_fails("diff-oob.vhdx", IMG_FORMAT_PROBE,
			  IMG_BACKING_LOCAL, -EINVAL, "outside the locator");
	make_diff_image(DIFF_LOCATOR_TYPE, "diff-type.vhdx");
	expect_open_fails("diff-type.vhdx", IMG_FORMAT_PROBE,
			  IMG_BACKING_LOCAL, -EINVAL, "not VHDX");
	make_diff_image(DIFF_NO_LOCATOR, "diff-noloc.vhdx");
	expect_open_fails("diff-noloc.vhdx", IMG_FORMAT_PROBE,
			  IMG_BACKING_LOCAL, -EINVAL, "parent locator");

	/* A parent outside the child's folder: refused by backing=local,
	 * naming the option; read with backing=follow. */
	sh("mkdir -p sub");
	make_diff_image(DIFF_PARENT_UP, "sub/diff-up.vhdx");
	expect_open_fails("sub/diff-up.vhdx", IMG_FORMAT_PROBE,
			  IMG_BACKING_LOCAL, -EPERM, "backing=follow");
	{
		struct img_err err;

		assert(open_img("sub/diff-up.vhdx", IMG_FORMAT_PROBE,
				IMG_BACKING_FOLLOW, &img, &err) == 0);
		compare_reads(img, want, 8 * MiB);
		img_close(img);
	}

	/* A partially present block without its sector bitmap: that block
	 * fails, the rest reads. */
	make_diff_image(DIFF_NO_BITMAP, "diff-nobitmap.vhdx");
	img = must_open("diff-nobitmap.vhdx");
	{
		uint8_t *got = malloc(1 * MiB);

		assert(img_pread(img, got, 4096, 3 * MiB) == -EIO);
		assert(img_block_status(img, 3 * MiB, 4096, &ext) == -EIO);
		assert(img_pread(img, got, 1 * MiB, 1 * MiB) == 0);
		assert(memcmp(got, want + 1 * MiB, 1 * MiB) == 0);
		free(got);
	}
	img_close(img);
	printf("ok: a missing sector bitmap fails its block only\n");
	free(want);
}

/* ---- runs across blocks and sector bitmap chunks ---- */

/* What a test makes of one block of a child converted by qemu-img (all
 * its blocks FULLY_PRESENT and one after the other in the file). */
struct blk_plan {
	uint8_t state;    /* BAT state: 0, 2, 6 or 7 */
	int8_t host_from; /* state 6: reads block i + host_from's data */
	struct {
		unsigned first, n;
	} own[3];         /* state 7: sectors the child holds */
};

/* Applies plan to blocks blk0 .. blk0 + nb - 1 of f (1 MiB blocks, 512
 * byte sectors: 2048 sectors a block, 4096 blocks a chunk), adding the
 * sector bitmap blocks the partially present ones need. */
static void apply_plan(struct file *f, const struct layout *l, uint64_t blk0,
		       size_t nb, const struct blk_plan *plan)
{
	const uint64_t cr = 4096;
	uint64_t host[16], first = 0;

	assert(nb <= 16);
	for (size_t i = 0; i < nb; i++) {
		uint64_t e = get64(f->b + l->bat_off +
				   8 * (blk0 + i + (blk0 + i) / cr));

		host[i] = e & ~(MiB - 1);
		if (plan[i].state != 6 && plan[i].state != 7)
			continue;
		/* The merges the test expects need the blocks qemu-img
		 * stored to lie one after the other. */
		if (!first)
			first = host[i] - i * MiB;
		assert((e & 7) == 6 && host[i] == first + i * MiB);
	}
	for (size_t i = 0; i < nb; i++) {
		uint64_t b = blk0 + i, chunk = b / cr;
		uint64_t sbi = 8 * (chunk * (cr + 1) + cr), v = plan[i].state;

		if (v == 6)
			v |= host[i + plan[i].host_from];
		else if (v == 7)
			v |= host[i];
		put64(f->b + l->bat_off + 8 * (b + chunk), v);
		if (plan[i].state != 7)
			continue;
		if ((get64(f->b + l->bat_off + sbi) & 7) != 6) {
			uint64_t sb_off = (f->len + MiB - 1) & ~(MiB - 1);

			grow(f, sb_off + MiB);
			put64(f->b + l->bat_off + sbi, sb_off | 6);
		}
		for (size_t r = 0; r < 3; r++)
			for (unsigned k = 0; k < plan[i].own[r].n; k++) {
				uint64_t sec = (b % cr) * 2048 +
					       plan[i].own[r].first + k;
				uint64_t at = (get64(f->b + l->bat_off + sbi) &
					       ~(MiB - 1)) + sec / 8;

				f->b[at] |= (uint8_t)(1 << (sec % 8));
			}
	}
}

/* The bytes of blocks blk0 .. blk0 + nb - 1 as plan reads them, from
 * the raw disks the parent and the child were converted from. */
static uint8_t *plan_bytes(const char *parent_raw, const char *child_raw,
			   uint64_t blk0, size_t nb,
			   const struct blk_plan *plan)
{
	uint8_t *want = malloc(nb * MiB), *pw = malloc(nb * MiB);
	uint8_t *cw = malloc(nb * MiB);
	int pfd = open(path_of(parent_raw), O_RDONLY);
	int cfd = open(path_of(child_raw), O_RDONLY);

	assert(want && pw && cw && pfd >= 0 && cfd >= 0);
	assert(pread(pfd, pw, nb * MiB, blk0 * MiB) == (ssize_t)(nb * MiB));
	assert(pread(cfd, cw, nb * MiB, blk0 * MiB) == (ssize_t)(nb * MiB));
	for (size_t i = 0; i < nb; i++) {
		uint8_t *d = want + i * MiB;

		switch (plan[i].state) {
		case 0:
			memcpy(d, pw + i * MiB, MiB);
			break;
		case 2:
			memset(d, 0, MiB);
			break;
		case 6:
			memcpy(d, cw + (i + plan[i].host_from) * MiB, MiB);
			break;
		case 7:
			memcpy(d, pw + i * MiB, MiB);
			for (size_t r = 0; r < 3; r++) {
				size_t at = plan[i].own[r].first * 512;

				memcpy(d + at, cw + i * MiB + at,
				       plan[i].own[r].n * 512);
			}
			break;
		}
	}
	close(pfd);
	close(cfd);
	free(pw);
	free(cw);
	return want;
}

/* The extent at off is DATA of this many bytes from layer depth (0: the
 * child, with its file offset; 1: the parent). */
static void expect_data(struct img *img, uint64_t off, unsigned depth,
			uint64_t len)
{
	struct img_extent ext;

	assert(img_block_status(img, off, img_size(img) - off, &ext) == 0);
	if (ext.kind != IMG_EXTENT_DATA || ext.depth != depth ||
	    ext.len != len) {
		fprintf(stderr, "extent at 0x%" PRIx64 ": kind %d depth %u "
			"len 0x%" PRIx64 ", want data depth %u len 0x%" PRIx64
			"\n", off, (int)ext.kind, ext.depth, ext.len, depth,
			len);
		abort();
	}
	assert(depth > 0 || ext.host_fd >= 0);
}

/* Reads [lo, lo + len) in one piece and in pieces of odd sizes. */
static void compare_window(struct img *img, const uint8_t *want, uint64_t lo,
			   size_t len)
{
	const size_t steps[] = { len, 1 * MiB + 4097, 333 * 512 + 1, 65536 };
	uint8_t *got = malloc(len);

	for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
		memset(got, 0xee, len);
		for (size_t off = 0; off < len; off += steps[s])
			assert(img_pread(img, got + off,
					 MIN(steps[s], len - off),
					 lo + off) == 0);
		assert(memcmp(got, want, len) == 0);
	}
	free(got);
}

/* Runs go on across block boundaries, partially present blocks
 * included: own data into and out of a partially present block where
 * the blocks lie one after the other in the file, not into a block
 * stored elsewhere; the parent's sectors across a not-present block. */
static void test_runs_across_blocks(void)
{
	static const struct blk_plan plan[8] = {
		{ 6, 0, { { 0 } } },
		{ 7, 0, { { 0, 1024 }, { 2040, 8 } } },
		{ 7, 0, { { 0, 100 } } },
		{ 0, 0, { { 0 } } },
		{ 7, 0, { { 300, 8 }, { 316, 8 }, { 2000, 48 } } },
		{ 6, 1, { { 0 } } }, /* blocks 5 and 6 swapped */
		{ 6, -1, { { 0 } } },
		{ 2, 0, { { 0 } } },
	};
	struct file f;
	struct layout l;
	struct img *img;
	uint8_t *want;

	sh("head -c 8M /dev/urandom > ra-p.raw && "
	   "head -c 8M /dev/urandom > ra-c.raw");
	sh("qemu-img convert -f raw -O vhdx -o block_size=1M ra-p.raw "
	   "ra-p.vhdx && qemu-img convert -f raw -O vhdx -o block_size=1M "
	   "ra-c.raw ra-c.vhdx");
	f = load("ra-c.vhdx");
	l = layout_of(&f);
	apply_plan(&f, &l, 0, 8, plan);
	link_parent(&f, &l, "ra-p.vhdx", DIFF_SOUND);
	store(&f, "ra.vhdx");
	free(f.b);
	want = plan_bytes("ra-p.raw", "ra-c.raw", 0, 8, plan);

	img = must_open("ra.vhdx");
	compare_reads(img, want, 8 * MiB);
	compare_window(img, want, 0, 8 * MiB);
	check_block_status(img, want);
	expect_data(img, 0, 0, 1 * MiB + 1024 * 512);
	expect_data(img, 2 * MiB - 8 * 512, 0, 108 * 512);
	expect_data(img, 2 * MiB + 100 * 512, 1,
		    1948 * 512 + 1 * MiB + 300 * 512);
	expect_data(img, 4 * MiB + 308 * 512, 1, 8 * 512);
	expect_data(img, 4 * MiB + 2000 * 512, 0, 48 * 512);
	expect_data(img, 5 * MiB, 0, 1 * MiB);
	expect_data(img, 6 * MiB, 0, 1 * MiB);
	img_close(img);
	free(want);
	printf("ok: runs across partially present blocks\n");
}

/* A disk of 4 GiB + 2 MiB has two sector bitmap chunks (4096 blocks of
 * 1 MiB each): runs of own data and of the parent's go on across the
 * chunk boundary, and one read over it uses both bitmaps. */
static void test_runs_across_chunks(void)
{
	static const struct blk_plan plan[6] = {
		{ 0, 0, { { 0 } } },                      /* 4092 */
		{ 0, 0, { { 0 } } },                      /* 4093 */
		{ 6, 0, { { 0 } } },                      /* 4094 */
		{ 7, 0, { { 0, 8 }, { 2040, 8 } } },      /* 4095 */
		{ 7, 0, { { 0, 8 } } },                   /* 4096: chunk 1 */
		{ 0, 0, { { 0 } } },                      /* 4097 */
	};
	const uint64_t lo = 4092 * MiB;
	struct file f;
	struct layout l;
	struct img *img;
	uint8_t *want;

	sh("truncate -s 4098M rc-p.raw rc-c.raw && "
	   "head -c 5M /dev/urandom | dd of=rc-p.raw bs=1M seek=4093 "
	   "conv=notrunc iflag=fullblock && "
	   "head -c 4M /dev/urandom | dd of=rc-c.raw bs=1M seek=4094 "
	   "conv=notrunc iflag=fullblock");
	sh("qemu-img convert -f raw -O vhdx -o block_size=1M rc-p.raw "
	   "rc-p.vhdx && qemu-img convert -f raw -O vhdx -o block_size=1M "
	   "rc-c.raw rc-c.vhdx");
	f = load("rc-c.vhdx");
	l = layout_of(&f);
	apply_plan(&f, &l, 4092, 6, plan);
	link_parent(&f, &l, "rc-p.vhdx", DIFF_SOUND);
	store(&f, "rc.vhdx");
	free(f.b);
	want = plan_bytes("rc-p.raw", "rc-c.raw", 4092, 6, plan);

	img = must_open("rc.vhdx");
	assert(img_size(img) == 4098 * MiB);
	compare_window(img, want, lo, 6 * MiB);
	check_block_status_from(img, want, lo, img_size(img));
	expect_data(img, 4094 * MiB, 0, 1 * MiB + 8 * 512);
	expect_data(img, 4095 * MiB + 8 * 512, 1, 2032 * 512);
	expect_data(img, 4095 * MiB + 2040 * 512, 0, 16 * 512);
	expect_data(img, 4096 * MiB + 8 * 512, 1, 2 * MiB - 8 * 512);
	img_close(img);
	free(want);
	printf("ok: runs across a sector bitmap chunk boundary\n");
}

/* ---- corruptions ---- */

enum corruption {
	C_SIGNATURE, C_HEADERS_CRC, C_HEADER1_CRC, C_HEADERS_SAME_SEQ,
	C_HEADERS_VERSION, C_RT_BOTH_CRC, C_RT1_CRC, C_RT_COUNT, C_RT_OVERLAP,
	C_RT_PAST_EOF, C_RT_REQUIRED, C_RT_IN_HEADER, C_BLOCK_3M,
	C_BLOCK_512K, C_SECTOR_1K, C_PHYS_SECTOR, C_VSIZE_2_63, C_BAT_SMALL,
	C_META_SIG, C_META_COUNT, C_META_ITEM_OOB, C_META_MISSING,
	C_META_REQUIRED, C_TRUNCATED, C_LOG_OFFSET_0, C_LOG_OFFSET_HUGE,
	C_BAT_PAST_EOF, C_BAT_IN_HEADER, C_BAT_IN_META, C_BAT_STATE4,
	C_BAT_PARTIAL,
};

/* c.vhdx (8 MiB, 1 MiB blocks, blocks 0-3 of 0x41..0x44) broken one way. */
static void make_corrupt(enum corruption c, const char *name)
{
	struct file f = load("c.vhdx");
	struct layout l = layout_of(&f);
	uint8_t *rt1 = f.b + 192 * KiB, *rt2 = f.b + 256 * KiB;
	uint8_t *meta = f.b + l.meta_off, *bat = f.b + l.bat_off;
	bool fix_rt = true, fix_hdr = true;

	switch (c) {
	case C_SIGNATURE:
		f.b[7] = 'X';
		break;
	case C_HEADERS_CRC:
		f.b[64 * KiB + 200] ^= 1;
		f.b[128 * KiB + 200] ^= 1;
		fix_hdr = false;
		break;
	case C_HEADER1_CRC:
		f.b[l.active + 300] ^= 1;
		fix_hdr = false;
		break;
	case C_HEADERS_SAME_SEQ:
		put64(f.b + 64 * KiB + 8, 7);
		put64(f.b + 128 * KiB + 8, 7);
		f.b[64 * KiB + 16] ^= 1; /* file write GUID */
		break;
	case C_HEADERS_VERSION:
		f.b[64 * KiB + 66] = 2;
		f.b[128 * KiB + 66] = 2;
		break;
	case C_RT_BOTH_CRC:
		rt1[1000] ^= 1;
		rt2[1000] ^= 1;
		fix_rt = false;
		break;
	case C_RT1_CRC:
		rt1[1000] ^= 1;
		fix_rt = false;
		break;
	case C_RT_COUNT:
		put32(rt1 + 8, 3000);
		put32(rt2 + 8, 3000);
		break;
	case C_RT_OVERLAP:
		for (int i = 0; i < 2; i++) {
			uint8_t *e = (i ? rt2 : rt1) + 16;

			for (int k = 0; k < 2; k++)
				if (get32(e + 32 * k) == 0x2dc27766)
					put64(e + 32 * k + 16, l.meta_off);
		}
		break;
	case C_RT_PAST_EOF:
	case C_RT_IN_HEADER:
		for (int i = 0; i < 2; i++) {
			uint8_t *e = (i ? rt2 : rt1) + 16;

			for (int k = 0; k < 2; k++)
				if (get32(e + 32 * k) == 0x8b7ca206)
					put64(e + 32 * k + 16,
					      c == C_RT_PAST_EOF ? 1ULL << 40
								 : 512 * KiB);
		}
		break;
	case C_RT_REQUIRED:
		for (int i = 0; i < 2; i++) {
			uint8_t *t = i ? rt2 : rt1, *e = t + 16 + 32 * 2;

			memset(e, 0x5a, 16);
			put64(e + 16, 100 * MiB);
			put32(e + 24, 1 * MiB);
			put32(e + 28, 1);
			put32(t + 8, 3);
		}
		break;
	case C_BLOCK_3M:
		put32(f.b + l.item_off[0], 3 * MiB);
		break;
	case C_BLOCK_512K:
		put32(f.b + l.item_off[0], 512 * KiB);
		break;
	case C_SECTOR_1K:
		put32(f.b + l.item_off[3], 1024);
		break;
	case C_PHYS_SECTOR:
		put32(f.b + l.item_off[4], 520);
		break;
	case C_VSIZE_2_63:
		put64(f.b + l.item_off[1], 1ULL << 63);
		break;
	case C_BAT_SMALL:
		put64(f.b + l.item_off[1], 1ULL << 40); /* needs 8 MiB of BAT */
		break;
	case C_META_SIG:
		meta[3] ^= 0x20;
		break;
	case C_META_COUNT:
		meta[10] = 3000 & 0xff;
		meta[11] = 3000 >> 8;
		break;
	case C_META_ITEM_OOB:
		put32(meta + 32 + 16, 2 * MiB); /* first item */
		break;
	case C_META_MISSING:
	case C_META_REQUIRED:
		for (unsigned k = 0; k < 5; k++) {
			uint8_t *e = meta + 32 + 32 * k;

			if (get32(e) == 0xbeca12ab) { /* page 83 */
				e[0] ^= 0xff;
				put32(e + 24, c == C_META_REQUIRED ? 4 : 0);
			}
		}
		break;
	case C_TRUNCATED:
		f.len = 200 * KiB;
		break;
	case C_LOG_OFFSET_0:
		put64(f.b + 64 * KiB + 72, 0);
		put64(f.b + 128 * KiB + 72, 0);
		break;
	case C_LOG_OFFSET_HUGE:
		put64(f.b + 64 * KiB + 72, 0xfffffffffff00000ULL);
		put64(f.b + 128 * KiB + 72, 0xfffffffffff00000ULL);
		break;
	case C_BAT_PAST_EOF:
		put64(bat + 8, (4ULL << 30) | 6);
		break;
	case C_BAT_IN_HEADER:
		put64(bat + 16, 6);
		break;
	case C_BAT_IN_META:
		put64(bat + 24, l.meta_off | 6);
		break;
	case C_BAT_STATE4:
		put64(bat, (get64(bat) & ~7ULL) | 4);
		break;
	case C_BAT_PARTIAL:
		put64(bat, (get64(bat) & ~7ULL) | 7);
		break;
	}
	if (fix_hdr)
		fix_headers(&f);
	if (fix_rt)
		fix_region_tables(&f);
	store(&f, name);
	free(f.b);
}

static void test_corruptions(void)
{
	static const struct {
		enum corruption c;
		const char *name, *words;
	} refused[] = {
		{ C_SIGNATURE, "c-sig.vhdx", "signature" },
		{ C_HEADERS_CRC, "c-hdr-crc.vhdx", "no valid VHDX header" },
		{ C_HEADERS_SAME_SEQ, "c-hdr-seq.vhdx", "sequence number 7" },
		{ C_HEADERS_VERSION, "c-hdr-ver.vhdx", "no valid VHDX header" },
		{ C_RT_BOTH_CRC, "c-rt-crc.vhdx", "CRC" },
		{ C_RT_COUNT, "c-rt-count.vhdx", "2047" },
		{ C_RT_OVERLAP, "c-rt-overlap.vhdx", "overlaps" },
		{ C_RT_PAST_EOF, "c-rt-eof.vhdx", "outside the file" },
		{ C_RT_IN_HEADER, "c-rt-hdr.vhdx", "header section" },
		{ C_RT_REQUIRED, "c-rt-req.vhdx", "required but unknown" },
		{ C_BLOCK_3M, "c-bs3m.vhdx", "block size 3145728" },
		{ C_BLOCK_512K, "c-bs512k.vhdx", "block size 524288" },
		{ C_SECTOR_1K, "c-sec1k.vhdx", "logical sector size 1024" },
		{ C_PHYS_SECTOR, "c-phys.vhdx", "physical sector size 520" },
		{ C_VSIZE_2_63, "c-vsize.vhdx", "64 TiB" },
		{ C_BAT_SMALL, "c-batsmall.vhdx", "BAT region" },
		{ C_META_SIG, "c-meta-sig.vhdx", "metadata table" },
		{ C_META_COUNT, "c-meta-count.vhdx", "2047" },
		{ C_META_ITEM_OOB, "c-meta-oob.vhdx", "outside the metadata" },
		{ C_META_MISSING, "c-meta-missing.vhdx", "page 83 data is missing" },
		{ C_META_REQUIRED, "c-meta-req.vhdx", "required but unknown" },
		{ C_TRUNCATED, "c-trunc.vhdx", "past the end|CRC" },
		{ C_LOG_OFFSET_0, "c-log0.vhdx", "log offset" },
		{ C_LOG_OFFSET_HUGE, "c-loghuge.vhdx", "beyond any file" },
	};
	static const struct {
		enum corruption c;
		const char *name;
		uint64_t bad_off; /* the block that must fail */
	} eio[] = {
		{ C_BAT_PAST_EOF, "c-bat-eof.vhdx", 1 * MiB },
		{ C_BAT_IN_HEADER, "c-bat-hdr.vhdx", 2 * MiB },
		{ C_BAT_IN_META, "c-bat-meta.vhdx", 3 * MiB },
		{ C_BAT_STATE4, "c-bat-state4.vhdx", 0 },
		{ C_BAT_PARTIAL, "c-bat-partial.vhdx", 0 },
	};
	uint8_t *want, *got = malloc(8 * MiB);
	struct img_extent ext;
	struct img *img;
	size_t len;

	sh("qemu-img create -q -f vhdx -o block_size=1M c.vhdx 8M");
	sh("qemu-io -f vhdx -c 'write -P 0x41 0 1M' -c 'write -P 0x42 1M 1M' "
	   "-c 'write -P 0x43 2M 1M' -c 'write -P 0x44 3M 1M' c.vhdx");
	want = oracle("c.vhdx", &len);
	assert(len == 8 * MiB);

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		make_corrupt(refused[i].c, refused[i].name);
		expect_open_fails(refused[i].name, IMG_FORMAT_VHDX,
				  IMG_BACKING_LOCAL, -EINVAL, refused[i].words);
		fuzz_replay_file(path_of(refused[i].name));
	}

	/* One damaged copy of a header or of the region table: the other
	 * copy serves, and the disk reads as before. */
	make_corrupt(C_HEADER1_CRC, "c-hdr1.vhdx");
	img = must_open("c-hdr1.vhdx");
	compare_reads(img, want, len);
	img_close(img);
	make_corrupt(C_RT1_CRC, "c-rt1.vhdx");
	img = must_open("c-rt1.vhdx");
	compare_reads(img, want, len);
	img_close(img);
	printf("ok: a damaged header or region table copy is survived\n");

	/* A bad BAT entry fails its block alone. */
	for (size_t i = 0; i < sizeof(eio) / sizeof(eio[0]); i++) {
		make_corrupt(eio[i].c, eio[i].name);
		img = must_open(eio[i].name);
		assert(img_pread(img, got, 512, eio[i].bad_off + 4096) == -EIO);
		assert(img_pread(img, got, 2 * MiB,
				 eio[i].bad_off ? eio[i].bad_off - 1 * MiB
						: 0) == -EIO);
		assert(img_block_status(img, eio[i].bad_off, 1 * MiB, &ext) ==
		       -EIO);
		for (uint64_t b = 0; b < 8; b++) {
			if (b * MiB == eio[i].bad_off)
				continue;
			assert(img_pread(img, got, 1 * MiB, b * MiB) == 0);
			assert(memcmp(got, want + b * MiB, 1 * MiB) == 0);
		}
		img_close(img);
		fuzz_replay_file(path_of(eio[i].name));
		printf("ok: %s: EIO at 0x%" PRIx64 " only\n", eio[i].name,
		       eio[i].bad_off);
	}
	free(want);
	free(got);
}

/* 4 KiB logical and physical sectors: qemu-img makes only 512-byte ones
 * and QEMU 7.2 refuses to read others (ENOTSUP), so the oracle is the
 * image before its sector sizes were changed. The BAT layout changes
 * (chunk ratio 32768 instead of 4096), the bytes must not. */
static void test_4k_sectors(void)
{
	struct file f;
	struct layout l;
	struct img *img;
	uint8_t *want;
	size_t len;

	sh("qemu-img create -q -f vhdx -o block_size=1M s4k.vhdx 6M");
	sh("qemu-io -f vhdx -c 'write -P 0x61 4k 1M' -c 'write -P 0x62 5M 4k' "
	   "s4k.vhdx");
	want = oracle("s4k.vhdx", &len);
	f = load("s4k.vhdx");
	l = layout_of(&f);
	put32(f.b + l.item_off[3], 4096);
	put32(f.b + l.item_off[4], 4096);
	store(&f, "s4k.vhdx");
	free(f.b);
	img = must_open("s4k.vhdx");
	compare_reads(img, want, len);
	check_block_status(img, want);
	img_close(img);
	free(want);
	printf("ok: 4 KiB logical sectors\n");
}

/* Corrupt files and saved fuzz reproducers through the fuzz target. */
static void fuzz_replay_file(const char *path)
{
	size_t len;
	uint8_t *img = slurp_path(path, &len);
	/* Pack as the target's sparse form: one chunk per 32 KiB. */
	size_t cap = 7 + len + (len / 32768 + 1) * 6;
	uint8_t *in = malloc(cap), *p = in;
	uint32_t nb = (uint32_t)(len / 512);

	*p++ = 0;
	memcpy(p, &nb, 4);
	p += 4;
	*p++ = (uint8_t)(len % 512);
	*p++ = 0;
	for (size_t off = 0; off < len; off += 32768) {
		size_t n = MIN(32768, len - off);
		uint32_t sec = (uint32_t)(off / 512);

		if (all_zero(img + off, n))
			continue;
		memcpy(p, &sec, 4);
		p[4] = (uint8_t)n;
		p[5] = (uint8_t)(n >> 8);
		memcpy(p + 6, img + off, n);
		p += 6 + n;
	}
	fuzz_vhdx_one(in, (size_t)(p - in));
	free(in);
	free(img);
}

static void replay_regress(const char *path)
{
	size_t len;
	uint8_t *in = slurp_path(path, &len);

	fuzz_vhdx_one(in, len);
	free(in);
}

/* ---- threads ---- */

struct thread_arg {
	struct img *img;
	const uint8_t *want;
	size_t len;
	unsigned seed;
};

static void *reader(void *p)
{
	struct thread_arg *a = p;
	uint8_t *buf = malloc(3 * MiB);

	for (int i = 0; i < 300; i++) {
		size_t n = 1 + rand_r(&a->seed) % (3 * MiB);
		uint64_t off = ((uint64_t)rand_r(&a->seed) << 16 ^
				(uint64_t)rand_r(&a->seed)) % (a->len - n);

		assert(img_pread(a->img, buf, n, off) == 0);
		assert(memcmp(buf, a->want + off, n) == 0);
	}
	free(buf);
	return NULL;
}

/* Four threads read random ranges of one handle at once: the state is
 * immutable after open (BAT, overlay), so every read must see want. */
static void read_in_threads(struct img *img, const uint8_t *want, size_t len)
{
	struct thread_arg args[4];
	pthread_t t[4];

	for (int i = 0; i < 4; i++) {
		args[i] = (struct thread_arg){ img, want, len, 17u * (i + 1) };
		assert(pthread_create(&t[i], NULL, reader, &args[i]) == 0);
	}
	for (int i = 0; i < 4; i++)
		assert(pthread_join(t[i], NULL) == 0);
}

static void test_threads(const char *name)
{
	struct img *img = must_open(name);
	size_t len;
	uint8_t *want = oracle(name, &len);

	read_in_threads(img, want, len);
	img_close(img);
	free(want);
	printf("ok: %s read from 4 threads at once\n", name);
}

/* ---- speed (VHDX_BENCH=1 only) ---- */

static double seconds(void)
{
	struct timespec t;

	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* Best of five sequential passes in 1 MiB reads, in MB/s. */
static double seq_read_mbs(const char *name)
{
	struct img *img = must_open(name);
	uint8_t *buf = malloc(1 * MiB);
	double best = 0;

	for (int pass = 0; pass < 5; pass++) {
		double t = seconds(), mbs;

		for (uint64_t off = 0; off < img_size(img); off += 1 * MiB)
			assert(img_pread(img, buf, 1 * MiB, off) == 0);
		mbs = (double)img_size(img) / 1e6 / (seconds() - t);
		best = mbs > best ? mbs : best;
	}
	free(buf);
	img_close(img);
	return best;
}

/* A 1 GiB fully allocated dynamic VHDX against the same data as qcow2
 * and raw, read through img_pread (page cache warm, so this measures
 * the driver, not the disk). */
static void bench(void)
{
	sh("head -c 1G /dev/urandom > b.raw && qemu-img convert -f raw -O "
	   "vhdx -o subformat=dynamic b.raw b.vhdx && qemu-img convert -f raw "
	   "-O qcow2 b.raw b.qcow2");
	for (int round = 0; round < 2; round++)
		printf("bench: sequential 1 MiB reads: vhdx %.0f MB/s, qcow2 "
		       "%.0f MB/s, raw %.0f MB/s\n", seq_read_mbs("b.vhdx"),
		       seq_read_mbs("b.qcow2"), seq_read_mbs("b.raw"));
}

int main(void)
{
	if (system("command -v qemu-img >/dev/null && command -v qemu-io "
		   ">/dev/null") != 0) {
		printf("skip: qemu-img or qemu-io missing\n");
		return 77;
	}
	setvbuf(stdout, NULL, _IOLBF, 0);
	assert(mkdtemp(dir));
	if (getenv("VHDX_BENCH")) {
		bench();
		sh("rm -rf %s", dir);
		return 0;
	}
	test_differential();
	test_threads("d-default.vhdx");
	test_log();
	test_differencing();
	test_runs_across_blocks();
	test_runs_across_chunks();
	test_corruptions();
	test_4k_sectors();
	printf("ok: %zu fuzz reproducers replayed\n",
	       for_each_regress_file("fuzz-vhdx", replay_regress));
	sh("rm -rf %s", dir);
	return 0;
}
