/* raw.c: the raw format, where the virtual disk is the file itself.
 *
 * The virtual size is the file size to the byte (or the block device's
 * size). Block status uses SEEK_DATA/SEEK_HOLE, so holes in a sparse file
 * report as zero extents, as QEMU's file driver reports them.
 *
 * The one rule beyond plain I/O: a raw image whose format was probed must
 * never get a first sector that would probe as another format, or a guest
 * could turn its disk into a qcow2 naming host files (QEMU's rule), or
 * into one the next probe refuses.
 */
#include "imgfmt-int.h"

#include "checked.h"
#include "io.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/fs.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

static int raw_probe(const uint8_t *head, size_t len)
{
	(void)head;
	(void)len;
	return 1;
}

static int raw_open(struct img *img, struct img_err *err)
{
	struct stat st;

	if (fstat(img->fd, &st) < 0)
		return img_err(err, -errno, "%s: %s", img->path,
			       strerror(errno));
	if (S_ISBLK(st.st_mode)) {
		uint64_t bytes;
		if (ioctl(img->fd, BLKGETSIZE64, &bytes) < 0)
			return img_err(err, -errno, "%s: cannot get the "
				       "device size: %s", img->path,
				       strerror(errno));
		img->size = bytes;
	} else {
		img->size = (uint64_t)st.st_size;
	}
	return 0;
}

static int raw_pread(struct img *img, void *buf, size_t len, uint64_t off)
{
	/* The file may have been shortened behind our back; read what is
	 * gone as zeroes rather than failing the whole request. */
	return full_pread_zero_eof(img->fd, buf, len, off);
}

/* True when writing buf at off would make the first IMG_PROBE_BYTES or
 * the last sector of a probed raw image look like another format. The
 * window is rebuilt with the new bytes and given to every prober. */
static bool raw_write_changes_format(struct img *img, const void *buf,
				     size_t len, uint64_t off)
{
	uint8_t head[IMG_PROBE_BYTES], tail[512];
	uint64_t tail_off;
	size_t n;

	if (!img->probed)
		return false;
	if (off < sizeof(head)) {
		if (full_pread_zero_eof(img->fd, head, sizeof(head), 0) < 0)
			return true;
		n = MIN(len, sizeof(head) - (size_t)off);
		memcpy(head + off, buf, n);
		if (img_probes_as_other(head, sizeof(head), NULL, 0))
			return true;
	}
	if (img->size >= sizeof(tail) && off + len > img->size - sizeof(tail)) {
		tail_off = img->size - sizeof(tail);
		if (full_pread_zero_eof(img->fd, tail, sizeof(tail),
					tail_off) < 0)
			return true;
		for (size_t i = 0; i < len; i++) {
			uint64_t at = off + i;
			if (at >= tail_off && at < img->size)
				tail[at - tail_off] = ((const uint8_t *)buf)[i];
		}
		if (img_probes_as_other(NULL, 0, tail, sizeof(tail)))
			return true;
	}
	return false;
}

static int raw_pwrite(struct img *img, const void *buf, size_t len,
		      uint64_t off)
{
	if (raw_write_changes_format(img, buf, len, off))
		return -EPERM;
	return full_pwrite(img->fd, buf, len, off);
}

static int raw_discard(struct img *img, uint64_t off, uint64_t len)
{
	if (fallocate(img->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		return 0;
	if (errno == EOPNOTSUPP)
		return 0; /* discard is advisory */
	return -errno;
}

static int raw_write_zeroes(struct img *img, uint64_t off, uint64_t len)
{
	static const uint8_t zeroes[64 * 1024];

	if (fallocate(img->fd, FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE,
		      (off_t)off, (off_t)len) == 0)
		return 0;
	if (errno != EOPNOTSUPP)
		return -errno;
	while (len > 0) {
		size_t n = (size_t)MIN(len, sizeof(zeroes));
		int ret = full_pwrite(img->fd, zeroes, n, off);
		if (ret < 0)
			return ret;
		off += n;
		len -= n;
	}
	return 0;
}

static int raw_flush(struct img *img)
{
	return fdatasync(img->fd) < 0 ? -errno : 0;
}

static int raw_block_status(struct img *img, uint64_t off, uint64_t len,
			    struct img_extent *ext_r)
{
	off_t data, hole;

	ext_r->len = len;
	ext_r->kind = IMG_EXTENT_DATA;
	ext_r->host_fd = img->fd;
	ext_r->host_off = off;

	data = lseek(img->fd, (off_t)off, SEEK_DATA);
	if (data < 0) {
		if (errno == ENXIO) { /* only a hole up to end of file */
			ext_r->kind = IMG_EXTENT_ZERO;
			ext_r->host_fd = -1;
			return 0;
		}
		return 0; /* no SEEK_DATA: everything is data */
	}
	if ((uint64_t)data > off) {
		ext_r->kind = IMG_EXTENT_ZERO;
		ext_r->host_fd = -1;
		ext_r->len = MIN(len, (uint64_t)data - off);
		return 0;
	}
	hole = lseek(img->fd, (off_t)off, SEEK_HOLE);
	if (hole > (off_t)off)
		ext_r->len = MIN(len, (uint64_t)hole - off);
	return 0;
}

static int raw_get_info(struct img *img, struct img_info *info)
{
	(void)img;
	info->format = "raw";
	return 0;
}

const struct img_ops img_raw_ops = {
	.name         = "raw",
	.probe        = raw_probe,
	.open         = raw_open,
	.pread        = raw_pread,
	.pwrite       = raw_pwrite,
	.discard      = raw_discard,
	.write_zeroes = raw_write_zeroes,
	.flush        = raw_flush,
	.block_status = raw_block_status,
	.get_info     = raw_get_info,
};
