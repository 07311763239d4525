/* vmdk.c: the VMDK driver (read-only).
 *
 * Not written yet: the driver probes nothing, so VMDK files are still
 * refused by name (foreign.c) when probed, and an explicit --format=vmdk
 * fails with a clear message.
 */
#include "imgfmt-int.h"

#include <errno.h>

static int vmdk_open(struct img *img, struct img_err *err)
{
	return img_err(err, -ENOTSUP, "%s: reading VMDK images is not "
		       "supported yet", img->path);
}

const struct img_ops img_vmdk_ops = {
	.name = "vmdk",
	.open = vmdk_open,
};
