/* walk.c: a depth-first walk of a guest filesystem for cp and tar, and
 * the place → (filesystem, inode) resolution both share.
 *
 * Entries come in a stable order: a directory before its children
 * (children sorted by name, so two runs give the same tar stream), and,
 * when asked, the directory again after them (cp sets a folder's mode
 * and times last, as its own writes would change them). A folder is
 * listed whole before its children are visited; the walk holds one
 * listing per level, so memory grows with the depth and the size of the
 * folders on the current path, not with the whole tree.
 *
 * Errors (a damaged directory or inode) are reported, counted in
 * walk->failed, and skipped: the walk goes on with the rest.
 */
#include "cli-int.h"

#include "cleanup.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define WALK_MAX_DEPTH 1024

struct wentry {
	char *name;
	uint64_t ino;
};

struct wlist {
	struct wentry *e;
	size_t nb, cap;
	int error;
};

static int wcollect(void *ctx, const char *name, uint64_t ino, uint32_t type,
		    uint64_t next_cookie)
{
	struct wlist *l = ctx;

	(void)type;
	(void)next_cookie;
	if (l->nb == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 64;
		struct wentry *g = realloc(l->e, cap * sizeof(*g));

		if (!g) {
			l->error = -ENOMEM;
			return 1;
		}
		l->e = g;
		l->cap = cap;
	}
	l->e[l->nb].name = strdup(name);
	if (!l->e[l->nb].name) {
		l->error = -ENOMEM;
		return 1;
	}
	l->e[l->nb++].ino = ino;
	return 0;
}

static int wcmp(const void *a, const void *b)
{
	return strcmp(((const struct wentry *)a)->name,
		      ((const struct wentry *)b)->name);
}

static void wlist_free(struct wlist *l)
{
	for (size_t i = 0; i < l->nb; i++)
		free(l->e[i].name);
	free(l->e);
}

static int walk_dir(struct cli_walk *w, char *rel, size_t rel_len,
		    size_t rel_cap, uint64_t dir, unsigned depth)
{
	struct wlist l = { 0 };
	int ret;

	ret = fsys_readdir(w->fs, dir, 0, wcollect, &l);
	if (ret >= 0 && l.error)
		ret = l.error;
	if (ret < 0) {
		cli_err(w->s, NULL, "%s%s: %s", w->place_prefix,
			rel_len ? rel : "/", strerror(-ret));
		w->failed = true;
		wlist_free(&l);
		return ret == -ENOMEM ? ret : 0;
	}
	if (l.nb > 1)
		qsort(l.e, l.nb, sizeof(*l.e), wcmp);
	for (size_t i = 0; i < l.nb && !w->stop; i++) {
		struct cli_walk_entry e = { 0 };
		size_t nlen = strlen(l.e[i].name);

		if (rel_len + 1 + nlen + 1 > rel_cap) {
			cli_err(w->s, NULL, "%s%s/%s: %s", w->place_prefix,
				rel, l.e[i].name, strerror(ENAMETOOLONG));
			w->failed = true;
			continue;
		}
		rel[rel_len] = '/';
		memcpy(rel + rel_len + 1, l.e[i].name, nlen + 1);
		e.rel = rel;
		e.ino = l.e[i].ino;
		ret = fsys_getattr(w->fs, e.ino, &e.st);
		if (ret < 0) {
			cli_err(w->s, NULL, "%s%s: %s", w->place_prefix, rel,
				strerror(-ret));
			w->failed = true;
			continue;
		}
		ret = w->fn(w, &e, false);
		if (ret < 0)
			break;
		if (S_ISDIR(e.st.mode) && ret == 0) {
			if (depth >= WALK_MAX_DEPTH) {
				cli_err(w->s, NULL, "%s%s: %s",
					w->place_prefix, rel,
					"nested too deeply");
				w->failed = true;
			} else {
				ret = walk_dir(w, rel, rel_len + 1 + nlen,
					       rel_cap, e.ino, depth + 1);
				if (ret < 0)
					break;
				e.rel = rel;
				rel[rel_len + 1 + nlen] = '\0';
				if (w->post)
					w->fn(w, &e, true);
			}
		}
		rel[rel_len] = '\0';
		ret = 0;
	}
	rel[rel_len] = '\0';
	wlist_free(&l);
	return ret < 0 ? ret : 0;
}

int cli_walk(struct cli_walk *w, uint64_t ino, const struct fsys_stat *st)
{
	CLEANUP_FREE char *rel = malloc(CLI_WALK_PATH_MAX);
	struct cli_walk_entry e = { .rel = "", .ino = ino, .st = *st };
	int ret;

	if (!rel)
		return -ENOMEM;
	rel[0] = '\0';
	ret = w->fn(w, &e, false);
	if (ret < 0 || !S_ISDIR(st->mode) || ret > 0)
		return ret < 0 ? ret : 0;
	ret = walk_dir(w, rel, 0, CLI_WALK_PATH_MAX, ino, 0);
	if (ret < 0)
		return ret;
	e.rel = "";
	if (w->post && !w->stop)
		w->fn(w, &e, true);
	return 0;
}

/* Hard links seen so far: inode -> member name. */
const char *cli_links_find(const struct cli_links *m, uint64_t ino)
{
	if (!m->cap)
		return NULL;
	for (size_t i = (ino * 0x9e3779b97f4a7c15ULL) & (m->cap - 1);;
	     i = (i + 1) & (m->cap - 1)) {
		if (!m->name[i])
			return NULL;
		if (m->ino[i] == ino)
			return m->name[i];
	}
}

int cli_links_add(struct cli_links *m, uint64_t ino, const char *name)
{
	if ((m->nb + 1) * 2 > m->cap) {
		struct cli_links g = { 0 };

		g.cap = m->cap ? m->cap * 2 : 256;
		g.ino = calloc(g.cap, sizeof(*g.ino));
		g.name = calloc(g.cap, sizeof(*g.name));
		if (!g.ino || !g.name) {
			free(g.ino);
			free(g.name);
			return -ENOMEM;
		}
		for (size_t i = 0; i < m->cap; i++) {
			if (!m->name[i])
				continue;
			size_t j = (m->ino[i] * 0x9e3779b97f4a7c15ULL) &
				   (g.cap - 1);
			while (g.name[j])
				j = (j + 1) & (g.cap - 1);
			g.ino[j] = m->ino[i];
			g.name[j] = m->name[i];
		}
		g.nb = m->nb;
		free(m->ino);
		free(m->name);
		*m = g;
	}
	size_t i = (ino * 0x9e3779b97f4a7c15ULL) & (m->cap - 1);
	while (m->name[i])
		i = (i + 1) & (m->cap - 1);
	m->name[i] = strdup(name);
	if (!m->name[i])
		return -ENOMEM;
	m->ino[i] = ino;
	m->nb++;
	return 0;
}

void cli_links_free(struct cli_links *m)
{
	for (size_t i = 0; i < m->cap; i++)
		free(m->name[i]);
	free(m->name);
	free(m->ino);
}

int cli_open_place_fs(struct cli_session *s, const char *arg,
		      struct cli_place *p, struct cli_blockfile *bf,
		      uint64_t *ino_r, struct fsys_stat *st_r)
{
	int ret;

	memset(bf, 0, sizeof(*bf));
	ret = cli_place_parse(s, arg, p);
	if (ret < 0)
		return ret;
	ret = cli_blockfile_open(s, p->blockfile, bf);
	if (ret < 0)
		return ret;
	if (!p->path) {
		cli_err(s, arg, "a block file, not a folder of files (use "
			"%s:/ for its files, or imgfs cat for its bytes)",
			p->blockfile);
		return -EINVAL;
	}
	ret = cli_blockfile_fs(s, bf);
	if (ret < 0)
		return ret;
	ret = cli_lookup_path(bf->fs, p->path, false, ino_r, st_r);
	if (ret < 0)
		cli_err(s, arg, "%s", strerror(-ret));
	return ret;
}
