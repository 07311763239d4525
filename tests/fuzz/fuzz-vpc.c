/* fuzz-vpc.c: libFuzzer target that opens arbitrary bytes as a VHD image
 * (and, built as fuzz-vdi.c, as a VDI image) and reads it every way the
 * public API allows.
 *
 * Each input is written to the scratch file (scratch-file.h) and opened
 * read-only with backing=deny, so a differencing VHD's parent locators
 * are parsed but never followed to a host file. Work per input is
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
#include "scratch-file.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef FUZZ_FMT
#define FUZZ_FMT IMG_FORMAT_VPC
#define FUZZ_NAME "fuzz-vpc"
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

int fuzz_fmt_one(const uint8_t *data, size_t size);
int fuzz_fmt_one(const uint8_t *data, size_t size)
{
	struct img_open_opts opts = {
		.format = FUZZ_FMT,
		.read_only = true,
		.backing = IMG_BACKING_DENY,
		.cache_bytes = 4096,
	};
	int fd = scratch_open(FUZZ_NAME);
	uint64_t seed = 0xcbf29ce484222325ULL;
	struct img_info info;
	struct img_err err;
	struct img *img = NULL;

	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 0x100000001b3ULL;
	seed |= 1;
	if (ftruncate(fd, 0) < 0 ||
	    (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
		perror(scratch_path);
		abort();
	}
	if (img_open(scratch_path, &opts, &img, &err) < 0) {
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
