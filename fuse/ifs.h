/* ifs.h: what the files of the daemon (fuse/) share.
 *
 * The tree the daemon serves is a set of "views". A view is one disk and
 * its partitions: view slot 0 is the active image (MOUNTPOINT/disk, pN,
 * info, snapshots/), and every internal snapshot is a view of its own
 * (MOUNTPOINT/snapshots/NAME/disk, pN), always read-only.
 *
 * Inode numbers encode where a node is, so no inode table is needed:
 *   ino = (slot << IFS_SLOT_SHIFT) | node
 * node IFS_NODE_DIR is the root (slot 0) or the snapshot's folder, then
 * IFS_NODE_DISK, IFS_NODE_INFO and IFS_NODE_SNAPDIR (slot 0 only), and
 * IFS_NODE_PART_BASE + N for partition N. Slots are never reused during a
 * mount, so a stale inode from a deleted snapshot cannot alias a new one.
 * FUSE_ROOT_ID (1) is slot 0's IFS_NODE_DIR.
 */
#ifndef IMGFS_FUSE_IFS_H
#define IMGFS_FUSE_IFS_H

#define FUSE_USE_VERSION 312
#include <fuse_lowlevel.h>

#include "imgfmt.h"
#include "partition.h"
#include "fsys.h"
#include "lvm.h"

#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/stat.h>

#define IFS_SLOT_SHIFT 20
#define IFS_NODE_DIR 1
#define IFS_NODE_DISK 2
#define IFS_NODE_INFO 3
#define IFS_NODE_SNAPDIR 4
#define IFS_NODE_FILESDIR 5   /* files/ of a view */
#define IFS_NODE_LVMDIR 6     /* lvm/ of a view */
#define IFS_NODE_FILES_LVMDIR 7 /* files/lvm/ of a view */
/* lvm/VG (by the VG's index in the view's LVM scan), lvm/VG/LV (by the
 * LV's index) and files/lvm/VG. Partitions stay below IFS_NODE_VG_BASE. */
#define IFS_NODE_VG_BASE 0x80000
#define IFS_NODE_LV_BASE 0xa0000
#define IFS_NODE_FILES_VG_BASE 0xc0000
#define IFS_NODE_RANGE 0x20000
#define IFS_NODE_PART_BASE 0x100
/* Nodes inside a guest filesystem (files.c) have this bit set, an
 * fsid (one opening of one filesystem) above IFS_FILES_FSID_SHIFT and the
 * guest's own inode number below it. */
#define IFS_FILES_BIT (UINT64_C(1) << 63)
#define IFS_FILES_FSID_SHIFT 40
/* Partition numbers above this are not shown (no real table has them). */
#define IFS_MAX_PART_NUMBER (IFS_NODE_VG_BASE - IFS_NODE_PART_BASE - 1)

struct ifs_options {
	const char *image;      /* as given */
	const char *mountpoint; /* as given */
	char *image_abs;        /* realpath'd: the daemon changes to / */
	char *mountpoint_abs;
	bool foreground;
	bool debug;
	bool read_only;
	bool allow_other;
	enum img_format format;
	enum img_backing_policy backing;
	size_t cache_bytes;
	/* -o files_idle: seconds unused before a filesystem under files/
	 * is closed (0: never). */
	unsigned files_idle_sec;
	unsigned disk;          /* --disk N: which disk of an OVA, from 1;
	                         * 0 when not given */
	/* Mount options handed to the kernel (noatime, nodev, ...), as one
	 * comma-separated string, or empty. */
	char kernel_opts[512];
};

/* One disk and its partitions. The partition table is replaced whole on
 * a rescan, under table_lock; readers copy what they need out of it.
 *
 * Locking, field by field: slot, the names, the snapshot's dates and
 * size, and read_only are set before the view is published in
 * ifs->views (under views_lock) and never change. img and open_error
 * are written once under scan_mutex (img atomically: it is read without
 * it). deleted and nb_open are atomics. table, lvm and needs_scan are
 * guarded by table_lock (written with it held exclusively); scan_mutex
 * is taken before table_lock. alloc_cache and alloc_next are guarded by
 * alloc_lock; write_gen is an atomic counter. */
struct ifs_view {
	unsigned slot;
	char *dirname;          /* snapshots/<dirname>; NULL for slot 0 */
	char *snap_id;          /* NULL for slot 0 */
	char *snap_name;
	bool dirname_is_id;     /* name unusable, folder named by ID */
	bool dirname_is_position; /* ID unusable too: "snapshot-N" */
	uint64_t snap_date_sec;   /* for info */
	uint64_t snap_vm_clock_nsec;
	uint64_t snap_disk_size;
	/* The image: the active disk, or the snapshot's own handle, which
	 * is opened when the view is first used (ifs_view_need_table) and
	 * stays NULL when it cannot be (open_error says why). Written once,
	 * under scan_mutex; read atomically. */
	struct img *img;
	/* Under scan_mutex; info reads it atomically, without the lock. */
	char *open_error;
	/* The table entry alone says the snapshot cannot be opened
	 * (img_snapshot.unreadable, in open_error): the view has no folder
	 * under snapshots/, and info says why. Set before the view is
	 * published, never changed. */
	bool unlisted;
	bool read_only;
	bool deleted;           /* rmdir'ed: lookups fail, I/O gives ENOENT;
	                         * atomic (ifs_view_is_deleted) */
	struct ifs_view *name_next; /* next in its ifs->name_buckets chain;
	                             * views_lock */
	unsigned nb_open;       /* open files, those inside its files/
	                         * included, for rmdir's EBUSY; atomic */
	bool deleting;          /* an rmdir is deciding; atomic */
	pthread_rwlock_t table_lock;
	struct part_table *table; /* NULL until the first scan; table_lock */
	struct ifs_lvm *lvm;      /* LVM volumes (lvm-tree.c), or NULL;
	                           * guarded by table_lock */
	bool needs_scan;          /* table is provisional: rescan it
	                           * (guarded by table_lock) */
	/* The block file of each partition, per table->parts[i]: a window
	 * on img from the pool below (windows.c). Swapped together with
	 * table, under table_lock; NULL when the table has none or there
	 * was no memory for the array. */
	struct img **part_imgs;
	/* Every window opened on img, by range, closed with the view
	 * (windows.c); guarded by windows_lock. */
	pthread_mutex_t windows_lock;
	struct ifs_windows *windows;
	pthread_mutex_t scan_mutex; /* one scan of this view at a time */
	/* st_blocks needs a walk of the image's metadata; remember the
	 * answer per window until the next change (write_gen). Allocated
	 * on the first stat, so 20,000 unbrowsed snapshots cost nothing. */
	pthread_mutex_t alloc_lock;
	struct ifs_alloc_cache *alloc_cache; /* alloc_lock */
	uint64_t write_gen;       /* bumped by every write, discard, zero;
	                           * atomic */
};

/* The mount. opts, img, se, image_st, uid and gid are set before the
 * session starts and then only read. Each other field says what guards
 * it. */
struct ifs {
	struct ifs_options *opts;
	struct img *img;
	struct fuse_session *se;
	struct stat image_st;   /* times for every node */
	uid_t uid;
	gid_t gid;

	pthread_mutex_t views_lock; /* guards the fields up to next_slot */
	struct ifs_view **views;    /* views[0] is the active image */
	struct ifs_view *active;    /* views[0], read without the lock */
	size_t nb_views, cap_views;
	/* Snapshot views by dirname (deleted ones too, skipped by lookups),
	 * so that a lookup in a folder of 20,000 snapshots is no scan. */
	struct ifs_view **name_buckets;
	size_t nb_name_buckets;   /* a power of two, or 0 */
	size_t nb_live_snapshots; /* snapshot folders: views not deleted,
	                           * not unlisted */
	unsigned next_slot;

	/* The scanner thread reads partition tables through the mount.
	 * scan_thread and scan_started belong to the main thread (set
	 * before the session loop, cleared after it); scan_requested,
	 * scan_done and scan_stop are guarded by scan_lock. */
	pthread_t scan_thread;
	bool scan_started;
	pthread_mutex_t scan_lock;
	pthread_cond_t scan_cond;
	unsigned scan_requested;  /* bumped to ask for a rescan */
	unsigned scan_done;       /* scan_requested value last finished */
	bool scan_stop;
	/* The launcher's handshake (ready.c). ready_fd: the daemon's end of
	 * the socket pair; the watcher thread owns it while it runs, the
	 * main thread only before starting it or after joining it. */
	int ready_fd;
	int ready_wake_fd;        /* eventfd: ifs_signal_ready wakes it */
	bool ready;               /* the tree is readable (atomic) */
	bool ready_watched;       /* main thread only */
	pthread_t ready_thread;
	pthread_t main_thread;    /* runs the session loop; set before it */
	bool loop_ended;          /* the session loop returned (atomic) */

	/* Open guest filesystems (files.c). fsviews_lock guards fsviews
	 * and nb_fsviews (nb_fsviews is also read atomically without it);
	 * fsviews_open_lock serialises opening. */
	pthread_mutex_t fsviews_lock;
	pthread_mutex_t fsviews_open_lock;
	struct ifs_fsview **fsviews;
	size_t nb_fsviews;
	/* The thread closing unused filesystems (files.c), started with
	 * the first one; files_idle_lock guards files_idle_stop. */
	pthread_t files_idle_thread;
	bool files_idle_started;
	bool files_idle_stop;
	pthread_mutex_t files_idle_lock;
	pthread_cond_t files_idle_cond;
	/* LVM scan results replaced by a rescan, freed at unmount
	 * (lvm-tree.c); guarded by views_lock. */
	struct ifs_lvm *lvm_retired;
};

/* options.c */
int ifs_parse_options(int argc, char **argv, struct ifs_options *opts);
void ifs_free_options(struct ifs_options *opts);

/* tree.c: views and the node each inode names. */
struct ifs_node {
	struct ifs_view *view;
	unsigned node;          /* IFS_NODE_* */
	unsigned part_number;   /* for partitions */
	unsigned index;         /* VG or LV index for lvm/ nodes */
	/* The image handle that is this block file, addressed from 0: the
	 * view's image for disk, a window on it for pN, the volume's own
	 * handle for lvm/VG/LV (windows.c). It lives until unmount. */
	struct img *img;
	uint64_t size;
};

/* rmdir marks a view deleted while other threads look at it: read the
 * flag atomically. */
static inline bool ifs_view_is_deleted(const struct ifs_view *view)
{
	return __atomic_load_n(&view->deleted, __ATOMIC_ACQUIRE);
}

/* An open of a file of the view counts itself, then looks whether an
 * rmdir is deciding or done; rmdir raises deleting, then looks at the
 * count. With both steps sequentially consistent, at least one of them
 * sees the other: an open never goes on into a snapshot that rmdir
 * deletes. false: the view is (being) deleted, nothing is counted. */
static inline bool ifs_view_open_get(struct ifs_view *view)
{
	__atomic_add_fetch(&view->nb_open, 1, __ATOMIC_SEQ_CST);
	if (__atomic_load_n(&view->deleting, __ATOMIC_SEQ_CST) ||
	    ifs_view_is_deleted(view)) {
		__atomic_sub_fetch(&view->nb_open, 1, __ATOMIC_SEQ_CST);
		return false;
	}
	return true;
}

static inline void ifs_view_open_put(struct ifs_view *view)
{
	__atomic_sub_fetch(&view->nb_open, 1, __ATOMIC_SEQ_CST);
}

int ifs_views_init(struct ifs *ifs);
void ifs_views_free(struct ifs *ifs);
struct ifs_view *ifs_view_by_slot(struct ifs *ifs, unsigned slot);
struct ifs_view *ifs_view_by_dirname(struct ifs *ifs, const char *name);
/* Marks a snapshot's view deleted (rmdir): lookups no longer find it. */
void ifs_view_mark_deleted(struct ifs *ifs, struct ifs_view *view);
/* Snapshot views not deleted: the subfolders of snapshots/. */
size_t ifs_nb_live_snapshots(struct ifs *ifs);
/* Resolves ino to a node; -ENOENT when it names nothing (now). */
int ifs_resolve(struct ifs *ifs, fuse_ino_t ino, struct ifs_node *node_r);
fuse_ino_t ifs_ino(unsigned slot, unsigned node);
/* Fills st for a resolved node. */
void ifs_stat_node(struct ifs *ifs, const struct ifs_node *node,
		   struct stat *st);
/* Replaces the view's table (and its partitions' windows); invalidates
 * kernel caches of what changed. */
void ifs_view_publish_table(struct ifs *ifs, struct ifs_view *view,
			    struct part_table *table);
/* Gives a view with no table yet the provisional table (a snapshot
 * mkdir just took starts with the active disk's): its windows are
 * opened, and the scanner is to confirm it (needs_scan). */
void ifs_view_set_provisional_table(struct ifs_view *view,
				    struct part_table *table);
/* Copies the partition entry with this number's strings for xattrs.
 * Returns a malloc'ed value or NULL. */
char *ifs_part_attr(struct ifs_view *view, unsigned number,
		    const char *key);
/* fstype, label or uuid of the filesystem on a whole block file that a
 * table describes (t->disk_fs_*), borrowed; NULL for another key or t. */
const char *ifs_table_disk_attr(const struct part_table *t, const char *key);
/* Bytes of the block file img (of view) stored in the view's image
 * itself, cached until the view is next written. */
uint64_t ifs_view_allocated(struct ifs_view *view, struct img *img);
/* Records that the view's image changed (drops cached allocation). */
void ifs_view_changed(struct ifs_view *view);
/* Adds a view for a snapshot (after mkdir); returns it or NULL. */
struct ifs_view *ifs_view_add_snapshot(struct ifs *ifs,
				       const struct img_snapshot *snap,
				       const char *dirname, bool is_id,
				       bool open_now);

/* windows.c: the block files as image handles, and where they lie. */
/* The window on view->img showing [start, start + size) (clipped to the
 * image), from the view's pool: the same handle for the same range for
 * as long as the view lives. NULL without memory. */
struct img *ifs_view_window(struct ifs_view *view, uint64_t start,
			    uint64_t size);
/* The windows of each partition of table, for part_imgs (malloc'ed; NULL
 * for a table without partitions, or without memory). */
struct img **ifs_view_part_windows(struct ifs_view *view,
				   const struct part_table *table);
/* Closes every window of the view (at unmount, before its image). */
void ifs_view_windows_free(struct ifs_view *view);
/* The bytes of the view's disk [*disk_off_r, + *disk_len_r) whose change
 * a change of [off, off + len) of the block file node touches: the same
 * bytes for disk and pN, the PVs' whole range for a volume. false when
 * it lies on no disk range we know (a volume gone in a rescan). */
bool ifs_node_disk_span(const struct ifs_node *node, uint64_t off,
			uint64_t len, uint64_t *disk_off_r,
			uint64_t *disk_len_r);
/* Invalidates cached pages of every file of view that shows bytes of
 * the disk range [disk_off, disk_off + len), except the one written. */
void ifs_invalidate_aliases(struct ifs *ifs, struct ifs_view *view,
			    fuse_ino_t written_ino, uint64_t disk_off,
			    uint64_t len);

/* ready.c: the launcher and the daemon. */
/* Daemon: watches the launcher's end; 0 or -errno. */
int ifs_ready_watch_start(struct ifs *ifs);
void ifs_ready_watch_stop(struct ifs *ifs);
/* Daemon: the tree is readable; tells the launcher (unless the session
 * is already ending). */
void ifs_signal_ready(struct ifs *ifs);
/* Ends the session from any thread, waking the loop. */
void ifs_request_exit(struct ifs *ifs);
/* Launcher: waits for the daemon pid's verdict on fd; the exit status
 * (0 only when the mount is there and ready). */
int ifs_launcher_wait(pid_t pid, int fd);
/* Around the fork: block SIGTERM, SIGINT and SIGHUP (the old mask in
 * *old_r); the launcher then catches them (restoring the mask), the
 * daemon just restores the mask. */
void ifs_launcher_block_signals(sigset_t *old_r);
void ifs_launcher_catch_signals(const sigset_t *old);

/* scan.c */
int ifs_scan_start(struct ifs *ifs);
/* Starts a thread of ours with the signals that end the daemon blocked,
 * so they reach the main thread. 0 or -errno. */
int ifs_thread_start(pthread_t *thread_r, void *(*fn)(void *), void *arg);
/* True once the session has been told to exit (a signal, an unmount). */
bool ifs_exiting(struct ifs *ifs);
/* Asks for a rescan of the active disk and waits for it (bounded; not
 * past the daemon's exit). */
void ifs_scan_request_and_wait(struct ifs *ifs);
/* Asks for a scan of views that need one, without waiting. */
void ifs_scan_request(struct ifs *ifs);
void ifs_scan_stop(struct ifs *ifs);
/* Opens a snapshot view's image if it is not open yet, then reads its
 * partition table if it has none (snapshot views are opened and scanned
 * when first used). Takes no lock the caller holds. */
void ifs_view_need_table(struct ifs *ifs, struct ifs_view *view);

/* info.c: the text of MOUNTPOINT/info; malloc'ed, *len_r bytes. */
char *ifs_info_text(struct ifs *ifs, size_t *len_r);

/* files.c: the files/ folders. Requests for inodes with IFS_FILES_BIT
 * come here; each handler sends exactly one reply. */
bool ifs_files_ino(fuse_ino_t ino);
void ifs_files_lookup_root(fuse_req_t req, struct ifs_view *view,
			   const char *name);
void ifs_files_lookup(fuse_req_t req, fuse_ino_t parent, const char *name);
void ifs_files_getattr(fuse_req_t req, fuse_ino_t ino);
void ifs_files_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi);
/* The release of a file or folder ifs_files_open(dir) opened. */
void ifs_files_release(struct ifs *ifs, fuse_ino_t ino);
void ifs_files_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off);
void ifs_files_readlink(fuse_req_t req, fuse_ino_t ino);
void ifs_files_opendir(fuse_req_t req, fuse_ino_t ino,
		       struct fuse_file_info *fi);
void ifs_files_readdir(fuse_req_t req, fuse_ino_t ino, size_t size,
		       off_t off);
/* readdirplus: entries with their attributes, each one a lookup. */
void ifs_files_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size,
			   off_t off);
void ifs_files_lseek(fuse_req_t req, fuse_ino_t ino, off_t off, int whence);
void ifs_files_getxattr(fuse_req_t req, fuse_ino_t ino, const char *name,
			size_t size);
void ifs_files_listxattr(fuse_req_t req, fuse_ino_t ino, size_t size);
void ifs_files_statfs(fuse_req_t req, fuse_ino_t ino);
/* True when files/name of view can be opened (opens it if needed). */
bool ifs_files_usable(struct ifs *ifs, struct ifs_view *view,
		      const char *name);
/* Calls add(ctx, name) for each block file of view that files/ shows;
 * stops at the first non-zero return and returns it. */
int ifs_files_list_root(struct ifs_view *view,
			int (*add)(void *ctx, const char *name), void *ctx);
/* A write reached [disk_off, disk_off + len) of view's disk (or, with
 * all, the table changed): open filesystems there turn stale and their
 * files/ entries are dropped from the kernel's caches. */
void ifs_files_invalidate(struct ifs *ifs, struct ifs_view *view,
			  uint64_t disk_off, uint64_t len, bool all);
void ifs_files_free(struct ifs *ifs);

/* lvm-tree.c: lvm/VG/LV. */
/* Rereads the LVM volumes of view from its current table. */
void ifs_lvm_rescan(struct ifs *ifs, struct ifs_view *view);
void ifs_lvm_free(struct ifs *ifs);
/* The view's volume groups for info, or NULL, and per LV index what the
 * volume holds (a scan as for a whole disk; NULL entries for those not
 * scanned); both from one scan, valid until unmount. */
const struct lvm_set *ifs_lvm_set(struct ifs_view *view,
				  const struct part_table *const **tables_r);
bool ifs_lvm_present(struct ifs_view *view);
int ifs_lvm_vg_index(struct ifs_view *view, const char *name);
int ifs_lvm_lv_index(struct ifs_view *view, int vg, const char *name);
int ifs_lvm_list_vgs(struct ifs_view *view,
		     int (*add)(void *ctx, const char *name, unsigned idx),
		     void *ctx);
/* The readable LVs of VG vg; files_only: those whose filesystem
 * files/lvm/VG/ shows (the partitions' rule, cli_lv_files_shown). */
int ifs_lvm_list_lvs(struct ifs_view *view, int vg, bool files_only,
		     int (*add)(void *ctx, const char *name, unsigned idx),
		     void *ctx);
bool ifs_lvm_lv_files_shown(struct ifs_view *view, unsigned idx);

/* The handle of LV idx (owned by the view; valid until unmount) and the
 * range of the disk its PVs lie in; NULL when there is none. */
struct img *ifs_lvm_lv_img(struct ifs_view *view, unsigned idx,
			   uint64_t *pv_start_r, uint64_t *pv_size_r);
/* vguuid, lvuuid, segtype, vg, and fstype, label, uuid of the filesystem
 * in it (as for the disk, ifs_table_disk_attr) of LV idx: malloc'ed, or
 * NULL. */
char *ifs_lvm_lv_attr(struct ifs_view *view, unsigned idx, const char *key);
/* files/lvm/VG/name: the filesystem of that volume. */
void ifs_files_lookup_lv(fuse_req_t req, struct ifs_view *view, int vg,
			 const char *name);

/* ops.c */
extern const struct fuse_lowlevel_ops ifs_ops;

#endif
