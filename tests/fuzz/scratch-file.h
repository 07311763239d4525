/* scratch-file.h: the one scratch image file of a fuzzing process.
 *
 * imgfmt opens images by path (it realpath()s them), so each input is
 * written to a file in /dev/shm named after the target and the process,
 * reused for every input and removed at exit. Included by one target
 * per translation unit: the state is static.
 */
#ifndef IMGFS_TESTS_FUZZ_SCRATCH_FILE_H
#define IMGFS_TESTS_FUZZ_SCRATCH_FILE_H

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

static char scratch_path[96];
static int scratch_fd = -1;

static void scratch_cleanup(void)
{
	if (scratch_fd >= 0) {
		close(scratch_fd);
		unlink(scratch_path);
		scratch_fd = -1;
	}
}

/* Returns the fd of the scratch file /dev/shm/NAME-PID.img, created on
 * first use; its path is scratch_path. */
static int scratch_open(const char *name)
{
	if (scratch_fd >= 0)
		return scratch_fd;
	snprintf(scratch_path, sizeof(scratch_path), "/dev/shm/%s-%d.img",
		 name, (int)getpid());
	scratch_fd = open(scratch_path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
			  0600);
	if (scratch_fd < 0) {
		perror(scratch_path);
		abort();
	}
	atexit(scratch_cleanup);
	return scratch_fd;
}

#endif
