/* vdi.c: the VDI driver (read-only).
 *
 * Not written yet: the driver probes nothing, so VDI files are still
 * refused by name (foreign.c) when probed, and an explicit --format=vdi
 * fails with a clear message.
 */
#include "imgfmt-int.h"

#include <errno.h>

static int vdi_open(struct img *img, struct img_err *err)
{
	return img_err(err, -ENOTSUP, "%s: reading VDI images is not "
		       "supported yet", img->path);
}

const struct img_ops img_vdi_ops = {
	.name = "vdi",
	.open = vdi_open,
};
