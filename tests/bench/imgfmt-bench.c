/* imgfmt-bench.c: throughput and scaling figures for the imgfmt layer.
 *
 * A benchmark, not a test: it prints figures and ratios and exits 0 unless
 * something could not be opened or read. tests/bench/imgfmt.sh drives it
 * (building the images, repeating, taking medians); README.md next to it
 * says what each figure means. Modes:
 *
 *   seq  IMAGE [RAWTWIN] [--bs B] [--verify]
 *        sequential reads of the whole virtual disk with img_pread, and
 *        the same with plain pread(2) on RAWTWIN (a raw file with the same
 *        bytes), two passes of each, alternating; MB/s of each and the
 *        ratio img/raw. --verify compares the
 *        two byte for byte in a separate, untimed pass.
 *   rand IMAGE [--threads N] [--seconds S] [--bs B] [--plain]
 *        random aligned reads from N threads for S seconds; IOPS. --plain
 *        reads IMAGE with pread(2) instead (what the machine can do).
 *   read IMAGE [--out FILE] [--threads N] [--bs B]
 *        reads the whole image with img_pread; with --out writes it to FILE
 *        as `qemu-img convert -O raw` does: 4 KiB blocks of zeroes are
 *        skipped (left sparse) and the file gets the virtual size.
 *   gen  FILE SIZE [--compressible] [--seed N]
 *        writes SIZE bytes of pseudo-random data (xorshift, no openssl, much
 *        faster than /dev/urandom); with --compressible every 4 KiB block
 *        is 2 KiB random then 2 KiB zeroes, which deflate packs about 2:1
 *        and which no 4 KiB zero detection can skip.
 *
 * Every mode ends with one line "RESULT mode=... key=value ..." that the
 * scripts parse; everything else is for people. MB is 10^6 bytes.
 *
 * Deliberately not here: page cache control (the scripts warm it), O_DIRECT,
 * writes to images, and any timing assertion.
 */
#include "imgfmt.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define MIB (1024 * 1024)
#define ZERO_BLOCK_BYTES 4096 /* qemu-img convert's default -S 4k */

struct opts {
	const char *mode;
	const char *image;
	const char *twin; /* seq: raw twin; gen: size */
	const char *out;
	size_t bs_bytes;
	unsigned nb_threads;
	double seconds;
	bool verify;
	bool plain;
	bool compressible;
	uint64_t seed;
};

static double now_sec(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void *xalloc(size_t len)
{
	void *p = NULL;

	/* 4 KiB alignment keeps copies page-friendly and allows O_DIRECT later. */
	if (posix_memalign(&p, 4096, len ? len : 1)) {
		fprintf(stderr, "imgfmt-bench: out of memory (%zu bytes)\n", len);
		exit(1);
	}
	return p;
}

static struct img *open_ro(const char *path)
{
	struct img_open_opts o = {
		.format = IMG_FORMAT_PROBE,
		.read_only = true,
		.backing = IMG_BACKING_LOCAL,
	};
	struct img_err err = { 0 };
	struct img *img = NULL;
	int ret = img_open(path, &o, &img, &err);

	if (ret < 0) {
		fprintf(stderr, "imgfmt-bench: %s\n",
			err.msg[0] ? err.msg : strerror(-ret));
		exit(1);
	}
	return img;
}

/* pread(2) until len bytes are in or the file ends (zero-filled). */
static int plain_pread(int fd, void *buf, size_t len, uint64_t off)
{
	uint8_t *p = buf;

	while (len) {
		ssize_t n = pread(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0) {
			memset(p, 0, len);
			return 0;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static int full_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static void die_io(const char *what, const char *path, uint64_t off, int ret)
{
	fprintf(stderr, "imgfmt-bench: %s %s at %" PRIu64 ": %s\n", what, path,
		off, strerror(-ret));
	exit(1);
}

/* ---- seq ---------------------------------------------------------------- */

static double seq_img(struct img *img, size_t bs)
{
	uint64_t size = img_size(img);
	uint8_t *buf = xalloc(bs);
	double t0 = now_sec();

	for (uint64_t off = 0; off < size; off += bs) {
		size_t len = size - off < bs ? (size_t)(size - off) : bs;
		int ret = img_pread(img, buf, len, off);

		if (ret < 0)
			die_io("img_pread", img_path(img), off, ret);
	}
	double dt = now_sec() - t0;
	free(buf);
	return dt;
}

static double seq_plain(int fd, const char *path, uint64_t size, size_t bs)
{
	uint8_t *buf = xalloc(bs);
	double t0 = now_sec();

	for (uint64_t off = 0; off < size; off += bs) {
		size_t len = size - off < bs ? (size_t)(size - off) : bs;
		int ret = plain_pread(fd, buf, len, off);

		if (ret < 0)
			die_io("pread", path, off, ret);
	}
	double dt = now_sec() - t0;
	free(buf);
	return dt;
}

static int verify_twin(struct img *img, int fd, const char *twin, size_t bs)
{
	uint64_t size = img_size(img);
	uint8_t *a = xalloc(bs), *b = xalloc(bs);
	int bad = 0;

	for (uint64_t off = 0; off < size; off += bs) {
		size_t len = size - off < bs ? (size_t)(size - off) : bs;
		int ret = img_pread(img, a, len, off);

		if (ret < 0)
			die_io("img_pread", img_path(img), off, ret);
		ret = plain_pread(fd, b, len, off);
		if (ret < 0)
			die_io("pread", twin, off, ret);
		if (memcmp(a, b, len) != 0) {
			fprintf(stderr,
				"imgfmt-bench: %s and %s differ in the %zu bytes at %" PRIu64
				"\n",
				img_path(img), twin, len, off);
			bad = 1;
			break;
		}
	}
	free(a);
	free(b);
	return bad;
}

static int mode_seq(const struct opts *o)
{
	struct img *img = open_ro(o->image);
	uint64_t size = img_size(img);
	double img_mbps, raw_mbps = 0;
	int fd = -1;

	if (o->twin) {
		struct stat st;

		fd = open(o->twin, O_RDONLY | O_CLOEXEC);
		if (fd < 0 || fstat(fd, &st) < 0) {
			fprintf(stderr, "imgfmt-bench: %s: %s\n", o->twin,
				strerror(errno));
			return 1;
		}
		if ((uint64_t)st.st_size != size) {
			fprintf(stderr,
				"imgfmt-bench: %s has %jd bytes but %s has a virtual size of %" PRIu64
				"\n",
				o->twin, (intmax_t)st.st_size, o->image, size);
			return 1;
		}
		if (o->verify && verify_twin(img, fd, o->twin, o->bs_bytes))
			return 1;
	}

	/* Two passes of each, alternating, so that a neighbour's burst or a
	 * frequency change does not land on one side only. */
	double img_s = 0, raw_s = 0;

	for (int pass = 0; pass < 2; pass++) {
		img_s += seq_img(img, o->bs_bytes);
		if (fd >= 0)
			raw_s += seq_plain(fd, o->twin, size, o->bs_bytes);
	}
	img_mbps = 2.0 * (double)size / img_s / 1e6;
	printf("seq %s: img_pread %zu KiB: %.1f MB/s\n", o->image,
	       o->bs_bytes / 1024, img_mbps);
	if (fd >= 0) {
		raw_mbps = 2.0 * (double)size / raw_s / 1e6;
		printf("seq %s: pread     %zu KiB: %.1f MB/s\n", o->twin,
		       o->bs_bytes / 1024, raw_mbps);
		printf("seq ratio img_pread/pread: %.3f\n", img_mbps / raw_mbps);
		close(fd);
	}
	printf("RESULT mode=seq bytes=%" PRIu64 " img_mbps=%.1f raw_mbps=%.1f ratio=%.4f\n",
	       size, img_mbps, raw_mbps, raw_mbps > 0 ? img_mbps / raw_mbps : 0.0);
	img_close(img);
	return 0;
}

/* ---- rand --------------------------------------------------------------- */

struct rand_ctx {
	struct img *img; /* NULL with --plain */
	int fd;
	const char *path;
	uint64_t nb_blocks;
	size_t bs;
	double deadline;
	atomic_bool stop;
	atomic_uint_fast64_t nb_ops;
	atomic_int error;
};

static uint64_t xorshift64(uint64_t *s)
{
	uint64_t x = *s;

	x ^= x << 13;
	x ^= x >> 7;
	x ^= x << 17;
	return *s = x;
}

struct rand_thread {
	struct rand_ctx *ctx;
	pthread_t tid;
	uint64_t seed;
};

static void *rand_worker(void *arg)
{
	struct rand_thread *t = arg;
	struct rand_ctx *c = t->ctx;
	uint8_t *buf = xalloc(c->bs);
	uint64_t s = t->seed, ops = 0;

	while (!atomic_load_explicit(&c->stop, memory_order_relaxed)) {
		for (int i = 0; i < 64; i++) {
			uint64_t off = (xorshift64(&s) % c->nb_blocks) * c->bs;
			int ret = c->img ? img_pread(c->img, buf, c->bs, off)
					 : plain_pread(c->fd, buf, c->bs, off);

			if (ret < 0) {
				atomic_store(&c->error, ret);
				atomic_store(&c->stop, true);
				break;
			}
			ops++;
		}
		/* Every thread looks at the clock; whoever passes the deadline
		 * first stops the rest, so no thread runs alone at the end. */
		if (now_sec() >= c->deadline)
			atomic_store(&c->stop, true);
	}
	atomic_fetch_add(&c->nb_ops, ops);
	free(buf);
	return NULL;
}

static int mode_rand(const struct opts *o)
{
	struct rand_ctx c = { .fd = -1, .path = o->image, .bs = o->bs_bytes };
	struct rand_thread *t = calloc(o->nb_threads, sizeof(*t));
	uint64_t size;

	if (!t)
		return 1;
	if (o->plain) {
		struct stat st;

		c.fd = open(o->image, O_RDONLY | O_CLOEXEC);
		if (c.fd < 0 || fstat(c.fd, &st) < 0) {
			fprintf(stderr, "imgfmt-bench: %s: %s\n", o->image,
				strerror(errno));
			return 1;
		}
		size = (uint64_t)st.st_size;
	} else {
		c.img = open_ro(o->image);
		size = img_size(c.img);
	}
	c.nb_blocks = size / c.bs;
	if (!c.nb_blocks) {
		fprintf(stderr, "imgfmt-bench: %s is smaller than one block\n",
			o->image);
		return 1;
	}

	double t0 = now_sec();
	c.deadline = t0 + o->seconds;
	for (unsigned i = 0; i < o->nb_threads; i++) {
		t[i].ctx = &c;
		t[i].seed = (o->seed + i + 1) * 0x9e3779b97f4a7c15ull;
		if (pthread_create(&t[i].tid, NULL, rand_worker, &t[i])) {
			fprintf(stderr, "imgfmt-bench: cannot start a thread\n");
			return 1;
		}
	}
	for (unsigned i = 0; i < o->nb_threads; i++)
		pthread_join(t[i].tid, NULL);
	double dt = now_sec() - t0;

	if (c.error)
		die_io(c.img ? "img_pread" : "pread", o->image, 0, c.error);
	double iops = (double)c.nb_ops / dt;
	printf("rand %s: %s %zu B, %u thread(s), %.1f s: %.0f IOPS\n",
	       o->image, o->plain ? "pread" : "img_pread", c.bs, o->nb_threads,
	       dt, iops);
	printf("RESULT mode=rand threads=%u plain=%d ops=%" PRIu64
	       " seconds=%.3f iops=%.0f\n",
	       o->nb_threads, o->plain, (uint64_t)c.nb_ops, dt, iops);
	img_close(c.img);
	if (c.fd >= 0)
		close(c.fd);
	free(t);
	return 0;
}

/* ---- read --------------------------------------------------------------- */

struct read_ctx {
	struct img *img;
	int out_fd;
	uint64_t size;
	size_t bs;
	atomic_uint_fast64_t next_off;
	atomic_int error;
	atomic_uint_fast64_t nb_written;
};

static bool is_zero(const uint8_t *p, size_t len)
{
	/* p is 4 KiB aligned and len a multiple of 8 except at the very end. */
	size_t i = 0;

	for (; i + 8 <= len; i += 8) {
		uint64_t v;

		memcpy(&v, p + i, 8);
		if (v)
			return false;
	}
	for (; i < len; i++)
		if (p[i])
			return false;
	return true;
}

static void *read_worker(void *arg)
{
	struct read_ctx *c = arg;
	uint8_t *buf = xalloc(c->bs);
	uint64_t written = 0;

	for (;;) {
		/* Chunks are handed out in order, so with one thread this is
		 * a plain sequential read. */
		uint64_t off = atomic_fetch_add(&c->next_off, c->bs);

		if (off >= c->size || atomic_load(&c->error))
			break;
		size_t len = c->size - off < c->bs ? (size_t)(c->size - off) : c->bs;
		int ret = img_pread(c->img, buf, len, off);

		if (ret < 0) {
			atomic_store(&c->error, ret);
			break;
		}
		if (c->out_fd < 0)
			continue;
		for (size_t b = 0; b < len; b += ZERO_BLOCK_BYTES) {
			size_t n = len - b < ZERO_BLOCK_BYTES ? len - b : ZERO_BLOCK_BYTES;

			if (is_zero(buf + b, n))
				continue;
			ret = full_pwrite(c->out_fd, buf + b, n, off + b);
			if (ret < 0) {
				atomic_store(&c->error, ret);
				break;
			}
			written += n;
		}
	}
	atomic_fetch_add(&c->nb_written, written);
	free(buf);
	return NULL;
}

static int mode_read(const struct opts *o)
{
	struct read_ctx c = { .out_fd = -1, .bs = o->bs_bytes };
	pthread_t *tid = calloc(o->nb_threads, sizeof(*tid));
	double t0 = now_sec();

	if (!tid)
		return 1;
	c.img = open_ro(o->image);
	c.size = img_size(c.img);
	if (o->out) {
		c.out_fd = open(o->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
				0644);
		if (c.out_fd < 0 || ftruncate(c.out_fd, (off_t)c.size) < 0) {
			fprintf(stderr, "imgfmt-bench: %s: %s\n", o->out,
				strerror(errno));
			return 1;
		}
	}
	for (unsigned i = 0; i < o->nb_threads; i++)
		if (pthread_create(&tid[i], NULL, read_worker, &c)) {
			fprintf(stderr, "imgfmt-bench: cannot start a thread\n");
			return 1;
		}
	for (unsigned i = 0; i < o->nb_threads; i++)
		pthread_join(tid[i], NULL);
	if (c.error)
		die_io("reading/writing", o->image, 0, c.error);
	if (c.out_fd >= 0 && close(c.out_fd) < 0) {
		fprintf(stderr, "imgfmt-bench: %s: %s\n", o->out, strerror(errno));
		return 1;
	}
	double dt = now_sec() - t0;

	printf("read %s (%" PRIu64 " bytes, %u thread(s)) -> %s: %.3f s, %.1f MB/s\n",
	       o->image, c.size, o->nb_threads, o->out ? o->out : "(discarded)",
	       dt, (double)c.size / dt / 1e6);
	printf("RESULT mode=read threads=%u bytes=%" PRIu64 " written=%" PRIu64
	       " seconds=%.4f mbps=%.1f\n",
	       o->nb_threads, c.size, (uint64_t)c.nb_written, dt,
	       (double)c.size / dt / 1e6);
	img_close(c.img);
	free(tid);
	return 0;
}

/* ---- gen ---------------------------------------------------------------- */

static int mode_gen(const struct opts *o)
{
	char *end;
	unsigned long long size = strtoull(o->twin ? o->twin : "", &end, 0);
	uint64_t s = (o->seed + 1) * 0x9e3779b97f4a7c15ull;
	uint8_t *buf = xalloc(MIB);
	int fd;

	if (!o->twin || end == o->twin || *end) {
		fprintf(stderr, "imgfmt-bench: gen needs FILE and SIZE in bytes\n");
		return 2;
	}
	fd = open(o->image, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0) {
		fprintf(stderr, "imgfmt-bench: %s: %s\n", o->image, strerror(errno));
		return 1;
	}
	for (uint64_t off = 0; off < size; off += MIB) {
		size_t len = size - off < MIB ? (size_t)(size - off) : MIB;

		for (size_t i = 0; i < MIB; i += 8) {
			uint64_t v = xorshift64(&s);

			if (o->compressible && (i % 4096) >= 2048)
				v = 0;
			memcpy(buf + i, &v, 8);
		}
		int ret = full_pwrite(fd, buf, len, off);

		if (ret < 0)
			die_io("pwrite", o->image, off, ret);
	}
	if (close(fd) < 0) {
		fprintf(stderr, "imgfmt-bench: %s: %s\n", o->image, strerror(errno));
		return 1;
	}
	free(buf);
	printf("RESULT mode=gen bytes=%llu compressible=%d\n", size,
	       o->compressible);
	return 0;
}

/* ---- main --------------------------------------------------------------- */

static void usage(FILE *f)
{
	fprintf(f,
		"usage: imgfmt-bench seq  IMAGE [RAWTWIN] [--bs BYTES] [--verify]\n"
		"       imgfmt-bench rand IMAGE [--threads N] [--seconds S] [--bs BYTES] [--plain]\n"
		"       imgfmt-bench read IMAGE [--out FILE] [--threads N] [--bs BYTES]\n"
		"       imgfmt-bench gen  FILE SIZE [--compressible] [--seed N]\n"
		"Prints figures and a final \"RESULT mode=... key=value\" line; MB = 10^6 bytes.\n");
}

static unsigned long long num_arg(const char *name, const char *v)
{
	char *end;
	unsigned long long n;

	if (!v) {
		fprintf(stderr, "imgfmt-bench: %s needs a value\n", name);
		exit(2);
	}
	errno = 0;
	n = strtoull(v, &end, 0);
	if (errno || end == v || *end) {
		fprintf(stderr, "imgfmt-bench: %s: not a number: %s\n", name, v);
		exit(2);
	}
	return n;
}

int main(int argc, char **argv)
{
	struct opts o = { .nb_threads = 1, .seconds = 5.0 };
	const char *pos[3] = { 0 };
	int nb_pos = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;

		if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
			usage(stdout);
			return 0;
		} else if (!strcmp(a, "--bs")) {
			o.bs_bytes = num_arg(a, v), i++;
		} else if (!strcmp(a, "--threads")) {
			o.nb_threads = num_arg(a, v), i++;
		} else if (!strcmp(a, "--seconds")) {
			if (!v) {
				fprintf(stderr, "imgfmt-bench: --seconds needs a value\n");
				return 2;
			}
			o.seconds = strtod(v, NULL), i++;
		} else if (!strcmp(a, "--seed")) {
			o.seed = num_arg(a, v), i++;
		} else if (!strcmp(a, "--out")) {
			o.out = v, i++;
		} else if (!strcmp(a, "--verify")) {
			o.verify = true;
		} else if (!strcmp(a, "--plain")) {
			o.plain = true;
		} else if (!strcmp(a, "--compressible")) {
			o.compressible = true;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "imgfmt-bench: unknown option %s\n", a);
			usage(stderr);
			return 2;
		} else if (nb_pos < 3) {
			pos[nb_pos++] = a;
		} else {
			usage(stderr);
			return 2;
		}
	}
	o.mode = pos[0];
	o.image = pos[1];
	o.twin = pos[2];
	if (!o.mode || !o.image) {
		usage(stderr);
		return 2;
	}
	if (!o.bs_bytes)
		o.bs_bytes = !strcmp(o.mode, "rand") ? 4096 : MIB;
	if (o.nb_threads < 1 || o.nb_threads > 256 || o.bs_bytes > 64 * MIB ||
	    !(o.seconds > 0)) {
		fprintf(stderr, "imgfmt-bench: --threads 1..256, --bs up to 64 MiB, --seconds > 0\n");
		return 2;
	}
	if (!strcmp(o.mode, "seq"))
		return mode_seq(&o);
	if (!strcmp(o.mode, "rand") && !o.twin)
		return mode_rand(&o);
	if (!strcmp(o.mode, "read") && !o.twin)
		return mode_read(&o);
	if (!strcmp(o.mode, "gen"))
		return mode_gen(&o);
	usage(stderr);
	return 2;
}
