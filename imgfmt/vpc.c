/* vpc.c: the VHD driver (read-only).
 *
 * Not written yet: the driver probes nothing, so VHD files are still
 * refused by name (foreign.c) when probed, and an explicit --format=vpc
 * fails with a clear message.
 */
#include "imgfmt-int.h"

#include <errno.h>

static int vpc_open(struct img *img, struct img_err *err)
{
	return img_err(err, -ENOTSUP, "%s: reading VHD images is not "
		       "supported yet", img->path);
}

const struct img_ops img_vpc_ops = {
	.name = "vpc",
	.open = vpc_open,
};
