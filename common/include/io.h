/* io.h: all-or-nothing pread/pwrite on a file descriptor.
 *
 * Short counts are retried; EINTR is retried. A read that hits end of file
 * before len bytes fails with -EIO unless zero_fill_eof is used, which
 * fills the rest with zeroes (for raw images whose file is shorter than
 * the range asked, and qcow2 data clusters at the very end of a file).
 */
#ifndef IMGFS_COMMON_IO_H
#define IMGFS_COMMON_IO_H

#include <stddef.h>
#include <stdint.h>

/* 0 on success, -errno on failure, -EIO on a read past end of file. */
int full_pread(int fd, void *buf, size_t len, uint64_t off);
/* 0 on success; bytes past end of file read as zeroes. */
int full_pread_zero_eof(int fd, void *buf, size_t len, uint64_t off);
/* 0 on success, -errno on failure. */
int full_pwrite(int fd, const void *buf, size_t len, uint64_t off);
/* The same, with *done_r the bytes written before a failure (a full
 * disk: the caller keeps what fitted). */
int full_pwrite_count(int fd, const void *buf, size_t len, uint64_t off,
		      size_t *done_r);

#endif
