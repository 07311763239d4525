/* io.c: see io.h. */
#include "io.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static int pread_loop(int fd, void *buf, size_t len, uint64_t off,
		      int zero_fill)
{
	char *p = buf;

	while (len > 0) {
		ssize_t n = pread(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (n == 0) {
			if (!zero_fill)
				return -EIO;
			memset(p, 0, len);
			return 0;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
	}
	return 0;
}

int full_pread(int fd, void *buf, size_t len, uint64_t off)
{
	return pread_loop(fd, buf, len, off, 0);
}

int full_pread_zero_eof(int fd, void *buf, size_t len, uint64_t off)
{
	return pread_loop(fd, buf, len, off, 1);
}

int full_pwrite_count(int fd, const void *buf, size_t len, uint64_t off,
		      size_t *done_r)
{
	const char *p = buf;

	*done_r = 0;
	while (len > 0) {
		ssize_t n = pwrite(fd, p, len, (off_t)off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += n;
		len -= (size_t)n;
		off += (uint64_t)n;
		*done_r += (size_t)n;
	}
	return 0;
}

int full_pwrite(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done;

	return full_pwrite_count(fd, buf, len, off, &done);
}
