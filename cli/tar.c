/* tar.c: `imgfs tar IMAGE PLACE`: a POSIX pax archive on stdout.
 *
 * Format (POSIX.1-2001 pax, IEEE 1003.1 "pax Interchange Format"): every
 * member is a ustar header block, preceded by a pax extended header
 * (typeflag 'x') when ustar cannot say something exactly: a name or link
 * target longer than its field, an owner above 07777777, a size of 8 GiB
 * or more, a modification time with nanoseconds, extended attributes
 * (SCHILY.xattr.NAME, the key GNU tar and bsdtar both read), POSIX ACLs
 * (SCHILY.acl.access / SCHILY.acl.default, in acl_from_text's form), and
 * sparse files (GNU.sparse 1.0: GNU.sparse.major/minor/name/realsize in
 * the pax header, the map of data segments at the start of the member's
 * data, then the segments). The archive ends with two zero blocks and is
 * padded to a 10240-byte record, as tar writes it.
 *
 * Member names: a walk from the filesystem's root gives "./", "./etc/",
 * "./etc/passwd" (as tar -C ROOT -cf - . does); from a folder or file,
 * its own name comes first ("etc/", "etc/passwd"). Hard links (the same
 * inode again, nlink > 1) become link members naming the first one.
 * Sockets are left out (tar does the same).
 *
 * A file that cannot be read: when nothing of it was written yet it is
 * left out; when the failure comes after its header (a large file
 * streamed in pieces), the rest of its announced size is written as
 * zeroes so the archive stays valid. Either way it is reported and the
 * exit status is 1 at the end.
 *
 * Contents are read in this thread as the walk reaches each file, in
 * pieces (the read-ahead threads of cli/readahead.c serve `imgfs cat` of
 * a block file only).
 */
#include "cli-int.h"

#include "checked.h"
#include "cleanup.h"

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#define TAR_BLOCK 512
#define TAR_RECORD 10240
#define TAR_MAX_SPARSE_SEGMENTS 65536

/* pax records */
struct pax {
	char *buf;
	size_t len, cap;
	bool oom;
};

static void pax_add(struct pax *p, const char *key, const void *val,
		    size_t vlen)
{
	size_t klen = strlen(key), body = 1 + klen + 1 + vlen + 1, total;
	char digits[24];
	int nd = 1;

	/* The length counts its own digits. */
	for (;;) {
		total = body + (size_t)nd;
		int need = snprintf(digits, sizeof(digits), "%zu", total);
		if (need == nd)
			break;
		nd = need;
	}
	if (p->len + total > p->cap) {
		size_t cap = MAX(p->cap * 2, p->len + total + 512);
		char *g = realloc(p->buf, cap);

		if (!g) {
			p->oom = true;
			return;
		}
		p->buf = g;
		p->cap = cap;
	}
	p->len += (size_t)sprintf(p->buf + p->len, "%s %s=", digits, key);
	memcpy(p->buf + p->len, val, vlen);
	p->len += vlen;
	p->buf[p->len++] = '\n';
}

static void pax_adds(struct pax *p, const char *key, const char *val)
{
	pax_add(p, key, val, strlen(val));
}

static void put_octal(char *field, size_t width, uint64_t v)
{
	char tmp[32];

	/* width - 1 digits and a NUL; the caller checked that v fits. */
	snprintf(tmp, sizeof(tmp), "%0*" PRIo64, (int)(width - 1), v);
	memcpy(field, tmp, width);
}

static bool fits_octal(uint64_t v, size_t width)
{
	return width - 1 >= 22 || v < (UINT64_C(1) << (3 * (width - 1)));
}

struct tar_state {
	struct cli_out out;
	struct cli_links links;
	const char *base;     /* "." or the place's own name */
	uint64_t pax_seq;
	struct cli_progress progress;
	uint8_t *buf;
};

static int write_header(struct tar_state *t, const char *name,
			const struct fsys_stat *st, char type,
			const char *linkname, uint64_t size)
{
	uint8_t h[TAR_BLOCK] = { 0 };
	unsigned sum = 0;

	memcpy(h, name, MIN(strlen(name), (size_t)100));
	put_octal((char *)h + 100, 8, st->mode & 07777);
	put_octal((char *)h + 108, 8, fits_octal(st->uid, 8) ? st->uid : 0);
	put_octal((char *)h + 116, 8, fits_octal(st->gid, 8) ? st->gid : 0);
	put_octal((char *)h + 124, 12, fits_octal(size, 12) ? size : 0);
	put_octal((char *)h + 136, 12,
		  st->mtime.tv_sec > 0 && fits_octal((uint64_t)st->mtime.tv_sec,
						     12) ?
			  (uint64_t)st->mtime.tv_sec :
			  0);
	h[156] = (uint8_t)type;
	if (linkname) {
		size_t l = strlen(linkname);
		memcpy(h + 157, linkname, MIN(l, (size_t)100));
	}
	memcpy(h + 257, "ustar", 6);
	memcpy(h + 263, "00", 2);
	if (type == '3' || type == '4') {
		put_octal((char *)h + 329, 8, major(st->rdev));
		put_octal((char *)h + 337, 8, minor(st->rdev));
	}
	memset(h + 148, ' ', 8);
	for (size_t i = 0; i < TAR_BLOCK; i++)
		sum += h[i];
	snprintf((char *)h + 148, 8, "%06o", sum);
	h[155] = ' ';
	return cli_out_write(&t->out, h, sizeof(h));
}

static int write_padded(struct tar_state *t, const void *p, size_t len)
{
	static const uint8_t zero[TAR_BLOCK];
	int ret = cli_out_write(&t->out, p, len);

	if (!ret && len % TAR_BLOCK)
		ret = cli_out_write(&t->out, zero, TAR_BLOCK - len % TAR_BLOCK);
	return ret;
}

static int write_pax(struct tar_state *t, const struct pax *p,
		     const char *name, const struct fsys_stat *st)
{
	char hname[128];
	const char *base = strrchr(name, '/');
	struct fsys_stat hst = *st;

	if (!p->len)
		return 0;
	/* The name of the header member itself is informative only. */
	snprintf(hname, sizeof(hname), "PaxHeaders/%.80s",
		 base && base[1] ? base + 1 : "x");
	hst.mode = 0644;
	int ret = write_header(t, hname, &hst, 'x', NULL, p->len);
	if (!ret)
		ret = write_padded(t, p->buf, p->len);
	return ret;
}

/* The ACL xattr in the kernel's binary form, as acl_from_text's text. */
static bool acl_text(const uint8_t *v, size_t len, char *out, size_t cap)
{
	size_t used = 0;

	if (len < 4 || (len - 4) % 8 || v[0] != 2)
		return false;
	out[0] = '\0';
	for (size_t off = 4; off < len; off += 8) {
		unsigned tag = v[off] | v[off + 1] << 8;
		unsigned perm = v[off + 2] | v[off + 3] << 8;
		uint32_t id = (uint32_t)v[off + 4] | (uint32_t)v[off + 5] << 8 |
			      (uint32_t)v[off + 6] << 16 |
			      (uint32_t)v[off + 7] << 24;
		char who[32] = "";
		const char *kind;

		switch (tag) {
		case 0x01: kind = "user"; break;
		case 0x02: kind = "user"; snprintf(who, sizeof(who), "%u", id); break;
		case 0x04: kind = "group"; break;
		case 0x08: kind = "group"; snprintf(who, sizeof(who), "%u", id); break;
		case 0x10: kind = "mask"; break;
		case 0x20: kind = "other"; break;
		default: return false;
		}
		used += (size_t)snprintf(out + used, cap > used ? cap - used : 0,
					 "%s%s:%s:%c%c%c", used ? "," : "",
					 kind, who, perm & 4 ? 'r' : '-',
					 perm & 2 ? 'w' : '-',
					 perm & 1 ? 'x' : '-');
		if (used >= cap)
			return false;
	}
	return true;
}

static void add_xattrs(struct cli_walk *w, uint64_t ino, struct pax *p)
{
	char names[65536];
	ssize_t n = fsys_listxattr(w->fs, ino, names, sizeof(names));

	for (ssize_t off = 0; n > 0 && off < n;
	     off += (ssize_t)strlen(names + off) + 1) {
		const char *name = names + off;
		uint8_t val[65536];
		ssize_t vl = fsys_getxattr(w->fs, ino, name, val, sizeof(val));

		if (vl < 0)
			continue;
		if (strcmp(name, "system.posix_acl_access") == 0 ||
		    strcmp(name, "system.posix_acl_default") == 0) {
			char text[8192];

			if (acl_text(val, (size_t)vl, text, sizeof(text)))
				pax_adds(p, name[17] == 'a' ?
						    "SCHILY.acl.access" :
						    "SCHILY.acl.default",
					 text);
			continue;
		}
		char key[300];
		snprintf(key, sizeof(key), "SCHILY.xattr.%s", name);
		pax_add(p, key, val, (size_t)vl);
	}
}

/* The data segments of a file with holes; false when it has none (or
 * too many to be worth a map). */
static bool sparse_map(struct fsys *fs, uint64_t ino, uint64_t size,
		       uint64_t **segs_r, size_t *nb_r)
{
	uint64_t *segs = NULL, off = 0, data, hole;
	size_t nb = 0, cap = 0;

	while (off < size) {
		if (fsys_seek(fs, ino, off, SEEK_DATA, &data) < 0)
			break;
		if (fsys_seek(fs, ino, data, SEEK_HOLE, &hole) < 0)
			hole = size;
		if (hole > size)
			hole = size;
		if (nb + 2 > cap) {
			cap = cap ? cap * 2 : 16;
			if (cap > 2 * TAR_MAX_SPARSE_SEGMENTS) {
				free(segs);
				return false;
			}
			uint64_t *g = realloc(segs, cap * sizeof(*g));
			if (!g) {
				free(segs);
				return false;
			}
			segs = g;
		}
		segs[nb++] = data;
		segs[nb++] = hole - data;
		if (hole <= data)
			break;
		off = hole;
	}
	/* One segment covering everything: not sparse after all. */
	if (nb == 2 && segs[0] == 0 && segs[1] == size) {
		free(segs);
		return false;
	}
	*segs_r = segs;
	*nb_r = nb / 2;
	return true;
}

/* Writes len bytes of the file from off; on a read error, the rest as
 * zeroes (the header promised them). */
static int copy_data(struct cli_walk *w, struct tar_state *t, uint64_t ino,
		     uint64_t off, uint64_t len, const char *rel, bool *bad)
{
	while (len) {
		size_t want = (size_t)MIN(len, CLI_IO_BYTES);
		ssize_t n = *bad ? 0 : fsys_read(w->fs, ino, t->buf, want, off);
		int ret;

		if (n < 0 || (n == 0 && !*bad)) {
			if (!*bad)
				cli_err(w->s, NULL, "%s%s: %s",
					w->place_prefix, rel,
					n < 0 ? strerror((int)-n) :
						"file shorter than its size");
			*bad = true;
			w->failed = true;
			n = 0;
		}
		if (*bad) {
			memset(t->buf, 0, want);
			n = (ssize_t)want;
		}
		ret = cli_out_write(&t->out, t->buf, (size_t)n);
		if (ret < 0)
			return ret;
		off += (uint64_t)n;
		len -= (uint64_t)n;
		cli_progress_add(&t->progress, (uint64_t)n);
	}
	return 0;
}

/* One member being written: what kind, and for a sparse file its map. */
struct member {
	char *name;          /* as archived; folders end in '/' */
	char type;           /* ustar typeflag */
	const char *linkname;
	char linkbuf[4096];
	uint64_t size;       /* the member's data as archived */
	uint64_t data_bytes; /* of that, the file's own bytes */
	bool sparse;
	uint64_t *segs;      /* sparse: offset, length pairs */
	size_t nb_segs;
	char *map;           /* sparse: the GNU 1.0 map, padded to a block */
	size_t map_len;
	char *sparse_name;   /* sparse: the ustar name GNU tar gives it */
};

static void member_free(struct member *m)
{
	free(m->name);
	free(m->segs);
	free(m->map);
	free(m->sparse_name);
}

/* Sets m->type (and link, size, sparse map) from the entry. 1: the entry
 * is left out (a socket, an unknown type, an unreadable symlink, which is
 * reported). */
static int classify(struct cli_walk *w, struct tar_state *t,
		    const struct cli_walk_entry *e, struct member *m)
{
	const struct fsys_stat *st = &e->st;

	if (!S_ISDIR(st->mode) && st->nlink > 1 &&
	    (m->linkname = cli_links_find(&t->links, st->ino))) {
		m->type = '1';
	} else if (S_ISREG(st->mode)) {
		m->type = '0';
		m->size = m->data_bytes = st->size;
		if (st->blocks * 512 < st->size)
			m->sparse = sparse_map(w->fs, e->ino, st->size,
					       &m->segs, &m->nb_segs);
	} else if (S_ISDIR(st->mode)) {
		m->type = '5';
	} else if (S_ISLNK(st->mode)) {
		ssize_t n = fsys_readlink(w->fs, e->ino, m->linkbuf,
					  sizeof(m->linkbuf));
		if (n < 0) {
			cli_err(w->s, NULL, "%s%s: %s", w->place_prefix,
				e->rel, strerror((int)-n));
			w->failed = true;
			return 1;
		}
		m->type = '2';
		m->linkname = m->linkbuf;
	} else if (S_ISCHR(st->mode)) {
		m->type = '3';
	} else if (S_ISBLK(st->mode)) {
		m->type = '4';
	} else if (S_ISFIFO(st->mode)) {
		m->type = '6';
	} else {
		return 1;
	}
	return 0;
}

/* The pax records ustar cannot carry: long names, large owners, times
 * with nanoseconds. */
static void add_basic_records(struct pax *p, const struct member *m,
			      const struct fsys_stat *st)
{
	char v[48];

	if (strlen(m->name) >= 100)
		pax_adds(p, "path", m->name);
	if (m->linkname && strlen(m->linkname) >= 100)
		pax_adds(p, "linkpath", m->linkname);
	if (!fits_octal(st->uid, 8)) {
		snprintf(v, sizeof(v), "%u", st->uid);
		pax_adds(p, "uid", v);
	}
	if (!fits_octal(st->gid, 8)) {
		snprintf(v, sizeof(v), "%u", st->gid);
		pax_adds(p, "gid", v);
	}
	if (st->mtime.tv_nsec || st->mtime.tv_sec < 0) {
		snprintf(v, sizeof(v), "%" PRId64 ".%09ld",
			 (int64_t)st->mtime.tv_sec, st->mtime.tv_nsec);
		pax_adds(p, "mtime", v);
	}
}

/* GNU sparse 1.0: the map of data segments (then a last empty segment at
 * the real size) leads the member's data, the pax records name the file,
 * and the ustar name is GNU tar's "DIR/GNUSparseFile.0/BASE". */
static int make_sparse_map(struct member *m, struct pax *p)
{
	size_t cap = 32 + m->nb_segs * 48, used;
	const char *slash = strrchr(m->name, '/');
	char v[24];
	char *grown;

	m->map = malloc(cap);
	if (!m->map)
		return -ENOMEM;
	used = (size_t)snprintf(m->map, cap, "%zu\n", m->nb_segs + 1);
	m->data_bytes = 0;
	for (size_t i = 0; i < m->nb_segs; i++) {
		used += (size_t)snprintf(m->map + used, cap - used,
					 "%" PRIu64 "\n%" PRIu64 "\n",
					 m->segs[2 * i], m->segs[2 * i + 1]);
		m->data_bytes += m->segs[2 * i + 1];
	}
	used += (size_t)snprintf(m->map + used, cap - used, "%" PRIu64 "\n0\n",
				 m->size);
	m->map_len = align_up(used, TAR_BLOCK);
	grown = realloc(m->map, m->map_len);
	if (!grown)
		return -ENOMEM;
	m->map = grown;
	memset(m->map + used, 0, m->map_len - used);

	pax_adds(p, "GNU.sparse.major", "1");
	pax_adds(p, "GNU.sparse.minor", "0");
	pax_adds(p, "GNU.sparse.name", m->name);
	snprintf(v, sizeof(v), "%" PRIu64, m->size);
	pax_adds(p, "GNU.sparse.realsize", v);
	if (asprintf(&m->sparse_name, "%.*sGNUSparseFile.0/%s",
		     slash ? (int)(slash - m->name + 1) : 0, m->name,
		     slash ? slash + 1 : m->name) < 0) {
		m->sparse_name = NULL;
		return -ENOMEM;
	}
	m->size = m->map_len + m->data_bytes;
	return 0;
}

/* A regular member's data: the map and the segments, or the whole file;
 * then the padding to a block. */
static int write_body(struct cli_walk *w, struct tar_state *t,
		      const struct cli_walk_entry *e, const struct member *m)
{
	static const uint8_t zero[TAR_BLOCK];
	bool bad = false;
	int ret;

	if (m->sparse) {
		ret = cli_out_write(&t->out, m->map, m->map_len);
		for (size_t i = 0; !ret && i < m->nb_segs; i++)
			ret = copy_data(w, t, e->ino, m->segs[2 * i],
					m->segs[2 * i + 1], e->rel, &bad);
	} else {
		ret = copy_data(w, t, e->ino, 0, m->size, e->rel, &bad);
	}
	if (!ret && m->data_bytes % TAR_BLOCK)
		ret = cli_out_write(&t->out, zero,
				    TAR_BLOCK - m->data_bytes % TAR_BLOCK);
	return ret;
}

static int tar_entry(struct cli_walk *w, const struct cli_walk_entry *e,
		     bool post)
{
	struct tar_state *t = w->ctx;
	const struct fsys_stat *st = &e->st;
	struct member m = { 0 };
	struct pax p = { 0 };
	char v[24];
	int ret;

	(void)post;
	if (S_ISSOCK(st->mode))
		return 0;
	if (asprintf(&m.name, "%s%s%s", t->base, e->rel,
		     S_ISDIR(st->mode) ? "/" : "") < 0)
		return -ENOMEM;
	ret = classify(w, t, e, &m);
	if (ret) {
		member_free(&m);
		return ret > 0 ? 0 : ret;
	}
	add_basic_records(&p, &m, st);
	if (m.type != '1')
		add_xattrs(w, e->ino, &p);
	if (m.sparse)
		ret = make_sparse_map(&m, &p);
	if (!ret && !fits_octal(m.size, 12)) {
		snprintf(v, sizeof(v), "%" PRIu64, m.size);
		pax_adds(&p, "size", v);
	}
	if (!ret && p.oom)
		ret = -ENOMEM;
	if (!ret)
		ret = write_pax(t, &p, m.name, st);
	free(p.buf);
	if (!ret)
		ret = write_header(t, m.sparse ? m.sparse_name : m.name, st,
				   m.type, m.linkname,
				   m.type == '0' ? m.size : 0);
	if (!ret && m.type == '0' && st->nlink > 1)
		ret = cli_links_add(&t->links, st->ino, m.name);
	if (!ret && m.type == '0')
		ret = write_body(w, t, e, &m);
	member_free(&m);
	return ret;
}

int cli_cmd_tar(int argc, char **argv)
{
	static const char usage[] = "imgfs tar [OPTIONS] IMAGE PLACE "
				    "(a pax archive on stdout)";
	static const uint8_t zero[2 * TAR_BLOCK];
	struct cli_session s;
	struct cli_opts o;
	struct cli_place p;
	struct cli_blockfile bf;
	struct tar_state t = { 0 };
	struct cli_walk w = { 0 };
	struct fsys_stat st;
	struct statvfs sv;
	CLEANUP_FREE char *prefix = NULL, *base = NULL;
	uint64_t ino;
	char *pos[2];
	int nb, ret, status = CLI_EXIT_OK;

	ret = cli_parse(argc, argv, "", usage, &o, pos, 2, 2, &nb);
	if (ret)
		return ret == 1 ? CLI_EXIT_OK : ret;
	if (isatty(STDOUT_FILENO)) {
		fprintf(stderr, "imgfs tar: refusing to write an archive to a "
			"terminal (redirect stdout or pipe it into tar -x)\n");
		return CLI_EXIT_USAGE;
	}
	if (cli_session_open(&s, pos[0], &o) < 0)
		return CLI_EXIT_FAIL;
	ret = cli_open_place_fs(&s, pos[1], &p, &bf, &ino, &st);
	if (ret < 0) {
		status = CLI_EXIT_FAIL;
		goto out;
	}
	if (strcmp(p.path, "/") == 0) {
		base = strdup(".");
	} else {
		const char *b = strrchr(p.path, '/');
		base = strdup(b ? b + 1 : p.path);
	}
	if (!base || asprintf(&prefix, "%s:%s", p.blockfile,
			      strcmp(p.path, "/") ? p.path : "") < 0 ||
	    cli_out_init(&t.out, STDOUT_FILENO) < 0 ||
	    !(t.buf = malloc(CLI_IO_BYTES))) {
		fprintf(stderr, "imgfs: out of memory\n");
		status = CLI_EXIT_FAIL;
		goto out;
	}
	t.base = base;
	cli_progress_start(&t.progress, pos[1],
			   strcmp(p.path, "/") == 0 &&
					   fsys_statfs(bf.fs, &sv) == 0 ?
				   (uint64_t)(sv.f_blocks - sv.f_bfree) *
					   sv.f_frsize :
				   0);
	w = (struct cli_walk){
		.s = &s,
		.fs = bf.fs,
		.place_prefix = prefix,
		.fn = tar_entry,
		.ctx = &t,
	};
	ret = cli_walk(&w, ino, &st);
	if (!ret)
		ret = cli_out_write(&t.out, zero, sizeof(zero));
	if (!ret && t.out.total % TAR_RECORD) {
		uint64_t pad = TAR_RECORD - t.out.total % TAR_RECORD;
		static const uint8_t zrec[TAR_RECORD];

		ret = cli_out_write(&t.out, zrec, (size_t)pad);
	}
	if (!ret)
		ret = cli_out_flush(&t.out);
	cli_progress_end(&t.progress);
	if (ret < 0) {
		if (t.out.error)
			cli_err(&s, pos[1], "writing the archive: %s",
				strerror(-t.out.error));
		else
			cli_err(&s, pos[1], "%s", strerror(-ret));
		status = CLI_EXIT_FAIL;
	} else if (w.failed) {
		status = CLI_EXIT_FAIL;
	}
out:
	cli_links_free(&t.links);
	free(t.buf);
	cli_out_free(&t.out);
	cli_blockfile_close(&bf);
	cli_place_free(&p);
	cli_session_close(&s);
	return status;
}
