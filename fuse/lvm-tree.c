/* lvm-tree.c: the lvm/VG/LV block files of a view.
 *
 * After each partition scan of a view, the block files libblkid calls
 * LVM2_member (partitions, or the whole disk when it has no table) are
 * handed to lvm/ as their own handles (the view's image, or the
 * partition's window from the view's pool, windows.c); every readable logical
 * volume becomes an image handle of its own (a composition over those
 * windows), shown as MOUNTPOINT/lvm/VG/LV (and snapshots/NAME/lvm/...).
 *
 * A scan result ("struct ifs_lvm") is immutable once published. A rescan
 * publishes a new one under the view's table_lock and retires the old
 * one to a list freed at unmount: handlers copy a handle pointer under
 * the lock and use it after, so nothing they hold is ever freed under
 * them. Rescans are rare (a written disk was closed), so the retired
 * list stays short.
 *
 * Coherence: LV files are opened with direct_io, so the kernel caches
 * none of their pages and a write through disk or pN is seen at once. A
 * write through an LV invalidates the cached pages of the whole disk and
 * of every partition (ifs_invalidate_aliases over the whole disk), since
 * its extents may lie anywhere on the PVs.
 */
#include "ifs.h"

#include "checked.h"
#include "cli.h"
#include "log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ifs_lvm {
	struct lvm_set *set;
	struct img **srcs;     /* the PVs' block files, borrowed (windows.c) */
	char **src_names;
	size_t nb_srcs;
	struct img **lvs;      /* per lvm_lv_at index; NULL: unreadable */
	/* Per index: what the volume holds (cli_scan_img, the partitions'
	 * probe), or NULL when it is unreadable or the scan failed. */
	struct part_table **lv_tables;
	size_t nb_lvs;
	uint64_t pv_start, pv_end; /* the disk range all PVs lie in */
	struct ifs_lvm *retired_next;
};

static void lvm_free_one(struct ifs_lvm *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nb_lvs; i++) {
		img_close(l->lvs[i]);
		part_table_free(l->lv_tables[i]);
	}
	free(l->lvs);
	free(l->lv_tables);
	lvm_set_free(l->set);
	for (size_t i = 0; i < l->nb_srcs; i++)
		free(l->src_names[i]);
	free(l->srcs);
	free(l->src_names);
	free(l);
}

static bool is_pv_type(const char *fs_type)
{
	return fs_type && strcmp(fs_type, "LVM2_member") == 0;
}

/* A PV: the block file img, which shows [start, start + size) of the
 * view's disk. */
static int add_source(struct ifs_lvm *l, struct img *img, const char *name,
		      uint64_t start, uint64_t size)
{
	if (!img)
		return -ENOMEM;
	l->srcs[l->nb_srcs] = img;
	l->src_names[l->nb_srcs] = strdup(name);
	if (!l->src_names[l->nb_srcs])
		return -ENOMEM;
	l->nb_srcs++;
	l->pv_start = l->nb_srcs == 1 ? start : MIN(l->pv_start, start);
	l->pv_end = MAX(l->pv_end, start + size);
	return 0;
}

/* Builds the LVM view of a table (which the caller keeps alive). NULL
 * when the table holds no PV. */
static struct ifs_lvm *lvm_build(struct ifs_view *view,
				 const struct part_table *t)
{
	struct ifs_lvm *l;
	struct lvm_source *srcs;
	size_t cap = t ? t->nb_parts + 1 : 0;
	int ret = 0;

	if (!t)
		return NULL;
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->srcs = calloc(cap, sizeof(*l->srcs));
	l->src_names = calloc(cap, sizeof(*l->src_names));
	if (!l->srcs || !l->src_names) {
		lvm_free_one(l);
		return NULL;
	}
	if (t->nb_parts == 0 && is_pv_type(t->disk_fs_type))
		ret = add_source(l, view->img, "disk", 0, img_size(view->img));
	for (size_t i = 0; i < t->nb_parts && ret == 0; i++) {
		const struct part_entry *e = &t->parts[i];
		char name[32];

		if (e->container || !is_pv_type(e->fs_type))
			continue;
		snprintf(name, sizeof(name), "p%u", e->number);
		ret = add_source(l, ifs_view_window(view, e->start_bytes,
						    e->size_bytes),
				 name, e->start_bytes, e->size_bytes);
	}
	if (ret < 0 || l->nb_srcs == 0) {
		lvm_free_one(l);
		return NULL;
	}
	srcs = calloc(l->nb_srcs, sizeof(*srcs));
	if (!srcs) {
		lvm_free_one(l);
		return NULL;
	}
	for (size_t i = 0; i < l->nb_srcs; i++) {
		srcs[i].name = l->src_names[i];
		srcs[i].img = l->srcs[i];
	}
	ret = lvm_scan(srcs, l->nb_srcs, &l->set);
	free(srcs);
	if (ret < 0) {
		log_warn("%s: cannot read LVM metadata: %s",
			 img_path(view->img), strerror(-ret));
		lvm_free_one(l);
		return NULL;
	}
	l->nb_lvs = lvm_nb_lvs(l->set);
	l->lvs = calloc(l->nb_lvs ? l->nb_lvs : 1, sizeof(*l->lvs));
	l->lv_tables = calloc(l->nb_lvs ? l->nb_lvs : 1,
			      sizeof(*l->lv_tables));
	if (!l->lvs || !l->lv_tables) {
		l->nb_lvs = 0;
		lvm_free_one(l);
		return NULL;
	}
	for (size_t i = 0; i < l->nb_lvs; i++) {
		const struct lvm_lv *lv = lvm_lv_at(l->set, i);
		struct img_err err = { 0 };

		if (lv->unreadable)
			continue;
		if (lvm_lv_open(l->set, i, view->read_only, &l->lvs[i],
				&err) < 0) {
			l->lvs[i] = NULL;
			log_warn("%s: lvm/%s/%s: %s", img_path(view->img),
				 lv->vg_name, lv->name, err.msg);
			continue;
		}
		ret = cli_scan_img(l->lvs[i], &l->lv_tables[i]);
		if (ret < 0) {
			l->lv_tables[i] = NULL;
			log_warn("%s: lvm/%s/%s: cannot probe its filesystem: "
				 "%s", img_path(view->img), lv->vg_name,
				 lv->name, strerror(-ret));
		}
	}
	return l;
}

void ifs_lvm_rescan(struct ifs *ifs, struct ifs_view *view)
{
	struct ifs_lvm *l, *old;
	struct part_table *copy;
	fuse_ino_t dir = view->slot == 0 ? FUSE_ROOT_ID
					 : ifs_ino(view->slot, IFS_NODE_DIR);

	pthread_rwlock_rdlock(&view->table_lock);
	copy = part_table_dup(view->table);
	pthread_rwlock_unlock(&view->table_lock);
	l = lvm_build(view, copy);
	part_table_free(copy);

	pthread_rwlock_wrlock(&view->table_lock);
	old = view->lvm;
	view->lvm = l;
	pthread_rwlock_unlock(&view->table_lock);
	if (!old)
		return;
	pthread_mutex_lock(&ifs->views_lock);
	old->retired_next = ifs->lvm_retired;
	ifs->lvm_retired = old;
	pthread_mutex_unlock(&ifs->views_lock);
	/* What the kernel knows of lvm/ and files/lvm/ may name volumes
	 * that moved; drop it (after the locks). */
	fuse_lowlevel_notify_inval_entry(ifs->se, dir, "lvm", 3);
	fuse_lowlevel_notify_inval_entry(ifs->se,
					 ifs_ino(view->slot, IFS_NODE_FILESDIR),
					 "lvm", 3);
	ifs_files_invalidate(ifs, view, old->pv_start,
			     old->pv_end - old->pv_start, false);
}

void ifs_lvm_free(struct ifs *ifs)
{
	for (size_t i = 0; i < ifs->nb_views; i++) {
		lvm_free_one(ifs->views[i]->lvm);
		ifs->views[i]->lvm = NULL;
	}
	while (ifs->lvm_retired) {
		struct ifs_lvm *next = ifs->lvm_retired->retired_next;
		lvm_free_one(ifs->lvm_retired);
		ifs->lvm_retired = next;
	}
}

bool ifs_lvm_present(struct ifs_view *view)
{
	bool yes;

	pthread_rwlock_rdlock(&view->table_lock);
	yes = view->lvm && lvm_nb_vgs(view->lvm->set) > 0;
	pthread_rwlock_unlock(&view->table_lock);
	return yes;
}

static int vg_index_locked(struct ifs_view *view, const char *name)
{
	for (size_t i = 0; view->lvm && i < lvm_nb_vgs(view->lvm->set); i++)
		if (strcmp(lvm_vg_at(view->lvm->set, i)->name, name) == 0)
			return (int)i;
	return -1;
}

int ifs_lvm_vg_index(struct ifs_view *view, const char *name)
{
	int found;

	pthread_rwlock_rdlock(&view->table_lock);
	found = vg_index_locked(view, name);
	pthread_rwlock_unlock(&view->table_lock);
	return found;
}

/* Index of the LV named name in VG vg, readable ones only (whether
 * files/ shows its content is ifs_lvm_lv_files_shown). */
int ifs_lvm_lv_index(struct ifs_view *view, int vg, const char *name)
{
	int found = -1;

	pthread_rwlock_rdlock(&view->table_lock);
	if (view->lvm && vg >= 0 &&
	    (size_t)vg < lvm_nb_vgs(view->lvm->set)) {
		const char *vg_name = lvm_vg_at(view->lvm->set,
						(size_t)vg)->name;

		for (size_t i = 0; i < view->lvm->nb_lvs; i++) {
			const struct lvm_lv *lv = lvm_lv_at(view->lvm->set, i);
			if (view->lvm->lvs[i] &&
			    strcmp(lv->vg_name, vg_name) == 0 &&
			    strcmp(lv->name, name) == 0) {
				found = (int)i;
				break;
			}
		}
	}
	pthread_rwlock_unlock(&view->table_lock);
	return found;
}

int ifs_lvm_list_vgs(struct ifs_view *view,
		     int (*add)(void *ctx, const char *name, unsigned idx),
		     void *ctx)
{
	int ret = 0;

	pthread_rwlock_rdlock(&view->table_lock);
	for (size_t i = 0;
	     view->lvm && i < lvm_nb_vgs(view->lvm->set) && !ret; i++) {
		const char *name = lvm_vg_at(view->lvm->set, i)->name;

		/* A VG none of whose copies could be parsed has no name
		 * (info lists it); two copies of one name show once. */
		if (name[0] && vg_index_locked(view, name) == (int)i)
			ret = add(ctx, name, (unsigned)i);
	}
	pthread_rwlock_unlock(&view->table_lock);
	return ret;
}

int ifs_lvm_list_lvs(struct ifs_view *view, int vg, bool files_only,
		     int (*add)(void *ctx, const char *name, unsigned idx),
		     void *ctx)
{
	int ret = 0;

	pthread_rwlock_rdlock(&view->table_lock);
	if (view->lvm && vg >= 0 &&
	    (size_t)vg < lvm_nb_vgs(view->lvm->set)) {
		const char *vg_name = lvm_vg_at(view->lvm->set,
						(size_t)vg)->name;

		for (size_t i = 0; i < view->lvm->nb_lvs && !ret; i++) {
			const struct lvm_lv *lv = lvm_lv_at(view->lvm->set, i);
			if (view->lvm->lvs[i] &&
			    strcmp(lv->vg_name, vg_name) == 0 &&
			    (!files_only ||
			     cli_lv_files_shown(view->lvm->lv_tables[i])))
				ret = add(ctx, lv->name, (unsigned)i);
		}
	}
	pthread_rwlock_unlock(&view->table_lock);
	return ret;
}

struct img *ifs_lvm_lv_img(struct ifs_view *view, unsigned idx,
			   uint64_t *pv_start_r, uint64_t *pv_size_r)
{
	struct img *img = NULL;

	pthread_rwlock_rdlock(&view->table_lock);
	if (view->lvm && idx < view->lvm->nb_lvs) {
		img = view->lvm->lvs[idx];
		if (pv_start_r)
			*pv_start_r = view->lvm->pv_start;
		if (pv_size_r)
			*pv_size_r = view->lvm->pv_end - view->lvm->pv_start;
	}
	pthread_rwlock_unlock(&view->table_lock);
	return img;
}

char *ifs_lvm_lv_attr(struct ifs_view *view, unsigned idx, const char *key)
{
	const char *value = NULL;
	char *copy = NULL;

	pthread_rwlock_rdlock(&view->table_lock);
	if (view->lvm && idx < view->lvm->nb_lvs) {
		const struct lvm_lv *lv = lvm_lv_at(view->lvm->set, idx);

		if (!strcmp(key, "fstype") || !strcmp(key, "label") ||
		    !strcmp(key, "uuid"))
			value = ifs_table_disk_attr(view->lvm->lv_tables[idx],
						    key);
		else if (!strcmp(key, "vguuid"))
			value = lv->vg_uuid;
		else if (!strcmp(key, "lvuuid"))
			value = lv->uuid;
		else if (!strcmp(key, "segtype"))
			value = lv->segment_types;
		else if (!strcmp(key, "vg"))
			value = lv->vg_name;
	}
	if (value && value[0])
		copy = strdup(value);
	pthread_rwlock_unlock(&view->table_lock);
	return copy;
}

bool ifs_lvm_lv_files_shown(struct ifs_view *view, unsigned idx)
{
	bool shown = false;

	pthread_rwlock_rdlock(&view->table_lock);
	if (view->lvm && idx < view->lvm->nb_lvs)
		shown = cli_lv_files_shown(view->lvm->lv_tables[idx]);
	pthread_rwlock_unlock(&view->table_lock);
	return shown;
}

const struct lvm_set *ifs_lvm_set(struct ifs_view *view,
				  const struct part_table *const **tables_r)
{
	const struct lvm_set *set;

	/* Published sets live until unmount (retired, not freed). */
	pthread_rwlock_rdlock(&view->table_lock);
	set = view->lvm ? view->lvm->set : NULL;
	*tables_r = view->lvm ? (const struct part_table *const *)
					view->lvm->lv_tables
			      : NULL;
	pthread_rwlock_unlock(&view->table_lock);
	return set;
}
