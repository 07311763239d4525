/* regress.h: what the unit tests that replay fuzz reproducers share.
 *
 * UNDER_ASAN says whether the test runs under AddressSanitizer (which
 * reserves terabytes of shadow memory, so address-space limits and short
 * alarms do not apply), and for_each_regress_file walks the saved
 * reproducers of one fuzz target, tests/fuzz/regress/TARGET/, found
 * through $SRCDIR (set by meson).
 */
#ifndef IMGFS_TESTS_UNIT_REGRESS_H
#define IMGFS_TESTS_UNIT_REGRESS_H

#include <assert.h>
#include <dirent.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

/* Reads up to cap bytes of the file at path into buf; returns how many. */
static inline size_t regress_read(const char *path, uint8_t *buf, size_t cap)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	assert(fd >= 0);
	n = read(fd, buf, cap);
	assert(n >= 0);
	close(fd);
	return (size_t)n;
}

/* Calls replay(path) for every reproducer of target; returns how many
 * (0 when $SRCDIR is unset or the folder does not exist). */
static inline size_t for_each_regress_file(const char *target,
					   void (*replay)(const char *path))
{
	const char *src = getenv("SRCDIR");
	char dir[4096], path[4400];
	struct dirent *de;
	size_t nb = 0;
	DIR *d;

	if (!src)
		return 0;
	snprintf(dir, sizeof(dir), "%s/tests/fuzz/regress/%s", src, target);
	d = opendir(dir);
	if (!d)
		return 0;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		replay(path);
		nb++;
	}
	closedir(d);
	return nb;
}

#endif
