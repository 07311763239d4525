/* fsys.c: the dispatcher behind fsys.h.
 *
 * Picks the driver whose probe recognises the superblock and forwards
 * each call to it. A NULL op answers as a filesystem without that
 * feature would: no xattrs, no holes, ENOSYS-like -ENOTSUP elsewhere.
 */
#include "fsys-int.h"

#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

struct fsys {
	const struct fsys_ops *ops;
	void *priv;
};

static const struct fsys_ops *const drivers[] = {
	&fsys_ext_ops,
	&fsys_fat_ops,
};
#define NB_DRIVERS (sizeof(drivers) / sizeof(drivers[0]))

bool fsys_probe(struct img *img)
{
	for (size_t i = 0; i < NB_DRIVERS; i++)
		if (drivers[i]->probe && drivers[i]->probe(img))
			return true;
	return false;
}

int fsys_open(struct img *img, struct fsys **fs_r, struct img_err *err)
{
	struct fsys *fs;
	int ret;

	for (size_t i = 0; i < NB_DRIVERS; i++) {
		const struct fsys_ops *ops = drivers[i];
		void *priv = NULL;

		if (!ops->probe || !ops->probe(img))
			continue;
		ret = ops->open(img, &priv, err);
		if (ret == -EMEDIUMTYPE)
			continue;
		if (ret < 0)
			return ret;
		fs = calloc(1, sizeof(*fs));
		if (!fs) {
			ops->close(priv);
			return img_err(err, -ENOMEM, "out of memory");
		}
		fs->ops = ops;
		fs->priv = priv;
		*fs_r = fs;
		return 0;
	}
	return img_err(err, -EMEDIUMTYPE,
		       "no filesystem imgfs reads (ext2/3/4, FAT)");
}

void fsys_close(struct fsys *fs)
{
	if (!fs)
		return;
	fs->ops->close(fs->priv);
	free(fs);
}

void fsys_get_info(struct fsys *fs, struct fsys_info *info)
{
	*info = (struct fsys_info){ 0 };
	fs->ops->get_info(fs->priv, info);
}

uint64_t fsys_root_ino(struct fsys *fs)
{
	return fs->ops->root_ino(fs->priv);
}

int fsys_lookup(struct fsys *fs, uint64_t dir, const char *name,
		struct fsys_stat *st_r)
{
	return fs->ops->lookup(fs->priv, dir, name, st_r);
}

int fsys_getattr(struct fsys *fs, uint64_t ino, struct fsys_stat *st_r)
{
	return fs->ops->getattr(fs->priv, ino, st_r);
}

int fsys_readdir(struct fsys *fs, uint64_t dir, uint64_t cookie,
		 fsys_dirent_fn fn, void *ctx)
{
	return fs->ops->readdir(fs->priv, dir, cookie, fn, ctx);
}

ssize_t fsys_read(struct fsys *fs, uint64_t ino, void *buf, size_t len,
		  uint64_t off)
{
	return fs->ops->read(fs->priv, ino, buf, len, off);
}

ssize_t fsys_readlink(struct fsys *fs, uint64_t ino, char *buf, size_t size)
{
	return fs->ops->readlink(fs->priv, ino, buf, size);
}

/* Without a seek op a file is all data: SEEK_DATA stays, SEEK_HOLE goes
 * to the end. */
int fsys_seek(struct fsys *fs, uint64_t ino, uint64_t off, int whence,
	      uint64_t *off_r)
{
	struct fsys_stat st;
	int ret;

	if (fs->ops->seek)
		return fs->ops->seek(fs->priv, ino, off, whence, off_r);
	ret = fsys_getattr(fs, ino, &st);
	if (ret < 0)
		return ret;
	if (off >= st.size)
		return -ENXIO;
	if (whence == SEEK_DATA)
		*off_r = off;
	else if (whence == SEEK_HOLE)
		*off_r = st.size;
	else
		return -EINVAL;
	return 0;
}

ssize_t fsys_listxattr(struct fsys *fs, uint64_t ino, char *buf, size_t size)
{
	if (!fs->ops->listxattr)
		return 0;
	return fs->ops->listxattr(fs->priv, ino, buf, size);
}

ssize_t fsys_getxattr(struct fsys *fs, uint64_t ino, const char *name,
		      void *buf, size_t size)
{
	if (!fs->ops->getxattr)
		return -ENODATA;
	return fs->ops->getxattr(fs->priv, ino, name, buf, size);
}

int fsys_statfs(struct fsys *fs, struct statvfs *st_r)
{
	return fs->ops->statfs(fs->priv, st_r);
}
