/* lock.c: the image-file locks QEMU takes, so imgfs and QEMU (qemu-img,
 * qemu-io, qemu-storage-daemon, a running VM) never write one image at
 * the same time.
 *
 * QEMU's file driver expresses "permissions" as open-file-description
 * (OFD) read locks on single bytes of the image file:
 *   byte 100 + i  held: this opener uses permission i
 *   byte 200 + i  held: this opener does not let others use permission i
 * with i = 0 consistent read, 1 write, 2 write-unchanged, 3 resize.
 * An opener that wants permission i fails when another holds 200 + i,
 * and one that refuses to share i fails when another holds 100 + i.
 * OFD locks are per open file, so they survive fork() and threads, and a
 * killed process drops them.
 *
 * We take what QEMU takes for a format node: readers use consistent-read
 * and refuse writers (metadata could change under them); writers use
 * read, write and write-unchanged and also refuse other writers. Locks
 * are taken first and checked after, so two openers racing both see each
 * other. Files whose filesystem has no OFD locks are used unlocked.
 */
#include "imgfmt-int.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>

#define LOCK_PERM_BASE 100
#define LOCK_SHARED_BASE 200

enum {
	PERM_CONSISTENT_READ = 1 << 0,
	PERM_WRITE = 1 << 1,
	PERM_WRITE_UNCHANGED = 1 << 2,
	PERM_RESIZE = 1 << 3,
	PERM_ALL = (1 << 4) - 1,
};

static const char *const perm_names[] = {
	"consistent read", "write", "write unchanged", "resize",
};

static int lock_byte(int fd, short type, off_t byte)
{
	struct flock fl = {
		.l_type = type,
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
	};

	return fcntl(fd, F_OFD_SETLK, &fl) < 0 ? -errno : 0;
}

/* True when another open file holds a lock on byte. */
static int byte_taken(int fd, off_t byte, bool *taken_r)
{
	struct flock fl = {
		.l_type = F_WRLCK,
		.l_whence = SEEK_SET,
		.l_start = byte,
		.l_len = 1,
	};

	if (fcntl(fd, F_OFD_GETLK, &fl) < 0)
		return -errno;
	*taken_r = fl.l_type != F_UNLCK;
	return 0;
}

int img_lock_file(int fd, const char *path, bool write, struct img_err *err)
{
	unsigned perms = PERM_CONSISTENT_READ;
	unsigned shared = PERM_ALL & ~(PERM_WRITE | PERM_RESIZE);
	int ret;

	if (write)
		perms |= PERM_WRITE | PERM_WRITE_UNCHANGED;

	for (unsigned i = 0; i < 4; i++) {
		ret = 0;
		if (perms & (1u << i))
			ret = lock_byte(fd, F_RDLCK, LOCK_PERM_BASE + i);
		if (!ret && !(shared & (1u << i)))
			ret = lock_byte(fd, F_RDLCK, LOCK_SHARED_BASE + i);
		if (ret == -EINVAL || ret == -ENOLCK || ret == -EOPNOTSUPP)
			return 0; /* no OFD locks here: go on unlocked */
		if (ret == -EAGAIN || ret == -EACCES)
			break; /* someone holds a write lock: a conflict */
		if (ret < 0)
			return img_err(err, ret, "%s: cannot lock: %s", path,
				       strerror(-ret));
	}

	for (unsigned i = 0; i < 4; i++) {
		bool taken = false;

		if ((perms & (1u << i)) &&
		    (ret = byte_taken(fd, LOCK_SHARED_BASE + i, &taken)) == 0 &&
		    taken)
			return img_err(err, -EBUSY, "%s: in use by another "
				       "process that does not allow %s "
				       "access (a running QEMU or qemu-img?)",
				       path, perm_names[i]);
		if (!(shared & (1u << i)) &&
		    (ret = byte_taken(fd, LOCK_PERM_BASE + i, &taken)) == 0 &&
		    taken)
			return img_err(err, -EBUSY, "%s: in use by another "
				       "process that has it open for %s (a "
				       "running QEMU or qemu-img?)%s",
				       path, perm_names[i],
				       write ? "" : "; it cannot be read "
				       "consistently while it changes");
	}
	return 0;
}
