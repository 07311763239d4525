/* tree.c: the views (active disk, snapshots) and the nodes inside them.
 *
 * See ifs.h for the inode encoding. Views are only ever appended, and a
 * deleted snapshot's view is marked, not freed, until unmount: handlers
 * hold view pointers without a lock, and rmdir is rare next to lookups.
 * Partition tables are swapped whole under the view's table_lock; every
 * reader copies the window it needs and drops the lock before any I/O.
 */
#include "ifs.h"
#include "cli.h"

#include "checked.h"
#include "cleanup.h"
#include "log.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

fuse_ino_t ifs_ino(unsigned slot, unsigned node)
{
	return ((fuse_ino_t)slot << IFS_SLOT_SHIFT) | node;
}

static struct ifs_view *view_new(struct img *img, unsigned slot)
{
	struct ifs_view *view = calloc(1, sizeof(*view));

	if (!view)
		return NULL;
	view->img = img;
	view->slot = slot;
	view->read_only = !img || img_is_read_only(img);
	pthread_rwlock_init(&view->table_lock, NULL);
	pthread_mutex_init(&view->alloc_lock, NULL);
	pthread_mutex_init(&view->scan_mutex, NULL);
	pthread_mutex_init(&view->windows_lock, NULL);
	return view;
}

static void view_free(struct ifs_view *view, bool close_img)
{
	if (!view)
		return;
	/* The windows are on the image: they go first. */
	free(view->part_imgs);
	ifs_view_windows_free(view);
	if (close_img)
		img_close(view->img);
	part_table_free(view->table);
	free(view->alloc_cache);
	pthread_rwlock_destroy(&view->table_lock);
	pthread_mutex_destroy(&view->alloc_lock);
	pthread_mutex_destroy(&view->scan_mutex);
	pthread_mutex_destroy(&view->windows_lock);
	free(view->dirname);
	free(view->open_error);
	free(view->snap_id);
	free(view->snap_name);
	free(view);
}

/* FNV-1a: dirnames are short and unique, any spread will do. */
static size_t dirname_hash(const char *name)
{
	size_t h = 14695981039346656037ull;

	for (; *name; name++)
		h = (h ^ (unsigned char)*name) * 1099511628211ull;
	return h;
}

static void name_index_insert_locked(struct ifs *ifs, struct ifs_view *view)
{
	size_t b = dirname_hash(view->dirname) & (ifs->nb_name_buckets - 1);

	view->name_next = ifs->name_buckets[b];
	ifs->name_buckets[b] = view;
}

/* Keeps at most two views a bucket on average. */
static int name_index_reserve_locked(struct ifs *ifs, size_t nb_named)
{
	size_t nb = ifs->nb_name_buckets ? ifs->nb_name_buckets : 16;
	struct ifs_view **buckets;

	while (nb < nb_named / 2)
		nb *= 2;
	if (nb == ifs->nb_name_buckets)
		return 0;
	buckets = calloc(nb, sizeof(*buckets));
	if (!buckets)
		return -ENOMEM;
	free(ifs->name_buckets);
	ifs->name_buckets = buckets;
	ifs->nb_name_buckets = nb;
	for (size_t i = 1; i < ifs->nb_views; i++)
		name_index_insert_locked(ifs, ifs->views[i]);
	return 0;
}

static int views_append_locked(struct ifs *ifs, struct ifs_view *view)
{
	if (ifs->nb_views == ifs->cap_views) {
		/* Doubling: a table of 20,000 snapshots must not cost
		 * 20,000 reallocations of a growing array. */
		size_t cap = ifs->cap_views ? ifs->cap_views * 2 : 16;
		struct ifs_view **grown = realloc(ifs->views,
						  cap * sizeof(*grown));

		if (!grown)
			return -ENOMEM;
		ifs->views = grown;
		ifs->cap_views = cap;
	}
	if (view->dirname) {
		if (name_index_reserve_locked(ifs, ifs->nb_views + 1) < 0)
			return -ENOMEM;
		name_index_insert_locked(ifs, view);
		/* An unlisted snapshot has no folder to count. */
		ifs->nb_live_snapshots += !view->unlisted;
	}
	ifs->views[ifs->nb_views++] = view;
	return 0;
}

/* Snapshot folders are named by cli_snapshot_dirnames (cli/snapname.c),
 * so that a place like snapshots/NAME/p2 means the same to the commands
 * and to the mount. */

struct ifs_view *ifs_view_add_snapshot(struct ifs *ifs,
				       const struct img_snapshot *snap,
				       const char *dirname, bool is_id,
				       bool open_now)
{
	struct img_err err;
	struct img *simg = NULL;
	struct ifs_view *view;

	/* At mount time snapshots are opened when first used (a table of
	 * thousands costs nothing until browsed); mkdir opens its own at
	 * once. */
	if (open_now && img_snapshot_open(ifs->img, snap->id, &simg, &err) < 0) {
		log_err("%s", err.msg);
		return NULL;
	}
	pthread_mutex_lock(&ifs->views_lock);
	view = view_new(simg, ifs->next_slot);
	if (view) {
		view->read_only = true;
		view->dirname = strdup(dirname);
		view->snap_id = strdup(snap->id);
		view->snap_name = strdup(snap->name ? snap->name : "");
		view->dirname_is_id = is_id;
		view->snap_date_sec = snap->date_sec;
		view->snap_vm_clock_nsec = snap->vm_clock_nsec;
		view->snap_disk_size = snap->disk_size;
		if (snap->unreadable) {
			view->unlisted = true;
			view->open_error = strdup(snap->unreadable);
		}
		if (!view->dirname || !view->snap_id || !view->snap_name ||
		    (view->unlisted && !view->open_error) ||
		    views_append_locked(ifs, view) < 0) {
			view_free(view, true);
			view = NULL;
		} else {
			ifs->next_slot++;
		}
	} else {
		img_close(simg);
	}
	pthread_mutex_unlock(&ifs->views_lock);
	return view;
}

int ifs_views_init(struct ifs *ifs)
{
	struct img_snapshot *list = NULL;
	struct ifs_view *active;
	char **dirnames;
	enum cli_dirname_kind *kind;
	size_t nb = 0;
	int ret;

	pthread_mutex_init(&ifs->views_lock, NULL);
	pthread_mutex_init(&ifs->fsviews_lock, NULL);
	pthread_mutex_init(&ifs->fsviews_open_lock, NULL);
	active = view_new(ifs->img, 0);
	if (!active || views_append_locked(ifs, active) < 0) {
		free(active);
		return -ENOMEM;
	}
	ifs->next_slot = 1;
	ifs->active = active;

	ret = img_snapshot_list(ifs->img, &list, &nb);
	if (ret < 0) {
		log_err("%s: cannot list snapshots: %s",
			img_path(ifs->img), strerror(-ret));
		return ret;
	}
	dirnames = calloc(nb ? nb : 1, sizeof(*dirnames));
	kind = calloc(nb ? nb : 1, sizeof(*kind));
	ret = dirnames && kind ? cli_snapshot_dirnames(list, nb, dirnames,
						       kind) :
				 -ENOMEM;
	if (ret < 0) {
		free(dirnames);
		free(kind);
		img_snapshot_list_free(list, nb);
		return ret;
	}
	/* Sized once for the whole table rather than doubled on the way;
	 * without memory now, each append tries again (and warns). */
	pthread_mutex_lock(&ifs->views_lock);
	(void)name_index_reserve_locked(ifs, nb);
	pthread_mutex_unlock(&ifs->views_lock);
	for (size_t i = 0; i < nb; i++) {
		struct ifs_view *v = ifs_view_add_snapshot(ifs, &list[i],
							   dirnames[i],
							   kind[i] ==
								   CLI_DIRNAME_BY_ID,
							   false);
		if (!v)
			log_warn("%s: snapshot %s (ID %s) is not shown",
				 img_path(ifs->img), list[i].name,
				 list[i].id);
		else
			v->dirname_is_position =
				kind[i] == CLI_DIRNAME_BY_POSITION;
		free(dirnames[i]);
	}
	free(dirnames);
	free(kind);
	img_snapshot_list_free(list, nb);
	return 0;
}

void ifs_views_free(struct ifs *ifs)
{
	/* Filesystems read through windows on the views' images and on
	 * volumes, and volumes through windows on the images. */
	ifs_files_free(ifs);
	ifs_lvm_free(ifs);
	pthread_mutex_destroy(&ifs->fsviews_lock);
	pthread_mutex_destroy(&ifs->fsviews_open_lock);
	/* views[0] shares the image with ifs->img, closed by the caller
	 * after the snapshot handles. */
	for (size_t i = ifs->nb_views; i-- > 0;)
		view_free(ifs->views[i], i != 0);
	free(ifs->views);
	ifs->views = NULL;
	ifs->nb_views = 0;
	ifs->cap_views = 0;
	free(ifs->name_buckets);
	ifs->name_buckets = NULL;
	ifs->nb_name_buckets = 0;
	pthread_mutex_destroy(&ifs->views_lock);
}

struct ifs_view *ifs_view_by_slot(struct ifs *ifs, unsigned slot)
{
	struct ifs_view *found = NULL;

	size_t lo = 0, hi;

	/* Nearly every request is for the active disk: no lock for it (it
	 * lives until unmount and is never deleted). */
	if (slot == 0)
		return ifs->active;
	/* Views are appended with growing slots: search by halves. */
	pthread_mutex_lock(&ifs->views_lock);
	hi = ifs->nb_views;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (ifs->views[mid]->slot < slot)
			lo = mid + 1;
		else
			hi = mid;
	}
	if (lo < ifs->nb_views && ifs->views[lo]->slot == slot)
		found = ifs->views[lo];
	pthread_mutex_unlock(&ifs->views_lock);
	return found && !ifs_view_is_deleted(found) ? found : NULL;
}

struct ifs_view *ifs_view_by_dirname(struct ifs *ifs, const char *name)
{
	struct ifs_view *found = NULL;

	pthread_mutex_lock(&ifs->views_lock);
	if (ifs->nb_name_buckets) {
		size_t b = dirname_hash(name) & (ifs->nb_name_buckets - 1);

		for (struct ifs_view *v = ifs->name_buckets[b]; v;
		     v = v->name_next) {
			if (!ifs_view_is_deleted(v) && !v->unlisted &&
			    strcmp(v->dirname, name) == 0) {
				found = v;
				break;
			}
		}
	}
	pthread_mutex_unlock(&ifs->views_lock);
	return found;
}

void ifs_view_mark_deleted(struct ifs *ifs, struct ifs_view *view)
{
	pthread_mutex_lock(&ifs->views_lock);
	if (!ifs_view_is_deleted(view))
		ifs->nb_live_snapshots--;
	__atomic_store_n(&view->deleted, true, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&ifs->views_lock);
}

size_t ifs_nb_live_snapshots(struct ifs *ifs)
{
	size_t nb;

	pthread_mutex_lock(&ifs->views_lock);
	nb = ifs->nb_live_snapshots;
	pthread_mutex_unlock(&ifs->views_lock);
	return nb;
}

static const struct part_entry *find_part_locked(struct ifs_view *view,
						 unsigned number)
{
	if (!view->table)
		return NULL;
	for (size_t i = 0; i < view->table->nb_parts; i++)
		if (view->table->parts[i].number == number)
			return &view->table->parts[i];
	return NULL;
}

int ifs_resolve(struct ifs *ifs, fuse_ino_t ino, struct ifs_node *node_r)
{
	unsigned slot = (unsigned)(ino >> IFS_SLOT_SHIFT);
	unsigned node = (unsigned)(ino & ((1u << IFS_SLOT_SHIFT) - 1));
	struct ifs_view *view = ifs_view_by_slot(ifs, slot);

	if (!view)
		return -ENOENT;
	/* A snapshot's folder can be listed in snapshots/ and stat'ed
	 * without opening the snapshot; anything inside needs it. */
	if (slot != 0 && node != IFS_NODE_DIR) {
		ifs_view_need_table(ifs, view);
		if (!__atomic_load_n(&view->img, __ATOMIC_ACQUIRE))
			return -EIO;
	}
	memset(node_r, 0, sizeof(*node_r));
	node_r->view = view;
	node_r->node = node;
	node_r->img = view->img;
	switch (node) {
	case IFS_NODE_DIR:
		return 0;
	case IFS_NODE_DISK:
		node_r->size = img_size(view->img);
		return 0;
	case IFS_NODE_INFO:
	case IFS_NODE_SNAPDIR:
		return slot == 0 ? 0 : -ENOENT;
	case IFS_NODE_FILESDIR:
		return 0;
	case IFS_NODE_LVMDIR:
	case IFS_NODE_FILES_LVMDIR:
		return ifs_lvm_present(view) ? 0 : -ENOENT;
	}
	if (node >= IFS_NODE_VG_BASE) {
		unsigned base = node >= IFS_NODE_FILES_VG_BASE ?
					IFS_NODE_FILES_VG_BASE :
				node >= IFS_NODE_LV_BASE ? IFS_NODE_LV_BASE :
							   IFS_NODE_VG_BASE;

		if (node - base >= IFS_NODE_RANGE)
			return -ENOENT;
		node_r->node = base;
		node_r->index = node - base;
		if (base == IFS_NODE_LV_BASE) {
			node_r->img = ifs_lvm_lv_img(view, node_r->index, NULL,
						     NULL);
			if (!node_r->img)
				return -ENOENT;
			node_r->size = img_size(node_r->img);
			return 0;
		}
		/* A VG folder exists while the scan lists that many VGs. */
		return node_r->index < IFS_NODE_RANGE && ifs_lvm_present(view)
			       ? 0 : -ENOENT;
	}
	if (node < IFS_NODE_PART_BASE)
		return -ENOENT;
	node_r->node = IFS_NODE_PART_BASE;
	node_r->part_number = node - IFS_NODE_PART_BASE;
	pthread_rwlock_rdlock(&view->table_lock);
	const struct part_entry *e = find_part_locked(view,
						      node_r->part_number);
	node_r->img = e && view->part_imgs ?
			      view->part_imgs[e - view->table->parts] : NULL;
	pthread_rwlock_unlock(&view->table_lock);
	if (!e)
		return -ENOENT;
	if (!node_r->img)
		return -ENOMEM; /* the window could not be opened */
	node_r->size = img_size(node_r->img);
	return 0;
}

/* Bytes of a block file stored as data in the view's image itself (a
 * window keeps the depth its base found). */
static uint64_t allocated_in_file(struct img *img)
{
	uint64_t total = 0, off = 0, end = img_size(img);

	while (off < end) {
		struct img_extent ext;
		if (img_block_status(img, off, end - off, &ext) < 0)
			return total;
		if (ext.kind == IMG_EXTENT_DATA && ext.depth == 0)
			total += ext.len;
		off += ext.len;
	}
	return total;
}

void ifs_view_changed(struct ifs_view *view)
{
	__atomic_add_fetch(&view->write_gen, 1, __ATOMIC_RELEASE);
}

#define ALLOC_CACHE_ENTRIES 8

/* By handle: each block file's handle names one range of one disk for
 * the whole mount (windows.c, lvm-tree.c), so it is the key. */
struct ifs_alloc_cache {
	struct {
		const struct img *img;
		uint64_t gen, bytes;
		bool valid;
	} ent[ALLOC_CACHE_ENTRIES];
	unsigned next;
};

uint64_t ifs_view_allocated(struct ifs_view *view, struct img *img)
{
	uint64_t gen = __atomic_load_n(&view->write_gen, __ATOMIC_ACQUIRE);
	struct ifs_alloc_cache *c;
	uint64_t bytes;

	pthread_mutex_lock(&view->alloc_lock);
	c = view->alloc_cache;
	for (unsigned i = 0; c && i < ALLOC_CACHE_ENTRIES; i++) {
		if (c->ent[i].valid && c->ent[i].img == img &&
		    c->ent[i].gen == gen) {
			bytes = c->ent[i].bytes;
			pthread_mutex_unlock(&view->alloc_lock);
			return bytes;
		}
	}
	pthread_mutex_unlock(&view->alloc_lock);

	/* The walk runs unlocked; a change during it bumps write_gen, so
	 * the stale answer is never served twice. */
	bytes = allocated_in_file(img);

	pthread_mutex_lock(&view->alloc_lock);
	if (!view->alloc_cache)
		view->alloc_cache = calloc(1, sizeof(*view->alloc_cache));
	c = view->alloc_cache;
	if (c) { /* without memory, every stat walks again */
		unsigned slot = c->next++ % ALLOC_CACHE_ENTRIES;
		c->ent[slot].img = img;
		c->ent[slot].gen = gen;
		c->ent[slot].bytes = bytes;
		c->ent[slot].valid = true;
	}
	pthread_mutex_unlock(&view->alloc_lock);
	return bytes;
}

static int count_one(void *ctx, const char *name)
{
	(void)name;
	(*(size_t *)ctx)++;
	return 0;
}

/* The block files whose type files/ reads. The listing shows only those
 * that open, so this may count one more than is listed: find and fts
 * treat a high count as "look at every entry", which is always right
 * (a low one would make them skip folders). Opening them all for a stat
 * of files/ would undo opening at first lookup. */
static size_t count_files_dirs(struct ifs_view *view)
{
	size_t n = 0;

	ifs_files_list_root(view, count_one, &n);
	return n;
}

void ifs_stat_node(struct ifs *ifs, const struct ifs_node *node,
		   struct stat *st)
{
	bool ro = node->view->read_only || ifs->opts->read_only;

	memset(st, 0, sizeof(*st));
	st->st_uid = ifs->uid;
	st->st_gid = ifs->gid;
	st->st_atim = ifs->image_st.st_atim;
	st->st_mtim = ifs->image_st.st_mtim;
	st->st_ctim = ifs->image_st.st_ctim;
	st->st_blksize = 4096;
	switch (node->node) {
	case IFS_NODE_DIR:
		/* A folder's link count is 2 plus its subfolders (find and
		 * fts take a count of 2 to mean "no subfolders"): the root
		 * holds snapshots/, a snapshot's folder none. */
		st->st_mode = S_IFDIR | (ro ? 0555 : 0755);
		st->st_nlink = (node->view->slot == 0 ? 4 : 3) +
			       ifs_lvm_present(node->view);
		break;
	case IFS_NODE_LVMDIR:
	case IFS_NODE_FILES_LVMDIR:
	case IFS_NODE_VG_BASE:
	case IFS_NODE_FILES_VG_BASE:
		st->st_mode = S_IFDIR | (node->node == IFS_NODE_LVMDIR ||
						 node->node == IFS_NODE_VG_BASE
					 ? (ro ? 0555 : 0755) : 0555);
		st->st_nlink = 2;
		break;
	case IFS_NODE_FILESDIR: {
		/* 2 plus one folder per filesystem shown. */
		st->st_mode = S_IFDIR | 0555;
		st->st_nlink = 2 + (nlink_t)count_files_dirs(node->view) +
			       ifs_lvm_present(node->view);
		break;
	}
	case IFS_NODE_SNAPDIR:
		st->st_mode = S_IFDIR | (ro ? 0555 : 0755);
		st->st_nlink = 2 + (nlink_t)ifs_nb_live_snapshots(ifs);
		break;
	case IFS_NODE_INFO: {
		size_t len = 0;
		free(ifs_info_text(ifs, &len));
		st->st_mode = S_IFREG | 0444;
		st->st_nlink = 1;
		st->st_size = (off_t)len;
		st->st_blocks = (blkcnt_t)div_round_up(len, 512);
		break;
	}
	default: { /* disk, pN, lvm/VG/LV */
		uint64_t alloc = ifs_view_allocated(node->view, node->img);
		st->st_mode = S_IFREG | (ro ? 0444 : 0644);
		st->st_nlink = 1;
		st->st_size = (off_t)node->size;
		st->st_blocks = (blkcnt_t)div_round_up(alloc, 512);
		break;
	}
	}
}

const char *ifs_table_disk_attr(const struct part_table *t, const char *key)
{
	if (!t)
		return NULL;
	if (!strcmp(key, "fstype"))
		return t->disk_fs_type;
	if (!strcmp(key, "label"))
		return t->disk_fs_label;
	if (!strcmp(key, "uuid"))
		return t->disk_fs_uuid;
	return NULL;
}

char *ifs_part_attr(struct ifs_view *view, unsigned number, const char *key)
{
	const char *value = NULL;
	char *copy = NULL;

	pthread_rwlock_rdlock(&view->table_lock);
	if (number == 0) {
		/* The disk itself: a filesystem with no partition table. */
		value = ifs_table_disk_attr(view->table, key);
	} else {
		const struct part_entry *e = find_part_locked(view, number);
		if (!e)
			;
		else if (!strcmp(key, "fstype"))
			value = e->fs_type;
		else if (!strcmp(key, "label"))
			value = e->fs_label;
		else if (!strcmp(key, "uuid"))
			value = e->fs_uuid;
		else if (!strcmp(key, "parttype"))
			value = e->type;
		else if (!strcmp(key, "partuuid"))
			value = e->part_uuid;
		else if (!strcmp(key, "partname"))
			value = e->part_name;
	}
	if (value && value[0])
		copy = strdup(value);
	pthread_rwlock_unlock(&view->table_lock);
	return copy;
}

static fuse_ino_t parts_parent(const struct ifs_view *view)
{
	return view->slot == 0 ? FUSE_ROOT_ID
			       : ifs_ino(view->slot, IFS_NODE_DIR);
}

static bool same_window(const struct part_table *t, const struct part_entry *e)
{
	for (size_t i = 0; t && i < t->nb_parts; i++)
		if (t->parts[i].number == e->number)
			return t->parts[i].start_bytes == e->start_bytes &&
			       t->parts[i].size_bytes == e->size_bytes;
	return false;
}

void ifs_view_publish_table(struct ifs *ifs, struct ifs_view *view,
			    struct part_table *table)
{
	struct part_table *old;
	struct img **imgs = ifs_view_part_windows(view, table), **old_imgs;
	fuse_ino_t parent = parts_parent(view);

	pthread_rwlock_wrlock(&view->table_lock);
	old = view->table;
	old_imgs = view->part_imgs;
	view->table = table;
	view->part_imgs = imgs;
	pthread_rwlock_unlock(&view->table_lock);
	/* The array only; its windows stay in the pool (windows.c). */
	free(old_imgs);

	/* The kernel may hold dentries and pages of partitions that moved
	 * or went away; drop them (after the lock: notifications can wait
	 * on requests that need it). A partition that stays the same keeps
	 * its cache. */
	for (size_t i = 0; old && i < old->nb_parts; i++) {
		const struct part_entry *e = &old->parts[i];
		char name[32];

		if (same_window(table, e))
			continue;
		ifs_files_invalidate(ifs, view, e->start_bytes, e->size_bytes,
				     false);
		snprintf(name, sizeof(name), "p%u", e->number);
		fuse_lowlevel_notify_inval_entry(ifs->se, parent, name,
						 strlen(name));
		fuse_lowlevel_notify_inval_inode(
			ifs->se,
			ifs_ino(view->slot, IFS_NODE_PART_BASE + e->number),
			0, 0);
	}
	part_table_free(old);
	ifs_lvm_rescan(ifs, view);
}

void ifs_view_set_provisional_table(struct ifs_view *view,
				    struct part_table *table)
{
	struct img **imgs = ifs_view_part_windows(view, table), **old_imgs;
	struct part_table *old;

	pthread_rwlock_wrlock(&view->table_lock);
	old = view->table;
	old_imgs = view->part_imgs;
	view->table = table;
	view->part_imgs = imgs;
	view->needs_scan = true;
	pthread_rwlock_unlock(&view->table_lock);
	part_table_free(old);
	free(old_imgs);
}
