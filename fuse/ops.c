/* ops.c: the FUSE low-level operations.
 *
 * Every handler resolves its inode through tree.c, does its work with no
 * lock held across I/O, and sends exactly one reply. Errors from the
 * image layer arrive as -errno and are negated here, at the boundary.
 *
 * Caching: file data stays in the kernel page cache across opens
 * (keep_cache). That is safe because every byte of the disk reaches the
 * kernel through this daemon only, and a write through one file (p1)
 * invalidates the cached pages of every other file showing the same bytes
 * (disk) before the write is acknowledged (DESIGN.md: after the reply was
 * too late). No writeback cache: aliases would lose updates with it.
 */
#include "ifs.h"

#include "checked.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <linux/falloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/xattr.h>

#define ENTRY_TIMEOUT 1.0
#define ATTR_TIMEOUT 1.0
#define XATTR_PREFIX "user.imgfs."

/* Largest read the kernel sends, and the size of the shared zero page
 * range used to answer reads of holes without a copy. */
#define ZERO_BUF_BYTES (1u << 20)

struct ifs_fh {
	bool wrote;      /* the disk was written: rescan partitions on close */
	char *text;      /* info: the text as of open */
	size_t text_len;
};

struct dir_listing {
	char *buf;
	size_t len;
};

static const char *xattr_keys[] = {
	"fstype", "label", "uuid", "parttype", "partuuid", "partname",
};

static const char *lv_xattr_keys[] = {
	"fstype", "label", "uuid", "vg", "vguuid", "lvuuid", "segtype",
};

/* The value of user.imgfs.KEY of a node, malloc'ed, or NULL. */
static char *node_attr(const struct ifs_node *node, const char *key)
{
	if (node->node == IFS_NODE_LV_BASE)
		return ifs_lvm_lv_attr(node->view, node->index, key);
	if (node->node == IFS_NODE_PART_BASE)
		return ifs_part_attr(node->view, node->part_number, key);
	if (node->node == IFS_NODE_DISK)
		return ifs_part_attr(node->view, 0, key);
	return NULL;
}

static const void *zero_buf;

/* Replies with a copy of buf. The kernel can finish the request, let the
 * caller close the file and send RELEASE (which frees buf) while our
 * writev is still returning; replying from a private copy keeps that
 * window away from memory another thread may free. */
static void reply_copy(fuse_req_t req, const char *buf, size_t len)
{
	char *copy = malloc(len ? len : 1);

	if (!copy) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	memcpy(copy, buf, len);
	fuse_reply_buf(req, copy, len);
	free(copy);
}

static struct ifs *ifs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* A files/ folder or anything inside one: read-only whatever the mount. */
static bool in_files(fuse_ino_t ino)
{
	return ifs_files_ino(ino) ||
	       (ino & ((1u << IFS_SLOT_SHIFT) - 1)) == IFS_NODE_FILESDIR;
}

/* Valid replies: fuse_reply_readlink, fuse_reply_err. */
static void ifs_readlink(fuse_req_t req, fuse_ino_t ino)
{
	if (ifs_files_ino(ino))
		ifs_files_readlink(req, ino);
	else
		fuse_reply_err(req, EINVAL);
}

/* Resolves ino, or replies with the error and returns false. */
static bool resolve_or_reply(fuse_req_t req, fuse_ino_t ino,
			     struct ifs_node *node)
{
	int ret = ifs_resolve(ifs_of(req), ino, node);

	if (ret < 0)
		fuse_reply_err(req, -ret);
	return ret == 0;
}

static void ifs_init(void *userdata, struct fuse_conn_info *conn)
{
	(void)userdata;
	/* Splice replies from the image file save a copy on large reads
	 * (tests/bench/mount.sh shows the sequential-read difference);
	 * libfuse copies small replies anyway. */
	if (conn->capable & FUSE_CAP_SPLICE_WRITE)
		conn->want |= FUSE_CAP_SPLICE_WRITE;
	if (conn->capable & FUSE_CAP_SPLICE_MOVE)
		conn->want |= FUSE_CAP_SPLICE_MOVE;
	/* Aliased files (p1 inside disk) must not be cached for write-back
	 * (lost updates, deadlocked invalidations). */
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE;
	/* Invalidate pages only when we say so, not on every mtime change:
	 * we keep the image file's times. */
	conn->want &= ~FUSE_CAP_AUTO_INVAL_DATA;
	zero_buf = mmap(NULL, ZERO_BUF_BYTES, PROT_READ,
			MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (zero_buf == MAP_FAILED)
		zero_buf = NULL;
}

static void reply_entry(fuse_req_t req, struct ifs *ifs, fuse_ino_t ino)
{
	struct fuse_entry_param e;
	struct ifs_node node;

	if (!resolve_or_reply(req, ino, &node))
		return;
	memset(&e, 0, sizeof(e));
	e.ino = ino;
	e.attr_timeout = ATTR_TIMEOUT;
	e.entry_timeout = ENTRY_TIMEOUT;
	ifs_stat_node(ifs, &node, &e.attr);
	e.attr.st_ino = ino;
	fuse_reply_entry(req, &e);
}

/* "p<N>" with no leading zero; returns N or 0. */
static unsigned parse_part_name(const char *name)
{
	char *end;
	unsigned long n;

	if (name[0] != 'p' || name[1] < '1' || name[1] > '9')
		return 0;
	n = strtoul(name + 1, &end, 10);
	if (*end || n > IFS_MAX_PART_NUMBER)
		return 0;
	return (unsigned)n;
}

/* Valid replies: fuse_reply_entry, fuse_reply_err (ENOENT is never
 * cached, so a name published later by the scanner is found at once). */
static void ifs_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_node dir;
	unsigned slot = (unsigned)(parent >> IFS_SLOT_SHIFT);
	unsigned number;

	if (ifs_files_ino(parent)) {
		ifs_files_lookup(req, parent, name);
		return;
	}
	if (ifs_resolve(ifs, parent, &dir) < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (dir.node == IFS_NODE_DIR && slot != 0)
		ifs_view_need_table(ifs, dir.view);
	if (dir.node == IFS_NODE_FILESDIR && strcmp(name, "lvm") == 0) {
		reply_entry(req, ifs, ifs_ino(slot, IFS_NODE_FILES_LVMDIR));
		return;
	}
	if (dir.node == IFS_NODE_FILESDIR) {
		ifs_files_lookup_root(req, dir.view, name);
		return;
	}
	if (dir.node == IFS_NODE_LVMDIR || dir.node == IFS_NODE_FILES_LVMDIR) {
		int vg = ifs_lvm_vg_index(dir.view, name);
		if (vg < 0)
			fuse_reply_err(req, ENOENT);
		else
			reply_entry(req, ifs,
				    ifs_ino(slot, (dir.node == IFS_NODE_LVMDIR
							   ? IFS_NODE_VG_BASE
							   : IFS_NODE_FILES_VG_BASE) +
							  (unsigned)vg));
		return;
	}
	if (dir.node == IFS_NODE_VG_BASE) {
		int lv = ifs_lvm_lv_index(dir.view, (int)dir.index, name);
		if (lv < 0 || lv >= IFS_NODE_RANGE)
			fuse_reply_err(req, ENOENT);
		else
			reply_entry(req, ifs,
				    ifs_ino(slot, IFS_NODE_LV_BASE + (unsigned)lv));
		return;
	}
	if (dir.node == IFS_NODE_FILES_VG_BASE) {
		ifs_files_lookup_lv(req, dir.view, (int)dir.index, name);
		return;
	}
	if (dir.node == IFS_NODE_SNAPDIR) {
		struct ifs_view *v = ifs_view_by_dirname(ifs, name);
		if (!v)
			fuse_reply_err(req, ENOENT);
		else
			reply_entry(req, ifs, ifs_ino(v->slot, IFS_NODE_DIR));
		return;
	}
	if (dir.node != IFS_NODE_DIR) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (strcmp(name, "disk") == 0)
		reply_entry(req, ifs, ifs_ino(slot, IFS_NODE_DISK));
	else if (slot == 0 && strcmp(name, "info") == 0)
		reply_entry(req, ifs, ifs_ino(0, IFS_NODE_INFO));
	else if (slot == 0 && strcmp(name, "snapshots") == 0)
		reply_entry(req, ifs, ifs_ino(0, IFS_NODE_SNAPDIR));
	else if (strcmp(name, "files") == 0)
		reply_entry(req, ifs, ifs_ino(slot, IFS_NODE_FILESDIR));
	else if (strcmp(name, "lvm") == 0 && ifs_lvm_present(dir.view))
		reply_entry(req, ifs, ifs_ino(slot, IFS_NODE_LVMDIR));
	else if ((number = parse_part_name(name)) != 0)
		reply_entry(req, ifs,
			    ifs_ino(slot, IFS_NODE_PART_BASE + number));
	else
		fuse_reply_err(req, ENOENT);
}

/* Valid replies: fuse_reply_attr, fuse_reply_err. */
static void ifs_getattr(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_node node;
	struct stat st;
	int ret;

	(void)fi;
	if (ifs_files_ino(ino)) {
		ifs_files_getattr(req, ino);
		return;
	}
	ret = ifs_resolve(ifs, ino, &node);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	ifs_stat_node(ifs, &node, &st);
	st.st_ino = ino;
	fuse_reply_attr(req, &st, ATTR_TIMEOUT);
}

/* Disk and partition files have a fixed size, like block devices: a
 * truncate to their own size (O_TRUNC, dd without conv=notrunc) is
 * accepted and changes nothing; other sizes get EPERM. Times are
 * accepted and not kept; owner and mode cannot change.
 * Valid replies: fuse_reply_attr, fuse_reply_err. */
static void ifs_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr,
			int to_set, struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_node node;
	int ret;

	(void)fi;
	if (ifs_files_ino(ino)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	ret = ifs_resolve(ifs, ino, &node);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (node.node == IFS_NODE_FILESDIR) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID |
		      FUSE_SET_ATTR_GID)) {
		fuse_reply_err(req, EPERM);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE) {
		if (node.view->read_only || ifs->opts->read_only) {
			fuse_reply_err(req, EROFS);
			return;
		}
		if (node.node != IFS_NODE_DISK && node.node != IFS_NODE_INFO &&
		    node.node != IFS_NODE_PART_BASE &&
		    node.node != IFS_NODE_LV_BASE) {
			fuse_reply_err(req, EISDIR);
			return;
		}
		if (node.node == IFS_NODE_INFO) {
			fuse_reply_err(req, EACCES);
			return;
		}
		if ((uint64_t)attr->st_size != node.size &&
		    attr->st_size != 0) {
			fuse_reply_err(req, EPERM);
			return;
		}
	}
	ifs_getattr(req, ino, NULL);
}

static int add_entry(fuse_req_t req, struct dir_listing *l, const char *name,
		     fuse_ino_t ino, mode_t mode)
{
	struct stat st = { .st_ino = ino, .st_mode = mode };
	size_t need = fuse_add_direntry(req, NULL, 0, name, NULL, 0);
	char *grown = realloc(l->buf, l->len + need);

	if (!grown)
		return -ENOMEM;
	l->buf = grown;
	fuse_add_direntry(req, l->buf + l->len, need, name, &st,
			  (off_t)(l->len + need));
	l->len += need;
	return 0;
}

struct add_ctx {
	fuse_req_t req;
	struct dir_listing *l;
	unsigned slot;
	unsigned node_base; /* add_indexed_entry: node of index 0 */
	mode_t mode;
};

static int add_indexed_entry(void *opaque, const char *name, unsigned idx)
{
	struct add_ctx *c = opaque;

	if (idx >= IFS_NODE_RANGE)
		return 0;
	return add_entry(c->req, c->l, name,
			 ifs_ino(c->slot, c->node_base + idx), c->mode);
}

/* files/ lists each block file's filesystem as a folder; the inode in
 * the listing is only a hint (lookup gives the real one). */
struct name_list {
	char **names;
	size_t nb;
};

static int collect_name(void *opaque, const char *name)
{
	struct name_list *nl = opaque;
	char **grown = realloc(nl->names, (nl->nb + 1) * sizeof(*grown));

	if (!grown)
		return -ENOMEM;
	nl->names = grown;
	nl->names[nl->nb] = strdup(name);
	if (!nl->names[nl->nb])
		return -ENOMEM;
	nl->nb++;
	return 0;
}

/* files/ lists each block file whose filesystem opens (listing opens
 * them, so that every name listed can be looked up); the inode in the
 * listing is only a hint (lookup gives the real one). */
static int list_files_root(fuse_req_t req, struct dir_listing *l,
			   struct ifs_view *view)
{
	struct ifs *ifs = ifs_of(req);
	struct name_list nl = { 0 };
	int ret = ifs_files_list_root(view, collect_name, &nl);

	for (size_t i = 0; i < nl.nb; i++) {
		if (!ret && ifs_files_usable(ifs, view, nl.names[i]))
			ret = add_entry(req, l, nl.names[i],
					ifs_ino(view->slot, IFS_NODE_FILESDIR),
					S_IFDIR);
		free(nl.names[i]);
	}
	free(nl.names);
	return ret;
}

static int list_parts(fuse_req_t req, struct dir_listing *l,
		      struct ifs_view *view)
{
	int ret = 0;

	pthread_rwlock_rdlock(&view->table_lock);
	for (size_t i = 0; view->table && i < view->table->nb_parts && !ret;
	     i++) {
		unsigned n = view->table->parts[i].number;
		char name[32];

		if (n == 0 || n > IFS_MAX_PART_NUMBER)
			continue;
		snprintf(name, sizeof(name), "p%u", n);
		ret = add_entry(req, l, name,
				ifs_ino(view->slot, IFS_NODE_PART_BASE + n),
				S_IFREG);
	}
	pthread_rwlock_unlock(&view->table_lock);
	return ret;
}

/* Builds the whole listing at opendir, so readdir serves a consistent
 * snapshot even while partitions are rescanned.
 * Valid replies: fuse_reply_open, fuse_reply_err. */
static void ifs_opendir(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);
	struct dir_listing *l;
	struct ifs_node node;
	int ret;

	if (ifs_files_ino(ino)) {
		ifs_files_opendir(req, ino, fi);
		return;
	}
	if (!resolve_or_reply(req, ino, &node))
		return;
	if (node.node != IFS_NODE_DIR && node.node != IFS_NODE_SNAPDIR &&
	    node.node != IFS_NODE_FILESDIR && node.node != IFS_NODE_LVMDIR &&
	    node.node != IFS_NODE_FILES_LVMDIR &&
	    node.node != IFS_NODE_VG_BASE &&
	    node.node != IFS_NODE_FILES_VG_BASE) {
		fuse_reply_err(req, ENOTDIR);
		return;
	}
	if (node.node == IFS_NODE_DIR && node.view->slot != 0)
		ifs_view_need_table(ifs, node.view);
	l = calloc(1, sizeof(*l));
	if (!l) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = add_entry(req, l, ".", ino, S_IFDIR);
	/* A snapshot's folder lies in snapshots/; the rest in the root. */
	if (!ret)
		ret = add_entry(req, l, "..",
				node.node != IFS_NODE_DIR &&
						node.node != IFS_NODE_SNAPDIR ?
					ifs_ino(node.view->slot, IFS_NODE_DIR) :
				node.node == IFS_NODE_DIR && node.view->slot ?
					ifs_ino(0, IFS_NODE_SNAPDIR) :
					FUSE_ROOT_ID,
				S_IFDIR);
	if (!ret && node.node == IFS_NODE_FILESDIR) {
		ret = list_files_root(req, l, node.view);
		if (!ret && ifs_lvm_present(node.view))
			ret = add_entry(req, l, "lvm",
					ifs_ino(node.view->slot,
						IFS_NODE_FILES_LVMDIR),
					S_IFDIR);
	} else if (!ret && (node.node == IFS_NODE_LVMDIR ||
			    node.node == IFS_NODE_FILES_LVMDIR)) {
		struct add_ctx ac = { req, l, node.view->slot,
				      node.node == IFS_NODE_LVMDIR
					      ? IFS_NODE_VG_BASE
					      : IFS_NODE_FILES_VG_BASE, S_IFDIR };
		ret = ifs_lvm_list_vgs(node.view, add_indexed_entry, &ac);
	} else if (!ret && (node.node == IFS_NODE_VG_BASE ||
			    node.node == IFS_NODE_FILES_VG_BASE)) {
		/* lvm/VG lists every readable volume, files/lvm/VG those
		 * whose filesystem files/ shows (the partitions' rule). */
		struct add_ctx ac = { req, l, node.view->slot,
				      node.node == IFS_NODE_VG_BASE
					      ? IFS_NODE_LV_BASE
					      : IFS_NODE_FILES_VG_BASE,
				      node.node == IFS_NODE_VG_BASE ? S_IFREG
								    : S_IFDIR };
		ret = ifs_lvm_list_lvs(node.view, (int)node.index,
				       node.node == IFS_NODE_FILES_VG_BASE,
				       add_indexed_entry, &ac);
	} else if (!ret && node.node == IFS_NODE_SNAPDIR) {
		pthread_mutex_lock(&ifs->views_lock);
		for (size_t i = 1; i < ifs->nb_views && !ret; i++) {
			struct ifs_view *v = ifs->views[i];
			if (!ifs_view_is_deleted(v) && !v->unlisted)
				ret = add_entry(req, l, v->dirname,
						ifs_ino(v->slot, IFS_NODE_DIR),
						S_IFDIR);
		}
		pthread_mutex_unlock(&ifs->views_lock);
	} else if (!ret) {
		unsigned slot = node.view->slot;
		ret = add_entry(req, l, "disk", ifs_ino(slot, IFS_NODE_DISK),
				S_IFREG);
		if (!ret)
			ret = list_parts(req, l, node.view);
		if (!ret && slot == 0)
			ret = add_entry(req, l, "info",
					ifs_ino(0, IFS_NODE_INFO), S_IFREG);
		if (!ret && slot == 0)
			ret = add_entry(req, l, "snapshots",
					ifs_ino(0, IFS_NODE_SNAPDIR), S_IFDIR);
		if (!ret)
			ret = add_entry(req, l, "files",
					ifs_ino(slot, IFS_NODE_FILESDIR),
					S_IFDIR);
		if (!ret && ifs_lvm_present(node.view))
			ret = add_entry(req, l, "lvm",
					ifs_ino(slot, IFS_NODE_LVMDIR),
					S_IFDIR);
	}
	if (ret) {
		free(l->buf);
		free(l);
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)l;
	fi->cache_readdir = 0;
	fuse_reply_open(req, fi);
}

/* Valid replies: fuse_reply_buf, fuse_reply_err. */
static void ifs_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			off_t off, struct fuse_file_info *fi)
{
	struct dir_listing *l = (struct dir_listing *)(uintptr_t)fi->fh;
	size_t start = (size_t)off, end;

	if (ifs_files_ino(ino)) {
		ifs_files_readdir(req, ino, size, off);
		return;
	}
	if (off < 0 || start >= l->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	/* Entries are packed back to back; send whole entries only. */
	end = start;
	while (end < l->len) {
		const struct fuse_dirent {
			uint64_t ino, off;
			uint32_t namelen, type;
		} *d = (const void *)(l->buf + end);
		size_t next = (size_t)d->off;
		if (next - start > size)
			break;
		end = next;
	}
	reply_copy(req, l->buf + start, end - start);
}

/* The tree's own folders answer readdirplus without attributes (node ID
 * 0: the kernel looks each name up as after a plain readdir); inside a
 * guest filesystem each entry comes with its attributes, which saves
 * ls -l and file managers a lookup per file.
 * Valid replies: fuse_reply_buf, fuse_reply_err. */
static void ifs_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			    off_t off, struct fuse_file_info *fi)
{
	struct dir_listing *l = (struct dir_listing *)(uintptr_t)fi->fh;
	size_t pos = (size_t)off, len = 0;
	char *buf;

	if (ifs_files_ino(ino)) {
		ifs_files_readdirplus(req, ino, size, off);
		return;
	}
	if (off < 0 || pos >= l->len) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* The listing holds plain entries back to back (add_entry). */
	while (pos < l->len) {
		const struct fuse_dirent {
			uint64_t ino, off;
			uint32_t namelen, type;
			char name[];
		} *d = (const void *)(l->buf + pos);
		struct fuse_entry_param e = { .attr.st_ino = d->ino,
					      .attr.st_mode = d->type << 12 };
		char name[NAME_MAX + 1];
		size_t need;

		snprintf(name, sizeof(name), "%.*s", (int)d->namelen, d->name);
		need = fuse_add_direntry_plus(req, buf + len, size - len, name,
					      &e, (off_t)d->off);
		if (need > size - len)
			break;
		len += need;
		pos = (size_t)d->off;
	}
	reply_copy(req, buf, len);
	free(buf);
}

static void ifs_releasedir(fuse_req_t req, fuse_ino_t ino,
			   struct fuse_file_info *fi)
{
	struct dir_listing *l = (struct dir_listing *)(uintptr_t)fi->fh;

	if (ifs_files_ino(ino)) {
		ifs_files_release(ifs_of(req), ino);
	} else if (l) {
		free(l->buf);
		free(l);
	}
	fuse_reply_err(req, 0);
}

/* The mount has no default_permissions: the kernel would answer EACCES
 * for a write to a 0444 snapshot file, where the contract says EROFS. So
 * permissions are checked here: the owner (and root) may read and write
 * what is writable; with allow_other, others may only read. */
static bool caller_may_write(fuse_req_t req, struct ifs *ifs)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);

	return ctx->uid == ifs->uid || ctx->uid == 0;
}

/* The image layer marks an image corrupt (and read-only) when it meets
 * inconsistent metadata while writing; say why, once. */
static void log_corruption(struct img *img)
{
	static bool logged;
	const char *why = img_corrupt_reason(img);

	if (why && !__atomic_exchange_n(&logged, true, __ATOMIC_RELAXED))
		log_err("%s: marked corrupt, now read-only: %s", img_path(img),
			why);
}

/* After a change of [off, off + len) of a block file: every other file
 * that shows those bytes loses its cached pages, and open filesystems
 * there turn stale, before the change is acknowledged. Where the bytes
 * lie on the disk is windows.c's to say (a volume's extents may lie
 * anywhere on its PVs: its write drops the caches of the PVs' whole
 * range). */
static void invalidate_after_write(struct ifs *ifs, const struct ifs_node *node,
				   fuse_ino_t written, uint64_t off,
				   uint64_t len)
{
	uint64_t start, span;

	if (!ifs_node_disk_span(node, off, len, &start, &span))
		return;
	ifs_invalidate_aliases(ifs, node->view, written, start, span);
	ifs_files_invalidate(ifs, node->view, start, span, false);
}

/* The view's image too: a window or a volume took its read-only flag
 * at open, and the image may have turned read-only since (corrupt). */
static bool node_is_writable(struct ifs *ifs, const struct ifs_node *node)
{
	return !ifs->opts->read_only && !node->view->read_only &&
	       img_writable(node->img) && img_writable(node->view->img);
}

#define NODE_NAME_MAX 320

/* The block file a node is, as its place below the mount, for messages
 * (offsets in them are the file's own). */
static const char *node_name(const struct ifs_node *node, char *buf,
			     size_t size)
{
	const char *dir = node->view->dirname;

	if (node->node == IFS_NODE_PART_BASE)
		snprintf(buf, size, "%s%s%sp%u", dir ? "snapshots/" : "",
			 dir ? dir : "", dir ? "/" : "", node->part_number);
	else if (node->node == IFS_NODE_LV_BASE)
		snprintf(buf, size, "%s%s%sLVM volume %u",
			 dir ? "snapshots/" : "", dir ? dir : "",
			 dir ? ": " : "", node->index);
	else
		snprintf(buf, size, "%s%s%sdisk", dir ? "snapshots/" : "",
			 dir ? dir : "", dir ? "/" : "");
	return buf;
}

/* Valid replies: fuse_reply_open, fuse_reply_err. */
static void ifs_open(fuse_req_t req, fuse_ino_t ino,
		     struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_node node;
	struct ifs_fh *fh;
	bool wants_write = (fi->flags & O_ACCMODE) != O_RDONLY;

	if (ifs_files_ino(ino)) {
		ifs_files_open(req, ino, fi);
		return;
	}
	if (!resolve_or_reply(req, ino, &node))
		return;
	if (node.node != IFS_NODE_DISK && node.node != IFS_NODE_INFO &&
	    node.node != IFS_NODE_PART_BASE && node.node != IFS_NODE_LV_BASE) {
		fuse_reply_err(req, EISDIR);
		return;
	}
	if (wants_write && node.node == IFS_NODE_INFO) {
		fuse_reply_err(req, EACCES);
		return;
	}
	if (wants_write && !node_is_writable(ifs, &node)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (wants_write && !caller_may_write(req, ifs)) {
		fuse_reply_err(req, EACCES);
		return;
	}
	fh = calloc(1, sizeof(*fh));
	if (!fh) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	if (node.node == IFS_NODE_INFO) {
		fh->text = ifs_info_text(ifs, &fh->text_len);
		if (!fh->text) {
			free(fh);
			fuse_reply_err(req, ENOMEM);
			return;
		}
		/* Its size changes; never serve a stale cached copy. */
		fi->direct_io = 1;
	} else if (node.node == IFS_NODE_LV_BASE) {
		/* Not cached: a write through disk or pN is seen at once
		 * without knowing where the volume's extents lie. */
		fi->direct_io = 1;
	} else {
		fi->keep_cache = 1;
	}
	/* A close of a read-only file has nothing to flush; asking the
	 * kernel not to send FLUSH also keeps a killed daemon from hanging
	 * in the close of its own scanner's descriptor at exit. */
	if (!wants_write)
		fi->noflush = 1;
	if (!ifs_view_open_get(node.view)) {
		free(fh->text);
		free(fh);
		fuse_reply_err(req, ENOENT);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)fh;
	if (fuse_reply_open(req, fi) == -ENOENT) {
		/* The opener was interrupted: release is not coming. */
		ifs_view_open_put(node.view);
		free(fh->text);
		free(fh);
	}
}

/* Answers a read of [off, off+size) of a block file (already clipped) with
 * the fewest copies: one extent of plain data is spliced from the image
 * file, one hole is answered from the zero page, and anything else
 * (compressed clusters, mixed ranges) is read into a buffer. The splice
 * reads the host offset after block status returned, with no lock held:
 * the pin keeps that host space from being reused for another range
 * (a discard and a flush could free it) until the reply has been sent. */
static void reply_disk_read(fuse_req_t req, const struct ifs_node *node,
			    size_t size, uint64_t off)
{
	struct fuse_bufvec bv = FUSE_BUFVEC_INIT(size);
	struct img *img = node->img;
	struct img_extent ext;
	struct img_pin pin;
	char name[NODE_NAME_MAX];
	char *buf;
	int ret;

	ret = img_block_status_pinned(img, off, size, &ext, &pin);
	if (ret == 0 && ext.len == size) {
		if (ext.kind == IMG_EXTENT_DATA && ext.host_fd >= 0) {
			bv.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK |
					  FUSE_BUF_FD_RETRY;
			bv.buf[0].fd = ext.host_fd;
			bv.buf[0].pos = (off_t)ext.host_off;
			/* Returns once the data is in the kernel's hands
			 * (copied out of the pipe into the request). */
			fuse_reply_data(req, &bv, FUSE_BUF_SPLICE_MOVE);
			img_unpin(&pin);
			return;
		}
		if (ext.kind != IMG_EXTENT_DATA && zero_buf &&
		    size <= ZERO_BUF_BYTES) {
			img_unpin(&pin); /* holds nothing: not DATA */
			fuse_reply_buf(req, zero_buf, size);
			return;
		}
	}
	/* img_pread pins what it reads by itself. */
	img_unpin(&pin);
	buf = malloc(size);
	if (!buf) {
		fuse_reply_err(req, ENOMEM);
		return;
	}
	ret = img_pread(img, buf, size, off);
	if (ret < 0) {
		log_err("%s: read of %zu bytes at offset %" PRIu64
			" of %s failed: %s", img_path(img), size, off,
			node_name(node, name, sizeof(name)), strerror(-ret));
		fuse_reply_err(req, -ret);
	} else {
		fuse_reply_buf(req, buf, size);
	}
	free(buf);
}

/* Valid replies: fuse_reply_buf, fuse_reply_data, fuse_reply_err. */
static void ifs_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	struct ifs_fh *fh = (struct ifs_fh *)(uintptr_t)fi->fh;
	struct ifs_node node;

	if (ifs_files_ino(ino)) {
		ifs_files_read(req, ino, size, off);
		return;
	}
	if (!resolve_or_reply(req, ino, &node))
		return;
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (node.node == IFS_NODE_INFO) {
		if ((size_t)off >= fh->text_len)
			fuse_reply_buf(req, NULL, 0);
		else
			reply_copy(req, fh->text + off,
				   MIN(size, fh->text_len - (size_t)off));
		return;
	}
	if ((uint64_t)off >= node.size) {
		fuse_reply_buf(req, NULL, 0);
		return;
	}
	size = (size_t)MIN((uint64_t)size, node.size - (uint64_t)off);
	reply_disk_read(req, &node, size, (uint64_t)off);
}

/* A write that starts inside the file and runs past its end writes what
 * fits (a short count, as a block device does); one that starts at or
 * past the end gets ENOSPC. Nothing beyond the end is ever changed.
 * Valid replies: fuse_reply_write, fuse_reply_err. */
static void ifs_write(fuse_req_t req, fuse_ino_t ino, const char *buf,
		      size_t size, off_t off, struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fh *fh = (struct ifs_fh *)(uintptr_t)fi->fh;
	struct ifs_node node;
	int ret;

	if (ifs_files_ino(ino)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!resolve_or_reply(req, ino, &node))
		return;
	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!node_is_writable(ifs, &node)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if ((uint64_t)off >= node.size) {
		fuse_reply_err(req, size ? ENOSPC : 0);
		return;
	}
	size = (size_t)MIN((uint64_t)size, node.size - (uint64_t)off);
	ret = img_pwrite(node.img, buf, size, (uint64_t)off);
	if (ret < 0) {
		char name[NODE_NAME_MAX];

		if (ret != -ENOSPC && ret != -EROFS && ret != -EPERM)
			log_err("%s: write of %zu bytes at offset %" PRIu64
				" of %s failed: %s", img_path(node.img), size,
				(uint64_t)off, node_name(&node, name,
							 sizeof(name)),
				strerror(-ret));
		log_corruption(node.view->img);
		fuse_reply_err(req, ret == -ENOTSUP ? EROFS : -ret);
		return;
	}
	if (node.node == IFS_NODE_DISK)
		fh->wrote = true;
	ifs_view_changed(node.view);
	/* Before the reply, or a reader of an alias may still see old
	 * pages (DESIGN.md: 821 stale reads in 2000 after the reply). */
	invalidate_after_write(ifs, &node, ino, (uint64_t)off, size);
	fuse_reply_write(req, size);
}

static int flush_image(struct ifs *ifs, struct ifs_node *node)
{
	int ret;

	if (!node_is_writable(ifs, node))
		return 0;
	ret = img_flush(node->img);
	if (ret < 0) {
		log_err("%s: flush failed: %s", img_path(node->img),
			strerror(-ret));
		log_corruption(node->view->img);
	}
	return ret;
}

/* close() of a file that wrote the disk: the partition table may have
 * changed (sfdisk), so reread it before close() returns, like BLKRRPART.
 * Valid replies: fuse_reply_err. */
static void ifs_flush(fuse_req_t req, fuse_ino_t ino,
		      struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fh *fh = (struct ifs_fh *)(uintptr_t)fi->fh;
	struct ifs_node node;
	int ret = ifs_files_ino(ino) ? -ENOENT : ifs_resolve(ifs, ino, &node);

	if (ret < 0 || !fh || !fh->wrote) {
		fuse_reply_err(req, 0);
		return;
	}
	fh->wrote = false;
	ret = flush_image(ifs, &node);
	ifs_scan_request_and_wait(ifs);
	fuse_reply_err(req, -ret);
}

/* Valid replies: fuse_reply_err. */
static void ifs_release(fuse_req_t req, fuse_ino_t ino,
			struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fh *fh = (struct ifs_fh *)(uintptr_t)fi->fh;
	unsigned slot = (unsigned)(ino >> IFS_SLOT_SHIFT);

	if (ifs_files_ino(ino)) {
		ifs_files_release(ifs, ino);
		fuse_reply_err(req, 0);
		return;
	}
	/* The view may be marked deleted, but it still exists. */
	pthread_mutex_lock(&ifs->views_lock);
	for (size_t i = 0; i < ifs->nb_views; i++)
		if (ifs->views[i]->slot == slot)
			ifs_view_open_put(ifs->views[i]);
	pthread_mutex_unlock(&ifs->views_lock);
	if (fh) {
		free(fh->text);
		free(fh);
	}
	fuse_reply_err(req, 0);
}

/* Valid replies: fuse_reply_err. */
static void ifs_fsync(fuse_req_t req, fuse_ino_t ino, int datasync,
		      struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_node node;
	int ret = ifs_files_ino(ino) ? 0 : ifs_resolve(ifs, ino, &node);

	(void)datasync;
	(void)fi;
	if (ret == 0 && !ifs_files_ino(ino))
		ret = flush_image(ifs, &node);
	fuse_reply_err(req, -ret);
}

/* Valid replies: fuse_reply_err. */
static void ifs_fallocate(fuse_req_t req, fuse_ino_t ino, int mode,
			  off_t off, off_t len, struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_node node;
	int ret = ifs_files_ino(ino) ? -EROFS : ifs_resolve(ifs, ino, &node);

	(void)fi;
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (off < 0 || len <= 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (!node_is_writable(ifs, &node)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!range_within((uint64_t)off, (uint64_t)len, node.size)) {
		fuse_reply_err(req, ENOSPC);
		return;
	}
	if (mode == (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE))
		ret = img_discard(node.img, (uint64_t)off, (uint64_t)len);
	else if (mode == FALLOC_FL_ZERO_RANGE ||
		 mode == (FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE))
		ret = img_write_zeroes(node.img, (uint64_t)off,
				       (uint64_t)len);
	else if (mode == 0 || mode == FALLOC_FL_KEEP_SIZE)
		ret = 0; /* inside the file: already "allocated" */
	else
		ret = -EOPNOTSUPP;
	if (ret < 0)
		log_corruption(node.view->img);
	if (ret == 0) {
		ifs_view_changed(node.view);
		invalidate_after_write(ifs, &node, 0, (uint64_t)off,
				       (uint64_t)len);
	}
	fuse_reply_err(req, -ret);
}

/* SEEK_DATA / SEEK_HOLE from the image's block status; holes are ranges
 * that read as zeroes without stored data.
 * Valid replies: fuse_reply_lseek, fuse_reply_err. */
static void ifs_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence,
		      struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_node node;
	uint64_t pos;
	int ret;

	(void)fi;
	if (ifs_files_ino(ino)) {
		ifs_files_lseek(req, ino, off, whence);
		return;
	}
	ret = ifs_resolve(ifs, ino, &node);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (whence != SEEK_DATA && whence != SEEK_HOLE) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	if (off < 0 || (uint64_t)off >= node.size ||
	    node.node == IFS_NODE_INFO) {
		if (node.node == IFS_NODE_INFO && off >= 0 &&
		    whence == SEEK_DATA) {
			fuse_reply_lseek(req, off);
			return;
		}
		fuse_reply_err(req, ENXIO);
		return;
	}
	pos = (uint64_t)off;
	while (pos < node.size) {
		struct img_extent ext;
		ret = img_block_status(node.img, pos, node.size - pos, &ext);
		if (ret < 0) {
			fuse_reply_err(req, -ret);
			return;
		}
		if ((ext.kind == IMG_EXTENT_DATA) == (whence == SEEK_DATA)) {
			fuse_reply_lseek(req, (off_t)pos);
			return;
		}
		pos += ext.len;
	}
	if (whence == SEEK_HOLE)
		fuse_reply_lseek(req, (off_t)node.size);
	else
		fuse_reply_err(req, ENXIO);
}

/* Valid replies: fuse_reply_buf, fuse_reply_xattr, fuse_reply_err. */
static void ifs_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 size_t size)
{
	struct ifs_node node;
	char *value;
	size_t len;

	if (ifs_files_ino(ino)) {
		ifs_files_getxattr(req, ino, name, size);
		return;
	}
	if (!resolve_or_reply(req, ino, &node))
		return;
	if (strncmp(name, XATTR_PREFIX, strlen(XATTR_PREFIX)) != 0) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	value = node_attr(&node, name + strlen(XATTR_PREFIX));
	if (!value) {
		fuse_reply_err(req, ENODATA);
		return;
	}
	len = strlen(value);
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, value, len);
	free(value);
}

/* Lists only the attributes that have a value.
 * Valid replies: fuse_reply_buf, fuse_reply_xattr, fuse_reply_err. */
static void ifs_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	struct ifs_node node;
	char list[256];
	size_t len = 0;

	if (ifs_files_ino(ino)) {
		ifs_files_listxattr(req, ino, size);
		return;
	}
	if (!resolve_or_reply(req, ino, &node))
		return;
	const char *const *keys = node.node == IFS_NODE_LV_BASE ? lv_xattr_keys
								: xattr_keys;
	size_t nb_keys = node.node == IFS_NODE_LV_BASE
				 ? sizeof(lv_xattr_keys) / sizeof(*keys)
				 : sizeof(xattr_keys) / sizeof(*keys);

	for (size_t i = 0; i < nb_keys; i++) {
		char *value = node_attr(&node, keys[i]);
		if (!value)
			continue;
		free(value);
		len += (size_t)snprintf(list + len, sizeof(list) - len,
					"%s%s", XATTR_PREFIX, keys[i]) +
		       1;
	}
	if (size == 0)
		fuse_reply_xattr(req, len);
	else if (size < len)
		fuse_reply_err(req, ERANGE);
	else
		fuse_reply_buf(req, list, len);
}

/* Valid replies: fuse_reply_err. */
static void ifs_setxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			 const char *value, size_t size, int flags)
{
	(void)name;
	(void)value;
	(void)size;
	(void)flags;
	fuse_reply_err(req, in_files(ino) ? EROFS : ENOTSUP);
}

/* Valid replies: fuse_reply_statfs. */
static void ifs_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ifs *ifs = ifs_of(req);
	struct statvfs sv;
	uint64_t alloc;

	if (ifs_files_ino(ino)) {
		ifs_files_statfs(req, ino);
		return;
	}
	memset(&sv, 0, sizeof(sv));
	alloc = ifs_view_allocated(ifs->active, ifs->img);
	sv.f_bsize = 4096;
	sv.f_frsize = 4096;
	sv.f_blocks = div_round_up(img_size(ifs->img), 4096);
	sv.f_bfree = sv.f_blocks - MIN(sv.f_blocks, div_round_up(alloc, 4096));
	sv.f_bavail = sv.f_bfree;
	sv.f_files = 3 + ifs->nb_views;
	sv.f_namemax = 255;
	fuse_reply_statfs(req, &sv);
}

/* mkdir snapshots/NAME takes a snapshot of the active disk.
 * Valid replies: fuse_reply_entry, fuse_reply_err. */
static void ifs_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name,
		      mode_t mode)
{
	struct ifs *ifs = ifs_of(req);
	struct img_snapshot *list = NULL;
	struct ifs_view *view = NULL, *active;
	struct part_table *copy;
	struct img_err err;
	size_t nb = 0;
	int ret;

	(void)mode;
	if (parent != ifs_ino(0, IFS_NODE_SNAPDIR)) {
		fuse_reply_err(req, (parent >> IFS_SLOT_SHIFT) ||
					    in_files(parent) ? EROFS : EPERM);
		return;
	}
	if (ifs->opts->read_only || img_is_read_only(ifs->img)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	if (!caller_may_write(req, ifs)) {
		fuse_reply_err(req, EACCES);
		return;
	}
	if (ifs_view_by_dirname(ifs, name)) {
		fuse_reply_err(req, EEXIST);
		return;
	}
	ret = img_snapshot_create(ifs->img, name, &err);
	if (ret < 0) {
		log_err("%s", err.msg);
		fuse_reply_err(req, ret == -ENOTSUP ? EPERM : -ret);
		return;
	}
	ret = img_snapshot_list(ifs->img, &list, &nb);
	for (size_t i = nb; ret == 0 && i-- > 0;) {
		if (strcmp(list[i].name, name) == 0) {
			view = ifs_view_add_snapshot(ifs, &list[i], name,
						     false, true);
			break;
		}
	}
	img_snapshot_list_free(list, nb);
	if (!view) {
		fuse_reply_err(req, EIO);
		return;
	}
	/* The snapshot holds what the active disk holds now, so it starts
	 * with the active disk's table. It cannot be scanned through the
	 * mount yet: the kernel holds snapshots/ locked until mkdir returns,
	 * and the scanner's lookup of snapshots/NAME would wait for that.
	 * The scanner confirms the table once we have replied. */
	active = ifs_view_by_slot(ifs, 0);
	pthread_rwlock_rdlock(&active->table_lock);
	copy = part_table_dup(active->table);
	pthread_rwlock_unlock(&active->table_lock);
	ifs_view_set_provisional_table(view, copy);
	ifs_scan_request(ifs);
	reply_entry(req, ifs, ifs_ino(view->slot, IFS_NODE_DIR));
}

/* rmdir snapshots/NAME deletes the snapshot; EBUSY while a file in it is
 * open. Valid replies: fuse_reply_err. */
static void ifs_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_view *view;
	struct img_err err;
	int ret;

	if (parent != ifs_ino(0, IFS_NODE_SNAPDIR)) {
		fuse_reply_err(req, (parent >> IFS_SLOT_SHIFT) ||
					    in_files(parent) ? EROFS : EPERM);
		return;
	}
	if (!caller_may_write(req, ifs)) {
		fuse_reply_err(req, EACCES);
		return;
	}
	view = ifs_view_by_dirname(ifs, name);
	if (!view) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	if (ifs->opts->read_only || img_is_read_only(ifs->img)) {
		fuse_reply_err(req, EROFS);
		return;
	}
	/* See ifs_view_open_get: from here no open of the view succeeds,
	 * so the count can only fall. */
	if (__atomic_exchange_n(&view->deleting, true, __ATOMIC_SEQ_CST)) {
		fuse_reply_err(req, EBUSY); /* another rmdir of it is deciding */
		return;
	}
	if (__atomic_load_n(&view->nb_open, __ATOMIC_SEQ_CST) > 0) {
		__atomic_store_n(&view->deleting, false, __ATOMIC_SEQ_CST);
		fuse_reply_err(req, EBUSY);
		return;
	}
	ret = img_snapshot_delete(ifs->img, view->snap_id, &err);
	if (ret < 0) {
		__atomic_store_n(&view->deleting, false, __ATOMIC_SEQ_CST);
		log_err("%s", err.msg);
		fuse_reply_err(req, ret == -ENOTSUP ? EPERM : -ret);
		return;
	}
	/* No notify_inval_entry here: the kernel holds snapshots/ locked
	 * for this rmdir and drops the dentry itself when we reply. */
	ifs_view_mark_deleted(ifs, view);
	fuse_reply_err(req, 0);
}

/* Names cannot be created, removed or renamed here.
 * Valid replies: fuse_reply_err. */
static void ifs_deny_create(fuse_req_t req, fuse_ino_t parent,
			    const char *name, mode_t mode,
			    struct fuse_file_info *fi)
{
	struct ifs *ifs = ifs_of(req);

	(void)name;
	(void)mode;
	(void)fi;
	/* Snapshot folders are read-only; the root has a fixed set of names. */
	fuse_reply_err(req, ifs->opts->read_only ||
				    (parent >> IFS_SLOT_SHIFT) || in_files(parent)
				    ? EROFS : EPERM);
}

static void ifs_deny_mknod(fuse_req_t req, fuse_ino_t parent,
			   const char *name, mode_t mode, dev_t rdev)
{
	(void)rdev;
	ifs_deny_create(req, parent, name, mode, NULL);
}

static void ifs_deny_unlink(fuse_req_t req, fuse_ino_t parent,
			    const char *name)
{
	ifs_deny_create(req, parent, name, 0, NULL);
}

static void ifs_deny_rename(fuse_req_t req, fuse_ino_t parent,
			    const char *name, fuse_ino_t newparent,
			    const char *newname, unsigned int flags)
{
	(void)newparent;
	(void)newname;
	(void)flags;
	ifs_deny_create(req, parent, name, 0, NULL);
}

const struct fuse_lowlevel_ops ifs_ops = {
	.init        = ifs_init,
	.lookup      = ifs_lookup,
	.readlink    = ifs_readlink,
	.getattr     = ifs_getattr,
	.setattr     = ifs_setattr,
	.opendir     = ifs_opendir,
	.readdir     = ifs_readdir,
	.readdirplus = ifs_readdirplus,
	.releasedir  = ifs_releasedir,
	.open        = ifs_open,
	.read        = ifs_read,
	.write       = ifs_write,
	.flush       = ifs_flush,
	.release     = ifs_release,
	.fsync       = ifs_fsync,
	.fallocate   = ifs_fallocate,
	.lseek       = ifs_lseek,
	.getxattr    = ifs_getxattr,
	.listxattr   = ifs_listxattr,
	.setxattr    = ifs_setxattr,
	.statfs      = ifs_statfs,
	.mkdir       = ifs_mkdir,
	.rmdir       = ifs_rmdir,
	.create      = ifs_deny_create,
	.mknod       = ifs_deny_mknod,
	.unlink      = ifs_deny_unlink,
	.rename      = ifs_deny_rename,
};
