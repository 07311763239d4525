/* scan.c: reading the partition tables of the views.
 *
 * partition/ reads from a file descriptor. A raw image is its own disk,
 * so its table is read from the image file. Every other view (qcow2 and
 * the read-only formats, and every snapshot) has no descriptor whose
 * bytes are the disk: cli_scan_img (part_scan_reader) copies the regions
 * a scan reads from the view's image handle into a sparse memory file
 * and scans that.
 * No scan goes through our own mount, so none can wait on a FUSE request
 * of ours: a scan may run in any thread, a handler included, and a kill
 * of the daemon never finds a thread stuck on its own mount.
 *
 * The scanner thread reads the active disk's table before the mount is
 * declared ready, and again whenever a handler asks (a written disk was
 * closed; a new snapshot needs its own). Snapshot views are scanned when
 * first used (ifs_view_need_table), so that mounting an image with
 * thousands of snapshots costs no scan per snapshot.
 *
 * Ending: the session loop ends only when every handler has returned, and
 * the daemon joins the scanner after the loop; so a scan in flight, in a
 * handler or in the scanner, stops at its next chunk once the session has
 * exited (cli_scan_img_cancellable), and a handler waiting for a rescan
 * stops waiting. The scanner blocks the signals that end the daemon, so
 * they reach the main thread, whose wait ends the loop.
 */
#include "ifs.h"

#include "cleanup.h"
#include "cli.h"
#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* A rescan requested by a handler that takes longer than this is left to
 * finish in the background; the handler replies anyway. */
#define SCAN_WAIT_SECONDS 20
/* How often a handler waiting for a rescan looks whether the daemon is
 * ending (nothing signals the scan condition then). */
#define SCAN_WAIT_SLICE_NSEC (100 * 1000 * 1000L)

/* part_scan of the file at path (a raw image), through a descriptor of
 * its own (part_scan moves the file offset). The name is opened again,
 * so it is held to what imgfmt holds the image to: a FIFO put there
 * meanwhile must not block the scan (O_NONBLOCK), and only a regular
 * file or a block device is scanned. */
static int scan_file(const char *path, uint64_t size, struct part_table **t)
{
	CLEANUP_CLOSE int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK |
						  O_NOCTTY);
	struct stat st;

	if (fd < 0)
		return -errno;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode))
		return -EINVAL;
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0)
		return -errno;
	return part_scan(fd, size, t);
}

bool ifs_exiting(struct ifs *ifs)
{
	/* libfuse clears its flag when the loop returns (fuse_session_reset);
	 * ours stays set for the joins that follow. */
	return __atomic_load_n(&ifs->loop_ended, __ATOMIC_ACQUIRE) ||
	       (ifs->se && fuse_session_exited(ifs->se));
}

static bool scan_cancelled(void *ctx)
{
	return ifs_exiting(ctx);
}

static void scan_view(struct ifs *ifs, struct ifs_view *view)
{
	struct part_table *table = NULL;
	int ret;

	if (view->slot == 0 && img_is_file_identity(view->img)) {
		ret = scan_file(ifs->opts->image_abs, img_size(view->img),
				&table);
	} else {
		ret = cli_scan_img_cancellable(view->img, scan_cancelled, ifs,
					       &table);
	}
	/* Cut short because the daemon ends: nothing to say, nothing to
	 * publish (the view keeps no table; nobody will ask again). */
	if (ret == -ECANCELED)
		return;
	if (ret < 0) {
		log_err("%s%s%s: partition scan failed: %s",
			img_path(view->img), view->dirname ? ": snapshot " : "",
			view->dirname ? view->dirname : "", strerror(-ret));
		table = calloc(1, sizeof(*table));
		if (table)
			table->error = strdup(strerror(-ret));
	}
	if (table)
		ifs_view_publish_table(ifs, view, table);
}

/* Opens the snapshot of a view made at mount time; scan_mutex held. */
static void open_view_locked(struct ifs *ifs, struct ifs_view *view)
{
	struct img_err err = { 0 };
	struct img *img = NULL;

	if (view->img || view->open_error || !view->snap_id)
		return;
	if (img_snapshot_open(ifs->img, view->snap_id, &img, &err) < 0) {
		/* Logged once: later uses find open_error. info reads it
		 * without scan_mutex. */
		log_err("%s", err.msg);
		__atomic_store_n(&view->open_error,
				 strdup(err.msg[0] ? img_err_reason(&err,
								    ifs->img)
						   : strerror(-err.errnum)),
				 __ATOMIC_RELEASE);
		return;
	}
	__atomic_store_n(&view->img, img, __ATOMIC_RELEASE);
}

void ifs_view_need_table(struct ifs *ifs, struct ifs_view *view)
{
	bool need;

	pthread_rwlock_rdlock(&view->table_lock);
	need = !view->table;
	pthread_rwlock_unlock(&view->table_lock);
	if (!need)
		return;
	/* One open and scan per view at a time; a second caller finds the
	 * table (or the reason there is none). */
	pthread_mutex_lock(&view->scan_mutex);
	open_view_locked(ifs, view);
	pthread_rwlock_rdlock(&view->table_lock);
	need = !view->table;
	pthread_rwlock_unlock(&view->table_lock);
	if (need && view->img)
		scan_view(ifs, view);
	pthread_mutex_unlock(&view->scan_mutex);
}

/* The active disk always; snapshot views only when they asked for a
 * rescan (needs_scan: a snapshot taken by mkdir starts with a copy of
 * the active table). */
static void scan_pass(struct ifs *ifs)
{
	for (size_t i = 0;; i++) {
		struct ifs_view *view = NULL;
		bool need;

		pthread_mutex_lock(&ifs->views_lock);
		if (i < ifs->nb_views)
			view = ifs->views[i];
		pthread_mutex_unlock(&ifs->views_lock);
		if (!view)
			break;
		if (ifs_view_is_deleted(view) ||
		    !__atomic_load_n(&view->img, __ATOMIC_ACQUIRE))
			continue;
		pthread_mutex_lock(&view->scan_mutex);
		pthread_rwlock_wrlock(&view->table_lock);
		need = view->slot == 0 || view->needs_scan;
		view->needs_scan = false;
		pthread_rwlock_unlock(&view->table_lock);
		if (need)
			scan_view(ifs, view);
		pthread_mutex_unlock(&view->scan_mutex);
	}
}

static void *scan_main(void *arg)
{
	struct ifs *ifs = arg;
	unsigned target;

	scan_pass(ifs);
	ifs_signal_ready(ifs);
	pthread_mutex_lock(&ifs->scan_lock);
	for (;;) {
		while (!ifs->scan_stop &&
		       ifs->scan_done == ifs->scan_requested)
			pthread_cond_wait(&ifs->scan_cond, &ifs->scan_lock);
		if (ifs->scan_stop)
			break;
		target = ifs->scan_requested;
		pthread_mutex_unlock(&ifs->scan_lock);
		scan_pass(ifs);
		pthread_mutex_lock(&ifs->scan_lock);
		ifs->scan_done = target;
		pthread_cond_broadcast(&ifs->scan_cond);
	}
	pthread_mutex_unlock(&ifs->scan_lock);
	return NULL;
}

int ifs_thread_start(pthread_t *thread_r, void *(*fn)(void *), void *arg)
{
	sigset_t ending, old;
	int ret;

	/* The thread inherits the mask: SIGTERM and the like then go to the
	 * main thread, which libfuse's handler must interrupt. */
	sigemptyset(&ending);
	sigaddset(&ending, SIGTERM);
	sigaddset(&ending, SIGINT);
	sigaddset(&ending, SIGHUP);
	sigaddset(&ending, SIGQUIT);
	pthread_sigmask(SIG_BLOCK, &ending, &old);
	ret = pthread_create(thread_r, NULL, fn, arg);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return -ret;
}

int ifs_scan_start(struct ifs *ifs)
{
	int ret;

	pthread_mutex_init(&ifs->scan_lock, NULL);
	pthread_cond_init(&ifs->scan_cond, NULL);
	ret = ifs_thread_start(&ifs->scan_thread, scan_main, ifs);
	if (ret)
		return ret;
	ifs->scan_started = true;
	return 0;
}

void ifs_scan_request(struct ifs *ifs)
{
	if (!ifs->scan_started)
		return;
	pthread_mutex_lock(&ifs->scan_lock);
	ifs->scan_requested++;
	pthread_cond_broadcast(&ifs->scan_cond);
	pthread_mutex_unlock(&ifs->scan_lock);
}

void ifs_scan_request_and_wait(struct ifs *ifs)
{
	struct timespec deadline;
	unsigned target;

	if (!ifs->scan_started)
		return;
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += SCAN_WAIT_SECONDS;
	pthread_mutex_lock(&ifs->scan_lock);
	target = ++ifs->scan_requested;
	pthread_cond_broadcast(&ifs->scan_cond);
	while (!ifs->scan_stop && (int)(ifs->scan_done - target) < 0 &&
	       !ifs_exiting(ifs)) {
		struct timespec now, slice;

		clock_gettime(CLOCK_REALTIME, &now);
		if (now.tv_sec > deadline.tv_sec ||
		    (now.tv_sec == deadline.tv_sec &&
		     now.tv_nsec >= deadline.tv_nsec)) {
			log_warn("partition rescan is taking long; replying "
				 "before it ends");
			break;
		}
		slice = now;
		slice.tv_nsec += SCAN_WAIT_SLICE_NSEC;
		if (slice.tv_nsec >= 1000000000L) {
			slice.tv_sec++;
			slice.tv_nsec -= 1000000000L;
		}
		pthread_cond_timedwait(&ifs->scan_cond, &ifs->scan_lock,
				       &slice);
	}
	pthread_mutex_unlock(&ifs->scan_lock);
}

void ifs_scan_stop(struct ifs *ifs)
{
	if (!ifs->scan_started)
		return;
	pthread_mutex_lock(&ifs->scan_lock);
	ifs->scan_stop = true;
	pthread_cond_broadcast(&ifs->scan_cond);
	pthread_mutex_unlock(&ifs->scan_lock);
	pthread_join(ifs->scan_thread, NULL);
	ifs->scan_started = false;
	pthread_cond_destroy(&ifs->scan_cond);
	pthread_mutex_destroy(&ifs->scan_lock);
}
