/* cp.c: `imgfs cp IMAGE PLACE DEST`: a file or a tree copied out as
 * `cp -a` copies it.
 *
 * Where it goes: the filesystem's root ("p2:" or "p2:/") becomes DEST
 * itself (made if missing, merged into if it is a folder); any other
 * place goes to DEST/NAME when DEST is an existing folder, else to DEST.
 *
 * What is kept: contents (sparse files stay sparse: only the segments
 * SEEK_DATA/SEEK_HOLE find are written, then the size is set), modes,
 * access and modification times with nanoseconds (utimensat), symbolic
 * links, hard links (an inode met again within one copy is linked to
 * its first copy), extended attributes (user.* and POSIX ACLs always;
 * security.* and trusted.* when run as root), owners when run as root
 * (lchown), FIFOs and sockets; device nodes as root (mknod), else each
 * is reported and left out. A folder's mode and times are set after its
 * contents, so a read-only folder can still be filled and keeps its
 * times.
 *
 * Failures: a file that cannot be read is reported, its partial copy
 * removed, and the copy goes on (exit status 1 at the end). A
 * destination that is full or read-only ends the copy at once (every
 * later write would fail the same way).
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
#include <sys/xattr.h>
#include <unistd.h>

struct cp_state {
	char *dest;             /* the copy of the walk's root */
	const char *place;      /* as given, for messages */
	bool root;              /* run as root: owners, devices, all xattrs */
	struct cli_links links;
	uint8_t *buf;
	struct cli_progress progress;
};

/* A destination error: report; ENOSPC/EROFS/EDQUOT end the walk. */
static int dest_err(struct cli_walk *w, const char *path, const char *what,
		    int e)
{
	const struct cp_state *c = w->ctx;
	size_t dl = strlen(c->dest);
	const char *rel = strncmp(path, c->dest, dl) == 0 ? path + dl : "";

	cli_err(w->s, NULL, "%s%s -> %s: %s%s%s", w->place_prefix, rel, path,
		what, what[0] ? ": " : "", strerror(e));
	w->failed = true;
	if (e == ENOSPC || e == EROFS || e == EDQUOT) {
		w->stop = true;
		return -e;
	}
	return 0;
}

static bool xattr_wanted(const struct cp_state *c, const char *name)
{
	if (strncmp(name, "user.", 5) == 0 ||
	    strcmp(name, "system.posix_acl_access") == 0 ||
	    strcmp(name, "system.posix_acl_default") == 0)
		return true;
	return c->root && (strncmp(name, "security.", 9) == 0 ||
			   strncmp(name, "trusted.", 8) == 0);
}

static int copy_xattrs(struct cli_walk *w, struct cp_state *c,
		       const struct cli_walk_entry *e, const char *path)
{
	char names[65536];
	ssize_t n = fsys_listxattr(w->fs, e->ino, names, sizeof(names));

	for (ssize_t off = 0; n > 0 && off < n;
	     off += (ssize_t)strlen(names + off) + 1) {
		const char *name = names + off;
		static uint8_t val[65536];
		ssize_t vl;

		if (!xattr_wanted(c, name))
			continue;
		vl = fsys_getxattr(w->fs, e->ino, name, val, sizeof(val));
		if (vl < 0)
			continue;
		if (lsetxattr(path, name, val, (size_t)vl, 0) == 0)
			continue;
		/* Links take no user.* xattrs on Linux; a destination
		 * without xattr support keeps none (cp -a is quiet too). */
		if (errno == ENOTSUP || (errno == EPERM && S_ISLNK(e->st.mode)))
			continue;
		int ret = dest_err(w, path, name, errno);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Owner, mode, times: in that order (chown clears set-ID bits). */
static int copy_meta(struct cli_walk *w, struct cp_state *c,
		     const struct cli_walk_entry *e, const char *path)
{
	struct timespec ts[2] = { e->st.atime, e->st.mtime };
	int ret = copy_xattrs(w, c, e, path);

	if (ret < 0)
		return ret;
	if (c->root && lchown(path, e->st.uid, e->st.gid) < 0) {
		ret = dest_err(w, path, "owner", errno);
		if (ret < 0)
			return ret;
	}
	if (!S_ISLNK(e->st.mode) && chmod(path, e->st.mode & 07777) < 0) {
		ret = dest_err(w, path, "mode", errno);
		if (ret < 0)
			return ret;
	}
	if (utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW) < 0)
		return dest_err(w, path, "times", errno);
	return 0;
}

static int write_all(int fd, const uint8_t *p, size_t len, uint64_t off)
{
	while (len) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

/* Copies [off, off + len) of the file; -errno of the destination, or 1
 * when the source could not be read (reported). */
static int copy_range(struct cli_walk *w, struct cp_state *c, uint64_t ino,
		      int fd, uint64_t off, uint64_t len, const char *rel,
		      const char *path)
{
	while (len) {
		size_t want = (size_t)MIN(len, CLI_IO_BYTES);
		ssize_t n = fsys_read(w->fs, ino, c->buf, want, off);
		int ret;

		if (n <= 0) {
			cli_err(w->s, NULL, "%s%s: %s", w->place_prefix, rel,
				n < 0 ? strerror((int)-n) :
					"file shorter than its size");
			w->failed = true;
			return 1;
		}
		ret = write_all(fd, c->buf, (size_t)n, off);
		if (ret < 0) {
			dest_err(w, path, "", -ret);
			return ret;
		}
		off += (uint64_t)n;
		len -= (uint64_t)n;
		cli_progress_add(&c->progress, (uint64_t)n);
	}
	return 0;
}

static int copy_file(struct cli_walk *w, struct cp_state *c,
		     const struct cli_walk_entry *e, const char *path)
{
	const struct fsys_stat *st = &e->st;
	CLEANUP_CLOSE int fd = -1;
	int ret = 0;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW,
		  0600);
	if (fd < 0)
		return dest_err(w, path, "", errno);
	if (st->blocks * 512 < st->size) {
		uint64_t off = 0, data, hole;

		while (off < st->size && ret == 0) {
			if (fsys_seek(w->fs, e->ino, off, SEEK_DATA, &data) < 0)
				break;
			if (fsys_seek(w->fs, e->ino, data, SEEK_HOLE, &hole) <
				    0 ||
			    hole > st->size)
				hole = st->size;
			if (hole <= data)
				break;
			ret = copy_range(w, c, e->ino, fd, data, hole - data,
					 e->rel, path);
			off = hole;
		}
	} else {
		ret = copy_range(w, c, e->ino, fd, 0, st->size, e->rel, path);
	}
	if (ret == 0 && ftruncate(fd, (off_t)st->size) < 0)
		ret = dest_err(w, path, "", errno);
	if (ret != 0) {
		unlink(path);
		return ret < 0 ? ret : 0;
	}
	if (close(TAKE_FD(fd)) < 0)
		return dest_err(w, path, "", errno);
	if (st->nlink > 1) {
		ret = cli_links_add(&c->links, st->ino, path);
		if (ret < 0)
			return ret;
	}
	return copy_meta(w, c, e, path);
}

static int cp_entry(struct cli_walk *w, const struct cli_walk_entry *e,
		    bool post)
{
	struct cp_state *c = w->ctx;
	const struct fsys_stat *st = &e->st;
	CLEANUP_FREE char *path = NULL;
	const char *first;

	if (asprintf(&path, "%s%s", c->dest, e->rel) < 0)
		return -ENOMEM;
	if (S_ISDIR(st->mode)) {
		struct stat have;

		if (post)
			return copy_meta(w, c, e, path);
		if (mkdir(path, 0700) == 0)
			return 0;
		if (errno == EEXIST && stat(path, &have) == 0 &&
		    S_ISDIR(have.st_mode)) {
			/* Merging into a folder we may not write (yet). */
			chmod(path, have.st_mode | 0700);
			return 0;
		}
		int ret = dest_err(w, path, "", errno);
		return ret < 0 ? ret : 1;
	}
	if (post)
		return 0;
	if (st->nlink > 1 && (first = cli_links_find(&c->links, st->ino))) {
		unlink(path);
		if (link(first, path) == 0)
			return 0;
		if (errno == ENOSPC || errno == EROFS || errno == EDQUOT)
			return dest_err(w, path, "", errno);
		/* A destination without hard links: copy again. */
	}
	if (S_ISREG(st->mode))
		return copy_file(w, c, e, path);
	if (S_ISLNK(st->mode)) {
		char target[4096];
		ssize_t n = fsys_readlink(w->fs, e->ino, target,
					  sizeof(target));

		if (n < 0) {
			cli_err(w->s, NULL, "%s%s: %s", w->place_prefix,
				e->rel, strerror((int)-n));
			w->failed = true;
			return 0;
		}
		unlink(path);
		if (symlink(target, path) < 0)
			return dest_err(w, path, "", errno);
		return copy_meta(w, c, e, path);
	}
	if (S_ISCHR(st->mode) || S_ISBLK(st->mode) || S_ISFIFO(st->mode) ||
	    S_ISSOCK(st->mode)) {
		if ((S_ISCHR(st->mode) || S_ISBLK(st->mode)) && !c->root) {
			cli_err(w->s, NULL, "%s%s: device node %u:%u not "
				"copied (needs root)", w->place_prefix, e->rel,
				major(st->rdev), minor(st->rdev));
			w->failed = true;
			return 0;
		}
		unlink(path);
		if (mknod(path, (st->mode & S_IFMT) | 0600, st->rdev) < 0)
			return dest_err(w, path, "", errno);
		return copy_meta(w, c, e, path);
	}
	return 0;
}

int cli_cmd_cp(int argc, char **argv)
{
	static const char usage[] = "imgfs cp [OPTIONS] IMAGE PLACE DEST";
	struct cli_session s;
	struct cli_opts o;
	struct cli_place p;
	struct cli_blockfile bf;
	struct cp_state c = { 0 };
	struct cli_walk w;
	struct fsys_stat st;
	struct statvfs sv;
	struct stat dst;
	CLEANUP_FREE char *prefix = NULL;
	uint64_t ino;
	char *pos[3];
	int nb, ret, status = CLI_EXIT_OK;
	bool whole;

	ret = cli_parse(argc, argv, "", usage, &o, pos, 3, 3, &nb);
	if (ret)
		return ret == 1 ? CLI_EXIT_OK : ret;
	if (cli_session_open(&s, pos[0], &o) < 0)
		return CLI_EXIT_FAIL;
	ret = cli_open_place_fs(&s, pos[1], &p, &bf, &ino, &st);
	if (ret < 0) {
		status = CLI_EXIT_FAIL;
		goto out;
	}
	whole = strcmp(p.path, "/") == 0;
	if (!whole && stat(pos[2], &dst) == 0 && S_ISDIR(dst.st_mode)) {
		const char *base = strrchr(p.path, '/');

		if (asprintf(&c.dest, "%s/%s", pos[2],
			     base ? base + 1 : p.path) < 0)
			c.dest = NULL;
	} else {
		c.dest = strdup(pos[2]);
	}
	if (!c.dest || asprintf(&prefix, "%s:%s", p.blockfile,
				whole ? "" : p.path) < 0 ||
	    !(c.buf = malloc(CLI_IO_BYTES))) {
		fprintf(stderr, "imgfs: out of memory\n");
		status = CLI_EXIT_FAIL;
		goto out;
	}
	c.place = pos[1];
	c.root = geteuid() == 0;
	cli_progress_start(&c.progress, pos[1],
			   whole && fsys_statfs(bf.fs, &sv) == 0 ?
				   (uint64_t)(sv.f_blocks - sv.f_bfree) *
					   sv.f_frsize :
				   0);
	w = (struct cli_walk){
		.s = &s,
		.fs = bf.fs,
		.place_prefix = prefix,
		.post = true,
		.fn = cp_entry,
		.ctx = &c,
	};
	ret = cli_walk(&w, ino, &st);
	cli_progress_end(&c.progress);
	if (ret < 0 && !w.failed)
		cli_err(&s, pos[1], "%s", strerror(-ret));
	if (ret < 0 || w.failed)
		status = CLI_EXIT_FAIL;
out:
	cli_links_free(&c.links);
	free(c.buf);
	free(c.dest);
	cli_blockfile_close(&bf);
	cli_place_free(&p);
	cli_session_close(&s);
	return status;
}
