/* main.c: imgfs, the daemon: check, open, mount, serve.
 *
 * Order matters, and each step has a reason:
 *  1. Parse options, resolve IMAGE and MOUNTPOINT to absolute paths (the
 *     daemon changes to /), and check the mountpoint ourselves so each
 *     mistake gets its own one-line message.
 *  2. Open the image before anything else can fail less clearly.
 *  3. Without -f, fork while no thread exists (fuse_daemonize returns to
 *     the shell too early). The parent waits on a socket pair (ready.c):
 *     the child writes "ok" once the tree is readable and the parent
 *     acknowledges it, or the child writes one error line after it has
 *     unmounted again and the parent prints it. A parent gone before
 *     its acknowledgment makes the child unmount and exit.
 *  4. The child mounts, starts the scanner thread (scan.c), then runs the
 *     multi-threaded loop. When the loop ends it unmounts *before*
 *     joining the scanner, which may be blocked on the mount.
 */
#include "ifs.h"
#include "cli.h"

#include "log.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

/* The first message libfuse logs while we are not yet serving, so the
 * one error line can include its reason. */
static char fuse_first_msg[256];
static bool serving;

static void fuse_log_to_ours(enum fuse_log_level level, const char *fmt,
			     va_list ap)
{
	char line[512];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n && line[n - 1] == '\n')
		line[--n] = '\0';
	if (!serving && !fuse_first_msg[0])
		snprintf(fuse_first_msg, sizeof(fuse_first_msg), "%s", line);
	if (serving || level <= FUSE_LOG_ERR)
		log_msg((int)level, "%s", line);
}

/* Prints one error line: to stderr, or to the waiting parent. */
static void report_error(struct ifs *ifs, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

static void report_error(struct ifs *ifs, const char *fmt, ...)
{
	char line[1024];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (ifs->ready_fd >= 0) {
		dprintf(ifs->ready_fd, "imgfs: %s\n", line);
		close(ifs->ready_fd);
		ifs->ready_fd = -1;
	} else {
		fprintf(stderr, "imgfs: %s\n", line);
	}
}

/* One message per mountpoint mistake, checked before anything mounts. */
static int check_mountpoint(struct ifs_options *opts)
{
	struct statx stx;

	/* FORCE_SYNC: a dead FUSE mount answers a cached stat, but we want
	 * its ENOTCONN. */
	if (statx(AT_FDCWD, opts->mountpoint, AT_STATX_FORCE_SYNC,
		  STATX_TYPE | STATX_BASIC_STATS, &stx) < 0) {
		int e = errno;
		if (e == ENOTCONN)
			fprintf(stderr, "imgfs: mountpoint %s: %s (a mount "
				"whose daemon died; run fusermount3 -u %s)\n",
				opts->mountpoint, strerror(e),
				opts->mountpoint);
		else
			fprintf(stderr, "imgfs: mountpoint %s: %s\n",
				opts->mountpoint, strerror(e));
		return -e;
	}
	if (!S_ISDIR(stx.stx_mode)) {
		fprintf(stderr, "imgfs: mountpoint %s: %s\n", opts->mountpoint,
			strerror(ENOTDIR));
		return -ENOTDIR;
	}
	if ((stx.stx_attributes_mask & STATX_ATTR_MOUNT_ROOT) &&
	    (stx.stx_attributes & STATX_ATTR_MOUNT_ROOT)) {
		fprintf(stderr, "imgfs: mountpoint %s is already a mount "
			"point\n", opts->mountpoint);
		return -EBUSY;
	}
	if (access(opts->mountpoint, W_OK) < 0 && getuid() != 0) {
		fprintf(stderr, "imgfs: mountpoint %s: %s\n", opts->mountpoint,
			strerror(errno));
		return -EACCES;
	}
	opts->mountpoint_abs = realpath(opts->mountpoint, NULL);
	if (!opts->mountpoint_abs) {
		fprintf(stderr, "imgfs: mountpoint %s: %s\n", opts->mountpoint,
			strerror(errno));
		return -errno;
	}
	return 0;
}

/* allow_other needs user_allow_other in /etc/fuse.conf unless root;
 * say so ourselves rather than leaving it to fusermount3's two lines. */
static int check_allow_other(const struct ifs_options *opts)
{
	char line[256];
	bool allowed = false;
	FILE *f;

	if (!opts->allow_other || getuid() == 0)
		return 0;
	f = fopen("/etc/fuse.conf", "re");
	while (f && fgets(line, sizeof(line), f))
		if (strncmp(line, "user_allow_other", 16) == 0)
			allowed = true;
	if (f)
		fclose(f);
	if (allowed)
		return 0;
	fprintf(stderr, "imgfs: -o allow_other needs 'user_allow_other' in "
		"/etc/fuse.conf (or mount as root)\n");
	return -EPERM;
}

static int open_image(struct ifs *ifs)
{
	struct ifs_options *opts = ifs->opts;
	struct img_open_opts io = {
		.format = opts->format,
		.read_only = opts->read_only,
		.backing = opts->backing,
		.cache_bytes = opts->cache_bytes,
		.disk = opts->disk,
	};
	struct img_err err;
	int ret;

	ret = img_open(opts->image_abs, &io, &ifs->img, &err);
	/* Right after fusermount3 -u returns, the previous daemon may still
	 * be on its way out holding the image lock: give it a moment before
	 * calling the image busy. */
	for (int tries = 0; ret == -EBUSY && tries < 20; tries++) {
		usleep(100 * 1000);
		ret = img_open(opts->image_abs, &io, &ifs->img, &err);
	}
	if (ret == -EACCES || ret == -EROFS || ret == -EPERM) {
		/* A read-only file or filesystem: serve it read-only, as a
		 * read-only block device would be, rather than refuse. */
		if (!opts->read_only && ret != -EPERM) {
			io.read_only = true;
			ret = img_open(opts->image_abs, &io, &ifs->img, &err);
			if (ret == 0)
				fprintf(stderr, "imgfs: %s is not writable; "
					"mounting read-only\n", opts->image);
		}
	}
	if (ret < 0) {
		fprintf(stderr, "imgfs: %s\n", err.msg);
		return ret;
	}
	if (fstat(img_fd(ifs->img), &ifs->image_st) < 0)
		memset(&ifs->image_st, 0, sizeof(ifs->image_st));
	return 0;
}

/* Escapes ',' and '\' for libfuse's -o parser. */
static void append_escaped(char *dst, size_t size, const char *src)
{
	size_t n = strlen(dst);

	for (; *src && n + 2 < size; src++) {
		if (*src == ',' || *src == '\\')
			dst[n++] = '\\';
		dst[n++] = *src;
	}
	dst[n] = '\0';
}

static struct fuse_session *new_session(struct ifs *ifs)
{
	struct ifs_options *opts = ifs->opts;
	char mount_opts[1024 + PATH_MAX] = "fsname=";
	char *argv[5];
	int argc = 0;
	struct fuse_args args;
	struct fuse_session *se;

	append_escaped(mount_opts, sizeof(mount_opts), opts->image_abs);
	strncat(mount_opts, ",subtype=imgfs",
		sizeof(mount_opts) - strlen(mount_opts) - 1);
	if (opts->read_only || !img_writable(ifs->img))
		strncat(mount_opts, ",ro",
			sizeof(mount_opts) - strlen(mount_opts) - 1);
	if (opts->allow_other)
		strncat(mount_opts, ",allow_other",
			sizeof(mount_opts) - strlen(mount_opts) - 1);
	if (opts->kernel_opts[0]) {
		strncat(mount_opts, ",",
			sizeof(mount_opts) - strlen(mount_opts) - 1);
		strncat(mount_opts, opts->kernel_opts,
			sizeof(mount_opts) - strlen(mount_opts) - 1);
	}
	/* Guest set-user-ID bits and device nodes under files/ are never
	 * honoured, whatever the options said. */
	strncat(mount_opts, ",nosuid,nodev",
		sizeof(mount_opts) - strlen(mount_opts) - 1);
	argv[argc++] = "imgfs";
	argv[argc++] = "-o";
	argv[argc++] = mount_opts;
	if (opts->debug)
		argv[argc++] = "-d";
	argv[argc] = NULL;
	args = (struct fuse_args)FUSE_ARGS_INIT(argc, argv);
	se = fuse_session_new(&args, &ifs_ops, sizeof(ifs_ops), ifs);
	fuse_opt_free_args(&args);
	return se;
}

/* Mounts with stderr captured: fusermount3 (run for unprivileged users)
 * prints its reasons there, and we want them in our one line. */
static int mount_session(struct ifs *ifs, char *why, size_t why_len)
{
	FILE *capture = tmpfile();
	int saved = dup(STDERR_FILENO);
	int ret;

	if (capture && saved >= 0)
		dup2(fileno(capture), STDERR_FILENO);
	ret = fuse_session_mount(ifs->se, ifs->opts->mountpoint_abs);
	if (capture && saved >= 0) {
		dup2(saved, STDERR_FILENO);
		rewind(capture);
		why[0] = '\0';
		while (fgets(why, (int)why_len, capture))
			if (why[0] != '\n')
				break;
		why[strcspn(why, "\n")] = '\0';
	}
	if (saved >= 0)
		close(saved);
	if (capture)
		fclose(capture);
	return ret;
}

static int serve(struct ifs *ifs)
{
	struct fuse_loop_config *cfg;
	char why[512] = "";
	int ret;

	ifs->uid = getuid();
	ifs->gid = getgid();
	ret = ifs_views_init(ifs);
	if (ret < 0) {
		report_error(ifs, "%s: cannot read its snapshots: %s",
			     ifs->opts->image, strerror(-ret));
		return 1;
	}
	ifs->se = new_session(ifs);
	if (!ifs->se) {
		report_error(ifs, "cannot start the FUSE session%s%s",
			     fuse_first_msg[0] ? ": " : "", fuse_first_msg);
		return 1;
	}
	/* A daemon started from a script's background job inherits SIGINT
	 * ignored (shells without job control do that), and libfuse only
	 * handles signals still at their default: the mount would outlive
	 * kill -INT. INT and TERM always end the daemon; an ignored SIGHUP
	 * (nohup) stays ignored. */
	signal(SIGINT, SIG_DFL);
	signal(SIGTERM, SIG_DFL);
	if (fuse_set_signal_handlers(ifs->se) < 0) {
		report_error(ifs, "cannot install signal handlers");
		fuse_session_destroy(ifs->se);
		return 1;
	}
	if (mount_session(ifs, why, sizeof(why)) != 0) {
		const char *reason = why[0] ? why : fuse_first_msg;
		if (strncmp(reason, "fusermount3: ", 13) == 0)
			reason += 13;
		report_error(ifs, "cannot mount on %s%s%s",
			     ifs->opts->mountpoint, reason[0] ? ": " : "",
			     reason);
		fuse_remove_signal_handlers(ifs->se);
		fuse_session_destroy(ifs->se);
		return 1;
	}
	ret = ifs_ready_watch_start(ifs);
	if (!ret)
		ret = ifs_scan_start(ifs);
	if (ret < 0) {
		ifs_ready_watch_stop(ifs);
		fuse_session_unmount(ifs->se);
		report_error(ifs, "cannot start the partition scanner: %s",
			     strerror(-ret));
		fuse_remove_signal_handlers(ifs->se);
		fuse_session_destroy(ifs->se);
		return 1;
	}

	cfg = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(cfg, 1);
	fuse_loop_cfg_set_max_threads(cfg, 16);
	ret = fuse_session_loop_mt(ifs->se, cfg);
	__atomic_store_n(&ifs->loop_ended, true, __ATOMIC_RELEASE);
	fuse_loop_cfg_destroy(cfg);

	/* Unmount first: the scanner may be blocked in a read on the
	 * mount, and only the unmount releases it. */
	fuse_session_unmount(ifs->se);
	ifs_scan_stop(ifs);
	ifs_ready_watch_stop(ifs);
	if (ifs->ready_fd >= 0)
		report_error(ifs, "the mount ended before it was ready");
	fuse_remove_signal_handlers(ifs->se);
	fuse_session_destroy(ifs->se);
	return ret < 0 ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct ifs_options opts;
	struct ifs ifs = { .opts = &opts, .ready_fd = -1, .ready_wake_fd = -1 };
	int ret, pipe_fds[2];
	sigset_t old_mask;
	pid_t pid;

	/* imgfs COMMAND ... reads without FUSE; imgfs mount IMAGE MNT and
	 * imgfs IMAGE MNT mount. */
	if (argc >= 2 && cli_is_command(argv[1]))
		return cli_main(argc - 1, argv + 1);
	if (argc >= 2 && strcmp(argv[1], "mount") == 0) {
		argv[1] = argv[0];
		argc--;
		argv++;
	}

	ret = ifs_parse_options(argc, argv, &opts);
	if (ret != 0)
		return ret > 0 ? 0 : 1;
	fuse_set_log_func(fuse_log_to_ours);
	if (opts.debug)
		log_set_level(LOG_DEBUG);

	opts.image_abs = realpath(opts.image, NULL);
	if (!opts.image_abs) {
		fprintf(stderr, "imgfs: %s: %s\n", opts.image, strerror(errno));
		return 1;
	}
	if (check_mountpoint(&opts) < 0 || check_allow_other(&opts) < 0) {
		ifs_free_options(&opts);
		return 1;
	}
	if (open_image(&ifs) < 0) {
		ifs_free_options(&opts);
		return 1;
	}

	if (!opts.foreground) {
		if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0,
			       pipe_fds) < 0) {
			fprintf(stderr, "imgfs: socketpair: %s\n",
				strerror(errno));
			return 1;
		}
		ifs_launcher_block_signals(&old_mask);
		pid = fork();
		if (pid < 0) {
			fprintf(stderr, "imgfs: fork: %s\n", strerror(errno));
			return 1;
		}
		if (pid > 0) {
			/* The child keeps the image open (and its locks: OFD
			 * locks live while any descriptor of the open file
			 * does), so the parent can let go of everything. */
			close(pipe_fds[1]);
			img_close(ifs.img);
			ifs_free_options(&opts);
			/* The acknowledgment to a daemon that died meanwhile
			 * must fail, not kill us. */
			signal(SIGPIPE, SIG_IGN);
			ifs_launcher_catch_signals(&old_mask);
			return ifs_launcher_wait(pid, pipe_fds[0]);
		}
		close(pipe_fds[0]);
		ifs.ready_fd = pipe_fds[1];
		/* The launcher's stderr gets one line: the error that stops
		 * the mount (report_error, through the pipe) or nothing.
		 * Warnings on the way (a snapshot that cannot be shown, a
		 * filesystem that cannot be read) go to the log. */
		if (!opts.debug)
			log_use_syslog(true, "imgfs");
		/* Out of the launcher's process group before any signal
		 * gets through: timeout(1) signals the whole group. */
		setsid();
		sigprocmask(SIG_SETMASK, &old_mask, NULL);
		if (chdir("/") < 0)
			log_warn("chdir /: %s", strerror(errno));
		/* Don't die when the parent's terminal goes away. */
		signal(SIGPIPE, SIG_IGN);
	}

	ret = serve(&ifs);
	ifs_views_free(&ifs);
	img_close(ifs.img);
	ifs_free_options(&opts);
	return ret;
}
