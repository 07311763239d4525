/* session.c: one image opened for a command, and the places in it.
 *
 * The image is always opened read-only: nothing is ever written into it
 * (the window handles are read-only too). A disk's partition table is
 * read with part_scan_reader over the image handle (no descriptor, no
 * FUSE), the first time a place needs it; snapshots are listed only for
 * a place under snapshots/ (or for info and ls), and LVM is scanned only
 * for lvm/ places.
 *
 * Names are the mount's: disk, pN (the table's numbers; an extended
 * partition is pN too), lvm/VG/LV, snapshots/NAME/... with NAME from
 * cli_snapshot_dirnames, files shown for the filesystem types
 * cli_fs_type_readable accepts.
 *
 * Path lookup inside a filesystem follows symbolic links in the middle
 * of a path (and at its end when asked), inside the guest's own root: an
 * absolute target starts again from the filesystem's root, ".." never
 * climbs above it, 40 links at most (ELOOP), as the kernel resolves a
 * path in a chroot.
 */
#include "cli-int.h"

#include "checked.h"
#include "cleanup.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define CLI_MAX_SYMLINKS 40
#define CLI_MAX_DEPTH 4096

void cli_err(struct cli_session *s, const char *place, const char *fmt, ...)
{
	char msg[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (place)
		fprintf(stderr, "imgfs: %s: %s: %s\n", s->image, place, msg);
	else
		fprintf(stderr, "imgfs: %s: %s\n", s->image, msg);
}

int cli_session_open(struct cli_session *s, const char *image,
		     const struct cli_opts *o)
{
	struct img_open_opts io = {
		.format = o->format,
		.read_only = true,
		.backing = o->backing,
		.disk = o->disk,
	};
	struct img_err err = { 0 };
	int ret;

	memset(s, 0, sizeof(*s));
	s->image = image;
	s->image_abs = realpath(image, NULL);
	if (!s->image_abs) {
		ret = -errno;
		fprintf(stderr, "imgfs: %s: %s\n", image, strerror(-ret));
		return ret;
	}
	ret = img_open(s->image_abs, &io, &s->img, &err);
	if (ret < 0) {
		fprintf(stderr, "imgfs: %s\n",
			err.msg[0] ? err.msg : strerror(-ret));
		free(s->image_abs);
		s->image_abs = NULL;
		return ret;
	}
	s->active.img = s->img;
	s->active.prefix = "";
	return 0;
}

static void disk_free(struct cli_disk *d, bool close_img)
{
	if (!d)
		return;
	lvm_set_free(d->lvm);
	for (size_t i = 0; i < d->nb_lvm_srcs; i++)
		img_close(d->lvm_srcs[i]);
	free(d->lvm_srcs);
	part_table_free(d->table);
	if (close_img)
		img_close(d->img);
}

void cli_session_close(struct cli_session *s)
{
	for (size_t i = 0; s->snap_dirs && i < s->nb_snaps; i++) {
		if (s->snap_dirs[i].disk) {
			free((char *)s->snap_dirs[i].disk->prefix);
			disk_free(s->snap_dirs[i].disk, true);
			free(s->snap_dirs[i].disk);
		}
		free(s->snap_dirs[i].dirname);
	}
	free(s->snap_dirs);
	img_snapshot_list_free(s->snaps, s->nb_snaps);
	disk_free(&s->active, false);
	img_close(s->img);
	free(s->image_abs);
	memset(s, 0, sizeof(*s));
}

int cli_disk_table(struct cli_session *s, struct cli_disk *d)
{
	int ret;

	if (d->scanned)
		return 0;
	ret = cli_scan_img(d->img, &d->table);
	if (ret < 0) {
		cli_err(s, d->prefix[0] ? d->prefix : NULL,
			"cannot read the partition table: %s", strerror(-ret));
		return ret;
	}
	d->scanned = true;
	return 0;
}

int cli_disk_lvm(struct cli_session *s, struct cli_disk *d)
{
	CLEANUP_FREE struct lvm_source *srcs = NULL;
	CLEANUP_FREE char *names = NULL;
	size_t nb = 0, cap;
	int ret;

	if (d->lvm_scanned)
		return 0;
	ret = cli_disk_table(s, d);
	if (ret < 0)
		return ret;
	cap = d->table->nb_parts ? d->table->nb_parts : 1;
	srcs = calloc(cap, sizeof(*srcs));
	names = calloc(cap, 16);
	d->lvm_srcs = calloc(cap, sizeof(*d->lvm_srcs));
	if (!srcs || !names || !d->lvm_srcs)
		return -ENOMEM;
	if (d->table->nb_parts == 0) {
		ret = img_window_open(d->img, 0, img_size(d->img), true,
				      &d->lvm_srcs[0]);
		if (ret == 0) {
			snprintf(names, 16, "disk");
			srcs[nb].name = names;
			srcs[nb++].img = d->lvm_srcs[0];
			d->nb_lvm_srcs = 1;
		}
	}
	for (size_t i = 0; i < d->table->nb_parts; i++) {
		const struct part_entry *e = &d->table->parts[i];
		struct img *w;

		if (e->container || e->size_bytes == 0)
			continue;
		if (img_window_open(d->img, e->start_bytes, e->size_bytes,
				    true, &w) < 0)
			continue;
		d->lvm_srcs[d->nb_lvm_srcs++] = w;
		snprintf(names + 16 * nb, 16, "p%u", e->number);
		srcs[nb].name = names + 16 * nb;
		srcs[nb++].img = w;
	}
	ret = lvm_scan(srcs, nb, &d->lvm);
	if (ret < 0) {
		cli_err(s, NULL, "cannot scan for LVM volumes: %s",
			strerror(-ret));
		return ret;
	}
	d->lvm_scanned = true;
	return 0;
}

int cli_session_snapshots(struct cli_session *s)
{
	CLEANUP_FREE char **dirnames = NULL;
	CLEANUP_FREE enum cli_dirname_kind *kind = NULL;
	int ret;

	if (s->snaps_listed)
		return 0;
	ret = img_snapshot_list(s->img, &s->snaps, &s->nb_snaps);
	if (ret < 0) {
		cli_err(s, NULL, "cannot list snapshots: %s", strerror(-ret));
		return ret;
	}
	dirnames = calloc(s->nb_snaps + 1, sizeof(*dirnames));
	kind = calloc(s->nb_snaps + 1, sizeof(*kind));
	s->snap_dirs = calloc(s->nb_snaps + 1, sizeof(*s->snap_dirs));
	if (!dirnames || !kind || !s->snap_dirs)
		return -ENOMEM;
	ret = cli_snapshot_dirnames(s->snaps, s->nb_snaps, dirnames, kind);
	if (ret < 0)
		return ret;
	for (size_t i = 0; i < s->nb_snaps; i++) {
		s->snap_dirs[i].dirname = dirnames[i];
		s->snap_dirs[i].kind = kind[i];
		s->snap_dirs[i].snap = &s->snaps[i];
	}
	s->snaps_listed = true;
	return 0;
}

int cli_snap_disk(struct cli_session *s, size_t i, struct cli_disk **d_r)
{
	struct cli_snap *sd = &s->snap_dirs[i];
	struct img_err err = { 0 };
	struct cli_disk *d;
	char *prefix = NULL;
	int ret;

	if (sd->disk) {
		*d_r = sd->disk;
		return 0;
	}
	d = calloc(1, sizeof(*d));
	if (!d || asprintf(&prefix, "snapshots/%s/", sd->dirname) < 0) {
		free(d);
		return -ENOMEM;
	}
	ret = img_snapshot_open(s->img, sd->snap->id, &d->img, &err);
	if (ret < 0) {
		cli_err(s, prefix, "cannot open the snapshot: %s",
			err.msg[0] ? img_err_reason(&err, s->img) :
				     strerror(-ret));
		free(prefix);
		free(d);
		return ret;
	}
	d->prefix = prefix;
	sd->disk = d;
	*d_r = d;
	return 0;
}

/* pN: N, or 0 when name is not of that form. */
static unsigned part_number(const char *name)
{
	char *end;
	unsigned long n;

	if (name[0] != 'p' || name[1] < '1' || name[1] > '9')
		return 0;
	n = strtoul(name + 1, &end, 10);
	return *end || n > 0xfffff ? 0 : (unsigned)n;
}

/* "the disk has p1, p2, p3" for messages. */
static void list_parts(const struct part_table *t, char *buf, size_t len)
{
	size_t used = 0;

	if (!t->nb_parts) {
		snprintf(buf, len, "the disk has no partitions");
		return;
	}
	used = (size_t)snprintf(buf, len, "the disk has");
	for (size_t i = 0; i < t->nb_parts && used < len; i++)
		used += (size_t)snprintf(buf + used, len - used, "%s p%u",
					 i ? "," : "", t->parts[i].number);
}

/* Resolves name inside disk d (no snapshots/ prefix). */
static int disk_blockfile(struct cli_session *s, struct cli_disk *d,
			  const char *name, const char *full,
			  struct cli_blockfile *bf)
{
	struct img_err err = { 0 };
	unsigned n;
	int ret;

	ret = cli_disk_table(s, d);
	if (ret < 0)
		return ret;
	if (strcmp(name, "disk") == 0) {
		if (d->table->nb_parts == 0)
			bf->fs_type = d->table->disk_fs_type;
		bf->is_table = d->table->nb_parts != 0;
		return img_window_open(d->img, 0, img_size(d->img), true,
				       &bf->img);
	}
	if ((n = part_number(name)) != 0) {
		for (size_t i = 0; i < d->table->nb_parts; i++) {
			const struct part_entry *e = &d->table->parts[i];

			if (e->number != n)
				continue;
			bf->fs_type = e->fs_type;
			bf->container = e->container;
			ret = img_window_open(d->img, e->start_bytes,
					      e->size_bytes, true, &bf->img);
			if (ret < 0)
				cli_err(s, full, "%s", strerror(-ret));
			return ret;
		}
		char have[512];
		list_parts(d->table, have, sizeof(have));
		cli_err(s, full, "no such partition (%s)", have);
		return -ENOENT;
	}
	if (strncmp(name, "lvm/", 4) == 0) {
		const char *vg = name + 4, *slash = strchr(vg, '/');

		ret = cli_disk_lvm(s, d);
		if (ret < 0)
			return ret;
		for (size_t i = 0; slash && i < lvm_nb_lvs(d->lvm); i++) {
			const struct lvm_lv *lv = lvm_lv_at(d->lvm, i);

			if (strlen(lv->vg_name) != (size_t)(slash - vg) ||
			    strncmp(lv->vg_name, vg, (size_t)(slash - vg)) ||
			    strcmp(lv->name, slash + 1))
				continue;
			ret = lvm_lv_open(d->lvm, i, true, &bf->img, &err);
			if (ret < 0) {
				/* The reason alone: the message names the
				 * place already. */
				cli_err(s, full, "%s",
					lv->unreadable ? lv->unreadable :
					err.msg[0]     ? err.msg :
							 strerror(-ret));
				return ret;
			}
			bf->lv = lv;
			return 0;
		}
		cli_err(s, full, "no such logical volume (%zu found)",
			lvm_nb_lvs(d->lvm));
		return -ENOENT;
	}
	cli_err(s, full, "no such block file (use disk, pN, lvm/VG/LV or "
		"snapshots/NAME/...)");
	return -ENOENT;
}

/* The snapshot folder that name starts with ("snapshots/NAME/rest"):
 * its index, and *rest_r after "NAME/". Folder names may hold ':' but
 * never '/', so the first '/' after the prefix ends NAME. */
static int find_snapshot(struct cli_session *s, const char *name,
			 const char *full, size_t *i_r, const char **rest_r)
{
	const char *n = name + strlen("snapshots/"), *slash = strchr(n, '/');
	size_t len = slash ? (size_t)(slash - n) : strlen(n);
	int ret = cli_session_snapshots(s);

	if (ret < 0)
		return ret;
	for (size_t i = 0; i < s->nb_snaps; i++) {
		if (strlen(s->snap_dirs[i].dirname) == len &&
		    strncmp(s->snap_dirs[i].dirname, n, len) == 0) {
			*i_r = i;
			*rest_r = slash ? slash + 1 : "";
			return 0;
		}
	}
	cli_err(s, full, "no such snapshot (%zu snapshot%s: imgfs ls %s "
		"snapshots)", s->nb_snaps, s->nb_snaps == 1 ? "" : "s",
		s->image);
	return -ENOENT;
}

int cli_blockfile_open(struct cli_session *s, const char *name,
		       struct cli_blockfile *bf)
{
	struct cli_disk *d = &s->active;
	const char *rest = name;
	int ret;

	memset(bf, 0, sizeof(*bf));
	snprintf(bf->name, sizeof(bf->name), "%s", name);
	if (strncmp(name, "snapshots/", 10) == 0) {
		size_t i;

		ret = find_snapshot(s, name, name, &i, &rest);
		if (ret < 0)
			return ret;
		ret = cli_snap_disk(s, i, &d);
		if (ret < 0)
			return ret;
		if (!rest[0]) {
			cli_err(s, name, "a snapshot folder, not a block file "
				"(use %sdisk or %spN)", d->prefix, d->prefix);
			return -EISDIR;
		}
	}
	bf->disk = d;
	ret = disk_blockfile(s, d, rest, name, bf);
	if (ret < 0 && bf->img) {
		img_close(bf->img);
		bf->img = NULL;
	}
	return ret;
}

void cli_blockfile_close(struct cli_blockfile *bf)
{
	fsys_close(bf->fs);
	bf->fs = NULL;
	img_close(bf->img);
	bf->img = NULL;
	part_table_free(bf->lv_table);
	bf->lv_table = NULL;
}

int cli_blockfile_fs(struct cli_session *s, struct cli_blockfile *bf)
{
	struct img_err err = { 0 };
	char why[160];
	int ret;

	if (bf->fs)
		return 0;
	if (bf->is_table) {
		cli_err(s, bf->name, "the disk holds a partition table, not a "
			"filesystem (its files are in pN:)");
		return -EMEDIUMTYPE;
	}
	/* What a volume holds, by the partitions' probe (the rule the
	 * mount's files/lvm/VG/LV follows). */
	if (bf->lv && !bf->lv_table && cli_scan_img(bf->img, &bf->lv_table) < 0)
		bf->lv_table = NULL;
	if (bf->lv && !cli_lv_files_shown(bf->lv_table)) {
		struct cli_info_files f;

		cli_info_files_of_lv(bf->lv, bf->lv_table, &f);
		cli_err(s, bf->name, "%s", f.reason);
		return -EMEDIUMTYPE;
	}
	if (!bf->lv &&
	    cli_files_reason(bf->fs_type, bf->container, why, sizeof(why))) {
		cli_err(s, bf->name, "%s", why);
		return -EMEDIUMTYPE;
	}
	ret = fsys_open(bf->img, &bf->fs, &err);
	if (ret < 0) {
		cli_err(s, bf->name, "%s",
			err.msg[0] ? err.msg : strerror(-ret));
		return ret;
	}
	return 0;
}

/* "files/X/rest" (or "snapshots/N/files/X/rest") as "X:/rest"; NULL
 * when name does not go below files/. */
char *cli_files_alias(const char *name)
{
	const char *f = NULL, *x, *end;
	char *out = NULL;

	if (strncmp(name, "files/", 6) == 0)
		f = name;
	else if (strncmp(name, "snapshots/", 10) == 0) {
		const char *slash = strchr(name + 10, '/');

		if (slash && strncmp(slash + 1, "files/", 6) == 0)
			f = slash + 1;
	}
	if (!f)
		return NULL;
	x = f + 6;
	if (!*x)
		return NULL;
	if (strncmp(x, "lvm/", 4) == 0) {
		end = strchr(x + 4, '/');
		end = end ? strchr(end + 1, '/') : NULL;
	} else {
		end = strchr(x, '/');
	}
	if (asprintf(&out, "%.*s%.*s:%s", (int)(f - name), name,
		     (int)(end ? (size_t)(end - x) : strlen(x)), x,
		     end ? end : "/") < 0)
		return NULL;
	return out;
}

/* The ':' between BLOCKFILE and PATH in arg, or NULL. A snapshot folder
 * name may hold ':' (it ends at the next '/'), and a place going below
 * files/ is a guest path whose names may hold ':' too (File::Temp.3perl),
 * so neither is split there. */
const char *cli_place_colon(const char *arg)
{
	const char *c = arg;

	if (strncmp(arg, "snapshots/", 10) == 0) {
		/* Walked by hand: GCC's overread check (with ASan) takes
		 * arg + 10 for a pointer past a 10-byte literal. */
		for (size_t i = 0; i < 10; i++)
			c++;
		while (*c && *c != '/')
			c++;
		if (!*c)
			return NULL;
		c++;
	}
	if (strncmp(c, "files/", 6) == 0)
		return NULL;
	return strchr(c, ':');
}

int cli_place_parse(struct cli_session *s, const char *arg,
		    struct cli_place *p)
{
	CLEANUP_FREE char *alias = NULL;
	const char *colon;

	memset(p, 0, sizeof(*p));
	if (!cli_place_colon(arg) && (alias = cli_files_alias(arg)) != NULL)
		arg = alias;
	colon = cli_place_colon(arg);
	p->blockfile = colon ? strndup(arg, (size_t)(colon - arg)) :
			       strdup(arg);
	if (!p->blockfile)
		return -ENOMEM;
	if (colon) {
		const char *path = colon + 1;

		if (asprintf(&p->path, "%s%s", path[0] == '/' ? "" : "/",
			     path) < 0) {
			p->path = NULL;
			return -ENOMEM;
		}
	}
	if (!p->blockfile[0]) {
		cli_err(s, arg, "no block file before ':' (e.g. p1:%s)",
			p->path ? p->path : "/");
		return -EINVAL;
	}
	return 0;
}

void cli_place_free(struct cli_place *p)
{
	free(p->blockfile);
	free(p->path);
	memset(p, 0, sizeof(*p));
}

int cli_lookup_path(struct fsys *fs, const char *path, bool follow_last,
		    uint64_t *ino_r, struct fsys_stat *st_r)
{
	CLEANUP_FREE uint64_t *stack = NULL;
	CLEANUP_FREE char *work = NULL;
	size_t depth = 0;
	unsigned links = 0;
	char *cur;
	int ret;

	stack = malloc(CLI_MAX_DEPTH * sizeof(*stack));
	work = strdup(path);
	if (!stack || !work)
		return -ENOMEM;
	stack[0] = fsys_root_ino(fs);
	ret = fsys_getattr(fs, stack[0], st_r);
	if (ret < 0)
		return ret;
	cur = work;
	for (;;) {
		struct fsys_stat st;
		char *comp, *next;

		while (*cur == '/')
			cur++;
		if (!*cur)
			break;
		comp = cur;
		next = strchr(cur, '/');
		if (next)
			*next++ = '\0';
		else
			next = cur + strlen(cur);
		cur = next;
		if (strcmp(comp, ".") == 0)
			continue;
		if (strcmp(comp, "..") == 0) {
			if (depth)
				depth--;
			ret = fsys_getattr(fs, stack[depth], st_r);
			if (ret < 0)
				return ret;
			continue;
		}
		if (!S_ISDIR(st_r->mode))
			return -ENOTDIR;
		ret = fsys_lookup(fs, stack[depth], comp, &st);
		if (ret < 0)
			return ret;
		while (*cur == '/')
			cur++;
		if (S_ISLNK(st.mode) && (*cur || follow_last)) {
			char target[PATH_MAX];
			char *joined;
			ssize_t n;

			if (++links > CLI_MAX_SYMLINKS)
				return -ELOOP;
			n = fsys_readlink(fs, st.ino, target, sizeof(target));
			if (n < 0)
				return (int)n;
			if (asprintf(&joined, "%s/%s", target, cur) < 0)
				return -ENOMEM;
			free(work);
			work = joined;
			cur = work;
			if (target[0] == '/')
				depth = 0;
			ret = fsys_getattr(fs, stack[depth], st_r);
			if (ret < 0)
				return ret;
			continue;
		}
		if (depth + 1 >= CLI_MAX_DEPTH)
			return -ENAMETOOLONG;
		stack[++depth] = st.ino;
		*st_r = st;
	}
	*ino_r = stack[depth];
	return 0;
}
