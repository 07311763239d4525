/* vhdx.c: the VHDX driver (read-only).
 *
 * Not written yet: the driver probes nothing, so VHDX files are still
 * refused by name (foreign.c) when probed, and an explicit --format=vhdx
 * fails with a clear message.
 */
#include "imgfmt-int.h"

#include <errno.h>

static int vhdx_open(struct img *img, struct img_err *err)
{
	return img_err(err, -ENOTSUP, "%s: reading VHDX images is not "
		       "supported yet", img->path);
}

const struct img_ops img_vhdx_ops = {
	.name = "vhdx",
	.open = vhdx_open,
};
