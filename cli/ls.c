/* ls.c: `imgfs ls [-l] [-R] IMAGE [PLACE]` and `imgfs cat IMAGE PLACE`.
 *
 * ls with no place lists the tree's root as `ls MNT` would (disk, files,
 * info, lvm, p1..., snapshots); a place without ':' may also be one of
 * the mount's folders (snapshots, snapshots/NAME, files, lvm) or name a
 * folder under files/ (files/p2/etc means p2:/etc). Names are sorted by
 * bytes (ls in the C locale). -l prints ls -l's columns with numeric
 * owners (guest IDs mean nothing on the host) and ISO dates in local
 * time: mode, links, uid, gid, size (or "major, minor"), date, name,
 * "-> target" for symbolic links. -R lists folders below, each after a
 * "PLACE:" line, as ls -R does.
 *
 * cat of a file streams it in CLI_IO_BYTES reads; cat of a block file
 * streams its raw bytes, and when stdout is a regular file it seeks over
 * holes and zero extents (img_block_status) and sets the size at the end,
 * so the copy is as sparse as the image.
 */
#include "cli-int.h"

#include "checked.h"
#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

struct ls_entry {
	char *name;
	uint64_t ino;
	struct fsys_stat st;
	bool have_st;
	char *target; /* symlink target for -l */
};

struct ls_list {
	struct ls_entry *e;
	size_t nb, cap;
};

static int list_add(struct ls_list *l, const char *name)
{
	if (l->nb == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 32;
		struct ls_entry *g = realloc(l->e, cap * sizeof(*g));

		if (!g)
			return -ENOMEM;
		l->e = g;
		l->cap = cap;
	}
	memset(&l->e[l->nb], 0, sizeof(l->e[0]));
	l->e[l->nb].name = strdup(name);
	if (!l->e[l->nb].name)
		return -ENOMEM;
	return (int)l->nb++;
}

static void list_free(struct ls_list *l)
{
	for (size_t i = 0; i < l->nb; i++) {
		free(l->e[i].name);
		free(l->e[i].target);
	}
	free(l->e);
	memset(l, 0, sizeof(*l));
}

static int entry_cmp(const void *a, const void *b)
{
	return strcmp(((const struct ls_entry *)a)->name,
		      ((const struct ls_entry *)b)->name);
}

static void mode_string(uint32_t m, char *s)
{
	static const char rwx[] = "rwxrwxrwx";

	s[0] = S_ISDIR(m)  ? 'd' :
	       S_ISLNK(m)  ? 'l' :
	       S_ISCHR(m)  ? 'c' :
	       S_ISBLK(m)  ? 'b' :
	       S_ISFIFO(m) ? 'p' :
	       S_ISSOCK(m) ? 's' :
			     '-';
	for (int i = 0; i < 9; i++)
		s[1 + i] = m & (0400u >> i) ? rwx[i] : '-';
	if (m & S_ISUID)
		s[3] = m & 0100 ? 's' : 'S';
	if (m & S_ISGID)
		s[6] = m & 0010 ? 's' : 'S';
	if (m & S_ISVTX)
		s[9] = m & 0001 ? 't' : 'T';
	s[10] = '\0';
}

static void size_string(const struct fsys_stat *st, char *buf, size_t len)
{
	if (S_ISCHR(st->mode) || S_ISBLK(st->mode))
		snprintf(buf, len, "%u, %u", major(st->rdev),
			 minor(st->rdev));
	else
		snprintf(buf, len, "%" PRIu64, st->size);
}

static int num_width(uint64_t v)
{
	char b[24];

	return snprintf(b, sizeof(b), "%" PRIu64, v);
}

static void print_list(struct ls_list *l, bool longfmt)
{
	int wl = 1, wu = 1, wg = 1, ws = 1;

	if (l->nb > 1)
		qsort(l->e, l->nb, sizeof(*l->e), entry_cmp);
	if (!longfmt) {
		for (size_t i = 0; i < l->nb; i++)
			printf("%s\n", l->e[i].name);
		return;
	}
	for (size_t i = 0; i < l->nb; i++) {
		const struct fsys_stat *st = &l->e[i].st;
		char sz[48];

		size_string(st, sz, sizeof(sz));
		wl = MAX(wl, num_width(st->nlink));
		wu = MAX(wu, num_width(st->uid));
		wg = MAX(wg, num_width(st->gid));
		ws = MAX(ws, (int)strlen(sz));
	}
	for (size_t i = 0; i < l->nb; i++) {
		const struct fsys_stat *st = &l->e[i].st;
		char mode[12], sz[48], date[32] = "?";
		time_t t = st->mtime.tv_sec;
		struct tm tm;

		mode_string(st->mode, mode);
		size_string(st, sz, sizeof(sz));
		if (localtime_r(&t, &tm))
			strftime(date, sizeof(date), "%Y-%m-%d %H:%M", &tm);
		printf("%s %*u %*u %*u %*s %s %s%s%s\n", mode, wl, st->nlink,
		       wu, st->uid, wg, st->gid, ws, sz, date, l->e[i].name,
		       l->e[i].target ? " -> " : "",
		       l->e[i].target ? l->e[i].target : "");
	}
}

/* The mount's folders and block files, as stat shows them there. */

struct vctx {
	struct cli_session *s;
	struct stat img_st;
};

static struct fsys_stat vstat(const struct vctx *v, bool dir, uint64_t size,
			      uint32_t nlink)
{
	struct fsys_stat st = {
		.mode = dir ? S_IFDIR | 0555 : S_IFREG | 0444,
		.nlink = nlink,
		.uid = getuid(),
		.gid = getgid(),
		.size = size,
		.atime = v->img_st.st_atim,
		.mtime = v->img_st.st_mtim,
		.ctime = v->img_st.st_ctim,
	};
	return st;
}

static int vadd(struct ls_list *l, const struct vctx *v, const char *name,
		bool dir, uint64_t size)
{
	int i = list_add(l, name);

	if (i < 0)
		return i;
	l->e[i].st = vstat(v, dir, size, dir ? 2 : 1);
	l->e[i].have_st = true;
	return 0;
}

static uint64_t info_size(struct cli_session *s)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);

	if (!f)
		return 0;
	cli_info_print(s, f, false);
	fclose(f);
	free(text);
	return len;
}

/* The root of disk d (the active one, or a snapshot's folder). */
static int list_disk_root(struct vctx *v, struct cli_disk *d, bool active,
			  struct ls_list *l)
{
	int ret = cli_disk_table(v->s, d);

	if (!ret)
		ret = cli_disk_lvm(v->s, d);
	if (ret < 0)
		return ret;
	ret = vadd(l, v, "disk", false, img_size(d->img));
	if (!ret)
		ret = vadd(l, v, "files", true, 0);
	if (!ret && active)
		ret = vadd(l, v, "info", false, info_size(v->s));
	if (!ret && active)
		ret = vadd(l, v, "snapshots", true, 0);
	if (!ret && lvm_nb_vgs(d->lvm))
		ret = vadd(l, v, "lvm", true, 0);
	for (size_t i = 0; !ret && i < d->table->nb_parts; i++) {
		char name[32];

		snprintf(name, sizeof(name), "p%u", d->table->parts[i].number);
		ret = vadd(l, v, name, false, d->table->parts[i].size_bytes);
	}
	return ret;
}

static int list_files_dir(struct vctx *v, struct cli_disk *d,
			  struct ls_list *l)
{
	struct cli_info_files *files;
	size_t n;
	int ret = cli_disk_table(v->s, d);

	if (ret < 0)
		return ret;
	files = calloc(d->table->nb_parts + 1, sizeof(*files));
	if (!files)
		return -ENOMEM;
	n = cli_info_files_from_table(d->table, files,
				      d->table->nb_parts + 1);
	for (size_t i = 0; !ret && i < n; i++)
		if (files[i].shown)
			ret = vadd(l, v, files[i].name, true, 0);
	free(files);
	return ret;
}

/* Lists a folder of the mount's own tree; 1 when name is not one. */
static int list_virtual(struct vctx *v, const char *name, struct ls_list *l)
{
	struct cli_session *s = v->s;
	struct cli_disk *d = &s->active;
	const char *rest = name;
	int ret;

	if (strcmp(name, "snapshots") == 0 || strcmp(name, "snapshots/") == 0) {
		ret = cli_session_snapshots(s);
		/* As the mount: an unreadable snapshot has no folder (info
		 * says why). */
		for (size_t i = 0; !ret && i < s->nb_snaps; i++)
			if (!s->snap_dirs[i].snap->unreadable)
				ret = vadd(l, v, s->snap_dirs[i].dirname, true,
					   0);
		return ret;
	}
	if (strncmp(name, "snapshots/", 10) == 0) {
		const char *n = name + 10, *slash = strchr(n, '/');
		size_t len = slash ? (size_t)(slash - n) : strlen(n);

		ret = cli_session_snapshots(s);
		if (ret < 0)
			return ret;
		for (size_t i = 0; i < s->nb_snaps; i++) {
			if (strlen(s->snap_dirs[i].dirname) != len ||
			    strncmp(s->snap_dirs[i].dirname, n, len))
				continue;
			ret = cli_snap_disk(s, i, &d);
			if (ret < 0)
				return ret;
			rest = slash ? slash + 1 : "";
			if (!rest[0])
				return list_disk_root(v, d, false, l);
			break;
		}
		if (rest == name)
			return 1;
	}
	if (strcmp(rest, "files") == 0 || strcmp(rest, "files/") == 0)
		return list_files_dir(v, d, l);
	if (strcmp(rest, "lvm") == 0 || strncmp(rest, "lvm/", 4) == 0) {
		const char *vg = rest[3] ? rest + 4 : "";

		if (strchr(vg, '/'))
			return 1;
		ret = cli_disk_lvm(s, d);
		/* As the mount: lvm/ lists every VG found, lvm/VG the
		 * volumes that can be read (info says why the others
		 * cannot). */
		for (size_t i = 0; !ret && !vg[0] && i < lvm_nb_vgs(d->lvm);
		     i++) {
			const char *vg_name = lvm_vg_at(d->lvm, i)->name;
			bool seen = !vg_name[0];

			for (size_t k = 0; k < l->nb; k++)
				seen |= !strcmp(l->e[k].name, vg_name);
			if (!seen)
				ret = vadd(l, v, vg_name, true, 0);
		}
		for (size_t i = 0; !ret && vg[0] && i < lvm_nb_lvs(d->lvm);
		     i++) {
			const struct lvm_lv *lv = lvm_lv_at(d->lvm, i);

			if (!lv->unreadable && strcmp(lv->vg_name, vg) == 0)
				ret = vadd(l, v, lv->name, false,
					   lv->size_bytes);
		}
		bool vg_known = false;

		for (size_t i = 0; !ret && vg[0] && i < lvm_nb_vgs(d->lvm); i++)
			vg_known |= strcmp(lvm_vg_at(d->lvm, i)->name, vg) == 0;
		if (!ret && vg[0] && !vg_known) {
			cli_err(s, name, "no such volume group");
			return -ENOENT;
		}
		return ret;
	}
	return 1;
}

/* ls inside a filesystem */

struct dir_collect {
	struct ls_list *l;
	int error;
};

static int collect_one(void *ctx, const char *name, uint64_t ino,
		       uint32_t type, uint64_t next_cookie)
{
	struct dir_collect *c = ctx;
	int i;

	(void)type;
	(void)next_cookie;
	i = list_add(c->l, name);
	if (i < 0) {
		c->error = i;
		return 1;
	}
	c->l->e[i].ino = ino;
	return 0;
}

static int fill_stats(struct cli_session *s, struct fsys *fs,
		      struct ls_list *l, const char *where, bool need)
{
	int bad = 0;

	for (size_t i = 0; need && i < l->nb; i++) {
		struct ls_entry *e = &l->e[i];
		int ret = fsys_getattr(fs, e->ino, &e->st);

		if (ret < 0) {
			cli_err(s, NULL, "%s/%s: %s", where, e->name,
				strerror(-ret));
			e->st = (struct fsys_stat){ .ino = e->ino };
			bad = CLI_EXIT_FAIL;
			continue;
		}
		e->have_st = true;
		if (S_ISLNK(e->st.mode)) {
			char t[4096];

			if (fsys_readlink(fs, e->ino, t, sizeof(t)) >= 0)
				e->target = strdup(t);
		}
	}
	return bad;
}

static int list_fs_dir(struct cli_session *s, struct fsys *fs, uint64_t dir,
		       const char *place, bool longfmt, bool recursive,
		       bool header, unsigned depth)
{
	struct ls_list l = { 0 };
	struct dir_collect c = { &l, 0 };
	int status = CLI_EXIT_OK, ret;

	ret = fsys_readdir(fs, dir, 0, collect_one, &c);
	if (ret >= 0 && c.error)
		ret = c.error;
	if (ret < 0) {
		cli_err(s, place, "%s", strerror(-ret));
		list_free(&l);
		return CLI_EXIT_FAIL;
	}
	status = fill_stats(s, fs, &l, place, longfmt || recursive);
	if (header)
		printf("%s:\n", place);
	print_list(&l, longfmt);
	for (size_t i = 0; recursive && i < l.nb && depth < 4096; i++) {
		char *sub = NULL;
		size_t plen = strlen(place);

		if (!l.e[i].have_st || !S_ISDIR(l.e[i].st.mode))
			continue;
		if (asprintf(&sub, "%s%s%s", place,
			     place[plen - 1] == '/' ? "" : "/",
			     l.e[i].name) < 0) {
			status = CLI_EXIT_FAIL;
			break;
		}
		printf("\n");
		ret = list_fs_dir(s, fs, l.e[i].ino, sub, longfmt, recursive,
				  true, depth + 1);
		if (ret)
			status = ret;
		free(sub);
	}
	list_free(&l);
	return status;
}

static int ls_place(struct cli_session *s, const char *arg,
		    const struct cli_opts *o)
{
	struct cli_place p;
	struct cli_blockfile bf;
	struct fsys_stat st;
	uint64_t ino;
	int ret, status;

	ret = cli_place_parse(s, arg, &p);
	if (ret < 0) {
		cli_place_free(&p);
		return CLI_EXIT_FAIL;
	}
	ret = cli_blockfile_open(s, p.blockfile, &bf);
	if (ret < 0) {
		cli_place_free(&p);
		return CLI_EXIT_FAIL;
	}
	if (!p.path) {
		struct vctx v = { .s = s };
		struct ls_list l = { 0 };
		const char *base = strrchr(p.blockfile, '/');

		fstat(img_fd(s->img), &v.img_st);
		ret = vadd(&l, &v, base ? base + 1 : p.blockfile, false,
			   img_size(bf.img));
		if (!ret)
			print_list(&l, o->longfmt);
		list_free(&l);
		cli_blockfile_close(&bf);
		cli_place_free(&p);
		return ret ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	}
	ret = cli_blockfile_fs(s, &bf);
	if (ret == 0) {
		ret = cli_lookup_path(bf.fs, p.path, false, &ino, &st);
		if (ret < 0)
			cli_err(s, arg, "%s", strerror(-ret));
	}
	if (ret < 0) {
		status = CLI_EXIT_FAIL;
	} else if (S_ISDIR(st.mode)) {
		status = list_fs_dir(s, bf.fs, ino, arg, o->longfmt,
				     o->recursive, o->recursive, 0);
	} else {
		struct ls_list l = { 0 };
		const char *base = strrchr(p.path, '/');
		int i = list_add(&l, base ? base + 1 : p.path);

		status = i < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
		if (i >= 0) {
			l.e[i].st = st;
			l.e[i].ino = ino;
			fill_stats(s, bf.fs, &l, arg, true);
			print_list(&l, o->longfmt);
		}
		list_free(&l);
	}
	cli_blockfile_close(&bf);
	cli_place_free(&p);
	return status;
}

int cli_cmd_ls(int argc, char **argv)
{
	static const char usage[] = "imgfs ls [-l] [-R] [OPTIONS] IMAGE "
				    "[PLACE]";
	struct cli_session s;
	struct cli_opts o;
	struct vctx v;
	struct ls_list l = { 0 };
	char *pos[2], *alias = NULL;
	const char *place;
	int nb, ret, status = CLI_EXIT_OK;

	ret = cli_parse(argc, argv, "lR", usage, &o, pos, 1, 2, &nb);
	if (ret)
		return ret == 1 ? CLI_EXIT_OK : ret;
	if (cli_session_open(&s, pos[0], &o) < 0)
		return CLI_EXIT_FAIL;
	memset(&v, 0, sizeof(v));
	v.s = &s;
	fstat(img_fd(s.img), &v.img_st);
	place = nb == 2 ? pos[1] : "";
	if (!cli_place_colon(place) &&
	    (alias = cli_files_alias(place)) != NULL)
		place = alias;
	if (!place[0] || strcmp(place, "/") == 0)
		ret = list_disk_root(&v, &s.active, true, &l);
	else if (cli_place_colon(place))
		ret = 1;
	else
		ret = list_virtual(&v, place, &l);
	if (ret == 0) {
		print_list(&l, o.longfmt);
	} else if (ret < 0) {
		status = CLI_EXIT_FAIL;
	} else {
		status = ls_place(&s, place, &o);
	}
	if (fflush(stdout) != 0)
		status = CLI_EXIT_FAIL;
	list_free(&l);
	free(alias);
	cli_session_close(&s);
	return status;
}

/* cat */

/* Worker threads reading ahead: enough to decompress on every core of a
 * small machine, few enough to stay cheap on a large one. */
static unsigned cat_threads(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 2 ? 2u : n > 4 ? 4u : (unsigned)n;
}

static int write_all(const uint8_t *buf, size_t len)
{
	for (size_t done = 0; done < len;) {
		ssize_t n = write(STDOUT_FILENO, buf + done, len - done);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		done += (size_t)n;
	}
	return 0;
}

static int cat_blockfile(struct cli_session *s, struct cli_blockfile *bf)
{
	struct cli_readahead *ra = NULL;
	struct cli_progress pr;
	struct cli_piece piece;
	struct stat ost;
	uint64_t size = img_size(bf->img);
	off_t base = 0;
	bool sparse, write_failed = false;
	int ret;

	/* Skipping a hole leaves what the file held there: only when
	 * nothing lies past our start (a fresh "> FILE"). */
	sparse = fstat(STDOUT_FILENO, &ost) == 0 && S_ISREG(ost.st_mode) &&
		 (base = lseek(STDOUT_FILENO, 0, SEEK_CUR)) >= 0 &&
		 ost.st_size <= base;
	ret = cli_readahead_start(bf->img, sparse, cat_threads(), &ra);
	if (ret < 0) {
		cli_err(s, bf->name, "%s", strerror(-ret));
		return ret;
	}
	cli_progress_start(&pr, bf->name, size);
	while ((ret = cli_readahead_next(ra, &piece)) == 1) {
		if (piece.ret < 0) {
			cli_err(s, bf->name, "read at %" PRIu64 ": %s",
				piece.off, strerror(-piece.ret));
			ret = piece.ret;
			goto out;
		}
		if (piece.hole)
			ret = lseek(STDOUT_FILENO, (off_t)piece.len,
				    SEEK_CUR) < 0 ? -errno : 0;
		else
			ret = write_all(piece.data, (size_t)piece.len);
		if (ret < 0)
			break;
		cli_progress_add(&pr, piece.len);
	}
	if (!ret && sparse && ftruncate(STDOUT_FILENO, base + (off_t)size) < 0)
		ret = -errno;
	write_failed = ret < 0;
out:
	cli_progress_end(&pr);
	if (write_failed)
		cli_err(s, bf->name, "writing to stdout: %s", strerror(-ret));
	cli_readahead_free(ra);
	return ret;
}

static int cat_file(struct cli_session *s, struct fsys *fs, uint64_t ino,
		    const char *place)
{
	CLEANUP_FREE uint8_t *buf = malloc(CLI_IO_BYTES);
	uint64_t off = 0;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t n = fsys_read(fs, ino, buf, CLI_IO_BYTES, off);

		if (n < 0) {
			cli_err(s, place, "%s", strerror((int)-n));
			return (int)n;
		}
		if (n == 0)
			return 0;
		for (ssize_t done = 0; done < n;) {
			ssize_t w = write(STDOUT_FILENO, buf + done,
					  (size_t)(n - done));

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				int e = errno;
				cli_err(s, place, "writing to stdout: %s",
					strerror(e));
				return -e;
			}
			done += w;
		}
		off += (uint64_t)n;
	}
}

int cli_cmd_cat(int argc, char **argv)
{
	static const char usage[] = "imgfs cat [OPTIONS] IMAGE PLACE";
	struct cli_session s;
	struct cli_opts o;
	struct cli_place p;
	struct cli_blockfile bf;
	struct fsys_stat st;
	uint64_t ino;
	char *pos[2];
	int nb, ret;

	ret = cli_parse(argc, argv, "", usage, &o, pos, 2, 2, &nb);
	if (ret)
		return ret == 1 ? CLI_EXIT_OK : ret;
	if (cli_session_open(&s, pos[0], &o) < 0)
		return CLI_EXIT_FAIL;
	if (strcmp(pos[1], "info") == 0) {
		ret = cli_info_print(&s, stdout, false);
		cli_session_close(&s);
		return ret < 0 || fflush(stdout) ? CLI_EXIT_FAIL : CLI_EXIT_OK;
	}
	ret = cli_place_parse(&s, pos[1], &p);
	if (!ret)
		ret = cli_blockfile_open(&s, p.blockfile, &bf);
	else
		bf.img = NULL, bf.fs = NULL;
	if (!ret && !p.path) {
		ret = cat_blockfile(&s, &bf);
	} else if (!ret) {
		ret = cli_blockfile_fs(&s, &bf);
		if (!ret) {
			ret = cli_lookup_path(bf.fs, p.path, true, &ino, &st);
			if (ret < 0)
				cli_err(&s, pos[1], "%s", strerror(-ret));
			else if (S_ISDIR(st.mode)) {
				cli_err(&s, pos[1], "%s", strerror(EISDIR));
				ret = -EISDIR;
			} else if (!S_ISREG(st.mode)) {
				cli_err(&s, pos[1], "not a regular file");
				ret = -EINVAL;
			}
		}
		if (!ret)
			ret = cat_file(&s, bf.fs, ino, pos[1]);
	}
	cli_blockfile_close(&bf);
	cli_place_free(&p);
	cli_session_close(&s);
	return ret < 0 ? CLI_EXIT_FAIL : CLI_EXIT_OK;
}
