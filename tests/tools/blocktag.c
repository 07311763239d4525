/* blocktag.c: sectors that name their own offset, and a race that checks
 * that reads never return another offset's bytes.
 *
 *   blocktag fill FILE BYTES       writes BYTES of tagged sectors (generation
 *                                  0) to FILE, from offset 0
 *   blocktag check FILE            every sector of FILE is zero or tagged with
 *                                  its own offset
 *   blocktag race DISK [OPTIONS]   readers and writers at once on DISK (a
 *                                  mounted block file), all with O_DIRECT
 *
 * A tagged sector (512 bytes, 64 words in host byte order):
 *   word 0  TAG_MAGIC
 *   word 1  the sector's own byte offset
 *   word 2  the generation that wrote it
 *   word i  offset ^ (i * TAG_SPREAD), for i = 3 .. 63
 * so that any 8 bytes of a sector from another offset differ from ours.
 *
 * What a read may legitimately return for a sector: its tag of any
 * generation written so far, zeroes (the range was discarded), or a mix of
 * both at 8-byte granularity (a discard or rewrite that raced the read).
 * Anything else, above all another offset's tag, is a failure. The check
 * is per 512-byte sector because a 4 KiB block of an image with 512-byte
 * clusters spans eight clusters, each of which may be stored anywhere.
 *
 * race: --readers N threads read random ranges (4 KiB .. 128 KiB, 4 KiB
 * aligned) of the first --region bytes and check every sector. --writers N
 * threads each repeat: discard a random --chunk-aligned chunk (fallocate
 * PUNCH_HOLE), fsync, rewrite the chunk its previous round discarded (new
 * generation), fsync. The freed host clusters of one chunk are then the
 * first candidates for the next allocation, which is another chunk's:
 * a read that mapped the first chunk and read its host bytes late would
 * see the second chunk's tags. Runs for --seconds, then prints one line of
 * counts. Exit 0 when every read checked out, 1 at the first bad sector
 * or failed call (one line on stderr), 2 for a bad command line.
 *
 * It deliberately does not model what a range should hold at each moment
 * (which writer won): the claim under test is only "never another range's
 * bytes", and that needs no model.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SECTOR_BYTES 512u
#define SECTOR_WORDS (SECTOR_BYTES / 8)
#define TAG_MAGIC 0x5441476b636f6c62ull /* "blockTAG" */
#define TAG_SPREAD 0x9e3779b97f4a7c15ull
#define ALIGN_BYTES 4096u
#define MAX_READ_BYTES (128u * 1024)
#define FILL_CHUNK_BYTES (1u << 20)
#define MAX_THREADS 32

static const char *prog = "blocktag";

static void __attribute__((format(printf, 1, 2), noreturn))
fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void __attribute__((noreturn)) usage(void)
{
	fprintf(stderr,
		"usage: %s fill FILE BYTES\n"
		"       %s check FILE\n"
		"       %s race DISK [--seconds S] [--readers N] [--writers N]\n"
		"                    [--region BYTES] [--chunk BYTES]\n",
		prog, prog, prog);
	exit(2);
}

static uint64_t parse_u64(const char *what, const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-') {
		fprintf(stderr, "%s: %s: not a number: '%s'\n", prog, what, s);
		exit(2);
	}
	return v;
}

static uint64_t tag_word(uint64_t off, uint64_t gen, unsigned i)
{
	switch (i) {
	case 0:
		return TAG_MAGIC;
	case 1:
		return off;
	case 2:
		return gen;
	default:
		return off ^ (i * TAG_SPREAD);
	}
}

/* Tags len bytes (a multiple of SECTOR_BYTES) for disk offset off. */
static void tag_fill(void *buf, size_t len, uint64_t off, uint64_t gen)
{
	uint64_t *w = buf;

	for (size_t s = 0; s < len / SECTOR_BYTES; s++)
		for (unsigned i = 0; i < SECTOR_WORDS; i++)
			w[s * SECTOR_WORDS + i] =
				tag_word(off + s * SECTOR_BYTES, gen, i);
}

/* Highest generation any writer has started to write. */
static uint64_t max_gen;

/* Checks one sector read at disk offset off: 0 when it is zero or ours
 * (word by word, so torn discards and rewrites pass), otherwise fills
 * why (a message) and returns -1. */
static int check_sector(const uint64_t *w, uint64_t off, char *why,
			size_t why_len)
{
	uint64_t top = __atomic_load_n(&max_gen, __ATOMIC_ACQUIRE);

	for (unsigned i = 0; i < SECTOR_WORDS; i++) {
		if (w[i] == 0)
			continue;
		if (i == 2 ? w[i] <= top : w[i] == tag_word(off, 0, i))
			continue;
		if (w[0] == TAG_MAGIC && w[1] != off && w[1] != 0)
			snprintf(why, why_len, "is tagged with offset %" PRIu64
				 " (generation %" PRIu64 ")", w[1], w[2]);
		else if (i == 2)
			snprintf(why, why_len, "has generation %" PRIu64
				 ", but only %" PRIu64 " were written",
				 w[i], top);
		else
			snprintf(why, why_len, "has foreign word %u: 0x%016"
				 PRIx64, i, w[i]);
		return -1;
	}
	return 0;
}

static void check_buffer(const void *buf, size_t len, uint64_t off,
			 const char *what)
{
	char why[128];

	for (size_t s = 0; s < len / SECTOR_BYTES; s++) {
		const uint64_t *w = (const uint64_t *)buf + s * SECTOR_WORDS;
		uint64_t at = off + s * SECTOR_BYTES;

		if (check_sector(w, at, why, sizeof(why)) < 0)
			fail("%s of %zu bytes at %" PRIu64 ": the sector at %"
			     PRIu64 " %s", what, len, off, at, why);
	}
}

static int full_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Reads exactly len bytes or fails; a short read is an error here. */
static int full_pread(int fd, void *buf, size_t len, uint64_t off)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

static void *aligned_buffer(size_t len)
{
	void *p = NULL;

	if (posix_memalign(&p, ALIGN_BYTES, len) != 0)
		fail("out of memory");
	return p;
}

static int cmd_fill(const char *path, uint64_t bytes)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
	void *buf = aligned_buffer(FILL_CHUNK_BYTES);

	if (fd < 0)
		fail("%s: %s", path, strerror(errno));
	if (bytes % SECTOR_BYTES)
		fail("%s: %" PRIu64 " is not a multiple of %u", path, bytes,
		     SECTOR_BYTES);
	for (uint64_t off = 0; off < bytes; off += FILL_CHUNK_BYTES) {
		size_t n = bytes - off < FILL_CHUNK_BYTES ? bytes - off
							   : FILL_CHUNK_BYTES;
		int ret;

		tag_fill(buf, n, off, 0);
		ret = full_pwrite(fd, buf, n, off);
		if (ret < 0)
			fail("%s: write at %" PRIu64 ": %s", path, off,
			     strerror(-ret));
	}
	if (close(fd) < 0)
		fail("%s: %s", path, strerror(errno));
	free(buf);
	return 0;
}

static int cmd_check(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	void *buf = aligned_buffer(FILL_CHUNK_BYTES);
	struct stat st;

	if (fd < 0 || fstat(fd, &st) < 0)
		fail("%s: %s", path, strerror(errno));
	/* Any generation is fine for a file at rest. */
	max_gen = UINT64_MAX;
	for (uint64_t off = 0; off + SECTOR_BYTES <= (uint64_t)st.st_size;
	     off += FILL_CHUNK_BYTES) {
		size_t n = (uint64_t)st.st_size - off < FILL_CHUNK_BYTES
				   ? (size_t)((uint64_t)st.st_size - off)
				   : FILL_CHUNK_BYTES;
		int ret;

		n -= n % SECTOR_BYTES;
		ret = full_pread(fd, buf, n, off);
		if (ret < 0)
			fail("%s: read at %" PRIu64 ": %s", path, off,
			     strerror(-ret));
		check_buffer(buf, n, off, "read");
	}
	close(fd);
	free(buf);
	return 0;
}

struct race {
	const char *path;
	uint64_t region_bytes;
	uint64_t chunk_bytes;
	struct timespec deadline;
	/* Counts, summed atomically. */
	uint64_t reads, sectors, discards, rewrites, fsyncs;
};

struct worker {
	pthread_t tid;
	struct race *race;
	unsigned seed;
	int fd;
};

static bool past_deadline(const struct race *r)
{
	struct timespec now;

	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > r->deadline.tv_sec ||
	       (now.tv_sec == r->deadline.tv_sec &&
		now.tv_nsec >= r->deadline.tv_nsec);
}

static void count(uint64_t *counter, uint64_t n)
{
	__atomic_add_fetch(counter, n, __ATOMIC_RELAXED);
}

static void *reader_main(void *opaque)
{
	struct worker *w = opaque;
	struct race *r = w->race;
	void *buf = aligned_buffer(MAX_READ_BYTES);

	while (!past_deadline(r)) {
		/* 4 KiB .. 128 KiB: one cluster or many, whatever the
		 * cluster size. */
		size_t len = ALIGN_BYTES << (rand_r(&w->seed) % 6);
		uint64_t nb = (r->region_bytes - len) / ALIGN_BYTES + 1;
		uint64_t off = (uint64_t)(rand_r(&w->seed) % nb) * ALIGN_BYTES;
		int ret = full_pread(w->fd, buf, len, off);

		if (ret < 0)
			fail("%s: read of %zu bytes at %" PRIu64 ": %s",
			     r->path, len, off, strerror(-ret));
		check_buffer(buf, len, off, "read");
		count(&r->reads, 1);
		count(&r->sectors, len / SECTOR_BYTES);
	}
	free(buf);
	return NULL;
}

static void do_fsync(struct worker *w)
{
	if (fsync(w->fd) < 0)
		fail("%s: fsync: %s", w->race->path, strerror(errno));
	count(&w->race->fsyncs, 1);
}

static void *writer_main(void *opaque)
{
	struct worker *w = opaque;
	struct race *r = w->race;
	uint64_t nb_chunks = r->region_bytes / r->chunk_bytes;
	void *buf = aligned_buffer(r->chunk_bytes);
	uint64_t prev = UINT64_MAX;

	while (!past_deadline(r)) {
		uint64_t off = (uint64_t)(rand_r(&w->seed) % nb_chunks) *
			       r->chunk_bytes;
		uint64_t gen;
		int ret;

		if (fallocate(w->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
			      (off_t)off, (off_t)r->chunk_bytes) < 0)
			fail("%s: discard of %" PRIu64 " bytes at %" PRIu64
			     ": %s", r->path, r->chunk_bytes, off,
			     strerror(errno));
		count(&r->discards, 1);
		/* The discarded clusters become free at this flush. */
		do_fsync(w);
		if (prev != UINT64_MAX) {
			/* ...and the allocation for this rewrite of another
			 * chunk takes them first. */
			gen = __atomic_add_fetch(&max_gen, 1, __ATOMIC_ACQ_REL);
			tag_fill(buf, r->chunk_bytes, prev, gen);
			ret = full_pwrite(w->fd, buf, r->chunk_bytes, prev);
			if (ret < 0)
				fail("%s: write of %" PRIu64 " bytes at %"
				     PRIu64 ": %s", r->path, r->chunk_bytes,
				     prev, strerror(-ret));
			count(&r->rewrites, 1);
			do_fsync(w);
		}
		prev = off;
	}
	free(buf);
	return NULL;
}

static void start(struct worker *w, void *(*fn)(void *))
{
	int e = pthread_create(&w->tid, NULL, fn, w);

	if (e)
		fail("cannot start a thread: %s", strerror(e));
}

static int cmd_race(int argc, char **argv)
{
	struct race r = { .path = argv[0], .region_bytes = 8u << 20,
			  .chunk_bytes = 64u << 10 };
	struct worker workers[MAX_THREADS];
	uint64_t seconds = 10, nb_readers = 4, nb_writers = 2, nb;
	struct stat st;

	for (int i = 1; i < argc; i++) {
		if (i + 1 >= argc)
			usage();
		if (strcmp(argv[i], "--seconds") == 0)
			seconds = parse_u64(argv[i], argv[i + 1]);
		else if (strcmp(argv[i], "--readers") == 0)
			nb_readers = parse_u64(argv[i], argv[i + 1]);
		else if (strcmp(argv[i], "--writers") == 0)
			nb_writers = parse_u64(argv[i], argv[i + 1]);
		else if (strcmp(argv[i], "--region") == 0)
			r.region_bytes = parse_u64(argv[i], argv[i + 1]);
		else if (strcmp(argv[i], "--chunk") == 0)
			r.chunk_bytes = parse_u64(argv[i], argv[i + 1]);
		else
			usage();
		i++;
	}
	nb = nb_readers + nb_writers;
	if (nb == 0 || nb > MAX_THREADS || r.chunk_bytes == 0 ||
	    r.chunk_bytes % ALIGN_BYTES || r.region_bytes % r.chunk_bytes ||
	    r.region_bytes < MAX_READ_BYTES) {
		fprintf(stderr, "%s: at most %d threads; the chunk a multiple "
			"of %u; the region a multiple of the chunk, at least "
			"%u bytes\n", prog, MAX_THREADS, ALIGN_BYTES,
			MAX_READ_BYTES);
		exit(2);
	}
	clock_gettime(CLOCK_MONOTONIC, &r.deadline);
	r.deadline.tv_sec += (time_t)seconds;
	for (uint64_t i = 0; i < nb; i++) {
		workers[i] = (struct worker){ .race = &r,
					      .seed = (unsigned)(i * 7919 + 1) };
		workers[i].fd = open(r.path, (i < nb_readers ? O_RDONLY : O_RDWR) |
						     O_DIRECT | O_CLOEXEC);
		if (workers[i].fd < 0)
			fail("%s: %s", r.path, strerror(errno));
		if (i == 0 && (fstat(workers[i].fd, &st) < 0 ||
			       (uint64_t)st.st_size < r.region_bytes))
			fail("%s: smaller than the region of %" PRIu64
			     " bytes", r.path, r.region_bytes);
	}
	for (uint64_t i = 0; i < nb; i++)
		start(&workers[i], i < nb_readers ? reader_main : writer_main);
	for (uint64_t i = 0; i < nb; i++) {
		pthread_join(workers[i].tid, NULL);
		close(workers[i].fd);
	}
	printf("reads %" PRIu64 " sectors %" PRIu64 " discards %" PRIu64
	       " rewrites %" PRIu64 " fsyncs %" PRIu64 "\n", r.reads,
	       r.sectors, r.discards, r.rewrites, r.fsyncs);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 3)
		usage();
	if (strcmp(argv[1], "fill") == 0 && argc == 4)
		return cmd_fill(argv[2], parse_u64("BYTES", argv[3]));
	if (strcmp(argv[1], "check") == 0 && argc == 3)
		return cmd_check(argv[2]);
	if (strcmp(argv[1], "race") == 0)
		return cmd_race(argc - 2, argv + 2);
	usage();
}
