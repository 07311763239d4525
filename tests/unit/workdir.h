/* workdir.h: the test's scratch folder, for the unit tests that build
 * images there with qemu-img. The including file defines
 *   static char dir[] = "/tmp/test-NAME-XXXXXX";
 * (made with mkdtemp) before including this header. The helpers are
 * inline so that a test using only some of them builds without warnings.
 */
#ifndef IMGFS_TESTS_WORKDIR_H
#define IMGFS_TESTS_WORKDIR_H

#include <assert.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

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
