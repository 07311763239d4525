/* img.c: the dispatcher behind imgfmt.h.
 *
 * Opens a file, picks a driver (probe.c) and forwards each call to the
 * driver's op after the generic checks: range inside the virtual disk
 * without wrapping, read-only, and NULL ops as -ENOTSUP. Block status for
 * a range a layer does not allocate is answered by walking down the
 * backing chain here, so drivers only describe their own layer.
 */
#include "imgfmt-int.h"

#include "checked.h"
#include "cleanup.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int img_err(struct img_err *err, int errnum, const char *fmt, ...)
{
	va_list ap;

	if (err) {
		err->errnum = errnum;
		va_start(ap, fmt);
		vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
		va_end(ap);
	}
	return errnum;
}

const char *img_err_reason(const struct img_err *err, const struct img *img)
{
	size_t path_len = strlen(img->path);

	if (strncmp(err->msg, img->path, path_len) == 0 &&
	    strncmp(err->msg + path_len, ": ", 2) == 0)
		return err->msg + path_len + 2;
	return err->msg;
}

struct img *img_alloc(const struct img_open_opts *opts)
{
	struct img *img = calloc(1, sizeof(*img));

	if (!img)
		return NULL;
	img->fd = -1;
	if (opts)
		img->opts = *opts;
	if (!img->opts.cache_bytes)
		img->opts.cache_bytes = IMG_DEFAULT_CACHE_BYTES;
	return img;
}

void img_free_handle(struct img *img)
{
	if (!img)
		return;
	if (img->fd >= 0 && !img->shares_fd)
		close(img->fd);
	free(img->path);
	free(img->real_path);
	free(img->trusted_dir);
	free(img);
}

void img_info_add(struct img_info *info, const char *key, const char *fmt,
		  ...)
{
	va_list ap;

	if (info->nb_fields >= sizeof(info->fields) / sizeof(info->fields[0]))
		return;
	snprintf(info->fields[info->nb_fields].key,
		 sizeof(info->fields[0].key), "%s", key);
	va_start(ap, fmt);
	vsnprintf(info->fields[info->nb_fields].value,
		  sizeof(info->fields[0].value), fmt, ap);
	va_end(ap);
	info->nb_fields++;
}

/* Every driver, indexed by enum img_format. */
static const struct img_ops *const drivers[IMG_FORMAT_COUNT] = {
	[IMG_FORMAT_RAW]   = &img_raw_ops,
	[IMG_FORMAT_QCOW2] = &img_qcow2_ops,
	[IMG_FORMAT_VMDK]  = &img_vmdk_ops,
	[IMG_FORMAT_VPC]   = &img_vpc_ops,
	[IMG_FORMAT_VHDX]  = &img_vhdx_ops,
	[IMG_FORMAT_VDI]   = &img_vdi_ops,
	[IMG_FORMAT_OVA]   = &img_ova_ops,
};

const struct img_ops *img_driver(enum img_format fmt)
{
	if ((unsigned)fmt >= IMG_FORMAT_COUNT || !drivers[fmt])
		return &img_raw_ops;
	return drivers[fmt];
}

int img_format_from_name(const char *name, enum img_format *fmt_r)
{
	if (strcmp(name, "vhd") == 0) {
		*fmt_r = IMG_FORMAT_VPC;
		return 0;
	}
	for (unsigned f = IMG_FORMAT_RAW; f < IMG_FORMAT_COUNT; f++) {
		if (drivers[f] && strcmp(drivers[f]->name, name) == 0) {
			*fmt_r = (enum img_format)f;
			return 0;
		}
	}
	return -EINVAL;
}

const char *img_format_names(void)
{
	return "raw, qcow2, vmdk, vpc (vhd), vhdx, vdi, ova";
}

int img_open_disk_file(const char *path, bool read_only, int *fd_r,
		       const char **why_r)
{
	struct stat st;
	int fd, e;

	/* O_NONBLOCK keeps open() itself from waiting: for a writer on a
	 * FIFO, for a carrier on a serial line. */
	fd = open(path, (read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC |
				O_NONBLOCK | O_NOCTTY);
	if (fd < 0) {
		e = errno;
		*why_r = e == EISDIR ? "is a directory, not a disk image"
				     : strerror(e);
		return -e;
	}
	if (fstat(fd, &st) < 0) {
		e = errno;
		close(fd);
		*why_r = strerror(e);
		return -e;
	}
	if (S_ISDIR(st.st_mode)) {
		close(fd);
		*why_r = "is a directory, not a disk image";
		return -EISDIR;
	}
	if (!S_ISREG(st.st_mode) && !S_ISBLK(st.st_mode)) {
		close(fd);
		*why_r = "not a regular file or block device";
		return -EINVAL;
	}
	/* Regular file and block device I/O ignores O_NONBLOCK; clear it
	 * all the same so that nothing is surprised. */
	if (fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK) < 0) {
		e = errno;
		close(fd);
		*why_r = strerror(e);
		return -e;
	}
	*fd_r = fd;
	return 0;
}

/* Opens the image file itself, with a message naming it. */
static int open_image_file(const char *path, bool read_only, int *fd_r,
			   struct img_err *err)
{
	const char *why;
	int ret = img_open_disk_file(path, read_only, fd_r, &why);

	if (ret == -EACCES || ret == -EROFS || ret == -EPERM) {
		if (!read_only)
			return img_err(err, ret, "%s: cannot open for writing "
				       "(%s); use read-only", path, why);
	}
	if (ret < 0)
		return img_err(err, ret, "%s: %s", path, why);
	return 0;
}

/* Opens path as img's format. Used for the top image and, through
 * img_open_backing, for every backing image. */
int img_open_common(struct img *img, const char *path, enum img_format fmt,
		    struct img_err *err)
{
	enum img_format chosen = fmt;
	int ret;

	img->path = strdup(path);
	if (!img->path)
		return img_err(err, -ENOMEM, "%s: out of memory", path);
	ret = open_image_file(path, img->read_only, &img->fd, err);
	if (ret < 0)
		return ret;
	ret = img_lock_file(img->fd, path, !img->read_only, err);
	if (ret < 0)
		return ret;
	if (!img->real_path) {
		img->real_path = realpath(path, NULL);
		if (!img->real_path)
			return img_err(err, -errno, "%s: %s", path,
				       strerror(errno));
	}
	if (fmt == IMG_FORMAT_PROBE) {
		ret = img_probe_format(img->fd, path, &chosen, err);
		if (ret < 0)
			return ret;
		img->probed = true;
	}
	/* A driver that only reads gets a read-only descriptor and QEMU's
	 * read locks only, so that qemu-img can still read the image while
	 * it is mounted. */
	if (!img->read_only && !img_driver(chosen)->pwrite) {
		close(img->fd);
		img->fd = -1;
		img->read_only = true;
		ret = open_image_file(path, true, &img->fd, err);
		if (ret < 0)
			return ret;
		ret = img_lock_file(img->fd, path, false, err);
		if (ret < 0)
			return ret;
	}
	if (img->opts.disk && chosen != IMG_FORMAT_OVA)
		return img_err(err, -EINVAL, "%s: --disk picks a disk of an OVA "
			       "archive; this is a %s image, which holds one "
			       "disk", path, img_driver(chosen)->name);
	img->ops = img_driver(chosen);
	ret = img->ops->open(img, err);
	if (ret < 0)
		return ret;
	/* Drivers that only read make the handle read-only, so callers
	 * (the mount) see it as they see a read-only file. */
	if (!img->ops->pwrite)
		img->read_only = true;
	return 0;
}

static void img_close_one(struct img *img)
{
	if (img->ops && img->ops->close)
		img->ops->close(img);
	img_free_handle(img);
}

void img_close(struct img *img)
{
	while (img) {
		/* A snapshot handle (shares_fd) borrows its parent's backing
		 * chain along with its fd; the parent closes both. */
		struct img *backing = img->shares_fd ? NULL : img->backing;
		img_close_one(img);
		img = backing;
	}
}

int img_open(const char *path, const struct img_open_opts *opts,
	     struct img **img_r, struct img_err *err)
{
	struct img *img;
	CLEANUP_FREE char *path_copy = NULL;
	int ret;

	if (err) {
		err->errnum = 0;
		err->msg[0] = '\0';
	}
	img = img_alloc(opts);
	if (!img)
		return img_err(err, -ENOMEM, "%s: out of memory", path);
	img->read_only = opts ? opts->read_only : false;

	/* The folder of the top image, symbolic links resolved, is the root
	 * that backing=local allows. */
	path_copy = strdup(path);
	if (!path_copy) {
		img_free_handle(img);
		return img_err(err, -ENOMEM, "%s: out of memory", path);
	}
	img->trusted_dir = realpath(dirname(path_copy), NULL);
	if (!img->trusted_dir) {
		ret = img_err(err, -errno, "%s: %s", path, strerror(errno));
		img_free_handle(img);
		return ret;
	}

	ret = img_open_common(img, path, opts ? opts->format : IMG_FORMAT_PROBE,
			      err);
	if (ret < 0) {
		img_close(img);
		return ret;
	}
	*img_r = img;
	return 0;
}

uint64_t img_size(const struct img *img)
{
	return img->size;
}

bool img_is_read_only(const struct img *img)
{
	return img_read_only_now(img);
}

bool img_writable(const struct img *img)
{
	return !img_read_only_now(img) && img->ops->pwrite;
}

const char *img_path(const struct img *img)
{
	return img->path;
}

struct img *img_backing(const struct img *img)
{
	return img->backing;
}

int img_fd(const struct img *img)
{
	return img->fd;
}

bool img_is_file_identity(const struct img *img)
{
	return img->ops == &img_raw_ops;
}

int img_get_info(struct img *img, struct img_info *info)
{
	memset(info, 0, sizeof(*info));
	info->format = img->ops->name;
	info->virtual_size = img->size;
	if (img->ops->get_info) {
		int ret = img->ops->get_info(img, info);

		if (ret < 0)
			return ret;
	}
	/* Every driver that only reads says so, last, in the same words. */
	if (!img->ops->pwrite)
		img_info_add(info, "writes", "not supported (convert to qcow2 "
			     "to write)");
	return 0;
}

/* The checks every request gets before a driver sees it. */
static int check_request(struct img *img, uint64_t off, uint64_t len,
			 bool write)
{
	if (write && img_read_only_now(img))
		return -EROFS;
	if (!range_within(off, len, img->size))
		return write ? -ENOSPC : -EINVAL;
	return 0;
}

int img_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	int ret = check_request(img, off, len, false);

	if (ret < 0 || len == 0)
		return ret;
	return img->ops->pread(img, buf, len, off);
}

int img_pwrite(struct img *img, const void *buf, size_t len, uint64_t off)
{
	int ret = check_request(img, off, len, true);

	if (ret < 0 || len == 0)
		return ret;
	if (!img->ops->pwrite)
		return -ENOTSUP;
	return img->ops->pwrite(img, buf, len, off);
}

int img_discard(struct img *img, uint64_t off, uint64_t len)
{
	int ret = check_request(img, off, len, true);

	if (ret < 0 || len == 0)
		return ret;
	if (!img->ops->discard)
		return -ENOTSUP;
	return img->ops->discard(img, off, len);
}

int img_write_zeroes(struct img *img, uint64_t off, uint64_t len)
{
	int ret = check_request(img, off, len, true);

	if (ret < 0 || len == 0)
		return ret;
	if (!img->ops->write_zeroes)
		return -ENOTSUP;
	return img->ops->write_zeroes(img, off, len);
}

int img_flush(struct img *img)
{
	if (img_read_only_now(img) || !img->ops->flush)
		return 0;
	return img->ops->flush(img);
}

int img_read_backing(struct img *img, void *buf, size_t len, uint64_t off)
{
	struct img *b = img->backing;
	size_t from_backing = 0;

	if (b && off < b->size)
		from_backing = (size_t)MIN((uint64_t)len, b->size - off);
	if (from_backing > 0) {
		int ret = b->ops->pread(b, buf, from_backing, off);
		if (ret < 0)
			return ret;
	}
	memset((char *)buf + from_backing, 0, len - from_backing);
	return 0;
}

/* img_block_status, pinning the DATA extent's host bytes when pin_r is
 * not NULL. Only a layer that answers DATA takes a pin, and the walk
 * ends there, so there is at most one. */
static int block_status_chain(struct img *img, uint64_t off, uint64_t len,
			      struct img_extent *ext_r, struct img_pin *pin_r)
{
	unsigned depth = 0;
	int ret = check_request(img, off, len, false);

	if (pin_r)
		pin_r->domain = NULL;
	if (ret < 0)
		return ret;
	if (len == 0)
		return -EINVAL;
	/* Walk down the chain while the layer does not allocate the range.
	 * The chain is bounded by IMG_MAX_CHAIN_DEPTH at open. */
	for (;;) {
		memset(ext_r, 0, sizeof(*ext_r));
		ext_r->host_fd = -1;
		/* A driver that resolves a chain itself (a window) reports
		 * the depth it found; others leave it 0. */
		if (pin_r && img->ops->block_status_pinned) {
			ret = img->ops->block_status_pinned(img, off, len,
							    ext_r, pin_r);
			if (ret < 0)
				return ret;
		} else if (img->ops->block_status) {
			ret = img->ops->block_status(img, off, len, ext_r);
			if (ret < 0)
				return ret;
		} else {
			ext_r->kind = IMG_EXTENT_DATA;
			ext_r->len = len;
		}
		ext_r->off = off;
		if (ext_r->len == 0 || ext_r->len > len) {
			img_unpin(pin_r);
			return -EIO; /* a driver bug; never loop on it */
		}
		ext_r->depth += depth;
		if (ext_r->kind != IMG_EXTENT_UNALLOCATED)
			return 0;
		len = ext_r->len;
		if (!img->backing || off >= img->backing->size) {
			ext_r->kind = IMG_EXTENT_HOLE;
			ext_r->host_fd = -1;
			return 0;
		}
		img = img->backing;
		len = MIN(len, img->size - off);
		depth++;
	}
}

int img_block_status(struct img *img, uint64_t off, uint64_t len,
		     struct img_extent *ext_r)
{
	return block_status_chain(img, off, len, ext_r, NULL);
}

int img_block_status_pinned(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext_r, struct img_pin *pin_r)
{
	return block_status_chain(img, off, len, ext_r, pin_r);
}

int img_allocated_bytes(struct img *img, uint64_t *bytes_r)
{
	uint64_t off = 0, total = 0;

	while (off < img->size) {
		struct img_extent ext = { .host_fd = -1 };
		int ret;

		if (img->ops->block_status) {
			ret = img->ops->block_status(img, off, img->size - off,
						     &ext);
			if (ret < 0)
				return ret;
			if (ext.len == 0 || ext.len > img->size - off)
				return -EIO;
		} else {
			ext.kind = IMG_EXTENT_DATA;
			ext.len = img->size - off;
		}
		if (ext.kind == IMG_EXTENT_DATA && ext.depth == 0)
			total += ext.len;
		off += ext.len;
	}
	*bytes_r = total;
	return 0;
}

int img_snapshot_list(struct img *img, struct img_snapshot **list_r,
		      size_t *nb_r)
{
	*list_r = NULL;
	*nb_r = 0;
	if (!img->ops->snapshot_list)
		return 0;
	return img->ops->snapshot_list(img, list_r, nb_r);
}

void img_snapshot_list_free(struct img_snapshot *list, size_t nb)
{
	for (size_t i = 0; i < nb; i++) {
		free(list[i].id);
		free(list[i].name);
		free(list[i].unreadable);
	}
	free(list);
}

int img_snapshot_open(struct img *img, const char *id, struct img **snap_r,
		      struct img_err *err)
{
	if (!img->ops->snapshot_open)
		return img_err(err, -ENOENT, "%s: %s images have no "
			       "snapshots", img->path, img->ops->name);
	return img->ops->snapshot_open(img, id, snap_r, err);
}

int img_snapshot_create(struct img *img, const char *name,
			struct img_err *err)
{
	if (img_read_only_now(img))
		return img_err(err, -EROFS, "%s: image is read-only",
			       img->path);
	if (!img->ops->snapshot_create)
		return img_err(err, -ENOTSUP, "%s: %s images cannot hold "
			       "snapshots", img->path, img->ops->name);
	return img->ops->snapshot_create(img, name, err);
}

int img_snapshot_delete(struct img *img, const char *id, struct img_err *err)
{
	if (img_read_only_now(img))
		return img_err(err, -EROFS, "%s: image is read-only",
			       img->path);
	if (!img->ops->snapshot_delete)
		return img_err(err, -ENOTSUP, "%s: %s images cannot hold "
			       "snapshots", img->path, img->ops->name);
	return img->ops->snapshot_delete(img, id, err);
}
