/* fuzz-vpc.c: libFuzzer target that opens arbitrary bytes as a VHD image
 * (and, built as fuzz-vdi.c, as a VDI image) and reads it every way the
 * public API allows.
 *
 * Each input is written to the scratch file (scratch-file.h) and opened
 * read-only. VDI has no parents: backing=deny. For VHD the scratch file
 * is /dev/shm/fuzz-vpc-PID.d/child.vhd, next to a fixed 64 KiB parent.vhd
 * this file writes (UUID sixteen 0x11 bytes, which the differencing seed
 * names), opened with backing=local: a locator can reach that parent and
 * the child itself (a loop), nothing outside the folder. Work per input is
 * bounded: at most FUZZ_READ_BUDGET bytes are read (the start in order,
 * then up to FUZZ_MAX_RANDOM_READS reads of odd lengths at offsets
 * derived from the input) and at most FUZZ_MAX_EXTENTS extents of block
 * status are walked. Errors are expected; only crashes, sanitizer
 * reports, leaks and timeouts count, and a failed open must say why.
 *
 * FUZZ_NO_MAIN_ENTRY lets a unit test include this file and call
 * fuzz_fmt_one() on its regress inputs (tests/unit/test-vpc.c and
 * test-vdi.c).
 */
#include "imgfmt.h"
#ifdef FUZZ_VDI
#include "scratch-file.h"
#endif

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <fcntl.h>

#ifdef FUZZ_VDI
#define FUZZ_FMT IMG_FORMAT_VDI
#define FUZZ_NAME "fuzz-vdi"
#else
#define FUZZ_FMT IMG_FORMAT_VPC
#endif

#define FUZZ_READ_BUDGET (8u << 20)
#define FUZZ_CHUNK (64u << 10)
#define FUZZ_MAX_RANDOM_READS 128
#define FUZZ_MAX_EXTENTS 512

static uint64_t fuzz_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static void fuzz_read_all(struct img *img, uint64_t seed)
{
	static uint8_t buf[FUZZ_CHUNK];
	uint64_t size = img_size(img), off = 0;
	size_t done = 0;
	int reads = 0;

	while (off < size && done < FUZZ_READ_BUDGET / 2) {
		size_t n = size - off < FUZZ_CHUNK ? size - off : FUZZ_CHUNK;

		img_pread(img, buf, n, off);
		off += n;
		done += n;
	}
	while (size && done < FUZZ_READ_BUDGET &&
	       reads++ < FUZZ_MAX_RANDOM_READS) {
		size_t n = 1 + (size_t)(fuzz_next(&seed) % FUZZ_CHUNK);

		off = fuzz_next(&seed) % size;
		if (n > size - off)
			n = size - off;
		img_pread(img, buf, n, off);
		done += n;
	}
	off = 0;
	for (int i = 0; i < FUZZ_MAX_EXTENTS && off < size; i++) {
		struct img_extent ext;

		if (img_block_status(img, off, size - off, &ext) < 0)
			break;
		if (ext.len == 0 || ext.len > size - off)
			abort(); /* the API promises 0 < len <= asked */
		off += ext.len;
	}
}

#ifndef FUZZ_VDI
#include <sys/stat.h>

static char vpc_dir[80], vpc_child[120], vpc_parent[120];

static void vpc_cleanup(void)
{
	unlink(vpc_child);
	unlink(vpc_parent);
	rmdir(vpc_dir);
}

/* The folder, its parent.vhd, and the fd of child.vhd (made once). */
static int vpc_scratch_open(void)
{
	static int fd = -1;
	uint8_t buf[(64 << 10) + 512];
	uint32_t sum = 0;
	FILE *f;

	if (fd >= 0)
		return fd;
	snprintf(vpc_dir, sizeof(vpc_dir), "/dev/shm/fuzz-vpc-%d.d",
		 (int)getpid());
	snprintf(vpc_child, sizeof(vpc_child), "%s/child.vhd", vpc_dir);
	snprintf(vpc_parent, sizeof(vpc_parent), "%s/parent.vhd", vpc_dir);
	if (mkdir(vpc_dir, 0700) < 0) {
		perror(vpc_dir);
		abort();
	}
	atexit(vpc_cleanup);
	for (size_t i = 0; i < (64 << 10); i++)
		buf[i] = (uint8_t)(i / 512 * 7 + 1);
	{
		uint8_t *ft = buf + (64 << 10);
		static const uint8_t head[] = "conectix\0\0\0\2\0\1\0\0"
			"\xff\xff\xff\xff\xff\xff\xff\xff";
		memset(ft, 0, 512);
		memcpy(ft, head, sizeof(head) - 1);
		memcpy(ft + 28, "qem2", 4);
		ft[45] = 1; /* original size 64 KiB */
		ft[53] = 1; /* current size 64 KiB */
		ft[56] = 0xff; ft[57] = 0xff; ft[58] = 16; ft[59] = 255;
		ft[63] = 2; /* fixed */
		memset(ft + 68, 0x11, 16);
		for (int i = 0; i < 512; i++)
			sum += ft[i];
		sum = ~sum;
		ft[64] = (uint8_t)(sum >> 24); ft[65] = (uint8_t)(sum >> 16);
		ft[66] = (uint8_t)(sum >> 8); ft[67] = (uint8_t)sum;
	}
	f = fopen(vpc_parent, "wb");
	if (!f || fwrite(buf, 1, sizeof(buf), f) != sizeof(buf) || fclose(f)) {
		perror(vpc_parent);
		abort();
	}
	fd = open(vpc_child, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		perror(vpc_child);
		abort();
	}
	return fd;
}
#endif

int fuzz_fmt_one(const uint8_t *data, size_t size);
int fuzz_fmt_one(const uint8_t *data, size_t size)
{
	struct img_open_opts opts = {
		.format = FUZZ_FMT,
		.read_only = true,
#ifndef FUZZ_VDI
		.backing = IMG_BACKING_LOCAL,
#else
		.backing = IMG_BACKING_DENY,
#endif
		.cache_bytes = 4096,
	};
#ifndef FUZZ_VDI
	int fd = vpc_scratch_open();
	const char *path = vpc_child;
#else
	int fd = scratch_open(FUZZ_NAME);
	const char *path = scratch_path;
#endif
	uint64_t seed = 0xcbf29ce484222325ULL;
	struct img_info info;
	struct img_err err;
	struct img *img = NULL;

	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 0x100000001b3ULL;
	seed |= 1;
	if (ftruncate(fd, 0) < 0 ||
	    (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
		perror(path);
		abort();
	}
	if (img_open(path, &opts, &img, &err) < 0) {
		if (err.errnum >= 0 || !memchr(err.msg, '\0', sizeof(err.msg)) ||
		    !err.msg[0])
			abort(); /* a failed open must say why */
		return 0;
	}
	img_get_info(img, &info);
	fuzz_read_all(img, seed);
	img_close(img);
	return 0;
}

#ifndef FUZZ_NO_MAIN_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_fmt_one(data, size);
}
#endif
