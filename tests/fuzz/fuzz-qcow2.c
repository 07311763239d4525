/* fuzz-qcow2.c: libFuzzer target that opens arbitrary bytes as a qcow2
 * image and reads it every way the public API allows.
 *
 * Each input is written to one file in /dev/shm (imgfmt opens a path and
 * realpath()s it, so a memfd would not do), opened read-only with
 * backing=deny (a hostile image must not reach other files, and the
 * fuzzer must not depend on the host's files), a small metadata cache
 * (so cache eviction is exercised), and the format given at build time:
 * qcow2 by default, probe with -DFUZZ_PROBE (the fuzz-probe target).
 *
 * Work per input is bounded whatever the header claims: at most
 * FUZZ_READ_BUDGET bytes are read (the first half of it in order from
 * the start, then up to FUZZ_MAX_RANDOM_READS reads of odd lengths at
 * offsets spread over the whole disk and derived from the input), block
 * status walks at most FUZZ_MAX_EXTENTS extents, and at most
 * FUZZ_MAX_SNAPSHOTS snapshots are opened and read. Errors are expected
 * and ignored; only crashes, sanitizer reports, leaks and timeouts count.
 *
 * FUZZ_NO_MAIN_ENTRY lets a unit test include this file and call
 * fuzz_qcow2_one() itself (tests/unit/test-qcow2-hostile.c replays its
 * hostile images and the seed corpus through it in non-fuzz builds).
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
#define FUZZ_MAX_SNAPSHOTS 4
#define FUZZ_CACHE_BYTES (64u << 10)

#ifdef FUZZ_PROBE
#define FUZZ_FORMAT IMG_FORMAT_PROBE
#else
#define FUZZ_FORMAT IMG_FORMAT_QCOW2
#endif

/* Settable by a replaying unit test, which runs both flavours. */
static enum img_format fuzz_format = FUZZ_FORMAT;

/* xorshift64*, seeded from the input, so that one input always takes the
 * same path (libFuzzer needs that to minimise and replay). */
static uint64_t fuzz_next(uint64_t *s)
{
	*s ^= *s >> 12;
	*s ^= *s << 25;
	*s ^= *s >> 27;
	return *s * 0x2545f4914f6cdd1dULL;
}

static uint64_t fuzz_seed(const uint8_t *data, size_t size)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < size; i++)
		h = (h ^ data[i]) * 0x100000001b3ULL;
	return h ? h : 1;
}

/* Reads img within the budget: the start in order (where metadata-heavy
 * test images keep their data), then random offsets and odd lengths over
 * the whole disk. */
static void fuzz_read(struct img *img, uint64_t *seed, size_t budget)
{
	static uint8_t buf[FUZZ_CHUNK];
	uint64_t size = img_size(img), off = 0;
	size_t done = 0;
	int reads = 0;

	while (off < size && done < budget / 2) {
		size_t n = size - off < FUZZ_CHUNK ? size - off : FUZZ_CHUNK;

		img_pread(img, buf, n, off);
		off += n;
		done += n;
	}
	while (size && done < budget && reads++ < FUZZ_MAX_RANDOM_READS) {
		uint64_t r = fuzz_next(seed);
		size_t n = 1 + (size_t)(r % FUZZ_CHUNK);

		off = fuzz_next(seed) % size;
		if (n > size - off)
			n = size - off;
		img_pread(img, buf, n, off);
		done += n;
	}
	/* The last byte and one past it (refused by img.c). */
	if (size) {
		img_pread(img, buf, 1, size - 1);
		img_pread(img, buf, 1, size);
	}
}

static void fuzz_block_status(struct img *img)
{
	uint64_t size = img_size(img), off = 0, bytes;

	for (int i = 0; i < FUZZ_MAX_EXTENTS && off < size; i++) {
		struct img_extent ext;

		if (img_block_status(img, off, size - off, &ext) < 0)
			break;
		if (ext.len == 0 || ext.len > size - off)
			abort(); /* the API promises 0 < len <= asked */
		off += ext.len;
	}
	/* Walks every extent: only if the walk above reached the end, so a
	 * hostile map of millions of tiny extents cannot eat the time. */
	if (off >= size)
		img_allocated_bytes(img, &bytes);
}

static void fuzz_snapshots(struct img *img, uint64_t *seed)
{
	struct img_snapshot *list = NULL;
	size_t nb = 0;

	if (img_snapshot_list(img, &list, &nb) < 0)
		return;
	for (size_t i = 0; i < nb && i < FUZZ_MAX_SNAPSHOTS; i++) {
		struct img_err err;
		struct img *snap = NULL;

		if (img_snapshot_open(img, list[i].id, &snap, &err) < 0)
			continue;
		fuzz_read(snap, seed, FUZZ_READ_BUDGET / 8);
		fuzz_block_status(snap);
		img_close(snap);
	}
	img_snapshot_list_free(list, nb);
}

int fuzz_qcow2_one(const uint8_t *data, size_t size);
int fuzz_qcow2_one(const uint8_t *data, size_t size)
{
	struct img_open_opts opts = {
		.format = fuzz_format,
		.read_only = true,
		.backing = IMG_BACKING_DENY,
		.cache_bytes = FUZZ_CACHE_BYTES,
	};
	int fd = scratch_open("fuzz-qcow2");
	uint64_t seed = fuzz_seed(data, size);
	struct img_info info;
	struct img_err err;
	struct img *img = NULL;

	if (ftruncate(fd, 0) < 0 ||
	    (size && pwrite(fd, data, size, 0) != (ssize_t)size)) {
		perror(scratch_path);
		abort();
	}
	if (img_open(scratch_path, &opts, &img, &err) < 0) {
		if (err.errnum >= 0 || !memchr(err.msg, '\0', sizeof(err.msg)))
			abort(); /* a failed open must say why */
		return 0;
	}
	img_get_info(img, &info);
	fuzz_read(img, &seed, FUZZ_READ_BUDGET);
	fuzz_block_status(img);
	fuzz_snapshots(img, &seed);
	img_close(img);
	return 0;
}

#ifndef FUZZ_NO_MAIN_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_qcow2_one(data, size);
}
#endif
