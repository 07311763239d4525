/* scan-img.c: the partition layer's scan over an image handle.
 *
 * partition/ reads from a descriptor; an image handle (a qcow2 disk, a
 * snapshot, an LVM logical volume) has none, so part_scan_reader copies
 * the regions the scan reads into a sparse memory file, leaving holes
 * and zero extents out. The commands use it for their disks, the mount
 * for its non-raw views, and both for logical volumes, so a volume's
 * filesystem is named by the same libblkid probe as a partition's.
 */
#include "cli.h"

#include "checked.h"

struct scan_ctx {
	struct img *img;
	bool (*cancelled)(void *ctx);
	void *cancel_ctx;
};

static int reader_read(void *ctx, void *buf, size_t len, uint64_t off)
{
	const struct scan_ctx *sc = ctx;

	return img_pread(sc->img, buf, len, off);
}

static int reader_is_zero(void *ctx, uint64_t off, uint64_t len,
			  uint64_t *run_len_r)
{
	const struct scan_ctx *sc = ctx;
	struct img_extent ext;
	int ret = img_block_status(sc->img, off, len, &ext);

	if (ret < 0)
		return ret;
	*run_len_r = MIN(ext.len, len);
	return ext.kind != IMG_EXTENT_DATA;
}

static bool reader_cancelled(void *ctx)
{
	const struct scan_ctx *sc = ctx;

	return sc->cancelled && sc->cancelled(sc->cancel_ctx);
}

int cli_scan_img_cancellable(struct img *img, bool (*cancelled)(void *ctx),
			     void *cancel_ctx, struct part_table **table_r)
{
	struct scan_ctx sc = { img, cancelled, cancel_ctx };
	struct part_reader rd = {
		.ctx = &sc,
		.read = reader_read,
		.is_zero_or_hole = reader_is_zero,
		.cancelled = reader_cancelled,
	};

	return part_scan_reader(&rd, img_size(img), table_r);
}

int cli_scan_img(struct img *img, struct part_table **table_r)
{
	return cli_scan_img_cancellable(img, NULL, NULL, table_r);
}
