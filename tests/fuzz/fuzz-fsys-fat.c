/* fuzz-fsys-fat.c: libFuzzer target for the FAT driver of fsys/.
 *
 * Each input is the start of a raw image (written to the scratch file,
 * extended with zeroes to the size its boot sector claims, at most
 * FUZZ_MAX_IMAGE, and opened with format raw, read-only, backing=deny) handed to fsys_fat_ops
 * directly, so that the ext driver's libext2fs is not in the way. The
 * target opens it, reads info and statfs, and walks the tree breadth
 * first: every entry readdir gives is looked up (as listed and in upper
 * case), stat'ed, its xattrs listed and read, files read at the start
 * and at an offset derived from the input, directories listed in small
 * batches through their cookies. Work is bounded whatever the image
 * claims: at most FUZZ_MAX_OBJECTS objects, FUZZ_MAX_NAMES names per
 * directory, FUZZ_MAX_DEPTH levels, FUZZ_READ bytes per read. Errors are
 * expected; only crashes, sanitizer reports, leaks and hangs count.
 *
 * FUZZ_NO_MAIN_ENTRY lets tests/unit/test-fsys-fat.c include this file
 * and replay the saved reproducers through fuzz_fsys_fat_one().
 */
#include "fsys-int.h"
#include "imgfmt.h"
#include "scratch-file.h"

#include <ctype.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_MAX_OBJECTS 400
#define FUZZ_MAX_NAMES 48
#define FUZZ_MAX_DEPTH 12
#define FUZZ_READ (64u << 10)
#define FUZZ_MAX_IMAGE (64u << 20)

struct fuzz_walk {
	const struct fsys_ops *ops;
	void *priv;
	uint64_t queue[FUZZ_MAX_OBJECTS];
	unsigned depth[FUZZ_MAX_OBJECTS];
	size_t head, tail, objects;
	uint64_t salt;
	/* names of the directory being listed */
	char names[FUZZ_MAX_NAMES][256];
	size_t nb_names, batch;
	uint64_t cookie;
};

static int fuzz_collect(void *ctx, const char *name, uint64_t ino,
			uint32_t type, uint64_t next)
{
	struct fuzz_walk *w = ctx;

	(void)ino;
	(void)type;
	if (w->nb_names >= FUZZ_MAX_NAMES || w->batch == 0)
		return 1;
	w->batch--;
	strncpy(w->names[w->nb_names], name, 255);
	w->names[w->nb_names][255] = '\0';
	w->nb_names++;
	w->cookie = next;
	return 0;
}

static void fuzz_object(struct fuzz_walk *w, uint64_t ino, unsigned depth)
{
	static uint8_t buf[FUZZ_READ];
	struct fsys_stat st;
	char list[256];
	ssize_t n;

	if (w->ops->getattr(w->priv, ino, &st) < 0)
		return;
	n = w->ops->listxattr(w->priv, ino, list, sizeof(list));
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(list + i) + 1)
		(void)w->ops->getxattr(w->priv, ino, list + i, buf, 64);
	(void)w->ops->getxattr(w->priv, ino, "user.fat.attrs", NULL, 0);
	if ((st.mode & S_IFMT) == S_IFREG) {
		(void)w->ops->read(w->priv, ino, buf, sizeof(buf), 0);
		if (st.size)
			(void)w->ops->read(w->priv, ino, buf, 3000,
					   w->salt % st.size);
	} else if ((st.mode & S_IFMT) == S_IFDIR && depth < FUZZ_MAX_DEPTH &&
		   w->tail < FUZZ_MAX_OBJECTS) {
		w->queue[w->tail] = ino;
		w->depth[w->tail] = depth + 1;
		w->tail++;
	}
}

static void fuzz_dir(struct fuzz_walk *w, uint64_t dir, unsigned depth)
{
	w->nb_names = 0;
	w->cookie = 0;
	for (int calls = 0; calls < 16 && w->nb_names < FUZZ_MAX_NAMES;
	     calls++) {
		size_t before = w->nb_names;

		w->batch = 1 + (size_t)((w->salt >> calls) & 7);
		if (w->ops->readdir(w->priv, dir, w->cookie, fuzz_collect, w) <
		    0)
			break;
		if (w->nb_names == before)
			break;
	}
	for (size_t i = 0; i < w->nb_names && w->objects < FUZZ_MAX_OBJECTS;
	     i++) {
		struct fsys_stat st;
		char upper[256];

		w->objects++;
		if (w->ops->lookup(w->priv, dir, w->names[i], &st) == 0)
			fuzz_object(w, st.ino, depth);
		for (size_t j = 0; j < sizeof(upper); j++) {
			upper[j] = (char)toupper((unsigned char)w->names[i][j]);
			if (!upper[j])
				break;
		}
		(void)w->ops->lookup(w->priv, dir, upper, &st);
	}
}

/* The image is the input followed by zeroes up to the size the boot
 * sector claims (at most FUZZ_MAX_IMAGE; a sparse file), so that small
 * inputs can describe filesystems whose FATs and data areas lie past
 * the input's end. */
static uint64_t fuzz_image_size(const uint8_t *data, size_t size)
{
	uint64_t bps, total, bytes;

	if (size < 40)
		return size;
	bps = data[11] | (uint32_t)data[12] << 8;
	total = data[19] | (uint32_t)data[20] << 8;
	if (!total)
		total = data[32] | (uint32_t)data[33] << 8 |
			(uint32_t)data[34] << 16 | (uint32_t)data[35] << 24;
	bytes = bps * total;
	if (bytes > FUZZ_MAX_IMAGE)
		bytes = FUZZ_MAX_IMAGE;
	return bytes > size ? bytes : size;
}

int fuzz_fsys_fat_one(const uint8_t *data, size_t size);
int fuzz_fsys_fat_one(const uint8_t *data, size_t size)
{
	static struct fuzz_walk w;
	struct img_open_opts opts = { .format = IMG_FORMAT_RAW,
				      .read_only = true,
				      .backing = IMG_BACKING_DENY };
	int fd = scratch_open("fuzz-fsys-fat");
	struct fsys_info info = { 0 };
	struct statvfs sv;
	struct img_err err;
	struct img *img = NULL;
	void *priv = NULL;

	if (ftruncate(fd, 0) < 0 ||
	    (size && pwrite(fd, data, size, 0) != (ssize_t)size) ||
	    ftruncate(fd, (off_t)fuzz_image_size(data, size)) < 0)
		abort();
	if (img_open(scratch_path, &opts, &img, &err) < 0)
		return 0;
	if (!fsys_fat_ops.probe(img) ||
	    fsys_fat_ops.open(img, &priv, &err) < 0) {
		img_close(img);
		return 0;
	}
	memset(&w, 0, sizeof(w));
	w.ops = &fsys_fat_ops;
	w.priv = priv;
	for (size_t i = 0; i < size && i < 64; i++)
		w.salt = w.salt * 131 + data[size - 1 - i];
	fsys_fat_ops.get_info(priv, &info);
	(void)fsys_fat_ops.statfs(priv, &sv);
	w.queue[w.tail++] = fsys_fat_ops.root_ino(priv);
	fuzz_object(&w, w.queue[0], 0);
	w.tail = 1;
	while (w.head < w.tail && w.objects < FUZZ_MAX_OBJECTS) {
		uint64_t dir = w.queue[w.head];
		unsigned depth = w.depth[w.head];

		w.head++;
		fuzz_dir(&w, dir, depth);
	}
	fsys_fat_ops.close(priv);
	img_close(img);
	return 0;
}

#ifndef FUZZ_NO_MAIN_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_fsys_fat_one(data, size);
}
#endif
