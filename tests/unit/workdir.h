/* workdir.h: the test's scratch folder, for the unit tests that build
 * images there with qemu-img. The including file defines
 *   static char dir[] = "/tmp/test-NAME-XXXXXX";
 * (made with mkdtemp) before including this header. The helpers are
 * inline so that a test using only some of them builds without warnings.
 * sh and sh_status run shell commands (qemu-img, qemu-io, mkfs) there.
 */
#ifndef IMGFS_TESTS_WORKDIR_H
#define IMGFS_TESTS_WORKDIR_H

#include <assert.h>
#include <stdbool.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* The shell command fmt, ... run in dir, its output thrown away; the
 * command's exit status (-1 if it did not exit). quiet also drops what
 * it prints on stderr. */
static inline int workdir_run(bool quiet, const char *fmt, va_list ap)
{
	char *cmd, *full;
	int ret;

	assert(vasprintf(&cmd, fmt, ap) > 0);
	assert(asprintf(&full, "cd %s && { %s\n} >/dev/null%s", dir, cmd,
			quiet ? " 2>&1" : "") > 0);
	ret = system(full);
	if (!quiet && ret != 0) {
		fprintf(stderr, "command failed (%d): %s\n", ret, cmd);
		abort();
	}
	free(full);
	free(cmd);
	return WIFEXITED(ret) ? WEXITSTATUS(ret) : -1;
}

/* Runs a command that must succeed (its stderr shows in the test log);
 * any failure fails the test. */
static inline void sh(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static inline void sh(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	workdir_run(false, fmt, ap);
	va_end(ap);
}

/* Runs a command whose outcome the test looks at: its exit status, all
 * of its output thrown away. */
static inline int sh_status(const char *fmt, ...)
	__attribute__((format(printf, 1, 2)));
static inline int sh_status(const char *fmt, ...)
{
	va_list ap;
	int ret;

	va_start(ap, fmt);
	ret = workdir_run(true, fmt, ap);
	va_end(ap);
	return ret;
}

/* dir/name, malloc'ed. */
static inline char *path_of(const char *name)
{
	char *p;

	assert(asprintf(&p, "%s/%s", dir, name) > 0);
	return p;
}

/* The whole of dir/name, malloc'ed (one byte more, so that an empty file
 * still gives a buffer); its length in *len_r. */
static inline uint8_t *slurp(const char *name, size_t *len_r)
{
	char *p = path_of(name);
	struct stat st;
	uint8_t *buf;
	int fd = open(p, O_RDONLY);

	assert(fd >= 0);
	assert(fstat(fd, &st) == 0);
	buf = malloc((size_t)st.st_size + 1);
	assert(buf);
	assert(pread(fd, buf, (size_t)st.st_size, 0) == st.st_size);
	close(fd);
	free(p);
	*len_r = (size_t)st.st_size;
	return buf;
}

#endif
