/* ready.c: the handshake between the launcher and the daemon it forks.
 *
 * Without -f, `imgfs IMAGE MNT` forks; the parent (the launcher) waits on
 * one end of a socket pair, the daemon holds the other. The rule the
 * handshake keeps: the launcher exits 0 only when the mount is there and
 * ready, and a mount whose launcher did not live to say so to its caller
 * does not stay behind.
 *
 *   daemon                               launcher
 *   (mounts, scans the active disk)      waits
 *   "ok\n" once the tree is readable ->  reads it
 *                                    <-  "ack\n", then exits 0
 *   reads "ack": committed
 *
 * Or, instead of "ok", one error line, after the daemon has unmounted;
 * the launcher prints it and exits 1. The launcher never writes before
 * "ok", so anything readable on the daemon's end before the ack (end of
 * file, in practice) means the launcher is gone: killed by timeout(1) or
 * a ^C while the mount was not ready, or right after "ok" before it could
 * tell its caller. The daemon then ends the session (it unmounts on the
 * way out).
 *
 * A launcher that is sent SIGTERM, SIGINT or SIGHUP while it waits
 * (timeout(1), a ^C) does not just vanish: it closes its end, waits for
 * the daemon to unmount and exit, and only then dies of the signal, so
 * that whoever killed it finds nothing mounted when it is gone. More of
 * these signals meanwhile change nothing (timeout(1) sends SIGTERM to
 * the launcher and then to its whole process group: one timeout, two
 * signals), and the wait is bounded (LAUNCHER_STOP_WAIT_SEC); SIGKILL
 * ends it at once, and the daemon still unmounts, a moment later.
 *
 * The one window left: a launcher signalled after writing "ack" exits 0
 * with the mount there. timeout(1), whose alarm may fire in that window
 * or after the launcher exited but before timeout reaped it, then says
 * 124 (timeout --preserve-status gives the launcher's 0).
 *
 * The daemon's end is watched by a thread of its own (the scanner may be
 * busy with a slow table for a long time), which is the only one to
 * touch the socket until it ends; ifs_ready_watch_stop joins it, after
 * which main may write the error line.
 */
#include "ifs.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* How often the watcher looks whether the session has exited (nothing
 * wakes it then). */
#define WATCH_SLICE_MSEC 100

void ifs_request_exit(struct ifs *ifs)
{
	/* fuse_session_exit alone leaves the main thread asleep in the
	 * session loop; libfuse's SIGTERM handler both marks the session
	 * and wakes it. */
	fuse_session_exit(ifs->se);
	pthread_kill(ifs->main_thread, SIGTERM);
}

/* The launcher's end: 1 readable (it wrote, or closed: it is gone),
 * 0 quiet for one slice, or a wake of ours; -errno. */
static int wait_launcher(struct ifs *ifs, bool *woken_r)
{
	struct pollfd fds[2] = {
		{ .fd = ifs->ready_fd, .events = POLLIN },
		{ .fd = ifs->ready_wake_fd, .events = POLLIN },
	};
	int n = poll(fds, 2, WATCH_SLICE_MSEC);

	*woken_r = false;
	if (n < 0)
		return errno == EINTR ? 0 : -errno;
	if (fds[1].revents & POLLIN) {
		uint64_t v;

		if (read(ifs->ready_wake_fd, &v, sizeof(v)) < 0)
			v = 0;
		*woken_r = true;
	}
	return (fds[0].revents & (POLLIN | POLLHUP | POLLERR)) ? 1 : 0;
}

/* True when the launcher answered "ack". */
static bool read_ack(struct ifs *ifs)
{
	char buf[8];
	ssize_t n;

	do
		n = read(ifs->ready_fd, buf, sizeof(buf));
	while (n < 0 && errno == EINTR);
	return n == 4 && memcmp(buf, "ack\n", 4) == 0;
}

static void *watch_main(void *arg)
{
	struct ifs *ifs = arg;
	bool said_ok = false, woken;
	int r;

	while (!ifs_exiting(ifs)) {
		r = wait_launcher(ifs, &woken);
		if (r < 0)
			break;
		if (r > 0) {
			if (said_ok && read_ack(ifs)) {
				close(ifs->ready_fd);
				ifs->ready_fd = -1;
				return NULL;
			}
			log_warn("the launcher is gone before the mount was "
				 "%s: unmounting",
				 said_ok ? "acknowledged" : "ready");
			ifs_request_exit(ifs);
			break;
		}
		if (woken && !said_ok &&
		    __atomic_load_n(&ifs->ready, __ATOMIC_ACQUIRE)) {
			/* SIGPIPE is ignored: a launcher gone by now makes
			 * this fail, and the next poll finds it gone. */
			if (write(ifs->ready_fd, "ok\n", 3) == 3)
				said_ok = true;
		}
	}
	/* Exiting, or the launcher is gone: main reports (or not) after
	 * joining us, while ready_fd is still open. */
	return NULL;
}

int ifs_ready_watch_start(struct ifs *ifs)
{
	int ret;

	ifs->main_thread = pthread_self();
	if (ifs->ready_fd < 0)
		return 0;
	ifs->ready_wake_fd = eventfd(0, EFD_CLOEXEC);
	if (ifs->ready_wake_fd < 0)
		return -errno;
	ret = ifs_thread_start(&ifs->ready_thread, watch_main, ifs);
	if (ret < 0) {
		close(ifs->ready_wake_fd);
		ifs->ready_wake_fd = -1;
		return ret;
	}
	ifs->ready_watched = true;
	return 0;
}

void ifs_ready_watch_stop(struct ifs *ifs)
{
	if (!ifs->ready_watched)
		return;
	pthread_join(ifs->ready_thread, NULL);
	ifs->ready_watched = false;
	close(ifs->ready_wake_fd);
	ifs->ready_wake_fd = -1;
}

void ifs_signal_ready(struct ifs *ifs)
{
	uint64_t one = 1;
	int null_fd;

	if (ifs->opts->foreground) {
		log_info("%s mounted on %s", ifs->opts->image_abs,
			 ifs->opts->mountpoint_abs);
		return;
	}
	/* A signal during the first scan: the session is ending, and the
	 * launcher must hear that the mount is not there, not "ok". */
	if (!ifs->ready_watched || ifs_exiting(ifs))
		return;
	/* From here on nobody reads our stderr: log to syslog. */
	log_use_syslog(true, "imgfs");
	null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
	if (null_fd >= 0) {
		dup2(null_fd, STDIN_FILENO);
		dup2(null_fd, STDOUT_FILENO);
		dup2(null_fd, STDERR_FILENO);
		close(null_fd);
	}
	__atomic_store_n(&ifs->ready, true, __ATOMIC_RELEASE);
	if (write(ifs->ready_wake_fd, &one, sizeof(one)) < 0)
		log_warn("cannot wake the launcher's watcher: %s",
			 strerror(errno));
}

/* How long a stopping launcher waits for its daemon to unmount and exit
 * (the daemon's own bound from a signal to exit is far lower; this one
 * only keeps a daemon stuck in the kernel from holding the caller), and
 * how often it looks. */
#define LAUNCHER_STOP_WAIT_SEC 60L
#define LAUNCHER_STOP_SLICE_NSEC 5000000L

/* The signal that asked the launcher to stop (0: none yet). */
static volatile sig_atomic_t launcher_stop_signal;

static void on_launcher_signal(int sig)
{
	launcher_stop_signal = sig;
}

static const int launcher_signals[] = { SIGTERM, SIGINT, SIGHUP };

void ifs_launcher_block_signals(sigset_t *old_r)
{
	sigset_t set;

	sigemptyset(&set);
	for (size_t i = 0; i < sizeof(launcher_signals) / sizeof(int); i++)
		sigaddset(&set, launcher_signals[i]);
	sigprocmask(SIG_BLOCK, &set, old_r);
}

void ifs_launcher_catch_signals(const sigset_t *old)
{
	struct sigaction sa = { .sa_handler = on_launcher_signal };

	/* No SA_RESTART: the read below must see EINTR. The handler stays:
	 * a second signal (timeout's to the process group) must not kill us
	 * while the daemon unmounts. */
	sa.sa_flags = 0;
	sigemptyset(&sa.sa_mask);
	for (size_t i = 0; i < sizeof(launcher_signals) / sizeof(int); i++) {
		struct sigaction was;

		/* One ignored (nohup, a background job) stays ignored. */
		if (sigaction(launcher_signals[i], NULL, &was) == 0 &&
		    was.sa_handler == SIG_IGN)
			continue;
		sigaction(launcher_signals[i], &sa, NULL);
	}
	sigprocmask(SIG_SETMASK, old, NULL);
}

/* The launcher was told to stop before the mount was acknowledged: the
 * daemon sees our end close and unmounts; once it is gone we die of the
 * signal we got, as if we had not caught it. */
static int stop_launcher(pid_t pid, int fd)
{
	int sig = launcher_stop_signal, status;
	const struct timespec slice = { .tv_nsec = LAUNCHER_STOP_SLICE_NSEC };

	close(fd);
	for (long waited = 0; waited < LAUNCHER_STOP_WAIT_SEC * 1000000000L;
	     waited += LAUNCHER_STOP_SLICE_NSEC) {
		pid_t r = waitpid(pid, &status, WNOHANG);

		if (r == pid || (r < 0 && errno != EINTR))
			break;
		nanosleep(&slice, NULL);
	}
	signal(sig, SIG_DFL);
	raise(sig);
	return 128 + sig;
}

int ifs_launcher_wait(pid_t pid, int fd)
{
	char buf[1024];
	size_t len = 0;
	ssize_t n;
	int status;

	while (len < sizeof(buf) - 1) {
		if (launcher_stop_signal)
			return stop_launcher(pid, fd);
		n = read(fd, buf + len, sizeof(buf) - 1 - len);
		if (n == 0)
			break;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		len += (size_t)n;
		if (len == 3 && memcmp(buf, "ok\n", 3) == 0)
			break;
	}
	buf[len] = '\0';
	/* A signal between "ok" and here: not acknowledged, nothing stays. */
	if (launcher_stop_signal)
		return stop_launcher(pid, fd);
	if (strcmp(buf, "ok\n") == 0) {
		/* SIGPIPE is ignored here too (main): a daemon gone since
		 * "ok" makes the write fail. */
		if (write(fd, "ack\n", 4) == 4) {
			close(fd);
			return 0;
		}
		len = 0;
	}
	close(fd);
	if (len) {
		fputs(buf, stderr);
	} else {
		waitpid(pid, &status, 0);
		fprintf(stderr, "imgfs: the daemon exited before the mount "
			"was ready\n");
		return 1;
	}
	waitpid(pid, &status, 0);
	return 1;
}
