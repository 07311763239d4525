/* files.c: the files/ folders: the guest filesystems inside block files.
 *
 * MOUNTPOINT/files/X/ (and snapshots/NAME/files/X/) shows the filesystem
 * inside the block file X of that view (pN, or disk when the disk has no
 * partition table), read-only, through the fsys layer. This file owns
 * the open filesystems ("fsviews") and answers every request for a node
 * inside one; ops.c hands such requests over by inode number.
 *
 * Inode numbers: a node inside a filesystem is
 *   IFS_FILES_BIT | fsid << IFS_FILES_FSID_SHIFT | guest inode number
 * where fsid names one opening of one filesystem. fsids are never reused
 * during a mount: when a write reaches the range of an open filesystem,
 * that fsview turns stale (its inodes answer ESTALE, its dentry under
 * files/ is dropped from the kernel's cache) and the next lookup opens
 * the filesystem afresh under a new fsid, so no reader ever mixes old
 * and new metadata.
 *
 * Filesystems are opened at the first lookup of files/X, not at mount
 * time, and closed again by the idle closer (a thread started with the
 * first one) when no file or folder in them is open and no request has
 * used them for -o files_idle seconds, so that a disk with many
 * partitions and snapshots costs only what is browsed. A closed fsview
 * keeps its fsid: the next request for any of its inodes (the kernel
 * may still hold them) reopens it, and since both drivers derive their
 * inode numbers from the filesystem alone (ext: the guest's, FAT: where
 * the entry lies), every number the kernel holds means the same object
 * again.
 *
 * Permissions: the mounting user (and root) may read everything; with
 * allow_other every other caller is checked against the guest's owners
 * and mode bits here (the mount has no default_permissions, see ops.c).
 * Device nodes are never opened: the mount is nodev and nosuid.
 *
 * Locking: fsviews_lock guards the table of fsviews (fsviews,
 * nb_fsviews). Each fsview's rwlock is held shared by every request
 * that uses its fsys handle and exclusively while it is closed or
 * reopened, so a handle is never freed under a reader. fsview structs
 * themselves live until unmount (handlers keep pointers to them).
 * idle_lock guards only the idle closer's stop flag.
 */
#include "ifs.h"
#include "cli.h"

#include "checked.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <malloc.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define FILES_TIMEOUT 60.0
#define FILES_GUEST_MASK ((UINT64_C(1) << IFS_FILES_FSID_SHIFT) - 1)
#define FILES_MAX_FSID ((1u << (63 - IFS_FILES_FSID_SHIFT)) - 1)
/* The largest read answered at once (the kernel asks for at most 1 MiB
 * with direct I/O, 128 KiB through the page cache). */
#define FILES_MAX_READ (1u << 20)

struct ifs_fsview {
	unsigned fsid;
	struct ifs_view *view;
	char name[160];         /* the block file: "p2", "disk", "lvm/VG/LV" */
	struct img *img;        /* the block file's handle (windows.c),
	                         * borrowed: it lives until unmount */
	uint64_t start, size;   /* the range of the view's disk whose change
	                         * makes this view stale */
	pthread_rwlock_t lock;  /* shared: using fs; exclusive: closing */
	bool stale;             /* guarded by lock (written exclusively) */
	/* NULL while closed for idleness (and once stale). */
	struct fsys *fs;
	uint64_t last_used_ms;  /* CLOCK_MONOTONIC; atomic */
	unsigned nb_handles;    /* open files and folders; atomic */
};

struct files_dir_handle {
	bool is_guest;          /* a directory inside a filesystem */
};

bool ifs_files_ino(fuse_ino_t ino)
{
	return (ino & IFS_FILES_BIT) != 0;
}

static fuse_ino_t files_ino(unsigned fsid, uint64_t guest_ino)
{
	return IFS_FILES_BIT | ((fuse_ino_t)fsid << IFS_FILES_FSID_SHIFT) |
	       guest_ino;
}

static struct ifs *ifs_of(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

/* What a files/ folder shows: the filesystem in the block file img, and
 * the range of the view's disk it depends on. */
struct fs_target {
	char name[160];
	struct img *img;
	uint64_t disk_start, disk_size;
};

/* The block file of view that files/name shows (a partition or the whole
 * disk). -ENOENT when name is not a block file holding a filesystem we
 * read. */
static int find_block_file(struct ifs_view *view, const char *name,
			   struct fs_target *t)
{
	struct ifs_node node = { .view = view, .node = IFS_NODE_DISK,
				 .img = view->img };
	int ret = -ENOENT;

	pthread_rwlock_rdlock(&view->table_lock);
	if (!view->table) {
		ret = -ENOENT;
	} else if (strcmp(name, "disk") == 0) {
		if (view->table->nb_parts == 0 &&
		    cli_fs_type_readable(view->table->disk_fs_type))
			ret = 0;
	} else if (name[0] == 'p' && name[1] >= '1' && name[1] <= '9') {
		char *end;
		unsigned long n = strtoul(name + 1, &end, 10);

		for (size_t i = 0; !*end && i < view->table->nb_parts; i++) {
			const struct part_entry *e = &view->table->parts[i];
			if (e->number != n || e->container ||
			    !cli_fs_type_readable(e->fs_type))
				continue;
			node.node = IFS_NODE_PART_BASE;
			node.img = view->part_imgs ? view->part_imgs[i] : NULL;
			ret = node.img ? 0 : -ENOMEM;
		}
	}
	pthread_rwlock_unlock(&view->table_lock);
	snprintf(t->name, sizeof(t->name), "%s", name);
	t->img = node.img;
	if (ret == 0)
		(void)ifs_node_disk_span(&node, 0, img_size(node.img),
					 &t->disk_start, &t->disk_size);
	return ret;
}

static void fsview_close_locked(struct ifs_fsview *fv)
{
	fsys_close(fv->fs);
	fv->fs = NULL;
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* Opens fv's filesystem (fv->lock exclusive, or fv not yet shared). On
 * failure it stays NULL. fsys only reads: the block file's own handle
 * will do, writable or not. */
static int fsview_open_locked(struct ifs_fsview *fv, struct img_err *err)
{
	int ret = fsys_open(fv->img, &fv->fs, err);

	if (ret < 0)
		fsview_close_locked(fv);
	__atomic_store_n(&fv->last_used_ms, now_ms(), __ATOMIC_RELAXED);
	return ret;
}

/* Called with fv->lock held shared and fv not stale: notes the use and
 * makes sure the filesystem is open, reopening it after an idle close.
 * Returns 0 with the lock still held shared, or -errno with it
 * released. */
static int fsview_use(struct ifs_fsview *fv)
{
	for (;;) {
		struct img_err err = { 0 };
		int ret = 0;

		__atomic_store_n(&fv->last_used_ms, now_ms(), __ATOMIC_RELAXED);
		if (fv->fs)
			return 0;
		pthread_rwlock_unlock(&fv->lock);
		pthread_rwlock_wrlock(&fv->lock);
		if (fv->stale)
			ret = -ESTALE;
		else if (!fv->fs)
			ret = fsview_open_locked(fv, &err);
		pthread_rwlock_unlock(&fv->lock);
		if (ret < 0 && ret != -ESTALE) {
			/* It opened before: the image changed under us, or
			 * memory ran out. */
			log_err("%s: files/%s: cannot reopen: %s",
				img_path(fv->view->img), fv->name,
				err.msg[0] ? err.msg : strerror(-ret));
			return ret == -ENOMEM ? -ENOMEM : -EIO;
		}
		if (ret < 0)
			return ret;
		pthread_rwlock_rdlock(&fv->lock);
		if (fv->stale || fv->view->deleted) {
			pthread_rwlock_unlock(&fv->lock);
			return -ESTALE;
		}
	}
}

/* Closes the filesystems nobody used for the idle time. A busy fsview
 * (its lock held by a request) is in use, so it is skipped rather than
 * waited for. */
static void close_idle(struct ifs *ifs, uint64_t idle_ms)
{
	uint64_t now = now_ms();
	unsigned closed = 0;

	pthread_mutex_lock(&ifs->fsviews_lock);
	for (size_t i = 0; i < ifs->nb_fsviews; i++) {
		struct ifs_fsview *fv = ifs->fsviews[i];
		uint64_t used = __atomic_load_n(&fv->last_used_ms,
						__ATOMIC_RELAXED);

		/* used may be later than now: a request just came. */
		if (used >= now || now - used < idle_ms ||
		    __atomic_load_n(&fv->nb_handles, __ATOMIC_RELAXED) ||
		    pthread_rwlock_trywrlock(&fv->lock) != 0)
			continue;
		if (!fv->stale && fv->fs) {
			fsview_close_locked(fv);
			closed++;
			log_info("%s: files/%s: closed, unused for %" PRIu64
				 " s", img_path(fv->view->img), fv->name,
				 idle_ms / 1000);
		}
		pthread_rwlock_unlock(&fv->lock);
	}
	pthread_mutex_unlock(&ifs->fsviews_lock);
	/* Give the freed caches back to the system. */
	if (closed)
		malloc_trim(0);
}

/* The idle closer: looks twice per idle period until unmount. */
static void *idle_main(void *arg)
{
	struct ifs *ifs = arg;
	uint64_t idle_ms = (uint64_t)ifs->opts->files_idle_sec * 1000;
	uint64_t period_ms = MAX(idle_ms / 2, (uint64_t)500);

	pthread_mutex_lock(&ifs->files_idle_lock);
	while (!ifs->files_idle_stop) {
		struct timespec until;
		uint64_t ns;

		clock_gettime(CLOCK_MONOTONIC, &until);
		ns = (uint64_t)until.tv_nsec + period_ms % 1000 * 1000000;
		until.tv_sec += (time_t)(period_ms / 1000 + ns / 1000000000);
		until.tv_nsec = (long)(ns % 1000000000);
		pthread_cond_timedwait(&ifs->files_idle_cond,
				       &ifs->files_idle_lock, &until);
		if (ifs->files_idle_stop)
			break;
		pthread_mutex_unlock(&ifs->files_idle_lock);
		close_idle(ifs, idle_ms);
		pthread_mutex_lock(&ifs->files_idle_lock);
	}
	pthread_mutex_unlock(&ifs->files_idle_lock);
	return NULL;
}

/* Starts the idle closer once (under fsviews_open_lock). Without it
 * filesystems simply stay open. */
static void idle_start(struct ifs *ifs)
{
	pthread_condattr_t attr;

	if (ifs->files_idle_started || ifs->opts->files_idle_sec == 0)
		return;
	pthread_mutex_init(&ifs->files_idle_lock, NULL);
	pthread_condattr_init(&attr);
	pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
	pthread_cond_init(&ifs->files_idle_cond, &attr);
	pthread_condattr_destroy(&attr);
	ifs->files_idle_stop = false;
	if (pthread_create(&ifs->files_idle_thread, NULL, idle_main, ifs)) {
		log_warn("%s: cannot start the thread closing unused "
			 "filesystems: they stay open", img_path(ifs->img));
		pthread_cond_destroy(&ifs->files_idle_cond);
		pthread_mutex_destroy(&ifs->files_idle_lock);
		return;
	}
	ifs->files_idle_started = true;
}

static void idle_stop(struct ifs *ifs)
{
	if (!ifs->files_idle_started)
		return;
	pthread_mutex_lock(&ifs->files_idle_lock);
	ifs->files_idle_stop = true;
	pthread_cond_signal(&ifs->files_idle_cond);
	pthread_mutex_unlock(&ifs->files_idle_lock);
	pthread_join(ifs->files_idle_thread, NULL);
	pthread_cond_destroy(&ifs->files_idle_cond);
	pthread_mutex_destroy(&ifs->files_idle_lock);
	ifs->files_idle_started = false;
}

/* The fsview for this block file, opening it when there is none (and,
 * with need_fs, reopening it after an idle close). Returns it with its
 * lock held shared, or NULL with *err_r set. */
static struct ifs_fsview *fsview_get(struct ifs *ifs, struct ifs_view *view,
				     const struct fs_target *t, bool need_fs,
				     int *err_r)
{
	struct ifs_fsview *fv = NULL, **grown;
	struct img_err err = { 0 };
	const char *name = t->name;
	int ret;

	/* One open at a time (open_lock), so two lookups do not open the
	 * same filesystem twice; requests for open filesystems go on
	 * meanwhile (fsviews_lock is not held across the open). */
	pthread_mutex_lock(&ifs->fsviews_open_lock);
	pthread_mutex_lock(&ifs->fsviews_lock);
	for (size_t i = ifs->nb_fsviews; i-- > 0;) {
		struct ifs_fsview *c = ifs->fsviews[i];
		/* A handle names one range for the whole mount. */
		if (c->view == view && c->img == t->img &&
		    strcmp(c->name, t->name) == 0) {
			pthread_rwlock_rdlock(&c->lock);
			if (!c->stale) {
				fv = c;
				break;
			}
			pthread_rwlock_unlock(&c->lock);
		}
	}
	pthread_mutex_unlock(&ifs->fsviews_lock);
	if (fv) {
		pthread_mutex_unlock(&ifs->fsviews_open_lock);
		ret = need_fs ? fsview_use(fv) : 0;
		if (ret < 0) {
			*err_r = ret;
			return NULL;
		}
		return fv;
	}
	if (ifs->nb_fsviews >= FILES_MAX_FSID) {
		pthread_mutex_unlock(&ifs->fsviews_open_lock);
		*err_r = -EMFILE;
		return NULL;
	}
	fv = calloc(1, sizeof(*fv));
	if (!fv) {
		pthread_mutex_unlock(&ifs->fsviews_open_lock);
		*err_r = -ENOMEM;
		return NULL;
	}
	fv->view = view;
	snprintf(fv->name, sizeof(fv->name), "%s", t->name);
	fv->img = t->img;
	fv->start = t->disk_start;
	fv->size = t->disk_size;
	pthread_rwlock_init(&fv->lock, NULL);
	ret = fsview_open_locked(fv, &err);
	pthread_mutex_lock(&ifs->fsviews_lock);
	grown = ret == 0 ? realloc(ifs->fsviews, (ifs->nb_fsviews + 1) *
							 sizeof(*grown)) :
			   NULL;
	if (ret == 0 && !grown)
		ret = -ENOMEM;
	if (ret < 0) {
		pthread_mutex_unlock(&ifs->fsviews_lock);
		pthread_mutex_unlock(&ifs->fsviews_open_lock);
		if (err.msg[0])
			log_warn("%s: files/%s: %s", img_path(view->img), name,
				 err.msg);
		fsview_close_locked(fv);
		pthread_rwlock_destroy(&fv->lock);
		free(fv);
		*err_r = ret == -EMEDIUMTYPE ? -ENOENT :
			 ret == -ENOMEM ? -ENOMEM : -EIO;
		return NULL;
	}
	ifs->fsviews = grown;
	/* fsid 0 is never used, so that a files inode never has fsid 0. */
	fv->fsid = (unsigned)ifs->nb_fsviews + 1;
	pthread_rwlock_rdlock(&fv->lock);
	ifs->fsviews[ifs->nb_fsviews] = fv;
	__atomic_store_n(&ifs->nb_fsviews, ifs->nb_fsviews + 1,
			 __ATOMIC_RELEASE);
	pthread_mutex_unlock(&ifs->fsviews_lock);
	idle_start(ifs);
	pthread_mutex_unlock(&ifs->fsviews_open_lock);
	return fv;
}

/* The fsview an inode belongs to, lock held shared; NULL (and the
 * errno) when it is gone or stale. */
static struct ifs_fsview *fsview_of_ino(struct ifs *ifs, fuse_ino_t ino,
					uint64_t *guest_r, int *err_r)
{
	unsigned fsid = (unsigned)((ino & ~IFS_FILES_BIT) >>
				   IFS_FILES_FSID_SHIFT);
	struct ifs_fsview *fv = NULL;

	pthread_mutex_lock(&ifs->fsviews_lock);
	if (fsid >= 1 && fsid <= ifs->nb_fsviews)
		fv = ifs->fsviews[fsid - 1];
	pthread_mutex_unlock(&ifs->fsviews_lock);
	if (!fv) {
		*err_r = -ENOENT;
		return NULL;
	}
	pthread_rwlock_rdlock(&fv->lock);
	if (fv->stale || ifs_view_is_deleted(fv->view)) {
		pthread_rwlock_unlock(&fv->lock);
		*err_r = -ESTALE;
		return NULL;
	}
	*err_r = fsview_use(fv);
	if (*err_r < 0)
		return NULL;
	*guest_r = ino & FILES_GUEST_MASK;
	return fv;
}

static void fsview_put(struct ifs_fsview *fv)
{
	pthread_rwlock_unlock(&fv->lock);
}

static void fill_stat(const struct ifs_fsview *fv, const struct fsys_stat *fs,
		      struct stat *st)
{
	memset(st, 0, sizeof(*st));
	/* The node ID has IFS_FILES_BIT; st_ino need not, and reads better
	 * without it (fsid << 40 | the guest's number, unique in the mount
	 * since tree nodes stay below 2^40). */
	st->st_ino = files_ino(fv->fsid, fs->ino) & ~IFS_FILES_BIT;
	/* The mode is shown as the guest has it, setuid and setgid bits
	 * included (cp -a must copy them); the mount is nosuid and nodev,
	 * so the kernel never honours them. */
	st->st_mode = fs->mode;
	st->st_nlink = fs->nlink;
	st->st_uid = fs->uid;
	st->st_gid = fs->gid;
	st->st_rdev = fs->rdev;
	st->st_size = (off_t)fs->size;
	st->st_blocks = (blkcnt_t)fs->blocks;
	st->st_blksize = 4096;
	st->st_atim = fs->atime;
	st->st_mtim = fs->mtime;
	st->st_ctim = fs->ctime;
}

/* May the caller do mask (R_OK/W_OK/X_OK) on an object with these
 * owners and mode? The mounting user and root may read everything. */
static bool caller_may(fuse_req_t req, struct ifs *ifs,
		       const struct fsys_stat *st, int mask)
{
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	unsigned bits;

	if (ctx->uid == 0 || ctx->uid == ifs->uid)
		return true;
	if (ctx->uid == st->uid) {
		bits = (st->mode >> 6) & 7;
	} else {
		bool in_group = ctx->gid == st->gid;
		gid_t groups[64];
		int n = in_group ? 0 : fuse_req_getgroups(req, 64, groups);

		for (int i = 0; i < n && i < 64 && !in_group; i++)
			in_group = groups[i] == st->gid;
		bits = in_group ? (st->mode >> 3) & 7 : st->mode & 7;
	}
	return (bits & (unsigned)mask) == (unsigned)mask;
}

static void reply_fs_entry(fuse_req_t req, struct ifs_fsview *fv,
			   const struct fsys_stat *fs)
{
	struct fuse_entry_param e;

	memset(&e, 0, sizeof(e));
	e.ino = files_ino(fv->fsid, fs->ino);
	e.attr_timeout = FILES_TIMEOUT;
	e.entry_timeout = FILES_TIMEOUT;
	fill_stat(fv, fs, &e.attr);
	fuse_reply_entry(req, &e);
}

static bool guest_ino_fits(uint64_t guest)
{
	return guest != 0 && guest <= FILES_GUEST_MASK;
}

static void lookup_target(fuse_req_t req, struct ifs_view *view,
			  const struct fs_target *t);

/* Lookup of name in a files/ folder (dir names the folder). */
void ifs_files_lookup_root(fuse_req_t req, struct ifs_view *view,
			   const char *name)
{
	struct fs_target t = { 0 };
	int ret = find_block_file(view, name, &t);

	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		lookup_target(req, view, &t);
}

void ifs_files_lookup_lv(fuse_req_t req, struct ifs_view *view, int vg,
			 const char *name)
{
	struct fs_target t = { 0 };
	int lv = ifs_lvm_lv_index(view, vg, name);
	char *vg_name;

	if (lv < 0) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	t.img = ifs_lvm_lv_img(view, (unsigned)lv, &t.disk_start,
			       &t.disk_size);
	vg_name = ifs_lvm_lv_attr(view, (unsigned)lv, "vg");
	if (!t.img || !vg_name) {
		free(vg_name);
		fuse_reply_err(req, ENOENT);
		return;
	}
	snprintf(t.name, sizeof(t.name), "lvm/%s/%s", vg_name, name);
	free(vg_name);
	if (!ifs_lvm_lv_files_shown(view, (unsigned)lv)) {
		fuse_reply_err(req, ENOENT);
		return;
	}
	lookup_target(req, view, &t);
}

static void lookup_target(fuse_req_t req, struct ifs_view *view,
			  const struct fs_target *t)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fsview *fv;
	struct fsys_stat st;
	const char *name = t->name;
	int ret;

	fv = fsview_get(ifs, view, t, true, &ret);
	if (!fv) {
		fuse_reply_err(req, -ret);
		return;
	}
	ret = fsys_getattr(fv->fs, fsys_root_ino(fv->fs), &st);
	if (ret == 0 && !guest_ino_fits(st.ino))
		ret = -EOVERFLOW;
	if (ret < 0) {
		log_err("%s: files/%s: cannot read the root folder: %s",
			img_path(view->img), name, strerror(-ret));
		fuse_reply_err(req, -ret);
	} else {
		reply_fs_entry(req, fv, &st);
	}
	fsview_put(fv);
}

void ifs_files_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fsview *fv;
	struct fsys_stat dir, st;
	uint64_t guest;
	int ret;

	fv = fsview_of_ino(ifs, parent, &guest, &ret);
	if (!fv) {
		fuse_reply_err(req, -ret);
		return;
	}
	ret = fsys_getattr(fv->fs, guest, &dir);
	if (ret == 0 && !S_ISDIR(dir.mode))
		ret = -ENOTDIR;
	if (ret == 0 && !caller_may(req, ifs, &dir, X_OK))
		ret = -EACCES;
	if (ret == 0)
		ret = fsys_lookup(fv->fs, guest, name, &st);
	if (ret == 0 && !guest_ino_fits(st.ino))
		ret = -EOVERFLOW;
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		reply_fs_entry(req, fv, &st);
	fsview_put(fv);
}

void ifs_files_getattr(fuse_req_t req, fuse_ino_t ino)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fsview *fv;
	struct fsys_stat fs;
	struct stat st;
	uint64_t guest;
	int ret;

	fv = fsview_of_ino(ifs, ino, &guest, &ret);
	if (!fv) {
		fuse_reply_err(req, -ret);
		return;
	}
	ret = fsys_getattr(fv->fs, guest, &fs);
	if (ret < 0) {
		fuse_reply_err(req, -ret);
	} else {
		fill_stat(fv, &fs, &st);
		fuse_reply_attr(req, &st, FILES_TIMEOUT);
	}
	fsview_put(fv);
}

/* Checks that ino is an object of the kind want (S_IFDIR, S_IFREG) the
 * caller may read; 0 or -errno. */
static int check_open(fuse_req_t req, struct ifs *ifs, fuse_ino_t ino,
		      mode_t want, int flags)
{
	struct ifs_fsview *fv;
	struct fsys_stat st;
	uint64_t guest;
	int ret;

	if ((flags & O_ACCMODE) != O_RDONLY || (flags & O_TRUNC))
		return -EROFS;
	fv = fsview_of_ino(ifs, ino, &guest, &ret);
	if (!fv)
		return ret;
	ret = fsys_getattr(fv->fs, guest, &st);
	if (ret == 0) {
		if (want == S_IFDIR && !S_ISDIR(st.mode))
			ret = -ENOTDIR;
		else if (want == S_IFREG && S_ISDIR(st.mode))
			ret = -EISDIR;
		else if (want == S_IFREG && !S_ISREG(st.mode))
			ret = -EACCES; /* devices, FIFOs, sockets: listed only */
		else if (!caller_may(req, ifs, &st, R_OK))
			ret = -EACCES;
	}
	/* Counted until release: an open file keeps its filesystem open,
	 * and its snapshot from rmdir. */
	if (ret == 0 && !ifs_view_open_get(fv->view))
		ret = -ENOENT;
	if (ret == 0)
		__atomic_add_fetch(&fv->nb_handles, 1, __ATOMIC_RELAXED);
	fsview_put(fv);
	return ret;
}

void ifs_files_release(struct ifs *ifs, fuse_ino_t ino)
{
	unsigned fsid = (unsigned)((ino & ~IFS_FILES_BIT) >>
				   IFS_FILES_FSID_SHIFT);
	struct ifs_fsview *fv = NULL;

	pthread_mutex_lock(&ifs->fsviews_lock);
	if (fsid >= 1 && fsid <= ifs->nb_fsviews)
		fv = ifs->fsviews[fsid - 1];
	pthread_mutex_unlock(&ifs->fsviews_lock);
	if (fv) {
		__atomic_store_n(&fv->last_used_ms, now_ms(), __ATOMIC_RELAXED);
		__atomic_sub_fetch(&fv->nb_handles, 1, __ATOMIC_RELAXED);
		ifs_view_open_put(fv->view);
	}
}

void ifs_files_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	int ret = check_open(req, ifs_of(req), ino, S_IFREG, fi->flags);

	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	/* The filesystem does not change while this fsid lives. */
	fi->keep_cache = 1;
	fi->noflush = 1;
	fi->fh = 0;
	/* An interrupted opener gets no release: uncount it now. */
	if (fuse_reply_open(req, fi) != 0)
		ifs_files_release(ifs_of(req), ino);
}

void ifs_files_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fsview *fv;
	uint64_t guest;
	char *buf;
	ssize_t n;
	int ret;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fv = fsview_of_ino(ifs, ino, &guest, &ret);
	if (!fv) {
		fuse_reply_err(req, -ret);
		return;
	}
	size = MIN(size, (size_t)FILES_MAX_READ);
	buf = malloc(size ? size : 1);
	if (!buf) {
		fsview_put(fv);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	n = fsys_read(fv->fs, guest, buf, size, (uint64_t)off);
	fsview_put(fv);
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
	free(buf);
}

void ifs_files_readlink(fuse_req_t req, fuse_ino_t ino)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fsview *fv;
	uint64_t guest;
	char target[4097];
	ssize_t n;
	int ret;

	fv = fsview_of_ino(ifs, ino, &guest, &ret);
	if (!fv) {
		fuse_reply_err(req, -ret);
		return;
	}
	n = fsys_readlink(fv->fs, guest, target, sizeof(target));
	fsview_put(fv);
	if (n < 0)
		fuse_reply_err(req, n == -ERANGE ? ENAMETOOLONG : (int)-n);
	else
		fuse_reply_readlink(req, target);
}

void ifs_files_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi)
{
	int ret = check_open(req, ifs_of(req), ino, S_IFDIR, O_RDONLY);

	if (ret < 0) {
		fuse_reply_err(req, -ret);
		return;
	}
	fi->fh = 0;
	fi->cache_readdir = 1;
	fi->keep_cache = 1;
	if (fuse_reply_open(req, fi) != 0)
		ifs_files_release(ifs_of(req), ino);
}

/* Directory offsets: 0 starts the listing with ".", 1 continues with
 * "..", and every offset n >= 2 continues the filesystem's own listing
 * at its cookie n - 2. */
#define DOT_ENTRIES 2

/* A listing is filled in two steps: the filesystem's readdir hands the
 * entries to fill_one, which keeps them (within the reply's size), and
 * then each is added to the reply, with its attributes for readdirplus
 * (fetched after the filesystem's readdir returned: a driver may hold
 * its own lock while it calls fill_one). */
struct pending_entry {
	char *name;
	uint64_t guest;
	uint32_t type;
	uint64_t next_cookie;
};

struct fill_ctx {
	fuse_req_t req;
	bool plus;
	size_t budget;          /* bytes of reply left for new entries */
	struct pending_entry *ents;
	size_t nb, cap;
	bool failed;            /* out of memory */
};

static int fill_one(void *opaque, const char *name, uint64_t guest,
		    uint32_t type, uint64_t next_cookie)
{
	struct fill_ctx *c = opaque;
	size_t need;

	if (!guest_ino_fits(guest) || next_cookie > INT64_MAX - DOT_ENTRIES)
		return 0; /* cannot be named in our inode space: skip */
	need = c->plus ? fuse_add_direntry_plus(c->req, NULL, 0, name, NULL, 0)
		       : fuse_add_direntry(c->req, NULL, 0, name, NULL, 0);
	if (need > c->budget)
		return 1;
	if (c->nb == c->cap) {
		size_t cap = c->cap ? c->cap * 2 : 64;
		struct pending_entry *grown =
			realloc(c->ents, cap * sizeof(*grown));
		if (!grown) {
			c->failed = true;
			return 1;
		}
		c->ents = grown;
		c->cap = cap;
	}
	c->ents[c->nb].name = strdup(name);
	if (!c->ents[c->nb].name) {
		c->failed = true;
		return 1;
	}
	c->ents[c->nb].guest = guest;
	c->ents[c->nb].type = type;
	c->ents[c->nb].next_cookie = next_cookie;
	c->nb++;
	c->budget -= need;
	return 0;
}

/* Adds one entry to the reply; false when it does not fit. */
static bool add_reply_entry(fuse_req_t req, bool plus, char *buf,
			    size_t size, size_t *len_io, const char *name,
			    const struct fuse_entry_param *e, off_t next)
{
	size_t need = plus ? fuse_add_direntry_plus(req, buf + *len_io,
						    size - *len_io, name, e,
						    next)
			   : fuse_add_direntry(req, buf + *len_io,
					       size - *len_io, name, &e->attr,
					       next);

	if (need > size - *len_io)
		return false;
	*len_io += need;
	return true;
}

static void files_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
			  off_t off, bool plus)
{
	struct ifs *ifs = ifs_of(req);
	struct fill_ctx c = { .req = req, .plus = plus };
	struct ifs_fsview *fv;
	uint64_t guest;
	size_t len = 0;
	char *buf;
	int ret = 0;

	if (off < 0) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fv = fsview_of_ino(ifs, ino, &guest, &ret);
	if (!fv) {
		fuse_reply_err(req, -ret);
		return;
	}
	buf = malloc(size ? size : 1);
	if (!buf) {
		fsview_put(fv);
		fuse_reply_err(req, ENOMEM);
		return;
	}
	/* "." and ".." carry no attributes (node ID 0): the kernel knows
	 * those folders already. */
	for (; off < DOT_ENTRIES; off++) {
		struct fuse_entry_param e = { .attr.st_ino = ino & ~IFS_FILES_BIT,
					      .attr.st_mode = S_IFDIR };
		if (!add_reply_entry(req, plus, buf, size, &len,
				     off == 0 ? "." : "..", &e, off + 1))
			break;
	}
	if (off >= DOT_ENTRIES) {
		c.budget = size - len;
		ret = fsys_readdir(fv->fs, guest, (uint64_t)off - DOT_ENTRIES,
				   fill_one, &c);
	}
	for (size_t i = 0; i < c.nb; i++) {
		struct fuse_entry_param e = { 0 };
		struct fsys_stat st;

		e.attr.st_ino = files_ino(fv->fsid, c.ents[i].guest) &
				~IFS_FILES_BIT;
		e.attr.st_mode = c.ents[i].type;
		if (plus && fsys_getattr(fv->fs, c.ents[i].guest, &st) == 0 &&
		    guest_ino_fits(st.ino)) {
			e.ino = files_ino(fv->fsid, st.ino);
			e.attr_timeout = FILES_TIMEOUT;
			e.entry_timeout = FILES_TIMEOUT;
			fill_stat(fv, &st, &e.attr);
		}
		add_reply_entry(req, plus, buf, size, &len, c.ents[i].name,
				&e, (off_t)(c.ents[i].next_cookie +
					    DOT_ENTRIES));
		free(c.ents[i].name);
	}
	free(c.ents);
	fsview_put(fv);
	if (c.failed && len == 0)
		ret = -ENOMEM;
	/* An error after some entries: send those, the next call fails. */
	if (ret < 0 && len == 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_buf(req, buf, len);
	free(buf);
}

void ifs_files_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
		       off_t off)
{
	files_readdir(req, ino, size, off, false);
}

void ifs_files_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off)
{
	files_readdir(req, ino, size, off, true);
}

void ifs_files_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fsview *fv;
	uint64_t guest, pos = 0;
	int ret;

	if (off < 0 || (whence != SEEK_DATA && whence != SEEK_HOLE)) {
		fuse_reply_err(req, EINVAL);
		return;
	}
	fv = fsview_of_ino(ifs, ino, &guest, &ret);
	if (!fv) {
		fuse_reply_err(req, -ret);
		return;
	}
	ret = fsys_seek(fv->fs, guest, (uint64_t)off, whence, &pos);
	fsview_put(fv);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_lseek(req, (off_t)pos);
}

static void reply_xattr_result(fuse_req_t req, ssize_t n, const char *buf,
			       size_t size)
{
	if (n < 0)
		fuse_reply_err(req, (int)-n);
	else if (size == 0)
		fuse_reply_xattr(req, (size_t)n);
	else
		fuse_reply_buf(req, buf, (size_t)n);
}

/* getxattr of name, or listxattr when name is NULL: the two differ only
 * in the fsys call. */
static void files_xattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fsview *fv;
	uint64_t guest;
	char *buf = NULL;
	ssize_t n;
	int ret;

	fv = fsview_of_ino(ifs, ino, &guest, &ret);
	if (!fv) {
		fuse_reply_err(req, -ret);
		return;
	}
	if (size) {
		size = MIN(size, (size_t)65536);
		buf = malloc(size);
	}
	if (size && !buf)
		n = -ENOMEM;
	else if (name)
		n = fsys_getxattr(fv->fs, guest, name, buf, size);
	else
		n = fsys_listxattr(fv->fs, guest, buf, size);
	fsview_put(fv);
	reply_xattr_result(req, n, buf, size);
	free(buf);
}

void ifs_files_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size)
{
	files_xattr(req, ino, name, size);
}

void ifs_files_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size)
{
	files_xattr(req, ino, NULL, size);
}

void ifs_files_statfs(fuse_req_t req, fuse_ino_t ino)
{
	struct ifs *ifs = ifs_of(req);
	struct ifs_fsview *fv;
	struct statvfs sv;
	uint64_t guest;
	int ret;

	fv = fsview_of_ino(ifs, ino, &guest, &ret);
	if (!fv) {
		fuse_reply_err(req, -ret);
		return;
	}
	memset(&sv, 0, sizeof(sv));
	ret = fsys_statfs(fv->fs, &sv);
	fsview_put(fv);
	if (ret < 0)
		fuse_reply_err(req, -ret);
	else
		fuse_reply_statfs(req, &sv);
}

bool ifs_files_usable(struct ifs *ifs, struct ifs_view *view,
		      const char *name)
{
	struct fs_target t = { 0 };
	struct ifs_fsview *fv;
	int ret;

	if (find_block_file(view, name, &t) < 0)
		return false;
	/* A filesystem closed for idleness opened before: it is usable
	 * without reopening it (listing files/ must not open them all). */
	fv = fsview_get(ifs, view, &t, false, &ret);
	if (!fv)
		return false;
	fsview_put(fv);
	return true;
}

/* Lists the block files of view whose filesystems files/ shows. */
int ifs_files_list_root(struct ifs_view *view,
			int (*add)(void *ctx, const char *name), void *ctx)
{
	int ret = 0;

	pthread_rwlock_rdlock(&view->table_lock);
	if (view->table && view->table->nb_parts == 0 &&
	    cli_fs_type_readable(view->table->disk_fs_type))
		ret = add(ctx, "disk");
	for (size_t i = 0; view->table && i < view->table->nb_parts && !ret;
	     i++) {
		const struct part_entry *e = &view->table->parts[i];
		char name[32];

		if (e->container || !cli_fs_type_readable(e->fs_type) ||
		    e->number == 0 || e->number > IFS_MAX_PART_NUMBER)
			continue;
		snprintf(name, sizeof(name), "p%u", e->number);
		ret = add(ctx, name);
	}
	pthread_rwlock_unlock(&view->table_lock);
	return ret;
}

void ifs_files_invalidate(struct ifs *ifs, struct ifs_view *view,
			  uint64_t disk_off, uint64_t len, bool all)
{
	fuse_ino_t dir = ifs_ino(view->slot, IFS_NODE_FILESDIR);
	struct ifs_fsview **hit = NULL;
	size_t nb_hit = 0;

	if (!__atomic_load_n(&ifs->nb_fsviews, __ATOMIC_ACQUIRE))
		return;
	pthread_mutex_lock(&ifs->fsviews_lock);
	hit = calloc(ifs->nb_fsviews ? ifs->nb_fsviews : 1, sizeof(*hit));
	for (size_t i = 0; hit && i < ifs->nb_fsviews; i++) {
		struct ifs_fsview *fv = ifs->fsviews[i];
		uint64_t a = MAX(disk_off, fv->start);
		uint64_t b = MIN(disk_off + len, fv->start + fv->size);

		if (fv->view != view || (!all && a >= b))
			continue;
		pthread_rwlock_wrlock(&fv->lock);
		if (!fv->stale) {
			fv->stale = true;
			fsview_close_locked(fv);
			hit[nb_hit++] = fv;
		}
		pthread_rwlock_unlock(&fv->lock);
	}
	pthread_mutex_unlock(&ifs->fsviews_lock);
	/* After the locks: a notification may wait for requests that need
	 * them. */
	for (size_t i = 0; i < nb_hit; i++) {
		char name[sizeof(hit[i]->name)];

		/* files/lvm/VG/LV is dropped with files/lvm. */
		snprintf(name, sizeof(name), "%s", hit[i]->name);
		name[strcspn(name, "/")] = '\0';
		fuse_lowlevel_notify_inval_entry(ifs->se, dir, name,
						 strlen(name));
	}
	free(hit);
}

void ifs_files_free(struct ifs *ifs)
{
	idle_stop(ifs);
	for (size_t i = 0; i < ifs->nb_fsviews; i++) {
		struct ifs_fsview *fv = ifs->fsviews[i];

		fsview_close_locked(fv);
		pthread_rwlock_destroy(&fv->lock);
		free(fv);
	}
	free(ifs->fsviews);
	ifs->fsviews = NULL;
	ifs->nb_fsviews = 0;
}
