/* fuzz-vmdk.c: libFuzzer target that opens arbitrary bytes as a VMDK
 * (or, built with -DFUZZ_OVA, as an OVA archive) and reads it every way
 * the public API allows.
 *
 * As fuzz-qcow2.c: each input goes to one scratch file in /dev/shm
 * (scratch-file.h), opened read-only with backing=deny, so that extent
 * files and parents a descriptor names are refused before they are
 * looked at (the target depends on no host file), and with a small
 * metadata cache so that grain-table eviction is exercised. Work per
 * input is bounded: at most FUZZ_READ_BUDGET bytes read (the start in
 * order, then FUZZ_MAX_RANDOM_READS reads of odd lengths anywhere), at
 * most FUZZ_MAX_EXTENTS block-status extents. For OVA inputs the first
 * FUZZ_MAX_DISKS disks are opened in turn. Errors are expected; only
 * crashes, sanitizer reports, leaks and timeouts count.
 *
 * FUZZ_NO_MAIN_ENTRY lets tests/unit/test-vmdk.c include this file and
 * replay its hostile images and the saved reproducers through
 * fuzz_vmdk_one() in ordinary builds.
 */
#include "imgfmt.h"
#include "scratch-file.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FUZZ_READ_BUDGET (8u << 20)
#define FUZZ_CHUNK (64u << 10)
#define FUZZ_MAX_RANDOM_READS 128
#define FUZZ_MAX_EXTENTS 512
#define FUZZ_MAX_DISKS 3
#define FUZZ_CACHE_BYTES (16u << 10)

#ifdef FUZZ_OVA
#define FUZZ_FORMAT IMG_FORMAT_OVA
#else
#define FUZZ_FORMAT IMG_FORMAT_VMDK
#endif

/* Settable by a replaying unit test. */
static enum img_format fuzz_vmdk_format = FUZZ_FORMAT;

static uint64_t fuzz_vmdk_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static void fuzz_vmdk_read(struct img *img, uint64_t seed)
{
	static uint8_t buf[FUZZ_CHUNK];
	uint64_t size = img_size(img), off = 0;
	size_t done = 0;

	while (off < size && done < FUZZ_READ_BUDGET / 2) {
		size_t n = size - off < FUZZ_CHUNK ? size - off : FUZZ_CHUNK;

		img_pread(img, buf, n, off);
		off += n;
		done += n;
	}
	for (int i = 0; size && done < FUZZ_READ_BUDGET &&
			i < FUZZ_MAX_RANDOM_READS;
	     i++) {
		size_t n = 1 + (size_t)(fuzz_vmdk_next(&seed) % FUZZ_CHUNK);

		off = fuzz_vmdk_next(&seed) % size;
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

int fuzz_vmdk_one(const uint8_t *data, size_t size);
int fuzz_vmdk_one(const uint8_t *data, size_t size)
{
	int fd = scratch_open("fuzz-vmdk");
	uint64_t seed = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < size; i++)
		seed = (seed ^ data[i]) * 0x100000001b3ULL;
	if (!seed)
		seed = 1;
	if (ftruncate(fd, 0) < 0 ||
	    (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
		perror(scratch_path);
		abort();
	}
	for (unsigned disk = 0; disk < FUZZ_MAX_DISKS; disk++) {
		struct img_open_opts opts = {
			.format = fuzz_vmdk_format,
			.read_only = true,
			.backing = IMG_BACKING_DENY,
			.cache_bytes = FUZZ_CACHE_BYTES,
			/* Only an OVA takes a disk number. */
			.disk = fuzz_vmdk_format == IMG_FORMAT_OVA ? disk + 1
								   : 0,
		};
		struct img_info info;
		struct img_err err;
		struct img *img = NULL;

		if (img_open(scratch_path, &opts, &img, &err) < 0) {
			if (err.errnum >= 0 ||
			    !memchr(err.msg, '\0', sizeof(err.msg)) ||
			    !err.msg[0])
				abort(); /* a failed open must say why */
			break;
		}
		img_get_info(img, &info);
		fuzz_vmdk_read(img, seed + disk);
		img_close(img);
		if (fuzz_vmdk_format != IMG_FORMAT_OVA)
			break;
	}
	return 0;
}

#ifndef FUZZ_NO_MAIN_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_vmdk_one(data, size);
}
#endif
