/* imgread.c: a small command-line reader over imgfmt.h, for the tests.
 *
 * It exposes exactly what the public API offers, so that the integration
 * tests can compare imgfmt with qemu-img without a mount in between:
 *
 *   imgread [OPTIONS] IMAGE              the virtual disk, raw, to stdout
 *   imgread [OPTIONS] --threads N IMAGE  the same, read by N threads
 *   imgread [OPTIONS] --map IMAGE        block status as JSON lines
 *   imgread [OPTIONS] --info IMAGE       img_get_info as "key: value"
 *   imgread [OPTIONS] --snapshots IMAGE  one tab-separated line a snapshot
 *
 * OPTIONS: --format raw|qcow2, --backing local|follow|deny, --cache BYTES,
 * --snapshot ID (act on that internal snapshot instead of the image),
 * --offset BYTES and --length BYTES (read only that window of the disk,
 * for images too large to read whole in a test).
 *
 * The image is always opened read-only. Every error is one line on stderr,
 * "imgread: <message>", and exit status 1; a bad command line exits 2.
 *
 * The --map lines use the field names of `qemu-img map --output=json`
 * (start, length, depth, present, zero, data, offset) and merge adjacent
 * extents the way qemu-img does, so a test can normalise both outputs with
 * the same code. It deliberately does not print the enclosing JSON array:
 * one object a line is easier to process in shell.
 */
#include "imgfmt.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Sequential reads go out in chunks this large. */
#define READ_CHUNK_BYTES (4u * 1024 * 1024)
/* --threads: each thread reads every Nth chunk of this size... */
#define THREAD_CHUNK_BYTES (64u * 1024)
/* ...inside a window this large, which is then written out in order. */
#define THREAD_WINDOW_BYTES (16u * 1024 * 1024)
#define MAX_THREADS 64

#define MIN(a, b) ((a) < (b) ? (a) : (b))

enum action {
	ACT_READ,
	ACT_MAP,
	ACT_INFO,
	ACT_SNAPSHOTS,
};

static const char *prog = "imgread";

static void __attribute__((format(printf, 1, 2))) fail(const char *fmt, ...)
{
	va_list ap;

	fprintf(stderr, "%s: ", prog);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fputc('\n', stderr);
	exit(1);
}

static void __attribute__((noreturn)) usage(int status)
{
	fprintf(status ? stderr : stdout,
		"usage: %s [--format raw|qcow2] [--backing local|follow|deny]\n"
		"          [--cache BYTES] [--snapshot ID]\n"
		"          [--offset BYTES] [--length BYTES]\n"
		"          [--map | --info | --snapshots | --threads N] IMAGE\n",
		prog);
	exit(status);
}

static uint64_t parse_u64(const char *opt, const char *s)
{
	char *end;
	unsigned long long v;

	errno = 0;
	v = strtoull(s, &end, 0);
	if (errno || end == s || *end || s[0] == '-') {
		fprintf(stderr, "%s: %s: not a number: '%s'\n", prog, opt, s);
		exit(2);
	}
	return v;
}

static void write_all(const void *buf, size_t len)
{
	const char *p = buf;

	while (len > 0) {
		ssize_t n = write(STDOUT_FILENO, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			fail("writing to stdout: %s", strerror(errno));
		}
		p += n;
		len -= (size_t)n;
	}
}

/* The window [start, end) of the disk that a read covers. */
struct window {
	uint64_t start, end;
};

static void read_sequential(struct img *img, struct window win)
{
	uint64_t size = win.end;
	char *buf = malloc(READ_CHUNK_BYTES);

	if (!buf)
		fail("out of memory");
	for (uint64_t off = win.start; off < size;) {
		size_t n = size - off < READ_CHUNK_BYTES ? (size_t)(size - off)
							  : READ_CHUNK_BYTES;
		int ret = img_pread(img, buf, n, off);
		if (ret < 0)
			fail("%s: read of %zu bytes at offset %" PRIu64
			     ": %s", img_path(img), n, off, strerror(-ret));
		write_all(buf, n);
		off += n;
	}
	free(buf);
}

struct reader {
	pthread_t tid;
	struct img *img;
	char *window;      /* shared by all readers */
	uint64_t win_off;  /* guest offset of window[0] */
	size_t win_len;
	unsigned index, nb_threads;
	int ret;           /* 0 or -errno */
	uint64_t fail_off;
};

/* Reads chunks index, index + nb_threads, ... of the current window. */
static void *reader_main(void *opaque)
{
	struct reader *r = opaque;
	size_t pos = (size_t)r->index * THREAD_CHUNK_BYTES;

	for (; pos < r->win_len;
	     pos += (size_t)r->nb_threads * THREAD_CHUNK_BYTES) {
		size_t n = r->win_len - pos < THREAD_CHUNK_BYTES
				   ? r->win_len - pos
				   : THREAD_CHUNK_BYTES;
		int ret = img_pread(r->img, r->window + pos, n,
				    r->win_off + pos);
		if (ret < 0) {
			r->ret = ret;
			r->fail_off = r->win_off + pos;
			break;
		}
	}
	return NULL;
}

static void read_threaded(struct img *img, struct window win,
			  unsigned nb_threads)
{
	uint64_t size = win.end;
	struct reader readers[MAX_THREADS];
	char *window = malloc(THREAD_WINDOW_BYTES);

	if (!window)
		fail("out of memory");
	for (uint64_t off = win.start; off < size;) {
		size_t n = size - off < THREAD_WINDOW_BYTES
				   ? (size_t)(size - off)
				   : THREAD_WINDOW_BYTES;

		for (unsigned i = 0; i < nb_threads; i++) {
			readers[i] = (struct reader){
				.img = img, .window = window, .win_off = off,
				.win_len = n, .index = i,
				.nb_threads = nb_threads,
			};
			int e = pthread_create(&readers[i].tid, NULL,
					       reader_main, &readers[i]);
			if (e)
				fail("cannot start a thread: %s", strerror(e));
		}
		for (unsigned i = 0; i < nb_threads; i++)
			pthread_join(readers[i].tid, NULL);
		for (unsigned i = 0; i < nb_threads; i++)
			if (readers[i].ret < 0)
				fail("%s: read at offset %" PRIu64 ": %s",
				     img_path(img), readers[i].fail_off,
				     strerror(-readers[i].ret));
		write_all(window, n);
		off += n;
	}
	free(window);
}

/* One run of merged extents, as qemu-img map prints it. */
struct map_run {
	uint64_t start, length;
	unsigned depth;
	enum img_extent_kind kind;
	bool has_offset;
	uint64_t offset;
};

static void print_run(const struct map_run *r)
{
	bool present = r->kind != IMG_EXTENT_HOLE;
	bool zero = r->kind != IMG_EXTENT_DATA;
	bool data = r->kind == IMG_EXTENT_DATA;

	printf("{ \"start\": %" PRIu64 ", \"length\": %" PRIu64
	       ", \"depth\": %u, \"present\": %s, \"zero\": %s, \"data\": %s",
	       r->start, r->length, r->depth, present ? "true" : "false",
	       zero ? "true" : "false", data ? "true" : "false");
	if (r->has_offset)
		printf(", \"offset\": %" PRIu64, r->offset);
	printf("}\n");
}

/* True when next continues run with the same attributes, so that qemu-img
 * would print them as one entry. */
static bool run_continues(const struct map_run *run,
			  const struct map_run *next)
{
	if (run->start + run->length != next->start ||
	    run->kind != next->kind || run->depth != next->depth ||
	    run->has_offset != next->has_offset)
		return false;
	return !run->has_offset || run->offset + run->length == next->offset;
}

static void print_map(struct img *img)
{
	uint64_t size = img_size(img);
	struct map_run run = { 0 };
	bool have_run = false;

	for (uint64_t off = 0; off < size;) {
		struct img_extent ext;
		struct map_run next;
		int ret = img_block_status(img, off, size - off, &ext);

		if (ret < 0)
			fail("%s: block status at offset %" PRIu64 ": %s",
			     img_path(img), off, strerror(-ret));
		if (ext.len == 0 || ext.len > size - off)
			fail("%s: block status at offset %" PRIu64
			     " returned a bad length %" PRIu64,
			     img_path(img), off, ext.len);
		next = (struct map_run){
			.start = off, .length = ext.len, .depth = ext.depth,
			.kind = ext.kind,
			.has_offset = ext.kind == IMG_EXTENT_DATA &&
				      ext.host_fd >= 0,
			.offset = ext.host_off,
		};
		if (have_run && run_continues(&run, &next)) {
			run.length += next.length;
		} else {
			if (have_run)
				print_run(&run);
			run = next;
			have_run = true;
		}
		off += ext.len;
	}
	if (have_run)
		print_run(&run);
}

static void print_str(const char *key, const char *value)
{
	if (value)
		printf("%s: %s\n", key, value);
}

static void print_bool(const char *key, bool value)
{
	printf("%s: %s\n", key, value ? "true" : "false");
}

static void print_info(struct img *img)
{
	struct img_info info;
	struct img_info_qcow2 q = { 0 };
	uint64_t allocated;
	int ret = img_get_info(img, &info);

	if (ret < 0)
		fail("%s: cannot get image information: %s", img_path(img),
		     strerror(-ret));
	/* The qcow2 lines are printed for every format (zero, no, null
	 * elsewhere), as the tests that read this output expect. */
	if (info.kind == IMG_INFO_QCOW2)
		q = info.qcow2;
	print_str("format", info.format);
	printf("virtual_size: %" PRIu64 "\n", info.virtual_size);
	printf("cluster_size: %" PRIu64 "\n", info.cluster_size);
	printf("qcow2_version: %u\n", q.version);
	printf("refcount_bits: %u\n", q.refcount_bits);
	print_bool("extended_l2", q.extended_l2);
	print_str("compression", q.compression);
	print_str("backing_file", info.backing_file);
	print_str("backing_format", info.backing_format);
	print_str("data_file", q.data_file);
	print_bool("data_file_raw", q.data_file_raw);
	print_bool("dirty", q.dirty);
	print_bool("corrupt", q.corrupt);
	print_bool("lazy_refcounts", q.lazy_refcounts);
	printf("nb_snapshots: %zu\n", info.nb_snapshots);
	ret = img_allocated_bytes(img, &allocated);
	if (ret < 0)
		fail("%s: cannot count allocated bytes: %s", img_path(img),
		     strerror(-ret));
	printf("allocated_bytes: %" PRIu64 "\n", allocated);
}

static void print_snapshots(struct img *img)
{
	struct img_snapshot *list;
	size_t nb;
	int ret = img_snapshot_list(img, &list, &nb);

	if (ret < 0)
		fail("%s: cannot list snapshots: %s", img_path(img),
		     strerror(-ret));
	for (size_t i = 0; i < nb; i++)
		printf("%s\t%s\t%" PRIu64 "\t%" PRIu64 "\t%" PRIu64 "\n",
		       list[i].id, list[i].name, list[i].disk_size,
		       list[i].date_sec, list[i].vm_clock_nsec);
	img_snapshot_list_free(list, nb);
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "format", required_argument, NULL, 'f' },
		{ "backing", required_argument, NULL, 'b' },
		{ "cache", required_argument, NULL, 'c' },
		{ "snapshot", required_argument, NULL, 's' },
		{ "threads", required_argument, NULL, 't' },
		{ "offset", required_argument, NULL, 'o' },
		{ "length", required_argument, NULL, 'n' },
		{ "map", no_argument, NULL, 'm' },
		{ "info", no_argument, NULL, 'i' },
		{ "snapshots", no_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct img_open_opts opts = { .read_only = true };
	enum action action = ACT_READ;
	const char *snap_id = NULL;
	unsigned nb_threads = 1;
	uint64_t win_off = 0, win_len = UINT64_MAX;
	struct window win;
	struct img *img, *snap = NULL;
	struct img_err err = { 0 };
	int c, ret;

	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'f':
			if (img_format_from_name(optarg, &opts.format) < 0)
				usage(2);
			break;
		case 'b':
			if (strcmp(optarg, "local") == 0)
				opts.backing = IMG_BACKING_LOCAL;
			else if (strcmp(optarg, "follow") == 0)
				opts.backing = IMG_BACKING_FOLLOW;
			else if (strcmp(optarg, "deny") == 0)
				opts.backing = IMG_BACKING_DENY;
			else
				usage(2);
			break;
		case 'c':
			opts.cache_bytes = (size_t)parse_u64("--cache", optarg);
			break;
		case 's':
			snap_id = optarg;
			break;
		case 't': {
			uint64_t n = parse_u64("--threads", optarg);
			if (n < 1 || n > MAX_THREADS) {
				fprintf(stderr, "%s: --threads: 1 to %d\n",
					prog, MAX_THREADS);
				exit(2);
			}
			nb_threads = (unsigned)n;
			break;
		}
		case 'o':
			win_off = parse_u64("--offset", optarg);
			break;
		case 'n':
			win_len = parse_u64("--length", optarg);
			break;
		case 'm':
			action = ACT_MAP;
			break;
		case 'i':
			action = ACT_INFO;
			break;
		case 'l':
			action = ACT_SNAPSHOTS;
			break;
		case 'h':
			usage(0);
		default:
			usage(2);
		}
	}
	if (optind != argc - 1)
		usage(2);

	ret = img_open(argv[optind], &opts, &img, &err);
	if (ret < 0)
		fail("%s", err.msg[0] ? err.msg : strerror(-ret));
	if (snap_id) {
		ret = img_snapshot_open(img, snap_id, &snap, &err);
		if (ret < 0)
			fail("%s", err.msg[0] ? err.msg : strerror(-ret));
	}

	switch (action) {
	case ACT_READ:
		/* A window past the end is clipped; the read then fails only
		 * if it starts past the end, as img_pread would. */
		win.start = win_off;
		win.end = img_size(snap ? snap : img);
		if (win_len < win.end - MIN(win_off, win.end))
			win.end = win_off + win_len;
		if (win.start > win.end)
			fail("%s: --offset %" PRIu64 " lies past the end of "
			     "the disk (%" PRIu64 " bytes)",
			     img_path(snap ? snap : img), win_off, win.end);
		if (nb_threads > 1)
			read_threaded(snap ? snap : img, win, nb_threads);
		else
			read_sequential(snap ? snap : img, win);
		break;
	case ACT_MAP:
		print_map(snap ? snap : img);
		break;
	case ACT_INFO:
		print_info(snap ? snap : img);
		break;
	case ACT_SNAPSHOTS:
		print_snapshots(img);
		break;
	}
	if (fflush(stdout) != 0)
		fail("writing to stdout: %s", strerror(errno));
	img_close(snap);
	img_close(img);
	return 0;
}
