/* fuzz-fsys-ext.c: libFuzzer target for the ext2/3/4 driver of fsys/
 * (libext2fs through our I/O manager, our extent walker, the journal
 * replay).
 *
 * Input: either a raw image (its first bytes; the rest reads as zeroes
 * up to the size the superblock claims), or, when it starts with "EXTZ",
 * a sparse image: records of (le32 offset in KiB, le16 length in KiB,
 * the bytes), so seeds made by mkfs.ext4 and debugfs (journal
 * transactions included) stay small. The image is written to the scratch
 * file, at most FUZZ_MAX_IMAGE bytes, opened raw, read-only, and handed
 * to fsys_ext_ops directly.
 *
 * The target opens it, reads info and statfs, and walks the tree breadth
 * first: every entry is looked up, stat'ed, its xattrs listed and read,
 * files read at the start and at an offset derived from the input,
 * SEEK_DATA/SEEK_HOLE asked, links read, directories listed in small
 * batches through their cookies. Work is bounded: FUZZ_MAX_OBJECTS
 * objects, FUZZ_MAX_NAMES names per directory, FUZZ_MAX_DEPTH levels,
 * FUZZ_READ bytes per read.
 *
 * FUZZ_NO_MAIN_ENTRY lets tests/unit/test-fsys-ext.c include this file
 * and replay the saved reproducers through fuzz_fsys_ext_one().
 */
#include "fsys-int.h"
#include "imgfmt.h"
#include "scratch-file.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FUZZ_MAX_OBJECTS 300
#define FUZZ_MAX_NAMES 32
#define FUZZ_MAX_DEPTH 10
#define FUZZ_READ (64u << 10)
#define FUZZ_MAX_IMAGE (64u << 20)

struct fuzz_walk {
	void *priv;
	uint64_t queue[FUZZ_MAX_OBJECTS];
	unsigned depth[FUZZ_MAX_OBJECTS];
	size_t head, tail;
	uint64_t salt;
	char names[FUZZ_MAX_NAMES][256];
	size_t nb_names, batch;
	uint64_t cookie;
};

static int fuzz_collect(void *ctx, const char *name, uint64_t ino,
			uint32_t type, uint64_t next)
{
	struct fuzz_walk *w = ctx;

	(void)ino, (void)type;
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
	const struct fsys_ops *ops = &fsys_ext_ops;
	struct fsys_stat st;
	char list[4096];
	ssize_t n;
	uint64_t off;

	if (ops->getattr(w->priv, ino, &st) < 0)
		return;
	n = ops->listxattr(w->priv, ino, list, sizeof(list));
	for (ssize_t i = 0; i < n; i += (ssize_t)strlen(list + i) + 1)
		ops->getxattr(w->priv, ino, list + i, buf, sizeof(buf));
	if (S_ISREG(st.mode)) {
		ops->read(w->priv, ino, buf, sizeof(buf), 0);
		off = st.size ? (w->salt % st.size) : 0;
		ops->read(w->priv, ino, buf, 4097, off);
		ops->seek(w->priv, ino, off, SEEK_DATA, &off);
		ops->seek(w->priv, ino, 0, SEEK_HOLE, &off);
	} else if (S_ISLNK(st.mode)) {
		ops->readlink(w->priv, ino, (char *)buf, sizeof(buf));
	} else if (S_ISDIR(st.mode) && depth < FUZZ_MAX_DEPTH) {
		w->nb_names = 0;
		w->cookie = 0;
		for (int round = 0; round < 8 && w->nb_names < FUZZ_MAX_NAMES;
		     round++) {
			size_t before = w->nb_names;

			w->batch = 5;
			if (ops->readdir(w->priv, ino, w->cookie, fuzz_collect,
					 w) < 0 ||
			    w->nb_names == before)
				break;
		}
		for (size_t i = 0; i < w->nb_names; i++) {
			if (ops->lookup(w->priv, ino, w->names[i], &st) < 0)
				continue;
			if (w->tail < FUZZ_MAX_OBJECTS) {
				w->depth[w->tail] = depth + 1;
				w->queue[w->tail++] = st.ino;
			}
		}
	}
}

/* Expands the input into the scratch file; returns its size or 0. */
static size_t fuzz_image(const uint8_t *data, size_t size, int fd)
{
	size_t end = 0;

	if (ftruncate(fd, 0) < 0)
		return 0;
	if (size >= 4 && memcmp(data, "EXTZ", 4) == 0) {
		size_t p = 4;

		while (p + 6 <= size) {
			uint64_t off = (uint64_t)(data[p] | data[p + 1] << 8 |
						  data[p + 2] << 16 |
						  (uint32_t)data[p + 3] << 24) *
				       1024;
			size_t len = (size_t)(data[p + 4] | data[p + 5] << 8) * 1024;

			p += 6;
			if (len > size - p)
				len = size - p;
			if (off + len > FUZZ_MAX_IMAGE)
				break;
			if (pwrite(fd, data + p, len, (off_t)off) != (ssize_t)len)
				return 0;
			if (off + len > end)
				end = off + len;
			p += len;
		}
	} else {
		if (size > FUZZ_MAX_IMAGE)
			size = FUZZ_MAX_IMAGE;
		if (pwrite(fd, data, size, 0) != (ssize_t)size)
			return 0;
		end = size;
	}
	/* Grow to the size the superblock claims (bounded). */
	{
		uint8_t sb[1024];
		uint64_t claim = 0;

		if (end >= 2048 && pread(fd, sb, sizeof(sb), 1024) == 1024 &&
		    sb[56] == 0x53 && sb[57] == 0xEF) {
			uint32_t blocks = sb[4] | sb[5] << 8 | sb[6] << 16 |
					  (uint32_t)sb[7] << 24;
			uint32_t log = sb[24] | sb[25] << 8;

			if (log <= 6)
				claim = (uint64_t)blocks << (10 + log);
		}
		if (claim > FUZZ_MAX_IMAGE)
			claim = FUZZ_MAX_IMAGE;
		if (claim > end)
			end = (size_t)claim;
	}
	if (end < 4096)
		end = 4096;
	if (ftruncate(fd, (off_t)end) < 0)
		return 0;
	return end;
}

static int fuzz_fsys_ext_one(const uint8_t *data, size_t size)
{
	const struct fsys_ops *ops = &fsys_ext_ops;
	struct img_open_opts opts = {
		.format = IMG_FORMAT_RAW,
		.read_only = true,
		.backing = IMG_BACKING_DENY,
	};
	struct img_err err;
	struct img *img = NULL;
	struct fuzz_walk *w;
	struct fsys_info info;
	struct statvfs sv;
	int fd = scratch_open("fuzz-fsys-ext");

	if (fuzz_image(data, size, fd) == 0)
		return 0;
	if (img_open(scratch_path, &opts, &img, &err) < 0)
		return 0;
	w = calloc(1, sizeof(*w));
	if (!w) {
		img_close(img);
		return 0;
	}
	for (size_t i = 0; i < size && i < 64; i++)
		w->salt = w->salt * 131 + data[size - 1 - i];
	if (ops->probe(img) && ops->open(img, &w->priv, &err) == 0) {
		memset(&info, 0, sizeof(info));
		ops->get_info(w->priv, &info);
		ops->statfs(w->priv, &sv);
		w->depth[0] = 0;
		w->queue[w->tail++] = ops->root_ino(w->priv);
		/* Inode numbers the tree may not reach. */
		w->queue[w->tail++] = 11;
		w->queue[w->tail++] = 12 + w->salt % 64;
		while (w->head < w->tail) {
			size_t i = w->head++;

			fuzz_object(w, w->queue[i], w->depth[i]);
		}
		ops->close(w->priv);
	}
	free(w);
	img_close(img);
	return 0;
}

#ifndef FUZZ_NO_MAIN_ENTRY
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_fsys_ext_one(data, size);
}
#endif
