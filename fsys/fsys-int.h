/* fsys-int.h: what the filesystem drivers share with the dispatcher
 * (fsys.c). Only files in fsys/ include this.
 *
 * A driver is a table of operations. fsys.c tries each driver's open in
 * turn and forwards every call; drivers do their own locking (each
 * handle may be used from several threads at once).
 */
#ifndef IMGFS_FSYS_INT_H
#define IMGFS_FSYS_INT_H

#include "fsys.h"

#include <sys/types.h>

struct fsys_ops {
	const char *name;
	/* Cheap: true when the superblock area looks like this driver's. */
	bool (*probe)(struct img *img);
	/* Fills *priv_r with the driver's state. -EMEDIUMTYPE: not mine. */
	int (*open)(struct img *img, void **priv_r, struct img_err *err);
	void (*close)(void *priv);
	void (*get_info)(void *priv, struct fsys_info *info);
	uint64_t (*root_ino)(void *priv);
	int (*lookup)(void *priv, uint64_t dir, const char *name,
		      struct fsys_stat *st_r);
	int (*getattr)(void *priv, uint64_t ino, struct fsys_stat *st_r);
	int (*readdir)(void *priv, uint64_t dir, uint64_t cookie,
		       fsys_dirent_fn fn, void *ctx);
	ssize_t (*read)(void *priv, uint64_t ino, void *buf, size_t len,
			uint64_t off);
	ssize_t (*readlink)(void *priv, uint64_t ino, char *buf, size_t size);
	int (*seek)(void *priv, uint64_t ino, uint64_t off, int whence,
		    uint64_t *off_r);
	ssize_t (*listxattr)(void *priv, uint64_t ino, char *buf, size_t size);
	ssize_t (*getxattr)(void *priv, uint64_t ino, const char *name,
			    void *buf, size_t size);
	int (*statfs)(void *priv, struct statvfs *st_r);
};

extern const struct fsys_ops fsys_ext_ops;
extern const struct fsys_ops fsys_fat_ops;

#endif
