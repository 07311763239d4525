/* test-zahead.c: reads of compressed images with the decompress-ahead
 * worker (imgfmt/zahead.c) at work, checked byte for byte against what
 * qemu-img converts the same images to.
 *
 *   - zlib and zstd qcow2 (64 KiB clusters) and a streamOptimized VMDK,
 *     read-only: sequential reads of FUSE's 128 KiB and of 1 MiB (the
 *     worker runs ahead), backward and random reads, a request that ends
 *     mid-cluster followed by the rest of the stream, two sequential
 *     streams and a random reader at once;
 *   - close right after the worker was started (repeated; the test
 *     checks that a worker thread did exist), which must join it;
 *   - a read-write qcow2: sequential reads start the worker, then writes
 *     (partial, whole-cluster, discard) land on compressed clusters of
 *     its window while it runs; every read afterwards sees the writes,
 *     qemu-img check passes and qemu-img's own reading of the image
 *     equals what we read;
 *   - a read that ends mid-cluster, whose cached cluster a write then
 *     rewrites: the next read of it sees the write;
 *   - a snapshot handle and the top handle (one cache, two mappings)
 *     reading streams in turn, the snapshot handle closed while the
 *     worker follows its stream.
 * Skips (77) without qemu-img.
 */
#undef NDEBUG
#include "imgfmt.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char dir[] = "/tmp/test-zahead-XXXXXX";
#include "workdir.h"

#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MiB (1u << 20)
#define DISK_BYTES (24u * MiB)
#define CLUSTER 65536u

static struct img *open_img(const char *name, bool read_only)
{
	struct img_open_opts opts = { .read_only = read_only };
	struct img_err err;
	struct img *img;
	char *p = path_of(name);

	if (img_open(p, &opts, &img, &err) < 0) {
		fprintf(stderr, "open %s: %s\n", name, err.msg);
		abort();
	}
	free(p);
	return img;
}

/* Data that compresses about 2:1, like the benchmarks' (each 4 KiB:
 * 2 KiB pseudo-random, 2 KiB of a repeated byte), with a plain 64 KiB
 * of zeroes here and there so that runs of compressed clusters are
 * broken by unallocated ones. */
static void make_source(void)
{
	uint8_t *buf = malloc(DISK_BYTES);
	uint64_t x = 0x9e3779b97f4a7c15ull;
	char *p = path_of("src.raw");
	FILE *f;

	assert(buf);
	for (size_t i = 0; i < DISK_BYTES; i += 4096) {
		for (size_t j = 0; j < 2048; j += 8) {
			x ^= x << 13;
			x ^= x >> 7;
			x ^= x << 17;
			memcpy(buf + i + j, &x, 8);
		}
		memset(buf + i + 2048, (int)(i >> 12) & 0xff, 2048);
	}
	for (size_t i = 3 * MiB; i < DISK_BYTES; i += 5 * MiB)
		memset(buf + i, 0, CLUSTER);
	f = fopen(p, "wb");
	assert(f && fwrite(buf, 1, DISK_BYTES, f) == DISK_BYTES);
	assert(fclose(f) == 0);
	free(buf);
	free(p);
}

/* qemu-img's reading of name, the oracle. */
static uint8_t *oracle(const char *name, const char *fmt)
{
	size_t len;
	uint8_t *ref;

	sh("rm -f ref.raw && qemu-img convert -f %s -O raw %s ref.raw", fmt,
	   name);
	ref = slurp("ref.raw", &len);
	assert(len == DISK_BYTES);
	return ref;
}

static void expect_range(struct img *img, const uint8_t *ref, uint64_t off,
			 size_t len, uint8_t *buf)
{
	assert(img_pread(img, buf, len, off) == 0);
	if (memcmp(buf, ref + off, len) != 0) {
		size_t i = 0;

		while (buf[i] == ref[off + i])
			i++;
		fprintf(stderr, "differs at %llu (read of %zu at %llu)\n",
			(unsigned long long)(off + i), len,
			(unsigned long long)off);
		abort();
	}
}

static void read_sequential(struct img *img, const uint8_t *ref, size_t bs)
{
	uint8_t *buf = malloc(bs);

	for (uint64_t off = 0; off < DISK_BYTES; off += bs)
		expect_range(img, ref, off, MIN(bs, DISK_BYTES - off), buf);
	free(buf);
}

static void read_backward(struct img *img, const uint8_t *ref)
{
	uint8_t buf[128 << 10];

	for (uint64_t end = DISK_BYTES; end > 0; end -= sizeof(buf))
		expect_range(img, ref, end - sizeof(buf), sizeof(buf), buf);
}

static uint64_t next_rand(uint64_t *x)
{
	*x ^= *x << 13;
	*x ^= *x >> 7;
	*x ^= *x << 17;
	return *x;
}

static void read_random(struct img *img, const uint8_t *ref, uint64_t seed,
			unsigned nb)
{
	uint8_t *buf = malloc(3 * CLUSTER);

	for (unsigned i = 0; i < nb; i++) {
		uint64_t off = next_rand(&seed) % DISK_BYTES;
		size_t len = 1 + next_rand(&seed) % (3 * CLUSTER);

		expect_range(img, ref, off, MIN(len, DISK_BYTES - off), buf);
	}
	free(buf);
}

/* A stream whose first request ends mid-cluster, then goes on from
 * there: the rest of that cluster comes from the cache (or the worker),
 * the next ones from the worker. */
static void read_mid_cluster(struct img *img, const uint8_t *ref)
{
	uint8_t *buf = malloc(MiB);
	uint64_t off = 5 * MiB;

	expect_range(img, ref, off, 100000, buf);
	off += 100000;
	for (int i = 0; i < 24; i++) {
		size_t len = i % 3 == 0 ? 128u << 10 : 77777;

		expect_range(img, ref, off, len, buf);
		off += len;
	}
	free(buf);
}

struct reader {
	struct img *img;
	const uint8_t *ref;
	int kind; /* 0, 1: sequential from a half; 2: random */
};

static void *reader_main(void *arg)
{
	struct reader *r = arg;
	uint8_t *buf = malloc(128 << 10);
	uint64_t start = r->kind == 1 ? DISK_BYTES / 2 : 0;

	if (r->kind == 2) {
		read_random(r->img, r->ref, 77, 300);
	} else {
		for (uint64_t off = start; off < start + DISK_BYTES / 2;
		     off += 128 << 10)
			expect_range(r->img, r->ref, off, 128 << 10, buf);
	}
	free(buf);
	return NULL;
}

static void read_concurrently(struct img *img, const uint8_t *ref)
{
	struct reader r[3];
	pthread_t t[3];

	for (int i = 0; i < 3; i++) {
		r[i] = (struct reader){ img, ref, i };
		assert(pthread_create(&t[i], NULL, reader_main, &r[i]) == 0);
	}
	for (int i = 0; i < 3; i++)
		assert(pthread_join(t[i], NULL) == 0);
}

static unsigned nb_threads(void)
{
	DIR *d = opendir("/proc/self/task");
	unsigned n = 0;

	assert(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n - 2; /* . and .. */
}

/* Close at once after sequential reads started the worker on the next
 * window: img_close must stop and join it (ASan and TSan builds
 * check nothing is used after it is freed). */
static void close_while_ahead(const char *name, const uint8_t *ref)
{
	uint8_t buf[128 << 10];
	unsigned seen_worker = 0;

	for (int i = 0; i < 30; i++) {
		struct img *img = open_img(name, true);
		uint64_t off = (uint64_t)(i % 8) * 2 * MiB;
		unsigned before = nb_threads();

		/* Three requests in a row make a stream. */
		for (int k = 0; k < 3; k++)
			expect_range(img, ref, off + k * sizeof(buf),
				     sizeof(buf), buf);
		if (nb_threads() > before)
			seen_worker++;
		img_close(img);
		/* Joined; the kernel drops the task from /proc an instant
		 * after the join returns. */
		for (int w = 0; w < 200 && nb_threads() != before; w++)
			usleep(10000);
		assert(nb_threads() == before);
	}
	/* The worker did run in these cases (not a test of nothing). */
	assert(seen_worker > 0);
}

static void check_read_only(const char *name, const char *fmt)
{
	uint8_t *ref = oracle(name, fmt);
	struct img *img = open_img(name, true);

	read_sequential(img, ref, 128 << 10);
	read_sequential(img, ref, MiB);
	read_backward(img, ref);
	read_random(img, ref, 1, 400);
	read_mid_cluster(img, ref);
	read_sequential(img, ref, 4096);
	read_concurrently(img, ref);
	img_close(img);
	close_while_ahead(name, ref);
	free(ref);
	printf("ok %s: read-only reads match qemu-img\n", name);
}

static void put_pattern(uint8_t *ref, struct img *img, uint64_t off,
			size_t len, int byte)
{
	uint8_t *buf = malloc(len);

	memset(buf, byte, len);
	assert(img_pwrite(img, buf, len, off) == 0);
	memcpy(ref + off, buf, len);
	free(buf);
}

/* A snapshot handle shares the image's cache with the top handle but
 * maps through its own L1 table: the worker follows one handle's stream
 * at a time, and closing a snapshot handle whose stream it follows
 * stops it first. The snapshot holds the image's first state, the top
 * was rewritten in part since (qemu-io): each handle must read its own
 * bytes, and (under ASan and TSan) the worker must not use a closed
 * handle's view. */
static void check_snapshot_views(const char *name)
{
	uint8_t *buf = malloc(128 << 10);
	uint8_t *ref_snap, *ref_top;
	struct img_err err;
	struct img *top, *snap;

	sh("cp %s sn.qcow2 && qemu-img snapshot -c first sn.qcow2", name);
	ref_snap = oracle("sn.qcow2", "qcow2");
	sh("qemu-io -c 'write -P 0x21 1M 3M' -c 'write -P 0x22 9M 64k' "
	   "sn.qcow2");
	ref_top = oracle("sn.qcow2", "qcow2");
	top = open_img("sn.qcow2", true);
	for (int round = 0; round < 20; round++) {
		uint64_t off = (uint64_t)(round % 6) * 3 * MiB;

		assert(img_snapshot_open(top, "1", &snap, &err) == 0);
		/* The two streams interleave, then the snapshot's is cut
		 * short by its close while the worker runs. */
		for (int k = 0; k < 4; k++) {
			uint64_t o = off + (uint64_t)k * (128 << 10);

			expect_range(snap, ref_snap, o, 128 << 10, buf);
			if (round % 2)
				expect_range(top, ref_top, o, 128 << 10, buf);
		}
		img_close(snap);
		for (int k = 0; k < 4; k++)
			expect_range(top, ref_top,
				     off + (uint64_t)k * (128 << 10), 128 << 10,
				     buf);
	}
	img_close(top);
	free(ref_snap);
	free(ref_top);
	free(buf);
	printf("ok %s: snapshot and top handles read ahead apart\n", name);
}

/* Writes on compressed clusters while the worker decompresses them. */
static void check_read_write(const char *name)
{
	uint8_t *ref;
	uint8_t *buf = malloc(MiB);
	struct img *img;

	sh("cp %s rw.qcow2", name);
	ref = oracle("rw.qcow2", "qcow2");
	img = open_img("rw.qcow2", false);
	for (int round = 0; round < 6; round++) {
		uint64_t base = (uint64_t)round * 4 * MiB;

		/* Three requests: the worker goes on over the next 2 MiB. */
		for (int k = 0; k < 3; k++)
			expect_range(img, ref, base + k * (128 << 10),
				     128 << 10, buf);
		/* At once, on clusters of its window: part of one (a copy
		 * on write of a compressed cluster), a whole one, three
		 * across cluster ends, a discard of two whole ones (no
		 * backing file: they read as zeroes). */
		put_pattern(ref, img, base + 300000, 5000, 0x5a + round);
		put_pattern(ref, img, base + 6 * CLUSTER, CLUSTER, 0x33);
		put_pattern(ref, img, base + 9 * CLUSTER + 100, 3 * CLUSTER,
			    0x44);
		assert(img_discard(img, base + 14 * CLUSTER, 2 * CLUSTER) ==
		       0);
		memset(ref + base + 14 * CLUSTER, 0, 2 * CLUSTER);
		for (uint64_t off = base; off < base + 4 * MiB;
		     off += 128 << 10)
			expect_range(img, ref, off, 128 << 10, buf);
		assert(img_flush(img) == 0);
	}
	/* A whole MiB of compressed clusters rewritten: their host
	 * clusters are freed and reused by later writes. */
	put_pattern(ref, img, 20 * MiB, MiB, 0x66);
	assert(img_flush(img) == 0);
	put_pattern(ref, img, 22 * MiB + 12345, 2 * CLUSTER, 0x77);
	assert(img_flush(img) == 0);
	read_sequential(img, ref, 128 << 10);
	read_random(img, ref, 9, 300);

	/* A cluster cached by a read that ended inside it, then written:
	 * the next read of it sees the write. */
	expect_range(img, ref, 13 * MiB, 1000, buf);
	put_pattern(ref, img, 13 * MiB + 2000, 100, 0x99);
	expect_range(img, ref, 13 * MiB, CLUSTER, buf);
	img_close(img);

	sh("qemu-img check -q rw.qcow2");
	uint8_t *after = oracle("rw.qcow2", "qcow2");
	assert(memcmp(after, ref, DISK_BYTES) == 0);
	free(after);
	free(ref);
	free(buf);
	printf("ok %s: writes during read-ahead, qemu-img agrees\n", name);
}

int main(void)
{
	if (system("qemu-img --version >/dev/null 2>&1") != 0)
		return 77;
	assert(mkdtemp(dir));
	make_source();
	sh("qemu-img convert -c -f raw -O qcow2 -o cluster_size=65536,"
	   "compression_type=zlib src.raw zlib.qcow2");
	sh("qemu-img convert -c -f raw -O qcow2 -o cluster_size=65536,"
	   "compression_type=zstd src.raw zstd.qcow2");
	sh("qemu-img convert -f raw -O vmdk -o subformat=streamOptimized "
	   "src.raw so.vmdk");
	check_read_only("zlib.qcow2", "qcow2");
	check_read_only("zstd.qcow2", "qcow2");
	check_read_only("so.vmdk", "vmdk");
	check_snapshot_views("zlib.qcow2");
	check_read_write("zlib.qcow2");
	check_read_write("zstd.qcow2");
	sh("rm -rf %s", dir);
	return 0;
}
