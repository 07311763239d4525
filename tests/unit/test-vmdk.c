/* test-vmdk.c: the VMDK and OVA drivers read what qemu-img writes, and
 * refuse or contain what a hostile file holds.
 *
 * Differential: qemu-img and qemu-io build each subformat qemu-img can
 * create (monolithicSparse, monolithicFlat, twoGbMaxExtentSparse/Flat,
 * streamOptimized) across adapter types, hwversion, compat6 and
 * zeroed_grain, with patterns, zeroed ranges, holes and odd virtual
 * sizes; img_pread of the whole disk and of odd pieces is compared with
 * `qemu-img convert -O raw`, block status with `qemu-img map
 * --output=json` (data, depth, host offset). A streamOptimized file laid
 * out as VMware writes it (grain directory only in the footer, grain
 * table and directory markers) is built here from raw bytes, since
 * qemu-img writes the directory in the header. Descriptors with mixed
 * extents (RDONLY, NOACCESS, FLAT with an offset, ZERO) are checked
 * against bytes computed here: QEMU skips non-RW and ZERO extents.
 * A parent chain, parallel readers, and OVA archives (GNU, pax and
 * ustar tar, two disks, disk numbers) follow.
 *
 * Hostile: each case breaks one thing (a header field, the GD, a GTE, a
 * marker, a grain's deflate stream, a descriptor line, a tar header) and
 * asserts the outcome: the open fails with an exact errno and a message
 * naming the image and the problem, or the damaged range reads -EIO
 * while the rest reads right. Every case file and the saved fuzz
 * reproducers (tests/fuzz/regress/fuzz-vmdk) then go through the fuzz
 * target's function (tests/fuzz/fuzz-vmdk.c, included below).
 *
 * Speed is measured by tests/bench/formats.sh, not here.
 */
#undef NDEBUG
#include "imgfmt.h"

#define FUZZ_NO_MAIN_ENTRY
#include "../fuzz/fuzz-vmdk.c"

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
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#define KiB 1024ULL
#define MiB (1024ULL * KiB)
#define GRAIN (64 * KiB)
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

static char dir[] = "/tmp/test-vmdk-XXXXXX";
#include "workdir.h"

static uint64_t div_round_up_u(uint64_t x, uint64_t d)
{
	return x / d + (x % d != 0);
}

static void spit(const char *name, const void *buf, size_t len)
{
	char *p = path_of(name);
	int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0644);

	assert(fd >= 0);
	assert(write(fd, buf, len) == (ssize_t)len);
	close(fd);
	free(p);
}

static void patch(const char *name, uint64_t off, const void *bytes,
		  size_t len)
{
	char *p = path_of(name);
	int fd = open(p, O_WRONLY);

	assert(fd >= 0);
	assert(pwrite(fd, bytes, len, (off_t)off) == (ssize_t)len);
	close(fd);
	free(p);
}

static void patch_le32(const char *name, uint64_t off, uint32_t v)
{
	uint8_t b[4] = { (uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16),
			 (uint8_t)(v >> 24) };
	patch(name, off, b, 4);
}

static void patch_le64(const char *name, uint64_t off, uint64_t v)
{
	patch_le32(name, off, (uint32_t)v);
	patch_le32(name, off + 4, (uint32_t)(v >> 32));
}

static uint32_t read_le32(const char *name, uint64_t off)
{
	char *p = path_of(name);
	int fd = open(p, O_RDONLY);
	uint8_t b[4];

	assert(fd >= 0);
	assert(pread(fd, b, 4, (off_t)off) == 4);
	close(fd);
	free(p);
	return b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 |
	       (uint32_t)b[3] << 24;
}

static int try_open(const char *name, enum img_format fmt, unsigned disk,
		    enum img_backing_policy pol, size_t cache,
		    struct img **img_r, struct img_err *err)
{
	struct img_open_opts opts = { .format = fmt, .read_only = true,
				      .backing = pol, .cache_bytes = cache,
				      .disk = disk };
	char *p = path_of(name);
	int ret = img_open(p, &opts, img_r, err);

	free(p);
	return ret;
}

static struct img *open_ok(const char *name, enum img_format fmt,
			   unsigned disk, size_t cache)
{
	struct img_err err;
	struct img *img = NULL;

	if (try_open(name, fmt, disk, IMG_BACKING_LOCAL, cache, &img,
		     &err) < 0) {
		fprintf(stderr, "open %s: %s\n", name, err.msg);
		abort();
	}
	return img;
}

/* Reads all of img in pieces of varying size and compares with ref. */
static void compare_bytes(struct img *img, const uint8_t *ref, size_t len)
{
	uint8_t *buf = malloc(len + 1);
	uint64_t off = 0;
	unsigned seed = 7;

	assert(img_size(img) == len);
	assert(img_pread(img, buf, len, 0) == 0);
	if (memcmp(buf, ref, len) != 0) {
		for (size_t i = 0; i < len; i++)
			if (buf[i] != ref[i]) {
				fprintf(stderr, "bytes differ at %zu\n", i);
				break;
			}
		abort();
	}
	memset(buf, 0x5a, len);
	while (off < len) {
		size_t n = 1 + (size_t)(rand_r(&seed) % 150000);
		if (n > len - off)
			n = len - off;
		assert(img_pread(img, buf + off, n, off) == 0);
		off += n;
	}
	assert(memcmp(buf, ref, len) == 0);
	free(buf);
}

/* Per-512-byte view of block status. */
struct sector {
	int8_t data;
	int8_t depth;
	int64_t host;
};

static struct sector *our_map(struct img *img, size_t nb)
{
	struct sector *m = calloc(nb, sizeof(*m));
	uint64_t off = 0, size = img_size(img);

	while (off < size) {
		struct img_extent ext;
		assert(img_block_status(img, off, size - off, &ext) == 0);
		assert(ext.off == off && ext.len > 0 && ext.len <= size - off);
		for (uint64_t s = off; s < off + ext.len; s += 512) {
			struct sector *sec = &m[s / 512];
			sec->data = ext.kind == IMG_EXTENT_DATA;
			sec->depth = (int8_t)ext.depth;
			sec->host = -1;
			if (sec->data && ext.host_fd >= 0)
				sec->host = (int64_t)(ext.host_off + (s - off));
		}
		off += ext.len;
	}
	return m;
}

/* qemu-img map: "data" that is not also "zero" counts as data (a hole
 * in a flat extent's file is data and zero for QEMU, zero for us). */
static struct sector *qemu_map(const char *name, size_t nb)
{
	struct sector *m = calloc(nb, sizeof(*m));
	char *cmd, line[512];
	FILE *f;

	assert(asprintf(&cmd, "cd %s && qemu-img map --output=json %s", dir,
			name) > 0);
	f = popen(cmd, "r");
	assert(f);
	while (fgets(line, sizeof(line), f)) {
		uint64_t start, len;
		int depth;
		char *p;
		if (!(p = strstr(line, "\"start\":")))
			continue;
		assert(sscanf(p, "\"start\": %" SCNu64 ", \"length\": %" SCNu64
			      ", \"depth\": %d", &start, &len, &depth) == 3);
		bool data = strstr(line, "\"data\": true") &&
			    !strstr(line, "\"zero\": true");
		p = strstr(line, "\"offset\":");
		int64_t host = -1;
		if (p)
			assert(sscanf(p, "\"offset\": %" SCNd64, &host) == 1);
		for (uint64_t s = start; s < start + len && s / 512 < nb;
		     s += 512) {
			m[s / 512].data = data;
			m[s / 512].depth = (int8_t)depth;
			m[s / 512].host = host < 0 ? -1
						   : host + (int64_t)(s - start);
		}
	}
	assert(pclose(f) == 0);
	free(cmd);
	return m;
}

static void compare_map(struct img *img, const char *name)
{
	size_t nb = (size_t)(img_size(img) / 512);
	struct sector *ours = our_map(img, nb);
	struct sector *theirs = qemu_map(name, nb);

	for (size_t i = 0; i < nb; i++) {
		if (ours[i].data != theirs[i].data ||
		    (ours[i].data && (ours[i].depth != theirs[i].depth ||
				      ours[i].host != theirs[i].host))) {
			fprintf(stderr, "%s: map differs at sector %zu: ours "
				"data=%d depth=%d host=%" PRId64 ", qemu "
				"data=%d depth=%d host=%" PRId64 "\n", name, i,
				ours[i].data, ours[i].depth, ours[i].host,
				theirs[i].data, theirs[i].depth,
				theirs[i].host);
			abort();
		}
	}
	free(ours);
	free(theirs);
}

/* Bytes (default and tiny cache) against qemu-img convert, and map. */
static void check_image(const char *name, bool map)
{
	size_t len;
	uint8_t *ref;
	struct img *img;

	sh("rm -f ref.raw && qemu-img convert -O raw %s ref.raw", name);
	ref = slurp("ref.raw", &len);
	img = open_ok(name, IMG_FORMAT_PROBE, 0, 0);
	compare_bytes(img, ref, len);
	if (map)
		compare_map(img, name);
	img_close(img);
	img = open_ok(name, IMG_FORMAT_VMDK, 0, 1);
	compare_bytes(img, ref, len);
	img_close(img);
	free(ref);
}

static const char *pattern =
	"-c 'write -P 0x11 0 64k' -c 'write -P 0x22 70000 3000' "
	"-c 'write -P 0x33 1M 1M' -c 'write -P 0x44 3333333 777777' "
	"-c 'write -z 1100k 64k' -c 'write -z 1152k 128k' "
	"-c 'write -P 0x66 33M 96k'";

static void test_subformats(void)
{
	static const struct {
		const char *sub;
		const char *opts;
		const char *size;
	} cases[] = {
		{ "monolithicSparse", "", "40M" },
		{ "monolithicSparse", "adapter_type=lsilogic,hwversion=6", "40M" },
		{ "monolithicSparse", "compat6=on,zeroed_grain=on", "35000k" },
		{ "monolithicSparse", "zeroed_grain=on,adapter_type=buslogic", "40M" },
		{ "monolithicFlat", "", "34817k" },
		{ "monolithicFlat", "adapter_type=legacyESX", "40M" },
		{ "twoGbMaxExtentSparse", "", "40M" },
		{ "twoGbMaxExtentSparse", "zeroed_grain=on", "34817k" },
		{ "twoGbMaxExtentFlat", "", "40M" },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sh("rm -f s*.vmdk && qemu-img create -q -f vmdk -o "
		   "subformat=%s%s%s s.vmdk %s", cases[i].sub,
		   cases[i].opts[0] ? "," : "", cases[i].opts, cases[i].size);
		sh("qemu-io -f vmdk %s s.vmdk", pattern);
		check_image("s.vmdk", true);

		struct img *img = open_ok("s.vmdk", IMG_FORMAT_PROBE, 0, 0);
		struct img_info info;
		bool found = false;
		assert(img_get_info(img, &info) == 0);
		assert(strcmp(info.format, "vmdk") == 0);
		for (size_t f = 0; f < info.nb_fields; f++)
			if (strcmp(info.fields[f].key, "subformat") == 0)
				found = strcmp(info.fields[f].value,
					       cases[i].sub) == 0;
		assert(found);
		assert(img_is_read_only(img));
		assert(img_pwrite(img, "x", 1, 0) == -EROFS);
		img_close(img);
		printf("ok %s %s\n", cases[i].sub, cases[i].opts);
	}

	/* twoGbMaxExtent across real 2 GiB extent boundaries (sparse). */
	sh("rm -f s*.vmdk && qemu-img create -q -f vmdk -o "
	   "subformat=twoGbMaxExtentSparse s.vmdk 5G");
	sh("qemu-io -f vmdk -c 'write -P 0x71 2047M 2M' "
	   "-c 'write -P 0x72 4095M 1M' -c 'write -P 0x73 5119M 1M' s.vmdk");
	{
		struct img *img = open_ok("s.vmdk", IMG_FORMAT_PROBE, 0, 0);
		uint8_t *buf = malloc(4 * MiB);
		assert(img_size(img) == 5ULL << 30);
		assert(img_pread(img, buf, 4 * MiB, 2046 * MiB) == 0);
		for (size_t b = 0; b < 4 * MiB; b++)
			assert(buf[b] == ((b >= MiB && b < 3 * MiB) ? 0x71 : 0));
		assert(img_pread(img, buf, MiB, 5119 * MiB) == 0);
		for (size_t b = 0; b < MiB; b++)
			assert(buf[b] == 0x73);
		free(buf);
		compare_map(img, "s.vmdk");
		img_close(img);
	}
	printf("ok twoGbMaxExtentSparse 5G\n");
}

/* A raw disk with text, random bytes, zero grains and a tail that is
 * not a whole grain (odd size). */
static void make_mixed_raw(const char *name, uint64_t size, unsigned seed)
{
	uint8_t *b = calloc(1, size);
	uint64_t off;

	for (off = 0; off + 16 <= size / 3; off += 16)
		snprintf((char *)b + off, 17, "line %010" PRIu64 "\n", off);
	srand(seed);
	for (off = size / 2; off < size / 2 + 300 * KiB && off < size; off++)
		b[off] = (uint8_t)rand();
	for (off = size - 1000; off < size; off++)
		b[off] = (uint8_t)(off * 7);
	spit(name, b, size);
	free(b);
}

static void test_stream_qemu(void)
{
	make_mixed_raw("m.raw", 5 * MiB + 3 * 512, 1);
	sh("rm -f so.vmdk && qemu-img convert -f raw -O vmdk -o "
	   "subformat=streamOptimized m.raw so.vmdk");
	check_image("so.vmdk", true);
	/* From a monolithicSparse with zeroed grains, through convert. */
	sh("rm -f z.vmdk && qemu-img create -q -f vmdk -o zeroed_grain=on "
	   "z.vmdk 9M && qemu-io -f vmdk %s z.vmdk 2>/dev/null || true",
	   "-c 'write -P 0x11 0 64k' -c 'write -P 0x33 1M 1M' "
	   "-c 'write -z 1100k 64k'");
	sh("rm -f so2.vmdk && qemu-img convert -O vmdk -o "
	   "subformat=streamOptimized,adapter_type=lsilogic z.vmdk so2.vmdk");
	check_image("so2.vmdk", true);
	printf("ok streamOptimized (qemu-img)\n");
}

/* ------------------------------------------------------------------ */
/* A streamOptimized extent as VMware lays it out: header with
 * gd_offset = ~0, grains behind markers, GT and GD markers, footer. */

struct stream_opts {
	bool no_footer;
	uint32_t flags_extra;
};

static void put32(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)v;
	p[1] = (uint8_t)(v >> 8);
	p[2] = (uint8_t)(v >> 16);
	p[3] = (uint8_t)(v >> 24);
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)v);
	put32(p + 4, (uint32_t)(v >> 32));
}

static void make_header(uint8_t *h, uint64_t capacity, uint64_t gd_off,
			uint32_t flags)
{
	memset(h, 0, 512);
	memcpy(h, "KDMV", 4);
	put32(h + 4, 3);
	put32(h + 8, flags);
	put64(h + 12, capacity);
	put64(h + 20, 128);
	put64(h + 28, 1);  /* descriptor at sector 1 */
	put64(h + 36, 1);
	put32(h + 44, 512);
	put64(h + 48, 0);
	put64(h + 56, gd_off);
	put64(h + 64, 2);  /* grains from sector 2 */
	memcpy(h + 73, "\n \r\n", 4);
	h[77] = 1;         /* deflate */
}

/* Writes OUT from raw file IN; returns the file offset of the marker of
 * the grain at byte 64 KiB * probe_grain (0 if that grain is not
 * stored), for the corruption cases. */
static uint64_t make_vmware_stream(const char *in, const char *out,
				   const struct stream_opts *o,
				   uint64_t probe_grain)
{
	size_t len;
	uint8_t *raw = slurp(in, &len);
	uint64_t capacity = len / 512, nb_grains = div_round_up_u(len, GRAIN);
	uint64_t nb_gts = (nb_grains + 511) / 512;
	uint32_t *gte = calloc(nb_gts * 512, 4);
	uint32_t *gd = calloc(nb_gts, 4);
	size_t cap = len * 2 + 64 * KiB * (nb_gts + 8);
	uint8_t *f = calloc(1, cap);
	uint64_t at = 1024, probe_at = 0;
	const char *desc = "# Disk DescriptorFile\nversion=1\nCID=1234abcd\n"
			   "parentCID=ffffffff\ncreateType=\"streamOptimized\"\n"
			   "RW 0 SPARSE \"x.vmdk\"\n";
	uint32_t flags = 0x30001 | o->flags_extra;

	assert(len % 512 == 0);
	make_header(f, capacity, UINT64_MAX, flags);
	memcpy(f + 512, desc, strlen(desc));
	for (uint64_t g = 0; g < nb_grains; g++) {
		uint64_t gl = MIN((uint64_t)GRAIN, len - g * GRAIN);
		uLongf clen = (uLongf)(cap - at - 12);
		bool zero = true;

		for (uint64_t i = 0; i < gl; i++)
			if (raw[g * GRAIN + i]) {
				zero = false;
				break;
			}
		if (zero)
			continue;
		put64(f + at, g * 128);
		assert(compress2(f + at + 12, &clen, raw + g * GRAIN, gl, 6) ==
		       Z_OK);
		put32(f + at + 8, (uint32_t)clen);
		gte[g] = (uint32_t)(at / 512);
		if (g == probe_grain)
			probe_at = at;
		at = (at + 12 + clen + 511) / 512 * 512;
	}
	for (uint64_t t = 0; t < nb_gts; t++) {
		bool any = false;
		for (int i = 0; i < 512; i++)
			any |= gte[t * 512 + i] != 0;
		if (!any)
			continue;
		put64(f + at, 4); /* GT marker: 4 sectors follow */
		put32(f + at + 12, 1);
		at += 512;
		gd[t] = (uint32_t)(at / 512);
		for (int i = 0; i < 512; i++)
			put32(f + at + 4 * i, gte[t * 512 + i]);
		at += 2048;
	}
	put64(f + at, (nb_gts * 4 + 511) / 512);
	put32(f + at + 12, 2); /* GD marker */
	at += 512;
	uint64_t gd_at = at;
	for (uint64_t t = 0; t < nb_gts; t++)
		put32(f + at + 4 * t, gd[t]);
	at += (nb_gts * 4 + 511) / 512 * 512;
	if (!o->no_footer) {
		put64(f + at, 1);
		put32(f + at + 12, 3); /* footer marker */
		at += 512;
		make_header(f + at, capacity, gd_at / 512, flags);
		at += 512;
	}
	at += 512; /* end-of-stream marker: a zero sector */
	spit(out, f, at);
	free(f);
	free(gd);
	free(gte);
	free(raw);
	return probe_at;
}

static void test_stream_vmware(void)
{
	struct stream_opts o = { 0 };
	size_t len;
	uint8_t *ref;

	make_mixed_raw("v.raw", 3 * MiB + 7 * 512, 2);
	make_vmware_stream("v.raw", "vw.vmdk", &o, 0);
	ref = slurp("v.raw", &len);
	struct img *img = open_ok("vw.vmdk", IMG_FORMAT_PROBE, 0, 0);
	compare_bytes(img, ref, len);
	compare_map(img, "vw.vmdk");
	img_close(img);
	/* qemu-img reads it the same way. */
	check_image("vw.vmdk", true);
	free(ref);
	printf("ok streamOptimized (footer, markers)\n");
}

/* ------------------------------------------------------------------ */
/* Descriptors with mixed extents, expected bytes computed here. */

static void test_descriptors(void)
{
	size_t alen, slen;
	uint8_t *a, *s, *expect;
	uint64_t off = 0;
	struct img *img;
	uint8_t buf[4096];

	make_mixed_raw("a.raw", 2 * MiB, 3);
	sh("rm -f sp.vmdk && qemu-img create -q -f vmdk sp.vmdk 1M && "
	   "qemu-io -f vmdk -c 'write -P 0x5c 64k 128k' sp.vmdk");
	sh("qemu-img convert -O raw sp.vmdk sp.raw");
	a = slurp("a.raw", &alen);
	s = slurp("sp.raw", &slen);
	/* RW FLAT a.raw from sector 8 (1 MiB), RDONLY SPARSE (1 MiB),
	 * ZERO (64 KiB), RW FLAT a.raw from 0 (512 KiB), NOACCESS (4 KiB
	 * of a.raw). */
	const char *d = "# Disk DescriptorFile\r\nversion=1\r\n"
			"CID=fffffffe\r\nparentCID=ffffffff\r\n"
			"createType=\"custom\"\r\n\r\n"
			"RW 2048 FLAT \"a.raw\" 8\r\n"
			"RDONLY 2048 SPARSE \"sp.vmdk\"\r\n"
			"RW 128 ZERO\r\n"
			"  RW 1024 FLAT \"a.raw\" 0  \r\n"
			"NOACCESS 8 FLAT \"a.raw\" 0\r\n"
			"ddb.adapterType = \"lsilogic\"\r\n";
	spit("mixed.vmdk", d, strlen(d));
	uint64_t size = 2048 * 512 + 2048 * 512 + 128 * 512 + 1024 * 512 +
			8 * 512;
	expect = calloc(1, size);
	memcpy(expect, a + 8 * 512, MiB);
	off += MiB;
	memcpy(expect + off, s, MiB);
	off += MiB + 64 * KiB;
	memcpy(expect + off, a, 512 * KiB);
	off += 512 * KiB;
	img = open_ok("mixed.vmdk", IMG_FORMAT_PROBE, 0, 0);
	assert(img_size(img) == size);
	/* Everything but the NOACCESS extent reads as computed. */
	{
		uint8_t *got = malloc(off);
		assert(img_pread(img, got, off, 0) == 0);
		assert(memcmp(got, expect, off) == 0);
		free(got);
	}
	assert(img_pread(img, buf, 512, off) == -EIO);
	assert(img_pread(img, buf, 1024, off - 512) == -EIO);
	struct img_extent ext;
	assert(img_block_status(img, 2 * MiB, 64 * KiB, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_ZERO && ext.len == 64 * KiB);
	assert(img_block_status(img, 0, MiB, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_DATA && ext.host_fd >= 0 &&
	       ext.host_off == 8 * 512);
	assert(img_block_status(img, MiB, MiB, &ext) == 0);
	assert(ext.kind == IMG_EXTENT_HOLE && ext.len == 64 * KiB);
	img_close(img);
	free(expect);

	/* RW only: qemu-img agrees. */
	d = "# Disk DescriptorFile\nversion=1\nCID=12345678\n"
	    "parentCID=ffffffff\ncreateType=\"monolithicFlat\"\n"
	    "RW 2048 FLAT \"a.raw\" 8\nRW 2048 SPARSE \"sp.vmdk\"\n"
	    "RW 1024 FLAT \"a.raw\"  0\n";
	spit("rw.vmdk", d, strlen(d));
	check_image("rw.vmdk", true);
	free(a);
	free(s);
	printf("ok descriptors\n");
}

/* An ESX sparse (COWD) extent, built here (qemu-img reads them but
 * does not write them): 8 KiB grains, one 4096-entry GT, grains out of
 * order in the file. */
static void test_cowd(void)
{
	const uint64_t grains[] = { 0, 5, 100, 101, 511 };
	uint8_t *f = calloc(1, 200 * 512);
	uint8_t *expect = calloc(1, 4 * MiB);
	uint64_t at = 40;

	memcpy(f, "COWD", 4);
	put32(f + 4, 1);
	put32(f + 8, 3);
	put32(f + 12, 8192);  /* 4 MiB */
	put32(f + 16, 16);    /* 8 KiB grains */
	put32(f + 20, 4);     /* GD at sector 4 */
	put32(f + 24, 1);     /* one GD entry */
	put32(f + 4 * 512, 8); /* GT at sector 8 (32 sectors) */
	for (size_t i = 0; i < sizeof(grains) / sizeof(grains[0]); i++) {
		uint64_t g = grains[sizeof(grains) / sizeof(grains[0]) - 1 - i];
		put32(f + 8 * 512 + 4 * g, (uint32_t)at);
		memset(f + at * 512, (int)(0x30 + g % 200), 8 * KiB);
		memset(expect + g * 8 * KiB, (int)(0x30 + g % 200), 8 * KiB);
		at += 16;
	}
	spit("esx-delta.vmdk", f, at * 512);
	const char *d = "# Disk DescriptorFile\nversion=1\nCID=11112222\n"
			"parentCID=ffffffff\ncreateType=\"vmfsSparse\"\n"
			"RW 8192 VMFSSPARSE \"esx-delta.vmdk\"\n";
	spit("esx.vmdk", d, strlen(d));
	check_image("esx.vmdk", true);
	struct img *img = open_ok("esx.vmdk", IMG_FORMAT_PROBE, 0, 0);
	compare_bytes(img, expect, 4 * MiB);
	img_close(img);
	free(f);
	free(expect);
	printf("ok vmfsSparse (COWD)\n");
}

static void test_parent(void)
{
	struct img_err err;
	struct img *img = NULL;

	sh("rm -f base.vmdk child.vmdk && qemu-img create -q -f vmdk "
	   "base.vmdk 10M && qemu-io -f vmdk -c 'write -P 0xb1 0 4M' "
	   "base.vmdk && qemu-img create -q -f vmdk -b base.vmdk -F vmdk "
	   "child.vmdk 10M && qemu-io -f vmdk -c 'write -P 0xc2 1M 1M' "
	   "-c 'write -P 0xc3 7M 64k' child.vmdk");
	check_image("child.vmdk", true);
	img = open_ok("child.vmdk", IMG_FORMAT_PROBE, 0, 0);
	assert(img_backing(img) != NULL);
	img_close(img);

	/* The parent changed: its CID no longer matches. */
	sh("cp child.vmdk child2.vmdk && python3 -c \"import sys; "
	   "b=bytearray(open('child2.vmdk','rb').read()); "
	   "i=b.find(b'parentCID='); b[i+10:i+18]=b'0badc1d0'; "
	   "open('child2.vmdk','wb').write(b)\"");
	assert(try_open("child2.vmdk", IMG_FORMAT_PROBE, 0, IMG_BACKING_LOCAL,
			0, &img, &err) == -EINVAL);
	assert(strstr(err.msg, "child2.vmdk") && strstr(err.msg, "CID"));
	/* backing=deny refuses the parent by name. */
	assert(try_open("child.vmdk", IMG_FORMAT_PROBE, 0, IMG_BACKING_DENY, 0,
			&img, &err) == -EPERM);
	assert(strstr(err.msg, "backing=deny"));
	printf("ok parent\n");
}

/* ------------------------------------------------------------------ */
/* Threads */

struct reader {
	const char *name;
	const uint8_t *ref;
	size_t len;
	struct img *img;
	unsigned seed;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint8_t *buf = malloc(256 * KiB);

	for (int i = 0; i < 400; i++) {
		uint64_t off = (uint64_t)rand_r(&r->seed) % r->len;
		size_t n = 1 + (size_t)(rand_r(&r->seed) % (256 * KiB));
		if (n > r->len - off)
			n = r->len - off;
		assert(img_pread(r->img, buf, n, off) == 0);
		assert(memcmp(buf, r->ref + off, n) == 0);
	}
	free(buf);
	return NULL;
}

static void test_threads(void)
{
	static const char *names[] = { "so.vmdk", "vw.vmdk", "child.vmdk" };

	for (size_t k = 0; k < 3; k++) {
		size_t len;
		uint8_t *ref;
		pthread_t t[4];
		struct reader r[4];

		sh("rm -f ref.raw && qemu-img convert -O raw %s ref.raw",
		   names[k]);
		ref = slurp("ref.raw", &len);
		struct img *img = open_ok(names[k], IMG_FORMAT_PROBE, 0, 4096);
		for (int i = 0; i < 4; i++) {
			r[i] = (struct reader){ names[k], ref, len, img,
						(unsigned)(i + 1) };
			assert(pthread_create(&t[i], NULL, reader_main,
					      &r[i]) == 0);
		}
		for (int i = 0; i < 4; i++)
			pthread_join(t[i], NULL);
		img_close(img);
		free(ref);
	}
	printf("ok threads\n");
}

/* ------------------------------------------------------------------ */
/* OVA */

static void test_ova(void)
{
	static const char *tar_formats[] = { "gnu", "pax", "ustar" };
	const char *ovf =
		"<?xml version=\"1.0\"?>\n<Envelope xmlns:ovf=\"http://"
		"schemas.dmtf.org/ovf/envelope/1\">\n<References>\n"
		"  <File ovf:href=\"disk-one.vmdk\" ovf:id=\"file1\"/>\n"
		"  <File ovf:id=\"file2\" ovf:href=\"disk-two.vmdk\"/>\n"
		"</References>\n<DiskSection/>\n</Envelope>\n";
	struct img_err err;
	struct img *img = NULL;
	size_t l1, l2;

	make_mixed_raw("d1.raw", 4 * MiB, 4);
	make_mixed_raw("d2.raw", 3 * MiB + 512, 5);
	sh("rm -f disk-*.vmdk && qemu-img convert -f raw -O vmdk -o "
	   "subformat=streamOptimized d1.raw disk-one.vmdk && qemu-img "
	   "convert -f raw -O vmdk -o subformat=streamOptimized d2.raw "
	   "disk-two.vmdk");
	spit("app.ovf", ovf, strlen(ovf));
	spit("notes.txt", "hello\n", 6);
	uint8_t *r1 = slurp("d1.raw", &l1), *r2 = slurp("d2.raw", &l2);

	for (size_t f = 0; f < 3; f++) {
		sh("rm -f app.ova && tar --format=%s -cf app.ova app.ovf "
		   "notes.txt disk-one.vmdk disk-two.vmdk", tar_formats[f]);
		img = open_ok("app.ova", IMG_FORMAT_PROBE, 0, 0);
		struct img_info info;
		assert(img_get_info(img, &info) == 0);
		assert(strcmp(info.format, "ova") == 0);
		assert(strcmp(info.fields[0].key, "disks") == 0 &&
		       strcmp(info.fields[0].value, "2") == 0);
		assert(strcmp(info.fields[1].value, "disk-one.vmdk (shown)") ==
		       0);
		assert(strcmp(info.fields[2].value, "disk-two.vmdk") == 0);
		compare_bytes(img, r1, l1);
		compare_map(img, "disk-one.vmdk");
		img_close(img);
		img = open_ok("app.ova", IMG_FORMAT_PROBE, 1, 0);
		compare_bytes(img, r1, l1);
		img_close(img);
		img = open_ok("app.ova", IMG_FORMAT_OVA, 2, 0);
		assert(img_get_info(img, &info) == 0);
		assert(strcmp(info.fields[1].key, "disk 1") == 0 &&
		       strcmp(info.fields[1].value, "disk-one.vmdk") == 0);
		assert(strcmp(info.fields[2].key, "disk 2") == 0 &&
		       strcmp(info.fields[2].value,
			      "disk-two.vmdk (shown)") == 0);
		compare_bytes(img, r2, l2);
		img_close(img);
		assert(try_open("app.ova", IMG_FORMAT_PROBE, 3,
				IMG_BACKING_LOCAL, 0, &img, &err) == -ENOENT);
		assert(strstr(err.msg, "app.ova: there is no disk 3: the OVA "
				       "holds 2 disks"));
	}

	/* A long member name (GNU long-name and pax path records), no OVF
	 * references: every .vmdk member in archive order. */
	char longname[200];
	memset(longname, 'n', sizeof(longname));
	memcpy(longname + 180, "-long.vmdk", 11);
	sh("cp disk-two.vmdk %s && printf '<Envelope/>' > bare.ovf",
	   longname);
	for (size_t f = 0; f < 2; f++) {
		sh("rm -f long.ova && tar --format=%s -cf long.ova bare.ovf %s "
		   "disk-one.vmdk", tar_formats[f], longname);
		img = open_ok("long.ova", IMG_FORMAT_PROBE, 0, 0);
		compare_bytes(img, r2, l2);
		img_close(img);
		img = open_ok("long.ova", IMG_FORMAT_OVA, 2, 0);
		compare_bytes(img, r1, l1);
		img_close(img);
	}
	/* A disk number for an image that holds one disk is refused. */
	assert(try_open("disk-one.vmdk", IMG_FORMAT_PROBE, 1, IMG_BACKING_LOCAL,
			0, &img, &err) == -EINVAL);
	assert(strstr(err.msg, "disk-one.vmdk: --disk picks a disk of an OVA "
			       "archive; this is a vmdk image, which holds one "
			       "disk"));
	/* A plain tar is not an OVA when probed. */
	sh("rm -f plain.tar && tar -cf plain.tar notes.txt disk-one.vmdk");
	img = open_ok("plain.tar", IMG_FORMAT_PROBE, 0, 0);
	struct img_info info;
	assert(img_get_info(img, &info) == 0 && strcmp(info.format, "raw") == 0);
	img_close(img);
	free(r1);
	free(r2);
	printf("ok ova\n");
}

/* ------------------------------------------------------------------ */
/* Hostile input */

static const char *case_files[64];
static size_t nb_case_files;

static void expect_open_fails(const char *name, enum img_format fmt,
			      int errnum, const char *words)
{
	struct img_err err;
	struct img *img = NULL;
	int ret = try_open(name, fmt, 0, IMG_BACKING_LOCAL, 0, &img, &err);

	if (ret != errnum || !strstr(err.msg, name) ||
	    !strcasestr(err.msg, words)) {
		fprintf(stderr, "%s: expected %d with '%s', got %d: %s\n", name,
			errnum, words, ret, ret < 0 ? err.msg : "(opened)");
		abort();
	}
	if (nb_case_files < 64)
		case_files[nb_case_files++] = name;
}

/* Opens name; [bad_off, bad_off + bad_len) reads -EIO, [good_off,
 * good_off + good_len) reads ref's bytes. */
static void expect_eio_range(const char *name, uint64_t bad_off,
			     uint64_t bad_len, uint64_t good_off,
			     uint64_t good_len, const uint8_t *ref)
{
	struct img *img = open_ok(name, IMG_FORMAT_VMDK, 0, 0);
	uint8_t *buf = malloc(MAX(bad_len, good_len));

	assert(img_pread(img, buf, bad_len, bad_off) == -EIO);
	assert(img_pread(img, buf, good_len, good_off) == 0);
	assert(memcmp(buf, ref + good_off, good_len) == 0);
	free(buf);
	img_close(img);
	if (nb_case_files < 64)
		case_files[nb_case_files++] = name;
}

static void test_hostile(void)
{
	size_t len;
	uint8_t *ref;
	struct stream_opts o = { 0 };

	/* Base: a monolithicSparse 4 MiB with data in grains 0 and 40. */
	sh("rm -f h.vmdk && qemu-img create -q -f vmdk h.vmdk 4M && qemu-io "
	   "-f vmdk -c 'write -P 0xa1 0 64k' -c 'write -P 0xa2 2560k 64k' "
	   "h.vmdk && qemu-img convert -O raw h.vmdk h.raw");
	ref = slurp("h.raw", &len);
	uint64_t gd_off = (uint64_t)read_le32("h.vmdk", 56) * 512;
	uint64_t gt0 = (uint64_t)read_le32("h.vmdk", gd_off) * 512;

#define CASE(n) sh("cp h.vmdk " n)
	CASE("trunc.vmdk");
	sh("truncate -s 1000 trunc.vmdk");
	expect_open_fails("trunc.vmdk", IMG_FORMAT_VMDK, -EINVAL, "truncated");

	CASE("tiny.vmdk");
	sh("truncate -s 100 tiny.vmdk");
	expect_open_fails("tiny.vmdk", IMG_FORMAT_PROBE, -EINVAL, "too short");

	CASE("gd-past-end.vmdk");
	patch_le64("gd-past-end.vmdk", 56, 0x7fffffffULL);
	patch_le64("gd-past-end.vmdk", 48, 0x7ffffff0ULL);
	expect_open_fails("gd-past-end.vmdk", IMG_FORMAT_VMDK, -EINVAL,
			  "grain directory");

	/* Only the primary directory damaged: the redundant one serves. */
	CASE("gd-rgd.vmdk");
	patch_le64("gd-rgd.vmdk", 56, 0x7fffffffULL);
	{
		struct img *img = open_ok("gd-rgd.vmdk", IMG_FORMAT_VMDK, 0, 0);
		compare_bytes(img, ref, len);
		img_close(img);
		case_files[nb_case_files++] = "gd-rgd.vmdk";
	}

	CASE("gte-past-end.vmdk");
	patch_le32("gte-past-end.vmdk", gt0 + 40 * 4, 0x7fffffffu);
	expect_eio_range("gte-past-end.vmdk", 2560 * KiB, 4096, 0, 64 * KiB,
			 ref);

	CASE("gt-past-end.vmdk");
	patch_le32("gt-past-end.vmdk", gd_off, 0x7ffffff0u);
	expect_eio_range("gt-past-end.vmdk", 0, 512, 0, 0, ref);

	CASE("grain0.vmdk");
	patch_le64("grain0.vmdk", 20, 0);
	expect_open_fails("grain0.vmdk", IMG_FORMAT_VMDK, -EINVAL,
			  "grain size");

	CASE("grain-huge.vmdk");
	patch_le64("grain-huge.vmdk", 20, 1ULL << 40);
	expect_open_fails("grain-huge.vmdk", IMG_FORMAT_VMDK, -EINVAL,
			  "grain size");

	CASE("cap63.vmdk");
	patch_le64("cap63.vmdk", 12, 1ULL << 63);
	expect_open_fails("cap63.vmdk", IMG_FORMAT_VMDK, -EINVAL, "capacity");

	/* 2^40 sectors need a 16 Mi-entry GD the file cannot hold: refused
	 * before anything is allocated. */
	CASE("cap40.vmdk");
	patch_le64("cap40.vmdk", 12, 1ULL << 40);
	expect_open_fails("cap40.vmdk", IMG_FORMAT_VMDK, -EINVAL,
			  "past the end");

	CASE("gtes0.vmdk");
	patch_le32("gtes0.vmdk", 44, 0);
	expect_open_fails("gtes0.vmdk", IMG_FORMAT_VMDK, -EINVAL,
			  "grain table");

	CASE("gtes-big.vmdk");
	patch_le32("gtes-big.vmdk", 44, 1u << 20);
	expect_open_fails("gtes-big.vmdk", IMG_FORMAT_VMDK, -EINVAL,
			  "grain table");

	CASE("version9.vmdk");
	patch_le32("version9.vmdk", 4, 9);
	expect_open_fails("version9.vmdk", IMG_FORMAT_VMDK, -ENOTSUP,
			  "version");

	CASE("textmode.vmdk");
	patch("textmode.vmdk", 75, "\n", 1);
	expect_open_fails("textmode.vmdk", IMG_FORMAT_VMDK, -EINVAL,
			  "text mode");

	/* A KDMV header read as COWD: its grain size field is 0. */
	CASE("cowd.vmdk");
	patch("cowd.vmdk", 0, "COWD", 4);
	expect_open_fails("cowd.vmdk", IMG_FORMAT_PROBE, -EINVAL, "grain size");

	/* Stream: a bad marker size, a grain whose deflate is garbage, a
	 * footer that is missing. */
	make_mixed_raw("st.raw", MiB, 6);
	free(ref);
	ref = slurp("st.raw", &len);
	uint64_t m0 = make_vmware_stream("st.raw", "bad-marker.vmdk", &o, 0);
	assert(m0 != 0);
	patch_le32("bad-marker.vmdk", m0 + 8, 0xffffffffu);
	expect_eio_range("bad-marker.vmdk", 100, 10, 64 * KiB, 900 * KiB, ref);

	m0 = make_vmware_stream("st.raw", "garbage.vmdk", &o, 1);
	assert(m0 != 0);
	patch("garbage.vmdk", m0 + 12 + 20, "garbage!garbage!", 16);
	expect_eio_range("garbage.vmdk", 64 * KiB + 5, 4096, 0, 64 * KiB, ref);

	o.no_footer = true;
	make_vmware_stream("st.raw", "no-footer.vmdk", &o, 0);
	expect_open_fails("no-footer.vmdk", IMG_FORMAT_PROBE, -EINVAL,
			  "footer");

	/* Descriptors. */
	const char *d;
	d = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n"
	    "RW 100 SPARSE \"self.vmdk\"\n";
	spit("self.vmdk", d, strlen(d));
	expect_open_fails("self.vmdk", IMG_FORMAT_PROBE, -EINVAL,
			  "sparse VMDK");

	/* Naming itself as FLAT is harmless: it reads its own text. */
	d = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n"
	    "RW 1 FLAT \"selfflat.vmdk\" 0\n";
	spit("selfflat.vmdk", d, strlen(d));
	{
		uint8_t b[512] = { 0 };
		struct img *img = open_ok("selfflat.vmdk", IMG_FORMAT_PROBE, 0,
					  0);
		assert(img_pread(img, b, 512, 0) == 0);
		assert(memcmp(b, d, strlen(d)) == 0);
		img_close(img);
	}

	d = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n"
	    "RW 8 FLAT \"../../../../../../etc/passwd\" 0\n";
	spit("dotdot.vmdk", d, strlen(d));
	expect_open_fails("dotdot.vmdk", IMG_FORMAT_PROBE, -EPERM,
			  "backing=follow");

	d = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicFlat\"\n"
	    "RW 8 FLAT \"/etc/passwd\" 0\n";
	spit("abs.vmdk", d, strlen(d));
	expect_open_fails("abs.vmdk", IMG_FORMAT_PROBE, -EPERM,
			  "backing=follow");

	d = "# Disk DescriptorFile\nversion=1\ncreateType=\"monolithicSparse\"\n"
	    "RW 8 SPARSE \"h.vmdk\"\nparentCID=12345678\n"
	    "parentFileNameHint=\"/etc/passwd\"\n";
	spit("abs-parent.vmdk", d, strlen(d));
	expect_open_fails("abs-parent.vmdk", IMG_FORMAT_PROBE, -EPERM,
			  "backing=follow");

	/* More extents than the cap; a line longer than the cap. */
	{
		size_t cap = 64 * 2000, n = 0;
		char *t = malloc(cap);
		n += (size_t)snprintf(t, cap, "# Disk DescriptorFile\n"
				      "version=1\n");
		for (int i = 0; i < 1100; i++)
			n += (size_t)snprintf(t + n, cap - n, "RW 1 ZERO\n");
		spit("many.vmdk", t, n);
		expect_open_fails("many.vmdk", IMG_FORMAT_PROBE, -EINVAL,
				  "more than");
		n = (size_t)snprintf(t, cap, "# Disk DescriptorFile\n"
				     "version=1\nRW 1 FLAT \"");
		memset(t + n, 'x', 5000);
		n += 5000;
		n += (size_t)snprintf(t + n, cap - n, "\" 0\n");
		spit("longline.vmdk", t, n);
		expect_open_fails("longline.vmdk", IMG_FORMAT_PROBE, -EINVAL,
				  "longer than");
		free(t);
	}

	/* A sparse extent smaller than the descriptor says. */
	d = "# Disk DescriptorFile\nversion=1\ncreateType=\"twoGbMaxExtentSparse\"\n"
	    "RW 99999 SPARSE \"h.vmdk\"\n";
	spit("oversize.vmdk", d, strlen(d));
	expect_open_fails("oversize.vmdk", IMG_FORMAT_PROBE, -EINVAL,
			  "header holds");

	/* A FIFO as an extent: refused, not opened (that would hang). */
	sh("rm -f fifo && mkfifo fifo");
	d = "# Disk DescriptorFile\nversion=1\nRW 4 FLAT \"fifo\" 0\n";
	spit("fifo.vmdk", d, strlen(d));
	expect_open_fails("fifo.vmdk", IMG_FORMAT_PROBE, -EINVAL,
			  "not a regular file");

	d = "# Disk DescriptorFile\nversion=1\nRW 4 VMFSRDM \"/dev/sda\"\n";
	spit("rdm.vmdk", d, strlen(d));
	expect_open_fails("rdm.vmdk", IMG_FORMAT_PROBE, -ENOTSUP, "VMFSRDM");

	d = "# Disk DescriptorFile\nversion=1\nRW 0 ZERO\n";
	spit("size0.vmdk", d, strlen(d));
	expect_open_fails("size0.vmdk", IMG_FORMAT_PROBE, -EINVAL,
			  "extent size");

	d = "# Disk DescriptorFile\nversion=1\nCID=1\n";
	spit("noext.vmdk", d, strlen(d));
	expect_open_fails("noext.vmdk", IMG_FORMAT_PROBE, -EINVAL, "no extents");

	/* OVA: a bad checksum, a member past the end. */
	sh("rm -f bad*.ova && printf '<Envelope/>' > b.ovf && "
	   "tar --format=ustar -cf bad-sum.ova b.ovf h.vmdk && "
	   "cp bad-sum.ova bad-size.ova");
	patch("bad-sum.ova", 1024, "X", 1); /* h.vmdk's header name */
	expect_open_fails("bad-sum.ova", IMG_FORMAT_OVA, -EINVAL, "checksum");
	{
		/* Size field of the second header: 077777777777, checksum
		 * fixed so that only the size is wrong. */
		char *p = path_of("bad-size.ova");
		int fd = open(p, O_RDWR);
		uint8_t h[512];
		unsigned sum = 0;
		assert(fd >= 0 && pread(fd, h, 512, 1024) == 512);
		memcpy(h + 124, "77777777777", 11);
		memset(h + 148, ' ', 8);
		for (int i = 0; i < 512; i++)
			sum += h[i];
		snprintf((char *)h + 148, 8, "%06o", sum);
		assert(pwrite(fd, h, 512, 1024) == 512);
		close(fd);
		free(p);
	}
	expect_open_fails("bad-size.ova", IMG_FORMAT_OVA, -EINVAL,
			  "past the end");

	/* Every case file through the fuzz target's function, as VMDK and
	 * as OVA (its own checks abort on a broken promise). */
	for (size_t i = 0; i < nb_case_files; i++) {
		size_t n;
		uint8_t *b = slurp(case_files[i], &n);
		fuzz_vmdk_format = IMG_FORMAT_VMDK;
		fuzz_vmdk_one(b, n);
		fuzz_vmdk_format = IMG_FORMAT_OVA;
		fuzz_vmdk_one(b, n);
		free(b);
	}
	free(ref);
	printf("ok hostile (%zu cases)\n", nb_case_files);
}

static void replay(const char *path)
{
	static uint8_t buf[1 << 20];
	size_t n = regress_read(path, buf, sizeof(buf));

	fuzz_vmdk_format = IMG_FORMAT_VMDK;
	fuzz_vmdk_one(buf, n);
	fuzz_vmdk_format = IMG_FORMAT_OVA;
	fuzz_vmdk_one(buf, n);
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1") != 0 ||
	    system("qemu-io --version >/dev/null 2>&1") != 0 ||
	    system("tar --version >/dev/null 2>&1") != 0) {
		fprintf(stderr, "qemu-img, qemu-io or tar missing: skip\n");
		return 77;
	}
	assert(mkdtemp(dir));
	test_subformats();
	test_stream_qemu();
	test_stream_vmware();
	test_descriptors();
	test_cowd();
	test_parent();
	test_threads();
	test_ova();
	test_hostile();
	printf("ok %zu fuzz reproducers\n",
	       for_each_regress_file("fuzz-vmdk", replay));
	sh("rm -rf %s", dir);
	return 0;
}
