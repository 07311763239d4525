/* fsys.h: the public interface of the guest-filesystem layer.
 *
 * Reads the files of a filesystem that lies in an image handle (usually
 * a window: a partition, a volume, a whole disk), read-only: ext2/3/4
 * through libext2fs with an I/O manager of our own that reads through
 * imgfmt (no descriptor, no second FUSE hop), FAT12/16/32 with long names
 * through our own reader. A journal that needs recovery is replayed in
 * memory; the image is never written.
 *
 * Objects are named by a 64-bit inode number the driver chooses (ext: the
 * guest's inode number; FAT: derived from where the directory entry
 * lies). Numbers are stable while the handle is open, hard links share
 * one, and the root's is fsys_root_ino(). 0 is never an inode number.
 *
 * Every call is safe from several threads at once. Every fallible call
 * returns 0 (or a non-negative length) or -errno: -ENOENT for a missing
 * name, -ENOTDIR / -EISDIR / -EINVAL (readlink of a non-link) as POSIX
 * says, -EIO for a damaged object (the rest of the filesystem stays
 * readable), -ENODATA for a missing xattr, -ERANGE for a short buffer.
 * A damaged or hostile filesystem never makes a call read outside the
 * image handle, crash, loop or allocate without bound.
 */
#ifndef IMGFS_FSYS_H
#define IMGFS_FSYS_H

#include "imgfmt.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/statvfs.h>
#include <sys/types.h>
#include <time.h>

struct fsys;

struct fsys_stat {
	uint64_t ino;
	uint32_t mode;       /* S_IFMT bits and permissions, as the guest */
	uint32_t nlink;
	uint32_t uid, gid;
	uint64_t rdev;       /* makedev(major, minor) for device nodes */
	uint64_t size;       /* bytes (symlinks: the target's length) */
	uint64_t blocks;     /* 512-byte units really allocated */
	struct timespec atime, mtime, ctime;
	struct timespec btime; /* creation time; tv_sec 0 when unknown */
};

/* What an open filesystem is, for info and the xattrs of block files. */
struct fsys_info {
	char type[16];        /* "ext2", "ext3", "ext4", "vfat" */
	char label[64];
	char uuid[40];
	uint32_t block_size;
	/* A journal needed recovery and was replayed in memory: how many
	 * transactions (0: not replayed). */
	unsigned journal_transactions_replayed;
	/* Something the reader noticed but could live with, or "". */
	char warning[160];
};

/* Opens the filesystem in img (ext2/3/4 or FAT, found by its
 * superblock). img is borrowed: keep it open until fsys_close.
 * -EMEDIUMTYPE when img holds no filesystem this layer reads, -EIO (or
 * -EINVAL) when it is damaged past use, -ENOTSUP for a feature it cannot
 * read correctly; err says which, in one line naming the problem. */
int fsys_open(struct img *img, struct fsys **fs_r, struct img_err *err);
/* Accepts NULL. */
void fsys_close(struct fsys *fs);

/* True when img starts like a filesystem fsys_open would try (cheap:
 * reads the superblock area only). */
bool fsys_probe(struct img *img);

void fsys_get_info(struct fsys *fs, struct fsys_info *info);
uint64_t fsys_root_ino(struct fsys *fs);

/* Looks name up in directory dir; fills st of the entry. */
int fsys_lookup(struct fsys *fs, uint64_t dir, const char *name,
		struct fsys_stat *st_r);
int fsys_getattr(struct fsys *fs, uint64_t ino, struct fsys_stat *st_r);

/* Called for each directory entry; returns 0 to go on, non-zero to stop
 * (the entry is then not consumed: the next readdir starts at it).
 * next_cookie resumes the listing after this entry. type is the S_IFMT
 * bits of the entry (0 when the directory does not record it). "." and
 * ".." are not listed (the caller adds them). */
typedef int (*fsys_dirent_fn)(void *ctx, const char *name, uint64_t ino,
			      uint32_t type, uint64_t next_cookie);
/* Lists directory dir from cookie (0: the start), streaming: nothing
 * proportional to the directory's size is held in memory. */
int fsys_readdir(struct fsys *fs, uint64_t dir, uint64_t cookie,
		 fsys_dirent_fn fn, void *ctx);

/* Reads [off, off + len) of a regular file; returns the bytes read,
 * short only at the end of the file (0 at or past it). Holes read as
 * zeroes. -EISDIR for a directory, -EINVAL for other types. */
ssize_t fsys_read(struct fsys *fs, uint64_t ino, void *buf, size_t len,
		  uint64_t off);
/* The target of a symbolic link, NUL-terminated; -ERANGE if it does not
 * fit in size bytes. Returns its length. */
ssize_t fsys_readlink(struct fsys *fs, uint64_t ino, char *buf, size_t size);

/* SEEK_DATA / SEEK_HOLE in a regular file, as lseek(2) answers them:
 * -ENXIO at or past the end (SEEK_DATA with no data after off). */
int fsys_seek(struct fsys *fs, uint64_t ino, uint64_t off, int whence,
	      uint64_t *off_r);

/* Extended attributes as the kernel shows them (names with their
 * namespace prefix: "user.x", "security.selinux", "system.posix_acl_access"
 * in the kernel's binary ACL format). With size 0 they return the length
 * needed; otherwise the bytes copied, or -ERANGE. listxattr gives the
 * names NUL-separated, as listxattr(2). */
ssize_t fsys_listxattr(struct fsys *fs, uint64_t ino, char *buf,
		       size_t size);
ssize_t fsys_getxattr(struct fsys *fs, uint64_t ino, const char *name,
		      void *buf, size_t size);

/* Sizes and counts from the superblock. */
int fsys_statfs(struct fsys *fs, struct statvfs *st_r);

#endif
