/* windows.c: the block files of a view as image handles, and where each
 * one lies on the view's disk.
 *
 * Every block file the tree serves is an image handle that is the file,
 * addressed from 0: disk is the view's image (the active image or the
 * snapshot's handle), pN a window on it (img_window_open, which does the
 * range check, the offset and the clipping once), lvm/VG/LV the volume's
 * own handle (lvm-tree.c, over the windows of its PVs), and files/X
 * reads through the handle of X. The handlers in ops.c and files.c read,
 * write, discard, zero, flush and ask block status of that handle at the
 * file's own offsets: no handler in fuse/ adds a partition start to an
 * offset. The way back, from a block file to the bytes of the disk it
 * shows, is needed only for coherence (a write through one file drops
 * the cached pages of every other file showing those bytes, and turns
 * the filesystems open there stale); it lives here alone, in
 * ifs_node_disk_span and ifs_invalidate_aliases.
 *
 * Lifetime: a handler copies a window pointer out of the table under
 * table_lock (ifs_resolve) and uses it after the lock is dropped, while a
 * rescan may publish another table meanwhile; so a window is not closed
 * when the table changes but kept in the view's pool, by range, until the
 * view goes away at unmount (view_free, before the image it is on: a
 * window never outlives its base). A rescan that finds a partition over
 * a range shown before gets the very same handle back, so the pool holds
 * one window per range ever shown, not one per scan (sfdisk toggling p3
 * between two sizes ten times opens two windows for it), and a handle
 * names one range for the whole mount: the st_blocks cache and files/
 * key on it.
 *
 * An open pN follows the table by number, as before windows: each request
 * resolves the inode against the table in force, so after a rescan the
 * file shows the new range of pN (its cached pages are dropped by
 * ifs_view_publish_table), and gets ENOENT once pN is gone.
 */
#include "ifs.h"

#include "checked.h"

#include <errno.h>
#include <stdlib.h>

struct window_entry {
	uint64_t start, size;
	struct img *img;        /* NULL: a free slot */
};

struct ifs_windows {
	struct window_entry *slots; /* open addressing, by range */
	size_t cap;                 /* a power of two, or 0 */
	size_t nb;
};

static size_t range_hash(uint64_t start, uint64_t size)
{
	uint64_t h = start * 0x9e3779b97f4a7c15ull ^
		     (size + 0x632be59bd9b4e019ull) * 0xc2b2ae3d27d4eb4full;

	return (size_t)(h ^ (h >> 29));
}

static struct window_entry *find_slot(struct ifs_windows *w, uint64_t start,
				      uint64_t size)
{
	size_t i = range_hash(start, size) & (w->cap - 1);

	while (w->slots[i].img &&
	       (w->slots[i].start != start || w->slots[i].size != size))
		i = (i + 1) & (w->cap - 1);
	return &w->slots[i];
}

/* Keeps the pool at most half full, so probes stay short. */
static int pool_reserve(struct ifs_windows *w)
{
	struct ifs_windows grown;

	if (w->cap && (w->nb + 1) * 2 <= w->cap)
		return 0;
	grown.cap = w->cap ? w->cap * 2 : 16;
	grown.nb = w->nb;
	grown.slots = calloc(grown.cap, sizeof(*grown.slots));
	if (!grown.slots)
		return -ENOMEM;
	for (size_t i = 0; i < w->cap; i++)
		if (w->slots[i].img)
			*find_slot(&grown, w->slots[i].start,
				   w->slots[i].size) = w->slots[i];
	free(w->slots);
	*w = grown;
	return 0;
}

struct img *ifs_view_window(struct ifs_view *view, uint64_t start,
			    uint64_t size)
{
	uint64_t disk = img_size(view->img);
	struct window_entry *e;
	struct img *win = NULL;

	/* partition/ clips entries to the disk already (one that starts
	 * past the end has size 0); stay inside it whatever comes. */
	start = MIN(start, disk);
	size = MIN(size, disk - start);
	pthread_mutex_lock(&view->windows_lock);
	if (!view->windows)
		view->windows = calloc(1, sizeof(*view->windows));
	if (!view->windows || pool_reserve(view->windows) < 0)
		goto out;
	e = find_slot(view->windows, start, size);
	if (!e->img) {
		if (img_window_open(view->img, start, size, view->read_only,
				    &win) < 0)
			goto out;
		e->start = start;
		e->size = size;
		e->img = win;
		view->windows->nb++;
	}
	win = e->img;
out:
	pthread_mutex_unlock(&view->windows_lock);
	return win;
}

struct img **ifs_view_part_windows(struct ifs_view *view,
				   const struct part_table *table)
{
	struct img **imgs;

	if (!table || table->nb_parts == 0)
		return NULL;
	imgs = calloc(table->nb_parts, sizeof(*imgs));
	for (size_t i = 0; imgs && i < table->nb_parts; i++)
		imgs[i] = ifs_view_window(view, table->parts[i].start_bytes,
					  table->parts[i].size_bytes);
	return imgs;
}

void ifs_view_windows_free(struct ifs_view *view)
{
	struct ifs_windows *w = view->windows;

	if (!w)
		return;
	for (size_t i = 0; i < w->cap; i++)
		img_close(w->slots[i].img);
	free(w->slots);
	free(w);
	view->windows = NULL;
}

bool ifs_node_disk_span(const struct ifs_node *node, uint64_t off,
			uint64_t len, uint64_t *disk_off_r,
			uint64_t *disk_len_r)
{
	uint64_t start = 0;

	/* A volume's extents may lie anywhere on its PVs. */
	if (node->node == IFS_NODE_LV_BASE)
		return ifs_lvm_lv_img(node->view, node->index, disk_off_r,
				      disk_len_r) != NULL;
	if (node->node == IFS_NODE_PART_BASE)
		(void)img_window_base(node->img, &start);
	*disk_off_r = start + off;
	*disk_len_r = len;
	return true;
}

void ifs_invalidate_aliases(struct ifs *ifs, struct ifs_view *view,
			    fuse_ino_t written_ino, uint64_t disk_off,
			    uint64_t len)
{
	struct alias {
		fuse_ino_t ino;
		uint64_t start, size;
	} *files;
	size_t nb = 0, cap;
	uint64_t end = disk_off + len;

	/* Copy the windows out (every partition, however many the table
	 * has) so that no lock is held across the notifications. A
	 * partition without a window serves no request, so caches none. */
	pthread_rwlock_rdlock(&view->table_lock);
	cap = 1 + (view->part_imgs ? view->table->nb_parts : 0);
	files = malloc(cap * sizeof(*files));
	if (files) {
		files[nb].ino = ifs_ino(view->slot, IFS_NODE_DISK);
		files[nb].start = 0;
		files[nb++].size = img_size(view->img);
		for (size_t i = 0; i + 1 < cap; i++) {
			struct img *win = view->part_imgs[i];

			if (!win)
				continue;
			files[nb].ino = ifs_ino(view->slot,
						IFS_NODE_PART_BASE +
							view->table->parts[i]
								.number);
			(void)img_window_base(win, &files[nb].start);
			files[nb++].size = img_size(win);
		}
	}
	pthread_rwlock_unlock(&view->table_lock);
	if (!files) {
		/* No memory for the list: drop every cached page of the
		 * disk rather than serve a stale one. */
		fuse_lowlevel_notify_inval_inode(
			ifs->se, ifs_ino(view->slot, IFS_NODE_DISK), 0, 0);
		return;
	}

	for (size_t i = 0; i < nb; i++) {
		uint64_t a = MAX(disk_off, files[i].start);
		uint64_t b = MIN(end, files[i].start + files[i].size);
		if (files[i].ino == written_ino || a >= b)
			continue;
		fuse_lowlevel_notify_inval_inode(ifs->se, files[i].ino,
						 (off_t)(a - files[i].start),
						 (off_t)(b - a));
	}
	free(files);
}
