/* test-qcow2-read.c: the qcow2 driver reads what qemu-img writes.
 *
 * Differential: each case builds an image with qemu-img / qemu-io, then
 * compares img_pread of the whole disk (and of odd-sized pieces) with
 * `qemu-img convert -O raw`, snapshots with `convert -l snapshot.name=`,
 * and block status with `qemu-img map --output=json` (which bytes are
 * data, at what depth and host offset). A few hand-patched headers and
 * tables check that corruption gives the promised errors. Skips (77)
 * when qemu-img or qemu-io is missing.
 */
#undef NDEBUG
#include "imgfmt.h"

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

static char dir[] = "/tmp/test-qcow2-read-XXXXXX";
#include "workdir.h"

static void patch_be32(const char *name, uint64_t off, uint32_t v);
static uint64_t read_be64(const char *name, uint64_t off);

static struct img *open_ro(const char *name, size_t cache_bytes)
{
	struct img_open_opts opts = { .read_only = true,
				      .cache_bytes = cache_bytes };
	struct img_err err;
	struct img *img;
	char *p = path_of(name);
	int ret = img_open(p, &opts, &img, &err);

	if (ret < 0) {
		fprintf(stderr, "open %s: %s\n", name, err.msg);
		abort();
	}
	free(p);
	return img;
}

/* Reads all of img in pieces of varying size and compares with ref. */
static void compare_bytes(struct img *img, const uint8_t *ref, size_t len)
{
	uint8_t *buf = malloc(len + 1);
	uint64_t off = 0;
	unsigned seed = 1;

	assert(img_size(img) == len);
	assert(img_pread(img, buf, len, 0) == 0);
	assert(memcmp(buf, ref, len) == 0);
	/* Odd pieces cross cluster, subcluster and L2 slice boundaries. */
	memset(buf, 0x5a, len);
	while (off < len) {
		size_t n = 1 + (size_t)(rand_r(&seed) % 200000);
		if (n > len - off)
			n = len - off;
		assert(img_pread(img, buf + off, n, off) == 0);
		off += n;
	}
	assert(memcmp(buf, ref, len) == 0);
	free(buf);
}

/* Per-512-byte view of block status: data or not, depth, host offset
 * (-1 for data without one, i.e. compressed). */
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
		assert(ext.off == off && ext.len > 0 &&
		       ext.len <= size - off);
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

static struct sector *qemu_map(const char *name, const char *extra,
			       size_t nb)
{
	struct sector *m = calloc(nb, sizeof(*m));
	char *cmd, line[512];
	FILE *f;

	assert(asprintf(&cmd, "cd %s && qemu-img map --output=json %s %s",
			dir, extra, name) > 0);
	f = popen(cmd, "r");
	assert(f);
	while (fgets(line, sizeof(line), f)) {
		uint64_t start, len;
		int depth;
		char *p;
		if (!(p = strstr(line, "\"start\":")))
			continue;
		assert(sscanf(p, "\"start\": %" SCNu64 ", \"length\": %"
			      SCNu64 ", \"depth\": %d", &start, &len,
			      &depth) == 3);
		bool data = strstr(line, "\"data\": true") != NULL;
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
	struct sector *theirs = qemu_map(name, "", nb);

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

/* The whole check for one image: bytes (default and tiny cache), map. */
static void check_image(const char *name)
{
	size_t len;
	uint8_t *ref;
	struct img *img;

	sh("qemu-img convert -O raw %s ref.raw", name);
	ref = slurp("ref.raw", &len);
	img = open_ro(name, 0);
	compare_bytes(img, ref, len);
	compare_map(img, name);
	img_close(img);
	/* A cache of one byte still holds the minimum of slices. */
	img = open_ro(name, 1);
	compare_bytes(img, ref, len);
	img_close(img);
	free(ref);
}

/* The write pattern most cases use: aligned and unaligned data, zeroes
 * over data and over holes, a write at the very end. */
static const char *pattern =
	"-c 'write -P 0x11 0 64k' -c 'write -P 0x22 70000 3000' "
	"-c 'write -P 0x33 1M 1M' -c 'write -z 1200k 200k' "
	"-c 'write -z -u 1600k 64k' -c 'write -z 5M 100k' "
	"-c 'write -P 0x44 3333333 777777' -c 'write -P 0x55 8388096 512'";

static void test_geometries(void)
{
	static const struct {
		unsigned cluster;
		const char *compat;
		unsigned refcount_bits;
	} cases[] = {
		{ 512, "0.10", 16 },   { 512, "1.1", 1 },
		{ 1024, "1.1", 2 },    { 4096, "1.1", 4 },
		{ 8192, "0.10", 16 },  { 65536, "1.1", 8 },
		{ 65536, "0.10", 16 }, { 131072, "1.1", 32 },
		{ 2u << 20, "1.1", 64 }, { 2u << 20, "0.10", 16 },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		sh("rm -f g.qcow2 && qemu-img create -f qcow2 -o "
		   "cluster_size=%u,compat=%s,refcount_bits=%u g.qcow2 8M",
		   cases[i].cluster, cases[i].compat, cases[i].refcount_bits);
		sh("qemu-io %s g.qcow2", pattern);
		check_image("g.qcow2");

		struct img *img = open_ro("g.qcow2", 0);
		struct img_info info;
		assert(img_get_info(img, &info) == 0);
		assert(strcmp(info.format, "qcow2") == 0);
		assert(info.cluster_size == cases[i].cluster);
		assert(info.qcow2.refcount_bits == cases[i].refcount_bits);
		assert(info.qcow2.version ==
		       (strcmp(cases[i].compat, "1.1") == 0 ? 3u : 2u));
		assert(info.virtual_size == 8 << 20);
		assert(!info.qcow2.extended_l2 && !info.backing_file);
		img_close(img);
	}
}

/* Preallocated zero clusters (write -z keeps the host cluster) and
 * plain ones (write -z -u, write -z on a hole), on a preallocated
 * image too. */
static void test_zero_clusters(void)
{
	sh("rm -f z.qcow2 && qemu-img create -f qcow2 -o "
	   "preallocation=metadata z.qcow2 4M");
	sh("qemu-io -c 'write -P 0x77 0 4M' -c 'write -z 64k 128k' "
	   "-c 'write -z -u 1M 256k' z.qcow2");
	check_image("z.qcow2");
	sh("rm -f z2.qcow2 && qemu-img create -f qcow2 z2.qcow2 4M");
	sh("qemu-io -c 'write -z 0 4M' -c 'write -P 1 1M 4k' z2.qcow2");
	check_image("z2.qcow2");
	/* An image of nothing but a size. */
	sh("rm -f e.qcow2 && qemu-img create -f qcow2 e.qcow2 1G");
	check_image("e.qcow2");
	sh("rm -f e0.qcow2 && qemu-img create -f qcow2 e0.qcow2 0");
	struct img *img = open_ro("e0.qcow2", 0);
	assert(img_size(img) == 0);
	img_close(img);
}

static void make_source_raw(void)
{
	/* Compressible runs, random data (stored uncompressed by
	 * convert -c when it does not shrink) and holes. */
	sh("rm -f src.raw && truncate -s 6M src.raw && "
	   "qemu-io -f raw -c 'write -P 0x61 0 1M' -c 'write -P 0x62 2M 300k' "
	   "src.raw && head -c 700000 /dev/urandom | dd of=src.raw bs=1 "
	   "seek=3500000 conv=notrunc status=none && "
	   "printf 'tail' | dd of=src.raw bs=1 seek=6291000 conv=notrunc "
	   "status=none");
}

static void test_compressed(void)
{
	static const char *types[] = { "zlib", "zstd" };
	static const unsigned clusters[] = { 512, 4096, 65536, 2u << 20 };

	make_source_raw();
	for (size_t t = 0; t < 2; t++) {
		for (size_t c = 0; c < 4; c++) {
			sh("rm -f c.qcow2 && qemu-img convert -c -f raw -O "
			   "qcow2 -o cluster_size=%u,compression_type=%s "
			   "src.raw c.qcow2", clusters[c], types[t]);
			check_image("c.qcow2");
			struct img *img = open_ro("c.qcow2", 0);
			struct img_info info;
			assert(img_get_info(img, &info) == 0);
			assert(strcmp(info.qcow2.compression, types[t]) == 0);
			img_close(img);
		}
		/* Compressed writes in place, mixed with plain ones. */
		sh("rm -f cw.qcow2 && qemu-img create -f qcow2 -o "
		   "compression_type=%s cw.qcow2 4M", types[t]);
		sh("qemu-io -c 'write -c -P 0x41 0 64k' -c 'write -c -P 0x42 "
		   "64k 64k' -c 'write -P 0x43 128k 64k' -c 'write -c -P 0x44 "
		   "1M 64k' -c 'write -P 0x45 1M 4k' cw.qcow2");
		check_image("cw.qcow2");
	}
}

static void test_extended_l2(void)
{
	static const unsigned clusters[] = { 16384, 65536, 2u << 20 };

	sh("rm -f xb.raw && qemu-img create -f raw xb.raw 8M && qemu-io -f "
	   "raw -c 'write -P 0x99 0 8M' xb.raw");
	for (size_t c = 0; c < 3; c++) {
		sh("rm -f x.qcow2 && qemu-img create -f qcow2 -o "
		   "extended_l2=on,cluster_size=%u x.qcow2 8M", clusters[c]);
		sh("qemu-io %s -c 'write -P 0x66 %u 1k' x.qcow2", pattern,
		   clusters[c] * 3 + clusters[c] / 32 * 5);
		check_image("x.qcow2");
		struct img *img = open_ro("x.qcow2", 0);
		struct img_info info;
		assert(img_get_info(img, &info) == 0 && info.qcow2.extended_l2);
		img_close(img);

		/* Preallocated host clusters whose subclusters are not
		 * allocated (QEMU's "unallocated, with offset"). */
		sh("rm -f xp.qcow2 && qemu-img create -f qcow2 -o "
		   "extended_l2=on,cluster_size=%u,preallocation=metadata "
		   "xp.qcow2 8M", clusters[c]);
		sh("qemu-io %s xp.qcow2", pattern);
		check_image("xp.qcow2");

		/* Unallocated subclusters read from the backing file. */
		sh("rm -f xo.qcow2 && qemu-img create -f qcow2 -o "
		   "extended_l2=on,cluster_size=%u -b xb.raw -F raw "
		   "xo.qcow2 8M", clusters[c]);
		sh("qemu-io %s xo.qcow2", pattern);
		check_image("xo.qcow2");
	}
}

static uint32_t read_be32(const char *name, uint64_t off)
{
	return (uint32_t)(read_be64(name, off) >> 32);
}

/* Turns the backing format extension into an unknown one (which readers
 * ignore), leaving an image whose backing file must be probed. */
static void drop_backing_format(const char *name)
{
	uint64_t off = read_be32(name, 100);

	for (;;) {
		uint32_t type = read_be32(name, off);
		uint32_t len = read_be32(name, off + 4);
		assert(type != 0);
		if (type == 0xe2792acau) {
			patch_be32(name, off, 0x0badf00du);
			return;
		}
		off += 8 + ((len + 7) & ~7u);
	}
}

static void test_backing(void)
{
	/* base.raw (3M) <- mid.qcow2 (6M, absolute name) <- top.qcow2
	 * (8M, relative name); and a top smaller than its backing. */
	sh("rm -f base.raw mid.qcow2 top.qcow2 small.qcow2 probe.qcow2");
	sh("qemu-img create -f raw base.raw 3M && qemu-io -f raw -c "
	   "'write -P 0xb0 0 3M' base.raw");
	sh("qemu-img create -f qcow2 -b %s/base.raw -F raw mid.qcow2 6M",
	   dir);
	sh("qemu-io -c 'write -P 0xb1 1M 64k' -c 'write -P 0xb2 2900k "
	   "300k' -c 'write -z 2M 64k' mid.qcow2");
	sh("qemu-img create -f qcow2 -o cluster_size=4096 -b mid.qcow2 -F "
	   "qcow2 top.qcow2 8M");
	sh("qemu-io -c 'write -P 0xb3 1030k 8k' -c 'write -P 0xb4 7M 4k' "
	   "top.qcow2");
	check_image("top.qcow2");
	check_image("mid.qcow2");

	struct img *img = open_ro("top.qcow2", 0);
	struct img_info info;
	assert(img_get_info(img, &info) == 0);
	assert(strcmp(info.backing_file, "mid.qcow2") == 0);
	assert(strcmp(info.backing_format, "qcow2") == 0);
	assert(img_backing(img) && img_backing(img_backing(img)));
	img_close(img);

	/* v2 images keep the backing format in an extension, too. */
	sh("rm -f v2.qcow2 && qemu-img create -f qcow2 -o compat=0.10 -b "
	   "base.raw -F raw v2.qcow2 5M");
	sh("qemu-io -c 'write -P 0xb6 100k 1M' v2.qcow2");
	img = open_ro("v2.qcow2", 0);
	assert(img_get_info(img, &info) == 0 && info.qcow2.version == 2);
	assert(strcmp(info.backing_format, "raw") == 0);
	img_close(img);
	check_image("v2.qcow2");

	sh("qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 small.qcow2 2M");
	sh("qemu-io -c 'write -P 0xb5 0 4k' small.qcow2");
	check_image("small.qcow2");

	/* No backing format extension: the backing file is probed. */
	sh("qemu-img create -f qcow2 -b mid.qcow2 -F qcow2 probe.qcow2 6M");
	drop_backing_format("probe.qcow2");
	img = open_ro("probe.qcow2", 0);
	assert(img_get_info(img, &info) == 0);
	assert(info.backing_file && !info.backing_format);
	img_close(img);
	check_image("probe.qcow2");
}

static void test_data_file(void)
{
	for (int raw = 0; raw < 2; raw++) {
		sh("rm -f d.qcow2 d.data && qemu-img create -f qcow2 -o "
		   "data_file=d.data,data_file_raw=%s d.qcow2 8M",
		   raw ? "on" : "off");
		sh("qemu-io %s d.qcow2", pattern);
		check_image("d.qcow2");
		struct img *img = open_ro("d.qcow2", 0);
		struct img_info info;
		assert(img_get_info(img, &info) == 0);
		assert(strcmp(info.qcow2.data_file, "d.data") == 0);
		assert(info.qcow2.data_file_raw == raw);
		img_close(img);
	}
}

static void check_snapshot(struct img *img, const char *name,
			   const char *id, uint64_t size)
{
	struct img *snap;
	struct img_err err;
	uint8_t *ref;
	size_t len;

	sh("qemu-img convert -l snapshot.name=%s -O raw s.qcow2 snap.raw",
	   name);
	ref = slurp("snap.raw", &len);
	/* qemu-img converts a snapshot at the image's current size; the
	 * snapshot's own disk size is what we expose, so compare that. */
	assert(len >= size);
	len = size;
	assert(img_snapshot_open(img, id, &snap, &err) == 0);
	assert(img_is_read_only(snap) && img_size(snap) == size);
	compare_bytes(snap, ref, len);
	assert(img_pwrite(snap, ref, 1, 0) == -EROFS);
	img_close(snap);
	free(ref);
}

static void test_snapshots(void)
{
	struct img_snapshot *list;
	struct img_err err;
	struct img *img, *snap;
	size_t nb;

	sh("rm -f s.qcow2 sb.raw && qemu-img create -f raw sb.raw 16M && "
	   "qemu-io -f raw -c 'write -P 0xee 0 16M' sb.raw");
	sh("qemu-img create -f qcow2 -b sb.raw -F raw s.qcow2 4M");
	sh("qemu-io -c 'write -P 0x01 0 1M' -c 'write -c -P 0x0c 1M 64k' "
	   "s.qcow2");
	sh("qemu-img snapshot -c first s.qcow2");
	sh("qemu-io -c 'write -P 0x02 512k 1M' -c 'write -z 3M 64k' "
	   "s.qcow2");
	sh("qemu-img resize s.qcow2 8M");
	sh("qemu-io -c 'write -P 0x03 6M 100k' s.qcow2");
	sh("qemu-img snapshot -c second s.qcow2");
	sh("qemu-io -c 'write -P 0x04 0 64k' s.qcow2");
	check_image("s.qcow2");

	img = open_ro("s.qcow2", 0);
	assert(img_snapshot_list(img, &list, &nb) == 0);
	assert(nb == 2);
	assert(strcmp(list[0].name, "first") == 0 && list[0].disk_size == 4 << 20);
	assert(strcmp(list[1].name, "second") == 0 && list[1].disk_size == 8 << 20);
	assert(list[0].date_sec > 0);
	check_snapshot(img, "first", list[0].id, 4 << 20);
	check_snapshot(img, "second", list[1].id, 8 << 20);
	/* Two snapshot handles at once, sharing the parent's cache. */
	assert(img_snapshot_open(img, list[0].id, &snap, &err) == 0);
	struct img *snap2;
	assert(img_snapshot_open(img, list[1].id, &snap2, &err) == 0);
	img_close(snap2);
	img_close(snap);
	assert(img_snapshot_open(img, "no-such-id", &snap, &err) == -ENOENT);
	assert(strstr(err.msg, "no-such-id"));
	img_snapshot_list_free(list, nb);
	img_close(img);
}

/* Parallel readers over a tiny cache see the same bytes as one reader. */
struct reader {
	struct img *img;
	const uint8_t *ref;
	size_t len;
	unsigned seed;
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint8_t *buf = malloc(300000);

	for (int i = 0; i < 400; i++) {
		size_t n = 1 + (size_t)(rand_r(&r->seed) % 300000);
		uint64_t off = (uint64_t)rand_r(&r->seed) % r->len;
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
	pthread_t th[8];
	struct reader r[8];
	size_t len;
	uint8_t *ref;
	struct img *img;

	sh("rm -f t.qcow2 && qemu-img create -f qcow2 -o cluster_size=4096 "
	   "t.qcow2 8M");
	sh("qemu-io %s -c 'write -c -P 0x21 4M 64k' t.qcow2", pattern);
	sh("qemu-img convert -O raw t.qcow2 ref.raw");
	ref = slurp("ref.raw", &len);
	img = open_ro("t.qcow2", 1);
	for (int i = 0; i < 8; i++) {
		r[i] = (struct reader){ img, ref, len, (unsigned)i + 1 };
		assert(pthread_create(&th[i], NULL, reader_main, &r[i]) == 0);
	}
	for (int i = 0; i < 8; i++)
		assert(pthread_join(th[i], NULL) == 0);
	img_close(img);
	free(ref);
}

/* --- hand-patched images ---------------------------------------------- */

static void patch(const char *name, uint64_t off, const void *data,
		  size_t len)
{
	char *p = path_of(name);
	int fd = open(p, O_WRONLY);

	assert(fd >= 0);
	assert(pwrite(fd, data, len, (off_t)off) == (ssize_t)len);
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

static uint64_t read_be64(const char *name, uint64_t off)
{
	char *p = path_of(name);
	uint8_t b[8];
	uint64_t v = 0;
	int fd = open(p, O_RDONLY);

	assert(fd >= 0 && pread(fd, b, 8, (off_t)off) == 8);
	close(fd);
	free(p);
	for (int i = 0; i < 8; i++)
		v = v << 8 | b[i];
	return v;
}

static int try_open(const char *name, bool read_only, struct img_err *err)
{
	struct img_open_opts opts = { .read_only = read_only };
	struct img *img;
	char *p = path_of(name);
	int ret = img_open(p, &opts, &img, err);

	free(p);
	if (ret == 0)
		img_close(img);
	return ret;
}

static void fresh(const char *opts)
{
	sh("rm -f h.qcow2 && qemu-img create -f qcow2 %s h.qcow2 4M && "
	   "qemu-io -c 'write -P 0x5a 0 128k' h.qcow2", opts);
}

static void expect_open(int errnum, const char *msg_part, bool read_only)
{
	struct img_err err;
	int ret = try_open("h.qcow2", read_only, &err);

	if (ret != errnum || (msg_part && !strstr(err.msg, msg_part))) {
		fprintf(stderr, "expected %d '%s', got %d '%s'\n", errnum,
			msg_part, ret, ret ? err.msg : "");
		abort();
	}
	if (ret)
		assert(strstr(err.msg, "h.qcow2"));
}

static void test_hostile(void)
{
	uint8_t feat[48] = { 0, 40 };

	fresh("");
	expect_open(0, NULL, true);
	patch_be32("h.qcow2", 4, 4);
	expect_open(-EINVAL, "version 4", true);

	fresh("");
	patch_be32("h.qcow2", 20, 30);
	expect_open(-EINVAL, "cluster_bits 30", true);

	/* An L1 table of 2^31 entries is refused, not allocated. */
	fresh("");
	patch_be32("h.qcow2", 36, 0x80000000u);
	expect_open(-EINVAL, "L1 table", true);
	fresh("");
	patch_be64("h.qcow2", 40, 0x10000000000ull);
	expect_open(-EINVAL, "past the end", true);
	fresh("");
	patch_be64("h.qcow2", 40, 0x10200);
	expect_open(-EINVAL, "not aligned", true);
	fresh("");
	patch_be64("h.qcow2", 40, 0);
	expect_open(-EINVAL, "overlaps the header", true);

	/* A snapshot table of 2^20 entries. */
	fresh("");
	patch_be32("h.qcow2", 60, 1u << 20);
	patch_be64("h.qcow2", 64, 0x10000);
	expect_open(-EINVAL, "snapshots exceed", true);

	fresh("");
	patch_be32("h.qcow2", 32, 2);
	expect_open(-EINVAL, "encrypted", true);

	/* An unknown incompatible bit is named from the feature table. */
	fresh("");
	memcpy(feat + 2, "teleport", 8);
	patch_be32("h.qcow2", 112, 0x6803f857u);
	patch_be32("h.qcow2", 116, 48);
	patch("h.qcow2", 120, feat, sizeof(feat));
	patch_be32("h.qcow2", 168, 0);
	patch_be64("h.qcow2", 72, 1ull << 40);
	expect_open(-EINVAL, "bit 40 (teleport)", true);

	/* Corrupt: read-only only. Dirty: readable. */
	fresh("");
	patch_be64("h.qcow2", 72, 2);
	expect_open(-EROFS, "corrupt", false);
	expect_open(0, NULL, true);
	fresh("");
	patch_be64("h.qcow2", 72, 1);
	expect_open(0, NULL, true);

	fresh("");
	patch_be32("h.qcow2", 96, 7);
	expect_open(-EINVAL, "refcount_order 7", true);
	fresh("");
	patch_be32("h.qcow2", 116, 0x7ffffff0);
	expect_open(-EINVAL, "runs past", true);

	/* An L2 entry past the end of the file: -EIO on read only. */
	fresh("");
	{
		uint64_t l1 = read_be64("h.qcow2", 40);
		uint64_t l2 = read_be64("h.qcow2", l1) & 0x00fffffffffffe00ull;
		struct img_open_opts opts = { .read_only = true };
		struct img_err err;
		struct img *img;
		struct img_extent ext;
		uint8_t buf[4096];
		char *p = path_of("h.qcow2");

		patch_be64("h.qcow2", l2, (1ull << 63) | (1ull << 40));
		patch_be64("h.qcow2", l2 + 8, (1ull << 63) | 0x10200);
		assert(img_open(p, &opts, &img, &err) == 0);
		assert(img_pread(img, buf, sizeof(buf), 0) == -EIO);
		assert(img_pread(img, buf, sizeof(buf), 65536) == -EIO);
		assert(img_block_status(img, 0, 4096, &ext) == -EIO);
		assert(img_pread(img, buf, sizeof(buf), 2 << 20) == 0);
		img_close(img);
		free(p);
	}

	/* Garbage where compressed data should be: -EIO. */
	sh("rm -f h.qcow2 && qemu-img convert -c -f raw -O qcow2 src.raw "
	   "h.qcow2");
	{
		uint64_t l1 = read_be64("h.qcow2", 40);
		uint64_t l2 = read_be64("h.qcow2", l1) & 0x00fffffffffffe00ull;
		uint64_t e = read_be64("h.qcow2", l2);
		uint64_t host = e & ((1ull << 54) - 1);
		uint8_t junk[512];
		struct img_open_opts opts = { .read_only = true };
		struct img_err err;
		struct img *img;
		uint8_t buf[4096];
		char *p = path_of("h.qcow2");

		assert(e & (1ull << 62));
		memset(junk, 0xff, sizeof(junk));
		patch("h.qcow2", host, junk, sizeof(junk));
		assert(img_open(p, &opts, &img, &err) == 0);
		assert(img_pread(img, buf, sizeof(buf), 0) == -EIO);
		img_close(img);
		free(p);
	}
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1") != 0 ||
	    system("qemu-io --version >/dev/null 2>&1") != 0)
		return 77;
	assert(mkdtemp(dir));
	test_geometries();
	test_zero_clusters();
	test_compressed();
	test_extended_l2();
	test_backing();
	test_data_file();
	test_snapshots();
	test_threads();
	test_hostile();
	sh("rm -rf %s", dir);
	return 0;
}
