/* scan.c: the thread that reads partition tables through the mount.
 *
 * partition/ reads from a file descriptor. For a qcow2 image the only
 * descriptor whose bytes are the disk is our own MOUNTPOINT/disk, so the
 * scanner opens that (and snapshots/NAME/disk) once the session is
 * mounted and the loop is serving. It must never run inside a FUSE
 * handler that the kernel waits on before it sends more requests (init:
 * DESIGN.md measured a certain deadlock); handlers that need a rescan
 * (flush after writing disk, mkdir) ask this thread and wait for it with
 * a deadline, holding no lock.
 *
 * The first pass scans every view; later passes rescan the active disk
 * and scan any view that has no table yet (a new snapshot).
 */
#include "ifs.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A rescan requested by a handler that takes longer than this is left to
 * finish in the background; the handler replies anyway. */
#define SCAN_WAIT_SECONDS 20

static void scan_view(struct ifs *ifs, struct ifs_view *view)
{
	struct part_table *table = NULL;
	struct img_info info;
	char *path;
	int fd, ret;

	/* A raw image is its own disk: read the file itself and keep the
	 * scan off the mount (nothing then waits on our own FUSE requests). */
	if (view->slot == 0 && img_get_info(view->img, &info) == 0 &&
	    strcmp(info.format, "raw") == 0)
		ret = asprintf(&path, "%s", ifs->opts->image_abs);
	else if (view->slot == 0)
		ret = asprintf(&path, "%s/disk", ifs->opts->mountpoint_abs);
	else
		ret = asprintf(&path, "%s/snapshots/%s/disk",
			       ifs->opts->mountpoint_abs, view->dirname);
	if (ret < 0)
		return;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		log_err("%s: cannot open for the partition scan: %s", path,
			strerror(errno));
		free(path);
		return;
	}
	ret = part_scan(fd, img_size(view->img), &table);
	close(fd);
	if (ret < 0) {
		log_err("%s: partition scan failed: %s", path, strerror(-ret));
		table = calloc(1, sizeof(*table));
		if (table)
			table->error = strdup(strerror(-ret));
	}
	free(path);
	if (table)
		ifs_view_publish_table(ifs, view, table);
}

static void scan_pass(struct ifs *ifs, bool active)
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
		if (view->deleted)
			continue;
		pthread_rwlock_rdlock(&view->table_lock);
		need = !view->table || view->needs_scan ||
		       (active && view->slot == 0);
		view->needs_scan = false;
		pthread_rwlock_unlock(&view->table_lock);
		if (need)
			scan_view(ifs, view);
	}
}

static void *scan_main(void *arg)
{
	struct ifs *ifs = arg;
	unsigned target;

	scan_pass(ifs, true);
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
		scan_pass(ifs, true);
		pthread_mutex_lock(&ifs->scan_lock);
		ifs->scan_done = target;
		pthread_cond_broadcast(&ifs->scan_cond);
	}
	pthread_mutex_unlock(&ifs->scan_lock);
	return NULL;
}

int ifs_scan_start(struct ifs *ifs)
{
	int ret;

	pthread_mutex_init(&ifs->scan_lock, NULL);
	pthread_cond_init(&ifs->scan_cond, NULL);
	ret = pthread_create(&ifs->scan_thread, NULL, scan_main, ifs);
	if (ret)
		return -ret;
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
	while (!ifs->scan_stop && (int)(ifs->scan_done - target) < 0) {
		if (pthread_cond_timedwait(&ifs->scan_cond, &ifs->scan_lock,
					   &deadline) == ETIMEDOUT) {
			log_warn("partition rescan is taking long; replying "
				 "before it ends");
			break;
		}
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
