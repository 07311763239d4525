/* window.c: an image handle that shows a byte range of another one.
 *
 * Every block file that is not the whole disk (a partition, a volume's
 * segment) is a window: the range check, the offset and the clipping are
 * done here once, so the callers (the FUSE tree, the guest filesystem
 * readers, the commands) address the block file from 0 like a disk.
 *
 * Invariants: a window never reaches outside [start, start + size) of its
 * base, whatever it is asked (img.c has checked the request against the
 * window's size, and start + size lies inside the base at open). The
 * window borrows the base and its descriptor; it owns nothing else.
 * Block status resolves through the base's backing chain and keeps the
 * depth it found, so img_allocated_bytes of a window counts only data
 * stored in the base image itself.
 *
 * What it does not do: snapshots (open the snapshot of the base and a
 * window over it), or anything the base's driver does not.
 */
#include "imgfmt-int.h"

#include "checked.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

struct window_state {
	struct img *base;
	uint64_t start;
};

static struct window_state *state(struct img *img)
{
	return img->priv;
}

int img_window_open(struct img *base, uint64_t start, uint64_t len,
		    bool read_only, struct img **win_r)
{
	struct window_state *ws;
	struct img *win;

	if (!range_within(start, len, base->size))
		return -EINVAL;
	win = img_alloc(&base->opts);
	if (!win)
		return -ENOMEM;
	ws = calloc(1, sizeof(*ws));
	win->path = strdup(base->path);
	if (!ws || !win->path) {
		free(ws);
		img_free_handle(win);
		return -ENOMEM;
	}
	ws->base = base;
	ws->start = start;
	win->ops = &img_window_ops;
	win->priv = ws;
	win->fd = base->fd;
	win->shares_fd = true;
	win->read_only = read_only || base->read_only;
	win->size = len;
	*win_r = win;
	return 0;
}

struct img *img_window_base(const struct img *img, uint64_t *start_r)
{
	if (img->ops != &img_window_ops) {
		if (start_r)
			*start_r = 0;
		return NULL;
	}
	if (start_r)
		*start_r = ((struct window_state *)img->priv)->start;
	return ((struct window_state *)img->priv)->base;
}

static void window_close(struct img *img)
{
	free(img->priv);
	img->priv = NULL;
}

static int window_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	return img_pread(state(img)->base, buf, len, state(img)->start + off);
}

static int window_pwrite(struct img *img, const void *buf, size_t len,
			 uint64_t off)
{
	return img_pwrite(state(img)->base, buf, len, state(img)->start + off);
}

static int window_discard(struct img *img, uint64_t off, uint64_t len)
{
	return img_discard(state(img)->base, state(img)->start + off, len);
}

static int window_write_zeroes(struct img *img, uint64_t off, uint64_t len)
{
	return img_write_zeroes(state(img)->base, state(img)->start + off,
				len);
}

static int window_flush(struct img *img)
{
	return img_flush(state(img)->base);
}

/* The base resolves its chain (and pins, when asked); the extent comes
 * back in the window's coordinates with the base's depth (img.c adds the
 * window's own 0). */
static int window_block_status_pinned(struct img *img, uint64_t off,
				      uint64_t len, struct img_extent *ext_r,
				      struct img_pin *pin_r)
{
	uint64_t base_off = state(img)->start + off;
	int ret = pin_r ? img_block_status_pinned(state(img)->base, base_off,
						  len, ext_r, pin_r)
			: img_block_status(state(img)->base, base_off, len,
					   ext_r);

	if (ret < 0)
		return ret;
	ext_r->off = off;
	return 0;
}

static int window_block_status(struct img *img, uint64_t off, uint64_t len,
			       struct img_extent *ext_r)
{
	return window_block_status_pinned(img, off, len, ext_r, NULL);
}

static int window_get_info(struct img *img, struct img_info *info)
{
	int ret = img_get_info(state(img)->base, info);

	info->virtual_size = img->size;
	return ret;
}

const struct img_ops img_window_ops = {
	.name         = "window",
	.close        = window_close,
	.pread        = window_pread,
	.pwrite       = window_pwrite,
	.discard      = window_discard,
	.write_zeroes = window_write_zeroes,
	.flush        = window_flush,
	.block_status = window_block_status,
	.block_status_pinned = window_block_status_pinned,
	.get_info     = window_get_info,
};
