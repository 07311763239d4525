/* scan.c: the scanner thread and the child processes that read partition tables through the mount.
 *
 * partition/ reads from a file descriptor. For a qcow2 image the only
 * descriptor whose bytes are the disk is our own MOUNTPOINT/disk, so the
 * scanner reads that (and snapshots/NAME/disk) once the session is
 * mounted and the loop is serving, from a child process (scan_in_child
 * says why). It must never run inside a FUSE
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
#include <sys/wait.h>
#include <unistd.h>

/* A rescan requested by a handler that takes longer than this is left to
 * finish in the background; the handler replies anyway. */
#define SCAN_WAIT_SECONDS 20

/* Largest encoded table accepted from the child (a table of thousands of
 * partitions is far below it). */
#define SCAN_REPLY_MAX (16u << 20)

/* part_scan of the file at path, in this process. */
static int scan_here(const char *path, uint64_t size, struct part_table **t)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	int ret;

	if (fd < 0)
		return -errno;
	ret = part_scan(fd, size, t);
	close(fd);
	return ret;
}

/* The same in a child process, the table coming back through a pipe.
 * Used for scans through our own mount: a thread of ours blocked in a
 * FUSE request that a worker had already taken would keep a killed
 * daemon from ever exiting (its /dev/fuse descriptors close only when
 * every thread is gone). The child closes every descriptor it
 * inherited (the /dev/fuse ones, and the image's, whose lock must die
 * with us), so a kill -9 of the daemon aborts the connection and the
 * child's request fails instead. */
static int scan_in_child(const char *path, uint64_t size,
			 struct part_table **t)
{
	uint8_t *buf = NULL;
	size_t len = 0, cap = 0;
	int pfd[2], status, ret = 0;
	pid_t pid;

	if (pipe2(pfd, O_CLOEXEC) < 0)
		return -errno;
	pid = fork();
	if (pid < 0) {
		ret = -errno;
		close(pfd[0]);
		close(pfd[1]);
		return ret;
	}
	if (pid == 0) {
		struct part_table *table = NULL;
		uint8_t *out = NULL;
		size_t out_len = 0;
		int32_t r;

		/* Keep only the pipe's write end (moved to 3) and stderr. */
		if (dup2(pfd[1], 3) < 0)
			_exit(1);
		close_range(4, ~0u, 0);
		r = scan_here(path, size, &table);
		if (r == 0 && part_table_encode(table, &out, &out_len) < 0)
			r = -ENOMEM;
		if (write(3, &r, sizeof(r)) != sizeof(r))
			_exit(1);
		for (size_t off = 0; r == 0 && off < out_len;) {
			ssize_t n = write(3, out + off, out_len - off);

			if (n <= 0)
				_exit(1);
			off += (size_t)n;
		}
		_exit(0);
	}
	close(pfd[1]);
	for (;;) {
		ssize_t n;

		if (len == cap) {
			uint8_t *p;

			cap = cap ? cap * 2 : 4096;
			if (cap > SCAN_REPLY_MAX || !(p = realloc(buf, cap))) {
				ret = -ENOMEM;
				break;
			}
			buf = p;
		}
		n = read(pfd[0], buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			if (n < 0)
				ret = -errno;
			break;
		}
		len += (size_t)n;
	}
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
		;
	if (ret == 0 && (len < sizeof(int32_t) || !WIFEXITED(status) ||
			 WEXITSTATUS(status) != 0))
		ret = -EIO; /* the child died or could not answer */
	if (ret == 0) {
		int32_t r;

		memcpy(&r, buf, sizeof(r));
		ret = r < 0 ? r
			    : part_table_decode(buf + sizeof(r),
						len - sizeof(r), t);
	}
	free(buf);
	return ret;
}

static void scan_view(struct ifs *ifs, struct ifs_view *view)
{
	struct part_table *table = NULL;
	struct img_info info;
	bool own_mount = true;
	char *path;
	int ret;

	/* A raw image is its own disk: read the file itself and keep the
	 * scan off the mount (nothing then waits on our own FUSE requests). */
	if (view->slot == 0 && img_get_info(view->img, &info) == 0 &&
	    strcmp(info.format, "raw") == 0) {
		ret = asprintf(&path, "%s", ifs->opts->image_abs);
		own_mount = false;
	} else if (view->slot == 0) {
		ret = asprintf(&path, "%s/disk", ifs->opts->mountpoint_abs);
	} else {
		ret = asprintf(&path, "%s/snapshots/%s/disk",
			       ifs->opts->mountpoint_abs, view->dirname);
	}
	if (ret < 0)
		return;
	if (own_mount)
		ret = scan_in_child(path, img_size(view->img), &table);
	else
		ret = scan_here(path, img_size(view->img), &table);
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
